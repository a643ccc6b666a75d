"""Remote (-R) tunnels through a real OpenSSH sshd (GatewayPorts at its default):
curl connects to 127.0.0.1:<remote forward port> on the SSH server (this
machine's loopback), ftptrio relays the session to vsftpd / pyftpdlib from its
own side. EPSV, PASV, EPRT and PORT, curl honouring the 227 address
(``--no-ftp-skip-pasv-ip``); every transfer sha256-checked by ``clients.exercise``.
"""

from __future__ import annotations

import re

import pytest
import trio

import ftptrio
from ftp_fakes import assert_no_leaks
from ftptrio.testing import servers

try:
    from . import clients
except ImportError:  # pragma: no cover
    import clients  # type: ignore[no-redef]

CASE_TIMEOUT = 120
MODES = ("EPSV", "PASV", "EPRT", "PORT")


@pytest.mark.parametrize("mode", MODES)
async def test_remote_tunnel_curl(openssh, real_ftp_server, mode, tmp_path):
    client = clients.Curl(mode)
    with trio.fail_after(CASE_TIMEOUT):
        config = clients.forwarder_config(openssh, real_ftp_server, direction="remote")
        async with ftptrio.open_forwarder(config) as fwd:
            host, port = fwd.addresses[0]
            assert host == "127.0.0.1" and port > 0
            await clients.exercise(client, clients.Target.for_server(real_ftp_server, "127.0.0.1",
                                                                     port),
                                   real_ftp_server, tmp_path)
            await assert_no_leaks(fwd)
            stats = fwd.stats
    expected = "active" if mode in ("EPRT", "PORT") else "passive"
    assert set(stats.by_mode) == {expected}
    assert stats.transfer_errors == 0
    # the control listener was a tcpip-forward on sshd, as were the passive data
    # forwards (port 0); active data went through direct-tcpip to curl's listener
    log = openssh.log()
    assert f"Allocated listen port {port}\n" in log
    assert f"Connection to port {port} forwarding to" in log
    if expected == "active":
        assert "cancel-tcpip-forward" in log  # the control listener, at the end
    else:  # every passive data connection came through its own remote forward
        assert re.search(r"rtype cancel-tcpip-forward", log)


async def test_remote_tunnel_from_cli_config_file(openssh, pyftpdlib_server, tmp_path):
    """The same tunnel described by a TOML file (load_config) works end to end."""
    from ftptrio._configfile import load_config

    path = tmp_path / "tunnels.toml"
    path.write_text(
        f'host = "{openssh.username}@{openssh.host}"\nport = {openssh.port}\n'
        f'identity = "{openssh.client_key}"\n'
        f'options = {{ UserKnownHostsFile = "{openssh.known_hosts}" }}\n'
        f'[[tunnel]]\nremote = "ftp/127.0.0.1:0:{pyftpdlib_server.host}:'
        f'{pyftpdlib_server.port}"\n'
        f'[[tunnel]]\nlocal = "0:{pyftpdlib_server.host}:{pyftpdlib_server.port}"\n')
    config, _args = load_config(str(path))
    with trio.fail_after(CASE_TIMEOUT):
        async with ftptrio.open_forwarder(config) as fwd:
            for host, port in fwd.addresses:
                target = clients.Target.for_server(pyftpdlib_server, host, port)
                local = tmp_path / f"one-{port}.bin"
                await clients.Curl("EPSV").download(target, "one_mib.bin", local)
                assert servers.sha256_file(local) == servers.sha256_file(
                    pyftpdlib_server.path("one_mib.bin"))
            await assert_no_leaks(fwd)


async def test_cli_config_file_starts_every_tunnel(openssh, vsftpd, tmp_path):
    """``python -m ftptrio --config FILE`` with one -R and one -L tunnel: both
    carry a curl download (EPSV through -L, PORT through -R); SIGINT exits 0."""
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "tunnels.toml"
    path.write_text(
        f'host = "{openssh.username}@{openssh.host}"\nport = {openssh.port}\n'
        f'identity = "{openssh.client_key}"\n'
        f'options = {{ UserKnownHostsFile = "{openssh.known_hosts}" }}\n'
        f'[[tunnel]]\nremote = "ftp/0:{vsftpd.host}:{vsftpd.port}"\n'
        f'[[tunnel]]\nlocal = "0:{vsftpd.host}:{vsftpd.port}"\nactive_mode = "passive"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "ftptrio", "--config", str(path)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready: list[tuple[str, int]] = []
        with trio.fail_after(30):
            while len(ready) < 2:
                line = await trio.to_thread.run_sync(proc.stderr.readline)
                assert line, "ftptrio exited early"
                if m := re.search(r"ready: FTP clients connect to ([\d.]+):(\d+)", line):
                    ready.append((m.group(1), int(m.group(2))))
        expected = servers.sha256_file(vsftpd.path("one_mib.bin"))
        for (host, port), mode in zip(ready, ("PORT", "EPSV")):
            local = tmp_path / f"cli-{mode}.bin"
            await clients.Curl(mode).download(clients.Target.for_server(vsftpd, host, port),
                                              "one_mib.bin", local)
            assert servers.sha256_file(local) == expected
        proc.send_signal(signal.SIGINT)
        assert await trio.to_thread.run_sync(lambda: proc.wait(30)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
