# -*- test-case-name: tests.test_store -*-
"""
Where presence subscriptions live (issue 7).

The presence module (L{xmppgw.presence}) keeps every subscription it knows
about in a I{subscription store}: a small key/value interface whose values
are L{Subscription} records. Two implementations ship:

  - L{MemoryStore}: a dictionary; lost on restart (the default).
  - L{SQLiteStore}: one table in an SQLite file (stdlib C{sqlite3}); a
    restart finds every subscription again, and the presence module
    re-arms its refresh and expiry timers from it.

The interface (L{ISubscriptionStore})
=====================================

Every method returns a L{Deferred}. The two stores here are synchronous and
return already-fired Deferreds, so callers that use them behave as if the
calls were synchronous; but callers must not rely on that, so that a
networked store (Redis, PostgreSQL, ...) shared by several gateway instances
can implement the same interface later without changing the presence
module.

For the same reason, records are plain values (frozen dataclasses holding
text, numbers and tuples; no object references, no timers) and each carries
a C{version}:

  - C{get(key)} returns the record or L{None};
  - C{put(record)} writes C{record} if the stored version equals
    C{record.version} (or, for a new key, if nothing is stored and
    C{record.version == 0}), and returns the record with C{version + 1};
    otherwise it fails with L{VersionConflict} (another writer changed it:
    re-read and retry). This is optimistic concurrency, which a shared
    store can implement with a compare-and-set;
  - C{delete(key)} removes the key (no error if absent);
  - C{count(watcher=None)} counts all records or those of one watcher (for
    the caps);
  - C{all()} lists every record (at start-up, to re-arm timers). A shared
    store would give each instance only the records it owns, or elect one
    instance to run timers; that choice belongs to the shared store, not
    to the presence module.

Keys are text built by L{subscriptionKey} from the direction and the two
bare JIDs, so any instance computes the same key for the same
subscription.
"""

import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field, replace

from twisted.internet import defer

__all__ = [
    "Subscription",
    "VersionConflict",
    "ISubscriptionStore",
    "MemoryStore",
    "SQLiteStore",
    "subscriptionKey",
    "openStore",
]

#: A SIP watcher subscribed to an XMPP user's presence; the gateway is the
#: SIP notifier and an XMPP contact.
INBOUND = "in"
#: An XMPP user subscribed to a SIP user's presence; the gateway is the SIP
#: subscriber.
OUTBOUND = "out"


def subscriptionKey(direction, watcher, presentity):
    """
    The store key of a subscription.

    @param direction: L{INBOUND} or L{OUTBOUND}.
    @param watcher: the watcher's bare JID (for L{INBOUND} the SIP user's
        JID at the gateway's domain).
    @param presentity: the presentity's bare JID.
    @rtype: L{str}
    """
    if direction not in (INBOUND, OUTBOUND):
        raise ValueError(f"unknown direction {direction!r}")
    return f"{direction} {watcher} {presentity}"


@dataclass(frozen=True)
class Subscription:
    """
    One presence subscription and its SIP dialog.

    @ivar direction: L{INBOUND} or L{OUTBOUND}.
    @ivar watcher: bare JID of the watcher (inbound: the SIP watcher's JID
        at the gateway; outbound: the XMPP user).
    @ivar presentity: bare JID of the presentity (inbound: the XMPP user;
        outbound: the SIP user's JID at the gateway).
    @ivar state: C{"pending"} (waiting for the XMPP user's decision, or for
        the first NOTIFY), C{"active"}, or C{"dormant"} (outbound only: the
        SIP subscription lapsed while the XMPP user was away; it is
        re-established on the next probe from XMPP).
    @ivar expires: when the SIP subscription ends, in clock seconds.
    @ivar callID: the dialog's Call-ID.
    @ivar localTag: our tag.
    @ivar remoteTag: the peer's tag (C{""} until known).
    @ivar localURI: our URI in the dialog (From of our requests).
    @ivar remoteURI: the peer's URI (To of our requests).
    @ivar remoteTarget: where in-dialog requests go (the peer's Contact).
    @ivar routeSet: the dialog's route set, in the order to use it.
    @ivar localCSeq: the CSeq of the last request we sent in the dialog.
    @ivar remoteCSeq: the CSeq of the last request the peer sent.
    @ivar presence: the last known presence of the presentity, as a JSON
        object text: resource (or tuple id) -> C{{"available", "show",
        "status", "priority"}}; C{"{}"} when unknown.
    @ivar version: the store's version counter (see the module docstring).
    """

    direction: str
    watcher: str
    presentity: str
    state: str = "pending"
    expires: float = 0.0
    callID: str = ""
    localTag: str = ""
    remoteTag: str = ""
    localURI: str = ""
    remoteURI: str = ""
    remoteTarget: str = ""
    routeSet: tuple = field(default_factory=tuple)
    localCSeq: int = 0
    remoteCSeq: int = 0
    presence: str = "{}"
    version: int = 0

    @property
    def key(self):
        """
        The store key (L{subscriptionKey}).
        """
        return subscriptionKey(self.direction, self.watcher, self.presentity)

    def presenceMap(self):
        """
        The last known presence, decoded.

        @rtype: L{dict}
        """
        try:
            value = json.loads(self.presence)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def withPresence(self, mapping):
        """
        A copy holding C{mapping} as its last known presence.
        """
        return replace(self, presence=json.dumps(mapping, sort_keys=True))


class VersionConflict(Exception):
    """
    L{put} found a different version stored than the record it was given.
    """


class ISubscriptionStore:
    """
    The store interface (documentation only; see the module docstring).

    Every method returns a L{Deferred}.
    """

    def get(self, key):
        """
        @return: L{Deferred} firing with the L{Subscription} or L{None}.
        """

    def put(self, record):
        """
        @return: L{Deferred} firing with the stored record (version + 1),
            or failing with L{VersionConflict}.
        """

    def delete(self, key):
        """
        @return: L{Deferred} firing with L{None}.
        """

    def count(self, watcher=None):
        """
        @return: L{Deferred} firing with the number of records (of
            C{watcher} only, if given).
        """

    def all(self):
        """
        @return: L{Deferred} firing with a list of every record.
        """

    def close(self):
        """
        Release resources.

        @return: L{Deferred} firing with L{None}.
        """


class MemoryStore(ISubscriptionStore):
    """
    Subscriptions in a dictionary (lost on restart).
    """

    def __init__(self):
        self._records = {}

    def get(self, key):
        return defer.succeed(self._records.get(key))

    def put(self, record):
        current = self._records.get(record.key)
        stored = 0 if current is None else current.version
        if stored != record.version:
            return defer.fail(VersionConflict(record.key))
        new = replace(record, version=record.version + 1)
        self._records[record.key] = new
        return defer.succeed(new)

    def delete(self, key):
        self._records.pop(key, None)
        return defer.succeed(None)

    def count(self, watcher=None):
        if watcher is None:
            return defer.succeed(len(self._records))
        return defer.succeed(
            sum(1 for r in self._records.values() if r.watcher == watcher)
        )

    def all(self):
        return defer.succeed(list(self._records.values()))

    def close(self):
        return defer.succeed(None)


_COLUMNS = (
    "direction", "watcher", "presentity", "state", "expires", "callID",
    "localTag", "remoteTag", "localURI", "remoteURI", "remoteTarget",
    "routeSet", "localCSeq", "remoteCSeq", "presence", "version",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    key TEXT PRIMARY KEY,
    direction TEXT NOT NULL,
    watcher TEXT NOT NULL,
    presentity TEXT NOT NULL,
    state TEXT NOT NULL,
    expires REAL NOT NULL,
    callID TEXT NOT NULL,
    localTag TEXT NOT NULL,
    remoteTag TEXT NOT NULL,
    localURI TEXT NOT NULL,
    remoteURI TEXT NOT NULL,
    remoteTarget TEXT NOT NULL,
    routeSet TEXT NOT NULL,
    localCSeq INTEGER NOT NULL,
    remoteCSeq INTEGER NOT NULL,
    presence TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS subscriptions_watcher ON subscriptions (watcher);
"""


class SQLiteStore(ISubscriptionStore):
    """
    Subscriptions in one SQLite table, committed on every change.

    The file is opened in the calling thread and used synchronously; each
    write is a single small transaction. That is fine for presence
    subscription traffic (changes are rare compared to messages); a store
    for high rates would run the queries in a thread pool.
    """

    def __init__(self, path):
        """
        @param path: the database file (created if missing), or
            C{":memory:"}.
        @raise sqlite3.Error: if it cannot be opened.
        """
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.executescript(_SCHEMA)

    def _record(self, row):
        values = dict(zip(_COLUMNS, row))
        values["routeSet"] = tuple(json.loads(values["routeSet"]))
        return Subscription(**values)

    def _select(self, where="", args=()):
        columns = ", ".join(_COLUMNS)
        cursor = self._db.execute(
            f"SELECT {columns} FROM subscriptions {where}", args
        )
        return [self._record(row) for row in cursor.fetchall()]

    def get(self, key):
        rows = self._select("WHERE key = ?", (key,))
        return defer.succeed(rows[0] if rows else None)

    def put(self, record):
        new = replace(record, version=record.version + 1)
        values = asdict(new)
        values["routeSet"] = json.dumps(list(new.routeSet))
        args = [values[c] for c in _COLUMNS]
        db = self._db
        if record.version == 0:
            try:
                db.execute(
                    "INSERT INTO subscriptions (key, %s) VALUES (?, %s)"
                    % (", ".join(_COLUMNS), ", ".join("?" * len(_COLUMNS))),
                    [record.key] + args,
                )
            except sqlite3.IntegrityError:
                return defer.fail(VersionConflict(record.key))
            return defer.succeed(new)
        assignments = ", ".join(f"{c} = ?" for c in _COLUMNS)
        cursor = db.execute(
            f"UPDATE subscriptions SET {assignments} WHERE key = ? AND version = ?",
            args + [record.key, record.version],
        )
        if cursor.rowcount != 1:
            return defer.fail(VersionConflict(record.key))
        return defer.succeed(new)

    def delete(self, key):
        self._db.execute("DELETE FROM subscriptions WHERE key = ?", (key,))
        return defer.succeed(None)

    def count(self, watcher=None):
        if watcher is None:
            row = self._db.execute("SELECT COUNT(*) FROM subscriptions").fetchone()
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM subscriptions WHERE watcher = ?", (watcher,)
            ).fetchone()
        return defer.succeed(row[0])

    def all(self):
        return defer.succeed(self._select())

    def close(self):
        self._db.close()
        return defer.succeed(None)


def openStore(spec, baseDir="."):
    """
    Open the store a configuration names.

    @param spec: C{"memory"} or C{"sqlite:PATH"} (PATH relative to
        C{baseDir}).
    @rtype: L{ISubscriptionStore}
    @raise ValueError: for an unknown kind of store.
    """
    if spec == "memory":
        return MemoryStore()
    if spec.startswith("sqlite:") and len(spec) > len("sqlite:"):
        path = spec[len("sqlite:"):]
        if path != ":memory:":
            path = os.path.join(baseDir, os.path.expanduser(path))
        return SQLiteStore(path)
    raise ValueError(
        f'unknown store {spec!r}: use "memory" or "sqlite:PATH"'
    )
