"""`python -m bigmodel serve --workdir DIR [--host 127.0.0.1] [--port 8000]`: an HTTP JSON API
over a run's newest checkpoint (FastAPI on uvicorn; `pip install -e '.[serve]'`).

Endpoints and errors: `bigmodel.inference.serve_api`. The queue and its one model thread:
`bigmodel.inference.serve_queue`. Shapes, batching and warm-up: `bigmodel.inference.serve_engine`.
The socket, the guard on idle and slow connections, and the announcement:
`bigmodel.inference.serve_http`.

Startup checks every flag, binds and listens on the port (so a port in use, even by a server
still warming up, is one `error:` line, exit 2, in a second rather than after the warm-up),
checks the run before any JAX work, restores the checkpoint, compiles the default request's
programs, and only then accepts connections (those that came meanwhile wait in the backlog) and
says "serving ...". Loopback only unless --host says otherwise (there is no authentication).
SIGINT or SIGTERM, from startup on, stops accepting, answers the requests already in, waits at
most --shutdown_grace_s for them, and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import ipaddress
import math
import signal
from pathlib import Path
from typing import Self

from bigmodel.arguments import positive_int
from bigmodel.config import ConfigError

SERVE_HELP = "serve a run's newest checkpoint over HTTP: POST /generate, GET /health, GET /info"
DEFAULT_MAX_TOKENS = 100  # a request that names none (as generate's --max_tokens)
DEFAULT_KEEP_ALIVE_S = 5.0  # uvicorn's default; lowered to --request_timeout_s when that is shorter


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="a train run's directory; its newest readable checkpoint is served")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 opens it to the network (no authentication)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free one, printed at startup)")
    limits = parser.add_argument_group("limits (a request over one gets a 4xx answer; the queue, a 503)")
    limits.add_argument("--max_queue", type=positive_int, default=16, help="requests waiting besides the batch being run")
    limits.add_argument("--max_batch", type=positive_int, default=8, help="prompts decoded together (greedy requests share a batch)")
    limits.add_argument("--max_tokens", type=positive_int, default=256, help="new tokens per prompt at most")
    limits.add_argument("--max_prompt_tokens", type=positive_int, default=512,
                        help="tokens per prompt at most (lowered to the model's max_seq_len - 1)")
    limits.add_argument("--max_prompt_bytes", type=positive_int, default=4096, help="UTF-8 bytes per prompt (and stop string) at most")
    limits.add_argument("--max_prompts", type=positive_int, default=8, help="prompts per request at most (≤ --max_batch)")
    limits.add_argument("--max_body_bytes", type=positive_int, default=65536, help="request body size at most (413 beyond)")
    connections = parser.add_argument_group("connections (idle and slow clients are closed, so they cannot hold the server)")
    connections.add_argument("--request_timeout_s", type=float, default=10.0,
                             help="seconds a connection has to send a whole request, from when it opens or gets its "
                                  "previous answer; then it is closed unanswered")
    connections.add_argument("--keep_alive_s", type=float, default=None,
                             help=f"seconds an idle connection is kept open for its next request (default {DEFAULT_KEEP_ALIVE_S:g}, "
                                  "or --request_timeout_s if shorter)")
    connections.add_argument("--max_pending_connections", type=positive_int, default=512,
                             help="connections still sending a request (or idle) at most; one more closes the longest waiting")
    parser.add_argument("--shutdown_grace_s", type=float, default=30.0,
                        help="on SIGINT/SIGTERM, wait this long for requests already in before dropping them")


def check_flags(args: argparse.Namespace) -> None:
    """The flags that need no run to check (ConfigError names the first bad one), and the extra."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"serve needs {' and '.join(missing)}: pip install -e '.[serve]'")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port: pick one in 1024-65535 (or 0 for any free one)")
    if args.max_prompts > args.max_batch:
        raise ConfigError(f"--max_prompts {args.max_prompts} is over --max_batch {args.max_batch}: a request's prompts decode "
                          "in one batch, so raise --max_batch or lower --max_prompts")
    if not args.shutdown_grace_s >= 0:
        raise ConfigError(f"--shutdown_grace_s must be ≥ 0, got {args.shutdown_grace_s}")
    for flag in ("request_timeout_s", "keep_alive_s"):
        value = getattr(args, flag)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{flag} must be a positive number of seconds, got {value}")
    if args.keep_alive_s is not None and args.keep_alive_s > args.request_timeout_s:
        raise ConfigError(f"--keep_alive_s {args.keep_alive_s:g} is over --request_timeout_s {args.request_timeout_s:g}, which "
                          "closes an idle connection first: lower --keep_alive_s or raise --request_timeout_s")


def keep_alive_s(args: argparse.Namespace) -> float:
    """--keep_alive_s, or its default within --request_timeout_s (which would close the connection first)."""
    return min(DEFAULT_KEEP_ALIVE_S, args.request_timeout_s) if args.keep_alive_s is None else args.keep_alive_s


def limits_for(args: argparse.Namespace, max_seq_len: int):
    """The serve limits, with the prompt and token caps fitted to the model's max_seq_len."""
    from bigmodel.inference.serve_engine import Limits

    if args.max_tokens >= max_seq_len:
        raise ConfigError(f"--max_tokens {args.max_tokens} leaves no room for a prompt in the model's max_seq_len of {max_seq_len}: "
                          f"pass at most {max_seq_len - 1}")
    return Limits(max_tokens=args.max_tokens, default_max_tokens=min(DEFAULT_MAX_TOKENS, args.max_tokens),
                  max_prompt_tokens=min(args.max_prompt_tokens, max_seq_len - 1), max_prompt_bytes=args.max_prompt_bytes,
                  max_prompts=args.max_prompts, max_body_bytes=args.max_body_bytes, max_queue=args.max_queue,
                  max_batch=args.max_batch)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def model_info(workdir: Path, step: int, setup, tokenizer, limits) -> dict:
    """What GET /info answers: enough to know which model this is and what it accepts."""
    import jax

    from bigmodel.flops import param_counts

    model_config = setup.model.config
    return {"workdir": str(workdir), "step": step, "model": dataclasses.asdict(model_config), **param_counts(model_config),
            "tokenizer": {"kind": tokenizer.name, "vocab_size": tokenizer.vocab_size}, "limits": dataclasses.asdict(limits),
            "batching": "greedy requests with the same stop string share a decode, up to max_batch prompts; sampled requests run alone",
            "devices": f"{jax.device_count()} × {jax.devices()[0].device_kind}"}


class SignalLatch:
    """SIGINT/SIGTERM noted (not raised) while in the `with` block, the previous handlers back
    after it. uvicorn installs its own handlers while serving, and re-raises what it caught once
    it has stopped: that lands here."""

    KINDS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> Self:
        self.signal, self.previous = None, {kind: signal.signal(kind, self.note) for kind in self.KINDS}
        return self

    def __exit__(self, *_) -> None:
        for kind, handler in self.previous.items():
            signal.signal(kind, handler)

    def note(self, signum, _frame) -> None:
        self.signal = self.signal or signal.Signals(signum).name


def serve_command(args: argparse.Namespace) -> int:
    check_flags(args)
    from bigmodel.inference import serve_http  # after check_flags: it needs uvicorn

    serve_http.raise_open_file_limit(serve_http.files_needed(args.max_pending_connections, args.max_queue, args.max_batch),
                                     f"--max_pending_connections {args.max_pending_connections}, --max_queue {args.max_queue} "
                                     f"and --max_batch {args.max_batch}")
    with serve_http.listening_socket(args.host, args.port) as sock, SignalLatch() as stop:
        return serve_on(sock, args, stop)


def serve_on(sock, args: argparse.Namespace, stop: SignalLatch) -> int:
    """Open the run, warm up, and serve on the listening `sock` until a signal (noted by `stop`
    through startup; a signal before the warm-up ends stops the server before it serves)."""
    from bigmodel.restore import open_for_use, restore_params

    workdir = Path(args.workdir)
    config, manager, tokenizer = open_for_use(workdir)
    try:
        limits = limits_for(args, config.model.max_seq_len)
    except ConfigError:
        manager.close()
        raise

    import uvicorn

    from bigmodel.inference import serve_http
    from bigmodel.inference.serve_api import make_app
    from bigmodel.inference.serve_engine import Engine, stderr_log
    from bigmodel.inference.serve_queue import Worker

    if not is_loopback(args.host):
        stderr_log(f"warning: listening on {args.host}: anyone who can reach this machine can use the model (no authentication)")
    setup, params, step = restore_params(config, manager)
    engine = Engine(setup, params, tokenizer, limits, stderr_log)
    warm_up_s = 0.0 if stop.signal else engine.warm_up()
    if stop.signal:
        stderr_log(f"stopped by {stop.signal} before serving")
        return 0
    worker = Worker(engine.run_batch, limits.max_queue, limits.max_batch)
    app = make_app(worker, tokenizer, limits, config.model.max_seq_len, model_info(workdir, step, setup, tokenizer, limits), stderr_log)
    host, port = sock.getsockname()[:2]

    def announce() -> None:
        stderr_log(f"serving {workdir} (step {step}) on http://{host if ':' not in host else f'[{host}]'}:{port} after a "
                   f"{warm_up_s:.1f} s warm-up; queue {limits.max_queue}, batch {limits.max_batch}, max_tokens {limits.max_tokens}")

    # No limit_concurrency: it counts idle connections with busy ones, so idle ones could fill it
    # (every request a 503); the guard bounds the idle and slow ones, the queue the busy ones.
    guard = serve_http.ConnectionGuard(args.request_timeout_s, args.max_pending_connections, stderr_log)
    server_config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", http=serve_http.guarded_protocol(guard),
                                   timeout_keep_alive=keep_alive_s(args), timeout_graceful_shutdown=args.shutdown_grace_s)
    serve_http.AnnouncingServer(server_config, announce, stop).run(sockets=[sock])
    stderr_log(f"stopped{f' by {stop.signal}' if stop.signal else ''}")
    return 0
