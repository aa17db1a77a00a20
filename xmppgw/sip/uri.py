# -*- test-case-name: tests.test_sip_uri -*-
"""
SIP URI and name-addr parsing and serialising (RFC 3261 sections 19.1, 20.10
and 25).

Pure functions, no I/O.  Everything is text (C{str}); the message parser
decodes the header section before handing values here.

Choices made here:

  - The C{user} and C{password} parts are kept exactly as on the wire,
    still percent-encoded (decoding is the address mapper's job).  Hex
    escapes must be well formed (C{%} plus two hex digits).
  - Scheme, host and parameter names are lower-cased (they compare
    case-insensitively, RFC 3261 19.1.4); parameter values keep their case.
  - C{sip:}, C{sips:}, C{im:} and C{pres:} URIs are split into their parts.
    For C{im:}/C{pres:} the parts are only filled when the text follows the
    C{user@host} shape; otherwise, as for every other scheme (C{tel:},
    C{http:}, ...), only C{scheme} and C{opaque} (the text after
    C{scheme:}) are set, and C{host} is L{None}.
  - Whitespace anywhere inside a URI is an error (RFC 4475 3.1.2.8,
    3.1.2.14), as is an unterminated quoted string or C{<} without C{>}.
"""

from __future__ import annotations

import ipaddress
import platform
import re
from dataclasses import dataclass, fields as dataclassFields, replace
from typing import Optional, Tuple

from xmppgw.compat import compilePossessive
from xmppgw.memo import bounded, generational, perAddress


__all__ = [
    "URIError",
    "URI",
    "NameAddr",
    "parseURI",
    "parseNameAddr",
    "parseParams",
    "splitQuoted",
]


class URIError(ValueError):
    """
    A URI or name-addr could not be parsed.  C{str(error)} is a
    human-readable reason.
    """


_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"


def _escapable(chars: str, repeat: str = "+"):
    """
    A regex for runs of C{chars} (a character-class body) and C{%HH}
    escapes.

    One character per repetition: C{(?:[...]+|...)+} backtracks
    exponentially on a long run of valid characters followed by an invalid
    one (found by C{tests.test_fuzz}).
    """
    return re.compile(r"(?:[%s]|%s)%s" % (chars, _ESC, repeat))


_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_USER_RE = _escapable(_UNRESERVED + "&=+$,;?/")
_PASSWORD_RE = _escapable(_UNRESERVED + "&=+$,", "*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?")
_PARAMCHAR_RE = _escapable(_UNRESERVED + r"\[\]/:&+$")
_HEADERS_RE = _escapable(_UNRESERVED + r"\[\]/?:+$&=", "*")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Possessive white space: adjacent optional runs would otherwise backtrack
# quadratically on long runs of blanks (found by fuzzing).
#: A header parameter: name, and a value that is a token, a quoted string,
#: a bracketed IPv6 reference or a bare IPv6 address (RFC 3261's
#: C{via-received} allows one: C{received=2001:db8::1}).
_HEADER_PARAM_RE = compilePossessive(
    r"[ \t]*+(?P<name>[A-Za-z0-9\-.!%*_+`'~]+)[ \t]*+(?:(?P<eq>=)[ \t]*+(?P<value>"
    r"[0-9A-Fa-f.]*+:[0-9A-Fa-f:.]*+|"
    r"[A-Za-z0-9\-.!%*_+`'~]+|\"(?:[^\"\\]|\\.)*\"|\[[0-9A-Fa-f:.]+\]"
    r")?[ \t]*+)?")
_OPAQUE_BAD_RE = re.compile(r"[\x00-\x20\x7f<>\"]")
#: Header parameters in their usual shape: token names and token values, no
#: blanks, quotes or colons (C{;branch=z9hG4bK1;rport}). Each repetition
#: starts at a C{;}, which no token holds: the match is linear.
_SIMPLE_HEADER_PARAMS_RE = re.compile(
    r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~]+)?)+")

#: Schemes whose text is split into user, password, host, port, params.
_STRUCTURED = frozenset(["sip", "sips", "im", "pres"])

_USUAL_PARAMCHARS = r"A-Za-z0-9\-_.!~*'()\[\]/:&+$"
#: The usual SIP URI, C{sip:user@host[:port][;name[=value]]...}, with no
#: percent-escape, password, C{; ? /} in the user part, URI headers, IPv6
#: reference or empty parameter value: L{parseURI} reads it with this one
#: match (groups: scheme, user, host, port, parameters) where the general
#: rule checks each part with its own expression. Every group is a run of
#: one character class that cannot hold the delimiter after it, so the
#: match is linear; whatever does not match goes to the general rule,
#: which reads a matching text the same way (L{tests.test_sip_uri}).
_USUAL_SIP_URI_RE = re.compile(
    r"([Ss][Ii][Pp][Ss]?):([A-Za-z0-9\-_.!~*'()&=+$,]+)@"
    r"([A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?)(?::([0-9]{1,5}))?"
    r"((?:;[%s]+(?:=[%s]+)?)*)" % (_USUAL_PARAMCHARS, _USUAL_PARAMCHARS))

Params = Tuple[Tuple[str, Optional[str]], ...]


def _fastNewByDict(cls, **fields):
    """
    Build an instance of the frozen dataclass C{cls} without its
    generated C{__init__}, which is slow on CPython because every field
    goes through C{object.__setattr__}.  Callers pass every field.
    """
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def _fastReplaceByDict(obj, **changes):
    """
    A copy of the frozen dataclass instance C{obj} with some fields
    replaced (as C{dataclasses.replace}), built as by L{_fastNewByDict}.
    Everything in C{obj}'s C{__dict__} is copied: not for a L{URI}, whose
    kept text would then be that of the original.
    """
    new = object.__new__(type(obj))
    fields = new.__dict__
    fields.update(obj.__dict__)
    fields.update(changes)
    return new


#: Whether L{_fastNew} and L{_fastReplace} (a new instance of a frozen
#: dataclass from all its fields, a copy with some replaced) go through
#: the class's C{__init__} (PyPy) instead of writing the instance's
#: C{__dict__} (CPython). On PyPy an instance keeps its attributes in a
#: layout shared by its class (a map): writing its C{__dict__} as a dict
#: cost 0.9-1.6 us an instance there, the generated C{__init__}, which
#: the JIT compiles to plain stores, 40-270 ns. On CPython it is the
#: other way round.
BUILD_THROUGH_INIT = platform.python_implementation() == "PyPy"

#: C{{class: function}}: the functions L{_replacerFor} made
#: (one per dataclass, a handful).
_replacers = {}


def _replacerFor(cls):
    """
    A function C{(obj, changes)} that builds a C{cls} from the fields of
    C{obj}, those in the dict C{changes} replaced, through C{cls}'s
    C{__init__}: the fields read by name in code made once per class
    (as L{dataclasses} makes C{__init__}), which the JIT compiles to plain
    loads, where a loop over the names would look each one up.
    """
    replacer = _replacers.get(cls)
    if replacer is None:
        names = [f.name for f in dataclassFields(cls) if f.init]
        known = frozenset(names)
        source = "def replace(obj, changes):\n    return cls(%s)\n" % (
            ", ".join("%s=changes[%r] if %r in changes else obj.%s"
                      % (name, name, name, name) for name in names),)
        namespace = {"cls": cls}
        exec(source, namespace)
        build = namespace["replace"]

        def replacer(obj, changes):
            if not known.issuperset(changes):
                raise TypeError("%s has no field %s" % (
                    cls.__name__, ", ".join(sorted(set(changes) - known))))
            return build(obj, changes)

        _replacers[cls] = replacer
    return replacer


def _fastReplaceThroughInit(obj, **changes):
    """
    L{_fastReplace} on PyPy (L{BUILD_THROUGH_INIT}).
    """
    return _replacerFor(type(obj))(obj, changes)


def _fastNewThroughInit(cls, **fields):
    """
    L{_fastNew} on PyPy (L{BUILD_THROUGH_INIT}).
    """
    return cls(**fields)


if BUILD_THROUGH_INIT:
    _fastNew = _fastNewThroughInit
    _fastReplace = _fastReplaceThroughInit
else:
    _fastNew = _fastNewByDict
    _fastReplace = _fastReplaceByDict


def _isIPv6(text: str) -> bool:
    """
    Whether C{text} is an IPv6 address (the only bare value with colons a
    header parameter may have: RFC 3261 C{via-received}).
    """
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _paramValue(params: Params, name: str) -> Optional[str]:
    name = name.lower()
    for key, value in params:
        if key == name:
            return value
    return None


def _hasParam(params: Params, name: str) -> bool:
    name = name.lower()
    for key, _ in params:
        if key == name:
            return True
    return False


def _setParam(params: Params, name: str, value: Optional[str]) -> Params:
    name = name.lower()
    out = []
    done = False
    for key, old in params:
        if key == name:
            if not done:
                out.append((name, value))
                done = True
        else:
            out.append((key, old))
    if not done:
        out.append((name, value))
    return tuple(out)


def _formatParams(params: Params) -> str:
    text = ""
    for name, value in params:
        if value is None:
            text += ";" + name
        else:
            text += ";%s=%s" % (name, value)
    return text


@dataclass(frozen=True)
class URI:
    """
    A parsed URI.

    @ivar scheme: lower-cased scheme (C{sip}, C{sips}, C{tel}, C{im}, ...).
    @ivar user: the user part as on the wire (percent-encoded) or L{None}.
    @ivar password: the password as on the wire, or L{None}.
    @ivar host: lower-cased host; IPv6 references keep their brackets.
        L{None} for opaque (non-SIP) URIs.
    @ivar port: L{int} or L{None}.
    @ivar params: C{(name, value-or-None)} pairs; names lower-cased, order
        kept.
    @ivar headers: the raw text after C{?}, or L{None}.
    @ivar opaque: for URIs that are not split into parts (C{tel:} and
        other schemes), everything after C{scheme:} as received; otherwise
        L{None}.
    """

    scheme: str
    user: Optional[str] = None
    password: Optional[str] = None
    host: Optional[str] = None
    port: Optional[int] = None
    params: Params = ()
    headers: Optional[str] = None
    opaque: Optional[str] = None

    #: The text L{__str__} made or the parser read, once known (not a
    #: field: set on the instance, which shadows this class attribute).
    _text = None

    @property
    def isSIP(self) -> bool:
        """
        C{True} for C{sip:} and C{sips:} URIs.
        """
        return self.scheme in ("sip", "sips")

    def param(self, name: str) -> Optional[str]:
        """
        The value of URI parameter C{name} (case-insensitive); L{None} when
        absent or value-less (see L{hasParam}).
        """
        return _paramValue(self.params, name)

    def hasParam(self, name: str) -> bool:
        """
        Whether URI parameter C{name} is present (with or without value).
        """
        return _hasParam(self.params, name)

    def withParam(self, name: str, value: Optional[str] = None) -> "URI":
        """
        A copy with parameter C{name} set to C{value} (replacing any
        present, else appended).
        """
        return replace(self, params=_setParam(self.params, name, value))

    def withoutParam(self, name: str) -> "URI":
        """
        A copy without parameter C{name}.
        """
        name = name.lower()
        return replace(
            self, params=tuple(p for p in self.params if p[0] != name))

    def hostport(self) -> str:
        """
        C{host} or C{host:port}.
        """
        if self.port is None:
            return self.host or ""
        return "%s:%d" % (self.host, self.port)

    def __str__(self) -> str:
        # A URI is immutable and the parsed ones are shared (the cache of
        # parseURI): the text is made once and kept on the instance.
        text = self._text
        if text is None:
            text = self._format()
            object.__setattr__(self, "_text", text)
        return text

    def _format(self) -> str:
        if self.host is None:
            return "%s:%s" % (self.scheme, self.opaque or "")
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":" + self.password)
            parts.append("@")
        parts.append(self.hostport())
        parts.append(_formatParams(self.params))
        if self.headers is not None:
            parts.append("?" + self.headers)
        return "".join(parts)


@dataclass(frozen=True)
class NameAddr:
    """
    A name-addr or addr-spec with header parameters, as in To, From,
    Contact, Route and similar headers.

    @ivar display: the display name (unquoted, escapes resolved) or L{None}.
    @ivar uri: the L{URI}.
    @ivar params: header parameters (e.g. C{tag}) as pairs, names
        lower-cased.
    """

    display: Optional[str]
    uri: URI
    params: Params = ()

    def param(self, name: str) -> Optional[str]:
        """
        Value of header parameter C{name}; L{None} if absent or value-less.
        """
        return _paramValue(self.params, name)

    def hasParam(self, name: str) -> bool:
        """
        Whether header parameter C{name} is present.
        """
        return _hasParam(self.params, name)

    @property
    def tag(self) -> Optional[str]:
        """
        The C{tag} parameter or L{None}.
        """
        return _paramValue(self.params, "tag")

    def withParam(self, name: str, value: Optional[str] = None) -> "NameAddr":
        """
        A copy with header parameter C{name} set to C{value}.
        """
        return replace(self, params=_setParam(self.params, name, value))

    def __str__(self) -> str:
        if self.display:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            head = '"%s" <%s>' % (escaped, self.uri)
        else:
            head = "<%s>" % (self.uri,)
        return head + _formatParams(self.params)


def _parseHost(text: str, whole: str) -> Tuple[str, Optional[int]]:
    """
    Parse C{host[:port]}.
    """
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise URIError("unterminated IPv6 reference in %r" % (whole,))
        host = text[:end + 1]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise URIError("invalid IPv6 reference %r" % (host,))
        rest = text[end + 1:]
        if rest and not rest.startswith(":"):
            raise URIError("junk after IPv6 reference in %r" % (whole,))
        portText = rest[1:] if rest else None
    else:
        host, colon, portText = text.partition(":")
        if not colon:
            portText = None
        if not host:
            raise URIError("empty host in %r" % (whole,))
        if not _HOSTNAME_RE.fullmatch(host):
            raise URIError("invalid host %r" % (host,))
    port = None
    if portText is not None:
        if not (portText.isdigit() and portText.isascii()
                and len(portText) <= 5):
            raise URIError("invalid port %r" % (portText,))
        port = int(portText)
        if port > 65535:
            raise URIError("port out of range %r" % (portText,))
    return host.lower(), port


def _splitSimpleParams(text: str) -> Params:
    """
    The parameters of C{text}, which matches C{_SIMPLE_HEADER_PARAMS_RE}
    (C{;name[=value]} pairs of tokens): split without further checks.
    """
    out = []
    for piece in text[1:].split(";"):
        name, eq, value = piece.partition("=")
        out.append((name.lower(), value if eq else None))
    return tuple(out)


def parseParams(text: str, uriParams: bool = False) -> Params:
    """
    Parse C{;name[=value]} pairs (C{text} starts at the first C{;} or is
    empty).

    Header parameters allow linear white space around C{;} and C{=} and
    quoted-string values; URI parameters allow neither (the caller has
    already rejected whitespace) and their characters are checked.

    @raise URIError: an empty or malformed parameter.
    """
    if not text:
        return ()
    if not uriParams and _SIMPLE_HEADER_PARAMS_RE.fullmatch(text) is not None:
        # The usual shape, which the general rule below reads the same way.
        return _splitSimpleParams(text)
    if uriParams:
        pieces = text.split(";")
    else:
        pieces = splitQuoted(text, ";")
    if pieces[0].strip():
        raise URIError("junk before parameters: %r" % (pieces[0],))
    out = []
    if not uriParams:
        for piece in pieces[1:]:
            match = _HEADER_PARAM_RE.fullmatch(piece)
            if match is None:
                raise URIError("invalid parameter %r" % (piece.strip(),))
            name, eq, value = match.group("name", "eq", "value")
            if (value and ":" in value and value[0] not in "\"["
                    and not _isIPv6(value)):
                raise URIError("invalid parameter %r" % (piece.strip(),))
            out.append((name.lower(), (value or "") if eq else None))
        return tuple(out)
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        if not name:
            raise URIError("empty parameter in %r" % (text,))
        if not _PARAMCHAR_RE.fullmatch(name) or (
                value and not _PARAMCHAR_RE.fullmatch(value)):
            raise URIError("invalid URI parameter %r" % (piece,))
        out.append((name.lower(), value if eq else None))
    return tuple(out)


@bounded(perAddress(1024))
def parseURI(text: str) -> URI:
    """
    Parse a URI.  Results are cached (bounded): a L{URI} is immutable.

    @param text: the URI text, e.g. C{sip:alice@example.com;transport=tcp}.
    @return: a L{URI}.
    @raise URIError: with a human-readable reason.
    """
    if type(text) is str:
        match = _USUAL_SIP_URI_RE.fullmatch(text)
        if match is not None:
            scheme, user, host, portText, params = match.groups()
            port = None if portText is None else int(portText)
            if port is None or port <= 65535:
                lowerScheme = scheme.lower()
                lowerHost = host.lower()
                uri = _fastNew(
                    URI, scheme=lowerScheme, user=user, password=None,
                    host=lowerHost, port=port,
                    params=_splitSimpleParams(params) if params else (),
                    headers=None, opaque=None)
                if (scheme == lowerScheme and host == lowerHost
                        and (portText is None or str(port) == portText)
                        and params == params.lower()):
                    # Already in the form __str__ writes: keep the text.
                    object.__setattr__(uri, "_text", text)
                return uri
    return _parseURI(text)


def _parseURI(text: str) -> URI:
    """
    The general rule of L{parseURI}, uncached.
    """
    if not isinstance(text, str):
        raise URIError("URI must be text, not %s" % (type(text).__name__,))
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise URIError("no valid scheme in %r" % (text,))
    if not rest:
        raise URIError("empty URI after scheme in %r" % (text,))
    if _OPAQUE_BAD_RE.search(rest):
        raise URIError("whitespace, control or delimiter character in URI %r"
                       % (text,))
    scheme = scheme.lower()
    if scheme not in _STRUCTURED:
        return _fastNew(URI, scheme=scheme, user=None, password=None,
                        host=None, port=None, params=(), headers=None,
                        opaque=rest)
    try:
        return _parseStructured(scheme, rest, text)
    except URIError:
        if scheme in ("sip", "sips"):
            raise
        return _fastNew(URI, scheme=scheme, user=None, password=None,
                        host=None, port=None, params=(), headers=None,
                        opaque=rest)


def _parseStructured(scheme: str, rest: str, text: str) -> URI:
    user = password = None
    at = rest.find("@")
    if at != -1:
        userinfo = rest[:at]
        rest = rest[at + 1:]
        user, colon, password = userinfo.partition(":")
        if not user:
            raise URIError("empty user part in %r" % (text,))
        if not _USER_RE.fullmatch(user):
            raise URIError("invalid character or escape in user part %r"
                           % (user,))
        if colon:
            if not _PASSWORD_RE.fullmatch(password):
                raise URIError("invalid character or escape in password")
        else:
            password = None
    headers = None
    question = rest.find("?")
    if question != -1:
        headers = rest[question + 1:]
        rest = rest[:question]
        if not _HEADERS_RE.fullmatch(headers):
            raise URIError("invalid URI headers %r" % (headers,))
    semi = rest.find(";")
    if semi != -1:
        params = parseParams(rest[semi:], uriParams=True)
        rest = rest[:semi]
    else:
        params = ()
    host, port = _parseHost(rest, text)
    return _fastNew(URI, scheme=scheme, user=user, password=password,
                    host=host, port=port, params=params, headers=headers,
                    opaque=None)


def _quotedEnd(text: str, start: int) -> int:
    """
    Index just after the quoted string that begins at C{text[start]}
    (a C{"}).

    @raise URIError: when it is not terminated.
    """
    i = start + 1
    n = len(text)
    while True:
        quote = text.find('"', i)
        backslash = text.find("\\", i)
        if quote == -1:
            raise URIError("unterminated quoted string in %r" % (text,))
        if backslash != -1 and backslash < quote:
            if backslash + 1 >= n:
                raise URIError("unterminated quoted string in %r" % (text,))
            i = backslash + 2
            continue
        return quote + 1


def splitQuoted(text: str, sep: str) -> list:
    """
    Split C{text} at C{sep} outside quoted strings and outside C{<...>}.

    @raise URIError: on an unterminated quoted string.
    """
    if '"' not in text and "<" not in text:
        return text.split(sep)
    out = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            i = _quotedEnd(text, i)
            continue
        if ch == "<":
            end = text.find(">", i)
            if end == -1:
                raise URIError("'<' without '>' in %r" % (text,))
            i = end + 1
            continue
        if ch == sep:
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return out


def _unquote(quoted: str) -> str:
    inner = quoted[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\" and i + 1 < len(inner):
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


#: How many name-addrs L{parseNameAddr} remembers: fewer than the URI
#: memos, since a From or To with a tag is new text in every dialogue
#: (every MESSAGE outside one) and the repeating part, C{<uri>}, is
#: remembered apart (L{_nameAddrHead}); what this memo still serves is
#: the same header read again while one message is handled (seven times
#: for SIP -> XMPP). On PyPy (L{generational} memos) 16: each result a
#: larger memo keeps outlives the young generation of PyPy's collector and
#: is copied out of it, which cost about 0.4 us per SIP -> XMPP message for
#: a From that never comes back (docs/performance.rst, round 21); 16 keep
#: all of one message's name-addrs. On CPython, whose memo
#: (L{functools.lru_cache}) has no such cost, 512 also keep a To without
#: a tag from one message to the next (0.6 us a message with 100
#: addresses).
NAME_ADDR_MEMO_SIZE = 16 if bounded is generational else 512


@bounded(NAME_ADDR_MEMO_SIZE)
def parseNameAddr(text: str) -> NameAddr:
    """
    Results are cached (bounded): a L{NameAddr} is immutable.

    Parse a name-addr (C{"Bob" <sip:bob@x>;tag=1}, C{Bob <sip:bob@x>},
    C{<sip:bob@x>}) or a bare addr-spec (C{sip:bob@x;tag=1}) with header
    parameters.  In the bare form the parameters belong to the header, not
    to the URI (RFC 3261 20.10).

    @raise URIError: with a reason (unterminated quoted string, C{<}
        without C{>}, a display name that is neither a quoted string nor
        tokens, an invalid URI, junk after C{>}, a bad parameter).
    """
    if type(text) is str and text[:1] == "<":
        # The usual shape, C{<uri>;tag=...}: the part up to C{>} repeats
        # (one per peer) while the tag changes with every message, so the
        # part is parsed once (L{_nameAddrHead}) and the token parameters
        # are split here. The general rule reads it the same way: no
        # display name, the URI between the first C{<} and C{>}, the
        # parameters after it.
        gt = text.find(">")
        if gt != -1:
            tail = text[gt + 1:]
            if not tail:
                return _nameAddrHead(text)
            if _SIMPLE_HEADER_PARAMS_RE.fullmatch(tail) is not None:
                head = _nameAddrHead(text[:gt + 1])
                return _fastNew(NameAddr, display=None, uri=head.uri,
                                params=_splitSimpleParams(tail))
    return _parseNameAddr(text)


def _parseNameAddr(text: str) -> NameAddr:
    """
    The general rule of L{parseNameAddr}, uncached.
    """
    if not isinstance(text, str):
        raise URIError("name-addr must be text")
    s = text.strip()
    if not s:
        raise URIError("empty address")
    display = None
    if s[0] == '"':
        end = _quotedEnd(s, 0)
        display = _unquote(s[:end])
        rest = s[end:].lstrip()
        if not rest.startswith("<"):
            raise URIError("quoted display name not followed by '<' in %r"
                           % (text,))
        lt = 0
        s = rest
    else:
        lt = s.find("<")
        if lt != -1:
            words = s[:lt].split()
            for word in words:
                if not _TOKEN_RE.fullmatch(word):
                    raise URIError("invalid display name %r" % (s[:lt],))
            if words:
                display = " ".join(words)
    if lt == -1:
        uriText, semi, paramText = s.partition(";")
        uriText = uriText.rstrip()
        if any(c in uriText for c in ",?>"):
            raise URIError("addr-spec with ',' '?' or '>' must be in '<>'")
        uri = parseURI(uriText)
        params = parseParams(semi + paramText) if semi else ()
        return _fastNew(NameAddr, display=None, uri=uri, params=params)
    gt = s.find(">", lt)
    if gt == -1:
        raise URIError("'<' without '>' in %r" % (text,))
    uri = parseURI(s[lt + 1:gt])
    rest = s[gt + 1:].strip()
    if rest and not rest.startswith(";"):
        raise URIError("junk after '>' in %r" % (text,))
    params = parseParams(rest) if rest else ()
    return _fastNew(NameAddr, display=display, uri=uri, params=params)


@bounded(perAddress(1024))
def _nameAddrHead(head: str) -> NameAddr:
    """
    A name-addr that is C{<uri>} alone (the fast path of L{parseNameAddr}:
    C{head} starts with C{<} and its only C{>} ends it), as the general rule
    reads it: no display name, no parameters, the URI between the brackets.
    """
    return _fastNew(NameAddr, display=None, uri=parseURI(head[1:-1]),
                    params=())
