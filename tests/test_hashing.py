"""
Tests for L{xmppgw.hashing}.
"""

import hashlib
import random
import threading

from twisted.trial import unittest

from xmppgw import hashing
from xmppgw.hashing import blake2b128


def _reference(data):
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class Blake2b128Tests(unittest.TestCase):
    """
    L{blake2b128}: the path this interpreter uses.
    """

    def test_knownDigests(self):
        """
        The 128-bit BLAKE2b digests of the empty string and C{abc} (values
        fixed here: stanza ids must not change between releases).
        """
        self.assertEqual("cae66941d9efbd404e4d88758ea67670", blake2b128(b""))
        self.assertEqual("cf4ab791c62b8d2b2109c90275287816",
                         blake2b128(b"abc"))

    def test_sameAsHashlib(self):
        """
        For every length across several blocks (BLAKE2b's block is 128
        bytes) and random contents, the digest is L{hashlib}'s.
        """
        rng = random.Random(7)
        for length in range(0, 400):
            data = bytes(rng.randrange(256) for _ in range(length))
            self.assertEqual(_reference(data), blake2b128(data), length)

    def test_repeated(self):
        """
        The same data hashed again, between other data, gives the same
        digest (no state carried from one call to the next).
        """
        first = blake2b128(b"x" * 200)
        blake2b128(b"y" * 7)
        self.assertEqual(first, blake2b128(b"x" * 200))

    def test_threads(self):
        """
        Threads hashing at once each get their own data's digest.
        """
        inputs = [b"%d-" % (i,) * (i % 50) for i in range(300)]
        expected = [_reference(data) for data in inputs]
        results = {}

        def work(n):
            results[n] = [blake2b128(data) for data in inputs]

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual({n: expected for n in range(4)}, results)


class CFFIDigestTests(unittest.TestCase):
    """
    L{hashing._cffiDigest}, PyPy's path.
    """

    def setUp(self):
        if hashing._cffiDigest() is None:
            raise unittest.SkipTest("no BLAKE2b CFFI module (PyPy only)")

    def test_chosen(self):
        """
        On PyPy L{blake2b128} is the CFFI path.
        """
        self.assertNotIdentical(hashing._hashlibDigest, blake2b128)

    def test_busy(self):
        """
        A call that finds the buffers in use (another thread hashing) takes
        L{hashlib}'s path and gets the same digest.
        """
        lock = threading.Lock()
        digest = hashing._cffiDigest(lock)
        calls = []
        self.patch(hashing, "_hashlibDigest",
                   lambda data: calls.append(data) or _reference(data))
        lock.acquire()
        try:
            self.assertEqual(_reference(b"busy"), digest(b"busy"))
        finally:
            lock.release()
        self.assertEqual([b"busy"], calls)
        self.assertEqual(_reference(b"free"), digest(b"free"))
        self.assertEqual([b"busy"], calls)

    def test_checkedAtImport(self):
        """
        If the CFFI path's digest differs from L{hashlib}'s, it is not
        used.
        """
        self.patch(hashing, "_hashlibDigest", lambda data: "0" * 32)
        self.assertIdentical(None, hashing._cffiDigest())
