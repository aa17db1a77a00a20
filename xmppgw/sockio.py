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
    bytes received, and sends to a host it has already checked without
    checking it again.
  - L{tuneStream} sets up a new TCP connection: Nagle's algorithm off
    (L{xmppgw.nodelay.noDelay}) and reads of at most L{STREAM_READ_SIZE}
    bytes (Twisted's C{bufferSize}).
"""

import socket
from errno import ECONNREFUSED, EINTR, EMSGSIZE

from twisted.internet import error, udp
from twisted.internet.posixbase import PosixReactorBase
from twisted.python import log

from xmppgw.memo import keepBounded
from xmppgw.nodelay import noDelay

__all__ = ["CHECKED_HOSTS_MAX", "ReceiveIntoPort", "STREAM_READ_SIZE",
           "listenUDP", "tuneStream"]

#: The most hosts a L{ReceiveIntoPort} remembers as checked for sending
#: (the table is emptied when full: L{xmppgw.memo.keepBounded}). The
#: gateway sends to its outbound proxy and to the sources of the requests
#: it answers, so a few hosts in most deployments.
CHECKED_HOSTS_MAX = 1024

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
        #: The hosts L{udp.Port.write} accepted on this port (an IP
        #: address of the port's family): host -> C{True}.
        self._checkedHosts = {}

    def write(self, datagram, addr=None):
        """
        Send C{datagram} to C{addr}, as L{udp.Port.write} does.

        Twisted parses the host three times per datagram to check that it
        is an IP address of the port's family (about 1.6 microseconds a
        datagram on CPython, docs/performance.rst round 31). The first
        datagram to a host goes through those
        checks; once they passed, the host is remembered (at most
        L{CHECKED_HOSTS_MAX}) and later datagrams to it go straight to
        C{sendto}, with L{udp.Port.write}'s handling of the socket's
        errors. A connected port, and C{addr} L{None}, are
        L{udp.Port.write}'s.
        """
        if addr is None or self._connectedAddr:
            return udp.Port.write(self, datagram, addr)
        host = addr[0]
        if host not in self._checkedHosts:
            result = udp.Port.write(self, datagram, addr)
            keepBounded(self._checkedHosts, host, True, CHECKED_HOSTS_MAX)
            return result
        try:
            return self.socket.sendto(datagram, addr)
        except OSError as se:
            no = se.args[0]
            if no == EINTR:
                return self.write(datagram, addr)
            if no == EMSGSIZE:
                raise error.MessageLengthError("message too long")
            if no == ECONNREFUSED:
                # As udp.Port.write: on an unconnected port, not an error.
                return None
            raise

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
