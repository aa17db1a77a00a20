# -*- test-case-name: tests.test_receipts -*-
"""
Delivery receipts: XEP-0184 <-> RFC 5438 IMDN (interworking.md 5.2, 5.3).
No standard defines this mapping; this is the gateway's own, and it is off
unless C{[presence] receipts = true}.

XMPP -> SIP: a C{<message/>} with a body, an C{id} and C{<request
xmlns='urn:xmpp:receipts'/>} becomes a MESSAGE whose body is
C{message/cpim} (RFC 3862) wrapping the C{text/plain}, with the IMDN
headers RFC 5438 section 7.1.1 requires (C{NS: imdn <urn:ietf:params:imdn>},
C{imdn.Message-ID}, C{DateTime},
C{imdn.Disposition-Notification: positive-delivery}). A positive-delivery
IMDN coming back (a MESSAGE with C{message/cpim} wrapping
C{message/imdn+xml}, C{<delivered/>}) from the SIP user the message went
to becomes C{<message><received xmlns='urn:xmpp:receipts' id='...'/></message>}
to the XMPP sender.

SIP -> XMPP: a CPIM-wrapped MESSAGE asking for C{positive-delivery} gets
C{<request xmlns='urn:xmpp:receipts'/>} on its stanza; the XMPP user's
C{<received id='...'/>} becomes a positive-delivery IMDN, a new MESSAGE
to the original sender (RFC 5438 section 11, C{Content-Disposition:
notification}).

The SIP 2xx to a MESSAGE is I{never} turned into a receipt (RFC 3428
section 4, RFC 5438 section 8: a 202 only says a relay took it). IMDNs
other than positive delivery (failed, displayed, processed) and IMDNs for
messages the gateway does not know (or from someone else than the
recipient) are answered with the success code and not relayed.

The pending correlations are bounded (C{maxPending}) and expire after
C{pendingTTL} seconds, on the injected clock. They live in memory: an IMDN
that arrives after a restart, or at another instance, is dropped (a
receipt is advisory).

L{Receipts} is a message extension of L{xmppgw.router.MessageRouter}.
"""

import secrets
import time
from collections import OrderedDict
from xml.sax.saxutils import escape

from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from xmppgw import messages
from xmppgw.addressing import AddressError
from xmppgw.safexml import parseDocument
from xmppgw.sip.uri import parseNameAddr

__all__ = [
    "NS_RECEIPTS",
    "NS_IMDN",
    "IMDN_TYPE",
    "CPIM_TYPE",
    "Receipts",
    "Ignored",
    "parseCPIM",
    "buildCPIM",
    "parseIMDN",
    "buildIMDN",
]

NS_RECEIPTS = "urn:xmpp:receipts"
NS_IMDN = "urn:ietf:params:xml:ns:imdn"
IMDN_TYPE = "message/imdn+xml"
CPIM_TYPE = "message/cpim"


class Ignored(messages.NotRelayed):
    """
    A SIP MESSAGE the gateway consumes (an IMDN it does not relay): answer
    it with the success code, relay nothing.
    """


def parseCPIM(body):
    """
    Split a C{message/cpim} body (RFC 3862).

    @return: C{(headers, mimeHeaders, content)}; C{headers} maps the
        lower-cased CPIM header name (with its C{imdn.} prefix) to the first
        value; C{mimeHeaders} likewise.
    @raise messages.MappingError: 400 when malformed.
    """
    headers, rest = messages._splitHeaderBlock(body)
    mimeHeaders, content = messages._splitHeaderBlock(rest)
    return dict(reversed(headers)), dict(reversed(mimeHeaders)), content


def _dateTime(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def buildCPIM(fromURI, toURI, headers, contentType, content, extraMIME=()):
    """
    Build a C{message/cpim} body.

    @param headers: more CPIM headers, C{(name, value)} pairs, in order.
    @rtype: L{bytes}
    """
    lines = [f"From: <{fromURI}>", f"To: <{toURI}>",
             "NS: imdn <urn:ietf:params:imdn>"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    mime = [f"Content-Type: {contentType}"]
    mime.extend(f"{name}: {value}" for name, value in extraMIME)
    text = "\r\n".join(lines) + "\r\n\r\n" + "\r\n".join(mime) + "\r\n\r\n"
    return text.encode("utf-8") + content


def parseIMDN(content):
    """
    Parse a C{message/imdn+xml} document (RFC 5438 section 6).

    @return: C{(messageID, kind, status)}: C{kind} is C{"delivery"},
        C{"display"} or C{"processing"}, C{status} the status element's
        child name (C{delivered}, C{failed}, ...).
    @raise ValueError: when malformed (DOCTYPEs are refused).
    """
    root = parseDocument(content, "IMDN")
    if root.tag != f"{{{NS_IMDN}}}imdn":
        raise ValueError("not an IMDN document")
    messageID = root.find(f"{{{NS_IMDN}}}message-id")
    if messageID is None or not (messageID.text or "").strip():
        raise ValueError("IMDN without message-id")
    for kind in ("delivery", "display", "processing"):
        notification = root.find(f"{{{NS_IMDN}}}{kind}-notification")
        if notification is not None:
            status = notification.find(f"{{{NS_IMDN}}}status")
            children = list(status) if status is not None else []
            name = children[0].tag.split("}")[-1] if children else None
            return messageID.text.strip(), kind, name
    raise ValueError("IMDN without notification")


def buildIMDN(messageID, dateTime, recipientURI, originalRecipientURI=None):
    """
    A positive-delivery IMDN document.

    @rtype: L{bytes}
    """
    original = ""
    if originalRecipientURI:
        original = (f"<original-recipient-uri>{escape(originalRecipientURI)}"
                    "</original-recipient-uri>")
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<imdn xmlns="{NS_IMDN}">'
            f"<message-id>{escape(messageID)}</message-id>"
            f"<datetime>{escape(dateTime)}</datetime>"
            f"<recipient-uri>{escape(recipientURI)}</recipient-uri>"
            f"{original}"
            "<delivery-notification><status><delivered/></status>"
            "</delivery-notification></imdn>\n")
    return text.encode("utf-8")


def _contentType(request):
    value = request.headers.get("Content-Type")
    if not value:
        return None
    try:
        return messages.parseMediaType(value)[0]
    except ValueError:
        return None


def _bare(jid):
    try:
        return JID(jid).userhost()
    except (InvalidFormat, UnicodeError, ValueError, IndexError):
        return None


def _requestsReceipt(stanza):
    return any(child.uri == NS_RECEIPTS and child.name == "request"
               for child in stanza.elements())


def _receivedID(stanza):
    for child in stanza.elements():
        if child.uri == NS_RECEIPTS and child.name == "received":
            return child.getAttribute("id")
    return None


class Receipts:
    """
    The receipt message extension (see the module docstring).

    @ivar stats: counters by event.
    """

    def __init__(self, clock, enabled=True, maxPending=10000, pendingTTL=3600.0):
        self.clock = clock
        self.enabled = enabled
        self.maxPending = maxPending
        self.pendingTTL = pendingTTL
        # imdn.Message-ID -> (expiry, xmppSender, stanzaID, sipRecipientJID)
        self._outgoing = OrderedDict()
        # stanza id -> (expiry, imdnID, dateTime, sipSenderURI, recipientURI,
        #               xmppRecipientBare)
        self._incoming = OrderedDict()
        self.stats = {}

    def _count(self, name):
        self.stats[name] = self.stats.get(name, 0) + 1

    def _remember(self, table, key, value):
        now = self.clock.seconds()
        while table:
            first = next(iter(table))
            if table[first][0] > now and len(table) < self.maxPending:
                break
            table.popitem(last=False)
        table.pop(key, None)
        table[key] = (now + self.pendingTTL,) + value

    def _take(self, table, key):
        entry = table.pop(key, None)
        if entry is None or entry[0] <= self.clock.seconds():
            return None
        return entry[1:]

    # SIP -> XMPP

    def sipToStanza(self, request, mapper, messageID):
        """
        Map an IMDN MESSAGE to a C{<received/>} message.

        @return: the stanza, or L{None} if C{request} is not an IMDN (or
            receipts are off).
        @raise Ignored: for an IMDN that is not relayed.
        @raise messages.MappingError: for malformed CPIM or unmappable
            addresses.
        """
        if not self.enabled or _contentType(request) != CPIM_TYPE:
            return None
        cpim, mime, content = parseCPIM(request.body)
        try:
            inner = messages.parseMediaType(mime.get("content-type", "text/plain"))[0]
        except ValueError:
            raise messages.MappingError(400, "Malformed Content-Type in message/cpim")
        if inner != IMDN_TYPE:
            return None
        try:
            imdnID, kind, status = parseIMDN(content)
        except ValueError as e:
            raise messages.MappingError(400, str(e)[:100])
        if kind != "delivery" or status != "delivered":
            self._count("sip.imdnIgnored")
            raise Ignored(f"{kind} {status}")
        pending = self._take(self._outgoing, imdnID)
        standIn = request.__class__(request.method, request.uri,
                                    request.headers.copy(), b"-")
        standIn.headers.set("Content-Type", "text/plain")
        template = messages.sipToStanza(standIn, mapper, messageID)
        if pending is None or _bare(template["from"]) != pending[2]:
            self._count("sip.imdnUnknown")
            raise Ignored("unknown message")
        xmppSender, stanzaID, _ = pending
        stanza = domish.Element((None, "message"))
        stanza["from"] = template["from"]
        stanza["to"] = xmppSender
        stanza["id"] = template["id"]
        stanza.addElement((NS_RECEIPTS, "received"))["id"] = stanzaID
        self._count("sip.receipt")
        return stanza

    def decorateStanza(self, request, stanza):
        """
        A CPIM MESSAGE asking for positive-delivery: ask the XMPP recipient
        for a receipt.
        """
        if not self.enabled or _contentType(request) != CPIM_TYPE:
            return
        try:
            cpim, _, _ = parseCPIM(request.body)
        except messages.MappingError:
            return
        disposition = cpim.get("imdn.disposition-notification", "")
        imdnID = cpim.get("imdn.message-id")
        wanted = [d.strip().lower() for d in disposition.split(",")]
        if not imdnID or "positive-delivery" not in wanted:
            return
        sender = request.headers.get("From", "")
        try:
            senderURI = str(parseNameAddr(sender).uri)
        except ValueError:
            return
        stanza.addElement((NS_RECEIPTS, "request"))
        self._remember(self._incoming, stanza["id"], (
            imdnID, cpim.get("datetime", ""), senderURI, request.uri,
            _bare(stanza["to"])))
        self._count("sip.requested")

    # XMPP -> SIP

    def bodylessToSIP(self, stanza, mapper):
        """
        Map a C{<received/>} to a positive-delivery IMDN MESSAGE.

        @return: an L{messages.OutgoingMessage} or L{None}.
        """
        receivedID = _receivedID(stanza) if self.enabled else None
        if not receivedID:
            return None
        entry = self._incoming.get(receivedID)
        sender = stanza.getAttribute("from")
        if entry is not None and _bare(sender) != entry[-1]:
            self._count("xmpp.receiptForeign")
            return None
        pending = self._take(self._incoming, receivedID)
        if pending is None:
            self._count("xmpp.receiptUnknown")
            return None
        imdnID, dateTime, senderURI, recipientURI, xmppRecipient = pending
        try:
            fromURI = mapper.jidSenderToSIP(_bare(sender))
        except (AddressError, ValueError):
            return None
        content = buildIMDN(imdnID, dateTime or _dateTime(self.clock.seconds()),
                            fromURI, recipientURI)
        body = buildCPIM(
            fromURI, senderURI,
            [("imdn.Message-ID", secrets.token_hex(10)),
             ("DateTime", _dateTime(self.clock.seconds()))],
            f"{IMDN_TYPE};charset=UTF-8", content,
            extraMIME=[("Content-Disposition", "notification")])
        self._count("xmpp.receipt")
        return messages.OutgoingMessage(
            requestURI=senderURI, fromURI=fromURI, toURI=senderURI,
            headers=(), body=body, contentType=CPIM_TYPE, notification=True)

    def decorateOutgoing(self, stanza, message):
        """
        A message asking for a receipt: wrap it in CPIM with the IMDN
        headers, and remember it.
        """
        stanzaID = stanza.getAttribute("id")
        if not self.enabled or not stanzaID or not _requestsReceipt(stanza):
            return message
        recipient = _bare(stanza.getAttribute("to"))
        imdnID = secrets.token_hex(10)
        body = buildCPIM(
            message.fromURI, message.toURI,
            [("imdn.Message-ID", imdnID),
             ("DateTime", _dateTime(self.clock.seconds())),
             ("imdn.Disposition-Notification", "positive-delivery")],
            message.contentType, message.body)
        self._remember(self._outgoing, imdnID,
                       (stanza.getAttribute("from"), stanzaID, recipient))
        self._count("xmpp.requested")
        return messages.OutgoingMessage(
            requestURI=message.requestURI, fromURI=message.fromURI,
            toURI=message.toURI, headers=message.headers, body=body,
            contentType=CPIM_TYPE, notification=message.notification)

    def sipResult(self, message, code):
        """
        Nothing: a 2xx is never a receipt (module docstring).
        """
