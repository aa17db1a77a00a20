"""
Property-based fuzzing (hypothesis) of everything that reads input from the
network: the SIP parser, the stream framer, the transport's datagram and
stream paths, the address mapping, and the router's SIP and XMPP handlers.

The properties: no unhandled exception, ever; bad input gets a 4xx/5xx (SIP)
or a stanza error (XMPP), never a crash and never a success. Each test is
bounded in examples (C{max_examples}) and runs without deadlines, so the
whole module takes a few seconds. Longer campaigns: set
C{XMPPGW_FUZZ_EXAMPLES} (for example 20000) in the environment; see
C{docs/security.rst} for the figures of the last long run.
"""

import os

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.words.xish import domish

from xmppgw.addressing import AddressError, AddressMapper
from xmppgw.policy import Policy
from xmppgw.router import GatewayHandler, MessageRouter, RouterSettings
from xmppgw.safexml import hardenParser
from xmppgw.sip.message import FramingError, SIPParseError, StreamFramer, parseMessage, serialize

from tests.test_router import FakeLink, FakeServerTransaction, FakeTransactionLayer
from tests.test_sip_transport import TransportTestMixin

EXAMPLES = int(os.environ.get("XMPPGW_FUZZ_EXAMPLES", "200"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
    database=None,
    # CI runs a fixed sequence of examples, so a submission's CI result does
    # not depend on the draw; elsewhere every run explores new inputs (the
    # catastrophic-backtracking bugs fixed in xmppgw/sip/uri.py were found
    # that way).
    derandomize=bool(os.environ.get("CI")),
)

GW = "gw.example"

# -- strategies ----------------------------------------------------------------

_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
_NASTY = st.sampled_from([
    "", " ", "\x00", "\r", "\n", "\r\n", ":", ";", ",", "<", ">", "@", "*", "%",
    "%zz", "%00", "\\", '"', "[", "]", "[::1", "é", "\ud7ff", "\U0001f600",
    "sip:", "sips:", "tel:+1", "z9hG4bK", "0", "-1", "99999999999999999999",
    "SIP/2.0", "SIP/3.0", ";tag=", "\t", "=", "&", "'", "/",
])
_TEXT = st.lists(
    st.one_of(_NASTY, st.text(alphabet=_TOKEN_CHARS, max_size=12),
              st.text(max_size=6)),
    max_size=6).map("".join)

_METHODS = st.sampled_from(["MESSAGE", "OPTIONS", "INVITE", "ACK", "BYE",
                            "CANCEL", "INFO", "FOO", "message", ""])
_HEADER_NAMES = st.sampled_from([
    "Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Max-Forwards",
    "Content-Type", "c", "Content-Length", "l", "Require", "Subject",
    "Content-Language", "Content-Encoding", "X-Junk", "",
])


@st.composite
def sipRequests(draw):
    """
    Requests built from plausible and broken parts: start line, a random
    selection of headers with nasty values, a body, a Content-Length that
    may lie.
    """
    method = draw(_METHODS)
    uri = draw(st.one_of(
        st.just("sip:alice*xmpp.example@gw.example"),
        st.just("sip:alice@gw.example"),
        _TEXT.map(lambda t: "sip:" + t),
        _TEXT))
    version = draw(st.sampled_from(["SIP/2.0", "SIP/2.0", "SIP/1.0", "sip/2.0", ""]))
    lines = [f"{method} {uri} {version}"]
    good = {
        "Via": "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK" + draw(st.text(
            alphabet="abc123", min_size=1, max_size=6)),
        "From": "<sip:bob@sip.example>;tag=1",
        "To": "<sip:alice*xmpp.example@gw.example>",
        "Call-ID": "c1@192.0.2.1",
        "CSeq": f"1 {method}",
        "Max-Forwards": "70",
        "Content-Type": "text/plain;charset=UTF-8",
    }
    for name, value in good.items():
        if draw(st.booleans()) or draw(st.booleans()):
            if draw(st.integers(0, 4)) == 0:
                value = draw(_TEXT)
            lines.append(f"{name}: {value}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append(f"{draw(_HEADER_NAMES)}: {draw(_TEXT)}")
    body = draw(st.one_of(st.binary(max_size=64), _TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))))
    length = draw(st.one_of(st.just(len(body)), st.integers(-2, 200), st.none()))
    if length is not None:
        lines.append(f"Content-Length: {length}")
    head = "\r\n".join(lines).encode("utf-8", "surrogatepass")
    return head + b"\r\n\r\n" + body


_BYTES = st.one_of(sipRequests(), st.binary(max_size=300))


def _router():
    clock = Clock()
    sip = FakeTransactionLayer()
    link = FakeLink()
    mapper = AddressMapper(separator="*", gatewayDomain=GW, xmppDomain=GW, gwmap={})
    settings_ = RouterSettings(xmppDomain=GW, holdTimeout=8.0, holdLimit=2,
                               queueLimit=2, logMessages=False)
    router = MessageRouter(clock, mapper, sip, link, settings_)
    router.policy = Policy(clock, allowFrom=None, refusedSIPDomains=[GW],
                           ratePerSender=1000, ratePerSenderBurst=1000)
    return router, sip, link


class SIPParserFuzzTests(unittest.TestCase):
    """
    L{parseMessage} and L{StreamFramer} on arbitrary bytes.
    """

    @FUZZ
    @given(_BYTES)
    def test_parseMessage(self, data):
        """
        C{parseMessage} returns a message or raises L{SIPParseError}, and
        what it returns serialises again.
        """
        try:
            message = parseMessage(data)
        except SIPParseError:
            return
        self.assertIsInstance(serialize(message), bytes)

    @FUZZ
    @given(st.lists(_BYTES, min_size=1, max_size=4), st.data())
    def test_framerAnySplit(self, messages, data):
        """
        The framer, fed any split of any bytes, returns bytes or raises
        L{FramingError}; its buffer never exceeds the limit by more than a
        read.
        """
        stream = b"".join(messages)
        framer = StreamFramer(512)
        position = 0
        try:
            while position < len(stream):
                step = data.draw(st.integers(1, 64))
                for frame in framer.feed(stream[position:position + step]):
                    self.assertIsInstance(frame, bytes)
                    self.assertLessEqual(len(frame), 512)
                position += step
        except FramingError:
            pass


class TransportFuzzTests(TransportTestMixin, unittest.TestCase):
    """
    The SIP transport's inbound paths on arbitrary bytes.
    """

    def setUp(self):
        TransportTestMixin.setUp(self)
        self.sip.allowFrom = None

    @FUZZ
    @given(_BYTES)
    def test_datagram(self, data):
        """
        A datagram either goes up as a parsed message or is answered with
        an error status or dropped; the transport never raises.
        """
        protocol = self.udpProtocol()
        before = len(self.udpWritten())
        up = len(self.receiver.received)
        protocol.datagramReceived(data, ("192.0.2.1", 5060))
        for answer, _addr in self.udpWritten()[before:]:
            status = int(answer.split(b" ", 2)[1])
            self.assertGreaterEqual(status, 400)
        self.assertLessEqual(len(self.receiver.received) - up, 1)

    @FUZZ
    @given(_BYTES, st.integers(1, 40))
    def test_stream(self, data, step):
        """
        Bytes on a TCP connection in chunks of any size: no exception; the
        connection's buffers stay bounded.
        """
        protocol = self.tcpFactory().buildProtocol(IPv4Address("TCP", "192.0.2.1", 4000))
        transport = StringTransport(hostAddress=IPv4Address("TCP", "192.0.2.10", 5060),
                                    peerAddress=IPv4Address("TCP", "192.0.2.1", 4000))
        protocol.makeConnection(transport)
        for i in range(0, len(data), step):
            if transport.disconnecting:
                break
            protocol.dataReceived(data[i:i + step])
            self.assertLessEqual(len(protocol._pending), self.sip.maxMessageSize + step)
        protocol.connectionLost(None)


class AddressFuzzTests(unittest.TestCase):
    """
    The address mapping on arbitrary text.
    """

    mappers = [
        AddressMapper(separator="*", gatewayDomain=GW, xmppDomain=GW, gwmap={}),
        AddressMapper(separator="*", gatewayDomain=GW, xmppDomain="xmpp.example",
                      gwmap={"sip.example": "xmpp.example"}),
    ]

    @FUZZ
    @given(st.one_of(_TEXT, _TEXT.map(lambda t: "sip:" + t),
                     _TEXT.map(lambda t: f"sip:{t}@{GW}"),
                     _TEXT.map(lambda t: f"{t}@{GW}")))
    def test_mapping(self, text):
        """
        Every mapping function returns text or raises L{AddressError}.
        """
        for mapper in self.mappers:
            for function in (mapper.sipTargetToJID, mapper.sipSenderToJID,
                             mapper.jidTargetToSIP, mapper.jidSenderToSIP):
                try:
                    result = function(text)
                except AddressError:
                    continue
                self.assertIsInstance(result, str)


class RouterFuzzTests(unittest.TestCase):
    """
    The router's SIP and XMPP handlers on arbitrary input.
    """

    @FUZZ
    @given(sipRequests())
    def test_sipRequest(self, data):
        """
        Every parseable request gets exactly one final answer (none for
        ACK): a 2xx only when a stanza went out, otherwise 4xx or 5xx.
        """
        try:
            request = parseMessage(data)
        except SIPParseError:
            return
        if not request.isRequest:
            return
        router, sip, link = _router()
        transaction = FakeServerTransaction()
        router.sipRequestReceived(request, transaction)
        if request.method == "ACK":
            self.assertEqual(transaction.responses, [])
            return
        codes = [r.code for r in transaction.responses]
        self.assertEqual(len(codes), 1, codes)
        if 200 <= codes[0] < 300:
            self.assertTrue(request.method == "OPTIONS" or len(link.sent) == 1)
        else:
            self.assertGreaterEqual(codes[0], 400)
            self.assertEqual(link.sent, [])

    @FUZZ
    @given(
        st.one_of(_TEXT, st.just("alice@xmpp.example/r"), st.none()),
        st.one_of(_TEXT, st.just("bob*sip.example@gw.example"),
                  _TEXT.map(lambda t: f"{t}@gw.example"), st.none()),
        st.one_of(st.none(), _TEXT),
        st.sampled_from([None, "chat", "normal", "error", "headline", "groupchat", "bogus"]),
        st.one_of(st.none(), _TEXT),
    )
    def test_xmppMessage(self, sender, to, body, type_, subject):
        """
        A stanza with any attributes and content through the handler: no
        exception escapes; the XMPP side only ever gets error stanzas, never
        in answer to an error; a SIP request goes out only for a message
        with a body.
        """
        router, sip, link = _router()
        handler = GatewayHandler(router, GW)
        stanza = domish.Element((None, "message"))
        for name, value in (("from", sender), ("to", to), ("type", type_)):
            if value is not None:
                stanza[name] = value
        if body is not None:
            stanza.addElement("body", content=body)
        if subject is not None:
            stanza.addElement("subject", content=subject)
        stanza.handled = False
        handler._onMessage(stanza)
        for sent in link.sent:
            self.assertEqual(sent.getAttribute("type"), "error")
            self.assertNotEqual(type_, "error")
        if sip.sent:
            self.assertIsNotNone(body)

    @FUZZ
    @given(st.binary(max_size=400), st.integers(1, 50))
    def test_xmlStream(self, data, step):
        """
        The hardened XML parser on arbitrary bytes in any chunks: elements
        or L{domish.ParserError}, nothing else.
        """
        stream = hardenParser(domish.elementStream(), 10000)
        stream.DocumentStartEvent = lambda e: None
        stream.ElementEvent = lambda e: e.toXml()
        stream.DocumentEndEvent = lambda: None
        try:
            stream.parse(b"<stream>")
            for i in range(0, len(data), step):
                stream.parse(data[i:i + step])
        except domish.ParserError:
            pass
