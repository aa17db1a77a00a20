"""
Self-tests of the interop harness (L{tests.interop.harness},
L{xmppgw.localpeers}): the peers it runs must work on their own before they
can judge the gateway. None of these tests needs the gateway to work.
"""

import os
import re
import time
from xmppgw.compat import tomllib

from twisted.trial.unittest import SkipTest, TestCase

from tests.interop import harness
from tests.interop.harness import (
    GatewayProcess, HarnessError, PrivateProsody, SharedFixture, SIPReceiver,
    SIPUDPClient, XMPPClient, buildMessage, buildOptions, cleanupAll,
    gatewayConfig, makeWorkdir, parseSIP, requirePeers, runSipp, sipSendManyUDP,
    sipSendTCP, sipSendUDP, startSipp, uniqueID, waitForSippUAS)

BODY = "héllo <b>&amp;</b> 'q' \"x\" 😀"


class ProsodyTests(TestCase):
    """
    A private Prosody with two slixmpp clients.
    """

    prosody = None
    alice = None
    bob = None

    @classmethod
    def setUpClass(cls):
        requirePeers("prosody", "prosodyctl")
        cls.prosody = PrivateProsody(
            makeWorkdir("prosody-selftest"),
            users={"alice": "alice-pw", "bob": "bob-pw"})
        cls.prosody.start()
        cls.alice = XMPPClient("alice@xmpp.test", "alice-pw",
                               cls.prosody.c2sPort).start()
        cls.bob = XMPPClient("bob@xmpp.test/desk", "bob-pw",
                             cls.prosody.c2sPort).start()

    @classmethod
    def tearDownClass(cls):
        cleanupAll(cls.alice, cls.bob, cls.prosody)
        cls.alice = cls.bob = cls.prosody = None

    def setUp(self):
        SharedFixture.acquire(type(self))

    def test_configLoopbackOnly(self):
        """
        The generated config listens on 127.0.0.1 only, has no s2s and keeps
        every path inside the working directory.
        """
        text = self.prosody.configText()
        self.assertIn('interfaces = { "127.0.0.1" }', text)
        self.assertIn('component_interfaces = { "127.0.0.1" }', text)
        self.assertIn('"s2s";', text)
        self.assertIn("s2s_ports = { }", text)
        paths = re.findall(r'"(/[^"]*)"', text)
        self.assertGreaterEqual(len(paths), 4, text)
        for path in paths:
            self.assertTrue(path.startswith(self.prosody.workdir + "/"), path)

    def test_messageBetweenClients(self):
        """
        Bob's message reaches Alice byte for byte, with its id and thread and
        no type attribute.
        """
        mid = uniqueID()
        self.bob.send("alice@xmpp.test", body=BODY, id=mid, thread="th-1")
        got = self.alice.expectMessage(id=mid)
        self.assertEqual(got["body"], BODY)
        self.assertEqual(got["from"], "bob@xmpp.test/desk")
        self.assertEqual(got["thread"], "th-1")
        self.assertIsNone(got["type"])
        self.assertIsNone(got["error"])

    def test_errorFromMissingComponent(self):
        """
        With no component connected, a message to the component domain comes
        back as a remote-server-timeout error, reported with its id.
        """
        mid = uniqueID()
        self.bob.send("carol*sip.test@gw.xmpp.test", body="x", id=mid)
        got = self.bob.expectMessage(id=mid)
        self.assertEqual(got["type"], "error")
        self.assertEqual(got["error"]["condition"], "remote-server-timeout")
        self.assertEqual(got["error"]["type"], "wait")

    def test_expectTimesOutWithEverythingReceived(self):
        """
        L{XMPPClient.expect} gives up after its timeout and shows what came.
        """
        start = time.monotonic()
        e = self.assertRaises(HarnessError, self.alice.expect,
                              lambda e: e.get("id") == "never", timeout=0.3)
        self.assertLess(time.monotonic() - start, 3)
        self.assertIn('"kind": "ready"', str(e))

    def test_restartReconnectAndOffline(self):
        """
        After a Prosody restart both clients reconnect by themselves, and a
        message sent to Alice while she is offline is delivered when she
        comes back (offline storage in the working directory).
        """
        aliceReady = self.alice.readyCount()
        bobReady = self.bob.readyCount()
        self.prosody.restart(downtime=1.0)
        self.bob.waitReady(timeout=15, count=bobReady + 1)
        self.alice.waitReady(timeout=15, count=aliceReady + 1)
        mid = uniqueID()
        self.bob.send("alice@xmpp.test", body="after restart", id=mid)
        self.assertEqual(
            self.alice.expectMessage(id=mid)["body"],
            "after restart")

        self.alice.stop()
        offline = uniqueID()
        self.bob.send("alice@xmpp.test", body="while away", id=offline)
        # Let Prosody store it before Alice comes back.
        time.sleep(0.5)
        alice = XMPPClient("alice@xmpp.test", "alice-pw",
                           self.prosody.c2sPort).start()
        type(self).alice = alice
        self.assertEqual(
            alice.expectMessage(id=offline)["body"],
            "while away")

    def test_pauseResume(self):
        """
        A paused Prosody still holds its port but does not deliver; after
        resume the message arrives.
        """
        self.prosody.pause()
        try:
            mid = uniqueID()
            self.bob.send("alice@xmpp.test", body="paused", id=mid)
            self.assertRaises(HarnessError, self.alice.expectMessage,
                              id=mid, timeout=0.5)
        finally:
            self.prosody.resume()
        self.assertEqual(
            self.alice.expectMessage(id=mid)["body"], "paused")

    def test_logText(self):
        """
        L{PrivateProsody.log} returns the server's log.
        """
        self.assertIn("Activated service 'component'", self.prosody.log())


class RawSIPTests(TestCase):
    """
    The raw-socket SIP helpers against L{SIPReceiver}.
    """

    def receiver(self, proto, status=200):
        receiver = SIPReceiver(proto, status=status).start()
        self.addCleanup(receiver.stop)
        return receiver

    def test_buildMessage(self):
        """
        A built MESSAGE has the mandatory headers and a byte Content-Length.
        """
        raw = buildMessage("sip:a@b", "sip:c@d", BODY, callID="cid-1",
                           branch="z9hG4bKx1", fromTag="t1", viaPort=5070)
        message = parseSIP(raw)
        self.assertEqual(message.method, "MESSAGE")
        self.assertEqual(message.uri, "sip:a@b")
        self.assertEqual(message.branch, "z9hG4bKx1")
        self.assertEqual(message.header("From"), "<sip:c@d>;tag=t1")
        self.assertEqual(message.header("To"), "<sip:a@b>")
        self.assertEqual(message.header("Max-Forwards"), "70")
        self.assertEqual(message.cseq, "1 MESSAGE")
        self.assertEqual(message.header("Content-Type"), "text/plain;charset=UTF-8")
        self.assertEqual(int(message.header("Content-Length")),
                         len(BODY.encode("utf-8")))
        self.assertEqual(message.text(), BODY)

    def test_udpMessage(self):
        """
        Over UDP the receiver answers 200, and records the body byte-exact.
        """
        receiver = self.receiver("udp")
        response = sipSendUDP("127.0.0.1", receiver.port,
                              buildMessage("sip:x@y", "sip:me@here", BODY))
        self.assertEqual(response.code, 200)
        self.assertIn("tag=", response.header("To"))
        (got,) = receiver.waitFor(1)
        self.assertEqual(got.body, BODY.encode("utf-8"))
        self.assertEqual(got.transport, "udp")

    def test_tcpMessage(self):
        """
        Over TCP the receiver answers on the same connection.
        """
        receiver = self.receiver("tcp", status=202)
        response = sipSendTCP("127.0.0.1", receiver.port,
                              buildMessage("sip:x@y", "sip:me@here", BODY,
                                           transport="TCP"))
        self.assertEqual(response.code, 202)
        (got,) = receiver.waitFor(1)
        self.assertEqual(got.text(), BODY)

    def test_statusAndOptions(self):
        """
        The MESSAGE status is configurable; OPTIONS gets 200 with Allow.
        """
        receiver = self.receiver("udp", status=486)
        response = sipSendUDP("127.0.0.1", receiver.port,
                              buildMessage("sip:x@y", "sip:me@here", "hi"))
        self.assertEqual(response.code, 486)
        options = sipSendUDP("127.0.0.1", receiver.port,
                             buildOptions("sip:127.0.0.1"))
        self.assertEqual(options.code, 200)
        self.assertIn("MESSAGE", options.header("Allow"))

    def test_silentReceiverTimesOut(self):
        """
        A silent receiver makes L{sipSendUDP} fail within its timeout, while
        the request is retransmitted (Timer E).
        """
        receiver = self.receiver("udp", status=None)
        start = time.monotonic()
        self.assertRaises(HarnessError, sipSendUDP, "127.0.0.1", receiver.port,
                          buildMessage("sip:x@y", "sip:me@here", "hi"),
                          timeout=1.2)
        self.assertLess(time.monotonic() - start, 3)
        self.assertGreaterEqual(len(receiver.waitFor(2, timeout=1)), 2)

    def test_retransmissionSameBranch(self):
        """
        L{SIPUDPClient} can send one request several times from one port.
        """
        receiver = self.receiver("udp")
        request = buildMessage("sip:x@y", "sip:me@here", "again")
        with SIPUDPClient() as client:
            codes = [client.request("127.0.0.1", receiver.port, request,
                                    retransmit=False).code for _ in range(3)]
        self.assertEqual(codes, [200, 200, 200])
        got = receiver.waitFor(3)
        self.assertEqual(len({r.branch for r in got}), 1)

    def test_sendMany(self):
        """
        L{sipSendManyUDP} paces requests and matches every response.
        """
        receiver = self.receiver("udp", status=202)
        requests = [buildMessage("sip:x@y", "sip:me@here", f"n{i}")
                    for i in range(20)]
        start = time.monotonic()
        results = sipSendManyUDP("127.0.0.1", receiver.port, requests,
                                 rate=100, timeout=5)
        self.assertEqual([r.code for r in results], [202] * 20)
        self.assertGreater(time.monotonic() - start, 0.15)
        self.assertEqual(sorted(r.text() for r in receiver.waitFor(20)),
                         sorted(f"n{i}" for i in range(20)))


class SippTests(TestCase):
    """
    sipp and the scenarios in C{tests/interop/sipp/}, on loopback.
    """

    def setUp(self):
        requirePeers("sipp")

    def test_uacAgainstUAS(self):
        """
        The UAC scenario sends N MESSAGEs to the UAS scenario; both succeed.
        """
        uas = startSipp("message_uas.xml", count=5, timeout=20)
        self.addCleanup(uas.kill)
        waitForSippUAS(uas)
        uac = runSipp("message_uac.xml", f"127.0.0.1:{uas.port}", count=5,
                      rate=20, timeout=20, keys={
                          "ruri": "sip:alice*xmpp.test@gw.xmpp.test",
                          "to_uri": "sip:alice*xmpp.test@gw.xmpp.test",
                          "from_uri": "sip:bob@sip.test", "body": BODY})
        self.assertEqual(uac.returncode, 0, uac.describe())
        self.assertEqual(uac.successful, 5, uac.describe())
        self.assertEqual(uac.failed, 0, uac.describe())
        server = uas.wait(timeout=10)
        self.assertEqual(server.returncode, 0, server.describe())
        self.assertEqual(server.successful, 5, server.describe())

    def test_uacBodyAndAccepted(self):
        """
        The UAC scenario's MESSAGE carries the UTF-8 body byte-exact with a
        byte Content-Length, and 202 counts as success.
        """
        receiver = SIPReceiver("udp", status=202).start()
        self.addCleanup(receiver.stop)
        result = runSipp("message_uac.xml", f"127.0.0.1:{receiver.port}",
                         count=3, rate=50, timeout=20, keys={
                             "ruri": "sip:alice*xmpp.test@gw.xmpp.test",
                             "to_uri": "sip:alice*xmpp.test@gw.xmpp.test",
                             "from_uri": "sip:bob@sip.test", "body": BODY})
        self.assertEqual((result.returncode, result.successful),
                         (0, 3), result.describe())
        got = receiver.waitFor(3)
        for request in got:
            self.assertEqual(request.body, BODY.encode("utf-8"))
            self.assertEqual(request.uri, "sip:alice*xmpp.test@gw.xmpp.test")
            self.assertEqual(request.header("Content-Type"),
                             "text/plain;charset=UTF-8")
        self.assertEqual(len({r.callID for r in got}), 3)

    def test_uacOverTCP(self):
        """
        The UAC scenario also runs over TCP.
        """
        receiver = SIPReceiver("tcp", status=200).start()
        self.addCleanup(receiver.stop)
        result = runSipp("message_uac.xml", f"127.0.0.1:{receiver.port}",
                         count=2, rate=20, transport="tcp", timeout=20, keys={
                             "ruri": "sip:a@b", "to_uri": "sip:a@b",
                             "from_uri": "sip:c@d", "body": "tcp"})
        self.assertEqual((result.returncode, result.successful),
                         (0, 2), result.describe())
        self.assertEqual([r.body for r in receiver.waitFor(2)], [b"tcp"] * 2)

    def test_failureIsReported(self):
        """
        An error answer makes the UAC fail with a non-zero exit status.
        """
        receiver = SIPReceiver("udp", status=404).start()
        self.addCleanup(receiver.stop)
        result = runSipp("message_uac.xml", f"127.0.0.1:{receiver.port}",
                         count=1, timeout=10, keys={
                             "ruri": "sip:a@b", "to_uri": "sip:a@b",
                             "from_uri": "sip:c@d", "body": "x"})
        self.assertNotEqual(result.returncode, 0, result.describe())
        self.assertEqual(result.failed, 1, result.describe())


class GatewayProcessTests(TestCase):
    """
    What of L{GatewayProcess} can be checked without a working gateway.
    """

    def test_configIsValid(self):
        """
        L{gatewayConfig} output is accepted by the gateway's config schema.
        """
        from xmppgw import config

        class FakeProsody:
            componentDomain = "gw.xmpp.test"
            componentPort = 5347
            componentSecret = "s3cret"

        text = gatewayConfig(FakeProsody, 5099, gwmap=["sip.test=gw.xmpp.test"],
                             outboundProxy="sip:127.0.0.1:5098;transport=tcp",
                             t1=0.05, holdTimeout=2.0)
        parsed = config.parseConfig(tomllib.loads(text), "test.toml")
        self.assertEqual(parsed.xmpp.xmpp_port, 5347)
        gateway = GatewayProcess(text, workdir=self.mktemp())
        self.assertEqual((gateway.sipTransport, gateway.sipPort), ("udp", 5099))

    def test_startFailureIsReported(self):
        """
        A gateway that exits at start-up (bad config) makes
        L{GatewayProcess.start} fail quickly, with its output.
        """
        text = ('[sip]\nlisten = ["udp:127.0.0.1:%d"]\nsuccess_code = 299\n'
                % harness.freePort("both"))
        workdir = self.mktemp()
        os.makedirs(workdir)
        gateway = GatewayProcess(text, workdir=workdir)
        self.addCleanup(gateway.kill)
        start = time.monotonic()
        e = self.assertRaises(HarnessError, gateway.start, timeout=20)
        self.assertLess(time.monotonic() - start, 19)
        self.assertIn("exited", str(e))
        self.assertIn("success_code", str(e))


class RequirePeersTests(TestCase):
    """
    Missing peers skip outside CI and fail in CI.
    """

    def test_skipOutsideCI(self):
        """
        Outside CI a missing program raises L{SkipTest}.
        """
        self.patch(harness, "inCI", lambda: False)
        self.patch(harness, "findProgram", lambda name: None)
        self.assertRaises(SkipTest, requirePeers, "sipp")

    def test_failInCI(self):
        """
        In CI a missing program is a failure naming the package.
        """
        self.patch(harness, "inCI", lambda: True)
        self.patch(harness, "findProgram", lambda name: None)
        e = self.assertRaises(HarnessError, requirePeers, "prosody", "sipp")
        self.assertIn("sip-tester", str(e))
        self.assertIn("prosody", str(e))

    def test_inCIReadsEnvironment(self):
        """
        C{CI=true} means CI; unset or C{false} does not.
        """
        self.patch(os, "environ", {"CI": "true"})
        self.assertTrue(harness.inCI())
        self.patch(os, "environ", {"CI": "false"})
        self.assertFalse(harness.inCI())
        self.patch(os, "environ", {})
        self.assertFalse(harness.inCI())

