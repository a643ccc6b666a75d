"""Test helpers for ftptrio's demo, tests, benchmarks and examples.

**Not part of the public API: may change without notice.** Importable so that
``python -m ftptrio demo``, ``examples/``, ``bench/`` and ``tests/`` share one
copy instead of reaching into private modules or into ``tests/``.

In-process servers (loopback, OS-picked ports, stopped when the block ends):

* ``inprocess_ssh_server()``: an asyncssh SSH server (needs a trio-asyncio loop)
  that allows direct-tcpip and tcpip-forward and records every request
  (``SSHServerInfo``); with ``sftp_root=DIR`` it also serves SFTP rooted there,
  with ``passwords={user: password}`` password logins for several users.
* ``threaded_ftp_server()``: a pyftpdlib FTP server in a background thread
  (``FTPServerInfo``; pyftpdlib comes with the ``demo`` and ``test`` extras).

Real servers as subprocesses (OpenSSH sshd, vsftpd, pyftpdlib):
``ftptrio.testing.servers``. A fake SSH tunnel for unit tests of the session and
its data plane: ``ftptrio.testing.fake_tunnel``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from dataclasses import dataclass
from typing import Iterator

from .._ssh._testserver import SSHServerInfo as SSHServerInfo
from .._ssh._testserver import inprocess_ssh_server as inprocess_ssh_server
from .servers import PASSIVE_SEARCH_HIGH, PASSIVE_SEARCH_LOW

#: threaded_ftp_server's passive ports (outside the kernel's ephemeral range)
FTP_PASSIVE_PORTS = range(PASSIVE_SEARCH_LOW, PASSIVE_SEARCH_HIGH)


@dataclass
class FTPServerInfo:
    """A running in-process FTP server and its one user."""

    host: str
    port: int
    user: str
    password: str
    root: str


@contextlib.contextmanager
def threaded_ftp_server(root: str | None = None, user: str = "demo",
                        password: str = "demo-password") -> Iterator[FTPServerInfo]:
    """A pyftpdlib server on 127.0.0.1:<free port>, serving root, in a thread
    (pyftpdlib: ``pip install 'ftptrio[demo]'``)."""
    try:
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.servers import FTPServer
    except ImportError as exc:
        raise ImportError(f"threaded_ftp_server() needs pyftpdlib ({exc}): "
                          "pip install 'ftptrio[demo]'") from exc

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        if root is None:
            root = stack.enter_context(tempfile.TemporaryDirectory(prefix="ftptrio-ftp-"))
        authorizer = DummyAuthorizer()
        authorizer.add_user(user, password, root, perm="elradfmwMT")
        handler = type("DemoHandler", (FTPHandler,), {
            "authorizer": authorizer,
            "passive_ports": FTP_PASSIVE_PORTS,
            "permit_foreign_addresses": False,
            "timeout": 60,
        })
        server = FTPServer(("127.0.0.1", 0), handler)
        server.max_cons = 1024
        port: int = server.socket.getsockname()[1]
        stop = threading.Event()

        def run() -> None:
            try:
                while not stop.is_set():
                    server.serve_forever(timeout=0.05, blocking=False)
            finally:
                server.close_all()

        thread = threading.Thread(target=run, name="ftptrio-ftp-server", daemon=True)
        thread.start()
        try:
            yield FTPServerInfo("127.0.0.1", port, user, password, root)
        finally:
            stop.set()
            thread.join(10)


def trio_task_count() -> int:
    """Every task of the running trio run (for flat-trend checks in tests and benches)."""
    import trio

    count = 0

    def walk(task: trio.lowlevel.Task) -> None:
        nonlocal count
        count += 1
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None, "trio_task_count() must run inside trio.run"
    walk(root)
    return count


__all__ = ["FTP_PASSIVE_PORTS", "FTPServerInfo", "SSHServerInfo", "inprocess_ssh_server",
           "threaded_ftp_server", "trio_task_count"]
