"""IP address comparisons shared by the protocol core and the data plane (no I/O)."""

from __future__ import annotations

import ipaddress


def host_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` names, IPv4 for an IPv4-mapped ``::ffff:a.b.c.d`` (in
    either notation), without an IPv6 zone (``%eth0``); None: not an IP address."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def same_address(a: str, b: str) -> bool:
    """True when two IP address strings name the same host (IPv4-mapped aware)."""
    ia, ib = host_ip(a), host_ip(b)
    if ia is None or ib is None:
        return a == b
    return ia == ib


def unmapped(host: str) -> str:
    """``a.b.c.d`` for an IPv4-mapped ``::ffff:a.b.c.d``; other addresses unchanged."""
    return host[7:] if host.lower().startswith("::ffff:") and "." in host else host
