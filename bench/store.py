"""
Benchmark: the presence subscription stores (L{xmppgw.store}) through
their interface, in one run: L{MemoryStore}, L{SQLiteStore} (a file in a
temporary directory) and L{PostgreSQLStore} (a private PostgreSQL server on
127.0.0.1 started for the run, default durability: C{fsync} and
C{synchronous_commit} on; the client is this process, through the store's
thread pool and the reactor, as in the gateway).

For each store, C{--ops} operations of each kind, one at a time (each
awaited before the next, so each time is a full round trip):

  - B{create}: C{put} of a new record (version 0 -> 1);
  - B{update}: C{put} of an existing record (compare-and-set on the
    version);
  - B{get}: C{get} of an existing record;
  - B{count}: C{count(watcher)} (the per-user cap check);

then B{update x16}: C{--ops} updates of distinct records with 16 in flight
(throughput, operations/s). Reports median, p99 and max wall time per
operation in microseconds, and the gateway process's CPU time per operation
(all threads), so that the per-instance cost is visible apart from waiting;
for PostgreSQL also the server's CPU time per operation (all kinds).

Usage::

    .venv/bin/python -m bench.store [--ops N] [--json FILE]

Needs psycopg 3 (the C{cluster} extra) and the Debian package
C{postgresql} for the PostgreSQL part (skipped with a note otherwise).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

from twisted.internet import defer, task

from bench.common import cpuSeconds, emit, percentile, resultsHeader
from xmppgw.store import (
    INBOUND, MemoryStore, PostgreSQLStore, SQLiteStore, Subscription)


def record(i):
    """
    A realistic inbound subscription record, number C{i}.
    """
    return Subscription(
        INBOUND, f"user{i % 100}*sip.example@gw.example", f"contact{i}@xmpp.example",
        state="active", expires=1.7e9 + i, callID=f"{i:08x}-call@192.0.2.1",
        localTag=f"lt{i}", remoteTag=f"rt{i}",
        localURI="sip:contact@gw.example", remoteURI=f"sip:user{i}@sip.example",
        remoteTarget=f"sip:user{i}@192.0.2.7:5060;transport=udp",
        routeSet=("<sip:proxy.sip.example;lr>",), localCSeq=1, remoteCSeq=i,
    ).withPresence({"home": {"available": True, "show": "away",
                             "status": "in a meeting", "priority": 5}})


def summary(samples, cpu):
    """
    Median, p99, max of C{samples} (seconds) in microseconds, and CPU
    microseconds per operation.
    """
    return {
        "ops": len(samples),
        "median_us": round(percentile(samples, 0.5) * 1e6, 1),
        "p99_us": round(percentile(samples, 0.99) * 1e6, 1),
        "max_us": round(max(samples) * 1e6, 1),
        "cpu_us_per_op": round(cpu / len(samples) * 1e6, 1),
    }


@defer.inlineCallbacks
def timed(operations):
    """
    Run each zero-argument callable of C{operations} (returning a
    Deferred) one after the other; return (wall times, CPU seconds, last
    results).
    """
    samples = []
    results = []
    cpu = time.process_time()
    for operation in operations:
        started = time.perf_counter()
        result = yield operation()
        samples.append(time.perf_counter() - started)
        results.append(result)
    return samples, time.process_time() - cpu, results


@defer.inlineCallbacks
def measure(store, ops, inFlight=16):
    """
    The figures for one store (see the module docstring).
    """
    out = {}
    samples, cpu, created = yield timed(
        [lambda i=i: store.put(record(i)) for i in range(ops)])
    out["create"] = summary(samples, cpu)
    samples, cpu, updated = yield timed(
        [lambda r=r: store.put(r.withPresence({})) for r in created])
    out["update"] = summary(samples, cpu)
    samples, cpu, _ = yield timed(
        [lambda r=r: store.get(r.key) for r in updated])
    out["get"] = summary(samples, cpu)
    samples, cpu, _ = yield timed(
        [lambda r=r: store.count(r.watcher) for r in updated[:max(1, ops // 10)]])
    out["count"] = summary(samples, cpu)

    # Throughput with several operations in flight.
    queue = list(updated)
    cpu = time.process_time()
    started = time.perf_counter()

    @defer.inlineCallbacks
    def worker():
        while queue:
            yield store.put(queue.pop())

    yield defer.gatherResults([worker() for _ in range(inFlight)],
                              consumeErrors=True)
    wall = time.perf_counter() - started
    out[f"update x{inFlight}"] = {
        "ops": ops,
        "ops_per_s": round(ops / wall),
        "cpu_us_per_op": round((time.process_time() - cpu) / ops * 1e6, 1),
    }
    return out


def treeCPU(pid):
    """
    CPU seconds of process C{pid} and its children (the PostgreSQL server:
    postmaster, one backend per connection, background workers).
    """
    total = cpuSeconds(pid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                data = f.read()
            if int(data[data.rindex(")") + 2:].split()[1]) == pid:
                total += cpuSeconds(int(entry))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return total


@defer.inlineCallbacks
def main(reactor, argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not 10 <= args.ops <= 100000:
        parser.error("--ops must be 10..100000")

    results = {**resultsHeader("store", argv), "ops": args.ops, "stores": {}}
    workdir = tempfile.mkdtemp(prefix="xmppgw-bench-store-")
    server = None
    try:
        store = MemoryStore()
        results["stores"]["memory"] = yield measure(store, args.ops)
        yield store.close()

        store = SQLiteStore(os.path.join(workdir, "presence.sqlite"))
        results["stores"]["sqlite (file, default synchronous=FULL)"] = (
            yield measure(store, args.ops))
        yield store.close()

        try:
            from tests.interop.test_store_postgresql import (
                PrivatePostgreSQL, postgresBinaries)
            import psycopg  # noqa: F401
        except ImportError as e:
            results["stores"]["postgresql"] = f"not measured: {e}"
        else:
            if postgresBinaries() is None:
                results["stores"]["postgresql"] = "not measured: not installed"
            else:
                server = PrivatePostgreSQL().start()
                with psycopg.connect(server.dsn) as connection:
                    version = connection.execute("SHOW server_version").fetchone()[0]
                store = PostgreSQLStore(server.dsn, poolSize=4)
                yield store.ready()
                before = treeCPU(server.process.pid)
                figures = yield measure(store, args.ops)
                # Server CPU per operation, over all the operations above.
                total = sum(v["ops"] for v in figures.values())
                figures["server_cpu_us_per_op"] = round(
                    (treeCPU(server.process.pid) - before) / total * 1e6, 1)
                results["stores"][
                    f"postgresql {version} (127.0.0.1, fsync on, pool 4)"] = figures
                yield store.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    emit(results, args.json)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    task.react(main, (sys.argv[1:],))
