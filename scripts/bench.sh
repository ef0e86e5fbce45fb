#!/usr/bin/env bash
# scripts/bench.sh — end-to-end latency/throughput of SSG versus direct delivery and versus peer
# gateways (Haraka smtp_forward, Postfix relay), side by side in one run (not a test).
#   ./scripts/bench.sh [--messages 200] [--size 2048] [--load 1000] [--sessions 10]
#                      [--peers haraka,postfix|none]
# Builds dist/ssg if it is missing (SSG_REBUILD=1 to always build), then runs bench/e2e/latency.ts
# as root in throw-away network namespaces. The first run installs Haraka with npm into
# ${SSG_BENCH_CACHE:-/var/cache/ssg-bench}/haraka (outside the repository); Postfix comes from the
# system package (apt-get install postfix) and runs as a private instance in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export DENO_NO_UPDATE_CHECK=1
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root (network namespaces)" >&2; exit 1; }
if [ ! -x dist/ssg ] || [ "${SSG_REBUILD:-}" = 1 ]; then
  bash ./build.sh
fi
exec timeout 1800 deno run --allow-all bench/e2e/latency.ts "$@"
