# -*- test-case-name: tests.test_nodelay -*-
"""
Nagle's algorithm off on the gateway's TCP connections.

With Nagle on, a small write made while earlier bytes are unacknowledged
waits in the kernel for the peer's ACK, and a peer that has nothing to
send back delays that ACK (up to 40 ms on Linux): a SIP 2xx or a stanza
written between two of the peer's messages could wait that long. Twisted
already writes a connection's bytes once per reactor turn, so turning
Nagle off does not multiply the segments by the messages, only stops the
wait. Every TCP connection of the gateway sets it when it is made: the
XMPP component link, SIP over TCP and TLS (both directions) and the S2S
streams of server mode (docs/performance.rst, round 9).
"""

from twisted.logger import Logger

__all__ = ["noDelay"]

_log = Logger()


def noDelay(transport):
    """
    Set C{TCP_NODELAY} on C{transport}'s socket, if it has one.

    @return: L{True} if set; L{False} for a transport without
        C{setTcpNoDelay} (a test transport, a Unix socket) or one that
        refused (the failure is logged at debug level).
    """
    setNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setNoDelay is None:
        return False
    try:
        setNoDelay(True)
    except (OSError, AttributeError) as e:
        _log.debug("Cannot set TCP_NODELAY: {why}", why=e)
        return False
    return True
