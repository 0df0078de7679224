// The OpenSSL floor: what no TLS-terminating gateway linked against this
// OpenSSL can go below.
//
// Does N full TLS 1.3 handshakes in one thread over memory BIOs
// (BIO_new_bio_pair), client and server in the same process, with the given
// certificate and key, no session resumption (the client never offers a
// session), and reports:
//   - the server side's CPU time per handshake: only the server-side
//     SSL_do_handshake calls are timed, with CLOCK_THREAD_CPUTIME_ID;
//     measured twice, with the server issuing OpenSSL's default session
//     tickets (what a gateway with tickets enabled does) and with none;
//   - the heap held by one idle server-side SSL object after a handshake
//     (SSL_MODE_RELEASE_BUFFERS set, as a gateway does): K handshakes are
//     made, the K server SSL objects kept alive with their transport BIO
//     swapped for a null BIO (a socket BIO's size, no buffer), every client
//     object freed, and the mallinfo2() in-use delta divided by K.
//
// Build: g++ -O2 -std=c++17 openssl_floor.cpp -o openssl_floor -lssl -lcrypto
// Usage: openssl_floor CERT KEY [N] [K]
// Output: key=value lines (parsed by driver.py).

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <malloc.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "openssl_floor: %s\n", what);
    ERR_print_errors_fp(stderr);
    std::exit(1);
}

double thread_cpu_us() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

const unsigned char alpn_wire[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

int alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen,
                void*) {
    unsigned char* o = nullptr;
    if (SSL_select_next_proto(&o, outlen, alpn_wire, sizeof alpn_wire, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

SSL_CTX* make_server_ctx(const char* cert, const char* key, bool tickets) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        die("SSL_CTX_new(server)");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        die("loading the certificate");
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        die("loading the key");
    if (SSL_CTX_check_private_key(ctx) != 1)
        die("key does not match the certificate");
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    // No stateful session cache: nothing accumulates across handshakes.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!tickets) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, nullptr);
    return ctx;
}

SSL_CTX* make_client_ctx() {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die("SSL_CTX_new(client)");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    // OpenSSL's default suites and order, as the benchmark's load generators
    // offer them (TLS_AES_256_GCM_SHA384 is negotiated).
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
                                  "TLS_AES_128_GCM_SHA256");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_alpn_protos(ctx, alpn_wire, sizeof alpn_wire);
    return ctx;
}

struct result {
    SSL* server;      // kept when the caller wants it (memory measurement)
    double server_us; // CPU time spent in the server's SSL_do_handshake calls
};

// One full handshake over a fresh BIO pair. The client object is freed; the
// server object is returned with its pair half replaced by a null BIO.
result handshake(SSL_CTX* sctx, SSL_CTX* cctx) {
    BIO* sbio = nullptr;
    BIO* cbio = nullptr;
    if (BIO_new_bio_pair(&sbio, 0, &cbio, 0) != 1)
        die("BIO_new_bio_pair");
    SSL* s = SSL_new(sctx);
    SSL* c = SSL_new(cctx);
    if (!s || !c)
        die("SSL_new");
    SSL_set_bio(s, sbio, sbio);
    SSL_set_bio(c, cbio, cbio);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    SSL_set_tlsext_host_name(c, "www.foobar.com");

    double server_us = 0;
    bool sdone = false, cdone = false;
    for (int round = 0; round < 32 && !(sdone && cdone); ++round) {
        if (!cdone) {
            const int r = SSL_do_handshake(c);
            if (r == 1)
                cdone = true;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
                die("client handshake");
        }
        if (!sdone) {
            const double t0 = thread_cpu_us();
            const int r = SSL_do_handshake(s);
            server_us += thread_cpu_us() - t0;
            if (r == 1)
                sdone = true;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
                die("server handshake");
        }
    }
    if (!(sdone && cdone))
        die("handshake did not finish");
    if (SSL_session_reused(s))
        die("a session was resumed");
    if (SSL_version(s) != TLS1_3_VERSION)
        die("not TLS 1.3");
    if (std::strcmp(SSL_CIPHER_get_name(SSL_get_current_cipher(s)), "TLS_AES_256_GCM_SHA384") != 0)
        die("unexpected suite");
    if (SSL_get_negotiated_group(s) != NID_X25519)
        die("unexpected group");

    SSL_free(c); // frees the client half of the pair
    BIO* null_bio = BIO_new(BIO_s_null());
    if (!null_bio)
        die("BIO_new(null)");
    SSL_set_bio(s, null_bio, null_bio); // frees the server half of the pair
    return {s, server_us};
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s CERT KEY [N handshakes] [K idle objects]\n", argv[0]);
        return 2;
    }
    const char* cert = argv[1];
    const char* key = argv[2];
    const int n = argc > 3 ? std::max(10, std::atoi(argv[3])) : 2000;
    const int k = argc > 4 ? std::max(10, std::atoi(argv[4])) : 200;

    SSL_CTX* cctx = make_client_ctx();
    SSL_CTX* sctx_tickets = make_server_ctx(cert, key, true);
    SSL_CTX* sctx_none = make_server_ctx(cert, key, false);

    // Warm up both contexts (lazy algorithm fetches, tables, the allocator).
    for (int i = 0; i < 50; ++i) {
        SSL_free(handshake(sctx_tickets, cctx).server);
        SSL_free(handshake(sctx_none, cctx).server);
    }

    // CPU per handshake, alternating the two server contexts in blocks of 50
    // so that both see the same machine conditions.
    double total_t = 0, total_n = 0;
    std::vector<double> blocks_t, blocks_n;
    int done = 0;
    while (done < n) {
        const int b = std::min(50, n - done);
        double sum_t = 0, sum_n = 0;
        for (int i = 0; i < b; ++i) {
            result r = handshake(sctx_tickets, cctx);
            sum_t += r.server_us;
            SSL_free(r.server);
            r = handshake(sctx_none, cctx);
            sum_n += r.server_us;
            SSL_free(r.server);
        }
        total_t += sum_t;
        total_n += sum_n;
        blocks_t.push_back(sum_t / b);
        blocks_n.push_back(sum_n / b);
        done += b;
    }

    // Idle server-side SSL object after a handshake (with tickets, as served).
    std::vector<SSL*> idle;
    idle.reserve(static_cast<size_t>(k));
    malloc_trim(0);
    const struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < k; ++i)
        idle.push_back(handshake(sctx_tickets, cctx).server);
    const struct mallinfo2 after = mallinfo2();
    const double per_ssl = (static_cast<double>(after.uordblks) - static_cast<double>(before.uordblks)) / k;
    for (SSL* s : idle)
        SSL_free(s);

    std::printf("openssl_version=%s\n", OpenSSL_version(OPENSSL_VERSION));
    std::printf("suite=TLS_AES_256_GCM_SHA384\ngroup=X25519\n");
    std::printf("handshakes=%d\n", n);
    std::printf("server_cpu_us_per_handshake=%.1f\n", total_t / n);
    std::printf("server_cpu_us_per_handshake_median_block=%.1f\n", median(blocks_t));
    std::printf("server_cpu_us_per_handshake_no_tickets=%.1f\n", total_n / n);
    std::printf("server_cpu_us_per_handshake_no_tickets_median_block=%.1f\n", median(blocks_n));
    std::printf("idle_objects=%d\n", k);
    std::printf("idle_ssl_bytes=%.0f\n", per_ssl);

    SSL_CTX_free(sctx_tickets);
    SSL_CTX_free(sctx_none);
    SSL_CTX_free(cctx);
    return 0;
}
