#include "gateway/log.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace rampart::gateway {
namespace {
log_level threshold = log_level::info;

const char* name(log_level l) {
    switch (l) {
    case log_level::debug:
        return "debug";
    case log_level::info:
        return "info";
    case log_level::warn:
        return "warn";
    case log_level::error:
        return "error";
    }
    return "?";
}
} // namespace

void set_log_level(log_level l) {
    threshold = l;
}
bool log_enabled(log_level l) {
    return l >= threshold;
}

void log(log_level l, std::string_view message) {
    if (!log_enabled(l)) {
        return;
    }
    auto now = std::chrono::system_clock::now();
    std::time_t t = std::chrono::system_clock::to_time_t(now);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    // One fprintf per line: stderr is unbuffered and lines from several
    // processes must not interleave mid-line.
    std::fprintf(stderr, "%s.%03dZ rampart[%d] %s: %.*s\n", stamp, static_cast<int>(ms), static_cast<int>(getpid()),
                 name(l), static_cast<int>(message.size()), message.data());
}

void log_exception(std::string_view what, std::exception_ptr e) {
    if (!e) {
        return;
    }
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        log(log_level::error, std::string(what) + ex.what());
    } catch (...) {
        log(log_level::error, std::string(what) + "unknown exception");
    }
}

} // namespace rampart::gateway
