"""Summary of benches/http/metrics-cost.sh: for every row of the HTTP bench's
table (workload, connections), the median requests/s and p99 with metrics
off and on over all rounds, the drop of the median, and each side's spread
(min..max), so that a drop can be told from the machine's noise. Rows that
hash also get the median of "x argon2 limit" (requests/s over the argon2
rate measured at the start of the same run), which takes out part of what
other processes on the machine do to both."""
import glob
import os
import re
import statistics
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "target/http-bench-metrics"


def ms(cell):
    m = re.match(r"([\d.]+)\s*(us|µs|ms|s)\b", cell.strip())
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def table(path):
    """(workload, connections) -> (req/s, p99 ms, x argon2 limit or None,
    server CPU µs per request or None), by the table's header."""
    rows, header = {}, None
    for line in open(path):
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "workload":
            header = {name: i for i, name in enumerate(cells)}
            continue
        if header is None or cells[0] == "---":
            continue
        try:
            rps = float(cells[header["requests/s"]].replace(",", ""))
        except (ValueError, IndexError):
            continue
        note = cells[header["note"]]
        m = re.match(r"([\d.]+)x argon2 limit", note)
        cpu = header.get("server CPU per request")
        cpu = ms(cells[cpu]) * 1e3 if cpu is not None else None
        rows[(cells[0], cells[1])] = (
            rps,
            ms(cells[header["p99"]]),
            float(m.group(1)) if m else None,
            cpu,
        )
    return rows


def runs(side):
    paths = sorted(glob.glob(os.path.join(out, f"{side}-*.md")))
    return [t for t in map(table, paths) if t]


off, on = runs("off"), runs("on")
if not off or not on:
    sys.exit(f"no complete off/on tables in {out}")
print(f"{len(off)} runs off (--no-metrics), {len(on)} on (scraped every 5 s), alternating\n")
print("| workload | conns | req/s off: median (min..max) | req/s on: median (min..max) | on vs off | p99 off | p99 on | x argon2 limit off / on | server CPU per request off / on |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for key in off[0]:
    a = [t[key][0] for t in off if key in t]
    b = [t[key][0] for t in on if key in t]
    pa = [t[key][1] for t in off if key in t]
    pb = [t[key][1] for t in on if key in t]
    ma, mb = statistics.median(a), statistics.median(b)
    xa = [t[key][2] for t in off if key in t and t[key][2] is not None]
    xb = [t[key][2] for t in on if key in t and t[key][2] is not None]
    limit = (
        f"{statistics.median(xa):.2f} / {statistics.median(xb):.2f} "
        f"({100 * (statistics.median(xb) - statistics.median(xa)) / statistics.median(xa):+.1f}%)"
        if xa and xb
        else "—"
    )
    ca = [t[key][3] for t in off if key in t and t[key][3] is not None]
    cb = [t[key][3] for t in on if key in t and t[key][3] is not None]
    cpu = (
        f"{statistics.median(ca):.0f} µs ({min(ca):.0f}..{max(ca):.0f}) / "
        f"{statistics.median(cb):.0f} µs ({min(cb):.0f}..{max(cb):.0f}) "
        f"({100 * (statistics.median(cb) - statistics.median(ca)) / statistics.median(ca):+.1f}%)"
        if ca and cb
        else "—"
    )
    print(
        f"| {key[0]} | {key[1]} | {ma:,.0f} ({min(a):,.0f}..{max(a):,.0f}) "
        f"| {mb:,.0f} ({min(b):,.0f}..{max(b):,.0f}) | {100 * (mb - ma) / ma:+.1f}% "
        f"| {statistics.median(pa):.2f} ms | {statistics.median(pb):.2f} ms | {limit} | {cpu} |"
    )
