"""
Tests for L{bench.inprocess}: the benchmark's gateway is wired as twistd
wires it (no timing is asserted here; speed is measured by make bench).
"""

import gc
import io
import re
from types import SimpleNamespace

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from bench import inprocess
from bench.common import cpuPerMessage, interleaved
from bench.inprocess import (
    GATEWAY_DOMAIN, PEER, Gateway, LogClock, Runner, YoungAllocations)
from xmppgw.logs import FLUSH_INTERVAL, TextLineObserver
from xmppgw.policy import Policy


class PolicyTests(TestCase):
    """
    The benchmark's gateway has the L{Policy} C{twistd xmppgw} builds,
    with the rate limits off (as benchmark 2 configures them).
    """

    def test_policyWired(self):
        """
        The policy checks the SIP sources and is the router's.
        """
        g = Gateway(logMessages=False, freeze=False)
        self.assertIsInstance(g.policy, Policy)
        self.assertIs(g.router.policy, g.policy)
        self.assertIs(g.sip.allowFrom, g.policy)
        self.assertEqual(g.policy.perSource.rate, 0)
        self.assertEqual(g.policy.perSender.rate, 0)

    def test_noPolicy(self):
        """
        C{policy=False} (C{--no-policy}) leaves both without one.
        """
        g = Gateway(logMessages=False, freeze=False, policy=False)
        self.assertIsNone(g.policy)
        self.assertIsNone(g.router.policy)
        self.assertIsNone(g.sip.allowFrom)

    def test_relaysBothWays(self):
        """
        With the policy, the benchmark's messages are relayed both ways
        (the runner raises otherwise), and more than the default per-sender
        rate of one sender passes.
        """
        g = Gateway(logMessages=False, freeze=False)
        runner = Runner(g, 0.001)
        runner.sipToXMPP(50, 1)
        runner.xmppToSIP(50, 1)
        self.assertEqual(g.router.stats.get("xmpp.relayed"), 50)

    def test_policyConsulted(self):
        """
        The policy is on the path: a MESSAGE whose From host is the
        gateway's own domain is refused, 403.
        """
        g = Gateway(logMessages=False, freeze=False)
        request = (
            "MESSAGE sip:user*xmpp.test@{d} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-refused\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:mallory@{d}>;tag=1\r\n"
            "To: <sip:user*xmpp.test@{d}>\r\n"
            "Call-ID: refused@127.0.0.1\r\n"
            "CSeq: 1 MESSAGE\r\n"
            "Content-Type: text/plain\r\n"
            "Content-Length: 2\r\n\r\nhi".format(d=GATEWAY_DOMAIN)
        ).encode()
        g.sipProtocol.datagramReceived(request, PEER)
        self.assertTrue(g.udp.last.startswith(b"SIP/2.0 403 "), g.udp.last)


class LogFlushTests(TestCase):
    """
    The benchmark's log observer is the one twistd installs, flushed on
    the timer of the gateway being measured.
    """

    def setUp(self):
        self.clock = LogClock()
        self.patch(inprocess, "LOG_CLOCK", self.clock)
        self.out = io.StringIO()
        self.observer = inprocess.benchLogObserver(self.out)

    def test_observer(self):
        """
        L{benchLogObserver} is a L{TextLineObserver} with the default flush
        interval, its timer on the log clock.
        """
        self.assertIsInstance(self.observer, TextLineObserver)
        self.assertIs(self.clock.observer, self.observer)
        flusher = self.observer.flusher
        self.assertEqual((FLUSH_INTERVAL, self.clock),
                         (flusher.interval, flusher.clock))

    def test_follows(self):
        """
        The log clock follows the last gateway made, and the one a runner
        runs; switching flushes and disarms the timer armed on the previous
        clock.
        """
        first = Gateway(logMessages=True, freeze=False)
        self.assertIs(first.clock, self.clock.current)
        second = Gateway(logMessages=True, freeze=False)
        self.assertIs(second.clock, self.clock.current)
        flushes = []
        self.out.flush = lambda: flushes.append(self.out.getvalue())
        globalLogPublisher.addObserver(self.observer)
        self.addCleanup(globalLogPublisher.removeObserver, self.observer)
        timed = self.observer.flusher._timedFlush

        def armed(clock):
            return [c for c in clock.getDelayedCalls() if c.func == timed]

        Runner(first, 0.001).sipToXMPP(5, 1)
        self.assertIs(first.clock, self.clock.current)
        self.assertEqual(1, len(armed(first.clock)))
        lines = self.out.getvalue()
        self.assertEqual(5, lines.count("SIP->XMPP"))
        # (Switching from the second gateway's clock flushed nothing.)
        self.assertEqual([""], flushes)
        Runner(second, 0.001).sipToXMPP(1, 1)
        self.assertEqual(["", lines], flushes)
        self.assertEqual([], armed(first.clock))
        self.assertEqual(1, len(armed(second.clock)))


class FakeHooks:
    """
    PyPy's C{gc.hooks}, as far as L{YoungAllocations} uses it.
    """

    def __init__(self):
        self.on_gc_minor = "previous hook"
        self.on_gc_collect_step = "previous step hook"


class YoungAllocationsTests(TestCase):
    """
    L{YoungAllocations}: bytes allocated per message on PyPy, from its
    minor collections.
    """

    def test_counts(self):
        """
        Inside C{with} every minor collection and major collection step
        reported is counted, with its time; the bytes per message are
        collections times the nursery over the messages, the times are in
        µs per message; the previous hooks are back afterwards.
        """
        hooks = FakeHooks()
        young = YoungAllocations(hooks, nurserySize=4096)
        with young:
            self.assertNotEqual("previous hook", hooks.on_gc_minor)
            self.assertNotEqual("previous step hook",
                                hooks.on_gc_collect_step)
            hooks.on_gc_minor(SimpleNamespace(count=3, duration=0.002))
            hooks.on_gc_collect_step(SimpleNamespace(count=4, duration=0.003))
            hooks.on_gc_minor(SimpleNamespace(count=2, duration=0.0005))
        self.assertEqual("previous hook", hooks.on_gc_minor)
        self.assertEqual("previous step hook", hooks.on_gc_collect_step)
        self.assertEqual({"minor_collections": 5, "young_bytes_per_msg": 2048,
                          "major_steps": 4, "gc_minor_us": 250.0,
                          "gc_major_us": 300.0},
                         young.perMessage(10))

    def test_unknownNursery(self):
        """
        Without the nursery size, only the collections are reported.
        """
        young = YoungAllocations(FakeHooks(), nurserySize=0)
        with young:
            pass
        self.assertEqual({"minor_collections": 0, "young_bytes_per_msg": None,
                          "major_steps": 0, "gc_minor_us": 0.0,
                          "gc_major_us": 0.0},
                         young.perMessage(10))

    def test_noHooks(self):
        """
        Without C{gc.hooks} (CPython) nothing is measured or reported.
        """
        young = YoungAllocations(None)
        with young:
            pass
        self.assertEqual({}, young.perMessage(10))

    def test_thisInterpreter(self):
        """
        With this interpreter's own C{gc}: on PyPy, allocating several
        nurseries' worth counts collections; on CPython (no C{gc.hooks})
        nothing is reported.
        """
        young = YoungAllocations()
        with young:
            for _ in range(200):
                bytearray((young.nurserySize or 65536) // 16)
        if hasattr(gc, "hooks"):
            self.assertGreater(young.collections, 0)
            self.assertGreater(young.perMessage(1)["young_bytes_per_msg"], 0)
            self.assertGreater(young.perMessage(1)["gc_minor_us"], 0)
        else:
            self.assertEqual({}, young.perMessage(1))


class FakeClocks:
    """
    The runner's two clocks: the wall clock moves C{step} ns per read, the
    CPU clock C{cpuStep} seconds per read; both count their reads.
    """

    def __init__(self, step=1000, cpuStep=0.5):
        self.now = 0
        self.cpu = 0.0
        self.step = step
        self.cpuStep = cpuStep
        self.wallReads = 0
        self.cpuReads = 0

    def wall(self):
        self.wallReads += 1
        self.now += self.step
        return self.now

    def cpuTime(self):
        self.cpuReads += 1
        self.cpu += self.cpuStep
        return self.cpu


class InterleavedTests(TestCase):
    """
    L{bench.common.interleaved}: the order of interleaved runs.
    """

    def test_order(self):
        """
        One run of every case per round, each round starting with the
        next case.
        """
        self.assertEqual([0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2],
                         list(interleaved(4, 3)))

    def test_oneCase(self):
        """
        With one case, its runs one after another; with no rounds, none.
        """
        self.assertEqual([0, 0, 0], list(interleaved(3, 1)))
        self.assertEqual([], list(interleaved(0, 3)))


class CPUPerMessageTests(TestCase):
    """
    L{bench.common.cpuPerMessage}: the timed wall time times the run's CPU
    share.
    """

    def test_share(self):
        """
        2 ms timed for 1,000 messages in a run that had the CPU half of its
        1 s: 1 µs a message.
        """
        self.assertEqual(1.0, cpuPerMessage(2000000, 1000, 0.5,
                                                      1000000000))

    def test_atMostWall(self):
        """
        A CPU clock ahead of the wall clock (the two clocks' granularity)
        does not make a message cost more CPU than its wall time.
        """
        self.assertEqual(2.0, cpuPerMessage(2000000, 1000, 1.2,
                                                      1000000000))

    def test_empty(self):
        """
        A run without messages or time has no figure.
        """
        self.assertRaises(ValueError, cpuPerMessage, 1, 0, 1, 1)
        self.assertRaises(ValueError, cpuPerMessage, 1, 1, 1, 0)


class RunnerClockTests(TestCase):
    """
    L{Runner} reads the CPU clock (a system call) only at the two ends of
    a run, and times each message's parts with the wall clock.
    """

    def run_(self, direction, count, cpuStep=0.5):
        clocks = FakeClocks(cpuStep=cpuStep)
        runner = Runner(Gateway(logMessages=False, freeze=False), 0.001,
                        wallClock=clocks.wall, cpuClock=clocks.cpuTime)
        timings = []
        wall, cpu = getattr(runner, direction)(count, 1, timings)
        return clocks, timings, wall, cpu

    def test_cpuClockTwicePerRun(self):
        """
        Twice per run whatever the count, in both directions (XMPP -> SIP
        used to read it around each of three parts of every message).
        """
        for direction in ("sipToXMPP", "xmppToSIP"):
            for count in (1, 20):
                clocks = self.run_(direction, count)[0]
                self.assertEqual(2, clocks.cpuReads, (direction, count))

    def test_figures(self):
        """
        XMPP -> SIP: three timed parts a message, each two wall-clock reads
        1 µs apart; the runner reports 3 µs wall and, the run having had
        the CPU for half of its wall time, 1.5 µs CPU.
        """
        # 62 reads 1 µs apart: the run lasts 61 µs, of which 30.5 on a CPU.
        clocks, timings, wall, cpu = self.run_("xmppToSIP", 10, 30.5e-6)
        self.assertEqual(2 + 3 * 2 * 10, clocks.wallReads)
        self.assertEqual([3000] * 10, timings)
        self.assertEqual(3.0, wall)
        self.assertAlmostEqual(1.5, cpu)

    def test_figuresSIPToXMPP(self):
        """
        SIP -> XMPP: one timed part a message (the datagram in, the clock
        advanced).
        """
        clocks, timings, wall, cpu = self.run_("sipToXMPP", 10)
        self.assertEqual([1000.0] * 10, timings)
        self.assertEqual(1.0, wall)
        self.assertEqual(2 + 2 * 10, clocks.wallReads)


class MeasureCasesTests(TestCase):
    """
    L{inprocess.measureCases}: every case of a direction on its own
    gateway, their timed runs interleaved.
    """

    def args(self, **kwargs):
        return SimpleNamespace(**{
            "rate": 1000.0, "batch": 1, "warmup": 1, "runs": 3, "count": 10,
            "log": False, "freeze": False, "confirm": "ping",
            "policy": True, **kwargs})

    def test_summaries(self):
        """
        One summary per case, in the order asked, each over C{runs} runs
        on a gateway of its own that relayed every message of its runs;
        with metrics on, the recorder counted them.
        """
        for direction in ("sipToXMPP", "xmppToSIP"):
            out = inprocess.measureCases(
                direction, [(1, False), (5, False), (1, True)], self.args())
            self.assertEqual(3, len(out))
            for summary in out:
                self.assertGreater(summary["cpu_median_us"], 0)
                self.assertLessEqual(summary["p10_us"], summary["p90_us"])

    def test_interleaved(self):
        """
        The warm-up runs every case in turn; then each round runs every
        case once, starting with the next case each round.
        """
        calls = []

        def run(self, count, distinct, timings=None):
            calls.append((distinct, timings is not None))
            return 1.0, 1.0

        self.patch(inprocess.Runner, "sipToXMPP", run)
        inprocess.measureCases(
            "sipToXMPP", [(1, False), (100, False), (10000, False)],
            self.args(warmup=2, runs=4, count=5000))
        self.assertEqual(
            [(1, False), (100, False), (10000, False)] * 2
            + [(d, True) for d in (1, 100, 10000, 100, 10000, 1, 10000, 1,
                                   100, 1, 100, 10000)],
            calls)

    def test_warmupCoversAddresses(self):
        """
        The warm-up runs as often as C{--warmup} asks, and more if a case
        would not otherwise have sent a message from each of its addresses
        (round 28: the 10,000-address case's first timed runs had been its
        first sight of 4,000 of them).
        """
        self.assertEqual(3, inprocess.warmupRuns(3, 2000, [1, 100, 6000]))
        self.assertEqual(5, inprocess.warmupRuns(3, 2000, [1, 100, 10000]))
        self.assertEqual(6, inprocess.warmupRuns(3, 2000, [1, 10001]))
        runs = []

        def run(self, count, distinct, timings=None):
            runs.append((count, distinct, timings is not None))
            return 1.0, 1.0

        self.patch(inprocess.Runner, "xmppToSIP", run)
        inprocess.measureCases("xmppToSIP", [(1, False), (25, False)],
                               self.args(warmup=1, runs=1, count=10))
        self.assertEqual([(10, 1, False), (10, 25, False)] * 3
                         + [(10, 1, True), (10, 25, True)], runs)

    def test_batch(self):
        """
        C{--batch} reaches every case's runner.
        """
        batches = []

        def run(self, count, distinct, timings=None):
            batches.append(self.batch)
            return 1.0, 1.0

        self.patch(inprocess.Runner, "xmppToSIP", run)
        inprocess.measureCases("xmppToSIP", [(1, False), (100, False)],
                               self.args(batch=4))
        self.assertEqual({4}, set(batches))


class HarnessTests(TestCase):
    """
    L{inprocess.measureHarness}: the benchmark's loop on a gateway that
    does nothing.
    """

    def test_nullGateway(self):
        """
        The runner's checks pass on a L{inprocess.NullGateway} in both
        directions, and both figures are reported.
        """
        args = SimpleNamespace(rate=1000.0, batch=1, warmup=1, runs=3,
                               count=20)
        for direction in ("sipToXMPP", "xmppToSIP"):
            figures = inprocess.measureHarness(direction, args)
            self.assertEqual({"harness_median_us", "harness_cpu_median_us"},
                             set(figures))
            self.assertGreater(figures["harness_median_us"], 0)
            self.assertLessEqual(figures["harness_cpu_median_us"],
                                 figures["harness_median_us"])

    def test_nullGatewayBatch(self):
        """
        With several messages per reactor turn (C{--batch}), where one read
        holds the turn's stanzas, the null gateway still answers each.
        """
        args = SimpleNamespace(rate=1000.0, batch=4, warmup=1, runs=2,
                               count=20)
        for direction in ("sipToXMPP", "xmppToSIP"):
            figures = inprocess.measureHarness(direction, args)
            self.assertGreater(figures["harness_median_us"], 0)

    def test_nullRequestShaped(self):
        """
        The request the null gateway sends for each stanza, whose C{200 OK}
        the loop builds, is the gateway's own for the first stanza, but
        for its random branch, tag and Call-ID (of the same lengths).
        """
        gateway = inprocess.Gateway(logMessages=False, freeze=False)
        sent = []
        write = gateway.udp.write
        gateway.udp.write = lambda data, addr=None: (
            sent.append(data), write(data, addr))
        gateway.xs.dataReceived(inprocess.xmppMessage(0, 1))
        [request] = sent

        def fixed(data):
            return re.sub(rb"[0-9a-f]{12,}", b"<random>", data)

        self.assertEqual(fixed(request), fixed(inprocess.NULL_REQUEST))
        self.assertEqual(len(request), len(inprocess.NULL_REQUEST))
        self.assertIn(b"<random>", fixed(request))


class MessagesTests(TestCase):
    """
    L{inprocess.sipMessage}: the users it writes.
    """

    def test_users(self):
        """
        Message C{i} is from and to user C{i % distinct}, counted from
        C{first} (0 by default): C{bench.scale}'s warm-up takes users the
        timed run does not.
        """
        self.assertIn(b"MESSAGE sip:user7*xmpp.test@",
                      inprocess.sipMessage(107, 100))
        self.assertIn(b"From: <sip:alice7@sip7.example.com>",
                      inprocess.sipMessage(107, 100))
        message = inprocess.sipMessage(107, 100, first=10000)
        self.assertIn(b"MESSAGE sip:user10007*xmpp.test@", message)
        self.assertIn(b"From: <sip:alice10007@sip7.example.com>", message)
        self.assertIn(b"Call-ID: c107@", message)
