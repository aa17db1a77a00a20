"""
Benchmark 1: the gateway's per-message cost in one process, no network.

The real objects are wired as C{twistd xmppgw} wires them (L{SIPTransport},
L{TransactionLayer}, L{MessageRouter}, L{ComponentLink} with its
L{GatewayHandler}), but the sockets are fakes:

  - SIP -> XMPP: the bytes of a SIP MESSAGE go into the UDP listener's
    C{datagramReceived}; the benchmark checks that the stanza bytes were
    written to the (fake) component link and the 202 to the (fake) UDP
    socket.
  - XMPP -> SIP: the bytes of a C{<message/>} go into the component link's
    C{XmlStream.dataReceived} (the real expat parser and dispatcher); the
    SIP MESSAGE bytes come out of the fake UDP socket; the benchmark then
    builds a C{200 OK} for it (not timed) and feeds it back in (timed), which
    completes the client transaction and the router's bookkeeping.

Time runs on a private reactor whose clock the benchmark advances by
C{1/rate} seconds per message (default 1 ms, i.e. 1,000 messages per
simulated second), firing due timers inside the timed region: Timer J keeps
every UDP server transaction for 32 s and Timer K every client transaction
for 5 s, as in production, so their cost (and the memory they hold) is in
the numbers.

Reported per direction and per number of distinct addresses (1, 100,
10,000 senders and recipients; with 10,000 the memos of the URI and JID
parsers, 1,024 and 2,048 entries, miss on every message, so that case is
the "cold" one; the address mapper's, 16,384, do not). Each case has a
gateway of its own, and the timed runs of a direction's cases are
interleaved (L{measureCases}), so that a slower spell of the machine
slows them alike:

  - µs per message: the median over C{--runs} runs of the mean over
    C{--count} messages, with the 10th and 90th percentile of those run
    means, and the p50/p99 of single-message times. The timed parts are
    measured with the wall clock; the CPU figure (C{cpu_median_us}, the
    one the issue's targets are read on) is that times the share of the
    run the process spent on a CPU (L{bench.common.cpuPerMessage});
  - the cost of the benchmark's own loop, per direction (C{harness}): the
    same runs on a L{NullGateway}, which does nothing; it is part of
    every figure of the direction;
  - memory per message from L{tracemalloc}: bytes still allocated per
    message after a batch (what the live transactions hold until Timer J/K)
    and the peak; plus the count of live blocks per message;
  - on PyPy (no C{tracemalloc}) instead the bytes allocated per message
    during the timed runs, from the collector's minor collections
    (L{YoungAllocations}: C{young_bytes_per_msg}, C{minor_collections}),
    and the collector's own time per message in those runs: its minor
    collections and the steps of its major ones (C{gc_minor_us},
    C{gc_major_us}, C{major_steps}).

Usage::

    .venv/bin/python -m bench.inprocess [--count N] [--runs R] [--json FILE]
        [--metrics off|on|both]

C{--metrics both} measures every case with metrics off (the
L{NullRecorder} the router has without C{[metrics] listen}) and on (a
L{MetricsRecorder} attached to the router and the link, as
L{xmppgw.metrics.buildOperations} attaches it), on two gateways whose timed
runs are interleaved with each other's and the other cases', and reports
the ratio (issue 6: counters cheap enough to leave on).
"""

import argparse
import gc
import os
import re
import platform
import sys
import time
from types import SimpleNamespace

try:
    import tracemalloc
except ImportError:  # PyPy has no tracemalloc: --no-memory is implied
    tracemalloc = None

from twisted.internet.selectreactor import SelectReactor
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogBeginner

from bench.common import (
    cpuPerMessage, emit, interleaved, percentile, resultsHeader)
from xmppgw import gctune
from xmppgw.logs import FLUSH_INTERVAL, textObserver
from xmppgw.addressing import AddressMapper
from xmppgw.config import parseConfig
from xmppgw.metrics import MetricsRecorder
from xmppgw.policy import Policy
from xmppgw.router import GatewayHandler, MessageRouter, RouterSettings
from xmppgw.sip.transaction import Target, TransactionLayer
from xmppgw.sip.transport import SIPTransport
from xmppgw.xmpp.component import ComponentLink

XMPP_DOMAIN = "gw.xmpp.test"
GATEWAY_DOMAIN = "127.0.0.1"
PROXY = ("127.0.0.1", 5070)
PEER = ("127.0.0.1", 5080)


class LogClock:
    """
    The clock of the log observer's flush timer (L{benchLogObserver}): the
    clock of the gateway being measured (the last L{BenchClock} made, or
    the one L{Runner} runs), as twistd gives the observer the gateway's
    reactor.
    """

    current = None
    #: The observer of L{benchLogObserver}, if made.
    observer = None

    def use(self, clock):
        """
        Follow C{clock} from now on. A flush timer armed on the previous
        clock is disarmed and its lines flushed (that clock may never move
        again).
        """
        if clock is not self.current:
            if self.observer is not None:
                self.observer.flusher.flush()
            self.current = clock

    def callLater(self, delay, f, *args, **kwargs):
        return self.current.callLater(delay, f, *args, **kwargs)


LOG_CLOCK = LogClock()


def benchLogObserver(outFile):
    """
    The log observer C{twistd xmppgw} installs for C{[log] format = "text"}
    with the default C{flush_interval}, on C{outFile}, its timer on
    L{LOG_CLOCK}.
    """
    LOG_CLOCK.observer = textObserver(outFile, FLUSH_INTERVAL, LOG_CLOCK)
    return LOG_CLOCK.observer


class BenchClock(SelectReactor):
    """
    A reactor that is never run: its timers use Twisted's own heap, but its
    time is set by the benchmark.
    """

    now = 1000.0

    def __init__(self):
        SelectReactor.__init__(self)
        LOG_CLOCK.use(self)

    def seconds(self):
        return self.now

    def advance(self, dt):
        self.now += dt
        self.runUntilCurrent()


class FakeUDP:
    """
    The transport of the UDP listener: keeps the last datagram written.
    """

    def __init__(self):
        self.count = 0
        self.last = None
        self.lastAddress = None

    def write(self, data, addr=None):
        self.count += 1
        self.last = data
        self.lastAddress = addr

    def getHost(self):
        return None


class SinkTransport(StringTransport):
    """
    The component link's TCP transport: counts and keeps the last write.
    """

    def __init__(self):
        StringTransport.__init__(self)
        self.count = 0
        self.last = None
        self.pings = 0
        #: Set to the stream's C{dataReceived}: the server routes the
        #: link's confirmation pings back at once (not counted in C{count}).
        self.echo = None

    def write(self, data):
        if data.startswith(b"<iq type='get' id='xmppgw-confirm-"):
            self.pings += 1
            if self.echo is not None:
                self.echo(data)
            return
        self.count += 1
        self.last = data


def benchPolicy(clock):
    """
    The L{Policy} C{twistd xmppgw} builds (C{Policy.fromConfig}) for the
    benchmark's configuration, with the rate limits of C{[policy]} off as
    in benchmark 2 (C{bench.endtoend}): the default C{allow_from}
    (loopback), the sender checks, the per-source and per-sender limiters
    consulted on every message.
    """
    config = parseConfig({
        "xmpp": {"gateway_domain": GATEWAY_DOMAIN,
                 "xmpp_domain": XMPP_DOMAIN, "xmpp_password": "secret"},
        "policy": {"rate_per_source": 0.0, "rate_per_sender": 0.0},
    }, "<bench.inprocess>")
    return Policy.fromConfig(config, clock)


def wireFakeSIP(gateway, policy=None):
    """
    Give C{gateway} (which has a C{clock}) the real SIP side on a fake UDP
    socket: C{sip}, C{udp}, C{sipProtocol} and C{transactions}.

    @param policy: the L{Policy} that checks the sources (C{allowFrom}), or
        L{None} for none.
    """
    gateway.sip = SIPTransport(
        [("udp", "127.0.0.1", 5060)], maxMessageSize=65535,
        reactor=gateway.clock, allowFrom=policy)
    gateway.udp = FakeUDP()
    gateway.sipProtocol = gateway.sip._listeners[0].protocol
    gateway.sipProtocol.transport = gateway.udp
    gateway.sip._udp.append(gateway.sipProtocol)
    gateway.transactions = TransactionLayer(gateway.clock, gateway.sip, t1=0.5)
    gateway.sip.receiver = gateway.transactions


class Gateway:
    """
    A gateway wired as C{xmppgw.tap.buildGateway} wires it, on fakes.
    """

    def __init__(self, logMessages, freeze=True, metrics=False,
                 confirm="ping", policy=True):
        self.clock = BenchClock()
        #: The L{Policy} (as twistd builds it; see L{benchPolicy}), or
        #: L{None} without one (C{--no-policy}, as before round 6).
        self.policy = benchPolicy(self.clock) if policy else None
        wireFakeSIP(self, self.policy)
        self.link = ComponentLink(
            "127.0.0.1", 5347, XMPP_DOMAIN, "secret", reactor=self.clock,
            keepAliveInterval=0, confirmDelivery=confirm)
        mapper = AddressMapper("*", GATEWAY_DOMAIN, XMPP_DOMAIN, {})
        settings = RouterSettings(
            xmppDomain=XMPP_DOMAIN, outboundProxy=Target("udp", *PROXY),
            logMessages=logMessages)
        self.router = MessageRouter(
            self.clock, mapper, self.transactions, self.link, settings)
        self.router.policy = self.policy
        GatewayHandler(self.router, XMPP_DOMAIN).setHandlerParent(self.link)
        #: The recorder, wired as L{xmppgw.metrics.buildOperations} wires
        #: it: a L{MetricsRecorder} (its own Prometheus registry) when
        #: C{metrics}, else the router's default L{NullRecorder}.
        self.recorder = self.router.metrics
        if metrics:
            self.recorder = MetricsRecorder()
            self.router.metrics = self.recorder
            self.recorder.watchRouter(self.router)
            self.recorder.watchLink(self.link)
        # Bring the component link up through the real handshake path.
        self.xmppTransport = SinkTransport()
        self.xs = self.link.factory.buildProtocol(None)
        self.xs.makeConnection(self.xmppTransport)
        self.xs.dataReceived(
            b"<?xml version='1.0'?><stream:stream "
            b"xmlns='jabber:component:accept' "
            b"xmlns:stream='http://etherx.jabber.org/streams' "
            b"from='" + XMPP_DOMAIN.encode() + b"' id='bench1'>")
        self.xs.dataReceived(b"<handshake/>")
        if not self.link.isAuthenticated:
            raise RuntimeError("the component link did not come up")
        self.xmppTransport.echo = self.xs.dataReceived
        if freeze:
            # What FrozenStartupService does when twistd starts the gateway.
            gctune.freezeStartupObjects()


class NullGateway:
    """
    A gateway that does nothing, with the attributes L{Runner} uses: what
    the benchmark measures with it is the cost of its own loop and clocks
    (L{measureHarness}). The "gateway" answers each stanza with one SIP
    request (a fixed MESSAGE, so that L{okFor} has its usual work, not
    timed) and counts each C{200} as a relayed message; each SIP request in
    is answered and forwarded, as far as the counts go.
    """

    def __init__(self):
        self.clock = SimpleNamespace(advance=lambda dt: None)
        self.udp = FakeUDP()
        self.xmppTransport = SimpleNamespace(count=0)
        self.router = SimpleNamespace(stats={"xmpp.relayed": 0}, _queues={})
        self.xs = SimpleNamespace(dataReceived=self._stanza)
        self.sipProtocol = SimpleNamespace(datagramReceived=self._datagram)
        self._request = NULL_REQUEST

    def _stanza(self, data):
        # One read holds a turn's stanzas (--batch): one request each.
        for _ in range(data.count(b"<message ")):
            self.udp.write(self._request, PROXY)

    def _datagram(self, data, addr):
        if data.startswith(b"SIP/2.0 200 "):
            self.router.stats["xmpp.relayed"] += 1
        else:
            self.xmppTransport.count += 1
            self.udp.write(b"SIP/2.0 202 Accepted\r\n\r\n", addr)


#: The SIP request L{NullGateway} sends for each stanza: the gateway's
#: MESSAGE for C{xmppMessage(0, 1)}, its random branch, tag and Call-ID
#: fixed (C{HarnessTests.test_nullRequestShaped} compares the two), so
#: that L{okFor} does for it what it does for the gateway's.
NULL_REQUEST = (
    b"MESSAGE sip:bob0@sip0.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK0123456789abcdef01234567"
    b";rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:bob0@sip0.example.com>\r\n"
    b"From: <sip:user0*xmpp.test@127.0.0.1;gr=phone>;tag=0123456789ab\r\n"
    b"Call-ID: 0123456789abcdef0123456789abcdef\r\n"
    b"CSeq: 1 MESSAGE\r\n"
    b"Content-Type: text/plain;charset=UTF-8\r\n"
    b"Content-Length: 26\r\n"
    b"\r\n"
    b"Hello from XMPP, message 0")


def sipMessage(i, distinct, first=0):
    """
    The bytes of a SIP MESSAGE from SIP user C{first + i % distinct} to XMPP
    user C{first + i % distinct}, as a SIP proxy would send it.
    """
    n = first + i % distinct
    branch = "z9hG4bK-%d-%x" % (i, id(sipMessage))
    body = b"Hello from SIP, message %d" % (i,)
    return (
        "MESSAGE sip:user%d*xmpp.test@%s SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=%s;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice%d@sip%d.example.com>;tag=t%d\r\n"
        "To: <sip:user%d*xmpp.test@%s>\r\n"
        "Call-ID: c%d@127.0.0.1\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Type: text/plain;charset=UTF-8\r\n"
        "Content-Length: %d\r\n"
        "\r\n" % (n, GATEWAY_DOMAIN, branch, n, n % 1000, i, n,
                  GATEWAY_DOMAIN, i, len(body))
    ).encode() + body


def xmppMessage(i, distinct):
    """
    The bytes of a C{<message/>} from XMPP user C{i % distinct} to SIP user
    C{i % distinct}, as Prosody writes it on the component stream.
    """
    n = i % distinct
    return (
        "<message xmlns='jabber:component:accept' type='chat' "
        "to='bob%d*sip%d.example.com@%s' from='user%d@xmpp.test/phone' "
        "id='m%d'><body>Hello from XMPP, message %d</body></message>"
        % (n, n % 1000, XMPP_DOMAIN, n, i, i)
    ).encode()


_COPY = re.compile(rb"^(?:Via|From|To|Call-ID|CSeq):[^\r\n]*", re.M)


def okFor(request):
    """
    A C{200 OK} for the SIP request bytes C{request} (built by the
    benchmark's "SIP peer"; not timed).
    """
    head = request.split(b"\r\n\r\n", 1)[0]
    lines = [b"SIP/2.0 200 OK"]
    for match in _COPY.finditer(head):
        line = match.group(0)
        if line.startswith(b"To:"):
            line += b";tag=peer"
        lines.append(line)
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Runner:
    """
    Runs one direction on one gateway and checks every message went through.
    """

    def __init__(self, gateway, step, batch=1,
                 wallClock=time.perf_counter_ns, cpuClock=time.process_time):
        self.g = gateway
        self.step = step
        #: Messages handled per reactor turn (the clock advances, and due
        #: timers and the link's end-of-turn work run, after each batch).
        self.batch = batch
        self.i = 0
        #: The clocks: wall time in ns around each timed part (cheap, read
        #: from the vDSO), the process's CPU time in seconds once at each
        #: end of a run (a system call: see L{cpuPerMessage}).
        self.wallClock = wallClock
        self.cpuClock = cpuClock

    def sipToXMPP(self, count, distinct, timings=None):
        g = self.g
        LOG_CLOCK.use(g.clock)
        receive = g.sipProtocol.datagramReceived
        advance = g.clock.advance
        step = self.step
        messages = [sipMessage(self.i + k, distinct) for k in range(count)]
        self.i += count
        batch = self.batch
        turns = [messages[k:k + batch] for k in range(0, count, batch)]
        udpBefore, xmppBefore = g.udp.count, g.xmppTransport.count
        perf = self.wallClock
        cpu0 = self.cpuClock()
        t0 = perf()
        if timings is None:
            for turn in turns:
                for data in turn:
                    receive(data, PEER)
                advance(step * len(turn))
            elapsed = perf() - t0
            timed = elapsed
        else:
            timed = 0
            for turn in turns:
                a = perf()
                for data in turn:
                    receive(data, PEER)
                advance(step * len(turn))
                spent = perf() - a
                timed += spent
                each = spent / len(turn)
                timings.extend([each] * len(turn))
            elapsed = perf() - t0
        cpu = self.cpuClock() - cpu0
        if (g.udp.count - udpBefore != count
                or g.xmppTransport.count - xmppBefore != count):
            raise RuntimeError(
                "SIP->XMPP: %d messages in, %d stanzas and %d responses out"
                % (count, g.xmppTransport.count - xmppBefore,
                   g.udp.count - udpBefore))
        if not g.udp.last.startswith(b"SIP/2.0 202 "):
            raise RuntimeError("unexpected answer %r" % (g.udp.last[:40],))
        return timed / count / 1000.0, cpuPerMessage(timed, count, cpu, elapsed)

    def xmppToSIP(self, count, distinct, timings=None):
        g = self.g
        LOG_CLOCK.use(g.clock)
        parse = g.xs.dataReceived
        receive = g.sipProtocol.datagramReceived
        advance = g.clock.advance
        udp = g.udp
        step = self.step
        stanzas = [xmppMessage(self.i + k, distinct) for k in range(count)]
        self.i += count
        batch = self.batch
        # One read from the server's socket per turn: the batch's stanzas
        # arrive as one chunk.
        turns = [(b"".join(stanzas[k:k + batch]), len(stanzas[k:k + batch]))
                 for k in range(0, count, batch)]
        relayed = g.router.stats.get("xmpp.relayed", 0)
        perf = self.wallClock
        timed = 0
        sent = []
        udp.write = lambda data, addr=None, write=udp.write: (
            sent.append(data), write(data, addr))
        cpu0 = self.cpuClock()
        t0 = perf()
        try:
            for data, n in turns:
                del sent[:]
                a = perf()
                parse(data)
                spent = perf() - a
                answered = 0
                # One MESSAGE in flight per destination: the 200s release
                # the queued ones (bounded: one round per stanza at most).
                for _ in range(n):
                    if not sent:
                        break
                    oks = [okFor(request) for request in sent]
                    del sent[:]
                    d = perf()
                    for ok in oks:
                        receive(ok, PROXY)
                    spent += perf() - d
                    answered += len(oks)
                if answered != n or sent:
                    raise RuntimeError(
                        "XMPP->SIP: %d SIP requests answered for %d stanzas"
                        % (answered, n))
                d = perf()
                advance(step * n)
                spent += perf() - d
                timed += spent
                if timings is not None:
                    timings.extend([spent / n] * n)
            elapsed = perf() - t0
            cpu = self.cpuClock() - cpu0
        finally:
            del udp.write
        if g.router.stats.get("xmpp.relayed", 0) - relayed != count:
            raise RuntimeError("XMPP->SIP: not every message got its 200")
        if g.router._queues:
            raise RuntimeError("XMPP->SIP: router queues not empty")
        return timed / count / 1000.0, cpuPerMessage(timed, count, cpu, elapsed)


def warmupRuns(asked, count, distincts):
    """
    How many untimed runs come before the timed ones: C{asked} (C{--warmup}),
    or more if a case has more addresses than C{asked} runs of C{count}
    messages would go through (each message of a run is from and to the
    next address of its case, in turn).

    @param distincts: the cases' numbers of distinct addresses.
    """
    return max(asked, -(-max(distincts) // count))


def measureCases(direction, cases, args):
    """
    The cases C{cases} of C{direction}, each C{(distinct, metrics)} on a
    gateway of its own in this process, their timed runs interleaved
    (L{bench.common.interleaved}). A change in the machine's speed, which on
    this shared VM lasts seconds to minutes, then hits every case alike
    instead of the one that was running (round 23 in
    docs/performance.rst: one case of a run once came out twice as slow as
    the others, in a run of sequential cases).

    @param cases: a list of C{(distinct, metrics)}: the number of distinct
        addresses, and whether the gateway has a L{MetricsRecorder}.
    @return: a list of dicts (C{median_us}, C{cpu_median_us}, ...), in the
        order of C{cases}.
    """
    gateways = [Gateway(logMessages=args.log, freeze=args.freeze,
                        metrics=metrics, confirm=args.confirm,
                        policy=args.policy) for _, metrics in cases]
    runners = [Runner(g, 1.0 / args.rate, args.batch) for g in gateways]
    runs = [getattr(r, direction) for r in runners]
    distincts = [distinct for distinct, _ in cases]
    # Warm up: imports, the memos (every case sends from and to each of
    # its addresses once at least, so that the timed runs measure the
    # steady state, not the first sight of an address: round 28), the
    # timer heap (and PyPy's JIT).
    for _ in range(warmupRuns(args.warmup, args.count, distincts)):
        for run, distinct in zip(runs, distincts):
            run(args.count, distinct)
    samples = [([], [], [], YoungAllocations()) for _ in cases]
    for v in interleaved(args.runs, len(cases)):
        means, cpus, singles, young = samples[v]
        with young:
            wall, cpu = runs[v](args.count, distincts[v], singles)
        means.append(wall)
        cpus.append(cpu)
    out = []
    for gateway, runner, (means, cpus, singles, young) in zip(
            gateways, runners, samples):
        checkRecorded(gateway, direction, runner.i)
        summary = _summary(gateway, means, cpus, singles)
        summary.update(young.perMessage(args.runs * args.count))
        out.append(summary)
    return out


def measureHarness(direction, args):
    """
    What the benchmark's own loop costs per message in C{direction}: the
    same runs as L{measureCases} (its warm-up, C{--runs} of C{--count}) on a
    L{NullGateway}. Part of every figure of the direction, gateway's
    work aside; reported beside them so that the share is known.

    @return: C{{"harness_median_us": ..., "harness_cpu_median_us": ...}}.
    """
    runner = Runner(NullGateway(), 1.0 / args.rate, args.batch)
    run = getattr(runner, direction)
    for _ in range(args.warmup):
        run(args.count, 1)
    means, cpus = [], []
    for _ in range(args.runs):
        wall, cpu = run(args.count, 1, [])
        means.append(wall)
        cpus.append(cpu)
    return {"harness_median_us": round(percentile(means, 0.5), 3),
            "harness_cpu_median_us": round(percentile(cpus, 0.5), 3)}


class YoungAllocations:
    """
    On PyPy (which has no C{tracemalloc}), what the code run inside
    C{with} allocated, from the minor collections of PyPy's collector
    (C{gc.hooks}): each one empties a full nursery, so collections times
    the nursery size, per message, is what one message allocated (to
    within one nursery over the whole run). Elsewhere it measures nothing.

    It also adds up the time the collector reported (the hooks'
    C{duration}, in seconds): the minor collections, and the steps of the
    major collections (C{on_gc_collect_step}). That is the collector's
    share of the run, the loop's own untimed work included (building the
    messages, L{okFor}); PyPy calls the hooks at its next check for
    pending actions, so a collection at the very end of a run may be
    counted in the next one or not at all.

    @param hooks: PyPy's C{gc.hooks} (for tests: a fake); L{None} where
        there is none.
    @param nurserySize: the nursery in bytes (default:
        L{xmppgw.gctune.nurserySize}).
    """

    def __init__(self, hooks=getattr(gc, "hooks", None), nurserySize=None):
        self.hooks = hooks
        self.nurserySize = (nurserySize if nurserySize is not None
                            else gctune.nurserySize() if hooks is not None
                            else None)
        self.collections = 0
        self.minorSeconds = 0.0
        self.majorSteps = 0
        self.majorSeconds = 0.0
        self._previous = None

    def _onMinor(self, stats):
        self.collections += stats.count
        self.minorSeconds += stats.duration

    def _onStep(self, stats):
        self.majorSteps += stats.count
        self.majorSeconds += stats.duration

    def __enter__(self):
        if self.hooks is not None:
            self._previous = (self.hooks.on_gc_minor,
                              self.hooks.on_gc_collect_step)
            self.hooks.on_gc_minor = self._onMinor
            self.hooks.on_gc_collect_step = self._onStep
        return self

    def __exit__(self, *exc):
        if self.hooks is not None:
            (self.hooks.on_gc_minor,
             self.hooks.on_gc_collect_step) = self._previous
        return False

    def perMessage(self, messages):
        """
        The fields for the results over C{messages} messages:
        C{minor_collections}, C{young_bytes_per_msg}, C{major_steps}, and
        the collector's time per message in µs, C{gc_minor_us} and
        C{gc_major_us}; nothing without C{gc.hooks}.
        """
        if self.hooks is None:
            return {}
        result = {"minor_collections": self.collections,
                  "young_bytes_per_msg": None,
                  "major_steps": self.majorSteps,
                  "gc_minor_us": round(self.minorSeconds * 1e6 / messages, 2),
                  "gc_major_us": round(self.majorSeconds * 1e6 / messages, 2)}
        if self.nurserySize:
            result["young_bytes_per_msg"] = round(
                self.collections * self.nurserySize / messages)
        return result


def _summary(gateway, means, cpus, singles):
    return {
        "median_us": round(percentile(means, 0.5), 2),
        "p10_us": round(percentile(means, 0.1), 2),
        "p90_us": round(percentile(means, 0.9), 2),
        "cpu_median_us": round(percentile(cpus, 0.5), 2),
        "single_p50_us": round(percentile(singles, 0.5) / 1000, 2),
        "single_p99_us": round(percentile(singles, 0.99) / 1000, 2),
        "pending_timers": len(gateway.clock.getDelayedCalls()),
        "server_transactions": len(gateway.transactions._servers),
        "client_transactions": len(gateway.transactions._clients),
    }


def checkRecorded(gateway, direction, total):
    """
    With a L{MetricsRecorder}, check that it counted every relayed message
    (so that the "metrics on" figures include the work of recording).
    """
    recorder = gateway.recorder
    if not recorder.enabled:
        return
    origin = "sip" if direction == "sipToXMPP" else "xmpp"
    counted = recorder.registry.get_sample_value(
        "xmppgw_messages_total", {"origin": origin, "outcome": "relayed"})
    latencies = recorder.registry.get_sample_value(
        "xmppgw_relay_latency_seconds_count", {"origin": origin})
    if counted != total or (origin == "xmpp" and latencies != total):
        raise RuntimeError(
            "metrics: %d %s messages relayed, %r counted, %r latencies "
            "observed" % (total, origin, counted, latencies))
    # One scrape, to check the exposition works on this gateway (not timed).
    if b"xmppgw_messages_total" not in recorder.exposition():
        raise RuntimeError("metrics: exposition lacks xmppgw_messages_total")


def measureMemory(direction, distinct, args, metrics=False):
    gateway = Gateway(logMessages=args.log, freeze=args.freeze,
                      metrics=metrics, confirm=args.confirm,
                      policy=args.policy)
    runner = Runner(gateway, 1.0 / args.rate)
    run = getattr(runner, direction)
    run(args.count, distinct)
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    blocks0 = sum(s.count for s in
                  tracemalloc.take_snapshot().statistics("filename"))
    tracemalloc.reset_peak()
    run(args.count, distinct)
    current, peak = tracemalloc.get_traced_memory()
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    blocks1 = sum(s.count for s in
                  tracemalloc.take_snapshot().statistics("filename"))
    tracemalloc.stop()
    n = args.count
    return {
        "retained_bytes_per_msg": round((after - base) / n),
        "retained_blocks_per_msg": round((blocks1 - blocks0) / n, 1),
        "peak_bytes_per_msg": round((peak - base) / n),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000,
                        help="messages per run (default 2000)")
    parser.add_argument("--runs", type=int, default=21,
                        help="timed runs per case (default 21; interleaved "
                        "with the other cases')")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="simulated messages per second: the clock "
                        "advances 1/rate per message (default 1000)")
    parser.add_argument("--distinct", default="1,100,10000",
                        help="numbers of distinct addresses to try")
    parser.add_argument("--no-log", dest="log", action="store_false",
                        help="turn [log] messages off (default: on, "
                        "formatted to a file as twistd does)")
    parser.add_argument("--no-freeze", dest="freeze", action="store_false",
                        help="do not freeze the start-up objects out of the "
                        "garbage collector (twistd xmppgw does)")
    parser.add_argument("--no-policy", dest="policy", action="store_false",
                        help="no [policy] object (allow_from, sender checks, "
                        "rate limiters), as this benchmark ran before round "
                        "6; twistd xmppgw always has one (default: the "
                        "policy twistd builds, rate limits off as in "
                        "benchmark 2)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the tracemalloc pass")
    parser.add_argument("--metrics", choices=("off", "on", "both"),
                        default="off",
                        help="the metrics recorder: off (NullRecorder, as "
                        "without [metrics] listen; the default), on (a "
                        "MetricsRecorder with its Prometheus registry), or "
                        "both, compared in one run with the ratio")
    parser.add_argument("--batch", type=int, default=1,
                        help="messages per reactor turn (default 1: every "
                        "message alone, the worst case for the per-turn "
                        "work such as the confirmation ping; under load "
                        "one turn reads many datagrams)")
    parser.add_argument("--confirm", choices=("ping", "none"),
                        default="ping",
                        help='[xmpp] confirm_delivery: "ping" (the default: '
                        "a ping round trip through the server, answered at "
                        'once by the fake server) or "none" (the 2xx once '
                        "the stanza is written, as the C module does)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed runs before the timed ones (default "
                        "3; 30 on PyPy, whose JIT compiles the hot paths "
                        "after some thousands of messages); more when a "
                        "case has more addresses than these runs send "
                        "messages (every address is seen once before the "
                        "timed runs)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 30 if platform.python_implementation() == "PyPy" else 3
    if tracemalloc is None:
        args.memory = False
    if (args.count < 1 or args.runs < 1 or not 0 < args.rate <= 1e6
            or not 1 <= args.batch <= args.count):
        parser.error("--count, --runs, --rate and --batch must be positive "
                     "(--batch at most --count)")
    logFile = open(os.devnull, "w")
    # The observer twistd xmppgw installs for [log] format = "text".
    globalLogBeginner.beginLoggingTo(
        [benchLogObserver(logFile)], discardBuffer=True,
        redirectStandardIO=False)
    results = {
        **resultsHeader("inprocess", argv),
        "count": args.count,
        "runs": args.runs,
        "simulated_rate": args.rate,
        "batch": args.batch,
        # The untimed runs each case had (--warmup, or more for a case with
        # more addresses than those runs send: warmupRuns).
        "warmup_runs": warmupRuns(
            args.warmup, args.count,
            [int(d) for d in args.distinct.split(",")]),
        "confirm_delivery": args.confirm,
        "log_messages": args.log,
        "gc_freeze": args.freeze,
        "policy": args.policy,
        "metrics": args.metrics,
        "cases": [],
    }
    if args.metrics == "both":
        results["metrics_ratio"] = []
    results["harness"] = []
    variants = [False, True] if args.metrics == "both" else [
        args.metrics == "on"]
    for direction in ("sipToXMPP", "xmppToSIP"):
        # Every case of the direction in one interleaved measure.
        wanted = [(int(d), metrics) for d in args.distinct.split(",")
                  for metrics in variants]
        measured = measureCases(direction, wanted, args)
        byCase = {}
        for (distinct, metrics), timing in zip(wanted, measured):
            case = {"direction": direction, "distinct": distinct,
                    "metrics": metrics}
            case.update(timing)
            if args.memory:
                case.update(measureMemory(direction, distinct, args,
                                          metrics=metrics))
            results["cases"].append(case)
            byCase[distinct, metrics] = case
            young = case.get("young_bytes_per_msg")
            print("%-10s distinct=%-6d metrics %-3s %7.2f us/msg "
                  "(p10 %.2f, p90 %.2f) cpu %.2f us%s%s"
                  % (direction, distinct, "on" if metrics else "off",
                     case["median_us"], case["p10_us"], case["p90_us"],
                     case["cpu_median_us"],
                     "" if young is None
                     else ", allocates %.1f KB" % (young / 1024.0,),
                     "" if "gc_minor_us" not in case
                     else ", collector %.2f + %.2f us (minor + major)"
                     % (case["gc_minor_us"], case["gc_major_us"])),
                  file=sys.stderr)
        if args.metrics == "both":
            for distinct, metrics in wanted:
                if metrics:
                    continue
                off, on = byCase[distinct, False], byCase[distinct, True]
                ratio = {
                    "direction": direction, "distinct": distinct,
                    "cpu_off_us": off["cpu_median_us"],
                    "cpu_on_us": on["cpu_median_us"],
                    "cpu_delta_us": round(
                        on["cpu_median_us"] - off["cpu_median_us"], 2),
                    "cpu_ratio": round(
                        on["cpu_median_us"] / off["cpu_median_us"], 3),
                    "wall_ratio": round(on["median_us"] / off["median_us"], 3),
                }
                results["metrics_ratio"].append(ratio)
                print("%-10s distinct=%-6d metrics on/off: cpu %.3f "
                      "(%+.2f us), wall %.3f"
                      % (direction, distinct, ratio["cpu_ratio"],
                         ratio["cpu_delta_us"], ratio["wall_ratio"]),
                      file=sys.stderr)
        # After the gateway's cases: on PyPy the runner's loops are then
        # compiled for the real gateway first, as without this measure.
        harness = {"direction": direction, **measureHarness(direction, args)}
        results["harness"].append(harness)
        print("%-10s the benchmark's own loop (no gateway): %.3f us/msg, "
              "cpu %.3f us" % (direction, harness["harness_median_us"],
                               harness["harness_cpu_median_us"]),
              file=sys.stderr)
    emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
