"""Unit tests of the command line (``ftptrio._cli``): -L parsing, option precedence,
exit codes and error messages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ftptrio
from ftptrio import _cli
from ftptrio._cli import build_parser, main
from ftptrio._options import config_from_args, parse_forward
from ftptrio._config import Config, ForwardSpec
from ftptrio._errors import BadDataAddress, ConfigError, LineTooLong, ProtocolError
from ftptrio.testing.servers import free_port


# main() configures logging: undo it after each test (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("restore_logging")


def config(*argv: str) -> Config:
    return config_from_args(build_parser().parse_args(list(argv)))


# ---------------------------------------------------------------- parse_forward

@pytest.mark.parametrize("spec, expected", [
    ("2121:localhost:21", ForwardSpec("localhost", 21, "127.0.0.1", 2121)),
    ("0:ftp.internal:2121", ForwardSpec("ftp.internal", 2121, "127.0.0.1", 0)),
    ("192.0.2.7:2121:ftp.internal:21", ForwardSpec("ftp.internal", 21, "192.0.2.7", 2121)),
    ("ftp/2121:localhost:21", ForwardSpec("localhost", 21, "127.0.0.1", 2121)),
    ("FTP/10.0.0.1:2121:localhost:21", ForwardSpec("localhost", 21, "10.0.0.1", 2121)),
    ("[::1]:2121:localhost:21", ForwardSpec("localhost", 21, "::1", 2121)),
    ("ftp/[::1]:2121:[2001:db8::5]:21", ForwardSpec("2001:db8::5", 21, "::1", 2121)),
    ("2121:[::1]:21", ForwardSpec("::1", 21, "127.0.0.1", 2121)),
    ("*:2121:localhost:21", ForwardSpec("localhost", 21, "0.0.0.0", 2121)),
    ("localhost:2121:ftp:21", ForwardSpec("ftp", 21, "127.0.0.1", 2121)),
])
def test_parse_forward(spec, expected):
    assert parse_forward(spec) == expected


@pytest.mark.parametrize("spec", [
    "", "2121", "2121:localhost", "ftp/2121:localhost", "1:2:3:4:5",
    "abc:localhost:21", "2121:localhost:abc", "2121:localhost:0", "2121:localhost:70000",
    "70000:localhost:21", "-1:localhost:21", "2121::21", "2121:[]:21", "2121:localhost:",
])
def test_parse_forward_rejects_bad_specs(spec):
    with pytest.raises(ConfigError):
        parse_forward(spec)


# ---------------------------------------------------------------- config_from_args

def test_defaults():
    cfg = config("-L", "2121:localhost:21", "gw.example.net")
    assert cfg.forwards == (ForwardSpec("localhost", 21, "127.0.0.1", 2121),)
    assert cfg.ssh.host == "gw.example.net"
    assert cfg.ssh.port is None
    assert cfg.ssh.username is None
    assert cfg.ssh.client_keys is None
    assert cfg.ssh.known_hosts is None
    assert cfg.ssh.strict_host_key_checking == "yes"
    assert cfg.data_bind_host == "127.0.0.1"
    assert cfg.active_mode == "remote-forward"
    assert cfg.auth_tls == "refuse"


def test_several_forwards():
    cfg = config("-L", "2121:a:21", "-L", "ftp/[::1]:2122:b:2121", "gw")
    assert cfg.forwards == (ForwardSpec("a", 21, "127.0.0.1", 2121),
                            ForwardSpec("b", 2121, "::1", 2122))


def test_user_from_destination():
    cfg = config("-L", "2121:localhost:21", "alice@gw")
    assert (cfg.ssh.username, cfg.ssh.host) == ("alice", "gw")


def test_user_with_at_sign_splits_on_last_at():
    cfg = config("-L", "2121:localhost:21", "alice@corp@gw")
    assert (cfg.ssh.username, cfg.ssh.host) == ("alice@corp", "gw")


def test_dash_l_wins_over_destination_user():
    cfg = config("-L", "2121:localhost:21", "-l", "bob", "alice@gw")
    assert cfg.ssh.username == "bob"
    assert config("-L", "2121:localhost:21", "alice@gw", "-l", "bob").ssh.username == "bob"


def test_user_option():
    assert config("-L", "2121:h:21", "-o", "User=carol", "gw").ssh.username == "carol"
    assert config("-L", "2121:h:21", "-o", "user=carol", "gw").ssh.username == "carol"
    assert config("-L", "2121:h:21", "-l", "bob", "-o", "User=carol", "gw").ssh.username == "bob"


def test_port():
    assert config("-L", "2121:h:21", "-p", "2222", "gw").ssh.port == 2222
    assert config("-L", "2121:h:21", "-o", "Port=2200", "gw").ssh.port == 2200
    assert config("-L", "2121:h:21", "-o", "Port 2201", "gw").ssh.port == 2201


def test_dash_p_wins_over_port_option():
    assert config("-L", "2121:h:21", "-p", "2222", "-o", "Port=2200", "gw").ssh.port == 2222
    assert config("-L", "2121:h:21", "-o", "Port=2200", "-p", "2222", "gw").ssh.port == 2222


def test_first_option_value_wins_as_in_ssh():
    assert config("-L", "2121:h:21", "-o", "Port=2200", "-o", "Port=2300", "gw").ssh.port == 2200


def test_identity_files():
    assert config("-L", "2121:h:21", "-i", "k1", "gw").ssh.client_keys == ("k1",)
    assert config("-L", "2121:h:21", "-i", "k1", "-i", "k2", "gw").ssh.client_keys == \
        ("k1", "k2")
    assert config("-L", "2121:h:21", "-o", "IdentityFile=k3", "gw").ssh.client_keys == ("k3",)
    assert config("-L", "2121:h:21", "-i", "k1", "-o", "IdentityFile=k3",
                  "gw").ssh.client_keys == ("k1",)


def test_known_hosts_options():
    cfg = config("-L", "2121:h:21", "-o", "UserKnownHostsFile=/tmp/kh", "gw")
    assert cfg.ssh.known_hosts == "/tmp/kh"
    cfg = config("-L", "2121:h:21", "-o", "StrictHostKeyChecking=accept-new", "gw")
    assert cfg.ssh.strict_host_key_checking == "accept-new"
    cfg = config("-L", "2121:h:21", "-o", "StrictHostKeyChecking=no", "gw")
    assert cfg.ssh.strict_host_key_checking == "no"
    cfg = config("-L", "2121:h:21", "-o", "stricthostkeychecking=Yes", "gw")
    assert cfg.ssh.strict_host_key_checking == "yes"


def test_other_ssh_options():
    cfg = config("-L", "2121:h:21", "-o", "ConnectTimeout=3", "-o", "ServerAliveInterval=5",
                 "-o", "ServerAliveCountMax=2", "-o", "Ciphers=aes128-ctr,aes256-ctr",
                 "-F", "/tmp/ssh_config", "gw")
    assert cfg.ssh.connect_timeout == 3
    assert cfg.ssh.keepalive_interval == 5
    assert cfg.ssh.keepalive_count_max == 2
    assert cfg.ssh.ciphers == ("aes128-ctr", "aes256-ctr")
    assert cfg.ssh.config_files == ("/tmp/ssh_config",)


@pytest.mark.parametrize("argv", [
    ["-L", "2121:h:21", "-o", "Compression=maybe", "gw"],
    ["-L", "2121:h:21", "-o", "BatchMode=1", "gw"],
    ["-L", "2121:h:21", "-o", "PasswordAuthentication=perhaps", "gw"],
    ["-L", "2121:h:21", "-o", "LogLevel=LOUD", "gw"],
    ["-L", "2121:h:21", "-o", "AddressFamily=inet5", "gw"],
    ["-L", "2121:h:21", "-o", "ForwardX11=yes", "gw"],  # unsupported
    ["-L", "2121:h:21", "-o", "StrictHostKeyChecking=maybe", "gw"],
    ["-L", "2121:h:21", "-o", "ConnectTimeout=soon", "gw"],
    ["-L", "2121:h:21", "-o", "ServerAliveInterval=-1", "gw"],
    ["-L", "2121:h:21", "-o", "Port=abc", "gw"],
    ["-L", "2121:h:21", "-o", "Port=70000", "gw"],
    ["-L", "2121:h:21", "-p", "0", "gw"],
    ["-L", "2121:h:21", "alice@", ],  # empty host
    ["-L", "nonsense", "gw"],
    ["gw"],  # no -L
    ["-L", "2121:h:21"],  # no destination
])
def test_bad_options_raise_config_error(argv):
    with pytest.raises(ConfigError):
        config(*argv)


def test_ssh_defaults_are_left_to_ssh_config():
    """Unset here, the keepalive and timeout options come from ssh_config, then
    from the built-in defaults (resolved at connect time)."""
    cfg = config("-L", "2121:h:21", "gw")
    assert cfg.ssh.keepalive_interval is None
    assert cfg.ssh.keepalive_count_max is None
    assert cfg.ssh.connect_timeout is None
    assert cfg.ssh.effective_connect_timeout == 15
    assert cfg.ssh.password_auth is cfg.ssh.kbdint_auth is cfg.ssh.pubkey_auth is None
    assert cfg.ssh.batch_mode is False and cfg.ssh.compression is None


def test_ssh_auth_and_connection_options():
    cfg = config("-L", "2121:h:21", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                 "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=yes",
                 "-o", "PubkeyAuthentication=no",
                 "-o", "PreferredAuthentications=keyboard-interactive,password",
                 "-o", "Compression=yes", "-o", "ExitOnForwardFailure=yes",
                 "-o", "LogLevel=DEBUG2", "-o", "AddressFamily=inet6", "gw")
    ssh = cfg.ssh
    assert ssh.batch_mode is True and ssh.identities_only is True
    assert ssh.password_auth is False and ssh.kbdint_auth is True and ssh.pubkey_auth is False
    assert ssh.preferred_auth == ("keyboard-interactive", "password")
    assert ssh.compression is True and ssh.address_family == "inet6"


@pytest.mark.parametrize("flags, family", [(["-4"], "inet"), (["-6"], "inet6"),
                                           (["-6", "-4"], "inet"), ([], None)])
def test_address_family_flags(flags, family):
    assert config("-L", "2121:h:21", *flags, "gw").ssh.address_family == family
    # -4/-6 win over -o AddressFamily
    if flags:
        assert config("-L", "2121:h:21", *flags, "-o", "AddressFamily=any",
                      "gw").ssh.address_family == family


def test_ssh_compatible_flags_are_accepted():
    args = build_parser().parse_args(["-f", "-C", "-T", "-N", "-E", "/tmp/x.log", "-L",
                                      "2121:h:21", "gw"])
    assert args.background and args.compression and args.log_file == "/tmp/x.log"
    assert config("-C", "-T", "-L", "2121:h:21", "gw").ssh.compression is True


@pytest.mark.parametrize("argv, expected", [
    ([], (0, False)), (["-v"], (1, False)), (["-vv"], (2, False)), (["-vvv"], (3, False)),
    (["-q"], (0, True)), (["-o", "LogLevel=DEBUG2"], (2, False)),
    (["-o", "LogLevel=QUIET"], (0, True)), (["-o", "LogLevel=VERBOSE"], (1, False)),
    (["-v", "-o", "LogLevel=QUIET"], (1, False)),  # the command line's -v wins
])
def test_log_verbosity(argv, expected):
    from ftptrio._options import log_verbosity

    assert log_verbosity(build_parser().parse_args([*argv, "gw"])) == expected


def test_gateway_option():
    assert config("-L", "2121:h:21", "-g", "gw").data_bind_host == "0.0.0.0"


def test_active_mode_and_auth_tls():
    cfg = config("-L", "2121:h:21", "--active-mode", "passive", "gw")
    assert cfg.active_mode == "passive"
    cfg = config("-L", "2121:h:21", "--auth-tls", "passthrough", "gw")
    assert cfg.auth_tls == "passthrough"


def test_bad_choice_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["-L", "2121:h:21", "--active-mode", "sideways", "gw"])
    assert info.value.code == 2


# ---------------------------------------------------------------- main()

def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_main_missing_forward(capsys):
    assert main(["gw.example.net"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert line.startswith("ftptrio: ") and "-L" in line


def test_main_missing_destination(capsys):
    assert main(["-L", "2121:localhost:21"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("ftptrio: ") and "destination" in line


@pytest.mark.parametrize("argv", [
    ["-L", "2121:h:21", "-o", "RemoteForward=1:h:2", "gw"],
    ["-L", "2121:h:21", "-o", "Port=abc", "gw"],
    ["-L", "bad", "gw"],
])
def test_main_bad_option_is_one_line_and_exit_2(capsys, argv):
    assert main(argv) == 2
    assert one_line(capsys.readouterr().err).startswith("ftptrio: ")


def test_main_version(capsys):
    assert main(["--version"]) == 0
    out, err = capsys.readouterr()
    line = one_line(out)
    assert ftptrio.__version__ in line
    assert ftptrio.IMPLEMENTATION in line
    assert err == ""


def test_help_in_subprocess():
    proc = subprocess.run([sys.executable, "-m", "ftptrio", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "-L" in proc.stdout
    assert proc.stderr == ""


def test_main_ssh_connection_refused(capsys):
    port = free_port()  # closed again: nothing listens there
    code = main(["-L", "0:127.0.0.1:21", "-p", str(port), "-o", "ConnectTimeout=3",
                 "127.0.0.1"])
    out, err = capsys.readouterr()
    assert code == 3, err
    line = one_line(err)
    assert line.startswith("ftptrio: ")
    assert str(port) in line


# ---------------------------------------------------------------- exit codes by class

@pytest.mark.parametrize("error, code", [
    (ftptrio.ConfigError("bad"), 2),
    (ftptrio.TunnelError("SSH down"), 3),
    (ftptrio.HostKeyError("host key changed", changed=True), 3),
    (ftptrio.AuthenticationError("Permission denied (publickey)."), 3),
    (ftptrio.ConnectTimeout("timed out after 1 s (ConnectTimeout)"), 3),
    (ftptrio.ChannelRefused("administratively prohibited", code=1), 3),
    (ftptrio.RemoteForwardRefused("SSH server refused remote forward"), 3),
    (ftptrio.SFTPUnavailable("the SSH server has no SFTP"), 3),
    (ftptrio.BindError(98, "cannot listen on 127.0.0.1:21: Address already in use"), 4),
    (ftptrio.FtptrioError("other"), 1),
    (LineTooLong("long"), 1),  # an internal FtptrioError, had one escaped
])
def test_main_exit_code_by_error_class(monkeypatch, capsys, error, code):
    async def failing_run(config, grace, stats_out, background=None, pid_file=None):
        raise error

    monkeypatch.setattr(_cli, "_run", failing_run)
    assert main(["-L", "2121:h:21", "gw"]) == code
    assert one_line(capsys.readouterr().err) == f"ftptrio: {error}"


@pytest.mark.parametrize("kind", ["HostKeyError", "AuthenticationError", "ConnectTimeout",
                                  "ChannelRefused", "RemoteForwardRefused",
                                  "SFTPUnavailable"])
def test_tunnel_error_kinds_are_exported_tunnel_errors(kind):
    assert kind in ftptrio.__all__
    assert issubclass(getattr(ftptrio, kind), ftptrio.TunnelError)


def test_tunnel_error_kinds_keep_their_attributes_when_copied():
    """Pickled (a process pool) or copied, an error keeps what callers branch on."""
    import copy
    import pickle

    refused = ftptrio.ChannelRefused("refused", code=1, reason="open failed")
    host_key = ftptrio.HostKeyError("changed", changed=True, fingerprint="SHA256:x")
    for again in (copy.copy(refused), pickle.loads(pickle.dumps(refused))):
        assert (type(again), str(again), again.code, again.reason) == (
            ftptrio.ChannelRefused, "refused", 1, "open failed")
    for again in (copy.copy(host_key), pickle.loads(pickle.dumps(host_key))):
        assert (str(again), again.changed, again.fingerprint) == ("changed", True, "SHA256:x")


def test_main_unexpected_os_error_is_one_line_exit_1(monkeypatch, capsys):
    async def failing_run(config, grace, stats_out, background=None, pid_file=None):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(_cli, "_run", failing_run)
    assert main(["-L", "2121:h:21", "gw"]) == 1
    assert one_line(capsys.readouterr().err) == "ftptrio: [Errno 24] Too many open files"


def test_main_bad_jump_host_is_a_usage_error(capsys):
    assert main(["-L", "2121:h:21", "-J", "jump:abc", "gw"]) == 2
    assert "bad jump host" in one_line(capsys.readouterr().err)


def test_bind_error_is_an_os_error_with_errno():
    exc = ftptrio.BindError.of("::1", 2121, OSError(98, "Address already in use"))
    assert isinstance(exc, OSError) and isinstance(exc, ftptrio.FtptrioError)
    assert exc.errno == 98
    assert str(exc) == "cannot listen on [::1]:2121: Address already in use"


def test_line_too_long_has_lines():
    assert LineTooLong("long").lines == []
    assert LineTooLong("long", [b"a\n"]).lines == [b"a\n"]
    assert issubclass(LineTooLong, ProtocolError)
    assert issubclass(BadDataAddress, ProtocolError)


def test_only_errors_a_caller_can_meet_are_public():
    """The scanner's errors never reach a caller of serve() (the control channel
    handles them): ftptrio does not export them."""
    for name in ("ProtocolError", "LineTooLong", "BadDataAddress"):
        assert not hasattr(ftptrio, name) and name not in ftptrio.__all__
    for name in ("FtptrioError", "ConfigError", "TunnelError", "BindError"):
        assert name in ftptrio.__all__


def test_systemd_readiness_is_notified(tmp_path, monkeypatch):
    import socket

    from ftptrio._cli import notify_systemd_ready

    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notify_systemd_ready()
        assert receiver.recv(100).startswith(b"READY=1\n")
    monkeypatch.delenv("NOTIFY_SOCKET")
    notify_systemd_ready()  # no socket: nothing to do, no error


def test_systemd_unit_template_runs_ftptrio_as_a_notify_service(tmp_path):
    """contrib/ftptrio.service.in: its header says how to fill in @FTPTRIO@; filled in
    with this machine's ftptrio, systemd-analyze verify accepts it (where systemd is)."""
    import shutil
    from pathlib import Path

    template = (Path(__file__).resolve().parents[2] / "contrib" / "ftptrio.service.in")
    unit = template.read_text()
    assert "Type=notify" in unit and "BatchMode=yes" in unit
    assert "ExecStart=@FTPTRIO@ " in unit and "Restart=on-failure" in unit
    assert 'sed "s#@FTPTRIO@#$(command -v ftptrio)#"' in unit  # the header says how
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (no systemd on this machine)")
    script = shutil.which("ftptrio") or shutil.which("ftptrio", path=os.path.dirname(
        sys.executable))
    assert script, "the ftptrio script is not installed"
    filled = tmp_path / "ftptrio.service"
    filled.write_text(unit.replace("@FTPTRIO@", script))
    done = subprocess.run([analyze, "verify", str(filled)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ftptrio.service" not in done.stderr, done.stderr


def test_exit_on_forward_failure_and_ask_options():
    assert not config("-L", "2121:h:21", "gw").exit_on_forward_failure
    assert config("-L", "2121:h:21", "-o", "ExitOnForwardFailure=yes",
                  "gw").exit_on_forward_failure
    assert config("-L", "2121:h:21", "-o", "ExitOnForwardFailure=true",  # as ssh_config
                  "gw").exit_on_forward_failure
    with pytest.raises(ftptrio.ConfigError, match="ExitOnForwardFailure must be yes or no"):
        config("-L", "2121:h:21", "-o", "ExitOnForwardFailure=maybe", "gw")
    cfg = config("-L", "2121:h:21", "-o", "StrictHostKeyChecking=ask", "gw")
    assert cfg.ssh.strict_host_key_checking == "ask"  # asks on a terminal, not "yes"


@pytest.mark.parametrize("verbose, log_format, pattern", [
    (1, "text", r"^\d\d:\d\d:\d\d INFO    hello$"),
    (2, "text", r"^\d\d:\d\d:\d\d\.\d{3} INFO    hello$"),
    (0, "json", r'^\{"time": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", "level": "info"'),
])
def test_log_times_carry_milliseconds_from_vv_and_in_json(tmp_path, verbose, log_format,
                                                          pattern):
    """-vv is the trace of where a transfer's time goes: its text lines (and every JSON
    line) carry milliseconds. Run in a subprocess: setup_logging replaces the root
    logger's handlers."""
    import re

    log_file = tmp_path / "log"
    code = ("import logging; from ftptrio._cli import setup_logging; "
            f"setup_logging({verbose}, False, {log_format!r}, log_file={str(log_file)!r}); "
            "logging.getLogger('ftptrio.x').info('hello')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    line = log_file.read_text().strip()
    assert re.match(pattern, line), line


def test_sighup_reopens_the_xferlog_from_before_ready_until_exit(tmp_path, monkeypatch):
    """SIGHUP (logrotate) is caught from before ftptrio says "ready" (systemd, the pid
    file) until it exits: its default action would end the process."""
    import signal

    import trio

    from ftptrio import _cli, _server
    from ftptrio._config import Config, ForwardSpec, SSHOptions
    from ftptrio._stats import TransferStats

    class FakeForwarder:
        stats = TransferStats()
        addresses: list[tuple[str, int]] = []
        reopened = 0

        def reopen_logs(self) -> None:
            self.reopened += 1
            os.kill(os.getpid(), signal.SIGTERM)

        def stop_accepting(self) -> None:
            pass

        async def wait_idle(self) -> None:
            pass

    forwarder = FakeForwarder()

    async def fake_serve(config, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started(forwarder)
        await trio.sleep_forever()

    at_ready = []

    def ready() -> None:
        at_ready.append(signal.getsignal(signal.SIGHUP))
        if at_ready[0] not in (signal.SIG_DFL, None):
            os.kill(os.getpid(), signal.SIGHUP)  # reopen_logs() then stops it
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(_server, "serve", fake_serve)
    monkeypatch.setattr(_cli, "notify_systemd_ready", ready)
    config = Config(ssh=SSHOptions(host="h"), forwards=(ForwardSpec(ftp_host="f"),),
                    xferlog=str(tmp_path / "xferlog"))
    before = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)}
    try:
        trio.run(_cli._serve_until_signalled, config, 0.0, [], None, None)
        assert at_ready and at_ready[0] not in (signal.SIG_DFL, None)
        assert forwarder.reopened == 1
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # while closing down
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
