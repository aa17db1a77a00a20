# -*- test-case-name: tests.test_fastxml -*-
"""
A faster serializer for the simple stanzas the gateway builds per message.

L{domish.Element.toXml} goes through L{domish._ListSerializer}, which keeps
prefix stacks and namespace bookkeeping for the general case; for the
C{<message/>} the gateway writes for every SIP MESSAGE (no namespace of its
own, plain attributes, children that hold only text) that bookkeeping is
most of the cost. L{SimpleElement} is an ordinary L{domish.Element} (every
other part of the gateway, tests included, can read and change it as usual)
whose C{toXml} writes that simple shape directly, and falls back to
L{domish.Element.toXml} as soon as the element, at the time it is written,
has anything else: a namespace, namespace prefixes, a qualified attribute
(C{xml:lang}), a child with a namespace or with children of its own, or
serialized XML. The output of the fast path is the output of
L{domish.Element.toXml} for the same element, byte for byte (checked by
C{tests.test_fastxml}).

L{speedUpElementStream} is the other direction: it gives a
L{domish.ExpatElementStream} faster handlers for the common start tag
(unqualified attributes) and character data, building the same elements.
"""

from twisted.words.xish import domish

__all__ = ["SimpleElement", "addTextElement", "escapeText", "escapeAttribute",
           "isHandled", "speedUpElementStream", "unlinkTree"]


def escapeText(text):
    """
    C{text} escaped for character data, as L{domish.escapeToXml} does it.
    """
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def escapeAttribute(text):
    """
    C{text} escaped for an attribute value in single quotes, as
    L{domish.escapeToXml} with C{isattrib=1} does it.
    """
    text = escapeText(text)
    if "'" in text:
        text = text.replace("'", "&apos;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    return text


def _simpleAttributes(attributes, out):
    """
    Append C{ name='value'} for each attribute to C{out}; L{False} (and
    C{out} partly written) when an attribute is qualified or not text.
    """
    for key, value in attributes.items():
        if type(key) is not str or type(value) is not str:
            return False
        out.append(" %s='%s'" % (key, escapeAttribute(value)))
    return True


def addTextElement(parent, name, text):
    """
    C{parent.addElement(name, content=text)}, without its generic work
    (namespace lookups, an interface check per child): a plain
    L{domish.Element} in C{parent}'s default namespace holding C{text}.

    @param parent: a L{domish.Element}.
    @param name: the child's (unqualified) name.
    @param text: its text (nothing is added when empty).
    @return: the new child.
    """
    child = _newElement(_Element)
    child.localPrefixes = {}
    child.uri = child.defaultUri = parent.defaultUri
    child.name = name
    child.attributes = {}
    child.children = [text] if text else []
    child.parent = parent
    parent.children.append(child)
    return child


_Element = domish.Element
_newElement = object.__new__
_IElement = domish.IElement


def isHandled(stanza):
    """
    C{stanza.handled}, for a plain L{domish.Element} without the failed
    attribute lookup and the call of C{Element.__getattr__} that it costs
    when nothing set the flag (the usual case; that call scans the
    children): the flag if set, else what C{__getattr__} gives, the first
    child element named C{handled} or L{None}.
    """
    if type(stanza) is not _Element:
        return stanza.handled
    fields = stanza.__dict__
    if "handled" in fields:
        return fields["handled"]
    for child in stanza.children:
        if _IElement.providedBy(child) and child.name == "handled":
            return child
    return None


def unlinkTree(element):
    """
    Drop the C{parent} links of C{element}'s descendants.

    A parent and its children refer to each other, so every stanza parsed
    or built is a reference cycle that only the cyclic garbage collector
    frees, and stanzas kept for a few milliseconds (until the SIP answer,
    or the confirmation ping) often reach its oldest generation first:
    under load tens of thousands of them piled up there and each full
    collection had to free them at once (about 200 ms at 4,000 messages
    per second). Without the links, reference counting frees a stanza as
    soon as it is no longer used. Nothing reads C{parent} once an element
    is complete (the parser needs it only while it builds the element;
    serialising does not use it); a child added later links again.

    @param element: a L{domish.Element}.
    """
    stack = [element]
    while stack:
        for child in stack.pop().children:
            if type(child) is not str:
                child.parent = None
                if child.children:
                    stack.append(child)


class SimpleElement(domish.Element):
    """
    A L{domish.Element} with a fast C{toXml} for the simple shape described
    in the module docstring; anything else is written by
    L{domish.Element.toXml}.
    """

    def toXml(self, prefixes=None, closeElement=1, defaultUri="",
              prefixesInScope=None):
        fast = self._fastXml(closeElement)
        if fast is not None:
            return fast
        return domish.Element.toXml(
            self, prefixes=prefixes, closeElement=closeElement,
            defaultUri=defaultUri, prefixesInScope=prefixesInScope)

    def _fastXml(self, closeElement):
        """
        The serialized element, or L{None} when it is not of the simple
        shape.
        """
        if (self.uri is not None or self.defaultUri is not None
                or self.localPrefixes or not closeElement):
            return None
        name = self.name
        out = ["<", name]
        if not _simpleAttributes(self.attributes, out):
            return None
        children = self.children
        if not children:
            out.append("/>")
            return "".join(out)
        out.append(">")
        for child in children:
            kind = type(child)
            if kind is str:
                out.append(escapeText(child))
                continue
            if (kind is not domish.Element and kind is not SimpleElement) or (
                    child.uri is not None or child.defaultUri is not None
                    or child.localPrefixes):
                return None
            out.append("<")
            out.append(child.name)
            if not _simpleAttributes(child.attributes, out):
                return None
            grandChildren = child.children
            if not grandChildren:
                out.append("/>")
                continue
            out.append(">")
            for text in grandChildren:
                if type(text) is not str:
                    return None
                out.append(escapeText(text))
            out.append("</%s>" % (child.name,))
        out.append("</%s>" % (name,))
        return "".join(out)


#: Whether L{domish.ExpatElementStream} counts the elements of a stanza
#: itself (Twisted 26 and later); older ones get the count from
#: L{xmppgw.safexml}, which wraps the start handler.
_COUNTS_ELEMENTS = hasattr(domish.ExpatElementStream, "maxElementCount")


def speedUpElementStream(stream):
    """
    Give an L{domish.ExpatElementStream} faster start-tag and
    character-data handlers.

    For each start tag, L{domish.ExpatElementStream._onStartElement} splits
    qualified attribute names, and L{domish.Element.__init__} makes fresh
    dictionaries and checks namespaces; per text node,
    L{domish.Element.addContent} checks types. The handlers installed here
    build the same L{domish.Element} (same name, C{uri}, C{defaultUri},
    attributes, prefixes, parent and children, and the same element count
    and cap) directly, and hand any start tag with a qualified
    attribute (C{xml:lang}) or without a default namespace to the original
    handler.

    Call it on a new stream, before anything wraps its parser's handlers
    (L{xmppgw.safexml.hardenParser} wraps these as it wraps Twisted's).

    @param stream: a L{domish.ExpatElementStream}.
    @return: C{stream}.
    """
    slowStart = stream._onStartElement
    new = _newElement
    element = _Element
    counts = _COUNTS_ELEMENTS
    parserError = domish.ParserError

    def onStartElement(name, attrs):
        if type(attrs) is not dict:
            return slowStart(name, attrs)
        for key in attrs:
            if " " in key:
                return slowStart(name, attrs)
        defaultUri = stream.defaultNsStack[-1]
        if defaultUri is None:
            return slowStart(name, attrs)
        e = new(element)
        if " " in name:
            e.uri, e.name = name.rsplit(" ", 1)
        else:
            e.uri = ""
            e.name = name
        # Element.__init__ keeps a non-empty prefix dictionary and makes a
        # new empty one otherwise; the stream starts a new one either way.
        e.localPrefixes = stream.localPrefixes
        stream.localPrefixes = {}
        e.defaultUri = defaultUri
        e.attributes = attrs
        e.children = []
        e.parent = None
        if stream.documentStarted == 1:
            if counts:
                stream.elementCount += 1
                if stream.elementCount > stream.maxElementCount:
                    raise parserError("Maximum element count exceeded")
            parent = stream.currElem
            if parent is not None:
                parent.children.append(e)
                e.parent = parent
            stream.currElem = e
        else:
            stream.documentStarted = 1
            stream.DocumentStartEvent(e)

    def onCdata(data):
        e = stream.currElem
        if e is not None:
            if type(data) is not str:
                e.addContent(data)
                return
            children = e.children
            if children and isinstance(children[-1], str):
                children[-1] = children[-1] + data
            else:
                children.append(data)

    parser = stream.parser
    parser.StartElementHandler = onStartElement
    parser.CharacterDataHandler = onCdata
    return stream
