"""
Tests for L{xmppgw.sip.transport}: no sockets and no real time
(L{MemoryReactorClock} plus a small fake C{listenUDP}, L{StringTransport},
L{FakeDatagramTransport}).
"""

import os
import socket
import sys

import twisted.test
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError
from twisted.internet.testing import FakeDatagramTransport, MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial import unittest
from hypothesis import given, settings, strategies as st

from xmppgw.sip.message import (
    SIPParseError,
    Headers,
    Request,
    _parseVia,
    _viaCache,
    makeResponse,
    parseMessage,
    parseVia,
    serialize,
    topVia,
)
from xmppgw.sip.transaction import TransactionLayer
from xmppgw.sip.transport import (
    _SOURCES_MAX,
    SIPTransport,
    Source,
    Target,
    TransportFailure,
    _addReceived,
    _ipHosts,
    _isIP,
    _udpReplies,
    _udpReplyAddress,
    _viaTemplates,
    parseListen,
)
from xmppgw.sip import transport as transportModule

from tests.test_nodelay import NoDelayTransport


class FakeUDPPort:
    """
    What L{FakeReactor.listenUDP} returns.
    """

    def __init__(self, host, port):
        self.address = (IPv6Address if ":" in host else IPv4Address)("UDP", host, port)
        self.stopped = False

    def getHost(self):
        return self.address

    def stopListening(self):
        self.stopped = True
        return succeed(None)


class FakeReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} with C{listenUDP} (attaching a
    L{FakeDatagramTransport}) and a table-driven C{resolve}.
    """

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.udpPorts = []
        self.names = {}
        self.resolved = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        fakePort = FakeUDPPort(interface or "0.0.0.0", port or 43210)
        protocol.makeConnection(FakeDatagramTransport())
        self.udpPorts.append((port, protocol, interface, maxPacketSize, fakePort))
        return fakePort

    def resolve(self, name, timeout=10):
        self.resolved.append(name)
        if name in self.names:
            return succeed(self.names[name])
        return fail(DNSLookupError(name))


class Receiver:
    """
    Records what the transport hands up.
    """

    def __init__(self):
        self.received = []

    def receive(self, message, source):
        self.received.append((message, source))


CLIENT = ("198.51.100.7", 5060)


def ignore(failure):
    """
    Swallow the failure of a send whose outcome a test does not check.
    """
    return None


def rawRequest(
    via="SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKx1",
    method="MESSAGE",
    body=b"hello",
    extra="",
    contentLength=True,
):
    head = (
        "%s sip:bob@gw.example.com SIP/2.0\r\n"
        "Via: %s\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.org>;tag=1\r\n"
        "To: <sip:bob@gw.example.com>\r\n"
        "Call-ID: c1@example.org\r\n"
        "CSeq: 1 %s\r\n"
        "%s" % (method, via, method, extra)
    )
    if contentLength:
        head += "Content-Length: %d\r\n" % (len(body),)
    return head.encode("utf-8") + b"\r\n" + body


def outgoingRequest(via="SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKout1;rport"):
    headers = Headers()
    headers.add("Via", via)
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:juliet@gw.example.com>;tag=9")
    headers.add("To", "<sip:romeo@example.net>")
    headers.add("Call-ID", "out@gw.example.com")
    headers.add("CSeq", "1 MESSAGE")
    return Request("MESSAGE", "sip:romeo@example.net", headers, b"hi")


class TransportTestMixin:
    """
    Builds a started L{SIPTransport} on a L{FakeReactor}.
    """

    listen = [("udp", "192.0.2.10", 5060), ("tcp", "192.0.2.10", 5060)]

    def setUp(self):
        self.reactor = FakeReactor()
        self.receiver = Receiver()
        self.sip = self.makeTransport()

    def makeTransport(self, listen=None, **kwargs):
        sip = SIPTransport(listen or self.listen, receiver=self.receiver, reactor=self.reactor, **kwargs)
        sip.privilegedStartService()
        sip.startService()
        # The Deferred of stopService waits for StringTransport connections
        # that never report connectionLost: do not wait for it here.
        self.addCleanup(lambda: sip.stopService() and None)
        return sip

    def udpProtocol(self, index=-1):
        return self.reactor.udpPorts[index][1]

    def udpWritten(self, index=-1):
        return self.udpProtocol(index).transport.written

    def tcpFactory(self, index=-1):
        return self.reactor.tcpServers[index][1]

    def connectInbound(self, peer=("198.51.100.7", 40000), local=("192.0.2.10", 5060), factory=None,
                       transportClass=StringTransport):
        factory = factory or self.tcpFactory()
        addr = IPv4Address("TCP", *peer)
        protocol = factory.buildProtocol(addr)
        transport = transportClass(hostAddress=IPv4Address("TCP", *local), peerAddress=addr)
        protocol.makeConnection(transport)
        return protocol, transport

    def connectOutbound(self, index=-1, local=("192.0.2.10", 50123), transportClass=StringTransport):
        host, port, factory, timeout, _ = self.reactor.tcpClients[index]
        addr = IPv4Address("TCP", host, port)
        protocol = factory.buildProtocol(addr)
        transport = transportClass(hostAddress=IPv4Address("TCP", *local), peerAddress=addr)
        protocol.makeConnection(transport)
        return protocol, transport, factory


class ServiceTests(TransportTestMixin, unittest.TestCase):
    """
    Construction, listening and stopping.
    """

    def test_listens(self):
        """
        UDP sockets are bound with room for the largest datagram, TCP through
        listenTCP, both on the configured interface.
        """
        [(port, _protocol, interface, maxPacketSize, _)] = self.reactor.udpPorts
        self.assertEqual((port, interface), (5060, "192.0.2.10"))
        self.assertGreaterEqual(maxPacketSize, 65535)
        [(port, _factory, _backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (5060, "192.0.2.10"))
        self.assertEqual(
            self.sip.localAddresses(),
            [("udp", "192.0.2.10", 5060), ("tcp", "192.0.2.10", 5060)],
        )

    def test_receiveBuffer(self):
        """
        Each UDP socket asks for C{udpReceiveBufferSize} bytes of receive
        buffer; what the kernel granted is kept (Linux reports twice that),
        and a capped buffer is logged with the sysctl that raises it. 0
        leaves the socket alone.
        """
        class Socket:
            def __init__(self, cap):
                self.cap = cap
                self.asked = []

            def setsockopt(self, level, option, value):
                self.asked.append((level, option, value))

            def getsockopt(self, level, option):
                return min(2 * self.asked[-1][2], self.cap)

        self.patch(sys, "platform", "linux")
        sockets = [Socket(cap=1 << 30), Socket(cap=425984)]
        original = self.reactor.listenUDP

        def listenUDP(*args, **kwargs):
            port = original(*args, **kwargs)
            port.socket = sockets.pop(0)
            return port

        self.reactor.listenUDP = listenUDP
        with capturedLogs() as events:
            sip = self.makeTransport(
                ["udp:127.0.0.1:5070", "udp:127.0.0.1:5071"],
                udpReceiveBufferSize=1 << 20)
        first, second = [l for l in sip._listeners
                         if l.__class__.__name__ == "_UDPListener"]
        self.assertEqual(
            [(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)],
            first.listeningPort.socket.asked)
        # Linux reports twice what it granted.
        self.assertEqual(1 << 20, first.receiveBufferSize)
        self.assertEqual(212992, second.receiveBufferSize)
        capped = [e for e in events
                  if "net.core.rmem_max" in e.get("log_format", "")]
        self.assertEqual(1, len(capped))
        self.assertEqual(5071, capped[0]["port"])

        sockets.append(Socket(cap=1 << 30))
        sip = self.makeTransport(["udp:127.0.0.1:5072"], udpReceiveBufferSize=0)
        self.assertEqual([], self.reactor.udpPorts[-1][4].socket.asked)

    def test_readBatchBounded(self):
        """
        Each UDP port reads at most L{transportModule.UDP_READ_BYTES} per
        reactor turn (Twisted's C{maxThroughput}), not Twisted's 256 KiB:
        confirmations on the XMPP link are read between such batches.
        """
        sip = self.makeTransport(["udp:127.0.0.1:5070", "udp:[::1]:5070"])
        ports = [l.listeningPort for l in sip._listeners
                 if l.__class__.__name__ == "_UDPListener"]
        self.assertEqual(2, len(ports))
        for port in ports:
            self.assertEqual(transportModule.UDP_READ_BYTES,
                             port.maxThroughput)
        self.assertLess(transportModule.UDP_READ_BYTES, 256 * 1024)

    def test_localAddress(self):
        """
        The Via sent-by is the listening address of the transport, or a
        wildcard and port 0 when there is no listener for it.
        """
        self.assertEqual(self.sip.localAddress("udp"), ("192.0.2.10", 5060))
        self.assertEqual(self.sip.localAddress("tls"), ("0.0.0.0", 0))
        sip = self.makeTransport([("udp", "192.0.2.10", 5060)], viaHost="sip.example.com")
        self.assertEqual(sip.localAddress("udp"), ("sip.example.com", 5060))

    def test_boundPortReported(self):
        """
        With port 0 the bound port is reported.
        """
        sip = self.makeTransport([("udp", "127.0.0.1", 0)])
        self.assertEqual(sip.localAddresses(), [("udp", "127.0.0.1", 43210)])

    def test_boundPortAskedOnce(self):
        """
        The bound port is asked of the listening port once, and again only
        of another listening port (after a restart).
        """
        sip = self.makeTransport([("udp", "127.0.0.1", 0)])
        listener = sip._listeners[0]
        port = listener.listeningPort
        asked = []
        getHost = port.getHost

        def counted():
            asked.append(1)
            return getHost()

        port.getHost = counted
        for _ in range(3):
            self.assertEqual(sip.localAddress("udp"), ("127.0.0.1", 43210))
        self.assertEqual(len(asked), 1)
        other = FakeUDPPort("127.0.0.1", 43211)
        listener.listeningPort = other
        self.assertEqual(sip.localAddress("udp"), ("127.0.0.1", 43211))
        listener.listeningPort = None
        self.assertEqual(sip.localAddress("udp"), ("127.0.0.1", 0))

    def test_listenStrings(self):
        """
        Kamailio-style listen strings are accepted.
        """
        sip = self.makeTransport(["udp:127.0.0.1:5062", "tcp:[::1]:5062"])
        self.assertEqual(sip.localAddresses(), [("udp", "127.0.0.1", 5062), ("tcp", "::1", 5062)])

    def test_badListen(self):
        """
        Unknown transports, bad ports, an empty list and TLS without a
        certificate are refused with L{ValueError}.
        """
        self.assertRaises(ValueError, SIPTransport, [("sctp", "h", 1)], reactor=self.reactor)
        self.assertRaises(ValueError, SIPTransport, [("udp", "h", 70000)], reactor=self.reactor)
        self.assertRaises(ValueError, SIPTransport, [], reactor=self.reactor)
        self.assertRaises(ValueError, SIPTransport, [("tls", "h", 5061)], reactor=self.reactor)

    def test_tlsListen(self):
        """
        A TLS listener uses listenSSL with the given context factory.
        """
        context = object()
        self.makeTransport([("tls", "192.0.2.10", 5061)], tlsContextFactory=context)
        [(port, _factory, ctx, _backlog, interface)] = self.reactor.sslServers
        self.assertEqual((port, ctx, interface), (5061, context, "192.0.2.10"))

    def test_tlsFromFiles(self):
        """
        With certificate and key paths, the files are read when the service
        starts and turned into server TLS options.
        """
        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        self.makeTransport([("tls", "192.0.2.10", 5061)], tlsCertificate=pem, tlsPrivateKey=pem)
        [(_port, _factory, ctx, _backlog, _interface)] = self.reactor.sslServers
        self.assertTrue(hasattr(ctx, "getContext"))

    def test_tlsMissingFile(self):
        """
        A missing certificate file makes the start fail loudly.
        """
        sip = SIPTransport(
            [("tls", "192.0.2.10", 5061)],
            tlsCertificate=self.mktemp(),
            tlsPrivateKey=self.mktemp(),
            reactor=self.reactor,
        )
        self.assertRaises(OSError, sip.privilegedStartService)

    def test_stopService(self):
        """
        Stopping closes the sockets and the connections, and fires once the
        connections are closed.
        """
        protocol, transport = self.connectInbound()
        d = self.sip.stopService()
        self.assertTrue(self.reactor.udpPorts[0][4].stopped)
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stopServiceAborts(self):
        """
        A connection that does not close within closeTimeout is aborted.
        """
        _protocol, transport = self.connectInbound()
        self.sip.stopService()
        self.assertFalse(transport.disconnected)
        self.reactor.advance(5)
        self.assertTrue(transport.disconnected)


class ParseListenTests(unittest.TestCase):
    """
    Tests for L{parseListen}.
    """

    def test_valid(self):
        """
        C{proto:host:port} with IPv4, bracketed IPv6 or a name.
        """
        self.assertEqual(parseListen("udp:127.0.0.1:5060"), ("udp", "127.0.0.1", 5060))
        self.assertEqual(parseListen("TLS:[::1]:5061"), ("tls", "::1", 5061))
        self.assertEqual(parseListen("tcp:0.0.0.0:0"), ("tcp", "0.0.0.0", 0))

    def test_invalid(self):
        """
        Malformed specs raise L{ValueError}.
        """
        for bad in ["udp", "sctp:1.2.3.4:5060", "udp:1.2.3.4", "udp:1.2.3.4:x", "udp:h:99999"]:
            self.assertRaises(ValueError, parseListen, bad)


class UDPReceiveTests(TransportTestMixin, unittest.TestCase):
    """
    Receiving over UDP.
    """

    def test_requestPassedUp(self):
        """
        A request is parsed and handed up with its L{Source}.
        """
        self.udpProtocol().datagramReceived(rawRequest(), CLIENT)
        [(message, source)] = self.receiver.received
        self.assertEqual(message.method, "MESSAGE")
        self.assertEqual(message.body, b"hello")
        self.assertEqual((source.transport, source.host, source.port), ("udp", "198.51.100.7", 5060))
        self.assertIs(message.source, source)
        self.assertEqual(topVia(message).params, (("branch", "z9hG4bKx1"),))

    def test_sourceCheckedOnce(self):
        """
        The source of a UDP request is checked against C{allowFrom} once.
        """
        asked = []

        class Counting:
            def allows(self, host):
                asked.append(host)
                return True

        self.sip.allowFrom = Counting()
        self.udpProtocol().datagramReceived(rawRequest(), CLIENT)
        self.assertEqual(len(self.receiver.received), 1)
        self.assertEqual(asked, ["198.51.100.7"])

    def test_receivedAdded(self):
        """
        When the sent-by host is not the source address, C{received} is
        added (RFC 3261 18.2.1).
        """
        via = "SIP/2.0/UDP client.example.org:5060;branch=z9hG4bKx1"
        self.udpProtocol().datagramReceived(rawRequest(via=via), CLIENT)
        message = self.receiver.received[0][0]
        self.assertEqual(
            message.headers.get("Via"),
            "SIP/2.0/UDP client.example.org:5060;branch=z9hG4bKx1;received=198.51.100.7",
        )

    def test_rportFilled(self):
        """
        An empty C{rport} gets the source port, and C{received} is added even
        when the host matches (RFC 3581 4).
        """
        via = "SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bKx1"
        self.udpProtocol().datagramReceived(rawRequest(via=via), ("198.51.100.7", 40123))
        via = topVia(self.receiver.received[0][0])
        self.assertEqual(via.param("rport"), "40123")
        self.assertEqual(via.param("received"), "198.51.100.7")
        self.assertEqual([n for n, _ in via.params], ["rport", "branch", "received"])

    def test_otherViasKept(self):
        """
        Only the top Via changes; the other Via values and the header order
        stay as received.
        """
        via = "SIP/2.0/UDP proxy.example.org;branch=z9hG4bKp, SIP/2.0/TCP ua.example.org;branch=z9hG4bKu"
        raw = rawRequest(via=via, extra="Via: SIP/2.0/UDP third.example.org;branch=z9hG4bK3\r\n")
        self.udpProtocol().datagramReceived(raw, CLIENT)
        message = self.receiver.received[0][0]
        self.assertEqual(
            message.headers.getAll("Via"),
            [
                "SIP/2.0/UDP proxy.example.org;branch=z9hG4bKp;received=198.51.100.7, "
                "SIP/2.0/TCP ua.example.org;branch=z9hG4bKu",
                "SIP/2.0/UDP third.example.org;branch=z9hG4bK3",
            ],
        )
        self.assertEqual(
            [n for n, _ in message.headers.items()],
            ["Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Via", "Content-Length"],
        )

    def test_parsedViaMatchesText(self):
        """
        After C{received}/C{rport} are added, the top Via the layers read
        (L{topVia}, remembered from the change rather than parsed again) is
        what parsing the new Via text gives, for any shape of Via line.
        """
        vias = [
            "SIP/2.0/UDP client.example.org:5060;branch=z9hG4bKx1",
            "SIP/2.0/UDP 198.51.100.7;rport;branch=z9hG4bKx1",
            "sip / 2.0 / udp  Client.Example.ORG : 05060 ; BRANCH = z9hG4bKx1 ; rport",
            'SIP/2.0/UDP [2001:DB8::1]:5060;branch=z9hG4bKx1;x="a, b;c";maddr=[::1]',
            "SIP/2.0/UDP h1;branch=z9hG4bKa;received=192.0.2.1;rport=1, SIP/2.0/TCP h2 ;branch=z9hG4bKb",
            "SIP/2.0/UDP h1;branch=z9hG4bKa;rport;empty=;flag",
        ]
        for via in vias:
            for addr in [CLIENT, ("203.0.113.9", 40000)]:
                self.receiver.received = []
                self.udpProtocol().datagramReceived(rawRequest(via=via), addr)
                [(message, _)] = self.receiver.received
                text = message.headers.get("Via")
                self.assertIn(text, _viaCache)
                self.assertEqual(topVia(message), _parseVia(text)[0], text)
                self.assertEqual(parseVia(text), _parseVia(text), text)

    def test_ipv6ReceivedNotRemembered(self):
        """
        A C{received} holding an IPv6 address (not a token) is written, and
        the Via text read again is parsed as it is, not taken as known.
        """
        via = "SIP/2.0/UDP [2001:db8::9];branch=z9hG4bKx1;rport"
        message = parseMessage(rawRequest(via=via))
        source = self.udpProtocol().sourceOf(("2001:db8::7", 5062))
        _addReceived(message, source)
        text = message.headers.get("Via")
        self.assertEqual(text, "SIP/2.0/UDP [2001:db8::9];branch=z9hG4bKx1;rport=5062;received=2001:db8::7")
        self.assertNotIn(text, _viaCache)

    def test_ipv6ReceivedParsed(self):
        """
        A request from an IPv6 source with C{rport} gets C{received} as a
        bare IPv6 address (RFC 3261 C{via-received}) and still reaches the
        receiver with a usable top Via.
        """
        via = "SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKx1;rport"
        self.udpProtocol().datagramReceived(
            rawRequest(via=via), ("2001:db8::7", 5062))
        [(message, _)] = self.receiver.received
        parsed = topVia(message)
        self.assertEqual(parsed.param("received"), "2001:db8::7")
        self.assertEqual(parsed.param("rport"), "5062")
        self.assertEqual(parsed.param("branch"), "z9hG4bKx1")

    def test_sourceShared(self):
        """
        Datagrams from one peer share one L{Source}; another peer gets its
        own; the cache of sources is bounded.
        """
        protocol = self.udpProtocol()
        protocol.datagramReceived(rawRequest(), CLIENT)
        protocol.datagramReceived(rawRequest(via="SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKx2"), CLIENT)
        protocol.datagramReceived(rawRequest(), ("198.51.100.8", 5060))
        [(_, a), (_, b), (_, c)] = self.receiver.received
        self.assertIs(a, b)
        self.assertEqual((c.host, c.port), ("198.51.100.8", 5060))
        self.assertIs(a.connection, protocol)
        for port in range(1, 3000):
            protocol.sourceOf(("192.0.2.1", port))
        self.assertLessEqual(len(protocol._sources), _SOURCES_MAX)

    def test_responsePassedUp(self):
        """
        A response is handed up without Via changes.
        """
        raw = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKout1;rport\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        self.udpProtocol().datagramReceived(raw, CLIENT)
        [(message, _)] = self.receiver.received
        self.assertEqual(message.code, 200)
        self.assertEqual(topVia(message).param("rport"), None)

    def test_parseError400(self):
        """
        A request that parses far enough is answered 400 with the reason, and
        is not handed up.
        """
        raw = rawRequest(extra="Bad Header Line\r\n")
        self.udpProtocol().datagramReceived(raw, CLIENT)
        self.assertEqual(self.receiver.received, [])
        [(data, addr)] = self.udpWritten()
        self.assertEqual(addr, CLIENT)
        response = parseMessage(data)
        self.assertEqual(response.code, 400)
        self.assertIn("Bad Request", response.reason)
        self.assertEqual(response.headers.get("Call-ID"), "c1@example.org")

    def test_versionError505(self):
        """
        An unsupported SIP version is answered 505.
        """
        raw = rawRequest().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
        self.udpProtocol().datagramReceived(raw, CLIENT)
        [(data, _)] = self.udpWritten()
        self.assertEqual(parseMessage(data).code, 505)

    def test_garbageDropped(self):
        """
        Data that is no SIP message is dropped without an answer.
        """
        self.udpProtocol().datagramReceived(b"SIP/2.0 xyz\r\n\r\n", CLIENT)
        self.udpProtocol().datagramReceived(b"\x16\x03\x01 random", CLIENT)
        self.assertEqual(self.udpWritten(), [])
        self.assertEqual(self.receiver.received, [])

    def test_oversize513(self):
        """
        A datagram over maxMessageSize is answered 513 and not handed up.
        """
        sip = self.makeTransport([("udp", "192.0.2.11", 5060)], maxMessageSize=500)
        sip.receiver = self.receiver
        self.udpProtocol().datagramReceived(rawRequest(body=b"x" * 600), CLIENT)
        [(data, addr)] = self.udpWritten()
        self.assertEqual(addr, CLIENT)
        self.assertEqual(parseMessage(data).code, 513)
        self.assertEqual(self.receiver.received, [])

    def test_keepAliveIgnored(self):
        """
        CRLF keep-alive datagrams are ignored.
        """
        self.udpProtocol().datagramReceived(b"\r\n\r\n", CLIENT)
        self.assertEqual(self.udpWritten(), [])
        self.assertEqual(self.receiver.received, [])

    def test_noReceiver503(self):
        """
        Without a receiver, requests are answered 503.
        """
        self.sip.receiver = None
        self.udpProtocol().datagramReceived(rawRequest(), CLIENT)
        [(data, _)] = self.udpWritten()
        self.assertEqual(parseMessage(data).code, 503)

    def test_logTraffic(self):
        """
        With logTraffic, every message in and out is logged with its address
        and text; without it, nothing is.
        """
        with capturedLogs() as events:
            self.udpProtocol().datagramReceived(rawRequest(), CLIENT)
        self.assertEqual([e for e in events if e.get("direction")], [])
        sip = self.makeTransport([("udp", "192.0.2.14", 5060)], logTraffic=True)
        sip.receiver = None
        with capturedLogs() as events:
            self.udpProtocol().datagramReceived(rawRequest(), CLIENT)
        traffic = [e for e in events if e.get("direction")]
        self.assertEqual([e["direction"] for e in traffic], ["received", "sent"])
        self.assertEqual((traffic[0]["host"], traffic[0]["port"]), CLIENT)
        self.assertIn("MESSAGE sip:bob@gw.example.com SIP/2.0", traffic[0]["text"])
        self.assertIn("SIP/2.0 503", traffic[1]["text"])

    def test_receiverFailureLogged(self):
        """
        An exception from the receiver is logged, not propagated.
        """

        class Broken:
            def receive(self, message, source):
                raise RuntimeError("broken")

        self.sip.receiver = Broken()
        self.udpProtocol().datagramReceived(rawRequest(), CLIENT)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


_TEMPLATE_SOURCES = [
    Source("udp", "198.51.100.7", 5060),
    Source("udp", "203.0.113.9", 40000),
    Source("udp", "2001:db8::7", 5062),
    Source("tcp", "203.0.113.9", 40001),
]

_TEMPLATE_VIAS = [
    "SIP/2.0/UDP 198.51.100.7:5060;branch=%s;rport",
    "SIP/2.0/UDP 198.51.100.7:5060;branch=%s",
    "SIP/2.0/UDP 198.51.100.7;rport;branch=%s",
    "SIP/2.0/UDP client.example.org:5070;branch=%s;rport=7000",
    "SIP/2.0/UDP 10.0.0.5:5062;branch=%s;maddr=192.0.2.77;rport",
    "SIP/2.0/UDP 10.0.0.5;rport;rport=9;branch=%s;received=1.2.3.4",
    "SIP/2.0/UDP 10.0.0.5;BRANCH=up;branch=%s;rport",
    "SIP/2.0/UDP 10.0.0.5;received=203.0.113.9;branch=%s",
    "SIP/2.0/udp Client.Example.ORG:05060;Branch=x;branch=%s;RPORT",
    "sip/2.0/UDP [2001:DB8::9]:5060;branch=%s;rport",
    "SIP/2.0/TCP 203.0.113.9:40001;branch=%s;rport",
    "SIP/2.0/UDP h1;branch=%s;rport, SIP/2.0/UDP h2;branch=z9hG4bKb",
    "SIP/2.0/UDP h1 ;branch=%s;rport",
    'SIP/2.0/UDP h1;x="a;b";branch=%s;rport',
    "SIP/2.0/UDP h1:99999;branch=%s;rport",
]


class ViaTemplateTests(unittest.TestCase):
    """
    L{_addReceived} changes a Via line that differs from one seen before
    (from the same source) only in its branch value by the template of
    that one: the same as the general rule.
    """

    def setUp(self):
        _viaTemplates.clear()
        self.addCleanup(_viaTemplates.clear)

    def receive(self, via, source):
        """
        C{_addReceived} on a request with the top Via C{via}.

        @return: C{(Via text, parsed top Via, reply address remembered,
            whether the text is remembered as parsed)}, or the class of the
            error.
        """
        message = parseMessage(rawRequest(via=via))
        try:
            _addReceived(message, source)
        except SIPParseError:
            return SIPParseError
        text = message.headers.get("Via")
        return (text, topVia(message), _udpReplies.get(text), text in _viaCache)

    def general(self, via, source):
        """
        What the general rule gives for C{via}, with no template.
        """
        saved = dict(_viaTemplates)
        _viaTemplates.clear()
        self.patch(transportModule, "_keepViaTemplate", lambda *a: None)
        try:
            return self.receive(via, source)
        finally:
            self.patch(transportModule, "_keepViaTemplate", _keepViaTemplateReal)
            _viaTemplates.clear()
            _viaTemplates.update(saved)

    def assertSameAsGeneral(self, shape, first, second, source):
        self.receive(shape % (first,), source)
        expected = self.general(shape % (second,), source)
        _udpReplies.clear()
        _viaCache.clear()
        self.assertEqual(self.receive(shape % (second,), source), expected, (shape, second, source))

    def test_sameAsGeneral(self):
        """
        For usual and unusual Via lines, sources and branch values, the
        line after a first one of the same shape is changed as the
        general rule changes it.
        """
        for shape in _TEMPLATE_VIAS:
            for source in _TEMPLATE_SOURCES:
                for second in ["z9hG4bK-2", "z9hG4bK-1", "x", "a b", "", "A=b", "z9hG4bK\u00e9"]:
                    self.assertSameAsGeneral(shape, "z9hG4bK-1", second, source)

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(
        st.sampled_from(_TEMPLATE_VIAS),
        st.sampled_from(_TEMPLATE_SOURCES),
        st.text(alphabet="z9hG4bK-.!%*_+`'~ ;=,\"\u00e9", max_size=12),
        st.text(alphabet="z9hG4bK-.!%*_+`'~ ;=,\"\u00e9", max_size=12),
    )
    def test_sameAsGeneralAnyBranch(self, shape, source, first, second):
        """
        For any first and second branch text, the second line is changed
        as the general rule changes it.
        """
        self.assertSameAsGeneral(shape, first, second, source)

    def test_templateUsed(self):
        """
        The second line of a shape from a source is not parsed.
        """
        shape = "SIP/2.0/UDP 198.51.100.7:5060;branch=%s;rport"
        source = _TEMPLATE_SOURCES[1]
        self.receive(shape % ("z9hG4bK1",), source)
        self.patch(transportModule, "_addReceivedSlow", lambda *a: 1 / 0)
        text, via, reply, known = self.receive(shape % ("z9hG4bK2",), source)
        self.assertEqual(text, "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK2;rport=40000;received=203.0.113.9")
        self.assertEqual(via, _parseVia(text)[0])
        self.assertEqual(reply, ("203.0.113.9", 40000, True))
        self.assertTrue(known)

    def test_perSource(self):
        """
        A template serves only the source it was made for.
        """
        shape = "SIP/2.0/UDP 198.51.100.7:5060;branch=%s;rport"
        self.receive(shape % ("z9hG4bK1",), _TEMPLATE_SOURCES[1])
        text = self.receive(shape % ("z9hG4bK2",), Source("udp", "203.0.113.9", 40002))[0]
        self.assertEqual(text, "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK2;rport=40002;received=203.0.113.9")

    def test_bounded(self):
        """
        The templates are bounded.
        """
        self.patch(transportModule, "_VIA_TEMPLATES_MAX", 8)
        for i in range(20):
            self.receive("SIP/2.0/UDP 198.51.100.%d:5060;branch=z9hG4bK1;rport" % (i,), _TEMPLATE_SOURCES[0])
            self.assertLessEqual(len(_viaTemplates), 8)
        self.assertEqual(len(_viaTemplates), 4)

    def test_longLinesNoTemplate(self):
        """
        A Via line longer than C{_VIA_TEMPLATE_LINE_MAX} makes no template
        (the templates hold a bounded number of bytes).
        """
        shape = "SIP/2.0/UDP 198.51.100.7:5060;branch=%s;rport;x=" + "y" * transportModule._VIA_TEMPLATE_LINE_MAX
        self.receive(shape % ("z9hG4bK1",), _TEMPLATE_SOURCES[0])
        self.assertEqual(_viaTemplates, {})
        self.receive((shape % ("z9hG4bK1",))[:400], _TEMPLATE_SOURCES[0])
        self.assertEqual(len(_viaTemplates), 1)


_keepViaTemplateReal = transportModule._keepViaTemplate


class UDPSendTests(TransportTestMixin, unittest.TestCase):
    """
    Sending over UDP.
    """

    def receivedRequest(self, via, addr):
        self.udpProtocol().datagramReceived(rawRequest(via=via), addr)
        return self.receiver.received[-1]

    def test_responseToRport(self):
        """
        A response goes to C{received} and C{rport} (RFC 3581).
        """
        request, source = self.receivedRequest(
            "SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKx1", ("203.0.113.9", 40123)
        )
        # Written at once: no Deferred.
        self.assertIsNone(self.sip.send(makeResponse(request, 200), source))
        [(data, addr)] = self.udpWritten()
        self.assertEqual(addr, ("203.0.113.9", 40123))
        self.assertEqual(parseMessage(data).code, 200)

    def test_responseToReceivedAndSentByPort(self):
        """
        Without rport, a response goes to C{received} and the sent-by port.
        """
        request, source = self.receivedRequest(
            "SIP/2.0/UDP client.example.org:5070;branch=z9hG4bKx1", ("203.0.113.9", 40123)
        )
        self.assertIsNone(self.sip.send(makeResponse(request, 200), source))
        self.assertEqual(self.udpWritten()[0][1], ("203.0.113.9", 5070))

    def test_responseToSentByDefaultPort(self):
        """
        Without received or a port, a response goes to the sent-by host on
        5060.
        """
        request, source = self.receivedRequest("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKx1", CLIENT)
        self.assertIsNone(self.sip.send(makeResponse(request, 200), source))
        self.assertEqual(self.udpWritten()[0][1], ("198.51.100.7", 5060))

    def test_replyAddressWorkedOutOnArrival(self):
        """
        Where the responses to a UDP request go is worked out when it
        arrives: sending a response reads it back without parsing the
        response's Via again.
        """
        request, source = self.receivedRequest(
            "SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKarrival", ("203.0.113.9", 40123)
        )
        text = request.headers.get("Via")
        self.assertEqual(_udpReplies[text], ("203.0.113.9", 40123, True))

        def noParsing(message):
            raise AssertionError("the response's Via was parsed again")

        self.patch(transportModule, "topVia", noParsing)
        self.assertIsNone(self.sip.send(makeResponse(request, 200), source))
        self.assertEqual(self.udpWritten()[0][1], ("203.0.113.9", 40123))

    def test_replyAddressForgotten(self):
        """
        A response whose Via line is not (or no longer) remembered goes
        where its top Via says.
        """
        request, source = self.receivedRequest(
            "SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKforgotten", ("203.0.113.9", 40123)
        )
        _udpReplies.clear()
        self.assertIsNone(self.sip.send(makeResponse(request, 200), source))
        self.assertEqual(self.udpWritten()[0][1], ("203.0.113.9", 40123))

    def test_replyAddressMatchesVia(self):
        """
        For any shape of top Via, the address remembered on arrival is the
        one the response's Via gives (L{_udpReplyAddress} of the Via parsed
        again), and the response is sent there.
        """
        vias = [
            "SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKx1",
            "SIP/2.0/UDP 10.0.0.5:5060;rport=7000;branch=z9hG4bKx1",
            "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKx1",
            "SIP/2.0/UDP client.example.org:5070;branch=z9hG4bKx1",
            "SIP/2.0/UDP 203.0.113.9:5070;branch=z9hG4bKx1",
            "SIP/2.0/UDP 203.0.113.9;branch=z9hG4bKx1;received=192.0.2.99",
            "SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKx1;maddr=192.0.2.77;rport",
            "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKx1;maddr=;rport",
            "SIP/2.0/UDP 10.0.0.5;rport;rport=9;branch=z9hG4bKx1;received=1.2.3.4",
            "SIP/2.0/UDP h1;branch=z9hG4bKa;rport, SIP/2.0/UDP h2;branch=z9hG4bKb",
            "sip / 2.0 / udp  Client.Example.ORG : 05060 ; BRANCH = z9hG4bKx1 ; rport",
        ]
        for i, via in enumerate(vias):
            for addr in [CLIENT, ("203.0.113.9", 40000)]:
                self.receiver.received = []
                del self.udpWritten()[:]
                request, source = self.receivedRequest(via, addr)
                text = request.headers.get("Via")
                expected = _udpReplyAddress(_parseVia(text)[0])
                self.assertEqual(_udpReplies.get(text), expected, (via, addr))
                self.assertIsNone(self.sip.send(makeResponse(request, 200), source))
                self.assertEqual(self.udpWritten()[0][1], expected[:2], (via, addr))

    def test_replyAddressesBounded(self):
        """
        The remembered reply addresses are bounded.
        """
        for i in range(transportModule._UDP_REPLIES_MAX + 10):
            self.receivedRequest("SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK%d" % (i,), CLIENT)
        self.assertLessEqual(len(_udpReplies), transportModule._UDP_REPLIES_MAX)

    def test_longNotKept(self):
        """
        A top Via line or a host longer than the memos' limit
        (L{xmppgw.memo.MAX_KEPT_LENGTH}) is not kept: the response still
        goes where the Via says, worked out again; the caches hold a
        bounded number of bytes whatever the peers send.
        """
        _udpReplies.clear()
        _ipHosts.clear()
        self.addCleanup(_ipHosts.clear)
        from xmppgw.memo import MAX_KEPT_LENGTH
        longVia = ("SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK"
                   + "b" * MAX_KEPT_LENGTH)
        request, source = self.receivedRequest(longVia, CLIENT)
        self.assertEqual({}, _udpReplies)
        self.assertIsNone(self.sip.send(makeResponse(request, 200), source))
        self.assertEqual(self.udpWritten()[0][1], CLIENT)
        longHost = "h" * MAX_KEPT_LENGTH + ".example"
        self.assertFalse(_isIP(longHost))
        self.assertNotIn(longHost, _ipHosts)

    def test_replyToName(self):
        """
        A response whose reply address is a host name (a C{maddr}) is sent
        after resolving it.
        """
        self.reactor.names["proxy.example.org"] = "203.0.113.50"
        request, source = self.receivedRequest(
            "SIP/2.0/UDP 10.0.0.5:5062;maddr=proxy.example.org;branch=z9hG4bKx1", CLIENT
        )
        self.assertEqual(_udpReplies[request.headers.get("Via")], ("proxy.example.org", 5062, False))
        self.assertIsNone(self.successResultOf(self.sip.send(makeResponse(request, 200), source)))
        self.assertEqual(self.reactor.resolved, ["proxy.example.org"])
        self.assertEqual(self.udpWritten()[0][1], ("203.0.113.50", 5062))

    def test_isIPRemembered(self):
        """
        L{_isIP} answers as L{isIPAddress}/L{isIPv6Address} and remembers
        the answer, within a bound.
        """
        _ipHosts.clear()
        self.addCleanup(_ipHosts.clear)
        self.assertTrue(_isIP("192.0.2.1"))
        self.assertTrue(_isIP("2001:db8::1"))
        self.assertFalse(_isIP("example.org"))
        self.assertFalse(_isIP("[2001:db8::1]"))
        self.assertEqual(_ipHosts, {"192.0.2.1": True, "2001:db8::1": True, "example.org": False,
                                    "[2001:db8::1]": False})
        self.patch(transportModule, "isIPAddress", lambda host: 1 / 0)
        self.assertTrue(_isIP("192.0.2.1"))
        self.patch(transportModule, "_IP_HOSTS_MAX", 4)
        self.patch(transportModule, "isIPAddress", lambda host: False)
        self.patch(transportModule, "isIPv6Address", lambda host: False)
        self.assertFalse(_isIP("192.0.2.2"))
        self.assertEqual(_ipHosts, {"192.0.2.2": False})

    def test_responseFromArrivalSocket(self):
        """
        With several UDP sockets, the response leaves from the one the
        request arrived on.
        """
        sip = self.makeTransport([("udp", "192.0.2.20", 5060), ("udp", "192.0.2.21", 5060)])
        first, second = self.reactor.udpPorts[-2][1], self.reactor.udpPorts[-1][1]
        second.datagramReceived(rawRequest(), CLIENT)
        request, source = self.receiver.received[-1]
        self.assertIsNone(sip.send(makeResponse(request, 200), source))
        self.assertEqual(first.transport.written, [])
        self.assertEqual(len(second.transport.written), 1)

    def test_requestToTarget(self):
        """
        A request is written to the target address from the UDP socket.
        """
        request = outgoingRequest()
        # Written at once: no Deferred.
        self.assertIsNone(self.sip.send(request, Target("udp", "203.0.113.5", 5080)))
        [(data, addr)] = self.udpWritten()
        self.assertEqual(addr, ("203.0.113.5", 5080))
        self.assertEqual(parseMessage(data).headers.get("Via"), request.headers.get("Via"))

    def test_requestResolvesName(self):
        """
        A host name is resolved through the reactor first.
        """
        self.reactor.names["sip.example.net"] = "203.0.113.6"
        d = self.sip.send(outgoingRequest(), Target("udp", "sip.example.net"))
        self.successResultOf(d)
        self.assertEqual(self.reactor.resolved, ["sip.example.net"])
        self.assertEqual(self.udpWritten()[0][1], ("203.0.113.6", 5060))

    def test_unresolvable(self):
        """
        A name that does not resolve is a L{TransportFailure}.
        """
        d = self.sip.send(outgoingRequest(), Target("udp", "nowhere.invalid"))
        f = self.failureResultOf(d, TransportFailure)
        self.assertIn("nowhere.invalid", str(f.value))

    def test_noSocketForFamily(self):
        """
        Without a UDP socket of the target's address family, sending fails
        with L{TransportFailure}.
        """
        d = self.sip.send(outgoingRequest(), Target("udp", "2001:db8::5"))
        self.failureResultOf(d, TransportFailure)
        sip = self.makeTransport([("tcp", "192.0.2.12", 5060)])
        self.failureResultOf(sip.send(outgoingRequest(), Target("udp", "203.0.113.5")), TransportFailure)

    def test_tooLargeForUDP(self):
        """
        A message over the UDP maximum is refused with L{TransportFailure}.
        """
        request = outgoingRequest()
        request.body = b"x" * 70000
        self.failureResultOf(self.sip.send(request, Target("udp", "203.0.113.5")), TransportFailure)
        self.assertEqual(self.udpWritten(), [])

    def test_writeErrorIsTransportFailure(self):
        """
        An OS error from the socket is reported as L{TransportFailure}.
        """

        def broken(packet, addr):
            raise OSError("Network is unreachable")

        self.udpProtocol().transport.write = broken
        f = self.failureResultOf(self.sip.send(outgoingRequest(), Target("udp", "203.0.113.5")), TransportFailure)
        self.assertIn("unreachable", str(f.value))

    def test_wildcardSentByFilled(self):
        """
        When listening on 0.0.0.0, the wildcard Via host is replaced with
        the local address used towards the target.
        """
        sip = self.makeTransport([("udp", "0.0.0.0", 5090)])
        sip._localHostFor = lambda ip: "192.0.2.99"
        request = outgoingRequest(via="SIP/2.0/UDP 0.0.0.0:5090;branch=z9hG4bKw;rport")
        self.assertIsNone(sip.send(request, Target("udp", "203.0.113.5")))
        data = self.udpWritten()[0][0]
        self.assertEqual(
            parseMessage(data).headers.get("Via"), "SIP/2.0/UDP 192.0.2.99:5090;branch=z9hG4bKw;rport"
        )

    def test_wildcardSentByOnACopy(self):
        """
        Filling the sent-by leaves the caller's request as it was: it may
        be sent again, from another socket.
        """
        sip = self.makeTransport([("udp", "0.0.0.0", 5090)])
        sip._localHostFor = lambda ip: "192.0.2.99"
        via = "SIP/2.0/UDP 0.0.0.0:5090;branch=z9hG4bKw;rport"
        request = outgoingRequest(via=via)
        self.assertIsNone(sip.send(request, Target("udp", "203.0.113.5")))
        self.assertEqual(request.headers.get("Via"), via)
        self.assertEqual(topVia(request).host, "0.0.0.0")

    def test_completeSentByNoLocalLookup(self):
        """
        A request whose sent-by has a host and a port is sent as it is,
        without looking up the local address.
        """
        sip = self.makeTransport([("udp", "0.0.0.0", 5090)])
        looked = []
        sip._localHostFor = looked.append
        via = "SIP/2.0/UDP 192.0.2.10:5090;branch=z9hG4bKw;rport"
        self.assertIsNone(sip.send(outgoingRequest(via=via), Target("udp", "203.0.113.5")))
        data = self.udpWritten()[0][0]
        self.assertEqual(parseMessage(data).headers.get("Via"), via)
        self.assertEqual(looked, [])

    def test_wrongDestinationKind(self):
        """
        A response to a Target or a request to a Source is refused.
        """
        request, source = self.receivedRequest("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKx1", CLIENT)
        self.failureResultOf(self.sip.send(request, source), TransportFailure)
        self.failureResultOf(
            self.sip.send(makeResponse(request, 200), Target("udp", "198.51.100.7")), TransportFailure
        )


class StreamTests(TransportTestMixin, unittest.TestCase):
    """
    Receiving and answering over TCP.
    """

    def test_requestAndResponseSameConnection(self):
        """
        A request is handed up with the connection in its L{Source}; the
        response goes back on that connection.
        """
        protocol, transport = self.connectInbound()
        protocol.dataReceived(rawRequest(via="SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKt"))
        [(request, source)] = self.receiver.received
        self.assertEqual(source, Source("tcp", "198.51.100.7", 40000, protocol))
        self.assertIs(source.connection, protocol)
        # received is not needed (same host), and there is no rport.
        self.assertEqual(topVia(request).param("received"), None)
        self.successResultOf(self.sip.send(makeResponse(request, 202), source))
        self.assertEqual(parseMessage(transport.value()).code, 202)

    def test_oneByteAtATime(self):
        """
        A request split into single bytes is framed into one message.
        """
        protocol, _ = self.connectInbound()
        raw = rawRequest(body="h\u00e9llo \u263a".encode("utf-8"))
        for i in range(len(raw)):
            protocol.dataReceived(raw[i:i + 1])
        [(request, _)] = self.receiver.received
        self.assertEqual(request.body, "h\u00e9llo \u263a".encode("utf-8"))

    def test_severalInOneChunk(self):
        """
        Several messages in one read are all handed up, in order.
        """
        protocol, _ = self.connectInbound()
        protocol.dataReceived(
            rawRequest(body=b"one") + b"\r\n\r\n" + rawRequest(body=b"two") + rawRequest(body=b"three")
        )
        self.assertEqual([m.body for m, _ in self.receiver.received], [b"one", b"two", b"three"])

    def test_bufferBounded(self):
        """
        Keep-alives and delivered messages do not accumulate in the
        connection's buffer; only the unfinished message stays.
        """
        protocol, _ = self.connectInbound()
        for _ in range(1000):
            protocol.dataReceived(b"\r\n")
        partial = rawRequest()[:40]
        protocol.dataReceived(rawRequest() + b"\r\n\r\n" + partial)
        self.assertEqual(len(self.receiver.received), 1)
        self.assertEqual(bytes(protocol._pending), partial)

    def test_keepAlivePong(self):
        """
        A CRLFCRLF ping is answered with a CRLF pong (RFC 5626 3.5.1).
        """
        protocol, transport = self.connectInbound()
        protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(transport.value(), b"\r\n")
        self.assertFalse(transport.disconnecting)

    def test_oversizeAnsweredAndClosed(self):
        """
        A message over maxMessageSize gets 513 and the connection is closed.
        """
        self.makeTransport([("tcp", "192.0.2.13", 5060)], maxMessageSize=400)
        protocol, transport = self.connectInbound()
        protocol.dataReceived(rawRequest(body=b"x" * 500))
        self.assertEqual(parseMessage(transport.value()).code, 513)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.receiver.received, [])

    def test_missingContentLength(self):
        """
        A stream message without Content-Length gets 400 and the connection
        is closed.
        """
        protocol, transport = self.connectInbound()
        protocol.dataReceived(rawRequest(contentLength=False))
        response = parseMessage(transport.value())
        self.assertEqual(response.code, 400)
        self.assertIn("Content-Length", response.reason)
        self.assertTrue(transport.disconnecting)

    def test_goodMessageBeforeBadOne(self):
        """
        A good message in the same read as an unframeable one is still
        handed up before the 400 and the close.
        """
        protocol, transport = self.connectInbound()
        protocol.dataReceived(rawRequest(body=b"good") + rawRequest(contentLength=False, method="OPTIONS"))
        self.assertEqual([m.body for m, _ in self.receiver.received], [b"good"])
        response = parseMessage(transport.value())
        self.assertEqual((response.code, response.headers.get("CSeq")), (400, "1 OPTIONS"))
        self.assertTrue(transport.disconnecting)

    def test_unframeableGarbageClosed(self):
        """
        A header section over maxMessageSize with no end closes the
        connection without an answer.
        """
        self.makeTransport([("tcp", "192.0.2.13", 5060)], maxMessageSize=300)
        protocol, transport = self.connectInbound()
        protocol.dataReceived(b"x" * 400)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_missingViaOnStream(self):
        """
        A stream request without Via is answered 400 on its connection.
        """
        protocol, transport = self.connectInbound()
        raw = rawRequest().replace(b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKx1\r\n", b"")
        protocol.dataReceived(raw)
        response = parseMessage(transport.value())
        self.assertEqual(response.code, 400)
        self.assertIn("Via", response.reason)
        self.assertEqual(self.receiver.received, [])

    def test_parseErrorKeepsConnection(self):
        """
        A framed but unparseable request gets 400 and the connection stays.
        """
        protocol, transport = self.connectInbound()
        protocol.dataReceived(rawRequest(extra="Oops\r\n"))
        self.assertEqual(parseMessage(transport.value()).code, 400)
        self.assertFalse(transport.disconnecting)

    def test_maxConnections(self):
        """
        Inbound connections beyond maxConnections are refused.
        """
        self.makeTransport([("tcp", "192.0.2.13", 5060)], maxConnections=1)
        self.connectInbound()
        addr = IPv4Address("TCP", "198.51.100.8", 40001)
        self.assertIsNone(self.tcpFactory().buildProtocol(addr))

    def test_idleInboundClosed(self):
        """
        An inbound connection without traffic is closed after idleTimeout;
        traffic postpones it.
        """
        protocol, transport = self.connectInbound()
        self.reactor.advance(200)
        protocol.dataReceived(b"\r\n")
        self.reactor.advance(200)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(100)
        self.assertTrue(transport.disconnecting)

    def test_connectionLostCleansUp(self):
        """
        A lost connection leaves no entry and no timer behind.
        """
        protocol, _ = self.connectInbound()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.sip._connections, {})
        self.assertEqual(self.sip._streams, set())
        self.assertEqual(self.sip._inboundCount, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class NoDelayTests(TransportTestMixin, unittest.TestCase):
    """
    Every SIP stream connection, inbound and outbound, turns Nagle's
    algorithm off (L{xmppgw.nodelay}).
    """

    def test_inbound(self):
        _, transport = self.connectInbound(transportClass=NoDelayTransport)
        self.assertIs(True, transport.noDelay)

    def test_outbound(self):
        d = self.sip.send(
            outgoingRequest("SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKo;rport"),
            Target("tcp", "203.0.113.5", 5060))
        _, transport, _ = self.connectOutbound(transportClass=NoDelayTransport)
        self.successResultOf(d)
        self.assertIs(True, transport.noDelay)


class OutboundStreamTests(TransportTestMixin, unittest.TestCase):
    """
    Outbound TCP/TLS connections.
    """

    target = Target("tcp", "203.0.113.5", 5060)

    def test_connectQueueAndSend(self):
        """
        A request to a new destination opens a connection (with the connect
        timeout) and is written once it is up.
        """
        sip = self.makeTransport(self.listen, connectTimeout=7)
        d = sip.send(outgoingRequest("SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKo;rport"), self.target)
        self.assertNoResult(d)
        host, port, _factory, timeout, _ = self.reactor.tcpClients[-1]
        self.assertEqual((host, port, timeout), ("203.0.113.5", 5060, 7))
        _protocol, transport, _ = self.connectOutbound()
        self.successResultOf(d)
        self.assertEqual(parseMessage(transport.value()).method, "MESSAGE")

    def test_connectionReused(self):
        """
        A second request to the same destination uses the same connection.
        """
        self.sip.send(outgoingRequest(), self.target).addErrback(ignore)
        self.connectOutbound()
        d = self.sip.send(outgoingRequest(), self.target)
        self.successResultOf(d)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_queueWhileConnecting(self):
        """
        Requests sent while connecting are queued on one connection attempt,
        up to maxQueuedMessages.
        """
        sip = self.makeTransport(self.listen, maxQueuedMessages=2)
        d1 = sip.send(outgoingRequest(), self.target)
        d2 = sip.send(outgoingRequest(), self.target)
        d3 = sip.send(outgoingRequest(), self.target)
        self.failureResultOf(d3, TransportFailure)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        _, transport, _ = self.connectOutbound()
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.assertEqual(transport.value().count(b"MESSAGE sip:"), 2)

    def test_inboundConnectionReused(self):
        """
        A request to the address of an open inbound connection goes out on
        it.
        """
        _, transport = self.connectInbound(peer=("203.0.113.5", 5060))
        self.successResultOf(self.sip.send(outgoingRequest(), self.target))
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(parseMessage(transport.value()).method, "MESSAGE")

    def test_connectFailed(self):
        """
        A failed connection attempt fails the queued sends with
        L{TransportFailure}; the next send tries again.
        """
        d = self.sip.send(outgoingRequest(), self.target)
        factory = self.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        f = self.failureResultOf(d, TransportFailure)
        self.assertIn("refused", str(f.value).lower())
        self.assertEqual(self.sip._connections, {})
        self.sip.send(outgoingRequest(), self.target).addErrback(ignore)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_hostNameConnection(self):
        """
        A host name is passed to connectTCP (which resolves it), and the
        connection is reused for the name and for its address.
        """
        target = Target("tcp", "sip.example.net", 5060)
        self.sip.send(outgoingRequest(), target).addErrback(ignore)
        self.assertEqual(self.reactor.tcpClients[-1][0], "sip.example.net")
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(
            StringTransport(
                hostAddress=IPv4Address("TCP", "192.0.2.10", 50000),
                peerAddress=IPv4Address("TCP", "203.0.113.7", 5060),
            )
        )
        self.successResultOf(self.sip.send(outgoingRequest(), target))
        self.successResultOf(self.sip.send(outgoingRequest(), Target("tcp", "203.0.113.7", 5060)))
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_oneIdleTimer(self):
        """
        The idle timers of every TCP/TLS connection are one timer in the
        reactor (L{xmppgw.idle}); C{idleTimeout} is the watch's, and a
        change to it applies to the connections already open.
        """
        sip = self.makeTransport(self.listen, idleTimeout=30)
        before = len(self.reactor.getDelayedCalls())
        connections = [self.connectInbound(peer=("198.51.100.7", 40000 + k),
                                           factory=self.tcpFactory())
                       for k in range(5)]
        self.assertEqual(len(sip._idleWatch), 5)
        self.assertEqual(len(self.reactor.getDelayedCalls()), before + 1)
        sip.idleTimeout = 60
        self.reactor.advance(30)
        self.assertFalse(any(t.disconnecting for _, t in connections))
        self.reactor.advance(30)
        self.assertTrue(all(t.disconnecting for _, t in connections))

    def test_idleOutboundClosed(self):
        """
        An outbound connection is closed after idleTimeout without traffic,
        and a later request opens a new one.
        """
        sip = self.makeTransport(self.listen, idleTimeout=30)
        sip.send(outgoingRequest(), self.target).addErrback(ignore)
        protocol, transport, _ = self.connectOutbound()
        self.reactor.advance(29)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        sip.send(outgoingRequest(), self.target).addErrback(ignore)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_connectionLostWhileConnecting(self):
        """
        Closing while still connecting fails the queue, and the counters go
        back to zero.
        """
        d = self.sip.send(outgoingRequest(), self.target)
        factory = self.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(None, Failure(ConnectionDone()))
        self.failureResultOf(d, TransportFailure)
        self.assertEqual(self.sip._outboundCount, 0)
        self.assertEqual(self.sip._streams, set())

    def test_maxOutbound(self):
        """
        Outbound connections are bounded by maxConnections.
        """
        sip = self.makeTransport(self.listen, maxConnections=1)
        sip.send(outgoingRequest(), self.target).addErrback(ignore)
        d = sip.send(outgoingRequest(), Target("tcp", "203.0.113.6"))
        self.failureResultOf(d, TransportFailure)

    def test_wildcardSentByFromConnection(self):
        """
        When listening on 0.0.0.0, the Via host of a request is the local
        address of the connection it is written on.
        """
        sip = self.makeTransport([("tcp", "0.0.0.0", 5060)])
        request = outgoingRequest("SIP/2.0/TCP 0.0.0.0:5060;branch=z9hG4bKw;rport")
        sip.send(request, self.target).addErrback(ignore)
        _, transport, _ = self.connectOutbound(local=("192.0.2.77", 50999))
        self.assertEqual(
            parseMessage(transport.value()).headers.get("Via"),
            "SIP/2.0/TCP 192.0.2.77:5060;branch=z9hG4bKw;rport",
        )

    def test_responseAfterConnectionClosed(self):
        """
        If the request's connection has closed, the response goes over a new
        connection to the Via address (RFC 3261 18.2.2).
        """
        protocol, _ = self.connectInbound()
        protocol.dataReceived(rawRequest(via="SIP/2.0/TCP client.example.org:5070;branch=z9hG4bKt"))
        request, source = self.receiver.received[-1]
        protocol.connectionLost(Failure(ConnectionDone()))
        d = self.sip.send(makeResponse(request, 200), source)
        host, port = self.reactor.tcpClients[-1][:2]
        self.assertEqual((host, port), ("198.51.100.7", 5070))
        _, transport, _ = self.connectOutbound()
        self.successResultOf(d)
        self.assertEqual(parseMessage(transport.value()).code, 200)

    def test_tlsConnect(self):
        """
        A TLS target is reached with connectSSL and the client TLS options
        for its host name.
        """
        options = object()
        asked = []
        sip = self.makeTransport(
            [("tls", "192.0.2.10", 5061)],
            tlsContextFactory=object(),
            tlsClientOptions=lambda host: asked.append(host) or options,
        )
        sip.send(outgoingRequest(), Target("tls", "sip.example.net")).addErrback(ignore)
        host, port, _factory, ctx, _timeout, _ = self.reactor.sslClients[-1]
        self.assertEqual((host, port, ctx), ("sip.example.net", 5061, options))
        self.assertEqual(asked, ["sip.example.net"])

    def test_stopClosesConnecting(self):
        """
        Stopping the service abandons connection attempts in progress and
        fails what was queued on them.
        """
        d = self.sip.send(outgoingRequest(), self.target)
        self.sip.stopService()
        self.assertTrue(self.reactor.connectors[-1]._disconnected)
        self.failureResultOf(d, TransportFailure)
        self.assertEqual(self.sip._connections, {})


class TransactionIntegrationTests(TransportTestMixin, unittest.TestCase):
    """
    L{SIPTransport} and L{TransactionLayer} together.
    """

    def setUp(self):
        TransportTestMixin.setUp(self)
        self.layer = TransactionLayer(self.reactor, self.sip)
        self.sip.receiver = self.layer
        self.requests = []

        def handler(request, txn):
            self.requests.append(request)
            txn.respond(makeResponse(request, 202))

        self.layer.requestHandler = handler

    def test_udpRetransmissionAbsorbed(self):
        """
        A request and its retransmission from behind a NAT get one handler
        call and two identical 202s to the NAT address.
        """
        raw = rawRequest(via="SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKnat")
        self.udpProtocol().datagramReceived(raw, ("203.0.113.9", 40123))
        self.udpProtocol().datagramReceived(raw, ("203.0.113.9", 40123))
        self.assertEqual(len(self.requests), 1)
        written = self.udpWritten()
        self.assertEqual([addr for _, addr in written], [("203.0.113.9", 40123)] * 2)
        self.assertEqual(written[0][0], written[1][0])
        response = parseMessage(written[0][0])
        self.assertEqual(response.code, 202)
        self.assertEqual(
            response.headers.get("Via"),
            "SIP/2.0/UDP 10.0.0.5:5060;rport=40123;branch=z9hG4bKnat;received=203.0.113.9",
        )

    def test_clientTransactionOverUDP(self):
        """
        A client transaction goes out with our Via and completes with the
        response received on the socket.
        """
        request = outgoingRequest()
        request.headers.remove("Via")
        d = self.layer.sendRequest(request, Target("udp", "203.0.113.5"))
        [(data, addr)] = self.udpWritten()
        sent = parseMessage(data)
        via = topVia(sent)
        self.assertEqual((via.host, via.port, via.transport), ("192.0.2.10", 5060, "UDP"))
        response = makeResponse(sent, 200)
        self.udpProtocol().datagramReceived(serialize(response), ("203.0.113.5", 5060))
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_tcpConnectFailureFailsTransaction(self):
        """
        A refused TCP connection fails the client transaction with
        L{TransportFailure} at once.
        """
        request = outgoingRequest()
        request.headers.remove("Via")
        d = self.layer.sendRequest(request, Target("tcp", "203.0.113.5"))
        self.reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.failureResultOf(d, TransportFailure)
        self.assertEqual(self.layer._clients, {})

