"""
Tests for L{xmppgw.router}: both directions with fakes for the SIP
transaction layer and the XMPP link, on a Clock.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.words.xish import domish

from xmppgw.addressing import AddressMapper
from xmppgw.router import GatewayHandler, MessageRouter, RouterSettings, targetForURI
from xmppgw.sip.message import Response, Headers, parseMessage
from xmppgw.sip.transaction import TransactionTimeout, TransportFailure
from xmppgw.sip.transport import Target
from xmppgw.xmpp.component import LinkDown

GW = "gw.example"


class FakeTransactionLayer:
    """
    Records client requests; each gets a Deferred the test fires.
    """

    def __init__(self):
        self.requestHandler = None
        self.sent = []

    def sendRequest(self, request, target, notify=None):
        # The test fires d; with notify (the router's way) the result goes
        # on to it, as the real layer would call it.
        d = defer.Deferred()
        self.sent.append((request, target, d))
        if notify is None:
            return d
        d.addBoth(notify)
        return None


class FakeServerTransaction:
    def __init__(self):
        self.responses = []

    def respond(self, response):
        self.responses.append(response)


class FakeLink:
    """
    The XMPP side as the component link behaves, confirmed at once: a
    stanza given to C{deliver} is sent and reported delivered while the
    link is authenticated; while it is not, it waits, in order, until
    L{comeUp}, unless withdrawn (its handle's C{cancel()}).
    """

    def __init__(self, authenticated=True):
        self.isAuthenticated = authenticated
        self.sent = []
        self.waiting = []

    def send(self, element):
        if not self.isAuthenticated:
            raise LinkDown()
        self.sent.append(element)

    def deliver(self, stanza, notify):
        entry = (stanza, notify)
        if self.isAuthenticated and not self.waiting:
            self.sent.append(stanza)
            notify(None)
            return None
        self.waiting.append(entry)
        return _Withdraw(self.waiting, entry)

    def comeUp(self):
        """
        The link is authenticated again: send what waits, in order.
        """
        self.isAuthenticated = True
        while self.waiting:
            stanza, notify = self.waiting.pop(0)
            self.sent.append(stanza)
            notify(None)


class _Withdraw:
    def __init__(self, waiting, entry):
        self.waiting = waiting
        self.entry = entry

    def cancel(self):
        if self.entry in self.waiting:
            self.waiting.remove(self.entry)


def sipMessage(
    uri="sip:alice*xmpp.example@gw.example",
    sender="sip:bob@sip.example",
    body="hello",
    contentType="text/plain",
    branch="z9hG4bK1",
    method="MESSAGE",
    extra="",
):
    raw = body.encode("utf-8")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <{sender}>;tag=ft1\r\n"
        f"To: <{uri}>\r\n"
        "Call-ID: call-1@192.0.2.1\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Content-Type: {contentType}\r\n"
        f"{extra}"
        f"Content-Length: {len(raw)}\r\n\r\n"
    )
    return parseMessage(text.encode("utf-8") + raw)


def xmppMessage(sender="alice@xmpp.example/phone", to="carol*sip.example@gw.example",
                body="hi", id="m1", type="chat"):
    el = domish.Element((None, "message"))
    el["from"] = sender
    el["to"] = to
    if id:
        el["id"] = id
    if type:
        el["type"] = type
    if body is not None:
        el.addElement("body", content=body)
    return el


def response(code, reason="Whatever"):
    return Response(code, reason, Headers())


class RouterTestsMixin:
    def setUp(self):
        self.clock = Clock()
        self.sip = FakeTransactionLayer()
        self.link = FakeLink()
        self.mapper = AddressMapper(
            separator="*", gatewayDomain=GW, xmppDomain=GW, gwmap={}
        )
        self.settings = RouterSettings(
            xmppDomain=GW, holdTimeout=8.0, holdLimit=2, queueLimit=2,
            logMessages=False,
        )
        self.router = MessageRouter(
            self.clock, self.mapper, self.sip, self.link, self.settings
        )


class SIPToXMPPTests(RouterTestsMixin, unittest.TestCase):
    """
    SIP MESSAGE -> XMPP message.
    """

    def receive(self, request):
        txn = FakeServerTransaction()
        self.sip.requestHandler(request, txn)
        return txn

    def test_registersHandler(self):
        """
        The router installs itself as the transaction layer's handler.
        """
        self.assertEqual(self.sip.requestHandler, self.router.sipRequestReceived)

    def test_relayed(self):
        """
        A mappable MESSAGE becomes a stanza and is answered 202.
        """
        txn = self.receive(sipMessage(body="héllo <&>"))
        self.assertEqual([202], [r.code for r in txn.responses])
        [stanza] = self.link.sent
        self.assertEqual("alice@xmpp.example", stanza["to"])
        self.assertEqual("bob*sip.example@gw.example", stanza["from"])
        self.assertEqual("héllo <&>", str(stanza.body))
        self.assertIsNone(stanza.getAttribute("type"))

    def test_stableStanzaID(self):
        """
        The stanza id is L{messages.stanzaIDFor} the request: a copy failed
        over by a proxy (a new branch) gets the same id, on another router
        too, and another request (a new CSeq) another id.
        """
        from xmppgw import messages
        first = sipMessage()
        self.receive(first)
        self.receive(sipMessage(branch="z9hG4bKfailover"))
        other = MessageRouter(self.clock, self.mapper, FakeTransactionLayer(),
                              self.link, self.settings)
        other.sipRequestReceived(sipMessage(branch="z9hG4bK3"),
                                 FakeServerTransaction())
        [a, b, c] = self.link.sent
        self.assertEqual(messages.stanzaIDFor(first), a["id"])
        self.assertEqual([a["id"]] * 3, [a["id"], b["id"], c["id"]])
        changed = first.headers.copy()
        changed.set("CSeq", "2 MESSAGE")
        self.receive(first.__class__("MESSAGE", first.uri, changed, first.body))
        self.assertNotEqual(a["id"], self.link.sent[3]["id"])

    def test_successCode200(self):
        """
        The success code follows the configuration.
        """
        self.router.settings = RouterSettings(xmppDomain=GW, successCode=200,
                                              logMessages=False)
        txn = self.receive(sipMessage())
        self.assertEqual([200], [r.code for r in txn.responses])

    def test_unmappableTarget(self):
        """
        A target without a separator gets 404 and nothing is sent.
        """
        txn = self.receive(sipMessage(uri="sip:alice@gw.example"))
        self.assertEqual([404], [r.code for r in txn.responses])
        self.assertEqual([], self.link.sent)

    def test_senderOutsideDomain(self):
        """
        With a gwmap, a sender whose domain does not map to the component
        domain is refused with 403 and never sent.
        """
        self.router.mapper = AddressMapper(
            separator="*", gatewayDomain=GW, xmppDomain=GW,
            gwmap={"sip.example": GW},
        )
        txn = self.receive(sipMessage(uri="sip:alice@xmpp.example",
                                      sender="sip:eve@elsewhere.example"))
        self.assertEqual([403], [r.code for r in txn.responses])
        self.assertEqual([], self.link.sent)

    def test_loopRefused(self):
        """
        A target that maps back to the gateway's own XMPP domain is refused.
        """
        txn = self.receive(sipMessage(uri="sip:x*gw.example@gw.example"))
        self.assertEqual([482], [r.code for r in txn.responses])
        self.assertEqual([], self.link.sent)

    def test_unsupportedType(self):
        """
        A text/html body gets 415 with Accept.
        """
        txn = self.receive(sipMessage(contentType="text/html"))
        [r] = txn.responses
        self.assertEqual(415, r.code)
        self.assertIn("text/plain", r.headers.get("Accept"))

    def test_options(self):
        """
        OPTIONS is answered 200 by the request policy.
        """
        txn = self.receive(sipMessage(method="OPTIONS", body=""))
        self.assertEqual([200], [r.code for r in txn.responses])
        self.assertEqual([], self.link.sent)

    def test_optionsLinkDown(self):
        """
        While the XMPP link is not authenticated OPTIONS gets 503 XMPP Link
        Down with Retry-After, and 200 again once the link is back.
        """
        self.link.isAuthenticated = False
        txn = self.receive(sipMessage(method="OPTIONS", body=""))
        [r] = txn.responses
        self.assertEqual((503, "XMPP Link Down", "5"),
                         (r.code, r.reason, r.headers.get("Retry-After")))
        self.assertEqual("1 OPTIONS", r.headers.get("CSeq"))
        self.link.isAuthenticated = True
        txn = self.receive(sipMessage(method="OPTIONS", body="",
                                      branch="z9hG4bK2"))
        self.assertEqual([200], [r.code for r in txn.responses])
        self.assertEqual([], self.link.sent)

    def test_optionsUnconfirmed(self):
        """
        While the link is authenticated but I{unconfirmed} (the XMPP server
        stopped confirming stanzas: hung) OPTIONS gets 503 XMPP Server Not
        Answering, and 200 again once it confirms.
        """
        self.link.unconfirmed = True
        txn = self.receive(sipMessage(method="OPTIONS", body=""))
        [r] = txn.responses
        self.assertEqual((503, "XMPP Server Not Answering", "5"),
                         (r.code, r.reason, r.headers.get("Retry-After")))
        self.link.unconfirmed = False
        txn = self.receive(sipMessage(method="OPTIONS", body="",
                                      branch="z9hG4bK2"))
        self.assertEqual([200], [r.code for r in txn.responses])

    def test_optionsClosing(self):
        """
        Once the gateway is shutting down OPTIONS gets 503 Gateway Shutting
        Down with Retry-After, though the link is up.
        """
        self.router.shutdown()
        txn = self.receive(sipMessage(method="OPTIONS", body=""))
        [r] = txn.responses
        self.assertEqual((503, "Gateway Shutting Down", "5"),
                         (r.code, r.reason, r.headers.get("Retry-After")))

    def test_optionsFollowLinkOff(self):
        """
        With optionsFollowLink false OPTIONS is answered 200 with Allow
        while the link is down and while shutting down.
        """
        self.router.settings = RouterSettings(
            xmppDomain=GW, logMessages=False, optionsFollowLink=False)
        self.link.isAuthenticated = False
        txn = self.receive(sipMessage(method="OPTIONS", body=""))
        [r] = txn.responses
        self.assertEqual(200, r.code)
        self.assertIn("MESSAGE", r.headers.get("Allow"))
        self.router.shutdown()
        txn = self.receive(sipMessage(method="OPTIONS", body="",
                                      branch="z9hG4bK2"))
        self.assertEqual([200], [r.code for r in txn.responses])

    def test_optionsRefusalFirst(self):
        """
        An OPTIONS the request policy refuses keeps that answer while the
        link is down (the 503 replaces only the 200).
        """
        self.link.isAuthenticated = False
        txn = self.receive(sipMessage(method="OPTIONS", body="",
                                      uri="sips:alice*xmpp.example@gw.example"))
        self.assertEqual([416], [r.code for r in txn.responses])

    def test_optionsCounted(self):
        """
        The 503 answer to OPTIONS is counted like the 200 it replaces.
        """
        self.link.isAuthenticated = False
        self.receive(sipMessage(method="OPTIONS", body=""))
        self.assertEqual(1, self.router.stats.get("sip.refused"))

    def test_heldUntilLinkUp(self):
        """
        While the link is down a MESSAGE is held unanswered, then relayed
        and answered when the link comes up.
        """
        self.link.isAuthenticated = False
        txn = self.receive(sipMessage())
        self.assertEqual([], txn.responses)
        self.clock.advance(5)
        self.link.comeUp()
        self.assertEqual([202], [r.code for r in txn.responses])
        self.assertEqual(1, len(self.link.sent))
        self.assertEqual({"sipHeld": 0, "xmppToSIP": 0, "destinations": 0},
                         self.router.queueDepths())

    def test_heldInOrder(self):
        """
        Held messages go out in arrival order, and a message arriving while
        others are held waits behind them.
        """
        self.link.isAuthenticated = False
        self.receive(sipMessage(body="one", branch="z9hG4bKa"))
        self.receive(sipMessage(body="two", branch="z9hG4bKb"))
        self.assertEqual(2, self.router.queueDepths()["sipHeld"])
        self.link.comeUp()
        self.assertEqual(["one", "two"], [str(s.body) for s in self.link.sent])

    def test_holdTimeout(self):
        """
        A held MESSAGE is answered 503 with Retry-After after holdTimeout and
        never sent later.
        """
        self.link.isAuthenticated = False
        txn = self.receive(sipMessage())
        self.clock.advance(8)
        [r] = txn.responses
        self.assertEqual(503, r.code)
        self.assertTrue(r.headers.get("Retry-After"))
        self.link.comeUp()
        self.assertEqual([], self.link.sent)
        self.assertEqual([503], [r.code for r in txn.responses])

    def test_holdLimit(self):
        """
        Past holdLimit a MESSAGE is answered 503 at once.
        """
        self.link.isAuthenticated = False
        self.receive(sipMessage(branch="z9hG4bKa"))
        self.receive(sipMessage(branch="z9hG4bKb"))
        txn = self.receive(sipMessage(branch="z9hG4bKc"))
        self.assertEqual([503], [r.code for r in txn.responses])


class XMPPToSIPTests(RouterTestsMixin, unittest.TestCase):
    """
    XMPP message -> SIP MESSAGE.
    """

    def test_sent(self):
        """
        A message with a body becomes a SIP MESSAGE to the mapped URI, sent
        to the URI's host over UDP.
        """
        self.router.xmppMessageReceived(xmppMessage(body="héllo"))
        [(request, target, d)] = self.sip.sent
        self.assertEqual("MESSAGE", request.method)
        self.assertEqual("sip:carol@sip.example", request.uri)
        self.assertEqual("héllo".encode("utf-8"), request.body)
        self.assertNotIn("Contact", request.headers)
        self.assertEqual(Target("udp", "sip.example", 5060), target)
        d.callback(response(200, "OK"))
        self.assertEqual([], self.link.sent)

    def test_outboundProxy(self):
        """
        With an outbound proxy every request goes there.
        """
        proxy = Target("tcp", "127.0.0.1", 5070)
        self.router.settings = RouterSettings(xmppDomain=GW, outboundProxy=proxy,
                                              logMessages=False)
        self.router.xmppMessageReceived(xmppMessage())
        self.assertEqual(proxy, self.sip.sent[0][1])

    def test_failureBounced(self):
        """
        A 404 comes back to the XMPP sender as item-not-found, id mirrored.
        """
        self.router.xmppMessageReceived(xmppMessage(id="abc"))
        self.sip.sent[0][2].callback(response(404, "Not Found"))
        [error] = self.link.sent
        self.assertEqual("error", error["type"])
        self.assertEqual("abc", error["id"])
        self.assertEqual("alice@xmpp.example/phone", error["to"])
        self.assertEqual("carol*sip.example@gw.example", error["from"])
        self.assertEqual("item-not-found", _condition(error))

    def test_timeoutBounced(self):
        """
        Timer F comes back as remote-server-timeout.
        """
        self.router.xmppMessageReceived(xmppMessage())
        self.sip.sent[0][2].errback(TransactionTimeout())
        self.assertEqual("remote-server-timeout", _condition(self.link.sent[0]))

    def test_transportFailureBounced(self):
        """
        A transport failure comes back as a stanza error, not silence.
        """
        self.router.xmppMessageReceived(xmppMessage())
        self.sip.sent[0][2].errback(TransportFailure("refused"))
        self.assertEqual(1, len(self.link.sent))
        self.assertEqual("error", self.link.sent[0]["type"])

    def test_oneInFlightPerURI(self):
        """
        A second message to the same URI waits for the first transaction.
        """
        self.router.xmppMessageReceived(xmppMessage(body="one", id="1"))
        self.router.xmppMessageReceived(xmppMessage(body="two", id="2"))
        self.assertEqual(1, len(self.sip.sent))
        self.sip.sent[0][2].callback(response(202, "Accepted"))
        self.assertEqual(2, len(self.sip.sent))
        self.assertEqual(b"two", self.sip.sent[1][0].body)

    def test_otherURIsInParallel(self):
        """
        Messages to different URIs do not wait for each other.
        """
        self.router.xmppMessageReceived(xmppMessage(to="a*sip.example@gw.example"))
        self.router.xmppMessageReceived(xmppMessage(to="b*sip.example@gw.example"))
        self.assertEqual(2, len(self.sip.sent))

    def test_queueLimit(self):
        """
        Past queueLimit per URI the sender gets resource-constraint.
        """
        for i in range(3):
            self.router.xmppMessageReceived(xmppMessage(id=str(i)))
        self.assertEqual(1, len(self.sip.sent))
        [error] = self.link.sent
        self.assertEqual("2", error["id"])
        self.assertEqual("resource-constraint", _condition(error))

    def test_bodylessIgnored(self):
        """
        A chat state without a body produces no SIP request and no error.
        """
        el = xmppMessage(body=None)
        el.addElement(("http://jabber.org/protocol/chatstates", "composing"))
        self.router.xmppMessageReceived(el)
        self.assertEqual([], self.sip.sent)
        self.assertEqual([], self.link.sent)

    def test_errorNotAnswered(self):
        """
        An error stanza is counted, never answered and never relayed.
        """
        el = xmppMessage(type="error")
        err = el.addElement("error")
        err["type"] = "cancel"
        err.addElement(("urn:ietf:params:xml:ns:xmpp-stanzas", "item-not-found"))
        self.router.xmppMessageReceived(el)
        self.assertEqual([], self.sip.sent)
        self.assertEqual([], self.link.sent)
        self.assertEqual(1, self.router.stats["xmpp.errorReceived"])

    def test_unmappableTargetBounced(self):
        """
        A target without a separator is answered with a stanza error.
        """
        self.router.xmppMessageReceived(xmppMessage(to="carol@gw.example"))
        self.assertEqual([], self.sip.sent)
        self.assertEqual("error", self.link.sent[0]["type"])


class TargetForURITests(unittest.TestCase):
    """
    L{targetForURI} picks the transport and port from the URI.
    """

    def test_default(self):
        """
        UDP and 5060 by default.
        """
        self.assertEqual(Target("udp", "sip.example", 5060),
                         targetForURI("sip:bob@sip.example"))

    def test_transportAndPort(self):
        """
        The transport parameter and an explicit port are honoured.
        """
        self.assertEqual(Target("tcp", "127.0.0.1", 5070),
                         targetForURI("sip:127.0.0.1:5070;transport=tcp"))

    def test_sips(self):
        """
        sips: goes over TLS on 5061.
        """
        self.assertEqual(Target("tls", "sip.example", 5061),
                         targetForURI("sips:bob@sip.example"))


class GatewayHandlerTests(RouterTestsMixin, unittest.TestCase):
    """
    L{GatewayHandler} passes link state and messages to the router.
    """

    def test_handlerPassesMessages(self):
        """
        Once initialized, the handler passes the stream's messages to the
        router.
        """
        from wokkel.test.helpers import XmlStreamStub

        handler = GatewayHandler(self.router, GW)
        stub = XmlStreamStub()
        handler.makeConnection(stub.xmlstream)
        handler.connectionInitialized()
        stub.send(xmppMessage())
        self.assertEqual(1, len(self.sip.sent))


class DeliveringLink(FakeLink):
    """
    An XMPP side with C{deliver}: each call gets a Deferred the test fires;
    cancelling it is recorded.
    """

    def __init__(self):
        FakeLink.__init__(self)
        self.delivered = []
        self.cancelled = []

    def deliver(self, stanza, notify=None):
        # The test fires d; with notify (the router's way) the outcome goes
        # on to it, as the real links pass it.
        d = defer.Deferred(lambda d: self.cancelled.append(stanza))
        self.delivered.append(d)
        if notify is not None:
            d.addBoth(notify)
        return d


class DeliveryExpiryTests(unittest.TestCase):
    """
    The hold timeout of MESSAGEs waiting for C{deliver}: one reactor timer
    for the oldest, each MESSAGE answered 503 exactly C{holdTimeout} after
    it arrived.
    """

    def setUp(self):
        self.clock = Clock()
        self.sip = FakeTransactionLayer()
        self.link = DeliveringLink()
        mapper = AddressMapper(separator="*", gatewayDomain=GW, xmppDomain=GW,
                               gwmap={})
        settings = RouterSettings(xmppDomain=GW, holdTimeout=8.3, holdLimit=10,
                                  logMessages=False)
        self.router = MessageRouter(self.clock, mapper, self.sip, self.link,
                                    settings)

    def receive(self, n):
        txn = FakeServerTransaction()
        self.sip.requestHandler(
            sipMessage(body=f"hello {n}", branch=f"z9hG4bK{n}"), txn)
        return txn

    def codes(self, txn):
        return [r.code for r in txn.responses]

    def test_queueDepths(self):
        """
        MESSAGEs given to C{deliver} and not yet answered count as held
        (C{sipHeld}) until their outcome.
        """
        self.receive(1)
        self.receive(2)
        self.assertEqual(2, self.router.queueDepths()["sipHeld"])
        self.link.delivered[0].callback(None)
        self.assertEqual(1, self.router.queueDepths()["sipHeld"])
        self.clock.advance(8.3)
        self.assertEqual(0, self.router.queueDepths()["sipHeld"])

    def test_eachExpiresOnTime(self):
        """
        Staggered MESSAGEs each get 503 when their own holdTimeout is up (not
        before), one timer is pending at a time, and none once all are
        answered. (Binary fractions: the clock arithmetic is exact.)
        """
        tick = 2 ** -10
        self.router.settings = RouterSettings(
            xmppDomain=GW, holdTimeout=8.25, holdLimit=10, logMessages=False)
        a = self.receive(1)
        self.clock.advance(0.125)
        b = self.receive(2)
        self.clock.advance(0.625)
        c = self.receive(3)
        self.assertEqual(1, len(self.clock.getDelayedCalls()))
        self.clock.advance(8.25 - 0.75 - tick)
        self.assertEqual(([], [], []), (self.codes(a), self.codes(b),
                                        self.codes(c)))
        self.clock.advance(tick)
        self.assertEqual(8.25, self.clock.seconds())
        self.assertEqual([503], self.codes(a))
        self.assertEqual([], self.codes(b))
        self.link.delivered[1].callback(None)
        self.assertEqual([202], self.codes(b))
        [timer] = self.clock.getDelayedCalls()
        self.assertLessEqual(timer.getTime(), 9.0)
        self.clock.advance(0.75 - tick)
        self.assertEqual([], self.codes(c))
        self.clock.advance(tick)
        self.assertEqual([503], self.codes(c))
        self.assertEqual(2, len(self.link.cancelled))
        self.assertEqual([], self.clock.getDelayedCalls())
        self.assertEqual(2, self.router.stats["sip.holdExpired"])

    def test_neverLate(self):
        """
        With times that floats cannot hold exactly, the timer is never set
        after the oldest waiting MESSAGE's expiry, and each MESSAGE is
        answered by the time the clock reaches arrival + holdTimeout.
        """
        txns = []
        arrivals = []
        for n in range(6):
            arrivals.append(self.clock.seconds())
            txns.append(self.receive(n))
            self.clock.advance(0.1 * (n + 1))
        self.link.delivered[0].callback(None)
        self.link.delivered[3].callback(None)
        for n in (1, 2, 4, 5):
            expires = arrivals[n] + 8.3
            [timer] = self.clock.getDelayedCalls()
            self.assertLessEqual(timer.getTime(), expires)
            self.clock.advance(expires - self.clock.seconds())
            if self.clock.seconds() < expires:
                self.clock.advance(expires - self.clock.seconds())
            self.assertEqual([503], self.codes(txns[n]))
            self.assertTrue(all(not self.codes(txns[later])
                                for later in (1, 2, 4, 5) if later > n))
        self.assertEqual([], self.clock.getDelayedCalls())

    def test_answeredOutOfOrder(self):
        """
        MESSAGEs confirmed out of arrival order are answered once each; the
        timer is left when the last is answered (not cancelled and set
        again per MESSAGE), fires once, refuses nothing and is not set
        again.
        """
        txns = [self.receive(n) for n in range(3)]
        self.link.delivered[2].callback(None)
        self.link.delivered[1].callback(None)
        self.assertEqual(1, len(self.clock.getDelayedCalls()))
        self.link.delivered[0].callback(None)
        self.assertEqual(1, len(self.clock.getDelayedCalls()))
        self.clock.advance(10)
        self.assertEqual([[202]] * 3, [self.codes(t) for t in txns])
        self.assertEqual([], self.link.cancelled)
        self.assertEqual([], self.clock.getDelayedCalls())
        self.assertIsNone(self.router._deliveryTimer)

    def test_leftTimerOneAtATime(self):
        """
        At one MESSAGE at a time, answered before the next, one timer
        serves them all (it is not cancelled and set again for each), and
        each MESSAGE is still refused holdTimeout after its arrival when
        unanswered.
        """
        timers = []
        for n in range(20):
            txn = self.receive(n)
            for timer in self.clock.getDelayedCalls():
                if not any(timer is seen for seen in timers):
                    timers.append(timer)
            self.link.delivered[n].callback(None)
            self.assertEqual([202], self.codes(txn))
            self.clock.advance(1)
        self.assertEqual(3, len(timers))
        late = self.receive(20)
        arrival = self.clock.seconds()
        [timer] = self.clock.getDelayedCalls()
        self.assertLessEqual(timer.getTime(), arrival + 8.3)
        self.clock.advance(arrival + 8.3 - self.clock.seconds())
        self.assertEqual([503], self.codes(late))

    def test_leftTimerTooLate(self):
        """
        When holdTimeout was shortened (a reload) while a timer left by
        answered MESSAGEs is pending, the next MESSAGE still gets its 503
        holdTimeout after its arrival.
        """
        first = self.receive(1)
        self.link.delivered[0].callback(None)
        self.assertEqual([202], self.codes(first))
        self.router.settings = RouterSettings(
            xmppDomain=GW, holdTimeout=2.0, holdLimit=10, logMessages=False)
        self.clock.advance(1)
        second = self.receive(2)
        [timer] = self.clock.getDelayedCalls()
        self.assertEqual(3.0, timer.getTime())
        self.clock.advance(2)
        self.assertEqual([503], self.codes(second))
        self.assertEqual([], self.clock.getDelayedCalls())

    def test_oldestAnsweredFirst(self):
        """
        When the oldest MESSAGE is answered, the next one still expires
        holdTimeout after its own arrival.
        """
        a = self.receive(1)
        self.clock.advance(2)
        b = self.receive(2)
        self.link.delivered[0].callback(None)
        self.clock.advance(8.3 - 2)
        self.assertEqual([], self.codes(b))
        self.clock.advance(2 - 1e-6)
        self.assertEqual([], self.codes(b))
        self.clock.advance(1e-6)
        self.assertEqual(([202], [503]), (self.codes(a), self.codes(b)))
        self.assertEqual([], self.clock.getDelayedCalls())

    def test_shutdownClearsTimer(self):
        """
        Shutdown answers the waiting MESSAGEs and leaves no timer.
        """
        txns = [self.receive(n) for n in range(3)]
        self.router.shutdown()
        self.assertEqual([[503]] * 3, [self.codes(t) for t in txns])
        self.assertEqual([], self.clock.getDelayedCalls())


def _condition(error):
    for child in error.elements():
        if child.name == "error":
            for c in child.elements():
                if c.uri == "urn:ietf:params:xml:ns:xmpp-stanzas" and c.name != "text":
                    return c.name
    return None


class RecordingMetrics:
    """
    A recorder (L{xmppgw.metrics.NullRecorder} interface) that lists every
    call as C{(name, args)}.
    """

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))


class MessageLineTests(RouterTestsMixin, unittest.TestCase):
    """
    The line per message (fields and text) and the metrics of each
    outcome, in both directions.
    """

    def setUp(self):
        import dataclasses

        RouterTestsMixin.setUp(self)
        self.router.settings = dataclasses.replace(self.settings,
                                                   logMessages=True)
        self.metrics = self.router.metrics = RecordingMetrics()

    def lines(self, run):
        from twisted.logger import capturedLogs

        with capturedLogs() as events:
            run()
        return [{key: event[key] for key in (
            "text", "direction", "sender", "target", "mapped", "code",
            "reason", "latency", "latencyMs", "log_format")}
            for event in events if event.get("direction")]

    def test_xmppRelayed(self):
        """
        A relayed XMPP message: its line with the latency, its metrics.
        """
        def run():
            self.router.xmppMessageReceived(xmppMessage())
            self.clock.advance(0.25)
            self.sip.sent[0][2].callback(response(200, "OK"))

        [line] = self.lines(run)
        self.assertEqual({
            "text": "XMPP->SIP alice@xmpp.example/phone -> "
                    "carol*sip.example@gw.example as "
                    "sip:alice*xmpp.example@gw.example;gr=phone -> "
                    "sip:carol@sip.example: 200 OK in 250.0 ms",
            "direction": "XMPP->SIP",
            "sender": "alice@xmpp.example/phone",
            "target": "carol*sip.example@gw.example",
            "mapped": "sip:alice*xmpp.example@gw.example;gr=phone -> "
                      "sip:carol@sip.example",
            "code": 200, "reason": " OK", "latency": " in 250.0 ms",
            "latencyMs": 250.0, "log_format": "{text}"}, line)
        self.assertEqual([
            ("sipResponse", (200, "received")),
            ("transactionTime", (0.25,)),
            ("relayLatency", ("xmpp", 0.25)),
            ("relayed", ("xmpp", "relayed")),
        ], self.metrics.calls)

    def test_xmppTimedOut(self):
        """
        A timed-out XMPP message: 408 and its text in the line.
        """
        def run():
            self.router.xmppMessageReceived(xmppMessage())
            self.clock.advance(0.0625)
            self.sip.sent[0][2].errback(TransactionTimeout())

        [line] = self.lines(run)
        self.assertEqual(408, line["code"])
        self.assertEqual(" No answer from the SIP side", line["reason"])
        self.assertEqual(62.5, line["latencyMs"])
        self.assertTrue(line["text"].endswith(
            ": 408 No answer from the SIP side in 62.5 ms"), line["text"])
        self.assertEqual([
            ("relayed", ("xmpp", "failed")),
            ("transactionTime", (0.0625,)),
            ("relayLatency", ("xmpp", 0.0625)),
            ("xmppError", ("remote-server-timeout", "sent")),
        ], self.metrics.calls)

    def test_sipRelayed(self):
        """
        A relayed SIP MESSAGE: its line, its metrics.
        """
        txn = FakeServerTransaction()
        [line] = self.lines(lambda: self.sip.requestHandler(sipMessage(), txn))
        self.assertEqual({
            "text": "SIP->XMPP <sip:bob@sip.example>;tag=ft1 -> "
                    "sip:alice*xmpp.example@gw.example as "
                    "bob*sip.example@gw.example -> alice@xmpp.example: "
                    "202 in 0.0 ms",
            "direction": "SIP->XMPP",
            "sender": "<sip:bob@sip.example>;tag=ft1",
            "target": "sip:alice*xmpp.example@gw.example",
            "mapped": "bob*sip.example@gw.example -> alice@xmpp.example",
            "code": 202, "reason": "", "latency": " in 0.0 ms",
            "latencyMs": 0.0, "log_format": "{text}"}, line)
        self.assertEqual([
            ("relayed", ("sip", "relayed")),
            ("relayLatency", ("sip", 0.0)),
            ("sipResponse", (202, "sent")),
        ], self.metrics.calls)

    def test_sipRefused(self):
        """
        A MESSAGE refused by the mapping: no mapped addresses, no latency.
        """
        txn = FakeServerTransaction()
        [line] = self.lines(lambda: self.sip.requestHandler(
            sipMessage(contentType="text/html"), txn))
        self.assertEqual({
            "text": "SIP->XMPP <sip:bob@sip.example>;tag=ft1 -> "
                    "sip:alice*xmpp.example@gw.example as -: "
                    "415 Unsupported media type text/html",
            "direction": "SIP->XMPP",
            "sender": "<sip:bob@sip.example>;tag=ft1",
            "target": "sip:alice*xmpp.example@gw.example",
            "mapped": "-", "code": 415,
            "reason": " Unsupported media type text/html", "latency": "",
            "latencyMs": None, "log_format": "{text}"}, line)
        self.assertEqual([
            ("relayed", ("sip", "refused")),
            ("sipResponse", (415, "sent")),
        ], self.metrics.calls)
        self.assertEqual(415, txn.responses[0].code)


class OutcomeThenQueueTests(RouterTestsMixin, unittest.TestCase):
    """
    The outcome of a SIP transaction is handled, then the destination's
    queue moves on, whatever the first step does.
    """

    def test_errorInOutcome(self):
        """
        An exception while handling a response or a failure (a bug) is
        logged with its traceback, and the next queued message is still
        sent; the queue ends empty.
        """
        def broken(*args):
            raise RuntimeError("boom")

        self.router._bounce = broken
        for i in range(2):
            self.router.xmppMessageReceived(xmppMessage(id=str(i)))
        self.assertEqual(1, len(self.sip.sent))
        self.sip.sent[0][2].callback(response(404, "Not Found"))
        self.assertEqual(2, len(self.sip.sent))
        self.router.xmppMessageReceived(xmppMessage(id="2"))
        self.sip.sent[1][2].errback(TransportFailure("refused"))
        self.assertEqual(3, len(self.sip.sent))
        self.sip.sent[2][2].callback(response(200, "OK"))
        self.assertEqual({}, self.router._queues)
        self.assertEqual(
            {"xmpp.failed": 2, "xmpp.relayed": 1}, self.router.stats)
        self.assertEqual(2, len(self.flushLoggedErrors(RuntimeError)))

    def test_counterKeys(self):
        """
        The counters split once in advance are split as any other.
        """
        from xmppgw import router

        for key, parts in router._KEY_PARTS.items():
            origin, _, outcome = key.partition(".")
            self.assertEqual((origin, outcome), parts)
        metrics = self.router.metrics = RecordingMetrics()
        self.router._count("xmpp.relayed")
        self.router._count("other.thing.more")
        self.assertEqual([("relayed", ("xmpp", "relayed")),
                          ("relayed", ("other", "thing.more"))],
                         metrics.calls)
        self.assertEqual({"xmpp.relayed": 1, "other.thing.more": 1},
                         self.router.stats)


class LatencyFieldTests(RouterTestsMixin, unittest.TestCase):
    """
    The latency fields of the line: C{latencyMs} is C{round(ms, 1)} and
    C{latency} its C{"%.1f"} text, for any elapsed time.
    """

    def fields(self, elapsed):
        events = []
        self.router._log.observer = events.append
        self.router._emitLine("SIP->XMPP", "s", "t", "m", 202, None, elapsed)
        [event] = events
        return event["latencyMs"], event["latency"], event["text"]

    @given(st.one_of(
        st.floats(allow_nan=False),
        st.floats(min_value=0, max_value=100),
        st.floats(min_value=0, max_value=0.001),
        st.integers(min_value=-10 ** 6, max_value=10 ** 6),
        st.sampled_from([0.0, -0.0, 0.00005, 0.00015, 0.00025, 0.0125,
                         -0.00001, -0.00004, 1e-7, 5e-5, 0.00035, 999999.99995,
                         float("inf"), float("-inf"), 1e300])))
    @settings(max_examples=500, deadline=None, database=None)
    def test_sameAsRound(self, elapsed):
        """
        Floats (read back from their text) and ints give the value, type
        and text of C{round(elapsed * 1000, 1)}.
        """
        latencyMs = round(elapsed * 1000, 1)
        latency = f" in {latencyMs:.1f} ms"
        got = self.fields(elapsed)
        self.assertEqual((latency, "s -> t as m: 202" + latency),
                         (got[1], got[2][len("SIP->XMPP "):]))
        self.assertIs(type(latencyMs), type(got[0]))
        self.assertEqual(repr(latencyMs), repr(got[0]))

    def test_nan(self):
        """
        Not a number stays one.
        """
        latencyMs, latency, _ = self.fields(float("nan"))
        self.assertNotEqual(latencyMs, latencyMs)
        self.assertEqual(" in nan ms", latency)

    def test_none(self):
        """
        Without an arrival time, no latency.
        """
        self.assertEqual((None, "", "SIP->XMPP s -> t as m: 202"),
                         self.fields(None))
