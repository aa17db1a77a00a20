# -*- test-case-name: tests.test_store -*-
"""
Where presence subscriptions live (issue 7).

The presence module (L{xmppgw.presence}) keeps every subscription it knows
about in a I{subscription store}: a small key/value interface whose values
are L{Subscription} records. Two implementations ship:

  - L{MemoryStore}: a dictionary; lost on restart (the default).
  - L{SQLiteStore}: one table in an SQLite file (stdlib C{sqlite3}); a
    restart finds every subscription again, and the presence module
    re-arms its refresh and expiry timers from it. The single-node choice.
  - L{PostgreSQLStore}: the same table in a PostgreSQL database, shared by
    several gateway instances (issue 9); needs the C{cluster} extra
    (psycopg 3). See C{docs/scaling.rst} for why PostgreSQL and the
    measured cost per operation.

The interface (L{ISubscriptionStore})
=====================================

Every method returns a L{Deferred}. The memory and SQLite stores are
synchronous and return already-fired Deferreds, so callers that use them
behave as if the calls were synchronous; but callers must not rely on that:
L{PostgreSQLStore}, shared by several gateway instances, implements the
same interface with Deferreds that fire later, without changes to the
presence module.

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
  - C{delete(key, version=None)} removes the key (no error if absent);
    given a C{version}, only if the stored record still has that version
    (a compare-and-delete: C{DELETE ... WHERE key = ? AND version = ?}),
    so that a record another writer changed since it was read survives.
    It fires with whether a record was deleted (C{False}: absent, or, with
    a C{version}, changed meanwhile: re-read and decide again);
  - C{count(watcher=None)} counts all records or those of one watcher (for
    the caps);
  - C{all()} lists every record (at start-up, to re-arm timers);
  - C{findByCallID(callID)} lists the records of one SIP Call-ID (usually
    one; at most L{CALLID_MATCHES_MAX}), so that any instance sharing the
    store can handle an in-dialog request;
  - C{expiredLeases(now, limit)} lists records whose owner's lease ended
    at or before C{now}, oldest lease first, at most C{limit}.

Several gateway instances may share one store (issue 9): each record names
the instance that runs its timers (C{owner}) and until when that claim
holds (C{leaseUntil}). The presence module takes and renews these through
C{put}'s version check; the store only keeps and indexes them (see
C{docs/presence.rst}, "Several instances").

Keys are text built by L{subscriptionKey} from the direction and the two
bare JIDs, so any instance computes the same key for the same
subscription.
"""

import importlib.util
import json
import os
import threading
from dataclasses import asdict, dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

__all__ = [
    "Subscription",
    "VersionConflict",
    "ISubscriptionStore",
    "MemoryStore",
    "SQLiteStore",
    "PostgreSQLStore",
    "StoreUnavailable",
    "isPostgreSQLSpec",
    "redactDSN",
    "subscriptionKey",
    "openStore",
    "CALLID_MATCHES_MAX",
]

#: Most records L{ISubscriptionStore.findByCallID} returns.
CALLID_MATCHES_MAX = 16

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
    @ivar owner: the id of the gateway instance running this
        subscription's timers (C{""}: none yet, e.g. a record written
        before issue 9).
    @ivar leaseUntil: when the owner's claim ends, in clock seconds; after
        it, another instance may take the record over.
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
    owner: str = ""
    leaseUntil: float = 0.0
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

    def delete(self, key, version=None):
        """
        Remove C{key}; given C{version}, only if the stored record has that
        version (it was not changed since it was read).

        @return: L{Deferred} firing with L{True} if a record was deleted,
            L{False} if none was (absent, or another version stored); never
            L{VersionConflict}.
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

    def findByCallID(self, callID):
        """
        @return: L{Deferred} firing with a list of the records whose
            C{callID} is C{callID} (at most L{CALLID_MATCHES_MAX}).
        """

    def expiredLeases(self, now, limit=100):
        """
        @return: L{Deferred} firing with a list of at most C{limit} records
            whose C{leaseUntil} is at or before C{now}, oldest first.
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
        self._callIDs = {}

    def get(self, key):
        return defer.succeed(self._records.get(key))

    def _unindex(self, record):
        keys = self._callIDs.get(record.callID)
        if keys is not None:
            keys.discard(record.key)
            if not keys:
                del self._callIDs[record.callID]

    def put(self, record):
        current = self._records.get(record.key)
        stored = 0 if current is None else current.version
        if stored != record.version:
            return defer.fail(VersionConflict(record.key))
        new = replace(record, version=record.version + 1)
        if current is not None:
            self._unindex(current)
        self._records[record.key] = new
        self._callIDs.setdefault(new.callID, set()).add(new.key)
        return defer.succeed(new)

    def delete(self, key, version=None):
        current = self._records.get(key)
        if current is None or (version is not None and current.version != version):
            return defer.succeed(False)
        del self._records[key]
        self._unindex(current)
        return defer.succeed(True)

    def count(self, watcher=None):
        if watcher is None:
            return defer.succeed(len(self._records))
        return defer.succeed(
            sum(1 for r in self._records.values() if r.watcher == watcher)
        )

    def all(self):
        return defer.succeed(list(self._records.values()))

    def findByCallID(self, callID):
        keys = sorted(self._callIDs.get(callID, ()))[:CALLID_MATCHES_MAX]
        return defer.succeed([self._records[k] for k in keys])

    def expiredLeases(self, now, limit=100):
        expired = [r for r in self._records.values() if r.leaseUntil <= now]
        expired.sort(key=lambda r: (r.leaseUntil, r.key))
        return defer.succeed(expired[:limit])

    def close(self):
        return defer.succeed(None)


_COLUMNS = (
    "direction", "watcher", "presentity", "state", "expires", "callID",
    "localTag", "remoteTag", "localURI", "remoteURI", "remoteTarget",
    "routeSet", "localCSeq", "remoteCSeq", "presence", "owner", "leaseUntil",
    "version",
)

#: Columns added after the first schema (issue 9): name -> SQL definition,
#: added to existing tables by the stores when missing.
_ADDED_COLUMNS = (
    ("owner", "TEXT NOT NULL DEFAULT ''"),
    ("leaseUntil", "REAL NOT NULL DEFAULT 0"),
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
    owner TEXT NOT NULL DEFAULT '',
    leaseUntil REAL NOT NULL DEFAULT 0,
    version INTEGER NOT NULL
)
"""

_INDEXES = """
CREATE INDEX IF NOT EXISTS subscriptions_watcher ON subscriptions (watcher);
CREATE INDEX IF NOT EXISTS subscriptions_callID ON subscriptions (callID);
CREATE INDEX IF NOT EXISTS subscriptions_leaseUntil ON subscriptions (leaseUntil);
"""


class SQLiteStore(ISubscriptionStore):
    """
    Subscriptions in one SQLite table, committed on every change.

    The file is opened in the calling thread and used synchronously; each
    write is a single small transaction. That is fine for presence
    subscription traffic (changes are rare compared to messages); a store
    for high rates would run the queries in a thread pool.

    Several processes on one host may open the same file: each write is
    one atomic statement (the version check is in its C{WHERE}), and a
    writer waits at most C{busyTimeout} seconds for another's lock, and
    since the store is synchronous that wait blocks the reactor (the
    rollback journal is kept: no WAL; for instances that write often, use
    PostgreSQL). A file
    made before issue 9 gets the C{owner} and C{leaseUntil} columns and
    the Call-ID and lease indexes when opened.
    """

    def __init__(self, path, busyTimeout=5.0):
        """
        @param path: the database file (created if missing), or
            C{":memory:"}.
        @param busyTimeout: seconds to wait for another process's lock.
        @raise sqlite3.Error: if it cannot be opened.
        """
        # Imported here, not with the module: a gateway whose store is
        # "memory" or PostgreSQL does not load SQLite (about 0.9 MB of
        # its idle memory on CPython; docs/performance.rst, round 22).
        import sqlite3
        self.path = path
        self._integrityError = sqlite3.IntegrityError
        self._db = sqlite3.connect(path, isolation_level=None,
                                   timeout=busyTimeout)
        self._createSchema()

    def _createSchema(self):
        """
        Create the table and indexes, adding the columns a file from an
        older version lacks; in one write transaction, so that processes
        opening the file together do not trip over each other.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_SCHEMA)
            present = {row[1].lower() for row in
                       db.execute("PRAGMA table_info(subscriptions)")}
            for name, definition in _ADDED_COLUMNS:
                if name.lower() not in present:
                    db.execute(f"ALTER TABLE subscriptions ADD COLUMN {name} {definition}")
            for statement in _INDEXES.strip().splitlines():
                db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

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
            except self._integrityError:
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

    def delete(self, key, version=None):
        if version is None:
            cursor = self._db.execute("DELETE FROM subscriptions WHERE key = ?", (key,))
        else:
            cursor = self._db.execute(
                "DELETE FROM subscriptions WHERE key = ? AND version = ?",
                (key, version))
        return defer.succeed(cursor.rowcount == 1)

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

    def findByCallID(self, callID):
        return defer.succeed(self._select(
            "WHERE callID = ? ORDER BY key LIMIT ?", (callID, CALLID_MATCHES_MAX)))

    def expiredLeases(self, now, limit=100):
        return defer.succeed(self._select(
            "WHERE leaseUntil <= ? ORDER BY leaseUntil, key LIMIT ?",
            (now, limit)))

    def close(self):
        self._db.close()
        return defer.succeed(None)


class StoreUnavailable(Exception):
    """
    A networked store could not do an operation: the server cannot be
    reached, did not answer within the store's timeout, or too many
    operations are already waiting. The operation may or may not have
    taken effect (a write whose answer was lost); callers treat it like
    any temporary failure (SIP C{500}/C{503} with C{Retry-After}).
    """


#: The PostgreSQL schema: the SQLite one with PostgreSQL types (C{REAL} is
#: single precision there, hence C{DOUBLE PRECISION}) and a prefixed table
#: name, since the database may be shared with other programs (Kamailio's
#: tables, say).
_PG_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS xmppgw_subscriptions (
        key TEXT PRIMARY KEY,
        direction TEXT NOT NULL,
        watcher TEXT NOT NULL,
        presentity TEXT NOT NULL,
        state TEXT NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        callID TEXT NOT NULL,
        localTag TEXT NOT NULL,
        remoteTag TEXT NOT NULL,
        localURI TEXT NOT NULL,
        remoteURI TEXT NOT NULL,
        remoteTarget TEXT NOT NULL,
        routeSet TEXT NOT NULL,
        localCSeq BIGINT NOT NULL,
        remoteCSeq BIGINT NOT NULL,
        presence TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        leaseUntil DOUBLE PRECISION NOT NULL DEFAULT 0,
        version BIGINT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS xmppgw_subscriptions_watcher "
    "ON xmppgw_subscriptions (watcher)",
    "CREATE INDEX IF NOT EXISTS xmppgw_subscriptions_callid "
    "ON xmppgw_subscriptions (callID)",
    "CREATE INDEX IF NOT EXISTS xmppgw_subscriptions_leaseuntil "
    "ON xmppgw_subscriptions (leaseUntil)",
)

#: Columns a table made before issue 9 lacks, added when missing (by
#: name, lower case as PostgreSQL folds them).
_PG_ADDED_COLUMNS = (
    ("owner", "TEXT NOT NULL DEFAULT ''"),
    ("leaseuntil", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
)

#: Key of the advisory lock that serialises schema creation between
#: instances starting at the same time (two concurrent C{CREATE TABLE IF
#: NOT EXISTS} can otherwise fail with a unique violation in PostgreSQL).
_PG_SCHEMA_LOCK = 0x786D7070677701  # "xmppgw" + 1

_PG_SELECT = "SELECT %s FROM xmppgw_subscriptions" % ", ".join(_COLUMNS)
_PG_INSERT = (
    "INSERT INTO xmppgw_subscriptions (key, %s) VALUES (%s) "
    "ON CONFLICT (key) DO NOTHING"
    % (", ".join(_COLUMNS), ", ".join(["%s"] * (len(_COLUMNS) + 1)))
)
_PG_UPDATE = (
    "UPDATE xmppgw_subscriptions SET %s WHERE key = %%s AND version = %%s"
    % ", ".join(f"{c} = %s" for c in _COLUMNS)
)


def redactDSN(dsn):
    """
    A PostgreSQL URI fit for logs: its password (if any) replaced by
    C{***}.

    @type dsn: L{str}
    @rtype: L{str}
    """
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "postgresql://(unparsable)"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _psycopgConnect(dsn, timeout):
    """
    Open one autocommit psycopg 3 connection with bounded waits: connect
    timeout, statement timeout and TCP user timeout all C{timeout}.
    """
    import psycopg

    return psycopg.connect(
        dsn, autocommit=True, connect_timeout=max(2, int(timeout + 0.999)),
        options=f"-c statement_timeout={int(timeout * 1000)}",
        tcp_user_timeout=int(timeout * 1000), application_name="xmppgw")


def _isConnectionError(error):
    """
    Whether C{error} (raised by the driver) means the server or the
    connection failed, rather than the statement (a bug here).
    """
    try:
        import psycopg
    except ImportError:  # pragma: no cover - connect would have failed
        return False
    return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))


class PostgreSQLStore(ISubscriptionStore):
    """
    Subscriptions in one PostgreSQL table (C{xmppgw_subscriptions}), shared
    by every gateway instance that names the same database.

    The driver is psycopg 3 (blocking), run in a bounded thread pool of its
    own: at most C{poolSize} operations run at once, each on a connection
    of its own (connections are opened on demand, kept, and reopened after
    a failure), and at most C{maxPending} may wait; beyond, operations fail
    at once with L{StoreUnavailable}. Every statement is its own
    transaction (autocommit), so the compare-and-set of L{put} is one
    atomic statement: C{INSERT ... ON CONFLICT (key) DO NOTHING} for a new
    record (version 0) and C{UPDATE ... WHERE key = %s AND version = %s}
    otherwise; no row touched means another writer won
    (L{VersionConflict}). The schema is created (if missing) by the first
    operation (at start-up, the presence module's C{all()}; or L{ready}),
    under an advisory lock so that instances starting together do not trip
    over each other. The constructor does no I/O.

    Every wait is bounded by C{timeout} seconds: connecting, each statement
    (server-side C{statement_timeout}), the TCP connection
    (C{tcp_user_timeout}) and the caller's Deferred (which fails with
    L{StoreUnavailable} then, whatever the thread is still doing).
    """

    def __init__(self, dsn, reactor=None, poolSize=4, maxPending=1000,
                 timeout=10.0, connect=None):
        """
        @param dsn: a libpq URI, C{postgresql://user@host:port/dbname}
            (C{postgres://} too); passwords are better kept out of it, in
            C{~/.pgpass} or C{PGPASSFILE}.
        @param reactor: the reactor (default: the global one).
        @param poolSize: most concurrent operations and connections.
        @param maxPending: most operations waiting or running.
        @param timeout: seconds; the bound on every wait (see above).
        @param connect: C{callable(dsn, timeout)} returning a DB-API
            connection in autocommit mode (tests); default psycopg 3.
        @raise ImportError: psycopg 3 is not installed (the C{cluster}
            extra).
        """
        if reactor is None:
            from twisted.internet import reactor
        if connect is None:
            if importlib.util.find_spec("psycopg") is None:
                raise ImportError(
                    "the PostgreSQL store needs psycopg 3: "
                    "pip install 'xmppgw[cluster]'")
            connect = _psycopgConnect
        if poolSize < 1 or maxPending < poolSize or not timeout > 0:
            raise ValueError("need poolSize >= 1, maxPending >= poolSize, "
                             "timeout > 0")
        self.dsn = dsn
        self.poolSize = poolSize
        self.maxPending = maxPending
        self.timeout = timeout
        self._reactor = reactor
        self._connect = connect
        self._lock = threading.Lock()
        self._idle = []
        self._schemaReady = False
        self._pending = 0
        self._closing = None
        self._pool = ThreadPool(0, poolSize, name="xmppgw-store")
        self._pool.start()
        self._trigger = reactor.addSystemEventTrigger(
            "during", "shutdown", self._stopPool)

    def __repr__(self):
        return f"<PostgreSQLStore {redactDSN(self.dsn)}>"

    def ready(self):
        """
        Connect and create the schema now, rather than on the first
        operation.

        @return: L{Deferred} firing with L{None}, or failing with
            L{StoreUnavailable}.
        """
        return self._run(lambda connection: None)

    # -- running statements in the pool

    def _take(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect(self.dsn, self.timeout)

    def _give(self, connection):
        with self._lock:
            if self._closing is None:
                self._idle.append(connection)
                return
        connection.close()

    def _createSchema(self, connection):
        with self._lock:
            if self._schemaReady:
                return
        cursor = connection.cursor()
        cursor.execute("BEGIN")
        try:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            cursor.execute(_PG_SCHEMA[0])
            cursor.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() "
                "AND table_name = 'xmppgw_subscriptions'")
            present = {row[0] for row in cursor.fetchall()}
            for name, definition in _PG_ADDED_COLUMNS:
                if name not in present:
                    cursor.execute(f"ALTER TABLE xmppgw_subscriptions "
                                   f"ADD COLUMN {name} {definition}")
            for statement in _PG_SCHEMA[1:]:
                cursor.execute(statement)
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        with self._lock:
            self._schemaReady = True

    def _inThread(self, function, args):
        try:
            connection = self._take()
        except Exception as e:
            if _isConnectionError(e):
                raise StoreUnavailable(
                    f"cannot connect to {redactDSN(self.dsn)}: {e}") from e
            raise
        try:
            self._createSchema(connection)
            result = function(connection, *args)
        except BaseException as e:
            # The connection is kept only if it is still usable.
            if getattr(connection, "broken", False) or getattr(connection, "closed", False):
                connection.close()
            else:
                self._give(connection)
            if _isConnectionError(e):
                raise StoreUnavailable(
                    f"PostgreSQL at {redactDSN(self.dsn)}: {e}") from e
            raise
        self._give(connection)
        return result

    def _run(self, function, *args):
        """
        Run C{function(connection, *args)} in the pool.

        @return: L{Deferred} with its result.
        """
        if self._closing is not None:
            return defer.fail(StoreUnavailable("the store is closed"))
        if self._pending >= self.maxPending:
            return defer.fail(StoreUnavailable(
                f"{self._pending} store operations already waiting"))
        self._pending += 1
        result = defer.Deferred()

        def finished(value):
            self._pending -= 1
            if self._pending == 0 and self._closing is not None:
                self._closing.callback(None)
            if not result.called:
                if isinstance(value, Failure):
                    result.errback(value)
                else:
                    result.callback(value)
            # else: the caller has given up (timeout); the late result is
            # dropped (and a late failure consumed).

        deferToThreadPool(self._reactor, self._pool, self._inThread,
                          function, args).addBoth(finished)

        def timedOut(failure):
            failure.trap(defer.TimeoutError)
            raise StoreUnavailable(
                f"no answer from {redactDSN(self.dsn)} in {self.timeout} s")

        result.addTimeout(self.timeout, self._reactor)
        result.addErrback(timedOut)
        return result

    def _stopPool(self):
        if self._pool.started:
            self._pool.stop()
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            try:
                connection.close()
            except Exception:  # pragma: no cover - best effort
                pass

    # -- the statements (run in a pool thread)

    @staticmethod
    def _record(row):
        values = dict(zip(_COLUMNS, row))
        values["routeSet"] = tuple(json.loads(values["routeSet"]))
        return Subscription(**values)

    @classmethod
    def _getInThread(cls, connection, key):
        cursor = connection.cursor()
        cursor.execute(_PG_SELECT + " WHERE key = %s", (key,))
        row = cursor.fetchone()
        return None if row is None else cls._record(row)

    @staticmethod
    def _putInThread(connection, record, new, args):
        cursor = connection.cursor()
        if record.version == 0:
            cursor.execute(_PG_INSERT, [record.key] + args)
        else:
            cursor.execute(_PG_UPDATE, args + [record.key, record.version])
        if cursor.rowcount != 1:
            raise VersionConflict(record.key)
        return new

    @staticmethod
    def _deleteInThread(connection, key, version):
        cursor = connection.cursor()
        if version is None:
            cursor.execute(
                "DELETE FROM xmppgw_subscriptions WHERE key = %s", (key,))
        else:
            cursor.execute(
                "DELETE FROM xmppgw_subscriptions WHERE key = %s AND version = %s",
                (key, version))
        return cursor.rowcount == 1

    @staticmethod
    def _countInThread(connection, watcher):
        cursor = connection.cursor()
        if watcher is None:
            cursor.execute("SELECT COUNT(*) FROM xmppgw_subscriptions")
        else:
            cursor.execute(
                "SELECT COUNT(*) FROM xmppgw_subscriptions WHERE watcher = %s",
                (watcher,))
        return int(cursor.fetchone()[0])

    @classmethod
    def _allInThread(cls, connection):
        cursor = connection.cursor()
        cursor.execute(_PG_SELECT)
        return [cls._record(row) for row in cursor.fetchall()]

    @classmethod
    def _findByCallIDInThread(cls, connection, callID):
        cursor = connection.cursor()
        cursor.execute(_PG_SELECT + " WHERE callID = %s ORDER BY key LIMIT %s",
                       (callID, CALLID_MATCHES_MAX))
        return [cls._record(row) for row in cursor.fetchall()]

    @classmethod
    def _expiredLeasesInThread(cls, connection, now, limit):
        cursor = connection.cursor()
        cursor.execute(_PG_SELECT + " WHERE leaseUntil <= %s "
                       "ORDER BY leaseUntil, key LIMIT %s", (now, limit))
        return [cls._record(row) for row in cursor.fetchall()]

    # -- the interface

    def get(self, key):
        return self._run(self._getInThread, key)

    def put(self, record):
        new = replace(record, version=record.version + 1)
        values = asdict(new)
        values["routeSet"] = json.dumps(list(new.routeSet))
        args = [values[c] for c in _COLUMNS]
        return self._run(self._putInThread, record, new, args)

    def delete(self, key, version=None):
        return self._run(self._deleteInThread, key,
                         None if version is None else int(version))

    def count(self, watcher=None):
        return self._run(self._countInThread, watcher)

    def all(self):
        return self._run(self._allInThread)

    def findByCallID(self, callID):
        return self._run(self._findByCallIDInThread, callID)

    def expiredLeases(self, now, limit=100):
        return self._run(self._expiredLeasesInThread, float(now), int(limit))

    def close(self):
        """
        Refuse new operations, wait for the running ones (each bounded by
        the timeout), then stop the threads and close the connections.
        """
        if self._closing is not None:
            return defer.succeed(None)
        self._closing = defer.Deferred()
        self._reactor.removeSystemEventTrigger(self._trigger)
        if self._pending == 0:
            self._closing.callback(None)
        done = defer.Deferred()

        def stop(ignored):
            self._stopPool()
            done.callback(None)

        self._closing.addCallback(stop)
        return done


def openStore(spec, baseDir="."):
    """
    Open the store a configuration names.

    @param spec: C{"memory"}, C{"sqlite:PATH"} (PATH relative to
        C{baseDir}) or a PostgreSQL URI (L{isPostgreSQLSpec};
        L{PostgreSQLStore}).
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
    if isPostgreSQLSpec(spec):
        return PostgreSQLStore(spec)
    raise ValueError(
        f'unknown store {redactDSN(spec)!r}: use "memory", "sqlite:PATH" '
        'or "postgresql://USER@HOST:PORT/DATABASE"'
    )


def isPostgreSQLSpec(spec):
    """
    Whether C{spec} names a PostgreSQL store: a C{postgresql://} or
    C{postgres://} URI with a host or a database.

    @rtype: L{bool}
    """
    if not isinstance(spec, str):
        return False
    scheme, sep, rest = spec.partition("://")
    return (sep == "://" and scheme in ("postgresql", "postgres")
            and rest.strip("/") != "")
