"""
Interop smoke tests of the end-to-end benchmarks of C{make bench}
(C{bench/endtoend.py}, C{bench/soak.py}): each runs for a second or two
against its own private Prosody on loopback, exits 0 and writes results
with nothing lost.

The benchmarks themselves are not part of C{make test} (docs/performance.rst);
these tests keep them runnable: the soak once failed before sending
anything, for a command-line option it lacked, and nothing noticed until a
whole C{make bench} reached it.
"""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

from twisted.trial.unittest import SkipTest

from tests.interop.harness import HarnessError, inCI, makeWorkdir, requirePeers
from tests.interop.test_pypy import ROOT, pypyTwistd
from xmppgw.gctune import RECOMMENDED_NURSERY


def runBenchmark(name, argv, environ=None, timeout=180):
    """
    Run C{python -m bench.NAME ARGV --json FILE} from the repository root
    and return its results.

    @raise AssertionError: with its output, when it exits with an error.
    """
    path = os.path.join(makeWorkdir(f"bench-{name}"), "results.json")
    result = subprocess.run(
        [sys.executable, "-m", "bench." + name] + argv + ["--json", path],
        cwd=ROOT, env=dict(os.environ, **(environ or {})),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=timeout)
    output = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0:
        raise AssertionError(
            f"bench.{name} exited with {result.returncode}:\n{output[-4000:]}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class EndToEndBenchmarkTests(TestCase):
    """
    C{bench.endtoend}: one short step each way.
    """

    def setUp(self):
        requirePeers("prosody")

    def test_bothDirections(self):
        """
        SIP -> XMPP over UDP and XMPP -> SIP, a second each at 100/s:
        everything delivered; the gateway runs on this CPython, so it
        reports no PyPy nursery.
        """
        results = runBenchmark("endtoend", [
            "--directions", "udp,xmpp", "--rates", "100", "--duration", "1"])
        self.assertEqual(["udp", "xmpp"],
                         [step["direction"] for step in results["steps"]])
        for step in results["steps"]:
            self.assertEqual(100, step["sent"], step)
            self.assertEqual(0, step["lost"], step)
        self.assertIsNone(results["gateway_pypy_nursery_mb"])
        self.assertGreater(results["gateway_idle_rss_mb"], 0)


#: Kamailio's xmpp module with its one fix, as C{make test} builds it
#: (Makefile: C{KAMAILIO_XMPP}, C{bench/kamailio-xmpp.sh}).
KAMAILIO_XMPP = os.path.join(ROOT, "build", "kamailio-xmpp", "xmpp.so")


class ReferenceBenchmarkTests(TestCase):
    """
    C{bench.endtoend --reference}: the C module of issue 4 (Kamailio's
    xmpp module) beside the gateway, one short step each way.
    """

    def setUp(self):
        requirePeers("prosody", "kamailio")
        if not os.path.exists(KAMAILIO_XMPP):
            message = ("%s is missing: 'make test' builds it "
                       "(bench/kamailio-xmpp.sh)" % (KAMAILIO_XMPP,))
            if inCI():
                raise HarnessError("CI: " + message)
            raise SkipTest(message)

    def test_bothDirections(self):
        """
        SIP -> XMPP over UDP and XMPP -> SIP at 100/s for a second, through
        the gateway and through the C module: each relays everything both
        ways (the module with its fix survives Prosody's stream header),
        in alternating order, and the results name the module.
        """
        results = runBenchmark("endtoend", [
            "--reference", KAMAILIO_XMPP, "--directions", "udp,xmpp",
            "--rates", "100", "--duration", "1"])
        self.assertEqual(
            [("xmppgw", "udp"), ("kamailio", "udp"),
             ("kamailio", "xmpp"), ("xmppgw", "xmpp")],
            [(step["gateway"], step["direction"])
             for step in results["steps"]])
        for step in results["steps"]:
            self.assertEqual(100, step["sent"], step)
            self.assertEqual(0, step["lost"], step)
        self.assertEqual(KAMAILIO_XMPP, results["reference"]["xmpp_so"])
        self.assertIn("kamailio", results["reference"]["kamailio"])


class SoakBenchmarkTests(TestCase):
    """
    C{bench.soak}: two seconds, with the gateway on PyPy as deployed.
    """

    def setUp(self):
        requirePeers("prosody")

    def test_pypySoak(self):
        """
        The soak runs the gateway with the C{twistd} given (PyPy's, with
        the recommended nursery, which the gateway reports and the results
        record), delivers everything and samples its memory.
        """
        results = runBenchmark("soak", [
            "--twistd", pypyTwistd(), "--rate", "50", "--duration", "2",
            "--interval", "1", "--bucket", "1"],
            environ={"PYPY_GC_NURSERY": RECOMMENDED_NURSERY})
        self.assertEqual(100, results["sent"])
        self.assertEqual(0, results["lost"], results)
        self.assertEqual(os.path.abspath(pypyTwistd()),
                         results["gateway_twistd"])
        self.assertEqual(RECOMMENDED_NURSERY, results["pypy_gc_nursery"])
        self.assertEqual(4.0, results["gateway_pypy_nursery_mb"])
        self.assertGreaterEqual(len(results["samples"]), 2)
