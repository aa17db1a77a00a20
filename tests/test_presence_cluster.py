"""
Tests for L{xmppgw.presence} with several gateway instances sharing one
store (issue 9): two L{PresenceGateway} objects, each with its own clock,
fake SIP transaction layer and fake XMPP link, over one L{MemoryStore} or
one SQLite file (opened twice, as two processes would).
"""

from dataclasses import replace

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.test_presence import (
    ALICE, BOB, CONTACT, notify, ok, presence, subscribe)
from tests.test_router import GW, FakeLink, FakeServerTransaction, FakeTransactionLayer
from xmppgw.addressing import AddressMapper
from xmppgw.presence import PresenceGateway, PresenceSettings, defaultInstanceID, parsePIDF
from xmppgw.router import targetForURI
from xmppgw.store import (
    INBOUND, OUTBOUND, MemoryStore, SQLiteStore, Subscription, subscriptionKey)

#: Start of the shared clock: like wall-clock time, the same on every
#: instance.
T0 = 1000.0

#: How long before its expiry an outbound subscription is refreshed with
#: the settings of L{ClusterTestsMixin}: 2 x lease_interval (60) +
#: probe_timeout (5) + a SIP transaction (32).
REFRESH_MARGIN = 2 * 60 + 5 + 32


class Instance:
    """
    One gateway instance: its clock, SIP and XMPP fakes and presence
    gateway.
    """

    def __init__(self, name, store, settings):
        self.clock = Clock()
        self.clock.advance(T0)
        self.sip = FakeTransactionLayer()
        self.link = FakeLink()
        self.store = store
        mapper = AddressMapper(separator="*", gatewayDomain=GW, xmppDomain=GW,
                               gwmap={})
        self.gateway = PresenceGateway(
            self.clock, mapper, self.sip, self.link, store,
            replace(settings, instanceID=name), targetForURI)

    def receive(self, request):
        txn = FakeServerTransaction()
        self.gateway.sipRequestReceived(request, txn)
        return txn

    def stanzas(self):
        return [(s.getAttribute("from"), s.getAttribute("to"), s.getAttribute("type"))
                for s in self.link.sent]

    def methods(self):
        return [request.method for request, _, _ in self.sip.sent]


class SlowStore:
    """
    A store whose writes wait in a queue shared with other L{SlowStore}s
    until L{release}: two instances reading the same version before either
    writes, as with a networked store.
    """

    def __init__(self, store, queue):
        self._store = store
        self.queue = queue

    def __getattr__(self, name):
        return getattr(self._store, name)

    def put(self, record):
        d = defer.Deferred()
        self.queue.append((self._store, record, d))
        return d


def release(queue, rounds=10):
    """
    Run the queued writes in order, and those they queue in turn (bounded).
    """
    for _ in range(rounds):
        if not queue:
            return
        pending, queue[:] = list(queue), []
        for store, record, d in pending:
            store.put(record).chainDeferred(d)


class ClusterTestsMixin:
    """
    Two instances, C{a} and C{b}, on one store.
    """

    def makeStores(self):
        """
        @return: the store for each of the two instances.
        """
        raise NotImplementedError()

    def setUp(self):
        self.settings = PresenceSettings(
            xmppDomain=GW, contactURI=CONTACT, probeTimeout=5.0,
            retryInterval=60.0, ratePerSender=0, leaseInterval=60.0)
        storeA, storeB = self.makeStores()
        self.a = Instance("gw-a", storeA, self.settings)
        self.b = Instance("gw-b", storeB, self.settings)
        self.addCleanup(self.a.gateway.stop)
        self.addCleanup(self.b.gateway.stop)

    def advance(self, seconds, step=1.0):
        """
        Move both clocks on together, in steps.
        """
        while seconds > 0:
            delta = min(step, seconds)
            self.a.clock.advance(delta)
            self.b.clock.advance(delta)
            seconds -= delta

    def record(self, direction, watcher, presentity):
        result = []
        self.a.store.get(subscriptionKey(direction, watcher, presentity)).addCallback(
            result.append)
        return result[0]

    def outboundAt(self, instance):
        """
        An XMPP user subscribes to a SIP user through C{instance}; the
        SUBSCRIBE is answered 200.

        @return: the SUBSCRIBE.
        """
        instance.gateway.xmppPresenceReceived(presence(ALICE + "/home", BOB, "subscribe"))
        request, _, d = instance.sip.sent[-1]
        d.callback(ok(request, headers=[("Expires", "3600"),
                                        ("Contact", "<sip:bob@192.0.2.1:5070>")]))
        return request

    def inboundAt(self, instance):
        """
        A SIP watcher subscribes to an XMPP user through C{instance}; the
        first NOTIFY is answered.

        @return: our To tag.
        """
        txn = instance.receive(subscribe())
        request, _, d = instance.sip.sent[-1]
        d.callback(ok(request))
        return txn.responses[0].headers.get("To").split("tag=")[1]

    def test_startSkipsOthersRecords(self):
        """
        An instance starting on a store another live instance writes to
        arms no timer for that instance's subscriptions: only the owner
        probes and refreshes.
        """
        self.a.gateway.start()
        request = self.outboundAt(self.a)
        self.a.receive(notify(request))
        self.b.gateway.start()
        self.assertEqual(self.record(OUTBOUND, ALICE, BOB).owner, "gw-a")
        # The refresh: REFRESH_MARGIN before the expiry, after the probe.
        self.advance(3600 - REFRESH_MARGIN + 5)
        self.assertEqual(self.a.methods(), ["SUBSCRIBE", "SUBSCRIBE"])
        self.assertEqual(self.b.methods(), [])
        self.assertNotIn((BOB, ALICE, "probe"), self.b.stanzas())

    def test_onlyOneRefreshes(self):
        """
        A NOTIFY handled by the other instance moves the subscription (and
        its refresh timer) there; the first instance's timer stands down,
        so the subscription is refreshed once.
        """
        request = self.outboundAt(self.a)
        self.a.receive(notify(request))
        txn = self.b.receive(notify(request, cseq=2, state="active;expires=3000"))
        self.assertEqual([r.code for r in txn.responses], [200])
        self.assertEqual(self.record(OUTBOUND, ALICE, BOB).owner, "gw-b")
        self.advance(3000 - 60 + 5)
        self.assertEqual(self.a.methods(), ["SUBSCRIBE"])
        self.assertEqual(self.b.methods(), ["SUBSCRIBE"])
        refresh = self.b.sip.sent[-1][0]
        self.assertEqual(refresh.headers.get("Call-ID"), request.headers.get("Call-ID"))
        self.assertEqual(refresh.headers.get("CSeq"), "2 SUBSCRIBE")
        self.b.sip.sent[-1][2].callback(ok(refresh, headers=[("Expires", "3600")]))
        # The first instance's old timer (3540 s) stands down.
        self.advance(3600 - 2945 + 5, step=10)
        self.assertEqual(self.a.methods(), ["SUBSCRIBE"])
        self.assertEqual(self.b.methods(), ["SUBSCRIBE"])
        self.assertEqual(self.a.gateway.stats.get("lease.yielded"), 1)

    def test_expiresOnce(self):
        """
        An inbound subscription refreshed through the other instance, then
        left to expire, ends with one terminated NOTIFY from one instance.
        """
        toTag = self.inboundAt(self.a)
        refresh = self.b.receive(subscribe(uri=CONTACT, toTag=toTag, cseq=2,
                                           expires="600", branch="z9hG4bKr2"))
        self.assertEqual([r.code for r in refresh.responses], [200])
        self.b.sip.sent[-1][2].callback(ok(self.b.sip.sent[-1][0]))
        self.advance(3600 + 1, step=10)
        states = [r.headers.get("Subscription-State")
                  for inst in (self.a, self.b) for r, _, _ in inst.sip.sent]
        self.assertEqual(states.count("terminated;reason=timeout"), 1)
        self.assertEqual(self.b.sip.sent[-1][0].headers.get("Subscription-State"),
                         "terminated;reason=timeout")
        self.assertIsNone(self.record(INBOUND, BOB, ALICE))

    def test_takeOverAfterLease(self):
        """
        When the owner stops renewing (it died), the other instance takes
        the subscription over once the lease has ended (the refresh time
        plus C{leaseInterval}) and refreshes it in the same dialog, early
        enough for the refresh to be answered before the subscription
        expires at the notifier (a SIP transaction, 32 s).
        """
        self.a.gateway.start()
        self.b.gateway.start()
        request = self.outboundAt(self.a)
        self.a.receive(notify(request))
        self.a.gateway.stop()  # The instance dies: no more timers.
        leaseEnd = 3600 - REFRESH_MARGIN + 60
        self.assertEqual(self.record(OUTBOUND, ALICE, BOB).leaseUntil, T0 + leaseEnd)
        self.advance(leaseEnd - 1, step=10)
        self.assertEqual(self.b.methods(), [])
        self.assertNotIn((BOB, ALICE, "probe"), self.b.stanzas())
        # B's next scan (every 30 s) claims it.
        self.advance(30 + 1)
        self.assertEqual(self.b.gateway.stats.get("lease.takenOver"), 1)
        self.assertEqual(self.record(OUTBOUND, ALICE, BOB).owner, "gw-b")
        self.assertEqual(self.b.stanzas()[-1], (BOB, ALICE, "probe"))
        self.advance(5)
        [refresh] = [r for r, _, _ in self.b.sip.sent]
        self.assertEqual(refresh.method, "SUBSCRIBE")
        self.assertEqual(refresh.headers.get("Call-ID"), request.headers.get("Call-ID"))
        self.assertEqual(refresh.headers.get("CSeq"), "2 SUBSCRIBE")
        self.assertLessEqual(self.b.clock.seconds() + 32, T0 + 3600)

    def test_refreshRaceAfterRestart(self):
        """
        An owner restarting late, whose refresh timer fires as the other
        instance's scan claims the record, stands down after its probe:
        one refresh SUBSCRIBE is sent, by the new owner, with the next
        CSeq reserved in the store (not one from each with the same CSeq).
        """
        request = self.outboundAt(self.a)
        self.a.receive(notify(request))
        self.assertEqual(self.record(OUTBOUND, ALICE, BOB).leaseUntil,
                         T0 + 3600 - REFRESH_MARGIN + 60)
        self.a.gateway.stop()
        # A restarts at T0 + 3460 (its lease ends at T0 + 3503): the
        # refresh, half the remaining 140 s away, is due at T0 + 3530.
        self.advance(3460, step=10)
        self.a.gateway.start()
        # B starts before the lease ends: its scans run at T0 + 3530, ...
        self.advance(40, step=10)
        self.b.gateway.start()
        self.assertEqual(self.b.gateway.stats.get("lease.takenOver"), None)
        # At T0 + 3530 A's timer fires (A still owns the record: it probes)
        # and then B's scan claims the record and probes too.
        self.a.clock.advance(30)
        self.b.clock.advance(30)
        self.assertEqual(self.b.gateway.stats.get("lease.takenOver"), 1)
        self.assertEqual(self.a.stanzas()[-1], (BOB, ALICE, "probe"))
        self.assertEqual(self.b.stanzas()[-1], (BOB, ALICE, "probe"))
        self.advance(5)
        self.assertEqual(self.a.methods(), ["SUBSCRIBE"])
        [refresh] = [r for r, _, _ in self.b.sip.sent]
        self.assertEqual(refresh.headers.get("Call-ID"), request.headers.get("Call-ID"))
        self.assertEqual(refresh.headers.get("CSeq"), "2 SUBSCRIBE")
        stored = self.record(OUTBOUND, ALICE, BOB)
        self.assertEqual((stored.owner, stored.localCSeq), ("gw-b", 2))
        self.assertEqual(self.a.gateway.stats.get("lease.yielded"), 1)

    def test_takeOverAfterRefreshSent(self):
        """
        An owner that dies with its refresh SUBSCRIBE in flight has
        reserved that CSeq in the store: the instance taking over refreshes
        with the next one (not the same number again).
        """
        self.b.gateway.start()
        request = self.outboundAt(self.a)
        self.a.receive(notify(request))
        self.advance(3600 - REFRESH_MARGIN, step=10)
        self.assertEqual(self.a.stanzas()[-1], (BOB, ALICE, "probe"))
        self.advance(5)
        sent = self.a.sip.sent[-1][0]
        self.assertEqual(sent.headers.get("CSeq"), "2 SUBSCRIBE")
        self.a.gateway.stop()  # Dies before the answer is stored.
        self.assertEqual(self.record(OUTBOUND, ALICE, BOB).localCSeq, 2)
        self.assertEqual(self.b.methods(), [])
        # B's scan at T0 + 3510 claims it (the lease ended at T0 + 3508),
        # probes, and refreshes after probe_timeout.
        self.advance(3516 - (3600 - REFRESH_MARGIN + 5))
        self.assertEqual(self.b.gateway.stats.get("lease.takenOver"), 1)
        [refresh] = [r for r, _, _ in self.b.sip.sent]
        self.assertEqual(refresh.headers.get("Call-ID"), request.headers.get("Call-ID"))
        self.assertEqual(refresh.headers.get("CSeq"), "3 SUBSCRIBE")
        self.assertLessEqual(self.b.clock.seconds() + 32, T0 + 3600)
        self.b.sip.sent[-1][2].callback(ok(refresh, headers=[("Expires", "3600")]))
        stored = self.record(OUTBOUND, ALICE, BOB)
        self.assertEqual((stored.owner, stored.localCSeq, stored.expires),
                         ("gw-b", 3, self.b.clock.seconds() + 3600))

    def test_takeOverInboundExpiry(self):
        """
        An inbound subscription whose owner died is ended by the other
        instance (terminated NOTIFY, unavailable to the XMPP user) after
        its expiry and the lease.
        """
        self.b.gateway.start()
        self.inboundAt(self.a)
        self.a.gateway.stop()
        self.advance(3600 + 60 + 30 + 1, step=10)
        last = self.b.sip.sent[-1][0]
        self.assertEqual(last.headers.get("Subscription-State"),
                         "terminated;reason=timeout")
        self.assertEqual(last.headers.get("CSeq"), "2 NOTIFY")
        self.assertEqual(self.b.stanzas()[-1], (BOB, ALICE, "unavailable"))
        self.assertIsNone(self.record(INBOUND, BOB, ALICE))

    def test_restartKeepsOwnRecords(self):
        """
        An instance restarting with the same id re-arms its subscriptions
        at once, lease or not (as with a single instance).
        """
        request = self.outboundAt(self.a)
        self.a.receive(notify(request))
        self.a.gateway.stop()
        self.a.gateway.start()
        self.advance(3600 - 60)
        self.assertEqual(self.a.stanzas()[-1], (BOB, ALICE, "probe"))

    def test_notifyAtOtherInstance(self):
        """
        A NOTIFY for a SUBSCRIBE sent by one instance, landing on the
        other, is found by its Call-ID in the store and handled there (not
        481).
        """
        request = self.outboundAt(self.a)
        txn = self.b.receive(notify(request))
        self.assertEqual([r.code for r in txn.responses], [200])
        self.assertEqual(self.b.stanzas(), [(BOB, ALICE, "subscribed")])
        self.assertEqual(self.a.stanzas(), [])
        stored = self.record(OUTBOUND, ALICE, BOB)
        self.assertEqual((stored.state, stored.remoteTag, stored.remoteCSeq),
                         ("active", "bt9", 1))
        # A NOTIFY for a Call-ID nobody has is still 481.
        other = self.b.receive(notify(subscribe(callID="nobody")))
        self.assertEqual(other.responses[0].code, 481)

    def test_resubscribeAtOtherInstance(self):
        """
        A re-SUBSCRIBE and an unSUBSCRIBE (Request-URI: our Contact)
        landing on the instance that did not create the dialog are handled
        there; the NOTIFYs continue the dialog's CSeq.
        """
        toTag = self.inboundAt(self.a)
        refresh = self.b.receive(subscribe(uri=CONTACT, toTag=toTag, cseq=2,
                                           expires="600", branch="z9hG4bKr2"))
        self.assertEqual([r.code for r in refresh.responses], [200])
        self.assertEqual(refresh.responses[0].headers.get("Expires"), "600")
        notified = self.b.sip.sent[-1]
        self.assertEqual(notified[0].headers.get("CSeq"), "2 NOTIFY")
        self.assertEqual(notified[0].headers.get("Subscription-State"),
                         "pending;expires=600")
        notified[2].callback(ok(notified[0]))
        gone = self.a.receive(subscribe(uri=CONTACT, toTag=toTag, cseq=3,
                                        expires="0", branch="z9hG4bKr3"))
        self.assertEqual([r.code for r in gone.responses], [200])
        last = self.a.sip.sent[-1][0]
        self.assertEqual(last.headers.get("Subscription-State"),
                         "terminated;reason=timeout")
        self.assertEqual(last.headers.get("CSeq"), "3 NOTIFY")
        self.assertIsNone(self.record(INBOUND, BOB, ALICE))
        # Wrong tag: still 481.
        self.assertEqual(self.b.receive(subscribe(uri=CONTACT, toTag="nope", cseq=4))
                         .responses[0].code, 481)

    def test_presenceAtBothInstances(self):
        """
        Presence for one inbound subscription arriving at both instances
        gives NOTIFYs with increasing CSeqs and one merged state.
        """
        self.inboundAt(self.a)
        self.a.gateway.xmppPresenceReceived(presence(ALICE, BOB, "subscribed"))
        self.a.sip.sent[-1][2].callback(ok(self.a.sip.sent[-1][0]))
        self.b.gateway.xmppPresenceReceived(presence(ALICE + "/one", BOB))
        self.a.gateway.xmppPresenceReceived(presence(ALICE + "/two", BOB))
        cseqs = [r.headers.get("CSeq") for inst in (self.a, self.b)
                 for r, _, _ in inst.sip.sent]
        self.assertEqual(sorted(cseqs), ["1 NOTIFY", "2 NOTIFY", "3 NOTIFY", "4 NOTIFY"])
        self.assertEqual(sorted(parsePIDF(self.a.sip.sent[-1][0].body)), ["one", "two"])


class MemoryClusterTests(ClusterTestsMixin, unittest.TestCase):
    """
    Two instances on one L{MemoryStore}.
    """

    def makeStores(self):
        store = MemoryStore()
        return store, store


class SQLiteClusterTests(ClusterTestsMixin, unittest.TestCase):
    """
    Two instances on one SQLite file, each with its own connection.
    """

    def makeStores(self):
        path = self.mktemp() + ".sqlite"
        stores = SQLiteStore(path), SQLiteStore(path)
        for store in stores:
            self.addCleanup(store.close)
        return stores


class ConflictTests(unittest.TestCase):
    """
    Two instances writing one subscription at once: the loser of the
    compare-and-set re-reads and retries instead of failing.
    """

    def setUp(self):
        self.queue = []
        shared = MemoryStore()
        settings = PresenceSettings(xmppDomain=GW, contactURI=CONTACT,
                                    ratePerSender=0)
        self.a = Instance("gw-a", SlowStore(shared, self.queue), settings)
        self.b = Instance("gw-b", SlowStore(shared, self.queue), settings)
        self.shared = shared

    def stored(self, key):
        result = []
        self.shared.get(key).addCallback(result.append)
        return result[0]

    def test_presenceRace(self):
        """
        Presence of two resources handled at once by two instances: one
        write conflicts, is retried, and the stored state holds both.
        """
        txn = self.a.receive(subscribe())
        release(self.queue)
        self.assertEqual(txn.responses[0].code, 200)
        self.a.gateway.xmppPresenceReceived(presence(ALICE, BOB, "subscribed"))
        release(self.queue)
        self.a.gateway.xmppPresenceReceived(presence(ALICE + "/one", BOB))
        self.b.gateway.xmppPresenceReceived(presence(ALICE + "/two", BOB))
        self.assertEqual(len(self.queue), 2)
        release(self.queue)
        self.assertEqual(self.queue, [])
        record = self.stored(subscriptionKey(INBOUND, BOB, ALICE))
        self.assertEqual(sorted(record.presenceMap()), ["one", "two"])
        self.assertEqual(self.b.gateway.stats.get("store.conflictRetry"), 1)
        self.assertNotIn("store.conflict", self.b.gateway.stats)

    def test_subscribeRace(self):
        """
        A re-SUBSCRIBE handled while another instance updates the same
        subscription is answered 200 (not 500) and its expiry is stored.
        """
        txn = self.a.receive(subscribe())
        release(self.queue)
        toTag = txn.responses[0].headers.get("To").split("tag=")[1]
        self.a.gateway.xmppPresenceReceived(presence(ALICE + "/one", BOB))
        refresh = self.b.receive(subscribe(uri=CONTACT, toTag=toTag, cseq=2,
                                           expires="600", branch="z9hG4bKr2"))
        release(self.queue)
        self.assertEqual([r.code for r in refresh.responses], [200])
        record = self.stored(subscriptionKey(INBOUND, BOB, ALICE))
        self.assertEqual(record.expires, T0 + 600)
        self.assertEqual(record.remoteCSeq, 2)
        self.assertEqual(sorted(record.presenceMap()), ["one"])
        self.assertEqual(self.b.gateway.stats.get("store.conflictRetry"), 1)

    def test_newSubscribeRace(self):
        """
        Two initial SUBSCRIBEs from one watcher handled at once (a restarted
        UA's new dialog racing a presence update) both get 200; the later
        dialog wins.
        """
        self.a.receive(subscribe())
        release(self.queue)
        self.a.gateway.xmppPresenceReceived(presence(ALICE + "/one", BOB))
        second = self.b.receive(subscribe(callID="sub-2", branch="z9hG4bKn2",
                                          cseq=1))
        release(self.queue)
        self.assertEqual([r.code for r in second.responses], [200])
        record = self.stored(subscriptionKey(INBOUND, BOB, ALICE))
        self.assertEqual(record.callID, "sub-2")
        self.assertEqual(sorted(record.presenceMap()), ["one"])


class HeldStore:
    """
    A store whose C{get}, C{put}, C{delete} and C{all} calls wait in a
    queue while their name is in L{hold}, until L{releaseOne}: an instance
    between reading and writing while another instance acts.
    """

    def __init__(self, store):
        self._store = store
        self.hold = set()
        self.queue = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _call(self, name, *args):
        if name not in self.hold:
            return getattr(self._store, name)(*args)
        d = defer.Deferred()
        self.queue.append((name, args, d))
        return d

    def get(self, key):
        return self._call("get", key)

    def put(self, record):
        return self._call("put", record)

    def delete(self, key, version=None):
        return self._call("delete", key, version)

    def all(self):
        return self._call("all")

    def releaseOne(self, name):
        """
        Run the oldest held call of C{name}.
        """
        [index] = [i for i, (n, _, _) in enumerate(self.queue) if n == name][:1]
        name, args, d = self.queue.pop(index)
        getattr(self._store, name)(*args).chainDeferred(d)


class RaceTests(unittest.TestCase):
    """
    An instance's timer or scan that read the store before another
    instance (or L{PresenceGateway.stop}) acted.
    """

    def setUp(self):
        self.settings = PresenceSettings(
            xmppDomain=GW, contactURI=CONTACT, probeTimeout=5.0,
            retryInterval=60.0, ratePerSender=0, leaseInterval=60.0)
        self.shared = MemoryStore()
        self.held = HeldStore(self.shared)
        self.a = Instance("gw-a", self.held, self.settings)
        self.b = Instance("gw-b", self.shared, self.settings)
        self.addCleanup(self.a.gateway.stop)
        self.addCleanup(self.b.gateway.stop)
        self.key = subscriptionKey(INBOUND, BOB, ALICE)

    def stored(self, key=None):
        result = []
        self.shared.get(key or self.key).addCallback(result.append)
        return result[0]

    def advance(self, seconds):
        self.a.clock.advance(seconds)
        self.b.clock.advance(seconds)

    def inboundAtA(self):
        txn = self.a.receive(subscribe())
        request, _, d = self.a.sip.sent[-1]
        d.callback(ok(request))
        return txn.responses[0].headers.get("To").split("tag=")[1]

    def refreshAtB(self, toTag):
        txn = self.b.receive(subscribe(uri=CONTACT, toTag=toTag, cseq=2,
                                       expires="3600", branch="z9hG4bKr2"))
        self.assertEqual([r.code for r in txn.responses], [200])
        self.assertEqual(self.stored().owner, "gw-b")

    def assertNotExpired(self):
        record = self.stored()
        self.assertIsNotNone(record)
        self.assertEqual(record.expires, T0 + 3599 + 3600)
        self.assertEqual(
            [r.headers.get("Subscription-State") for r, _, _ in self.a.sip.sent],
            ["pending;expires=3600"])
        self.assertNotIn((BOB, ALICE, "unavailable"), self.a.stanzas())

    def test_expiryAfterRefresh(self):
        """
        An expiry timer that fired (and found its instance the owner) just
        before another instance handled a re-SUBSCRIBE leaves the refreshed
        subscription alone: no delete, no terminated NOTIFY.
        """
        toTag = self.inboundAtA()
        self.advance(3599)
        self.held.hold = {"get"}
        self.a.clock.advance(1)           # The expiry timer: _hold reads.
        self.held.releaseOne("get")       # Owner gw-a: go on and read again.
        self.refreshAtB(toTag)
        for _ in range(5):
            if not self.held.queue:
                break
            self.held.releaseOne("get")
        self.assertEqual(self.held.queue, [])
        self.assertNotExpired()

    def test_expiryDeleteAfterRefresh(self):
        """
        An expiry that read the expired record and is about to delete it
        when another instance refreshes the subscription deletes nothing
        (the delete is conditional on the version read).
        """
        toTag = self.inboundAtA()
        self.advance(3599)
        self.held.hold = {"delete"}
        self.a.clock.advance(1)
        [(name, args, _)] = self.held.queue
        self.assertEqual((name, args[0]), ("delete", self.key))
        self.refreshAtB(toTag)
        self.held.hold = set()
        self.held.releaseOne("delete")
        self.assertNotExpired()
        self.assertEqual(self.a.gateway.stats.get("store.conflictRetry"), 1)

    def test_unsubscribedAfterNewDialog(self):
        """
        C{unsubscribed} from the XMPP user handled while another instance
        replaces the watcher's dialog ends the dialog stored then: its
        NOTIFY goes to the new dialog, and the record is gone.
        """
        self.inboundAtA()
        self.held.hold = {"delete"}
        self.a.gateway.xmppPresenceReceived(presence(ALICE, BOB, "unsubscribed"))
        txn = self.b.receive(subscribe(callID="sub-2", branch="z9hG4bKn2"))
        self.assertEqual([r.code for r in txn.responses], [200])
        self.held.hold = set()
        self.held.releaseOne("delete")
        self.assertIsNone(self.stored())
        last = self.a.sip.sent[-1][0]
        self.assertEqual(last.headers.get("Subscription-State"),
                         "terminated;reason=rejected")
        self.assertEqual(last.headers.get("Call-ID"), "sub-2")

    def test_scanAfterStop(self):
        """
        A take-over scan whose claim is still waiting on the store when the
        gateway stops arms no timer.
        """
        self.b.receive(subscribe())
        self.b.sip.sent[-1][2].callback(ok(self.b.sip.sent[-1][0]))
        self.a.gateway.start()
        self.held.hold = {"put"}
        self.a.clock.advance(3600 + 60 + 30)
        self.assertEqual([name for name, _, _ in self.held.queue], ["put"])
        self.a.gateway.stop()
        self.held.hold = set()
        self.held.releaseOne("put")
        self.assertEqual(self.a.gateway._timers, {})
        self.a.clock.advance(3600)
        self.assertEqual(self.a.sip.sent, [])

    def test_startAfterStop(self):
        """
        A start whose C{all()} answers after the gateway stopped arms no
        timer and starts no scan.
        """
        self.b.receive(subscribe())
        self.b.sip.sent[-1][2].callback(ok(self.b.sip.sent[-1][0]))
        self.b.gateway.stop()  # B dies: its lease ends at T0 + 3660.
        self.advance(3600 + 60 + 1)
        self.held.hold = {"all"}
        self.a.gateway.start()
        self.a.gateway.stop()
        self.held.hold = set()
        self.held.releaseOne("all")
        self.assertEqual(self.a.gateway._timers, {})
        self.assertIsNone(self.a.gateway._scanner)
        self.assertEqual(self.stored().owner, "gw-b")

    def test_refreshReservationLost(self):
        """
        A probe answered (here: timed out) while another instance writes
        the record (a NOTIFY it handled) loses the compare-and-set that
        reserves the refresh's CSeq and stands down: no refresh from it;
        the new owner refreshes later with that CSeq.
        """
        self.a.gateway.xmppPresenceReceived(presence(ALICE + "/home", BOB, "subscribe"))
        request, _, d = self.a.sip.sent[-1]
        d.callback(ok(request, headers=[("Expires", "3600")]))
        self.a.receive(notify(request))
        self.advance(3600 - (2 * 60 + 5 + 32))
        self.assertEqual(self.a.stanzas()[-1], (BOB, ALICE, "probe"))
        self.held.hold = {"put"}
        self.advance(5)                    # The probe times out.
        self.assertEqual([name for name, _, _ in self.held.queue], ["put"])
        txn = self.b.receive(notify(request, cseq=2, state="active;expires=3000"))
        self.assertEqual([r.code for r in txn.responses], [200])
        self.held.hold = set()
        self.held.releaseOne("put")
        self.assertEqual(self.a.methods(), ["SUBSCRIBE"])
        self.assertEqual(self.a.gateway.stats.get("lease.lost"), 1)
        key = subscriptionKey(OUTBOUND, ALICE, BOB)
        stored = self.stored(key)
        self.assertEqual((stored.owner, stored.localCSeq), ("gw-b", 1))
        self.advance(3000 - (2 * 60 + 5 + 32))
        self.assertEqual(self.b.stanzas()[-1], (BOB, ALICE, "probe"))
        self.advance(5)
        self.assertEqual(self.a.methods(), ["SUBSCRIBE"])
        [refresh] = [r for r, _, _ in self.b.sip.sent]
        self.assertEqual(refresh.headers.get("CSeq"), "2 SUBSCRIBE")

    def test_lapseChecksDialog(self):
        """
        The lapse timer of an away user's subscription leaves alone a new
        dialog another instance started meanwhile (it stays pending, not
        dormant).
        """
        key = subscriptionKey(OUTBOUND, ALICE, BOB)
        self.a.gateway.xmppPresenceReceived(presence(ALICE + "/home", BOB, "subscribe"))
        request, _, d = self.a.sip.sent[-1]
        d.callback(ok(request, headers=[("Expires", "3600")]))
        self.a.receive(notify(request))
        for _ in range(3599):  # Until the refresh probe.
            self.advance(1)
            if self.a.stanzas()[-1] == (BOB, ALICE, "probe"):
                break
        self.a.gateway.xmppPresenceReceived(presence(ALICE, BOB, "unavailable"))
        self.assertEqual(self.a.gateway.stats.get("sip.lapse"), 1)
        self.advance(T0 + 3599 - self.a.clock.seconds())
        self.held.hold = {"get"}
        self.a.clock.advance(1)            # The lapse timer: _hold reads.
        self.held.releaseOne("get")        # Owner gw-a: _lapse reads.
        # Meanwhile the notifier ends the dialog at B, which re-subscribes.
        self.b.clock.advance(1)
        self.b.receive(notify(request, state="terminated;reason=deactivated", cseq=2))
        self.b.clock.advance(0)
        self.assertEqual(self.b.methods(), ["SUBSCRIBE"])
        newCallID = self.b.sip.sent[-1][0].headers.get("Call-ID")
        self.assertNotEqual(newCallID, request.headers.get("Call-ID"))
        self.held.hold = set()
        self.held.releaseOne("get")
        record = self.stored(key)
        self.assertEqual((record.callID, record.state), (newCallID, "pending"))


class ScanTests(unittest.TestCase):
    """
    The take-over scan of many expired leases.
    """

    def test_manyInOneRun(self):
        """
        One scan takes over all of a dead instance's expired leases, page
        after page, not one page per scan interval.
        """
        settings = PresenceSettings(xmppDomain=GW, contactURI=CONTACT,
                                    ratePerSender=0, leaseInterval=60.0)
        store = MemoryStore()
        a = Instance("gw-a", store, settings)
        for i in range(1000):
            store.put(Subscription(
                INBOUND, f"w{i}*sip.example@{GW}", ALICE, state="active",
                expires=T0 + 100, callID=f"c{i}", localTag="t", remoteTag="r",
                localURI="sip:a@x", remoteURI="sip:b@y",
                remoteTarget="sip:b@192.0.2.1", owner="gw-dead",
                leaseUntil=T0 + 160))
        a.gateway.start()
        self.addCleanup(a.gateway.stop)
        a.clock.advance(150)
        self.assertNotIn("lease.takenOver", a.gateway.stats)
        a.clock.advance(30)  # The first scan after the lease ended.
        self.assertEqual(a.gateway.stats.get("lease.takenOver"), 1000)


class InstanceIDTests(unittest.TestCase):
    """
    Tests for L{defaultInstanceID}.
    """

    def test_default(self):
        """
        The default id names the host and the configuration file, and is
        the same each time.
        """
        import socket
        value = defaultInstanceID("etc/xmppgw.toml")
        self.assertTrue(value.startswith(socket.gethostname() + ":/"))
        self.assertTrue(value.endswith("/etc/xmppgw.toml"))
        self.assertEqual(value, defaultInstanceID("etc/xmppgw.toml"))
        self.assertNotEqual(value, defaultInstanceID("etc/other.toml"))
