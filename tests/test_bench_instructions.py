"""
Tests for L{bench.instructions} (its arithmetic and its child process;
the callgrind runs themselves are make bench's).
"""

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


class ChildTests(TestCase):
    def test_childRuns(self):
        """
        The measured child process relays its warm-up messages in both
        directions and exits 0 (benchmark 1's runner raises if a message
        did not go through).
        """
        for direction in instructions.DIRECTIONS:
            process = subprocess.run(
                [sys.executable, "-m", "bench.instructions", "--child",
                 direction, "0", "1", "2"],
                cwd=ROOT, capture_output=True, text=True, timeout=120)
            self.assertEqual(0, process.returncode, process.stderr[-2000:])


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
        [command] = commands
        return command

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
        self.assertRegex(old, r"SIP->XMPP +1 +676017")
