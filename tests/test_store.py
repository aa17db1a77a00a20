"""
Tests for L{xmppgw.store}: one contract, run against every store.
"""

import os
import sqlite3
import subprocess
import sys

from twisted.internet import defer
from twisted.trial import unittest

from xmppgw.store import (
    CALLID_MATCHES_MAX, INBOUND, OUTBOUND, MemoryStore, PostgreSQLStore, SQLiteStore, Subscription,
    VersionConflict, isPostgreSQLSpec, openStore, redactDSN, subscriptionKey)

#: The SQLite schema before issue 9 (no owner, no lease), to test upgrades.
_OLD_SCHEMA = """
CREATE TABLE subscriptions (
    key TEXT PRIMARY KEY, direction TEXT NOT NULL, watcher TEXT NOT NULL,
    presentity TEXT NOT NULL, state TEXT NOT NULL, expires REAL NOT NULL,
    callID TEXT NOT NULL, localTag TEXT NOT NULL, remoteTag TEXT NOT NULL,
    localURI TEXT NOT NULL, remoteURI TEXT NOT NULL,
    remoteTarget TEXT NOT NULL, routeSet TEXT NOT NULL,
    localCSeq INTEGER NOT NULL, remoteCSeq INTEGER NOT NULL,
    presence TEXT NOT NULL, version INTEGER NOT NULL
);
CREATE INDEX subscriptions_watcher ON subscriptions (watcher);
"""


def _record(watcher="romeo*sip.example@gw.example", presentity="juliet@x.example",
            direction=INBOUND, **kwargs):
    return Subscription(direction, watcher, presentity, **kwargs)


class StoreContractMixin:
    """
    The behaviour every L{xmppgw.store.ISubscriptionStore} must have.
    """

    def makeStore(self):
        raise NotImplementedError()

    def setUp(self):
        self.store = self.makeStore()
        self.addCleanup(self.store.close)

    # Every test waits on the store's Deferreds: the memory and SQLite
    # stores fire them at once, a networked store later.

    @defer.inlineCallbacks
    def test_getMissing(self):
        """
        C{get} of an unknown key gives L{None}.
        """
        self.assertIsNone((yield self.store.get("nope")))

    @defer.inlineCallbacks
    def test_putAndGet(self):
        """
        A new record is stored with version 1 and read back equal.
        """
        record = _record(state="active", expires=12.5, callID="c1",
                         routeSet=("<sip:p1;lr>", "<sip:p2;lr>"),
                         localCSeq=3, remoteCSeq=7)
        stored = yield self.store.put(record)
        self.assertEqual(stored.version, 1)
        self.assertEqual((yield self.store.get(record.key)), stored)
        self.assertEqual(stored.routeSet, ("<sip:p1;lr>", "<sip:p2;lr>"))

    @defer.inlineCallbacks
    def test_putStaleVersion(self):
        """
        Writing a record whose version is not the stored one fails with
        L{VersionConflict} and leaves the stored record alone.
        """
        stored = yield self.store.put(_record())
        yield self.store.put(stored.__class__(**{**stored.__dict__, "state": "active"}))
        yield self.assertFailure(self.store.put(stored), VersionConflict)
        self.assertEqual((yield self.store.get(stored.key)).state, "active")

    @defer.inlineCallbacks
    def test_putNewTwice(self):
        """
        Two writers creating the same key: the second gets
        L{VersionConflict}.
        """
        yield self.store.put(_record())
        yield self.assertFailure(self.store.put(_record(state="active")),
                                 VersionConflict)

    @defer.inlineCallbacks
    def test_delete(self):
        """
        C{delete} removes a record; deleting a missing key is not an error.
        """
        stored = yield self.store.put(_record())
        self.assertIs((yield self.store.delete(stored.key)), True)
        self.assertIsNone((yield self.store.get(stored.key)))
        self.assertIs((yield self.store.delete(stored.key)), False)

    @defer.inlineCallbacks
    def test_deleteVersion(self):
        """
        C{delete} with a version removes the record only if that version
        is stored: a record changed since it was read survives (and the
        Call-ID index still finds it), and C{False} says so.
        """
        first = yield self.store.put(_record(callID="c1"))
        second = yield self.store.put(first.__class__(**{**first.__dict__,
                                                          "state": "active"}))
        self.assertIs((yield self.store.delete(first.key, first.version)), False)
        self.assertEqual((yield self.store.get(first.key)), second)
        self.assertEqual((yield self.store.findByCallID("c1")), [second])
        self.assertIs((yield self.store.delete(second.key, second.version)), True)
        self.assertIsNone((yield self.store.get(second.key)))
        self.assertEqual((yield self.store.findByCallID("c1")), [])
        self.assertIs((yield self.store.delete(second.key, second.version)), False)

    @defer.inlineCallbacks
    def test_count(self):
        """
        C{count} counts all records, or those of one watcher.
        """
        yield self.store.put(_record(presentity="a@x.example"))
        yield self.store.put(_record(presentity="b@x.example"))
        yield self.store.put(_record(watcher="c@x.example", direction=OUTBOUND))
        self.assertEqual((yield self.store.count()), 3)
        self.assertEqual(
            (yield self.store.count("romeo*sip.example@gw.example")), 2)
        self.assertEqual((yield self.store.count("nobody@x.example")), 0)

    @defer.inlineCallbacks
    def test_all(self):
        """
        C{all} lists every record.
        """
        a = yield self.store.put(_record(presentity="a@x.example"))
        b = yield self.store.put(_record(presentity="b@x.example"))
        self.assertEqual(
            sorted((yield self.store.all()), key=lambda r: r.key),
            sorted([a, b], key=lambda r: r.key))

    @defer.inlineCallbacks
    def test_presenceRoundTrip(self):
        """
        The presence map survives the store.
        """
        record = _record().withPresence(
            {"home": {"available": True, "show": "away", "status": "out",
                      "priority": 5}})
        stored = yield self.store.put(record)
        self.assertEqual((yield self.store.get(stored.key)).presenceMap(),
                         record.presenceMap())

    @defer.inlineCallbacks
    def test_ownerRoundTrip(self):
        """
        The owner and its lease are stored and read back.
        """
        stored = yield self.store.put(_record(owner="gw-1", leaseUntil=1234.5))
        again = yield self.store.get(stored.key)
        self.assertEqual((again.owner, again.leaseUntil), ("gw-1", 1234.5))
        self.assertEqual(_record().owner, "")

    @defer.inlineCallbacks
    def test_findByCallID(self):
        """
        C{findByCallID} lists the records of one Call-ID, follows a record
        to its new Call-ID, and forgets deleted records.
        """
        a = yield self.store.put(_record(presentity="a@x.example", callID="c1"))
        b = yield self.store.put(_record(presentity="b@x.example", callID="c1"))
        c = yield self.store.put(_record(presentity="c@x.example", callID="c2"))
        self.assertEqual(
            sorted((yield self.store.findByCallID("c1")), key=lambda r: r.key),
            sorted([a, b], key=lambda r: r.key))
        self.assertEqual((yield self.store.findByCallID("c2")), [c])
        self.assertEqual((yield self.store.findByCallID("nope")), [])
        moved = yield self.store.put(
            c.__class__(**{**c.__dict__, "callID": "c3"}))
        self.assertEqual((yield self.store.findByCallID("c2")), [])
        self.assertEqual((yield self.store.findByCallID("c3")), [moved])
        yield self.store.delete(a.key)
        self.assertEqual((yield self.store.findByCallID("c1")), [b])

    @defer.inlineCallbacks
    def test_findByCallIDBounded(self):
        """
        At most L{CALLID_MATCHES_MAX} records come back for one Call-ID.
        """
        for i in range(CALLID_MATCHES_MAX + 3):
            yield self.store.put(_record(presentity=f"p{i}@x.example", callID="same"))
        self.assertEqual(len((yield self.store.findByCallID("same"))),
                         CALLID_MATCHES_MAX)

    @defer.inlineCallbacks
    def test_expiredLeases(self):
        """
        C{expiredLeases} lists records whose lease ended at or before the
        given time, oldest first, at most C{limit}.
        """
        yield self.store.put(_record(presentity="a@x.example", leaseUntil=30.0))
        yield self.store.put(_record(presentity="b@x.example", leaseUntil=10.0))
        yield self.store.put(_record(presentity="c@x.example", leaseUntil=20.0))
        yield self.store.put(_record(presentity="d@x.example", leaseUntil=99.0))
        expired = yield self.store.expiredLeases(30.0)
        self.assertEqual([r.presentity for r in expired],
                         ["b@x.example", "c@x.example", "a@x.example"])
        expired = yield self.store.expiredLeases(30.0, limit=2)
        self.assertEqual([r.presentity for r in expired],
                         ["b@x.example", "c@x.example"])
        self.assertEqual((yield self.store.expiredLeases(5.0)), [])


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

    @defer.inlineCallbacks
    def test_survivesReopen(self):
        """
        Records written before closing are there after reopening the file.
        """
        stored = yield self.store.put(_record(state="active", expires=99.0))
        yield self.store.close()
        again = SQLiteStore(self.path)
        self.addCleanup(again.close)
        self.assertEqual((yield again.get(stored.key)), stored)

    @defer.inlineCallbacks
    def test_sharedFile(self):
        """
        Two stores on one file (two processes on one host) see each
        other's writes, and a write based on a stale version fails.
        """
        other = SQLiteStore(self.path)
        self.addCleanup(other.close)
        stored = yield self.store.put(_record(callID="c1"))
        seen = yield other.get(stored.key)
        self.assertEqual(seen, stored)
        self.assertEqual((yield other.findByCallID("c1")), [stored])
        yield other.put(seen.__class__(**{**seen.__dict__, "owner": "gw-2"}))
        yield self.assertFailure(self.store.put(stored), VersionConflict)

    @defer.inlineCallbacks
    def test_upgradesOldFile(self):
        """
        A file made before the C{owner} and C{leaseUntil} columns gets
        them (empty owner, lease 0) and the Call-ID index when opened.
        """
        yield self.store.close()
        path = self.mktemp() + ".sqlite"
        db = sqlite3.connect(path)
        db.executescript(_OLD_SCHEMA)
        db.execute(
            "INSERT INTO subscriptions VALUES ('in a@b c@d', 'in', 'a@b', "
            "'c@d', 'active', 50.0, 'cid', 'lt', 'rt', 'sip:l', 'sip:r', "
            "'sip:t', '[]', 1, 2, '{}', 3)")
        db.commit()
        db.close()
        store = SQLiteStore(path)
        self.addCleanup(store.close)
        [record] = yield store.findByCallID("cid")
        self.assertEqual((record.key, record.owner, record.leaseUntil,
                          record.version), ("in a@b c@d", "", 0.0, 3))
        updated = yield store.put(
            record.__class__(**{**record.__dict__, "owner": "gw-1",
                                "leaseUntil": 9.0}))
        self.assertEqual((yield store.expiredLeases(10.0)), [updated])
        indexes = {row[1] for row in store._db.execute(
            "PRAGMA index_list(subscriptions)")}
        self.assertIn("subscriptions_callID", indexes)


class SQLiteLoadedTests(unittest.TestCase):
    """
    SQLite is loaded only by a gateway whose store is SQLite.
    """

    def imported(self, code):
        process = subprocess.run(
            [sys.executable, "-c", code + "\nimport sys\n"
             "print('sqlite3' in sys.modules, '_sqlite3' in sys.modules)"],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(0, process.returncode, process.stderr[-2000:])
        return process.stdout.split()

    def test_notWithMemoryStore(self):
        """
        The gateway's modules and a memory store leave C{sqlite3} out
        (about 0.9 MB of an idle gateway on CPython).
        """
        self.assertEqual(["False", "False"], self.imported(
            "import xmppgw.tap, xmppgw.presence\n"
            "from xmppgw.store import openStore\n"
            "openStore('memory', '/nonexistent')"))

    def test_withSQLiteStore(self):
        """
        An SQLite store loads it.
        """
        self.assertEqual(["True", "True"], self.imported(
            "from xmppgw.store import SQLiteStore\n"
            "SQLiteStore(':memory:').close()"))


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

    def test_postgreSQL(self):
        """
        A C{postgresql://} or C{postgres://} URI opens a L{PostgreSQLStore}
        (which does no I/O until its first operation); its C{repr} hides
        the password.
        """
        for spec in ("postgresql://gw@db.example/xmppgw",
                     "postgres://gw:secret@db.example:5433/xmppgw"):
            store = openStore(spec)
            self.addCleanup(store.close)
            self.assertIsInstance(store, PostgreSQLStore)
            self.assertEqual(store.dsn, spec)
            self.assertNotIn("secret", repr(store))

    def test_isPostgreSQLSpec(self):
        """
        Only C{postgresql://} and C{postgres://} URIs with something after
        the scheme name PostgreSQL.
        """
        self.assertTrue(isPostgreSQLSpec("postgresql://gw@db/xmppgw"))
        self.assertTrue(isPostgreSQLSpec("postgres:///xmppgw"))
        self.assertFalse(isPostgreSQLSpec("postgresql://"))
        self.assertFalse(isPostgreSQLSpec("postgresql:db"))
        self.assertFalse(isPostgreSQLSpec("mysql://gw@db/xmppgw"))
        self.assertFalse(isPostgreSQLSpec(None))

    def test_redactDSN(self):
        """
        L{redactDSN} replaces the password and nothing else.
        """
        self.assertEqual(redactDSN("postgresql://gw:s3cret@db:5432/x"),
                         "postgresql://gw:***@db:5432/x")
        self.assertEqual(redactDSN("postgresql://gw@db/x"),
                         "postgresql://gw@db/x")

    def test_postgreSQLBadArguments(self):
        """
        A pool of no threads, a waiting bound below the pool size or a
        non-positive timeout is refused.
        """
        for kwargs in ({"poolSize": 0}, {"poolSize": 4, "maxPending": 2},
                       {"timeout": 0}):
            self.assertRaises(ValueError, PostgreSQLStore,
                              "postgresql://gw@db/x", **kwargs)
