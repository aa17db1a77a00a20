"""
Tests for L{xmppgw.chatstates}: the RFC 3994 <-> XEP-0085 table, and the
router with the extension, on fakes and a Clock.
"""

from twisted.trial import unittest

from tests.test_router import (
    FakeServerTransaction, RouterTestsMixin, response, sipMessage, xmppMessage)
from xmppgw.chatstates import (
    ISCOMPOSING_TYPE, NS_CHATSTATES, ChatStates, IsComposingError,
    buildIsComposing, chatStateOf, parseIsComposing, sipToXMPPState,
    xmppToSIPState)


def chatState(state, sender="alice@xmpp.example/phone",
              to="carol*sip.example@gw.example"):
    el = xmppMessage(sender=sender, to=to, body=None, id="cs1")
    el.addElement((NS_CHATSTATES, state))
    return el


class MappingTests(unittest.TestCase):
    """
    The mapping tables and the isComposing document.
    """

    def test_tables(self):
        """
        composing <-> active; active/paused/inactive -> idle; gone is not
        mapped; idle and unknown -> active.
        """
        self.assertEqual(xmppToSIPState("composing"), "active")
        for state in ("active", "paused", "inactive"):
            self.assertEqual(xmppToSIPState(state), "idle")
        self.assertIsNone(xmppToSIPState("gone"))
        self.assertIsNone(xmppToSIPState(None))
        self.assertEqual(sipToXMPPState("active"), "composing")
        self.assertEqual(sipToXMPPState("idle"), "active")

    def test_document(self):
        """
        Documents build and parse; unknown states are idle; bad ones fail.
        """
        self.assertEqual(parseIsComposing(buildIsComposing("active", 120)),
                         ("active", 120))
        self.assertEqual(parseIsComposing(buildIsComposing("idle")), ("idle", None))
        self.assertEqual(parseIsComposing(
            b'<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
            b"<state>thinking</state></isComposing>"), ("idle", None))
        for bad in [b"<x", b"<isComposing/>",
                    b'<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"/>',
                    b"<!DOCTYPE x><x/>"]:
            self.assertRaises(IsComposingError, parseIsComposing, bad)
        self.assertRaises(ValueError, buildIsComposing, "typing")

    def test_chatStateOf(self):
        """
        The state child in the XEP-0085 namespace, or None.
        """
        self.assertEqual(chatStateOf(chatState("paused")), "paused")
        self.assertIsNone(chatStateOf(xmppMessage()))


class RouterChatStateTests(RouterTestsMixin, unittest.TestCase):
    """
    The router with a L{ChatStates} extension.
    """

    def setUp(self):
        RouterTestsMixin.setUp(self)
        self.chatStates = ChatStates(self.clock, suppressInterval=100)
        self.router.extensions.append(self.chatStates)

    def receive(self, request):
        txn = FakeServerTransaction()
        self.sip.requestHandler(request, txn)
        return txn

    def isComposing(self, state, branch="z9hG4bK1"):
        return sipMessage(body=buildIsComposing(state).decode(),
                          contentType=ISCOMPOSING_TYPE, branch=branch)

    def test_sipToXMPP(self):
        """
        isComposing active -> a standalone <composing/>; a repeat is
        answered but not relayed; idle -> <active/>.
        """
        txn = self.receive(self.isComposing("active"))
        self.assertEqual([r.code for r in txn.responses], [202])
        [stanza] = self.link.sent
        self.assertEqual(chatStateOf(stanza), "composing")
        self.assertIsNone(stanza.body)
        self.assertEqual((stanza["from"], stanza["to"]),
                         ("bob*sip.example@gw.example", "alice@xmpp.example"))
        txn = self.receive(self.isComposing("active", branch="z9hG4bK2"))
        self.assertEqual([r.code for r in txn.responses], [202])
        self.assertEqual(len(self.link.sent), 1)
        self.receive(self.isComposing("idle", branch="z9hG4bK3"))
        self.assertEqual(chatStateOf(self.link.sent[-1]), "active")

    def test_contentResets(self):
        """
        After a content message, the same state is relayed again.
        """
        self.receive(self.isComposing("active"))
        self.receive(sipMessage(branch="z9hG4bK2"))
        self.receive(self.isComposing("active", branch="z9hG4bK3"))
        self.assertEqual([chatStateOf(s) for s in self.link.sent],
                         ["composing", None, "composing"])

    def test_offTowardsXMPP(self):
        """
        Off towards XMPP: isComposing gets 415.
        """
        self.chatStates.toXMPP = False
        txn = self.receive(self.isComposing("active"))
        self.assertEqual([r.code for r in txn.responses], [415])
        self.assertEqual(self.link.sent, [])

    def test_xmppToSIP(self):
        """
        <composing/> -> an isComposing MESSAGE; paused after active (both
        idle) is not repeated; gone is not mapped.
        """
        self.router.xmppMessageReceived(chatState("composing"))
        [(request, target, d)] = self.sip.sent
        self.assertEqual(request.headers.get("Content-Type"), ISCOMPOSING_TYPE)
        self.assertEqual(parseIsComposing(request.body)[0], "active")
        d.callback(response(200))
        self.router.xmppMessageReceived(chatState("active"))
        self.sip.sent[-1][2].callback(response(200))
        self.router.xmppMessageReceived(chatState("paused"))
        self.router.xmppMessageReceived(chatState("gone"))
        self.assertEqual(len(self.sip.sent), 2)
        self.assertEqual(parseIsComposing(self.sip.sent[1][0].body)[0], "idle")

    def test_415Suppresses(self):
        """
        A 415 is not bounced to XMPP and stops isComposing to that URI for
        suppressInterval.
        """
        self.router.xmppMessageReceived(chatState("composing"))
        self.sip.sent[0][2].callback(response(415))
        self.assertEqual(self.link.sent, [])
        self.router.xmppMessageReceived(chatState("active"))
        self.assertEqual(len(self.sip.sent), 1)
        self.clock.advance(100)
        self.router.xmppMessageReceived(chatState("active"))
        self.assertEqual(len(self.sip.sent), 2)

    def test_offTowardsSIP(self):
        """
        Off towards SIP: nothing is sent, nothing bounced.
        """
        self.chatStates.toSIP = False
        self.router.xmppMessageReceived(chatState("composing"))
        self.assertEqual(self.sip.sent, [])
        self.assertEqual(self.link.sent, [])

    def test_bodyWithState(self):
        """
        A message with a body and a state goes as text only.
        """
        stanza = xmppMessage()
        stanza.addElement((NS_CHATSTATES, "active"))
        self.router.xmppMessageReceived(stanza)
        [(request, _, _)] = self.sip.sent
        self.assertEqual(request.headers.get("Content-Type"), "text/plain;charset=UTF-8")
        self.assertEqual(request.body, b"hi")
