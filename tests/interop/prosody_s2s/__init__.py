"""
A private Prosody that federates over S2S on loopback, and a test CA.

L{PrivateS2SProsody} extends L{xmppgw.localpeers.PrivateProsody} (by
subclassing, not editing it): the same private working directory and child
process handling, but with C{mod_s2s}, C{mod_tls} and C{mod_dialback} on,
encryption required on S2S (C{s2s_require_encryption}), a certificate for its
domain, optionally a CA file it trusts, and the local module
C{mod_xmppgw_test_resolver} (in this folder, loaded through
C{plugin_paths}) that points chosen remote domains at a fixed
C{127.0.0.1:port}, so no DNS is involved (shared docs test-peers.md
section 5).

L{makeTestCA} makes a CA and leaf certificates with the C{openssl} command
line, into a directory of the test.
"""

import os
import subprocess

from xmppgw.localpeers import (
    PeerError, PrivateProsody, _lua, findProgram, freePort, waitForPort)

HERE = os.path.dirname(os.path.abspath(__file__))

__all__ = ["PrivateS2SProsody", "TestCA", "makeTestCA"]


class TestCA:
    """
    A test CA on disk: C{ca.pem}, and a C{NAME.crt}/C{NAME.key} pair per
    domain made by L{issue}.
    """

    def __init__(self, directory):
        self.directory = directory
        self.caCert = os.path.join(directory, "ca.pem")
        self.caKey = os.path.join(directory, "ca.key")
        self.openssl = findProgram("openssl")
        if self.openssl is None:
            raise PeerError("openssl is not installed (Debian: apt-get install openssl)")

    def _run(self, *args):
        result = subprocess.run(
            [self.openssl, *args], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
            cwd=self.directory)
        if result.returncode != 0:
            raise PeerError(f"openssl {' '.join(args)} failed: "
                            f"{result.stdout.decode('utf-8', 'replace')}")

    def create(self):
        os.makedirs(self.directory, exist_ok=True)
        self._run("req", "-x509", "-newkey", "rsa:2048", "-nodes",
                  "-keyout", self.caKey, "-out", self.caCert, "-days", "2",
                  "-subj", "/CN=xmppgw interop test CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return self

    def issue(self, domain):
        """
        A certificate for C{domain} (DNS SAN, server and client use).

        @return: C{(certificatePath, keyPath)}.
        """
        cert = os.path.join(self.directory, f"{domain}.crt")
        key = os.path.join(self.directory, f"{domain}.key")
        csr = os.path.join(self.directory, f"{domain}.csr")
        ext = os.path.join(self.directory, f"{domain}.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName=DNS:{domain}\n"
                    "basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
        self._run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                  "-out", csr, "-subj", f"/CN={domain}")
        self._run("x509", "-req", "-in", csr, "-CA", self.caCert, "-CAkey",
                  self.caKey, "-CAcreateserial", "-out", cert, "-days", "2",
                  "-extfile", ext)
        return cert, key


def makeTestCA(directory):
    """
    Create a L{TestCA} in C{directory}.
    """
    return TestCA(directory).create()


class PrivateS2SProsody(PrivateProsody):
    """
    A private Prosody with S2S (TLS required, dialback) and no component.

    @ivar s2sPort: its S2S port.
    @ivar remotes: C{{domain: (host, port)}} that its S2S resolves to
        without DNS.
    @ivar certificate: C{(certPath, keyPath)} for its domain.
    @ivar trustedCA: a CA file it trusts for peers' certificates, or
        L{None} (then certificates of peers from our test CA are invalid for
        it, and it falls back to dialback: C{s2s_secure_auth = false}).
    """

    def __init__(self, workdir, certificate, remotes, trustedCA=None,
                 s2sPort=None, **kwargs):
        kwargs.setdefault("componentDomain", "")
        PrivateProsody.__init__(self, workdir, **kwargs)
        self.componentDomain = None
        self.certificate = certificate
        self.remotes = dict(remotes)
        self.trustedCA = trustedCA
        self.s2sPort = s2sPort or freePort("tcp")
        while self.s2sPort == self.c2sPort:
            self.s2sPort = freePort("tcp")

    def configText(self):
        certPath, keyPath = self.certificate
        ssl = [f"certificate = {_lua(certPath)}", f"key = {_lua(keyPath)}"]
        if self.trustedCA:
            ssl.append(f"cafile = {_lua(self.trustedCA)}")
        targets = "; ".join(
            f"[{_lua(domain)}] = {{ {_lua(host)}, {int(port)} }}"
            for domain, (host, port) in self.remotes.items())
        lines = [
            "-- Written by tests/interop/prosody_s2s: a private Prosody that",
            "-- federates over S2S on loopback (TLS required, dialback).",
            "run_as_root = true",
            "daemonize = false",
            f"pidfile = {_lua(self.pidPath)}",
            f"data_path = {_lua(self.dataPath)}",
            f"plugin_paths = {{ {_lua(HERE)} }}",
            "log = {",
            f"  {{ levels = {{ min = {_lua(self.logLevel)} }}, to = \"file\","
            f" filename = {_lua(self.logPath)} }};",
            "}",
            'interfaces = { "127.0.0.1" }',
            'local_interfaces = { "127.0.0.1" }',
            f"c2s_ports = {{ {int(self.c2sPort)} }}",
            'c2s_interfaces = { "127.0.0.1" }',
            "c2s_direct_tls_ports = { }",
            "legacy_ssl_ports = { }",
            f"s2s_ports = {{ {int(self.s2sPort)} }}",
            's2s_interfaces = { "127.0.0.1" }',
            "s2s_direct_tls_ports = { }",
            "http_ports = { }",
            "https_ports = { }",
            "component_ports = { }",
            "modules_enabled = { \"roster\"; \"saslauth\"; \"disco\"; "
            "\"ping\"; \"posix\"; \"tls\"; \"dialback\"; "
            "\"xmppgw_test_resolver\"; }",
            'modules_disabled = { "s2s_bidi"; }',
            f"ssl = {{ {'; '.join(ssl)} }}",
            "c2s_require_encryption = false",
            "s2s_require_encryption = true",
            "s2s_secure_auth = false",
            "allow_unencrypted_plain_auth = true",
            'authentication = "internal_hashed"',
            'storage = "internal"',
            "allow_registration = false",
            f"xmppgw_test_s2s_targets = {{ {targets} }}",
            f"VirtualHost {_lua(self.domain)}",
        ]
        if not self.offlineStorage:
            lines.insert(-1, 'modules_disabled = { "s2s_bidi"; "offline"; }')
        return "\n".join(lines) + "\n"

    def start(self):
        PrivateProsody.start(self)
        if not waitForPort(self.host, self.s2sPort, self.startTimeout, self.process):
            log = self.log()
            self.kill()
            raise PeerError(f"Prosody did not listen on S2S port {self.s2sPort}.\n"
                            f"--- log:\n{log[-3000:]}")
        return self
