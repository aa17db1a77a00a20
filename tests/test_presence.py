"""
Tests for L{xmppgw.presence}: PIDF and header helpers, and both
subscription directions with fakes for SIP and XMPP, on a Clock.
"""

from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.words.xish import domish

from tests.test_router import (
    GW, FakeLink, FakeServerTransaction, FakeTransactionLayer)
from xmppgw.addressing import AddressMapper
from xmppgw.presence import (
    PIDFError, PresenceGateway, PresenceSettings, RateLimiter, acceptsPIDF,
    buildPIDF, eventPackage, parsePIDF, parseSubscriptionState,
    priorityFromPIDF, priorityToPIDF)
from xmppgw.router import targetForURI
from xmppgw.sip.message import Headers, Response, parseMessage
from xmppgw.sip.transaction import TransactionTimeout
from xmppgw.store import INBOUND, OUTBOUND, MemoryStore, subscriptionKey

ALICE = "alice@xmpp.example"            # an XMPP user
ALICE_SIP = "sip:alice*xmpp.example@gw.example"
BOB = "bob*sip.example@gw.example"      # a SIP user, as a JID
BOB_SIP = "sip:bob@sip.example"
CONTACT = "sip:127.0.0.1:5060"


def subscribe(uri=ALICE_SIP, sender=BOB_SIP, expires="3600", event="presence",
              accept=None, contact="<sip:bob@192.0.2.1:5070>", toTag=None,
              cseq=1, callID="sub-1", branch="z9hG4bKs1", fromTag="bt1"):
    lines = [
        f"SUBSCRIBE {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.1:5070;branch={branch}",
        "Max-Forwards: 70",
        f"From: <{sender}>;tag={fromTag}",
        f"To: <{uri}>" + (f";tag={toTag}" if toTag else ""),
        f"Call-ID: {callID}",
        f"CSeq: {cseq} SUBSCRIBE",
    ]
    if event is not None:
        lines.append(f"Event: {event}")
    if accept is not None:
        lines.append(f"Accept: {accept}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines.append("Content-Length: 0")
    return parseMessage(("\r\n".join(lines) + "\r\n\r\n").encode())


def notify(request, state="active;expires=3600", body=b"", cseq=1, fromTag="bt9",
           contentType="application/pidf+xml", event="presence"):
    """
    A NOTIFY in the dialog of the SUBSCRIBE C{request} the gateway sent.
    """
    h = request.headers
    lines = [
        f"NOTIFY {CONTACT} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKn%d" % cseq,
        "Max-Forwards: 70",
        f"From: {h.get('To')};tag={fromTag}",
        f"To: {h.get('From')}",
        f"Call-ID: {h.get('Call-ID')}",
        f"CSeq: {cseq} NOTIFY",
        f"Event: {event}",
        f"Subscription-State: {state}",
        "Contact: <sip:bob@192.0.2.1:5070>",
    ]
    if body:
        lines.append(f"Content-Type: {contentType}")
    lines.append(f"Content-Length: {len(body)}")
    return parseMessage(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def ok(request, code=200, headers=(), toTag="bt9"):
    h = Headers()
    to = request.headers.get("To")
    if ";tag=" not in to:
        to += f";tag={toTag}"
    h.add("To", to)
    h.add("From", request.headers.get("From"))
    for name, value in headers:
        h.add(name, value)
    return Response(code, "X", h)


def presence(sender, to, type=None, show=None, status=None, priority=None):
    el = domish.Element((None, "presence"))
    el["from"] = sender
    el["to"] = to
    if type:
        el["type"] = type
    if show:
        el.addElement("show", content=show)
    if status:
        el.addElement("status", content=status)
    if priority is not None:
        el.addElement("priority", content=str(priority))
    return el


class PIDFTests(unittest.TestCase):
    """
    Tests for the PIDF mapping table (RFC 7248 section 5).
    """

    def test_priorityTable(self):
        """
        Priorities map as the RFC's examples; negative ones are not mapped.
        """
        self.assertEqual(priorityToPIDF(1), "0.007")
        self.assertEqual(priorityToPIDF(2), "0.015")
        self.assertEqual(priorityToPIDF(126), "0.992")
        self.assertEqual(priorityToPIDF(127), "1")
        self.assertEqual(priorityToPIDF(0), "0")
        self.assertIsNone(priorityToPIDF(-1))
        self.assertIsNone(priorityToPIDF(None))
        for p in range(128):
            self.assertEqual(priorityFromPIDF(priorityToPIDF(p)), p)
        self.assertIsNone(priorityFromPIDF("1.5"))
        self.assertIsNone(priorityFromPIDF("x"))

    def test_roundTrip(self):
        """
        Available resources become open tuples with show, note and priority,
        and parse back.
        """
        resources = {
            "balcony": {"available": True, "show": "away", "status": "back <soon> &",
                        "priority": 5},
            "orchard": {"available": True, "show": None, "status": None,
                        "priority": None},
        }
        body = buildPIDF("pres:alice@x", resources)
        self.assertTrue(body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'))
        self.assertIn(b'<tuple id="ID-balcony">', body)
        self.assertIn(b"<basic>open</basic>", body)
        self.assertIn(b'<show xmlns="jabber:client">away</show>', body)
        self.assertEqual(parsePIDF(body), resources)

    def test_closed(self):
        """
        No available resource: one closed tuple.
        """
        body = buildPIDF("pres:alice@x", {})
        self.assertIn(b"<basic>closed</basic>", body)
        [(resource, value)] = parsePIDF(body).items()
        self.assertFalse(value["available"])
        body = buildPIDF("pres:alice@x", {"r": {"available": False, "status": "bye"}})
        self.assertEqual(parsePIDF(body)["r"]["status"], "bye")

    def test_foreignPIDF(self):
        """
        A PIDF from a SIP UA: tuple ids without the prefix are resources,
        the presence-level note applies, unknown elements are ignored.
        """
        body = (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
                b'xmlns:x="urn:x" entity="sip:bob@sip.example"><tuple id="t1">'
                b"<status><basic>open</basic><x:y/></status>"
                b'<contact priority="0.5">sip:bob@h</contact></tuple>'
                b"<note>On the phone</note></presence>")
        self.assertEqual(parsePIDF(body), {"t1": {
            "available": True, "show": None, "status": "On the phone",
            "priority": 64}})

    def test_refused(self):
        """
        Not XML, not PIDF, no entity, a DOCTYPE: L{PIDFError}.
        """
        for body in [b"<x", b'<presence xmlns="urn:other" entity="a"/>',
                     b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>',
                     b'<!DOCTYPE p [<!ENTITY a "aaa">]><presence '
                     b'xmlns="urn:ietf:params:xml:ns:pidf" entity="&a;"/>']:
            self.assertRaises(PIDFError, parsePIDF, body)


class HeaderTests(unittest.TestCase):
    """
    Tests for the SIP header helpers.
    """

    def test_event(self):
        """
        The package is the token before the parameters, lower-cased.
        """
        h = Headers()
        self.assertIsNone(eventPackage(h))
        h.add("Event", "Presence;id=1")
        self.assertEqual(eventPackage(h), "presence")

    def test_accept(self):
        """
        No Accept, PIDF or a wildcard accept PIDF; other types do not.
        """
        h = Headers()
        self.assertTrue(acceptsPIDF(h))
        h.add("Accept", "application/xpidf+xml, application/pidf+xml;q=0.5")
        self.assertTrue(acceptsPIDF(h))
        h.set("Accept", "text/plain")
        self.assertFalse(acceptsPIDF(h))
        h.set("Accept", "*/*")
        self.assertTrue(acceptsPIDF(h))

    def test_subscriptionState(self):
        """
        State, reason, expires and retry-after are parsed; bad values are
        L{ValueError}.
        """
        self.assertEqual(parseSubscriptionState("active;expires=600"),
                         ("active", None, 600, None))
        self.assertEqual(
            parseSubscriptionState("terminated;reason=probation;retry-after=30"),
            ("terminated", "probation", None, 30))
        self.assertRaises(ValueError, parseSubscriptionState, None)
        self.assertRaises(ValueError, parseSubscriptionState, "active;expires=x")

    def test_rateLimiter(self):
        """
        A bucket allows its burst, then the rate; keys are independent;
        rate 0 is no limit.
        """
        clock = Clock()
        limiter = RateLimiter(clock, 1.0, 2)
        self.assertEqual([limiter.allow("a") for _ in range(3)], [True, True, False])
        self.assertTrue(limiter.allow("b"))
        clock.advance(1)
        self.assertTrue(limiter.allow("a"))
        self.assertFalse(limiter.allow("a"))
        self.assertTrue(all(RateLimiter(clock, 0, 1).allow("a") for _ in range(50)))


class PresenceTestsMixin:
    def setUp(self):
        self.clock = Clock()
        self.sip = FakeTransactionLayer()
        self.link = FakeLink()
        self.store = MemoryStore()
        self.mapper = AddressMapper(separator="*", gatewayDomain=GW,
                                    xmppDomain=GW, gwmap={})
        self.settings = PresenceSettings(
            xmppDomain=GW, contactURI=CONTACT, subscriptionsMax=3,
            subscriptionsPerUserMax=2, probeTimeout=5.0, retryInterval=60.0,
            ratePerSender=0)
        self.gateway = self.makeGateway()

    def makeGateway(self, settings=None):
        return PresenceGateway(self.clock, self.mapper, self.sip, self.link,
                               self.store, settings or self.settings, targetForURI)

    def receive(self, request):
        txn = FakeServerTransaction()
        self.gateway.sipRequestReceived(request, txn)
        return txn

    def stanzas(self, type="any"):
        return [(s.getAttribute("from"), s.getAttribute("to"), s.getAttribute("type"))
                for s in self.link.sent]

    def record(self, direction, watcher, presentity):
        result = []
        self.store.get(subscriptionKey(direction, watcher, presentity)).addCallback(
            result.append)
        return result[0]


class DialogCSeqTests(PresenceTestsMixin, unittest.TestCase):
    """
    The per-dialog memory of the CSeqs this instance sent.
    """

    def test_bounded(self):
        """
        The memory keeps at most 2 x C{subscriptionsMax} + 1000 dialogs
        (least recently used forgotten first); a forgotten dialog falls back
        to the CSeq stored in its record.
        """
        from xmppgw.store import Subscription
        limit = 2 * self.settings.subscriptionsMax + 1000
        records = [
            Subscription(
                direction="outbound", watcher="u@xmpp.example",
                presentity=f"s{i}*sip.example@{GW}", state="active",
                expires=0.0, callID=f"call-{i}", localTag="t",
                remoteTag="r", localURI="sip:a@b", remoteURI="sip:c@d",
                remoteTarget="sip:c@d", routeSet=(), localCSeq=7,
                remoteCSeq=0, presence="{}")
            for i in range(limit + 500)]
        for record in records:
            self.assertEqual(8, self.gateway._nextCSeq(record))
        self.assertEqual(limit, len(self.gateway._cseq))
        self.assertEqual(9, self.gateway._nextCSeq(records[-1]))
        self.assertEqual(8, self.gateway._nextCSeq(records[0]))


class InboundTests(PresenceTestsMixin, unittest.TestCase):
    """
    A SIP watcher subscribing to an XMPP user.
    """

    def subscribed(self):
        """
        Subscribe bob to alice; answer the pending NOTIFY.
        """
        txn = self.receive(subscribe())
        [(notifyRequest, target, d)] = self.sip.sent
        d.callback(ok(notifyRequest))
        return txn, notifyRequest

    def test_newSubscription(self):
        """
        200 at once with Expires and Contact, a NOTIFY pending to the
        Contact, and a subscribe stanza from the watcher's JID.
        """
        txn, notifyRequest = self.subscribed()
        [response] = txn.responses
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.get("Expires"), "3600")
        self.assertEqual(response.headers.get("Contact"), f"<{CONTACT}>")
        self.assertIn(";tag=", response.headers.get("To"))
        self.assertEqual(notifyRequest.method, "NOTIFY")
        self.assertEqual(notifyRequest.uri, "sip:bob@192.0.2.1:5070")
        self.assertEqual(notifyRequest.headers.get("Subscription-State"),
                         "pending;expires=3600")
        self.assertEqual(notifyRequest.headers.get("Event"), "presence")
        self.assertEqual(notifyRequest.body, b"")
        self.assertEqual(notifyRequest.headers.get("Call-ID"), "sub-1")
        self.assertIn("tag=bt1", notifyRequest.headers.get("To"))
        self.assertEqual(self.stanzas(), [(BOB, ALICE, "subscribe")])

    def test_refusals(self):
        """
        Unknown event 489, unacceptable Accept 406, too-short Expires 423,
        no Contact 400, unmappable target 404, a loop 482.
        """
        cases = [
            (subscribe(event="dialog"), 489),
            (subscribe(event=None), 489),
            (subscribe(accept="text/plain"), 406),
            (subscribe(expires="10"), 423),
            (subscribe(expires="x"), 400),
            (subscribe(contact=None), 400),
            (subscribe(uri="sip:nobody@gw.example"), 404),
            (subscribe(uri="sip:carol*gw.example@gw.example"), 482),
        ]
        for request, code in cases:
            txn = self.receive(request)
            self.assertEqual([r.code for r in txn.responses], [code], request.headers)
        self.assertEqual(self.sip.sent, [])
        self.assertEqual(self.link.sent, [])
        self.assertEqual(
            self.receive(subscribe(event="dialog")).responses[0].headers.get(
                "Allow-Events"), "presence")

    def test_linkDown(self):
        """
        Without the XMPP link a new SUBSCRIBE gets 503 with Retry-After.
        """
        self.link.isAuthenticated = False
        [response] = self.receive(subscribe()).responses
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.get("Retry-After"), "5")

    def test_approvedThenPresence(self):
        """
        subscribed -> NOTIFY active (and a probe); then presence changes ->
        NOTIFYs with PIDF.
        """
        self.subscribed()
        self.gateway.xmppPresenceReceived(presence(ALICE, BOB, "subscribed"))
        [_, (active, _, d)] = self.sip.sent
        self.assertTrue(active.headers.get("Subscription-State").startswith("active;"))
        self.assertIn((BOB, ALICE, "probe"), self.stanzas())
        d.callback(ok(active))
        self.gateway.xmppPresenceReceived(
            presence(ALICE + "/balcony", BOB, show="away", status="Out", priority=1))
        update = self.sip.sent[-1][0]
        self.assertEqual(update.headers.get("Content-Type"), "application/pidf+xml")
        self.assertEqual(parsePIDF(update.body), {"balcony": {
            "available": True, "show": "away", "status": "Out", "priority": 1}})
        self.assertEqual(int(update.headers.get("CSeq").split()[0]), 3)

    def test_unavailable(self):
        """
        The last resource going away gives a closed PIDF.
        """
        self.subscribed()
        self.gateway.xmppPresenceReceived(presence(ALICE, BOB, "subscribed"))
        self.sip.sent[-1][2].callback(ok(self.sip.sent[-1][0]))
        self.gateway.xmppPresenceReceived(presence(ALICE + "/r", BOB))
        self.sip.sent[-1][2].callback(ok(self.sip.sent[-1][0]))
        self.gateway.xmppPresenceReceived(presence(ALICE + "/r", BOB, "unavailable"))
        self.assertIn(b"<basic>closed</basic>", self.sip.sent[-1][0].body)

    def test_coalesced(self):
        """
        While a NOTIFY is in flight, later updates wait; only the latest is
        sent when it completes.
        """
        self.subscribed()
        self.gateway.xmppPresenceReceived(presence(ALICE, BOB, "subscribed"))
        count = len(self.sip.sent)
        self.gateway.xmppPresenceReceived(presence(ALICE + "/r", BOB, status="one"))
        self.gateway.xmppPresenceReceived(presence(ALICE + "/r", BOB, status="two"))
        self.assertEqual(len(self.sip.sent), count)
        self.sip.sent[-1][2].callback(ok(self.sip.sent[-1][0]))
        self.assertEqual(len(self.sip.sent), count + 1)
        self.assertEqual(parsePIDF(self.sip.sent[-1][0].body)["r"]["status"], "two")

    def test_rejected(self):
        """
        unsubscribed -> NOTIFY terminated;reason=rejected, subscription gone.
        """
        self.subscribed()
        self.gateway.xmppPresenceReceived(presence(ALICE, BOB, "unsubscribed"))
        last = self.sip.sent[-1][0]
        self.assertEqual(last.headers.get("Subscription-State"),
                         "terminated;reason=rejected")
        self.assertIsNone(self.record(INBOUND, BOB, ALICE))

    def test_refreshAndUnsubscribe(self):
        """
        A refresh gets 200 and a NOTIFY; Expires 0 gets a terminated NOTIFY
        with basic closed and unavailable to the XMPP user.
        """
        txn, _ = self.subscribed()
        toTag = txn.responses[0].headers.get("To").split("tag=")[1]
        refresh = self.receive(subscribe(toTag=toTag, cseq=2, expires="600",
                                         branch="z9hG4bKs2"))
        self.assertEqual(refresh.responses[0].code, 200)
        self.assertEqual(refresh.responses[0].headers.get("Expires"), "600")
        notified = self.sip.sent[-1]
        self.assertEqual(notified[0].headers.get("Subscription-State"),
                         "pending;expires=600")
        notified[2].callback(ok(notified[0]))
        gone = self.receive(subscribe(toTag=toTag, cseq=3, expires="0",
                                      branch="z9hG4bKs3"))
        self.assertEqual(gone.responses[0].code, 200)
        last = self.sip.sent[-1][0]
        self.assertEqual(last.headers.get("Subscription-State"),
                         "terminated;reason=timeout")
        self.assertIn(b"<basic>closed</basic>", last.body)
        self.assertEqual(self.stanzas()[-1], (BOB, ALICE, "unavailable"))
        self.assertIsNone(self.record(INBOUND, BOB, ALICE))

    def test_wrongDialog(self):
        """
        A refresh with an unknown To tag gets 481; an old CSeq 500.
        """
        txn, _ = self.subscribed()
        self.assertEqual(self.receive(subscribe(toTag="nope", cseq=2)).responses[0].code,
                         481)
        toTag = txn.responses[0].headers.get("To").split("tag=")[1]
        self.assertEqual(self.receive(subscribe(toTag=toTag, cseq=1)).responses[0].code,
                         500)

    def test_expiry(self):
        """
        An unrefreshed subscription ends at its expiry with
        terminated;reason=timeout.
        """
        self.subscribed()
        self.clock.advance(3600)
        last = self.sip.sent[-1][0]
        self.assertEqual(last.headers.get("Subscription-State"),
                         "terminated;reason=timeout")
        self.assertIsNone(self.record(INBOUND, BOB, ALICE))

    def test_notifyRefused(self):
        """
        A NOTIFY answered 481 (or timing out) removes the subscription.
        """
        self.receive(subscribe())
        self.sip.sent[0][2].callback(ok(self.sip.sent[0][0], code=481))
        self.assertIsNone(self.record(INBOUND, BOB, ALICE))
        self.receive(subscribe(callID="sub-2", branch="z9hG4bKx"))
        self.sip.sent[-1][2].errback(TransactionTimeout("F"))
        self.assertIsNone(self.record(INBOUND, BOB, ALICE))

    def test_caps(self):
        """
        Per-watcher cap: 403; total cap: 503.
        """
        codes = []
        for i, user in enumerate(["a", "b", "c"]):
            codes.append(self.receive(subscribe(
                uri=f"sip:{user}*xmpp.example@gw.example", callID=f"c{i}",
                branch=f"z9hG4bKc{i}")).responses[0].code)
        self.assertEqual(codes, [200, 200, 403])
        response = self.receive(subscribe(sender="sip:carol@sip.example",
                                          callID="d", branch="z9hG4bKd")).responses[0]
        self.assertEqual(response.code, 200)
        response = self.receive(subscribe(sender="sip:dave@sip.example",
                                          callID="e", branch="z9hG4bKe")).responses[0]
        self.assertEqual((response.code, response.headers.get("Retry-After")),
                         (503, "600"))

    def test_rateLimited(self):
        """
        SUBSCRIBEs over the sender's rate get 503 with Retry-After.
        """
        from dataclasses import replace
        self.gateway = self.makeGateway(replace(self.settings, ratePerSender=1.0,
                                                ratePerSenderBurst=1))
        self.assertEqual(self.receive(subscribe()).responses[0].code, 200)
        response = self.receive(subscribe(callID="x", branch="z9hG4bKx")).responses[0]
        self.assertEqual(response.code, 503)


class OutboundTests(PresenceTestsMixin, unittest.TestCase):
    """
    An XMPP user subscribing to a SIP user.
    """

    def subscribed(self, body=None):
        self.gateway.xmppPresenceReceived(presence(ALICE + "/home", BOB, "subscribe"))
        [(request, target, d)] = self.sip.sent
        d.callback(ok(request, headers=[("Expires", "3600"),
                                        ("Contact", "<sip:bob@192.0.2.1:5070>")]))
        if body is None:
            body = buildPIDF("sip:bob@sip.example",
                             {"desk": {"available": True, "status": "Working",
                                       "show": "dnd", "priority": 2}})
        txn = self.receive(notify(request, body=body))
        return request, txn

    def test_subscribe(self):
        """
        subscribe -> SUBSCRIBE with Event, Accept, Expires and Contact;
        NOTIFY active -> subscribed, then presence from the PIDF.
        """
        request, txn = self.subscribed()
        self.assertEqual(request.method, "SUBSCRIBE")
        self.assertEqual(request.uri, BOB_SIP)
        h = request.headers
        self.assertEqual((h.get("Event"), h.get("Accept"), h.get("Expires")),
                         ("presence", "application/pidf+xml", "3600"))
        self.assertEqual(h.get("Contact"), f"<{CONTACT}>")
        self.assertTrue(h.get("From").startswith(f"<{ALICE_SIP}>;tag="))
        self.assertEqual([r.code for r in txn.responses], [200])
        self.assertEqual(self.stanzas(), [
            (BOB, ALICE, "subscribed"), (BOB + "/desk", ALICE, None)])
        last = self.link.sent[-1]
        self.assertEqual(str(last.show), "dnd")
        self.assertEqual(str(last.status), "Working")
        self.assertEqual(str(last.priority), "2")

    def test_rejected(self):
        """
        403 (and 489, 603) to the SUBSCRIBE -> unsubscribed, forgotten.
        """
        self.gateway.xmppPresenceReceived(presence(ALICE, BOB, "subscribe"))
        request, _, d = self.sip.sent[0]
        d.callback(ok(request, code=603))
        self.assertEqual(self.stanzas(), [(BOB, ALICE, "unsubscribed")])
        self.assertIsNone(self.record(OUTBOUND, ALICE, BOB))

    def test_transientFailure(self):
        """
        A timeout keeps the subscription and retries after retryInterval.
        """
        self.gateway.xmppPresenceReceived(presence(ALICE, BOB, "subscribe"))
        self.sip.sent[0][2].errback(TransactionTimeout("F"))
        self.assertEqual(len(self.sip.sent), 1)
        self.clock.advance(60)
        self.assertEqual(len(self.sip.sent), 2)
        self.assertEqual(self.sip.sent[1][0].method, "SUBSCRIBE")

    def test_notifyTerminatedRejected(self):
        """
        NOTIFY terminated;reason=rejected -> unsubscribed.
        """
        request, _ = self.subscribed()
        txn = self.receive(notify(request, state="terminated;reason=rejected", cseq=2))
        self.assertEqual([r.code for r in txn.responses], [200])
        self.assertEqual(self.stanzas()[-1], (BOB, ALICE, "unsubscribed"))
        self.assertIsNone(self.record(OUTBOUND, ALICE, BOB))

    def test_notifyChecks(self):
        """
        An unknown dialog gets 481; a wrong event 489; a missing
        Subscription-State 400; a non-PIDF body 415.
        """
        request, _ = self.subscribed()
        other = subscribe(callID="other")
        self.assertEqual(self.receive(notify(other)).responses[0].code, 481)
        self.assertEqual(self.receive(notify(request, cseq=5, event="dialog"))
                         .responses[0].code, 489)
        self.assertEqual(self.receive(notify(request, cseq=5, state=""))
                         .responses[0].code, 400)
        self.assertEqual(self.receive(notify(request, cseq=5, body=b"x",
                                             contentType="text/plain"))
                         .responses[0].code, 415)
        self.assertEqual(self.receive(notify(request, cseq=6, fromTag="zz"))
                         .responses[0].code, 481)

    def test_resourceGone(self):
        """
        A tuple missing from the next NOTIFY becomes unavailable.
        """
        request, _ = self.subscribed()
        body = buildPIDF("sip:bob@sip.example", {"phone": {"available": True}})
        self.receive(notify(request, body=body, cseq=2))
        self.assertIn((BOB + "/desk", ALICE, "unavailable"), self.stanzas())
        self.assertEqual(self.stanzas()[-1], (BOB + "/phone", ALICE, None))

    def test_probeAnsweredFromState(self):
        """
        A probe is answered with the last known presence.
        """
        self.subscribed()
        del self.link.sent[:]
        self.gateway.xmppPresenceReceived(presence(ALICE, BOB, "probe"))
        self.assertEqual(self.stanzas(), [(BOB + "/desk", ALICE, None)])

    def test_probeWithoutSubscription(self):
        """
        A probe for a subscription the store does not know re-creates it
        and answers unavailable.
        """
        self.gateway.xmppPresenceReceived(presence(ALICE, BOB, "probe"))
        self.assertEqual(self.stanzas(), [(BOB, ALICE, "unavailable")])
        self.assertEqual(self.sip.sent[0][0].method, "SUBSCRIBE")

    def test_refreshAfterProbe(self):
        """
        Before expiry the gateway probes the XMPP user; available presence
        in answer -> a refresh in the same dialog.
        """
        request, _ = self.subscribed()
        self.clock.advance(3600 - 60)
        self.assertEqual(self.stanzas()[-1], (BOB, ALICE, "probe"))
        self.assertEqual(len(self.sip.sent), 1)
        self.gateway.xmppPresenceReceived(presence(ALICE + "/home", BOB))
        refresh = self.sip.sent[-1][0]
        self.assertEqual(refresh.method, "SUBSCRIBE")
        self.assertEqual(refresh.headers.get("Call-ID"), request.headers.get("Call-ID"))
        self.assertIn("tag=bt9", refresh.headers.get("To"))
        self.assertEqual(refresh.uri, "sip:bob@192.0.2.1:5070")
        self.assertEqual(refresh.headers.get("CSeq"), "2 SUBSCRIBE")

    def test_refreshWithoutAnswer(self):
        """
        No answer to the probe: refresh anyway after probeTimeout.
        """
        self.subscribed()
        self.clock.advance(3600 - 60)
        self.assertEqual(len(self.sip.sent), 1)
        self.clock.advance(5)
        self.assertEqual(self.sip.sent[-1][0].method, "SUBSCRIBE")
        self.assertEqual(len(self.sip.sent), 2)

    def test_lapseWhileAway(self):
        """
        unavailable in answer to the probe: no refresh; the subscription
        goes dormant at expiry, and the next probe starts a new dialog.
        """
        request, _ = self.subscribed()
        self.clock.advance(3600 - 60)
        self.gateway.xmppPresenceReceived(presence(ALICE + "/home", BOB, "unavailable"))
        self.clock.advance(120)
        self.assertEqual(len(self.sip.sent), 1)
        self.assertEqual(self.record(OUTBOUND, ALICE, BOB).state, "dormant")
        self.gateway.xmppPresenceReceived(presence(ALICE, BOB, "probe"))
        again = self.sip.sent[-1][0]
        self.assertEqual(again.method, "SUBSCRIBE")
        self.assertNotEqual(again.headers.get("Call-ID"), request.headers.get("Call-ID"))

    def test_unsubscribe(self):
        """
        unsubscribe -> SUBSCRIBE Expires 0 in the dialog, unsubscribed back.
        """
        request, _ = self.subscribed()
        self.gateway.xmppPresenceReceived(presence(ALICE, BOB, "unsubscribe"))
        last = self.sip.sent[-1][0]
        self.assertEqual(last.headers.get("Expires"), "0")
        self.assertEqual(last.headers.get("Call-ID"), request.headers.get("Call-ID"))
        self.assertEqual(self.stanzas()[-1], (BOB, ALICE, "unsubscribed"))
        self.assertIsNone(self.record(OUTBOUND, ALICE, BOB))
        # The final NOTIFY of the ended subscription is still answered 200.
        txn = self.receive(notify(request, state="terminated", cseq=3))
        self.assertEqual(txn.responses[0].code, 200)

    def test_caps(self):
        """
        Over the per-user cap, subscribe gets a presence error.
        """
        for user in ["a", "b", "c"]:
            self.gateway.xmppPresenceReceived(
                presence(ALICE, f"{user}*sip.example@gw.example", "subscribe"))
        self.assertEqual(len(self.sip.sent), 2)
        [error] = self.link.sent
        self.assertEqual(error["type"], "error")
        self.assertEqual(error.error.firstChildElement().name, "policy-violation")

    def test_restart(self):
        """
        A new gateway over the same store re-arms the refresh timer.
        """
        self.subscribed()
        self.gateway.stop()
        self.gateway = self.makeGateway()
        self.gateway.start()
        self.clock.advance(3600 - 60)
        self.assertEqual(self.stanzas()[-1], (BOB, ALICE, "probe"))
        self.clock.advance(5)
        self.assertEqual(self.sip.sent[-1][0].headers.get("CSeq"), "2 SUBSCRIBE")


class RouterPresenceTests(PresenceTestsMixin, unittest.TestCase):
    """
    The router hands SUBSCRIBE/NOTIFY and presence to the presence gateway.
    """

    def test_dispatch(self):
        """
        With a presence gateway, SUBSCRIBE passes the policy and reaches
        it; without one it gets 405.
        """
        from xmppgw.router import GatewayHandler, MessageRouter, RouterSettings
        router = MessageRouter(self.clock, self.mapper, self.sip, self.link,
                               RouterSettings(xmppDomain=GW, logMessages=False))
        txn = FakeServerTransaction()
        router.sipRequestReceived(subscribe(), txn)
        self.assertEqual(txn.responses[0].code, 405)
        router.presence = self.gateway
        txn = FakeServerTransaction()
        router.sipRequestReceived(subscribe(branch="z9hG4bKother"), txn)
        self.assertEqual(txn.responses[0].code, 200)
        handler = GatewayHandler(router, GW)
        stanza = presence(ALICE, BOB, "subscribed")
        stanza.handled = False
        handler._onPresence(stanza)
        self.assertIn((BOB, ALICE, "probe"), self.stanzas())
