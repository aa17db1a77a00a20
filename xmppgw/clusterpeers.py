# -*- test-case-name: tests.test_clusterpeers -*-
"""
Private peers for scale-out tests: an ejabberd node and a Kamailio
dispatcher, each run as a child process on loopback with everything it
writes inside a working directory of its own.

L{PrivateEjabberd} runs ejabberd (Debian package C{ejabberd}, checked with
23.01) as a single node with one virtual host, one external component
domain (any number of component connections for it are accepted, and by
default each stanza goes to a random live one) and no s2s. It runs as the
calling user (root in CI) through a private copy of C{ejabberdctl} with the
C{su} to the C{ejabberd} user removed, and with Erlang distribution on a
loopback port of its own (no C{epmd}), so that nothing it starts binds
outside 127.0.0.1.

L{PrivateKamailio} runs Kamailio (Debian package C{kamailio}, checked with
5.6.3) with the shipped C{etc/kamailio-dispatcher.cfg}, its values set with
C{-A} defines, in front of a list of destinations.

Like L{xmppgw.localpeers}, this module is synchronous (subprocess, bounded
polls): it works from a trial C{setUp} and from a command line. Every wait
is bounded; every child runs in a session of its own and dies with us.
"""

import os
import re
import secrets
import signal
import socket
import subprocess
import time

from xmppgw.localpeers import (
    PeerError, findProgram, freePort, killProcessGroup, spawn,
    terminate, waitForPort)

__all__ = [
    "PrivateEjabberd",
    "PrivateKamailio",
    "DispatcherTarget",
    "sipOptions",
    "SHIPPED_KAMAILIO_CONFIG",
]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The Kamailio configuration shipped in C{etc/} (what L{PrivateKamailio}
#: runs by default).
SHIPPED_KAMAILIO_CONFIG = os.path.join(_ROOT, "etc", "kamailio-dispatcher.cfg")


def _readText(path, limit=None):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text[-limit:] if limit else text


def _yamlString(text):
    """
    A double-quoted YAML scalar for C{text}.
    """
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# --- ejabberd ------------------------------------------------------------------


class PrivateEjabberd:
    """
    An ejabberd node of our own: one virtual host, one external component
    domain, loopback only, no TLS, no s2s, everything in C{workdir}.

    @ivar domain: the virtual host users log in to (c2s).
    @ivar componentDomain: the XEP-0114 component's name.
    @ivar componentSecret: the component's shared secret.
    @ivar c2sPort: the client port.
    @ivar componentPort: the component port.
    @ivar distPort: the Erlang distribution port (C{ERL_DIST_PORT}).
    @ivar domainBalancing: L{None} (ejabberd's default: each stanza to a
        random live connection) or C{(type, componentNumber)} for a
        top-level C{domain_balancing} entry (only to demonstrate why not to
        use it: a stanza hashed to an empty slot is dropped silently).
    @ivar users: C{{localpart: password}} registered by L{start}.
    @ivar process: the running L{subprocess.Popen}, or L{None}.
    """

    host = "127.0.0.1"

    def __init__(self, workdir, domain="ej.test", componentDomain=None,
                 componentSecret="secret", c2sPort=None, componentPort=None,
                 distPort=None, users=None, domainBalancing=None,
                 startTimeout=60.0, stopTimeout=15.0, extraListeners=(),
                 options=None, hosts=None):
        """
        @param workdir: the directory for configs, spool, logs; created if
            missing.
        @param componentDomain: defaults to C{"gw." + domain}.
        @param c2sPort: the client port; chosen free if not given (as are
            C{componentPort} and C{distPort}).
        @param users: C{{localpart: password}} to register on L{start}.
        @param startTimeout: seconds L{start} waits for the ports.
        @param stopTimeout: seconds L{stop} waits before SIGKILL.
        @param extraListeners: more C{listen} entries, each the YAML text of
            one list item (starting with C{- port: ...}, indented as at top
            level; it is indented under C{listen:} here), e.g. an
            C{ejabberd_s2s_in} listener.
        @param options: C{{key: YAML text or list of lines}} of top-level
            options (e.g. S2S and TLS settings, C{mod_s2s_dialback}): a key
            this class writes anyway (C{certfiles}, C{s2s_access},
            C{modules} ...) is replaced in place, others are added at the
            end. Text with several lines is written under C{key:} as given
            (indent it yourself), one line after C{key: }.
        @param hosts: C{{name: "127.0.0.x"}} the node resolves without
            DNS (e.g. a test domain it federates with over S2S). If given,
            the node runs in a private mount namespace (C{unshare --mount},
            root only) where C{/etc/hosts} lists these names (and
            C{localhost}) and C{/etc/resolv.conf} names no nameserver, so
            that no lookup leaves the machine; the machine's files are not
            touched. ejabberd resolves S2S peers with the C library
            (C{net:getaddrinfo}) and Erlang's C{inet_res} (SRV), so an
            Erlang C{inetrc} alone is not enough.
        """
        self.workdir = os.path.abspath(workdir)
        self.domain = domain
        self.componentDomain = componentDomain or "gw." + domain
        self.componentSecret = componentSecret
        ports = set()

        def port(given):
            chosen = given or freePort("tcp")
            while chosen in ports:
                chosen = freePort("tcp")
            ports.add(chosen)
            return chosen

        self.c2sPort = port(c2sPort)
        self.componentPort = port(componentPort)
        self.distPort = port(distPort)
        self.users = dict(users or {})
        if domainBalancing is not None:
            kind, number = domainBalancing
            if kind not in ("random", "source", "destination",
                            "bare_source", "bare_destination"):
                raise ValueError(f"unknown domain_balancing type {kind!r}")
            if not isinstance(number, int) or not 1 < number <= 1000:
                raise ValueError("component_number must be an integer 2..1000")
        self.domainBalancing = domainBalancing
        self.extraListeners = [str(text) for text in extraListeners]
        self.options = dict(options or {})
        self.hosts = dict(hosts) if hosts is not None else None
        self.startTimeout = startTimeout
        self.stopTimeout = stopTimeout
        self.nodeName = f"xmppgw{secrets.token_hex(4)}@localhost"
        self.process = None
        self.ejabberdctl = findProgram("ejabberdctl")

    # paths
    @property
    def etcPath(self):
        return os.path.join(self.workdir, "etc")

    @property
    def configPath(self):
        return os.path.join(self.etcPath, "ejabberd.yml")

    @property
    def ctlConfigPath(self):
        return os.path.join(self.etcPath, "ejabberdctl.cfg")

    @property
    def ctlPath(self):
        return os.path.join(self.workdir, "ejabberdctl")

    @property
    def logDir(self):
        return os.path.join(self.workdir, "log")

    @property
    def logPath(self):
        return os.path.join(self.logDir, "ejabberd.log")

    @property
    def consolePath(self):
        return os.path.join(self.workdir, "console.log")

    @property
    def hostsPath(self):
        return os.path.join(self.etcPath, "hosts")

    @property
    def resolvConfPath(self):
        return os.path.join(self.etcPath, "resolv.conf")

    def hostsText(self):
        """
        The C{/etc/hosts} of the node's mount namespace (see C{hosts}).
        """
        lines = ["# Written by xmppgw.clusterpeers.", "127.0.0.1 localhost"]
        for name, address in sorted((self.hosts or {}).items()):
            if not re.fullmatch(r"[A-Za-z0-9.-]+", name):
                raise ValueError(f"bad host name {name!r}")
            try:
                socket.inet_aton(address)
            except OSError:
                raise ValueError(f"bad IPv4 address {address!r} for {name}")
            lines.append(f"{address} {name}")
        return "\n".join(lines) + "\n"

    def nodeArgv(self):
        """
        The command that runs the node in the foreground: in a private mount
        namespace with our C{hosts} and C{resolv.conf} if C{hosts} is set.
        """
        argv = self._argv("foreground")
        if self.hosts is None:
            return argv
        unshare = findProgram("unshare")
        if unshare is None:
            raise PeerError("unshare not found (Debian: util-linux)")
        script = ('mount --bind "$1" /etc/hosts && '
                  'mount --bind "$2" /etc/resolv.conf && shift 2 && '
                  'exec "$@"')
        return [unshare, "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", script, "sh", self.hostsPath,
                self.resolvConfPath, *argv]

    def available(self):
        """
        Whether C{ejabberdctl} is installed.
        """
        return self.ejabberdctl is not None

    def configText(self):
        """
        The C{ejabberd.yml} this node runs with.
        """
        listen = [
            f"  - port: {int(self.c2sPort)}",
            f"    ip: {_yamlString(self.host)}",
            "    module: ejabberd_c2s",
            "    access: c2s",
            "    starttls_required: false",
            "    max_stanza_size: 262144",
            f"  - port: {int(self.componentPort)}",
            f"    ip: {_yamlString(self.host)}",
            "    module: ejabberd_service",
            "    access: all",
            "    hosts:",
            f"      {_yamlString(self.componentDomain)}:",
            f"        password: {_yamlString(self.componentSecret)}",
        ]
        for text in self.extraListeners:
            listen += ["  " + line for line in text.strip("\n").splitlines()]
        # (key, lines after "key:") in the order written.
        blocks = [
            ("hosts", [f"  - {_yamlString(self.domain)}"]),
            ("loglevel", " info"),
            ("log_rotate_count", " 0"),
            ("certfiles", " []"),
            ("listen", listen),
        ]
        if self.domainBalancing is not None:
            kind, number = self.domainBalancing
            blocks.append(("domain_balancing", [
                f"  {_yamlString(self.componentDomain)}:",
                f"    type: {kind}",
                f"    component_number: {int(number)}",
            ]))
        blocks += [
            ("acl", ["  loopback:", "    ip: 127.0.0.0/8"]),
            ("access_rules", ["  c2s:", "    allow: all",
                              "  local:", "    allow: all"]),
            ("auth_method", " internal"),
            ("auth_password_format", " plain"),
            ("s2s_access", " none"),
            ("shaper_rules", " {}"),
            ("modules", ["  mod_roster: {}", "  mod_disco: {}",
                         "  mod_ping: {}"]),
        ]
        options = dict(self.options)
        lines = ["# Written by xmppgw.clusterpeers: a private, loopback-only ejabberd."]
        known = {key for key, _ in blocks}
        extra = [(key, value) for key, value in options.items()
                 if key not in known]

        def render(key, value):
            if isinstance(value, list):
                return [f"{key}:"] + value
            text = str(value).strip("\n")
            if "\n" in text:
                return [f"{key}:"] + text.splitlines()
            return [f"{key}:" + (text if text.startswith(" ") else " " + text)]

        for key, value in blocks + extra:
            lines += render(key, options.get(key, value))
        return "\n".join(lines) + "\n"

    def ctlConfigText(self):
        """
        The C{ejabberdctl.cfg}: node name, loopback distribution, no epmd.
        """
        return (
            f"ERLANG_NODE={self.nodeName}\n"
            "INET_DIST_INTERFACE=127.0.0.1\n"
            "ERL_EPMD_ADDRESS=127.0.0.1\n"
            f"ERL_DIST_PORT={int(self.distPort)}\n"
            "EJABBERD_BYPASS_WARNINGS=true\n"
        )

    def writeConfig(self):
        """
        Create the working tree, the private C{ejabberdctl} and the configs.

        @raise PeerError: if ejabberd is not installed.
        """
        if not self.available():
            raise PeerError("ejabberd not installed "
                            "(Debian: apt-get install ejabberd)")
        for path in (self.workdir, self.etcPath, self.logDir,
                     os.path.join(self.workdir, "spool"),
                     os.path.join(self.workdir, "home")):
            os.makedirs(path, exist_ok=True)
        with open(self.ejabberdctl, encoding="utf-8") as f:
            script = f.read()
        # The packaged script su's to the ejabberd user when run as root;
        # a private copy runs as whoever calls it, in our directories.
        script, count = re.subn(r"(?m)^INSTALLUSER=.*$", "INSTALLUSER=", script)
        if count != 1:
            raise PeerError(f"{self.ejabberdctl}: no INSTALLUSER line to change")
        with open(self.ctlPath, "w", encoding="utf-8") as f:
            f.write(script)
        os.chmod(self.ctlPath, 0o755)
        with open(self.configPath, "w", encoding="utf-8") as f:
            f.write(self.configText())
        with open(self.ctlConfigPath, "w", encoding="utf-8") as f:
            f.write(self.ctlConfigText())
        if self.hosts is not None:
            with open(self.hostsPath, "w", encoding="utf-8") as f:
                f.write(self.hostsText())
            with open(self.resolvConfPath, "w", encoding="utf-8") as f:
                f.write("# Written by xmppgw.clusterpeers: no nameserver.\n"
                        "options timeout:1 attempts:1\n")

    def _argv(self, *command):
        return [self.ctlPath, "--config-dir", self.etcPath,
                "--config", self.configPath,
                "--ctl-config", self.ctlConfigPath,
                "--logs", self.logDir,
                "--spool", os.path.join(self.workdir, "spool"), *command]

    def _env(self):
        env = dict(os.environ)
        env["HOME"] = os.path.join(self.workdir, "home")
        return env

    def ctl(self, *args, timeout=60.0):
        """
        Run an C{ejabberdctl} command against this node.

        @return: C{(exit status, output text)}.
        @raise PeerError: if it takes longer than C{timeout} seconds.
        """
        try:
            result = subprocess.run(
                self._argv(*args), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=timeout, cwd=self.workdir, env=self._env(),
                start_new_session=True)
        except subprocess.TimeoutExpired as e:
            raise PeerError(f"ejabberdctl {' '.join(args)} took over "
                            f"{timeout} s: {e.output!r}")
        return result.returncode, result.stdout.decode("utf-8", "replace")

    def register(self, user, password):
        """
        Create an account on the virtual host (the node must be running).
        """
        code, output = self.ctl("register", user, self.domain, password)
        if code != 0 and "already registered" not in output:
            raise PeerError(f"ejabberdctl register {user} {self.domain} "
                            f"failed (exit {code}): {output.strip()}")
        self.users[user] = password

    def start(self):
        """
        Write the configuration, start the node in the foreground, wait (at
        most C{startTimeout} seconds) until both ports accept, then register
        the users.

        @raise PeerError: with the logs, if it did not come up.
        """
        if self.running():
            raise PeerError("ejabberd is already running")
        self.writeConfig()
        self.process = spawn(self.nodeArgv(),
                             logPath=self.consolePath, cwd=self.workdir,
                             env=self._env())
        deadline = time.monotonic() + self.startTimeout
        for port in (self.c2sPort, self.componentPort):
            if not waitForPort(self.host, port,
                               max(0.0, deadline - time.monotonic()),
                               self.process):
                status = self.process.poll()
                self.kill()
                raise PeerError(
                    f"ejabberd did not listen on {self.host}:{port} within "
                    f"{self.startTimeout} s (exit status {status}).\n"
                    + self.describe())
        for user, password in list(self.users.items()):
            self.register(user, password)
        return self

    def running(self):
        return self.process is not None and self.process.poll() is None

    def stop(self):
        """
        SIGTERM (the Erlang VM stops cleanly), SIGKILL after
        C{stopTimeout} seconds.
        """
        process, self.process = self.process, None
        return terminate(process, self.stopTimeout)

    def kill(self):
        """
        SIGKILL at once.
        """
        process, self.process = self.process, None
        if process is None:
            return None
        killProcessGroup(process, signal.SIGKILL)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        return process.returncode

    def log(self):
        """
        ejabberd's log so far.
        """
        return _readText(self.logPath)

    def describe(self):
        return (f"--- ejabberd console ({self.consolePath}):\n"
                f"{_readText(self.consolePath, 3000)}\n"
                f"--- ejabberd log:\n{_readText(self.logPath, 4000)}")

    def __repr__(self):
        return (f"<PrivateEjabberd {self.domain} c2s={self.host}:"
                f"{self.c2sPort} component={self.componentDomain}@"
                f"{self.host}:{self.componentPort} in {self.workdir}>")


# --- Kamailio ------------------------------------------------------------------


def sipOptions(host, port, timeout=0.5, fromHost="127.0.0.1"):
    """
    Send one SIP OPTIONS over UDP and wait for a final response.

    @return: the response's status code, or L{None} if none came in time.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((fromHost, 0))
        local = sock.getsockname()[1]
        callID = secrets.token_hex(8)
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {fromHost}:{local};branch=z9hG4bK"
            f"{secrets.token_hex(6)};rport\r\n"
            f"From: <sip:probe@{fromHost}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {callID}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode("ascii")
        sock.sendto(request, (host, port))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                data, _ = sock.recvfrom(65535)
            except (socket.timeout, OSError):
                return None
            match = re.match(rb"SIP/2\.0 (\d{3}) ", data)
            if match and callID.encode() in data:
                code = int(match.group(1))
                if code >= 200:
                    return code
    finally:
        sock.close()


class DispatcherTarget:
    """
    One destination in Kamailio's dispatcher state.

    @ivar uri: its SIP URI.
    @ivar flags: dispatcher's flags text: C{A} active, C{I} inactive, C{D}
        disabled, then C{P} probing or C{X} not probing (e.g. C{"AP"}).
    """

    def __init__(self, uri, flags):
        self.uri = uri
        self.flags = flags

    @property
    def active(self):
        return self.flags.startswith("A")

    def __repr__(self):
        return f"<DispatcherTarget {self.uri} {self.flags}>"


class PrivateKamailio:
    """
    Kamailio with the dispatcher module in front of SIP destinations, from
    the shipped C{etc/kamailio-dispatcher.cfg}, listening on one loopback
    UDP port; its files (dispatcher list, pid, control socket, log) in
    C{workdir}.

    @ivar port: the UDP port it listens on.
    @ivar destinations: the SIP URIs of dispatcher set 1, in order.
    @ivar frTimer: the C{tm} final response timer in milliseconds.
    @ivar pingInterval: seconds between OPTIONS probes of each destination.
    @ivar algorithm: the C{ds_select_dst} algorithm (C{4}: round-robin).
    """

    host = "127.0.0.1"

    def __init__(self, workdir, destinations, port=None, frTimer=2000,
                 pingInterval=1, algorithm=4, configPath=None,
                 startTimeout=15.0, stopTimeout=10.0):
        if not destinations:
            raise ValueError("at least one destination is needed")
        self.workdir = os.path.abspath(workdir)
        self.destinations = list(destinations)
        self.port = port or freePort("udp")
        self.frTimer = int(frTimer)
        self.pingInterval = int(pingInterval)
        self.algorithm = int(algorithm)
        self.configPath = configPath or SHIPPED_KAMAILIO_CONFIG
        self.startTimeout = startTimeout
        self.stopTimeout = stopTimeout
        self.process = None
        self.kamailio = findProgram("kamailio")
        self.kamcmd = findProgram("kamcmd")

    @property
    def uri(self):
        """
        Where SIP clients send to (the dispatcher's socket).
        """
        return f"sip:{self.host}:{self.port}"

    @property
    def listPath(self):
        return os.path.join(self.workdir, "dispatcher.list")

    @property
    def ctlSocket(self):
        return os.path.join(self.workdir, "kamailio_ctl")

    @property
    def pidPath(self):
        return os.path.join(self.workdir, "kamailio.pid")

    @property
    def logPath(self):
        return os.path.join(self.workdir, "kamailio.log")

    def available(self):
        return bool(self.kamailio and self.kamcmd)

    def dispatcherListText(self):
        """
        The C{dispatcher.list}: set 1, one line per destination.
        """
        lines = ["# setid destination flags priority attrs"]
        for i, uri in enumerate(self.destinations, 1):
            lines.append(f"1 {uri} 0 0 name=gw{i}")
        return "\n".join(lines) + "\n"

    def defines(self):
        """
        The C{-A} defines that set the shipped configuration's values.
        """
        return [
            f"LISTEN=udp:{self.host}:{int(self.port)}",
            f'DS_LIST="{self.listPath}"',
            f'CTL_SOCKET="unix:{self.ctlSocket}"',
            f"FR_TIMER={self.frTimer}",
            f"DS_PING_INTERVAL={self.pingInterval}",
            f'DS_PING_FROM="sip:dispatcher@{self.host}:{int(self.port)}"',
            f'DS_ALG="{self.algorithm}"',
        ]

    def argv(self, check=False):
        argv = [self.kamailio, "-f", self.configPath]
        for define in self.defines():
            argv += ["-A", define]
        if check:
            return argv + ["-c"]
        return argv + ["-P", self.pidPath, "-w", self.workdir, "-DD", "-E",
                       "-m", "64", "-M", "8"]

    def check(self):
        """
        C{kamailio -c}: parse the configuration with these defines.

        @return: C{(exit status, output)}.
        """
        self._write()
        result = subprocess.run(
            self.argv(check=True), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
            cwd=self.workdir, start_new_session=True)
        return result.returncode, result.stdout.decode("utf-8", "replace")

    def _write(self):
        if not self.available():
            raise PeerError("kamailio/kamcmd not installed "
                            "(Debian: apt-get install kamailio)")
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.listPath, "w", encoding="utf-8") as f:
            f.write(self.dispatcherListText())

    def start(self):
        """
        Start Kamailio and wait (bounded) until it answers OPTIONS with 200.

        @raise PeerError: with the log, if it did not.
        """
        if self.running():
            raise PeerError("Kamailio is already running")
        self._write()
        self.process = spawn(self.argv(), logPath=self.logPath,
                             cwd=self.workdir)
        deadline = time.monotonic() + self.startTimeout
        while True:
            if self.process.poll() is not None:
                status = self.process.returncode
                self.process = None
                raise PeerError(f"Kamailio exited with status {status} at "
                                f"start-up.\n{self.describe()}")
            if sipOptions(self.host, self.port, timeout=0.3) == 200:
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise PeerError(f"Kamailio did not answer OPTIONS on "
                                f"{self.host}:{self.port} within "
                                f"{self.startTimeout} s.\n{self.describe()}")
            time.sleep(0.1)

    def dispatcherState(self, timeout=5.0):
        """
        The dispatcher's view of its destinations (C{kamcmd dispatcher.list}).

        @rtype: L{list} of L{DispatcherTarget}
        """
        result = subprocess.run(
            [self.kamcmd, "-s", f"unix:{self.ctlSocket}", "dispatcher.list"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=timeout, start_new_session=True)
        text = result.stdout.decode("utf-8", "replace")
        if result.returncode != 0:
            raise PeerError(f"kamcmd dispatcher.list failed: {text}")
        return parseDispatcherList(text)

    def waitForState(self, predicate, timeout):
        """
        Poll L{dispatcherState} until C{predicate(state)} holds.

        @return: the state, or L{None} on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            state = self.dispatcherState()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def running(self):
        return self.process is not None and self.process.poll() is None

    def stop(self):
        process, self.process = self.process, None
        return terminate(process, self.stopTimeout)

    def kill(self):
        process, self.process = self.process, None
        if process is None:
            return None
        killProcessGroup(process, signal.SIGKILL)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        return process.returncode

    def log(self):
        return _readText(self.logPath)

    def describe(self):
        return f"--- kamailio log:\n{_readText(self.logPath, 4000)}"

    def __repr__(self):
        return (f"<PrivateKamailio udp:{self.host}:{self.port} -> "
                f"{self.destinations}>")


def parseDispatcherList(text):
    """
    Parse C{kamcmd dispatcher.list} output into L{DispatcherTarget}s.
    """
    targets = []
    uri = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("URI:"):
            uri = line.split(":", 1)[1].strip()
        elif line.startswith("FLAGS:") and uri is not None:
            targets.append(DispatcherTarget(uri, line.split(":", 1)[1].strip()))
            uri = None
    return targets

