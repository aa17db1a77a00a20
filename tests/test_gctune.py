"""
Tests for L{xmppgw.gctune}.
"""

import gc
import platform
from types import SimpleNamespace

from twisted.application import service
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, Logger, formatEvent, globalLogPublisher
from twisted.trial import unittest

from xmppgw.gctune import (
    NURSERY_WARN_BYTES, FrozenStartupService, freezeStartupObjects,
    nurserySize, reportNursery)

MB = 1024 * 1024


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


class FakePyPyCollector:
    """
    The parts of PyPy's L{gc} module the nursery report reads: no
    C{freeze}, and C{get_stats()} whose C{_s} holds C{nursery_size}.
    """

    def __init__(self, nursery):
        self.nursery = nursery

    def get_stats(self):
        return SimpleNamespace(_s=SimpleNamespace(nursery_size=self.nursery))


class NurseryTests(unittest.TestCase):
    """
    L{nurserySize} and L{reportNursery}: PyPy's young-object area, logged
    at start-up, with a warning when PyPy chose a large one by itself.
    """

    def report(self, nursery, environ):
        events = []
        size = reportNursery(FakePyPyCollector(nursery), environ,
                             Logger(observer=events.append))
        return size, events

    def test_sizeOnPyPy(self):
        """
        The size is read from PyPy's collector statistics.
        """
        self.assertEqual(150 * MB, nurserySize(FakePyPyCollector(150 * MB)))

    def test_noSizeElsewhere(self):
        """
        CPython's C{gc.get_stats} is a list of dicts, and a collector
        without it has no nursery either: L{None}, and nothing is logged.
        """
        cpythonShape = SimpleNamespace(get_stats=lambda: [{"collections": 1}])
        self.assertIsNone(nurserySize(cpythonShape))
        self.assertIsNone(nurserySize(FakeCollector()))
        events = []
        self.assertIsNone(reportNursery(FakeCollector(), {},
                                        Logger(observer=events.append)))
        self.assertEqual([], events)

    def test_realCollector(self):
        """
        The real L{gc} module gives a size exactly on PyPy.
        """
        size = nurserySize(gc)
        if platform.python_implementation() == "PyPy":
            self.assertGreater(size, 0)
        else:
            self.assertIsNone(size)

    def test_warnWhenPyPyChoseLarge(self):
        """
        A nursery PyPy derived from a large CPU cache (150 MB on the Intel
        Xeon test VM) is a warning that names the setting and its value.
        """
        size, [event] = self.report(150 * MB, {})
        self.assertEqual(150 * MB, size)
        self.assertEqual(LogLevel.warn, event["log_level"])
        text = formatEvent(event)
        self.assertIn("a 150.0 MB young-object area", text)
        self.assertIn("about 1200 MB before PyPy's first major", text)
        self.assertIn("PYPY_GC_NURSERY=4MB", text)

    def test_threshold(self):
        """
        Up to L{NURSERY_WARN_BYTES} PyPy's own choice is information; one
        byte more is a warning.
        """
        _, [event] = self.report(NURSERY_WARN_BYTES, {})
        self.assertEqual(LogLevel.info, event["log_level"])
        self.assertIn("16.0 MB, PyPy's choice", formatEvent(event))
        _, [event] = self.report(NURSERY_WARN_BYTES + 1, {})
        self.assertEqual(LogLevel.warn, event["log_level"])

    def test_setByEnvironment(self):
        """
        A nursery set by C{PYPY_GC_NURSERY} is the operator's choice: logged
        with the setting as information, whatever its size.
        """
        for nursery, setting in ((4 * MB, "4MB"), (64 * MB, "64MB")):
            size, [event] = self.report(nursery, {"PYPY_GC_NURSERY": setting})
            self.assertEqual(nursery, size)
            self.assertEqual(LogLevel.info, event["log_level"])
            self.assertIn("(PYPY_GC_NURSERY=%s)" % (setting,), formatEvent(event))

    def test_emptySettingIsUnset(self):
        """
        An empty C{PYPY_GC_NURSERY} is no setting (PyPy ignores it too).
        """
        _, [event] = self.report(150 * MB, {"PYPY_GC_NURSERY": ""})
        self.assertEqual(LogLevel.warn, event["log_level"])

    def test_serviceReports(self):
        """
        L{FrozenStartupService} reports the nursery when it starts, from
        the collector and environment it was given.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        freezer = FrozenStartupService(FakePyPyCollector(150 * MB), {})
        self.assertIsNone(freezer.nursery)
        self.assertEqual(0, len(events))
        freezer.startService()
        self.assertEqual(0, freezer.frozen)
        self.assertEqual(150 * MB, freezer.nursery)
        [event] = [e for e in events if "nursery" in formatEvent(e)]
        self.assertEqual(LogLevel.warn, event["log_level"])
        self.assertEqual("xmppgw.gctune", event["log_namespace"])
