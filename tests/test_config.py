"""
Tests for L{xmppgw.config}.
"""

import dataclasses
import os
import re
import sys
from xmppgw.compat import tomllib

from twisted.python.filepath import FilePath
from twisted.trial import unittest

from xmppgw import config
from xmppgw.config import (
    Config,
    ConfigError,
    Listen,
    LogConfig,
    SIPConfig,
    XMPPConfig,
    loadConfig,
    parseConfig,
    resolvePort,
    schema,
)


SAMPLE = FilePath(__file__).parent().parent().child("etc").child("xmppgw.toml")


def errorsOf(testCase, data, path="test.toml"):
    """
    Parse C{data}, expecting a L{ConfigError}, and return its errors.
    """
    e = testCase.assertRaises(ConfigError, parseConfig, data, path)
    testCase.assertEqual(e.path, path)
    return e.errors


DEFAULT_XMPP = XMPPConfig(
    backend="component",
    domain_separator="*",
    gateway_domain="sip-xmpp.example.org",
    xmpp_domain="sip-xmpp.example.org",
    xmpp_host="xmpp.example.org",
    xmpp_port=5347,
    xmpp_password="secret",
    outbound_proxy=None,
    gwmap={},
    reconnect_initial_interval=1.0,
    reconnect_max_interval=60.0,
)

DEFAULT_SIP = SIPConfig(
    listen=(Listen("udp", "127.0.0.1", 5060), Listen("tcp", "127.0.0.1", 5060)),
    tls_certificate=None,
    tls_private_key=None,
    max_message_size=2048,
    success_code=202,
    t1_interval=0.5,
    hold_timeout=8.0,
    hold_limit=10000,
    queue_limit=100,
    connection_idle_timeout=300.0,
    connections_limit=1000,
)

DEFAULT_LOG = LogConfig(messages=True, traffic_sip=False, traffic_xmpp=False)


class DefaultsTests(unittest.TestCase):
    """
    An empty configuration gives the documented defaults.
    """

    def test_emptyDict(self):
        """
        Parsing an empty dictionary gives the whole default configuration.
        """
        self.assertEqual(
            parseConfig({}, "<defaults>"),
            Config("<defaults>", DEFAULT_XMPP, DEFAULT_SIP, DEFAULT_LOG),
        )

    def test_defaultsMethod(self):
        """
        L{Config.defaults} is the configuration of an empty file.
        """
        self.assertEqual(
            Config.defaults(),
            Config("<defaults>", DEFAULT_XMPP, DEFAULT_SIP, DEFAULT_LOG),
        )

    def test_emptyTables(self):
        """
        Empty tables are the same as absent ones.
        """
        self.assertEqual(
            parseConfig({"xmpp": {}, "sip": {}, "log": {}}, "x.toml"),
            Config("x.toml", DEFAULT_XMPP, DEFAULT_SIP, DEFAULT_LOG),
        )

    def test_frozen(self):
        """
        The configuration objects cannot be changed.
        """
        c = Config.defaults()
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, c, "path", "x")
        self.assertRaises(
            dataclasses.FrozenInstanceError, setattr, c.xmpp, "xmpp_port", 1
        )

    def test_durationsAreFloats(self):
        """
        Durations are floats even when the default or the value is an integer.
        """
        c = parseConfig({"sip": {"connection_idle_timeout": 30}}, "x.toml")
        self.assertIsInstance(c.sip.connection_idle_timeout, float)
        self.assertEqual(c.sip.connection_idle_timeout, 30.0)


class PortTests(unittest.TestCase):
    """
    C{xmpp_port} follows Kamailio: 0 means the backend's default port.
    """

    def test_componentDefault(self):
        """
        With the component backend, an unset or 0 port is 5347.
        """
        self.assertEqual(parseConfig({}, "x").xmpp.xmpp_port, 5347)
        self.assertEqual(
            parseConfig({"xmpp": {"xmpp_port": 0}}, "x").xmpp.xmpp_port, 5347
        )
        self.assertEqual(
            parseConfig(
                {"xmpp": {"backend": "component", "xmpp_port": 0}}, "x"
            ).xmpp.xmpp_port,
            5347,
        )

    def test_explicit(self):
        """
        A non-zero port is kept.
        """
        self.assertEqual(
            parseConfig({"xmpp": {"xmpp_port": 15347}}, "x").xmpp.xmpp_port, 15347
        )

    def test_resolvePort(self):
        """
        L{resolvePort} gives 5347 for component and 5269 for server when the
        port is 0, and keeps any other port.
        """
        self.assertEqual(resolvePort("component", 0), 5347)
        self.assertEqual(resolvePort("server", 0), 5269)
        self.assertEqual(resolvePort("server", 5270), 5270)
        self.assertEqual(resolvePort("component", 1), 1)


class KeyTests(unittest.TestCase):
    """
    Each key accepts its valid values and refuses invalid ones with a message
    naming the key.
    """

    def assertValid(self, table, key, value, expected):
        """
        C{table.key = value} gives C{expected}.
        """
        c = parseConfig({table: {key: value}}, "x.toml")
        self.assertEqual(getattr(getattr(c, table), key), expected)

    def assertInvalid(self, table, key, value, message):
        """
        C{table.key = value} gives exactly one error, on that key, with
        C{message}.
        """
        self.assertEqual(
            errorsOf(self, {table: {key: value}}),
            [(f"{table}.{key}", message)],
        )

    def assertInvalidContains(self, table, key, value, fragment, keyPath=None):
        """
        C{table.key = value} gives exactly one error, on that key (or
        C{keyPath}), whose message contains C{fragment}.
        """
        errors = errorsOf(self, {table: {key: value}})
        self.assertEqual(len(errors), 1, errors)
        self.assertEqual(errors[0][0], keyPath or f"{table}.{key}")
        self.assertIn(fragment, errors[0][1])

    # [xmpp]

    def test_backend(self):
        """
        C{backend} accepts "component" and "server", and refuses any other
        value naming the allowed ones.
        """
        self.assertValid("xmpp", "backend", "component", "component")
        config = parseConfig(
            {"xmpp": {"backend": "server", "tls_required": False}}, "t.toml")
        self.assertEqual(config.xmpp.backend, "server")
        self.assertInvalid(
            "xmpp", "backend", "Component",
            'must be "component" (an XEP-0114 component of an XMPP server) '
            'or "server" (S2S federation with dialback), not \'Component\'',
        )
        self.assertInvalidContains("xmpp", "backend", 1, "not 1")

    def test_confirmDelivery(self):
        """
        C{confirm_delivery} accepts "ping", "tcp", "kernel" and "none", and
        the booleans as aliases of "ping" and "none"; anything else is
        refused.
        """
        self.assertValid("xmpp", "confirm_delivery", "ping", "ping")
        self.assertValid("xmpp", "confirm_delivery", "kernel", "kernel")
        self.assertValid("xmpp", "confirm_delivery", "none", "none")
        self.assertValid("xmpp", "confirm_delivery", True, "ping")
        self.assertValid("xmpp", "confirm_delivery", False, "none")
        self.assertInvalidContains(
            "xmpp", "confirm_delivery", "yes",
            'must be "ping", "tcp", "kernel" or "none"')
        self.assertInvalidContains("xmpp", "confirm_delivery", 1, "not 1")

    def test_confirmDeliveryTCP(self):
        """
        C{confirm_delivery = "tcp"} is accepted on Linux and refused
        elsewhere with a message saying it needs Linux.
        """
        self.patch(sys, "platform", "linux")
        self.assertValid("xmpp", "confirm_delivery", "tcp", "tcp")
        self.patch(sys, "platform", "darwin")
        self.assertInvalidContains(
            "xmpp", "confirm_delivery", "tcp", "only Linux has")

    def test_serverBackendNeedsCertificate(self):
        """
        The server backend with TLS required (the default) and no
        certificate gives one error naming tls_certificate; port 0 is 5269.
        """
        self.assertEqual(
            [k for k, m in errorsOf(
                self, {"xmpp": {"backend": "server", "xmpp_port": 0}}
            )],
            ["xmpp.tls_certificate"],
        )
        config = parseConfig(
            {"xmpp": {"backend": "server", "tls_required": False}}, "t.toml")
        self.assertEqual(config.xmpp.xmpp_port, 5269)
        self.assertEqual(config.xmpp.xmpp_host, "0.0.0.0")

    def test_domainSeparatorValid(self):
        """
        C{domain_separator} accepts the characters legal unescaped in both a
        SIP user part and a JID localpart.
        """
        for c in "*_!~()=+$,":
            self.assertValid("xmpp", "domain_separator", c, c)

    def test_domainSeparatorInvalid(self):
        """
        C{domain_separator} refuses characters with a special meaning, each
        with the reason.
        """
        cases = {
            "%": "percent-escape",
            "@": "separates the user from the domain",
            "\\": "XEP-0106",
            ":": "separates the scheme and the port",
            "/": "resource of a JID",
            ";": "parameter in SIP URIs",
            " ": "whitespace",
            "\t": "whitespace",
            "a": "letters and digits",
            "7": "letters and digits",
            ".": "occurs in domain names",
            "-": "occurs in domain names",
            "<": "JID localpart",
            "#": "must be escaped",
            "\u00e9": "letters and digits",
            "\u00a7": "must be escaped",
        }
        for char, fragment in cases.items():
            errors = errorsOf(self, {"xmpp": {"domain_separator": char}})
            self.assertEqual(len(errors), 1)
            key, message = errors[0]
            self.assertEqual(key, "xmpp.domain_separator")
            self.assertTrue(message.startswith(f"cannot be {char!r}: "), message)
            self.assertIn(fragment, message)
            self.assertTrue(message.endswith("use one of * _ ! ~ ( ) = + $ ,"))

    def test_domainSeparatorLength(self):
        """
        C{domain_separator} must be exactly one character.
        """
        for value in ("", "**", 1):
            self.assertInvalid(
                "xmpp", "domain_separator", value,
                "must be exactly one character (one of * _ ! ~ ( ) = + $ ,), "
                f"not {value!r}",
            )

    def test_domains(self):
        """
        C{gateway_domain} and C{xmpp_domain} accept domain names, lower-case
        them, and refuse anything else with the reason.
        """
        for key in ("gateway_domain", "xmpp_domain"):
            self.assertValid("xmpp", key, "Sip.Example.ORG", "sip.example.org")
            self.assertValid("xmpp", key, "localhost", "localhost")
            self.assertValid("xmpp", key, "xn--bcher-kva.example", "xn--bcher-kva.example")
            self.assertValid("xmpp", key, "10.0.0.1", "10.0.0.1")
            self.assertInvalid(
                "xmpp", key, "a b.org",
                "must be a domain name, not 'a b.org': spaces are not allowed",
            )
            self.assertInvalid(
                "xmpp", key, "user@example.org",
                "must be a domain name, not 'user@example.org': a domain has "
                "no user part ('@')",
            )
            self.assertInvalidContains("xmpp", key, "", "it is empty")
            self.assertInvalidContains("xmpp", key, "example.org.", "empty label")
            self.assertInvalidContains("xmpp", key, "a..org", "empty label")
            self.assertInvalidContains("xmpp", key, "-a.org", "label '-a'")
            self.assertInvalidContains("xmpp", key, "a_b.org", "label 'a_b'")
            self.assertInvalidContains("xmpp", key, "a" * 64 + ".org", "label")
            self.assertInvalidContains(
                "xmpp", key, ("a" * 60 + ".") * 5, "longer than 253"
            )
            self.assertInvalidContains("xmpp", key, "b\u00fccher.de", "xn--")
            self.assertInvalidContains("xmpp", key, "10.0.0.300", "IPv4")
            self.assertInvalidContains("xmpp", key, 5, "(a string), not 5")

    def test_xmppHost(self):
        """
        C{xmpp_host} accepts a host name or an IPv4 or IPv6 address (brackets
        removed).
        """
        self.assertValid("xmpp", "xmpp_host", "XMPP.example.org", "xmpp.example.org")
        self.assertValid("xmpp", "xmpp_host", "127.0.0.1", "127.0.0.1")
        self.assertValid("xmpp", "xmpp_host", "::1", "::1")
        self.assertValid("xmpp", "xmpp_host", "[::1]", "::1")
        self.assertValid("xmpp", "xmpp_host", "2001:DB8::1", "2001:db8::1")
        self.assertInvalid(
            "xmpp", "xmpp_host", "::g",
            "must be a host name or an IP address, not '::g'",
        )
        self.assertInvalidContains("xmpp", "xmpp_host", "a b", "spaces")
        self.assertInvalidContains("xmpp", "xmpp_host", True, "not true")

    def test_xmppPort(self):
        """
        C{xmpp_port} is an integer from 0 to 65535; strings, floats and
        booleans are refused.
        """
        self.assertValid("xmpp", "xmpp_port", 65535, 65535)
        self.assertValid("xmpp", "xmpp_port", 1, 1)
        prefix = "must be an integer from 0 to 65535 (0: the backend's default port), "
        self.assertInvalid("xmpp", "xmpp_port", "abc", prefix + "not 'abc'")
        self.assertInvalid("xmpp", "xmpp_port", 65536, prefix + "not 65536")
        self.assertInvalid("xmpp", "xmpp_port", -1, prefix + "not -1")
        self.assertInvalid("xmpp", "xmpp_port", 5347.0, prefix + "not 5347.0")
        self.assertInvalid("xmpp", "xmpp_port", True, prefix + "not true")
        self.assertInvalid("xmpp", "xmpp_port", [1], prefix + "not an array")
        self.assertInvalid("xmpp", "xmpp_port", {}, prefix + "not a table")

    def test_xmppPassword(self):
        """
        C{xmpp_password} is a non-empty string.
        """
        self.assertValid("xmpp", "xmpp_password", "s3cr\u00e9t", "s3cr\u00e9t")
        self.assertInvalid(
            "xmpp", "xmpp_password", "", "must be a non-empty string, not ''"
        )
        self.assertInvalid(
            "xmpp", "xmpp_password", 12, "must be a non-empty string, not 12"
        )

    def test_outboundProxyValid(self):
        """
        C{outbound_proxy} accepts sip: and sips: URIs with a host, kept as
        written.
        """
        for uri in (
            "sip:proxy.example.org",
            "sip:proxy.example.org:5070;lr",
            "SIPS:proxy.example.org;transport=tls",
            "sip:127.0.0.1;transport=TCP",
            "sip:[::1]:5060",
            "sip:gw@proxy.example.org",
        ):
            self.assertValid("xmpp", "outbound_proxy", uri, uri)

    def test_outboundProxyInvalid(self):
        """
        C{outbound_proxy} refuses what is not a sip:/sips: URI with a host,
        saying why.
        """
        cases = {
            "proxy.example.org": "it is not a URI",
            "tel:+123": "the scheme must be sip or sips",
            "http://proxy": "the scheme must be sip or sips",
            "sip:": "it has no host",
            "sip:;lr": "it has no host",
            "sip:proxy.example.org:0": "port '0'",
            "sip:proxy.example.org:x": "port 'x'",
            "sip:[::g]": "not a valid IPv6 address",
            "sip:bad_host.org": "host 'bad_host.org' is not valid",
            "sip:proxy.example.org;transport=sctp": "transport 'sctp'",
            "sip:proxy.example.org?Subject=x": "no headers",
            "sip:proxy example.org": "spaces",
        }
        for uri, fragment in cases.items():
            self.assertInvalidContains("xmpp", "outbound_proxy", uri, fragment)
            self.assertInvalidContains(
                "xmpp", "outbound_proxy", uri,
                f"must be a sip: or sips: URI with a host such as "
                f"'sip:proxy.example.org;transport=tcp', not {uri!r}: ",
            )
        self.assertInvalidContains("xmpp", "outbound_proxy", 5, "(a string), not 5")

    def test_reconnectIntervals(self):
        """
        The reconnect intervals are numbers of seconds within their ranges,
        and the maximum is not below the initial one.
        """
        self.assertValid("xmpp", "reconnect_initial_interval", 2, 2.0)
        self.assertValid("xmpp", "reconnect_max_interval", 3600, 3600.0)
        self.assertInvalid(
            "xmpp", "reconnect_initial_interval", 0,
            "must be a number of seconds from 0.1 to 3600, not 0",
        )
        self.assertInvalid(
            "xmpp", "reconnect_max_interval", "60",
            "must be a number of seconds from 0.1 to 86400, not '60'",
        )
        self.assertInvalid(
            "xmpp", "reconnect_max_interval", float("inf"),
            "must be a number of seconds from 0.1 to 86400, not inf",
        )
        self.assertInvalidContains(
            "xmpp", "reconnect_initial_interval", float("nan"), "not nan"
        )
        self.assertEqual(
            errorsOf(self, {"xmpp": {
                "reconnect_initial_interval": 10,
                "reconnect_max_interval": 5,
            }}),
            [(
                "xmpp.reconnect_max_interval",
                "must not be less than reconnect_initial_interval (10), not 5",
            )],
        )

    # [sip]

    def test_listenValid(self):
        """
        C{listen} parses Kamailio-style sockets: protocol and host
        lower-cased, IPv6 brackets removed, default ports 5060 and 5061.
        """
        c = parseConfig({"sip": {"listen": [
            "udp:0.0.0.0:5060",
            "TCP:[::1]:5080",
            "udp:[2001:db8::1]",
            "udp:localhost",
        ]}}, "x.toml")
        self.assertEqual(c.sip.listen, (
            Listen("udp", "0.0.0.0", 5060),
            Listen("tcp", "::1", 5080),
            Listen("udp", "2001:db8::1", 5060),
            Listen("udp", "localhost", 5060),
        ))

    def test_listenStr(self):
        """
        A L{Listen} prints in the Kamailio syntax, with brackets for IPv6.
        """
        self.assertEqual(str(Listen("udp", "::1", 5060)), "udp:[::1]:5060")
        self.assertEqual(str(Listen("tls", "example.org", 5061)), "tls:example.org:5061")

    def test_listenInvalid(self):
        """
        Each bad socket in C{listen} gets its own error with its index.
        """
        errors = errorsOf(self, {"sip": {"listen": [
            "udp:127.0.0.1:5060",
            "sctp:127.0.0.1:5060",
            "127.0.0.1:5060",
            "udp:::1:5060",
            "udp:[::1:5060",
            "udp:[::g]:5060",
            "udp:[::1]x",
            "udp:127.0.0.1:0",
            "udp:127.0.0.1:70000",
            "udp:127.0.0.1:abc",
            "udp:bad host:5060",
            "udp::5060",
            5060,
            "udp:127.0.0.1:5060",
        ]}})
        self.assertEqual(
            [k for k, m in errors], [f"sip.listen[{i}]" for i in range(1, 14)]
        )
        messages = [m for k, m in errors]
        for message, fragment in zip(messages, [
            "with proto udp, tcp or tls",
            "with proto udp, tcp or tls",
            "put an IPv6 address in brackets",
            "'[' without ']'",
            "not a valid IPv6 address",
            "unexpected 'x'",
            "port '0' is not from 1 to 65535",
            "port '70000'",
            "port 'abc'",
            "spaces are not allowed",
            "it is empty",
            "must be a string 'proto:host:port', not 5060",
            "'udp:127.0.0.1:5060' is listed twice",
        ]):
            self.assertIn(fragment, message)

    def test_listenNotList(self):
        """
        C{listen} must be a non-empty array.
        """
        self.assertInvalid(
            "sip", "listen", "udp:127.0.0.1:5060",
            "must be an array of sockets such as [\"udp:127.0.0.1:5060\"], "
            "not 'udp:127.0.0.1:5060'",
        )
        self.assertInvalid("sip", "listen", [], "must list at least one socket")

    def test_listenSameHostOtherProto(self):
        """
        UDP and TCP on the same address and port are not duplicates.
        """
        self.assertValid(
            "sip", "listen", ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"],
            DEFAULT_SIP.listen,
        )

    def test_maxMessageSize(self):
        """
        C{max_message_size} is an integer from 256 to 65535.
        """
        self.assertValid("sip", "max_message_size", 256, 256)
        self.assertValid("sip", "max_message_size", 65535, 65535)
        for value in (255, 65536, "2k", 2048.5, False):
            self.assertInvalid(
                "sip", "max_message_size", value,
                f"must be an integer from 256 to 65535, not {config._show(value)}",
            )

    def test_successCode(self):
        """
        C{success_code} is 202 or 200.
        """
        self.assertValid("sip", "success_code", 200, 200)
        self.assertValid("sip", "success_code", 202, 202)
        for value in (201, "202", 202.0, True):
            self.assertInvalidContains(
                "sip", "success_code", value,
                "must be 202 (Accepted, RFC 3428 section 7) or 200, not",
            )

    def test_t1Interval(self):
        """
        C{t1_interval} is from 0.05 to 10 seconds.
        """
        c = parseConfig({"sip": {"t1_interval": 0.05, "hold_timeout": 3}}, "x")
        self.assertEqual(c.sip.t1_interval, 0.05)
        self.assertValid("sip", "t1_interval", 1, 1.0)
        self.assertValid("sip", "t1_interval", 10, 10.0)
        self.assertInvalid(
            "sip", "t1_interval", 0.01,
            "must be a number of seconds from 0.05 to 10, not 0.01",
        )
        self.assertInvalid(
            "sip", "t1_interval", True,
            "must be a number of seconds from 0.05 to 10, not true",
        )

    def test_holdTimeout(self):
        """
        C{hold_timeout} must be below 64 * T1, when SIP clients give up.
        """
        self.assertValid("sip", "hold_timeout", 31.9, 31.9)
        self.assertInvalid(
            "sip", "hold_timeout", 32,
            "must be less than 64 * t1_interval (32 seconds, when SIP clients "
            "give up: RFC 3261 Timer F), not 32",
        )
        c = parseConfig({"sip": {"t1_interval": 1, "hold_timeout": 40}}, "x")
        self.assertEqual(c.sip.hold_timeout, 40.0)
        self.assertEqual(
            errorsOf(self, {"sip": {"t1_interval": 0.1, "hold_timeout": 8}}),
            [(
                "sip.hold_timeout",
                "must be less than 64 * t1_interval (6.4 seconds, when SIP "
                "clients give up: RFC 3261 Timer F), not 8",
            )],
        )
        self.assertInvalidContains("sip", "hold_timeout", 0, "from 0.1 to 640")

    def test_defaultHoldTimeoutTooLong(self):
        """
        A small C{t1_interval} with the default C{hold_timeout} gives an
        error on C{hold_timeout} that says it is the default.
        """
        self.assertEqual(
            errorsOf(self, {"sip": {"t1_interval": 0.1}}),
            [(
                "sip.hold_timeout",
                "must be less than 64 * t1_interval (6.4 seconds, when SIP "
                "clients give up: RFC 3261 Timer F), not 8 (the default): set "
                "hold_timeout lower",
            )],
        )

    def test_holdTimeoutWithBadT1(self):
        """
        An invalid C{t1_interval} is reported alone, without a cross-check
        error on C{hold_timeout}.
        """
        self.assertEqual(
            [k for k, m in errorsOf(
                self, {"sip": {"t1_interval": "x", "hold_timeout": 8}}
            )],
            ["sip.t1_interval"],
        )

    def test_limits(self):
        """
        The count limits are integers within their ranges.
        """
        self.assertValid("sip", "hold_limit", 0, 0)
        self.assertValid("sip", "queue_limit", 1, 1)
        self.assertValid("sip", "connections_limit", 5, 5)
        self.assertInvalid(
            "sip", "hold_limit", -1, "must be an integer from 0 to 1000000, not -1"
        )
        self.assertInvalid(
            "sip", "queue_limit", 0, "must be an integer from 1 to 100000, not 0"
        )
        self.assertInvalid(
            "sip", "connections_limit", 1.5,
            "must be an integer from 1 to 1000000, not 1.5",
        )

    def test_connectionIdleTimeout(self):
        """
        C{connection_idle_timeout} is from 1 to 86400 seconds.
        """
        self.assertValid("sip", "connection_idle_timeout", 1, 1.0)
        self.assertInvalid(
            "sip", "connection_idle_timeout", 0.5,
            "must be a number of seconds from 1 to 86400, not 0.5",
        )

    # [log]

    def test_logFlags(self):
        """
        The C{[log]} keys are booleans; integers and strings are refused.
        """
        for key in ("messages", "traffic_sip", "traffic_xmpp"):
            self.assertValid("log", key, True, True)
            self.assertValid("log", key, False, False)
            self.assertInvalid("log", key, 1, "must be true or false, not 1")
            self.assertInvalid(
                "log", key, "yes", "must be true or false, not 'yes'"
            )


class TLSTests(unittest.TestCase):
    """
    TLS sockets need a certificate and a private key, which must be readable.
    """

    def setUp(self):
        self.dir = FilePath(self.mktemp())
        self.dir.makedirs()
        self.cert = self.dir.child("cert.pem")
        self.cert.setContent(b"-----BEGIN CERTIFICATE-----\n")
        self.key = self.dir.child("key.pem")
        self.key.setContent(b"-----BEGIN PRIVATE KEY-----\n")
        self.path = self.dir.child("xmppgw.toml").path

    def test_tlsWithoutCertificate(self):
        """
        A tls socket without certificate and key gives an error for each.
        """
        self.assertEqual(
            errorsOf(self, {"sip": {"listen": ["tls:0.0.0.0:5061"]}}),
            [
                (
                    "sip.tls_certificate",
                    "is required because sip.listen has a tls socket "
                    "('tls:0.0.0.0:5061')",
                ),
                (
                    "sip.tls_private_key",
                    "is required because sip.listen has a tls socket "
                    "('tls:0.0.0.0:5061')",
                ),
            ],
        )

    def test_tlsWithoutCertificateAndBadSocket(self):
        """
        A missing certificate is reported even when another socket of
        C{listen} is bad.
        """
        self.assertEqual(
            [k for k, m in errorsOf(
                self, {"sip": {"listen": ["tls:0.0.0.0:5061", "udp:x:0"]}}
            )],
            ["sip.listen[1]", "sip.tls_certificate", "sip.tls_private_key"],
        )

    def test_tlsRelativeFiles(self):
        """
        Relative file names are resolved against the configuration file's
        directory, and become absolute.
        """
        c = parseConfig({"sip": {
            "listen": ["TLS:Localhost", "tls:127.0.0.1:5062"],
            "tls_certificate": "cert.pem",
            "tls_private_key": "key.pem",
        }}, self.path)
        self.assertEqual(c.sip.listen, (
            Listen("tls", "localhost", 5061), Listen("tls", "127.0.0.1", 5062),
        ))
        self.assertEqual(c.sip.tls_certificate, os.path.abspath(self.cert.path))
        self.assertEqual(c.sip.tls_private_key, os.path.abspath(self.key.path))

    def test_tlsAbsoluteFiles(self):
        """
        Absolute file names are kept.
        """
        c = parseConfig({"sip": {
            "listen": ["tls:127.0.0.1:5061"],
            "tls_certificate": os.path.abspath(self.cert.path),
            "tls_private_key": os.path.abspath(self.key.path),
        }}, "elsewhere/x.toml")
        self.assertEqual(c.sip.tls_certificate, os.path.abspath(self.cert.path))

    def test_tlsMissingFiles(self):
        """
        Certificate and key files that cannot be read are errors naming the
        resolved path.
        """
        missing = os.path.abspath(self.dir.child("missing.pem").path)
        errors = errorsOf(self, {"sip": {
            "listen": ["tls:127.0.0.1:5061"],
            "tls_certificate": "missing.pem",
            "tls_private_key": ".",
        }}, self.path)
        self.assertEqual(errors, [
            (
                "sip.tls_certificate",
                f"cannot read {missing!r}: No such file or directory",
            ),
            (
                "sip.tls_private_key",
                f"cannot read {os.path.abspath(self.dir.path)!r}: it is a directory",
            ),
        ])

    def test_tlsFileType(self):
        """
        A certificate name must be a non-empty string.
        """
        errors = errorsOf(self, {"sip": {"tls_certificate": ""}})
        self.assertEqual(
            errors,
            [("sip.tls_certificate", "must be a file name (a string), not ''")],
        )


class GwmapTests(unittest.TestCase):
    """
    C{gwmap} takes Kamailio's "sipdomain=xmppdomain;..." strings.
    """

    def gwmap(self, value):
        return parseConfig({"xmpp": {"gwmap": value}}, "x").xmpp.gwmap

    def test_string(self):
        """
        One string holds several mappings separated by ";", with spaces
        trimmed, empty tokens ignored and domains lower-cased.
        """
        self.assertEqual(
            self.gwmap(" sip.Example.com = xmpp.example.com ;; example.net=jabber.example.net; "),
            {"sip.example.com": "xmpp.example.com", "example.net": "jabber.example.net"},
        )

    def test_list(self):
        """
        Each string of a list adds mappings, as the repeated modparam does.
        """
        self.assertEqual(
            self.gwmap(["a.example=b.example", "c.example=d.example;e.example"]),
            {"a.example": "b.example", "c.example": "d.example", "e.example": "e.example"},
        )

    def test_tokenWithoutEquals(self):
        """
        A token without "=" maps a domain to itself.
        """
        self.assertEqual(self.gwmap("Example.org"), {"example.org": "example.org"})

    def test_empty(self):
        """
        An empty string or list is no mapping.
        """
        self.assertEqual(self.gwmap(""), {})
        self.assertEqual(self.gwmap([]), {})
        self.assertEqual(self.gwmap(" ; "), {})

    def test_sameMappingTwice(self):
        """
        Repeating the same mapping is harmless.
        """
        self.assertEqual(self.gwmap(["a.org=b.org", "a.org=B.org"]), {"a.org": "b.org"})

    def test_conflicts(self):
        """
        A SIP domain mapped to two XMPP domains, or two SIP domains mapped to
        one XMPP domain, is an error.
        """
        self.assertEqual(
            errorsOf(self, {"xmpp": {"gwmap": ["a.org=b.org", "a.org=c.org"]}}),
            [(
                "xmpp.gwmap[1]",
                "SIP domain 'a.org' is mapped to both 'b.org' and 'c.org'",
            )],
        )
        self.assertEqual(
            errorsOf(self, {"xmpp": {"gwmap": "a.org=c.org;b.org=c.org"}}),
            [(
                "xmpp.gwmap",
                "XMPP domain 'c.org' is mapped from both 'a.org' and 'b.org', so "
                "replies from XMPP could not be mapped back",
            )],
        )

    def test_badTokens(self):
        """
        Every bad token is reported, with its list index.
        """
        self.assertEqual(
            errorsOf(self, {"xmpp": {"gwmap": [
                "a.org=b.org;x=y=z", "=b.org", "c.org=", "bad host.org", 5,
            ]}}),
            [
                ("xmpp.gwmap[0]", "entry 'x=y=z' has more than one '='"),
                ("xmpp.gwmap[1]",
                 "entry '=b.org': SIP domain '' is not valid: it is empty"),
                ("xmpp.gwmap[2]",
                 "entry 'c.org=': XMPP domain '' is not valid: it is empty"),
                ("xmpp.gwmap[3]",
                 "entry 'bad host.org': SIP domain 'bad host.org' is not valid: "
                 "spaces are not allowed"),
                ("xmpp.gwmap[3]",
                 "entry 'bad host.org': XMPP domain 'bad host.org' is not valid: "
                 "spaces are not allowed"),
                ("xmpp.gwmap[4]",
                 "must be a string 'sipdomain=xmppdomain;...', not 5"),
            ],
        )

    def test_wrongType(self):
        """
        C{gwmap} must be a string or an array of strings.
        """
        self.assertEqual(
            errorsOf(self, {"xmpp": {"gwmap": {"a.org": "b.org"}}}),
            [(
                "xmpp.gwmap",
                "must be a string 'sipdomain=xmppdomain;...' or an array of such "
                "strings, not a table",
            )],
        )


class UnknownTests(unittest.TestCase):
    """
    Unknown tables and keys are errors, with a suggestion when one is close.
    """

    def test_unknownKeySuggestion(self):
        """
        A misspelt key gets the closest known key of its table.
        """
        e = self.assertRaises(
            ConfigError, parseConfig, {"sip": {"lisen": ["udp:1.2.3.4:5060"]}}, "gw.toml"
        )
        self.assertEqual(str(e), "gw.toml: sip.lisen: unknown key (did you mean 'listen'?)")

    def test_unknownKeyOtherTable(self):
        """
        A key put in the wrong table names the table it belongs in.
        """
        self.assertEqual(
            errorsOf(self, {"xmpp": {"listen": []}}),
            [("xmpp.listen", "unknown key (did you mean 'sip.listen'?)")],
        )

    def test_unknownKeyNoSuggestion(self):
        """
        A key like no other gets no suggestion.
        """
        self.assertEqual(
            errorsOf(self, {"log": {"zzz": 1}}), [("log.zzz", "unknown key")]
        )

    def test_unknownTable(self):
        """
        A misspelt table gets the closest known table; others get none.
        """
        self.assertEqual(
            errorsOf(self, {"sipp": {}, "graphite": {"host": "x"}}),
            [
                ("sipp", "unknown table (did you mean 'sip'?)"),
                ("graphite", "unknown table"),
            ],
        )

    def test_subTable(self):
        """
        An unknown sub-table is an unknown key of its table.
        """
        self.assertEqual(
            errorsOf(self, {"xmpp": {"peer_table": {"a": "b"}}}),
            [("xmpp.peer_table", "unknown key")],
        )

    def test_keyOutsideTable(self):
        """
        A key before any table header is an error that names its table.
        """
        self.assertEqual(
            errorsOf(self, {"xmpp_port": 5347, "foo": 1}),
            [
                ("xmpp_port", "unknown key outside any table (did you mean "
                 "'xmpp.xmpp_port'?)"),
                ("foo", "unknown key outside any table"),
            ],
        )

    def test_tableNotTable(self):
        """
        A known table given as a value is an error.
        """
        self.assertEqual(
            errorsOf(self, {"sip": "udp:127.0.0.1:5060"}),
            [("sip", "must be a table [sip], not 'udp:127.0.0.1:5060'")],
        )


class LoadTests(unittest.TestCase):
    """
    L{loadConfig} reads files and reports every problem at once.
    """

    def write(self, content):
        """
        Write C{content} (bytes or text) to a new file and return its path.
        """
        path = FilePath(self.mktemp())
        path.parent().makedirs(ignoreExistingDirectory=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        path.setContent(content)
        return path.path

    def test_valid(self):
        """
        A valid file loads into a L{Config} whose path is the file name.
        """
        path = self.write(
            '[xmpp]\nxmpp_port = 5348\ngwmap = "a.org=b.org"\n'
            "[log]\ntraffic_sip = true\n"
        )
        c = loadConfig(path)
        self.assertEqual(c, Config(
            path,
            dataclasses.replace(DEFAULT_XMPP, xmpp_port=5348, gwmap={"a.org": "b.org"}),
            DEFAULT_SIP,
            dataclasses.replace(DEFAULT_LOG, traffic_sip=True),
        ))

    def test_allErrorsAtOnce(self):
        """
        A file with three bad keys gives one line for each, naming the file.
        """
        path = self.write(
            '[xmpp]\nxmpp_port = "abc"\ndomain_separator = "@"\n'
            "[sip]\nlisen = []\n"
        )
        e = self.assertRaises(ConfigError, loadConfig, path)
        lines = str(e).splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines, [
            f"{path}: xmpp.xmpp_port: must be an integer from 0 to 65535 (0: the "
            "backend's default port), not 'abc'",
            f"{path}: xmpp.domain_separator: cannot be '@': '@' separates the "
            "user from the domain in SIP URIs and JIDs; use one of "
            "* _ ! ~ ( ) = + $ ,",
            f"{path}: sip.lisen: unknown key (did you mean 'listen'?)",
        ])

    def test_missingFile(self):
        """
        A missing file is an error naming it.
        """
        path = os.path.abspath(self.mktemp())
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(e),
            f"{path}: cannot read the configuration file: No such file or directory",
        )
        self.assertEqual(e.errors, [(None, "cannot read the configuration file: "
                                     "No such file or directory")])

    def test_directory(self):
        """
        A directory is not a configuration file.
        """
        path = self.mktemp()
        os.makedirs(path)
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(e), f"{path}: cannot read the configuration file: Is a directory"
        )

    def test_syntaxError(self):
        """
        A TOML syntax error names the file and the line.
        """
        path = self.write('[xmpp]\nxmpp_port = 5347\nxmpp_host "x"\n')
        e = self.assertRaises(ConfigError, loadConfig, path)
        message = str(e)
        self.assertTrue(message.startswith(f"{path}: TOML syntax error: "), message)
        self.assertIn("line 3", message)
        self.assertEqual(len(message.splitlines()), 1)

    def test_notUTF8(self):
        """
        A file that is not UTF-8 is an error saying so.
        """
        path = self.write(b'[xmpp]\nxmpp_password = "\xe9"\n')
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(e),
            f"{path}: is not UTF-8 text (TOML files must be UTF-8): byte 0xe9 "
            "at offset 24",
        )

    def test_configErrorStr(self):
        """
        L{ConfigError} prints one line per error, with the file name and the
        key path when there is one.
        """
        e = ConfigError("f.toml", [("a.b", "bad"), (None, "worse")])
        self.assertEqual(str(e), "f.toml: a.b: bad\nf.toml: worse")
        self.assertEqual(e.path, "f.toml")
        self.assertEqual(e.errors, [("a.b", "bad"), (None, "worse")])


class SchemaTests(unittest.TestCase):
    """
    The schema describes every key of the configuration objects.
    """

    def test_coversConfig(self):
        """
        The schema's keys are exactly the fields of the table dataclasses,
        in the same order.
        """
        for table, cls in (("xmpp", XMPPConfig), ("sip", SIPConfig), ("log", LogConfig)):
            self.assertEqual(
                [k.name for k in schema() if k.table == table],
                [f.name for f in dataclasses.fields(cls)],
            )
        self.assertEqual(
            [t for t, _ in config.TABLES],
            [f.name for f in dataclasses.fields(Config)][1:],
        )

    def test_entries(self):
        """
        Every key has a type, a one-line help text and a valid TOML default.
        """
        for key in schema():
            self.assertTrue(key.type)
            self.assertTrue(key.help)
            self.assertNotIn("\n", key.help)
            if key.default is None:
                self.assertIsNone(key.defaultTOML)
            else:
                parsed = tomllib.loads(f"v = {key.defaultTOML}")["v"]
                self.assertEqual(parsed, key.default)

    def test_defaultTOML(self):
        """
        L{config.Key.defaultTOML} gives the default as TOML text.
        """
        keys = {k.path: k for k in schema()}
        self.assertEqual(keys["xmpp.backend"].defaultTOML, '"component"')
        self.assertEqual(keys["xmpp.xmpp_port"].defaultTOML, "0")
        self.assertEqual(keys["sip.t1_interval"].defaultTOML, "0.5")
        self.assertEqual(keys["log.messages"].defaultTOML, "true")
        self.assertEqual(
            keys["sip.listen"].defaultTOML,
            '["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]',
        )
        self.assertIsNone(keys["xmpp.outbound_proxy"].defaultTOML)


_TABLE_LINE = re.compile(r"\[([a-z_.]+)\]\s*$")
_KEY_LINE = re.compile(r"(# )?([a-z_0-9]+) = ")


class SampleTests(unittest.TestCase):
    """
    C{etc/xmppgw.toml} lists every key with its default and help line.
    """

    def sampleKeys(self):
        """
        Read the sample: return C{{path: (commented, helpLine)}} for every
        key line, active (C{key = ...}) or commented out (C{# key = ...}).
        """
        keys = {}
        table = None
        previous = ""
        for line in SAMPLE.getContent().decode("utf-8").splitlines():
            tableMatch = _TABLE_LINE.match(line)
            keyMatch = _KEY_LINE.match(line)
            if tableMatch:
                table = tableMatch.group(1)
            elif keyMatch:
                path = f"{table}.{keyMatch.group(2)}"
                self.assertNotIn(path, keys)
                keys[path] = (bool(keyMatch.group(1)), previous)
            previous = line
        return keys

    def test_loads(self):
        """
        The sample loads, and gives the defaults.
        """
        c = loadConfig(SAMPLE.path)
        self.assertEqual(c, dataclasses.replace(Config.defaults(), path=SAMPLE.path))

    def test_everyKeyListed(self):
        """
        Every key of the schema is in the sample, and every key in the sample
        is in the schema.
        """
        self.assertEqual(
            sorted(self.sampleKeys()), sorted(k.path for k in schema())
        )

    def test_activeKeysAreDefaults(self):
        """
        Keys with a default are set to it in the sample; keys without one
        are commented out.
        """
        data = tomllib.loads(SAMPLE.getContent().decode("utf-8"))
        listed = self.sampleKeys()
        for key in schema():
            commented, _ = listed[key.path]
            self.assertEqual(commented, key.default is None, key.path)
            if key.default is not None:
                self.assertEqual(data[key.table][key.name], key.default, key.path)
            else:
                self.assertNotIn(key.name, data[key.table])

    def test_helpLines(self):
        """
        The line above each key in the sample is its help text from the
        schema.
        """
        listed = self.sampleKeys()
        for key in schema():
            _, helpLine = listed[key.path]
            self.assertEqual(helpLine, f"# {key.help}", key.path)


class PresenceStoreTests(unittest.TestCase):
    """
    C{[presence] store}: memory, an SQLite file or a PostgreSQL URI.
    """

    def test_postgreSQL(self):
        """
        A C{postgresql://} or C{postgres://} URI is kept as written (the
        server is not contacted).
        """
        for uri in ("postgresql://gw@db.example:5433/xmppgw",
                    "postgres://gw@db.example/xmppgw"):
            result = parseConfig({"presence": {"store": uri}}, "gw.toml")
            self.assertEqual(result.presence.store, uri)

    def test_unknownHidesPassword(self):
        """
        Any other store is refused, naming the three forms; a password in
        the value is not repeated in the message.
        """
        errors = errorsOf(self, {"presence": {"store": "mysql://gw:s3cret@db/x"}})
        text = " ".join(message for _, message in errors)
        self.assertIn("postgresql://USER@HOST:PORT/DATABASE", text)
        self.assertNotIn("s3cret", text)
        errorsOf(self, {"presence": {"store": "postgresql://"}})
