#!/usr/bin/env python3
"""Turn bench/run.sh per-case results into a table, JSON and Markdown.

Reads RES/order (case names in run order) and RES/NAME.json, adds derived
numbers (ratio to the nginx proxy_pass baseline of the same workload, latency
added over the direct-to-upstream run at concurrency 1), prints a table,
writes OUT/<date-time>.json|.md and, when nothing failed, OUT/latest.json|.md.
Exits 3 naming every case that failed (errors, non-2xx, no result).
"""
import argparse
import datetime
import json
import os
import sys


def load_cases(res):
    names = []
    order = os.path.join(res, "order")
    if os.path.exists(order):
        names = [l.strip() for l in open(order) if l.strip()]
    cases = []
    for n in names:
        with open(os.path.join(res, n + ".json")) as f:
            cases.append(json.load(f))
    return cases


def ms(us):
    return None if us is None else round(us / 1000.0, 3)


def check(case):
    """Return a failure reason for a non-skipped case, or None."""
    if case["status"] == "skipped":
        return None
    if case["status"] == "failed":
        return case.get("reason") or "failed"
    problems = []
    if case["workload"] == "streams":
        for lv in case.get("streams") or [{"level": "?", "client": None}]:
            cl = lv.get("client")
            if not cl:
                problems.append("%s streams: no result from the client" % lv["level"])
            elif cl["failed"] or cl["completed"] < lv["level"] or cl["no_done"]:
                problems.append("%s streams: %d completed, %d failed, %d without [DONE] (%s)" % (
                    lv["level"], cl["completed"], cl["failed"], cl["no_done"], cl.get("last_error")))
        return "; ".join(problems) or None
    for run in ("load", "c1"):
        r = case.get(run)
        if not r:
            problems.append("%s run produced no result" % run)
            continue
        if r.get("requests", 0) == 0:
            problems.append("%s run completed no request" % run)
        if r.get("non2xx"):
            problems.append("%s run: %d non-2xx responses" % (run, r["non2xx"]))
        if r.get("socket_errors"):
            problems.append("%s run: %d socket errors" % (run, r["socket_errors"]))
        if r.get("no_data"):
            problems.append("%s run: %d streams without a data: event" % (run, r["no_data"]))
    idle = case.get("idle_conns")
    if idle:
        cl = idle.get("client")
        if not cl or cl.get("failed"):
            problems.append("idle connections: %s" % (
                "client failed" if not cl else "%d of %d failed (%s)" % (cl["failed"], idle["conns"], cl.get("last_error"))))
    return "; ".join(problems) or None


def derive(cases):
    by = {c["name"]: c for c in cases}
    for c in cases:
        d = {}
        load, c1 = c.get("load") or {}, c.get("c1") or {}
        ttft = c["workload"] == "ttft"
        d["rps"] = load.get("rps")
        # request body throughput (MB = 10^6 bytes): req/s times the body size of the workload
        nb = c.get("body_bytes") or 0
        d["body_mb_s"] = round(d["rps"] * nb / 1e6, 1) if d["rps"] and nb and not ttft else None
        if ttft:
            d["p50_ms"], d["p99_ms"], d["p999_ms"] = ms(load.get("ttft_p50_us")), ms(load.get("ttft_p99_us")), None
            d["c1_p50_ms"], d["c1_p99_ms"] = ms(c1.get("ttft_p50_us")), ms(c1.get("ttft_p99_us"))
        else:
            d["p50_ms"], d["p99_ms"], d["p999_ms"] = ms(load.get("p50_us")), ms(load.get("p99_us")), ms(load.get("p999_us"))
            d["c1_p50_ms"], d["c1_p99_ms"] = ms(c1.get("p50_us")), ms(c1.get("p99_us"))
        d["non2xx"] = (load.get("non2xx") or 0) + (c1.get("non2xx") or 0) if (load or c1) else None
        d["socket_errors"] = (load.get("socket_errors") or 0) + (c1.get("socket_errors") or 0) if (load or c1) else None
        base = by.get(c["baseline"])
        if base and base is not c and base["status"] == "ok" and c["status"] == "ok":
            b = base.get("derived") or {}
            brps = (base.get("load") or {}).get("rps")
            d["rps_ratio"] = round(d["rps"] / brps, 3) if d["rps"] and brps else None
            bp99 = b.get("p99_ms")
            d["p99_ratio"] = round(d["p99_ms"] / bp99, 3) if d["p99_ms"] and bp99 else None
        else:
            d["rps_ratio"] = 1.0 if base is c and c["status"] == "ok" else None
            d["p99_ratio"] = 1.0 if base is c and c["status"] == "ok" else None
        dr = by.get(c["direct"])
        if dr and dr["status"] == "ok" and c["status"] == "ok" and dr.get("derived"):
            dd = dr["derived"]
            for k in ("c1_p50_ms", "c1_p99_ms"):
                d["added_" + k[3:]] = (round(d[k] - dd[k], 3)
                                      if d[k] is not None and dd.get(k) is not None else None)
        else:
            d["added_p50_ms"] = d["added_p99_ms"] = None
        if c.get("streams"):
            nb = {lv["level"]: lv for lv in (base.get("streams") or [])} if base and base is not c else {}
            for lv in c["streams"]:
                peak, before = lv.get("rss_peak_kb"), lv.get("rss_before_kb")
                lv["peak_mb"] = None if peak is None else round(peak / 1024.0, 1)
                # memory the streams took: peak over the RSS before that level, per stream
                lv["kb_per_stream"] = (round((peak - before) / float(lv["level"]), 1)
                                       if peak is not None and before is not None else None)
                b = nb.get(lv["level"])
                lv["peak_ratio"] = (round(peak / float(b["rss_peak_kb"]), 2)
                                    if b and b.get("rss_peak_kb") and peak is not None else None)
        idle = c.get("idle_conns") or {}
        d["rss_idle_mb"] = None if c.get("rss_idle_kb") is None else round(c["rss_idle_kb"] / 1024.0, 1)
        d["rss_load_mb"] = None if c.get("rss_load_max_kb") is None else round(c["rss_load_max_kb"] / 1024.0, 1)
        d["rss_idle_conns_mb"] = None if not idle.get("rss_kb") else round(idle["rss_kb"] / 1024.0, 1)
        c["derived"] = d
    return cases


def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return ("%." + str(nd) + "f") % v
    return str(v)


COLS = [("case", None), ("status", None), ("req/s", "rps"), ("x nginx", "rps_ratio"), ("body MB/s", "body_mb_s"),
        ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("p99.9 ms", "p999_ms"),
        ("c1 p50", "c1_p50_ms"), ("c1 p99", "c1_p99_ms"), ("+p50", "added_p50_ms"), ("+p99", "added_p99_ms"),
        ("non2xx", "non2xx"), ("sockerr", "socket_errors"),
        ("RSS idle MB", "rss_idle_mb"), ("RSS load MB", "rss_load_mb"), ("RSS idle-conns MB", "rss_idle_conns_mb")]


def stream_rows(cases):
    """One row per streams case and level: peak RSS, per-stream cost, peak relative to nginx's."""
    out = []
    for c in cases:
        for lv in c.get("streams") or []:
            cl = lv.get("client") or {}
            out.append([c["name"], str(lv["level"]), fmt(cl.get("max_active")), fmt(cl.get("completed")),
                        fmt(lv.get("peak_mb"), 1), fmt(lv.get("kb_per_stream"), 1), fmt(lv.get("peak_ratio"), 2)])
    return out


STREAM_HDR = ["case", "streams", "max at once", "completed", "peak RSS MB", "KB/stream", "x nginx peak"]


def rows(cases):
    out = []
    for c in cases:
        if c["workload"] == "streams":
            continue
        d = c["derived"]
        r = []
        for title, key in COLS:
            if title == "case":
                r.append(c["name"])
            elif title == "status":
                r.append(c["status"])
            elif key == "rps":
                r.append(fmt(d[key], 0))
            elif key == "rps_ratio":
                r.append(fmt(d[key], 3))
            elif key.endswith("_mb") or key == "body_mb_s":
                r.append(fmt(d[key], 1))
            else:
                r.append(fmt(d[key], 3) if isinstance(d[key], float) else fmt(d[key]))
        out.append(r)
    return out


def plain_table(hdr, body):
    w = [max(len(str(x)) for x in col) for col in zip(hdr, *body)]
    line = lambda r: "  ".join(str(x).rjust(w[i]) if i > 1 else str(x).ljust(w[i]) for i, x in enumerate(r))
    return "\n".join([line(hdr), line(["-" * x for x in w])] + [line(r) for r in body])


def text_table(cases):
    out = plain_table([t for t, _ in COLS], rows(cases))
    srows = stream_rows(cases)
    if srows:
        out += "\n\n" + plain_table(STREAM_HDR, srows)
    return out


def markdown(doc):
    m = doc["meta"]
    cases = doc["cases"]
    lines = ["# Sluice benchmark %s" % doc["date"], ""]
    if not doc["ok"]:
        lines += ["**FAILED**: " + "; ".join("%s: %s" % (f["case"], f["reason"]) for f in doc["failures"]), ""]
    lines += ["- machine: %s CPU(s), %s, kernel %s" % (m.get("nproc"), m.get("cpu_model"), m.get("kernel")),
              "- versions: nginx %s, wrk %s, sluice %s" % (m.get("nginx_version"), m.get("wrk_version"), m.get("sluice_commit")),
              "- load: wrk -t%s -c%s -d%s (warmup %s); latency: wrk -t1 -c1 -d%s; ttft: %s requests, %s events every %s ms"
              % (m.get("threads"), m.get("connections"), m.get("duration"), m.get("warmup"), m.get("c1_duration"),
                 m.get("ttft_requests"), m.get("sse_events"), m.get("sse_interval_ms")),
              "- pinning: server under test on CPU %s; upstream, SSE mock, wrk and clients on CPU %s"
              % (m.get("sut_cpu"), m.get("load_cpu")),
              "- idle connections: %s" % m.get("idle_conns"),
              "- upload bodies: %s bytes (`*-upload`), %s bytes (`*-upload16k`); nginx client_body_buffer_size: %s"
              % (m.get("upload_bytes"), m.get("upload16k_bytes"), m.get("nginx_upload_buffer"))]
    if m.get("note"):
        lines.append("- note: %s" % m["note"])
    lines += ["", "Times in ms. `x nginx`: req/s relative to nginx proxy_pass on the same workload. "
              "`+p50`/`+p99`: added latency at concurrency 1 over the direct-to-upstream run. "
              "`body MB/s`: request body bytes sent per second (10^6 bytes). "
              "ttft rows: p50/p99 are time to first SSE event.", ""]
    hdr = [t for t, _ in COLS]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "|".join("---" for _ in hdr) + "|")
    for r in rows(cases):
        lines.append("| " + " | ".join(r) + " |")
    srows = stream_rows(cases)
    if srows:
        lines += ["", "Concurrent SSE streams (%s events %s ms apart, all opened before the requests go): peak RSS of "
                  "the server while they ran; `KB/stream`: peak minus the RSS before that level, per stream."
                  % (m.get("stream_events"), m.get("stream_interval_ms")), "",
                  "| " + " | ".join(STREAM_HDR) + " |", "|" + "|".join("---" for _ in STREAM_HDR) + "|"]
        for r in srows:
            lines.append("| " + " | ".join(r) + " |")
    skipped = [c for c in cases if c["status"] == "skipped"]
    if skipped:
        lines += ["", "Skipped:", ""] + ["- %s: %s" % (c["name"], c.get("reason")) for c in skipped]
    lines.append("")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--res", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--meta", default="{}")
    a = p.parse_args()
    now = datetime.datetime.now()
    cases = derive(load_cases(a.res))
    failures = []
    for c in cases:
        why = check(c)
        if why:
            failures.append({"case": c["name"], "reason": why})
            c["status"] = "failed"
            c["reason"] = why
    doc = {"date": now.isoformat(timespec="seconds"), "meta": json.loads(a.meta),
           "ok": not failures, "failures": failures, "cases": cases}
    print()
    print(text_table(cases))
    skipped = [c for c in cases if c["status"] == "skipped"]
    for c in skipped:
        print("skipped %s: %s" % (c["name"], c.get("reason")))
    os.makedirs(a.out, exist_ok=True)
    stamp = now.strftime("%Y%m%d-%H%M%S") + ("" if not failures else "-FAILED")
    md = markdown(doc)
    for name in [stamp] + (["latest"] if not failures else []):
        with open(os.path.join(a.out, name + ".json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        with open(os.path.join(a.out, name + ".md"), "w") as f:
            f.write(md)
    print("\nresults: %s" % os.path.join(a.out, stamp + ".json"))
    if failures:
        for f in failures:
            print("BENCH FAILED: case %s: %s" % (f["case"], f["reason"]), file=sys.stderr)
        print("latest.json/latest.md not updated (run failed)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
