#!/usr/bin/env bash
# build.sh — produce dist/ssg, ONE executable file, and say which way it was built.
#
#   ./build.sh            deno compile if its runtime ("denort") can be had, else self-extracting
#   SSG_BUILD=compile     only deno compile (fail if denort is unavailable)
#   SSG_BUILD=selfextract only the self-extracting file
#   DENORT_BIN=/path      a local denort for deno compile (read by deno itself)
#   DENO_BIN=/path        the deno ELF to embed in the self-extracting file (default: `deno` on PATH)
#   SSG_BUILD_NO_CHECK=1  skip type checking (both ways)
#
# Way 1, `deno compile`: the standard single binary. It downloads denort from Deno's release host
# at compile time unless DENORT_BIN points at one; the full `deno` binary is not a substitute
# (the result starts a REPL — see ENVIRONMENT.md).
#
# Way 2, self-extracting (offline machines): dist/ssg = a POSIX sh header + a gzip'd tar holding
#   deno          the deno runtime (an ELF; checked)
#   app/          main.ts, ffi/, src/, rules/, deno.json, deno.lock (sources, not a bundle: the packet
#                 Worker is loaded with `new URL("./queue_worker.ts", import.meta.url)`, which a bundle
#                 would not carry)
#   deno_dir/     a DENO_DIR pre-populated with the npm packages, so the app runs --cached-only
# On start the header extracts once into ${SSG_CACHE_DIR:-/var/cache/ssg}/<sha256 of the payload>
# (to a temp dir, then rename: atomic; a second start finds it and does not extract again), then
# execs `deno run --cached-only --allow-all app/main.ts "$@"`.
# Rejected: `deno bundle` (drops the Worker file, and mailparser's CommonJS graph is fragile
# bundled); a shar of plain files (not one executable); xz (not on every router; gzip is).
set -euo pipefail

cd "$(dirname "$0")"
ROOT=$(pwd)
OUT="$ROOT/dist/ssg"
MODE=${SSG_BUILD:-auto}
export NO_COLOR=1
say() { printf 'build.sh: %s\n' "$*"; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

[ -f main.ts ] || die "main.ts not found in $ROOT"
command -v deno >/dev/null 2>&1 || die "deno not found on PATH (run ./scripts/setup.sh)"

# Worker entry points that a compiled binary must carry (resolved at run time through import.meta.url).
INCLUDES=()
for w in ffi/queue_worker.ts src/policy/decode_worker.ts; do
  [ -f "$w" ] && INCLUDES+=(--include "$w")
done
mkdir -p dist

# V8 heap settings baked into the executable (both ways). `--max-semi-space-size=2` (MiB) caps each
# isolate's young generation (default: up to 16 MiB per semi-space, and main, the packet Worker and
# each decoding Worker have one each). Measured on the 10 KB x 3000 / 20-session bench (issue 9):
# RSS at peak 234 -> 170-181 MiB, idle 113 -> 103-110 MiB, throughput and CPU per message within
# the run-to-run spread. At run time SSG_V8_FLAGS replaces this list (self-extracting build).
V8_FLAGS="--max-semi-space-size=2"

try_compile() {
  local log tmp rc=0
  log=$(mktemp)
  tmp="$OUT.compile.$$"
  local check=()
  [ "${SSG_BUILD_NO_CHECK:-}" = 1 ] && check=(--no-check)
  say "trying: deno compile --allow-all --v8-flags=$V8_FLAGS ${INCLUDES[*]} -o dist/ssg main.ts${DENORT_BIN:+ (DENORT_BIN=$DENORT_BIN)}"
  # Bounded: a download that hangs must not hang the build.
  timeout 180 deno compile --allow-all "--v8-flags=$V8_FLAGS" "${check[@]}" "${INCLUDES[@]}" -o "$tmp" main.ts >"$log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    rm -f "$log"
    # Smoke test: a DENORT_BIN that is really the full deno yields a binary that ignores the app
    # (it starts deno's own CLI); never ship that.
    local out vrc=0
    out=$(cd / && timeout 60 "$tmp" --version </dev/null 2>&1) || vrc=$?
    if [ "$vrc" != 0 ] || ! printf '%s' "$out" | grep -qi '^ssg '; then
      rm -f "$tmp"
      die "the compiled dist/ssg does not run SSG (\`dist/ssg --version\` said: $(printf '%s' "$out" | head -2 | tr '\n' ' ')); is DENORT_BIN a denort binary?"
    fi
    mv -f "$tmp" "$OUT"
    local mb=$(( $(stat -c %s "$OUT") / 1048576 ))
    say "smoke test: dist/ssg --version -> $out"
    say "built dist/ssg with deno compile ($mb MB)"
    return 0
  fi
  rm -f "$tmp" "$tmp".tmp-* 2>/dev/null || true
  # Only a missing runtime sends us to the other way; a type error must fail the build.
  if grep -qiE 'denort|Setting up base binary|error sending request|dns error|timed out' "$log" || [ "$rc" = 124 ]; then
    COMPILE_ERR=$(grep -iE 'error' "$log" | head -3 || true)
    # deno compile type-checks before it fetches the runtime ("Check main.ts" comes first).
    grep -q '^Check ' "$log" && COMPILE_CHECKED=1
    rm -f "$log"
    return 2
  fi
  cat "$log" >&2
  rm -f "$log"
  die "deno compile failed (exit $rc); see above"
}

# The deno ELF to embed: DENO_BIN, else `deno` on PATH resolved through symlinks; the npm
# package's `bin.cjs` launcher is not the runtime, so look beside it for @deno/linux-*.
find_deno_elf() {
  local cand c
  cand=("${DENO_BIN:-}" "$(readlink -f "$(command -v deno)")")
  local d
  d=$(dirname "$(readlink -f "$(command -v deno)")")
  cand+=("$d/deno" "$d/node_modules/@deno/linux-x64-glibc/deno" "$d/../@deno/linux-x64-glibc/deno")
  if command -v npm >/dev/null 2>&1; then
    local g
    g=$(npm root -g 2>/dev/null || true)
    [ -n "$g" ] && cand+=("$g/deno/deno" "$g/deno/node_modules/@deno/linux-x64-glibc/deno" "$g/@deno/linux-x64-glibc/deno")
  fi
  for c in "${cand[@]}"; do
    [ -n "$c" ] && [ -f "$c" ] || continue
    # ELF magic: 7f 45 4c 46
    if [ "$(head -c 4 "$c" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
      printf '%s\n' "$c"
      return 0
    fi
  done
  return 1
}

build_selfextract() {
  local deno_elf stage payload hash hdr hdrsize
  deno_elf=$(find_deno_elf) || die "no deno ELF binary found (set DENO_BIN=/path/to/deno)"
  say "embedding deno runtime $deno_elf ($("$deno_elf" --version | head -1))"
  stage=$(mktemp -d "${TMPDIR:-/tmp}/ssg-build.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$stage'" EXIT
  mkdir -p "$stage/root/app" "$stage/root/deno_dir"
  cp "$deno_elf" "$stage/root/deno"
  chmod 755 "$stage/root/deno"
  local item
  for item in main.ts deno.json deno.lock ffi src rules; do
    [ -e "$item" ] && cp -a "$item" "$stage/root/app/"
  done
  # deno.json may list a "nodeModulesDir"; keep the app a Deno project with the global cache.
  local entries=(main.ts)
  [ -f ffi/queue_worker.ts ] && entries+=(ffi/queue_worker.ts)
  [ -f src/policy/decode_worker.ts ] && entries+=(src/policy/decode_worker.ts)
  say "caching npm dependencies into the embedded DENO_DIR"
  # Type-check main.ts as deno compile would (it checks the entry point's graph, not --include'd
  # files), then fill the cache for every entry. Both run on the staged copy so that the tree's
  # deno.lock is never rewritten by a build.
  # (Skipped when deno compile already type-checked main.ts and failed only to download denort.)
  if [ "${SSG_BUILD_NO_CHECK:-}" != 1 ] && [ "${COMPILE_CHECKED:-}" != 1 ]; then
    (cd "$stage/root/app" && DENO_DIR="$stage/root/deno_dir" timeout 600 "$deno_elf" check --quiet main.ts) ||
      die "deno check main.ts failed (see above)"
  fi
  (cd "$stage/root/app" && DENO_DIR="$stage/root/deno_dir" timeout 600 "$deno_elf" cache --quiet "${entries[@]}") ||
    die "deno cache failed for ${entries[*]} (see above)"
  if ! cmp -s deno.lock "$stage/root/app/deno.lock" 2>/dev/null; then
    say "warning: deno.lock is out of date for main.ts (the staged copy was updated; the tree was not)"
  fi
  # The transpile cache is keyed by the staging path and useless after extraction: drop it.
  rm -rf "$stage/root/deno_dir/gen" "$stage/root/deno_dir/check_cache_v2" "$stage/root/deno_dir"/*.db-journal

  payload="$stage/payload.tgz"
  # Deterministic archive: fixed order, owner and mtime, so the same tree gives the same hash.
  (cd "$stage/root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    tar --null --no-recursion -T - --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - |
    gzip -n -6) >"$payload"
  hash=$(sha256sum "$payload" | cut -c1-64)

  hdr="$stage/header.sh"
  sed -e "s/@PAYLOAD_SHA256@/$hash/" -e "s/@V8_FLAGS@/$V8_FLAGS/" "$ROOT/scripts/selfextract_header.sh" >"$hdr"
  # The header carries its own length as a fixed-width number; fill it in without changing it.
  hdrsize=$(stat -c %s "$hdr")
  # Space-padded, not zero-padded: sh arithmetic would read leading zeros as octal.
  sed -i -e "s/^SSG_HDR_BYTES=0000000000$/SSG_HDR_BYTES=$(printf '%-10s' "$hdrsize")/" "$hdr"
  [ "$(stat -c %s "$hdr")" = "$hdrsize" ] || die "header size changed while stamping it"
  grep -q "^SSG_HDR_BYTES=$hdrsize *$" "$hdr" || die "header has no SSG_HDR_BYTES line"

  cat "$hdr" "$payload" >"$OUT.tmp.$$"
  chmod 755 "$OUT.tmp.$$"
  # Smoke test before shipping: extract into a scratch cache and start offline (--cached-only)
  # from another directory.
  local out rc=0
  out=$(cd / && SSG_CACHE_DIR="$stage/cache" timeout 120 "$OUT.tmp.$$" --version 2>&1) || rc=$?
  if [ "$rc" != 0 ]; then
    printf '%s\n' "$out" >&2
    rm -f "$OUT.tmp.$$"
    die "the self-extracting file does not start (dist/ssg --version exit $rc; see above)"
  fi
  say "smoke test: dist/ssg --version -> $(printf '%s' "$out" | head -1)"
  mv -f "$OUT.tmp.$$" "$OUT"
  local mb=$(( $(stat -c %s "$OUT") / 1048576 ))
  say "deno compile unavailable (no denort runtime offline); built self-extracting dist/ssg ($mb MB)"
  say "payload sha256 $hash; first start extracts to \${SSG_CACHE_DIR:-/var/cache/ssg}/$hash"
}

case "$MODE" in
  compile)
    try_compile || die "deno compile could not get its runtime: ${COMPILE_ERR:-unknown error}"
    ;;
  selfextract)
    build_selfextract
    ;;
  auto)
    COMPILE_ERR=
    if ! try_compile; then
      say "deno compile cannot get denort: ${COMPILE_ERR//$'\n'/ }"
      build_selfextract
    fi
    ;;
  *) die "SSG_BUILD must be auto, compile or selfextract (got \"$MODE\")" ;;
esac
