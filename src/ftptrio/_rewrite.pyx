# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Cython twin of ``ftptrio._rewrite_py``: identical behaviour, written for speed.

Keep the two in step: ``tests/unit/test_rewrite_differential.py`` feeds both the
same random transcripts and demands identical results, exceptions and messages.
"""

import ipaddress

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.string cimport memchr, memcpy

from ftptrio._errors import BadDataAddress, LineTooLong

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

MAX_LINE = 4096

FLAG_CONTINUES = 1
FLAG_NUL = 2
FLAG_BARE_CR = 4
FLAG_TELNET = 8
FLAG_BAD_TELNET = 16

ctypedef const unsigned char* cbuf

# Reply codes 0..999 as ready-made ints (CPython caches only -5..256).
cdef tuple _CODES = tuple(range(1000))
cdef object _NO_CODE = -1


cdef inline bint _isdigit(unsigned char ch) noexcept nogil:
    return 48 <= ch <= 57


cdef class LineSplitter:
    """Split a control-channel byte stream into lines, whatever the TCP segmentation.

    See ``ftptrio._rewrite_py.LineSplitter`` for the contract.
    """

    cdef bytes _buf
    cdef Py_ssize_t _max_line
    cdef bint _failed

    def __init__(self, max_line=MAX_LINE):
        if isinstance(max_line, bool) or not isinstance(max_line, int) or max_line < 1:
            raise ValueError(f"max_line must be a positive integer, got {max_line!r}")
        self._max_line = max_line
        self._buf = b""
        self._failed = False

    @property
    def pending(self):
        """The buffered incomplete tail (no LF yet)."""
        return self._buf

    cdef object _fail(self, list lines):
        self._failed = True
        self._buf = b""
        exc = LineTooLong(f"control line longer than {self._max_line} bytes")
        exc.lines = lines
        return exc

    def feed(self, data):
        """Add ``data``; return the complete lines it finishes, in order."""
        cdef bytes buf
        cdef cbuf p
        cdef cbuf nl
        cdef Py_ssize_t n, start, length
        cdef Py_ssize_t max_line = self._max_line
        cdef list lines
        if self._failed:
            raise self._fail([])
        if type(data) is not bytes:
            data = bytes(data)
        if PyBytes_GET_SIZE(self._buf):
            buf = self._buf + <bytes>data
        else:
            buf = <bytes>data
        p = <cbuf>PyBytes_AS_STRING(buf)
        n = PyBytes_GET_SIZE(buf)
        lines = []
        start = 0
        while start < n:
            nl = <cbuf>memchr(p + start, 10, <size_t>(n - start))
            if nl == NULL:
                break
            length = (nl - p) + 1 - start
            if length > max_line:
                raise self._fail(lines)
            lines.append(PyBytes_FromStringAndSize(<const char*>(p + start), length))
            start += length
        if n - start > max_line:
            raise self._fail(lines)
        if start == 0:
            self._buf = buf
        elif start == n:
            self._buf = b""
        else:
            self._buf = PyBytes_FromStringAndSize(<const char*>(p + start), n - start)
        return lines

    cdef list _feed_bulk(self, data, bint commands):
        """One pass over the buffer: split lines and build the per-line tuples."""
        cdef bytes buf
        cdef cbuf p
        cdef cbuf nl
        cdef Py_ssize_t n, start, length
        cdef Py_ssize_t max_line = self._max_line
        cdef list out
        if self._failed:
            raise self._fail([])
        if type(data) is not bytes:
            data = bytes(data)
        if PyBytes_GET_SIZE(self._buf):
            buf = self._buf + <bytes>data
        else:
            buf = <bytes>data
        p = <cbuf>PyBytes_AS_STRING(buf)
        n = PyBytes_GET_SIZE(buf)
        out = []
        start = 0
        while start < n:
            nl = <cbuf>memchr(p + start, 10, <size_t>(n - start))
            if nl == NULL:
                break
            length = (nl - p) + 1 - start
            if length > max_line:
                raise self._fail(out)
            if commands:
                out.append(_command_tuple(p + start, length))
            else:
                out.append(_reply_tuple(p + start, length))
            start += length
        if n - start > max_line:
            raise self._fail(out)
        if start == 0:
            self._buf = buf
        elif start == n:
            self._buf = b""
        else:
            self._buf = PyBytes_FromStringAndSize(<const char*>(p + start), n - start)
        return out

    def feed_replies(self, data):
        """``feed`` for the server stream: ``(line_crlf, code, flags)`` per complete line."""
        return self._feed_bulk(data, False)

    def feed_commands(self, data):
        """``feed`` for the client stream: ``(line_crlf, VERB, argument, flags)`` per line."""
        return self._feed_bulk(data, True)


cdef inline bytes _crlf_line(cbuf s, Py_ssize_t length, bint has_crlf):
    """The complete line ``s[:length]`` (ends with LF) with a CRLF ending."""
    cdef bytes line
    cdef char* v
    if has_crlf:
        return PyBytes_FromStringAndSize(<const char*>s, length)
    line = PyBytes_FromStringAndSize(NULL, length + 1)
    v = PyBytes_AS_STRING(line)
    memcpy(v, s, <size_t>(length - 1))
    v[length - 1] = 13
    v[length] = 10
    return line


cdef inline int _bad_flags(cbuf s, Py_ssize_t length, bint has_crlf) noexcept nogil:
    """FLAG_NUL | FLAG_BARE_CR of a complete line (``length`` >= 1, ends with LF)."""
    cdef int flags = 0
    cdef Py_ssize_t body = length - 2 if has_crlf else length - 1
    if memchr(s, 0, <size_t>length) != NULL:
        flags = 2
    if body > 0 and memchr(s, 13, <size_t>body) != NULL:
        flags |= 4
    return flags


cdef tuple _reply_tuple(cbuf s, Py_ssize_t length):
    cdef bint has_crlf = length >= 2 and s[length - 2] == 13
    cdef int flags = _bad_flags(s, length, has_crlf)
    cdef unsigned char sep
    cdef object code = _NO_CODE
    # A complete line always has a 4th byte here when it starts with 3 digits.
    if length >= 4 and _isdigit(s[0]) and _isdigit(s[1]) and _isdigit(s[2]):
        sep = s[3]
        if sep == 45:
            flags |= 1
            code = <object>PyTuple_GET_ITEM(
                _CODES, (s[0] - 48) * 100 + (s[1] - 48) * 10 + (s[2] - 48))
        elif sep == 32 or sep == 13 or sep == 10:
            code = <object>PyTuple_GET_ITEM(
                _CODES, (s[0] - 48) * 100 + (s[1] - 48) * 10 + (s[2] - 48))
    return (_crlf_line(s, length, has_crlf), code, flags)


cdef tuple _command_tuple(cbuf s, Py_ssize_t n):
    """Same as the Python twin's ``_command_tuples`` for the complete line ``s[:n]``."""
    cdef bint has_crlf = n >= 2 and s[n - 2] == 13
    cdef int flags = _bad_flags(s, n, has_crlf)
    cdef Py_ssize_t body_len = n - 2 if has_crlf else n - 1
    cdef bytes body
    cdef int telnet_flags
    if memchr(s, 0xFF, <size_t>n) != NULL:
        body, telnet_flags = _telnet_decode(s, body_len)
        verb, arg = _split_body(<cbuf>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))
        return (body.replace(b"\xff", b"\xff\xff") + b"\r\n", verb, arg,
                flags | telnet_flags)
    verb, arg = _split_body(s, body_len)
    return (_crlf_line(s, n, has_crlf), verb, arg, flags)


cdef tuple _telnet_decode(cbuf s, Py_ssize_t n):
    """``telnet_decode`` of the body ``s[:n]``."""
    cdef bytes out
    cdef char* v
    cdef Py_ssize_t i = 0, k = 0
    cdef int flags = 0
    cdef unsigned char ch, command
    if memchr(s, 0xFF, <size_t>n) == NULL:
        return (PyBytes_FromStringAndSize(<const char*>s, n), 0)
    out = PyBytes_FromStringAndSize(NULL, n)
    v = PyBytes_AS_STRING(out)
    while i < n:
        ch = s[i]
        if ch != 0xFF:
            v[k] = <char>ch
            k += 1
            i += 1
            continue
        if i + 1 >= n:
            flags |= 16
            break
        command = s[i + 1]
        if command == 0xFF:
            v[k] = <char>0xFF
            k += 1
            i += 2
        elif 251 <= command <= 254:
            if i + 2 >= n:
                flags |= 16
                break
            flags |= 8
            i += 3
        elif (241 <= command <= 246) or command == 249:
            flags |= 8
            i += 2
        else:
            flags |= 16
            i += 2
    return (out[:k], flags)


cdef tuple _split_body(cbuf s, Py_ssize_t n):
    """``(VERB, argument)`` of a line body ``s[:n]`` (no terminator, Telnet decoded)."""
    cdef Py_ssize_t i = 0, j, k
    cdef unsigned char ch
    cdef bytes verb
    cdef char* v
    while i < n and s[i] == 32:
        i += 1
    j = i
    while j < n:
        ch = s[j]
        if ch == 32 or ch == 13 or ch == 10:
            break
        j += 1
    verb = PyBytes_FromStringAndSize(NULL, j - i)
    v = PyBytes_AS_STRING(verb)
    for k in range(j - i):
        ch = s[i + k]
        if 97 <= ch <= 122:
            ch -= 32
        v[k] = <char>ch
    if j < n and s[j] == 32:
        j += 1
    return (verb, PyBytes_FromStringAndSize(<const char*>(s + j), n - j))


cdef inline Py_ssize_t _body_length(cbuf p, Py_ssize_t n) noexcept nogil:
    """Length of ``p[:n]`` without its terminator (a final LF, with the CR before it)."""
    if n >= 1 and p[n - 1] == 10:
        if n >= 2 and p[n - 2] == 13:
            return n - 2
        return n - 1
    return n


def telnet_decode(bytes body not None):
    """``(decoded, flags)``: a command line body as a Telnet-reading server sees it."""
    return _telnet_decode(<cbuf>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))


def parse_reply_code(bytes line not None):
    """``(code, continues)`` for a line starting with a 3-digit reply code, else None."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(line)
    cdef cbuf p = <cbuf>PyBytes_AS_STRING(line)
    cdef int code
    cdef unsigned char sep
    if n < 3 or not (_isdigit(p[0]) and _isdigit(p[1]) and _isdigit(p[2])):
        return None
    code = (p[0] - 48) * 100 + (p[1] - 48) * 10 + (p[2] - 48)
    if n == 3:
        return (code, False)
    sep = p[3]
    if sep == 45:
        return (code, True)
    if sep == 32 or sep == 13 or sep == 10:
        return (code, False)
    return None


def reply_text_line(bytes line not None):
    """An inner line of a multi-line reply made text for every client (see the Python twin)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(line)
    cdef cbuf p = <cbuf>PyBytes_AS_STRING(line)
    if n >= 3 and _isdigit(p[0]) and _isdigit(p[1]) and _isdigit(p[2]) and (n == 3 or p[3] != 45):
        return b" " + line
    return line


def split_command(bytes line not None):
    """``(VERB, argument)`` of a command line as the server reads it (see the Python twin)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(line)
    cdef cbuf p = <cbuf>PyBytes_AS_STRING(line)
    cdef bytes body
    n = _body_length(p, n)
    if memchr(p, 0xFF, <size_t>n) == NULL:
        return _split_body(p, n)
    body = _telnet_decode(p, n)[0]
    return _split_body(<cbuf>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))


def parse_227(bytes line not None):
    """``(host, port)`` from a 227 reply (RFC 1123 4.1.2.6: free-form text)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(line)
    cdef cbuf p = <cbuf>PyBytes_AS_STRING(line)
    cdef Py_ssize_t i = 3, j, count
    cdef int values[6]
    cdef Py_ssize_t lengths[6]
    cdef int value, port
    while i < n:
        if not _isdigit(p[i]):
            i += 1
            continue
        # i starts a run of comma-separated numbers; walk it to the end.
        count = 0
        while True:
            j = i
            value = 0
            while j < n and _isdigit(p[j]):
                if j - i < 3:
                    value = value * 10 + (p[j] - 48)
                j += 1
            if count < 6:
                values[count] = value
                lengths[count] = j - i
            count += 1
            if j + 1 < n and p[j] == 44 and _isdigit(p[j + 1]):
                i = j + 1
            else:
                i = j
                break
        if count < 6:
            continue
        if count > 6:
            raise BadDataAddress("more than six comma-separated numbers in 227 reply")
        for j in range(6):
            if lengths[j] > 3:
                raise BadDataAddress("number with more than 3 digits in 227 reply")
            if values[j] > 255:
                raise BadDataAddress(f"octet {values[j]} out of range in 227 reply")
        port = values[4] * 256 + values[5]
        if port == 0:
            raise BadDataAddress("port 0 in 227 reply")
        return f"{values[0]}.{values[1]}.{values[2]}.{values[3]}", port
    raise BadDataAddress("no h1,h2,h3,h4,p1,p2 in 227 reply")


cdef int _port_from_digits(cbuf p, Py_ssize_t length, str where) except -1:
    cdef int port = 0
    cdef Py_ssize_t k
    if length == 0:
        raise BadDataAddress(f"missing port in {where}")
    if length > 5:
        raise BadDataAddress(f"port with more than 5 digits in {where}")
    for k in range(length):
        port = port * 10 + (p[k] - 48)
    if port == 0:
        raise BadDataAddress(f"port 0 in {where}")
    if port > 65535:
        raise BadDataAddress(f"port {port} out of range in {where}")
    return port


def parse_229(bytes line not None):
    """The port of a 229 reply: ``(<d><d><d>port<d>)`` in the text after the code."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(line)
    cdef cbuf p = <cbuf>PyBytes_AS_STRING(line)
    cdef cbuf hit
    cdef Py_ssize_t start = 3, i, j
    cdef unsigned char d
    while start < n:
        hit = <cbuf>memchr(p + start, 40, <size_t>(n - start))  # '('
        if hit == NULL:
            break
        i = (hit - p) + 1
        if i + 3 < n:
            d = p[i]
            if 33 <= d <= 126 and not _isdigit(d) and p[i + 1] == d and p[i + 2] == d:
                j = i + 3
                while j < n and _isdigit(p[j]):
                    j += 1
                if j + 1 < n and p[j] == d and p[j + 1] == 41:  # ')'
                    return _port_from_digits(p + i + 3, j - i - 3, "229 reply")
        start = i
    raise BadDataAddress("no (<d><d><d>port<d>) in 229 reply")


cdef inline bint _is_blank(unsigned char ch) noexcept nogil:
    return ch == 32 or ch == 9


def parse_port_arg(bytes arg not None):
    """``(host, port)`` from a PORT argument: exactly ``h1,h2,h3,h4,p1,p2``."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(arg)
    cdef cbuf p = <cbuf>PyBytes_AS_STRING(arg)
    cdef Py_ssize_t i = 0, end = n, j, count = 0
    cdef int values[6]
    cdef int port
    while i < end and _is_blank(p[i]):
        i += 1
    while end > i and _is_blank(p[end - 1]):
        end -= 1
    while True:
        j = i
        while j < end and _isdigit(p[j]):
            j += 1
        if j == i or j - i > 3 or count >= 6:
            raise BadDataAddress(
                "PORT argument is not six comma-separated numbers h1,h2,h3,h4,p1,p2")
        values[count] = 0
        while i < j:
            values[count] = values[count] * 10 + (p[i] - 48)
            i += 1
        count += 1
        if j == end:
            break
        if p[j] != 44:
            raise BadDataAddress(
                "PORT argument is not six comma-separated numbers h1,h2,h3,h4,p1,p2")
        i = j + 1
    if count != 6:
        raise BadDataAddress("PORT argument is not six comma-separated numbers h1,h2,h3,h4,p1,p2")
    for j in range(6):
        if values[j] > 255:
            raise BadDataAddress(f"octet {values[j]} out of range in PORT argument")
    port = values[4] * 256 + values[5]
    if port == 0:
        raise BadDataAddress("port 0 in PORT argument")
    return f"{values[0]}.{values[1]}.{values[2]}.{values[3]}", port


def parse_eprt_arg(bytes arg not None):
    """``(proto, address, port)`` from an EPRT argument ``<d>proto<d>addr<d>port<d>``."""
    cdef Py_ssize_t n, k
    cdef cbuf p
    cdef unsigned char d
    cdef list parts
    cdef bytes proto_field, addr_field, port_field
    cdef int proto
    arg = arg.strip(b" \t")
    n = PyBytes_GET_SIZE(arg)
    p = <cbuf>PyBytes_AS_STRING(arg)
    if n < 2:
        raise BadDataAddress("EPRT argument is not <d>proto<d>addr<d>port<d>")
    d = p[0]
    if not (33 <= d <= 126) or _isdigit(d):
        raise BadDataAddress("EPRT delimiter must be a character in 33..126 other than a digit")
    parts = arg.split(arg[:1])
    if len(parts) != 5 or parts[0] or parts[4]:
        raise BadDataAddress("EPRT argument is not <d>proto<d>addr<d>port<d>")
    proto_field = parts[1]
    addr_field = parts[2]
    port_field = parts[3]
    if proto_field == b"1":
        proto = 1
    elif proto_field == b"2":
        proto = 2
    else:
        raise BadDataAddress("EPRT network protocol must be 1 (IPv4) or 2 (IPv6)")
    family = "IPv4" if proto == 1 else "IPv6"
    if proto == 1:
        # Fast path, same acceptance as ipaddress.IPv4Address (checked by the tests).
        if not _is_canonical_ipv4(<cbuf>PyBytes_AS_STRING(addr_field),
                                  PyBytes_GET_SIZE(addr_field)):
            raise BadDataAddress(
                f"invalid {family} address {addr_field[:64]!r} in EPRT argument")
        host = addr_field.decode("ascii")
    else:
        host = _ipv6_compressed(addr_field)
        if host is None:
            raise BadDataAddress(
                f"invalid {family} address {addr_field[:64]!r} in EPRT argument")
        if host is _SLOW_PATH:
            try:
                if not addr_field.isascii() or b"%" in addr_field:
                    raise ValueError
                address = ipaddress.ip_address(addr_field.decode("ascii"))
                if address.version != 6:
                    raise ValueError
            except ValueError:
                raise BadDataAddress(
                    f"invalid {family} address {addr_field[:64]!r} in EPRT argument") from None
            host = address.compressed
    p = <cbuf>PyBytes_AS_STRING(port_field)
    n = PyBytes_GET_SIZE(port_field)
    for k in range(n):
        if not _isdigit(p[k]):
            raise BadDataAddress("EPRT port is not a decimal number")
    return proto, host, _port_from_digits(p, n, "EPRT argument")


cdef object _SLOW_PATH = object()


cdef inline int _hexval(unsigned char ch) noexcept nogil:
    if 48 <= ch <= 57:
        return ch - 48
    if 97 <= ch <= 102:
        return ch - 87
    if 65 <= ch <= 70:
        return ch - 55
    return -1


cdef object _ipv6_compressed(bytes text):
    """``ipaddress.IPv6Address(text).compressed`` for a hex-and-colons address, in C.

    Returns None when ipaddress would refuse ``text`` and ``_SLOW_PATH`` when the
    caller must ask ipaddress itself: an IPv4 suffix (``::ffff:1.2.3.4``), an address
    longer than any valid hex-only form, or an IPv4-mapped result (whose text form
    differs between Python versions). Mirrors ``_BaseV6._ip_int_from_string`` step by
    step; the differential tests compare it with ipaddress.
    """
    cdef cbuf p = <cbuf>PyBytes_AS_STRING(text)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(text)
    cdef Py_ssize_t starts[10]
    cdef Py_ssize_t ends[10]
    cdef Py_ssize_t i, k, nparts = 0, skip = -1, hi, lo, skipped
    cdef unsigned int hextets[8]
    cdef unsigned int value
    cdef int digit, best_start = -1, best_len = 0, run_start = -1, run_len = 0
    cdef char out[48]
    cdef Py_ssize_t o = 0
    if n == 0:
        return None
    if n > 39:  # longer than 8 groups of 4 hex digits: let ipaddress decide
        return _SLOW_PATH
    starts[0] = 0
    for i in range(n):
        if p[i] == 58:  # ':'
            if nparts == 8:  # a 10th part: more than 9 parts
                return None
            ends[nparts] = i
            nparts += 1
            starts[nparts] = i + 1
        elif p[i] == 46:  # '.': IPv4 suffix
            return _SLOW_PATH
        elif _hexval(p[i]) < 0:
            return None
    ends[nparts] = n
    nparts += 1
    if nparts < 3:
        return None
    for i in range(1, nparts - 1):
        if starts[i] == ends[i]:
            if skip >= 0:
                return None
            skip = i
    if skip >= 0:
        hi = skip
        lo = nparts - skip - 1
        if starts[0] == ends[0]:
            hi -= 1
            if hi:
                return None
        if starts[nparts - 1] == ends[nparts - 1]:
            lo -= 1
            if lo:
                return None
        skipped = 8 - (hi + lo)
        if skipped < 1:
            return None
    else:
        if nparts != 8:
            return None
        if starts[0] == ends[0] or starts[7] == ends[7]:
            return None
        hi = 8
        lo = 0
        skipped = 0
    for k in range(8):
        hextets[k] = 0
    for k in range(hi + lo):
        i = k if k < hi else nparts - lo + (k - hi)
        if ends[i] == starts[i] or ends[i] - starts[i] > 4:
            return None
        value = 0
        for o in range(starts[i], ends[i]):
            value = value * 16 + <unsigned int>_hexval(p[o])
        hextets[k if k < hi else k + skipped] = value
    if (hextets[0] == 0 and hextets[1] == 0 and hextets[2] == 0 and hextets[3] == 0
            and hextets[4] == 0 and hextets[5] == 0xFFFF):
        return _SLOW_PATH  # IPv4-mapped
    # _compress_hextets: the first longest run of >= 2 zero hextets becomes "::".
    for k in range(8):
        if hextets[k] == 0:
            run_len += 1
            if run_start == -1:
                run_start = k
            if run_len > best_len:
                best_len = run_len
                best_start = run_start
        else:
            run_len = 0
            run_start = -1
    if best_len < 2:
        best_start = 8
    o = 0
    k = 0
    while k < 8:
        if k == best_start:  # "::" (the hextet before it wrote no separator)
            out[o] = 58
            out[o + 1] = 58
            o += 2
            k += best_len
            continue
        value = hextets[k]
        digit = 12
        while digit > 0 and (value >> digit) == 0:
            digit -= 4
        while digit >= 0:
            out[o] = b"0123456789abcdef"[(value >> digit) & 15]
            o += 1
            digit -= 4
        k += 1
        if k < 8 and k != best_start:
            out[o] = 58
            o += 1
    return out[:o].decode("ascii")


cdef bint _is_canonical_ipv4(cbuf p, Py_ssize_t n) noexcept:
    """Dotted quad as ipaddress.IPv4Address accepts it: 4 octets of 1-3 ASCII digits,
    each <= 255, no leading zero (so the text is already the compressed form)."""
    cdef Py_ssize_t i = 0, j, octets = 0
    cdef int value
    while True:
        j = i
        value = 0
        while j < n and _isdigit(p[j]) and j - i < 4:
            value = value * 10 + (p[j] - 48)
            j += 1
        if j == i or j - i > 3 or value > 255 or (p[i] == 48 and j - i > 1):
            return False
        octets += 1
        if octets == 4:
            return j == n
        if j >= n or p[j] != 46:  # '.'
            return False
        i = j + 1


# ---------------------------------------------------------------- formatting

cdef int _check_port_arg(object port) except -1:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    return port


cdef bytes _ipv4_octets(object host):
    if not isinstance(host, str):
        raise ValueError(f"host must be an IPv4 address string, got {host!r}")
    try:
        return ipaddress.IPv4Address(host).packed
    except ValueError:
        raise ValueError(f"host must be a dotted IPv4 address, got {host!r}") from None


def format_227(host, port):
    """``227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).`` + CRLF."""
    cdef bytes o = _ipv4_octets(host)
    cdef int p = _check_port_arg(port)
    return (f"227 Entering Passive Mode ({o[0]},{o[1]},{o[2]},{o[3]},"
            f"{p >> 8},{p & 255}).\r\n").encode("ascii")


def format_229(port):
    """``229 Entering Extended Passive Mode (|||port|)`` + CRLF."""
    cdef int p = _check_port_arg(port)
    return f"229 Entering Extended Passive Mode (|||{p}|)\r\n".encode("ascii")


def format_port(host, port):
    """``PORT h1,h2,h3,h4,p1,p2`` + CRLF."""
    cdef bytes o = _ipv4_octets(host)
    cdef int p = _check_port_arg(port)
    return f"PORT {o[0]},{o[1]},{o[2]},{o[3]},{p >> 8},{p & 255}\r\n".encode("ascii")


def format_eprt(host, port):
    """``EPRT |1|host|port|`` (``|2|`` for IPv6) + CRLF; the address is normalised."""
    if not isinstance(host, str):
        raise ValueError(f"host must be an IP address string, got {host!r}")
    try:
        if "%" in host:
            raise ValueError
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be an IPv4 or IPv6 address, got {host!r}") from None
    cdef int p = _check_port_arg(port)
    proto = 1 if address.version == 4 else 2
    return f"EPRT |{proto}|{address.compressed}|{p}|\r\n".encode("ascii")
