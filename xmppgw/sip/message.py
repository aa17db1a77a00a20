# -*- test-case-name: tests.test_sip_message -*-
"""
The SIP message model, parser, serialiser, stream framer and response
construction (RFC 3261 sections 7, 8.2.6, 18.3, 20 and 25).

Everything is bytes-correct: bodies are L{bytes}, C{Content-Length} counts
bytes.  The header section is decoded as UTF-8; a header section that is
not valid UTF-8 is a L{SIPParseError} (answered 400), decoded with
C{surrogateescape} for the partial request so that the offending bytes
come back unchanged in the 400's copied headers.

Pure code: no I/O, no reactor, no clock.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple, Union

from xmppgw.compat import compilePossessive
from xmppgw.memo import MAX_KEPT_LENGTH, keepBounded, perAddress
from xmppgw.randomid import randomHex
from xmppgw.sip.uri import (
    URIError, Params, _fastNew, _fastReplace, _paramValue, _hasParam,
    _setParam, _formatParams, _splitSimpleParams, parseParams, parseNameAddr,
    splitQuoted)


__all__ = [
    "SIPParseError",
    "FramingError",
    "Headers",
    "Request",
    "Response",
    "Via",
    "parseVia",
    "topVia",
    "serialize",
    "parseMessage",
    "StreamFramer",
    "makeResponse",
    "reasonPhrase",
    "canonicalName",
    "REASON_PHRASES",
]


class SIPParseError(ValueError):
    """
    A message (or a header value) could not be parsed.

    @ivar reason: human-readable reason, usable as a 400 reason phrase.
    @ivar request: a partial L{Request} (start line and the headers that
        could be read) when the message looked like a request, so that the
        error response can carry the right Via/From/To/Call-ID/CSeq;
        otherwise L{None}.
    @ivar code: the response code to answer with: 400, or 505 for an
        unsupported SIP version.
    """

    def __init__(self, reason: str, request: Optional["Request"] = None,
                 code: int = 400):
        ValueError.__init__(self, reason)
        self.reason = reason
        self.request = request
        self.code = code


class FramingError(ValueError):
    """
    A stream cannot be framed any more (message too large, missing or
    invalid Content-Length, garbage).  The connection must be closed.
    """


# Header names -------------------------------------------------------------

_COMPACT = {
    "v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact",
    "l": "Content-Length", "c": "Content-Type", "e": "Content-Encoding",
    "s": "Subject", "k": "Supported", "o": "Event", "r": "Refer-To",
    "u": "Allow-Events", "a": "Accept-Contact", "b": "Referred-By",
    "d": "Request-Disposition", "j": "Reject-Contact", "n": "Identity-Info",
    "x": "Session-Expires", "y": "Identity",
}

_SPECIAL = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate":
    "WWW-Authenticate", "mime-version": "MIME-Version", "rack": "RAck",
    "rseq": "RSeq", "sip-etag": "SIP-ETag", "sip-if-match": "SIP-If-Match",
    "content-id": "Content-ID", "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
}

_CANON_CACHE_MAX = 2048
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


class _CanonicalNames(dict):
    """
    C{{name as written: canonical name}}: looking up a name not yet kept
    computes its canonical form (the rule of L{canonicalName}) and keeps it
    while there are fewer than C{_CANON_CACHE_MAX}.  Hot callers subscript
    this directly: one lookup when known, no second one when not.
    """

    __slots__ = ()

    def __missing__(self, name: str) -> str:
        lower = name.strip().lower()
        if lower in _COMPACT:
            canon = _COMPACT[lower]
        elif lower in _SPECIAL:
            canon = _SPECIAL[lower]
        else:
            canon = "-".join(w[:1].upper() + w[1:] for w in lower.split("-"))
        if len(self) < _CANON_CACHE_MAX and len(name) <= _LINE_KEPT_MAX:
            self[name] = canon
        return canon


_canonCache = _CanonicalNames()


def canonicalName(name: str) -> str:
    """
    The canonical form of a header name: compact forms expanded
    (C{v} -> C{Via}), known names spelt as in the RFCs (C{Call-ID},
    C{CSeq}), others capitalised per dash-separated word.
    """
    return _canonCache[name]


class Headers:
    """
    An ordered multi-map of SIP headers, one entry per header line.  Names
    are canonicalised on entry (L{canonicalName}); lookups are
    case-insensitive and accept compact forms.

    Internally C{_items} is a list of C{(canonicalName, value)} pairs; the
    code of this package that builds one (parser, L{makeResponse}, the
    transaction layer) appends canonical names to it directly.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Tuple[str, str]] = ()):
        """
        @param items: initial C{(name, value)} pairs, or another L{Headers}.
        """
        if isinstance(items, Headers):
            self._items = list(items._items)
        else:
            canon = _canonCache
            self._items = [(canon[n], v) for n, v in items]

    def add(self, name: str, value: str) -> None:
        """
        Append a header line.
        """
        self._items.append((_canonCache[name], value))

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """
        The first value of C{name}, or C{default}.
        """
        canon = _canonCache[name]
        for n, v in self._items:
            if n == canon:
                return v
        return default

    def getAll(self, name: str) -> List[str]:
        """
        All values of C{name}, in order, one per header line.
        """
        name = canonicalName(name)
        return [v for n, v in self._items if n == name]

    def set(self, name: str, value: str) -> None:
        """
        Replace all C{name} lines with one; it takes the place of the first
        existing line, or is appended.
        """
        name = canonicalName(name)
        out = []
        done = False
        for item in self._items:
            if item[0] == name:
                if not done:
                    out.append((name, value))
                    done = True
            else:
                out.append(item)
        if not done:
            out.append((name, value))
        self._items = out

    def remove(self, name: str) -> None:
        """
        Remove every C{name} line (no error when absent).
        """
        name = canonicalName(name)
        self._items = [item for item in self._items if item[0] != name]

    def __contains__(self, name: str) -> bool:
        name = canonicalName(name)
        for n, _ in self._items:
            if n == name:
                return True
        return False

    def items(self) -> List[Tuple[str, str]]:
        """
        All C{(name, value)} pairs in order (a new list).
        """
        return list(self._items)

    def copy(self) -> "Headers":
        """
        An independent copy.
        """
        return Headers(self)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items))

    def __eq__(self, other):
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    def __repr__(self) -> str:
        return "Headers(%r)" % (self._items,)


def _headersOf(items: list) -> Headers:
    """
    A L{Headers} that takes over C{items}, a list of C{(name, value)} pairs
    whose names are already canonical.
    """
    headers = Headers.__new__(Headers)
    headers._items = items
    return headers


def _toHeaders(headers) -> Headers:
    if headers is None:
        return Headers()
    if isinstance(headers, Headers):
        return headers
    return Headers(headers)


def _checkBody(body) -> bytes:
    if isinstance(body, bytearray):
        return bytes(body)
    if not isinstance(body, bytes):
        raise TypeError("SIP body must be bytes, not %s"
                        % (type(body).__name__,))
    return body


class Request:
    """
    A SIP request.

    @ivar method: the method, e.g. C{MESSAGE} (case-sensitive).
    @ivar uri: the Request-URI text.
    @ivar headers: L{Headers}.
    @ivar body: L{bytes}.
    @ivar source: where it came from (set by the transport), or L{None}.
    """

    isRequest = True

    def __init__(self, method: str, uri: str, headers=None,
                 body: bytes = b""):
        self.method = method
        self.uri = uri
        self.headers = _toHeaders(headers)
        self.body = _checkBody(body)
        self.source = None

    def startLine(self) -> str:
        """
        C{METHOD uri SIP/2.0}.
        """
        return "%s %s SIP/2.0" % (self.method, self.uri)

    def __repr__(self) -> str:
        return "<Request %s %s>" % (self.method, self.uri)


class Response:
    """
    A SIP response.

    @ivar code: the status code (L{int}).
    @ivar reason: the reason phrase.
    @ivar headers: L{Headers}.
    @ivar body: L{bytes}.
    @ivar source: where it came from (set by the transport), or L{None}.
    """

    isRequest = False

    def __init__(self, code: int, reason: str, headers=None,
                 body: bytes = b""):
        self.code = code
        self.reason = reason
        self.headers = _toHeaders(headers)
        self.body = _checkBody(body)
        self.source = None

    def startLine(self) -> str:
        """
        C{SIP/2.0 code reason}.
        """
        return "SIP/2.0 %d %s" % (self.code, self.reason)

    def __repr__(self) -> str:
        return "<Response %d %s>" % (self.code, self.reason)


Message = Union[Request, Response]


def _newRequest(method: str, uri: str, headers: Headers,
                body: bytes = b"") -> Request:
    """
    A L{Request} made of checked parts (C{headers} a L{Headers}, C{body}
    L{bytes}), without the checks of its constructor.
    """
    request = Request.__new__(Request)
    request.method = method
    request.uri = uri
    request.headers = headers
    request.body = body
    request.source = None
    return request


def _newResponse(code: int, reason: str, headers: Headers,
                 body: bytes = b"") -> Response:
    """
    A L{Response} made of checked parts, as L{_newRequest}.
    """
    response = Response.__new__(Response)
    response.code = code
    response.reason = reason
    response.headers = headers
    response.body = body
    response.source = None
    return response


def serialize(message: Message) -> bytes:
    """
    The wire form of C{message}: start line, headers in order, a correct
    byte C{Content-Length} (replacing any present), a blank line, the body.
    """
    body = message.body
    lines = [name + ": " + value for name, value in message.headers._items
             if name != "Content-Length"]
    lines.append("Content-Length: %d\r\n\r\n" % (len(body),))
    return (message.startLine() + "\r\n" + "\r\n".join(lines)).encode(
        "utf-8", "surrogateescape") + body


# Via ----------------------------------------------------------------------

_VIA_RE = compilePossessive(
    r"\s*+(?P<name>[A-Za-z0-9\-.!%*_+`'~]+)\s*+/\s*+"
    r"(?P<version>[A-Za-z0-9\-.!%*_+`'~]+)\s*+/\s*+"
    r"(?P<transport>[A-Za-z0-9\-.!%*_+`'~]+)\s++"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?)"
    r"(?:\s*+:\s*+(?P<port>[0-9]{1,5}))?\s*+")


@dataclass(frozen=True)
class Via:
    """
    One Via value.

    @ivar transport: upper-cased transport (C{UDP}, C{TCP}, C{TLS}, ...).
    @ivar host: the sent-by host (lower-cased; IPv6 with brackets).
    @ivar port: the sent-by port or L{None}.
    @ivar params: C{(name, value-or-None)} pairs, names lower-cased.
    @ivar protocol: C{SIP/2.0}.
    """

    transport: str
    host: str
    port: Optional[int] = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    def param(self, name: str) -> Optional[str]:
        """
        Value of parameter C{name}; L{None} if absent or value-less.
        """
        return _paramValue(self.params, name)

    def hasParam(self, name: str) -> bool:
        """
        Whether parameter C{name} is present.
        """
        return _hasParam(self.params, name)

    def withParam(self, name: str, value: Optional[str] = None) -> "Via":
        """
        A copy with parameter C{name} set (replaced in place, or appended).
        """
        return _fastReplace(self, params=_setParam(self.params, name, value))

    @property
    def branch(self) -> Optional[str]:
        """
        The C{branch} parameter or L{None}.
        """
        return _paramValue(self.params, "branch")

    @property
    def sentBy(self) -> str:
        """
        C{host} or C{host:port}.
        """
        if self.port is None:
            return self.host
        return "%s:%d" % (self.host, self.port)

    def __str__(self) -> str:
        port = self.port
        return "%s/%s %s%s" % (
            self.protocol, self.transport,
            self.host if port is None else "%s:%d" % (self.host, port),
            _formatParams(self.params))


def parseVia(value: str) -> List[Via]:
    """
    Parse one Via header line, which may hold several comma-separated
    values.  Linear white space is allowed around C{/}, C{:}, C{;} and C{=}.

    The same value is read several times while one request is handled
    (transport, transaction layer, request policy, response routing), so
    results are cached (bounded; L{Via} is immutable, the list is a copy).

    @raise SIPParseError: on any malformed or empty element.
    """
    if type(value) is str:
        return list(_parsedVias(value))
    return _parseVia(value)


class _ParsedVias(dict):
    """
    C{{text: (Via, ...)}}: looking up a line not yet kept parses it
    (raising L{SIPParseError} when it does not parse) and keeps it
    (L{_keepVias}).
    """

    __slots__ = ()

    def __missing__(self, value: str) -> Tuple[Via, ...]:
        vias = tuple(_parseVia(value))
        _keepVias(value, vias)
        return vias


#: Parsed Via lines, emptied when full.  The parsed line is kept here
#: rather than on the message: a message lives on in a completed
#: transaction (32 s for Timer J) and every object it holds is walked by
#: the garbage collector; this cache holds a bounded number.
_viaCache = _ParsedVias()
_VIA_CACHE_MAX = 1024


def _parsedVias(value: str) -> Tuple[Via, ...]:
    """
    The L{Via} values of the Via line C{value} (a C{str}), parsed once.

    @raise SIPParseError: when it does not parse.
    """
    return _viaCache[value]


def _keepVias(value: str, vias: Tuple[Via, ...]) -> None:
    """
    Remember C{vias} as the parsed form of the Via line C{value}: only for
    a line known to parse to exactly C{vias} (one the caller formatted from
    parsed values, see L{xmppgw.sip.transport}).
    """
    keepBounded(_viaCache, value, vias, _VIA_CACHE_MAX)


#: A Via line in its usual shape: one value, no blanks but the one before
#: the sent-by, token parameters (L{_SIMPLE_HEADER_PARAMS_RE}). What it
#: matches, L{_parseVia}'s general rule reads the same way.
_SIMPLE_VIA_RE = re.compile(
    r"([A-Za-z0-9\-.!%*_+`'~]+)/([A-Za-z0-9\-.!%*_+`'~]+)/"
    r"([A-Za-z0-9\-.!%*_+`'~]+) "
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?)"
    r"(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~]+)?)*)")


def _parseVia(value: str) -> List[Via]:
    match = _SIMPLE_VIA_RE.fullmatch(value)
    if match is not None:
        name, version, transport, host, port, params = match.groups()
        if port is not None:
            port = int(port)
        if port is None or port <= 65535:
            if name == "SIP" and version == "2.0":
                protocol = "SIP/2.0"
            else:
                protocol = "%s/%s" % (name.upper(), version)
            return [_fastNew(Via, transport=transport.upper(),
                             host=host.lower(), port=port,
                             params=_splitSimpleParams(params) if params
                             else (),
                             protocol=protocol)]
    try:
        parts = splitQuoted(value, ",")
    except URIError as e:
        raise SIPParseError("Invalid Via: %s" % (e,))
    out = []
    for part in parts:
        try:
            head, semi, rest = part.partition(";")
            if '"' in head:
                raise URIError("quote in sent-by")
            match = _VIA_RE.fullmatch(head)
            if match is None:
                raise URIError("malformed Via value %r" % (part.strip(),))
            name, version, transport, host, port = match.group(
                "name", "version", "transport", "host", "port")
            if port is not None:
                port = int(port)
                if port > 65535:
                    raise URIError("Via port out of range")
            params = parseParams(semi + rest) if semi else ()
        except URIError as e:
            raise SIPParseError("Invalid Via: %s" % (e,))
        out.append(_fastNew(Via, transport=transport.upper(),
                            host=host.lower(), port=port, params=params,
                            protocol="%s/%s" % (name.upper(), version)))
    return out


def topVia(message: Message) -> Via:
    """
    The first Via value of C{message}.

    @raise SIPParseError: when there is no Via or it does not parse.
    """
    value = message.headers.get("Via")
    if value is None:
        raise SIPParseError("Missing Via Header")
    if type(value) is not str:
        return _parseVia(value)[0]
    return _viaCache[value][0]


# Responses ----------------------------------------------------------------

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_CLASS_PHRASES = {1: "Trying", 2: "OK", 3: "Redirected", 4: "Request Failure",
                  5: "Server Failure", 6: "Global Failure"}


def reasonPhrase(code: int) -> str:
    """
    The standard reason phrase for C{code}; for an unlisted code, a
    generic phrase for its class (e.g. C{Request Failure} for 4xx).
    """
    phrase = REASON_PHRASES.get(code)
    if phrase is None:
        phrase = _CLASS_PHRASES.get(code // 100, "Unknown")
    return phrase


_TAG_RE = re.compile(r";\s*tag\s*=", re.IGNORECASE)


def _hasTag(toValue: str) -> bool:
    try:
        return parseNameAddr(toValue).hasParam("tag")
    except URIError:
        return _TAG_RE.search(toValue) is not None


def makeResponse(request: Request, code: int, reason: Optional[str] = None,
                 headers: Iterable[Tuple[str, str]] = (),
                 toTag: Optional[str] = None) -> Response:
    """
    Build a response to C{request} (RFC 3261 8.2.6): Via (all, in order),
    From, To, Call-ID and CSeq are copied; the To header gets a C{tag}
    (C{toTag}, or a fresh random one) unless it has one already or the
    code is 100; a 100 also copies C{Timestamp}.

    @param headers: extra C{(name, value)} pairs appended after the copied
        ones.
    @param reason: the reason phrase; defaults to L{reasonPhrase}.
    """
    items = []
    append = items.append
    for item in request.headers._items:
        name = item[0]
        if name in _COPIED:
            append(item)
        elif name == "To":
            value = item[1]
            if code != 100 and not _hasTag(value):
                tag = toTag if toTag is not None else randomHex(8)
                item = (name, "%s;tag=%s" % (value, tag))
            append(item)
        elif name == "Timestamp" and code == 100:
            append(item)
    out = _headersOf(items)
    if headers:
        for name, value in (headers.items() if isinstance(headers, Headers)
                            else headers):
            out.add(name, value)
    return _newResponse(code, reason if reason is not None
                        else reasonPhrase(code), out)


_COPIED = frozenset(["Via", "From", "Call-ID", "CSeq"])


# Parser -------------------------------------------------------------------

_nameCache = {}
_NAME_CACHE_MAX = 2048


def _headerName(name: str) -> Optional[str]:
    """
    Canonical form of a header name read from the wire, or L{None} if it
    is not a token.
    """
    canon = _nameCache.get(name)
    if canon is not None:
        return canon
    if not _TOKEN_RE.fullmatch(name):
        return None
    canon = canonicalName(name)
    if len(_nameCache) < _NAME_CACHE_MAX and len(name) <= _LINE_KEPT_MAX:
        _nameCache[name] = canon
    return canon


_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_BAD_URI_CHARS_RE = re.compile(r"[\x00-\x20\x7f]")


def _parseContentLength(value: str) -> Optional[int]:
    value = value.strip(" \t")
    if not value or len(value) > 10 or not (value.isdigit() and
                                            value.isascii()):
        return None
    return int(value)


def _checkVersion(version: str) -> Optional[SIPParseError]:
    if version == "SIP/2.0" or version.upper() == "SIP/2.0":
        return None
    if _VERSION_RE.fullmatch(version):
        return SIPParseError("SIP Version Not Supported: %s" % (version,),
                             code=505)
    return SIPParseError("Malformed SIP Version")


#: C{{start line: (isResponse, method or code, Request-URI or reason)}}
#: for the start lines read before that had no error (bounded: emptied
#: when full; 1,024 on PyPy, more on CPython: L{perAddress}).
_startLines = {}
_START_LINES_MAX = perAddress(1024)
#: The longest start or header line, Via line or header name kept
#: (L{_startLines}, L{_headerLines}, L{_viaCache} through
#: L{xmppgw.memo.keepBounded}; L{_nameCache}, L{_canonCache}, which stop
#: taking names when full): the memos' rule,
#: L{xmppgw.memo.MAX_KEPT_LENGTH}; the caches hold a bounded number of
#: bytes whatever the peers send.
_LINE_KEPT_MAX = MAX_KEPT_LENGTH


def _keepStartLine(line: str, parts: tuple) -> None:
    keepBounded(_startLines, line, parts, _START_LINES_MAX)


#: C{{header line: (canonical name, value)}}: the header lines read before
#: in their usual shape (a name as in L{_nameCache}, a colon, the value),
#: as L{parseMessage} reads them (bounded: emptied when full). Most lines
#: repeat from message to message (Max-Forwards, CSeq, Content-Type, the
#: To of a peer); those of the headers in L{_UNIQUE_LINES} nearly never do
#: and are not kept. 2,048 on PyPy, more on CPython (L{perAddress}).
_headerLines = {}
_HEADER_LINES_MAX = perAddress(2048)
_UNIQUE_LINES = frozenset(["Via", "Call-ID", "From"])


#: Whether L{parseMessage} finds the lines of the header section with
#: L{_crlfHead} (PyPy) rather than with C{bytes.find} and C{str.split} of
#: CRLF (CPython). PyPy searches for a string of more than one character
#: byte by byte, about 1.5 ns a byte: finding the end of a 200 OK's
#: header section, splitting it and checking for bare LFs took 1.5 us
#: there, against 0.65 us by looking for each LF (C{memchr}); on CPython,
#: whose searches are fast, the loop of L{_crlfHead} is twice as slow as
#: those three calls.
SCAN_HEAD_BY_LINE = platform.python_implementation() == "PyPy"


def _crlfHead(data: bytes) -> Optional[Tuple[List[str], Optional[int]]]:
    """
    The lines of the header section of C{data} (the start line first) and
    where its body starts (L{None} when there is no empty line), when
    every line of the header section, and the empty line that ends it,
    ends in CRLF and the section is valid UTF-8; else L{None}, for the
    general rule of L{parseMessage} (which reads the same lines from such
    a message).

    @param data: a message that does not start with CR or LF.
    """
    find = data.find
    size = len(data)
    ends = []
    nl = find(b"\n")
    headEnd = size
    bodyStart = None
    while nl != -1:
        if data[nl - 1] != 13:
            return None  # a bare LF
        after = nl + 1
        if after < size:
            c = data[after]
            if c == 13:
                if after + 1 < size and data[after + 1] == 10:
                    headEnd = nl - 1
                    bodyStart = after + 2
                    break
            elif c == 10:
                return None  # a bare LF
        ends.append(nl - 1)
        nl = find(b"\n", after)
    try:
        text = data[:headEnd].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) != headEnd:
        # Not ASCII: the offsets of the CRLFs are not those of the text.
        return text.split("\r\n"), bodyStart
    lines = []
    start = 0
    for end in ends:
        lines.append(text[start:end])
        start = end + 2
    lines.append(text[start:])
    return lines, bodyStart


def parseMessage(data: bytes) -> Message:
    """
    Parse one complete SIP message: a datagram, or one message cut out of
    a stream by L{StreamFramer}.

    Empty lines before the start line are skipped (RFC 3261 7.5).  Lines
    may end in CRLF or a bare LF; folded (continuation) lines are joined
    with one space.  With no C{Content-Length} the body is the rest of the
    data (UDP, RFC 3261 18.3); extra bytes after C{Content-Length} bytes
    are discarded; a C{Content-Length} larger than the data available is
    an error.

    Only structure is checked here; the presence and syntax of To, From,
    CSeq, Call-ID, Via and Max-Forwards are checked by
    L{xmppgw.sip.uas.checkRequest}.

    @raise SIPParseError: the message cannot be parsed; C{request} is a
        partial L{Request} if the start line looked like a request line,
        and C{code} is 505 for an unsupported SIP version, else 400.
    """
    if not isinstance(data, bytes):
        if isinstance(data, bytearray):
            data = bytes(data)
        else:
            raise TypeError("parseMessage needs bytes")
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    if not data:
        raise SIPParseError("Empty Message")

    error = None
    scanned = _crlfHead(data) if SCAN_HEAD_BY_LINE else None
    if scanned is not None:
        lines, bodyStart = scanned
    else:
        end = data.find(b"\r\n\r\n")
        lf = data.find(b"\n\n", 0, end if end != -1 else len(data))
        if lf != -1:
            head, bodyStart = data[:lf], lf + 2
        elif end != -1:
            head, bodyStart = data[:end], end + 4
        else:
            head, bodyStart = data, None

        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = head.decode("utf-8", "surrogateescape")
            error = SIPParseError("Header Section Is Not Valid UTF-8")

        lines = text.split("\r\n")
        if text.count("\n") != len(lines) - 1:
            # Some line ends in a bare LF.
            lines = [line[:-1] if line.endswith("\r") else line
                     for line in text.split("\n")]
    if lines and lines[-1] == "" and bodyStart is None:
        lines.pop()

    # Start line.
    first = lines[0]
    startError = None
    start = _startLines.get(first)
    if start is not None:
        # A start line read before, which had no error.
        isResponse, a, b = start
        if isResponse:
            message = _newResponse(a, b, _headersOf([]))
        else:
            message = _newRequest(a, b, _headersOf([]))
    elif first[:4].upper() == "SIP/":
        isResponse = True
        parts = first.split(" ", 2)
        if len(parts) < 2:
            raise SIPParseError("Malformed Status-Line")
        codeText = parts[1]
        if not (len(codeText) == 3 and codeText.isdigit()
                and codeText.isascii()) or codeText[0] not in "123456":
            raise SIPParseError("Invalid Status Code %r" % (codeText[:20],))
        versionError = _checkVersion(parts[0])
        if versionError is not None:
            raise versionError
        message = _newResponse(int(codeText), parts[2] if len(parts) == 3
                               else "", _headersOf([]))
        _keepStartLine(first, (True, message.code, message.reason))
    else:
        isResponse = False
        parts = first.split(" ")
        if len(parts) != 3:
            startError = SIPParseError("Malformed Request-Line")
            method = parts[0]
            uri = parts[1] if len(parts) > 1 else ""
        else:
            method, uri, version = parts
            if not _TOKEN_RE.fullmatch(method):
                startError = SIPParseError("Invalid Method")
            elif not uri or _BAD_URI_CHARS_RE.search(uri):
                startError = SIPParseError("Invalid Request-URI")
            else:
                startError = _checkVersion(version)
        message = _newRequest(method, uri, _headersOf([]))
        if startError is None:
            _keepStartLine(first, (False, method, uri))

    # Headers.
    items = message.headers._items
    append = items.append
    names = _nameCache
    known = _headerLines
    contentLength = None
    for line in lines[1:]:
        item = known.get(line)
        if item is not None:
            # A line read before (only usual lines are kept).
            append(item)
            continue
        name, colon, value = line.partition(":")
        if colon:
            # The usual line: a name as read before (the cache of
            # _headerName holds only tokens, so never a continuation).
            canon = names.get(name)
            if canon is not None:
                item = (canon, value.strip(" \t"))
                append(item)
                if canon not in _UNIQUE_LINES:
                    keepBounded(known, line, item, _HEADER_LINES_MAX)
                continue
        if not line:
            continue
        c = line[0]
        if c == " " or c == "\t":
            if not items:
                error = error or SIPParseError("Continuation Before Header")
                continue
            name, value = items[-1]
            more = line.strip(" \t")
            items[-1] = (name, value + " " + more if value else more)
            continue
        if not colon:
            error = error or SIPParseError("Malformed Header Line")
            continue
        canon = _headerName(name.rstrip(" \t"))
        if canon is None:
            error = error or SIPParseError("Malformed Header Name")
            continue
        append((canon, value.strip(" \t")))

    if startError is not None:
        startError.request = message
        raise startError
    if error is not None:
        error.request = None if isResponse else message
        raise error

    for name, value in items:
        if name == "Content-Length":
            length = _parseContentLength(value)
            if length is None or (contentLength is not None
                                  and length != contentLength):
                raise SIPParseError(
                    "Invalid Content-Length",
                    None if isResponse else message)
            contentLength = length

    if bodyStart is None:
        body = b""
    else:
        body = data[bodyStart:]
    if contentLength is not None:
        if contentLength > len(body):
            raise SIPParseError("Content-Length Larger Than Body",
                                None if isResponse else message)
        if contentLength < len(body):
            body = body[:contentLength]
    message.body = body
    return message


# Stream framing -----------------------------------------------------------

_CL_NAMES = (b"content-length", b"l")


class StreamFramer:
    """
    Cuts a TCP/TLS byte stream into SIP messages (RFC 3261 18.3).

    Tolerates any split of the input, skips CRLF keep-alives between
    messages (RFC 5626 3.5.1; each C{CRLFCRLF} ping seen is counted in
    C{pings} so that the transport may answer with a CRLF pong), and never
    holds more than C{maxSize} bytes after L{feed} returns.

    After a L{FramingError} the framer is unusable; close the connection.

    @ivar maxSize: the largest message (headers and body) accepted.
    @ivar pings: number of C{CRLFCRLF} keep-alives seen so far.
    """

    def __init__(self, maxSize: int = 65535):
        self.maxSize = maxSize
        self.pings = 0
        self._buffer = bytearray()
        self._need = None
        self._scanFrom = 0
        self._crlfRun = 0
        self._failed = None

    def _fail(self, reason: str):
        self._failed = reason
        self._buffer = bytearray()
        raise FramingError(reason)

    def _skipKeepAlives(self):
        buf = self._buffer
        i = 0
        n = len(buf)
        while i < n and buf[i] in (13, 10):
            self._crlfRun += 1
            if self._crlfRun == 4:
                self.pings += 1
                self._crlfRun = 0
            i += 1
        if i:
            del buf[:i]
        if buf:
            self._crlfRun = 0

    def feed(self, data: bytes) -> List[bytes]:
        """
        Add received bytes.

        @return: the complete messages now available, in order (each a
            L{bytes} ready for L{parseMessage}).
        @raise FramingError: the header section or message exceeds
            C{maxSize}, or C{Content-Length} is missing or invalid.
        """
        if self._failed is not None:
            raise FramingError(self._failed)
        buf = self._buffer
        buf += data
        out = []
        while True:
            if self._need is None:
                if buf[:1] in (b"\r", b"\n"):
                    self._skipKeepAlives()
                    self._scanFrom = 0
                end = buf.find(b"\r\n\r\n", self._scanFrom)
                if end == -1:
                    if len(buf) > self.maxSize:
                        self._fail("Header section larger than %d bytes"
                                   % (self.maxSize,))
                    self._scanFrom = max(0, len(buf) - 3)
                    break
                self._scanFrom = 0
                headEnd = end + 4
                length = None
                for line in bytes(buf[:end]).split(b"\r\n")[1:]:
                    name, colon, value = line.partition(b":")
                    if colon and name.strip(b" \t").lower() in _CL_NAMES:
                        try:
                            length = _parseContentLength(
                                value.decode("ascii"))
                        except UnicodeDecodeError:
                            length = None
                        if length is None:
                            self._fail("Invalid Content-Length")
                        break
                if length is None:
                    self._fail("Missing Content-Length")
                total = headEnd + length
                if total > self.maxSize:
                    self._fail("Message larger than %d bytes"
                               % (self.maxSize,))
                self._need = total
            if len(buf) < self._need:
                break
            out.append(bytes(buf[:self._need]))
            del buf[:self._need]
            self._need = None
        return out
