"""
Tests for the pacing of L{bench.peers}' open-loop senders (fake clock and
sleep: no real time; speed is measured by make bench).
"""

from twisted.trial.unittest import TestCase

from bench import peers


class FakeTime:
    """
    A monotonic clock in ns that only C{sleep} advances; counts the calls.
    """

    def __init__(self, now=10**9, oversleep=0):
        self.now = now
        self.oversleep = oversleep
        self.sleeps = []
        self.reads = 0

    def monotonic_ns(self):
        self.reads += 1
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += int(seconds * 1e9) + self.oversleep


class WaitTests(TestCase):
    def setUp(self):
        self.clock = FakeTime()
        self.patch(peers, "_now", self.clock.monotonic_ns)
        self.patch(peers.time, "sleep", self.clock.sleep)

    def test_sleepsOnceUntilDue(self):
        """
        A send 250 µs ahead sleeps once for the whole wait (no busy loop:
        the clock is read twice, not in a spin) and is on time.
        """
        self.assertEqual(0, peers._wait(self.clock.now + 250_000))
        self.assertEqual([250e-6], self.clock.sleeps)
        self.assertEqual(2, self.clock.reads)

    def test_lateWakeUpReported(self):
        """
        A sleep that overruns by 2 ms returns the lateness in ns.
        """
        self.clock.oversleep = 2_000_000
        self.assertEqual(2_000_000, peers._wait(self.clock.now + 500_000))

    def test_dueOrAlmostDueSendsAtOnce(self):
        """
        A send already due, or due within L{peers.EARLY_NS}, goes out
        without sleeping; an overdue one reports how late it is.
        """
        now = self.clock.now
        self.assertEqual(0, peers._wait(now + peers.EARLY_NS))
        self.assertEqual(3_000, peers._wait(now - 3_000))
        self.assertEqual([], self.clock.sleeps)


class LatenessTests(TestCase):
    def test_counts(self):
        """
        Only sends more than 1 ms late count as late; the worst is kept.
        """
        lateness = peers.Lateness()
        for ns in (0, 999_999, 1_000_001, 5_500_000, 200):
            lateness.add(ns)
        self.assertEqual({"late_over_1ms": 2, "max_lateness_ms": 5.5},
                         lateness.asDict())
