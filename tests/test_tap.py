"""
Tests for L{xmppgw.tap} and the twistd plugin.
"""

import os

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from xmppgw import tap

class UDPMemoryReactor(MemoryReactorClock):
    """
    A memory reactor that also records UDP listeners.
    """

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.udpPorts = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpPorts.append((port, protocol, interface))
        fake = _FakeUDPPort(port, interface)
        protocol.makeConnection(fake)
        return fake


class _FakeUDPPort:
    def __init__(self, port, interface):
        from twisted.internet.address import IPv4Address

        self._address = IPv4Address("UDP", interface or "0.0.0.0", port)
        self.written = []

    def getHost(self):
        return self._address

    def write(self, data, addr):
        self.written.append((data, addr))

    def stopListening(self):
        return None


SAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "etc", "xmppgw.toml")


class PluginTests(unittest.TestCase):
    """
    twistd finds the plugin.
    """

    def test_discovered(self):
        """
        A service maker with tapname C{xmppgw} is among the installed plugins
        and points at L{xmppgw.tap}.
        """
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("xmppgw", makers)
        self.assertIs(tap.Options, makers["xmppgw"].options)


class OptionsTests(unittest.TestCase):
    """
    L{tap.Options} requires and checks the configuration.
    """

    def test_configRequired(self):
        """
        Without --config the options are refused.
        """
        e = self.assertRaises(usage.UsageError, tap.Options().parseOptions, [])
        self.assertIn("--config is required", str(e))

    def test_missingFile(self):
        """
        A missing file is reported with its path.
        """
        path = os.path.abspath(self.mktemp())
        e = self.assertRaises(
            usage.UsageError, tap.Options().parseOptions, ["--config", path]
        )
        self.assertIn(path, str(e))

    def test_everyBadKey(self):
        """
        Every bad key of an invalid file is named at once.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[xmpp]\nxmpp_port = "x"\nbogus = 1\n[sip]\nsuccess_code = 201\n')
        e = self.assertRaises(
            usage.UsageError, tap.Options().parseOptions, ["--config", path]
        )
        text = str(e)
        self.assertIn("xmpp.xmpp_port", text)
        self.assertIn("xmpp.bogus", text)
        self.assertIn("sip.success_code", text)

    def test_serverNeedsCertificate(self):
        """
        backend = "server" without a certificate while TLS is required is
        refused with an error naming xmpp.tls_certificate.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[xmpp]\nbackend = "server"\n')
        e = self.assertRaises(
            usage.UsageError, tap.Options().parseOptions, ["--config", path]
        )
        self.assertIn("xmpp.tls_certificate", str(e))

    def test_absolutePath(self):
        """
        The config path is made absolute (twistd may chdir later).
        """
        options = tap.Options()
        options.parseOptions(["--config", os.path.relpath(SAMPLE)])
        self.assertEqual(os.path.abspath(SAMPLE), options["config"])


class MakeServiceTests(unittest.TestCase):
    """
    L{tap.makeService} wires the SIP transport and the XMPP link.
    """

    def test_services(self):
        """
        The service has named C{sip} and C{xmpp} children built from the
        configuration.
        """
        options = tap.Options()
        options.parseOptions(["--config", SAMPLE])
        service = tap.makeService(options, reactor=UDPMemoryReactor())
        sip = service.getServiceNamed("sip")
        xmpp = service.getServiceNamed("xmpp")
        gateway = options["gateway"]
        self.assertEqual(gateway.xmpp.xmpp_host, xmpp.host)
        self.assertEqual(gateway.xmpp.xmpp_port, xmpp.port)
        self.assertTrue(sip)

    def test_startConnects(self):
        """
        Starting the service listens on the SIP TCP socket and connects to
        the XMPP server; stopping it stops both.
        """
        options = tap.Options()
        options.parseOptions(["--config", SAMPLE])
        reactor = UDPMemoryReactor()
        service = tap.makeService(options, reactor=reactor)
        service.privilegedStartService()
        service.startService()
        gateway = options["gateway"]
        self.assertEqual(
            [(gateway.xmpp.xmpp_host, gateway.xmpp.xmpp_port)],
            [(c[0], c[1]) for c in reactor.tcpClients],
        )
        self.assertIn(5060, [p[0] for p in reactor.tcpServers])
        self.assertEqual([(5060, "127.0.0.1")], [(p[0], p[2]) for p in reactor.udpPorts])
        service.stopService()
