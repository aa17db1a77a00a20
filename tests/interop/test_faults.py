"""
Fault tests with the real Prosody (issue 5): the XMPP server killed or hung,
broken SIP peers, SIGTERM with messages held, SIGUSR1, slow and idle TCP
peers, and C{allow_from}. Every wait is bounded; each class runs its own
Prosody and gateway (see L{harness.SharedFixture}).
"""

import os
import secrets
import signal
import socket
import threading
import time

from tests.interop.harness import (
    LOCAL, GatewayProcess, HarnessError, PrivateProsody, SIPUDPClient,
    XMPPClient, buildMessage, buildOptions, cleanupAll, freePort, gatewayConfig,
    makeWorkdir, readText, requirePeers, sipSendTCP, spawn, twistdPath,
    uniqueID, waitUntil)
from tests.interop import test_gateway
from tests.interop.test_gateway import ALICE_VIA_SIP, BOB_SIP, GatewayTestCase


def _rss(pid):
    """
    Resident memory of a process in kB (from /proc), or L{None}.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _fdCount(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _startPeers(cls, **config):
    """
    A class's Prosody, gateway (with C{config} for L{gatewayConfig}) and
    Alice, like L{GatewayTestCase.setUpClass}.
    """
    requirePeers(*cls.peers)
    cls.prosody = PrivateProsody(
        makeWorkdir(f"prosody-{cls.__name__}"), domain="xmpp.test",
        componentDomain="gw.xmpp.test", componentSecret=secrets.token_hex(8),
        users={"alice": "alice-pw"})
    cls.prosody.start()
    cls.sipPort = freePort("both")
    cls.gateway = GatewayProcess(
        gatewayConfig(cls.prosody, cls.sipPort, **config),
        workdir=makeWorkdir(f"gateway-{cls.__name__}"))
    cls.gateway.start(timeout=30)
    cls.alice = XMPPClient("alice@xmpp.test", "alice-pw", cls.prosody.c2sPort).start()


class _TrafficMixin:
    """
    The traffic helpers of L{ProsodyRestartTests}: C{count} MESSAGEs at
    C{rate}/s to Alice from a thread, and the 2xx/5xx bookkeeping.
    """

    count = 40
    rate = 40
    traffic = test_gateway.ProsodyRestartTests.traffic
    outcomeOf = test_gateway.ProsodyRestartTests.outcomeOf
    received = test_gateway.ProsodyRestartTests.received

    def assertExactlyOnce(self, accepted, bodies, summary, settle=1.0,
                          codes=None):
        """
        Every 2xx body reaches Alice exactly once; no 5xx body arrives,
        except that a 504 one (given C{codes}: written to the XMPP server,
        not confirmed in time) may arrive, at most once.
        """
        try:
            self.alice.waitMessages(lambda e: e.get("body") in set(accepted),
                                    len(accepted), timeout=30)
        except HarnessError as e:
            raise HarnessError(f"{e}\n{summary}")
        time.sleep(settle)
        marker = bodies[0].split(" ")[0]
        received = self.received(marker)
        for body in accepted:
            self.assertEqual(received.count(body), 1, f"{body}: {received}\n{summary}")
        uncertain = {bodies[i] for i, code in enumerate(codes or ()) if code == 504}
        for body in set(bodies) - set(accepted):
            if body in uncertain:
                self.assertLessEqual(received.count(body), 1,
                                     f"{body}: {received}\n{summary}")
            else:
                self.assertNotIn(body, received,
                                 f"answered 5xx but delivered\n{summary}")


class ProsodyKillTests(_TrafficMixin, GatewayTestCase):
    """
    Prosody SIGKILLed and restarted under load.
    """

    holdTimeout = 4.0

    def test_killMidTraffic(self):
        """
        Prosody is SIGKILLed after the 10th MESSAGE was delivered, the rest
        are sent while it is dead, it is restarted 1 s later: every MESSAGE
        is answered within Timer F, each 2xx one reaches Alice exactly once,
        the others got a 5xx.
        """
        marker = uniqueID("kill")
        paused, go = threading.Event(), threading.Event()

        def beforeSend(i):
            if i == 10:
                paused.set()
                go.wait(30)

        aliceReady = self.alice.readyCount()
        bodies, sender, outcome = self.traffic(marker, beforeSend=beforeSend)
        try:
            self.assertTrue(paused.wait(15), "sender did not start")
            self.alice.waitMessages(lambda e: e.get("body") in bodies[:10], 10, timeout=10)
            self.prosody.kill()
            go.set()
            time.sleep(1.0)
            self.prosody.start()
        finally:
            go.set()
            sender.join(60)
        codes, accepted, summary = self.outcomeOf(sender, outcome, bodies)
        self.assertGreaterEqual(len(accepted), 10, summary)
        self.alice.waitReady(timeout=20, count=aliceReady + 1)
        self.assertExactlyOnce(accepted, bodies, summary)
        # the gateway is usable again
        _, response = self.sendMessage(body=f"{marker} after")
        self.assertEqual(response.code, 202, self.context())


class ProsodyKilledLongTests(_TrafficMixin, GatewayTestCase):
    """
    Prosody SIGKILLed and kept down longer than hold_timeout.
    """

    holdTimeout = 1.0
    count = 10
    rate = 20

    def options(self):
        """
        Send one OPTIONS to the gateway over UDP; return the response.
        """
        with SIPUDPClient() as client:
            request = buildOptions(f"sip:{LOCAL}:{self.sipPort}",
                                   viaPort=client.port)
            return client.request(LOCAL, self.sipPort, request, 5.0)

    def test_heldMessagesGet503(self):
        """
        With Prosody dead for longer than hold_timeout, every MESSAGE gets
        503 with Retry-After within hold_timeout (plus slack), none is
        delivered later, and traffic resumes once Prosody is back. OPTIONS
        (a dispatcher's probe) is answered 503 while the link is down and
        200 once it is back.
        """
        marker = uniqueID("dead")
        self.prosody.kill()
        try:
            self.gateway.waitForLog("retrying in", timeout=10)
            probe = self.options()
            self.assertEqual((503, "XMPP Link Down"),
                             (probe.code, probe.reason), self.context())
            self.assertTrue(probe.header("Retry-After"), str(probe))
            bodies, sender, outcome = self.traffic(marker)
            sender.join(40)
            codes = [r.code if r is not None else None for r in outcome.get("results", [])]
            self.assertEqual(codes, [503] * self.count, self.context())
            for r in outcome["results"]:
                self.assertTrue(r.header("Retry-After"), str(r))
        finally:
            aliceReady = self.alice.readyCount()
            self.prosody.start()
        self.alice.waitReady(timeout=20, count=aliceReady + 1)
        waitUntil(lambda: self.options().code == 200, 15,
                  message=lambda: "OPTIONS not 200 after the link came back"
                  f"\n{self.context()}")
        deadline = time.monotonic() + 15
        while True:
            _, response = self.sendMessage(body=f"{marker} back")
            if response.code == 202 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(response.code, 202, self.context())
        time.sleep(1.0)
        self.assertEqual([b for b in self.received(marker) if b != f"{marker} back"], [],
                         "a MESSAGE answered 503 was delivered")


class ProsodyPauseTests(_TrafficMixin, GatewayTestCase):
    """
    Prosody hung (SIGSTOP) under load, then resumed (SIGCONT).

    A stopped Prosody keeps its TCP sockets open and its kernel keeps
    acknowledging data, so only the component link's confirmation pings
    tell that it is hung: the stanzas written when it stopped are not
    confirmed within confirm_timeout (1 s: half of hold_timeout by
    default) and get 504 (they may still arrive after SIGCONT, at most
    once); later ones are not written and get 503 after hold_timeout.
    What must hold: every MESSAGE is answered within Timer F, those sent
    while Prosody is stopped get a 5xx, each 2xx one is delivered exactly
    once after SIGCONT, nothing answered 503 arrives, and traffic resumes.
    """

    holdTimeout = 2.0

    def test_pauseMidTraffic(self):
        """
        SIGSTOP after 10 MESSAGEs, 3 s stopped while the rest flow, SIGCONT:
        all answered, those sent while stopped answered 5xx (timeouts
        fired: nothing waits for SIGCONT), every 2xx delivered once, the
        gateway usable after.
        """
        marker = uniqueID("pause")
        tenth = threading.Event()
        sentAt = {}
        bodies, sender, outcome = self.traffic(
            marker, onSent=lambda i: (sentAt.setdefault(i, time.monotonic()),
                                      i == 9 and tenth.set()))
        try:
            self.assertTrue(tenth.wait(15), "sender did not start")
            self.prosody.pause()
            stopped = time.monotonic()
            time.sleep(3.0)
        finally:
            self.prosody.resume()
            sender.join(60)
        codes, accepted, summary = self.outcomeOf(sender, outcome, bodies)
        # The 10th was sent just before SIGSTOP: it may not be confirmed.
        self.assertGreaterEqual(len(accepted), 9, summary)
        # Sent well after the stop (the first 0.2 s may have been taken by
        # Prosody before it stopped): answered 5xx within hold_timeout,
        # while Prosody was still stopped.
        late = [i for i, t in sentAt.items() if t > stopped + 0.2]
        self.assertGreater(len(late), 10, summary)
        for i in late:
            self.assertTrue(500 <= codes[i] < 600, f"#{i}: {summary}")
        self.assertExactlyOnce(accepted, bodies, summary, codes=codes)
        _, response = self.sendMessage(body=f"{marker} after")
        self.assertEqual(response.code, 202, self.context())


class _BadSIPPeer:
    """
    A TCP "SIP proxy" that misbehaves: C{mode} is C{"garbage"} (answers
    bytes that are not SIP), C{"close"} (writes half an answer, then closes
    the connection) or C{"ok"} (answers 200).
    """

    def __init__(self):
        self.mode = "ok"
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOCAL, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def uri(self):
        return f"sip:{LOCAL}:{self.port};transport=tcp"

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(5)
        data = b""
        try:
            for _ in range(100):
                if self._stop.is_set():
                    return
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
                if self.mode == "close":
                    # half an answer, then the connection is closed
                    conn.sendall(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1;bra")
                    return
                while b"\r\n\r\n" in data:
                    head, _, rest = data.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    if len(rest) < length:
                        break
                    data = rest[length:]
                    if self.mode == "garbage":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n\x00\xff junk")
                        continue
                    lines = head.split(b"\r\n")
                    keep = [l for l in lines[1:] if l.split(b":")[0].lower() in
                            (b"via", b"from", b"to", b"call-id", b"cseq")]
                    conn.sendall(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep)
                                 + b"\r\nContent-Length: 0\r\n\r\n")
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def stop(self, timeout=5.0):
        self._stop.set()
        self._thread.join(timeout)
        self.sock.close()


class BadSIPPeerTests(GatewayTestCase):
    """
    XMPP -> SIP through a SIP peer that answers garbage or closes TCP in
    the middle of a message: Alice gets an error stanza for her message,
    within a bound, and the gateway keeps working.
    """

    t1 = 0.05
    badPeer = None

    @classmethod
    def setUpClass(cls):
        cls.badPeer = _BadSIPPeer()
        _startPeers(cls, outboundProxy=cls.badPeer.uri, t1=cls.t1, holdTimeout=2.0)

    @classmethod
    def tearDownClass(cls):
        GatewayTestCase.tearDownClass.__func__(cls)
        cleanupAll(cls.badPeer)
        cls.badPeer = None

    def sendFromAlice(self, target):
        mid = uniqueID()
        self.alice.send(f"{target}*sip.test@gw.xmpp.test", body="x", id=mid)
        return mid

    def test_garbageAndClose(self):
        """
        Garbage in answer, and a connection closed mid-message, each give
        Alice an error (within Timer F + slack); then a good answer is
        silent (success) again.
        """
        for mode in ("garbage", "close"):
            self.badPeer.mode = mode
            mid = self.sendFromAlice(f"bad-{mode}")
            got = self.aliceGets(id=mid, timeout=15)
            self.assertEqual(got["type"], "error", got)
            self.assertTrue(got["error"]["condition"], got)
        self.badPeer.mode = "ok"
        mid = self.sendFromAlice("good")
        time.sleep(2.0)
        self.assertEqual([e for e in self.alice.messages()
                          if e.get("id") == mid], [], self.context())


class _ProsodyOnly(GatewayTestCase):
    """
    A class whose tests each start their own gateway: the class has only
    Prosody.
    """

    @classmethod
    def setUpClass(cls):
        requirePeers(*cls.peers)
        cls.prosody = PrivateProsody(
            makeWorkdir(f"prosody-{cls.__name__}"), domain="xmpp.test",
            componentDomain="gw.xmpp.test", componentSecret=secrets.token_hex(8),
            users={"alice": "alice-pw"})
        cls.prosody.start()

    def startGateway(self, **extra):
        port = freePort("both")
        gateway = GatewayProcess(
            gatewayConfig(self.prosody, port, holdTimeout=20.0, t1=0.5, **extra),
            workdir=makeWorkdir("gateway-" + type(self).__name__))
        gateway.start(timeout=30)
        self.addCleanup(gateway.stop)
        return gateway, port


class ShutdownTests(_ProsodyOnly):
    """
    SIGTERM with messages held, and SIGUSR1.
    """

    def test_sigtermAnswersHeld(self):
        """
        With Prosody stopped, 5 MESSAGEs are held (hold_timeout 20 s); on
        SIGTERM each gets 503 with Retry-After at once, and twistd exits 0
        within a few seconds.
        """
        gateway, port = self.startGateway()
        self.prosody.stop()
        try:
            gateway.waitForLog("retrying in", timeout=10)
            with SIPUDPClient() as client:
                requests = [buildMessage(ALICE_VIA_SIP, BOB_SIP, f"held {i}",
                                         viaPort=client.port) for i in range(5)]
                for request in requests:
                    client.send(LOCAL, port, request)
                waitUntil(lambda: gateway.log().count("MESSAGE sip:alice") >= 5,
                          10, message="5 MESSAGEs in the gateway log")
                start = time.monotonic()
                process = gateway.process
                process.send_signal(signal.SIGTERM)
                answers = []
                deadline = time.monotonic() + 10
                while len(answers) < 5 and time.monotonic() < deadline:
                    message = client.receive(0.5)
                    if message is not None and message.code >= 200:
                        answers.append(message)
                status = process.wait(15)
            elapsed = time.monotonic() - start
        finally:
            self.prosody.start()
        self.assertEqual(sorted(a.code for a in answers), [503] * 5, gateway.describe())
        for a in answers:
            self.assertTrue(a.header("Retry-After"), str(a))
        self.assertEqual(status, 0, gateway.describe())
        self.assertLess(elapsed, 10, gateway.describe())
        self.assertIn("Shutting down", readText(gateway.logPath))

    def test_sigusr1ReopensMovedLog(self):
        """
        After the log file is moved away (logrotate), SIGUSR1 makes the
        gateway write to a new file at the configured path.
        """
        gateway, port = self.startGateway()
        moved = gateway.logPath + ".moved"
        os.rename(gateway.logPath, moved)
        gateway.process.send_signal(signal.SIGUSR1)
        waitUntil(lambda: os.path.exists(gateway.logPath), 10,
                  message="a new log file after SIGUSR1")
        response = sipSendTCP(LOCAL, port, buildMessage(
            ALICE_VIA_SIP, BOB_SIP, "after rotation", transport="TCP"), 10)
        self.assertEqual(response.code, 202)
        waitUntil(lambda: "after rotation" in readText(gateway.logPath), 10,
                  message="new log lines in the reopened file")
        self.assertIn("reopened", readText(gateway.logPath))
        self.assertNotIn("after rotation", readText(moved))


class SlowAndIdlePeerTests(GatewayTestCase):
    """
    Byte-at-a-time TCP, many idle connections and connections_limit,
    allow_from.
    """

    limit = 50

    @classmethod
    def setUpClass(cls):
        _startPeers(cls, extraSIP={"connections_limit": cls.limit,
                                   "connection_idle_timeout": 3})

    def test_byteAtATime(self):
        """
        A MESSAGE written one byte at a time over TCP is relayed.
        """
        body = uniqueID("slow")
        data = buildMessage(ALICE_VIA_SIP, BOB_SIP, body, transport="TCP")
        with socket.create_connection((LOCAL, self.sipPort), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(data)):
                s.sendall(data[i:i + 1])
                if i % 64 == 0:
                    time.sleep(0.001)
            answer = s.recv(4096)
        self.assertTrue(answer.startswith(b"SIP/2.0 202"), answer)
        self.aliceGets(body=body)

    def test_idleConnectionsBounded(self):
        """
        Three times connections_limit idle connections: at most the limit
        are kept, the rest are closed at once, idle ones are closed after
        connection_idle_timeout, file descriptors and memory return to
        about where they were, and the gateway still answers.
        """
        pid = self.gateway.process.pid
        fdsBefore, rssBefore = _fdCount(pid), _rss(pid)
        sockets = []
        try:
            for _ in range(3 * self.limit):
                s = socket.create_connection((LOCAL, self.sipPort), timeout=5)
                sockets.append(s)
            time.sleep(0.5)
            open_ = 0
            for s in sockets:
                s.setblocking(False)
                try:
                    open_ += s.recv(1) != b""
                except BlockingIOError:
                    open_ += 1
                except OSError:
                    pass
            self.assertLessEqual(open_, self.limit, self.context())
            self.assertLessEqual(_fdCount(pid), fdsBefore + self.limit + 5)
            # idle timeout closes the rest
            time.sleep(4.0)
            self.assertLessEqual(_fdCount(pid), fdsBefore + 2, self.context())
        finally:
            for s in sockets:
                s.close()
        _, response = self.sendMessage(body=uniqueID("still"), proto="tcp")
        self.assertEqual(response.code, 202, self.context())
        self.assertLess(_rss(pid) - rssBefore, 20000, "RSS grew by over 20 MB")


class AllowFromTests(_ProsodyOnly):
    """
    C{[sip] allow_from} with a real gateway process.
    """

    def test_allowFromRefuses(self):
        """
        With allow_from = ["192.0.2.0/24"], a UDP request from 127.0.0.1
        gets 403 and a TCP connection is closed without an answer.
        """
        port = freePort("both")
        gateway = GatewayProcess(
            gatewayConfig(self.prosody, port, extraSIP={
                "allow_from": '["192.0.2.0/24"]'}),
            workdir=makeWorkdir("gateway-allow"))
        # the readiness probe (OPTIONS from 127.0.0.1) is refused: wait for
        # the link in the log instead
        with open(gateway.configPath, "w", encoding="utf-8") as f:
            f.write(gateway.configText)
        gateway.process = spawn(
            [twistdPath(), "-n", "--pidfile=", "--logfile", gateway.logPath,
             "xmppgw", "--config", gateway.configPath],
            logPath=gateway.consolePath, cwd=gateway.workdir)
        self.addCleanup(gateway.stop)
        gateway.waitForLog("XMPP component link authenticated", timeout=30)
        with SIPUDPClient() as client:
            response = client.request(LOCAL, port, buildMessage(
                ALICE_VIA_SIP, BOB_SIP, "refused", viaPort=client.port), 5)
        self.assertEqual(response.code, 403, gateway.describe())
        with socket.create_connection((LOCAL, port), timeout=5) as s:
            s.settimeout(5)
            try:
                s.sendall(buildMessage(ALICE_VIA_SIP, BOB_SIP, "refused", transport="TCP"))
                data = s.recv(4096)
            except OSError:
                data = b""
        self.assertEqual(data, b"", gateway.describe())
        self.assertIn("not in allow_from", gateway.log())
