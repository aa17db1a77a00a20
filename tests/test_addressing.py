"""
Tests for L{xmppgw.addressing}.

The table tests follow interworking.md section 2.8 row by row; the rows are
named C{test_rowNN...}.
"""

import unicodedata

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest
from twisted.words.protocols.jabber.jid import JID
from twisted.words.protocols.jabber.xmpp_stringprep import nodeprep

from xmppgw.addressing import (
    MAX_PART_OCTETS,
    AddressError,
    AddressMapper,
    escapeLocalpart,
    percentDecode,
    percentEncodeParam,
    percentEncodeUser,
    unescapeLocalpart,
)
from xmppgw.sip.uri import parseURI

# Property tests: bounded, no example database written into the tree, no
# wall-clock deadline.
# Some properties only hold for inputs that map at all; those are filtered
# with assume(), which may reject many of the first examples Hypothesis
# tries.
propertySettings = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)

# Text for user parts: random ASCII mixed with the characters that matter
# (escapes, hex digits, case, non-ASCII, combining marks, compatibility
# characters, characters nodeprep removes, right-to-left letters).
specialCharacters = list(" \"&'/:<>@\\%#*20357acfABCF") + [
    "\u00fc", "\u00df", "\u0130", "\u03a3", "\u4e2d", "\u0338", "\u0301",
    "\u00ad", "\uff20", "\ufb00", "\u0627",
]
userAlphabet = st.one_of(
    st.sampled_from(specialCharacters),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(min_codepoint=0xA0, max_codepoint=0x52F),
)
# Text for JID localparts: the same without the characters a localpart
# cannot hold.
localpartAlphabet = st.one_of(
    st.sampled_from([c for c in specialCharacters if c not in " \"&'/:<>@"]),
    st.characters(
        min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="\"&'/:<>@"
    ),
    st.characters(
        min_codepoint=0xA1, max_codepoint=0x1FF, blacklist_categories=("Cf", "Sk")
    ),
)

GW = "gw.example"
XMPPGW = "xmpp-gw.example"


def directMapper():
    """
    A mapper in the RFC 7247 direct model: one gwmap entry with equal sides;
    every other domain passes through unchanged.
    """
    return AddressMapper(gwmap={"sip.example": "sip.example"})


def separatorMapper(separator="*"):
    """
    A mapper in the Kamailio separator scheme (rows 20 and 21).
    """
    return AddressMapper(
        separator=separator, gatewayDomain=GW, xmppDomain=XMPPGW, gwmap={}
    )


class EscapeLocalpartTests(unittest.TestCase):
    """
    XEP-0106 escaping and unescaping of JID localparts.
    """

    # (unescaped, escaped): the examples of XEP-0106 section 5.1 (localparts).
    examples = [
        ("space cadet", "space\\20cadet"),
        ('call me "ishmael"', "call\\20me\\20\\22ishmael\\22"),
        ("at&t guy", "at\\26t\\20guy"),
        ("d'artagnan", "d\\27artagnan"),
        ("/.fanboy", "\\2f.fanboy"),
        ("::foo::", "\\3a\\3afoo\\3a\\3a"),
        ("<foo>", "\\3cfoo\\3e"),
        ("user@host", "user\\40host"),
        ("c:\\net", "c\\3a\\net"),
        ("c:\\\\net", "c\\3a\\\\net"),
        ("c:\\cool stuff", "c\\3a\\cool\\20stuff"),
        ("c:\\5commas", "c\\3a\\5c5commas"),
    ]

    def test_xep0106Examples(self):
        """
        Each XEP-0106 example escapes to the form the XEP gives.
        """
        for unescaped, escaped in self.examples:
            self.assertEqual(escaped, escapeLocalpart(unescaped), unescaped)

    def test_xep0106ExamplesUnescape(self):
        """
        Each XEP-0106 example unescapes back to the original.
        """
        for unescaped, escaped in self.examples:
            self.assertEqual(unescaped, unescapeLocalpart(escaped), escaped)

    def test_everyDisallowedCharacter(self):
        """
        All ten characters of the XEP-0106 table are escaped with lower-case
        hex (the backslash only where it starts an escape sequence).
        """
        self.assertEqual(
            "\\20\\22\\26\\27\\2f\\3a\\3c\\3e\\40",
            escapeLocalpart(" \"&'/:<>@"),
        )
        self.assertEqual("\\5c5c", escapeLocalpart("\\5c"))

    def test_partialEscapesLeftAlone(self):
        """
        Partial and unknown escape sequences are left alone in both
        directions (XEP-0106: C{foo\\bar}, C{foob\\41r}).
        """
        for text in ["foo\\bar", "foob\\41r", "a\\", "\\", "\\2", "\\g0"]:
            self.assertEqual(text, escapeLocalpart(text))
            self.assertEqual(text, unescapeLocalpart(text))

    def test_unescapeCaseSignificant(self):
        """
        Escape sequences are lower-case only: C{\\2F} is not C{/}.
        """
        self.assertEqual("a\\2Fb", unescapeLocalpart("a\\2Fb"))
        self.assertEqual("a/b", unescapeLocalpart("a\\2fb"))

    def test_unescapeSinglePass(self):
        """
        Unescaping is one left-to-right pass: C{\\5c27} is a backslash
        followed by C{27}, not an apostrophe.
        """
        self.assertEqual("\\27", unescapeLocalpart("\\5c27"))
        self.assertEqual("\\5c", unescapeLocalpart("\\5c5c"))

    def test_plainTextUnchanged(self):
        """
        Text without disallowed characters passes unchanged.
        """
        self.assertEqual("juliet#1*97", escapeLocalpart("juliet#1*97"))
        self.assertEqual("juliet#1*97", unescapeLocalpart("juliet#1*97"))

    @propertySettings
    @given(st.text(max_size=40))
    def test_roundTrip(self, text):
        """
        Unescaping undoes escaping for any text.
        """
        self.assertEqual(text, unescapeLocalpart(escapeLocalpart(text)))

    @propertySettings
    @given(st.text(alphabet=" \"&'/:<>@\\25cf0a", max_size=30))
    def test_roundTripEscapeHeavy(self, text):
        """
        Unescaping undoes escaping for text made of the escape alphabet, and
        the escaped form has no disallowed character left.
        """
        escaped = escapeLocalpart(text)
        self.assertEqual(text, unescapeLocalpart(escaped))
        for char in " \"&'/:<>@":
            self.assertNotIn(char, escaped)


class PercentTests(unittest.TestCase):
    """
    Percent-decoding and -encoding helpers.
    """

    def test_decode(self):
        """
        Escapes are decoded as UTF-8, hex in either case.
        """
        self.assertEqual("fü", percentDecode("f%C3%BC"))
        self.assertEqual("fü", percentDecode("f%c3%bc"))
        self.assertEqual("a b#", percentDecode("a%20b%23"))
        self.assertEqual("plain", percentDecode("plain"))

    def test_decodeInvalidEscape(self):
        """
        A C{%} not followed by two hex digits is refused, naming the offset.
        """
        for text in ["100%", "a%2", "a%zz", "%%41", "%G0"]:
            e = self.assertRaises(AddressError, percentDecode, text)
            self.assertIn("invalid percent-escape", str(e))

    def test_decodeNotUTF8(self):
        """
        Decoded octets that are not UTF-8 are refused.
        """
        for text in ["%C3", "%FF", "a%C3%28", "%ED%A0%80"]:
            e = self.assertRaises(AddressError, percentDecode, text)
            self.assertIn("not UTF-8", str(e))

    def test_encodeUser(self):
        """
        Characters outside the RFC 3261 user production are encoded with
        upper-case hex; the allowed marks and user-unreserved stay.
        """
        self.assertEqual(
            "%23%25%5B%5C%5D%5E%60%7B%7C%7D%20%22%3C%3E%40%3A",
            percentEncodeUser("#%[\\]^`{|} \"<>@:"),
        )
        allowed = "aZ09-_.!~*'()&=+$,;?/"
        self.assertEqual(allowed, percentEncodeUser(allowed))
        self.assertEqual("tsch%C3%BCss", percentEncodeUser("tschüss"))

    def test_encodeParam(self):
        """
        Characters outside RFC 3261 paramchar are encoded; C{[ ] / : & + $}
        and the marks stay.
        """
        self.assertEqual("my%20phone", percentEncodeParam("my phone"))
        self.assertEqual("%3B%3D%3F%40%2C%23", percentEncodeParam(";=?@,#"))
        allowed = "aZ09-_.!~*'()[]/:&+$"
        self.assertEqual(allowed, percentEncodeParam(allowed))
        self.assertEqual("%C3%A9", percentEncodeParam("é"))

    def test_encodeSurrogate(self):
        """
        Text that cannot be UTF-8 (a lone surrogate) is an L{AddressError}.
        """
        self.assertRaises(AddressError, percentEncodeUser, "a\ud800")
        self.assertRaises(AddressError, percentEncodeParam, "a\ud800")

    @propertySettings
    @given(st.text(max_size=40))
    def test_roundTrip(self, text):
        """
        Decoding undoes user encoding, and the encoded form matches the SIP
        user production.
        """
        assume(not any("\ud800" <= c <= "\udfff" for c in text))
        encoded = percentEncodeUser(text)
        self.assertEqual(text, percentDecode(encoded))
        if text:
            uri = parseURI("sip:%s@x.example" % (encoded,))
            self.assertEqual(encoded, uri.user)


class SIPToJIDTableTests(unittest.TestCase):
    """
    interworking.md 2.8, rows 1-11: SIP URI -> JID (direct model).
    """

    def setUp(self):
        self.mapper = directMapper()

    def assertMaps(self, uri, jid):
        """
        C{uri} maps to C{jid} both as target and as sender.
        """
        self.assertEqual(jid, self.mapper.sipTargetToJID(uri))
        self.assertEqual(jid, self.mapper.sipSenderToJID(uri))

    def test_row01Plain(self):
        """
        C{sip:romeo@example.net} is C{romeo@example.net}.
        """
        self.assertMaps("sip:romeo@example.net", "romeo@example.net")

    def test_row02PercentUTF8(self):
        """
        Percent-encoded UTF-8 is decoded: C{f%C3%BC} is C{fü}.
        """
        self.assertMaps("sip:f%C3%BC@sip.example", "f\u00fc@sip.example")

    def test_row03Apostrophe(self):
        """
        An apostrophe is escaped as C{\\27}.
        """
        self.assertMaps("sip:o'malley@sip.example", "o\\27malley@sip.example")

    def test_row04GRUU(self):
        """
        A public GRUU C{;gr=bar} is the resource C{bar}.
        """
        self.assertMaps("sip:foo@sip.example;gr=bar", "foo@sip.example/bar")

    def test_row05AmpersandSlash(self):
        """
        C{&} and C{/} are escaped as C{\\26} and C{\\2f}.
        """
        self.assertMaps("sip:m&m@x.example", "m\\26m@x.example")
        self.assertMaps("sip:a/b@x.example", "a\\2fb@x.example")

    def test_row06Hash(self):
        """
        A percent-encoded C{#}, legal in a localpart, is decoded and kept.
        """
        self.assertMaps("sip:%23hash@x.example", "#hash@x.example")

    def test_row07At(self):
        """
        A decoded C{@} is escaped as C{\\40} (XEP-0106 step 4).
        """
        self.assertMaps("sip:j%40s0n@x.example", "j\\40s0n@x.example")

    def test_row08Space(self):
        """
        An inner space is C{\\20}; a leading or trailing one is refused.
        """
        self.assertMaps("sip:a%20b@x.example", "a\\20b@x.example")
        for uri in ["sip:%20ab@x.example", "sip:ab%20@x.example"]:
            e = self.assertRaises(AddressError, self.mapper.sipTargetToJID, uri)
            self.assertIn("\\20", str(e))

    def test_row09LiteralEscapeSequence(self):
        """
        A literal C{\\27} in the user gets its backslash escaped (XEP-0106
        step 3).
        """
        self.assertMaps("sip:c%5C27x@x.example", "c\\5c27x@x.example")

    def test_row10DroppedParts(self):
        """
        Password, port, parameters other than C{gr}, and headers are dropped;
        the host is lower-cased.
        """
        self.assertMaps(
            "sip:bob:pw@X.Example;transport=tcp;user=phone?Subject=hi",
            "bob@x.example",
        )
        self.assertMaps(
            "sip:bob@x.example:5070;lr;maddr=10.0.0.1;gr=r1?a=b",
            "bob@x.example/r1",
        )

    def test_row11CaseFolded(self):
        """
        The localpart and domain are case-folded.
        """
        self.assertMaps("sip:Alice@Example.COM", "alice@example.com")


class JIDToSIPTableTests(unittest.TestCase):
    """
    interworking.md 2.8, rows 12-19: JID -> SIP URI (direct model).
    """

    def setUp(self):
        self.mapper = directMapper()

    def assertMaps(self, jid, uri):
        """
        C{jid} maps to C{uri} both as target and as sender.
        """
        self.assertEqual(uri, self.mapper.jidTargetToSIP(jid))
        self.assertEqual(uri, self.mapper.jidSenderToSIP(jid))

    def test_row12Ampersand(self):
        """
        C{\\26} is unescaped to a literal C{&}, legal in a SIP user.
        """
        self.assertMaps("m\\26m@xmpp.example", "sip:m&m@xmpp.example")

    def test_row13NonASCII(self):
        """
        Non-ASCII is percent-encoded UTF-8 with upper-case hex.
        """
        self.assertMaps("tsch\u00fcss@xmpp.example", "sip:tsch%C3%BCss@xmpp.example")

    def test_row14Resource(self):
        """
        A resource becomes the C{gr} URI parameter.
        """
        self.assertMaps("baz@xmpp.example/qux", "sip:baz@xmpp.example;gr=qux")

    def test_row15Encoded(self):
        """
        C{#} and C{%}, legal in XMPP but not in a SIP user, are encoded.
        """
        self.assertMaps("a#b@x.example", "sip:a%23b@x.example")
        self.assertMaps("100%@x.example", "sip:100%25@x.example")

    def test_row16Apostrophe(self):
        """
        C{\\27} is unescaped to a literal apostrophe.
        """
        self.assertMaps("d\\27artagnan@x.example", "sip:d'artagnan@x.example")

    def test_row17FullUnescape(self):
        """
        C{\\40} is unescaped (full XEP-0106) and the C{@} percent-encoded.
        """
        self.assertMaps("user\\40host@x.example", "sip:user%40host@x.example")

    def test_row18ResourceParamchar(self):
        """
        Characters outside paramchar in a resource are percent-encoded.
        """
        self.assertMaps(
            "juliet@example.com/my phone", "sip:juliet@example.com;gr=my%20phone"
        )
        self.assertMaps(
            "juliet@example.com/a;b=c?d@e,f",
            "sip:juliet@example.com;gr=a%3Bb%3Dc%3Fd%40e%2Cf",
        )

    def test_row19IDN(self):
        """
        An IDN domain becomes its A-label form.
        """
        self.assertMaps(
            "juliet@m\u00fcnchen.example", "sip:juliet@xn--mnchen-3ya.example"
        )


class SeparatorSchemeTests(unittest.TestCase):
    """
    interworking.md 2.8 rows 20-21 and 2.7: the Kamailio separator scheme,
    made safe.
    """

    def setUp(self):
        self.mapper = separatorMapper()

    def test_row20Target(self):
        """
        C{sip:user*jabber.org@gateway} is C{user@jabber.org}.
        """
        self.assertEqual(
            "user@jabber.org",
            self.mapper.sipTargetToJID("sip:user*jabber.org@gw.example"),
        )

    def test_row21Sender(self):
        """
        The SIP sender C{sip:alice@sip.example} is
        C{alice*sip.example@xmpp_domain}.
        """
        self.assertEqual(
            "alice*sip.example@xmpp-gw.example",
            self.mapper.sipSenderToJID("sip:alice@sip.example"),
        )

    def test_jidTarget(self):
        """
        The JID C{user*sip.domain@xmpp_domain} is C{sip:user@sip.domain}.
        """
        self.assertEqual(
            "sip:alice@sip.example",
            self.mapper.jidTargetToSIP("alice*sip.example@xmpp-gw.example"),
        )

    def test_jidSender(self):
        """
        The XMPP sender C{user@jabber.org/res} is
        C{sip:user*jabber.org@gateway;gr=res}.
        """
        self.assertEqual(
            "sip:user*jabber.org@gw.example;gr=res",
            self.mapper.jidSenderToSIP("user@jabber.org/res"),
        )

    def test_lastSeparator(self):
        """
        The split is at the last separator, so user names with the separator
        (feature codes like C{*97}) survive both ways.
        """
        self.assertEqual(
            "*97@jabber.org",
            self.mapper.sipTargetToJID("sip:*97*jabber.org@gw.example"),
        )
        self.assertEqual(
            "sip:*97*jabber.org@gw.example",
            self.mapper.jidSenderToSIP("*97@jabber.org"),
        )
        self.assertEqual(
            "*97*sip.example@xmpp-gw.example",
            self.mapper.sipSenderToJID("sip:*97@sip.example"),
        )
        self.assertEqual(
            "sip:*97@sip.example",
            self.mapper.jidTargetToSIP("*97*sip.example@xmpp-gw.example"),
        )

    def test_splitAfterDecoding(self):
        """
        The split is done on the percent-decoded SIP user, so an encoded
        separator splits too, and an escaped C{@} in the user part is a
        character of the user.
        """
        self.assertEqual(
            "user@jabber.org",
            self.mapper.sipTargetToJID("sip:user%2Ajabber.org@gw.example"),
        )
        self.assertEqual(
            "a\\40b@jabber.org",
            self.mapper.sipTargetToJID("sip:a%40b*jabber.org@gw.example"),
        )

    def test_escapingInUserPart(self):
        """
        The user part before the separator is mapped with the generic rules
        in all four directions.
        """
        self.assertEqual(
            "o\\27malley@jabber.org",
            self.mapper.sipTargetToJID("sip:O'Malley*jabber.org@gw.example"),
        )
        self.assertEqual(
            "o\\27malley*sip.example@xmpp-gw.example",
            self.mapper.sipSenderToJID("sip:o'malley@sip.example"),
        )
        self.assertEqual(
            "sip:o'malley@sip.example",
            self.mapper.jidTargetToSIP("o\\27malley*sip.example@xmpp-gw.example"),
        )
        self.assertEqual(
            "sip:a%23b*jabber.org@gw.example",
            self.mapper.jidSenderToSIP("a#b@jabber.org"),
        )

    def test_gruu(self):
        """
        A public GRUU becomes the resource and back.
        """
        self.assertEqual(
            "user@jabber.org/my phone",
            self.mapper.sipTargetToJID(
                "sip:user*jabber.org@gw.example;gr=my%20phone"
            ),
        )
        self.assertEqual(
            "alice*sip.example@xmpp-gw.example/r1",
            self.mapper.sipSenderToJID("sip:alice@sip.example;gr=r1"),
        )
        self.assertEqual(
            "sip:alice@sip.example;gr=r1",
            self.mapper.jidTargetToSIP("alice*sip.example@xmpp-gw.example/r1"),
        )

    def test_idnDomains(self):
        """
        A domain inside a user part or localpart is written as A-labels and
        read in either form; the JID domain is U-labels.
        """
        self.assertEqual(
            "user@m\u00fcnchen.example",
            self.mapper.sipTargetToJID(
                "sip:user*xn--mnchen-3ya.example@gw.example"
            ),
        )
        self.assertEqual(
            "user@m\u00fcnchen.example",
            self.mapper.sipTargetToJID("sip:user*m%C3%BCnchen.example@gw.example"),
        )
        self.assertEqual(
            "sip:user*xn--mnchen-3ya.example@gw.example",
            self.mapper.jidSenderToSIP("user@m\u00fcnchen.example"),
        )
        self.assertEqual(
            "sip:bob@xn--mnchen-3ya.example",
            self.mapper.jidTargetToSIP("bob*m\u00fcnchen.example@xmpp-gw.example"),
        )

    def test_ipv6Host(self):
        """
        An IPv6 sender host has its colons escaped inside the localpart and
        comes back unchanged.
        """
        jid = self.mapper.sipSenderToJID("sip:bob@[2001:DB8::1]")
        self.assertEqual("bob*[2001\\3adb8\\3a\\3a1]@xmpp-gw.example", jid)
        self.assertEqual("sip:bob@[2001:db8::1]", self.mapper.jidTargetToSIP(jid))

    def test_targetWrongHost(self):
        """
        A Request-URI whose host is not the gateway domain is refused.
        """
        e = self.assertRaises(
            AddressError,
            self.mapper.sipTargetToJID,
            "sip:user*jabber.org@other.example",
        )
        self.assertIn("not the gateway domain", str(e))

    def test_targetGatewayDomainNormalised(self):
        """
        The gateway domain compares case-insensitively and without a trailing
        dot.
        """
        self.assertEqual(
            "user@jabber.org",
            self.mapper.sipTargetToJID("sip:user*Jabber.ORG@GW.example."),
        )

    def test_noSeparator(self):
        """
        A target without the separator is refused in both directions.
        """
        e = self.assertRaises(
            AddressError, self.mapper.sipTargetToJID, "sip:user@gw.example"
        )
        self.assertIn("no domain separator", str(e))
        e = self.assertRaises(
            AddressError, self.mapper.jidTargetToSIP, "user@xmpp-gw.example"
        )
        self.assertIn("no domain separator", str(e))

    def test_emptySides(self):
        """
        Nothing before or after the separator is refused.
        """
        for uri in ["sip:*jabber.org@gw.example", "sip:user*@gw.example"]:
            self.assertRaises(AddressError, self.mapper.sipTargetToJID, uri)
        for jid in ["*sip.example@xmpp-gw.example", "user*@xmpp-gw.example"]:
            self.assertRaises(AddressError, self.mapper.jidTargetToSIP, jid)

    def test_badDomainAfterSeparator(self):
        """
        Text after the separator that is not a domain is refused.
        """
        for uri in [
            "sip:user*bad_domain@gw.example",
            "sip:user*a..b@gw.example",
            "sip:user*-a.example@gw.example",
            "sip:user*xn--zz.example@gw.example",
        ]:
            e = self.assertRaises(AddressError, self.mapper.sipTargetToJID, uri)
            self.assertIn("domain", str(e))
        self.assertRaises(
            AddressError,
            self.mapper.jidTargetToSIP,
            "user*a\\40b@xmpp-gw.example",
        )

    def test_jidTargetWrongDomain(self):
        """
        A JID not at the gateway's XMPP domain is refused.
        """
        e = self.assertRaises(
            AddressError, self.mapper.jidTargetToSIP, "a*sip.example@other.example"
        )
        self.assertIn("not the gateway's XMPP domain", str(e))

    def test_otherSeparator(self):
        """
        Another separator works the same way, also one that must be
        percent-encoded in a SIP user.
        """
        mapper = separatorMapper("#")
        self.assertEqual(
            "user@jabber.org",
            mapper.sipTargetToJID("sip:user%23jabber.org@gw.example"),
        )
        self.assertEqual(
            "sip:user%23jabber.org@gw.example",
            mapper.jidSenderToSIP("user@jabber.org"),
        )
        self.assertEqual(
            "a#b#sip.example@xmpp-gw.example",
            mapper.sipSenderToJID("sip:a%23b@sip.example"),
        )
        self.assertEqual(
            "sip:a%23b@sip.example",
            mapper.jidTargetToSIP("a#b#sip.example@xmpp-gw.example"),
        )

    def test_senderTooLong(self):
        """
        A sender whose user plus host exceed 1023 octets is refused.
        """
        e = self.assertRaises(
            AddressError,
            self.mapper.sipSenderToJID,
            "sip:%s@sip.example" % ("a" * 1015,),
        )
        self.assertIn("1023", str(e))
        self.assertEqual(
            "%s*sip.example@xmpp-gw.example" % ("a" * 1011,),
            self.mapper.sipSenderToJID("sip:%s@sip.example" % ("a" * 1011,)),
        )

    @propertySettings
    @given(
        st.text(alphabet=userAlphabet, min_size=1, max_size=30),
        st.sampled_from(["*", "#", "!", "~"]),
    )
    def test_senderRoundTrip(self, user, separator):
        """
        For any SIP user that maps, sender -> JID -> target comes back to the
        same SIP user, modulo case mapping.
        """
        assume(not any("\ud800" <= c <= "\udfff" for c in user))
        mapper = separatorMapper(separator)
        uri = "sip:%s@sip.example" % (percentEncodeUser(user),)
        try:
            jid = mapper.sipSenderToJID(uri)
        except AddressError:
            assume(False)
        back = mapper.jidTargetToSIP(jid)
        self.assertEqual(jid, mapper.sipSenderToJID(back))
        if user.isascii():
            expected = "sip:%s@sip.example" % (percentEncodeUser(user.lower()),)
            self.assertEqual(expected, back)

    @propertySettings
    @given(
        st.text(alphabet=userAlphabet, min_size=1, max_size=30),
        st.sampled_from(["*", "#", "="]),
    )
    def test_xmppSenderRoundTrip(self, user, separator):
        """
        For any JID localpart that maps, XMPP sender -> SIP -> target JID
        comes back to the same JID.
        """
        assume(not any("\ud800" <= c <= "\udfff" for c in user))
        mapper = separatorMapper(separator)
        try:
            jid = mapper.sipTargetToJID(
                "sip:%s%s@gw.example"
                % (percentEncodeUser(user), percentEncodeUser(separator + "jabber.org"))
            )
        except AddressError:
            assume(False)
        sip = mapper.jidSenderToSIP(jid)
        self.assertEqual(jid, mapper.sipTargetToJID(sip))


class GWMapSchemeTests(unittest.TestCase):
    """
    interworking.md 2.8 row 22: the Kamailio gwmap domain table.
    """

    def setUp(self):
        self.mapper = AddressMapper(
            separator="*",
            gatewayDomain=GW,
            xmppDomain=XMPPGW,
            gwmap={"sip.example": "xmpp.example", "Other.SIP": "other.xmpp"},
        )

    def test_row22(self):
        """
        C{sip:alice@sip.example} is C{alice@xmpp.example}, and back.
        """
        self.assertEqual(
            "alice@xmpp.example", self.mapper.sipSenderToJID("sip:alice@sip.example")
        )
        self.assertEqual(
            "alice@xmpp.example", self.mapper.sipTargetToJID("sip:alice@sip.example")
        )
        self.assertEqual(
            "sip:alice@sip.example", self.mapper.jidTargetToSIP("alice@xmpp.example")
        )
        self.assertEqual(
            "sip:alice@sip.example", self.mapper.jidSenderToSIP("alice@xmpp.example")
        )

    def test_keysCaseInsensitive(self):
        """
        Table keys and looked-up hosts compare case-insensitively.
        """
        self.assertEqual(
            "bob@other.xmpp", self.mapper.sipTargetToJID("sip:bob@OTHER.sip")
        )
        self.assertEqual("sip:bob@other.sip", self.mapper.jidSenderToSIP("bob@Other.XMPP"))

    def test_unmatchedPassThrough(self):
        """
        Domains not in the table pass unchanged, for targets and senders,
        with the generic local part rules.
        """
        self.assertEqual(
            "bob@abc.com", self.mapper.sipTargetToJID("sip:bob@abc.com")
        )
        self.assertEqual(
            "o\\27neil@abc.com", self.mapper.sipSenderToJID("sip:o'neil@abc.com")
        )
        self.assertEqual("sip:bob@xyz.com", self.mapper.jidTargetToSIP("bob@xyz.com"))
        self.assertEqual(
            "sip:bob@xyz.com;gr=pc", self.mapper.jidSenderToSIP("bob@xyz.com/pc")
        )

    def test_noSeparatorSplit(self):
        """
        With a gwmap the separator is not interpreted.
        """
        self.assertEqual(
            "a*b.example@xmpp.example",
            self.mapper.sipTargetToJID("sip:a*b.example@sip.example"),
        )
        self.assertEqual(
            "sip:a*b.example@sip.example",
            self.mapper.jidTargetToSIP("a*b.example@xmpp.example"),
        )

    def test_gruu(self):
        """
        GRUU and resource map both ways in the gwmap scheme.
        """
        self.assertEqual(
            "alice@xmpp.example/desk",
            self.mapper.sipSenderToJID("sip:alice@sip.example;gr=desk"),
        )
        self.assertEqual(
            "sip:alice@sip.example;gr=desk",
            self.mapper.jidTargetToSIP("alice@xmpp.example/desk"),
        )

    def test_idnEntries(self):
        """
        Table entries are normalised: SIP side to A-labels, XMPP side to
        U-labels.
        """
        mapper = AddressMapper(
            gwmap={"m\u00fcnchen.example": "xn--mnchen-3ya.xmpp"}
        )
        self.assertEqual(
            {"xn--mnchen-3ya.example": "m\u00fcnchen.xmpp"}, mapper.gwmap
        )
        self.assertEqual(
            "a@m\u00fcnchen.xmpp",
            mapper.sipTargetToJID("sip:a@xn--mnchen-3ya.example"),
        )
        self.assertEqual(
            "sip:a@xn--mnchen-3ya.example", mapper.jidTargetToSIP("a@m\u00fcnchen.xmpp")
        )

    def test_ambiguousReverse(self):
        """
        Two SIP domains mapped to one XMPP domain is a configuration error
        naming both.
        """
        e = self.assertRaises(
            ValueError,
            AddressMapper,
            gwmap={"a.example": "x.example", "b.example": "x.example"},
        )
        self.assertIn("a.example", str(e))
        self.assertIn("b.example", str(e))

    def test_conflictingKeys(self):
        """
        One SIP domain written twice (differing in case) with two targets is
        a configuration error; with the same target it is fine.
        """
        self.assertRaises(
            ValueError,
            AddressMapper,
            gwmap={"a.example": "x.example", "A.example": "y.example"},
        )
        mapper = AddressMapper(gwmap={"a.example": "x.example", "A.example": "x.example"})
        self.assertEqual({"a.example": "x.example"}, mapper.gwmap)

    def test_badEntry(self):
        """
        An entry that is not a domain is a configuration error.
        """
        e = self.assertRaises(ValueError, AddressMapper, gwmap={"a b": "x.example"})
        self.assertIn("gwmap", str(e))
        self.assertRaises(ValueError, AddressMapper, gwmap={"a.example": ""})


class DirectModelTests(unittest.TestCase):
    """
    The RFC 7247 direct model and the generic rules.
    """

    def setUp(self):
        self.mapper = directMapper()

    def test_rfc7247Examples(self):
        """
        The examples of RFC 7247 sections 6.4 and 6.5 on the RFC's own
        domains.
        """
        self.assertEqual(
            "f\u00fc@sip.example", self.mapper.sipTargetToJID("sip:f%C3%BC@sip.example")
        )
        self.assertEqual(
            "sip:m&m@sip.example", self.mapper.jidTargetToSIP("m\\26m@sip.example")
        )
        self.assertEqual(
            "sip:baz@sip.example;gr=qux",
            self.mapper.jidTargetToSIP("baz@sip.example/qux"),
        )

    def test_temporaryGRUU(self):
        """
        A value-less C{;gr} (temporary GRUU) is not mapped to a resource.
        """
        self.assertEqual(
            "asd887f9dfkk76690@example.com",
            self.mapper.sipSenderToJID("sip:asd887f9dfkk76690@example.com;gr"),
        )
        self.assertEqual(
            "a@example.com", self.mapper.sipTargetToJID("sip:a@example.com;gr=")
        )

    def test_gruuDecoded(self):
        """
        The C{gr} value is percent-decoded into the resource and encoded
        again on the way back.
        """
        jid = self.mapper.sipTargetToJID("sip:a@x.example;gr=caf%C3%A9%3Bx")
        self.assertEqual("a@x.example/caf\u00e9;x", jid)
        self.assertEqual(
            "sip:a@x.example;gr=caf%C3%A9%3Bx", self.mapper.jidTargetToSIP(jid)
        )

    def test_gruuInvalid(self):
        """
        A C{gr} value that is not valid UTF-8 or not a valid resource is
        refused.
        """
        self.assertRaises(
            AddressError, self.mapper.sipTargetToJID, "sip:a@x.example;gr=%FF"
        )
        self.assertRaises(
            AddressError, self.mapper.sipTargetToJID, "sip:a@x.example;gr=%07"
        )

    def test_invalidPercentEscape(self):
        """
        A URI with a malformed escape is refused with the parser's reason.
        """
        e = self.assertRaises(
            AddressError, self.mapper.sipTargetToJID, "sip:100%@x.example"
        )
        self.assertIn("invalid URI", str(e))

    def test_invalidUTF8(self):
        """
        A user whose escapes are not UTF-8 is refused.
        """
        e = self.assertRaises(
            AddressError, self.mapper.sipTargetToJID, "sip:a%C3%28@x.example"
        )
        self.assertIn("not UTF-8", str(e))

    def test_controlCharacter(self):
        """
        A decoded control character, prohibited in a localpart, is refused.
        """
        for uri in ["sip:a%00b@x.example", "sip:a%07@x.example", "sip:%7F@x.example"]:
            e = self.assertRaises(AddressError, self.mapper.sipTargetToJID, uri)
            self.assertIn("not a valid JID localpart", str(e))

    def test_emptyAfterMapping(self):
        """
        A user made only of characters that nodeprep removes is refused.
        """
        e = self.assertRaises(
            AddressError, self.mapper.sipTargetToJID, "sip:%C2%AD@x.example"
        )
        self.assertIn("empty", str(e))

    def test_compatibilityCharacters(self):
        """
        NFKC runs before escaping, so a full-width C{@} is escaped like C{@}
        and a ligature is folded.
        """
        self.assertEqual(
            "a\\40b@x.example", self.mapper.sipTargetToJID("sip:a%EF%BC%A0b@x.example")
        )
        self.assertEqual(
            "ff@x.example", self.mapper.sipTargetToJID("sip:%EF%AC%80@x.example")
        )

    def test_caseMappingBeforeEscaping(self):
        """
        Case is folded before escaping, so an upper-case pseudo-escape
        C{\\2F} cannot turn into the escape C{\\2f} (C{/}).
        """
        jid = self.mapper.sipTargetToJID("sip:a%5C2Fb@x.example")
        self.assertEqual("a\\5c2fb@x.example", jid)
        self.assertEqual("sip:a%5C2fb@x.example", self.mapper.jidTargetToSIP(jid))

    def test_caseNotInjective(self):
        """
        Two SIP users that differ only in case map to one JID, whose reverse
        is the lower-case user.
        """
        a = self.mapper.sipSenderToJID("sip:Alice@x.example")
        b = self.mapper.sipSenderToJID("sip:alice@x.example")
        self.assertEqual(a, b)
        self.assertEqual("sip:alice@x.example", self.mapper.jidTargetToSIP(a))

    def test_localpartLength(self):
        """
        A localpart of 1023 octets (counted after escaping) maps and one more
        octet is refused.
        """
        user = "a" * MAX_PART_OCTETS
        self.assertEqual(
            user + "@x.example", self.mapper.sipTargetToJID("sip:%s@x.example" % user)
        )
        e = self.assertRaises(
            AddressError,
            self.mapper.sipTargetToJID,
            "sip:%s@x.example" % (user + "a",),
        )
        self.assertIn("1023", str(e))
        self.assertEqual(
            "a" * 1020 + "\\27@x.example",
            self.mapper.sipTargetToJID("sip:%s'@x.example" % ("a" * 1020,)),
        )
        self.assertRaises(
            AddressError,
            self.mapper.sipTargetToJID,
            "sip:%s'@x.example" % ("a" * 1021,),
        )
        self.assertRaises(
            AddressError,
            self.mapper.sipTargetToJID,
            "sip:%s@x.example" % ("%C3%BC" * 512,),
        )
        self.assertRaises(
            AddressError,
            self.mapper.sipTargetToJID,
            "sip:%s@x.example" % ("a" * 10 * MAX_PART_OCTETS,),
        )

    def test_resourceLength(self):
        """
        A resource over 1023 octets is refused in both directions.
        """
        self.assertRaises(
            AddressError,
            self.mapper.sipTargetToJID,
            "sip:a@x.example;gr=%s" % ("r" * 1024,),
        )
        self.assertRaises(
            AddressError, self.mapper.jidTargetToSIP, "a@x.example/" + "r" * 1024
        )
        self.assertEqual(
            "sip:a@x.example;gr=" + "r" * 1023,
            self.mapper.jidTargetToSIP("a@x.example/" + "r" * 1023),
        )

    def test_domains(self):
        """
        Hosts become JID domains in U-label form without a trailing dot; IP
        literals are kept (IPv6 in canonical form).
        """
        self.assertEqual(
            "a@m\u00fcnchen.example",
            self.mapper.sipTargetToJID("sip:a@xn--mnchen-3ya.example"),
        )
        self.assertEqual("a@x.example", self.mapper.sipTargetToJID("sip:a@x.example."))
        self.assertEqual(
            "a@192.0.2.1", self.mapper.sipTargetToJID("sip:a@192.0.2.1:5060")
        )
        self.assertEqual(
            "a@[2001:db8::1]", self.mapper.sipTargetToJID("sip:a@[2001:DB8:0::1]")
        )
        self.assertEqual("sip:a@[::1]", self.mapper.jidTargetToSIP("a@[::1]"))
        self.assertEqual("sip:a@x.example", self.mapper.jidTargetToSIP("a@X.example."))

    def test_badDomains(self):
        """
        Hosts that are not valid domain names are refused.
        """
        for uri in ["sip:a@xn--zz.example", "sip:a@under_score.example"]:
            self.assertRaises(AddressError, self.mapper.sipTargetToJID, uri)
        for jid in ["a@a..b", "a@-x.example", "a@[1.2.3]", "a@x y", "a@" + "a" * 64]:
            self.assertRaises(AddressError, self.mapper.jidTargetToSIP, jid)

    def test_schemes(self):
        """
        im: and pres: URIs map like sip:; tel: and other schemes are
        refused; sips: is refused as a target but accepted as a sender.
        """
        self.assertEqual("a@x.example", self.mapper.sipTargetToJID("im:a@x.example"))
        self.assertEqual("a@x.example", self.mapper.sipSenderToJID("pres:a@x.example"))
        e = self.assertRaises(
            AddressError, self.mapper.sipTargetToJID, "tel:+15551234567"
        )
        self.assertIn("tel:", str(e))
        self.assertRaises(AddressError, self.mapper.sipSenderToJID, "tel:+15551234567")
        e = self.assertRaises(
            AddressError, self.mapper.sipTargetToJID, "http://x.example/"
        )
        self.assertIn("unsupported URI scheme", str(e))
        e = self.assertRaises(
            AddressError, self.mapper.sipTargetToJID, "sips:a@x.example"
        )
        self.assertIn("sips", str(e))
        self.assertEqual("a@x.example", self.mapper.sipSenderToJID("sips:a@x.example"))

    def test_noUser(self):
        """
        A URI without a user part, or an im: URI that is not user@host, is
        refused.
        """
        for uri in ["sip:x.example", "im:x.example"]:
            e = self.assertRaises(AddressError, self.mapper.sipTargetToJID, uri)
            self.assertIn("no user part", str(e))

    def test_unparseable(self):
        """
        Text that is not a URI is refused with the parser's reason.
        """
        for uri in ["", "alice", "sip:", "sip:a b@x", "sip:a@"]:
            e = self.assertRaises(AddressError, self.mapper.sipTargetToJID, uri)
            self.assertIn("invalid URI", str(e))

    def test_parsedURI(self):
        """
        An already parsed URI is accepted as well as text.
        """
        self.assertEqual(
            "a@x.example/r",
            self.mapper.sipTargetToJID(parseURI("sip:A@x.example;gr=r")),
        )

    def test_invalidJIDs(self):
        """
        Invalid JIDs are refused with a reason.
        """
        cases = {
            "@x.example": "empty localpart",
            "a@x.example/": "empty resourcepart",
            "a@": "no domainpart",
            "x.example": "no localpart",
            "x.example/r": "no localpart",
            'a"b@x.example': "invalid JID localpart",
            "a:b@x.example": "invalid JID localpart",
            "a\x00@x.example": "invalid JID localpart",
            "a@x.example/r\x07": "invalid resourcepart",
        }
        for jid, reason in cases.items():
            for method in (self.mapper.jidTargetToSIP, self.mapper.jidSenderToSIP):
                e = self.assertRaises(AddressError, method, jid)
                self.assertIn(reason, str(e))
        e = self.assertRaises(
            AddressError, self.mapper.jidTargetToSIP, "a" * 1024 + "@x.example"
        )
        self.assertIn("1023", str(e))

    def test_jidSplitSlashFirst(self):
        """
        A JID is split at C{/} first: in C{a.example/b@c} the C{@} is in the
        resource, so there is no localpart; an C{@} in a resource is kept.
        """
        self.assertRaises(AddressError, self.mapper.jidTargetToSIP, "a.example/b@c")
        self.assertEqual(
            "sip:a@x.example;gr=b%40c", self.mapper.jidTargetToSIP("a@x.example/b@c")
        )

    def test_jidCanonicalised(self):
        """
        Received JIDs are canonicalised (case-folded localpart and domain,
        IDNA domain) before mapping; a Twisted L{JID} is accepted.
        """
        self.assertEqual(
            "sip:alice@x.example;gr=Desk",
            self.mapper.jidTargetToSIP("Alice@X.Example/Desk"),
        )
        self.assertEqual(
            "sip:alice@xn--mnchen-3ya.example",
            self.mapper.jidTargetToSIP("alice@xn--mnchen-3ya.example"),
        )
        self.assertEqual(
            "sip:m&m@x.example;gr=r",
            self.mapper.jidSenderToSIP(JID("m\\26m@x.example/r")),
        )

    def test_allUserCharacters(self):
        """
        Every printable ASCII character survives SIP -> JID -> SIP (modulo
        case), whether it is escaped in XMPP or percent-encoded in SIP.
        """
        printable = "".join(chr(c) for c in range(0x21, 0x7F))
        uri = "sip:x%s@x.example" % (percentEncodeUser(printable),)
        jid = self.mapper.sipTargetToJID(uri)
        self.assertEqual(
            "x" + escapeLocalpart(printable.lower()) + "@x.example", jid
        )
        self.assertEqual(
            "sip:x%s@x.example" % (percentEncodeUser(printable.lower()),),
            self.mapper.jidTargetToSIP(jid),
        )

    @propertySettings
    @given(st.text(alphabet=userAlphabet, min_size=1, max_size=40))
    def test_jidRoundTrip(self, user):
        """
        For any text escaped into a localpart that the SIP side accepts,
        jidTarget -> SIP -> JID gives the same JID.
        """
        assume(not any("\ud800" <= c <= "\udfff" for c in user))
        try:
            jid = self.mapper.sipTargetToJID(
                "sip:%s@x.example" % (percentEncodeUser(user),)
            )
        except AddressError:
            assume(False)
        sip = self.mapper.jidTargetToSIP(jid)
        self.assertEqual(jid, self.mapper.sipTargetToJID(sip))
        self.assertEqual(sip, self.mapper.jidTargetToSIP(jid + "/r")[: -len(";gr=r")])

    @propertySettings
    @given(st.text(alphabet=localpartAlphabet, min_size=1, max_size=30))
    def test_localpartRoundTrip(self, local):
        """
        For any valid JID localpart in the escaped form XEP-0106 produces
        (and without a leading or trailing C{\\20}), JID -> SIP -> JID gives
        the same localpart modulo case mapping (nodeprep).
        """
        try:
            prepared = nodeprep.prepare(local)
        except UnicodeError:
            assume(False)
        assume(prepared)
        unescaped = unescapeLocalpart(prepared)
        assume(escapeLocalpart(unescaped) == prepared)
        assume(not (prepared.startswith("\\20") or prepared.endswith("\\20")))
        # See test_normalisationLimit.
        assume(unicodedata.normalize("NFKC", unescaped) == unescaped)
        sip = self.mapper.jidTargetToSIP(local + "@x.example")
        self.assertEqual(prepared + "@x.example", self.mapper.sipTargetToJID(sip))

    def test_normalisationLimit(self):
        """
        A known limit of the round trip: an escaped C{<}, C{=} or C{>}
        followed by a combining long solidus is normalised (NFKC) into one
        character on the way back, as RFC 7622 would do to the unescaped
        text.
        """
        sip = self.mapper.jidTargetToSIP("\\3c\u0338@x.example")
        self.assertEqual("sip:%3C%CC%B8@x.example", sip)
        self.assertEqual("\u226e@x.example", self.mapper.sipTargetToJID(sip))

    def test_leadingEscapedSpaceToSIP(self):
        """
        A JID whose localpart begins with C{\\20} (not produced by XEP-0106,
        but a valid JID) is still mapped to SIP; the way back refuses it.
        """
        sip = self.mapper.jidTargetToSIP("\\20a@x.example")
        self.assertEqual("sip:%20a@x.example", sip)
        self.assertRaises(AddressError, self.mapper.sipTargetToJID, sip)

    @propertySettings
    @given(st.text(min_size=1, max_size=20))
    def test_resourceRoundTrip(self, resource):
        """
        For any resource that maps, resource -> gr -> resource is the
        identity.
        """
        assume(not any("\ud800" <= c <= "\udfff" for c in resource))
        try:
            sip = self.mapper.jidTargetToSIP("a@x.example/" + resource)
        except AddressError:
            assume(False)
        jid = self.mapper.sipTargetToJID(sip)
        self.assertEqual(sip, self.mapper.jidTargetToSIP(jid))
        self.assertTrue(jid.startswith("a@x.example/"))
        parseURI(sip)


class SeparatorValidationTests(unittest.TestCase):
    """
    The separator is checked when the mapper is made, so configuration can
    report it.
    """

    def test_refused(self):
        """
        Unsafe separators are refused with a L{ValueError} naming them.
        """
        for separator in ["%", "@", "\\", ":", " ", "\t", "/", "&", "'", '"', "<",
                          ">", ".", "-", "[", "]", "a", "0", "\u00b7", "\x00"]:
            e = self.assertRaises(ValueError, separatorMapper, separator)
            self.assertIn(repr(separator), str(e))

    def test_length(self):
        """
        The separator is exactly one character.
        """
        for separator in ["", "**", None]:
            e = self.assertRaises(ValueError, separatorMapper, separator)
            self.assertIn("exactly one character", str(e))

    def test_accepted(self):
        """
        ASCII punctuation legal in a JID localpart is accepted.
        """
        for separator in "!#$()*+,;=?^_`{|}~":
            self.assertEqual(separator, separatorMapper(separator).separator)

    def test_badDomains(self):
        """
        Invalid gateway or XMPP domains are configuration errors naming the
        setting.
        """
        e = self.assertRaises(
            ValueError, AddressMapper, gatewayDomain="bad domain", gwmap={}
        )
        self.assertIn("gateway_domain", str(e))
        e = self.assertRaises(ValueError, AddressMapper, xmppDomain="", gwmap={})
        self.assertIn("xmpp_domain", str(e))

    def test_domainsNormalised(self):
        """
        The configured domains are normalised: the SIP one to A-labels, the
        XMPP one to U-labels, both lower-case without a trailing dot.
        """
        mapper = AddressMapper(
            gatewayDomain="M\u00fcnchen.Example.", xmppDomain="xn--mnchen-3ya.XMPP"
        )
        self.assertEqual("xn--mnchen-3ya.example", mapper.gatewayDomain)
        self.assertEqual("m\u00fcnchen.xmpp", mapper.xmppDomain)


class JIDHostTests(unittest.TestCase):
    """
    L{addressing.jidHost} gives C{JID(text).host}, with a fast path for
    plain ASCII JIDs.
    """

    def test_sameAsJID(self):
        """
        Plain and non-plain JIDs give the host L{JID} gives.
        """
        from xmppgw.addressing import jidHost

        for text in ["alice@xmpp.example", "alice@xmpp.example/phone",
                     "xmpp.example", "Alice@XMPP.Example/R", "fü@münchen.example",
                     "a*b.example@gw.example/x y"]:
            self.assertEqual(JID(text).host, jidHost(text), text)

    def test_invalidRaises(self):
        """
        A malformed JID raises as L{JID} does.
        """
        from twisted.words.protocols.jabber.jid import InvalidFormat

        from xmppgw.addressing import jidHost

        self.assertRaises(InvalidFormat, jidHost, "a@b@c")

    def setUp(self):
        from xmppgw import addressing

        addressing.jidHostAndBare.cache_clear()
        self.addCleanup(addressing.jidHostAndBare.cache_clear)

    def test_remembered(self):
        """
        A host is remembered by its JID text; an error is not remembered
        and raised each time.
        """
        from twisted.words.protocols.jabber.jid import InvalidFormat

        from xmppgw import addressing

        memo = addressing.jidHostAndBare
        for _ in range(2):
            self.assertRaises(InvalidFormat, addressing.jidHost, "a@b@c")
        self.assertEqual((2, 0), memo.cache_info()[::2])
        self.assertEqual("xmpp.example",
                         addressing.jidHost("alice@xmpp.example/phone"))
        self.assertEqual(("xmpp.example", "alice@xmpp.example"),
                         memo("alice@xmpp.example/phone"))
        self.assertEqual((3, 1), memo.cache_info()[::2])
        # Remembered: the parsers are not consulted again.
        self.patch(addressing, "_PLAIN_LOCALPART", None)
        self.patch(addressing, "JID", None)
        self.assertEqual("xmpp.example",
                         addressing.jidHost("alice@xmpp.example/phone"))
        self.assertEqual((3, 1), memo.cache_info()[::2])

    def test_bounded(self):
        """
        At most twice L{addressing.JID_MEMO_SIZE} JIDs are remembered (the
        memo's two generations), the last L{addressing.JID_MEMO_SIZE} always.
        """
        from xmppgw import addressing

        limit = addressing.JID_MEMO_SIZE
        memo = addressing.jidHostAndBare
        for i in range(3 * limit):
            self.assertEqual("h%d.example" % (i,),
                             addressing.jidHost("u@h%d.example" % (i,)))
            self.assertLessEqual(memo.cache_info().currsize, 2 * limit)
        misses = memo.cache_info().misses
        self.assertEqual(3 * limit, misses)
        for i in range(2 * limit, 3 * limit):
            addressing.jidHost("u@h%d.example" % (i,))
        self.assertEqual(misses, memo.cache_info().misses)

    def test_notPlain(self):
        """
        JIDs that stringprep could change, or that L{JID} splits otherwise
        than at the first C{@} and C{/}, are read by L{JID}: their parts are
        L{JID}'s.
        """
        from xmppgw import addressing

        for text, expected in [
            ("Alice@xmpp.example", ("xmpp.example", "alice@xmpp.example")),
            ("alice@XMPP.example/R", ("xmpp.example", "alice@xmpp.example")),
            ("x.example/r@s/t", ("x.example", "x.example")),
            ("a b@x.example", None),
            ("a@x.example/", ("x.example", "a@x.example")),
            ("@x.example", ("x.example", "x.example")),
            ("a@-x.example", None),
            ("a@x.example/r\u00e9", ("x.example", "a@x.example")),
        ]:
            try:
                jid = JID(text)
                fromJID = (jid.host, jid.userhost())
            except Exception:
                fromJID = None
            self.assertEqual(expected, fromJID, text)
            if expected is None:
                self.assertRaises(Exception, addressing.jidHostAndBare, text)
            else:
                self.assertEqual(expected, addressing.jidHostAndBare(text))

    @given(st.lists(st.one_of(
        st.text(alphabet="aZ.-@/ \u00fc\u0130*\x00", max_size=12),
        st.sampled_from(["alice@xmpp.example/phone", "xmpp.example",
                         "a@b@c", "@x", "x/", "[::1]", "a@[::1]/r",
                         "x.example/r@s/t", "a@x.example/r@s", "A@X.example",
                         "a@b.example/"])),
        max_size=8))
    @propertySettings
    def test_sameAsJIDRemembered(self, texts):
        """
        First call or remembered, L{addressing.jidHostAndBare} gives
        C{JID(text).host} and C{JID(text).userhost()}, and
        L{addressing.jidHost} the host, or they raise the error L{JID}
        raises.
        """
        from xmppgw import addressing

        for text in texts + texts:
            try:
                jid = JID(text)
                expected = ("ok", (jid.host, jid.userhost()))
            except Exception as e:
                expected = ("raised", type(e))
            try:
                got = ("ok", addressing.jidHostAndBare(text))
            except Exception as e:
                got = ("raised", type(e))
            self.assertEqual(expected, got, text)
            if expected[0] == "ok":
                self.assertEqual(expected[1][0], addressing.jidHost(text))
            else:
                self.assertRaises(expected[1], addressing.jidHost, text)


class MemoTests(unittest.TestCase):
    """
    The memos of L{AddressMapper}'s four mappings.
    """

    def test_sameResultsAndFreed(self):
        """
        A remembered mapping gives the same result (errors are raised each
        time), and a mapper no longer referenced is freed at once, without
        the cyclic garbage collector (a reload replaces it).
        """
        import gc
        import platform
        import weakref

        mapper = AddressMapper("*", "gw.example", "gw.example", {})
        uri = "sip:alice*xmpp.example@gw.example"
        self.assertEqual("alice@xmpp.example", mapper.sipTargetToJID(uri))
        self.assertEqual("alice@xmpp.example", mapper.sipTargetToJID(uri))
        self.assertEqual("sip:bob@sip.example",
                         mapper.jidTargetToSIP("bob*sip.example@gw.example"))
        for _ in range(2):
            self.assertRaises(AddressError, mapper.sipTargetToJID,
                              "sip:nobody@gw.example")
        ref = weakref.ref(mapper)
        if platform.python_implementation() == "PyPy":
            # No reference counting: PyPy's collector frees it when it runs.
            del mapper
            gc.collect()
            self.assertIsNone(ref())
            return
        enabled = gc.isenabled()
        gc.disable()
        try:
            del mapper
            self.assertIsNone(ref())
        finally:
            if enabled:
                gc.enable()

    def test_bounded(self):
        """
        Each mapping remembers at most twice L{addressing.MEMO_SIZE}
        results (L{xmppgw.memo.bounded}), always the last
        L{addressing.MEMO_SIZE} used, and maps the others afresh with the
        same result.
        """
        from xmppgw import addressing

        self.patch(addressing, "MEMO_SIZE", 8)
        mapper = AddressMapper("*", "gw.example", "gw.example", {})

        def mapAll(i):
            self.assertEqual(
                "sip:bob%d@sip%d.example" % (i, i),
                mapper.jidTargetToSIP(
                    "bob%d*sip%d.example@gw.example" % (i, i)))
            self.assertEqual(
                "u%d*xmpp.example@gw.example" % (i,),
                mapper.jidSenderToSIP("u%d@xmpp.example" % (i,))[4:])
            self.assertEqual(
                "alice%d@xmpp.example" % (i,),
                mapper.sipTargetToJID(
                    "sip:alice%d*xmpp.example@gw.example" % (i,)))
            self.assertEqual(
                "carol%d*sip.example@gw.example" % (i,),
                mapper.sipSenderToJID("sip:carol%d@sip.example" % (i,)))

        names = ("sipTargetToJID", "sipSenderToJID", "jidTargetToSIP",
                 "jidSenderToSIP")
        for round_ in range(2):
            for i in range(20):
                mapAll(i)
        for name in names:
            info = getattr(mapper, name).cache_info()
            self.assertEqual(8, info.maxsize, name)
            self.assertLessEqual(info.currsize, 16, name)
            # 20 distinct in a cycle, more than the two generations hold:
            # every call missed.
            self.assertEqual(40, info.misses, name)
        # The last 8 used are remembered.
        for i in range(12, 20):
            mapAll(i)
        for name in names:
            self.assertEqual(40, getattr(mapper, name).cache_info().misses,
                             name)


def _localpartOutcome(function, user):
    """
    What C{function(user)} returns, or L{AddressError} if it raises that.
    """
    try:
        return function(user)
    except AddressError:
        return AddressError


class PlainUserTests(unittest.TestCase):
    """
    A decoded SIP user of case-insensitive printable ASCII that needs no
    escaping maps to its lower-cased self without the stringprep path
    (C{_localpartFromUser}); both give the same localpart or error.
    """

    def assertSameAsGeneral(self, user):
        from xmppgw import addressing

        def general(user):
            # _userToLocalpart without its plain-user path.
            if not user:
                raise AddressError("empty")
            if addressing._octets(user) > addressing._MAX_USER_OCTETS:
                raise AddressError("too long")
            return addressing._localpartFromUser.__wrapped__(user)

        self.assertEqual(
            _localpartOutcome(addressing._userToLocalpart, user),
            _localpartOutcome(general, user), repr(user))

    def test_plainDirect(self):
        """
        A plain user is read without the stringprep path.
        """
        from xmppgw import addressing

        self.patch(addressing, "_localpartFromUser", lambda user: 1 / 0)
        self.assertEqual(addressing._userToLocalpart("Alice.Smith+1"),
                         "alice.smith+1")

    def test_sameAsGeneral(self):
        """
        For a list of users, plain and not, the result (or the error) is
        the general rule's.
        """
        for user in ["alice", "Alice", "ALICE_1-2.3!~*'()&=+$,;?/", "a b",
                     "a@b", "a:b", "a/b", "a\\b", "a\\20b", "a%b", "\u00e9",
                     "\u212b", "a\x00", "a\x7f", "[x]", "{|}^`", "x" * 1023,
                     "x" * 1024, "X" * 1023, "\\20a", "a'b", 'a"b', "a<b>",
                     "a&b", "#$%", "  ", ""]:
            self.assertSameAsGeneral(user)

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(st.text(alphabet="aZ9 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\x00\x7f"
                   "\u00e9\u212b\u00df", max_size=12))
    def test_sameAsGeneralAnyText(self, user):
        """
        For any user, the result (or the error) is the general rule's.
        """
        self.assertSameAsGeneral(user)
