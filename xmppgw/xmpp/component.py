# -*- test-case-name: tests.test_component -*-
"""
The XEP-0114 component link: connect, handshake, reconnect with back-off.

L{ComponentLink} is the XMPP transport of component mode. It connects to the
XMPP server's component port as the gateway's domain, performs the
C{jabber:component:accept} handshake and keeps the link up: when the server
is down, restarts, refuses the handshake (wrong password), or refuses the
name (C{<conflict/>}, C{<host-unknown/>}), it logs one clear line saying why
and tries again after an exponential back-off with jitter.

It is a L{wokkel.subprotocols.StreamManager}, so protocol handlers attach
with C{handler.setHandlerParent(link)} as usual. It differs from
L{wokkel.component.Component} on purpose:

 - the reactor (L{IReactorTCP} and L{IReactorTime}) is injected, for the
   connection and for every timer;
 - a refused handshake does not stop the service: it is logged and retried;
 - the back-off delay is reset only after a successful handshake, not when
   the TCP connection is made, so a wrong password cannot cause a tight
   reconnect loop;
 - L{ComponentLink.send} never queues: while the link is not authenticated
   it raises L{LinkDown} (fire-and-forget, for error bounces and presence);
 - L{ComponentLink.deliver} is the confirmed path (project decision 12,
   issue 5): see "Confirmed delivery" below;
 - the C{from} of outgoing stanzas is not rewritten: the caller sets it.

Confirmed delivery
==================

XEP-0114 has no acknowledgement: a stanza written to the socket may still be
lost (the server stopped before reading it) or sit in a hung server's socket
buffer. L{ComponentLink.deliver} therefore confirms every stanza with a
round trip through the server. After the writes of one reactor turn (a
batch) the link writes one C{<iq type='get'><ping xmlns='urn:xmpp:ping'/>}
from and to its own domain, unless such a ping is still out: then the
stanzas written meanwhile wait for its answer and share the next ping (one
ping in flight at a time). The server routes it back over the same ordered
stream (checked with Prosody 0.12: a component's iq to its own domain comes
back to it unchanged), so when it returns, the server's router has taken
every stanza written before it; their Deferreds fire then. Any answer with
that id (the iq itself, or a C{result}/C{error} from a server that answers
instead of routing) confirms: it proves the server read the stream up to
the ping.

 - Not authenticated: stanzas queue (FIFO, at most C{queueLimit}) and go out
   after the next handshake. Cancelling the Deferred of a queued stanza
   withdraws it: it is never written.
 - At most C{windowLimit} stanzas are written and unconfirmed at once; more
   queue until confirmations arrive.
 - No answer to a ping within C{confirmTimeout}: the link is I{unconfirmed}.
   Every written, unconfirmed stanza fails with L{ConfirmTimeout} (SIP 504:
   the XMPP server did not answer in time; it B{may} still deliver them if
   it resumes, so 504, not 503, which would invite a retry and a duplicate).
   Nothing more is written (new stanzas queue, so a hung server's socket
   buffer grows by one probe ping per C{confirmTimeout} at most) until a
   ping comes back; then writing resumes in order.
 - The connection is lost: written, unconfirmed stanzas fail with
   L{LinkLost} (SIP 504, same uncertainty) and are never written again (a
   resend could deliver twice); queued ones stay queued for the next
   handshake.
 - L{ComponentLink.stopService}: queued stanzas fail with L{LinkStopped}
   (SIP 503); written ones are still confirmed if the server answers
   before it closes the stream.
 - A hung link is not dropped and reconnected: the server's kernel accepts a
   new connection as well, so reconnecting would not help, and the stanzas
   written to the old socket could still be delivered when it resumes.
   C{TCP_USER_TIMEOUT} (keepalive) covers a peer that vanished.

Confirmation modes (C{confirmDelivery}, C{[xmpp] confirm_delivery}):

 - C{"ping"} (default): the ping round trip above.
 - C{"tcp"}: confirmation by TCP acknowledgement, for several instances
   sharing one component domain (the server may route a ping to another
   instance). The link counts the bytes it writes; every C{tcpPollInterval}
   seconds while stanzas are unconfirmed it asks how many of them the peer
   has not acknowledged yet (Twisted's unsent buffer plus the kernel's send
   queue, C{ioctl(TIOCOUTQ)}, Linux only) and confirms each stanza whose
   last byte the peer's TCP has acknowledged. This proves the server's
   kernel has the bytes (a crash of the gateway can no longer lose them),
   not that the server process read them. The same C{confirmTimeout},
   I{unconfirmed} (resumes when the peer has acknowledged everything
   written), L{LinkLost} and queueing rules apply. Where the transport has
   no socket or the ioctl fails, a warning is logged once per connection
   and only Twisted's buffer is counted (confirmed when handed to the
   kernel).
 - C{"kernel"}: confirmation once the stanza's bytes are in the kernel,
   for several instances sharing one component domain. Right after
   writing a stanza, the link hands Twisted's buffer to the kernel itself
   (L{pushToKernel}: the write the reactor would do on its next turn) and
   confirms it; the router's 2xx follows in the same call. A gateway
   killed after that cannot lose the stanza (the kernel still sends it:
   the link sets C{TCP_NODELAY}, so Nagle does not hold it back), and the
   window in which it dies with the stanza sent but the 2xx not (a
   duplicate once the SIP side fails over) is the tens of microseconds
   between the two writes, instead of the peer's delayed ACK (tens of
   milliseconds) in C{"tcp"} mode. What remains buffered (the socket's send buffer is full)
   is checked again every C{tcpPollInterval}, with the same
   C{confirmTimeout}, I{unconfirmed} and L{LinkLost} rules as C{"tcp"}.
   It proves less than C{"tcp"}: a peer host crash can still lose bytes
   its TCP had not acknowledged.
 - C{"none"}: L{ComponentLink.deliver} fires as soon as the stanza is
   written to the transport (Twisted buffers it until the next reactor
   turn, so a gateway killed in between loses an acknowledged stanza).
"""

import itertools
import random
import re
import array
import secrets
import socket
import sys
from collections import OrderedDict, deque

from twisted.application import service
from twisted.internet import abstract, defer
from twisted.internet.abstract import isIPv6Address
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.words.protocols.jabber import component, error, jid
from twisted.words.protocols.jabber import xmlstream
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from twisted.words.xish import domish, utility, xpath
from twisted.words.xish.xmlstream import XmlStreamFactoryMixin
from wokkel.subprotocols import StreamManager

from xmppgw.fastxml import (
    SimpleElement, isHandled, speedUpElementStream, unlinkTree)
from xmppgw.sockio import tuneStream
from xmppgw.safexml import hardenXmlStream

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover (not POSIX)
    fcntl = termios = None

__all__ = [
    "CONFIRM_MODES",
    "ComponentLink",
    "ConfirmTimeout",
    "DeliveryError",
    "LinkDown",
    "LinkLost",
    "LinkQueueFull",
    "LinkStopped",
    "confirmMode",
    "socketUnackedBytes",
]

CONNECTING = "connecting"
HANDSHAKING = "handshaking"
AUTHENTICATED = "authenticated"
DOWN = "down"
STOPPED = "stopped"

#: Every value L{ComponentLink.state} can take.
STATES = (CONNECTING, HANDSHAKING, AUTHENTICATED, DOWN, STOPPED)

_log = Logger()

_HANDSHAKE_CONTENT = re.compile(r"(<handshake(?:\s[^>]*)?>)[^<]+")

NS_PING = "urn:xmpp:ping"

#: The values of C{confirmDelivery} (L{True} and L{False} are aliases of
#: C{"ping"} and C{"none"}).
CONFIRM_MODES = ("ping", "tcp", "kernel", "none")

#: The ioctl giving a TCP socket's bytes not yet acknowledged by the peer
#: (C{TIOCOUTQ} == C{SIOCOUTQ}), or L{None} where it is not known to work on
#: sockets (it does on Linux only).
TIOCOUTQ = (
    getattr(termios, "TIOCOUTQ", None)
    if termios is not None and sys.platform.startswith("linux") else None)

#: How many ping ids of an unconfirmed link are remembered (a late answer
#: to any of them resumes the link).
MAX_PROBES = 16


class LinkDown(Exception):
    """
    The component link is not authenticated, so nothing can be sent now.
    """


class DeliveryError(Exception):
    """
    A stanza given to L{ComponentLink.deliver} was not confirmed.

    The attributes follow L{xmppgw.xmpp.server.S2SError}, which the router
    reads (L{xmppgw.router.MessageRouter._deliver}).

    @ivar condition: the XMPP stanza error condition for a bounce.
    @ivar errorType: its error type.
    @ivar sipCode: the SIP final response for a MESSAGE not yet answered.
    """

    condition = "remote-server-timeout"
    errorType = "wait"
    sipCode = 503


class LinkQueueFull(DeliveryError):
    """
    Too many stanzas wait for the link (503); never written.
    """

    condition = "resource-constraint"


class LinkStopped(DeliveryError):
    """
    The link was stopped before the stanza was written (503).
    """


class ConfirmTimeout(DeliveryError):
    """
    The stanza was written but the server did not confirm it in time (504):
    it may or may not be delivered.
    """

    sipCode = 504


class LinkLost(DeliveryError):
    """
    The connection was lost after the stanza was written and before the
    server confirmed it (504): it may or may not have been delivered.
    """

    sipCode = 504


class _Entry:
    """
    A stanza given to L{ComponentLink.deliver}.

    @ivar notify: called once with the outcome (L{None}, or a L{Failure}):
        the Deferred's C{callback}, or the caller's C{notify}; L{None} once
        called (L{_settle}).
    """

    __slots__ = ("stanza", "link", "notify", "written", "end", "deadline")

    def __init__(self, stanza, link, notify):
        self.stanza = stanza
        self.link = link
        self.notify = notify
        self.written = False
        # "tcp" mode: the link's byte count after the stanza, and when its
        # confirmation times out.
        self.end = 0
        self.deadline = None

    def cancel(self):
        """
        What cancelling the Deferred of L{ComponentLink.deliver} does, for
        a delivery made with C{notify}: a queued stanza is withdrawn (a
        written one cannot be), and C{notify} gets a L{CancelledError
        <defer.CancelledError>} unless it already had the outcome.
        """
        if self.notify is None:
            return
        self.link._cancelEntry(self)
        _settle(self, Failure(defer.CancelledError()))


def _refuse(notify, exception):
    """
    The outcome of a delivery refused at once: a failed Deferred, or
    C{notify} called with the L{Failure} (and L{None} returned).
    """
    if notify is None:
        return defer.fail(exception)
    _notify(notify, Failure(exception))
    return None


def _settle(entry, result):
    """
    Pass the outcome of C{entry} (L{None}, or a L{Failure}) on, once.
    """
    notify = entry.notify
    if notify is not None:
        entry.notify = None
        _notify(notify, result)


def _notify(notify, result):
    """
    C{notify(result)}. An exception of it (a bug of the caller) is logged,
    as a Deferred would keep it from the code that fired it: the other
    stanzas of the same confirmation still get theirs.
    """
    try:
        notify(result)
    except Exception:
        _log.failure("Passing on the outcome of a stanza delivery failed")


class _Ping:
    """
    A confirmation ping in flight and the stanzas written before it.

    @ivar due: the clock time at which it times out
        (L{ComponentLink._pingsDue}), or L{None} once it no longer can
        (timed out, or outlived by another that timed out).
    """

    __slots__ = ("entries", "due")

    def __init__(self, entries, due):
        self.entries = entries
        self.due = due


def confirmMode(value):
    """
    Normalize a C{confirmDelivery} value.

    @param value: C{"ping"}, C{"tcp"}, C{"none"}, L{True} (C{"ping"}) or
        L{False} (C{"none"}).
    @return: one of L{CONFIRM_MODES}.
    @raise ValueError: for any other value.
    """
    if value is True:
        return "ping"
    if value is False:
        return "none"
    if isinstance(value, str) and value in CONFIRM_MODES:
        return value
    raise ValueError(
        'confirmDelivery must be "ping", "tcp", "kernel", "none", true or '
        'false, not %r' % (value,))


def transportBuffered(transport):
    """
    The bytes written to a Twisted transport and not yet handed to the
    kernel (L{twisted.internet.abstract.FileDescriptor}'s C{dataBuffer}
    from C{offset}, plus C{_tempDataBuffer}); C{0} for a transport without
    these buffers.
    """
    dataBuffer = getattr(transport, "dataBuffer", None)
    if not isinstance(dataBuffer, bytes):
        return 0
    return (len(dataBuffer) - getattr(transport, "offset", 0)
            + getattr(transport, "_tempDataLen", 0))


def pushToKernel(transport):
    """
    Hand what Twisted has buffered for C{transport} to the kernel now, as the
    reactor would on its next turn (C{"kernel"} mode: the 2xx follows at
    once, so a gateway crash between the two is a short window).

    Only a L{twisted.internet.abstract.FileDescriptor} that is connected,
    not closing and without a producer is pushed; for anything else this
    does nothing and the reactor writes as usual. A write error is left for
    the reactor to find (the descriptor stays registered for writing).
    """
    if (not isinstance(transport, abstract.FileDescriptor)
            or not isinstance(getattr(transport, "dataBuffer", None), bytes)
            or not getattr(transport, "connected", False)
            or getattr(transport, "disconnecting", True)
            or getattr(transport, "_writeDisconnecting", True)
            or getattr(transport, "producer", None) is not None
            or not transportBuffered(transport)):
        return
    transport.doWrite()


def kernelUnacked(transport):
    """
    The bytes in a TCP socket's send queue that the peer has not
    acknowledged (C{ioctl(TIOCOUTQ)}, Linux).

    @return: the count, or L{None} if it cannot be known (no ioctl on this
        platform, no socket, or the ioctl failed).
    """
    if TIOCOUTQ is None or fcntl is None:
        return None
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    try:
        fd = getHandle().fileno()
        buf = array.array("i", [0])
        fcntl.ioctl(fd, TIOCOUTQ, buf, True)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return buf[0]


def socketUnackedBytes(transport):
    """
    The bytes written to C{transport} that the peer's TCP has not
    acknowledged: Twisted's unsent buffer plus the kernel's send queue.

    @return: the count, or L{None} if the kernel's part cannot be known.
    """
    kernel = kernelUnacked(transport)
    if kernel is None:
        return None
    return transportBuffered(transport) + kernel


def _hostPort(host, port):
    """
    Format a host and port for log messages (IPv6 literals in brackets).
    """
    if isIPv6Address(host):
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def _redactHandshake(data):
    """
    Hide the handshake digest in a traffic log line.

    The digest is SHA-1 over the (visible) stream id and the shared secret,
    so logging it would allow an offline guess of the secret.
    """
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return _HANDSHAKE_CONTENT.sub(r"\1[redacted]", data)


def _nameOnly(query):
    """
    What an observer's XPath query needs of a top-level element's name.

    @param query: an L{xpath.XPathQuery} (or anything an observer was
        registered with).
    @return: C{(name, exact)}: C{name} is the element name the query
        requires (it cannot match an element of any other name), or L{None}
        when it may match any name (C{/*}, C{//x}, a subclass with its own
        C{matches}); C{exact} is L{True} when matching C{name} is all the
        query tests, so it need not be evaluated.
    """
    if type(query) is not xpath.XPathQuery:
        return None, False
    location = query.baseLocation
    if type(location) is not xpath._Location or location.elementName is None:
        return None, False
    return location.elementName, (
        not location.predicates and location.childLocation is None)


class LinkXmlStream(xmlstream.XmlStream):
    """
    The gateway's XML stream, the component link's and (since round 27)
    each S2S stream of server mode (L{xmppgw.xmpp.server}): a
    L{xmlstream.XmlStream} with shortcuts for the per-stanza work, all
    with the same results.

     - Element dispatch (L{dispatch} without an event name) visits only the
       observers whose XPath query can match the element's name, in the
       order L{utility.EventDispatcher.dispatch} calls them (priority, then
       registration), with the same C{onetime}, exception (logged, the other
       observers still called) and deferred add/remove rules. Twisted's
       dispatcher evaluates every observer's query on every stanza
       (C{/iq[@type="result"]}, C{/iq[@type="error"]}, C{/presence}, the
       stream error's, ... for each C{<message/>}); here the list for each
       name is built once and rebuilt after any observer change. Named
       events go to Twisted's dispatcher unchanged.
     - The parser builds elements with the handlers of
       L{xmppgw.fastxml.speedUpElementStream}.
     - L{send} writes text and the simple stanzas of
       L{xmppgw.fastxml.SimpleElement} (also those in the stream's own
       namespace, as server mode puts its stanzas in C{jabber:server})
       without the generic element checks;
       the bytes, the C{rawDataOutFn} call (traffic log, byte count) and the
       transport write are those of L{xmlstream.XmlStream.send}.
    """

    def __init__(self, *args, **kwargs):
        # Before the base class: the authenticator may add observers.
        self._plans = {}
        self._plansFor = None
        xmlstream.XmlStream.__init__(self, *args, **kwargs)

    def _initializeStream(self):
        """
        A new parser (L{xmlstream.XmlStream._initializeStream}) with the
        faster handlers of L{speedUpElementStream}.
        """
        xmlstream.XmlStream._initializeStream(self)
        if type(self.stream) is domish.ExpatElementStream:
            speedUpElementStream(self.stream)

    def _addObserver(self, onetime, event, observerfn, priority, *args,
                     **kwargs):
        self._plans.clear()
        xmlstream.XmlStream._addObserver(
            self, onetime, event, observerfn, priority, *args, **kwargs)

    def removeObserver(self, event, observerfn):
        self._plans.clear()
        xmlstream.XmlStream.removeObserver(self, event, observerfn)

    def _plan(self, name):
        """
        The observers an element called C{name} may match, in dispatch order:
        C{(priority, query, callbackList, exact)} tuples.
        """
        observers = self._xpathObservers
        if self._plansFor is not observers:
            self._plans.clear()
            self._plansFor = observers
        plan = []
        for priority in sorted(observers, reverse=True):
            for query, callbacks in observers[priority].items():
                required, exact = _nameOnly(query)
                if required is None or required == name:
                    plan.append((priority, query, callbacks, exact))
        plan = tuple(plan)
        self._plans[name] = plan
        return plan

    def dispatch(self, obj, event=None):
        """
        Dispatch an event (L{utility.EventDispatcher.dispatch}); an element
        goes only to the observers whose query can match its name.
        """
        if event is not None:
            return xmlstream.XmlStream.dispatch(self, obj, event)
        name = obj.name
        plan = self._plans.get(name)
        if plan is None or self._plansFor is not self._xpathObservers:
            plan = self._plan(name)
        foundTarget = False
        self._dispatchDepth += 1
        emptyLists = None
        try:
            for priority, query, callbacks, exact in plan:
                if not exact and not query.matches(obj):
                    continue
                foundTarget = True
                if type(callbacks) is not utility.CallbackList:
                    callbacks.callback(obj)
                else:
                    table = callbacks.callbacks
                    for key, (wrapper, onetime) in list(table.items()):
                        try:
                            if (type(wrapper) is utility._MethodWrapper
                                    and not wrapper.args
                                    and not wrapper.kwargs):
                                wrapper.method(obj)
                            else:
                                wrapper(obj)
                        except BaseException:
                            legacyLog.err()
                        if onetime:
                            del table[key]
                if callbacks.isEmpty():
                    if emptyLists is None:
                        emptyLists = []
                    emptyLists.append((priority, query))
        finally:
            if emptyLists is not None:
                self._plans.clear()
                observers = self._xpathObservers
                for priority, query in emptyLists:
                    del observers[priority][query]
            self._dispatchDepth -= 1
        if self._dispatchDepth == 0 and self._updateQueue:
            updates, self._updateQueue = self._updateQueue, []
            for update in updates:
                update()
        return foundTarget

    def send(self, obj):
        """
        Write a stanza or text (L{xmlstream.XmlStream.send}).
        """
        kind = type(obj)
        if kind is SimpleElement:
            text = obj._fastXml(1, self.namespace)
            if text is not None:
                obj = text
                kind = str
        if kind is not str:
            xmlstream.XmlStream.send(self, obj)
            return
        data = obj.encode("utf-8")
        if self.rawDataOutFn:
            self.rawDataOutFn(data)
        self.transport.write(data)


class ComponentLinkFactory(xmlstream.XmlStreamFactory):
    """
    The reconnecting XML stream factory behind a L{ComponentLink}.

    It differs from L{xmlstream.XmlStreamFactory} in three ways. The delay is
    not reset when a TCP connection is made (the link resets it after a
    successful handshake). Connection ends are passed to the link, which
    logs why and then calls L{retry}. The delay is deterministic apart from
    an upward jitter: the n-th consecutive retry waits
    C{min(maxDelay, initialDelay * factor ** (n - 1) * (1 + jitter * r))} with
    C{r} drawn from C{random()} in [0, 1), so it is never below
    C{initialDelay} and never above C{maxDelay}.

    @ivar link: the L{ComponentLink} told about connection ends.
    @ivar random: a callable returning a float in [0, 1) for the jitter.
    """

    protocol = LinkXmlStream
    factor = 2.0
    jitter = 0.1
    noisy = False

    def __init__(self, authenticator, link, clock):
        xmlstream.XmlStreamFactory.__init__(self, authenticator)
        self.link = link
        self.clock = clock
        self.random = random.random

    def buildProtocol(self, addr):
        """
        Build the L{xmlstream.XmlStream}, without resetting the delay.
        """
        return XmlStreamFactoryMixin.buildProtocol(self, addr)

    def clientConnectionFailed(self, connector, reason):
        self.connector = connector
        self.link._connectionEnded(reason, connected=False)

    def clientConnectionLost(self, connector, reason):
        self.connector = connector
        self.link._connectionEnded(reason, connected=True)

    def retry(self, connector=None):
        """
        Schedule the next connection attempt.

        @return: the delay in seconds, or L{None} if no attempt was
            scheduled because the factory was told to stop trying.
        @raise ValueError: if there is no connector to retry with.
        """
        if not self.continueTrying:
            return None
        if connector is None:
            if self.connector is None:
                raise ValueError("no connector to retry")
            connector = self.connector
        if self._callID is not None and self._callID.active():
            # Already scheduled: never two pending attempts.
            return self._callID.getTime() - self.clock.seconds()

        self.retries += 1
        base = max(self.initialDelay, min(self.delay, self.maxDelay))
        delay = base * (1 + self.jitter * self.random())
        delay = max(self.initialDelay, min(delay, self.maxDelay))

        def reconnector():
            self._callID = None
            self.link._reconnecting()
            connector.connect()

        self._callID = self.clock.callLater(delay, reconnector)
        self.delay = min(base * self.factor, self.maxDelay)
        return delay


class ComponentLink(StreamManager, service.Service):
    """
    An XEP-0114 external component connection that stays up.

    Handlers get C{makeConnection} when the TCP connection is made,
    C{connectionInitialized} only after the server accepted the handshake,
    and C{connectionLost} when the connection ends.

    Keepalive: while authenticated, a single space (whitespace ping, allowed
    between stanzas) is written every C{keepAliveInterval} seconds, and the
    socket gets C{TCP_USER_TIMEOUT} of C{keepAliveTimeout} seconds where the
    platform has it (Linux). This detects a peer that vanished without
    closing the connection (host down, network cut, NAT or firewall state
    dropped): the kernel gets no acknowledgement for the space, closes the
    connection after C{keepAliveTimeout} (elsewhere after the system's TCP
    retransmission timeout, often many minutes), and the link reconnects. It
    also keeps NAT/firewall state and server idle timers from expiring. It
    does B{not} detect an XMPP server process that is hung while its kernel
    still acknowledges TCP data: the whitespace gets no answer at the XMPP
    level, so nothing can tell. A server that stops or restarts cleanly
    closes the connection and is noticed at once, keepalive or not.

    @ivar host: the XMPP server host (C{xmpp_host}).
    @ivar port: the XMPP server component port (C{xmpp_port}).
    @ivar domain: the component's domain (C{xmpp_domain}).
    @ivar state: one of C{"connecting"}, C{"handshaking"},
        C{"authenticated"}, C{"down"} (waiting to retry) and C{"stopped"}.
    @ivar reconnects: how many connection attempts were made after the first
        since the service started.
    @ivar authFailures: how many handshakes the server refused (wrong
        password, or the stream closed after the handshake was sent).
    @ivar conflicts: how many times the server refused or dropped the link
        with a C{<conflict/>} stream error.
    @ivar lastError: a short text for the last failure, or L{None} after a
        successful handshake.
    @ivar onStateChange: callables called with the new state after each
        change of L{state}.
    @ivar stableInterval: an authenticated link lost sooner than this many
        seconds after its handshake does not reset the back-off (a server
        that accepts and then drops the link at once, or two gateways kicking
        each other out with C{<conflict/>}, cannot cause a fast loop).
    @ivar closeTimeout: seconds L{stopService} waits for the server to close
        the stream before dropping the connection.
    @ivar factory: the L{ComponentLinkFactory}.
    @ivar confirmTimeout: seconds a confirmation ping may take (see the
        module docstring, "Confirmed delivery").
    @ivar queueLimit: the most stanzas L{deliver} queues (not yet written).
    @ivar windowLimit: the most stanzas written and not yet confirmed.
    @ivar unconfirmed: L{True} while a confirmation timed out and no ping
        came back since: L{deliver} queues and writes nothing.
    @ivar confirmDelivery: the confirmation mode: C{"ping"}, C{"tcp"},
        C{"kernel"} or C{"none"} (module docstring, "Confirmation modes").
    @ivar confirmStats: counters: C{written}, C{confirmed}, C{pings},
        C{timedOut}, C{lost}, C{cancelled}, C{refused}.
    """

    connectTimeout = 30
    closeTimeout = 5.0
    #: C{"tcp"} mode: seconds between checks of the peer's acknowledgements
    #: while stanzas are unconfirmed (none while idle).
    tcpPollInterval = 0.002
    #: C{"tcp"} mode: seconds between checks while the link is
    #: I{unconfirmed} (waiting for a hung peer to acknowledge again).
    tcpProbeInterval = 0.1
    #: The most bytes of one stanza from the server (C{[policy]
    #: stanza_max_size}); a larger one, or any DOCTYPE, entity declaration,
    #: comment or processing instruction, drops the connection
    #: (L{xmppgw.safexml}).
    maxStanzaSize = 65536

    def __init__(
        self,
        host,
        port,
        domain,
        password,
        reactor=None,
        initialDelay=1.0,
        maxDelay=60.0,
        logTraffic=False,
        keepAliveInterval=60.0,
        keepAliveTimeout=None,
        connectTimeout=30,
        confirmTimeout=5.0,
        queueLimit=10000,
        windowLimit=1000,
        confirmDelivery="ping",
        unackedBytes=None,
    ):
        """
        @param host: the XMPP server host name or address.
        @type host: L{str}
        @param port: the XMPP server's component port.
        @type port: L{int}
        @param domain: the component's domain, as the server knows it.
        @type domain: L{str}
        @param password: the shared secret for the handshake.
        @type password: L{str}
        @param reactor: an L{IReactorTCP} and L{IReactorTime} provider; the
            global reactor if L{None}.
        @param initialDelay: seconds before the first retry.
        @param maxDelay: the longest delay between retries, in seconds.
        @param logTraffic: log every byte sent and received (the handshake
            digest is redacted).
        @param keepAliveInterval: seconds between whitespace pings while
            authenticated; C{0} turns the keepalive off.
        @param keepAliveTimeout: seconds of unacknowledged data after which
            the kernel drops the connection (C{TCP_USER_TIMEOUT}); default
            twice C{keepAliveInterval}.
        @param connectTimeout: seconds to wait for the TCP connection.
        @param confirmTimeout: seconds the server has to confirm the stanzas
            given to L{deliver} (C{[xmpp] confirm_timeout}).
        @param queueLimit: the most stanzas L{deliver} keeps queued.
        @param windowLimit: the most stanzas written and unconfirmed at once.
        @param confirmDelivery: C{"ping"} (or L{True}, the default):
            confirm each batch with a ping routed back through the server;
            C{"tcp"}: confirm each stanza once the server's TCP has
            acknowledged its last byte; C{"kernel"}: once its bytes are in
            the kernel (pushed right after the write); C{"none"}
            (or L{False}): L{deliver} fires as soon as the stanza is
            written. C{"tcp"}, C{"kernel"} and C{"none"} are for several
            instances sharing one component domain, where
            the server may route the ping to another instance (module
            docstring, "Confirmation modes").
        @param unackedBytes: for C{"tcp"}: a callable taking the transport
            and returning how many bytes written to it the peer has not
            acknowledged, or L{None} if unknown; default
            L{socketUnackedBytes}.
        @raise ValueError: if an argument is out of range or malformed, or
            C{"tcp"} is asked for where C{TIOCOUTQ} is not available
            (not Linux) and no C{unackedBytes} is given.
        @raise TypeError: if an argument has the wrong type.
        """
        confirmDelivery = confirmMode(confirmDelivery)
        if confirmDelivery == "tcp" and unackedBytes is None:
            if TIOCOUTQ is None:
                raise ValueError(
                    'confirmDelivery "tcp" needs ioctl(TIOCOUTQ) on TCP '
                    "sockets (Linux); this platform (%s) does not have it"
                    % (sys.platform,))
            unackedBytes = socketUnackedBytes
        if confirmDelivery == "kernel" and unackedBytes is None:
            unackedBytes = transportBuffered
        if not isinstance(host, str) or not host:
            raise ValueError("xmpp_host must be a non-empty string")
        if (
            not isinstance(port, int)
            or isinstance(port, bool)
            or not 0 < port < 65536
        ):
            raise ValueError("xmpp_port must be an integer 1..65535, not %r" % (port,))
        if not isinstance(domain, str):
            raise TypeError("xmpp_domain must be a string")
        if not domain:
            raise ValueError("xmpp_domain must not be empty")
        try:
            parsed = jid.JID(domain)
        except (jid.InvalidFormat, UnicodeError) as e:
            raise ValueError("xmpp_domain %r is not a valid domain: %s" % (domain, e))
        if parsed.user is not None or parsed.resource is not None:
            raise ValueError(
                "xmpp_domain %r must be a bare domain (no '@' or '/')" % (domain,)
            )
        if not isinstance(password, str):
            raise TypeError("xmpp_password must be a string")
        if not password:
            raise ValueError("xmpp_password must not be empty")
        if not 0 < initialDelay <= maxDelay:
            raise ValueError(
                "reconnect delays must satisfy 0 < initial (%r) <= max (%r)"
                % (initialDelay, maxDelay)
            )
        if keepAliveInterval < 0:
            raise ValueError("keepAliveInterval must be >= 0")
        if keepAliveTimeout is None:
            keepAliveTimeout = 2 * keepAliveInterval
        if keepAliveTimeout < 0:
            raise ValueError("keepAliveTimeout must be >= 0")
        if not connectTimeout > 0:
            raise ValueError("connectTimeout must be > 0")
        if not confirmTimeout > 0:
            raise ValueError("confirmTimeout must be > 0")
        for name, value in (("queueLimit", queueLimit), ("windowLimit", windowLimit)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError("%s must be an integer >= 1, not %r" % (name, value))

        if reactor is None:
            from twisted.internet import reactor

        self.host = host
        self.port = port
        self.domain = parsed.host
        self.keepAliveInterval = keepAliveInterval
        self.keepAliveTimeout = keepAliveTimeout
        self.connectTimeout = connectTimeout
        self.stableInterval = maxDelay

        authenticator = component.ConnectComponentAuthenticator(self.domain, password)
        factory = ComponentLinkFactory(authenticator, self, reactor)
        factory.initialDelay = initialDelay
        factory.delay = initialDelay
        factory.maxDelay = maxDelay
        factory.addBootstrap(xmlstream.STREAM_START_EVENT, self._streamStarted)
        factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT, self._streamError)
        StreamManager.__init__(self, factory, reactor)
        self.logTraffic = logTraffic

        self.state = STOPPED
        self.reconnects = 0
        self.authFailures = 0
        self.conflicts = 0
        self.lastError = None
        self.onStateChange = []

        self._connector = None
        self._headerReceived = False
        self._failure = None
        self._authTime = None
        self._delayBeforeAuth = None
        self._keepAlive = None
        self._closeTimer = None
        self._closeWaiters = []

        self.confirmTimeout = confirmTimeout
        self.confirmDelivery = confirmDelivery
        self.queueLimit = queueLimit
        self.windowLimit = windowLimit
        self.unconfirmed = False
        self.confirmStats = dict.fromkeys(
            ("written", "confirmed", "pings", "timedOut", "lost", "cancelled",
             "refused"), 0)
        self._stopping = False
        self._queue = deque()
        self._batch = []
        self._pings = OrderedDict()
        # The one timer of the pings' timeouts (_pingsDue).
        self._pingTimer = None
        self._inFlight = 0
        self._flushCall = None
        # "tcp" mode.
        self._unackedBytes = unackedBytes
        self._bytesOut = 0
        self._tcpEntries = deque()
        self._tcpPoll = None
        self._tcpResumeAt = None
        self._tcpFallbackLogged = False
        # One random prefix per link (instances sharing a component domain
        # never take each other's pings), then a counter: drawing random
        # bytes for each ping was one system call per ping.
        pingPrefix = "xmppgw-confirm-%s-" % (secrets.token_hex(4),)
        self._pingIDs = ("%s%d" % (pingPrefix, n) for n in itertools.count(1))
        # The end of every ping after its id, for the domain it was made
        # for (L{_sendPing}).
        self._pingTail = (None, None)

    def __repr__(self):
        return "<ComponentLink %s at %s, %s>" % (
            self.domain,
            _hostPort(self.host, self.port),
            self.state,
        )

    # -- public API --------------------------------------------------------

    @property
    def isAuthenticated(self):
        """
        L{True} when the server accepted the handshake and the stream is up.
        """
        return self._initialized and self.xmlstream is not None

    def send(self, obj):
        """
        Write a stanza to the authenticated stream.

        @param obj: the stanza; its C{from} must be set by the caller (the
            component's domain or an address at it, XEP-0114).
        @type obj: L{domish.Element}
        @raise LinkDown: if the link is not authenticated; nothing is queued.
        @raise TypeError: if C{obj} is not an element.
        @raise ValueError: if the stanza has no C{from}.
        """
        if not domish.IElement.providedBy(obj):
            raise TypeError("ComponentLink.send takes an element, not %r" % (type(obj),))
        if not obj.getAttribute("from"):
            raise ValueError(
                "a stanza sent on a component link must have a 'from' (XEP-0114)"
            )
        if not self.isAuthenticated:
            raise LinkDown(
                "XMPP component link to %s is %s"
                % (_hostPort(self.host, self.port), self.state)
            )
        self.xmlstream.send(obj)

    def deliver(self, stanza, notify=None):
        """
        Write a stanza and confirm it with a round trip through the server
        (module docstring, "Confirmed delivery").

        @param stanza: the stanza; its C{from} must be set by the caller.
        @type stanza: L{domish.Element}
        @param notify: L{None}, or a callable called once, as
            C{notify(result)}, with what the Deferred would have fired
            with (L{None}, or a L{Failure}; possibly before C{deliver}
            returns). With it there is no Deferred (the router's path
            saves its cost per message).
        @return: a L{defer.Deferred} firing with L{None} once the server has
            taken the stanza, or failing with a L{DeliveryError}
            (L{LinkQueueFull}, L{LinkStopped}: never written;
            L{ConfirmTimeout}, L{LinkLost}: written, outcome unknown), or
            with L{TypeError}/L{ValueError} for a bad stanza. Cancelling it
            while the stanza is queued withdraws the stanza; once written,
            cancelling only stops the Deferred. With C{notify}: an object
            whose C{cancel()} does the same, or L{None} when C{notify} has
            already had the outcome.
        """
        if not domish.IElement.providedBy(stanza):
            return _refuse(notify, TypeError(
                "ComponentLink.deliver takes an element, not %r" % (type(stanza),)))
        if not stanza.getAttribute("from"):
            return _refuse(notify, ValueError(
                "a stanza sent on a component link must have a 'from' (XEP-0114)"))
        if self._stopping:
            self.confirmStats["refused"] += 1
            return _refuse(notify, LinkStopped("XMPP component link stopped"))
        if notify is None:
            entry = _Entry(stanza, self, None)
            handle = defer.Deferred(lambda d: self._cancelled(entry))
            # Deferred.callback with a Failure runs the errbacks.
            entry.notify = handle.callback
        else:
            entry = handle = _Entry(stanza, self, notify)
        if not self._queue and self._canWrite():
            self._write(entry)
            if notify is not None and entry.notify is None:
                return None  # already settled ("none" mode)
            return handle
        if len(self._queue) >= self.queueLimit:
            self.confirmStats["refused"] += 1
            return _refuse(notify, LinkQueueFull(
                "%d stanzas already wait for the XMPP component link" % (
                    len(self._queue),)))
        self._queue.append(entry)
        return handle

    def queueDepths(self):
        """
        For metrics: C{{"queued": not yet written, "unconfirmed": written
        and waiting for the server's confirmation}}.
        """
        return {"queued": len(self._queue), "unconfirmed": self._inFlight}

    def request(self, request):
        """
        Send an IQ request and track the response (see
        L{StreamManager.request}); fails with L{LinkDown} at once if the
        link is not authenticated.
        """
        if not self.isAuthenticated:
            return defer.fail(
                LinkDown(
                    "XMPP component link to %s is %s"
                    % (_hostPort(self.host, self.port), self.state)
                )
            )
        return StreamManager.request(self, request)

    def startService(self):
        """
        Start connecting to the XMPP server.
        """
        service.Service.startService(self)
        self._stopping = False
        self.factory.resetDelay()
        self._setState(CONNECTING)
        self._connector = self._reactor.connectTCP(
            self.host, self.port, self.factory, timeout=self.connectTimeout
        )
        self.factory.connector = self._connector

    def stopService(self):
        """
        Stop retrying and close the stream cleanly.

        The stream footer is sent and the server gets up to
        L{closeTimeout} seconds to close the connection; then it is dropped.

        @return: a L{Deferred} that fires when the connection is closed (or
            was dropped after L{closeTimeout}).
        """
        service.Service.stopService(self)
        self.factory.stopTrying()
        self._stopKeepAlive()
        self._stopping = True
        queued, self._queue = self._queue, deque()
        for entry in queued:
            self._fail(entry, LinkStopped(
                "XMPP component link stopped before the stanza was sent"))
        xs = self.xmlstream
        self._setState(STOPPED)
        if xs is None or xs.transport is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._closeWaiters.append(d)
        if self._closeTimer is None:
            try:
                xs.sendFooter()
            except Exception:
                _log.failure("Could not send the stream footer")
            self._closeTimer = self._reactor.callLater(
                self.closeTimeout, self._closeTimedOut, xs
            )
        return d

    # -- stream events -----------------------------------------------------

    def _setState(self, state):
        """
        Change L{state} and tell L{onStateChange}.
        """
        if state == self.state:
            return
        self.state = state
        for callback in list(self.onStateChange):
            try:
                callback(state)
            except Exception:
                _log.failure("onStateChange callback {callback!r} failed", callback=callback)

    def _connected(self, xs):
        """
        The TCP connection is up; the stream header is about to be sent.
        """
        self._headerReceived = False
        self._failure = None
        self._authTime = None
        self._bytesOut = 0
        self._tcpFallbackLogged = False
        if self.logTraffic:
            xs.rawDataInFn = self._logDataIn
        # Every byte written through the stream is counted ("tcp" mode).
        xs.rawDataOutFn = self._dataOut
        self.xmlstream = xs
        # Our returning confirmation pings are consumed before the
        # dispatcher (which would try every observer's XPath on each):
        # before wokkel's FallbackHandler and any handler, never answered.
        xs.onElement = self._elementReceived
        if getattr(xs, "stream", None) is not None:
            xs.stream.ElementEvent = self._elementReceived
        hardenXmlStream(xs, self.maxStanzaSize)
        if self.state != STOPPED:
            self._setState(HANDSHAKING)
        self._setUserTimeout(xs)
        # Each stanza goes out at once: Nagle would hold a small write in
        # the kernel behind unacknowledged data, delaying the stanza, and
        # a gateway killed meanwhile with unread input resets the
        # connection and discards it. Reads of a few KB (xmppgw.sockio).
        tuneStream(xs.transport)
        for handler in list(self):
            handler.makeConnection(xs)

    def _logDataIn(self, data):
        _log.info("XMPP RECV: {data}", data=_redactHandshake(data))

    def _logDataOut(self, data):
        _log.info("XMPP SEND: {data}", data=_redactHandshake(data))

    def _dataOut(self, data):
        """
        Bytes about to be written to the transport: count them, and log them
        if L{logTraffic}.
        """
        self._bytesOut += len(data)
        if self.logTraffic:
            self._logDataOut(data)

    def _streamStarted(self, xs):
        """
        The server's stream header arrived; the handshake follows at once.
        """
        self._headerReceived = True

    def _streamError(self, reason):
        """
        Remember why the server ended the stream, for the log line written
        when the connection is gone.
        """
        where = _hostPort(self.host, self.port)
        fields = dict(server=where, domain=self.domain)
        if not reason.check(error.StreamError):
            self._failure = (
                "warn",
                "XMPP server at {server} sent malformed XML: {why}",
                dict(fields, why=reason.getErrorMessage()),
                "malformed XML",
            )
            return
        condition = reason.value.condition
        text = reason.value.text
        fields.update(condition=condition, text=text or "")
        if condition == "not-authorized":
            self.authFailures += 1
            self._failure = (
                "error",
                "XMPP server at {server} refused the component handshake for "
                "{domain!r} (wrong xmpp_password?)",
                fields,
                "handshake refused (not-authorized)",
            )
        elif condition == "conflict":
            self.conflicts += 1
            if self.state == AUTHENTICATED:
                message = (
                    "XMPP server at {server} dropped the link: another "
                    "component connected as {domain!r} and replaced this one "
                    "(conflict)"
                )
            else:
                message = (
                    "XMPP server at {server} refused the link: another "
                    "component is already connected as {domain!r} (conflict)"
                )
            self._failure = ("error", message, fields, "conflict")
        elif condition == "host-unknown":
            self._failure = (
                "error",
                "XMPP server at {server} does not know component {domain!r} "
                "(check the server's Component config)",
                fields,
                "host-unknown",
            )
        elif condition == "invalid-namespace":
            self._failure = (
                "error",
                "XMPP server at {server} rejected the component namespace "
                "(is port {port} the server's component port?)",
                dict(fields, port=self.port),
                "invalid-namespace",
            )
        else:
            self._failure = (
                "warn",
                "XMPP server at {server} closed the stream with error "
                "{condition!r} {text!r}",
                fields,
                "stream error %s" % (condition,),
            )

    def _authd(self, xs):
        """
        The server accepted the handshake: reset the back-off and bring the
        handlers up.
        """
        xs.addObserver('/iq[@type="result"]', self._onIQResponse)
        xs.addObserver('/iq[@type="error"]', self._onIQResponse)
        self._initialized = True
        self._authTime = self._reactor.seconds()
        self._delayBeforeAuth = self.factory.delay
        self.factory.resetDelay()
        self.lastError = None
        _log.info(
            "XMPP component link to {server} authenticated as {domain!r}",
            server=_hostPort(self.host, self.port),
            domain=self.domain,
        )
        if self.state != STOPPED:
            self._setState(AUTHENTICATED)
            self._startKeepAlive()
        for handler in list(self):
            handler.connectionInitialized()
        self._drain()

    def initializationFailed(self, reason):
        """
        The handshake could not be done (for example no stream id in the
        server's header): drop the connection and retry later.
        """
        self._failure = (
            "error",
            "Component handshake with XMPP server at {server} failed: {why}",
            dict(
                server=_hostPort(self.host, self.port),
                why=reason.getErrorMessage(),
            ),
            "handshake failed",
        )
        xs = self.xmlstream
        if xs is not None and xs.transport is not None:
            xs.transport.loseConnection()

    def _disconnected(self, reason):
        """
        The stream is gone: tell the handlers and anyone waiting in
        L{stopService}.
        """
        self._stopKeepAlive()
        self._linkGone(reason)
        StreamManager._disconnected(self, reason)
        if self._closeTimer is not None:
            if self._closeTimer.active():
                self._closeTimer.cancel()
            self._closeTimer = None
        self._fireCloseWaiters()

    def _closeTimedOut(self, xs):
        """
        The server did not close the stream in time: drop the connection.
        """
        self._closeTimer = None
        transport = xs.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()
        self._fireCloseWaiters()

    def _fireCloseWaiters(self):
        waiters, self._closeWaiters = self._closeWaiters, []
        for d in waiters:
            d.callback(None)

    # -- reconnection ------------------------------------------------------

    def _reconnecting(self):
        """
        The back-off delay is over; a new attempt starts now.
        """
        self.reconnects += 1
        self._setState(CONNECTING)

    def _connectionEnded(self, reason, connected):
        """
        A connection attempt failed or a connection was lost: log why, in
        one line with the retry delay, and schedule the retry.

        @param connected: whether a TCP connection had been made.
        """
        failureInfo, self._failure = self._failure, None
        headerReceived, self._headerReceived = self._headerReceived, False
        wasAuthenticated = self._authTime is not None
        authTime, self._authTime = self._authTime, None

        if not self.running or not self.factory.continueTrying:
            self._setState(STOPPED)
            return

        where = _hostPort(self.host, self.port)
        why = reason.getErrorMessage().rstrip(".")
        if failureInfo is not None:
            level, message, fields, self.lastError = failureInfo
        elif not connected:
            level = "warn"
            message = "Cannot connect to XMPP server at {server}: {why}"
            fields = dict(server=where, why=why)
            self.lastError = "connect failed: %s" % (why,)
        elif wasAuthenticated:
            level = "warn"
            message = "XMPP component link to {server} lost: {why}"
            fields = dict(server=where, why=why)
            self.lastError = "connection lost: %s" % (why,)
        elif headerReceived:
            # The handshake was sent and the server closed the stream
            # without an error element: most servers do this for a bad
            # secret.
            self.authFailures += 1
            level = "error"
            message = (
                "XMPP server at {server} refused the component handshake for "
                "{domain!r} (wrong xmpp_password?): the stream was closed"
            )
            fields = dict(server=where, domain=self.domain)
            self.lastError = "handshake refused (stream closed)"
        else:
            level = "warn"
            message = (
                "XMPP server at {server} closed the connection before the "
                "stream started: {why}"
            )
            fields = dict(server=where, why=why)
            self.lastError = "closed before stream start: %s" % (why,)

        if wasAuthenticated and self._delayBeforeAuth is not None:
            if self._reactor.seconds() - authTime < self.stableInterval:
                # A link that dropped right after its handshake: keep
                # backing off as if the handshake had not succeeded.
                self.factory.delay = max(self.factory.delay, self._delayBeforeAuth)

        self._setState(DOWN)
        delay = self.factory.retry(self._connector)
        if delay is None:
            self._setState(STOPPED)
            return
        getattr(_log, level)(
            message + "; retrying in {delay:.1f} s", delay=delay, **fields
        )

    # -- confirmed delivery ----------------------------------------------------

    def _canWrite(self):
        return (
            self.isAuthenticated
            and not self.unconfirmed
            and self._inFlight < self.windowLimit
        )

    def _drain(self):
        """
        Write queued stanzas, in order, while the link may write.
        """
        while self._queue and self._canWrite():
            self._write(self._queue.popleft())

    def _write(self, entry):
        """
        Write one stanza; its confirmation ping follows at the end of this
        reactor turn.
        """
        self.xmlstream.send(entry.stanza)
        entry.written = True
        if self.confirmDelivery == "none":
            # Write-only mode: the stanza is on the link; nothing to wait for.
            self.confirmStats["written"] += 1
            _settle(entry, None)
            return
        if self.confirmDelivery in ("tcp", "kernel"):
            entry.end = self._bytesOut
            entry.deadline = self._reactor.seconds() + self.confirmTimeout
            self._tcpEntries.append(entry)
            self._inFlight += 1
            self.confirmStats["written"] += 1
            if self.confirmDelivery == "kernel":
                # Hand the stanza to the kernel now and confirm it at once:
                # the 2xx follows within this call. (Pushing a whole batch
                # at the end of the turn would save writes, but its 2xx
                # would then trail the stanzas by the time it takes to
                # answer them all: a window for duplicates.)
                self._confirmPushed()
                return
            self._scheduleTCPPoll(self.tcpPollInterval)
            return
        self._batch.append(entry)
        self._inFlight += 1
        self.confirmStats["written"] += 1
        if self._flushCall is None:
            self._flushCall = self._reactor.callLater(0, self._flush)

    def _flush(self):
        """
        Confirm the stanzas written since the last ping with one new ping,
        unless a ping that confirms stanzas is still out: then its answer
        sends the next one (L{_onConfirmation}), for everything written
        meanwhile.

        One such ping at a time: an idle link pings after every stanza as
        before, and under load the pings pace themselves by the server's
        round trip instead of one per reactor turn, so each confirms a
        batch (fewer stanzas for the server to route, fewer for the
        gateway to parse). A stanza's confirmation waits at most one more
        round trip; its delivery does not wait at all.
        """
        self._flushCall = None
        if not self._batch or not self.isAuthenticated:
            return
        for ping in self._pings.values():
            if ping.entries:
                break
        else:
            batch, self._batch = self._batch, []
            self._sendPing(batch)
        # The end of the turn that wrote them: the stanzas (and the ping)
        # go to the kernel now instead of on the reactor's next turn, which
        # saves that turn (an epoll_wait and a doWrite per MESSAGE at low
        # rates) and the wait for it.
        pushToKernel(self.xmlstream.transport)

    def _sendPing(self, entries):
        """
        Write an XEP-0199 ping from and to our own domain; the server routes
        it back to us behind everything written before it.
        """
        pingID = next(self._pingIDs)
        # Written as text: domish serialization would cost more than the
        # whole stanza (the ping's id needs no escaping; the rest, with
        # the domain escaped by escapeToXml, is made once per domain).
        domain, tail = self._pingTail
        if domain != self.domain:
            escaped = domish.escapeToXml(self.domain, isattrib=1)
            tail = "' from='%s' to='%s'><ping xmlns='%s'/></iq>" % (
                escaped, escaped, NS_PING)
            self._pingTail = (self.domain, tail)
        iq = "<iq type='get' id='" + pingID + tail
        timeout = self.confirmTimeout
        due = self._reactor.seconds() + timeout
        self._pings[pingID] = _Ping(entries, due)
        timer = self._pingTimer
        if timer is None:
            self._pingTimer = self._reactor.callLater(timeout, self._pingsDue)
        elif timer.getTime() > due:
            # Only if confirmTimeout was shortened meanwhile: a ping never
            # times out later than confirmTimeout after it was written.
            timer.cancel()
            self._pingTimer = self._reactor.callLater(timeout, self._pingsDue)
        self.confirmStats["pings"] += 1
        self.xmlstream.send(iq)
        while len(self._pings) > MAX_PROBES and not next(
                iter(self._pings.values())).entries:
            # Only probes of an unconfirmed link (no entries) are forgotten.
            self._pings.popitem(last=False)

    def _pingsDue(self):
        """
        The pings' timer fired: time out each ping whose C{due} has come
        (L{_confirmTimedOut}), in the order they were written, and set the
        timer for the next C{due}, if any.

        One timer serves every ping, instead of one each that its answer
        cancels a few milliseconds later (at low rates, one per relayed
        MESSAGE: about 2.6 % of its instructions). Answered pings leave
        the timer set: it fires once more, finds nothing due, and is not
        set again. The pings' C{due} times grow in the order they were
        written (one C{confirmTimeout} for all; L{_sendPing} sets the
        timer again for a ping that a shortened timeout makes due first).
        """
        # Set while the timeouts run (they write probes, whose _sendPing
        # must not start a second timer); cleared by _linkGone if a
        # timeout drops the link.
        fired = self._pingTimer
        now = self._reactor.seconds()
        # Bounded: each call makes one ping no longer due; a probe written
        # meanwhile is due a whole confirmTimeout later.
        try:
            for _ in range(len(self._pings) + 1):
                pingID = nextDue = None
                for candidate, ping in self._pings.items():
                    if ping.due is not None:
                        pingID, nextDue = candidate, ping.due
                        break
                # Float sums may put the due time of a ping whose timer
                # fired a hair after "now".
                if pingID is None or nextDue > now + 1e-6:
                    break
                self._confirmTimedOut(pingID)
        finally:
            # Even if a timeout raised (a bug downstream): the pings left
            # keep a timer.
            if self._pingTimer is fired:
                self._pingTimer = None
                for ping in self._pings.values():
                    if ping.due is not None:
                        self._pingTimer = self._reactor.callLater(
                            max(0.0, ping.due - now), self._pingsDue)
                        break

    def _elementReceived(self, element):
        """
        A top-level element from the server: one of our confirmation pings
        is handled here; everything else goes to the stream's dispatcher.
        """
        try:
            if (self._pings and element.name == "iq"
                    and element.getAttribute("id") in self._pings):
                self._onConfirmation(element)
                if isHandled(element):
                    return
            xs = self.xmlstream
            if xs is not None:
                xs.dispatch(element)
        finally:
            # Handled: no reference cycle left for the collector.
            unlinkTree(element)

    def _onConfirmation(self, iq):
        """
        One of our pings came back (routed back to us, or answered by the
        server): everything written before it, and before any earlier ping,
        has been taken by the server. Other iqs are left alone.
        """
        if isHandled(iq):
            return
        pingID = iq.getAttribute("id")
        if pingID not in self._pings:
            return
        if iq.getAttribute("type") not in ("get", "result", "error"):
            return
        if (iq.getAttribute("from") or "").lower() != self.domain:
            return
        iq.handled = True
        while self._pings:
            # The pings' timer stays (_pingsDue).
            currentID, ping = self._pings.popitem(last=False)
            entries, ping.entries = ping.entries, []
            self._inFlight -= len(entries)
            self.confirmStats["confirmed"] += len(entries)
            for entry in entries:
                _settle(entry, None)
            if currentID == pingID:
                break
        if self.unconfirmed:
            self.unconfirmed = False
            _log.info(
                "XMPP server at {server} answers again; the component link "
                "resumes sending ({queued} queued)",
                server=_hostPort(self.host, self.port), queued=len(self._queue))
        self._drain()
        if self._batch and self._flushCall is None:
            # Written while the answered ping was out (see _flush).
            self._flush()

    def _confirmTimedOut(self, pingID):
        """
        A ping was not answered in time: fail what is unconfirmed, stop
        writing, and probe again.
        """
        ping = self._pings.get(pingID)
        if ping is None:
            return
        ping.due = None
        if not self.unconfirmed:
            self.unconfirmed = True
            failed = list(self._batch)
            self._batch = []
            for other in self._pings.values():
                other.due = None
                failed.extend(other.entries)
                other.entries = []
            self._inFlight = 0
            self.confirmStats["timedOut"] += len(failed)
            _log.warn(
                "XMPP server at {server} did not confirm stanzas within "
                "{timeout:g} s (hung?): {count} unconfirmed stanza(s) failed; "
                "holding new ones until it answers",
                server=_hostPort(self.host, self.port),
                timeout=self.confirmTimeout, count=len(failed))
            for entry in failed:
                self._fail(entry, ConfirmTimeout(
                    "XMPP server did not confirm the stanza within %g s"
                    % (self.confirmTimeout,)))
        if self.unconfirmed and self.isAuthenticated:
            self._sendPing([])

    def _confirmPushed(self):
        """
        "kernel" mode: push what Twisted buffered to the kernel and confirm
        every stanza whose bytes left the process; poll for the rest (the
        socket's send buffer is full).
        """
        pushToKernel(self.xmlstream.transport)
        if not self.isAuthenticated or self.xmlstream.transport is None:
            return
        acked = self._ackedBytes()
        entries = self._tcpEntries
        while entries and entries[0].end <= acked:
            entry = entries.popleft()
            self._inFlight -= 1
            self.confirmStats["confirmed"] += 1
            _settle(entry, None)
        if entries:
            self._scheduleTCPPoll(self.tcpPollInterval)

    def _scheduleTCPPoll(self, delay):
        if self._tcpPoll is None:
            self._tcpPoll = self._reactor.callLater(delay, self._pollTCP)

    def _ackedBytes(self):
        """
        The link's byte count up to which the peer's TCP has acknowledged
        (a constant offset from the true stream position does not matter:
        stanza ends are counted the same way).
        """
        transport = self.xmlstream.transport
        unacked = self._unackedBytes(transport)
        if unacked is None:
            if not self._tcpFallbackLogged:
                self._tcpFallbackLogged = True
                _log.warn(
                    "Cannot read the TCP send queue of the link to {server} "
                    "(ioctl TIOCOUTQ): confirm_delivery \"tcp\" confirms "
                    "stanzas once handed to the kernel on this connection",
                    server=_hostPort(self.host, self.port))
            unacked = transportBuffered(transport)
        return self._bytesOut - unacked

    def _pollTCP(self):
        """
        "tcp" mode: confirm the stanzas the peer has acknowledged, fail them
        all if the oldest waited longer than C{confirmTimeout}, and poll
        again while anything is pending.
        """
        self._tcpPoll = None
        if not self.isAuthenticated or self.xmlstream.transport is None:
            return
        if self.confirmDelivery == "kernel":
            pushToKernel(self.xmlstream.transport)
            if not self.isAuthenticated or self.xmlstream.transport is None:
                return
        acked = self._ackedBytes()
        entries = self._tcpEntries
        confirmed = 0
        while entries and entries[0].end <= acked:
            entry = entries.popleft()
            self._inFlight -= 1
            confirmed += 1
            _settle(entry, None)
        self.confirmStats["confirmed"] += confirmed
        if self.unconfirmed:
            if acked >= self._tcpResumeAt:
                self.unconfirmed = False
                self._tcpResumeAt = None
                _log.info(
                    "XMPP server at {server} acknowledges again; the "
                    "component link resumes sending ({queued} queued)",
                    server=_hostPort(self.host, self.port),
                    queued=len(self._queue))
            else:
                self._scheduleTCPPoll(self.tcpProbeInterval)
                return
        elif entries and entries[0].deadline <= self._reactor.seconds():
            self._tcpTimedOut()
            return
        self._drain()
        if entries:
            self._scheduleTCPPoll(self.tcpPollInterval)

    def _tcpTimedOut(self):
        """
        "tcp" mode: the peer did not acknowledge a stanza in time: fail the
        unconfirmed ones and write nothing until it acknowledges everything
        written.
        """
        failed = list(self._tcpEntries)
        self._tcpEntries.clear()
        self._inFlight = 0
        self.unconfirmed = True
        self._tcpResumeAt = self._bytesOut
        self.confirmStats["timedOut"] += len(failed)
        _log.warn(
            "XMPP server at {server} did not acknowledge stanzas (TCP) within "
            "{timeout:g} s (hung?): {count} unconfirmed stanza(s) failed; "
            "holding new ones until it acknowledges",
            server=_hostPort(self.host, self.port),
            timeout=self.confirmTimeout, count=len(failed))
        for entry in failed:
            self._fail(entry, ConfirmTimeout(
                "XMPP server did not acknowledge the stanza within %g s"
                % (self.confirmTimeout,)))
        self._scheduleTCPPoll(self.tcpProbeInterval)

    def _linkGone(self, reason):
        """
        The connection is gone: fail the written, unconfirmed stanzas (they
        are never written again); queued ones wait for the next handshake.
        """
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        if self._tcpPoll is not None:
            if self._tcpPoll.active():
                self._tcpPoll.cancel()
            self._tcpPoll = None
        self._tcpResumeAt = None
        lost = list(self._batch) + list(self._tcpEntries)
        self._batch = []
        self._tcpEntries.clear()
        if self._pingTimer is not None:
            if self._pingTimer.active():
                self._pingTimer.cancel()
            self._pingTimer = None
        for ping in self._pings.values():
            lost.extend(ping.entries)
        self._pings.clear()
        self._inFlight = 0
        self.unconfirmed = False
        self.confirmStats["lost"] += len(lost)
        why = reason.getErrorMessage() if reason is not None else "closed"
        for entry in lost:
            self._fail(entry, LinkLost(
                "XMPP component link lost before the server confirmed the "
                "stanza: %s" % (why,)))

    def _cancelled(self, entry):
        """
        The Deferred of a delivery was cancelled (it then fails with
        L{defer.CancelledError}): nothing more is passed to it.
        """
        entry.notify = None
        self._cancelEntry(entry)

    def _cancelEntry(self, entry):
        """
        A delivery was cancelled: a queued stanza is withdrawn; a written
        one cannot be.
        """
        if entry.written:
            return
        try:
            self._queue.remove(entry)
        except ValueError:
            return
        self.confirmStats["cancelled"] += 1

    def _fail(self, entry, exception):
        _settle(entry, Failure(exception))

    # -- keepalive -----------------------------------------------------------

    def _setUserTimeout(self, xs):
        """
        Ask the kernel to drop the connection when sent data stays
        unacknowledged for L{keepAliveTimeout} seconds (Linux only).
        """
        if not (self.keepAliveInterval and self.keepAliveTimeout):
            return
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        getHandle = getattr(xs.transport, "getHandle", None)
        if option is None or getHandle is None:
            return
        try:
            getHandle().setsockopt(
                socket.IPPROTO_TCP, option, int(self.keepAliveTimeout * 1000)
            )
        except (OSError, AttributeError) as e:
            _log.debug("Cannot set TCP_USER_TIMEOUT: {why}", why=e)

    def _startKeepAlive(self):
        self._stopKeepAlive()
        if not self.keepAliveInterval:
            return
        self._keepAlive = LoopingCall(self._sendKeepAlive)
        self._keepAlive.clock = self._reactor
        self._keepAlive.start(self.keepAliveInterval, now=False)

    def _stopKeepAlive(self):
        if self._keepAlive is not None:
            if self._keepAlive.running:
                self._keepAlive.stop()
            self._keepAlive = None

    def _sendKeepAlive(self):
        """
        Write one space: a whitespace ping between stanzas.
        """
        xs = self.xmlstream
        if xs is not None and xs.transport is not None and self._initialized:
            self._bytesOut += 1
            xs.transport.write(b" ")
