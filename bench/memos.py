"""
What the address mapper's memos cost in memory when many addresses are
active: for each address count, a fresh process fills the four memos (SIP
target and sender, XMPP target and sender) with that many distinct
addresses, each parsed afresh as the gateway parses it, and reports how
much its resident memory grew (after a full collection, before and after)
and how many results the memos hold.

Usage::

    .venv/bin/python -m bench.memos [--addresses 16384,50000] [--json FILE]

Run it with each interpreter; on PyPy with the deployed collector settings
(C{PYPY_GC_NURSERY=4MB PYPY_GC_INCREMENT_STEP=1MB}), which the child
processes inherit. The growth includes what the memos keep alive (the
parsed URIs they are keyed by, the mapped addresses) and, on PyPy, the
collector's headroom. Bounded: at most 200,000 addresses a count, one
process each.
"""

import argparse
import gc
import json
import os
import subprocess
import sys

from bench.common import emit, memoryKB, resultsHeader
from xmppgw.addressing import AddressMapper
from xmppgw.sip.uri import parseURI

MAPPINGS = ("sipTargetToJID", "sipSenderToJID", "jidTargetToSIP",
            "jidSenderToSIP")
MAX_ADDRESSES = 200000
#: Addresses mapped before the first measure, so that code and the
#: interpreter's own caches are in place (PyPy's JIT too).
WARM_UP = 200


def mapAll(mapper, first, count):
    """
    Map C{count} distinct addresses from number C{first} on, once through
    each of the four mappings of C{mapper} (the sender and target forms
    benchmark 1 uses).
    """
    for i in range(first, first + count):
        mapper.sipTargetToJID(parseURI("sip:user%d*xmpp.test@gw.test" % i))
        mapper.sipSenderToJID(
            parseURI("sip:alice%d@sip%d.example.com" % (i, i % 1000)))
        mapper.jidTargetToSIP("bob%d*sip%d.example.com@xmpp.test"
                              % (i, i % 1000))
        mapper.jidSenderToSIP("user%d@xmpp.test/phone" % i)


def held(mapper):
    """
    The results the four memos of C{mapper} hold.
    """
    return sum(getattr(mapper, name).cache_info().currsize
               for name in MAPPINGS)


def _collect():
    gc.collect()
    gc.collect()


def measure(count):
    """
    Fill a new mapper's memos with C{count} addresses in this process;
    the result as a L{dict}.
    """
    mapper = AddressMapper("*", "gw.test", "xmpp.test")
    mapAll(mapper, -WARM_UP, WARM_UP)
    _collect()
    before = memoryKB(os.getpid())[0]
    mapAll(mapper, 0, count)
    _collect()
    after = memoryKB(os.getpid())[0]
    return {
        "addresses": count,
        "memo_size": getattr(mapper, MAPPINGS[0]).cache_info().maxsize,
        "results_held": held(mapper),
        "rss_before_mb": round(before / 1024, 1),
        "rss_after_mb": round(after / 1024, 1),
        "rss_growth_mb": round((after - before) / 1024, 1),
    }


def _counts(text):
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "a comma-separated list of address counts, not %r" % (text,))
    if not counts or not all(1 <= n <= MAX_ADDRESSES for n in counts):
        raise argparse.ArgumentTypeError(
            "each address count from 1 to %d" % (MAX_ADDRESSES,))
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.memos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=_counts, default=[16384, 50000],
                        help="address counts, one process each (default "
                             "16384,50000)")
    parser.add_argument("--json", help="also write the results there")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(_counts(str(args.child))[0])))
        return 0
    runs = []
    for count in args.addresses:
        out = subprocess.run(
            [sys.executable, "-m", "bench.memos", "--child", str(count)],
            capture_output=True, text=True, timeout=600, check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = resultsHeader("memos", argv)
    results["interpreter"] = sys.implementation.name
    results["runs"] = runs
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
