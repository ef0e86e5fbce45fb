#!/usr/bin/env bash
# scripts/test.sh — install what is needed, build dist/ssg, run every test; exit status = test status.
#
#   ./scripts/test.sh                 everything under test/ (unit + integration; integration needs root)
#   ./scripts/test.sh test/smtp       only some paths (passed to deno test)
#   SSG_SKIP_SETUP=1 ./scripts/test.sh  skip scripts/setup.sh (the machine is already set up)
#
# Integration tests (test/netns/) run the built dist/ssg inside network namespaces they create
# and remove; they are reported as ignored, with the reason printed, when not run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1

say() { printf 'test.sh: %s\n' "$*"; }

# Namespaces left by a test runner that was killed outright (its exit hooks could not run) are
# named ssgt-*; remove those older than 30 minutes — never a run that is still going.
sweep_stale_namespaces() {
  local f now
  now=$(date +%s)
  for f in /run/netns/ssgt-*; do
    [ -e "$f" ] || continue
    if [ $((now - $(stat -c %Y "$f"))) -gt 1800 ]; then
      say "removing stale test namespace $(basename "$f")"
      ip netns pids "$(basename "$f")" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$(basename "$f")" 2>/dev/null || true
    fi
  done
}

if [ "${SSG_SKIP_SETUP:-}" != 1 ]; then
  say "step 1/3: scripts/setup.sh (packages, deno, npm dependencies)"
  bash ./scripts/setup.sh
else
  say "step 1/3: setup skipped (SSG_SKIP_SETUP=1)"
fi

say "step 2/3: ./build.sh"
bash ./build.sh

[ "$(id -u)" = 0 ] && sweep_stale_namespaces
paths=("$@")
[ "${#paths[@]}" -gt 0 ] || paths=(test/)
say "step 3/3: deno test --allow-all ${paths[*]}"
log=$(mktemp)
rc=0
# Bounded: CI allows 90 minutes for everything; the tests themselves take a few minutes.
timeout 3600 deno test --allow-all "${paths[@]}" 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
[ "$(id -u)" = 0 ] && sweep_stale_namespaces

# One plain closing line for CI readers: "tests: N passed, N failed, N ignored".
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -1 || true)
rm -f "$log"
if [ -n "$summary" ]; then
  passed=$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$summary")
  failed=$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")
  ignored=$(grep -oE '[0-9]+ ignored' <<<"$summary" | cut -d' ' -f1 || true)
  echo "tests: $passed passed, $failed failed, ${ignored:-0} skipped"
else
  say "no deno test summary line found (exit $rc)"
fi
[ "$rc" = 124 ] && say "deno test was stopped after 3600 s"
exit "$rc"
