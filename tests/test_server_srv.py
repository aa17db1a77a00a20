"""
Tests for L{xmppgw.xmpp.srv}: finding a domain's S2S servers.
"""

from twisted.internet import defer
from twisted.names import dns, error as dnserror
from twisted.trial import unittest

from xmppgw.xmpp.srv import S2SResolver, ServiceNotAvailable, orderSRV, parsePeer


def srv(priority, weight, port, target, name="_xmpp-server._tcp.example.net"):
    return dns.RRHeader(name=name, type=dns.SRV, payload=dns.Record_SRV(
        priority, weight, port, target))


class FakeResolver:
    """
    An IResolver with canned C{lookupService} answers.
    """

    def __init__(self, result=None, failure=None):
        self.result = result
        self.failure = failure
        self.queries = []

    def lookupService(self, name, timeout=None):
        self.queries.append(name)
        if self.failure is not None:
            return defer.fail(self.failure)
        return defer.succeed((self.result, [], []))


class OrderSRVTests(unittest.TestCase):
    """
    L{orderSRV} orders by priority, then weight (RFC 2782).
    """

    def test_priority(self):
        """
        Lower priorities come first whatever the weights.
        """
        records = [(20, 100, 5269, "b"), (10, 0, 5270, "a")]
        self.assertEqual(orderSRV(records, lambda: 0.5),
                         [("a", 5270), ("b", 5269)])

    def test_weights(self):
        """
        Within a priority the random draw picks by weight.
        """
        records = [(10, 10, 1, "light"), (10, 90, 2, "heavy")]
        self.assertEqual(orderSRV(records, lambda: 0.05)[0], ("light", 1))
        self.assertEqual(orderSRV(records, lambda: 0.5)[0], ("heavy", 2))
        self.assertEqual(len(orderSRV(records, lambda: 0.5)), 2)


class S2SResolverTests(unittest.TestCase):
    """
    L{S2SResolver.resolve}.
    """

    def test_pinned(self):
        """
        A pinned domain gives its host:port and makes no DNS query.
        """
        fake = FakeResolver([])
        resolver = S2SResolver(fake, peers={"Example.NET": ("127.0.0.1", 5299)})
        result = self.successResultOf(resolver.resolve("example.net"))
        self.assertEqual(result, [("127.0.0.1", 5299)])
        self.assertEqual(fake.queries, [])

    def test_srv(self):
        """
        SRV records of _xmpp-server._tcp give the targets in order.
        """
        fake = FakeResolver([srv(10, 0, 5270, "xmpp2.example.net"),
                             srv(5, 0, 5269, "xmpp1.example.net.")])
        result = self.successResultOf(
            S2SResolver(fake, random=lambda: 0.0).resolve("example.net"))
        self.assertEqual(fake.queries, ["_xmpp-server._tcp.example.net"])
        self.assertEqual(result, [("xmpp1.example.net", 5269),
                                  ("xmpp2.example.net", 5270)])

    def test_noRecordsFallback(self):
        """
        No SRV record (NXDOMAIN) falls back to the domain on port 5269.
        """
        fake = FakeResolver(failure=dnserror.DNSNameError())
        result = self.successResultOf(S2SResolver(fake).resolve("example.net"))
        self.assertEqual(result, [("example.net", 5269)])

    def test_emptyAnswerFallback(self):
        """
        An empty answer falls back too.
        """
        result = self.successResultOf(
            S2SResolver(FakeResolver([])).resolve("example.net"))
        self.assertEqual(result, [("example.net", 5269)])

    def test_failedQueryFallback(self):
        """
        A failed query (server failure, timeout) falls back too.
        """
        fake = FakeResolver(failure=dnserror.DNSServerError())
        result = self.successResultOf(S2SResolver(fake).resolve("example.net"))
        self.assertEqual(result, [("example.net", 5269)])

    def test_dot(self):
        """
        A single record with target "." means no service.
        """
        fake = FakeResolver([srv(0, 0, 0, b"")])  # the root name "."
        self.failureResultOf(S2SResolver(fake).resolve("example.net"),
                             ServiceNotAvailable)


class ParsePeerTests(unittest.TestCase):
    """
    L{parsePeer} reads "host:port".
    """

    def test_valid(self):
        """
        Host names, IPv4 and bracketed IPv6 with a port.
        """
        self.assertEqual(parsePeer("xmpp.example:5269"), ("xmpp.example", 5269))
        self.assertEqual(parsePeer("127.0.0.1:1"), ("127.0.0.1", 1))
        self.assertEqual(parsePeer("[::1]:5269"), ("::1", 5269))

    def test_invalid(self):
        """
        No port, a bad port or an unbracketed IPv6 address are refused.
        """
        for text in ("xmpp.example", "x:0", "x:70000", "::1:5269", "[::1]", ":5"):
            self.assertRaises(ValueError, parsePeer, text)
