"""
Tests for L{xmppgw.cli} and the pure parts of L{xmppgw.demo}.

No network and no real time: the SIP exchanges run on fake sockets with a
fake clock. The same code on real loopback sockets, and the whole demo, are
tested in L{tests.interop.test_quickstart}.
"""

import io
import socket
import subprocess
import sys
from xmppgw.compat import tomllib
from argparse import Namespace

from twisted.python.filepath import FilePath
from twisted.trial import unittest
from twisted.words.xish import domish

from xmppgw import __version__, cli, demo, localpeers
from xmppgw.sip.message import Response, parseMessage, parseVia, serialize
from xmppgw.sip.uri import parseNameAddr


ETC = FilePath(__file__).parent().parent().child("etc")
SAMPLE = ETC.child("xmppgw.toml").path
DEMO = ETC.child("demo.toml").path


def run(*argv, stdin=None):
    """
    Run C{xmppgw ARGV} in-process.

    @return: C{(status, stdout text, stderr text)}.
    """
    out, err = io.StringIO(), io.StringIO()
    savedOut, savedErr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        status = cli.main(list(argv), out, err)
    finally:
        sys.stdout, sys.stderr = savedOut, savedErr
    return status, out.getvalue(), err.getvalue()


class CheckConfigTests(unittest.TestCase):
    """
    C{xmppgw check-config}.
    """

    def writeFile(self, text):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_sampleIsOK(self):
        """
        The shipped sample passes, with a summary of what it configures.
        """
        status, out, err = run("check-config", SAMPLE)
        self.assertEqual((0, ""), (status, err))
        lines = out.splitlines()
        self.assertEqual(f"{SAMPLE}: OK", lines[0])
        self.assertIn("  SIP domain (gateway_domain): sip-xmpp.example.org", lines)
        self.assertIn("  XMPP domain (xmpp_domain): sip-xmpp.example.org", lines)
        self.assertIn(
            "  SIP listens on: udp:127.0.0.1:5060, tcp:127.0.0.1:5060", lines
        )
        self.assertTrue(lines[1].startswith("  backend: component"), lines[1])

    def test_demoConfigIsOK(self):
        """
        The demo's configuration passes and names its outbound proxy.
        """
        status, out, err = run("check-config", DEMO)
        self.assertEqual(0, status, err)
        self.assertIn("  outbound proxy: sip:127.0.0.1:15070", out.splitlines())

    def test_everyErrorWithFileAndKey(self):
        """
        An invalid file prints every problem, each with the file name and
        the key, on stderr, and exits 1.
        """
        path = self.writeFile(
            "[xmpp]\nxmpp_port = 70000\nbogus = 1\n[sip]\nsuccess_code = 201\n"
        )
        status, out, err = run("check-config", path)
        self.assertEqual((1, ""), (status, out))
        lines = err.splitlines()
        self.assertEqual(
            [f"{path}: xmpp.xmpp_port", f"{path}: xmpp.bogus",
             f"{path}: sip.success_code"],
            [":".join(l.split(":")[:2]) for l in lines[:3]],
        )
        self.assertEqual(f"{path}: 3 errors", lines[-1])

    def test_syntaxError(self):
        """
        A TOML syntax error is reported with the file name.
        """
        path = self.writeFile("[xmpp\n")
        status, out, err = run("check-config", path)
        self.assertEqual(1, status)
        self.assertIn(f"{path}: TOML syntax error", err)
        self.assertIn(f"{path}: 1 error\n", err)

    def test_missingFile(self):
        """
        A missing file is an error, not a traceback.
        """
        path = self.mktemp()
        status, out, err = run("check-config", path)
        self.assertEqual(1, status)
        self.assertIn(f"{path}: cannot read the configuration file", err)

    def test_severalFiles(self):
        """
        Every file is checked; one bad file makes the status 1.
        """
        bad = self.writeFile("[nope]\n")
        status, out, err = run("check-config", SAMPLE, bad)
        self.assertEqual(1, status)
        self.assertIn(f"{SAMPLE}: OK", out)
        self.assertIn(f"{bad}: nope: unknown table", err)

    def test_noFile(self):
        """
        check-config without a file is a usage error (2).
        """
        status, out, err = run("check-config")
        self.assertEqual(2, status)
        self.assertIn("usage: xmppgw check-config", err)


class MapTests(unittest.TestCase):
    """
    C{xmppgw map}, on the examples of the README (interworking.md 2.8).
    """

    def mapped(self, *argv):
        status, out, err = run("map", *argv)
        results = {}
        current = None
        for line in out.splitlines():
            if not line.startswith("  "):
                current = line
                results[current] = []
            else:
                label, _, value = line.strip().partition("  ")
                results[current].append((label.strip(), value.strip()))
        return status, results, err

    def test_separatorScheme(self):
        """
        Under the defaults (separator scheme), SIP URIs and JIDs map both
        ways as the README's table says.
        """
        status, results, err = self.mapped(
            "sip:juliet*jabber.org@sip-xmpp.example.org",
            "sip:romeo@sip.example.com",
            "romeo*sip.example.com@sip-xmpp.example.org",
            "juliet@jabber.org/balcony",
        )
        self.assertEqual((0, ""), (status, err))
        self.assertEqual(
            ("as SIP target (Request-URI) -> XMPP recipient", "juliet@jabber.org"),
            results["sip:juliet*jabber.org@sip-xmpp.example.org"][0],
        )
        self.assertEqual(
            ("as SIP sender (From) -> XMPP sender",
             "romeo*sip.example.com@sip-xmpp.example.org"),
            results["sip:romeo@sip.example.com"][1],
        )
        self.assertEqual(
            ("as XMPP recipient (to) -> SIP Request-URI", "sip:romeo@sip.example.com"),
            results["romeo*sip.example.com@sip-xmpp.example.org"][0],
        )
        self.assertEqual(
            ("as XMPP sender (from) -> SIP From",
             "sip:juliet*jabber.org@sip-xmpp.example.org;gr=balcony"),
            results["juliet@jabber.org/balcony"][1],
        )

    def test_reasonWhenOneWayFails(self):
        """
        A direction that cannot be mapped shows the reason; the status
        stays 0 while the other direction works.
        """
        status, results, err = self.mapped("sip:romeo@sip.example.com")
        self.assertEqual(0, status)
        label, value = results["sip:romeo@sip.example.com"][0]
        self.assertEqual(
            "cannot map: Request-URI host 'sip.example.com' is not the gateway "
            "domain 'sip-xmpp.example.org'",
            value,
        )

    def test_neitherWayIsFailure(self):
        """
        An address that maps in neither direction makes the status 1.
        """
        status, results, err = self.mapped("tel:+15551234", "romeo@example.net")
        self.assertEqual(1, status)
        for label, value in results["tel:+15551234"]:
            self.assertIn("cannot map: tel: URIs are not mapped", value)

    def test_withConfig(self):
        """
        --config selects the configuration (here the demo's).
        """
        status, results, err = self.mapped(
            "--config", DEMO, "sip:echo*localhost@127.0.0.1:15060",
            "bob*example.com@sip.localhost",
        )
        self.assertEqual(0, status, err)
        self.assertEqual("echo@localhost",
                         results["sip:echo*localhost@127.0.0.1:15060"][0][1])
        self.assertEqual("sip:bob@example.com",
                         results["bob*example.com@sip.localhost"][0][1])

    def test_gwmapConfig(self):
        """
        With a gwmap, domains are swapped; an C{xmpp:} prefix is accepted.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[xmpp]\nxmpp_domain = "xmpp.example.com"\n'
                    'gwmap = "sip.example.com=xmpp.example.com"\n')
        status, results, err = self.mapped(
            "-c", path, "sip:romeo@sip.example.com", "xmpp:romeo@xmpp.example.com")
        self.assertEqual(0, status, err)
        self.assertEqual("romeo@xmpp.example.com",
                         results["sip:romeo@sip.example.com"][1][1])
        self.assertEqual("sip:romeo@sip.example.com",
                         results["xmpp:romeo@xmpp.example.com"][0][1])

    def test_badConfig(self):
        """
        An invalid configuration is reported and nothing is mapped.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[xmpp]\ndomain_separator = "@"\n')
        status, out, err = run("map", "-c", path, "a@b")
        self.assertEqual((1, ""), (status, out))
        self.assertIn(f"{path}: xmpp.domain_separator: cannot be '@'", err)

    def test_isURI(self):
        """
        sip:, sips:, im:, pres: and tel: (any case) are URIs; the rest JIDs.
        """
        for text in ("sip:a@b", "SIPS:a@b", "im:a@b", "pres:a@b", "tel:+1"):
            self.assertTrue(cli.isURI(text), text)
        for text in ("a@b", "sipper@b", "b/sip:x"):
            self.assertFalse(cli.isURI(text), text)


class FakeClock:
    """
    A monotonic clock the fake sockets move forward.
    """

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeUDPSocket:
    """
    A connected datagram socket: records what is sent (with the time) and
    delivers scripted datagrams at given times (relative to the first
    send), moving the fake clock as a blocking C{recv} would.
    """

    def __init__(self, clock, script=(), refuse=False):
        self.clock = clock
        self.script = list(script)
        self.sent = []
        self.timeout = None
        self.start = None
        self.refuse = refuse

    def send(self, data):
        if self.start is None:
            self.start = self.clock.now
        self.sent.append((round(self.clock.now - self.start, 6), data))
        return len(data)

    def settimeout(self, timeout):
        self.timeout = timeout

    def recv(self, size):
        if self.refuse:
            raise ConnectionRefusedError(111, "Connection refused")
        if self.script:
            at, data = self.script[0]
            due = self.start + at
            if due <= self.clock.now + self.timeout:
                self.script.pop(0)
                self.clock.now = max(self.clock.now, due)
                return data(self) if callable(data) else data
        self.clock.now += self.timeout
        raise socket.timeout("timed out")


class FakeTCPSocket:
    """
    A connected stream socket that returns scripted chunks, one per
    C{recv}, then end of stream or timeouts.
    """

    def __init__(self, clock, chunks=(), closeAtEnd=True):
        self.clock = clock
        self.chunks = list(chunks)
        self.closeAtEnd = closeAtEnd
        self.sent = b""
        self.timeout = None

    def sendall(self, data):
        self.sent += data

    def settimeout(self, timeout):
        self.timeout = timeout

    def recv(self, size):
        if self.chunks:
            chunk = self.chunks.pop(0)
            return chunk(self) if callable(chunk) else chunk
        if self.closeAtEnd:
            return b""
        self.clock.now += self.timeout
        raise socket.timeout("timed out")


def answer(code, reason="OK", headers=()):
    """
    A script entry: a response to the first request the fake socket sent.
    """
    def respond(sock):
        data = sock.sent[0][1] if isinstance(sock.sent, list) else sock.sent
        request = parseMessage(data)
        response = Response(code, reason, None)
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            response.headers.add(name, request.headers.get(name))
        for name, value in headers:
            response.headers.set(name, value)
        return serialize(response)
    return respond


class BuildMessageTests(unittest.TestCase):
    """
    L{cli.buildMessage} builds a correct MESSAGE.
    """

    def test_headers(self):
        """
        Via with a z9hG4bK branch and rport, From with a tag, To, Call-ID,
        CSeq, Max-Forwards 70, text/plain UTF-8 and a byte Content-Length.
        """
        request = cli.buildMessage(
            "sip:bob*xmpp.example@gw.example", "h\u00e9llo \U0001F600",
            fromURI="sip:alice@sip.example", transport="tcp",
            localHost="127.0.0.1", localPort=40000, subject="Hi")
        parsed = parseMessage(serialize(request))
        self.assertEqual(("MESSAGE", "sip:bob*xmpp.example@gw.example"),
                         (parsed.method, parsed.uri))
        via = parseVia(parsed.headers.get("Via"))[0]
        self.assertEqual(("TCP", "127.0.0.1", 40000), (via.transport, via.host, via.port))
        self.assertTrue(via.branch.startswith("z9hG4bK"))
        self.assertGreater(len(via.branch), len("z9hG4bK") + 8)
        self.assertTrue(via.hasParam("rport"))
        sender = parseNameAddr(parsed.headers.get("From"))
        self.assertEqual("sip:alice@sip.example", str(sender.uri))
        self.assertTrue(sender.tag)
        self.assertEqual("<sip:bob*xmpp.example@gw.example>", parsed.headers.get("To"))
        self.assertTrue(parsed.headers.get("Call-ID"))
        self.assertEqual("1 MESSAGE", parsed.headers.get("CSeq"))
        self.assertEqual("70", parsed.headers.get("Max-Forwards"))
        self.assertEqual("text/plain;charset=UTF-8", parsed.headers.get("Content-Type"))
        self.assertEqual("Hi", parsed.headers.get("Subject"))
        body = "h\u00e9llo \U0001F600".encode("utf-8")
        self.assertEqual(body, parsed.body)
        self.assertEqual(str(len(body)), parsed.headers.get("Content-Length"))

    def test_freshIdentifiers(self):
        """
        Each request gets a new branch, tag and Call-ID.
        """
        a = cli.buildMessage("sip:a@b", "x")
        b = cli.buildMessage("sip:a@b", "x")
        for name in ("Via", "From", "Call-ID"):
            self.assertNotEqual(a.headers.get(name), b.headers.get(name))

    def test_ipv6Via(self):
        """
        An IPv6 local address is written in brackets.
        """
        request = cli.buildMessage("sip:a@[::1]", "x", localHost="::1", localPort=5)
        self.assertIn("SIP/2.0/UDP [::1]:5;", request.headers.get("Via"))


class ExchangeUDPTests(unittest.TestCase):
    """
    L{cli.exchangeUDP}: RFC 3261 17.1.2.2 timers on a fake socket.
    """

    def setUp(self):
        self.clock = FakeClock()
        self.request = cli.buildMessage("sip:a@127.0.0.1", "hi")

    def test_finalResponse(self):
        """
        The first final response that matches is returned.
        """
        sock = FakeUDPSocket(self.clock, [(0.01, answer(202, "Accepted"))])
        response = cli.exchangeUDP(sock, self.request, 32, clock=self.clock)
        self.assertEqual(202, response.code)
        self.assertEqual([0.0], [t for t, _ in sock.sent])
        self.assertEqual(serialize(self.request), sock.sent[0][1])

    def test_retransmissions(self):
        """
        Without an answer the request is sent at 0, T1, 3 T1, 7 T1, then
        every T2, until the timeout.
        """
        sock = FakeUDPSocket(self.clock)
        e = self.assertRaises(
            cli.SIPClientError, cli.exchangeUDP, sock, self.request, 20,
            clock=self.clock)
        self.assertEqual("no final response within 20 seconds", str(e))
        self.assertEqual([0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5],
                         [t for t, _ in sock.sent])

    def test_provisionalThenT2(self):
        """
        After a provisional response, the running Timer E still fires, then
        retransmissions come every T2; the provisional is passed to
        C{onProvisional}.
        """
        sock = FakeUDPSocket(
            self.clock, [(0.2, answer(100, "Trying")), (9.0, answer(200))])
        seen = []
        response = cli.exchangeUDP(sock, self.request, 32, clock=self.clock,
                                   onProvisional=seen.append)
        self.assertEqual(200, response.code)
        self.assertEqual([100], [r.code for r in seen])
        self.assertEqual([0.0, 0.5, 4.5, 8.5], [t for t, _ in sock.sent])

    def test_strayResponsesIgnored(self):
        """
        Responses with another branch, garbage and requests are ignored.
        """
        other = cli.buildMessage("sip:a@127.0.0.1", "other")

        def stray(sock):
            response = Response(200, "OK", None)
            for name in ("Via", "From", "To", "Call-ID", "CSeq"):
                response.headers.add(name, other.headers.get(name))
            return serialize(response)

        sock = FakeUDPSocket(self.clock, [
            (0.1, stray), (0.2, b"garbage\r\n\r\n"),
            (0.3, serialize(other)), (0.4, answer(486, "Busy Here"))])
        response = cli.exchangeUDP(sock, self.request, 32, clock=self.clock)
        self.assertEqual(486, response.code)

    def test_refused(self):
        """
        ICMP port unreachable (ConnectionRefusedError) is a clear error.
        """
        sock = FakeUDPSocket(self.clock, refuse=True)
        e = self.assertRaises(cli.SIPClientError, cli.exchangeUDP, sock,
                              self.request, 32, clock=self.clock)
        self.assertIn("nothing listens there on UDP", str(e))

    def test_matchesRequest(self):
        """
        Only a response with the request's branch and a MESSAGE CSeq
        matches.
        """
        response = Response(200, "OK", None)
        for name in ("Via", "From", "To", "Call-ID"):
            response.headers.add(name, self.request.headers.get(name))
        response.headers.add("CSeq", "1 OPTIONS")
        self.assertFalse(cli.matchesRequest(response, self.request))
        response.headers.set("CSeq", "1 MESSAGE")
        self.assertTrue(cli.matchesRequest(response, self.request))
        response.headers.set("Via", "SIP/2.0/UDP x;branch=z9hG4bKother")
        self.assertFalse(cli.matchesRequest(response, self.request))
        self.assertFalse(cli.matchesRequest(self.request, self.request))


class ExchangeTCPTests(unittest.TestCase):
    """
    L{cli.exchangeTCP} on a fake stream socket.
    """

    def setUp(self):
        self.clock = FakeClock()
        self.request = cli.buildMessage("sip:a@127.0.0.1", "hi", transport="tcp")

    def test_splitResponse(self):
        """
        A response split anywhere (after a provisional one) is framed and
        returned.
        """
        final = []

        def first(sock):
            final.append(answer(202, "Accepted")(sock))
            return answer(100, "Trying")(sock) + final[0][:7]

        def rest(sock):
            return final[0][7:]

        sock = FakeTCPSocket(self.clock, [first, rest])
        seen = []
        response = cli.exchangeTCP(sock, self.request, 5, clock=self.clock,
                                   onProvisional=seen.append)
        self.assertEqual(202, response.code)
        self.assertEqual([100], [r.code for r in seen])
        self.assertEqual(serialize(self.request), sock.sent)

    def test_closed(self):
        """
        A connection closed before a final response is an error.
        """
        sock = FakeTCPSocket(self.clock, [])
        e = self.assertRaises(cli.SIPClientError, cli.exchangeTCP, sock,
                              self.request, 5, clock=self.clock)
        self.assertIn("closed before a final response", str(e))

    def test_timeout(self):
        """
        No answer within the timeout is an error.
        """
        sock = FakeTCPSocket(self.clock, [], closeAtEnd=False)
        e = self.assertRaises(cli.SIPClientError, cli.exchangeTCP, sock,
                              self.request, 3, clock=self.clock)
        self.assertEqual("no final response within 3 seconds", str(e))

    def test_notSIP(self):
        """
        A peer that sends something that cannot be framed is an error.
        """
        sock = FakeTCPSocket(self.clock, [b"HTTP/1.1 400 Bad\r\n\r\n"])
        e = self.assertRaises(cli.SIPClientError, cli.exchangeTCP, sock,
                              self.request, 3, clock=self.clock)
        self.assertIn("not valid SIP", str(e))


class DestinationTests(unittest.TestCase):
    """
    L{cli.destinationFor}.
    """

    def test_uri(self):
        """
        The URI's host, port and transport parameter; UDP and 5060 by
        default.
        """
        self.assertEqual(("udp", "127.0.0.1", 15060),
                         cli.destinationFor("sip:a*b@127.0.0.1:15060"))
        self.assertEqual(("tcp", "gw.example", 5060),
                         cli.destinationFor("sip:a@gw.example;transport=tcp"))
        self.assertEqual(("udp", "::1", 5062),
                         cli.destinationFor("sip:a@[::1]:5062"))

    def test_overrides(self):
        """
        --transport, --to-host/--to-port and --proxy choose the destination.
        """
        self.assertEqual(("tcp", "b", 5060),
                         cli.destinationFor("sip:a@b", transport="tcp"))
        self.assertEqual(("udp", "10.0.0.1", 15060),
                         cli.destinationFor("sip:a@b", toHost="10.0.0.1", toPort=15060))
        self.assertEqual(("udp", "::1", 5060),
                         cli.destinationFor("sip:a@b", toHost="[::1]"))
        self.assertEqual(("tcp", "proxy.example", 5070),
                         cli.destinationFor("sip:a@b",
                                            proxy="sip:proxy.example:5070;transport=tcp"))

    def test_tls(self):
        """
        TLS (sips: or transport=tls) is refused with a reason.
        """
        e = self.assertRaises(ValueError, cli.destinationFor, "sips:a@b")
        self.assertIn("transport tls is not supported", str(e))


class ArgumentTests(unittest.TestCase):
    """
    Usage errors exit 2 with argparse's messages; help and version work.
    """

    def test_noCommand(self):
        """
        A command is required.
        """
        status, out, err = run()
        self.assertEqual(2, status)
        self.assertIn("usage: xmppgw", err)
        self.assertIn("COMMAND", err)

    def test_unknownCommand(self):
        """
        An unknown command is a usage error.
        """
        status, out, err = run("frobnicate")
        self.assertEqual(2, status)
        self.assertIn("invalid choice: 'frobnicate'", err)

    def test_sendSIPBadArguments(self):
        """
        A bad URI, port, timeout or transport, or both --to-host and
        --proxy, are usage errors.
        """
        cases = [
            (["send-sip", "bob@example", "x"], "is not a SIP URI"),
            (["send-sip", "tel:+1", "x"], "is not a sip: or sips: URI"),
            (["send-sip", "--to-port", "0", "sip:a@b", "x"], "not a port"),
            (["send-sip", "--timeout", "0", "sip:a@b", "x"], "more than 0"),
            (["send-sip", "--transport", "sctp", "sip:a@b", "x"], "invalid choice"),
            (["send-sip", "--to-host", "h", "--proxy", "sip:p", "sip:a@b", "x"],
             "not allowed with argument"),
            (["send-sip", "sip:a@b"], "the following arguments are required: TEXT"),
            (["send-sip", "--proxy", "sip:p:5070", "--to-port", "5", "sip:a@b", "x"],
             "--to-port goes with --to-host"),
            (["send-sip", "sips:a@127.0.0.1", "x"], "not supported by send-sip"),
        ]
        for argv, message in cases:
            status, out, err = run(*argv)
            self.assertEqual(2, status, argv)
            self.assertIn(message, err, argv)

    def test_help(self):
        """
        Each command has a help text naming its arguments.
        """
        for command, words in [
            ("check-config", ["FILE", "Exit status 1"]),
            ("map", ["--config", "ADDRESS", "both"]),
            ("send-sip", ["URI", "TEXT", "--transport", "--to-host", "--proxy",
                          "--timeout", "--from", "--subject"]),
        ]:
            status, out, err = run(command, "--help")
            self.assertEqual(0, status)
            self.assertIn(f"usage: xmppgw {command}", out)
            for word in words:
                self.assertIn(word, out, (command, word))

    def test_version(self):
        """
        C{version} and C{--version} print the version.
        """
        status, out, err = run("version")
        self.assertEqual(0, status)
        self.assertEqual(f"xmppgw {__version__}", out.splitlines()[0])
        self.assertIn("Twisted ", out)
        status, out, err = run("--version")
        self.assertEqual((0, f"xmppgw {__version__}\n"), (status, out))

    def test_demoHelp(self):
        """
        C{xmppgw demo --help} is the demo's own help.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        status = cli.main(["demo", "--help"])
        self.assertEqual(0, status)
        self.assertIn("usage: xmppgw demo", out.getvalue())
        self.assertIn("--c2s-port", out.getvalue())

    def test_entryPoint(self):
        """
        C{python -m xmppgw.cli} runs the command (as the installed
        C{xmppgw} script does).
        """
        result = subprocess.run(
            [sys.executable, "-m", "xmppgw.cli", "check-config", SAMPLE],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn(b": OK", result.stdout)


def demoArgs(**kwargs):
    values = dict(config=None, run_dir="run/demo", c2s_port=15222,
                  component_port=None, sip_port=None, phone_port=None,
                  user="demo", password="demo")
    values.update(kwargs)
    return Namespace(**values)


class DemoPlanTests(unittest.TestCase):
    """
    The demo's configuration handling (L{demo.makePlan}).
    """

    def test_shippedConfig(self):
        """
        By default the demo runs on etc/demo.toml's values.
        """
        plan = demo.makePlan(demoArgs())
        self.assertEqual(DEMO, plan.template)
        self.assertEqual(
            (15222, 15347, 15060, 15070, "127.0.0.1", "sip.localhost"),
            (plan.c2sPort, plan.componentPort, plan.sipPort, plan.phonePort,
             plan.gatewayDomain, plan.componentDomain))
        self.assertEqual("sip:echo*localhost@127.0.0.1:15060",
                         plan.sipURIFor("echo@localhost"))
        self.assertEqual([], plan.sendOptions())

    def test_portOverrides(self):
        """
        Port options are written into the generated configuration, which
        the gateway's validation accepts.
        """
        plan = demo.makePlan(demoArgs(sip_port=25060, component_port=25347,
                                      phone_port=25070, c2s_port=25222))
        text = demo.formatTOML(plan.data)
        data = tomllib.loads(text)
        self.assertEqual(25347, data["xmpp"]["xmpp_port"])
        self.assertEqual("sip:127.0.0.1:25070", data["xmpp"]["outbound_proxy"])
        self.assertEqual(["udp:127.0.0.1:25060", "tcp:127.0.0.1:25060"],
                         data["sip"]["listen"])
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        status, out, err = run("check-config", path)
        self.assertEqual(0, status, err)

    def test_builtInWithoutEtc(self):
        """
        Without etc/demo.toml (an installed package) the built-in values
        are used.
        """
        self.patch(demo, "SHIPPED_CONFIG", self.mktemp())
        plan = demo.makePlan(demoArgs())
        self.assertEqual("<built-in demo configuration>", plan.template)
        self.assertEqual((15347, 15060, 15070),
                         (plan.componentPort, plan.sipPort, plan.phonePort))

    def test_sameDataInBoth(self):
        """
        etc/demo.toml and the built-in configuration agree.
        """
        with open(DEMO, "rb") as f:
            self.assertEqual(demo.BUILTIN_CONFIG["xmpp"], tomllib.load(f)["xmpp"])

    def test_clashingPorts(self):
        """
        Two roles on one port are refused.
        """
        e = self.assertRaises(demo.DemoError, demo.makePlan,
                              demoArgs(sip_port=15222))
        self.assertIn("four different ports", str(e))

    def test_invalidTemplate(self):
        """
        An invalid --config is reported with its errors.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[xmpp]\nxmpp_port = -1\n")
        e = self.assertRaises(demo.DemoError, demo.makePlan, demoArgs(config=path))
        self.assertIn(f"{path}: xmpp.xmpp_port", str(e))

    def test_gatewayDomainNotAddress(self):
        """
        When the SIP domain is a name, the printed commands carry the
        listening address as --to-host/--to-port.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[xmpp]\ngateway_domain = "gw.example"\n'
                    '[sip]\nlisten = ["udp:127.0.0.1:15060"]\n')
        plan = demo.makePlan(demoArgs(config=path))
        self.assertEqual("sip:echo*localhost@gw.example",
                         plan.sipURIFor("echo@localhost"))
        self.assertEqual(["--to-host", "127.0.0.1", "--to-port", "15060"],
                         plan.sendOptions())
        self.assertIn("send-sip --to-host 127.0.0.1 --to-port 15060 "
                      "'sip:echo*localhost@gw.example'", demo.instructions(plan))

    def test_instructions(self):
        """
        The printout names the login, the SIP URIs and the commands.
        """
        text = demo.instructions(demo.makePlan(demoArgs()))
        self.assertIn(demo.READY_LINE, text)
        self.assertIn("send-sip 'sip:echo*localhost@127.0.0.1:15060' "
                      "'Hello from SIP'", text)
        self.assertIn("JID demo@localhost   password demo", text)
        self.assertIn("port 15222", text)
        self.assertIn("bob*example.com@sip.localhost", text)
        self.assertIn("tls disable", text)

    def test_formatTOML(self):
        """
        formatTOML writes what tomllib reads back.
        """
        data = {"a": {"s": 'q"uo\\te', "i": 3, "f": 0.5, "b": False,
                      "l": ["x", "y"]}, "b": {}}
        self.assertEqual(data, tomllib.loads(demo.formatTOML(data)))
        self.assertRaises(TypeError, demo.formatTOML, {"a": 1})

    def test_gatewayLines(self):
        """
        Only relayed-message lines, link state and errors are shown, without
        the timestamp.
        """
        show = demo.gatewayLineToShow
        self.assertEqual(
            "SIP->XMPP a -> b as c -> d: 202",
            show("2025-01-01T00:00:00+0000 [xmppgw.router#info] SIP->XMPP a -> b as c -> d: 202"))
        self.assertIsNone(show("2025-01-01T00:00:00+0000 [-] Loading plugin"))
        self.assertEqual("Traceback (most recent call last):",
                         show("Traceback (most recent call last):"))


class EnsureProsodyTests(unittest.TestCase):
    """
    L{demo.ensureProsody}.
    """

    def test_installed(self):
        """
        Nothing happens when Prosody is there.
        """
        self.patch(localpeers, "findProgram", lambda name: "/usr/bin/" + name)
        demo.ensureProsody(io.StringIO(), runCommand=self.fail)

    def test_notRoot(self):
        """
        Not root: a clear message saying what to install.
        """
        self.patch(localpeers, "findProgram", lambda name: None)
        e = self.assertRaises(demo.DemoError, demo.ensureProsody,
                              io.StringIO(), runCommand=self.fail, isRoot=False)
        self.assertIn("apt-get install prosody", str(e))

    def test_rootInstalls(self):
        """
        As root, the Debian package is installed non-interactively.
        """
        installed = []
        calls = []

        def runCommand(argv, env, **kw):
            calls.append((argv, env["DEBIAN_FRONTEND"]))
            installed.append(True)
            return subprocess.CompletedProcess(argv, 0)

        self.patch(localpeers, "findProgram",
                   lambda name: "/usr/bin/" + name if installed else None)
        out = io.StringIO()
        demo.ensureProsody(out, runCommand=runCommand, isRoot=True)
        self.assertEqual(1, len(calls))
        argv, frontend = calls[0]
        self.assertEqual(["install", "-y", "--no-install-recommends", "prosody"],
                         argv[1:])
        self.assertEqual("noninteractive", frontend)
        self.assertIn("installing", out.getvalue())

    def test_rootInstallFails(self):
        """
        As root, a failed install (even after apt-get update) is reported.
        """
        calls = []

        def runCommand(argv, env, **kw):
            calls.append(argv[1])
            return subprocess.CompletedProcess(argv, 100)

        self.patch(localpeers, "findProgram", lambda name: None)
        e = self.assertRaises(demo.DemoError, demo.ensureProsody, io.StringIO(),
                              runCommand=runCommand, isRoot=True)
        self.assertEqual(["install", "update", "install"], calls)
        self.assertIn("install it by hand", str(e))


class SIPPhoneTests(unittest.TestCase):
    """
    The demo's SIP phone answers what it receives.
    """

    def setUp(self):
        self.lines = []
        self.phone = demo.SIPPhone(None, "127.0.0.1", 15070, self.lines.append)
        self.replies = []

    def receive(self, request):
        self.phone._received(serialize(request), self.replies.append)

    def test_message(self):
        """
        A MESSAGE is reported and answered 200.
        """
        request = cli.buildMessage("sip:bob@example.com", "h\u00e9",
                                   fromURI="sip:echo*localhost@127.0.0.1")
        self.receive(request)
        self.assertEqual([200], [r.code for r in self.replies])
        self.assertEqual(
            [("sip:bob@example.com", request.headers.get("From"), "h\u00e9")],
            self.phone.received)
        self.assertIn("SIP phone got a MESSAGE for sip:bob@example.com", self.lines[0])

    def test_otherMethods(self):
        """
        OPTIONS gets 200, other methods 405; ACK and garbage get nothing.
        """
        for method in ("OPTIONS", "INFO", "ACK"):
            request = cli.buildMessage("sip:bob@example.com", "")
            request.method = method
            self.receive(request)
        self.phone._received(b"nonsense\r\n\r\n", self.replies.append)
        self.assertEqual([200, 405], [r.code for r in self.replies])
        self.assertEqual([], self.lines)


class FakeStream:
    def __init__(self):
        self.sent = []

    def send(self, element):
        self.sent.append(element)


class EchoClientTests(unittest.TestCase):
    """
    The demo's echo account prints and answers messages.
    """

    def setUp(self):
        self.lines = []
        self.client = demo.EchoClient(None, "echo@localhost", "pw", "127.0.0.1",
                                      15222, self.lines.append, lambda: None)
        self.client.xmlstream = FakeStream()

    def message(self, body, type="chat", sender="a*b@sip.localhost"):
        element = domish.Element((None, "message"))
        element["from"] = sender
        element["type"] = type
        if body is not None:
            element.addElement("body", content=body)
        self.client._message(element)

    def test_answers(self):
        """
        A message is answered with "echo: " and its text, to its sender,
        with its type.
        """
        self.message("hello")
        [reply] = self.client.xmlstream.sent
        self.assertEqual(("a*b@sip.localhost", "chat", "echo: hello"),
                         (reply["to"], reply["type"], str(reply.body)))
        self.assertEqual([("a*b@sip.localhost", "hello")], self.client.received)
        self.assertEqual(2, len(self.lines))

    def test_noLoops(self):
        """
        Echoes, errors and messages without a body are not answered.
        """
        self.message("echo: hello")
        self.message("x", type="error")
        self.message(None)
        self.assertEqual([], self.client.xmlstream.sent)
