"""
Interop tests of the whole gateway: C{twistd xmppgw} as an XEP-0114
component of a private Prosody (host C{xmpp.test}, component
C{gw.xmpp.test}), driven from SIP with raw sockets and sipp, and from XMPP
with a slixmpp client (C{alice@xmpp.test}).

Each test class runs one Prosody and one gateway, shared by its tests (see
L{harness.SharedFixture}); every wait is bounded. The rules checked are
those of C{interworking.md}: addresses section 2.7, messages 3.1/3.2, UAS
checks 3.5, errors 3.6, and project decisions 1, 4 and 12.
"""

import re
import secrets
import threading
import time

from twisted.trial.unittest import TestCase

from tests.interop.harness import (
    LOCAL, GatewayProcess, HarnessError, PrivateProsody, SharedFixture,
    SIPReceiver, SIPUDPClient, XMPPClient, buildMessage, buildOptions,
    buildRequest, cleanupAll, freePort, gatewayConfig, makeWorkdir,
    messageWith, newCallID, requirePeers, runSipp, sipSendManyUDP, sipSendTCP,
    uniqueID)
from xmppgw import compiled

BODY = "héllo <b>&amp;</b> 'q' \"x\" 😀"
GATEWAY = "gw.xmpp.test"
ALICE = "alice@xmpp.test"
ALICE_VIA_SIP = "sip:alice*xmpp.test@gw.xmpp.test"
BOB_SIP = "sip:bob@sip.test"
BOB_VIA_XMPP = "bob*sip.test@gw.xmpp.test"


def uriOf(nameAddr):
    """
    The URI inside a From/To header value (C{<...>} or bare form), without
    header parameters.
    """
    match = re.search(r"<([^>]*)>", nameAddr)
    if match:
        return match.group(1)
    return nameAddr.split(";", 1)[0].strip()


def uriParams(uri):
    """
    C{(uri without parameters, {name: value})}.
    """
    base, *params = uri.split(";")
    values = {}
    for param in params:
        name, _, value = param.partition("=")
        values[name.strip().lower()] = value.strip()
    return base, values


def headerParams(nameAddr):
    """
    The header parameters after the URI of a From/To value (e.g. the tag).
    """
    rest = nameAddr[nameAddr.index(">") + 1:] if ">" in nameAddr else (
        nameAddr.split(";", 1)[1] if ";" in nameAddr else "")
    values = {}
    for param in rest.split(";"):
        if param.strip():
            name, _, value = param.partition("=")
            values[name.strip().lower()] = value.strip()
    return values


def normalisedType(value):
    return (value or "").replace(" ", "").lower()


class GatewayTestCase(TestCase):
    """
    Base: a Prosody, optionally a L{SIPReceiver} as the gateway's outbound
    proxy, the gateway, and Alice online; shared by the tests of the class.
    """

    #: "udp" or "tcp": run a SIPReceiver and make it the outbound proxy
    receiverProto = None
    gwmap = None
    t1 = None
    holdTimeout = None
    #: more C{[sip]} keys, C{{key: TOML text}}
    extraSIP = None
    peers = ("prosody", "prosodyctl")
    #: the C{twistd} to run the gateway with, L{None} for the test venv's
    twistd = None
    #: variables added to the gateway's environment, or L{None}
    gatewayEnviron = None

    prosody = None
    gateway = None
    receiver = None
    alice = None
    sipPort = None

    @classmethod
    def setUpClass(cls):
        requirePeers(*cls.peers)
        cls.prosody = PrivateProsody(
            makeWorkdir(f"prosody-{cls.__name__}"), domain="xmpp.test",
            componentDomain=GATEWAY, componentSecret=secrets.token_hex(8),
            users={"alice": "alice-pw"})
        cls.prosody.start()
        if cls.receiverProto:
            cls.receiver = SIPReceiver(cls.receiverProto).start()
        cls.sipPort = freePort("both")
        cls.gateway = GatewayProcess(
            gatewayConfig(
                cls.prosody, cls.sipPort, gwmap=cls.gwmap,
                outboundProxy=cls.receiver.uri if cls.receiver else None,
                t1=cls.t1, holdTimeout=cls.holdTimeout,
                extraSIP=cls.extraSIP),
            workdir=makeWorkdir(f"gateway-{cls.__name__}"),
            twistd=cls.twistd, environ=cls.gatewayEnviron)
        cls.gateway.start(timeout=30)
        cls.alice = XMPPClient(ALICE, "alice-pw", cls.prosody.c2sPort).start()

    @classmethod
    def tearDownClass(cls):
        cleanupAll(cls.alice, cls.gateway, cls.receiver, cls.prosody)
        cls.alice = cls.gateway = cls.receiver = cls.prosody = None

    def setUp(self):
        SharedFixture.acquire(type(self))
        if self.receiver is not None:
            self.receiver.status = 200
            self.receiver.clear()

    # helpers

    def context(self):
        """
        The gateway's log tail, for failure messages.
        """
        return self.gateway.describe() if self.gateway else "(no gateway)"

    def sendMessage(self, body=BODY, ruri=ALICE_VIA_SIP, fromURI=BOB_SIP,
                    proto="udp", callID=None,
                    contentType="text/plain;charset=UTF-8", timeout=10.0):
        """
        Send one SIP MESSAGE to the gateway and return C{(callID,
        response)}.
        """
        callID = callID or newCallID()
        try:
            if proto == "udp":
                with SIPUDPClient() as client:
                    request = buildMessage(ruri, fromURI, body, callID=callID,
                                           contentType=contentType,
                                           viaPort=client.port)
                    response = client.request(LOCAL, self.sipPort, request,
                                              timeout)
            else:
                request = buildMessage(ruri, fromURI, body, callID=callID,
                                       contentType=contentType,
                                       transport="TCP")
                response = sipSendTCP(LOCAL, self.sipPort, request, timeout)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.context()}")
        return callID, response

    def aliceGets(self, timeout=10.0, **fields):
        """
        The message Alice receives with the given fields.
        """
        try:
            return self.alice.expectMessage(timeout=timeout, **fields)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.context()}")

    def assertOnce(self, predicate, settle=1.0):
        """
        After C{settle} seconds, exactly one message Alice received matches.
        """
        time.sleep(settle)
        got = self.alice.messages(predicate)
        self.assertEqual(len(got), 1, f"{got}\n{self.context()}")

    def assertAccepted(self, response):
        """
        A 202 with a To tag, no Contact and no body (RFC 3428 section 7).
        """
        self.assertEqual(response.code, 202, f"{response}\n{self.context()}")
        self.assertIn("tag", headerParams(response.header("To", "")))
        self.assertIsNone(response.header("Contact"), str(response))
        self.assertEqual(response.body, b"", str(response))

    def receiverGets(self, predicate, count=1, timeout=10.0):
        try:
            return self.receiver.waitForMatching(predicate, count, timeout)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.context()}")


class SIPToXMPPTests(GatewayTestCase):
    """
    SIP MESSAGE -> XMPP, separator scheme.
    """

    peers = ("prosody", "prosodyctl", "sipp")

    def checkDelivered(self, proto):
        callID, response = self.sendMessage(proto=proto)
        self.assertAccepted(response)
        got = self.aliceGets(thread=callID)
        self.assertEqual(got["body"], BODY)
        self.assertEqual(got["from"], BOB_VIA_XMPP)
        self.assertEqual(got["to"], ALICE)
        self.assertIn(got["type"], (None, "normal"))
        self.assertIsNone(got["error"])
        self.assertOnce(messageWith(thread=callID))

    def test_udpMessage(self):
        """
        A MESSAGE over UDP is answered 202, and Alice gets exactly its body,
        from bob*sip.test@gw.xmpp.test, with no type and the Call-ID as
        thread, once.
        """
        self.checkDelivered("udp")

    def test_tcpMessage(self):
        """
        The same over TCP.
        """
        self.checkDelivered("tcp")

    def test_buildReported(self):
        """
        The gateway twistd started runs the same build as these tests and
        says so at start-up: plain Python in the main run, every hot
        module compiled in C{make test-compiled}'s run
        (L{xmppgw.compiled}).
        """
        expected = compiled.describe(compiled.checkCurrent())
        self.assertIn(f"[xmppgw.compiled#info] {expected}\n",
                      self.gateway.log())

    def test_sippBurst(self):
        """
        sipp sends 20 MESSAGEs: all are answered 2xx, and Alice receives 20,
        each with its own thread.
        """
        body = f"burst {uniqueID()} {BODY}"
        result = runSipp(
            "message_uac.xml", f"{LOCAL}:{self.sipPort}", count=20, rate=50,
            timeout=30, keys={"ruri": ALICE_VIA_SIP, "to_uri": ALICE_VIA_SIP,
                              "from_uri": BOB_SIP, "body": body})
        self.assertEqual((result.returncode, result.successful, result.failed),
                         (0, 20, 0), f"{result.describe()}\n{self.context()}")
        try:
            got = self.alice.waitMessages(
                lambda e: e.get("body") == body, 20, timeout=15)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.context()}")
        self.assertEqual(len({e["thread"] for e in got}), 20)
        time.sleep(1.0)
        self.assertEqual(
            len(self.alice.messages(lambda e: e.get("body") == body)), 20)

    def test_retransmissionAbsorbed(self):
        """
        The same UDP MESSAGE (same branch) sent three times gets the same
        final response each time and reaches Alice once.
        """
        callID = newCallID()
        with SIPUDPClient() as client:
            request = buildMessage(ALICE_VIA_SIP, BOB_SIP, BODY,
                                   callID=callID, viaPort=client.port)
            responses = [
                client.request(LOCAL, self.sipPort, request, timeout=10,
                               retransmit=False)
                for _ in range(3)]
        self.assertEqual([r.code for r in responses], [202] * 3,
                         self.context())
        self.assertEqual(len({r.header("To") for r in responses}), 1,
                         [str(r) for r in responses])
        self.aliceGets(thread=callID)
        self.assertOnce(messageWith(thread=callID), settle=1.5)

    def test_unmappableTarget(self):
        """
        A Request-URI without the separator cannot be mapped: 404.
        """
        _, response = self.sendMessage(ruri="sip:alice@gw.xmpp.test")
        self.assertEqual(response.code, 404, f"{response}\n{self.context()}")

    def test_htmlBody(self):
        """
        A text/html body is refused with 415 and an Accept header naming
        text/plain.
        """
        _, response = self.sendMessage(body="<b>hi</b>",
                                       contentType="text/html")
        self.assertEqual(response.code, 415, f"{response}\n{self.context()}")
        self.assertIn("text/plain", (response.header("Accept") or "").lower())

    def test_options(self):
        """
        OPTIONS is answered 200 with an Allow header listing MESSAGE.
        """
        with SIPUDPClient() as client:
            response = client.request(
                LOCAL, self.sipPort,
                buildOptions(f"sip:{GATEWAY}", viaPort=client.port))
        self.assertEqual(response.code, 200, str(response))
        self.assertIn("MESSAGE", response.header("Allow") or "", str(response))

    def test_unknownMethod(self):
        """
        A method the gateway does not support (INFO) gets 405 with Allow.
        """
        with SIPUDPClient() as client:
            response = client.request(
                LOCAL, self.sipPort,
                buildRequest("INFO", ALICE_VIA_SIP, BOB_SIP, ALICE_VIA_SIP,
                             viaPort=client.port))
        self.assertEqual(response.code, 405, str(response))
        self.assertIsNotNone(response.header("Allow"), str(response))


class XMPPToSIPTestsMixin:
    """
    XMPP -> SIP through the outbound proxy (a L{SIPReceiver}).
    """

    def test_messageToSIP(self):
        """
        Alice's message becomes a MESSAGE to sip:carol@sip.test: From is
        Alice's mapped address with a tag (a ;gr= only for her resource),
        no Contact, Max-Forwards 70, text/plain UTF-8, body byte-exact.
        """
        mid = uniqueID()
        self.alice.send("carol*sip.test@gw.xmpp.test", body=BODY, id=mid)
        (request,) = self.receiverGets(
            lambda r: r.method == "MESSAGE" and r.uri == "sip:carol@sip.test")[:1]
        self.assertEqual(request.transport, self.receiverProto)
        self.assertEqual(request.body, BODY.encode("utf-8"))
        self.assertEqual(int(request.header("Content-Length")),
                         len(BODY.encode("utf-8")))
        self.assertEqual(normalisedType(request.header("Content-Type")),
                         "text/plain;charset=utf-8")
        self.assertEqual(request.header("Max-Forwards"), "70")
        self.assertIsNone(request.header("Contact"), str(request))
        fromValue = request.header("From")
        base, params = uriParams(uriOf(fromValue))
        self.assertEqual(base, ALICE_VIA_SIP, fromValue)
        self.assertTrue(headerParams(fromValue).get("tag"), fromValue)
        resource = self.alice.waitReady()["jid"].split("/", 1)[1]
        if "gr" in params:
            self.assertEqual(params["gr"], resource, fromValue)
        self.assertEqual(set(params) - {"gr"}, set(), fromValue)
        self.assertEqual(uriOf(request.header("To")), "sip:carol@sip.test")
        self.assertTrue((request.branch or "").startswith("z9hG4bK"),
                        str(request))
        self.assertTrue(request.callID, str(request))
        self.assertTrue(request.cseq.endswith(" MESSAGE"), request.cseq)
        # success is silent on the XMPP side
        time.sleep(0.5)
        self.assertEqual(self.alice.messages(messageWith(id=mid)), [])
        self.assertEqual(len({r.branch for r in self.receiver.matching(
            lambda r: r.method == "MESSAGE")}), 1)

    def checkError(self, status, condition, target, timeout=10.0):
        self.receiver.status = status
        mid = uniqueID()
        self.alice.send(f"{target}*sip.test@gw.xmpp.test", body="x", id=mid)
        got = self.aliceGets(id=mid, timeout=timeout)
        self.assertEqual(got["type"], "error", got)
        self.assertEqual(got["error"]["condition"], condition, got)
        self.assertEqual(got["from"], f"{target}*sip.test@gw.xmpp.test", got)
        return got

    def test_error404(self):
        """
        A 404 from SIP comes back to Alice as item-not-found for her id.
        """
        self.checkError(404, "item-not-found", "dave")

    def test_error486(self):
        """
        A 486 comes back as recipient-unavailable.
        """
        self.checkError(486, "recipient-unavailable", "erin")


class XMPPToSIPUDPTests(XMPPToSIPTestsMixin, GatewayTestCase):
    """
    XMPP -> SIP over UDP, with T1 = 50 ms so that Timer F is 3.2 s.
    """

    receiverProto = "udp"
    t1 = 0.05
    holdTimeout = 2.0

    def test_silentTimeout(self):
        """
        A SIP side that never answers gives Alice remote-server-timeout once
        Timer F (64*T1 = 3.2 s) fires, not before.
        """
        start = time.monotonic()
        self.checkError(None, "remote-server-timeout", "frank", timeout=15.0)
        self.assertGreaterEqual(time.monotonic() - start, 64 * self.t1 - 0.2)
        # and the request was retransmitted (Timer E) meanwhile
        self.assertGreater(len(self.receiver.matching(
            lambda r: r.uri == "sip:frank@sip.test")), 1)


class XMPPToSIPTCPTests(XMPPToSIPTestsMixin, GatewayTestCase):
    """
    XMPP -> SIP over TCP.
    """

    receiverProto = "tcp"


class GwmapTests(GatewayTestCase):
    """
    The gwmap scheme: gwmap = ["sip.test=gw.xmpp.test"].
    """

    receiverProto = "udp"
    gwmap = ["sip.test=gw.xmpp.test"]

    def test_sipSenderMapped(self):
        """
        sip:bob@sip.test writing to sip:alice@xmpp.test reaches Alice as
        bob@gw.xmpp.test (the unmapped target domain passes through).
        """
        callID, response = self.sendMessage(ruri="sip:alice@xmpp.test")
        self.assertAccepted(response)
        got = self.aliceGets(thread=callID)
        self.assertEqual(got["from"], "bob@gw.xmpp.test")
        self.assertEqual(got["body"], BODY)

    def test_xmppTargetMapped(self):
        """
        Alice writing to dave@gw.xmpp.test sends a MESSAGE to
        sip:dave@sip.test, from sip:alice@xmpp.test.
        """
        mid = uniqueID()
        self.alice.send("dave@gw.xmpp.test", body=BODY, id=mid)
        (request,) = self.receiverGets(
            lambda r: r.method == "MESSAGE")[:1]
        self.assertEqual(request.uri, "sip:dave@sip.test", str(request))
        base, _ = uriParams(uriOf(request.header("From")))
        self.assertEqual(base, "sip:alice@xmpp.test", str(request))
        self.assertEqual(request.body, BODY.encode("utf-8"))


class ProsodyRestartTests(GatewayTestCase):
    """
    Prosody restarted (stop, 1 s down, start) while SIP MESSAGEs flow at
    50/s: the gateway holds what arrives while the link is down (project
    decision 12) and answers every MESSAGE within Timer F.

    XEP-0114 has no acknowledgements, so the component link confirms each
    batch of stanzas with a ping that Prosody routes back to it, and a
    MESSAGE gets its 2xx only then (L{ComponentLink.deliver}). A stanza
    written in the very instant Prosody shuts down is therefore answered
    5xx (504: written, not confirmed, so it may or may not arrive), never
    2xx. Both tests demand that every 2xx MESSAGE arrives exactly once.
    """

    count = 50
    rate = 50

    def traffic(self, marker, beforeSend=None, onSent=None, answeredAt=None):
        """
        Start sending C{count} MESSAGEs to Alice in a thread
        (C{answeredAt}: see L{sipSendManyUDP}).

        @return: C{(bodies, thread, outcome)}; C{outcome["results"]} is set
            when the thread ends.
        """
        port = freePort("udp")
        bodies = [f"{marker} #{i}" for i in range(self.count)]
        requests = [buildMessage(ALICE_VIA_SIP, BOB_SIP, body, viaPort=port)
                    for body in bodies]
        outcome = {}

        def send():
            try:
                outcome["results"] = sipSendManyUDP(
                    LOCAL, self.sipPort, requests, rate=self.rate, timeout=32,
                    localPort=port, onSent=onSent, beforeSend=beforeSend,
                    answeredAt=answeredAt)
            except BaseException as e:  # reported by outcomeOf
                outcome["error"] = e

        # Child processes are started from this (main) thread only: the
        # sender thread only sends (see localpeers.spawn).
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        return bodies, sender, outcome

    def outcomeOf(self, sender, outcome, bodies):
        """
        Wait for the sender; check every MESSAGE got a 2xx or a 5xx.

        @return: C{(codes, accepted bodies, summary text)}.
        """
        sender.join(60)
        self.assertFalse(sender.is_alive(), "sender still running after 60 s")
        self.assertNotIn("error", outcome, outcome.get("error"))
        codes = [r.code if r is not None else None
                 for r in outcome["results"]]
        summary = f"codes: {codes}\n{self.context()}"
        self.assertNotIn(None, codes, "no answer within Timer F: " + summary)
        for code in codes:
            self.assertTrue(200 <= code < 300 or 500 <= code < 600, summary)
        accepted = [bodies[i] for i, code in enumerate(codes) if code < 300]
        return codes, accepted, summary

    def received(self, marker):
        return [e["body"] for e in self.alice.messages(
            lambda e: (e.get("body") or "").startswith(marker + " "))]

    def test_restartMidTraffic(self):
        """
        Prosody stops after the 10th MESSAGE went through, the other 40 are
        sent while it is down, and it comes back 1 s later: every MESSAGE
        that got a 2xx reaches Alice exactly once (she reconnects; what
        arrives meanwhile waits in Prosody's offline store), the others got
        a 5xx.
        """
        marker = uniqueID("restart")
        paused, go = threading.Event(), threading.Event()

        def beforeSend(i):
            if i == 10:
                paused.set()
                go.wait(30)

        aliceReady = self.alice.readyCount()
        bodies, sender, outcome = self.traffic(marker, beforeSend=beforeSend)
        try:
            self.assertTrue(paused.wait(15), "sender did not start")
            self.alice.waitMessages(lambda e: e.get("body") in bodies[:10],
                                    10, timeout=10)
            self.prosody.stop()
            go.set()
            time.sleep(1.0)
            self.prosody.start()
        finally:
            go.set()
            sender.join(60)
        codes, accepted, summary = self.outcomeOf(sender, outcome, bodies)
        self.assertGreaterEqual(len(accepted), 10, summary)

        self.alice.waitReady(timeout=20, count=aliceReady + 1)
        try:
            self.alice.waitMessages(lambda e: e.get("body") in set(accepted),
                                    len(accepted), timeout=30)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{summary}")
        time.sleep(1.0)
        received = self.received(marker)
        for body in accepted:
            self.assertEqual(received.count(body), 1,
                             f"{body}: {received}\n{summary}")
        for body in set(bodies) - set(accepted):
            self.assertNotIn(body, received,
                             f"answered 5xx but delivered\n{summary}")

    def test_restartAtRandomMoment(self):
        """
        Prosody is restarted right after the 10th MESSAGE is sent, whatever
        is in flight: every MESSAGE is answered 2xx or 5xx within Timer F,
        nothing arrives twice, every 2xx one arrives, and nothing answered
        5xx arrives except a 504 one (written, unconfirmed at the stop).

        One exception to "every 2xx one arrives" is Prosody's own: when it
        stops, it closes its client sessions first and waits for them to
        close (mod_c2s, "server-stopping") while it still reads and routes
        the component's stream, so a stanza it takes in that wait is
        dropped with Alice's closing session, and the ping behind it,
        routed back to the gateway, confirms it (seen once in CI: a 2xx at
        the instant of the stop, the stanza never delivered). A MESSAGE
        whose 2xx arrived between the stop and the new start may
        therefore be missing (never arrive twice); every other 2xx one
        must arrive.
        """
        marker = uniqueID("random")
        tenth = threading.Event()
        aliceReady = self.alice.readyCount()
        answeredAt = [None] * self.count
        bodies, sender, outcome = self.traffic(
            marker, onSent=lambda i: i == 9 and tenth.set(),
            answeredAt=answeredAt)
        try:
            self.assertTrue(tenth.wait(15), "sender did not start")
            # self.prosody.restart(downtime=1.0), timed: until the new
            # Prosody starts, no 2xx can come from anything but the one
            # stopping (the gateway holds what arrives while it is down).
            stopping = time.monotonic()
            self.prosody.stop()
            time.sleep(1.0)
            restarting = time.monotonic()
            self.prosody.start()
        finally:
            sender.join(60)
        codes, accepted, summary = self.outcomeOf(sender, outcome, bodies)
        self.assertGreaterEqual(len(accepted), 5, summary)
        whileStopping = {
            bodies[i] for i, at in enumerate(answeredAt)
            if at is not None and stopping <= at < restarting
            and codes[i] < 300}
        summary += "\n2xx while Prosody stopped: %s" % (sorted(whileStopping),)
        sure = set(accepted) - whileStopping

        self.alice.waitReady(timeout=20, count=aliceReady + 1)
        try:
            self.alice.waitMessages(lambda e: e.get("body") in sure,
                                    len(sure), timeout=30)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{summary}")
        time.sleep(2.0)
        received = self.received(marker)
        uncertain = {bodies[i] for i, code in enumerate(codes) if code == 504}
        for body in set(received):
            self.assertEqual(received.count(body), 1,
                             f"duplicate {body}: {received}\n{summary}")
            self.assertIn(body, set(accepted) | uncertain,
                          f"answered 5xx but delivered\n{summary}")
        missing = sorted(sure - set(received))
        self.assertEqual(missing, [], f"lost after 2xx: {missing}\n{summary}")
