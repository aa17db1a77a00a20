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


def _collect(items):
    """
    The values of the headers in L{_WATCHED} among C{items}.

    @return: C{(single, repeated)}: the first value by name, and L{None}
        when no name is repeated (the usual case), else all the values (a
        list) by name (L{_collectRepeated}).
    """
    watched = _WATCHED
    picked = [item for item in items if item[0] in watched]
    single = dict(picked)
    if len(single) == len(picked):
        return single, None
    return _collectRepeated(picked)


def _collectRepeated(picked):
    """
    L{_collect} by the general rule, for the C{(name, value)} pairs
    C{picked}.
    """
    repeated = {}
    for name, value in picked:
        values = repeated.get(name)
        if values is None:
            repeated[name] = [value]
        else:
            values.append(value)
    return {name: values[0] for name, values in repeated.items()}, repeated


def _checkHeaders(request: Request):
    """
    The 400 checks on the mandatory headers and Max-Forwards, in one pass
    over the headers.

    The mandatory headers are checked in the order of L{MANDATORY_HEADERS},
    each for being missing, then repeated, then invalid: the first failure
    is the answer.

    @return: C{(response, to, maxForwards, require)}: the 400 L{Response}
        or L{None}, the parsed To header when it was reached, the
        Max-Forwards value (L{None} if absent) and the Require values (a
        sequence).
    """
    single, repeated = _collect(request.headers._items)
    get = single.get

    value = get("Via")
    if value is None:
        return _missing(request, "Via")
    try:
        if repeated is None:
            _parsedVias(value)
        else:
            for value in repeated["Via"]:
                _parsedVias(value)
    except SIPParseError:
        return _badRequest(request, "Invalid Via Header"), None, None, ()

    for name in ("From", "To"):
        value = get(name)
        if value is None:
            return _missing(request, name)
        if repeated is not None and len(repeated[name]) > 1:
            return _multiple(request, name)
        try:
            to = parseNameAddr(value)
        except URIError:
            return (_badRequest(request, "Invalid %s Header" % (name,)),
                    None, None, ())

    callID = get("Call-ID")
    if callID is None:
        return _missing(request, "Call-ID")
    if repeated is not None and len(repeated["Call-ID"]) > 1:
        return _multiple(request, "Call-ID")
    if not callID or " " in callID or "\t" in callID:
        return _badRequest(request, "Invalid Call-ID Header"), None, None, ()

    value = get("CSeq")
    if value is None:
        return _missing(request, "CSeq")
    if repeated is not None and len(repeated["CSeq"]) > 1:
        return _multiple(request, "CSeq")
    parts = value.split()
    if (len(parts) != 2 or not parts[0].isdigit()
            or not parts[0].isascii()
            or len(parts[0]) > 10 or int(parts[0]) > _MAX_CSEQ):
        return _badRequest(request, "Invalid CSeq Header"), None, None, ()
    if parts[1] != request.method:
        return (_badRequest(request, "CSeq Method Does Not Match Request"),
                None, None, ())

    maxForwards = get("Max-Forwards")
    if maxForwards is not None:
        if repeated is not None and len(repeated["Max-Forwards"]) > 1:
            return (_badRequest(request, "Multiple Max-Forwards Headers"),
                    None, None, ())
        if (not maxForwards.isdigit() or not maxForwards.isascii()
                or len(maxForwards) > 10 or int(maxForwards) > 255):
            return (_badRequest(request, "Invalid Max-Forwards Header"),
                    None, None, ())
    require = get("Require")
    if require is None:
        require = ()
    elif repeated is None:
        require = (require,)
    else:
        require = repeated["Require"]
    return None, to, maxForwards, require


def _missing(request: Request, name: str):
    return _badRequest(request, "Missing %s Header" % (name,)), None, None, ()


def _multiple(request: Request, name: str):
    return _badRequest(request, "Multiple %s Headers" % (name,)), None, None, ()


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

    response, to, maxForwards, require = _checkHeaders(request)
    if response is not None:
        return response

    if size > maxMessageSize:
        return makeResponse(request, 513)

    if method not in ("MESSAGE", "OPTIONS") and method not in extraMethods:
        if method in KNOWN_METHODS:
            return makeResponse(request, 405, headers=[("Allow", allow)])
        return makeResponse(request, 501, headers=[("Allow", allow)])

    if method != "OPTIONS":
        if maxForwards is not None and int(maxForwards) == 0:
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

    if require:
        tags = []
        for value in require:
            tags.extend(tag.strip() for tag in value.split(",")
                        if tag.strip())
        if tags:
            return makeResponse(request, 420,
                                headers=[("Unsupported", ", ".join(tags))])

    if method == "OPTIONS":
        return makeResponse(request, 200, headers=[("Allow", allow),
                                                   ("Accept", ACCEPT)])
    return None
