"""
Benchmark 2: end to end on loopback, through a real private Prosody.

Setup: a private Prosody (L{xmppgw.localpeers.PrivateProsody}, loopback,
no TLS) with the gateway as its component; the gateway runs as C{twistd -n
xmppgw --config FILE} in its own process with the default settings except
the ports, C{queue_limit = 1000} and the rate limits of C{[policy]} turned
off (C{rate_per_source}, C{rate_per_sender}: their defaults, 500/s per
source address and 20/s per sender, would be measured instead of the
gateway; a deployment behind one SIP proxy raises them the same way). The
load peers
(L{bench.peers}) run as separate processes.

  - SIP -> XMPP, over UDP and over TCP: an open-loop generator sends SIP
    MESSAGEs at a fixed rate (C{--rates}, each step C{--duration} seconds,
    at most C{--max-count} messages) to C{user*xmpp.test@gateway}; one raw
    XMPP client receives them.
  - C{floor}: the same stanzas as SIP -> XMPP, written straight to Prosody
    by a minimal component (L{bench.peers.componentLoad}, as
    C{floor.xmpp.test}) in the gateway's place and received by the same
    client: what Prosody and the receiver add on this machine, the floor
    under the gateway's figures (the gateway's CPU column then shows it
    idle).
  - XMPP -> SIP: a raw XMPP client sends C{<message/>}s at a fixed rate to
    C{--users} distinct SIP users (the gateway sends at most one MESSAGE in
    flight per destination, so one destination would measure round trips,
    not capacity); the gateway's C{outbound_proxy} is a UDP SIP agent that
    answers 200.

With C{--reference XMPP_SO}, every step also runs through the C
implementation the gateway replaces, Kamailio's xmpp module (built by
C{bench/kamailio-xmpp.sh} with the one fix that makes it run; see
L{KamailioReference}), as a second component of the same Prosody: each
rate of each direction runs once through each, one right after the other
(the order alternating from step to step), so that the gateway's CPU per
message and the C module's are measured on the same machine in the same
minute. Their rows carry C{"gateway": "xmppgw"} or C{"kamailio"}.

With C{--callgrind} the gateway runs under valgrind's callgrind, started
with its instrumentation off (start-up is not counted), and each step also
reports the instructions the gateway's process executed from the start of
the load to the end of the step's drain, per message sent
(C{gateway_instructions_per_msg}; L{CallgrindCounter}): the user-space
cost of a message end to end, the reactor, the socket calls, the timers
and the log file included, which benchmark 1's count
(L{bench.instructions}) leaves out, the steps of one run within 0.2 %
of each other (1.5 % before round 31's Timer J/K change) where the CPU
columns vary by 10 % and more; the first step of each direction differs
(the UDP server transactions of a step end 32 s later, Timer J, inside
the next step's window). Under callgrind the gateway runs some fifty
times slower, so the rates are at most
L{CALLGRIND_MAX_RATE} (each message then runs alone, the low-rate case);
its CPU and latency columns are callgrind's, not the gateway's. The
results are of kind C{"endtoend-instructions"}, which L{bench.targets}
does not read. Kernel time (the system calls themselves) is not counted.

Per step: offered and delivered rate, loss, duplicates, p50/p99/max
latency (send -> delivery, both clocks C{CLOCK_MONOTONIC}), the gateway's
and Prosody's CPU per message (C{/proc/PID/stat} utime+stime over the step
divided by the messages sent), the load peers' CPU per message (each
reports the C{process_time} of its timed loop) and how many sends ran more
than 1 ms behind the open-loop schedule, the gateway's RSS and peak RSS
(VmHWM). The sweep of a direction stops after the first step with loss
(saturation) unless C{--keep-going}.

Usage::

    .venv/bin/python -m bench.endtoend [--rates 500,1000,...] [--duration S]
        [--directions udp,tcp,xmpp,floor] [--json FILE]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from bench.common import (
    MEMORY_FIELDS, cpuSeconds, emit, memoryKB, resultsHeader, treeCPUSeconds,
    treePssKB)
from xmppgw.localpeers import PrivateProsody, freePort, terminate

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOMAIN = "xmpp.test"
COMPONENT = "gw.xmpp.test"
#: What C{--directions} may name.
DIRECTIONS = ("udp", "tcp", "xmpp", "floor")
#: The component the floor's load peer connects as (the gateway holds
#: L{COMPONENT}).
FLOOR_COMPONENT = "floor.xmpp.test"
#: The component Kamailio's xmpp module connects as (C{--reference}).
REFERENCE_COMPONENT = "kam.xmpp.test"
#: The highest rate C{--callgrind} accepts: on CPython the gateway spends
#: about 7 ms of CPU a message under callgrind (round 31), a third of a CPU
#: at 50/s.
CALLGRIND_MAX_RATE = 200
#: How long the gateway may take to start under callgrind (about 20 s on
#: CPython with the instrumentation off; twistd alone takes 1).
CALLGRIND_START_SECONDS = 300.0
#: How long a dump asked of callgrind may take to appear.
CALLGRIND_DUMP_SECONDS = 120.0


#: The nursery size in the gateway's start-up report (L{xmppgw.gctune}):
#: "... area (nursery): 4.0 MB ..." or "PyPy chose a 150.0 MB ...".
_NURSERY = re.compile(r"(?:\(nursery\): |PyPy chose a )([0-9.]+) MB")


def nurseryFromLog(text):
    """
    The PyPy nursery in MB that the gateway reported at start-up in its log
    C{text}, or L{None} (CPython, which has none).
    """
    for line in text.splitlines():
        if "[xmppgw.gctune#" in line:
            match = _NURSERY.search(line)
            if match:
                return float(match.group(1))
    return None


def twistd():
    path = os.path.join(os.path.dirname(sys.executable), "twistd")
    return path if os.path.exists(path) else "twistd"


def shebangInterpreter(script):
    """
    The interpreter a script's C{#!} line names (through C{env} too), or
    L{sys.executable} if it names none: what runs C{twistd} when valgrind
    is asked to run it (valgrind runs the interpreter, not the script).
    """
    try:
        with open(script, "rb") as f:
            first = f.readline(4096).decode("utf-8", "replace")
    except OSError:
        return sys.executable
    if not first.startswith("#!"):
        return sys.executable
    words = first[2:].split()
    if words and os.path.basename(words[0]) == "env" and len(words) > 1:
        words = words[1:]
    return words[0] if words else sys.executable


def callgrindCommand(command, outDir):
    """
    The gateway's command line C{command} (C{twistd} first) run under
    callgrind with its instrumentation off until L{CallgrindCounter} turns
    it on, the dumps written to C{outDir}.
    """
    script = command[0]
    if os.sep not in script:
        script = shutil.which(script) or script
    return (["valgrind", "--tool=callgrind", "--instr-atstart=no",
             "--callgrind-out-file=" + os.path.join(outDir, "callgrind.out.%p"),
             shebangInterpreter(script), script] + list(command[1:]))


def callgrindTotal(path):
    """
    The instructions a callgrind dump counted: its C{totals:} (or
    C{summary:}) line.
    """
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise ValueError("%s: no totals line (not a complete callgrind dump)"
                     % (path,))


class CallgrindCounter:
    """
    The instructions a process run under callgrind (L{callgrindCommand})
    executes between L{start} and L{stop}, through C{callgrind_control}:
    the first L{start} turns the instrumentation on, each one zeroes the
    counters; L{stop} asks for a dump and reads its total.
    """

    def __init__(self, pid, outDir, run=subprocess.run, sleep=time.sleep,
                 clock=time.monotonic):
        self.pid = pid
        self.outDir = outDir
        self._run = run
        self._sleep = sleep
        self._clock = clock
        self._on = False

    def _control(self, *options):
        self._run(["callgrind_control"] + list(options) + [str(self.pid)],
                  check=True, capture_output=True, timeout=60)

    def _dumps(self):
        prefix = "callgrind.out.%d." % (self.pid,)
        return {name for name in os.listdir(self.outDir)
                if name.startswith(prefix)}

    def start(self):
        if not self._on:
            self._control("-i", "on")
            self._on = True
        self._control("-z")

    def stop(self):
        """
        Dump, and return the instructions counted since L{start}.
        """
        before = self._dumps()
        self._control("-d")
        deadline = self._clock() + CALLGRIND_DUMP_SECONDS
        # Bounded by the deadline: the dump is written by the process
        # itself, at its next basic block.
        while True:
            for name in sorted(self._dumps() - before):
                try:
                    return callgrindTotal(os.path.join(self.outDir, name))
                except ValueError:
                    pass  # still being written
            if self._clock() >= deadline:
                raise RuntimeError("callgrind wrote no dump for process %d "
                                   "within %d s" % (self.pid,
                                                    CALLGRIND_DUMP_SECONDS))
            self._sleep(0.2)


class Peer:
    """
    A L{bench.peers} process.
    """

    def __init__(self, role, **kwargs):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.peers", role, json.dumps(kwargs)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL)

    def ready(self, timeout=15):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("peer died: %s" % self.process.stderr.read()
                               .decode()[-2000:])
        return json.loads(line)

    def result(self, timeout):
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        lines = [l for l in out.decode().splitlines() if l.strip()]
        if not lines or self.process.returncode != 0:
            raise RuntimeError("peer failed (%s): %s" % (
                self.process.returncode, err.decode()[-2000:]))
        return json.loads(lines[-1])


def readLog(path):
    """
    The text of the log file C{path} so far, or C{""} if there is none yet.
    """
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def connectionsTo(port, tables=("/proc/net/tcp", "/proc/net/tcp6")):
    """
    How many established TCP connections (IPv4 and IPv6) have C{port} as
    their remote port now (the kernel's C{tables}).
    """
    wanted = ":%04X" % (port,)
    count = 0
    for table in tables:
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[2].endswith(wanted) and fields[3] == "01":
                        count += 1
        except (OSError, StopIteration):
            pass
    return count


#: Kamailio's configuration for the reference: what the module's README
#: gives for a stand-alone gateway (absorb retransmissions with
#: C{t_newtran}, then C{xmpp_send_message()} and C{200}), in component
#: mode, with the gateway's own addresses and ports. C{children=2}: one UDP
#: worker per core of the 2-core machine the issue names; C{debug=2}, the
#: level of Debian's default C{kamailio.cfg}, logged to a file as the
#: gateway's log is.
KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
check_via=no
dns=no
rev_dns=no
listen=udp:127.0.0.1:{sipPort}
listen=tcp:127.0.0.1:{sipPort}
alias=127.0.0.1
mpath="{modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
loadmodule "{xmppSo}"
modparam("xmpp", "backend", "component")
modparam("xmpp", "domain_separator", "*")
modparam("xmpp", "gateway_domain", "127.0.0.1")
modparam("xmpp", "xmpp_domain", "{component}")
modparam("xmpp", "xmpp_host", "127.0.0.1")
modparam("xmpp", "xmpp_port", {xmppPort})
modparam("xmpp", "xmpp_password", "{secret}")
modparam("xmpp", "outbound_proxy", "sip:127.0.0.1:{sinkPort}")
request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!t_newtran()) {{
        sl_reply_error();
        exit;
    }}
    if (method == "MESSAGE") {{
        if (xmpp_send_message()) {{
            t_reply("200", "Accepted");
        }} else {{
            t_reply("404", "Not found");
        }}
        exit;
    }}
    t_reply("503", "Service unavailable");
}}
"""

#: Where Debian's kamailio package keeps its modules.
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


def kamailioVersion():
    """
    The first line of C{kamailio -V} ("version: kamailio 5.6.3 ..."), or
    L{None}.
    """
    try:
        out = subprocess.run(["kamailio", "-V"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


class KamailioReference:
    """
    Kamailio (Debian's package) with the xmpp module C{xmppSo}, connected
    to the benchmark's Prosody as L{REFERENCE_COMPONENT}: the C module
    of issue 4, run beside the gateway (C{--reference}). Its CPU is that
    of all its processes (the main one, the UDP workers, the timers and
    the module's XMPP process), its memory their summed C{Pss}.
    """

    def __init__(self, workdir, xmppSo, prosody, sinkPort, modules=None):
        self.workdir = workdir
        self.xmppSo = xmppSo
        self.prosody = prosody
        self.sinkPort = sinkPort
        self.modules = modules or KAMAILIO_MODULES
        # The same port over UDP and TCP, as the gateway's.
        self.sipPort = freePort("both")
        self.component = REFERENCE_COMPONENT
        self.process = None
        self.logPath = os.path.join(workdir, "kamailio.log")
        #: Kamailio's shared memory (C{-m}) and each process's own (C{-M}),
        #: in MB. Debian's defaults (64 and 8, C{/etc/default/kamailio})
        #: run out at about 5,000 transactions alive: every MESSAGE's
        #: transaction lives 5 s after its reply (the wait timer), so from
        #: 1,000/s on Kamailio answered the rest 500 (round 26). The
        #: benchmark measures CPU, not that limit; the memory is only used
        #: as the transactions need it.
        self.sharedMB = 1024
        self.privateMB = 16

    def config(self):
        return KAMAILIO_CFG.format(
            sipPort=self.sipPort, modules=self.modules, xmppSo=self.xmppSo,
            component=self.component, xmppPort=self.prosody.componentPort,
            secret=self.prosody.componentSecret, sinkPort=self.sinkPort)

    def start(self, timeout=20.0):
        path = os.path.join(self.workdir, "kamailio.cfg")
        with open(path, "w") as f:
            f.write(self.config())
        with open(self.logPath, "w") as log:
            self.process = subprocess.Popen(
                ["kamailio", "-f", path, "-DD", "-E", "-w", self.workdir,
                 "-Y", self.workdir, "-P",
                 os.path.join(self.workdir, "kamailio.pid"),
                 "-m", str(self.sharedMB), "-M", str(self.privateMB)],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        # Up when its XMPP process has connected to Prosody's component
        # port (the module logs nothing of it at debug=2); the handshake
        # that follows takes milliseconds. A failed handshake would show
        # as the steps' loss.
        before = connectionsTo(self.prosody.componentPort)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if connectionsTo(self.prosody.componentPort) > before:
                time.sleep(1.0)
                return
            time.sleep(0.1)
        raise RuntimeError("Kamailio's xmpp module did not connect:\n"
                           + self._log()[-3000:])

    def _log(self):
        return readLog(self.logPath)

    def cpuSeconds(self):
        return treeCPUSeconds(self.process.pid)

    def memoryKB(self):
        return treePssKB(self.process.pid)

    def stop(self):
        if self.process is not None:
            terminate(self.process, 5.0)


def _perMessage(result, count):
    """
    A load peer's CPU per message in µs, from the C{cpu_seconds} it
    reported, or L{None}.
    """
    cpu = result.get("cpu_seconds")
    return None if cpu is None else round(cpu / count * 1e6, 1)


class Bench:
    def __init__(self, args):
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="xmppgw-bench-")
        reference = getattr(args, "reference", None)
        self.prosody = PrivateProsody(
            os.path.join(self.workdir, "prosody"), domain=DOMAIN,
            componentDomain=COMPONENT, users={"rx": "rxpass", "tx": "txpass"},
            offlineStorage=False, logLevel="warn",
            gcMode=getattr(args, "prosody_gc", None),
            nagle=getattr(args, "prosody_nagle", "on") != "off",
            extraComponents=[FLOOR_COMPONENT]
            + ([REFERENCE_COMPONENT] if reference else []))
        self.sipPort = freePort("udp")
        self.sinkPort = freePort("udp")
        self.gateway = None
        #: With C{--callgrind}: the L{CallgrindCounter} of the gateway.
        self.counter = None
        self.holdLimit = getattr(args, "hold_limit", 0)
        #: [xmpp] confirm_delivery, or L{None} for the gateway's default.
        self.confirmDelivery = getattr(args, "confirm_delivery", None)
        #: The C module beside the gateway (C{--reference}), or L{None}.
        self.reference = None
        if reference:
            self.reference = KamailioReference(
                self.workdir, reference, self.prosody, self.sinkPort)

    def start(self):
        self.prosody.start()
        if self.reference is not None:
            self.reference.start()
        config = os.path.join(self.workdir, "gateway.toml")
        with open(config, "w") as f:
            f.write(self.gatewayConfig())
        self.logPath = os.path.join(self.workdir, "twistd.log")
        command = self.gatewayCommand(config)
        wait = 20
        if getattr(self.args, "callgrind", False):
            command = callgrindCommand(command, self.workdir)
            wait = CALLGRIND_START_SECONDS
        self.gateway = subprocess.Popen(
            command,
            cwd=self.workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if "component link authenticated" in self._log():
                break
            if self.gateway.poll() is not None:
                break
            time.sleep(0.1)
        if "component link authenticated" not in self._log():
            raise RuntimeError("gateway did not come up:\n" + self._log()[-3000:])
        time.sleep(0.5)
        if getattr(self.args, "callgrind", False):
            self.counter = CallgrindCounter(self.gateway.pid, self.workdir)

    def gatewayConfig(self):
        """
        The gateway's configuration file: the defaults, but the addresses
        and ports of this run, its C{[sip] queue_limit}, C{hold_limit} and
        C{[xmpp] confirm_delivery} where given, the rate limits off and
        C{[log] messages} as asked.
        """
        return (
            "[xmpp]\n"
            'gateway_domain = "127.0.0.1"\n'
            f'xmpp_domain = "{COMPONENT}"\n'
            'xmpp_host = "127.0.0.1"\n'
            f"xmpp_port = {self.prosody.componentPort}\n"
            f'xmpp_password = "{self.prosody.componentSecret}"\n'
            f'outbound_proxy = "sip:127.0.0.1:{self.sinkPort}"\n'
            "reconnect_initial_interval = 0.2\n"
            + (f'confirm_delivery = "{self.confirmDelivery}"\n'
               if self.confirmDelivery else "") +
            "[sip]\n"
            f'listen = ["udp:127.0.0.1:{self.sipPort}", '
            f'"tcp:127.0.0.1:{self.sipPort}"]\n'
            "queue_limit = 1000\n"
            + (f"hold_limit = {self.holdLimit}\n"
               if self.holdLimit else "") +
            "[policy]\n"
            "rate_per_source = 0.0\n"
            "rate_per_sender = 0.0\n"
            "[log]\n"
            f"messages = {'true' if getattr(self.args, 'log', True) else 'false'}\n")

    def gatewayCommand(self, config):
        """
        The command line of the gateway: C{--twistd} (for the benchmarks
        that have it, L{bench.soak} too), else L{twistd}.
        """
        return [getattr(self.args, "twistd", None) or twistd(), "-n",
                "--pidfile=", "--logfile", self.logPath,
                "xmppgw", "--config", config]

    def _log(self):
        return readLog(self.logPath)

    def stop(self):
        """
        Stop the gateway and Prosody, and remove the working directory
        (configurations and logs: tens of MB after a sweep) unless
        C{--keep-workdir} was given.
        """
        try:
            if self.gateway is not None:
                terminate(self.gateway, 5.0)
            if self.reference is not None:
                self.reference.stop()
            self.prosody.stop()
        finally:
            if getattr(self.args, "keep_workdir", False):
                print("kept the gateway's and Prosody's logs in %s"
                      % (self.workdir,), file=sys.stderr)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _snapshot(self, reference=False):
        gateway = (self.reference.cpuSeconds() if reference
                   else cpuSeconds(self.gateway.pid))
        return (gateway, cpuSeconds(self.prosody.process.pid))

    def step(self, direction, rate, reference=False):
        """
        One step: C{direction} at C{rate} through the gateway, or through
        the C module if C{reference} (then the row's C{gateway_*} figures
        are Kamailio's).
        """
        args = self.args
        sipPort, component = self.sipPort, COMPONENT
        if reference:
            sipPort = self.reference.sipPort
            component = self.reference.component
        count = max(1, min(args.max_count, int(rate * args.duration)))
        idle = 3.0
        gw0, pr0 = self._snapshot()
        if direction != "xmpp":
            rx = Peer("xmpp-recv", host="127.0.0.1",
                      port=self.prosody.c2sPort, user="rx", domain=DOMAIN,
                      password="rxpass", expect=count,
                      timeout=args.duration * 3 + 30, idle=idle)
            rx.ready()
            gw0, pr0 = self._snapshot(reference)
            if self.counter is not None:
                self.counter.start()
            if direction == "floor":
                load = Peer("component-load", host="127.0.0.1",
                            port=self.prosody.componentPort,
                            domain=FLOOR_COMPONENT,
                            secret=self.prosody.componentSecret,
                            target="rx@%s" % (DOMAIN,), users=args.users,
                            rate=rate, count=count, drain=idle)
            else:
                load = Peer("sip-load", proto=direction, host="127.0.0.1",
                            port=sipPort,
                            target="sip:rx*%s@127.0.0.1" % (DOMAIN,),
                            rate=rate, count=count, users=args.users,
                            drain=idle + 2)
            sent = load.result(args.duration * 3 + 30)
            got = rx.result(args.duration * 3 + 30)
        else:
            sink = Peer("sip-recv", port=self.sinkPort, expect=count,
                        timeout=args.duration * 3 + 30, idle=idle)
            sink.ready()
            gw0, pr0 = self._snapshot(reference)
            if self.counter is not None:
                self.counter.start()
            load = Peer("xmpp-load", host="127.0.0.1",
                        port=self.prosody.c2sPort, user="tx", domain=DOMAIN,
                        password="txpass",
                        targetFormat="user%%d*sip.example.com@%s" % (component,),
                        users=args.users, rate=rate, count=count, drain=idle)
            sent = load.result(args.duration * 3 + 30)
            got = sink.result(args.duration * 3 + 30)
        gw1, pr1 = self._snapshot(reference)
        instructions = None
        if self.counter is not None:
            instructions = self.counter.stop()
        if reference:
            # Its processes' summed Pss (shared memory counted once); no
            # peak is kept for a tree.
            rss = hwm = self.reference.memoryKB()
        else:
            rss, hwm = memoryKB(self.gateway.pid)
        prosodyHWM = memoryKB(self.prosody.process.pid)[1]
        delivered = got["received"]
        row = {
            "gateway": "kamailio" if reference else "xmppgw",
            "direction": direction,
            "rate": rate,
            "sent": count,
            "offered_rate": sent.get("offered_rate"),
            "delivered": delivered,
            "lost": count - delivered,
            "duplicates": got.get("duplicates", 0),
            "delivered_rate": round(delivered / sent["send_seconds"], 1)
            if sent.get("send_seconds") else None,
            "p50_ms": got.get("p50_ms"),
            "p99_ms": got.get("p99_ms"),
            "max_ms": got.get("max_ms"),
            "gateway_cpu_us_per_msg": round((gw1 - gw0) / count * 1e6, 1),
            "prosody_cpu_us_per_msg": round((pr1 - pr0) / count * 1e6, 1),
            # The load peers' own CPU (their timed loops), so that the
            # whole budget of the shared machine is visible.
            "sender_cpu_us_per_msg": _perMessage(sent, count),
            "receiver_cpu_us_per_msg": _perMessage(got, count),
            "sends_late_over_1ms": sent.get("late_over_1ms"),
            "max_send_lateness_ms": sent.get("max_lateness_ms"),
            "gateway_rss_mb": round(rss / 1024, 1),
            "gateway_peak_rss_mb": round(hwm / 1024, 1),
            "prosody_peak_rss_mb": round(prosodyHWM / 1024, 1),
            "answers": sent.get("answers"),
            "error_stanzas": sent.get("error_stanzas",
                                      got.get("error_stanzas")),
        }
        if instructions is not None:
            row["gateway_instructions_per_msg"] = round(instructions / count)
            print("%s %s rate %d: %d instructions per message" % (
                row["gateway"], direction, rate,
                row["gateway_instructions_per_msg"]), file=sys.stderr)
        print("%(gateway)-8s %(direction)-4s rate %(rate)6d: delivered %(delivered)6d/"
              "%(sent)-6d p50 %(p50_ms)s p99 %(p99_ms)s max %(max_ms)s ms, "
              "gw %(gateway_cpu_us_per_msg)s us/msg, prosody "
              "%(prosody_cpu_us_per_msg)s us/msg, sender "
              "%(sender_cpu_us_per_msg)s, receiver %(receiver_cpu_us_per_msg)s"
              " us/msg, rss %(gateway_rss_mb)s MB "
              "(peak %(gateway_peak_rss_mb)s, prosody's "
              "%(prosody_peak_rss_mb)s), sends >1 ms late "
              "%(sends_late_over_1ms)s" % row, file=sys.stderr)
        # Let the transactions of this step drain (Timer J is 32 s, but
        # they only cost memory; the next step starts when the gateway is
        # idle again).
        time.sleep(1.0)
        return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="500,1000,2000,4000,8000,12000,16000")
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds per step (default 3)")
    parser.add_argument("--max-count", type=int, default=50000,
                        help="most messages per step (default 50000)")
    parser.add_argument("--directions", default="udp,tcp,xmpp",
                        help="comma-separated: udp, tcp (SIP -> XMPP), xmpp "
                        "(XMPP -> SIP), floor (Prosody without the gateway); "
                        "default udp,tcp,xmpp")
    parser.add_argument("--users", type=int, default=100,
                        help="distinct SIP users (default 100)")
    parser.add_argument("--no-log", dest="log", action="store_false",
                        help="[log] messages = false (default: true, as "
                        "in the default configuration)")
    parser.add_argument("--keep-going", action="store_true",
                        help="do not stop a sweep at the first lossy step")
    parser.add_argument("--twistd",
                        help="the twistd that runs the gateway (default: "
                        "the one next to this Python); e.g. "
                        ".venv-pypy/bin/twistd to run it on PyPy")
    parser.add_argument("--hold-limit", type=int, default=0,
                        help="[sip] hold_limit for the gateway (default: "
                        "its default, 10,000 SIP MESSAGEs waiting for their "
                        "confirmation); under overload or a latency spike "
                        "the ones beyond it get 503")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds of untimed load (UDP, the first "
                        "rate) before the sweep, for PyPy's JIT "
                        "(default 0)")
    parser.add_argument("--prosody-gc", choices=["generational"],
                        help="Prosody's garbage collector: generational "
                        "(Lua 5.4's, the gc option of Prosody 0.12; see "
                        "docs/deployment.rst) instead of Prosody's default "
                        "(incremental, collecting when memory grows 5 %%)")
    parser.add_argument("--prosody-nagle", choices=["on", "off"],
                        default="on",
                        help="Nagle's algorithm on Prosody's sockets: on "
                        "(Prosody's default) or off (network_settings = "
                        "{ nagle = false }; see docs/deployment.rst)")
    parser.add_argument("--confirm-delivery",
                        choices=("ping", "tcp", "kernel", "none"),
                        help="[xmpp] confirm_delivery of the gateway "
                        "(default: its default, ping); none answers the SIP "
                        "MESSAGE once the stanza is written, as the C "
                        "module does")
    parser.add_argument("--reference", metavar="XMPP_SO",
                        help="also run every step (but the floor's) "
                        "through Kamailio with this xmpp module, the C "
                        "implementation of issue 4 (built by "
                        "bench/kamailio-xmpp.sh), as a second component "
                        "of the same Prosody")
    parser.add_argument("--callgrind", action="store_true",
                        help="run the gateway under valgrind's callgrind "
                        "and count its instructions per message in each "
                        "step (rates at most %d; results of kind "
                        "endtoend-instructions)" % (CALLGRIND_MAX_RATE,))
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the working directory (the gateway's "
                        "and Prosody's configurations and logs) instead of "
                        "removing it")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.twistd:
        args.twistd = os.path.abspath(args.twistd)  # the gateway runs elsewhere
    if args.reference:
        args.reference = os.path.abspath(args.reference)
        if not os.path.isfile(args.reference):
            parser.error("--reference %s: no such file (make bench builds "
                         "it with bench/kamailio-xmpp.sh)" % (args.reference,))
    if (not 0 < args.duration <= 60 or not 0 < args.max_count <= 10**6
            or not 0 <= args.warmup <= 60):
        parser.error("--duration must be in (0, 60], --max-count in "
                     "(0, 1e6], --warmup in [0, 60]")
    if args.callgrind:
        if args.reference:
            parser.error("--callgrind counts the gateway alone: not with "
                         "--reference")
        if any(int(r) > CALLGRIND_MAX_RATE for r in args.rates.split(",")):
            parser.error("--callgrind: rates of at most %d (the gateway "
                         "runs some fifty times slower under callgrind)"
                         % (CALLGRIND_MAX_RATE,))
        if shutil.which("valgrind") is None:
            parser.error("--callgrind needs valgrind (make bench installs "
                         "it)")
    unknown = set(args.directions.split(",")) - set(DIRECTIONS)
    if unknown:
        parser.error("unknown --directions %s (known: %s)" % (
            ",".join(sorted(unknown)), ",".join(DIRECTIONS)))
    bench = Bench(args)
    results = {
        **resultsHeader("endtoend", argv),
        "duration": args.duration,
        "log_messages": args.log,
        "gateway_twistd": args.twistd or twistd(),
        "warmup_seconds": args.warmup,
        "hold_limit": args.hold_limit or None,
        "prosody_gc": args.prosody_gc or "default",
        "prosody_nagle": args.prosody_nagle,
        "confirm_delivery": args.confirm_delivery or "ping",
        "reference": None if not args.reference else {
            "gateway": "kamailio", "xmpp_so": args.reference,
            "kamailio": kamailioVersion()},
        # Inherited by the gateway's twistd (PyPy's nursery size, major
        # collection step and threshold; see docs/deployment.rst):
        # recorded, since they change PyPy's figures.
        "pypy_gc_nursery": os.environ.get("PYPY_GC_NURSERY"),
        "pypy_gc_increment_step": os.environ.get("PYPY_GC_INCREMENT_STEP"),
        "pypy_gc_major_collect": os.environ.get("PYPY_GC_MAJOR_COLLECT"),
        "steps": [],
    }
    if args.callgrind:
        # Its own kind (the command stays bench.endtoend's).
        results["benchmark"] = "endtoend-instructions"
    try:
        bench.start()
        rss, _, anon, mapped = memoryKB(bench.gateway.pid, MEMORY_FIELDS)
        results["gateway_idle_rss_mb"] = round(rss / 1024, 1)
        results["gateway_idle_rss_anon_mb"] = round(anon / 1024, 1)
        results["gateway_idle_rss_file_mb"] = round(mapped / 1024, 1)
        # What PyPy uses, whether set above or chosen by PyPy itself.
        results["gateway_pypy_nursery_mb"] = nurseryFromLog(bench._log())
        warmupRate = int(args.rates.split(",")[0])
        warmupEnd = time.monotonic() + args.warmup
        # Bounded: --warmup is at most 60 s, one step of --duration at a time.
        while time.monotonic() < warmupEnd:
            bench.step("udp", warmupRate)
        order = 0
        for direction in args.directions.split(","):
            for rate in [int(r) for r in args.rates.split(",")]:
                # With the reference, both at this rate, one right after
                # the other, the order alternating from step to step.
                subjects = [False]
                if bench.reference is not None and direction != "floor":
                    subjects = [False, True] if order % 2 == 0 else [True, False]
                    order += 1
                rows = [bench.step(direction, rate, reference)
                        for reference in subjects]
                results["steps"].extend(rows)
                if any(row["lost"] for row in rows) and not args.keep_going:
                    break
        results["gateway_final_rss_mb"] = round(
            memoryKB(bench.gateway.pid)[0] / 1024, 1)
        results["gateway_peak_rss_mb"] = round(
            memoryKB(bench.gateway.pid)[1] / 1024, 1)
    finally:
        bench.stop()
    emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
