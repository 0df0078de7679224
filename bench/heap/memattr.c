// Live heap by allocation stack, for bench/heap/run.sh (LD_PRELOAD; a
// development tool, never in the product).
//
// Interposes malloc, calloc, realloc, free, the aligned allocators and the
// C++ operators new and delete (so that an allocator replacing them, such
// as tcmalloc, is seen too), and keeps for every live block its size and
// the stack that allocated it. With MEMATTR_OUT set, each process writes
// to stderr, every time its live heap has grown by another MEMATTR_STEP
// bytes (default 1 MB): its memory map (once), then the live bytes and
// blocks of every allocation stack. attribute.py turns two such dumps into
// bytes per connection by part.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DEPTH 14
#define PTR_CAP (1u << 23)
#define STACK_CAP (1u << 17)

typedef struct {
    uintptr_t p;
    uint32_t size;
    uint32_t stack;
} entry;
typedef struct {
    uintptr_t f[DEPTH];
    int n;
    int64_t bytes;
    int64_t count;
} stack_t_;

static void* (*real_malloc)(size_t);
static void (*real_free)(void*);
static void* (*real_calloc)(size_t, size_t);
static void* (*real_realloc)(void*, size_t);
static int (*real_posix_memalign)(void**, size_t, size_t);
static void* (*real_aligned_alloc)(size_t, size_t);

static entry* table;
static stack_t_* stacks;
static uint32_t nstacks;
static int64_t live, base = -1, step = 1 << 20, next_dump;
static atomic_flag lock = ATOMIC_FLAG_INIT;
static __thread int in_hook;
static char boot[1 << 16];
static size_t boot_used;
static int ready;

static void init(void) {
    if (real_malloc)
        return;
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    table =
        mmap(0, sizeof(entry) * PTR_CAP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    stacks = mmap(0, sizeof(stack_t_) * STACK_CAP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                  -1, 0);
    const char* s = getenv("MEMATTR_STEP");
    if (s)
        step = atoll(s);
    ready = 1;
}

// The high bits of a multiplicative hash: page-aligned blocks differ only in
// their high address bits, which the low bits of the product would lose.
static uint64_t hptr(uintptr_t p) {
    return ((p >> 4) * 0x9E3779B97F4A7C15ull) >> (64 - 23);
}

// The memory map, for attribute.py to symbolize the stacks (once per process).
static void dump_maps(int fd, int pid) {
    static int done_pid;
    if (done_pid == pid)
        return;
    done_pid = pid;
    int in = open("/proc/self/maps", O_RDONLY);
    if (in < 0)
        return;
    char buf[4096], line[600];
    size_t have = 0;
    for (;;) {
        ssize_t r = read(in, buf + have, sizeof buf - have - 1);
        if (r <= 0)
            break;
        have += (size_t)r;
        buf[have] = 0;
        char* start = buf;
        char* nl;
        while ((nl = strchr(start, '\n')) != NULL) {
            *nl = 0;
            int n = snprintf(line, sizeof line, "MA%d map %s\n", pid, start);
            write(fd, line, n < (int)sizeof line ? n : (int)sizeof line - 1);
            start = nl + 1;
        }
        have = (size_t)(buf + have - start);
        memmove(buf, start, have);
    }
    close(in);
}

static void dump(void) {
    int fd = 2;
    int pid = getpid();
    char line[1024];
    dump_maps(fd, pid);
    int n = snprintf(line, sizeof line, "MA%d dump live=%lld\n", pid, (long long)live);
    write(fd, line, n);
    for (uint32_t i = 0; i < nstacks; ++i) {
        if (stacks[i].bytes <= 0)
            continue;
        n = snprintf(line, sizeof line, "MA%d s %lld %lld", pid, (long long)stacks[i].bytes,
                     (long long)stacks[i].count);
        for (int k = 0; k < stacks[i].n; ++k)
            n += snprintf(line + n, sizeof line - n, " %lx", (unsigned long)stacks[i].f[k]);
        line[n++] = '\n';
        write(fd, line, n);
    }
    n = snprintf(line, sizeof line, "MA%d end\n", pid);
    write(fd, line, n);
}

static uint32_t stack_id(void) {
    void* f[DEPTH + 3];
    int n = backtrace(f, DEPTH + 3);
    int skip = n > 3 ? 3 : 0;
    uintptr_t fr[DEPTH];
    int m = 0;
    for (int i = skip; i < n && m < DEPTH; ++i)
        fr[m++] = (uintptr_t)f[i];
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < m; ++i)
        h = (h ^ fr[i]) * 1099511628211ull;
    uint32_t idx = (uint32_t)(h % STACK_CAP);
    for (uint32_t probe = 0; probe < STACK_CAP; ++probe, idx = (idx + 1) % STACK_CAP) {
        stack_t_* s = &stacks[idx];
        if (s->n == 0) {
            memcpy(s->f, fr, sizeof(uintptr_t) * m);
            s->n = m ? m : 1;
            if (idx + 1 > nstacks)
                nstacks = idx + 1;
            return idx;
        }
        if (s->n == m && memcmp(s->f, fr, sizeof(uintptr_t) * m) == 0)
            return idx;
    }
    return 0;
}

static void track(void* p, size_t size) {
    if (!p || !ready || in_hook)
        return;
    in_hook = 1;
    while (atomic_flag_test_and_set(&lock)) {
    }
    uint32_t sid = stack_id();
    uint64_t i = hptr((uintptr_t)p);
    while (table[i].p != 0 && table[i].p != 1)
        i = (i + 1) % PTR_CAP;
    table[i].p = (uintptr_t)p;
    table[i].size = (uint32_t)size;
    table[i].stack = sid;
    stacks[sid].bytes += size;
    stacks[sid].count += 1;
    live += size;
    if (base < 0 && getenv("MEMATTR_OUT")) {
        base = live;
        next_dump = live + step;
    }
    if (base >= 0 && live >= next_dump) {
        dump();
        next_dump = live + step;
    }
    atomic_flag_clear(&lock);
    in_hook = 0;
}

static void untrack(void* p) {
    if (!p || !ready || in_hook)
        return;
    while (atomic_flag_test_and_set(&lock)) {
    }
    uint64_t i = hptr((uintptr_t)p);
    for (uint32_t probe = 0; probe < PTR_CAP && table[i].p != 0; ++probe, i = (i + 1) % PTR_CAP) {
        if (table[i].p == (uintptr_t)p) {
            stacks[table[i].stack].bytes -= table[i].size;
            stacks[table[i].stack].count -= 1;
            live -= table[i].size;
            table[i].p = 1; // tombstone
            break;
        }
    }
    atomic_flag_clear(&lock);
}

static int is_boot(void* p) {
    return (char*)p >= boot && (char*)p < boot + sizeof boot;
}

void* malloc(size_t n) {
    if (!real_malloc) {
        static int initing;
        if (initing) {
            void* p = boot + boot_used;
            boot_used += (n + 15) & ~15ul;
            return p;
        }
        initing = 1;
        init();
        initing = 0;
    }
    void* p = real_malloc(n);
    track(p, n);
    return p;
}
void free(void* p) {
    if (!p || is_boot(p))
        return;
    untrack(p);
    real_free(p);
}
void* calloc(size_t a, size_t b) {
    if (!real_calloc) {
        static int initing;
        if (initing) {
            void* p = boot + boot_used;
            boot_used += (a * b + 15) & ~15ul;
            memset(p, 0, a * b);
            return p;
        }
        initing = 1;
        init();
        initing = 0;
    }
    void* p = real_calloc(a, b);
    track(p, a * b);
    return p;
}
void* realloc(void* p, size_t n) {
    if (!real_realloc)
        init();
    if (p && is_boot(p)) {
        void* q = malloc(n);
        const size_t left = (size_t)(boot + sizeof boot - (char*)p);
        if (q)
            memcpy(q, p, n < left ? n : left);
        return q;
    }
    void* q = real_realloc(p, n);
    if (q || n == 0) {
        untrack(p); // only once the old block is gone
        track(q, n);
    }
    return q;
}
int posix_memalign(void** out, size_t al, size_t n) {
    if (!real_posix_memalign)
        init();
    int r = real_posix_memalign(out, al, n);
    if (r == 0)
        track(*out, n);
    return r;
}
void* aligned_alloc(size_t al, size_t n) {
    if (!real_aligned_alloc)
        init();
    void* p = real_aligned_alloc(al, n);
    track(p, n);
    return p;
}
void* memalign(size_t al, size_t n) {
    void* p = 0;
    return posix_memalign(&p, al < sizeof(void*) ? sizeof(void*) : al, n) == 0 ? p : 0;
}

// C++ operators, so that an allocator that replaces them (tcmalloc) is seen too.
void* _Znwm(size_t n) {
    void* p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}
void* _Znam(size_t n) {
    return _Znwm(n);
}
void* _ZnwmRKSt9nothrow_t(size_t n, const void* t) {
    (void)t;
    return malloc(n ? n : 1);
}
void* _ZnamRKSt9nothrow_t(size_t n, const void* t) {
    (void)t;
    return malloc(n ? n : 1);
}
void* _ZnwmSt11align_val_t(size_t n, size_t al) {
    void* p = 0;
    if (posix_memalign(&p, al, n ? n : 1))
        abort();
    return p;
}
void* _ZnamSt11align_val_t(size_t n, size_t al) {
    return _ZnwmSt11align_val_t(n, al);
}
void _ZdlPv(void* p) {
    free(p);
}
void _ZdaPv(void* p) {
    free(p);
}
void _ZdlPvm(void* p, size_t n) {
    (void)n;
    free(p);
}
void _ZdaPvm(void* p, size_t n) {
    (void)n;
    free(p);
}
void _ZdlPvSt11align_val_t(void* p, size_t a) {
    (void)a;
    free(p);
}
void _ZdaPvSt11align_val_t(void* p, size_t a) {
    (void)a;
    free(p);
}
void _ZdlPvmSt11align_val_t(void* p, size_t n, size_t a) {
    (void)n;
    (void)a;
    free(p);
}
void _ZdaPvmSt11align_val_t(void* p, size_t n, size_t a) {
    (void)n;
    (void)a;
    free(p);
}
