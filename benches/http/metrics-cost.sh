#!/usr/bin/env bash
# The cost of the operators' metrics (issue 14): the HTTP bench with the admin
# port and the metrics recorder off (`--admin-listen off`), then on (the
# defaults, /metrics scraped every 5 s as a Prometheus would), alternately,
# ROUNDS times (default 2), in one session so that the runs share the
# machine's state. Tables in target/http-bench-metrics/{off,on}-N.md.
# Needs wrk and strace (apt-get install -y wrk strace); ~3 minutes a run.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${ROUNDS:-2}"
out="${OUT:-target/http-bench-metrics}"
mkdir -p "$out"
cargo bench --bench http --no-run
for r in $(seq 1 "$rounds"); do
  echo "round $r: metrics off" >&2
  CREDSTORE_HTTP_BENCH_SERVE_ARGS="--admin-listen off" cargo bench --bench http >"$out/off-$r.md" 2>"$out/off-$r.log"
  echo "round $r: metrics on" >&2
  CREDSTORE_HTTP_BENCH_SCRAPE_SECS=5 cargo bench --bench http >"$out/on-$r.md" 2>"$out/on-$r.log"
done
for f in "$out"/*.md; do
  echo "== $f"
  grep -E '^\||^server:' "$f"
done
