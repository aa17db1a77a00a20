"""
Interop tests of presence and typing notifications (issue 7) with the SIP
side played by sipp (scenarios in C{tests/interop/sipp/}), not by a UA
written in the test: C{twistd xmppgw} as a component of a private Prosody,
the XMPP side a slixmpp client (C{alice@xmpp.test}).

Every sipp run binds the same UDP port, which is also the gateway's
C{outbound_proxy}: the NOTIFYs of a subscription and the MESSAGEs for
C{sip.test} users therefore reach whichever sipp runs at the time. The
runs are sequential and bounded (sipp's own C{-timeout}, a timeout on
every receive in the scenarios, and a kill at test cleanup).

Not driven by sipp here (still covered by the raw-socket UA of
C{tests/interop/test_presence.py}): the gateway as subscriber (an XMPP
user watching a SIP user) and delivery receipts.
"""

import glob
import os
import secrets

from twisted.trial.unittest import TestCase

from tests.interop.harness import (
    LOCAL, GatewayProcess, PrivateProsody, SharedFixture, XMPPClient,
    cleanupAll, freePort, gatewayConfig, makeWorkdir, readText, requirePeers,
    startSipp, waitForSippUAS, waitUntil)

GATEWAY = "gw.xmpp.test"
ALICE = "alice@xmpp.test"
ALICE_VIA_SIP = "sip:alice*xmpp.test@gw.xmpp.test"


class PresenceSippTests(TestCase):
    """
    A sipp watcher subscribing to Alice, and sipp sending and receiving
    isComposing notifications.
    """

    peers = ("prosody", "prosodyctl", "sipp")
    prosody = gateway = alice = None

    @classmethod
    def setUpClass(cls):
        requirePeers(*cls.peers)
        cls.prosody = PrivateProsody(
            makeWorkdir(f"prosody-{cls.__name__}"), domain="xmpp.test",
            componentDomain=GATEWAY, componentSecret=secrets.token_hex(8),
            users={"alice": "alice-pw"})
        cls.prosody.start()
        cls.sippPort = freePort("both")
        cls.sipPort = freePort("both")
        config = gatewayConfig(
            cls.prosody, cls.sipPort,
            outboundProxy=f"sip:{LOCAL}:{cls.sippPort}")
        config += "\n".join([
            "", "[presence]", "enabled = true", "rate_per_sender = 0.0", ""])
        cls.gateway = GatewayProcess(config, workdir=makeWorkdir(f"gateway-{cls.__name__}"))
        cls.gateway.start(timeout=30)
        cls.alice = XMPPClient(ALICE, "alice-pw", cls.prosody.c2sPort).start()
        # Alice decides on subscription requests herself (None: slixmpp
        # answers nothing on its own).
        cls.alice.command(cmd="roster_policy", auto_authorize=None,
                          auto_subscribe=False, get_roster=True)
        cls.alice.expect(lambda e: e.get("kind") == "roster", timeout=10)

    @classmethod
    def tearDownClass(cls):
        cleanupAll(cls.alice, cls.gateway, cls.prosody)
        cls.alice = cls.gateway = cls.prosody = None

    def setUp(self):
        SharedFixture.acquire(type(self))

    def aliceEvent(self, kind, timeout=10.0, **fields):
        """
        Alice's first unread event of C{kind} whose fields equal C{fields}.
        """
        def predicate(event):
            return event.get("kind") == kind and all(
                event.get(k) == v for k, v in fields.items())
        return self.alice.expect(predicate, timeout=timeout)

    def waitLogged(self, mark, text, timeout=10.0):
        """
        Wait until C{text} is in the gateway log after offset C{mark}.

        @return: the offset just after it (the next mark).
        """
        def seen():
            at = self.gateway.log().find(text, mark)
            return at + len(text) if at >= 0 else None
        return waitUntil(seen, timeout, message=lambda: (
            f"{text!r} in the gateway log.\n{self.gateway.describe()}"))

    def runSipp(self, scenario, target=None, timeout=20, **kwargs):
        """
        Start sipp on the outbound-proxy port; kill it at cleanup.
        """
        sipp = startSipp(scenario, target, localPort=self.sippPort,
                         timeout=timeout, **kwargs)
        self.addCleanup(sipp.kill)
        return sipp

    def assertSippSucceeded(self, result):
        self.assertEqual((result.returncode, result.successful, result.failed),
                         (0, 1, 0),
                         result.describe() + "\n" + self.gateway.describe())

    def test_sipWatcherSubscribes(self):
        """
        sipp SUBSCRIBEs to Alice: 200 and NOTIFY pending; Alice is asked
        and her approval gives NOTIFY active with an open PIDF; her away status, going
        offline and coming back give open+note, closed and open; the
        un-SUBSCRIBE gives NOTIFY terminated with closed (all checked by
        the scenario's <ereg>s), and Alice gets unavailable.
        """
        watcher = "bob*sip.test@gw.xmpp.test"
        mark = len(self.gateway.log())
        sipp = self.runSipp(
            "subscribe_uac.xml", f"{LOCAL}:{self.sipPort}", timeout=30,
            keys={"ruri": ALICE_VIA_SIP, "from_uri": "sip:bob@sip.test"})
        self.aliceEvent("presence", type="subscribe", **{"from": watcher})
        self.alice.command(cmd="presence", type="subscribed", to=watcher)
        # Each change only after the NOTIFY with the previous state left
        # the gateway, so that none is coalesced away (one NOTIFY in
        # flight per subscription; the latest state wins).
        mark = self.waitLogged(mark, "<basic>open</basic>")
        self.alice.command(cmd="presence", show="away", status="Gone fishing")
        mark = self.waitLogged(mark, "Gone fishing</note>")
        self.alice.command(cmd="presence", type="unavailable")
        mark = self.waitLogged(mark, "<basic>closed</basic>")
        self.alice.command(cmd="presence")
        result = sipp.wait(40)
        self.assertSippSucceeded(result)
        self.aliceEvent("presence", type="unavailable", **{"from": watcher})

    def test_sipWatcherRejected(self):
        """
        sipp SUBSCRIBEs to Alice, gets NOTIFY pending; Alice refuses and
        sipp gets NOTIFY terminated;reason=rejected.
        """
        watcher = "frank*sip.test@gw.xmpp.test"
        sipp = self.runSipp(
            "subscribe_rejected_uac.xml", f"{LOCAL}:{self.sipPort}",
            keys={"ruri": ALICE_VIA_SIP, "from_uri": "sip:frank@sip.test"})
        self.aliceEvent("presence", type="subscribe", **{"from": watcher})
        self.alice.command(cmd="presence", type="unsubscribed", to=watcher)
        self.assertSippSucceeded(sipp.wait(30))

    def test_isComposingFromSIP(self):
        """
        sipp's isComposing active reaches Alice as a bodyless
        <composing/>, idle as <active/>; the gateway answers 202.
        """
        dave = "dave*sip.test@gw.xmpp.test"
        for state, chatstate in (("active", "composing"), ("idle", "active")):
            result = self.runSipp(
                "iscomposing_uac.xml", f"{LOCAL}:{self.sipPort}",
                keys={"ruri": ALICE_VIA_SIP, "from_uri": "sip:dave@sip.test",
                      "state": state}).wait(30)
            self.assertSippSucceeded(result)
            event = self.aliceEvent("message", chatstate=chatstate,
                                    **{"from": dave})
            self.assertIsNone(event["body"])

    def test_isComposingToSIP(self):
        """
        Alice's <composing/> reaches a sipp UAS as an isComposing MESSAGE
        with state active for sip:erin@sip.test, her <paused/> as idle.
        """
        erin = "erin*sip.test@gw.xmpp.test"
        for chatstate, state in (("composing", "active"), ("paused", "idle")):
            sipp = self.runSipp("iscomposing_uas.xml", extraArgs=["-trace_logs"])
            waitForSippUAS(sipp)
            self.alice.command(cmd="send", to=erin, type="chat", chatstate=chatstate)
            result = sipp.wait(30)
            self.assertSippSucceeded(result)
            logs = "".join(readText(path) for path in glob.glob(
                os.path.join(result.workdir, "iscomposing_uas_*_logs.log")))
            self.assertIn(f"isComposing state={state} ruri=sip:erin@sip.test", logs,
                          result.describe())
