"""
Tests for the server-mode path of L{xmppgw.router.MessageRouter}: an XMPP
side with C{deliver(stanza) -> Deferred} (L{xmppgw.xmpp.server.S2SService}).
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.test_router import (
    GW, FakeServerTransaction, FakeTransactionLayer, sipMessage, xmppMessage)
from xmppgw.addressing import AddressMapper
from xmppgw.router import MessageRouter, RouterSettings
from xmppgw.xmpp.server import (
    DialbackFailed, QueueFull, RemoteServerNotFound, RemoteServerTimeout)


class FakeS2S:
    """
    An XMPP side with C{deliver}: each call gets a Deferred the test fires;
    cancelling it is recorded.
    """

    isAuthenticated = True

    def __init__(self):
        self.delivered = []
        self.cancelled = []
        self.sent = []
        self.immediate = False

    def deliver(self, stanza, notify=None):
        if self.immediate:
            d = defer.succeed(None)
        else:
            d = defer.Deferred(lambda d: self.cancelled.append(stanza))
            self.delivered.append((stanza, d))
        if notify is not None:
            # The router's way: the outcome goes on to notify.
            d.addBoth(notify)
        return d

    def send(self, stanza):
        self.sent.append(stanza)


class ServerModeRouterTests(unittest.TestCase):
    """
    SIP MESSAGEs answered from the outcome of C{deliver}.
    """

    def setUp(self):
        self.clock = Clock()
        self.sip = FakeTransactionLayer()
        self.s2s = FakeS2S()
        mapper = AddressMapper(separator="*", gatewayDomain=GW, xmppDomain=GW,
                               gwmap={})
        settings = RouterSettings(xmppDomain=GW, holdTimeout=8.0, holdLimit=2,
                                  logMessages=False)
        self.router = MessageRouter(self.clock, mapper, self.sip, self.s2s,
                                    settings)

    def receive(self):
        txn = FakeServerTransaction()
        self.sip.requestHandler(sipMessage(), txn)
        return txn

    def test_answeredWhenWritten(self):
        """
        The MESSAGE is answered 202 only when deliver fires.
        """
        txn = self.receive()
        stanza, d = self.s2s.delivered[0]
        self.assertEqual(stanza["to"], "alice@xmpp.example")
        self.assertEqual(txn.responses, [])
        d.callback(None)
        self.assertEqual([r.code for r in txn.responses], [202])

    def test_immediate(self):
        """
        A stanza written at once (verified stream) is answered at once.
        """
        self.s2s.immediate = True
        txn = self.receive()
        self.assertEqual([r.code for r in txn.responses], [202])
        self.assertNothingWaits()

    def assertFailureCode(self, error, code):
        txn = self.receive()
        self.s2s.delivered[-1][1].errback(error)
        self.assertEqual([r.code for r in txn.responses], [code])
        self.assertNothingWaits()
        self.assertEqual([r.code for r in txn.responses], [code])
        return txn.responses[0]

    def assertNothingWaits(self):
        """
        No delivery waits: the delivery timer may be left (see
        C{MessageRouter._finishDelivery}), but it fires without effect and
        is not set again.
        """
        self.assertEqual(set(), self.router._delivering)
        self.clock.advance(8.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notFound(self):
        """
        remote-server-not-found gives 404.
        """
        self.assertFailureCode(RemoteServerNotFound("x.example", "no"), 404)

    def test_timeout(self):
        """
        remote-server-timeout gives 408.
        """
        self.assertFailureCode(RemoteServerTimeout("x.example", "slow"), 408)

    def test_dialbackFailed(self):
        """
        A failed dialback gives 500.
        """
        self.assertFailureCode(DialbackFailed("x.example", "invalid"), 500)

    def test_queueFull(self):
        """
        A full S2S queue gives 503 with Retry-After.
        """
        response = self.assertFailureCode(QueueFull("x.example", "full"), 503)
        self.assertEqual(response.headers.get("Retry-After"), "5")

    def test_unexpectedError(self):
        """
        Any other failure gives 500 and is logged.
        """
        self.assertFailureCode(RuntimeError("boom"), 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_holdTimeout(self):
        """
        After hold_timeout the MESSAGE gets 503 with Retry-After and the
        stanza is withdrawn (the Deferred is cancelled), so it is never
        sent later.
        """
        txn = self.receive()
        stanza, d = self.s2s.delivered[0]
        self.clock.advance(8)
        self.assertEqual([r.code for r in txn.responses], [503])
        self.assertTrue(txn.responses[0].headers.get("Retry-After"))
        self.assertEqual(self.s2s.cancelled, [stanza])

    def test_holdLimit(self):
        """
        More than hold_limit MESSAGEs waiting: 503 at once.
        """
        self.receive()
        self.receive()
        txn = self.receive()
        self.assertEqual([r.code for r in txn.responses], [503])
        self.assertEqual(len(self.s2s.delivered), 2)

    def test_bounceThroughS2S(self):
        """
        An error reply to an XMPP sender goes out through the S2S side's
        send (fire-and-forget deliver).
        """
        # No separator in the user part: the address cannot be mapped.
        self.router.xmppMessageReceived(xmppMessage(to="nobody@" + GW))
        self.assertEqual(len(self.s2s.sent), 1)
        self.assertEqual(self.s2s.sent[0]["type"], "error")
