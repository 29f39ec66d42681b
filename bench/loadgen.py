"""The native load generators the field measures proxies with, driven to saturation:
wrk (HTTP/1.1, one TLS connection per slot, or a new connection per request) and h2load
(HTTP/2, here gRPC). Each run returns what the tool saw *and* is checked against what the
server really did: a gRPC refusal is an HTTP 200 with a grpc-status trailer, so gRPC successes
are counted from Triton's own inference statistics, never from h2load's status counts."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

TOOLS = ("wrk", "h2load")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class LoadError(RuntimeError):
    """A run that cannot be reported: the tool failed, or the server did not do what it said."""


@dataclass(frozen=True)
class Sample:
    rps: float  # requests the server completed successfully, per second of the run
    p50_ms: float
    p99_ms: float
    requests: int
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpRequest:
    """One request shape for wrk: method, path, headers and an optional body file."""
    path: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: Path | None = None


_WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d %f %f\\n", summary.requests, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def _wrk_script(req: HttpRequest, work: Path) -> Path:
    lines = [f'wrk.method = "{req.method}"', f'wrk.path = "{req.path}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in req.headers]
    if req.body is not None:
        lines += [f'local f = io.open("{req.body}", "rb")', "wrk.body = f:read(\"*a\")", "f:close()"]
    script = work / f"wrk-{abs(hash((req.path, req.method, req.headers, str(req.body))))}.lua"
    script.write_text("\n".join(lines) + "\n" + _WRK_DONE)
    return script


def wrk(port: int, req: HttpRequest, connections: int, seconds: float, work: Path) -> Sample:
    """wrk at *connections* connections (at most 2 threads: the machine has 2 cores)."""
    threads = max(1, min(2, connections))
    out = _run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                "-s", str(_wrk_script(req, work)), f"https://127.0.0.1:{port}{req.path}"], seconds + 60)
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out.stdout)
    if not m:
        raise LoadError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")
    requests, bad_status, connect, read, write_or_timeout, duration_us = (int(m.group(i)) for i in range(1, 7))
    if bad_status:
        raise LoadError(f"wrk saw {bad_status} non-2xx/3xx answers of {requests}")
    # With a new connection per request, wrk counts the server's close after an answer as a read
    # error on some runs (at most one per request); those requests were answered and count.
    # A failed connect or handshake, a write error or a timeout is a failed run, always.
    closing = any(k.lower() == "connection" and v == "close" for k, v in req.headers)
    if connect or write_or_timeout or (read and not closing) or read > requests:
        raise LoadError(f"wrk saw socket errors in {requests} requests: connect {connect}, read {read}, "
                        f"write/timeout {write_or_timeout}")
    return Sample(rps=requests / (duration_us / 1e6), p50_ms=float(m.group(7)) / 1000,
                  p99_ms=float(m.group(8)) / 1000, requests=requests)


class Counter(Protocol):
    def __call__(self) -> int: ...


def triton_success_counter(http_url: str, model: str) -> Counter:
    """Triton's own count of successful inferences of *model* (its statistics API)."""
    def count() -> int:
        try:
            with urllib.request.urlopen(f"{http_url}/v2/models/{model}/stats", timeout=10) as r:  # noqa: S310
                stats = json.loads(r.read())["model_stats"]
        except (urllib.error.URLError, OSError) as exc:
            raise LoadError(f"Triton's statistics API did not answer ({exc})") from exc
        return int(sum(s["inference_stats"]["success"]["count"] for s in stats))
    return count


def _percentiles(log: Path) -> tuple[float, float]:
    """p50/p99 in ms from h2load's --log-file (start time, status, latency in microseconds)."""
    latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") >= 2)
    if not latencies:
        return float("nan"), float("nan")
    return statistics.median(latencies) / 1000, latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000


# Requests per h2load run, from the rate the same target reached before. A run is a request count,
# not a duration: at the end of a timed run h2load drops the calls in flight, which Envoy passes
# on to Triton as cancellations, and a cancellation storm is not what is being measured.
_estimates: dict[tuple[int, int, str, str], float] = {}


def h2load_grpc(port: int, path: str, body: Path, connections: int, seconds: float, work: Path,
                executed: Counter) -> Sample:
    """gRPC unary calls over h2load, one stream per connection at a time; successes are what
    *executed* (Triton's statistics) says ran, and h2load may not claim more."""
    log = work / "h2load.log"
    log.unlink(missing_ok=True)
    key = (port, connections, path, str(body))
    # no estimate yet (a warm-up round gives one): a short run of 50 calls per connection
    count = max(connections * 20, round(_estimates[key] * seconds) if key in _estimates else connections * 50)
    before = executed()
    out = _run(["h2load", "-c", str(connections), "-t", str(max(1, min(2, connections))), "-m", "1",
                          "-n", str(count), "-d", str(body), "--log-file", str(log),
                "-H", "content-type: application/grpc", "-H", "te: trailers", f"https://127.0.0.1:{port}{path}"],
               seconds * 4 + 60)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                     r"(\d+) timeout", out.stdout)
    finished = re.search(r"finished in ([\d.]+)(m?s)", out.stdout)
    if not (done and finished):
        raise LoadError(f"h2load gave no result: {out.stdout[-800:]} {out.stderr[-300:]}")
    ran = executed() - before
    finished_calls, claimed, failed, errored, timed_out = (int(g) for g in done.groups())
    if finished_calls != count or claimed != count:
        raise LoadError(f"h2load: {claimed} of {count} calls answered 2xx ({failed} failed, {errored} errored, "
                        f"{timed_out} timed out)")
    # every HTTP 200 must be an inference Triton ran (a gRPC refusal is an HTTP 200 too)
    if ran < claimed:
        raise LoadError(f"h2load counted {claimed} HTTP successes, Triton executed {ran}: "
                        f"{claimed - ran} calls were refused with a grpc-status")
    elapsed = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    p50, p99 = _percentiles(log)
    _estimates[key] = claimed / elapsed
    return Sample(rps=claimed / elapsed, p50_ms=p50, p99_ms=p99, requests=claimed)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{cmd[0]} did not finish within {timeout:.0f} s") from exc


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def median_sample(samples: list[Sample]) -> dict[str, Any]:
    return {"rps": statistics.median(s.rps for s in samples), "p50_ms": statistics.median(s.p50_ms for s in samples),
            "p99_ms": statistics.median(s.p99_ms for s in samples), "rounds": [round(s.rps) for s in samples]}
