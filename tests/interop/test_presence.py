"""
Interop tests of presence, typing notifications and receipts (issue 7):
C{twistd xmppgw} as a component of a private Prosody, the XMPP side a
slixmpp client (C{alice@xmpp.test}), the SIP side a raw-socket UA on
127.0.0.1 that is also the gateway's outbound proxy (so every request the
gateway sends for C{sip.test} reaches it). Every wait is bounded.
"""

import re
import secrets
import time

from twisted.trial.unittest import TestCase

from tests.interop.harness import (
    LOCAL, GatewayProcess, HarnessError, PrivateProsody, SharedFixture,
    SIPUDPClient, XMPPClient, buildRequest, buildResponse, cleanupAll, freePort,
    gatewayConfig, makeWorkdir, newCallID, requirePeers)
from xmppgw.chatstates import ISCOMPOSING_TYPE, buildIsComposing, parseIsComposing
from xmppgw.presence import buildPIDF, parsePIDF
from xmppgw.receipts import CPIM_TYPE, IMDN_TYPE, buildCPIM, buildIMDN, parseCPIM, parseIMDN

GATEWAY = "gw.xmpp.test"
ALICE = "alice@xmpp.test"
ALICE_VIA_SIP = "sip:alice*xmpp.test@gw.xmpp.test"


class SIPPeer:
    """
    A SIP user agent on a UDP socket, driven by the test: it answers every
    request it reads (NOTIFY/SUBSCRIBE 200, MESSAGE 202) and keeps them.
    """

    def __init__(self):
        self.client = SIPUDPClient(localPort=freePort("udp"))
        self.port = self.client.port
        self.requests = []
        self.cseq = 100

    def close(self):
        self.client.close()

    def _answer(self, request):
        extra = []
        if request.method == "SUBSCRIBE":
            extra = [("Expires", request.header("Expires") or "3600"),
                     ("Contact", f"<sip:peer@{LOCAL}:{self.port}>")]
        code = 202 if request.method == "MESSAGE" else 200
        self.client.send(request.source[0], request.source[1],
                         buildResponse(request, code, toTag="peer1", extraHeaders=extra))

    def waitRequest(self, predicate, timeout=10.0, what="request"):
        """
        The first request (already read, or read now) matching
        C{predicate}.
        """
        for request in list(self.requests):
            if predicate(request):
                self.requests.remove(request)
                return request
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.client.receive(deadline - time.monotonic())
            if message is None:
                break
            if not message.isRequest:
                continue
            if any(r.raw == message.raw for r in self.requests):
                continue
            self._answer(message)
            if predicate(message):
                return message
            self.requests.append(message)
        raise HarnessError(f"SIP peer: no {what} within {timeout} s; got "
                           f"{[r.startLine for r in self.requests]}")

    def request(self, gatewayPort, data, timeout=10.0):
        """
        Send a request to the gateway; answer whatever arrives meanwhile;
        return the final response.
        """
        self.client.send(LOCAL, gatewayPort, data)
        callID = re.search(rb"Call-ID: *(\S+)", data).group(1).decode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.client.receive(deadline - time.monotonic())
            if message is None:
                break
            if message.isRequest:
                self._answer(message)
                self.requests.append(message)
            elif message.callID == callID and message.code >= 200:
                return message
        raise HarnessError(f"no answer from the gateway to:\n{data.decode()}")


def method(name, **headers):
    def predicate(request):
        if request.method != name:
            return False
        for key, value in headers.items():
            if value not in (request.header(key.replace("_", "-")) or ""):
                return False
        return True
    return predicate


class PresenceInteropTests(TestCase):
    """
    Presence subscriptions, typing and receipts between Alice (XMPP) and
    SIP users at C{sip.test}.
    """

    peers = ("prosody", "prosodyctl")
    prosody = gateway = alice = peer = None

    @classmethod
    def setUpClass(cls):
        requirePeers(*cls.peers)
        cls.prosody = PrivateProsody(
            makeWorkdir(f"prosody-{cls.__name__}"), domain="xmpp.test",
            componentDomain=GATEWAY, componentSecret=secrets.token_hex(8),
            users={"alice": "alice-pw"})
        cls.prosody.start()
        cls.peer = SIPPeer()
        cls.sipPort = freePort("both")
        config = gatewayConfig(
            cls.prosody, cls.sipPort,
            outboundProxy=f"sip:{LOCAL}:{cls.peer.port}")
        config += "\n".join([
            "", "[presence]", "enabled = true",
            'store = "sqlite:presence.sqlite"', "receipts = true",
            "rate_per_sender = 0.0", ""])
        cls.gateway = GatewayProcess(config, workdir=makeWorkdir(f"gateway-{cls.__name__}"))
        cls.gateway.start(timeout=30)
        cls.alice = XMPPClient(ALICE, "alice-pw", cls.prosody.c2sPort).start()
        cls.alice.command(cmd="roster_policy", auto_authorize=True,
                          auto_subscribe=False, get_roster=True)
        cls.alice.expect(lambda e: e.get("kind") == "roster", timeout=10)

    @classmethod
    def tearDownClass(cls):
        cleanupAll(cls.alice, cls.gateway, cls.prosody)
        if cls.peer is not None:
            cls.peer.close()
        cls.alice = cls.gateway = cls.prosody = cls.peer = None

    def setUp(self):
        SharedFixture.acquire(type(self))

    def alicePresence(self, timeout=10.0, **fields):
        def predicate(event):
            return event.get("kind") == "presence" and all(
                event.get(k) == v for k, v in fields.items())
        return self.alice.expect(predicate, timeout=timeout)

    def aliceMessage(self, timeout=10.0, **fields):
        def predicate(event):
            return event.get("kind") == "message" and all(
                event.get(k) == v for k, v in fields.items())
        return self.alice.expect(predicate, timeout=timeout)

    def test_sipWatchesXMPP(self):
        """
        A SIP SUBSCRIBE for Alice: 200 at once, NOTIFY pending, Alice is
        asked; her approval gives NOTIFY active and her presence as PIDF;
        her presence change gives another NOTIFY.
        """
        watcher = "sip:bob@sip.test"
        data = buildRequest(
            "SUBSCRIBE", ALICE_VIA_SIP, watcher, ALICE_VIA_SIP,
            callID=newCallID(),
            extraHeaders=[("Event", "presence"), ("Accept", "application/pidf+xml"),
                          ("Expires", "600"),
                          ("Contact", f"<sip:bob@{LOCAL}:{self.peer.port}>")])
        response = self.peer.request(self.sipPort, data)
        self.assertEqual(response.code, 200, self.gateway.describe())
        self.assertEqual(response.header("Expires"), "600")
        pending = self.peer.waitRequest(
            method("NOTIFY", Subscription_State="pending"), what="NOTIFY pending")
        self.assertEqual(pending.body, b"")
        self.alicePresence(type="subscribe", **{"from": "bob*sip.test@gw.xmpp.test"})
        self.peer.waitRequest(method("NOTIFY", Subscription_State="active"),
                              what="NOTIFY active")
        opened = self.peer.waitRequest(
            lambda r: r.method == "NOTIFY" and b"<basic>open</basic>" in r.body,
            what="NOTIFY with open PIDF")
        self.assertEqual(opened.header("Content-Type"), "application/pidf+xml")
        self.alice.command(cmd="presence", show="away", status="Gone fishing")
        away = self.peer.waitRequest(
            lambda r: r.method == "NOTIFY" and b"Gone fishing" in r.body,
            what="NOTIFY with Alice's new status")
        [value] = parsePIDF(away.body).values()
        self.assertEqual((value["available"], value["show"], value["status"]),
                         (True, "away", "Gone fishing"))

    def test_xmppWatchesSIP(self):
        """
        Alice subscribes to carol@sip.test: a SUBSCRIBE reaches the SIP
        side; its NOTIFY active gives Alice 'subscribed' and Carol's
        presence; a closed PIDF gives 'unavailable'.
        """
        carol = "carol*sip.test@gw.xmpp.test"
        self.alice.command(cmd="presence", type="subscribe", to=carol)
        subscribe = self.peer.waitRequest(method("SUBSCRIBE"), what="SUBSCRIBE")
        self.assertEqual(subscribe.uri, "sip:carol@sip.test")
        self.assertEqual(subscribe.header("Event"), "presence")
        self.assertEqual(subscribe.header("Accept"), "application/pidf+xml")
        contact = re.search(r"<([^>]*)>", subscribe.header("Contact")).group(1)
        self.assertEqual(contact, f"sip:{LOCAL}:{self.sipPort}")

        def notify(cseq, state, body):
            return buildRequest(
                "NOTIFY", contact, "sip:carol@sip.test", "sip:x@x",
                callID=subscribe.callID, fromTag="peer1", cseq=cseq,
                body=body, contentType="application/pidf+xml",
                extraHeaders=[("Event", "presence"), ("Subscription-State", state),
                              ("Contact", f"<sip:carol@{LOCAL}:{self.peer.port}>")]
            ).replace(b"To: <sip:x@x>", b"To: " + subscribe.header("From").encode())

        body = buildPIDF("sip:carol@sip.test", {"desk": {
            "available": True, "status": "At my desk", "show": "chat"}})
        answer = self.peer.request(self.sipPort, notify(1, "active;expires=3600", body))
        self.assertEqual(answer.code, 200, self.gateway.describe())
        self.alicePresence(type="subscribed", **{"from": carol})
        online = self.alicePresence(type=None, **{"from": carol + "/desk"})
        self.assertEqual((online["status"], online["show"]), ("At my desk", "chat"))
        closed = buildPIDF("sip:carol@sip.test", {"desk": {"available": False}})
        self.peer.request(self.sipPort, notify(2, "active;expires=3600", closed))
        self.alicePresence(type="unavailable", **{"from": carol + "/desk"})

    def test_typing(self):
        """
        Chat states both ways: Alice's <composing/> becomes isComposing
        active; isComposing active from SIP becomes <composing/>.
        """
        dave = "dave*sip.test@gw.xmpp.test"
        self.alice.command(cmd="send", to=dave, type="chat", chatstate="composing")
        typing = self.peer.waitRequest(
            method("MESSAGE", Content_Type=ISCOMPOSING_TYPE), what="isComposing")
        self.assertEqual(typing.uri, "sip:dave@sip.test")
        self.assertEqual(parseIsComposing(typing.body)[0], "active")
        response = self.peer.request(self.sipPort, buildRequest(
            "MESSAGE", ALICE_VIA_SIP, "sip:dave@sip.test", ALICE_VIA_SIP,
            body=buildIsComposing("active", 60), contentType=ISCOMPOSING_TYPE))
        self.assertEqual(response.code, 202, self.gateway.describe())
        event = self.aliceMessage(chatstate="composing", **{"from": dave})
        self.assertIsNone(event["body"])

    def test_receipts(self):
        """
        Receipts both ways: Alice's request goes CPIM-wrapped with IMDN
        headers, the 202 is no receipt, the IMDN is; a SIP IMDN request
        reaches Alice as <request/>, her <received/> becomes an IMDN.
        """
        erin = "erin*sip.test@gw.xmpp.test"
        self.alice.command(cmd="send", to=erin, body="did you get it?",
                           id="rcpt-1", request_receipt=True)
        wrapped = self.peer.waitRequest(method("MESSAGE", Content_Type=CPIM_TYPE),
                                        what="CPIM MESSAGE")
        cpim, mime, content = parseCPIM(wrapped.body)
        self.assertEqual(content, b"did you get it?")
        self.assertEqual(cpim["imdn.disposition-notification"], "positive-delivery")
        imdnID = cpim["imdn.message-id"]
        # The 202 the peer gave must not become a receipt.
        time.sleep(1.0)
        self.assertFalse([e for e in self.alice.messages()
                          if e.get("received") == "rcpt-1"])
        imdn = buildCPIM("sip:erin@sip.test", ALICE_VIA_SIP, [("imdn.Message-ID", "i1")],
                         IMDN_TYPE, buildIMDN(imdnID, cpim["datetime"], "sip:erin@sip.test"),
                         extraMIME=[("Content-Disposition", "notification")])
        response = self.peer.request(self.sipPort, buildRequest(
            "MESSAGE", ALICE_VIA_SIP, "sip:erin@sip.test", ALICE_VIA_SIP,
            body=imdn, contentType=CPIM_TYPE))
        self.assertEqual(response.code, 202, self.gateway.describe())
        self.aliceMessage(received="rcpt-1", **{"from": erin})

        body = buildCPIM("sip:erin@sip.test", ALICE_VIA_SIP,
                         [("imdn.Message-ID", "sip-42"),
                          ("DateTime", "2024-01-01T00:00:00Z"),
                          ("imdn.Disposition-Notification", "positive-delivery")],
                         "text/plain;charset=UTF-8", b"please confirm")
        response = self.peer.request(self.sipPort, buildRequest(
            "MESSAGE", ALICE_VIA_SIP, "sip:erin@sip.test", ALICE_VIA_SIP,
            body=body, contentType=CPIM_TYPE))
        self.assertEqual(response.code, 202)
        event = self.aliceMessage(body="please confirm")
        self.assertTrue(event["receipt_request"])
        self.alice.command(cmd="send", to=erin, received=event["id"])
        ack = self.peer.waitRequest(
            lambda r: r.method == "MESSAGE" and b"message/imdn+xml" in r.body,
            what="IMDN")
        self.assertEqual(ack.uri, "sip:erin@sip.test")
        self.assertEqual(parseIMDN(parseCPIM(ack.body)[2]),
                         ("sip-42", "delivery", "delivered"))
