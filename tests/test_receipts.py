"""
Tests for L{xmppgw.receipts}: XEP-0184 <-> IMDN, through the router with
fakes and a Clock.
"""

from twisted.trial import unittest

from tests.test_router import (
    FakeServerTransaction, RouterTestsMixin, response, sipMessage, xmppMessage)
from xmppgw.receipts import (
    CPIM_TYPE, IMDN_TYPE, NS_RECEIPTS, Receipts, buildCPIM, buildIMDN,
    parseCPIM, parseIMDN)


def imdnMessage(messageID, status="delivered", sender="sip:carol@sip.example",
                uri="sip:alice*xmpp.example@gw.example", branch="z9hG4bKi"):
    content = buildIMDN(messageID, "2024-01-01T00:00:00Z", sender)
    if status != "delivered":
        content = content.replace(b"<delivered/>", f"<{status}/>".encode())
    body = buildCPIM(sender, uri, [("imdn.Message-ID", "n1")], IMDN_TYPE, content,
                     extraMIME=[("Content-Disposition", "notification")])
    return sipMessage(uri=uri, sender=sender, body=body.decode(),
                      contentType=CPIM_TYPE, branch=branch)


class DocumentTests(unittest.TestCase):
    """
    CPIM and IMDN documents.
    """

    def test_cpim(self):
        """
        A CPIM body splits into headers, MIME headers and content.
        """
        body = buildCPIM("sip:a@x", "sip:b@y", [("imdn.Message-ID", "m1")],
                         "text/plain;charset=UTF-8", "héllo".encode())
        headers, mime, content = parseCPIM(body)
        self.assertEqual(headers["imdn.message-id"], "m1")
        self.assertEqual(headers["from"], "<sip:a@x>")
        self.assertEqual(mime["content-type"], "text/plain;charset=UTF-8")
        self.assertEqual(content.decode(), "héllo")

    def test_imdn(self):
        """
        An IMDN parses to its message id, kind and status; bad ones fail.
        """
        self.assertEqual(parseIMDN(buildIMDN("m<1>", "t", "sip:a@x")),
                         ("m<1>", "delivery", "delivered"))
        for bad in [b"<x", b"<imdn/>", b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"/>',
                    b"<!DOCTYPE imdn><imdn/>"]:
            self.assertRaises(ValueError, parseIMDN, bad)


class RouterReceiptTests(RouterTestsMixin, unittest.TestCase):
    """
    The router with a L{Receipts} extension.
    """

    def setUp(self):
        RouterTestsMixin.setUp(self)
        self.receipts = Receipts(self.clock, pendingTTL=100)
        self.router.extensions.append(self.receipts)

    def receive(self, request):
        txn = FakeServerTransaction()
        self.sip.requestHandler(request, txn)
        return txn

    def requested(self):
        stanza = xmppMessage(id="x1")
        stanza.addElement((NS_RECEIPTS, "request"))
        self.router.xmppMessageReceived(stanza)
        [(request, _, d)] = self.sip.sent
        return request, d

    def test_requestWrappedInCPIM(self):
        """
        A message asking for a receipt goes CPIM-wrapped with the IMDN
        headers; its 202 (or 200) is not a receipt.
        """
        request, d = self.requested()
        self.assertEqual(request.headers.get("Content-Type"), CPIM_TYPE)
        headers, mime, content = parseCPIM(request.body)
        self.assertEqual(headers["imdn.disposition-notification"], "positive-delivery")
        self.assertIn("imdn.message-id", headers)
        self.assertIn("datetime", headers)
        self.assertEqual(headers["ns"], "imdn <urn:ietf:params:imdn>")
        self.assertEqual(content, b"hi")
        d.callback(response(202))
        self.assertEqual(self.link.sent, [])

    def test_imdnToReceived(self):
        """
        A positive-delivery IMDN from the recipient -> <received id=.../> to
        the XMPP sender.
        """
        request, d = self.requested()
        d.callback(response(202))
        imdnID = parseCPIM(request.body)[0]["imdn.message-id"]
        txn = self.receive(imdnMessage(imdnID))
        self.assertEqual([r.code for r in txn.responses], [202])
        [stanza] = self.link.sent
        self.assertEqual(stanza["to"], "alice@xmpp.example/phone")
        self.assertEqual(stanza["from"], "carol*sip.example@gw.example")
        [received] = stanza.elements(NS_RECEIPTS, "received")
        self.assertEqual(received["id"], "x1")
        self.assertIsNone(stanza.body)

    def test_imdnIgnored(self):
        """
        IMDNs for unknown messages, from someone else, or not positive
        delivery, are answered but not relayed.
        """
        request, d = self.requested()
        imdnID = parseCPIM(request.body)[0]["imdn.message-id"]
        for i, message in enumerate([
                imdnMessage("unknown", branch="z9hG4bKa"),
                imdnMessage(imdnID, sender="sip:mallory@sip.example", branch="z9hG4bKb"),
                imdnMessage(imdnID, status="failed", branch="z9hG4bKc")]):
            txn = self.receive(message)
            self.assertEqual([r.code for r in txn.responses], [202])
        self.assertEqual(self.link.sent, [])

    def test_expired(self):
        """
        After pendingTTL an IMDN is no longer matched.
        """
        request, d = self.requested()
        imdnID = parseCPIM(request.body)[0]["imdn.message-id"]
        self.clock.advance(100)
        self.receive(imdnMessage(imdnID))
        self.assertEqual(self.link.sent, [])

    def sipRequesting(self):
        body = buildCPIM("sip:bob@sip.example", "sip:alice*xmpp.example@gw.example",
                         [("imdn.Message-ID", "sip-m1"),
                          ("DateTime", "2024-01-01T00:00:00Z"),
                          ("imdn.Disposition-Notification",
                           "positive-delivery, display")],
                         "text/plain;charset=UTF-8", b"hello")
        self.receive(sipMessage(body=body.decode(), contentType=CPIM_TYPE))
        [stanza] = self.link.sent
        return stanza

    def test_sipRequestToXMPP(self):
        """
        A CPIM MESSAGE asking for positive-delivery gets a receipt request.
        """
        stanza = self.sipRequesting()
        self.assertEqual(str(stanza.body), "hello")
        self.assertEqual(len(list(stanza.elements(NS_RECEIPTS, "request"))), 1)

    def test_receivedToIMDN(self):
        """
        <received/> from the recipient -> a positive-delivery IMDN to the
        SIP sender; from anyone else -> nothing.
        """
        stanza = self.sipRequesting()
        ack = xmppMessage(sender="mallory@xmpp.example/x", to=stanza["from"], body=None)
        ack.addElement((NS_RECEIPTS, "received"))["id"] = stanza["id"]
        self.router.xmppMessageReceived(ack)
        self.assertEqual(self.sip.sent, [])
        ack = xmppMessage(sender="alice@xmpp.example/phone", to=stanza["from"],
                          body=None)
        ack.addElement((NS_RECEIPTS, "received"))["id"] = stanza["id"]
        self.router.xmppMessageReceived(ack)
        [(request, _, d)] = self.sip.sent
        self.assertEqual(request.uri, "sip:bob@sip.example")
        self.assertEqual(request.headers.get("Content-Type"), CPIM_TYPE)
        headers, mime, content = parseCPIM(request.body)
        self.assertEqual(mime["content-disposition"], "notification")
        self.assertEqual(parseIMDN(content), ("sip-m1", "delivery", "delivered"))
        d.callback(response(404))
        self.assertEqual(len(self.link.sent), 1)  # no error bounced

    def test_disabled(self):
        """
        Disabled: no wrapping, and an IMDN gets 415 as any non-text body.
        """
        self.receipts.enabled = False
        request, d = self.requested()
        self.assertEqual(request.headers.get("Content-Type"), "text/plain;charset=UTF-8")
        txn = self.receive(imdnMessage("x"))
        self.assertEqual([r.code for r in txn.responses], [415])
