"""
Tests for L{bench.endtoend}: the parts that run without Prosody (the
benchmark itself runs under C{make bench}).
"""

import argparse
import os

from twisted.trial import unittest

from bench.endtoend import Bench


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

    def test_option(self):
        """
        C{--keep-workdir} is an option of the command line.
        """
        from bench import endtoend
        seen = []

        class Stop(Exception):
            pass

        def fakeBench(args):
            seen.append(args)
            raise Stop()

        self.patch(endtoend, "Bench", fakeBench)
        self.assertRaises(Stop, endtoend.main, ["--keep-workdir"])
        self.assertTrue(seen[0].keep_workdir)
        self.assertRaises(Stop, endtoend.main, [])
        self.assertFalse(seen[1].keep_workdir)
