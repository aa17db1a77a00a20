"""
Tests for L{xmppgw.fastxml}.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest
from twisted.words.xish import domish

from xmppgw import fastxml
from xmppgw.errors import NS_XML
from xmppgw.fastxml import (
    SimpleElement, addTextElement, isHandled, escapeAttribute, escapeText,
    parserWithoutIntern, speedUpElementStream, unlinkTree)
from xmppgw.safexml import hardenParser

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
_names = st.sampled_from(["body", "subject", "thread", "x", "request"])
_STREAM_PREFIXES = {"http://etherx.jabber.org/streams": "stream"}


def both(build):
    """
    The same element built as a L{domish.Element} and as a
    L{SimpleElement} by C{build(root)}.
    """
    plain = domish.Element((None, "message"))
    fast = SimpleElement((None, "message"))
    build(plain)
    build(fast)
    return plain, fast


def streamXML(element):
    """
    C{element} written as a component stream writes a stanza.
    """
    return element.toXml(prefixes=_STREAM_PREFIXES,
                         defaultUri="jabber:component:accept",
                         prefixesInScope=list(_STREAM_PREFIXES.values()))


class SimpleElementTests(unittest.TestCase):
    """
    L{SimpleElement.toXml} writes what L{domish.Element.toXml} writes.
    """

    def assertSame(self, plain, fast):
        self.assertEqual(plain.toXml(), fast.toXml())
        self.assertEqual(streamXML(plain), streamXML(fast))

    def test_message(self):
        """
        The gateway's usual message, with XML specials in attributes and
        text, is written as domish writes it.
        """
        def build(m):
            m["to"] = "a'b\"c@x.example"
            m["from"] = "<&>@y.example/r"
            m["id"] = "1"
            m.addElement("body", content="1 < 2 & 3 > 'q' \"d\"")
            m.addElement("thread", content="call@id")
        plain, fast = both(build)
        self.assertSame(plain, fast)
        self.assertEqual(
            "<message to='a&apos;b&quot;c@x.example' "
            "from='&lt;&amp;&gt;@y.example/r' id='1'><body>1 &lt; 2 &amp; "
            "3 &gt; 'q' \"d\"</body><thread>call@id</thread></message>",
            fast.toXml())

    def test_empty(self):
        """
        Elements without children are closed with C{/>}.
        """
        plain, fast = both(lambda m: m.addElement("body"))
        self.assertSame(plain, fast)
        self.assertEqual("<message><body/></message>", fast.toXml())

    def test_fallbackNamespacedChild(self):
        """
        A child in a namespace of its own (a receipt request added later)
        is written by domish, with its namespace.
        """
        def build(m):
            m["from"] = "a@b"
            m.addElement("body", content="hi")
            m.addElement(("urn:xmpp:receipts", "request"))
        plain, fast = both(build)
        self.assertSame(plain, fast)
        self.assertIn("xmlns='urn:xmpp:receipts'", streamXML(fast))

    def test_fallbackLanguage(self):
        """
        A qualified attribute (C{xml:lang}) is written by domish.
        """
        def build(m):
            m[(NS_XML, "lang")] = "en"
            m.addElement("body", content="hi")
        plain, fast = both(build)
        self.assertSame(plain, fast)
        self.assertIn("xml:lang='en'", fast.toXml())

    def test_fallbackNested(self):
        """
        A grandchild element is written by domish.
        """
        def build(m):
            m.addElement("x").addElement("y", content="z")
        plain, fast = both(build)
        self.assertSame(plain, fast)
        self.assertEqual("<message><x><y>z</y></x></message>", fast.toXml())

    def test_fallbackNamespace(self):
        """
        An element in a namespace is written by domish, declaring it.
        """
        plain = domish.Element(("jabber:client", "message"))
        fast = SimpleElement(("jabber:client", "message"))
        self.assertSame(plain, fast)
        self.assertIn("xmlns='jabber:client'", fast.toXml())

    def test_openTag(self):
        """
        C{closeElement=0} (an opening tag only) is written by domish.
        """
        fast = SimpleElement((None, "message"))
        fast.addElement("body", content="x")
        self.assertEqual("<message>", fast.toXml(closeElement=0))

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.sampled_from(["to", "from", "id", "type"]),
                           _text, max_size=4),
           st.lists(st.one_of(_text, st.tuples(_names, _text)), max_size=4))
    def test_anyText(self, attributes, children):
        """
        Any attributes and any mix of text and text-only children are
        written as domish writes them.
        """
        def build(m):
            for key, value in attributes.items():
                m[key] = value
            for child in children:
                if isinstance(child, tuple):
                    m.addElement(child[0], content=child[1])
                else:
                    m.addContent(child)
        self.assertSame(*both(build))

    def test_escape(self):
        """
        The escaping functions agree with L{domish.escapeToXml}.
        """
        for text in ["", "plain", "&<>'\"", "&amp;", "a>b<c"]:
            self.assertEqual(domish.escapeToXml(text), escapeText(text))
            self.assertEqual(domish.escapeToXml(text, 1),
                             escapeAttribute(text))


class AddTextElementTests(unittest.TestCase):
    """
    L{addTextElement} adds what C{addElement(name, content=text)} adds.
    """

    def assertSameChild(self, plain, fast):
        self.assertIs(type(plain), type(fast))
        self.assertEqual(vars(plain).keys(), vars(fast).keys())
        for key, value in vars(plain).items():
            if key != "parent":
                self.assertEqual(value, getattr(fast, key), key)

    def test_likeAddElement(self):
        """
        In a parent with no namespace, with a default namespace, and with
        empty text, the child and the parent's children are the same as
        L{domish.Element.addElement} makes, and so is the XML.
        """
        for qname, text in [((None, "message"), "hi <&>"),
                            (("jabber:client", "message"), "x"),
                            ((None, "message"), "")]:
            plain = domish.Element(qname)
            fast = domish.Element(qname)
            plainChild = plain.addElement("body", content=text)
            fastChild = addTextElement(fast, "body", text)
            self.assertSameChild(plainChild, fastChild)
            self.assertIs(fast, fastChild.parent)
            self.assertEqual([fastChild], fast.children)
            self.assertEqual(plain.toXml(), fast.toXml())
            self.assertEqual(text, str(fast.body))

    def test_simpleElement(self):
        """
        A L{SimpleElement} with children added by L{addTextElement} writes
        what domish writes.
        """
        plain = domish.Element((None, "message"))
        fast = SimpleElement((None, "message"))
        for m in (plain, fast):
            m["to"] = "a@x.example"
            m.addElement("body", content="1 < 2")
        addTextElement(fast, "thread", "c")
        plain.addElement("thread", content="c")
        self.assertEqual(plain.toXml(), fast.toXml())
        self.assertEqual(streamXML(plain), streamXML(fast))


def describe(element, ordered=False):
    """
    Everything the parser sets on C{element} and its descendants, as nested
    tuples (parents checked on the way); the attributes and prefixes
    sorted, or in their order when C{ordered}.
    """
    children = []
    for child in element.children:
        if isinstance(child, str):
            children.append(child)
        else:
            assert child.parent is element
            children.append(describe(child, ordered))
    if ordered:
        attributes = list(element.attributes.items())
        prefixes = list(element.localPrefixes.items())
    else:
        attributes = sorted(element.attributes.items(), key=repr)
        prefixes = sorted(element.localPrefixes.items(), key=repr)
    return (type(element), element.uri, element.name, element.defaultUri,
            attributes, prefixes, children)


_DOCUMENTS = [
    "<message type='chat' to='bob@gw.example' from='a@x.example/r' id='m1'>"
    "<body>Hello &amp; &lt;bye&gt; &#x263A;</body></message>",
    "<iq type='get' id='p1' from='gw.example' to='gw.example'>"
    "<ping xmlns='urn:xmpp:ping'/></iq>",
    "<message xml:lang='en' to='b@c'><body xml:lang='fr'>Salut</body>"
    "<x:data xmlns:x='urn:example:x' x:kind='k' plain='p'><x:item/>"
    "text<![CDATA[<raw>]]>more</x:data></message>",
    "<presence><status>away</status><c xmlns='http://jabber.org/protocol/caps'"
    " node='n' ver='v' hash='sha-1'><inner xmlns=''><deep/></inner></c>"
    "</presence>",
    "<message><body>line one\nline two</body><thread>t</thread><empty/>"
    "</message>",
]

_HEADER = (
    b"<stream:stream xmlns='jabber:component:accept' "
    b"xmlns:stream='http://etherx.jabber.org/streams' id='s1'>")


def parseAll(data, fast, chunk=None, prepare=None):
    """
    The root and stanzas a (sped-up when C{fast}) element stream builds
    from C{data}, fed C{chunk} bytes at a time.
    """
    stream = domish.ExpatElementStream()
    if fast:
        speedUpElementStream(stream)
    if prepare is not None:
        prepare(stream)
    roots, stanzas = [], []
    stream.DocumentStartEvent = roots.append
    stream.ElementEvent = stanzas.append
    stream.DocumentEndEvent = lambda: None
    if chunk is None:
        stream.parse(data)
    else:
        for i in range(0, len(data), chunk):
            stream.parse(data[i:i + chunk])
    return roots, stanzas


class SpeedUpElementStreamTests(unittest.TestCase):
    """
    L{speedUpElementStream} builds the elements Twisted's handlers build.
    """

    def assertSameParse(self, data, chunk=None):
        plainRoots, plain = parseAll(data, False, chunk)
        fastRoots, fast = parseAll(data, True, chunk)
        self.assertEqual([describe(e) for e in plainRoots],
                         [describe(e) for e in fastRoots])
        self.assertEqual([describe(e) for e in plain],
                         [describe(e) for e in fast])
        return fast

    def test_documents(self):
        """
        Stanzas with plain and qualified attributes, prefixes, default
        namespaces (set and undeclared), entities, CDATA and text split by
        elements come out the same, whole or fed in small chunks.
        """
        data = _HEADER + "".join(_DOCUMENTS).encode("utf-8")
        fast = self.assertSameParse(data)
        self.assertEqual(len(_DOCUMENTS), len(fast))
        for chunk in (1, 3, 7, 64):
            self.assertSameParse(data, chunk)

    def test_qualifiedAttributes(self):
        """
        Qualified attributes (C{xml:lang}, a prefixed one) get the keys
        Twisted's handler gives them, C{(uri, name)}, in the same order
        (after the plain ones), on the stanza and on its children.
        """
        data = _HEADER + (
            b"<message xml:lang='en' to='b@c' id='m1'>"
            b"<body xml:lang='fr'>Salut</body>"
            b"<x xmlns='urn:x' xmlns:p='urn:p' p:a='1' b='2' xml:lang='de'/>"
            b"</message>")
        _, plain = parseAll(data, False)
        _, fast = parseAll(data, True)
        self.assertEqual([describe(e, ordered=True) for e in plain],
                         [describe(e, ordered=True) for e in fast])
        message = fast[0]
        self.assertEqual(["to", "id", (NS_XML, "lang")],
                         list(message.attributes))
        self.assertEqual("en", message.getAttribute((NS_XML, "lang")))
        self.assertEqual("fr", message.body[(NS_XML, "lang")])

    def test_noElementInit(self):
        """
        Start tags in a default namespace, with qualified attributes or
        without, are built without L{domish.Element.__init__} (its generic
        checks); one without a default namespace goes to Twisted's
        handler.
        """
        calls = []
        original = domish.Element.__init__

        def counting(self, *args, **kwargs):
            calls.append(args[0])
            original(self, *args, **kwargs)

        self.patch(domish.Element, "__init__", counting)
        parseAll(_HEADER + _DOCUMENTS[0].encode("utf-8"), True)
        self.assertEqual([], calls)
        parseAll(_HEADER + b"<message xml:lang='en'/>", True)
        self.assertEqual([], calls)
        parseAll(_HEADER + b"<message xmlns='' xml:lang='en'/>", True)
        self.assertEqual([("", "message")], calls)

    def test_keepsNoNames(self):
        """
        The sped-up stream's parser has no C{intern} dictionary: new
        element and attribute names from the peer are not kept, and the
        stanzas still come out whole; hardening applies to that parser.
        """
        stream = hardenParser(speedUpElementStream(domish.ExpatElementStream()))
        self.assertIsNone(stream.parser.intern)
        stanzas = []
        stream.DocumentStartEvent = lambda e: None
        stream.ElementEvent = stanzas.append
        stream.parse(_HEADER)
        for n in range(50):
            stream.parse(b"<message a%d='v'><x%d xmlns='urn:n%d'>t</x%d>"
                         b"</message>" % (n, n, n, n))
        self.assertEqual(50, len(stanzas))
        [child] = stanzas[-1].children
        self.assertEqual(("x49", "urn:n49", "t", "v"),
                         (child.name, child.uri, str(child),
                          stanzas[-1]["a49"]))
        self.assertRaises(domish.ParserError, stream.parse,
                          b"<!-- a comment -->")

    def test_parserWithoutIntern(self):
        """
        L{parserWithoutIntern} gives a parser with the handlers of the one
        it replaces and no C{intern} dictionary.
        """
        stream = domish.ExpatElementStream()
        old = stream.parser
        new = parserWithoutIntern(old)
        self.assertIsNone(new.intern)
        self.assertIsNotNone(old.intern)
        for name in ("StartElementHandler", "EndElementHandler",
                     "CharacterDataHandler", "StartNamespaceDeclHandler",
                     "EndNamespaceDeclHandler"):
            self.assertEqual(getattr(old, name), getattr(new, name))
        self.assertIsNone(new.CommentHandler)

    def test_elementCap(self):
        """
        The per-stanza element cap still applies (Twisted's, or the one
        L{xmppgw.safexml} adds to an older Twisted), and resets per stanza.
        """
        def cap(stream):
            hardenParser(stream)
            stream.maxElementCount = 3

        stanza = b"<message><a/><b/></message>"
        for fast in (False, True):
            roots, stanzas = parseAll(_HEADER + stanza * 2, fast, prepare=cap)
            self.assertEqual(2, len(stanzas))
            self.assertRaises(
                domish.ParserError, parseAll,
                _HEADER + b"<message><a/><b/><c/></message>", fast,
                prepare=cap)

    @given(st.lists(st.sampled_from(_DOCUMENTS), max_size=6),
           st.integers(min_value=1, max_value=40))
    @settings(max_examples=60, deadline=None)
    def test_anyChunks(self, documents, chunk):
        """
        Any sequence of stanzas, cut anywhere, is built the same.
        """
        self.assertSameParse(
            _HEADER + "".join(documents).encode("utf-8"), chunk)


def feed(chunks, fast, prepare=None):
    """
    Feed C{chunks} to a plain or sped-up (C{fast}) element stream,
    hardened as the component link's is: what it builds, and the index
    of the chunk that raised L{domish.ParserError} (or L{None}); the
    events are described (L{describe}, in order) as they come, before any handler
    could change them.
    """
    stream = domish.ExpatElementStream()
    if fast:
        speedUpElementStream(stream)
        if not fastxml.READ_WITHOUT_EXPAT:
            # Tested on every interpreter, used on PyPy.
            fastxml._readSimpleStanzas(stream)
    hardenParser(stream, 10000)
    if prepare is not None:
        prepare(stream)
    events = []
    stream.DocumentStartEvent = lambda e: events.append(
        ("start", describe(e, ordered=True)))
    stream.ElementEvent = lambda e: events.append(
        ("stanza", describe(e, ordered=True)))
    stream.DocumentEndEvent = lambda: events.append(("end",))
    for i, chunk in enumerate(chunks):
        try:
            stream.parse(chunk)
        except domish.ParserError:
            return events, i, stream
    return events, None, stream


def cut(data, sizes):
    """
    C{data} cut into chunks of the given sizes (the last one takes the
    rest).
    """
    chunks = []
    for size in sizes:
        if not data:
            break
        chunks.append(data[:size])
        data = data[size:]
    if data:
        chunks.append(data)
    return chunks


_XML_CHARS = (
    "aZ09 _-.:=/'\"<>&;\t\n\r\x01\x7f\u00e9\u263a\U0001F600"
    "\ufffe]!#x")
_charsOf = st.text(alphabet=_XML_CHARS, max_size=8)
_entity = st.sampled_from(
    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#65;", "&#x263A;",
     "&foo;", "&", "]]>", "<![CDATA[x]]>", "<!-- c -->", "<?pi x?>"])
_textPart = st.one_of(_charsOf, _entity)
_elementName = st.sampled_from(
    ["body", "message", "x", "a.b", "_c", "p:x", "1bad", "subject", "\u00e9t"])
_attrName = st.sampled_from(
    ["to", "from", "id", "type", "xml:lang", "xmlns", "xmlns:p", "p:q",
     "a-b", "to"])
_attrValue = st.one_of(
    st.sampled_from(["", "jabber:client", "urn:xmpp:ping", "en"]), _charsOf,
    st.lists(_textPart, max_size=3).map("".join))


@st.composite
def _stanzas(draw, depth=0):
    """
    The text of an element, most often well-formed and of the simple kind,
    sometimes not: odd names, values and text, entities, markup XMPP
    forbids, prefixes, duplicates, mismatched or missing end tags.
    """
    name = draw(_elementName) if depth else draw(
        st.sampled_from(["message", "iq", "presence", "message", "x:y"]))
    attributes = draw(st.lists(st.tuples(_attrName, _attrValue), max_size=4))
    quote = draw(st.sampled_from(["'", '"']))
    space = draw(st.sampled_from([" ", "  ", "\n", "\t", " \r"]))
    head = "<" + name + "".join(
        "%s%s=%s%s%s" % (space, key, quote, value, quote)
        for key, value in attributes)
    head += draw(st.sampled_from(["", " ", "\n"]))
    if depth < 3 and draw(st.booleans()):
        children = draw(st.lists(
            st.one_of(st.lists(_textPart, max_size=3).map("".join),
                      _stanzas(depth=depth + 1)), max_size=4))
        closing = draw(st.sampled_from(
            ["</%s>" % (name,), "</%s >" % (name,), "</%s>" % (name,),
             "</other>", ""]))
        return head + ">" + "".join(children) + closing
    return head + "/>"


_simpleText = st.lists(st.one_of(
    st.text(alphabet="ab \n\t>]\u00e9\u263a", max_size=6),
    st.sampled_from(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "]]>"])),
    max_size=4).map("".join)


@st.composite
def _simpleStanzas(draw, depth=0):
    """
    The text of an element of (nearly always) the simple kind: names,
    namespaces and attributes XMPP stanzas use, text with the predefined
    entities.
    """
    name = draw(st.sampled_from(["message", "body", "x", "active", "a.b"]))
    attributes = draw(st.lists(st.tuples(
        st.sampled_from(["to", "from", "id", "type", "xml:lang", "xmlns"]),
        st.sampled_from(["", "a@b/c", "urn:a", "en", "a>b", "\u00e9"])),
        max_size=3, unique_by=lambda kv: kv[0]))
    head = "<" + name + "".join(
        " %s='%s'" % (key, value) for key, value in attributes)
    if depth < 3 and draw(st.booleans()):
        children = draw(st.lists(
            st.one_of(_simpleText, _simpleStanzas(depth=depth + 1)),
            max_size=4))
        return head + ">" + "".join(children) + "</%s>" % (name,)
    return head + "/>"


class ReadSimpleStanzasTests(unittest.TestCase):
    """
    Stanzas of the simple kind are read without expat when a chunk starts
    between stanzas (L{xmppgw.fastxml._readSimpleStanzas}), building what
    the handlers build; everything else goes to expat, errors included.
    """

    def assertSameFeed(self, chunks, prepare=None, strict=True):
        """
        C{chunks} give the same events plainly and sped up, and the same
        error at the same chunk; unless C{strict}, the sped-up stream may
        find an error later (in a stanza it kept back until complete), or
        not at all if the chunks end first, but never earlier and never
        where the plain one finds none.
        """
        plain = feed(chunks, False, prepare)
        fast = feed(chunks, True, prepare)
        if strict:
            self.assertEqual(plain[:2], fast[:2])
        else:
            self.assertEqual(plain[0], fast[0])
            if plain[1] is None:
                self.assertIsNone(fast[1])
            elif fast[1] is not None:
                self.assertGreaterEqual(fast[1], plain[1])
        return fast

    def test_readWithoutExpat(self):
        """
        After the stream header, each listed stanza fed as a chunk of its
        own is read without expat (which has processed the header only)
        and comes out as expat builds it; so do several in one chunk.
        """
        simple = [_DOCUMENTS[0].replace(" &#x263A;", ""), _DOCUMENTS[1],
                  _DOCUMENTS[4], "<message xml:lang='en' to='b@c'>"
                  "<body xml:lang='fr'>Salut</body></message>",
                  "<presence/>", "<message to='x' >\n <body>a &gt; b ]] >"
                  "</body >\n</message >"]
        chunks = [_HEADER] + [d.encode("utf-8") for d in simple]
        events, error, stream = self.assertSameFeed(chunks)
        self.assertIsNone(error)
        self.assertEqual(len(simple) + 1, len(events))
        self.assertEqual(len(_HEADER), stream.parser.CurrentByteIndex)
        events, error, stream = self.assertSameFeed(
            [_HEADER, b" ".join(chunks[1:])])
        self.assertEqual(len(simple) + 1, len(events))
        self.assertEqual(len(_HEADER), stream.parser.CurrentByteIndex)

    def test_longPartsNotKept(self):
        """
        A stanza whose tag parts (attributes, namespace) are longer than
        the memos' limit (L{xmppgw.memo.MAX_KEPT_LENGTH}) is read as expat
        reads it, and its parts are not kept: the caches hold a bounded
        number of bytes whatever the peers send.
        """
        from xmppgw import fastxml, memo
        long = "a" * memo.MAX_KEPT_LENGTH
        stanza = ("<message to='%s@b' xmlns='urn:x:%s'><body>x</body>"
                  "</message>" % (long, long))
        events, error, stream = self.assertSameFeed(
            [_HEADER, stanza.encode("ascii")])
        self.assertIsNone(error)
        for cache in (fastxml._heads, fastxml._keys, fastxml._endNames,
                      fastxml._namespaces):
            self.assertEqual(
                [], [k for k in cache if len(k) > memo.MAX_KEPT_LENGTH])

    def test_listedEdges(self):
        """
        Stanzas at the edges of the simple kind, each fed as a chunk of its
        own after the header, come out as expat builds them or fail as it
        fails.
        """
        edges = [
            "<message><body>&quot;&apos;&lt;&gt;&amp; x</body></message>",
            "<message><body>a ]]> b</body></message>",
            "<message><body>a ]] > b ]>]</body></message>",
            "<message><body>a\r\nb\rc</body></message>",
            "<message><body>a\x01b</body></message>",
            "<message><body>a\ufffeb</body></message>",
            "<message><body>\u00e9\U0001F600 \x7f</body></message>",
            "<message><x xmlns='urn:a'><y/><z xmlns='urn:b'><w/></z>t</x>"
            "<v/></message>",
            "<message><x xmlns=''/></message>",
            "<message xmlns=' '/>", "<message xmlns='a b'/>",
            "<message xmlns='http://www.w3.org/XML/1998/namespace'/>",
            "<message xmlns='http://www.w3.org/2000/xmlns/'/>",
            "<message xmlns='\u00e9'/>", "<message xmlns='a>b'/>",
            "<message xmlns='jabber:client'><body/></message>",
            "<message><a><a><a/></a></a></message>",
            "<message><a></b></message>",
            "<message to='a' to='b'/>",
            "<message xml:lang='en' xml:lang='fr'/>",
            "<message xmlns='urn:a' xmlns='urn:b'/>",
            "<message to='a\tb'/>", "<message to='a\nb'/>",
            "<message to='a>b' from=\"c'd\" id='e\"f'/>",
            "<message to='a&amp;b'/>", "<message to='a<b'/>",
            "<message a='1'b='2'/>", "<message\n\tto = 'x'\n/>",
            "<message to='a'x/>", "<message to='a' x>t</message>",
            "<message to='a' />", "<message x/>", "<message to='a' to/>",
            "<message><body>x &#65; y</body></message>",
            "<message><body>x &nbsp; y</body></message>",
            "<message xml:lang='en' to='x' xml:space='keep' id='i'/>",
            "<message p:a='1' xmlns:p='urn:p'/>",
            "<message><!-- c --></message>", "<message><?pi x?></message>",
            "<message><body><![CDATA[x]]></body></message>",
            "<message/ >", "<message >text</message>", "<1a/>",
        ]
        # Characters at the edges of what XML allows and of what
        # str.isprintable accepts.
        for c in ("\ufdd0", "\U0001fffe", "\U0010ffff", "\ue000", "\u2028",
                  "\x85", "\u200b", "\u0378", "\x7f", "\ufffd", "\u00a0"):
            edges.append("<message><body>a%sb</body></message>" % (c,))
            edges.append("<message to='a%sb'/>" % (c,))
        for edge in edges:
            self.assertSameFeed([_HEADER, edge.encode("utf-8"),
                                 b"<presence/>"])
            self.assertSameFeed([_HEADER, b"<presence/>" + edge.encode("utf-8")])

    def test_otherStanzasToExpat(self):
        """
        A stanza that is not of the simple kind (prefixes, CDATA, a
        character reference, an undeclared default namespace) goes to
        expat with the rest of its chunk; the next chunk is read without
        expat again.
        """
        for document in (_DOCUMENTS[0], _DOCUMENTS[2], _DOCUMENTS[3]):
            chunks = [_HEADER, _DOCUMENTS[1].encode("utf-8"),
                      (document + _DOCUMENTS[4]).encode("utf-8"),
                      _DOCUMENTS[1].encode("utf-8")]
            events, error, stream = self.assertSameFeed(chunks)
            self.assertIsNone(error)
            self.assertEqual(5, len(events))
            self.assertEqual(len(_HEADER) + len(chunks[2]),
                             stream.parser.CurrentByteIndex)

    def test_incompleteThenWhole(self):
        """
        A chunk that ends inside a stanza of the simple kind keeps the
        stanza back and reads it with the next chunk: wherever the cut
        falls, expat sees nothing but the stream header.
        """
        data = (_DOCUMENTS[1] + _DOCUMENTS[4]).encode("utf-8")
        for at in range(1, len(data)):
            events, error, stream = self.assertSameFeed(
                [_HEADER, data[:at], data[at:],
                 _DOCUMENTS[1].encode("utf-8")])
            self.assertIsNone(error)
            self.assertEqual(4, len(events))
            self.assertEqual(len(_HEADER), stream.parser.CurrentByteIndex)

    def test_continuousStream(self):
        """
        Stanzas of a continuous stream cut into reads of a fixed size (the
        component link under load: no read ends between two stanzas) are
        all read without expat.
        """
        data = "".join(
            "<message to='user%d*sip.example.com@gw.example' type='chat' "
            "id='m%d' from='tx@xmpp.test/r' xml:lang='en'><body>message "
            "%d \u00e9\U0001F600</body></message>" % (i, i, i)
            for i in range(200)).encode("utf-8")
        for size in (7, 100, 1000, 8192):
            events, error, stream = self.assertSameFeed(
                [_HEADER] + cut(data, [size] * (len(data) // size)))
            self.assertIsNone(error)
            self.assertEqual(201, len(events))
            self.assertEqual(len(_HEADER), stream.parser.CurrentByteIndex)

    def test_cutInsideCharacter(self):
        """
        A chunk that ends inside a character of several bytes is read up
        to that character; the character's bytes wait with the stanza.
        """
        data = "<message><body>\u00e9\u263a\U0001F600</body></message>"
        encoded = data.encode("utf-8")
        for at in range(1, len(encoded)):
            events, error, stream = self.assertSameFeed(
                [_HEADER, encoded[:at], encoded[at:]])
            self.assertIsNone(error)
            self.assertEqual(2, len(events))
            self.assertEqual(len(_HEADER), stream.parser.CurrentByteIndex)

    def test_holdLimit(self):
        """
        An incomplete stanza over L{fastxml.HOLD_LIMIT} goes to expat, and
        the rest of it after it; the stanza comes out the same.
        """
        body = "x" * (fastxml.HOLD_LIMIT + 2000)
        data = ("<message><body>%s</body></message>" % (body,)).encode()

        def bigger(stream):
            stream.maxStanzaSize = 10 * fastxml.HOLD_LIMIT

        events, error, stream = self.assertSameFeed(
            [_HEADER] + cut(data, [1000] * (len(data) // 1000)),
            prepare=bigger)
        self.assertIsNone(error)
        self.assertEqual(2, len(events))
        self.assertGreater(stream.parser.CurrentByteIndex, len(_HEADER))

    def test_sizeCapWhileKept(self):
        """
        The stanza size cap counts the bytes kept back: an incomplete
        stanza over it is refused at the chunk that takes it over, as
        expat refuses it.
        """
        def small(stream):
            # The stream header counts too, for the first stanza.
            stream.maxStanzaSize = len(_HEADER) + 100

        data = ("<message><body>%s</body></message>" % ("y" * 150,)).encode()
        events, error, stream = self.assertSameFeed(
            [_HEADER, data[:60], data[60:120], data[120:]], prepare=small)
        self.assertEqual(2, error)
        self.assertEqual(1, len(events))
        # After a stanza read in the same chunk the count starts again.
        events, error, stream = self.assertSameFeed(
            [_HEADER, b"<presence/>", b"<presence/>" + data[:90],
             data[90:]], prepare=small)
        self.assertIsNone(error)
        self.assertEqual(4, len(events))

    def test_errorInKeptStanza(self):
        """
        An error in a stanza kept back is found when the stanza is
        complete, one chunk later than expat finds it; the stanzas before
        it come out the same.
        """
        data = b"<message><body>a\x01b</body></message>"
        chunks = [_HEADER, b"<presence/>" + data[:17], data[17:]]
        plain = feed(chunks, False)
        fast = feed(chunks, True)
        self.assertEqual(plain[0], fast[0])
        self.assertEqual(2, len(fast[0]))
        self.assertEqual((1, 2), (plain[1], fast[1]))

    def test_afterTheEnd(self):
        """
        Nothing is read after the end of the stream: expat refuses it.
        """
        events, error, stream = self.assertSameFeed(
            [_HEADER, b"</stream:stream>", b"<message/>"])
        self.assertEqual(2, error)
        self.assertEqual("end", events[-1][0])

    def test_caps(self):
        """
        A stanza over the element cap goes to expat, which refuses it; the
        counts start again after each stanza read without expat.
        """
        def cap(stream):
            stream.maxElementCount = 3

        ok = b"<message><a/><b/></message>"
        events, error, _ = self.assertSameFeed([_HEADER, ok, ok, ok * 3],
                                               prepare=cap)
        self.assertIsNone(error)
        self.assertEqual(6, len(events))
        events, error, _ = self.assertSameFeed(
            [_HEADER, ok, b"<message><a/><b/><c/></message>"], prepare=cap)
        self.assertEqual(2, error)

    def test_onlyWhereCheaper(self):
        """
        L{speedUpElementStream} has stanzas read without expat when
        C{READ_WITHOUT_EXPAT} says so (on PyPy), and not otherwise.
        """
        chunks = [_HEADER, _DOCUMENTS[1].encode("utf-8")]
        for flag, expected in ((True, len(_HEADER)),
                               (False, len(_HEADER) + len(chunks[1]))):
            self.patch(fastxml, "READ_WITHOUT_EXPAT", flag)
            stream = domish.ExpatElementStream()
            speedUpElementStream(stream)
            stream.DocumentStartEvent = stream.ElementEvent = lambda e: None
            for chunk in chunks:
                stream.parse(chunk)
            self.assertEqual(expected, stream.parser.CurrentByteIndex)

    def test_handlerEndsStream(self):
        """
        A stanza handler that raises stops the chunk there, as with expat.
        """
        for fast in (False, True):
            stream = domish.ExpatElementStream()
            if fast:
                speedUpElementStream(stream)
                if not fastxml.READ_WITHOUT_EXPAT:
                    fastxml._readSimpleStanzas(stream)
            seen = []

            def onElement(e):
                seen.append(e.name)
                if e.name == "iq":
                    raise RuntimeError("handler")

            stream.DocumentStartEvent = lambda e: None
            stream.ElementEvent = onElement
            stream.parse(_HEADER)
            self.assertRaises(RuntimeError, stream.parse,
                              b"<message/><iq/><presence/>")
            self.assertEqual(["message", "iq"], seen)

    @given(st.lists(_simpleStanzas(), min_size=1, max_size=5),
           st.lists(st.integers(min_value=1, max_value=60), max_size=8))
    @settings(max_examples=300, deadline=None)
    def test_generatedSimple(self, stanzas, sizes):
        """
        Generated stanzas of (nearly always) the simple kind, one per
        chunk, all in one, or cut anywhere, come out as expat builds them.
        """
        encoded = [s.encode("utf-8") for s in stanzas]
        self.assertSameFeed([_HEADER] + encoded)
        joined = b"".join(encoded)
        self.assertSameFeed([_HEADER, joined])
        self.assertSameFeed([_HEADER] + cut(joined, sizes), strict=False)

    @given(st.lists(_stanzas(), min_size=1, max_size=5),
           st.lists(st.integers(min_value=1, max_value=60), max_size=8),
           st.sampled_from(["", " ", "\n", "\r\n"]))
    @settings(max_examples=400, deadline=None)
    def test_generated(self, stanzas, sizes, between):
        """
        Generated stanzas, well-formed or not, fed one per chunk, all in
        one chunk, or cut anywhere, give the same events, and an error
        where expat finds one, at the same chunk or later (in a stanza
        kept back until complete; see L{ReadSimpleStanzasTests.
        assertSameFeed}).
        """
        encoded = [s.encode("utf-8") for s in stanzas]
        # Not strict: a stanza without its end tag waits for it, and an
        # error in it is found when it ends (never, here).
        self.assertSameFeed([_HEADER] + encoded, strict=False)
        joined = between.encode("ascii").join(encoded)
        self.assertSameFeed([_HEADER, joined], strict=False)
        self.assertSameFeed([_HEADER] + cut(joined, sizes), strict=False)


class UnlinkTreeTests(unittest.TestCase):
    """
    L{unlinkTree} drops the parent links of an element's descendants, so
    that the tree is no reference cycle.
    """

    def build(self):
        root = domish.Element((None, "message"))
        body = root.addElement("body", content="hi")
        x = root.addElement(("urn:x", "x"))
        y = x.addElement("y")
        y.addContent("text")
        return root, [body, x, y]

    def test_parentsDropped(self):
        """
        Every descendant, at any depth, loses its parent link; the text and
        the serialisation stay as they were.
        """
        root, descendants = self.build()
        before = root.toXml()
        unlinkTree(root)
        for element in descendants:
            self.assertIsNone(element.parent)
        self.assertEqual(before, root.toXml())
        self.assertEqual("hi", str(root.body))

    def test_freedWithoutCollector(self):
        """
        Without the links, reference counting alone frees the tree (on
        CPython; PyPy has no reference counting).
        """
        import gc
        import sys
        import weakref

        if not hasattr(sys, "getrefcount"):
            raise unittest.SkipTest("no reference counting here")
        root, descendants = self.build()
        unlinkTree(root)
        ref = weakref.ref(descendants[2])
        del descendants
        enabled = gc.isenabled()
        gc.disable()
        try:
            del root
            self.assertIsNone(ref())
        finally:
            if enabled:
                gc.enable()


class IsHandledTests(unittest.TestCase):
    """
    L{xmppgw.fastxml.isHandled} is C{stanza.handled}.
    """

    def cases(self):
        plain = domish.Element((None, "message"))
        plain.addElement("body", content="hi")
        plain.addContent("text")
        yield plain
        flagged = domish.Element((None, "message"))
        flagged.handled = True
        yield flagged
        unflagged = domish.Element((None, "message"))
        unflagged.handled = False
        yield unflagged
        child = domish.Element((None, "message"))
        child.addContent("x")
        child.addElement(("urn:x", "handled"))
        yield child
        yield domish.Element((None, "message"))
        simple = SimpleElement((None, "message"))
        simple.addElement("handled")
        yield simple
        yield SimpleElement((None, "message"))

    def test_same(self):
        """
        Flag set or not, a child element named C{handled} or not, a plain
        L{domish.Element} or another class: the same object as
        C{stanza.handled}.
        """
        for stanza in self.cases():
            self.assertIs(stanza.handled, isHandled(stanza), stanza.toXml())
