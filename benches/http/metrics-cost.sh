#!/usr/bin/env bash
# The cost of the operators' metrics (issue 14): the HTTP bench with no
# metrics recorder (`--no-metrics`: the admin port serves health only), then
# with it (the defaults, /metrics scraped every 5 s as a Prometheus would),
# alternately, ROUNDS times (default 3), in one session so that the runs
# share the machine's state. Tables in target/http-bench-metrics/{off,on}-N.md,
# then a summary: per row, the median of each side, the drop, and each side's
# spread (min..max), by benches/http/metrics-cost.py.
# Needs wrk and strace (apt-get install -y wrk strace); ~3 minutes a run.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${ROUNDS:-3}"
out="${OUT:-target/http-bench-metrics}"
mkdir -p "$out"
rm -f "$out"/off-*.md "$out"/on-*.md
cargo bench --bench http --no-run
for r in $(seq 1 "$rounds"); do
  echo "round $r: metrics off" >&2
  CREDSTORE_HTTP_BENCH_SERVE_ARGS="--no-metrics" cargo bench --bench http >"$out/off-$r.md" 2>"$out/off-$r.log"
  echo "round $r: metrics on" >&2
  CREDSTORE_HTTP_BENCH_SCRAPE_SECS=5 cargo bench --bench http >"$out/on-$r.md" 2>"$out/on-$r.log"
done
python3 benches/http/metrics-cost.py "$out"
