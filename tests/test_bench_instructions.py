"""
Tests for L{bench.instructions} (its arithmetic and its child process;
the callgrind runs themselves are make bench's).
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from twisted.trial.unittest import TestCase

from bench import instructions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ArithmeticTests(TestCase):
    def test_collected(self):
        """
        The count is read from callgrind's C{Collected} line.
        """
        stderr = ("==123== Events    : Ir\n"
                  "==123== Collected : 4491559665\n"
                  "==123== \n==123== I   refs:      4,491,559,665\n")
        self.assertEqual(4491559665, instructions.collected(stderr))

    def test_noCollectedLine(self):
        """
        Without the line (callgrind did not finish) it is an error, not 0.
        """
        self.assertRaises(ValueError, instructions.collected,
                          "valgrind: the 'impossible' happened\n")

    def test_perMessage(self):
        """
        The count collected is divided by the messages counted; no
        message, or nothing collected (collection never turned on), is
        an error.
        """
        self.assertEqual(530000.0, instructions.perMessage(
            3000 * 530000, 3000))
        self.assertRaises(ValueError, instructions.perMessage, 0, 1000)
        self.assertRaises(ValueError, instructions.perMessage, 5, 0)

    def test_case(self):
        """
        A direction's results give the loop's count on the gateway, the
        loop's alone (on the null gateway) and the gateway's own, their
        difference, each the median of the processes' counts, which are
        given per message too.
        """
        case = instructions.case(
            "xmppToSIP", 1000, [400_000_000, 380_000_000, 430_000_000],
            [70_000_000, 71_000_000, 69_000_000])
        self.assertEqual({
            "direction": "xmppToSIP",
            "instructions_per_message": 400000,
            "harness_instructions_per_message": 70000,
            "gateway_instructions_per_message": 330000,
            "runs": [400000, 380000, 430000],
            "harness_runs": [70000, 71000, 69000]}, case)
        one = instructions.case("sipToXMPP", 2000, [1_000_002_000],
                                [40_000_000])
        self.assertEqual((500001, 20000, 480001, [500001], [20000]),
                         (one["instructions_per_message"],
                          one["harness_instructions_per_message"],
                          one["gateway_instructions_per_message"],
                          one["runs"], one["harness_runs"]))
        self.assertRaises(ValueError, instructions.case, "sipToXMPP", 1000,
                          [0], [10])


def standInHeader(case):
    """
    Make C{gcc} find a stand-in C{valgrind/callgrind.h} (the toggle a
    no-op) first, for machines without the valgrind package (the unit
    tests do not install it; C{make bench} does).
    """
    include = case.mktemp()
    os.makedirs(os.path.join(include, "valgrind"))
    with open(os.path.join(include, "valgrind", "callgrind.h"), "w") as f:
        f.write("#define CALLGRIND_TOGGLE_COLLECT do {} while (0)\n")
    old = os.environ.get("CPATH")
    os.environ["CPATH"] = include
    if old is None:
        case.addCleanup(os.environ.pop, "CPATH", None)
    else:
        case.addCleanup(os.environ.__setitem__, "CPATH", old)


class MarkerTests(TestCase):
    """
    L{instructions.markerLibrary}: the library the child toggles
    callgrind's collection with.
    """

    def test_builds(self):
        """
        The library is built in the directory given and has the toggle,
        which does nothing outside valgrind.
        """
        import ctypes

        standInHeader(self)
        directory = self.mktemp()
        os.mkdir(directory)
        library = instructions.markerLibrary(directory)
        self.assertEqual(os.path.abspath(directory), os.path.dirname(library))
        toggle = ctypes.CDLL(library).xmppgw_toggle_collect
        toggle.restype = None
        self.assertIsNone(toggle())

    def test_noCompiler(self):
        """
        Without the compiler, or when it fails, the error says what is
        missing instead of the child failing later.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        error = self.assertRaises(
            RuntimeError, instructions.markerLibrary, directory,
            compiler=os.path.join(directory, "no-such-gcc"))
        self.assertIn("cannot build the callgrind marker", str(error))
        error = self.assertRaises(
            RuntimeError, instructions.markerLibrary, directory,
            compiler="false")
        self.assertIn("gcc and valgrind", str(error))


class ChildTests(TestCase):
    def test_childRuns(self):
        """
        The measured child process relays its warm-up and counted
        messages in both directions, on the gateway and on the null
        gateway, toggling collection through the marker library, and
        exits 0 (benchmark 1's runner raises if a message did not go
        through).
        """
        standInHeader(self)
        directory = self.mktemp()
        os.mkdir(directory)
        marker = instructions.markerLibrary(directory)
        for gateway in instructions.GATEWAYS:
            for direction in instructions.DIRECTIONS:
                process = subprocess.run(
                    [sys.executable, "-m", "bench.instructions", "--child",
                     direction, "1", "1", "1", gateway, marker],
                    cwd=ROOT, capture_output=True, text=True, timeout=120)
                self.assertEqual(0, process.returncode,
                                 process.stderr[-2000:])

    def test_toggledAroundCount(self):
        """
        Collection is toggled on after the warm-up runs and a full
        collection, and off after the counted ones, once each.
        """
        import ctypes

        import twisted.logger
        from bench import inprocess

        events = []

        class Beginner:
            def beginLoggingTo(self, observers, **kwargs):
                events.append("log")

        class Runner:
            def __init__(self, gateway, interval):
                pass

            def sipToXMPP(self, count, distinct):
                events.append(("run", count, distinct))

        class Library:
            @staticmethod
            def xmppgw_toggle_collect():
                events.append("toggle")

        self.patch(twisted.logger, "globalLogBeginner", Beginner())
        self.patch(instructions.gc, "collect",
                   lambda: events.append("collect"))
        self.patch(inprocess, "Runner", Runner)
        self.patch(inprocess, "NullGateway", lambda: None)
        self.patch(ctypes, "CDLL", lambda path: Library())
        instructions.child("sipToXMPP", 2, 5, 3, "null", "/marker.so")
        run = ("run", instructions.RUN, 5)
        self.assertEqual(["log", run, run, run, "collect", "toggle", run, run,
                          "toggle"], events)

    def test_unknownGateway(self):
        """
        A gateway other than the two is refused, not taken for one of them.
        """
        self.assertRaises(ValueError, instructions.child, "sipToXMPP", 0, 1,
                          0, "fast")


class MeasureTests(TestCase):
    """
    L{instructions.measure}: the callgrind command of one child.
    """

    def measured(self, pypy):
        commands = []

        class Done:
            returncode = 0
            stderr = "==1== Collected : 1234\n"

        def run(command, **kwargs):
            commands.append(command)
            return Done()

        self.patch(instructions, "PYPY", pypy)
        self.patch(instructions.subprocess, "run", run)
        count = instructions.measure("valgrind", "/m.so", "sipToXMPP", 3, 10,
                                     14)
        self.assertEqual(1234, count)
        self.assertEqual(1234, instructions.measure(
            "valgrind", "/m.so", "sipToXMPP", 3, 10, 14, "null"))
        command, null = commands
        # The same command but for the gateway (and the temporary file).
        self.assertEqual(command[5:-2], null[5:-2])
        self.assertEqual(["gateway", "null"], [command[-2], null[-2]])
        self.assertEqual(["/m.so", "/m.so"], [command[-1], null[-1]])
        return command[:-2]

    def test_cpython(self):
        """
        On CPython: callgrind with collection off until the child turns
        it on, the child with its runs, distinct addresses and warm-up
        runs.
        """
        command = self.measured(False)
        self.assertEqual(["valgrind", "--tool=callgrind",
                          "--collect-atstart=no"], command[:3])
        self.assertNotIn("--smc-check=all-non-file", command)
        self.assertEqual(["--child", "sipToXMPP", "3", "10", "14"],
                         command[-5:])

    def test_pypy(self):
        """
        On PyPy callgrind is told that code is written at run time (the
        JIT's).
        """
        command = self.measured(True)
        self.assertEqual(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--smc-check=all-non-file"], command[:4])
        self.assertEqual(["--child", "sipToXMPP", "3", "10", "14"],
                         command[-5:])

    def test_defaults(self):
        """
        The warm-up and the count default to 2,000 and 3,000 messages on
        CPython, 14,000 and 8,000 on PyPy, and each case runs in three
        processes; a warm-up or a repeat out of range is refused.
        """
        self.assertEqual((2, 14, 8000, 3), (instructions.WARMUP_RUNS,
                                            instructions.PYPY_WARMUP_RUNS,
                                            instructions.PYPY_COUNT,
                                            instructions.REPEAT))
        self.assertRaises(SystemExit, instructions.main, ["--warmup", "101"])
        self.assertRaises(SystemExit, instructions.main, ["--repeat", "0"])


class MainTests(TestCase):
    """
    L{instructions.main} with the callgrind runs faked.
    """

    def test_results(self):
        """
        Both gateways are counted in both directions, C{--repeat} child
        processes each with the marker library, and each case gives the
        loop's, the loop alone's and the gateway's count per message, the
        medians, and every process's.
        """
        counts = {
            ("gateway", "sipToXMPP"): [500_000_000, 510_000_000, 490_000_000],
            ("gateway", "xmppToSIP"): [400_000_000, 400_000_000, 401_000_000],
            ("null", "sipToXMPP"): [25_000_000, 26_000_000, 24_000_000],
            ("null", "xmppToSIP"): [70_000_000, 70_000_000, 70_000_000]}
        asked = []

        def measure(valgrind, marker, direction, runs, distinct, warmup,
                    gateway):
            self.assertTrue(os.path.exists(marker))
            asked.append((gateway, direction, runs, distinct, warmup))
            done = sum(1 for a in asked if a[:2] == (gateway, direction))
            return counts[gateway, direction][done - 1]

        standInHeader(self)
        self.patch(instructions, "measure", measure)
        self.patch(instructions.shutil, "which", lambda name: "/valgrind")
        # One worker: the fake's counts are handed out in order.
        self.patch(instructions, "ThreadPoolExecutor",
                   lambda max_workers: ThreadPoolExecutor(max_workers=1))
        out = self.mktemp()
        self.assertEqual(0, instructions.main(
            ["--count", "1000", "--distinct", "7", "--warmup", "3",
             "--repeat", "3", "--json", out]))
        self.assertEqual(
            sorted((g, d, 1, 7, 3)
                   for g in instructions.GATEWAYS
                   for d in instructions.DIRECTIONS for _ in range(3)),
            sorted(asked))
        with open(out) as f:
            results = json.load(f)
        self.assertEqual(
            [("sipToXMPP", 500000, 25000, 475000,
              [500000, 510000, 490000]),
             ("xmppToSIP", 400000, 70000, 330000,
              [400000, 400000, 401000])],
            [(c["direction"], c["instructions_per_message"],
              c["harness_instructions_per_message"],
              c["gateway_instructions_per_message"], c["runs"])
             for c in results["cases"]])
        self.assertIn("toggled", results["method"])
        self.assertEqual(3, results["repeat"])

    def test_noMarker(self):
        """
        When the marker library cannot be built, the benchmark stops with
        the reason before starting any child.
        """
        def measure(*args):
            self.fail("a child ran")

        self.patch(instructions, "measure", measure)
        self.patch(instructions.shutil, "which", lambda name: "/valgrind")

        def markerLibrary(directory):
            raise RuntimeError("cannot build the callgrind marker: no gcc")

        self.patch(instructions, "markerLibrary", markerLibrary)
        self.assertRaises(SystemExit, instructions.main, ["--count", "1000"])


class ReportTests(TestCase):
    def test_distinctShown(self):
        """
        C{bench.report}'s table names the number of distinct addresses of
        the run (1 for results written before the field existed).
        """
        from bench import report

        result = {"cases": [
            {"direction": "sipToXMPP", "instructions_per_message": 676017},
            {"direction": "xmppToSIP", "instructions_per_message": 499931}]}
        old = report.instructions(result)
        result["distinct"] = 10000
        cold = report.instructions(result)
        self.assertIn("distinct", cold)
        self.assertRegex(cold, r"SIP->XMPP +10000 +676017")
        self.assertRegex(cold, r"XMPP->SIP +10000 +499931")
        self.assertRegex(old, r"SIP->XMPP +1 +676017 +- +-")

    def test_harnessShown(self):
        """
        The loop's count alone and the gateway's are shown beside the
        whole count, where the file has them.
        """
        from bench import report

        shown = report.instructions({"cases": [
            {"direction": "xmppToSIP", "instructions_per_message": 395079,
             "harness_instructions_per_message": 69554,
             "gateway_instructions_per_message": 325525}]})
        self.assertIn("of which the loop", shown)
        self.assertRegex(shown, r"XMPP->SIP +1 +395079 +69554 +325525 +-")

    def test_processesShown(self):
        """
        Each process's count is shown where the file has them (from round
        30 on).
        """
        from bench import report

        shown = report.instructions({"cases": [
            {"direction": "sipToXMPP", "instructions_per_message": 181413,
             "harness_instructions_per_message": 9422,
             "gateway_instructions_per_message": 171991,
             "runs": [159495, 181413, 181541]}]})
        self.assertIn("each process", shown)
        self.assertRegex(
            shown, r"SIP->XMPP +1 +181413 +9422 +171991 +159495 / 181413 / "
            r"181541")
