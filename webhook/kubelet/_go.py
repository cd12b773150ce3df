"""Go standard library semantics the kubelet's credential code relies on, ported to the letter.

Pure, standard library only. Python's own versions differ in the corners that decide
whether the kubelet uses a credential, so these follow Go:

* ``path/filepath.Match`` on bytes (Separator ``/``; ``ErrBadPattern`` counts as no match);
* ``net.SplitHostPort``;
* ``net/url.Parse``: the parts the kubelet uses (Host and the decoded Path), with the rules
  of current Go (since the October 2025 and February 2026 security releases), or with
  ``legacy=True`` those of the Go releases before them (go1.24.7 / go1.25.1 and older,
  which built every kubelet up to late 2025: the kit's v1.28.7 was built with go1.21.13);
* ``encoding/json``: ``json.Unmarshal``'s syntax (depth limit 10000, no NaN/Infinity,
  invalid UTF-8 and lone surrogates as U+FFFD) and its case-insensitive field matching;
* ``encoding/base64`` ``StdEncoding`` / ``RawStdEncoding`` (``\\r`` and ``\\n`` ignored);
* ``strings.TrimSpace``'s notion of white space.
"""

from __future__ import annotations

import binascii
import codecs
import json
import re

# encoding/json scanner.go maxNestingDepth.
MAX_JSON_DEPTH = 10000


# --- path/filepath.Match on bytes (Separator '/'; ErrBadPattern counts as no match) ---


def filepath_match(pattern: bytes, name: bytes) -> bool:
    """Go's filepath.Match(pattern, name); a malformed pattern never matches."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return b"/" not in name  # trailing * matches the rest unless it has a /
        rest, ok, bad = _match_chunk(chunk, name)
        if ok and (not rest or pattern):
            name = rest
            continue
        if bad:
            return False
        if not star:
            return False
        found = False
        for i in range(len(name)):
            if name[i] == 0x2F:  # a star cannot skip '/'
                break
            rest, ok, bad = _match_chunk(chunk, name[i + 1 :])
            if ok:
                if not pattern and rest:
                    continue  # the last chunk must exhaust the name
                name = rest
                found = True
                break
            if bad:
                return False
        if not found:
            return False
    return not name


def _scan_chunk(pattern: bytes) -> tuple[bool, bytes, bytes]:
    stripped = pattern.lstrip(b"*")
    star = len(stripped) != len(pattern)
    in_range = False
    i = 0
    while i < len(stripped):
        c = stripped[i]
        if c == 0x5C:  # '\\': escape (the error is reported by _match_chunk)
            if i + 1 < len(stripped):
                i += 1
        elif c == 0x5B:  # '['
            in_range = True
        elif c == 0x5D:  # ']'
            in_range = False
        elif c == 0x2A and not in_range:  # '*'
            break
        i += 1
    return star, stripped[:i], stripped[i:]


def _match_chunk(chunk: bytes, s: bytes) -> tuple[bytes, bool, bool]:
    """matchChunk: (rest, ok, bad pattern). Checks the whole chunk even after a miss."""
    failed = False
    ci = si = 0
    while ci < len(chunk):
        if not failed and si >= len(s):
            failed = True
        c = chunk[ci]
        if c == 0x5B:  # '[' character class
            r = 0
            if not failed:
                r, n = _decode_rune(s, si)
                si += n
            ci += 1
            negated = ci < len(chunk) and chunk[ci] == 0x5E  # '^'
            if negated:
                ci += 1
            match = False
            nrange = 0
            while True:
                if ci < len(chunk) and chunk[ci] == 0x5D and nrange > 0:
                    ci += 1
                    break
                lo, ci, bad = _get_esc(chunk, ci)
                if bad:
                    return b"", False, True
                hi = lo
                if chunk[ci] == 0x2D:  # '-'
                    hi, ci, bad = _get_esc(chunk, ci + 1)
                    if bad:
                        return b"", False, True
                if lo <= r <= hi:
                    match = True
                nrange += 1
            if match == negated:
                failed = True
        elif c == 0x3F:  # '?'
            if not failed:
                if s[si] == 0x2F:
                    failed = True
                _, n = _decode_rune(s, si)
                si += n
            ci += 1
        else:
            if c == 0x5C:  # '\\' escapes the next byte
                ci += 1
                if ci >= len(chunk):
                    return b"", False, True
            if not failed:
                if chunk[ci] != s[si]:
                    failed = True
                si += 1
            ci += 1
    if failed:
        return b"", False, False
    return s[si:], True, False


def _get_esc(chunk: bytes, ci: int) -> tuple[int, int, bool]:
    """getEsc: (rune, next index, bad pattern)."""
    if ci >= len(chunk) or chunk[ci] in (0x2D, 0x5D):  # '-' or ']'
        return 0, ci, True
    if chunk[ci] == 0x5C:
        ci += 1
        if ci >= len(chunk):
            return 0, ci, True
    r, n = _decode_rune(chunk, ci)
    ci += n
    return r, ci, (r == 0xFFFD and n == 1) or ci >= len(chunk)


def _decode_rune(b: bytes, i: int) -> tuple[int, int]:
    """utf8.DecodeRune: (RuneError, 1) for an invalid or short sequence."""
    if i >= len(b):
        return 0xFFFD, 0
    c = b[i]
    if c < 0x80:
        return c, 1
    if 0xC2 <= c <= 0xDF:
        n = 2
    elif 0xE0 <= c <= 0xEF:
        n = 3
    elif 0xF0 <= c <= 0xF4:
        n = 4
    else:
        return 0xFFFD, 1
    seq = b[i : i + n]
    if len(seq) == n:
        try:
            return ord(seq.decode("utf-8")), n
        except UnicodeDecodeError:
            pass
    return 0xFFFD, 1


# --- net.SplitHostPort ------------------------------------------------------------------


def split_host_port(hostport: bytes) -> tuple[bytes, bytes] | None:
    i = hostport.rfind(b":")
    if i < 0:
        return None  # missing port
    j = k = 0
    if hostport[:1] == b"[":
        end = hostport.find(b"]")
        if end < 0 or end + 1 != i:
            return None  # missing ']', missing port or too many colons
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:i]
        if b":" in host:
            return None  # too many colons
    if b"[" in hostport[j:] or b"]" in hostport[k:]:
        return None
    return host, hostport[i + 1 :]


# --- net/url.Parse (the parts the kubelet uses: Host and the decoded Path) --------------

_PATH, _HOST, _ZONE, _USERINFO, _FRAGMENT = range(5)
_CTL_RE = re.compile(rb"[\x00-\x1f\x7f]")
_BAD_ESCAPE_RE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ESCAPE_RE = re.compile(rb"%([0-9A-Fa-f]{2})")
# Bytes a host may hold unescaped (shouldEscape(c, encodeHost) is false), plus non-ASCII.
_HOST_BYTES_RE = re.compile(rb"[A-Za-z0-9\-_.~!$&'()*+,;=:\[\]<>\"%\x80-\xff]*")
_USERINFO_RE = re.compile(rb"[A-Za-z0-9\-._:~!$&'()*+,;=%@]*")
_HOST_ASCII = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~!$&'()*+,;=:[]<>\""
)


def url_parse(raw: bytes, legacy: bool = False) -> tuple[bytes, bytes] | None:
    """url.Parse(raw) -> (Host, Path), or None where Go returns an error.

    `legacy`: the host as Go parsed it before CVE-2025-47912 and CVE-2026-25679 (see
    :func:`_parse_host`). Where both accept a URL they give the same Host and Path."""
    u, _, frag = raw.partition(b"#")
    if _CTL_RE.search(u):
        return None  # net/url: invalid control character in URL
    scheme, rest = _get_scheme(u)
    if scheme is None:
        return None
    rest = rest.partition(b"?")[0]
    host = b""
    if not rest.startswith(b"/"):
        if scheme:
            rest = b""  # opaque: no host, no path
        elif b":" in rest.partition(b"/")[0]:
            return None  # first path segment in URL cannot contain colon
    if rest.startswith(b"//") and (scheme or not rest.startswith(b"///")):
        authority, slash, tail = rest[2:].partition(b"/")
        rest = slash + tail
        parsed_host = _parse_authority(authority, legacy)
        if parsed_host is None:
            return None
        host = parsed_host
    path = _unescape(rest, _PATH)
    if path is None:
        return None
    if frag and _unescape(frag, _FRAGMENT) is None:
        return None
    return host, path


def _get_scheme(raw: bytes) -> tuple[bytes | None, bytes]:
    for i, c in enumerate(raw):
        if 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A:
            continue
        if 0x30 <= c <= 0x39 or c in b"+-.":
            if i == 0:
                return b"", raw
        elif c == 0x3A:  # ':'
            if i == 0:
                return None, raw  # missing protocol scheme
            return raw[:i].lower(), raw[i + 1 :]
        else:
            return b"", raw
    return b"", raw


def _parse_authority(authority: bytes, legacy: bool) -> bytes | None:
    at = authority.rfind(b"@")
    host = (_parse_host_legacy if legacy else _parse_host)(authority[at + 1 :])
    if host is None or at < 0:
        return host
    userinfo = authority[:at]
    if not _USERINFO_RE.fullmatch(userinfo):
        return None  # net/url: invalid userinfo
    for part in userinfo.split(b":", 1):
        if _unescape(part, _USERINFO) is None:
            return None
    return host


def _parse_host(host: bytes) -> bytes | None:
    """parseHost of current Go: the older parse (below), then what the October 2025 and
    February 2026 security releases refuse besides: a ``[`` anywhere but at the start,
    and brackets around anything but an IPv6 address. The last colon counts."""
    if host.rfind(b"[") > 0:
        return None  # invalid IP-literal
    parsed = _parse_host_legacy(host)
    if parsed is None or not parsed.startswith(b"["):
        return parsed
    # Only an IPv6 address may be enclosed in brackets (not an IPv4 one); checked on the
    # unescaped text (a zone's %25 has become %), as Go does.
    if not _is_ipv6(parsed[1 : parsed.rfind(b"]")]):
        return None
    return parsed


def _parse_host_legacy(host: bytes) -> bytes | None:
    """parseHost of Go before its October 2025 security releases (go1.19-go1.24.7).

    Brackets are looked at only when the host starts with one, and what they hold is never
    checked: ``[registry]:5000`` and ``[00001::1]`` are hosts, and a ``[`` or ``]``
    elsewhere is an allowed host character (``reg[0-9].example.com``)."""
    if host.startswith(b"["):
        close = host.rfind(b"]")
        if close < 0:
            return None  # missing ']' in host
        if not _valid_optional_port(host[close + 1 :]):
            return None
        zone = host[:close].find(b"%25")
        if zone >= 0:
            parts = (
                _unescape(host[:zone], _HOST),
                _unescape(host[zone:close], _ZONE),
                _unescape(host[close:], _HOST),
            )
            if None in parts:
                return None
            return b"".join(p for p in parts if p is not None)
    else:
        colon = host.rfind(b":")
        if colon != -1 and not _valid_optional_port(host[colon:]):
            return None  # invalid port after host
    return _unescape(host, _HOST)


def _valid_optional_port(port: bytes) -> bool:
    return port == b"" or (port[:1] == b":" and (len(port) == 1 or port[1:].isdigit()))


def _unescape(s: bytes, mode: int) -> bytes | None:
    """net/url unescape: None for a malformed or (in a host) disallowed escape."""
    if mode in (_HOST, _ZONE) and not _HOST_BYTES_RE.fullmatch(s):
        return None  # invalid character in host name
    if b"%" not in s:
        return s
    if _BAD_ESCAPE_RE.search(s):
        return None  # invalid URL escape
    if mode in (_HOST, _ZONE):
        for m in _ESCAPE_RE.finditer(s):
            escape = m.group()
            value = int(m.group(1), 16)
            if escape == b"%25":
                continue
            if mode == _HOST and value < 0x80:
                return None  # a host may %-encode only non-ASCII bytes
            if mode == _ZONE and value != 0x20 and value not in _HOST_ASCII:
                return None
    return _ESCAPE_RE.sub(lambda m: bytes((int(m.group(1), 16),)), s)


def _is_ipv6(addr: bytes) -> bool:
    """netip.ParseAddr(addr) succeeds and is not IPv4 (Is4)."""
    for c in addr:
        if c in b".%":  # '.': IPv4 (not allowed in brackets), '%': no address
            return False
        if c == 0x3A:
            return _parse_ipv6(addr)
    return False


def _parse_ipv6(s: bytes) -> bool:
    """netip parseIPv6 (with the 4-digit group limit of current Go)."""
    s, pct, zone = s.partition(b"%")
    if pct and not zone:
        return False  # zone must be a non-empty string
    ellipsis = -1
    if s.startswith(b"::"):
        ellipsis = 0
        s = s[2:]
        if not s:
            return True
    i = 0
    while i < 16:
        off = 0
        while off < len(s) and s[off] in b"0123456789abcdefABCDEF":
            off += 1
            if off > 4:
                return False  # each group must have 4 or less digits
        if off == 0:
            return False
        if off < len(s) and s[off] == 0x2E:  # trailing IPv4
            if (ellipsis < 0 and i != 12) or i + 4 > 16:
                return False
            if not _is_ipv4(s):
                return False
            s = b""
            i += 4
            break
        i += 2
        s = s[off:]
        if not s:
            break
        if s[0] != 0x3A or len(s) == 1:
            return False
        s = s[1:]
        if s[0] == 0x3A:
            if ellipsis >= 0:
                return False  # multiple ::
            ellipsis = i
            s = s[1:]
            if not s:
                break
    if s:
        return False  # trailing garbage
    if i < 16:
        return ellipsis >= 0
    return ellipsis < 0  # :: must expand to at least one group


def _is_ipv4(s: bytes) -> bool:
    """netip parseIPv4."""
    fields = s.split(b".")
    if len(fields) != 4:
        return False
    for f in fields:
        if not f or not f.isdigit() or (len(f) > 1 and f[:1] == b"0") or int(f) > 255:
            return False
    return True


# --- Go encoding/json -------------------------------------------------------------------


class JSONObject:
    """A JSON object as its (key, value) pairs in document order (duplicates kept)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        self.pairs = pairs


class _Number:
    """A JSON number; its value never matters (no field of these types is numeric)."""

    __slots__ = ()


_NUMBER = _Number()


def _number(_text: str) -> _Number:
    return _NUMBER


def _no_constant(_name: str) -> object:
    raise JSONSyntaxError("NaN and Infinity are not JSON")


class JSONSyntaxError(ValueError):
    pass


DECODER = json.JSONDecoder(
    object_pairs_hook=JSONObject,
    parse_int=_number,
    parse_float=_number,
    parse_constant=_no_constant,
)


def json_unmarshal(blob: bytes) -> object:
    """json.Unmarshal's view of blob; JSONSyntaxError (a reason, never a quote of the
    document) where Go reports a syntax error."""
    text = utf8_decode(blob)
    try:
        return DECODER.decode(text)
    except RecursionError:
        pass  # deeper than Python's C scanner goes; Go allows 10000 levels
    except json.JSONDecodeError as exc:
        message = exc.msg.partition(":")[0]  # never quote the document
        raise JSONSyntaxError(f"{message} at line {exc.lineno}, column {exc.colno}") from None
    except JSONSyntaxError:
        raise
    except ValueError as exc:
        raise JSONSyntaxError(type(exc).__name__) from None
    return parse_json_iterative(text)


def utf8_decode(data: bytes) -> str:
    """Decode as Go does: each byte of an invalid sequence becomes U+FFFD."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    parts: list[str] = []
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        try:
            parts.append(codecs.utf_8_decode(view[pos:], "strict", True)[0])
            break
        except UnicodeDecodeError as exc:
            parts.append(codecs.utf_8_decode(view[pos : pos + exc.start], "strict", True)[0])
            parts.append("\ufffd")
            pos += exc.start + 1
    return "".join(parts)


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def fix_surrogates(s: str) -> str:
    """Go decodes a lone surrogate escape (\\ud800) to U+FFFD."""
    return _SURROGATE_RE.sub("\ufffd", s)


_WS_RE = re.compile(r"[ \t\n\r]*")
_STRING_RE = re.compile(r'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"')
_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS: dict[str, object] = {"true": True, "false": False, "null": None}


def _skip_ws(text: str, pos: int) -> int:
    m = _WS_RE.match(text, pos)
    return pos if m is None else m.end()


def parse_json_iterative(text: str) -> object:
    """The same result as DECODER.decode, without recursion, and Go's depth limit."""
    stack: list[JSONObject | list[object]] = []
    keys: list[str] = []  # the pending key of each open object
    pos = _skip_ws(text, 0)
    while True:
        # A value starts at pos: open a container (and go read its first value) or
        # read a scalar.
        if text.startswith(("{", "["), pos):
            if len(stack) >= MAX_JSON_DEPTH:
                raise JSONSyntaxError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            container: JSONObject | list[object] = JSONObject([]) if text[pos] == "{" else []
            pos = _skip_ws(text, pos + 1)
            if not text.startswith("}" if isinstance(container, JSONObject) else "]", pos):
                stack.append(container)
                if isinstance(container, JSONObject):
                    key, pos = _read_key(text, pos)
                    keys.append(key)
                continue
            value: object = container
            pos += 1
        else:
            value, pos = _read_scalar(text, pos)
        # Store the value, then close as many containers as the text closes.
        while True:
            pos = _skip_ws(text, pos)
            if not stack:
                if pos != len(text):
                    raise JSONSyntaxError(f"extra data at offset {pos}")
                return value
            top = stack[-1]
            if isinstance(top, JSONObject):
                top.pairs.append((keys[-1], value))
            else:
                top.append(value)
            if text.startswith(",", pos):
                pos = _skip_ws(text, pos + 1)
                if isinstance(top, JSONObject):
                    keys[-1], pos = _read_key(text, pos)
                break
            if not text.startswith("}" if isinstance(top, JSONObject) else "]", pos):
                raise JSONSyntaxError(f"invalid character or end of input at offset {pos}")
            pos += 1
            value = stack.pop()
            if isinstance(value, JSONObject):
                keys.pop()


def _read_scalar(text: str, pos: int) -> tuple[object, int]:
    """A string, number or literal at pos, and the position after it."""
    c = text[pos : pos + 1]
    if c == '"':
        m = _STRING_RE.match(text, pos)
        if m is None:
            raise JSONSyntaxError(f"invalid string at offset {pos}")
        return json.loads(m.group()), m.end()
    if c and c in "-0123456789":
        m = _NUMBER_RE.match(text, pos)
        if m is None:
            raise JSONSyntaxError(f"invalid number at offset {pos}")
        return _NUMBER, m.end()
    for literal, value in _LITERALS.items():
        if text.startswith(literal, pos):
            return value, pos + len(literal)
    raise JSONSyntaxError(f"invalid character or end of input at offset {pos}")


def _read_key(text: str, pos: int) -> tuple[str, int]:
    """An object key and the ':' after it; returns the position of the value."""
    m = _STRING_RE.match(text, pos)
    if m is None:
        raise JSONSyntaxError(f"expected a string key at offset {pos}")
    key = json.loads(m.group())
    pos = _skip_ws(text, m.end())
    if not text.startswith(":", pos):
        raise JSONSyntaxError(f"expected ':' at offset {pos}")
    pos = _skip_ws(text, pos + 1)
    return key, pos


_FOLD = str.maketrans({"\u017f": "s", "\u212a": "k"})  # long s, Kelvin sign


def is_field(name: str, field_name: str) -> bool:
    """Does JSON key `name` select the struct field `field_name` (lower-case ASCII)?

    encoding/json prefers an exact match and accepts a Unicode case-fold match; for
    an ASCII field name the only non-ASCII folds are U+017F (s) and U+212A (k).
    """
    if len(name) != len(field_name):
        return False
    folded = name.translate(_FOLD)
    return folded.isascii() and folded.lower() == field_name


def json_kind(value: object) -> str:
    if isinstance(value, JSONObject):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


# strings.TrimSpace / unicode.IsSpace
SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


# --- Go encoding/base64 (StdEncoding / RawStdEncoding; '\r' and '\n' are ignored) -------

_B64_ALPHABET_RE = re.compile(r"[A-Za-z0-9+/]*")


def b64_std(text: str) -> bytes | None:
    s = text.replace("\r", "").replace("\n", "")
    body = s.rstrip("=")
    if len(s) % 4 or len(s) - len(body) > 2 or not _B64_ALPHABET_RE.fullmatch(body):
        return None
    try:
        return binascii.a2b_base64(s)
    except (binascii.Error, ValueError):
        return None


def b64_raw(text: str) -> bytes | None:
    s = text.replace("\r", "").replace("\n", "")
    if len(s) % 4 == 1 or not _B64_ALPHABET_RE.fullmatch(s):
        return None
    try:
        return binascii.a2b_base64(s + "=" * (-len(s) % 4))
    except (binascii.Error, ValueError):
        return None


# --- display ----------------------------------------------------------------------------


def display(raw: bytes) -> str:
    """Text for bytes; a byte that is not part of valid UTF-8 is shown as %XX."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return "".join(
        f"%{ord(ch) - 0xDC00:02X}" if "\udc80" <= ch <= "\udcff" else ch
        for ch in raw.decode("utf-8", "surrogateescape")
    )
