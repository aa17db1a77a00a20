"""
Tests for L{xmppgw.gctune}.
"""

from twisted.application import service
from twisted.trial import unittest

from xmppgw.gctune import FrozenStartupService, freezeStartupObjects


class FakeCollector:
    """
    Records the calls made to the L{gc} module.
    """

    def __init__(self):
        self.calls = []

    def get_threshold(self):
        self.calls.append("get_threshold")
        return (700, 10, 10)

    def set_threshold(self, *thresholds):
        self.calls.append(("set_threshold",) + thresholds)

    def collect(self):
        self.calls.append("collect")
        return 0

    def freeze(self):
        self.calls.append("freeze")

    def get_freeze_count(self):
        self.calls.append("count")
        return 1234


EXPECTED = ["get_threshold", ("set_threshold", 700, 10, 100), "collect",
            "freeze", "count"]


class FreezeTests(unittest.TestCase):
    """
    L{freezeStartupObjects} and L{FrozenStartupService}.
    """

    def test_collectThenFreeze(self):
        """
        Full collections are made rarer (the younger thresholds kept),
        garbage is collected before the survivors are frozen, and the
        number frozen is returned.
        """
        gc = FakeCollector()
        self.assertEqual(1234, freezeStartupObjects(gc))
        self.assertEqual(EXPECTED, gc.calls)

    def test_serviceFreezesOnStart(self):
        """
        The service freezes when started, not when built, and is running
        afterwards.
        """
        gc = FakeCollector()
        top = service.MultiService()
        freezer = FrozenStartupService(gc)
        freezer.setServiceParent(top)
        self.assertEqual([], gc.calls)
        self.assertIsNone(freezer.frozen)
        top.startService()
        self.assertEqual(EXPECTED, gc.calls)
        self.assertEqual(1234, freezer.frozen)
        self.assertTrue(freezer.running)
