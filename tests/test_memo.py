"""
Tests for L{xmppgw.memo}.
"""

from collections import OrderedDict

from hypothesis import (
    HealthCheck, example, given, settings, strategies as st)
from twisted.trial import unittest

import sys

from xmppgw import memo as memoModule
from xmppgw.memo import MemoInfo


class Counted:
    """
    A pure function of one argument, the text of an integer, that counts
    its calls (the integers) and raises L{ValueError} for negative ones.
    """

    def __init__(self):
        self.calls = []

    def __call__(self, argument):
        number = int(argument)
        self.calls.append(number)
        if number < 0:
            raise ValueError("negative: %r" % (argument,))
        return ("result", number)


class BoundedContractMixin:
    """
    What L{memoModule.bounded} promises (its docstring), for both ways of
    keeping results: set C{bounded} to the decorator under test.
    """

    def test_remembers(self):
        """
        The second call with an argument returns the first call's result
        without calling the function.
        """
        function = Counted()
        memo = self.bounded(4)(function)
        self.assertEqual(("result", 1), memo("1"))
        first = memo("2")
        self.assertIs(first, memo("2"))
        self.assertEqual([1, 2], function.calls)
        self.assertEqual(MemoInfo(misses=2, maxsize=4, currsize=2),
                         memo.cache_info())

    def test_errorsNotRemembered(self):
        """
        An exception propagates and the next call runs the function again.
        """
        function = Counted()
        memo = self.bounded(4)(function)
        for _ in range(2):
            self.assertRaises(ValueError, memo, "-1")
        self.assertEqual([-1, -1], function.calls)
        self.assertEqual(0, memo.cache_info().currsize)

    def test_lastMaxsizeAlwaysKept(self):
        """
        The last C{maxsize} distinct arguments are found whatever came
        before; at most 2 x C{maxsize} are held.
        """
        function = Counted()
        memo = self.bounded(5)(function)
        for argument in range(23):
            memo(str(argument))
            self.assertLessEqual(memo.cache_info().currsize, 10)
        del function.calls[:]
        for argument in range(18, 23):
            memo(str(argument))
        self.assertEqual([], function.calls)

    def test_usedResultKept(self):
        """
        A result used again is kept as long as a new one, though it was
        computed long before.
        """
        function = Counted()
        memo = self.bounded(3)(function)
        for argument in range(1, 20):
            memo("0")
            memo(str(argument))
        self.assertEqual(1, function.calls.count(0))

    def test_clear(self):
        """
        C{cache_clear} forgets every result and the count of misses.
        """
        function = Counted()
        memo = self.bounded(2)(function)
        for argument in (1, 2, 1):
            memo(str(argument))
        self.assertEqual(MemoInfo(2, 2, 2), memo.cache_info())
        memo.cache_clear()
        self.assertEqual(MemoInfo(0, 2, 0), memo.cache_info())
        memo("1")
        self.assertEqual([1, 2, 1], function.calls)
        self.assertEqual(MemoInfo(1, 2, 1), memo.cache_info())

    def test_wraps(self):
        """
        The memo has the function's name and docstring, and the function
        as C{__wrapped__}.
        """
        def double(x):
            """
            C{x} twice.
            """
            return 2 * x

        memo = self.bounded(2)(double)
        self.assertIs(double, memo.__wrapped__)
        self.assertEqual("double", memo.__name__)
        self.assertEqual(double.__doc__, memo.__doc__)
        self.assertEqual("33", memo("3"))

    def test_longArgumentsNotKept(self):
        """
        The result for an argument longer than L{memoModule.MAX_KEPT_LENGTH}
        is computed on every call and never held (so that what a memo
        holds is bounded in bytes), and it pushes nothing out; one of that
        length is kept as any other.
        """
        function = Counted()
        memo = self.bounded(2)(function)
        limit = memoModule.MAX_KEPT_LENGTH
        atLimit = "7".zfill(limit)
        tooLong = "8".zfill(limit + 1)
        memo("1")
        for _ in range(3):
            self.assertEqual(("result", 8), memo(tooLong))
        self.assertEqual(("result", 7), memo(atLimit))
        self.assertEqual(("result", 7), memo(atLimit))
        memo("1")
        self.assertEqual([1, 8, 8, 8, 7], function.calls)
        self.assertEqual(MemoInfo(5, 2, 2), memo.cache_info())

    def test_otherArgumentsKept(self):
        """
        An argument that is not text (the address mapper also takes parsed
        URIs and JIDs) is kept as before.
        """
        function = Counted()
        memo = self.bounded(2)(function)
        memo(10 ** 300)
        memo(10 ** 300)
        self.assertEqual([10 ** 300], function.calls)

    def test_badSize(self):
        """
        The size must be a positive L{int}.
        """
        for size in (0, -1, 2.0, None, True):
            self.assertRaises(ValueError, self.bounded, size)

    # One test in two classes (one for each decorator): Hypothesis sees
    # two executors; with no database and derandomised that is harmless.
    @settings(max_examples=1000, derandomize=True, deadline=None,
              database=None,
              suppress_health_check=[HealthCheck.differing_executors])
    @given(st.integers(1, 6),
           st.lists(st.integers(-1, 9), max_size=100))
    # A result found in the old generation, used again after a turn-over.
    @example(2, [0, 1, 2, 0, 3, 0, 4, 0])
    def test_atLeastLRU(self, maxsize, arguments):
        """
        For any sequence of calls the results (and errors) are the
        function's, the function runs only on arguments not remembered,
        and whenever a least-recently-used memo of C{maxsize} would have
        had the result, so has the memo.
        """
        function = Counted()
        memo = self.bounded(maxsize)(function)
        lru = OrderedDict()
        for argument in arguments:
            inLRU = argument in lru
            before = len(function.calls)
            try:
                got = ("ok", memo(str(argument)))
            except ValueError:
                got = ("raised",)
            expected = ("ok", ("result", argument)) if argument >= 0 else (
                "raised",)
            self.assertEqual(expected, got)
            ran = len(function.calls) - before
            if inLRU:
                self.assertEqual(0, ran, argument)
            if argument >= 0:
                lru[argument] = True
                lru.move_to_end(argument)
                if len(lru) > maxsize:
                    lru.popitem(last=False)
            self.assertLessEqual(memo.cache_info().currsize, 2 * maxsize)


class GenerationalTests(BoundedContractMixin, unittest.TestCase):
    """
    L{memoModule.generational} (PyPy's L{memoModule.bounded}).
    """

    bounded = staticmethod(memoModule.generational)

    def test_twoGenerations(self):
        """
        A result is copied out of the old generation when used, and the
        rest of that generation is dropped at the next turn-over.
        """
        function = Counted()
        memo = self.bounded(2)(function)
        for argument in (0, 1, 2, 0, 3, 4, 0, 1):
            memo(str(argument))
        # 0 was used again after the first turn-over and kept through the
        # second; 1 was not.
        self.assertEqual([0, 1, 2, 3, 4, 1], function.calls)
        self.assertLessEqual(memo.cache_info().currsize, 4)


class LRUTests(BoundedContractMixin, unittest.TestCase):
    """
    L{memoModule.lru} (CPython's L{memoModule.bounded}).
    """

    bounded = staticmethod(memoModule.lru)

    def test_holdsMaxsize(self):
        """
        At most C{maxsize} results are held.
        """
        function = Counted()
        memo = self.bounded(3)(function)
        for argument in range(10):
            memo(str(argument))
        self.assertEqual(MemoInfo(10, 3, 3), memo.cache_info())


class ChoiceTests(unittest.TestCase):
    """
    Which one L{memoModule.bounded} is.
    """

    def test_perInterpreter(self):
        """
        PyPy's memos are L{memoModule.generational}, CPython's
        L{memoModule.lru}.
        """
        expected = (memoModule.generational
                    if sys.implementation.name == "pypy" else memoModule.lru)
        self.assertIs(expected, memoModule.bounded)


class PerAddressTests(unittest.TestCase):
    """
    L{memoModule.perAddress}: the size of the memos that follow the
    addresses in use.
    """

    def test_perInterpreter(self):
        """
        On PyPy the size asked; on CPython
        L{memoModule.CPYTHON_ADDRESS_MEMO_SIZE}, twice the address mapper's
        memos (an address reaches the parsers as a From and as a To).
        """
        from xmppgw.addressing import MEMO_SIZE
        self.assertEqual(2 * MEMO_SIZE, memoModule.CPYTHON_ADDRESS_MEMO_SIZE)
        expected = (1024 if memoModule.bounded is memoModule.generational
                    else memoModule.CPYTHON_ADDRESS_MEMO_SIZE)
        self.assertEqual(expected, memoModule.perAddress(1024))

    def test_wired(self):
        """
        The memos and tables of the URIs, JIDs and request lines take their
        size from it.
        """
        from xmppgw import addressing
        from xmppgw.sip import message, uri
        self.assertEqual(memoModule.perAddress(1024),
                         uri.parseURI.cache_info().maxsize)
        self.assertEqual(memoModule.perAddress(1024),
                         uri._nameAddrHead.cache_info().maxsize)
        self.assertEqual(memoModule.perAddress(4096),
                         addressing._prepLocalpart.cache_info().maxsize)
        self.assertEqual(memoModule.perAddress(2048), addressing.JID_MEMO_SIZE)
        self.assertEqual(memoModule.perAddress(1024), message._START_LINES_MAX)
        self.assertEqual(memoModule.perAddress(2048), message._HEADER_LINES_MAX)

    def test_badSize(self):
        """
        The size for PyPy is checked on both interpreters.
        """
        self.assertRaises(ValueError, memoModule.perAddress, 0)
        self.assertRaises(ValueError, memoModule.perAddress, "1024")


class KeepBoundedTests(unittest.TestCase):
    """
    L{memoModule.keepBounded}: the parsers' caches keyed by peer text.
    """

    def test_emptiedWhenFull(self):
        """
        A table holding C{maxsize} entries is emptied before the next one
        is kept.
        """
        table = {}
        for key in "abc":
            memoModule.keepBounded(table, key, key.upper(), 2)
        self.assertEqual({"c": "C"}, table)

    def test_longKeyNotKept(self):
        """
        A key longer than L{memoModule.MAX_KEPT_LENGTH} is not kept and
        leaves the table as it was; one of that length is kept.
        """
        table = {"a": 1}
        limit = memoModule.MAX_KEPT_LENGTH
        memoModule.keepBounded(table, "x" * (limit + 1), 2, 1)
        self.assertEqual({"a": 1}, table)
        memoModule.keepBounded(table, "x" * limit, 3, 2)
        self.assertEqual({"a": 1, "x" * limit: 3}, table)
