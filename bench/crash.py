# -*- test-case-name: tests.test_bench_crash -*-
"""
Benchmark: what a SIGKILL of the gateway costs, per C{[xmpp]
confirm_delivery} mode (issue 9; docs/scaling.rst, "What a crash costs").

In component mode the gateway answers a SIP MESSAGE 2xx once the XMPP side
has "confirmed" the stanza; C{confirm_delivery} chooses how (C{"kernel"},
C{"none"}, C{"tcp"}; C{"ping"} is not measured: it cannot work when
several instances share one component domain on ejabberd, the deployment
this is about). When an instance dies under load:

  - B{lost}: a MESSAGE got its 2xx but the stanza never reached the XMPP
    user (the sender will not retry: the message is gone);
  - B{duplicate exposure}: the stanza reached the XMPP user but the sender
    got no 2xx (behind Kamailio's dispatcher the MESSAGE is then failed over
    to another instance and delivered twice);
  - B{delivered twice}: one token seen twice by the user (none expected:
    nothing here retransmits or fails over).

Setup, all on 127.0.0.1: one private ejabberd
(L{xmppgw.clusterpeers.PrivateEjabberd}, run in a private mount namespace
whose C{/etc/hosts} names only C{localhost} and whose C{resolv.conf} has no
nameserver, so that no lookup leaves the machine), one user C{rx}. For each
kill, a fresh C{twistd -n xmppgw} (L{tests.interop.harness.GatewayProcess},
config from L{tests.interop.harness.gatewayConfig}) with C{confirm_delivery}
set to the mode, C{[policy] rate_per_sender = 0} and C{rate_per_source =
0}, traffic logs off (C{[log] messages} stays on, as by default, unless
C{--no-log}). Then, as separate processes (their CPU is not the
gateway's):

  - a raw XMPP receiver (L{bench.peers.RawXMPP}, SASL PLAIN, no TLS) logged
    in as C{rx}, counting the body tokens it gets (and their latency, send
    to receipt, to show it keeps up);
  - an open-loop SIP sender over UDP straight to the gateway, C{--rate}
    MESSAGEs/s to C{rx*ej.test@gw.ej.test}, each with a unique token
    (C{crash k=TAG i=N t=NS}) and Call-ID; it records when each was sent
    and when its first final answer (and which code) came back. It does
    B{not} retransmit (no Timer E): on loopback with 8 MB socket buffers a
    datagram is not lost, and a retransmission could only reach a dead
    port. MESSAGEs left unanswered well before the kill are counted as a
    check (C{unanswered_early}, expected 0).

The gateway is SIGKILLed (its process group) at a random moment, uniform in
C{--kill-window} (default 1-3 s) after the load starts. The sender then
stops and drains the answers already in its socket; the receiver waits for
stragglers (until C{--idle} seconds pass without a message, at most 10 s).
Each MESSAGE sent before the kill is then classified by L{tally}: 2xx and
delivered, 2xx and lost, delivered without 2xx (duplicate exposure),
neither (in the gateway's socket or not yet relayed: the SIP side would
fail it over, delivered once). The 2xx latency (send to answer, both
C{CLOCK_MONOTONIC}, system-wide on Linux) is over the MESSAGEs answered
before the kill.

Usage::

    .venv/bin/python -m bench.crash [--modes kernel,none,tcp] [--kills N]
        [--rate R] [--kill-window LOW-HIGH] [--no-log] [--seed S]
        [--keep] [--json FILE]

The machine's load average is recorded before and after: the windows are
the times the gateway spends between its two writes (stanza, 2xx), and a
gateway preempted there (few cores, other processes: the peers here, or
other work on the machine) widens them, so quote it with the numbers. The
kills are few (5 per mode by default): the counts are a rough rate, not a
bound; raise C{--kills} for a finer one (about 4 s per kill).
"""

import argparse
import json
import os
import random
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from bench.common import emit, percentile, resultsHeader
from bench.peers import completeMessages

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOMAIN = "ej.test"
COMPONENT = "gw.ej.test"
RX_USER = "rx"
RX_PASSWORD = "rx-pw"
MODES = ("kernel", "none", "tcp", "ping")

#: the SIP Call-ID of MESSAGE number N: C{cN-TAG@127.0.0.1}
CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*c(\d+)-", re.M | re.I)
STATUS = re.compile(rb"^SIP/2\.0 (\d\d\d) ")


def _now():
    return time.monotonic_ns()


# --- pure functions (tested in tests/test_bench_crash.py) -----------------------


def tokenBody(tag, i, sentNs):
    """
    The body of MESSAGE number C{i} of the kill C{tag}.
    """
    return "crash k=%s i=%d t=%d" % (tag, i, sentNs)


def tokenPattern(tag):
    """
    A regular expression (bytes) matching the tokens of C{tag}; group 1 is
    the message number, group 2 the send time (ns).
    """
    return re.compile(rb"crash k=" + re.escape(tag.encode("ascii"))
                      + rb" i=(\d+) t=(\d+)")


def parseAnswer(datagram):
    """
    The message number and status code of a SIP response to one of our
    MESSAGEs.

    @return: C{(number, code)}, or L{None} if C{datagram} is not a response
        or carries no Call-ID of ours.
    """
    status = STATUS.match(datagram)
    if status is None:
        return None
    head = datagram.split(b"\r\n\r\n", 1)[0]
    callID = CALL_ID.search(head)
    if callID is None:
        return None
    return int(callID.group(1)), int(status.group(1))


def latencyStats(latenciesNs):
    """
    C{{"p50_ms", "p99_ms", "max_ms", "n"}} of latencies given in ns (the
    quantiles by linear interpolation, L{bench.common.percentile}); the
    times are L{None} when there are none.
    """
    values = [v / 1e6 for v in latenciesNs]
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(values),
            "p50_ms": round(percentile(values, 0.5), 3),
            "p99_ms": round(percentile(values, 0.99), 3),
            "max_ms": round(max(values), 3)}


def tally(sends, answers, delivered, killedNs, earlyNs=200_000_000):
    """
    Classify the MESSAGEs of one kill.

    @param sends: the send time (ns) of message C{i} at index C{i}.
    @param answers: C{{i: (code, answeredNs)}}, the first final answer of
        each answered message.
    @param delivered: C{{i: count}}, how many times the XMPP user got the
        token of message C{i}.
    @param killedNs: when the gateway was SIGKILLed (ns, same clock).
    @param earlyNs: a message sent this long before the kill that has no
        answer counts as C{unanswered_early} (a health check: the gateway
        or the network did not keep up).
    @return: a L{dict} of counts (see the module docstring), the lists of
        the lost and exposed message numbers (at most 50 each), and the 2xx
        latencies (C{latencies_ns}, and their L{latencyStats}) of the
        messages answered before the kill.
    """
    before = [i for i, t in enumerate(sends) if t < killedNs]
    acked = [i for i in before
             if i in answers and 200 <= answers[i][0] < 300]
    ackedSet = set(acked)
    lost = [i for i in acked if not delivered.get(i)]
    exposed = [i for i in before
               if delivered.get(i) and i not in ackedSet]
    neither = [i for i in before
               if not delivered.get(i) and i not in answers]
    otherCodes = {}
    for i in before:
        if i in answers and not 200 <= answers[i][0] < 300:
            code = str(answers[i][0])
            otherCodes[code] = otherCodes.get(code, 0) + 1
    unanswered = [i for i in before if i not in answers]
    early = [i for i in unanswered if sends[i] < killedNs - earlyNs]
    latencies = [answers[i][1] - sends[i] for i in acked
                 if answers[i][1] < killedNs]
    strays = [i for i in delivered
              if not 0 <= i < len(sends) or sends[i] >= killedNs]
    return {
        "sent_before_kill": len(before),
        "sent_after_kill": len(sends) - len(before),
        "acknowledged": len(acked),
        "delivered": sum(1 for i in before if delivered.get(i)),
        "lost": len(lost),
        "duplicate_exposure": len(exposed),
        "delivered_twice": sum(1 for i, n in delivered.items() if n > 1),
        "neither": len(neither),
        "non_2xx": otherCodes,
        "unanswered_early": len(early),
        "delivered_sent_after_kill": len(strays),
        "lost_ids": lost[:50],
        "lost_sent_ms_before_kill": [
            round((killedNs - sends[i]) / 1e6, 3) for i in lost[:50]],
        "lost_answered_ms_before_kill": [
            round((killedNs - answers[i][1]) / 1e6, 3) for i in lost[:50]],
        "exposed_ids": exposed[:50],
        "exposed_sent_ms_before_kill": [
            round((killedNs - sends[i]) / 1e6, 3) for i in exposed[:50]],
        "latency_2xx": latencyStats(latencies),
        "latencies_ns": latencies,
    }


def summarize(rows):
    """
    The per-mode summary of the rows of L{tally} (plus C{latencies_ns},
    the pre-kill 2xx latencies of each kill).
    """
    latencies = [v for row in rows for v in row.get("latencies_ns", ())]
    summary = {
        "kills": len(rows),
        "acknowledged": sum(r["acknowledged"] for r in rows),
        "lost": sum(r["lost"] for r in rows),
        "kills_with_loss": sum(1 for r in rows if r["lost"]),
        "duplicate_exposure": sum(r["duplicate_exposure"] for r in rows),
        "kills_with_duplicate_exposure":
            sum(1 for r in rows if r["duplicate_exposure"]),
        "delivered_twice": sum(r["delivered_twice"] for r in rows),
        "neither": sum(r["neither"] for r in rows),
        "unanswered_early": sum(r["unanswered_early"] for r in rows),
    }
    summary["latency_2xx"] = latencyStats(latencies)
    return summary


# --- the load peers (child processes: python -m bench.crash --peer ROLE JSON) ---


def _stdinSays(stop):
    """
    Read a pending line of stdin, if any: L{True} once it says C{stop}
    (or is closed).
    """
    line = sys.stdin.readline()
    return not line or line.strip() == stop


def sipMessage(i, tag, target, localPort, sentNs):
    body = tokenBody(tag, i, sentNs).encode("ascii")
    return (
        "MESSAGE %s SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-c%d-%s;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:crash%d@sip.example.com>;tag=c%d\r\n"
        "To: <%s>\r\n"
        "Call-ID: c%d-%s@127.0.0.1\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Type: text/plain;charset=UTF-8\r\n"
        "Content-Length: %d\r\n\r\n"
        % (target, localPort, i, tag, i % 100, i, target, i, tag, len(body))
    ).encode("ascii") + body


def sipSender(host, port, target, tag, rate, count, drain):
    """
    Send at most C{count} MESSAGEs at C{rate}/s over UDP (open loop, no
    retransmission) until stdin says C{stop}; record send and answer times.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.bind(("127.0.0.1", 0))
    s.connect((host, port))
    s.setblocking(False)
    localPort = s.getsockname()[1]
    sends = []
    answers = {}
    counts = {"send_errors": 0, "recv_errors": 0, "foreign": 0,
              "provisional": 0, "extra_finals": 0}
    start = _now() + 100_000_000
    print(json.dumps({"ready": True, "start_ns": start}), flush=True)
    stdin = sys.stdin.fileno()

    def readAnswers():
        for _ in range(10000):
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP port unreachable (the gateway is dead): reported
                # on the next call, once
                counts["recv_errors"] += 1
                continue
            now = _now()
            parsed = parseAnswer(data)
            if parsed is None:
                counts["foreign"] += 1
                continue
            i, code = parsed
            if code < 200:
                counts["provisional"] += 1
            elif i in answers:
                counts["extra_finals"] += 1
            else:
                answers[i] = (code, now)

    stopped = False
    period = 1e9 / rate
    for i in range(count):
        target_ = start + int(i * period)
        # wait for the slot, reading answers as they come (so that the
        # answer times are exact to select's resolution)
        while True:
            left = target_ - _now()
            if left <= 0:
                break
            r, _, _ = select.select([s, stdin], [], [], left / 1e9)
            if s in r:
                readAnswers()
            if stdin in r and _stdinSays("stop"):
                stopped = True
                break
        if stopped:
            break
        now = _now()
        data = sipMessage(i, tag, target, localPort, now)
        sends.append(now)
        try:
            s.send(data)
        except OSError:
            counts["send_errors"] += 1
    sendEnd = _now()
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], 0.05)
        if r:
            readAnswers()
    s.close()
    return dict(counts, sends=sends, started_ns=start, ended_ns=sendEnd,
                answers=[[i, code, at] for i, (code, at) in answers.items()])


def xmppReceiver(host, port, user, domain, password, tag, timeout, idle,
                 maxDrain):
    """
    Count the tokens of C{tag} received, until stdin says C{drain} and then
    C{idle} seconds pass without a message (at most C{maxDrain} seconds
    after the word), or C{timeout}.
    """
    from bench.peers import RawXMPP
    client = RawXMPP(host, port, user, domain, password)
    s = client.s
    s.setblocking(False)
    pattern = tokenPattern(tag)
    print(json.dumps({"ready": True}), flush=True)
    stdin = sys.stdin.fileno()
    delivered = {}
    latencies = []
    errors = 0
    tail = b""
    cpu0 = time.process_time()
    began = time.monotonic()
    deadline = began + timeout
    drainFrom = None
    last = time.monotonic()
    closed = False
    while time.monotonic() < deadline:
        now = time.monotonic()
        if drainFrom is not None and (now - last > idle
                                      or now - drainFrom > maxDrain):
            break
        watch = [s] if drainFrom is not None else [s, stdin]
        r, _, _ = select.select(watch, [], [], 0.05)
        if stdin in r and _stdinSays("drain"):
            drainFrom = last = time.monotonic()
        if s not in r:
            continue
        try:
            data = s.recv(1 << 20)
        except BlockingIOError:
            continue
        if not data:
            closed = True
            break
        at = _now()
        last = time.monotonic()
        chunk, tail = completeMessages(tail, data)
        if chunk is None:
            continue
        errors += chunk.count(b"type='error'") + chunk.count(b'type="error"')
        for m in pattern.finditer(chunk):
            i = int(m.group(1))
            delivered[i] = delivered.get(i, 0) + 1
            if delivered[i] == 1:
                latencies.append(at - int(m.group(2)))
    elapsed = time.monotonic() - began
    cpu = time.process_time() - cpu0
    s.close()
    return {"delivered": sorted(delivered.items()), "error_stanzas": errors,
            "closed_by_server": closed,
            "latency": latencyStats(latencies),
            "cpu_share": round(cpu / elapsed, 3) if elapsed else None}


PEERS = {"sender": sipSender, "receiver": xmppReceiver}


class Peer:
    """
    A load peer of this module in a child process of its own (own process
    group, killed at exit: L{xmppgw.localpeers.spawn}); commands go to its
    stdin, its result comes as the last line of its stdout.
    """

    def __init__(self, role, logPath, **kwargs):
        from xmppgw.localpeers import spawn
        self.role = role
        self.logPath = logPath
        self.process = spawn(
            [sys.executable, "-m", "bench.crash", "--peer", role,
             json.dumps(kwargs)],
            logPath=logPath, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=ROOT)

    def ready(self, timeout=20.0):
        r, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if r else b""
        if not line:
            self.kill()
            raise RuntimeError("%s did not start:\n%s" % (
                self.role, _tail(self.logPath)))
        return json.loads(line)

    def tell(self, word):
        try:
            self.process.stdin.write(word.encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def result(self, timeout):
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("%s did not finish in %s s:\n%s" % (
                self.role, timeout, _tail(self.logPath)))
        lines = [l for l in out.decode().splitlines() if l.strip()]
        if self.process.returncode != 0 or not lines:
            raise RuntimeError("%s failed (exit %s):\n%s" % (
                self.role, self.process.returncode, _tail(self.logPath)))
        return json.loads(lines[-1])

    def kill(self):
        from xmppgw.localpeers import killProcessGroup
        killProcessGroup(self.process, signal.SIGKILL)
        try:
            self.process.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError):
            pass


def _reapGroup(pgid, timeout):
    """
    Wait at most C{timeout} seconds until process group C{pgid} (one we
    started) is empty, then SIGKILL what is left.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path, limit=3000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-limit:]
    except OSError:
        return ""


# --- the driver ------------------------------------------------------------------


class CrashBench:
    """
    One private ejabberd; for each kill a fresh gateway, receiver, sender.
    """

    def __init__(self, args):
        self.args = args
        self.random = random.Random(args.seed)
        self.workdir = tempfile.mkdtemp(prefix="xmppgw-crash-")
        self.ejabberd = None
        self.gateway = None
        self.peers = []

    def start(self):
        from xmppgw.clusterpeers import PrivateEjabberd
        self.ejabberd = PrivateEjabberd(
            os.path.join(self.workdir, "ejabberd"), domain=DOMAIN,
            componentDomain=COMPONENT, componentSecret=secrets.token_hex(8),
            users={RX_USER: RX_PASSWORD}, hosts={})
        if not self.ejabberd.available():
            raise SystemExit("ejabberd is not installed (Debian: apt-get "
                             "install ejabberd; make peers does it as root)")
        self.ejabberd.start()

    def cleanKill(self):
        """
        Kill what a kill started (after a failure).
        """
        for peer in self.peers:
            peer.kill()
        self.peers = []
        if self.gateway is not None:
            self.gateway.kill()
            self.gateway = None

    def stop(self):
        self.cleanKill()
        if self.ejabberd is not None:
            process = self.ejabberd.process
            self.ejabberd.stop()
            self.ejabberd = None
            if process is not None:
                # ejabberdctl (the group leader) may exit before the Erlang
                # VM has stopped: wait for the whole group (bounded), then
                # SIGKILL what is left of it
                _reapGroup(process.pid, 15.0)
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def gatewayConfigText(self, mode, port):
        from tests.interop.harness import gatewayConfig
        text = gatewayConfig(
            self.ejabberd, port,
            extraXMPP={"confirm_delivery": json.dumps(mode)})
        for key in ("traffic_sip", "traffic_xmpp"):
            text = text.replace(f"{key} = true", f"{key} = false")
        if not self.args.log:
            text = text.replace("messages = true", "messages = false")
        return text + "\n[policy]\nrate_per_sender = 0\nrate_per_source = 0\n"

    def kill(self, mode, number):
        """
        One kill: start a gateway, load it, SIGKILL it, count.
        """
        from tests.interop.harness import GatewayProcess
        from xmppgw.localpeers import freePort
        args = self.args
        tag = "%s%d-%s" % (mode, number, secrets.token_hex(3))
        workdir = os.path.join(self.workdir, tag)
        os.makedirs(workdir)
        port = freePort("both")
        self.gateway = GatewayProcess(self.gatewayConfigText(mode, port),
                                      workdir=workdir)
        self.gateway.start(timeout=30)
        high = args.kill_window[1]
        receiver = Peer("receiver", os.path.join(workdir, "receiver.log"),
                        host="127.0.0.1", port=self.ejabberd.c2sPort,
                        user=RX_USER, domain=DOMAIN, password=RX_PASSWORD,
                        tag=tag, timeout=high + 30, idle=args.idle,
                        maxDrain=10.0)
        self.peers.append(receiver)
        receiver.ready()
        sender = Peer("sender", os.path.join(workdir, "sender.log"),
                      host="127.0.0.1", port=port,
                      target="sip:%s*%s@%s" % (RX_USER, DOMAIN, COMPONENT),
                      tag=tag, rate=args.rate,
                      count=int(args.rate * (high + 2)), drain=0.5)
        self.peers.append(sender)
        started = sender.ready()["start_ns"]
        delay = self.random.uniform(*args.kill_window)
        wait = (started + int(delay * 1e9) - _now()) / 1e9
        if wait > 0:
            time.sleep(wait)
        if not self.gateway.running():
            raise RuntimeError("the gateway died before the kill:\n"
                               + self.gateway.describe())
        killedNs = _now()
        self.gateway.kill()  # SIGKILL to its process group, then reap
        self.gateway = None
        sender.tell("stop")
        receiver.tell("drain")
        sent = sender.result(timeout=high + 15)
        got = receiver.result(timeout=high + 45)
        self.peers = []
        sends = sent["sends"]
        answers = {i: (code, at) for i, code, at in sent["answers"]}
        delivered = dict((i, n) for i, n in got["delivered"])
        row = tally(sends, answers, delivered, killedNs)
        row = dict(
            {"mode": mode, "kill": number, "killed_after_s": round(
                (killedNs - sent["started_ns"]) / 1e9, 3)},
            **row,
            receiver_latency=got["latency"],
            receiver_cpu_share=got["cpu_share"],
            receiver_error_stanzas=got["error_stanzas"],
            sender_send_errors=sent["send_errors"],
            sender_extra_finals=sent["extra_finals"],
            sender_unparsed_datagrams=sent["foreign"])
        print("%-6s kill %d at %.2fs: acked %5d lost %d %s exposed %d %s "
              "twice %d neither %d early %d, 2xx p50 %s p99 %s ms, rx p99 "
              "%s ms" % (
                  mode, number, row["killed_after_s"], row["acknowledged"],
                  row["lost"], row["lost_sent_ms_before_kill"][:5],
                  row["duplicate_exposure"],
                  row["exposed_sent_ms_before_kill"][:5],
                  row["delivered_twice"], row["neither"],
                  row["unanswered_early"], row["latency_2xx"]["p50_ms"],
                  row["latency_2xx"]["p99_ms"], got["latency"]["p99_ms"]),
              file=sys.stderr, flush=True)
        return row


def table(summaries, rate):
    """
    The results as a text table, one line per mode.
    """
    lines = ["%-7s %5s %7s %10s %9s %7s %7s %8s %8s" % (
        "mode", "kills", "acked", "lost", "exposed", "twice", "neither",
        "2xx p50", "2xx p99"),
        "%-7s %5s %7s %10s %9s %7s %7s %8s %8s" % (
            "", "", "", "(kills)", "(kills)", "", "", "ms", "ms")]
    for mode, s in summaries.items():
        lines.append("%-7s %5d %7d %10s %9s %7d %7d %8s %8s" % (
            mode, s["kills"], s["acknowledged"],
            "%d (%d)" % (s["lost"], s["kills_with_loss"]),
            "%d (%d)" % (s["duplicate_exposure"],
                         s["kills_with_duplicate_exposure"]),
            s["delivered_twice"], s["neither"],
            s["latency_2xx"]["p50_ms"], s["latency_2xx"]["p99_ms"]))
    lines.append("(%d MESSAGEs/s over UDP, no retransmission; lost = 2xx "
                 "but not delivered, exposed = delivered without 2xx)" % rate)
    return "\n".join(lines)


def _window(text):
    low, high = (float(v) for v in text.split("-"))
    if not 0 < low <= high <= 30:
        raise argparse.ArgumentTypeError("need 0 < LOW <= HIGH <= 30")
    return low, high


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--peer"]:
        role, raw = argv[1], json.loads(argv[2])
        print(json.dumps(PEERS[role](**raw)), flush=True)
        return None
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="kernel,none,tcp",
                        help="comma-separated confirm_delivery modes "
                        "(default kernel,none,tcp)")
    parser.add_argument("--kills", type=int, default=5,
                        help="kills per mode (default 5)")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="SIP MESSAGEs per second (default 1000)")
    parser.add_argument("--kill-window", type=_window, default=(1.0, 3.0),
                        metavar="LOW-HIGH",
                        help="kill uniformly this many seconds into the "
                        "load (default 1-3)")
    parser.add_argument("--idle", type=float, default=1.0,
                        help="after the kill, the receiver stops once this "
                        "many seconds pass without a message (default 1)")
    parser.add_argument("--no-log", dest="log", action="store_false",
                        help="[log] messages = false (default: true, as "
                        "in the default configuration)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the kill moments (default: random)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (logs)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error("--modes: each one of %s" % (", ".join(MODES),))
    if not 1 <= args.kills <= 100 or not 1 <= args.rate <= 20000:
        parser.error("--kills must be in 1..100, --rate in 1..20000")
    if not 0.1 <= args.idle <= 10:
        parser.error("--idle must be in 0.1..10")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    results = {
        **resultsHeader("crash", argv),
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "rate": args.rate,
        "kills_per_mode": args.kills,
        "kill_window_s": list(args.kill_window),
        "seed": args.seed,
        "transport": "udp",
        "retransmission": "none (no Timer E)",
        "gateway": "twistd -n xmppgw, one per kill; [policy] rate limits 0, "
                   "traffic logs off",
        "log_messages": args.log,
        "xmpp_server": "ejabberd (private, loopback)",
        "modes": {},
        "kills": [],
        "failed_kills": [],
    }
    began = time.monotonic()
    bench = CrashBench(args)
    try:
        bench.start()
        for mode in modes:
            rows = []
            for number in range(1, args.kills + 1):
                try:
                    rows.append(bench.kill(mode, number))
                except Exception as e:
                    # reported, not counted; the other kills go on
                    bench.cleanKill()
                    text = "%s: %s" % (type(e).__name__, e)
                    results["failed_kills"].append(
                        {"mode": mode, "kill": number, "error": text[-4000:]})
                    print("%-6s kill %d FAILED: %s" % (
                        mode, number, text[:2000]), file=sys.stderr)
            results["modes"][mode] = summarize(rows)
            for row in rows:
                row.pop("latencies_ns", None)
            results["kills"].extend(rows)
    finally:
        bench.stop()
    results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    emit(results, args.json)
    print(table(results["modes"], args.rate), file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
