# -*- test-case-name: tests.test_gctune -*-
"""
Keep the objects built at start-up out of the garbage collector's work.

Every relayed message leaves objects alive for a while (a UDP server
transaction waits 32 s for retransmissions, Timer J; a client transaction
5 s, Timer K), so the cyclic garbage collector's full collections come
regularly, and each one walks every tracked object of the process: the
modules, classes and functions imported at start-up (about 100,000
objects) as well as the live transactions. In benchmark 1 that was about
a fifth of the CPU cost of a message (docs/performance.rst).

L{freezeStartupObjects} collects once and then moves everything alive into
the collector's permanent generation (L{gc.freeze}), which the collector
never walks again. It also makes full collections ten times rarer
(L{FULL_COLLECTION_THRESHOLD}: one full collection per 100 collections of
the middle generation instead of 10): the transactions waiting out Timer
J/K are most of the heap under load (20,000 of them at 1,000 messages per
second, about 150,000 objects) and each full collection walks them all;
garbage in reference cycles that reached the oldest generation lives
correspondingly longer before it is freed. L{FrozenStartupService} does it when the gateway
service starts, after everything was built. The cost: an object alive at
that moment that later becomes part of unreachable cyclic garbage is never
freed (start-up objects live as long as the process anyway; a
configuration reload replaces a few small objects).

On PyPy there is nothing to freeze, but one setting matters as much: the
size of its young-object area (the nursery), which PyPy reads from
C{PYPY_GC_NURSERY} when it starts and otherwise derives from the CPU
cache size C{/proc/cpuinfo} names. On an x86 server or VM that line is
often the last-level cache shared by every core: on the Intel Xeon test
VM (300 MB) PyPy chose half of it, a 150 MB nursery, and the idle gateway held 250 MB instead of 122 MB with the
recommended 4 MB. Worse, PyPy starts no major collection while its heap
is under 8 times the nursery (C{PYPY_GC_MIN}'s default): under load the
gateway grew to 1,457 MB instead of 244 MB (docs/performance.rst, round
16). Nothing can resize it
once the process runs, so L{reportNursery} logs its size at start-up and
warns, naming the setting, when PyPy chose more than
L{NURSERY_WARN_BYTES} by itself.
"""

import gc
import os

from twisted.application import service
from twisted.logger import Logger

__all__ = ["FULL_COLLECTION_THRESHOLD", "FrozenStartupService",
           "NURSERY_WARN_BYTES", "RECOMMENDED_NURSERY",
           "freezeStartupObjects", "nurserySize", "reportNursery"]

_log = Logger()

FULL_COLLECTION_THRESHOLD = 100

#: The C{PYPY_GC_NURSERY} docs/deployment.rst recommends.
RECOMMENDED_NURSERY = "4MB"

#: A nursery PyPy chose by itself (no C{PYPY_GC_NURSERY}) larger than this
#: is reported with a warning: four times the recommended size, where the
#: extra memory buys nothing measurable (docs/performance.rst, round 16).
NURSERY_WARN_BYTES = 16 * 1024 * 1024


def freezeStartupObjects(collector=gc):
    """
    Collect garbage once, then freeze every object still alive, and set
    the oldest generation's threshold to L{FULL_COLLECTION_THRESHOLD}
    (the two younger ones keep theirs).

    @param collector: the L{gc} module (a fake in tests).
    @return: the number of objects frozen.
    @rtype: L{int}
    """
    if not hasattr(collector, "freeze"):
        # PyPy: its tracing collector has no generations to tune and no
        # permanent generation; nothing to do.
        return 0
    young, middle, _old = collector.get_threshold()
    collector.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
    collector.collect()
    collector.freeze()
    return collector.get_freeze_count()


def nurserySize(collector=gc):
    """
    PyPy's nursery in bytes, or L{None} where there is none to tell
    (CPython, whose C{gc.get_stats} is another function).

    @param collector: the L{gc} module (a fake in tests).
    """
    try:
        return int(collector.get_stats()._s.nursery_size)
    except (AttributeError, TypeError, ValueError):
        return None


def reportNursery(collector=gc, environ=os.environ, log=_log):
    """
    Log the size of PyPy's nursery: as information when it was set by
    C{PYPY_GC_NURSERY} or is at most L{NURSERY_WARN_BYTES}, as a warning
    naming the setting when PyPy chose more by itself. Nothing on CPython.

    @param collector: the L{gc} module (a fake in tests).
    @param environ: the process environment.
    @param log: the L{Logger}.
    @return: the size in bytes, or L{None} on CPython.
    """
    size = nurserySize(collector)
    if size is None:
        return None
    megabytes = round(size / (1024 * 1024), 1)
    setting = environ.get("PYPY_GC_NURSERY")
    if setting:
        log.info("PyPy's young-object area (nursery): {megabytes} MB "
                 "(PYPY_GC_NURSERY={setting})",
                 megabytes=megabytes, setting=setting)
    elif size > NURSERY_WARN_BYTES:
        log.warn("PyPy chose a {megabytes} MB young-object area (nursery) "
                 "from the CPU cache size in /proc/cpuinfo: that much more "
                 "memory at idle, and under load the gateway grows to "
                 "about {floor} MB before PyPy's first major collection "
                 "(8 times the nursery), for no gain in speed. Set "
                 "PYPY_GC_NURSERY={recommended} in its environment "
                 "(docs/deployment.rst, \"Choosing the interpreter\")",
                 megabytes=megabytes, floor=round(8 * megabytes),
                 recommended=RECOMMENDED_NURSERY)
    else:
        log.info("PyPy's young-object area (nursery): {megabytes} MB, "
                 "PyPy's choice (PYPY_GC_NURSERY={recommended} is "
                 "recommended)",
                 megabytes=megabytes, recommended=RECOMMENDED_NURSERY)
    return size


class FrozenStartupService(service.Service):
    """
    Calls L{freezeStartupObjects} and L{reportNursery} when started; add
    it to the gateway's service last, so that it starts after everything
    else.

    @ivar frozen: the number of objects frozen, or L{None} before the start.
    @ivar nursery: PyPy's nursery in bytes once started, else L{None}.
    """

    name = "gc-freeze"
    frozen = None
    nursery = None

    def __init__(self, collector=gc, environ=os.environ):
        self._collector = collector
        self._environ = environ

    def startService(self):
        service.Service.startService(self)
        self.frozen = freezeStartupObjects(self._collector)
        self.nursery = reportNursery(self._collector, self._environ)
