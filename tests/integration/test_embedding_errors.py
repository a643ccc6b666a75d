"""What an embedding application catches (issue 23, point 3): a forwarder that
cannot start raises the ``ftptrio.FtptrioError`` subclass itself, caught with a
plain ``except ftptrio.FtptrioError`` (no ``except*``, no unwrapping), from
``async with ftptrio.open_forwarder(config)`` and from
``await nursery.start(ftptrio.serve, config)``: TunnelError (SSH server down) and
its kinds (HostKeyError, AuthenticationError, ConnectTimeout), BindError (listen port taken), ConfigError (a Config that cannot be
used). An error raised in the ``async with`` block comes out as itself.

Each start-up failure runs twice: with no trio-asyncio loop open (ftptrio opens its
own, whose nurseries used to wrap the error in two more exception groups) and inside
the embedder's own ``trio_asyncio.open_loop()``. The SSH server therefore runs in a
thread of its own (its own trio run and trio-asyncio loop), so that the test's trio
run has no asyncio loop unless the test opens one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import AsyncIterator, Iterator

import asyncssh
import pytest
import trio
import trio_asyncio

import ftptrio
from ftptrio.testing import SSHServerInfo, inprocess_ssh_server

if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

REPO = Path(__file__).resolve().parents[2]

APIS = ["open_forwarder", "nursery.start"]
LOOPS = ["ftptrio's loop", "embedder's loop"]


# --------------------------------------------------------------------- helpers
@pytest.fixture
def threaded_ssh() -> Iterator[SSHServerInfo]:
    """``inprocess_ssh_server()`` in a thread with its own trio run and loop."""
    handed: queue.Queue[tuple[SSHServerInfo, trio.lowlevel.TrioToken, trio.Event]
                        | BaseException] = queue.Queue()

    async def main() -> None:
        stop = trio.Event()
        async with trio_asyncio.open_loop(), inprocess_ssh_server() as info:
            handed.put((info, trio.lowlevel.current_trio_token(), stop))
            await stop.wait()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the test instead of a lost thread
            handed.put(exc)

    thread = threading.Thread(target=run, name="threaded-ssh-server", daemon=True)
    thread.start()
    got = handed.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    info, token, stop = got
    try:
        yield info
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(timeout=30)


@contextlib.asynccontextmanager
async def loop_of(which: str) -> AsyncIterator[None]:
    """The embedder's own trio-asyncio loop, or none (ftptrio then opens its own)."""
    if which == "embedder's loop":
        async with trio_asyncio.open_loop():
            yield
    else:
        yield


def config_for(ssh: SSHServerInfo, **ssh_changes: object) -> ftptrio.Config:
    """A Config through ``ssh`` (the FTP server is never reached: start-up only)."""
    options = {"host": ssh.host, "port": ssh.port, "username": ssh.username,
               "client_keys": (ssh.client_key_path,), "known_hosts": ssh.known_hosts,
               "connect_timeout": 10.0, **ssh_changes}
    return ftptrio.Config(ssh=ftptrio.SSHOptions(**options),  # type: ignore[arg-type]
                          forwards=(ftptrio.ForwardSpec(ftp_host="127.0.0.1", ftp_port=21),))


async def start_error(api: str, config: ftptrio.Config) -> ftptrio.FtptrioError:
    """The error that starting a forwarder the ``api`` way raises, caught as an
    embedder catches it: a plain ``except ftptrio.FtptrioError``. A group (or any
    other exception) leaves this function and fails the test."""
    with trio.fail_after(30):
        if api == "open_forwarder":
            try:
                async with ftptrio.open_forwarder(config):
                    pass
            except ftptrio.FtptrioError as exc:
                return exc
        else:
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(ftptrio.serve, config)
                except ftptrio.FtptrioError as exc:
                    return exc
                nursery.cancel_scope.cancel()
    pytest.fail("the forwarder started")


def assert_plain(exc: BaseException) -> None:
    """Not a group, and its printed traceback shows no group either (the error
    is not chained to a group that contained it)."""
    assert not isinstance(exc, BaseExceptionGroup)
    printed = "".join(traceback.format_exception(exc))
    assert "ExceptionGroup" not in printed, printed


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound (so nobody else takes it) but not listening: connections are
    refused."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield closed.getsockname()[1]


# ------------------------------------------------------------ start-up failures
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("api", APIS)
async def test_closed_ssh_port_is_a_tunnel_error(api, loop, closed_port, tmp_path):
    config = ftptrio.Config(
        ssh=ftptrio.SSHOptions(host="127.0.0.1", port=closed_port,
                               known_hosts=str(tmp_path / "known_hosts")),
        forwards=(ftptrio.ForwardSpec(ftp_host="127.0.0.1"),))
    async with loop_of(loop):
        error = await start_error(api, config)
    assert type(error) is ftptrio.TunnelError
    assert f"127.0.0.1:{closed_port}: SSH connection failed: connection refused" in str(error)
    assert_plain(error)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("api", APIS)
async def test_refused_host_key_is_a_tunnel_error(api, loop, threaded_ssh, tmp_path):
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{threaded_ssh.port} {other.strip()}\n")
    async with loop_of(loop):
        error = await start_error(api, config_for(threaded_ssh, known_hosts=str(known)))
    assert type(error) is ftptrio.HostKeyError
    assert error.changed and error.fingerprint == threaded_ssh.host_key.get_fingerprint(), error
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in str(error), error
    assert_plain(error)


@pytest.mark.parametrize("api", APIS)
async def test_denied_login_is_an_authentication_error(api, threaded_ssh):
    config = config_for(threaded_ssh, client_keys=(), identity_agent="none", batch_mode=True)
    error = await start_error(api, config)
    assert type(error) is ftptrio.AuthenticationError
    assert "Permission denied (publickey)" in str(error), error
    assert_plain(error)


@pytest.mark.parametrize("api", APIS)
async def test_silent_ssh_server_is_a_connect_timeout(api, tmp_path):
    with socket.socket() as silent:  # accepts (backlog) but never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config = ftptrio.Config(
            ssh=ftptrio.SSHOptions(host="127.0.0.1", port=silent.getsockname()[1],
                                   known_hosts=str(tmp_path / "known_hosts"),
                                   connect_timeout=1.0),
            forwards=(ftptrio.ForwardSpec(ftp_host="127.0.0.1"),))
        error = await start_error(api, config)
    assert type(error) is ftptrio.ConnectTimeout
    assert "timed out after 1 s (ConnectTimeout)" in str(error), error
    assert_plain(error)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("api", APIS)
async def test_listen_port_in_use_is_a_bind_error(api, loop, threaded_ssh):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config_for(threaded_ssh)
        config = ftptrio.Config(ssh=config.ssh, forwards=(ftptrio.ForwardSpec(
            ftp_host="127.0.0.1", listen_host="127.0.0.1", listen_port=port),))
        async with loop_of(loop):
            error = await start_error(api, config)
    assert type(error) is ftptrio.BindError
    assert error.errno == errno.EADDRINUSE
    assert str(error).startswith(f"cannot listen on 127.0.0.1:{port}: "), error
    assert_plain(error)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("api", APIS)
async def test_unusable_config_is_a_config_error(api, loop):
    """A Config only serve() can judge: ``ssh_connection`` that is no asyncssh
    connection. (An invalid value is refused when the Config is made: next test.)"""
    config = ftptrio.Config(ssh=ftptrio.SSHOptions(host="127.0.0.1"),
                            forwards=(ftptrio.ForwardSpec(ftp_host="127.0.0.1"),),
                            ssh_connection=object())
    async with loop_of(loop):
        error = await start_error(api, config)
    assert type(error) is ftptrio.ConfigError
    assert "ssh_connection" in str(error), error
    assert_plain(error)


def test_invalid_config_is_a_config_error():
    try:
        ftptrio.Config(ssh=ftptrio.SSHOptions(host="127.0.0.1"), forwards=())
    except ftptrio.FtptrioError as exc:
        error = exc
    else:
        pytest.fail("an empty forward list was accepted")
    assert type(error) is ftptrio.ConfigError
    assert "at least one forward" in str(error)
    with pytest.raises(ftptrio.ConfigError, match="SSH port"):
        ftptrio.SSHOptions(host="127.0.0.1", port=70000)
    with pytest.raises(ftptrio.ConfigError, match="listen port"):
        ftptrio.ForwardSpec(ftp_host="127.0.0.1", listen_port=-1)


# ------------------------------------------------------------ the embedder's block
class Mine(Exception):
    """An error of the embedding application's own."""


@pytest.mark.parametrize("loop", LOOPS)
async def test_error_in_the_block_propagates_as_itself(loop, threaded_ssh):
    raised = Mine("from the block")
    async with loop_of(loop):
        try:
            async with ftptrio.open_forwarder(config_for(threaded_ssh)) as fwd:
                assert fwd.addresses
                raise raised
        except Mine as exc:
            caught = exc
    assert caught is raised
    assert_plain(caught)
    # its traceback still starts here, at the raise in the block
    frames = traceback.extract_tb(caught.__traceback__)
    assert any(f.name == "test_error_in_the_block_propagates_as_itself"
               and f.line == "raise raised" for f in frames), frames


async def test_ftptrio_error_in_the_block_propagates_as_itself(threaded_ssh):
    """An FtptrioError of the block's own (here: one from a nested, failing
    forwarder) is not mistaken for the outer forwarder's."""
    async with ftptrio.open_forwarder(config_for(threaded_ssh)):
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            inner = config_for(threaded_ssh, port=closed.getsockname()[1])
            try:
                async with ftptrio.open_forwarder(inner):
                    pass
            except ftptrio.TunnelError as exc:
                assert "connection refused" in str(exc)
            else:
                pytest.fail("a forwarder to a closed port started")


async def test_group_raised_in_the_block_is_kept_as_it_is(threaded_ssh):
    """The block's own exception group, even of one error, is not unwrapped."""
    raised = ExceptionGroup("the embedder's", [Mine("one")])
    try:
        async with ftptrio.open_forwarder(config_for(threaded_ssh)):
            raise raised
    except BaseExceptionGroup as group:
        caught = group
    assert caught is raised
    assert len(caught.exceptions) == 1 and isinstance(caught.exceptions[0], Mine)


async def test_cancelling_the_block_stops_the_forwarder_quietly(threaded_ssh):
    with trio.fail_after(30), trio.CancelScope() as scope:
        async with ftptrio.open_forwarder(config_for(threaded_ssh)) as fwd:
            port = fwd.addresses[0][1]
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    with socket.socket() as probe:  # the listener is closed
        assert probe.connect_ex(("127.0.0.1", port)) != 0


# --------------------------------------------------------- several errors at once
def test_groups_of_one_are_unwrapped_groups_of_several_kept():
    from ftptrio._server import _unwrap

    a, b = ValueError("a"), KeyError("b")
    assert _unwrap(ExceptionGroup("x", [ExceptionGroup("y", [a])])) is a
    several = ExceptionGroup("y", [a, b])
    assert _unwrap(ExceptionGroup("x", [ExceptionGroup("z", [several])])) is several
    assert _unwrap(a) is a


# ------------------------------------------------------------------ the example
@pytest.mark.parametrize("style", [[], ["--nursery"]], ids=["open_forwarder", "nursery"])
async def test_embed_example_reports_a_closed_ssh_port_in_one_line(style, closed_port,
                                                                   tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "examples/embed.py", "--ssh-host", "127.0.0.1",
             "--ssh-port", str(closed_port), "--ssh-user", "nobody", *style],
            cwd=REPO, env=env, capture_stdout=True, capture_stderr=True, check=False)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "Traceback" not in err, err
    assert err.splitlines() == [
        f"embed.py: 127.0.0.1:{closed_port}: SSH connection failed: connection refused "
        "(is the SSH server listening on that port?)"], err
