"""
Helpers shared by the benchmarks: statistics, the machine description and
the process-accounting readers (C{/proc/PID/stat}, C{/proc/PID/status}).

Run the benchmarks with the virtualenv's Python, for example
C{.venv/bin/python -m bench.inprocess}; C{make bench} runs them all.
"""

import json
import os
import platform
import subprocess
import sys
import time

from xmppgw import compiled
from xmppgw.gctune import nurserySize

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values, fraction):
    """
    The C{fraction} quantile (0..1) of C{values}, by linear interpolation.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def cpuPerMessage(timedNs, count, runCPU, runWallNs):
    """
    The CPU µs per message of a run: the wall time of its timed parts,
    C{timedNs} ns for C{count} messages, times the share of the run's wall
    time, C{runWallNs} ns, that the process spent on a CPU, C{runCPU}
    seconds (at most 1: the benchmark runs in one thread, so its timed
    parts cannot have used more CPU than their wall time).

    Why not the process's CPU clock around each timed part: that clock is
    a system call (about 265 ns a read on PyPy and 330 on CPython on the
    Xeon VM of rounds 11-21, against 50 and 100 for the wall clock). Until
    round 21, benchmark 1's XMPP -> SIP read it around each of its three
    timed parts per message, and its CPU figure came out 1.2-1.9 µs a
    message above its wall figure on PyPy and 1.7-3.2 µs on CPython (the
    same runs; docs/performance.rst, round 21). The share counts the time
    the machine gave to something else (a busy VM) in proportion, in the
    timed parts and out of them alike.

    @return: µs per message.
    """
    if count < 1 or runWallNs <= 0:
        raise ValueError("a run needs messages and time")
    share = min(1.0, runCPU * 1e9 / runWallNs)
    return timedNs * share / count / 1000.0


def interleaved(rounds, cases):
    """
    The order in which interleaved runs go: C{rounds} rounds of one run of
    each of C{cases} cases, each round starting with the next case (against
    order effects): the case indexes, one after another.
    """
    for k in range(rounds):
        for j in range(cases):
            yield (k + j) % cases


def machine(environ=os.environ):
    """
    A description of this machine: CPU model, cores, Python, date, and on
    PyPy the nursery in MB and the collector's settings from the
    environment (C{PYPY_GC_*}, as C{etc/xmppgw.service} sets them; PyPy's
    figures depend on them: see L{xmppgw.gctune}).

    @param environ: the environment the settings are read from.
    """
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    nursery = nurserySize()
    return {
        "cpu": model,
        "nproc": os.cpu_count(),
        "python": "%s %s" % (platform.python_implementation(),
                             platform.python_version()),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "pypy_nursery_mb": (None if nursery is None
                            else round(nursery / (1024 * 1024), 1)),
        # CPython ignores them: recorded only where they apply.
        "pypy_gc_settings": (None if nursery is None else {
            name: value for name, value in sorted(environ.items())
            if name.startswith("PYPY_GC_")}),
    }


def cpuSeconds(pid):
    """
    User plus system CPU time of process C{pid} so far, in seconds, from
    C{/proc/PID/stat} (fields 14 and 15).
    """
    with open("/proc/%d/stat" % (pid,)) as f:
        data = f.read()
    # The command name (field 2) may hold spaces; it ends at the last ')'.
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def statusKB(text, names):
    """
    The fields C{names} of the text of a C{/proc/PID/status}, in KiB, in
    that order; 0 for a field the text lacks.
    """
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in names:
            found[name] = int(value.split()[0])
    return tuple(found.get(name, 0) for name in names)


#: The memory fields of C{/proc/PID/status} the benchmarks record: the RSS
#: and its peak, and the RSS's two parts that matter when sizing a
#: machine. C{RssAnon} is the process's own (heap, PyPy's nursery and JIT
#: code); C{RssFile} is pages of mapped files (the interpreter, the
#: libraries), shared with every process that maps the same files (a
#: second gateway on the same interpreter adds only its own part) and which
#: the kernel may drop under memory pressure.
MEMORY_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def memoryKB(pid, names=("VmRSS", "VmHWM")):
    """
    The fields C{names} of C{/proc/PID/status} of process C{pid}, in KiB
    (by default C{(VmRSS, VmHWM)}; see L{MEMORY_FIELDS}).
    """
    with open("/proc/%d/status" % (pid,)) as f:
        return statusKB(f.read(), names)


def childPIDs(pid):
    """
    The PIDs of the direct children of C{pid}.
    """
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def processTree(pid):
    """
    C{pid} and its descendants, as they are now (parents before children).
    """
    pids = [pid]
    for p in pids:  # grows as it goes: bounded by the processes there are
        pids.extend(childPIDs(p))
    return pids


def treeCPUSeconds(pid):
    """
    User plus system CPU seconds of C{pid} and its descendants now (those
    that have exited are not counted: Kamailio's processes live as long as
    it does).
    """
    total = 0.0
    for p in processTree(pid):
        try:
            total += cpuSeconds(p)
        except OSError:
            pass  # gone since it was listed
    return total


def treePssKB(pid):
    """
    The proportional set size (C{Pss} of C{/proc/PID/smaps_rollup}) of
    C{pid} and its descendants, in KiB: their memory with the pages they
    share (Kamailio's shared memory, the libraries) counted once.
    """
    total = 0
    for p in processTree(pid):
        try:
            with open("/proc/%d/smaps_rollup" % (p,)) as f:
                total += statusKB(f.read(), ("Pss",))[0]
        except OSError:
            pass
    return total


def emit(results, path=None):
    """
    Print C{results} as JSON on stdout and, if C{path} is given, write it
    there too.
    """
    text = json.dumps(results, indent=2, sort_keys=False)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")


def resultsHeader(name, argv=None):
    """
    The first keys of every benchmark's results: its C{name}, the
    L{machine}, the L{gitRevision}, the command that ran it
    (C{python -m bench.NAME} with C{argv}, or the process's arguments when
    C{argv} is L{None} or empty), and how many of the gateway's modules
    this interpreter runs compiled (L{xmppgw.compiled}; 0 for plain
    Python, always 0 on PyPy). A gateway process the benchmark starts
    imports the same package, unless its C{twistd} is another
    interpreter's.
    """
    return {
        "benchmark": name,
        "machine": machine(),
        "revision": gitRevision(),
        "command": " ".join([os.path.basename(sys.executable), "-m",
                             "bench." + name] + (argv or sys.argv[1:])),
        "compiled_modules": len(compiled.status().compiled),
    }


def gitRevision():
    """
    The current commit of the work tree (with C{+dirty} if it has
    changes), or C{"unknown"}.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here,
            capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def python():
    """
    The interpreter running the benchmark.
    """
    return sys.executable
