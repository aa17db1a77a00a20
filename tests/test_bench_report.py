"""
Tests for L{bench.report}: it prints every committed results file.
"""

import contextlib
import glob
import io
import os
import re

from twisted.trial import unittest

from bench import report

RESULTS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "bench", "results")


class ReportTests(unittest.TestCase):
    """
    L{report.main} over the files in C{bench/results}.
    """

    def test_everyResultsFile(self):
        """
        Each committed results file is printed with its header line (one
        once lacked the C{command} key and stopped the whole report), and
        those of a benchmark with a table as one.
        """
        paths = sorted(glob.glob(os.path.join(RESULTS, "*.json")))
        self.assertGreater(len(paths), 10)
        for path in paths:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self.assertIsNone(report.main([path]))
            text = out.getvalue()
            self.assertIn(" cores, ", text.splitlines()[0], path)
            if "(no table for" not in text:
                # A reST table's rule: columns of "=" only.
                self.assertRegex(text, re.compile(r"^=+( +=+)+$", re.M), path)

    def test_usage(self):
        """
        C{--help} prints the usage and succeeds; no file at all is a usage
        error.
        """
        for argv, code in ((["--help"], 0), ([], 2)):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self.assertEqual(code, report.main(argv))
            self.assertIn("Usage::", out.getvalue())
