"""
Tests for L{bench.targets}: issue 4's targets read from results files.
"""

import contextlib
import io
import json
import os

from twisted.trial import unittest

from bench import targets
from tests.test_bench_report import RESULTS

MACHINE = {"cpu": "Test CPU", "nproc": 2, "python": "CPython 3.11.7",
           "date": "2026-11-28 00:00:00 UTC"}


def inprocess(cases, python="CPython 3.11.7", **settings):
    """
    Benchmark 1 results with C{cases}: C{(direction, distinct, cpu µs)}.
    """
    return {"benchmark": "inprocess",
            "machine": dict(MACHINE, python=python), "revision": "abc",
            "batch": 1, "confirm_delivery": "ping", "log_messages": True,
            "gc_freeze": True, "policy": True, "metrics": "off",
            **settings,
            "cases": [{"direction": d, "distinct": n, "metrics": False,
                       "cpu_median_us": us} for d, n, us in cases]}


def step(direction="udp", rate=4000, lost=0, p99=3.0, gateway=50.0,
         prosody=60.0, offered=None, sent=None, subject=None):
    extra = {} if subject is None else {"gateway": subject}
    return {**extra, "direction": direction, "rate": rate,
            "offered_rate": rate if offered is None else offered,
            "sent": rate * 5 if sent is None else sent, "lost": lost,
            "p99_ms": p99, "gateway_cpu_us_per_msg": gateway,
            "prosody_cpu_us_per_msg": prosody}


def endtoend(steps, twistd="/x/.venv/bin/twistd", idle=55.0, **extra):
    return {"benchmark": "endtoend", "machine": MACHINE, "revision": "abc",
            "gateway_twistd": twistd, "steps": steps,
            "gateway_idle_rss_mb": idle, **extra}


def soak(duration=600.0, middle=100.0, growth=0.0, idle=57.0, **extra):
    return {"benchmark": "soak", "machine": MACHINE, "revision": "abc",
            "duration": duration, "rss_middle_mb": middle,
            "rss_growth_middle_to_end_mb": growth, "rss_idle_mb": idle,
            **extra}


def scale(growth=50.0, rss=None, held=10000):
    h = {"held": held, "rss_growth_mb": growth,
         "first_10pct_us_per_msg": 1.0, "last_10pct_us_per_msg": 2.0}
    if rss is not None:
        h["rss_mb"] = rss
    return {"benchmark": "scale", "machine": MACHINE, "revision": "abc",
            "held": h, "flat": {}}


def s2s(cases):
    """
    Server mode's results with C{cases}: C{(direction, peers, cpu µs)}.
    """
    return {"benchmark": "s2s", "machine": MACHINE, "revision": "abc",
            "cases": [{"direction": d, "peers": n, "cpu_median_us": us}
                      for d, n, us in cases]}


def heldTenths(medians, means=None, warmup=6000, held=10000):
    """
    Benchmark 3's results with the held run's tenths: their C{medians}
    and C{means} (µs per message; default: the medians).
    """
    means = medians if means is None else means
    r = scale(rss=100.0, held=held)
    r["held"].update(first_10pct_us_per_msg=means[0],
                     last_10pct_us_per_msg=means[-1],
                     tenths_us_per_msg=means, tenths_median_us=medians,
                     warmup_held=warmup)
    return r


def verdicts(rows, target=None):
    return [row[3] for row in rows if target is None or row[0] == target]


class Benchmark1Tests(unittest.TestCase):
    """
    L{targets.benchmark1}.
    """

    def test_rowPerAddressCount(self):
        """
        One row per direction and address count, each judged against its
        direction's target on the CPU median, with the ratio.
        """
        rows = targets.benchmark1({"inprocess-pypy.json": inprocess(
            [("sipToXMPP", 1, 37.0), ("sipToXMPP", 100, 37.1),
             ("xmppToSIP", 1, 17.9), ("xmppToSIP", 10000, 40.0)],
            python="PyPy 3.9.16")})
        self.assertEqual(
            [[r[1], r[2], r[3]] for r in rows],
            [["inprocess-pypy.json (PyPy), 1 address", "37.0 µs (1.00x)",
              targets.MET],
             ["inprocess-pypy.json (PyPy), 100 addresses", "37.1 µs (1.00x)",
              targets.NOT_MET],
             ["inprocess-pypy.json (PyPy), 1 address", "17.9 µs (0.99x)",
              targets.MET],
             ["inprocess-pypy.json (PyPy), 10000 addresses",
              "40.0 µs (2.22x)", targets.NOT_MET]])
        self.assertEqual(
            [r[0] for r in rows],
            ["benchmark 1 CPU SIP -> XMPP <= 37 µs"] * 2
            + ["benchmark 1 CPU XMPP -> SIP <= 18 µs"] * 2)

    def test_compiledLabelled(self):
        """
        A run on CPython with the compiled build (C{compiled_modules} in
        its header) is labelled as such; on PyPy the count does not apply.
        """
        rows = targets.benchmark1({
            "c.json": inprocess([("sipToXMPP", 1, 90.0)],
                                compiled_modules=22),
            "p.json": inprocess([("sipToXMPP", 1, 30.0)],
                                python="PyPy 3.9.16", compiled_modules=22),
            "q.json": inprocess([("sipToXMPP", 1, 140.0)],
                                compiled_modules=0)})
        self.assertEqual(
            [r[1] for r in rows
             if r[0] == "benchmark 1 CPU SIP -> XMPP <= 37 µs"],
            ["c.json (CPython, compiled), 1 address",
             "p.json (PyPy), 1 address", "q.json (CPython), 1 address"])

    def test_harnessShown(self):
        """
        Where the file gives the cost of the benchmark's own loop per
        direction, each row of that direction shows it; the verdict is on
        the whole figure.
        """
        results = inprocess([("sipToXMPP", 1, 36.0), ("xmppToSIP", 1, 18.5)],
                            python="PyPy 3.9.16")
        results["harness"] = [
            {"direction": "sipToXMPP", "harness_median_us": 0.1,
             "harness_cpu_median_us": 0.102},
            {"direction": "xmppToSIP", "harness_median_us": 0.27,
             "harness_cpu_median_us": 0.265}]
        rows = targets.benchmark1({"inprocess-pypy.json": results})
        self.assertEqual(
            [[r[2], r[3]] for r in rows],
            [["36.0 µs (0.97x), of which the benchmark's loop 0.10",
              targets.MET],
             ["18.5 µs (1.03x), of which the benchmark's loop 0.27",
              targets.NOT_MET]])

    def test_collectorShown(self):
        """
        Where a case gives PyPy's collector time per message (minor
        collections and major steps), its row shows their sum; the
        verdict is on the whole figure.
        """
        results = inprocess([("sipToXMPP", 10000, 42.0)],
                            python="PyPy 3.9.16")
        results["cases"][0].update(gc_minor_us=5.84, gc_major_us=4.82)
        rows = targets.benchmark1({"inprocess-pypy.json": results})
        self.assertEqual([["42.0 µs (1.14x), the collector 10.7",
                           targets.NOT_MET]],
                         [[r[2], r[3]] for r in rows
                          if r[0] == "benchmark 1 CPU SIP -> XMPP <= 37 µs"])

    def test_nurseryShown(self):
        """
        PyPy's figures depend on its nursery: where the file names it, each
        row shows it.
        """
        results = inprocess([("sipToXMPP", 1, 30.0)], python="PyPy 3.9.16")
        results["machine"]["pypy_nursery_mb"] = 4.0
        rows = targets.benchmark1({"inprocess-pypy.json": results})
        self.assertEqual(
            ["inprocess-pypy.json (PyPy), 1 address, PyPy nursery 4.0 MB",
             "no in-process results"],
            [row[1] for row in rows])

    def test_onlyTheDefaultSetUp(self):
        """
        Runs that differ from C{twistd xmppgw}'s defaults or from one
        message per reactor turn do not count: without the ping, the log,
        the policy or the frozen objects, with a batch, and the metrics
        comparison. With nothing else, the target is not measured.
        """
        fast = [("sipToXMPP", 1, 1.0), ("xmppToSIP", 1, 1.0)]
        results = {
            "a.json": inprocess(fast, confirm_delivery="none"),
            "b.json": inprocess(fast, log_messages=False),
            "c.json": inprocess(fast, policy=False),
            "d.json": inprocess(fast, gc_freeze=False),
            "e.json": inprocess(fast, batch=16),
            "f.json": inprocess(fast, metrics="both"),
        }
        self.assertEqual(verdicts(targets.benchmark1(results)),
                         [targets.NOT_MEASURED] * 2)
        results["g.json"] = inprocess(fast)
        self.assertEqual(verdicts(targets.benchmark1(results)),
                         [targets.MET] * 2)

    def test_metricsOnCasesSkipped(self):
        """
        A case with the metrics recorder on is not the default.
        """
        r = inprocess([("sipToXMPP", 1, 1.0)])
        r["cases"][0]["metrics"] = True
        rows = targets.benchmark1({"x.json": r})
        self.assertEqual(verdicts(rows), [targets.NOT_MEASURED] * 2)


class GatewayCPUTests(unittest.TestCase):
    """
    L{targets.gatewayCPU}: the gateway's CPU per message against
    Prosody's, in every step.
    """

    def test_everyStep(self):
        """
        One step over Prosody's figure is enough for "not met"; the floor
        (no gateway) is not a step of the gateway.
        """
        under = endtoend([step(gateway=50, prosody=100),
                          step(rate=8000, gateway=40, prosody=50),
                          step("floor", gateway=0, prosody=80)])
        over = endtoend([step(gateway=50, prosody=100),
                         step(rate=1000, gateway=101, prosody=100)])
        rows = targets.gatewayCPU({"a.json": under, "b.json": over})
        self.assertEqual(
            [r[2:] for r in rows],
            [["2 steps: 0.50-0.80x (median 0.65x; highest at 8000/s)",
              targets.MET],
             ["2 steps: 0.50-1.01x (median 0.76x; highest at 1000/s)",
              targets.NOT_MET]])

    def test_lossyStepsLeftOut(self):
        """
        A step that lost messages (past saturation) is left out and
        counted; a file with no other step gives no row.
        """
        rows = targets.gatewayCPU({
            "a.json": endtoend([step(gateway=50, prosody=100),
                                step(rate=12000, lost=5, gateway=80,
                                     prosody=60)]),
            "b.json": endtoend([step(lost=1, gateway=80, prosody=60)])})
        self.assertEqual(
            [r[1:] for r in rows],
            [["a.json (CPython)", "1 step: 0.50x (median 0.50x; highest at "
              "4000/s); 1 step that lost messages left out", targets.MET]])

    def test_none(self):
        """
        No end-to-end results: not measured.
        """
        self.assertEqual(verdicts(targets.gatewayCPU({})),
                         [targets.NOT_MEASURED])


class CModuleCPUTests(unittest.TestCase):
    """
    L{targets.cModuleCPU}: the gateway's CPU per message against the C
    module's in the same run (C{bench.endtoend --reference}); the C
    module's steps count for no other target.
    """

    def withReference(self, steps):
        return {"r.json": endtoend(steps, reference={"gateway": "kamailio"})}

    def test_pairs(self):
        """
        Each step of the gateway next to the C module's at the same rate
        (in either order) is a pair, per direction; the C module's figures
        are shown beside the ratios.
        """
        rows = targets.cModuleCPU(self.withReference([
            step(rate=1000, gateway=300, subject="xmppgw"),
            step(rate=1000, gateway=150, subject="kamailio"),
            step(rate=2000, gateway=100, subject="kamailio"),
            step(rate=2000, gateway=250, subject="xmppgw"),
            step("xmpp", rate=1000, gateway=90, subject="xmppgw"),
            step("xmpp", rate=1000, gateway=100, subject="kamailio")]))
        self.assertEqual(
            [r[1:] for r in rows],
            [["r.json (CPython), udp", "2 steps: 2.00-2.50x (median 2.25x); "
              "the gateway 250.0-300.0 µs, the C module 100.0-150.0 µs",
              targets.NOT_MET],
             ["r.json (CPython), xmpp", "1 step: 0.90x (median 0.90x); "
              "the gateway 90.0 µs, the C module 100.0 µs", targets.MET]])
        self.assertEqual(
            [targets.T_CMODULE["udp"], targets.T_CMODULE["xmpp"]],
            [r[0] for r in rows])

    def test_lossLeftOut(self):
        """
        A pair in which either lost messages is left out and counted; a
        direction with no other pair is not measured.
        """
        rows = targets.cModuleCPU(self.withReference([
            step(rate=1000, gateway=120, subject="xmppgw"),
            step(rate=1000, gateway=100, subject="kamailio"),
            step(rate=8000, gateway=100, subject="kamailio", lost=3),
            step(rate=8000, gateway=90, subject="xmppgw"),
            step("tcp", rate=1000, lost=1, subject="xmppgw"),
            step("tcp", rate=1000, subject="kamailio")]))
        self.assertEqual(
            [r[2:] for r in rows],
            [["1 step: 1.20x (median 1.20x); the gateway 120.0 µs, the C "
              "module 100.0 µs; 1 step that lost messages left out",
              targets.NOT_MET],
             ["1 step, all with messages lost", targets.NOT_MEASURED]])

    def test_confirmDeliveryNamed(self):
        """
        A run whose gateway did not wait for the server's confirmation
        (C{--confirm-delivery none}, as the C module) says so in its rows.
        """
        results = {"n.json": endtoend(
            [step(rate=1000, gateway=90, subject="xmppgw"),
             step(rate=1000, gateway=100, subject="kamailio")],
            confirm_delivery="none")}
        self.assertEqual(
            ["n.json (CPython), confirm_delivery none, udp"],
            [row[1] for row in targets.cModuleCPU(results)])

    def test_unpaired(self):
        """
        Steps of the gateway alone (files without the reference) give no
        pair; with no pair anywhere the target is not measured.
        """
        self.assertEqual([], targets.referencePairs(endtoend(
            [step(rate=1000), step(rate=1000), step(rate=2000)])))
        self.assertEqual(
            [targets.NOT_MEASURED],
            verdicts(targets.cModuleCPU({"a.json": endtoend([step()])})))

    def test_onlyTheGatewayElsewhere(self):
        """
        The C module's steps are not the gateway's: they are left out of
        the Prosody comparison, the loss and the latency targets.
        """
        results = self.withReference([
            step(rate=10000, sent=50000, gateway=50, prosody=100,
                 subject="xmppgw"),
            step(rate=10000, sent=50000, gateway=500, prosody=100,
                 lost=7, p99=90.0, subject="kamailio"),
            step(rate=4000, p99=3.0, subject="xmppgw"),
            step(rate=4000, p99=80.0, subject="kamailio")])
        self.assertEqual([targets.MET], verdicts(targets.gatewayCPU(results)))
        self.assertEqual([targets.REFERENCE, targets.MET],
                         verdicts(targets.zeroLoss(results)))
        self.assertEqual([targets.MET, targets.REFERENCE],
                         verdicts(targets.latency(results)))

    def test_referenceRows(self):
        """
        The C module's loss at 10,000/s and p99 at 4,000/s are shown as
        references beside the gateway's rows, naming it.
        """
        results = self.withReference([
            step(rate=10000, sent=50000, subject="xmppgw"),
            step(rate=10000, sent=50000, lost=7, subject="kamailio"),
            step(rate=4000, p99=3.0, subject="kamailio"),
            step(rate=4000, p99=6.0, subject="xmppgw")])
        self.assertEqual(
            ["r.json (CPython), the C module",
             "1 step at 10,000/s: lost 7 of 50000 each", targets.REFERENCE],
            targets.zeroLoss(results)[0][1:])
        self.assertEqual(
            [["r.json (CPython)", "1 step: p99 6.0 ms", targets.NOT_MET],
             ["r.json (CPython), the C module", "1 step: p99 3.0 ms",
              targets.REFERENCE]],
            [row[1:] for row in targets.latency(results)])

    def test_referenceOnly(self):
        """
        Where only the C module ran at 10,000/s, the gateway's side of
        that target is not measured; at 4,000/s its p99 stands alone as a
        reference, as Prosody's alone does.
        """
        results = self.withReference([
            step(rate=8000, subject="xmppgw"),
            step(rate=10000, sent=50000, subject="kamailio"),
            step(rate=4000, p99=3.0, subject="kamailio")])
        self.assertEqual([targets.REFERENCE, targets.NOT_MEASURED],
                         verdicts(targets.zeroLoss(results)))
        self.assertEqual([targets.REFERENCE],
                         verdicts(targets.latency(results)))


class ZeroLossTests(unittest.TestCase):
    """
    L{targets.zeroLoss}.
    """

    def test_met(self):
        """
        Every UDP step at 10,000/s lost nothing at the offered rate: met,
        whatever a step beyond it lost; the file's gateway interpreter is
        named.
        """
        rows = targets.zeroLoss({"t.json": endtoend(
            [step(rate=8000), step(rate=10000, sent=50000),
             step(rate=10000, sent=50000, offered=9990),
             step(rate=12000, sent=50000, lost=3690)],
            twistd="/x/.venv-pypy/bin/twistd")})
        self.assertEqual(rows, [[
            targets.T_RATE, "t.json (PyPy)",
            "2 steps at 10,000/s: lost 0, 0 of 50000 each; offered "
            "9990-10000/s; the highest rate with none lost: 10000/s",
            targets.MET]])

    def test_lossOrShortfall(self):
        """
        A loss in any step at 10,000/s, or a load offered below 99 % of its
        rate, is not met.
        """
        lossy = endtoend([step(rate=10000), step(rate=10000, lost=1)])
        slow = endtoend([step(rate=10000, offered=9800)])
        rows = targets.zeroLoss({"a.json": lossy, "b.json": slow})
        self.assertEqual(verdicts(rows), [targets.NOT_MET, targets.NOT_MET])
        self.assertTrue(rows[0][2].endswith(
            "the highest rate with none lost: 10000/s"), rows[0][2])

    def test_notReached(self):
        """
        Without a step at 10,000/s the target is not measured, and the
        highest UDP step is shown.
        """
        rows = targets.zeroLoss({"c.json": endtoend(
            [step(rate=6000), step(rate=8000, lost=300),
             step("tcp", rate=20000)])})
        self.assertEqual(rows, [[
            targets.T_RATE, "c.json (CPython)",
            "no step at 10,000/s; the highest, 8000/s, lost 300",
            targets.NOT_MEASURED]])
        self.assertEqual(verdicts(targets.zeroLoss({})),
                         [targets.NOT_MEASURED])


class LatencyTests(unittest.TestCase):
    """
    L{targets.latency}: the p99 at 4,000/s, with Prosody alone as a
    reference.
    """

    def test_p99(self):
        """
        Every UDP step at 4,000/s must be at or under 5 ms; other rates
        do not count.
        """
        rows = targets.latency({
            "a.json": endtoend([step(p99=4.0), step(p99=5.0),
                                step(rate=8000, p99=90.0)]),
            "b.json": endtoend([step(p99=4.0), step(p99=5.1)])})
        self.assertEqual(
            [r[2:] for r in rows],
            [["2 steps: p99 4.0-5.0 ms", targets.MET],
             ["2 steps: p99 4.0-5.1 ms", targets.NOT_MET]])

    def test_floor(self):
        """
        Prosody alone is a reference row, which says whether it leaves the
        gateway room under 5 ms.
        """
        rows = targets.latency({
            "f.json": endtoend([step("floor", p99=6.0)]),
            "g.json": endtoend([step("floor", p99=4.6)])})
        self.assertEqual(
            [r[1:] for r in rows],
            [["f.json (CPython), Prosody alone",
              "1 step: p99 6.0 ms; over 5 ms without the gateway",
              targets.REFERENCE],
             ["g.json (CPython), Prosody alone",
              "1 step: p99 4.6 ms; the gateway can meet it here",
              targets.REFERENCE]])

    def test_none(self):
        """
        No UDP step at 4,000/s: not measured.
        """
        self.assertEqual(
            verdicts(targets.latency({"a.json": endtoend([step(rate=1000)])})),
            [targets.NOT_MEASURED])


class MemoryTests(unittest.TestCase):
    """
    L{targets.idleMemory}, L{targets.heldMemory}, L{targets.flatMemory}.
    """

    def test_idle(self):
        """
        Each gateway process's idle RSS, from benchmark 2 and the soak,
        with PyPy's nursery when recorded.
        """
        rows = targets.idleMemory({
            "a.json": endtoend([], idle=60.0),
            "b.json": endtoend([], twistd="/usr/bin/twistd", idle=121.8,
                               gateway_pypy_nursery_mb=4.0),
            "c.json": soak(idle=57.0),
            "d.json": scale(),
            "e.json": endtoend([], idle=60.2, compiled_modules=22)})
        self.assertEqual(
            [r[1:] for r in rows],
            [["a.json (CPython)", "60.0 MB", targets.MET],
             ["b.json (PyPy), PyPy nursery 4.0 MB", "121.8 MB",
              targets.NOT_MET],
             ["c.json (CPython)", "57.0 MB", targets.MET],
             ["e.json (CPython, compiled)", "60.2 MB", targets.NOT_MET]])

    def test_idleSplit(self):
        """
        Where a file records the split of the idle RSS, the row gives the
        process's own (anonymous) part and its mapped files' part; the
        verdict is still on the whole RSS.
        """
        rows = targets.idleMemory({
            "a.json": endtoend([], twistd="/usr/bin/twistd", idle=122.0,
                               gateway_idle_rss_anon_mb=70.5,
                               gateway_idle_rss_file_mb=51.5),
            "b.json": soak(idle=55.0, rss_idle_anon_mb=38.0,
                           rss_idle_file_mb=17.0)})
        self.assertEqual(
            [r[2:] for r in rows],
            [["122.0 MB (own 70.5, mapped files 51.5)", targets.NOT_MET],
             ["55.0 MB (own 38.0, mapped files 17.0)", targets.MET]])

    def test_held(self):
        """
        The RSS with 10,000 held; a file without it (before round 17) is
        not measured, and one that held another count does not count.
        """
        rows = targets.heldMemory({
            "a.json": scale(rss=200.0), "b.json": scale(rss=200.1),
            "c.json": scale(growth=48.4), "d.json": scale(rss=1.0, held=5)})
        self.assertEqual(
            [r[2:] for r in rows],
            [["200.0 MB (grew 50.0)", targets.MET],
             ["200.1 MB (grew 50.0)", targets.NOT_MET],
             ["grew 48.4 MB; the file predates the RSS itself",
              targets.NOT_MEASURED]])

    def test_flat(self):
        """
        A soak of 10 minutes or more that grew at most 2 MB from its middle
        to its end is flat; a shorter one is not measured.
        """
        rows = targets.flatMemory({
            "a.json": soak(growth=2.0), "b.json": soak(growth=2.1),
            "c.json": soak(duration=60.0)})
        self.assertEqual(
            [r[2:] for r in rows],
            [["600 s: 100.0 MB at the middle, +2.0 MB to the end",
              targets.MET],
             ["600 s: 100.0 MB at the middle, +2.1 MB to the end",
              targets.NOT_MET],
             ["60 s: 100.0 MB at the middle, +0.0 MB to the end (shorter "
              "than 10 minutes)", targets.NOT_MEASURED]])
        self.assertEqual(verdicts(targets.flatMemory({})),
                         [targets.NOT_MEASURED])


class GrowthTests(unittest.TestCase):
    """
    L{targets.growthWithAddresses}, L{targets.growthWithPeers},
    L{targets.growthWithHeld}: benchmark 3's "nothing per message may
    grow".
    """

    def test_addresses(self):
        """
        Benchmark 1's default runs: each address count against 1, per
        direction, met while none costs more than 1.10x; the other set-ups
        and a file with one count give no row.
        """
        rows = targets.growthWithAddresses({
            "a.json": inprocess([("sipToXMPP", 1, 10.0),
                                 ("sipToXMPP", 100, 10.5),
                                 ("sipToXMPP", 10000, 11.0),
                                 ("xmppToSIP", 1, 10.0),
                                 ("xmppToSIP", 10000, 11.2)]),
            "b.json": inprocess([("sipToXMPP", 1, 10.0),
                                 ("sipToXMPP", 10000, 30.0)],
                                confirm_delivery="none"),
            "c.json": inprocess([("sipToXMPP", 1, 10.0)])})
        self.assertEqual(
            [r[1:] for r in rows],
            [["a.json (CPython), SIP -> XMPP",
              "1.05x with 100, 1.10x with 10,000 against 1 address "
              "(10.0 / 10.5 / 11.0 µs)", targets.MET],
             ["a.json (CPython), XMPP -> SIP",
              "1.12x with 10,000 against 1 address (10.0 / 11.2 µs)",
              targets.NOT_MET]])
        self.assertEqual(verdicts(targets.growthWithAddresses({})),
                         [targets.NOT_MEASURED])

    def test_peers(self):
        """
        Server mode: each count of peer domains against the smallest, every
        count judged.
        """
        rows = targets.growthWithPeers({"s.json": s2s([
            ("sipToXMPP", 1, 100.0), ("sipToXMPP", 100, 101.0),
            ("sipToXMPP", 1000, 115.0), ("xmppToSIP", 1, 80.0),
            ("xmppToSIP", 100, 72.0)])})
        self.assertEqual(
            [r[1:] for r in rows],
            [["s.json (CPython), SIP -> XMPP",
              "1.01x with 100, 1.15x with 1,000 against 1 peer domain "
              "(100.0 / 101.0 / 115.0 µs)", targets.NOT_MET],
             ["s.json (CPython), XMPP -> SIP",
              "0.90x with 100 against 1 peer domain (80.0 / 72.0 µs)",
              targets.MET]])
        self.assertEqual(verdicts(targets.growthWithPeers({})),
                         [targets.NOT_MEASURED])

    def test_held(self):
        """
        Holding 10,000: the median message of each tenth, the second half
        against the first, so that neither one slow tenth nor a collection
        of the whole heap (which the means carry, shown beside) decides it;
        a file without the tenths (before round 27) is not measured;
        another count is not read.
        """
        rows = targets.growthWithHeld({
            "a.json": heldTenths([10.0] * 4 + [14.0] + [10.0] * 4 + [12.0],
                                 means=[20.0] * 5 + [30.0] * 5),
            "b.json": heldTenths([10.0] * 5 + [11.2] * 5, warmup=0),
            "c.json": scale(rss=100.0),
            "d.json": heldTenths([1.0] * 10, held=50)})
        self.assertEqual(
            [r[1:] for r in rows],
            [["a.json (CPython)", "median message: second half 0.96x (10.8 "
              "/ 10.4 µs); means: 1.50x (20.0 / 30.0 µs), first / last "
              "tenth 20.0 / 30.0 µs", targets.MET],
             ["b.json (CPython)", "median message: second half 1.12x (10.0 "
              "/ 11.2 µs); means: 1.12x (10.0 / 11.2 µs), first / last "
              "tenth 10.0 / 11.2 µs, no warm-up", targets.NOT_MET],
             ["c.json (CPython)", "first / last tenth 1.0 / 2.0 µs; the "
              "file predates the tenths (round 27)", targets.NOT_MEASURED]])
        self.assertEqual(verdicts(targets.growthWithHeld({})),
                         [targets.NOT_MEASURED])


class MainTests(unittest.TestCase):
    """
    L{targets.main} over a directory.
    """

    def main(self, argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = targets.main(argv)
        return code, out.getvalue()

    def test_committedResults(self):
        """
        The committed results give a row for every target, each with one
        of the four verdicts, and a summary that counts them.
        """
        code, text = self.main([RESULTS])
        self.assertEqual(0, code)
        rows = targets.check(targets.load(RESULTS))
        for target in (targets.T_CPU, targets.T_RATE, targets.T_P99,
                       targets.T_IDLE, targets.T_HELD, targets.T_FLAT,
                       targets.T_GROW_ADDRESSES, targets.T_GROW_PEERS,
                       targets.T_GROW_HELD,
                       "benchmark 1 CPU SIP -> XMPP <= 37 µs",
                       "benchmark 1 CPU XMPP -> SIP <= 18 µs"):
            self.assertIn(target, [row[0] for row in rows])
        allowed = {targets.MET, targets.NOT_MET, targets.NOT_MEASURED,
                   targets.REFERENCE}
        self.assertEqual(set(verdicts(rows)) - allowed, set())
        summary = text.rstrip().splitlines()[-1]
        self.assertEqual(
            summary,
            ", ".join("%s: %d" % (v, verdicts(rows).count(v)) for v in (
                targets.MET, targets.NOT_MET, targets.NOT_MEASURED,
                targets.REFERENCE)))

    def test_output(self):
        """
        C{--output} writes what is printed; the files' machines and
        revisions head the report.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        with open(os.path.join(directory, "soak.json"), "w") as f:
            json.dump(soak(), f)
        path = os.path.join(directory, "targets.txt")
        code, text = self.main([directory, "--output", path])
        self.assertEqual(0, code)
        with open(path) as f:
            self.assertEqual(text, f.read())
        self.assertIn(
            "  soak.json: 2026-11-28 00:00:00 UTC, Test CPU, revision abc",
            text)
        self.assertIn("memory flat over 10 minutes", text)

    def test_emptyDirectory(self):
        """
        A directory without results files is a usage error.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            with self.assertRaises(SystemExit) as raised:
                self.main([directory])
        self.assertEqual(2, raised.exception.code)
        self.assertIn("no results files", err.getvalue())
