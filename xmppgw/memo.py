"""
Bounded memos for pure functions of one hashable argument.

The gateway remembers the results of its parsers and address mappings:
the same URIs, JIDs and media types come back message after message.
L{bounded} is the one decorator for these memos. What it promises, on
both interpreters:

  - an argument among the last C{maxsize} distinct arguments looked up
    is always found (as in a least-recently-used memo of C{maxsize}),
    unless it is text longer than L{MAX_KEPT_LENGTH}: the result for such
    text is computed on every call and never kept, so that what a memo
    holds is bounded in bytes, not only in count (the arguments come from
    the peers: a Request-URI may be as long as a datagram, and a kept
    result holds about twice its argument). The gateway passes text to
    every memo; other arguments (parsed URIs and JIDs, which the address
    mapper also takes) are kept whatever their size;
  - at most 2 x C{maxsize} results are held;
  - exceptions are not remembered: the function raises again on the
    next call;
  - C{cache_info()} gives a L{MemoInfo}, C{cache_clear()} forgets all.

How it keeps them depends on the interpreter (docs/performance.rst,
round 19):

  - On CPython, L{functools.lru_cache} (L{lru}): it is written in C, and
    no memo written in Python costs less on a hit (benchmark 1 under
    callgrind: 0.7-1.5 % more instructions a message with L{generational}
    throughout).
  - On PyPy, L{generational}. PyPy's L{functools.lru_cache} is pure
    Python (a lock, a linked list of 4-element lists, the argument tuple
    made into a key) and was the largest single cost in benchmark 1's
    profile, 9-12 % of a message. L{generational} costs one dictionary
    lookup on a hit and nothing is reordered or unlinked.

L{generational} keeps two generations: the results computed or used
since the last turn-over (C{young}) and those of the generation before
(C{old}). A result found in C{old} is copied into C{young}. When
C{young} holds C{maxsize} results it becomes C{old} and the former
C{old} is dropped. An argument is dropped only after C{maxsize} other
distinct arguments were looked up since its last use (two turn-overs),
hence the promise above. At most C{maxsize} results are held unless
more than C{maxsize} distinct arguments are in use.
"""

import functools
import sys
from typing import NamedTuple

_MISSING = object()

#: The longest argument (in characters) whose result a memo keeps. Real
#: URIs, name-addrs, JIDs, media types and charset labels are far
#: shorter; a memo of 32,768 (L{perAddress}) then holds at most about 35
#: MB of parsed URIs, where 64 KB arguments could have made it 4 GB
#: (round 28 in docs/performance.rst).
MAX_KEPT_LENGTH = 256


class MemoInfo(NamedTuple):
    """
    What a memo holds.

    @ivar misses: calls that ran the function (the argument was not
        remembered), since the last C{cache_clear}.
    @ivar maxsize: the C{maxsize} the memo was made with.
    @ivar currsize: the distinct arguments held now.
    """

    misses: int
    maxsize: int
    currsize: int


def _checkSize(maxsize):
    if type(maxsize) is not int or maxsize < 1:
        raise ValueError("maxsize must be a positive int, not %r" % (maxsize,))


def generational(maxsize):
    """
    A decorator: remember the results of a function of one hashable
    positional argument in two generations of C{maxsize} (see the module
    docstring).

    @param maxsize: a positive L{int}.
    """
    _checkSize(maxsize)

    def decorate(function):
        young = {}
        old = {}
        misses = 0

        def memo(argument):
            nonlocal young, old, misses
            value = young.get(argument, _MISSING)
            if value is not _MISSING:
                return value
            if type(argument) is str and len(argument) > MAX_KEPT_LENGTH:
                misses += 1
                return function(argument)
            value = old.get(argument, _MISSING)
            if value is _MISSING:
                misses += 1
                value = function(argument)
            if len(young) >= maxsize:
                old = young
                young = {}
            young[argument] = value
            return value

        def cache_info():
            return MemoInfo(misses, maxsize, len(young.keys() | old.keys()))

        def cache_clear():
            nonlocal young, old, misses
            young = {}
            old = {}
            misses = 0

        functools.update_wrapper(memo, function)
        memo.cache_info = cache_info
        memo.cache_clear = cache_clear
        return memo

    return decorate


def lru(maxsize):
    """
    A decorator: L{functools.lru_cache} of C{maxsize} for a function of
    one hashable positional argument, with L{bounded}'s C{cache_info}
    (the function alone for text longer than L{MAX_KEPT_LENGTH}).

    @param maxsize: a positive L{int}.
    """
    _checkSize(maxsize)

    def decorate(function):
        cached = functools.lru_cache(maxsize=maxsize)(function)
        info = cached.cache_info
        long = 0

        def memo(argument):
            nonlocal long
            if type(argument) is not str or len(argument) <= MAX_KEPT_LENGTH:
                return cached(argument)
            long += 1
            return function(argument)

        def cache_info():
            hits, misses, _, currsize = info()
            return MemoInfo(misses + long, maxsize, currsize)

        def cache_clear():
            nonlocal long
            cached.cache_clear()
            long = 0

        functools.update_wrapper(memo, function)
        memo.cache_info = cache_info
        memo.cache_clear = cache_clear
        return memo

    return decorate


#: The decorator the gateway's memos use (see the module docstring).
bounded = generational if sys.implementation.name == "pypy" else lru


def keepBounded(table, key, value, maxsize):
    """
    Remember C{value} for the text C{key} in C{table}, one of the parsers'
    caches keyed by text from the peers: a L{dict} emptied when it holds
    C{maxsize} entries, and no key longer than L{MAX_KEPT_LENGTH} (the
    memos' rule), so that it is bounded in bytes as well as in count. The
    caller works a key that is not kept out again when it comes back.
    """
    if len(key) <= MAX_KEPT_LENGTH:
        if len(table) >= maxsize:
            table.clear()
        table[key] = value

#: The size, on CPython, of the memos and tables whose arguments follow
#: the addresses in use (L{perAddress}): twice the 16,384 addresses the
#: address mapper remembers in each direction (its C{MEMO_SIZE}), since
#: every address reaches these parsers twice, as a From and a To, or as a
#: URI and the name-addr around it.
CPYTHON_ADDRESS_MEMO_SIZE = 32768


def perAddress(pypySize):
    """
    The size of a memo (or of a table emptied when full) whose arguments
    follow the addresses in use: the URIs, name-addrs and JIDs of the
    messages and the request lines that carry them.

    On CPython L{CPYTHON_ADDRESS_MEMO_SIZE}: with as many active addresses
    as the address mapper remembers, no parser repeats its work, and a
    message costs about what it costs with one address (benchmark 1 with
    10,000 addresses: 1.3-1.4 times the cost with 1 at the sizes PyPy
    keeps; docs/performance.rst, round 28). The price is resident memory
    that follows the addresses in use, about 2.8 KB per address once all
    of these memos hold it (45.6 MB in benchmark 3's held run, which goes
    through 16,000 addresses; nothing at idle).

    On PyPy C{pypySize}, the size each memo had before: every result a
    memo keeps outlives PyPy's young generation and is copied out of it
    (round 25), and memos of 32,768 took benchmark 3's held run from 191.0
    to 208.7 MB, over its 200 (round 28).

    @param pypySize: the size on PyPy, a positive L{int}.
    @return: the size on this interpreter.
    """
    _checkSize(pypySize)
    return pypySize if bounded is generational else CPYTHON_ADDRESS_MEMO_SIZE
