"""``ftptrio --config FILE``: a TOML file naming an SSH host and its tunnels.

Every key is the twin of a command-line option and goes through the same
parser and validation (the file is turned into command-line arguments);
per-tunnel keys override the global option for that tunnel only. Errors are
one line: ``FILE: key: what is wrong``.

Example::

    host = "alice@sshhost"          # [user@]host or an ssh_config Host alias
    identity = "~/.ssh/id_ed25519"
    options = { UserKnownHostsFile = "~/.ssh/known_hosts" }

    [[tunnel]]
    local = "2121:localhost:21"     # like -L
    active_mode = "passive"

    [[tunnel]]
    remote = "2121:ftp.lan:21"      # like -R
    reply_address = "10.0.0.1"

    [[tunnel]]
    ftp_proxy = "2100"              # like --ftp-proxy (with allow_destination = [...])

    [[tunnel]]
    sftp_server = "2122"            # like --sftp-server (with sftp_login = "ftp")
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the tomli dependency
    import tomli as tomllib

from ._config import DIRECTIONS, Config, Direction, ForwardSpec
from ._errors import ConfigError
from ._options import (build_parser, config_from_args, parse_forward, parse_port_range,
                       parse_proxy_listen, parse_sftp_listen)

#: file key -> (command-line option, kind)
GLOBAL_KEYS: dict[str, tuple[str, str]] = {
    "host": ("destination", "str"),
    "port": ("-p", "int"),
    "user": ("-l", "str"),
    "identity": ("-i", "strs"),
    "ssh_config": ("-F", "str"),
    "jump": ("-J", "str"),
    "options": ("-o", "table"),
    "gateway": ("-g", "bool"),
    "ftp_proxy": ("--ftp-proxy", "strs"),
    "sftp_server": ("--sftp-server", "strs"),
    "sftp_login": ("--sftp-login", "str"),
    "sftp_fallback": ("--sftp-fallback", "str"),
    "allow_destination": ("--allow-destination", "strs"),
    "allow_client": ("--allow-client", "strs"),
    "read_only": ("--read-only", "bool"),
    "xferlog": ("--xferlog", "str"),
    "metrics": ("--metrics", "str"),
    "active_mode": ("--active-mode", "str"),
    "active_address": ("--active-address", "str"),
    "active_forward_ahead": ("--active-forward-ahead", "str"),
    "remote_listen_address": ("--remote-listen-address", "str"),
    "remote_reply_address": ("--remote-reply-address", "str"),
    "trust_pasv_address": ("--trust-pasv-address", "strs"),
    "auth_tls": ("--auth-tls", "str"),
    "passive_ports": ("--passive-ports", "str"),
    "data_timeout": ("--data-timeout", "number"),
    "drain_timeout": ("--drain-timeout", "number"),
    "active_hold_timeout": ("--active-hold-timeout", "number"),
    "idle_timeout": ("--idle-timeout", "number"),
    "max_sessions": ("--max-sessions", "int"),
    "max_sessions_per_client": ("--max-sessions-per-client", "int"),
    "max_window": ("--max-window", "str"),
    "data_memory": ("--data-memory", "str"),
    "grace": ("--grace", "number"),
    "stats": ("--stats", "bool"),
    "log_format": ("--log-format", "str"),
    "log_file": ("-E", "str"),
    "pid_file": ("--pid-file", "str"),
    "background": ("-f", "bool"),
    "compression": ("-C", "bool"),
}
#: per-tunnel key -> (ForwardSpec field, kind, command-line twin)
TUNNEL_KEYS: dict[str, tuple[str, str, str]] = {
    "local": ("", "str", "-L"),
    "remote": ("", "str", "-R"),
    "ftp_proxy": ("", "str", "--ftp-proxy"),
    "sftp_server": ("", "str", "--sftp-server"),
    "active_mode": ("active_mode", "str", "--active-mode"),
    "auth_tls": ("auth_tls", "str", "--auth-tls"),
    "gateway": ("gateway", "bool", "-g"),
    "reply_address": ("reply_address", "str", "--remote-reply-address"),
    "passive_ports": ("passive_ports", "str", "--passive-ports"),
    "read_only": ("read_only", "bool", "--read-only"),
}
_KIND_NAMES = {"str": "a string", "int": "an integer", "number": "a number",
               "bool": "true or false", "strs": "a string or a list of strings",
               "table": "a table of Option = value"}


def _check_type(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str) and value != ""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "strs":
        return isinstance(value, str) or (isinstance(value, list) and all(
            isinstance(v, str) for v in value))
    if kind == "table":
        return isinstance(value, dict) and all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for v in value.values())
    raise AssertionError(kind)


def _tokens(flag: str, kind: str, value: Any) -> list[str]:
    if kind == "bool":
        return [flag] if value else []
    if kind == "strs":
        return [t for v in ([value] if isinstance(value, str) else value) for t in (flag, v)]
    if kind == "table":
        return [t for k, v in value.items() for t in (flag, f"{k}={v}")]
    if flag.startswith("--"):  # "--x=-1": -4/-6 make argparse read "-1" as an option
        return [f"{flag}={value}"]
    return [flag, str(value)]


def read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
            return data
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def file_arguments(path: str, data: dict[str, Any]
                   ) -> tuple[list[str], list[str], list[str], tuple[ForwardSpec, ...]]:
    """(destination tokens, option tokens, -o tokens, tunnels) from a parsed file."""
    destination: list[str] = []
    options: list[str] = []
    ssh_options: list[str] = []
    for key, value in data.items():
        if key == "tunnel":
            continue
        if key not in GLOBAL_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r}; known keys: tunnel, "
                              + ", ".join(GLOBAL_KEYS))
        flag, kind = GLOBAL_KEYS[key]
        if not _check_type(value, kind):
            raise ConfigError(f"{path}: {key} must be {_KIND_NAMES[kind]} (got {value!r})")
        if key == "host":
            if value.startswith("-"):
                raise ConfigError(f"{path}: host must not start with '-' (got {value!r})")
            destination = [value]
            continue
        tokens = _tokens(flag, kind, value)
        try:  # the same parser (and choices/types) as the command line
            build_parser(raise_errors=True).parse_args(tokens)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {key}: {exc}") from None
        (ssh_options if key == "options" else options).extend(tokens)
    tunnels = data.get("tunnel", [])
    if not isinstance(tunnels, list) or not all(isinstance(t, dict) for t in tunnels):
        raise ConfigError(f"{path}: tunnel must be an array of tables ([[tunnel]])")
    forwards = []
    for number, table in enumerate(tunnels, 1):
        where = f"{path}: tunnel {number}"
        for key, value in table.items():
            if key not in TUNNEL_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}; known keys: "
                                  + ", ".join(TUNNEL_KEYS))
            kind = TUNNEL_KEYS[key][1]
            if not _check_type(value, kind):
                raise ConfigError(f"{where}: {key} must be {_KIND_NAMES[kind]} "
                                  f"(got {value!r})")
        kinds = [k for k in _TUNNEL_KINDS if k in table]
        if len(kinds) != 1:
            raise ConfigError(f"{where}: give exactly one of local = \"...\" (like -L), "
                              f"remote = \"...\" (like -R), ftp_proxy = \"...\" (like "
                              "--ftp-proxy) or sftp_server = \"...\" (like --sftp-server)")
        kind = kinds[0]
        try:
            if kind == "ftp_proxy":
                spec = parse_proxy_listen(table[kind])
            elif kind == "sftp_server":
                spec = parse_sftp_listen(table[kind])
            else:
                spec = parse_forward(table[kind], _direction(kind))
            overrides = {TUNNEL_KEYS[k][0]: _tunnel_value(k, v) for k, v in table.items()
                         if k not in _TUNNEL_KINDS}
            forwards.append(dataclasses.replace(spec, **overrides))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return destination, options, ssh_options, tuple(forwards)


#: the keys of which a tunnel has exactly one: what it is
_TUNNEL_KINDS = (*DIRECTIONS, "ftp_proxy", "sftp_server")


def _direction(kind: str) -> Direction:
    for direction in DIRECTIONS:
        if direction == kind:
            return direction
    raise AssertionError(kind)


def _tunnel_value(key: str, value: Any) -> Any:
    """A tunnel key's value as its ForwardSpec field takes it."""
    if key != "passive_ports":
        return value
    try:
        return parse_port_range(value)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"passive_ports: {exc}") from None


def load_config(path: str, argv: Sequence[str] = ()) -> tuple[Config, argparse.Namespace]:
    """The Config of ``ftptrio --config path [argv...]`` and the merged arguments.

    Command-line options add to the file; for single-valued options the
    command line wins (for -o too: as in ssh, the first value wins and the
    command line's come first).
    """
    cli = list(argv)
    data = read(path)
    destination, options, ssh_options, tunnels = file_arguments(path, data)
    try:
        cli_args = build_parser(raise_errors=True).parse_args(cli)
    except ConfigError as exc:
        raise ConfigError(f"command line: {exc}") from None
    if cli_args.destination:
        destination = []
    try:
        args = build_parser(raise_errors=True).parse_args(
            [*destination, *options, *cli, *ssh_options])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not args.destination:
        raise ConfigError(f"{path}: missing host = \"[user@]ssh_host\" (or an ssh_config "
                          "Host alias)")
    try:
        return config_from_args(args, extra_forwards=tunnels), args
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


__all__ = ["load_config", "GLOBAL_KEYS", "TUNNEL_KEYS"]
