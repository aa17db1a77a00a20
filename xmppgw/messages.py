# -*- test-case-name: tests.test_messages -*-
"""
SIP MESSAGE <-> XMPP C{<message/>} mapping (interworking.md 3.1-3.5; RFC 7572,
RFC 3428).

Pure functions; no I/O, no clock.

SIP -> XMPP (L{sipToStanza}), RFC 7572 section 5 Table 2:

  - C{to} = the mapped Request-URI, C{from} = the mapped From URI (a public
    GRUU C{;gr=} becomes the resource: that is the mapper's job);
  - no C{type} attribute (RFC 7572 section 5);
  - C{id} = the C{messageID} argument: the router passes L{stanzaIDFor}, a
    hash of the request's identity (Call-ID, CSeq, From tag), the same on
    every gateway instance and for every retransmission of the request;
  - C{<thread/>} = Call-ID, C{<subject/>} = Subject, C{xml:lang} = the first
    Content-Language tag, C{<body/>} = the body decoded per its charset.

  Only C{text/plain} is relayed (project decision 8), with any charset that
  Python can decode as text (converted to Unicode; XMPP is UTF-8 only), and
  C{message/cpim} (RFC 3862) whose inner content is C{text/plain}. Refusals
  are L{MappingError}s carrying the SIP answer:

  ============================================  ====================
  condition                                     answer
  ============================================  ====================
  Request-URI not sip/im/pres (tel: ...)        416
  SIPS Request-URI or To (RFC 7247 section 8)   416 (as xmppgw.sip.uas)
  Request-URI not mappable                      404 (AddressError text)
  From missing/malformed                        400
  From not mappable                             403 (AddressError text)
  Content-Encoding other than identity          415 + Accept-Encoding
  Content-Type missing (with a body)            400 (RFC 3261 7.4.1)
  Content-Type other than text/plain or CPIM    415 + Accept
  CPIM wrapping anything but text/plain         415 + Accept
  malformed CPIM                                400
  unknown or unsafe charset                     415 + Accept
  bytes not valid in the declared charset       400
  characters XML 1.0 forbids (body, Subject)    400
  empty body                                    400
  ============================================  ====================

  An empty body is refused with 400 rather than relayed: a C{<message/>}
  with an empty body carries nothing, XMPP clients either show an empty
  bubble or drop it, and a 4xx tells the sender truthfully that nothing was
  delivered (RFC 3428 section 7). A Content-Language tag that is not
  syntactically a language tag is ignored (the message is still relayed,
  without C{xml:lang}): the language is advisory, losing the message over it
  would be worse. The CPIM C{From}/C{To} headers are I{not} used for
  addressing: only the SIP From (which the SIP side authenticated) is.

XMPP -> SIP (L{stanzaToSIP}), RFC 7572 section 4 Table 1:

  - the body is the C{<body/>} whose C{xml:lang} matches the stanza's, else
    the first one without C{xml:lang}, else the first one; a stanza without
    a (non-empty) body raises L{NoBody} and an error stanza raises
    L{ErrorStanza} (both L{NotRelayed}): the caller drops these silently,
    they never become a SIP MESSAGE nor an error reply (chat states,
    receipts; never an error in answer to an error); the stream's default
    xml:lang is not known here, only the stanza's own;
  - Request-URI/To = the mapped C{to}, From = the mapped C{from} (resource
    -> C{;gr=}); Subject from C{<subject/>}; Content-Language from
    C{xml:lang}; the body as UTF-8; C{<thread/>} is not mapped (project
    decision 4: every MESSAGE gets a fresh Call-ID); C{type} is not mapped.
  - refusals are L{StanzaMappingError}s: missing or malformed C{to}/C{from}
    -> C{jid-malformed}; unmappable C{to} -> C{item-not-found}; unmappable
    C{from} -> C{forbidden}; a MESSAGE over C{maxSize} bytes (1300, RFC 7572
    section 6 / RFC 3428 section 8) -> C{policy-violation}.

L{buildSIPRequest} builds the MESSAGE itself (RFC 3428 / RFC 7572): no
Contact, Max-Forwards 70, From tag, the given Call-ID, C{CSeq: 1 MESSAGE},
C{Content-Type: text/plain;charset=UTF-8}. Via is added by the transaction
layer.
"""

import codecs
import re
from dataclasses import dataclass

from twisted.words.protocols.jabber.jid import InvalidFormat
from twisted.words.xish import domish
from twisted.words.xish.domish import IElement

from xmppgw.addressing import AddressError, jidHost
from xmppgw.errors import NS_XML, isStanzaChild
from xmppgw.fastxml import SimpleElement, addTextElement, unlinkTree
from xmppgw.hashing import blake2b128
from xmppgw.memo import bounded
from xmppgw.sip.message import (
    Headers, Request, _canonCache, _headersOf, _newRequest, canonicalName)
from xmppgw.sip.uri import URIError, _fastNew, parseNameAddr, parseURI

__all__ = [
    "MappingError",
    "StanzaMappingError",
    "NotRelayed",
    "NoBody",
    "ErrorStanza",
    "OutgoingMessage",
    "ACCEPT",
    "MAX_SIP_SIZE",
    "SIPS_REFUSED",
    "sipToStanza",
    "stanzaIDFor",
    "stanzaToSIP",
    "buildSIPRequest",
    "estimatedSize",
    "parseMediaType",
    "decodeText",
    "unwrapCPIM",
]

#: The C{Accept} value of our 415 answers.
ACCEPT = "text/plain, message/cpim"

#: RFC 3428 section 8 / RFC 7572 section 6: the largest pager-mode MESSAGE.
MAX_SIP_SIZE = 1300

#: Room reserved for what is not known when the size is checked: the Via
#: the transaction layer adds (transport, an IPv6 sent-by with port, a
#: 32-character branch, rport), and a Call-ID and From tag of up to these
#: lengths.
VIA_ALLOWANCE = 128
CALL_ID_ALLOWANCE = 64
TAG_ALLOWANCE = 32

_SIP_SCHEMES = frozenset(["sip", "im", "pres"])

#: The reason phrase for a SIPS-addressed MESSAGE (the same answer
#: L{xmppgw.sip.uas.checkRequest} gives; this check is a second line).
SIPS_REFUSED = "SIPS Not Relayed to XMPP"

#: Python codecs that decode text but are not charsets a peer can mean:
#: they would let a sender smuggle escapes or decode everything.
_UNSAFE_CODECS = frozenset(
    [
        "unicode-escape",
        "raw-unicode-escape",
        "idna",
        "punycode",
        "undefined",
        "charmap",
        "palmos",
    ]
)

#: Characters that XML 1.0 (section 2.2, Char) does not allow.
_XML_ILLEGAL = re.compile(
    "[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)

#: Characters replaced by a space in a SIP header value built from XMPP.
_HEADER_UNSAFE = re.compile("[\x00-\x1f\x7f\u2028\u2029]+")

#: RFC 5646 in outline (and RFC 3261's language-tag): subtags of 1..8
#: alphanumerics, the first alphabetic.
_LANGUAGE_TAG = re.compile(r"\A[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*\Z")

#: The children of a C{<message/>} that L{stanzaToSIP} maps.
_MAPPED_CHILDREN = frozenset(["body", "subject"])

_MEDIA_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class MappingError(Exception):
    """
    A SIP MESSAGE cannot be mapped to a stanza.

    @ivar code: the SIP response code to answer with.
    @ivar reason: the reason phrase (human readable).
    @ivar headers: extra response headers, a tuple of C{(name, value)}.
    """

    def __init__(self, code, reason, headers=()):
        Exception.__init__(self, code, reason)
        self.code = code
        self.reason = reason
        self.headers = tuple(headers)

    def __str__(self):
        return f"{self.code} {self.reason}"


class StanzaMappingError(Exception):
    """
    A C{<message/>} cannot be mapped to a SIP MESSAGE.

    @ivar condition: the stanza error condition to answer with.
    @ivar text: human-readable text for the error's C{<text/>}.
    """

    def __init__(self, condition, text=None):
        Exception.__init__(self, condition, text)
        self.condition = condition
        self.text = text

    def __str__(self):
        return f"{self.condition}: {self.text}" if self.text else self.condition


class NotRelayed(Exception):
    """
    A stanza that is deliberately not turned into a SIP MESSAGE and must
    not be answered with an error either.
    """


class NoBody(NotRelayed):
    """
    The stanza has no (non-empty) C{<body/>}: a chat state, a receipt, ...
    """


class ErrorStanza(NotRelayed):
    """
    The stanza is a C{type='error'} stanza; those are handled by the caller
    (L{xmppgw.errors.parseStanzaError}) and never relayed.
    """


@dataclass(frozen=True)
class OutgoingMessage:
    """
    A SIP MESSAGE to be sent, as mapped from a stanza.

    @ivar requestURI: the Request-URI text.
    @ivar fromURI: the From URI text (no tag).
    @ivar toURI: the To URI text.
    @ivar headers: extra headers, a tuple of C{(name, value)}: C{Subject},
        C{Content-Language}.
    @ivar body: the text, UTF-8 encoded.
    @ivar contentType: the Content-Type of C{body} (chat-state and receipt
        notifications use other types, see L{xmppgw.chatstates} and
        L{xmppgw.receipts}).
    @ivar notification: C{True} for a chat-state notification or an IMDN:
        a failure is not bounced to the XMPP sender.
    """

    requestURI: str
    fromURI: str
    toURI: str
    headers: tuple
    body: bytes
    contentType: str = "text/plain;charset=UTF-8"
    notification: bool = False


def _unsupported(reason):
    return MappingError(415, reason, headers=[("Accept", ACCEPT)])


def parseMediaType(value):
    """
    Parse a C{Content-Type} value.

    @param value: e.g. C{'text/plain; charset="ISO-8859-1"'}.
    @type value: L{str}
    @return: C{(type, params)}: the lower-cased C{type/subtype} and a dict
        (the caller's own) of lower-cased parameter names to (unquoted)
        values.
    @raise ValueError: if the value is not a media type.
    """
    mediaType, params = _parseMediaType(value)
    return mediaType, dict(params)


@bounded(256)
def _parseMediaType(value):
    """
    L{parseMediaType}, with the parameters as a tuple of pairs; the results
    are remembered (a few Content-Type values make up nearly all traffic).
    """
    text = value.strip()
    match = _MEDIA_TOKEN.match(text)
    if match is None:
        raise ValueError(f"not a media type: {value!r}")
    pos = match.end()
    if text[pos:pos + 1] != "/":
        raise ValueError(f"not a media type: {value!r}")
    sub = _MEDIA_TOKEN.match(text, pos + 1)
    if sub is None:
        raise ValueError(f"not a media type: {value!r}")
    mediaType = text[: sub.end()].lower()
    pos = sub.end()
    params = {}
    length = len(text)
    while pos < length:
        while pos < length and text[pos] in " \t":
            pos += 1
        if pos >= length:
            break
        if text[pos] != ";":
            raise ValueError(f"malformed media type parameters: {value!r}")
        pos += 1
        while pos < length and text[pos] in " \t":
            pos += 1
        name = _MEDIA_TOKEN.match(text, pos)
        if name is None:
            raise ValueError(f"malformed media type parameters: {value!r}")
        pos = name.end()
        while pos < length and text[pos] in " \t":
            pos += 1
        if text[pos:pos + 1] != "=":
            raise ValueError(f"malformed media type parameters: {value!r}")
        pos += 1
        while pos < length and text[pos] in " \t":
            pos += 1
        if text[pos:pos + 1] == '"':
            pos += 1
            chars = []
            while True:
                if pos >= length:
                    raise ValueError(f"unterminated quoted string: {value!r}")
                char = text[pos]
                if char == "\\" and pos + 1 < length:
                    chars.append(text[pos + 1])
                    pos += 2
                elif char == '"':
                    pos += 1
                    break
                else:
                    chars.append(char)
                    pos += 1
            paramValue = "".join(chars)
        else:
            token = _MEDIA_TOKEN.match(text, pos)
            if token is None:
                raise ValueError(f"malformed media type parameters: {value!r}")
            paramValue = token.group()
            pos = token.end()
        params[name.group().lower()] = paramValue
    return mediaType, tuple(params.items())


def decodeText(data, charset=None):
    """
    Decode a text body to Unicode, checking it can go into XML.

    C{UTF-16}/C{UTF-32} without a byte order mark are read big-endian
    (RFC 2781 section 4.3); a leading byte order mark is removed.

    @param data: the body.
    @type data: L{bytes}
    @param charset: the declared charset, or L{None} for UTF-8 (RFC 3261
        section 7.4.1).
    @return: the text.
    @rtype: L{str}
    @raise MappingError: 415 for an unknown charset, 400 for bytes that are
        not valid in it or for characters XML 1.0 forbids.
    """
    label = (charset or "utf-8").strip()
    codecName = _codecFor(label)
    if codecName is None:
        raise _unsupported(f"Unsupported charset {label}")
    if codecName == "utf-16" and data[:2] not in (b"\xff\xfe", b"\xfe\xff"):
        codecName = "utf-16-be"
    elif codecName == "utf-32" and data[:4] not in (
        b"\xff\xfe\x00\x00",
        b"\x00\x00\xfe\xff",
    ):
        codecName = "utf-32-be"
    try:
        text = data.decode(codecName)
    except UnicodeDecodeError:
        raise MappingError(400, f"Body is not valid {label}")
    except LookupError:
        raise _unsupported(f"Unsupported charset {label}")
    if text.startswith("\ufeff"):
        text = text[1:]
    # Printable ASCII (space to tilde) is all allowed in XML.
    if not (text.isascii() and text.isprintable()) and _XML_ILLEGAL.search(text):
        raise MappingError(400, "Body contains characters not allowed in XMPP")
    return text


@bounded(64)
def _codecFor(label):
    """
    The name of the Python codec that decodes the charset C{label}, or
    L{None} when there is none or it is not safe (L{_UNSAFE_CODECS}, codecs
    that do not decode text); remembered (a few labels make up nearly all
    traffic, and C{codecs.lookup} normalises the label on every call).
    """
    try:
        codec = codecs.lookup(label)
    except LookupError:
        return None
    codecName = codec.name
    if codecName in _UNSAFE_CODECS or not getattr(
        codec, "_is_text_encoding", True
    ):
        return None
    return codecName


def _splitHeaderBlock(data):
    """
    Split MIME-style header lines (CRLF or LF, with folding) from the rest.

    @return: C{(headers, rest)}: a list of C{(lower-cased name, value)} and
        the bytes after the blank line.
    @raise MappingError: 400 if there is no blank line or a line is not a
        header.
    """
    lines = []
    pos = 0
    length = len(data)
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise MappingError(400, "Malformed message/cpim body")
        line = data[pos:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        pos = end + 1
        if not line:
            break
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += b" " + line.strip()
            continue
        lines.append(line)
        if pos >= length:
            raise MappingError(400, "Malformed message/cpim body")
    headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise MappingError(400, "Malformed message/cpim body")
        try:
            headers.append(
                (name.strip().decode("ascii").lower(), value.strip().decode("utf-8"))
            )
        except UnicodeDecodeError:
            raise MappingError(400, "Malformed message/cpim body")
    return headers, data[pos:]


def unwrapCPIM(data):
    """
    Take the text out of a C{message/cpim} body (RFC 3862 section 3).

    @param data: the CPIM body: message headers, a blank line, MIME
        headers, a blank line, the content.
    @type data: L{bytes}
    @return: C{(content, params, language)}: the content bytes, the inner
        Content-Type parameters and the inner Content-Language (or L{None}).
    @raise MappingError: 400 if malformed; 415 if the inner type is not
        C{text/plain} or it has a Content-Transfer-Encoding we do not decode.
    """
    _, rest = _splitHeaderBlock(data)
    mimeHeaders, content = _splitHeaderBlock(rest)
    mime = dict(reversed(mimeHeaders))
    contentType = mime.get("content-type", "text/plain")
    try:
        mediaType, params = parseMediaType(contentType)
    except ValueError:
        raise MappingError(400, "Malformed Content-Type in message/cpim")
    if mediaType != "text/plain":
        raise _unsupported(f"Unsupported media type {mediaType} in message/cpim")
    transfer = mime.get("content-transfer-encoding", "").strip().lower()
    if transfer not in ("", "7bit", "8bit", "binary"):
        raise _unsupported(
            f"Unsupported Content-Transfer-Encoding {transfer} in message/cpim"
        )
    return content, params, mime.get("content-language")


def _firstLanguage(value):
    """
    The first language tag of a Content-Language value, if it is valid.
    """
    if not value:
        return None
    tag = value.split(",", 1)[0].strip()
    if _LANGUAGE_TAG.match(tag):
        return tag
    return None


def _checkXMLText(text, what):
    # Printable ASCII (space to tilde) is all allowed in XML.
    if not (text.isascii() and text.isprintable()) and _XML_ILLEGAL.search(text):
        raise MappingError(400, f"{what} contains characters not allowed in XMPP")
    return text


def _checkContentEncoding(headers):
    for value in headers.getAll("Content-Encoding"):
        for coding in value.split(","):
            coding = coding.strip().lower()
            if coding and coding != "identity":
                raise MappingError(
                    415,
                    f"Unsupported Content-Encoding {coding}",
                    headers=[("Accept-Encoding", "identity")],
                )


def _firstValues(headers):
    """
    The first value of each header, by canonical name, in one pass (what
    C{headers.get(name)} gives for each).
    """
    items = headers._items if type(headers) is Headers else list(headers)
    # Built in C: from the last line to the first, so the first one wins.
    return dict(reversed(items))


def _bodyText(request, values):
    """
    The text of a MESSAGE body, and the language it declares.

    @param values: L{_firstValues} of the request's headers.
    @return: C{(text, innerLanguage)}.
    """
    body = request.body
    if "Content-Encoding" in values:
        _checkContentEncoding(request.headers)
    contentType = values.get("Content-Type")
    if not body:
        raise MappingError(400, "Message body is empty")
    if contentType is None:
        raise MappingError(400, "Body without Content-Type")
    try:
        mediaType, pairs = _parseMediaType(contentType)
    except ValueError:
        raise MappingError(400, "Malformed Content-Type")
    language = None
    charset = None
    if mediaType == "text/plain":
        # The parameters as the shared tuple of the memo (names unique).
        for name, value in pairs:
            if name == "charset":
                charset = value
                break
    elif mediaType == "message/cpim":
        body, params, language = unwrapCPIM(body)
        if not body:
            raise MappingError(400, "Message body is empty")
        charset = params.get("charset")
    else:
        raise _unsupported(f"Unsupported media type {mediaType}")
    text = decodeText(body, charset)
    if not text:
        raise MappingError(400, "Message body is empty")
    return text, language


def _parseHeaderAddress(values, name):
    value = values.get(name)
    if value is None:
        raise MappingError(400, f"Missing {name} header")
    try:
        return parseNameAddr(value)
    except URIError as e:
        raise MappingError(400, f"Malformed {name} header: {e}")


#: The prefix of the stanza ids L{stanzaIDFor} makes.
STANZA_ID_PREFIX = "sip-"


def stanzaIDFor(request, values=None):
    """
    The stanza C{id} for a SIP request: C{sip-} and 32 hex digits, the
    first 128 bits of a BLAKE2b hash of the request's Call-ID, CSeq (number
    and method), From tag and Request-URI user part.

    Call-ID, CSeq and From tag identify a request across every copy of it
    (RFC 3261 section 17.2.3 without the branch): a retransmission, and a
    request a proxy such as Kamailio's dispatcher fails over to another
    gateway instance (a new Via branch and destination, the same Call-ID,
    CSeq, From tag and Request-URI user), get the same id on every
    instance, so an XMPP receiver can discard the duplicate. The
    Request-URI user tells apart the copies a forking proxy sends to
    several gateway users (same Call-ID, CSeq and From tag, each its own
    message). Two different requests get different ids unless their sender
    reuses a Call-ID, CSeq and From tag, which RFC 3261 forbids.

    Never raises: a missing or malformed header contributes its raw text.

    @param request: the L{xmppgw.sip.message.Request}.
    @param values: L{_firstValues} of the request's headers if the caller
        has them (the router shares them with L{sipToStanza}), else
        L{None}.
    @rtype: L{str}
    """
    if values is None:
        values = _firstValues(request.headers)
    callID = (values.get("Call-ID") or "").strip()
    cseq = " ".join((values.get("CSeq") or "").split())
    sender = values.get("From") or ""
    try:
        tag = parseNameAddr(sender).tag
    except URIError:
        tag = None
    if tag is None:
        tag = sender.strip()
    try:
        user = parseURI(request.uri).user or ""
    except URIError:
        user = request.uri
    identity = "\n".join((callID, cseq, tag, user)).encode(
        "utf-8", "surrogatepass")
    return STANZA_ID_PREFIX + blake2b128(identity)


def sipToStanza(request, mapper, messageID, values=None):
    """
    Map a SIP MESSAGE to an XMPP C{<message/>}.

    @param request: the MESSAGE.
    @type request: L{xmppgw.sip.message.Request}
    @param mapper: the address mapper (C{sipTargetToJID},
        C{sipSenderToJID}).
    @type mapper: L{xmppgw.addressing.AddressMapper}
    @param messageID: the stanza C{id} (L{stanzaIDFor} the request, as the
        router passes it); converted to text.
    @param values: L{_firstValues} of the request's headers if the caller
        has them, else L{None}.
    @return: a C{<message/>} in no namespace (it takes the stream's default
        namespace when written) with C{to}, C{from}, C{id} and no C{type}.
    @rtype: L{domish.Element}
    @raise MappingError: when the MESSAGE must be refused; C{code},
        C{reason} and C{headers} give the SIP answer (see the module
        docstring).
    """
    try:
        requestURI = parseURI(request.uri)
    except URIError as e:
        raise MappingError(400, f"Malformed Request-URI: {e}")
    if requestURI.scheme == "sips":
        raise MappingError(416, SIPS_REFUSED)
    if requestURI.scheme not in _SIP_SCHEMES:
        raise MappingError(416, "Unsupported URI Scheme")
    if values is None:
        values = _firstValues(request.headers)
    to = _parseHeaderAddress(values, "To")
    if to.uri.scheme == "sips":
        raise MappingError(416, SIPS_REFUSED)
    try:
        target = mapper.sipTargetToJID(request.uri)
    except AddressError as e:
        raise MappingError(404, str(e) or "Not Found")
    sender = _parseHeaderAddress(values, "From")
    try:
        source = mapper.sipSenderToJID(str(sender.uri))
    except AddressError as e:
        raise MappingError(403, str(e) or "Forbidden")

    text, innerLanguage = _bodyText(request, values)
    language = _firstLanguage(innerLanguage) or _firstLanguage(
        values.get("Content-Language")
    )
    subject = values.get("Subject")
    if subject is not None:
        subject = _checkXMLText(subject.strip(), "Subject")
    callID = values.get("Call-ID")
    if callID is not None:
        callID = _checkXMLText(callID.strip(), "Call-ID")

    message = _newMessage()
    attributes = message.attributes = {
        "to": target, "from": source, "id": str(messageID)}
    message.children = []
    message.parent = None
    if language:
        attributes[(NS_XML, "lang")] = language
    if subject:
        addTextElement(message, "subject", subject)
    addTextElement(message, "body", text)
    if callID:
        addTextElement(message, "thread", callID)
    # No parent links: no reference cycle (see fastxml.unlinkTree).
    unlinkTree(message)
    return message


def _newMessage():
    """
    C{SimpleElement((None, "message"))} without the generic work of
    L{domish.Element}'s constructor: the same instance attributes, set in
    the same order; the caller sets C{attributes}, C{children} and
    C{parent}.
    """
    message = _newObject(SimpleElement)
    message.localPrefixes = {}
    message.uri = None
    message.name = "message"
    message.defaultUri = None
    return message


_newObject = object.__new__


def _text(element):
    children = element.children
    if len(children) == 1 and type(children[0]) is str:
        return children[0]
    return "".join(child for child in children if isinstance(child, str))


def _stanzaChildren(element, names):
    """
    The stanza's own (L{isStanzaChild}) child elements named in C{names},
    by name and in order: C{{name: [element, ...]}}, in one pass.
    """
    found = {}
    for child in element.children:
        if type(child) is str or not (
                isinstance(child, domish.Element) or IElement.providedBy(child)):
            continue
        name = child.name
        if name in names and isStanzaChild(element, child):
            if name in found:
                found[name].append(child)
            else:
                found[name] = [child]
    return found


def _pickByLanguage(candidates, language):
    """
    The element whose xml:lang is C{language}, else the first without
    xml:lang, else the first.
    """
    if len(candidates) == 1:
        # The one there is, whichever rule picks it.
        return candidates[0]
    if language:
        for element in candidates:
            if element.getAttribute((NS_XML, "lang")) == language:
                return element
    for element in candidates:
        if not element.hasAttribute((NS_XML, "lang")):
            return element
    return candidates[0]


def _headerText(text):
    return _HEADER_UNSAFE.sub(" ", text).strip()


def _parseJID(element, attribute):
    value = element.getAttribute(attribute)
    if not value:
        raise StanzaMappingError("jid-malformed", f"Missing '{attribute}' address")
    bare, slash, resource = value.partition("/")
    local, at, _ = bare.partition("@")
    malformed = (at and not local) or (slash and not resource)
    if not malformed:
        try:
            jidHost(value)
        except (InvalidFormat, UnicodeError, ValueError, IndexError):
            # twisted's JID parser raises IndexError on empty labels.
            malformed = True
    if malformed:
        raise StanzaMappingError("jid-malformed", f"Malformed '{attribute}' address")
    return value


def stanzaToSIP(element, mapper, maxSize=MAX_SIP_SIZE):
    """
    Map an XMPP C{<message/>} to a SIP MESSAGE to send.

    @param element: the stanza.
    @type element: L{domish.Element}
    @param mapper: the address mapper (C{jidTargetToSIP},
        C{jidSenderToSIP}).
    @type mapper: L{xmppgw.addressing.AddressMapper}
    @param maxSize: the largest SIP MESSAGE allowed, in bytes (L{None}: no
        limit). The check counts the whole request as L{buildSIPRequest}
        makes it, with room for the Via, Call-ID and tag (L{VIA_ALLOWANCE},
        L{CALL_ID_ALLOWANCE}, L{TAG_ALLOWANCE}).
    @return: the message to send.
    @rtype: L{OutgoingMessage}
    @raise ErrorStanza: for a C{type='error'} stanza (not relayed, not
        answered).
    @raise NoBody: if there is no non-empty C{<body/>} (not relayed, not
        answered).
    @raise StanzaMappingError: when the stanza must be answered with an
        error (see the module docstring).
    """
    if element.getAttribute("type") == "error":
        raise ErrorStanza("error stanzas are not relayed")
    language = element.getAttribute((NS_XML, "lang"))
    children = _stanzaChildren(element, _MAPPED_CHILDREN)
    bodies = children.get("body")
    if not bodies:
        raise NoBody("no body")
    body = _pickByLanguage(bodies, language)
    text = _text(body)
    if not text:
        raise NoBody("empty body")
    bodyLanguage = body.getAttribute((NS_XML, "lang")) or language

    to = _parseJID(element, "to")
    source = _parseJID(element, "from")
    try:
        requestURI = mapper.jidTargetToSIP(to)
    except AddressError as e:
        raise StanzaMappingError("item-not-found", str(e) or None)
    try:
        fromURI = mapper.jidSenderToSIP(source)
    except AddressError as e:
        raise StanzaMappingError("forbidden", str(e) or None)

    headers = []
    subjects = children.get("subject")
    if subjects:
        subject = _headerText(_text(_pickByLanguage(subjects, bodyLanguage)))
        if subject:
            headers.append(("Subject", subject))
    bodyLanguage = _firstLanguage(bodyLanguage)
    if bodyLanguage:
        headers.append(("Content-Language", bodyLanguage))

    # OutgoingMessage(...), built the cheaper way on each interpreter
    # (_fastNew: on CPython without the frozen dataclass's __init__, which
    # sets every field through object.__setattr__; the same instance).
    outgoing = _fastNew(
        OutgoingMessage,
        requestURI=requestURI,
        fromURI=fromURI,
        toURI=requestURI,
        headers=tuple(headers),
        body=text.encode("utf-8"),
        contentType=_TEXT_PLAIN,
        notification=False,
    )
    if maxSize is not None:
        size = estimatedSize(outgoing)
        if size > maxSize:
            raise StanzaMappingError(
                "policy-violation", f"message too large for SIP ({maxSize} bytes)"
            )
    return outgoing


_TEXT_PLAIN = OutgoingMessage.contentType


def estimatedSize(outgoing):
    """
    The size in bytes the MESSAGE for C{outgoing} will have on the wire, at
    most: L{buildSIPRequest} serialised with the largest Call-ID and tag we
    allow for, plus the Via the transaction layer adds.

    Counted from the same lines L{buildSIPRequest} and
    L{xmppgw.sip.message.serialize} write, without building the request
    (the router builds the real one when it sends the message).

    @type outgoing: L{OutgoingMessage}
    @rtype: L{int}
    """
    # Text that is all ASCII has as many UTF-8 bytes as characters: the
    # size is a sum of lengths (L{_ESTIMATE_FIXED}: what does not vary).
    # Anything else is counted from the lines themselves.
    requestURI = outgoing.requestURI
    toURI = outgoing.toURI
    fromURI = outgoing.fromURI
    contentType = outgoing.contentType
    if (requestURI.isascii() and toURI.isascii() and fromURI.isascii()
            and contentType.isascii()):
        body = outgoing.body
        size = (_ESTIMATE_FIXED + len(requestURI) + len(toURI) + len(fromURI)
                + len(contentType) + len(str(len(body))) + len(body))
        for name, value in outgoing.headers:
            name = _canonCache[name]
            if name != "Content-Length":
                if not (name.isascii() and value.isascii()):
                    return _estimatedSizeOfLines(outgoing)
                # "name: value" and the CRLF before the next line.
                size += len(name) + len(value) + 4
        return size
    return _estimatedSizeOfLines(outgoing)


def _estimatedSizeOfLines(outgoing):
    """
    L{estimatedSize}, counted from the lines as L{buildSIPRequest} and
    L{xmppgw.sip.message.serialize} write them.
    """
    lines = [
        f"MESSAGE {outgoing.requestURI} SIP/2.0",
        "Max-Forwards: 70",
        f"To: <{outgoing.toURI}>",
        f"From: <{outgoing.fromURI}>;tag={_TAG_PLACEHOLDER}",
        f"Call-ID: {_CALL_ID_PLACEHOLDER}",
        "CSeq: 1 MESSAGE",
    ]
    for name, value in outgoing.headers:
        name = canonicalName(name)
        if name != "Content-Length":
            lines.append(f"{name}: {value}")
    body = outgoing.body
    lines.append(f"Content-Type: {outgoing.contentType}")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
    return len(head) + len(body) + VIA_ALLOWANCE


_CALL_ID_PLACEHOLDER = "x" * CALL_ID_ALLOWANCE
_TAG_PLACEHOLDER = "x" * TAG_ALLOWANCE

#: What L{estimatedSize} counts for every MESSAGE: the fixed lines and
#: placeholders, the CRLFs between the lines, the Via allowance; not the
#: URIs, the Content-Type, the extra headers, the Content-Length digits
#: and the body.
_ESTIMATE_FIXED = _estimatedSizeOfLines(
    OutgoingMessage("", "", "", (), b"", contentType="")) - len("0")


def buildSIPRequest(outgoing, callID, fromTag, cseq=1, maxForwards=70):
    """
    Build the SIP MESSAGE request for an L{OutgoingMessage} (RFC 3428
    section 4, RFC 7572 section 4).

    No Contact (RFC 3428 section 4); no Via (the transaction layer adds it);
    Content-Length is written by the serialiser.

    @param outgoing: what to send.
    @type outgoing: L{OutgoingMessage}
    @param callID: a globally unique Call-ID (RFC 3261 section 8.1.1.4).
    @param fromTag: a fresh From tag.
    @param cseq: the CSeq number.
    @param maxForwards: the Max-Forwards value (RFC 3261 section 8.1.1.6:
        70).
    @rtype: L{xmppgw.sip.message.Request}
    """
    items = [
        ("Max-Forwards", str(maxForwards)),
        ("To", f"<{outgoing.toURI}>"),
        ("From", f"<{outgoing.fromURI}>;tag={fromTag}"),
        ("Call-ID", callID),
        ("CSeq", f"{cseq} MESSAGE"),
    ]
    body = outgoing.body
    if type(body) is not bytes:
        # Checked (or converted) by Request as before.
        items.extend(outgoing.headers)
        items.append(("Content-Type", outgoing.contentType))
        return Request("MESSAGE", outgoing.requestURI, Headers(items), body)
    # The same request built from its checked parts: the names written
    # here are canonical, the extra headers' names are canonicalised as
    # Headers would.
    canon = _canonCache
    for name, value in outgoing.headers:
        items.append((canon[name], value))
    items.append(("Content-Type", outgoing.contentType))
    return _newRequest("MESSAGE", outgoing.requestURI, _headersOf(items), body)
