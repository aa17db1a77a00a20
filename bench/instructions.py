"""
Benchmark 1 counted in instructions instead of time: how many machine
instructions one message costs the gateway, under valgrind's callgrind.

Timings on a shared VM vary by 10-25 % from run to run (and more when its
host is busy), which hides the few-percent changes an optimisation round
is made of. An instruction count does not depend on the neighbours: two
runs of the same tree agree to well under 1 %. It is not a time (cache
misses and the wake-ups of benchmark 2 are not in it) and it compares
two trees; use the timed benchmarks for the figures.

Method: benchmark 1's gateway (L{bench.inprocess.Gateway}, the defaults:
log on, the confirmation ping, the policy) in a child process under
callgrind, twice: once with the warm-up only and once with C{--count}
more messages; the difference divided by C{--count} is the cost of one
message in benchmark 1's loop (start-up, imports and the warm-up cancel
out). Callgrind counts the whole process, so that figure also holds what
the loop does for each message outside the timed parts: building the
SIP or XMPP bytes it feeds in and, XMPP -> SIP, the C{200 OK} its SIP
peer builds for each request (L{bench.inprocess.okFor}: a regular
expression over the request). The same pair of children on
L{bench.inprocess.NullGateway} (which does nothing but answer as the
gateway would) counts that loop; the results give both and the
gateway's own count, the difference (from round 22; earlier files give
the loop's count only).

On PyPy (run it with PyPy's Python) the same, with what a JIT needs: a
longer warm-up (C{--warmup}, 14,000 messages by default, after which the
loops and bridges of the two paths are compiled), 8,000 messages counted,
and callgrind told that code is written at run time
(C{--smc-check=all-non-file}). Each child then runs for about four
minutes. The count includes the JIT's own work and the collector's, as
the time does, and it is much less steady than CPython's: the warm-up-only
counts of one tree mostly agreed within 0.35 % between processes (with
hash seeds 0, 1 and 2 and address randomisation off, and without), but
one counted 2 % more (cause not found), which over 8,000 messages is
about 15 % per message. On PyPy use it for large differences, with a
larger C{--count}, or repeated.

Usage::

    .venv/bin/python -m bench.instructions [--count 3000] [--json FILE]
    .venv-pypy/bin/python -m bench.instructions [--count 8000] [--json FILE]

Needs C{valgrind} (Debian package C{valgrind}; C{make bench} installs it).
A/B of two trees: run it from each tree's directory (C{python -m} imports
C{xmppgw} from the current directory).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from bench.common import emit, resultsHeader
DIRECTIONS = ("sipToXMPP", "xmppToSIP")
#: Messages per run of the child's loop (one L{bench.inprocess.Runner}
#: call), and the warm-up runs both children make.
RUN = 1000
WARMUP_RUNS = 2
#: On PyPy: the warm-up runs and the messages counted by default.
PYPY_WARMUP_RUNS = 14
PYPY_COUNT = 8000
PYPY = sys.implementation.name == "pypy"

_COLLECTED = re.compile(r"==\d+== Collected : (\d+)")


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


def perMessage(base, loaded, count):
    """
    Instructions per message from the count of the warm-up-only run
    (C{base}) and of the run with C{count} more messages (C{loaded}).
    """
    if count <= 0 or loaded < base:
        raise ValueError("need count > 0 and loaded >= base, not %r, %r, %r"
                         % (count, base, loaded))
    return (loaded - base) / count


def case(direction, count, gatewayCounts, nullCounts):
    """
    One direction's results: the instructions per message of the loop on
    the gateway (C{instructions_per_message}, as before round 22), of the
    loop alone on the null gateway (C{harness_instructions_per_message})
    and their difference, the gateway's own
    (C{gateway_instructions_per_message}).

    @param gatewayCounts: the counts of the warm-up-only child and of the
        child with C{count} more messages, on the gateway.
    @param nullCounts: the same on the null gateway.
    """
    each = perMessage(gatewayCounts[0], gatewayCounts[1], count)
    loop = perMessage(nullCounts[0], nullCounts[1], count)
    return {
        "direction": direction,
        "instructions_per_message": round(each),
        "harness_instructions_per_message": round(loop),
        "gateway_instructions_per_message": round(each) - round(loop),
        "base_instructions": gatewayCounts[0],
        "loaded_instructions": gatewayCounts[1],
        "harness_base_instructions": nullCounts[0],
        "harness_loaded_instructions": nullCounts[1],
    }


#: What a child runs the loop on: benchmark 1's gateway, or the null
#: gateway that counts the loop alone (L{child}).
GATEWAYS = ("gateway", "null")


def child(direction, runs, distinct, warmup=WARMUP_RUNS, gateway="gateway"):
    """
    The measured process: C{warmup} runs of L{RUN} messages, then C{runs}
    more, through L{bench.inprocess.Gateway} or, with C{gateway="null"},
    L{bench.inprocess.NullGateway}.
    """
    from twisted.logger import globalLogBeginner
    from bench.inprocess import Gateway, NullGateway, Runner, benchLogObserver
    if gateway not in GATEWAYS:
        raise ValueError("no such gateway %r" % (gateway,))
    globalLogBeginner.beginLoggingTo(
        [benchLogObserver(open(os.devnull, "w"))], discardBuffer=True,
        redirectStandardIO=False)
    if gateway == "null":
        measured = NullGateway()
    else:
        measured = Gateway(logMessages=True)
    run = getattr(Runner(measured, 0.001), direction)
    for _ in range(warmup + runs):
        run(RUN, distinct)


def measure(valgrind, direction, runs, distinct, warmup=WARMUP_RUNS,
            gateway="gateway"):
    """
    The callgrind instruction count of one child process (L{child}).
    """
    # PyPy's JIT writes the machine code it runs: callgrind must look for
    # code written at run time (outside files) to count it right.
    selfModifying = ["--smc-check=all-non-file"] if PYPY else []
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.run(
            [valgrind, "--tool=callgrind", *selfModifying,
             "--callgrind-out-file=" + os.path.join(tmp, "out"),
             sys.executable, "-m", "bench.instructions", "--child",
             direction, str(runs), str(distinct), str(warmup), gateway],
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
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.child:
        direction, runs, distinct, warmup, gateway = args.child
        child(direction, int(runs), int(distinct), int(warmup), gateway)
        return 0
    if not (RUN <= args.count <= 100 * RUN and args.count % RUN == 0
            and 1 <= args.distinct <= 100000 and 0 <= args.warmup <= 100):
        parser.error("--count must be a multiple of %d from %d to %d, "
                     "--distinct 1 to 100000, --warmup 0 to 100"
                     % (RUN, RUN, 100 * RUN))
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
        "cases": [],
    }
    runs = args.count // RUN
    jobs = [(gateway, direction, n) for gateway in GATEWAYS
            for direction in DIRECTIONS for n in (0, runs)]
    # Two child processes at a time (the machine's two CPUs); the counts
    # do not depend on what else runs.
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(
            lambda job: measure(valgrind, job[1], job[2], args.distinct,
                                args.warmup, job[0]),
            jobs)))
    for direction in DIRECTIONS:
        one = case(direction, args.count,
                   [counts["gateway", direction, n] for n in (0, runs)],
                   [counts["null", direction, n] for n in (0, runs)])
        results["cases"].append(one)
        print("%-9s %9d instructions per message in the loop, of which the "
              "loop alone %d: the gateway %d" % (
                  direction, one["instructions_per_message"],
                  one["harness_instructions_per_message"],
                  one["gateway_instructions_per_message"]),
              file=sys.stderr)
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
