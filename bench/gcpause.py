"""
How long one full garbage collection takes with the gateway's live state
under load (CPython): benchmark 1's gateway relays MESSAGEs both ways at a
simulated rate until the Timer J/K tables are full, then times
C{gc.collect()}.

Usage::

    .venv/bin/python -m bench.gcpause [--rate 4000] [--rounds 40] [--repeat 7]

Prints the number of objects the collector tracks (the start-up objects
frozen, as C{twistd xmppgw} does) and the median, min and max of
C{--repeat} full collections, in ms. Bounded: C{--rounds} rounds of 2,000
messages each way.
"""

import argparse
import gc
import sys
import time

from bench.inprocess import Gateway, Runner


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=4000.0,
                        help="simulated messages per second (default 4000)")
    parser.add_argument("--rounds", type=int, default=40,
                        help="rounds of 2,000 messages each way (default 40)")
    parser.add_argument("--repeat", type=int, default=7,
                        help="full collections timed (default 7)")
    args = parser.parse_args(argv)
    if not hasattr(gc, "get_freeze_count"):
        parser.error("CPython only (PyPy's collector has no full "
                     "collection of this kind)")
    if not (0 < args.rate <= 1e6 and 1 <= args.rounds <= 1000
            and 1 <= args.repeat <= 100):
        parser.error("--rate, --rounds and --repeat out of range")
    gateway = Gateway(logMessages=False, freeze=True)
    runner = Runner(gateway, 1.0 / args.rate)
    for _ in range(args.rounds):
        runner.sipToXMPP(2000, 100)
        runner.xmppToSIP(2000, 100)
    gc.collect()
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    layer = gateway.transactions
    print("server transactions %d, client transactions %d, tracked objects "
          "%d; full collection median %.1f ms (min %.1f, max %.1f)" % (
              len(layer._servers), len(layer._clients), len(gc.get_objects()),
              times[len(times) // 2], times[0], times[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
