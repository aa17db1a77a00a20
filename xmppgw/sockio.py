# -*- test-case-name: tests.test_sockio -*-
"""
How the gateway reads its sockets: without a fresh 64 KB buffer per read.

Twisted reads a UDP datagram with C{socket.recvfrom(maxPacketSize)} and a
TCP connection with C{socket.recv(bufferSize)} (64 KB). Both calls make a
buffer of the full size for every read, the last one of each reactor turn
(which finds nothing and raises C{EAGAIN}) included, and keep the part
that was filled. On CPython that is one C{malloc} and C{realloc}; on PyPy
it is the full size taken from the young generation of its garbage
collector: 64 KB for a 500-byte MESSAGE, more than half of what the
gateway allocated per message end to end over UDP, and a minor collection
every few dozen MESSAGEs (docs/performance.rst, round 10).

  - L{listenUDP} listens with L{ReceiveIntoPort}, a Twisted UDP port that
    reads every datagram into one buffer of its own and copies out only the
    bytes received.
  - L{tuneStream} sets up a new TCP connection: Nagle's algorithm off
    (L{xmppgw.nodelay.noDelay}) and reads of at most L{STREAM_READ_SIZE}
    bytes (Twisted's C{bufferSize}).
"""

import socket

from twisted.internet import udp
from twisted.internet.posixbase import PosixReactorBase
from twisted.python import log

from xmppgw.nodelay import noDelay

__all__ = ["ReceiveIntoPort", "STREAM_READ_SIZE", "listenUDP", "tuneStream"]

#: The most bytes one read of a TCP connection takes (Twisted: 65,536).
#: A read made when more is waiting takes this much and the reactor reads
#: again on its next turn; a SIP message or stanza larger than this
#: arrives in several reads, as it may anyway.
STREAM_READ_SIZE = 8192


class ReceiveIntoPort(udp.Port):
    """
    A L{udp.Port} whose C{doRead} receives into one reusable buffer of
    C{maxPacketSize} bytes (C{recvfrom_into}) and hands the protocol a copy
    of the bytes received, instead of a new buffer of that size per read.
    Everything else, the errors and the C{maxThroughput} bound per turn
    included, is L{udp.Port}'s.
    """

    def __init__(self, *args, **kwargs):
        udp.Port.__init__(self, *args, **kwargs)
        self._receiveBuffer = memoryview(bytearray(self.maxPacketSize))

    def doRead(self):
        """
        Read datagrams until the socket has none or C{maxThroughput} bytes
        were read (as L{udp.Port.doRead}).
        """
        read = 0
        buffer = self._receiveBuffer
        receive = self.socket.recvfrom_into
        ipv6 = self.addressFamily == socket.AF_INET6
        while read < self.maxThroughput:
            try:
                size, addr = receive(buffer)
            except OSError as se:
                no = se.args[0]
                if no in udp._sockErrReadIgnore:
                    return
                if no in udp._sockErrReadRefuse:
                    if self._connectedAddr:
                        self.protocol.connectionRefused()
                    return
                raise
            read += size
            if ipv6:
                # Just (host, port), as udp.Port gives it.
                addr = addr[:2]
            try:
                self.protocol.datagramReceived(buffer[:size].tobytes(), addr)
            except BaseException:
                log.err()


def listenUDP(reactor, port, protocol, interface="", maxPacketSize=8192):
    """
    C{reactor.listenUDP(...)} with a L{ReceiveIntoPort} when C{reactor} is
    one of Twisted's POSIX reactors (the ones that make a L{udp.Port});
    any other reactor (a test's fake) is asked as usual.

    @return: the listening port, listening.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenUDP(port, protocol, interface=interface,
                                 maxPacketSize=maxPacketSize)
    listening = ReceiveIntoPort(port, protocol, interface, maxPacketSize,
                                reactor)
    listening.startListening()
    return listening


def tuneStream(transport):
    """
    Set up the transport of a new TCP connection (plain or under TLS): no
    Nagle (L{noDelay}) and reads of at most L{STREAM_READ_SIZE} bytes.

    @return: what L{noDelay} returns.
    """
    # Under TLS the protocol's transport wraps the TCP one (its
    # C{transport}, and forwards attribute reads to it): the one whose
    # class reads the socket (C{doRead}) is the one to set.
    reader = transport
    for _ in range(4):
        if reader is None or _reads(reader):
            break
        reader = getattr(reader, "transport", None)
    if reader is not None and _reads(reader):
        reader.bufferSize = STREAM_READ_SIZE
    return noDelay(transport)


def _reads(transport):
    return getattr(type(transport), "doRead", None) is not None
