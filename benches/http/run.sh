#!/usr/bin/env bash
# The HTTP load bench (SPEC §10.6): credstore serve (release) under wrk.
# Prints a table; see benches/http/main.rs. Needs wrk and strace:
#   apt-get install -y wrk strace
# CREDSTORE_HTTP_BENCH_QUICK=1 for a quick run (a few seconds, no claims).
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in wrk strace; do
  command -v "$tool" >/dev/null || { echo "install $tool: apt-get install -y $tool" >&2; exit 1; }
done
exec cargo bench --bench http
