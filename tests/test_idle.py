"""
Tests for L{xmppgw.idle}: idle timers for many connections, one timer in
the reactor.
"""

from twisted.internet.task import Clock
from twisted.trial import unittest

from xmppgw.idle import IdleTimer, IdleWatch


class IdleWatchTests(unittest.TestCase):
    """
    L{IdleWatch} and its L{IdleTimer}s.
    """

    def setUp(self):
        self.clock = Clock()
        self.watch = IdleWatch(self.clock, 60)
        self.idled = []

    def timer(self, name, fail=False):
        def onIdle():
            self.idled.append(name)
            if fail:
                raise RuntimeError("boom")
        timer = self.watch.timer(onIdle)
        self.assertIsInstance(timer, IdleTimer)
        return timer

    def test_lastTouch(self):
        """
        A connection is idle C{timeout} seconds after its last touch, not
        its first.
        """
        a = self.timer("a")
        a.touch()
        self.clock.advance(30)
        a.touch()
        self.clock.advance(59.5)
        self.assertEqual(self.idled, [])
        self.clock.advance(0.5)
        self.assertEqual(self.idled, ["a"])
        self.assertEqual(len(self.watch), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notBeforeFirstTouch(self):
        """
        A timer runs from its first touch.
        """
        self.timer("a")
        self.clock.advance(120)
        self.assertEqual(self.idled, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_oneTimer(self):
        """
        However many connections are touched, and however often, the
        reactor holds one timer for them; each is called at its own time,
        the one silent longest first.
        """
        timers = [self.timer(k) for k in range(100)]
        for timer in timers:
            timer.touch()
            self.clock.advance(0.1)
            for _ in range(3):
                timers[0].touch()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        # Timer k was last touched at 0.1 k, timer 0 at 10.
        self.clock.advance(50.15)
        self.assertEqual(self.idled, [1])
        self.clock.advance(5)
        self.assertEqual(self.idled, list(range(1, 52)))
        self.clock.advance(10)
        self.assertEqual(self.idled, list(range(1, 100)) + [0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop(self):
        """
        A stopped connection is not called; a failing C{onIdle} is logged
        and the others are still called.
        """
        a, b, c = self.timer("a"), self.timer("b", fail=True), self.timer("c")
        for timer in (a, b, c):
            timer.touch()
        a.stop()
        self.clock.advance(60)
        self.assertEqual(self.idled, ["b", "c"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_lastStopped(self):
        """
        When the last running timer stops, no timer is left in the
        reactor (a stopped service leaves the reactor clean).
        """
        a, b = self.timer("a"), self.timer("b")
        a.touch()
        b.touch()
        a.stop()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        b.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        b.stop()
        a.touch()
        self.clock.advance(60)
        self.assertEqual(self.idled, ["a"])

    def test_noTimeout(self):
        """
        A timeout of 0 keeps no timer; set to 0 later, the connections are
        never called.
        """
        watch = IdleWatch(self.clock, 0)
        watch.timer(lambda: None).touch()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.timer("a").touch()
        self.watch.timeout = 0
        self.clock.advance(120)
        self.assertEqual(self.idled, [])
        self.assertEqual(len(self.watch), 0)

    def test_longerTimeout(self):
        """
        A timeout made longer applies from the next check on.
        """
        self.timer("a").touch()
        self.watch.timeout = 90
        self.clock.advance(60)
        self.assertEqual(self.idled, [])
        self.clock.advance(30)
        self.assertEqual(self.idled, ["a"])

    def test_clear(self):
        """
        L{IdleWatch.clear} (the owner stops) cancels the timer.
        """
        self.timer("a").touch()
        self.watch.clear()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(self.idled, [])
