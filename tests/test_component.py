"""
Tests for L{xmppgw.xmpp.component}: the XEP-0114 component link.

No network and no real time: the reactor is a L{MemoryReactorClock} whose
C{connectTCP} returns a connector that counts connection attempts, the XML
stream runs over a L{StringTransport}, and the server's side is played by
feeding bytes to C{dataReceived}.
"""

import itertools
import re
import socket

from twisted.internet import abstract, defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.words.protocols.jabber import xmlstream
from hypothesis import given, settings, strategies as st
from twisted.words.xish import domish, xpath
from wokkel.generic import FallbackHandler
from wokkel.subprotocols import XMPPHandler

from xmppgw.fastxml import SimpleElement
from xmppgw.router import GatewayHandler
from xmppgw.xmpp import component as componentModule
from xmppgw.xmpp.component import (
    ComponentLink,
    ConfirmTimeout,
    LinkDown,
    LinkLost,
    LinkQueueFull,
    LinkStopped,
    confirmMode,
    transportBuffered,
)

NS_STREAMS = "http://etherx.jabber.org/streams"

SERVER_HEADER = (
    "<stream:stream xmlns='jabber:component:accept' "
    "xmlns:stream='http://etherx.jabber.org/streams' "
    "from='gw.example' id='%s'>"
)


def streamError(condition, text=None):
    """
    The bytes of a server stream error with C{condition}, stream footer
    included.
    """
    textElement = ""
    if text:
        textElement = (
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>%s</text>" % text
        )
    return (
        "<stream:error><%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>%s"
        "</stream:error></stream:stream>" % (condition, textElement)
    ).encode("utf-8")


class FakeConnector:
    """
    An L{IConnector} that counts calls to C{connect}.
    """

    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.connects = 0
        self.stoppedConnecting = False
        self.disconnected = False

    def connect(self):
        self.connects += 1

    def stopConnecting(self):
        self.stoppedConnecting = True

    def disconnect(self):
        self.disconnected = True

    def getDestination(self):
        return IPv4Address("TCP", self.host, self.port)


class FakeReactor(MemoryReactorClock):
    """
    A memory reactor whose C{connectTCP} returns a L{FakeConnector}.
    """

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        self.tcpClients.append((host, port, factory, timeout, bindAddress))
        connector = FakeConnector(host, port)
        connector.connect()
        self.connectors.append(connector)
        return connector


class RecordingHandler(XMPPHandler):
    """
    A handler that records the calls its parent makes.
    """

    def __init__(self):
        XMPPHandler.__init__(self)
        self.calls = []

    def connectionMade(self):
        self.calls.append("connectionMade")

    def connectionInitialized(self):
        self.calls.append("connectionInitialized")

    def connectionLost(self, reason):
        XMPPHandler.connectionLost(self, reason)
        self.calls.append("connectionLost")


class FakeSocket:
    """
    Records C{setsockopt} calls.
    """

    def __init__(self):
        self.options = []

    def setsockopt(self, level, option, value):
        self.options.append((level, option, value))


class HandleTransport(StringTransport):
    """
    A L{StringTransport} with a socket handle.
    """

    def __init__(self):
        StringTransport.__init__(self)
        self.handle = FakeSocket()

    def getHandle(self):
        return self.handle


class LinkTestMixin:
    """
    Set-up and server-side helpers for the link tests.
    """

    def setUp(self):
        self.reactor = FakeReactor()
        self.link = self.makeLink()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.xs = None
        self.transport = None

    def makeLink(self, **kwargs):
        kwargs.setdefault("reactor", self.reactor)
        link = ComponentLink("127.0.0.1", 5347, "gw.example", "secret", **kwargs)
        link.factory.jitter = 0
        return link

    @property
    def connector(self):
        return self.reactor.connectors[-1]

    def connect(self, transport=None):
        """
        Let the current attempt's TCP connection succeed.
        """
        self.xs = self.link.factory.buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 5347)
        )
        self.transport = transport if transport is not None else StringTransport()
        self.xs.makeConnection(self.transport)
        return self.xs

    def serverHeader(self, sid="3BF96D32"):
        self.xs.dataReceived((SERVER_HEADER % sid).encode("ascii"))

    def authenticate(self):
        """
        Connect, receive the server header and accept the handshake.
        """
        self.connect()
        self.serverHeader()
        self.xs.dataReceived(b"<handshake/>")

    def failConnect(self, exception=None):
        """
        Let the current attempt fail before a TCP connection is made.
        """
        reason = Failure(exception or ConnectionRefusedError())
        self.link.factory.clientConnectionFailed(self.connector, reason)

    def loseConnection(self, exception=None):
        """
        End the current TCP connection the way a reactor would: the protocol
        first, then the factory.
        """
        reason = Failure(exception or ConnectionDone())
        self.xs.connectionLost(reason)
        self.link.factory.clientConnectionLost(self.connector, reason)

    def refuseHandshake(self, condition="not-authorized"):
        """
        One full attempt the server refuses with a stream error.
        """
        self.connect()
        self.serverHeader()
        self.xs.dataReceived(streamError(condition))
        self.loseConnection()

    def pendingDelay(self):
        """
        The delay of the one pending reconnection.
        """
        calls = self.reactor.getDelayedCalls()
        self.assertEqual(1, len(calls))
        return round(calls[0].getTime() - self.reactor.seconds(), 9)

    def advanceToRetry(self):
        """
        Let the pending reconnection fire.
        """
        self.pendingDelay()
        self.reactor.advance(
            self.reactor.getDelayedCalls()[0].getTime() - self.reactor.seconds()
        )

    def eventsAt(self, level):
        return [e for e in self.events if e.get("log_level") == level]

    def messagesAt(self, level):
        return [formatEvent(e) for e in self.eventsAt(level)]


class ConnectionTests(LinkTestMixin, unittest.TestCase):
    """
    Connecting and the XEP-0114 handshake.
    """

    def test_startServiceConnectsWithInjectedReactor(self):
        """
        startService connects to host:port through the injected reactor, and
        that reactor is the factory's clock.
        """
        self.link.startService()
        self.assertEqual(1, len(self.reactor.tcpClients))
        host, port, factory, timeout, _ = self.reactor.tcpClients[0]
        self.assertEqual(("127.0.0.1", 5347), (host, port))
        self.assertIs(self.link.factory, factory)
        self.assertEqual(30, timeout)
        self.assertIs(self.reactor, self.link.factory.clock)
        self.assertEqual("connecting", self.link.state)

    def test_streamHeader(self):
        """
        The stream header names the component domain in the component
        namespace, without a version.
        """
        self.link.startService()
        self.connect()
        header = self.transport.value().decode("utf-8")
        self.assertIn("xmlns='jabber:component:accept'", header)
        self.assertIn("to='gw.example'", header)
        self.assertNotIn("version=", header)
        self.assertEqual("handshaking", self.link.state)

    def test_handshakeDigest(self):
        """
        The handshake is SHA-1 over stream id and secret (XEP-0114 vector).
        """
        self.link.startService()
        self.connect()
        self.transport.clear()
        self.serverHeader("3BF96D32")
        self.assertEqual(
            "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136",
            xmlstream.hashPassword("3BF96D32", "secret"),
        )
        self.assertEqual(
            b"<handshake>b09ea9b3b7f586be8a08d0a3dd7466f110aeb136</handshake>",
            self.transport.value(),
        )
        self.assertEqual("handshaking", self.link.state)
        self.assertFalse(self.link.isAuthenticated)

    def test_authenticatedAfterHandshake(self):
        """
        The empty <handshake/> from the server authenticates the link.
        """
        self.link.startService()
        self.authenticate()
        self.assertEqual("authenticated", self.link.state)
        self.assertTrue(self.link.isAuthenticated)
        self.assertIsNone(self.link.lastError)
        self.assertTrue(
            any("authenticated as 'gw.example'" in m for m in self.messagesAt(LogLevel.info))
        )

    def test_handlersInitializedOnlyAfterHandshake(self):
        """
        Handlers get connectionMade on connect but connectionInitialized
        only once the handshake succeeded.
        """
        handler = RecordingHandler()
        handler.setHandlerParent(self.link)
        self.link.startService()
        self.connect()
        self.serverHeader()
        self.assertEqual(["connectionMade"], handler.calls)
        self.xs.dataReceived(b"<handshake/>")
        self.assertEqual(["connectionMade", "connectionInitialized"], handler.calls)

    def test_handlersCanSendWhenInitialized(self):
        """
        A handler may send from connectionInitialized (the router flushes
        its hold queue there).
        """
        sent = []

        class Sender(XMPPHandler):
            def connectionInitialized(self):
                message = domish.Element((None, "message"))
                message["from"] = "a@gw.example"
                message["to"] = "b@xmpp.example"
                self.parent.send(message)
                sent.append(True)

        Sender().setHandlerParent(self.link)
        self.link.startService()
        self.authenticate()
        self.assertEqual([True], sent)
        self.assertIn(b"<message from='a@gw.example'", self.transport.value())

    def test_handlerAddedWhenAuthenticated(self):
        """
        A handler added to an authenticated link is brought up at once.
        """
        self.link.startService()
        self.authenticate()
        handler = RecordingHandler()
        handler.setHandlerParent(self.link)
        self.assertEqual(["connectionMade", "connectionInitialized"], handler.calls)

    def test_handlersToldOfLoss(self):
        """
        Losing an authenticated link calls the handlers' connectionLost and
        makes send raise LinkDown.
        """
        handler = RecordingHandler()
        handler.setHandlerParent(self.link)
        self.link.startService()
        self.authenticate()
        self.loseConnection(ConnectionLost())
        self.assertEqual("connectionLost", handler.calls[-1])
        self.assertFalse(self.link.isAuthenticated)
        self.assertEqual("down", self.link.state)
        self.assertRaises(LinkDown, self.link.send, self.message())
        warnings = self.messagesAt(LogLevel.warn)
        self.assertEqual(1, len(warnings))
        self.assertIn("XMPP component link to 127.0.0.1:5347 lost", warnings[0])
        self.assertIn("retrying in 1.0 s", warnings[0])

    def message(self):
        message = domish.Element((None, "message"))
        message["from"] = "alice*sip.example@gw.example"
        message["to"] = "bob@xmpp.example"
        message.addElement("body", content="hi")
        return message


class SendTests(LinkTestMixin, unittest.TestCase):
    """
    L{ComponentLink.send} and L{ComponentLink.request}.
    """

    def message(self, sender="alice*sip.example@gw.example"):
        message = domish.Element((None, "message"))
        if sender is not None:
            message["from"] = sender
        message["to"] = "bob@xmpp.example"
        message.addElement("body", content="hi")
        return message

    def test_sendBeforeStartRaisesLinkDown(self):
        """
        send raises LinkDown before the service has started.
        """
        exc = self.assertRaises(LinkDown, self.link.send, self.message())
        self.assertIn("stopped", str(exc))

    def test_sendDuringHandshakeRaisesLinkDown(self):
        """
        send raises LinkDown while the handshake is in progress, and writes
        nothing (and nothing is queued for later).
        """
        self.link.startService()
        self.connect()
        self.serverHeader()
        self.transport.clear()
        self.assertRaises(LinkDown, self.link.send, self.message())
        self.assertEqual(b"", self.transport.value())
        self.xs.dataReceived(b"<handshake/>")
        self.assertEqual(b"", self.transport.value())

    def test_sendWhenAuthenticatedWrites(self):
        """
        send writes the stanza at once, with the caller's from untouched.
        """
        self.link.startService()
        self.authenticate()
        self.transport.clear()
        self.link.send(self.message())
        self.assertEqual(
            b"<message from='alice*sip.example@gw.example' to='bob@xmpp.example'>"
            b"<body>hi</body></message>",
            self.transport.value(),
        )

    def test_sendWithoutFrom(self):
        """
        A stanza without from is refused (no one fills it in silently).
        """
        self.link.startService()
        self.authenticate()
        self.transport.clear()
        self.assertRaises(ValueError, self.link.send, self.message(sender=None))
        self.assertEqual(b"", self.transport.value())

    def test_sendNotAnElement(self):
        """
        send only takes elements.
        """
        self.link.startService()
        self.authenticate()
        self.assertRaises(TypeError, self.link.send, "<message/>")

    def test_requestWhenDown(self):
        """
        An IQ request on a link that is down fails with LinkDown and leaves
        nothing tracked.
        """
        from wokkel.generic import Request

        d = self.link.request(Request(recipient="xmpp.example", sender="gw.example"))
        self.failureResultOf(d, LinkDown)
        self.assertEqual({}, self.link._iqDeferreds)


class BackOffTests(LinkTestMixin, unittest.TestCase):
    """
    Failures are logged once, clearly, and retried with back-off.
    """

    def test_wrongPassword(self):
        """
        A not-authorized stream error logs one error line and schedules a
        retry after initialDelay.
        """
        self.link.startService()
        self.refuseHandshake("not-authorized")
        errors = self.messagesAt(LogLevel.error)
        self.assertEqual(
            [
                "XMPP server at 127.0.0.1:5347 refused the component handshake "
                "for 'gw.example' (wrong xmpp_password?); retrying in 1.0 s"
            ],
            errors,
        )
        self.assertEqual("not-authorized", self.eventsAt(LogLevel.error)[0]["condition"])
        self.assertEqual(1, self.link.authFailures)
        self.assertEqual("down", self.link.state)
        self.assertEqual(1.0, self.pendingDelay())
        self.assertEqual(1, self.connector.connects)
        self.reactor.advance(1.0)
        self.assertEqual(2, self.connector.connects)
        self.assertEqual(1, self.link.reconnects)
        self.assertEqual("connecting", self.link.state)

    def test_wrongPasswordDelaysGrow(self):
        """
        Repeated refusals back off 1, 2, 4, ... seconds, capped at maxDelay,
        and the service keeps trying.
        """
        self.link.startService()
        delays = []
        for _ in range(9):
            self.refuseHandshake("not-authorized")
            delays.append(self.pendingDelay())
            self.advanceToRetry()
        self.assertEqual([1, 2, 4, 8, 16, 32, 60, 60, 60], delays)
        self.assertEqual(9, self.link.authFailures)
        self.assertEqual(9, self.link.reconnects)
        self.assertTrue(self.link.running)
        self.assertEqual(9, len(self.eventsAt(LogLevel.error)))

    def test_streamClosedAfterHandshake(self):
        """
        A server that closes the stream after the handshake without an
        error element is reported as a refused handshake.
        """
        self.link.startService()
        self.connect()
        self.serverHeader()
        self.xs.dataReceived(b"</stream:stream>")
        self.loseConnection()
        errors = self.messagesAt(LogLevel.error)
        self.assertEqual(1, len(errors))
        self.assertIn("refused the component handshake for 'gw.example'", errors[0])
        self.assertIn("wrong xmpp_password?", errors[0])
        self.assertIn("retrying in 1.0 s", errors[0])
        self.assertEqual(1, self.link.authFailures)

    def test_conflict(self):
        """
        A conflict stream error says another component holds the name and
        backs off like any other failure.
        """
        self.link.startService()
        delays = []
        for _ in range(3):
            self.refuseHandshake("conflict")
            delays.append(self.pendingDelay())
            self.advanceToRetry()
        errors = self.messagesAt(LogLevel.error)
        self.assertEqual(3, len(errors))
        self.assertIn(
            "another component is already connected as 'gw.example' (conflict)",
            errors[0],
        )
        self.assertIn("retrying in 1.0 s", errors[0])
        self.assertEqual([1, 2, 4], delays)
        self.assertEqual(3, self.link.conflicts)
        self.assertEqual(0, self.link.authFailures)
        self.assertEqual("conflict", self.link.lastError)

    def test_conflictWhenAuthenticated(self):
        """
        A conflict that ends an authenticated link (the server kicked us for
        a newer connection) is logged as such.
        """
        self.link.startService()
        self.authenticate()
        self.xs.dataReceived(streamError("conflict"))
        self.loseConnection()
        errors = self.messagesAt(LogLevel.error)
        self.assertEqual(1, len(errors))
        self.assertIn("another component connected as 'gw.example'", errors[0])
        self.assertIn("replaced this one", errors[0])

    def test_hostUnknown(self):
        """
        host-unknown points at the server's component configuration.
        """
        self.link.startService()
        self.refuseHandshake("host-unknown")
        errors = self.messagesAt(LogLevel.error)
        self.assertEqual(1, len(errors))
        self.assertIn(
            "does not know component 'gw.example' (check the server's Component config)",
            errors[0],
        )
        self.assertEqual(1.0, self.pendingDelay())

    def test_invalidNamespace(self):
        """
        invalid-namespace (a client port, not a component port) names the
        port.
        """
        self.link.startService()
        self.refuseHandshake("invalid-namespace")
        errors = self.messagesAt(LogLevel.error)
        self.assertEqual(1, len(errors))
        self.assertIn("is port 5347 the server's component port?", errors[0])

    def test_otherStreamError(self):
        """
        Another stream error is a warning naming the condition and text.
        """
        self.link.startService()
        self.connect()
        self.serverHeader()
        self.xs.dataReceived(b"<handshake/>")
        self.xs.dataReceived(streamError("system-shutdown", "bye"))
        self.loseConnection()
        warnings = self.messagesAt(LogLevel.warn)
        self.assertEqual(1, len(warnings))
        self.assertIn("'system-shutdown' 'bye'", warnings[0])
        self.assertEqual([], self.messagesAt(LogLevel.error))

    def test_missingStreamID(self):
        """
        A server header without an id fails the handshake: the connection
        is dropped and retried.
        """
        self.link.startService()
        self.connect()
        self.xs.dataReceived(
            b"<stream:stream xmlns='jabber:component:accept' "
            b"xmlns:stream='http://etherx.jabber.org/streams' from='gw.example'>"
        )
        self.assertTrue(self.transport.disconnecting)
        self.loseConnection()
        errors = self.messagesAt(LogLevel.error)
        self.assertEqual(1, len(errors))
        self.assertIn("Component handshake with XMPP server at 127.0.0.1:5347 failed", errors[0])
        self.assertEqual(1.0, self.pendingDelay())

    def test_malformedXML(self):
        """
        Malformed XML from the server is a warning and a retry.
        """
        self.link.startService()
        self.authenticate()
        self.xs.dataReceived(b"<message><</message>")
        self.assertTrue(self.transport.disconnecting)
        self.loseConnection()
        warnings = self.messagesAt(LogLevel.warn)
        self.assertEqual(1, len(warnings))
        self.assertIn("sent malformed XML", warnings[0])

    def test_connectionRefused(self):
        """
        A refused connection is a warning with the retry delay, and the
        delays grow.
        """
        self.link.startService()
        delays = []
        for _ in range(3):
            self.failConnect()
            delays.append(self.pendingDelay())
            self.advanceToRetry()
        warnings = self.messagesAt(LogLevel.warn)
        self.assertEqual(3, len(warnings))
        self.assertIn("Cannot connect to XMPP server at 127.0.0.1:5347", warnings[0])
        self.assertIn("retrying in 1.0 s", warnings[0])
        self.assertEqual([1, 2, 4], delays)
        self.assertEqual(3, self.connector.connects - 1)

    def test_tcpConnectDoesNotResetDelay(self):
        """
        A TCP connection that ends before the handshake succeeded does not
        reset the back-off (unlike Twisted's XmlStreamFactory).
        """
        self.link.startService()
        delays = []
        for _ in range(4):
            self.connect()
            self.loseConnection()
            delays.append(self.pendingDelay())
            self.advanceToRetry()
        self.assertEqual([1, 2, 4, 8], delays)

    def test_resetAfterSuccess(self):
        """
        After a successful handshake that stayed up, the next loss retries
        after initialDelay again.
        """
        self.link.startService()
        self.refuseHandshake()
        self.advanceToRetry()
        self.refuseHandshake()
        self.assertEqual(2.0, self.pendingDelay())
        self.advanceToRetry()
        self.authenticate()
        self.reactor.advance(self.link.stableInterval)
        self.loseConnection(ConnectionLost())
        self.assertEqual(1.0, self.pendingDelay())

    def test_quickDropKeepsBackingOff(self):
        """
        A link lost right after its handshake does not reset the back-off,
        so accept-then-drop cannot loop fast.
        """
        self.link.startService()
        self.refuseHandshake()
        self.advanceToRetry()
        self.refuseHandshake()
        self.advanceToRetry()
        self.authenticate()
        self.xs.dataReceived(streamError("conflict"))
        self.loseConnection()
        self.assertEqual(4.0, self.pendingDelay())

    def test_jitter(self):
        """
        Jitter only lengthens a delay, by at most the jitter fraction, and
        never beyond maxDelay.
        """
        link = self.link
        link.factory.jitter = 0.1
        link.factory.random = lambda: 0.5
        link.startService()
        delays = []
        for _ in range(8):
            self.failConnect()
            delays.append(round(self.pendingDelay(), 6))
            self.advanceToRetry()
        self.assertEqual([1.05, 2.1, 4.2, 8.4, 16.8, 33.6, 60.0, 60.0], delays)

    def test_neverFasterThanInitialDelay(self):
        """
        Whatever the server does and whatever the jitter draws, attempts are
        at least initialDelay apart and at most maxDelay apart.
        """
        draws = iter([0.0, 0.999999] * 50)
        self.link.factory.jitter = 0.5
        self.link.factory.random = lambda: next(draws)
        self.link.startService()
        behaviours = [
            self.failConnect,
            lambda: self.refuseHandshake("not-authorized"),
            lambda: self.refuseHandshake("conflict"),
            lambda: (self.connect(), self.loseConnection()),
        ]
        times = [self.reactor.seconds()]
        for i in range(40):
            behaviours[i % len(behaviours)]()
            delay = self.pendingDelay()
            self.assertGreaterEqual(delay, 1.0)
            self.assertLessEqual(delay, 60.0)
            self.advanceToRetry()
            times.append(self.reactor.seconds())
        self.assertEqual(41, self.connector.connects)
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertGreaterEqual(min(gaps), 1.0)

    def test_stateChanges(self):
        """
        onStateChange callbacks see every state of a connect, fail, retry,
        succeed, stop cycle.
        """
        states = []
        self.link.onStateChange.append(states.append)
        self.link.startService()
        self.refuseHandshake()
        self.advanceToRetry()
        self.authenticate()
        self.link.stopService()
        self.assertEqual(
            [
                "connecting",
                "handshaking",
                "down",
                "connecting",
                "handshaking",
                "authenticated",
                "stopped",
            ],
            states,
        )

    def test_brokenStateCallback(self):
        """
        A failing onStateChange callback is logged and does not break the
        link.
        """

        def broken(state):
            raise RuntimeError("boom")

        self.link.onStateChange.append(broken)
        self.link.startService()
        self.authenticate()
        self.assertEqual("authenticated", self.link.state)
        self.assertEqual(3, len(self.flushLoggedErrors(RuntimeError)))


class StopTests(LinkTestMixin, unittest.TestCase):
    """
    L{ComponentLink.stopService}.
    """

    def test_stopWhileDownCancelsRetry(self):
        """
        Stopping while waiting to retry cancels the retry for good.
        """
        self.link.startService()
        self.failConnect()
        self.assertEqual(1, len(self.reactor.getDelayedCalls()))
        d = self.link.stopService()
        self.successResultOf(d)
        self.assertEqual([], self.reactor.getDelayedCalls())
        self.reactor.advance(3600)
        self.assertEqual(1, self.connector.connects)
        self.assertEqual("stopped", self.link.state)

    def test_stopWhileConnecting(self):
        """
        Stopping while the TCP connection is in progress stops connecting;
        the resulting failure schedules nothing.
        """
        self.link.startService()
        d = self.link.stopService()
        self.successResultOf(d)
        self.assertTrue(self.connector.stoppedConnecting)
        self.failConnect()
        self.assertEqual([], self.reactor.getDelayedCalls())
        self.assertEqual("stopped", self.link.state)
        self.assertEqual([], self.messagesAt(LogLevel.warn))

    def test_stopClosesStreamCleanly(self):
        """
        Stopping an authenticated link sends the stream footer and fires
        when the server has closed the connection; no reconnect follows.
        """
        self.link.startService()
        self.authenticate()
        self.transport.clear()
        d = self.link.stopService()
        self.assertEqual(b"</stream:stream>", self.transport.value())
        self.assertNoResult(d)
        self.assertEqual("stopped", self.link.state)
        self.xs.dataReceived(b"</stream:stream>")
        self.assertTrue(self.transport.disconnecting)
        self.loseConnection()
        self.successResultOf(d)
        self.assertEqual([], self.reactor.getDelayedCalls())
        self.assertEqual("stopped", self.link.state)
        self.assertEqual(0, self.link.reconnects)

    def test_stopIsBounded(self):
        """
        If the server never closes the stream, the connection is dropped
        after closeTimeout and the Deferred fires.
        """
        self.link.startService()
        self.authenticate()
        d = self.link.stopService()
        self.reactor.advance(self.link.closeTimeout - 0.1)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.successResultOf(d)
        self.assertTrue(self.transport.disconnecting)
        self.loseConnection()
        self.assertEqual([], self.reactor.getDelayedCalls())

    def test_restartAfterStop(self):
        """
        A stopped link can be started again and connects afresh.
        """
        self.link.startService()
        self.failConnect()
        self.link.stopService()
        self.link.startService()
        self.assertEqual(2, len(self.reactor.tcpClients))
        self.assertEqual("connecting", self.link.state)
        self.failConnect()
        self.assertEqual(1.0, self.pendingDelay())


class KeepAliveTests(LinkTestMixin, unittest.TestCase):
    """
    The whitespace keepalive.
    """

    def test_whitespacePing(self):
        """
        An authenticated link writes one space every keepAliveInterval.
        """
        self.link.startService()
        self.authenticate()
        self.transport.clear()
        self.reactor.advance(59)
        self.assertEqual(b"", self.transport.value())
        self.reactor.advance(1)
        self.assertEqual(b" ", self.transport.value())
        self.reactor.advance(60)
        self.assertEqual(b"  ", self.transport.value())

    def test_noPingBeforeHandshake(self):
        """
        Nothing is written by the keepalive before the handshake.
        """
        self.link.startService()
        self.connect()
        self.serverHeader()
        self.transport.clear()
        self.reactor.advance(120)
        self.assertEqual(b"", self.transport.value())

    def test_pingStopsOnLoss(self):
        """
        The keepalive stops when the connection is lost; only the retry
        remains scheduled.
        """
        self.link.startService()
        self.authenticate()
        self.link.stableInterval = 0
        self.loseConnection(ConnectionLost())
        self.assertEqual(1.0, self.pendingDelay())

    def test_keepAliveOff(self):
        """
        keepAliveInterval=0 schedules nothing.
        """
        self.link = self.makeLink(keepAliveInterval=0)
        self.link.startService()
        self.authenticate()
        self.assertEqual([], self.reactor.getDelayedCalls())

    def test_userTimeout(self):
        """
        Where the platform has TCP_USER_TIMEOUT, the socket gets
        keepAliveTimeout (default twice the interval) in milliseconds.
        """
        if getattr(socket, "TCP_USER_TIMEOUT", None) is None:
            raise unittest.SkipTest("no TCP_USER_TIMEOUT on this platform")
        self.link.startService()
        transport = HandleTransport()
        self.connect(transport)
        self.assertEqual(
            [(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 120000)],
            transport.handle.options,
        )


class UnlinkAfterDispatchTests(LinkTestMixin, unittest.TestCase):
    """
    A top-level element from the server has its parent links dropped once
    it has been dispatched (L{xmppgw.fastxml.unlinkTree}): the handlers see
    the element whole, and it is no reference cycle afterwards.
    """

    def test_unlinkedAfterDispatch(self):
        self.connect()
        self.authenticate()
        seen = []

        def observe(element):
            seen.append((element, [c.parent for c in element.elements()]))

        self.xs.addObserver("/message", observe)
        self.xs.dataReceived(
            b"<message to='a@gw.example' from='b@xmpp.example'>"
            b"<body>hi</body><x xmlns='urn:x'><y/></x></message>")
        [(element, parentsDuring)] = seen
        self.assertEqual([element, element], parentsDuring)
        body, x = element.elements()
        self.assertEqual([None, None, None],
                         [body.parent, x.parent, next(x.elements()).parent])
        self.assertEqual("hi", str(element.body))


class TrafficLogTests(LinkTestMixin, unittest.TestCase):
    """
    logTraffic.
    """

    def test_handshakeRedacted(self):
        """
        Traffic logging shows the stream but not the handshake digest.
        """
        self.link = self.makeLink(logTraffic=True)
        self.link.startService()
        self.authenticate()
        text = "\n".join(self.messagesAt(LogLevel.info))
        self.assertIn("XMPP SEND: <stream:stream", text)
        self.assertIn("XMPP RECV: <handshake/>", text)
        self.assertIn("<handshake>[redacted]</handshake>", text)
        self.assertNotIn("b09ea9b3b7f586be8a08d0a3dd7466f110aeb136", text)


class ArgumentTests(unittest.TestCase):
    """
    Bad constructor arguments get clear errors.
    """

    def make(self, **kwargs):
        args = dict(
            host="127.0.0.1",
            port=5347,
            domain="gw.example",
            password="secret",
            reactor=MemoryReactorClock(),
        )
        args.update(kwargs)
        return ComponentLink(**args)

    def test_valid(self):
        """
        Good arguments build a stopped link with the domain normalised.
        """
        link = self.make(domain="GW.Example")
        self.assertEqual("gw.example", link.domain)
        self.assertEqual("stopped", link.state)
        self.assertEqual((0, 0, 0), (link.reconnects, link.authFailures, link.conflicts))

    def test_badPort(self):
        """
        A port outside 1..65535, or not an int, is a ValueError.
        """
        for port in (0, 65536, "5347", True):
            self.assertRaises(ValueError, self.make, port=port)

    def test_badDomain(self):
        """
        An empty domain or one with a localpart or resource is refused.
        """
        for domain in ("", "a@gw.example", "gw.example/r"):
            self.assertRaises(ValueError, self.make, domain=domain)
        self.assertRaises(TypeError, self.make, domain=b"gw.example")

    def test_badPassword(self):
        """
        The password must be a non-empty string.
        """
        self.assertRaises(ValueError, self.make, password="")
        self.assertRaises(TypeError, self.make, password=b"secret")

    def test_badDelays(self):
        """
        Delays must satisfy 0 < initialDelay <= maxDelay.
        """
        self.assertRaises(ValueError, self.make, initialDelay=0)
        self.assertRaises(ValueError, self.make, initialDelay=10, maxDelay=5)
        self.assertRaises(ValueError, self.make, keepAliveInterval=-1)
        self.assertRaises(ValueError, self.make, connectTimeout=0)

    def test_emptyHost(self):
        """
        An empty host is refused.
        """
        self.assertRaises(ValueError, self.make, host="")


class ConfirmedDeliveryTests(LinkTestMixin, unittest.TestCase):
    """
    L{ComponentLink.deliver}: stanzas confirmed by a ping round trip through
    the server.
    """

    def setUp(self):
        LinkTestMixin.setUp(self)
        self.link = self.makeLink(keepAliveInterval=0, confirmTimeout=5.0)

    def message(self, n=1):
        message = domish.Element((None, "message"))
        message["from"] = "alice*sip.example@gw.example"
        message["to"] = "bob@xmpp.example"
        message["id"] = "m%d" % (n,)
        message.addElement("body", content="hi %d" % (n,))
        return message

    def up(self):
        self.link.startService()
        self.authenticate()
        self.transport.clear()

    def written(self):
        """
        The message ids and ping ids written since the last call, in order.
        """
        data = self.transport.value().decode("utf-8")
        self.transport.clear()
        return re.findall(r"<(message|iq)[^>]* id='([^']+)'", data)

    def pingIDs(self, items):
        return [i for kind, i in items if kind == "iq"]

    def answer(self, pingID, kind="get", sender="gw.example"):
        """
        The server routes our ping back (or answers it).
        """
        if kind == "get":
            data = (
                "<iq type='get' id='%s' from='%s' to='gw.example'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>" % (pingID, sender))
        else:
            data = "<iq type='%s' id='%s' from='%s' to='gw.example'/>" % (
                kind, pingID, sender)
        self.xs.dataReceived(data.encode("utf-8"))

    def test_writtenThenConfirmed(self):
        """
        A stanza is written at once, and its Deferred fires only when the
        ping written after it comes back.
        """
        self.up()
        d = self.link.deliver(self.message())
        self.assertEqual([("message", "m1")], self.written())
        self.assertNoResult(d)
        self.reactor.advance(0)
        items = self.written()
        self.assertEqual(1, len(self.pingIDs(items)))
        self.assertNoResult(d)
        self.answer(self.pingIDs(items)[0])
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual({"queued": 0, "unconfirmed": 0}, self.link.queueDepths())

    def test_flushPushes(self):
        """
        At the end of the turn that wrote stanzas the link hands them to
        the kernel (C{pushToKernel}), ping or not: a ping goes
        with the first, and the next ones wait for its answer but are
        pushed all the same.
        """
        pushed = []
        self.patch(componentModule, "pushToKernel", pushed.append)
        self.up()
        self.link.deliver(self.message(1))
        self.assertEqual([], pushed)
        self.reactor.advance(0)
        self.assertEqual([self.xs.transport], pushed)
        first = self.pingIDs(self.written())
        self.link.deliver(self.message(2))
        self.reactor.advance(0)
        self.assertEqual([self.xs.transport] * 2, pushed)
        self.assertEqual([("message", "m2")], self.written())
        self.answer(first[0])
        self.assertEqual(1, len(self.pingIDs(self.written())))

    def test_pingFormat(self):
        """
        The ping is an XEP-0199 iq get from and to the component's domain.
        """
        self.up()
        self.link.deliver(self.message())
        self.transport.clear()
        self.reactor.advance(0)
        data = self.transport.value()
        self.assertRegex(
            data,
            rb"^<iq type='get' id='xmppgw-confirm-[0-9a-f]+-1' from='gw.example' "
            rb"to='gw.example'><ping xmlns='urn:xmpp:ping'/></iq>$")

    def test_pingIDs(self):
        """
        A link's ping ids share one random prefix and count up; another
        link (another instance on the same component domain) has another
        prefix.
        """
        ids = [next(self.link._pingIDs) for _ in range(3)]
        prefix = ids[0][:-1]
        self.assertEqual([prefix + "1", prefix + "2", prefix + "3"], ids)
        other = ComponentLink("127.0.0.1", 5347, "gw.example", "secret",
                              reactor=self.reactor)
        self.assertNotEqual(prefix, next(other._pingIDs)[:-1])

    def test_oneReactorTurnOnePing(self):
        """
        The writes of one reactor turn share one ping, written after them.
        """
        self.up()
        ds = [self.link.deliver(self.message(n)) for n in range(3)]
        self.reactor.advance(0)
        items = self.written()
        self.assertEqual(["message"] * 3 + ["iq"], [kind for kind, _ in items])
        self.answer(items[-1][1])
        for d in ds:
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(1, self.link.confirmStats["pings"])

    def test_onePingInFlight(self):
        """
        While a ping that confirms stanzas is out, the stanzas written in
        later turns get no ping of their own: its answer confirms its batch
        and at once sends one ping for them; a late second answer to it is
        ignored.
        """
        self.up()
        d1 = self.link.deliver(self.message(1))
        self.reactor.advance(0)
        (first,) = self.pingIDs(self.written())
        d2 = self.link.deliver(self.message(2))
        self.reactor.advance(0)
        d3 = self.link.deliver(self.message(3))
        self.reactor.advance(0)
        self.assertEqual([("message", "m2"), ("message", "m3")], self.written())
        self.answer(first)
        self.assertIsNone(self.successResultOf(d1))
        self.assertNoResult(d2)
        self.assertNoResult(d3)
        items = self.written()
        self.assertEqual(["iq"], [kind for kind, _ in items])
        self.answer(first)
        self.assertNoResult(d2)
        self.answer(items[0][1])
        self.assertIsNone(self.successResultOf(d2))
        self.assertIsNone(self.successResultOf(d3))
        self.assertEqual(2, self.link.confirmStats["pings"])
        self.assertEqual(3, self.link.confirmStats["confirmed"])

    def test_idleLinkPingsEveryStanza(self):
        """
        On an idle link (the previous ping answered) every stanza's ping
        goes out at the end of its own turn.
        """
        self.up()
        for n in range(3):
            d = self.link.deliver(self.message(n))
            self.reactor.advance(0)
            (pingID,) = self.pingIDs(self.written())
            self.answer(pingID)
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(3, self.link.confirmStats["pings"])

    def test_heldBatchFailsWithTimeout(self):
        """
        Stanzas waiting for the outstanding ping's answer are written and
        unconfirmed: when that ping times out they fail with
        ConfirmTimeout (504) like its own batch.
        """
        self.up()
        d1 = self.link.deliver(self.message(1))
        self.reactor.advance(0)
        d2 = self.link.deliver(self.message(2))
        self.reactor.advance(0)
        self.reactor.advance(5.0)
        self.failureResultOf(d1, ConfirmTimeout)
        self.assertEqual(
            504, self.failureResultOf(d2, ConfirmTimeout).value.sipCode)
        self.assertEqual({"queued": 0, "unconfirmed": 0},
                         self.link.queueDepths())

    def test_heldBatchFailsWithConnectionLoss(self):
        """
        Stanzas waiting for the outstanding ping's answer fail with
        LinkLost when the connection is lost, and are not written again.
        """
        self.up()
        d1 = self.link.deliver(self.message(1))
        self.reactor.advance(0)
        d2 = self.link.deliver(self.message(2))
        self.reactor.advance(0)
        self.loseConnection(ConnectionLost())
        self.failureResultOf(d1, LinkLost)
        self.failureResultOf(d2, LinkLost)
        self.assertEqual({"queued": 0, "unconfirmed": 0},
                         self.link.queueDepths())

    def test_unknownIDsIgnored(self):
        """
        An iq with an id that is not one of our pings, or one of our ids
        from another sender, confirms nothing and is not consumed (the
        observers see it, unhandled); our returning ping is consumed before
        the dispatcher (no observer sees it).
        """
        self.up()
        d = self.link.deliver(self.message())
        self.reactor.advance(0)
        (pingID,) = self.pingIDs(self.written())
        seen = []
        self.xs.addObserver(
            "/iq", lambda iq: seen.append(bool(getattr(iq, "handled", False))), -5)
        self.answer("something-else")
        self.answer(pingID, sender="mallory@xmpp.example")
        self.assertNoResult(d)
        self.assertEqual([False, False], seen)
        self.answer(pingID)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual([False, False], seen)

    def test_resultOrErrorConfirms(self):
        """
        A server that answers the ping instead of routing it back confirms
        too: a result, or an error, proves it read the stream that far.
        """
        self.up()
        for kind in ("result", "error"):
            d = self.link.deliver(self.message())
            self.reactor.advance(0)
            (pingID,) = self.pingIDs(self.written())
            self.answer(pingID, kind=kind)
            self.assertIsNone(self.successResultOf(d))

    def test_fallbackDoesNotAnswerPing(self):
        """
        wokkel's FallbackHandler (which answers unhandled iq gets with an
        error) leaves our returning ping alone, but still answers others.
        """
        FallbackHandler().setHandlerParent(self.link)
        self.up()
        self.link.deliver(self.message())
        self.reactor.advance(0)
        (pingID,) = self.pingIDs(self.written())
        self.answer(pingID)
        self.assertEqual(b"", self.transport.value())
        self.answer("other-1", sender="bob@xmpp.example")
        self.assertIn(b"type='error'", self.transport.value())

    def test_queuedUntilAuthenticated(self):
        """
        Before the handshake stanzas queue; after it they are written in
        order and confirmed.
        """
        self.link.startService()
        self.connect()
        self.serverHeader()
        self.transport.clear()
        ds = [self.link.deliver(self.message(n)) for n in (1, 2)]
        self.assertEqual([], self.written())
        self.assertEqual({"queued": 2, "unconfirmed": 0}, self.link.queueDepths())
        self.xs.dataReceived(b"<handshake/>")
        self.reactor.advance(0)
        items = self.written()
        self.assertEqual([("message", "m1"), ("message", "m2")], items[:2])
        self.answer(items[2][1])
        for d in ds:
            self.assertIsNone(self.successResultOf(d))

    def test_cancelRemovesQueued(self):
        """
        Cancelling the Deferred of a queued stanza withdraws it: it is never
        written.
        """
        self.link.startService()
        d1 = self.link.deliver(self.message(1))
        d2 = self.link.deliver(self.message(2))
        d1.cancel()
        self.failureResultOf(d1, defer.CancelledError)
        self.authenticate()
        self.reactor.advance(0)
        data = self.transport.value()
        self.assertNotIn(b"m1", data)
        self.assertIn(b"id='m2'", data)
        self.assertNoResult(d2)
        self.assertEqual(1, self.link.confirmStats["cancelled"])

    def test_cancelWrittenOnlyStopsDeferred(self):
        """
        Cancelling after the write cannot unsend: the Deferred fails with
        CancelledError and the later confirmation is harmless.
        """
        self.up()
        d = self.link.deliver(self.message())
        self.reactor.advance(0)
        (pingID,) = self.pingIDs(self.written())
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.answer(pingID)
        self.assertEqual({"queued": 0, "unconfirmed": 0}, self.link.queueDepths())

    def test_notifyConfirmed(self):
        """
        With C{notify} (the router's way) there is no Deferred: C{notify}
        gets L{None} once, when the ping comes back; C{deliver} returns a
        handle whose late C{cancel()} changes nothing.
        """
        self.up()
        results = []
        handle = self.link.deliver(self.message(), results.append)
        self.assertNotIsInstance(handle, defer.Deferred)
        self.reactor.advance(0)
        (pingID,) = self.pingIDs(self.written())
        self.assertEqual([], results)
        self.answer(pingID)
        self.assertEqual([None], results)
        handle.cancel()
        self.assertEqual([None], results)
        self.assertEqual(0, self.link.confirmStats["cancelled"])

    def test_notifyRaises(self):
        """
        An exception of one stanza's C{notify} is logged and the other
        stanzas of the same confirmation still get their outcome.
        """
        self.up()

        def broken(result):
            raise RuntimeError("bug")

        results = []
        self.link.deliver(self.message(1), broken)
        self.link.deliver(self.message(2), results.append)
        self.reactor.advance(0)
        (pingID,) = self.pingIDs(self.written())
        self.answer(pingID)
        self.assertEqual([None], results)
        self.assertEqual(1, len(self.flushLoggedErrors(RuntimeError)))

    def test_notifyCancelQueued(self):
        """
        C{cancel()} on the handle of a queued stanza withdraws it, as
        cancelling the Deferred does, and C{notify} gets a
        L{defer.CancelledError}, once.
        """
        self.link.startService()
        results = []
        handle = self.link.deliver(self.message(1), results.append)
        kept = []
        self.link.deliver(self.message(2), kept.append)
        handle.cancel()
        handle.cancel()
        [failure] = results
        failure.trap(defer.CancelledError)
        self.authenticate()
        self.reactor.advance(0)
        data = self.transport.value()
        self.assertNotIn(b"m1", data)
        self.assertIn(b"id='m2'", data)
        self.assertEqual([], kept)
        self.assertEqual(1, self.link.confirmStats["cancelled"])

    def test_notifyRefused(self):
        """
        A delivery refused at once calls C{notify} with the L{Failure}
        before C{deliver} returns L{None}: a bad stanza, a full queue, a
        stopped link.
        """
        self.link = self.makeLink(keepAliveInterval=0, queueLimit=1)
        self.link.startService()
        results = []
        self.assertIsNone(self.link.deliver("<message/>", results.append))
        self.assertIsNotNone(self.link.deliver(self.message(1), results.append))
        self.assertIsNone(self.link.deliver(self.message(2), results.append))
        self.link.stopService()
        self.assertIsNone(self.link.deliver(self.message(3), results.append))
        self.assertEqual(
            [TypeError, LinkQueueFull, LinkStopped, LinkStopped],
            [type(f.value) for f in results])

    def test_notifyWriteOnly(self):
        """
        With confirmDelivery "none", C{notify} gets L{None} as the stanza is
        written, and C{deliver} returns L{None}.
        """
        self.link = self.makeLink(keepAliveInterval=0, confirmDelivery="none")
        self.up()
        results = []
        self.assertIsNone(self.link.deliver(self.message(), results.append))
        self.assertEqual([None], results)

    def test_queueBounded(self):
        """
        Beyond queueLimit, deliver fails at once with LinkQueueFull (503).
        """
        self.link = self.makeLink(keepAliveInterval=0, queueLimit=2)
        self.link.startService()
        ds = [self.link.deliver(self.message(n)) for n in range(3)]
        self.assertNoResult(ds[0])
        self.assertNoResult(ds[1])
        failure = self.failureResultOf(ds[2], LinkQueueFull)
        self.assertEqual(503, failure.value.sipCode)
        self.assertEqual("resource-constraint", failure.value.condition)

    def test_windowBounded(self):
        """
        At most windowLimit stanzas are written and unconfirmed; the next
        waits in the queue until a confirmation frees the window.
        """
        self.link = self.makeLink(keepAliveInterval=0, windowLimit=2)
        self.up()
        ds = [self.link.deliver(self.message(n)) for n in (1, 2, 3)]
        self.reactor.advance(0)
        items = self.written()
        self.assertEqual([("message", "m1"), ("message", "m2")], items[:2])
        self.assertEqual({"queued": 1, "unconfirmed": 2}, self.link.queueDepths())
        self.answer(items[2][1])
        self.assertEqual([("message", "m3")], self.written())
        self.reactor.advance(0)
        self.answer(self.pingIDs(self.written())[0])
        for d in ds:
            self.assertIsNone(self.successResultOf(d))

    def test_badStanza(self):
        """
        deliver fails with TypeError for a non-element and ValueError for a
        stanza without from; nothing is written.
        """
        self.up()
        self.failureResultOf(self.link.deliver("<message/>"), TypeError)
        message = self.message()
        del message.attributes["from"]
        self.failureResultOf(self.link.deliver(message), ValueError)
        self.assertEqual(b"", self.transport.value())

    def test_timeoutFailsUnconfirmedAndStopsWriting(self):
        """
        No answer within confirmTimeout: the written stanzas fail with
        ConfirmTimeout (504), the link is unconfirmed, and new stanzas
        queue instead of being written; one probe ping is written per
        confirmTimeout.
        """
        self.up()
        d1 = self.link.deliver(self.message(1))
        self.reactor.advance(0)
        self.written()
        self.reactor.advance(4.9)
        self.assertNoResult(d1)
        self.reactor.advance(0.1)
        failure = self.failureResultOf(d1, ConfirmTimeout)
        self.assertEqual(504, failure.value.sipCode)
        self.assertTrue(self.link.unconfirmed)
        self.assertEqual(1, len(self.pingIDs(self.written())))  # the probe
        d2 = self.link.deliver(self.message(2))
        self.reactor.advance(0)
        self.assertEqual([], self.written())
        self.assertNoResult(d2)
        for _ in range(40):
            self.reactor.advance(5)
        items = self.written()
        self.assertEqual(["iq"] * 40, [kind for kind, _ in items])
        self.assertLessEqual(len(self.link._pings), 16)
        self.assertEqual({"queued": 1, "unconfirmed": 0}, self.link.queueDepths())

    def deliverConfirmed(self, n):
        """
        Deliver message C{n}, let its ping be written and answered, and
        check it is confirmed.
        """
        d = self.link.deliver(self.message(n))
        self.reactor.advance(0)
        (pingID,) = self.pingIDs(self.written())
        self.answer(pingID)
        self.successResultOf(d)

    def test_eachPingTimesOutAtItsOwnDeadline(self):
        """
        A ping written 3 s after an answered one times out confirmTimeout
        after it was written (t=8), not confirmTimeout after the first one
        (t=5).
        """
        self.up()
        self.deliverConfirmed(1)
        self.reactor.advance(3)
        d2 = self.link.deliver(self.message(2))
        self.reactor.advance(0)
        self.written()
        self.reactor.advance(4.9)
        self.assertNoResult(d2)
        self.assertFalse(self.link.unconfirmed)
        self.reactor.advance(0.1)
        self.failureResultOf(d2, ConfirmTimeout)
        self.assertTrue(self.link.unconfirmed)

    def test_onePingTimerForAll(self):
        """
        Pings answered one at a time share one timer (not one each,
        cancelled by the answer); once all are answered it fires once,
        finds nothing due and is not set again; an unanswered ping still
        times out confirmTimeout after it was written.
        """
        self.up()
        timers = []
        for n in range(10):
            self.deliverConfirmed(n)
            if not any(self.link._pingTimer is t for t in timers):
                timers.append(self.link._pingTimer)
            self.reactor.advance(1)
        self.assertEqual(2, len(timers))
        self.reactor.advance(5)
        self.assertIsNone(self.link._pingTimer)
        d = self.link.deliver(self.message(10))
        self.reactor.advance(0)
        written = self.reactor.seconds()
        self.written()
        self.assertEqual(written + 5, self.link._pingTimer.getTime())
        self.reactor.advance(4.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.failureResultOf(d, ConfirmTimeout)

    def test_shortenedConfirmTimeout(self):
        """
        When confirmTimeout is shortened while the timer left by an answered
        ping is pending, a new ping still times out the new confirmTimeout
        after it was written.
        """
        self.up()
        self.deliverConfirmed(1)
        self.link.confirmTimeout = 1.0
        self.reactor.advance(1)
        d2 = self.link.deliver(self.message(2))
        self.reactor.advance(0)
        self.written()
        self.reactor.advance(0.9)
        self.assertNoResult(d2)
        self.reactor.advance(0.1)
        self.failureResultOf(d2, ConfirmTimeout)

    def test_lossCancelsPingTimer(self):
        """
        The connection lost, the pings' timer is cancelled.
        """
        self.up()
        self.link.deliver(self.message(1)).addErrback(lambda f: None)
        self.reactor.advance(0)
        timer = self.link._pingTimer
        self.assertTrue(timer.active())
        self.loseConnection(ConnectionLost())
        self.assertFalse(timer.active())
        self.assertIsNone(self.link._pingTimer)

    def test_resumeAfterLateAnswer(self):
        """
        A late answer to the timed-out ping resumes the link: queued
        stanzas are written and confirmed; the failed ones stay failed.
        """
        self.up()
        d1 = self.link.deliver(self.message(1))
        self.reactor.advance(0)
        (first,) = self.pingIDs(self.written())
        self.reactor.advance(5)
        self.failureResultOf(d1, ConfirmTimeout)
        self.written()
        d2 = self.link.deliver(self.message(2))
        self.answer(first)
        self.assertFalse(self.link.unconfirmed)
        self.reactor.advance(0)
        items = self.written()
        self.assertEqual(("message", "m2"), items[0])
        self.answer(items[1][1])
        self.assertIsNone(self.successResultOf(d2))

    def test_resumeAfterProbeAnswer(self):
        """
        An answer to a probe ping resumes the link as well.
        """
        self.up()
        self.link.deliver(self.message(1)).addErrback(lambda f: None)
        self.reactor.advance(0)
        (first,) = self.pingIDs(self.written())
        self.reactor.advance(5)
        self.assertTrue(self.link.unconfirmed)
        (probe,) = self.pingIDs(self.written())
        self.assertNotEqual(first, probe)
        self.answer(probe)
        self.assertFalse(self.link.unconfirmed)
        d = self.link.deliver(self.message(2))
        self.assertEqual([("message", "m2")], self.written())
        self.reactor.advance(0)
        self.answer(self.pingIDs(self.written())[0])
        self.assertIsNone(self.successResultOf(d))

    def test_connectionLossFailsWrittenKeepsQueued(self):
        """
        When the connection is lost, written unconfirmed stanzas fail with
        LinkLost (504) and are not written again; queued ones (beyond the
        window) go out after the next handshake.
        """
        self.link = self.makeLink(keepAliveInterval=0, windowLimit=1)
        self.up()
        d1 = self.link.deliver(self.message(1))
        d2 = self.link.deliver(self.message(2))
        self.reactor.advance(0)
        self.loseConnection(ConnectionLost())
        failure = self.failureResultOf(d1, LinkLost)
        self.assertEqual(504, failure.value.sipCode)
        self.assertNoResult(d2)
        self.assertEqual({"queued": 1, "unconfirmed": 0}, self.link.queueDepths())
        self.advanceToRetry()
        self.authenticate()
        self.reactor.advance(0)
        items = self.written()
        self.assertEqual([("message", "m2")], items[:1])
        self.assertNotIn(("message", "m1"), items)
        self.answer(self.pingIDs(items)[0])
        self.assertIsNone(self.successResultOf(d2))

    def test_connectionLossDuringUnconfirmed(self):
        """
        A link lost while unconfirmed starts the next connection confirmed.
        """
        self.up()
        self.link.deliver(self.message(1)).addErrback(lambda f: None)
        self.reactor.advance(0)
        self.reactor.advance(5)
        self.assertTrue(self.link.unconfirmed)
        d = self.link.deliver(self.message(2))
        self.loseConnection(ConnectionLost())
        self.assertFalse(self.link.unconfirmed)
        self.assertNoResult(d)
        self.advanceToRetry()
        self.authenticate()
        self.assertIn(b"id='m2'", self.transport.value())

    def test_stopFailsQueued(self):
        """
        stopService fails queued stanzas with LinkStopped (503) and refuses
        new ones.
        """
        self.link.startService()
        d = self.link.deliver(self.message())
        self.link.stopService()
        failure = self.failureResultOf(d, LinkStopped)
        self.assertEqual(503, failure.value.sipCode)
        self.failureResultOf(self.link.deliver(self.message(2)), LinkStopped)

    def test_sendStillFireAndForget(self):
        """
        send writes at once without a ping, even while unconfirmed.
        """
        self.up()
        self.link.deliver(self.message(1)).addErrback(lambda f: None)
        self.reactor.advance(0)
        self.reactor.advance(5)
        self.assertTrue(self.link.unconfirmed)
        self.written()
        self.link.send(self.message(9))
        self.assertEqual([("message", "m9")], self.written())

    def test_badArguments(self):
        """
        confirmTimeout, queueLimit and windowLimit are checked.
        """
        self.assertRaises(ValueError, self.makeLink, confirmTimeout=0)
        self.assertRaises(ValueError, self.makeLink, queueLimit=0)
        self.assertRaises(ValueError, self.makeLink, windowLimit=True)


class WriteOnlyDeliveryTests(LinkTestMixin, unittest.TestCase):
    """
    L{ComponentLink.deliver} with C{confirmDelivery=False}: for several
    instances sharing one component domain, where the server may route the
    confirmation ping to another instance.
    """

    def setUp(self):
        LinkTestMixin.setUp(self)
        self.link = self.makeLink(
            keepAliveInterval=0, confirmTimeout=5.0, confirmDelivery=False)

    message = ConfirmedDeliveryTests.message
    up = ConfirmedDeliveryTests.up
    written = ConfirmedDeliveryTests.written

    def test_firesWhenWritten(self):
        """
        The Deferred fires as soon as the stanza is written, and no ping
        follows it.
        """
        self.up()
        d = self.link.deliver(self.message())
        self.assertIsNone(self.successResultOf(d))
        self.reactor.advance(0)
        self.assertEqual([("message", "m1")], self.written())
        self.assertEqual({"queued": 0, "unconfirmed": 0}, self.link.queueDepths())

    def test_queuedWhileDown(self):
        """
        While the link is down stanzas still queue, and are written (and
        their Deferreds fired) in order after the handshake.
        """
        self.link.startService()
        first = self.link.deliver(self.message(1))
        second = self.link.deliver(self.message(2))
        self.assertNoResult(first)
        self.authenticate()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual([("message", "m1"), ("message", "m2")], self.written())



class CountingTransport(StringTransport):
    """
    A L{StringTransport} that counts every byte ever written to it (its
    value may be cleared).
    """

    total = 0

    def write(self, data):
        self.total += len(data)
        StringTransport.write(self, data)


class TCPDeliveryTests(LinkTestMixin, unittest.TestCase):
    """
    L{ComponentLink.deliver} with C{confirmDelivery="tcp"}: a stanza is
    confirmed once the peer's TCP has acknowledged its last byte.
    """

    def setUp(self):
        LinkTestMixin.setUp(self)
        #: Bytes of the current connection the fake peer has acknowledged;
        #: L{None}: the transport cannot tell.
        self.acked = 0
        self.link = self.makeLink(
            keepAliveInterval=0, confirmTimeout=5.0, confirmDelivery="tcp",
            unackedBytes=self.unacked)

    def unacked(self, transport):
        if self.acked is None:
            return None
        return transport.total - self.acked

    def connect(self, transport=None):
        self.acked = 0
        return LinkTestMixin.connect(self, transport or CountingTransport())

    message = ConfirmedDeliveryTests.message
    up = ConfirmedDeliveryTests.up
    written = ConfirmedDeliveryTests.written

    def poll(self):
        self.reactor.advance(self.link.tcpPollInterval)

    def test_confirmedOnlyWhenAcked(self):
        """
        The stanza is written at once with no ping; its Deferred fires only
        when the peer has acknowledged every byte of it, and polling stops
        once nothing is pending.
        """
        self.up()
        before = self.transport.total
        d = self.link.deliver(self.message())
        self.assertEqual([("message", "m1")], self.written())
        end = self.transport.total
        self.acked = before
        self.poll()
        self.assertNoResult(d)
        self.acked = end - 1
        self.poll()
        self.assertNoResult(d)
        self.assertEqual({"queued": 0, "unconfirmed": 1}, self.link.queueDepths())
        self.acked = end
        self.poll()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual({"queued": 0, "unconfirmed": 0}, self.link.queueDepths())
        self.assertEqual(1, self.link.confirmStats["confirmed"])
        self.assertEqual([], self.reactor.getDelayedCalls())
        self.assertEqual([], self.written())

    def test_inOrder(self):
        """
        An acknowledgement past the first stanza only confirms the first.
        """
        self.up()
        first = self.link.deliver(self.message(1))
        self.acked = self.transport.total
        second = self.link.deliver(self.message(2))
        self.poll()
        self.successResultOf(first)
        self.assertNoResult(second)
        self.acked = self.transport.total
        self.poll()
        self.successResultOf(second)

    def test_keepAliveCounted(self):
        """
        Bytes written by the keepalive count towards the stream position:
        a stanza after one is confirmed only when acknowledged past its end.
        """
        self.link = self.makeLink(
            keepAliveInterval=10, confirmTimeout=5.0, confirmDelivery="tcp",
            unackedBytes=self.unacked)
        self.up()
        self.reactor.advance(10)
        self.assertEqual(b" ", self.transport.value())
        d = self.link.deliver(self.message())
        self.acked = self.transport.total - 1
        self.poll()
        self.assertNoResult(d)
        self.acked = self.transport.total
        self.poll()
        self.successResultOf(d)

    def test_timeout(self):
        """
        A stanza not acknowledged within C{confirmTimeout} fails with
        L{ConfirmTimeout} (504); the link writes nothing new until the peer
        has acknowledged everything written, then resumes in order.
        """
        self.up()
        d = self.link.deliver(self.message(1))
        self.reactor.pump([self.link.tcpPollInterval] * 2499)
        self.assertNoResult(d)
        self.reactor.pump([self.link.tcpPollInterval] * 2)
        failure = self.failureResultOf(d, ConfirmTimeout)
        self.assertEqual(504, failure.value.sipCode)
        self.assertTrue(self.link.unconfirmed)
        self.assertEqual(1, self.link.confirmStats["timedOut"])
        self.assertEqual(
            ["XMPP server at 127.0.0.1:5347 did not acknowledge stanzas (TCP) "
             "within 5 s (hung?): 1 unconfirmed stanza(s) failed; holding new "
             "ones until it acknowledges"],
            self.messagesAt(LogLevel.warn))
        self.written()
        queued = self.link.deliver(self.message(2))
        self.reactor.advance(self.link.tcpProbeInterval)
        self.assertEqual([], self.written())
        self.assertEqual({"queued": 1, "unconfirmed": 0}, self.link.queueDepths())
        self.acked = self.transport.total
        self.reactor.advance(self.link.tcpProbeInterval)
        self.assertFalse(self.link.unconfirmed)
        self.assertEqual([("message", "m2")], self.written())
        self.assertNoResult(queued)
        self.acked = self.transport.total
        self.poll()
        self.successResultOf(queued)
        self.assertEqual([], self.reactor.getDelayedCalls())

    def test_connectionLost(self):
        """
        Losing the connection fails the written, unacknowledged stanzas with
        L{LinkLost} and stops polling.
        """
        self.link.startService()
        self.authenticate()
        d = self.link.deliver(self.message())
        self.loseConnection(ConnectionLost("reset"))
        self.failureResultOf(d, LinkLost)
        self.assertEqual(1, self.link.confirmStats["lost"])
        self.assertEqual({"queued": 0, "unconfirmed": 0}, self.link.queueDepths())
        # Only the reconnection is pending.
        self.pendingDelay()

    def test_queuedWhileDown(self):
        """
        While the link is down stanzas queue; after the handshake they are
        written in order and confirmed when acknowledged.
        """
        self.link.startService()
        first = self.link.deliver(self.message(1))
        second = self.link.deliver(self.message(2))
        self.assertEqual({"queued": 2, "unconfirmed": 0}, self.link.queueDepths())
        self.authenticate()
        self.assertEqual([("message", "m1"), ("message", "m2")], self.written())
        self.assertNoResult(first)
        self.acked = self.transport.total
        self.poll()
        self.successResultOf(first)
        self.successResultOf(second)

    def test_windowLimit(self):
        """
        At most C{windowLimit} stanzas are unacknowledged; more queue until
        acknowledgements come.
        """
        self.link = self.makeLink(
            keepAliveInterval=0, confirmDelivery="tcp", windowLimit=1,
            unackedBytes=self.unacked)
        self.up()
        first = self.link.deliver(self.message(1))
        second = self.link.deliver(self.message(2))
        self.assertEqual([("message", "m1")], self.written())
        self.acked = self.transport.total
        self.poll()
        self.successResultOf(first)
        self.assertEqual([("message", "m2")], self.written())
        self.assertNoResult(second)

    def test_unknownFallsBack(self):
        """
        When the transport cannot tell its unacknowledged bytes, a warning
        is logged once per connection and stanzas are confirmed once Twisted
        has handed them to the kernel.
        """
        self.up()
        self.acked = None
        first = self.link.deliver(self.message(1))
        self.poll()
        self.successResultOf(first)
        second = self.link.deliver(self.message(2))
        self.poll()
        self.successResultOf(second)
        warnings = self.messagesAt(LogLevel.warn)
        self.assertEqual(1, len(warnings))
        self.assertIn("ioctl TIOCOUTQ", warnings[0])

    def test_notLinux(self):
        """
        Without C{TIOCOUTQ} (not Linux) and no injected function, C{"tcp"}
        is refused at once with a clear message.
        """
        self.patch(componentModule, "TIOCOUTQ", None)
        e = self.assertRaises(
            ValueError, self.makeLink, confirmDelivery="tcp")
        self.assertIn("needs ioctl(TIOCOUTQ)", str(e))

    def test_defaultSocketFunction(self):
        """
        Where C{TIOCOUTQ} exists, C{"tcp"} without an injected function
        reads the real socket; a transport without a socket falls back.
        """
        if componentModule.TIOCOUTQ is None:
            raise unittest.SkipTest("TIOCOUTQ is Linux only")
        self.link = self.makeLink(keepAliveInterval=0, confirmDelivery="tcp")
        self.assertIsNone(componentModule.socketUnackedBytes(StringTransport()))
        self.up()
        d = self.link.deliver(self.message())
        self.poll()
        self.successResultOf(d)


class DescriptorTransport(abstract.FileDescriptor):
    """
    A real L{abstract.FileDescriptor} (Twisted's own buffering) whose
    "kernel" takes at most C{room} bytes per write; the reactor's writer
    registration is a flag.
    """

    def __init__(self, room=10 ** 9):
        abstract.FileDescriptor.__init__(self, FakeReactor())
        self.connected = 1
        self.room = room
        self.kernel = b""
        self.writing = False
        self.total = 0
        self.noDelay = []

    def write(self, data):
        self.total += len(data)
        abstract.FileDescriptor.write(self, data)

    def writeSomeData(self, data):
        taken = bytes(data[:self.room])
        self.room -= len(taken)
        self.kernel += taken
        return len(taken)

    def startWriting(self):
        self.writing = True

    def setTcpNoDelay(self, enabled):
        self.noDelay.append(enabled)

    def stopWriting(self):
        self.writing = False

    def getPeer(self):
        return IPv4Address("TCP", "127.0.0.1", 5347)

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def value(self):
        return self.kernel

    def clear(self):
        self.kernel = b""


class KernelDeliveryTests(LinkTestMixin, unittest.TestCase):
    """
    L{ComponentLink.deliver} with C{confirmDelivery="kernel"}: each stanza
    is handed to the kernel as it is written, and confirmed as soon as its
    bytes left Twisted's buffer.
    """

    def setUp(self):
        LinkTestMixin.setUp(self)
        self.link = self.makeLink(
            keepAliveInterval=0, confirmTimeout=5.0, confirmDelivery="kernel")

    message = ConfirmedDeliveryTests.message

    def up(self, room=10 ** 9):
        self.link.startService()
        self.connect(DescriptorTransport())
        self.serverHeader()
        self.xs.dataReceived(b"<handshake/>")
        self.transport.doWrite()
        self.transport.clear()
        self.transport.room = room

    def written(self):
        data = self.transport.value().decode("utf-8")
        self.transport.clear()
        return re.findall(r"<(message|iq)[^>]* id='([^']+)'", data)

    def test_pushedAndConfirmedAtOnce(self):
        """
        Each stanza is handed to the kernel as it is written and its
        Deferred fires within L{ComponentLink.deliver}; no ping is written
        and nothing is left scheduled.
        """
        self.up()
        self.assertTrue(self.transport.connected)
        first = self.link.deliver(self.message(1))
        self.assertEqual([("message", "m1")], self.written())
        self.successResultOf(first)
        second = self.link.deliver(self.message(2))
        self.assertEqual([("message", "m2")], self.written())
        self.successResultOf(second)
        self.assertFalse(self.transport.writing)
        self.assertEqual(0, self.link.confirmStats["pings"])
        self.assertEqual(2, self.link.confirmStats["confirmed"])
        self.assertEqual({"queued": 0, "unconfirmed": 0}, self.link.queueDepths())
        self.assertEqual([], self.reactor.getDelayedCalls())

    def test_partialWrite(self):
        """
        When the kernel takes only part of a stanza, it is confirmed once a
        later poll has handed over its last byte; stanzas behind it wait
        their turn.
        """
        self.up(room=5)
        first = self.link.deliver(self.message(1))
        self.assertNoResult(first)
        self.assertEqual(5, len(self.transport.kernel))
        second = self.link.deliver(self.message(2))
        self.assertNoResult(second)
        self.reactor.advance(self.link.tcpPollInterval)
        self.assertNoResult(first)
        self.transport.room = transportBuffered(self.transport) - 3
        self.reactor.advance(self.link.tcpPollInterval)
        self.successResultOf(first)
        self.assertNoResult(second)
        self.transport.room = 10 ** 9
        self.reactor.advance(self.link.tcpPollInterval)
        self.successResultOf(second)
        self.assertEqual([("message", "m1"), ("message", "m2")], self.written())
        self.assertEqual([], self.reactor.getDelayedCalls())

    def test_timeout(self):
        """
        A stanza the kernel does not take within C{confirmTimeout} fails
        with L{ConfirmTimeout} (504), as in C{"tcp"} mode.
        """
        self.up(room=0)
        d = self.link.deliver(self.message(1))
        self.reactor.pump([self.link.tcpPollInterval] * 2501)
        failure = self.failureResultOf(d, ConfirmTimeout)
        self.assertEqual(504, failure.value.sipCode)
        self.assertTrue(self.link.unconfirmed)

    def test_notPushedWhileClosing(self):
        """
        A transport that is closing is left to the reactor (pushing it
        could finish the close behind the reactor's back): the stanza is
        not confirmed by the link.
        """
        self.up()
        self.transport.disconnecting = True
        d = self.link.deliver(self.message(1))
        self.assertEqual([], self.written())
        self.assertNoResult(d)

    def test_connectionLost(self):
        """
        Losing the connection while a stanza is still in Twisted's buffer
        fails it with L{LinkLost}.
        """
        self.up(room=0)
        d = self.link.deliver(self.message())
        self.assertNoResult(d)
        self.loseConnection(ConnectionLost("reset"))
        self.failureResultOf(d, LinkLost)

    def test_noDelay(self):
        """
        The link turns Nagle's algorithm off on its TCP connection, so a
        stanza handed to the kernel is sent at once.
        """
        self.up()
        self.assertEqual([True], self.transport.noDelay)


class ConfirmModeTests(unittest.TestCase):
    """
    L{confirmMode} and L{transportBuffered}.
    """

    def test_aliases(self):
        """
        The modes are kept; L{True} and L{False} mean C{"ping"} and
        C{"none"}; anything else is a L{ValueError}.
        """
        self.assertEqual(
            ["ping", "tcp", "kernel", "none", "ping", "none"],
            [confirmMode(v)
             for v in ("ping", "tcp", "kernel", "none", True, False)])
        self.assertRaises(ValueError, confirmMode, "TCP")
        self.assertRaises(ValueError, confirmMode, 1)
        self.assertEqual(
            "none", self.makeLink(confirmDelivery=False).confirmDelivery)

    def makeLink(self, **kwargs):
        return ComponentLink(
            "127.0.0.1", 5347, "gw.example", "secret",
            reactor=FakeReactor(), **kwargs)

    def test_transportBuffered(self):
        """
        L{transportBuffered} counts a L{abstract.FileDescriptor}'s unsent
        bytes exactly, in both of its buffers, and is 0 for other
        transports.
        """
        sent = []

        class Descriptor(abstract.FileDescriptor):
            def writeSomeData(self, data):
                sent.append(bytes(data[:2]))
                return 2

        fd = Descriptor(FakeReactor())
        fd.connected = 1
        fd.write(b"abcde")
        self.assertEqual(5, transportBuffered(fd))
        fd.doWrite()
        self.assertEqual(3, transportBuffered(fd))
        fd.write(b"fg")
        self.assertEqual(5, transportBuffered(fd))
        fd.doWrite()
        fd.doWrite()
        self.assertEqual(1, transportBuffered(fd))
        self.assertEqual([b"ab", b"cd", b"ef"], sent)
        self.assertEqual(0, transportBuffered(StringTransport()))


def parseStanzas(xml):
    """
    The top-level elements of C{xml}, parsed as a component stream's
    stanzas (each call builds new elements).
    """
    stream = domish.elementStream()
    stanzas = []
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = stanzas.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(SERVER_HEADER % ("s1",) + xml)
    return stanzas


_STANZAS = [
    "<message type='chat' to='b@gw.example'><body>hi</body></message>",
    "<message type='normal'/>",
    "<presence type='unavailable'/>",
    "<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<iq type='result' id='2'/>",
    "<iq type='error' id='3'/>",
    "<x/>",
]

_QUERIES = [
    "/message", "/presence", "/iq", '/iq[@type="result"]',
    "/message[@type='chat']", "/*", "//body", "/message/body",
    "/iq[@type='get']/ping", "/x",
]


def linkStreams():
    """
    A Twisted component-side XML stream and a L{LinkXmlStream}, to compare.
    """
    return (xmlstream.XmlStream(xmlstream.Authenticator()),
            componentModule.LinkXmlStream(xmlstream.Authenticator()))


class LinkXmlStreamTests(unittest.TestCase):
    """
    L{componentModule.LinkXmlStream} dispatches and writes as Twisted's
    L{xmlstream.XmlStream} does, with less work per stanza.
    """

    def test_factoryBuildsIt(self):
        """
        The link's connections use a L{LinkXmlStream}.
        """
        link = ComponentLink("127.0.0.1", 5347, "gw.example", "secret",
                             reactor=FakeReactor())
        self.assertIsInstance(link.factory.buildProtocol(None),
                              componentModule.LinkXmlStream)

    def dispatchAll(self, streams, observers, stanzas):
        """
        Register C{observers} (C{(query, priority, onetime, action)}) on
        each stream in C{streams}, dispatch C{stanzas} (indexes into
        L{_STANZAS}), and return, per stream, the calls (observer, stanza,
        handled when called), the dispatch results, and the observers left.
        """
        results = []
        for xs in streams:
            calls, found = [], []

            def make(n, action):
                def observer(element):
                    calls.append((n, element.stanzaNumber,
                                  bool(getattr(element, "handled", False))))
                    if action == "handle":
                        element.handled = True
                    elif action == "raise":
                        raise ValueError(n)
                return observer

            for n, (query, priority, onetime, action) in enumerate(observers):
                add = xs.addOnetimeObserver if onetime else xs.addObserver
                add(_QUERIES[query], make(n, action), priority)
            for k, index in enumerate(stanzas):
                (element,) = parseStanzas(_STANZAS[index])
                element.stanzaNumber = k
                found.append(xs.dispatch(element))
            left = sorted(
                (priority, query.queryStr, len(callbacks.callbacks))
                for priority, byQuery in xs._xpathObservers.items()
                for query, callbacks in byQuery.items())
            self.assertEqual(0, xs._dispatchDepth)
            results.append((calls, found, left))
        self.flushLoggedErrors(ValueError)
        return results

    @given(st.lists(st.tuples(
               st.integers(0, len(_QUERIES) - 1), st.integers(-1, 1),
               st.booleans(),
               st.sampled_from(["record", "handle", "raise"])),
               max_size=8),
           st.lists(st.integers(0, len(_STANZAS) - 1), max_size=8))
    @settings(max_examples=200, deadline=None)
    def test_sameAsTwisted(self, observers, stanzas):
        """
        Whatever the observers (queries matching by name, predicates,
        children, wildcards; priorities; one-time; some handling the
        stanza, some raising), each is called for the same stanzas, in the
        same order, seeing the same C{handled}, with the same dispatch
        results and the same observers left.
        """
        reference, fast = self.dispatchAll(linkStreams(), observers, stanzas)
        self.assertEqual(reference, fast)

    def test_otherNamesNotEvaluated(self):
        """
        An observer's query that needs another element name is not even
        evaluated for a stanza (Twisted evaluates every query on every
        stanza); one that may match is.
        """
        xs = componentModule.LinkXmlStream(xmlstream.Authenticator())
        evaluated = []
        query = xpath.XPathQuery('/iq[@type="result"]')
        original = query.matches
        query.matches = lambda element: (
            evaluated.append(element.name) or original(element))
        seen = []
        xs.addObserver(query, seen.append)
        xs.addObserver("/message", seen.append)
        for stanza in parseStanzas(_STANZAS[0] + _STANZAS[2] + _STANZAS[4]):
            xs.dispatch(stanza)
        self.assertEqual(["iq"], evaluated)
        self.assertEqual(["message", "iq"], [e.name for e in seen])

    def test_changesDuringDispatch(self):
        """
        Observers added or removed by an observer take effect after the
        dispatch, as in Twisted's dispatcher; one-time observers fire once.
        """
        xs = componentModule.LinkXmlStream(xmlstream.Authenticator())
        seen = []

        def late(element):
            seen.append(("late", element.n))

        def first(element):
            seen.append(("first", element.n))
            if element.n == 0:
                xs.addObserver("/message", late, -1)
            elif element.n == 1:
                xs.removeObserver("/message", late)

        xs.addObserver("/message", first)
        xs.addOnetimeObserver("/message", lambda e: seen.append(("once", e.n)))
        for n, stanza in enumerate(parseStanzas(_STANZAS[0] * 3)):
            stanza.n = n
            xs.dispatch(stanza)
        self.assertEqual(
            [("first", 0), ("once", 0), ("first", 1), ("late", 1),
             ("first", 2)], seen)

    def test_namedEvents(self):
        """
        Named events are dispatched as before.
        """
        xs = componentModule.LinkXmlStream(xmlstream.Authenticator())
        seen = []
        xs.addObserver("//event/test", seen.append)
        self.assertTrue(xs.dispatch("data", "//event/test"))
        self.assertFalse(xs.dispatch("data", "//event/other"))
        self.assertEqual(["data"], seen)

    def test_sendSimpleElement(self):
        """
        A L{SimpleElement} is written without L{domish.Element.toXml}, with
        the bytes Twisted's stream writes, through C{rawDataOutFn}; other
        elements and text are written as Twisted writes them.
        """
        def message(namespaced):
            m = SimpleElement((None, "message"))
            m["from"] = "a*sip.example@gw.example"
            m["to"] = "bob@xmpp.example"
            m.addElement("body", content="<1 & 2>")
            if namespaced:
                m.addElement(("urn:example", "x"))
            return m

        for stanza in (message(False), message(True), "<presence/>",
                       domish.Element((None, "presence"))):
            written = []
            for xs in linkStreams():
                xs.namespace = "jabber:component:accept"
                xs.transport = StringTransport()
                raw = []
                xs.rawDataOutFn = raw.append
                xs.send(stanza)
                written.append(xs.transport.value())
                self.assertEqual([written[-1]], raw)
            self.assertEqual(written[0], written[1])
        fast = message(False)
        fast.toXml = lambda *args, **kwargs: self.fail("toXml called")
        xs = linkStreams()[1]
        xs.transport = StringTransport()
        xs.send(fast)
        self.assertIn(b"<body>&lt;1 &amp; 2&gt;</body>", xs.transport.value())


    def test_sendInStreamNamespace(self):
        """
        A L{SimpleElement} put in the stream's own namespace (server mode's
        C{normalizeStanza}, C{jabber:server}) is written without
        L{domish.Element.toXml}, with the bytes Twisted's stream writes;
        so is every mix of that namespace, none and others, the fast way
        or not.
        """
        ns = "jabber:server"

        def message(uri, default, childUri, childDefault, extra=None):
            m = SimpleElement((None, "message"))
            m["to"] = "bob@xmpp.example"
            m.addElement("body", content="hi & <bye>")
            m.uri, m.defaultUri = uri, default
            body = m.children[0]
            body.uri, body.defaultUri = childUri, childDefault
            if extra:
                m.addElement((extra, "active"))
            return m

        choices = (None, ns, "jabber:client")
        variants = [message(*v) for v in itertools.product(choices, repeat=4)]
        variants.append(message(ns, ns, ns, ns, extra="urn:example"))
        fast = 0
        for stanza in variants:
            written = []
            for xs in linkStreams():
                xs.namespace = ns
                xs.transport = StringTransport()
                xs.send(stanza)
                written.append(xs.transport.value())
            self.assertEqual(written[0], written[1], stanza.toXml())
            fast += stanza._fastXml(1, ns) is not None
        # (None, None) or (ns, ns), for the message and its body.
        self.assertEqual(4, fast)
        normalized = message(ns, ns, ns, ns)
        normalized.toXml = lambda *args, **kwargs: self.fail("toXml called")
        xs = linkStreams()[1]
        xs.namespace = ns
        xs.transport = StringTransport()
        xs.send(normalized)
        self.assertEqual(
            b"<message to='bob@xmpp.example'><body>hi &amp; &lt;bye&gt;"
            b"</body></message>", xs.transport.value())


class FakeRouter:
    """
    What L{GatewayHandler} needs of a router.
    """

    presence = None

    def __init__(self):
        self.messages = []

    def xmppMessageReceived(self, stanza):
        self.messages.append(stanza)


class GatewayDispatchTests(LinkTestMixin, unittest.TestCase):
    """
    The gateway's handler and other observers on the link's stream.
    """

    def test_otherObservers(self):
        """
        A C{/message} observer added by someone else with a higher priority
        sees messages unhandled (and can keep them from the gateway by
        handling them); one with the same or a lower priority sees them
        handled; the gateway routes each unhandled message once.
        """
        router = FakeRouter()
        GatewayHandler(router, "gw.example").setHandlerParent(self.link)
        self.link.startService()
        self.authenticate()
        seen = []

        def before(stanza):
            seen.append(("before", stanza["id"], bool(stanza.handled)))
            if stanza["id"] == "keep":
                stanza.handled = True

        self.xs.addObserver("/message", before, 1)
        self.xs.addObserver(
            "/message", lambda s: seen.append(("same", s["id"], s.handled)))
        self.xs.addObserver(
            "/message", lambda s: seen.append(("after", s["id"], s.handled)),
            -1)
        self.xs.dataReceived(
            b"<message id='m1' from='a@xmpp.example' to='b@gw.example'>"
            b"<body>hi</body></message>"
            b"<message id='keep' from='a@xmpp.example' to='b@gw.example'/>")
        self.assertEqual(["m1"], [m["id"] for m in router.messages])
        self.assertEqual(
            [("before", "m1", False), ("same", "m1", True),
             ("after", "m1", True), ("before", "keep", False),
             ("same", "keep", True), ("after", "keep", True)], seen)
