"""
Tests for L{xmppgw.localpeers.PrivateProsody}'s configuration (the servers
themselves run in the interop tier).
"""

from twisted.trial import unittest

from xmppgw.localpeers import PrivateProsody


class ConfigMixin:
    def lines(self, **kwargs):
        """
        The configuration lines of a L{PrivateProsody} made with C{kwargs}.
        """
        prosody = PrivateProsody(self.mktemp(), c2sPort=15222,
                                 componentPort=15347, **kwargs)
        return prosody.configText().splitlines()

    def assertGlobal(self, line, lines):
        """
        C{line} is in C{lines}, before the first VirtualHost (Prosody reads
        its global options there only).
        """
        host = [i for i, each in enumerate(lines)
                if each.startswith("VirtualHost")][0]
        self.assertLess(lines.index(line), host)


class ProsodyGCTests(ConfigMixin, unittest.TestCase):
    """
    C{gcMode} sets Prosody's C{gc} option in the global section.
    """

    def test_default(self):
        """
        By default there is no C{gc} line: Prosody's own default applies.
        """
        self.assertEqual(
            [], [line for line in self.lines() if line.startswith("gc")])

    def test_generational(self):
        """
        C{gcMode="generational"} writes C{gc = { mode = "generational" }}
        before the first VirtualHost (Prosody reads C{gc} from the global
        section only).
        """
        self.assertGlobal('gc = { mode = "generational" }',
                          self.lines(gcMode="generational"))

    def test_incremental(self):
        """
        C{gcMode="incremental"} names that mode.
        """
        self.assertIn('gc = { mode = "incremental" }',
                      self.lines(gcMode="incremental"))

    def test_unknown(self):
        """
        Another mode is refused when the server is created, not when Prosody
        fails to start.
        """
        self.assertRaises(ValueError, PrivateProsody, self.mktemp(),
                          c2sPort=15222, componentPort=15347,
                          gcMode="stop-the-world")


class ProsodyNagleTests(ConfigMixin, unittest.TestCase):
    """
    C{nagle=False} turns Nagle's algorithm off in Prosody's global
    C{network_settings}.
    """

    def test_default(self):
        """
        By default there is no C{network_settings}: Prosody's own default
        (Nagle on) applies.
        """
        self.assertEqual([], [line for line in self.lines()
                              if line.startswith("network_settings")])

    def test_off(self):
        """
        C{nagle=False} writes C{network_settings = { nagle = false }} before
        the first VirtualHost (Prosody reads it from the global section
        only).
        """
        self.assertGlobal("network_settings = { nagle = false }",
                          self.lines(nagle=False))


class ExtraComponentTests(ConfigMixin, unittest.TestCase):
    """
    C{extraComponents} declares more component domains with the same
    secret.
    """

    def test_extra(self):
        lines = self.lines(componentSecret="s3",
                           extraComponents=["floor.xmpp.test"])
        self.assertEqual(
            ['Component "gw.xmpp.test"', '  component_secret = "s3"',
             'Component "floor.xmpp.test"', '  component_secret = "s3"'],
            lines[-4:])
