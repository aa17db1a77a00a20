# -*- test-case-name: tests.test_addressing -*-
"""
Every address mapping rule of the gateway: SIP URI <-> JID.

The rules are those of C{interworking.md} section 2 (RFC 7247 section 6,
XEP-0106, RFC 7622), with the Kamailio-compatible schemes of section 2.7 made
safe. All functions here are pure: they take text and return text, and raise
L{AddressError} (a L{ValueError}) with a reason when an address cannot be
mapped.

Three schemes, chosen by configuration (L{AddressMapper}):

  - B{separator} (no gwmap): C{sip:user*jabber.org@gateway_domain} is the
    JID C{user@jabber.org}, and the SIP user C{sip:alice@sip.example} is seen
    in XMPP as C{alice*sip.example@xmpp_domain}. The split is at the I{last}
    separator of the I{percent-decoded} SIP user, or of the I{escaped} JID
    localpart, so user names such as C{*97} survive.
  - B{gwmap}: C{user@domain} on both sides with the domain swapped through a
    table (SIP domain -> XMPP domain); an unmatched domain passes unchanged.
  - B{direct} (RFC 7247): a gwmap entry whose two sides are equal.

Local parts (RFC 7247 section 6.2-6.5, completed by XEP-0106):

  - SIP -> XMPP: percent-decode, read as UTF-8, case-map and normalise
    (stringprep nodeprep mapping and NFKC), then XEP-0106-escape every
    character disallowed in a localpart (space C{" & ' / : < > @}, and a
    backslash that starts an escape sequence). The result must pass nodeprep
    unchanged, must not begin or end with C{\\20} and must fit in 1023
    octets.
  - XMPP -> SIP: XEP-0106-unescape, then percent-encode (UTF-8, upper-case
    hex) every character not allowed in the RFC 3261 C{user} production.
    Received JIDs are canonicalised first (nodeprep, IDNA with UTS 46 mapping,
    resourceprep). A valid JID that XEP-0106 would never produce (a
    localpart beginning with C{\\20}, say) is still mapped, so the way
    back may refuse it.

Round trips: a JID localpart in the form XEP-0106 produces comes back
unchanged from JID -> SIP -> JID, with one known exception: an escaped
C{< = >} followed by U+0338 COMBINING LONG SOLIDUS OVERLAY is composed by
NFKC on the way back (C{\\3c} U+0338 becomes U+226E).

Case: JID localparts are case-folded, SIP users are case-sensitive. So
C{sip:Alice@x} and C{sip:alice@x} both become C{alice@x}, and the answer
goes to C{sip:alice@x}: the mapping is not injective and does not
round-trip case (project decision 9). Likewise NFKC folds compatibility
characters (C{sip:%EF%AC%80@x}, U+FB00, becomes C{ff@x}).

Resources and GRUUs: a public GRUU (C{;gr=value}) is the resourcepart; a
value-less C{;gr} (temporary GRUU) is not mapped: the URI maps to the bare
JID. Every other part of a SIP URI (password, port, parameters, headers) is
dropped.

Domains: JID domainparts are in U-label form (RFC 7622 section 3.2.1), SIP
hosts in A-label form (IDNA): C{münchen.example} <->
C{xn--mnchen-3ya.example}. A trailing dot is removed. IPv6 literals keep
their brackets on both sides. In the separator scheme the domain that is
carried I{inside} a user part or localpart (C{alice*sip.example}) is written
in its ASCII (A-label) form, and either form is accepted on the way back.

Generated SIP URIs always use the C{sip:} scheme. Accepted inputs are
C{sip:}, C{im:} and C{pres:} URIs; C{sips:} is refused as a target (RFC 7247
section 8: a SIPS Request-URI must not be translated into XMPP) but accepted
as a sender; C{tel:} and other schemes are refused (RFC 7247 section 6.1).
Addresses without a user part (C{sip:example.com}) or without a localpart
(the JID C{example.com}) are refused as well.
"""

import functools
import ipaddress
import re
import unicodedata
import weakref
from urllib.parse import quote, unquote_to_bytes

import idna
from twisted.words.protocols.jabber.jid import JID
from twisted.words.protocols.jabber.xmpp_stringprep import nodeprep, resourceprep

from xmppgw.memo import bounded, perAddress
from xmppgw.sip.uri import URIError, parseURI

__all__ = [
    "AddressError",
    "AddressMapper",
    "escapeLocalpart",
    "unescapeLocalpart",
    "percentDecode",
    "percentEncodeUser",
    "percentEncodeParam",
    "MAX_PART_OCTETS",
]


MAX_PART_OCTETS = 1023
"""The longest JID localpart, domainpart or resourcepart, in UTF-8 octets
(RFC 7622 sections 3.2-3.4)."""

# A decoded SIP user longer than this (in UTF-8 octets) is refused before the
# (cached) stringprep work: it could only map to a localpart over the limit
# unless almost all of it is removed by the nodeprep mapping.
_MAX_USER_OCTETS = 4 * MAX_PART_OCTETS


class AddressError(ValueError):
    """
    An address cannot be mapped; C{str(error)} says why.
    """


# XEP-0106 escaping ----------------------------------------------------------

_ESCAPES = {
    " ": "\\20",
    '"': "\\22",
    "&": "\\26",
    "'": "\\27",
    "/": "\\2f",
    ":": "\\3a",
    "<": "\\3c",
    ">": "\\3e",
    "@": "\\40",
    "\\": "\\5c",
}
_UNESCAPES = {code[1:]: char for char, code in _ESCAPES.items()}
_ESCAPE_TABLE = str.maketrans(
    {char: code for char, code in _ESCAPES.items() if char != "\\"}
)
_CODES = "|".join(sorted(_UNESCAPES))
_BACKSLASH_STARTING_ESCAPE = re.compile(r"\\(?=(?:%s))" % (_CODES,))
_ESCAPE_SEQUENCE = re.compile(r"\\(%s)" % (_CODES,))


def escapeLocalpart(text):
    """
    Escape a string for use as a JID localpart (XEP-0106).

    Every character disallowed in a localpart (space C{" & ' / : < > @}) is
    replaced by its C{\\hh} sequence, and a backslash is replaced by C{\\5c}
    when it starts one of the ten escape sequences (so C{c:\\5commas} becomes
    C{c\\3a\\5c5commas}). Any other backslash, and partial or unknown
    sequences such as C{foo\\bar}, are left alone. No case mapping or
    validation is done here.

    @param text: the unescaped string.
    @type text: L{str}
    @rtype: L{str}
    """
    if "\\" in text:
        text = _BACKSLASH_STARTING_ESCAPE.sub(r"\\5c", text)
    return text.translate(_ESCAPE_TABLE)


def _unescapeMatch(match):
    return _UNESCAPES[match.group(1)]


def unescapeLocalpart(text):
    """
    Undo L{escapeLocalpart} (XEP-0106): replace each of the ten escape
    sequences (lower-case hex only: case is significant) by its character,
    in one left-to-right pass. Anything else is left alone.

    @param text: an escaped JID localpart.
    @type text: L{str}
    @rtype: L{str}
    """
    if "\\" not in text:
        return text
    return _ESCAPE_SEQUENCE.sub(_unescapeMatch, text)


# Percent-encoding ------------------------------------------------------------

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

# RFC 3261 section 25: user = 1*( unreserved / escaped / user-unreserved ),
# unreserved = alphanum / mark, mark = - _ . ! ~ * ' ( ),
# user-unreserved = & = + $ , ; ? /.  quote() always keeps alphanum and _.-~
_USER_SAFE = "!*'()&=+$,;?/"
# paramchar = param-unreserved / unreserved / escaped,
# param-unreserved = [ ] / : & + $
_PARAM_SAFE = "!*'()[]/:&+$"


def percentDecode(text):
    """
    Percent-decode a URI component and read the octets as UTF-8.

    @param text: the component as found in the URI.
    @type text: L{str}
    @return: the decoded text.
    @rtype: L{str}
    @raise AddressError: a C{%} not followed by two hex digits (RFC 3986
        section 2.1), or octets that are not UTF-8.
    """
    if "%" not in text:
        return text
    bad = _BAD_PERCENT.search(text)
    if bad is not None:
        raise AddressError(
            "invalid percent-escape %r at offset %d in %r"
            % (text[bad.start() : bad.start() + 3], bad.start(), text)
        )
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise AddressError("percent-decoded %r is not UTF-8" % (text,))


def _unchangedBy(safe):
    """
    A regex matching the texts that C{quote(text, safe=safe)} returns
    unchanged: only the characters C{quote} always keeps (ASCII
    alphanumerics and C{_.-~}) and those in C{safe}.
    """
    return re.compile("[A-Za-z0-9_.\\-~%s]*" % (re.escape(safe),))


def _percentEncode(text, safe, unchanged):
    # quote() encodes and scans the text on every call; most user parts
    # need no escape at all, which one regex match tells.
    if unchanged.fullmatch(text) is not None:
        return text
    try:
        return quote(text, safe=safe)
    except UnicodeEncodeError:
        raise AddressError("%r cannot be encoded as UTF-8" % (text,))


_USER_UNCHANGED = _unchangedBy(_USER_SAFE)
_PARAM_UNCHANGED = _unchangedBy(_PARAM_SAFE)


def percentEncodeUser(text):
    """
    Percent-encode text for the user part of a SIP URI: every character not
    allowed by the RFC 3261 C{user} production (alphanumerics,
    C{- _ . ! ~ * ' ( )} and C{& = + $ , ; ? /} stay) becomes C{%HH}
    (upper-case hex) of its UTF-8 octets.

    @type text: L{str}
    @rtype: L{str}
    @raise AddressError: the text cannot be encoded as UTF-8 (lone
        surrogates).
    """
    return _percentEncode(text, _USER_SAFE, _USER_UNCHANGED)


def percentEncodeParam(text):
    """
    Percent-encode text for a SIP URI parameter value (RFC 3261 C{paramchar}:
    alphanumerics, C{- _ . ! ~ * ' ( )} and C{[ ] / : & + $} stay).

    @type text: L{str}
    @rtype: L{str}
    @raise AddressError: the text cannot be encoded as UTF-8.
    """
    return _percentEncode(text, _PARAM_SAFE, _PARAM_UNCHANGED)


# JID parts -----------------------------------------------------------------

# Stringprep is pure Python and costs tens of microseconds per call, paid on
# every message. For ASCII input its result is known without the tables:
# nodeprep case-folds (B.2 maps A-Z to a-z and nothing else in ASCII; B.1
# and NFKC change no ASCII character) and prohibits space, the controls
# (C.1.1, C.2.1) and the eight characters " & ' / : < > @; resourceprep maps
# nothing in ASCII and prohibits only the controls; no ASCII character is
# unassigned or right-to-left. Other input goes through stringprep as before.
_NODEPREP_ASCII_BAD = re.compile("[\x00-\x20\x7f\"&'/:<>@]")
_RESOURCEPREP_ASCII_BAD = re.compile("[\x00-\x1f\x7f]")
# The escaped localparts L{_checkLocalpart} accepts without looking
# further: printable ASCII that nodeprep leaves unchanged (none of
# _NODEPREP_ASCII_BAD, no upper case) and without a backslash (so no escaped
# space at either end), at most MAX_PART_OCTETS long.
_CHECKED_LOCALPART = re.compile(r"[!#-%%(-.0-9;=?\[\]-~]{1,%d}" % (MAX_PART_OCTETS,))


def _nodeprepMap(text):
    """
    C{nodeprep.map(text)}, with an ASCII fast path.
    """
    if text.isascii():
        return text.lower()
    return nodeprep.map(text)


def _nodeprepare(text):
    """
    C{nodeprep.prepare(text)}, with an ASCII fast path.

    @raise UnicodeError: as C{nodeprep.prepare}.
    """
    if text.isascii():
        bad = _NODEPREP_ASCII_BAD.search(text)
        if bad is not None:
            raise UnicodeError("Invalid character %r" % (bad.group(),))
        return text.lower()
    return nodeprep.prepare(text)


def _resourceprepare(text):
    """
    C{resourceprep.prepare(text)}, with an ASCII fast path.

    @raise UnicodeError: as C{resourceprep.prepare}.
    """
    if text.isascii():
        bad = _RESOURCEPREP_ASCII_BAD.search(text)
        if bad is not None:
            raise UnicodeError("Invalid character %r" % (bad.group(),))
        return text
    return resourceprep.prepare(text)



def _octets(text):
    return len(text.encode("utf-8", "surrogatepass"))


def _checkLocalpart(local, whatFormat, whatArgument):
    """
    Check that an escaped localpart is one that XMPP servers accept as it is.

    @param whatFormat: C{%}-format of what C{local} is, for the error text,
        with one C{%r} for C{whatArgument} (formatted only on error).
    """
    if _CHECKED_LOCALPART.fullmatch(local) is not None:
        # Printable ASCII that nodeprep leaves unchanged, no escaped space
        # at either end (so no "\\20" at all), shorter than the limit: the
        # checks below would all pass.
        return
    what = whatFormat % (whatArgument,)
    if local.startswith("\\20") or local.endswith("\\20"):
        raise AddressError(
            "%s %r would begin or end with an escaped space (\\20), which "
            "XEP-0106 forbids" % (what, local)
        )
    if _octets(local) > MAX_PART_OCTETS:
        raise AddressError(
            "%s would be longer than %d octets" % (what, MAX_PART_OCTETS)
        )
    try:
        prepared = _nodeprepare(local)
    except UnicodeError as e:
        raise AddressError("%s %r is not a valid JID localpart: %s" % (what, local, e))
    if prepared != local:
        raise AddressError(
            "%s %r is changed by nodeprep (to %r), so it cannot be mapped "
            "unambiguously" % (what, local, prepared)
        )


@bounded(4096)
def _localpartFromUser(user):
    """
    Map a percent-decoded SIP user to an escaped JID localpart.
    """
    try:
        mapped = unicodedata.normalize("NFKC", _nodeprepMap(user))
    except UnicodeError as e:
        raise AddressError("user part %r cannot be mapped: %s" % (user, e))
    if not mapped:
        raise AddressError("user part %r is empty after case mapping" % (user,))
    local = escapeLocalpart(mapped)
    _checkLocalpart(local, "user part %r as a localpart", user)
    return local


# Decoded SIP users that map to a localpart by case-folding alone: the
# characters of _CHECKED_LOCALPART and upper-case ASCII letters, at most
# MAX_PART_OCTETS of them. For these the nodeprep mapping is lower(), NFKC,
# XEP-0106 escaping (no space, " & ' / : < > @ or backslash) change nothing
# and the lower-cased text passes _checkLocalpart.
_PLAIN_USER = re.compile(r"[!#-%%(-.0-9;=?A-\[\]-~]{1,%d}" % (MAX_PART_OCTETS,))


def _userToLocalpart(user):
    if not user:
        raise AddressError("the SIP URI has an empty user part")
    if _PLAIN_USER.fullmatch(user) is not None:
        return user.lower()
    if len(user) > _MAX_USER_OCTETS or _octets(user) > _MAX_USER_OCTETS:
        raise AddressError(
            "user part is far longer than a JID localpart (%d octets)"
            % (MAX_PART_OCTETS,)
        )
    return _localpartFromUser(user)


@bounded(perAddress(4096))
def _prepLocalpart(local):
    """
    Canonicalise the localpart of a received JID (nodeprep).
    """
    if _octets(local) > MAX_PART_OCTETS:
        raise AddressError(
            "JID localpart is longer than %d octets" % (MAX_PART_OCTETS,)
        )
    try:
        prepared = _nodeprepare(local)
    except UnicodeError as e:
        raise AddressError("invalid JID localpart %r: %s" % (local, e))
    if not prepared:
        raise AddressError("JID localpart %r is empty after mapping" % (local,))
    return prepared


@bounded(4096)
def _prepResource(resource):
    """
    Canonicalise a resourcepart (resourceprep) and check its size.
    """
    if _octets(resource) > 4 * MAX_PART_OCTETS:
        raise AddressError(
            "resourcepart is longer than %d octets" % (MAX_PART_OCTETS,)
        )
    try:
        prepared = _resourceprepare(resource)
    except UnicodeError as e:
        raise AddressError("invalid resourcepart %r: %s" % (resource, e))
    if not prepared:
        raise AddressError("resourcepart %r is empty after mapping" % (resource,))
    if _octets(prepared) > MAX_PART_OCTETS:
        raise AddressError(
            "resourcepart is longer than %d octets" % (MAX_PART_OCTETS,)
        )
    return prepared


# Domains -------------------------------------------------------------------

_LDH_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


@bounded(1024)
def _canonDomain(text):
    """
    Canonicalise a domain given as SIP host or JID domainpart.

    @return: C{(jidForm, sipForm)}: U-labels and A-labels (the same for ASCII
        names and IP literals).
    @raise AddressError: not a host name or IP literal.
    """
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise AddressError("empty domain")
    if text.startswith("["):
        if not text.endswith("]"):
            raise AddressError("invalid IPv6 literal %r" % (text,))
        try:
            address = ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise AddressError("invalid IPv6 literal %r" % (text,))
        if address.scope_id is not None:
            raise AddressError("IPv6 literal %r has a zone index" % (text,))
        literal = "[%s]" % (address.compressed,)
        return literal, literal
    if text.isascii():
        lower = text.lower()
        labels = lower.split(".")
        if len(lower) <= 253 and all(
            _LDH_LABEL.match(label) and not label.startswith("xn--")
            for label in labels
        ):
            return lower, lower
    try:
        alabels = idna.encode(text, uts46=True).decode("ascii")
        ulabels = idna.decode(alabels)
    except (idna.IDNAError, UnicodeError, ValueError) as e:
        raise AddressError("invalid domain %r: %s" % (text, e))
    if _octets(ulabels) > MAX_PART_OCTETS:
        raise AddressError("domain %r is too long" % (text,))
    return ulabels, alabels


def _jidDomain(text):
    return _canonDomain(text)[0]


def _sipHost(text):
    return _canonDomain(text)[1]


def _splitJID(jid):
    """
    Split and canonicalise a JID.

    @param jid: the JID as text (or an object with C{full()}, such as
        L{twisted.words.protocols.jabber.jid.JID}).
    @return: C{(localpart or None, domain (U-labels), resource or None)}.
    """
    if not isinstance(jid, str):
        full = getattr(jid, "full", None)
        if full is None:
            raise AddressError("not a JID: %r" % (jid,))
        jid = full()
    resource = None
    slash = jid.find("/")
    if slash != -1:
        resource = jid[slash + 1 :]
        jid = jid[:slash]
        if not resource:
            raise AddressError("JID has an empty resourcepart")
        resource = _prepResource(resource)
    at = jid.find("@")
    if at == -1:
        local = None
        domain = jid
    else:
        local = jid[:at]
        domain = jid[at + 1 :]
        if not local:
            raise AddressError("JID has an empty localpart")
        local = _prepLocalpart(local)
    if not domain:
        raise AddressError("JID has no domainpart")
    return local, _jidDomain(domain), resource


def _joinJID(local, domain, resource):
    if resource is None:
        return "%s@%s" % (local, domain)
    return "%s@%s/%s" % (local, domain, resource)


def _joinSIP(user, host, resource):
    if resource is None:
        return "sip:%s@%s" % (user, host)
    return "sip:%s@%s;gr=%s" % (user, host, percentEncodeParam(resource))


# SIP URIs --------------------------------------------------------------------

_SIP_SCHEMES = frozenset(["sip", "sips"])
_IM_SCHEMES = frozenset(["im", "pres"])


def _splitSIP(uri, target):
    """
    Take a SIP (or im/pres) URI apart.

    @param uri: the URI text, or a parsed L{xmppgw.sip.uri.URI}.
    @param target: C{True} for a Request-URI (refuse C{sips:}).
    @return: C{(user, host, resource)}: C{user} percent-decoded (or L{None}),
        C{host} in canonical SIP form, C{resource} from a public GRUU or
        L{None}.
    """
    if isinstance(uri, str):
        try:
            uri = parseURI(uri)
        except URIError as e:
            raise AddressError("invalid URI: %s" % (e,))
    scheme = uri.scheme
    if scheme in _SIP_SCHEMES:
        if scheme == "sips" and target:
            raise AddressError(
                "a sips: Request-URI must not be translated into XMPP "
                "(RFC 7247 section 8)"
            )
    elif scheme in _IM_SCHEMES:
        pass
    elif scheme == "tel":
        raise AddressError(
            "tel: URIs are not mapped to JIDs (RFC 7247 section 6.1)"
        )
    else:
        raise AddressError("unsupported URI scheme %r" % (scheme,))
    if uri.user is None or uri.host is None:
        raise AddressError("the URI %s has no user part" % (uri,))
    user = percentDecode(uri.user)
    host = _sipHost(uri.host)
    resource = None
    if scheme in _SIP_SCHEMES:
        gr = uri.param("gr")
        if gr:
            # A public GRUU. A value-less ;gr is a temporary GRUU (RFC 5627):
            # it is not mapped (interworking.md 2.5).
            resource = _prepResource(percentDecode(gr))
    return user, host, resource


# The mapper ------------------------------------------------------------------

# Characters that may never be the separator, and why.
_SEPARATOR_REASONS = [
    ("%", "it starts percent-escapes in SIP"),
    ("\\", "it starts XEP-0106 escapes in XMPP"),
    ("@", "it separates user and host"),
    (":", "it is not allowed in a JID localpart and delimits URI parts"),
    ('"&\'/<>', "it is not allowed in a JID localpart"),
    ("-.[]", "it occurs in domain names and IP literals"),
]


def _checkSeparator(separator):
    """
    @raise ValueError: the separator cannot be used safely (see
        interworking.md 2.7).
    """
    if not isinstance(separator, str) or len(separator) != 1:
        raise ValueError(
            "domain_separator %r must be exactly one character" % (separator,)
        )
    for chars, reason in _SEPARATOR_REASONS:
        if separator in chars:
            raise ValueError(
                "domain_separator %r is not allowed: %s" % (separator, reason)
            )
    if separator.isspace() or not separator.isprintable():
        raise ValueError(
            "domain_separator %r is not allowed: it is whitespace or a "
            "control character" % (separator,)
        )
    if separator.isalnum():
        raise ValueError(
            "domain_separator %r is not allowed: letters and digits occur "
            "in user names and domain names" % (separator,)
        )
    if not separator.isascii():
        raise ValueError(
            "domain_separator %r is not allowed: use an ASCII punctuation "
            "character such as '*'" % (separator,)
        )


#: How many results of each mapping an L{AddressMapper} remembers: the
#: addresses of that many active users per mapping (C{sipTargetToJID},
#: C{sipSenderToJID}, C{jidTargetToSIP}, C{jidSenderToSIP}). Least recently
#: used first out: with more active users than that, an address whose
#: result was dropped is mapped afresh (all of them, when they take turns
#: as in benchmark 1; on PyPy 1.2-1.6 µs and 4-6 KB of young objects per
#: mapping). Each remembered result costs about 0.2 KB on
#: CPython and 0.5 KB on PyPy (its collector's headroom included): with
#: all four full, about 13 and 31 MB of resident memory. See
#: docs/performance.rst, round 18.
MEMO_SIZE = 16384


class AddressMapper:
    """
    Maps addresses between SIP and XMPP under one of the three schemes (see
    the module docstring).

    @ivar separator: the one-character separator of the separator scheme.
    @ivar gatewayDomain: the gateway's SIP domain (A-labels).
    @ivar xmppDomain: the gateway's XMPP domain (U-labels).
    @ivar gwmap: the normalised table, SIP domain (A-labels) -> XMPP domain
        (U-labels); empty for the separator scheme.
    """

    def __init__(
        self,
        separator="*",
        gatewayDomain="sip-xmpp.example.org",
        xmppDomain="sip-xmpp.example.org",
        gwmap=None,
    ):
        """
        @param separator: Kamailio's C{domain_separator}; one ASCII
            punctuation character other than C{% \\ @ :}, the characters
            disallowed in a JID localpart and C{- . [ ]}.
        @param gatewayDomain: Kamailio's C{gateway_domain}: the SIP domain of
            the gateway (separator scheme).
        @param xmppDomain: Kamailio's C{xmpp_domain}: the XMPP domain of the
            gateway (separator scheme).
        @param gwmap: a mapping SIP domain -> XMPP domain; empty or L{None}
            selects the separator scheme.
        @raise ValueError: a bad separator or domain, or a gwmap with two
            SIP domains mapped to one XMPP domain.
        """
        _checkSeparator(separator)
        self.separator = separator
        self.gatewayDomain = self._configDomain("gateway_domain", gatewayDomain)[1]
        self.xmppDomain = self._configDomain("xmpp_domain", xmppDomain)[0]
        self.gwmap = {}
        self._reverse = {}
        for sipDomain, xmppDomain_ in (gwmap or {}).items():
            sipForm = self._configDomain("gwmap", sipDomain)[1]
            jidForm = self._configDomain("gwmap", xmppDomain_)[0]
            known = self.gwmap.get(sipForm)
            if known is not None and known != jidForm:
                raise ValueError(
                    "gwmap maps SIP domain %r twice: to %r and to %r"
                    % (sipForm, known, jidForm)
                )
            other = self._reverse.get(jidForm)
            if other is not None and other != sipForm:
                raise ValueError(
                    "gwmap maps both SIP domains %r and %r to the XMPP domain "
                    "%r, so the way back is ambiguous" % (other, sipForm, jidForm)
                )
            self.gwmap[sipForm] = jidForm
            self._reverse[jidForm] = sipForm
        # The four mappings depend only on the address and on this
        # (unchanging) configuration: remember the last results per mapper.
        # A reload builds a new mapper, so it starts with empty memos.
        # Errors are not remembered. The memos reach the mapper through a
        # weak proxy: no reference cycle, so a mapper replaced by a reload
        # is freed at once (a cycle would keep it, memos included, for
        # good once gctune has frozen it out of the collector's walks).
        proxy = weakref.proxy(self)
        for name in ("sipTargetToJID", "sipSenderToJID", "jidTargetToSIP",
                     "jidSenderToSIP"):
            setattr(self, name, bounded(MEMO_SIZE)(
                functools.partial(getattr(AddressMapper, name), proxy)))

    @staticmethod
    def _configDomain(name, value):
        if not isinstance(value, str):
            raise ValueError("%s %r is not a domain name" % (name, value))
        try:
            return _canonDomain(value)
        except AddressError as e:
            raise ValueError("%s: %s" % (name, e))

    def __repr__(self):
        if self.gwmap:
            return "<AddressMapper gwmap=%r>" % (self.gwmap,)
        return "<AddressMapper separator=%r gatewayDomain=%r xmppDomain=%r>" % (
            self.separator,
            self.gatewayDomain,
            self.xmppDomain,
        )

    # SIP -> XMPP

    def _sipToJIDByMap(self, user, host, resource):
        domain = self.gwmap.get(host)
        if domain is None:
            domain = _jidDomain(host)
        return _joinJID(_userToLocalpart(user), domain, resource)

    def sipTargetToJID(self, uri):
        """
        Map a SIP Request-URI to the JID of the XMPP recipient.

        Separator scheme: C{sip:user*jabber.org@gateway_domain} ->
        C{user@jabber.org}; the host must be the gateway domain and the user
        must hold the separator. gwmap scheme: the host is swapped through
        the table.

        @param uri: the URI, as text or a parsed L{xmppgw.sip.uri.URI}.
        @return: the JID text (a full JID when the URI is a public GRUU).
        @raise AddressError: the URI cannot be mapped.
        """
        user, host, resource = _splitSIP(uri, True)
        if self.gwmap:
            return self._sipToJIDByMap(user, host, resource)
        if host != self.gatewayDomain:
            raise AddressError(
                "Request-URI host %r is not the gateway domain %r"
                % (host, self.gatewayDomain)
            )
        index = user.rfind(self.separator)
        if index == -1:
            raise AddressError(
                "user part %r has no domain separator %r"
                % (user, self.separator)
            )
        localUser, domain = user[:index], user[index + 1 :]
        if not localUser:
            raise AddressError("user part %r has nothing before the separator" % (user,))
        if not domain:
            raise AddressError("user part %r has no XMPP domain after the separator" % (user,))
        return _joinJID(_userToLocalpart(localUser), _jidDomain(domain), resource)

    def sipSenderToJID(self, uri):
        """
        Map a SIP From URI to the JID the stanza comes from.

        Separator scheme: C{sip:alice@sip.example} ->
        C{alice*sip.example@xmpp_domain}. gwmap scheme: the host is swapped
        through the table.

        @param uri: the URI, as text or a parsed L{xmppgw.sip.uri.URI}.
        @return: the JID text (a full JID when the URI is a public GRUU).
        @raise AddressError: the URI cannot be mapped.
        """
        user, host, resource = _splitSIP(uri, False)
        if self.gwmap:
            return self._sipToJIDByMap(user, host, resource)
        local = "%s%s%s" % (_userToLocalpart(user), self.separator, escapeLocalpart(host))
        _checkLocalpart(local, "sender %r as a localpart", user)
        return _joinJID(local, self.xmppDomain, resource)

    # XMPP -> SIP

    def _jidToSIPByMap(self, local, domain, resource):
        host = self._reverse.get(domain)
        if host is None:
            host = _sipHost(domain)
        return _joinSIP(percentEncodeUser(unescapeLocalpart(local)), host, resource)

    def jidTargetToSIP(self, jid):
        """
        Map the C{to} of a stanza to a SIP Request-URI.

        Separator scheme: C{user*sip.example@xmpp_domain} ->
        C{sip:user@sip.example}. gwmap scheme: the domain is swapped back
        through the table. A resource becomes C{;gr=}.

        @param jid: the JID text (or a L{twisted.words.protocols.jabber.jid.JID}).
        @return: the SIP URI text.
        @raise AddressError: the JID cannot be mapped.
        """
        local, domain, resource = _splitJID(jid)
        if local is None:
            raise AddressError("JID %s has no localpart" % (domain,))
        if self.gwmap:
            return self._jidToSIPByMap(local, domain, resource)
        if domain != self.xmppDomain:
            raise AddressError(
                "JID domain %r is not the gateway's XMPP domain %r"
                % (domain, self.xmppDomain)
            )
        index = local.rfind(self.separator)
        if index == -1:
            raise AddressError(
                "localpart %r has no domain separator %r" % (local, self.separator)
            )
        localUser, host = local[:index], local[index + 1 :]
        if not localUser:
            raise AddressError("localpart %r has nothing before the separator" % (local,))
        if not host:
            raise AddressError("localpart %r has no SIP domain after the separator" % (local,))
        return _joinSIP(
            percentEncodeUser(unescapeLocalpart(localUser)),
            _sipHost(unescapeLocalpart(host)),
            resource,
        )

    def jidSenderToSIP(self, jid):
        """
        Map the C{from} of a stanza to a SIP From URI.

        Separator scheme: C{user@jabber.org/res} ->
        C{sip:user*jabber.org@gateway_domain;gr=res}. gwmap scheme: the
        domain is swapped back through the table.

        @param jid: the JID text (or a L{twisted.words.protocols.jabber.jid.JID}).
        @return: the SIP URI text.
        @raise AddressError: the JID cannot be mapped.
        """
        local, domain, resource = _splitJID(jid)
        if local is None:
            raise AddressError("JID %s has no localpart" % (domain,))
        if self.gwmap:
            return self._jidToSIPByMap(local, domain, resource)
        user = "%s%s%s" % (unescapeLocalpart(local), self.separator, _sipHost(domain))
        return _joinSIP(percentEncodeUser(user), self.gatewayDomain, resource)


# A JID that stringprep leaves unchanged: a localpart of printable ASCII
# without upper case, space or " & ' / : < > @; a lower-case ASCII host name;
# a resource of printable ASCII. Checked part by part (jidHostAndBare):
# one pattern for the whole JID cost about 0.7 µs a JID (PyPy and CPython),
# and hosts are few and remembered.
_PLAIN_LOCALPART = re.compile(r"[!#-%(-.0-9;=?\[-~]+")
_PLAIN_HOST = re.compile(
    r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
)


@bounded(256)
def _isPlainHost(host):
    """
    Whether C{host} is a lower-case ASCII host name (L{_PLAIN_HOST}).
    """
    return _PLAIN_HOST.fullmatch(host) is not None


#: How many JIDs L{jidHost} and L{jidHostAndBare} remember at least (the
#: last ones looked up; L{xmppgw.memo.bounded}): on CPython as many as
#: the other memos that follow the addresses in use
#: (L{xmppgw.memo.perAddress}; round 28 in docs/performance.rst); on PyPy
#: 2,048, not L{MEMO_SIZE}: a JID read afresh costs 0.2 µs there, and
#: twice as many are held at most (round 19).
JID_MEMO_SIZE = perAddress(2048)


@bounded(JID_MEMO_SIZE)
def jidHostAndBare(text):
    """
    C{(JID(text).host, JID(text).userhost())}, cheaply for the common case.

    The mapper writes canonical JIDs, so when the whole JID is plain ASCII
    that stringprep leaves unchanged the parts are read without the
    stringprep work of L{JID}; anything else is parsed by L{JID}, which
    raises as before. The results are remembered (L{JID_MEMO_SIZE}): the
    same JIDs come back message after message (each relayed message reads
    the host of its C{from} and C{to}, the policy its sender's bare JID).
    Errors are not remembered.

    @raise twisted.words.protocols.jabber.jid.InvalidFormat: for a
        malformed JID (and the other errors L{JID} raises).
    """
    # As L{JID} splits: the resource after the first "/", the localpart
    # before the first "@" of the rest. A plain localpart or host has no
    # "@", so a second "@" goes to L{JID}.
    bare, slash, resource = text.partition("/")
    local, at, host = bare.partition("@")
    if not at:
        host = local
    if ((not at or _PLAIN_LOCALPART.fullmatch(local) is not None)
            and _isPlainHost(host)
            and (not slash or (resource and resource.isascii()
                               and resource.isprintable()))):
        return (host, bare)
    jid = JID(text)
    return (jid.host, jid.userhost())


def jidHost(text):
    """
    C{JID(text).host}, cheaply for the common case (L{jidHostAndBare}).

    @raise twisted.words.protocols.jabber.jid.InvalidFormat: for a
        malformed JID (and the other errors L{JID} raises).
    """
    return jidHostAndBare(text)[0]
