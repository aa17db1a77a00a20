"""
Tests for L{xmppgw.errors}: the SIP <-> XMPP error tables and stanza errors.
"""

from twisted.trial import unittest
from twisted.words.xish import domish

from xmppgw import errors

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_XML = "http://www.w3.org/XML/1998/namespace"


def parseStanza(xml, namespace="jabber:component:accept"):
    """
    Parse one stanza the way it arrives on an XMPP stream: as a child of a
    stream root in C{namespace}.

    @param xml: the stanza's XML text.
    @return: the stanza element.
    @rtype: L{domish.Element}
    """
    stream = domish.elementStream()
    elements = []
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = elements.append
    stream.DocumentEndEvent = lambda: None
    header = (
        f"<stream:stream xmlns='{namespace}' "
        "xmlns:stream='http://etherx.jabber.org/streams'>"
    )
    stream.parse((header + xml).encode("utf-8"))
    assert len(elements) == 1, elements
    return elements[0]


# RFC 7247 Table 3 (interworking.md 3.6), one row per line:
# (codes, condition).
SIP_TO_XMPP_TABLE = [
    ([300, 302, 305], "redirect"),
    ([301, 410], "gone"),
    ([380], "not-acceptable"),
    ([400, 402, 493], "bad-request"),
    ([401], "not-authorized"),
    ([403], "forbidden"),
    ([404], "item-not-found"),
    ([405, 420, 439, 501], "feature-not-implemented"),
    ([406, 415, 416, 421, 482, 483, 488, 505, 606], "not-acceptable"),
    ([407], "registration-required"),
    ([408, 504], "remote-server-timeout"),
    ([413, 414, 440, 489, 513], "policy-violation"),
    ([423], "resource-constraint"),
    ([430, 480, 486, 487, 600, 603], "recipient-unavailable"),
    ([481, 484, 485, 604], "item-not-found"),
    ([491], "unexpected-request"),
    ([500, 503], "internal-server-error"),
    ([502], "remote-server-not-found"),
]

# RFC 7247 Table 2: (condition, code for a full JID, code for a bare JID),
# with this project's choices where the table offers two codes.
XMPP_TO_SIP_TABLE = [
    ("bad-request", 400, 400),
    ("conflict", 400, 400),
    ("feature-not-implemented", 405, 501),
    ("forbidden", 403, 603),
    ("internal-server-error", 500, 500),
    ("item-not-found", 404, 604),
    ("jid-malformed", 400, 400),
    ("not-acceptable", 406, 606),
    ("not-allowed", 403, 403),
    ("not-authorized", 401, 401),
    ("policy-violation", 403, 403),
    ("recipient-unavailable", 480, 600),
    ("redirect", 302, 302),
    ("registration-required", 407, 407),
    ("remote-server-not-found", 404, 404),
    ("remote-server-timeout", 408, 408),
    ("resource-constraint", 500, 500),
    ("service-unavailable", 403, 403),
    ("subscription-required", 400, 400),
    ("undefined-condition", 400, 400),
    ("unexpected-request", 400, 400),
]


class SIPToXMPPTests(unittest.TestCase):
    """
    Tests for L{errors.sipToXMPP}.
    """

    def test_table(self):
        """
        Every code of RFC 7247 Table 3 maps to the condition of its row.
        """
        for codes, condition in SIP_TO_XMPP_TABLE:
            for code in codes:
                self.assertEqual(
                    condition, errors.sipToXMPP(code)[0], f"SIP {code}"
                )

    def test_typesAreValid(self):
        """
        Every listed code yields a valid RFC 6120 error type.
        """
        for codes, condition in SIP_TO_XMPP_TABLE:
            for code in codes:
                errorType = errors.sipToXMPP(code)[1]
                self.assertIn(
                    errorType, {"auth", "cancel", "modify", "wait"}, f"SIP {code}"
                )

    def test_recommendedTypes(self):
        """
        The error type is the condition's RFC 6120 recommendation, except for
        the documented refinements (503 and 603).
        """
        self.assertEqual(("item-not-found", "cancel"), errors.sipToXMPP(404))
        self.assertEqual(("forbidden", "auth"), errors.sipToXMPP(403))
        self.assertEqual(("bad-request", "modify"), errors.sipToXMPP(400))
        self.assertEqual(("remote-server-timeout", "wait"), errors.sipToXMPP(408))
        self.assertEqual(("recipient-unavailable", "wait"), errors.sipToXMPP(486))
        self.assertEqual(("internal-server-error", "cancel"), errors.sipToXMPP(500))
        self.assertEqual(("internal-server-error", "wait"), errors.sipToXMPP(503))
        self.assertEqual(("recipient-unavailable", "cancel"), errors.sipToXMPP(603))

    def test_defaults(self):
        """
        Codes the table does not list get the default of their class: 3xx
        redirect, 4xx bad-request, 5xx internal-server-error, 6xx
        recipient-unavailable.
        """
        self.assertEqual(("redirect", "modify"), errors.sipToXMPP(399))
        self.assertEqual(("bad-request", "modify"), errors.sipToXMPP(422))
        self.assertEqual(("bad-request", "modify"), errors.sipToXMPP(499))
        self.assertEqual(("internal-server-error", "cancel"), errors.sipToXMPP(580))
        self.assertEqual(("recipient-unavailable", "wait"), errors.sipToXMPP(699))

    def test_notAFailure(self):
        """
        1xx, 2xx and out-of-range codes have no mapping.
        """
        for code in (100, 180, 200, 202, 299, 700, 0):
            self.assertRaises(ValueError, errors.sipToXMPP, code)

    def test_timeout(self):
        """
        A Timer F timeout is treated as 408: remote-server-timeout (wait).
        """
        self.assertEqual(
            ("remote-server-timeout", "wait"), errors.xmppErrorForTimeout()
        )
        self.assertEqual(errors.sipToXMPP(408), errors.xmppErrorForTimeout())

    def test_transportFailure(self):
        """
        A transport failure is treated as 503: internal-server-error (wait).
        """
        self.assertEqual(
            ("internal-server-error", "wait"), errors.xmppErrorForTransportFailure()
        )
        self.assertEqual(errors.sipToXMPP(503), errors.xmppErrorForTransportFailure())


class XMPPToSIPTests(unittest.TestCase):
    """
    Tests for L{errors.xmppToSIP}.
    """

    def test_table(self):
        """
        Every condition of RFC 7247 Table 2 maps to its code, for full and
        for bare JIDs.
        """
        for condition, full, bare in XMPP_TO_SIP_TABLE:
            self.assertEqual(full, errors.xmppToSIP(condition, True), condition)
            self.assertEqual(bare, errors.xmppToSIP(condition, False), condition)

    def test_allConditionsCovered(self):
        """
        The test table covers every defined condition but C{gone}, which has
        its own test.
        """
        self.assertEqual(
            set(errors.CONDITIONS) - {"gone"},
            {row[0] for row in XMPP_TO_SIP_TABLE},
        )

    def test_gone(self):
        """
        C{gone} is 301 when it carries a new address and 410 when not.
        """
        self.assertEqual(301, errors.xmppToSIP("gone", True, hasAddress=True))
        self.assertEqual(410, errors.xmppToSIP("gone", True))
        self.assertEqual(410, errors.xmppToSIP("gone", False, hasAddress=False))

    def test_serviceUnavailableNever503(self):
        """
        C{service-unavailable} is never 503 (RFC 7247 section 7.1 note 5).
        """
        self.assertNotEqual(503, errors.xmppToSIP("service-unavailable", True))
        self.assertNotEqual(503, errors.xmppToSIP("service-unavailable", False))

    def test_unknown(self):
        """
        A condition RFC 6120 does not define is 400, like
        undefined-condition.
        """
        self.assertEqual(400, errors.xmppToSIP("payment-required", True))
        self.assertEqual(400, errors.xmppToSIP("no-such-thing", False))


class ConditionTypeTests(unittest.TestCase):
    """
    Tests for L{errors.conditionType}.
    """

    def test_known(self):
        """
        Defined conditions get their RFC 6120 section 8.3.3 type.
        """
        self.assertEqual("modify", errors.conditionType("bad-request"))
        self.assertEqual("auth", errors.conditionType("forbidden"))
        self.assertEqual("wait", errors.conditionType("recipient-unavailable"))
        self.assertEqual("cancel", errors.conditionType("service-unavailable"))

    def test_unknown(self):
        """
        An unknown condition gets C{cancel}.
        """
        self.assertEqual("cancel", errors.conditionType("frobnicated"))


class ReasonPhraseTests(unittest.TestCase):
    """
    Tests for L{errors.reasonPhrase} (re-exported from the SIP layer).
    """

    def test_standard(self):
        """
        A standard code gets its RFC 3261 reason phrase.
        """
        self.assertEqual("Not Found", errors.reasonPhrase(404))


def _message(**attributes):
    message = domish.Element((None, "message"))
    for name, value in attributes.items():
        message[name] = value
    message.addElement("body", content="hi")
    return message


class BuildStanzaErrorTests(unittest.TestCase):
    """
    Tests for L{errors.buildStanzaError}.
    """

    def test_addressing(self):
        """
        The reply swaps C{from} and C{to}, mirrors the C{id}, and has
        C{type='error'} and the same element name.
        """
        stanza = _message(to="bob@gw.example", id="m1")
        stanza["from"] = "alice@xmpp.example/phone"
        reply = errors.buildStanzaError(stanza, "item-not-found", "cancel")
        self.assertEqual("message", reply.name)
        self.assertEqual("error", reply["type"])
        self.assertEqual("m1", reply["id"])
        self.assertEqual("alice@xmpp.example/phone", reply["to"])
        self.assertEqual("bob@gw.example", reply["from"])

    def test_noID(self):
        """
        Without an C{id} on the original the reply has none either.
        """
        stanza = _message(to="bob@gw.example")
        stanza["from"] = "alice@xmpp.example"
        reply = errors.buildStanzaError(stanza, "bad-request")
        self.assertFalse(reply.hasAttribute("id"))

    def test_errorElement(self):
        """
        The reply holds one C{<error/>} with the type, the condition in the
        stanzas namespace and the text, and does not copy the body.
        """
        stanza = _message(to="bob@gw.example", id="m1")
        stanza["from"] = "alice@xmpp.example"
        reply = errors.buildStanzaError(
            stanza, "recipient-unavailable", "wait", "Busy Here"
        )
        children = list(reply.elements())
        self.assertEqual(["error"], [c.name for c in children])
        error = children[0]
        self.assertEqual("wait", error["type"])
        parts = [(c.uri, c.name) for c in error.elements()]
        self.assertEqual(
            [(NS_STANZAS, "recipient-unavailable"), (NS_STANZAS, "text")], parts
        )
        self.assertEqual("Busy Here", str(list(error.elements())[1]))

    def test_defaultType(self):
        """
        Without an error type the condition's recommended type is used.
        """
        stanza = _message(to="bob@gw.example")
        stanza["from"] = "alice@xmpp.example"
        reply = errors.buildStanzaError(stanza, "forbidden", None, "no")
        self.assertEqual("auth", reply.error["type"])

    def test_serialization(self):
        """
        The serialised reply has no stray namespace on the stanza, even when
        the original was parsed from a component stream, and escapes XML
        specials in the text.
        """
        stanza = parseStanza(
            "<message from='alice@xmpp.example' to='bob@gw.example' id='x'>"
            "<body>hi</body></message>"
        )
        self.assertEqual("jabber:component:accept", stanza.uri)
        reply = errors.buildStanzaError(
            stanza, "item-not-found", "cancel", "No <such> user & co"
        )
        self.assertEqual(
            "<message to='alice@xmpp.example' from='bob@gw.example' id='x' "
            "type='error'><error type='cancel'>"
            "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>"
            "No &lt;such&gt; user &amp; co</text></error></message>",
            reply.toXml(),
        )

    def test_address(self):
        """
        C{gone} carries the new address as character data.
        """
        stanza = _message(to="bob@gw.example")
        stanza["from"] = "alice@xmpp.example"
        reply = errors.buildStanzaError(
            stanza, "gone", address="xmpp:bob@new.example"
        )
        self.assertEqual("xmpp:bob@new.example", errors.stanzaErrorAddress(reply))

    def test_lang(self):
        """
        The text may carry an C{xml:lang}.
        """
        stanza = _message(to="bob@gw.example")
        stanza["from"] = "alice@xmpp.example"
        reply = errors.buildStanzaError(stanza, "bad-request", text="x", lang="en")
        text = [c for c in reply.error.elements() if c.name == "text"][0]
        self.assertEqual("en", text[(NS_XML, "lang")])

    def test_otherStanzaKinds(self):
        """
        The reply has the element name of the original (presence, iq).
        """
        for name in ("presence", "iq"):
            stanza = domish.Element((None, name))
            stanza["from"] = "alice@xmpp.example"
            stanza["to"] = "bob@gw.example"
            reply = errors.buildStanzaError(stanza, "service-unavailable")
            self.assertEqual(name, reply.name)

    def test_refusesErrors(self):
        """
        An error stanza is never answered with an error.
        """
        stanza = _message(to="bob@gw.example", type="error")
        self.assertRaises(
            ValueError, errors.buildStanzaError, stanza, "bad-request"
        )

    def test_badArguments(self):
        """
        Unknown conditions and error types are refused.
        """
        stanza = _message(to="bob@gw.example")
        self.assertRaises(ValueError, errors.buildStanzaError, stanza, "nope")
        self.assertRaises(
            ValueError, errors.buildStanzaError, stanza, "bad-request", "later"
        )


class ParseStanzaErrorTests(unittest.TestCase):
    """
    Tests for L{errors.parseStanzaError} and L{errors.stanzaErrorAddress}.
    """

    def test_parse(self):
        """
        Condition, type and text are read from a parsed error stanza.
        """
        stanza = parseStanza(
            "<message type='error' from='bob@x' to='alice@gw' id='1'>"
            "<body>hi</body><error type='cancel'>"
            "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>gone &amp; lost"
            "</text></error></message>"
        )
        self.assertEqual(
            ("item-not-found", "cancel", "gone & lost"),
            errors.parseStanzaError(stanza),
        )

    def test_unknownCondition(self):
        """
        An unknown condition is undefined-condition (application conditions
        are skipped).
        """
        stanza = parseStanza(
            "<message type='error'><error type='modify'>"
            "<frobbed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "<x xmlns='urn:example:app'/></error></message>"
        )
        self.assertEqual(
            ("undefined-condition", "modify", None),
            errors.parseStanzaError(stanza),
        )

    def test_applicationCondition(self):
        """
        An application-specific element next to the defined condition does
        not hide it.
        """
        stanza = parseStanza(
            "<message type='error'><error type='modify'>"
            "<x xmlns='urn:example:app'/>"
            "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "</error></message>"
        )
        self.assertEqual("not-acceptable", errors.parseStanzaError(stanza)[0])

    def test_missingError(self):
        """
        An error stanza without C{<error/>} is undefined-condition with the
        default type.
        """
        stanza = parseStanza("<message type='error'/>")
        self.assertEqual(
            ("undefined-condition", "cancel", None), errors.parseStanzaError(stanza)
        )

    def test_missingType(self):
        """
        A missing or bogus error type is replaced by the recommended type.
        """
        stanza = parseStanza(
            "<message type='error'><error type='bogus'>"
            "<forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "</error></message>"
        )
        self.assertEqual(("forbidden", "auth", None), errors.parseStanzaError(stanza))

    def test_roundTrip(self):
        """
        What L{errors.buildStanzaError} builds, L{errors.parseStanzaError}
        reads back, after serialisation and parsing.
        """
        stanza = _message(to="bob@gw.example", id="7")
        stanza["from"] = "alice@xmpp.example"
        for condition in errors.CONDITIONS:
            reply = errors.buildStanzaError(stanza, condition, "wait", "why \U0001F600")
            parsed = parseStanza(reply.toXml())
            self.assertEqual(
                (condition, "wait", "why \U0001F600"),
                errors.parseStanzaError(parsed),
            )

    def test_noAddress(self):
        """
        Errors other than gone/redirect, or without character data, carry
        no address.
        """
        stanza = parseStanza(
            "<message type='error'><error type='cancel'>"
            "<gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'> </gone>"
            "</error></message>"
        )
        self.assertIsNone(errors.stanzaErrorAddress(stanza))
        stanza = parseStanza("<message type='error'/>")
        self.assertIsNone(errors.stanzaErrorAddress(stanza))

    def test_redirectAddress(self):
        """
        The new address of a parsed redirect is returned.
        """
        stanza = parseStanza(
            "<message type='error'><error type='modify'>"
            "<redirect xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>"
            "xmpp:bob@elsewhere.example</redirect></error></message>"
        )
        self.assertEqual(
            "xmpp:bob@elsewhere.example", errors.stanzaErrorAddress(stanza)
        )
