"""
Interop tests of server mode: C{twistd xmppgw} with C{backend = "server"}
(domain C{gw.test}) federating over S2S with a real private Prosody (domain
C{xmpp.test}) on loopback.

Prosody requires TLS on S2S (C{s2s_require_encryption}) and finds
C{gw.test} through C{tests/interop/prosody_s2s/mod_xmppgw_test_resolver.lua}
(no DNS); the gateway pins C{xmpp.test} with C{[xmpp.s2s_peers]}. Both
certificates come from a test CA made with C{openssl} in the test's
directory.

 - L{S2SVerifiedTests}: Prosody trusts the test CA, the gateway verifies
   Prosody's certificate (C{tls_verify = true}, C{tls_ca}).
 - L{S2SDialbackOnlyTests}: Prosody does not trust the test CA (the
   gateway's certificate is invalid for it, so it relies on dialback over
   TLS, C{s2s_secure_auth = false}) and the gateway does not verify
   Prosody's certificate (C{tls_verify = false}).

Both run SIP -> gateway -> Prosody user and Prosody user -> gateway -> SIP;
the first also checks that a stream which never verified its domain is
refused (C{<invalid-from/>}, and C{<policy-violation/>} before STARTTLS).
"""

import os
import re
import secrets
import socket
import ssl
import time

from twisted.trial.unittest import TestCase

from tests.interop.harness import (
    LOCAL, LOG_FLUSH, GatewayProcess, HarnessError, SharedFixture, SIPReceiver,
    SIPUDPClient, XMPPClient, buildMessage, cleanupAll, freePort,
    makeWorkdir, newCallID, requirePeers, uniqueID)
from tests.interop.prosody_s2s import PrivateS2SProsody, makeTestCA

GATEWAY = "gw.test"
XMPP = "xmpp.test"
ALICE = f"alice@{XMPP}"
ALICE_VIA_SIP = f"sip:alice*{XMPP}@{GATEWAY}"
BOB_SIP = "sip:bob@sip.test"
BOB_VIA_XMPP = f"bob*sip.test@{GATEWAY}"
READY_LINE = "XMPP server mode: S2S for gw.test listening on"


def serverConfig(s2sPort, sipPort, peerDomain, peerPort, certificate, ca,
                 verify, outboundProxy, secret=None):
    """
    The TOML of a server-mode gateway federating with the XMPP server of
    C{peerDomain}, pinned to C{LOCAL:peerPort}; C{secret} is the dialback
    secret (random when L{None}).
    """
    cert, key = certificate
    lines = [
        "[xmpp]",
        'backend = "server"',
        f'gateway_domain = "{GATEWAY}"',
        f'xmpp_domain = "{GATEWAY}"',
        f'xmpp_host = "{LOCAL}"',
        f"xmpp_port = {s2sPort}",
        f'dialback_secret = "{secret or secrets.token_hex(20)}"',
        f'tls_certificate = "{cert}"',
        f'tls_private_key = "{key}"',
        f'tls_ca = "{ca}"',
        "tls_required = true",
        f"tls_verify = {'true' if verify else 'false'}",
        f'outbound_proxy = "{outboundProxy}"',
        "",
        "[xmpp.s2s_peers]",
        f'"{peerDomain}" = "{LOCAL}:{peerPort}"',
        "",
        "[sip]",
        f'listen = ["udp:{LOCAL}:{sipPort}", "tcp:{LOCAL}:{sipPort}"]',
        "hold_timeout = 15",
        "",
        "[log]",
        "messages = true",
        "traffic_sip = true",
        "traffic_xmpp = true",
        f"flush_interval = {LOG_FLUSH}",
        "",
    ]
    return "\n".join(lines)


class _S2SBase:
    """
    One Prosody, one server-mode gateway, one SIP receiver and Alice, shared
    by the tests of a class.
    """

    prosodyTrustsCA = True
    gatewayVerifies = True

    prosody = gateway = receiver = alice = None

    @classmethod
    def setUpClass(cls):
        requirePeers("prosody", "prosodyctl")
        workdir = makeWorkdir(f"s2s-{cls.__name__}")
        ca = makeTestCA(os.path.join(workdir, "ca"))
        gatewayCert = ca.issue(GATEWAY)
        prosodyCert = ca.issue(XMPP)
        cls.s2sPort = freePort("tcp")
        cls.prosody = PrivateS2SProsody(
            os.path.join(workdir, "prosody"), prosodyCert,
            remotes={GATEWAY: (LOCAL, cls.s2sPort)},
            trustedCA=ca.caCert if cls.prosodyTrustsCA else None,
            domain=XMPP, users={"alice": "alice-pw"}, logLevel="debug")
        cls.prosody.start()
        cls.receiver = SIPReceiver("udp").start()
        cls.sipPort = freePort("both")
        cls.gateway = GatewayProcess(
            serverConfig(cls.s2sPort, cls.sipPort, XMPP, cls.prosody.s2sPort,
                         gatewayCert,
                         ca.caCert, cls.gatewayVerifies, cls.receiver.uri),
            workdir=os.path.join(workdir, "gateway"))
        os.makedirs(cls.gateway.workdir, exist_ok=True)
        cls.gateway.start(timeout=30, waitForLink=False)
        cls.gateway.waitForLog(READY_LINE, timeout=10)
        cls.alice = XMPPClient(ALICE, "alice-pw", cls.prosody.c2sPort).start()

    @classmethod
    def tearDownClass(cls):
        cleanupAll(cls.alice, cls.gateway, cls.receiver, cls.prosody)
        cls.alice = cls.gateway = cls.receiver = cls.prosody = None

    def setUp(self):
        SharedFixture.acquire(type(self))
        self.receiver.status = 200
        self.receiver.clear()

    def context(self):
        return (f"{self.gateway.describe()}\n--- prosody log (tail):\n"
                f"{self.prosody.log()[-6000:]}")

    def sendSIP(self, body, timeout=20.0):
        callID = newCallID()
        with SIPUDPClient() as client:
            request = buildMessage(ALICE_VIA_SIP, BOB_SIP, body, callID=callID,
                                   viaPort=client.port)
            try:
                return client.request(LOCAL, self.sipPort, request, timeout)
            except HarnessError as e:
                raise HarnessError(f"{e}\n{self.context()}")

    def test_sipToProsodyUser(self):
        """
        A SIP MESSAGE reaches the Prosody user over S2S (TLS, dialback) and
        is answered 202 only once the stanza is written to the verified
        stream.
        """
        body = "over s2s " + uniqueID()
        response = self.sendSIP(body)
        self.assertEqual(response.code, 202, f"{response}\n{self.context()}")
        try:
            message = self.alice.expectMessage(timeout=15, body=body)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.context()}")
        self.assertEqual(message["from"], BOB_VIA_XMPP)
        self.assertIn("S2S stream to xmpp.test verified by dialback (TLS: yes",
                      self.gateway.log())

    def test_prosodyUserToSIP(self):
        """
        A message from the Prosody user reaches the SIP receiver through an
        incoming S2S stream that Prosody verified by dialback.
        """
        body = "from prosody " + uniqueID()
        self.alice.send(BOB_VIA_XMPP, body=body, id=uniqueID("x"))
        try:
            requests = self.receiver.waitForMatching(
                lambda r: r.method == "MESSAGE" and body.encode() in r.body,
                timeout=20)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.context()}")
        request = requests[0]
        self.assertEqual(request.uri, "sip:bob@sip.test")
        self.assertIn("alice*xmpp.test@gw.test", request.header("From"))
        self.assertIn("S2S stream from xmpp.test verified by dialback (TLS: yes)",
                      self.gateway.log())

    def test_sipToProsodyUserTwice(self):
        """
        A second message reuses the verified stream: still 202, and no
        second dialback.
        """
        first = self.sendSIP("first " + uniqueID())
        self.assertEqual(first.code, 202, self.context())
        before = self.gateway.log().count("S2S stream to xmpp.test verified")
        body = "second " + uniqueID()
        second = self.sendSIP(body)
        self.assertEqual(second.code, 202, self.context())
        self.alice.expectMessage(timeout=15, body=body)
        self.assertEqual(
            self.gateway.log().count("S2S stream to xmpp.test verified"), before)


class S2SVerifiedTests(_S2SBase, TestCase):
    """
    Prosody trusts the test CA; the gateway verifies Prosody's certificate.
    """

    def _open(self):
        sock = socket.create_connection((LOCAL, self.s2sPort), timeout=10)
        sock.settimeout(10)
        return sock

    def _readUntil(self, sock, pattern, limit=65536):
        data = b""
        deadline = time.monotonic() + 10
        while not re.search(pattern, data) and len(data) < limit:
            if time.monotonic() > deadline:
                break
            try:
                chunk = sock.recv(4096)
            except (socket.timeout, ssl.SSLError, OSError):
                break
            if not chunk:
                break
            data += chunk
        return data

    def _header(self, frm):
        return (f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                f"xmlns:stream='http://etherx.jabber.org/streams' "
                f"xmlns:db='jabber:server:dialback' from='{frm}' "
                f"to='{GATEWAY}' version='1.0'>").encode()

    def test_spoofedStanzaRefused(self):
        """
        A stream that completes STARTTLS but never verifies its domain and
        sends a stanza claiming to come from xmpp.test gets
        C{<invalid-from/>}, and the stanza never reaches SIP.
        """
        sock = self._open()
        try:
            sock.sendall(self._header(XMPP))
            data = self._readUntil(sock, rb"</stream:features>")
            self.assertIn(b"starttls", data)
            sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            data = self._readUntil(sock, rb"<proceed")
            self.assertIn(b"proceed", data)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            tls = context.wrap_socket(sock, server_hostname=GATEWAY)
            tls.sendall(self._header(XMPP))
            data = self._readUntil(tls, rb"</stream:features>")
            self.assertIn(b"urn:xmpp:features:dialback", data)
            body = "spoofed " + uniqueID()
            tls.sendall(
                f"<message from='mallory@{XMPP}' to='{BOB_VIA_XMPP}'>"
                f"<body>{body}</body></message>".encode())
            data = self._readUntil(tls, rb"</stream:stream>")
            self.assertIn(b"invalid-from", data, self.context())
            tls.close()
        finally:
            sock.close()
        time.sleep(1.0)
        self.assertEqual(
            [r for r in self.receiver.requests if body.encode() in r.body], [])

    def test_certificatesVerified(self):
        """
        In this run both sides verified the other's certificate: Prosody
        (chain and identity valid for gw.test) and the gateway
        (C{certificate checked: yes}).
        """
        response = self.sendSIP("verified " + uniqueID())
        self.assertEqual(response.code, 202, self.context())
        log = self.prosody.log()
        self.assertIn("certificate chain validation result: valid", log)
        self.assertIn("certificate identity validation result: valid", log)
        self.assertIn("certificate checked: yes", self.gateway.log())

    def test_plaintextRefused(self):
        """
        With TLS required, dialback before STARTTLS gets
        C{<policy-violation/>}.
        """
        sock = self._open()
        try:
            sock.sendall(self._header(XMPP))
            self._readUntil(sock, rb"</stream:features>")
            sock.sendall(f"<db:result from='{XMPP}' to='{GATEWAY}'>abc"
                         f"</db:result>".encode())
            data = self._readUntil(sock, rb"</stream:stream>")
            self.assertIn(b"policy-violation", data)
        finally:
            sock.close()


class S2SDialbackOnlyTests(_S2SBase, TestCase):
    """
    Neither side can verify the other's certificate: dialback over TLS
    authenticates (Prosody with C{s2s_secure_auth = false}, the gateway with
    C{tls_verify = false}).
    """

    prosodyTrustsCA = False
    gatewayVerifies = False

    def test_prosodyRejectedCertificateUsedDialback(self):
        """
        In this run Prosody finds the gateway's certificate invalid (it does
        not trust the test CA), so the stream it accepted was authenticated
        by dialback over TLS alone.
        """
        response = self.sendSIP("dialback only " + uniqueID())
        self.assertEqual(response.code, 202, self.context())
        log = self.prosody.log()
        self.assertIn("certificate chain validation result: invalid", log)
        self.assertNotIn("certificate chain validation result: valid", log)
        self.assertIn("certificate checked: no", self.gateway.log())
