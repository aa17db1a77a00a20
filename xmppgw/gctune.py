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
"""

import gc

from twisted.application import service

__all__ = ["FULL_COLLECTION_THRESHOLD", "FrozenStartupService",
           "freezeStartupObjects"]

FULL_COLLECTION_THRESHOLD = 100


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


class FrozenStartupService(service.Service):
    """
    Calls L{freezeStartupObjects} when started; add it to the gateway's
    service last, so that it starts after everything else.

    @ivar frozen: the number of objects frozen, or L{None} before the start.
    """

    name = "gc-freeze"
    frozen = None

    def __init__(self, collector=gc):
        self._collector = collector

    def startService(self):
        service.Service.startService(self)
        self.frozen = freezeStartupObjects(self._collector)
