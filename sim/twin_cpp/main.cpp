// The device twin: the Verilated core behind UDP sockets, one thread, no Python per cycle.
//
// Each datagram received on a role's socket becomes an Ethernet/IPv4/UDP frame into the core's
// `rx` stream, one 8-byte beat per cycle, `ifg` idle cycles between frames. Each frame the
// core puts out on `tx` is parsed and its UDP payload sent on to its destination on loopback.
// Simulated time runs while there is work and for `tail` idle cycles after it, then the twin
// sleeps in poll() until a datagram arrives. The protocol of stdout (JSON lines), the tap and
// every option are documented in tick2quote.sim.twin.
#include <poll.h>
#include <time.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "Vtwin_top.h"
#include "frames.hpp"
#include "net.hpp"
#include "options.hpp"
#include "verilated.h"

namespace twin {
namespace {

int g_signal_pipe[2] = {-1, -1};

void on_signal(int sig) {
    const char byte = char(sig);
    ssize_t ignored = write(g_signal_pipe[1], &byte, 1);
    (void)ignored;
}

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Frame {
    std::vector<uint8_t> bytes;
    uint64_t cycle = 0;  // the cycle its first beat was taken
};

class Server {
public:
    explicit Server(const Options& o) : opt_(o), top_(new Vtwin_top{&ctx_}) {
        for (const char* k : {"rx_oversize", "rx_queue_full", "rx_socket_overflow", "rx_lost",
                              "rx_recv_error", "tx_not_ipv4", "tx_not_udp", "tx_malformed",
                              "tx_bad_checksum", "tx_fragment", "tx_oversize", "tx_send_error",
                              "tx_self_addressed"})
            dropped_[k] = 0;
    }

    ~Server() {
        top_->final();
        for (int fd : fd_) if (fd >= 0) close(fd);
        if (tap_fd_ >= 0) close(tap_fd_);
    }

    void open_sockets() {
        for (int r = 0; r < kRoles; ++r) {
            std::string err;
            fd_[r] = bind_udp(opt_.host, opt_.port[r], bound_[r], err);
            if (fd_[r] < 0)
                usage_error(std::string("cannot bind the ") + kRoleNames[r] + " socket to " +
                            format_ip(opt_.host) + ":" + std::to_string(opt_.port[r]) + ": " +
                            err);
        }
        if (opt_.tap >= 0) {
            tap_fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (tap_fd_ < 0) usage_error("cannot open the tap socket");
        }
    }

    void reset_and_warm_up() {
        top_->rx_valid = 0;
        top_->rst = 1;
        for (uint64_t i = 0; i < opt_.reset_cycles; ++i) tick();
        top_->rst = 0;
        tick();      // the wrapper's registered reset falls at this edge
        cycle_ = 0;  // cycle 0 is the core's first edge out of reset
        for (uint64_t i = 0; i < opt_.warmup; ++i) step();
        warmup_done_ = cycle_;
    }

    void print_ready() {
        std::string ports, core_ports;
        for (int r = 0; r < kRoles; ++r) {
            ports += std::string(r ? ", " : "") + "\"" + kRoleNames[r] + "\": " +
                     std::to_string(bound_[r]);
            core_ports += std::string(r ? ", " : "") + "\"" + kRoleNames[r] + "\": " +
                          std::to_string(opt_.core_port[r]);
        }
        char mac[18];
        std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", opt_.device_mac[0],
                      opt_.device_mac[1], opt_.device_mac[2], opt_.device_mac[3],
                      opt_.device_mac[4], opt_.device_mac[5]);
        std::printf(
            "{\"event\": \"ready\", \"pid\": %d, \"host\": \"%s\", \"ports\": {%s}, \"tap\": %s, "
            "\"core\": {\"ip\": \"%s\", \"mac\": \"%s\", \"feed_group\": \"%s\", \"ports\": "
            "{%s}}, \"cycle\": %" PRIu64 ", \"tail\": %" PRIu64 ", \"poll_cycles\": %" PRIu64
            ", \"ifg\": %" PRIu64 "}\n",
            int(getpid()), format_ip(opt_.host).c_str(), ports.c_str(),
            opt_.tap >= 0 ? std::to_string(opt_.tap).c_str() : "null",
            format_ip(opt_.device_ip).c_str(), mac, format_ip(opt_.feed_group).c_str(),
            core_ports.c_str(), cycle_, opt_.tail, opt_.poll_cycles, opt_.ifg);
        std::fflush(stdout);
    }

    int run() {
        start_ = Clock::now();
        next_stats_ = start_ + std::chrono::seconds(1);
        while (!stop_) {
            if (has_work() || idle_ < opt_.tail) {
                auto t0 = Clock::now();
                const uint64_t left = opt_.tail - (idle_ < opt_.tail ? idle_ : opt_.tail);
                uint64_t batch = opt_.poll_cycles;
                if (!has_work() && left < batch) batch = left;
                for (uint64_t i = 0; i < batch; ++i) step();
                sim_time_ += Clock::now() - t0;
                service(0);
            } else {
                service(opt_.stats ? 1000 : -1);  // idle: only a datagram wakes the core
            }
            if (opt_.stats && Clock::now() >= next_stats_) {
                print_stats("stats");
                next_stats_ = Clock::now() + std::chrono::seconds(1);
            }
        }
        print_stats("exit");
        return 0;
    }

private:
    bool has_work() const { return cur_ || gap_ || !queue_.empty() || tx_busy_; }

    void tick() {
        top_->clk = 0;
        top_->eval();
        top_->clk = 1;
        top_->eval();
    }

    // One clock cycle: drive rx, settle, take what the edge takes, clock edge.
    void step() {
        if (!cur_ && !gap_ && !queue_.empty()) {
            in_ = std::move(queue_.front());
            queue_.pop_front();
            cur_ = true, offset_ = 0;
        }
        if (cur_) {
            const size_t n = in_.bytes.size() - offset_;
            const size_t lanes = n < 8 ? n : 8;
            uint64_t data = 0;
            for (size_t i = 0; i < lanes; ++i)
                data |= uint64_t(in_.bytes[offset_ + i]) << (8 * i);
            top_->rx_data = data;
            top_->rx_keep = uint8_t((1u << lanes) - 1);
            top_->rx_first = offset_ == 0;
            top_->rx_last = n <= 8;
            top_->rx_valid = 1;
        } else {
            top_->rx_valid = 0;
        }
        top_->clk = 0;
        top_->eval();
        bool active = cur_ || gap_;
        if (cur_) {
            // The wrapper's input register takes the beat at this edge; the core at the next.
            if (offset_ == 0) in_.cycle = cycle_ + 1;
            offset_ += 8;
            if (offset_ >= in_.bytes.size()) {
                cur_ = false;
                gap_ = opt_.ifg;
                ++frames_in_;
                bytes_in_ += in_.bytes.size();
                tap(0, in_);
            }
        } else if (gap_) {
            --gap_;
        }
        if (top_->rx_lost) drop("rx_lost");  // a beat the core's rx did not accept
        if (top_->tx_valid) {
            active = true;
            take_tx_beat();
        }
        top_->clk = 1;
        top_->eval();
        ++cycle_;
        idle_ = active || !queue_.empty() ? 0 : idle_ + 1;
    }

    void take_tx_beat() {
        if (top_->tx_first) {
            out_.bytes.clear();
            out_.cycle = cycle_;
            tx_busy_ = true;
        }
        const uint64_t data = top_->tx_data;
        const uint8_t keep = top_->tx_keep;
        for (int i = 0; i < 8; ++i)
            if (keep >> i & 1) out_.bytes.push_back(uint8_t(data >> (8 * i)));
        if (top_->tx_last) {
            tx_busy_ = false;
            ++frames_out_;
            bytes_out_ += out_.bytes.size();
            tap(1, out_);
            forward(out_);
        }
    }

    // Send a frame's UDP payload on to its destination (loopback), from the role socket whose
    // core port is the frame's source port (the feed socket when none is).
    void forward(const Frame& f) {
        if (f.bytes.size() > 65535) return drop("tx_oversize");
        UdpView v{};
        if (const char* why = parse_udp_frame(f.bytes.data(), f.bytes.size(), v))
            return drop(std::string("tx_") + why);
        const uint32_t ip = (v.dst_ip >> 24) == 127 ? v.dst_ip : 0x7F000001;
        int from = fd_[kFeed];
        for (int r = 0; r < kRoles; ++r) {
            if (opt_.core_port[r] == v.src_port) from = fd_[r];
            if (bound_[r] == v.dst_port && (opt_.host == ip || opt_.host == 0))
                return drop("tx_self_addressed");
        }
        if (!send_to(from, ip, v.dst_port, v.payload, v.len)) return drop("tx_send_error");
        ++datagrams_out_;
    }

    void tap(uint8_t direction, const Frame& f) {
        if (tap_fd_ < 0) return;
        tap_buf_.resize(9 + f.bytes.size());
        tap_buf_[0] = direction;
        for (int i = 0; i < 8; ++i) tap_buf_[1 + i] = uint8_t(f.cycle >> (56 - 8 * i));
        std::memcpy(tap_buf_.data() + 9, f.bytes.data(), f.bytes.size());
        if (!send_to(tap_fd_, 0x7F000001, uint16_t(opt_.tap), tap_buf_.data(), tap_buf_.size()))
            ++tap_errors_;
    }

    void drop(const std::string& why) { ++dropped_[why]; }

    // Poll the signal pipe, stdin (with --parent-watch) and the role sockets, waiting up to
    // `timeout_ms` (0: not at all, -1: forever), and take in whatever is there.
    void service(int timeout_ms) {
        pollfd fds[2 + kRoles];
        int n = 0;
        fds[n++] = {g_signal_pipe[0], POLLIN, 0};
        const int stdin_at = opt_.parent_watch ? n++ : -1;
        if (stdin_at >= 0) fds[stdin_at] = {0, POLLIN, 0};
        const int roles_at = n;
        for (int r = 0; r < kRoles; ++r) fds[n++] = {fd_[r], POLLIN, 0};
        if (poll(fds, nfds_t(n), timeout_ms) <= 0) return;
        if (fds[0].revents) {
            char sigs[64];
            const ssize_t got = read(g_signal_pipe[0], sigs, sizeof sigs);
            for (ssize_t i = 0; i < got; ++i) {
                if (sigs[i] == SIGUSR1) print_stats("stats");
                else stop_ = true;
            }
        }
        if (stdin_at >= 0 && fds[stdin_at].revents) {
            char buf[256];
            if (read(0, buf, sizeof buf) <= 0) stop_ = true;  // the parent is gone
        }
        for (int r = 0; r < kRoles; ++r)
            if (fds[roles_at + r].revents) receive(Role(r));
    }

    void receive(Role r) {
        for (int k = 0; k < 4096; ++k) {  // bounded, so the core keeps running under a flood
            uint32_t ip = 0, overflow = overflow_[r];
            uint16_t port = 0;
            const ssize_t n =
                recv_datagram(fd_[r], rx_buf_.data(), rx_buf_.size(), ip, port, overflow);
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    drop("rx_recv_error");
                return;
            }
            if (overflow > overflow_[r]) dropped_["rx_socket_overflow"] += overflow - overflow_[r];
            overflow_[r] = overflow;
            ++datagrams_in_;
            if (kEthHeader + kIpHeader + kUdpHeader + size_t(n) > opt_.max_frame) {
                drop("rx_oversize");
                continue;
            }
            if (queue_.size() >= opt_.queue_limit) {
                drop("rx_queue_full");
                continue;
            }
            UdpHeaders h{};
            if (r == kFeed) multicast_mac(opt_.feed_group, h.dst_mac);
            else std::memcpy(h.dst_mac, opt_.device_mac, 6);
            std::memcpy(h.src_mac, opt_.src_mac, 6);
            h.src_ip = ip, h.src_port = port;
            h.dst_ip = r == kFeed ? opt_.feed_group : opt_.device_ip;
            h.dst_port = opt_.core_port[r];
            h.ident = ident_++;
            h.ttl = 64;
            queue_.emplace_back();
            build_udp_frame(queue_.back().bytes, h, rx_buf_.data(), size_t(n));
        }
    }

    void print_stats(const char* event) {
        const double wall = seconds(Clock::now() - start_), sim = seconds(sim_time_);
        timespec cpu{};
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
        std::string drops;
        uint64_t total = 0;
        for (const auto& [k, v] : dropped_) {
            drops += std::string(drops.empty() ? "" : ", ") + "\"" + k + "\": " +
                     std::to_string(v);
            total += v;
        }
        std::printf(
            "{\"event\": \"%s\", \"cycles\": %" PRIu64 ", \"wall_s\": %.6f, \"sim_s\": %.6f, "
            "\"cpu_s\": %.6f, "
            "\"cycles_per_s\": %.1f, \"frames_in\": %" PRIu64 ", \"frames_out\": %" PRIu64
            ", \"bytes_in\": %" PRIu64 ", \"bytes_out\": %" PRIu64 ", \"datagrams_in\": %" PRIu64
            ", \"datagrams_out\": %" PRIu64 ", \"queued\": %zu, \"dropped_total\": %" PRIu64
            ", \"dropped\": {%s}, \"tap_errors\": %" PRIu64 "}\n",
            event, cycle_ - warmup_done_, wall, sim, double(cpu.tv_sec) + cpu.tv_nsec * 1e-9,
            sim > 0 ? double(cycle_ - warmup_done_) / sim : 0.0, frames_in_, frames_out_,
            bytes_in_, bytes_out_, datagrams_in_, datagrams_out_, queue_.size(), total,
            drops.c_str(), tap_errors_);
        std::fflush(stdout);
    }

    Options opt_;
    VerilatedContext ctx_;
    std::unique_ptr<Vtwin_top> top_;
    int fd_[kRoles] = {-1, -1, -1, -1};
    uint16_t bound_[kRoles] = {};
    uint32_t overflow_[kRoles] = {};
    int tap_fd_ = -1;
    std::vector<uint8_t> rx_buf_ = std::vector<uint8_t>(65536), tap_buf_;
    std::deque<Frame> queue_;
    Frame in_, out_;
    bool cur_ = false, tx_busy_ = false, stop_ = false;
    size_t offset_ = 0;
    uint64_t gap_ = 0, idle_ = 0, cycle_ = 0, warmup_done_ = 0;
    uint16_t ident_ = 0;
    uint64_t frames_in_ = 0, frames_out_ = 0, bytes_in_ = 0, bytes_out_ = 0;
    uint64_t datagrams_in_ = 0, datagrams_out_ = 0, tap_errors_ = 0;
    std::map<std::string, uint64_t> dropped_;
    Clock::time_point start_, next_stats_;
    Clock::duration sim_time_{};
};

}  // namespace
}  // namespace twin

int main(int argc, char** argv) {
    using namespace twin;
    const Options opt = parse_options(argc, argv);
    if (pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0) usage_error("cannot make a pipe");
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaction(sig, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    Server server(opt);
    server.open_sockets();
    server.reset_and_warm_up();
    server.print_ready();
    return server.run();
}
