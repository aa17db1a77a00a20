# -*- test-case-name: tests.test_server_srv -*-
"""
Finding the server of an XMPP domain (RFC 6120 section 3.2).

L{S2SResolver.resolve} gives the ordered list of C{(host, port)} to try for a
domain:

 1. a domain pinned in the configuration (C{[xmpp.s2s_peers]}) gives exactly
    its C{host:port} and no DNS query is made;
 2. otherwise the C{_xmpp-server._tcp.DOMAIN} SRV records, ordered by
    priority and, within a priority, by RFC 2782 weighted random selection;
 3. a single SRV record whose target is C{"."} means the domain offers no
    XMPP service: L{ServiceNotAvailable};
 4. no SRV record (NXDOMAIN, an empty answer, or a failed query) falls back
    to the domain itself on port 5269; its A/AAAA records are looked up when
    the connection is made.

The DNS resolver is injected (any L{twisted.internet.interfaces.IResolver},
only C{lookupService} is used); without one a L{twisted.names.client}
resolver on the injected reactor is created when first needed.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import dns, error as dnserror

__all__ = [
    "DEFAULT_PORT",
    "S2SResolver",
    "ServiceNotAvailable",
    "orderSRV",
    "parsePeer",
]

#: The S2S port used when a domain has no SRV record.
DEFAULT_PORT = 5269

_log = Logger()


class ServiceNotAvailable(Exception):
    """
    The domain's SRV record says it has no XMPP server (target C{"."}).
    """


def parsePeer(text):
    """
    Parse C{"host:port"} (IPv6 in brackets; port required).

    @return: C{(host, port)}, the host without brackets.
    @raise ValueError: with a reason.
    """
    if not isinstance(text, str):
        raise ValueError(f"must be a string 'host:port', not {text!r}")
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            raise ValueError(f"{text!r} is not '[IPv6]:port'")
        host, port = text[1:end], text[end + 2:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(
                f"{text!r} is not 'host:port' (IPv6 addresses go in brackets)")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"port {port!r} in {text!r} is not from 1 to 65535")
    return host, int(port)


def orderSRV(records, random):
    """
    Order SRV records as RFC 2782 says: by priority, then weighted random
    selection within each priority.

    @param records: an iterable of C{(priority, weight, port, target)}.
    @param random: a callable returning a float in [0, 1).
    @return: a list of C{(target, port)}.
    """
    byPriority = {}
    for priority, weight, port, target in records:
        byPriority.setdefault(priority, []).append((weight, port, target))
    ordered = []
    for priority in sorted(byPriority):
        # Zero-weight records first, as RFC 2782 asks, so they get a small
        # chance of being chosen.
        group = sorted(byPriority[priority], key=lambda r: r[0] != 0)
        while group:
            total = sum(w for w, _, _ in group)
            if total == 0:
                chosen = 0
            else:
                point = random() * total
                running = 0
                chosen = len(group) - 1
                for i, (weight, _, _) in enumerate(group):
                    running += weight
                    if running > point:
                        chosen = i
                        break
            weight, port, target = group.pop(chosen)
            ordered.append((target, port))
    return ordered


class S2SResolver:
    """
    Where to connect for an XMPP domain.

    @ivar peers: C{{domain: (host, port)}} pinned by configuration.
    """

    def __init__(self, resolver=None, peers=None, reactor=None, random=None):
        """
        @param resolver: an L{IResolver} (C{lookupService}); L{None}: a
            L{twisted.names.client} resolver on C{reactor}, made on first use.
        @param peers: C{{domain: (host, port)}} overrides.
        @param reactor: the reactor for the default resolver.
        @param random: a callable returning a float in [0, 1), for the SRV
            weights; L{random.random} if L{None}.
        """
        self._resolver = resolver
        self._reactor = reactor
        self.peers = {d.lower(): tuple(v) for d, v in (peers or {}).items()}
        if random is None:
            import random as _random
            random = _random.random
        self.random = random

    def _getResolver(self):
        if self._resolver is None:
            from twisted.names import client
            self._resolver = client.createResolver(reactor=self._reactor)
        return self._resolver

    def resolve(self, domain):
        """
        The servers to try for C{domain}, best first.

        @return: a L{defer.Deferred} firing with a non-empty list of
            C{(host, port)}, or failing with L{ServiceNotAvailable}.
        """
        domain = domain.lower()
        if domain in self.peers:
            return defer.succeed([self.peers[domain]])
        name = f"_xmpp-server._tcp.{domain}"
        try:
            d = self._getResolver().lookupService(name)
        except Exception:
            d = defer.fail()
        d.addCallbacks(self._gotSRV, self._noSRV,
                       callbackArgs=(domain, name), errbackArgs=(domain, name))
        return d

    def _gotSRV(self, result, domain, name):
        answers = result[0]
        records = []
        for rr in answers:
            if rr.type != dns.SRV:
                continue
            payload = rr.payload
            target = payload.target.name
            if isinstance(target, bytes):
                target = target.decode("ascii", "replace")
            records.append((payload.priority, payload.weight, payload.port,
                            target.rstrip(".") or "."))
        if not records:
            return [(domain, DEFAULT_PORT)]
        if len(records) == 1 and records[0][3] == ".":
            raise ServiceNotAvailable(
                f"{domain} has no XMPP server (SRV {name} target '.')")
        records = [r for r in records if r[3] != "."]
        return orderSRV(records, self.random)

    def _noSRV(self, failure, domain, name):
        if not failure.check(dnserror.DNSNameError):
            _log.info("SRV lookup of {name} failed ({why}); using {domain}:"
                      "{port}", name=name, why=failure.getErrorMessage(),
                      domain=domain, port=DEFAULT_PORT)
        return [(domain, DEFAULT_PORT)]
