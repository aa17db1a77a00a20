"""
The fast load peers of the end-to-end benchmark, each run as its own
process (C{python -m bench.peers ROLE ...}) so that its CPU is not the
gateway's. Each prints one JSON object on stdout when it is done.

Roles:

  - C{sip-load}: an open-loop SIP MESSAGE generator over UDP or TCP; sends
    C{count} MESSAGEs at C{rate} per second on a fixed schedule (it never
    waits for answers) and counts the answers.
  - C{xmpp-recv}: a raw XMPP client (SASL PLAIN on loopback, no TLS) that
    counts the C{<message/>}s it gets and their latency (each body carries
    the send time, C{time.monotonic_ns}, which is system-wide on Linux).
  - C{xmpp-load}: a raw XMPP client that sends C{count} messages at C{rate}.
  - C{sip-recv}: a UDP SIP user agent that answers every MESSAGE 200 and
    records its latency.
  - C{component-load}: a minimal XEP-0114 component that sends, at C{rate},
    the stanzas the gateway would write, straight to Prosody: the floor
    (what Prosody and the receiver cost without the gateway).

Every loop is bounded in count and in time.
"""

import base64
import hashlib
import json
import re
import select
import socket
import sys
import time

MARK = re.compile(rb"bench i=(\d+) t=(\d+)")


def _now():
    return time.monotonic_ns()


#: How early a send may go out: a message due within this many ns is sent
#: at once instead of sleeping for it (a sleep shorter than this costs more
#: than it keeps the schedule).
EARLY_NS = 50_000


def _wait(target):
    """
    Sleep until C{target} (monotonic ns); return the lateness in ns (0 if
    on time or at most L{EARLY_NS} early).

    No busy-waiting: the load generator shares the machine's two CPUs with
    the gateway, Prosody and the receiver, and a spin of even 200 µs per
    message (as before round 7) kept one CPU busy from about 3,300
    messages/s up and took it from the processes under test. A send that
    wakes late catches up at once (the schedule is open-loop; each
    message carries its real send time).
    """
    left = target - _now()
    if left > EARLY_NS:
        time.sleep(left / 1e9)
        left = target - _now()
    return -left if left < 0 else 0


class Lateness:
    """
    How far behind its schedule an open-loop sender ran: how many sends
    were more than 1 ms late, and the largest lateness.
    """

    def __init__(self):
        self.late = 0
        self.worst = 0

    def add(self, ns):
        if ns > 1_000_000:
            self.late += 1
        if ns > self.worst:
            self.worst = ns

    def asDict(self):
        return {"late_over_1ms": self.late,
                "max_lateness_ms": round(self.worst / 1e6, 3)}


def _stats(latencies):
    if not latencies:
        return {}
    latencies.sort()
    n = len(latencies)

    def q(f):
        return round(latencies[min(n - 1, int(f * n))] / 1e6, 3)

    return {"p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0)}


# SIP ------------------------------------------------------------------------


def completeMessages(tail, data):
    """
    Split what an XMPP stream gave so far (C{tail}, the rest of the last
    read, and C{data}, this read) into the complete C{<message/>}s and the
    rest: C{(chunk, tail)}; C{chunk} is L{None} while no message ended (the
    rest is then kept to its last 64 KiB).
    """
    data = tail + data
    end = data.rfind(b"</message>")
    if end < 0:
        return None, data[-65536:]
    return data[:end], data[end:]


def sipMessage(i, target, transport, localPort, users):
    body = b"bench i=%d t=%d" % (i, _now())
    n = i % users
    return (
        "MESSAGE %s SIP/2.0\r\n"
        "Via: SIP/2.0/%s 127.0.0.1:%d;branch=z9hG4bK-b%d-%d;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:load%d@sip.example.com>;tag=l%d\r\n"
        "To: <%s>\r\n"
        "Call-ID: bench-%d-%d@127.0.0.1\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Type: text/plain;charset=UTF-8\r\n"
        "Content-Length: %d\r\n\r\n"
        % (target, transport, localPort, localPort, i, n, i, target,
           localPort, i, len(body))
    ).encode() + body


def sipLoad(proto, host, port, target, rate, count, users, drain):
    """
    Send C{count} MESSAGEs at C{rate}/s to C{host}:C{port}, count answers.
    """
    if proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind(("127.0.0.1", 0))
        s.connect((host, port))
    else:
        s = socket.create_connection((host, port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    localPort = s.getsockname()[1]
    codes = {}
    buffer = b""
    sendErrors = 0

    def readAnswers():
        nonlocal buffer
        while True:
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            if proto == "udp":
                code = data[8:11].decode("ascii", "replace")
                codes[code] = codes.get(code, 0) + 1
            else:
                buffer += data
                for m in re.finditer(rb"SIP/2\.0 (\d\d\d) ", buffer):
                    code = m.group(1).decode()
                    codes[code] = codes.get(code, 0) + 1
                cut = buffer.rfind(b"SIP/2.0 ")
                buffer = buffer[cut + 1:] if cut >= 0 else buffer
                buffer = buffer[-200:]

    start = _now() + 50_000_000
    period = 1e9 / rate
    lateness = Lateness()
    cpu0 = time.process_time()
    for i in range(count):
        lateness.add(_wait(start + int(i * period)))
        data = sipMessage(i, target, proto.upper(), localPort, users)
        try:
            if proto == "udp":
                s.send(data)
            else:
                view = memoryview(data)
                deadline = _now() + 2_000_000_000
                while view:
                    try:
                        view = view[s.send(view):]
                    except BlockingIOError:
                        if _now() > deadline:
                            raise
                        select.select([], [s], [], 0.01)
        except OSError:
            sendErrors += 1
        if i % 64 == 0:
            readAnswers()
    sendTime = (_now() - start) / 1e9
    cpu = time.process_time() - cpu0
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and sum(codes.values()) < count:
        select.select([s], [], [], 0.05)
        readAnswers()
    s.close()
    result = {"sent": count, "send_seconds": round(sendTime, 3),
              "offered_rate": round(count / sendTime, 1) if sendTime else None,
              "answers": codes, "send_errors": sendErrors,
              "cpu_seconds": round(cpu, 4)}
    result.update(lateness.asDict())
    return result


def sipRecv(port, expect, timeout, idle):
    """
    Answer every MESSAGE on UDP C{port} with 200 and record latencies,
    until C{expect} are seen, C{idle} seconds pass without one, or
    C{timeout}.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", port))
    print(json.dumps({"ready": s.getsockname()[1]}), flush=True)
    cpu0 = time.process_time()
    seen = set()
    latencies = []
    duplicates = 0
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    copy = re.compile(rb"^(?:Via|From|To|Call-ID|CSeq):[^\r\n]*", re.M)
    while len(seen) < expect and time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], 0.2)
        if not r:
            if seen and time.monotonic() - last > idle:
                break
            continue
        data, addr = s.recvfrom(65536)
        now = _now()
        if not data.startswith(b"MESSAGE "):
            continue
        last = time.monotonic()
        head = data.split(b"\r\n\r\n", 1)[0]
        lines = [b"SIP/2.0 200 OK"]
        for m in copy.finditer(head):
            line = m.group(0)
            if line.startswith(b"To:"):
                line += b";tag=r"
            lines.append(line)
        lines.append(b"Content-Length: 0")
        s.sendto(b"\r\n".join(lines) + b"\r\n\r\n", addr)
        m = MARK.search(data)
        if m:
            i = int(m.group(1))
            if i in seen:
                duplicates += 1
            else:
                seen.add(i)
                latencies.append(now - int(m.group(2)))
    s.close()
    result = {"received": len(seen), "duplicates": duplicates,
              "cpu_seconds": round(time.process_time() - cpu0, 4)}
    result.update(_stats(latencies))
    return result


# XMPP -----------------------------------------------------------------------


class RawXMPP:
    """
    A minimal c2s client on a plain socket: SASL PLAIN, bind, presence.
    """

    def __init__(self, host, port, user, domain, password, timeout=10):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.domain = domain
        self.buffer = b""
        self._open()
        self._until(b"</stream:features>")
        token = base64.b64encode(
            b"\0" + user.encode() + b"\0" + password.encode()).decode()
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                  "mechanism='PLAIN'>%s</auth>" % token)
        got = self._until(b"success", b"failure")
        if b"failure" in got:
            raise RuntimeError("XMPP login refused for %s" % (user,))
        self.buffer = b""
        self._open()
        self._until(b"</stream:features>")
        self.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:"
                  "xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>")
        self._until(b"</iq>")
        self.buffer = b""
        self.send("<presence/>")

    def _open(self):
        self.send("<?xml version='1.0'?><stream:stream to='%s' "
                  "xmlns='jabber:client' xmlns:stream='http://etherx.jabber"
                  ".org/streams' version='1.0'>" % (self.domain,))

    def _until(self, *markers):
        deadline = time.monotonic() + 10
        while not any(m in self.buffer for m in markers):
            if time.monotonic() > deadline:
                raise RuntimeError("XMPP: no %r in %r" % (markers, self.buffer))
            data = self.s.recv(65536)
            if not data:
                raise RuntimeError("XMPP: closed; got %r" % (self.buffer,))
            self.buffer += data
        return self.buffer

    def send(self, text):
        self.s.sendall(text.encode())


def xmppRecv(host, port, user, domain, password, expect, timeout, idle,
             bucket=None):
    """
    Count the bench messages received and their latency; with C{bucket}
    (a number of messages), also per bucket of message numbers (message
    C{i} is in bucket C{i // bucket}: with an open-loop sender at a fixed
    rate, a bucket is a slice of time, for latency drift).
    """
    client = RawXMPP(host, port, user, domain, password)
    buckets = {}
    print(json.dumps({"ready": True}), flush=True)
    cpu0 = time.process_time()
    s = client.s
    s.setblocking(False)
    seen = set()
    latencies = []
    duplicates = errors = 0
    tail = b""
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while len(seen) < expect and time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], 0.2)
        if not r:
            if seen and time.monotonic() - last > idle:
                break
            continue
        try:
            data = s.recv(1 << 20)
        except BlockingIOError:
            continue
        if not data:
            break
        now = _now()
        last = time.monotonic()
        chunk, tail = completeMessages(tail, data)
        if chunk is None:
            continue
        errors += chunk.count(b"type='error'")
        for m in MARK.finditer(chunk):
            i = int(m.group(1))
            if i in seen:
                duplicates += 1
            else:
                seen.add(i)
                latency = now - int(m.group(2))
                latencies.append(latency)
                if bucket:
                    buckets.setdefault(i // bucket, []).append(latency)
    s.close()
    result = {"received": len(seen), "duplicates": duplicates,
              "error_stanzas": errors,
              "cpu_seconds": round(time.process_time() - cpu0, 4)}
    result.update(_stats(latencies))
    if bucket:
        result["buckets"] = []
        for index in sorted(buckets):
            row = {"index": index, "received": len(buckets[index])}
            row.update(_stats(buckets[index]))
            result["buckets"].append(row)
    return result


def xmppLoad(host, port, user, domain, password, targetFormat, users, rate,
             count, drain):
    client = RawXMPP(host, port, user, domain, password)
    return _sendStanzas(
        client.s, rate, count, drain,
        lambda i: "<message to='%s' id='b%d'><body>bench i=%d t=%d</body>"
        "</message>" % (targetFormat % (i % users,), i, i, _now()))


def _sendStanzas(s, rate, count, drain, stanza):
    """
    Send C{stanza(i)} (text) on the XMPP stream C{s} for C{i} in
    C{range(count)}, at C{rate} per second on an open-loop schedule; then
    count the error stanzas that come back (for at most C{drain} seconds),
    close C{s} and report.
    """
    start = _now() + 50_000_000
    period = 1e9 / rate
    lateness = Lateness()
    cpu0 = time.process_time()
    for i in range(count):
        lateness.add(_wait(start + int(i * period)))
        s.sendall(stanza(i).encode())
    sendTime = (_now() - start) / 1e9
    cpu = time.process_time() - cpu0
    s.setblocking(False)
    errors = 0
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], 0.1)
        if r:
            try:
                data = s.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                break
            errors += data.count(b"type='error'")
    s.close()
    result = {"sent": count, "send_seconds": round(sendTime, 3),
              "offered_rate": round(count / sendTime, 1) if sendTime else None,
              "error_stanzas": errors, "cpu_seconds": round(cpu, 4)}
    result.update(lateness.asDict())
    return result


def componentHandshake(host, port, domain, secret, timeout=10):
    """
    Connect to C{host}:C{port} as the XEP-0114 component C{domain}; return
    the socket once the server has accepted the handshake.
    """
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall((
        "<stream:stream xmlns='jabber:component:accept' xmlns:stream="
        "'http://etherx.jabber.org/streams' to='%s'>" % (domain,)).encode())
    deadline = time.monotonic() + timeout
    buffer = b""

    def until(pattern):
        nonlocal buffer
        while True:
            found = re.search(pattern, buffer)
            if found:
                return found
            if time.monotonic() > deadline:
                raise RuntimeError("component: no %r in %r" % (pattern, buffer))
            data = s.recv(65536)
            if not data:
                raise RuntimeError("component: closed; got %r" % (buffer,))
            buffer += data

    header = until(rb"<stream:stream[^>]* id=['\"]([^'\"]+)['\"][^>]*>")
    streamID = header.group(1)
    buffer = buffer[header.end():]
    digest = hashlib.sha1(streamID + secret.encode()).hexdigest()
    s.sendall(b"<handshake>%s</handshake>" % digest.encode())
    if until(rb"<handshake\s*/>|</stream:stream>|<stream:error").group(0) \
            != b"<handshake/>":
        raise RuntimeError("component handshake refused: %r" % (buffer,))
    return s


def componentLoad(host, port, domain, secret, target, users, rate, count,
                  drain):
    """
    The floor for benchmark 2: a minimal component in the gateway's place.
    It connects to Prosody as the component C{domain} and writes, at
    C{rate}/s, the stanza the gateway writes for a bench MESSAGE (the same
    attributes and elements, from C{loadN*sip.example.com@domain} to
    C{target}), one C{send} per stanza and nothing else: no SIP, no
    confirmation pings. What the receiver then measures is what Prosody
    and the receiver add on this machine.
    """
    return _sendStanzas(
        componentHandshake(host, port, domain, secret), rate, count, drain,
        lambda i: "<message to='%s' from='load%d*sip.example.com@%s' "
        "id='floor-%032x'><body>bench i=%d t=%d</body>"
        "<thread>floor-%d</thread></message>"
        % (target, i % users, domain, i, i, _now(), i))


def main(argv):
    role, raw = argv[0], json.loads(argv[1])
    function = {"sip-load": sipLoad, "sip-recv": sipRecv,
                "xmpp-recv": xmppRecv, "xmpp-load": xmppLoad,
                "component-load": componentLoad}[role]
    print(json.dumps(function(**raw)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
