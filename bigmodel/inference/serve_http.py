"""The server's network side: the listening socket, a guard on every connection, and the uvicorn
server that announces itself only once it serves.

A connection is in one of two classes:

- still owing a request: just opened, idle between keep-alive requests, or still sending its
  headers or body. It has `request_timeout_s` from when it opened (or got its previous answer)
  to finish sending the request, or it is closed without an answer; and at most `max_pending`
  such connections are held: one more closes the one that has waited longest (slow clients are
  the oldest; a real client sends its request in one go). Clients that connect and say nothing,
  or send half their headers and stall (slowloris), thus cost a bounded number of sockets for a
  bounded time, whatever their number. (An idle keep-alive connection is also closed by
  uvicorn's own timer, `keep_alive_s`, which is no longer than the deadline.)
- with its request in: answered. /health and /info answer at once on the event loop, never
  behind the model; /generate waits in the bounded queue (`serve_queue`) or gets a 503. These
  are bounded by the queue, so no count is kept here. An answer (tens of KB at most) fits the
  transport's write buffer, so a client that does not read it holds no request open.

uvicorn's own connection limit (`limit_concurrency`) counts both classes together: ~112 idle
connections made every request, /health included, a 503. It is not used. The guard subclasses
uvicorn's h11 protocol, the pure-Python HTTP/1.1 parser (the same on every install), and only
watches the h11 state of the client's side; the parsing and answering stay uvicorn's.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import functools
import resource
import socket

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from bigmodel.config import ConfigError

LOG_EVERY_S = 10.0  # at most one line per this many seconds about dropped connections
BACKLOG = 2048  # connections the kernel holds before they are accepted (uvicorn's default)
FILES_BESIDES_CONNECTIONS = 256  # checkpoint files, JAX's threads and pipes, a burst of /health calls
OWING_A_REQUEST = (h11.IDLE, h11.SEND_BODY)  # the client's h11 states before its request is whole


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) and listening, so that the port is this server's from now
    on: a second server fails here, before its warm-up. Clients that connect during the warm-up
    wait in the backlog until the server serves."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise ConfigError(f"--host {host} is not an address or a name that resolves: pass e.g. 127.0.0.1") from None
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart can reuse a port in TIME_WAIT
    try:
        sock.bind(address)
        sock.listen(BACKLOG)  # two sockets may both bind with SO_REUSEADDR; only one may listen
    except OSError as error:
        sock.close()
        fixes = {errno.EADDRINUSE: f"port {port} on {host} is in use: pick another --port, or stop what holds it",
                 errno.EACCES: f"port {port} needs privileges: pick one ≥ 1024",
                 errno.EADDRNOTAVAIL: f"--host {host} is not an address of this machine: pass 127.0.0.1 or one of its own"}
        raise ConfigError(fixes.get(error.errno, f"cannot listen on {host}:{port} ({error.strerror}): pick another --host/--port")) from None
    return sock


def files_needed(max_pending: int, max_queue: int, max_batch: int) -> int:
    """Open files the server may need: the pending connections, those with a request in, the rest."""
    return max_pending + 4 * (max_queue + max_batch) + FILES_BESIDES_CONNECTIONS


def raise_open_file_limit(needed: int, settings: str) -> int:
    """Raise this process's soft limit on open files to `needed` if the hard limit allows (as
    nginx's worker_rlimit_nofile does); ConfigError naming the `settings` that need them if it
    cannot. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return needed
    raise ConfigError(f"{settings} need about {needed} open files, but this process may open {hard} (`ulimit -Hn`): "
                      "lower them, or raise the limit")


class ConnectionGuard:
    """What one server's connections share: the deadline, the cap on connections owing a request
    (held oldest first, each with its deadline's timer), and the tally of those it closed."""

    def __init__(self, request_timeout_s: float, max_pending: int, log):
        self.request_timeout_s, self.max_pending, self.log = request_timeout_s, max_pending, log
        self.pending: dict[GuardedH11Protocol, asyncio.TimerHandle] = {}  # insertion order: the longest waiting first
        self.dropped: collections.Counter = collections.Counter()  # "timeout", "evicted": since the last log line

    def owes_request(self, connection: GuardedH11Protocol) -> None:
        """`connection` now owes a request: start its deadline (if not started) and keep the cap."""
        if connection in self.pending:
            return
        self.pending[connection] = connection.loop.call_later(self.request_timeout_s, self.drop, connection, "timeout")
        while len(self.pending) > self.max_pending:
            self.drop(next(iter(self.pending)), "evicted")

    def request_in(self, connection: GuardedH11Protocol) -> None:
        timer = self.pending.pop(connection, None)
        if timer is not None:
            timer.cancel()

    def drop(self, connection: GuardedH11Protocol, reason: str) -> None:
        self.request_in(connection)
        connection.transport.close()  # uvicorn's connection_lost ends a request the app was reading
        if not self.dropped:
            connection.loop.call_later(LOG_EVERY_S, self.report)
        self.dropped[reason] += 1

    def report(self) -> None:
        timeouts, evicted = self.dropped["timeout"], self.dropped["evicted"]
        self.dropped.clear()
        self.log(f"closed {timeouts + evicted} connections that sent no whole request in the last {LOG_EVERY_S:.0f} s: "
                 f"{timeouts} at --request_timeout_s {self.request_timeout_s:g}, {evicted} as the longest waiting of "
                 f"more than --max_pending_connections {self.max_pending}")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 connection, telling `guard` whether it owes a request after every event
    that can change that: it opened, data came, an answer went out, it closed."""

    def __init__(self, *args, guard: ConnectionGuard, **kwargs):
        super().__init__(*args, **kwargs)
        self.guard = guard

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.guard.owes_request(self)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.note_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.note_state()

    def connection_lost(self, exc) -> None:
        self.guard.request_in(self)
        super().connection_lost(exc)

    def note_state(self) -> None:
        if self.conn.their_state in OWING_A_REQUEST and not self.transport.is_closing():
            self.guard.owes_request(self)
        else:
            self.guard.request_in(self)


def guarded_protocol(guard: ConnectionGuard):
    """What uvicorn's `http` setting takes: a factory of connections watched by `guard`."""
    return functools.partial(GuardedH11Protocol, guard=guard)


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server that calls `announce()` only once it accepts connections with its own
    SIGINT/SIGTERM handlers in place, and stops at once for a signal `latch` noted before them
    (uvicorn re-raises the ones it caught once it has stopped: they land in `latch` too)."""

    def __init__(self, config: uvicorn.Config, announce, latch):
        super().__init__(config)
        self.announce, self.latch = announce, latch

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.should_exit:  # a signal came during startup: uvicorn caught it
            return
        if self.latch.signal:
            self.should_exit = True
        else:
            self.announce()
