# -*- test-case-name: tests.test_reload -*-
"""
Reloading the configuration on SIGHUP, without dropping connections or
in-flight messages.

L{Reloader.reload} is a plain synchronous function: it reads the file again,
and if the file is valid it applies the keys that can change at run time,
through I{appliers} registered for them. A file that does not load (syntax
error, bad value), or that an applier refuses, changes nothing: the old
configuration stays and the reason is logged. Keys that cannot change
without a restart (sockets, the component's name and secret...) are kept at
their running values, and each one that differs is logged.

Appliers are two-phase so that a reload is all or nothing:
C{prepare(config)} checks and builds everything (raising L{ValueError} with a
reason to refuse the reload), and returns a C{commit()} callable that only
swaps references and cannot fail. Commits run one after the other in the
reactor thread, between two events, so no message ever sees half of a new
configuration; a message already mapped keeps the mapping it got.

The gateway's own appliers (L{gatewayReloader}) swap the router's address
mapper (C{xmpp.gwmap}, C{xmpp.domain_separator}, C{xmpp.gateway_domain}) and
its settings (C{xmpp.outbound_proxy}, C{log.messages}). Access lists and
rate limits register theirs with L{Reloader.register}.

L{ReloadService} connects SIGHUP to L{Reloader.reload} while it runs.
twistd installs no SIGHUP handler of its own (it uses SIGUSR1 to reopen the
log file), with or without C{-n}.
"""

import dataclasses
import signal

from twisted.application import service
from twisted.logger import Logger

from xmppgw.addressing import AddressMapper
from xmppgw.config import SCHEMA, ConfigError, loadConfig
from xmppgw.router import targetForURI

__all__ = ["Reloader", "ReloadService", "changedKeys", "gatewayReloader"]

_log = Logger()


def _value(config, path):
    table, _, name = path.partition(".")
    return getattr(getattr(config, table), name)


def changedKeys(old, new):
    """
    The key paths whose values differ between two configurations, in schema
    order.

    @type old: L{xmppgw.config.Config}
    @type new: L{xmppgw.config.Config}
    @rtype: L{list} of L{str}
    """
    return [
        key.path for key in SCHEMA
        if _value(old, key.path) != _value(new, key.path)
    ]


def _merge(current, new, paths):
    """
    C{current} with the keys in C{paths} taken from C{new}.
    """
    changes = {}
    for path in paths:
        table, _, name = path.partition(".")
        changes.setdefault(table, {})[name] = _value(new, path)
    tables = {
        table: dataclasses.replace(getattr(current, table), **values)
        for table, values in changes.items()
    }
    return dataclasses.replace(current, **tables)


class Reloader:
    """
    Re-reads the configuration file and applies what may change at run
    time.

    @ivar path: the configuration file.
    @ivar current: the configuration in force (reloadable keys as last
        applied, the others as at start).
    @ivar onReload: callables called with C{True} (applied) or C{False}
        (refused) after each reload, e.g. a metrics recorder's
        C{configReloaded}.
    """

    def __init__(self, path, current):
        """
        @param path: the file to read on each reload.
        @param current: the L{xmppgw.config.Config} in force now.
        """
        self.path = path
        self.current = current
        self.onReload = []
        self._appliers = []

    @property
    def reloadable(self):
        """
        The key paths some applier handles.

        @rtype: L{frozenset}
        """
        paths = set()
        for keys, _ in self._appliers:
            paths |= keys
        return frozenset(paths)

    def register(self, paths, prepare):
        """
        Make keys reloadable.

        @param paths: the key paths (C{"xmpp.gwmap"}) this applier handles.
        @param prepare: C{prepare(config)} called with the configuration to
            apply when one of C{paths} changed; returns a C{commit()}
            callable, or raises L{ValueError} with a reason to refuse the
            whole reload.
        """
        unknown = set(paths) - {key.path for key in SCHEMA}
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}")
        self._appliers.append((frozenset(paths), prepare))

    def reload(self):
        """
        Read the file again and apply it; log what happened.

        @return: L{True} if the file was valid and applied (possibly with
            nothing to change), L{False} if the old configuration was kept.
        """
        ok = self._reload()
        for callback in list(self.onReload):
            try:
                callback(ok)
            except Exception:
                _log.failure("reload callback {callback!r} failed",
                             callback=callback)
        return ok

    def _reload(self):
        _log.info("Reloading the configuration from {path}", path=self.path)
        try:
            new = loadConfig(self.path)
        except ConfigError as e:
            _log.error(
                "Configuration reload refused, the running configuration is "
                "kept:\n{errors}", errors=str(e))
            return False
        changed = changedKeys(self.current, new)
        reloadable = self.reloadable
        restartOnly = [p for p in changed if p not in reloadable]
        toApply = [p for p in changed if p in reloadable]
        for path in restartOnly:
            _log.warn(
                "Configuration reload: {key} changed but needs a restart; "
                "keeping the running value", key=path)
        if not toApply:
            _log.info("Configuration reload: nothing to change")
            return True
        effective = _merge(self.current, new, toApply)
        commits = []
        wanted = set(toApply)
        for keys, prepare in self._appliers:
            if not keys & wanted:
                continue
            try:
                commits.append(prepare(effective))
            except ValueError as e:
                _log.error(
                    "Configuration reload refused, the running configuration "
                    "is kept: {reason}", reason=str(e))
                return False
        for commit in commits:
            commit()
        self.current = effective
        _log.info("Configuration reloaded: {keys}", keys=", ".join(toApply))
        return True


def gatewayReloader(config, router):
    """
    A L{Reloader} for a gateway built by L{xmppgw.tap.buildGateway}, with
    the router's appliers registered.

    @param config: the L{xmppgw.config.Config} the gateway runs with.
    @param router: its L{xmppgw.router.MessageRouter}.
    """
    reloader = Reloader(config.path, config)

    def prepareMapper(new):
        xmpp = new.xmpp
        mapper = AddressMapper(
            separator=xmpp.domain_separator,
            gatewayDomain=xmpp.gateway_domain,
            xmppDomain=xmpp.xmpp_domain,
            gwmap=xmpp.gwmap,
        )

        def commit():
            router.mapper = mapper

        return commit

    def prepareSettings(new):
        proxy = None
        if new.xmpp.outbound_proxy:
            try:
                proxy = targetForURI(new.xmpp.outbound_proxy)
            except ValueError as e:
                raise ValueError(f"xmpp.outbound_proxy: {e}")
        logMessages = new.log.messages

        def commit():
            router.settings = dataclasses.replace(
                router.settings, outboundProxy=proxy, logMessages=logMessages)

        return commit

    reloader.register(
        {"xmpp.gwmap", "xmpp.domain_separator", "xmpp.gateway_domain"},
        prepareMapper)
    reloader.register({"xmpp.outbound_proxy", "log.messages"},
                      prepareSettings)
    reloader.onReload.append(lambda ok: router.metrics.configReloaded(ok))
    return reloader


class ReloadService(service.Service):
    """
    While running, a signal (SIGHUP) calls L{Reloader.reload} in the reactor
    thread.
    """

    def __init__(self, reloader, reactor=None, signum=signal.SIGHUP):
        if reactor is None:
            from twisted.internet import reactor
        self.reloader = reloader
        self.reactor = reactor
        self.signum = signum
        self._previous = None
        self._installed = False

    def startService(self):
        service.Service.startService(self)
        try:
            self._previous = signal.signal(self.signum, self._onSignal)
        except ValueError as e:
            # Not the main thread (an embedding program): no reload signal.
            _log.warn("Cannot handle {signal} for reloads: {reason}",
                      signal=signal.Signals(self.signum).name, reason=str(e))
            return
        self._installed = True

    def _onSignal(self, signum, frame):
        self.reactor.callFromThread(self.reloader.reload)

    def stopService(self):
        service.Service.stopService(self)
        if self._installed:
            self._installed = False
            previous = self._previous
            if previous is None:
                previous = signal.SIG_DFL
            signal.signal(self.signum, previous)
