"""Bad input is a one-line usage error (exit 2) that says what to do, before anything
connects (first contact, round 2, point 4)."""

from __future__ import annotations

import pytest

from ftptrio._cli import main


@pytest.mark.parametrize("argv, expected", [
    (["-L", "2121:127.0.0.1:21", "-o", "Ciphers=aes999-ctr", "gw"],
     "unsupported cipher 'aes999-ctr'"),
    (["-L", "2121:127.0.0.1:21", "-o", "Ciphers=aes128-ctr,nope", "gw"],
     "unsupported cipher 'nope'"),
    (["-L", "::1:23230:127.0.0.1:21", "gw"], "an IPv6 address goes in brackets"),
    (["-L", "2121:127.0.0.1:21", "root@host:2222"], "use -p 2222 root@host or ssh://root@host:2222"),
    (["-L", "2121:127.0.0.1:21", "-F", "/nonexistent/ssh_config", "gw"],
     "Can't open user config file /nonexistent/ssh_config"),
    (["-L", "2121:127.0.0.1:21", "-o", "Ciphr=aes128-ctr", "gw"],
     "unsupported -o option 'Ciphr'; did you mean Ciphers?"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftptrio: ") and err.count("\n") == 1, err
    assert expected in err, err


def test_bracketed_ipv6_forward_still_parses():
    from ftptrio._options import parse_forward
    spec = parse_forward("[::1]:23230:127.0.0.1:21")
    assert (spec.listen_host, spec.listen_port) == ("::1", 23230)
