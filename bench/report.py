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


def _direction(name):
    return {"sipToXMPP": "SIP->XMPP", "xmppToSIP": "XMPP->SIP"}.get(
        name, name)


def inprocess(r):
    rows = []
    both = r.get("metrics") == "both"
    for c in r["cases"]:
        row = [_direction(c["direction"]), c["distinct"]]
        if both:
            row.append("on" if c.get("metrics") else "off")
        rows.append(row + [
            c["median_us"], c["p10_us"], c["p90_us"],
            c["cpu_median_us"], c["single_p50_us"], c["single_p99_us"],
            c.get("retained_bytes_per_msg", "-"),
            c.get("retained_blocks_per_msg", "-"),
        ])
    text = table(["direction", "distinct"] + (["metrics"] if both else []) +
                 ["median µs", "p10 µs", "p90 µs", "CPU µs", "1-msg p50",
                  "1-msg p99", "retained B/msg", "blocks/msg"], rows)
    if both:
        text += "\n\n" + table(
            ["direction", "distinct", "CPU µs off", "CPU µs on", "delta µs",
             "CPU on/off", "wall on/off"],
            [[_direction(m["direction"]), m["distinct"], m["cpu_off_us"],
              m["cpu_on_us"], m["cpu_delta_us"], m["cpu_ratio"],
              m["wall_ratio"]] for m in r["metrics_ratio"]])
    return text


def endtoend(r):
    rows = []
    for s in r["steps"]:
        path = s["direction"]
        if s.get("gateway", "xmppgw") != "xmppgw":
            # --reference: the C module's step beside the gateway's.
            path += " (%s)" % (s["gateway"],)
        rows.append([
            path, s["rate"], s["offered_rate"], s["delivered"],
            s["sent"], s["lost"], s["delivered_rate"], s["p50_ms"],
            s["p99_ms"], s["max_ms"], s["gateway_cpu_us_per_msg"],
            s["prosody_cpu_us_per_msg"],
            # Results from before round 7 have no load-peer columns.
            s.get("sender_cpu_us_per_msg", "-"),
            s.get("receiver_cpu_us_per_msg", "-"),
            s["gateway_peak_rss_mb"],
            # Results from before round 8 have no Prosody memory column.
            s.get("prosody_peak_rss_mb", "-"),
        ])
    return table(["path", "rate/s", "offered/s", "delivered", "sent", "lost",
                  "delivered/s", "p50 ms", "p99 ms", "max ms", "gw µs/msg",
                  "Prosody µs/msg", "sender µs/msg", "receiver µs/msg",
                  "gw peak MB", "Prosody peak MB"], rows)


def endtoendInstructions(r):
    """
    C{bench.endtoend --callgrind}: the gateway's instructions per message
    end to end (its CPU and latency columns are callgrind's).
    """
    return table(["path", "rate/s", "sent", "delivered", "lost",
                  "gw instructions/msg"],
                 [[s["direction"], s["rate"], s["sent"], s["delivered"],
                   s["lost"], s.get("gateway_instructions_per_msg", "-")]
                  for s in r["steps"]])


def instructions(r):
    distinct = r.get("distinct", 1)
    # Files from before round 22 have the loop's count only, from before
    # round 30 one process's.
    return table(["direction", "distinct", "instructions per message",
                  "of which the loop", "the gateway", "each process"],
                 [[_direction(c["direction"]), distinct,
                   c["instructions_per_message"],
                   c.get("harness_instructions_per_message", "-"),
                   c.get("gateway_instructions_per_message", "-"),
                   " / ".join(map(str, c.get("runs", ()))) or "-"]
                  for c in r["cases"]])


def scale(r):
    h = r["held"]
    f = r["flat"]
    one = table(["measure", "value"], [[k, v] for k, v in h.items()])
    two = table(["measure", "value"], [[k, v] for k, v in f.items()
                                       if k != "samples"])
    return one + "\n\n" + two


def s2s(r):
    return table(
        ["direction", "peer domains", "median µs", "p10 µs", "p90 µs",
         "CPU µs"],
        [[_direction(c["direction"]), c["peers"], c["median_us"],
          c["p10_us"], c["p90_us"], c["cpu_median_us"]]
         for c in r["cases"]])


def soak(r):
    one = table(["measure", "value"], [
        ["rate, duration, transport", "%s/s, %s s, %s" % (
            r["rate"], r["duration"], r["proto"])],
        ["sent / delivered / lost / duplicates", "%s / %s / %s / %s" % (
            r["sent"], r["delivered"], r["lost"], r["duplicates"])],
        ["SIP answers", ", ".join("%s: %s" % kv for kv in
                                  sorted(r["answers"].items()))],
        ["latency p50 / p99 / max ms", "%s / %s / %s" % (
            r["p50_ms"], r["p99_ms"], r["max_ms"])],
        ["RSS idle / start / middle / end MB", "%s / %s / %s / %s" % (
            r["rss_idle_mb"], r["rss_start_mb"], r["rss_middle_mb"],
            r["rss_end_mb"])],
        ["peak RSS MB", r["peak_rss_mb"]],
        ["gateway CPU µs per message", r["gateway_cpu_us_per_msg"]],
    ] + ([["gateway twistd, PyPy nursery MB", "%s, %s" % (
        r["gateway_twistd"], r.get("gateway_pypy_nursery_mb"))]]
         if "gateway_twistd" in r else []))
    two = table(["from s", "to s", "sent", "received", "p50 ms", "p99 ms",
                 "max ms"],
                [[b["from_s"], b["to_s"], b["sent"], b["received"],
                  b["p50_ms"], b["p99_ms"], b["max_ms"]]
                 for b in r["latency_per_bucket"]])
    return one + "\n\n" + two


def main(paths):
    if not paths or any(p in ("-h", "--help") for p in paths):
        print(__doc__.strip())
        return 0 if paths else 2
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        m = r["machine"]
        print("%s: %s, %s cores, %s, %s, revision %s\n``%s``\n" % (
            r["benchmark"], m["cpu"], m["nproc"], m["python"], m["date"],
            r.get("revision"), r.get("command", "(command not recorded)")))
        report = {"inprocess": inprocess, "endtoend": endtoend,
                  "scale": scale, "s2s": s2s, "soak": soak,
                  "instructions": instructions,
                  "endtoend-instructions": endtoendInstructions,
                  }.get(r["benchmark"])
        if report is None:
            print("(no table for the %r benchmark)" % (r["benchmark"],))
        else:
            print(report(r))
        print()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
