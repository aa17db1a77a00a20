"""
The interop test harness: real peers on loopback, driven synchronously.

  - L{PrivateProsody} (from L{xmppgw.localpeers}): a private Prosody.
  - L{XMPPClient}: a slixmpp client in a child process (C{xmpp_client.py}),
    with a bounded L{XMPPClient.expect}.
  - Raw SIP over sockets: L{buildRequest}/L{buildMessage}, L{sipSendUDP},
    L{sipSendTCP}, L{SIPUDPClient}, L{sipSendManyUDP}, and
    L{SIPReceiver}, a UDP or TCP SIP endpoint in a thread that answers
    MESSAGE with a chosen status and records what it got. The SIP parser
    here is deliberately independent of C{xmppgw.sip}: the tests must not
    check the gateway with its own code.
  - L{runSipp}/L{startSipp}: the C{sipp} load tester with the scenarios in
    C{tests/interop/sipp/}.
  - L{GatewayProcess}: C{twistd -n xmppgw --config FILE} in a child process.
  - L{requirePeers}: skip (outside CI) or fail (in CI) when a peer program is
    missing; L{SharedFixture}: peers shared by the tests of one class.

Everything waits with a deadline, every child process runs in its own process
group (killed at exit even if a test run is interrupted), and every failure
message carries the logs needed to understand it.
"""

import atexit
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from xmppgw.compat import tomllib
import uuid
from dataclasses import dataclass

from twisted.trial.unittest import SkipTest

from xmppgw.localpeers import (
    PeerError, PrivateProsody, findProgram, freePort, killProcessGroup,
    portAccepts, spawn, terminate, waitForPort)

HERE = os.path.dirname(os.path.abspath(__file__))
SIPP_DIR = os.path.join(HERE, "sipp")
XMPP_CLIENT = os.path.join(HERE, "xmpp_client.py")
LOCAL = "127.0.0.1"


class HarnessError(AssertionError):
    """
    A harness wait timed out or a peer misbehaved. An L{AssertionError} so
    that trial reports it as a test failure, with the details in the text.
    """


# --- environment -----------------------------------------------------------


def inCI():
    """
    Whether we run under CI (environment C{CI} set to a true value); then
    missing peers fail the tests instead of skipping them.
    """
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


PROGRAMS = {
    "prosody": "prosody",
    "prosodyctl": "prosody",
    "sipp": "sip-tester",
    "kamailio": "kamailio",
}


def requirePeers(*programs):
    """
    Make sure the peer programs are installed.

    @param programs: names from L{PROGRAMS} (C{"prosody"}, C{"sipp"} ...).
    @raise SkipTest: outside CI, when one is missing.
    @raise HarnessError: in CI, when one is missing (the interop tier never
        skips there).
    """
    missing = [p for p in programs if findProgram(p) is None]
    if not missing:
        return
    packages = sorted({PROGRAMS.get(p, p) for p in missing})
    message = (f"interop peer(s) not installed: {', '.join(missing)} "
               f"(Debian: apt-get install {' '.join(packages)}; "
               f"'make test' does it as root)")
    if inCI():
        raise HarnessError("CI: " + message)
    raise SkipTest(message)


def venvPython():
    """
    The Python running the tests (the project's venv under C{make test}).
    """
    return sys.executable


def twistdPath():
    """
    The C{twistd} next to the running Python (the venv's), or on C{PATH}.
    """
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("twistd")
    if found:
        return found
    raise HarnessError(f"twistd not found next to {sys.executable} nor on PATH")


def makeWorkdir(prefix):
    """
    A fresh directory for one peer's files: in trial's temporary folder
    (C{_trial_temp/peers/}) when run by trial, else in the system's.
    """
    base = None
    if "twisted.trial.runner" in sys.modules:
        # Under trial, the working directory is its temporary folder: keep
        # the peers' files next to test.log (trial clears it next run).
        base = os.path.join(os.getcwd(), "peers")
        os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{prefix}-", dir=base)


def readText(path, limit=None):
    """
    A file's text (UTF-8, errors replaced), its last C{limit} characters if
    given; empty when unreadable.
    """
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text[-limit:] if limit else text


def waitUntil(condition, timeout, interval=0.02, message="condition"):
    """
    Poll C{condition()} until it returns a true value, at most C{timeout}
    seconds.

    @return: the true value.
    @raise HarnessError: on timeout; C{message} may be a callable giving
        the text (evaluated only then).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise HarnessError(f"timed out after {timeout} s waiting for {text}")
        time.sleep(interval)


# --- SIP: building and parsing, independent of xmppgw.sip ---------------------

COMPACT = {
    "v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact",
    "l": "Content-Length", "c": "Content-Type", "e": "Content-Encoding",
    "s": "Subject", "k": "Supported", "o": "Event", "r": "Refer-To",
    "u": "Allow-Events",
}

_SPECIAL = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate":
            "WWW-Authenticate", "mime-version": "MIME-Version"}


def canonicalName(name):
    """
    A header name in its usual spelling, compact forms expanded.
    """
    name = name.strip()
    lower = name.lower()
    if lower in COMPACT:
        return COMPACT[lower]
    if lower in _SPECIAL:
        return _SPECIAL[lower]
    return "-".join(part.capitalize() for part in lower.split("-"))


@dataclass
class SIPMessage:
    """
    A parsed SIP request or response.

    @ivar startLine: the first line, as text.
    @ivar headers: C{[(canonicalName, value)]} in order, one per line.
    @ivar body: the body bytes (as delimited by Content-Length, if any).
    @ivar raw: the whole message as received.
    @ivar source: C{(host, port)} it came from, when known.
    @ivar transport: C{"udp"} or C{"tcp"}, when known.
    """

    startLine: str
    headers: list
    body: bytes
    raw: bytes = b""
    source: tuple = None
    transport: str = None
    received: float = 0.0

    @property
    def isRequest(self):
        return not self.startLine.startswith("SIP/")

    @property
    def method(self):
        return self.startLine.split(" ", 1)[0] if self.isRequest else None

    @property
    def uri(self):
        return self.startLine.split(" ")[1] if self.isRequest else None

    @property
    def code(self):
        if self.isRequest:
            return None
        return int(self.startLine.split(" ")[1])

    @property
    def reason(self):
        if self.isRequest:
            return None
        parts = self.startLine.split(" ", 2)
        return parts[2] if len(parts) > 2 else ""

    def header(self, name, default=None):
        """
        The first value of a header (case-insensitive name), or C{default}.
        """
        wanted = canonicalName(name)
        for key, value in self.headers:
            if key == wanted:
                return value
        return default

    def headerAll(self, name):
        """
        Every value of a header, one per header line, in order.
        """
        wanted = canonicalName(name)
        return [value for key, value in self.headers if key == wanted]

    def has(self, name):
        return self.header(name) is not None

    @property
    def callID(self):
        return self.header("Call-ID")

    @property
    def cseq(self):
        return self.header("CSeq")

    @property
    def branch(self):
        """
        The C{branch} parameter of the top Via.
        """
        via = self.header("Via") or ""
        match = re.search(r";\s*branch\s*=\s*([^;,\s]+)", via, re.I)
        return match.group(1) if match else None

    def text(self):
        """
        The body decoded as UTF-8 (strict: a bad byte raises).
        """
        return self.body.decode("utf-8")

    def __str__(self):
        return self.raw.decode("utf-8", "replace") if self.raw else self.startLine


class SIPParseError(ValueError):
    pass


def parseSIP(data):
    """
    Parse one complete SIP message (a datagram or a framed stream message).

    @raise SIPParseError: when it is not a SIP message.
    """
    if b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
    elif b"\n\n" in data:
        head, _, rest = data.partition(b"\n\n")
    else:
        head, rest = data, b""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SIPParseError(f"header not UTF-8: {e}")
    lines = re.split(r"\r?\n", text)
    start = lines[0].strip()
    if not (start.startswith("SIP/2.0 ") or start.endswith(" SIP/2.0")):
        raise SIPParseError(f"not a SIP start line: {start!r}")
    headers = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise SIPParseError(f"bad header line {line!r}")
        headers.append((canonicalName(name), value.strip()))
    body = rest
    for name, value in headers:
        if name == "Content-Length":
            try:
                length = int(value)
            except ValueError:
                raise SIPParseError(f"bad Content-Length {value!r}")
            body = rest[:length]
            break
    return SIPMessage(start, headers, body, raw=data)


def newCallID():
    return f"{uuid.uuid4().hex}@127.0.0.1"


def newBranch():
    return "z9hG4bK" + uuid.uuid4().hex[:20]


def newTag():
    return uuid.uuid4().hex[:10]


def buildRequest(method, requestURI, fromURI, toURI, body=b"",
                 contentType=None, transport="UDP", viaHost=LOCAL,
                 viaPort=None, callID=None, branch=None, fromTag=None,
                 cseq=1, maxForwards=70, extraHeaders=()):
    """
    Build a SIP request as bytes: Via (with C{branch} and C{rport}),
    Max-Forwards, From (with tag), To, Call-ID, CSeq, the extra headers,
    Content-Type (when given) and a correct byte Content-Length.

    @param body: C{str} (sent as UTF-8) or C{bytes}.
    @param viaPort: the sent-by port; leave L{None} with L{sipSendUDP} /
        L{SIPUDPClient}, which use C{;rport} and get the answer on their
        source port anyway, or give the local port for exactness.
    @param extraHeaders: C{[(name, value)]} added before Content-Type.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    sentBy = viaHost if viaPort is None else f"{viaHost}:{viaPort}"
    lines = [
        f"{method} {requestURI} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {sentBy};branch={branch or newBranch()};rport",
    ]
    if maxForwards is not None:
        lines.append(f"Max-Forwards: {maxForwards}")
    lines += [
        f"From: <{fromURI}>;tag={fromTag or newTag()}",
        f"To: <{toURI}>",
        f"Call-ID: {callID or newCallID()}",
        f"CSeq: {cseq} {method}",
    ]
    lines += [f"{name}: {value}" for name, value in extraHeaders]
    if contentType:
        lines.append(f"Content-Type: {contentType}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def buildMessage(requestURI, fromURI, body, toURI=None,
                 contentType="text/plain;charset=UTF-8", **kwargs):
    """
    Build a SIP MESSAGE (L{buildRequest} with C{text/plain;charset=UTF-8}
    and C{To} = the Request-URI unless given).
    """
    return buildRequest("MESSAGE", requestURI, fromURI, toURI or requestURI,
                        body=body, contentType=contentType, **kwargs)


def buildOptions(requestURI, fromURI="sip:probe@127.0.0.1", **kwargs):
    """
    Build a SIP OPTIONS request.
    """
    return buildRequest("OPTIONS", requestURI, fromURI, requestURI,
                        extraHeaders=[("Accept", "application/sdp")], **kwargs)


def buildResponse(request, code, reason=None, toTag=None, extraHeaders=()):
    """
    A response to a parsed request: Via (all, in order), From, To (with a
    tag), Call-ID, CSeq copied; Content-Length 0.
    """
    reason = reason or REASONS.get(code, "Unknown")
    lines = [f"SIP/2.0 {code} {reason}"]
    for value in request.headerAll("Via"):
        lines.append(f"Via: {value}")
    lines.append(f"From: {request.header('From', '')}")
    to = request.header("To", "")
    if ";tag=" not in to.replace(" ", "").lower():
        to += f";tag={toTag or newTag()}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {request.header('Call-ID', '')}")
    lines.append(f"CSeq: {request.header('CSeq', '')}")
    lines += [f"{name}: {value}" for name, value in extraHeaders]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


REASONS = {
    100: "Trying", 200: "OK", 202: "Accepted", 400: "Bad Request",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 415: "Unsupported Media Type",
    480: "Temporarily Unavailable", 486: "Busy Here",
    500: "Server Internal Error", 503: "Service Unavailable",
    603: "Decline",
}


class StreamFramer:
    """
    Split a SIP byte stream into messages by Content-Length (bounded).
    """

    def __init__(self, maxSize=1 << 20):
        self.buffer = b""
        self.maxSize = maxSize

    def feed(self, data):
        self.buffer += data
        if len(self.buffer) > self.maxSize:
            raise SIPParseError("stream buffer over its bound")
        out = []
        while True:
            self.buffer = self.buffer.lstrip(b"\r\n")
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return out
            head = self.buffer[:end].decode("utf-8", "replace")
            match = re.search(r"^(?:content-length|l)\s*:\s*(\d+)\s*$", head,
                              re.I | re.M)
            length = int(match.group(1)) if match else 0
            total = end + 4 + length
            if len(self.buffer) < total:
                return out
            out.append(self.buffer[:total])
            self.buffer = self.buffer[total:]


def _sameTransaction(response, callID, cseq):
    return response.callID == callID and response.cseq == cseq


def _requestKeys(request):
    parsed = parseSIP(request)
    return parsed.callID, parsed.cseq


class SIPUDPClient:
    """
    A UDP socket on 127.0.0.1 for sending SIP requests and reading answers.

    @ivar port: the local port.
    @ivar received: every message received, in order.
    """

    def __init__(self, localPort=0, host=LOCAL):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, localPort))
        self.port = self.sock.getsockname()[1]
        self.received = []

    def send(self, host, port, data):
        self.sock.sendto(data, (host, port))

    def receive(self, timeout):
        """
        The next SIP message within C{timeout} seconds, or L{None}.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return None
            data, source = self.sock.recvfrom(65535)
            try:
                message = parseSIP(data)
            except SIPParseError:
                continue
            message.source, message.transport = source, "udp"
            message.received = time.monotonic()
            self.received.append(message)
            return message

    def request(self, host, port, data, timeout=5.0, retransmit=True,
                t1=0.5, t2=4.0):
        """
        Send a request and wait for its final response (1xx skipped),
        retransmitting per RFC 3261 Timer E when C{retransmit}.

        @raise HarnessError: no final response within C{timeout} s.
        """
        callID, cseq = _requestKeys(data)
        self.send(host, port, data)
        start = time.monotonic()
        deadline = start + timeout
        interval = t1
        nextSend = start + interval
        provisional = []
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise HarnessError(
                    f"no final SIP response from {host}:{port} within "
                    f"{timeout} s (provisional: "
                    f"{[p.startLine for p in provisional]}) to:\n"
                    f"{data.decode('utf-8', 'replace')}")
            wait = deadline - now
            if retransmit:
                wait = min(wait, max(0.0, nextSend - now))
            message = self.receive(wait)
            if message is None:
                if retransmit and time.monotonic() >= nextSend:
                    self.send(host, port, data)
                    interval = min(interval * 2, t2)
                    nextSend = time.monotonic() + interval
                continue
            if message.isRequest or not _sameTransaction(message, callID, cseq):
                continue
            if message.code < 200:
                provisional.append(message)
                continue
            return message

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def sipSendUDP(host, port, request, timeout=5.0, localPort=0, retransmit=True):
    """
    Send one SIP request over UDP from a fresh socket and return the final
    response (a L{SIPMessage}).

    @raise HarnessError: no final response within C{timeout} seconds.
    """
    with SIPUDPClient(localPort) as client:
        return client.request(host, port, request, timeout, retransmit)


def sipSendTCP(host, port, request, timeout=5.0):
    """
    Send one SIP request over a fresh TCP connection and return the final
    response (1xx skipped).

    @raise HarnessError: on connection failure, or no final response within
        C{timeout} seconds.
    """
    callID, cseq = _requestKeys(request)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise HarnessError(f"TCP connect to {host}:{port} failed: {e}")
    framer = StreamFramer()
    seen = []
    try:
        sock.sendall(request)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            for raw in framer.feed(data):
                message = parseSIP(raw)
                message.source, message.transport = (host, port), "tcp"
                seen.append(message.startLine)
                if (not message.isRequest and message.code >= 200
                        and _sameTransaction(message, callID, cseq)):
                    return message
    finally:
        sock.close()
    raise HarnessError(
        f"no final SIP response over TCP from {host}:{port} within {timeout} s "
        f"(got: {seen}) to:\n{request.decode('utf-8', 'replace')}")


def sipSendManyUDP(host, port, requests, rate=50.0, timeout=32.0, t1=0.5,
                   t2=4.0, onSent=None, localPort=0, beforeSend=None,
                   answeredAt=None):
    """
    Send many SIP requests over one UDP socket at C{rate} per second, each
    retransmitted per Timer E until its final response or C{timeout}
    seconds (Timer F) after it was first sent.

    @param onSent: called as C{onSent(index)} right after the first send of
        each request (e.g. to signal another thread mid-stream).
    @param localPort: the UDP port to send from (to match the requests'
        Via), or 0 for any.
    @param beforeSend: called as C{beforeSend(index)} before the first send
        of each request; it may block (bounded!) to pause the stream, and
        the pacing restarts from when it returns. Answers and
        retransmissions of earlier requests are not handled meanwhile.
    @param answeredAt: a list as long as C{requests}, or L{None}: each
        request's entry is set to the C{time.monotonic()} its final
        response arrived.
    @return: a list, per request, of the final L{SIPMessage} or L{None}.
    """
    keys = [_requestKeys(r) for r in requests]
    index = {key: i for i, key in enumerate(keys)}
    results = [None] * len(requests)
    firstSent = [None] * len(requests)
    nextSend = [None] * len(requests)
    intervals = [t1] * len(requests)
    client = SIPUDPClient(localPort)
    start = time.monotonic()
    try:
        sent = 0
        while True:
            now = time.monotonic()
            while sent < len(requests) and now >= start + sent / rate:
                if beforeSend is not None:
                    beforeSend(sent)
                    later = time.monotonic()
                    start += max(0.0, later - now)
                    now = later
                client.send(host, port, requests[sent])
                firstSent[sent] = now
                nextSend[sent] = now + t1
                if onSent is not None:
                    onSent(sent)
                sent += 1
                now = time.monotonic()
            pending = [i for i in range(sent) if results[i] is None
                       and now < firstSent[i] + timeout]
            if sent == len(requests) and not pending:
                break
            for i in pending:
                if now >= nextSend[i]:
                    client.send(host, port, requests[i])
                    intervals[i] = min(intervals[i] * 2, t2)
                    nextSend[i] = now + intervals[i]
            wakeups = [nextSend[i] for i in pending]
            wakeups += [firstSent[i] + timeout for i in pending]
            if sent < len(requests):
                wakeups.append(start + sent / rate)
            wait = max(0.0, min(wakeups) - time.monotonic()) if wakeups else 0.05
            message = client.receive(min(wait, 0.2))
            if message is None or message.isRequest:
                continue
            i = index.get((message.callID, message.cseq))
            if i is not None and message.code >= 200 and results[i] is None:
                results[i] = message
                if answeredAt is not None:
                    answeredAt[i] = time.monotonic()
    finally:
        client.close()
    return results


class SIPReceiver:
    """
    A SIP endpoint on 127.0.0.1 (UDP or TCP) run by a thread: it answers
    MESSAGE with C{status} (default 200; L{None} = stay silent; or a
    callable C{status(request) -> code or None}), OPTIONS with 200, anything
    else with 405, and records every request received (retransmissions
    included) in L{requests}, up to C{maxRequests}.

    @ivar port: the bound port.
    @ivar requests: the received requests (L{SIPMessage}), in order.
    """

    def __init__(self, proto="udp", port=0, status=200, host=LOCAL,
                 maxRequests=10000, maxConnections=64):
        if proto not in ("udp", "tcp"):
            raise ValueError(f"proto must be udp or tcp, not {proto!r}")
        self.proto = proto
        self.host = host
        self.status = status
        self.maxRequests = maxRequests
        self.maxConnections = maxConnections
        self.requests = []
        self.errors = []
        self._lock = threading.Condition()
        self._stop = threading.Event()
        if proto == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        if proto == "tcp":
            self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._connections = {}
        self._thread = threading.Thread(
            target=self._run, name=f"SIPReceiver-{proto}-{self.port}",
            daemon=True)

    @property
    def uri(self):
        """
        A SIP URI that routes to this receiver (for C{outbound_proxy}).
        """
        return f"sip:{self.host}:{self.port};transport={self.proto}"

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        self._stop.set()
        self._thread.join(timeout)
        for conn in list(self._connections):
            conn.close()
        self._connections.clear()
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def clear(self):
        with self._lock:
            del self.requests[:]

    def _statusFor(self, request):
        status = self.status
        if callable(status):
            status = status(request)
        return status

    def _answer(self, request):
        if request.method == "ACK":
            return None
        if request.method == "OPTIONS":
            return buildResponse(request, 200, extraHeaders=[
                ("Allow", "MESSAGE, OPTIONS")])
        if request.method != "MESSAGE":
            return buildResponse(request, 405, extraHeaders=[
                ("Allow", "MESSAGE, OPTIONS")])
        status = self._statusFor(request)
        if status is None:
            return None
        return buildResponse(request, int(status))

    def _record(self, raw, source):
        try:
            request = parseSIP(raw)
        except SIPParseError as e:
            self.errors.append(f"{source}: {e}: {raw[:200]!r}")
            return None
        if not request.isRequest:
            return None
        request.source, request.transport = source, self.proto
        request.received = time.monotonic()
        with self._lock:
            if len(self.requests) < self.maxRequests:
                self.requests.append(request)
            self._lock.notify_all()
        return request

    def _run(self):
        try:
            while not self._stop.is_set():
                sockets = [self.sock] + list(self._connections)
                ready, _, _ = select.select(sockets, [], [], 0.05)
                for sock in ready:
                    if self.proto == "udp":
                        self._readUDP()
                    elif sock is self.sock:
                        self._accept()
                    else:
                        self._readTCP(sock)
        except Exception as e:  # pragma: no cover - reported by the tests
            self.errors.append(f"receiver thread died: {e!r}")

    def _readUDP(self):
        data, source = self.sock.recvfrom(65535)
        request = self._record(data, source)
        if request is not None:
            answer = self._answer(request)
            if answer is not None:
                self.sock.sendto(answer, source)

    def _accept(self):
        conn, source = self.sock.accept()
        if len(self._connections) >= self.maxConnections:
            conn.close()
            self.errors.append(f"connection from {source} refused: too many")
            return
        self._connections[conn] = (StreamFramer(), source)

    def _readTCP(self, conn):
        framer, source = self._connections[conn]
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            conn.close()
            del self._connections[conn]
            return
        try:
            messages = framer.feed(data)
        except SIPParseError as e:
            self.errors.append(f"{source}: {e}")
            conn.close()
            del self._connections[conn]
            return
        for raw in messages:
            request = self._record(raw, source)
            if request is not None:
                answer = self._answer(request)
                if answer is not None:
                    try:
                        conn.sendall(answer)
                    except OSError as e:
                        self.errors.append(f"{source}: send failed: {e}")

    def matching(self, predicate=None):
        """
        A snapshot of the received requests for which C{predicate} holds.
        """
        with self._lock:
            return [r for r in self.requests
                    if predicate is None or predicate(r)]

    def waitForMatching(self, predicate, count=1, timeout=10.0):
        """
        Wait until at least C{count} received requests match C{predicate}.

        @return: those requests, in arrival order.
        @raise HarnessError: on timeout, listing what was received.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [r for r in self.requests if predicate(r)]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(
                        f"{self.proto} receiver :{self.port} got {len(got)} "
                        f"matching requests (wanted {count}) in {timeout} s; "
                        f"all: {[r.startLine for r in self.requests]}; "
                        f"errors: {self.errors}")
                self._lock.wait(min(left, 0.1))

    def waitFor(self, count, timeout=10.0, method="MESSAGE"):
        """
        Wait until at least C{count} requests of C{method} were received
        (retransmissions count too).

        @return: those requests.
        """
        return self.waitForMatching(lambda r: r.method == method, count,
                                    timeout)


# --- sipp ------------------------------------------------------------------

_STAT_RE = re.compile(
    r"^\s*(Successful call|Failed call|Total Call created|Dead call msg \(discarded\)|"
    r"Out-of-call msg \(discarded\)|Retransmissions)\s*\|\s*(\d+)\s*\|\s*(\d+)",
    re.M)


@dataclass
class SippResult:
    """
    The outcome of a sipp run.

    @ivar returncode: sipp's exit status (0: every call succeeded; 1: some
        failed; 97/99: other exits; negative or -N: killed/fatal).
    @ivar stats: C{{"Successful call": n, "Failed call": n, ...}} (the
        cumulative column of sipp's final screen).
    @ivar output: sipp's stdout/stderr text.
    @ivar errors: the C{-trace_err} log text (unexpected messages).
    @ivar workdir: where sipp ran and left its files.
    """

    returncode: int
    stats: dict
    output: str
    errors: str
    workdir: str

    @property
    def successful(self):
        return self.stats.get("Successful call", 0)

    @property
    def failed(self):
        return self.stats.get("Failed call", 0)

    def describe(self):
        return (f"sipp exit {self.returncode}, stats {self.stats}\n"
                f"--- errors:\n{self.errors[-3000:]}\n"
                f"--- output:\n{self.output[-3000:]}")


def parseSippStats(text):
    """
    The cumulative counters of sipp's last statistics screen.
    """
    stats = {}
    for match in _STAT_RE.finditer(text):
        stats[match.group(1)] = int(match.group(3))
    return stats


class SippProcess:
    """
    A running sipp (see L{startSipp}).
    """

    def __init__(self, process, workdir, scenario, outputPath, timeout):
        self.process = process
        self.workdir = workdir
        self.scenario = scenario
        self.outputPath = outputPath
        self.timeout = timeout

    def wait(self, timeout=None):
        """
        Wait for sipp to exit (killing it after C{timeout}, default its own
        global timeout plus 10 s) and collect the result.
        """
        timeout = self.timeout + 10 if timeout is None else timeout
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            terminate(self.process, 2.0)
        output = readText(self.outputPath)
        errors = ""
        base = os.path.splitext(os.path.basename(self.scenario))[0]
        for name in sorted(os.listdir(self.workdir)):
            if name.startswith(base) and name.endswith("_errors.log"):
                errors += readText(os.path.join(self.workdir, name))
        return SippResult(self.process.returncode, parseSippStats(output),
                          output, errors, self.workdir)

    def kill(self):
        terminate(self.process, 1.0)


def startSipp(scenario, target=None, count=1, rate=10.0, transport="udp",
              localPort=None, timeout=20, keys=None, extraArgs=(),
              workdir=None, limit=None):
    """
    Start sipp in the background.

    @param scenario: a file name in C{tests/interop/sipp/} or a path.
    @param target: C{"host:port"} for a UAC; L{None} for a UAS.
    @param count: C{-m}: exit after this many calls.
    @param rate: C{-r}: calls per second.
    @param transport: C{"udp"} (C{-t u1}) or C{"tcp"} (C{-t t1}).
    @param localPort: C{-p} (chosen free if L{None}).
    @param timeout: sipp's global C{-timeout} in seconds.
    @param keys: C{{keyword: value}} passed as C{-key keyword value}.
    @param limit: C{-l} (defaults to C{count}).
    @return: a L{SippProcess}; call C{.wait()}.
    """
    requirePeers("sipp")
    path = scenario if os.path.isabs(scenario) else os.path.join(SIPP_DIR, scenario)
    if not os.path.exists(path):
        raise HarnessError(f"no sipp scenario {path}")
    workdir = workdir or makeWorkdir("sipp")
    local = os.path.join(workdir, os.path.basename(path))
    shutil.copyfile(path, local)
    port = localPort or freePort("both" if transport == "udp" else "tcp")
    mode = {"udp": "u1", "tcp": "t1"}[transport]
    argv = [findProgram("sipp"), "-sf", local,
            "-m", str(count), "-l", str(limit or count), "-r", str(rate),
            "-t", mode, "-i", LOCAL, "-p", str(port),
            "-timeout", f"{int(timeout)}s", "-timeout_error",
            "-trace_err", "-nostdin",
            # abort a call on an unexpected message (a 404 fails it), but
            # never send the BYE that sipp uses to end aborted INVITE calls
            "-default_behaviors", "all,-bye"]
    for name, value in (keys or {}).items():
        argv += ["-key", name, str(value)]
    argv += list(extraArgs)
    if target:
        argv.append(target)
    outputPath = os.path.join(workdir, "sipp.out")
    process = spawn(argv, logPath=outputPath, cwd=workdir)
    sipp = SippProcess(process, workdir, local, outputPath, timeout)
    sipp.port = port
    return sipp


def runSipp(scenario, target=None, **kwargs):
    """
    Run sipp to completion (see L{startSipp}) and return its L{SippResult}.
    """
    return startSipp(scenario, target, **kwargs).wait()


def waitForSippUAS(sipp, timeout=5.0):
    """
    Wait until a sipp UAS (L{startSipp} without target) answers on its UDP
    port: sipp binds quickly but not instantly.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sipp.process.poll() is not None:
            raise HarnessError("sipp exited early:\n" + readText(sipp.outputPath))
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((LOCAL, sipp.port))
        except OSError:
            return True
        finally:
            probe.close()
        time.sleep(0.05)
    raise HarnessError(f"sipp did not bind {LOCAL}:{sipp.port} in {timeout} s")


# --- XMPP client -------------------------------------------------------------


def messageWith(**fields):
    """
    A predicate for L{XMPPClient.expect}: a received message event whose
    fields (C{id}, C{from}, C{body}, C{type} ...) equal the given ones.
    Use C{from_} for C{from}.
    """
    wanted = {("from" if k == "from_" else k): v for k, v in fields.items()}

    def predicate(event):
        return event.get("kind") == "message" and all(
            event.get(k) == v for k, v in wanted.items())
    return predicate


class XMPPClient:
    """
    A slixmpp client in a child process (C{xmpp_client.py}): JSON events
    out, JSON commands in.

    @ivar events: every event received so far (dicts), in order.
    """

    def __init__(self, jid, password, port, host=LOCAL, workdir=None):
        self.jid = jid
        self.password = password
        self.port = port
        self.host = host
        self.workdir = workdir or makeWorkdir("xmppclient")
        self.stderrPath = os.path.join(
            self.workdir, re.sub(r"[^\w.@-]", "_", jid) + ".stderr")
        self.process = None
        self.events = []
        self._consumed = set()
        self._cond = threading.Condition()
        self._reader = None

    def start(self, timeout=15.0):
        """
        Start the client and wait (bounded) until it is online.
        """
        self.process = spawn(
            [venvPython(), XMPP_CLIENT, self.jid, self.password, self.host,
             str(self.port)],
            logPath=self.stderrPath, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        self._reader = threading.Thread(
            target=self._read, name=f"XMPPClient-{self.jid}", daemon=True)
        self._reader.start()
        self.waitReady(timeout)
        return self

    def _read(self):
        for line in self.process.stdout:
            try:
                event = json.loads(line.decode("utf-8"))
            except ValueError:
                event = {"kind": "garbage", "text": line.decode("utf-8", "replace")}
            event["_t"] = time.monotonic()
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self.events.append({"kind": "exited", "_t": time.monotonic()})
            self._cond.notify_all()

    def readyCount(self):
        with self._cond:
            return sum(1 for e in self.events if e.get("kind") == "ready")

    def waitReady(self, timeout=15.0, count=1):
        """
        Wait until the client has been online C{count} times in all (a
        reconnection makes a new C{ready}).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ready = [e for e in self.events if e.get("kind") == "ready"]
                if len(ready) >= count:
                    return ready[-1]
                if any(e.get("kind") in ("exited", "auth_failed")
                       for e in self.events):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        raise HarnessError(
            f"XMPP client {self.jid} not online (ready #{count}) within "
            f"{timeout} s on {self.host}:{self.port}.\n{self.describe()}")

    def command(self, **cmd):
        if self.process is None or self.process.poll() is not None:
            raise HarnessError(f"XMPP client {self.jid} is not running.\n"
                               f"{self.describe()}")
        line = json.dumps(cmd, ensure_ascii=False) + "\n"
        try:
            self.process.stdin.write(line.encode("utf-8"))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise HarnessError(f"XMPP client {self.jid}: {e}\n{self.describe()}")

    def send(self, to, body=None, id=None, lang=None, subject=None,
             type=None, thread=None):
        """
        Send a C{<message/>}; only the given fields are set (no C{type}
        attribute unless given).
        """
        cmd = {"cmd": "send", "to": to}
        for name, value in (("body", body), ("id", id), ("lang", lang),
                            ("subject", subject), ("type", type),
                            ("thread", thread)):
            if value is not None:
                cmd[name] = value
        self.command(**cmd)

    def expect(self, predicate, timeout=10.0, consume=True):
        """
        The first event (in arrival order, not yet returned by an earlier
        C{expect}) for which C{predicate(event)} is true, waiting at most
        C{timeout} seconds.

        @raise HarnessError: on timeout, listing everything received.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, event in enumerate(self.events):
                    if i in self._consumed:
                        continue
                    if predicate(event):
                        if consume:
                            self._consumed.add(i)
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        raise HarnessError(
            f"XMPP client {self.jid}: no matching event within {timeout} s.\n"
            f"{self.describe()}")

    def expectMessage(self, timeout=10.0, **fields):
        """
        L{expect} a received C{<message/>} whose fields equal C{fields}
        (e.g. C{id="m1"}).
        """
        return self.expect(messageWith(**fields), timeout=timeout)

    def messages(self, predicate=None):
        """
        A snapshot of the received message events (optionally filtered).
        """
        with self._cond:
            return [e for e in self.events if e.get("kind") == "message"
                    and (predicate is None or predicate(e))]

    def waitMessages(self, predicate, count, timeout=10.0):
        """
        Wait until at least C{count} received messages match C{predicate}.

        @return: those messages.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [e for e in self.events if e.get("kind") == "message"
                       and predicate(e)]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        raise HarnessError(
            f"XMPP client {self.jid}: {len(got)} matching messages, wanted "
            f"{count}, within {timeout} s.\n{self.describe()}")

    def describe(self, limit=60):
        with self._cond:
            events = list(self.events)
        shown = events[-limit:]
        lines = [json.dumps({k: v for k, v in e.items() if k != "_t"},
                            ensure_ascii=False) for e in shown]
        status = None if self.process is None else self.process.poll()
        return (f"--- {len(events)} events from {self.jid} (last {len(shown)}), "
                f"process status {status}:\n" + "\n".join(lines)
                + f"\n--- stderr:\n{readText(self.stderrPath, 3000)}")

    def stop(self, timeout=5.0):
        """
        Ask the client to quit, then make sure it is gone.
        """
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                process.stdin.write(b'{"cmd": "quit"}\n')
                process.stdin.flush()
                process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        terminate(process, 1.0)
        if process.stdout:
            process.stdout.close()
        if self._reader is not None:
            self._reader.join(2.0)


# --- the gateway ---------------------------------------------------------------

AUTHENTICATED_LINE = "XMPP component link authenticated"


class GatewayProcess:
    """
    The gateway as C{twistd -n --pidfile= --logfile LOG xmppgw --config F}
    in a child process.

    @ivar sipPort: the SIP port read from the config's first C{udp:} (else
        C{tcp:}) listen entry, used for the readiness probe.
    @ivar twistd: the C{twistd} program to run (another interpreter's, e.g.
        PyPy's), or L{None} for L{twistdPath}.
    @ivar environ: variables added to the child's environment (ours), or
        L{None}.
    """

    def __init__(self, configText, workdir=None, name="gateway", twistd=None,
                 environ=None):
        self.configText = configText
        self.twistd = twistd
        self.environ = environ
        self.workdir = workdir or makeWorkdir(name)
        self.configPath = os.path.join(self.workdir, "xmppgw.toml")
        self.logPath = os.path.join(self.workdir, "twistd.log")
        self.consolePath = os.path.join(self.workdir, "console.log")
        self.process = None
        config = tomllib.loads(configText)
        self.listen = list(config.get("sip", {}).get("listen", []))
        self.sipTransport, self.sipPort = self._probeTarget(self.listen)

    @staticmethod
    def _probeTarget(listen):
        for wanted in ("udp", "tcp"):
            for entry in listen:
                proto, _, rest = entry.partition(":")
                if proto.lower() == wanted:
                    port = rest.rsplit(":", 1)[-1]
                    return wanted, int(port)
        raise HarnessError(f"gateway config has no udp/tcp sip.listen: {listen}")

    def start(self, timeout=20.0, waitForLink=True):
        """
        Write the config, start twistd, and wait until the SIP port answers
        OPTIONS with 200 and (unless C{waitForLink} is false) the log says
        the component link is authenticated. With C{waitForLink} false an
        OPTIONS answer of 503 (the gateway's answer while its XMPP link is
        down, C{[sip] options_follow_link}) also counts as up.

        @raise HarnessError: with the logs, if it did not come up in time.
        """
        with open(self.configPath, "w", encoding="utf-8") as f:
            f.write(self.configText)
        argv = [self.twistd or twistdPath(), "-n", "--pidfile=",
                "--logfile", self.logPath,
                "xmppgw", "--config", self.configPath]
        env = dict(os.environ, **self.environ) if self.environ else None
        self.process = spawn(argv, logPath=self.consolePath, cwd=self.workdir,
                             env=env)
        deadline = time.monotonic() + timeout
        try:
            self._waitOptions(deadline, (200,) if waitForLink else (200, 503))
            if waitForLink:
                self.waitForLog(AUTHENTICATED_LINE,
                                max(0.1, deadline - time.monotonic()))
        except HarnessError:
            self.kill()
            raise
        return self

    def _waitOptions(self, deadline, codes=(200,)):
        last = None
        while True:
            if self.process.poll() is not None:
                raise HarnessError(
                    f"gateway exited with status {self.process.returncode} "
                    f"during start-up.\n{self.describe()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError(
                    f"gateway SIP {self.sipTransport} port {self.sipPort} did "
                    f"not answer OPTIONS 200 (last: {last}).\n{self.describe()}")
            request = buildOptions(f"sip:{LOCAL}:{self.sipPort}",
                                   transport=self.sipTransport.upper())
            try:
                if self.sipTransport == "udp":
                    response = sipSendUDP(LOCAL, self.sipPort, request,
                                          timeout=min(0.5, left),
                                          retransmit=False)
                else:
                    response = sipSendTCP(LOCAL, self.sipPort, request,
                                          timeout=min(0.5, left))
            except (HarnessError, OSError) as e:
                last = str(e).splitlines()[0]
                time.sleep(0.05)
                continue
            if response.code in codes:
                return response
            last = response.startLine
            time.sleep(0.25)

    def waitForLog(self, text, timeout=10.0, count=1):
        """
        Wait until C{text} appears at least C{count} times in the log.
        """
        def seen():
            if self.log().count(text) >= count:
                return True
            if self.process is None or self.process.poll() is not None:
                raise HarnessError(
                    f"gateway not running while waiting for {text!r}.\n"
                    f"{self.describe()}")
            return False

        waitUntil(
            seen,
            timeout,
            message=lambda: f"{text!r} x{count} in the gateway log.\n"
                            f"{self.describe()}")

    def log(self):
        """
        The twistd log so far.
        """
        return readText(self.logPath)

    def describe(self):
        return (f"--- gateway config {self.configPath}:\n{self.configText}\n"
                f"--- console:\n{readText(self.consolePath, 3000)}\n"
                f"--- log (tail):\n{readText(self.logPath, 6000)}")

    def running(self):
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout=10.0):
        """
        SIGTERM (twistd stops its services), SIGKILL after C{timeout}.
        """
        process, self.process = self.process, None
        return terminate(process, timeout)

    def kill(self):
        process, self.process = self.process, None
        if process is not None:
            killProcessGroup(process, signal.SIGKILL)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            return process.returncode


#: C{[log] flush_interval} of the gateways the tests run: every line at
#: once, so that what a test reads from the log is all that was logged
#: (C{tests.interop.test_operations} runs one with the default).
LOG_FLUSH = 0


def gatewayConfig(prosody, sipPort, gwmap=None, outboundProxy=None,
                  t1=None, holdTimeout=None, separator="*", extraSIP=None,
                  extraXMPP=None, domain=None, listen=None):
    """
    The TOML config of a component-mode gateway for a L{PrivateProsody}.

    @param sipPort: the port for both the C{udp:} and the C{tcp:} listener.
    @param gwmap: a list of C{"sipdomain=xmppdomain"} strings, or L{None}.
    @param outboundProxy: a SIP URI for C{outbound_proxy}, or L{None}.
    @param t1: C{t1_interval} seconds, or L{None} for the default.
    @param holdTimeout: C{hold_timeout} seconds, or L{None}.
    @param extraSIP: C{{key: TOML text}} added under C{[sip]}.
    """
    domain = domain or prosody.componentDomain

    def q(text):
        return json.dumps(text, ensure_ascii=False)

    listen = listen or [f"udp:{LOCAL}:{sipPort}", f"tcp:{LOCAL}:{sipPort}"]
    lines = [
        "[xmpp]",
        'backend = "component"',
        f"domain_separator = {q(separator)}",
        f"gateway_domain = {q(domain)}",
        f"xmpp_domain = {q(domain)}",
        f"xmpp_host = {q(LOCAL)}",
        f"xmpp_port = {int(prosody.componentPort)}",
        f"xmpp_password = {q(prosody.componentSecret)}",
        "reconnect_initial_interval = 0.2",
        "reconnect_max_interval = 1.0",
    ]
    if gwmap:
        lines.append("gwmap = [" + ", ".join(q(g) for g in gwmap) + "]")
    if outboundProxy:
        lines.append(f"outbound_proxy = {q(outboundProxy)}")
    for key, value in (extraXMPP or {}).items():
        lines.append(f"{key} = {value}")
    lines += ["", "[sip]",
              "listen = [" + ", ".join(q(entry) for entry in listen) + "]"]
    if t1 is not None:
        lines.append(f"t1_interval = {t1}")
    if holdTimeout is not None:
        lines.append(f"hold_timeout = {holdTimeout}")
    for key, value in (extraSIP or {}).items():
        lines.append(f"{key} = {value}")
    lines += ["", "[log]", "messages = true", "traffic_sip = true",
              "traffic_xmpp = true", f"flush_interval = {LOG_FLUSH}", ""]
    return "\n".join(lines)


# --- fixtures shared by the tests of a class -------------------------------------


class SharedFixture:
    """
    Peers shared by the tests of one test class.

    Trial has no C{setUpClass}/C{tearDownClass}, so a test class calls
    L{SharedFixture.acquire} from C{setUp}: the first test of the class
    builds its peers (by calling the class's C{setUpClass}), the following
    ones reuse them, and they are torn down (C{tearDownClass}) as soon as a
    test of another class acquires its own, or at interpreter exit. Trial
    runs the tests of a class one after the other, so at most one class's
    peers run at any time. If C{setUpClass} fails, C{tearDownClass} still
    runs (it must cope with half-built state), and the failure is
    remembered so that the other tests of the class fail at once with the
    same reason instead of retrying for minutes.
    """

    _current = None
    _failed = {}

    @classmethod
    def acquire(cls, testClass):
        if cls._current is testClass:
            return
        cls.release()
        if testClass in cls._failed:
            raise HarnessError(
                f"peers of {testClass.__name__} failed to start earlier:\n"
                f"{cls._failed[testClass]}")
        cls._current = testClass
        try:
            testClass.setUpClass()
        except SkipTest:
            cls.release()
            raise
        except BaseException as e:
            cls._failed[testClass] = f"{type(e).__name__}: {e}"
            cls.release()
            raise

    @classmethod
    def release(cls):
        current, cls._current = cls._current, None
        if current is not None:
            current.tearDownClass()


atexit.register(SharedFixture.release)


def cleanupAll(*things):
    """
    Stop each thing (anything with C{stop()}), ignoring and collecting
    errors so that one failure does not leave the others running.

    @return: the list of error texts.
    """
    problems = []
    for thing in things:
        if thing is None:
            continue
        try:
            thing.stop()
        except Exception as e:  # pragma: no cover - best effort
            problems.append(f"{thing!r}: {e!r}")
    return problems


_counter = itertools.count(1)


def uniqueID(prefix="m"):
    """
    A message id unique within this test run.
    """
    return f"{prefix}{next(_counter)}-{uuid.uuid4().hex[:8]}"



__all__ = [
    # re-exported from xmppgw.localpeers
    "PeerError", "PrivateProsody", "findProgram", "freePort", "portAccepts",
    "spawn", "terminate", "waitForPort",
    # environment
    "HarnessError", "inCI", "requirePeers", "makeWorkdir", "readText",
    "waitUntil", "twistdPath",
    # SIP
    "SIPMessage", "SIPParseError", "parseSIP", "canonicalName", "newCallID",
    "newBranch", "newTag", "buildRequest", "buildMessage", "buildOptions",
    "buildResponse", "StreamFramer", "SIPUDPClient", "sipSendUDP",
    "sipSendTCP", "sipSendManyUDP", "SIPReceiver",
    # sipp
    "SippResult", "SippProcess", "startSipp", "runSipp", "waitForSippUAS",
    "parseSippStats",
    # XMPP and the gateway
    "XMPPClient", "messageWith", "GatewayProcess", "AUTHENTICATED_LINE", "gatewayConfig",
    # fixtures
    "SharedFixture", "cleanupAll", "uniqueID",
]
