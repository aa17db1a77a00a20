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
        result = scale.held(argparse.Namespace(held=50))
        self.assertEqual(50, result["held"])
        self.assertGreaterEqual(result["release_stanzas"], 50)
        self.assertGreater(result["rss_mb"], 0)
        self.assertGreaterEqual(result["rss_mb"], result["rss_growth_mb"])
