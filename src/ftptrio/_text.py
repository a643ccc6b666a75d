"""Text from peers made safe to show: a terminal, a text log line or an FTP reply.

An SSH server's banner, keyboard-interactive prompts and refusal reasons, and an FTP
server's text, may carry escape sequences (set the window title, write the clipboard
with OSC 52, clear the screen, hide a prompt's prefix behind ``\\r\\x1b[2K``). As
OpenSSH does, every control character is shown as a visible octal escape (ESC as
``\\033``).
"""

from __future__ import annotations


def visible(text: str, *, newlines: bool = False) -> str:
    """``text`` with control and other non-printable characters as escapes: C0 and
    C1 controls and DEL as ``\\ooo`` (octal), other non-printable code points (e.g.
    bidirectional overrides) as ``\\uXXXX``. Tab stays; so do newlines when
    ``newlines`` (multi-line banners), never CR."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == "\t" or (newlines and ch == "\n"):
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


__all__ = ["visible"]
