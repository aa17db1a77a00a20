"""
Tests for L{bench.s2s}: benchmark 3's server-mode gateway relays both ways
(no timing is asserted here; speed is measured by make bench).
"""

import re
from types import SimpleNamespace

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


class MeasureTests(TestCase):
    """
    L{s2s.measure}: each peer count on its own gateway, the timed runs
    interleaved.
    """

    def test_cases(self):
        """
        One case per peer count, in the order asked, with its figures and
        its gateway's streams (one pair per peer domain).
        """
        args = SimpleNamespace(rate=1000.0, runs=2, count=6, freeze=False)
        for direction in ("sipToXMPP", "xmppToSIP"):
            cases = s2s.measure(direction, [1, 3], args)
            self.assertEqual([1, 3], [c["peers"] for c in cases])
            for case in cases:
                self.assertGreater(case["cpu_median_us"], 0)
                self.assertEqual(direction, case["direction"])

    def test_interleaved(self):
        """
        After three warm-up rounds, each round runs every peer count once,
        starting with the next one each round.
        """
        calls = []

        def run(self, count):
            calls.append((len(self.g.domains), count))
            return 1.0, 1.0

        self.patch(s2s.Runner, "sipToXMPP", run)
        args = SimpleNamespace(rate=1000.0, runs=3, count=5, freeze=False)
        s2s.measure("sipToXMPP", [1, 2, 3], args)
        self.assertEqual([(1, 5), (2, 5), (3, 5)] * 3
                         + [(1, 5), (2, 5), (3, 5), (2, 5), (3, 5), (1, 5),
                            (3, 5), (1, 5), (2, 5)], calls)


class AddressesTests(TestCase):
    """
    The messages of the cases differ by their peer domains only.
    """

    def test_sameAddressCount(self):
        """
        Over the messages a run sends round robin (message C{i} to or from
        the domain C{i % peers}), 1, 100 and 1,000 peer domains make the
        same C{USERS} distinct addresses each way.
        """
        for peers in (1, 100, 1000):
            domains = [s2s.peerDomain(k) for k in range(peers)]
            to, sender = set(), set()
            for i in range(3 * s2s.USERS):
                domain = domains[i % peers]
                to.add(re.search(rb"\r\nTo: <([^>]*)>",
                                 s2s.sipMessage(i, domain)).group(1))
                sender.add(re.search(rb"from='([^']*)'",
                                     s2s.xmppMessage(i, domain)).group(1))
            self.assertEqual((peers, s2s.USERS, s2s.USERS),
                             (peers, len(to), len(sender)))
