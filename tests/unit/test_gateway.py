"""The team gateway's front door (``ftptrio._gateway``): --allow-destination rules,
proxy logins (USER user@host[:port], OPEN/SITE host) and a proxy session that becomes
a -L session to the destination, with in-memory streams and a fake tunnel."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from ftptrio import ConfigError
from ftptrio._config import Config, ForwardSpec, SSHOptions
from ftptrio._access import (LoginRefused, destination_allowed, normal_host,
                              parse_destination_rule, parse_destination_rules,
                              split_proxy_user)
from ftptrio._session import Session
from ftptrio._stats import TransferStats
from ftptrio.testing.fake_tunnel import FakeTunnel
from session_streams import receive_until  # type: ignore[import-not-found]


def allowed(patterns: list[str], host: str, port: int = 21) -> bool:
    return destination_allowed(parse_destination_rules(patterns), normal_host(host), port)


def test_rules_match_addresses_networks_and_ports():
    assert allowed(["10.0.0.5"], "10.0.0.5")
    assert not allowed(["10.0.0.5"], "10.0.0.5", 2121)  # port 21 only by default
    assert allowed(["10.0.0.5:2121"], "10.0.0.5", 2121)
    assert not allowed(["10.0.0.5:2121"], "10.0.0.5", 21)
    assert allowed(["10.0.0.0/24:2100-2199"], "10.0.0.77", 2150)
    assert not allowed(["10.0.0.0/24:2100-2199"], "10.0.1.77", 2150)
    assert not allowed(["10.0.0.0/24:2100-2199"], "10.0.0.77", 2200)
    assert allowed(["[2001:db8::/32]:2121"], "2001:db8::7", 2121)
    assert allowed(["2001:db8::/32"], "2001:db8::7")
    assert allowed(["10.0.0.5"], "::ffff:10.0.0.5")  # IPv4-mapped is the IPv4 address
    assert not allowed([], "10.0.0.5")  # default deny


def test_name_globs_match_names_only_and_address_rules_addresses_only():
    assert allowed(["*.lan"], "ftp.lan")
    assert allowed(["*.lan"], "FTP.Lan.")  # case and a final dot do not matter
    assert not allowed(["*.lan"], "ftp.lan.evil.com")
    assert not allowed(["*"], "10.0.0.5")  # an address is not a name
    assert not allowed(["10.0.0.0/8"], "ftp.lan")  # a name is not checked against networks


@pytest.mark.parametrize("host", ["10.1", "0x0a000001", "167772161", "012.0.0.1"])
def test_addresses_in_inet_aton_forms_are_refused(host):
    """Written so, the SSH server's resolver reads an address a name rule would pass."""
    with pytest.raises(LoginRefused):
        allowed(["*"], host)


@pytest.mark.parametrize("pattern", ["", "10.0.0.5:x", "10.0.0.5:0", "10.0.0.5:30-20",
                                     "a b", "[::1", "host/24", "10.0.0.5:70000"])
def test_bad_rules_are_config_errors(pattern):
    with pytest.raises(ConfigError):
        parse_destination_rule(pattern)


def test_config_checks_rules_and_proxy_settings():
    ssh = SSHOptions(host="sshhost")
    proxy = ForwardSpec(ftp_host="", proxy=True)
    with pytest.raises(ConfigError, match="allow-destination"):
        Config(ssh=ssh, forwards=(proxy,), allowed_destinations=("a b",))
    with pytest.raises(ConfigError, match="auth-tls refuse"):
        Config(ssh=ssh, forwards=(proxy,), auth_tls="passthrough")
    with pytest.raises(ConfigError, match="local"):
        ForwardSpec(ftp_host="", proxy=True, direction="remote")
    Config(ssh=ssh, forwards=(proxy,))  # no rule: valid, refuses every destination


def test_proxy_user_forms():
    assert split_proxy_user(b"alice@10.0.0.5:2121") == (b"alice", "10.0.0.5", 2121)
    assert split_proxy_user(b"alice@ftp.lan") == (b"alice", "ftp.lan", 21)
    assert split_proxy_user(b"me@mail.example@ftp.lan") == (b"me@mail.example", "ftp.lan", 21)
    assert split_proxy_user(b"bob@[2001:db8::1]:21") == (b"bob", "2001:db8::1", 21)
    assert split_proxy_user(b"bob@2001:db8::1") == (b"bob", "2001:db8::1", 21)
    assert split_proxy_user(b"alice") is None
    for bad in (b"@10.0.0.5", b"a\x01b@10.0.0.5", b"a\xffb@10.0.0.5", b"x" * 257 + b"@h",
                b"alice@10.0.0.5:0", b"alice@10.0.0.5:x", b"alice@", b"alice@h%eth0",
                b"alice@[::1"):
        with pytest.raises(LoginRefused):
            split_proxy_user(bad)


class RecordingTunnel(FakeTunnel):
    """A FakeTunnel that records every control channel asked of SSH."""

    def __init__(self, server_end=None) -> None:
        super().__init__(server_end)
        self.opened: list[tuple[str, int]] = []

    async def open_stream(self, host, port, originator=("", 0)):
        self.opened.append((host, port))
        return await super().open_stream(host, port, originator)


def proxy_session(client_end, tunnel, allow=("10.0.0.5:2121",), stats=None) -> Session:
    spec = ForwardSpec(ftp_host="", proxy=True)
    config = Config(ssh=SSHOptions(host="sshhost"), forwards=(spec,),
                    allowed_destinations=tuple(allow))
    return Session(client_end, spec, config, tunnel, stats or TransferStats(),
                   peer=("127.0.0.1", 40000))




async def test_proxy_login_becomes_a_session_to_the_destination():
    """ftptrio greets, reads USER user@host:port (and the pipelined PASS), opens the
    control channel to that host, keeps the server's greeting from the client, sends
    USER user, and from then on relays as a -L session does."""
    client, session_client = trio.testing.memory_stream_pair()
    session_server, server = trio.testing.memory_stream_pair()
    tunnel = RecordingTunnel(session_server)
    session = proxy_session(session_client, tunnel)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        greeting = await receive_until(client, b"\r\n")
        assert greeting.startswith(b"220 ftptrio FTP proxy")
        await client.send_all(b"USER alice@10.0.0.5:2121\r\nPASS secret\r\n")
        await server.send_all(b"220-welcome\r\n230 not the end\r\n220 ready\r\n")
        assert await receive_until(server, b"PASS secret\r\n") == (
            b"USER alice\r\nPASS secret\r\n")
        assert tunnel.opened == [("10.0.0.5", 2121)]
        await server.send_all(b"331 password\r\n230 logged in\r\n")
        assert await receive_until(client, b"230 logged in\r\n") == (
            b"331 password\r\n230 logged in\r\n")  # no second greeting
        assert session.forward.ftp_host == "10.0.0.5" and not session.forward.proxy
        await client.send_all(b"QUIT\r\n")
        assert await receive_until(server, b"QUIT\r\n") == b"QUIT\r\n"
        await server.send_all(b"221 bye\r\n")
        await server.send_eof()
        assert await receive_until(client, b"221 bye\r\n") == b"221 bye\r\n"


@pytest.mark.parametrize("open_line, destination", [
    (b"OPEN 10.0.0.5:2121\r\n", ("10.0.0.5", 2121)),
    (b"OPEN 10.0.0.5 2121\r\n", ("10.0.0.5", 2121)),  # ftp(1)'s "open host port"
    (b"OPEN fd00::5 2121\r\n", ("fd00::5", 2121)),
])
async def test_open_then_user_names_the_destination_first(
        open_line: bytes, destination: tuple[str, int]) -> None:
    client, session_client = trio.testing.memory_stream_pair()
    session_server, server = trio.testing.memory_stream_pair()
    tunnel = RecordingTunnel(session_server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy_session(session_client, tunnel,
                                         allow=("10.0.0.5:2121", "[fd00::5]:2121")).run)
        await receive_until(client, b"\r\n")
        await client.send_all(open_line)
        assert (await receive_until(client, b"\r\n")).startswith(b"200 ")
        assert tunnel.opened == []
        await client.send_all(b"USER bob\r\n")
        await server.send_all(b"220 ready\r\n")
        assert await receive_until(server, b"\r\n") == b"USER bob\r\n"
        assert tunnel.opened == [destination]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("login, allow", [
    (b"USER alice@10.0.0.6:2121\r\n", ("10.0.0.5:2121",)),  # not allowed
    (b"USER alice@10.0.0.5:2121\r\n", ()),  # default deny
    (b"SITE 10.0.0.6\r\n", ("10.0.0.5",)),
    (b"USER a\x01b@10.0.0.5:2121\r\n", ("10.0.0.5:2121",)),  # control character
    (b"USER " + b"x" * 300 + b"@10.0.0.5:2121\r\n", ("10.0.0.5:2121",)),
    (b"USER alice\r\n", ("10.0.0.5:2121",)),  # no destination
    (b"USER alice@10.0.0.5:21\xff\xf4\r\n", ("10.0.0.5:2121",)),
])
async def test_refused_logins_get_530_and_open_nothing(login, allow, caplog):
    client, session_client = trio.testing.memory_stream_pair()
    tunnel = RecordingTunnel()
    stats = TransferStats()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy_session(session_client, tunnel, allow, stats).run)
        await receive_until(client, b"\r\n")
        await client.send_all(login)
        reply = await receive_until(client, b"\r\n")
        assert reply.startswith(b"530 ftptrio: "), reply
        await client.send_all(b"QUIT\r\n")
        assert await receive_until(client, b"\r\n") == b"221 Goodbye.\r\n"
        with trio.fail_after(5):
            assert await client.receive_some(10) == b""
    assert tunnel.opened == []
    refusals = [r for r in caplog.records if "proxy login from" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]  # one log line
    assert stats.policy_denied == {"destination": 1}
    assert stats.sessions_refused == {"destination": 1}


async def test_commands_before_login_are_answered_locally_and_bounded():
    client, session_client = trio.testing.memory_stream_pair()
    tunnel = RecordingTunnel()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy_session(session_client, tunnel).run)
        await receive_until(client, b"\r\n")
        await client.send_all(b"FEAT\r\nPASS x\r\n" + b"NOOP\r\n" * 20)
        data = b""
        with trio.fail_after(5):
            while chunk := await client.receive_some(65536):
                data += chunk
    lines = data.split(b"\r\n")
    assert lines[0].startswith(b"530 ") and lines[1].startswith(b"503 ")
    assert lines[-2].startswith(b"421 ")  # MAX_LOGIN_COMMANDS, then closed
    assert tunnel.opened == []


async def test_server_that_does_not_greet_gets_the_client_a_421():
    client, session_client = trio.testing.memory_stream_pair()
    session_server, server = trio.testing.memory_stream_pair()
    tunnel = RecordingTunnel(session_server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy_session(session_client, tunnel).run)
        await receive_until(client, b"\r\n")
        await client.send_all(b"USER alice@10.0.0.5:2121\r\n")
        await server.send_all(b"421 too many users\r\n")
        reply = await receive_until(client, b"\r\n")
        assert reply.startswith(b"421 ftptrio: ") and b"too many users" in reply


def test_command_line_and_toml_give_proxy_listeners_and_rules(tmp_path):
    from ftptrio._configfile import load_config
    from ftptrio._options import build_parser, config_from_args

    args = build_parser().parse_args(["--ftp-proxy", "2100", "--ftp-proxy", "[::1]:2101",
                                      "--allow-destination", "10.0.0.0/24:2121",
                                      "--allow-destination", "*.lan", "-g", "sshhost"])
    config = config_from_args(args)
    assert [(f.proxy, f.listen_host, f.listen_port) for f in config.forwards] == [
        (True, "0.0.0.0", 2100), (True, "::1", 2101)]
    assert config.allowed_destinations == ("10.0.0.0/24:2121", "*.lan")
    path = tmp_path / "gw.toml"
    path.write_text('host = "sshhost"\nftp_proxy = "127.0.0.1:2100"\n'
                    'allow_destination = ["10.0.0.5"]\n'
                    '[[tunnel]]\nftp_proxy = "2102"\n')
    config, _args = load_config(str(path))
    assert [(f.proxy, f.listen_port) for f in config.forwards] == [(True, 2102), (True, 2100)]
    assert config.allowed_destinations == ("10.0.0.5",)
    path.write_text('host = "sshhost"\n[[tunnel]]\nftp_proxy = "2102"\nlocal = "1:h:21"\n')
    with pytest.raises(ConfigError, match="exactly one of"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="allow-destination"):
        config_from_args(build_parser().parse_args(
            ["--ftp-proxy", "2100", "--allow-destination", "10.0.0.5:x", "sshhost"]))


def test_client_rules():
    from ftptrio._access import client_allowed

    assert client_allowed("192.0.2.7", ())  # no rule: every client
    assert client_allowed("192.0.2.7", ("192.0.2.0/24",))
    assert client_allowed("::ffff:192.0.2.7", ("192.0.2.7",))
    assert not client_allowed("192.0.3.7", ("192.0.2.0/24", "2001:db8::/32"))
    assert client_allowed("2001:db8::9", ("192.0.2.0/24", "2001:db8::/32"))
    with pytest.raises(ConfigError, match="allow-client"):
        Config(ssh=SSHOptions(host="h"), forwards=(ForwardSpec(ftp_host="f"),),
               allowed_clients=("not-an-address",))


@pytest.mark.parametrize("line", [
    b"STOR x\r\n", b"stor x\r\n", b"ST\xff\xf4OR x\r\n", b"APPE x\r\n", b"STOU\r\n",
    b"DELE x\r\n", b"RNFR x\r\n", b"RNTO y\r\n", b"MKD d\r\n", b"XMKD d\r\n", b"RMD d\r\n",
    b"XRMD d\r\n", b"SITE CHMOD 777 x\r\n", b"Si\xff\xf1te UTIME x\r\n", b"MFMT 2020 x\r\n",
    # MDTM with a time first sets the file's time (vsftpd mdtm_write, Pure-FTPd)
    b"MDTM 20200101000000 x\r\n", b"mdtm 20200101000000.5 x\r\n",
    b"MDTM  20200101000000+60 x\r\n"])
def test_read_only_refuses_writes_locally(line):
    """Each command that changes files gets 550 from ftptrio and the server never sees
    it, however it is spelled (case, Telnet sequences inside the verb)."""
    from ftptrio._control import ControlChannel

    denied: list[str] = []
    control = ControlChannel(client_host="127.0.0.1", read_only=True, denied=denied.append)
    control.receive_server(b"220 hi\r\n")
    control.receive_client(line + b"RETR y\r\n")
    assert list(control.to_server)[:-1] == []  # only the RETR (a transfer event) went
    assert "RETR y" in repr(list(control.to_server)[-1])
    replies = b"".join(item for item in control.to_client if isinstance(item, bytes))
    assert replies.startswith(b"220 hi\r\n550 ftptrio: read-only access;"), replies
    assert denied == ["read_only"]


def test_read_only_leaves_reads_alone_and_is_per_forward():
    from ftptrio._control import ControlChannel

    control = ControlChannel(client_host="127.0.0.1", read_only=True)
    control.receive_server(b"220 hi\r\n")
    control.receive_client(b"CWD a\r\nSIZE x\r\nMDTM x\r\nMDTM 20200101000000\r\nTYPE I\r\n"
                           b"REST 5\r\n")
    assert b"".join(i for i in control.to_server if isinstance(i, bytes)) == (
        b"CWD a\r\nSIZE x\r\nMDTM x\r\nMDTM 20200101000000\r\nTYPE I\r\nREST 5\r\n")
    config = Config(ssh=SSHOptions(host="h"), forwards=(
        ForwardSpec(ftp_host="a"), ForwardSpec(ftp_host="b", read_only=False)),
        read_only=True)
    assert [f.effective(config).read_only for f in config.forwards] == [True, False]


def test_metrics_option_and_exposition():
    """--metrics [bind:]port (loopback by default), and the collector's families as
    prometheus_client's own parser reads them."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from ftptrio._metrics import Snapshot, _Collector
    from ftptrio._options import build_parser, config_from_args

    def metrics_of(*words):
        return config_from_args(build_parser().parse_args(
            ["--ftp-proxy", "2100", *words, "sshhost"])).metrics_listen

    assert metrics_of("--metrics", "9464") == ("127.0.0.1", 9464)
    assert metrics_of("--metrics", "10.0.0.1:9464") == ("10.0.0.1", 9464)
    assert metrics_of("--metrics", "[::1]:9464") == ("::1", 9464)
    assert metrics_of() is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--metrics", "x:y", "h"])
    with pytest.raises(ConfigError):
        config_from_args(build_parser().parse_args(["--metrics", "nohost:1", "-L",
                                                    "1:h:21", "h"]))
    snapshot = Snapshot(
        version="9.9", implementation="python", ssh_up=True, ssh_reconnects=2,
        sessions_active=1, sessions={"proxy 127.0.0.1:2100": 4},
        sessions_refused={"client": 1}, transfers={("download", "passive", "ok"): 3},
        bytes_to_server=5, bytes_to_client=6,
        duration_buckets=[(0.5, 1), (1.0, 2), (float("inf"), 3)], duration_sum=4.5,
        channel_open_failures={"connect_failed": 1}, policy_denied={"read_only": 7})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(lambda: snapshot))
    text = generate_latest(registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("ftptrio_build_info", (("implementation", "python"),
                                           ("version", "9.9")))] == 1
    assert samples[("ftptrio_ssh_reconnects_total", ())] == 2
    assert samples[("ftptrio_sessions_total", (("forward", "proxy 127.0.0.1:2100"),))] == 4
    assert samples[("ftptrio_transfers_total", (("direction", "download"),
                                                ("mode", "passive"), ("result", "ok")))] == 3
    assert samples[("ftptrio_transfer_duration_seconds_bucket", (("le", "1.0"),))] == 2
    assert samples[("ftptrio_transfer_duration_seconds_sum", ())] == 4.5
    assert samples[("ftptrio_channel_open_failures_total",
                    (("reason", "connect_failed"),))] == 1
    assert samples[("ftptrio_policy_denied_total", (("rule", "read_only"),))] == 7
    assert "# TYPE ftptrio_transfer_duration_seconds histogram" in text


def test_duration_histogram_counts():
    stats = TransferStats()
    for seconds, result in ((0.01, "ok"), (3.0, "error (x)"), (7200.0, "ok"), (1.0, "refused")):
        stats.transfer_accounted({"direction": "upload", "mode": "active", "result": result,
                                  "seconds": seconds})
    buckets = dict(stats.duration_histogram())
    assert buckets[0.05] == 1 and buckets[5.0] == 2 and buckets[float("inf")] == 3
    assert stats.duration_sum == 7203.01
    assert stats.by_outcome == {("upload", "active", "ok"): 2, ("upload", "active", "error"): 1,
                                ("upload", "active", "refused"): 1}


@pytest.mark.parametrize("policy", ["passthrough", "implicit"])
def test_read_only_with_tls_passed_through_is_a_config_error(policy):
    """A TLS control channel is opaque to ftptrio, so --read-only could not see its
    STOR: the combination is refused rather than silently not enforced."""
    ssh = SSHOptions(host="h")
    ports = (30000, 30009) if policy == "implicit" else None
    with pytest.raises(ConfigError, match="read-only"):
        Config(ssh=ssh, forwards=(ForwardSpec(ftp_host="f"),), read_only=True,
               auth_tls=policy, passive_ports=ports)
    with pytest.raises(ConfigError, match="read-only"):
        Config(ssh=ssh, forwards=(ForwardSpec(ftp_host="f", read_only=True,
                                              auth_tls=policy, passive_ports=ports),))
    Config(ssh=ssh, forwards=(ForwardSpec(ftp_host="f", read_only=False, auth_tls=policy,
                                          passive_ports=ports),), read_only=True)


async def test_slow_metrics_client_neither_starves_scrapes_nor_stalls_shutdown(monkeypatch):
    """A client trickling a request one byte at a time (each within the socket timeout)
    is cut after REQUEST_DEADLINE: scrapes behind it are answered, and close() does
    not wait for it."""
    import socket
    import threading
    import time
    import urllib.request

    from ftptrio import _metrics

    monkeypatch.setattr(_metrics, "REQUEST_DEADLINE", 1.0, raising=False)
    snapshot = _metrics.Snapshot(
        version="9.9", implementation="python", ssh_up=True, ssh_reconnects=0,
        sessions_active=0, sessions={}, sessions_refused={}, transfers={},
        bytes_to_server=0, bytes_to_client=0, duration_buckets=[(float("inf"), 0)],
        duration_sum=0.0, channel_open_failures={}, policy_denied={})
    server = _metrics.MetricsServer("127.0.0.1", 0, lambda: snapshot)
    stop = threading.Event()

    def trickle() -> None:
        with socket.create_connection(server.address) as slow:
            try:
                while not stop.wait(0.2):
                    slow.sendall(b"G")
            except OSError:
                pass

    def scrape() -> bytes:
        url = "http://%s:%d/metrics" % server.address
        with urllib.request.urlopen(url, timeout=4) as response:
            body: bytes = response.read()
            return body

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        await trio.sleep(0.3)
        assert b"ftptrio_build_info" in await trio.to_thread.run_sync(scrape)
        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        await trio.sleep(0.3)
        started = time.monotonic()
        await server.aclose()
        assert time.monotonic() - started < 0.8
    finally:
        stop.set()
        trickler.join()
        await server.aclose()  # again: a no-op once closed


def test_ipv4_mapped_rules_match_the_ipv4_addresses_they_name():
    """Addresses are compared IPv4-mapped aware, so a rule written in the mapped form
    (``::ffff:192.0.2.0/120``) names the same clients and servers as its IPv4 twin."""
    from ftptrio._access import client_allowed

    for client in ("192.0.2.7", "::ffff:192.0.2.7"):
        assert client_allowed(client, ("::ffff:192.0.2.0/120",))
        assert not client_allowed(client, ("::ffff:192.0.3.0/120",))
    rules = parse_destination_rules(["::ffff:10.0.0.0/120", "[::ffff:10.0.1.1]:2121"])
    assert destination_allowed(rules, normal_host("::ffff:10.0.0.5"), 21)
    assert destination_allowed(rules, normal_host("10.0.1.1"), 2121)
    assert not destination_allowed(rules, normal_host("10.0.2.1"), 21)


async def test_writes_pipelined_with_the_proxy_login_are_refused_on_a_read_only_gateway():
    """STOR sent in the same packet as USER user@host (and Telnet-split) is read by
    the session's control channel, not passed on with the login."""
    client, session_client = trio.testing.memory_stream_pair()
    session_server, server = trio.testing.memory_stream_pair()
    tunnel = RecordingTunnel(session_server)
    spec = ForwardSpec(ftp_host="", proxy=True, read_only=True)
    config = Config(ssh=SSHOptions(host="sshhost"), forwards=(spec,),
                    allowed_destinations=("10.0.0.5:2121",))
    session = Session(session_client, spec, config, tunnel, TransferStats(),
                      peer=("127.0.0.1", 40000))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await receive_until(client, b"\r\n")
        await client.send_all(b"USER alice@10.0.0.5:2121\r\nPASS s\r\nSTOR f\r\n"
                              b"ST\xff\xf1OR g\r\nNOOP\r\n")
        await server.send_all(b"220 ready\r\n")
        assert await receive_until(server, b"NOOP\r\n") == (
            b"USER alice\r\nPASS s\r\nNOOP\r\n")
        await server.send_all(b"331 password\r\n230 logged in\r\n200 ok\r\n")
        replies = await receive_until(client, b"200 ok\r\n")
        assert replies.count(b"550 ftptrio: read-only access") == 2, replies
        nursery.cancel_scope.cancel()
