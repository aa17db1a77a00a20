"""
Benchmark 3: scale and memory, in one process (the set-up of
L{bench.inprocess}: real parser, transaction layer, router, component link;
fake sockets; a clock the benchmark drives).

  - B{held}: the XMPP link is down and C{hold_limit} is raised to C{--held}
    (default 10,000): that many SIP MESSAGEs are received and held. Reports
    the cost per message for the first and the last 10 % and for each
    tenth (nothing per message may grow with the queue), the memory per
    held message
    (L{tracemalloc}, and this process's RSS with them held and its
    growth), and then, with the link back up, the cost per message of
    relaying them all. Before the timed run, C{--held-warmup} messages
    (default 6,000) go the same way, held and then relayed, so that what
    the first tenth measures is holding, not PyPy's JIT compiling the
    path (round 27).
  - B{flat}: SIP -> XMPP and XMPP -> SIP alternately for C{--duration}
    seconds of real time at full speed, 10,000 distinct addresses, the
    clock advancing C{1/--rate} per message; RSS is sampled every second.
    Reports the first, last and highest RSS and the count of messages: the
    memory must level off once Timer J/K and the bounded caches are full.

Cost per message against 1, 100 and 10,000 distinct addresses is in
L{bench.inprocess}; against 1, 100 and 1,000 S2S peer domains in
L{bench.s2s}.

Usage::

    .venv/bin/python -m bench.scale [--held N] [--duration S] [--json FILE]
"""

import argparse
import gc
import os
import statistics
import sys
import time

try:
    import tracemalloc
except ImportError:  # PyPy: the held messages' memory is the RSS growth only
    tracemalloc = None

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from bench.common import emit, memoryKB, resultsHeader
from bench.inprocess import (
    PEER, Gateway, Runner, SinkTransport, sipMessage)


def linkDown(gateway):
    """
    The component link of C{gateway} goes down: what arrives from SIP is
    held from now on.
    """
    gateway.xs.connectionLost(Failure(ConnectionDone("bench: link down")))
    if gateway.link.isAuthenticated:
        raise RuntimeError("the link is still up")


def linkUp(gateway):
    """
    The component link of C{gateway} comes back through the real handshake
    (the held messages start to go), on a new L{SinkTransport} whose server
    routes the confirmation pings back at once.

    @return: the new transport.
    """
    transport = SinkTransport()
    gateway.xs = gateway.link.factory.buildProtocol(None)
    gateway.xs.makeConnection(transport)
    gateway.xs.dataReceived(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
        b"xmlns:stream='http://etherx.jabber.org/streams' "
        b"from='gw.xmpp.test' id='bench2'>")
    transport.echo = gateway.xs.dataReceived
    gateway.xs.dataReceived(b"<handshake/>")
    return transport


def release(gateway, count, answered):
    """
    Run reactor turns until C{count} held messages more than C{answered}
    were answered: each turn ends with the link's ping for what it wrote,
    whose answer lets the next window of held messages go (at most
    C{windowLimit} unconfirmed at once). Bounded; checks that every held
    message was relayed and answered with a 202.
    """
    for _ in range(1000):
        if gateway.udp.count - answered >= count:
            break
        gateway.clock.advance(0)
    if (gateway.udp.count - answered != count
            or gateway.router.queueDepths()["sipHeld"]):
        raise RuntimeError("not every held message was relayed")
    if not gateway.udp.last.startswith(b"SIP/2.0 202"):
        raise RuntimeError("unexpected answer %r" % (gateway.udp.last[:30],))


def hold(gateway, messages):
    """
    C{messages} (SIP MESSAGE bytes) into the gateway while its link is
    down; each must be held, none answered.

    @return: the nanoseconds each took.
    """
    receive = gateway.sipProtocol.datagramReceived
    answered = gateway.udp.count
    held = gateway.router.queueDepths()["sipHeld"]
    times = []
    perf = time.perf_counter_ns
    for data in messages:
        a = perf()
        receive(data, PEER)
        times.append(perf() - a)
    if gateway.udp.count != answered:
        raise RuntimeError("held messages were answered while the link was "
                           "down (%d)" % (gateway.udp.count - answered,))
    waiting = gateway.router.queueDepths()["sipHeld"] - held
    if waiting != len(messages):
        raise RuntimeError("%d held, expected %d" % (waiting, len(messages)))
    return times


def held(args):
    gateway = Gateway(logMessages=False)
    settings = gateway.router.settings
    gateway.router.settings = type(settings)(
        **{**settings.__dict__, "holdLimit": args.held})
    # A warm-up through the whole path with the link up, then through
    # holding and relaying; then the link goes down for the timed run. The
    # warm-up's held messages have other Call-IDs and other users (from
    # 10,000 on) than the timed run's, so that no part of the timed run
    # finds its addresses in the memos because of it.
    Runner(gateway, 0.001).sipToXMPP(2000, 100)
    # At most what the hold limit lets the link-down gateway hold.
    warmup = min(args.held_warmup, args.held)
    if warmup:
        linkDown(gateway)
        answered = gateway.udp.count
        hold(gateway, [sipMessage(2 * 10**6 + i, 10000, first=10000)
                       for i in range(warmup)])
        linkUp(gateway)
        release(gateway, warmup, answered)
    # The warm-up's completed transactions expire (Timer J, 64*T1), as in
    # a gateway that relayed them a minute ago: what the timed run holds
    # is then its own (round 27).
    gateway.clock.advance(64 * gateway.transactions.t1 + 1)
    if gateway.transactions._servers or gateway.transactions._clients:
        raise RuntimeError("transactions left after Timer J: %d, %d" % (
            len(gateway.transactions._servers),
            len(gateway.transactions._clients)))
    linkDown(gateway)
    messages = [sipMessage(10**6 + i, 10000) for i in range(args.held)]
    answered = gateway.udp.count
    gc.collect()
    rss0 = memoryKB(os.getpid())[0]
    times = hold(gateway, messages)
    gc.collect()
    rss1 = memoryKB(os.getpid())[0]
    current, base = tracedHeld(args) if tracemalloc is not None else (None, None)
    # The link comes back: every held message is relayed and answered.
    c = time.process_time()
    a = time.perf_counter_ns()
    transport = linkUp(gateway)
    release(gateway, args.held, answered)
    elapsed = time.perf_counter_ns() - a
    releaseCPU = time.process_time() - c
    n = args.held
    tenth = max(1, n // 10)
    parts = [times[i:i + tenth] for i in range(0, tenth * 10, tenth)]
    tenths = [round(sum(p) / len(p) / 1000, 2) for p in parts if p]
    medians = [round(statistics.median(p) / 1000, 2) for p in parts if p]
    return {
        "held": n,
        "warmup_held": warmup,
        "first_10pct_us_per_msg": tenths[0],
        "last_10pct_us_per_msg": round(
            sum(times[-tenth:]) / tenth / 1000, 2),
        "tenths_us_per_msg": tenths,
        # The median message of each tenth: what every message costs,
        # without the collector's and the tables' occasional work that the
        # means spread over all of them.
        "tenths_median_us": medians,
        "traced_bytes_per_held_msg": (
            None if current is None else round((current - base) / n)),
        "traced_mb_total": (
            None if current is None else round((current - base) / 2**20, 1)),
        "rss_growth_mb": round((rss1 - rss0) / 1024, 1),
        # The whole process with the messages held: the gateway, and the
        # benchmark's own copies of the requests (about 5 MB), so a little
        # over what a gateway would hold.
        "rss_mb": round(rss1 / 1024, 1),
        "release_us_per_msg": round(elapsed / n / 1000, 2),
        "release_cpu_us_per_msg": round(releaseCPU / n * 1e6, 2),
        "release_stanzas": transport.count,
    }


def tracedHeld(args):
    """
    The memory the held messages take, by L{tracemalloc} (a second gateway:
    tracing slows everything down, so the timed run is not traced).

    @return: C{(traced bytes with the messages held, before)}.
    """
    gateway = Gateway(logMessages=False)
    settings = gateway.router.settings
    gateway.router.settings = type(settings)(
        **{**settings.__dict__, "holdLimit": args.held})
    Runner(gateway, 0.001).sipToXMPP(2000, 100)
    linkDown(gateway)
    messages = [sipMessage(10**6 + i, 10000) for i in range(args.held)]
    receive = gateway.sipProtocol.datagramReceived
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for data in messages:
        receive(data, PEER)
    gc.collect()
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return current, base


def flat(args):
    gateway = Gateway(logMessages=False)
    runner = Runner(gateway, 1.0 / args.rate)
    samples = []
    start = time.monotonic()
    nextSample = start
    messages = 0
    batch = 500
    while time.monotonic() - start < args.duration:
        runner.sipToXMPP(batch, 10000)
        runner.xmppToSIP(batch, 10000)
        messages += 2 * batch
        now = time.monotonic()
        if now >= nextSample:
            samples.append((round(now - start, 1),
                            round(memoryKB(os.getpid())[0] / 1024, 1)))
            nextSample = now + 1.0
    rss = [r for _, r in samples]
    return {
        "seconds": args.duration,
        "messages": messages,
        "simulated_seconds": round(messages / args.rate, 1),
        "rss_first_mb": rss[0],
        "rss_at_half_mb": rss[len(rss) // 2],
        "rss_last_mb": rss[-1],
        "rss_max_mb": max(rss),
        "server_transactions": len(gateway.transactions._servers),
        "client_transactions": len(gateway.transactions._clients),
        "pending_timers": len(gateway.clock.getDelayedCalls()),
        "samples": samples,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held", type=int, default=10000,
                        help="messages held while the link is down")
    parser.add_argument("--held-warmup", type=int, default=6000,
                        help="messages held and relayed before the timed "
                        "held run (default 6,000, at most 10,000; 0: none)")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of the flat-memory run (default 60)")
    parser.add_argument("--rate", type=float, default=4000.0,
                        help="simulated messages per second in the flat "
                        "run (default 4000)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if (not 0 < args.held <= 10**6 or not 0 < args.duration <= 3600
            or not 0 <= args.held_warmup <= 10000):
        parser.error("--held in (0, 1e6], --held-warmup in [0, 10000], "
                     "--duration in (0, 3600]")
    results = {
        **resultsHeader("scale", argv),
        "held": held(args),
    }
    print("held: %r" % (results["held"],), file=sys.stderr)
    results["flat"] = flat(args)
    print("flat: %r" % ({k: v for k, v in results["flat"].items()
                         if k != "samples"},), file=sys.stderr)
    emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
