# -*- test-case-name: tests.test_tap -*-
"""
twistd integration: C{twistd [-n] xmppgw --config FILE}.

The configuration is loaded and validated in L{Options.postOptions}, which
twistd runs before it daemonizes, so every error reaches the terminal
(naming the file and every bad key) and twistd exits non-zero.
L{makeService} accepts the parsed options (or any mapping with a C{config}
key holding a L{xmppgw.config.Config}) and only wires.
"""

import os

from twisted.application import service
from twisted.python import usage
from wokkel.generic import FallbackHandler

from xmppgw.addressing import AddressMapper
from xmppgw.config import ConfigError, loadConfig
from xmppgw.router import GatewayHandler, MessageRouter, RouterSettings, targetForURI
from xmppgw.sip.transaction import TransactionLayer
from xmppgw.sip.transport import SIPTransport
from xmppgw.xmpp.component import ComponentLink


class Options(usage.Options):
    """
    Command-line options of the xmppgw twistd plugin.
    """

    synopsis = "--config FILE"
    longdesc = (
        "Run the SIP <-> XMPP instant-messaging gateway. All settings come "
        "from the TOML file given with --config (see etc/xmppgw.toml)."
    )
    optParameters = [
        ["config", "c", None, "Path of the TOML configuration file (required)."],
    ]

    def postOptions(self):
        """
        Require C{--config}, make it absolute (twistd may change directory
        later) and load it, reporting every error at once.
        """
        if not self["config"]:
            raise usage.UsageError("--config is required")
        path = os.path.abspath(self["config"])
        self["config"] = path
        try:
            self["gateway"] = loadConfig(path)
        except ConfigError as e:
            raise usage.UsageError(f"invalid configuration:\n{e}")


def buildGateway(config, reactor):
    """
    Build the gateway's parts from a configuration.

    @param config: a L{xmppgw.config.Config}.
    @param reactor: the reactor (TCP, UDP, SSL, time).
    @return: C{(MultiService, MessageRouter)}.
    """
    xmppConfig = config.xmpp
    sipConfig = config.sip
    top = service.MultiService()

    sip = SIPTransport(
        [(l.proto, l.host, l.port) for l in sipConfig.listen],
        maxMessageSize=max(sipConfig.max_message_size, 65535),
        tlsCertificate=sipConfig.tls_certificate,
        tlsPrivateKey=sipConfig.tls_private_key,
        reactor=reactor,
        logTraffic=config.log.traffic_sip,
        idleTimeout=sipConfig.connection_idle_timeout,
        maxConnections=sipConfig.connections_limit,
    )
    sip.setName("sip")
    t1 = sipConfig.t1_interval
    transactions = TransactionLayer(reactor, sip, t1=t1, t2=max(4.0, t1))
    sip.receiver = transactions

    link = ComponentLink(
        xmppConfig.xmpp_host,
        xmppConfig.xmpp_port,
        xmppConfig.xmpp_domain,
        xmppConfig.xmpp_password,
        reactor=reactor,
        initialDelay=xmppConfig.reconnect_initial_interval,
        maxDelay=xmppConfig.reconnect_max_interval,
        logTraffic=config.log.traffic_xmpp,
    )
    link.setName("xmpp")

    mapper = AddressMapper(
        separator=xmppConfig.domain_separator,
        gatewayDomain=xmppConfig.gateway_domain,
        xmppDomain=xmppConfig.xmpp_domain,
        gwmap=xmppConfig.gwmap,
    )
    proxy = None
    if xmppConfig.outbound_proxy:
        proxy = targetForURI(xmppConfig.outbound_proxy)
    settings = RouterSettings(
        xmppDomain=xmppConfig.xmpp_domain,
        successCode=sipConfig.success_code,
        maxMessageSize=sipConfig.max_message_size,
        holdTimeout=sipConfig.hold_timeout,
        holdLimit=sipConfig.hold_limit,
        queueLimit=sipConfig.queue_limit,
        outboundProxy=proxy,
        logMessages=config.log.messages,
    )
    router = MessageRouter(reactor, mapper, transactions, link, settings)
    GatewayHandler(router, xmppConfig.xmpp_domain).setHandlerParent(link)
    FallbackHandler().setHandlerParent(link)

    _TransactionService(transactions).setServiceParent(top)
    sip.setServiceParent(top)
    link.setServiceParent(top)
    return top, router


class _TransactionService(service.Service):
    """
    Cancels the transaction layer's timers when the gateway stops.
    """

    def __init__(self, transactions):
        self.transactions = transactions

    def stopService(self):
        service.Service.stopService(self)
        self.transactions.stop()


def makeService(options, reactor=None):
    """
    Build the gateway service.

    @param options: L{Options} after parsing, or any mapping with a
        C{gateway} key holding a loaded L{xmppgw.config.Config}.
    @param reactor: the reactor; the global one if L{None}.
    @rtype: L{service.MultiService}
    """
    if reactor is None:
        from twisted.internet import reactor
    top, router = buildGateway(options["gateway"], reactor)
    return top
