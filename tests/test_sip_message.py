"""
Tests for L{xmppgw.sip.message}.
"""

import re

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from xmppgw import memo as memoModule
from xmppgw.sip import message as messageModule
from xmppgw.sip.message import (
    REASON_PHRASES, FramingError, Headers, Request, Response, SIPParseError,
    StreamFramer, Via, canonicalName, makeResponse, parseMessage, parseVia,
    reasonPhrase, serialize, topVia)
from xmppgw.sip.uri import parseNameAddr


def crlf(text):
    """
    Turn a readable multi-line message (lines ending in LF) into bytes with
    CRLF line ends.
    """
    return text.replace("\n", "\r\n").encode("utf-8")


BODY = "h\u00e9llo \u2603".encode("utf-8")

MESSAGE = crlf(
    "MESSAGE sip:bob@example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\n"
    "Max-Forwards: 70\n"
    'From: "Alice" <sip:alice@example.org>;tag=1928301774\n'
    "To: <sip:bob@example.com>\n"
    "Call-ID: a84b4c76e66710@pc33.example.org\n"
    "CSeq: 1 MESSAGE\n"
    "Content-Type: text/plain;charset=UTF-8\n"
    "Content-Length: %d\n"
    "\n" % (len(BODY),)) + BODY


class HeadersTests(unittest.TestCase):
    """
    Tests for L{Headers}.
    """

    def test_compactForms(self):
        """
        Compact names are expanded on entry.
        """
        expected = {
            "v": "Via", "f": "From", "t": "To", "i": "Call-ID",
            "m": "Contact", "l": "Content-Length", "c": "Content-Type",
            "e": "Content-Encoding", "s": "Subject", "k": "Supported",
            "o": "Event", "r": "Refer-To", "u": "Allow-Events",
        }
        for compact, full in expected.items():
            self.assertEqual(canonicalName(compact), full)
            self.assertEqual(canonicalName(compact.upper()), full)

    def test_canonicalCapitalisation(self):
        """
        Other names get a canonical capitalisation.
        """
        self.assertEqual(canonicalName("call-id"), "Call-ID")
        self.assertEqual(canonicalName("CSEQ"), "CSeq")
        self.assertEqual(canonicalName("max-FORWARDS"), "Max-Forwards")
        self.assertEqual(canonicalName("x-my-header"), "X-My-Header")
        self.assertEqual(canonicalName("WWW-authenticate"),
                         "WWW-Authenticate")

    def test_canonicalNamesBounded(self):
        """
        Canonical names are remembered, at most C{_CANON_CACHE_MAX} of them;
        past that, names are still canonicalised, by C{Headers} too.
        """
        from xmppgw.sip import message
        for i in range(message._CANON_CACHE_MAX + 100):
            self.assertEqual(canonicalName("x-n%d-h" % (i,)), "X-N%d-H" % (i,))
            self.assertLessEqual(len(message._canonCache),
                                 message._CANON_CACHE_MAX)
        name = "x-unkept-%d" % (message._CANON_CACHE_MAX,)
        h = Headers([(name, "1")])
        h.add(name, "2")
        self.assertNotIn(name, message._canonCache)
        canon = "X-Unkept-%d" % (message._CANON_CACHE_MAX,)
        self.assertEqual(h.items(), [(canon, "1"), (canon, "2")])
        self.assertEqual(h.getAll(name.upper()), ["1", "2"])
        self.assertEqual(h.get(name), "1")

    def test_multiMap(self):
        """
        C{add}, C{get}, C{getAll}, C{__contains__} and C{items} work on an
        ordered multi-map with case-insensitive lookups.
        """
        h = Headers()
        h.add("v", "SIP/2.0/UDP a")
        h.add("To", "<sip:b@x>")
        h.add("VIA", "SIP/2.0/UDP b")
        self.assertEqual(h.get("via"), "SIP/2.0/UDP a")
        self.assertEqual(h.getAll("Via"), ["SIP/2.0/UDP a", "SIP/2.0/UDP b"])
        self.assertIn("t", h)
        self.assertNotIn("From", h)
        self.assertIsNone(h.get("From"))
        self.assertEqual(h.get("From", "x"), "x")
        self.assertEqual(h.getAll("From"), [])
        self.assertEqual(h.items(), [("Via", "SIP/2.0/UDP a"),
                                     ("To", "<sip:b@x>"),
                                     ("Via", "SIP/2.0/UDP b")])
        self.assertEqual(len(h), 3)

    def test_set(self):
        """
        C{set} replaces all values in place of the first one, or appends.
        """
        h = Headers([("X-A", "1"), ("X-B", "2"), ("x-a", "3")])
        h.set("x-A", "9")
        self.assertEqual(h.items(), [("X-A", "9"), ("X-B", "2")])
        h.set("X-C", "4")
        self.assertEqual(h.items(), [("X-A", "9"), ("X-B", "2"),
                                     ("X-C", "4")])

    def test_remove(self):
        """
        C{remove} drops every line of a name; removing an absent name is
        harmless.
        """
        h = Headers([("Via", "1"), ("To", "2"), ("v", "3")])
        h.remove("via")
        self.assertEqual(h.items(), [("To", "2")])
        h.remove("Nothing")
        self.assertEqual(h.items(), [("To", "2")])

    def test_copy(self):
        """
        C{copy} is independent of the original.
        """
        h = Headers([("To", "x")])
        c = h.copy()
        c.add("From", "y")
        self.assertEqual(h.items(), [("To", "x")])
        self.assertEqual(c.items(), [("To", "x"), ("From", "y")])
        self.assertEqual(Headers(c), c)

    def test_itemsIsACopy(self):
        """
        Changing the list returned by C{items} does not change the headers.
        """
        h = Headers([("To", "x")])
        h.items().append(("From", "y"))
        self.assertEqual(len(h), 1)


class ModelTests(unittest.TestCase):
    """
    Tests for L{Request} and L{Response}.
    """

    def test_request(self):
        """
        A request has method, uri, headers, body, isRequest and no source.
        """
        r = Request("MESSAGE", "sip:b@x", [("To", "<sip:b@x>")], b"hi")
        self.assertEqual(r.method, "MESSAGE")
        self.assertEqual(r.uri, "sip:b@x")
        self.assertIsInstance(r.headers, Headers)
        self.assertEqual(r.headers.get("to"), "<sip:b@x>")
        self.assertEqual(r.body, b"hi")
        self.assertTrue(r.isRequest)
        self.assertIsNone(r.source)

    def test_response(self):
        """
        A response has code, reason, headers, body and isRequest false.
        """
        r = Response(202, "Accepted", Headers())
        self.assertEqual((r.code, r.reason, r.body), (202, "Accepted", b""))
        self.assertFalse(r.isRequest)
        self.assertIsNone(r.source)

    def test_bodyMustBeBytes(self):
        """
        A text body is refused.
        """
        self.assertRaises(TypeError, Request, "MESSAGE", "sip:a@b", None,
                          "text")
        self.assertEqual(Response(200, "OK", None, bytearray(b"x")).body, b"x")


class SerializeTests(unittest.TestCase):
    """
    Tests for L{serialize}.
    """

    def test_request(self):
        """
        Start line, headers in order, a byte Content-Length, blank line and
        body.
        """
        r = Request("MESSAGE", "sip:b@x", [("To", "<sip:b@x>"),
                                           ("c", "text/plain")], BODY)
        self.assertEqual(serialize(r), crlf(
            "MESSAGE sip:b@x SIP/2.0\n"
            "To: <sip:b@x>\n"
            "Content-Type: text/plain\n"
            "Content-Length: 10\n\n") + BODY)
        self.assertEqual(len(BODY), 10)

    def test_replacesContentLength(self):
        """
        A Content-Length already present (even a wrong one) is replaced.
        """
        r = Response(200, "OK", [("l", "99"), ("Content-Length", "7"),
                                 ("To", "x")])
        self.assertEqual(serialize(r), crlf(
            "SIP/2.0 200 OK\nTo: x\nContent-Length: 0\n\n"))

    def test_roundTrip(self):
        """
        Parsing a serialised message gives the same message back.
        """
        m = parseMessage(MESSAGE)
        again = parseMessage(serialize(m))
        self.assertEqual(again.headers, m.headers)
        self.assertEqual(again.body, BODY)
        self.assertEqual((again.method, again.uri), (m.method, m.uri))

    def test_utf8Headers(self):
        """
        Non-ASCII header text is encoded as UTF-8.
        """
        r = Request("MESSAGE", "sip:b@x", [("Subject", "caf\u00e9")])
        self.assertIn("Subject: caf\u00e9\r\n".encode("utf-8"), serialize(r))


class ParseMessageTests(unittest.TestCase):
    """
    Tests for L{parseMessage}.
    """

    def test_request(self):
        """
        A MESSAGE is parsed with its headers and byte-counted UTF-8 body.
        """
        m = parseMessage(MESSAGE)
        self.assertIsInstance(m, Request)
        self.assertEqual(m.method, "MESSAGE")
        self.assertEqual(m.uri, "sip:bob@example.com")
        self.assertEqual(m.headers.get("Call-ID"),
                         "a84b4c76e66710@pc33.example.org")
        self.assertEqual(m.headers.get("cseq"), "1 MESSAGE")
        self.assertEqual(m.body, BODY)
        self.assertIsNone(m.source)

    def test_bytearray(self):
        """
        A C{bytearray} is accepted; text is not.
        """
        self.assertEqual(parseMessage(bytearray(MESSAGE)).body, BODY)
        self.assertRaises(TypeError, parseMessage, MESSAGE.decode("utf-8"))

    def test_response(self):
        """
        A response is parsed with code, reason and headers.
        """
        m = parseMessage(crlf("SIP/2.0 202 Accepted\nCSeq: 1 MESSAGE\n"
                              "Content-Length: 0\n\n"))
        self.assertIsInstance(m, Response)
        self.assertEqual((m.code, m.reason), (202, "Accepted"))
        self.assertEqual(m.headers.get("CSeq"), "1 MESSAGE")
        self.assertEqual(m.body, b"")

    def test_unusualReason(self):
        """
        Reason phrases may hold UTF-8 and odd characters or be empty (RFC
        4475 unreason, noreason).
        """
        m = parseMessage(
            "SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e "
            "\u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e\r\n"
            "l: 0\r\n\r\n".encode("utf-8"))
        self.assertEqual(m.reason, "= 2**3 * 5**2 \u043d\u043e \u0441\u0442"
                         "\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441"
                         "\u0442\u043e")
        m = parseMessage(crlf("SIP/2.0 100 \nl: 0\n\n"))
        self.assertEqual((m.code, m.reason), (100, ""))
        m = parseMessage(crlf("SIP/2.0 100\nl: 0\n\n"))
        self.assertEqual((m.code, m.reason), (100, ""))

    def test_badStatusCode(self):
        """
        An overlarge or malformed status code is an error with no partial
        request (RFC 4475 bigcode).
        """
        for line in ["SIP/2.0 4294967301 better not break the receiver",
                     "SIP/2.0 99 Low", "SIP/2.0 abc X", "SIP/2.0 700 X",
                     "SIP/2.0"]:
            exc = self.assertRaises(SIPParseError, parseMessage,
                                    crlf(line + "\nl: 0\n\n"))
            self.assertIsNone(exc.request)

    def test_responseBadVersion(self):
        """
        A response with another SIP version is an error.
        """
        exc = self.assertRaises(SIPParseError, parseMessage,
                                crlf("SIP/3.0 200 OK\nl: 0\n\n"))
        self.assertEqual(exc.code, 505)

    def test_compactAndCaseInsensitive(self):
        """
        Compact and oddly-cased names are canonicalised.
        """
        m = parseMessage(crlf(
            "OPTIONS sip:b@x SIP/2.0\nv: SIP/2.0/UDP h;branch=z9hG4bK1\n"
            "f: <sip:a@x>;tag=1\nt: <sip:b@x>\ni: abc\ncSeQ: 1 OPTIONS\n"
            "MAX-FORWARDS: 70\nl: 0\n\n"))
        self.assertEqual([name for name, _ in m.headers.items()],
                         ["Via", "From", "To", "Call-ID", "CSeq",
                          "Max-Forwards", "Content-Length"])

    def test_folding(self):
        """
        Continuation lines are joined with one space; whitespace before the
        colon is allowed.
        """
        m = parseMessage(crlf(
            "OPTIONS sip:b@x SIP/2.0\nSubject  :  first\n   second\n"
            "\tthird\nTo :\n <sip:b@x>\nl: 0\n\n"))
        self.assertEqual(m.headers.get("Subject"), "first second third")
        self.assertEqual(m.headers.get("To"), "<sip:b@x>")

    def test_repeatedHeaders(self):
        """
        Repeated headers are kept one value per line, in order.
        """
        m = parseMessage(crlf(
            "OPTIONS sip:b@x SIP/2.0\nVia: SIP/2.0/UDP a;branch=z9hG4bK1, "
            "SIP/2.0/TCP b;branch=z9hG4bK2\nVia: SIP/2.0/UDP c\nl: 0\n\n"))
        self.assertEqual(len(m.headers.getAll("Via")), 2)
        vias = [via for value in m.headers.getAll("Via")
                for via in parseVia(value)]
        self.assertEqual([v.host for v in vias], ["a", "b", "c"])

    def test_noContentLengthDatagram(self):
        """
        Without Content-Length the body is the rest of the datagram.
        """
        m = parseMessage(b"MESSAGE sip:b@x SIP/2.0\r\nTo: x\r\n\r\n" + BODY)
        self.assertEqual(m.body, BODY)

    def test_extraBytesTruncated(self):
        """
        Bytes after Content-Length bytes are dropped (RFC 3261 18.3).
        """
        m = parseMessage(crlf("MESSAGE sip:b@x SIP/2.0\nl: 3\n\n") +
                         b"abcdef")
        self.assertEqual(m.body, b"abc")

    def test_contentLengthTooLarge(self):
        """
        A Content-Length larger than the body is an error with a partial
        request that holds the headers (RFC 4475 clerr).
        """
        exc = self.assertRaises(SIPParseError, parseMessage, crlf(
            "MESSAGE sip:b@x SIP/2.0\nCall-ID: c1\nl: 9999\n\nshort"))
        self.assertEqual(exc.code, 400)
        self.assertEqual(exc.request.headers.get("Call-ID"), "c1")

    def test_contentLengthMultiByte(self):
        """
        Content-Length counts bytes, not characters: a character count
        falls short of the body and the rest is cut.
        """
        m = parseMessage(crlf("MESSAGE sip:b@x SIP/2.0\nl: 2\n\n") +
                         "\u00e9\u00e9".encode("utf-8"))
        self.assertEqual(m.body, "\u00e9".encode("utf-8"))

    def test_badContentLength(self):
        """
        Negative, non-numeric, huge and conflicting Content-Length values
        are errors (RFC 4475 ncl, scalar02).
        """
        for value in ["-999", "abc", "1 2", "", "12345678901",
                      "36893488147419103232", "\u0661"]:
            exc = self.assertRaises(
                SIPParseError, parseMessage,
                crlf("MESSAGE sip:b@x SIP/2.0\nContent-Length: %s\n\n"
                     % (value,)))
            self.assertIsNotNone(exc.request)
        self.assertRaises(SIPParseError, parseMessage, crlf(
            "MESSAGE sip:b@x SIP/2.0\nl: 1\nContent-Length: 2\n\nab"))
        m = parseMessage(crlf(
            "MESSAGE sip:b@x SIP/2.0\nl: 2\nContent-Length: 2\n\nab"))
        self.assertEqual(m.body, b"ab")

    def test_badVersion(self):
        """
        SIP/7.0 gives a 505 error with a partial request (RFC 4475 badvers);
        a malformed version gives 400.
        """
        exc = self.assertRaises(SIPParseError, parseMessage, crlf(
            "OPTIONS sip:t.watson@example.org SIP/7.0\nCall-ID: bv\n"
            "l: 0\n\n"))
        self.assertEqual(exc.code, 505)
        self.assertEqual(exc.request.headers.get("Call-ID"), "bv")
        exc = self.assertRaises(SIPParseError, parseMessage, crlf(
            "OPTIONS sip:a@b HTTP/1.1\nl: 0\n\n"))
        self.assertEqual(exc.code, 400)

    def test_lowerCaseVersion(self):
        """
        The version literal is case-insensitive.
        """
        self.assertEqual(parseMessage(crlf("OPTIONS sip:a@b sip/2.0\n\n"))
                         .method, "OPTIONS")

    def test_badRequestLines(self):
        """
        Extra spaces, spaces in the Request-URI and bad method characters
        give 400 with a partial request (RFC 4475 lwsruri, lwsstart, trws).
        """
        for line in ["OPTIONS sip:user@example.com; lr SIP/2.0",
                     "OPTIONS  sip:user@example.com  SIP/2.0",
                     "OPTIONS sip:user@example.com SIP/2.0  ",
                     "OPTIONS sip:user@example.com",
                     "OPT(IONS sip:user@example.com SIP/2.0",
                     "OPTIONS\tsip:user@example.com SIP/2.0",
                     "OPTIONS"]:
            exc = self.assertRaises(SIPParseError, parseMessage,
                                    crlf(line + "\nCall-ID: x\n\n"))
            self.assertEqual(exc.code, 400)
            self.assertEqual(exc.request.headers.get("Call-ID"), "x")

    def test_badHeaderLines(self):
        """
        A header line without colon, a name that is not a token and a
        continuation line before any header are errors with the rest of the
        headers in the partial request.
        """
        for bad in ["NoColonHere", "Bad Name: x", ": empty",
                    " continuation"]:
            data = crlf("OPTIONS sip:a@b SIP/2.0\n%s\nCall-ID: y\n\n"
                        % (bad,))
            exc = self.assertRaises(SIPParseError, parseMessage, data)
            self.assertEqual(exc.request.headers.get("Call-ID"), "y")

    def test_badUTF8(self):
        """
        A header section that is not UTF-8 is a 400 error; the partial
        request keeps the bad bytes so that they can be echoed.
        """
        data = (b"MESSAGE sip:b@x SIP/2.0\r\nFrom: <sip:a@x>;tag=\xff\xfe\r\n"
                b"Call-ID: z\r\nl: 0\r\n\r\n")
        exc = self.assertRaises(SIPParseError, parseMessage, data)
        self.assertEqual(exc.code, 400)
        self.assertEqual(exc.request.headers.get("Call-ID"), "z")
        response = makeResponse(exc.request, 400, exc.reason)
        self.assertIn(b"From: <sip:a@x>;tag=\xff\xfe\r\n", serialize(response))

    def test_bodyNotDecoded(self):
        """
        Body bytes that are not UTF-8 are kept as they are.
        """
        m = parseMessage(crlf("MESSAGE sip:b@x SIP/2.0\nl: 2\n\n") +
                         b"\xff\x00")
        self.assertEqual(m.body, b"\xff\x00")

    def test_leadingCRLF(self):
        """
        Empty lines before the start line are skipped.
        """
        self.assertEqual(parseMessage(b"\r\n\r\n" + MESSAGE).body, BODY)

    def test_empty(self):
        """
        An empty datagram or only CRLFs is an error.
        """
        self.assertRaises(SIPParseError, parseMessage, b"")
        self.assertRaises(SIPParseError, parseMessage, b"\r\n\r\n")

    def test_bareLF(self):
        """
        Lines ending in a bare LF are accepted.
        """
        m = parseMessage(b"MESSAGE sip:b@x SIP/2.0\nTo: <sip:b@x>\n"
                         b"l: 5\n\nhello\r\n\r\n")
        self.assertEqual(m.headers.get("To"), "<sip:b@x>")
        self.assertEqual(m.body, b"hello")

    def test_noBlankLine(self):
        """
        A datagram whose headers are not followed by a blank line has an
        empty body; if it claims a body, that is an error.
        """
        m = parseMessage(b"OPTIONS sip:b@x SIP/2.0\r\nTo: <sip:b@x>\r\n")
        self.assertEqual(m.headers.items(), [("To", "<sip:b@x>")])
        self.assertEqual(m.body, b"")
        self.assertRaises(SIPParseError, parseMessage,
                          b"OPTIONS sip:b@x SIP/2.0\r\nl: 4\r\n")


class TortureValidTests(unittest.TestCase):
    """
    RFC 4475 section 3.1.1 valid messages, adapted to MESSAGE/OPTIONS: they
    must parse.
    """

    def test_wsinv(self):
        """
        Short tortuous message: LWS everywhere, folding, compact forms,
        unknown headers, odd values, two Via lines (RFC 4475 3.1.1.1).
        """
        body = b"Hello\r\n"
        data = crlf(
            "MESSAGE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\n"
            "TO :\n"
            " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n"
            'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\n'
            "  ;\n"
            "  tag = 98asjd8\n"
            "MaX-fOrWaRdS: 0068\n"
            "Call-ID: wsinv.ndaksdj@192.0.2.1\n"
            "Content-Length   : %d\n"
            "cseq: 0009\n"
            "  MESSAGE\n"
            "Via  : SIP  /   2.0\n"
            " /UDP\n"
            "    192.0.2.2;branch=390skdjuw\n"
            "s :\n"
            "NewFangledHeader:   newfangled value\n"
            " continued newfangled value\n"
            "UnknownHeaderWithUnusualValue: ;;,,;;,;\n"
            "Content-Type: text/plain\n"
            "Route:\n"
            " <sip:services.example.com;lr;unknownwith=value;"
            "unknown-no-value>\n"
            "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\n"
            "  branch  =   z9hG4bK9ikj8  ,\n"
            " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n"
            " z9hG4bK30239\n"
            'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\n'
            "      newvalue ;\n"
            "  secondparam ; q = 0.33\n"
            "\n" % (len(body),)) + body
        m = parseMessage(data)
        h = m.headers
        self.assertEqual(m.uri, "sip:vivekg@chair-dnrc.example.com;"
                                "unknownparam")
        self.assertEqual(parseNameAddr(h.get("To")).tag, "1918181833n")
        sender = parseNameAddr(h.get("From"))
        self.assertEqual(sender.display, 'J Rosenberg \\"')
        self.assertEqual(sender.tag, "98asjd8")
        self.assertEqual(h.get("Max-Forwards"), "0068")
        self.assertEqual(h.get("CSeq"), "0009 MESSAGE")
        self.assertEqual(h.get("Subject"), "")
        self.assertEqual(h.get("NewFangledHeader"),
                         "newfangled value continued newfangled value")
        self.assertEqual(h.get("UnknownHeaderWithUnusualValue"), ";;,,;;,;")
        vias = [v for value in h.getAll("Via") for v in parseVia(value)]
        self.assertEqual([(v.transport, v.host, v.branch) for v in vias],
                         [("UDP", "192.0.2.2", "390skdjuw"),
                          ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
                          ("UDP", "192.168.255.111", "z9hG4bK30239")])
        contact = parseNameAddr(h.get("Contact"))
        self.assertEqual(contact.param("q"), "0.33")
        self.assertTrue(contact.hasParam("secondparam"))
        self.assertEqual(m.body, body)

    def test_intmeth(self):
        """
        An unknown method with every token character and an unusual
        Request-URI parses (RFC 4475 3.1.1.2).
        """
        method = "!interesting-Method0123456789_*+`.%indeed'~"
        data = crlf(
            "%s sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:"
            "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\n"
            "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%%66*_+`'~\n"
            "To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~"
            "(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\n"
            "From: token1~` token2'+_ token3*%%!.- <sip:mundane@example.com>"
            ";fromParam''~+*_!.-%%=\"\\\"\\u0440\\u0430\\u0431\\u043e\\u0442"
            "\\u0430\\u044e\\u0449\\u0438\\u0439\";tag=_token~1'+`*%%!-.\n"
            "Call-ID: intmeth.word%%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n"
            "CSeq: 139122385 %s\n"
            "Max-Forwards: 255\n"
            "extensionHeader-!.%%*+_`'~:\xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c"
            "\xe9\x9b\xbb\n"
            "Content-Length: 0\n\n" % (method, method))
        m = parseMessage(data)
        self.assertEqual(m.method, method)
        self.assertEqual(m.headers.get("CSeq"), "139122385 " + method)
        self.assertEqual(parseNameAddr(m.headers.get("From")).tag,
                         "_token~1'+`*%!-.")
        self.assertEqual(parseNameAddr(m.headers.get("From")).display,
                         "token1~` token2'+_ token3*%!.-")
        self.assertEqual(parseNameAddr(m.headers.get("To")).display,
                         "BEL:\x07 NUL:\x00 DEL:\x7f")
        self.assertEqual(topVia(m).branch, "z9hG4bK-.!%66*_+`'~")

    def test_longValues(self):
        """
        Very long header values, many Via values and a long display name
        parse (RFC 4475 3.1.1.5 longreq style).
        """
        longName = "I have a user name of " + "extreme " * 80 + "length"
        vias = ", ".join("SIP/2.0/TCP sip%d.example.com;branch=z9hG4bK%d"
                         % (i, i) for i in range(40))
        data = crlf(
            "MESSAGE sip:user@example.com SIP/2.0\n"
            'To: "%s" <sip:user@example.com>\n'
            "From: <sip:caller@example.net>;tag=12%s\n"
            "Call-ID: longreq.%s\n"
            "Via: %s\n"
            "CSeq: 1 MESSAGE\n"
            "X-Long: %s\n"
            "l: 0\n\n" % (longName, "3" * 500, "x" * 800, vias, "y" * 4000))
        m = parseMessage(data)
        self.assertEqual(parseNameAddr(m.headers.get("To")).display, longName)
        self.assertEqual(len(parseVia(m.headers.get("Via"))), 40)
        self.assertEqual(len(m.headers.get("X-Long")), 4000)

    def test_escapes(self):
        """
        Escaped characters in URIs parse (RFC 4475 esc01, escnull).
        """
        data = crlf(
            "OPTIONS sip:sips%3Auser%40example.com@example.net SIP/2.0\n"
            "To: sip:%75se%72@example.com\n"
            "From: <sip:I%20have%20spaces@example.net>;tag=938\n"
            "Max-Forwards: 87\n"
            "i: esc01.239409asdfakjkn23onasd0-3234\n"
            "CSeq: 234234 OPTIONS\n"
            "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw\n"
            "Contact:\n"
            "  <sip:cal%6Cer@host5.example.net;%6C%72;"
            "n%61me=v%61lue%25%34%31>\n"
            "l: 0\n\n")
        m = parseMessage(data)
        self.assertEqual(parseNameAddr(m.headers.get("To")).uri.user,
                         "%75se%72")
        self.assertEqual(m.headers.get("Contact"),
                         "<sip:cal%6Cer@host5.example.net;%6C%72;"
                         "n%61me=v%61lue%25%34%31>")

    def test_escapedMethod(self):
        """
        C{%} is a token character, so C{RE%47IST%45R} is a method name, not
        REGISTER (RFC 4475 esc02).
        """
        m = parseMessage(crlf("RE%47IST%45R sip:registrar.example.com "
                              "SIP/2.0\nCSeq: 1 RE%47IST%45R\nl: 0\n\n"))
        self.assertEqual(m.method, "RE%47IST%45R")

    def test_transports(self):
        """
        Via values with unusual transports and IPv6 sent-by parse (RFC 4475
        transports, ipv6 tests).
        """
        m = parseMessage(crlf(
            "OPTIONS sip:user@example.com SIP/2.0\n"
            "Via: SIP/2.0/SCTP t3.example.com;branch=z9hG4bKkdjuw2\n"
            "Via: SIP/2.0/TLS t2.example.com;branch=z9hG4bKkdjuw3\n"
            "Via: SIP/2.0/UNKNOWN t1.example.com;branch=z9hG4bKkdjuw4\n"
            "Via: SIP/2.0/UDP [2001:db8::9:1]:5070;received=[2001:db8::9:255]"
            ";branch=z9hG4bKas3-111\n\n"))
        vias = [parseVia(v)[0] for v in m.headers.getAll("Via")]
        self.assertEqual([v.transport for v in vias],
                         ["SCTP", "TLS", "UNKNOWN", "UDP"])
        self.assertEqual((vias[3].host, vias[3].port,
                          vias[3].param("received")),
                         ("[2001:db8::9:1]", 5070, "[2001:db8::9:255]"))


class ViaTests(unittest.TestCase):
    """
    Tests for L{Via}, L{parseVia} and L{topVia}.
    """

    def test_parse(self):
        """
        Transport, host, port and parameters are read.
        """
        [via] = parseVia("SIP/2.0/udp PC33.Atlanta.com:5066;branch=z9hG4bK"
                         "776asdhds;rport;received=192.0.2.1")
        self.assertEqual(via.transport, "UDP")
        self.assertEqual(via.host, "pc33.atlanta.com")
        self.assertEqual(via.port, 5066)
        self.assertEqual(via.branch, "z9hG4bK776asdhds")
        self.assertTrue(via.hasParam("rport"))
        self.assertIsNone(via.param("rport"))
        self.assertEqual(via.param("received"), "192.0.2.1")
        self.assertEqual(via.protocol, "SIP/2.0")
        self.assertEqual(via.sentBy, "pc33.atlanta.com:5066")

    def test_commaSeparated(self):
        """
        Comma-separated values are split, with LWS anywhere allowed.
        """
        vias = parseVia("SIP/2.0/UDP a.example;branch=z9hG4bK1 ,\tSIP / 2.0 /"
                        " TCP  b.example : 5070 ; branch = z9hG4bK2")
        self.assertEqual([(v.transport, v.host, v.port, v.branch)
                          for v in vias],
                         [("UDP", "a.example", None, "z9hG4bK1"),
                          ("TCP", "b.example", 5070, "z9hG4bK2")])

    def test_noBranch(self):
        """
        A Via without branch (RFC 2543 style) is accepted.
        """
        self.assertIsNone(parseVia("SIP/2.0/UDP 192.0.2.1")[0].branch)

    def test_str(self):
        """
        C{str} gives the canonical text.
        """
        via = Via("UDP", "192.0.2.1", 5060, (("branch", "z9hG4bKx"),
                                             ("rport", None)))
        self.assertEqual(str(via),
                         "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport")
        self.assertEqual(parseVia(str(via)), [via])
        self.assertEqual(str(Via("TLS", "[::1]")), "SIP/2.0/TLS [::1]")

    def test_withParam(self):
        """
        C{withParam} fills in C{rport} in place and appends C{received}.
        """
        via = parseVia("SIP/2.0/UDP h;rport;branch=z9hG4bKx")[0]
        via = via.withParam("rport", "5060").withParam("received", "10.0.0.1")
        self.assertEqual(str(via), "SIP/2.0/UDP h;rport=5060;branch=z9hG4bKx;"
                                   "received=10.0.0.1")

    def test_errors(self):
        """
        Malformed Via values raise L{SIPParseError} (RFC 4475 badinv01
        among them).
        """
        for value in ["SIP/2.0/UDP 192.0.2.15;;,;,,", "", "SIP/2.0/UDP",
                      "SIP/2.0 host", "SIP/2.0/UDP h:99999",
                      "SIP/2.0/UDP h:x", "SIP/2.0/UDP h;branch=a b",
                      "SIP/2.0/UDP a,", "SIP/2.0/UDP h;x=\"open",
                      "SIP/2.0/UDP h junk", "SIP/2.0/UDP \"h\""]:
            self.assertRaises(SIPParseError, parseVia, value)

    def test_topVia(self):
        """
        C{topVia} is the first value of the first Via line.
        """
        m = parseMessage(crlf(
            "OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/TCP first;branch=z9hG4bK1,"
            " SIP/2.0/UDP second\nVia: SIP/2.0/UDP third\n\n"))
        self.assertEqual(topVia(m).host, "first")
        self.assertRaises(SIPParseError, topVia,
                          Request("OPTIONS", "sip:a@b"))

    def test_viaCacheBounded(self):
        """
        Parsed Via lines are remembered, at most C{_VIA_CACHE_MAX} of them;
        a line that does not parse is not remembered and fails every time.
        """
        from xmppgw.sip import message
        for i in range(message._VIA_CACHE_MAX + 100):
            text = "SIP/2.0/UDP h%d;branch=z9hG4bK%d" % (i, i)
            self.assertEqual(parseVia(text)[0].host, "h%d" % (i,))
            self.assertLessEqual(len(message._viaCache),
                                 message._VIA_CACHE_MAX)
        self.assertIs(parseVia(text)[0], parseVia(text)[0])
        for _ in range(2):
            self.assertRaises(SIPParseError, parseVia, "SIP/2.0/UDP")
        self.assertNotIn("SIP/2.0/UDP", message._viaCache)


def _viaOutcome(value):
    """
    What L{_parseVia} gives for C{value}, or L{SIPParseError}.
    """
    try:
        return [(v, v.protocol) for v in messageModule._parseVia(value)]
    except SIPParseError:
        return SIPParseError


_VIA_CASES = [
    "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-5-7f18d0cc7380;rport",
    "SIP/2.0/udp PC33.Atlanta.com:5066;BRANCH=z9hG4bK776;rport;received=1.2.3.4",
    "sip/2.0/UDP h", "SIP/3.0/TLS h:1", "X-P/v1.1/SCTP h.example.:0",
    "SIP/2.0/UDP [2001:DB8::1]:5060;branch=z9hG4bKx",
    "SIP/2.0/UDP [::1];received=[::2]", "SIP/2.0/UDP h;received=2001:db8::1",
    "SIP/2.0/UDP h:65535", "SIP/2.0/UDP h:65536", "SIP/2.0/UDP h:05060",
    "SIP/2.0/UDP h:123456", "SIP/2.0/UDP h;a=", "SIP/2.0/UDP h;;a",
    "SIP/2.0/UDP h;a;", "SIP/2.0/UDP h; a", "SIP/2.0/UDP  h",
    "SIP/2.0/UDP h ;a", "SIP / 2.0 / UDP h", "SIP/2.0/UDP h,SIP/2.0/TCP g",
    "SIP/2.0/UDP h;x=\"a,b\"", "SIP/2.0/UDP -h", "SIP/2.0/UDP h-",
    "SIP/2.0/UDP _h_", "SIP/2.0/UDP h:", "SIP/2.0/UDP h:x", "SIP/2.0 h",
    "SIP/2.0/UDP h;a=b;a=c", "SIP/2.0/UDP h;a=b:c", "SIP/2.0/UDP h\t",
]


class ViaFastPathTests(unittest.TestCase):
    """
    L{_parseVia} reads a Via line of the usual shape (one value, no blanks
    but the one before the sent-by, token parameters) without its general
    rule; both read it alike.
    """

    def test_usualShapeDirect(self):
        """
        The usual shape is read without the general rule (which splits the
        line at commas with L{splitQuoted}).
        """
        def general(text, sep):
            raise AssertionError("general rule used")

        self.patch(messageModule, "splitQuoted", general)
        [via] = messageModule._parseVia(
            "SIP/2.0/udp Host.Example:5070;branch=z9hG4bK1;rport;X=Y")
        self.assertEqual(via, Via("UDP", "host.example", 5070,
                                  (("branch", "z9hG4bK1"), ("rport", None),
                                   ("x", "Y"))))
        self.assertEqual(via.protocol, "SIP/2.0")

    def assertSameAsGeneral(self, value):
        fast = _viaOutcome(value)
        self.patch(messageModule, "_SIMPLE_VIA_RE", re.compile(r"(?!)"))
        try:
            self.assertEqual(fast, _viaOutcome(value), value)
        finally:
            self.patch(messageModule, "_SIMPLE_VIA_RE",
                       re.compile(messageModule._SIMPLE_VIA_RE.pattern))

    def test_sameAsGeneral(self):
        """
        For a list of shapes, usual and not, the result (or the error) is
        the general rule's.
        """
        for value in _VIA_CASES:
            self.assertSameAsGeneral(value)

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(st.text(alphabet="SIPudp/2.0 :;=,[]\"\t-_9", max_size=40))
    def test_sameAsGeneralAnyText(self, value):
        """
        For any text, the result (or the error) is the general rule's.
        """
        self.assertSameAsGeneral(value)

    @settings(max_examples=200, derandomize=True, deadline=None)
    @given(st.sampled_from(["SIP/2.0/UDP ", "sip/2.0/tcp ", "A/b/c "]),
           st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,8}|\[[0-9a-f:.]{1,8}\]",
                         fullmatch=True),
           st.one_of(st.just(""), st.integers(0, 99999).map(":{}".format)),
           st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9.!%*_+`'~-]{1,6}",
                                            fullmatch=True),
                              st.one_of(st.none(), st.from_regex(
                                  r"[A-Za-z0-9.!%*_+`'~-]{0,6}",
                                  fullmatch=True))),
                    max_size=4))
    def test_sameAsGeneralUsualShapes(self, head, host, port, params):
        """
        For generated Via lines of the usual shape (and near it), the
        result (or the error) is the general rule's.
        """
        value = head + host + port + "".join(
            ";" + n if v is None else ";%s=%s" % (n, v) for n, v in params)
        self.assertSameAsGeneral(value)


class MakeResponseTests(unittest.TestCase):
    """
    Tests for L{makeResponse} and L{reasonPhrase}.
    """

    def setUp(self):
        self.request = parseMessage(crlf(
            "MESSAGE sip:bob@example.com SIP/2.0\n"
            "Via: SIP/2.0/UDP p1.example;branch=z9hG4bK1, SIP/2.0/UDP p2\n"
            "Via: SIP/2.0/UDP ua.example;branch=z9hG4bK3\n"
            "Max-Forwards: 69\n"
            "From: <sip:alice@example.org>;tag=abc\n"
            "To: Bob <sip:bob@example.com>\n"
            "Call-ID: cid@x\n"
            "CSeq: 7 MESSAGE\n"
            "Timestamp: 54\n"
            "Content-Type: text/plain\n"
            "l: 2\n\nhi"))

    def test_copies(self):
        """
        Via (all, in order), From, To, Call-ID and CSeq are copied, nothing
        else; a To-tag is added.
        """
        r = makeResponse(self.request, 202)
        self.assertEqual((r.code, r.reason), (202, "Accepted"))
        names = [name for name, _ in r.headers.items()]
        self.assertEqual(names, ["Via", "Via", "From", "To", "Call-ID",
                                 "CSeq"])
        self.assertEqual(r.headers.getAll("Via"),
                         self.request.headers.getAll("Via"))
        to = parseNameAddr(r.headers.get("To"))
        self.assertEqual(len(to.tag), 16)
        self.assertEqual(r.body, b"")
        self.assertIsNone(r.source)

    def test_toTagGiven(self):
        """
        The given C{toTag} is used.
        """
        r = makeResponse(self.request, 200, toTag="mytag")
        self.assertEqual(r.headers.get("To"),
                         "Bob <sip:bob@example.com>;tag=mytag")

    def test_freshTags(self):
        """
        Each response gets a fresh random tag.
        """
        tags = {parseNameAddr(makeResponse(self.request, 200)
                              .headers.get("To")).tag for _ in range(5)}
        self.assertEqual(len(tags), 5)

    def test_existingTagKept(self):
        """
        A To header that has a tag is left alone.
        """
        self.request.headers.set("To", "<sip:bob@example.com> ; TAG=x")
        r = makeResponse(self.request, 200, toTag="other")
        self.assertEqual(r.headers.get("To"), "<sip:bob@example.com> ; TAG=x")

    def test_unparseableTo(self):
        """
        A To header that does not parse still gets a tag, unless it seems
        to have one.
        """
        self.request.headers.set("To", '"open <sip:b@x>')
        r = makeResponse(self.request, 400, toTag="t")
        self.assertEqual(r.headers.get("To"), '"open <sip:b@x>;tag=t')
        self.request.headers.set("To", '"open <sip:b@x>;tag=u')
        r = makeResponse(self.request, 400, toTag="t")
        self.assertEqual(r.headers.get("To"), '"open <sip:b@x>;tag=u')

    def test_trying(self):
        """
        A 100 gets no To-tag and copies Timestamp.
        """
        r = makeResponse(self.request, 100)
        self.assertEqual(r.headers.get("To"), "Bob <sip:bob@example.com>")
        self.assertEqual(r.headers.get("Timestamp"), "54")
        self.assertNotIn("Timestamp", makeResponse(self.request, 200).headers)

    def test_reasonAndHeaders(self):
        """
        A given reason and extra headers are used.
        """
        r = makeResponse(self.request, 400, "Missing Call-ID Header",
                         headers=[("Allow", "MESSAGE"), ("Retry-After", "5")])
        self.assertEqual(r.reason, "Missing Call-ID Header")
        self.assertEqual(r.headers.getAll("Allow"), ["MESSAGE"])
        self.assertEqual(r.headers.items()[-1], ("Retry-After", "5"))
        r = makeResponse(self.request, 200, headers=Headers([("Allow", "X")]))
        self.assertEqual(r.headers.get("Allow"), "X")

    def test_serializes(self):
        """
        The response serialises and parses back.
        """
        r = parseMessage(serialize(makeResponse(self.request, 481)))
        self.assertEqual((r.code, r.reason),
                         (481, "Call/Transaction Does Not Exist"))
        self.assertEqual(r.headers.get("CSeq"), "7 MESSAGE")

    def test_reasonPhrases(self):
        """
        Every RFC 3261 code and the listed extension codes have a phrase.
        """
        rfc3261 = [100, 180, 181, 182, 183, 200, 300, 301, 302, 305, 380,
                   400, 401, 402, 403, 404, 405, 406, 407, 408, 410, 413, 414,
                   415, 416, 420, 421, 423, 480, 481, 482, 483, 484, 485, 486,
                   487, 488, 491, 493, 500, 501, 502, 503, 504, 505, 513, 600,
                   603, 604, 606]
        for code in rfc3261 + [202, 204, 429, 489, 430, 439, 440]:
            self.assertIn(code, REASON_PHRASES)
        self.assertEqual(reasonPhrase(513), "Message Too Large")
        self.assertEqual(reasonPhrase(202), "Accepted")
        self.assertEqual(reasonPhrase(416), "Unsupported URI Scheme")
        self.assertEqual(reasonPhrase(499), "Request Failure")
        self.assertEqual(reasonPhrase(299), "OK")
        self.assertEqual(makeResponse(self.request, 599).reason,
                         "Server Failure")


class StreamFramerTests(unittest.TestCase):
    """
    Tests for L{StreamFramer}, feeding whole chunks.
    """

    def feed(self, framer, data):
        """
        Feed C{data} to C{framer}; return the messages it gave back.
        """
        return framer.feed(data)

    def test_one(self):
        """
        One message comes out whole.
        """
        framer = StreamFramer(65535)
        self.assertEqual(self.feed(framer, MESSAGE), [MESSAGE])
        self.assertEqual(parseMessage(MESSAGE).body, BODY)

    def test_several(self):
        """
        Several messages, with keep-alives between, come out in order.
        """
        other = crlf("OPTIONS sip:a@b SIP/2.0\nl: 0\n\n")
        data = (b"\r\n\r\n" + MESSAGE + b"\r\n" + other + MESSAGE +
                b"\r\n\r\n")
        framer = StreamFramer(65535)
        self.assertEqual(self.feed(framer, data), [MESSAGE, other, MESSAGE])
        self.assertEqual(len(framer._buffer), 0)
        self.assertEqual(framer.pings, 2)

    def test_partial(self):
        """
        An incomplete message stays in the buffer until the rest arrives.
        """
        framer = StreamFramer(65535)
        self.assertEqual(self.feed(framer, MESSAGE[:-1]), [])
        self.assertEqual(self.feed(framer, MESSAGE[-1:] + MESSAGE[:10]),
                         [MESSAGE])
        self.assertEqual(self.feed(framer, MESSAGE[10:]), [MESSAGE])

    def test_compactContentLength(self):
        """
        The compact form C{l} and any case are understood.
        """
        msg = crlf("MESSAGE sip:a@b SIP/2.0\nL :  3\n\nabc")
        framer = StreamFramer(100)
        self.assertEqual(self.feed(framer, msg + msg), [msg, msg])

    def test_missingContentLength(self):
        """
        A message without Content-Length cannot be framed.
        """
        framer = StreamFramer(65535)
        exc = self.assertRaises(FramingError, self.feed, framer,
                                crlf("MESSAGE sip:a@b SIP/2.0\nTo: x\n\nabc"))
        self.assertIn("Content-Length", str(exc))

    def test_invalidContentLength(self):
        """
        A negative or non-numeric Content-Length cannot be framed.
        """
        for value in ["-1", "x", "99999999999", "\xff"]:
            framer = StreamFramer(65535)
            self.assertRaises(
                FramingError, self.feed, framer,
                b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: " +
                value.encode("latin-1") + b"\r\n\r\n")

    def test_oversizeMessage(self):
        """
        A Content-Length that makes the message exceed maxSize fails at
        once, without waiting for the body.
        """
        framer = StreamFramer(200)
        self.assertRaises(FramingError, self.feed, framer,
                          crlf("MESSAGE sip:a@b SIP/2.0\nl: 190\n\n"))

    def test_oversizeHeaders(self):
        """
        A header section that never ends fails once it exceeds maxSize, and
        the buffer never grows beyond maxSize plus one chunk.
        """
        framer = StreamFramer(100)
        data = b"MESSAGE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 30
        self.assertRaises(FramingError, self.feed, framer, data)
        self.assertEqual(len(framer._buffer), 0)

    def test_exactlyMaxSize(self):
        """
        A message of exactly maxSize bytes is accepted.
        """
        framer = StreamFramer(len(MESSAGE))
        self.assertEqual(self.feed(framer, MESSAGE), [MESSAGE])

    def test_unusableAfterError(self):
        """
        After a framing error, further data is refused.
        """
        framer = StreamFramer(65535)
        self.assertRaises(FramingError, self.feed, framer,
                          crlf("MESSAGE sip:a@b SIP/2.0\n\n"))
        self.assertRaises(FramingError, framer.feed, MESSAGE)

    def test_bodyLooksLikeHeaders(self):
        """
        A body that contains a blank line and a start line is not split.
        """
        body = b"SIP/2.0 200 OK\r\n\r\nl: 5\r\n\r\n"
        msg = crlf("MESSAGE sip:a@b SIP/2.0\nl: %d\n\n" % (len(body),)) + body
        framer = StreamFramer(65535)
        self.assertEqual(self.feed(framer, msg + MESSAGE), [msg, MESSAGE])
        self.assertEqual(parseMessage(msg).body, body)

    def test_bufferBounded(self):
        """
        After each feed the buffer holds at most maxSize bytes.
        """
        framer = StreamFramer(len(MESSAGE) + 10)
        data = MESSAGE * 5
        for i in range(0, len(data), 37):
            self.feed(framer, data[i:i + 37])
            self.assertLessEqual(len(framer._buffer), framer.maxSize)


class StreamFramerByteAtATimeTests(StreamFramerTests):
    """
    The L{StreamFramer} tests again, feeding one byte at a time, which
    splits every multi-byte UTF-8 character of the body and every CRLF.
    """

    def feed(self, framer, data):
        """
        Feed C{data} one byte at a time.
        """
        out = []
        for i in range(len(data)):
            out.extend(framer.feed(data[i:i + 1]))
        return out

    def test_splitAtEveryPoint(self):
        """
        Two chunks split at any point give the message back.
        """
        cut = MESSAGE.index(BODY) + 2
        self.assertEqual(MESSAGE[cut - 1:cut], b"\xc3")
        for i in range(1, len(MESSAGE)):
            framer = StreamFramer(65535)
            got = framer.feed(MESSAGE[:i]) + framer.feed(MESSAGE[i:])
            self.assertEqual(got, [MESSAGE])


class FuzzTests(unittest.TestCase):
    """
    Property tests: arbitrary input never breaks the parser or the framer.
    """

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(st.binary(max_size=600))
    def test_parseArbitraryBytes(self, data):
        """
        Arbitrary bytes either parse or raise L{SIPParseError}.
        """
        try:
            parseMessage(data)
        except SIPParseError as e:
            self.assertIn(e.code, (400, 505))

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(st.integers(0, len(MESSAGE) - 1), st.binary(min_size=1,
                                                       max_size=8))
    def test_parseMutated(self, position, junk):
        """
        A valid message with bytes inserted anywhere parses or raises
        L{SIPParseError}; when it parses, serialising it gives a message
        that parses again.
        """
        data = MESSAGE[:position] + junk + MESSAGE[position:]
        try:
            message = parseMessage(data)
        except SIPParseError:
            return
        try:
            parseMessage(serialize(message))
        except SIPParseError:
            # Only an unparseable echo of undecodable bytes may fail.
            self.assertTrue(any(b >= 0x80 for b in junk))

    @settings(max_examples=200, derandomize=True, deadline=None)
    @given(st.lists(st.integers(1, 60), min_size=1, max_size=40))
    def test_framerRandomSplits(self, sizes):
        """
        Three messages fed in chunks of random sizes come out whole.
        """
        data = MESSAGE + b"\r\n\r\n" + MESSAGE + MESSAGE
        framer = StreamFramer(1000)
        out = []
        i = 0
        for size in sizes * (len(data) // sum(sizes) + 1):
            if i >= len(data):
                break
            out.extend(framer.feed(data[i:i + size]))
            i += size
        self.assertEqual(out, [MESSAGE] * 3)

    @settings(max_examples=200, derandomize=True, deadline=None)
    @given(st.binary(max_size=300))
    def test_framerArbitraryBytes(self, data):
        """
        Arbitrary bytes give messages or L{FramingError}, and the buffer
        stays within maxSize.
        """
        framer = StreamFramer(200)
        try:
            framer.feed(data)
        except FramingError:
            return
        self.assertLessEqual(len(framer._buffer), 200)


def _parseOutcome(data):
    """
    Everything L{parseMessage} gives for C{data}: the message's parts, or
    the error's reason, code and partial request's parts.
    """
    def parts(message):
        if message is None:
            return None
        if message.isRequest:
            start = (message.method, message.uri)
        else:
            start = (message.code, message.reason)
        return (message.isRequest, start, message.headers.items(), message.body)
    try:
        return parts(parseMessage(data))
    except SIPParseError as e:
        return ("error", e.reason, e.code, parts(e.request))


def _clearLineCaches():
    messageModule._startLines.clear()
    messageModule._headerLines.clear()


_LINE_CASES = [
    MESSAGE,
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 MESSAGE\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nCSeq: 1 MESSAGE\r\n Folded\r\nContent-Length: 0\r\n\r\n",
    b"MESSAGE sip:a@b SIP/2.0\r\nCSeq: 1 MESSAGE\r\n\tmore\r\nl: 0\r\n\r\n",
    b"MESSAGE sip:a@b SIP/2.0\nCSeq: 1 MESSAGE\nMax-Forwards: 70\nl: 0\n\n",
    b"MESSAGE sip:a@b SIP/2.0\r\nCSeq: 1 MESSAGE\nMax-Forwards: 70\r\n\r\n",
    b"MESSAGE sip:a@b SIP/3.0\r\nCSeq: 1 MESSAGE\r\n\r\n",
    b"MESSAGE sip:a@b SIP/2.0\r\nCSeq : 1 MESSAGE\r\nBad Name: x\r\n\r\n",
    b"MESSAGE sip:a@b SIP/2.0\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: \xff\r\n\r\n",
    b"sip/2.0 404 Not Here\r\nCSeq: 1 MESSAGE\r\nContent-Length: 2\r\n\r\nabc",
    b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 9\r\n\r\nabc",
    b"MESSAGE  sip:a@b SIP/2.0\r\nCSeq: 1 MESSAGE\r\n\r\n",
]


class LineCacheTests(unittest.TestCase):
    """
    L{parseMessage} keeps the start lines and usual header lines it has
    read (bounded); a message read from them is the one read without them.
    """

    def setUp(self):
        _clearLineCaches()
        self.addCleanup(_clearLineCaches)

    def assertSameAsFresh(self, data):
        _clearLineCaches()
        fresh = _parseOutcome(data)
        self.assertEqual(_parseOutcome(data), fresh, data)
        # And after other messages filled the caches.
        for other in _LINE_CASES:
            _parseOutcome(other)
        self.assertEqual(_parseOutcome(data), fresh, data)

    def test_sameAsFresh(self):
        """
        Messages of many shapes, valid or not, read again from the caches,
        are read as the first time.
        """
        for data in _LINE_CASES:
            self.assertSameAsFresh(data)

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(st.integers(0, len(MESSAGE) - 1), st.binary(min_size=1, max_size=8))
    def test_sameAsFreshMutated(self, position, junk):
        """
        A valid message with bytes inserted anywhere is read the same from
        the caches as without them.
        """
        self.assertSameAsFresh(MESSAGE[:position] + junk + MESSAGE[position:])

    def test_linesKept(self):
        """
        The start line and the usual lines are kept, except those of Via,
        Call-ID and From (nearly always new); a header line read from the
        cache is the same object as the first time.
        """
        first = parseMessage(MESSAGE)
        self.assertIn(MESSAGE.split(b"\r\n")[0].decode(), messageModule._startLines)
        kept = {name for name, _ in messageModule._headerLines.values()}
        self.assertNotIn("Via", kept)
        self.assertNotIn("Call-ID", kept)
        self.assertNotIn("From", kept)
        self.assertIn("CSeq", kept)
        second = parseMessage(MESSAGE)
        for a, b in zip(first.headers._items, second.headers._items):
            if a[0] in kept:
                self.assertIs(a, b)

    def test_errorStartLineNotKept(self):
        """
        A start line with an error is not kept: the error comes again.
        """
        data = b"MESSAGE sip:a@b SIP/3.0\r\nCSeq: 1 MESSAGE\r\n\r\n"
        for _ in range(2):
            self.assertRaises(SIPParseError, parseMessage, data)
        self.assertEqual(messageModule._startLines, {})

    def test_longLinesNotKept(self):
        """
        Lines longer than C{_LINE_KEPT_MAX} are not kept (the caches hold
        a bounded number of bytes); the message is read the same.
        """
        long = "x" * messageModule._LINE_KEPT_MAX
        data = (b"MESSAGE sip:%s@b SIP/2.0\r\nSubject: %s\r\nSubject: short\r\n"
                b"Content-Length: 0\r\n\r\n" % (long.encode(), long.encode()))
        self.assertSameAsFresh(data)
        _clearLineCaches()
        parseMessage(data)
        self.assertEqual(list(messageModule._startLines), [])
        self.assertEqual(sorted(messageModule._headerLines),
                         ["Content-Length: 0", "Subject: short"])

    def test_longNamesAndViasNotKept(self):
        """
        Header names and Via lines longer than C{_LINE_KEPT_MAX} are read
        as any other and not kept by the name and Via caches either (the
        rule of L{xmppgw.memo.MAX_KEPT_LENGTH}); those of that length are.
        """
        limit = messageModule._LINE_KEPT_MAX
        self.assertEqual(memoModule.MAX_KEPT_LENGTH, limit)
        # Empty caches (others' tests may have filled the name caches,
        # which stop keeping names once full).
        self.patch(messageModule, "_canonCache", messageModule._CanonicalNames())
        self.patch(messageModule, "_nameCache", {})
        longName = "X-" + "a" * (limit - 1)
        longVia = "SIP/2.0/UDP h.example;branch=z9hG4bK" + "b" * limit
        data = ("MESSAGE sip:a@b SIP/2.0\r\nVia: %s\r\n%s: 1\r\n"
                "Content-Length: 0\r\n\r\n" % (longVia, longName)).encode()
        message = parseMessage(data)
        self.assertEqual("1", message.headers.get(longName))
        self.assertEqual(longVia, message.headers.get("Via"))
        self.assertEqual("h.example", messageModule._parsedVias(longVia)[0].host)
        self.assertNotIn(longName, messageModule._nameCache)
        self.assertNotIn(longName, messageModule._canonCache)
        self.assertNotIn(longVia, messageModule._viaCache)
        messageModule.canonicalName(longName[:limit])
        self.assertIn(longName[:limit], messageModule._canonCache)

    def test_bounded(self):
        """
        Both caches are bounded.
        """
        self.patch(messageModule, "_START_LINES_MAX", 10)
        self.patch(messageModule, "_HEADER_LINES_MAX", 10)
        for i in range(40):
            parseMessage(b"MESSAGE sip:u%d@b SIP/2.0\r\nCSeq: %d MESSAGE\r\n"
                         b"Max-Forwards: %d\r\n\r\n" % (i, i, i))
            self.assertLessEqual(len(messageModule._startLines), 10)
            self.assertLessEqual(len(messageModule._headerLines), 10)


class HeadScanTests(unittest.TestCase):
    """
    L{parseMessage} reads the same message whether it finds the lines of
    the header section with L{messageModule._crlfHead} (PyPy) or by its
    general rule (CPython).
    """

    def bothWays(self, data):
        """
        C{_parseOutcome(data)} both ways, with empty line caches.
        """
        outcomes = []
        for scan in (False, True):
            self.patch(messageModule, "SCAN_HEAD_BY_LINE", scan)
            _clearLineCaches()
            outcomes.append(_parseOutcome(data))
        _clearLineCaches()
        return outcomes

    def assertSameBothWays(self, data):
        general, scanned = self.bothWays(data)
        self.assertEqual(general, scanned, data)

    def test_choice(self):
        """
        PyPy scans for each LF, CPython searches and splits.
        """
        import platform
        self.assertEqual(platform.python_implementation() == "PyPy",
                         messageModule.SCAN_HEAD_BY_LINE)

    def test_shapes(self):
        """
        Messages whose lines end in CRLF, bare LF or a mix, with and
        without an empty line or a body, ASCII or not, valid or not.
        """
        cases = list(_LINE_CASES) + [
            MESSAGE.replace(b"\r\n", b"\n"),
            MESSAGE.replace(b"\r\n", b"\n", 2),
            MESSAGE.replace(b"\r\n\r\n", b"\r\n\n"),
            MESSAGE.replace(b"\r\n\r\n", b"\n\r\n"),
            MESSAGE.replace(b"\r\n\r\n", b"\r\n"),
            MESSAGE.split(b"\r\n\r\n")[0],
            MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n",
            MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r",
            MESSAGE.replace(b"CSeq", b"X-\xc3\xa9: \xe2\x98\x83\r\nCSeq"),
            MESSAGE.replace(b"CSeq", b"X-A: \xff\xfe\r\nCSeq"),
            MESSAGE.replace(b"CSeq", b"X-A: a\rb\r\nCSeq"),
            MESSAGE.replace(b"CSeq", b"X-A: a\r\r\nCSeq"),
            b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n\n\n\r\n",
            b"SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\r\nbody\r\n\r\nmore",
            b"SIP/2.0 200 OK\n\r\nbody",
            b"SIP/2.0 200 OK",
            b"SIP/2.0 200 OK\r",
            b"SIP/2.0 200 OK\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            b"x\r\n",
        ]
        for data in cases:
            self.assertSameBothWays(data)

    def test_scanned(self):
        """
        L{messageModule._crlfHead} reads the lines of a header section
        whose lines all end in CRLF, and leaves any other to the general
        rule.
        """
        head = messageModule._crlfHead
        self.assertEqual((["A", "B: c"], 11), head(b"A\r\nB: c\r\n\r\nbody"))
        self.assertEqual((["A", "B: c", ""], None), head(b"A\r\nB: c\r\n"))
        self.assertEqual((["A", "\u00e9"], None), head(b"A\r\n\xc3\xa9"))
        for data in (b"A\nB\r\n\r\n", b"A\r\nB\n\r\n",
                     b"A\r\n\n", b"A\r\n\xff\r\n\r\n"):
            self.assertIsNone(head(data), data)

    @settings(max_examples=400, derandomize=True, deadline=None)
    @given(st.lists(st.sampled_from([
        b"\r\n", b"\r", b"\n", b"\r\n\r\n", b"X: y", b" ", b"\xc3\xa9",
        b"\xff", b"Content-Length: 3", b"abc", b"CSeq: 1 MESSAGE", b":"]),
        max_size=20))
    def test_sameBothWays(self, pieces):
        """
        A status line followed by pieces that end lines in every way reads
        the same both ways.
        """
        self.assertSameBothWays(b"SIP/2.0 200 OK\r\n" + b"".join(pieces))

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(st.integers(0, len(MESSAGE) - 1),
           st.binary(min_size=1, max_size=8))
    def test_sameBothWaysMutated(self, position, junk):
        """
        A valid message with bytes inserted anywhere reads the same both
        ways.
        """
        self.assertSameBothWays(MESSAGE[:position] + junk + MESSAGE[position:])


class PathologicalViaTests(unittest.TestCase):
    """
    Via values that made a regular expression backtrack without bound
    (see C{tests.test_sip_uri.PathologicalInputTests}).
    """

    def test_blanksAfterSentBy(self):
        """
        A long run of blanks after the sent-by and a bad character is
        refused.
        """
        self.assertRaises(
            SIPParseError, parseVia, "SIP/2.0/UDP h" + " " * 200000 + "#")
        self.assertRaises(
            SIPParseError, parseVia,
            "SIP/2.0/UDP h;branch=" + " " * 200000 + "#")
