"""
Tests for L{xmppgw.xmpp.dialback}: XEP-0185 keys.
"""

from twisted.trial import unittest
from wokkel.server import generateKey as wokkelKey

from xmppgw.xmpp.dialback import generateKey, keysEqual


class GenerateKeyTests(unittest.TestCase):
    """
    L{generateKey} gives the XEP-0185 key.
    """

    def test_xepVectorOne(self):
        """
        XEP-0185 example: secret s3cr3tf0rd14lb4ck, montague.example ->
        capulet.example, stream D60000229F.
        """
        self.assertEqual(
            generateKey("s3cr3tf0rd14lb4ck", "montague.example",
                        "capulet.example", "D60000229F"),
            "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3")

    def test_xepVectorTwo(self):
        """
        XEP-0185 example: secret d14lb4ck43v3r, capulet.example ->
        montague.example, stream 417GAF25.
        """
        self.assertEqual(
            generateKey("d14lb4ck43v3r", "capulet.example",
                        "montague.example", "417GAF25"),
            "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d")

    def test_sameAsWokkelForASCII(self):
        """
        For ASCII input the key equals wokkel's, so mixed deployments agree.
        """
        self.assertEqual(
            generateKey("secret", "a.example", "b.example", "id1"),
            wokkelKey("secret", "a.example", "b.example", "id1"))

    def test_nonASCIISecret(self):
        """
        A non-ASCII secret works (UTF-8), where wokkel's raises.
        """
        key = generateKey("sécret", "a.example", "b.example", "id1")
        self.assertEqual(len(key), 64)
        self.assertNotEqual(key, generateKey("secret", "a.example", "b.example", "id1"))

    def test_bytesRefused(self):
        """
        A bytes secret is refused with a TypeError naming it (in wokkel it
        hangs the stream).
        """
        e = self.assertRaises(TypeError, generateKey, b"secret", "a", "b", "c")
        self.assertIn("secret", str(e))

    def test_keysEqual(self):
        """
        L{keysEqual} compares keys, ignoring surrounding white space.
        """
        self.assertTrue(keysEqual("abc", " abc\n"))
        self.assertFalse(keysEqual("abc", "abd"))
