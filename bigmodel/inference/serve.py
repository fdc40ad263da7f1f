"""`python -m bigmodel serve --workdir DIR [--host 127.0.0.1] [--port 8000]`: an HTTP JSON API
over a run's newest checkpoint (FastAPI on uvicorn; `pip install -e '.[serve]'`).

Endpoints and errors: `bigmodel.inference.serve_api`. The queue and its one model thread:
`bigmodel.inference.serve_queue`. Shapes, batching and warm-up: `bigmodel.inference.serve_engine`.

Startup checks every flag and the run before any JAX work, then binds the port (so a port in
use is one `error:` line, exit 2, in a second rather than after the warm-up), restores the
checkpoint, compiles the default request's programs, and only then listens: a client never
waits on a server that is still compiling. Loopback only unless --host says otherwise (there is
no authentication). SIGINT or SIGTERM stops accepting, answers the requests already in, waits
at most --shutdown_grace_s for them, and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib.util
import ipaddress
import signal
import socket
from pathlib import Path

from bigmodel.arguments import positive_int
from bigmodel.config import ConfigError

SERVE_HELP = "serve a run's newest checkpoint over HTTP: POST /generate, GET /health, GET /info"
DEFAULT_MAX_TOKENS = 100  # a request that names none (as generate's --max_tokens)


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


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), not yet listening (uvicorn listens once the app is ready)."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise ConfigError(f"--host {host} is not an address or a name that resolves: pass e.g. 127.0.0.1") from None
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart can reuse a port in TIME_WAIT
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        fixes = {errno.EADDRINUSE: f"port {port} on {host} is in use: pick another --port, or stop what holds it",
                 errno.EACCES: f"port {port} needs privileges: pick one ≥ 1024",
                 errno.EADDRNOTAVAIL: f"--host {host} is not an address of this machine: pass 127.0.0.1 or one of its own"}
        raise ConfigError(fixes.get(error.errno, f"cannot listen on {host}:{port} ({error.strerror}): pick another --host/--port")) from None
    return sock


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
    """SIGINT/SIGTERM noted (not raised), from startup to exit. uvicorn installs its own handlers
    while serving, and re-raises what it caught once it has stopped: that lands here."""

    def __init__(self):
        self.signal = None
        for kind in (signal.SIGINT, signal.SIGTERM):
            signal.signal(kind, self.note)

    def note(self, signum, _frame) -> None:
        self.signal = self.signal or signal.Signals(signum).name


def serve_command(args: argparse.Namespace) -> int:
    check_flags(args)
    from bigmodel.restore import open_for_use, restore_params

    workdir = Path(args.workdir)
    config, manager, tokenizer = open_for_use(workdir)
    try:
        limits = limits_for(args, config.model.max_seq_len)
        sock = bind(args.host, args.port)
    except ConfigError:
        manager.close()
        raise
    stop = SignalLatch()

    import uvicorn

    from bigmodel.inference.serve_api import make_app
    from bigmodel.inference.serve_engine import Engine, stderr_log
    from bigmodel.inference.serve_queue import Worker

    if not is_loopback(args.host):
        stderr_log(f"warning: listening on {args.host}: anyone who can reach this machine can use the model (no authentication)")
    setup, params, step = restore_params(config, manager)
    engine = Engine(setup, params, tokenizer, limits, stderr_log)
    warm_up_s = engine.warm_up()
    if stop.signal:
        stderr_log(f"stopped by {stop.signal} before serving")
        return 0
    worker = Worker(engine.run_batch, limits.max_queue, limits.max_batch)
    app = make_app(worker, tokenizer, limits, config.model.max_seq_len, model_info(workdir, step, setup, tokenizer, limits), stderr_log)
    host, port = sock.getsockname()[:2]
    stderr_log(f"serving {workdir} (step {step}) on http://{host if ':' not in host else f'[{host}]'}:{port} after a "
               f"{warm_up_s:.1f} s warm-up; queue {limits.max_queue}, batch {limits.max_batch}, max_tokens {limits.max_tokens}")
    # limit_concurrency bounds the open connections too (uvicorn answers 503 beyond): a flood of
    # clients costs a bounded number of tasks, while /health still gets through a full queue.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           limit_concurrency=4 * (limits.max_queue + limits.max_batch) + 16,
                                           timeout_graceful_shutdown=args.shutdown_grace_s))
    server.run(sockets=[sock])
    stderr_log(f"stopped{f' by {stop.signal}' if stop.signal else ''}")
    return 0
