# -*- test-case-name: tests.test_policy -*-
"""
Restricted XML for the XMPP streams the gateway reads (RFC 6120 section 11).

Twisted's L{domish.elementStream} is an L{domish.ExpatElementStream}
(pyexpat). Expat accepts a DOCTYPE with an internal subset, declares the
entities in it and expands them: the "billion laughs" document. Expat 2.4 and
later cap the amplification, but XMPP forbids all of it anyway: "An XMPP
stream MUST NOT contain ... comments, processing instructions, internal or
external DTD subsets, internal or external entity references (with the
exception of the predefined entities)" (RFC 6120 section 11.1).

L{hardenXmlStream} makes an L{XmlStream}'s parser raise
L{domish.ParserError} at the first DOCTYPE, entity declaration, processing
instruction, comment or external entity reference (the stream's owner then
drops the connection, as L{XmlStream.dataReceived} does for any XML error),
and caps the bytes of one stanza (C{maxStanzaSize}). Undefined entity
references (C{&foo;} without a DTD) are already a well-formedness error in
expat. The hardening survives L{XmlStream.reset} (a new parser after TLS or
SASL).
"""

import xml.etree.ElementTree as ET

from twisted.words.xish import domish

__all__ = ["hardenParser", "hardenXmlStream", "parseDocument", "RestrictedXML"]


class RestrictedXML(domish.ParserError):
    """
    The peer sent XML that XMPP forbids (RFC 6120 section 11.1).
    """


def _refuse(what):
    def handler(*args):
        raise RestrictedXML(f"{what} is not allowed in an XMPP stream (RFC 6120 11.1)")

    return handler


def hardenParser(stream, maxStanzaSize=None):
    """
    Harden one element stream (a L{domish.ExpatElementStream}).

    @param stream: the element stream.
    @param maxStanzaSize: the most bytes of one stanza, or L{None} to keep
        Twisted's limit.
    @return: C{stream}.
    """
    parser = getattr(stream, "parser", None)
    if (parser is not None and not hasattr(stream, "maxStanzaSize")
            and not getattr(stream, "_xmppgwCapped", False)):
        _addStanzaCaps(stream, parser)
    if (parser is not None and getattr(parser, "intern", None) is not None
            and not getattr(stream, "_xmppgwInternBounded", False)):
        _boundIntern(stream, parser)
    if maxStanzaSize is not None and hasattr(stream, "maxStanzaSize"):
        stream.maxStanzaSize = maxStanzaSize
    if parser is None:  # not expat: nothing more to set
        return stream
    import pyexpat

    parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse("a DOCTYPE")
    parser.EntityDeclHandler = _refuse("an entity declaration")
    parser.UnparsedEntityDeclHandler = _refuse("an entity declaration")
    parser.NotationDeclHandler = _refuse("a notation declaration")
    parser.ExternalEntityRefHandler = _refuse("an external entity")
    parser.SkippedEntityHandler = _refuse("an entity reference")
    parser.ProcessingInstructionHandler = _refuse("a processing instruction")
    parser.CommentHandler = _refuse("a comment")
    return stream


#: The most elements in one stanza (Twisted 26's C{maxElementCount}).
MAX_ELEMENT_COUNT = 100000

#: Twisted's default byte cap for one stanza (Twisted 26's
#: C{maxStanzaSize}), used where the caller sets none.
DEFAULT_MAX_STANZA_SIZE = 10 * 1024 * 1024


def _addStanzaCaps(stream, parser):
    """
    Give an L{domish.ExpatElementStream} of a Twisted older than 26 (the
    one Python 3.9 gets, see L{xmppgw.compat}) the per-stanza caps Twisted
    26 has: C{maxStanzaSize} bytes, counted as they are given to C{parse}
    (so expat's own buffering is bounded too), and C{maxElementCount}
    elements, both reset when a stanza is complete; past either,
    L{domish.ParserError}.
    """
    stream._xmppgwCapped = True
    stream.maxStanzaSize = DEFAULT_MAX_STANZA_SIZE
    stream.maxElementCount = MAX_ELEMENT_COUNT
    stream.stanzaSize = 0
    stream.elementCount = 0
    parse = stream.parse
    start = parser.StartElementHandler
    end = parser.EndElementHandler

    def cappedParse(buffer):
        stream.stanzaSize += len(buffer)
        parse(buffer)
        if stream.stanzaSize > stream.maxStanzaSize:
            raise domish.ParserError("Maximum stanza size exceeded")

    def countedStart(name, attrs):
        if stream.documentStarted == 1:
            stream.elementCount += 1
            if stream.elementCount > stream.maxElementCount:
                raise domish.ParserError("Maximum element count exceeded")
        start(name, attrs)

    def resettingEnd(name):
        current = stream.currElem
        end(name)
        if current is not None and current.parent is None:
            # A stanza (a child of the stream's root) is complete.
            stream.elementCount = 0
            stream.stanzaSize = 0

    stream.parse = cappedParse
    parser.StartElementHandler = countedStart
    parser.EndElementHandler = resettingEnd


#: The most entries kept in an expat parser's C{intern} dictionary between
#: stanzas (L{_boundIntern}).
INTERN_LIMIT = 1000


def _boundIntern(stream, parser):
    """
    Empty C{parser}'s C{intern} dictionary whenever an element ends with
    more than L{INTERN_LIMIT} entries in it: it is only a cache of strings
    (expat hands out equal strings either way). An expat parser keeps
    every element and attribute name in it, and on PyPy every attribute
    value too, so on a stream that lives for days (the component link)
    the dictionary, and the memory, would grow with every new name a peer
    sends (and on PyPy with every stanza's C{id}, C{to} and C{from}). The
    gateway's own streams have parsers without one
    (L{xmppgw.fastxml.parserWithoutIntern}); this bounds the others.
    """
    stream._xmppgwInternBounded = True
    intern = parser.intern
    end = parser.EndElementHandler

    def boundedEnd(name):
        end(name)
        if len(intern) > INTERN_LIMIT:
            intern.clear()

    parser.EndElementHandler = boundedEnd


def hardenXmlStream(xs, maxStanzaSize=None):
    """
    Harden an L{XmlStream}'s parser now and after each reset.

    @param xs: a L{twisted.words.xish.xmlstream.XmlStream}.
    @param maxStanzaSize: the most bytes of one stanza, or L{None}.
    """
    if getattr(xs, "_xmppgwHardened", None) is None:
        original = xs._initializeStream

        def initializeStream():
            original()
            hardenParser(xs.stream, xs._xmppgwHardened)

        xs._initializeStream = initializeStream
    xs._xmppgwHardened = maxStanzaSize
    stream = getattr(xs, "stream", None)
    if stream is not None:
        hardenParser(stream, maxStanzaSize)


def parseDocument(body, what):
    """
    Parse a small XML body carried in SIP (PIDF, isComposing, IMDN).

    A DOCTYPE or entity declaration is refused before parsing, so no entity
    is ever expanded.

    @param body: the document, bytes.
    @param what: its name, for error messages.
    @return: the root L{xml.etree.ElementTree.Element}.
    @raise ValueError: for a DOCTYPE or malformed XML.
    """
    upper = body.upper()
    if b"<!DOCTYPE" in upper or b"<!ENTITY" in upper:
        raise ValueError(f"DOCTYPE not allowed in {what}")
    try:
        return ET.fromstring(body)
    except ET.ParseError as e:
        raise ValueError(f"malformed {what}: {e}")
