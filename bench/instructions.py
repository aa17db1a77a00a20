"""
Benchmark 1 counted in instructions instead of time: how many machine
instructions one message costs the gateway, under valgrind's callgrind.

Timings on a shared VM vary by 10-25 % from run to run (and more when its
host is busy), which hides the few-percent changes an optimisation round
is made of. An instruction count does not depend on the neighbours. It is
not a time (cache misses and the wake-ups of benchmark 2 are not in it)
and it compares two trees; use the timed benchmarks for the figures.

Method: benchmark 1's gateway (L{bench.inprocess.Gateway}, the defaults:
log on, the confirmation ping, the policy) in a child process under
callgrind, started with collection off (C{--collect-atstart=no}). The
child runs the warm-up, turns collection on, runs C{--count} messages
and turns it off again, through a valgrind client request
(C{CALLGRIND_TOGGLE_COLLECT}) in a small C library built for the run
with C{gcc} (L{markerLibrary}); callgrind's C{Collected} count divided by
C{--count} is the cost of one message in benchmark 1's loop. Start-up,
imports and the warm-up are not counted at all. The count also holds
what the loop does for each message outside the timed parts: building
the SIP or XMPP bytes it feeds in and, XMPP -> SIP, the C{200 OK} its SIP
peer builds for each request (L{bench.inprocess.okFor}: a regular
expression over the request). The same child on
L{bench.inprocess.NullGateway} (which does nothing but answer as the
gateway would) counts that loop; the results give both and the
gateway's own count, the difference.

Until round 30 each count was the difference of two whole-process
counts, a child with the warm-up only and one with the counted messages
too. On CPython that agreed with this within about 1 %; on PyPy the two
processes' counts varied by up to 10 % of a whole run (11-14 billion
instructions), several times the 8,000 messages' share, so one count
per message could be off by half (round 29's file: 334,535 for SIP ->
XMPP, where the same method counted 180,401 on round 30's tree).

On PyPy (run it with PyPy's Python) the same, with what a JIT needs: a
longer warm-up (C{--warmup}, 14,000 messages by default, after which the
loops and bridges of the two paths are compiled), 8,000 messages counted,
and callgrind told that code is written at run time
(C{--smc-check=all-non-file}). The count includes the JIT's own work and
the collector's during the counted messages, as the time does.

The collector: where its steps fall depends on everything allocated
before, so the child collects fully (C{gc.collect()}) just before the
counted messages. Without that, with PyPy's own 1 MB nursery (the EPYC
VM), a step of a major collection fell inside the counted messages of
one process and not of another: 159,495 and 181,413 instructions per
SIP -> XMPP message for one tree; with it 158,276 and 156,776 (round
30). On CPython an import more in this module moved a collection of the
oldest generation into the null gateway's SIP -> XMPP count (20,812 ->
26,930; with the collection first 20,555). So the counts are the cost
between major collections; the marking of a major collection, which
grows with the live heap, is in the timed benchmark's collector figures
(C{gc_major_us}) rather than here. Each case runs in three child
processes (C{--repeat}) and the median is reported, with every
process's count (C{runs}, C{harness_runs}).

Usage::

    .venv/bin/python -m bench.instructions [--count 3000] [--repeat 3]
        [--json FILE]
    .venv-pypy/bin/python -m bench.instructions [--count 8000] [--json FILE]

Needs C{valgrind} and C{gcc} (Debian packages C{valgrind}, which has
C{valgrind/callgrind.h}, and C{gcc}; C{make bench} installs them).
A/B of two trees: run it from each tree's directory (C{python -m} imports
C{xmppgw} from the current directory).
"""

import argparse
import gc
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from bench.common import emit, resultsHeader

DIRECTIONS = ("sipToXMPP", "xmppToSIP")
#: Messages per run of the child's loop (one L{bench.inprocess.Runner}
#: call), and the warm-up runs before the count.
RUN = 1000
WARMUP_RUNS = 2
#: The child processes per case (L{main}'s C{--repeat}), the median
#: reported.
REPEAT = 3
#: On PyPy: the warm-up runs and the messages counted by default.
PYPY_WARMUP_RUNS = 14
PYPY_COUNT = 8000
PYPY = sys.implementation.name == "pypy"

_COLLECTED = re.compile(r"==\d+== Collected : (\d+)")

#: The marker library's source: one function that toggles callgrind's
#: collection (a no-op outside valgrind).
MARKER_SOURCE = """\
#include <valgrind/callgrind.h>
void xmppgw_toggle_collect(void) { CALLGRIND_TOGGLE_COLLECT; }
"""


def collected(stderr):
    """
    The instruction count callgrind reports on C{stderr} (its
    C{Collected :} line).

    @raise ValueError: no such line (callgrind did not run to the end).
    """
    match = _COLLECTED.search(stderr)
    if match is None:
        raise ValueError("no 'Collected' line from callgrind: %r"
                         % (stderr[-500:],))
    return int(match.group(1))


def perMessage(counted, count):
    """
    Instructions per message from the count collected over C{count}
    messages.

    @raise ValueError: no message, or nothing collected (the child never
        turned collection on).
    """
    if count <= 0 or counted <= 0:
        raise ValueError("need count > 0 and instructions counted, not "
                         "%r, %r" % (count, counted))
    return counted / count


def case(direction, count, gatewayCounts, nullCounts):
    """
    One direction's results: the instructions per message of the loop on
    the gateway (C{instructions_per_message}), of the loop alone on the
    null gateway (C{harness_instructions_per_message}) and their
    difference, the gateway's own (C{gateway_instructions_per_message});
    each the median of the child processes' counts, which are given too
    (C{runs}, C{harness_runs}: per message, in the order run).

    @param gatewayCounts: the instructions each child collected over
        C{count} messages, on the gateway (one or more children).
    @param nullCounts: the same on the null gateway.
    """
    each = [perMessage(counted, count) for counted in gatewayCounts]
    loop = [perMessage(counted, count) for counted in nullCounts]
    median = round(statistics.median(each))
    harness = round(statistics.median(loop))
    return {
        "direction": direction,
        "instructions_per_message": median,
        "harness_instructions_per_message": harness,
        "gateway_instructions_per_message": median - harness,
        "runs": [round(n) for n in each],
        "harness_runs": [round(n) for n in loop],
    }


#: What a child runs the loop on: benchmark 1's gateway, or the null
#: gateway that counts the loop alone (L{child}).
GATEWAYS = ("gateway", "null")


def markerLibrary(directory, compiler="gcc"):
    """
    Build the marker library (L{MARKER_SOURCE}) in C{directory}.

    @return: the library's path.
    @raise RuntimeError: it could not be built (no C{gcc}, or no
        C{valgrind/callgrind.h}), with the compiler's message.
    """
    source = os.path.join(directory, "marker.c")
    library = os.path.abspath(os.path.join(directory, "marker.so"))
    with open(source, "w") as f:
        f.write(MARKER_SOURCE)
    try:
        process = subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", library, source],
            capture_output=True, text=True, timeout=120)
    except OSError as e:
        raise RuntimeError("cannot build the callgrind marker with %s: %s"
                           % (compiler, e))
    if process.returncode != 0:
        raise RuntimeError("cannot build the callgrind marker (Debian "
                           "packages gcc and valgrind): %s"
                           % (process.stderr[-1000:],))
    return library


def child(direction, runs, distinct, warmup=WARMUP_RUNS, gateway="gateway",
          marker=None):
    """
    The measured process: C{warmup} runs of L{RUN} messages, then C{runs}
    more, through L{bench.inprocess.Gateway} or, with C{gateway="null"},
    L{bench.inprocess.NullGateway}; with C{marker} (the path of
    L{markerLibrary}), callgrind's collection is toggled on just before
    those C{runs} and off just after.
    """
    from twisted.logger import globalLogBeginner
    from bench.inprocess import Gateway, NullGateway, Runner, benchLogObserver
    if gateway not in GATEWAYS:
        raise ValueError("no such gateway %r" % (gateway,))
    toggle = None
    if marker is not None:
        import ctypes
        toggle = ctypes.CDLL(marker).xmppgw_toggle_collect
        toggle.restype = None
    globalLogBeginner.beginLoggingTo(
        [benchLogObserver(open(os.devnull, "w"))], discardBuffer=True,
        redirectStandardIO=False)
    if gateway == "null":
        measured = NullGateway()
    else:
        measured = Gateway(logMessages=True)
    run = getattr(Runner(measured, 0.001), direction)
    for _ in range(warmup):
        run(RUN, distinct)
    # The counted runs start with the collector's state reset (CPython's
    # generation counts, PyPy's major collection), whatever the warm-up
    # and the imports left: otherwise where its steps fall depends on
    # everything allocated before.
    gc.collect()
    if toggle is not None:
        toggle()
    for _ in range(runs):
        run(RUN, distinct)
    if toggle is not None:
        toggle()


def measure(valgrind, marker, direction, runs, distinct,
            warmup=WARMUP_RUNS, gateway="gateway"):
    """
    The callgrind instruction count of the counted runs of one child
    process (L{child}).
    """
    # PyPy's JIT writes the machine code it runs: callgrind must look for
    # code written at run time (outside files) to count it right.
    selfModifying = ["--smc-check=all-non-file"] if PYPY else []
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.run(
            [valgrind, "--tool=callgrind", "--collect-atstart=no",
             *selfModifying,
             "--callgrind-out-file=" + os.path.join(tmp, "out"),
             sys.executable, "-m", "bench.instructions", "--child",
             direction, str(runs), str(distinct), str(warmup), gateway,
             marker],
            capture_output=True, text=True, timeout=3600)
    if process.returncode != 0:
        raise RuntimeError("callgrind run failed (%d): %s" % (
            process.returncode, process.stderr[-2000:]))
    return collected(process.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int,
                        default=PYPY_COUNT if PYPY else 3000,
                        help="messages counted per direction, a multiple "
                        "of %d (default 3000; on PyPy %d)" % (RUN, PYPY_COUNT))
    parser.add_argument("--warmup", type=int,
                        default=PYPY_WARMUP_RUNS if PYPY else WARMUP_RUNS,
                        help="runs of %d messages before the count (default "
                        "%d; on PyPy %d)" % (RUN, WARMUP_RUNS,
                                             PYPY_WARMUP_RUNS))
    parser.add_argument("--distinct", type=int, default=1,
                        help="distinct addresses (default 1)")
    parser.add_argument("--repeat", type=int, default=REPEAT,
                        help="child processes per case, the median "
                        "reported (default %d)" % (REPEAT,))
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.child:
        direction, runs, distinct, warmup, gateway, marker = args.child
        child(direction, int(runs), int(distinct), int(warmup), gateway,
              marker)
        return 0
    if not (RUN <= args.count <= 100 * RUN and args.count % RUN == 0
            and 1 <= args.distinct <= 100000 and 0 <= args.warmup <= 100
            and 1 <= args.repeat <= 9):
        parser.error("--count must be a multiple of %d from %d to %d, "
                     "--distinct 1 to 100000, --warmup 0 to 100, --repeat "
                     "1 to 9" % (RUN, RUN, 100 * RUN))
    if sys.implementation.name not in ("cpython", "pypy"):
        parser.error("CPython or PyPy only")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        parser.error("valgrind not found (Debian package valgrind; make "
                     "bench installs it)")
    results = {
        **resultsHeader("instructions", argv),
        "count": args.count,
        "distinct": args.distinct,
        "warmup_messages": args.warmup * RUN,
        "repeat": args.repeat,
        "method": "collection toggled around the counted messages",
        "cases": [],
    }
    runs = args.count // RUN
    jobs = [(gateway, direction, i) for i in range(args.repeat)
            for gateway in GATEWAYS for direction in DIRECTIONS]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            marker = markerLibrary(tmp)
        except RuntimeError as e:
            parser.error(str(e))
        # Two child processes at a time (the machine's two CPUs); the
        # counts do not depend on what else runs.
        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = dict(zip(jobs, pool.map(
                lambda job: measure(valgrind, marker, job[1], runs,
                                    args.distinct, args.warmup, job[0]),
                jobs)))
    for direction in DIRECTIONS:
        one = case(direction, args.count,
                   [counts["gateway", direction, i]
                    for i in range(args.repeat)],
                   [counts["null", direction, i] for i in range(args.repeat)])
        results["cases"].append(one)
        print("%-9s %9d instructions per message in the loop, of which the "
              "loop alone %d: the gateway %d (each process: %s; the loop "
              "alone: %s)" % (
                  direction, one["instructions_per_message"],
                  one["harness_instructions_per_message"],
                  one["gateway_instructions_per_message"],
                  ", ".join(map(str, one["runs"])),
                  ", ".join(map(str, one["harness_runs"]))),
              file=sys.stderr)
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
