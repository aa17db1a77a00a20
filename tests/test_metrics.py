"""
Tests for L{xmppgw.metrics}: the recorder, the router's calls to it, the
scrape-time collectors, the HTTP pages and the wiring into the gateway.
"""

import inspect
import os
import subprocess
import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from xmppgw import tap
from xmppgw.config import parseConfig
from xmppgw.metrics import (
    METRIC_NAMES, MetricsRecorder, MetricsService, NullRecorder, Readiness,
    makeRecorder)
from xmppgw.metricsweb import makeSite
from xmppgw.sip.transaction import TransactionTimeout

from tests.test_router import (
    RouterTestsMixin, FakeServerTransaction, response, sipMessage,
    xmppMessage)
from tests.test_tap import UDPMemoryReactor


def publicMethods(cls):
    # callable, not inspect.isfunction: in the compiled build
    # (xmppgw.compiled) methods are Cython functions.
    return sorted(
        name for name in dir(cls)
        if not name.startswith("_") and callable(getattr(cls, name))
        and not isinstance(getattr(cls, name), type))


class RecorderInterfaceTests(unittest.TestCase):
    """
    L{NullRecorder} is the interface; L{MetricsRecorder} implements it.
    """

    def test_sameMethods(self):
        """
        Both recorders have the same public methods with the same
        parameters (apart from L{MetricsRecorder.exposition}).
        """
        nullMethods = publicMethods(NullRecorder)
        realMethods = publicMethods(MetricsRecorder)
        self.assertEqual(sorted(nullMethods + ["exposition"]), realMethods)
        for name in nullMethods:
            self.assertEqual(
                inspect.signature(getattr(NullRecorder, name)),
                inspect.signature(getattr(MetricsRecorder, name)), name)

    def test_nullDoesNothing(self):
        """
        Every method of L{NullRecorder} accepts its arguments and returns
        L{None}.
        """
        r = NullRecorder()
        self.assertFalse(r.enabled)
        self.assertIsNone(r.relayed("sip", "relayed"))
        self.assertIsNone(r.sipResponse(202, "sent"))
        self.assertIsNone(r.xmppError("item-not-found", "sent"))
        self.assertIsNone(r.refused("rate_limit", "sip"))
        self.assertIsNone(r.transactionTime(0.1))
        self.assertIsNone(r.relayLatency("xmpp", 0.1))
        self.assertIsNone(r.configReloaded(True))
        self.assertIsNone(r.watchRouter(object()))
        self.assertIsNone(r.watchLink(object()))
        self.assertIsNone(r.watchS2S(dict))

    def test_makeRecorder(self):
        """
        No C{[metrics] listen}: a L{NullRecorder}; with it, a
        L{MetricsRecorder}.
        """
        off = parseConfig({}, "x.toml").metrics
        on = parseConfig({"metrics": {"listen": "127.0.0.1:9470"}},
                         "x.toml").metrics
        self.assertIs(type(makeRecorder(off)), NullRecorder)
        self.assertIsInstance(makeRecorder(on), MetricsRecorder)


class RecorderTests(unittest.TestCase):
    """
    L{MetricsRecorder} counts into its own registry.
    """

    def setUp(self):
        self.recorder = MetricsRecorder()

    def value(self, name, **labels):
        return self.recorder.registry.get_sample_value(name, labels)

    def test_relayed(self):
        """
        Outcomes become snake_case label values; counts add up.
        """
        self.recorder.relayed("sip", "relayed")
        self.recorder.relayed("sip", "relayed")
        self.recorder.relayed("sip", "holdExpired")
        self.assertEqual(
            2.0, self.value("xmppgw_messages_total", origin="sip",
                            outcome="relayed"))
        self.assertEqual(
            1.0, self.value("xmppgw_messages_total", origin="sip",
                            outcome="hold_expired"))
        self.assertIsNone(
            self.value("xmppgw_messages_total", origin="xmpp",
                       outcome="relayed"))

    def test_responsesAndErrors(self):
        """
        SIP responses are counted by code and direction, XMPP errors by
        condition and direction, refusals by reason and side.
        """
        r = self.recorder
        r.sipResponse(404, "received")
        r.xmppError("item-not-found", "sent")
        r.xmppError(None, "received")
        r.refused("rate_limit", "sip")
        self.assertEqual(1.0, self.value("xmppgw_sip_responses_total",
                                         code="404", direction="received"))
        self.assertEqual(1.0, self.value("xmppgw_xmpp_errors_total",
                                         condition="item-not-found",
                                         direction="sent"))
        self.assertEqual(1.0, self.value("xmppgw_xmpp_errors_total",
                                         condition="undefined-condition",
                                         direction="received"))
        self.assertEqual(1.0, self.value("xmppgw_refusals_total",
                                         reason="rate_limit", side="sip"))

    def test_histograms(self):
        """
        Latencies land in the histogram buckets; negative values (a clock
        step) count as zero.
        """
        r = self.recorder
        r.transactionTime(0.003)
        r.transactionTime(-1.0)
        r.relayLatency("xmpp", 2.0)
        self.assertEqual(2.0, self.value("xmppgw_sip_transaction_seconds_count"))
        self.assertEqual(0.003, self.value("xmppgw_sip_transaction_seconds_sum"))
        self.assertEqual(1.0, self.value("xmppgw_sip_transaction_seconds_bucket",
                                         le="0.001"))
        self.assertEqual(1.0, self.value("xmppgw_relay_latency_seconds_bucket",
                                         origin="xmpp", le="2.5"))
        self.assertEqual(0.0, self.value("xmppgw_relay_latency_seconds_bucket",
                                         origin="xmpp", le="1.0"))

    def test_reloads(self):
        """
        Reloads are counted as applied or refused.
        """
        self.recorder.configReloaded(True)
        self.recorder.configReloaded(False)
        self.recorder.configReloaded(False)
        self.assertEqual(1.0, self.value("xmppgw_config_reloads_total",
                                         result="applied"))
        self.assertEqual(2.0, self.value("xmppgw_config_reloads_total",
                                         result="refused"))

    def test_isolated(self):
        """
        Two recorders do not share numbers (no global registry).
        """
        other = MetricsRecorder()
        other.relayed("xmpp", "failed")
        self.assertIsNone(self.value("xmppgw_messages_total", origin="xmpp",
                                     outcome="failed"))

    def test_link(self):
        """
        The watched link's state and counters are read at scrape time.
        """
        class Link:
            state = "down"
            isAuthenticated = False
            reconnects = 3
            authFailures = 1
            conflicts = 0

        link = Link()
        self.recorder.watchLink(link)
        self.assertEqual(0.0, self.value("xmppgw_xmpp_link_up"))
        self.assertEqual(1.0, self.value("xmppgw_xmpp_link_state", state="down"))
        self.assertEqual(0.0, self.value("xmppgw_xmpp_link_state",
                                         state="authenticated"))
        self.assertEqual(3.0, self.value("xmppgw_xmpp_reconnects_total"))
        self.assertEqual(1.0, self.value("xmppgw_xmpp_auth_failures_total"))
        link.state, link.isAuthenticated, link.reconnects = (
            "authenticated", True, 4)
        self.assertEqual(1.0, self.value("xmppgw_xmpp_link_up"))
        self.assertEqual(1.0, self.value("xmppgw_xmpp_link_state",
                                         state="authenticated"))
        self.assertEqual(4.0, self.value("xmppgw_xmpp_reconnects_total"))

    def test_s2sHook(self):
        """
        S2S stream counts come from the registered callables, summed by
        state.
        """
        self.assertIsNone(self.value("xmppgw_s2s_streams", state="up"))
        self.recorder.watchS2S(lambda: {"up": 2, "dialback": 1})
        self.recorder.watchS2S(lambda: {"up": 1})
        self.assertEqual(3.0, self.value("xmppgw_s2s_streams", state="up"))
        self.assertEqual(1.0, self.value("xmppgw_s2s_streams", state="dialback"))

    def test_metricNames(self):
        """
        L{METRIC_NAMES} lists exactly the families the recorder exposes
        once everything is watched.
        """
        class Router:
            def queueDepths(self):
                return {"sipHeld": 0, "xmppToSIP": 0, "destinations": 0}

        class Link:
            state, isAuthenticated = "down", False
            reconnects = authFailures = conflicts = 0

        r = self.recorder
        r.watchRouter(Router())
        r.watchLink(Link())
        r.watchS2S(lambda: {"up": 0})
        names = set()
        for family in r.registry.collect():
            name = family.name
            if family.type == "counter":
                name += "_total"
            names.add(name)
        self.assertEqual(sorted(METRIC_NAMES), sorted(names))


class RouterMetricsTests(RouterTestsMixin, unittest.TestCase):
    """
    The router tells its recorder about every outcome.
    """

    def setUp(self):
        RouterTestsMixin.setUp(self)
        self.recorder = MetricsRecorder()
        self.router.metrics = self.recorder
        self.recorder.watchRouter(self.router)

    def value(self, name, **labels):
        return self.recorder.registry.get_sample_value(name, labels)

    def receive(self, request):
        txn = FakeServerTransaction()
        self.sip.requestHandler(request, txn)
        return txn

    def test_defaultNull(self):
        """
        A new router has a L{NullRecorder}.
        """
        RouterTestsMixin.setUp(self)
        self.assertIs(type(self.router.metrics), NullRecorder)

    def test_sipRelayed(self):
        """
        A relayed SIP MESSAGE counts as relayed, its 202 as sent, and its
        latency (hold time) is observed.
        """
        self.link.isAuthenticated = False
        self.receive(sipMessage())
        self.assertEqual(1.0, self.value("xmppgw_queued_messages",
                                         queue="sip_held"))
        self.clock.advance(0.5)
        self.link.comeUp()
        self.assertEqual(0.0, self.value("xmppgw_queued_messages",
                                         queue="sip_held"))
        self.assertEqual(1.0, self.value("xmppgw_messages_total", origin="sip",
                                         outcome="relayed"))
        self.assertEqual(1.0, self.value("xmppgw_sip_responses_total",
                                         code="202", direction="sent"))
        self.assertEqual(0.5, self.value("xmppgw_relay_latency_seconds_sum",
                                         origin="sip"))

    def test_sipRefused(self):
        """
        A refused SIP request counts as refused with its response code;
        OPTIONS answered by the policy counts its 200.
        """
        self.receive(sipMessage(contentType="image/png"))
        self.receive(sipMessage(method="OPTIONS", branch="z9hG4bK2"))
        self.assertEqual(2.0, self.value("xmppgw_messages_total", origin="sip",
                                         outcome="refused"))
        self.assertEqual(1.0, self.value("xmppgw_sip_responses_total",
                                         code="415", direction="sent"))
        self.assertEqual(1.0, self.value("xmppgw_sip_responses_total",
                                         code="200", direction="sent"))

    def test_holdExpired(self):
        """
        A MESSAGE held past the timeout counts as hold_expired and 503.
        """
        self.link.isAuthenticated = False
        self.receive(sipMessage())
        self.clock.advance(8.0)
        self.assertEqual(1.0, self.value("xmppgw_messages_total", origin="sip",
                                         outcome="hold_expired"))
        self.assertEqual(1.0, self.value("xmppgw_sip_responses_total",
                                         code="503", direction="sent"))

    def test_xmppFailure(self):
        """
        A SIP failure for an XMPP message counts the response received, the
        transaction time, the error sent back and the end-to-end latency.
        """
        self.router.xmppMessageReceived(xmppMessage())
        self.router.xmppMessageReceived(xmppMessage(id="m2"))
        self.assertEqual(2.0, self.value("xmppgw_queued_messages",
                                         queue="xmpp_to_sip"))
        self.assertEqual(1.0, self.value("xmppgw_sip_outbound_destinations"))
        self.clock.advance(0.25)
        _, _, d = self.sip.sent[0]
        d.callback(response(404, "Not Found"))
        self.assertEqual(1.0, self.value("xmppgw_sip_responses_total",
                                         code="404", direction="received"))
        self.assertEqual(1.0, self.value("xmppgw_xmpp_errors_total",
                                         condition="item-not-found",
                                         direction="sent"))
        self.assertEqual(1.0, self.value("xmppgw_messages_total",
                                         origin="xmpp", outcome="failed"))
        self.assertEqual(0.25, self.value("xmppgw_sip_transaction_seconds_sum"))
        self.assertEqual(0.25, self.value("xmppgw_relay_latency_seconds_sum",
                                          origin="xmpp"))
        # The second one waited 0.25 s in the queue, then 1 s in flight.
        self.clock.advance(1.0)
        _, _, d = self.sip.sent[1]
        d.errback(TransactionTimeout())
        self.assertEqual(1.25, self.value("xmppgw_sip_transaction_seconds_sum"))
        self.assertEqual(1.5, self.value("xmppgw_relay_latency_seconds_sum",
                                         origin="xmpp"))
        self.assertEqual(1.0, self.value(
            "xmppgw_xmpp_errors_total", condition="remote-server-timeout",
            direction="sent"))
        self.assertEqual(0.0, self.value("xmppgw_queued_messages",
                                         queue="xmpp_to_sip"))

    def test_xmppRelayed(self):
        """
        A 2xx for an XMPP message counts as relayed.
        """
        self.router.xmppMessageReceived(xmppMessage())
        self.sip.sent[0][2].callback(response(202, "Accepted"))
        self.assertEqual(1.0, self.value("xmppgw_messages_total",
                                         origin="xmpp", outcome="relayed"))
        self.assertEqual(1.0, self.value("xmppgw_sip_responses_total",
                                         code="202", direction="received"))

    def test_xmppErrorReceived(self):
        """
        An XMPP error stanza is counted by its condition.
        """
        error = xmppMessage(type="error")
        error.addElement("error").addElement(
            ("urn:ietf:params:xml:ns:xmpp-stanzas", "service-unavailable"))
        error.error["type"] = "cancel"
        self.router.xmppMessageReceived(error)
        self.assertEqual(1.0, self.value("xmppgw_xmpp_errors_total",
                                         condition="service-unavailable",
                                         direction="received"))


class FakeSIP:
    running = True


class FakeLink:
    isAuthenticated = True
    state = "authenticated"


def render(resource, path):
    """
    Render a GET of C{path} (a list of bytes segments) on a site's root.
    """
    request = DummyRequest(path)
    child = resource
    for segment in path:
        child = child.getChildWithDefault(segment, request)
    body = child.render(request)
    if isinstance(body, bytes):
        request.write(body)
    return request


class HTTPTests(unittest.TestCase):
    """
    The site's pages.
    """

    def setUp(self):
        self.recorder = MetricsRecorder()
        self.sip, self.link = FakeSIP(), FakeLink()
        self.readiness = Readiness()
        self.readiness.add("sip", lambda: None if self.sip.running
                           else "SIP transport not listening")
        self.readiness.add("xmpp", lambda: None if self.link.isAuthenticated
                           else f"XMPP component link {self.link.state}")
        self.site = makeSite(self.recorder, self.readiness)

    def test_metrics(self):
        """
        C{/metrics} is the Prometheus text format of the recorder.
        """
        self.recorder.relayed("sip", "relayed")
        request = render(self.site.resource, [b"metrics"])
        text = b"".join(request.written).decode()
        self.assertIn('xmppgw_messages_total{origin="sip",outcome="relayed"} 1.0',
                      text)
        self.assertTrue(request.responseHeaders.getRawHeaders(
            b"content-type")[0].startswith(b"text/plain; version="))

    def test_healthz(self):
        """
        C{/healthz} is 200 whatever the links do.
        """
        self.link.isAuthenticated = False
        request = render(self.site.resource, [b"healthz"])
        self.assertEqual(200, request.responseCode)
        self.assertEqual([b"ok\n"], request.written)

    def test_readyz(self):
        """
        C{/readyz} is 200 when SIP listens and the link is authenticated,
        503 with the reason otherwise.
        """
        request = render(self.site.resource, [b"readyz"])
        self.assertEqual(200, request.responseCode)
        self.assertEqual(b"ready\nsip: ok\nxmpp: ok\n", b"".join(request.written))
        self.link.isAuthenticated, self.link.state = False, "connecting"
        request = render(self.site.resource, [b"readyz"])
        self.assertEqual(503, request.responseCode)
        self.assertEqual(
            b"not ready\nsip: ok\nxmpp: XMPP component link connecting\n",
            b"".join(request.written))
        self.sip.running = False
        request = render(self.site.resource, [b"readyz"])
        self.assertIn(b"sip: SIP transport not listening",
                      b"".join(request.written))

    def test_readinessErrors(self):
        """
        A check that raises makes the gateway not ready; no check at all is
        not ready either.
        """
        self.readiness.add("broken", lambda: 1 / 0)
        ready, lines = self.readiness.status()
        self.assertFalse(ready)
        self.assertIn("ZeroDivisionError", lines[-1])
        self.assertEqual((False, ["no readiness checks configured"]),
                         Readiness().status())

    def test_notFound(self):
        """
        Other paths get 404.
        """
        request = render(self.site.resource, [b"other"])
        self.assertEqual(404, request.responseCode)

    def test_quietSite(self):
        """
        The site logs no access lines and shows no tracebacks.
        """
        self.assertFalse(self.site.displayTracebacks)
        self.assertIsNone(self.site.log(DummyRequest([b"metrics"])))


class ServiceTests(unittest.TestCase):
    """
    L{MetricsService} and the gateway wiring.
    """

    def test_listens(self):
        """
        The service listens on the configured host and port while running.
        """
        reactor = MemoryReactorClock()
        site = makeSite(MetricsRecorder(), Readiness())
        s = MetricsService("127.0.0.1", 9470, site, reactor=reactor)
        s.startService()
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual((9470, "127.0.0.1"), (port, interface))
        self.assertIs(site, factory)
        s.stopService()
        self.assertIsNone(s.port)

    def gateway(self, data):
        config = parseConfig(data, "x.toml")
        reactor = UDPMemoryReactor()
        top, router = tap.buildGateway(config, reactor)
        return top, router, reactor

    def test_off(self):
        """
        Without C{[metrics]}, the router has a L{NullRecorder} and nothing
        listens for HTTP.
        """
        top, router, reactor = self.gateway({})
        self.assertIs(type(router.metrics), NullRecorder)
        self.assertNotIn("metrics", [s.name for s in top])

    def test_offImportsNoWeb(self):
        """
        A gateway built without C{[metrics] listen} never imports
        C{twisted.web}'s server (about 3 MB of resident memory on CPython,
        5 MB on PyPy; domish needs only C{twisted.web.sux}); one with it
        does. Checked in a fresh interpreter, since this
        one has imported it already.
        """
        program = (
            "import sys\n"
            "from xmppgw import tap\n"
            "from xmppgw.config import parseConfig\n"
            "from tests.test_tap import UDPMemoryReactor\n"
            "data = {%s}\n"
            "tap.buildGateway(parseConfig(data, 'x.toml'), UDPMemoryReactor())\n"
            "print(sorted(m for m in sys.modules if m in (\n"
            "    'twisted.web.server', 'twisted.web.http', 'twisted.spread')))\n")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        outputs = []
        for data in ("", "'metrics': {'listen': '127.0.0.1:9472'}"):
            result = subprocess.run(
                [sys.executable, "-c", program % (data,)], cwd=root,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
            self.assertEqual(0, result.returncode, result.stderr)
            outputs.append(result.stdout.decode().strip())
        self.assertEqual("[]", outputs[0])
        self.assertEqual("['twisted.spread', 'twisted.web.http', "
                         "'twisted.web.server']", outputs[1])

    def test_on(self):
        """
        With C{[metrics] listen}, the router records into a
        L{MetricsRecorder} served by a named C{metrics} service, and the
        readiness checks follow the SIP transport and the XMPP link.
        """
        top, router, reactor = self.gateway(
            {"metrics": {"listen": "[::1]:9471"},
             "sip": {"listen": ["udp:127.0.0.1:5999"]}})
        self.assertIsInstance(router.metrics, MetricsRecorder)
        service = top.getServiceNamed("metrics")
        self.assertEqual(("::1", 9471), (service.host, service.portNumber))
        self.assertEqual((False, ["sip: SIP transport not listening",
                                  "xmpp: XMPP component link stopped"]),
                         top.readiness.status())
        top.startService()
        self.addCleanup(top.stopService)
        self.assertIn((9471, "::1"), [(p[0], p[3]) for p in reactor.tcpServers])
        ready, lines = top.readiness.status()
        self.assertFalse(ready)
        self.assertEqual("sip: ok", lines[0])
        self.assertEqual(0.0, router.metrics.registry.get_sample_value(
            "xmppgw_xmpp_link_up"))

