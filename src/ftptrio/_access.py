"""Access rules of the team gateway (no I/O): which FTP servers an FTP-proxy login may
name (``--allow-destination``, default deny), which clients a listener serves
(``--allow-client``), and how a login's ``user@host[:port]`` is read.

A destination is matched as the client wrote it: an address against address and
network rules, a host name against name globs. The SSH server resolves a name, so an
address rule says nothing about where a name leads (SECURITY.md).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from typing import Sequence

from ._errors import ConfigError
from ._netaddr import host_ip
from ._text import visible

#: the only destination port of a rule that names none
DEFAULT_FTP_PORT = 21
#: longest user name a proxy login may give (the part before ``@host``)
MAX_USER_NAME = 256
#: longest destination host name (RFC 1035: 253 characters written without the dot)
MAX_HOST_NAME = 253

_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")
_GLOB = re.compile(r"[a-z0-9_*?.\-\[\]!]+")
_PORTS = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")
#: a part of an IPv4 address as inet_aton reads it (decimal, octal or hex): a name
#: made only of such labels is an address to the SSH server's resolver
_NUMBER = re.compile(r"0x[0-9a-f]*|[0-9]+")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _network(text: str) -> Network:
    """``ip_network(text)``; an IPv4-mapped one (``::ffff:a.b.c.0/120``) as the IPv4
    network it names, since addresses are compared as ``host_ip`` gives them."""
    network = ipaddress.ip_network(text, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


@dataclass(frozen=True, slots=True)
class DestinationRule:
    """One ``--allow-destination`` pattern: an address or network, or a host-name
    glob, and the ports it allows (both included)."""

    network: Network | None
    glob: str | None
    low: int = DEFAULT_FTP_PORT
    high: int = DEFAULT_FTP_PORT

    def allows(self, host: str, port: int) -> bool:
        """Whether ``host`` (as ``normal_host`` returns it) and ``port`` match."""
        if not self.low <= port <= self.high:
            return False
        if self.network is not None:
            ip = host_ip(host)
            return ip is not None and ip.version == self.network.version \
                and ip in self.network
        assert self.glob is not None
        return host_ip(host) is None and fnmatch.fnmatchcase(host, self.glob)


def parse_destination_rule(text: str, default_port: int = DEFAULT_FTP_PORT
                           ) -> DestinationRule:
    """``ADDRESS``, ``CIDR`` or ``GLOB`` (a host-name pattern: ``*.lan``), with an
    optional ``:PORT`` or ``:LOW-HIGH`` (default: ``default_port`` only, 21 for FTP
    servers, 22 for --sftp-server's SSH hosts); IPv6 in brackets
    when a port follows (``[2001:db8::/32]:2121``). ConfigError if malformed."""
    what = f"bad --allow-destination {text!r}"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{what}: expected ADDRESS, NETWORK/BITS or a host-name glob, "
                          "with an optional :PORT or :LOW-HIGH")
    pattern, ports = _split_port(text.strip(), what)
    low, high = default_port, default_port
    if ports is not None:
        match = _PORTS.fullmatch(ports)
        if match is None:
            raise ConfigError(f"{what}: the port must be PORT or LOW-HIGH (got {ports!r})")
        low = int(match[1])
        high = int(match[2] or match[1])
        if not 1 <= low <= high <= 65535:
            raise ConfigError(f"{what}: ports must be 1-65535, LOW <= HIGH")
    try:
        network: Network | None = _network(pattern)
    except ValueError:
        network = None
    if network is not None:
        return DestinationRule(network, None, low, high)
    glob = pattern.lower().rstrip(".")
    if "/" in glob or ":" in glob or not _GLOB.fullmatch(glob):
        raise ConfigError(f"{what}: {pattern!r} is neither an address, a network "
                          "(ADDRESS/BITS) nor a host-name glob (letters, digits, '-', "
                          "'.', '*', '?')")
    return DestinationRule(None, glob, low, high)


def _split_port(text: str, what: str) -> tuple[str, str | None]:
    """(host part, port part or None) of ``host[:ports]`` / ``[v6][:ports]``."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or rest and not rest.startswith(":"):
            raise ConfigError(f"{what}: an IPv6 address or network goes in brackets: "
                              "[2001:db8::/32]:21")
        return host, rest[1:] if rest else None
    if text.count(":") > 1:  # a bare IPv6 address or network, no port
        return text, None
    host, colon, ports = text.partition(":")
    return host, ports if colon else None


def parse_destination_rules(patterns: Sequence[str], default_port: int = DEFAULT_FTP_PORT
                            ) -> tuple[DestinationRule, ...]:
    return tuple(parse_destination_rule(p, default_port) for p in patterns)


def destination_allowed(rules: Sequence[DestinationRule], host: str, port: int) -> bool:
    """Whether any rule allows host:port (no rule: none is allowed)."""
    return any(rule.allows(host, port) for rule in rules)


def check_client_rule(text: str) -> None:
    """An ``--allow-client`` value: an address or a network (CIDR)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except (ValueError, TypeError):
        raise ConfigError(f"bad --allow-client {text!r}: expected an address or a "
                          "network such as 192.0.2.0/24") from None


def client_allowed(host: str, networks: Sequence[str]) -> bool:
    """Whether the client address ``host`` (IPv4-mapped aware) is in ``networks``
    (``--allow-client``; none given: every client is)."""
    if not networks:
        return True
    ip = host_ip(host)
    return ip is not None and any(
        ip in _network(net) for net in networks)


class LoginRefused(Exception):
    """A proxy login that cannot be served; the message is the 530's text."""


def normal_host(host: str) -> str:
    """A destination host as it is matched and handed to the SSH server: an IP
    address in its canonical form, or a host name in lower case without a final dot.
    LoginRefused for anything else (an address in a form only ``inet_aton`` reads,
    such as ``10.1`` or ``0x0a000001``, would pass a name rule yet be an address)."""
    ip = host_ip(host) if "%" not in host else None
    if ip is not None:
        return str(ip)
    name = host.lower()
    name = name[:-1] if name.endswith(".") else name
    if len(name) > MAX_HOST_NAME or not _NAME.fullmatch(name):
        raise LoginRefused(f"bad destination host {visible(host[:80])!r}")
    if all(_NUMBER.fullmatch(label) for label in name.split(".")):
        raise LoginRefused(f"destination {name!r} is an address in a non-standard form; "
                           "write it as a.b.c.d")
    return name


def parse_host_port(text: str, default_port: int = DEFAULT_FTP_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address ->
    (normal host, port; ``default_port`` if not given). LoginRefused if malformed."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or rest and not rest.startswith(":"):
            raise LoginRefused(f"bad destination {visible(text[:80])!r}")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise LoginRefused("no destination host given")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise LoginRefused(f"bad destination port {visible(port_text[:20])!r}")
        port = int(port_text)
    return normal_host(host), port


def check_user_name(user: bytes) -> None:
    """A user name ftptrio sends on as ``USER name``: not empty, at most
    MAX_USER_NAME bytes, no control characters (CR, LF, NUL ...) and no 0xFF."""
    if not user:
        raise LoginRefused("no user name given")
    if len(user) > MAX_USER_NAME:
        raise LoginRefused(f"user name longer than {MAX_USER_NAME} bytes")
    if any(b < 0x20 or b in (0x7F, 0xFF) for b in user):
        raise LoginRefused("control characters in the user name")


def split_proxy_user(arg: bytes, default_port: int = DEFAULT_FTP_PORT
                     ) -> tuple[bytes, str, int] | None:
    """``user@host[:port]`` (split at the last ``@``) -> (user, host, port); None
    when ``arg`` names no destination. LoginRefused if malformed."""
    user, at, where = arg.rpartition(b"@")
    if not at:
        return None
    check_user_name(user)
    try:
        text = where.decode("ascii")
    except UnicodeDecodeError:
        raise LoginRefused("bad destination host (not ASCII)") from None
    host, port = parse_host_port(text, default_port)
    return user, host, port
