"""
Interop tests of the operations features: C{twistd xmppgw} with C{[metrics]}
on a free loopback port, against a private Prosody.

 - C{/metrics} counters move after a SIP MESSAGE is relayed;
 - C{/readyz} is 503 while Prosody is stopped and 200 again after it
   restarts (C{/healthz} stays 200);
 - SIGHUP with a changed C{gwmap} takes effect without dropping the XMPP
   link; SIGHUP with an invalid file keeps the old configuration.
"""

import os
import re
import secrets
import signal
import urllib.error
import urllib.request

from twisted.trial.unittest import TestCase

from tests.interop.harness import (
    AUTHENTICATED_LINE, LOCAL, LOG_FLUSH, GatewayProcess, PrivateProsody, buildMessage,
    cleanupAll, freePort, gatewayConfig, makeWorkdir, requirePeers,
    sipSendUDP, waitUntil)

GATEWAY = "gw.xmpp.test"
ALICE_VIA_SIP = "sip:alice*xmpp.test@gw.xmpp.test"
BOB_SIP = "sip:bob@sip.test"


def httpGet(url, timeout=2.0):
    """
    C{(status, body text)} of a GET; HTTP errors are answers too.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


def sample(text, name, **labels):
    """
    The value of one sample in a Prometheus text exposition, or L{None}.
    """
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = ",".join(sorted((match.group(2) or "").split(","))) \
            if match.group(2) else ""
        if found == wanted:
            return float(match.group(3))
    return None


class OperationsTests(TestCase):
    """
    One Prosody and one gateway with metrics on, per test.
    """

    timeout = 120

    def setUp(self):
        requirePeers("prosody", "prosodyctl")
        self.prosody = PrivateProsody(
            makeWorkdir("prosody-ops"), domain="xmpp.test",
            componentDomain=GATEWAY, componentSecret=secrets.token_hex(8),
            users={"alice": "alice-pw"})
        self.prosody.start()
        self.addCleanup(cleanupAll, self.prosody)
        self.sipPort = freePort("both")
        self.metricsPort = freePort("tcp")
        self.base = f"http://{LOCAL}:{self.metricsPort}"
        self.gateway = GatewayProcess(self.config(),
                                      workdir=makeWorkdir("gateway-ops"))
        self.gateway.start(timeout=30)
        self.addCleanup(cleanupAll, self.gateway)

    def config(self, gwmap=None):
        return (gatewayConfig(self.prosody, self.sipPort, gwmap=gwmap)
                + f'\n[metrics]\nlisten = "{LOCAL}:{self.metricsPort}"\n')

    def metrics(self):
        status, text = httpGet(self.base + "/metrics")
        self.assertEqual(200, status, text)
        return text

    def send(self, ruri, fromURI=BOB_SIP):
        request = buildMessage(ruri, fromURI, "hello from SIP")
        return sipSendUDP(LOCAL, self.sipPort, request, timeout=10.0)

    def waitReady(self, status, timeout=20.0):
        waitUntil(lambda: httpGet(self.base + "/readyz")[0] == status,
                  timeout, interval=0.1,
                  message=lambda: f"/readyz {status}: last "
                  f"{httpGet(self.base + '/readyz')}\n"
                  f"{self.gateway.describe()}")

    def test_metricsAndReadiness(self):
        """
        A relayed MESSAGE moves the counters; /readyz follows the XMPP
        link through a Prosody restart while /healthz stays 200.
        """
        self.waitReady(200)
        before = self.metrics()
        self.assertEqual(1.0, sample(before, "xmppgw_xmpp_link_up"))
        relayed = sample(before, "xmppgw_messages_total", origin="sip",
                         outcome="relayed") or 0.0
        response = self.send(ALICE_VIA_SIP)
        self.assertEqual(202, response.code, self.gateway.describe())
        after = self.metrics()
        self.assertEqual(relayed + 1, sample(
            after, "xmppgw_messages_total", origin="sip", outcome="relayed"))
        self.assertEqual(1.0, sample(after, "xmppgw_sip_responses_total",
                                     code="202", direction="sent"))
        self.assertEqual(1.0, sample(after, "xmppgw_relay_latency_seconds_count",
                                     origin="sip"))
        status, body = httpGet(self.base + "/readyz")
        self.assertEqual((200, "ready\nsip: ok\nxmpp: ok\n"), (status, body))

        self.prosody.stop()
        self.waitReady(503)
        status, body = httpGet(self.base + "/readyz")
        self.assertIn("xmpp: XMPP component link", body)
        self.assertEqual((200, "ok\n"), httpGet(self.base + "/healthz"))
        self.assertEqual(0.0, sample(self.metrics(), "xmppgw_xmpp_link_up"))

        self.prosody.start()
        self.waitReady(200)
        self.assertGreaterEqual(
            sample(self.metrics(), "xmppgw_xmpp_reconnects_total"), 1.0)
        self.assertEqual(202, self.send(ALICE_VIA_SIP).code)

    def test_reload(self):
        """
        SIGHUP with a new gwmap changes the mapping without dropping the
        XMPP link; SIGHUP with an invalid file keeps the old configuration.
        """
        direct = "sip:alice@xmpp.test"
        # The separator scheme cannot map sip:alice@xmpp.test.
        self.assertNotEqual(202, self.send(direct).code)
        reconnects = sample(self.metrics(), "xmppgw_xmpp_reconnects_total")
        links = self.gateway.log().count(AUTHENTICATED_LINE)

        with open(self.gateway.configPath, "w", encoding="utf-8") as f:
            f.write(self.config(gwmap=[f"sip.test={GATEWAY}"]))
        os.kill(self.gateway.process.pid, signal.SIGHUP)
        self.gateway.waitForLog("Configuration reloaded: xmpp.gwmap", 10)
        # sip:bob@sip.test -> bob@gw.xmpp.test, xmpp.test passes through.
        self.assertEqual(202, self.send(direct).code, self.gateway.describe())
        text = self.metrics()
        self.assertEqual(1.0, sample(text, "xmppgw_config_reloads_total",
                                     result="applied"))
        self.assertEqual(reconnects,
                         sample(text, "xmppgw_xmpp_reconnects_total"))
        self.assertEqual(1.0, sample(text, "xmppgw_xmpp_link_up"))
        self.assertEqual(links, self.gateway.log().count(AUTHENTICATED_LINE))

        with open(self.gateway.configPath, "w", encoding="utf-8") as f:
            f.write("[xmpp]\ngwmap = [\n")
        os.kill(self.gateway.process.pid, signal.SIGHUP)
        self.gateway.waitForLog("Configuration reload refused", 10)
        self.assertIn("TOML syntax error", self.gateway.log())
        self.assertEqual(202, self.send(direct).code, self.gateway.describe())
        text = self.metrics()
        self.assertEqual(1.0, sample(text, "xmppgw_config_reloads_total",
                                     result="refused"))
        self.assertTrue(self.gateway.running())
        self.assertEqual(links, self.gateway.log().count(AUTHENTICATED_LINE))

    def test_bufferedLogFile(self):
        """
        With the default C{[log] flush_interval} the log file twistd writes
        (C{--logfile}) is written in a few large writes, not once per line,
        and a relayed message's line is there within a moment.
        """
        self.gateway.stop()
        config = self.config().replace(f"flush_interval = {LOG_FLUSH}\n", "")
        self.assertNotIn("flush_interval", config)
        self.gateway = GatewayProcess(config,
                                      workdir=makeWorkdir("gateway-flush"))
        self.gateway.start(timeout=30)
        self.addCleanup(cleanupAll, self.gateway)

        def writes():
            # write(2) calls of the gateway: its log file's (datagrams and
            # the XMPP link go out through send/sendto).
            with open(f"/proc/{self.gateway.process.pid}/io") as f:
                return int(re.search(r"^syscw: (\d+)$", f.read(),
                                     re.M).group(1))

        def events():
            # Lines of one event after the first are indented.
            return sum(1 for line in self.gateway.log().splitlines()
                       if line and not line.startswith("\t"))

        before, logged = writes(), events()
        for i in range(20):
            self.assertEqual(202, self.send(ALICE_VIA_SIP).code,
                             self.gateway.describe())
        self.gateway.waitForLog("SIP->XMPP", 10, count=20)
        logged = events() - logged
        # Each message logs its line and its SIP and XMPP traffic.
        self.assertGreaterEqual(logged, 60)
        self.assertLess(writes() - before, logged / 2,
                        self.gateway.describe())

    def test_jsonLog(self):
        """
        With C{[log] format = "json"} twistd's log file holds one JSON
        object per line, the relayed message's line with its fields.
        """
        import json

        self.gateway.stop()
        config = self.config().replace("[log]\n", '[log]\nformat = "json"\n')
        self.gateway = GatewayProcess(config, workdir=makeWorkdir("gateway-json"))
        self.gateway.start(timeout=30)
        self.addCleanup(cleanupAll, self.gateway)
        self.assertEqual(202, self.send(ALICE_VIA_SIP).code)
        self.gateway.waitForLog('"direction":"SIP->XMPP"', 10)
        records = [json.loads(line) for line in self.gateway.log().splitlines()
                   if line.strip()]
        [relayed] = [r for r in records if r.get("direction") == "SIP->XMPP"]
        self.assertEqual(202, relayed["code"])
        self.assertEqual("info", relayed["level"])
        self.assertIn("bob*sip.test@gw.xmpp.test -> alice@xmpp.test",
                      relayed["text"])
        self.assertIsInstance(relayed["latencyMs"], float)
