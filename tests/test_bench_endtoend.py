"""
Tests for L{bench.endtoend}: the parts that run without Prosody (the
benchmark itself runs under C{make bench}).
"""

import argparse
import os
import platform

from twisted.trial import unittest

from twisted.logger import Logger, formatEvent

from bench import soak
from bench.common import MEMORY_FIELDS, machine, memoryKB, statusKB
from bench.endtoend import Bench, nurseryFromLog, twistd
from tests.test_gctune import FakePyPyCollector
from xmppgw.gctune import reportNursery


class _FakeProsody:
    stopped = False

    def stop(self):
        self.stopped = True


class StopTests(unittest.TestCase):
    """
    L{Bench.stop} stops the peers and removes the working directory.
    """

    def bench(self, **args):
        bench = Bench.__new__(Bench)
        bench.args = argparse.Namespace(**args)
        bench.workdir = self.mktemp()
        os.makedirs(os.path.join(bench.workdir, "prosody"))
        with open(os.path.join(bench.workdir, "twistd.log"), "w") as f:
            f.write("a log line\n")
        bench.gateway = None
        bench.prosody = _FakeProsody()
        return bench

    def test_removesWorkdir(self):
        """
        By default the working directory (configurations, logs) is removed
        once Prosody is stopped.
        """
        bench = self.bench()
        bench.stop()
        self.assertTrue(bench.prosody.stopped)
        self.assertFalse(os.path.exists(bench.workdir))

    def test_keepWorkdir(self):
        """
        With C{--keep-workdir} the directory and its logs stay.
        """
        bench = self.bench(keep_workdir=True)
        bench.stop()
        self.assertTrue(bench.prosody.stopped)
        self.assertTrue(os.path.exists(os.path.join(bench.workdir, "twistd.log")))

    def test_removedWhenStopFails(self):
        """
        The directory is removed even if stopping a peer fails.
        """
        bench = self.bench()

        def broken():
            raise RuntimeError("prosody would not stop")

        bench.prosody.stop = broken
        self.assertRaises(RuntimeError, bench.stop)
        self.assertFalse(os.path.exists(bench.workdir))


class OptionTests(unittest.TestCase):
    """
    The command line: the working directory, the options that shape the
    private Prosody, the directions.
    """

    def parsed(self, argv):
        from bench import endtoend
        seen = []

        class Stop(Exception):
            pass

        def fakeBench(args):
            seen.append(args)
            raise Stop()

        self.patch(endtoend, "Bench", fakeBench)
        self.assertRaises(Stop, endtoend.main, argv)
        return seen[0]

    def test_keepWorkdir(self):
        """
        C{--keep-workdir} is an option of the command line.
        """
        self.assertTrue(self.parsed(["--keep-workdir"]).keep_workdir)
        self.assertFalse(self.parsed([]).keep_workdir)

    def test_prosodyNagle(self):
        """
        C{--prosody-nagle off} gives a Prosody with Nagle's algorithm off;
        the default leaves Prosody's own default (on). Either way Prosody
        declares the floor's component beside the gateway's.
        """
        from bench import endtoend
        for argv, nagle in (([], True), (["--prosody-nagle", "off"], False)):
            args = self.parsed(argv)
            bench = Bench(args)
            self.addCleanup(bench.stop)
            self.assertEqual(nagle, bench.prosody.nagle)
            self.assertEqual((endtoend.FLOOR_COMPONENT,),
                             bench.prosody.extraComponents)

    def test_directions(self):
        """
        C{--directions} takes the known directions, C{floor} among them,
        and refuses a misspelt one instead of running another.
        """
        self.assertEqual("floor,udp",
                         self.parsed(["--directions", "floor,udp"]).directions)
        from bench import endtoend

        class Refused(Exception):
            pass

        def error(parser, message):
            raise Refused(message)

        self.patch(endtoend, "Bench", lambda args: self.fail("ran"))
        self.patch(endtoend.argparse.ArgumentParser, "error", error)
        error = self.assertRaises(
            Refused, endtoend.main, ["--directions", "udp,upd"])
        self.assertIn("unknown --directions upd", str(error))


class NurseryFromLogTests(unittest.TestCase):
    """
    L{nurseryFromLog} reads the nursery size from the gateway's start-up
    report, in each of the report's forms.
    """

    def line(self, nursery, environ):
        events = []
        reportNursery(FakePyPyCollector(nursery), environ, Logger(
            namespace="xmppgw.gctune", observer=events.append))
        [event] = events
        return ("2026-11-27T22:03:54+0000 [xmppgw.gctune#%s] %s\n"
                % (event["log_level"].name, formatEvent(event)))

    def test_forms(self):
        """
        Set by the environment, PyPy's small choice, PyPy's large choice
        (the warning): the size in MB.
        """
        MB = 1024 * 1024
        self.assertEqual(4.0, nurseryFromLog(
            "a line\n" + self.line(4 * MB, {"PYPY_GC_NURSERY": "4MB"})))
        self.assertEqual(1.0, nurseryFromLog(self.line(MB, {})))
        self.assertEqual(150.0, nurseryFromLog(self.line(150 * MB, {})))

    def test_none(self):
        """
        Without the report (CPython) there is no size.
        """
        self.assertIsNone(nurseryFromLog("a line\nanother (nursery): 3 MB\n"))


class MachineTests(unittest.TestCase):
    """
    L{bench.common.machine}, the header of every benchmark's results, names
    PyPy's nursery, on which PyPy's memory figures depend.
    """

    def test_nursery(self):
        """
        On PyPy the nursery in MB, on CPython L{None}.
        """
        nursery = machine()["pypy_nursery_mb"]
        if platform.python_implementation() == "PyPy":
            self.assertGreater(nursery, 0)
        else:
            self.assertIsNone(nursery)

    def test_gcSettings(self):
        """
        On PyPy the collector's settings from the environment (the
        C{PYPY_GC_} variables, nothing else), on CPython, which ignores
        them, L{None}.
        """
        settings = machine({"PYPY_GC_NURSERY": "4MB", "PATH": "/bin",
                            "PYPY_GC_INCREMENT_STEP": "1MB"})[
                                "pypy_gc_settings"]
        if platform.python_implementation() == "PyPy":
            self.assertEqual({"PYPY_GC_INCREMENT_STEP": "1MB",
                              "PYPY_GC_NURSERY": "4MB"}, settings)
            self.assertEqual({}, machine({"PATH": "/bin"})["pypy_gc_settings"])
        else:
            self.assertIsNone(settings)


class StatusTests(unittest.TestCase):
    """
    L{bench.common.statusKB} and L{bench.common.memoryKB}: the memory
    figures of benchmark 2 and the soak, from C{/proc/PID/status}.
    """

    def test_fields(self):
        """
        The named fields in KiB, in the order asked, whatever the order of
        the lines; 0 for a field that is missing.
        """
        text = ("Name:\tpypy3\nVmHWM:\t  140000 kB\nVmRSS:\t  123456 kB\n"
                "RssAnon:\t   70000 kB\nRssFile:\t   53456 kB\n")
        self.assertEqual((123456, 140000),
                         statusKB(text, ("VmRSS", "VmHWM")))
        self.assertEqual((53456, 70000, 0),
                         statusKB(text, ("RssFile", "RssAnon", "RssShmem")))

    def test_ownProcess(self):
        """
        Of a real process (this one): by default the RSS and its peak; the
        anonymous and file-backed parts are both there and add up to no
        more than its RSS (the rest being shared memory).
        """
        self.assertEqual(2, len(memoryKB(os.getpid())))
        rss, hwm, anon, mapped = memoryKB(os.getpid(), MEMORY_FIELDS)
        self.assertGreaterEqual(hwm, rss)
        self.assertGreater(anon, 0)
        self.assertGreater(mapped, 0)
        self.assertLessEqual(anon + mapped, rss + 1024)


class SoakCommandTests(unittest.TestCase):
    """
    L{bench.soak} builds its gateway through L{Bench} with its own command
    line, which has fewer options than L{bench.endtoend}'s (it once had no
    C{--twistd}, and the soak failed before starting).
    """

    def command(self, argv):
        bench = Bench.__new__(Bench)
        bench.args = soak.parseArguments(argv)
        bench.logPath = "/w/twistd.log"
        return bench.gatewayCommand("/w/gateway.toml")

    def test_default(self):
        """
        Without C{--twistd}: the C{twistd} next to this Python.
        """
        self.assertEqual(
            [twistd(), "-n", "--pidfile=", "--logfile", "/w/twistd.log",
             "xmppgw", "--config", "/w/gateway.toml"], self.command([]))

    def test_twistd(self):
        """
        C{--twistd} (made absolute: the gateway runs in another directory)
        runs the gateway, e.g. on PyPy.
        """
        command = self.command(["--twistd", "venv/bin/twistd"])
        self.assertEqual(os.path.abspath("venv/bin/twistd"), command[0])
        self.assertEqual(["xmppgw", "--config", "/w/gateway.toml"],
                         command[-3:])
