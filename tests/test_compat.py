"""
Tests for L{xmppgw.compat}: the differences between the Python versions the
gateway runs on.
"""

import re

from hypothesis import given, settings, strategies as st

from twisted.trial import unittest

from xmppgw.compat import POSSESSIVE, compilePossessive, rewritePossessive, tomllib
from xmppgw.sip.message import _VIA_RE
from xmppgw.sip.uri import _HEADER_PARAM_RE


class RewritePossessiveTests(unittest.TestCase):
    """
    L{rewritePossessive} writes C{X*+} and C{X++} as atomic groups.
    """

    def test_rewrite(self):
        """
        Each possessive quantifier on an escape or a class becomes a
        capturing lookahead and a back-reference, numbered in order.
        """
        self.assertEqual(
            r"(?=(?P<_atomic1>\s*))(?P=_atomic1)a(?=(?P<_atomic2>[ \t]+))(?P=_atomic2)",
            rewritePossessive(r"\s*+a[ \t]++"))

    def test_untouched(self):
        """
        Greedy and lazy quantifiers and escaped pluses are left alone.
        """
        for pattern in (r"a*b+", r"a*?", r"[+]*", r"\++", r"[*+]+"):
            self.assertEqual(pattern, rewritePossessive(pattern))

    def test_group(self):
        """
        A possessive quantifier on a group is refused: it is not rewritten.
        """
        self.assertRaises(ValueError, rewritePossessive, r"(?:ab)*+")

    def test_noBacktracking(self):
        """
        The rewritten run does not give back what it took: C{[ab]*+b}
        matches nothing, as possessively.
        """
        self.assertIsNone(re.compile(rewritePossessive(r"[ab]*+b")).fullmatch("aab"))
        self.assertIsNotNone(re.compile(r"[ab]*b").fullmatch("aab"))

    def test_compile(self):
        """
        L{compilePossessive} compiles for this Python.
        """
        self.assertTrue(compilePossessive(r"\s*+x").fullmatch("  x"))

    def test_tomllib(self):
        """
        L{tomllib} parses TOML on every version.
        """
        self.assertEqual({"a": {"b": 1}}, tomllib.loads("[a]\nb = 1\n"))


_VIA_TEXT = st.text(alphabet=" \t/:.;=SIPUDTCLab0123456789[]", max_size=40)
_PARAM_TEXT = st.text(alphabet=" \t=;:.\"abAB09[]-", max_size=30)


class SameMatchesTests(unittest.TestCase):
    """
    The Via and header parameter patterns, rewritten, match exactly what the
    possessive originals match (checked where C{re} has both).
    """

    def setUp(self):
        if not POSSESSIVE:
            raise unittest.SkipTest("this Python's re has no possessive quantifiers")

    def check(self, compiled, text):
        rewritten = re.compile(rewritePossessive(compiled.pattern))
        a, b = compiled.fullmatch(text), rewritten.fullmatch(text)
        self.assertEqual(a is None, b is None)
        if a is not None:
            self.assertEqual(a.groupdict(),
                             {k: v for k, v in b.groupdict().items()
                              if not k.startswith("_atomic")})

    @settings(max_examples=300, deadline=None)
    @given(_VIA_TEXT)
    def test_via(self, text):
        self.check(_VIA_RE, "SIP/2.0/UDP " + text)

    @settings(max_examples=300, deadline=None)
    @given(_PARAM_TEXT)
    def test_headerParam(self, text):
        self.check(_HEADER_PARAM_RE, text)
