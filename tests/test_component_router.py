"""
Tests for the component-mode path of L{xmppgw.router.MessageRouter} with the
real L{xmppgw.xmpp.component.ComponentLink}: a SIP MESSAGE is answered only
once the XMPP server confirmed its stanza (issue 5, confirmed delivery).

No network and no real time: the link runs over a L{StringTransport} on a
L{MemoryReactorClock}; the server's side is played by feeding bytes.
"""

import re

from twisted.internet.error import ConnectionLost
from twisted.trial import unittest

from tests.test_component import LinkTestMixin
from tests.test_router import (
    GW, FakeServerTransaction, FakeTransactionLayer, sipMessage)
from xmppgw.addressing import AddressMapper
from xmppgw.config import ConfigError, parseConfig
from xmppgw.router import GatewayHandler, MessageRouter, RouterSettings


class ComponentRouterTests(LinkTestMixin, unittest.TestCase):
    """
    SIP MESSAGEs answered from the component link's confirmations.
    """

    holdLimit = 10

    def setUp(self):
        LinkTestMixin.setUp(self)
        self.link = self.makeLink(keepAliveInterval=0, confirmTimeout=2.0)
        self.sip = FakeTransactionLayer()
        mapper = AddressMapper(separator="*", gatewayDomain=GW, xmppDomain=GW,
                               gwmap={})
        settings = RouterSettings(xmppDomain=GW, holdTimeout=4.0,
                                  holdLimit=self.holdLimit, logMessages=False)
        self.router = MessageRouter(self.reactor, mapper, self.sip, self.link,
                                    settings)
        GatewayHandler(self.router, GW).setHandlerParent(self.link)
        self.link.startService()

    def receive(self, n=1):
        txn = FakeServerTransaction()
        self.sip.requestHandler(
            sipMessage(body=f"hello {n}", branch=f"z9hG4bK{n}"), txn)
        return txn

    def codes(self, txn):
        return [r.code for r in txn.responses]

    def pings(self):
        data = self.transport.value().decode("utf-8")
        return re.findall(r"<iq [^>]*id='([^']+)'", data)

    def answer(self, pingID):
        self.xs.dataReceived(
            ("<iq type='get' id='%s' from='gw.example' to='gw.example'>"
             "<ping xmlns='urn:xmpp:ping'/></iq>" % (pingID,)).encode("utf-8"))

    def test_answeredWhenConfirmed(self):
        """
        The MESSAGE is answered 202 when the ping written after its stanza
        comes back, not when the stanza is written.
        """
        self.authenticate()
        txn = self.receive()
        self.assertIn(b"hello 1", self.transport.value())
        self.assertEqual([], self.codes(txn))
        self.reactor.advance(0)
        self.assertEqual([], self.codes(txn))
        self.answer(self.pings()[-1])
        self.assertEqual([202], self.codes(txn))

    def test_hungServer(self):
        """
        A hung server: the written MESSAGE gets 504 (no Retry-After) after
        confirmTimeout; the next one is not written and gets 503 with
        Retry-After after hold_timeout; after the server answers again a
        new MESSAGE gets 202, and the refused one was never written.
        """
        self.authenticate()
        first = self.receive(1)
        self.reactor.advance(0)
        (ping,) = self.pings()
        self.reactor.advance(2)
        self.assertEqual([504], self.codes(first))
        self.assertIsNone(first.responses[0].headers.get("Retry-After"))
        second = self.receive(2)
        self.reactor.advance(4)
        self.assertEqual([503], self.codes(second))
        self.assertTrue(second.responses[0].headers.get("Retry-After"))
        self.answer(ping)
        third = self.receive(3)
        self.reactor.advance(0)
        self.answer(self.pings()[-1])
        self.assertEqual([202], self.codes(third))
        data = self.transport.value()
        self.assertNotIn(b"hello 2", data)
        self.assertEqual(1, data.count(b"hello 1"))

    def test_linkLostWhileUnconfirmed(self):
        """
        The link is lost after the stanza was written: 504 at once; a
        MESSAGE received while the link is down is written after the next
        handshake and answered 202 once confirmed.
        """
        self.authenticate()
        first = self.receive(1)
        self.reactor.advance(0)
        self.link.stableInterval = 0
        self.loseConnection(ConnectionLost())
        self.assertEqual([504], self.codes(first))
        second = self.receive(2)
        self.advanceToRetryOnly()
        self.authenticate()
        self.reactor.advance(0)
        data = self.transport.value()
        self.assertIn(b"hello 2", data)
        self.assertNotIn(b"hello 1", data)
        self.answer(self.pings()[-1])
        self.assertEqual([202], self.codes(second))

    def advanceToRetryOnly(self):
        """
        Let the reconnection fire (other timers, such as the router's hold
        timer, may be pending too).
        """
        retry = self.link.factory._callID
        self.reactor.advance(retry.getTime() - self.reactor.seconds())

    def test_shutdownAnswersWaiting(self):
        """
        router.shutdown answers a MESSAGE waiting for the link with 503 and
        withdraws its stanza: it is not written after the next handshake.
        """
        txn = self.receive()
        self.router.shutdown()
        self.assertEqual([503], self.codes(txn))
        self.assertEqual({"queued": 0, "unconfirmed": 0}, self.link.queueDepths())
        self.authenticate()
        self.reactor.advance(0)
        self.assertNotIn(b"hello", self.transport.value())


class HoldNothingTests(ComponentRouterTests):
    """
    The same with C{hold_limit = 0}: nothing is held while the link is down.
    """

    holdLimit = 0

    def test_linkLostWhileUnconfirmed(self):
        """
        The link is lost after the stanza was written: 504; while it is down
        a new MESSAGE gets 503 at once.
        """
        self.authenticate()
        first = self.receive(1)
        self.reactor.advance(0)
        self.loseConnection(ConnectionLost())
        self.assertEqual([504], self.codes(first))
        second = self.receive(2)
        self.assertEqual([503], self.codes(second))

    def test_shutdownAnswersWaiting(self):
        """
        A MESSAGE while the link is down gets 503 at once.
        """
        txn = self.receive()
        self.assertEqual([503], self.codes(txn))


class ConfirmTimeoutConfigTests(unittest.TestCase):
    """
    C{[xmpp] confirm_timeout} and its check against C{[sip] hold_timeout}.
    """

    def test_default(self):
        """
        The default is 5 s with the default hold_timeout (8 s).
        """
        self.assertEqual(5.0, parseConfig({}, "gw.toml").xmpp.confirm_timeout)

    def test_defaultLoweredBelowHold(self):
        """
        Left unset, it becomes half of a hold_timeout that is not above it.
        """
        config = parseConfig({"sip": {"hold_timeout": 2.0}}, "gw.toml")
        self.assertEqual(1.0, config.xmpp.confirm_timeout)

    def test_explicitMustBeBelowHold(self):
        """
        Set explicitly to hold_timeout or more, it is an error.
        """
        e = self.assertRaises(
            ConfigError, parseConfig,
            {"xmpp": {"confirm_timeout": 3.0}, "sip": {"hold_timeout": 3.0}},
            "gw.toml")
        self.assertIn("xmpp.confirm_timeout", str(e))
        self.assertIn("less than sip.hold_timeout", str(e))

    def test_explicit(self):
        """
        An explicit value below hold_timeout is kept.
        """
        config = parseConfig({"xmpp": {"confirm_timeout": 0.5}}, "gw.toml")
        self.assertEqual(0.5, config.xmpp.confirm_timeout)
