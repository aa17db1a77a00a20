"""
Tests for L{xmppgw.sip.transaction}: RFC 3261 non-INVITE transactions on a
L{Clock} with a list-backed fake transport.
"""

from twisted.internet.defer import CancelledError, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from xmppgw.sip import transaction as transactionModule
from xmppgw.sip.message import (
    Headers,
    Request,
    Response,
    _parseVia,
    _viaCache,
    makeResponse,
    parseVia,
    serialize,
    topVia,
)
from xmppgw.sip.transaction import (
    _COMPACT_MIN,
    EXPIRY_SLACK,
    Source,
    Target,
    TransactionLayer,
    TransactionTimeout,
    TransportFailure,
)


class FakeTransport:
    """
    A transport that records what is sent and can be told to fail.

    @ivar sent: C{(message, destination)} pairs, in order.
    @ivar times: the clock time of each send.
    @ivar failWith: an exception to fail every send with, or L{None}.
    """

    def __init__(self, clock):
        self.clock = clock
        self.sent = []
        self.times = []
        self.failWith = None
        self.local = ("192.0.2.1", 5060)

    def send(self, message, destination):
        self.sent.append((message, destination))
        self.times.append(self.clock.seconds())
        if self.failWith is not None:
            return fail(self.failWith)
        return succeed(None)

    def localAddress(self, transport):
        return self.local


UDP_SOURCE = Source("udp", "198.51.100.7", 5060)
TCP_SOURCE = Source("tcp", "198.51.100.7", 40000, object())


def makeRequest(
    method="MESSAGE",
    branch="z9hG4bKabc123",
    sentBy="198.51.100.7:5060",
    transport="UDP",
    cseq=1,
    callID="call-1@198.51.100.7",
    fromTag="ft1",
):
    headers = Headers()
    via = "SIP/2.0/%s %s" % (transport, sentBy)
    if branch is not None:
        via += ";branch=%s" % (branch,)
    headers.add("Via", via)
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@example.org>;tag=%s" % (fromTag,))
    headers.add("To", "<sip:bob@gw.example.com>")
    headers.add("Call-ID", callID)
    headers.add("CSeq", "%d %s" % (cseq, method))
    return Request(method, "sip:bob@gw.example.com", headers, b"hello")


def makeOutgoing(method="MESSAGE"):
    headers = Headers()
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:juliet@gw.example.com>;tag=12345")
    headers.add("To", "<sip:romeo@example.net>")
    headers.add("Call-ID", "out-1@gw.example.com")
    headers.add("CSeq", "1 %s" % (method,))
    return Request(method, "sip:romeo@example.net", headers, b"hi")


def responseTo(request, code, method=None):
    """
    A response to a sent request, as the peer would build it.
    """
    response = makeResponse(request, code)
    if method is not None:
        response.headers.set("CSeq", "1 %s" % (method,))
    return response


#: The shared queues of a L{TransactionLayer}, each with one timer at most.
QUEUES = ("_timerJ", "_timerK", "_abandonQueue", "_firstTimerE", "_firstTimerF")


def timersOf(layer, clock):
    """
    The pending timers of C{clock}: the name of the queue of C{layer} whose
    sweep it is (see L{QUEUES}), or C{"own"} for the timer of a single
    transaction. Sorted by name.
    """
    queues = {id(getattr(layer, name)): name for name in QUEUES}
    return sorted(queues.get(id(getattr(c.func, "__self__", None)), "own")
                  for c in clock.getDelayedCalls())


class TimerAssertions:
    """
    A mixin for L{unittest.TestCase}: checks on the timers left behind.
    """

    def assertNoTimersLeft(self, layer, clock):
        """
        Once every transaction has ended, no timer of its own is left; a
        queue that waited for it (L{_DeadlineQueue}, which drops ended
        transactions lazily) may still have its timer pending, but that
        timer calls nothing and is not set again.
        """
        for name in timersOf(layer, clock):
            self.assertIn(name, ("_abandonQueue", "_firstTimerE", "_firstTimerF"))
        sent = len(layer.transport.sent)
        clock.advance(64 * layer.t1)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(layer.transport.sent), sent)


class SourceTargetTests(unittest.TestCase):
    """
    Tests for L{Source} and L{Target}.
    """

    def test_targetDefaultPort(self):
        """
        A L{Target} without a port gets the transport's default port.
        """
        self.assertEqual(Target("udp", "example.net").port, 5060)
        self.assertEqual(Target("tcp", "example.net").port, 5060)
        self.assertEqual(Target("tls", "example.net").port, 5061)

    def test_badTransport(self):
        """
        An unknown transport name is refused with L{ValueError}.
        """
        self.assertRaises(ValueError, Target, "sctp", "example.net", 5060)
        self.assertRaises(ValueError, Source, "UDP", "192.0.2.1", 5060)

    def test_badPort(self):
        """
        A port outside 1-65535 or an empty host is refused.
        """
        self.assertRaises(ValueError, Target, "udp", "example.net", 0)
        self.assertRaises(ValueError, Target, "udp", "example.net", 70000)
        self.assertRaises(ValueError, Target, "udp", "", 5060)

    def test_reliable(self):
        """
        TCP and TLS are reliable, UDP is not.
        """
        self.assertFalse(Target("udp", "h").reliable)
        self.assertTrue(Target("tcp", "h").reliable)
        self.assertTrue(Source("tls", "h", 1).reliable)

    def test_frozen(self):
        """
        L{Source} and L{Target} are immutable and hashable.
        """
        t = Target("udp", "h", 5060)
        self.assertEqual({t: 1}[Target("udp", "h", 5060)], 1)
        self.assertRaises(Exception, setattr, t, "port", 1)


class ServerTransactionTests(TimerAssertions, unittest.TestCase):
    """
    Tests for server transactions (RFC 3261 17.2.2, 17.2.3).
    """

    def setUp(self):
        self.clock = Clock()
        self.transport = FakeTransport(self.clock)
        self.layer = TransactionLayer(self.clock, self.transport)
        self.calls = []
        self.layer.requestHandler = lambda request, txn: self.calls.append((request, txn))

    def test_handlerCalledOnce(self):
        """
        A retransmitted request does not reach the handler again.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.assertEqual(len(self.calls), 1)
        self.assertEqual(self.calls[0][0].method, "MESSAGE")
        self.assertEqual(self.transport.sent, [])

    def test_retransmissionResendsFinal(self):
        """
        A retransmission after the final response gets the same response
        again (the same bytes: the completed transaction keeps it packed),
        sent to the request's source.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        response = makeResponse(request, 202)
        txn.respond(response)
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.assertEqual(
            [(serialize(m), s) for m, s in self.transport.sent],
            [(serialize(response), UDP_SOURCE)] * 3,
        )
        self.assertEqual(len(self.calls), 1)

    def test_completedKeepsResponsePacked(self):
        """
        Once completed over UDP, the transaction keeps its final response
        as immutable values that the garbage collector does not walk (no
        L{Response}, L{Headers} or list), and L{lastResponse} gives it back
        equal: same code, reason, header lines and body.
        """
        import gc

        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        response = makeResponse(request, 202, headers=[("X-A", "1")])
        response.body = b"body"
        txn.respond(response)
        self.assertIs(tuple, type(txn._last))
        self.assertTrue(all(isinstance(v, (int, str, bytes))
                            for v in txn._last))
        if hasattr(gc, "is_tracked"):  # CPython
            gc.collect()
            self.assertFalse(gc.is_tracked(txn._last))
        again = txn.lastResponse
        self.assertIsInstance(again, Response)
        self.assertEqual(
            (again.code, again.reason, again.headers._items, again.body),
            (202, response.reason, response.headers._items, b"body"))
        self.assertEqual(serialize(again), serialize(response))

    def test_provisionalNotPacked(self):
        """
        A provisional response is kept as it is: only the completed
        transaction's final response is packed.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        trying = makeResponse(request, 100)
        txn.respond(trying)
        self.assertIs(txn.lastResponse, trying)

    def test_retransmissionResendsProvisional(self):
        """
        In the Proceeding state a retransmission gets the last provisional
        response again.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        trying = makeResponse(request, 100)
        txn.respond(trying)
        self.assertEqual(txn.state, "proceeding")
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.assertEqual([m for m, _ in self.transport.sent], [trying, trying])

    def test_retransmissionInTrying(self):
        """
        In the Trying state (no response yet) a retransmission is absorbed
        silently.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.assertEqual(self.calls[0][1].state, "trying")
        self.assertEqual(self.transport.sent, [])

    def test_newBranchNewTransaction(self):
        """
        A request with another branch is a new transaction.
        """
        self.layer.receive(makeRequest(branch="z9hG4bK1"), UDP_SOURCE)
        self.layer.receive(makeRequest(branch="z9hG4bK2"), UDP_SOURCE)
        self.assertEqual(len(self.calls), 2)

    def test_sentByPartOfKey(self):
        """
        The same branch from another sent-by is another transaction.
        """
        self.layer.receive(makeRequest(sentBy="198.51.100.7:5060"), UDP_SOURCE)
        self.layer.receive(makeRequest(sentBy="198.51.100.8:5060"), UDP_SOURCE)
        self.assertEqual(len(self.calls), 2)

    def test_methodPartOfKey(self):
        """
        The same branch with another method is another transaction.
        """
        self.layer.receive(makeRequest(method="MESSAGE"), UDP_SOURCE)
        self.layer.receive(makeRequest(method="OPTIONS"), UDP_SOURCE)
        self.assertEqual(len(self.calls), 2)

    def test_rfc2543Matching(self):
        """
        Without the magic cookie, retransmissions are matched by Call-ID, CSeq,
        From tag and sent-by.
        """
        self.layer.receive(makeRequest(branch=None), UDP_SOURCE)
        self.layer.receive(makeRequest(branch=None), UDP_SOURCE)
        self.assertEqual(len(self.calls), 1)
        self.layer.receive(makeRequest(branch="1234", cseq=2), UDP_SOURCE)
        self.layer.receive(makeRequest(branch=None, fromTag="other"), UDP_SOURCE)
        self.layer.receive(makeRequest(branch=None, callID="call-2"), UDP_SOURCE)
        self.assertEqual(len(self.calls), 4)

    def test_timerJUnreliable(self):
        """
        Over UDP the completed transaction stays for 64*T1 (and at most
        L{EXPIRY_SLACK} more) and is then forgotten, so the same request is
        new again.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        txn.respond(makeResponse(request, 200))
        self.clock.advance(31.9)
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.assertEqual(len(self.calls), 1)
        self.clock.advance(0.1 + EXPIRY_SLACK)
        self.assertEqual(txn.state, "terminated")
        self.assertEqual(self.layer._servers, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.assertEqual(len(self.calls), 2)

    def test_completedLetsGo(self):
        """
        Once its final response is sent over UDP, the transaction keeps what
        answering retransmissions and CANCEL needs, not the request.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        txn.respond(makeResponse(request, 200, toTag="tt"))
        self.assertIsNone(txn.request)
        self.assertEqual(txn.method, "MESSAGE")
        self.assertIn("MESSAGE", repr(txn))
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.assertEqual([m.code for m, _ in self.transport.sent], [200, 200])
        self.layer.receive(makeRequest(method="CANCEL"), UDP_SOURCE)
        cancelled = self.transport.sent[-1][0]
        self.assertEqual(cancelled.code, 200)
        self.assertIn("tag=tt", cancelled.headers.get("To"))
        txn.respond(makeResponse(request, 202))
        self.assertEqual(len(self.transport.sent), 3)
        self.assertEqual(len(self.calls), 1)

    def test_timerJReliable(self):
        """
        Over TCP Timer J is zero: the transaction ends with its final
        response and no timer is left.
        """
        self.layer.receive(makeRequest(transport="TCP"), TCP_SOURCE)
        request, txn = self.calls[0]
        txn.respond(makeResponse(request, 200))
        self.assertEqual(txn.state, "terminated")
        self.assertEqual(self.layer._servers, {})
        self.assertEqual(self.layer._serverByIdent, {})
        self.assertNoTimersLeft(self.layer, self.clock)
        self.assertEqual(self.transport.sent[0][1], TCP_SOURCE)

    def test_secondFinalDiscarded(self):
        """
        A second final response is discarded (RFC 3261 17.2.2).
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        txn.respond(makeResponse(request, 200))
        txn.respond(makeResponse(request, 500))
        self.assertEqual([m.code for m, _ in self.transport.sent], [200])

    def test_respondChecksArguments(self):
        """
        L{ServerTransaction.respond} refuses a request or a bad status code.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        self.assertRaises(TypeError, txn.respond, request)
        bad = makeResponse(request, 200)
        bad.code = 99
        self.assertRaises(ValueError, txn.respond, bad)

    def test_cancelUnknown(self):
        """
        A CANCEL that matches no transaction is answered 481 by the layer,
        without calling the handler.
        """
        self.layer.receive(makeRequest(method="CANCEL"), UDP_SOURCE)
        self.assertEqual(self.calls, [])
        [(response, dest)] = self.transport.sent
        self.assertEqual(response.code, 481)
        self.assertEqual(response.headers.get("CSeq"), "1 CANCEL")
        self.assertEqual(dest, UDP_SOURCE)

    def test_cancelPending(self):
        """
        A CANCEL for a pending transaction is answered 200 and has no other
        effect: the transaction still takes its own final response.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        self.layer.receive(makeRequest(method="CANCEL"), UDP_SOURCE)
        self.assertEqual([m.code for m, _ in self.transport.sent], [200])
        self.assertEqual(txn.state, "trying")
        txn.respond(makeResponse(request, 202))
        self.assertEqual([m.code for m, _ in self.transport.sent], [200, 202])

    def test_cancelCompleted(self):
        """
        A CANCEL for a completed transaction is answered 200 with the To tag
        of the original final response.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        txn.respond(makeResponse(request, 200, toTag="totag9"))
        self.layer.receive(makeRequest(method="CANCEL"), UDP_SOURCE)
        response = self.transport.sent[-1][0]
        self.assertEqual(response.code, 200)
        self.assertIn(";tag=totag9", response.headers.get("To"))

    def test_cancelRetransmission(self):
        """
        A retransmitted CANCEL gets the same answer again.
        """
        self.layer.receive(makeRequest(method="CANCEL"), UDP_SOURCE)
        self.layer.receive(makeRequest(method="CANCEL"), UDP_SOURCE)
        first, second = [m for m, _ in self.transport.sent]
        self.assertEqual(serialize(first), serialize(second))

    def test_ackIgnored(self):
        """
        An ACK is neither answered nor passed to the handler.
        """
        self.layer.receive(makeRequest(method="ACK"), UDP_SOURCE)
        self.assertEqual(self.calls, [])
        self.assertEqual(self.transport.sent, [])
        self.assertEqual(self.layer._servers, {})

    def test_handlerFailure(self):
        """
        If the handler raises before answering, the request gets 500 and the
        error is logged.
        """

        def handler(request, txn):
            raise RuntimeError("boom")

        self.layer.requestHandler = handler
        self.layer.receive(makeRequest(), UDP_SOURCE)
        self.assertEqual([m.code for m, _ in self.transport.sent], [500])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_noHandler(self):
        """
        Without a handler, requests are answered 503 with Retry-After.
        """
        self.layer.requestHandler = None
        self.layer.receive(makeRequest(), UDP_SOURCE)
        [(response, _)] = self.transport.sent
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.get("Retry-After"), "5")

    def test_abandoned(self):
        """
        A transaction the handler never answers is forgotten after 64*T1.
        """
        self.layer.receive(makeRequest(), UDP_SOURCE)
        txn = self.calls[0][1]
        self.clock.advance(32)
        self.assertEqual(txn.state, "terminated")
        self.assertEqual(self.layer._servers, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        txn.respond(makeResponse(txn.request, 200))
        self.assertEqual(self.transport.sent, [])

    def test_limit(self):
        """
        Beyond maxTransactions, new requests get 503 without a transaction.
        """
        self.layer.maxTransactions = 2
        for i in range(3):
            self.layer.receive(makeRequest(branch="z9hG4bK%d" % (i,)), UDP_SOURCE)
        self.assertEqual(len(self.calls), 2)
        self.assertEqual([m.code for m, _ in self.transport.sent], [503])
        self.assertEqual(len(self.layer._servers), 2)

    def test_noVia(self):
        """
        A message without a usable Via is dropped.
        """
        request = makeRequest()
        request.headers.remove("Via")
        self.layer.receive(request, UDP_SOURCE)
        self.assertEqual(self.calls, [])
        self.assertEqual(self.transport.sent, [])

    def test_responseSendFailureLogged(self):
        """
        A transport failure while sending a response does not break the
        transaction: it still completes.
        """
        self.transport.failWith = TransportFailure("gone")
        self.layer.receive(makeRequest(), UDP_SOURCE)
        request, txn = self.calls[0]
        txn.respond(makeResponse(request, 200))
        self.assertEqual(txn.state, "completed")


class ClientTransactionTests(TimerAssertions, unittest.TestCase):
    """
    Tests for client transactions (RFC 3261 17.1.2).
    """

    def setUp(self):
        self.clock = Clock()
        self.transport = FakeTransport(self.clock)
        self.layer = TransactionLayer(self.clock, self.transport)
        self.udp = Target("udp", "203.0.113.5", 5060)
        self.tcp = Target("tcp", "203.0.113.5", 5060)

    def sentRequest(self):
        return self.transport.sent[0][0]

    def test_viaAdded(self):
        """
        The request goes out with a new top Via holding the local address, a
        fresh z9hG4bK branch and rport; the caller's request is not modified.
        """
        original = makeOutgoing()
        self.layer.sendRequest(original, self.udp)
        sent, dest = self.transport.sent[0]
        self.assertEqual(dest, self.udp)
        self.assertNotIn("Via", original.headers)
        via = topVia(sent)
        self.assertEqual((via.transport, via.host, via.port), ("UDP", "192.0.2.1", 5060))
        self.assertTrue(via.branch.startswith("z9hG4bK"))
        self.assertGreater(len(via.branch), 20)
        self.assertTrue(via.hasParam("rport"))
        self.assertIsNone(via.param("rport"))
        self.assertEqual(sent.headers.items()[0][0], "Via")
        self.assertEqual(sent.headers.items()[1:], original.headers.items())
        self.assertEqual(sent.body, b"hi")

    def test_viaTransportAndIPv6(self):
        """
        The Via names the target's transport, and an IPv6 host is bracketed.
        """
        self.transport.local = ("2001:db8::1", 5070)
        self.layer.sendRequest(makeOutgoing(), Target("tls", "example.net"))
        via = topVia(self.sentRequest())
        self.assertEqual((via.transport, via.host, via.port), ("TLS", "[2001:db8::1]", 5070))

    def test_freshBranches(self):
        """
        Each transaction gets its own branch.
        """
        self.layer.sendRequest(makeOutgoing(), self.udp)
        self.layer.sendRequest(makeOutgoing(), self.udp)
        branches = {topVia(m).branch for m, _ in self.transport.sent}
        self.assertEqual(len(branches), 2)

    def test_timerESchedule(self):
        """
        Over UDP the request is retransmitted after 0.5, 1, 2, 4, 4, ...
        seconds, and Timer F fails the transaction at 32 s with
        L{TransactionTimeout}.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.udp)
        failures = []
        d.addErrback(failures.append)
        for _ in range(400):
            self.clock.advance(0.25)
        expected = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        self.assertEqual(self.transport.times, expected)
        self.assertEqual(len(failures), 1)
        failures[0].trap(TransactionTimeout)
        self.assertEqual(self.layer._clients, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Every retransmission is the identical request.
        self.assertEqual(len({id(m) for m, _ in self.transport.sent}), 1)

    def test_timerFExact(self):
        """
        Timer F fires at exactly 64*T1.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.tcp)
        self.clock.advance(31.999)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        self.failureResultOf(d, TransactionTimeout)

    def test_sentViaKnownParsed(self):
        """
        The parsed top Via of a sent request, which the layer hands over
        with it rather than having it parsed again, is what parsing its
        text gives, whatever the local address.
        """
        locals_ = [("192.0.2.1", 5060), ("0.0.0.0", 0), ("2001:DB8::1", 5070),
                   ("[::1]", 5062), ("GW.Example.COM", 5060)]
        for local in locals_:
            self.transport.local = local
            for target in (self.udp, self.tcp):
                self.layer.sendRequest(makeOutgoing(), target)
                sent = self.transport.sent[-1][0]
                text = sent.headers.get("Via")
                self.assertIn(text, _viaCache)
                self.assertEqual(topVia(sent), _parseVia(text)[0], text)
                self.assertEqual(parseVia(text), _parseVia(text), text)

    def test_sentViaFormat(self):
        """
        The top Via of a sent request is L{_VIA_FORMAT} with its branch,
        for any local address; the parts worked out per local address are
        bounded.
        """
        locals_ = [("192.0.2.1", 5060), ("0.0.0.0", 0), ("2001:DB8::1", 5070),
                   ("[::1]", 5062), ("GW.Example.COM", 5060), ("bad host", 5060)]
        for local in locals_ * 2:
            self.transport.local = local
            for target in (self.udp, self.tcp):
                self.layer.sendRequest(makeOutgoing(), target)
                sent = self.transport.sent[-1][0]
                via = sent.headers.get("Via")
                branch = via.split(";branch=")[1].split(";")[0]
                host = local[0]
                if ":" in host and not host.startswith("["):
                    host = "[%s]" % (host,)
                self.assertEqual(via, transactionModule._VIA_FORMAT % (
                    target.transport.upper(), host, local[1], branch))
        self.assertEqual(len(self.layer._viaTemplates), 12)
        for port in range(1, 100):
            self.transport.local = ("192.0.2.1", port)
            self.layer.sendRequest(makeOutgoing(), self.udp)
            self.assertLessEqual(len(self.layer._viaTemplates), 64)

    def test_oneTimerAtATime(self):
        """
        A UDP client transaction has one pending timer at a time: Timer E
        while it comes before Timer F, then Timer F.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.udp)
        d.addErrback(lambda f: None)
        for _ in range(128):
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            self.clock.advance(0.25)
        self.assertEqual(self.clock.seconds(), 32)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.layer._clients, {})

    def test_timerFBeforeSimultaneousE(self):
        """
        When a retransmission would fall at the very time of Timer F (T2 =
        T1), Timer F ends the transaction first: no retransmission then.
        """
        layer = TransactionLayer(self.clock, self.transport, t1=0.5, t2=0.5)
        d = layer.sendRequest(makeOutgoing(), self.udp)
        self.clock.pump([0.25] * 128)
        self.assertEqual(self.transport.times, [0.5 * k for k in range(64)])
        self.failureResultOf(d, TransactionTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_completedLetsGo(self):
        """
        Once a UDP client transaction has its final response it keeps only
        what absorbing retransmissions needs (not the request, nor the fired
        Deferred), and still absorbs them.
        """
        results = []
        self.layer.sendRequest(makeOutgoing(), self.udp).addCallback(results.append)
        [txn] = self.layer._clients.values()
        self.layer.receive(responseTo(self.sentRequest(), 200), UDP_SOURCE)
        self.assertEqual([r.code for r in results], [200])
        self.assertIsNone(txn.request)
        self.assertIsNone(txn.deferred)
        self.layer.receive(responseTo(self.sentRequest(), 200), UDP_SOURCE)
        self.assertEqual(len(results), 1)
        self.assertEqual(txn.state, "completed")

    def test_t1Scales(self):
        """
        The timers follow the configured T1.
        """
        layer = TransactionLayer(self.clock, self.transport, t1=0.125, t2=0.5)
        d = layer.sendRequest(makeOutgoing(), self.udp)
        self.clock.pump([0.0625] * 200)
        self.failureResultOf(d, TransactionTimeout)
        expected = [0.0, 0.125, 0.375] + [0.875 + 0.5 * k for k in range(15)]
        self.assertEqual(self.transport.times, expected)

    def test_provisionalSwitchesToT2(self):
        """
        After a provisional response, retransmissions come every T2, and the
        provisional response is not passed to the caller.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.udp)
        self.clock.advance(0.25)
        self.layer.receive(responseTo(self.sentRequest(), 100), UDP_SOURCE)
        self.assertNoResult(d)
        self.clock.pump([0.25] * 40)
        self.assertEqual(self.transport.times, [0.0, 0.5, 4.5, 8.5])

    def test_reliableNoRetransmission(self):
        """
        Over TCP the request is sent once.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.tcp)
        self.clock.pump([1] * 40)
        self.assertEqual(self.transport.times, [0.0])
        self.failureResultOf(d, TransactionTimeout)

    def test_finalResponse(self):
        """
        The final response fires the Deferred and stops the retransmissions.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.udp)
        self.clock.advance(0.5)
        self.layer.receive(responseTo(self.sentRequest(), 180), UDP_SOURCE)
        response = responseTo(self.sentRequest(), 202)
        self.layer.receive(response, UDP_SOURCE)
        self.assertIs(self.successResultOf(d), response)
        self.clock.advance(10)
        self.assertEqual(len(self.transport.sent), 2)

    def test_timerKAbsorbs(self):
        """
        Over UDP the completed transaction absorbs retransmitted responses
        for T4 and is then removed.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.udp)
        results = []
        d.addCallback(results.append)
        response = responseTo(self.sentRequest(), 200)
        self.layer.receive(response, UDP_SOURCE)
        self.layer.receive(responseTo(self.sentRequest(), 200), UDP_SOURCE)
        self.assertEqual(results, [response])
        self.assertEqual(len(self.layer._clients), 1)
        self.clock.advance(5)
        self.assertEqual(len(self.layer._clients), 1)
        self.clock.advance(EXPIRY_SLACK)
        self.assertEqual(self.layer._clients, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reliableNoTimerK(self):
        """
        Over TCP the transaction ends with the final response.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.tcp)
        self.layer.receive(responseTo(self.sentRequest(), 404), TCP_SOURCE)
        self.assertEqual(self.successResultOf(d).code, 404)
        self.assertEqual(self.layer._clients, {})
        self.assertNoTimersLeft(self.layer, self.clock)

    def test_transportFailure(self):
        """
        A transport failure fails the transaction with L{TransportFailure}.
        """
        self.transport.failWith = TransportFailure("connection refused")
        d = self.layer.sendRequest(makeOutgoing(), self.tcp)
        f = self.failureResultOf(d, TransportFailure)
        self.assertIn("refused", str(f.value))
        self.assertEqual(self.layer._clients, {})
        self.assertNoTimersLeft(self.layer, self.clock)

    def test_otherSendErrorWrapped(self):
        """
        Any other send error is reported as L{TransportFailure}.
        """
        self.transport.failWith = OSError("network unreachable")
        d = self.layer.sendRequest(makeOutgoing(), self.udp)
        f = self.failureResultOf(d, TransportFailure)
        self.assertIn("unreachable", str(f.value))

    def test_retransmissionFailure(self):
        """
        A transport failure on a retransmission also ends the transaction.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.udp)
        self.transport.failWith = TransportFailure("no route")
        self.clock.advance(0.5)
        self.failureResultOf(d, TransportFailure)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_methodMismatch(self):
        """
        A response with our branch but another CSeq method is dropped.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.udp)
        self.layer.receive(responseTo(self.sentRequest(), 200, method="OPTIONS"), UDP_SOURCE)
        self.assertNoResult(d)

    def test_strayResponse(self):
        """
        A response matching no transaction is dropped.
        """
        request = makeRequest()
        self.layer.receive(makeResponse(request, 200), UDP_SOURCE)
        self.assertEqual(self.transport.sent, [])

    def test_cancelDeferred(self):
        """
        Cancelling the Deferred ends the transaction and its timers.
        """
        d = self.layer.sendRequest(makeOutgoing(), self.udp)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.layer._clients, {})
        self.assertNoTimersLeft(self.layer, self.clock)

    def test_limit(self):
        """
        Beyond maxTransactions, sendRequest fails with L{TransportFailure}.
        """
        self.layer.maxTransactions = 1
        self.layer.sendRequest(makeOutgoing(), self.udp)
        d = self.layer.sendRequest(makeOutgoing(), self.udp)
        self.failureResultOf(d, TransportFailure)
        self.assertEqual(len(self.transport.sent), 1)

    def test_argumentChecks(self):
        """
        sendRequest refuses responses, non-Targets and INVITE.
        """
        self.assertRaises(TypeError, self.layer.sendRequest, Response(200, "OK"), self.udp)
        self.assertRaises(TypeError, self.layer.sendRequest, makeOutgoing(), ("udp", "h", 1))
        self.assertRaises(ValueError, self.layer.sendRequest, makeOutgoing("INVITE"), self.udp)

    def test_badTimers(self):
        """
        Nonsensical timer values are refused.
        """
        self.assertRaises(ValueError, TransactionLayer, self.clock, self.transport, t1=0)
        self.assertRaises(ValueError, TransactionLayer, self.clock, self.transport, t1=5, t2=4)


class NotifyTests(TimerAssertions, unittest.TestCase):
    """
    L{TransactionLayer.sendRequest} with C{notify} (the router's way): no
    Deferred, and C{notify} gets, once, what the Deferred would have fired
    with.
    """

    def setUp(self):
        self.clock = Clock()
        self.transport = FakeTransport(self.clock)
        self.layer = TransactionLayer(self.clock, self.transport)
        self.udp = Target("udp", "203.0.113.5")
        self.tcp = Target("tcp", "203.0.113.5")
        self.results = []

    def send(self, target):
        returned = self.layer.sendRequest(makeOutgoing(), target, self.results.append)
        self.assertIsNone(returned)

    def sentRequest(self):
        return self.transport.sent[-1][0]

    def test_response(self):
        """
        The final response is passed once; provisional ones and
        retransmissions of the final one are not; the transaction keeps
        neither a Deferred nor the callable.
        """
        self.send(self.udp)
        [txn] = self.layer._clients.values()
        self.assertIsNone(txn.deferred)
        self.layer.receive(responseTo(self.sentRequest(), 100), UDP_SOURCE)
        self.assertEqual(self.results, [])
        self.layer.receive(responseTo(self.sentRequest(), 202), UDP_SOURCE)
        self.layer.receive(responseTo(self.sentRequest(), 202), UDP_SOURCE)
        self.assertEqual([r.code for r in self.results], [202])
        self.assertIsNone(txn._notify)
        self.clock.advance(5 + EXPIRY_SLACK)
        self.assertEqual(self.layer._clients, {})
        self.assertNoTimersLeft(self.layer, self.clock)

    def test_notifyRaises(self):
        """
        An exception of C{notify} (a bug of the transaction user) is logged
        and does not reach the transport; the transaction still completes.
        """
        def broken(result):
            raise RuntimeError("bug")

        self.layer.sendRequest(makeOutgoing(), self.udp, broken)
        [txn] = self.layer._clients.values()
        self.layer.receive(responseTo(self.sentRequest(), 200), UDP_SOURCE)
        self.assertEqual("completed", txn.state)
        self.assertEqual(1, len(self.flushLoggedErrors(RuntimeError)))

    def test_timeout(self):
        """
        Timer F passes a L{Failure} of L{TransactionTimeout}, once.
        """
        self.send(self.udp)
        self.clock.pump([0.25] * 200)
        [failure] = self.results
        self.assertIsInstance(failure, Failure)
        failure.trap(TransactionTimeout)
        self.assertEqual(self.layer._clients, {})
        self.assertNoTimersLeft(self.layer, self.clock)

    def test_transportFailure(self):
        """
        A failed send passes a L{Failure} of L{TransportFailure}, before
        C{sendRequest} returns for a send that fails at once.
        """
        self.transport.failWith = OSError("network unreachable")
        self.send(self.tcp)
        [failure] = self.results
        self.assertIsInstance(failure, Failure)
        failure.trap(TransportFailure)
        self.assertIn("unreachable", str(failure.value))
        self.assertEqual(self.layer._clients, {})

    def test_limit(self):
        """
        Beyond C{maxTransactions} C{notify} gets the L{TransportFailure}
        at once and nothing is sent.
        """
        self.layer.maxTransactions = 1
        self.send(self.udp)
        self.send(self.udp)
        [failure] = self.results
        failure.trap(TransportFailure)
        self.assertEqual(len(self.transport.sent), 1)

    def test_stop(self):
        """
        L{TransactionLayer.stop} passes a L{TransportFailure} to a pending
        transaction's C{notify}.
        """
        self.send(self.udp)
        self.layer.stop()
        [failure] = self.results
        failure.trap(TransportFailure)
        self.assertEqual(self.layer._clients, {})


class CleanupTests(unittest.TestCase):
    """
    No state is left behind after many transactions.
    """

    def test_stop(self):
        """
        L{TransactionLayer.stop} forgets every transaction, cancels every
        timer and fails pending client transactions.
        """
        clock = Clock()
        transport = FakeTransport(clock)
        layer = TransactionLayer(clock, transport)
        layer.requestHandler = lambda request, txn: None
        layer.receive(makeRequest(branch="z9hG4bK1"), UDP_SOURCE)
        layer.receive(makeRequest(branch="z9hG4bK2"), UDP_SOURCE)
        layer._servers[next(iter(layer._servers))].respond(makeResponse(makeRequest(), 200))
        pending = layer.sendRequest(makeOutgoing(), Target("udp", "203.0.113.5"))
        done = layer.sendRequest(makeOutgoing(), Target("udp", "203.0.113.5"))
        layer.receive(responseTo(transport.sent[-1][0], 200), UDP_SOURCE)
        layer.stop()
        self.failureResultOf(pending, TransportFailure)
        self.assertEqual(self.successResultOf(done).code, 200)
        self.assertEqual((layer._servers, layer._serverByIdent, layer._clients), ({}, {}, {}))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noLeak(self):
        """
        After thousands of transactions of every outcome (1200 server and 1200
        client ones, plus CANCELs), the internal tables are empty once the
        timers have run.
        """
        clock = Clock()
        transport = FakeTransport(clock)
        layer = TransactionLayer(clock, transport)
        answered = []

        def handler(request, txn):
            n = len(answered)
            answered.append(txn)
            if n % 3 == 0:
                txn.respond(makeResponse(request, 200))
            elif n % 3 == 1:
                txn.respond(makeResponse(request, 100))
                txn.respond(makeResponse(request, 404))
            # every third one is never answered

        layer.requestHandler = handler
        results = []
        for i in range(1200):
            source = UDP_SOURCE if i % 2 else TCP_SOURCE
            layer.receive(makeRequest(branch="z9hG4bKs%d" % (i,)), source)
            if not source.reliable:
                layer.receive(makeRequest(branch="z9hG4bKs%d" % (i,)), source)
            if i % 10 == 0:
                layer.receive(makeRequest(method="CANCEL", branch="z9hG4bKs%d" % (i,)), source)
            layer.receive(makeRequest(method="ACK", branch="z9hG4bKs%d" % (i,)), source)
            target = Target("udp" if i % 2 else "tcp", "203.0.113.5")
            before = len(transport.sent)
            d = layer.sendRequest(makeOutgoing(), target)
            d.addBoth(results.append)
            request = transport.sent[before][0]
            if i % 4 == 0:
                layer.receive(responseTo(request, 200), UDP_SOURCE)
            elif i % 4 == 1:
                d.cancel()
            # the others time out
            clock.advance(0.01)
        self.assertEqual(len(answered), 1200)
        clock.pump([1] * 70)
        self.assertEqual(layer._servers, {})
        self.assertEqual(layer._serverByIdent, {})
        self.assertEqual(layer._clients, {})
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(results), 1200)


class CompletedTransactionTests(TimerAssertions, unittest.TestCase):
    """
    Transactions that only wait out Timer J or K share one timer per kind,
    are bounded by C{maxCompleted}, and do not count against
    C{maxTransactions}.
    """

    def setUp(self):
        self.clock = Clock()
        self.transport = FakeTransport(self.clock)
        self.layer = TransactionLayer(self.clock, self.transport)
        self.calls = []
        self.layer.requestHandler = lambda request, txn: self.calls.append((request, txn))

    def answerAll(self, count, start=0):
        for i in range(start, start + count):
            self.layer.receive(makeRequest(branch="z9hG4bKc%d" % (i,)), UDP_SOURCE)
            request, txn = self.calls[-1]
            txn.respond(makeResponse(request, 200))

    def test_oneTimerForTimerJ(self):
        """
        Many completed UDP server transactions keep one pending timer, and
        each ends between 64*T1 and 64*T1 + L{EXPIRY_SLACK} after its own
        final response.
        """
        self.answerAll(5)
        self.clock.advance(1)
        self.answerAll(5, start=5)
        self.assertEqual(timersOf(self.layer, self.clock), ['_abandonQueue', '_timerJ'])
        self.assertEqual(len(self.layer._servers), 10)
        self.clock.advance(31)
        self.assertEqual(len(self.layer._servers), 10)
        self.clock.advance(EXPIRY_SLACK)
        self.assertEqual(len(self.layer._servers), 5)
        self.clock.advance(1)
        self.assertEqual(self.layer._servers, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_endedWaitsGoWithTheNext(self):
        """
        A wait that has ended goes when the next transaction starts its
        own, before the timer: under load one ends for each that starts,
        and the timer, which fires L{EXPIRY_SLACK} after the oldest end,
        fires a few times a second instead of once per transaction.
        """
        sweeps = []
        queue = self.layer._timerJ
        original = queue._sweep

        def counting():
            sweeps.append(self.clock.seconds())
            original()

        self.patch(queue, "_sweep", counting)
        # 10 transactions a second for 40 s: from 32 s on, each new one
        # ends the one answered 32 s before it.
        for i in range(400):
            self.answerAll(1, start=i)
            self.clock.advance(0.1)
            self.assertLessEqual(len(self.layer._servers), 321)
        self.assertEqual(400, len(self.calls))
        self.assertEqual(320, len(self.layer._servers))
        # From 32 s on, about one every EXPIRY_SLACK (a timer per
        # transaction: 80).
        self.assertLessEqual(len(sweeps), (40 - 32) / EXPIRY_SLACK + 1)
        self.assertTrue(all(t >= 32 + EXPIRY_SLACK - 1e-6 for t in sweeps))
        # Then nothing comes: the timer ends the rest, each at most
        # EXPIRY_SLACK after its end.
        last = self.calls[-1][1]
        self.clock.advance(31.9 - 0.1)
        self.assertEqual("completed", last.state)
        self.clock.advance(0.1 + EXPIRY_SLACK)
        self.assertEqual("terminated", last.state)
        self.assertEqual(self.layer._servers, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_completedDoNotCountAgainstLimit(self):
        """
        Completed transactions waiting out Timer J leave room for new
        requests under C{maxTransactions}.
        """
        self.layer.maxTransactions = 2
        self.answerAll(5)
        self.assertEqual(len(self.calls), 5)
        self.assertEqual([m.code for m, _ in self.transport.sent], [200] * 5)

    def test_maxCompleted(self):
        """
        Beyond C{maxCompleted}, the transaction waiting longest ends early:
        its retransmission is then a new request.
        """
        self.layer.maxCompleted = 3
        self.answerAll(4)
        self.assertEqual(len(self.layer._servers), 3)
        self.assertEqual(self.calls[0][1].state, "terminated")
        self.layer.receive(makeRequest(branch="z9hG4bKc0"), UDP_SOURCE)
        self.assertEqual(len(self.calls), 5)
        self.layer.receive(makeRequest(branch="z9hG4bKc3"), UDP_SOURCE)
        self.assertEqual(len(self.calls), 5)

    def test_timerKShared(self):
        """
        Completed UDP client transactions share one Timer K and are not
        counted against C{maxTransactions}.
        """
        self.layer.maxTransactions = 1
        target = Target("udp", "203.0.113.5")
        for i in range(3):
            d = self.layer.sendRequest(makeOutgoing(), target)
            request = self.transport.sent[-1][0]
            self.layer.receive(responseTo(request, 200), UDP_SOURCE)
            self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(len(self.layer._clients), 3)
        self.assertEqual(timersOf(self.layer, self.clock), ['_firstTimerE', '_timerK'])
        self.clock.advance(5 + EXPIRY_SLACK)
        self.assertEqual(self.layer._clients, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])


class AbandonQueueTests(TimerAssertions, unittest.TestCase):
    """
    Server transactions wait for the transaction user's answer in one
    shared FIFO with one timer, from which answered transactions are
    dropped lazily; an unanswered one is abandoned at exactly
    C{serverTimeout}.
    """

    def setUp(self):
        self.clock = Clock()
        self.transport = FakeTransport(self.clock)
        self.layer = TransactionLayer(self.clock, self.transport)
        self.txns = []
        self.layer.requestHandler = lambda request, txn: self.txns.append(txn)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.n = 0

    def receive(self, source=UDP_SOURCE):
        """
        A new request from C{source}; its server transaction.
        """
        self.n += 1
        self.layer.receive(makeRequest(branch="z9hG4bKq%d" % (self.n,)), source)
        return self.txns[-1]

    def answer(self, txn, code=200):
        txn.respond(makeResponse(makeRequest(branch="z9hG4bKq0"), code))

    def abandoned(self):
        """
        The transactions logged as never answered, as C{(method, source)}.
        """
        return [(e["method"], e["source"]) for e in self.events
                if "never answered" in e.get("log_format", "")]

    def test_abandonedAtServerTimeout(self):
        """
        Unanswered transactions started at different times are each
        abandoned at exactly C{serverTimeout} after their request, with the
        warning, in a provisional state too; the queue has one timer.
        """
        starts = [0.0, 0.25, 0.375, 1.0]
        txns = []
        for start in starts:
            self.clock.advance(start - self.clock.seconds())
            txns.append(self.receive())
            self.answer(self.receive())
        self.answer(txns[1], 100)
        self.assertEqual(timersOf(self.layer, self.clock), ["_abandonQueue", "_timerJ"])
        ended = {}
        while self.clock.seconds() < 40:
            self.clock.advance(0.0625)
            for txn in txns:
                if txn.state == "terminated":
                    ended.setdefault(id(txn), self.clock.seconds())
        self.assertEqual([ended[id(txn)] for txn in txns], [s + 32 for s in starts])
        self.assertEqual(self.abandoned(), [("MESSAGE", UDP_SOURCE)] * 4)
        self.assertEqual(self.layer._servers, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_exactBoundary(self):
        """
        With a custom C{serverTimeout}, the transaction is still trying a
        hair before it and abandoned at it.
        """
        layer = TransactionLayer(self.clock, self.transport, serverTimeout=10)
        layer.requestHandler = lambda request, txn: self.txns.append(txn)
        layer.receive(makeRequest(), UDP_SOURCE)
        [txn] = self.txns
        self.clock.advance(9.999)
        self.assertEqual(txn.state, "trying")
        self.assertEqual(self.abandoned(), [])
        self.clock.advance(0.001)
        self.assertEqual(txn.state, "terminated")
        self.assertEqual(len(self.abandoned()), 1)

    def test_answeredNeverAbandoned(self):
        """
        Transactions answered before C{serverTimeout}, over UDP or TCP and
        however late, are never abandoned: no warning, and no effect on
        the transaction (a UDP one still answers retransmissions for Timer
        J after C{serverTimeout}).
        """
        udp = self.receive()
        tcp = self.receive(TCP_SOURCE)
        self.clock.advance(31.9)
        self.answer(udp)
        self.answer(tcp)
        self.assertEqual(tcp.state, "terminated")
        self.clock.advance(1)
        self.assertEqual(udp.state, "completed")
        self.layer.receive(makeRequest(branch="z9hG4bKq1"), UDP_SOURCE)
        self.assertEqual([m.code for m, _ in self.transport.sent], [200, 200, 200])
        self.clock.pump([1] * 40)
        self.assertEqual(self.abandoned(), [])
        self.assertEqual(udp.state, "terminated")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_inOrderAnswersKeepQueueShort(self):
        """
        When each transaction is answered before the next request, the
        FIFO never holds more than the one just added, and one timer
        serves them all.
        """
        for _ in range(100):
            self.answer(self.receive())
            self.assertEqual(len(self.layer._abandonQueue), 1)
            self.clock.advance(0.01)
        self.assertEqual(timersOf(self.layer, self.clock), ["_abandonQueue", "_timerJ"])
        self.clock.advance(32)
        self.assertEqual(len(self.layer._abandonQueue), 0)
        self.assertEqual(self.abandoned(), [])
        self.assertNoTimersLeft(self.layer, self.clock)

    def test_outOfOrderAnswers(self):
        """
        Answers in the reverse order leave the answered transactions in
        the FIFO until the oldest is answered: they are then all dropped
        at the next request, and none is abandoned.
        """
        txns = [self.receive() for _ in range(10)]
        for txn in reversed(txns[1:]):
            self.answer(txn)
        self.assertEqual(len(self.layer._abandonQueue), 10)
        self.answer(txns[0])
        last = self.receive()
        self.assertEqual(list(self.layer._abandonQueue._queue), [last])
        self.answer(last)
        self.clock.pump([1] * 40)
        self.assertEqual(self.abandoned(), [])
        self.assertEqual(self.layer._servers, {})

    def test_boundedBehindUnanswered(self):
        """
        Behind a transaction that is never answered, thousands of answered
        ones do not pile up: the FIFO is compacted, and never holds more
        than L{_COMPACT_MIN} entries or twice the transactions waiting.
        """
        queue = self.layer._abandonQueue
        stuck = self.receive()
        longest = 0
        for i in range(3 * _COMPACT_MIN):
            txn = self.receive()
            if i % 2000:
                self.answer(txn)
            longest = max(longest, len(queue))
        self.assertLessEqual(longest, _COMPACT_MIN)
        self.assertEqual(stuck.state, "trying")
        # Many waiting at once: the bound is twice their number.
        waiting = [self.receive() for _ in range(2 * _COMPACT_MIN)]
        for _ in range(4 * _COMPACT_MIN):
            self.answer(self.receive())
            longest = max(longest, len(queue))
        pending = sum(1 for txn in queue._queue if txn._waiting())
        self.assertEqual(pending, 1 + len(range(0, 3 * _COMPACT_MIN, 2000)) + 2 * _COMPACT_MIN)
        self.assertLessEqual(longest, 2 * pending)
        self.assertLessEqual(len(self.layer._servers) - len(self.layer._timerJ), pending)
        self.clock.advance(32)
        self.assertEqual([txn.state for txn in waiting], ["terminated"] * len(waiting))
        self.assertEqual(len(self.abandoned()), pending)
        self.assertEqual(len(queue), 0)

    def test_onlyRecentTransactions(self):
        """
        Whatever the answers, the FIFO holds only transactions started
        within the last C{serverTimeout}.
        """
        queue = self.layer._abandonQueue
        starts = []
        for i in range(100):
            starts.append(self.clock.seconds())
            txn = self.receive()
            if i % 7:
                self.answer(txn)
            self.clock.advance(1)
            now = self.clock.seconds()
            recent = sum(1 for s in starts if s > now - 32)
            self.assertLessEqual(len(queue), recent)
            for txn in queue._queue:
                self.assertGreater(txn._dueAt, now)
        # Those started at least 32 s before the end (t = 100).
        self.assertEqual(len(self.abandoned()), len(range(0, 69, 7)))

    def test_maxTransactionsStillApplies(self):
        """
        C{maxTransactions} still bounds the transactions waiting for an
        answer: beyond it requests get 503 and join no queue.
        """
        self.layer.maxTransactions = 3
        for _ in range(5):
            self.receive()
        self.assertEqual(len(self.txns), 3)
        self.assertEqual(len(self.layer._abandonQueue), 3)
        self.assertEqual([m.code for m, _ in self.transport.sent], [503, 503])

    def test_stop(self):
        """
        L{TransactionLayer.stop} empties the queue and cancels its timer.
        """
        self.receive()
        self.layer.stop()
        self.assertEqual(len(self.layer._abandonQueue), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.abandoned(), [])


class FirstClientTimerTests(TimerAssertions, unittest.TestCase):
    """
    The first timer of a client transaction (Timer E at T1 over UDP, Timer
    F at 64*T1 over TCP/TLS) is a wait in a shared FIFO with one timer;
    the timers keep the times of RFC 3261 17.1.2.2.
    """

    def setUp(self):
        self.clock = Clock()
        self.transport = FakeTransport(self.clock)
        self.layer = TransactionLayer(self.clock, self.transport)
        self.udp = Target("udp", "203.0.113.5", 5060)
        self.tcp = Target("tcp", "203.0.113.5", 5060)

    def start(self, target):
        """
        Start a client transaction to C{target}: its request as sent, and
        a list that gets C{(clock time, result)} when its Deferred fires.
        """
        before = len(self.transport.sent)
        d = self.layer.sendRequest(makeOutgoing(), target)
        fired = []
        d.addBoth(lambda r: fired.append((self.clock.seconds(), r)))
        return self.transport.sent[before][0], fired

    def sendTimes(self, request):
        return [t for (m, _), t in zip(self.transport.sent, self.transport.times) if m is request]

    def test_oneTimerForFirstWaits(self):
        """
        Many client transactions in flight share one timer per transport
        kind until their first timer.
        """
        for _ in range(50):
            self.start(self.udp)
            self.start(self.tcp)
        self.assertEqual(timersOf(self.layer, self.clock), ["_firstTimerE", "_firstTimerF"])
        self.clock.advance(0.5)
        # Each unanswered UDP transaction now has its own retransmission
        # schedule.
        self.assertEqual(timersOf(self.layer, self.clock), ["_firstTimerF"] + ["own"] * 50)

    def test_timerEFTimesStaggered(self):
        """
        UDP transactions started at different times, some answered (out of
        order, some after a provisional response), retransmit at exactly
        T1, 2*T1, 4*T1, then every T2 after their own start, and fail at
        exactly 64*T1; the answered ones stop at their answer.
        """
        starts = [0.0, 0.125, 0.25, 0.375, 0.5, 1.0]
        txns = []
        answered = {1: 0.4375, 3: 1.75, 4: 2.5}
        provisional = {5: 1.25}
        while self.clock.seconds() < 40:
            now = self.clock.seconds()
            if now in starts:
                txns.append(self.start(self.udp))
            for i, when in answered.items():
                if when == now:
                    self.layer.receive(responseTo(txns[i][0], 200), UDP_SOURCE)
            for i, when in provisional.items():
                if when == now:
                    self.layer.receive(responseTo(txns[i][0], 100), UDP_SOURCE)
            self.clock.advance(0.0625)
        full = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        for i, (start, (request, fired)) in enumerate(zip(starts, txns)):
            times = self.sendTimes(request)
            if i in answered:
                self.assertEqual(times, [start + t for t in full if start + t <= answered[i]])
                self.assertEqual(fired[0][0], answered[i])
                self.assertEqual(fired[0][1].code, 200)
            elif i in provisional:
                # E at T1, then every T2 (RFC 3261 17.1.2.2, Proceeding).
                self.assertEqual(times, [1.0, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5])
                self.assertEqual(fired[0][0], start + 32)
                fired[0][1].trap(TransactionTimeout)
            else:
                self.assertEqual(times, [start + t for t in full], i)
                self.assertEqual(fired[0][0], start + 32)
                fired[0][1].trap(TransactionTimeout)
        self.assertEqual(self.layer._clients, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timerFReliableStaggered(self):
        """
        TCP transactions started at different times, some answered out of
        order, fail at exactly 64*T1 after their own start; the answered
        ones never fire Timer F.
        """
        starts = [0.0, 0.25, 0.5, 3.0]
        txns = []
        for start in starts:
            self.clock.advance(start - self.clock.seconds())
            txns.append(self.start(self.tcp))
        self.layer.receive(responseTo(txns[2][0], 200), TCP_SOURCE)
        self.layer.receive(responseTo(txns[1][0], 404), TCP_SOURCE)
        self.clock.advance(31.9375 - self.clock.seconds())
        self.assertEqual([len(f) for _, f in txns], [0, 1, 1, 0])
        self.clock.pump([0.0625] * 60)
        for i in (0, 3):
            request, fired = txns[i]
            self.assertEqual(fired[0][0], starts[i] + 32)
            fired[0][1].trap(TransactionTimeout)
            self.assertEqual(self.sendTimes(request), [starts[i]])
        self.assertEqual([r.code for _, [(_, r)] in (txns[1], txns[2])], [404, 200])
        self.assertEqual(self.layer._clients, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_addedDuringSweep(self):
        """
        A transaction started by a callback while the queue's timer runs
        (here: when a retransmission fails) gets its first timer at its
        own T1, and one due before it is not delayed.
        """
        started = []

        def restart(failure):
            failure.trap(TransportFailure)
            self.transport.failWith = None
            started.append(self.start(self.udp))

        self.layer.sendRequest(makeOutgoing(), self.udp).addErrback(restart)
        first = self.transport.sent[-1][0]
        self.clock.advance(0.25)
        second, _ = self.start(self.udp)
        self.transport.failWith = TransportFailure("no route")
        # The first transaction's Timer E, at 0.5: its retransmission
        # fails, and the callback starts a third transaction.
        self.clock.advance(0.25)
        self.assertEqual(self.sendTimes(first), [0.0, 0.5])
        [(third, _)] = started
        self.assertEqual(timersOf(self.layer, self.clock), ["_firstTimerE"])
        self.clock.advance(0.25)
        self.assertEqual(self.sendTimes(second), [0.25, 0.75])
        self.clock.advance(0.25)
        self.assertEqual(self.sendTimes(third), [0.5, 1.0])
        self.assertEqual(timersOf(self.layer, self.clock), ["own", "own"])

    def test_stopDuringSweep(self):
        """
        When a callback run by the queue's timer stops the layer and
        starts a new transaction, the queue keeps exactly one timer, due
        at the new transaction's T1.
        """

        def restart(failure):
            failure.trap(TransportFailure)
            self.layer.stop()
            self.transport.failWith = None
            self.start(self.udp)

        self.layer.sendRequest(makeOutgoing(), self.udp).addErrback(restart)
        self.start(self.udp)
        self.transport.failWith = TransportFailure("no route")
        self.clock.advance(0.5)
        self.assertEqual(timersOf(self.layer, self.clock), ["_firstTimerE"])
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 1.0)
        self.clock.advance(0.5)
        self.assertEqual(self.transport.times, [0.0, 0.0, 0.5, 0.5, 1.0])

    def test_answeredLeavesNoOwnTimer(self):
        """
        An answered transaction never gets a timer of its own, and the
        queue's timer then ends without sending anything.
        """
        request, fired = self.start(self.udp)
        self.layer.receive(responseTo(request, 200), UDP_SOURCE)
        request, fired = self.start(self.tcp)
        self.layer.receive(responseTo(request, 200), TCP_SOURCE)
        self.assertEqual(timersOf(self.layer, self.clock), ["_firstTimerE", "_firstTimerF", "_timerK"])
        self.clock.advance(self.layer.t4 + EXPIRY_SLACK)
        self.assertEqual(self.layer._clients, {})
        self.assertNoTimersLeft(self.layer, self.clock)

    def test_sendReturningNone(self):
        """
        A transport may return L{None} from C{send} (sent at once): the
        transactions then go on as with a fired Deferred.
        """
        self.transport.send = lambda message, destination: (
            self.transport.sent.append((message, destination)),
            self.transport.times.append(self.clock.seconds()))[-1] and None
        request, fired = self.start(self.udp)
        self.clock.advance(0.5)
        self.assertEqual(self.sendTimes(request), [0.0, 0.5])
        self.layer.receive(responseTo(request, 200), UDP_SOURCE)
        self.assertEqual(fired[0][1].code, 200)
        calls = []
        self.layer.requestHandler = lambda request, txn: calls.append(txn)
        self.layer.receive(makeRequest(), UDP_SOURCE)
        calls[0].respond(makeResponse(makeRequest(), 200))
        self.layer.maxTransactions = 0
        self.layer.receive(makeRequest(branch="z9hG4bKother"), UDP_SOURCE)
        self.assertEqual([m.code for m, _ in self.transport.sent[-2:]], [200, 503])
