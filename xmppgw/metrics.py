# -*- test-case-name: tests.test_metrics -*-
"""
Metrics and health checks: a recorder the router calls, and a small HTTP
site serving C{/metrics} (Prometheus text format), C{/healthz} and
C{/readyz}.

The router and the other core modules never touch C{prometheus_client}:
they call a I{recorder} (L{NullRecorder}'s methods). With no C{[metrics]
listen} in the configuration the recorder is a L{NullRecorder}, whose
methods do nothing, so metrics cost one no-op method call per event. With
it, L{MetricsRecorder} keeps the counters and histograms in a registry of
its own (not the process-wide default registry, so that two gateways, or two
tests, never share numbers).

Values that exist anyway (queue depths, the XMPP link's state and its
reconnect counters, S2S streams) are not counted twice: they are read from
the live objects when C{/metrics} is scraped (L{MetricsRecorder.watchRouter},
L{MetricsRecorder.watchLink}, L{MetricsRecorder.watchS2S}).

C{prometheus_client} is imported only when a L{MetricsRecorder} is built,
and C{twisted.web} (the HTTP site, L{xmppgw.metricsweb}) only when
C{[metrics] listen} is set, so that importing this module (the router does,
for L{NullRecorder}) stays cheap: C{twisted.web} and what it pulls in
(C{twisted.spread}, C{decimal}, ...) are about 3 MB of resident memory on
CPython and 5 MB on PyPy that a gateway without metrics never needs.
"""

import re

from twisted.application import service
from twisted.logger import Logger

from xmppgw.memo import bounded

__all__ = [
    "NullRecorder",
    "MetricsRecorder",
    "Readiness",
    "MetricsService",
    "makeRecorder",
    "buildOperations",
    "LATENCY_BUCKETS",
    "METRIC_NAMES",
]

_log = Logger()

#: Histogram buckets, in seconds, for the latency histograms.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
)

#: Every metric family L{MetricsRecorder} exposes (without the C{_total},
#: C{_bucket}, C{_sum}, C{_count} suffixes), for documentation and for the
#: check of the sample alert rules.
METRIC_NAMES = (
    "xmppgw_messages_total",
    "xmppgw_sip_responses_total",
    "xmppgw_xmpp_errors_total",
    "xmppgw_refusals_total",
    "xmppgw_config_reloads_total",
    "xmppgw_sip_transaction_seconds",
    "xmppgw_relay_latency_seconds",
    "xmppgw_queued_messages",
    "xmppgw_sip_outbound_destinations",
    "xmppgw_xmpp_link_up",
    "xmppgw_xmpp_link_state",
    "xmppgw_xmpp_reconnects_total",
    "xmppgw_xmpp_auth_failures_total",
    "xmppgw_xmpp_conflicts_total",
    "xmppgw_s2s_streams",
)

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


@bounded(256)
def _snake(name):
    """
    C{"holdExpired"} -> C{"hold_expired"}.
    """
    return _CAMEL.sub(r"_\1", name).lower()


class NullRecorder:
    """
    The recorder interface, doing nothing: what the router and the other
    core modules call. L{MetricsRecorder} implements the same methods.

    Label values must come from small fixed sets (codes, conditions,
    outcome names in the code), never from addresses or message content.
    """

    enabled = False

    def relayed(self, origin, outcome):
        """
        A message was handled.

        @param origin: the side it came from, C{"sip"} or C{"xmpp"}.
        @param outcome: what became of it, camelCase as in the router's
            C{stats} keys (C{"relayed"}, C{"refused"}, C{"overflow"},
            C{"holdExpired"}, C{"failed"}, C{"bodyless"}, ...).
        """

    def sipResponse(self, code, direction):
        """
        A final SIP response.

        @param code: its status code.
        @param direction: C{"sent"} (to a SIP sender) or C{"received"}
            (for a MESSAGE the gateway sent).
        """

    def xmppError(self, condition, direction):
        """
        An XMPP stanza error.

        @param condition: the defined condition (C{"item-not-found"}).
        @param direction: C{"sent"} (bounced by the gateway) or
            C{"received"}.
        """

    def refused(self, reason, side):
        """
        A message refused by a limit or a policy (hook for rate limits and
        access lists).

        @param reason: a short fixed name, e.g. C{"rate_limit"},
            C{"policy"}.
        @param side: C{"sip"} or C{"xmpp"}, the side it came from.
        """

    def transactionTime(self, seconds):
        """
        A SIP client transaction ended (final response, timeout or
        transport failure), C{seconds} after its request was sent.
        """

    def relayLatency(self, origin, seconds):
        """
        A message reached its final outcome C{seconds} after it arrived
        (SIP -> XMPP: until the stanza was written or refused; XMPP -> SIP:
        until the final SIP response, queueing included).

        @param origin: C{"sip"} or C{"xmpp"}.
        """

    def configReloaded(self, success):
        """
        A configuration reload was tried; C{success} is whether it was
        applied.
        """

    def watchRouter(self, router):
        """
        Read queue depths from C{router.queueDepths()} at scrape time.
        """

    def watchLink(self, link):
        """
        Read the XMPP link's C{state}, C{reconnects}, C{authFailures} and
        C{conflicts} at scrape time.
        """

    def watchS2S(self, getCounts):
        """
        Read S2S stream counts at scrape time (hook for server mode).

        @param getCounts: a callable returning C{{state: count}}.
        """


class MetricsRecorder(NullRecorder):
    """
    A recorder that keeps Prometheus metrics in its own registry.

    @ivar registry: the L{prometheus_client.CollectorRegistry}.
    """

    enabled = True

    def __init__(self, registry=None):
        """
        @param registry: a L{prometheus_client.CollectorRegistry}; a new
            one if L{None}.
        """
        from prometheus_client import CollectorRegistry, Counter, Histogram

        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
        self.registry = registry
        self._messages = Counter(
            "xmppgw_messages", "Messages handled, by the side they came from "
            "and what became of them.", ["origin", "outcome"],
            registry=registry)
        self._sipResponses = Counter(
            "xmppgw_sip_responses", "Final SIP responses sent to SIP senders "
            "or received for MESSAGEs the gateway sent, by code.",
            ["code", "direction"], registry=registry)
        self._xmppErrors = Counter(
            "xmppgw_xmpp_errors", "XMPP stanza errors sent (bounces) or "
            "received, by condition.", ["condition", "direction"],
            registry=registry)
        self._refusals = Counter(
            "xmppgw_refusals", "Messages refused by rate limits or access "
            "policy.", ["reason", "side"], registry=registry)
        self._reloads = Counter(
            "xmppgw_config_reloads", "Configuration reloads (SIGHUP), by "
            "result.", ["result"], registry=registry)
        self._transactionTime = Histogram(
            "xmppgw_sip_transaction_seconds", "Time from sending a SIP "
            "MESSAGE to its final response, timeout or transport failure.",
            buckets=LATENCY_BUCKETS, registry=registry)
        self._relayLatency = Histogram(
            "xmppgw_relay_latency_seconds", "Time from a message's arrival "
            "to its final outcome, by the side it came from.", ["origin"],
            buckets=LATENCY_BUCKETS, registry=registry)
        self._children = {}
        self._router = None
        self._link = None
        self._s2s = []
        registry.register(_LiveCollector(self))

    def _child(self, metric, *labels):
        key = (id(metric),) + labels
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def relayed(self, origin, outcome):
        self._child(self._messages, origin, _snake(outcome)).inc()

    def sipResponse(self, code, direction):
        self._child(self._sipResponses, str(code), direction).inc()

    def xmppError(self, condition, direction):
        self._child(self._xmppErrors, condition or "undefined-condition",
                    direction).inc()

    def refused(self, reason, side):
        self._child(self._refusals, reason, side).inc()

    def transactionTime(self, seconds):
        self._transactionTime.observe(max(0.0, seconds))

    def relayLatency(self, origin, seconds):
        self._child(self._relayLatency, origin).observe(max(0.0, seconds))

    def configReloaded(self, success):
        self._child(self._reloads, "applied" if success else "refused").inc()

    def watchRouter(self, router):
        self._router = router

    def watchLink(self, link):
        self._link = link

    def watchS2S(self, getCounts):
        self._s2s.append(getCounts)

    def exposition(self):
        """
        The metrics in the Prometheus text format.

        @rtype: L{bytes}
        """
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _LiveCollector:
    """
    Metrics read from the live gateway objects at scrape time.
    """

    def __init__(self, recorder):
        self.recorder = recorder

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily, GaugeMetricFamily)

        recorder = self.recorder
        router = recorder._router
        if router is not None:
            depths = router.queueDepths()
            queued = GaugeMetricFamily(
                "xmppgw_queued_messages", "Messages waiting in the gateway: "
                "sip_held (SIP MESSAGEs waiting for the XMPP side: held "
                "while the link is down, or not yet confirmed), "
                "xmpp_to_sip (stanzas waiting for their turn to a SIP "
                "destination, in flight included).", labels=["queue"])
            queued.add_metric(["sip_held"], depths["sipHeld"])
            queued.add_metric(["xmpp_to_sip"], depths["xmppToSIP"])
            yield queued
            yield GaugeMetricFamily(
                "xmppgw_sip_outbound_destinations", "SIP destinations with "
                "a MESSAGE in flight.", value=depths["destinations"])
        link = recorder._link
        if link is not None:
            from xmppgw.xmpp.component import STATES

            yield GaugeMetricFamily(
                "xmppgw_xmpp_link_up", "1 when the XMPP component link is "
                "authenticated.", value=1 if link.isAuthenticated else 0)
            state = GaugeMetricFamily(
                "xmppgw_xmpp_link_state", "The XMPP component link's state "
                "(1 for the current one).", labels=["state"])
            for name in STATES:
                state.add_metric([name], 1 if link.state == name else 0)
            yield state
            for name, attribute, text in (
                ("xmppgw_xmpp_reconnects", "reconnects",
                 "Connection attempts of the XMPP link after the first."),
                ("xmppgw_xmpp_auth_failures", "authFailures",
                 "Component handshakes the XMPP server refused."),
                ("xmppgw_xmpp_conflicts", "conflicts",
                 "Times the XMPP server refused or dropped the component's "
                 "name (conflict, host-unknown)."),
            ):
                yield CounterMetricFamily(name, text,
                                          value=getattr(link, attribute, 0))
        if recorder._s2s:
            streams = GaugeMetricFamily(
                "xmppgw_s2s_streams", "Server-to-server streams, by state.",
                labels=["state"])
            totals = {}
            for getCounts in recorder._s2s:
                for name, count in getCounts().items():
                    totals[name] = totals.get(name, 0) + count
            for name in sorted(totals):
                streams.add_metric([name], totals[name])
            yield streams


class Readiness:
    """
    The checks behind C{/readyz}: the gateway is ready when every check
    passes.
    """

    def __init__(self):
        self._checks = []

    def add(self, name, check):
        """
        Add a check.

        @param name: a short name shown in the answer (C{"sip"}).
        @param check: a callable returning L{None} when fine, or a short
            text saying what is wrong.
        """
        self._checks.append((name, check))

    def status(self):
        """
        Run the checks.

        @return: C{(ready, lines)}; C{lines} has one C{"name: ok"} or
            C{"name: problem"} per check.
        """
        ready, lines = True, []
        for name, check in self._checks:
            try:
                problem = check()
            except Exception as e:
                problem = f"check failed: {e!r}"
            if problem is None:
                lines.append(f"{name}: ok")
            else:
                ready = False
                lines.append(f"{name}: {problem}")
        if not self._checks:
            ready = False
            lines.append("no readiness checks configured")
        return ready, lines


class MetricsService(service.Service):
    """
    Listens for HTTP on C{host:port} with a L{xmppgw.metricsweb.makeSite}
    site.

    @ivar port: the listening port while running, else L{None}.
    """

    def __init__(self, host, port, site, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.host = host
        self.port = None
        self.portNumber = port
        self.site = site
        self.reactor = reactor

    def startService(self):
        service.Service.startService(self)
        self.port = self.reactor.listenTCP(
            self.portNumber, self.site, interface=self.host)
        address = self.port.getHost()
        host = f"[{address.host}]" if ":" in address.host else address.host
        _log.info("Metrics and health checks on http://{where}/metrics "
                  "(/healthz, /readyz)", where=f"{host}:{address.port}")
        if self.host not in ("127.0.0.1", "::1", "localhost") and \
                not self.host.startswith("127."):
            _log.warn("The metrics endpoint {host} is not on loopback: it has "
                      "no authentication, keep it on a private network",
                      host=self.host)

    def stopService(self):
        service.Service.stopService(self)
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()


def makeRecorder(metricsConfig):
    """
    The recorder for a C{[metrics]} table: a L{MetricsRecorder} when
    C{listen} is set, else a L{NullRecorder}.
    """
    if metricsConfig.listen is None:
        return NullRecorder()
    return MetricsRecorder()


def buildOperations(config, router, sip, link, reactor):
    """
    Wire metrics and health checks into a gateway built by
    L{xmppgw.tap.buildGateway}.

    @return: C{(recorder, readiness, service)}; C{service} is the
        L{MetricsService} to start, or L{None} when metrics are off.
    """
    recorder = makeRecorder(config.metrics)
    router.metrics = recorder
    recorder.watchRouter(router)
    recorder.watchLink(link)
    readiness = Readiness()
    readiness.add(
        "sip", lambda: None if sip.running else "SIP transport not listening")
    readiness.add(
        "xmpp",
        lambda: None if link.isAuthenticated
        else f"XMPP component link {link.state}")
    if config.metrics.listen is None:
        return recorder, readiness, None
    from xmppgw.metricsweb import makeSite

    host, port = config.metrics.listen
    site = makeSite(recorder, readiness)
    metricsService = MetricsService(host, port, site, reactor=reactor)
    metricsService.setName("metrics")
    return recorder, readiness, metricsService
