# -*- test-case-name: tests.test_sip_uas -*-
"""
The gateway's built-in request policy: the checks RFC 3261 section 8.2
asks of a UAS, made standard (interworking.md 3.5).

L{checkRequest} returns:

  - L{None} for a MESSAGE that passed every check and may go on to mapping;
  - L{NO_RESPONSE} for ACK, which must never be answered (the transaction
    layer normally absorbs ACK before it gets here; this is a safety net);
  - otherwise the L{Response} to send.

Checks, in this order:

  1. ACK -> L{NO_RESPONSE}.
  2. Mandatory headers To, From, CSeq, Call-ID and Via: missing ->
     C{400 Missing <Name> Header}; present more than once ->
     C{400 Multiple <Name> Headers}; unparseable (Via, To, From; CSeq not
     C{number method}, number over 2**32-1, method different from the
     request's) -> C{400 Invalid <Name> Header}.  Max-Forwards is not
     mandatory (RFC 3261 8.2: a UAS is lenient), but when present it must
     be a number 0..255, else C{400 Invalid Max-Forwards Header}.
  3. C{size > maxMessageSize} -> C{513 Message Too Large}.
  4. Methods: OPTIONS and MESSAGE go on; other methods known to SIP
     (INVITE, ACK, BYE, CANCEL, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INFO,
     PRACK, UPDATE, REFER) -> C{405} with C{Allow: MESSAGE, OPTIONS};
     anything else -> C{501}.  Methods passed as C{extraMethods} (SUBSCRIBE
     and NOTIFY when presence is enabled) go on like MESSAGE and are added
     to C{Allow}.
  5. C{Max-Forwards: 0} -> C{483 Too Many Hops} (not for OPTIONS, which the
     gateway answers as the final recipient, RFC 3261 16.3 item 3).
  6. Request-URI: unparseable -> C{400 Invalid Request-URI}; carrying
     C{?headers} -> C{400 Headers Not Allowed In Request-URI} (RFC 4475
     3.1.2.11); a scheme other than C{sip:} -> C{416 Unsupported URI
     Scheme}.
  7. SIPS: a C{sips:} Request-URI or To URI gets C{416 SIPS Not Relayed to
     XMPP}.  RFC 7247 section 8 forbids relaying a SIPS-addressed request
     into XMPP and names no code; 416 is chosen because it tells the sender
     that this scheme is what is refused, so it may retry with C{sip:}.
     Other unknown schemes in To are accepted (RFC 3261 8.2.2.1).
  8. C{Require} with any option tag -> C{420 Bad Extension} with
     C{Unsupported:} listing the tags (the gateway supports none).
  9. OPTIONS -> C{200} with C{Allow: MESSAGE, OPTIONS} and
     C{Accept: text/plain, message/cpim}.

Content-Type, Content-Encoding and Content-Language are not checked here;
the message mapping answers 415.
"""

from __future__ import annotations

from typing import Union

from xmppgw.sip.message import (
    Request, Response, SIPParseError, _parsedVias, makeResponse)
from xmppgw.sip.uri import URIError, parseNameAddr, parseURI


__all__ = ["checkRequest", "NO_RESPONSE", "ALLOW", "ACCEPT", "PRESENCE_METHODS",
           "KNOWN_METHODS", "MANDATORY_HEADERS"]


class _NoResponse:
    """
    Type of L{NO_RESPONSE}.
    """

    def __repr__(self) -> str:
        return "NO_RESPONSE"

    def __bool__(self) -> bool:
        return False


#: Returned by L{checkRequest} for a request that must not be answered
#: (ACK).  It is false in a boolean context, but is not L{None}: test it
#: with C{is NO_RESPONSE}.
NO_RESPONSE = _NoResponse()

#: The methods the gateway implements.
ALLOW = "MESSAGE, OPTIONS"

#: The methods the presence gateway (L{xmppgw.presence}) adds when enabled:
#: pass them as C{extraMethods} to L{checkRequest}.
PRESENCE_METHODS = ("SUBSCRIBE", "NOTIFY")

#: The body types the gateway accepts.
ACCEPT = "text/plain, message/cpim"

#: Methods the gateway knows but does not implement (answered 405).
KNOWN_METHODS = frozenset([
    "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "PRACK", "UPDATE", "REFER"])

#: Headers every request must carry exactly once (RFC 3261 8.1.1); Via may
#: repeat.
MANDATORY_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")

_MAX_CSEQ = 2 ** 32 - 1
#: The headers L{_checkHeaders} collects in its one pass.
_WATCHED = frozenset(MANDATORY_HEADERS + ("Max-Forwards", "Require"))


def _badRequest(request: Request, reason: str) -> Response:
    return makeResponse(request, 400, reason)


def _checkHeaders(request: Request):
    """
    The 400 checks on the mandatory headers and Max-Forwards, in one pass
    over the headers.

    The mandatory headers are checked in the order of L{MANDATORY_HEADERS},
    each for being missing, then repeated, then invalid: the first failure
    is the answer.

    @return: C{(response, to, found)}: the 400 L{Response} or L{None}, the
        parsed To header when it was reached, and the values (a list) of
        the mandatory headers, Max-Forwards and Require by name.
    """
    found = {}
    watched = _WATCHED
    for name, value in request.headers._items:
        if name in watched:
            values = found.get(name)
            if values is None:
                found[name] = [value]
            else:
                values.append(value)
    get = found.get

    values = get("Via")
    if values is None:
        return _missing(request, "Via", found)
    try:
        for value in values:
            _parsedVias(value)
    except SIPParseError:
        return _badRequest(request, "Invalid Via Header"), None, found

    for name in ("From", "To"):
        values = get(name)
        if values is None:
            return _missing(request, name, found)
        if len(values) > 1:
            return _multiple(request, name, found)
        try:
            to = parseNameAddr(values[0])
        except URIError:
            return (_badRequest(request, "Invalid %s Header" % (name,)),
                    None, found)

    values = get("Call-ID")
    if values is None:
        return _missing(request, "Call-ID", found)
    if len(values) > 1:
        return _multiple(request, "Call-ID", found)
    callID = values[0]
    if not callID or " " in callID or "\t" in callID:
        return _badRequest(request, "Invalid Call-ID Header"), None, found

    values = get("CSeq")
    if values is None:
        return _missing(request, "CSeq", found)
    if len(values) > 1:
        return _multiple(request, "CSeq", found)
    parts = values[0].split()
    if (len(parts) != 2 or not parts[0].isdigit()
            or not parts[0].isascii()
            or len(parts[0]) > 10 or int(parts[0]) > _MAX_CSEQ):
        return _badRequest(request, "Invalid CSeq Header"), None, found
    if parts[1] != request.method:
        return (_badRequest(request, "CSeq Method Does Not Match Request"),
                None, found)

    maxForwards = get("Max-Forwards")
    if maxForwards is not None:
        if len(maxForwards) > 1:
            return (_badRequest(request, "Multiple Max-Forwards Headers"),
                    None, found)
        value = maxForwards[0]
        if (not value.isdigit() or not value.isascii() or len(value) > 10
                or int(value) > 255):
            return (_badRequest(request, "Invalid Max-Forwards Header"),
                    None, found)
    return None, to, found


def _missing(request: Request, name: str, found):
    return _badRequest(request, "Missing %s Header" % (name,)), None, found


def _multiple(request: Request, name: str, found):
    return _badRequest(request, "Multiple %s Headers" % (name,)), None, found


def checkRequest(request: Request, maxMessageSize: int,
                 size: int, extraMethods=()) -> Union[Response, None,
                                                      _NoResponse]:
    """
    Apply the gateway's request policy (see the module docstring).

    @param request: a parsed request.
    @param maxMessageSize: the largest request (bytes, on the wire) the
        gateway relays.
    @param size: the size of C{request} on the wire, in bytes.
    @param extraMethods: methods implemented besides MESSAGE and OPTIONS
        (e.g. L{PRESENCE_METHODS}): they pass the same checks as MESSAGE,
        get L{None}, and are listed in C{Allow}.
    @return: L{None} when C{request} is a MESSAGE (or one of
        C{extraMethods}) that may go on; L{NO_RESPONSE} for ACK; otherwise
        the L{Response} to send.
    """
    allow = ALLOW
    if extraMethods:
        allow = ", ".join([ALLOW] + list(extraMethods))
    method = request.method
    if method == "ACK":
        return NO_RESPONSE

    response, to, found = _checkHeaders(request)
    if response is not None:
        return response

    if size > maxMessageSize:
        return makeResponse(request, 513)

    if method not in ("MESSAGE", "OPTIONS") and method not in extraMethods:
        if method in KNOWN_METHODS:
            return makeResponse(request, 405, headers=[("Allow", allow)])
        return makeResponse(request, 501, headers=[("Allow", allow)])

    if method != "OPTIONS":
        maxForwards = found.get("Max-Forwards")
        if maxForwards is not None and int(maxForwards[0]) == 0:
            return makeResponse(request, 483)

    try:
        uri = parseURI(request.uri)
    except URIError:
        return _badRequest(request, "Invalid Request-URI")
    if uri.headers is not None:
        return _badRequest(request, "Headers Not Allowed In Request-URI")
    if uri.scheme == "sips":
        return makeResponse(request, 416, "SIPS Not Relayed to XMPP")
    if uri.scheme != "sip":
        return makeResponse(request, 416)
    if to.uri.scheme == "sips":
        return makeResponse(request, 416, "SIPS Not Relayed to XMPP")

    require = []
    for value in found.get("Require", ()):
        require.extend(tag.strip() for tag in value.split(",")
                       if tag.strip())
    if require:
        return makeResponse(request, 420,
                            headers=[("Unsupported", ", ".join(require))])

    if method == "OPTIONS":
        return makeResponse(request, 200, headers=[("Allow", allow),
                                                   ("Accept", ACCEPT)])
    return None
