"""
Tests for L{bench.memos} (no memory figure is asserted here; make bench
measures it).
"""

import argparse
import io
import json
from contextlib import redirect_stdout

from twisted.trial.unittest import TestCase

from bench import memos
from xmppgw.addressing import AddressMapper


class MapAllTests(TestCase):
    def test_distinctResults(self):
        """
        Each address goes once through each of the four mappings, and the
        memos hold one result per address and mapping.
        """
        mapper = AddressMapper("*", "gw.test", "xmpp.test")
        memos.mapAll(mapper, 0, 30)
        self.assertEqual(4 * 30, memos.held(mapper))
        memos.mapAll(mapper, 0, 30)
        self.assertEqual(4 * 30, memos.held(mapper))
        for name in memos.MAPPINGS:
            self.assertEqual(30, getattr(mapper, name).cache_info().misses)


class MeasureTests(TestCase):
    def test_measure(self):
        """
        L{memos.measure} reports the addresses, the memos' size, the
        results held (the warm-up's included) and the resident memory
        before and after, the growth their difference.
        """
        result = memos.measure(25)
        self.assertEqual(25, result["addresses"])
        self.assertEqual(4 * (25 + memos.WARM_UP), result["results_held"])
        self.assertGreater(result["memo_size"], 25)
        self.assertGreater(result["rss_before_mb"], 0)
        self.assertAlmostEqual(
            result["rss_after_mb"] - result["rss_before_mb"],
            result["rss_growth_mb"], delta=0.11)

    def test_child(self):
        """
        The child mode prints the measure of one count as one JSON line.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(0, memos.main(["--child", "10"]))
        result = json.loads(out.getvalue())
        self.assertEqual(10, result["addresses"])


class CountsTests(TestCase):
    def test_counts(self):
        """
        Address counts are a comma-separated list of counts from 1 to
        L{memos.MAX_ADDRESSES}.
        """
        self.assertEqual([16384, 50000], memos._counts("16384,50000"))
        for bad in ("", "0", "x", "10,-1", str(memos.MAX_ADDRESSES + 1)):
            self.assertRaises(argparse.ArgumentTypeError, memos._counts, bad)
