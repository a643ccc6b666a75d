"""A fake SSH tunnel for unit tests of the session and its data plane: no SSH server.

**Not part of the public API: may change without notice** (as the rest of
``ftptrio.testing``).

``FakeTunnel`` implements the seam a session uses (``ftptrio._seams.SessionTunnel``):
it records what would be asked of SSH and hands out fake relays and remote
listeners. Only the data plane's own one-shot listeners stay real sockets.

* ``open_stream`` returns the stream given as ``server_end`` (the "FTP server").
* ``open_data_relay`` returns a ``FakeRelay`` (kept in ``relays``) whose far end is a
  byte counter; ``listen_remote`` a ``FakeRemoteListener`` (kept in ``listeners``,
  ports 40000, 40001, ...) whose connections the test sends into ``incoming``.
* While ``fail`` is set, data channel opens raise ``ChannelRefused`` and remote
  forwards ``RemoteForwardRefused``, as the SSH layer does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import trio

from .._errors import ChannelRefused, RemoteForwardRefused, TunnelError
from .._seams import AcceptFilter, RelayResult

if TYPE_CHECKING:
    from .._seams import SessionTunnel


class FakeRelay:
    """An SSH channel whose far end is a byte counter (``ftptrio._seams.DataRelay``).

    ``relay_socket`` counts what the socket sends as ``to_ssh``; ``attach_socket``
    closes the socket and reports 7 bytes from SSH, ``connect_socket`` 11 (and
    records where it connected). ``done`` is set when the relay ends.
    """

    def __init__(self, host: str = "", port: int = 0) -> None:
        self.destination = (host, port)
        self.closed = False
        self.connected_to: tuple[str, int] | None = None
        self.done = trio.Event()
        self.result = RelayResult(0, 0)

    async def relay_socket(self, sock: trio.socket.SocketType) -> RelayResult:
        with sock:
            while data := await sock.recv(65536):
                self.result.to_ssh += len(data)
        self.done.set()
        return self.result

    async def attach_socket(self, sock: trio.socket.SocketType) -> None:
        sock.close()
        self.result.from_ssh = 7
        self.done.set()

    async def connect_socket(self, host: str, port: int) -> None:
        self.connected_to = (host, port)
        self.result.from_ssh = 11
        self.done.set()

    async def wait(self) -> RelayResult:
        await self.done.wait()
        return self.result

    def snapshot(self, *, cancelled: bool = False) -> RelayResult:
        return RelayResult(self.result.to_ssh, self.result.from_ssh,
                           "aborted" if cancelled else None)

    def close(self) -> None:
        self.closed = True

    @property
    def progress(self) -> tuple[int, int]:
        return self.result.to_ssh, self.result.from_ssh


class FakeRemoteListener:
    """A remote forward on a fake SSH server (``ftptrio._seams.DataForward``): the test
    sends each connection, ``(relay, originator host, originator port)``, into
    ``incoming``."""

    def __init__(self, port: int, accept_filter: AcceptFilter | None,
                 armed: bool = True) -> None:
        self.port = port
        self.accept_filter = accept_filter
        #: False while requested ahead of its PORT/EPRT (the test sends nothing then)
        self.armed = armed
        self.incoming, self._receive = trio.open_memory_channel[tuple[FakeRelay, str, int]](1)
        self.closed = False

    def arm(self) -> None:
        self.armed = True

    async def accept(self) -> tuple[FakeRelay, str, int]:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self.closed = True


class FakeTunnel:
    """A shared SSH connection that records every data channel it was asked for
    (``ftptrio._seams.SessionTunnel``)."""

    def __init__(self, server_end: trio.abc.HalfCloseableStream | None = None) -> None:
        #: what open_stream returns: the FTP server's end of the control connection
        self.server_end = server_end
        self.relays: list[FakeRelay] = []
        self.listeners: list[FakeRemoteListener] = []
        #: data channel opens (open_data_relay, listen_remote) are refused
        self.fail = False
        self.data_opens_refused = False

    async def open_stream(self, host: str, port: int, originator: tuple[str, int] = ("", 0),
                          ) -> trio.abc.HalfCloseableStream:
        if self.server_end is None:
            raise TunnelError(f"no FTP server at {host}:{port} (FakeTunnel without server_end)")
        return self.server_end

    async def open_data_relay(self, host: str, port: int,
                              originator: tuple[str, int] = ("", 0),
                              requested: Callable[[], None] | None = None) -> FakeRelay:
        if requested is not None:
            requested()  # (the open "is on the connection" at once)
        if self.fail:
            self.data_opens_refused = True
            raise ChannelRefused("open failed: administratively prohibited", code=1)
        relay = FakeRelay(host, port)
        self.relays.append(relay)
        return relay

    @property
    def armed_listeners(self) -> list[FakeRemoteListener]:
        """The remote forwards in use (armed), in order: one per PORT/EPRT (a forward
        requested ahead joins when its PORT/EPRT takes it)."""
        return [listener for listener in self.listeners if listener.armed]

    async def listen_remote(self, host: str, port: int = 0,
                            accept_filter: AcceptFilter | None = None,
                            armed: bool = True) -> FakeRemoteListener:
        if self.fail:
            raise RemoteForwardRefused("remote forward refused")
        listener = FakeRemoteListener(40000 + len(self.listeners), accept_filter, armed)
        self.listeners.append(listener)
        return listener


if TYPE_CHECKING:  # mypy checks that the fake fits the seam it stands in for
    _fits: SessionTunnel = FakeTunnel()

__all__ = ["FakeRelay", "FakeRemoteListener", "FakeTunnel"]
