"""
Tests for L{xmppgw.clusterpeers}: the configurations the private ejabberd
and Kamailio run with, and the shipped scale-out samples in C{etc/}. No
process is started here (the interop tier, C{tests/interop/test_scaling.py},
runs them).
"""

import os
import re

from twisted.trial import unittest

from xmppgw.clusterpeers import (
    SHIPPED_KAMAILIO_CONFIG, PrivateEjabberd, PrivateKamailio,
    parseDispatcherList)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


#: fixed ports, so that no test here binds a socket
PORTS = {"c2sPort": 25222, "componentPort": 25347, "distPort": 25370}

KAMCMD_OUTPUT = """{
\tNRSETS: 1
\tRECORDS: {
\t\tSET: {
\t\t\tID: 1
\t\t\tTARGETS: {
\t\t\t\tDEST: {
\t\t\t\t\tURI: sip:127.0.0.1:25072
\t\t\t\t\tFLAGS: IP
\t\t\t\t\tPRIORITY: 0
\t\t\t\t}
\t\t\t\tDEST: {
\t\t\t\t\tURI: sip:127.0.0.1:25071
\t\t\t\t\tFLAGS: AP
\t\t\t\t\tPRIORITY: 0
\t\t\t\t}
\t\t\t}
\t\t}
\t}
}
"""


class PrivateEjabberdTests(unittest.TestCase):
    """
    The ejabberd configuration written for a private node.
    """

    def test_configLoopbackOnly(self):
        """
        Both listeners bind 127.0.0.1, the component domain has its
        password, s2s is off, and the Erlang distribution is on a loopback
        port of its own with no epmd.
        """
        ejabberd = PrivateEjabberd(self.mktemp(), domain="ej.test",
                                   componentSecret="s3cret", **PORTS)
        text = ejabberd.configText()
        self.assertEqual(2, text.count('ip: "127.0.0.1"'))
        self.assertIn('      "gw.ej.test":\n        password: "s3cret"', text)
        self.assertIn(f"  - port: {ejabberd.c2sPort}\n", text)
        self.assertIn(f"  - port: {ejabberd.componentPort}\n", text)
        self.assertIn("s2s_access: none", text)
        self.assertNotIn("domain_balancing", text)
        ctl = ejabberd.ctlConfigText()
        self.assertIn("INET_DIST_INTERFACE=127.0.0.1\n", ctl)
        self.assertIn(f"ERL_DIST_PORT={ejabberd.distPort}\n", ctl)
        self.assertEqual(3, len({ejabberd.c2sPort, ejabberd.componentPort,
                                 ejabberd.distPort}))

    def test_domainBalancing(self):
        """
        C{domainBalancing} writes a top-level entry with both keys (ejabberd
        crashes the component without C{component_number}); bad values are
        refused.
        """
        ejabberd = PrivateEjabberd(self.mktemp(), **PORTS,
                                   domainBalancing=("bare_destination", 2))
        self.assertIn('domain_balancing:\n  "gw.ej.test":\n'
                      "    type: bare_destination\n"
                      "    component_number: 2\n", ejabberd.configText())
        self.assertRaises(ValueError, PrivateEjabberd, self.mktemp(),
                          domainBalancing=("roundrobin", 2), **PORTS)
        self.assertRaises(ValueError, PrivateEjabberd, self.mktemp(),
                          domainBalancing=("random", 1), **PORTS)

    def test_quoting(self):
        """
        A secret with quotes and backslashes is written as a valid YAML
        double-quoted scalar.
        """
        ejabberd = PrivateEjabberd(self.mktemp(), componentSecret='a"b\\c',
                                   **PORTS)
        self.assertIn('password: "a\\"b\\\\c"', ejabberd.configText())


class PrivateKamailioTests(unittest.TestCase):
    """
    The dispatcher list and C{-A} defines for the shipped configuration.
    """

    def test_dispatcherList(self):
        """
        One line per destination in set 1, in order.
        """
        kamailio = PrivateKamailio(self.mktemp(), ["sip:127.0.0.1:1",
                                                   "sip:127.0.0.1:2"], port=9)
        lines = kamailio.dispatcherListText().splitlines()
        self.assertEqual(["1 sip:127.0.0.1:1 0 0 name=gw1",
                          "1 sip:127.0.0.1:2 0 0 name=gw2"], lines[1:])

    def test_definesCoverShippedConfig(self):
        """
        Every value L{PrivateKamailio} sets is a C{#!ifndef}/C{#!define}
        default of the shipped configuration, so the test runs exactly the
        shipped file.
        """
        kamailio = PrivateKamailio(self.mktemp(), ["sip:127.0.0.1:1"],
                                   port=15060, frTimer=1000)
        text = read("etc", "kamailio-dispatcher.cfg")
        self.assertEqual(SHIPPED_KAMAILIO_CONFIG,
                         os.path.join(ROOT, "etc", "kamailio-dispatcher.cfg"))
        for define in kamailio.defines():
            name = define.split("=", 1)[0]
            self.assertIn(f"#!ifndef {name}\n#!define {name} ", text)
        self.assertIn("LISTEN=udp:127.0.0.1:15060", kamailio.defines())
        self.assertIn("FR_TIMER=1000", kamailio.defines())
        self.assertRaises(ValueError, PrivateKamailio, self.mktemp(), [])

    def test_parseDispatcherList(self):
        """
        C{kamcmd dispatcher.list} output gives each URI with its flags.
        """
        targets = parseDispatcherList(KAMCMD_OUTPUT)
        self.assertEqual([("sip:127.0.0.1:25072", "IP", False),
                          ("sip:127.0.0.1:25071", "AP", True)],
                         [(t.uri, t.flags, t.active) for t in targets])


class ShippedSampleTests(unittest.TestCase):
    """
    C{etc/kamailio-dispatcher.cfg}, C{etc/dispatcher.list} and
    C{etc/ejabberd-cluster.yml} say what C{docs/scaling.rst} says.
    """

    def test_kamailioConfig(self):
        """
        Round-robin (algorithm 4), failover on 5xx and on timeout with
        C{ds_mark_dst}, OPTIONS probing of every destination; braces
        balance.
        """
        text = read("etc", "kamailio-dispatcher.cfg")
        self.assertIn('#!define DS_ALG "4"', text)
        self.assertIn("ds_select_dst(DS_SET, DS_ALG)", text)
        self.assertIn('t_check_status("5[0-9][0-9]")', text)
        self.assertIn("t_branch_timeout()", text)
        self.assertIn('ds_mark_dst("ip")', text)
        self.assertIn("ds_next_dst()", text)
        self.assertIn('modparam("dispatcher", "ds_ping_method", "OPTIONS")',
                      text)
        self.assertIn('modparam("dispatcher", "ds_probing_mode", 1)', text)
        self.assertIn('modparam("dispatcher", "flags", 2)', text)
        self.assertIn('loadmodule "tmx.so"', text)
        self.assertEqual(text.count("{"), text.count("}"))

    def test_dispatcherList(self):
        """
        The sample list has three destinations in set 1, in the format
        L{PrivateKamailio} writes.
        """
        lines = [line.split() for line in read("etc", "dispatcher.list")
                 .splitlines() if line.strip() and not line.startswith("#")]
        self.assertEqual(3, len(lines))
        for fields in lines:
            self.assertEqual("1", fields[0])
            self.assertTrue(re.match(r"sip:[\d.]+:\d+$", fields[1]), fields)

    def test_ejabberdCluster(self):
        """
        The sample is an C{ejabberd_service} listener for the default
        domain, with no C{domain_balancing} entry (only in the comments
        that warn against it).
        """
        text = read("etc", "ejabberd-cluster.yml")
        self.assertNotIn("\t", text)
        lines = [line for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        self.assertIn("    module: ejabberd_service", lines)
        self.assertIn('      "sip-xmpp.example.org":', lines)
        self.assertFalse([line for line in lines if "domain_balancing" in line])
