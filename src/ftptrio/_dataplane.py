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

Every data channel is one ``DataChannel`` record, under the id the control protocol
gave its PASV/EPSV/PORT/EPRT (the transfer commands that use it carry the same id):
its state, its wait, its listener while the SSH channel opens, the open's result and
the transfer command it carries. Every listener accepts one connection, only from the
expected peer, and waits at most ``Config.data_idle_timeout``; a passive channel
supersedes every older one still waiting, an active one those older than itself once
the server accepts its PORT/EPRT (at most MAX_ACTIVE_WAITING wait meanwhile).
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import logging
import math
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Literal

import trio

from ._config import Config, ForwardSpec, address_allowed
from ._control import (ActiveRequest, ConvertedActive, DataEvent, LogLimiter, PassiveOffer,
                       SessionLog)
from ._errors import TunnelError
from ._netaddr import host_ip, same_address, unmapped
from ._seams import DataForward, DataRelay, RelayResult, SessionTunnel
from ._stats import TransferStats

log = logging.getLogger(__name__)

#: data channels a session keeps waiting for their peer at a time (a client pipelining:
#: PORT/EPRTs the server has not answered yet, passive channels whose transfer command
#: went out before the client connected)
MAX_ACTIVE_WAITING = 4

Mode = Literal["passive", "active", "converted"]


class DataSetupError(Exception):
    """A data channel could not be set up; the message is the reason for the 425."""


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

    __slots__ = ("command", "transfer_type", "channel_id", "relay", "mode", "started",
                 "result", "code", "accounted", "replied", "paired")

    def __init__(self, command: str, channel_id: int | None = None,
                 transfer_type: str = "I") -> None:
        self.command = command
        #: the TYPE in force when the command was read (A, I, E or L)
        self.transfer_type = transfer_type
        #: the data channel the control protocol says it uses (None: unknown)
        self.channel_id = channel_id
        self.relay: DataRelay | None = None
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


ChannelState = Literal["opening", "waiting", "relaying", "done"]


class DataChannel:
    """One data channel of the session, under the id the control protocol gave its
    PASV/EPSV/PORT/EPRT (the id its offer or request and its transfer commands carry):
    what it is, how far it got, and what it carries.

    States: ``opening`` (-L passive: listener bound, SSH channel opening), ``waiting``
    (for its one peer, at most ``Config.data_idle_timeout``), ``relaying``, ``done``."""

    __slots__ = ("id", "mode", "state", "wait", "listener", "requested", "opened", "failure",
                 "command_sent", "answered", "record", "relay", "seen")

    def __init__(self, channel_id: int, mode: Mode, wait: trio.CancelScope) -> None:
        self.id = channel_id
        self.mode = mode
        self.state: ChannelState = "waiting" if mode == "active" else "opening"
        #: its wait for a peer: ends when superseded, at its deadline, or with the session
        self.wait = wait
        #: -L passive: the listener while the SSH channel opens (closed at once when
        #: superseded: no task waits on it yet)
        self.listener: trio.socket.SocketType | None = None
        #: set once the SSH channel's open request is on the connection (or the open
        #: has a result): the transfer command may follow it at once (the SSH server
        #: reads it after the open, so the FTP server sees both together)
        self.requested = trio.Event()
        #: set when the SSH channel's open has a result; ``failure``: why it failed
        #: (the transfer command using the channel gets it in a 425, once)
        self.opened = trio.Event()
        self.failure: str | None = None
        #: its transfer command went to the server before the open's result came: a
        #: failure then reaches the client as the FTP server's own reply
        self.command_sent = False
        #: active: the FTP server answered its PORT/EPRT (accepted or refused)
        self.answered = False
        #: the transfer command named for it (paired once the relay runs)
        self.record: _TransferRecord | None = None
        self.relay: DataRelay | None = None
        #: while relaying: what the idle watch last saw of it
        self.seen: _Seen | None = None
        if mode == "active":
            self.requested.set()
            self.opened.set()

    def settle(self, failure: str | None = None) -> None:
        """The SSH channel's open has a result (the first one given counts)."""
        if not self.opened.is_set():
            self.failure = None if self.command_sent else failure
            self.opened.set()
            self.requested.set()
        if failure is None and self.state == "opening":
            self.state = "waiting"

    @property
    def waiting(self) -> bool:
        """Still waiting for its peer (a listener or forward is open for it)."""
        return self.state in ("opening", "waiting")


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

    def __init__(self, config: Config, forward: ForwardSpec, tunnel: SessionTunnel,
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
        #: the session's log without the rate limit (one line per transfer)
        self._trace = SessionLog(log, {"session": addresses.session_id})
        self._nursery: trio.Nursery | None = None
        #: the session's data channels by id: every one set up and not done yet, and
        #: one that failed to open until its transfer command got the 425 (or a newer
        #: channel is set up)
        self._channels: dict[int, DataChannel] = {}
        self._active_settled = trio.Event()
        self._warned_pasv_address = False
        #: passive channel opens run one at a time (a superseded one waiting is skipped)
        self._open_lock = trio.Lock()
        #: -L active: a one-shot remote forward requested ahead of the next PORT/EPRT
        #: (disarmed: it refuses every connection until that PORT takes it)
        self._spare_forward: DataForward | None = None
        self._forward_lock = trio.Lock()
        #: transfer commands whose final reply has not come yet, oldest first
        self._awaiting_reply: collections.deque[_TransferRecord] = collections.deque()
        #: transfer commands answered before any data connection was paired with them
        self._unpaired: collections.deque[_TransferRecord] = collections.deque()
        #: when a transfer last started or ended
        self._running_changed = -math.inf
        #: the session ends for idleness: running transfers are stalled, none is drained
        self._no_drain = False
        #: told each accounted transfer's log fields before its line is logged (the
        #: session adds its user and server, and the forwarder's audit trail and metrics
        #: read them)
        self.on_transfer: Callable[[dict[str, object]], None] | None = None

    @property
    def session_id(self) -> int:
        return self.addresses.session_id

    @property
    def transfers_running(self) -> int:
        """Data connections relaying right now (an idle session has none)."""
        return sum(channel.state == "relaying" for channel in self._channels.values())

    def last_data_activity(self) -> float:
        """When a byte last moved on a data connection, in either direction, as far as
        polling tells (trio time): the latest call that saw a running relay's
        ``progress`` change (so late by at most the interval between calls, never
        early), or the start or end of a transfer; -inf if none ran. Polled by the
        session's idle timeout: a stalled transfer is idle, a slow one is not, and the
        relay's per-chunk path does nothing more than count bytes, as before."""
        latest = self._running_changed
        now = trio.current_time()
        for channel in self._channels.values():
            relay, seen = channel.relay, channel.seen
            if relay is None or seen is None or channel.state != "relaying":
                continue
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
        try:
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
        finally:
            spare, self._spare_forward = self._spare_forward, None
            if spare is not None:
                await spare.aclose()  # (shielded and bounded)

    def stop_waiting(self, older_than: int | None = None, *, keep_used: bool = False) -> None:
        """Close every listener and forward still waiting for its peer (session end),
        or those of channels older than the one numbered ``older_than``; with
        ``keep_used``, not those a transfer command was sent for (its server may be
        sending already: the data waits in the relay for the client)."""
        for channel in list(self._channels.values()):
            if not channel.waiting or (older_than is not None and channel.id >= older_than):
                continue
            if keep_used and channel.record is not None:
                continue
            channel.wait.cancel()
            if channel.listener is not None:
                channel.listener.close()  # no task waits on it yet (its channel is opening)
                channel.listener = None

    def stop_unused(self) -> None:
        """QUIT went to the server: no transfer command can follow, so the channels none
        was sent for are unused (one sent before the QUIT still gets its connection)."""
        self.stop_waiting(keep_used=True)

    def name_transfer(self, command: str, channel_id: int | None = None,
                      transfer_type: str = "I") -> None:
        """The client's transfer command (``RETR file``, read under TYPE
        ``transfer_type``) goes to the server, using the data channel ``channel_id``: it
        is paired with that channel's data connection (already relaying if a passive
        client connected first). Without an id, with the data connection relaying
        without one, else with the next one that starts."""
        record = _TransferRecord(command, channel_id, transfer_type)
        self._awaiting_reply.append(record)
        if channel_id is not None:
            channel = self._channels.get(channel_id)
            if channel is not None:
                record.mode = channel.mode  # (accounted by it even with no connection)
            if channel is not None and channel.record is None:
                channel.record = record
                if channel.relay is not None:
                    self._pair(record, channel)
            return
        for channel in reversed(list(self._channels.values())):
            if channel.relay is not None and channel.record is None:
                channel.record = record
                self._pair(record, channel)
                break

    def transfer_replied(self, code: int) -> None:
        """The server's final reply to the oldest transfer command still awaiting one."""
        if not self._awaiting_reply:
            return
        record = self._awaiting_reply.popleft()
        if record.accounted:  # (without its reply, REPLY_WAIT after its data ended)
            return
        record.code = code
        record.replied.set()
        if record.relay is None and code >= 400 and record.channel_id is not None:
            channel = self._channels.get(record.channel_id)
            if channel is not None and channel.waiting and channel.record is record:
                # refused (550 ...): no connection comes for it
                channel.wait.cancel()
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

    def _pair(self, record: _TransferRecord, channel: DataChannel) -> None:
        """``record``'s data connection is ``channel``'s (relaying)."""
        if record.code is not None and record in self._unpaired:  # (at most MAX_UNPAIRED)
            self._unpaired.remove(record)
        record.relay = channel.relay
        record.paired.set()
        if channel.seen is not None:
            record.started = channel.seen.started

    async def transfer_ready(self, channel_id: int | None = None) -> str | None:
        """Called before a transfer command goes to the server: wait until the open of
        its data channel ``channel_id`` is on the SSH connection (not for the SSH
        server's answer: the command follows the open, and the FTP server sees both
        in the same round trip), at most ``Config.data_idle_timeout``; the reason for a
        425 if the open failed by then (told once; a later failure reaches the client
        as the FTP server's own reply). A channel not set up yet (its PASV/EPSV was
        pipelined with the command: the reply is still to come), an active one, or
        none: nothing to wait for."""
        channel = self._channels.get(channel_id) if channel_id is not None else None
        if channel is None or channel.mode == "active":
            return None
        if not channel.requested.is_set():
            with trio.move_on_after(self.config.data_idle_timeout):
                await channel.requested.wait()
            if not channel.requested.is_set():
                return "timed out opening the data channel through SSH"
        if not channel.opened.is_set() and self.tunnel.data_opens_refused:
            # an open was refused on this SSH connection before: wait for the answer,
            # so that a refusal reaches the client at once as ftptrio's 425 with the
            # SSH server's reason (not as the FTP server's, after its data timeout)
            with trio.move_on_at(channel.wait.deadline):
                await channel.opened.wait()
        if not channel.opened.is_set():
            channel.command_sent = True
            return None
        failure, channel.failure = channel.failure, None
        if channel.state == "done":
            self._forget(channel)
        return failure

    def refused(self, request_id: int) -> None:
        """The server refused the PORT/EPRT of ``request_id``: drop its listener."""
        channel = self._channels.get(request_id)
        if channel is not None:
            channel.answered = True
            channel.wait.cancel()

    def accepted(self, request_id: int) -> None:
        """The server accepted the PORT/EPRT of ``request_id``: its next transfer uses
        that listener, so every one created before it is unused (a client that
        pipelines PORT a, RETR, PORT b, RETR keeps a's until the server took b)."""
        channel = self._channels.get(request_id)
        if channel is not None and not channel.answered:
            channel.answered = True
            self.stop_waiting(older_than=request_id)

    async def wait_active_settled(self, channel_id: int) -> None:
        """Until the active data connection of ``channel_id`` is connected or given up,
        at most ``Config.active_hold_timeout``."""
        with trio.move_on_after(self.config.active_hold_timeout):
            while True:
                channel = self._channels.get(channel_id)
                if channel is None or not channel.waiting:
                    return
                await self._active_settled.wait()

    @property
    def waiting(self) -> int:
        """Listeners and forwards waiting for their peer (for tests and stats)."""
        return sum(channel.waiting for channel in self._channels.values())

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

    def _new_channel(self, channel_id: int, mode: Mode) -> DataChannel:
        """A new data channel; its wait for a peer lasts at most the idle timeout and is
        cancelled when the control ends.

        A passive one (set up when the server answered PASV/EPSV) supersedes every
        older channel still waiting that no transfer command was sent for (one that
        got its command may be receiving the server's data already: it waits for its
        client). An active one is set up when the client sends PORT/EPRT, before the
        server has used the previous one if the client pipelines: older ones end when
        the server accepts it (``accepted``). Either way at most MAX_ACTIVE_WAITING
        wait at a time (300 PORT commands cannot leave 300 listeners on the SSH server,
        nor 300 PASV+RETRs 300 local ones). A converted one supersedes nothing (its
        client listens already)."""
        for old in [c for c in self._channels.values() if c.state == "done"]:
            del self._channels[old.id]  # (failed opens no transfer command asked about)
        if mode == "passive":
            self.stop_waiting(older_than=channel_id, keep_used=True)
        if mode != "converted":  # a client pipelining 300 PORTs (or PASV+RETRs)
            waiting = sorted(c.id for c in self._channels.values() if c.waiting)
            oldest = waiting[:-(MAX_ACTIVE_WAITING - 1) or None]
            if oldest:
                self.stop_waiting(older_than=oldest[-1] + 1)
        replaced = self._channels.pop(channel_id, None)
        if replaced is not None and replaced.waiting:  # (the same id twice: tests only)
            replaced.wait.cancel()
        wait = trio.CancelScope(deadline=trio.current_time() + self.config.data_idle_timeout)
        channel = self._channels[channel_id] = DataChannel(channel_id, mode, wait)
        # its transfer command may have gone out already (pipelined before the 227/229)
        channel.record = next((r for r in self._awaiting_reply if r.channel_id == channel_id
                               and r.relay is None and not r.accounted), None)
        if channel.record is not None:
            channel.record.mode = mode
        return channel

    def _unused(self, channel: DataChannel, failure: str | None = None) -> None:
        """``channel`` ends without a data connection (superseded, timed out, its open
        failed: ``failure``, kept for its transfer command's 425)."""
        channel.settle(failure)
        channel.state = "done"
        if channel.listener is not None:
            channel.listener.close()
            channel.listener = None
        self._forget(channel)

    def _forget(self, channel: DataChannel) -> None:
        """Drop a done channel, unless a transfer command is still to hear why it failed."""
        if channel.failure is None and self._channels.get(channel.id) is channel:
            del self._channels[channel.id]

    def _active_done(self, channel: DataChannel, connected: bool) -> None:
        """The active data connection of ``channel`` is connected or given up."""
        if connected:
            channel.state = "relaying"
        else:
            self._unused(channel)
        self._active_settled.set()
        self._active_settled = trio.Event()

    def _warn_ignored_pasv_address(self, named: str) -> None:
        """Say once per session that a 227's address is ignored (no SSRF)."""
        if not self._warned_pasv_address:
            self._warned_pasv_address = True
            self._log.warning("227 names %s; ignored, data goes to the FTP host %s",
                              named, self.forward.ftp_host)

    async def _transfer(self, channel: DataChannel, relay: DataRelay,
                        sock: trio.socket.SocketType | None = None) -> None:
        """Relay (pairing ``sock`` first, if given) until both ends close, then account
        the transfer by its command's final reply (waited for up to REPLY_WAIT) and log
        one line. A data connection no transfer command used is not a transfer (curl
        closes its passive connection when SIZE says 550): one log line, not counted.
        A transfer cut by cancellation (shutdown after --grace, the session's drain
        timeout) is recorded with the bytes moved so far, as aborted unless its data
        had already ended (only the teardown was cut)."""
        mode = channel.mode
        started = self._running_changed = trio.current_time()
        channel.state, channel.relay = "relaying", relay
        channel.seen = _Seen(relay.progress, started)
        if self._channels.get(channel.id) is not channel:  # (the same id twice: tests)
            self._channels[channel.id] = channel
        record = channel.record
        if record is None or record.accounted:
            # the command named no channel, or came first (active mode, -R passive)
            record = next((w for w in itertools.chain(self._awaiting_reply, self._unpaired)
                           if w.relay is None and not w.accounted
                           and w.channel_id in (None, channel.id)), None)
            channel.record = record
        if record is not None:
            self._pair(record, channel)
            record.mode, record.started = mode, started
        try:
            result = await (relay.wait() if sock is None else relay.relay_socket(sock))
        except trio.Cancelled:  # the session ends: accounted now, reply or not
            self._finished(channel, started, relay.snapshot(cancelled=True), now=True)
            raise
        finally:
            channel.state = "done"
            self._forget(channel)
            self._running_changed = trio.current_time()
        record = self._finished(channel, started, result)
        if record is not None and not record.accounted:  # the reply is still to come
            with trio.move_on_after(REPLY_WAIT):
                try:
                    await record.replied.wait()
                finally:
                    if not record.accounted:
                        self._account(record)

    def _finished(self, channel: DataChannel, started: float, result: RelayResult, *,
                  now: bool = False) -> _TransferRecord | None:
        """The relay ended with ``result``: account it now if its command's reply is in
        (or if it carried no transfer command); else its record, waiting for the reply."""
        record, channel.record = channel.record, None
        if record is None or record.relay is not channel.relay:
            total = result.to_ssh + result.from_ssh
            self._log.info("data connection (%s) closed without a transfer command "
                           "(%d bytes); not counted as a transfer", channel.mode, total)
            return None
        record.mode, record.result = channel.mode, result
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
        # (one accounted before its reply stays in _awaiting_reply: its reply, when it
        # comes, is the one the server sends next and must not be taken for another's)
        if record.code is not None and record in self._unpaired:  # (at most MAX_UNPAIRED)
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
                               "command": record.command, "type": record.transfer_type,
                               "bytes": total,
                               "seconds": round(seconds, 6),
                               "result": "ok" if outcome == "ok" else
                               "refused" if refused else (result.error or outcome),
                               "reply": code}}
        if self.on_transfer is not None:
            self.on_transfer(fields["transfer"])
        if refused:  # rate-limited with the session's warnings: no byte moved (a client
            # pipelining RETRs before login must not write a line for each 530)
            self._log.info("transfer client=%s mode=%s command=%r result=%s", client,
                           record.mode, record.command, outcome, extra=fields)
            return
        self._trace.info("transfer client=%s mode=%s direction=%s command=%r bytes=%d "
                         "seconds=%.3f rate=%s result=%s", client, record.mode, direction,
                         record.command, total, seconds, rate, outcome, extra=fields)

    async def _accept_one(self, listener: trio.socket.SocketType, allowed_host: str,
                          who: str, channel: DataChannel) -> trio.socket.SocketType | None:
        """The first connection to ``listener`` from ``allowed_host`` (others are refused
        and logged), or None when the channel's wait ends first (the channel is then
        done, unused). The listener is closed either way."""
        port = listener.getsockname()[1]
        sock = None
        try:
            with channel.wait:
                while True:
                    sock, peer = await listener.accept()
                    if same_address(peer[0], allowed_host):
                        return sock
                    self._log.warning("refused data connection from %s to port %d "
                                      "(only %s %s may connect)", peer[0], port, who,
                                      allowed_host)
                    sock.close()
                    sock = None
        finally:
            listener.close()
            channel.listener = None
            if sock is None:
                self._unused(channel)
        return None

    async def _forwarded_connection(self, remote: DataForward, channel: DataChannel,
                                    host: str, port: int, who: str) -> DataRelay | None:
        """Wait for the one connection on a remote forward (bounded by the channel's
        wait), cancel the forward, connect it locally to host:port. None if unused or
        the connect failed (both logged)."""
        incoming = None
        try:
            with channel.wait:
                incoming = await remote.accept()
        finally:
            await remote.aclose()  # cancel-tcpip-forward as soon as accepted
        if incoming is None:
            self._log.info("remote forward port %d closed unused (%s)", remote.port,
                           _why_unused(channel.wait))
            return None
        relay, orig_host, orig_port = incoming
        self._trace.debug("%s connected from %s:%d to remote forward %d", who, orig_host,
                          orig_port, remote.port)
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
    ip = host_ip(named)
    return ip is not None and ip.is_loopback


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
        return self.addresses.client_local_host

    async def _relay_to_server(self, destination: str, port: int,
                               channel: DataChannel | None = None) -> DataRelay:
        """An SSH channel to the server's passive port (``channel``: told when its
        open request is on the connection)."""
        try:
            return await self.tunnel.open_data_relay(
                destination, port, originator=(self.addresses.client_host, 0),
                requested=None if channel is None else channel.requested.set)
        except TunnelError as exc:
            self._log.warning("%s", exc)
            raise DataSetupError(str(exc)) from exc

    async def passive(self, offer: PassiveOffer) -> tuple[str, int]:
        """The listener is bound and the reply can go out at once; the SSH channel
        opens meanwhile (the client's connect waits in the listen backlog, the
        server's first bytes in the relay) and the transfer command waits for it."""
        local = self.addresses.client_local_host
        if not offer.extended and ":" in local:
            # a 227 can only name an IPv4 address; this client reached us over IPv6
            raise DataSetupError("PASV cannot name this IPv6 connection's address; use EPSV")
        destination = self._passive_destination(offer.host)
        try:
            listener = await open_data_listener(self.config.data_bind_host, local)
        except OSError as exc:
            raise DataSetupError(f"no local listener: {exc}") from exc
        channel = self._new_channel(offer.id, "passive")
        channel.listener = listener
        port = listener.getsockname()[1]
        self._start(self._serve_passive, listener, port, destination, offer.port, channel)
        self._trace.debug("passive data port %d via SSH, client connects to port %d",
                          offer.port, port)
        return self._reply_address(), port

    async def _serve_passive(self, listener: trio.socket.SocketType, port: int,
                             destination: str, ftp_port: int, channel: DataChannel) -> None:
        """Open the SSH channel, then accept the client's one data connection and
        relay it. The open itself is not cut short by superseding the channel's wait
        (that closes the listener at once, and the channel as soon as it is open), but
        it is by its deadline (data_idle_timeout): a hanging open (sshd connecting to a
        port whose host drops SYNs: ~2 min) must not keep the listener bound past it (a
        cancelled open closes its channel once open: open_data_relay). Opens run one
        at a time per session, and one superseded before its turn is never made: a
        client pipelining 200 PASVs does not put 200 opens (each an sshd connect to
        the FTP host) in flight at once."""
        wait = channel.wait
        relay = None
        try:
            with trio.move_on_at(wait.deadline):
                async with self._open_lock:
                    if not wait.cancel_called:
                        relay = await self._relay_to_server(destination, ftp_port, channel)
        except DataSetupError as exc:
            listener.close()  # the client's connect (if any) is reset
            self._unused(channel, str(exc))
            return
        except BaseException:
            listener.close()
            self._unused(channel, "session ended")
            raise
        if relay is None:
            superseded = trio.current_time() < wait.deadline  # else: timed out
            listener.close()
            self._unused(channel, "superseded" if superseded
                         else "timed out opening the data channel through SSH")
            self._log.info("passive listener on port %d closed unused (%s)", port,
                           "superseded or session ended" if superseded
                           else "timeout opening the SSH channel")
            return
        channel.settle()
        channel.listener = None  # from here on, closed with the wait
        sock = None
        try:
            if wait.cancel_called:  # superseded while opening: its listener is closed
                listener.close()
                self._unused(channel)
            else:
                sock = await self._accept_one(listener, self.addresses.client_host,
                                              "the client", channel)
        finally:
            if sock is None:
                relay.close()
        if sock is None:
            self._log.info("passive listener on port %d closed unused (%s)", port,
                           _why_unused(wait))
            return
        await self._transfer(channel, relay, sock)

    async def active(self, request: ActiveRequest) -> tuple[str, int]:
        """A one-shot remote forward for this PORT/EPRT: the one requested ahead (after
        the session's previous PORT/EPRT), armed now, so the rewritten command goes out
        without a tcpip-forward round trip of its own; the next one is requested
        meanwhile."""
        cfg = self.config
        try:
            async with self._forward_lock:  # (a request ahead in flight: that one)
                remote, self._spare_forward = self._spare_forward, None
            if remote is None:
                remote = await self._request_forward(armed=True)
            else:
                remote.arm()
            if forward_ahead_allowed(cfg.active_forward_ahead, self.forward.ftp_host,
                                     cfg.remote_listen_host):
                self._start(self._request_spare_forward)
        except TunnelError as exc:
            self._log.warning("%s; or use --active-mode passive", exc)
            raise DataSetupError(f"{exc}; or use --active-mode passive") from exc
        channel = self._new_channel(request.id, "active")
        self._start(self._serve_active, remote, request, channel)
        self._trace.debug("active %s:%d via remote forward %s:%d", request.host,
                          request.port, cfg.active_address, remote.port)
        return cfg.active_address, remote.port

    async def _request_forward(self, armed: bool) -> DataForward:
        return await self.tunnel.listen_remote(
            self.config.remote_listen_host, 0,
            accept_filter=ftp_server_only(self.forward.ftp_host), armed=armed)

    async def _request_spare_forward(self) -> None:
        """The forward of the session's next PORT/EPRT, requested ahead (disarmed)."""
        async with self._forward_lock:
            if self._spare_forward is not None:
                return
            try:
                self._spare_forward = await self._request_forward(armed=False)
            except TunnelError as exc:
                self._log.debug("no remote forward ahead: %s", exc)

    async def _serve_active(self, remote: DataForward, request: ActiveRequest,
                            channel: DataChannel) -> None:
        """Wait for the FTP server on the remote forward, cancel it, relay to the client."""
        relay = None
        try:
            relay = await self._forwarded_connection(remote, channel, request.host,
                                                     request.port, "FTP server")
        finally:
            self._active_done(channel, relay is not None)
        if relay is not None:
            await self._transfer(channel, relay)

    async def converted(self, event: ConvertedActive) -> None:
        """Connect to the client's data listener before the 200 (a client that does not
        listen gets a 425 for its PORT/EPRT, so no transfer command of it reaches the
        server, which would see an empty data connection: a STOR emptying the file, a
        RETR answered 226). The 200 then goes out at once; the SSH channel to the
        server's passive port opens meanwhile, and the transfer command follows its
        open request, as in passive mode."""
        destination = self._passive_destination(event.server_host)
        try:
            with trio.fail_after(self.config.data_idle_timeout):
                sock = await connect_local(event.client_host, event.client_port)
        except (OSError, trio.TooSlowError) as exc:
            self._log.warning("cannot connect to client data port %s:%d: %s",
                              event.client_host, event.client_port, exc or "timeout")
            raise DataSetupError(f"cannot connect to your data port: {exc or 'timeout'}"
                                 ) from exc
        channel = self._new_channel(event.id, "converted")
        self._start(self._serve_converted, channel, destination, event, sock)

    async def _serve_converted(self, channel: DataChannel, destination: str,
                               event: ConvertedActive, sock: trio.socket.SocketType) -> None:
        """Open the SSH channel (bounded by the channel's deadline, as a passive one),
        pair it with the client's connection, relay."""
        relay = None
        try:
            with trio.move_on_at(channel.wait.deadline):
                relay = await self._relay_to_server(destination, event.server_port, channel)
        except DataSetupError as exc:
            self._unused(channel, str(exc))
            return
        except BaseException:
            self._unused(channel, "session ended")
            raise
        finally:
            if relay is None:
                sock.close()
        if relay is None:
            self._unused(channel, "timed out opening the data channel through SSH")
            return
        channel.settle()
        await relay.attach_socket(sock)
        await self._transfer(channel, relay)


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
        channel = self._new_channel(offer.id, "passive")
        channel.settle()  # the forward is there: nothing to wait for
        self._start(self._serve_passive, remote, offer.port, channel)
        self._trace.debug("passive %s:%d locally, client connects to SSH server port %d",
                          self.forward.ftp_host, offer.port, remote.port)
        return self.forward.remote_reply_host(self.config), remote.port

    async def _serve_passive(self, remote: DataForward, ftp_port: int,
                             channel: DataChannel) -> None:
        """The client's connection on the SSH server's forward, relayed to the data port
        on the FTP host (never to the address a 227 named)."""
        relay = await self._forwarded_connection(remote, channel, self.forward.ftp_host,
                                                 ftp_port, "client")
        if relay is None:
            self._unused(channel)
        else:
            await self._transfer(channel, relay)

    async def active(self, request: ActiveRequest) -> tuple[str, int]:
        local_host = self.addresses.server_local_host
        try:
            listener = await open_local_listener(local_host)
        except OSError as exc:
            raise DataSetupError(f"no local listener: {exc}") from exc
        port = listener.getsockname()[1]
        channel = self._new_channel(request.id, "active")
        self._start(self._serve_active, listener, request, channel)
        self._trace.debug("active %s:%d via SSH, FTP server connects to %s:%d",
                          request.host, request.port, local_host, port)
        return local_host, port

    async def _serve_active(self, listener: trio.socket.SocketType, request: ActiveRequest,
                            channel: DataChannel) -> None:
        """Accept the FTP server's data connection and relay it through SSH
        (direct-tcpip) to the client's data listener."""
        port = listener.getsockname()[1]
        sock = None
        connected = False
        try:
            sock = await self._accept_one(listener, self.addresses.server_peer_host,
                                          "the FTP server", channel)
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
            connected = True
        finally:
            if sock is not None:
                sock.close()
            self._active_done(channel, connected)
        await self._transfer(channel, relay)


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


async def connect_local(host: str, port: int) -> trio.socket.SocketType:
    """A TCP connection to host:port (a client's data listener)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


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
    expected = host_ip(ftp_host)
    if expected is None:
        return None

    def accept(orig_host: str, _orig_port: int) -> bool:
        if expected.is_loopback:
            seen = host_ip(orig_host)
            return seen is not None and seen.is_loopback
        return same_address(orig_host, ftp_host)

    return accept


def forward_ahead_allowed(setting: str, ftp_host: str, remote_listen_host: str) -> bool:
    """--active-forward-ahead: may a remote forward wait, disarmed, for the session's
    next PORT/EPRT? "auto": only when ftp_server_only() pins an address other than
    loopback, and the forward listens on an address other than loopback. With a
    loopback (or named) FTP host, any user of the SSH server's host could connect from
    an allowed address, and a port known ahead gives them time to race the FTP server
    once it is armed; with a forward on loopback, the FTP server that reaches it runs
    on the SSH server's host, so its address is one of that host's, from which any of
    its users can connect as well."""
    if setting != "auto":
        return setting == "yes"
    listen = host_ip(remote_listen_host)
    if ftp_host.lower() == "localhost" or listen is None or listen.is_loopback:
        return False
    expected = host_ip(ftp_host)
    return expected is not None and not expected.is_loopback and not expected.is_unspecified


def client_only(client_host: str) -> Callable[[str, int], bool]:
    """A filter for a remote tunnel's passive forward: only the control client's address."""

    def accept(orig_host: str, _orig_port: int) -> bool:
        return same_address(orig_host, client_host)

    return accept
