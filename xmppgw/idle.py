# -*- test-case-name: tests.test_idle -*-
"""
Idle timers for many connections, with one timer in the reactor.

A connection that has seen no traffic for a while is closed: each S2S
stream of server mode (L{xmppgw.xmpp.server}) and each SIP TCP/TLS
connection (L{xmppgw.sip.transport}). With a Twisted timer per
connection, moved on every message, the reactor's heap of timers holds
one per connection, and every push and pop of any timer (the gateway's
own included) costs the logarithm of the heap's size in Python
comparisons: a cost per message that grows with the number of peers
(docs/performance.rst, round 27). Here a touch only notes the time; one
timer for all the connections of an L{IdleWatch} comes due when the
connection silent longest may be idle, and looks again then.
"""

from collections import OrderedDict

from twisted.logger import Logger

__all__ = ["IdleWatch", "IdleTimer"]

_log = Logger()


class IdleWatch:
    """
    The idle timers of a set of connections on an injected clock: each
    L{IdleTimer}'s C{onIdle} is called C{timeout} seconds after its last
    L{IdleTimer.touch}, unless it was stopped first.

    A touch notes the time and moves the connection to the end of an
    ordered table, so the table's first connection is the one silent
    longest; the one timer, when due, calls every connection whose time
    is up and is set again for the first of the others.

    @ivar timeout: seconds of silence before a connection is idle; 0 or
        L{None}: never (touches are ignored). A change applies from the
        next check on.
    """

    def __init__(self, clock, timeout):
        self.clock = clock
        self.timeout = timeout
        #: {L{IdleTimer}: the time of its last touch}, the one touched
        #: longest ago first.
        self._last = OrderedDict()
        self._call = None

    def timer(self, onIdle):
        """
        A new connection's timer (not running until its first touch).

        @param onIdle: called without arguments when the connection is idle.
        @rtype: L{IdleTimer}
        """
        return IdleTimer(self, onIdle)

    def _touch(self, timer):
        if not self.timeout:
            return
        last = self._last
        last[timer] = self.clock.seconds()
        last.move_to_end(timer)
        if self._call is None:
            self._call = self.clock.callLater(self.timeout, self._check)

    def _stop(self, timer):
        last = self._last
        last.pop(timer, None)
        if not last and self._call is not None:
            # No connection left: no timer left in the reactor either.
            if self._call.active():
                self._call.cancel()
            self._call = None

    def clear(self):
        """
        Forget every connection and cancel the timer (the owner stops).
        """
        self._last.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _check(self):
        self._call = None
        last = self._last
        if not self.timeout:
            # Set to never since the timer was armed.
            last.clear()
            return
        while last:
            timer, touched = next(iter(last.items()))
            rest = touched + self.timeout - self.clock.seconds()
            if rest > 0:
                self._call = self.clock.callLater(rest, self._check)
                return
            del last[timer]
            try:
                timer.onIdle()
            except Exception:
                _log.failure("Closing an idle connection failed")

    def __len__(self):
        """
        The number of connections whose timer runs.
        """
        return len(self._last)


class IdleTimer:
    """
    One connection's idle timer, kept by an L{IdleWatch}.
    """

    __slots__ = ("watch", "onIdle")

    def __init__(self, watch, onIdle):
        self.watch = watch
        self.onIdle = onIdle

    def touch(self):
        """
        Traffic: the connection is idle C{timeout} seconds from now.
        """
        self.watch._touch(self)

    def stop(self):
        """
        The connection is closing or closed: never idle.
        """
        self.watch._stop(self)
