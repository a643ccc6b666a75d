"""``ftptrio._netaddr``: the one place that reads an IP address (IPv4-mapped aware)."""

from __future__ import annotations

import ipaddress

from ftptrio._netaddr import host_ip, same_address, unmapped


def test_host_ip_unmaps_ipv4_mapped_addresses_in_either_notation() -> None:
    assert host_ip("::ffff:10.0.0.1") == ipaddress.IPv4Address("10.0.0.1")
    assert host_ip("::FFFF:a00:1") == ipaddress.IPv4Address("10.0.0.1")
    assert host_ip("10.0.0.1") == ipaddress.IPv4Address("10.0.0.1")


def test_host_ip_drops_the_zone_and_keeps_other_ipv6_addresses() -> None:
    assert host_ip("fe80::1%eth0") == ipaddress.IPv6Address("fe80::1")
    assert host_ip("2001:db8::1") == ipaddress.IPv6Address("2001:db8::1")


def test_host_ip_of_a_name_is_none() -> None:
    assert host_ip("ftp.example.com") is None
    assert host_ip("") is None


def test_same_address_compares_addresses_and_names_as_text() -> None:
    assert same_address("::ffff:127.0.0.1", "127.0.0.1")
    assert same_address("::ffff:7f00:1", "127.0.0.1")
    assert not same_address("127.0.0.1", "127.0.0.2")
    assert same_address("ftp.example.com", "ftp.example.com")
    assert not same_address("ftp.example.com", "127.0.0.1")


def test_unmapped_is_textual() -> None:
    assert unmapped("::ffff:10.0.0.1") == "10.0.0.1"
    assert unmapped("2001:db8::1") == "2001:db8::1"
