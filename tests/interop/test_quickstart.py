"""
The README's quick start, run the way a new user would: C{xmppgw demo}
(what C{make run} runs) brought up, the commands it prints run as printed,
one message each way (SIP -> XMPP -> SIP through the echo account, XMPP ->
SIP and SIP -> XMPP for a person's XMPP client), then Ctrl-C and a check
that nothing is left; then a second run, stopped with SIGTERM.

Also C{xmppgw send-sip} on real loopback sockets against small fake SIP
servers.

Real processes on 127.0.0.1 only; every wait is bounded.
"""

import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

from twisted.trial import unittest

from xmppgw import cli, demo, localpeers
from xmppgw.sip.message import (
    Response, StreamFramer, parseMessage, serialize)


HERE = os.path.dirname(os.path.abspath(__file__))
XMPP_CLIENT = os.path.join(HERE, "xmpp_client.py")
WAIT = 20.0
READY_WAIT = 90.0


def xmppgwCommand():
    """
    The installed C{xmppgw} script next to this Python.
    """
    return os.path.join(os.path.dirname(sys.executable), "xmppgw")


class LineReader:
    """
    Reads a child's output lines in a thread and lets the test wait for a
    line that matches.
    """

    def __init__(self, stream):
        self.lines = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(stream,),
                                        daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def waitFor(self, predicate, timeout=WAIT, start=0):
        """
        Wait for a line (from index C{start} on) for which C{predicate} is
        true.

        @return: C{(index, line)}.
        @raise AssertionError: not seen within C{timeout} seconds, or the
            output ended.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    if predicate(self.lines[i]):
                        return i, self.lines[i]
                    i += 1
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise AssertionError(
                        "expected line not seen; output so far:\n"
                        + "\n".join(self.lines[-80:]))
                self._cond.wait(min(remaining, 0.5))

    def text(self):
        with self._cond:
            return "\n".join(self.lines)

    def join(self, timeout):
        self._thread.join(timeout)


def processesUsing(path):
    """
    PIDs of live processes whose command line mentions C{path}.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if path in cmdline and state != "Z":
            found.append((int(entry), cmdline))
    return found


def defaultPlan(runDir):
    """
    The plan of a demo started with no options.
    """
    return demo.makePlan(demo.makeParser().parse_args(["--run-dir", runDir]))


class QuickstartTests(unittest.TestCase):
    """
    C{xmppgw demo} and the commands it prints.
    """

    def setUp(self):
        self.xmppgw = xmppgwCommand()
        if not os.path.exists(self.xmppgw):
            self.fail(f"{self.xmppgw} is missing: install the package into "
                      "this Python (pip install -e .) first")
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)
        self.runDir = os.path.join(self.home, "run", "demo")
        self.children = []
        self.addCleanup(self._killChildren)

    def _killChildren(self):
        for process in self.children:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(10)

    def startDemo(self):
        """
        Start C{xmppgw demo} in a fresh directory, as a user would, and wait
        for its ready printout.

        @return: C{(process, reader)}.
        """
        problems = demo.portProblems(defaultPlan(self.runDir))
        self.assertEqual([], problems, "the demo's default ports must be free")
        process = subprocess.Popen(
            [self.xmppgw, "demo"], cwd=self.home, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.children.append(process)
        reader = LineReader(process.stdout)
        reader.waitFor(lambda l: l.startswith(demo.READY_LINE), READY_WAIT)
        reader.waitFor(lambda l: l.startswith("====="), WAIT,
                       start=len(reader.lines) - 1)
        return process, reader

    def printedCommands(self, reader):
        """
        The C{send-sip} commands in the ready printout, split as a shell
        would.
        """
        commands = []
        for line in reader.lines:
            if " send-sip " in line:
                argv = shlex.split(line.strip())
                self.assertEqual(self.xmppgw, argv[0])
                commands.append(argv)
        self.assertEqual(2, len(commands), reader.text())
        return commands

    def runCommand(self, argv):
        result = subprocess.run(
            argv, cwd=self.home, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=60)
        return result

    def stopDemo(self, process, reader, sig):
        """
        Stop the demo as Ctrl-C (SIGINT) or a service manager (SIGTERM)
        would, and check that nothing of it is left.
        """
        process.send_signal(sig)
        try:
            status = process.wait(30)
        except subprocess.TimeoutExpired:
            self.fail("the demo did not stop within 30 s:\n" + reader.text())
        reader.join(5)
        self.assertEqual(0, status, reader.text())
        self.assertIn("stopped; nothing of the demo is left running.",
                      reader.text())
        deadline = time.monotonic() + 5
        while processesUsing(self.runDir) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual([], processesUsing(self.runDir))
        self.assertEqual([], demo.portProblems(defaultPlan(self.runDir)))

    def test_quickStart(self):
        """
        The demo comes up; the printed command sends a SIP MESSAGE that
        reaches echo@localhost, whose answer reaches the SIP phone; a person
        logged in as demo@localhost writes to a SIP user and receives from
        SIP; Ctrl-C stops everything; a second run works and stops on
        SIGTERM.
        """
        process, reader = self.startDemo()
        echoCommand, userCommand = self.printedCommands(reader)
        self.assertEqual("Hello from SIP", echoCommand[-1])

        # SIP -> XMPP (echo@localhost) -> SIP (the demo's phone).
        mark = len(reader.lines)
        result = self.runCommand(echoCommand)
        self.assertEqual((0, "SIP/2.0 202 Accepted\n"),
                         (result.returncode, result.stdout), result.stderr)
        reader.waitFor(
            lambda l: l.startswith("echo@localhost got a message from ")
            and l.endswith(": Hello from SIP"), start=mark)
        reader.waitFor(
            lambda l: l.startswith("SIP phone got a MESSAGE for "
                                   "sip:xmppgw-cli@localhost")
            and l.endswith(": echo: Hello from SIP"), start=mark)

        # A person's XMPP client, logged in as the printout says.
        login = re.search(r"JID (\S+)\s+password (\S+)", reader.text())
        port = re.search(r"server 127\.0\.0\.1\s+port (\d+)", reader.text())
        contact = re.search(r"sending to (\S+)", reader.text())
        client = subprocess.Popen(
            [sys.executable, XMPP_CLIENT, login[1], login[2], "127.0.0.1",
             port[1], "--max-lifetime", "60"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        self.children.append(client)
        events = LineReader(client.stdout)
        events.waitFor(lambda l: json.loads(l)["kind"] == "ready")

        # XMPP -> SIP.
        mark = len(reader.lines)
        client.stdin.write(json.dumps({
            "cmd": "send", "to": contact[1], "type": "chat",
            "body": "Hello from XMPP"}) + "\n")
        client.stdin.flush()
        reader.waitFor(
            lambda l: l.startswith("SIP phone got a MESSAGE for "
                                   "sip:bob@example.com")
            and l.endswith(": Hello from XMPP"), start=mark)

        # SIP -> XMPP, to the person.
        result = self.runCommand(userCommand)
        self.assertEqual(0, result.returncode, result.stderr)
        _, line = events.waitFor(
            lambda l: json.loads(l).get("body") == userCommand[-1])
        self.assertEqual("xmppgw-cli*localhost@sip.localhost",
                         json.loads(line)["from"].split("/")[0])
        client.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        client.stdin.flush()
        client.wait(15)

        self.stopDemo(process, reader, signal.SIGINT)

        # A second run in the same directory works too.
        process, reader = self.startDemo()
        echoCommand, _ = self.printedCommands(reader)
        result = self.runCommand(echoCommand[:-1] + ["second run"])
        self.assertEqual(0, result.returncode, result.stderr)
        reader.waitFor(lambda l: l.endswith(": echo: second run"))
        self.stopDemo(process, reader, signal.SIGTERM)

    def test_portsBusy(self):
        """
        When a port the demo needs is taken, it says which and exits 1,
        starting nothing.
        """
        plan = defaultPlan(self.runDir)
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", plan.sipPort))
        result = self.runCommand([self.xmppgw, "demo"])
        self.assertEqual(1, result.returncode, result.stdout)
        self.assertIn(f"udp port {plan.sipPort} on 127.0.0.1 (gateway SIP port "
                      "(--sip-port)) is not free", result.stdout)
        self.assertEqual([], processesUsing(self.runDir))


class FakeSIPServer:
    """
    A SIP server thread on 127.0.0.1 (UDP or TCP, an OS-chosen port) that
    answers each MESSAGE with a given code, optionally ignoring the first
    datagram, and records what it received.
    """

    def __init__(self, transport, code, reason, dropFirst=False):
        self.transport = transport
        self.code = code
        self.reason = reason
        self.dropFirst = dropFirst
        self.received = []
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        if transport == "tcp":
            self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _response(self, data):
        request = parseMessage(data)
        response = Response(self.code, self.reason, None)
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            response.headers.add(name, request.headers.get(name))
        return serialize(response)

    def _serve(self):
        try:
            if self.transport == "udp":
                for _ in range(5):
                    data, address = self.sock.recvfrom(65535)
                    self.received.append(data)
                    if self.dropFirst and len(self.received) == 1:
                        continue
                    self.sock.sendto(self._response(data), address)
                    return
            else:
                connection, _ = self.sock.accept()
                with connection:
                    connection.settimeout(10)
                    framer = StreamFramer()
                    for _ in range(100):
                        frames = framer.feed(connection.recv(65535))
                        if frames:
                            self.received.extend(frames)
                            connection.sendall(self._response(frames[0]))
                            connection.recv(1)
                            return
        except OSError:
            pass

    def stop(self):
        self.sock.close()
        self.thread.join(10)


class SendSIPLoopbackTests(unittest.TestCase):
    """
    C{xmppgw send-sip} on real loopback sockets.
    """

    def send(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = cli.main(["send-sip", "--timeout", "5"] + list(argv), out, err)
        return status, out.getvalue(), err.getvalue()

    def test_udpRetransmits(self):
        """
        Over UDP a lost request is retransmitted, and the 202 that comes
        back is printed; exit 0.
        """
        server = FakeSIPServer("udp", 202, "Accepted", dropFirst=True)
        self.addCleanup(server.stop)
        status, out, err = self.send(f"sip:bob@127.0.0.1:{server.port}",
                                     "h\u00e9llo")
        self.assertEqual((0, "SIP/2.0 202 Accepted\n", ""), (status, out, err))
        server.thread.join(10)
        self.assertEqual(2, len(server.received))
        self.assertEqual(server.received[0], server.received[1])
        request = parseMessage(server.received[0])
        self.assertEqual("h\u00e9llo".encode("utf-8"), request.body)

    def test_tcpFailure(self):
        """
        Over TCP a non-2xx final response is printed and exits 1; -v shows
        the request and the response.
        """
        server = FakeSIPServer("tcp", 486, "Busy Here")
        self.addCleanup(server.stop)
        status, out, err = self.send(
            "-v", "--transport", "tcp", f"sip:bob@127.0.0.1:{server.port}", "x")
        self.assertEqual(1, status, err)
        self.assertIn(f"> MESSAGE sip:bob@127.0.0.1:{server.port} SIP/2.0", out)
        self.assertIn("< SIP/2.0 486 Busy Here", out)
        self.assertIn("> Via: SIP/2.0/TCP 127.0.0.1:", out)

    def test_toHost(self):
        """
        --to-host/--to-port send to another place than the URI's host.
        """
        server = FakeSIPServer("udp", 200, "OK")
        self.addCleanup(server.stop)
        status, out, err = self.send(
            "--to-host", "127.0.0.1", "--to-port", str(server.port),
            "sip:bob*xmpp.example@gw.invalid", "x")
        self.assertEqual((0, "SIP/2.0 200 OK\n"), (status, out), err)

    def test_nothingListening(self):
        """
        Nothing on the UDP port (ICMP unreachable) or the TCP port: a clear
        error and exit 1, well before the timeout.
        """
        port = localpeers.freePort("both")
        started = time.monotonic()
        status, out, err = self.send(f"sip:bob@127.0.0.1:{port}", "x")
        self.assertEqual(1, status)
        self.assertIn("nothing listens there on UDP", err)
        status, out, err = self.send(
            "--transport", "tcp", f"sip:bob@127.0.0.1:{port}", "x")
        self.assertEqual(1, status)
        self.assertIn(f"cannot connect to tcp:127.0.0.1:{port}", err)
        self.assertLess(time.monotonic() - started, 4)

    def test_timeout(self):
        """
        A server that never answers: exit 1 after the timeout.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        out, err = io.StringIO(), io.StringIO()
        status = cli.main(["send-sip", "--timeout", "1.2",
                           f"sip:bob@127.0.0.1:{sock.getsockname()[1]}", "x"],
                          out, err)
        self.assertEqual(1, status)
        self.assertIn("no final response within 1.2 seconds", err.getvalue())
        sock.settimeout(1)
        datagrams = []
        try:
            while True:
                datagrams.append(sock.recv(65535))
        except socket.timeout:
            pass
        self.assertEqual(2, len(datagrams))
