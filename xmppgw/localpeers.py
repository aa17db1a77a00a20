# -*- test-case-name: tests.interop.test_harness -*-
"""
Private XMPP peers on loopback, for the interop tests and for C{make run}.

L{PrivateProsody} writes a Prosody configuration into a working directory of
its own, registers users, starts C{prosody} in the foreground as a child
process and waits until its ports accept connections. Everything Prosody
writes (pid file, data, log) stays inside that directory; it listens on
127.0.0.1 only, with no s2s, no TLS and no HTTP.

This module is synchronous on purpose (C{subprocess}, blocking polls with
deadlines, no reactor), so that it works from a trial C{setUp} as well as
from a plain command line::

    python -m xmppgw.localpeers WORKDIR [--user alice:secret] ...

Every wait here is bounded; every child runs in a session of its own so that
its whole process group can be killed.
"""

import argparse
import atexit
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref

__all__ = [
    "PeerError",
    "PrivateProsody",
    "findProgram",
    "freePort",
    "waitForPort",
]


class PeerError(Exception):
    """
    A private peer could not be set up, started or stopped as asked.
    """


def findProgram(name):
    """
    Find an executable on C{PATH} or in the system C{sbin} folders.

    @param name: the program name, e.g. C{"prosody"}.
    @return: the absolute path, or L{None} if it is not installed.
    """
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def freePort(kind="tcp", host="127.0.0.1"):
    """
    Ask the kernel for a free port by binding port 0.

    The port is free when this returns; a small race with other programs is
    possible, as with any such scheme.

    @param kind: C{"tcp"}, C{"udp"} or C{"both"} (a port free for both).
    @return: the port number.
    """
    for _ in range(50):
        sockType = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
        first = socket.socket(socket.AF_INET, sockType)
        try:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if kind != "both":
                return port
            second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                second.bind((host, port))
            except OSError:
                continue
            finally:
                second.close()
            return port
        finally:
            first.close()
    raise PeerError(f"no free {kind} port found on {host}")


def portAccepts(host, port, timeout=0.5):
    """
    Whether a TCP connection to C{host:port} succeeds right now.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def waitForPort(host, port, timeout, process=None):
    """
    Wait until a TCP port accepts connections.

    @param process: a L{subprocess.Popen}; if it exits meanwhile, give up at
        once.
    @return: C{True} if the port accepted before C{timeout} seconds passed,
        C{False} otherwise.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        if portAccepts(host, port, timeout=min(0.5, max(0.05, deadline - time.monotonic()))):
            return True
        time.sleep(0.05)
    return False


# --- child processes -------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = None
try:
    _libcName = ctypes.util.find_library("c")
    if _libcName and sys.platform.startswith("linux"):
        _libc = ctypes.CDLL(_libcName, use_errno=True)
        _prctl = _libc.prctl
except OSError:  # pragma: no cover - non-glibc systems
    _libc = None


def _dieWithParent():
    """
    C{preexec_fn} for children: get SIGKILL if the parent dies, so that an
    interrupted test run never leaves a peer behind (Linux only).
    """
    if _libc is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_LIVE = weakref.WeakSet()


def spawn(argv, logPath=None, stdin=subprocess.DEVNULL, stdout=None, cwd=None,
          env=None):
    """
    Start a child process in a new session (its own process group), tied to
    our life, and remember it so that it is killed at interpreter exit.

    On Linux the child gets SIGKILL when the I{thread} that started it ends
    (C{PR_SET_PDEATHSIG} follows the creating thread): call this from the
    main thread, or from a thread that lives as long as the child.

    @param logPath: where stdout and stderr go (appended), unless C{stdout}
        is given (then stderr goes to C{logPath}).
    @return: the L{subprocess.Popen}.
    """
    logFile = open(logPath, "ab") if logPath else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout if stdout is not None else logFile,
            stderr=logFile,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_dieWithParent,
        )
    finally:
        if logPath:
            logFile.close()
    _LIVE.add(process)
    return process


def killProcessGroup(process, sig=signal.SIGKILL):
    """
    Send C{sig} to the process group of a child started by L{spawn}.
    """
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            pass


def terminate(process, timeout=5.0):
    """
    Stop a child: SIGTERM to its group, wait at most C{timeout} seconds,
    then SIGKILL and reap it.

    @return: the exit status, or L{None} if there was no process.
    """
    if process is None:
        return None
    if process.poll() is None:
        killProcessGroup(process, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    if process.poll() is None:
        killProcessGroup(process, signal.SIGKILL)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
            pass
    return process.returncode


@atexit.register
def _killAll():
    for process in list(_LIVE):
        killProcessGroup(process, signal.SIGKILL)


# --- Prosody ---------------------------------------------------------------


def _lua(text):
    """
    A Lua string literal for C{text}.
    """
    escaped = (str(text).replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\r", "\\r"))
    return f'"{escaped}"'


class PrivateProsody:
    """
    A Prosody server of our own: one virtual host, one external component,
    loopback only, no TLS, no s2s, everything in C{workdir}.

    @ivar domain: the virtual host users log in to (c2s).
    @ivar componentDomain: the XEP-0114 component's name.
    @ivar componentSecret: the component's shared secret.
    @ivar c2sPort: the client port (chosen free if not given).
    @ivar componentPort: the component port (chosen free if not given).
    @ivar users: C{{localpart: password}} registered on L{start}.
    @ivar process: the running L{subprocess.Popen}, or L{None}.
    """

    host = "127.0.0.1"

    def __init__(self, workdir, domain="xmpp.test", componentDomain=None,
                 componentSecret="secret", c2sPort=None, componentPort=None,
                 users=None, offlineStorage=True, startTimeout=15.0,
                 stopTimeout=10.0, logLevel="info", gcMode=None, nagle=True,
                 extraComponents=()):
        """
        @param workdir: a directory for the config, data, pid file and logs;
            created if missing.
        @param componentDomain: defaults to C{"gw." + domain}; L{None} for
            a server with no component.
        @param users: C{{localpart: password}} to register before start.
        @param offlineStorage: keep messages for offline users (Prosody's
            C{mod_offline}; stored in C{workdir}), so that a user who
            reconnects still gets what arrived while she was away.
        @param startTimeout: seconds L{start} waits for both ports.
        @param stopTimeout: seconds L{stop} waits after SIGTERM before
            SIGKILL.
        @param gcMode: Prosody's C{gc} option: L{None} for Prosody's
            default (incremental, collecting when memory grows 5 %),
            C{"generational"} or C{"incremental"} (with Prosody's default
            parameters for that mode).
        @param nagle: L{False} turns Nagle's algorithm off on Prosody's
            sockets (C{network_settings = { nagle = false }}; Prosody 0.12
            leaves it on by default, so a small stanza written while an
            earlier one is unacknowledged waits for the peer's delayed ACK,
            up to 40 ms on Linux).
        @param extraComponents: more component domains, with the same
            secret (the benchmark's floor connects as one of them while the
            gateway holds C{componentDomain}).
        """
        if gcMode not in (None, "generational", "incremental"):
            raise ValueError("gcMode must be None, 'generational' or "
                             "'incremental', not %r" % (gcMode,))
        self.workdir = os.path.abspath(workdir)
        self.domain = domain
        self.componentDomain = (
            componentDomain if componentDomain is not None else "gw." + domain)
        self.componentSecret = componentSecret
        self.c2sPort = c2sPort or freePort("tcp")
        self.componentPort = componentPort or freePort("tcp")
        while self.componentPort == self.c2sPort:
            self.componentPort = freePort("tcp")
        self.users = dict(users or {})
        self.offlineStorage = offlineStorage
        self.startTimeout = startTimeout
        self.stopTimeout = stopTimeout
        self.logLevel = logLevel
        self.gcMode = gcMode
        self.nagle = nagle
        self.extraComponents = tuple(extraComponents)
        self.process = None
        self.prosody = findProgram("prosody")
        self.prosodyctl = findProgram("prosodyctl")
        self._registered = set()

    # paths
    @property
    def configPath(self):
        return os.path.join(self.workdir, "prosody.cfg.lua")

    @property
    def logPath(self):
        return os.path.join(self.workdir, "prosody.log")

    @property
    def consolePath(self):
        return os.path.join(self.workdir, "prosody.console.log")

    @property
    def dataPath(self):
        return os.path.join(self.workdir, "data")

    @property
    def pidPath(self):
        return os.path.join(self.workdir, "prosody.pid")

    def available(self):
        """
        Whether both C{prosody} and C{prosodyctl} are installed.
        """
        return bool(self.prosody and self.prosodyctl)

    def configText(self):
        """
        The Lua configuration this server runs with.
        """
        disabled = ["s2s", "s2s_auth_certs", "tls", "dialback"]
        if not self.offlineStorage:
            disabled.append("offline")
        lines = [
            "-- Written by xmppgw.localpeers: a private, loopback-only Prosody.",
            "run_as_root = true",
            "daemonize = false",
            f"pidfile = {_lua(self.pidPath)}",
            f"data_path = {_lua(self.dataPath)}",
            f"certificates = {_lua(os.path.join(self.workdir, 'certs'))}",
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
            "s2s_ports = { }",
            's2s_interfaces = { "127.0.0.1" }',
            "http_ports = { }",
            "https_ports = { }",
            f"component_ports = {{ {int(self.componentPort)} }}",
            'component_interfaces = { "127.0.0.1" }',
            'modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "posix"; }',
            "modules_disabled = { "
            + " ".join(f"{_lua(m)};" for m in disabled) + " }",
            "c2s_require_encryption = false",
            "s2s_require_encryption = false",
            "allow_unencrypted_plain_auth = true",
            'authentication = "internal_hashed"',
            'storage = "internal"',
            "allow_registration = false",
        ]
        if self.gcMode is not None:
            lines.append(f"gc = {{ mode = {_lua(self.gcMode)} }}")
        if not self.nagle:
            lines.append("network_settings = { nagle = false }")
        lines += [
            f"VirtualHost {_lua(self.domain)}",
        ]
        for component in ((self.componentDomain,) if self.componentDomain
                          else ()) + self.extraComponents:
            lines += [
                f"Component {_lua(component)}",
                f"  component_secret = {_lua(self.componentSecret)}",
            ]
        return "\n".join(lines) + "\n"

    def writeConfig(self):
        """
        Create the working directory tree and write the configuration.
        """
        for path in (self.workdir, self.dataPath,
                     os.path.join(self.workdir, "certs")):
            os.makedirs(path, exist_ok=True)
        with open(self.configPath, "w", encoding="utf-8") as f:
            f.write(self.configText())

    def _ctl(self, *args, timeout=30.0):
        if not self.available():
            raise PeerError("prosody/prosodyctl not installed "
                            "(Debian: apt-get install prosody)")
        try:
            result = subprocess.run(
                [self.prosodyctl, "--config", self.configPath, *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, timeout=timeout, cwd=self.workdir,
                start_new_session=True)
        except subprocess.TimeoutExpired as e:
            raise PeerError(f"prosodyctl {' '.join(args)} took over "
                            f"{timeout} s: {e.output!r}")
        return result.returncode, result.stdout.decode("utf-8", "replace")

    def register(self, user, password):
        """
        Create (or overwrite) an account on the virtual host, with
        C{prosodyctl register}.
        """
        self.writeConfig()
        code, output = self._ctl("register", user, self.domain, password)
        if code != 0:
            raise PeerError(
                f"prosodyctl register {user} {self.domain} failed "
                f"(exit {code}): {output.strip()}")
        self.users[user] = password
        self._registered.add(user)

    def start(self):
        """
        Write the configuration, register the users, start Prosody and wait
        (at most C{startTimeout} seconds) until both ports accept.

        @raise PeerError: with the log, if Prosody did not come up.
        """
        if self.process is not None and self.process.poll() is None:
            raise PeerError("Prosody is already running")
        self.writeConfig()
        for user, password in self.users.items():
            if user not in self._registered:
                self.register(user, password)
        with open(self.consolePath, "ab") as f:
            f.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
        self.process = spawn(
            [self.prosody, "--config", self.configPath, "-F"],
            logPath=self.consolePath, cwd=self.workdir)
        deadline = time.monotonic() + self.startTimeout
        ports = [self.c2sPort] + ([self.componentPort]
                                  if self.componentDomain else [])
        for port in ports:
            if not waitForPort(self.host, port,
                               max(0.0, deadline - time.monotonic()),
                               self.process):
                status = self.process.poll()
                self.kill()
                raise PeerError(
                    f"Prosody did not listen on {self.host}:{port} within "
                    f"{self.startTimeout} s (exit status {status}).\n"
                    f"--- console:\n{self._read(self.consolePath)[-3000:]}\n"
                    f"--- log:\n{self.log()[-3000:]}")
        return self

    def running(self):
        """
        Whether the Prosody process is alive.
        """
        return self.process is not None and self.process.poll() is None

    def stop(self):
        """
        SIGTERM, wait up to C{stopTimeout} seconds, then SIGKILL. Waits
        until the ports no longer accept (bounded), so that a following
        L{start} binds them again cleanly.
        """
        process, self.process = self.process, None
        if process is None:
            return None
        self._resumeQuietly(process)
        status = terminate(process, self.stopTimeout)
        self._waitPortsClosed(2.0)
        return status

    def kill(self):
        """
        SIGKILL at once (a crash).
        """
        process, self.process = self.process, None
        if process is None:
            return None
        killProcessGroup(process, signal.SIGKILL)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self._waitPortsClosed(2.0)
        return process.returncode

    def restart(self, downtime=0.0):
        """
        L{stop}, stay down for C{downtime} seconds, L{start} again on the
        same ports with the same data.
        """
        self.stop()
        if downtime:
            time.sleep(downtime)
        return self.start()

    def pause(self):
        """
        SIGSTOP: the server hangs with its sockets open.
        """
        if not self.running():
            raise PeerError("Prosody is not running")
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self):
        """
        SIGCONT after L{pause}.
        """
        if not self.running():
            raise PeerError("Prosody is not running")
        os.killpg(self.process.pid, signal.SIGCONT)

    def _resumeQuietly(self, process):
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGCONT)
            except (ProcessLookupError, PermissionError):
                pass

    def _waitPortsClosed(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not portAccepts(self.host, self.c2sPort, 0.2):
                return True
            time.sleep(0.05)
        return False

    @staticmethod
    def _read(path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log(self):
        """
        Prosody's log file so far (text; empty if none).
        """
        return self._read(self.logPath)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def __repr__(self):
        return (f"<PrivateProsody {self.domain} c2s={self.host}:{self.c2sPort}"
                f" component={self.componentDomain}@{self.host}:"
                f"{self.componentPort} in {self.workdir}>")


def main(argv=None):
    """
    Run a private Prosody in the foreground until interrupted.
    """
    parser = argparse.ArgumentParser(
        prog="python -m xmppgw.localpeers",
        description="Run a private loopback-only Prosody for xmppgw.")
    parser.add_argument("workdir")
    parser.add_argument("--domain", default="xmpp.test")
    parser.add_argument("--component", default=None,
                        help="component domain (default gw.DOMAIN)")
    parser.add_argument("--secret", default="secret")
    parser.add_argument("--c2s-port", type=int, default=None)
    parser.add_argument("--component-port", type=int, default=None)
    parser.add_argument("--user", action="append", default=[],
                        metavar="NAME:PASSWORD")
    args = parser.parse_args(argv)
    users = {}
    for item in args.user:
        name, sep, password = item.partition(":")
        if not sep or not name:
            parser.error(f"--user wants NAME:PASSWORD, not {item!r}")
        users[name] = password
    server = PrivateProsody(
        args.workdir, domain=args.domain, componentDomain=args.component,
        componentSecret=args.secret, c2sPort=args.c2s_port,
        componentPort=args.component_port, users=users)
    try:
        server.start()
    except PeerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"prosody up: c2s {server.host}:{server.c2sPort} ({server.domain}), "
          f"component {server.componentDomain} on {server.host}:"
          f"{server.componentPort} secret {server.componentSecret!r}; "
          f"log {server.logPath}", flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    try:
        while not stopping and server.running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
