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
    MEMORY_FIELDS, cpuSeconds, emit, memoryKB, resultsHeader)
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
        self.prosody = PrivateProsody(
            os.path.join(self.workdir, "prosody"), domain=DOMAIN,
            componentDomain=COMPONENT, users={"rx": "rxpass", "tx": "txpass"},
            offlineStorage=False, logLevel="warn",
            gcMode=getattr(args, "prosody_gc", None),
            nagle=getattr(args, "prosody_nagle", "on") != "off",
            extraComponents=[FLOOR_COMPONENT])
        self.sipPort = freePort("udp")
        self.sinkPort = freePort("udp")
        self.gateway = None
        self.holdLimit = getattr(args, "hold_limit", 0)

    def start(self):
        self.prosody.start()
        config = os.path.join(self.workdir, "gateway.toml")
        with open(config, "w") as f:
            f.write(
                "[xmpp]\n"
                'gateway_domain = "127.0.0.1"\n'
                f'xmpp_domain = "{COMPONENT}"\n'
                'xmpp_host = "127.0.0.1"\n'
                f"xmpp_port = {self.prosody.componentPort}\n"
                f'xmpp_password = "{self.prosody.componentSecret}"\n'
                f'outbound_proxy = "sip:127.0.0.1:{self.sinkPort}"\n'
                "reconnect_initial_interval = 0.2\n"
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
        self.logPath = os.path.join(self.workdir, "twistd.log")
        self.gateway = subprocess.Popen(
            self.gatewayCommand(config),
            cwd=self.workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "component link authenticated" in self._log():
                break
            if self.gateway.poll() is not None:
                break
            time.sleep(0.1)
        if "component link authenticated" not in self._log():
            raise RuntimeError("gateway did not come up:\n" + self._log()[-3000:])
        time.sleep(0.5)

    def gatewayCommand(self, config):
        """
        The command line of the gateway: C{--twistd} (for the benchmarks
        that have it, L{bench.soak} too), else L{twistd}.
        """
        return [getattr(self.args, "twistd", None) or twistd(), "-n",
                "--pidfile=", "--logfile", self.logPath,
                "xmppgw", "--config", config]

    def _log(self):
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        """
        Stop the gateway and Prosody, and remove the working directory
        (configurations and logs: tens of MB after a sweep) unless
        C{--keep-workdir} was given.
        """
        try:
            if self.gateway is not None:
                terminate(self.gateway, 5.0)
            self.prosody.stop()
        finally:
            if getattr(self.args, "keep_workdir", False):
                print("kept the gateway's and Prosody's logs in %s"
                      % (self.workdir,), file=sys.stderr)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _snapshot(self):
        return (cpuSeconds(self.gateway.pid),
                cpuSeconds(self.prosody.process.pid))

    def step(self, direction, rate):
        args = self.args
        count = max(1, min(args.max_count, int(rate * args.duration)))
        idle = 3.0
        gw0, pr0 = self._snapshot()
        if direction != "xmpp":
            rx = Peer("xmpp-recv", host="127.0.0.1",
                      port=self.prosody.c2sPort, user="rx", domain=DOMAIN,
                      password="rxpass", expect=count,
                      timeout=args.duration * 3 + 30, idle=idle)
            rx.ready()
            gw0, pr0 = self._snapshot()
            if direction == "floor":
                load = Peer("component-load", host="127.0.0.1",
                            port=self.prosody.componentPort,
                            domain=FLOOR_COMPONENT,
                            secret=self.prosody.componentSecret,
                            target="rx@%s" % (DOMAIN,), users=args.users,
                            rate=rate, count=count, drain=idle)
            else:
                load = Peer("sip-load", proto=direction, host="127.0.0.1",
                            port=self.sipPort,
                            target="sip:rx*%s@127.0.0.1" % (DOMAIN,),
                            rate=rate, count=count, users=args.users,
                            drain=idle + 2)
            sent = load.result(args.duration * 3 + 30)
            got = rx.result(args.duration * 3 + 30)
        else:
            sink = Peer("sip-recv", port=self.sinkPort, expect=count,
                        timeout=args.duration * 3 + 30, idle=idle)
            sink.ready()
            gw0, pr0 = self._snapshot()
            load = Peer("xmpp-load", host="127.0.0.1",
                        port=self.prosody.c2sPort, user="tx", domain=DOMAIN,
                        password="txpass",
                        targetFormat="user%%d*sip.example.com@%s" % (COMPONENT,),
                        users=args.users, rate=rate, count=count, drain=idle)
            sent = load.result(args.duration * 3 + 30)
            got = sink.result(args.duration * 3 + 30)
        gw1, pr1 = self._snapshot()
        rss, hwm = memoryKB(self.gateway.pid)
        prosodyHWM = memoryKB(self.prosody.process.pid)[1]
        delivered = got["received"]
        row = {
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
        print("%(direction)-4s rate %(rate)6d: delivered %(delivered)6d/"
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
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the working directory (the gateway's "
                        "and Prosody's configurations and logs) instead of "
                        "removing it")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.twistd:
        args.twistd = os.path.abspath(args.twistd)  # the gateway runs elsewhere
    if (not 0 < args.duration <= 60 or not 0 < args.max_count <= 10**6
            or not 0 <= args.warmup <= 60):
        parser.error("--duration must be in (0, 60], --max-count in "
                     "(0, 1e6], --warmup in [0, 60]")
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
        # Inherited by the gateway's twistd (PyPy's nursery size, major
        # collection step and threshold; see docs/deployment.rst):
        # recorded, since they change PyPy's figures.
        "pypy_gc_nursery": os.environ.get("PYPY_GC_NURSERY"),
        "pypy_gc_increment_step": os.environ.get("PYPY_GC_INCREMENT_STEP"),
        "pypy_gc_major_collect": os.environ.get("PYPY_GC_MAJOR_COLLECT"),
        "steps": [],
    }
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
        for direction in args.directions.split(","):
            for rate in [int(r) for r in args.rates.split(",")]:
                row = bench.step(direction, rate)
                results["steps"].append(row)
                if row["lost"] and not args.keep_going:
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
