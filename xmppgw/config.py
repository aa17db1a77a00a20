# -*- test-case-name: tests.test_config -*-
"""
The gateway's configuration: one TOML file, loaded with the standard
library's C{tomllib}, checked against L{schema}, turned into frozen
dataclasses.

Table C{[xmpp]} keeps the names, defaults and meaning of the Kamailio
C{xmpp} module's parameters, so C{modparam("xmpp", "NAME", VALUE)} becomes
C{NAME = VALUE}. Tables C{[sip]} and C{[log]} hold the rest.

Loading is separate from validation: L{loadConfig} reads the file and
L{parseConfig} checks a dictionary. Validation collects every problem
(unknown tables and keys, wrong types, out-of-range values, keys that
contradict each other) and raises them together in one L{ConfigError}, so
an operator fixes a file in one pass.

The module-level table L{SCHEMA} (also returned by L{schema}) describes every
key: its table, name, TOML type, default and a one-line help text. It
drives validation and keeps the sample C{etc/xmppgw.toml} and the
documentation in step (a test compares them).
"""

import difflib
import importlib.util
import ipaddress
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from xmppgw.compat import tomllib


DEFAULT_COMPONENT_PORT = 5347
DEFAULT_SERVER_PORT = 5269
DEFAULT_SIP_PORT = 5060
DEFAULT_SIPS_PORT = 5061


class ConfigError(Exception):
    """
    A configuration file cannot be used.

    @ivar path: the file name (or a description such as C{"<defaults>"}).
    @ivar errors: a list of C{(keyPath, message)}; C{keyPath} is a dotted
        path such as C{"xmpp.xmpp_port"} (with C{[N]} for list items), or
        L{None} for a problem with the file as a whole.
    """

    def __init__(self, path: str, errors: list):
        self.path = path
        self.errors = list(errors)
        super().__init__(path, self.errors)

    def __str__(self) -> str:
        lines = []
        for keyPath, message in self.errors:
            if keyPath:
                lines.append(f"{self.path}: {keyPath}: {message}")
            else:
                lines.append(f"{self.path}: {message}")
        return "\n".join(lines)


class _Invalid(Exception):
    """
    Raised by a value parser: one or more C{(suffix, message)} pairs, where
    C{suffix} is appended to the key path (C{""} or C{"[2]"}).

    @ivar partial: for a list, the value made of its valid items, so that
        checks across keys still run on them; L{None} otherwise.
    """

    def __init__(self, message: str = "", suffix: str = "", errors=None,
                 partial=None):
        if errors is None:
            errors = [(suffix, message)]
        self.errors = errors
        self.partial = partial
        super().__init__(errors)


# -- Showing values in messages ---------------------------------------------


def _show(value: Any) -> str:
    """
    Show a TOML value in an error message.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if hasattr(value, "isoformat"):
        return f"a date/time ({value.isoformat()})"
    return repr(value)


def _number(x: float) -> str:
    """
    Format a bound for a message: C{10} rather than C{10.0}.
    """
    return f"{x:g}"


def _toml(value: Any) -> str:
    """
    Format a default value as TOML text.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot format {value!r} as TOML")


# -- Value parsers -----------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """
    What value parsers may need besides the value.

    @ivar baseDir: the directory of the configuration file; relative file
        names are resolved against it.
    """

    baseDir: str


def _integer(low: int, high: int, note: str = "") -> Callable:
    """
    A parser for an integer from C{low} to C{high}; TOML booleans and floats
    are refused.
    """

    def parse(value, context):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not low <= value <= high
        ):
            raise _Invalid(
                f"must be an integer from {low} to {high}{note}, not {_show(value)}"
            )
        return value

    return parse


def _seconds(low: float, high: float) -> Callable:
    """
    A parser for a duration in seconds, an integer or a float from C{low} to
    C{high}; returns a float.
    """

    def parse(value, context):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise _Invalid(
                f"must be a number of seconds from {_number(low)} to "
                f"{_number(high)}, not {_show(value)}"
            )
        return float(value)

    return parse


def _boolean(value, context) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, not {_show(value)}")
    return value


def _confirmDelivery(value, context) -> str:
    if value is True:
        return "ping"
    if value is False:
        return "none"
    if value not in ("ping", "tcp", "kernel", "none"):
        raise _Invalid(
            f'must be "ping", "tcp", "kernel" or "none" (true and false mean '
            f'"ping" and "none"), not {_show(value)}'
        )
    if value == "tcp" and not sys.platform.startswith("linux"):
        raise _Invalid(
            f'"tcp" needs ioctl(TIOCOUTQ) on TCP sockets, which only Linux '
            f'has (this platform: {sys.platform}); use "ping" or "none"'
        )
    return value


def _nonEmptyString(value, context) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"must be a non-empty string, not {_show(value)}")
    return value


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


def _domainProblem(name: str) -> Optional[str]:
    """
    Say what is wrong with a domain name, or return L{None} if it is fine.

    @param name: a lower-cased candidate.
    """
    if not name:
        return "it is empty"
    if not name.isascii():
        return "write internationalized names in their ASCII (xn--) form"
    if "@" in name:
        return "a domain has no user part ('@')"
    if any(c.isspace() for c in name):
        return "spaces are not allowed"
    if len(name) > 253:
        return "it is longer than 253 characters"
    labels = name.split(".")
    for label in labels:
        if not label:
            return "it has an empty label (leading, trailing or double '.')"
        if not _LABEL.match(label):
            return (
                f"label {label!r} is not letters, digits and '-' (1 to 63, "
                "not starting or ending with '-')"
            )
    if labels[-1].isdigit():
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            return "it looks like an IPv4 address but is not a valid one"
    return None


def _checkDomain(value, what: str = "a domain name") -> str:
    """
    Check a domain name and return it lower-cased, or raise L{_Invalid}.
    """
    if not isinstance(value, str):
        raise _Invalid(f"must be {what} (a string), not {_show(value)}")
    name = value.lower()
    problem = _domainProblem(name)
    if problem:
        raise _Invalid(f"must be {what}, not {_show(value)}: {problem}")
    return name


def _domain(value, context) -> str:
    return _checkDomain(value)


def _hostOrAddress(value, context) -> str:
    """
    A host to connect to: a domain name, an IPv4 address or an IPv6 address
    (with or without brackets; returned without them).
    """
    if isinstance(value, str):
        text = value
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if ":" in text:
            try:
                return str(ipaddress.IPv6Address(text))
            except ValueError:
                raise _Invalid(
                    f"must be a host name or an IP address, not {_show(value)}"
                )
    return _checkDomain(value, "a host name or an IP address")


def _backend(value, context) -> str:
    if value not in ("component", "server"):
        raise _Invalid(
            f'must be "component" (an XEP-0114 component of an XMPP server) '
            f'or "server" (S2S federation with dialback), not {_show(value)}'
        )
    return value


def _dialbackSecret(value, context) -> str:
    if not isinstance(value, str) or len(value.strip()) < 16:
        raise _Invalid(
            "must be a string of at least 16 characters (a long random "
            f"secret), not {_show(value) if not isinstance(value, str) else 'a shorter one'}"
        )
    return value


def _s2sPeers(value, context) -> dict:
    """
    C{{domain: "host:port"}} -> C{{domain: (host, port)}}.
    """
    from xmppgw.xmpp.srv import parsePeer

    if not isinstance(value, dict):
        raise _Invalid(
            'must be a table of domain = "host:port", not ' + _show(value))
    result, errors = {}, []
    for domain, target in value.items():
        suffix = f".{domain}" if re.match(r"[A-Za-z0-9_-]+\Z", domain) else f'."{domain}"'
        problem = _domainProblem(domain.lower())
        if problem:
            errors.append((suffix, f"{domain!r} is not a domain name: {problem}"))
            continue
        try:
            result[domain.lower()] = parsePeer(target)
        except ValueError as e:
            errors.append((suffix, f'must be "host:port": {e}'))
    if errors:
        raise _Invalid(errors=errors)
    return result


# Why a character cannot separate the user from the domain in
# "user*domain@gateway". The same text sits in a SIP user part and in a JID
# localpart, so the separator must be legal, unescaped, in both, and must not
# occur in domain names.
_SEPARATOR_REASONS = {
    "%": "'%' introduces a percent-escape in SIP URIs",
    "@": "'@' separates the user from the domain in SIP URIs and JIDs",
    "\\": "'\\' introduces an XEP-0106 escape in JID localparts",
    ":": "':' separates the scheme and the port in SIP URIs and is not "
    "allowed in a JID localpart",
    "/": "'/' starts the resource of a JID and is not allowed in a JID localpart",
    ";": "';' starts a parameter in SIP URIs (and separates gwmap entries)",
    "?": "'?' starts the headers of a SIP URI",
    ".": "'.' occurs in domain names, so the split would be ambiguous",
    "-": "'-' occurs in domain names, so the split would be ambiguous",
    '"': "'\"' is not allowed in a JID localpart",
    "&": "'&' is not allowed in a JID localpart",
    "'": "\"'\" is not allowed in a JID localpart",
    "<": "'<' is not allowed in a JID localpart",
    ">": "'>' is not allowed in a JID localpart",
}

SEPARATOR_CHARACTERS = "*_!~()=+$,"


def _separator(value, context) -> str:
    allowed = " ".join(SEPARATOR_CHARACTERS)
    if not isinstance(value, str) or len(value) != 1:
        raise _Invalid(
            f"must be exactly one character (one of {allowed}), not {_show(value)}"
        )
    if value in SEPARATOR_CHARACTERS:
        return value
    if value in _SEPARATOR_REASONS:
        reason = _SEPARATOR_REASONS[value]
    elif value.isspace():
        reason = "whitespace is not allowed in SIP URIs or JIDs"
    elif value.isalnum():
        reason = (
            "letters and digits occur in user names and domains, so the split "
            "would be ambiguous"
        )
    else:
        reason = f"{value!r} must be escaped in a SIP URI user part"
    raise _Invalid(f"cannot be {value!r}: {reason}; use one of {allowed}")


_SIP_URI = re.compile(
    r"(?P<scheme>[A-Za-z]+):"
    r"(?:(?P<userinfo>[^@;?]*)@)?"
    r"(?P<host>\[[^\]]*\]|[^:;?\[\]]*)"
    r"(?::(?P<port>[^;?]*))?"
    r"(?P<params>;[^?]*)?"
    r"(?P<headers>\?.*)?\Z",
    re.DOTALL,
)


def _sipURIProblem(text: str) -> Optional[str]:
    """
    Minimal check of a sip:/sips: URI: scheme, host, port and the
    C{transport} parameter. Return what is wrong, or L{None}.
    """
    if any(c.isspace() for c in text):
        return "spaces are not allowed"
    match = _SIP_URI.match(text)
    if match is None:
        return "it is not a URI"
    if match["scheme"].lower() not in ("sip", "sips"):
        return f"the scheme must be sip or sips, not {match['scheme']!r}"
    host = match["host"]
    if not host:
        return "it has no host"
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host!r} is not a valid IPv6 address"
    else:
        problem = _domainProblem(host.lower())
        if problem:
            return f"host {host!r} is not valid: {problem}"
    if match["port"] is not None:
        port = match["port"]
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            return f"port {port!r} is not from 1 to 65535"
    if match["headers"]:
        return "a proxy URI has no headers ('?...')"
    for param in (match["params"] or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.lower() == "transport" and value.lower() not in (
            "udp",
            "tcp",
            "tls",
        ):
            return f"transport {value!r} is not udp, tcp or tls"
    return None


def _sipURIOrNone(value, context) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a sip: or sips: URI (a string), not {_show(value)}")
    problem = _sipURIProblem(value)
    if problem:
        raise _Invalid(
            f"must be a sip: or sips: URI with a host such as "
            f"'sip:proxy.example.org;transport=tcp', not {_show(value)}: {problem}"
        )
    return value


def _parseGwmapText(text: str, suffix: str, mapping: dict, origin: dict, errors):
    """
    Add the mappings of one gwmap string to C{mapping}, collecting problems.

    @param origin: XMPP domain -> SIP domain already mapped to it.
    """
    for token in text.split(";"):
        token = token.strip()
        if not token:
            continue
        sipPart, equals, xmppPart = token.partition("=")
        sipPart = sipPart.strip()
        xmppPart = xmppPart.strip() if equals else sipPart
        if "=" in xmppPart:
            errors.append((suffix, f"entry {token!r} has more than one '='"))
            continue
        valid = True
        for side, part in (("SIP", sipPart), ("XMPP", xmppPart)):
            problem = _domainProblem(part.lower())
            if problem:
                valid = False
                errors.append(
                    (suffix, f"entry {token!r}: {side} domain {part!r} is not "
                     f"valid: {problem}")
                )
        if not valid:
            continue
        sipDomain, xmppDomain = sipPart.lower(), xmppPart.lower()
        if sipDomain in mapping and mapping[sipDomain] != xmppDomain:
            errors.append(
                (suffix, f"SIP domain {sipDomain!r} is mapped to both "
                 f"{mapping[sipDomain]!r} and {xmppDomain!r}")
            )
            continue
        if xmppDomain in origin and origin[xmppDomain] != sipDomain:
            errors.append(
                (suffix, f"XMPP domain {xmppDomain!r} is mapped from both "
                 f"{origin[xmppDomain]!r} and {sipDomain!r}, so replies from "
                 "XMPP could not be mapped back")
            )
            continue
        mapping[sipDomain] = xmppDomain
        origin[xmppDomain] = sipDomain


def _gwmap(value, context) -> dict:
    """
    C{"sipdomain=xmppdomain;..."} or a list of such strings -> a dict of
    lower-cased SIP domain -> XMPP domain.
    """
    mapping, origin, errors = {}, {}, []
    if isinstance(value, str):
        _parseGwmapText(value, "", mapping, origin, errors)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                errors.append(
                    (f"[{i}]", f"must be a string 'sipdomain=xmppdomain;...', "
                     f"not {_show(item)}")
                )
                continue
            _parseGwmapText(item, f"[{i}]", mapping, origin, errors)
    else:
        raise _Invalid(
            "must be a string 'sipdomain=xmppdomain;...' or an array of such "
            f"strings, not {_show(value)}"
        )
    if errors:
        raise _Invalid(errors=errors)
    return mapping


@dataclass(frozen=True)
class Listen:
    """
    A SIP socket to listen on, from Kamailio's C{"proto:host:port"}.

    @ivar proto: C{"udp"}, C{"tcp"} or C{"tls"}.
    @ivar host: an IPv4 address, an IPv6 address (without brackets, ready
        to bind) or a lower-cased host name.
    @ivar port: 1 to 65535.
    """

    proto: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}:{host}:{self.port}"


def _parseListen(text: str) -> Listen:
    """
    Parse C{"proto:host[:port]"}; raise L{ValueError} with a reason.
    """
    proto, colon, rest = text.strip().partition(":")
    proto = proto.lower()
    if not colon or proto not in ("udp", "tcp", "tls"):
        raise ValueError(
            "use 'proto:host:port' with proto udp, tcp or tls, "
            "e.g. 'udp:127.0.0.1:5060'"
        )
    port = None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError("'[' without ']' around an IPv6 address")
        host, after = rest[1:end], rest[end + 1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv6 address")
        if after:
            if not after.startswith(":"):
                raise ValueError(f"unexpected {after!r} after the address")
            port = after[1:]
    else:
        if rest.count(":") > 1:
            raise ValueError(
                "put an IPv6 address in brackets, e.g. 'udp:[::1]:5060'"
            )
        host, colon, port = rest.partition(":")
        if not colon:
            port = None
        host = host.lower()
        problem = _domainProblem(host)
        if problem:
            raise ValueError(f"host {host!r} is not valid: {problem}")
    if port is None:
        portNumber = DEFAULT_SIPS_PORT if proto == "tls" else DEFAULT_SIP_PORT
    elif port.isdigit() and port.isascii() and 1 <= int(port) <= 65535:
        portNumber = int(port)
    else:
        raise ValueError(f"port {port!r} is not from 1 to 65535")
    return Listen(proto, host, portNumber)


def _listen(value, context) -> tuple:
    if not isinstance(value, list):
        raise _Invalid(
            "must be an array of sockets such as "
            f'["udp:127.0.0.1:5060"], not {_show(value)}'
        )
    if not value:
        raise _Invalid("must list at least one socket")
    result, seen, errors = [], set(), []
    for i, item in enumerate(value):
        suffix = f"[{i}]"
        if not isinstance(item, str):
            errors.append((suffix, f"must be a string 'proto:host:port', not {_show(item)}"))
            continue
        try:
            listen = _parseListen(item)
        except ValueError as e:
            errors.append((suffix, f"{item!r} is not a socket: {e}"))
            continue
        if listen in seen:
            errors.append((suffix, f"{item!r} is listed twice"))
            continue
        seen.add(listen)
        result.append(listen)
    if errors:
        raise _Invalid(errors=errors, partial=tuple(result))
    return tuple(result)


def _readableFile(value, context) -> str:
    """
    A file name, resolved against the configuration file's directory; the
    file must be readable now. Returns the absolute path.
    """
    if not isinstance(value, str) or not value:
        raise _Invalid(f"must be a file name (a string), not {_show(value)}")
    path = os.path.abspath(os.path.join(context.baseDir, os.path.expanduser(value)))
    if os.path.isdir(path):
        raise _Invalid(f"cannot read {path!r}: it is a directory")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise _Invalid(f"cannot read {path!r}: {e.strerror}")
    return path


def _successCode(value, context) -> int:
    if type(value) is not int or value not in (200, 202):
        raise _Invalid(
            f"must be 202 (Accepted, RFC 3428 section 7) or 200, not {_show(value)}"
        )
    return value


def _logFormat(value, context) -> str:
    if value not in ("text", "json"):
        raise _Invalid(f'must be "text" or "json", not {_show(value)}')
    return value


def _hostPortListen(value, context) -> tuple:
    """
    C{"host:port"} for a TCP listener (IPv6 in brackets) -> C{(host, port)}.
    """
    example = "such as '127.0.0.1:9470' or '[::1]:9470'"
    if not isinstance(value, str):
        raise _Invalid(f"must be a string 'host:port' {example}, not {_show(value)}")
    host, colon, port = value.rpartition(":")
    if not colon or not host:
        raise _Invalid(f"must be 'host:port' {example}, not {_show(value)}")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise _Invalid(f"{host!r} in {value!r} is not a valid IPv6 address")
    elif ":" in host:
        raise _Invalid(f"put an IPv6 address in brackets, e.g. '[::1]:9470', "
                       f"not {_show(value)}")
    else:
        host = host.lower()
        problem = _domainProblem(host)
        if problem:
            raise _Invalid(f"host {host!r} in {value!r} is not valid: {problem}")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise _Invalid(f"port {port!r} in {value!r} is not from 1 to 65535")
    return (host, int(port))


def _networks(value, context) -> tuple:
    """
    A non-empty list of CIDR networks (C{"192.0.2.0/24"}, C{"::1/128"}; a
    bare address is one host) -> a tuple of their canonical texts.
    """
    if not isinstance(value, list):
        raise _Invalid(
            'must be an array of networks such as ["192.0.2.0/24", "::1/128"], '
            f"not {_show(value)}"
        )
    if not value:
        raise _Invalid(
            'must list at least one network; to accept any source write '
            '["0.0.0.0/0", "::/0"] (only behind a firewall or SIP proxy)'
        )
    result, errors = [], []
    for i, item in enumerate(value):
        try:
            if not isinstance(item, str):
                raise ValueError(f"not {_show(item)}")
            result.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError as e:
            errors.append((f"[{i}]", f"must be a network such as "
                           f"'192.0.2.0/24' or '2001:db8::/32': {e}"))
    if errors:
        raise _Invalid(errors=errors, partial=tuple(result))
    return tuple(result)


def _domains(value, context) -> tuple:
    """
    A list of domain names -> a tuple of lower-cased names.
    """
    if not isinstance(value, list):
        raise _Invalid(
            f'must be an array of domain names such as ["sip.example.com"], '
            f"not {_show(value)}"
        )
    result, errors = [], []
    for i, item in enumerate(value):
        try:
            result.append(_checkDomain(item))
        except _Invalid as e:
            errors.extend((f"[{i}]{suffix}", message) for suffix, message in e.errors)
    if errors:
        raise _Invalid(errors=errors, partial=tuple(result))
    return tuple(result)


def _presenceStore(value, context) -> str:
    """
    C{"memory"}, C{"sqlite:PATH"} or a PostgreSQL URI
    (C{"postgresql://USER@HOST:PORT/DATABASE"}, or C{postgres://}); PATH is
    made absolute against the configuration file's directory, and its
    directory must exist; a PostgreSQL URI needs psycopg 3 installed (the
    C{cluster} extra) and is not shown with its password in errors. The
    server is not contacted here.
    """
    from xmppgw.store import isPostgreSQLSpec, redactDSN

    if value == "memory":
        return value
    if isinstance(value, str) and value.startswith("sqlite:") and value[7:]:
        path = os.path.abspath(
            os.path.join(context.baseDir, os.path.expanduser(value[7:])))
        if not os.path.isdir(os.path.dirname(path)):
            raise _Invalid(
                f"cannot use {value!r}: directory {os.path.dirname(path)!r} "
                "does not exist")
        return "sqlite:" + path
    if isPostgreSQLSpec(value):
        if importlib.util.find_spec("psycopg") is None:
            raise _Invalid(
                f"cannot use {redactDSN(value)!r}: the PostgreSQL store needs "
                "psycopg 3 (pip install 'xmppgw[cluster]')")
        return value
    shown = repr(redactDSN(value)) if isinstance(value, str) else _show(value)
    raise _Invalid('must be "memory", "sqlite:PATH" or '
                   f'"postgresql://USER@HOST:PORT/DATABASE", not {shown}')


def _rate(value, context) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= 1000000
    ):
        raise _Invalid(
            f"must be a number of messages per second from 0 (no limit) to "
            f"1000000, not {_show(value)}"
        )
    return float(value)


# -- The schema --------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """
    One configuration key.

    @ivar table: the TOML table (C{"xmpp"}, C{"sip"}, C{"log"}).
    @ivar name: the key's name in that table.
    @ivar type: the TOML type, in words (C{"integer"}, C{"string"}, ...).
    @ivar default: the default as a TOML value, or L{None} when the key is
        unset by default (TOML has no null: such keys are left out).
    @ivar help: one line saying what the key does.
    @ivar parse: C{parse(value, context)} returning the checked value or
        raising L{_Invalid}.
    """

    table: str
    name: str
    type: str
    default: Any
    help: str
    parse: Callable = field(repr=False, compare=False)

    @property
    def path(self) -> str:
        """
        The dotted key path, e.g. C{"xmpp.xmpp_port"}.
        """
        return f"{self.table}.{self.name}"

    @property
    def defaultTOML(self) -> Optional[str]:
        """
        The default as TOML text (C{'"component"'}, C{"5347"}), or L{None}
        when the key is unset by default.
        """
        if self.default is None:
            return None
        return _toml(self.default)


TABLES = (
    ("xmpp", "The XMPP side; Kamailio xmpp module parameter names and defaults."),
    ("sip", "The SIP side: sockets, limits and timers."),
    ("log", "What is logged."),
    ("metrics", "The HTTP endpoint for Prometheus metrics and health checks; "
     "off unless listen is set."),
    ("policy", "Who may send through the gateway, and how fast."),
    ("presence", "Presence (SUBSCRIBE/NOTIFY <-> <presence/>), typing "
     "notifications and delivery receipts (docs/presence.rst)."),
)

SCHEMA = (
    # [xmpp]: Kamailio's modparam("xmpp", ...) names, defaults and meaning.
    Key("xmpp", "backend", "string", "component",
        'How to reach XMPP: "component" (XEP-0114 external component) or '
        '"server" (federate directly over S2S with dialback and TLS).',
        _backend),
    Key("xmpp", "domain_separator", "string", "*",
        "One character between user and domain in the separator scheme "
        "(sip:user*xmppdomain@gateway_domain).",
        _separator),
    Key("xmpp", "gateway_domain", "string", "sip-xmpp.example.org",
        "SIP domain of the gateway: SIP users write to user*xmppdomain@gateway_domain.",
        _domain),
    Key("xmpp", "xmpp_domain", "string", "sip-xmpp.example.org",
        "XMPP domain of the gateway (the component's name): XMPP users write "
        "to user*sipdomain@xmpp_domain.",
        _domain),
    Key("xmpp", "xmpp_host", "string", "xmpp.example.org",
        "Host name or IP address of the XMPP server to connect to; server "
        'mode: the IP address to listen on (unset: "0.0.0.0").',
        _hostOrAddress),
    Key("xmpp", "xmpp_port", "integer", 0,
        "Port of the XMPP server; 0 means 5347 for component, 5269 for server.",
        _integer(0, 65535, " (0: the backend's default port)")),
    Key("xmpp", "xmpp_password", "string", "secret",
        "Shared secret of the XEP-0114 component handshake.",
        _nonEmptyString),
    Key("xmpp", "outbound_proxy", "string", None,
        "SIP URI of a proxy for all SIP requests the gateway sends; unset: "
        "send to the Request-URI's host.",
        _sipURIOrNone),
    Key("xmpp", "gwmap", "string or array of strings", [],
        'Domain map "sipdomain=xmppdomain;..." (a bare domain maps to itself); '
        "empty: the separator scheme.",
        _gwmap),
    Key("xmpp", "reconnect_initial_interval", "float", 1.0,
        "Seconds before the first attempt to reconnect the XMPP link; doubles "
        "after each failure.",
        _seconds(0.1, 3600)),
    Key("xmpp", "reconnect_max_interval", "float", 60.0,
        "Upper bound in seconds of the reconnect back-off.",
        _seconds(0.1, 86400)),
    Key("xmpp", "confirm_timeout", "float", 5.0,
        "Component mode: seconds the XMPP server has to confirm a relayed "
        "stanza (ping round trip) before the SIP MESSAGE gets 504; below "
        "sip.hold_timeout (the default is lowered to half of it if needed).",
        _seconds(0.1, 60)),
    Key("xmpp", "confirm_delivery", "string (or boolean)", "ping",
        'Component mode: when a SIP MESSAGE gets its 2xx. "ping": once the '
        "XMPP server has routed back a ping to our own domain written behind "
        'the stanza. "tcp" (Linux): once the server\'s TCP has acknowledged '
        "the stanza's bytes (ioctl TIOCOUTQ). \"kernel\": once the stanza's "
        "bytes are in the kernel (handed over right after the write, the 2xx "
        "right after that): the recommended mode when several gateway "
        "instances share one component domain (ejabberd load balancing), "
        'where the ping may be routed to another instance. "none": once '
        "written to the link (a gateway crash can lose it). true and false "
        'mean "ping" and "none".',
        _confirmDelivery),
    Key("xmpp", "dialback_secret", "string", None,
        "Server mode: secret for dialback keys (XEP-0185), shared by every "
        "instance serving xmpp_domain; unset: random at each start.",
        _dialbackSecret),
    Key("xmpp", "tls_certificate", "string", None,
        "Server mode: PEM certificate (chain) of xmpp_domain for S2S TLS; "
        "relative to this file's directory.",
        _readableFile),
    Key("xmpp", "tls_private_key", "string", None,
        "Server mode: PEM private key of tls_certificate; relative to this "
        "file's directory.",
        _readableFile),
    Key("xmpp", "tls_ca", "string", None,
        "Server mode: PEM CA certificates trusted for peers' S2S certificates; "
        "unset: the system's trust store.",
        _readableFile),
    Key("xmpp", "tls_required", "boolean", True,
        "Server mode: refuse S2S streams without STARTTLS, in both directions "
        "(as Prosody does by default).",
        _boolean),
    Key("xmpp", "tls_verify", "boolean", True,
        "Server mode: check the certificate of the servers we connect to; "
        "false: encrypt anyway and rely on dialback.",
        _boolean),
    Key("xmpp", "idle_timeout", "float", 300.0,
        "Server mode: seconds after which an idle S2S stream is closed.",
        _seconds(1, 86400)),
    Key("xmpp", "s2s_queue_limit", "integer", 100,
        "Server mode: most stanzas waiting for the S2S stream of one domain; "
        "more are refused (SIP 503).",
        _integer(1, 100000)),
    Key("xmpp", "s2s_queue_ttl", "float", 30.0,
        "Server mode: seconds a stanza may wait for its S2S stream before it "
        "fails (remote-server-timeout).",
        _seconds(1, 3600)),
    Key("xmpp", "s2s_peers", "table", None,
        'Server mode: domains pinned to a "host:port" (no DNS lookup), for '
        "private federation and tests.",
        _s2sPeers),
    # [sip]
    Key("sip", "listen", "array of strings",
        ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"],
        'SIP sockets, Kamailio style "proto:host:port" with proto udp, tcp or '
        "tls (IPv6 in brackets).",
        _listen),
    Key("sip", "tls_certificate", "string", None,
        "PEM certificate (chain) for tls sockets; relative to this file's "
        "directory; required with tls.",
        _readableFile),
    Key("sip", "tls_private_key", "string", None,
        "PEM private key for tls sockets; relative to this file's directory; "
        "required with tls.",
        _readableFile),
    Key("sip", "max_message_size", "integer", 2048,
        "Largest SIP MESSAGE accepted, in bytes; larger ones get 513 Message "
        "Too Large.",
        _integer(256, 65535)),
    Key("sip", "success_code", "integer", 202,
        "Final response to a relayed MESSAGE: 202 (RFC 3428 section 7) or 200.",
        _successCode),
    Key("sip", "t1_interval", "float", 0.5,
        "RFC 3261 timer T1 in seconds (round-trip estimate); a transaction "
        "times out after 64*T1.",
        _seconds(0.05, 10)),
    Key("sip", "hold_timeout", "float", 8.0,
        "Seconds a SIP MESSAGE waits for the XMPP link before a 5xx; must be "
        "below 64*t1_interval.",
        _seconds(0.1, 640)),
    Key("sip", "hold_limit", "integer", 10000,
        "Most SIP MESSAGEs waiting at once for the XMPP side (the link to "
        "come up, or the server's confirmation); more get 503 at once (0: "
        "none held while the link is down). Size it above the MESSAGE rate "
        "times the longest confirmation delay (the default: 10,000/s for "
        "1 s); each held MESSAGE takes about 5 KB.",
        _integer(0, 1000000)),
    Key("sip", "queue_limit", "integer", 100,
        "Most XMPP->SIP messages queued per destination URI; more are "
        "bounced with an XMPP error.",
        _integer(1, 100000)),
    Key("sip", "connection_idle_timeout", "float", 300.0,
        "Seconds after which an idle TCP/TLS connection (inbound or outbound) "
        "is closed.",
        _seconds(1, 86400)),
    Key("sip", "connections_limit", "integer", 1000,
        "Most inbound TCP/TLS connections at once; more are refused.",
        _integer(1, 1000000)),
    Key("sip", "allow_from", "array of strings", ["127.0.0.0/8", "::1/128"],
        "Source networks (CIDR) allowed to send SIP requests; others get 403 "
        "(TCP/TLS: refused). List your SIP proxy.",
        _networks),
    Key("sip", "tls_ca", "string", None,
        "PEM CA certificate(s); when set, tls sockets require a client "
        "certificate signed by them.",
        _readableFile),
    Key("sip", "options_follow_link", "boolean", True,
        "Answer OPTIONS 503 (Retry-After) while the XMPP component link is "
        "down or the gateway is stopping, so OPTIONS probing (Kamailio "
        "dispatcher) takes the instance out; false: always 200.",
        _boolean),
    Key("sip", "udp_receive_buffer_size", "integer", 4194304,
        "Receive buffer (SO_RCVBUF) asked for on each UDP socket, in bytes: "
        "datagrams arriving while the gateway is busy wait there instead of "
        "being dropped. The kernel caps it at net.core.rmem_max (logged); 0 "
        "keeps the system default.",
        _integer(0, 1 << 30)),
    # [log]
    Key("log", "messages", "boolean", True,
        "Log one line per relayed message (addresses and result, no body).",
        _boolean),
    Key("log", "traffic_sip", "boolean", False,
        "Log every SIP message sent and received, in full (debugging only).",
        _boolean),
    Key("log", "traffic_xmpp", "boolean", False,
        "Log every XML stanza sent and received, in full (debugging only).",
        _boolean),
    Key("log", "format", "string", "text",
        'Log output: "text" (twistd\'s usual lines) or "json" (one JSON '
        "object per line, for log shippers).",
        _logFormat),
    Key("log", "rotate_size", "integer", 10_000_000,
        "With twistd --logfile FILE: start a new FILE when it reaches this "
        "many bytes, the old ones renamed FILE.1, FILE.2, ...; 0: never by "
        "size (logrotate and SIGUSR1 do it).",
        _integer(0, 10**12)),
    Key("log", "rotated_files_max", "integer", 10,
        "With twistd --logfile: most rotated files kept (FILE.1 to FILE.N, "
        "older ones deleted); 0: keep all (each rotation renames them all).",
        _integer(0, 100000)),
    Key("log", "flush_interval", "float", 0.1,
        "Longest a log line waits in the file's buffer, in seconds (the "
        "file is written at most this often, not once per line); lines "
        "this recent are lost if the process is killed outright. 0: every "
        "line at once, as twistd does.",
        _seconds(0, 10)),
    # [metrics]
    Key("metrics", "listen", "string", None,
        '"host:port" serving /metrics, /healthz and /readyz over HTTP; unset: '
        "off. Keep it on loopback or a private network.",
        _hostPortListen),
    # [policy]
    Key("policy", "sip_domains", "array of strings", [],
        "SIP domains whose users may send into XMPP (From host), besides the "
        "gwmap keys; both empty: any but gateway_domain.",
        _domains),
    Key("policy", "xmpp_domains", "array of strings", [],
        "XMPP domains whose users may send into SIP; empty: any (the XMPP "
        "server authenticated them).",
        _domains),
    Key("policy", "rate_per_source", "float", 500.0,
        "SIP requests per second from one source address; beyond: 503 with "
        "Retry-After (0: no limit).",
        _rate),
    Key("policy", "rate_per_source_burst", "integer", 1000,
        "Requests one source address may send at once before "
        "rate_per_source applies.",
        _integer(1, 10000000)),
    Key("policy", "rate_per_sender", "float", 20.0,
        "Messages per second from one sender (SIP From URI or bare JID); "
        "beyond: 503 / <policy-violation/> (0: no limit).",
        _rate),
    Key("policy", "rate_per_sender_burst", "integer", 100,
        "Messages one sender may send at once before rate_per_sender applies.",
        _integer(1, 10000000)),
    Key("policy", "stanza_max_size", "integer", 65536,
        "Largest XML stanza accepted from the XMPP server (component mode) "
        "or from an S2S peer (server mode), bytes (RFC 6120: at least "
        "10000); larger closes the stream.",
        _integer(10000, 10485760)),
    # [presence]
    Key("presence", "enabled", "boolean", False,
        "Map SIP SUBSCRIBE/NOTIFY (Event: presence) <-> XMPP presence; off: "
        "SUBSCRIBE/NOTIFY get 405 and <presence/> is ignored.",
        _boolean),
    Key("presence", "store", "string", "memory",
        '"memory" (lost on restart), "sqlite:PATH" (kept across restarts; '
        "relative to this file's directory; one instance) or "
        '"postgresql://USER@HOST:PORT/DATABASE" (shared by several '
        "instances; needs the cluster extra; password in ~/.pgpass rather "
        "than here).",
        _presenceStore),
    Key("presence", "contact", "string", None,
        "SIP URI the gateway puts in Contact (where NOTIFYs for it go); "
        "unset: the first [sip] listen socket.",
        _sipURIOrNone),
    Key("presence", "subscriptions_max", "integer", 10000,
        "Most presence subscriptions in total (both directions); more are "
        "refused.",
        _integer(0, 10000000)),
    Key("presence", "subscriptions_per_user_max", "integer", 100,
        "Most presence subscriptions one watcher (SIP or XMPP user) may hold.",
        _integer(0, 1000000)),
    Key("presence", "expires_interval", "integer", 3600,
        "Expires the gateway asks for in SUBSCRIBE, and the most it grants "
        "(RFC 3856 default 3600).",
        _integer(60, 86400)),
    Key("presence", "min_expires_interval", "integer", 60,
        "Shorter non-zero Expires in a SUBSCRIBE get 423 Interval Too Brief.",
        _integer(1, 3600)),
    Key("presence", "probe_timeout", "float", 10.0,
        "Seconds to wait for the answer to the probe sent before each "
        "refresh (RFC 7248 section 7).",
        _seconds(0.1, 600)),
    Key("presence", "retry_interval", "float", 300.0,
        "Seconds before retrying a SUBSCRIBE that failed for a transient "
        "reason.",
        _seconds(1, 86400)),
    Key("presence", "rate_per_sender", "float", 2.0,
        "Presence events per second from one sender (SIP From URI or bare "
        "JID); beyond: dropped / 503 (0: no limit).",
        _rate),
    Key("presence", "rate_per_sender_burst", "integer", 20,
        "Presence events one sender may send at once before rate_per_sender "
        "applies.",
        _integer(1, 1000000)),
    Key("presence", "instance_id", "string", None,
        "This instance's name in a presence store shared by several "
        "instances (it runs the timers of the subscriptions it owns); "
        "distinct per instance, the same across restarts. Unset: the host "
        "name and this file's path.",
        _nonEmptyString),
    Key("presence", "lease_interval", "float", 60.0,
        "Seconds an instance's claim on a subscription outlives the "
        "subscription's next timer; then another instance sharing the "
        "store takes it over. More than probe_timeout + 32.",
        _seconds(10, 3600)),
    Key("presence", "iscomposing_to_sip", "boolean", True,
        "Map XEP-0085 chat states to RFC 3994 isComposing MESSAGEs.",
        _boolean),
    Key("presence", "iscomposing_to_xmpp", "boolean", True,
        "Map isComposing MESSAGEs to XEP-0085 chat states; off: they get 415.",
        _boolean),
    Key("presence", "iscomposing_suppress_interval", "float", 3600.0,
        "Seconds a SIP URI that answered 415 to isComposing gets no more "
        "isComposing.",
        _seconds(0, 604800)),
    Key("presence", "receipts", "boolean", False,
        "Map XEP-0184 receipts <-> RFC 5438 IMDN (messages asking for one "
        "are sent CPIM-wrapped).",
        _boolean),
    Key("presence", "receipts_pending_limit", "integer", 10000,
        "Most messages waiting for a receipt or an IMDN at once; the oldest "
        "are forgotten.",
        _integer(1, 10000000)),
    Key("presence", "receipts_pending_ttl", "float", 3600.0,
        "Seconds a message waits for its receipt or IMDN before it is "
        "forgotten.",
        _seconds(1, 604800)),
)


def schema() -> tuple:
    """
    Describe every configuration key.

    @return: a tuple of L{Key}, in the order of the sample file.
    """
    return SCHEMA


# -- The result ---------------------------------------------------------------


@dataclass(frozen=True)
class XMPPConfig:
    """
    Table C{[xmpp]}. C{xmpp_port} is resolved (never 0); domains and
    C{gwmap} are lower-cased; C{xmpp_host} has no brackets.
    """

    backend: str
    domain_separator: str
    gateway_domain: str
    xmpp_domain: str
    xmpp_host: str
    xmpp_port: int
    xmpp_password: str
    outbound_proxy: Optional[str]
    gwmap: dict
    reconnect_initial_interval: float
    reconnect_max_interval: float
    confirm_timeout: float = 5.0
    confirm_delivery: str = "ping"
    # Server mode (defaults here so that code building an XMPPConfig for
    # component mode need not name them).
    dialback_secret: Optional[str] = None
    tls_certificate: Optional[str] = None
    tls_private_key: Optional[str] = None
    tls_ca: Optional[str] = None
    tls_required: bool = True
    tls_verify: bool = True
    idle_timeout: float = 300.0
    s2s_queue_limit: int = 100
    s2s_queue_ttl: float = 30.0
    s2s_peers: Optional[dict] = None


@dataclass(frozen=True)
class SIPConfig:
    """
    Table C{[sip]}. C{listen} is a tuple of L{Listen}; TLS file names are
    absolute.
    """

    listen: tuple
    tls_certificate: Optional[str]
    tls_private_key: Optional[str]
    max_message_size: int
    success_code: int
    t1_interval: float
    hold_timeout: float
    hold_limit: int
    queue_limit: int
    connection_idle_timeout: float
    connections_limit: int
    allow_from: tuple = ("127.0.0.0/8", "::1/128")
    tls_ca: Optional[str] = None
    options_follow_link: bool = True
    udp_receive_buffer_size: int = 4194304


@dataclass(frozen=True)
class LogConfig:
    """
    Table C{[log]}.
    """

    messages: bool
    traffic_sip: bool
    traffic_xmpp: bool
    format: str = "text"
    rotate_size: int = 10_000_000
    rotated_files_max: int = 10
    flush_interval: float = 0.1


@dataclass(frozen=True)
class MetricsConfig:
    """
    Table C{[metrics]}. C{listen} is C{(host, port)} (IPv6 without
    brackets), or L{None} when metrics are off.
    """

    listen: Optional[tuple] = None


@dataclass(frozen=True)
class PolicyConfig:
    """
    Table C{[policy]}. Domains are lower-cased tuples.
    """

    sip_domains: tuple = ()
    xmpp_domains: tuple = ()
    rate_per_source: float = 500.0
    rate_per_source_burst: int = 1000
    rate_per_sender: float = 20.0
    rate_per_sender_burst: int = 100
    stanza_max_size: int = 65536


@dataclass(frozen=True)
class PresenceConfig:
    """
    Table C{[presence]}. C{store} is C{"memory"}, C{"sqlite:"} and an
    absolute path, or a PostgreSQL URI; C{contact} is resolved from C{[sip] listen} when unset.
    """

    enabled: bool = False
    store: str = "memory"
    contact: Optional[str] = None
    subscriptions_max: int = 10000
    subscriptions_per_user_max: int = 100
    expires_interval: int = 3600
    min_expires_interval: int = 60
    probe_timeout: float = 10.0
    retry_interval: float = 300.0
    rate_per_sender: float = 2.0
    rate_per_sender_burst: int = 20
    instance_id: Optional[str] = None
    lease_interval: float = 60.0
    iscomposing_to_sip: bool = True
    iscomposing_to_xmpp: bool = True
    iscomposing_suppress_interval: float = 3600.0
    receipts: bool = False
    receipts_pending_limit: int = 10000
    receipts_pending_ttl: float = 3600.0


@dataclass(frozen=True)
class Config:
    """
    The whole configuration.

    @ivar path: the file it came from.
    """

    path: str
    xmpp: XMPPConfig
    sip: SIPConfig
    log: LogConfig
    metrics: MetricsConfig = MetricsConfig()
    policy: PolicyConfig = PolicyConfig()
    presence: PresenceConfig = PresenceConfig()

    @classmethod
    def defaults(cls) -> "Config":
        """
        The configuration of an empty file.
        """
        return parseConfig({}, "<defaults>")


_TABLE_CLASSES = {"xmpp": XMPPConfig, "sip": SIPConfig, "log": LogConfig,
                  "metrics": MetricsConfig, "policy": PolicyConfig,
                  "presence": PresenceConfig}


def resolvePort(backend: str, port: int) -> int:
    """
    Kamailio's rule for C{xmpp_port}: 0 (the default) means 5347 for the
    component backend and 5269 for the server backend.
    """
    if port:
        return port
    if backend == "server":
        return DEFAULT_SERVER_PORT
    return DEFAULT_COMPONENT_PORT


# -- Validation ----------------------------------------------------------------


_INVALID = object()


def _suggest(name: str, candidates) -> str:
    """
    A C{" (did you mean 'x'?)"} suffix, or C{""}.
    """
    close = difflib.get_close_matches(name, list(candidates), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return ""


def _unknownKeyMessage(table: str, name: str) -> str:
    names = [k.name for k in SCHEMA if k.table == table]
    suggestion = _suggest(name, names)
    if not suggestion:
        elsewhere = [k.path for k in SCHEMA if k.name == name]
        if elsewhere:
            suggestion = f" (did you mean {elsewhere[0]!r}?)"
    return "unknown key" + suggestion


def _serverChecks(xmpp: dict, explicit: set, errors: list):
    """
    Server mode: C{xmpp_host} is the address to listen on, and TLS needs a
    certificate and key.
    """
    host = xmpp["xmpp_host"]
    if "xmpp.xmpp_host" not in explicit:
        xmpp["xmpp_host"] = "0.0.0.0"
    elif host is not _INVALID:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            errors.append((
                "xmpp.xmpp_host",
                'in server mode this is the IP address to listen on (such as '
                f'"0.0.0.0" or "127.0.0.1"), not the host name {host!r}',
            ))
    certificate, key = xmpp["tls_certificate"], xmpp["tls_private_key"]
    if (certificate is None) != (key is None):
        missing = "tls_private_key" if key is None else "tls_certificate"
        other = "tls_certificate" if key is None else "tls_private_key"
        errors.append((f"xmpp.{missing}", f"is required with xmpp.{other}"))
    elif certificate is None and xmpp["tls_required"] is True:
        errors.append((
            "xmpp.tls_certificate",
            "is required in server mode while tls_required is true (set "
            "tls_certificate and tls_private_key, or tls_required = false)",
        ))


def _crossChecks(values: dict, explicit: set, errors: list):
    """
    Checks that involve more than one key; skipped where a key is invalid.

    @param explicit: the key paths set in the file (not defaulted).
    """
    xmpp, sip = values["xmpp"], values["sip"]

    initial = xmpp["reconnect_initial_interval"]
    maximum = xmpp["reconnect_max_interval"]
    if _INVALID not in (initial, maximum) and maximum < initial:
        errors.append((
            "xmpp.reconnect_max_interval",
            f"must not be less than reconnect_initial_interval "
            f"({_number(initial)}), not {_number(maximum)}",
        ))
    if xmpp["backend"] is not _INVALID and xmpp["xmpp_port"] is not _INVALID:
        xmpp["xmpp_port"] = resolvePort(xmpp["backend"], xmpp["xmpp_port"])
    if xmpp["backend"] == "server":
        _serverChecks(xmpp, explicit, errors)

    t1, hold = sip["t1_interval"], sip["hold_timeout"]
    confirm = xmpp["confirm_timeout"]
    if _INVALID not in (confirm, hold) and not confirm < hold:
        if "xmpp.confirm_timeout" in explicit:
            errors.append((
                "xmpp.confirm_timeout",
                f"must be less than sip.hold_timeout ({_number(hold)}), not "
                f"{_number(confirm)}: a stanza written and not yet confirmed "
                f"must be answered by the confirmation, not the hold timer",
            ))
        else:
            xmpp["confirm_timeout"] = hold / 2
    if _INVALID not in (t1, hold) and not hold < 64 * t1:
        errors.append((
            "sip.hold_timeout",
            f"must be less than 64 * t1_interval ({_number(64 * t1)} seconds, "
            f"when SIP clients give up: RFC 3261 Timer F), not {_number(hold)}"
            + ("" if "sip.hold_timeout" in explicit
               else " (the default): set hold_timeout lower"),
        ))

    listen = sip["listen"]
    if listen is not _INVALID:
        tls = [l for l in listen if l.proto == "tls"]
        if tls:
            for name in ("tls_certificate", "tls_private_key"):
                if sip[name] is None:
                    errors.append((
                        f"sip.{name}",
                        f"is required because sip.listen has a tls socket "
                        f"({str(tls[0])!r})",
                    ))
        elif sip.get("tls_ca") is not None:
            errors.append((
                "sip.tls_ca",
                "has no effect: sip.listen has no tls socket to require "
                "client certificates on",
            ))

    _presenceChecks(values, errors)


def _presenceChecks(values: dict, errors: list):
    """
    C{[presence]}: the expiry bounds agree; a Contact can be made.
    """
    presence, listen = values["presence"], values["sip"]["listen"]
    low, high = presence["min_expires_interval"], presence["expires_interval"]
    if _INVALID not in (low, high) and low > high:
        errors.append((
            "presence.min_expires_interval",
            f"must not be more than expires_interval ({high}), not {low}",
        ))
    if presence["enabled"] is True and presence["contact"] is None and listen:
        if listen is _INVALID:
            return
        first = listen[0]
        if first.host in ("0.0.0.0", "::"):
            errors.append((
                "presence.contact",
                f"is required: the first sip.listen socket ({str(first)!r}) "
                "has a wildcard host, which cannot be written in a Contact",
            ))
        else:
            host = f"[{first.host}]" if ":" in first.host else first.host
            params = ";transport=tcp" if first.proto == "tcp" else ""
            scheme = "sips" if first.proto == "tls" else "sip"
            presence["contact"] = f"{scheme}:{host}:{first.port}{params}"


def parseConfig(data: dict, path: str) -> Config:
    """
    Check a configuration dictionary (as C{tomllib} returns it) and build
    the L{Config}.

    @param data: the parsed TOML document.
    @param path: the file it came from: named in errors; relative file names
        in it are resolved against its directory.
    @raise ConfigError: with every problem found.
    """
    context = _Context(os.path.dirname(os.path.abspath(path)))
    errors = []
    values = {table: {} for table, _ in TABLES}
    keys = {(k.table, k.name): k for k in SCHEMA}
    tableNames = [table for table, _ in TABLES]

    for name, content in data.items():
        if name not in values:
            if isinstance(content, dict):
                errors.append((name, "unknown table" + _suggest(name, tableNames)))
            else:
                elsewhere = [k.path for k in SCHEMA if k.name == name]
                hint = f" (did you mean {elsewhere[0]!r}?)" if elsewhere else ""
                errors.append((name, "unknown key outside any table" + hint))
            continue
        if not isinstance(content, dict):
            errors.append((name, f"must be a table [{name}], not {_show(content)}"))
            continue
        for keyName, value in content.items():
            key = keys.get((name, keyName))
            if key is None:
                errors.append(
                    (f"{name}.{keyName}", _unknownKeyMessage(name, keyName))
                )
                continue
            try:
                values[name][keyName] = key.parse(value, context)
            except _Invalid as e:
                values[name][keyName] = (
                    _INVALID if e.partial is None else e.partial
                )
                for suffix, message in e.errors:
                    errors.append((key.path + suffix, message))

    explicit = {
        f"{table}.{name}" for table in values for name in values[table]
    }
    for key in SCHEMA:
        if key.name not in values[key.table]:
            if key.default is None:
                values[key.table][key.name] = None
            else:
                values[key.table][key.name] = key.parse(key.default, context)

    _crossChecks(values, explicit, errors)
    if errors:
        raise ConfigError(path, errors)
    tables = {
        table: _TABLE_CLASSES[table](**values[table]) for table, _ in TABLES
    }
    return Config(path=path, **tables)


def loadConfig(path: str) -> Config:
    """
    Read and check a TOML configuration file.

    @param path: the file name.
    @raise ConfigError: if the file cannot be read, is not TOML, or does not
        pass L{parseConfig}; every problem is reported.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(path, [(None, f"cannot read the configuration file: {reason}")])
    except UnicodeDecodeError as e:
        raise ConfigError(path, [(
            None,
            f"is not UTF-8 text (TOML files must be UTF-8): byte "
            f"{e.object[e.start]:#04x} at offset {e.start}",
        )])
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, [(None, f"TOML syntax error: {e}")])
    return parseConfig(data, path)
