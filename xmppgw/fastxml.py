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
L{domish.ExpatElementStream} faster handlers for start tags (in a default
namespace) and character data, building the same elements;
on PyPy it also has the stream read whole stanzas of the simple kind
without expat (L{_readSimpleStanzas}).
"""

import platform
import pyexpat
import re

from twisted.words.xish import domish

from xmppgw.errors import NS_XML
from xmppgw.memo import keepBounded

__all__ = ["SimpleElement", "addTextElement", "escapeText", "escapeAttribute",
           "isHandled", "parserWithoutIntern", "speedUpElementStream",
           "unlinkTree"]


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

    def _fastXml(self, closeElement, namespace=None):
        """
        The serialized element, or L{None} when it is not of the simple
        shape.

        @param namespace: the default namespace it is written in (an XML
            stream's, e.g. C{jabber:server} on an S2S stream), or L{None}.
            An element or child whose C{uri} and C{defaultUri} are both
            that namespace is written as one with neither, which is what
            L{domish.Element.toXml} writes for it with that C{defaultUri}
            (no C{xmlns}): server mode's stanzas, put in C{jabber:server}
            by L{xmppgw.xmpp.server.normalizeStanza}, take the fast way.
        """
        if not closeElement or self.localPrefixes:
            return None
        uri = self.uri
        if (uri is not None or self.defaultUri is not None) and (
                namespace is None or uri != namespace
                or self.defaultUri != namespace):
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
            if (kind is not domish.Element and kind is not SimpleElement
                    or child.localPrefixes):
                return None
            uri = child.uri
            if (uri is not None or child.defaultUri is not None) and (
                    namespace is None or uri != namespace
                    or child.defaultUri != namespace):
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
    and cap) directly, qualified attributes (C{xml:lang}) under the
    same C{(uri, name)} keys, and hand any start tag without a default
    namespace to the original handler.

    The stream's parser is made again without an C{intern} dictionary
    (L{parserWithoutIntern}): expat's names (tags, attribute names) are
    then new strings each time instead of looked up in a dictionary of
    the stream's own, which is cheaper and keeps nothing (that dictionary
    grew with every new name a peer sent).

    Call it on a new stream, before it parses anything and before anything
    wraps its parser's handlers (L{xmppgw.safexml.hardenParser} wraps
    these as it wraps Twisted's).

    @param stream: a L{domish.ExpatElementStream}.
    @return: C{stream}.
    """
    stream.parser = parserWithoutIntern(stream.parser)
    slowStart = stream._onStartElement
    new = _newElement
    element = _Element
    counts = _COUNTS_ELEMENTS
    parserError = domish.ParserError

    def onStartElement(name, attrs):
        if type(attrs) is not dict:
            return slowStart(name, attrs)
        defaultUri = stream.defaultNsStack[-1]
        if defaultUri is None:
            return slowStart(name, attrs)
        qualified = None
        for key in attrs:
            if " " in key:
                if qualified is None:
                    qualified = [key]
                else:
                    qualified.append(key)
        if qualified is not None:
            # As Twisted's handler: expat's "uri name" becomes the key
            # (uri, name), after the plain attributes, in expat's order.
            # (xml:lang is on most stanzas an XMPP server routes: Prosody
            # puts the client's stream language on each.)
            for key in qualified:
                uri, local = key.rsplit(" ", 1)
                attrs[(uri, local)] = attrs[key]
            for key in qualified:
                del attrs[key]
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
    if READ_WITHOUT_EXPAT:
        _readSimpleStanzas(stream)
    return stream


#: The handlers of an expat parser (C{pyexpat}'s names for them).
_HANDLERS = tuple(name for name in dir(pyexpat.ParserCreate())
                  if name.endswith("Handler"))


def parserWithoutIntern(parser):
    """
    A parser as L{domish.ExpatElementStream} makes it (UTF-8, names with
    their namespace before a space), with C{parser}'s handlers, and no
    C{intern} dictionary.

    C{pyexpat} hands out each name as a new string, then looks it up in
    the parser's C{intern} dictionary and returns the one kept there (or
    keeps it): a dictionary per stream that keeps every name the peer
    ever sent (on CPython without a limit: a peer sending new element or
    attribute names grew it by one entry each), and a lookup per name
    (about 6 % of expat's instructions for a C{<message/>} on CPython).
    Without it the names are equal strings, not the same ones, which no
    reader of these elements depends on.

    @param parser: a new C{pyexpat} parser that has parsed nothing.
    """
    new = pyexpat.ParserCreate("UTF-8", " ", intern=None)
    for name in _HANDLERS:
        handler = getattr(parser, name)
        if handler is not None:
            setattr(new, name, handler)
    return new


# Reading simple stanzas without expat ----------------------------------------

#: Whether L{speedUpElementStream} also reads simple stanzas without expat
#: (L{_readSimpleStanzas}): on PyPy, where that costs about half of what
#: expat and its handlers cost; on CPython it costs more (expat is C
#: there, the reader is not), so it is off.
READ_WITHOUT_EXPAT = platform.python_implementation() == "PyPy"

_NAME = "[A-Za-z_][A-Za-z0-9._-]*"
#: What comes before the first attribute value of a start tag: the
#: element's name and the first attribute's name and C{=}, or the name
#: alone (then the tag has no attribute).
_HEAD = re.compile(
    "(%s)(?:[ \t\n]+((?:xml:)?%s)[ \t\n]*=[ \t\n]*|[ \t\n]*)" % (_NAME, _NAME))
#: What comes between two attribute values: the next attribute's name.
_KEY = re.compile("[ \t\n]+((?:xml:)?%s)[ \t\n]*=[ \t\n]*" % (_NAME,))
_END_NAME = re.compile("(%s)[ \t\n]*" % (_NAME,))
#: Characters text may not hold as read here: carriage returns (expat
#: normalizes line ends) and what XML does not allow.
_BAD_TEXT = re.compile("[\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ENTITIES = {"lt;": "<", "gt;": ">", "amp;": "&", "quot;": '"', "apos;": "'"}
_SPACE = re.compile("[ \t\n]*")
#: The default namespaces read without expat: URI characters, no space.
_NAMESPACE = re.compile("[A-Za-z0-9:/._#?=%~+!$(),;@-]+")
_RESERVED_NAMESPACES = frozenset([NS_XML, "http://www.w3.org/2000/xmlns/"])
#: The parts of start and end tags read before, and what they gave
#: (L{False}: not of the simple kind); bounded (L{keepBounded}: emptied
#: when full, no long part kept).
_heads = {}
_keys = {}
_endNames = {}
_namespaces = {}
_PARTS_MAX = 512


def _cached(cache, pattern, text):
    """
    C{pattern.fullmatch(text)} as groups (or L{False}), remembered in
    C{cache}.
    """
    known = cache.get(text)
    if known is None:
        match = pattern.fullmatch(text)
        known = match.groups() if match is not None else False
        keepBounded(cache, text, known, _PARTS_MAX)
    return known


def _goodNamespace(value):
    known = _namespaces.get(value)
    if known is None:
        known = (_NAMESPACE.fullmatch(value) is not None
                 and value not in _RESERVED_NAMESPACES)
        keepBounded(_namespaces, value, known, _PARTS_MAX)
    return known


#: What L{_readStanza} returns for an element that does not end in its
#: text (yet).
INCOMPLETE = "incomplete"

#: The most bytes of an incomplete stanza that L{_readSimpleStanzas}
#: keeps back from expat until the next chunk (a larger one goes to expat
#: as it comes). Each chunk reads the kept bytes again, so this bounds
#: that work; two reads of the component link (8 KB each) hold any stanza
#: a message makes.
HOLD_LIMIT = 16384


def _readStanza(text, pos, defaultUri, maxElements):
    """
    Read one top-level element of the simple kind at C{text[pos]} (a
    C{<}), building it as the sped-up expat handlers would.

    The simple kind: element and attribute names of ASCII letters, digits
    and C{._-} without prefixes (C{xml:} attributes allowed), default
    namespace declarations of URI characters (C{xmlns='...'}), attribute
    values in single quotes without C{<}, C{>}, C{&} or characters
    C{str.isprintable} refuses, text without C{\r}, characters XML does
    not allow, C{]]>} or entity references other than the five predefined
    ones; no comments, processing instructions, CDATA sections or
    DOCTYPE.

    @return: C{(element, end)}; L{INCOMPLETE} when C{text} ends before the
        element does and what comes before is of that kind; L{None} when
        the element is not of that kind or has more than C{maxElements}
        elements.
    """
    stack = []
    uris = [defaultUri]
    count = 0
    find = text.find
    new = _newElement
    element = _Element
    heads = _heads
    keys = _keys
    while True:
        if text.startswith("<", pos):
            close = find(">", pos)
            if close == -1:
                return INCOMPLETE
            if text.startswith("</", pos):
                if not stack:
                    return None
                known = _cached(_endNames, _END_NAME, text[pos + 2:close])
                e = stack.pop()
                if not known or known[0] != e.name:
                    return None
                uris.pop()
                pos = close + 1
                if not stack:
                    return e, pos
                continue
            count += 1
            if count > maxElements:
                return None
            tag = text[pos + 1:close]
            empty = tag.endswith("/")
            if empty:
                tag = tag[:-1]
            parts = tag.split("'")
            last = len(parts) - 1
            if last & 1:
                return None
            head = _cached(heads, _HEAD, parts[0])
            if not head:
                return None
            name, key = head
            uri = uris[-1]
            attributes = {}
            if last:
                if key is None or parts[last].strip(" \t\n"):
                    return None
                qualified = None
                i = 1
                while True:
                    value = parts[i]
                    if ("<" in value or "&" in value
                            or not value.isprintable()):
                        return None
                    if key == "xmlns":
                        # Expat refuses an empty one here, the reserved
                        # ones and, depending on its version, some
                        # characters (its namespace separator, a space).
                        if "xmlns" in attributes or not _goodNamespace(value):
                            return None
                        uri = value
                        # Kept aside to spot a second one; dropped below.
                        attributes["xmlns"] = value
                    elif key.startswith("xml:"):
                        if qualified is None:
                            qualified = {}
                        qualifiedKey = (NS_XML, key[4:])
                        if qualifiedKey in qualified:
                            return None
                        qualified[qualifiedKey] = value
                    else:
                        if key in attributes:
                            return None
                        attributes[key] = value
                    i += 1
                    if i == last:
                        break
                    known = _cached(keys, _KEY, parts[i])
                    if not known:
                        return None
                    key = known[0]
                    i += 1
                attributes.pop("xmlns", None)
                if qualified is not None:
                    attributes.update(qualified)
            elif key is not None:
                return None
            e = new(element)
            e.uri = uri
            e.name = name
            e.localPrefixes = {}
            e.defaultUri = uri
            e.attributes = attributes
            e.children = []
            if stack:
                parent = stack[-1]
                parent.children.append(e)
                e.parent = parent
            else:
                e.parent = None
            pos = close + 1
            if empty:
                if not stack:
                    return e, pos
                continue
            stack.append(e)
            uris.append(uri)
            continue
        if not stack:
            return None
        lt = find("<", pos)
        if lt == -1:
            return INCOMPLETE
        data = text[pos:lt]
        if not data.isprintable() and _BAD_TEXT.search(data) is not None:
            return None
        if "]]>" in data:
            return None
        if "&" in data:
            pieces = data.split("&")
            out = [pieces[0]]
            for piece in pieces[1:]:
                semicolon = piece.find(";")
                replacement = _ENTITIES.get(piece[:semicolon + 1])
                if semicolon == -1 or replacement is None:
                    return None
                out.append(replacement)
                out.append(piece[semicolon + 1:])
            data = "".join(out)
        pos = lt
        children = stack[-1].children
        if children and type(children[-1]) is str:
            children[-1] = children[-1] + data
        else:
            children.append(data)


#: The element cap of a stream without one (an older Twisted's, before
#: L{xmppgw.safexml} gives it one).
_NO_CAP = 2 ** 62


def _readSimpleStanzas(stream):
    """
    Have C{stream.parse} read whole stanzas of the simple kind
    (L{_readStanza}) itself, without expat, when a chunk starts between
    two stanzas and expat holds nothing back. A chunk that ends inside a
    stanza of that kind (so far) keeps the stanza's bytes back, up to
    L{HOLD_LIMIT}, and reads them again with the next chunk. Everything
    else (the rest of a chunk from the first stanza that is not of that
    kind, an incomplete one over L{HOLD_LIMIT}, and every chunk while
    expat is inside a stanza or holds an incomplete token) goes to expat
    as before.

    The stanzas and events are expat's; what differs is when an error in
    a stanza that was kept back is found: when the stanza is complete (or
    passes L{HOLD_LIMIT}), not in the chunk where the error is; an
    incomplete stanza at the end of the stream is dropped unread, as
    expat's buffer is.

    Expat costs most of what reading a stanza costs (on CPython about 10
    us for a C{<message/>} with a body: the byte scan, and seven calls of
    the Python handlers that build the elements). A chunk from the XMPP
    server usually holds whole stanzas.

    The elements are the ones the handlers of L{speedUpElementStream}
    build (C{tests.test_fastxml} compares both on listed and generated
    stanzas, whole and cut anywhere); the element and size caps apply
    (a stanza over either goes to expat, which refuses it). Where expat
    stands is known from C{parser.CurrentByteIndex} after each chunk:
    the bytes it has processed, which equals the bytes it was given when
    it holds nothing back.
    """
    parser = stream.parser
    slowParse = stream.parse
    endHandler = parser.EndElementHandler
    # [bytes given to expat, whether it holds nothing back, whether the
    # root element has ended]
    state = [0, False, False]

    def onEndElement(name):
        if stream.currElem is None:
            # The root's end tag: nothing may follow (expat refuses it).
            state[2] = True
        endHandler(name)

    parser.EndElementHandler = onEndElement

    def expat(data):
        try:
            slowParse(data)
        finally:
            state[0] += len(data)
            state[1] = parser.CurrentByteIndex == state[0]

    # The bytes of an incomplete stanza kept back from expat (at most
    # HOLD_LIMIT): read again with the next chunk.
    held = [b""]

    def parse(buffer):
        if held[0]:
            buffer = held[0] + buffer
            held[0] = b""
        if (not state[1] or state[2] or stream.currElem is not None
                or stream.documentStarted != 1
                or type(buffer) is not bytes):
            return expat(buffer)
        cut = b""
        try:
            text = buffer.decode("utf-8")
        except UnicodeDecodeError:
            # The chunk may end inside a character (of an incomplete
            # stanza): read up to it.
            for k in (1, 2, 3):
                try:
                    text = buffer[:-k].decode("utf-8")
                except UnicodeDecodeError:
                    continue
                cut = buffer[-k:]
                break
            else:
                return expat(buffer)
        pos = 0
        end = len(text)
        read = False
        incomplete = False
        while True:
            pos = _SPACE.match(text, pos).end()
            if pos == end:
                if not cut:
                    return
                incomplete = True
                break
            # Checked per stanza: a handler may end or reset the stream,
            # or change the caps.
            if (stream.currElem is not None or state[2]
                    or text[pos] != "<"):
                break
            stanza = _readStanza(
                text, pos, stream.defaultNsStack[-1],
                getattr(stream, "maxElementCount", _NO_CAP))
            if stanza is None:
                break
            if stanza is INCOMPLETE:
                incomplete = True
                break
            element, after = stanza
            maxSize = getattr(stream, "maxStanzaSize", None)
            if (maxSize is not None and (after - pos) * 4 > maxSize
                    and len(text[pos:after].encode("utf-8")) > maxSize):
                break
            pos = after
            read = True
            stream.elementCount = 0
            stream.stanzaSize = 0
            stream.ElementEvent(element)
        rest = text[pos:].encode("utf-8") + cut
        capped = (not _COUNTS_ELEMENTS
                  and getattr(stream, "_xmppgwCapped", False))
        if read and capped:
            # The caps of xmppgw.safexml counted the whole chunk before
            # this call; the stanzas read here reset them: count the rest.
            stream.stanzaSize = len(rest)
        if (incomplete and len(rest) <= HOLD_LIMIT
                and stream.currElem is None and not state[2]):
            # The stanza the chunk ends inside of waits for the next chunk
            # here, not in expat, which would then take every chunk until
            # one ended between two stanzas: under load (chunks of a
            # continuous stream) nearly none. Its bytes count for the size
            # cap as they arrive (xmppgw.safexml's caps counted them
            # already; Twisted's own count them when expat gets them): one
            # over the cap goes to expat, which refuses it as before.
            counted = (getattr(stream, "stanzaSize", 0)
                       + (0 if capped else len(rest)))
            maxSize = getattr(stream, "maxStanzaSize", None)
            if maxSize is None or counted <= maxSize:
                held[0] = rest
                return
        expat(rest)

    stream.parse = parse
