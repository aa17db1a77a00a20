"""
Tests for L{bench.scale}'s held run, small: the figures that
L{bench.targets} reads are there and consistent.
"""

import argparse

from twisted.trial import unittest

from bench import scale


class HeldTests(unittest.TestCase):
    """
    L{scale.held} with 50 messages held.
    """

    def test_figures(self):
        """
        Every message is held and then relayed (one stanza each, and the
        pings that confirm them); the process's RSS with them held is
        reported, and is at least what it grew by.
        """
        result = scale.held(argparse.Namespace(held=50, held_warmup=0))
        self.assertEqual(50, result["held"])
        self.assertEqual(0, result["warmup_held"])
        self.assertGreaterEqual(result["release_stanzas"], 50)
        self.assertGreater(result["rss_mb"], 0)
        self.assertGreaterEqual(result["rss_mb"], result["rss_growth_mb"])

    def test_warmup(self):
        """
        The warm-up's messages are held and relayed before the timed run
        and not counted in it: the timed run holds C{held}, and what the
        new link writes is those stanzas, its stream header and its
        handshake (the pings are not counted); each tenth of the timed run
        is reported, the first and last as before.
        """
        result = scale.held(argparse.Namespace(held=50, held_warmup=30))
        self.assertEqual(30, result["warmup_held"])
        self.assertEqual(50, result["held"])
        self.assertEqual(52, result["release_stanzas"])
        self.assertEqual(10, len(result["tenths_us_per_msg"]))
        self.assertEqual(10, len(result["tenths_median_us"]))
        self.assertEqual(result["first_10pct_us_per_msg"],
                         result["tenths_us_per_msg"][0])
        self.assertEqual(result["last_10pct_us_per_msg"],
                         result["tenths_us_per_msg"][-1])

    def test_warmupWithinHoldLimit(self):
        """
        The warm-up holds no more than the timed run may (the hold limit
        is C{held}).
        """
        result = scale.held(argparse.Namespace(held=20, held_warmup=50))
        self.assertEqual(20, result["warmup_held"])
        self.assertEqual(20, result["held"])
