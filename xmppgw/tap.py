# -*- test-case-name: tests.test_tap -*-
"""
twistd integration: C{twistd [-n] xmppgw --config FILE}.

The configuration is loaded and validated in L{Options.postOptions}, which
twistd runs before it daemonizes, so every error reaches the terminal
(naming the file and every bad key) and twistd exits non-zero; so does a
compiled build that no longer matches its source (L{xmppgw.compiled}).
L{makeService} accepts the parsed options (or any mapping with a C{config}
key holding a L{xmppgw.config.Config}) and only wires.
"""

import os

from twisted.application import service
from twisted.python import usage
from wokkel.generic import FallbackHandler

from xmppgw import compiled
from xmppgw.gctune import FrozenStartupService
from xmppgw.addressing import AddressMapper
from xmppgw.config import ConfigError, loadConfig
from xmppgw.lifecycle import GatewayService
from xmppgw.policy import Policy
from xmppgw.logs import JSONLoggingService, TextLoggingService
from xmppgw.metrics import buildOperations
from xmppgw.reload import ReloadService, gatewayReloader
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
        try:
            self["compiled"] = compiled.checkCurrent()
        except compiled.CompiledError as e:
            raise usage.UsageError(str(e))


def buildGateway(config, reactor):
    """
    Build the gateway's parts from a configuration.

    @param config: a L{xmppgw.config.Config}.
    @param reactor: the reactor (TCP, UDP, SSL, time).
    @return: C{(MultiService, MessageRouter)}.
    """
    xmppConfig = config.xmpp
    sipConfig = config.sip
    top = GatewayService(reactor)
    policy = Policy.fromConfig(config, reactor)

    sip = SIPTransport(
        [(l.proto, l.host, l.port) for l in sipConfig.listen],
        maxMessageSize=max(sipConfig.max_message_size, 65535),
        tlsCertificate=sipConfig.tls_certificate,
        tlsPrivateKey=sipConfig.tls_private_key,
        reactor=reactor,
        logTraffic=config.log.traffic_sip,
        idleTimeout=sipConfig.connection_idle_timeout,
        maxConnections=sipConfig.connections_limit,
        allowFrom=policy,
        tlsCA=sipConfig.tls_ca,
        udpReceiveBufferSize=sipConfig.udp_receive_buffer_size,
    )
    sip.setName("sip")
    t1 = sipConfig.t1_interval
    transactions = TransactionLayer(reactor, sip, t1=t1, t2=max(4.0, t1))
    sip.receiver = transactions

    if xmppConfig.backend == "server":
        link = buildS2S(config, reactor)
    else:
        link = ComponentLink(
            xmppConfig.xmpp_host,
            xmppConfig.xmpp_port,
            xmppConfig.xmpp_domain,
            xmppConfig.xmpp_password,
            reactor=reactor,
            initialDelay=xmppConfig.reconnect_initial_interval,
            maxDelay=xmppConfig.reconnect_max_interval,
            logTraffic=config.log.traffic_xmpp,
            confirmTimeout=xmppConfig.confirm_timeout,
            confirmDelivery=xmppConfig.confirm_delivery,
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
        optionsFollowLink=sipConfig.options_follow_link,
    )
    router = MessageRouter(reactor, mapper, transactions, link, settings)
    router.policy = policy
    top.router = router
    link.maxStanzaSize = config.policy.stanza_max_size
    if xmppConfig.backend == "server":
        # Verified incoming S2S stanzas take the same path as the component
        # link's (GatewayHandler): messages to the router, presence to the
        # presence gateway when there is one.
        link.messageReceived = router.xmppMessageReceived
        link.stanzaReceived = lambda stanza: _s2sStanza(router, stanza)
    else:
        GatewayHandler(router, xmppConfig.xmpp_domain).setHandlerParent(link)
        FallbackHandler().setHandlerParent(link)
    _wirePresence(config, router, reactor, top)

    _TransactionService(transactions).setServiceParent(top)
    sip.setServiceParent(top)
    link.setServiceParent(top)

    # Operations: metrics and health (off without [metrics] listen), SIGHUP
    # reload. Exposed on the top service for tests and other wiring.
    recorder, readiness, metricsService = buildOperations(
        config, router, sip, link, reactor)
    if xmppConfig.backend == "server":
        recorder.watchS2S(link.streamCounts)
    if metricsService is not None:
        metricsService.setServiceParent(top)
    reloader = gatewayReloader(config, router)

    def preparePolicy(new):
        def commit():
            policy.reconfigure(new)
            link.maxStanzaSize = new.policy.stanza_max_size  # next connection

        return commit

    reloader.register(POLICY_KEYS, preparePolicy)
    reloadService = ReloadService(reloader, reactor=reactor)
    reloadService.setName("reload")
    reloadService.setServiceParent(top)
    top.recorder, top.readiness, top.reloader = recorder, readiness, reloader
    return top, router


def buildS2S(config, reactor):
    """
    Server mode: the L{xmppgw.xmpp.server.S2SService} for C{[xmpp]}.
    """
    from xmppgw.xmpp.server import S2SService, TLSSettings

    x = config.xmpp
    return S2SService(
        x.xmpp_domain,
        secret=x.dialback_secret,
        reactor=reactor,
        peers=x.s2s_peers or {},
        listenHost=x.xmpp_host,
        listenPort=x.xmpp_port,
        tls=TLSSettings(
            certificate=x.tls_certificate, privateKey=x.tls_private_key,
            ca=x.tls_ca, required=x.tls_required, verify=x.tls_verify),
        idleTimeout=x.idle_timeout,
        queueLimit=x.s2s_queue_limit,
        queueTTL=x.s2s_queue_ttl,
        logTraffic=config.log.traffic_xmpp,
    )


def _s2sStanza(router, stanza):
    """
    A verified incoming S2S stanza other than C{<message/>}: presence goes
    to the presence gateway (if enabled); an IQ request is answered
    C{<service-unavailable/>}; anything else is dropped.
    """
    if stanza.name == "presence":
        if router.presence is not None:
            router.presence.xmppPresenceReceived(stanza)
        return
    if stanza.name == "iq" and stanza.getAttribute("type") in ("get", "set"):
        from xmppgw import errors

        router.xmpp.send(errors.buildStanzaError(
            stanza, "service-unavailable", "cancel", None))


#: The configuration keys L{Policy.reconfigure} applies on a reload.
POLICY_KEYS = frozenset({
    "sip.allow_from", "xmpp.gwmap", "xmpp.gateway_domain",
    "policy.sip_domains", "policy.xmpp_domains", "policy.rate_per_source",
    "policy.rate_per_source_burst", "policy.rate_per_sender",
    "policy.rate_per_sender_burst", "policy.stanza_max_size",
})


def _wirePresence(config, router, reactor, top):
    """
    Table C{[presence]}: the chat-state and receipt extensions, and (when
    enabled) the presence gateway with its store, started and stopped with
    the gateway. Exposed as C{top.presence} (or L{None}).
    """
    from xmppgw.chatstates import ChatStates
    from xmppgw.presence import PresenceGateway, PresenceSettings, defaultInstanceID
    from xmppgw.receipts import Receipts
    from xmppgw.store import openStore

    pc = config.presence
    router.extensions.append(ChatStates(
        reactor, toSIP=pc.iscomposing_to_sip, toXMPP=pc.iscomposing_to_xmpp,
        suppressInterval=pc.iscomposing_suppress_interval))
    if pc.receipts:
        router.extensions.append(Receipts(
            reactor, maxPending=pc.receipts_pending_limit,
            pendingTTL=pc.receipts_pending_ttl))
    top.presence = None
    if not pc.enabled:
        return
    settings = PresenceSettings(
        xmppDomain=config.xmpp.xmpp_domain,
        contactURI=pc.contact,
        outboundProxy=router.settings.outboundProxy,
        expiresInterval=pc.expires_interval,
        minExpiresInterval=pc.min_expires_interval,
        subscriptionsMax=pc.subscriptions_max,
        subscriptionsPerUserMax=pc.subscriptions_per_user_max,
        probeTimeout=pc.probe_timeout,
        retryInterval=pc.retry_interval,
        ratePerSender=pc.rate_per_sender,
        ratePerSenderBurst=pc.rate_per_sender_burst,
        instanceID=pc.instance_id or defaultInstanceID(config.path),
        leaseInterval=pc.lease_interval,
    )
    presence = PresenceGateway(
        reactor, router.mapper, router.sip, router.xmpp,
        openStore(pc.store), settings, targetForURI)
    router.presence = presence
    top.presence = presence
    _PresenceService(presence).setServiceParent(top)


class _PresenceService(service.Service):
    """
    Loads stored subscriptions (re-arming their timers) on start; cancels
    the timers and closes the store on stop.
    """

    def __init__(self, presence):
        self.presence = presence

    def startService(self):
        service.Service.startService(self)
        self.presence.start()

    def stopService(self):
        service.Service.stopService(self)
        self.presence.stop()
        return self.presence.store.close()


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
    config = options["gateway"]
    top, router = buildGateway(config, reactor)
    if options.get("compiled") is not None:
        compiled.ReportService(options["compiled"]).setServiceParent(top)
    # Started last: keeps start-up objects out of the collector's walks.
    FrozenStartupService().setServiceParent(top)
    wrapper = (JSONLoggingService if config.log.format == "json"
               else TextLoggingService)
    return wrapper(top, getattr(options, "parent", None),
                   rotateSize=config.log.rotate_size,
                   rotatedFilesMax=config.log.rotated_files_max,
                   flushInterval=config.log.flush_interval, clock=reactor)
