# -*- test-case-name: tests.test_errors -*-
"""
The SIP <-> XMPP error tables (interworking.md 3.6, RFC 7247 section 7).

This module is the only home of these rules:

  - L{sipToXMPP}: a SIP final response code -> C{(condition, errorType)}
    (RFC 7247 Table 3, with its defaults for unlisted codes);
  - L{xmppToSIP}: an XMPP stanza error condition -> a SIP response code
    (RFC 7247 Table 2);
  - L{conditionType}: the RFC 6120 section 8.3.3 recommended error type of
    each defined condition;
  - L{buildStanzaError} / L{parseStanzaError}: building and reading
    C{type='error'} stanzas (RFC 6120 section 8.3).

Choices where the texts leave room (RFC 7247 section 7 calls the mapping
"more of an art than a science"):

  - C{<service-unavailable/>} is never 503 (RFC 7247 section 7.1 note 5,
    project decision 11). Of the two closest codes the note offers (403,
    405) we use B{403}: a 405 must carry an C{Allow} header and claims the
    method itself is not allowed, which is not what the XMPP side said.
    403 also keeps the directory-harvesting protection the XMPP server
    intended (RFC 6120 section 13.11).
  - C{<unexpected-request/>} -> B{400}: the table offers 491 or 400, and 491
    (Request Pending) only makes sense for INVITE glare, never for MESSAGE.
  - C{<remote-server-not-found/>} -> B{404} (the table offers 404 or 408;
    408 would claim a timeout).
  - SIP -> XMPP error types follow the condition's RFC 6120 recommendation,
    with a few per-code refinements listed in L{_SIP_TO_XMPP}: 503 and 504
    are C{wait} (the SIP side says "try later"), 603 Decline and 604 Does
    Not Exist Anywhere are C{cancel} (retrying will not help), 413/513 are
    C{modify} (make the message smaller).
  - A client transaction timeout (Timer F) is treated as 408 and a fatal
    transport error as 503, exactly as RFC 3261 sections 8.1.3.1 and
    17.1.2.2 require; the XMPP conditions then come from the same table:
    C{<remote-server-timeout/>} (wait) and C{<internal-server-error/>}
    (wait). See L{xmppErrorForTimeout} and L{xmppErrorForTransportFailure}.
"""

from twisted.words.xish import domish

from xmppgw.sip.message import reasonPhrase

__all__ = [
    "NS_XMPP_STANZAS",
    "CONDITIONS",
    "TIMEOUT_CODE",
    "TRANSPORT_FAILURE_CODE",
    "conditionType",
    "sipToXMPP",
    "xmppToSIP",
    "xmppErrorForTimeout",
    "xmppErrorForTransportFailure",
    "reasonPhrase",
    "buildStanzaError",
    "parseStanzaError",
    "stanzaErrorAddress",
]

NS_XMPP_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

NS_XML = "http://www.w3.org/XML/1998/namespace"

#: The namespaces a stanza's own children (C{<error/>}, C{<body/>}, ...)
#: may be in, besides the stanza's own and L{None} (stripped).
STANZA_NAMESPACES = frozenset(
    ["jabber:client", "jabber:server", "jabber:component:accept"]
)

ERROR_TYPES = frozenset(["auth", "cancel", "continue", "modify", "wait"])

#: The defined stanza error conditions of RFC 6120 section 8.3.3 and the
#: error type that section recommends for each.
CONDITIONS = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}

#: A client transaction timeout (Timer F) counts as this SIP code
#: (RFC 3261 section 8.1.3.1).
TIMEOUT_CODE = 408

#: A fatal transport error counts as this SIP code (RFC 3261 section 8.1.3.1).
TRANSPORT_FAILURE_CODE = 503


def _row(codes, condition, errorType=None):
    return {
        code: (condition, errorType or CONDITIONS[condition]) for code in codes
    }


#: RFC 7247 Table 3: SIP code -> (condition, error type).
_SIP_TO_XMPP = {}
_SIP_TO_XMPP.update(_row([300, 302, 305], "redirect"))
_SIP_TO_XMPP.update(_row([301, 410], "gone"))
_SIP_TO_XMPP.update(_row([380], "not-acceptable"))
_SIP_TO_XMPP.update(_row([400, 402, 493], "bad-request"))
_SIP_TO_XMPP.update(_row([401], "not-authorized"))
_SIP_TO_XMPP.update(_row([403], "forbidden"))
_SIP_TO_XMPP.update(_row([404], "item-not-found"))
_SIP_TO_XMPP.update(_row([405, 420, 439, 501], "feature-not-implemented"))
_SIP_TO_XMPP.update(
    _row([406, 415, 416, 421, 482, 483, 488, 505, 606], "not-acceptable")
)
_SIP_TO_XMPP.update(_row([407], "registration-required"))
_SIP_TO_XMPP.update(_row([408], "remote-server-timeout"))
_SIP_TO_XMPP.update(_row([504], "remote-server-timeout"))
_SIP_TO_XMPP.update(_row([413, 414, 440, 489, 513], "policy-violation"))
_SIP_TO_XMPP.update(_row([423], "resource-constraint"))
_SIP_TO_XMPP.update(
    _row([430, 480, 486, 487, 600], "recipient-unavailable")
)
_SIP_TO_XMPP.update(_row([603], "recipient-unavailable", "cancel"))
_SIP_TO_XMPP.update(_row([481, 484, 485], "item-not-found"))
_SIP_TO_XMPP.update(_row([604], "item-not-found"))
_SIP_TO_XMPP.update(_row([491], "unexpected-request"))
_SIP_TO_XMPP.update(_row([500], "internal-server-error"))
_SIP_TO_XMPP.update(_row([503], "internal-server-error", "wait"))
_SIP_TO_XMPP.update(_row([502], "remote-server-not-found"))

#: RFC 7247 Table 3 defaults for codes the table does not list, by class.
_SIP_CLASS_DEFAULTS = {
    3: ("redirect", CONDITIONS["redirect"]),
    4: ("bad-request", CONDITIONS["bad-request"]),
    5: ("internal-server-error", CONDITIONS["internal-server-error"]),
    6: ("recipient-unavailable", CONDITIONS["recipient-unavailable"]),
}

#: RFC 7247 Table 2: condition -> (code for a full JID, code for a bare JID).
#: C{gone} is handled separately (301 with a new address, else 410).
_XMPP_TO_SIP = {
    "bad-request": (400, 400),
    "conflict": (400, 400),
    "feature-not-implemented": (405, 501),
    "forbidden": (403, 603),
    "internal-server-error": (500, 500),
    "item-not-found": (404, 604),
    "jid-malformed": (400, 400),
    "not-acceptable": (406, 606),
    "not-allowed": (403, 403),
    "not-authorized": (401, 401),
    "policy-violation": (403, 403),
    "recipient-unavailable": (480, 600),
    "redirect": (302, 302),
    "registration-required": (407, 407),
    "remote-server-not-found": (404, 404),
    "remote-server-timeout": (408, 408),
    "resource-constraint": (500, 500),
    "service-unavailable": (403, 403),
    "subscription-required": (400, 400),
    "undefined-condition": (400, 400),
    "unexpected-request": (400, 400),
}

#: Code for a condition the table does not know (RFC 6120 section 8.3.2:
#: an unknown condition is treated as undefined-condition, which is 400).
_UNKNOWN_CONDITION_CODE = 400


def conditionType(condition):
    """
    The error type RFC 6120 section 8.3.3 recommends for a condition.

    @param condition: a stanza error condition name, e.g. C{"item-not-found"}.
    @type condition: L{str}
    @return: C{"auth"}, C{"cancel"}, C{"modify"} or C{"wait"}; C{"cancel"}
        for a condition that RFC 6120 does not define.
    @rtype: L{str}
    """
    return CONDITIONS.get(condition, "cancel")


def sipToXMPP(code):
    """
    Map a SIP final failure response code to an XMPP stanza error.

    @param code: a SIP status code, 300..699.
    @type code: L{int}
    @return: C{(condition, errorType)}. C{gone} (301, 410) and C{redirect}
        (3xx) conditions should carry the new address, if known, as
        character data (see L{buildStanzaError}'s C{address}).
    @rtype: L{tuple} of (L{str}, L{str})
    @raise ValueError: if C{code} is not a 3xx-6xx code (1xx and 2xx have no
        error mapping, RFC 7247 section 7).
    """
    code = int(code)
    if not 300 <= code <= 699:
        raise ValueError(f"SIP code {code} is not a failure response")
    try:
        return _SIP_TO_XMPP[code]
    except KeyError:
        return _SIP_CLASS_DEFAULTS[code // 100]


def xmppToSIP(condition, fullJID, hasAddress=False):
    """
    Map an XMPP stanza error condition to a SIP response code.

    @param condition: the condition name (e.g. C{"item-not-found"});
        unknown names are treated as C{undefined-condition}.
    @type condition: L{str}
    @param fullJID: whether the stanza the error concerns was addressed to
        a full JID (RFC 7247 Table 2 notes 1-4: a bare JID gives the global
        6xx/501 codes).
    @type fullJID: L{bool}
    @param hasAddress: for C{gone}: whether the error carries a new
        address (301, and the new address goes into C{Contact}) or not
        (410).
    @type hasAddress: L{bool}
    @return: a SIP status code.
    @rtype: L{int}
    """
    if condition == "gone":
        return 301 if hasAddress else 410
    try:
        full, bare = _XMPP_TO_SIP[condition]
    except KeyError:
        return _UNKNOWN_CONDITION_CODE
    return full if fullJID else bare


def xmppErrorForTimeout():
    """
    The stanza error for a SIP client transaction that timed out (Timer F).

    @return: C{(condition, errorType)}: C{("remote-server-timeout", "wait")}.
    """
    return sipToXMPP(TIMEOUT_CODE)


def xmppErrorForTransportFailure():
    """
    The stanza error for a fatal SIP transport failure (connection refused
    or closed, host not resolved). RFC 3261 treats it as a 503, so the
    condition is that of 503: C{("internal-server-error", "wait")}.

    @return: C{(condition, errorType)}.
    """
    return sipToXMPP(TRANSPORT_FAILURE_CODE)


def buildStanzaError(stanza, condition, errorType=None, text=None,
                     address=None, lang=None):
    """
    Build the error reply to a stanza (RFC 6120 section 8.3.1).

    The reply has the same element name as C{stanza} and no namespace of
    its own (it takes the stream's default namespace when written, so it
    serialises without a stray C{xmlns}), C{type='error'}, C{from} and C{to} swapped, the same C{id} (if any), and
    a single C{<error/>} child holding the condition and, optionally, a
    C{<text/>}. The original payload is not included (RFC 6120 allows but
    does not require it).

    Do not call this for a stanza that is itself an error: an error must
    never be answered with an error (RFC 6120 section 8.3.1 rule 8).

    @param stanza: the stanza being answered.
    @type stanza: L{domish.Element}
    @param condition: a defined condition name.
    @type condition: L{str}
    @param errorType: C{auth}, C{cancel}, C{continue}, C{modify} or
        C{wait}; L{None} picks the recommended type (L{conditionType}).
    @param text: human-readable text for C{<text/>}, or L{None}.
    @param address: the new address (an XMPP IRI) for C{gone} and
        C{redirect}, put as the condition's character data.
    @param lang: the C{xml:lang} of the C{<text/>}, or L{None}.
    @return: the error stanza.
    @rtype: L{domish.Element}
    @raise ValueError: on an unknown condition or error type, or if
        C{stanza} is an error itself.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown stanza error condition {condition!r}")
    if errorType is None:
        errorType = conditionType(condition)
    if errorType not in ERROR_TYPES:
        raise ValueError(f"unknown stanza error type {errorType!r}")
    if stanza.getAttribute("type") == "error":
        raise ValueError("an error stanza must not be answered with an error")
    reply = domish.Element((None, stanza.name))
    if stanza.getAttribute("from"):
        reply["to"] = stanza["from"]
    if stanza.getAttribute("to"):
        reply["from"] = stanza["to"]
    if stanza.getAttribute("id") is not None:
        reply["id"] = stanza["id"]
    reply["type"] = "error"
    error = reply.addElement("error")
    error["type"] = errorType
    conditionElement = error.addElement((NS_XMPP_STANZAS, condition))
    if address is not None and condition in ("gone", "redirect"):
        conditionElement.addContent(address)
    if text:
        textElement = error.addElement((NS_XMPP_STANZAS, "text"))
        if lang:
            textElement[(NS_XML, "lang")] = lang
        textElement.addContent(text)
    return reply


def isStanzaChild(stanza, child):
    """
    Whether C{child} is in the stanza's own namespace (a core child such
    as C{<body/>} or C{<error/>}, not an extension element).

    @type stanza: L{domish.Element}
    @type child: L{domish.Element}
    @rtype: L{bool}
    """
    return (
        child.uri == stanza.uri
        or child.uri is None
        or child.uri in STANZA_NAMESPACES
    )


def _errorChild(element):
    for child in element.elements():
        if child.name == "error" and isStanzaChild(element, child):
            return child
    return None


def parseStanzaError(element):
    """
    Read the error of an incoming C{type='error'} stanza.

    @param element: the stanza.
    @type element: L{domish.Element}
    @return: C{(condition, errorType, text)}. A missing or unknown
        condition is C{"undefined-condition"} (RFC 6120 section 8.3.2); a
        missing or unknown type is the condition's recommended type;
        C{text} is L{None} if absent.
    @rtype: L{tuple}
    """
    condition = "undefined-condition"
    errorType = None
    text = None
    error = _errorChild(element)
    if error is not None:
        for child in error.elements():
            if child.uri != NS_XMPP_STANZAS:
                continue
            if child.name == "text":
                if text is None:
                    text = str(child)
            elif condition == "undefined-condition" and child.name in CONDITIONS:
                condition = child.name
        errorType = error.getAttribute("type")
    if errorType not in ERROR_TYPES:
        errorType = conditionType(condition)
    return condition, errorType, text


def stanzaErrorAddress(element):
    """
    The new address carried by a C{gone} or C{redirect} error, if any.

    @param element: an incoming error stanza.
    @type element: L{domish.Element}
    @return: the character data of the C{gone}/C{redirect} condition
        (usually an C{xmpp:} IRI), stripped, or L{None}.
    """
    error = _errorChild(element)
    if error is None:
        return None
    for child in error.elements():
        if child.uri == NS_XMPP_STANZAS and child.name in ("gone", "redirect"):
            address = str(child).strip()
            return address or None
    return None
