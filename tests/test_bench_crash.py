"""
Tests for the pure parts of L{bench.crash}: parsing the SIP answers and the
body tokens, and classifying the MESSAGEs of one kill (no network, no
processes).
"""

from twisted.trial import unittest

from bench.crash import (
    latencyStats, parseAnswer, sipMessage, summarize, tally, tokenBody,
    tokenPattern)

MS = 1_000_000


def answer(code, callID="c42-kernel1-abc@127.0.0.1", header="Call-ID"):
    return (f"SIP/2.0 {code} Accepted\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5000;branch=z9hG4bK-x\r\n"
            f"{header}: {callID}\r\n"
            "CSeq: 1 MESSAGE\r\n"
            "Content-Length: 0\r\n\r\n").encode("ascii")


class ParseAnswerTests(unittest.TestCase):
    """
    L{parseAnswer} finds the message number and the status code.
    """

    def test_response(self):
        """
        A 202 to MESSAGE 42 gives C{(42, 202)}.
        """
        self.assertEqual((42, 202), parseAnswer(answer(202)))

    def test_compactCallID(self):
        """
        The compact form of Call-ID (C{i:}) is understood too.
        """
        self.assertEqual((7, 503), parseAnswer(
            answer(503, "c7-none2-ff@127.0.0.1", header="i")))

    def test_notOurs(self):
        """
        A request, or a response without one of our Call-IDs, gives L{None}.
        """
        self.assertIsNone(parseAnswer(b"MESSAGE sip:a@b SIP/2.0\r\n\r\n"))
        self.assertIsNone(parseAnswer(answer(200, "foreign@example.com")))

    def test_bodyIgnored(self):
        """
        A Call-ID-like line in the body does not count.
        """
        data = (b"SIP/2.0 200 OK\r\nCSeq: 1 MESSAGE\r\n\r\n"
                b"Call-ID: c3-x@127.0.0.1\r\n")
        self.assertIsNone(parseAnswer(data))


class TokenTests(unittest.TestCase):
    """
    The body token round-trips through L{tokenPattern}.
    """

    def test_roundTrip(self):
        """
        The pattern of a tag finds the number and send time of a body of
        that tag, not of another tag.
        """
        body = tokenBody("tcp3-0a1b2c", 17, 123456789).encode()
        match = tokenPattern("tcp3-0a1b2c").search(
            b"<message><body>" + body + b"</body></message>")
        self.assertEqual((b"17", b"123456789"), match.groups())
        self.assertIsNone(tokenPattern("tcp3-0a1b2d").search(body))

    def test_messageCarriesToken(self):
        """
        L{sipMessage} puts the token in the body, with a matching
        Content-Length and the Call-ID that L{parseAnswer} reads back.
        """
        data = sipMessage(5, "none1-aa", "sip:rx*ej.test@gw.ej.test",
                          40000, 99)
        head, body = data.split(b"\r\n\r\n", 1)
        self.assertEqual(b"crash k=none1-aa i=5 t=99", body)
        self.assertIn(b"Content-Length: %d" % (len(body),), head)
        self.assertEqual((5, 202), parseAnswer(
            answer(202, "c5-none1-aa@127.0.0.1")))
        self.assertIn(b"Call-ID: c5-none1-aa@127.0.0.1", head)


class TallyTests(unittest.TestCase):
    """
    L{tally} classifies each MESSAGE sent before the kill.
    """

    def setUp(self):
        # ten messages 1 ms apart from t = 100 ms; the kill at 108.5 ms
        self.sends = [100 * MS + i * MS for i in range(10)]
        self.killed = 108 * MS + MS // 2

    def test_classification(self):
        """
        Acknowledged and delivered; acknowledged and lost; delivered without
        an answer (exposure); neither; a non-2xx answer; a message sent
        after the kill is left out; a token seen twice is counted.
        """
        answers = {i: (202, self.sends[i] + MS // 2) for i in range(6)}
        answers[6] = (503, self.sends[6] + MS // 2)
        delivered = {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 7: 1, 9: 1}
        result = tally(self.sends, answers, delivered, self.killed)
        self.assertEqual(9, result["sent_before_kill"])
        self.assertEqual(1, result["sent_after_kill"])
        self.assertEqual(6, result["acknowledged"])
        self.assertEqual([5], result["lost_ids"])
        self.assertEqual(1, result["lost"])
        self.assertEqual([7], result["exposed_ids"])
        self.assertEqual([1.5], result["exposed_sent_ms_before_kill"])
        self.assertEqual(1, result["duplicate_exposure"])
        self.assertEqual(1, result["delivered_twice"])
        # 8 (no answer, not delivered); 6 has an answer (503)
        self.assertEqual(1, result["neither"])
        self.assertEqual({"503": 1}, result["non_2xx"])
        self.assertEqual(1, result["delivered_sent_after_kill"])
        self.assertEqual(6, result["delivered"])

    def test_unansweredEarly(self):
        """
        A message without an answer sent more than C{earlyNs} before the
        kill is counted as C{unanswered_early}; a later one is not.
        """
        answers = {i: (202, self.sends[i] + MS) for i in range(9) if i != 2}
        del answers[8]
        result = tally(self.sends, answers, {}, self.killed, earlyNs=2 * MS)
        # 2 was sent 6.5 ms before the kill, 8 only 0.5 ms before
        self.assertEqual(1, result["unanswered_early"])
        self.assertEqual(2, result["neither"])

    def test_latencyBeforeKillOnly(self):
        """
        The 2xx latency counts the answers received before the kill.
        """
        answers = {0: (202, self.sends[0] + 2 * MS),
                   8: (202, self.killed + MS)}
        result = tally(self.sends, answers, {0: 1, 8: 1}, self.killed)
        self.assertEqual([2 * MS], result["latencies_ns"])
        self.assertEqual(2.0, result["latency_2xx"]["p50_ms"])
        self.assertEqual(2, result["acknowledged"])


class SummaryTests(unittest.TestCase):
    """
    L{summarize} adds the kills up.
    """

    def test_sums(self):
        """
        Counts are summed, kills with a loss or an exposure counted, and
        the latency quantiles taken over all kills' latencies.
        """
        sends = [i * MS for i in range(4)]
        first = tally(sends, {0: (202, MS // 2), 1: (202, 2 * MS)},
                      {0: 1}, 3 * MS + 1)
        second = tally(sends, {0: (202, 3 * MS // 2)}, {0: 1, 1: 1},
                       3 * MS + 1)
        summary = summarize([first, second])
        self.assertEqual(2, summary["kills"])
        self.assertEqual(3, summary["acknowledged"])
        self.assertEqual(1, summary["lost"])
        self.assertEqual(1, summary["kills_with_loss"])
        self.assertEqual(1, summary["duplicate_exposure"])
        self.assertEqual(1, summary["kills_with_duplicate_exposure"])
        self.assertEqual(3, summary["latency_2xx"]["n"])
        self.assertEqual(1.0, summary["latency_2xx"]["p50_ms"])


class LatencyStatsTests(unittest.TestCase):
    """
    L{latencyStats} converts to milliseconds.
    """

    def test_empty(self):
        """
        No latencies: no quantiles.
        """
        self.assertEqual({"n": 0, "p50_ms": None, "p99_ms": None,
                          "max_ms": None}, latencyStats([]))

    def test_quantiles(self):
        """
        1..101 ms: p50 51 ms, p99 100 ms, max 101 ms.
        """
        stats = latencyStats([i * MS for i in range(1, 102)])
        self.assertEqual({"n": 101, "p50_ms": 51.0, "p99_ms": 100.0,
                          "max_ms": 101.0}, stats)
