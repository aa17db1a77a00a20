"""
Tests for L{xmppgw.reload}: reloading the configuration file, on a Clock
with the router's fakes, and the SIGHUP service.
"""

import os
import signal

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest

from xmppgw.config import loadConfig
from xmppgw.metrics import MetricsRecorder
from xmppgw.reload import Reloader, ReloadService, changedKeys, gatewayReloader
from xmppgw.router import MessageRouter, RouterSettings

from tests.test_router import (
    FakeLink, FakeServerTransaction, FakeTransactionLayer, sipMessage)

GW = "gw.example"

BASE = """
[xmpp]
xmpp_domain = "gw.example"
gateway_domain = "gw.example"
xmpp_host = "127.0.0.1"
{xmpp}

[log]
messages = false
"""


def logText(events):
    return "\n".join(formatEvent(e) for e in events)


class ReloadTestsMixin:
    def setUp(self):
        self.path = self.mktemp()
        self.write('gwmap = ["sip.example=xmpp.example"]')
        self.config = loadConfig(self.path)
        self.clock = Clock()
        self.sip = FakeTransactionLayer()
        self.link = FakeLink()
        from xmppgw.addressing import AddressMapper

        x = self.config.xmpp
        mapper = AddressMapper(separator=x.domain_separator,
                               gatewayDomain=x.gateway_domain,
                               xmppDomain=x.xmpp_domain, gwmap=x.gwmap)
        self.router = MessageRouter(
            self.clock, mapper, self.sip, self.link,
            RouterSettings(xmppDomain=GW, logMessages=False))
        self.recorder = MetricsRecorder()
        self.router.metrics = self.recorder
        self.reloader = gatewayReloader(self.config, self.router)

    def write(self, xmpp):
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(BASE.format(xmpp=xmpp))

    def receive(self, request):
        txn = FakeServerTransaction()
        self.sip.requestHandler(request, txn)
        return txn


class ChangedKeysTests(unittest.TestCase):
    """
    L{changedKeys} lists the keys that differ.
    """

    def test_changed(self):
        """
        Only differing keys are listed, in schema order.
        """
        from xmppgw.config import parseConfig

        a = parseConfig({}, "a.toml")
        b = parseConfig({"xmpp": {"gwmap": "a.example", "xmpp_port": 5348},
                         "log": {"messages": False}}, "b.toml")
        self.assertEqual([], changedKeys(a, a))
        self.assertEqual(["xmpp.xmpp_port", "xmpp.gwmap", "log.messages"],
                         changedKeys(a, b))


class ReloaderTests(ReloadTestsMixin, unittest.TestCase):
    """
    L{Reloader.reload} applies a valid file and keeps the old configuration
    for an invalid one.
    """

    def test_gwmapApplied(self):
        """
        A new gwmap takes effect for the next message, without touching the
        XMPP link.
        """
        before = self.receive(sipMessage(uri="sip:alice@gw.example",
                                         sender="sip:bob@sip.example"))
        # sip.example maps to xmpp.example: not the component's domain.
        self.assertEqual([403], [r.code for r in before.responses])
        self.write('gwmap = ["sip.example=gw.example", "sip.other=xmpp.example"]')
        with capturedLogs() as events:
            self.assertTrue(self.reloader.reload())
        self.assertIn("Configuration reloaded: xmpp.gwmap", logText(events))
        self.assertEqual({"sip.example": "gw.example",
                          "sip.other": "xmpp.example"},
                         self.router.mapper.gwmap)
        after = self.receive(sipMessage(uri="sip:alice@sip.other",
                                        sender="sip:bob@sip.example",
                                        branch="z9hG4bK2"))
        self.assertEqual([202], [r.code for r in after.responses])
        [stanza] = self.link.sent
        self.assertEqual("bob@gw.example", stanza["from"])
        self.assertEqual("alice@xmpp.example", stanza["to"])
        self.assertTrue(self.link.isAuthenticated)

    def test_heldMessageKeepsMapping(self):
        """
        A message held while the link is down when the reload happens is
        relayed afterwards as it was mapped.
        """
        self.write('gwmap = ["sip.example=gw.example", "sip.other=xmpp.example"]')
        self.assertTrue(self.reloader.reload())
        self.link.isAuthenticated = False
        held = self.receive(sipMessage(uri="sip:alice@sip.other",
                                       sender="sip:bob@sip.example"))
        self.write('gwmap = ["sip.example=xmpp.example"]')
        self.assertTrue(self.reloader.reload())
        self.clock.advance(1)
        self.link.comeUp()
        self.assertEqual([202], [r.code for r in held.responses])
        [stanza] = self.link.sent
        self.assertEqual("bob@gw.example", stanza["from"])

    def test_invalidKept(self):
        """
        A file with a syntax error or a bad value changes nothing; the
        reason is logged and the reload counted as refused.
        """
        mapper = self.router.mapper
        with open(self.path, "w") as f:
            f.write("[xmpp\n")
        with capturedLogs() as events:
            self.assertFalse(self.reloader.reload())
        self.assertIs(mapper, self.router.mapper)
        self.assertIn("TOML syntax error", logText(events))
        self.assertIn("running configuration is kept", logText(events))
        self.write('gwmap = ["a.example=b.example", "c.example=b.example"]')
        with capturedLogs() as events:
            self.assertFalse(self.reloader.reload())
        self.assertIs(mapper, self.router.mapper)
        self.assertIn("xmpp.gwmap", logText(events))
        self.assertIs(self.config, self.reloader.current)
        self.assertEqual(2.0, self.recorder.registry.get_sample_value(
            "xmppgw_config_reloads_total", {"result": "refused"}))
        # A missing file too.
        os.remove(self.path)
        self.assertFalse(self.reloader.reload())
        self.assertIs(mapper, self.router.mapper)

    def test_restartOnlyKeys(self):
        """
        Keys that need a restart keep their running value and are named in
        a warning; reloadable keys in the same file are applied.
        """
        self.write('xmpp_port = 5999\ngwmap = "sip.example=gw.example"')
        with capturedLogs() as events:
            self.assertTrue(self.reloader.reload())
        self.assertIn("xmpp.xmpp_port changed but needs a restart",
                      logText(events))
        self.assertEqual(5347, self.reloader.current.xmpp.xmpp_port)
        self.assertEqual({"sip.example": "gw.example"},
                         self.reloader.current.xmpp.gwmap)
        self.assertEqual({"sip.example": "gw.example"}, self.router.mapper.gwmap)
        # The warning repeats on the next reload, as the key still differs.
        with capturedLogs() as events:
            self.reloader.reload()
        self.assertIn("xmpp.xmpp_port changed", logText(events))

    def test_nothingChanged(self):
        """
        Reloading the same file changes nothing and succeeds.
        """
        mapper, settings = self.router.mapper, self.router.settings
        with capturedLogs() as events:
            self.assertTrue(self.reloader.reload())
        self.assertIs(mapper, self.router.mapper)
        self.assertIs(settings, self.router.settings)
        self.assertIn("nothing to change", logText(events))

    def test_settings(self):
        """
        C{log.messages} and C{xmpp.outbound_proxy} reach the router's
        settings; the other settings stay.
        """
        text = BASE.format(xmpp='outbound_proxy = "sip:127.0.0.1:5070;transport=tcp"')
        text = text.replace("messages = false", "messages = true")
        with open(self.path, "w") as f:
            f.write(text)
        self.assertTrue(self.reloader.reload())
        settings = self.router.settings
        self.assertTrue(settings.logMessages)
        self.assertEqual(("tcp", "127.0.0.1", 5070),
                         (settings.outboundProxy.transport,
                          settings.outboundProxy.host,
                          settings.outboundProxy.port))
        self.assertEqual(GW, settings.xmppDomain)

    def test_allOrNothing(self):
        """
        When one applier refuses, no applier commits.
        """
        committed = []
        self.reloader.register({"sip.queue_limit"},
                               lambda c: lambda: committed.append(c))

        def refuse(config):
            raise ValueError("no rate limits today")

        self.reloader.register({"sip.queue_limit"}, refuse)
        mapper = self.router.mapper
        self.write('gwmap = "sip.example=gw.example"\n[sip]\nqueue_limit = 7')
        with capturedLogs() as events:
            self.assertFalse(self.reloader.reload())
        self.assertEqual([], committed)
        self.assertIs(mapper, self.router.mapper)
        self.assertIn("no rate limits today", logText(events))

    def test_hook(self):
        """
        A registered applier gets the new configuration and commits; its
        keys are no longer reported as needing a restart.
        """
        applied = []
        self.reloader.register(
            {"sip.queue_limit"},
            lambda c: lambda: applied.append(c.sip.queue_limit))
        self.write('gwmap = ["sip.example=xmpp.example"]\n[sip]\nqueue_limit = 7')
        with capturedLogs() as events:
            self.assertTrue(self.reloader.reload())
        self.assertEqual([7], applied)
        self.assertNotIn("needs a restart", logText(events))
        self.assertEqual(1.0, self.recorder.registry.get_sample_value(
            "xmppgw_config_reloads_total", {"result": "applied"}))

    def test_registerUnknown(self):
        """
        Registering an applier for a key that does not exist is an error.
        """
        self.assertRaises(ValueError, self.reloader.register,
                          {"xmpp.nothing"}, lambda c: None)


class FakeReactor:
    def __init__(self):
        self.calls = []

    def callFromThread(self, f, *args):
        self.calls.append((f, args))


class ReloadServiceTests(unittest.TestCase):
    """
    L{ReloadService} turns SIGHUP into a reload in the reactor thread.
    """

    def test_sighup(self):
        """
        While running, SIGHUP schedules L{Reloader.reload} with
        C{callFromThread}; stopping restores the previous handler.
        """
        previous = signal.getsignal(signal.SIGHUP)
        reactor = FakeReactor()
        reloader = Reloader("x.toml", None)
        s = ReloadService(reloader, reactor=reactor)
        s.startService()
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        self.assertEqual(s._onSignal, signal.getsignal(signal.SIGHUP))
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual([(reloader.reload, ())], reactor.calls)
        s.stopService()
        self.assertEqual(previous, signal.getsignal(signal.SIGHUP))

    def test_inGateway(self):
        """
        The gateway built by L{xmppgw.tap.buildGateway} has a C{reload}
        service whose reloader swaps the router's mapper.
        """
        from xmppgw import tap
        from tests.test_tap import UDPMemoryReactor

        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[sip]\nlisten = ["udp:127.0.0.1:5999"]\n')
        top, router = tap.buildGateway(loadConfig(path), UDPMemoryReactor())
        service = top.getServiceNamed("reload")
        self.assertIs(top.reloader, service.reloader)
        with open(path, "a") as f:
            f.write('[xmpp]\ngwmap = "sip.example=sip-xmpp.example.org"\n')
        self.assertTrue(service.reloader.reload())
        self.assertEqual({"sip.example": "sip-xmpp.example.org"},
                         router.mapper.gwmap)
