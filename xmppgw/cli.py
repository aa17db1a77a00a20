# -*- test-case-name: tests.test_cli -*-
"""
The C{xmppgw} command: small tools for operators.

  - C{xmppgw check-config FILE...}: load and validate configuration files;
    print every problem with the file name and the key.
  - C{xmppgw map [--config FILE] ADDRESS...}: show how addresses map in both
    directions under a configuration.
  - C{xmppgw send-sip URI TEXT}: send one SIP MESSAGE over UDP or TCP and
    print the response.
  - C{xmppgw demo}: the self-contained demonstration that C{make run}
    starts (see L{xmppgw.demo}).
  - C{xmppgw compile [--status | --check | --remove]}: the optional
    compiled hot path for CPython (L{xmppgw.compiled}).
  - C{xmppgw version}.

Exit status: 0 for success, 1 for a failure (an invalid file, an address
that cannot be mapped, a non-2xx response or no response), 2 for a usage
error (argparse's convention).

This is a command-line program: it uses plain blocking sockets with
timeouts, not the reactor. The SIP exchange (L{exchangeUDP},
L{exchangeTCP}) takes the socket and the clock as arguments so that tests
can drive it without a network or real time.
"""

import argparse
import secrets
import textwrap
import socket
import sys
import time

from xmppgw import __version__, compiled
from xmppgw.addressing import AddressError, AddressMapper
from xmppgw.config import Config, ConfigError, loadConfig
from xmppgw.sip.message import (
    FramingError,
    Headers,
    Request,
    Response,
    SIPParseError,
    StreamFramer,
    parseMessage,
    parseVia,
    serialize,
)
from xmppgw.sip.uri import URIError, parseURI


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

DEFAULT_FROM = "sip:xmppgw-cli@localhost"
"""The From URI of L{sendSIP} when C{--from} is not given."""

DEFAULT_TIMEOUT = 32.0
"""Seconds C{send-sip} waits for a final response: 64*T1 (RFC 3261 Timer F)."""

T1 = 0.5
T2 = 4.0
MAX_RESPONSE_SIZE = 65535
USER_AGENT = f"xmppgw-cli/{__version__}"


class SIPClientError(Exception):
    """
    The MESSAGE could not be sent, or no final response came back;
    C{str(error)} says why.
    """


# -- check-config ---------------------------------------------------------------


def describeConfig(config: Config) -> list:
    """
    A short summary of a valid configuration, one line per item.

    @param config: a L{xmppgw.config.Config}.
    @return: a list of lines (without indentation).
    """
    x, s = config.xmpp, config.sip
    lines = [
        f"backend: {x.backend} (XEP-0114 component {x.xmpp_domain!r} of the "
        f"XMPP server at {_hostPort(x.xmpp_host, x.xmpp_port)})",
        f"SIP domain (gateway_domain): {x.gateway_domain}",
        f"XMPP domain (xmpp_domain): {x.xmpp_domain}",
    ]
    if x.gwmap:
        pairs = ", ".join(f"{k}={v}" for k, v in sorted(x.gwmap.items()))
        lines.append(f"addresses: gwmap ({pairs})")
    else:
        lines.append(
            f"addresses: separator {x.domain_separator!r} "
            f"(sip:user{x.domain_separator}xmppdomain@{x.gateway_domain} <-> "
            f"user{x.domain_separator}sipdomain@{x.xmpp_domain})"
        )
    lines.append("SIP listens on: " + ", ".join(str(l) for l in s.listen))
    if x.outbound_proxy:
        lines.append(f"outbound proxy: {x.outbound_proxy}")
    else:
        lines.append("outbound proxy: none (requests go to the Request-URI's host)")
    return lines


def _hostPort(host: str, port: int) -> str:
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def checkConfig(paths, out, err) -> int:
    """
    Load and validate each configuration file.

    @param paths: file names.
    @param out: where "FILE: OK" and the summary go.
    @param err: where errors go, one line each ("FILE: key: message").
    @return: L{EXIT_OK} if every file is valid, else L{EXIT_FAILURE}.
    """
    status = EXIT_OK
    for path in paths:
        try:
            config = loadConfig(path)
        except ConfigError as e:
            print(str(e), file=err)
            count = len(e.errors)
            print(
                f"{path}: {count} error{'s' if count != 1 else ''}", file=err
            )
            status = EXIT_FAILURE
            continue
        print(f"{path}: OK", file=out)
        for line in describeConfig(config):
            print(f"  {line}", file=out)
    return status


# -- map -----------------------------------------------------------------------

_URI_SCHEMES = ("sip:", "sips:", "im:", "pres:", "tel:")


def isURI(address: str) -> bool:
    """
    Whether C{address} is a URI (C{sip:}, C{sips:}, C{im:}, C{pres:},
    C{tel:}) rather than a JID.
    """
    return address.lower().startswith(_URI_SCHEMES)


def mapperFromConfig(config: Config) -> AddressMapper:
    """
    The L{AddressMapper} the gateway builds from C{config}.
    """
    x = config.xmpp
    return AddressMapper(
        separator=x.domain_separator,
        gatewayDomain=x.gateway_domain,
        xmppDomain=x.xmpp_domain,
        gwmap=x.gwmap,
    )


def mapAddress(mapper: AddressMapper, address: str) -> list:
    """
    Map one address in both directions.

    @param address: a SIP URI (C{sip:}/C{sips:}, also C{im:}, C{pres:},
        C{tel:}) or a JID (an C{xmpp:} prefix is allowed).
    @return: a list of C{(label, result, error)}, two items; C{result} is
        the mapped address or L{None}, C{error} the reason or L{None}.
    """
    if isURI(address):
        ways = [
            ("as SIP target (Request-URI) -> XMPP recipient", mapper.sipTargetToJID),
            ("as SIP sender (From) -> XMPP sender", mapper.sipSenderToJID),
        ]
    else:
        if address.lower().startswith("xmpp:"):
            address = address[5:]
        ways = [
            ("as XMPP recipient (to) -> SIP Request-URI", mapper.jidTargetToSIP),
            ("as XMPP sender (from) -> SIP From", mapper.jidSenderToSIP),
        ]
    results = []
    for label, function in ways:
        try:
            results.append((label, function(address), None))
        except AddressError as e:
            results.append((label, None, str(e)))
    return results


def mapAddresses(mapper: AddressMapper, addresses, out) -> int:
    """
    Print how each address maps.

    @return: L{EXIT_FAILURE} if some address maps in neither direction,
        else L{EXIT_OK}.
    """
    status = EXIT_OK
    width = 0
    allResults = []
    for address in addresses:
        results = mapAddress(mapper, address)
        allResults.append((address, results))
        width = max([width] + [len(label) for label, _, _ in results])
    for address, results in allResults:
        print(address, file=out)
        for label, result, error in results:
            if error is None:
                print(f"  {label:<{width}}  {result}", file=out)
            else:
                print(f"  {label:<{width}}  cannot map: {error}", file=out)
        if all(error is not None for _, _, error in results):
            status = EXIT_FAILURE
    return status


# -- send-sip ------------------------------------------------------------------


def _viaHost(host: str) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def buildMessage(
    uri: str,
    text: str,
    fromURI: str = DEFAULT_FROM,
    transport: str = "udp",
    localHost: str = "127.0.0.1",
    localPort: int = 5060,
    subject: str = None,
    branch: str = None,
    tag: str = None,
    callID: str = None,
) -> Request:
    """
    Build a SIP MESSAGE request (RFC 3428) ready to send.

    @param uri: the Request-URI, also used in the To header.
    @param text: the body, sent as C{text/plain;charset=UTF-8}.
    @param fromURI: the sender's URI (a From tag is added).
    @param transport: C{"udp"} or C{"tcp"}, for the Via.
    @param localHost: the address the request is sent from (Via sent-by).
    @param localPort: the port it is sent from.
    @param subject: an optional C{Subject} header.
    @param branch: the Via branch (default: a fresh C{z9hG4bK} one).
    @param tag: the From tag (default: fresh).
    @param callID: the Call-ID (default: fresh).
    @rtype: L{Request}
    """
    if branch is None:
        branch = "z9hG4bK" + secrets.token_hex(10)
    if tag is None:
        tag = secrets.token_hex(6)
    if callID is None:
        callID = f"{secrets.token_hex(12)}@{_viaHost(localHost)}"
    headers = Headers()
    headers.add(
        "Via",
        f"SIP/2.0/{transport.upper()} {_viaHost(localHost)}:{localPort}"
        f";branch={branch};rport",
    )
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<{fromURI}>;tag={tag}")
    headers.add("To", f"<{uri}>")
    headers.add("Call-ID", callID)
    headers.add("CSeq", "1 MESSAGE")
    headers.add("User-Agent", USER_AGENT)
    if subject is not None:
        headers.add("Subject", subject)
    headers.add("Content-Type", "text/plain;charset=UTF-8")
    return Request("MESSAGE", uri, headers, text.encode("utf-8"))


def _branchOf(message) -> str:
    values = message.headers.getAll("Via")
    if not values:
        return None
    try:
        return parseVia(values[0])[0].branch
    except (SIPParseError, IndexError):
        return None


def matchesRequest(response, request: Request) -> bool:
    """
    Whether C{response} answers C{request}: same top Via branch and
    C{CSeq} method MESSAGE (RFC 3261 17.1.3).
    """
    if not isinstance(response, Response):
        return False
    branch = _branchOf(request)
    if branch is None or _branchOf(response) != branch:
        return False
    cseq = (response.headers.get("CSeq") or "").split()
    return len(cseq) == 2 and cseq[1].upper() == "MESSAGE"


def exchangeUDP(sock, request: Request, timeout: float, clock=time.monotonic,
                onProvisional=None, t1: float = T1, t2: float = T2) -> Response:
    """
    Send C{request} on a connected UDP socket and wait for its final
    response, retransmitting as a non-INVITE client transaction does (RFC
    3261 17.1.2.2): after T1, then doubling up to T2; every T2 once a
    provisional response has come.

    @param sock: a connected datagram socket (C{send}, C{recv},
        C{settimeout}).
    @param timeout: seconds to wait in all.
    @param clock: a function returning monotonic seconds.
    @param onProvisional: called with each matching 1xx response.
    @return: the final L{Response}.
    @raise SIPClientError: no final response in time, or the destination
        refused the datagram (ICMP port unreachable).
    """
    data = serialize(request)
    start = clock()
    deadline = start + timeout
    interval = t1
    proceeding = False
    sock.send(data)
    nextSend = start + interval
    while True:
        now = clock()
        if now >= deadline:
            raise SIPClientError(
                f"no final response within {timeout:g} seconds"
            )
        if now >= nextSend:
            sock.send(data)
            interval = t2 if proceeding else min(interval * 2, t2)
            nextSend = now + interval
        sock.settimeout(max(0.001, min(nextSend, deadline) - now))
        try:
            datagram = sock.recv(MAX_RESPONSE_SIZE)
        except socket.timeout:
            continue
        except ConnectionRefusedError:
            raise SIPClientError(
                "the destination refused the datagram (ICMP port "
                "unreachable): nothing listens there on UDP"
            )
        try:
            response = parseMessage(datagram)
        except SIPParseError:
            continue
        if not matchesRequest(response, request):
            continue
        if response.code < 200:
            if onProvisional is not None:
                onProvisional(response)
            # Proceeding: the running Timer E still fires, then every T2.
            proceeding = True
            continue
        return response


def exchangeTCP(sock, request: Request, timeout: float, clock=time.monotonic,
                onProvisional=None) -> Response:
    """
    Send C{request} on a connected stream socket and wait for its final
    response.

    @param sock: a connected stream socket (C{sendall}, C{recv},
        C{settimeout}).
    @return: the final L{Response}.
    @raise SIPClientError: no final response in time, the connection
        closed, or the peer sent something that is not SIP.
    """
    deadline = clock() + timeout
    sock.settimeout(max(0.001, deadline - clock()))
    try:
        sock.sendall(serialize(request))
    except socket.timeout:
        raise SIPClientError(f"could not send within {timeout:g} seconds")
    framer = StreamFramer(MAX_RESPONSE_SIZE)
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise SIPClientError(
                f"no final response within {timeout:g} seconds"
            )
        sock.settimeout(max(0.001, remaining))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            raise SIPClientError(
                "the connection was closed before a final response came"
            )
        try:
            frames = framer.feed(data)
        except FramingError as e:
            raise SIPClientError(f"the peer's stream is not valid SIP: {e}")
        for frame in frames:
            try:
                response = parseMessage(frame)
            except SIPParseError:
                continue
            if not matchesRequest(response, request):
                continue
            if response.code < 200:
                if onProvisional is not None:
                    onProvisional(response)
                continue
            return response


def destinationFor(uri: str, transport: str = None, toHost: str = None,
                   toPort: int = None, proxy: str = None):
    """
    Where C{send-sip} sends: C{(transport, host, port)}.

    The URI's host and port (or C{proxy}'s, or C{toHost}/C{toPort}), over the
    URI's C{transport} parameter unless C{transport} is given; UDP by
    default.

    @raise URIError: the URI cannot be sent to.
    @raise ValueError: TLS was asked for (not supported by this tool).
    """
    from xmppgw.router import targetForURI

    if toHost is not None:
        target = targetForURI(uri)
        host = toHost[1:-1] if toHost.startswith("[") else toHost
        port = toPort or 5060
        proto = target.transport
    else:
        target = targetForURI(proxy or uri)
        host, port, proto = target.host, target.port, target.transport
        if toPort is not None:
            port = toPort
    if transport is not None:
        proto = transport
    if proto not in ("udp", "tcp"):
        raise ValueError(
            f"transport {proto} is not supported by send-sip; use "
            "--transport udp or tcp"
        )
    return proto, host, port


def _showMessage(message, out, prefix):
    """
    Print a whole message, each line after C{prefix}.
    """
    text = serialize(message).decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    for line in head.split("\r\n"):
        print(f"{prefix}{line}", file=out)
    if body:
        print(prefix.rstrip(), file=out)
        for line in body.splitlines():
            print(f"{prefix}{line}", file=out)


def sendSIP(uri: str, text: str, fromURI: str = DEFAULT_FROM,
            transport: str = None, toHost: str = None, toPort: int = None,
            proxy: str = None, timeout: float = DEFAULT_TIMEOUT,
            subject: str = None, verbose: bool = False, out=None,
            err=None) -> int:
    """
    Send one SIP MESSAGE and print the response (the C{send-sip}
    subcommand).

    @return: L{EXIT_OK} for a 2xx final response, L{EXIT_FAILURE} otherwise.
    @raise URIError, ValueError: for unusable arguments (a usage error).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    proto, host, port = destinationFor(uri, transport, toHost, toPort, proxy)
    where = f"{proto}:{_hostPort(host, port)}"
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    try:
        infos = socket.getaddrinfo(host, port, type=kind)
    except socket.gaierror as e:
        print(f"send-sip: cannot resolve {host!r}: {e.strerror}", file=err)
        return EXIT_FAILURE
    # IPv4 first: "localhost" often resolves to ::1 first, while servers
    # (the demo's gateway among them) commonly listen on 127.0.0.1 only.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, socktype, protocol, _, address = infos[0]
    sock = socket.socket(family, socktype, protocol)
    try:
        sock.settimeout(min(timeout, 10.0))
        try:
            sock.connect(address)
        except OSError as e:
            reason = e.strerror or str(e)
            print(f"send-sip: cannot connect to {where}: {reason}", file=err)
            return EXIT_FAILURE
        localHost, localPort = sock.getsockname()[:2]
        request = buildMessage(
            uri, text, fromURI, proto, localHost, localPort, subject
        )

        def provisional(response):
            if verbose:
                _showMessage(response, out, "< ")
            else:
                print(f"SIP/2.0 {response.code} {response.reason}", file=out)

        if verbose:
            print(f"sending to {where}", file=out)
            _showMessage(request, out, "> ")
        try:
            if proto == "udp":
                response = exchangeUDP(sock, request, timeout,
                                       onProvisional=provisional)
            else:
                response = exchangeTCP(sock, request, timeout,
                                       onProvisional=provisional)
        except SIPClientError as e:
            print(f"send-sip: {where}: {e}", file=err)
            return EXIT_FAILURE
        except OSError as e:
            reason = e.strerror or str(e)
            print(f"send-sip: {where}: {reason}", file=err)
            return EXIT_FAILURE
    finally:
        sock.close()
    if verbose:
        _showMessage(response, out, "< ")
    else:
        print(f"SIP/2.0 {response.code} {response.reason}", file=out)
    return EXIT_OK if 200 <= response.code < 300 else EXIT_FAILURE


# -- the parser ----------------------------------------------------------------


def _positiveSeconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be more than 0 and at most 3600 seconds"
        )
    return value


def _positiveInt(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 256")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 1 to 65535")
    return int(text)


def _sipURI(text: str) -> str:
    try:
        uri = parseURI(text)
    except URIError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a SIP URI: {e}")
    if uri.scheme not in ("sip", "sips") or not uri.host:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a sip: or sips: URI with a host"
        )
    return text


_EPILOG = """\
examples:
  xmppgw check-config /etc/xmppgw/xmppgw.toml
  xmppgw map --config /etc/xmppgw/xmppgw.toml sip:juliet*jabber.org@sip-xmpp.example.org
  xmppgw send-sip sip:echo*localhost@127.0.0.1:15060 "Hello from SIP"
  xmppgw demo

The gateway itself runs under twistd:  twistd -n xmppgw --config FILE
"""


def _wrap(text: str) -> str:
    return textwrap.fill(text, 78)


def makeParser() -> argparse.ArgumentParser:
    """
    The C{xmppgw} argument parser, with one subparser per subcommand.
    """
    parser = argparse.ArgumentParser(
        prog="xmppgw",
        description="Tools for the xmppgw SIP <-> XMPP instant-messaging gateway.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "check-config",
        help="validate configuration files",
        description=(
            "Load and validate each TOML configuration file as the gateway "
            "would. A valid file prints 'FILE: OK' and a short summary; an "
            "invalid one prints every problem, with the file name and the key, "
            "to standard error. Exit status 1 if any file is invalid."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="configuration file")

    p = sub.add_parser(
        "map",
        help="show how addresses map between SIP and XMPP",
        description=_wrap(
            "Show how each address maps under a configuration, in both "
            "directions: a SIP URI (sip:, sips:) as a SIP Request-URI and as a "
            "SIP From; a JID as the 'to' and as the 'from' of an XMPP stanza. "
            "Exit status 1 if some address maps in neither direction."
        ),
        epilog=(
            "example:\n  xmppgw map sip:juliet*jabber.org@sip-xmpp.example.org "
            "romeo@example.net"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", "-c", metavar="FILE",
        help="configuration file (default: the built-in defaults, as in "
        "etc/xmppgw.toml)",
    )
    p.add_argument(
        "addresses", nargs="+", metavar="ADDRESS",
        help="a SIP URI (sip:user@host) or a JID (user@domain[/resource])",
    )

    p = sub.add_parser(
        "send-sip",
        help="send one SIP MESSAGE and print the response",
        description=_wrap(
            "Send one SIP MESSAGE (RFC 3428) with a text/plain body to URI, "
            "over UDP (retransmitted as RFC 3261 says) or TCP, to the URI's "
            "host and port unless --to-host or --proxy says otherwise, and "
            "print the response's status line. Exit status 0 for a 2xx "
            "response, 1 otherwise (error response, no response, network "
            "error)."
        ),
        epilog=(
            "example:\n  xmppgw send-sip sip:juliet*jabber.org@127.0.0.1:5060 "
            "\"Hello\""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("uri", metavar="URI", type=_sipURI,
                   help="Request-URI, e.g. sip:user*xmppdomain@gateway")
    p.add_argument("text", metavar="TEXT",
                   help="the message text ('-' reads it from standard input)")
    p.add_argument("--from", dest="fromURI", metavar="URI", type=_sipURI,
                   default=DEFAULT_FROM,
                   help=f"sender's URI (default: {DEFAULT_FROM})")
    p.add_argument("--transport", "-t", choices=("udp", "tcp"),
                   help="transport (default: the URI's transport parameter, "
                   "else udp)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--to-host", metavar="HOST",
                       help="send to this host instead of the URI's")
    where.add_argument("--proxy", metavar="URI", type=_sipURI,
                       help="send through this proxy (its host, port and "
                       "transport parameter)")
    p.add_argument("--to-port", metavar="PORT", type=_port,
                   help="destination port (default: the URI's, else 5060)")
    p.add_argument("--subject", "-s", metavar="TEXT",
                   help="add a Subject header")
    p.add_argument("--timeout", metavar="SECONDS", type=_positiveSeconds,
                   default=DEFAULT_TIMEOUT,
                   help=f"wait this long for a final response (default: "
                   f"{DEFAULT_TIMEOUT:g}, RFC 3261 Timer F)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="print the request sent and the whole response")

    p = sub.add_parser(
        "demo",
        help="run the self-contained demo (what 'make run' does)",
        description=(
            "Start a private Prosody and the gateway on 127.0.0.1, with demo "
            "accounts, and print how to chat across. Ctrl-C stops everything."
        ),
        add_help=False,
    )
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="options of the demo (see 'xmppgw demo --help')")

    p = sub.add_parser(
        "compile",
        help="build, check or remove the compiled hot path (CPython)",
        description=_wrap(
            "Compile the gateway's hot-path modules with Cython into the "
            "installed package (needs pip install 'xmppgw[compiled]', a C "
            "compiler and Python's headers), so that CPython runs them "
            "with about a fifth to a third less CPU; see 'Compiled build' in "
            "docs/deployment.rst. twistd xmppgw refuses to start while a "
            "compiled module no longer matches its source. Exit status 1 if "
            "the build fails or, with --check, unless every hot module is "
            "compiled and current."
        ),
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true",
                      help="list which modules are compiled and current")
    what.add_argument("--check", action="store_true",
                      help="like --status, exit status 1 unless every hot "
                      "module is compiled and current")
    what.add_argument("--remove", action="store_true",
                      help="remove the compiled modules (back to plain Python)")
    p.add_argument("--jobs", "-j", metavar="N", type=_positiveInt,
                   help="parallel C compilations (default: the CPU count)")

    sub.add_parser(
        "version",
        help="print the version",
        description="Print the version of xmppgw and of its main libraries.",
    )
    return parser


def _versions() -> str:
    lines = [f"xmppgw {__version__}"]
    try:
        import twisted

        lines.append(f"Twisted {twisted.__version__}")
    except ImportError:
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            lines.append(f"wokkel {version('wokkel')}")
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    lines.append(f"Python {sys.version.split()[0]}")
    try:
        lines.append(compiled.describe(compiled.status()))
    except OSError:
        pass
    return "\n".join(lines)


def compileCommand(args, out, err, base=None, builder=compiled.build):
    """
    Run C{xmppgw compile}: build (the default), C{--status}, C{--check} or
    C{--remove}.

    @return: the exit status.
    """
    if args.remove:
        removed = compiled.remove(base)
        print(f"removed {len(removed)} compiled modules", file=out)
        return EXIT_OK
    if args.status or args.check:
        found = compiled.status(base)
        for module in found.compiled:
            print(f"xmppgw.{module}: compiled", file=out)
        for module, reason in found.stale:
            print(f"xmppgw.{module}: STALE ({reason})", file=out)
        for module in found.plain:
            print(f"xmppgw.{module}: plain Python", file=out)
        print(compiled.describe(found), file=out)
        if args.check and (found.stale or found.plain):
            print("xmppgw compile --check: not every hot module is compiled "
                  "and current", file=err)
            return EXIT_FAILURE
        return EXIT_OK
    try:
        found = builder(base, jobs=args.jobs)
    except compiled.CompiledError as e:
        print(f"xmppgw compile: error: {e}", file=err)
        return EXIT_FAILURE
    print(compiled.describe(found), file=out)
    return EXIT_OK


def main(argv=None, out=None, err=None) -> int:
    """
    Run the C{xmppgw} command.

    @param argv: the arguments (default: C{sys.argv[1:]}).
    @return: the exit status.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if argv is None:
        argv = sys.argv[1:]
    parser = makeParser()
    if argv and argv[0] == "demo":
        from xmppgw import demo

        return demo.main(argv[1:])
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE

    if args.command == "version":
        print(_versions(), file=out)
        return EXIT_OK

    if args.command == "compile":
        return compileCommand(args, out, err)

    if args.command == "check-config":
        return checkConfig(args.files, out, err)

    if args.command == "map":
        if args.config:
            try:
                config = loadConfig(args.config)
            except ConfigError as e:
                print(str(e), file=err)
                return EXIT_FAILURE
        else:
            config = Config.defaults()
        try:
            mapper = mapperFromConfig(config)
        except ValueError as e:
            print(f"{config.path}: {e}", file=err)
            return EXIT_FAILURE
        return mapAddresses(mapper, args.addresses, out)

    if args.command == "send-sip":
        text = args.text
        if text == "-":
            text = sys.stdin.read()
        if args.to_port is not None and args.proxy:
            print("xmppgw send-sip: error: --to-port goes with --to-host, "
                  "not with --proxy (give the port in the proxy URI)", file=err)
            return EXIT_USAGE
        try:
            return sendSIP(
                args.uri, text, fromURI=args.fromURI,
                transport=args.transport, toHost=args.to_host,
                toPort=args.to_port, proxy=args.proxy,
                timeout=args.timeout, subject=args.subject,
                verbose=args.verbose, out=out, err=err,
            )
        except (URIError, ValueError) as e:
            print(f"xmppgw send-sip: error: {e}", file=err)
            return EXIT_USAGE
    parser.print_usage(err)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
