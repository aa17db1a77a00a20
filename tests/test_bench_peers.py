"""
Tests for the pacing of L{bench.peers}' open-loop senders (fake clock and
sleep: no real time; speed is measured by make bench).
"""

from twisted.trial.unittest import TestCase

from bench import peers


class FakeTime:
    """
    A monotonic clock in ns that only C{sleep} advances; counts the calls.
    """

    def __init__(self, now=10**9, oversleep=0):
        self.now = now
        self.oversleep = oversleep
        self.sleeps = []
        self.reads = 0

    def monotonic_ns(self):
        self.reads += 1
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += int(seconds * 1e9) + self.oversleep


class WaitTests(TestCase):
    def setUp(self):
        self.clock = FakeTime()
        self.patch(peers, "_now", self.clock.monotonic_ns)
        self.patch(peers.time, "sleep", self.clock.sleep)

    def test_sleepsOnceUntilDue(self):
        """
        A send 250 µs ahead sleeps once for the whole wait (no busy loop:
        the clock is read twice, not in a spin) and is on time.
        """
        self.assertEqual(0, peers._wait(self.clock.now + 250_000))
        self.assertEqual([250e-6], self.clock.sleeps)
        self.assertEqual(2, self.clock.reads)

    def test_lateWakeUpReported(self):
        """
        A sleep that overruns by 2 ms returns the lateness in ns.
        """
        self.clock.oversleep = 2_000_000
        self.assertEqual(2_000_000, peers._wait(self.clock.now + 500_000))

    def test_dueOrAlmostDueSendsAtOnce(self):
        """
        A send already due, or due within L{peers.EARLY_NS}, goes out
        without sleeping; an overdue one reports how late it is.
        """
        now = self.clock.now
        self.assertEqual(0, peers._wait(now + peers.EARLY_NS))
        self.assertEqual(3_000, peers._wait(now - 3_000))
        self.assertEqual([], self.clock.sleeps)


class LatenessTests(TestCase):
    def test_counts(self):
        """
        Only sends more than 1 ms late count as late; the worst is kept.
        """
        lateness = peers.Lateness()
        for ns in (0, 999_999, 1_000_001, 5_500_000, 200):
            lateness.add(ns)
        self.assertEqual({"late_over_1ms": 2, "max_lateness_ms": 5.5},
                         lateness.asDict())


class FakeSocket:
    """
    A connected socket whose peer's bytes are scripted: C{recv} returns the
    next chunk (C{b""} once they run out: the peer closed); C{sendall}
    records.
    """

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.sent = []
        self.options = []
        self.closed = False

    def setsockopt(self, *args):
        self.options.append(args)

    def sendall(self, data):
        self.sent.append(data)

    def recv(self, size):
        return self.chunks.pop(0) if self.chunks else b""

    def setblocking(self, flag):
        pass

    def close(self):
        self.closed = True


HEADER = (b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx."
          b"jabber.org/streams' xmlns='jabber:component:accept' "
          b"id='abc123' from='floor.xmpp.test'>")


class ComponentTests(TestCase):
    """
    L{peers.componentHandshake} and L{peers.componentLoad}, the floor's
    minimal XEP-0114 component.
    """

    def connect(self, chunks):
        sock = FakeSocket(chunks)
        self.patch(peers.socket, "create_connection",
                   lambda address, timeout: sock)
        return sock

    def test_handshake(self):
        """
        The component opens a C{jabber:component:accept} stream to its
        domain and answers with SHA-1 of the stream id and the secret
        (XEP-0114); it returns the socket once the server's C{<handshake/>}
        arrives, even in the same read as the header.
        """
        import hashlib
        sock = self.connect([HEADER[:40], HEADER[40:] + b"<handshake/>"])
        self.assertIs(sock, peers.componentHandshake(
            "127.0.0.1", 5347, "floor.xmpp.test", "s3cret"))
        opening, handshake = sock.sent
        self.assertIn(b"xmlns='jabber:component:accept'", opening)
        self.assertIn(b"to='floor.xmpp.test'", opening)
        self.assertEqual(
            b"<handshake>%s</handshake>"
            % hashlib.sha1(b"abc123s3cret").hexdigest().encode(), handshake)

    def test_refused(self):
        """
        A stream error instead of C{<handshake/>} (a wrong secret) is an
        error, not a silent start.
        """
        self.connect([HEADER, b"<stream:error><not-authorized/>"])
        self.assertRaises(RuntimeError, peers.componentHandshake,
                          "127.0.0.1", 5347, "floor.xmpp.test", "wrong")

    def test_closed(self):
        """
        A server that closes the connection before its header is an error.
        """
        self.connect([])
        self.assertRaises(RuntimeError, peers.componentHandshake,
                          "127.0.0.1", 5347, "floor.xmpp.test", "s3cret")

    def test_load(self):
        """
        L{peers.componentLoad} writes C{count} message stanzas shaped like
        the gateway's, one per send, from C{count} distinct senders modulo
        C{users}, each body with its number and send time, on the open-loop
        schedule (fake clock), and reports them.
        """
        clock = FakeTime()
        self.patch(peers, "_now", clock.monotonic_ns)
        self.patch(peers.time, "sleep", clock.sleep)
        self.patch(peers.select, "select", lambda r, w, x, t: ([], [], []))
        sock = self.connect([HEADER, b"<handshake/>"])
        result = peers.componentLoad(
            "127.0.0.1", 5347, "floor.xmpp.test", "s3cret", "rx@xmpp.test",
            users=2, rate=1000, count=3, drain=0)
        stanzas = sock.sent[2:]
        self.assertEqual(3, len(stanzas))
        self.assertEqual(
            [b"load0*sip.example.com@floor.xmpp.test",
             b"load1*sip.example.com@floor.xmpp.test",
             b"load0*sip.example.com@floor.xmpp.test"],
            [peers.re.search(rb"from='([^']+)'", s).group(1)
             for s in stanzas])
        marks = [peers.MARK.search(s) for s in stanzas]
        self.assertEqual([0, 1, 2], [int(m.group(1)) for m in marks])
        times = [int(m.group(2)) for m in marks]
        self.assertEqual([1_000_000, 1_000_000], [
            b - a for a, b in zip(times, times[1:])])
        for s in stanzas:
            self.assertTrue(s.startswith(b"<message to='rx@xmpp.test' "))
            self.assertTrue(s.endswith(b"</message>"))
        self.assertEqual(3, result["sent"])
        self.assertEqual(0, result["error_stanzas"])
        self.assertTrue(sock.closed)
