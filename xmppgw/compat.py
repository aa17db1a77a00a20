"""
The one home for differences between the Python versions the gateway runs
on: CPython 3.11 and later, and PyPy 3.9 (Debian 12's C{pypy3}, see
C{docs/performance.rst}, "PyPy").

 - L{tomllib}: the standard library's TOML parser, or the C{tomli} package
   it came from (the same code) before Python 3.11.
 - L{compilePossessive}: compile a regular expression written with
   possessive quantifiers (C{X*+}, C{X++}, Python 3.11), which keep the
   parsers linear on long runs of blanks. Before 3.11 each one is rewritten
   as the equivalent atomic group, a lookahead that captures the run and a
   back-reference that consumes it (the engine never backtracks into a
   lookahead). That adds groups, so patterns given here must name the groups
   they read (C{(?P<name>...)}) and callers use C{match.group("name")}.
"""

import re
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

__all__ = ["tomllib", "compilePossessive", "POSSESSIVE"]

#: Whether C{re} knows possessive quantifiers.
POSSESSIVE = sys.version_info >= (3, 11)

#: A possessive quantifier on a single-character atom: an escape such as
#: C{\s}, or a bracketed class (escapes allowed inside).
_POSSESSIVE_ATOM = re.compile(r"(\\[A-Za-z]|\[(?:\\.|[^\]\\])*\])([*+])\+")


def rewritePossessive(pattern):
    """
    C{pattern} with every possessive quantifier on a single-character atom
    (C{X*+}, C{X++}) written as an atomic group, for versions of C{re}
    without them.

    @raise ValueError: if a possessive quantifier is left on anything else
        (a group), which this rewriting does not handle.
    """
    count = [0]

    def atomic(match):
        count[0] += 1
        name = "_atomic%d" % (count[0],)
        return "(?=(?P<%s>%s%s))(?P=%s)" % (
            name, match.group(1), match.group(2), name)

    rewritten = _POSSESSIVE_ATOM.sub(atomic, pattern)
    if re.search(r"(?<!\\)\)[*+]\+", rewritten):
        raise ValueError("a possessive quantifier on a group: %r" % (pattern,))
    return rewritten


def compilePossessive(pattern, flags=0):
    """
    C{re.compile(pattern, flags)}, with possessive quantifiers rewritten
    (L{rewritePossessive}) where C{re} lacks them.
    """
    if not POSSESSIVE:
        pattern = rewritePossessive(pattern)
    return re.compile(pattern, flags)
