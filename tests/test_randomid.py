"""
Tests for L{xmppgw.randomid}.
"""

import os

from twisted.trial import unittest

from xmppgw import randomid
from xmppgw.randomid import randomHex


class RandomHexTests(unittest.TestCase):
    """
    L{randomHex}.
    """

    def test_shape(self):
        """
        C{randomHex(n)} is C{2 n} lower-case hex digits.
        """
        for n in (1, 4, 6, 12, 16, 256):
            value = randomHex(n)
            self.assertEqual(2 * n, len(value))
            self.assertEqual(value, bytes.fromhex(value).hex())

    def test_unique(self):
        """
        Identifiers drawn across several refills of the buffer never repeat.
        """
        values = [randomHex(6) for _ in range(5000)]
        self.assertEqual(len(values), len(set(values)))

    def test_bytesFromOSRandom(self):
        """
        The bytes are those of L{os.urandom}, consumed in order and never
        handed out twice; the buffer is refilled when it runs short.
        """
        reads = []

        def fakeURandom(n):
            data = bytes(range(256)) * (n // 256) + bytes(n % 256)
            reads.append(n)
            return data

        self.patch(randomid, "_pool", "")
        self.patch(randomid, "_position", 0)
        self.patch(os, "urandom", fakeURandom)
        self.assertEqual("00010203", randomHex(4))
        self.assertEqual("0405", randomHex(2))
        self.assertEqual([randomid._POOL_SIZE], reads)
        # One byte (two digits) left: not enough for two.
        self.patch(randomid, "_position", 2 * randomid._POOL_SIZE - 2)
        self.assertEqual("0001", randomHex(2))
        self.assertEqual(2, len(reads))

    def test_forgetAfterFork(self):
        """
        The fork hook drops the buffer, so a child draws fresh bytes.
        """
        randomHex(4)
        randomid._forget()
        self.assertEqual("", randomid._pool)
        self.assertEqual(0, randomid._position)

    def test_badSize(self):
        """
        Sizes outside 1-256 are refused.
        """
        self.assertRaises(ValueError, randomHex, 0)
        self.assertRaises(ValueError, randomHex, 257)

    def test_lockReleased(self):
        """
        The lock is released after every call, a refill and a failing
        C{os.urandom} included.
        """
        def failing(n):
            raise OSError("no entropy")

        randomHex(4)
        self.assertFalse(randomid._lock.locked())
        self.patch(randomid, "_pool", "")
        self.patch(randomid, "_position", 0)
        self.patch(os, "urandom", failing)
        self.assertRaises(OSError, randomHex, 4)
        self.assertFalse(randomid._lock.locked())
        self.assertEqual(("", 0), (randomid._pool, randomid._position))

    def test_wholeBytes(self):
        """
        Each identifier takes whole bytes of the pool: the position moves
        by two digits per byte and stays even.
        """
        self.patch(randomid, "_pool", "")
        self.patch(randomid, "_position", 0)
        for n in (1, 3, 8, 22):
            before = randomid._position
            value = randomHex(n)
            self.assertEqual(randomid._pool[before:before + 2 * n], value)
            self.assertEqual(before + 2 * n, randomid._position)
