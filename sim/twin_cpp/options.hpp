// Command line of the device twin (see tick2quote.sim.twin for the meaning of each option).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "net.hpp"

namespace twin {

enum Role { kFeed, kTick, kControl, kOrder, kRoles };
inline const char* const kRoleNames[kRoles] = {"feed", "tick", "control", "order"};

struct Options {
    uint32_t host = 0x7F000001;      // address the role sockets bind to
    uint16_t port[kRoles] = {};      // socket port per role (0: a free one)
    uint16_t core_port[kRoles] = {26477, 26400, 21554, 15000};  // the core's port per role
    uint32_t device_ip = 0xC0A80102;
    uint32_t feed_group = 0xE9360C6F;
    uint8_t device_mac[6] = {0x02, 0, 0, 0, 0, 0x02};
    uint8_t src_mac[6] = {0x02, 0, 0, 0, 0, 0x01};  // source MAC of every frame in
    int tap = -1;                    // tap port, -1 for none
    uint64_t tail = 100000;          // idle cycles simulated after the last activity
    uint64_t poll_cycles = 256;      // cycles between socket polls while running
    uint64_t warmup = 0;             // cycles run after reset before the twin is ready
    uint64_t reset_cycles = 4;       // cycles with rst high at start
    uint64_t ifg = 3;                // idle cycles between frames into the core
    size_t max_frame = 9014;         // larger frames in are dropped (rx_oversize)
    size_t queue_limit = 1 << 20;    // datagrams waiting; beyond, dropped (rx_queue_full)
    bool stats = false;              // a stats line every second
    bool parent_watch = false;       // exit on end of file on stdin
};

[[noreturn]] inline void usage_error(const std::string& what) {
    std::fprintf(stderr, "twin: %s\n", what.c_str());
    std::exit(2);
}

inline uint64_t parse_uint(const char* name, const char* text, uint64_t max) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(text, &end, 0);
    if (errno || !*text || *end || v > max || text[0] == '-')
        usage_error(std::string(name) + " needs an integer in 0 .. " + std::to_string(max) +
                    ", not '" + text + "'");
    return v;
}

inline void parse_mac(const char* name, const char* text, uint8_t mac[6]) {
    uint64_t v = 0;
    int digits = 0;
    for (const char* p = text; *p; ++p) {
        if (*p == ':' || *p == '-') continue;
        char c = *p;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0 || ++digits > 12) usage_error(std::string(name) + ": bad MAC '" + text + "'");
        v = v << 4 | uint64_t(d);
    }
    if (digits != 12) usage_error(std::string(name) + ": bad MAC '" + text + "'");
    for (int i = 0; i < 6; ++i) mac[i] = uint8_t(v >> (40 - 8 * i));
}

inline Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--stats") { o.stats = true; continue; }
        if (a == "--parent-watch") { o.parent_watch = true; continue; }
        if (i + 1 >= argc) usage_error("option " + a + " needs a value (or is unknown)");
        const char* v = argv[++i];
        bool done = false;
        for (int r = 0; r < kRoles; ++r) {
            if (a == std::string("--") + kRoleNames[r] + "-port") {
                o.port[r] = uint16_t(parse_uint(a.c_str(), v, 65535));
                done = true;
            } else if (a == std::string("--core-") + kRoleNames[r] + "-port") {
                o.core_port[r] = uint16_t(parse_uint(a.c_str(), v, 65535));
                done = true;
            }
        }
        if (done) continue;
        if (a == "--host" || a == "--device-ip" || a == "--feed-group") {
            uint32_t& ip = a == "--host" ? o.host : a == "--device-ip" ? o.device_ip : o.feed_group;
            if (!parse_ip(v, ip)) usage_error(a + ": bad IPv4 address '" + v + "'");
        } else if (a == "--device-mac") {
            parse_mac(a.c_str(), v, o.device_mac);
        } else if (a == "--src-mac") {
            parse_mac(a.c_str(), v, o.src_mac);
        } else if (a == "--tap") {
            o.tap = int(parse_uint(a.c_str(), v, 65535));
        } else if (a == "--tail") {
            o.tail = parse_uint(a.c_str(), v, UINT64_MAX);
        } else if (a == "--poll-cycles") {
            o.poll_cycles = parse_uint(a.c_str(), v, 1 << 24);
            if (!o.poll_cycles) usage_error("--poll-cycles must be at least 1");
        } else if (a == "--warmup") {
            o.warmup = parse_uint(a.c_str(), v, UINT64_MAX);
        } else if (a == "--reset-cycles") {
            o.reset_cycles = parse_uint(a.c_str(), v, 1 << 24);
        } else if (a == "--ifg") {
            o.ifg = parse_uint(a.c_str(), v, 1 << 24);
        } else if (a == "--max-frame") {
            o.max_frame = parse_uint(a.c_str(), v, 65535);
        } else if (a == "--queue-limit") {
            o.queue_limit = parse_uint(a.c_str(), v, SIZE_MAX);
        } else {
            usage_error("unknown option " + a);
        }
    }
    if (o.tap == 0) usage_error("--tap needs a port in 1 .. 65535");
    return o;
}

}  // namespace twin
