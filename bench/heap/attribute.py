#!/usr/bin/env python3
"""Bytes per connection by part, from the dumps memattr.so wrote (see run.sh).

Takes the gateway worker (the process with the most dumps), its first dump
(before the connections) and the dump where the most TLS connections were
alive (SSL_new's stack at its highest count, before any closed), and
prints the growth between them per connection: by part (OpenSSL, nghttp2,
Rampart with Asio and Beast, the allocator's own frames) and the largest
allocation stacks. Bytes are what was allocated and is live; pages a part
handed back to the kernel (nghttp2's idle frame buffer) still count here,
so the RSS figure of bench/run.sh can be lower.
"""
import collections
import re
import subprocess
import sys

ALLOCATOR = ("memattr", "libc.so", "libstdc++", "tcmalloc", "ld-linux")


def parse(path):
    dumps = collections.defaultdict(list)
    maps = collections.defaultdict(list)
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"MA(\d+) (\w+) ?(.*)", line)
            if not m:
                continue
            pid, kind, rest = m.groups()
            if kind == "map":
                p = rest.split()
                if len(p) >= 6 and "x" in p[1]:
                    lo, hi = (int(x, 16) for x in p[0].split("-"))
                    maps[pid].append((lo, hi, int(p[2], 16), p[5]))
            elif kind == "dump":
                dumps[pid].append({})
            elif kind == "s" and dumps[pid]:
                p = rest.split()
                dumps[pid][-1][tuple(int(a, 16) for a in p[2:])] = (int(p[0]), int(p[1]))
    return dumps, maps


class Symbols:
    def __init__(self, regions):
        self.regions = regions
        self.cache = {}

    def where(self, addr):
        for lo, hi, off, path in self.regions:
            if lo <= addr < hi:
                return path, addr - lo + off
        return None, addr

    def resolve(self, addrs):
        todo = collections.defaultdict(list)
        for a in set(addrs) - set(self.cache):
            path, off = self.where(a)
            if path is None:
                self.cache[a] = ("?", hex(a))
            else:
                todo[path].append((a, off))
        for path, items in todo.items():
            out = subprocess.run(["addr2line", "-f", "-C", "-e", path] + [hex(max(off - 1, 0)) for _, off in items],
                                 capture_output=True, text=True).stdout.split("\n")
            for i, (a, _) in enumerate(items):
                name = out[2 * i] if 2 * i < len(out) else "??"
                self.cache[a] = (path.rsplit("/", 1)[-1], name)

    def __getitem__(self, a):
        return self.cache[a]


def first_outside(frames):
    return next((fn for obj, fn in frames if not any(x in obj for x in ALLOCATOR)), None)


def part_of(frames):
    """(part, function) of the first frame outside the allocator."""
    for obj, fn in frames:
        if any(x in obj for x in ALLOCATOR):
            continue
        if "libnghttp2" in obj:
            return "nghttp2", fn
        if "libssl" in obj or "libcrypto" in obj:
            return "OpenSSL", fn
        return "Rampart (with Asio, Beast)", fn
    return "allocator", frames[0][1] if frames else "?"


def main():
    if len(sys.argv) < 2:
        print("usage: attribute.py STDERR_FILE [TOP]", file=sys.stderr)
        return 2
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    dumps, maps = parse(sys.argv[1])
    if not dumps:
        print("no dumps (was MEMATTR_OUT set and did the heap grow?)", file=sys.stderr)
        return 1
    pid = max(dumps, key=lambda p: len(dumps[p]))
    series = dumps[pid]
    sym = Symbols(maps[pid])
    sym.resolve([a for d in series for stack in d for a in stack[:6]])
    # The SSL object itself, one block per TLS connection: of the blocks
    # SSL_new allocates directly, the largest.
    in_ssl_new = {s for d in series for s in d if first_outside([sym[a] for a in s[:6]]) == "SSL_new"}
    if not in_ssl_new:
        print("no SSL_new in the dumps", file=sys.stderr)
        return 1
    ssl_object = max(in_ssl_new, key=lambda s: max(d[s][0] / max(d[s][1], 1) for d in series if s in d))
    counts = [d.get(ssl_object, (0, 0))[1] for d in series]
    # The most connections alive; of those dumps, the one with the fewest
    # 64 KiB blocks (I/O in flight: a handshake, or the first closes).
    most = max(counts)
    def io_blocks(d):
        return sum(c for b, c in d.values() if c and b / c >= 64 * 1024)
    peak = min((i for i in range(len(series)) if counts[i] >= 0.98 * most), key=lambda i: (io_blocks(series[i]), -i))
    conns = counts[peak] - counts[0]
    if conns <= 0:
        print("no connections opened between the dumps", file=sys.stderr)
        return 1
    first, last = series[0], series[peak]
    growth = []
    for stack, (b, c) in last.items():
        b0, c0 = first.get(stack, (0, 0))
        if b > b0:
            growth.append((b - b0, c - c0, stack))
    growth.sort(reverse=True)
    parts = collections.Counter()
    for b, _, stack in growth:
        parts[part_of([sym[a] for a in stack[:6]])[0]] += b
    total = sum(parts.values())
    print(f"worker {pid}: {conns} connections opened between dump 0 and dump {peak}")
    print(f"\n| part | bytes per connection |\n| --- | ---: |")
    for name, b in parts.most_common():
        print(f"| {name} | {b / conns:,.0f} |")
    print(f"| **total** | **{total / conns:,.0f}** |")
    big = sum(b for b, c, _ in growth if c > 0 and b / c >= 16 * 1024)
    print(f"\nOf the total, {big / conns:,.0f} bytes per connection are in blocks of 16 KiB or more "
          "(nghttp2's frame buffer: its pages go back to the kernel on an idle connection).")
    print(f"\nLargest allocation stacks (bytes and blocks per connection):")
    sym.resolve([a for _, _, s in growth[:top] for a in s])
    for b, c, stack in growth[:top]:
        frames = [sym[a] for a in stack]
        part, _ = part_of(frames[:6])
        names = [fn for obj, fn in frames if not any(x in obj for x in ALLOCATOR) and fn != "??"][:4]
        print(f"{b / conns:8,.0f} B {c / conns:5.2f}  [{part}] " + " < ".join(n[:60] for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
