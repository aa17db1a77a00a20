"""
Print the results of the benchmarks (their C{--json} files) as reST tables,
the form used in C{docs/performance.rst}.

Usage::

    .venv/bin/python -m bench.report bench/results/inprocess.json \\
        bench/results/scale.json bench/results/endtoend.json
"""

import json
import sys


def table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    rule = " ".join("=" * w for w in widths)
    out = [rule, " ".join(str(h).ljust(w) for h, w in zip(header, widths)),
           rule]
    for row in rows:
        out.append(" ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    out.append(rule)
    return "\n".join(out)


def inprocess(r):
    rows = []
    for c in r["cases"]:
        rows.append([
            "SIP->XMPP" if c["direction"] == "sipToXMPP" else "XMPP->SIP",
            c["distinct"], c["median_us"], c["p10_us"], c["p90_us"],
            c["cpu_median_us"], c["single_p50_us"], c["single_p99_us"],
            c.get("retained_bytes_per_msg", "-"),
            c.get("retained_blocks_per_msg", "-"),
        ])
    return table(["direction", "distinct", "median µs", "p10 µs", "p90 µs",
                  "CPU µs", "1-msg p50", "1-msg p99", "retained B/msg",
                  "blocks/msg"], rows)


def endtoend(r):
    rows = []
    for s in r["steps"]:
        rows.append([
            s["direction"], s["rate"], s["offered_rate"], s["delivered"],
            s["sent"], s["lost"], s["delivered_rate"], s["p50_ms"],
            s["p99_ms"], s["max_ms"], s["gateway_cpu_us_per_msg"],
            s["prosody_cpu_us_per_msg"], s["gateway_peak_rss_mb"],
        ])
    return table(["path", "rate/s", "offered/s", "delivered", "sent", "lost",
                  "delivered/s", "p50 ms", "p99 ms", "max ms", "gw µs/msg",
                  "Prosody µs/msg", "gw peak MB"], rows)


def scale(r):
    h = r["held"]
    f = r["flat"]
    one = table(["measure", "value"], [[k, v] for k, v in h.items()])
    two = table(["measure", "value"], [[k, v] for k, v in f.items()
                                       if k != "samples"])
    return one + "\n\n" + two


def main(paths):
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        m = r["machine"]
        print("%s: %s, %s cores, %s, %s, revision %s\n``%s``\n" % (
            r["benchmark"], m["cpu"], m["nproc"], m["python"], m["date"],
            r.get("revision"), r["command"]))
        print({"inprocess": inprocess, "endtoend": endtoend,
               "scale": scale}[r["benchmark"]](r))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
