// libFuzzer target: the real client connection code, without sockets.
//
// Where fuzz_request models a session around Beast's parser and the header
// rules, this target runs what a worker runs: http1_connection (framing,
// keep-alive, limits, deadlines) and the exchange behind it (routes, the
// redirect, static files, a pool), over Beast's in-memory test stream. The
// input is what a client sends on one connection, cut into one to three
// pieces that arrive one after the other (partial reads), then the client's
// end of the stream. The routes need no app server: a redirect, static files
// from a temporary directory (index.html and a 100 KiB file), a pool whose
// only server refuses connections (127.0.0.1, a port bound but never
// listening: the body is still read before a server is chosen), and 404 for
// any other path.
//
// The harness traps when:
//   - an exception escapes the connection's coroutine or io_context::run;
//   - the io_context is still busy after 5 s (a hang: every input ends with
//     the client's end of the stream);
//   - the connection object outlives the run (a leaked reference);
//   - the client received bytes that do not start with "HTTP/1.1 " and a
//     three-digit status (a refused request gets a status line or nothing);
//     "HTTP/1.0 " is accepted when the input holds "HTTP/1.0" (the gateway
//     answers an HTTP/1.0 request with that version).
//
// The first input byte chooses the number of pieces and the most one read of
// the connection returns; the next two where the pieces are cut.

#include "config/config.hpp"
#include "gateway/proxy/http1_connection.hpp"
#include "gateway/proxy/worker.hpp"
#include "gateway/shared_state.hpp"

#include <boost/beast/_experimental/test/stream.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace gw = rampart::gateway;
namespace config = rampart::config;
namespace net = boost::asio;
namespace beast = boost::beast;
using test_stream = beast::test::stream;

constexpr auto run_bound = std::chrono::seconds(5);

[[noreturn]] void violated(const char* what, std::string_view out) {
    std::fprintf(stderr,
                 "fuzz_connection: invariant violated: %s\n--- the client received (%zu bytes) ---\n%.*s\n---\n", what,
                 out.size(), static_cast<int>(std::min<std::size_t>(out.size(), 512)), out.data());
    std::abort();
}

// The static root, made once per process and removed at exit.
std::string make_root() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rampart-fuzz-conn-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
        std::perror("fuzz_connection: mkdtemp");
        std::abort();
    }
    std::ofstream(tmpl + "/index.html", std::ios::binary) << "<!doctype html><title>rampart</title>\n";
    std::string big(100 * 1024, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) {
        big[i] = static_cast<char>(i % 251);
    }
    std::ofstream(tmpl + "/big.bin", std::ios::binary) << big;
    return tmpl;
}

struct process_state {
    std::string root = make_root();
    net::io_context port_io;
    gw::tcp::socket refusing{port_io}; ///< bound, never listening: connections to it are refused
    config::snapshot_ptr cfg;
    std::unique_ptr<gw::shared_block> block = std::make_unique<gw::shared_block>();
    gw::slot_map slots;

    process_state() {
        refusing.open(gw::tcp::v4());
        refusing.bind(gw::tcp::endpoint(net::ip::make_address_v4("127.0.0.1"), 0));
        const std::string text =
            "site: www.foobar.com\n"
            "servers:\n"
            "  app1: { address: 127.0.0.1, role: app, port: " +
            std::to_string(refusing.local_endpoint().port()) +
            " }\n"
            "gateway:\n"
            "  listen: { http: \"127.0.0.1:8080\" }\n"
            "  pools: { app: { servers: [app1] } }\n"
            "  default_pool: app\n"
            "  timeouts: { header: 2s, body: 2s, idle: 2s, upstream_connect: 1s, upstream_response: 2s }\n"
            "  limits: { header_bytes: 2KiB, body_bytes: 4KiB }\n"
            "  routes:\n"
            "    - { path: /old/, redirect: { to: \"https://new.example\" } }\n"
            "    - { path: /static/, static: { root: \"" +
            root +
            "\" } }\n"
            "    - { path: /app/, pool: app }\n";
        auto r = config::load_from_string(text, "fuzz.yaml");
        if (!r) {
            for (const auto& e : r.errors) {
                std::fprintf(stderr, "fuzz_connection: %s\n", e.to_string().c_str());
            }
            std::abort();
        }
        cfg = r.config;
        slots = gw::assign_slots(*block, *cfg);
    }
    ~process_state() {
        std::error_code ignored;
        std::filesystem::remove_all(root, ignored);
    }
};

process_state& state() {
    static process_state s;
    return s;
}

struct run_record {
    bool finished = false;
    bool exception = false;
};

class fuzz_connection final : public gw::http1_connection<test_stream> {
public:
    fuzz_connection(gw::worker_context& w, run_record& rec, net::io_context& io)
        : http1_connection(w, gw::admission{}, gw::connection_facts{gw::client_info{"192.0.2.9", true, {}}}, io),
          rec_(rec) {}

    void start() {
        start_watchdog();
        auto self = std::static_pointer_cast<fuzz_connection>(shared_from_this());
        run_record* rec = &rec_;
        net::co_spawn(w_.io, run(std::move(self)), [rec](std::exception_ptr e) {
            if (e) {
                rec->exception = true;
            }
        });
    }

private:
    net::awaitable<void> run(std::shared_ptr<fuzz_connection> self) {
        co_await serve_requests();
        rec_.finished = true;
        stream_.close();
        stop_watchdog();
        (void)self;
    }

    run_record& rec_;
};

bool starts_with_status_line(std::string_view out, bool http10) {
    const auto version = out.substr(0, 9);
    if (out.size() < 12 || (version != "HTTP/1.1 " && !(http10 && version == "HTTP/1.0 "))) {
        return false;
    }
    for (std::size_t i = 9; i < 12; ++i) {
        if (out[i] < '0' || out[i] > '9') {
            return false;
        }
    }
    return true;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    state();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 3) {
        return -1;
    }
    process_state& ps = state();
    const unsigned pieces_wanted = 1 + data[0] % 3;
    static constexpr std::size_t read_sizes[] = {0, 1, 7, 512};
    const std::size_t read_size = read_sizes[(data[0] >> 2) % 4];
    const std::string_view bytes(reinterpret_cast<const char*>(data + 3), size - 3);
    std::vector<std::string_view> pieces;
    std::size_t cut1 = bytes.size() * data[1] / 256;
    std::size_t cut2 = bytes.size() * data[2] / 256;
    if (cut2 < cut1) {
        std::swap(cut1, cut2);
    }
    if (pieces_wanted == 1) {
        pieces = {bytes};
    } else if (pieces_wanted == 2) {
        pieces = {bytes.substr(0, cut1), bytes.substr(cut1)};
    } else {
        pieces = {bytes.substr(0, cut1), bytes.substr(cut1, cut2 - cut1), bytes.substr(cut2)};
    }

    run_record rec;
    std::string out;
    {
        net::io_context io;
        gw::worker_context w(io, ps.cfg, nullptr, *ps.block, ps.slots, 0);
        test_stream peer(io);
        std::weak_ptr<fuzz_connection> weak;
        {
            auto c = std::make_shared<fuzz_connection>(w, rec, io);
            c->stream().connect(peer);
            if (read_size != 0) {
                c->stream().read_size(read_size);
            }
            weak = c;
            c->start();
        }
        const auto start = std::chrono::steady_clock::now();
        try {
            for (const auto piece : pieces) {
                beast::error_code ec; // the connection may have closed already
                net::write(peer, net::buffer(piece.data(), piece.size()), ec);
                for (int i = 0; i < 10000 && io.poll() > 0; ++i) {
                }
            }
            peer.close();
            io.run_for(run_bound);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "fuzz_connection: io_context::run threw: %s\n", e.what());
            violated("an exception escaped io_context::run", peer.str());
        }
        out = std::string(peer.str());
        if (!io.stopped() || std::chrono::steady_clock::now() - start >= run_bound) {
            violated("the connection did not end within 5 s", out);
        }
        if (!weak.expired()) {
            violated("the connection object outlived its run", out);
        }
        if (!w.connections.empty()) {
            violated("the worker's connection set is not empty", out);
        }
    }
    if (rec.exception) {
        violated("an exception escaped the connection's coroutine", out);
    }
    if (!rec.finished) {
        violated("serve_requests never returned", out);
    }
    const bool http10 = bytes.find("HTTP/1.0") != std::string_view::npos;
    if (!out.empty() && !starts_with_status_line(out, http10)) {
        violated("the client received bytes that are not a status line", out);
    }
    return 0;
}
