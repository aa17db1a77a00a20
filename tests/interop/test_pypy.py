"""
Interop test of the gateway run by PyPy, a supported deployment
(C{docs/performance.rst}, "PyPy"): the tests themselves run on CPython, the
gateway is C{twistd xmppgw} started by the PyPy venv's C{twistd}
(C{.venv-pypy}, built by C{make pypy-venv}), as an XEP-0114 component of a
private Prosody, exactly as in L{tests.interop.test_gateway}.

The PyPy C{twistd} is C{.venv-pypy/bin/twistd} under the repository root,
or the environment variable C{XMPPGW_PYPY_TWISTD}. When it is missing the
tests skip, except under CI where they fail (the interop tier never skips
there).
"""

import os
import re
import subprocess
import sys

from twisted.trial.unittest import SkipTest

from tests.interop.harness import (
    HarnessError, inCI, messageWith, uniqueID)
from tests.interop.test_gateway import (
    ALICE, ALICE_VIA_SIP, BODY, BOB_VIA_XMPP, GatewayTestCase)
from xmppgw.gctune import RECOMMENDED_NURSERY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PYPY_TWISTD = os.path.join(ROOT, ".venv-pypy", "bin", "twistd")

#: what twistd logs first (L{twisted.application.app}), naming the
#: interpreter: C{sys.executable} and its C{major.minor.micro} version
STARTUP = re.compile(
    r"twistd (?P<version>\S+) \((?P<exe>.+) (?P<python>\d+\.\d+\.\d+)\) "
    r"starting up\.")


def pypyTwistd():
    """
    The PyPy C{twistd}: C{XMPPGW_PYPY_TWISTD}, else C{.venv-pypy/bin/twistd}
    under the repository root.

    @raise SkipTest: outside CI, when it is missing.
    @raise HarnessError: in CI, when it is missing.
    """
    path = os.environ.get("XMPPGW_PYPY_TWISTD") or PYPY_TWISTD
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    message = (f"PyPy twistd not found at {path} (run 'make pypy-venv', or "
               f"set XMPPGW_PYPY_TWISTD)")
    if inCI():
        raise HarnessError("CI: " + message)
    raise SkipTest(message)


def interpreterFacts(exe):
    """
    C{(implementation, version)} of the Python program C{exe}, as its
    L{platform} module reports them.
    """
    out = subprocess.run(
        [exe, "-c", "import platform; print(platform.python_implementation(),"
                    " platform.python_version())"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    implementation, version = out.split()
    return implementation, version


class PyPyGatewayTests(GatewayTestCase):
    """
    The gateway under PyPy's C{twistd}, with Alice online and a UDP
    L{SIPReceiver} as its outbound proxy.
    """

    receiverProto = "udp"
    #: the recommended deployment's nursery (docs/deployment.rst), which
    #: the gateway reports at start-up
    gatewayEnviron = {"PYPY_GC_NURSERY": RECOMMENDED_NURSERY}

    @classmethod
    def setUpClass(cls):
        cls.twistd = pypyTwistd()
        super().setUpClass()

    def test_sipToXMPP(self):
        """
        A SIP MESSAGE with a non-ASCII UTF-8 body is answered 202, and Alice
        gets the body intact, from bob*sip.test@gw.xmpp.test, once.
        """
        body = f"{BODY} Grüße, 日本語, ελληνικά {uniqueID()}"
        callID, response = self.sendMessage(body=body)
        self.assertAccepted(response)
        got = self.aliceGets(thread=callID)
        self.assertEqual(got["body"], body)
        self.assertEqual(got["from"], BOB_VIA_XMPP)
        self.assertEqual(got["to"], ALICE)
        self.assertIsNone(got["error"])
        self.assertOnce(messageWith(thread=callID), settle=0.5)

    def test_xmppToSIP(self):
        """
        Alice's message reaches the SIP side as a MESSAGE to
        sip:carol@sip.test from her mapped address, the UTF-8 body
        byte-exact.
        """
        body = f"{BODY} Grüße, 日本語 {uniqueID()}"
        self.alice.send("carol*sip.test@gw.xmpp.test", body=body,
                        id=uniqueID())
        (request,) = self.receiverGets(
            lambda r: (r.method == "MESSAGE" and r.uri == "sip:carol@sip.test"
                       and r.body == body.encode("utf-8")))[:1]
        self.assertEqual(int(request.header("Content-Length")),
                         len(body.encode("utf-8")))
        self.assertIn(ALICE_VIA_SIP, request.header("From"))

    def test_runsUnderPyPy(self):
        """
        The twistd log's start-up line names a PyPy interpreter (not the
        CPython running the tests), with that interpreter's version.
        """
        log = self.gateway.log()
        match = STARTUP.search(log)
        self.assertIsNotNone(match, self.context())
        exe = match.group("exe")
        self.assertNotEqual(os.path.realpath(exe),
                            os.path.realpath(sys.executable))
        implementation, version = interpreterFacts(exe)
        self.assertEqual(implementation, "PyPy", match.group(0))
        self.assertEqual(match.group("python"), version, match.group(0))

    def test_nurseryReported(self):
        """
        The gateway logs the nursery PyPy actually uses, read from PyPy's
        collector, and where its size came from: C{PYPY_GC_NURSERY=4MB}
        here, so 4.0 MB as information, not the warning about a nursery
        PyPy chose by itself.
        """
        log = self.gateway.log()
        self.assertIn("[xmppgw.gctune#info] PyPy's young-object area "
                      "(nursery): 4.0 MB (PYPY_GC_NURSERY=4MB)", log)
        self.assertNotIn("xmppgw.gctune#warn", log)
