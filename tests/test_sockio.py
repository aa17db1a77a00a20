"""
Tests for L{xmppgw.sockio}.
"""

import errno
import socket

from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from xmppgw import sockio
from xmppgw.sockio import (
    STREAM_READ_SIZE, ReceiveIntoPort, listenUDP, tuneStream)


class FakeDatagramSocket:
    """
    What L{ReceiveIntoPort.doRead} uses of a UDP socket: C{recvfrom_into}
    returns the queued datagrams, then raises the queued error (C{EAGAIN}
    by default).
    """

    def __init__(self, datagrams, error=errno.EAGAIN):
        self.datagrams = list(datagrams)
        self.error = error
        self.calls = 0

    def recvfrom_into(self, buffer):
        self.calls += 1
        if not self.datagrams:
            raise OSError(self.error, "no datagram")
        data, addr = self.datagrams.pop(0)
        buffer[:len(data)] = data
        return len(data), addr


class Recorder(DatagramProtocol):
    def __init__(self, fail=False):
        self.received = []
        self.refused = 0
        self.fail = fail

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))
        if self.fail:
            raise RuntimeError("protocol bug")

    def connectionRefused(self):
        self.refused += 1


def makePort(protocol, datagrams, family=socket.AF_INET, **kwargs):
    """
    A L{ReceiveIntoPort} that never listened, on a L{FakeDatagramSocket}.
    """
    port = ReceiveIntoPort(0, protocol, "127.0.0.1", 64,
                           reactor=MemoryReactorClock())
    port.socket = FakeDatagramSocket(datagrams, **kwargs)
    port.addressFamily = family
    return port


class ReceiveIntoPortTests(unittest.TestCase):
    def test_datagrams(self):
        """
        Every waiting datagram reaches the protocol as its own bytes (not a
        view of the reused buffer), with its address; C{EAGAIN} ends the
        read.
        """
        protocol = Recorder()
        port = makePort(protocol, [(b"first datagram", ("127.0.0.1", 5080)),
                                   (b"2nd", ("127.0.0.2", 5081))])
        port.doRead()
        self.assertEqual([(b"first datagram", ("127.0.0.1", 5080)),
                          (b"2nd", ("127.0.0.2", 5081))], protocol.received)
        self.assertIs(bytes, type(protocol.received[0][0]))
        self.assertEqual(3, port.socket.calls)

    def test_empty(self):
        """
        An empty datagram is an empty C{bytes}.
        """
        protocol = Recorder()
        makePort(protocol, [(b"", ("127.0.0.1", 5080))]).doRead()
        self.assertEqual([(b"", ("127.0.0.1", 5080))], protocol.received)

    def test_maxThroughput(self):
        """
        One call reads until C{maxThroughput} bytes were read; the rest
        wait for the next.
        """
        protocol = Recorder()
        port = makePort(protocol, [(b"x" * 10, ("127.0.0.1", 1))] * 5)
        port.maxThroughput = 25
        port.doRead()
        self.assertEqual(3, len(protocol.received))
        port.doRead()
        self.assertEqual(5, len(protocol.received))

    def test_ipv6Address(self):
        """
        An IPv6 source is given as C{(host, port)}, without flow and scope.
        """
        protocol = Recorder()
        port = makePort(protocol, [(b"x", ("::1", 5080, 0, 0))],
                        family=socket.AF_INET6)
        port.doRead()
        self.assertEqual([(b"x", ("::1", 5080))], protocol.received)

    def test_refused(self):
        """
        C{ECONNREFUSED} on a connected port tells the protocol; on an
        unconnected one it only ends the read.
        """
        protocol = Recorder()
        port = makePort(protocol, [], error=errno.ECONNREFUSED)
        port.doRead()
        self.assertEqual(0, protocol.refused)
        port._connectedAddr = ("127.0.0.1", 5080)
        port.doRead()
        self.assertEqual(1, protocol.refused)

    def test_otherError(self):
        """
        Any other socket error is raised, as from L{udp.Port.doRead}.
        """
        port = makePort(Recorder(), [], error=errno.EBADF)
        self.assertRaises(OSError, port.doRead)

    def test_protocolError(self):
        """
        An exception from the protocol is logged and the read goes on.
        """
        protocol = Recorder(fail=True)
        makePort(protocol, [(b"a", ("127.0.0.1", 1)),
                            (b"b", ("127.0.0.1", 1))]).doRead()
        self.assertEqual(2, len(protocol.received))
        self.assertEqual(2, len(self.flushLoggedErrors(RuntimeError)))

    def test_bufferSize(self):
        """
        The buffer holds C{maxPacketSize} bytes: a datagram that size comes
        through whole.
        """
        protocol = Recorder()
        port = makePort(protocol, [(b"y" * 64, ("127.0.0.1", 1))])
        port.doRead()
        self.assertEqual(b"y" * 64, protocol.received[0][0])


class ListenUDPTests(unittest.TestCase):
    def test_otherReactor(self):
        """
        A reactor that is not one of Twisted's POSIX reactors (a test fake)
        is asked with C{listenUDP}.
        """
        calls = []

        class FakeReactor:
            def listenUDP(self, *args, **kwargs):
                calls.append((args, kwargs))
                return "the port"

        protocol = Recorder()
        self.assertEqual("the port", listenUDP(
            FakeReactor(), 5060, protocol, interface="127.0.0.1",
            maxPacketSize=65536))
        self.assertEqual(
            [((5060, protocol),
              {"interface": "127.0.0.1", "maxPacketSize": 65536})], calls)

    def test_posixReactor(self):
        """
        On a POSIX reactor the port is a L{ReceiveIntoPort}, listening, with
        the address and size asked for.
        """
        started = []
        self.patch(ReceiveIntoPort, "startListening",
                   lambda port: started.append(port))
        self.patch(sockio, "PosixReactorBase", MemoryReactorClock)
        reactor = MemoryReactorClock()
        port = listenUDP(reactor, 5060, Recorder(), interface="127.0.0.1",
                         maxPacketSize=65536)
        self.assertEqual([port], started)
        self.assertIsInstance(port, ReceiveIntoPort)
        self.assertEqual((5060, "127.0.0.1", 65536, reactor),
                         (port.port, port.interface, port.maxPacketSize,
                          port.reactor))
        self.assertEqual(65536, len(port._receiveBuffer))


class ReadingTransport(StringTransport):
    """
    A transport whose class reads its socket (as a TCP connection's does),
    with C{setTcpNoDelay}.
    """

    noDelay = None

    def doRead(self):
        pass

    def setTcpNoDelay(self, enabled):
        self.noDelay = enabled


class Wrapper:
    """
    A transport over another one (TLS over TCP), forwarding attribute reads
    as Twisted's protocol wrappers do.
    """

    def __init__(self, transport):
        self.transport = transport

    def __getattr__(self, name):
        return getattr(self.transport, name)


class TuneStreamTests(unittest.TestCase):
    def test_tcp(self):
        """
        A TCP transport reads at most L{STREAM_READ_SIZE} bytes at once and
        has Nagle off.
        """
        transport = ReadingTransport()
        self.assertTrue(tuneStream(transport))
        self.assertEqual(STREAM_READ_SIZE, transport.bufferSize)
        self.assertIs(True, transport.noDelay)

    def test_wrapped(self):
        """
        Under a wrapper the TCP transport beneath gets the read size, not
        the wrapper.
        """
        tcp = ReadingTransport()
        wrapper = Wrapper(tcp)
        self.assertTrue(tuneStream(wrapper))
        self.assertEqual(STREAM_READ_SIZE, tcp.bufferSize)
        self.assertNotIn("bufferSize", vars(wrapper))
        self.assertIs(True, tcp.noDelay)

    def test_notTCP(self):
        """
        A transport that does not read a socket is left alone.
        """
        transport = StringTransport()
        self.assertFalse(tuneStream(transport))
        self.assertNotIn("bufferSize", vars(transport))
