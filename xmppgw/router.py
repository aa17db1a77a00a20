# -*- test-case-name: tests.test_router -*-
"""
The router: the one object that links the SIP side and the XMPP side.

SIP -> XMPP: a MESSAGE that passes the request policy (L{xmppgw.sip.uas}) and
maps (L{xmppgw.messages}) becomes a C{<message/>} stanza. The SIP server
transaction is answered with the success code only once the stanza has been
written to the authenticated XMPP link (project decision 12). While the link
is down the transaction is I{held}, in a bounded queue, for at most
C{holdTimeout} seconds; then it is answered 503 with C{Retry-After}. So a 2xx
always means "handed to the XMPP server", never "only in our memory".

XMPP -> SIP: a C{<message/>} with a body becomes a SIP MESSAGE sent through a
client transaction, at most one in flight per destination URI (RFC 3428
section 8), the rest queued in order up to C{queueLimit}. A failure response,
a timeout or a transport failure comes back to the XMPP sender as a stanza
error (L{xmppgw.errors}). Bodyless messages (chat states, receipts) and error
stanzas produce no SIP request and no error reply.
"""

import itertools
import secrets
from collections import deque
from dataclasses import dataclass

from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from wokkel.subprotocols import XMPPHandler

from xmppgw import errors, messages
from xmppgw.addressing import AddressError
from xmppgw.sip import uas
from xmppgw.sip.message import makeResponse
from xmppgw.sip.transaction import TransactionTimeout, TransportFailure
from xmppgw.sip.transport import Target
from xmppgw.sip.uri import URIError, parseURI
from xmppgw.xmpp.component import LinkDown


@dataclass(frozen=True)
class RouterSettings:
    """
    The router's knobs, taken from the configuration.

    @ivar xmppDomain: the only domain the gateway may send C{from} at.
    @ivar successCode: the 2xx for a relayed MESSAGE (202 or 200).
    @ivar maxMessageSize: the largest SIP request accepted, in bytes.
    @ivar holdTimeout: seconds a MESSAGE waits for the XMPP link.
    @ivar holdLimit: how many MESSAGEs may wait for the link at once.
    @ivar queueLimit: how many XMPP -> SIP messages may wait per destination.
    @ivar outboundProxy: where every outgoing SIP request goes, or L{None}.
    @ivar sipMaxSize: the largest SIP MESSAGE built from a stanza (RFC 7572
        section 6).
    @ivar logMessages: log one line per relayed message.
    """

    xmppDomain: str
    successCode: int = 202
    maxMessageSize: int = 2048
    holdTimeout: float = 8.0
    holdLimit: int = 1000
    queueLimit: int = 100
    outboundProxy: Target | None = None
    sipMaxSize: int = 1300
    logMessages: bool = True


def targetForURI(uri):
    """
    Where a SIP request for C{uri} is sent: the URI's host and port, over
    the transport its C{transport} parameter names (UDP by default, TLS for
    C{sips:}).

    DNS NAPTR/SRV (RFC 3263) is not done: the host is resolved as an address
    record, port 5060 (5061 for TLS) unless the URI gives one.

    @param uri: a SIP URI as text.
    @rtype: L{Target}
    @raise URIError: for an unusable URI.
    """
    parsed = parseURI(uri)
    if parsed.scheme not in ("sip", "sips") or not parsed.host:
        raise URIError(f"cannot send a SIP request to {uri!r}")
    if parsed.scheme == "sips":
        transport = "tls"
    else:
        transport = (parsed.param("transport") or "udp").lower()
        if transport not in ("udp", "tcp", "tls"):
            raise URIError(f"unsupported transport {transport!r} in {uri!r}")
    port = parsed.port or (5061 if transport == "tls" else 5060)
    host = parsed.host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Target(transport, host, port)


class _Held:
    """
    A SIP MESSAGE waiting for the XMPP link to come up.
    """

    __slots__ = ("request", "transaction", "stanza", "timer", "received")

    def __init__(self, request, transaction, stanza, timer, received):
        self.request = request
        self.transaction = transaction
        self.stanza = stanza
        self.timer = timer
        self.received = received


class _Outgoing:
    """
    An XMPP message on its way to SIP.
    """

    __slots__ = ("stanza", "message", "received")

    def __init__(self, stanza, message, received):
        self.stanza = stanza
        self.message = message
        self.received = received


class MessageRouter:
    """
    Relays messages between the SIP transaction layer and the XMPP link.

    @ivar stats: counters by outcome, for logs and (later) metrics.
    """

    _log = Logger()

    def __init__(self, clock, mapper, sip, xmpp, settings):
        """
        @param clock: an L{IReactorTime} provider.
        @param mapper: an L{xmppgw.addressing.AddressMapper}.
        @param sip: the L{xmppgw.sip.transaction.TransactionLayer}.
        @param xmpp: the XMPP link: C{isAuthenticated} and C{send(element)}
            raising L{LinkDown}.
        @param settings: L{RouterSettings}.
        """
        self.clock = clock
        self.mapper = mapper
        self.sip = sip
        self.xmpp = xmpp
        self.settings = settings
        self._held = deque()
        self._queues = {}
        self._ids = (
            f"{secrets.token_hex(4)}-{n}" for n in itertools.count(1)
        )
        self.stats = {}
        sip.requestHandler = self.sipRequestReceived

    def _count(self, key):
        self.stats[key] = self.stats.get(key, 0) + 1

    # SIP -> XMPP

    def sipRequestReceived(self, request, transaction):
        """
        Handle a new SIP server transaction.

        @param request: the L{xmppgw.sip.message.Request}.
        @param transaction: its server transaction (C{respond(response)}).
        """
        settings = self.settings
        size = getattr(request, "size", None)
        if size is None:
            size = len(request.body)
        response = uas.checkRequest(request, settings.maxMessageSize, size)
        if response is uas.NO_RESPONSE:
            return
        if response is not None:
            self._count("sip.refused")
            transaction.respond(response)
            return
        try:
            stanza = messages.sipToStanza(request, self.mapper, next(self._ids))
        except messages.MappingError as e:
            self._count("sip.refused")
            self._logMessage("SIP->XMPP", request, None, e.code, e.reason)
            transaction.respond(
                makeResponse(request, e.code, e.reason, headers=e.headers)
            )
            return
        refusal = self._checkStanzaAddresses(stanza)
        if refusal is not None:
            code, reason = refusal
            self._count("sip.refused")
            self._logMessage("SIP->XMPP", request, stanza, code, reason)
            transaction.respond(makeResponse(request, code, reason))
            return
        now = self.clock.seconds()
        if self.xmpp.isAuthenticated and not self._held:
            self._relay(request, transaction, stanza, now)
            return
        if len(self._held) >= settings.holdLimit:
            self._count("sip.overflow")
            self._refuseHeld(
                request, transaction, stanza, "Too many messages waiting", now
            )
            return
        timer = self.clock.callLater(
            settings.holdTimeout, self._holdExpired, request
        )
        self._held.append(_Held(request, transaction, stanza, timer, now))

    def _checkStanzaAddresses(self, stanza):
        """
        Refuse a stanza whose C{from} lies outside the domain the gateway
        may send from, or whose C{to} points back at the gateway itself.

        @return: L{None}, or C{(code, reason)}.
        """
        domain = self.settings.xmppDomain
        sender = JID(stanza["from"])
        if sender.host != domain:
            return (
                403,
                f"Sender domain {sender.host} not served by this gateway",
            )
        target = JID(stanza["to"])
        if target.host == domain:
            return (482, "Loop Detected")
        return None

    def _relay(self, request, transaction, stanza, received):
        """
        Write a stanza to the XMPP link and answer the SIP sender.
        """
        try:
            self.xmpp.send(stanza)
        except LinkDown:
            self._refuseHeld(
                request, transaction, stanza, "XMPP link down", received
            )
            return
        self._count("sip.relayed")
        code = self.settings.successCode
        self._logMessage("SIP->XMPP", request, stanza, code, None, received)
        transaction.respond(makeResponse(request, code))

    def _refuseHeld(self, request, transaction, stanza, reason, received):
        response = makeResponse(
            request, 503, reason, headers=[("Retry-After", "5")]
        )
        self._logMessage("SIP->XMPP", request, stanza, 503, reason, received)
        transaction.respond(response)

    def _holdExpired(self, request):
        for held in self._held:
            if held.request is request:
                self._held.remove(held)
                self._count("sip.holdExpired")
                self._refuseHeld(
                    held.request,
                    held.transaction,
                    held.stanza,
                    "XMPP link down",
                    held.received,
                )
                return

    def xmppLinkUp(self):
        """
        The XMPP link is authenticated: relay every held message, in order.
        """
        while self._held and self.xmpp.isAuthenticated:
            held = self._held.popleft()
            held.timer.cancel()
            self._relay(held.request, held.transaction, held.stanza, held.received)

    def xmppLinkDown(self):
        """
        The XMPP link is gone; messages from SIP are held from now on.
        """

    # XMPP -> SIP

    def xmppMessageReceived(self, stanza):
        """
        Handle a C{<message/>} stanza from the XMPP side.

        @param stanza: a L{twisted.words.xish.domish.Element}.
        """
        if stanza.getAttribute("type") == "error":
            condition, errorType, text = errors.parseStanzaError(stanza)
            self._count("xmpp.errorReceived")
            self._log.info(
                "XMPP error for message {id} from {sender}: {condition} "
                "({text})",
                id=stanza.getAttribute("id"),
                sender=stanza.getAttribute("from"),
                condition=condition,
                text=text or "",
            )
            return
        try:
            message = messages.stanzaToSIP(
                stanza, self.mapper, maxSize=self.settings.sipMaxSize
            )
        except messages.NoBody:
            self._count("xmpp.bodyless")
            return
        except messages.StanzaMappingError as e:
            self._count("xmpp.refused")
            self._bounce(stanza, e.condition, None, e.text)
            return
        if message is None:
            self._count("xmpp.bodyless")
            return
        try:
            target = self.settings.outboundProxy or targetForURI(
                message.requestURI
            )
        except URIError as e:
            self._count("xmpp.refused")
            self._bounce(stanza, "item-not-found", None, str(e))
            return
        key = message.requestURI
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        elif len(queue) >= self.settings.queueLimit:
            self._count("xmpp.overflow")
            self._bounce(
                stanza,
                "resource-constraint",
                "wait",
                "Too many messages queued for this recipient",
            )
            return
        queue.append(_Outgoing(stanza, message, self.clock.seconds()))
        if len(queue) == 1:
            self._sendNext(key, target)

    def _sendNext(self, key, target):
        queue = self._queues[key]
        outgoing = queue[0]
        request = messages.buildSIPRequest(
            outgoing.message, secrets.token_hex(16), secrets.token_hex(6)
        )
        d = self.sip.sendRequest(request, target)
        d.addCallbacks(
            self._sipResponse,
            self._sipFailure,
            callbackArgs=(outgoing,),
            errbackArgs=(outgoing,),
        )
        d.addBoth(self._sipDone, key, target)

    def _sipResponse(self, response, outgoing):
        code = response.code
        self._logMessage(
            "XMPP->SIP",
            outgoing.stanza,
            outgoing.message,
            code,
            response.reason,
            outgoing.received,
        )
        if code < 300:
            self._count("xmpp.relayed")
            return
        self._count("xmpp.failed")
        condition, errorType = errors.sipToXMPP(code)
        self._bounce(outgoing.stanza, condition, errorType, response.reason)

    def _sipFailure(self, failure, outgoing):
        self._count("xmpp.failed")
        if failure.check(TransactionTimeout):
            code, text = 408, "No answer from the SIP side"
        elif failure.check(TransportFailure):
            code, text = 503, f"SIP transport failure: {failure.value}"
        else:
            self._log.failure("Sending a SIP MESSAGE failed", failure)
            code, text = 500, "Internal gateway error"
        self._logMessage(
            "XMPP->SIP", outgoing.stanza, outgoing.message, code, text,
            outgoing.received,
        )
        condition, errorType = errors.sipToXMPP(code)
        self._bounce(outgoing.stanza, condition, errorType, text)

    def _sipDone(self, result, key, target):
        queue = self._queues[key]
        queue.popleft()
        if queue:
            self._sendNext(key, target)
        else:
            del self._queues[key]
        return None

    def _bounce(self, stanza, condition, errorType, text):
        """
        Send a stanza error back to the sender of C{stanza}, if the link
        is up. Never answers an error with an error.
        """
        if stanza.getAttribute("type") == "error":
            return
        if not stanza.getAttribute("from"):
            return
        reply = errors.buildStanzaError(stanza, condition, errorType, text)
        try:
            self.xmpp.send(reply)
        except LinkDown:
            self._log.warn(
                "XMPP link down: could not return {condition} to {sender}",
                condition=condition,
                sender=stanza.getAttribute("from"),
            )

    def _logMessage(self, direction, source, result, code, reason, received=None):
        if not self.settings.logMessages:
            return
        if direction == "SIP->XMPP":
            sender = source.headers.get("From", "")
            target = source.uri
            mapped = (
                f"{result['from']} -> {result['to']}" if result is not None else "-"
            )
        else:
            sender = source.getAttribute("from")
            target = source.getAttribute("to")
            mapped = f"{result.fromURI} -> {result.requestURI}"
        latency = ""
        if received is not None:
            latency = f" in {(self.clock.seconds() - received) * 1000:.1f} ms"
        self._log.info(
            "{direction} {sender} -> {target} as {mapped}: {code}{reason}{latency}",
            direction=direction,
            sender=sender,
            target=target,
            mapped=mapped,
            code=code,
            reason=f" {reason}" if reason else "",
            latency=latency,
        )


class GatewayHandler(XMPPHandler):
    """
    The XMPP side of the router: passes link state and C{<message/>}
    stanzas to the L{MessageRouter}.
    """

    _log = Logger()

    def __init__(self, router, domain):
        XMPPHandler.__init__(self)
        self.router = router
        self.domain = domain

    def connectionInitialized(self):
        self.xmlstream.addObserver("/message", self._onMessage)
        self._log.info(
            "XMPP component link authenticated as {domain}", domain=self.domain
        )
        self.router.xmppLinkUp()

    def connectionLost(self, reason):
        self.router.xmppLinkDown()

    def _onMessage(self, stanza):
        if stanza.handled:
            return
        stanza.handled = True
        try:
            self.router.xmppMessageReceived(stanza)
        except (AddressError, InvalidFormat):
            self._log.failure("Unmappable XMPP message")
