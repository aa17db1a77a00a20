"""
Soak benchmark (issue 5): the gateway under a steady load for minutes,
for loss, memory growth and latency drift.

The set-up of L{bench.endtoend} (a private Prosody on 127.0.0.1, the
gateway as C{twistd -n xmppgw} in its own process, rate limits off, the load
peers of L{bench.peers} in their own processes): one open-loop SIP
generator sends MESSAGEs at C{--rate} per second (default 500, half of the
about 1,000/s where the gateway saturates over UDP in
C{docs/performance.rst}) for C{--duration} seconds (default 600), over UDP
(C{--proto tcp} for TCP), from 100 distinct SIP users; one raw XMPP client
receives them. Loopback only; the load is bounded in count
(C{rate * duration}) and every wait in time.

Reported:

  - loss: messages sent, delivered, lost, duplicated, the SIP answers by
    code;
  - memory: the gateway's RSS before the load, then every C{--interval}
    seconds (start, middle and end are picked out), and its peak (VmHWM);
    CPU per message per interval;
  - drift: latency p50/p99/max per C{--bucket} seconds of the send
    schedule (default 60: per minute).

Usage::

    .venv/bin/python -m bench.soak [--rate 500] [--duration 600]
        [--proto udp|tcp] [--twistd .venv-pypy/bin/twistd] [--json FILE]

C{make bench} runs it with C{SOAK_ARGS} (empty: the 600 s default; e.g.
C{make bench SOAK_ARGS="--duration 120"} for a shorter run).
"""

import argparse
import os
import sys
import time

from bench.common import (
    MEMORY_FIELDS, cpuSeconds, emit, memoryKB, resultsHeader)
from bench.endtoend import DOMAIN, Bench, Peer, nurseryFromLog, twistd


def sample(bench, t0):
    rss, hwm, anon, mapped = memoryKB(bench.gateway.pid, MEMORY_FIELDS)
    return {"t": round(time.monotonic() - t0, 1),
            "rss_mb": round(rss / 1024, 1), "peak_mb": round(hwm / 1024, 1),
            "anon_mb": round(anon / 1024, 1),
            "file_mb": round(mapped / 1024, 1),
            "cpu_s": round(cpuSeconds(bench.gateway.pid), 2)}


def parseArguments(argv=None):
    """
    The soak's command line (L{main}).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0,
                        help="messages per second (default 500)")
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds of load (default 600)")
    parser.add_argument("--proto", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--users", type=int, default=100,
                        help="distinct SIP senders (default 100)")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="seconds between memory samples (default 10)")
    parser.add_argument("--bucket", type=float, default=60.0,
                        help="seconds per latency bucket (default 60)")
    parser.add_argument("--no-log", dest="log", action="store_false",
                        help="[log] messages = false (default: true)")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the working directory (configurations "
                        "and logs) instead of removing it")
    parser.add_argument("--twistd",
                        help="the twistd that runs the gateway (default: "
                        "the one next to this Python); e.g. "
                        ".venv-pypy/bin/twistd to run it on PyPy")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 20000 or not 1 <= args.duration <= 3600:
        parser.error("--rate must be in (0, 20000], --duration in [1, 3600]")
    if not 1 <= args.interval <= 600 or not 1 <= args.bucket <= 3600:
        parser.error("--interval must be in [1, 600], --bucket in [1, 3600]")
    if args.twistd:
        args.twistd = os.path.abspath(args.twistd)  # the gateway runs elsewhere
    return args


def main(argv=None):
    args = parseArguments(argv)
    count = int(args.rate * args.duration)
    bucketMessages = max(1, int(args.rate * args.bucket))
    idle = 5.0
    # Generous but finite: the load itself, plus draining.
    limit = args.duration * 1.5 + 60
    bench = Bench(args)
    results = {
        **resultsHeader("soak", argv),
        "rate": args.rate,
        "duration": args.duration,
        "proto": args.proto,
        "log_messages": args.log,
        "gateway_twistd": args.twistd or twistd(),
        # Inherited by the gateway's twistd (bench.endtoend records the same).
        "pypy_gc_nursery": os.environ.get("PYPY_GC_NURSERY"),
        "pypy_gc_increment_step": os.environ.get("PYPY_GC_INCREMENT_STEP"),
        "pypy_gc_major_collect": os.environ.get("PYPY_GC_MAJOR_COLLECT"),
        "sent": count,
    }
    try:
        bench.start()
        results["gateway_pypy_nursery_mb"] = nurseryFromLog(bench._log())
        t0 = time.monotonic()
        samples = [sample(bench, t0)]
        rx = Peer("xmpp-recv", host="127.0.0.1", port=bench.prosody.c2sPort,
                  user="rx", domain=DOMAIN, password="rxpass", expect=count,
                  timeout=limit, idle=idle, bucket=bucketMessages)
        rx.ready()
        load = Peer("sip-load", proto=args.proto, host="127.0.0.1",
                    port=bench.sipPort,
                    target="sip:rx*%s@127.0.0.1" % (DOMAIN,), rate=args.rate,
                    count=count, users=args.users, drain=idle + 2)
        loadStart = time.monotonic()
        nextSample = loadStart + args.interval
        while (load.process.poll() is None
               and time.monotonic() - loadStart < limit):
            time.sleep(min(0.5, max(0.0, nextSample - time.monotonic())))
            if time.monotonic() >= nextSample:
                samples.append(sample(bench, t0))
                print("t=%(t)s s rss %(rss_mb)s MB peak %(peak_mb)s MB cpu "
                      "%(cpu_s)s s" % samples[-1], file=sys.stderr)
                nextSample += args.interval
        sent = load.result(60)
        got = rx.result(limit)
        samples.append(sample(bench, t0))
    finally:
        bench.stop()
    delivered = got["received"]
    results.update({
        "offered_rate": sent.get("offered_rate"),
        "send_seconds": sent.get("send_seconds"),
        "answers": sent.get("answers"),
        "send_errors": sent.get("send_errors"),
        "delivered": delivered,
        "lost": count - delivered,
        "duplicates": got.get("duplicates", 0),
        "error_stanzas": got.get("error_stanzas", 0),
        "p50_ms": got.get("p50_ms"),
        "p99_ms": got.get("p99_ms"),
        "max_ms": got.get("max_ms"),
        "samples": samples,
    })
    # Memory: idle (before the load), and the samples nearest to the start,
    # middle and end of the load.
    during = samples[1:-1] or samples
    results["rss_idle_mb"] = samples[0]["rss_mb"]
    results["rss_idle_anon_mb"] = samples[0]["anon_mb"]
    results["rss_idle_file_mb"] = samples[0]["file_mb"]
    results["rss_start_mb"] = during[0]["rss_mb"]
    results["rss_middle_mb"] = during[len(during) // 2]["rss_mb"]
    results["rss_end_mb"] = during[-1]["rss_mb"]
    results["rss_after_mb"] = samples[-1]["rss_mb"]
    results["peak_rss_mb"] = samples[-1]["peak_mb"]
    results["rss_growth_middle_to_end_mb"] = round(
        results["rss_end_mb"] - results["rss_middle_mb"], 1)
    results["gateway_cpu_us_per_msg"] = round(
        (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / count * 1e6, 1)
    # Drift: latency per bucket of the send schedule.
    drift = []
    for b in got.get("buckets", []):
        expected = min(bucketMessages, count - b["index"] * bucketMessages)
        drift.append({
            "from_s": round(b["index"] * args.bucket, 1),
            "to_s": round(min(args.duration,
                              (b["index"] + 1) * args.bucket), 1),
            "sent": expected,
            "received": b["received"],
            "p50_ms": b.get("p50_ms"),
            "p99_ms": b.get("p99_ms"),
            "max_ms": b.get("max_ms"),
        })
    results["latency_per_bucket"] = drift
    print("sent %d, delivered %d, lost %d; rss idle %s, start %s, middle %s, "
          "end %s MB; p50 %s p99 %s ms"
          % (count, delivered, count - delivered, results["rss_idle_mb"],
             results["rss_start_mb"], results["rss_middle_mb"],
             results["rss_end_mb"], results["p50_ms"], results["p99_ms"]),
          file=sys.stderr)
    emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
