"""
Benchmark 1 counted in instructions instead of time: how many machine
instructions one message costs the gateway, under valgrind's callgrind.

Timings on a shared VM vary by 10-25 % from run to run (and more when its
host is busy), which hides the few-percent changes an optimisation round
is made of. An instruction count does not depend on the neighbours: two
runs of the same tree agree to well under 1 %. It is not a time (cache
misses, the wake-ups of benchmark 2 and PyPy's JIT are not in it) and it
only runs on CPython; use it to compare two trees, and the timed
benchmarks for the figures.

Method: benchmark 1's gateway (L{bench.inprocess.Gateway}, the defaults:
log on, the confirmation ping, the policy) in a child process under
callgrind, twice: once with the warm-up only and once with C{--count}
more messages; the difference divided by C{--count} is the cost of one
message (start-up, imports and the warm-up cancel out).

Usage::

    .venv/bin/python -m bench.instructions [--count 3000] [--json FILE]

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


def child(direction, runs, distinct):
    """
    The measured process: warm up, then C{runs} runs of L{RUN} messages.
    """
    from twisted.logger import globalLogBeginner
    from xmppgw.logs import textObserver
    from bench.inprocess import Gateway, Runner
    globalLogBeginner.beginLoggingTo(
        [textObserver(open(os.devnull, "w"))], discardBuffer=True,
        redirectStandardIO=False)
    gateway = Gateway(logMessages=True)
    run = getattr(Runner(gateway, 0.001), direction)
    for _ in range(WARMUP_RUNS + runs):
        run(RUN, distinct)


def measure(valgrind, direction, runs, distinct):
    """
    The callgrind instruction count of one child process.
    """
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.run(
            [valgrind, "--tool=callgrind",
             "--callgrind-out-file=" + os.path.join(tmp, "out"),
             sys.executable, "-m", "bench.instructions", "--child",
             direction, str(runs), str(distinct)],
            capture_output=True, text=True, timeout=3600)
    if process.returncode != 0:
        raise RuntimeError("callgrind run failed (%d): %s" % (
            process.returncode, process.stderr[-2000:]))
    return collected(process.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000,
                        help="messages counted per direction, a multiple "
                        "of %d (default 3000)" % (RUN,))
    parser.add_argument("--distinct", type=int, default=1,
                        help="distinct addresses (default 1)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.child:
        direction, runs, distinct = args.child
        child(direction, int(runs), int(distinct))
        return 0
    if not (RUN <= args.count <= 100 * RUN and args.count % RUN == 0
            and 1 <= args.distinct <= 100000):
        parser.error("--count must be a multiple of %d from %d to %d, "
                     "--distinct 1 to 100000" % (RUN, RUN, 100 * RUN))
    if not hasattr(sys, "getrefcount") or sys.implementation.name != "cpython":
        parser.error("CPython only")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        parser.error("valgrind not found (Debian package valgrind; make "
                     "bench installs it)")
    results = {
        **resultsHeader("instructions", argv),
        "count": args.count,
        "distinct": args.distinct,
        "cases": [],
    }
    runs = args.count // RUN
    jobs = [(direction, n) for direction in DIRECTIONS for n in (0, runs)]
    # Two child processes at a time (the machine's two CPUs); the counts
    # do not depend on what else runs.
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(
            lambda job: measure(valgrind, job[0], job[1], args.distinct),
            jobs)))
    for direction in DIRECTIONS:
        base, loaded = counts[direction, 0], counts[direction, runs]
        each = perMessage(base, loaded, args.count)
        results["cases"].append({
            "direction": direction, "instructions_per_message": round(each),
            "base_instructions": base, "loaded_instructions": loaded})
        print("%-9s %9.0f instructions per message" % (direction, each),
              file=sys.stderr)
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
