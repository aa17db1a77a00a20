# -*- test-case-name: tests.test_chatstates -*-
"""
Typing notifications: RFC 3994 isComposing (page mode, in a SIP MESSAGE
body of type C{application/im-iscomposing+xml}) <-> XEP-0085 chat states
(standalone, bodyless C{<message/>}s), with the RFC 7573 section 6 table
(interworking.md 5.1):

  ==================  =====================  ==================
  isComposing         XEP-0085 (to XMPP)     from XMPP
  ==================  =====================  ==================
  C{active}           C{<composing/>}        C{<composing/>}
  C{idle} (or other)  C{<active/>}           C{<active/>}, C{<paused/>},
                                             C{<inactive/>}
  (none)                                     C{<gone/>}: not mapped
  ==================  =====================  ==================

Only what a peer sent is mapped; the gateway invents no state (project
decision 7). Repeated identical standalone notifications are not relayed
(XEP-0085 section 5.6), e.g. the periodic isComposing refresh, or
C{<paused/>} after C{<active/>} (both idle). A content message resets the
pair's state (RFC 3994: the receiver goes idle on a content message).

Each direction can be switched off. Off towards XMPP, an isComposing
MESSAGE is answered 415 (as before this module), which tells an RFC 3994
composer to stop (section 4). Towards SIP, a C{415} answer to an isComposing
MESSAGE turns the notifications off for that SIP URI for
C{suppressInterval} seconds (RFC 3994 section 4: the composer MUST stop).
Failures of notifications are never bounced to the XMPP sender.

L{ChatStates} is a message extension of L{xmppgw.router.MessageRouter}
(the methods C{sipToStanza}, C{decorateStanza}, C{bodylessToSIP},
C{decorateOutgoing} and C{sipResult}).
"""

from collections import OrderedDict

from twisted.words.xish import domish

from xmppgw import messages
from xmppgw.addressing import AddressError
from xmppgw.safexml import parseDocument

__all__ = [
    "NS_CHATSTATES",
    "NS_ISCOMPOSING",
    "ISCOMPOSING_TYPE",
    "ChatStates",
    "Duplicate",
    "IsComposingError",
    "parseIsComposing",
    "buildIsComposing",
    "chatStateOf",
    "xmppToSIPState",
    "sipToXMPPState",
]

NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_ISCOMPOSING = "urn:ietf:params:xml:ns:im-iscomposing"
ISCOMPOSING_TYPE = "application/im-iscomposing+xml"
STATES = frozenset(["active", "composing", "paused", "inactive", "gone"])


class IsComposingError(ValueError):
    """
    An isComposing document cannot be used.
    """


class Duplicate(messages.NotRelayed):
    """
    A notification repeating the state last relayed for this pair: the
    SIP side gets its success answer, nothing is relayed.
    """


def parseIsComposing(body):
    """
    Parse an isComposing document (RFC 3994 section 5).

    @param body: the MESSAGE body.
    @return: C{(state, refresh)}: C{"active"} or C{"idle"} (unknown states
        are idle, section 6) and the refresh interval or L{None}.
    @raise IsComposingError: when malformed (DOCTYPEs are refused).
    """
    try:
        root = parseDocument(body, "isComposing")
    except ValueError as e:
        raise IsComposingError(str(e))
    if root.tag != f"{{{NS_ISCOMPOSING}}}isComposing":
        raise IsComposingError("not an isComposing document")
    state = root.find(f"{{{NS_ISCOMPOSING}}}state")
    if state is None:
        raise IsComposingError("isComposing without state")
    value = (state.text or "").strip().lower()
    refresh = root.find(f"{{{NS_ISCOMPOSING}}}refresh")
    seconds = None
    if refresh is not None and (refresh.text or "").strip().isdigit():
        seconds = int(refresh.text.strip())
    return ("active" if value == "active" else "idle"), seconds


def buildIsComposing(state, refresh=None):
    """
    Build an isComposing document.

    @param state: C{"active"} or C{"idle"}.
    @param refresh: seconds (C{active} only; RFC 3994 section 3.3: at
        least 60), or L{None}.
    @rtype: L{bytes}
    """
    if state not in ("active", "idle"):
        raise ValueError(f"bad isComposing state {state!r}")
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n',
             f'<isComposing xmlns="{NS_ISCOMPOSING}">',
             f"<state>{state}</state>",
             "<contenttype>text/plain</contenttype>"]
    if refresh is not None and state == "active":
        parts.append(f"<refresh>{int(refresh)}</refresh>")
    parts.append("</isComposing>\n")
    return "".join(parts).encode("utf-8")


def chatStateOf(stanza):
    """
    The XEP-0085 state a C{<message/>} carries, or L{None}.
    """
    for child in stanza.elements():
        if child.uri == NS_CHATSTATES and child.name in STATES:
            return child.name
    return None


def xmppToSIPState(state):
    """
    RFC 7573 section 6: XEP-0085 -> isComposing; L{None} for C{gone} (and
    anything unknown).
    """
    if state == "composing":
        return "active"
    if state in ("active", "paused", "inactive"):
        return "idle"
    return None


def sipToXMPPState(state):
    """
    RFC 7573 section 6: isComposing -> XEP-0085.
    """
    return "composing" if state == "active" else "active"


def _hasBody(stanza):
    return any(child.name == "body" for child in stanza.elements())


def _contentType(request):
    value = request.headers.get("Content-Type")
    if not value:
        return None
    try:
        return messages.parseMediaType(value)[0]
    except ValueError:
        return None


class ChatStates:
    """
    The chat-state message extension (see the module docstring).

    @ivar stats: counters by event.
    """

    def __init__(self, clock, toSIP=True, toXMPP=True, suppressInterval=3600.0,
                 maxPairs=10000):
        """
        @param clock: an L{IReactorTime} (for the 415 suppression).
        @param toSIP: map XMPP chat states to isComposing.
        @param toXMPP: map isComposing to XMPP chat states.
        @param suppressInterval: seconds a SIP URI that answered 415 gets
            no isComposing.
        @param maxPairs: most sender/recipient pairs (and suppressed URIs)
            remembered.
        """
        self.clock = clock
        self.toSIP = toSIP
        self.toXMPP = toXMPP
        self.suppressInterval = suppressInterval
        self.maxPairs = maxPairs
        self._last = OrderedDict()
        self._suppressed = OrderedDict()
        self.stats = {}

    def _count(self, name):
        self.stats[name] = self.stats.get(name, 0) + 1

    def _remember(self, table, key, value):
        table.pop(key, None)
        table[key] = value
        while len(table) > self.maxPairs:
            table.popitem(last=False)

    def _isNew(self, key, state):
        if self._last.get(key) == state:
            return False
        self._remember(self._last, key, state)
        return True

    def suppressed(self, uri):
        """
        Whether C{uri} answered 415 to isComposing recently.
        """
        until = self._suppressed.get(uri)
        if until is None:
            return False
        if self.clock.seconds() >= until:
            del self._suppressed[uri]
            return False
        return True

    # SIP -> XMPP

    def sipToStanza(self, request, mapper, messageID):
        """
        Map an isComposing MESSAGE to a standalone chat-state message.

        @return: the stanza, or L{None} if C{request} is not isComposing.
        @raise messages.MappingError: 415 when this direction is off, 400
            for a malformed document, or as L{messages.sipToStanza} for
            addresses.
        @raise Duplicate: when the state repeats the last one relayed.
        """
        if _contentType(request) != ISCOMPOSING_TYPE:
            return None
        if not self.toXMPP:
            raise messages.MappingError(
                415, "isComposing not supported",
                headers=[("Accept", messages.ACCEPT)])
        try:
            state, _ = parseIsComposing(request.body)
        except IsComposingError as e:
            raise messages.MappingError(400, str(e)[:100])
        # Reuse the message mapping for addresses and checks, on a stand-in
        # text body.
        standIn = request.__class__(request.method, request.uri,
                                    request.headers.copy(), b"-")
        standIn.headers.set("Content-Type", "text/plain")
        template = messages.sipToStanza(standIn, mapper, messageID)
        stanza = domish.Element((None, "message"))
        for name in ("to", "from", "id"):
            stanza[name] = template[name]
        stanza["type"] = "chat"
        xmppState = sipToXMPPState(state)
        if not self._isNew((stanza["from"], stanza["to"]), xmppState):
            self._count("sip.duplicate")
            raise Duplicate(xmppState)
        stanza.addElement((NS_CHATSTATES, xmppState))
        self._count("sip.mapped")
        return stanza

    def decorateStanza(self, request, stanza):
        """
        A content message from SIP: the pair is idle again.
        """
        self._last.pop((stanza["from"], stanza["to"]), None)

    # XMPP -> SIP

    def bodylessToSIP(self, stanza, mapper):
        """
        Map a standalone chat-state message to an isComposing MESSAGE.

        @return: an L{messages.OutgoingMessage}, or L{None} when there is
            nothing to send (no state, C{gone}, direction off, peer
            suppressed, duplicate, unmappable addresses).
        """
        state = xmppToSIPState(chatStateOf(stanza))
        if state is None or not self.toSIP:
            return None
        sender, recipient = stanza.getAttribute("from"), stanza.getAttribute("to")
        if not sender or not recipient:
            return None
        try:
            requestURI = mapper.jidTargetToSIP(recipient)
            fromURI = mapper.jidSenderToSIP(sender)
        except (AddressError, ValueError):
            return None
        if self.suppressed(requestURI):
            self._count("xmpp.suppressed")
            return None
        if not self._isNew((sender, recipient), state):
            self._count("xmpp.duplicate")
            return None
        self._count("xmpp.mapped")
        return messages.OutgoingMessage(
            requestURI=requestURI, fromURI=fromURI, toURI=requestURI,
            headers=(), body=buildIsComposing(state, 120 if state == "active" else None),
            contentType=ISCOMPOSING_TYPE, notification=True)

    def decorateOutgoing(self, stanza, message):
        """
        A content message to SIP: the pair is idle again.
        """
        self._last.pop((stanza.getAttribute("from"), stanza.getAttribute("to")), None)
        return message

    def sipResult(self, message, code):
        """
        The SIP answer to a MESSAGE we sent: 415 to isComposing turns it off
        for that URI for a while.
        """
        if message.contentType == ISCOMPOSING_TYPE and code == 415:
            self._count("sip.refused415")
            self._remember(self._suppressed, message.requestURI,
                           self.clock.seconds() + self.suppressInterval)
