"""
Tests for L{bench.gcpause} (no timing is asserted here; speed is measured
by make bench).
"""

import gc
import io
from contextlib import redirect_stdout

from twisted.trial.unittest import SkipTest, TestCase

from bench import gcpause


class GCPauseTests(TestCase):
    def test_smallRun(self):
        """
        A small bounded run reports the transaction tables and a timing.
        """
        if not hasattr(gc, "get_freeze_count"):
            raise SkipTest("CPython only")
        out = io.StringIO()
        thresholds = gc.get_threshold()
        try:
            with redirect_stdout(out):
                self.assertEqual(
                    0, gcpause.main(["--rounds", "1", "--repeat", "1"]))
        finally:
            # The run froze everything alive and made full collections
            # rarer (as twistd xmppgw does): undo both for the other tests.
            gc.unfreeze()
            gc.set_threshold(*thresholds)
        self.assertIn("server transactions 2000, client transactions",
                      out.getvalue())
        self.assertIn("full collection median", out.getvalue())
