"""Bodies stream both ways: 64 MiB uploads and downloads, with Content-Length and
chunked, arrive intact (SHA-256), and the gateway's memory (VmRSS of the master
and all its workers) stays within 32 MiB of its baseline while they run.

curl is rate limited to 64 MiB/s so that each transfer lasts about a second and
the RSS sampler (every 20 ms) sees it in flight.
"""

import time

import harness as h
import pytest

SIZE = 64 * h.MiB
RSS_HEADROOM = 32 * h.MiB
RATE = "64M"


class Streaming:
    """A gateway (2 workers, 128 MiB body limit) whose memory is watched during 64 MiB transfers."""

    def __init__(self, certs: h.CertSet) -> None:
        self.app1 = h.Backend("app1").start()
        self.gw = h.Gateway(certs, {"app1": self.app1}, http=False, workers=2,
                            limits={"body_bytes": "128MiB"}).start()
        self.upload = h.temp_dir() / "upload.bin"
        self.upload_sha = h.write_random_file(self.upload, SIZE)
        for i in range(4):  # touch both workers and their upstream pools before the baseline
            h.curl(self.gw, f"/warmup?i={i}")
        self.baseline = h.tree_rss(self.gw.pid)


@pytest.fixture(scope="module")
def s(certs) -> Streaming:
    return Streaming(certs)


def _run_sampled(s, job):
    """Waits for a background curl while sampling the gateway's RSS; returns (response, peak)."""
    pid = s.gw.pid
    peak, samples = 0, 0
    deadline = time.monotonic() + job.max_time + 5
    while not job.done and time.monotonic() < deadline:
        peak = max(peak, h.tree_rss(pid))
        samples += 1
        time.sleep(0.02)
    peak = max(peak, h.tree_rss(pid))
    r = job.wait()
    growth = peak - s.baseline
    print(f"    rss baseline {s.baseline / h.MiB:.1f} MiB, peak {peak / h.MiB:.1f} MiB, "
          f"growth {growth / h.MiB:.1f} MiB over {samples} samples", flush=True)
    h.check(growth < RSS_HEADROOM, f"gateway RSS grew by {growth / h.MiB:.1f} MiB during the transfer "
                                   f"(limit {RSS_HEADROOM / h.MiB:.0f} MiB): bodies are buffered, not streamed")
    return r


def _upload(s, *extra):
    job = h.curl(s.gw, "/upload", "-T", str(s.upload), "-H", "Expect:", "--limit-rate", RATE, *extra,
                 background=True, max_time=90)
    r = _run_sampled(s, job)
    h.check(r.status == 200, f"upload: {r}")
    doc = r.json()
    h.check(doc["bytes"] == SIZE, f"backend received {doc['bytes']} bytes, sent {SIZE}")
    h.check(doc["sha256"] == s.upload_sha, "backend's SHA-256 differs from the uploaded file's")


def _download(s, query):
    out = h.temp_dir() / "download.bin"
    try:
        job = h.curl(s.gw, f"/download?bytes={SIZE}{query}", "--limit-rate", RATE, output=out,
                     background=True, max_time=90)
        r = _run_sampled(s, job)
        h.check(r.status == 200, f"download: {r}")
        size = out.stat().st_size
        h.check(size == SIZE, f"downloaded {size} bytes, expected {SIZE}")
        h.check(h.sha256_file(out) == h.download_sha256(SIZE), "downloaded content differs from the backend's")
        return r
    finally:
        out.unlink(missing_ok=True)


def test_upload_content_length_64mib(s):
    _upload(s)


def test_upload_chunked_64mib(s):
    _upload(s, "-H", "Transfer-Encoding: chunked")


def test_download_content_length_64mib(s):
    r = _download(s, "")
    length = r.header("Content-Length")
    h.check(length in (None, str(SIZE)), f"Content-Length {length}")


def test_download_chunked_64mib(s):
    _download(s, "&chunked=1")
