"""
Tests for L{xmppgw.nodelay}.
"""

from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from xmppgw.nodelay import noDelay


class NoDelayTransport(StringTransport):
    """
    A L{StringTransport} with C{setTcpNoDelay}, recorded in C{noDelay}
    (L{None} until set); C{error} makes it fail.
    """

    noDelay = None
    error = None

    def setTcpNoDelay(self, enabled):
        if self.error is not None:
            raise self.error
        self.noDelay = enabled


class NoDelayTests(unittest.TestCase):
    def test_set(self):
        """
        A TCP transport gets C{TCP_NODELAY}.
        """
        transport = NoDelayTransport()
        self.assertTrue(noDelay(transport))
        self.assertIs(True, transport.noDelay)

    def test_notTCP(self):
        """
        A transport without C{setTcpNoDelay} is left alone.
        """
        self.assertFalse(noDelay(StringTransport()))

    def test_refused(self):
        """
        A socket that refuses (closed meanwhile) is not an error.
        """
        transport = NoDelayTransport()
        transport.error = OSError(9, "Bad file descriptor")
        self.assertFalse(noDelay(transport))
        self.assertIsNone(transport.noDelay)
