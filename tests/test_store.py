"""
Tests for L{xmppgw.store}: one contract, run against every store.
"""

import os

from twisted.trial import unittest

from xmppgw.store import (
    INBOUND, OUTBOUND, MemoryStore, SQLiteStore, Subscription,
    VersionConflict, openStore, subscriptionKey)


def _record(watcher="romeo*sip.example@gw.example", presentity="juliet@x.example",
            direction=INBOUND, **kwargs):
    return Subscription(direction, watcher, presentity, **kwargs)


def _now(d):
    """
    The result of an already-fired Deferred (the stores here are
    synchronous); fails the test otherwise.
    """
    results = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    return results[0]


class StoreContractMixin:
    """
    The behaviour every L{xmppgw.store.ISubscriptionStore} must have.
    """

    def makeStore(self):
        raise NotImplementedError()

    def setUp(self):
        self.store = self.makeStore()
        self.addCleanup(self.store.close)

    def test_getMissing(self):
        """
        C{get} of an unknown key gives L{None}.
        """
        self.assertIsNone(_now(self.store.get("nope")))

    def test_putAndGet(self):
        """
        A new record is stored with version 1 and read back equal.
        """
        record = _record(state="active", expires=12.5, callID="c1",
                         routeSet=("<sip:p1;lr>", "<sip:p2;lr>"),
                         localCSeq=3, remoteCSeq=7)
        stored = _now(self.store.put(record))
        self.assertEqual(stored.version, 1)
        self.assertEqual(_now(self.store.get(record.key)), stored)
        self.assertEqual(stored.routeSet, ("<sip:p1;lr>", "<sip:p2;lr>"))

    def test_putStaleVersion(self):
        """
        Writing a record whose version is not the stored one fails with
        L{VersionConflict} and leaves the stored record alone.
        """
        stored = _now(self.store.put(_record()))
        _now(self.store.put(stored.__class__(**{**stored.__dict__, "state": "active"})))
        failure = _now(self.store.put(stored))
        self.assertTrue(failure.check(VersionConflict))
        self.assertEqual(_now(self.store.get(stored.key)).state, "active")

    def test_putNewTwice(self):
        """
        Two writers creating the same key: the second gets
        L{VersionConflict}.
        """
        _now(self.store.put(_record()))
        failure = _now(self.store.put(_record(state="active")))
        self.assertTrue(failure.check(VersionConflict))

    def test_delete(self):
        """
        C{delete} removes a record; deleting a missing key is not an error.
        """
        stored = _now(self.store.put(_record()))
        self.assertIsNone(_now(self.store.delete(stored.key)))
        self.assertIsNone(_now(self.store.get(stored.key)))
        self.assertIsNone(_now(self.store.delete(stored.key)))

    def test_count(self):
        """
        C{count} counts all records, or those of one watcher.
        """
        _now(self.store.put(_record(presentity="a@x.example")))
        _now(self.store.put(_record(presentity="b@x.example")))
        _now(self.store.put(_record(watcher="c@x.example", direction=OUTBOUND)))
        self.assertEqual(_now(self.store.count()), 3)
        self.assertEqual(
            _now(self.store.count("romeo*sip.example@gw.example")), 2)
        self.assertEqual(_now(self.store.count("nobody@x.example")), 0)

    def test_all(self):
        """
        C{all} lists every record.
        """
        a = _now(self.store.put(_record(presentity="a@x.example")))
        b = _now(self.store.put(_record(presentity="b@x.example")))
        self.assertEqual(
            sorted(_now(self.store.all()), key=lambda r: r.key),
            sorted([a, b], key=lambda r: r.key))

    def test_presenceRoundTrip(self):
        """
        The presence map survives the store.
        """
        record = _record().withPresence(
            {"home": {"available": True, "show": "away", "status": "out",
                      "priority": 5}})
        stored = _now(self.store.put(record))
        self.assertEqual(_now(self.store.get(stored.key)).presenceMap(),
                         record.presenceMap())


class MemoryStoreTests(StoreContractMixin, unittest.TestCase):
    """
    The contract for L{MemoryStore}.
    """

    def makeStore(self):
        return MemoryStore()


class SQLiteStoreTests(StoreContractMixin, unittest.TestCase):
    """
    The contract for L{SQLiteStore}, plus persistence.
    """

    def makeStore(self):
        self.path = os.path.join(self.mktemp() + ".sqlite")
        return SQLiteStore(self.path)

    def test_survivesReopen(self):
        """
        Records written before closing are there after reopening the file.
        """
        stored = _now(self.store.put(_record(state="active", expires=99.0)))
        _now(self.store.close())
        again = SQLiteStore(self.path)
        self.addCleanup(again.close)
        self.assertEqual(_now(again.get(stored.key)), stored)


class OpenStoreTests(unittest.TestCase):
    """
    Tests for L{openStore} and L{subscriptionKey}.
    """

    def test_memory(self):
        """
        C{"memory"} opens a L{MemoryStore}.
        """
        self.assertIsInstance(openStore("memory"), MemoryStore)

    def test_sqliteRelative(self):
        """
        C{"sqlite:PATH"} opens an L{SQLiteStore} at PATH relative to the
        base directory.
        """
        base = self.mktemp()
        os.makedirs(base)
        store = openStore("sqlite:subs.db", base)
        self.addCleanup(store.close)
        self.assertIsInstance(store, SQLiteStore)
        self.assertEqual(store.path, os.path.join(base, "subs.db"))
        self.assertTrue(os.path.exists(store.path))

    def test_unknown(self):
        """
        Anything else is a L{ValueError}.
        """
        self.assertRaises(ValueError, openStore, "redis://x")
        self.assertRaises(ValueError, openStore, "sqlite:")

    def test_key(self):
        """
        Keys name the direction and both JIDs; unknown directions are
        refused.
        """
        self.assertEqual(subscriptionKey(INBOUND, "a@b", "c@d"), "in a@b c@d")
        self.assertRaises(ValueError, subscriptionKey, "sideways", "a@b", "c@d")
