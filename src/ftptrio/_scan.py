"""Pick the control-channel scanner: the Cython extension if built, else the Python twin.

``FTPTRIO_NO_EXTENSIONS=1`` forces the pure-Python twin; ``FTPTRIO_REQUIRE_EXTENSIONS=1``
turns a missing extension into an ImportError (CI sets it so a broken build cannot pass
silently). ``IMPLEMENTATION`` names the module in use: ``"cython"`` or ``"python"``.
"""

from __future__ import annotations

import os

IMPLEMENTATION: str

if os.environ.get("FTPTRIO_NO_EXTENSIONS"):
    from . import _rewrite_py as _impl

    IMPLEMENTATION = "python"
else:
    try:
        from . import _rewrite as _impl  # type: ignore[no-redef]
    except ImportError as exc:
        if os.environ.get("FTPTRIO_REQUIRE_EXTENSIONS"):
            raise ImportError(
                "Cython extension ftptrio._rewrite is required but not built: "
                f"{exc} (FTPTRIO_REQUIRE_EXTENSIONS is set; rebuild with a C compiler "
                "and Cython installed, or unset it to use the pure-Python twin)"
            ) from exc
        from . import _rewrite_py as _impl

        IMPLEMENTATION = "python"
    else:
        IMPLEMENTATION = "cython"

MAX_LINE: int = _impl.MAX_LINE
FLAG_CONTINUES: int = _impl.FLAG_CONTINUES
FLAG_NUL: int = _impl.FLAG_NUL
FLAG_BARE_CR: int = _impl.FLAG_BARE_CR
FLAG_TELNET: int = _impl.FLAG_TELNET
FLAG_BAD_TELNET: int = _impl.FLAG_BAD_TELNET
LineSplitter = _impl.LineSplitter
parse_reply_code = _impl.parse_reply_code
reply_text_line = _impl.reply_text_line
split_command = _impl.split_command
telnet_decode = _impl.telnet_decode
parse_227 = _impl.parse_227
parse_229 = _impl.parse_229
parse_port_arg = _impl.parse_port_arg
parse_eprt_arg = _impl.parse_eprt_arg
format_227 = _impl.format_227
format_229 = _impl.format_229
format_port = _impl.format_port
format_eprt = _impl.format_eprt

del _impl, os

__all__ = [
    "FLAG_BAD_TELNET",
    "FLAG_BARE_CR",
    "FLAG_CONTINUES",
    "FLAG_NUL",
    "FLAG_TELNET",
    "IMPLEMENTATION",
    "MAX_LINE",
    "LineSplitter",
    "format_227",
    "format_229",
    "format_eprt",
    "format_port",
    "parse_227",
    "parse_229",
    "parse_eprt_arg",
    "parse_port_arg",
    "parse_reply_code",
    "reply_text_line",
    "split_command",
    "telnet_decode",
]
