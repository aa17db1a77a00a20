# -*- test-case-name: tests.test_presence -*-
"""
Presence across the gateway: SIP SUBSCRIBE/NOTIFY (RFC 6665, RFC 3856,
PIDF RFC 3863) <-> XMPP presence (RFC 6121), as RFC 7248 and
interworking.md section 4 say.

Two kinds of subscription, both kept in a L{xmppgw.store} store:

I{Inbound} (L{xmppgw.store.INBOUND}): a SIP watcher subscribes to an XMPP
user. The gateway is the SIP notifier. A new SUBSCRIBE is answered C{200}
at once (project decision 5; never 202) with C{Expires} and C{Contact},
followed by a NOTIFY with C{Subscription-State: pending}, and a
C{<presence type='subscribe'/>} goes from the watcher's mapped JID to the
XMPP user. C{subscribed} -> NOTIFY C{active} with PIDF (and a probe, so the
XMPP server sends the current presence); C{unsubscribed} -> NOTIFY
C{terminated;reason=rejected}. Presence from the XMPP user to the watcher's
JID -> NOTIFY with PIDF (L{buildPIDF}). A refresh gets a NOTIFY with the
known state (an empty NOTIFY when none is known); C{Expires: 0} and expiry
follow RFC 7248 option B: a NOTIFY C{terminated} (C{reason=timeout} on
expiry) with basic C{closed}, then C{<presence type='unavailable'/>} from
the watcher to the XMPP user; the XMPP roster subscription stays. A NOTIFY
answered 404, 405, 410, 416, 480-485, 489, 501, 604 or timing out ends the
subscription (RFC 6665 section 4.2.2). At most one NOTIFY is in flight per
subscription; later ones are coalesced (the latest state wins).

I{Outbound} (L{xmppgw.store.OUTBOUND}): an XMPP user subscribes to a SIP
user. C{<presence type='subscribe'/>} -> SUBSCRIBE (C{Event: presence},
C{Accept: application/pidf+xml}, C{Expires}); the first NOTIFY C{active}
-> C{subscribed}, then presence from its PIDF; later NOTIFYs -> presence.
Before each refresh the gateway sends C{<presence type='probe'/>} from the
SIP user's JID to the XMPP user's bare JID (RFC 7248 section 7): available
presence in answer -> refresh now; C{unavailable} -> the SIP subscription is
let lapse (state C{dormant}, re-established by the next probe the XMPP
server sends when the user comes back); no answer within
C{probeTimeout}, C{unsubscribed} or an error (one-way subscriptions give
those) -> refresh anyway. SUBSCRIBE answered 403, 489 or 603 (and 404, 410,
604: the SIP user does not exist) or NOTIFY C{terminated} with reason
C{rejected}, C{noresource} or C{invariant} -> C{unsubscribed} to the XMPP
user and the subscription is removed; 423 -> retried with C{Min-Expires};
481 -> a new dialog; other failures -> retried after C{retryInterval}.
C{<presence type='probe'/>} is answered from the last NOTIFY's state; a
probe for a subscription the store does not have starts one (the XMPP
server only probes contacts its user is subscribed to, so the roster is the
authority and a lost store heals itself). C{unsubscribe} -> SUBSCRIBE
C{Expires: 0} and C{unsubscribed} back.

Bounds: C{subscriptionsMax} in total and C{subscriptionsPerUserMax} per
watcher (SIP: C{403}/C{503}; XMPP: a C{resource-constraint} presence
error); a token bucket per sender (SIP From URI or XMPP bare JID) limits
presence traffic: SUBSCRIBEs over the rate get C{503} with C{Retry-After},
XMPP presence stanzas over it are dropped, NOTIFYs over it are answered
C{200} and stored but not relayed (the next one carries the whole state
again).

PIDF <-> XMPP follows RFC 7248 section 5 (interworking.md 4.3): no type <->
basic C{open}, C{unavailable} <-> C{closed}, C{<status/>} <-> C{<note/>},
C{<priority/>} 0..127 <-> C{<contact priority>} 0..1
(C{floor(p/127*1000)/1000}, negative not mapped), C{<show/>} embedded in the
tuple's C{<status>} as C{<show xmlns='jabber:client'/>}, resource <->
tuple id C{ID-resource}.
"""

import math
import os
import re
import secrets
import socket
from collections import OrderedDict
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape, quoteattr

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from xmppgw import errors
from xmppgw.addressing import AddressError
from xmppgw.safexml import parseDocument
from xmppgw.sip.message import Headers, Request, makeResponse
from xmppgw.sip.transaction import TransactionTimeout, TransportFailure
from xmppgw.sip.uri import URIError, parseNameAddr
from xmppgw.store import INBOUND, OUTBOUND, Subscription, VersionConflict, subscriptionKey
from xmppgw.xmpp.component import LinkDown

__all__ = [
    "PresenceSettings",
    "PresenceGateway",
    "PIDFError",
    "buildPIDF",
    "parsePIDF",
    "priorityToPIDF",
    "priorityFromPIDF",
    "parseSubscriptionState",
    "eventPackage",
    "acceptsPIDF",
    "RateLimiter",
    "PIDF_TYPE",
    "defaultInstanceID",
]

PIDF_TYPE = "application/pidf+xml"
NS_PIDF = "urn:ietf:params:xml:ns:pidf"
NS_CLIENT = "jabber:client"
NS_XML = errors.NS_XML

#: NOTIFY answers that end a subscription (RFC 6665 section 4.2.2).
NOTIFY_FATAL = frozenset(
    [404, 405, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604])
#: SUBSCRIBE answers that cancel the XMPP subscription for good (RFC 7248
#: section 4.2.2; 404/410/604: the SIP user does not exist).
SUBSCRIBE_FATAL = frozenset([403, 404, 410, 489, 603, 604])
#: Subscription-State reasons after which re-subscribing is pointless
#: (RFC 6665 section 4.1.3).
TERMINAL_REASONS = frozenset(["rejected", "noresource", "invariant"])

#: The lease of a record that has no timer (a dormant outbound
#: subscription): no instance needs to take it over.
LEASE_FOREVER = 1e15
#: How often a write that lost a compare-and-set race is retried (re-read,
#: re-applied) before giving up.
CONFLICT_RETRIES = 5
#: Records one C{expiredLeases} query of a take-over scan asks for (one
#: page); a full page is followed by another, up to L{SCAN_PAGES}.
SCAN_LIMIT = 100
#: Most pages one take-over scan runs through (so at most
#: C{SCAN_LIMIT * SCAN_PAGES} records per run; the rest wait for the next).
SCAN_PAGES = 50

_SHOWS = frozenset(["away", "chat", "dnd", "xa"])
_NCNAME_BAD = re.compile(r"[^A-Za-z0-9._-]")


class PIDFError(ValueError):
    """
    A PIDF document cannot be used.
    """


# -- PIDF ----------------------------------------------------------------------


def priorityToPIDF(priority):
    """
    An XMPP priority as a PIDF contact priority (RFC 7248 section 5.2).

    @param priority: -128..127 or L{None}.
    @return: the text (C{"0.007"}), or L{None} for a negative or missing
        priority (which MUST NOT be mapped).
    """
    if priority is None or priority < 0:
        return None
    value = math.floor(min(priority, 127) / 127 * 1000) / 1000
    return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"


def priorityFromPIDF(text):
    """
    A PIDF contact priority as an XMPP priority: the inverse of
    L{priorityToPIDF}.

    @return: 0..127, or L{None} if C{text} is not a number from 0 to 1.
    """
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not 0 <= value <= 1 or math.isnan(value):
        return None
    return min(127, max(0, math.ceil(value * 127 - 1e-9)))


def _tupleID(resource):
    """
    A PIDF tuple id (an C{xs:ID}) for an XMPP resource: C{ID-} and the
    resource with characters an NCName cannot hold replaced by C{_}.
    """
    return "ID-" + _NCNAME_BAD.sub("_", resource or "")[:200]


def buildPIDF(entity, resources):
    """
    Build a PIDF document (RFC 3863) for an XMPP user's presence.

    @param entity: the presentity URI (C{pres:} or C{sip:}).
    @param resources: resource -> C{{"available": bool, "show", "status",
        "priority", "lang"}} (missing keys mean absent). An empty mapping,
        or one where no resource is available, gives one C{closed} tuple.
    @rtype: L{bytes}
    """
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<presence xmlns="{NS_PIDF}" entity={quoteattr(entity)}>']
    available = [(r, v) for r, v in sorted(resources.items())
                 if v.get("available")]
    if available:
        tuples = available
    elif resources:
        resource, value = sorted(resources.items())[0]
        tuples = [(resource, value)]
    else:
        tuples = [("", {"available": False})]
    for resource, value in tuples:
        lines.append(f" <tuple id={quoteattr(_tupleID(resource))}>")
        lines.append("  <status>")
        basic = "open" if value.get("available") else "closed"
        lines.append(f"   <basic>{basic}</basic>")
        show = value.get("show")
        if show in _SHOWS and value.get("available"):
            lines.append(f'   <show xmlns="{NS_CLIENT}">{show}</show>')
        lines.append("  </status>")
        priority = priorityToPIDF(value.get("priority"))
        if priority is not None:
            lines.append(f'  <contact priority="{priority}">{escape(entity)}</contact>')
        status = value.get("status")
        if status:
            lang = value.get("lang")
            langAttr = f" xml:lang={quoteattr(lang)}" if lang else ""
            lines.append(f"  <note{langAttr}>{escape(status)}</note>")
        lines.append(" </tuple>")
    lines.append("</presence>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _resourceFromTupleID(tupleID):
    resource = tupleID[3:] if tupleID.startswith("ID-") else tupleID
    resource = "".join(c for c in resource if c.isprintable() and c != "/")
    return resource[:64] or "sip"


def parsePIDF(body):
    """
    Parse a PIDF document.

    @param body: the NOTIFY body (bytes).
    @return: resource -> C{{"available", "show", "status", "priority"}}
        (resource from the tuple id, L{_resourceFromTupleID}); presence-level
        notes apply to tuples without their own.
    @raise PIDFError: for anything that is not a usable PIDF document
        (including any DOCTYPE: no entities are ever expanded).
    """
    try:
        root = parseDocument(body, "PIDF")
    except ValueError as e:
        raise PIDFError(str(e))
    if root.tag != f"{{{NS_PIDF}}}presence":
        raise PIDFError(f"not a PIDF document (root {root.tag})")
    if not root.get("entity"):
        raise PIDFError("PIDF without entity")
    topNote = None
    for note in root.findall(f"{{{NS_PIDF}}}note"):
        topNote = (note.text or "").strip() or topNote
        break
    result = {}
    for item in root.findall(f"{{{NS_PIDF}}}tuple")[:32]:
        status = item.find(f"{{{NS_PIDF}}}status")
        basic = None
        show = None
        if status is not None:
            b = status.find(f"{{{NS_PIDF}}}basic")
            if b is not None:
                basic = (b.text or "").strip()
            s = status.find(f".//{{{NS_CLIENT}}}show")
            if s is not None and (s.text or "").strip() in _SHOWS:
                show = s.text.strip()
        note = item.find(f"{{{NS_PIDF}}}note")
        text = (note.text or "").strip() if note is not None else None
        contact = item.find(f"{{{NS_PIDF}}}contact")
        priority = None
        if contact is not None and contact.get("priority") is not None:
            priority = priorityFromPIDF(contact.get("priority"))
        resource = _resourceFromTupleID(item.get("id") or "")
        result[resource] = {
            "available": basic == "open",
            "show": show,
            "status": (text or topNote or None),
            "priority": priority,
        }
    return result


# -- SIP header helpers --------------------------------------------------------


def _splitList(value):
    """
    Split a comma-separated header value, leaving commas inside quotes and
    angle brackets alone.
    """
    parts, current, quoted, angle = [], [], False, False
    for char in value:
        if char == '"' and not angle:
            quoted = not quoted
        elif char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        if char == "," and not quoted and not angle:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _params(text):
    """
    C{"token;a=1;b"} -> C{("token", {"a": "1", "b": None})}, names
    lower-cased.
    """
    head, *rest = text.split(";")
    params = {}
    for item in rest:
        name, eq, value = item.partition("=")
        if name.strip():
            params[name.strip().lower()] = value.strip().strip('"') if eq else None
    return head.strip().lower(), params


def eventPackage(headers):
    """
    The event package of a SUBSCRIBE or NOTIFY (RFC 6665 section 8.2.1).

    @return: the lower-cased package name, or L{None} without C{Event}.
    """
    value = headers.get("Event")
    if value is None:
        return None
    return _params(value)[0] or None


def acceptsPIDF(headers):
    """
    Whether a SUBSCRIBE's C{Accept} allows PIDF (RFC 3856 section 6.5: no
    C{Accept} means PIDF).
    """
    values = headers.getAll("Accept")
    if not values:
        return True
    types = []
    for value in values:
        types.extend(_params(t)[0] for t in _splitList(value))
    if not types:
        return True
    return any(t in (PIDF_TYPE, "application/*", "*/*") for t in types)


def parseSubscriptionState(value):
    """
    Parse C{Subscription-State} (RFC 6665 section 8.2.3).

    @return: C{(state, reason, expires, retryAfter)}; numbers are L{int} or
        L{None}.
    @raise ValueError: for a missing or malformed value.
    """
    if not value:
        raise ValueError("missing Subscription-State")
    state, params = _params(value)
    if not state:
        raise ValueError("empty Subscription-State")

    def number(name):
        text = params.get(name)
        if text is None:
            return None
        if not text.isdigit() or len(text) > 10:
            raise ValueError(f"bad {name} in Subscription-State")
        return int(text)

    return state, params.get("reason"), number("expires"), number("retry-after")


def _expiresHeader(headers):
    """
    The C{Expires} header as an L{int}, L{None} if absent.

    @raise ValueError: if malformed.
    """
    value = headers.get("Expires")
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or not value.isascii() or len(value) > 10:
        raise ValueError("bad Expires")
    return int(value)


def _tagOf(nameAddrText):
    try:
        return parseNameAddr(nameAddrText).param("tag") or ""
    except URIError:
        return ""


def _bare(jid):
    return JID(jid).userhost()


# -- Rate limiting ---------------------------------------------------------------


class RateLimiter:
    """
    One token bucket per key, on an injected clock; at most C{maxKeys}
    buckets are kept (the least recently used is forgotten first).
    """

    def __init__(self, clock, rate, burst, maxKeys=10000):
        """
        @param rate: tokens per second (0: no limit).
        @param burst: bucket size.
        """
        self.clock = clock
        self.rate = rate
        self.burst = max(1, burst)
        self.maxKeys = maxKeys
        self._buckets = OrderedDict()

    def allow(self, key):
        """
        Take one token for C{key}.

        @return: whether the event may pass.
        """
        if not self.rate:
            return True
        now = self.clock.seconds()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.maxKeys:
            self._buckets.popitem(last=False)
        return allowed


# -- The gateway ---------------------------------------------------------------


def defaultInstanceID(configPath):
    """
    The instance id used when C{[presence] instance_id} is unset: the host
    name and the configuration file's absolute path. Distinct for
    instances on distinct hosts or with distinct files, and the same when
    an instance restarts.

    @param configPath: the configuration file (or L{None}).
    @rtype: L{str}
    """
    path = os.path.abspath(configPath) if configPath else ""
    return f"{socket.gethostname()}:{path}"


@dataclass(frozen=True)
class PresenceSettings:
    """
    The presence knobs (table C{[presence]}).

    @ivar xmppDomain: the gateway's XMPP domain.
    @ivar contactURI: our SIP Contact (where NOTIFYs for us go).
    @ivar outboundProxy: a L{xmppgw.sip.transaction.Target} for every
        request, or L{None}.
    @ivar expiresInterval: the Expires we ask for and the most we grant.
    @ivar minExpiresInterval: shorter non-zero Expires get 423.
    @ivar subscriptionsMax: most subscriptions in total.
    @ivar subscriptionsPerUserMax: most subscriptions per watcher.
    @ivar probeTimeout: how long to wait for the answer to the refresh
        probe.
    @ivar retryInterval: when to retry after a transient failure.
    @ivar ratePerSender: presence events per second per sender (0: no
        limit).
    @ivar ratePerSenderBurst: the bucket size.
    @ivar instanceID: this gateway instance's name in the store's C{owner}
        field; instances sharing a store need distinct ones, and a
        restarted instance should keep its own (it then re-arms its
        timers at once, as with one instance).
    @ivar leaseInterval: seconds an owner's claim on a record outlives the
        record's next timer; another instance takes the record over after
        that (and checks every C{leaseInterval / 2}). Should exceed
        C{probeTimeout} plus a SIP transaction (32 s).
    """

    xmppDomain: str
    contactURI: str
    outboundProxy: object = None
    expiresInterval: int = 3600
    minExpiresInterval: int = 60
    subscriptionsMax: int = 10000
    subscriptionsPerUserMax: int = 100
    probeTimeout: float = 10.0
    retryInterval: float = 300.0
    ratePerSender: float = 2.0
    ratePerSenderBurst: int = 20
    instanceID: str = "xmppgw"
    leaseInterval: float = 60.0


class PresenceGateway:
    """
    The presence state machines (see the module docstring).

    @ivar stats: counters by event.
    """

    _log = Logger()

    def __init__(self, clock, mapper, sip, xmpp, store, settings, targetForURI):
        """
        @param clock: an L{IReactorTime}.
        @param mapper: the L{xmppgw.addressing.AddressMapper}.
        @param sip: the transaction layer (C{sendRequest(request, target)}).
        @param xmpp: the XMPP link (C{send(element)}, C{isAuthenticated}).
        @param store: an L{xmppgw.store.ISubscriptionStore}.
        @param settings: L{PresenceSettings}.
        @param targetForURI: C{targetForURI(uri) -> Target} (the router's).
        """
        self.clock = clock
        self.mapper = mapper
        self.sip = sip
        self.xmpp = xmpp
        self.store = store
        self.settings = settings
        self.targetForURI = targetForURI
        self.limiter = RateLimiter(
            clock, settings.ratePerSender, settings.ratePerSenderBurst)
        self.stats = {}
        self.instanceID = settings.instanceID
        self._timers = {}
        self._probing = {}
        self._scanner = None
        self._scanning = False
        #: Set by L{stop}: a start-up or take-over scan still waiting on the
        #: store when the gateway stops claims nothing and arms no timer.
        self._stopped = False
        self._notifyBusy = set()
        self._notifyNext = {}
        #: The last CSeq this instance sent per dialog (Call-ID), for the
        #: requests whose CSeq the store does not hold yet (a SUBSCRIBE in
        #: flight, the final NOTIFY of a deleted record). Least recently
        #: used first and bounded: entries of outbound dialogs, and of
        #: inbound ones another instance ended, are never popped otherwise.
        self._cseq = OrderedDict()
        self._cseqMax = 2 * settings.subscriptionsMax + 1000

    def _count(self, name):
        self.stats[name] = self.stats.get(name, 0) + 1

    # -- lifecycle

    @defer.inlineCallbacks
    def start(self):
        """
        Re-arm timers for the stored subscriptions this instance owns
        (after a restart), those of no owner (written before issue 9) and
        those whose owner's lease has ended (taken over); then look for
        expired leases every C{leaseInterval / 2}.
        """
        self._stopped = False
        records = yield self.store.all()
        if self._stopped:
            return
        now = self.clock.seconds()
        armed = 0
        for record in records:
            mine = record.owner in ("", self.instanceID)
            if not mine and record.leaseUntil > now:
                continue
            if mine and record.direction == INBOUND and record.expires <= now:
                # Unless another instance refreshed it meanwhile (then it
                # owns it and runs its timer).
                yield self.store.delete(record.key, record.version)
                if self._stopped:
                    return
                continue
            if record.owner != self.instanceID:
                try:
                    record = yield self.store.put(self._claim(record))
                except VersionConflict:
                    continue
                finally:
                    stopped = self._stopped
                if stopped:
                    return
                if not mine:
                    self._count("lease.takenOver")
            self._armFor(record, overdue=not mine)
            armed += 1
        self._log.info(
            "Presence: {n} stored subscriptions, {armed} run by this instance "
            "({id})", n=len(records), armed=armed, id=self.instanceID)
        if self._scanner is None and not self._stopped:
            self._scanner = LoopingCall(self._scan)
            self._scanner.clock = self.clock
            self._scanner.start(max(1.0, self.settings.leaseInterval / 2),
                                now=False)

    def stop(self):
        """
        Cancel every timer; a start-up or take-over scan still running
        stops at its next store answer.
        """
        self._stopped = True
        if self._scanner is not None:
            if self._scanner.running:
                self._scanner.stop()
            self._scanner = None
        for call in list(self._timers.values()) + list(self._probing.values()):
            if call.active():
                call.cancel()
        self._timers.clear()
        self._probing.clear()

    # -- ownership (several instances on one store)

    def _claim(self, record, due=None):
        """
        C{record} owned by this instance, its lease lasting
        C{leaseInterval} past C{due}: when its next timer fires (default:
        the expiry of an inbound subscription, the refresh of an outbound
        one; no timer for a dormant outbound subscription).
        """
        if due is None and record.direction == INBOUND:
            due = record.expires
        elif due is None and record.state != "dormant":
            due = self._refreshTime(record)
        if due is None:
            leaseUntil = LEASE_FOREVER
        else:
            leaseUntil = max(due, self.clock.seconds()) + self.settings.leaseInterval
        return replace(record, owner=self.instanceID, leaseUntil=leaseUntil)

    @defer.inlineCallbacks
    def _put(self, record, due=None):
        """
        Write C{record}, making this instance its owner (the instance that
        last changed a subscription runs its timers; the previous owner's
        timers stand down when they fire, L{_hold}). A record taken over
        this way gets its usual timer here if it has none yet.

        @return: a Deferred firing with the stored record, or failing with
            L{VersionConflict}.
        """
        stored = yield self.store.put(self._claim(record, due))
        key = stored.key
        if (record.version and record.owner != self.instanceID
                and key not in self._timers and key not in self._probing):
            self._armFor(stored)
        return stored

    @defer.inlineCallbacks
    def _update(self, record, change, due=None):
        """
        Read-modify-write with bounded retries: write C{change(record)};
        if another writer got there first (L{VersionConflict}), re-read and
        apply C{change} again, at most L{CONFLICT_RETRIES} times.

        @param record: the record as last read.
        @param change: C{change(record)} returning the record to write, or
            L{None} to give up (the record no longer fits).
        @return: a Deferred firing with the stored record, or L{None} if
            the record is gone or C{change} gave up; failing with
            L{VersionConflict} after the last attempt.
        """
        key = record.key
        for attempt in range(CONFLICT_RETRIES):
            if attempt:
                self._count("store.conflictRetry")
                record = yield self.store.get(key)
                if record is None:
                    return None
            new = change(record)
            if new is None:
                return None
            try:
                stored = yield self._put(new, due)
            except VersionConflict:
                continue
            return stored
        self._count("store.conflict")
        raise VersionConflict(key)

    @defer.inlineCallbacks
    def _hold(self, key):
        """
        Whether this instance should run a timer of C{key} now: it owns
        the record, or the owner's lease has ended and this instance's
        claim (a compare-and-set) won.
        """
        record = yield self.store.get(key)
        if self._stopped:
            return False
        if record is None or record.owner == self.instanceID:
            return True
        if record.leaseUntil > self.clock.seconds():
            self._count("lease.yielded")
            return False
        try:
            yield self.store.put(self._claim(record))
        except VersionConflict:
            self._count("lease.lost")
            return False
        if self._stopped:
            return False
        self._count("lease.takenOver")
        return True

    def _scan(self):
        """
        Take over the subscriptions whose owner's lease has ended (an
        instance that died or stopped); page after page of L{SCAN_LIMIT}
        while full pages come back, at most L{SCAN_PAGES} per run, one run
        at a time.
        """
        if self._scanning:
            return None
        self._scanning = True
        d = self._takeOver()

        def done(result):
            self._scanning = False
            return result

        d.addBoth(done)
        d.addErrback(lambda f: self._log.failure("Presence lease scan failed", f))
        return d

    @defer.inlineCallbacks
    def _takeOver(self):
        for page in range(SCAN_PAGES):
            records = yield self.store.expiredLeases(self.clock.seconds(), SCAN_LIMIT)
            if self._stopped:
                return
            progress = False
            for record in records:
                key = record.key
                if record.owner == self.instanceID and (
                        key in self._timers or key in self._probing):
                    # Our own, with its timer running here: it renews the
                    # lease when it fires.
                    continue
                progress = True
                try:
                    stored = yield self.store.put(self._claim(record))
                except VersionConflict:
                    self._count("lease.lost")
                    continue
                finally:
                    stopped = self._stopped
                if stopped:
                    return
                self._count("lease.takenOver")
                self._armFor(stored, overdue=record.owner != "")
            if len(records) < SCAN_LIMIT or not progress:
                # The last page, or one of our own running timers only
                # (the next query would return the same).
                return

    def _armFor(self, record, overdue=False):
        """
        Arm the usual timer of C{record}: expiry (inbound) or refresh
        (outbound, not dormant); C{overdue}: the previous owner's next
        timer has passed, so an outbound subscription is refreshed now.
        """
        if record.direction == INBOUND:
            self._arm(record.key, record.expires - self.clock.seconds(),
                      self._inboundExpired)
        elif record.state != "dormant":
            if overdue:
                self._arm(record.key, 0, self._refreshDue)
            else:
                self._armRefresh(record)

    # -- timers

    def _arm(self, key, delay, function):
        self._disarm(key)
        self._timers[key] = self.clock.callLater(max(0.0, delay), self._fire, key, function)

    def _fire(self, key, function):
        self._timers.pop(key, None)
        d = self._hold(key)
        d.addCallback(lambda held: function(key) if held else None)
        d.addErrback(lambda f: self._log.failure("Presence timer failed", f))

    def _disarm(self, key):
        call = self._timers.pop(key, None)
        if call is not None and call.active():
            call.cancel()

    def _refreshTime(self, record):
        """
        When to refresh an outbound subscription: L{_refreshMargin} before
        it expires (half its remaining time if shorter).
        """
        remaining = record.expires - self.clock.seconds()
        return record.expires - min(remaining / 2, self._refreshMargin())

    def _refreshMargin(self):
        """
        How long before the expiry an outbound subscription is refreshed:
        at least a minute, and long enough for another instance to take
        it over if this one dies (the lease, up to half a lease more until
        the next scan), probe (C{probeTimeout}) and re-SUBSCRIBE (a SIP
        transaction, 32 s) before it expires at the notifier.
        """
        settings = self.settings
        return max(60.0, 2 * settings.leaseInterval + settings.probeTimeout + 32)

    def _armRefresh(self, record):
        self._arm(record.key, self._refreshTime(record) - self.clock.seconds(),
                  self._refreshDue)

    # -- sending

    def _sendXMPP(self, element):
        try:
            self.xmpp.send(element)
            return True
        except LinkDown:
            self._count("xmpp.linkDown")
            return False

    def _presence(self, sender, recipient, type=None, value=None):
        element = domish.Element((None, "presence"))
        element["from"] = sender
        element["to"] = recipient
        if type:
            element["type"] = type
        if value:
            if value.get("show") in _SHOWS:
                element.addElement("show", content=value["show"])
            if value.get("status"):
                element.addElement("status", content=value["status"])
            if value.get("priority") is not None:
                element.addElement("priority", content=str(value["priority"]))
        self._sendXMPP(element)

    def _target(self, record):
        if self.settings.outboundProxy is not None:
            return self.settings.outboundProxy
        if record.routeSet:
            return self.targetForURI(str(parseNameAddr(record.routeSet[0]).uri))
        return self.targetForURI(record.remoteTarget)

    def _dialogRequest(self, record, method, cseq, headers=(), body=b""):
        h = Headers()
        h.add("Max-Forwards", "70")
        to = f"<{record.remoteURI}>"
        if record.remoteTag:
            to += f";tag={record.remoteTag}"
        h.add("To", to)
        h.add("From", f"<{record.localURI}>;tag={record.localTag}")
        h.add("Call-ID", record.callID)
        h.add("CSeq", f"{cseq} {method}")
        for route in record.routeSet:
            h.add("Route", route)
        h.add("Contact", f"<{self.settings.contactURI}>")
        h.add("Event", "presence")
        for name, value in headers:
            h.add(name, value)
        return Request(method, record.remoteTarget, h, body)

    def _nextCSeq(self, record, reserved=None):
        """
        The CSeq of our next request in C{record}'s dialog: above the
        stored C{localCSeq} and any this instance sent; C{reserved}: one
        already written to the store as C{localCSeq} (so that instances
        sharing the store do not reuse it).
        """
        if reserved is not None:
            cseq = max(reserved, self._cseq.get(record.callID, 0) + 1)
        else:
            cseq = max(record.localCSeq, self._cseq.get(record.callID, 0)) + 1
        self._cseq[record.callID] = cseq
        self._cseq.move_to_end(record.callID)
        while len(self._cseq) > self._cseqMax:
            self._cseq.popitem(last=False)
        return cseq

    # -- inbound: the gateway as notifier

    def _notify(self, record, state, body=None, terminal=False, cseq=None):
        """
        Send (or queue) a NOTIFY for an inbound subscription; the latest
        queued one wins.

        @param state: the Subscription-State value.
        @param body: PIDF bytes or L{None}.
        @param cseq: a CSeq reserved in the store (C{record.localCSeq}
            after the write that preceded this NOTIFY), or L{None}.
        """
        key = record.key
        if key in self._notifyBusy:
            self._notifyNext[key] = (record, state, body, terminal, cseq)
            return
        self._notifyBusy.add(key)
        cseq = self._nextCSeq(record, cseq)
        headers = [("Subscription-State", state)]
        if body is not None:
            headers.append(("Content-Type", PIDF_TYPE))
        request = self._dialogRequest(record, "NOTIFY", cseq, headers, body or b"")
        self._count("sip.notifySent")
        try:
            target = self._target(record)
        except URIError as e:
            self._log.warn("Cannot send NOTIFY to {uri}: {e}", uri=record.remoteTarget, e=e)
            self._notifyDone(record, terminal)
            return
        d = self.sip.sendRequest(request, target)
        d.addCallbacks(self._notifyAnswered, self._notifyFailed,
                       callbackArgs=(record, terminal),
                       errbackArgs=(record, terminal))
        d.addErrback(lambda f: self._log.failure("NOTIFY handling failed", f))

    def _notifyAnswered(self, response, record, terminal):
        if response.code in NOTIFY_FATAL:
            self._count("sip.notifyRefused")
            return self._endInbound(record.key, record.callID, notify=False)
        self._notifyDone(record, terminal)

    def _notifyFailed(self, failure, record, terminal):
        failure.trap(TransactionTimeout, TransportFailure)
        self._count("sip.notifyFailed")
        return self._endInbound(record.key, record.callID, notify=False)

    def _notifyDone(self, record, terminal):
        key = record.key
        self._notifyBusy.discard(key)
        if terminal:
            self._cseq.pop(record.callID, None)
        queued = self._notifyNext.pop(key, None)
        if queued is not None:
            self._notify(*queued)

    def _pidfFor(self, record):
        return buildPIDF("pres:" + record.localURI.split(":", 1)[-1].split(";")[0],
                         record.presenceMap())

    def _stateHeader(self, record):
        remaining = max(0, int(record.expires - self.clock.seconds()))
        return f"{record.state};expires={remaining}"

    @defer.inlineCallbacks
    def _remove(self, record, keep=None):
        """
        Delete C{record} if the store still holds the version read (a
        compare-and-delete); if another writer changed it meanwhile,
        re-read and decide again, at most L{CONFLICT_RETRIES} times.

        @param keep: C{keep(current)} true when the (re-read) record must
            stay (it no longer fits the reason to delete it).
        @return: a Deferred firing with the record deleted, or L{None} if
            nothing was (gone, kept, or still conflicting).
        """
        key = record.key
        for attempt in range(CONFLICT_RETRIES):
            if attempt:
                self._count("store.conflictRetry")
                record = yield self.store.get(key)
            if record is None or (keep is not None and keep(record)):
                return None
            deleted = yield self.store.delete(key, record.version)
            if deleted:
                return record
        self._count("store.conflict")
        return None

    def _live(self, record):
        """
        Whether an inbound subscription must not be expired now: it has not
        expired (a refresh came after the timer was armed), or another
        instance owns it with a live lease (its timer ends it).
        """
        now = self.clock.seconds()
        return record.expires > now or (
            record.owner not in ("", self.instanceID) and record.leaseUntil > now)

    @defer.inlineCallbacks
    def _endInbound(self, key, callID, notify=True, reason="timeout",
                    expiring=False):
        """
        End an inbound subscription (RFC 7248 option B).

        @param expiring: its expiry timer fired: the record is left alone
            if it is still live (L{_live}).
        """
        if not expiring:
            self._disarm(key)
            self._notifyBusy.discard(key)
            self._notifyNext.pop(key, None)
        record = yield self.store.get(key)
        if record is None:
            return
        if expiring and record.callID == callID and record.expires > self.clock.seconds():
            if record.owner == self.instanceID and key not in self._timers:
                self._armFor(record)
            return

        def keep(current):
            return current.callID != callID or (expiring and self._live(current))

        record = yield self._remove(record, keep)
        if record is None:
            return
        if expiring:
            self._disarm(key)
            self._notifyBusy.discard(key)
            self._notifyNext.pop(key, None)
        if notify:
            closed = record.withPresence({})
            self._notify(closed, f"terminated;reason={reason}",
                         self._pidfFor(closed), terminal=True)
        self._presence(record.watcher, record.presentity, "unavailable")

    def _inboundExpired(self, key):
        d = self.store.get(key)
        d.addCallback(lambda r: r and self._endInbound(key, r.callID, expiring=True))
        return d

    def _refuse(self, request, transaction, code, reason=None, headers=()):
        self._count(f"sip.subscribe{code}")
        transaction.respond(makeResponse(request, code, reason, headers=headers))

    def sipRequestReceived(self, request, transaction):
        """
        Handle a SUBSCRIBE or NOTIFY that passed the request policy.
        """
        if request.method == "SUBSCRIBE":
            handler = self._sipSubscribe
        else:
            handler = self._sipNotify
        d = defer.maybeDeferred(handler, request, transaction)

        def failed(f):
            self._log.failure("Presence: {method} failed", f, method=request.method)
            transaction.respond(makeResponse(request, 500))

        d.addErrback(failed)
        return d

    @defer.inlineCallbacks
    def _sipSubscribe(self, request, transaction):
        headers = request.headers
        settings = self.settings
        package = eventPackage(headers)
        if package != "presence":
            return self._refuse(request, transaction, 489,
                                headers=[("Allow-Events", "presence")])
        if not acceptsPIDF(headers):
            return self._refuse(request, transaction, 406,
                                headers=[("Accept", PIDF_TYPE)])
        try:
            expires = _expiresHeader(headers)
        except ValueError:
            return self._refuse(request, transaction, 400, "Invalid Expires Header")
        if expires is None:
            expires = settings.expiresInterval
        if 0 < expires < settings.minExpiresInterval:
            return self._refuse(
                request, transaction, 423,
                headers=[("Min-Expires", str(settings.minExpiresInterval))])
        expires = min(expires, settings.expiresInterval)
        contact = headers.get("Contact")
        try:
            fromAddr = parseNameAddr(headers.get("From"))
            remoteTarget = str(parseNameAddr(_splitList(contact)[0]).uri) if contact else None
            toAddr = parseNameAddr(headers.get("To"))
        except (URIError, IndexError):
            return self._refuse(request, transaction, 400, "Invalid Contact Header")
        if remoteTarget is None:
            return self._refuse(request, transaction, 400, "Missing Contact Header")
        callID = headers.get("Call-ID")
        cseq = int(headers.get("CSeq").split()[0])
        toTag = toAddr.param("tag")
        if toTag:
            # A refresh or unsubscribe within an existing dialog: found by
            # its Call-ID and tags (its Request-URI is our Contact), in the
            # store, whichever instance created it.
            fromTag = fromAddr.param("tag") or ""
            records = yield self.store.findByCallID(callID)
            for record in records:
                if (record.direction == INBOUND and record.localTag == toTag
                        and record.remoteTag == fromTag):
                    break
            else:
                return self._refuse(request, transaction, 481)
            result = yield self._refreshInbound(
                request, transaction, record, cseq, expires, remoteTarget)
            return result
        try:
            presentity = _bare(self.mapper.sipTargetToJID(request.uri))
        except (AddressError, InvalidFormat) as e:
            return self._refuse(request, transaction, 404, str(e) or None)
        try:
            watcher = _bare(self.mapper.sipSenderToJID(str(fromAddr.uri)))
        except (AddressError, InvalidFormat) as e:
            return self._refuse(request, transaction, 403, str(e) or None)
        if JID(watcher).host != settings.xmppDomain:
            return self._refuse(request, transaction, 403,
                                "Sender domain not served by this gateway")
        if JID(presentity).host == settings.xmppDomain:
            return self._refuse(request, transaction, 482, "Loop Detected")
        key = subscriptionKey(INBOUND, watcher, presentity)
        record = yield self.store.get(key)

        if not self.limiter.allow(str(fromAddr.uri)):
            self._count("sip.rateLimited")
            return self._refuse(request, transaction, 503, "Too Many Subscriptions",
                                headers=[("Retry-After", "10")])
        if not self.xmpp.isAuthenticated:
            return self._refuse(request, transaction, 503, "XMPP link down",
                                headers=[("Retry-After", "5")])
        if expires == 0:
            # A fetch (RFC 6665 3.3.6): the cached state, or an empty NOTIFY.
            self._count("sip.subscribeFetch")
            fetched = record or Subscription(INBOUND, watcher, presentity)
            fetched = replace(fetched, callID=callID, localTag=secrets.token_hex(6),
                              remoteTag=fromAddr.param("tag") or "",
                              localURI=str(toAddr.uri), remoteURI=str(fromAddr.uri),
                              remoteTarget=remoteTarget,
                              routeSet=self._routeSet(headers), localCSeq=0,
                              expires=self.clock.seconds())
            transaction.respond(makeResponse(
                request, 200, toTag=fetched.localTag,
                headers=[("Expires", "0"), ("Contact", f"<{settings.contactURI}>")]))
            body = self._pidfFor(fetched) if fetched.presenceMap() else None
            fetched = replace(fetched, direction=INBOUND, presentity=presentity,
                              watcher=watcher + "#fetch-" + fetched.localTag)
            self._notify(fetched, "terminated;reason=timeout", body, terminal=True)
            return
        localTag = secrets.token_hex(6)
        for attempt in range(CONFLICT_RETRIES):
            # A new dialog replaces an old one (the watcher restarted).
            if record is None:
                total = yield self.store.count()
                if total >= settings.subscriptionsMax:
                    return self._refuse(request, transaction, 503,
                                        "Too Many Subscriptions",
                                        headers=[("Retry-After", "600")])
                mine = yield self.store.count(watcher)
                if mine >= settings.subscriptionsPerUserMax:
                    return self._refuse(request, transaction, 403,
                                        "Subscription Limit Reached")
            elif record.callID == callID and record.remoteCSeq >= cseq:
                # Another instance handled this very request (or a later
                # one in the dialog) meanwhile.
                return self._refuse(request, transaction, 500, "CSeq Out of Order")
            new = Subscription(
                INBOUND, watcher, presentity, state="pending",
                expires=self.clock.seconds() + expires, callID=callID,
                localTag=localTag, remoteTag=fromAddr.param("tag") or "",
                localURI=str(toAddr.uri), remoteURI=str(fromAddr.uri),
                remoteTarget=remoteTarget, routeSet=self._routeSet(headers),
                localCSeq=1, remoteCSeq=cseq,
                presence=record.presence if record is not None else "{}",
                owner=record.owner if record is not None else "",
                version=record.version if record is not None else 0)
            try:
                new = yield self._put(new)
                break
            except VersionConflict:
                self._count("store.conflictRetry")
                record = yield self.store.get(key)
        else:
            self._count("store.conflict")
            return self._refuse(request, transaction, 500, "Try Again",
                                headers=[("Retry-After", "1")])
        self._count("sip.subscribeNew")
        transaction.respond(makeResponse(
            request, 200, toTag=new.localTag,
            headers=[("Expires", str(expires)), ("Contact", f"<{settings.contactURI}>")]))
        self._arm(key, expires, self._inboundExpired)
        self._notify(new, self._stateHeader(new), cseq=new.localCSeq)
        self._presence(watcher, presentity, "subscribe")

    @defer.inlineCallbacks
    def _refreshInbound(self, request, transaction, record, cseq, expires,
                        remoteTarget):
        """
        A SUBSCRIBE refreshing (or, with C{expires} 0, ending) the inbound
        subscription C{record}, received in its dialog.
        """
        key, callID = record.key, record.callID
        if cseq <= record.remoteCSeq:
            return self._refuse(request, transaction, 500, "CSeq Out of Order")
        self._count("sip.subscribeRefresh")
        transaction.respond(makeResponse(
            request, 200, headers=[("Expires", str(expires)),
                                   ("Contact", f"<{self.settings.contactURI}>")]))
        if expires == 0:
            yield self._endInbound(key, callID, reason="timeout")
            return

        def refreshed(current):
            if current.callID != callID or current.remoteCSeq >= cseq:
                return None
            return replace(current, remoteCSeq=cseq, remoteTarget=remoteTarget,
                           expires=self.clock.seconds() + expires,
                           localCSeq=current.localCSeq + 1)

        record = yield self._update(record, refreshed)
        if record is None:
            return
        self._arm(key, expires, self._inboundExpired)
        body = self._pidfFor(record) if record.presenceMap() else None
        if record.state == "pending":
            body = None
        self._notify(record, self._stateHeader(record), body, cseq=record.localCSeq)

    def _routeSet(self, headers):
        routes = []
        for value in headers.getAll("Record-Route"):
            routes.extend(_splitList(value))
        return tuple(routes)

    @defer.inlineCallbacks
    def _xmppToInbound(self, stanza, type, sender, recipient):
        """
        Presence from an XMPP user (C{sender}, full or bare) to a SIP
        watcher's JID (C{recipient}, bare).
        """
        key = subscriptionKey(INBOUND, recipient, _bare(sender))
        record = yield self.store.get(key)
        if record is None:
            return False
        if type == "subscribed":
            def approved(current):
                if current.state != "pending":
                    return None
                return replace(current, state="active",
                               localCSeq=current.localCSeq + 1)

            record = yield self._update(record, approved)
            if record is not None:
                self._notify(record, self._stateHeader(record),
                             self._pidfFor(record) if record.presenceMap() else None,
                             cseq=record.localCSeq)
                self._presence(record.watcher, record.presentity, "probe")
            return True
        if type == "unsubscribed":
            self._disarm(key)
            # The subscription stored now, whichever dialog it is.
            record = yield self._remove(record)
            if record is not None:
                self._notify(record, "terminated;reason=rejected", None, terminal=True)
            return True
        if type in (None, "unavailable"):
            resource = JID(sender).resource or ""
            value = _presenceValue(stanza, type is None)

            def changed(current):
                mapping = current.presenceMap()
                if type is None:
                    mapping = {r: v for r, v in mapping.items() if v.get("available")}
                    mapping[resource] = value
                else:
                    mapping.pop(resource, None)
                    if not any(v.get("available") for v in mapping.values()):
                        mapping = {resource: value}
                current = current.withPresence(mapping)
                if current.state == "active":
                    current = replace(current, localCSeq=current.localCSeq + 1)
                return current

            record = yield self._update(record, changed)
            if record is not None and record.state == "active":
                self._notify(record, self._stateHeader(record), self._pidfFor(record),
                             cseq=record.localCSeq)
            return True
        return False

    # -- outbound: the gateway as subscriber

    def _mapOutbound(self, watcher, presentity):
        """
        The SIP URIs of an outbound subscription.

        @return: C{(fromURI, requestURI)}.
        @raise AddressError: if either cannot be mapped.
        """
        return (self.mapper.jidSenderToSIP(watcher),
                self.mapper.jidTargetToSIP(presentity))

    @defer.inlineCallbacks
    def _startOutbound(self, watcher, presentity, previous=None, expires=None):
        """
        Start a new SUBSCRIBE dialog for an outbound subscription.

        @return: a Deferred firing with L{None}, or with an error condition
            name when refused by the caps.
        """
        settings = self.settings
        if previous is None:
            total = yield self.store.count()
            if total >= settings.subscriptionsMax:
                return "resource-constraint"
            mine = yield self.store.count(watcher)
            if mine >= settings.subscriptionsPerUserMax:
                return "policy-violation"
        try:
            fromURI, requestURI = self._mapOutbound(watcher, presentity)
        except AddressError:
            return "item-not-found"
        expires = expires or settings.expiresInterval
        record = Subscription(
            OUTBOUND, watcher, presentity, state="pending",
            expires=self.clock.seconds() + expires,
            callID=secrets.token_hex(16), localTag=secrets.token_hex(6),
            localURI=fromURI, remoteURI=requestURI, remoteTarget=requestURI,
            localCSeq=0,
            presence=previous.presence if previous is not None else "{}",
            owner=previous.owner if previous is not None else "",
            version=previous.version if previous is not None else 0)
        record = yield self._put(record)
        self._subscribe(record, expires)
        return None

    def _subscribe(self, record, expires, reserved=None):
        """
        Send a SUBSCRIBE in C{record}'s dialog.

        @param reserved: its CSeq, already written to the store as
            C{localCSeq} (a refresh, L{_probeAnswered}), or L{None}.
        """
        cseq = self._nextCSeq(record, reserved)
        request = self._dialogRequest(
            record, "SUBSCRIBE", cseq,
            [("Accept", PIDF_TYPE), ("Expires", str(expires))])
        self._count("sip.subscribeSent")
        try:
            target = self._target(record)
        except URIError:
            self._count("sip.subscribeUnroutable")
            return self._outboundGone(record.key, record.callID)
        d = self.sip.sendRequest(request, target)
        d.addBoth(self._subscribeAnswered, record.key, record.callID, expires, cseq)
        d.addErrback(lambda f: self._log.failure("SUBSCRIBE handling failed", f))

    @defer.inlineCallbacks
    def _subscribeAnswered(self, result, key, callID, expires, cseq):
        record = yield self.store.get(key)
        if record is None or record.callID != callID:
            return

        def answered(current, **changes):
            # Re-applied to a fresh read after a lost compare-and-set.
            if current.callID != callID:
                return None
            return replace(current, localCSeq=max(current.localCSeq, cseq), **changes)

        retryDue = self.clock.seconds() + self.settings.retryInterval
        code = getattr(result, "code", None)
        if code is None:
            # A timeout or transport failure: transient.
            self._count("sip.subscribeFailed")
            if expires:
                record = yield self._update(record, answered, due=retryDue)
                if record is not None:
                    self._arm(key, self.settings.retryInterval, self._retry)
            return
        if expires == 0:
            return
        if 200 <= code < 300:
            headers = result.headers
            try:
                granted = _expiresHeader(headers)
            except ValueError:
                granted = None
            granted = expires if granted is None else min(granted, expires)
            changes = {"expires": self.clock.seconds() + granted}
            contact = headers.get("Contact")
            if contact:
                try:
                    changes["remoteTarget"] = str(parseNameAddr(_splitList(contact)[0]).uri)
                except (URIError, IndexError):
                    pass
            routes = tuple(reversed(self._routeSet(headers)))

            def accepted(current):
                more = dict(changes)
                if not current.remoteTag:
                    more["remoteTag"] = _tagOf(headers.get("To", ""))
                if routes and (max(current.localCSeq, cseq) <= 1 or not current.routeSet):
                    more["routeSet"] = routes
                return answered(current, **more)

            record = yield self._update(record, accepted)
            if record is not None and granted:
                self._armRefresh(record)
            return
        if code in SUBSCRIBE_FATAL:
            self._count("sip.subscribeRejected")
            yield self._outboundGone(key, callID)
            return
        if code == 423:
            try:
                minimum = int(result.headers.get("Min-Expires", ""))
            except ValueError:
                minimum = 0
            if expires < minimum <= 86400:
                yield self._startOutbound(record.watcher, record.presentity,
                                          record, minimum)
                return
        if code == 481:
            yield self._startOutbound(record.watcher, record.presentity, record)
            return
        self._count("sip.subscribeFailed")
        record = yield self._update(record, answered, due=retryDue)
        if record is not None:
            self._arm(key, self.settings.retryInterval, self._retry)

    @defer.inlineCallbacks
    def _retry(self, key):
        record = yield self.store.get(key)
        if record is not None:
            yield self._startOutbound(record.watcher, record.presentity, record)

    @defer.inlineCallbacks
    def _outboundGone(self, key, callID):
        """
        The SIP side refused for good: tell the XMPP user and forget it.
        """
        self._disarm(key)
        record = yield self.store.get(key)
        if record is None:
            return
        record = yield self._remove(record, lambda r: r.callID != callID)
        if record is not None:
            self._presence(record.presentity, record.watcher, "unsubscribed")

    def _refreshDue(self, key):
        """
        Time to refresh: probe the XMPP user first (RFC 7248 section 7).
        """
        d = self.store.get(key)

        def probe(record):
            if record is None:
                return
            call = self._probing.pop(key, None)
            if call is not None and call.active():
                call.cancel()
            self._probing[key] = self.clock.callLater(
                self.settings.probeTimeout, self._probeAnswered, key, True)
            self._presence(record.presentity, record.watcher, "probe")
        d.addCallback(probe)
        return d

    @defer.inlineCallbacks
    def _probeAnswered(self, key, refresh):
        call = self._probing.pop(key, None)
        if call is not None and call.active():
            call.cancel()
        record = yield self.store.get(key)
        if record is None:
            return
        now = self.clock.seconds()
        if record.owner not in ("", self.instanceID) and record.leaseUntil > now:
            # Another instance took the record over while we probed: its
            # timers run it now.
            self._count("lease.yielded")
            return
        if refresh:
            if record.remoteTag:
                # Reserve the refresh's CSeq in the store first (one
                # compare-and-set, also claiming the record): an instance
                # racing us for it, or taking over after we die with the
                # SUBSCRIBE in flight, never sends the same number. The
                # loser stands down.
                try:
                    record = yield self.store.put(self._claim(
                        replace(record, localCSeq=record.localCSeq + 1), due=now))
                except VersionConflict:
                    self._count("lease.lost")
                    return
                self._count("sip.refresh")
                self._subscribe(record, self.settings.expiresInterval,
                                reserved=record.localCSeq)
            else:
                self._count("sip.refresh")
                yield self._startOutbound(record.watcher, record.presentity, record)
        else:
            self._count("sip.lapse")
            callID = record.callID
            self._arm(key, record.expires - self.clock.seconds(),
                      lambda key: self._lapse(key, callID))

    @defer.inlineCallbacks
    def _lapse(self, key, callID):
        """
        The subscription of an away user expires: dormant, unless its
        dialog (C{callID}) has been replaced meanwhile.
        """
        record = yield self.store.get(key)
        if record is not None:
            yield self._update(
                record, lambda r: replace(r, state="dormant", presence="{}")
                if r.callID == callID else None)

    def _resubscribeLater(self, record, delay):
        self._arm(record.key, delay, self._retry)

    @defer.inlineCallbacks
    def _sipNotify(self, request, transaction):
        headers = request.headers
        try:
            state, reason, expires, retryAfter = parseSubscriptionState(
                headers.get("Subscription-State"))
        except ValueError as e:
            return self._refuse(request, transaction, 400, str(e))
        if eventPackage(headers) != "presence":
            return self._refuse(request, transaction, 489,
                                headers=[("Allow-Events", "presence")])
        callID = headers.get("Call-ID")
        fromTag = _tagOf(headers.get("From", ""))
        # Found by Call-ID in the store, whichever instance sent the
        # SUBSCRIBE (our Call-IDs are random: one outbound record each).
        records = yield self.store.findByCallID(callID)
        record = next((r for r in records if r.direction == OUTBOUND), None)
        if record is None:
            if state == "terminated":
                # The last NOTIFY of a subscription we already ended.
                transaction.respond(makeResponse(request, 200))
                return
            return self._refuse(request, transaction, 481)
        if record.remoteTag and fromTag != record.remoteTag:
            return self._refuse(request, transaction, 481)
        cseq = int(headers.get("CSeq").split()[0])
        if record.remoteCSeq and cseq <= record.remoteCSeq:
            return self._refuse(request, transaction, 500, "CSeq Out of Order")
        mapping = None
        contentType = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if request.body:
            if contentType != PIDF_TYPE:
                return self._refuse(request, transaction, 415,
                                    headers=[("Accept", PIDF_TYPE)])
            try:
                mapping = parsePIDF(request.body)
            except PIDFError as e:
                return self._refuse(request, transaction, 400, str(e)[:100])
        transaction.respond(makeResponse(request, 200))
        self._count("sip.notifyReceived")
        key = record.key
        changes = {"remoteCSeq": cseq}
        contact = headers.get("Contact")
        if contact:
            try:
                changes["remoteTarget"] = str(parseNameAddr(_splitList(contact)[0]).uri)
            except (URIError, IndexError):
                pass
        seen = {}

        def notified(current, **more):
            # Re-applied to a fresh read after a lost compare-and-set; a
            # later NOTIFY handled meanwhile (by another instance) wins.
            if (current.callID != callID or current.remoteCSeq >= cseq
                    or (current.remoteTag and current.remoteTag != fromTag)):
                return None
            seen["wasPending"] = current.state == "pending"
            seen["previous"] = current.presenceMap()
            return replace(current, remoteTag=current.remoteTag or fromTag,
                           **changes, **more)

        if state == "terminated":
            if reason in TERMINAL_REASONS:
                yield self._outboundGone(key, callID)
                return
            if reason in ("deactivated", "timeout"):
                delay = 0
            else:
                delay = retryAfter if retryAfter is not None else self.settings.retryInterval
            record = yield self._update(record, notified,
                                        due=self.clock.seconds() + delay)
            if record is not None:
                self._resubscribeLater(record, delay)
            return
        if expires is not None:
            changes["expires"] = self.clock.seconds() + expires
        if state == "active":
            changes["state"] = "active"
        if mapping is not None:
            changes["presence"] = record.withPresence(mapping).presence
        record = yield self._update(record, notified)
        if record is None:
            return
        wasPending, previous = seen["wasPending"], seen["previous"]
        if expires is not None and key not in self._probing:
            self._armRefresh(record)
        if state != "active":
            return
        if wasPending:
            self._presence(record.presentity, record.watcher, "subscribed")
        if mapping is None:
            return
        if not self.limiter.allow(record.remoteURI):
            self._count("sip.notifyRateLimited")
            return
        for resource in previous:
            if resource not in mapping:
                self._presence(f"{record.presentity}/{resource}", record.watcher,
                               "unavailable")
        self._sendState(record, mapping)

    def _sendState(self, record, mapping):
        """
        Send the presence of a SIP user to an XMPP watcher.
        """
        if not mapping:
            self._presence(record.presentity, record.watcher, "unavailable")
            return
        for resource, value in sorted(mapping.items()):
            self._presence(f"{record.presentity}/{resource}", record.watcher,
                           None if value.get("available") else "unavailable", value)

    @defer.inlineCallbacks
    def _xmppToOutbound(self, stanza, type, sender, recipient):
        """
        Presence about an outbound subscription: from an XMPP user
        (C{sender}) to a SIP user's JID (C{recipient}).
        """
        watcher = _bare(sender)
        key = subscriptionKey(OUTBOUND, watcher, recipient)
        record = yield self.store.get(key)
        if type == "subscribe":
            if record is not None and record.state == "active":
                self._presence(recipient, watcher, "subscribed")
                self._sendState(record, record.presenceMap())
                return True
            if record is not None and record.state == "pending":
                return True
            refusal = yield self._startOutbound(watcher, recipient, record)
            if refusal is not None:
                self._count("xmpp.subscribeRefused")
                self._sendXMPP(errors.buildStanzaError(stanza, refusal))
            return True
        if type == "unsubscribe":
            if record is not None:
                self._disarm(key)
                record = yield self._remove(record)
                if record is not None and record.remoteTag:
                    self._subscribe(record, 0)
            self._presence(recipient, watcher, "unsubscribed")
            return True
        if type == "probe":
            if record is None or record.state == "dormant":
                refusal = yield self._startOutbound(watcher, recipient, record)
                if refusal is not None:
                    self._count("xmpp.probeRefused")
                self._presence(recipient, watcher, "unavailable")
                return True
            self._sendState(record, record.presenceMap())
            return True
        if key in self._probing:
            if type in (None, "unavailable"):
                yield self._probeAnswered(key, type is None)
            elif type in ("unsubscribed", "error"):
                yield self._probeAnswered(key, True)
        return False

    def xmppPresenceReceived(self, stanza):
        """
        Handle a C{<presence/>} stanza from the XMPP side.

        @return: a Deferred firing when it has been handled.
        """
        sender = stanza.getAttribute("from")
        recipient = stanza.getAttribute("to")
        type = stanza.getAttribute("type")
        try:
            if not sender or not recipient:
                raise InvalidFormat("missing address")
            recipientJID = JID(recipient)
            JID(sender)
        except (InvalidFormat, UnicodeError, ValueError, IndexError):
            self._count("xmpp.malformed")
            return defer.succeed(None)
        if recipientJID.host != self.settings.xmppDomain or not recipientJID.user:
            self._count("xmpp.notForUs")
            return defer.succeed(None)
        if type not in ("error",) and not self.limiter.allow(_bare(sender)):
            self._count("xmpp.rateLimited")
            return defer.succeed(None)
        self._count("xmpp.presence")
        bare = recipientJID.userhost()

        @defer.inlineCallbacks
        def handle():
            inbound = False
            if type in (None, "unavailable", "subscribed", "unsubscribed"):
                inbound = yield self._xmppToInbound(stanza, type, sender, bare)
            if type in ("subscribed", "unsubscribed") and inbound:
                return
            yield self._xmppToOutbound(stanza, type, sender, bare)

        d = handle()
        d.addErrback(lambda f: self._log.failure("Presence stanza failed", f))
        return d


def _presenceValue(stanza, available):
    """
    The C{show}/C{status}/C{priority} of a presence stanza.
    """
    value = {"available": available, "show": None, "status": None, "priority": None}
    lang = stanza.getAttribute((NS_XML, "lang"))
    for child in stanza.elements():
        if not errors.isStanzaChild(stanza, child):
            continue
        text = "".join(c for c in child.children if isinstance(c, str)).strip()
        if child.name == "show" and text in _SHOWS:
            value["show"] = text
        elif child.name == "status" and value["status"] is None:
            value["status"] = text[:1000] or None
        elif child.name == "priority":
            try:
                value["priority"] = max(-128, min(127, int(text)))
            except ValueError:
                pass
    if lang:
        value["lang"] = lang
    return value
