"""Active mode through real sshd to vsftpd: a refused transfer holds no later reply, and
a QUIT pipelined behind PORT and RETR leaves that transfer running (as vsftpd answers
it directly)."""

from __future__ import annotations

import ftplib
import socket
import threading
import time

import pytest
import trio

import ftptrio
from clients import forwarder_config


async def test_cwd_after_a_refused_active_retr_is_answered_at_once(openssh, vsftpd):
    """RETR of a missing file (550: vsftpd never connects), then CWD: its 250 is not
    held for active_hold_timeout (60 s here) waiting for a data connection that never
    comes (the bound below is half of it: no timing is measured finely)."""
    async with ftptrio.open_forwarder(forwarder_config(
            openssh, vsftpd, active_address="127.0.0.1", active_hold_timeout=60.0)) as fwd:
        host, port = fwd.addresses[0]

        def client() -> float:
            ftp = ftplib.FTP()
            ftp.connect(host, port, timeout=30)
            ftp.login(vsftpd.user, vsftpd.password)
            ftp.set_pasv(False)
            try:
                ftp.retrbinary("RETR missing", lambda block: None)
            except ftplib.error_perm:
                pass
            started = time.monotonic()
            assert ftp.sendcmd("CWD /").startswith("250")
            took = time.monotonic() - started
            ftp.quit()
            return took

        took = await trio.to_thread.run_sync(client)
    assert took < 30, f"CWD after a refused active RETR took {took:.1f} s"


def logged_in(host: str, port: int, user: str, password: str) -> socket.socket:
    """A raw control connection, logged in (its replies read and dropped)."""
    control = socket.create_connection((host, port), timeout=20)
    control.recv(1000)
    for line in (f"USER {user}\r\n", f"PASS {password}\r\n"):
        control.sendall(line.encode())
        time.sleep(0.3)
        control.recv(1000)
    return control


def port_retr_quit(host: str, port: int, user: str, password: str) -> tuple[bytes, list[object]]:
    """Log in, then TYPE I, PORT, RETR one_mib.bin and QUIT in one write: the replies,
    and what the data listener received (its byte count, or why nothing came)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    data_port = listener.getsockname()[1]
    got: list[object] = []

    def accept() -> None:
        listener.settimeout(15)
        try:
            sock, _ = listener.accept()
        except OSError as exc:
            got.append(f"no data connection: {exc}")
            return
        received = 0
        with sock:
            while chunk := sock.recv(65536):
                received += len(chunk)
        got.append(received)

    thread = threading.Thread(target=accept)
    thread.start()
    with logged_in(host, port, user, password) as control:
        control.sendall(b"TYPE I\r\nPORT 127,0,0,1,%d,%d\r\nRETR one_mib.bin\r\nQUIT\r\n"
                        % divmod(data_port, 256))
        replies = b""
        while chunk := control.recv(65536):
            replies += chunk
    thread.join()
    listener.close()
    return replies, got


async def test_a_pipelined_quit_leaves_the_active_transfer_before_it(openssh, vsftpd):
    async with ftptrio.open_forwarder(forwarder_config(openssh, vsftpd,
                                                       active_address="127.0.0.1")) as fwd:
        host, port = fwd.addresses[0]
        replies, got = await trio.to_thread.run_sync(port_retr_quit, host, port, vsftpd.user,
                                                     vsftpd.password)
    direct_replies, direct_got = await trio.to_thread.run_sync(
        port_retr_quit, vsftpd.host, vsftpd.port, vsftpd.user, vsftpd.password)
    assert got == direct_got == [1024 * 1024], (replies, direct_replies)
    assert b"226 " in replies and b"221 " in replies, replies


def two_ports_pipelined(host: str, port: int, user: str, password: str) -> dict[str, object]:
    """Log in, then TYPE I, PORT a, RETR missing, PORT b, RETR one_mib.bin, QUIT in one
    write; what each data listener received once the server closed the session."""
    listeners = {name: socket.create_server(("127.0.0.1", 0)) for name in "ab"}
    got: dict[str, object] = {}
    done = threading.Event()

    def drain(name: str) -> None:
        listener = listeners[name]
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                continue
            received = 0
            with sock:
                sock.settimeout(15)
                while chunk := sock.recv(65536):
                    received += len(chunk)
            got[name] = received
            return

    threads = [threading.Thread(target=drain, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    try:
        with logged_in(host, port, user, password) as control:
            ports = [listeners[name].getsockname()[1] for name in "ab"]
            control.sendall(b"TYPE I\r\nPORT 127,0,0,1,%d,%d\r\nRETR missing\r\n"
                            b"PORT 127,0,0,1,%d,%d\r\nRETR one_mib.bin\r\nQUIT\r\n"
                            % (*divmod(ports[0], 256), *divmod(ports[1], 256)))
            while control.recv(65536):
                pass
        threads[1].join(timeout=20)  # b's data, after the server's 221
    finally:
        done.set()
        for thread in threads:
            thread.join()
        for listener in listeners.values():
            listener.close()
    return got


@pytest.mark.parametrize("server", ["vsftpd", "proftpd"])
async def test_pipelined_ports_each_get_their_own_data_connection(openssh, server, request):
    """The first PORT's transfer is refused (550: no connection), the second's file
    reaches the second PORT's listener, not the first's (as with the server itself)."""
    ftp = request.getfixturevalue(server)
    async with ftptrio.open_forwarder(forwarder_config(openssh, ftp,
                                                       active_address="127.0.0.1")) as fwd:
        host, port = fwd.addresses[0]
        got = await trio.to_thread.run_sync(two_ports_pipelined, host, port, ftp.user,
                                            ftp.password)
    assert got == {"b": 1024 * 1024}, got
