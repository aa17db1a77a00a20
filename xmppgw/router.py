# -*- test-case-name: tests.test_router -*-
"""
The router: the one object that links the SIP side and the XMPP side.

SIP -> XMPP: a MESSAGE that passes the request policy (L{xmppgw.sip.uas}) and
maps (L{xmppgw.messages}) becomes a C{<message/>} stanza. The stanza goes to
the XMPP side's C{deliver}, and the SIP server transaction is answered with
the success code only once that side reports it handed to the XMPP server
(project decision 12: confirmed by the component's server, or written to a
verified S2S stream). While it waits (the link is down, or the
confirmation has not come) the transaction is I{held}, at most
C{holdLimit} of them, for at most C{holdTimeout} seconds; then it is
answered 503 with C{Retry-After}. So a 2xx always means "handed to the XMPP
server", never "only in our memory".

XMPP -> SIP: a C{<message/>} with a body becomes a SIP MESSAGE sent through a
client transaction, at most one in flight per destination URI (RFC 3428
section 8), the rest queued in order up to C{queueLimit}. A failure response,
a timeout or a transport failure comes back to the XMPP sender as a stanza
error (L{xmppgw.errors}). Bodyless messages (chat states, receipts) and error
stanzas produce no SIP request and no error reply.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import partial

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import InvalidFormat
from wokkel.subprotocols import XMPPHandler

from xmppgw import errors, messages
from xmppgw.addressing import AddressError, jidHost, jidHostAndBare
from xmppgw.fastxml import isHandled
from xmppgw.logs import emitEvent
from xmppgw.metrics import NullRecorder
from xmppgw.randomid import randomHex
from xmppgw.sip import uas
from xmppgw.sip.message import makeResponse
from xmppgw.sip.transaction import TransactionTimeout, TransportFailure
from xmppgw.sip.transport import Target
from xmppgw.sip.uri import URIError, parseNameAddr, parseURI
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
    @ivar optionsFollowLink: answer OPTIONS C{503} (with C{Retry-After})
        while the gateway cannot relay (XMPP link not authenticated, or
        shutting down), so a SIP proxy's OPTIONS probing (Kamailio
        dispatcher) takes the instance out; L{False}: always C{200}.
    """

    xmppDomain: str
    successCode: int = 202
    maxMessageSize: int = 2048
    holdTimeout: float = 8.0
    holdLimit: int = 10000
    queueLimit: int = 100
    outboundProxy: Target | None = None
    sipMaxSize: int = 1300
    logMessages: bool = True
    optionsFollowLink: bool = True


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


#: The C{Retry-After} (seconds) of the C{503} answer to OPTIONS while the
#: gateway cannot relay (L{RouterSettings.optionsFollowLink}).
OPTIONS_RETRY_AFTER = 5

#: With C{hold_limit = 0}, the most MESSAGEs waiting for their stanza's
#: confirmation (L{MessageRouter._deliver}): like C{hold_limit}'s default,
#: about a second of confirmations at 10,000 MESSAGEs/s.
CONFIRM_LIMIT = 10000


_INFO = LogLevel.info

#: The counters of the message paths, split into C{(origin, outcome)} for
#: L{MessageRouter._count} once here (other keys are split per call).
_KEY_PARTS = {
    key: tuple(key.split(".", 1)) for key in [
        "sip.relayed", "sip.refused", "sip.consumed", "sip.rateLimited",
        "sip.forbidden", "sip.overflow", "sip.holdExpired", "sip.s2sFailed",
        "sip.shutdown", "xmpp.relayed", "xmpp.failed", "xmpp.bodyless",
        "xmpp.refused", "xmpp.overflow", "xmpp.forbidden",
        "xmpp.rateLimited", "xmpp.notified", "xmpp.notifyFailed",
        "xmpp.errorReceived", "xmpp.shutdown",
    ]
}


class _Delivery:
    """
    A SIP MESSAGE waiting for the XMPP side (S2S or the component link) to
    write or confirm its stanza.

    @ivar expires: the clock time at which it is answered 503 if still
        waiting (see L{MessageRouter._expireDeliveries}).
    """

    __slots__ = ("request", "transaction", "stanza", "received", "expires",
                 "handle", "answered")

    def __init__(self, request, transaction, stanza, received, expires):
        self.request = request
        self.transaction = transaction
        self.stanza = stanza
        self.received = received
        self.expires = expires
        #: What C{deliver} returned (its C{cancel()} withdraws the stanza),
        #: or L{None}.
        self.handle = None
        self.answered = False


class _Outgoing:
    """
    An XMPP message on its way to SIP.
    """

    __slots__ = ("stanza", "message", "received", "sent")

    def __init__(self, stanza, message, received):
        self.stanza = stanza
        self.message = message
        self.received = received
        self.sent = received


class MessageRouter:
    """
    Relays messages between the SIP transaction layer and the XMPP link.

    @ivar stats: counters by outcome, for logs and metrics.
    @ivar metrics: the recorder (L{xmppgw.metrics.NullRecorder} interface)
        told about every outcome; a L{NullRecorder} unless set.
    """

    _log = Logger()

    def __init__(self, clock, mapper, sip, xmpp, settings):
        """
        @param clock: an L{IReactorTime} provider.
        @param mapper: an L{xmppgw.addressing.AddressMapper}.
        @param sip: the L{xmppgw.sip.transaction.TransactionLayer}.
        @param xmpp: the XMPP side: C{isAuthenticated}, C{send(element)}
            raising L{LinkDown}, and C{deliver(stanza, notify)} for the
            stanzas of SIP MESSAGEs (see L{_deliver}).
        @param settings: L{RouterSettings}.
        """
        self.clock = clock
        self.mapper = mapper
        self.sip = sip
        self.xmpp = xmpp
        self.settings = settings
        # Bound once: the class attribute (a descriptor) builds a new
        # Logger on every access. Same namespace and source as it gives.
        self._log = type(self)._log.__get__(self, type(self))
        self._delivering = set()
        # The deliveries in arrival order (answered ones are dropped from
        # the head lazily) and the one timer for the oldest: every delivery
        # waits the same holdTimeout, so arrival order is expiry order.
        self._deliveryOrder = deque()
        self._deliveryTimer = None
        self._queues = {}
        self.stats = {}
        self.metrics = NullRecorder()
        #: An L{xmppgw.policy.Policy} (sender domains, rate limits), or
        #: L{None} for no policy checks. Replaceable at run time.
        self.policy = None
        #: The presence gateway (L{xmppgw.presence.PresenceGateway}) for
        #: SUBSCRIBE/NOTIFY and C{<presence/>}, or L{None} (SUBSCRIBE and
        #: NOTIFY then get 405).
        self.presence = None
        #: Message extensions (L{xmppgw.chatstates.ChatStates},
        #: L{xmppgw.receipts.Receipts}), tried in order; see L{_mapSIP}.
        self.extensions = []
        #: Set by L{shutdown}: new MESSAGEs get 503 at once.
        self.closing = False
        self._drainWaiters = []
        self._abandoned = set()
        sip.requestHandler = self.sipRequestReceived

    def _count(self, key):
        stats = self.stats
        stats[key] = stats.get(key, 0) + 1
        parts = _KEY_PARTS.get(key)
        if parts is None:
            origin, _, outcome = key.partition(".")
        else:
            origin, outcome = parts
        self.metrics.relayed(origin, outcome)

    def queueDepths(self):
        """
        How many messages wait, for metrics.

        @return: C{{"sipHeld": SIP MESSAGEs waiting for the XMPP side (held
            while the link is down, or given to C{deliver} and not yet
            answered: queued by the link or the S2S service, or written and
            awaiting confirmation),
            "xmppToSIP": stanzas queued for SIP (in flight included),
            "destinations": SIP destinations with a queue}}.
        """
        return {
            "sipHeld": len(self._delivering),
            "xmppToSIP": sum(len(q) for q in self._queues.values()),
            "destinations": len(self._queues),
        }

    # SIP -> XMPP

    def sipRequestReceived(self, request, transaction):
        """
        Handle a new SIP server transaction.

        @param request: the L{xmppgw.sip.message.Request}.
        @param transaction: its server transaction (C{respond(response)}).
        """
        settings = self.settings
        policy = self.policy
        if policy is not None and request.method != "ACK":
            source = getattr(request, "source", None)
            if source is not None:
                wait = policy.perSource.allow(source.host)
                if wait is not None:
                    self._count("sip.rateLimited")
                    self.metrics.sipResponse(503, "sent")
                    transaction.respond(self._retryLater(
                        request, wait, "Too many requests from this source"))
                    return
        size = getattr(request, "size", None)
        if size is None:
            size = len(request.body)
        response = uas.checkRequest(
            request, settings.maxMessageSize, size,
            extraMethods=uas.PRESENCE_METHODS if self.presence is not None else (),
        )
        if response is uas.NO_RESPONSE:
            return
        if response is not None:
            if (response.code == 200 and request.method == "OPTIONS"
                    and settings.optionsFollowLink):
                response = self._optionsResponse(request, response)
            self._count("sip.refused")
            self.metrics.sipResponse(response.code, "sent")
            transaction.respond(response)
            return
        if self.closing:
            self._count("sip.refused")
            self.metrics.sipResponse(503, "sent")
            transaction.respond(self._retryLater(request, 5, "Gateway shutting down"))
            return
        if policy is not None:
            response = self._checkSIPSender(request, policy)
            if response is not None:
                transaction.respond(response)
                return
        if request.method in uas.PRESENCE_METHODS and self.presence is not None:
            self.presence.sipRequestReceived(request, transaction)
            return
        try:
            stanza = self._mapSIP(request)
        except messages.NotRelayed:
            # Consumed by an extension (a repeated chat state, an IMDN that
            # is not relayed): nothing goes to XMPP.
            self._count("sip.consumed")
            transaction.respond(makeResponse(request, settings.successCode))
            return
        except messages.MappingError as e:
            self._count("sip.refused")
            self._logSIP(request, None, e.code, e.reason)
            transaction.respond(
                makeResponse(request, e.code, e.reason, headers=e.headers)
            )
            return
        refusal = self._checkStanzaAddresses(stanza)
        if refusal is not None:
            code, reason = refusal
            self._count("sip.refused")
            self._logSIP(request, stanza, code, reason)
            transaction.respond(makeResponse(request, code, reason))
            return
        self._deliver(request, transaction, stanza, self.clock.seconds())

    def _optionsResponse(self, request, ok):
        """
        The answer to an OPTIONS that passed the request policy: C{ok} (its
        C{200}) while the gateway can relay, else C{503} with
        C{Retry-After}, so that OPTIONS probing (Kamailio's dispatcher)
        takes out an instance whose XMPP link is down, whose XMPP server has
        stopped confirming stanzas (the link is I{unconfirmed}) or that is
        shutting down. In server mode the link is "authenticated" while the S2S
        service listens.
        """
        if self.closing:
            return self._retryLater(request, OPTIONS_RETRY_AFTER,
                                    "Gateway Shutting Down")
        if not self.xmpp.isAuthenticated:
            return self._retryLater(request, OPTIONS_RETRY_AFTER,
                                    "XMPP Link Down")
        if getattr(self.xmpp, "unconfirmed", False):
            # Authenticated but the server stopped confirming (hung):
            # MESSAGEs would only wait and fail.
            return self._retryLater(request, OPTIONS_RETRY_AFTER,
                                    "XMPP Server Not Answering")
        return ok

    def _mapSIP(self, request):
        """
        Map a SIP MESSAGE: an extension's own mapping if one claims it
        (isComposing, IMDN), else L{messages.sipToStanza} decorated by the
        extensions (a receipt request). The stanza id is
        L{messages.stanzaIDFor} the request: the same for every copy of it,
        on every instance.
        """
        # The first header values, read once for both (extensions read
        # the request themselves and do not change it).
        values = messages._firstValues(request.headers)
        messageID = messages.stanzaIDFor(request, values)
        for extension in self.extensions:
            stanza = extension.sipToStanza(request, self.mapper, messageID)
            if stanza is not None:
                return stanza
        stanza = messages.sipToStanza(request, self.mapper, messageID, values)
        for extension in self.extensions:
            extension.decorateStanza(request, stanza)
        return stanza

    def _bodylessToSIP(self, stanza):
        """
        A bodyless stanza (chat state, receipt) as a notification MESSAGE,
        or L{None}.
        """
        for extension in self.extensions:
            message = extension.bodylessToSIP(stanza, self.mapper)
            if message is not None:
                return message
        return None

    def _notificationResult(self, outgoing, code):
        """
        Tell the extensions how a MESSAGE ended; C{True} for a notification
        (whose failure is not bounced to XMPP).
        """
        for extension in self.extensions:
            extension.sipResult(outgoing.message, code)
        return outgoing.message.notification

    def _retryLater(self, request, wait, reason):
        """
        A 503 with C{Retry-After} (whole seconds, at least 1). SIP has no
        "too many requests" code (429 is Provide Referrer Identity, RFC
        3892), so overload and rate limits are both 503 (RFC 3261 21.5.4).
        """
        seconds = max(1, int(math.ceil(wait)))
        return makeResponse(request, 503, reason,
                            headers=[("Retry-After", str(seconds))])

    def _checkSIPSender(self, request, policy):
        """
        The sender policy of a MESSAGE: its From host must be a served SIP
        domain (403), and its sender within the per-sender rate (503).

        @return: L{None}, or the response to send.
        """
        try:
            sender = parseNameAddr(request.headers.get("From") or "").uri
        except (URIError, ValueError):
            return None  # the mapping answers 400 for a bad From
        reason = policy.senders.checkSIPSender(sender.host)
        if reason is not None:
            self._count("sip.forbidden")
            self._logSIP(request, None, 403, reason)
            return makeResponse(request, 403, reason)
        key = "%s:%s@%s" % (sender.scheme, sender.user or "", (sender.host or "").lower())
        wait = policy.perSender.allow(key)
        if wait is not None:
            self._count("sip.rateLimited")
            self._logSIP(request, None, 503, "sender rate limit")
            return self._retryLater(request, wait, "Too many messages from this sender")
        return None

    def _checkStanzaAddresses(self, stanza):
        """
        Refuse a stanza whose C{from} lies outside the domain the gateway
        may send from, or whose C{to} points back at the gateway itself.

        @return: L{None}, or C{(code, reason)}.
        """
        domain = self.settings.xmppDomain
        # stanza["from"], stanza["to"] (KeyError when missing, as those).
        attributes = stanza.attributes
        senderHost = jidHost(attributes["from"])
        if senderHost != domain:
            return (
                403,
                f"Sender domain {senderHost} not served by this gateway",
            )
        if jidHost(attributes["to"]) == domain:
            return (482, "Loop Detected")
        return None

    def _deliver(self, request, transaction, stanza, received):
        """
        The XMPP side has C{deliver(stanza, notify)} (server mode:
        L{xmppgw.xmpp.server.S2SService.deliver}; component mode:
        L{xmppgw.xmpp.component.ComponentLink.deliver}, which notifies once
        the XMPP server confirmed the stanza with a ping round trip; both
        call C{notify} once with what their Deferred would fire with, and
        return something whose C{cancel()} withdraws the stanza, or
        L{None}): answer the SIP transaction from the outcome of
        C{deliver}. Success (the
        stanza was written to a dialback-verified S2S stream, or confirmed
        by the component's server) gives the success code; a failure gives
        the SIP code it carries (404, 408, 500, 503, 504);
        after C{holdTimeout} seconds the MESSAGE gets 503 with
        C{Retry-After} and the delivery is cancelled, which withdraws the
        stanza from the S2S queue, so it is never sent later. At most
        C{holdLimit} MESSAGEs wait at once; more get 503 at once. With
        C{holdLimit} 0 (hold nothing) a MESSAGE gets 503 at once while the
        link is down, and at most L{CONFIRM_LIMIT} wait for a confirmation.
        """
        limit = self.settings.holdLimit
        if not limit:
            if not self.xmpp.isAuthenticated:
                self._refuseHeld(request, transaction, stanza, "XMPP link down",
                                 received)
                return
            limit = CONFIRM_LIMIT
        if len(self._delivering) >= limit:
            self._count("sip.overflow")
            self._refuseHeld(
                request, transaction, stanza, "Too many messages waiting", received
            )
            return
        holdTimeout = self.settings.holdTimeout
        delivery = _Delivery(request, transaction, stanza, received,
                             received + holdTimeout)
        self._delivering.add(delivery)
        order = self._deliveryOrder
        order.append(delivery)
        timer = self._deliveryTimer
        if timer is None:
            if len(order) == 1:
                # received is the clock's time now: the timer's time is
                # exactly delivery.expires.
                self._deliveryTimer = self.clock.callLater(
                    holdTimeout, self._expireDeliveries)
            else:
                self._armDeliveryTimer()
        elif len(order) == 1 and timer.getTime() > delivery.expires:
            # The timer that answered deliveries left (L{_finishDelivery})
            # would come too late for this one (a reload shortened
            # holdTimeout): set it for this one.
            timer.cancel()
            self._armDeliveryTimer()
        # The outcome comes to _deliveryResult, without a Deferred on the
        # component link (one per message cost about 2.5 us on CPython).
        delivery.handle = self.xmpp.deliver(
            stanza, partial(self._deliveryResult, delivery))

    def _deliveryResult(self, delivery, result):
        """
        The outcome of C{deliver} for C{delivery}: L{None}, or a
        L{Failure}.
        """
        if isinstance(result, Failure):
            self._deliveryFailed(result, delivery)
        else:
            self._delivered(result, delivery)

    def _finishDelivery(self, delivery):
        """
        Mark a delivery answered; L{False} if it already was.
        """
        if delivery.answered:
            return False
        delivery.answered = True
        self._delivering.discard(delivery)
        order = self._deliveryOrder
        while order and order[0].answered:
            order.popleft()
        # The timer stays when the last one is answered: at low rates every
        # MESSAGE would otherwise set a timer and cancel it a few
        # milliseconds later (about 4 % of the instructions of a relayed
        # MESSAGE). Left alone, it fires at most once more, finds nothing
        # due and is not set again (L{_expireDeliveries}).
        return True

    def _armDeliveryTimer(self):
        """
        Arm the delivery timer for the oldest waiting delivery, never later
        than its C{expires}.
        """
        expires = self._deliveryOrder[0].expires
        now = self.clock.seconds()
        delay = max(0.0, expires - now)
        # The reactor computes now + delay, which float rounding may put
        # one step past expires: step the delay down (early is harmless,
        # L{_expireDeliveries} then re-arms; late is not). Bounded.
        for _ in range(8):
            if delay <= 0.0 or now + delay <= expires:
                break
            delay = math.nextafter(delay, 0.0)
        self._deliveryTimer = self.clock.callLater(delay, self._expireDeliveries)

    def _expireDeliveries(self):
        """
        The delivery timer fired: answer every delivery whose C{expires} has
        come (L{_deliveryExpired}), in arrival order, and re-arm for the
        oldest one left.
        """
        self._deliveryTimer = None
        order = self._deliveryOrder
        now = self.clock.seconds()
        while order:
            delivery = order[0]
            if not delivery.answered:
                if delivery.expires > now:
                    break
                order.popleft()
                self._deliveryExpired(delivery)
            else:
                order.popleft()
        if order and self._deliveryTimer is None:
            self._armDeliveryTimer()

    def _delivered(self, result, delivery):
        if not self._finishDelivery(delivery):
            return
        self._count("sip.relayed")
        code = self.settings.successCode
        # The 2xx first: with confirm_delivery "kernel" the stanza left the
        # process just now, and a crash before the 2xx is a duplicate once
        # the sender (or its proxy) retries elsewhere.
        request = delivery.request
        delivery.transaction.respond(makeResponse(request, code))
        self._logSIP(request, delivery.stanza, code, None, delivery.received)

    def _deliveryFailed(self, failure, delivery):
        if not self._finishDelivery(delivery):
            return None
        code = getattr(failure.value, "sipCode", None)
        headers = ()
        if code is None:
            self._log.failure("Delivering a stanza over S2S failed", failure)
            code, reason = 500, "Internal gateway error"
        else:
            reason = f"XMPP {failure.value.condition}"
            if code == 503:
                headers = [("Retry-After", "5")]
        self._count("sip.s2sFailed")
        self._logSIP(delivery.request, delivery.stanza, code,
                     f"{reason}: {failure.getErrorMessage()}",
                     delivery.received)
        delivery.transaction.respond(
            makeResponse(delivery.request, code, reason, headers=headers))
        return None

    def _deliveryExpired(self, delivery):
        if not self._finishDelivery(delivery):
            return
        self._count("sip.holdExpired")
        if delivery.handle is not None:
            delivery.handle.cancel()
        self._refuseHeld(delivery.request, delivery.transaction, delivery.stanza,
                         "XMPP server not reached in time", delivery.received)

    def _refuseHeld(self, request, transaction, stanza, reason, received):
        response = makeResponse(
            request, 503, reason, headers=[("Retry-After", "5")]
        )
        self._logSIP(request, stanza, 503, reason, received)
        transaction.respond(response)

    # Shutdown

    def shutdown(self):
        """
        Stop relaying (graceful shutdown, SIGTERM): from now on new MESSAGEs
        get 503 and new XMPP messages C{<service-unavailable/>}; every held
        SIP MESSAGE is answered 503 with C{Retry-After} now; every XMPP
        message queued behind an in-flight SIP transaction is bounced.

        @return: a L{Deferred} firing when no SIP transaction started for an
            XMPP message is in flight any more (see L{abandonInFlight} to
            stop waiting).
        """
        self.closing = True
        for delivery in list(self._delivering):
            # Answered now, like a held MESSAGE; cancelling withdraws a
            # stanza that was not written yet.
            if not self._finishDelivery(delivery):
                continue
            self._count("sip.shutdown")
            if delivery.handle is not None:
                delivery.handle.cancel()
            self._refuseHeld(delivery.request, delivery.transaction,
                             delivery.stanza, "Gateway shutting down",
                             delivery.received)
        if self._deliveryTimer is not None:
            # Nothing waits any more; the timer may be left (see
            # _finishDelivery).
            self._deliveryTimer.cancel()
            self._deliveryTimer = None
        for queue in list(self._queues.values()):
            while len(queue) > 1:
                outgoing = queue.pop()
                self._count("xmpp.shutdown")
                self._bounce(outgoing.stanza, "service-unavailable", "wait",
                             "Gateway shutting down")
        if not self._queues:
            return succeed(None)
        d = Deferred()
        self._drainWaiters.append(d)
        return d

    def abandonInFlight(self):
        """
        Stop waiting for the SIP transactions still in flight after
        L{shutdown}: their XMPP senders get C{<remote-server-timeout/>} now
        (the SIP side may or may not have the message), and a late answer
        is ignored.

        @return: how many were abandoned.
        """
        count = 0
        for queue in list(self._queues.values()):
            for outgoing in queue:
                if outgoing in self._abandoned:
                    continue
                self._abandoned.add(outgoing)
                count += 1
                self._count("xmpp.shutdown")
                self._bounce(outgoing.stanza, "remote-server-timeout", "wait",
                             "Gateway shut down before the SIP side answered")
        waiters, self._drainWaiters = self._drainWaiters, []
        for d in waiters:
            d.callback(None)
        return count

    # XMPP -> SIP

    def xmppMessageReceived(self, stanza):
        """
        Handle a C{<message/>} stanza from the XMPP side.

        @param stanza: a L{twisted.words.xish.domish.Element}.
        """
        if stanza.getAttribute("type") == "error":
            condition, errorType, text = errors.parseStanzaError(stanza)
            self._count("xmpp.errorReceived")
            self.metrics.xmppError(condition, "received")
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
            message = self._bodylessToSIP(stanza)
            if message is None:
                self._count("xmpp.bodyless")
                return
        except messages.StanzaMappingError as e:
            self._count("xmpp.refused")
            self._bounce(stanza, e.condition, None, e.text)
            return
        else:
            for extension in self.extensions:
                message = extension.decorateOutgoing(stanza, message)
        if message is None:
            self._count("xmpp.bodyless")
            return
        refusal = self._checkXMPPSender(stanza, message)
        if refusal is not None:
            self._bounce(stanza, *refusal)
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

    def _checkXMPPSender(self, stanza, message):
        """
        The policy for a message from XMPP: not while shutting down, not to
        the gateway's own SIP domain (a loop), the sender domain allowed
        (C{<forbidden/>}), the sender within its rate
        (C{<policy-violation/>}).

        @return: L{None}, or C{(condition, type, text)} for L{_bounce}.
        """
        if self.closing:
            self._count("xmpp.refused")
            return ("service-unavailable", "wait", "Gateway shutting down")
        gatewayDomain = getattr(self.mapper, "gatewayDomain", None)
        if gatewayDomain and not getattr(self.mapper, "gwmap", None):
            try:
                host = parseURI(message.requestURI).host
            except URIError:
                host = None
            if host == gatewayDomain:
                self._count("xmpp.refused")
                condition, errorType = errors.sipToXMPP(482)
                return (condition, errorType,
                        "Loop detected: the recipient is the gateway itself")
        policy = self.policy
        if policy is None:
            return None
        try:
            # JID(from).host and .userhost(), remembered per JID text.
            host, bare = jidHostAndBare(stanza.getAttribute("from") or "")
        except (InvalidFormat, UnicodeError):
            return None
        reason = policy.senders.checkXMPPSender(host)
        if reason is not None:
            self._count("xmpp.forbidden")
            return ("forbidden", "auth", reason)
        if policy.perSender.allow(bare) is not None:
            self._count("xmpp.rateLimited")
            return ("policy-violation", "wait", "Too many messages from this sender")
        return None

    def _sendNext(self, key, target):
        queue = self._queues[key]
        outgoing = queue[0]
        # One read of the random pool for both: a 32-digit Call-ID and a
        # 12-digit From tag (disjoint bytes).
        randomDigits = randomHex(22)
        request = messages.buildSIPRequest(
            outgoing.message, randomDigits[:32], randomDigits[32:]
        )
        outgoing.sent = self.clock.seconds()
        # The outcome comes to _sipResult, without a Deferred (one per
        # message cost about 2.5 us on CPython): the transaction layer
        # calls it once, with the final response or a Failure.
        self.sip.sendRequest(request, target,
                             partial(self._sipResult, outgoing, key, target))

    def _sipResult(self, outgoing, key, target, result):
        """
        The outcome of the MESSAGE of C{outgoing}: handle it, then move the
        queue on (L{_sipDone} runs whatever the first step does; an
        exception of the first step, a bug, is logged with its traceback).

        @param result: the final L{Response<xmppgw.sip.message.Response>},
            or a L{Failure}.
        """
        try:
            if isinstance(result, Failure):
                self._sipFailure(result, outgoing)
            else:
                self._sipResponse(result, outgoing)
        except Exception:
            self._log.failure("Handling the outcome of {uri} failed",
                              uri=outgoing.message.requestURI)
        self._sipDone(None, key, target)

    def _sipResponse(self, response, outgoing):
        if outgoing in self._abandoned:
            self._abandoned.discard(outgoing)
            return
        code = response.code
        self.metrics.sipResponse(code, "received")
        self.metrics.transactionTime(self.clock.seconds() - outgoing.sent)
        self._logXMPP(outgoing.stanza, outgoing.message, code,
                      response.reason, outgoing.received)
        if self._notificationResult(outgoing, code):
            self._count("xmpp.notified" if code < 300 else "xmpp.notifyFailed")
            return
        if code < 300:
            self._count("xmpp.relayed")
            return
        self._count("xmpp.failed")
        condition, errorType = errors.sipToXMPP(code)
        self._bounce(outgoing.stanza, condition, errorType, response.reason)

    def _sipFailure(self, failure, outgoing):
        if outgoing in self._abandoned:
            self._abandoned.discard(outgoing)
            return
        self._count("xmpp.failed")
        self.metrics.transactionTime(self.clock.seconds() - outgoing.sent)
        if failure.check(TransactionTimeout):
            code, text = 408, "No answer from the SIP side"
        elif failure.check(TransportFailure):
            code, text = 503, f"SIP transport failure: {failure.value}"
        else:
            self._log.failure("Sending a SIP MESSAGE failed", failure)
            code, text = 500, "Internal gateway error"
        self._logXMPP(outgoing.stanza, outgoing.message, code, text,
                      outgoing.received)
        if self._notificationResult(outgoing, code):
            return
        condition, errorType = errors.sipToXMPP(code)
        self._bounce(outgoing.stanza, condition, errorType, text)

    def _sipDone(self, result, key, target):
        queue = self._queues[key]
        queue.popleft()
        if queue:
            self._sendNext(key, target)
        else:
            del self._queues[key]
            if not self._queues and self._drainWaiters:
                waiters, self._drainWaiters = self._drainWaiters, []
                for d in waiters:
                    d.callback(None)
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
        self.metrics.xmppError(condition, "sent")
        reply = errors.buildStanzaError(stanza, condition, errorType, text)
        try:
            self.xmpp.send(reply)
        except LinkDown:
            self._log.warn(
                "XMPP link down: could not return {condition} to {sender}",
                condition=condition,
                sender=stanza.getAttribute("from"),
            )

    def _logSIP(self, request, stanza, code, reason, received=None):
        """
        Account for the outcome of a MESSAGE from SIP (latency, the SIP
        response metric) and log its line: C{request}, and the C{stanza}
        it was mapped to or L{None}.
        """
        metrics = self.metrics
        if received is None:
            elapsed = None
        else:
            elapsed = self.clock.seconds() - received
            metrics.relayLatency("sip", elapsed)
        metrics.sipResponse(code, "sent")
        if not self.settings.logMessages:
            return
        if stanza is not None:
            attributes = stanza.attributes
            mapped = f"{attributes['from']} -> {attributes['to']}"
        else:
            mapped = "-"
        self._emitLine("SIP->XMPP", request.headers.get("From", ""),
                       request.uri, mapped, code, reason, elapsed)

    def _logXMPP(self, stanza, message, code, reason, received=None):
        """
        Account for the outcome of a stanza from XMPP (latency) and log its
        line: the stanza, and the L{OutgoingMessage} it was mapped to.
        """
        if received is None:
            elapsed = None
        else:
            elapsed = self.clock.seconds() - received
            self.metrics.relayLatency("xmpp", elapsed)
        if not self.settings.logMessages:
            return
        attributes = stanza.attributes
        self._emitLine("XMPP->SIP", attributes.get("from"),
                       attributes.get("to"),
                       f"{message.fromURI} -> {message.requestURI}", code,
                       reason, elapsed)

    def _emitLine(self, direction, sender, target, mapped, code, reason,
                  elapsed):
        """
        Log the line of one message (L{_logSIP}, L{_logXMPP}).
        """
        if elapsed is None:
            latency = ""
            latencyMs = None
        elif type(elapsed) is float and 0.0 < elapsed < 1e9:
            # round(ms, 1) and its "%.1f" are the same correctly rounded
            # decimal: format once, read the number back (round() with
            # digits is slow, on PyPy most of all). Only for the usual
            # positive times: PyPy's round() makes a negative value that
            # rounds to zero 0.0, not -0.0 as CPython's.
            text = "%.1f" % (elapsed * 1000,)
            latencyMs = float(text)
            latency = " in " + text + " ms"
        else:
            latencyMs = round(elapsed * 1000, 1)
            latency = f" in {latencyMs:.1f} ms"
        reason = f" {reason}" if reason else ""
        # The line is formatted here, once, by an f-string: twisted's
        # format-string machinery (string.Formatter with call wrappers) cost
        # about 8 us per message in every observer. The fields stay in the
        # event for structured (JSON) observers; "text" is what they print.
        # emitEvent: the event self._log.info would emit, cheaper.
        emitEvent(self._log, _INFO, "{text}", {
            "text": f"{direction} {sender} -> {target} as {mapped}: "
            f"{code}{reason}{latency}",
            "direction": direction,
            "sender": sender,
            "target": target,
            "mapped": mapped,
            "code": code,
            "reason": reason,
            "latency": latency,
            "latencyMs": latencyMs,
        })


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
        self.xmlstream.addObserver("/presence", self._onPresence)
        self._log.info(
            "XMPP component link authenticated as {domain}", domain=self.domain
        )

    def _onMessage(self, stanza):
        if isHandled(stanza):
            return
        stanza.handled = True
        try:
            self.router.xmppMessageReceived(stanza)
        except (AddressError, InvalidFormat):
            self._log.failure("Unmappable XMPP message")

    def _onPresence(self, stanza):
        """
        Hand a C{<presence/>} to the presence gateway; without one, presence
        is ignored (not answered, as before).
        """
        if isHandled(stanza):
            return
        stanza.handled = True
        presence = self.router.presence
        if presence is not None:
            presence.xmppPresenceReceived(stanza)
