# -*- test-case-name: tests.test_sip_transaction -*-
"""
RFC 3261 section 17 non-INVITE transactions, on an injected clock.

This module is the state-machine layer between the wire (L{xmppgw.sip.transport})
and the transaction user (the router). It knows no sockets and no reactor:
every timer runs on the C{clock} given to L{TransactionLayer}, and every byte
goes out through the C{transport} object given to it.

It also defines the two small address types shared with the transport,
L{Source} and L{Target}, and the two failures a client transaction can end
with, L{TransactionTimeout} and L{TransportFailure}.

The transport interface
=======================

L{TransactionLayer} needs exactly this from its C{transport} (L{SIPTransport
<xmppgw.sip.transport.SIPTransport>} provides it; tests use a list-backed
fake):

  - C{send(message, destination) -> Deferred}: C{destination} is a L{Target}
    for a request, or the L{Source} the request came from for a response (the
    transport then routes the response per its top Via: back on
    C{Source.connection} for TCP/TLS, to C{received}/C{rport} for UDP). The
    transport serialises C{message} itself, every time C{send} is called, so
    a retransmission is the same call again. The Deferred fires with L{None}
    once the bytes are handed to the operating system, or fails with
    L{TransportFailure} (connection refused or closed, unresolvable host, no
    socket for that transport, message too large for the transport).
    C{send} may instead return L{None} when the bytes were handed over at
    once (a UDP datagram): that spares a Deferred per message.
  - C{localAddress(transport) -> (host, port)}: the sent-by to put in the
    Via of requests sent over C{transport} (C{"udp"}, C{"tcp"} or
    C{"tls"}). The host may be a wildcard (C{0.0.0.0}, C{::}) and the port
    may be C{0}: the transport then replaces them in the top Via with the
    real local address of the socket or connection when it writes the bytes.

In the other direction the transport calls C{TransactionLayer.receive(message,
source)} for every parsed message, with C{message.source} already set to
C{source}, and with C{received}/C{rport} already added to the top Via of
requests (RFC 3261 18.2.1, RFC 3581).

What the layer does
===================

  - Server transactions are keyed by the top Via branch (when it has the RFC
    3261 magic cookie C{z9hG4bK}), the Via sent-by and the method, per RFC
    3261 17.2.3. RFC 2543 requests (no magic cookie) are keyed by Call-ID,
    CSeq number, From tag and the top Via sent-by. A retransmitted request
    never reaches the transaction user: the last response (provisional or
    final) is sent again. Any other method (an INVITE, too) gets a
    non-INVITE server transaction, so that the transaction user can refuse
    it (405/501) and retransmissions get that answer again.
  - CANCEL is answered by the layer itself (RFC 3261 9.2): 200 when the
    transaction it names still exists (the CANCEL has no other effect on a
    non-INVITE transaction), 481 otherwise. ACK is never answered and never
    passed up (this layer has no INVITE transactions that an ACK could
    belong to).
  - Client transactions add the top Via themselves, retransmit over UDP on
    Timer E, give up on Timer F (L{TransactionTimeout}) and absorb response
    retransmissions for Timer K.
  - All state is bounded (C{maxTransactions}) and removed when a
    transaction terminates; a server transaction the transaction user never
    answers is forgotten after C{64*T1}. L{TransactionLayer.stop} drops
    everything at shutdown.
"""

from collections import deque
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from xmppgw.randomid import randomHex
from xmppgw.sip.message import (
    Request,
    Response,
    SIPParseError,
    _checkBody,
    _headersOf,
    _keepVias,
    _newRequest,
    _newResponse,
    makeResponse,
    parseVia,
    topVia,
)
from xmppgw.sip.uri import _fastReplace

__all__ = [
    "Source",
    "Target",
    "TransactionError",
    "TransactionTimeout",
    "TransportFailure",
    "ServerTransaction",
    "ClientTransaction",
    "TransactionLayer",
    "TRANSPORTS",
    "DEFAULT_PORTS",
    "MAGIC_COOKIE",
    "EXPIRY_SLACK",
]

log = Logger()

#: The transport names used in L{Source} and L{Target}.
TRANSPORTS = ("udp", "tcp", "tls")

#: The default port of each transport (RFC 3261 19.1.2).
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}

#: The RFC 3261 branch prefix (RFC 3261 8.1.1.7).
MAGIC_COOKIE = "z9hG4bK"

#: The top Via of the requests the layer sends: transport, sent-by host and
#: port, branch.
_VIA_FORMAT = "SIP/2.0/%s %s:%d;branch=%s;rport"
#: L{_VIA_FORMAT} up to the branch value.
_VIA_PREFIX = "SIP/2.0/%s %s:%d;branch="


def _checkTransport(name):
    if name not in TRANSPORTS:
        raise ValueError(
            "unknown SIP transport %r (expected one of %s)" % (name, ", ".join(TRANSPORTS))
        )


@dataclass(frozen=True)
class Source:
    """
    Where a message came from.

    @ivar transport: C{"udp"}, C{"tcp"} or C{"tls"}.
    @ivar host: the peer's IP address (no brackets for IPv6).
    @ivar port: the peer's port.
    @ivar connection: for TCP/TLS, the stream protocol the message arrived on,
        so that responses go back on the same connection; L{None} for UDP.
    """

    transport: str
    host: str
    port: int
    connection: object = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        _checkTransport(self.transport)

    @property
    def reliable(self):
        """
        L{True} for TCP and TLS.
        """
        return self.transport != "udp"


@dataclass(frozen=True)
class Target:
    """
    Where a request goes.

    @ivar transport: C{"udp"}, C{"tcp"} or C{"tls"}.
    @ivar host: an IP address or a host name (resolved by the transport).
    @ivar port: the port; L{None} on construction means the transport's
        default (5060, or 5061 for TLS).
    """

    transport: str
    host: str
    port: int = None

    def __post_init__(self):
        _checkTransport(self.transport)
        if not self.host:
            raise ValueError("a SIP target needs a host")
        if self.port is None:
            object.__setattr__(self, "port", DEFAULT_PORTS[self.transport])
        elif not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError("invalid SIP target port %r" % (self.port,))

    @property
    def reliable(self):
        """
        L{True} for TCP and TLS.
        """
        return self.transport != "udp"


class TransactionError(Exception):
    """
    Base class of the failures of a client transaction.
    """


class TransactionTimeout(TransactionError):
    """
    Timer F fired: no final response in 64*T1. The caller treats it as 408
    (RFC 3261 8.1.3.1).
    """


class TransportFailure(TransactionError):
    """
    The transport could not deliver the message (connection refused or lost,
    unresolvable host, no socket for that transport). The caller treats it as
    503 (RFC 3261 8.1.3.1).
    """


def _cseq(message):
    """
    Split the CSeq header into C{(number, method)}; C{(None, None)} if it
    is missing or malformed.
    """
    value = message.headers.get("CSeq")
    if not value:
        return None, None
    parts = value.split()
    if len(parts) != 2:
        return None, None
    return parts[0], parts[1].upper()


def _fromTag(message):
    value = message.headers.get("From") or ""
    return _tagOf(value)


def _tagOf(value):
    """
    The C{tag} parameter of a From/To header value, or L{None}.
    """
    # The tag is a header parameter, so it comes after the closing '>' of a
    # name-addr, or anywhere in the parameters of a bare addr-spec.
    tail = value.rsplit(">", 1)[-1]
    for param in tail.split(";")[1:]:
        name, _, val = param.partition("=")
        if name.strip().lower() == "tag":
            return val.strip() or None
    return None


def _sentBy(via):
    host = (via.host or "").lower()
    return (host, via.port)


def _serverIdent(request, via):
    """
    The part of a server transaction key shared by a request and the CANCEL
    (or ACK) that refers to it.
    """
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return ("3261", branch, _sentBy(via))
    number, _method = _cseq(request)
    return (
        "2543",
        request.headers.get("Call-ID"),
        number,
        _fromTag(request),
        _sentBy(via),
    )


def _formatHost(host):
    if ":" in host and not host.startswith("["):
        return "[%s]" % (host,)
    return host


#: How much later than its wait's end a transaction waiting out Timer J
#: or K may end (L{_ExpiryQueue}): the queue's timer fires this long after
#: the oldest wait's end, so that it fires a few times a second, not once
#: per transaction, and the waits that end meanwhile go when the next one
#: starts (docs/performance.rst, round 31).
EXPIRY_SLACK = 0.25


class _ExpiryQueue:
    """
    The wait after a final response: Timer J of every UDP server
    transaction, or Timer K of every UDP client transaction.

    All the waits of one queue have the same length, so they end in the
    order they started: one FIFO and one reactor timer serve them all,
    instead of a timer each (tens of thousands are pending at a few
    thousand messages per second). At most C{limit} transactions wait; when
    one more comes, the one waiting longest ends early (it only absorbs
    retransmissions, so the cost is a late retransmission seen as a new
    request).

    A wait ends at the first of: the next L{add} after its end (under
    load, one wait ends for each that starts, in the turn that starts it),
    or the timer, which fires L{EXPIRY_SLACK} after the oldest wait's end.
    So a transaction waits at least its C{delay} and at most
    L{EXPIRY_SLACK} more; with a timer firing at each wait's end, every
    relayed MESSAGE cost a reactor turn of its own, 64*T1 later.

    @ivar clock: the L{IReactorTime} provider.
    @ivar limit: the most transactions waiting at once.
    """

    def __init__(self, clock, limit):
        self.clock = clock
        self.limit = limit
        self._queue = deque()
        self._timer = None

    def __len__(self):
        return len(self._queue)

    def add(self, txn, delay):
        """
        Start the wait of C{txn}, C{delay} seconds (the same for every
        transaction of this queue); C{txn._expired()} is called when it ends.
        The end time is kept on C{txn} (C{_waitEnd}), not in a tuple: one
        object less per waiting transaction for the garbage collector.
        """
        queue = self._queue
        now = self.clock.seconds()
        self._endWaits(now)
        while len(queue) >= self.limit:
            queue.popleft()._expired()
        txn._waitEnd = now + delay
        queue.append(txn)
        if self._timer is None:
            self._timer = self.clock.callLater(delay + EXPIRY_SLACK,
                                               self._sweep)

    def _endWaits(self, now):
        """
        End the waits that have ended by C{now}, oldest first (float sums
        may put an end a hair after C{now}).
        """
        queue = self._queue
        while queue and queue[0]._waitEnd <= now + 1e-6:
            queue.popleft()._expired()

    def _sweep(self):
        self._timer = None
        queue = self._queue
        now = self.clock.seconds()
        self._endWaits(now)
        if queue and self._timer is None:
            self._timer = self.clock.callLater(
                max(0.0, queue[0]._waitEnd - now) + EXPIRY_SLACK,
                self._sweep)

    def clear(self):
        """
        End every wait now (at shutdown) and cancel the timer.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        queue, self._queue = self._queue, deque()
        for txn in queue:
            txn._expired()


#: L{_DeadlineQueue} compacts itself when it holds this many transactions
#: and at least twice as many as were still waiting at its last compaction.
_COMPACT_MIN = 1024


class _DeadlineQueue:
    """
    A wait that nearly always ends early: the abandonment of a server
    transaction (C{serverTimeout} after its request, unless it is answered
    first), or the first timer of a client transaction (Timer E at T1 over
    UDP, Timer F at 64*T1 over TCP/TLS, unless a final response comes
    first).

    All the waits of one queue have the same length, so they end in the
    order they started: one FIFO and one reactor timer serve them all,
    instead of a timer each that is cancelled a few milliseconds later.
    A transaction that no longer waits (L{_waiting} false: answered,
    terminated, or no longer the one registered for its key) is not
    removed from the middle of the FIFO; it is dropped when it reaches
    the head, when a transaction is added and when the timer fires. When
    it is due and still waits, C{txn._due()} is called, at the time its
    own timer would have fired (within a microsecond).

    The FIFO holds only transactions that started within the last wait
    (the timer fires no later than the end of the head's wait). Answered
    transactions behind one still waiting stay until it is due, so, to
    bound memory when answers come out of order, the FIFO is compacted
    (rebuilt with the transactions still waiting) whenever it reaches
    L{_COMPACT_MIN} entries and twice the number left waiting at the last
    compaction: it never holds more than C{max(_COMPACT_MIN, 2 * W)}
    transactions, where C{W <= maxTransactions} is the most that were
    waiting at once, at an amortised cost of one step per addition.

    The end of each wait is kept on the transaction (C{_dueAt}): a
    transaction is in at most one such queue.

    @ivar clock: the L{IReactorTime} provider.
    """

    def __init__(self, clock):
        self.clock = clock
        self._queue = deque()
        self._timer = None
        self._compactAt = _COMPACT_MIN

    def __len__(self):
        return len(self._queue)

    def add(self, txn, now, delay):
        """
        Start the wait of C{txn}: C{delay} seconds (the same for every
        transaction of this queue) from C{now} (the clock's time).
        """
        queue = self._queue
        # Drop the heads answered since (nearly always the one added last,
        # when answers come in order): the FIFO stays a few entries long.
        while queue and not queue[0]._waiting():
            queue.popleft()
        if len(queue) >= self._compactAt:
            self._compact()
        txn._dueAt = now + delay
        queue.append(txn)
        if self._timer is None:
            self._timer = self.clock.callLater(delay, self._sweep)

    def _compact(self):
        """
        Drop every transaction that no longer waits, wherever it is.
        """
        queue = self._queue
        waiting = [txn for txn in queue if txn._waiting()]
        # In place: a sweep in progress holds the same deque.
        queue.clear()
        queue.extend(waiting)
        self._compactAt = max(_COMPACT_MIN, 2 * len(waiting))

    def _sweep(self):
        # self._timer stays set while the due transactions run, so that a
        # transaction added meanwhile (by a callback of a failed client
        # transaction, say) does not start a second timer. If a callback
        # cleared the queue (L{TransactionLayer.stop}), the timer is no
        # longer this one: it is not set again here.
        fired = self._timer
        queue = self._queue
        now = self.clock.seconds()
        while queue:
            head = queue[0]
            if head._waiting():
                # Float sums may put the end of the head's wait, whose
                # timer fired, a hair after "now".
                if head._dueAt > now + 1e-6:
                    break
                queue.popleft()
                head._due()
            else:
                queue.popleft()
        if self._timer is fired:
            self._timer = None
            if queue:
                self._timer = self.clock.callLater(
                    max(0.0, queue[0]._dueAt - now), self._sweep)

    def clear(self):
        """
        Forget every wait (at shutdown) and cancel the timer.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._queue.clear()


#: The states in which a transaction still waits for its final response.
_OPEN = ("trying", "proceeding")


def _packResponse(response):
    """
    C{response} as a flat tuple of immutable values (code, reason, body,
    then each header line's name and value), for a completed server
    transaction to keep during Timer J.

    Thousands of completed transactions wait at once under load (32 s
    each over UDP), and the garbage collector's full collections walk
    every container they hold: a L{Response}, its L{Headers} and their
    list are three such objects per transaction, where a tuple of strings
    is not walked at all (CPython stops tracking it after the first
    collection it survives).
    """
    packed = [response.code, response.reason, response.body]
    for item in response.headers._items:
        packed.extend(item)
    # Flat, without nested tuples: untracked at the first collection that
    # sees it, not one level per collection.
    return tuple(packed)


def _unpackResponse(packed):
    """
    The L{Response} that L{_packResponse} packed: equal to it, and
    serialised to the same bytes.
    """
    items = list(zip(packed[3::2], packed[4::2]))
    return _newResponse(packed[0], packed[1], _headersOf(items), packed[2])


class ServerTransaction:
    """
    A non-INVITE server transaction (RFC 3261 17.2.2).

    @ivar request: the request that created the transaction; L{None} once
        the final response has been sent over UDP (the completed
        transaction then only answers retransmissions for Timer J, 32 s,
        and keeps as little as it can for the garbage collector to walk).
    @ivar method: the method of that request.
    @ivar source: the L{Source} it came from; responses go back there.
    @ivar state: C{"trying"}, C{"proceeding"}, C{"completed"} or
        C{"terminated"}.
    @ivar lastResponse: the last response sent (resent on retransmissions),
        or L{None}. Kept packed while the transaction waits out Timer J
        (L{_packResponse}), so read it only when needed (it is rebuilt on
        every read then).
    """

    def __init__(self, layer, key, ident, request, source):
        self._layer = layer
        self.key = key
        self.ident = ident
        self.request = request
        self.method = request.method
        self.source = source
        self.state = "trying"
        # The last response: a Response, or once completed over UDP that
        # response packed (_packResponse).
        self._last = None
        self._waitEnd = None
        self._dueAt = None

    def __repr__(self):
        return "<ServerTransaction %s %s>" % (self.method, self.state)

    @property
    def lastResponse(self):
        last = self._last
        if last is None or type(last) is not tuple:
            return last
        return _unpackResponse(last)

    @property
    def reliable(self):
        return self.source.reliable

    def respond(self, response):
        """
        Send a response: provisional (1xx) or final (2xx-6xx). After a final
        response the transaction keeps it for Timer J (64*T1 over UDP, 0 over
        TCP/TLS) to answer retransmissions, then is forgotten. A final response
        passed when one was already sent is discarded (RFC 3261 17.2.2), with a
        warning.

        @type response: L{Response}
        @raise TypeError: C{response} is not a L{Response}.
        @raise ValueError: its status code is outside 100-699.
        """
        if not isinstance(response, Response):
            raise TypeError("respond() needs a Response, not %r" % (response,))
        code = response.code
        if not isinstance(code, int) or not 100 <= code <= 699:
            raise ValueError("invalid SIP status code %r" % (code,))
        if self.state in ("completed", "terminated"):
            log.warn(
                "Discarding {code} for a {method} transaction already {state}",
                code=code,
                method=self.method,
                state=self.state,
            )
            return
        self._last = response
        if code < 200:
            self.state = "proceeding"
            self._send(response)
            return
        # The abandonment wait is not cancelled: the shared queue drops
        # this transaction lazily (see L{_DeadlineQueue}).
        self.state = "completed"
        self._send(response)
        if self.reliable:
            self._terminate()
        else:
            self.request = None
            self._last = _packResponse(response)
            self._layer._timerJ.add(self, 64 * self._layer.t1)

    def _send(self, response):
        d = self._layer._sendMessage(response, self.source)
        if not _succeeded(d):
            d.addErrback(self._sendFailed, response.code)

    def _sendFailed(self, failure, code):
        log.warn(
            "Could not send {code} for {method} to {source}: {reason}",
            code=code,
            method=self.method,
            source=self.source,
            reason=failure.getErrorMessage(),
        )

    def _retransmission(self):
        """
        The request came again: resend the last response, if any.
        """
        if self._last is not None:
            self._send(self.lastResponse)

    def _waiting(self):
        """
        Whether the transaction still waits for the transaction user's
        final response (for L{_DeadlineQueue}).
        """
        return self.state in _OPEN and self._layer._servers.get(self.key) is self

    def _due(self):
        """
        C{serverTimeout} has passed and the transaction user has not
        answered.
        """
        self._abandon()

    def _abandon(self):
        log.warn(
            "The transaction user never answered {method} from {source}; forgetting it",
            method=self.method,
            source=self.source,
        )
        self._terminate()

    def _expired(self):
        if self.state == "completed":
            self._timerJ()

    def _timerJ(self):
        self._terminate()

    def _terminate(self):
        self.state = "terminated"
        self._layer._removeServer(self)


class ClientTransaction:
    """
    A non-INVITE client transaction (RFC 3261 17.1.2).

    @ivar request: the request as sent (with the top Via added); L{None}
        once a final response has arrived.
    @ivar target: the L{Target}.
    @ivar branch: the branch of the top Via.
    @ivar method: the request method (CSeq method of matching responses).
    @ivar state: C{"trying"}, C{"proceeding"}, C{"completed"} or
        C{"terminated"}.
    @ivar deferred: fires with the final L{Response}, or fails with
        L{TransactionTimeout} or L{TransportFailure} (what
        L{TransactionLayer.sendRequest} returns); L{None} once it has fired,
        and for a transaction started with C{notify}.
    """

    def __init__(self, layer, request, target, branch, notify=None):
        self._layer = layer
        self.request = request
        self.target = target
        self.branch = branch
        self.method = request.method
        self.state = "trying"
        if notify is None:
            self.deferred = Deferred(self._cancel)
            # Deferred.callback with a Failure runs the errbacks.
            notify = self.deferred.callback
        else:
            self.deferred = None
        #: Called once with the final response or a Failure (L{_finish}).
        self._notify = notify
        self._interval = layer.t1
        # One timer at a time: the next Timer E (UDP retransmission) while
        # it comes before Timer F, then Timer F, which fires at _deadline.
        # The first one (Timer E at T1 over UDP, Timer F over TCP/TLS) is
        # a wait in a queue shared by all client transactions
        # (L{_DeadlineQueue}, ending at _dueAt); only the rare transaction
        # still unanswered then gets timers of its own (_timer).
        self._timer = None
        self._deadline = None
        self._waitEnd = None
        self._dueAt = None

    def __repr__(self):
        return "<ClientTransaction %s %s %s>" % (self.method, self.branch, self.state)

    def _start(self):
        layer = self._layer
        now = layer.clock.seconds()
        timeout = 64 * layer.t1
        self._deadline = now + timeout
        if self.target.reliable:
            layer._firstTimerF.add(self, now, timeout)
        else:
            layer._firstTimerE.add(self, now, self._interval)
        self._send()

    def _waiting(self):
        """
        Whether the transaction still waits for its final response (for
        L{_DeadlineQueue}).
        """
        return self.state in _OPEN and self._layer._clients.get(self.branch) is self

    def _due(self):
        """
        The first timer, from the shared queue: Timer E over UDP, Timer F
        over TCP/TLS.
        """
        if self.target.reliable:
            self._onTimerF()
        else:
            self._onTimerE()

    def _send(self):
        d = self._layer._sendMessage(self.request, self.target)
        if not _succeeded(d):
            d.addErrback(self._transportFailed)

    def _onTimerE(self):
        self._timer = None
        clock = self._layer.clock
        if self.state == "trying":
            self._interval = min(2 * self._interval, self._layer.t2)
        else:
            self._interval = self._layer.t2
        now = clock.seconds()
        if now + self._interval < self._deadline:
            self._timer = clock.callLater(self._interval, self._onTimerE)
        else:
            # Timer F comes first (or at the same time: it wins, as it
            # was set first).
            self._timer = clock.callLater(max(0.0, self._deadline - now), self._onTimerF)
        self._send()

    def _onTimerF(self):
        self._timer = None
        if self.state not in ("trying", "proceeding"):
            return
        self._terminate()
        self._finish(Failure(
            TransactionTimeout(
                "no final response to %s from %s:%s:%s within %ss"
                % (
                    self.method,
                    self.target.transport,
                    self.target.host,
                    self.target.port,
                    64 * self._layer.t1,
                )
            )
        ))

    def _transportFailed(self, failure):
        if self.state not in ("trying", "proceeding"):
            # A late failure of a retransmission after the final response.
            return None
        self._terminate()
        if failure.check(TransportFailure):
            error = failure.value
        else:
            error = TransportFailure(failure.getErrorMessage())
        self._finish(Failure(error))
        return None

    def _receiveResponse(self, response):
        code = response.code
        if self.state in ("completed", "terminated"):
            # Timer K: absorb retransmissions of the final response.
            return
        if code < 200:
            self.state = "proceeding"
            return
        self.state = "completed"
        self._cancelTimer()
        if self.target.reliable:
            self._terminate()
        else:
            self._layer._timerK.add(self, self._layer.t4)
        # From now on the transaction only absorbs retransmitted responses
        # (Timer K, 5 s): it lets go of what it no longer needs, so that
        # the many completed transactions hold little for the garbage
        # collector to walk.
        self.request = None
        self._finish(response)

    def _finish(self, result):
        """
        Hand the outcome to the transaction user, once: the final
        L{Response}, or a L{Failure} (L{TransactionTimeout},
        L{TransportFailure}).
        """
        notify = self._notify
        if notify is None:
            return
        self._notify = None
        self.deferred = None
        _notifyUser(notify, result, self.method)

    def _expired(self):
        if self.state == "completed":
            self._onTimerK()

    def _onTimerK(self):
        self._terminate()

    def _cancel(self, deferred):
        # The caller cancelled the Deferred: stop everything; the Deferred
        # then fails with CancelledError.
        self._terminate()

    def _cancelTimer(self):
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()

    def _terminate(self):
        self._cancelTimer()
        self.state = "terminated"
        self._layer._removeClient(self)


class TransactionLayer:
    """
    The non-INVITE transaction layer of RFC 3261 section 17.

    @ivar requestHandler: set by the transaction user; called as
        C{requestHandler(request, serverTransaction)} once per new server
        transaction. If it raises before answering, the layer answers 500.
        While it is L{None}, requests are answered 503.
    @ivar clock: the L{IReactorTime} provider all timers run on.
    @ivar transport: the transport (see the module docstring).
    @ivar t1: RFC 3261 T1 (RTT estimate), seconds.
    @ivar t2: RFC 3261 T2 (maximum retransmit interval), seconds.
    @ivar t4: RFC 3261 T4 (maximum time a message stays in the network).
    @ivar maxTransactions: bound on the server transactions and on the
        client transactions in progress at once (not counting those that
        only wait out Timer J or K after their final response). New requests
        beyond it are answered 503 with C{Retry-After}; new client
        transactions fail with L{TransportFailure}.
    @ivar maxCompleted: bound on the server transactions waiting out Timer
        J, and on the client transactions waiting out Timer K (UDP). Beyond
        it the oldest one ends early. A completed transaction holds about
        4 KB, so the default (20,000) bounds that memory to about 80 MB; it
        covers the full 64*T1 up to about 600 messages per second over UDP
        and, at 10,000 per second, the first 2 s, in which a client's first
        three retransmissions fall.
    @ivar serverTimeout: how long a server transaction waits for its final
        response before it is forgotten (default 64*T1, when the client has
        given up anyway).
    """

    def __init__(
        self,
        clock,
        transport,
        t1=0.5,
        t2=4.0,
        t4=5.0,
        maxTransactions=10000,
        serverTimeout=None,
        maxCompleted=20000,
    ):
        if not (t1 > 0 and t2 >= t1 and t4 > 0):
            raise ValueError("invalid SIP timers T1=%r T2=%r T4=%r" % (t1, t2, t4))
        self.clock = clock
        self.transport = transport
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.maxTransactions = maxTransactions
        self.serverTimeout = 64 * t1 if serverTimeout is None else serverTimeout
        self.requestHandler = None
        self._servers = {}
        self._serverByIdent = {}
        self._clients = {}
        self._viaTemplates = {}
        self._timerJ = _ExpiryQueue(clock, maxCompleted)
        self._timerK = _ExpiryQueue(clock, maxCompleted)
        # The waits that nearly always end early, one timer per kind.
        self._abandonQueue = _DeadlineQueue(clock)
        self._firstTimerE = _DeadlineQueue(clock)
        self._firstTimerF = _DeadlineQueue(clock)

    @property
    def maxCompleted(self):
        return self._timerJ.limit

    @maxCompleted.setter
    def maxCompleted(self, value):
        self._timerJ.limit = self._timerK.limit = value

    def stop(self):
        """
        Forget every transaction and cancel every timer (at shutdown).
        Pending client transactions fail with L{TransportFailure}; server
        transactions are dropped without a response.
        """
        self._timerJ.clear()
        self._timerK.clear()
        self._abandonQueue.clear()
        self._firstTimerE.clear()
        self._firstTimerF.clear()
        for txn in list(self._servers.values()):
            txn._terminate()
        for txn in list(self._clients.values()):
            if txn.state in ("trying", "proceeding"):
                txn._transportFailed(Failure(TransportFailure("the SIP stack is stopping")))
            else:
                txn._terminate()

    # -- the transport side

    def receive(self, message, source):
        """
        Entry point for the transport: a parsed message from C{source}.

        @type message: L{Request} or L{Response}
        @type source: L{Source}
        """
        try:
            via = topVia(message)
        except Exception as e:
            log.info("Dropping a SIP message from {source} with no usable Via: {e}", source=source, e=e)
            return
        if message.isRequest:
            self._receiveRequest(message, source, via)
        else:
            self._receiveResponse(message, source, via)

    def _sendMessage(self, message, destination):
        """
        Hand C{message} to the transport.

        @return: what the transport's C{send} returned: L{None} when the
            message went out at once, or a Deferred (see the module
            docstring; L{_succeeded} tells whether it needs an errback).
        """
        try:
            return self.transport.send(message, destination)
        except Exception:
            # A transport must not raise, but if it does, the transaction
            # must still end cleanly.
            return _failed(Failure())

    # -- server transactions

    def _receiveRequest(self, request, source, via):
        method = request.method
        if method == "ACK":
            # No INVITE transactions here: an ACK is never answered.
            log.debug("Ignoring ACK from {source}", source=source)
            return
        ident = _serverIdent(request, via)
        key = ident + (method,)
        txn = self._servers.get(key)
        if txn is not None:
            txn._retransmission()
            return
        if len(self._servers) - len(self._timerJ) >= self.maxTransactions:
            log.warn(
                "Too many SIP server transactions ({n}); answering {method} from {source} with 503",
                n=len(self._servers),
                method=method,
                source=source,
            )
            self._sendStateless(
                makeResponse(request, 503, headers=[("Retry-After", "5")]), source
            )
            return
        txn = ServerTransaction(self, key, ident, request, source)
        self._servers[key] = txn
        if method == "CANCEL":
            self._answerCancel(txn)
            return
        self._serverByIdent[ident] = txn
        self._abandonQueue.add(txn, self.clock.seconds(), self.serverTimeout)
        handler = self.requestHandler
        if handler is None:
            log.warn("No SIP request handler; answering {method} with 503", method=method)
            txn.respond(makeResponse(request, 503, headers=[("Retry-After", "5")]))
            return
        try:
            handler(request, txn)
        except Exception:
            log.failure("The SIP request handler failed on {method}", method=method)
            if txn.state in ("trying", "proceeding"):
                txn.respond(makeResponse(request, 500))

    def _answerCancel(self, txn):
        original = self._serverByIdent.get(txn.ident)
        if original is None:
            txn.respond(makeResponse(txn.request, 481))
            return
        toTag = None
        if original.lastResponse is not None:
            toTag = _tagOf(original.lastResponse.headers.get("To") or "")
        txn.respond(makeResponse(txn.request, 200, toTag=toTag))

    def _sendStateless(self, response, source):
        d = self._sendMessage(response, source)
        if _succeeded(d):
            return
        d.addErrback(
            lambda f: log.warn(
                "Could not send {code} to {source}: {reason}",
                code=response.code,
                source=source,
                reason=f.getErrorMessage(),
            )
        )

    def _removeServer(self, txn):
        if self._servers.get(txn.key) is txn:
            del self._servers[txn.key]
        if self._serverByIdent.get(txn.ident) is txn:
            del self._serverByIdent[txn.ident]

    # -- client transactions

    def sendRequest(self, request, target, notify=None):
        """
        Start a client transaction: add the top Via (a fresh C{z9hG4bK}
        branch and C{rport}) and send C{request} to C{target}.

        @type request: L{Request} (not modified; a copy with the Via is sent)
        @type target: L{Target}
        @param notify: L{None}, or a callable called once, as
            C{notify(result)}, with what the Deferred would have fired
            with: the final L{Response}, or a L{Failure} of
            L{TransactionTimeout} or L{TransportFailure} (possibly before
            C{sendRequest} returns). With it there is no Deferred (the
            router's path saves its cost per message) and no cancelling.
        @return: a Deferred firing with the final L{Response} (1xx are not
            passed on), or failing with L{TransactionTimeout} (Timer F) or
            L{TransportFailure}. Cancelling it ends the transaction.
            L{None} when C{notify} is given.
        """
        if not isinstance(request, Request):
            raise TypeError("sendRequest() needs a Request, not %r" % (request,))
        if not isinstance(target, Target):
            raise TypeError("sendRequest() needs a Target, not %r" % (target,))
        if request.method in ("INVITE", "ACK"):
            raise ValueError("this transaction layer does not do %s" % (request.method,))
        if len(self._clients) - len(self._timerK) >= self.maxTransactions:
            failure = Failure(TransportFailure("too many SIP client transactions (%d)" % (len(self._clients),)))
            if notify is not None:
                _notifyUser(notify, failure, request.method)
                return None
            return _failed(failure)
        branch = self._newBranch()
        while branch in self._clients:
            branch = self._newBranch()
        host, port = self.transport.localAddress(target.transport)
        prefix, template = self._viaPrefix(target.transport, host, port)
        # _VIA_FORMAT with this branch.
        via = prefix + branch + ";rport"
        if template is not False:
            # Spare the transport the parsing of the Via just written: it
            # parses to the template with this branch (a branch is a
            # token, which the parser keeps as it is).
            _keepVias(via, (_fastReplace(template, params=(("branch", branch), ("rport", None))),))
        headers = _headersOf([("Via", via)] + request.headers._items)
        outgoing = _newRequest(request.method, request.uri, headers, _checkBody(request.body))
        txn = ClientTransaction(self, outgoing, target, branch, notify)
        self._clients[branch] = txn
        d = txn.deferred
        txn._start()
        return d

    def _newBranch(self):
        return MAGIC_COOKIE + randomHex(12)

    def _viaPrefix(self, transport, host, port):
        """
        The top Via of the requests sent from the local address C{host},
        C{port} over C{transport}, worked out once per local address.

        @return: C{(prefix, template)}: the text of L{_VIA_FORMAT} up to
            the branch value, and the L{Via} it parses to with the branch
            C{MAGIC_COOKIE} (L{False} if it does not parse).
        """
        key = (transport, host, port)
        known = self._viaTemplates.get(key)
        if known is None:
            prefix = _VIA_PREFIX % (transport.upper(), _formatHost(host), port)
            try:
                [template] = parseVia(prefix + MAGIC_COOKIE + ";rport")
            except (SIPParseError, ValueError):
                template = False
            if len(self._viaTemplates) >= 64:
                self._viaTemplates.clear()
            known = self._viaTemplates[key] = (prefix, template)
        return known

    def _receiveResponse(self, response, source, via):
        txn = self._clients.get(via.branch)
        _number, method = _cseq(response)
        if txn is None or method != txn.method:
            log.info(
                "Dropping a stray {code} response from {source} (branch {branch}, CSeq {cseq})",
                code=response.code,
                source=source,
                branch=via.branch,
                cseq=response.headers.get("CSeq"),
            )
            return
        txn._receiveResponse(response)

    def _removeClient(self, txn):
        if self._clients.get(txn.branch) is txn:
            del self._clients[txn.branch]


def _succeeded(d):
    """
    Whether the send that returned C{d} has already succeeded: L{None}
    (the transport sent at once), or a Deferred that has already fired
    with a success (as a UDP send does at once). An errback added to it
    would never run.
    """
    return d is None or (d.called and not d.paused and not isinstance(d.result, Failure))


def _notifyUser(notify, result, method):
    """
    Call the C{notify} of L{TransactionLayer.sendRequest} with C{result}.
    An exception of it (a bug of the transaction user) is logged, as a
    Deferred would keep it from the code that fired it (the transport
    that received the response, a timer).
    """
    try:
        notify(result)
    except Exception:
        log.failure("Passing on the outcome of a {method} transaction failed",
                    method=method)


def _failed(failure):
    d = Deferred()
    d.errback(failure)
    return d
