"""
Interop tests of server mode with a second real peer: C{twistd xmppgw} with
C{backend = "server"} (domain C{gw.test}) federating over S2S with a private
ejabberd 23.01 (domain C{ej.test}) on loopback.

ejabberd (L{xmppgw.clusterpeers.PrivateEjabberd} with an C{ejabberd_s2s_in}
listener, C{mod_s2s_dialback}, C{s2s_access: all}) requires STARTTLS on S2S
(C{s2s_use_starttls: required}) and trusts the test CA (C{ca_file}); both
certificates come from that CA. The gateway pins C{ej.test} with
C{[xmpp.s2s_peers]} and verifies ejabberd's certificate.

ejabberd has no per-domain host override for S2S, and it resolves a peer
with the C library (C{net:getaddrinfo}, after an C{inet_res} SRV lookup), so
an Erlang C{inetrc} cannot point it at the gateway. Instead
L{PrivateEjabberd} runs it in a private mount namespace (C{hosts=}) where
C{/etc/hosts} maps C{gw.test} to 127.0.0.1 and C{/etc/resolv.conf} names no
nameserver: the C{_xmpp-server._tcp.gw.test} SRV lookup fails at once with
no nameserver to ask, ejabberd falls back to the address of C{gw.test} (from
that hosts file) and to C{outgoing_s2s_port}, set to the gateway's S2S port.
No DNS query leaves the machine and the machine's files are not touched.
"""

import os

from twisted.trial.unittest import SkipTest, TestCase

from tests.interop.harness import (
    LOCAL, GatewayProcess, HarnessError, SharedFixture, SIPReceiver,
    SIPUDPClient, XMPPClient, buildMessage, cleanupAll, freePort, inCI,
    makeWorkdir, newCallID, uniqueID)
from tests.interop.prosody_s2s import makeTestCA
from tests.interop.test_s2s import serverConfig
from xmppgw.clusterpeers import PrivateEjabberd
from xmppgw.localpeers import findProgram

GATEWAY = "gw.test"
XMPP = "ej.test"
ALICE = f"alice@{XMPP}"
ALICE_VIA_SIP = f"sip:alice*{XMPP}@{GATEWAY}"
BOB_SIP = "sip:bob@sip.test"
BOB_VIA_XMPP = f"bob*sip.test@{GATEWAY}"
READY_LINE = "XMPP server mode: S2S for gw.test listening on"


def requireEjabberd():
    """
    ejabberd installed, else skip (outside CI) or fail (CI).
    """
    if findProgram("ejabberdctl") is not None:
        return
    message = ("interop peer not installed: ejabberdctl (Debian: apt-get "
               "install ejabberd; 'make test' does it as root)")
    if inCI():
        raise HarnessError("CI: " + message)
    raise SkipTest(message)


def ejabberdS2SOptions(gatewayS2SPort, certfile, caFile):
    """
    The top-level ejabberd options for S2S with the gateway.
    """
    return {
        "certfiles": [f'  - "{certfile}"'],
        "ca_file": f'"{caFile}"',
        "s2s_access": "all",
        "s2s_use_starttls": "required",
        "s2s_dns_timeout": "2",
        "s2s_dns_retries": "1",
        "outgoing_s2s_families": ["  - ipv4"],
        "outgoing_s2s_port": str(int(gatewayS2SPort)),
        "outgoing_s2s_timeout": "10",
        "modules": ["  mod_roster: {}", "  mod_disco: {}", "  mod_ping: {}",
                    "  mod_s2s_dialback: {}"],
    }


def s2sListener(port):
    return "\n".join([
        f"- port: {int(port)}",
        f'  ip: "{LOCAL}"',
        "  module: ejabberd_s2s_in",
        "  max_stanza_size: 262144",
    ])


class EjabberdS2STests(TestCase):
    """
    One ejabberd, one server-mode gateway, one SIP receiver and Alice (on
    ejabberd's c2s port), shared by the tests.
    """

    ejabberd = gateway = receiver = alice = None

    @classmethod
    def setUpClass(cls):
        requireEjabberd()
        workdir = makeWorkdir("s2s-ejabberd")
        ca = makeTestCA(os.path.join(workdir, "ca"))
        gatewayCert = ca.issue(GATEWAY)
        ejCert, ejKey = ca.issue(XMPP)
        # One PEM with certificate and key, as ejabberd's certfiles like it.
        pem = os.path.join(workdir, "ca", f"{XMPP}.pem")
        with open(pem, "w") as out:
            for path in (ejCert, ejKey):
                with open(path) as f:
                    out.write(f.read())
        cls.s2sPort = freePort("tcp")
        ejS2SPort = freePort("tcp")
        while ejS2SPort == cls.s2sPort:
            ejS2SPort = freePort("tcp")
        cls.ejabberd = PrivateEjabberd(
            os.path.join(workdir, "ejabberd"), domain=XMPP,
            users={"alice": "alice-pw"},
            extraListeners=[s2sListener(ejS2SPort)],
            options=ejabberdS2SOptions(cls.s2sPort, pem, ca.caCert),
            hosts={GATEWAY: LOCAL})
        cls.ejabberd.ejS2SPort = ejS2SPort
        cls.ejabberd.start()
        cls.receiver = SIPReceiver("udp").start()
        cls.sipPort = freePort("both")
        cls.gateway = GatewayProcess(
            serverConfig(cls.s2sPort, cls.sipPort, XMPP, ejS2SPort,
                         gatewayCert, ca.caCert, True, cls.receiver.uri),
            workdir=os.path.join(workdir, "gateway"))
        os.makedirs(cls.gateway.workdir, exist_ok=True)
        cls.gateway.start(timeout=30, waitForLink=False)
        cls.gateway.waitForLog(READY_LINE, timeout=10)
        cls.alice = XMPPClient(ALICE, "alice-pw", cls.ejabberd.c2sPort).start()

    @classmethod
    def tearDownClass(cls):
        cleanupAll(cls.alice, cls.gateway, cls.receiver, cls.ejabberd)
        cls.alice = cls.gateway = cls.receiver = cls.ejabberd = None

    def setUp(self):
        SharedFixture.acquire(type(self))
        self.receiver.status = 200
        self.receiver.clear()

    def context(self):
        return (f"{self.gateway.describe()}\n--- ejabberd log (tail):\n"
                f"{self.ejabberd.log()[-6000:]}")

    def sendSIP(self, body, timeout=20.0):
        callID = newCallID()
        with SIPUDPClient() as client:
            request = buildMessage(ALICE_VIA_SIP, BOB_SIP, body, callID=callID,
                                   viaPort=client.port)
            try:
                return client.request(LOCAL, self.sipPort, request, timeout)
            except HarnessError as e:
                raise HarnessError(f"{e}\n{self.context()}")

    def test_sipToEjabberdUser(self):
        """
        A SIP MESSAGE reaches the ejabberd user over S2S (STARTTLS, the
        gateway verifying ejabberd's certificate, dialback) and is answered
        202.
        """
        body = "over s2s to ejabberd " + uniqueID()
        response = self.sendSIP(body)
        self.assertEqual(response.code, 202, f"{response}\n{self.context()}")
        try:
            message = self.alice.expectMessage(timeout=15, body=body)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.context()}")
        self.assertEqual(message["from"], BOB_VIA_XMPP)
        log = self.gateway.log()
        self.assertIn("S2S stream to ej.test verified by dialback (TLS: yes",
                      log)
        self.assertIn("certificate checked: yes", log)

    def test_ejabberdUserToSIP(self):
        """
        A message from the ejabberd user reaches the SIP receiver through an
        incoming S2S stream that ejabberd opened (finding gw.test in its
        private hosts file) and verified by dialback over TLS.
        """
        body = "from ejabberd " + uniqueID()
        self.alice.send(BOB_VIA_XMPP, body=body, id=uniqueID("x"))
        try:
            requests = self.receiver.waitForMatching(
                lambda r: r.method == "MESSAGE" and body.encode() in r.body,
                timeout=20)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{self.context()}")
        request = requests[0]
        self.assertEqual(request.uri, "sip:bob@sip.test")
        self.assertIn("alice*ej.test@gw.test", request.header("From"))
        self.assertIn("S2S stream from ej.test verified by dialback (TLS: yes)",
                      self.gateway.log())
