"""Hold idle and stalled connections open against `bigmodel serve` and time what real clients get.

For each N in --connections: open N connections that send nothing and N that send half their
request headers and stall (slowloris), hold them, and meanwhile time --health_calls `GET /health`
and --completions greedy `POST /generate` calls, each on a new connection, one at a time. N=0 is
the baseline. Prints one row per N: /health latency percentiles, completion latency, how many of
the 2N held connections the server had closed by the end (past --max_pending_connections or
--request_timeout_s), and the status codes seen.

  python tools/serve_abuse.py --workdir runs/l2 --connections 0 200 1000
  python tools/serve_abuse.py --url http://127.0.0.1:8765 --connections 200   # a server already running

With --workdir it starts `python -m bigmodel serve` on a free loopback port (the flags after `--`
go to it) and stops it with SIGTERM at the end. tests/test_serve.py borrows `hold_connections`,
`closed_by_server` and `timed_get`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
HALF_HEADERS = b"GET /health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow"  # no end of line, no blank line: never whole
PROMPT = "And the LORD said unto Moses"


def raise_open_files(needed: int) -> None:
    """This process's soft limit on open files raised to `needed` where the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(needed, hard), hard))


def hold_connections(host: str, port: int, idle: int, stalled: int) -> list[socket.socket]:
    """`idle` connections that send nothing, then `stalled` that send half a request's headers."""
    held = []
    for index in range(idle + stalled):
        sock = socket.create_connection((host, port), timeout=10)
        if index >= idle:
            sock.sendall(HALF_HEADERS)
        held.append(sock)
    return held


def closed_by_server(held: list[socket.socket]) -> int:
    """How many of `held` the server has closed (a read sees the end, or a reset), without waiting."""
    closed = 0
    for sock in held:
        sock.setblocking(False)  # a socket with a timeout would wait for data
        try:
            closed += sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:  # open, nothing to read
            pass
        except OSError:  # reset
            closed += 1
    return closed


def timed_get(host: str, port: int, path: str, body: dict | None = None, timeout: float = 60) -> tuple[float, int, bytes]:
    """(seconds, status, body) of one request on a new connection: GET, or POST of `body` as JSON."""
    begin = time.perf_counter()
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        if body is None:
            connection.request("GET", path)
        else:
            connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        response = connection.getresponse()
        return time.perf_counter() - begin, response.status, response.read()
    except OSError as error:
        return time.perf_counter() - begin, 0, str(error).encode()
    finally:
        connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def one_round(host: str, port: int, n: int, health_calls: int, completions: int, max_tokens: int) -> dict:
    begin = time.perf_counter()
    held = hold_connections(host, port, n, n)
    opened_s = time.perf_counter() - begin
    try:
        health = [timed_get(host, port, "/health") for _ in range(health_calls)]
        body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
        generated = [timed_get(host, port, "/generate", body) for _ in range(completions)]
        closed = closed_by_server(held)
    finally:
        for sock in held:
            sock.close()
    seconds = [s for s, _, _ in health]
    statuses = sorted({status for _, status, _ in health + generated})
    return {"held": 2 * n, "open_s": round(opened_s, 2), "health_p50_ms": percentile(seconds, 50) * 1e3,
            "health_p99_ms": percentile(seconds, 99) * 1e3, "health_max_ms": max(seconds) * 1e3,
            "completion_p50_ms": percentile([s for s, _, _ in generated], 50) * 1e3,
            "completion_max_ms": max(s for s, _, _ in generated) * 1e3, "closed_by_server": closed, "statuses": statuses}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(workdir: str, flags: list[str], log_path: Path) -> tuple[subprocess.Popen, int]:
    """`python -m bigmodel serve` on a free loopback port, its output in `log_path`, once it serves."""
    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "bigmodel", "serve", "--workdir", workdir, "--port", str(port), *flags],
                                   cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    while " serving " not in log_path.read_text():
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}) before serving:\n{log_path.read_text()}")
        time.sleep(0.2)
    return process, port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", help="a train run to serve (started here on a free loopback port)")
    where.add_argument("--url", help="a server already running, e.g. http://127.0.0.1:8765")
    parser.add_argument("--connections", type=int, nargs="+", default=[0, 200, 1000], help="N: idle and stalled connections each")
    parser.add_argument("--health_calls", type=int, default=200)
    parser.add_argument("--completions", type=int, default=10)
    parser.add_argument("--max_tokens", type=int, default=16)
    parser.add_argument("serve_flags", nargs="*", help="after --: flags for serve (with --workdir)")
    args = parser.parse_args(argv)
    raise_open_files(2 * max(args.connections) + 256)
    process = None
    if args.workdir:
        log_path = Path(tempfile.mkdtemp(prefix="serve_abuse_")) / "server.log"
        process, port = start_server(args.workdir, args.serve_flags, log_path)
        print(f"server log: {log_path}", file=sys.stderr)
        host = "127.0.0.1"
    else:
        host, port = urlsplit(args.url).hostname, urlsplit(args.url).port
    try:
        print("| held (idle + stalled) | /health p50 | p99 | max | completion p50 | max | closed by the server | statuses |")
        print("|---|---|---|---|---|---|---|---|")
        for n in args.connections:
            row = one_round(host, port, n, args.health_calls, args.completions, args.max_tokens)
            print(f"| {n} + {n} (opened in {row['open_s']:.1f} s) | {row['health_p50_ms']:.1f} ms | {row['health_p99_ms']:.1f} ms | {row['health_max_ms']:.1f} ms "
                  f"| {row['completion_p50_ms']:.0f} ms | {row['completion_max_ms']:.0f} ms | {row['closed_by_server']} of {row['held']} "
                  f"| {', '.join(map(str, row['statuses']))} |", flush=True)
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
