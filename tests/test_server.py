"""
Tests for L{xmppgw.xmpp.server}: S2S streams, dialback, enforcement and
queues, on fake transports and a fake clock (no network, no real time).
"""

import os

from OpenSSL import crypto
from twisted.internet import defer, error as ierror
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.words.xish import domish

from xmppgw.xmpp import component
from xmppgw.xmpp.dialback import generateKey
from xmppgw.xmpp.server import (
    DialbackFailed, QueueFull, RemoteServerNotFound, RemoteServerTimeout,
    S2SError, S2SService, TLSSettings, normalizeStanza)

SECRET = "unit-test-dialback-secret"
OURS = "gw.test"
PEER = "xmpp.test"
STREAM = ("<stream:stream xmlns='jabber:server' "
          "xmlns:stream='http://etherx.jabber.org/streams' "
          "xmlns:db='jabber:server:dialback' version='1.0' {attrs}>")
ADDR = IPv4Address("TCP", "127.0.0.1", 40000)


class TLSStringTransport(StringTransport):
    """
    A L{StringTransport} that records C{startTLS} instead of doing it, and
    C{setTcpNoDelay}.
    """

    tlsContext = None
    noDelay = None

    def startTLS(self, context, normal=True):
        self.tlsContext = context

    def setTcpNoDelay(self, enabled):
        self.noDelay = enabled


def writeCertificate(directory, domain=OURS):
    """
    A self-signed certificate and key in PEM files (for loading only: TLS
    itself is faked in these tests).
    """
    key = crypto.PKey()
    key.generate_key(crypto.TYPE_RSA, 2048)
    cert = crypto.X509()
    cert.get_subject().CN = domain
    cert.set_serial_number(1)
    cert.gmtime_adj_notBefore(0)
    cert.gmtime_adj_notAfter(3600)
    cert.set_issuer(cert.get_subject())
    cert.set_pubkey(key)
    cert.sign(key, "sha256")
    os.makedirs(directory, exist_ok=True)
    certPath = os.path.join(directory, "cert.pem")
    keyPath = os.path.join(directory, "key.pem")
    with open(certPath, "wb") as f:
        f.write(crypto.dump_certificate(crypto.FILETYPE_PEM, cert))
    with open(keyPath, "wb") as f:
        f.write(crypto.dump_privatekey(crypto.FILETYPE_PEM, key))
    return certPath, keyPath


def message(frm=f"alice@{PEER}/x", to=f"bob*sip.test@{OURS}", body="hi"):
    element = domish.Element((None, "message"))
    element["from"] = frm
    element["to"] = to
    element.addElement("body", content=body)
    return element


class ServiceMixin:
    """
    An S2SService on a MemoryReactorClock, TLS off unless asked.
    """

    tlsRequired = False

    def setUp(self):
        self.reactor = MemoryReactorClock()
        tls = TLSSettings(required=False, verify=False)
        if self.tlsRequired:
            cert, key = writeCertificate(self.mktemp())
            tls = TLSSettings(certificate=cert, privateKey=key, required=True,
                              verify=False)
        self.s2s = S2SService(
            OURS, secret=SECRET, reactor=self.reactor,
            peers={PEER: ("127.0.0.1", 5269)}, listenHost="127.0.0.1",
            listenPort=5269, tls=tls, idleTimeout=60, queueLimit=3,
            queueTTL=10, negotiateTimeout=20)
        self.received = []
        self._delivered = []
        self.s2s.messageReceived = self.received.append
        self.s2s.startService()
        self.addCleanup(self.stop)

    def stop(self):
        if self.s2s.running:
            self.s2s.stopService()
        for d in self._delivered:
            d.addErrback(lambda failure: None)

    def deliver(self, stanza):
        """
        L{S2SService.deliver}, remembering the Deferred so that a failure
        left when the test ends (service stopped) is consumed.
        """
        d = self.s2s.deliver(stanza)
        self._delivered.append(d)
        return d

    # incoming

    def incoming(self, to=OURS, frm=PEER):
        factory = self.reactor.tcpServers[0][1]
        xs = factory.buildProtocol(ADDR)
        transport = TLSStringTransport()
        xs.makeConnection(transport)
        attrs = f"to='{to}' from='{frm}'"
        xs.dataReceived(STREAM.format(attrs=attrs).encode())
        return xs, transport

    # outgoing

    def outgoingConnection(self, index=-1):
        """
        Complete the last TCP connection the service started: return the
        stream and its transport.
        """
        host, port, factory, timeout, bind = self.reactor.tcpClients[index]
        xs = factory.buildProtocol(ADDR)
        transport = TLSStringTransport()
        xs.makeConnection(transport)
        return xs, transport

    def peerHeader(self, xs, sid="peer-sid-1", features="<stream:features>"
                   "<dialback xmlns='urn:xmpp:features:dialback'><errors/>"
                   "</dialback></stream:features>"):
        attrs = f"from='{PEER}' to='{OURS}' id='{sid}'"
        xs.dataReceived((STREAM.format(attrs=attrs) + features).encode())


class OutgoingTests(ServiceMixin, unittest.TestCase):
    """
    Outgoing streams: dialback as the originating server, queues.
    """

    def test_deliverAfterDialback(self):
        """
        A stanza waits until our db:result is answered valid, then is
        written and its Deferred fires.
        """
        d = self.deliver(message(frm=f"bob*sip.test@{OURS}", to=f"alice@{PEER}"))
        self.assertNoResult(d)
        self.assertEqual(self.reactor.tcpClients[0][:2], ("127.0.0.1", 5269))
        xs, transport = self.outgoingConnection()
        self.assertIn(b"to='xmpp.test'", transport.value())
        self.assertIn(b"xmlns:db='jabber:server:dialback'", transport.value())
        transport.clear()
        self.peerHeader(xs)
        key = generateKey(SECRET, PEER, OURS, "peer-sid-1")
        self.assertIn(f"<db:result from='{OURS}' to='{PEER}'>{key}</db:result>".encode(),
                      transport.value())
        self.assertNoResult(d)
        self.assertNotIn(b"<message", transport.value())
        xs.dataReceived(f"<db:result from='{PEER}' to='{OURS}' type='valid'/>".encode())
        self.assertIsNone(self.successResultOf(d))
        written = transport.value().split(b"</db:result>", 1)[1]
        self.assertTrue(written.startswith(b"<message "), written)
        self.assertIn(b"to='alice@xmpp.test'", written)
        self.assertIn(b"from='bob*sip.test@gw.test'", written)
        self.assertIn(b"<body>hi</body></message>", written)

    def test_notifyWithoutDeferred(self):
        """
        With C{notify}, a stanza for a verified stream is written at once,
        C{notify(None)} is called before C{deliver} returns, and there is
        no Deferred (L{None}); a stanza that has to wait gets the Deferred,
        which passes its outcome to C{notify} when it is written.
        """
        outcomes = []
        waiting = self.s2s.deliver(
            message(frm=f"bob*sip.test@{OURS}", to=f"alice@{PEER}"),
            outcomes.append)
        self.assertIsInstance(waiting, defer.Deferred)
        self.assertEqual(outcomes, [])
        xs, transport = self.outgoingConnection()
        self.peerHeader(xs)
        xs.dataReceived(f"<db:result from='{PEER}' to='{OURS}' type='valid'/>".encode())
        self.assertEqual(outcomes, [None])
        transport.clear()
        handle = self.s2s.deliver(
            message(frm=f"bob*sip.test@{OURS}", to=f"alice@{PEER}", body="now"),
            outcomes.append)
        self.assertIsNone(handle)
        self.assertEqual(outcomes, [None, None])
        self.assertIn(b"<body>now</body>", transport.value())

    def test_noDelay(self):
        """
        An outgoing stream turns Nagle's algorithm off when connected
        (L{xmppgw.nodelay}).
        """
        self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        xs, transport = self.outgoingConnection()
        self.assertIs(True, transport.noDelay)

    def test_hardened(self):
        """
        An outgoing stream is hardened as the component link's is: a
        processing instruction (RFC 6120 section 11.1) drops the connection.
        """
        self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        xs, transport = self.outgoingConnection()
        self.peerHeader(xs)
        self.assertFalse(transport.disconnecting)
        xs.dataReceived(b"<?evil processing instruction?>")
        self.assertTrue(transport.disconnecting)

    def test_streamReused(self):
        """
        Once verified, later stanzas are written at once on the same stream.
        """
        self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        xs, transport = self.outgoingConnection()
        self.peerHeader(xs)
        xs.dataReceived(f"<db:result from='{PEER}' to='{OURS}' type='valid'/>".encode())
        transport.clear()
        d = self.deliver(message(frm=f"a@{OURS}", to=f"c@{PEER}", body="two"))
        self.assertIsNone(self.successResultOf(d))
        self.assertIn(b"<body>two</body>", transport.value())
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_dialbackInvalid(self):
        """
        db:result type=invalid fails the queue with DialbackFailed (SIP 500).
        """
        d = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        xs, transport = self.outgoingConnection()
        self.peerHeader(xs)
        xs.dataReceived(f"<db:result from='{PEER}' to='{OURS}' type='invalid'/>".encode())
        failure = self.failureResultOf(d, DialbackFailed)
        self.assertEqual(failure.value.sipCode, 500)

    def test_dialbackError(self):
        """
        db:result type=error fails the queue with remote-server-timeout
        (SIP 408).
        """
        d = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        xs, transport = self.outgoingConnection()
        self.peerHeader(xs)
        xs.dataReceived(
            f"<db:result from='{PEER}' to='{OURS}' type='error'><error "
            "type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:"
            "xmpp-stanzas'/></error></db:result>".encode())
        failure = self.failureResultOf(d, RemoteServerTimeout)
        self.assertEqual(failure.value.sipCode, 408)
        self.assertIn("item-not-found", failure.value.text)

    def test_unsolicitedVerifyAnswer(self):
        """
        A db:verify answer for a check we never asked closes the stream
        with a stream error.
        """
        d = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        xs, transport = self.outgoingConnection()
        self.peerHeader(xs)
        xs.dataReceived(f"<db:verify from='{PEER}' to='{OURS}' id='nope' "
                        "type='valid'/>".encode())
        self.assertIn(b"<undefined-condition", transport.value())
        self.assertTrue(transport.disconnecting)
        xs.connectionLost(Failure(ierror.ConnectionDone()))
        self.failureResultOf(d, RemoteServerTimeout)

    def test_unsolicitedResultBeforeOurs(self):
        """
        A db:result answer that arrives before we sent our key (while still
        negotiating) is rejected; the stream is not verified.
        """
        d = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        xs, transport = self.outgoingConnection()
        attrs = f"from='{PEER}' to='{OURS}' id='s1'"
        # STARTTLS offered: we ask for it and wait, no db:result sent yet.
        xs.dataReceived((STREAM.format(attrs=attrs) + "<stream:features>"
                         "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
                         "</stream:features>").encode())
        xs.dataReceived(f"<db:result from='{PEER}' to='{OURS}' type='valid'/>".encode())
        self.assertIn(b"<undefined-condition", transport.value())
        self.assertNoResult(d)

    def test_startTLS(self):
        """
        When the peer offers STARTTLS we take it: starttls, then on proceed
        the transport starts TLS and a new header is sent.
        """
        self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        xs, transport = self.outgoingConnection()
        attrs = f"from='{PEER}' to='{OURS}' id='s1'"
        xs.dataReceived((STREAM.format(attrs=attrs) + "<stream:features>"
                         "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                         "<required/></starttls></stream:features>").encode())
        self.assertIn(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
                      transport.value())
        transport.clear()
        xs.dataReceived(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.assertIsNotNone(transport.tlsContext)
        self.assertIn(b"<stream:stream", transport.value())
        transport.clear()
        self.peerHeader(xs, sid="after-tls")
        key = generateKey(SECRET, PEER, OURS, "after-tls")
        self.assertIn(key.encode(), transport.value())

    def test_connectionRefused(self):
        """
        A domain whose server refuses the connection fails with
        remote-server-not-found (SIP 404).
        """
        d = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(None, Failure(ierror.ConnectionRefusedError()))
        failure = self.failureResultOf(d, RemoteServerNotFound)
        self.assertEqual(failure.value.sipCode, 404)

    def test_unresolvable(self):
        """
        A domain that cannot be resolved fails with remote-server-not-found.
        """
        d = self.deliver(message(frm=f"a@{OURS}", to="b@nowhere.test"))
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("nowhere.test", 5269))
        self.reactor.tcpClients[-1][2].clientConnectionFailed(
            None, Failure(ierror.DNSLookupError("nowhere.test")))
        self.failureResultOf(d, RemoteServerNotFound)

    def test_negotiationTimeout(self):
        """
        No verified stream within the negotiation timeout: 408.
        """
        d = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        self.outgoingConnection()
        self.reactor.advance(9)
        self.assertNoResult(d)
        self.reactor.advance(1)  # the queue TTL (10 s) comes first
        failure = self.failureResultOf(d, RemoteServerTimeout)
        self.assertIn("s2s_queue_ttl", failure.value.text)

    def test_queueLimit(self):
        """
        More than queueLimit stanzas waiting for one domain: QueueFull (503).
        """
        for i in range(3):
            self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        d = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        failure = self.failureResultOf(d, QueueFull)
        self.assertEqual(failure.value.sipCode, 503)

    def test_cancelledNeverSent(self):
        """
        A cancelled Deferred withdraws its stanza: it is not written when
        the stream is verified later.
        """
        d = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}", body="gone"))
        kept = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}", body="kept"))
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        xs, transport = self.outgoingConnection()
        self.peerHeader(xs)
        xs.dataReceived(f"<db:result from='{PEER}' to='{OURS}' type='valid'/>".encode())
        self.successResultOf(kept)
        self.assertNotIn(b"gone", transport.value())
        self.assertIn(b"kept", transport.value())

    def test_oneIdleTimer(self):
        """
        The idle timers of all the streams are one timer in the reactor
        (L{xmppgw.idle}); C{idleTimeout} is the watch's.
        """
        before = len(self.reactor.getDelayedCalls())
        for k in range(5):
            self.incoming(frm=f"peer{k}.test")
        self.assertEqual(len(self.s2s._idleWatch), 5)
        self.assertEqual(len(self.reactor.getDelayedCalls()), before + 1)
        self.s2s.idleTimeout = 30
        self.assertEqual(self.s2s._idleWatch.timeout, 30)

    def test_idleClose(self):
        """
        An idle verified stream is closed; the next stanza opens a new one.
        """
        self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        xs, transport = self.outgoingConnection()
        self.peerHeader(xs)
        xs.dataReceived(f"<db:result from='{PEER}' to='{OURS}' type='valid'/>".encode())
        transport.clear()
        self.reactor.advance(60)
        self.assertIn(b"</stream:stream>", transport.value())
        d = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        self.assertNoResult(d)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_foreignFromRefused(self):
        """
        A stanza whose from is not at our domain is refused at once.
        """
        d = self.deliver(message(frm="a@elsewhere.test", to=f"b@{PEER}"))
        self.failureResultOf(d, S2SError)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_tlsRequiredNotOffered(self):
        """
        With tls_required, a peer that does not offer STARTTLS fails the
        queue with 408 and nothing is sent in clear.
        """
        self.s2s.tls.required = True
        d = self.deliver(message(frm=f"a@{OURS}", to=f"b@{PEER}"))
        xs, transport = self.outgoingConnection()
        transport.clear()
        self.peerHeader(xs)
        failure = self.failureResultOf(d, RemoteServerTimeout)
        self.assertIn("STARTTLS", failure.value.text)
        self.assertNotIn(b"db:result", transport.value())


class IncomingTests(ServiceMixin, unittest.TestCase):
    """
    Incoming streams: we are the receiving and the authoritative server.
    """

    def test_noDelay(self):
        """
        An incoming stream turns Nagle's algorithm off when connected
        (L{xmppgw.nodelay}).
        """
        xs, transport = self.incoming()
        self.assertIs(True, transport.noDelay)

    def test_header(self):
        """
        We answer with a header carrying a stream id and features offering
        dialback with errors.
        """
        xs, transport = self.incoming()
        data = transport.value()
        self.assertIn(b"from='gw.test'", data)
        self.assertIn(b"id='", data)
        self.assertIn(b"<dialback xmlns='urn:xmpp:features:dialback'><errors/>", data)

    def test_restrictedXML(self):
        """
        An incoming stream is hardened as the component link's is: a
        comment (forbidden by RFC 6120 section 11.1) drops the connection.
        """
        xs, transport = self.incoming()
        xs.dataReceived(b"<!-- hello -->")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.received, [])

    def test_fasterStream(self):
        """
        S2S streams, incoming and outgoing, are the component link's
        L{LinkXmlStream}: each of their parsers, the one made after a reset
        (STARTTLS restarts the stream) included, gets the faster handlers
        of L{fastxml.speedUpElementStream}; element dispatch and writing
        take its shortcuts. The hardening still applies (the tests around
        this one).
        """
        seen = []
        original = component.speedUpElementStream

        def spy(stream):
            seen.append(stream)
            return original(stream)

        self.patch(component, "speedUpElementStream", spy)
        xs, transport = self.incoming()
        self.assertIs(type(xs), component.LinkXmlStream)
        self.assertEqual([xs.stream], seen)
        xs.reset()
        self.assertEqual(2, len(seen))
        self.assertIs(xs.stream, seen[-1])
        self.deliver(message(frm=f"bob*sip.test@{OURS}", to=f"alice@{PEER}"))
        out, _ = self.outgoingConnection()
        self.assertIs(type(out), component.LinkXmlStream)
        self.assertIs(out.stream, seen[-1])
        self.assertEqual(3, len(seen))

    def test_stanzaSize(self):
        """
        A stanza from a peer larger than C{maxStanzaSize} drops the
        connection; the limit set on the service applies to streams opened
        after it.
        """
        self.s2s.maxStanzaSize = 10000
        xs, transport = self.incoming()
        self.assertFalse(transport.disconnecting)
        xs.dataReceived(b"<message to='a@gw.test' from='b@peer.test'><body>"
                        + b"x" * 10001)
        self.assertTrue(transport.disconnecting)

    def test_hostUnknownHeader(self):
        """
        A stream to a domain we do not host gets <host-unknown/>.
        """
        xs, transport = self.incoming(to="other.test")
        self.assertIn(b"<host-unknown", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_invalidFrom(self):
        """
        A stanza from a domain not verified on the stream gets
        <invalid-from/> and is not passed on.
        """
        xs, transport = self.incoming()
        xs.dataReceived(message().toXml().encode())
        self.assertIn(b"<invalid-from", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.received, [])

    def test_unsolicitedResultAnswer(self):
        """
        A db:result answer (with type) on an incoming stream, where we
        asked nothing, is rejected.
        """
        xs, transport = self.incoming()
        xs.dataReceived(f"<db:result from='{PEER}' to='{OURS}' type='valid'/>".encode())
        self.assertIn(b"<undefined-condition", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_unsolicitedVerifyAnswer(self):
        """
        A db:verify answer on an incoming stream is rejected too.
        """
        xs, transport = self.incoming()
        xs.dataReceived(f"<db:verify from='{PEER}' to='{OURS}' id='x' "
                        "type='valid'/>".encode())
        self.assertIn(b"<undefined-condition", transport.value())

    def test_authoritativeVerify(self):
        """
        As the authoritative server we answer db:verify valid for our own
        key and invalid for another.
        """
        xs, transport = self.incoming()
        good = generateKey(SECRET, PEER, OURS, "their-id")
        xs.dataReceived(f"<db:verify from='{PEER}' to='{OURS}' id='their-id'>"
                        f"{good}</db:verify>".encode())
        self.assertIn(b"id='their-id' type='valid'", transport.value())
        transport.clear()
        xs.dataReceived(f"<db:verify from='{PEER}' to='{OURS}' id='their-id'>"
                        f"{'0' * 64}</db:verify>".encode())
        self.assertIn(b"type='invalid'", transport.value())

    def test_verifyForUnknownDomain(self):
        """
        db:verify for a domain we do not host gets a dialback error
        item-not-found (the stream stays up).
        """
        xs, transport = self.incoming()
        xs.dataReceived(f"<db:verify from='{PEER}' to='other.test' id='i'>k"
                        "</db:verify>".encode())
        self.assertIn(b"type='error'", transport.value())
        self.assertIn(b"item-not-found", transport.value())
        self.assertFalse(transport.disconnecting)

    def receivingDialback(self, answer="valid"):
        """
        Run a db:result from the peer through verification with its
        authoritative server (an outgoing stream we open), answering
        C{answer}.
        """
        xs, transport = self.incoming()
        sid = xs.sid
        xs.dataReceived(f"<db:result from='{PEER}' to='{OURS}'>KEY123"
                        "</db:result>".encode())
        out, outTransport = self.outgoingConnection()
        self.peerHeader(out)
        self.assertIn(f"<db:verify from='{OURS}' to='{PEER}' id='{sid}'>KEY123"
                      "</db:verify>".encode(), outTransport.value())
        out.dataReceived(f"<db:verify from='{PEER}' to='{OURS}' id='{sid}' "
                         f"type='{answer}'/>".encode())
        return xs, transport

    def test_receivingDialbackValid(self):
        """
        A key the authoritative server confirms verifies the peer domain on
        the stream: db:result valid, and its stanzas are accepted.
        """
        xs, transport = self.receivingDialback("valid")
        self.assertIn(f"<db:result from='{OURS}' to='{PEER}' type='valid'/>".encode(),
                      transport.value())
        xs.dataReceived(message().toXml().encode())
        self.assertEqual(len(self.received), 1)
        self.assertEqual(self.received[0]["from"], f"alice@{PEER}/x")

    def test_stanzaUnlinked(self):
        """
        A stanza received on a verified stream is passed on whole, and its
        parent links are dropped once handled (no reference cycle; see
        L{xmppgw.fastxml.unlinkTree}).
        """
        xs, transport = self.receivingDialback("valid")
        seen = []
        self.s2s.messageReceived = lambda stanza: seen.append(
            (stanza, [c.parent for c in stanza.elements()]))
        xs.dataReceived(message().toXml().encode())
        [(stanza, parentsDuring)] = seen
        self.assertTrue(parentsDuring)
        self.assertEqual([stanza] * len(parentsDuring), parentsDuring)
        self.assertEqual([None] * len(parentsDuring),
                         [c.parent for c in stanza.elements()])

    def test_receivingDialbackInvalid(self):
        """
        A key the authoritative server denies: db:result invalid and the
        stream is closed.
        """
        xs, transport = self.receivingDialback("invalid")
        self.assertIn(b"type='invalid'", transport.value())
        self.assertIn(b"</stream:stream>", transport.value())

    def test_hostUnknownStanza(self):
        """
        A stanza from a verified domain to a domain we do not host gets
        <host-unknown/>.
        """
        xs, transport = self.receivingDialback("valid")
        xs.dataReceived(message(to="bob@other.test").toXml().encode())
        self.assertIn(b"<host-unknown", transport.value())
        self.assertEqual(self.received, [])

    def test_improperAddressing(self):
        """
        A stanza without from gets <improper-addressing/>.
        """
        xs, transport = self.incoming()
        xs.dataReceived(b"<message to='bob@gw.test'><body>x</body></message>")
        self.assertIn(b"<improper-addressing", transport.value())


class IncomingTLSRequiredTests(ServiceMixin, unittest.TestCase):
    """
    Incoming streams with tls_required.
    """

    tlsRequired = True

    def test_starttlsOffered(self):
        """
        STARTTLS is offered as required, dialback only after it.
        """
        xs, transport = self.incoming()
        data = transport.value()
        self.assertIn(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                      b"<required/></starttls>", data)
        self.assertNotIn(b"urn:xmpp:features:dialback", data)
        transport.clear()
        xs.dataReceived(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.assertIn(b"<proceed", transport.value())
        self.assertIs(transport.tlsContext, self.s2s.tls.serverOptions)
        transport.clear()
        firstID = xs.sid
        xs.dataReceived(STREAM.format(attrs=f"to='{OURS}' from='{PEER}'").encode())
        self.assertIn(b"urn:xmpp:features:dialback", transport.value())
        self.assertNotIn(b"starttls", transport.value())
        self.assertNotEqual(xs.sid, firstID)

    def test_dialbackBeforeTLS(self):
        """
        Dialback before STARTTLS gets <policy-violation/>.
        """
        xs, transport = self.incoming()
        xs.dataReceived(f"<db:result from='{PEER}' to='{OURS}'>k</db:result>".encode())
        self.assertIn(b"<policy-violation", transport.value())
        self.assertTrue(transport.disconnecting)


class NormalizeTests(unittest.TestCase):
    """
    L{normalizeStanza}.
    """

    def test_componentNamespace(self):
        """
        A stanza from a component or client stream serializes without an
        xmlns on an S2S stream.
        """
        element = domish.Element(("jabber:component:accept", "message"))
        element.addElement("body", content="x")
        normalizeStanza(element)
        self.assertEqual(element.toXml(defaultUri="jabber:server"),
                         "<message><body>x</body></message>")


class SecretTests(unittest.TestCase):
    """
    The dialback secret.
    """

    def test_random(self):
        """
        Without a secret a random one is made (and a warning logged).
        """
        reactor = MemoryReactorClock()
        one = S2SService(OURS, reactor=reactor)
        two = S2SService(OURS, reactor=reactor)
        self.assertNotEqual(one.secret, two.secret)
        self.assertGreaterEqual(len(one.secret), 32)

    def test_bytesRefused(self):
        """
        A bytes secret is refused (it would hang streams in wokkel).
        """
        self.assertRaises(TypeError, S2SService, OURS, secret=b"x" * 20,
                          reactor=MemoryReactorClock())

    def test_tlsRequiredNeedsCertificate(self):
        """
        TLS required without a certificate is refused.
        """
        self.assertRaises(ValueError, S2SService, OURS, secret="x" * 20,
                          reactor=MemoryReactorClock(),
                          tls=TLSSettings(required=True))


class ServerConfigTests(unittest.TestCase):
    """
    The server-mode keys of C{[xmpp]} (L{xmppgw.config}).
    """

    def parse(self, **xmpp):
        from xmppgw.config import parseConfig
        return parseConfig({"xmpp": dict(backend="server", **xmpp)}, "t.toml")

    def errors(self, **xmpp):
        from xmppgw.config import ConfigError
        e = self.assertRaises(ConfigError, self.parse, **xmpp)
        return e.errors

    def test_peers(self):
        """
        C{[xmpp.s2s_peers]} maps lower-cased domains to (host, port).
        """
        config = self.parse(tls_required=False, s2s_peers={
            "XMPP.test": "127.0.0.1:5299", "v6.test": "[::1]:5269"})
        self.assertEqual(config.xmpp.s2s_peers, {
            "xmpp.test": ("127.0.0.1", 5299), "v6.test": ("::1", 5269)})

    def test_badPeer(self):
        """
        A peer without a port is an error naming its key.
        """
        errors = self.errors(tls_required=False, s2s_peers={"xmpp.test": "host"})
        self.assertEqual(errors[0][0], 'xmpp.s2s_peers."xmpp.test"')
        self.assertIn("host:port", errors[0][1])

    def test_listenAddress(self):
        """
        In server mode an explicit xmpp_host must be an IP address.
        """
        errors = self.errors(tls_required=False, xmpp_host="xmpp.example.org")
        self.assertEqual(errors[0][0], "xmpp.xmpp_host")
        self.assertEqual(
            self.parse(tls_required=False, xmpp_host="127.0.0.1").xmpp.xmpp_host,
            "127.0.0.1")

    def test_shortSecret(self):
        """
        A dialback secret shorter than 16 characters is refused.
        """
        errors = self.errors(tls_required=False, dialback_secret="short")
        self.assertEqual(errors[0][0], "xmpp.dialback_secret")

    def test_keyWithoutCertificate(self):
        """
        tls_private_key without tls_certificate is an error.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("x")
        errors = self.errors(tls_private_key=os.path.abspath(path))
        self.assertEqual([k for k, _ in errors], ["xmpp.tls_certificate"])


class WiringTests(unittest.TestCase):
    """
    L{xmppgw.tap.buildGateway} in server mode.
    """

    def test_buildGateway(self):
        """
        backend = "server" builds an S2SService as the XMPP side, listening
        on xmpp_host:xmpp_port, with verified messages going to the router.
        """
        from xmppgw.config import parseConfig
        from xmppgw.tap import buildGateway

        cert, key = writeCertificate(self.mktemp())
        config = parseConfig({
            "xmpp": {"backend": "server", "xmpp_domain": OURS,
                     "xmpp_host": "127.0.0.1", "xmpp_port": 5299,
                     "dialback_secret": SECRET, "tls_certificate": cert,
                     "tls_private_key": key,
                     "s2s_peers": {PEER: "127.0.0.1:5269"}},
            "sip": {"listen": ["tcp:127.0.0.1:5060"]},
        }, "t.toml")
        reactor = MemoryReactorClock()
        top, router = buildGateway(config, reactor)
        s2s = top.getServiceNamed("xmpp")
        self.assertIsInstance(s2s, S2SService)
        self.assertIs(router.xmpp, s2s)
        self.assertEqual(s2s.messageReceived, router.xmppMessageReceived)
        self.assertEqual((s2s.listenHost, s2s.listenPort), ("127.0.0.1", 5299))
        self.assertTrue(s2s.tls.required and s2s.tls.verify and s2s.tls.canServe)
        self.assertEqual(s2s.resolver.peers, {PEER: ("127.0.0.1", 5269)})
