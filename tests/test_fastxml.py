"""
Tests for L{xmppgw.fastxml}.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest
from twisted.words.xish import domish

from xmppgw.errors import NS_XML
from xmppgw.fastxml import (
    SimpleElement, addTextElement, escapeAttribute, escapeText)

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
