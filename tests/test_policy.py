"""
Tests for L{xmppgw.policy} (access lists, sender policy, rate limits), its
wiring into the SIP transport and the router, L{xmppgw.safexml} and
L{xmppgw.lifecycle} (graceful shutdown, SIGUSR1).
"""

import os
import signal

import twisted.test
from twisted.application import service
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.python import logfile
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.words.xish import domish
from twisted.words.xish.xmlstream import XmlStream

from xmppgw.config import ConfigError, Config, parseConfig
from xmppgw.lifecycle import GatewayService, LogReopener, findLogFile
from xmppgw.policy import AccessList, Policy, RateLimiter, SenderPolicy, normalizeAddress
from xmppgw.safexml import (
    INTERN_LIMIT, RestrictedXML, hardenParser, hardenXmlStream)
from xmppgw.sip.message import parseMessage
from xmppgw.sip.transaction import Source, TransactionTimeout

from tests.test_router import (
    GW, RouterTestsMixin, response, sipMessage, xmppMessage,
)
from tests.test_sip_transport import CLIENT, TransportTestMixin, rawRequest


def policyConfig(**tables):
    """
    A L{Config} from C{{table: {key: value}}}.
    """
    return parseConfig(tables, "<test>")


class AccessListTests(unittest.TestCase):
    """
    L{AccessList}: CIDR matching of source addresses.
    """

    def test_matches(self):
        """
        Addresses inside a listed network are allowed, others are not, for
        both address families.
        """
        acl = AccessList(["192.0.2.0/24", "2001:db8::/32"])
        self.assertTrue(acl.allows("192.0.2.77"))
        self.assertFalse(acl.allows("192.0.3.1"))
        self.assertTrue(acl.allows("2001:db8::5"))
        self.assertFalse(acl.allows("2001:db9::5"))

    def test_forms(self):
        """
        Brackets, zone ids and IPv4-mapped IPv6 addresses are understood; a
        bare address is one host; host bits in a network are ignored.
        """
        acl = AccessList(["192.0.2.7/24", "198.51.100.1", "fe80::/10"])
        self.assertTrue(acl.allows("::ffff:192.0.2.9"))
        self.assertTrue(acl.allows("198.51.100.1"))
        self.assertFalse(acl.allows("198.51.100.2"))
        self.assertTrue(acl.allows("[fe80::1%eth0]"))

    def test_notAnAddress(self):
        """
        Host names, empty and non-text sources are refused.
        """
        acl = AccessList(["0.0.0.0/0", "::/0"])
        for host in ("example.com", "", None, 42):
            self.assertFalse(acl.allows(host), host)
        self.assertIsNone(normalizeAddress("300.1.1.1"))

    def test_verdictsRemembered(self):
        """
        Verdicts are remembered per source text (the same answers the
        second time) and the memory is bounded by C{cacheLimit}.
        """
        acl = AccessList(["192.0.2.0/24"])
        acl.cacheLimit = 3
        hosts = ["192.0.2.%d" % (i,) for i in range(5)] + ["203.0.113.1"]
        first = [acl.allows(h) for h in hosts]
        self.assertEqual([True] * 5 + [False], first)
        self.assertLessEqual(len(acl._verdicts), 3)
        self.assertEqual(first, [acl.allows(h) for h in hosts])
        self.assertFalse(acl.allows(["192.0.2.1"]))

    def test_badNetwork(self):
        """
        A bad entry is refused, naming it.
        """
        e = self.assertRaises(ValueError, AccessList, ["10.0.0.0/33"])
        self.assertIn("10.0.0.0/33", str(e))


class SenderPolicyTests(unittest.TestCase):
    """
    L{SenderPolicy}: which sender domains are relayed.
    """

    def test_sipDomains(self):
        """
        With served SIP domains, only those (any case, trailing dot) pass.
        """
        p = SenderPolicy(sipDomains=["sip.example"])
        self.assertIsNone(p.checkSIPSender("SIP.Example."))
        self.assertIn("not served", p.checkSIPSender("evil.example"))
        self.assertIsNotNone(p.checkSIPSender(""))

    def test_anySIPDomainButOwn(self):
        """
        Without served domains any host passes except the refused ones.
        """
        p = SenderPolicy(refusedSIPDomains=["gw.example"])
        self.assertIsNone(p.checkSIPSender("anything.example"))
        self.assertIn("gateway's own", p.checkSIPSender("gw.example"))

    def test_xmppDomains(self):
        """
        XMPP senders: any domain when the list is empty, else the listed.
        """
        self.assertIsNone(SenderPolicy().checkXMPPSender("x.example"))
        p = SenderPolicy(xmppDomains=["xmpp.example"])
        self.assertIsNone(p.checkXMPPSender("xmpp.example"))
        self.assertIn("not allowed", p.checkXMPPSender("other.example"))


class RateLimiterTests(unittest.TestCase):
    """
    L{RateLimiter}: token buckets on a clock, bounded memory.
    """

    def setUp(self):
        self.clock = Clock()

    def test_burstThenRate(self):
        """
        A key gets C{burst} actions at once, then one per C{1/rate} seconds;
        a refusal says how long to wait.
        """
        limiter = RateLimiter(self.clock, rate=2, burst=3)
        self.assertEqual([limiter.allow("a") for _ in range(3)], [None] * 3)
        self.assertAlmostEqual(limiter.allow("a"), 0.5)
        self.clock.advance(0.5)
        self.assertIsNone(limiter.allow("a"))
        self.assertIsNotNone(limiter.allow("a"))
        self.assertIsNone(limiter.allow("b"), "keys are independent")

    def test_refill(self):
        """
        Tokens refill up to the burst, not beyond.
        """
        limiter = RateLimiter(self.clock, rate=1, burst=2)
        limiter.allow("a")
        limiter.allow("a")
        self.clock.advance(100)
        self.assertEqual([limiter.allow("a") for _ in range(3)][:2], [None, None])
        self.assertIsNotNone(limiter.allow("a"))

    def test_disabled(self):
        """
        Rate 0 allows everything and keeps no bucket.
        """
        limiter = RateLimiter(self.clock, rate=0)
        self.assertFalse(limiter.enabled)
        self.assertEqual({limiter.allow("a") for _ in range(1000)}, {None})
        self.assertEqual(len(limiter), 0)

    def test_boundedKeys(self):
        """
        At most C{maxKeys} buckets are kept, least recently used out first;
        an evicted non-full bucket is counted.
        """
        limiter = RateLimiter(self.clock, rate=1, burst=1, maxKeys=3)
        for key in "abcd":
            limiter.allow(key)
        self.assertEqual(len(limiter), 3)
        self.assertEqual(limiter.evicted, 1)
        self.assertIsNone(limiter.allow("a"), "a was evicted: fresh bucket")
        self.assertIsNotNone(limiter.allow("d"))

    def test_idleBucketsExpire(self):
        """
        Buckets idle long enough to be full again are dropped as new keys
        arrive, so memory follows the recently active keys.
        """
        limiter = RateLimiter(self.clock, rate=10, burst=10, maxKeys=100000)
        for i in range(1000):
            limiter.allow(f"k{i}")
        self.clock.advance(1.0)
        for i in range(1000):
            limiter.allow(f"n{i}")
        self.assertEqual(len(limiter), 1000)
        self.assertEqual(limiter.evicted, 0)

    def test_reconfigureKeepsBuckets(self):
        """
        A new rate keeps the buckets, clipped to the new burst.
        """
        limiter = RateLimiter(self.clock, rate=1, burst=10)
        limiter.allow("a")
        limiter.configure(rate=1, burst=2)
        self.assertEqual([limiter.allow("a") is None for _ in range(3)],
                         [True, True, False])

    def test_badArguments(self):
        """
        Negative or non-finite rates and bursts below 1 are refused.
        """
        for kwargs in ({"rate": -1}, {"rate": float("nan")},
                       {"rate": 1, "burst": 0.5}, {"rate": 1, "maxKeys": 0}):
            self.assertRaises(ValueError, RateLimiter, self.clock, **kwargs)


class ConfigTests(unittest.TestCase):
    """
    The C{[policy]} table and the C{[sip]} access keys.
    """

    def test_defaults(self):
        """
        By default only loopback may send, any sender domain passes (the
        gateway's own SIP domain excepted) and rates are limited.
        """
        config = Config.defaults()
        self.assertEqual(config.sip.allow_from, ("127.0.0.0/8", "::1/128"))
        self.assertIsNone(config.sip.tls_ca)
        policy = Policy.fromConfig(config, Clock())
        self.assertTrue(policy.sourceAllowed("127.0.0.5"))
        self.assertFalse(policy.sourceAllowed("192.0.2.1"))
        self.assertIsNone(policy.senders.checkSIPSender("sip.example"))
        self.assertIsNotNone(policy.senders.checkSIPSender(config.xmpp.gateway_domain))
        self.assertTrue(policy.perSource.enabled and policy.perSender.enabled)
        self.assertEqual(policy.stanzaMaxSize, 65536)

    def test_servedDomains(self):
        """
        Served SIP domains are C{sip_domains} plus the gwmap keys.
        """
        config = policyConfig(
            xmpp={"gwmap": "sip.a=xmpp.a"},
            policy={"sip_domains": ["SIP.B"], "xmpp_domains": ["xmpp.c"]})
        policy = Policy.fromConfig(config, Clock())
        self.assertEqual(policy.senders.sipDomains, {"sip.a", "sip.b"})
        self.assertEqual(policy.senders.xmppDomains, {"xmpp.c"})
        self.assertIsNotNone(policy.senders.checkSIPSender("sip.c"))

    def test_errors(self):
        """
        Bad networks, an empty allow_from, bad domains, negative rates, a
        tiny stanza limit and a tls_ca without a tls socket are all
        reported at once.
        """
        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        e = self.assertRaises(ConfigError, parseConfig, {
            "sip": {"allow_from": ["10.0.0.0/8", "nonsense"], "tls_ca": pem},
            "policy": {"sip_domains": ["bad domain"], "rate_per_sender": -1,
                       "stanza_max_size": 100},
        }, "<test>")
        paths = sorted(path for path, _ in e.errors)
        self.assertEqual(paths, [
            "policy.rate_per_sender", "policy.sip_domains[0]",
            "policy.stanza_max_size", "sip.allow_from[1]", "sip.tls_ca"])
        e = self.assertRaises(ConfigError, parseConfig,
                              {"sip": {"allow_from": []}}, "<test>")
        self.assertIn("0.0.0.0/0", str(e))

    def test_reconfigure(self):
        """
        A reload replaces the lists and rates; buckets survive.
        """
        clock = Clock()
        policy = Policy.fromConfig(Config.defaults(), clock)
        policy.perSender.allow("x")
        policy.reconfigure(policyConfig(
            sip={"allow_from": ["192.0.2.0/24"]},
            policy={"rate_per_sender": 0}))
        self.assertTrue(policy.sourceAllowed("192.0.2.1"))
        self.assertFalse(policy.sourceAllowed("127.0.0.1"))
        self.assertFalse(policy.perSender.enabled)


class TransportAccessTests(TransportTestMixin, unittest.TestCase):
    """
    C{allow_from} in L{xmppgw.sip.transport.SIPTransport}.
    """

    def setUp(self):
        TransportTestMixin.setUp(self)
        self.sip.allowFrom = AccessList(["192.0.2.0/24"])

    def test_udpRefused403(self):
        """
        A UDP request from outside allow_from gets 403 and never reaches
        the transaction layer.
        """
        self.udpProtocol().datagramReceived(rawRequest(), CLIENT)
        self.assertEqual(self.receiver.received, [])
        [(data, addr)] = self.udpWritten()
        self.assertEqual(addr, CLIENT)
        self.assertTrue(data.startswith(b"SIP/2.0 403 "), data)
        self.assertEqual(self.sip.refusedSources, 1)

    def test_udpGarbageDropped(self):
        """
        Garbage and responses from outside allow_from get no answer.
        """
        proto = self.udpProtocol()
        proto.datagramReceived(b"\x00garbage\r\n\r\n", CLIENT)
        proto.datagramReceived(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\n\r\n", CLIENT)
        self.assertEqual(self.udpWritten(), [])
        self.assertEqual(self.receiver.received, [])

    def test_udpAllowed(self):
        """
        A request from inside allow_from goes up.
        """
        self.udpProtocol().datagramReceived(
            rawRequest(via="SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKa"), ("192.0.2.99", 5060))
        self.assertEqual(len(self.receiver.received), 1)

    def test_tcpRefusedAtAccept(self):
        """
        A TCP connection from outside allow_from gets no protocol (closed
        at once, nothing read); one from inside is accepted.
        """
        factory = self.tcpFactory()
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "198.51.100.7", 4000)))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.8", 4000)))

    def test_requestOnOutboundConnection(self):
        """
        A request arriving on a stream from a peer outside allow_from (a
        connection the gateway opened) gets 403, not the transaction layer.
        """
        self.sip.allowFrom = AccessList(["198.51.100.0/24"])
        protocol, transport = self.connectInbound()
        self.sip.allowFrom = AccessList(["192.0.2.0/24"])
        protocol.dataReceived(rawRequest(via="SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKt"))
        self.assertEqual(self.receiver.received, [])
        self.assertTrue(transport.value().startswith(b"SIP/2.0 403 "))

    def test_tlsClientCertificates(self):
        """
        With a CA configured, TLS listeners require and verify client
        certificates signed by it.
        """
        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        sip = self.makeTransport([("tls", "127.0.0.1", 5061)], tlsCertificate=pem,
                                 tlsPrivateKey=pem, tlsCA=pem)
        options = sip._serverTLSOptions()
        self.assertTrue(options.verify)
        self.assertTrue(options.requireCertificate)
        self.assertIsNotNone(options.trustRoot)
        plain = self.makeTransport([("tls", "127.0.0.1", 5062)], tlsCertificate=pem,
                                   tlsPrivateKey=pem)
        self.assertFalse(plain._serverTLSOptions().verify)


class FakeSource:
    def __init__(self, host):
        self.host = host


class RouterPolicyTests(RouterTestsMixin, unittest.TestCase):
    """
    Sender policy and rate limits in the router.
    """

    def setUp(self):
        RouterTestsMixin.setUp(self)
        self.policy = Policy(self.clock, allowFrom=None, sipDomains=["sip.example"],
                             refusedSIPDomains=[GW], ratePerSource=100,
                             ratePerSourceBurst=100, ratePerSender=1,
                             ratePerSenderBurst=2)
        self.router.policy = self.policy

    def receive(self, request, source="192.0.2.1"):
        from tests.test_router import FakeServerTransaction
        if source is not None:
            request.source = FakeSource(source)
        transaction = FakeServerTransaction()
        self.router.sipRequestReceived(request, transaction)
        return transaction.responses

    def test_servedDomain(self):
        """
        A MESSAGE from a served SIP domain is relayed.
        """
        [r] = self.receive(sipMessage())
        self.assertEqual(r.code, 202)
        self.assertEqual(len(self.link.sent), 1)

    def test_foreignDomain403(self):
        """
        A MESSAGE whose From host is not served gets 403; nothing is sent.
        """
        [r] = self.receive(sipMessage(sender="sip:mallory@evil.example"))
        self.assertEqual(r.code, 403)
        self.assertEqual(self.link.sent, [])

    def test_senderRate503(self):
        """
        Beyond its burst a sender gets 503 with Retry-After; after the wait
        it is relayed again.
        """
        codes = [self.receive(sipMessage(branch=f"z9hG4bK{i}"))[0].code for i in range(3)]
        self.assertEqual(codes, [202, 202, 503])
        [r] = self.receive(sipMessage(branch="z9hG4bKx"))
        self.assertEqual(r.headers.get("Retry-After"), "1")
        self.clock.advance(1)
        self.assertEqual(self.receive(sipMessage(branch="z9hG4bKy"))[0].code, 202)

    def test_sourceRate503(self):
        """
        Beyond its burst a source address gets 503 with Retry-After, for
        any method.
        """
        self.policy.perSource.configure(1, 1)
        self.assertEqual(self.receive(sipMessage(method="OPTIONS"))[0].code, 200)
        [r] = self.receive(sipMessage(branch="z9hG4bK2"))
        self.assertEqual((r.code, r.headers.get("Retry-After")), (503, "1"))

    def test_ackNeverAnswered(self):
        """
        An ACK is never answered, even beyond the rate.
        """
        self.policy.perSource.configure(1, 1)
        self.receive(sipMessage(method="OPTIONS"))
        self.assertEqual(self.receive(sipMessage(method="ACK")), [])

    def test_xmppForbidden(self):
        """
        An XMPP message from a domain outside xmpp_domains gets
        <forbidden/>; nothing goes to SIP.
        """
        self.policy.senders = SenderPolicy(["sip.example"], ["xmpp.example"])
        self.router.xmppMessageReceived(xmppMessage(sender="eve@evil.example/x"))
        self.assertEqual(self.sip.sent, [])
        [error] = self.link.sent
        self.assertEqual(error["type"], "error")
        self.assertEqual(error.error.firstChildElement().name, "forbidden")

    def test_xmppRateLimit(self):
        """
        Beyond its burst an XMPP sender (bare JID, any resource) gets
        <policy-violation/>; an error stanza is never answered.
        """
        for i, resource in enumerate(("a", "b", "c")):
            self.router.xmppMessageReceived(xmppMessage(
                sender=f"alice@xmpp.example/{resource}", to=f"u{i}*sip.example@gw.example"))
        self.assertEqual(len(self.sip.sent), 2)
        [error] = self.link.sent
        self.assertEqual(error.error.firstChildElement().name, "policy-violation")
        bounced = xmppMessage(sender="alice@xmpp.example/a", type="error")
        self.router.xmppMessageReceived(bounced)
        self.assertEqual(len(self.link.sent), 1)

    def test_xmppLoop(self):
        """
        An XMPP message whose SIP destination is the gateway's own SIP
        domain is refused (a loop), even without a policy.
        """
        self.router.policy = None
        self.router.xmppMessageReceived(xmppMessage(to="bob*gw.example@gw.example"))
        self.assertEqual(self.sip.sent, [])
        [error] = self.link.sent
        self.assertIn("Loop", str(error.error.text))


class ShutdownTests(RouterTestsMixin, unittest.TestCase):
    """
    L{MessageRouter.shutdown} and L{GatewayService}.
    """

    def receive(self, request):
        from tests.test_router import FakeServerTransaction
        transaction = FakeServerTransaction()
        self.router.sipRequestReceived(request, transaction)
        return transaction

    def test_heldAnswered503(self):
        """
        Held MESSAGEs get 503 with Retry-After at shutdown, and a new one
        gets 503 at once.
        """
        self.link.isAuthenticated = False
        held = [self.receive(sipMessage(branch=f"z9hG4bK{i}")) for i in range(2)]
        d = self.router.shutdown()
        self.assertEqual([t.responses[0].code for t in held], [503, 503])
        self.assertTrue(d.called)
        later = self.receive(sipMessage(branch="z9hG4bKlate"))
        self.assertEqual(later.responses[0].code, 503)
        self.assertEqual(later.responses[0].headers.get("Retry-After"), "5")
        self.clock.advance(100)  # hold timers were cancelled: no second answer
        self.assertEqual([len(t.responses) for t in held], [1, 1])

    def test_inFlightAwaited(self):
        """
        Shutdown waits for a SIP transaction in flight, bounces what is
        queued behind it and refuses new XMPP messages.
        """
        self.router.xmppMessageReceived(xmppMessage(id="m1"))
        self.router.xmppMessageReceived(xmppMessage(id="m2"))
        d = self.router.shutdown()
        self.assertFalse(d.called)
        [bounce] = self.link.sent
        self.assertEqual((bounce["id"], bounce.error.firstChildElement().name),
                         ("m2", "service-unavailable"))
        self.router.xmppMessageReceived(xmppMessage(id="m3"))
        self.assertEqual(self.link.sent[-1]["id"], "m3")
        self.assertEqual(len(self.sip.sent), 1)
        self.sip.sent[0][2].callback(response(202))
        self.assertTrue(d.called)

    def test_serviceDrainsThenStops(self):
        """
        L{GatewayService.stopService} stops its children only after the
        drain; after C{drainTimeout} the in-flight senders get
        <remote-server-timeout/> and a late answer is ignored.
        """
        top = GatewayService(self.clock, self.router, drainTimeout=3,
                             handleSIGUSR1=False)
        stopped = []

        class Child(service.Service):
            def stopService(self):
                stopped.append(True)

        Child().setServiceParent(top)
        top.startService()
        self.router.xmppMessageReceived(xmppMessage(id="m1"))
        d = top.stopService()
        self.clock.advance(2.9)
        self.assertEqual((stopped, d.called), ([], False))
        self.clock.advance(0.1)
        self.assertEqual((stopped, d.called), ([True], True))
        [bounce] = self.link.sent
        self.assertEqual(bounce.error.firstChildElement().name, "remote-server-timeout")
        self.sip.sent[0][2].errback(Failure(TransactionTimeout()))
        self.assertEqual(len(self.link.sent), 1)

    def test_sigtermExitsZero(self):
        """
        After a clean stop the SIGTERM twistd recorded is cleared, so the
        process exits 0 instead of re-raising it.
        """
        self.clock._exitSignal = signal.SIGTERM
        top = GatewayService(self.clock, self.router, handleSIGUSR1=False)
        top.startService()
        d = top.stopService()
        self.assertTrue(d.called)
        self.assertIsNone(self.clock._exitSignal)


class SafeXMLTests(unittest.TestCase):
    """
    L{xmppgw.safexml}: restricted XML on the component stream.
    """

    def parse(self, data, maxStanzaSize=None):
        stream = hardenParser(domish.elementStream(), maxStanzaSize)
        events = []
        stream.DocumentStartEvent = lambda e: events.append("start")
        stream.ElementEvent = lambda e: events.append(e.toXml())
        stream.DocumentEndEvent = lambda: events.append("end")
        stream.parse(data)
        return events

    def test_billionLaughs(self):
        """
        A DOCTYPE with entity declarations is refused before any entity is
        declared or expanded.
        """
        lol = (b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaaaaaaaa">'
               + b"".join(b'<!ENTITY a%d "&a%s;&a%s;&a%s;&a%s;">' % (i, b"" if i == 1 else str(i - 1).encode(), b"" if i == 1 else str(i - 1).encode(), b"" if i == 1 else str(i - 1).encode(), b"" if i == 1 else str(i - 1).encode()) for i in range(1, 10))
               + b']><s><m>&a9;</m></s>')
        self.assertRaises(RestrictedXML, self.parse, lol)

    def test_forbiddenConstructs(self):
        """
        Comments, processing instructions and undefined entities are XML
        errors; predefined and character entities are fine.
        """
        for data in (b"<s><!-- x --></s>", b"<s><?pi x?></s>", b"<s><m>&x;</m></s>"):
            self.assertRaises(domish.ParserError, self.parse, data)
        self.assertEqual(self.parse(b"<s><m a='&amp;'>&#65;&lt;</m></s>"),
                         ["start", "<m a='&amp;'>A&lt;</m>", "end"])

    def test_stanzaSize(self):
        """
        A stanza over the limit, fed in pieces, is an error.
        """
        stream = hardenParser(domish.elementStream(), 100)
        stream.DocumentStartEvent = stream.ElementEvent = lambda e: None
        stream.parse(b"<s><m>")
        self.assertRaises(domish.ParserError, stream.parse, b"x" * 200)

    def test_stanzaSizeResets(self):
        """
        The byte count starts again with each stanza: stanzas each under
        the limit pass however many there are.
        """
        stream = hardenParser(domish.elementStream(), 100)
        stanzas = []
        stream.DocumentStartEvent = lambda e: None
        stream.ElementEvent = stanzas.append
        stream.parse(b"<s>")
        for _ in range(5):
            stream.parse(b"<m>" + b"x" * 60 + b"</m>")
        self.assertEqual(5, len(stanzas))

    def test_elementCount(self):
        """
        A stanza with more elements than C{maxElementCount} is an error;
        the count starts again with each stanza.
        """
        stream = hardenParser(domish.elementStream(), 10000)
        stream.maxElementCount = 3
        stream.DocumentStartEvent = stream.ElementEvent = lambda e: None
        stream.parse(b"<s><m><a/><b/></m><m><a/><b/></m>")
        self.assertRaises(domish.ParserError, stream.parse, b"<m><a/><b/><c/></m>")

    def feedHardened(self, stanza):
        """
        Feed a hardened stream (with its parser's own C{intern}
        dictionary) three times L{INTERN_LIMIT} stanzas, C{stanza} with
        C{%(n)d} replaced by each C{n}; check the dictionary stayed bounded and every
        stanza came out.

        @return: the stanzas.
        """
        stream = hardenParser(domish.elementStream(), 10000)
        stanzas = []
        stream.DocumentStartEvent = lambda e: None
        stream.ElementEvent = stanzas.append
        stream.parse(b"<s xmlns='jabber:component:accept'>")
        count = INTERN_LIMIT * 3
        for n in range(count):
            stream.parse(stanza % {b"n": n})
        self.assertLessEqual(len(stream.parser.intern), INTERN_LIMIT + 10)
        self.assertEqual(count, len(stanzas))
        return stanzas

    def test_internBounded(self):
        """
        A long-lived stream's parser does not keep every attribute value it
        has seen (PyPy's expat interns them): its C{intern} dictionary stays
        bounded, and the stanzas still parse whole.
        """
        stanzas = self.feedHardened(
            b"<message id='m%(n)d' to='u%(n)d@x'><body>%(n)d</body></message>")
        count = len(stanzas)
        last = stanzas[-1]
        self.assertEqual(("m%d" % (count - 1,), "u%d@x" % (count - 1,),
                          str(count - 1)),
                         (last["id"], last["to"], str(last.body)))

    def test_internNamesBounded(self):
        """
        New element and attribute names do not grow a long-lived parser's
        C{intern} dictionary without bound either (every expat keeps
        names).
        """
        stanzas = self.feedHardened(b"<message a%(n)d='v'><x%(n)d/></message>")
        self.assertEqual("x%d" % (len(stanzas) - 1,),
                         stanzas[-1].firstChildElement().name)

    def test_xmlStreamDropsConnection(self):
        """
        A hardened L{XmlStream} drops the connection at a DOCTYPE, also
        after a reset.
        """
        from twisted.internet.testing import StringTransport
        xs = XmlStream()
        xs.makeConnection(StringTransport())
        hardenXmlStream(xs, 1000)
        xs.reset = lambda: xs._initializeStream()
        xs.reset()
        self.assertEqual(xs.stream.maxStanzaSize, 1000)
        xs.dataReceived(b"<!DOCTYPE s><s>")
        self.assertTrue(xs.transport.disconnecting)


class LogReopenTests(unittest.TestCase):
    """
    SIGUSR1: reopen a log moved away, else rotate (twistd).
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.path = os.path.join(self.dir, "gw.log")
        self.logFile = logfile.LogFile.fromFullPath(self.path)
        self.addCleanup(self.logFile.close)

    def twistdHandler(self):
        logFile = self.logFile

        def rotateLog(signal, frame):  # what twistd installs
            logFile.rotate()

        return rotateLog

    def test_findLogFile(self):
        """
        The LogFile is found in twistd's handler; not in other callables.
        """
        self.assertIs(findLogFile(self.twistdHandler()), self.logFile)
        self.assertIsNone(findLogFile(signal.SIG_DFL))
        self.assertIsNone(findLogFile(lambda s, f: None))

    def test_reopenAfterMove(self):
        """
        After the file was moved away, the handler reopens the path;
        otherwise it rotates like twistd.
        """
        clock = Clock()
        reopener = LogReopener(self.logFile, clock)
        self.logFile.write("one\n")
        os.rename(self.path, self.path + ".old")
        self.assertTrue(reopener.moved())
        reopener.handle()
        self.logFile.write("two\n")
        with open(self.path) as f:
            self.assertEqual(f.read(), "two\n")
        self.assertFalse(reopener.moved())
        reopener.handle()
        self.assertEqual((reopener.reopened, reopener.rotated), (1, 1))
        self.assertTrue(os.path.exists(self.path + ".1"))

    def test_install(self):
        """
        L{LogReopener.install} replaces a twistd handler and
        L{LogReopener.uninstall} puts it back; without one it does nothing.
        """
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        handler = self.twistdHandler()
        signal.signal(signal.SIGUSR1, handler)
        reopener = LogReopener.install(Clock())
        self.assertIs(reopener.logFile, self.logFile)
        self.assertEqual(signal.getsignal(signal.SIGUSR1), reopener._signalled)
        reopener.uninstall()
        self.assertIs(signal.getsignal(signal.SIGUSR1), handler)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.assertIsNone(LogReopener.install(Clock()))


class ParsedSourceTests(unittest.TestCase):
    """
    The router's source limit uses the transport's L{Source}.
    """

    def test_sourceKey(self):
        """
        A parsed request carrying a L{Source} is limited by its host.
        """
        clock = Clock()
        policy = Policy(clock, allowFrom=None, ratePerSource=1, ratePerSourceBurst=1)
        request = parseMessage(rawRequest())
        request.source = Source("udp", "192.0.2.1", 5060)
        self.assertIsNone(policy.perSource.allow(request.source.host))
        self.assertIsNotNone(policy.perSource.allow("192.0.2.1"))
        self.assertIsNone(policy.perSource.allow("192.0.2.2"))

