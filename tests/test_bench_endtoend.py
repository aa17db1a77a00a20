"""
Tests for L{bench.endtoend}: the parts that run without Prosody (the
benchmark itself runs under C{make bench}).
"""

import argparse
import os
import platform
import sys

from twisted.trial import unittest

from twisted.logger import Logger, formatEvent

from bench import soak
from bench.common import MEMORY_FIELDS, machine, memoryKB, statusKB
from bench.common import (
    cpuSeconds, processTree, treeCPUSeconds, treePssKB)
from bench import endtoend
from bench.endtoend import (
    REFERENCE_COMPONENT, Bench, CallgrindCounter, KamailioReference,
    callgrindCommand, callgrindTotal, connectionsTo, nurseryFromLog,
    shebangInterpreter, twistd)
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
        bench.reference = None
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

    def test_stopsReference(self):
        """
        With C{--reference} the C module's Kamailio is stopped too.
        """
        bench = self.bench()
        bench.reference = _FakeProsody()
        bench.stop()
        self.assertTrue(bench.reference.stopped)
        self.assertTrue(bench.prosody.stopped)

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


class _CommandLine:
    """
    Runs L{bench.endtoend.main} up to the point where it would start.
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

    def refused(self, argv):
        """
        The message with which the command line C{argv} is refused, before
        anything starts.
        """
        from bench import endtoend

        class Refused(Exception):
            pass

        def error(parser, message):
            raise Refused(message)

        self.patch(endtoend, "Bench", lambda args: self.fail("ran"))
        self.patch(endtoend.argparse.ArgumentParser, "error", error)
        return str(self.assertRaises(Refused, endtoend.main, argv))


class OptionTests(_CommandLine, unittest.TestCase):
    """
    The command line: the working directory, the options that shape the
    private Prosody, the directions.
    """

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

    def test_reference(self):
        """
        C{--reference} names the C module's file, made absolute (Kamailio
        runs in the working directory); Prosody then declares its
        component beside the gateway's, and without it does not.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not really a module\n")
        args = self.parsed(["--reference", path])
        self.assertEqual(os.path.abspath(path), args.reference)
        bench = Bench(args)
        self.addCleanup(bench.stop)
        self.assertIn(REFERENCE_COMPONENT, bench.prosody.extraComponents)
        self.assertEqual(os.path.abspath(path), bench.reference.xmppSo)
        self.assertEqual(bench.sinkPort, bench.reference.sinkPort)
        self.assertNotEqual(bench.sipPort, bench.reference.sipPort)
        self.assertIsNone(self.parsed([]).reference)

    def test_confirmDelivery(self):
        """
        C{--confirm-delivery} sets the gateway's C{[xmpp]
        confirm_delivery}; without it the file leaves the gateway's
        default (ping).
        """
        from xmppgw.compat import tomllib
        for argv, expected in (([], None),
                               (["--confirm-delivery", "none"], "none")):
            bench = Bench(self.parsed(argv))
            self.addCleanup(bench.stop)
            config = tomllib.loads(bench.gatewayConfig())
            self.assertEqual(expected,
                             config["xmpp"].get("confirm_delivery"))
            self.assertEqual(0.0, config["policy"]["rate_per_sender"])

    def test_referenceMissing(self):
        """
        A C{--reference} file that does not exist is refused before
        anything starts, naming what builds it.
        """
        self.assertIn("bench/kamailio-xmpp.sh", self.refused(
            ["--reference", "/nonexistent/xmpp.so"]))

    def test_directions(self):
        """
        C{--directions} takes the known directions, C{floor} among them,
        and refuses a misspelt one instead of running another.
        """
        self.assertEqual("floor,udp",
                         self.parsed(["--directions", "floor,udp"]).directions)
        self.assertIn("unknown --directions upd",
                      self.refused(["--directions", "udp,upd"]))


class CallgrindOptionTests(_CommandLine, unittest.TestCase):
    """
    C{--callgrind}: low rates only, the gateway alone, valgrind needed;
    its results are of their own kind.
    """

    def setUp(self):
        self.patch(endtoend.shutil, "which",
                   lambda name: "/usr/bin/" + name)

    def test_refused(self):
        """
        With C{--reference}, or a rate over L{endtoend.CALLGRIND_MAX_RATE},
        C{--callgrind} is refused before anything starts.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("module\n")
        self.assertIn("not with --reference", self.refused(
            ["--callgrind", "--reference", path, "--rates", "50"]))
        self.assertIn("rates of at most 200", self.refused(
            ["--callgrind", "--rates", "50,201"]))
        self.assertTrue(self.parsed(
            ["--callgrind", "--rates", "50,200"]).callgrind)
        self.assertFalse(self.parsed([]).callgrind)

    def test_noValgrind(self):
        """
        Without valgrind, C{--callgrind} is refused, naming what installs
        it.
        """
        self.patch(endtoend.shutil, "which", lambda name: None)
        self.assertIn("make bench", self.refused(
            ["--callgrind", "--rates", "50"]))

    def test_kind(self):
        """
        The results of C{--callgrind} are of kind
        C{"endtoend-instructions"} (which L{bench.targets} does not read
        as benchmark 2's), the others C{"endtoend"}.
        """
        for argv, kind in (
                (["--callgrind", "--rates", "50"], "endtoend-instructions"),
                (["--rates", "50"], "endtoend")):
            made = []

            def fake(args):
                made.append(_FakeStepBench(args, reference=False))
                return made[0]

            self.patch(endtoend, "Bench", fake)
            self.patch(endtoend, "emit", lambda results, path: None)
            results = endtoend.main(argv + ["--directions", "udp"])
            self.assertEqual(kind, results["benchmark"])
            self.assertIn("-m bench.endtoend ", results["command"])
            self.assertEqual([("udp", 50, False)], made[0].calls)


class CallgrindTests(unittest.TestCase):
    """
    The gateway under callgrind: its command line, the dumps' totals, the
    counter driven through C{callgrind_control}.
    """

    def script(self, first):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(first + "import sys\n")
        return path

    def test_shebang(self):
        """
        The interpreter is the one the script's C{#!} line names, through
        C{env} too; L{sys.executable} without one, or without the file.
        """
        self.assertEqual("/opt/venv/bin/python3", shebangInterpreter(
            self.script("#!/opt/venv/bin/python3 -E\n")))
        self.assertEqual("pypy3", shebangInterpreter(
            self.script("#!/usr/bin/env pypy3\n")))
        self.assertEqual(sys.executable, shebangInterpreter(
            self.script("# no interpreter named\n")))
        self.assertEqual(sys.executable,
                         shebangInterpreter("/nonexistent/twistd"))

    def test_command(self):
        """
        valgrind runs the interpreter with the script and its arguments,
        instrumentation off, each dump a file of the output directory.
        """
        script = self.script("#!/opt/venv/bin/python3\n")
        self.assertEqual(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             "--callgrind-out-file=/out/callgrind.out.%p",
             "/opt/venv/bin/python3", script, "-n", "xmppgw"],
            callgrindCommand([script, "-n", "xmppgw"], "/out"))

    def test_total(self):
        """
        A dump's total is its C{totals:} or C{summary:} line; a file
        without one (a dump still being written) is an error.
        """
        for line in ("totals: 123456\n", "summary: 123456\n"):
            path = self.script("events: Ir\n" + line)
            self.assertEqual(123456, callgrindTotal(path))
        self.assertRaises(ValueError, callgrindTotal,
                          self.script("events: Ir\nfn=foo\n"))

    def counter(self, complete=True):
        """
        A L{CallgrindCounter} of process 4242 whose C{callgrind_control}
        is a fake: C{-d} writes the next dump (complete, or completed
        only at the next sleep), counting 1,000 more instructions each
        time.
        """
        outDir = self.mktemp()
        os.mkdir(outDir)
        self.commands = []
        self.now = [0.0]
        pending = []

        def write(n, text):
            with open(os.path.join(
                    outDir, "callgrind.out.4242.%d" % (n,)), "w") as f:
                f.write(text)

        def run(argv, **kwargs):
            self.assertTrue(kwargs["check"])
            self.commands.append(argv[1:-1])
            self.assertEqual("4242", argv[-1])
            if argv[1] == "-d":
                n = sum(1 for c in self.commands if c == ["-d"])
                body = "events: Ir\ntotals: %d\n" % (1000 * n,)
                if complete:
                    write(n, body)
                else:
                    write(n, "events: Ir\n")
                    pending.append((n, body))

        def sleep(seconds):
            self.now[0] += seconds
            while pending:
                write(*pending.pop())

        return CallgrindCounter(4242, outDir, run=run, sleep=sleep,
                                clock=lambda: self.now[0])

    def test_counter(self):
        """
        The first L{CallgrindCounter.start} turns the instrumentation on,
        every one zeroes the counters; L{CallgrindCounter.stop} dumps and
        returns the new dump's total, not an earlier one's.
        """
        counter = self.counter()
        counter.start()
        self.assertEqual(1000, counter.stop())
        counter.start()
        self.assertEqual(2000, counter.stop())
        self.assertEqual([["-i", "on"], ["-z"], ["-d"], ["-z"], ["-d"]],
                         self.commands)

    def test_dumpBeingWritten(self):
        """
        A dump found before its totals line is written is read again.
        """
        counter = self.counter(complete=False)
        counter.start()
        self.assertEqual(1000, counter.stop())
        self.assertGreater(self.now[0], 0)

    def test_noDump(self):
        """
        No dump within L{endtoend.CALLGRIND_DUMP_SECONDS}: an error naming
        the process, not a wait without end.
        """
        counter = self.counter()
        counter._run = lambda argv, **kwargs: None
        counter.start()
        error = self.assertRaises(RuntimeError, counter.stop)
        self.assertIn("4242", str(error))
        self.assertGreaterEqual(self.now[0], endtoend.CALLGRIND_DUMP_SECONDS)


class _FakeStepBench:
    """
    A L{Bench} that records the steps L{bench.endtoend.main} asks for.
    """

    def __init__(self, args, reference=True):
        self.args = args
        self.reference = object() if reference else None
        self.gateway = argparse.Namespace(pid=os.getpid())
        self.calls = []
        self.stopped = False

    def start(self):
        pass

    def _log(self):
        return ""

    def stop(self):
        self.stopped = True

    def step(self, direction, rate, reference=False):
        self.calls.append((direction, rate, reference))
        return {"direction": direction, "rate": rate, "lost": 0,
                "gateway": "kamailio" if reference else "xmppgw"}


class ReferenceStepsTests(unittest.TestCase):
    """
    With C{--reference} every step but the floor's runs through the gateway
    and through the C module, one right after the other, the order
    alternating from step to step.
    """

    def steps(self, argv, reference=True):
        from bench import endtoend
        made = []

        def fake(args):
            made.append(_FakeStepBench(args, reference))
            return made[0]

        self.patch(endtoend, "Bench", fake)
        self.patch(endtoend, "emit", lambda results, path: None)
        self.patch(endtoend, "kamailioVersion", lambda: "version: test")
        results = endtoend.main(argv)
        self.assertTrue(made[0].stopped)
        return made[0].calls, results

    def test_alternating(self):
        """
        UDP at two rates, then XMPP -> SIP, then the floor (no C module
        there); the results name the module and carry every row.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("module\n")
        calls, results = self.steps([
            "--reference", path, "--directions", "udp,xmpp,floor",
            "--rates", "100,200"])
        self.assertEqual(
            [("udp", 100, False), ("udp", 100, True),
             ("udp", 200, True), ("udp", 200, False),
             ("xmpp", 100, False), ("xmpp", 100, True),
             ("xmpp", 200, True), ("xmpp", 200, False),
             ("floor", 100, False), ("floor", 200, False)], calls)
        self.assertEqual(10, len(results["steps"]))
        self.assertEqual(
            {"gateway": "kamailio", "xmpp_so": os.path.abspath(path),
             "kamailio": "version: test"}, results["reference"])

    def test_without(self):
        """
        Without C{--reference}, one step per rate, through the gateway.
        """
        calls, results = self.steps(
            ["--directions", "udp", "--rates", "100,200"], reference=False)
        self.assertEqual([("udp", 100, False), ("udp", 200, False)], calls)
        self.assertIsNone(results["reference"])


class ProcessTreeTests(unittest.TestCase):
    """
    The C module's accounting: Kamailio runs as a tree of processes.
    """

    def test_tree(self):
        """
        L{processTree} lists a process and its children; their CPU time is
        at least the parent's own, and their summed Pss is positive.
        """
        import subprocess
        import sys
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE)
        self.addCleanup(child.wait)
        self.addCleanup(child.stdin.close)
        tree = processTree(os.getpid())
        self.assertEqual(os.getpid(), tree[0])
        self.assertIn(child.pid, tree)
        self.assertGreaterEqual(treeCPUSeconds(os.getpid()),
                                cpuSeconds(os.getpid()))
        self.assertGreater(treePssKB(os.getpid()), 0)

    def test_connections(self):
        """
        L{connectionsTo} counts the established connections (state 01) to
        a remote port in the kernel's tables, IPv4 and IPv6, and not a
        listening socket or another port.
        """
        tcp = os.path.join(self.mktemp())
        tcp6 = self.mktemp()
        header = ("  sl  local_address rem_address   st tx_queue rx_queue "
                  "tr tm->when retrnsmt   uid  timeout inode\n")
        with open(tcp, "w") as f:
            f.write(header
                    + "   0: 0100007F:A1B2 0100007F:14E3 01 00000000:00000000 "
                      "00:00000000 00000000     0        0 1 1\n"
                    + "   1: 0100007F:14E3 00000000:0000 0A 00000000:00000000 "
                      "00:00000000 00000000     0        0 2 1\n"
                    + "   2: 0100007F:A1B3 0100007F:14E4 01 00000000:00000000 "
                      "00:00000000 00000000     0        0 3 1\n"
                    + "   3: 0100007F:A1B4 0100007F:14E3 06 00000000:00000000 "
                      "00:00000000 00000000     0        0 4 1\n")
        with open(tcp6, "w") as f:
            f.write(header
                    + "   0: 00000000000000000000000001000000:A1B5 "
                      "00000000000000000000000001000000:14E3 01 "
                      "00000000:00000000 00:00000000 00000000 0 0 5 1\n")
        self.assertEqual(2, connectionsTo(5347, (tcp, tcp6)))
        self.assertEqual(1, connectionsTo(5348, (tcp, tcp6)))
        self.assertEqual(0, connectionsTo(5347, ("/nonexistent",)))


class KamailioConfigTests(unittest.TestCase):
    """
    L{KamailioReference.config}: Kamailio's configuration for the C module.
    """

    def test_config(self):
        """
        The module in component mode with the benchmark's Prosody, ports
        (SIP over UDP and TCP, as the gateway) and sink; C{tm} loaded before C{sl} (which binds to it when it
        starts), and every MESSAGE through C{xmpp_send_message()}.
        """
        prosody = argparse.Namespace(componentPort=15347,
                                     componentSecret="s3cret")
        reference = KamailioReference("/w", "/m/xmpp.so", prosody, 15099,
                                      modules="/mods/")
        text = reference.config()
        for transport in ("udp", "tcp"):
            self.assertIn("listen=%s:127.0.0.1:%d\n"
                          % (transport, reference.sipPort), text)
        for line in ('mpath="/mods/"', 'loadmodule "/m/xmpp.so"',
                     'modparam("xmpp", "backend", "component")',
                     'modparam("xmpp", "xmpp_domain", "%s")'
                     % (REFERENCE_COMPONENT,),
                     'modparam("xmpp", "xmpp_port", 15347)',
                     'modparam("xmpp", "xmpp_password", "s3cret")',
                     'modparam("xmpp", "gateway_domain", "127.0.0.1")',
                     'modparam("xmpp", "outbound_proxy", '
                     '"sip:127.0.0.1:15099")',
                     "if (xmpp_send_message()) {"):
            self.assertIn(line + "\n", text)
        self.assertLess(text.index('loadmodule "tm.so"'),
                        text.index('loadmodule "sl.so"'))
        self.assertEqual(text.count("{"), text.count("}"))


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
