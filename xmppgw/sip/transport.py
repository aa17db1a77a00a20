# -*- test-case-name: tests.test_sip_transport -*-
"""
SIP transports: UDP, TCP and TLS listeners and outbound connections
(RFC 3261 section 18, RFC 3581).

L{SIPTransport} is a L{MultiService} with one child service per listening
socket. It implements the transport interface described in
L{xmppgw.sip.transaction}:

  - C{send(message, destination) -> Deferred} (a L{Target} for requests, the
    request's L{Source} for responses);
  - C{localAddress(transport) -> (host, port)};

and hands every parsed message to C{receiver.receive(message, source)}
(normally a L{TransactionLayer <xmppgw.sip.transaction.TransactionLayer>};
wire it with C{sipTransport.receiver = layer}).

Inbound:
  - UDP datagrams and framed TCP/TLS stream messages are parsed with
    L{parseMessage}. Before a request goes up, its top Via gets C{received=}
    (when the sent-by host is not the source address, or when C{rport} is
    present) and a value for an empty C{rport}.
  - A request that cannot be parsed is answered here: 400 (505 for a bad
    SIP version) when enough headers parsed to build a response, otherwise
    it is dropped and logged. A request over C{maxMessageSize} gets 513. A
    stream that cannot be framed (no or bad Content-Length, message over
    C{maxMessageSize}) gets a 400/513 when possible and is closed.
  - CRLF keep-alives are ignored.

Outbound:
  - Responses go back on the connection the request came in on (TCP/TLS; if
    it has closed, a new connection is opened to C{received} and the Via
    port, RFC 3261 18.2.2), or over UDP to C{received}/C{rport} (RFC 3581)
    from the socket the request arrived on.
  - Requests over UDP leave from a listening UDP socket of the right address
    family; host names are resolved with C{reactor.resolve}. Requests over
    TCP/TLS reuse an open connection to the same (host, port), inbound or
    outbound, or open one (C{connectTimeout}), queueing messages (at most
    C{maxQueuedMessages}) until it is up. Outbound and inbound connections
    are closed after C{idleTimeout} seconds without traffic.

L{Source} and L{Target} live in L{xmppgw.sip.transaction} and are
re-exported here, as is L{TransportFailure}.
"""

import ipaddress
import socket
import sys

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from xmppgw.idle import IdleWatch
from xmppgw.memo import keepBounded
from xmppgw.sockio import listenUDP, tuneStream
from xmppgw.sip.message import (
    _SIMPLE_VIA_RE,
    _TOKEN_RE,
    FramingError,
    Request,
    SIPParseError,
    StreamFramer,
    _headersOf,
    _keepVias,
    _parsedVias,
    _parseVia,
    _viaCache,
    makeResponse,
    parseMessage,
    serialize,
    topVia,
)
from xmppgw.sip.uri import _fastReplace, _formatParams
from xmppgw.sip.transaction import (
    DEFAULT_PORTS,
    TRANSPORTS,
    Source,
    Target,
    TransportFailure,
)

__all__ = [
    "SIPTransport",
    "SIPDatagramProtocol",
    "SIPStreamProtocol",
    "Source",
    "Target",
    "TransportFailure",
    "parseListen",
]

log = Logger()

#: The largest payload of a UDP datagram.
MAX_DATAGRAM = 65507

#: How many bytes of datagrams one UDP socket reads per reactor turn before
#: the reactor goes on (Twisted's C{Port.maxThroughput}, 256 KiB by
#: default): about 30 MESSAGEs of 500 bytes. With Twisted's default a
#: backlog of about 500 MESSAGEs was handled in one turn; their stanzas
#: were written, but the answers that confirm them (and release their
#: place among the held MESSAGEs, C{[sip] hold_limit}) were read only
#: after the whole batch, so under overload the held MESSAGEs hit the
#: limit and most of the rest got 503 while the gateway spent its CPU on
#: refusals (benchmark 2 at 8,000/s offered on CPython: 10,000-17,000 of
#: 40,000 delivered; with this bound 33,000-37,000; docs/performance.rst,
#: round 7). Each extra turn costs a few microseconds.
UDP_READ_BYTES = 16384

#: The most UDP peers whose L{Source} a listening socket keeps.
_SOURCES_MAX = 1024

_WILDCARDS = ("0.0.0.0", "::", "")


def parseListen(text):
    """
    Parse a Kamailio-style listen spec C{"proto:host:port"} (IPv6 hosts in
    brackets: C{"udp:[::1]:5060"}) into C{(proto, host, port)}.

    @raise ValueError: with a reason, when it is malformed.
    """
    proto, sep, rest = text.partition(":")
    proto = proto.lower()
    if not sep or proto not in TRANSPORTS:
        raise ValueError("listen %r: expected proto:host:port with proto udp, tcp or tls" % (text,))
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
    else:
        host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("listen %r: expected proto:host:port with a port 0-65535" % (text,))
    return (proto, host, int(port))


def loadCertificates(path):
    """
    Read every PEM certificate in a file.

    @return: a list of L{twisted.internet.ssl.Certificate}.
    @raise ValueError: when the file holds no certificate.
    """
    from twisted.internet import ssl

    with open(path, "rb") as f:
        data = f.read()
    marker = b"-----END CERTIFICATE-----"
    blocks = [b + marker for b in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in b]
    if not blocks:
        raise ValueError("%s holds no PEM certificate" % (path,))
    return [ssl.Certificate.loadPEM(b[b.index(b"-----BEGIN"):]) for b in blocks]


def _printable(text):
    """
    C{text} safe for a log line: the undecodable bytes of a partly parsed
    message (lone surrogates from C{surrogateescape}) become C{\\udcXX}
    escapes, since a log file observer cannot encode them.
    """
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _bare(host):
    """
    A host without IPv6 brackets, lower-cased.
    """
    return (host or "").strip("[]").lower()


def _sameAddress(a, b):
    a, b = _bare(a), _bare(b)
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


#: C{{host: whether it is an IP address}} for the hosts messages were sent
#: to (bounded: emptied when full).
_ipHosts = {}
_IP_HOSTS_MAX = 1024


def _isIP(host):
    """
    Whether C{host} (bare, L{_bare}) is an IPv4 or IPv6 address; the answer
    is remembered.
    """
    known = _ipHosts.get(host)
    if known is None:
        known = isIPAddress(host) or isIPv6Address(host)
        keepBounded(_ipHosts, host, known, _IP_HOSTS_MAX)
    return known


def _formatHost(host):
    if ":" in host and not host.startswith("["):
        return "[%s]" % (host,)
    return host


def _topViaLine(message):
    """
    Where the first Via line of C{message} is: C{(index, vias)}, its
    position in C{message.headers._items} and its parsed values.

    @raise SIPParseError: when there is no Via or it does not parse.
    """
    for i, (name, value) in enumerate(message.headers._items):
        if name == "Via":
            return i, _parsedVias(value)
    raise SIPParseError("Missing Via Header")


def _setTopVia(message, index, vias, newTop, known):
    """
    Replace, in place, the first Via value of C{message} by the L{Via}
    C{newTop}; the other values of that line are written again as L{Via}
    formats them, the other headers are untouched.

    @param index: the position of the first Via line (L{_topViaLine}).
    @param vias: the parsed values of that line (L{_topViaLine}).
    @param known: whether the new line is known to parse back to C{newTop}
        and the other values (every part of C{newTop} comes from parsing,
        or is a token); then it is remembered as parsed, else the next
        reader (L{topVia}) parses the text.
    @return: the new Via line.
    """
    rest = vias[1:]
    text = str(newTop)
    if rest:
        text = ", ".join([text] + [str(v) for v in rest])
    message.headers._items[index] = ("Via", text)
    if known:
        _keepVias(text, (newTop,) + rest)
    return text


#: C{{top Via line: (host, port, isIP)}}: where the responses to a request
#: that came over UDP go (L{_udpReplyAddress} of its top Via), worked out
#: when the request arrives (L{_addReceived}) and read when a response
#: (which carries the same line) is sent. Bounded: emptied when full; a
#: line not found is worked out again.
_udpReplies = {}
_UDP_REPLIES_MAX = 1024


def _keepReply(text, reply):
    keepBounded(_udpReplies, text, reply, _UDP_REPLIES_MAX)


def _udpReplyAddress(via):
    """
    Where a response with the top Via C{via} goes over UDP (RFC 3261 18.2.2,
    RFC 3581 section 4): C{maddr} and the sent-by port, else C{received} (or
    the sent-by host) and C{rport} (or the sent-by port).

    @return: C{(host, port, isIP)}, C{host} bare (L{_bare}).
    """
    maddr = rport = received = None
    # Backwards: the first of repeated parameters wins, as in Via.param.
    for name, value in reversed(via.params):
        if name == "maddr":
            maddr = value
        elif name == "rport":
            rport = value
        elif name == "received":
            received = value
    if maddr:
        host, port = maddr, via.port or DEFAULT_PORTS["udp"]
    else:
        host = received or via.host
        if rport and rport.isdigit():
            port = int(rport)
        else:
            port = via.port or DEFAULT_PORTS["udp"]
    host = _bare(host)
    return host, port, _isIP(host)


def _splitBranch(text, branchAt):
    """
    Split the Via line C{text} at its C{;branch=} (at C{branchAt}): the
    branch value (up to the next C{;}) and the line without it (the key of
    its template, L{_viaTemplates}).

    @return: C{(branch, stem)}.
    """
    start = branchAt + 8
    after = text.find(";", start)
    if after == -1:
        return text[start:], text[:start]
    return text[start:after], text[:start] + text[after:]


def _addReceived(request, source):
    """
    RFC 3261 18.2.1 and RFC 3581 section 4: add C{received} when the sent-by
    host is not the source address (or when C{rport} is present), and fill an
    empty C{rport}.

    C{request} is changed in place (it is the transport's own, just
    parsed) and returned. For a request from UDP, where its responses go is
    remembered (L{_udpReplies}).

    @raise SIPParseError: when there is no Via or it does not parse.
    """
    items = request.headers._items
    index = 0
    for name, text in items:
        if name == "Via":
            break
        index += 1
    else:
        raise SIPParseError("Missing Via Header")
    branchAt = text.find(";branch=")
    if branchAt != -1:
        # A line like one seen before from this source but for its branch
        # (the usual case: a peer's Via lines differ only there).
        branch, stem = _splitBranch(text, branchAt)
        template = _viaTemplates.get((stem, source.host, source.port, source.transport))
        if template is not None and _TOKEN_RE.fullmatch(branch) is not None:
            via, k, head, tail, reply = template
            params = list(via.params)
            params[k] = ("branch", branch)
            via = _fastReplace(via, params=tuple(params))
            text = head + branch + tail
            items[index] = ("Via", text)
            _keepVias(text, (via,))
            if reply is not None:
                _keepReply(text, reply)
            return request
    return _addReceivedSlow(request, source, index, text, branchAt)


def _addReceivedSlow(request, source, index, text, branchAt):
    """
    L{_addReceived} by the general rule, for the first Via line C{text}
    (at C{index} in the headers; C{branchAt} is where C{;branch=} is in it,
    or -1); remembers a template for the next lines of its shape
    (L{_keepViaTemplate}).
    """
    original = text
    vias = _viaCache.get(text)
    if vias is None:
        # Not kept yet: the line is usually written again just below.
        vias = tuple(_parseVia(text))
        fresh = True
    else:
        fresh = False
    via = vias[0]
    params = via.params
    host = source.host
    receivedAt = rportAt = None
    maddr = False
    i = 0
    for name, value in params:
        if name == "rport":
            if rportAt is None:
                rportAt = i
        elif name == "received":
            if receivedAt is None:
                receivedAt = i
        elif name == "maddr":
            maddr = True
        i += 1
    newParams = None
    if rportAt is not None or not _sameAddress(via.host, host):
        if receivedAt is None:
            newParams = list(params)
            newParams.append(("received", host))
        elif params[receivedAt][1] != host:
            newParams = list(params)
            newParams[receivedAt] = ("received", host)
    filled = False
    if rportAt is not None and params[rportAt][1] is None:
        if newParams is None:
            newParams = list(params)
        newParams[rportAt] = ("rport", str(source.port))
        filled = True
    known = True
    if newParams is not None:
        via = _fastReplace(via, params=tuple(newParams))
        known = _TOKEN_RE.fullmatch(host) is not None
        text = _setTopVia(request, index, vias, via, known)
    elif fresh:
        _keepVias(text, vias)
    reply = None
    if known and source.transport == "udp":
        if filled and not maddr:
            # The usual case: the responses go back to the source address
            # (received and the rport just filled).
            host = _bare(host)
            reply = (host, source.port, _isIP(host))
        else:
            reply = _udpReplyAddress(via)
        _keepReply(text, reply)
    if known and branchAt != -1:
        _keepViaTemplate(original, branchAt, source, via, text, reply)
    return request


#: C{{(Via line without its branch value, source host, port, transport):
#: (new top Via with a placeholder branch, index of the branch parameter,
#: text of the new line before and after the branch value, reply address
#: or None)}}: how L{_addReceived} changes the lines of one shape from one
#: source, whatever their branch (bounded: emptied when full).
_viaTemplates = {}
_VIA_TEMPLATES_MAX = 256
#: The longest Via line a template is made of (the templates hold a
#: bounded number of bytes).
_VIA_TEMPLATE_LINE_MAX = 512


def _keepViaTemplate(original, branchAt, source, via, text, reply):
    """
    Remember how the Via line C{original} from C{source} was changed (to
    C{text}, parsed as C{via}, responses to C{reply}) as a template for the
    lines that differ from it only in their branch value: when the line is
    in the usual shape (L{_SIMPLE_VIA_RE <xmppgw.sip.message._SIMPLE_VIA_RE>}:
    one value, token parameters), in which the branch value is a token
    between C{;branch=} and the next C{;}, which the parser and
    L{_addReceived} copy as it is and nothing else depends on.

    @param branchAt: where C{;branch=} is in C{original}.
    """
    if len(original) > _VIA_TEMPLATE_LINE_MAX or _SIMPLE_VIA_RE.fullmatch(original) is None:
        return
    branch, stem = _splitBranch(original, branchAt)
    # The parameters before it: one ';' each (tokens hold none).
    k = original.count(";", 0, branchAt)
    params = via.params
    if k >= len(params) or params[k] != ("branch", branch):
        return
    if text == original:
        # Not written again: the line stays as it came.
        head = stem[:branchAt + 8]
        tail = stem[branchAt + 8:]
    else:
        port = via.port
        head = "%s/%s %s%s;branch=" % (
            via.protocol, via.transport, via.host if port is None else "%s:%d" % (via.host, port),
            _formatParams(params[:k]))
        tail = _formatParams(params[k + 1:])
    if head + branch + tail != text:
        return
    if len(_viaTemplates) >= _VIA_TEMPLATES_MAX:
        _viaTemplates.clear()
    _viaTemplates[(stem, source.host, source.port, source.transport)] = (via, k, head, tail, reply)


def _fillSentBy(request, localAddress, *args):
    """
    Replace a wildcard host or a 0 port in the top Via sent-by with the real
    local address the request leaves from.

    @param localAddress: called with C{args}, only when the sent-by needs
        it: the local C{(host, port)} the request leaves from.
    @return: C{request} when nothing is to fill, else a copy (the caller's
        request may be sent again, from another socket).
    """
    index, vias = _topViaLine(request)
    via = vias[0]
    wildcard = _bare(via.host) in _WILDCARDS
    if not wildcard and via.port:
        return request
    host, port = localAddress(*args)
    newHost = host if wildcard else via.host
    newPort = port if not via.port else via.port
    if newHost == via.host and newPort == via.port:
        return request
    changes = {}
    if newHost is not None:
        changes["host"] = _formatHost(newHost)
    if newPort is not None:
        changes["port"] = newPort
    headers = _headersOf(list(request.headers._items))
    if request.isRequest:
        copy = Request(request.method, request.uri, headers, request.body)
    else:
        copy = type(request)(request.code, request.reason, headers, request.body)
    copy.source = getattr(request, "source", None)
    _setTopVia(copy, index, vias, _fastReplace(via, **changes), False)
    return copy


class SIPDatagramProtocol(DatagramProtocol):
    """
    One listening UDP socket; everything is done by the L{SIPTransport}.

    @ivar host: the configured listening host.
    """

    def __init__(self, sipTransport, host):
        self.sipTransport = sipTransport
        self.host = host
        self._sources = {}

    def datagramReceived(self, data, addr):
        self.sipTransport._datagramReceived(self, data, addr)

    def sourceOf(self, addr):
        """
        The L{Source} for a datagram from C{addr}. A L{Source} is immutable,
        so one serves every datagram from the same peer (a bounded cache):
        fewer objects for the transactions to hold.
        """
        key = (addr[0], addr[1])
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= _SOURCES_MAX:
                self._sources.clear()
            source = self._sources[key] = Source("udp", _bare(addr[0]), addr[1], self)
        return source

    def family(self):
        """
        C{6} if the socket is IPv6, else C{4}.
        """
        return 6 if ":" in self.host else 4


class SIPStreamProtocol(Protocol):
    """
    One TCP or TLS connection, inbound or outbound.

    @ivar proto: C{"tcp"} or C{"tls"}.
    @ivar outbound: L{True} if the gateway opened it.
    @ivar keys: the C{(proto, host, port)} keys it is registered under in
        the transport's connection table.
    """

    def __init__(self, sipTransport, proto, outbound=False):
        self.sipTransport = sipTransport
        self.proto = proto
        self.outbound = outbound
        self.keys = []
        self.peerHost = None
        self.peerPort = None
        self._queue = []
        self._idleTimer = sipTransport._idleWatch.timer(self._idle)
        self._closed = False
        self._closeWaiters = []
        self._framer = StreamFramer(sipTransport.maxMessageSize)
        # A mirror of the bytes the framer has not returned as messages yet
        # (at most maxMessageSize plus one read), used to answer a message
        # the framer rejects.
        self._pending = bytearray()

    def __repr__(self):
        return "<SIPStreamProtocol %s %s:%s %s>" % (
            self.proto,
            self.peerHost,
            self.peerPort,
            "out" if self.outbound else "in",
        )

    @property
    def isUsable(self):
        """
        L{True} while messages can be sent (or queued) on this connection.
        """
        return not self._closed and not (self.connected and self.transport.disconnecting)

    def connectionMade(self):
        # A response or request goes out when written, not after the
        # peer's delayed ACK of the previous one (xmppgw.nodelay); reads
        # of a few KB (xmppgw.sockio).
        tuneStream(self.transport)
        peer = self.transport.getPeer()
        self.peerHost = _bare(getattr(peer, "host", "")) or self.peerHost
        self.peerPort = getattr(peer, "port", None) or self.peerPort
        self.sipTransport._connectionMade(self)
        self._resetIdle()
        queue, self._queue = self._queue, []
        for message, d in queue:
            self._write(message, d)

    def sendMessage(self, message):
        """
        Send (or queue until connected) one message.

        @return: a Deferred firing when it is written, or failing with
            L{TransportFailure}.
        """
        if self._closed:
            return fail(TransportFailure("connection to %s:%s is closed" % (self.peerHost, self.peerPort)))
        if not self.connected:
            if len(self._queue) >= self.sipTransport.maxQueuedMessages:
                return fail(
                    TransportFailure(
                        "too many messages waiting for the connection to %s:%s" % (self.peerHost, self.peerPort)
                    )
                )
            d = Deferred()
            self._queue.append((message, d))
            return d
        d = Deferred()
        self._write(message, d)
        return d

    def _write(self, message, d):
        try:
            if message.isRequest:
                message = _fillSentBy(message, self._localAddress)
            data = serialize(message)
            self.sipTransport._logTraffic("sent", self.proto, self.peerHost, self.peerPort, data)
            self.transport.write(data)
        except Exception as e:
            d.errback(TransportFailure("could not send to %s:%s: %s" % (self.peerHost, self.peerPort, e)))
            return
        self._resetIdle()
        d.callback(None)

    def _localAddress(self):
        local = self.transport.getHost()
        return _bare(local.host), local.port

    def dataReceived(self, data):
        self._resetIdle()
        self._pending += data
        pings = self._framer.pings
        error = None
        try:
            messages = self._framer.feed(data)
        except FramingError:
            messages, error = self._reframe()
        if self._framer.pings > pings and self.connected:
            # RFC 5626 3.5.1: answer a CRLFCRLF ping with a CRLF pong.
            self.transport.write(b"\r\n" * (self._framer.pings - pings))
        for raw in messages:
            self._consume(raw)
            if self._closed:
                return
            self.sipTransport._messageReceived(
                raw, Source(self.proto, self.peerHost, self.peerPort, self), self
            )
        if error is not None:
            self._framingFailed(error)
        else:
            # Keep-alive CRLFs never start a message: drop them, so that the
            # mirror stays as bounded as the framer's buffer.
            self._consume(b"")

    def _consume(self, raw):
        """
        Drop C{raw} (and the keep-alive CRLFs before it) from the mirror of
        the bytes the framer has not returned yet.
        """
        pending = self._pending
        i = 0
        while i < len(pending) and pending[i] in (13, 10):
            i += 1
        if pending[i:i + len(raw)] == raw:
            del pending[:i + len(raw)]
        else:  # cannot happen with a correct framer; stay safe
            del pending[:]

    def _reframe(self):
        """
        The framer failed, and it drops the messages it completed in the
        same C{feed} call. Frame the unreturned bytes again, one byte at a
        time, to recover those messages and find where the bad one starts.

        @return: C{(messages, error)}.
        """
        framer = StreamFramer(self.sipTransport.maxMessageSize)
        messages = []
        pending = bytes(self._pending)
        for i in range(len(pending)):
            try:
                messages.extend(framer.feed(pending[i:i + 1]))
            except FramingError as e:
                return messages, e
        return messages, FramingError("stream framing failed")

    def _framingFailed(self, error):
        source = Source(self.proto, self.peerHost, self.peerPort, self)
        log.info("Closing SIP {proto} connection from {host}:{port}: {error}",
                 proto=self.proto, host=self.peerHost, port=self.peerPort, error=error)
        # Answer the message that could not be framed, when its header
        # section can be read.
        head = bytes(self._pending).lstrip(b"\r\n")
        end = head.find(b"\r\n\r\n")
        self._pending = bytearray()
        if end >= 0:
            tooLarge = "larger" in str(error).lower()
            self.sipTransport._answerUnparseable(
                head[: end + 4], source, 513 if tooLarge else 400, str(error)
            )
        self.close()

    def close(self):
        """
        Close the connection (after writing what is buffered).
        """
        if self.connected and not self.transport.disconnecting:
            self.transport.loseConnection()

    def whenClosed(self):
        """
        A Deferred firing with L{None} once the connection is closed.
        """
        if self._closed:
            return succeed(None)
        d = Deferred()
        self._closeWaiters.append(d)
        return d

    def _resetIdle(self):
        self._idleTimer.touch()

    def _idle(self):
        log.info("Closing idle SIP {proto} connection with {host}:{port}",
                 proto=self.proto, host=self.peerHost, port=self.peerPort)
        self.close()

    def _connectFailed(self, reason):
        self.connectionLost(reason)

    def connectionLost(self, reason):
        if self._closed:
            return
        self._closed = True
        self.connected = 0
        self._idleTimer.stop()
        self.sipTransport._connectionLost(self)
        queue, self._queue = self._queue, []
        for _message, d in queue:
            d.errback(
                TransportFailure(
                    "connection to %s:%s failed: %s"
                    % (self.peerHost, self.peerPort, reason.getErrorMessage())
                )
            )
        waiters, self._closeWaiters = self._closeWaiters, []
        for d in waiters:
            d.callback(None)


class _InboundFactory(Factory):
    """
    Builds L{SIPStreamProtocol}s for one listening socket, at most
    C{maxConnections} at a time.
    """

    def __init__(self, sipTransport, proto):
        self.sipTransport = sipTransport
        self.proto = proto

    def buildProtocol(self, addr):
        if not self.sipTransport.sourceAllowed(getattr(addr, "host", None)):
            # Refused at accept time: nothing is read from the connection.
            self.sipTransport.refusedSources += 1
            log.info("Refusing SIP {proto} connection from {addr}: not in allow_from",
                     proto=self.proto, addr=addr)
            return None
        if self.sipTransport._inboundCount >= self.sipTransport.maxConnections:
            log.warn("Refusing SIP {proto} connection from {addr}: {n} connections open",
                     proto=self.proto, addr=addr, n=self.sipTransport._inboundCount)
            return None
        p = SIPStreamProtocol(self.sipTransport, self.proto)
        p.factory = self
        return p


class _OutboundFactory(ClientFactory):
    """
    The factory of one outbound connection attempt: it hands out the
    protocol that already holds the queued messages.
    """

    def __init__(self, protocol):
        self.protocol = protocol
        self.connector = None
        protocol.connectingFactory = self

    def startedConnecting(self, connector):
        self.connector = connector

    def buildProtocol(self, addr):
        self.protocol.factory = self
        return self.protocol

    def clientConnectionFailed(self, connector, reason):
        self.protocol._connectFailed(reason)


class _UDPListener(Service):
    """
    Binds one UDP socket.
    """

    def __init__(self, sipTransport, host, port):
        self.sipTransport = sipTransport
        self.host = host
        self.port = port
        self.listeningPort = None
        #: The receive buffer the kernel granted, or L{None} if not set.
        self.receiveBufferSize = None
        self.protocol = SIPDatagramProtocol(sipTransport, host)

    def privilegedStartService(self):
        Service.privilegedStartService(self)
        self._listen()

    def startService(self):
        Service.startService(self)
        if self.listeningPort is None:
            self._listen()

    def _listen(self):
        # Datagrams read into one buffer per port (xmppgw.sockio).
        self.listeningPort = listenUDP(
            self.sipTransport.reactor, self.port, self.protocol,
            interface=self.host, maxPacketSize=65536)
        self.listeningPort.maxThroughput = UDP_READ_BYTES
        self.sipTransport._udp.append(self.protocol)
        self._setReceiveBuffer()

    def _setReceiveBuffer(self):
        """
        Ask for a larger socket receive buffer
        (L{SIPTransport.udpReceiveBufferSize}): datagrams arriving while the
        process is busy (a burst, a garbage collection) wait there instead
        of being dropped by the kernel. The kernel caps the size at
        C{net.core.rmem_max}; a capped size is logged once.
        """
        wanted = self.sipTransport.udpReceiveBufferSize
        sock = getattr(self.listeningPort, "socket", None)
        if not wanted or sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except OSError as e:
            log.warn("Cannot set the receive buffer of SIP UDP socket "
                     "{host}:{port}: {why}", host=self.host, port=self.port, why=e)
            return
        if sys.platform.startswith("linux"):
            # Linux reports twice the size it granted (bookkeeping overhead).
            granted //= 2
        self.receiveBufferSize = granted
        if granted < wanted:
            log.info(
                "SIP UDP socket {host}:{port}: receive buffer {granted} bytes, "
                "not the {wanted} asked for (udp_receive_buffer_size): the "
                "kernel caps it at net.core.rmem_max; raise that (sysctl -w "
                "net.core.rmem_max={wanted}) to absorb longer bursts",
                host=self.host, port=self.port, granted=granted, wanted=wanted)

    def stopService(self):
        Service.stopService(self)
        if self.protocol in self.sipTransport._udp:
            self.sipTransport._udp.remove(self.protocol)
        port, self.listeningPort = self.listeningPort, None
        if port is not None:
            return port.stopListening()

    #: The listening port L{_bound} was read from.
    _boundOf = None
    _bound = None

    def boundPort(self):
        """
        The port the socket is bound to (the configured port while it is
        not listening). Asked of the listening port once: it does not
        change while the socket listens, and every request sent asks for
        it (L{SIPTransport.localAddress}).
        """
        port = self.listeningPort
        if port is None:
            return self.port
        if port is not self._boundOf:
            self._bound = port.getHost().port
            self._boundOf = port
        return self._bound


class _StreamListener(_UDPListener):
    """
    Binds one TCP or TLS socket.
    """

    def __init__(self, sipTransport, proto, host, port):
        self.sipTransport = sipTransport
        self.proto = proto
        self.host = host
        self.port = port
        self.listeningPort = None
        self.factory = _InboundFactory(sipTransport, proto)

    def _listen(self):
        reactor = self.sipTransport.reactor
        if self.proto == "tls":
            self.listeningPort = reactor.listenSSL(
                self.port, self.factory, self.sipTransport._serverTLSOptions(), interface=self.host
            )
        else:
            self.listeningPort = reactor.listenTCP(self.port, self.factory, interface=self.host)

    def stopService(self):
        Service.stopService(self)
        port, self.listeningPort = self.listeningPort, None
        if port is not None:
            return port.stopListening()


class SIPTransport(MultiService):
    """
    The SIP listeners and outbound connections of the gateway.

    @ivar receiver: the object whose C{receive(message, source)} gets every
        parsed message (a L{TransactionLayer}); while L{None}, requests are
        answered 503 and responses dropped.
    @ivar reactor: the reactor (also the clock of the idle timers).
    @ivar maxMessageSize: largest message accepted, bytes.
    @ivar idleTimeout: seconds without traffic before a TCP/TLS connection is
        closed (0: never).
    @ivar maxConnections: bound on the inbound and (separately) on the
        outbound TCP/TLS connections.
    @ivar connectTimeout: seconds allowed to open an outbound connection.
    @ivar maxQueuedMessages: messages queued per connection while it opens.
    @ivar closeTimeout: seconds L{stopService} waits for a connection to
        close before aborting it.
    @ivar udpReceiveBufferSize: the receive buffer (bytes, C{SO_RCVBUF})
        asked for on each UDP socket; 0 or L{None} keeps the system default.
    """

    def __init__(
        self,
        listen,
        receiver=None,
        tlsContextFactory=None,
        tlsCertificate=None,
        tlsPrivateKey=None,
        tlsClientOptions=None,
        maxMessageSize=65535,
        reactor=None,
        logTraffic=False,
        idleTimeout=300,
        maxConnections=1000,
        connectTimeout=10,
        maxQueuedMessages=100,
        viaHost=None,
        closeTimeout=5,
        allowFrom=None,
        tlsCA=None,
        udpReceiveBufferSize=None,
    ):
        """
        @param listen: C{(proto, host, port)} triples (proto C{udp}, C{tcp}
            or C{tls}; port 0 picks a free port) or C{"proto:host:port"}
            strings.
        @param tlsContextFactory: the server TLS options for C{tls}
            listeners; or give C{tlsCertificate} and C{tlsPrivateKey} (PEM
            file paths, read when the service starts).
        @param tlsClientOptions: C{callable(hostname)} returning the client
            TLS options for an outbound TLS connection (default:
            L{optionsForClientTLS}, verifying against the system trust
            store).
        @param viaHost: the host to advertise in Via; default the listening
            address, or the local address of the socket when listening on a
            wildcard address.
        """
        MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.receiver = receiver
        self.maxMessageSize = maxMessageSize
        self.logTraffic = logTraffic
        # The idle timers of every TCP/TLS connection, one timer in the
        # reactor (xmppgw.idle).
        self._idleWatch = IdleWatch(reactor, idleTimeout)
        self.maxConnections = maxConnections
        self.connectTimeout = connectTimeout
        self.maxQueuedMessages = maxQueuedMessages
        self.viaHost = viaHost
        self.closeTimeout = closeTimeout
        self.allowFrom = allowFrom
        self.tlsCA = tlsCA
        self.udpReceiveBufferSize = udpReceiveBufferSize
        self.refusedSources = 0
        self.tlsContextFactory = tlsContextFactory
        self.tlsCertificate = tlsCertificate
        self.tlsPrivateKey = tlsPrivateKey
        self.tlsClientOptions = tlsClientOptions
        self._udp = []
        self._listeners = []
        self._connections = {}
        self._inboundCount = 0
        self._outboundCount = 0
        self._streams = set()
        if not listen:
            raise ValueError("SIP transport: at least one listen address is needed")
        for spec in listen:
            if isinstance(spec, str):
                spec = parseListen(spec)
            proto, host, port = spec
            proto = proto.lower()
            if proto not in TRANSPORTS:
                raise ValueError("SIP listen: unknown transport %r" % (proto,))
            if not isinstance(port, int) or not 0 <= port < 65536:
                raise ValueError("SIP listen: invalid port %r" % (port,))
            host = _bare(host)
            if proto == "tls" and tlsContextFactory is None and not (tlsCertificate and tlsPrivateKey):
                raise ValueError("SIP listen tls:%s:%d needs a TLS certificate and private key" % (host, port))
            if proto == "udp":
                listener = _UDPListener(self, host, port)
            else:
                listener = _StreamListener(self, proto, host, port)
            listener.proto = proto
            listener.setServiceParent(self)
            self._listeners.append(listener)

    # -- addresses

    def localAddresses(self):
        """
        The bound sockets, as C{(proto, host, port)} triples (the port as
        bound, so port 0 in the configuration shows the real port once the
        service runs).
        """
        return [(l.proto, l.host, l.boundPort()) for l in self._listeners]

    def localAddress(self, transport):
        """
        The Via sent-by for requests sent over C{transport}: the first
        listener of that transport (C{viaHost} if set). A wildcard host or
        port 0 is replaced by the real local address when the request is
        written.
        """
        for l in self._listeners:
            if l.proto == transport:
                return (self.viaHost or l.host or "0.0.0.0", l.boundPort())
        return (self.viaHost or "0.0.0.0", 0)

    # -- service

    def _serverTLSOptions(self):
        if self.tlsContextFactory is None:
            from twisted.internet import ssl

            with open(self.tlsCertificate, "rb") as f:
                cert = f.read()
            with open(self.tlsPrivateKey, "rb") as f:
                key = f.read()
            authorities = []
            if self.tlsCA:
                # Client certificates signed by these CAs are required.
                authorities = loadCertificates(self.tlsCA)
            self.tlsContextFactory = ssl.PrivateCertificate.loadPEM(cert + b"\n" + key).options(*authorities)
        return self.tlsContextFactory

    def sourceAllowed(self, host):
        """
        Whether requests from C{host} are accepted (C{allowFrom}: an object
        with C{allows(host)}, such as a L{xmppgw.policy.Policy}; L{None}
        accepts any source).
        """
        if self.allowFrom is None:
            return True
        return bool(host) and self.allowFrom.allows(host)

    def _clientTLSOptions(self, host):
        if self.tlsClientOptions is not None:
            return self.tlsClientOptions(host)
        from twisted.internet.ssl import optionsForClientTLS

        return optionsForClientTLS(host)

    @property
    def idleTimeout(self):
        """
        Seconds without traffic before a TCP/TLS connection is closed (0:
        never).
        """
        return self._idleWatch.timeout

    @idleTimeout.setter
    def idleTimeout(self, value):
        self._idleWatch.timeout = value

    def stopService(self):
        """
        Stop listening and close every connection; the Deferred fires when
        the sockets are closed (connections that do not close within
        C{closeTimeout} seconds are aborted).
        """
        waits = []
        for p in list(self._streams):
            if p.connected:
                waits.append(self._closeConnection(p))
            else:
                factory = getattr(p, "connectingFactory", None)
                if factory is not None and factory.connector is not None:
                    factory.connector.disconnect()
                p.connectionLost(Failure(ConnectionDone("the SIP transport is stopping")))
        waits.append(MultiService.stopService(self))
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    def _closeConnection(self, protocol):
        d = protocol.whenClosed()
        protocol.close()
        if not d.called:
            timer = self.reactor.callLater(self.closeTimeout, protocol.transport.abortConnection)

            def closed(result):
                if timer.active():
                    timer.cancel()
                return result

            d.addBoth(closed)
        return d

    # -- receiving

    def _logTraffic(self, direction, proto, host, port, data):
        if self.logTraffic:
            log.info(
                "SIP {direction} {proto} {host}:{port} ({n} bytes)\n{text}",
                direction=direction,
                proto=proto,
                host=host,
                port=port,
                n=len(data),
                text=data.decode("utf-8", "replace"),
            )

    def _datagramReceived(self, protocol, data, addr):
        # (A datagram that starts with a letter is no keep-alive: no copy.)
        if data[:1] in b"\r\n\t " and not data.strip(b"\r\n\t "):
            return  # keep-alive
        source = protocol.sourceOf(addr)
        host, port = source.host, source.port
        if not self.sourceAllowed(host):
            self._refuseSource(data, source)
            return
        if len(data) > self.maxMessageSize:
            end = data.find(b"\r\n\r\n")
            log.info("Oversized SIP datagram ({n} bytes) from {host}:{port}", n=len(data), host=host, port=port)
            if end >= 0:
                self._answerUnparseable(data[: end + 4], source, 513, "Message Too Large")
            return
        self._messageReceived(data, source, protocol, True)

    def _messageReceived(self, data, source, protocol, sourceChecked=False):
        """
        Parse and hand on one message from C{source}.

        @param sourceChecked: whether C{source} was already checked against
            C{allowFrom} (a datagram's, just before).
        """
        if self.logTraffic:
            self._logTraffic("received", source.transport, source.host, source.port, data)
        try:
            message = parseMessage(data)
        except SIPParseError as e:
            self._parseFailed(e, source)
            return
        if message.isRequest and not sourceChecked and not self.sourceAllowed(source.host):
            # A request on a connection the gateway opened to a peer outside
            # allow_from (inbound ones were refused at accept time).
            self.refusedSources += 1
            if message.method != "ACK":
                self._answerRequest(message, source, 403, None)
            return
        if message.isRequest:
            try:
                message = _addReceived(message, source)
            except Exception as e:
                self._answerRequest(message, source, 400, "Bad Via: %s" % (e,))
                return
        message.source = source
        if self.receiver is None:
            if message.isRequest and message.method != "ACK":
                self._answerRequest(message, source, 503, None)
            return
        try:
            self.receiver.receive(message, source)
        except Exception:
            log.failure("SIP receiver failed on a message from {source}", source=source)

    def _refuseSource(self, data, source):
        """
        Answer 403 to a request from a source outside C{allowFrom} when its
        header section parses; drop anything else. Nothing reaches the
        transaction layer.
        """
        self.refusedSources += 1
        end = data.find(b"\r\n\r\n")
        if end < 0 or len(data) > self.maxMessageSize:
            return
        log.info("Refusing a SIP request from {host}:{port}: not in allow_from",
                 host=source.host, port=source.port)
        self._answerUnparseable(data[: end + 4], source, 403, "source not allowed")

    def _parseFailed(self, error, source):
        request = getattr(error, "request", None)
        reason = getattr(error, "reason", None) or str(error)
        if request is None or request.method == "ACK":
            log.info("Dropping unparseable SIP message from {source}: {reason}", source=source,
                     reason=_printable(reason))
            return
        code = getattr(error, "code", None) or (505 if "version" in reason.lower() else 400)
        log.info("Answering {code} to an unparseable {method} from {source}: {reason}",
                 code=code, method=_printable(request.method), source=source, reason=_printable(reason))
        self._answerRequest(request, source, code, reason)

    def _answerUnparseable(self, head, source, code, reason):
        """
        Answer a message whose header section is C{head} (when it is a
        request with enough headers), otherwise drop it.
        """
        try:
            request = parseMessage(head)
        except SIPParseError as e:
            request = getattr(e, "request", None)
        if request is None or not request.isRequest or request.method == "ACK":
            log.info("Dropping an unanswerable SIP message from {source}: {reason}", source=source,
                     reason=_printable(reason))
            return
        self._answerRequest(request, source, code, reason)

    def _answerRequest(self, request, source, code, reason):
        try:
            if not source.reliable:
                request = _addReceived(request, source)
            response = makeResponse(request, code, reason=self._reasonPhrase(code, reason))
        except Exception as e:
            log.info("Cannot answer a request from {source}: {e}", source=source, e=_printable(str(e)))
            return
        d = self.send(response, source)
        if d is not None:
            d.addErrback(lambda f: log.info("Could not send {code} to {source}: {r}",
                                            code=code, source=source, r=f.getErrorMessage()))

    @staticmethod
    def _reasonPhrase(code, detail):
        if code == 400 and detail:
            # Keep the reason on one line, short and printable.
            text = " ".join(str(detail).split())[:100]
            return "Bad Request (%s)" % (text,)
        return None

    # -- connections

    def _connectionMade(self, protocol):
        key = (protocol.proto, protocol.peerHost, protocol.peerPort)
        self._streams.add(protocol)
        if not protocol.outbound:
            self._inboundCount += 1
        if key not in protocol.keys:
            protocol.keys.append(key)
        current = self._connections.get(key)
        if current is None or not current.isUsable:
            self._connections[key] = protocol

    def _connectionLost(self, protocol):
        if protocol in self._streams:
            self._streams.discard(protocol)
            if protocol.outbound:
                self._outboundCount -= 1
            else:
                self._inboundCount -= 1
        for key in protocol.keys:
            if self._connections.get(key) is protocol:
                del self._connections[key]
        protocol.keys = []

    def _connectionFor(self, proto, host, port):
        key = (proto, _bare(host), port)
        p = self._connections.get(key)
        if p is not None and p.isUsable:
            return p
        if self._outboundCount >= self.maxConnections:
            raise TransportFailure("too many outbound SIP connections (%d)" % (self._outboundCount,))
        p = SIPStreamProtocol(self, proto, outbound=True)
        p.peerHost, p.peerPort = _bare(host), port
        p.keys.append(key)
        self._connections[key] = p
        self._streams.add(p)
        self._outboundCount += 1
        factory = _OutboundFactory(p)
        try:
            if proto == "tls":
                self.reactor.connectSSL(
                    _bare(host), port, factory, self._clientTLSOptions(_bare(host)), timeout=self.connectTimeout
                )
            else:
                self.reactor.connectTCP(_bare(host), port, factory, timeout=self.connectTimeout)
        except Exception as e:
            p._closed = True
            self._connectionLost(p)
            raise TransportFailure("cannot connect to %s:%s: %s" % (host, port, e))
        return p

    # -- sending

    def send(self, message, destination):
        """
        Send a request to a L{Target} or a response back to a L{Source}.

        @return: L{None} when the bytes were handed to the operating system
            at once (a UDP datagram to an IP address: this spares a
            Deferred per message, see L{xmppgw.sip.transaction}); otherwise
            a Deferred firing with L{None} when the bytes are written, or
            failing with L{TransportFailure}.
        """
        try:
            if isinstance(destination, Target):
                if not message.isRequest:
                    raise TypeError("a response is sent to the Source of its request, not a Target")
                return self._sendTo(message, destination.transport, destination.host, destination.port)
            if isinstance(destination, Source):
                if message.isRequest:
                    raise TypeError("a request is sent to a Target, not a Source")
                return self._sendResponse(message, destination)
            raise TypeError("cannot send to %r" % (destination,))
        except TransportFailure as e:
            return fail(e)
        except (TypeError, ValueError) as e:
            return fail(TransportFailure(str(e)))

    def _sendResponse(self, response, source):
        if source.transport != "udp":  # source.reliable
            conn = source.connection
            if isinstance(conn, SIPStreamProtocol) and conn.isUsable:
                return conn.sendMessage(response)
            via = topVia(response)
            # RFC 3261 18.2.2: the connection is gone; open one to the
            # received address and the sent-by port.
            host = via.param("received") or via.host
            port = via.port or DEFAULT_PORTS[source.transport]
            return self._sendTo(response, source.transport, host, port)
        reply = _udpReplies.get(response.headers.get("Via"))
        if reply is None:
            reply = _udpReplyAddress(topVia(response))
        host, port, isIP = reply
        protocol = source.connection if isinstance(source.connection, SIPDatagramProtocol) else None
        if isIP:
            return self._sendDatagram(response, host, port, protocol)
        return self._sendTo(response, "udp", host, port, protocol)

    def _sendTo(self, message, proto, host, port, protocol=None):
        host = _bare(host)
        if proto == "udp":
            if _isIP(host):
                return self._sendDatagram(message, host, port, protocol)
            d = self.reactor.resolve(host)

            def resolved(ip):
                return self._sendDatagram(message, ip, port, protocol)

            def unresolved(f):
                raise TransportFailure("cannot resolve %s: %s" % (host, f.getErrorMessage()))

            d.addCallbacks(resolved, unresolved)
            return d
        return self._connectionFor(proto, host, port).sendMessage(message)

    def _datagramProtocolFor(self, ip):
        family = 6 if ":" in ip else 4
        for p in self._udp:
            if p.family() == family and p.transport is not None:
                return p
        raise TransportFailure("no IPv%d UDP socket to send to %s from" % (family, ip))

    def _sendDatagram(self, message, ip, port, protocol=None):
        if protocol is None or protocol.transport is None:
            protocol = self._datagramProtocolFor(ip)
        if message.isRequest:
            message = _fillSentBy(message, self._udpLocalAddress, protocol, ip)
        data = serialize(message)
        if len(data) > MAX_DATAGRAM:
            raise TransportFailure("message of %d bytes is too large for UDP" % (len(data),))
        if self.logTraffic:
            self._logTraffic("sent", "udp", ip, port, data)
        try:
            protocol.transport.write(data, (ip, port))
        except Exception as e:
            raise TransportFailure("cannot send to %s:%s over UDP: %s" % (ip, port, e))
        return None

    def _udpLocalAddress(self, protocol, ip):
        """
        The local C{(host, port)} a datagram to C{ip} leaves C{protocol}
        from.
        """
        listenHost = protocol.host
        if listenHost in _WILDCARDS:
            listenHost = self._localHostFor(ip)
        return listenHost, self._udpBoundPort(protocol)

    def _udpBoundPort(self, protocol):
        for l in self._listeners:
            if getattr(l, "protocol", None) is protocol:
                return l.boundPort()
        return 0

    def _localHostFor(self, ip):
        """
        The local address the system would send to C{ip} from (a UDP
        C{connect}, which sends nothing).
        """
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.connect((ip, 9))
            return s.getsockname()[0]
        except OSError:
            return "::1" if family == socket.AF_INET6 else "127.0.0.1"
        finally:
            s.close()
