"""The data plane of one FTP session: every data connection it forwards.

The control protocol (``_control``) asks for data channels with events; the session
pump hands each to ``DataPlane.setup`` and reports the result back to the protocol.
A data plane owns a nursery (opened with ``async with plane.open():`` inside the
session's nursery), so every listener, remote forward and relay of the session is
cancelled with it. Two strategies, mirror images of each other:

* ``LocalDataPlane`` (-L: client here, FTP server behind the SSH server). Passive:
  direct-tcpip to the data port + a one-shot local listener. Active: a remote
  forward (tcpip-forward) on the SSH server, or active converted to passive.
* ``RemoteDataPlane`` (-R: client behind the SSH server, FTP server here). Passive:
  a port-0 remote forward relayed to the FTP host's data port. Active: a one-shot
  local listener for the FTP server relayed through SSH to the client's listener.

Every listener accepts one connection, only from the expected peer, and waits at
most ``Config.data_idle_timeout``; a new PASV/EPSV/PORT/EPRT supersedes every unused
one, so a session has at most one data channel waiting for its peer.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import logging
import math
import socket
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Literal

import trio

from ._config import Config, ForwardSpec, address_allowed
from ._control import (ActiveRequest, ConvertedActive, DataEvent, LogLimiter, PassiveOffer,
                       SessionLog)
from ._errors import TunnelError
from ._netaddr import same_address, unmapped
from ._ssh import RelayResult, RemoteListener, SSHDataRelay, Tunnel
from ._stats import TransferStats

log = logging.getLogger(__name__)

#: PORT/EPRT listeners a session keeps while the server has not answered them (pipelining)
MAX_ACTIVE_WAITING = 4

Mode = Literal["passive", "active", "converted"]


class DataSetupError(Exception):
    """A data channel could not be set up; the message is the reason for the 425."""


class _Opening:
    """A passive data channel whose reply (227/229) went out before
    its SSH channel was open. The transfer command that uses it waits for it
    (``DataPlane.transfer_ready``) and gets the 425 if it failed."""

    __slots__ = ("done", "failure", "offer_id")

    def __init__(self, offer_id: int = 0) -> None:
        self.offer_id = offer_id
        self.done = trio.Event()
        self.failure: str | None = None

    def settle(self, failure: str | None = None) -> None:
        if not self.done.is_set():
            self.failure = failure
            self.done.set()


#: how long a finished data connection waits for the server's final reply to its
#: transfer command before it is accounted without one
REPLY_WAIT = 5.0
#: how long a transfer command answered before its data connection started waits for one
UNPAIRED_WAIT = 1.0
#: at most this many answered transfer commands wait for a data connection; beyond,
#: the oldest is accounted at once (a client pipelining RETRs refused with 530)
MAX_UNPAIRED = 16


class _TransferRecord:
    """One transfer command (RETR, STOR, LIST ...): its data connection (if one was
    paired with it), the relay's result once it ended, and the server's final reply.
    Accounted once, when both are known (or the reply alone refuses it)."""

    __slots__ = ("command", "relay", "mode", "started", "result", "code", "accounted",
                 "replied", "paired")

    def __init__(self, command: str) -> None:
        self.command = command
        self.relay: SSHDataRelay | None = None
        self.mode: Mode = "passive"
        self.started = 0.0
        self.result: RelayResult | None = None
        self.code: int | None = None
        self.accounted = False
        self.replied = trio.Event()
        self.paired = trio.Event()


class _Seen:
    """A running relay's ``progress`` as the idle watch last saw it change, and when."""

    __slots__ = ("progress", "moved_at", "started")

    def __init__(self, progress: object, moved_at: float) -> None:
        self.progress = progress
        self.moved_at = moved_at
        #: when the relay started (the transfer's start in its log line)
        self.started = moved_at


@dataclass(frozen=True, slots=True)
class SessionAddresses:
    """The addresses of one session's control connections that data channels need."""

    session_id: int
    #: the control client's address (for -R: the forwarded-tcpip originator)
    client_host: str
    #: local address of the client's control connection (-L: passive listeners bind
    #: next to it and 227 replies name it)
    client_local_host: str
    #: -R: this machine's address on the FTP server connection, and the FTP server's
    server_local_host: str = ""
    server_peer_host: str = ""


class DataPlane:
    """What both strategies share: the nursery, the waits and the active-data gate."""

    def __init__(self, config: Config, forward: ForwardSpec, tunnel: Tunnel,
                 stats: TransferStats, addresses: SessionAddresses,
                 log_limiter: LogLimiter | None = None) -> None:
        """``log_limiter``: the session's (shared with its control channel): repeated
        messages of one kind are suppressed and summed up (the transfer lines never)."""
        self.config = config
        self.forward = forward
        self.tunnel = tunnel
        self.stats = stats
        self.addresses = addresses
        self._log = SessionLog(log, {"session": addresses.session_id},
                               LogLimiter() if log_limiter is None else log_limiter)
        self._nursery: trio.Nursery | None = None
        #: waits for a peer -> their order of creation
        self._waits: weakref.WeakKeyDictionary[trio.CancelScope, int] = \
            weakref.WeakKeyDictionary()
        self._wait_order = itertools.count()
        #: PORT/EPRT request id -> its wait's order, until the server answers it
        self._request_order: dict[int, int] = {}
        #: request id -> the wait of its active data connection (removed when settled)
        self._active_waits: dict[int, trio.CancelScope] = {}
        self._active_settled = trio.Event()
        self._warned_pasv_address = False
        #: listeners whose SSH channel is still opening: closed at once when superseded
        self._opening_listeners: dict[trio.CancelScope, trio.socket.SocketType] = {}
        #: the latest data channel still opening after its reply went out (or its result)
        self._opening: _Opening | None = None
        #: passive channel opens run one at a time (a superseded one waiting is skipped)
        self._open_lock = trio.Lock()
        #: transfer commands whose final reply has not come yet, oldest first
        self._awaiting_reply: collections.deque[_TransferRecord] = collections.deque()
        #: transfer commands answered before any data connection was paired with them
        self._unpaired: collections.deque[_TransferRecord] = collections.deque()
        #: running relay -> the transfer command it carries (paired in either order:
        #: a passive client connects before it sends RETR, an active server after)
        self._relay_records: dict[SSHDataRelay, _TransferRecord] = {}
        #: data connections relaying right now -> what the idle watch saw of each
        self._running: dict[SSHDataRelay, _Seen] = {}
        #: when a transfer last started or ended
        self._running_changed = -math.inf
        #: the session ends for idleness: running transfers are stalled, none is drained
        self._no_drain = False

    @property
    def session_id(self) -> int:
        return self.addresses.session_id

    @property
    def transfers_running(self) -> int:
        """Data connections relaying right now (an idle session has none)."""
        return len(self._running)

    def last_data_activity(self) -> float:
        """When a byte last moved on a data connection, in either direction, as far as
        polling tells (trio time): the latest call that saw a running relay's
        ``progress`` change (so late by at most the interval between calls, never
        early), or the start or end of a transfer; -inf if none ran. Polled by the
        session's idle timeout: a stalled transfer is idle, a slow one is not, and the
        relay's per-chunk path does nothing more than count bytes, as before."""
        latest = self._running_changed
        now = trio.current_time()
        for relay, seen in self._running.items():
            progress = relay.progress
            if progress != seen.progress:
                seen.progress, seen.moved_at = progress, now
            if seen.moved_at > latest:
                latest = seen.moved_at
        return latest

    def end_without_drain(self) -> None:
        """The session is closing for idleness: when ``open()`` exits, its running
        transfers (stalled: no byte moved for the idle time) are cancelled at once
        instead of getting ``Config.data_drain_timeout``."""
        self._no_drain = True

    # ------------------------------------------------------------ lifetime
    @asynccontextmanager
    async def open(self) -> AsyncIterator[DataPlane]:
        """Own a nursery for the data channels; on exit, running transfers get
        ``Config.data_drain_timeout`` to finish, then everything is cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield self
            finally:
                self.stop_waiting()
                for record in self._awaiting_reply:  # no reply will come any more
                    record.replied.set()
                drain = 0.0 if self._no_drain else self.config.data_drain_timeout
                nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline,
                                                    trio.current_time() + drain)

    def stop_waiting(self, older_than: int | None = None) -> None:
        """Close every listener and forward still waiting for its peer (QUIT, session
        end), or those created before the wait numbered ``older_than``."""
        for wait, order in list(self._waits.items()):
            if older_than is not None and order >= older_than:
                continue
            wait.cancel()
            listener = self._opening_listeners.pop(wait, None)
            if listener is not None:
                listener.close()  # no task waits on it yet (its channel is opening)

    def name_transfer(self, command: str) -> None:
        """The client's transfer command (``RETR file``) goes to the server: it is paired
        with the data connection already relaying without one (passive: the client
        connected first), else with the next one that starts."""
        record = _TransferRecord(command)
        self._awaiting_reply.append(record)
        for relay in reversed(list(self._running)):
            if relay not in self._relay_records:
                self._pair(record, relay)
                break

    def transfer_replied(self, code: int) -> None:
        """The server's final reply to the oldest transfer command still awaiting one."""
        if not self._awaiting_reply:
            return
        record = self._awaiting_reply.popleft()
        record.code = code
        record.replied.set()
        if record.result is not None or (record.relay is None and code >= 400):
            self._account(record)  # its data connection had ended, or it was refused
        elif record.relay is None:
            # a 2xx and no data connection paired yet: -R passive relays can finish
            # before their task starts, so wait a moment for one
            if self._nursery is None:
                self._account(record)
                return
            self._unpaired.append(record)
            if len(self._unpaired) > MAX_UNPAIRED:
                evicted = self._unpaired[0]
                self._account(evicted)
                evicted.paired.set()  # its settle task ends now
            self._nursery.start_soon(self._settle_unpaired, record)

    async def _settle_unpaired(self, record: _TransferRecord) -> None:
        try:
            with trio.move_on_after(UNPAIRED_WAIT):
                await record.paired.wait()
        finally:
            if record.relay is None and not record.accounted:
                self._account(record)

    def transfer_refused(self) -> None:
        """ftptrio answered the newest transfer command itself (425: its data channel
        could not be opened); it never reached the server."""
        if self._awaiting_reply:
            record = self._awaiting_reply.pop()  # the newest: the command just refused
            record.code = 425
            record.replied.set()
            if record.relay is None or record.result is not None:
                self._account(record)

    def _pair(self, record: _TransferRecord, relay: SSHDataRelay) -> None:
        if record.code is not None and record in self._unpaired:  # (at most MAX_UNPAIRED)
            self._unpaired.remove(record)
        record.relay = relay
        record.paired.set()
        self._relay_records[relay] = record
        seen = self._running.get(relay)
        if seen is not None:
            record.started = seen.started

    async def transfer_ready(self, passive_unanswered: bool = False,
                             offer_id: int | None = None) -> str | None:
        """Called before a transfer command goes to the server: wait until the data
        channel of the latest PASV/EPSV is open, at most
        ``Config.data_idle_timeout``; the reason for a 425 if it could not be.
        ``passive_unanswered``: the client pipelined a PASV/EPSV whose reply has not
        come yet, so the channel opened before is not this transfer's (its failure
        must not refuse it); the transfer goes on and its own offer follows.
        ``offer_id``: the offer that answered the transfer's PASV/EPSV; the channel
        opening is another's (an older one: this offer's reply was read but not yet
        set up) or none: likewise, its failure must not refuse this transfer."""
        opening, self._opening = self._opening, None
        if opening is None or passive_unanswered or (offer_id is not None
                                                     and opening.offer_id != offer_id):
            return None
        if not opening.done.is_set():
            with trio.move_on_after(self.config.data_idle_timeout):
                await opening.done.wait()
            if not opening.done.is_set():
                return "timed out opening the data channel through SSH"
        return opening.failure

    def refused(self, request_id: int) -> None:
        """The server refused the PORT/EPRT of ``request_id``: drop its listener."""
        self._request_order.pop(request_id, None)
        wait = self._active_waits.get(request_id)
        if wait is not None:
            wait.cancel()

    def accepted(self, request_id: int) -> None:
        """The server accepted the PORT/EPRT of ``request_id``: its next transfer uses
        that listener, so every one created before it is unused (a client that
        pipelines PORT a, RETR, PORT b, RETR keeps a's until the server took b)."""
        order = self._request_order.pop(request_id, None)
        if order is not None:
            self.stop_waiting(older_than=order)

    async def wait_active_settled(self) -> None:
        """Until every active data connection is connected or given up, at most
        ``Config.active_hold_timeout``."""
        with trio.move_on_after(self.config.active_hold_timeout):
            # a PORT/EPRT the server has not answered yet (pipelined) is not this
            # transfer's
            while any(rid not in self._request_order for rid in self._active_waits):
                await self._active_settled.wait()

    @property
    def waiting(self) -> int:
        """Listeners and forwards waiting for their peer (for tests and stats)."""
        return len(self._waits)

    async def setup(self, event: DataEvent) -> tuple[str, int]:
        """Set up the data channel ``event`` asks for; ``(host, port)`` for the
        rewritten reply or command. Raises DataSetupError with the reason."""
        if isinstance(event, PassiveOffer):
            return await self.passive(event)
        if isinstance(event, ActiveRequest):
            return await self.active(event)
        await self.converted(event)
        return ("", 0)

    async def passive(self, offer: PassiveOffer) -> tuple[str, int]:
        raise NotImplementedError

    async def active(self, request: ActiveRequest) -> tuple[str, int]:
        raise NotImplementedError

    async def converted(self, event: ConvertedActive) -> None:
        raise DataSetupError("active mode cannot be converted to passive on this tunnel")

    # ------------------------------------------------------------- helpers
    def _start(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        assert self._nursery is not None, "DataPlane used outside open()"
        self._nursery.start_soon(fn, *args)

    def _new_wait(self, request: ActiveRequest | None = None) -> trio.CancelScope:
        """The wait of a new data channel for its peer: at most the idle timeout,
        cancelled when the control ends.

        A passive one (set up when the server answered PASV/EPSV) supersedes every
        listener or forward still waiting. An active one is set up when the client
        sends PORT/EPRT, before the server has used the previous one if the client
        pipelines: older waits end when the server accepts this one (``accepted``),
        and at most MAX_ACTIVE_WAITING are kept meanwhile (300 PORT commands cannot
        leave 300 listeners on the SSH server)."""
        order = next(self._wait_order)
        if request is None:
            self.stop_waiting()
        else:
            oldest = sorted(self._waits.values())[:-(MAX_ACTIVE_WAITING - 1) or None]
            if oldest:
                self.stop_waiting(older_than=oldest[-1] + 1)
            self._request_order[request.id] = order
        self._opening = None
        scope = trio.CancelScope(deadline=trio.current_time() + self.config.data_idle_timeout)
        self._waits[scope] = order
        if request is not None:
            self._active_waits[request.id] = scope
        return scope

    def _end_wait(self, wait: trio.CancelScope) -> None:
        """``wait`` is over (peer connected, superseded, timed out): drop it now. An
        exited scope can live on in trio's deadline heap until its deadline, and every
        new data request cancels each scope still in the set (measured before this:
        ~450 stale scopes per request after 1000 files, ~2.5 ms of CPU per file)."""
        self._waits.pop(wait, None)
        self._opening_listeners.pop(wait, None)

    def _active_done(self, request: ActiveRequest) -> None:
        """The active data connection of ``request`` is connected or given up."""
        self._active_waits.pop(request.id, None)
        self._active_settled.set()
        self._active_settled = trio.Event()

    def _warn_ignored_pasv_address(self, named: str) -> None:
        """Say once per session that a 227's address is ignored (no SSRF)."""
        if not self._warned_pasv_address:
            self._warned_pasv_address = True
            self._log.warning("227 names %s; ignored, data goes to the FTP host %s",
                              named, self.forward.ftp_host)

    async def _transfer(self, mode: Mode, relay: SSHDataRelay,
                        sock: trio.socket.SocketType | None = None) -> None:
        """Relay (pairing ``sock`` first, if given) until both ends close, then account
        the transfer by its command's final reply (waited for up to REPLY_WAIT) and log
        one line. A data connection no transfer command used is not a transfer (curl
        closes its passive connection when SIZE says 550): one log line, not counted.
        A transfer cut by cancellation (shutdown after --grace, the session's drain
        timeout) is recorded with the bytes moved so far, as aborted unless its data
        had already ended (only the teardown was cut)."""
        started = self._running_changed = trio.current_time()
        self._running[relay] = _Seen(relay.progress, started)
        waiting = next((w for w in itertools.chain(self._awaiting_reply, self._unpaired)
                        if w.relay is None and not w.accounted), None)
        if waiting is not None:  # the command came first (active mode, -R passive)
            self._pair(waiting, relay)
        paired = self._relay_records.get(relay)
        if paired is not None:
            paired.mode, paired.started = mode, started
        try:
            result = await (relay.wait() if sock is None else relay.relay_socket(sock))
        except trio.Cancelled:  # the session ends: accounted now, reply or not
            self._finished(relay, mode, started, relay.snapshot(cancelled=True), now=True)
            raise
        finally:
            del self._running[relay]
            self._running_changed = trio.current_time()
        record = self._finished(relay, mode, started, result)
        if record is not None and not record.accounted:  # the reply is still to come
            with trio.move_on_after(REPLY_WAIT):
                try:
                    await record.replied.wait()
                finally:
                    if not record.accounted:
                        self._account(record)

    def _finished(self, relay: SSHDataRelay, mode: Mode, started: float,
                  result: RelayResult, *, now: bool = False) -> _TransferRecord | None:
        """The relay ended with ``result``: account it now if its command's reply is in
        (or if it carried no transfer command); else its record, waiting for the reply."""
        record = self._relay_records.pop(relay, None)
        if record is None:
            total = result.to_ssh + result.from_ssh
            self._log.info("data connection (%s) closed without a transfer command "
                           "(%d bytes); not counted as a transfer", mode, total)
            return None
        record.mode, record.result = mode, result
        if record.code is not None or now:
            self._account(record)
        return record

    def _account(self, record: _TransferRecord) -> None:
        """Count one transfer command and log one line: ok only when its data connection
        carried it and the server's final reply is 2xx; refused when the server (or
        ftptrio, 425) answered 4xx/5xx and no data moved."""
        if record.accounted:
            return
        record.accounted = True
        if record.code is None:  # accounted before its reply (its relay failed)
            if record in self._awaiting_reply:
                self._awaiting_reply.remove(record)
        elif record in self._unpaired:  # (at most MAX_UNPAIRED)
            self._unpaired.remove(record)
        result = record.result or RelayResult(0, 0)
        # The relay counts bytes into and out of SSH; which side the FTP server is on
        # depends on the tunnel's direction.
        if self.forward.direction == "remote":
            to_server, to_client = result.from_ssh, result.to_ssh
        else:
            to_server, to_client = result.to_ssh, result.from_ssh
        total = to_server + to_client
        code = record.code
        refused = False
        if code is not None and code >= 400 and total == 0:
            # (pyftpdlib connects at PORT and resets that connection on a 550)
            outcome, refused = f"refused ({code})", True
        elif result.error:
            outcome = f"error ({result.error})"
        elif code is None:
            outcome = "error (no final reply)"
        elif code >= 400:
            outcome = f"error (server replied {code})"
        elif record.relay is None:
            outcome = "error (no data connection)"
        else:
            outcome = "ok"
        self.stats.record(record.mode, to_server=to_server, to_client=to_client,
                          error=None if outcome == "ok" or refused else outcome,
                          refused=refused)
        started = record.started or trio.current_time()
        seconds = trio.current_time() - started
        direction = "upload" if to_server > to_client else "download"
        client = self.addresses.client_host
        rate = f"{total / seconds / 1e6:.1f}MB/s" if seconds >= 0.001 else "n/a"
        fields = {"transfer": {"session": self.session_id, "client": client,
                               "mode": record.mode, "direction": direction,
                               "command": record.command, "bytes": total,
                               "seconds": round(seconds, 6),
                               "result": "ok" if outcome == "ok" else
                               "refused" if refused else (result.error or outcome),
                               "reply": code}}
        if refused:  # rate-limited with the session's warnings: no byte moved (a client
            # pipelining RETRs before login must not write a line for each 530)
            self._log.info("transfer client=%s mode=%s command=%r result=%s", client,
                           record.mode, record.command, outcome, extra=fields)
            return
        log.info("session %d: transfer client=%s mode=%s direction=%s command=%r bytes=%d "
                 "seconds=%.3f rate=%s result=%s", self.session_id, client, record.mode,
                 direction, record.command, total, seconds, rate, outcome, extra=fields)

    async def _accept_one(self, listener: trio.socket.SocketType, allowed_host: str,
                          who: str, wait: trio.CancelScope) -> trio.socket.SocketType | None:
        """The first connection to ``listener`` from ``allowed_host`` (others are refused
        and logged), or None when ``wait`` ends first. The listener is closed either way."""
        port = listener.getsockname()[1]
        try:
            with wait:
                while True:
                    sock, peer = await listener.accept()
                    if same_address(peer[0], allowed_host):
                        return sock
                    self._log.warning("refused data connection from %s to port %d "
                                      "(only %s %s may connect)", peer[0], port, who,
                                      allowed_host)
                    sock.close()
        finally:
            listener.close()
            self._end_wait(wait)
        return None

    async def _forwarded_connection(self, remote: RemoteListener, wait: trio.CancelScope,
                                    host: str, port: int, who: str) -> SSHDataRelay | None:
        """Wait for the one connection on a remote forward (bounded by ``wait``), cancel
        the forward, connect it locally to host:port. None if unused or the connect
        failed (both logged)."""
        incoming = None
        try:
            with wait:
                incoming = await remote.accept()
        finally:
            self._end_wait(wait)
            await remote.aclose()  # cancel-tcpip-forward as soon as accepted
        if incoming is None:
            self._log.info("remote forward port %d closed unused (%s)", remote.port,
                           _why_unused(wait))
            return None
        relay, orig_host, orig_port = incoming
        log.debug("session %d: %s connected from %s:%d to remote forward %d", self.session_id,
                  who, orig_host, orig_port, remote.port)
        try:
            await relay.connect_socket(host, port)
        except OSError as exc:
            self._log.warning("cannot connect to data port %s:%d: %s", host, port, exc)
            return None
        return relay


def _is_localhost_loopback(ftp_host: str, named: str) -> bool:
    """A 227 naming a loopback address from an FTP host given as ``localhost``: the
    same host (-L 2121:localhost:21), nothing to warn about."""
    if ftp_host.lower() != "localhost":
        return False
    try:
        return ipaddress.ip_address(unmapped(named)).is_loopback
    except ValueError:
        return False


class LocalDataPlane(DataPlane):
    """-L tunnels: the client is here, the FTP server behind the SSH server."""

    def _passive_destination(self, named: str | None) -> str:
        """Where passive data goes. Default: the control connection's FTP host,
        whatever a 227 names (no SSRF; also fixes servers behind NAT). With
        trust_pasv_address, the named address is used only if allow-listed."""
        ftp_host, cfg = self.forward.ftp_host, self.config
        if named is None or named == ftp_host or _is_localhost_loopback(ftp_host, named):
            return ftp_host
        if cfg.trust_pasv_address:
            if address_allowed(named, cfg.pasv_allowed_hosts):
                self._log.info("227 names %s (allow-listed): data goes there", named)
                return named
            self._log.warning("227 names %s, which is not allow-listed; refused", named)
            raise DataSetupError(f"passive address {named} not allowed")
        self._warn_ignored_pasv_address(named)
        return ftp_host

    def _reply_address(self) -> str:
        """The address a 227 names: the one the client's control connection reached."""
        return self.config.passive_address or self.addresses.client_local_host

    async def _relay_to_server(self, destination: str, port: int) -> SSHDataRelay:
        """An SSH channel to the server's passive port."""
        try:
            return await self.tunnel.open_data_relay(destination, port,
                                                     originator=(self.addresses.client_host, 0))
        except TunnelError as exc:
            self._log.warning("%s", exc)
            raise DataSetupError(str(exc)) from exc

    async def passive(self, offer: PassiveOffer) -> tuple[str, int]:
        """The listener is bound and the reply can go out at once; the SSH channel
        opens meanwhile (the client's connect waits in the listen backlog, the
        server's first bytes in the relay) and the transfer command waits for it."""
        local = self.addresses.client_local_host
        if not offer.extended and ":" in local and not self.config.passive_address:
            # a 227 can only name an IPv4 address; this client reached us over IPv6
            raise DataSetupError("PASV cannot name this IPv6 connection's address; use EPSV")
        destination = self._passive_destination(offer.host)
        try:
            listener = await open_data_listener(self.config.data_bind_host, local)
        except OSError as exc:
            raise DataSetupError(f"no local listener: {exc}") from exc
        wait = self._new_wait()
        self._opening_listeners[wait] = listener
        opening = self._opening = _Opening(offer.id)
        port = listener.getsockname()[1]
        self._start(self._serve_passive, listener, port, destination, offer.port, wait, opening)
        log.debug("session %d: passive data port %d via SSH, client connects to port %d",
                  self.session_id, offer.port, port)
        return self._reply_address(), port

    async def _serve_passive(self, listener: trio.socket.SocketType, port: int,
                             destination: str, ftp_port: int, wait: trio.CancelScope,
                             opening: _Opening) -> None:
        """Open the SSH channel, then accept the client's one data connection and
        relay it. The open itself is not cut short by superseding ``wait`` (that
        closes the listener at once, and the channel as soon as it is open), but it is
        by its deadline (data_idle_timeout): a hanging open (sshd connecting to a port
        whose host drops SYNs: ~2 min) must not keep the listener bound past it (a
        cancelled open closes its channel once open: open_data_relay). Opens run one
        at a time per session, and one superseded before its turn is never made: a
        client pipelining 200 PASVs does not put 200 opens (each an sshd connect to
        the FTP host) in flight at once."""
        relay = None
        try:
            with trio.move_on_at(wait.deadline):
                async with self._open_lock:
                    if not wait.cancel_called:
                        relay = await self._relay_to_server(destination, ftp_port)
        except DataSetupError as exc:
            opening.settle(str(exc))
            listener.close()  # the client's connect (if any) is reset
            self._end_wait(wait)
            return
        except BaseException:
            opening.settle("session ended")
            listener.close()
            self._end_wait(wait)
            raise
        if relay is None:
            superseded = trio.current_time() < wait.deadline  # else: timed out
            opening.settle("superseded" if superseded
                           else "timed out opening the data channel through SSH")
            listener.close()
            self._end_wait(wait)
            self._log.info("passive listener on port %d closed unused (%s)", port,
                           "superseded or session ended" if superseded
                           else "timeout opening the SSH channel")
            return
        opening.settle()
        self._opening_listeners.pop(wait, None)  # from here on, closed with the wait
        sock = None
        try:
            if wait.cancel_called:  # superseded while opening: its listener is closed
                listener.close()
                self._end_wait(wait)
            else:
                sock = await self._accept_one(listener, self.addresses.client_host,
                                              "the client", wait)
        finally:
            if sock is None:
                relay.close()
        if sock is None:
            self._log.info("passive listener on port %d closed unused (%s)", port,
                           _why_unused(wait))
            return
        await self._transfer("passive", relay, sock)

    async def active(self, request: ActiveRequest) -> tuple[str, int]:
        cfg = self.config
        try:
            remote = await self.tunnel.listen_remote(
                cfg.remote_listen_host, 0, accept_filter=ftp_server_only(self.forward.ftp_host))
        except TunnelError as exc:
            self._log.warning("%s; or use --active-mode passive", exc)
            raise DataSetupError(f"{exc}; or use --active-mode passive") from exc
        self._start(self._serve_active, remote, request, self._new_wait(request))
        log.debug("session %d: active %s:%d via remote forward %s:%d", self.session_id,
                  request.host, request.port, cfg.active_address, remote.port)
        return cfg.active_address, remote.port

    async def _serve_active(self, remote: RemoteListener, request: ActiveRequest,
                            wait: trio.CancelScope) -> None:
        """Wait for the FTP server on the remote forward, cancel it, relay to the client."""
        try:
            relay = await self._forwarded_connection(remote, wait, request.host, request.port,
                                                     "FTP server")
        finally:
            self._active_done(request)
        if relay is not None:
            await self._transfer("active", relay)

    async def converted(self, event: ConvertedActive) -> None:
        """Open the SSH channel and connect it to the client's listener before the
        200 (measured: sending the 200 first and holding the transfer command for
        the channel made the converted route ~1 ms per file slower here, not faster:
        both ends then compete for the CPU)."""
        self._opening = None
        relay = await self._relay_to_server(self._passive_destination(event.server_host),
                                            event.server_port)
        try:
            await relay.connect_socket(event.client_host, event.client_port)
        except OSError as exc:
            self._log.warning("cannot connect to client data port %s:%d: %s",
                              event.client_host, event.client_port, exc)
            raise DataSetupError(f"cannot connect to your data port: {exc}") from exc
        self._start(self._serve_converted, relay)

    async def _serve_converted(self, relay: SSHDataRelay) -> None:
        await self._transfer("converted", relay)


class RemoteDataPlane(DataPlane):
    """-R tunnels, mirrored: the client is behind the SSH server, the FTP server here."""

    async def passive(self, offer: PassiveOffer) -> tuple[str, int]:
        if offer.host is not None and not same_address(offer.host, self.forward.ftp_host) \
                and not _is_localhost_loopback(self.forward.ftp_host, offer.host):
            self._warn_ignored_pasv_address(offer.host)  # data always goes to the FTP host
        try:
            remote = await self.tunnel.listen_remote(
                self.forward.listen_host, 0,
                accept_filter=client_only(self.addresses.client_host))
        except TunnelError as exc:
            self._log.warning("%s", exc)
            raise DataSetupError(str(exc)) from exc
        self._start(self._serve_passive, remote, offer.port, self._new_wait())
        log.debug("session %d: passive %s:%d locally, client connects to SSH server port %d",
                  self.session_id, self.forward.ftp_host, offer.port, remote.port)
        return self.forward.remote_reply_host(self.config), remote.port

    async def _serve_passive(self, remote: RemoteListener, ftp_port: int,
                             wait: trio.CancelScope) -> None:
        """The client's connection on the SSH server's forward, relayed to the data port
        on the FTP host (never to the address a 227 named)."""
        relay = await self._forwarded_connection(remote, wait, self.forward.ftp_host,
                                                 ftp_port, "client")
        if relay is not None:
            await self._transfer("passive", relay)

    async def active(self, request: ActiveRequest) -> tuple[str, int]:
        local_host = self.addresses.server_local_host
        try:
            listener = await open_local_listener(local_host)
        except OSError as exc:
            raise DataSetupError(f"no local listener: {exc}") from exc
        port = listener.getsockname()[1]
        self._start(self._serve_active, listener, request, self._new_wait(request))
        log.debug("session %d: active %s:%d via SSH, FTP server connects to %s:%d",
                  self.session_id, request.host, request.port, local_host, port)
        return local_host, port

    async def _serve_active(self, listener: trio.socket.SocketType, request: ActiveRequest,
                            wait: trio.CancelScope) -> None:
        """Accept the FTP server's data connection and relay it through SSH
        (direct-tcpip) to the client's data listener."""
        port = listener.getsockname()[1]
        sock = None
        try:
            sock = await self._accept_one(listener, self.addresses.server_peer_host,
                                          "the FTP server", wait)
            if sock is None:
                self._log.info("active listener on port %d closed unused", port)
                return
            try:
                relay = await self.tunnel.open_data_relay(
                    request.host, request.port,
                    originator=(self.addresses.server_peer_host or "", 0))
            except TunnelError as exc:
                self._log.warning("%s", exc)
                return
            taken, sock = sock, None
            await relay.attach_socket(taken)
        finally:
            if sock is not None:
                sock.close()
            self._active_done(request)
        await self._transfer("active", relay)


def _why_unused(wait: trio.CancelScope) -> str:
    return "timeout" if wait.deadline <= trio.current_time() else "superseded or session ended"


async def open_data_listener(bind_host: str, local_host: str) -> trio.socket.SocketType:
    """A listener for one passive data connection, on the address the client's control
    connection reached (``local_host``: loopback for a local client, the LAN address
    for a LAN client), or on every address of that family when ``bind_host`` is a
    wildcard (-g)."""
    local_host = unmapped(local_host)
    if ipaddress.ip_address(bind_host).is_unspecified:
        return await open_local_listener("::" if ":" in local_host else "0.0.0.0")
    return await open_local_listener(local_host)


async def open_local_listener(host: str) -> trio.socket.SocketType:
    """A listener on host:<OS-picked port> for one data connection."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((host, 0))
        sock.listen(4)
    except BaseException:
        sock.close()
        raise
    return sock


def ftp_server_only(ftp_host: str) -> Callable[[str, int], bool] | None:
    """A filter for remote-forward connections: only from the FTP server's address.

    None (accept any) when ftp_host is a name other than localhost: its address as
    the SSH server sees it is unknown here.
    """
    if ftp_host.lower() == "localhost":
        ftp_host = "127.0.0.1"
    try:
        expected = ipaddress.ip_address(ftp_host)
    except ValueError:
        return None

    def accept(orig_host: str, _orig_port: int) -> bool:
        if expected.is_loopback:
            try:
                return ipaddress.ip_address(unmapped(orig_host).split("%")[0]).is_loopback
            except ValueError:
                return False
        return same_address(orig_host, ftp_host)

    return accept


def client_only(client_host: str) -> Callable[[str, int], bool]:
    """A filter for a remote tunnel's passive forward: only the control client's address."""

    def accept(orig_host: str, _orig_port: int) -> bool:
        return same_address(orig_host, client_host)

    return accept
