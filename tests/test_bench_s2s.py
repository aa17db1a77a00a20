"""
Tests for L{bench.s2s}: benchmark 3's server-mode gateway relays both ways
(no timing is asserted here; speed is measured by make bench).
"""

from twisted.trial.unittest import TestCase

from bench import s2s


class CountingClock:
    """
    A stand-in for C{time.process_time} that counts its reads.
    """

    def __init__(self):
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.reads * 0.001


class RunnerTests(TestCase):
    """
    L{s2s.Runner} on a L{s2s.ServerGateway} with several peer domains.
    """

    def test_relaysBothWays(self):
        """
        Messages go round the peer domains both ways (the runner raises
        otherwise), each direction reporting a wall and a CPU figure.
        """
        gateway = s2s.ServerGateway(3, freeze=False)
        runner = s2s.Runner(gateway, 0.001)
        for direction in ("sipToXMPP", "xmppToSIP"):
            wall, cpu = getattr(runner, direction)(9)
            self.assertGreater(wall, 0)
            self.assertGreaterEqual(cpu, 0)
        self.assertEqual(9, gateway.router.stats.get("xmpp.relayed"))

    def test_cpuClockTwicePerRun(self):
        """
        The CPU clock (a system call) is read at the two ends of a run
        only, whatever the count (bench.common.cpuPerMessage).
        """
        clock = CountingClock()
        self.patch(s2s.time, "process_time", clock)
        runner = s2s.Runner(s2s.ServerGateway(2, freeze=False), 0.001)
        for direction in ("sipToXMPP", "xmppToSIP"):
            for count in (1, 10):
                clock.reads = 0
                getattr(runner, direction)(count)
                self.assertEqual(2, clock.reads, (direction, count))
