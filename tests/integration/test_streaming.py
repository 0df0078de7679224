"""Bodies stream both ways: 64 MiB uploads and downloads, with Content-Length and
chunked, arrive intact (SHA-256), and the gateway's memory (VmRSS of the master
and all its workers) stays within 32 MiB of its baseline while they run.

curl is rate limited to 64 MiB/s so that each transfer lasts about a second and
the RSS sampler (every 20 ms) sees it in flight.
"""

import os
import sys
import time

import harness as h

SIZE = 64 * h.MiB
RSS_HEADROOM = 32 * h.MiB
RATE = "64M"
S = {}


def setup_module():
    S["certs"] = h.make_certs()
    S["app1"] = h.Backend("app1").start()
    S["gw"] = h.Gateway(S["certs"], {"app1": S["app1"]}, http=False, workers=2,
                        limits={"body_bytes": "128MiB"}).start()
    S["upload"] = h.temp_dir() / "upload.bin"
    S["upload_sha"] = h.write_random_file(S["upload"], SIZE)
    for i in range(4):  # touch both workers and their upstream pools before the baseline
        h.curl(S["gw"], f"/warmup?i={i}")
    S["baseline"] = h.tree_rss(S["gw"].pid)


def _run_sampled(job):
    """Waits for a background curl while sampling the gateway's RSS; returns (response, peak)."""
    pid = S["gw"].pid
    peak, samples = 0, 0
    deadline = time.monotonic() + job.max_time + 5
    while not job.done and time.monotonic() < deadline:
        peak = max(peak, h.tree_rss(pid))
        samples += 1
        time.sleep(0.02)
    peak = max(peak, h.tree_rss(pid))
    r = job.wait()
    growth = peak - S["baseline"]
    print(f"    rss baseline {S['baseline'] / h.MiB:.1f} MiB, peak {peak / h.MiB:.1f} MiB, "
          f"growth {growth / h.MiB:.1f} MiB over {samples} samples", flush=True)
    h.check(growth < RSS_HEADROOM, f"gateway RSS grew by {growth / h.MiB:.1f} MiB during the transfer "
                                   f"(limit {RSS_HEADROOM / h.MiB:.0f} MiB): bodies are buffered, not streamed")
    return r


def _upload(*extra):
    job = h.curl(S["gw"], "/upload", "-T", str(S["upload"]), "-H", "Expect:", "--limit-rate", RATE, *extra,
                 background=True, max_time=90)
    r = _run_sampled(job)
    h.check(r.status == 200, f"upload: {r}")
    doc = r.json()
    h.check(doc["bytes"] == SIZE, f"backend received {doc['bytes']} bytes, sent {SIZE}")
    h.check(doc["sha256"] == S["upload_sha"], "backend's SHA-256 differs from the uploaded file's")


def _download(query):
    out = h.temp_dir() / "download.bin"
    try:
        job = h.curl(S["gw"], f"/download?bytes={SIZE}{query}", "--limit-rate", RATE, output=out,
                     background=True, max_time=90)
        r = _run_sampled(job)
        h.check(r.status == 200, f"download: {r}")
        size = out.stat().st_size
        h.check(size == SIZE, f"downloaded {size} bytes, expected {SIZE}")
        h.check(h.sha256_file(out) == h.download_sha256(SIZE), "downloaded content differs from the backend's")
        return r
    finally:
        out.unlink(missing_ok=True)


def test_upload_content_length_64mib():
    _upload()


def test_upload_chunked_64mib():
    _upload("-H", "Transfer-Encoding: chunked")


def test_download_content_length_64mib():
    r = _download("")
    length = r.header("Content-Length")
    h.check(length in (None, str(SIZE)), f"Content-Length {length}")


def test_download_chunked_64mib():
    _download("&chunked=1")
# MAIN globals()
