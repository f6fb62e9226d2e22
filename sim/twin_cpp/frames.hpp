// Ethernet II / IPv4 / UDP frames as the device twin builds and parses them.
//
// Frames carry no FCS (a MAC strips it on receive and adds it on transmit). Integers in the
// structures below are host order; on the wire they are big-endian.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace twin {

constexpr size_t kEthHeader = 14;
constexpr size_t kVlanTag = 4;
constexpr size_t kIpHeader = 20;
constexpr size_t kUdpHeader = 8;
constexpr size_t kMinFrame = 60;  // shorter frames are padded, as a MAC does
constexpr uint16_t kEthertypeIpv4 = 0x0800;
constexpr uint16_t kEthertypeVlan = 0x8100;
constexpr uint8_t kProtoUdp = 17;

inline uint16_t get16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t get32(const uint8_t* p) {
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline void put16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8), p[1] = uint8_t(v); }
inline void put32(uint8_t* p, uint32_t v) {
    p[0] = uint8_t(v >> 24), p[1] = uint8_t(v >> 16), p[2] = uint8_t(v >> 8), p[3] = uint8_t(v);
}

// The ones'-complement IPv4 header checksum of `n` bytes (the checksum field read as is:
// 0 when computing it, the stored value when verifying, where a good header gives 0).
inline uint16_t ipv4_checksum(const uint8_t* h, size_t n) {
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < n; i += 2) sum += get16(h + i);
    if (n & 1) sum += uint32_t(h[n - 1]) << 8;
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return uint16_t(~sum);
}

// The multicast MAC of an IPv4 group: 01:00:5e and the group's low 23 bits.
inline void multicast_mac(uint32_t group, uint8_t mac[6]) {
    mac[0] = 0x01, mac[1] = 0x00, mac[2] = 0x5E;
    mac[3] = uint8_t(group >> 16 & 0x7F), mac[4] = uint8_t(group >> 8), mac[5] = uint8_t(group);
}

struct UdpHeaders {
    uint8_t dst_mac[6];
    uint8_t src_mac[6];
    uint32_t src_ip;
    uint32_t dst_ip;
    uint16_t src_port;
    uint16_t dst_port;
    uint16_t ident;
    uint8_t ttl;
};

// An untagged Ethernet/IPv4/UDP frame holding `payload`: no IPv4 options, DF clear, a correct
// header checksum, UDP checksum 0; padded with zeros to 60 bytes.
inline void build_udp_frame(std::vector<uint8_t>& out, const UdpHeaders& h,
                            const uint8_t* payload, size_t len) {
    const size_t udp_len = kUdpHeader + len;
    const size_t total = kEthHeader + kIpHeader + udp_len;
    out.assign(total < kMinFrame ? kMinFrame : total, 0);
    uint8_t* p = out.data();
    std::memcpy(p, h.dst_mac, 6);
    std::memcpy(p + 6, h.src_mac, 6);
    put16(p + 12, kEthertypeIpv4);
    uint8_t* ip = p + kEthHeader;
    ip[0] = 0x45;
    put16(ip + 2, uint16_t(kIpHeader + udp_len));
    put16(ip + 4, h.ident);
    ip[8] = h.ttl;
    ip[9] = kProtoUdp;
    put32(ip + 12, h.src_ip);
    put32(ip + 16, h.dst_ip);
    put16(ip + 10, ipv4_checksum(ip, kIpHeader));
    uint8_t* udp = ip + kIpHeader;
    put16(udp, h.src_port);
    put16(udp + 2, h.dst_port);
    put16(udp + 4, uint16_t(udp_len));
    if (len) std::memcpy(udp + kUdpHeader, payload, len);
}

struct UdpView {
    uint32_t src_ip, dst_ip;
    uint16_t src_port, dst_port;
    const uint8_t* payload;
    size_t len;
};

// Parse an Ethernet [802.1Q] IPv4/UDP frame; nullptr when it is one (`v` filled in), else the
// name of the reason it is not (the drop counter it goes to).
inline const char* parse_udp_frame(const uint8_t* f, size_t n, UdpView& v) {
    if (n < kEthHeader) return "not_ipv4";
    size_t pos = kEthHeader;
    uint16_t ethertype = get16(f + 12);
    if (ethertype == kEthertypeVlan) {
        if (n < pos + kVlanTag) return "not_ipv4";
        ethertype = get16(f + 16);
        pos += kVlanTag;
    }
    if (ethertype != kEthertypeIpv4 || n < pos + kIpHeader || f[pos] >> 4 != 4) return "not_ipv4";
    const uint8_t* ip = f + pos;
    const size_t ihl = size_t(ip[0] & 0xF) * 4;
    const size_t total = get16(ip + 2);
    if (ihl < kIpHeader || total < ihl + kUdpHeader || pos + total > n) return "malformed";
    if (ipv4_checksum(ip, ihl) != 0) return "bad_checksum";
    if (get16(ip + 6) & 0x3FFF) return "fragment";
    if (ip[9] != kProtoUdp) return "not_udp";
    const uint8_t* udp = ip + ihl;
    const size_t udp_len = get16(udp + 4);
    if (udp_len < kUdpHeader || udp_len != total - ihl) return "malformed";
    v.src_ip = get32(ip + 12);
    v.dst_ip = get32(ip + 16);
    v.src_port = get16(udp);
    v.dst_port = get16(udp + 2);
    v.payload = udp + kUdpHeader;
    v.len = udp_len - kUdpHeader;
    return nullptr;
}

}  // namespace twin
