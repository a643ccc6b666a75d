"""Streams for session tests: a real loopback TCP pair for the client side (a session
reads its peer's address from it) and reading a stream up to a marker."""

from __future__ import annotations

import trio


async def loopback_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """(the client's end, the session's end) of one loopback TCP connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    client = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
    session_end = await listeners[0].accept()
    await listeners[0].aclose()
    return client, session_end


async def receive_until(stream: trio.abc.ReceiveStream, marker: bytes,
                        timeout: float = 5) -> bytes:
    """Everything ``stream`` sends until ``marker`` has arrived (within ``timeout``)."""
    data = b""
    with trio.fail_after(timeout):
        while marker not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, f"stream closed before {marker!r}; got {data!r}"
            data += chunk
    return data
