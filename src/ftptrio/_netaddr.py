"""IP address comparisons shared by the protocol core and the data plane (no I/O)."""

from __future__ import annotations

import ipaddress


def same_address(a: str, b: str) -> bool:
    """True when two IP address strings name the same host (IPv4-mapped aware)."""
    try:
        ia, ib = ipaddress.ip_address(a.split("%")[0]), ipaddress.ip_address(b.split("%")[0])
    except ValueError:
        return a == b
    if isinstance(ia, ipaddress.IPv6Address) and ia.ipv4_mapped:
        ia = ia.ipv4_mapped
    if isinstance(ib, ipaddress.IPv6Address) and ib.ipv4_mapped:
        ib = ib.ipv4_mapped
    return ia == ib


def unmapped(host: str) -> str:
    """``a.b.c.d`` for an IPv4-mapped ``::ffff:a.b.c.d``; other addresses unchanged."""
    return host[7:] if host.lower().startswith("::ffff:") and "." in host else host
