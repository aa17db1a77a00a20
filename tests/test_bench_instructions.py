"""
Tests for L{bench.instructions} (its arithmetic and its child process;
the callgrind runs themselves are make bench's).
"""

import json
import os
import subprocess
import sys

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
        The warm-up-only run is subtracted and the rest divided by the
        messages counted; impossible inputs are refused.
        """
        self.assertEqual(530000.0, instructions.perMessage(
            2_900_000_000, 2_900_000_000 + 3000 * 530000, 3000))
        self.assertRaises(ValueError, instructions.perMessage, 10, 5, 1000)
        self.assertRaises(ValueError, instructions.perMessage, 5, 10, 0)


    def test_case(self):
        """
        A direction's results give the loop's count on the gateway, the
        loop's alone (on the null gateway) and the gateway's own, their
        difference, with the four counts they come from.
        """
        case = instructions.case("xmppToSIP", 1000, [5_000_000, 405_000_000],
                                 [4_000_000, 74_000_000])
        self.assertEqual({
            "direction": "xmppToSIP",
            "instructions_per_message": 400000,
            "harness_instructions_per_message": 70000,
            "gateway_instructions_per_message": 330000,
            "base_instructions": 5_000_000,
            "loaded_instructions": 405_000_000,
            "harness_base_instructions": 4_000_000,
            "harness_loaded_instructions": 74_000_000}, case)
        self.assertRaises(ValueError, instructions.case, "sipToXMPP", 1000,
                          [10, 20], [20, 10])


class ChildTests(TestCase):
    def test_childRuns(self):
        """
        The measured child process relays its warm-up messages in both
        directions, on the gateway and on the null gateway, and exits 0
        (benchmark 1's runner raises if a message did not go through).
        """
        for gateway in instructions.GATEWAYS:
            for direction in instructions.DIRECTIONS:
                process = subprocess.run(
                    [sys.executable, "-m", "bench.instructions", "--child",
                     direction, "0", "1", "2", gateway],
                    cwd=ROOT, capture_output=True, text=True, timeout=120)
                self.assertEqual(0, process.returncode,
                                 process.stderr[-2000:])

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
        count = instructions.measure("valgrind", "sipToXMPP", 3, 10, 14)
        self.assertEqual(1234, count)
        self.assertEqual(1234, instructions.measure(
            "valgrind", "sipToXMPP", 3, 10, 14, "null"))
        command, null = commands
        # The same command but for the gateway (and the temporary file).
        self.assertEqual(command[4:-1], null[4:-1])
        self.assertEqual(["gateway", "null"], [command[-1], null[-1]])
        return command[:-1]

    def test_cpython(self):
        """
        On CPython: callgrind, the child with its runs, distinct
        addresses and warm-up runs.
        """
        command = self.measured(False)
        self.assertEqual(["valgrind", "--tool=callgrind"], command[:2])
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
            ["valgrind", "--tool=callgrind", "--smc-check=all-non-file"],
            command[:3])
        self.assertEqual(["--child", "sipToXMPP", "3", "10", "14"],
                         command[-5:])

    def test_defaults(self):
        """
        The warm-up and the count default to 2,000 and 3,000 messages on
        CPython, 14,000 and 8,000 on PyPy; a warm-up out of range is
        refused.
        """
        self.assertEqual((2, 14, 8000), (instructions.WARMUP_RUNS,
                                         instructions.PYPY_WARMUP_RUNS,
                                         instructions.PYPY_COUNT))
        self.assertRaises(SystemExit, instructions.main, ["--warmup", "101"])


class MainTests(TestCase):
    """
    L{instructions.main} with the callgrind runs faked.
    """

    def test_results(self):
        """
        Both gateways are counted in both directions, warm-up only and
        loaded, and each case gives the loop's, the loop alone's and the
        gateway's count per message.
        """
        counts = {
            ("gateway", "sipToXMPP"): (1_000_000, 501_000_000),
            ("gateway", "xmppToSIP"): (2_000_000, 402_000_000),
            ("null", "sipToXMPP"): (500_000, 25_500_000),
            ("null", "xmppToSIP"): (600_000, 70_600_000)}
        asked = []

        def measure(valgrind, direction, runs, distinct, warmup, gateway):
            asked.append((gateway, direction, runs, distinct, warmup))
            return counts[gateway, direction][1 if runs else 0]

        self.patch(instructions, "measure", measure)
        self.patch(instructions.shutil, "which", lambda name: "/valgrind")
        out = self.mktemp()
        self.assertEqual(0, instructions.main(
            ["--count", "1000", "--distinct", "7", "--warmup", "3",
             "--json", out]))
        self.assertEqual(
            sorted((g, d, n, 7, 3)
                   for g in instructions.GATEWAYS
                   for d in instructions.DIRECTIONS for n in (0, 1)),
            sorted(asked))
        with open(out) as f:
            cases = json.load(f)["cases"]
        self.assertEqual(
            [("sipToXMPP", 500000, 25000, 475000),
             ("xmppToSIP", 400000, 70000, 330000)],
            [(c["direction"], c["instructions_per_message"],
              c["harness_instructions_per_message"],
              c["gateway_instructions_per_message"]) for c in cases])


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
        self.assertRegex(shown, r"XMPP->SIP +1 +395079 +69554 +325525")
