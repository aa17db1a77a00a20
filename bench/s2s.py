"""
Benchmark 3, server mode: the cost per message with 1 and with 100 S2S peer
domains, in one process, no network.

The gateway is wired as C{twistd xmppgw} wires it in server mode
(C{[xmpp] backend = "server"}: L{SIPTransport}, L{TransactionLayer},
L{MessageRouter} whose XMPP side is an L{S2SService}, verified incoming
stanzas handed to C{router.xmppMessageReceived}). Only the sockets are
fakes: before the timed runs, every peer domain gets one outgoing stream and
one incoming stream, each verified through the real dialback exchange
(C{db:result}, C{db:verify}) on L{StringTransport}s, as C{tests/test_server.py}
fakes them. Then, round robin over the domains:

  - SIP -> XMPP: MESSAGE bytes into the UDP listener for
    C{userN*peerK.test@gateway}; the C{<message/>} must come out on the
    outgoing stream to C{peerK.test}, and the 202 out of the UDP socket.
  - XMPP -> SIP: C{<message/>} bytes from C{userN@peerK.test} into the
    incoming stream of C{peerK.test} (expat, dialback-verified
    addressing checks, router); the SIP MESSAGE out of the UDP socket, then
    a 200 OK (built untimed) back in.

Every case has the same C{USERS} (1,000) distinct addresses, spread over
its domains. Time runs as in L{bench.inprocess} (a private reactor whose clock advances
1/rate per message; timers on Twisted's heap). Reported: median over
C{--runs} runs of the CPU and wall µs per message, for each number of
peer domains (C{--peers}, default C{1,100,1000}), each on a gateway of its
own, their timed runs interleaved (L{measure}). What must hold: nothing
per message grows with the number of peers.

Usage::

    .venv/bin/python -m bench.s2s [--peers 1,100,1000] [--count N] [--runs R]
        [--json FILE]
"""

import argparse
import os
import sys
import time

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import globalLogBeginner

from bench.common import (
    cpuPerMessage, emit, interleaved, percentile, resultsHeader)
from bench.inprocess import (
    LOG_CLOCK, BenchClock, benchLogObserver, okFor, wireFakeSIP)
from xmppgw.addressing import AddressMapper
from xmppgw.gctune import freezeStartupObjects
from xmppgw.router import MessageRouter, RouterSettings
from xmppgw.sip.transaction import Target
from xmppgw.xmpp.dialback import generateKey
from xmppgw.xmpp.server import S2SService, TLSSettings

OURS = "gw.xmpp.test"
GATEWAY_DOMAIN = "127.0.0.1"
SECRET = "bench-dialback-secret"
PROXY = ("127.0.0.1", 5070)
PEER_ADDRESS = ("127.0.0.1", 5080)
ADDR = IPv4Address("TCP", "127.0.0.1", 40000)
STREAM = ("<stream:stream xmlns='jabber:server' "
          "xmlns:stream='http://etherx.jabber.org/streams' "
          "xmlns:db='jabber:server:dialback' version='1.0' {attrs}>")
FEATURES = ("<stream:features><dialback xmlns='urn:xmpp:features:dialback'>"
            "<errors/></dialback></stream:features>")


def peerDomain(k):
    return "peer%d.test" % (k,)


class BenchReactor(BenchClock):
    """
    L{BenchClock} (timers on Twisted's heap, time set by the benchmark)
    whose TCP listening and connecting are recorded, never done, like
    L{MemoryReactor}'s.
    """

    def __init__(self):
        BenchClock.__init__(self)
        self.tcpServers = []
        self.tcpClients = []
        self.connectors = []

    listenTCP = MemoryReactor.listenTCP
    connectTCP = MemoryReactor.connectTCP


class CountingTransport(StringTransport):
    """
    A stream's TCP transport: counts the writes once C{counting} is set
    (keeping only the last), and records C{startTLS} without doing it.
    """

    def __init__(self):
        StringTransport.__init__(self)
        self.counting = False
        self.count = 0
        self.last = None

    def write(self, data):
        if self.counting:
            self.count += 1
            self.last = data
        else:
            StringTransport.write(self, data)

    def startTLS(self, context, normal=True):
        pass


class ServerGateway:
    """
    A server-mode gateway with C{peers} verified peer domains.
    """

    def __init__(self, peers, freeze=True):
        self.clock = BenchReactor()
        wireFakeSIP(self)
        self.domains = [peerDomain(k) for k in range(peers)]
        self.s2s = S2SService(
            OURS, secret=SECRET, reactor=self.clock,
            peers={d: ("127.0.0.1", 5269) for d in self.domains},
            listenHost="127.0.0.1", listenPort=5269,
            tls=TLSSettings(required=False, verify=False), idleTimeout=300,
            queueLimit=100, queueTTL=30, negotiateTimeout=30)
        mapper = AddressMapper("*", GATEWAY_DOMAIN, OURS, {})
        settings = RouterSettings(
            xmppDomain=OURS, outboundProxy=Target("udp", *PROXY),
            logMessages=False)
        self.router = MessageRouter(
            self.clock, mapper, self.transactions, self.s2s, settings)
        # As xmppgw.tap.buildGateway wires server mode.
        self.s2s.messageReceived = self.router.xmppMessageReceived
        self.s2s.stanzaReceived = lambda stanza: None
        self.s2s.startService()
        self.outgoing = {}
        self._outStream = {}
        self.incoming = {}
        for domain in self.domains:
            self._verifyOutgoing(domain)
        for domain in self.domains:
            self._verifyIncoming(domain)
        counts = self.s2s.streamCounts()
        if (counts.get("outgoing_verified") != peers
                or counts.get("incoming") != peers):
            raise RuntimeError("S2S streams not all verified: %r" % (counts,))
        for transport in (list(self.outgoing.values())
                          + [t for _, t in self.incoming.values()]):
            transport.clear()
            transport.counting = True
        if freeze:
            freezeStartupObjects()

    def _verifyOutgoing(self, domain):
        """
        Open and verify our stream to C{domain} (we are the originating
        server; the peer answers our db:result valid).
        """
        self.s2s._linkFor(domain)
        host, port, factory, timeout, bind = self.clock.tcpClients[-1]
        xs = factory.buildProtocol(ADDR)
        transport = CountingTransport()
        xs.makeConnection(transport)
        attrs = "from='%s' to='%s' id='sid-%s'" % (domain, OURS, domain)
        xs.dataReceived((STREAM.format(attrs=attrs) + FEATURES).encode())
        key = generateKey(SECRET, domain, OURS, "sid-" + domain)
        if key.encode() not in transport.value():
            raise RuntimeError("no db:result to %s" % (domain,))
        xs.dataReceived(("<db:result from='%s' to='%s' type='valid'/>"
                         % (domain, OURS)).encode())
        self.outgoing[domain] = transport
        self._outStream[domain] = xs

    def _verifyIncoming(self, domain):
        """
        Accept and verify a stream from C{domain} (its db:result checked
        with its authoritative server over our verified outgoing stream).
        """
        factory = self.clock.tcpServers[0][1]
        xs = factory.buildProtocol(ADDR)
        transport = CountingTransport()
        xs.makeConnection(transport)
        attrs = "to='%s' from='%s'" % (OURS, domain)
        xs.dataReceived(STREAM.format(attrs=attrs).encode())
        sid = xs.sid
        xs.dataReceived(("<db:result from='%s' to='%s'>KEY-%s</db:result>"
                         % (domain, OURS, domain)).encode())
        out = self._outStream[domain]
        if b"<db:verify" not in self.outgoing[domain].value():
            raise RuntimeError("no db:verify sent to %s" % (domain,))
        out.dataReceived(("<db:verify from='%s' to='%s' id='%s' type='valid'/>"
                          % (domain, OURS, sid)).encode())
        if b"type='valid'" not in transport.value():
            raise RuntimeError("incoming stream from %s not verified"
                               % (domain,))
        self.incoming[domain] = (xs, transport)


#: Distinct users per run, whatever the number of peer domains: message
#: C{i} goes to or comes from user C{i % USERS} of the domain C{i % peers},
#: so that 1, 100 and 1,000 domains (which divide it) all make exactly
#: C{USERS} distinct addresses and only the number of domains differs
#: between the cases (round 27; before, C{i % 100} gave 1,000 peers ten
#: times the addresses of 1 and 100).
USERS = 1000


def sipMessage(i, domain):
    n = i % USERS
    body = b"Hello from SIP, message %d" % (i,)
    return (
        "MESSAGE sip:user%d*%s@%s SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-s%d;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice%d@sip.example.com>;tag=t%d\r\n"
        "To: <sip:user%d*%s@%s>\r\n"
        "Call-ID: s2s%d@127.0.0.1\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Type: text/plain;charset=UTF-8\r\n"
        "Content-Length: %d\r\n"
        "\r\n" % (n, domain, GATEWAY_DOMAIN, i, n, i, n, domain,
                  GATEWAY_DOMAIN, i, len(body))
    ).encode() + body


def xmppMessage(i, domain):
    n = i % USERS
    return (
        "<message type='chat' to='bob%d*sip.example.com@%s' "
        "from='user%d@%s/phone' id='m%d'><body>Hello from XMPP, message "
        "%d</body></message>" % (n, OURS, n, domain, i, i)
    ).encode()


class Runner:
    def __init__(self, gateway, step):
        self.g = gateway
        self.step = step
        self.i = 0

    def sipToXMPP(self, count):
        g = self.g
        LOG_CLOCK.use(g.clock)
        domains = g.domains
        receive = g.sipProtocol.datagramReceived
        advance = g.clock.advance
        step = self.step
        plan = []
        for k in range(count):
            domain = domains[(self.i + k) % len(domains)]
            plan.append((sipMessage(self.i + k, domain), domain))
        self.i += count
        outs = list(g.outgoing.values())
        before = sum(t.count for t in outs)
        udpBefore = g.udp.count
        t0 = time.perf_counter_ns()
        c0 = time.process_time()
        for data, domain in plan:
            receive(data, PEER_ADDRESS)
            advance(step)
        cpu = time.process_time() - c0
        wall = time.perf_counter_ns() - t0
        written = sum(t.count for t in outs) - before
        if written != count or g.udp.count - udpBefore != count:
            raise RuntimeError(
                "SIP->XMPP: %d in, %d stanzas on S2S streams, %d answers"
                % (count, written, g.udp.count - udpBefore))
        # The last one went to the right peer's stream.
        last = g.outgoing[plan[-1][1]].last
        if b"@" + plan[-1][1].encode() not in last:
            raise RuntimeError("stanza on the wrong stream: %r" % (last,))
        if not g.udp.last.startswith(b"SIP/2.0 202 "):
            raise RuntimeError("unexpected answer %r" % (g.udp.last[:40],))
        return wall / count / 1000.0, cpu / count * 1e6

    def xmppToSIP(self, count):
        g = self.g
        LOG_CLOCK.use(g.clock)
        domains = g.domains
        receive = g.sipProtocol.datagramReceived
        advance = g.clock.advance
        udp = g.udp
        step = self.step
        plan = []
        for k in range(count):
            domain = domains[(self.i + k) % len(domains)]
            plan.append((g.incoming[domain][0].dataReceived,
                         xmppMessage(self.i + k, domain)))
        self.i += count
        relayed = g.router.stats.get("xmpp.relayed", 0)
        perf = time.perf_counter_ns
        wall = 0
        # The CPU clock at the ends of the run only (bench.common.
        # cpuPerMessage): the 200s are built between the timed parts.
        c0 = time.process_time()
        t0 = perf()
        for parse, data in plan:
            before = udp.count
            a = perf()
            parse(data)
            b = perf()
            if udp.count != before + 1:
                raise RuntimeError("XMPP->SIP: no SIP request for %r"
                                   % (data,))
            ok = okFor(udp.last)
            d = perf()
            receive(ok, PROXY)
            advance(step)
            e = perf()
            wall += (b - a) + (e - d)
        elapsed = perf() - t0
        cpu = time.process_time() - c0
        if g.router.stats.get("xmpp.relayed", 0) - relayed != count:
            raise RuntimeError("XMPP->SIP: not every message got its 200")
        return wall / count / 1000.0, cpuPerMessage(wall, count, cpu, elapsed)


def measure(direction, peerCounts, args):
    """
    Each number of peer domains in C{peerCounts} on a gateway of its own,
    their timed runs interleaved (L{bench.common.interleaved}), so that
    a slower spell of the machine slows them alike and the comparison
    between peer counts, the point of this benchmark, holds.

    @return: a list of case dicts, in the order of C{peerCounts}.
    """
    gateways = [ServerGateway(peers, freeze=args.freeze)
                for peers in peerCounts]
    runs = [getattr(Runner(g, 1.0 / args.rate), direction) for g in gateways]
    for _ in range(3):
        for run in runs:
            run(args.count)
    samples = [([], []) for _ in peerCounts]
    for v in interleaved(args.runs, len(peerCounts)):
        wall, cpu = runs[v](args.count)
        samples[v][0].append(wall)
        samples[v][1].append(cpu)
    return [{
        "direction": direction,
        "peers": peers,
        "median_us": round(percentile(walls, 0.5), 2),
        "p10_us": round(percentile(walls, 0.1), 2),
        "p90_us": round(percentile(walls, 0.9), 2),
        "cpu_median_us": round(percentile(cpus, 0.5), 2),
        "streams": gateway.s2s.streamCounts(),
        "pending_timers": len(gateway.clock.getDelayedCalls()),
    } for peers, gateway, (walls, cpus) in zip(peerCounts, gateways, samples)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="1,100,1000",
                        help="numbers of S2S peer domains (default "
                        "1,100,1000)")
    parser.add_argument("--count", type=int, default=2000,
                        help="messages per run (default 2000)")
    parser.add_argument("--runs", type=int, default=21,
                        help="timed runs per case (default 21; interleaved "
                        "with the other cases')")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="simulated messages per second (default 1000)")
    parser.add_argument("--no-freeze", dest="freeze", action="store_false",
                        help="do not freeze the start-up objects out of the "
                        "garbage collector")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    peers = [int(p) for p in args.peers.split(",")]
    if (args.count < 1 or args.runs < 1 or not 0 < args.rate <= 1e6
            or not all(1 <= p <= 10000 for p in peers)):
        parser.error("--count, --runs, --rate must be positive, --peers in "
                     "1..10000")
    globalLogBeginner.beginLoggingTo(
        [benchLogObserver(open(os.devnull, "w"))], discardBuffer=True,
        redirectStandardIO=False)
    results = {
        **resultsHeader("s2s", argv),
        "count": args.count,
        "runs": args.runs,
        "simulated_rate": args.rate,
        "cases": [],
    }
    for direction in ("sipToXMPP", "xmppToSIP"):
        for case in measure(direction, peers, args):
            n = case["peers"]
            results["cases"].append(case)
            print("%-10s peers=%-5d %7.2f us/msg (p10 %.2f, p90 %.2f) cpu "
                  "%.2f us" % (direction, n, case["median_us"],
                               case["p10_us"], case["p90_us"],
                               case["cpu_median_us"]), file=sys.stderr)
    emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
