"""A three-host topology in network namespaces, ftptrio run from its command line.

::

    client ns (ftptrio-c-PID)      sshhost ns (ftptrio-s-PID)      ftphost ns (ftptrio-f-PID)
    10.213.1.1  <---- veth ---->  10.213.1.2 | 10.213.2.1  <---- veth ---->  10.213.2.2
    ftptrio CLI, clients           sshd (GatewayPorts clientspecified)      vsftpd :21, pyftpdlib :2121

The client namespace has no route to 10.213.2.0/24 and the sshhost namespace
does not forward IP (ip_forward stays 0): the only way from the client to the
FTP host is ftptrio's SSH connection.  Passive data goes through direct-tcpip
channels to 10.213.2.2; active data through remote forwards that sshd binds on
10.213.2.1, announced to the FTP server as ``--active-address 10.213.2.1``, which
is also the control connection's peer address as the FTP server sees it (so the
servers' anti-bounce check passes). Only ``--active-address`` is given, as in the
README's gateway example: ftptrio then asks sshd to listen there (issue 15.4).

Everything (ftptrio, sshd, FTP servers, namespaces) is removed in the
fixture's finalizer, also when a step fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ftptrio.testing import servers

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

CLIENT_ADDR, SSH_ADDR_C = "10.213.1.1", "10.213.1.2"
SSH_ADDR_F, FTP_ADDR = "10.213.2.1", "10.213.2.2"
VSFTPD_PORT, PYFTPDLIB_PORT = 21, 2121

CASES = [
    pytest.param(server, client, mode, id=f"{server}-{client}-{mode}")
    for client, modes in (("curl", ("EPSV", "PASV", "EPRT", "PORT")), ("lftp", ("PASV", "PORT")))
    for mode in modes
    for server in ("vsftpd", "pyftpdlib")
]

_CONNECT_SCRIPT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as exc:
    print("cannot connect: %r" % (exc,))
    sys.exit(1)
print("connected")
"""


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([servers.find_tool("ip") or "ip", *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def _ip_ok(*args: str) -> None:
    result = _ip(*args)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")


def can_connect(netns: str, host: str, port: int, timeout: float = 3.0) -> tuple[bool, str]:
    result = subprocess.run(
        [*servers.netns_prefix(netns), sys.executable, "-c", _CONNECT_SCRIPT, host, str(port), str(timeout)],
        capture_output=True, text=True, timeout=timeout + 30, stdin=subprocess.DEVNULL,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


@dataclass
class World:
    client_ns: str
    ssh_ns: str
    ftp_ns: str
    sshd: servers.OpenSSHServer
    ftp: dict[str, servers.FTPServer]
    #: ftptrio listening port in the client namespace, per FTP server
    ports: dict[str, int]
    ftptrio: subprocess.Popen
    ftptrio_log: Path

    def ftptrio_log_tail(self, size: int = 6000) -> str:
        try:
            return self.ftptrio_log.read_text(errors="replace")[-size:]
        except OSError as exc:
            return f"<cannot read {self.ftptrio_log}: {exc}>"


def _make_namespaces(stack: contextlib.ExitStack, pid: int) -> tuple[str, str, str]:
    client_ns, ssh_ns, ftp_ns = (f"ftptrio-{k}-{pid}" for k in "csf")
    first = _ip("netns", "add", client_ns)
    if first.returncode != 0:
        msg = f"cannot create network namespaces (ip netns add: {first.stderr.strip()})"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    for ns in (client_ns, ssh_ns, ftp_ns):
        # deleting a namespace removes its veth ends as well
        stack.callback(_ip, "netns", "del", ns)
        if ns != client_ns:
            _ip_ok("netns", "add", ns)
        _ip_ok("-n", ns, "link", "set", "lo", "up")

    # veth names live in the root namespace first: keep them unique per run (<= 15 chars)
    c_if, s_if1, s_if2, f_if = f"ftc{pid}", f"fts{pid}a", f"fts{pid}b", f"ftf{pid}"
    for a, a_ns, b, b_ns in ((c_if, client_ns, s_if1, ssh_ns), (s_if2, ssh_ns, f_if, ftp_ns)):
        stack.callback(_ip, "link", "del", a)  # only if the move into a namespace failed
        _ip_ok("link", "add", a, "type", "veth", "peer", "name", b)
        _ip_ok("link", "set", a, "netns", a_ns)
        _ip_ok("link", "set", b, "netns", b_ns)
    for ns, dev, addr in ((client_ns, c_if, CLIENT_ADDR), (ssh_ns, s_if1, SSH_ADDR_C),
                          (ssh_ns, s_if2, SSH_ADDR_F), (ftp_ns, f_if, FTP_ADDR)):
        _ip_ok("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        _ip_ok("-n", ns, "link", "set", dev, "up")
    # The sshhost must not route between its two links (a fresh namespace starts
    # with forwarding off; make sure, whatever devconf_inherit_init_net says).
    forwarding = subprocess.run(
        [*servers.netns_prefix(ssh_ns), "sh", "-c",
         "echo 0 > /proc/sys/net/ipv4/ip_forward && cat /proc/sys/net/ipv4/ip_forward"],
        capture_output=True, text=True, timeout=30)
    assert forwarding.stdout.strip() == "0", f"ip_forward in {ssh_ns}: {forwarding.stdout} {forwarding.stderr}"
    return client_ns, ssh_ns, ftp_ns


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    for tool in ("ip", "sshd", "ssh-keygen", "vsftpd"):
        servers.require_tool(tool)
    base = tmp_path_factory.mktemp("netns")
    with contextlib.ExitStack() as stack:
        client_ns, ssh_ns, ftp_ns = _make_namespaces(stack, os.getpid())

        sshd = servers.start_openssh(base / "sshd", extra_config=["GatewayPorts clientspecified"],
                                     host=SSH_ADDR_C, netns=ssh_ns)
        stack.callback(sshd.stop)
        ftp = {
            "vsftpd": servers.start_vsftpd(base / "vsftpd", host=FTP_ADDR, port=VSFTPD_PORT, netns=ftp_ns),
        }
        stack.callback(ftp["vsftpd"].stop)
        ftp["pyftpdlib"] = servers.start_pyftpdlib(base / "pyftpdlib", host=FTP_ADDR, port=PYFTPDLIB_PORT,
                                                   netns=ftp_ns)
        stack.callback(ftp["pyftpdlib"].stop)

        # The topology really isolates the FTP host: reachable from the sshhost only.
        ok, detail = can_connect(ssh_ns, FTP_ADDR, VSFTPD_PORT)
        assert ok, f"the sshhost namespace cannot reach the FTP server: {detail}"
        ok, detail = can_connect(client_ns, FTP_ADDR, VSFTPD_PORT)
        assert not ok, f"the client namespace reaches {FTP_ADDR}:{VSFTPD_PORT} directly: {detail}"

        ports = {"vsftpd": servers.free_port(), "pyftpdlib": servers.free_port()}
        log_path = base / "ftptrio.log"
        cmd = [
            *servers.netns_prefix(client_ns), sys.executable, "-m", "ftptrio", "-v",
            "-L", f"127.0.0.1:{ports['vsftpd']}:{FTP_ADDR}:{VSFTPD_PORT}",
            "-L", f"127.0.0.1:{ports['pyftpdlib']}:{FTP_ADDR}:{PYFTPDLIB_PORT}",
            "-p", str(sshd.port), "-i", sshd.client_key,
            "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "--active-address", SSH_ADDR_F,
            f"{sshd.username}@{SSH_ADDR_C}",
        ]
        with open(log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
        stack.callback(servers.stop_process, process)
        world = World(client_ns, ssh_ns, ftp_ns, sshd, ftp, ports, process, log_path)
        try:
            for port in ports.values():
                servers.wait_for_port_in(client_ns, "127.0.0.1", port, timeout=30, process=process)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"ftptrio did not start: {exc}\n--- ftptrio log ---\n"
                               f"{world.ftptrio_log_tail()}") from None
        yield world


def test_client_cannot_reach_ftp_host_directly(world):
    for port in (VSFTPD_PORT, PYFTPDLIB_PORT):
        ok, detail = can_connect(world.client_ns, FTP_ADDR, port)
        assert not ok, f"client namespace reaches {FTP_ADDR}:{port} without ftptrio: {detail}"


@pytest.mark.parametrize("server, client, mode", CASES)
async def test_netns(world, server, client, mode, tmp_path):
    assert world.ftptrio.poll() is None, (
        f"ftptrio exited with {world.ftptrio.returncode}\n{world.ftptrio_log_tail()}")
    ftp = world.ftp[server]
    target = clients.Target.for_server(ftp, "127.0.0.1", world.ports[server])
    runner = clients.CLIENTS[client](mode, netns=world.client_ns)
    try:
        await clients.exercise(runner, target, ftp, tmp_path)
    except (AssertionError, pytest.fail.Exception) as exc:
        raise AssertionError(f"{exc}\n--- ftptrio log (tail) ---\n{world.ftptrio_log_tail()}") from None
    if mode in ("EPRT", "PORT"):
        # active data came back through a remote forward on the FTP side of the sshhost
        assert f"tcpip-forward listen {SSH_ADDR_F} port 0" in world.sshd.log()
        assert (f"the SSH server listens on {SSH_ADDR_F} for the FTP server's data "
                "connections (needs GatewayPorts clientspecified") in world.ftptrio_log_tail(200000)
