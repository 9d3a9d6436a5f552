#!/usr/bin/env python3
"""Medians over the repeated runs of bench/ab.sh.

Reads RUNS/round<i>-<side>/<stamp>.json (one bench/run.sh result per round and side; side A = BASE_BIN,
B = SLUICE_BIN) and prints, per case: the median, min and max over rounds of its req/s ratio to the nginx
baseline of the same run; with two sides, also the median of the per-round B/A req/s ratio (and the same for
the streams cases' peak RSS and KB per stream). Writes OUT/ab-<date-time>.json|md.
"""
import argparse
import datetime
import glob
import json
import os
import statistics
import sys


def load_runs(root):
    runs = {}   # (round, side) -> doc
    for d in sorted(glob.glob(os.path.join(root, "round*-*"))):
        if not os.path.isdir(d):
            continue
        rnd, side = os.path.basename(d)[5:].split("-")
        docs = [f for f in glob.glob(os.path.join(d, "*.json")) if not os.path.basename(f).startswith("latest")]
        if docs:
            runs[(int(rnd), side)] = json.load(open(sorted(docs)[-1]))
    return runs


def med(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def f(v, nd=3):
    return "-" if v is None else ("%." + str(nd) + "f") % v


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--base-bin", default="")
    p.add_argument("--bin", default="")
    a = p.parse_args()
    runs = load_runs(a.runs)
    if not runs:
        print("ab: no results", file=sys.stderr)
        return 3
    sides = sorted({s for _, s in runs})
    rounds = sorted({r for r, _ in runs})
    names = []
    for doc in runs.values():
        for c in doc["cases"]:
            if c["name"] not in names:
                names.append(c["name"])
    failed = [("round %d side %s" % k, doc["failures"]) for k, doc in sorted(runs.items()) if not doc["ok"]]

    def case(rnd, side, name):
        doc = runs.get((rnd, side))
        return next((c for c in doc["cases"] if c["name"] == name), None) if doc else None

    table, out = [], {"rounds": rounds, "sides": sides, "base_bin": a.base_bin, "bin": a.bin, "cases": {}}
    for name in names:
        entry = {}
        for side in sides:
            cs = [case(r, side, name) for r in rounds]
            ratios = [c["derived"].get("rps_ratio") for c in cs if c and c["status"] == "ok"]
            rps = [c["derived"].get("rps") for c in cs if c and c["status"] == "ok"]
            entry[side] = {"ratio": med(ratios), "rps": med(rps), "n": len(ratios)}
        if len(sides) == 2:
            ba = []
            for r in rounds:
                ca, cb = case(r, "A", name), case(r, "B", name)
                if ca and cb and ca["status"] == cb["status"] == "ok" and ca["derived"].get("rps") and cb["derived"].get("rps"):
                    ba.append(cb["derived"]["rps"] / ca["derived"]["rps"])
            entry["b_over_a"] = med(ba)
        streams = {}
        for side in sides:
            for r in rounds:
                c = case(r, side, name)
                for lv in (c or {}).get("streams") or []:
                    s = streams.setdefault(lv["level"], {}).setdefault(side, {"peak_mb": [], "kb_per_stream": []})
                    s["peak_mb"].append(lv.get("peak_mb"))
                    s["kb_per_stream"].append(lv.get("kb_per_stream"))
        if streams:
            entry["streams"] = {lvl: {side: {k: med(v) for k, v in d.items()} for side, d in sd.items()}
                                for lvl, sd in streams.items()}
        out["cases"][name] = entry
        if streams:
            continue   # the streams table below
        row = [name]
        for side in sides:
            m, lo, hi = entry[side]["ratio"]
            row += [f(entry[side]["rps"][0], 0), f(m), "%s-%s" % (f(lo), f(hi))]
        if len(sides) == 2:
            row.append(f(entry["b_over_a"][0]))
        table.append(row)

    hdr = ["case"]
    for side in sides:
        label = "" if len(sides) == 1 else side + " "
        hdr += [label + "req/s (median)", label + "x nginx (median)", label + "x nginx min-max"]
    if len(sides) == 2:
        hdr.append("B/A req/s (median)")
    w = [max(len(str(x)) for x in col) for col in zip(hdr, *table)]
    print()
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
    for row in table:
        print("  ".join(str(x).ljust(w[i]) for i, x in enumerate(row)))
    srows = []
    for name, e in out["cases"].items():
        for lvl, sd in sorted((e.get("streams") or {}).items()):
            row = [name, str(lvl)]
            for side in sides:
                d = sd.get(side) or {}
                row += [f((d.get("peak_mb") or (None,))[0], 1), f((d.get("kb_per_stream") or (None,))[0], 1)]
            srows.append(row)
    shdr = ["case", "streams"]
    for side in sides:
        label = "" if len(sides) == 1 else side + " "
        shdr += [label + "peak RSS MB (median)", label + "KB/stream (median)"]
    if srows:
        print()
        w2 = [max(len(str(x)) for x in col) for col in zip(shdr, *srows)]
        print("  ".join(h.ljust(w2[i]) for i, h in enumerate(shdr)))
        for row in srows:
            print("  ".join(str(x).ljust(w2[i]) for i, x in enumerate(row)))

    now = datetime.datetime.now()
    stamp = "ab-" + now.strftime("%Y%m%d-%H%M%S")
    meta = next(iter(runs.values()))["meta"]
    out.update(date=now.isoformat(timespec="seconds"), meta=meta, failures=failed)
    with open(os.path.join(a.out, stamp + ".json"), "w") as fh:
        json.dump(out, fh, indent=1)
    md = ["# Sluice benchmark, %d alternating rounds %s" % (len(rounds), now.isoformat(timespec="seconds")), "",
          "- machine: %s CPU(s), %s" % (meta.get("nproc"), meta.get("cpu_model")),
          "- load: wrk -c%s -d%s; every ratio is to the nginx baseline of the same run, then the median over rounds"
          % (meta.get("connections"), meta.get("duration"))]
    if len(sides) == 2:
        md.append("- A: `%s`, B: `%s`; B/A is the median of the per-round req/s ratios" % (a.base_bin, a.bin))
    if failed:
        md.append("- **runs with failures**: " + "; ".join("%s: %s" % (k, v) for k, v in failed))
    md += ["", "| " + " | ".join(hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in table]
    if srows:
        md += ["", "| " + " | ".join(shdr) + " |", "|" + "|".join("---" for _ in shdr) + "|"]
        md += ["| " + " | ".join(r) + " |" for r in srows]
    with open(os.path.join(a.out, stamp + ".md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\nresults: %s" % os.path.join(a.out, stamp + ".md"))
    if failed:
        for k, v in failed:
            print("AB: %s failed: %s" % (k, v), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
