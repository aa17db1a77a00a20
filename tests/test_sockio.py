"""
Tests for L{xmppgw.sockio}.
"""

import errno
import socket

from twisted.internet import abstract, error
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
        #: What C{sendto} was given; C{sendError}, if set, is raised
        #: (once) instead.
        self.sent = []
        self.sendError = None

    def sendto(self, data, addr):
        if self.sendError is not None:
            code, self.sendError = self.sendError, None
            raise OSError(code, "send failed")
        self.sent.append((data, addr))
        return len(data)

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


class WriteTests(unittest.TestCase):
    """
    L{ReceiveIntoPort.write}: Twisted's checks of the host once per host,
    then straight to C{sendto}.
    """

    def setUp(self):
        self.checks = []
        original = abstract.isIPAddress

        def isIPAddress(host, *args, **kwargs):
            self.checks.append(host)
            return original(host, *args, **kwargs)

        self.patch(abstract, "isIPAddress", isIPAddress)

    def test_checkedOnce(self):
        """
        The first datagram to a host is checked as L{udp.Port.write}
        checks it; the next ones to that host are sent without the checks.
        Both reach C{sendto} with the address as given.
        """
        port = makePort(Recorder(), [])
        port.write(b"one", ("127.0.0.1", 5060))
        checked = len(self.checks)
        self.assertTrue(checked)
        port.write(b"two", ("127.0.0.1", 5061))
        self.assertEqual(checked, len(self.checks))
        port.write(b"three", ("127.0.0.2", 5060))
        self.assertGreater(len(self.checks), checked)
        self.assertEqual([(b"one", ("127.0.0.1", 5060)),
                          (b"two", ("127.0.0.1", 5061)),
                          (b"three", ("127.0.0.2", 5060))],
                         port.socket.sent)

    def test_hostnameRefused(self):
        """
        A host name, or an address of the other family, is refused every
        time, as by L{udp.Port.write}, and nothing is sent.
        """
        port = makePort(Recorder(), [])
        for _ in range(2):
            self.assertRaises(error.InvalidAddressError, port.write,
                              b"x", ("sip.example.com", 5060))
            self.assertRaises(error.InvalidAddressError, port.write,
                              b"x", ("::1", 5060))
        self.assertEqual([], port.socket.sent)
        port6 = makePort(Recorder(), [], family=socket.AF_INET6)
        port6.write(b"x", ("::1", 5060))
        self.assertRaises(error.InvalidAddressError, port6.write,
                          b"x", ("127.0.0.1", 5060))
        self.assertEqual([(b"x", ("::1", 5060))], port6.socket.sent)

    def test_errorsOfCheckedHost(self):
        """
        To a checked host, the socket's errors are handled as by
        L{udp.Port.write}: C{ECONNREFUSED} is not an error, C{EMSGSIZE} is
        L{error.MessageLengthError}, any other is raised.
        """
        port = makePort(Recorder(), [])
        port.write(b"x", ("127.0.0.1", 5060))
        port.socket.sendError = errno.ECONNREFUSED
        self.assertIsNone(port.write(b"x", ("127.0.0.1", 5060)))
        port.socket.sendError = errno.EMSGSIZE
        self.assertRaises(error.MessageLengthError, port.write,
                          b"x", ("127.0.0.1", 5060))
        port.socket.sendError = errno.EBADF
        exc = self.assertRaises(OSError, port.write,
                                b"x", ("127.0.0.1", 5060))
        self.assertEqual(errno.EBADF, exc.args[0])
        port.socket.sendError = errno.EINTR
        port.write(b"again", ("127.0.0.1", 5060))
        self.assertEqual((b"again", ("127.0.0.1", 5060)),
                         port.socket.sent[-1])

    def test_failedFirstSendNotKept(self):
        """
        A host whose first datagram failed in C{sendto} is checked again
        next time (nothing is remembered from a write that raised).
        """
        port = makePort(Recorder(), [])
        port.socket.sendError = errno.EBADF
        self.assertRaises(OSError, port.write, b"x", ("127.0.0.1", 5060))
        self.assertEqual({}, port._checkedHosts)
        checked = len(self.checks)
        port.write(b"x", ("127.0.0.1", 5060))
        self.assertGreater(len(self.checks), checked)

    def test_bounded(self):
        """
        At most L{sockio.CHECKED_HOSTS_MAX} hosts are remembered.
        """
        self.patch(sockio, "CHECKED_HOSTS_MAX", 3)
        port = makePort(Recorder(), [])
        for i in range(10):
            port.write(b"x", ("127.0.0.%d" % (i,), 5060))
            self.assertLessEqual(len(port._checkedHosts), 3)
        self.assertEqual(10, len(port.socket.sent))

    def test_connected(self):
        """
        A connected port writes as L{udp.Port.write} does (C{send}).
        """
        port = makePort(Recorder(), [])
        port._connectedAddr = ("127.0.0.1", 5060)
        sent = []
        port.socket.send = sent.append
        port.write(b"x")
        self.assertEqual([b"x"], sent)
        self.assertEqual([], port.socket.sent)


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
