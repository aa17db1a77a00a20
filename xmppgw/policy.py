# -*- test-case-name: tests.test_policy -*-
"""
Access and abuse control: who may send through the gateway, and how fast.

Pure state on an injected clock, no I/O. Three kinds of control:

  - L{AccessList}: the source networks (CIDR) allowed to send SIP requests
    (C{[sip] allow_from}). The transport consults it before parsing when it
    can (TCP/TLS connections are refused at accept time) and answers 403 to
    a parseable UDP request from elsewhere.
  - L{SenderPolicy}: which sender domains may be relayed. A SIP MESSAGE is
    relayed only when its From host is a SIP domain the gateway serves; an
    XMPP message only when its C{from} domain is allowed.
  - L{RateLimiter}: token buckets keyed by source address or by sender, with
    O(1) work per message and a bounded number of buckets (least recently
    used first out; buckets idle long enough to be full are dropped, since a
    full bucket is the same as no bucket).

L{Policy} bundles them, built from the configuration by L{Policy.fromConfig}
and replaced in place by L{Policy.reconfigure} (SIGHUP reload): the limiters
keep their buckets when only the rates change.
"""

import ipaddress
import math
from collections import OrderedDict

__all__ = [
    "AccessList",
    "DEFAULT_ALLOW_FROM",
    "Policy",
    "RateLimiter",
    "SenderPolicy",
    "normalizeAddress",
]

#: C{[sip] allow_from} by default: only this host. Safe on a public network;
#: an operator lists the SIP proxy (or proxies) in front of the gateway.
DEFAULT_ALLOW_FROM = ("127.0.0.0/8", "::1/128")

#: Most buckets a limiter keeps by default (per source or per sender).
DEFAULT_MAX_KEYS = 10000


def normalizeAddress(host):
    """
    Parse a source address as the transports give it.

    @param host: an IPv4 or IPv6 address as text (IPv6 brackets, a zone
        C{%eth0} and IPv4-mapped IPv6 C{::ffff:a.b.c.d} are accepted).
    @return: an L{ipaddress.IPv4Address} or L{ipaddress.IPv6Address}, or
        L{None} when C{host} is not an IP address.
    """
    if not isinstance(host, str):
        return None
    text = host.strip().strip("[]")
    text = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class AccessList:
    """
    A list of source networks.

    @ivar networks: the parsed networks, a tuple of L{ipaddress} networks.
    @ivar cacheLimit: the most source addresses whose verdict is remembered.
    """

    cacheLimit = 4096

    def __init__(self, networks):
        """
        @param networks: CIDR texts (C{"192.0.2.0/24"}, C{"2001:db8::/32"};
            a bare address is a /32 or /128). Host bits are allowed and
            ignored (C{"192.0.2.7/24"} is C{192.0.2.0/24}).
        @raise ValueError: naming the first entry that is not a network.
        """
        parsed = []
        for entry in networks:
            try:
                parsed.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError as e:
                raise ValueError(f"{entry!r} is not a network: {e}") from None
        self.networks = tuple(parsed)
        self._v4 = tuple(n for n in parsed if n.version == 4)
        self._v6 = tuple(n for n in parsed if n.version == 6)
        # host text -> verdict: parsing an address costs more than the rest
        # of the check, and a gateway sees few distinct sources (its
        # proxies) per second; bounded, emptied when full.
        self._verdicts = {}

    def __repr__(self):
        return "AccessList([%s])" % ", ".join(repr(str(n)) for n in self.networks)

    def allows(self, host):
        """
        Whether a source address lies in one of the networks.

        @param host: the source address as text; anything that is not an IP
            address is refused.
        @rtype: L{bool}
        """
        if isinstance(host, str):
            verdict = self._verdicts.get(host)
            if verdict is not None:
                return verdict
        address = normalizeAddress(host)
        if address is None:
            verdict = False
        else:
            candidates = self._v4 if address.version == 4 else self._v6
            verdict = any(address in network for network in candidates)
        if isinstance(host, str):
            if len(self._verdicts) >= self.cacheLimit:
                self._verdicts.clear()
            self._verdicts[host] = verdict
        return verdict


class SenderPolicy:
    """
    Which sender domains may be relayed.

    @ivar sipDomains: the SIP domains whose users may send into XMPP (From
        hosts); empty means any host except C{refusedSIPDomains}.
    @ivar xmppDomains: the XMPP domains whose users may send into SIP;
        empty means any.
    @ivar refusedSIPDomains: From hosts always refused (the gateway's own
        SIP domain: a SIP request claiming to come from there impersonates
        an XMPP user).
    """

    def __init__(self, sipDomains=(), xmppDomains=(), refusedSIPDomains=()):
        self.sipDomains = frozenset(_lower(d) for d in sipDomains)
        self.xmppDomains = frozenset(_lower(d) for d in xmppDomains)
        self.refusedSIPDomains = frozenset(_lower(d) for d in refusedSIPDomains)

    def checkSIPSender(self, host):
        """
        May a SIP user at C{host} send into XMPP?

        @return: L{None} when allowed, else the reason for a 403.
        """
        host = _lower(host)
        if not host:
            return "Sender has no host"
        if host in self.refusedSIPDomains:
            return f"Sender domain {host} is the gateway's own"
        if self.sipDomains and host not in self.sipDomains:
            return f"Sender domain {host} not served by this gateway"
        return None

    def checkXMPPSender(self, domain):
        """
        May an XMPP user at C{domain} send into SIP?

        @return: L{None} when allowed, else the text of a C{<forbidden/>}.
        """
        domain = _lower(domain)
        if not domain:
            return "Sender has no domain"
        if self.xmppDomains and domain not in self.xmppDomains:
            return f"Sender domain {domain} is not allowed to use this gateway"
        return None


def _lower(text):
    return (text or "").strip().strip("[]").rstrip(".").lower()


class RateLimiter:
    """
    Token buckets by key: each key may do C{burst} actions at once and
    C{rate} per second in the long run.

    Each bucket is C{[tokens, time of last update]}. L{allow} refills the
    bucket for the time elapsed, then takes one token: O(1). Buckets live in
    an L{OrderedDict} in least-recently-used order; at most C{maxKeys} are
    kept (the least recently used goes first), and buckets at the old end
    that have been idle for C{burst / rate} seconds (full again, so equal to
    a fresh bucket) are dropped as new ones arrive (at most two per call),
    so memory follows the number of recently active keys.

    @ivar rate: tokens per second; C{0} turns the limiter off.
    @ivar burst: bucket size (at least 1).
    @ivar evicted: how many buckets were dropped while still not full
        (because of C{maxKeys}); a nonzero value means the bound is too low
        for the traffic.
    """

    def __init__(self, clock, rate, burst=None, maxKeys=DEFAULT_MAX_KEYS):
        """
        @param clock: an L{IReactorTime} provider (only C{seconds()} is used).
        @param rate: tokens per second (C{0}: unlimited).
        @param burst: bucket size; default C{max(1, rate)}.
        @param maxKeys: most buckets kept.
        @raise ValueError: for a negative or non-finite rate, a burst below 1
            or C{maxKeys} below 1.
        """
        self.clock = clock
        self.maxKeys = maxKeys
        self._buckets = OrderedDict()
        self.evicted = 0
        self.configure(rate, burst, maxKeys)

    def configure(self, rate, burst=None, maxKeys=None):
        """
        Change the rate, burst and bound; existing buckets are kept (clipped
        to the new burst).
        """
        if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"rate must be a number >= 0, not {rate!r}")
        if burst is None:
            burst = max(1.0, float(rate))
        if not isinstance(burst, (int, float)) or not math.isfinite(burst) or burst < 1:
            raise ValueError(f"burst must be a number >= 1, not {burst!r}")
        if maxKeys is not None:
            if maxKeys < 1:
                raise ValueError(f"maxKeys must be >= 1, not {maxKeys!r}")
            self.maxKeys = maxKeys
        self.rate = float(rate)
        self.burst = float(burst)
        for bucket in self._buckets.values():
            bucket[0] = min(bucket[0], self.burst)
        while len(self._buckets) > self.maxKeys:
            self._buckets.popitem(last=False)

    def __len__(self):
        return len(self._buckets)

    @property
    def enabled(self):
        """
        L{True} unless the rate is 0 (unlimited).
        """
        return self.rate > 0

    def allow(self, key):
        """
        Take one token for C{key}.

        @return: L{None} when allowed; otherwise the number of seconds until
            a token is available (for a C{Retry-After}).
        """
        if not self.rate:
            return None
        now = self.clock.seconds()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._expire(now)
            bucket = buckets[key] = [self.burst, now]
        else:
            buckets.move_to_end(key)
            elapsed = now - bucket[1]
            if elapsed > 0:
                bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return None
        return (1.0 - bucket[0]) / self.rate

    def _expire(self, now):
        """
        Make room for one new bucket: drop up to two full (idle) buckets
        from the old end, and the oldest one if the bound is still reached.
        """
        buckets = self._buckets
        refill = self.burst / self.rate
        for _ in range(2):
            if not buckets:
                break
            key, bucket = next(iter(buckets.items()))
            if now - bucket[1] >= refill - bucket[0] / self.rate:
                del buckets[key]
            else:
                break
        if len(buckets) >= self.maxKeys:
            buckets.popitem(last=False)
            self.evicted += 1


class Policy:
    """
    The gateway's access and abuse controls, as one reloadable object.

    @ivar allowFrom: the L{AccessList} of SIP sources (L{None}: any).
    @ivar senders: the L{SenderPolicy}.
    @ivar perSource: L{RateLimiter} keyed by SIP source address.
    @ivar perSender: L{RateLimiter} keyed by sender (SIP From URI as
        C{"sip:user@host"}, or bare JID).
    @ivar stanzaMaxSize: largest XMPP stanza accepted from the server, bytes.
    """

    def __init__(
        self,
        clock,
        allowFrom=DEFAULT_ALLOW_FROM,
        sipDomains=(),
        xmppDomains=(),
        refusedSIPDomains=(),
        ratePerSource=0,
        ratePerSourceBurst=None,
        ratePerSender=0,
        ratePerSenderBurst=None,
        stanzaMaxSize=65536,
        maxKeys=DEFAULT_MAX_KEYS,
    ):
        """
        @param clock: an L{IReactorTime} provider.
        @param allowFrom: CIDR texts, or L{None} for any source.
        """
        self.clock = clock
        self.allowFrom = None if allowFrom is None else AccessList(allowFrom)
        self.senders = SenderPolicy(sipDomains, xmppDomains, refusedSIPDomains)
        self.perSource = RateLimiter(clock, ratePerSource, ratePerSourceBurst, maxKeys)
        self.perSender = RateLimiter(clock, ratePerSender, ratePerSenderBurst, maxKeys)
        self.stanzaMaxSize = stanzaMaxSize

    @classmethod
    def fromConfig(cls, config, clock):
        """
        Build the policy of a L{xmppgw.config.Config}.

        The served SIP domains are C{[policy] sip_domains} plus the C{gwmap}
        keys; when both are empty, any From host is accepted except the
        gateway's own C{gateway_domain} (the separator scheme serves users
        of any SIP domain; who may send at all is then decided by
        C{allow_from}, i.e. by the SIP proxy in front of the gateway).
        """
        policy = cls(clock)
        policy.reconfigure(config)
        return policy

    def reconfigure(self, config):
        """
        Take the settings of a new L{xmppgw.config.Config} (a reload). Rate
        limiters keep their buckets.
        """
        sipConfig, xmppConfig, policyConfig = config.sip, config.xmpp, config.policy
        self.allowFrom = AccessList(sipConfig.allow_from)
        sipDomains = set(policyConfig.sip_domains) | set(xmppConfig.gwmap)
        refused = set()
        if xmppConfig.gateway_domain not in sipDomains:
            refused.add(xmppConfig.gateway_domain)
        self.senders = SenderPolicy(sipDomains, policyConfig.xmpp_domains, refused)
        self.perSource.configure(
            policyConfig.rate_per_source, policyConfig.rate_per_source_burst
        )
        self.perSender.configure(
            policyConfig.rate_per_sender, policyConfig.rate_per_sender_burst
        )
        self.stanzaMaxSize = policyConfig.stanza_max_size

    def sourceAllowed(self, host):
        """
        Whether SIP requests from the address C{host} are accepted.
        """
        return self.allowFrom is None or self.allowFrom.allows(host)

    #: The interface L{xmppgw.sip.transport.SIPTransport} calls.
    allows = sourceAllowed
