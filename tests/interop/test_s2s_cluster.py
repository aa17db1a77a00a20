"""
Interop test of server mode with several gateway instances behind one S2S
domain (C{gw.test}), federating with a real private Prosody (C{xmpp.test})
on loopback: the dialback verification of a stream opened by one instance
lands on another, which must answer C{valid} because both share
C{[xmpp] dialback_secret} (docs/scaling.rst, "Server mode").

Three C{twistd xmppgw} instances serve C{gw.test} with the same certificate
(one test CA, one C{gw.test} key pair), each on its own S2S and SIP port:

 - C{A} and C{B} have the same C{dialback_secret};
 - C{C} has a different one (the negative control: C{C} plays C{A} with a
   secret that does not match);
 - Prosody's resolver override (C{mod_xmppgw_test_resolver}) maps
   C{gw.test} to B's S2S port only, so every connection Prosody opens to
   C{gw.test}, including its dialback C{db:verify}, reaches B.

Each instance has its own SIP receiver as C{outbound_proxy}, so the test
sees which instance relayed an XMPP -> SIP message.

Peers and helpers are those of L{tests.interop.test_s2s}.
"""

import os
import re
import secrets
import time

from twisted.trial.unittest import TestCase

from tests.interop.harness import (
    LOCAL, GatewayProcess, HarnessError, SharedFixture, SIPReceiver,
    SIPUDPClient, XMPPClient, buildMessage, cleanupAll, freePort,
    makeWorkdir, messageWith, newCallID, requirePeers, uniqueID)
from tests.interop.prosody_s2s import PrivateS2SProsody, makeTestCA
from tests.interop.test_s2s import (
    ALICE, ALICE_VIA_SIP, BOB_SIP, BOB_VIA_XMPP, GATEWAY, READY_LINE, XMPP,
    serverConfig)

def clusterConfig(secret, s2sPort, sipPort, prosody, certificate, ca,
                  outboundProxy):
    """
    L{serverConfig} (certificates verified both ways) with the given
    C{dialback_secret}.
    """
    return serverConfig(s2sPort, sipPort, XMPP, prosody.s2sPort, certificate,
                        ca, True, outboundProxy, secret=secret)


def _verifyAnswers(log, kind):
    """
    The stream ids of the C{<db:verify type=KIND/>} answers an instance
    sent, from its traffic log.
    """
    ids = []
    for line in log.splitlines():
        if "SEND:" not in line or "<db:verify" not in line:
            continue
        if not re.search(rf"""type=['"]{kind}['"]""", line):
            continue
        found = re.search(r"""\bid=['"]([^'"]+)['"]""", line)
        if found:
            ids.append(found.group(1))
    return ids


class S2SClusterTests(TestCase):
    """
    Two instances sharing the dialback secret (A, B) and one with another
    secret (C), one Prosody that resolves C{gw.test} to B only.
    """

    prosody = alice = None
    gateways = receivers = None

    @classmethod
    def setUpClass(cls):
        requirePeers("prosody", "prosodyctl")
        cls.gateways, cls.receivers = {}, {}
        workdir = makeWorkdir("s2s-cluster")
        ca = makeTestCA(os.path.join(workdir, "ca"))
        gatewayCert = ca.issue(GATEWAY)
        prosodyCert = ca.issue(XMPP)
        s2sPorts = {}
        for name in "ABC":
            port = freePort("tcp")
            while port in s2sPorts.values():
                port = freePort("tcp")
            s2sPorts[name] = port
        cls.prosody = PrivateS2SProsody(
            os.path.join(workdir, "prosody"), prosodyCert,
            remotes={GATEWAY: (LOCAL, s2sPorts["B"])}, trustedCA=ca.caCert,
            domain=XMPP, users={"alice": "alice-pw"}, logLevel="debug")
        cls.prosody.start()
        shared = secrets.token_hex(20)
        other = secrets.token_hex(20)
        cls.secrets = {"A": shared, "B": shared, "C": other}
        cls.sipPorts = {}
        for name in "ABC":
            cls.receivers[name] = SIPReceiver("udp").start()
            sipPort = freePort("both")
            while sipPort in cls.sipPorts.values():
                sipPort = freePort("both")
            cls.sipPorts[name] = sipPort
            gateway = GatewayProcess(
                clusterConfig(cls.secrets[name], s2sPorts[name], sipPort,
                              cls.prosody, gatewayCert, ca.caCert,
                              cls.receivers[name].uri),
                workdir=os.path.join(workdir, f"gateway-{name}"))
            os.makedirs(gateway.workdir, exist_ok=True)
            cls.gateways[name] = gateway
            gateway.start(timeout=30, waitForLink=False)
            gateway.waitForLog(READY_LINE, timeout=10)
        cls.alice = XMPPClient(ALICE, "alice-pw", cls.prosody.c2sPort).start()

    @classmethod
    def tearDownClass(cls):
        cleanupAll(cls.alice, *(cls.gateways or {}).values(),
                   *(cls.receivers or {}).values(), cls.prosody)
        cls.alice = cls.prosody = None
        cls.gateways, cls.receivers = {}, {}

    def setUp(self):
        SharedFixture.acquire(type(self))
        for receiver in self.receivers.values():
            receiver.status = 200
            receiver.clear()

    def context(self):
        parts = [f"=== instance {name}:\n{gateway.describe()}"
                 for name, gateway in self.gateways.items()]
        parts.append(f"--- prosody log (tail):\n{self.prosody.log()[-6000:]}")
        return "\n".join(parts)

    def sendSIP(self, name, body, timeout=20.0):
        """
        Send a SIP MESSAGE for Alice to instance C{name}'s SIP port.
        """
        with SIPUDPClient() as client:
            request = buildMessage(ALICE_VIA_SIP, BOB_SIP, body,
                                   callID=newCallID(), viaPort=client.port)
            try:
                return client.request(LOCAL, self.sipPorts[name], request,
                                      timeout)
            except HarnessError as e:
                raise HarnessError(f"{e}\n{self.context()}")

    def test_sharedSecretVerifiedByOtherInstance(self):
        """
        A SIP MESSAGE sent to A reaches Alice: Prosody checks A's dialback
        key with B (the only instance it resolves C{gw.test} to), B answers
        C{valid} for A's stream id, and A answers 202.
        """
        a, b = self.gateways["A"], self.gateways["B"]
        body = "cluster " + uniqueID()
        response = self.sendSIP("A", body)
        self.assertEqual(response.code, 202, f"{response}\n{self.context()}")
        try:
            message = self.alice.expectMessage(timeout=15, body=body)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.context()}")
        self.assertEqual(message["from"], BOB_VIA_XMPP)
        self.assertIn("S2S stream to xmpp.test verified by dialback (TLS: yes",
                      a.log())
        # Prosody never connected to A: A answered no db:verify and has no
        # incoming stream from xmpp.test.
        self.assertEqual(_verifyAnswers(a.log(), "valid"), [], self.context())
        self.assertNotIn("S2S stream from xmpp.test", a.log())
        # B answered valid for the very stream id Prosody gave A's stream.
        validOnB = _verifyAnswers(b.log(), "valid")
        self.assertTrue(validOnB, self.context())
        self.assertTrue(
            [sid for sid in validOnB if re.search(
                rf"""S2S stream to xmpp\.test RECV: [^\n]*<stream:stream """
                rf"""[^\n>]*\bid=['"]{re.escape(sid)}['"]""", a.log())],
            f"no stream id of A among B's valid answers {validOnB}\n"
            f"{self.context()}")
        # Both instances presented the same certificate; Prosody found it
        # valid for gw.test.
        self.assertIn("certificate identity validation result: valid",
                      self.prosody.log())

    def test_differentSecretFails(self):
        """
        Negative control: C, whose dialback secret differs from B's, gets
        C{invalid} from Prosody (which asked B), answers the SIP MESSAGE
        500, and nothing reaches Alice.
        """
        c, b = self.gateways["C"], self.gateways["B"]
        body = "wrong secret " + uniqueID()
        response = self.sendSIP("C", body)
        self.assertEqual(response.code, 500, f"{response}\n{self.context()}")
        self.assertIn("the peer rejected our dialback key (invalid)", c.log(),
                      self.context())
        self.assertNotIn("S2S stream to xmpp.test verified by dialback",
                         c.log())
        self.assertTrue(_verifyAnswers(b.log(), "invalid"), self.context())
        self.assertIn("authoritative server for gw.test denied the key",
                      self.prosody.log())
        # Give a wrongly accepted stanza time to arrive before concluding.
        time.sleep(2.0)
        self.assertEqual(self.alice.messages(messageWith(body=body)), [],
                         self.context())

    def test_prosodyUserReachesResolvedInstance(self):
        """
        A message from Alice to the shared domain reaches B (the instance
        Prosody resolves C{gw.test} to), which relays it to its SIP
        receiver; A and C relay nothing.
        """
        body = "to the cluster " + uniqueID()
        self.alice.send(BOB_VIA_XMPP, body=body, id=uniqueID("x"))
        try:
            requests = self.receivers["B"].waitForMatching(
                lambda r: r.method == "MESSAGE" and body.encode() in r.body,
                timeout=20)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.context()}")
        request = requests[0]
        self.assertEqual(request.uri, "sip:bob@sip.test")
        self.assertIn("alice*xmpp.test@gw.test", request.header("From"))
        self.assertIn("S2S stream from xmpp.test verified by dialback (TLS: yes)",
                      self.gateways["B"].log())
        for name in "AC":
            self.assertEqual(
                self.receivers[name].matching(
                    lambda r: body.encode() in r.body), [], name)
