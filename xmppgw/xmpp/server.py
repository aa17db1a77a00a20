# -*- test-case-name: tests.test_server -*-
"""
Server mode: the gateway is a minimal XMPP server for C{xmpp_domain} and
federates directly with other XMPP servers over S2S (RFC 6120), with
STARTTLS and Server Dialback (XEP-0220, XEP-0185 keys).

L{S2SService} listens for incoming S2S streams and opens outgoing ones to
the domain of each JID it sends to. Its public face for the router is
L{S2SService.deliver}: C{deliver(stanza) -> Deferred} firing with L{None}
once the stanza has been written to an outgoing stream whose dialback
succeeded (project decision 12), or failing with an L{S2SError} that carries
the SIP code of interworking.md section 3.6/6.2:

 - L{RemoteServerNotFound} (404): the domain does not resolve, offers no
   XMPP service, or no server of it accepts a connection;
 - L{RemoteServerTimeout} (408): the stream could not be negotiated in
   time, TLS could not be agreed, the peer answered the dialback with
   C{type='error'}, or the stanza waited longer than C{s2s_queue_ttl};
 - L{DialbackFailed} (500): the peer said our dialback key is C{invalid};
 - L{QueueFull} (503): too many stanzas already wait for that domain;
 - L{ServiceStopped} (503): the gateway is stopping.

Cancelling the L{Deferred} of a stanza not yet written removes it from the
queue: it is then never sent.

This is written on top of C{twisted.words} XML streams rather than
L{wokkel.server.ServerService}, because that class (shared docs style.md
section 0) uses the global reactor, has no STARTTLS, accepts stanzas from
one peer domain per stream only, does not reject unsolicited dialback
answers, keeps queued stanzas for ever and needs a text secret. The dialback
wire format and key are the same (L{xmppgw.xmpp.dialback}).

Enforcement on incoming streams: STARTTLS is required before anything else
when C{tls_required} is on (C{<policy-violation/>}); a stanza whose C{from}
domain was not verified on that stream gets C{<invalid-from/>}; a stanza
C{to} a domain other than ours gets C{<host-unknown/>}; missing addresses
get C{<improper-addressing/>}; a dialback I{answer} (C{type} set) arriving
where we asked nothing gets C{<undefined-condition/>} and the stream is
closed (XEP-0220 security considerations).
"""

from __future__ import annotations

import re
import secrets
from collections import deque
from dataclasses import dataclass

from OpenSSL import SSL, crypto
from twisted.application import service
from twisted.internet import defer, error as ierror, protocol, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.words.protocols.jabber import error, jid, xmlstream
from twisted.words.xish import domish
from zope.interface import implementer

from xmppgw.addressing import jidHost
from xmppgw.fastxml import unlinkTree
from xmppgw.idle import IdleWatch
from xmppgw.sockio import tuneStream
from xmppgw.safexml import hardenXmlStream
from xmppgw.xmpp.component import LinkXmlStream
from xmppgw.xmpp.dialback import (
    NS_DIALBACK, NS_DIALBACK_FEATURES, generateKey, keysEqual)
from xmppgw.xmpp.srv import S2SResolver, ServiceNotAvailable

__all__ = [
    "DialbackFailed",
    "QueueFull",
    "RemoteServerNotFound",
    "RemoteServerTimeout",
    "S2SError",
    "S2SService",
    "ServiceStopped",
    "TLSSettings",
]

NS_STREAMS = xmlstream.NS_STREAMS
NS_TLS = xmlstream.NS_XMPP_TLS
NS_SERVER = "jabber:server"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

#: Stanza namespaces rewritten to C{jabber:server} before sending (the
#: router may hand over elements parsed on a client or component stream).
STANZA_NAMESPACES = ("jabber:server", "jabber:client", "jabber:component:accept")

_log = Logger()

_KEY_CONTENT = re.compile(r"(<db:(?:result|verify)\b[^>]*>)[^<]+")


# -- errors ---------------------------------------------------------------------


class S2SError(Exception):
    """
    A stanza could not be delivered over S2S.

    @ivar domain: the remote domain.
    @ivar condition: the XMPP stanza error condition for a bounce.
    @ivar errorType: its error type.
    @ivar sipCode: the SIP final response for a MESSAGE not yet answered.
    """

    condition = "internal-server-error"
    errorType = "cancel"
    sipCode = 500

    def __init__(self, domain, text):
        Exception.__init__(self, domain, text)
        self.domain = domain
        self.text = text

    def __str__(self):
        return f"{self.domain}: {self.text}"


class RemoteServerNotFound(S2SError):
    """
    The domain cannot be resolved or reached (404).
    """

    condition = "remote-server-not-found"
    sipCode = 404


class RemoteServerTimeout(S2SError):
    """
    The stream could not be negotiated in time (408).
    """

    condition = "remote-server-timeout"
    errorType = "wait"
    sipCode = 408


class DialbackFailed(S2SError):
    """
    The receiving server said our dialback key is invalid (500).
    """

    condition = "internal-server-error"
    sipCode = 500


class QueueFull(S2SError):
    """
    Too many stanzas wait for the domain (503).
    """

    condition = "resource-constraint"
    errorType = "wait"
    sipCode = 503


class ServiceStopped(S2SError):
    """
    The S2S service is not running (503).
    """

    condition = "remote-server-timeout"
    errorType = "wait"
    sipCode = 503


# -- TLS ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSSettings:
    """
    S2S TLS policy and files.

    @ivar certificate: PEM certificate chain file (leaf first), or L{None}.
    @ivar privateKey: PEM private key file, or L{None}.
    @ivar ca: PEM file of the CAs trusted for peers' certificates; L{None}
        means the system's trust store.
    @ivar required: refuse S2S streams without TLS, in both directions.
    @ivar verify: check the certificate of the servers we connect to
        (service_identity, against C{ca}); off, TLS still encrypts and
        dialback still authenticates.
    """

    certificate: str | None = None
    privateKey: str | None = None
    ca: str | None = None
    required: bool = True
    verify: bool = True


_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _readCertificates(path):
    with open(path, "rb") as f:
        data = f.read()
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ValueError(f"{path}: no PEM certificate found")
    return [ssl.Certificate.loadPEM(block) for block in blocks]


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClientTLS:
    """
    A client TLS connection creator that sends SNI but does not check the
    server's certificate (C{tls_verify = false}).
    """

    def __init__(self, hostname, context):
        self._hostname = hostname.encode("idna")
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_tlsext_host_name(self._hostname)
        connection.set_connect_state()
        return connection


class TLSContexts:
    """
    The loaded TLS material for L{TLSSettings}.

    @ivar canServe: whether we have a certificate to offer STARTTLS with.
    """

    def __init__(self, settings):
        """
        @raise ValueError: if a file cannot be read or parsed.
        """
        self.settings = settings
        self.required = settings.required
        self.verify = settings.verify
        self._private = None
        self._chain = []
        self.serverOptions = None
        if settings.certificate:
            if not settings.privateKey:
                raise ValueError("tls_certificate needs tls_private_key")
            try:
                certs = _readCertificates(settings.certificate)
                with open(settings.privateKey, "rb") as f:
                    keyPair = ssl.KeyPair.load(f.read(), crypto.FILETYPE_PEM)
                self._private = ssl.PrivateCertificate.fromCertificateAndKeyPair(
                    certs[0], keyPair)
            except (OSError, SSL.Error, crypto.Error) as e:
                raise ValueError(f"cannot load the S2S certificate/key: {e}")
            self._chain = [c.original for c in certs[1:]]
            # ALPN: Prosody's S2S client offers "xmpp-server"; a server
            # context without ALPN configured answers it with an
            # internal-error alert (seen with Twisted 26.10 / OpenSSL 3).
            self.serverOptions = ssl.CertificateOptions(
                privateKey=keyPair.original, certificate=certs[0].original,
                extraCertChain=self._chain or None,
                acceptableProtocols=[b"xmpp-server", b"xmpp-client"])
        self._trust = None
        if settings.ca:
            try:
                self._trust = ssl.trustRootFromCertificates(
                    _readCertificates(settings.ca))
            except (OSError, crypto.Error) as e:
                raise ValueError(f"cannot load tls_ca: {e}")
        self._unverifiedContext = None

    @property
    def canServe(self):
        return self.serverOptions is not None

    def clientCreator(self, domain):
        """
        The connection creator for an outgoing stream to C{domain}.
        """
        if self.verify:
            return ssl.optionsForClientTLS(
                domain, trustRoot=self._trust or ssl.platformTrust(),
                clientCertificate=self._private)
        if self._unverifiedContext is None:
            if self._private is not None:
                options = ssl.CertificateOptions(
                    privateKey=self._private.privateKey.original,
                    certificate=self._private.original,
                    extraCertChain=self._chain or None)
            else:
                options = ssl.CertificateOptions()
            self._unverifiedContext = options.getContext()
        return _UnverifiedClientTLS(domain, self._unverifiedContext)


# -- helpers --------------------------------------------------------------------


def normalizeStanza(element):
    """
    Put a stanza into the C{jabber:server} namespace (in place), so that it
    serializes without an C{xmlns} on an S2S stream.
    """
    stack = [element]
    while stack:
        e = stack.pop()
        if e.uri is None or e.uri in STANZA_NAMESPACES:
            e.uri = NS_SERVER
        if e.defaultUri is None or e.defaultUri in STANZA_NAMESPACES:
            e.defaultUri = NS_SERVER
        stack.extend(c for c in e.children if isinstance(c, domish.Element))
    return element


def _domainOf(address):
    """
    The domain part of a JID text, lower-cased.

    @raise jid.InvalidFormat: for a malformed JID.
    """
    return jidHost(address).lower()


def _bareDomain(address):
    """
    A dialback C{from}/C{to}: a bare domain, or L{None}.
    """
    try:
        parsed = jid.JID(address)
    except (jid.InvalidFormat, TypeError):
        return None
    if parsed.user or parsed.resource:
        return None
    return parsed.host.lower()


def _dialbackError(name, frm, to, condition, errorType="cancel", id=None):
    element = domish.Element((NS_DIALBACK, name))
    element["from"] = frm
    element["to"] = to
    if id is not None:
        element["id"] = id
    element["type"] = "error"
    err = element.addElement((None, "error"))
    err["type"] = errorType
    err.addElement((NS_STANZAS, condition))
    return element


class _StreamBase(xmlstream.Authenticator):
    """
    What incoming and outgoing S2S streams share: element dispatch, idle
    timer, traffic log, stream errors, clean close.
    """

    tlsDone = False
    closed = False

    def __init__(self, s2s):
        xmlstream.Authenticator.__init__(self)
        self.s2s = s2s
        self.idle = s2s._idleWatch.timer(self._onIdle)
        self._closeCall = None
        self.lastStreamError = None

    def associateWithStream(self, xs):
        xmlstream.Authenticator.associateWithStream(self, xs)
        xs.addObserver("/*", self._dispatch)
        xs.addObserver(xmlstream.STREAM_END_EVENT, self._ended)
        xs.addObserver(xmlstream.STREAM_ERROR_EVENT, self._streamErrorReceived)
        if self.s2s.logTraffic:
            xs.rawDataInFn = self._logIn
            xs.rawDataOutFn = self._logOut

    def _describe(self):
        return "S2S stream"

    def _logIn(self, data):
        self._logData("RECV", data)

    def _logOut(self, data):
        self._logData("SEND", data)

    def _logData(self, direction, data):
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        _log.info("{what} {direction}: {data}", what=self._describe(),
                  direction=direction, data=_KEY_CONTENT.sub(r"\1[key]", data))

    def send(self, element):
        """
        Write an element (or text) to the stream and restart the idle timer.
        """
        if self.closed or self.xmlstream is None or self.xmlstream.transport is None:
            return False
        self.xmlstream.send(element)
        self.idle.touch()
        return True

    def _dispatch(self, element):
        if self.closed:
            return
        self.idle.touch()
        try:
            self.elementReceived(element)
        except error.StreamError as e:
            self.streamError(e.condition, e.text)
        finally:
            # Handled: no reference cycle left for the collector (as on the
            # component link).
            unlinkTree(element)

    def elementReceived(self, element):
        raise NotImplementedError()

    def _streamErrorReceived(self, reason):
        self.lastStreamError = reason.value
        _log.warn("{what}: the peer sent stream error {condition} {text}",
                  what=self._describe(),
                  condition=getattr(reason.value, "condition", "?"),
                  text=getattr(reason.value, "text", "") or "")

    def streamError(self, condition, text=None):
        """
        Send a stream error and close the connection.
        """
        self.s2s._count("s2s.streamError." + condition)
        _log.warn("{what}: closing with stream error {condition}: {text}",
                  what=self._describe(), condition=condition, text=text or "")
        xs = self.xmlstream
        self.closed = True
        self.idle.stop()
        if xs is not None and xs.transport is not None:
            xs.sendStreamError(error.StreamError(condition, text))

    def close(self):
        """
        Send the stream footer; drop the connection if the peer does not
        close within the service's C{closeTimeout}.
        """
        if self.closed:
            return
        self.closed = True
        self.idle.stop()
        xs = self.xmlstream
        if xs is None or xs.transport is None:
            return
        try:
            xs.sendFooter()
        except Exception:
            _log.failure("Could not send the stream footer")
        self._closeCall = self.s2s.clock.callLater(
            self.s2s.closeTimeout, self.abort)

    def abort(self):
        """
        Drop the connection now.
        """
        self._closeCall = None
        self.closed = True
        self.idle.stop()
        xs = self.xmlstream
        if xs is not None and xs.transport is not None:
            abort = getattr(xs.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                xs.transport.loseConnection()

    def _onIdle(self):
        _log.info("{what} idle for {timeout} s: closing", what=self._describe(),
                  timeout=self.s2s.idleTimeout)
        self.close()

    def _ended(self, reason):
        self.closed = True
        self.idle.stop()
        if self._closeCall is not None and self._closeCall.active():
            self._closeCall.cancel()
        self._closeCall = None
        self.connectionEnded(reason)

    def connectionEnded(self, reason):
        pass


# -- outgoing -----------------------------------------------------------------------


class OutgoingAuthenticator(_StreamBase):
    """
    One outgoing connection of an L{OutgoingLink}: stream header, STARTTLS,
    then hands over to the link for dialback.
    """

    def __init__(self, link):
        _StreamBase.__init__(self, link.s2s)
        self.link = link
        self.state = "header"

    def _describe(self):
        return f"S2S stream to {self.link.domain}"

    def connectionMade(self):
        xs = self.xmlstream
        tuneStream(xs.transport)
        xs.namespace = NS_SERVER
        xs.prefixes = {NS_STREAMS: "stream", NS_DIALBACK: "db"}
        xs.thisEntity = jid.internJID(self.s2s.domain)
        xs.otherEntity = jid.internJID(self.link.domain)
        xs.sendHeader()
        self.idle.touch()
        self.link._connected(self)

    def streamStarted(self, rootElement):
        xmlstream.Authenticator.streamStarted(self, rootElement)
        xs = self.xmlstream
        if rootElement.defaultUri != NS_SERVER:
            self.streamError("invalid-namespace", "expected jabber:server")
            return
        xs.sid = rootElement.getAttribute("id")
        if not xs.sid:
            self.link._negotiationFailed(self, RemoteServerTimeout(
                self.link.domain, "the peer's stream header has no id"))
            return
        if NS_DIALBACK not in rootElement.localPrefixes.values():
            self.link._negotiationFailed(self, RemoteServerTimeout(
                self.link.domain, "the peer does not offer Server Dialback"))
            return
        self.state = "features"
        if xs.version < (1, 0):
            self._features(None)

    def elementReceived(self, element):
        uri, name = element.uri, element.name
        if uri == NS_STREAMS:
            if name == "features" and self.state == "features":
                self._features(element)
            return
        if uri == NS_TLS:
            if name == "proceed" and self.state == "starttls":
                self._proceed()
            elif name == "failure" and self.state == "starttls":
                self.link._negotiationFailed(self, RemoteServerTimeout(
                    self.link.domain, "the peer refused STARTTLS"))
            else:
                self.streamError("undefined-condition",
                                 f"unexpected TLS element {name}")
            return
        if uri == NS_DIALBACK:
            self.link._dialbackElement(self, element)
            return
        self.streamError("unsupported-stanza-type",
                         "this stream only carries stanzas the other way")

    def _features(self, features):
        offered = None
        if features is not None:
            offered = next(features.elements(NS_TLS, "starttls"), None)
        if not self.tlsDone:
            if offered is not None:
                self.state = "starttls"
                self.send(domish.Element((NS_TLS, "starttls")))
                return
            if self.s2s.tls.required:
                self.link._negotiationFailed(self, RemoteServerTimeout(
                    self.link.domain,
                    "the peer does not offer STARTTLS and tls_required is on"))
                return
        self.state = "ready"
        self.link._ready(self)

    def _proceed(self):
        xs = self.xmlstream
        try:
            creator = self.s2s.tls.clientCreator(self.link.domain)
            xs.transport.startTLS(creator)
        except Exception as e:
            self.link._negotiationFailed(self, RemoteServerTimeout(
                self.link.domain, f"cannot start TLS: {e}"))
            return
        self.tlsDone = True
        self.state = "header"
        xs.reset()
        xs.sendHeader()

    def _onIdle(self):
        _log.info("{what} idle for {timeout} s: closing", what=self._describe(),
                  timeout=self.s2s.idleTimeout)
        self.link.idle(self)

    def connectionEnded(self, reason):
        self.link._connectionLost(self, reason)


class _OutgoingFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, link):
        self.link = link

    def buildProtocol(self, addr):
        xs = LinkXmlStream(OutgoingAuthenticator(self.link))
        xs.factory = self
        hardenXmlStream(xs, self.link.s2s.maxStanzaSize)
        return xs

    def clientConnectionFailed(self, connector, reason):
        self.link._connectFailed(reason)


class _Queued:
    __slots__ = ("stanza", "deferred", "timer")

    def __init__(self, stanza):
        self.stanza = stanza
        self.deferred = None
        self.timer = None


RESOLVING = "resolving"
CONNECTING = "connecting"
NEGOTIATING = "negotiating"
DIALBACK = "dialback"
VERIFIED = "verified"
CLOSED = "closed"


class OutgoingLink:
    """
    Our outgoing S2S stream to one remote domain, with its queue.

    Life: resolve the domain (L{S2SResolver}), connect to each target in
    turn, negotiate STARTTLS, send our C{db:result}; once the peer says
    C{valid}, write the queued stanzas in order and then every new one at
    once. Requests to verify keys for incoming streams (C{db:verify}) ride
    on the same stream as soon as TLS is done. When the stream ends, is
    idle for C{idleTimeout}, or negotiation fails, the link is closed and
    forgotten; the next stanza opens a new one.

    @ivar state: one of C{resolving}, C{connecting}, C{negotiating},
        C{dialback}, C{verified}, C{closed}.
    """

    def __init__(self, s2s, domain):
        self.s2s = s2s
        self.domain = domain
        self.state = RESOLVING
        self.queue = deque()
        self.stream = None
        self.tls = False
        self._targets = []
        self._lastConnectError = None
        self._verifyWaiting = []
        self._verifySent = {}
        self._negotiateTimer = None
        self._connector = None

    def __repr__(self):
        return f"<OutgoingLink {self.domain} {self.state}>"

    # -- API used by S2SService

    def start(self):
        self._negotiateTimer = self.s2s.clock.callLater(
            self.s2s.negotiateTimeout, self._negotiateTimedOut)
        d = self.s2s.resolver.resolve(self.domain)
        d.addCallbacks(self._resolved, self._resolveFailed)

    def sendNow(self, stanza):
        """
        Write C{stanza} if the stream is verified.

        @return: whether it was written.
        """
        if self.state == VERIFIED and self.stream is not None:
            if self.stream.send(stanza):
                self.s2s._count("s2s.sent")
                return True
        return False

    def wait(self, stanza):
        """
        Queue C{stanza} for when the stream is verified (L{sendNow} did not
        write it).

        @return: a L{defer.Deferred} firing with L{None} once it is
            written, or failing with an L{S2SError}.
        """
        if self.state == CLOSED:
            return defer.fail(RemoteServerTimeout(self.domain, "stream closed"))
        if len(self.queue) >= self.s2s.queueLimit:
            self.s2s._count("s2s.queueFull")
            return defer.fail(QueueFull(
                self.domain,
                f"{len(self.queue)} stanzas already wait for this domain"))
        entry = _Queued(stanza)
        entry.deferred = defer.Deferred(lambda d: self._cancel(entry))
        entry.timer = self.s2s.clock.callLater(
            self.s2s.queueTTL, self._expire, entry)
        self.queue.append(entry)
        return entry.deferred

    def requestVerify(self, streamID, key):
        """
        Ask this (authoritative) domain whether C{key} is valid for an
        incoming stream with id C{streamID}.

        @return: a L{defer.Deferred} firing with L{True} or L{False}, or
            failing with an L{S2SError}.
        """
        if len(self._verifyWaiting) + len(self._verifySent) >= self.s2s.queueLimit:
            return defer.fail(QueueFull(self.domain, "too many dialback checks"))
        if streamID in self._verifySent or any(
                s == streamID for s, _, _ in self._verifyWaiting):
            return defer.fail(S2SError(self.domain, "duplicate dialback check"))
        d = defer.Deferred()
        self._verifyWaiting.append((streamID, key, d))
        if self.state in (DIALBACK, VERIFIED):
            self._sendVerifies()
        return d

    # -- queue

    def _cancel(self, entry):
        if entry in self.queue:
            self.queue.remove(entry)
            self.s2s._count("s2s.cancelled")
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()

    def _expire(self, entry):
        entry.timer = None
        if entry in self.queue:
            self.queue.remove(entry)
            self.s2s._count("s2s.expired")
            entry.deferred.errback(RemoteServerTimeout(
                self.domain,
                f"not delivered within s2s_queue_ttl ({self.s2s.queueTTL:g} s)"))

    def _flush(self):
        while self.queue and self.state == VERIFIED:
            entry = self.queue.popleft()
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            if not self.stream.send(entry.stanza):
                self.queue.appendleft(entry)
                return
            self.s2s._count("s2s.sent")
            entry.deferred.callback(None)

    def fail(self, reason):
        """
        Give up: fail the queue and every pending check with C{reason} and
        close the stream.
        """
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self._stopNegotiateTimer()
        self.s2s._linkClosed(self)
        queue, self.queue = self.queue, deque()
        if queue:
            _log.warn("S2S to {domain} failed: {why}; {n} queued stanza(s) "
                      "returned with {condition}", domain=self.domain,
                      why=reason.text, n=len(queue), condition=reason.condition)
            self.s2s._count("s2s.failed", len(queue))
        for entry in queue:
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.deferred.errback(reason)
        waiting = self._verifyWaiting + list(self._verifySent.values())
        self._verifyWaiting, self._verifySent = [], {}
        for item in waiting:
            d = item[2] if isinstance(item, tuple) else item
            d.errback(reason)
        if self.stream is not None:
            self.stream.close()
        if self._connector is not None and self.stream is None:
            self._connector.disconnect()

    def idle(self, stream):
        """
        The stream saw no traffic for C{idleTimeout}: close it and forget
        this link (the next stanza opens a new one).
        """
        if stream is self.stream:
            self.fail(RemoteServerTimeout(self.domain, "the idle stream was closed"))
        else:
            stream.close()

    def _stopNegotiateTimer(self):
        if self._negotiateTimer is not None and self._negotiateTimer.active():
            self._negotiateTimer.cancel()
        self._negotiateTimer = None

    def _negotiateTimedOut(self):
        self._negotiateTimer = None
        if self.state in (VERIFIED, CLOSED):
            return
        stream = self.stream
        self.fail(RemoteServerTimeout(
            self.domain, f"no verified stream after {self.s2s.negotiateTimeout:g} s "
            f"(stuck while {self.state})"))
        if stream is not None:
            stream.abort()

    # -- connecting

    def _resolved(self, targets):
        if self.state == CLOSED:
            return
        self._targets = list(targets)
        self.state = CONNECTING
        self._connectNext()

    def _resolveFailed(self, failure):
        if failure.check(ServiceNotAvailable):
            why = str(failure.value)
        else:
            why = f"cannot resolve: {failure.getErrorMessage()}"
        self.fail(RemoteServerNotFound(self.domain, why))

    def _connectNext(self):
        if self.state != CONNECTING:
            return
        if not self._targets:
            last = self._lastConnectError
            if last is not None and last.check(ierror.TimeoutError):
                self.fail(RemoteServerTimeout(
                    self.domain, f"connection timed out: {last.getErrorMessage()}"))
            else:
                why = last.getErrorMessage() if last is not None else "no server"
                self.fail(RemoteServerNotFound(self.domain, f"cannot connect: {why}"))
            return
        host, port = self._targets.pop(0)
        _log.info("S2S connecting to {domain} at {host}:{port}",
                  domain=self.domain, host=host, port=port)
        self._connector = self.s2s.reactor.connectTCP(
            host, port, _OutgoingFactory(self), timeout=self.s2s.connectTimeout)

    def _connectFailed(self, reason):
        self._connector = None
        self._lastConnectError = reason
        _log.info("S2S connection to {domain} failed: {why}",
                  domain=self.domain, why=reason.getErrorMessage())
        self._connectNext()

    # -- events from the stream

    def _connected(self, stream):
        if self.state == CLOSED:
            stream.abort()
            return
        self.stream = stream
        self.state = NEGOTIATING

    def _negotiationFailed(self, stream, reason):
        self.s2s._count("s2s.negotiationFailed")
        self.fail(reason)

    def _ready(self, stream):
        """
        TLS is done (or not needed): send our dialback key and any waiting
        key checks.
        """
        if self.state != NEGOTIATING:
            return
        self.tls = stream.tlsDone
        self.state = DIALBACK
        xs = stream.xmlstream
        key = generateKey(self.s2s.secret, self.domain, self.s2s.domain, xs.sid)
        result = domish.Element((NS_DIALBACK, "result"))
        result["from"] = self.s2s.domain
        result["to"] = self.domain
        result.addContent(key)
        stream.send(result)
        self._sendVerifies()

    def _sendVerifies(self):
        stream = self.stream
        while self._verifyWaiting and stream is not None:
            streamID, key, d = self._verifyWaiting.pop(0)
            verify = domish.Element((NS_DIALBACK, "verify"))
            verify["from"] = self.s2s.domain
            verify["to"] = self.domain
            verify["id"] = streamID
            verify.addContent(key)
            self._verifySent[streamID] = d
            stream.send(verify)

    def _dialbackElement(self, stream, element):
        kind = element.getAttribute("type")
        frm = _bareDomain(element.getAttribute("from", ""))
        to = _bareDomain(element.getAttribute("to", ""))
        if element.name == "result":
            if (self.state != DIALBACK or kind is None or frm != self.domain
                    or to != self.s2s.domain):
                self.s2s._count("s2s.unsolicited")
                stream.streamError("undefined-condition",
                                   "unsolicited or misaddressed db:result")
                return
            if kind == "valid":
                self._verified(stream)
            elif kind == "invalid":
                self.s2s._count("s2s.dialbackInvalid")
                self.fail(DialbackFailed(
                    self.domain, "the peer rejected our dialback key (invalid)"))
            else:
                self.fail(RemoteServerTimeout(
                    self.domain, "dialback error: " + _errorCondition(element)))
            return
        if element.name == "verify":
            streamID = element.getAttribute("id")
            d = None
            if (kind is not None and frm == self.domain
                    and to == self.s2s.domain):
                d = self._verifySent.pop(streamID, None)
            if d is None:
                self.s2s._count("s2s.unsolicited")
                stream.streamError("undefined-condition",
                                   "unsolicited or misaddressed db:verify")
                return
            if kind == "valid":
                d.callback(True)
            elif kind == "invalid":
                d.callback(False)
            else:
                d.errback(RemoteServerTimeout(
                    self.domain, "dialback error: " + _errorCondition(element)))
            return
        stream.streamError("unsupported-stanza-type",
                           f"unexpected dialback element {element.name}")

    def _verified(self, stream):
        self._stopNegotiateTimer()
        self.state = VERIFIED
        self.s2s._count("s2s.outgoingVerified")
        _log.info("S2S stream to {domain} verified by dialback (TLS: {tls}, "
                  "certificate checked: {checked})", domain=self.domain,
                  tls="yes" if self.tls else "no",
                  checked="yes" if (self.tls and self.s2s.tls.verify) else "no")
        self._flush()

    def _connectionLost(self, stream, reason):
        if stream is not self.stream:
            return
        self.stream = None
        if self.state == CLOSED:
            return
        why = reason.getErrorMessage()
        if stream.lastStreamError is not None:
            condition = getattr(stream.lastStreamError, "condition", "")
            why = f"stream error {condition}"
            if condition in ("host-unknown", "host-gone"):
                self.fail(RemoteServerNotFound(self.domain, why))
                return
        if self.state == VERIFIED:
            _log.info("S2S stream to {domain} closed: {why}",
                      domain=self.domain, why=why)
            self.fail(RemoteServerTimeout(self.domain, "stream closed: " + why))
            return
        if self.state == DIALBACK:
            self.fail(RemoteServerTimeout(
                self.domain, "the connection closed during dialback: " + why))
        elif stream.tlsDone:
            self.fail(RemoteServerTimeout(
                self.domain, "the connection closed after STARTTLS (TLS "
                f"handshake or certificate check failed?): {why}"))
        else:
            self.fail(RemoteServerTimeout(
                self.domain, "the connection closed during negotiation: " + why))


def _errorCondition(element):
    for err in element.elements():
        if err.name == "error":
            for child in err.elements():
                return child.name
    return "unknown"


# -- incoming -----------------------------------------------------------------------


class IncomingAuthenticator(_StreamBase):
    """
    One incoming S2S stream: we are the receiving server (and the
    authoritative server for C{db:verify}).

    @ivar verified: the peer domains whose dialback succeeded on this
        stream; only stanzas from them are accepted.
    """

    maxPending = 10

    def __init__(self, s2s):
        _StreamBase.__init__(self, s2s)
        self.verified = set()
        self.pending = {}
        self.peer = None

    def _describe(self):
        return f"S2S stream from {self.peer or '(unknown)'}"

    def associateWithStream(self, xs):
        _StreamBase.associateWithStream(self, xs)
        xs.initiating = False

    def connectionMade(self):
        tuneStream(self.xmlstream.transport)
        self.idle.touch()
        self.s2s._incomingConnected(self)

    def streamStarted(self, rootElement):
        xmlstream.Authenticator.streamStarted(self, rootElement)
        xs = self.xmlstream
        xs.namespace = NS_SERVER
        xs.prefixes = {NS_STREAMS: "stream", NS_DIALBACK: "db"}
        xs.thisEntity = jid.internJID(self.s2s.domain)
        xs.sid = secrets.token_hex(16)
        frm = rootElement.getAttribute("from")
        if frm:
            domain = _bareDomain(frm)
            if domain:
                self.peer = domain
                xs.otherEntity = jid.internJID(domain)
        if rootElement.defaultUri != NS_SERVER:
            self.streamError("invalid-namespace", "expected jabber:server")
            return
        to = rootElement.getAttribute("to")
        if to and _bareDomain(to) != self.s2s.domain:
            self.streamError("host-unknown", f"this server serves {self.s2s.domain} only")
            return
        xs.sendHeader()
        if xs.version >= (1, 0):
            features = domish.Element((NS_STREAMS, "features"))
            tls = self.s2s.tls
            if not self.tlsDone and tls.canServe:
                starttls = features.addElement((NS_TLS, "starttls"))
                if tls.required:
                    starttls.addElement("required")
            if self.tlsDone or not tls.required:
                features.addElement((NS_DIALBACK_FEATURES, "dialback")).addElement("errors")
            self.send(features)

    def elementReceived(self, element):
        uri, name = element.uri, element.name
        if uri == NS_STREAMS:
            return
        if uri == NS_TLS:
            if name == "starttls":
                self._starttls()
            else:
                self.streamError("undefined-condition", f"unexpected TLS element {name}")
            return
        if self.s2s.tls.required and not self.tlsDone:
            self.streamError("policy-violation", "STARTTLS is required first")
            return
        if uri == NS_DIALBACK and name == "result":
            self._result(element)
        elif uri == NS_DIALBACK and name == "verify":
            self._verify(element)
        elif uri == NS_SERVER and name in ("message", "presence", "iq"):
            self._stanza(element)
        else:
            self.streamError("unsupported-stanza-type",
                             f"unexpected element {{{uri}}}{name}")

    def _starttls(self):
        xs = self.xmlstream
        if self.tlsDone or not self.s2s.tls.canServe:
            self.send(domish.Element((NS_TLS, "failure")))
            self.send("</stream:stream>")
            self.closed = True
            xs.transport.loseConnection()
            return
        self.send(domish.Element((NS_TLS, "proceed")))
        xs.transport.startTLS(self.s2s.tls.serverOptions)
        self.tlsDone = True
        xs.reset()

    def _result(self, element):
        if element.getAttribute("type") is not None:
            self.s2s._count("s2s.unsolicited")
            self.streamError("undefined-condition",
                             "unsolicited db:result answer (we asked nothing)")
            return
        frmText, toText = element.getAttribute("from"), element.getAttribute("to")
        if not frmText or not toText:
            self.streamError("improper-addressing", "db:result needs from and to")
            return
        frm, to = _bareDomain(frmText), _bareDomain(toText)
        if frm is None or to is None:
            self.streamError("improper-addressing", "db:result from/to must be domains")
            return
        if to != self.s2s.domain:
            self.send(_dialbackError("result", toText, frmText, "item-not-found"))
            return
        if frm == self.s2s.domain:
            self.streamError("invalid-from", "that is our own domain")
            return
        if frm in self.verified:
            self._sendResult(frm, "valid")
            return
        if frm in self.pending:
            return
        if len(self.pending) >= self.maxPending:
            self.send(_dialbackError("result", self.s2s.domain, frm,
                                     "resource-constraint", "wait"))
            return
        self.peer = self.peer or frm
        key = str(element).strip()
        d = self.s2s.verifyKey(frm, self.xmlstream.sid, key)
        self.pending[frm] = d
        d.addCallbacks(self._checked, self._checkFailed,
                       callbackArgs=(frm,), errbackArgs=(frm,))

    def _sendResult(self, frm, kind):
        result = domish.Element((NS_DIALBACK, "result"))
        result["from"] = self.s2s.domain
        result["to"] = frm
        result["type"] = kind
        self.send(result)

    def _checked(self, valid, frm):
        self.pending.pop(frm, None)
        if self.closed:
            return
        if valid:
            self.verified.add(frm)
            self.s2s._count("s2s.incomingVerified")
            _log.info("S2S stream from {domain} verified by dialback (TLS: {tls})",
                      domain=frm, tls="yes" if self.tlsDone else "no")
            self._sendResult(frm, "valid")
        else:
            self.s2s._count("s2s.dialbackInvalid")
            _log.warn("S2S stream claiming {domain}: the authoritative server "
                      "says the dialback key is invalid", domain=frm)
            self._sendResult(frm, "invalid")
            if not self.verified:
                self.close()

    def _checkFailed(self, failure, frm):
        self.pending.pop(frm, None)
        if self.closed:
            return
        _log.warn("S2S stream claiming {domain}: cannot check its dialback "
                  "key: {why}", domain=frm, why=failure.getErrorMessage())
        self.send(_dialbackError("result", self.s2s.domain, frm,
                                 "remote-connection-failed"))

    def _verify(self, element):
        if element.getAttribute("type") is not None:
            self.s2s._count("s2s.unsolicited")
            self.streamError("undefined-condition",
                             "unsolicited db:verify answer (we asked nothing)")
            return
        frmText, toText = element.getAttribute("from"), element.getAttribute("to")
        streamID = element.getAttribute("id")
        if not frmText or not toText or not streamID:
            self.streamError("improper-addressing", "db:verify needs from, to and id")
            return
        frm, to = _bareDomain(frmText), _bareDomain(toText)
        if frm is None or to is None:
            self.streamError("improper-addressing", "db:verify from/to must be domains")
            return
        if to != self.s2s.domain:
            self.send(_dialbackError("verify", toText, frmText, "item-not-found",
                                     id=streamID))
            return
        key = str(element).strip()
        expected = generateKey(self.s2s.secret, frm, to, streamID)
        kind = "valid" if keysEqual(key, expected) else "invalid"
        self.s2s._count("s2s.verify." + kind)
        reply = domish.Element((NS_DIALBACK, "verify"))
        reply["from"] = self.s2s.domain
        reply["to"] = frm
        reply["id"] = streamID
        reply["type"] = kind
        self.send(reply)

    def _stanza(self, element):
        frmText, toText = element.getAttribute("from"), element.getAttribute("to")
        if not frmText or not toText:
            self.streamError("improper-addressing", "stanzas need from and to")
            return
        try:
            frm, to = _domainOf(frmText), _domainOf(toText)
        except (jid.InvalidFormat, TypeError):
            self.streamError("improper-addressing", "malformed from or to")
            return
        if frm not in self.verified:
            self.s2s._count("s2s.invalidFrom")
            self.streamError("invalid-from",
                             f"{frm} has not been verified on this stream")
            return
        if to != self.s2s.domain:
            self.streamError("host-unknown", f"this server does not serve {to}")
            return
        self.s2s._stanzaReceived(element)

    def connectionEnded(self, reason):
        self.s2s._incomingLost(self)


class _IncomingFactory(protocol.ServerFactory):
    noisy = False

    def __init__(self, s2s):
        self.s2s = s2s

    def buildProtocol(self, addr):
        if len(self.s2s._incoming) >= self.s2s.maxIncoming:
            self.s2s._count("s2s.incomingRefused")
            _log.warn("S2S: refusing a connection from {addr}: {n} streams "
                      "already open", addr=addr, n=len(self.s2s._incoming))
            return None
        xs = LinkXmlStream(IncomingAuthenticator(self.s2s))
        xs.factory = self
        hardenXmlStream(xs, self.s2s.maxStanzaSize)
        return xs


# -- the service ----------------------------------------------------------------------


class S2SService(service.Service):
    """
    The gateway's S2S side: listener, outgoing links, dialback authority.

    @ivar domain: our domain (C{xmpp_domain}).
    @ivar secret: the dialback secret (text).
    @ivar messageReceived: called with each C{<message/>} received on a
        verified incoming stream (set by the wiring to the router).
    @ivar stanzaReceived: called with every other verified stanza, or
        L{None} (then IQ requests get C{<service-unavailable/>}).
    @ivar stats: counters.
    """

    closeTimeout = 5.0
    connectTimeout = 30.0
    #: The most bytes of one stanza from a peer (C{[policy]
    #: stanza_max_size}; a change applies to streams opened after it):
    #: every S2S stream is hardened as the component link's is
    #: (L{xmppgw.safexml}: no DOCTYPE, entities, comments or processing
    #: instructions, bounded stanzas).
    maxStanzaSize = 65536

    def __init__(self, domain, secret=None, reactor=None, resolver=None,
                 peers=None, listenHost="0.0.0.0", listenPort=5269, tls=None,
                 idleTimeout=300.0, queueLimit=100, queueTTL=30.0,
                 negotiateTimeout=30.0, connectTimeout=30.0, maxIncoming=1000,
                 logTraffic=False):
        """
        @param domain: our XMPP domain.
        @param secret: the dialback secret; L{None}: a random one, with a
            warning (several instances serving one domain must share it).
        @param reactor: TCP and time; the global reactor if L{None}.
        @param resolver: an L{S2SResolver}, or an L{IResolver} for the SRV
            lookups (wrapped), or L{None}.
        @param peers: C{{domain: (host, port)}} pinned peers.
        @param tls: L{TLSSettings} or L{TLSContexts}; L{None}: no
            certificate, TLS not required, not verified.
        @param idleTimeout: seconds of silence before a stream is closed.
        @param queueLimit: stanzas waiting per domain.
        @param queueTTL: seconds a stanza may wait for its stream.
        @param negotiateTimeout: seconds to get a verified outgoing stream.
        @raise TypeError: if the secret is not text.
        @raise ValueError: for unusable TLS files.
        """
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.clock = reactor
        self.domain = domain.lower()
        if secret is None:
            secret = secrets.token_hex(32)
            _log.warn("No xmpp.dialback_secret set: using a random one. Every "
                      "gateway instance serving {domain} must share the same "
                      "secret, and peers' pending checks fail after a restart: "
                      "set dialback_secret.", domain=self.domain)
        if not isinstance(secret, str) or not secret:
            raise TypeError("the dialback secret must be a non-empty str")
        self.secret = secret
        if resolver is None or not isinstance(resolver, S2SResolver):
            resolver = S2SResolver(resolver=resolver, peers=peers, reactor=reactor)
        elif peers:
            resolver.peers.update({d.lower(): tuple(v) for d, v in peers.items()})
        self.resolver = resolver
        if tls is None:
            tls = TLSSettings(required=False, verify=False)
        if isinstance(tls, TLSSettings):
            tls = TLSContexts(tls)
        if tls.required and not tls.canServe:
            raise ValueError("tls_required needs tls_certificate and tls_private_key")
        self.tls = tls
        self.listenHost = listenHost
        self.listenPort = listenPort
        # The idle timers of every stream, one timer in the reactor.
        self._idleWatch = IdleWatch(reactor, idleTimeout)
        self.queueLimit = queueLimit
        self.queueTTL = queueTTL
        self.negotiateTimeout = negotiateTimeout
        self.connectTimeout = connectTimeout
        self.maxIncoming = maxIncoming
        self.logTraffic = logTraffic
        self.messageReceived = None
        self.stanzaReceived = None
        self.stats = {}
        self.port = None
        self._links = {}
        self._incoming = set()

    @property
    def idleTimeout(self):
        """
        Seconds of silence before a stream is closed (0: never).
        """
        return self._idleWatch.timeout

    @idleTimeout.setter
    def idleTimeout(self, value):
        self._idleWatch.timeout = value

    def _count(self, key, n=1):
        self.stats[key] = self.stats.get(key, 0) + n

    # -- router API

    def deliver(self, stanza, notify=None):
        """
        Send a stanza to its C{to} domain over a verified S2S stream.

        @param stanza: a L{domish.Element} with C{from} at our domain and
            C{to} at another domain; its namespace is normalized in place.
        @param notify: L{None}, or a callable called once with what the
            Deferred fires with (L{None}, or a L{Failure}), as
            L{ComponentLink.deliver<xmppgw.xmpp.component.ComponentLink.deliver>}
            takes it (the router gives one).
        @return: a L{defer.Deferred} firing with L{None} when the stanza was
            written, or failing with an L{S2SError}. Cancelling it before
            then removes the stanza from the queue. With C{notify}: when
            the stanza is written at once (its stream is verified),
            C{notify(None)} is called before this returns, and the return
            is L{None}, no Deferred (as on the component link: one per
            message cost the router's path a few µs); otherwise the same
            Deferred, which passes its outcome to C{notify} and ends with
            L{None}.
        """
        d = self._deliver(stanza, notify is not None)
        if d is None:
            notify(None)
        elif notify is not None:
            d.addBoth(notify)
        return d

    def _deliver(self, stanza, now=False):
        """
        L{deliver}'s work: L{None} if C{now} and the stanza was written at
        once, else the Deferred.
        """
        to, frm = stanza.getAttribute("to"), stanza.getAttribute("from")
        try:
            domain = _domainOf(to or "")
            sender = _domainOf(frm or "")
        except (jid.InvalidFormat, TypeError):
            return defer.fail(S2SError(str(to), "stanza with a malformed to/from"))
        if not to or not frm:
            return defer.fail(S2SError(str(to), "stanza without to/from"))
        if sender != self.domain:
            return defer.fail(S2SError(
                domain, f"from {frm!r} is not at our domain {self.domain}"))
        if domain == self.domain:
            return defer.fail(S2SError(domain, "stanza addressed to ourselves"))
        if not self.running:
            return defer.fail(ServiceStopped(domain, "S2S service not running"))
        normalizeStanza(stanza)
        link = self._linkFor(domain)
        if link.sendNow(stanza):
            return None if now else defer.succeed(None)
        return link.wait(stanza)

    def send(self, stanza):
        """
        Fire-and-forget L{deliver}: failures are logged and counted.
        """
        d = self.deliver(stanza)
        d.addErrback(self._sendFailed, stanza)

    def _sendFailed(self, failure, stanza):
        self._count("s2s.sendFailed")
        _log.warn("Could not send {name} to {to}: {why}", name=stanza.name,
                  to=stanza.getAttribute("to"), why=failure.getErrorMessage())

    @property
    def isAuthenticated(self):
        """
        L{True} while listening: stanzas can be handed to L{deliver}
        (which itself waits for a verified stream per domain).
        """
        return self.running and self.port is not None

    @property
    def state(self):
        """
        C{"listening"} or C{"stopped"} (for health checks and metrics).
        """
        return "listening" if self.isAuthenticated else "stopped"

    def streamCounts(self):
        """
        Open S2S streams by state, for metrics: C{incoming} and one key per
        outgoing link state.
        """
        counts = {"incoming": len(self._incoming)}
        for link in self._links.values():
            key = "outgoing_" + link.state
            counts[key] = counts.get(key, 0) + 1
        return counts

    # -- dialback authority / receiving

    def verifyKey(self, domain, streamID, key):
        """
        Check a key presented on an incoming stream with C{domain}'s
        authoritative server.

        @return: L{defer.Deferred} firing with a L{bool}.
        """
        if not self.running:
            return defer.fail(ServiceStopped(domain, "S2S service not running"))
        return self._linkFor(domain).requestVerify(streamID, key)

    def _linkFor(self, domain):
        link = self._links.get(domain)
        if link is None or link.state == CLOSED:
            link = OutgoingLink(self, domain)
            self._links[domain] = link
            link.start()
        return link

    def _linkClosed(self, link):
        if self._links.get(link.domain) is link:
            del self._links[link.domain]

    def _incomingConnected(self, stream):
        self._incoming.add(stream)

    def _incomingLost(self, stream):
        self._incoming.discard(stream)

    def _stanzaReceived(self, element):
        self._count("s2s.received." + element.name)
        handler = (self.messageReceived if element.name == "message"
                   else self.stanzaReceived)
        if handler is not None:
            try:
                handler(element)
            except Exception:
                self._count("s2s.handlerFailed")
                _log.failure("Handling a {name} from {sender} failed",
                             name=element.name,
                             sender=element.getAttribute("from"))
            return
        if element.name == "message":
            return
        if element.name == "iq" and element.getAttribute("type") in ("get", "set"):
            reply = domish.Element((None, "iq"))
            reply["type"] = "error"
            reply["from"] = element["to"]
            reply["to"] = element["from"]
            if element.getAttribute("id") is not None:
                reply["id"] = element["id"]
            err = reply.addElement("error")
            err["type"] = "cancel"
            err.addElement((NS_STANZAS, "service-unavailable"))
            self.send(reply)

    # -- service

    def startService(self):
        """
        Listen on C{listenHost:listenPort}.
        """
        self.port = self.reactor.listenTCP(
            self.listenPort, _IncomingFactory(self), interface=self.listenHost)
        service.Service.startService(self)
        _log.info("XMPP server mode: S2S for {domain} listening on {host}:{port}",
                  domain=self.domain, host=self.listenHost,
                  port=self.port.getHost().port)

    def stopService(self):
        """
        Stop listening, fail what waits, close every stream.
        """
        service.Service.stopService(self)
        for link in list(self._links.values()):
            link.fail(ServiceStopped(link.domain, "the gateway is stopping"))
        for stream in list(self._incoming):
            stream.close()
        self._idleWatch.clear()
        port, self.port = self.port, None
        if port is not None:
            return defer.maybeDeferred(port.stopListening)
        return None
