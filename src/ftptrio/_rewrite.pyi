"""Type stub shared by ``ftptrio._rewrite`` (Cython) and ``ftptrio._rewrite_py``."""

from typing import Final

__all__ = [
    "FLAG_BAD_TELNET",
    "FLAG_BARE_CR",
    "FLAG_CONTINUES",
    "FLAG_NUL",
    "FLAG_TELNET",
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

MAX_LINE: Final[int]
#: ``flags`` bits of ``feed_replies`` / ``feed_commands``
FLAG_CONTINUES: Final = 1  # reply ``xyz-``
FLAG_NUL: Final = 2  # line contains a NUL byte
FLAG_BARE_CR: Final = 4  # line contains a CR not immediately followed by its final LF
FLAG_TELNET: Final = 8  # command line: Telnet commands were removed
FLAG_BAD_TELNET: Final = 16  # command line: unsupported or cut-short Telnet sequence

class LineSplitter:
    """Split a control stream into lines; raises LineTooLong (with ``.lines``) past max_line."""

    def __init__(self, max_line: int = ...) -> None: ...
    @property
    def pending(self) -> bytes: ...
    def feed(self, data: bytes) -> list[bytes]: ...
    def feed_replies(self, data: bytes) -> list[tuple[bytes, int, int]]:
        """Per complete line ``(line_crlf, code or -1, flags)``; LineTooLong as ``feed``."""
    def feed_commands(self, data: bytes) -> list[tuple[bytes, bytes, bytes, int]]:
        """Per complete line ``(canonical_line, VERB, argument, flags)``, Telnet decoded;
        LineTooLong as ``feed``."""

def parse_reply_code(line: bytes) -> tuple[int, bool] | None: ...
def reply_text_line(line: bytes) -> bytes: ...
def split_command(line: bytes) -> tuple[bytes, bytes]: ...
def telnet_decode(body: bytes) -> tuple[bytes, int]: ...
def parse_227(line: bytes) -> tuple[str, int]: ...
def parse_229(line: bytes) -> int: ...
def parse_port_arg(arg: bytes) -> tuple[str, int]: ...
def parse_eprt_arg(arg: bytes) -> tuple[int, str, int]: ...
def format_227(host: str, port: int) -> bytes: ...
def format_229(port: int) -> bytes: ...
def format_port(host: str, port: int) -> bytes: ...
def format_eprt(host: str, port: int) -> bytes: ...
