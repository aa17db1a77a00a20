"""
Tests for L{bench.inprocess}: the benchmark's gateway is wired as twistd
wires it (no timing is asserted here; speed is measured by make bench).
"""

from twisted.trial.unittest import TestCase

from bench.inprocess import GATEWAY_DOMAIN, PEER, Gateway, Runner
from xmppgw.policy import Policy


class PolicyTests(TestCase):
    """
    The benchmark's gateway has the L{Policy} C{twistd xmppgw} builds,
    with the rate limits off (as benchmark 2 configures them).
    """

    def test_policyWired(self):
        """
        The policy checks the SIP sources and is the router's.
        """
        g = Gateway(logMessages=False, freeze=False)
        self.assertIsInstance(g.policy, Policy)
        self.assertIs(g.router.policy, g.policy)
        self.assertIs(g.sip.allowFrom, g.policy)
        self.assertEqual(g.policy.perSource.rate, 0)
        self.assertEqual(g.policy.perSender.rate, 0)

    def test_noPolicy(self):
        """
        C{policy=False} (C{--no-policy}) leaves both without one.
        """
        g = Gateway(logMessages=False, freeze=False, policy=False)
        self.assertIsNone(g.policy)
        self.assertIsNone(g.router.policy)
        self.assertIsNone(g.sip.allowFrom)

    def test_relaysBothWays(self):
        """
        With the policy, the benchmark's messages are relayed both ways
        (the runner raises otherwise), and more than the default per-sender
        rate of one sender passes.
        """
        g = Gateway(logMessages=False, freeze=False)
        runner = Runner(g, 0.001)
        runner.sipToXMPP(50, 1)
        runner.xmppToSIP(50, 1)
        self.assertEqual(g.router.stats.get("xmpp.relayed"), 50)

    def test_policyConsulted(self):
        """
        The policy is on the path: a MESSAGE whose From host is the
        gateway's own domain is refused, 403.
        """
        g = Gateway(logMessages=False, freeze=False)
        request = (
            "MESSAGE sip:user*xmpp.test@{d} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-refused\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:mallory@{d}>;tag=1\r\n"
            "To: <sip:user*xmpp.test@{d}>\r\n"
            "Call-ID: refused@127.0.0.1\r\n"
            "CSeq: 1 MESSAGE\r\n"
            "Content-Type: text/plain\r\n"
            "Content-Length: 2\r\n\r\nhi".format(d=GATEWAY_DOMAIN)
        ).encode()
        g.sipProtocol.datagramReceived(request, PEER)
        self.assertTrue(g.udp.last.startswith(b"SIP/2.0 403 "), g.udp.last)
