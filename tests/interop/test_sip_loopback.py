"""
A small live tier for L{xmppgw.sip.transport}: a real L{SIPTransport} and
L{TransactionLayer} on 127.0.0.1 (ports chosen by the OS) with the real
reactor, talked to with hand-written SIP bytes.
"""

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.trial import unittest

from xmppgw.sip.message import Headers, Request, StreamFramer, makeResponse, parseMessage, serialize
from xmppgw.sip.transaction import Target, TransactionLayer
from xmppgw.sip.transport import SIPTransport
from xmppgw.sockio import STREAM_READ_SIZE, ReceiveIntoPort

TIMEOUT = 5


def rawRequest(transport, port, branch, body=b"hello"):
    return (
        "MESSAGE sip:bob@gw.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/%s 127.0.0.1:%d;rport;branch=%s\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.org>;tag=1\r\n"
        "To: <sip:bob@gw.example.com>\r\n"
        "Call-ID: %s@example.org\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Length: %d\r\n"
        "\r\n" % (transport, port, branch, branch, len(body))
    ).encode("ascii") + body


class UDPPeer(DatagramProtocol):
    """
    Collects the datagrams it receives; C{nextDatagram} waits for one.
    """

    def __init__(self):
        self.received = []
        self.waiting = []

    def datagramReceived(self, data, addr):
        if self.waiting:
            self.waiting.pop(0).callback((data, addr))
        else:
            self.received.append((data, addr))

    def nextDatagram(self):
        if self.received:
            d = Deferred()
            d.callback(self.received.pop(0))
            return d
        d = Deferred()
        self.waiting.append(d)
        return d.addTimeout(TIMEOUT, reactor)


class StreamPeer(Protocol):
    """
    Frames what it receives; C{nextMessage} waits for one message;
    C{lost} fires when the connection closes.
    """

    def __init__(self, answer=None):
        self.framer = StreamFramer(65535)
        self.messages = []
        self.waiting = []
        self.lost = Deferred()
        self.answer = answer

    def dataReceived(self, data):
        for raw in self.framer.feed(data):
            if self.answer is not None:
                self.transport.write(self.answer(parseMessage(raw)))
            if self.waiting:
                self.waiting.pop(0).callback(raw)
            else:
                self.messages.append(raw)

    def nextMessage(self):
        d = Deferred()
        if self.messages:
            d.callback(self.messages.pop(0))
            return d
        self.waiting.append(d)
        return d.addTimeout(TIMEOUT, reactor)

    def connectionLost(self, reason):
        self.lost.callback(None)


class LoopbackTests(unittest.TestCase):
    """
    Round trips over real loopback sockets.
    """

    timeout = 20

    def setUp(self):
        self.sip = SIPTransport(
            [("udp", "127.0.0.1", 0), ("tcp", "127.0.0.1", 0)], reactor=reactor, idleTimeout=10
        )
        self.layer = TransactionLayer(reactor, self.sip)
        self.sip.receiver = self.layer
        self.requests = []

        def handler(request, txn):
            self.requests.append(request)
            txn.respond(makeResponse(request, 202))

        self.layer.requestHandler = handler
        self.sip.privilegedStartService()
        self.sip.startService()
        self.addCleanup(self.sip.stopService)
        self.addCleanup(self.layer.stop)
        self.ports = {proto: port for proto, _host, port in self.sip.localAddresses()}

    @inlineCallbacks
    def test_udpRoundTrip(self):
        """
        A MESSAGE over UDP gets a 202 back at the source port, with rport
        and received filled in; its retransmission gets the same 202 and the
        handler runs once.
        """
        peer = UDPPeer()
        port = reactor.listenUDP(0, peer, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        peerPort = port.getHost().port
        raw = rawRequest("UDP", 5999, "z9hG4bKloopudp")
        port.write(raw, ("127.0.0.1", self.ports["udp"]))
        data, addr = yield peer.nextDatagram()
        self.assertEqual(addr, ("127.0.0.1", self.ports["udp"]))
        response = parseMessage(data)
        self.assertEqual(response.code, 202)
        self.assertEqual(
            response.headers.get("Via"),
            "SIP/2.0/UDP 127.0.0.1:5999;rport=%d;branch=z9hG4bKloopudp;received=127.0.0.1" % (peerPort,),
        )
        port.write(raw, ("127.0.0.1", self.ports["udp"]))
        again, _ = yield peer.nextDatagram()
        self.assertEqual(again, data)
        self.assertEqual(len(self.requests), 1)
        self.assertEqual(self.requests[0].body, b"hello")

    @inlineCallbacks
    def test_udpReceiveBuffer(self):
        """
        The UDP listener reads into one buffer of its own
        (L{ReceiveIntoPort}): datagrams sent back to back, a large one among
        them, each reach the transaction layer whole, with its own bytes.
        """
        listener = [l for l in self.sip._listeners if l.proto == "udp"][0]
        self.assertIs(ReceiveIntoPort, type(listener.listeningPort))
        peer = UDPPeer()
        port = reactor.listenUDP(0, peer, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        bodies = [b"first", b"x" * 30000, b"third"]
        for n, body in enumerate(bodies):
            port.write(rawRequest("UDP", 5999, "z9hG4bKbuf%d" % (n,), body),
                       ("127.0.0.1", self.ports["udp"]))
        for _ in bodies:
            data, _ = yield peer.nextDatagram()
            self.assertEqual(202, parseMessage(data).code)
        self.assertEqual(bodies, [r.body for r in self.requests])

    @inlineCallbacks
    def test_tcpLargeMessage(self):
        """
        The gateway reads a TCP connection at most L{STREAM_READ_SIZE} bytes
        at a time; a MESSAGE several times that size arrives whole.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.ports["tcp"], timeout=TIMEOUT)
        peer = yield connectProtocol(endpoint, StreamPeer())
        body = bytes(range(256)) * 160
        peer.transport.write(rawRequest("TCP", 5999, "z9hG4bKbig", body))
        raw = yield peer.nextMessage()
        self.assertEqual(202, parseMessage(raw).code)
        self.assertEqual([body], [r.body for r in self.requests])
        self.assertEqual([STREAM_READ_SIZE],
                         [p.transport.bufferSize for p in self.sip._streams])
        peer.transport.loseConnection()
        yield peer.lost

    @inlineCallbacks
    def test_tcpRoundTrip(self):
        """
        A MESSAGE over TCP gets its 202 on the same connection.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.ports["tcp"], timeout=TIMEOUT)
        peer = yield connectProtocol(endpoint, StreamPeer())
        peer.transport.write(rawRequest("TCP", 5999, "z9hG4bKlooptcp"))
        raw = yield peer.nextMessage()
        response = parseMessage(raw)
        self.assertEqual(response.code, 202)
        self.assertEqual(response.headers.get("CSeq"), "1 MESSAGE")
        self.assertEqual(len(self.requests), 1)
        peer.transport.loseConnection()
        yield peer.lost

    @inlineCallbacks
    def test_tcpClientTransaction(self):
        """
        A client transaction over TCP connects to a loopback SIP peer, sends
        the request with our Via and fires with the peer's final response.
        """
        peers = []

        def answer(request):
            return serialize(makeResponse(request, 200))

        def build():
            peers.append(StreamPeer(answer))
            return peers[-1]

        listening = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(build)
        )
        self.addCleanup(listening.stopListening)
        headers = Headers()
        headers.add("Max-Forwards", "70")
        headers.add("From", "<sip:juliet@gw.example.com>;tag=9")
        headers.add("To", "<sip:romeo@example.net>")
        headers.add("Call-ID", "loop-out@gw.example.com")
        headers.add("CSeq", "1 MESSAGE")
        request = Request("MESSAGE", "sip:romeo@example.net", headers, b"hi")
        target = Target("tcp", "127.0.0.1", listening.getHost().port)
        response = yield self.layer.sendRequest(request, target)
        self.assertEqual(response.code, 200)
        sent = parseMessage((yield peers[0].nextMessage()))
        self.assertEqual(sent.body, b"hi")
        via = sent.headers.get("Via")
        self.assertTrue(via.startswith("SIP/2.0/TCP 127.0.0.1:%d;branch=z9hG4bK" % (self.ports["tcp"],)), via)
        self.assertTrue(via.endswith(";rport"), via)
        self.assertEqual(response.headers.get("Via"), via)
        # Closing the gateway closes its connection; wait for the peer to see it.
        yield self.sip.stopService()
        yield peers[0].lost
