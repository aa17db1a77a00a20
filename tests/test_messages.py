"""
Tests for L{xmppgw.messages}: SIP MESSAGE <-> XMPP C{<message/>} mapping.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest
from twisted.words.xish import domish

from xmppgw import messages
from xmppgw.addressing import AddressError, AddressMapper
from xmppgw.messages import (
    MappingError,
    NoBody,
    ErrorStanza,
    NotRelayed,
    OutgoingMessage,
    StanzaMappingError,
    buildSIPRequest,
    decodeText,
    sipToStanza,
    stanzaToSIP,
)
from xmppgw.sip.message import Headers, Request, parseMessage, serialize
from xmppgw.sip.uri import parseNameAddr

from tests.test_errors import parseStanza

NS_XML = "http://www.w3.org/XML/1998/namespace"


class FakeMapper:
    """
    A table-driven stand-in for L{xmppgw.addressing.AddressMapper}: it maps
    exactly the addresses in its tables, records what it was asked, and
    raises L{AddressError} for anything else.
    """

    def __init__(self):
        self.calls = []
        self.sipTargets = {"sip:romeo@gw.example": "romeo@xmpp.example"}
        self.sipSenders = {
            "sip:juliet@sip.example": "juliet*sip.example@gw.example",
            "sip:juliet@sip.example;gr=balcony": (
                "juliet*sip.example@gw.example/balcony"
            ),
        }
        self.jidTargets = {
            "juliet*sip.example@gw.example": "sip:juliet@sip.example",
        }
        self.jidSenders = {
            "romeo@xmpp.example": "sip:romeo*xmpp.example@gw.example",
            "romeo@xmpp.example/orchard": (
                "sip:romeo*xmpp.example@gw.example;gr=orchard"
            ),
        }

    def _look(self, table, name, value):
        self.calls.append((name, value))
        try:
            return table[value]
        except KeyError:
            raise AddressError(f"cannot map {value}")

    def sipTargetToJID(self, uri):
        return self._look(self.sipTargets, "sipTargetToJID", uri)

    def sipSenderToJID(self, uri):
        return self._look(self.sipSenders, "sipSenderToJID", uri)

    def jidTargetToSIP(self, jid):
        return self._look(self.jidTargets, "jidTargetToSIP", jid)

    def jidSenderToSIP(self, jid):
        return self._look(self.jidSenders, "jidSenderToSIP", jid)


def makeRequest(
    body="hello",
    contentType="text/plain",
    uri="sip:romeo@gw.example",
    sender="<sip:juliet@sip.example>;tag=49583",
    to="<sip:romeo@gw.example>",
    callID="asd88asd77a@1.2.3.4",
    extra=(),
):
    """
    A MESSAGE request as the SIP layer would hand it over.

    @param body: text (encoded as UTF-8) or bytes.
    @param contentType: the Content-Type, or L{None} for none.
    @param extra: more C{(name, value)} header pairs.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = [("Via", "SIP/2.0/TCP 1.2.3.4;branch=z9hG4bK776sgdkse")]
    headers.append(("Max-Forwards", "70"))
    if sender is not None:
        headers.append(("From", sender))
    if to is not None:
        headers.append(("To", to))
    if callID is not None:
        headers.append(("Call-ID", callID))
    headers.append(("CSeq", "1 MESSAGE"))
    if contentType is not None:
        headers.append(("Content-Type", contentType))
    headers.extend(extra)
    return Request("MESSAGE", uri, Headers(headers), body)


def makeStanza(body="hello", to="juliet*sip.example@gw.example",
               sender="romeo@xmpp.example/orchard", lang=None, **attributes):
    """
    A C{<message/>} as the XMPP side would hand it over (no namespace).
    """
    message = domish.Element((None, "message"))
    if to is not None:
        message["to"] = to
    if sender is not None:
        message["from"] = sender
    if lang is not None:
        message[(NS_XML, "lang")] = lang
    for name, value in attributes.items():
        message[name] = value
    if body is not None:
        message.addElement("body", content=body)
    return message


class SIPToStanzaTests(unittest.TestCase):
    """
    Tests for L{sipToStanza}.
    """

    def setUp(self):
        self.mapper = FakeMapper()

    def map(self, request, messageID="gw-1"):
        return sipToStanza(request, self.mapper, messageID)

    def assertRefused(self, request, code, reason=None):
        """
        Assert that mapping C{request} raises L{MappingError} with C{code}
        (and C{reason}); return the error.
        """
        error = self.assertRaises(MappingError, self.map, request)
        self.assertEqual(code, error.code, error.reason)
        if reason is not None:
            self.assertEqual(reason, error.reason)
        return error

    def test_basic(self):
        """
        A text/plain MESSAGE becomes a C{<message/>} without a namespace or a
        type, with to/from mapped, the given id, the body, and the Call-ID
        as thread (RFC 7572 Table 2).
        """
        stanza = self.map(makeRequest())
        self.assertEqual(
            "<message to='romeo@xmpp.example' "
            "from='juliet*sip.example@gw.example' id='gw-1'>"
            "<body>hello</body><thread>asd88asd77a@1.2.3.4</thread></message>",
            stanza.toXml(),
        )
        self.assertIsNone(stanza.getAttribute("type"))

    def test_mapperArguments(self):
        """
        The mapper gets the Request-URI and the From URI without header
        parameters (the tag).
        """
        self.map(makeRequest())
        self.assertEqual(
            [
                ("sipTargetToJID", "sip:romeo@gw.example"),
                ("sipSenderToJID", "sip:juliet@sip.example"),
            ],
            self.mapper.calls,
        )

    def test_bareFromHeader(self):
        """
        A From header in the bare addr-spec form works too; its parameters
        belong to the header.
        """
        stanza = self.map(makeRequest(sender="sip:juliet@sip.example;tag=1"))
        self.assertEqual("juliet*sip.example@gw.example", stanza["from"])

    def test_gruu(self):
        """
        A From URI with a public GRUU is handed to the mapper with its
        C{gr} parameter, which makes the resource.
        """
        stanza = self.map(
            makeRequest(sender='"J" <sip:juliet@sip.example;gr=balcony>;tag=9')
        )
        self.assertEqual("juliet*sip.example@gw.example/balcony", stanza["from"])

    def test_messageIDText(self):
        """
        A non-text message id is converted to text.
        """
        stanza = self.map(makeRequest(), messageID=42)
        self.assertEqual("42", stanza["id"])

    def test_subject(self):
        """
        Subject becomes C{<subject/>}.
        """
        stanza = self.map(makeRequest(extra=[("Subject", "Tonight")]))
        self.assertEqual("Tonight", str(stanza.subject))

    def test_emptySubject(self):
        """
        An empty Subject makes no C{<subject/>}.
        """
        stanza = self.map(makeRequest(extra=[("Subject", "  ")]))
        self.assertIsNone(stanza.subject)

    def test_subjectIllegalCharacters(self):
        """
        A Subject with characters XML forbids is refused with 400.
        """
        for subject in ("a\x01b", "a\udcffb"):
            self.assertRefused(
                makeRequest(extra=[("Subject", subject)]),
                400,
                "Subject contains characters not allowed in XMPP",
            )

    def test_noCallID(self):
        """
        Without a Call-ID there is no thread.
        """
        stanza = self.map(makeRequest(callID=None))
        self.assertIsNone(stanza.thread)

    def test_language(self):
        """
        The first Content-Language tag becomes the stanza's xml:lang.
        """
        stanza = self.map(makeRequest(extra=[("Content-Language", "fr-CA, en")]))
        self.assertEqual("fr-CA", stanza[(NS_XML, "lang")])
        self.assertIn("xml:lang='fr-CA'", stanza.toXml())

    def test_invalidLanguage(self):
        """
        A Content-Language that is not a language tag is ignored; the
        message is still relayed.
        """
        stanza = self.map(makeRequest(extra=[("Content-Language", "'><x")]))
        self.assertFalse(stanza.hasAttribute((NS_XML, "lang")))
        self.assertEqual("hello", str(stanza.body))

    def test_xmlSpecialsAndEmoji(self):
        """
        XML specials and astral characters survive serialisation and
        parsing unchanged.
        """
        text = "<b> & 'q' \"d\" \U0001F600\ttab\r\nline"
        stanza = self.map(makeRequest(body=text, extra=[("Subject", "<&>")]))
        xml = stanza.toXml()
        self.assertIn("&lt;b&gt; &amp;", xml)
        parsed = parseStanza(xml)
        self.assertEqual("<&>", str(parsed.subject))
        # An XML parser normalises CR LF to LF (XML 1.0 section 2.11).
        self.assertEqual(text.replace("\r\n", "\n"), str(parsed.body))

    def test_defaultCharset(self):
        """
        text/plain without a charset is UTF-8.
        """
        stanza = self.map(makeRequest(body="h\u00e9llo \u4e16\u754c"))
        self.assertEqual("h\u00e9llo \u4e16\u754c", str(stanza.body))

    def test_latin1(self):
        """
        An ISO-8859-1 body (quoted or not, any case) is converted.
        """
        for contentType in (
            "text/plain; charset=iso-8859-1",
            'TEXT/Plain;Charset="ISO-8859-1"',
        ):
            stanza = self.map(
                makeRequest(
                    body="h\u00e9llo".encode("iso-8859-1"), contentType=contentType
                )
            )
            self.assertEqual("h\u00e9llo", str(stanza.body))

    def test_utf16WithBOM(self):
        """
        A UTF-16 body with a byte order mark is converted, in either byte
        order, and the mark is dropped.
        """
        text = "h\u00e9llo \U0001F600"
        for data in (
            text.encode("utf-16"),
            b"\xff\xfe" + text.encode("utf-16-le"),
            b"\xfe\xff" + text.encode("utf-16-be"),
        ):
            stanza = self.map(
                makeRequest(body=data, contentType="text/plain;charset=UTF-16")
            )
            self.assertEqual(text, str(stanza.body))

    def test_utf16WithoutBOM(self):
        """
        UTF-16 without a byte order mark is big-endian (RFC 2781).
        """
        stanza = self.map(
            makeRequest(
                body="hi".encode("utf-16-be"), contentType="text/plain;charset=utf-16"
            )
        )
        self.assertEqual("hi", str(stanza.body))

    def test_utf8BOM(self):
        """
        A leading UTF-8 byte order mark is dropped.
        """
        stanza = self.map(makeRequest(body=b"\xef\xbb\xbfhi"))
        self.assertEqual("hi", str(stanza.body))

    def test_unknownCharset(self):
        """
        An unknown charset is refused with 415 and Accept.
        """
        error = self.assertRefused(
            makeRequest(contentType="text/plain;charset=x-bogus-42"),
            415,
            "Unsupported charset x-bogus-42",
        )
        self.assertEqual([("Accept", "text/plain, message/cpim")], list(error.headers))

    def test_unsafeCodecs(self):
        """
        Python codecs that are not charsets (escape decoders, bytes-to-bytes
        codecs) are refused with 415.
        """
        for charset in ("unicode_escape", "raw-unicode-escape", "base64", "rot13",
                        "idna", "punycode", "undefined"):
            self.assertRefused(
                makeRequest(body=b"\\x41", contentType=f"text/plain;charset={charset}"),
                415,
            )

    def test_undecodable(self):
        """
        Bytes that are not valid in the charset are refused with 400.
        """
        self.assertRefused(makeRequest(body=b"caf\xe9"), 400, "Body is not valid utf-8")
        self.assertRefused(
            makeRequest(body=b"\x00", contentType="text/plain;charset=utf-16be"),
            400,
            "Body is not valid utf-16be",
        )

    def test_illegalXMLCharacters(self):
        """
        Characters XML 1.0 forbids are refused with 400; TAB, CR and LF are
        fine.
        """
        for text in ("a\x00b", "a\x01b", "a\x0bb", "a\x1fb", "a\ufffeb", "a\uffffb"):
            self.assertRefused(
                makeRequest(body=text.encode("utf-8")),
                400,
                "Body contains characters not allowed in XMPP",
            )
        stanza = self.map(makeRequest(body="a\tb\rc\nd"))
        self.assertEqual("a\tb\rc\nd", str(stanza.body))

    def test_loneSurrogate(self):
        """
        A lone surrogate (e.g. from an ill-formed UTF-16 body) is refused.
        """
        self.assertRefused(
            makeRequest(body=b"\xd8\x00\x00a", contentType="text/plain;charset=utf-16be"),
            400,
        )

    def test_otherMediaTypes(self):
        """
        Types other than text/plain and message/cpim get 415 with Accept.
        """
        for contentType in ("text/html", "application/im-iscomposing+xml",
                            "multipart/mixed;boundary=x", "message/imdn+xml"):
            error = self.assertRefused(makeRequest(contentType=contentType), 415)
            self.assertIn(("Accept", "text/plain, message/cpim"), error.headers)

    def test_missingContentType(self):
        """
        A body without Content-Type is refused with 400 (RFC 3261 section
        7.4.1).
        """
        self.assertRefused(makeRequest(contentType=None), 400)

    def test_malformedContentType(self):
        """
        A Content-Type that is not a media type is refused with 400.
        """
        for contentType in ("text", "text/plain; charset", 'text/plain;charset="x',
                            "/plain", "text/plain junk"):
            self.assertRefused(makeRequest(contentType=contentType), 400)

    def test_emptyBody(self):
        """
        A MESSAGE without a body is refused with 400, with or without a
        Content-Type.
        """
        self.assertRefused(makeRequest(body=b""), 400, "Message body is empty")
        self.assertRefused(
            makeRequest(body=b"", contentType=None), 400, "Message body is empty"
        )
        self.assertRefused(makeRequest(body=b"\xef\xbb\xbf"), 400, "Message body is empty")

    def test_whitespaceBody(self):
        """
        A body of only white space is content and is relayed.
        """
        self.assertEqual(" ", str(self.map(makeRequest(body=" ")).body))

    def test_contentEncoding(self):
        """
        A Content-Encoding other than identity gets 415 with
        Accept-Encoding: identity; identity is accepted.
        """
        error = self.assertRefused(
            makeRequest(extra=[("Content-Encoding", "gzip")]),
            415,
            "Unsupported Content-Encoding gzip",
        )
        self.assertEqual([("Accept-Encoding", "identity")], list(error.headers))
        self.assertRefused(
            makeRequest(extra=[("Content-Encoding", "identity, deflate")]), 415
        )
        stanza = self.map(makeRequest(extra=[("Content-Encoding", "Identity")]))
        self.assertEqual("hello", str(stanza.body))

    def test_telURI(self):
        """
        A tel: Request-URI gets 416.
        """
        self.assertRefused(
            makeRequest(uri="tel:+15551234567"), 416, "Unsupported URI Scheme"
        )
        self.assertEqual([], self.mapper.calls)

    def test_sipsURI(self):
        """
        A SIPS Request-URI is never forwarded (RFC 7247 section 8): 416.
        """
        self.assertRefused(
            makeRequest(uri="sips:romeo@gw.example"),
            416,
            "SIPS Not Relayed to XMPP",
        )
        self.assertEqual([], self.mapper.calls)

    def test_sipsTo(self):
        """
        A SIPS To header is never forwarded either: 416.
        """
        self.assertRefused(
            makeRequest(to="<sips:romeo@gw.example>"), 416, "SIPS Not Relayed to XMPP"
        )
        self.assertEqual([], self.mapper.calls)

    def test_malformedRequestURI(self):
        """
        A Request-URI that does not parse gets 400.
        """
        self.assertRefused(makeRequest(uri="nonsense"), 400)

    def test_unmappableTarget(self):
        """
        A Request-URI the mapper refuses gets 404 with the mapper's reason.
        """
        self.assertRefused(
            makeRequest(uri="sip:nobody@gw.example"),
            404,
            "cannot map sip:nobody@gw.example",
        )

    def test_unmappableSender(self):
        """
        A From URI the mapper refuses gets 403 with the mapper's reason.
        """
        self.assertRefused(
            makeRequest(sender="<sip:mallory@evil.example>;tag=1"),
            403,
            "cannot map sip:mallory@evil.example",
        )

    def test_missingOrMalformedFrom(self):
        """
        A missing or unparseable From header gets 400.
        """
        self.assertRefused(makeRequest(sender=None), 400, "Missing From header")
        self.assertRefused(makeRequest(sender="<sip:juliet@sip.example"), 400)

    def test_missingTo(self):
        """
        A missing To header gets 400.
        """
        self.assertRefused(makeRequest(to=None), 400, "Missing To header")

    def test_addressBeforeContent(self):
        """
        Address problems are reported before content problems.
        """
        self.assertRefused(
            makeRequest(uri="sip:nobody@gw.example", contentType="text/html"), 404
        )


def cpim(content, mime="Content-Type: text/plain", eol="\r\n", cpimHeaders=None):
    """
    A message/cpim body (RFC 3862).
    """
    if cpimHeaders is None:
        cpimHeaders = [
            "From: MR SANDERS <im:piglet@100akerwood.com>",
            "To: Depressed Donkey <im:eeyore@100akerwood.com>",
            "DateTime: 2000-12-13T13:40:00-08:00",
            "Subject: the weather will be fine today",
        ]
    head = eol.join(cpimHeaders) + eol + eol
    if mime:
        head += mime.replace("\n", eol) + eol
    head += eol
    if isinstance(content, str):
        content = content.encode("utf-8")
    return head.encode("utf-8") + content


class CPIMTests(unittest.TestCase):
    """
    Tests for message/cpim bodies in L{sipToStanza}.
    """

    def setUp(self):
        self.mapper = FakeMapper()

    def map(self, body, contentType="message/cpim", extra=()):
        return sipToStanza(
            makeRequest(body=body, contentType=contentType, extra=extra),
            self.mapper,
            "m",
        )

    def test_unwrap(self):
        """
        The text/plain content of a CPIM body becomes the body.
        """
        stanza = self.map(cpim("Here is the text of my message.\r\n"))
        self.assertEqual("Here is the text of my message.\r\n", str(stanza.body))

    def test_lineFeeds(self):
        """
        Bare LF line ends are tolerated.
        """
        stanza = self.map(cpim("hi", eol="\n"))
        self.assertEqual("hi", str(stanza.body))

    def test_innerCharset(self):
        """
        The inner Content-Type's charset decodes the content.
        """
        stanza = self.map(
            cpim("h\u00e9".encode("iso-8859-1"),
                 mime="Content-Type: text/plain; charset=ISO-8859-1")
        )
        self.assertEqual("h\u00e9", str(stanza.body))

    def test_innerLanguage(self):
        """
        An inner Content-Language is preferred to the SIP one.
        """
        stanza = self.map(
            cpim("salut", mime="Content-Type: text/plain\nContent-Language: fr"),
            extra=[("Content-Language", "en")],
        )
        self.assertEqual("fr", stanza[(NS_XML, "lang")])

    def test_noMIMEHeaders(self):
        """
        Without a Content-Type in the MIME headers the content is text/plain.
        """
        stanza = self.map(cpim("hi", mime=None))
        self.assertEqual("hi", str(stanza.body))

    def test_innerOtherType(self):
        """
        CPIM wrapping anything but text/plain gets 415.
        """
        for mime in ("Content-Type: text/html",
                     "Content-Type: message/imdn+xml",
                     "Content-Type: message/cpim"):
            error = self.assertRaises(MappingError, self.map, cpim("<p/>", mime=mime))
            self.assertEqual(415, error.code)

    def test_transferEncoding(self):
        """
        A Content-Transfer-Encoding we do not decode gets 415; 8bit is fine.
        """
        error = self.assertRaises(
            MappingError,
            self.map,
            cpim("aGk=", mime="Content-Type: text/plain\n"
                              "Content-Transfer-Encoding: base64"),
        )
        self.assertEqual(415, error.code)
        stanza = self.map(
            cpim("hi", mime="Content-Type: text/plain\nContent-Transfer-Encoding: 8bit")
        )
        self.assertEqual("hi", str(stanza.body))

    def test_malformed(self):
        """
        A CPIM body without the blank lines, or with a line that is not a
        header, gets 400.
        """
        for body in (b"hello", b"From: a\r\n", b"From: a\r\n\r\nContent-Type: text/plain",
                     b"not a header\r\n\r\nContent-Type: text/plain\r\n\r\nhi"):
            error = self.assertRaises(MappingError, self.map, body)
            self.assertEqual(400, error.code, body)

    def test_emptyContent(self):
        """
        A CPIM body with empty content gets 400.
        """
        error = self.assertRaises(MappingError, self.map, cpim(""))
        self.assertEqual((400, "Message body is empty"), (error.code, error.reason))

    def test_cpimAddressesIgnored(self):
        """
        The CPIM From header does not change the sender: only the SIP From
        is used.
        """
        stanza = self.map(cpim("hi"))
        self.assertEqual("juliet*sip.example@gw.example", stanza["from"])


class StanzaToSIPTests(unittest.TestCase):
    """
    Tests for L{stanzaToSIP}.
    """

    def setUp(self):
        self.mapper = FakeMapper()

    def map(self, stanza, **kwargs):
        return stanzaToSIP(stanza, self.mapper, **kwargs)

    def assertRefused(self, stanza, condition, **kwargs):
        error = self.assertRaises(StanzaMappingError, self.map, stanza, **kwargs)
        self.assertEqual(condition, error.condition, error.text)
        return error

    def test_basic(self):
        """
        A message with a body maps to/from through the mapper (the resource
        becomes C{;gr=}) and the body to UTF-8 bytes.
        """
        message = self.map(makeStanza(body="h\u00e9llo \U0001F600"))
        self.assertEqual(
            OutgoingMessage(
                requestURI="sip:juliet@sip.example",
                fromURI="sip:romeo*xmpp.example@gw.example;gr=orchard",
                toURI="sip:juliet@sip.example",
                headers=(),
                body="h\u00e9llo \U0001F600".encode("utf-8"),
            ),
            message,
        )
        self.assertEqual(
            [
                ("jidTargetToSIP", "juliet*sip.example@gw.example"),
                ("jidSenderToSIP", "romeo@xmpp.example/orchard"),
            ],
            self.mapper.calls,
        )

    def test_typeNotMapped(self):
        """
        Any stanza type but error is relayed the same way (RFC 7572 Table 1:
        type has no mapping).
        """
        expected = self.map(makeStanza())
        for stanzaType in ("chat", "normal", "headline"):
            self.assertEqual(expected, self.map(makeStanza(type=stanzaType)))

    def test_threadNotMapped(self):
        """
        C{<thread/>} is not mapped (a fresh Call-ID per MESSAGE).
        """
        stanza = makeStanza()
        stanza.addElement("thread", content="t1")
        self.assertEqual((), self.map(stanza).headers)

    def test_subject(self):
        """
        C{<subject/>} becomes Subject, with line breaks and control
        characters turned into spaces.
        """
        stanza = makeStanza()
        stanza.addElement("subject", content=" Line one\r\nline\ttwo ")
        self.assertEqual(
            (("Subject", "Line one line two"),), self.map(stanza).headers
        )

    def test_language(self):
        """
        The stanza's xml:lang becomes Content-Language.
        """
        message = self.map(makeStanza(lang="en"))
        self.assertEqual((("Content-Language", "en"),), message.headers)

    def test_invalidLanguage(self):
        """
        An xml:lang that is not a language tag is not mapped.
        """
        message = self.map(makeStanza(lang="en\r\nX-Evil: 1"))
        self.assertEqual((), message.headers)

    def test_bodyLanguageSelection(self):
        """
        The body (and subject) in the stanza's language is taken, else the
        first without xml:lang, else the first.
        """
        stanza = makeStanza(body=None, lang="de")
        for lang, text in (("en", "hello"), ("de", "hallo")):
            stanza.addElement("body", content=text)[(NS_XML, "lang")] = lang
            stanza.addElement("subject", content=f"s-{lang}")[(NS_XML, "lang")] = lang
        message = self.map(stanza)
        self.assertEqual(b"hallo", message.body)
        self.assertEqual(
            (("Subject", "s-de"), ("Content-Language", "de")), message.headers
        )

        stanza = makeStanza(body=None)
        stanza.addElement("body", content="hello")[(NS_XML, "lang")] = "en"
        stanza.addElement("body", content="plain")
        self.assertEqual(b"plain", self.map(stanza).body)

        stanza = makeStanza(body=None, lang="fr")
        stanza.addElement("body", content="hello")[(NS_XML, "lang")] = "en"
        stanza.addElement("body", content="hallo")[(NS_XML, "lang")] = "de"
        message = self.map(stanza)
        self.assertEqual(b"hello", message.body)
        self.assertEqual((("Content-Language", "en"),), message.headers)

    def test_parsedStanza(self):
        """
        A stanza parsed from a component stream is mapped; XML specials and
        emoji arrive unescaped; a body in another namespace is ignored.
        """
        stanza = parseStanza(
            "<message from='romeo@xmpp.example' to='juliet*sip.example@gw.example' "
            "type='chat' id='a1' xml:lang='en'>"
            "<body xmlns='urn:example:other'>wrong</body>"
            "<body>&lt;3 &amp; &apos;&quot; \U0001F600</body>"
            "<active xmlns='http://jabber.org/protocol/chatstates'/>"
            "</message>"
        )
        message = self.map(stanza)
        self.assertEqual("<3 & '\" \U0001F600".encode("utf-8"), message.body)
        self.assertEqual("sip:romeo*xmpp.example@gw.example", message.fromURI)
        self.assertEqual((("Content-Language", "en"),), message.headers)

    def test_noBody(self):
        """
        A stanza without a body (a chat state, a receipt) raises L{NoBody},
        which is a L{NotRelayed}.
        """
        stanza = makeStanza(body=None)
        stanza.addElement(("http://jabber.org/protocol/chatstates", "composing"))
        error = self.assertRaises(NoBody, self.map, stanza)
        self.assertIsInstance(error, NotRelayed)
        self.assertEqual([], self.mapper.calls)

    def test_emptyBody(self):
        """
        An empty C{<body/>} counts as no body.
        """
        self.assertRaises(NoBody, self.map, makeStanza(body=""))

    def test_errorStanza(self):
        """
        An error stanza raises L{ErrorStanza}, which is a L{NotRelayed}.
        """
        error = self.assertRaises(ErrorStanza, self.map, makeStanza(type="error"))
        self.assertIsInstance(error, NotRelayed)

    def test_missingAddresses(self):
        """
        A missing C{to} or C{from} is jid-malformed.
        """
        self.assertRefused(makeStanza(to=None), "jid-malformed")
        self.assertRefused(makeStanza(sender=None), "jid-malformed")

    def test_malformedAddresses(self):
        """
        A C{to} or C{from} that is not a JID is jid-malformed.
        """
        self.assertRefused(makeStanza(to="a@b@c/"), "jid-malformed")
        self.assertRefused(makeStanza(to="ab@c..d"), "jid-malformed")
        self.assertRefused(makeStanza(to="ab@c/"), "jid-malformed")
        self.assertRefused(makeStanza(sender="@example.com"), "jid-malformed")
        self.assertRefused(makeStanza(sender="a b@example.com"), "jid-malformed")

    def test_unmappableTarget(self):
        """
        A C{to} the mapper refuses is item-not-found, with its reason.
        """
        error = self.assertRefused(
            makeStanza(to="nobody@gw.example"), "item-not-found"
        )
        self.assertEqual("cannot map nobody@gw.example", error.text)

    def test_unmappableSender(self):
        """
        A C{from} the mapper refuses is forbidden, with its reason.
        """
        error = self.assertRefused(
            makeStanza(sender="mallory@evil.example"), "forbidden"
        )
        self.assertEqual("cannot map mallory@evil.example", error.text)

    def test_tooLarge(self):
        """
        A message whose SIP MESSAGE would exceed 1300 bytes is
        policy-violation.
        """
        error = self.assertRefused(makeStanza(body="x" * 1300), "policy-violation")
        self.assertEqual("message too large for SIP (1300 bytes)", error.text)

    def test_sizeBoundary(self):
        """
        The limit counts the whole estimated request: at the estimate it
        passes, one byte below it is refused.
        """
        stanza = makeStanza(body="\u00e9" * 300)
        size = messages.estimatedSize(self.map(stanza, maxSize=None))
        self.assertTrue(600 < size <= 1300, size)
        self.map(stanza, maxSize=size)
        error = self.assertRefused(stanza, "policy-violation", maxSize=size - 1)
        self.assertEqual(f"message too large for SIP ({size - 1} bytes)", error.text)

    def test_sizeParameter(self):
        """
        The limit is a parameter; L{None} means no limit.
        """
        stanza = makeStanza(body="x" * 2000)
        self.assertEqual(2000, len(self.map(stanza, maxSize=5000).body))
        self.assertEqual(2000, len(self.map(stanza, maxSize=None).body))

    def test_estimateCoversRealRequest(self):
        """
        The estimate is at least the size of a real request with a Via
        added and a typical Call-ID and tag.
        """
        outgoing = self.map(makeStanza(lang="en", body="hi \U0001F600"))
        request = buildSIPRequest(outgoing, "a" * 32 + "@gw.example", "b" * 12)
        request.headers.set(
            "Via",
            "SIP/2.0/TLS [2001:db8::1234:5678:9abc]:65535;"
            "branch=z9hG4bK" + "c" * 32 + ";rport",
        )
        self.assertLessEqual(len(serialize(request)), messages.estimatedSize(outgoing))


class EstimatedSizeTests(unittest.TestCase):
    """
    Tests for L{messages.estimatedSize}: counted without building a request,
    it is exactly the built and serialised request with the largest
    Call-ID and tag, plus the Via allowance.
    """

    def built(self, outgoing):
        request = buildSIPRequest(
            outgoing, "x" * messages.CALL_ID_ALLOWANCE,
            "x" * messages.TAG_ALLOWANCE)
        return len(serialize(request)) + messages.VIA_ALLOWANCE

    def test_matchesBuiltRequest(self):
        """
        For plain, non-ASCII, decorated and odd messages (lower-case and
        compact header names, a stray Content-Length, another content
        type, an escaped byte) the estimate equals the built request's size.
        """
        cases = [
            OutgoingMessage("sip:juliet@sip.example",
                            "sip:romeo*xmpp.example@gw.example",
                            "sip:juliet@sip.example", (), b"hello"),
            OutgoingMessage("sip:j%C3%BCliet@sip.example",
                            "sip:römeo*xmpp.example@gw.example",
                            "sip:j%C3%BCliet@sip.example",
                            (("Subject", "grüße 😀"),
                             ("Content-Language", "de")),
                            "été".encode("utf-8")),
            OutgoingMessage("sip:a@b", "sip:c@d", "sip:a@b",
                            (("subject", "x"), ("s", "y"), ("l", "99"),
                             ("Content-Length", "7"), ("x-odd", "\udcff")),
                            b"", contentType="message/cpim",
                            notification=True),
        ]
        for outgoing in cases:
            self.assertEqual(self.built(outgoing),
                             messages.estimatedSize(outgoing), outgoing)


class BuildSIPRequestTests(unittest.TestCase):
    """
    Tests for L{buildSIPRequest}.
    """

    def outgoing(self, headers=(), body=b"hello"):
        return OutgoingMessage(
            requestURI="sip:juliet@sip.example",
            fromURI="sip:romeo*xmpp.example@gw.example;gr=orchard",
            toURI="sip:juliet@sip.example",
            headers=headers,
            body=body,
        )

    def test_headers(self):
        """
        The request is a MESSAGE with Max-Forwards 70, To, From with the
        tag, Call-ID, CSeq 1 MESSAGE, the extra headers and
        Content-Type text/plain;charset=UTF-8, and no Contact or Via.
        """
        request = buildSIPRequest(
            self.outgoing(headers=(("Subject", "hi"), ("Content-Language", "en"))),
            "call-1@gw.example",
            "tag1",
        )
        self.assertEqual("MESSAGE", request.method)
        self.assertEqual("sip:juliet@sip.example", request.uri)
        self.assertEqual(b"hello", request.body)
        self.assertEqual(
            [
                ("Max-Forwards", "70"),
                ("To", "<sip:juliet@sip.example>"),
                ("From", "<sip:romeo*xmpp.example@gw.example;gr=orchard>;tag=tag1"),
                ("Call-ID", "call-1@gw.example"),
                ("CSeq", "1 MESSAGE"),
                ("Subject", "hi"),
                ("Content-Language", "en"),
                ("Content-Type", "text/plain;charset=UTF-8"),
            ],
            request.headers.items(),
        )

    def test_cseqAndMaxForwards(self):
        """
        CSeq and Max-Forwards can be chosen.
        """
        request = buildSIPRequest(self.outgoing(), "c", "t", cseq=7, maxForwards=10)
        self.assertEqual("7 MESSAGE", request.headers.get("CSeq"))
        self.assertEqual("10", request.headers.get("Max-Forwards"))

    def test_wire(self):
        """
        The serialised request parses back with a byte-correct
        Content-Length, the GRUU inside the From URI and the tag outside.
        """
        body = "\u00e9 \U0001F600".encode("utf-8")
        request = buildSIPRequest(self.outgoing(body=body), "c@x", "t")
        request.headers.add("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx")
        parsed = parseMessage(serialize(request))
        self.assertEqual(body, parsed.body)
        self.assertEqual(str(len(body)), parsed.headers.get("Content-Length"))
        sender = parseNameAddr(parsed.headers.get("From"))
        self.assertEqual("orchard", sender.uri.param("gr"))
        self.assertEqual("t", sender.param("tag"))


class RoundTripTests(unittest.TestCase):
    """
    A body mapped SIP -> XMPP -> SIP comes back unchanged.
    """

    def test_roundTrip(self):
        """
        Text with XML specials, non-ASCII and emoji survives SIP -> stanza
        -> serialised XML -> parsed stanza -> SIP.
        """
        mapper = FakeMapper()
        mapper.jidTargets["romeo@xmpp.example"] = "sip:romeo@xmpp.example"
        mapper.jidSenders["juliet*sip.example@gw.example"] = "sip:juliet@sip.example"
        text = "<&> 'x' \"y\" \u00fc\u00df \U0001F600"
        stanza = sipToStanza(
            makeRequest(
                body=text,
                extra=[("Subject", "S & <s>"), ("Content-Language", "de")],
            ),
            mapper,
            "1",
        )
        parsed = parseStanza(stanza.toXml())
        message = stanzaToSIP(parsed, mapper)
        self.assertEqual(text.encode("utf-8"), message.body)
        self.assertEqual(
            (("Subject", "S & <s>"), ("Content-Language", "de")), message.headers
        )


class StanzaIDForTests(unittest.TestCase):
    """
    Tests for L{messages.stanzaIDFor}: the stanza id of a SIP request.
    """

    def request(self, callID="c1@1.2.3.4", cseq="1 MESSAGE",
                sender="<sip:juliet@sip.example>;tag=49583",
                branch="z9hG4bK776sgdkse", uri="sip:romeo@gw.example",
                maxForwards="70"):
        headers = [("Via", f"SIP/2.0/UDP 1.2.3.4;branch={branch}"),
                   ("Max-Forwards", maxForwards)]
        if sender is not None:
            headers.append(("From", sender))
        headers.append(("To", "<sip:romeo@gw.example>"))
        if callID is not None:
            headers.append(("Call-ID", callID))
        if cseq is not None:
            headers.append(("CSeq", cseq))
        headers.append(("Content-Type", "text/plain"))
        return Request("MESSAGE", uri, Headers(headers), b"hello")

    def test_format(self):
        """
        The id is C{sip-} and the 32 hex digits of a 128-bit BLAKE2b hash of
        Call-ID, CSeq, From tag and Request-URI user, one per line.
        """
        import hashlib
        expected = "sip-" + hashlib.blake2b(
            b"c1@1.2.3.4\n1 MESSAGE\n49583\nromeo", digest_size=16).hexdigest()
        self.assertEqual(expected, messages.stanzaIDFor(self.request()))
        self.assertRegex(expected, r"\Asip-[0-9a-f]{32}\Z")

    def test_failoverCopy(self):
        """
        A copy of the request as a proxy fails it over (a new Via branch, a
        lower Max-Forwards, another Request-URI host, the From rewritten
        with a display name and other spacing) gets the same id.
        """
        first = messages.stanzaIDFor(self.request())
        copy = messages.stanzaIDFor(self.request(
            branch="z9hG4bKother", maxForwards="69",
            uri="sip:romeo@10.0.0.2:5062",
            sender='"Juliet" <sip:juliet@sip.example> ; tag=49583',
            cseq="1   MESSAGE"))
        self.assertEqual(first, copy)

    def test_differentRequests(self):
        """
        A different Call-ID, CSeq number, CSeq method, From tag or
        Request-URI user (a forking proxy's copies to two gateway users)
        gives a different id.
        """
        ids = {
            messages.stanzaIDFor(self.request()),
            messages.stanzaIDFor(self.request(callID="c2@1.2.3.4")),
            messages.stanzaIDFor(self.request(cseq="2 MESSAGE")),
            messages.stanzaIDFor(self.request(cseq="1 SUBSCRIBE")),
            messages.stanzaIDFor(self.request(
                sender="<sip:juliet@sip.example>;tag=49584")),
            messages.stanzaIDFor(self.request(uri="sip:mercutio@gw.example")),
        }
        self.assertEqual(6, len(ids))

    def test_fieldsNotConfused(self):
        """
        Moving text from one field to the next changes the id (the fields
        are separated).
        """
        self.assertNotEqual(
            messages.stanzaIDFor(self.request(callID="c1", cseq="1 MESSAGE")),
            messages.stanzaIDFor(self.request(callID="c11", cseq=" MESSAGE")))

    def test_malformedHeaders(self):
        """
        A request with no Call-ID, CSeq or From, or a From that does not
        parse, still gets an id, stable for the same text.
        """
        bare = self.request(callID=None, cseq=None, sender=None)
        self.assertRegex(messages.stanzaIDFor(bare), r"\Asip-[0-9a-f]{32}\Z")
        bad = self.request(sender="<sip:juliet@sip.example;tag=1")
        self.assertEqual(messages.stanzaIDFor(bad), messages.stanzaIDFor(
            self.request(sender="<sip:juliet@sip.example;tag=1")))
        self.assertNotEqual(messages.stanzaIDFor(bad), messages.stanzaIDFor(
            self.request(sender="<sip:juliet@sip.example;tag=2")))
        self.assertNotEqual(messages.stanzaIDFor(bare), messages.stanzaIDFor(
            self.request(callID=None, cseq=None)))

    def test_sharedValues(self):
        """
        Given the request's first header values (as the router shares them
        with L{messages.sipToStanza}), the id is the same as without, the
        first of repeated headers counting.
        """
        request = self.request()
        request.headers.add("Call-ID", "second@1.2.3.4")
        request.headers.add("From", "<sip:other@sip.example>;tag=2")
        values = messages._firstValues(request.headers)
        self.assertEqual(messages.stanzaIDFor(request),
                         messages.stanzaIDFor(request, values))
        self.assertEqual(
            messages.stanzaIDFor(self.request()),
            messages.stanzaIDFor(request, values))


def _outcome(function, *args):
    """
    C{("ok", result)} or C{("raised", exception type)}: for comparing a
    fast path with the slow one it stands for.
    """
    try:
        return ("ok", function(*args))
    except Exception as e:
        return ("raised", type(e))


_HEADER_NAMES = ["Subject", "subject", "s", "Content-Language", "l",
                 "Content-Length", "X-Odd", "x-odd"]


class FastPathEquivalenceTests(unittest.TestCase):
    """
    The shortcuts of the per-message paths give what the general code
    gives.
    """

    @given(
        st.lists(st.text(max_size=30), min_size=4, max_size=4),
        st.lists(st.tuples(st.sampled_from(_HEADER_NAMES),
                           st.text(max_size=20)), max_size=4),
        st.binary(max_size=300),
    )
    @settings(max_examples=300, deadline=None)
    def test_estimatedSize(self, texts, headers, body):
        """
        L{messages.estimatedSize} (a sum of lengths for ASCII text) equals
        the size counted from the lines, for any text, ASCII or not (lone
        surrogates included: both raise then).
        """
        requestURI, fromURI, toURI, contentType = texts
        outgoing = OutgoingMessage(requestURI, fromURI, toURI, tuple(headers),
                                   body, contentType=contentType)
        self.assertEqual(
            _outcome(messages._estimatedSizeOfLines, outgoing),
            _outcome(messages.estimatedSize, outgoing))

    def test_estimatedSizeFixed(self):
        """
        The fixed part: an empty message is the fixed part and one
        Content-Length digit.
        """
        empty = OutgoingMessage("", "", "", (), b"", contentType="")
        self.assertEqual(messages._ESTIMATE_FIXED + 1,
                         messages.estimatedSize(empty))
        self.assertEqual(messages._estimatedSizeOfLines(empty),
                         messages.estimatedSize(empty))

    def test_stanzaToSIPMessage(self):
        """
        The L{OutgoingMessage} of L{stanzaToSIP}, built without the
        dataclass's C{__init__}, is equal to (and hashes, prints and
        replaces as) one built by it, and is still frozen.
        """
        import dataclasses

        mapper = AddressMapper(separator="*", gatewayDomain="gw.example",
                               xmppDomain="gw.example")
        element = domish.Element((None, "message"))
        element["from"] = "romeo@xmpp.example/orchard"
        element["to"] = "juliet*sip.example@gw.example"
        element["xml:lang"] = "en"
        element.addElement("subject", content="hi")
        element.addElement("body", content="hello")
        outgoing = stanzaToSIP(element, mapper)
        reference = OutgoingMessage(
            requestURI=outgoing.requestURI, fromURI=outgoing.fromURI,
            toURI=outgoing.toURI, headers=outgoing.headers,
            body=outgoing.body)
        self.assertEqual(reference, outgoing)
        self.assertEqual(hash(reference), hash(outgoing))
        self.assertEqual(repr(reference), repr(outgoing))
        self.assertEqual(vars(reference), vars(outgoing))
        self.assertEqual(
            dataclasses.replace(reference, body=b"x"),
            dataclasses.replace(outgoing, body=b"x"))
        self.assertRaises(dataclasses.FrozenInstanceError,
                          setattr, outgoing, "body", b"x")

    def generalRequest(self, outgoing, callID, fromTag, cseq=1,
                       maxForwards=70):
        """
        The request as L{buildSIPRequest} built it through L{Request}'s
        constructor.
        """
        items = [
            ("Max-Forwards", str(maxForwards)),
            ("To", f"<{outgoing.toURI}>"),
            ("From", f"<{outgoing.fromURI}>;tag={fromTag}"),
            ("Call-ID", callID),
            ("CSeq", f"{cseq} MESSAGE"),
        ]
        items.extend(outgoing.headers)
        items.append(("Content-Type", outgoing.contentType))
        return Request("MESSAGE", outgoing.requestURI, Headers(items),
                       outgoing.body)

    def assertSameRequest(self, expected, request):
        self.assertIs(Request, type(request))
        self.assertEqual(vars(expected).keys(), vars(request).keys())
        self.assertEqual(expected.method, request.method)
        self.assertEqual(expected.uri, request.uri)
        self.assertEqual(expected.headers, request.headers)
        self.assertEqual(expected.body, request.body)
        self.assertIs(bytes, type(request.body))
        self.assertIsNone(request.source)
        self.assertEqual(serialize(expected), serialize(request))

    def test_buildSIPRequest(self):
        """
        L{buildSIPRequest} builds the request L{Request}'s constructor
        builds: canonical header names (extra ones canonicalised), the
        body as bytes (a bytearray converted), other CSeq and Max-Forwards.
        """
        cases = [
            (OutgoingMessage("sip:a@b", "sip:c@d", "sip:a@b", (), b"hi"), {}),
            (OutgoingMessage("sip:a@b", "sip:c@d;gr=x", "sip:a@b",
                             (("subject", "s"), ("l", "de"),
                              ("Content-Language", "en")), b"hi",
                             contentType="message/cpim", notification=True),
             {"cseq": 7, "maxForwards": 5}),
            (OutgoingMessage("sip:a@b", "sip:c@d", "sip:a@b", (),
                             bytearray(b"ba")), {}),
        ]
        for outgoing, options in cases:
            self.assertSameRequest(
                self.generalRequest(outgoing, "cid", "tag", **options),
                buildSIPRequest(outgoing, "cid", "tag", **options))

    def test_buildSIPRequestNotBytes(self):
        """
        A body that is not bytes is refused as L{Request} refuses it.
        """
        outgoing = OutgoingMessage("sip:a@b", "sip:c@d", "sip:a@b", (), "hi")
        self.assertRaises(TypeError, buildSIPRequest, outgoing, "c", "t")

    def test_firstValues(self):
        """
        L{messages._firstValues}: the first value of every header, from a
        L{Headers} or from pairs.
        """
        pairs = [("Via", "1"), ("From", "f"), ("Via", "2"), ("To", "t"),
                 ("From", "g")]
        expected = {"Via": "1", "From": "f", "To": "t"}
        self.assertEqual(expected, messages._firstValues(Headers(pairs)))
        self.assertEqual(expected, messages._firstValues(pairs))
        self.assertEqual({}, messages._firstValues(Headers()))

    def test_codecMemo(self):
        """
        The charset labels are resolved through a bounded memo; unknown
        and unsafe ones are refused each time.
        """
        self.assertEqual(64, messages._codecFor.cache_info().maxsize)
        self.assertEqual("utf-8", messages._codecFor("UTF-8"))
        self.assertEqual("iso8859-1", messages._codecFor("latin1"))
        self.assertIsNone(messages._codecFor("no-such-charset"))
        self.assertIsNone(messages._codecFor("unicode-escape"))
        self.assertIsNone(messages._codecFor("base64"))
        for label in ("no-such-charset", "unicode-escape", "base64"):
            for _ in range(2):
                error = self.assertRaises(MappingError, decodeText, b"x",
                                          label)
                self.assertEqual(415, error.code)

    def test_pickOne(self):
        """
        With one candidate, L{messages._pickByLanguage} picks it, whatever
        its language.
        """
        body = domish.Element((None, "body"))
        body[(messages.NS_XML, "lang")] = "fr"
        for language in (None, "en", "fr"):
            self.assertIs(body, messages._pickByLanguage([body], language))


class SIPToStanzaFastPathTests(unittest.TestCase):
    """
    The stanza of L{sipToStanza} is the one the generic constructors
    build, and text is checked for XML as before.
    """

    @given(st.text(max_size=40))
    @settings(max_examples=300, deadline=None)
    def test_xmlCheck(self, text):
        """
        L{messages._checkXMLText} refuses exactly the text with a
        character XML 1.0 does not allow, and so does L{decodeText}.
        """
        illegal = messages._XML_ILLEGAL.search(text) is not None
        self.assertEqual(("raised", MappingError) if illegal else ("ok", text),
                         _outcome(messages._checkXMLText, text, "Subject"))
        data = text.encode("utf-8", "surrogatepass")
        try:
            expected = data.decode("utf-8")
        except UnicodeDecodeError:
            expected = None
        if expected is not None and not illegal:
            if expected.startswith("\ufeff"):
                expected = expected[1:]
            self.assertEqual(expected, decodeText(data))
        else:
            self.assertRaises(MappingError, decodeText, data)

    def test_sameElement(self):
        """
        The C{<message/>} has the instance attributes, in the same order,
        that C{SimpleElement((None, "message"))} gives, and is written the
        same.
        """
        from xmppgw.fastxml import SimpleElement, addTextElement

        request = parseMessage(
            b"MESSAGE sip:alice*xmpp.example@gw.example SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
            b"From: <sip:bob@sip.example>;tag=1\r\n"
            b"To: <sip:alice*xmpp.example@gw.example>\r\n"
            b"Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nSubject: s\r\n"
            b"Content-Language: en\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi")
        mapper = AddressMapper(separator="*", gatewayDomain="gw.example",
                               xmppDomain="gw.example")
        stanza = sipToStanza(request, mapper, "sip-1")
        reference = SimpleElement((None, "message"))
        reference["to"] = "alice@xmpp.example"
        reference["from"] = "bob*sip.example@gw.example"
        reference["id"] = "sip-1"
        reference[(messages.NS_XML, "lang")] = "en"
        addTextElement(reference, "subject", "s")
        addTextElement(reference, "body", "hi")
        addTextElement(reference, "thread", "c1")
        self.assertIs(SimpleElement, type(stanza))
        self.assertEqual(list(vars(reference)), list(vars(stanza)))
        self.assertEqual(list(reference.attributes.items()),
                         list(stanza.attributes.items()))
        self.assertEqual(reference.toXml(), stanza.toXml())
        self.assertEqual(domish.Element.toXml(reference),
                         domish.Element.toXml(stanza))
        # Without parent links (fastxml.unlinkTree): no reference cycle.
        for child in stanza.children:
            self.assertIsNone(child.parent)
        self.assertIsNone(stanza.parent)
