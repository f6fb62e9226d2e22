// UDP sockets of the device twin: one per role, non-blocking, with kernel drop counts.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace twin {

// A UDP socket bound to `ip`:`port` (host order; port 0 picks a free one), non-blocking, with
// a large receive buffer and SO_RXQ_OVFL on. Returns the descriptor and sets `bound` to the
// port actually bound, or returns -1 with `err` set.
inline int bind_udp(uint32_t ip, uint16_t port, uint16_t& bound, std::string& err) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = std::string("socket: ") + std::strerror(errno);
        return -1;
    }
    int size = 8 << 20, one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);  // capped by rmem_max
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(ip);
    addr.sin_port = htons(port);
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
        err = std::strerror(errno);
        close(fd);
        return -1;
    }
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    bound = ntohs(addr.sin_port);
    return fd;
}

// One datagram from `fd` into `buf` (`cap` bytes; a UDP datagram is at most 65507). Returns its
// size, or -1 with errno set (EAGAIN when none is waiting). `kernel_drops` is set to the socket's
// running count of datagrams the kernel dropped for a full receive buffer, when it reports one.
inline ssize_t recv_datagram(int fd, uint8_t* buf, size_t cap, uint32_t& src_ip,
                             uint16_t& src_port, uint32_t& kernel_drops) {
    sockaddr_in from{};
    iovec iov{buf, cap};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint32_t))];
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n < 0) return n;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL)
            std::memcpy(&kernel_drops, CMSG_DATA(c), sizeof kernel_drops);
    }
    src_ip = ntohl(from.sin_addr.s_addr);
    src_port = ntohs(from.sin_port);
    return n;
}

// Send `len` bytes from `fd` to `ip`:`port` (host order) without blocking; false on error.
inline bool send_to(int fd, uint32_t ip, uint16_t port, const uint8_t* data, size_t len) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(ip);
    to.sin_port = htons(port);
    return sendto(fd, data, len, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&to), sizeof to) >= 0;
}

inline bool parse_ip(const char* text, uint32_t& ip) {
    in_addr a{};
    if (inet_pton(AF_INET, text, &a) != 1) return false;
    ip = ntohl(a.s_addr);
    return true;
}

inline std::string format_ip(uint32_t ip) {
    char out[INET_ADDRSTRLEN];
    in_addr a{htonl(ip)};
    inet_ntop(AF_INET, &a, out, sizeof out);
    return out;
}

}  // namespace twin
