"""
Tests for L{xmppgw.sip.uas}, and RFC 4475 invalid messages run through the
parser and the policy together.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from xmppgw.sip.message import (
    Response, SIPParseError, makeResponse, parseMessage, serialize)
from xmppgw.sip import uas as uasModule
from xmppgw.sip.uas import ACCEPT, ALLOW, NO_RESPONSE, checkRequest
from xmppgw.sip.uri import parseNameAddr


def crlf(text):
    """
    Turn readable LF-separated text into CRLF-separated bytes.
    """
    return text.replace("\n", "\r\n").encode("utf-8")


def build(method="MESSAGE", uri="sip:bob@example.com", cseqMethod=None,
          remove=(), extra=(), replace=None, body=b"hi"):
    """
    A request as bytes, based on a valid MESSAGE.

    @param remove: header names to leave out.
    @param extra: C{(name, value)} pairs appended.
    @param replace: dict of header name -> value replacing the default.
    """
    headers = [
        ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds"),
        ("Max-Forwards", "70"),
        ("From", '"Alice" <sip:alice@example.org>;tag=1928301774'),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "a84b4c76e66710@pc33.example.org"),
        ("CSeq", "1 %s" % (cseqMethod or method,)),
        ("Content-Type", "text/plain"),
    ]
    replace = replace or {}
    lines = ["%s %s SIP/2.0" % (method, uri)]
    for name, value in headers:
        if name in remove:
            continue
        lines.append("%s: %s" % (name, replace.get(name, value)))
    for name, value in extra:
        lines.append("%s: %s" % (name, value))
    lines.append("Content-Length: %d" % (len(body),))
    return crlf("\n".join(lines) + "\n\n") + body


def answer(data, maxMessageSize=65535, reparse=True):
    """
    What the gateway does with C{data}: parse it, answer a parse error as
    the transport does, else apply L{checkRequest}.

    @param reparse: check that a response serialises and parses back
        (not possible when it echoes bytes that are not UTF-8).
    @return: the L{Response}, L{None} or L{NO_RESPONSE}.
    """
    try:
        request = parseMessage(data)
    except SIPParseError as e:
        if e.request is None:
            return None
        response = makeResponse(e.request, e.code, e.reason)
    else:
        response = checkRequest(request, maxMessageSize, len(data))
    if reparse and isinstance(response, Response):
        again = parseMessage(serialize(response))
        assert (again.code, again.reason) == (response.code, response.reason)
    return response


class CheckRequestTests(unittest.TestCase):
    """
    Tests for L{checkRequest}.
    """

    def check(self, data, maxMessageSize=65535):
        """
        Parse C{data} and apply L{checkRequest}.
        """
        request = parseMessage(data)
        return checkRequest(request, maxMessageSize, len(data))

    def assertCode(self, data, code, reason=None):
        """
        Assert that C{data} is answered with C{code} (and C{reason}).
        """
        response = answer(data)
        self.assertIsInstance(response, Response)
        self.assertEqual(response.code, code, response.reason)
        if reason is not None:
            self.assertEqual(response.reason, reason)
        return response

    def test_message(self):
        """
        A valid MESSAGE goes on to mapping.
        """
        self.assertIsNone(self.check(build()))

    def test_options(self):
        """
        OPTIONS gets 200 with Allow and Accept, and a To-tag.
        """
        response = self.assertCode(build("OPTIONS"), 200, "OK")
        self.assertEqual(response.headers.get("Allow"), "MESSAGE, OPTIONS")
        self.assertEqual(ALLOW, "MESSAGE, OPTIONS")
        self.assertEqual(response.headers.get("Accept"),
                         "text/plain, message/cpim")
        self.assertEqual(ACCEPT, "text/plain, message/cpim")
        self.assertIsNotNone(parseNameAddr(response.headers.get("To")).tag)
        self.assertEqual(response.headers.get("CSeq"), "1 OPTIONS")

    def test_knownMethods(self):
        """
        Methods SIP defines but the gateway does not implement get 405 with
        Allow.
        """
        for method in ["INVITE", "BYE", "CANCEL", "REGISTER", "SUBSCRIBE",
                       "NOTIFY", "PUBLISH", "INFO", "PRACK", "UPDATE",
                       "REFER"]:
            response = self.assertCode(build(method), 405,
                                       "Method Not Allowed")
            self.assertEqual(response.headers.get("Allow"),
                             "MESSAGE, OPTIONS")

    def test_unknownMethod(self):
        """
        Unknown methods get 501, including lower-case spellings of known
        ones (methods are case-sensitive).
        """
        for method in ["FOO", "message", "RE%47IST%45R",
                       "!interesting-Method0123456789_*+`.%indeed'~"]:
            self.assertCode(build(method), 501, "Not Implemented")

    def test_ack(self):
        """
        ACK never gets a response.
        """
        result = self.check(build("ACK"))
        self.assertIs(result, NO_RESPONSE)
        self.assertFalse(result)
        self.assertIs(self.check(build("ACK", remove=["Call-ID"])),
                      NO_RESPONSE)

    def test_maxForwardsZero(self):
        """
        Max-Forwards 0 gets 483 for MESSAGE, but OPTIONS is answered.
        """
        self.assertCode(build(replace={"Max-Forwards": "0"}), 483,
                        "Too Many Hops")
        self.assertCode(build("OPTIONS", replace={"Max-Forwards": "0"}), 200)
        self.assertIsNone(self.check(build(replace={"Max-Forwards": "1"})))

    def test_maxForwardsMissing(self):
        """
        A request without Max-Forwards is accepted.
        """
        self.assertIsNone(self.check(build(remove=["Max-Forwards"])))

    def test_maxForwardsInvalid(self):
        """
        A non-numeric, negative or overlarge Max-Forwards gets 400.
        """
        for value in ["abc", "-1", "300", "1 2", "\u0661"]:
            self.assertCode(build(replace={"Max-Forwards": value}), 400,
                            "Invalid Max-Forwards Header")
        self.assertCode(build(extra=[("Max-Forwards", "70")]), 400,
                        "Multiple Max-Forwards Headers")

    def test_tooLarge(self):
        """
        A request larger than maxMessageSize gets 513.
        """
        data = build()
        self.assertIsNone(self.check(data, len(data)))
        response = self.check(data, len(data) - 1)
        self.assertEqual((response.code, response.reason),
                         (513, "Message Too Large"))

    def test_missingHeaders(self):
        """
        A missing mandatory header gets 400 naming it.
        """
        for name in ["Via", "From", "To", "Call-ID", "CSeq"]:
            self.assertCode(build(remove=[name]), 400,
                            "Missing %s Header" % (name,))

    def test_duplicateHeaders(self):
        """
        From, To, Call-ID or CSeq twice gets 400; a second Via is fine.
        """
        for name, value in [("From", "<sip:x@y>;tag=2"), ("To", "<sip:x@y>"),
                            ("Call-ID", "other"), ("CSeq", "1 MESSAGE")]:
            self.assertCode(build(extra=[(name, value)]), 400,
                            "Multiple %s Headers" % (name,))
        self.assertIsNone(self.check(build(
            extra=[("Via", "SIP/2.0/TCP other;branch=z9hG4bK2")])))

    def test_invalidCSeq(self):
        """
        A non-numeric, overlarge or malformed CSeq gets 400; a method
        mismatch gets 400 too (RFC 4475 mismatch01, scalar02).
        """
        for value in ["x MESSAGE", "1", "1 MESSAGE extra", "-1 MESSAGE",
                      "36893488147419103232 MESSAGE", "4294967296 MESSAGE"]:
            self.assertCode(build(replace={"CSeq": value}), 400,
                            "Invalid CSeq Header")
        self.assertIsNone(self.check(build(
            replace={"CSeq": "4294967295 MESSAGE"})))
        self.assertCode(build(cseqMethod="OPTIONS"), 400,
                        "CSeq Method Does Not Match Request")

    def test_invalidAddresses(self):
        """
        Unparseable From, To or Via get 400 naming the header.
        """
        cases = [
            ("To", '"Mr. J. User <sip:j.user@example.com>'),
            ("To", "<sip:bob@example.com"),
            ("From", "Bell, Alexander <sip:a.g.bell@example.com>;tag=43"),
            ("To", '"Watson, Thomas" < sip:t.watson@example.org >'),
            ("Via", "SIP/2.0/UDP 192.0.2.15;;,;,,"),
            ("Via", "garbage"),
        ]
        for name, value in cases:
            self.assertCode(build(replace={name: value}), 400,
                            "Invalid %s Header" % (name,))
        self.assertCode(build(replace={"Call-ID": "a b"}), 400,
                        "Invalid Call-ID Header")

    def test_requestURIScheme(self):
        """
        tel: and unknown Request-URI schemes get 416; sips: gets 416 with a
        reason saying why.
        """
        for uri in ["tel:+1-201-555-0123",
                    "nobodyKnowsThisScheme:totallyopaquecontent",
                    "im:bob@example.com"]:
            self.assertCode(build(uri=uri), 416, "Unsupported URI Scheme")
        self.assertCode(build(uri="sips:bob@example.com"), 416,
                        "SIPS Not Relayed to XMPP")

    def test_sipsTo(self):
        """
        A sips: To URI gets 416; other unknown To schemes are accepted (RFC
        4475 novelsc).
        """
        self.assertCode(build(replace={"To": "<sips:bob@example.com>"}), 416,
                        "SIPS Not Relayed to XMPP")
        self.assertIsNone(self.check(build(replace={
            "To": "isbn:2983792873",
            "From": "<http://www.example.com>;tag=3234233"})))

    def test_badRequestURI(self):
        """
        An unparseable Request-URI gets 400, as does one with headers (RFC
        4475 ltgtruri, escruri).
        """
        for uri in ["<sip:user@example.com>", "sip:", "sip:a@b:99999",
                    "sip:user@"]:
            self.assertCode(build(uri=uri), 400, "Invalid Request-URI")
        self.assertCode(build(uri="sip:user@example.com?Route=%3Csip:"
                                  "example.com%3E"), 400,
                        "Headers Not Allowed In Request-URI")

    def test_require(self):
        """
        Any Require option tag gets 420 listing the tags in Unsupported
        (RFC 4475 bext01).
        """
        response = self.assertCode(build("OPTIONS", extra=[
            ("Require", "nothingSupportedHere"),
            ("Require", "nothingSupportedHereEither, 100rel")]), 420,
            "Bad Extension")
        self.assertEqual(response.headers.get("Unsupported"),
                         "nothingSupportedHere, nothingSupportedHereEither, "
                         "100rel")
        self.assertIsNone(self.check(build(extra=[("Require", " ")])))
        self.assertIsNone(self.check(build(extra=[("Proxy-Require", "x")])))

    def test_contentTypeNotChecked(self):
        """
        The policy does not look at Content-Type (the mapping answers 415).
        """
        self.assertIsNone(self.check(build(replace={
            "Content-Type": "application/sdp"})))

    def test_headerOrder(self):
        """
        The mandatory headers are checked in the order Via, From, To,
        Call-ID, CSeq, each for being missing, then repeated, then
        invalid; Max-Forwards comes last.
        """
        cases = [
            (dict(remove=["To"], replace={"Via": "garbage"}),
             "Invalid Via Header"),
            (dict(remove=["Via"], replace={"From": "<sip:x"}),
             "Missing Via Header"),
            (dict(remove=["To"], replace={"From": "<sip:x"}),
             "Invalid From Header"),
            (dict(remove=["Call-ID"], extra=[("From", "<sip:x@y>;tag=2")]),
             "Multiple From Headers"),
            (dict(remove=["CSeq"], replace={"To": "<sip:x"}),
             "Invalid To Header"),
            (dict(replace={"Call-ID": "a b"}, extra=[("To", "<sip:x@y>")]),
             "Multiple To Headers"),
            (dict(replace={"CSeq": "x", "Call-ID": "a b"}),
             "Invalid Call-ID Header"),
            (dict(remove=["CSeq"], replace={"Max-Forwards": "x"}),
             "Missing CSeq Header"),
            (dict(replace={"CSeq": "1 OPTIONS", "Max-Forwards": "x"}),
             "CSeq Method Does Not Match Request"),
            (dict(extra=[("Max-Forwards", "x")]),
             "Multiple Max-Forwards Headers"),
        ]
        for kwargs, reason in cases:
            self.assertCode(build(**kwargs), 400, reason)

    def test_order(self):
        """
        Header errors come before size, size before method, method before
        Request-URI, Request-URI before Require.
        """
        big = build("INVITE", remove=["Call-ID"])
        self.assertEqual(checkRequest(parseMessage(big), 10, len(big)).code,
                         400)
        big = build("INVITE")
        self.assertEqual(checkRequest(parseMessage(big), 10, len(big)).code,
                         513)
        self.assertCode(build("INVITE", uri="tel:+1"), 405)
        self.assertCode(build(uri="tel:+1", extra=[("Require", "x")]), 416)


class TortureInvalidTests(unittest.TestCase):
    """
    RFC 4475 invalid messages (3.1.2, 3.3), adapted to MESSAGE/OPTIONS:
    each gets its 400 (or 505, 416, 420, 501), and a valid message parses
    normally after it.
    """

    def assertAnswered(self, data, code):
        """
        C{data} is answered with C{code}, and the next valid message still
        goes through.
        """
        response = answer(data)
        self.assertIsInstance(response, Response)
        self.assertEqual(response.code, code, response.reason)
        if b"Call-ID: a84b4c76e66710@pc33.example.org" in data:
            self.assertEqual(response.headers.get("Call-ID"),
                             "a84b4c76e66710@pc33.example.org")
        self.assertIsNone(answer(build()))
        return response

    def test_badinv01(self):
        """
        Extraneous header field separators in Via.
        """
        self.assertAnswered(build(replace={
            "Via": "SIP/2.0/UDP 192.0.2.15;;,;,,"}), 400)

    def test_clerr(self):
        """
        Content-Length larger than the datagram.
        """
        data = build(body=b"short")
        data = data.replace(b"Content-Length: 5", b"Content-Length: 9999")
        self.assertAnswered(data, 400)

    def test_ncl(self):
        """
        Negative Content-Length.
        """
        data = build().replace(b"Content-Length: 2", b"Content-Length: -999")
        self.assertAnswered(data, 400)

    def test_scalar02(self):
        """
        Overlarge scalar values: CSeq and Max-Forwards.
        """
        self.assertAnswered(build(replace={
            "CSeq": "36893488147419103232 MESSAGE"}), 400)
        self.assertAnswered(build(replace={"Max-Forwards": "300"}), 400)

    def test_quotbal(self):
        """
        Unterminated quoted string in a display name.
        """
        self.assertAnswered(build(replace={
            "To": '"Mr. J. User <sip:j.user@example.com>'}), 400)

    def test_ltgtruri(self):
        """
        C{<>} around the Request-URI.
        """
        self.assertAnswered(build(uri="<sip:user@example.com>"), 400)

    def test_lwsruri(self):
        """
        LWS inside the Request-URI.
        """
        self.assertAnswered(build(uri="sip:user@example.com; lr"), 400)

    def test_lwsstart(self):
        """
        Several SP between request-line elements.
        """
        data = build().replace(b"MESSAGE sip:bob@example.com SIP/2.0",
                               b"MESSAGE  sip:bob@example.com  SIP/2.0")
        self.assertAnswered(data, 400)

    def test_trws(self):
        """
        SP at the end of the request line.
        """
        data = build().replace(b"SIP/2.0\r\n", b"SIP/2.0   \r\n", 1)
        self.assertAnswered(data, 400)

    def test_escruri(self):
        """
        Escaped headers in the Request-URI.
        """
        self.assertAnswered(build(
            uri="sip:user@example.com?Route=%3Csip:example.com%3E"), 400)

    def test_badaspec(self):
        """
        Spaces inside the addr-spec.
        """
        self.assertAnswered(build(replace={
            "To": '"Watson, Thomas" < sip:t.watson@example.org >'}), 400)

    def test_baddn(self):
        """
        Non-token characters in an unquoted display name.
        """
        self.assertAnswered(build(replace={
            "From": "Bell, Alexander <sip:a.g.bell@example.com>;tag=43"}), 400)

    def test_badvers(self):
        """
        SIP/7.0 gets 505.
        """
        data = build().replace(b" SIP/2.0\r\n", b" SIP/7.0\r\n", 1)
        response = self.assertAnswered(data, 505)
        self.assertEqual(response.reason, "SIP Version Not Supported: SIP/7.0")

    def test_mismatch01(self):
        """
        Request-line and CSeq methods differ.
        """
        self.assertAnswered(build("OPTIONS", cseqMethod="INVITE"), 400)

    def test_mismatch02(self):
        """
        An unknown method whose CSeq method differs.
        """
        self.assertAnswered(build("NEWMETHOD", cseqMethod="INVITE"), 400)

    def test_insuf(self):
        """
        Missing Call-ID, From and To.
        """
        response = self.assertAnswered(
            build(remove=["Call-ID", "From", "To"]), 400)
        self.assertIn(response.reason, ["Missing From Header",
                                        "Missing To Header",
                                        "Missing Call-ID Header"])

    def test_unkscm(self):
        """
        An unknown scheme in the Request-URI gets 416.
        """
        self.assertAnswered(build(
            "OPTIONS", uri="nobodyKnowsThisScheme:totallyopaquecontent"), 416)

    def test_bext01(self):
        """
        Require with an unknown option tag gets 420.
        """
        self.assertAnswered(build("OPTIONS", extra=[
            ("Require", "nothingSupportedHere")]), 420)

    def test_esc02(self):
        """
        An escaped method name is an unknown method.
        """
        self.assertAnswered(build("RE%47IST%45R",
                                  uri="sip:registrar.example.com"), 501)

    def test_unclosedAngle(self):
        """
        C{<} without C{>} in To.
        """
        self.assertAnswered(build(replace={"To": "<sip:bob@example.com"}),
                            400)

    def test_badUTF8(self):
        """
        An invalid UTF-8 byte in a header gets 400.
        """
        data = build().replace(b'"Alice"', b'"Al\xffce"')
        response = answer(data, reparse=False)
        self.assertEqual((response.code, response.reason),
                         (400, "Header Section Is Not Valid UTF-8"))
        self.assertEqual(response.headers.get("Call-ID"),
                         "a84b4c76e66710@pc33.example.org")
        self.assertIn(b'\r\nFrom: "Al\xffce" <sip:alice@example.org>;'
                      b'tag=1928301774\r\n', serialize(response))
        self.assertIsNone(answer(build()))

    def test_duplicateContentLength(self):
        """
        Two different Content-Length values.
        """
        data = build().replace(b"Content-Length: 2",
                               b"Content-Length: 2\r\nl: 1")
        self.assertAnswered(data, 400)

    def test_responsesNotAnswered(self):
        """
        A broken response is dropped, never answered (RFC 4475 bigcode).
        """
        self.assertIsNone(answer(crlf(
            "SIP/2.0 4294967301 better not break the receiver\n"
            "Call-ID: x\nl: 0\n\n")))


_HEADER_CHOICES = [
    ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds"),
    ("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK2, SIP/2.0/TCP h"),
    ("Via", "SIP/2.0/UDP"),
    ("From", '"Alice" <sip:alice@example.org>;tag=1928301774'),
    ("From", "<sip:alice@example.org>;tag=x"),
    ("From", "<sip:alice@example.org"),
    ("To", "<sip:bob@example.com>"),
    ("To", "<sips:bob@example.com>"),
    ("To", "sip:bob@example.com;tag=a b"),
    ("Call-ID", "a84b4c76e66710@pc33.example.org"),
    ("Call-ID", "a b"),
    ("Call-ID", ""),
    ("CSeq", "1 MESSAGE"),
    ("CSeq", "1 OPTIONS"),
    ("CSeq", "99999999999 MESSAGE"),
    ("CSeq", "x MESSAGE"),
    ("Max-Forwards", "70"),
    ("Max-Forwards", "0"),
    ("Max-Forwards", "256"),
    ("Max-Forwards", "\u0661"),
    ("Require", "foo, bar"),
    ("Require", " , "),
    ("Require", ""),
    ("Content-Type", "text/plain"),
]


def _answerParts(response):
    if not isinstance(response, Response):
        return response
    return (response.code, response.reason,
            [(n, v) for n, v in response.headers.items() if n != "To"])


class CollectFastPathTests(unittest.TestCase):
    """
    L{checkRequest} reads the headers it checks in one step when none is
    repeated (L{uasModule._collect}); the general rule
    (L{uasModule._collectRepeated}) gives the same answers.
    """

    def general(self, items):
        return uasModule._collectRepeated(
            [item for item in items if item[0] in uasModule._WATCHED])

    def assertSameAsGeneral(self, headers, method="MESSAGE", uri="sip:bob@example.com"):
        lines = ["%s %s SIP/2.0" % (method, uri)]
        lines.extend("%s: %s" % pair for pair in headers)
        data = crlf("\n".join(lines) + "\nContent-Length: 0\n\n")
        request = parseMessage(data)
        fast = _answerParts(checkRequest(request, 65535, len(data)))
        self.patch(uasModule, "_collect", self.general)
        try:
            self.assertEqual(_answerParts(checkRequest(request, 65535, len(data))), fast, headers)
        finally:
            self.patch(uasModule, "_collect", _collectReal)

    def test_unrepeatedDirect(self):
        """
        Headers not repeated are read without the general rule.
        """
        self.patch(uasModule, "_collectRepeated", lambda picked: 1 / 0)
        self.assertIsNone(answer(build()))

    def test_sameAsGeneral(self):
        """
        A valid request, each header left out, each repeated.
        """
        base = [pair for pair in _HEADER_CHOICES if pair[1] in (
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
            '"Alice" <sip:alice@example.org>;tag=1928301774', "<sip:bob@example.com>",
            "a84b4c76e66710@pc33.example.org", "1 MESSAGE", "70")]
        self.assertSameAsGeneral(base)
        for i in range(len(base)):
            self.assertSameAsGeneral(base[:i] + base[i + 1:])
            self.assertSameAsGeneral(base + [base[i]])

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(st.lists(st.sampled_from(_HEADER_CHOICES), max_size=10),
           st.sampled_from(["MESSAGE", "OPTIONS", "INVITE", "X"]),
           st.sampled_from(["sip:bob@example.com", "sips:bob@example.com", "tel:1"]))
    def test_sameAsGeneralAny(self, headers, method, uri):
        """
        Any choice of headers, repeated or not, valid or not, gets the
        answer of the general rule.
        """
        self.assertSameAsGeneral(headers, method, uri)


_collectReal = uasModule._collect


class FuzzTests(unittest.TestCase):
    """
    Property test: parser plus policy never fail on mangled input.
    """

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(st.sampled_from(["MESSAGE", "OPTIONS", "INVITE", "X"]),
           st.integers(0, 400), st.binary(min_size=1, max_size=6))
    def test_mangledRequests(self, method, position, junk):
        """
        A request with bytes inserted anywhere gets a response, L{None} or
        L{NO_RESPONSE}, never an exception.
        """
        data = build(method)
        position = min(position, len(data))
        data = data[:position] + junk + data[position:]
        result = answer(data, reparse=False)
        self.assertTrue(result is None or result is NO_RESPONSE
                        or isinstance(result, Response))
        if isinstance(result, Response):
            self.assertTrue(serialize(result).startswith(b"SIP/2.0 "))
