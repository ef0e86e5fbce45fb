#!/bin/sh
# SSG — the Secured SMTP Gateway: self-extracting executable, made by build.sh when `deno compile`
# could not get its runtime. Everything after this header is a gzip'd tar of: the deno runtime,
# the SSG sources (app/) and a Deno cache holding the npm packages (deno_dir/).
# First start: extract once into ${SSG_CACHE_DIR:-/var/cache/ssg}/<sha256 of the payload> (temp dir,
# then rename, so a half-written cache is never used); every start: exec deno from there, offline.
# Needs only sh, tail, gzip, tar, mkdir, mv (sha256sum, when present, verifies the payload).
SSG_HDR_BYTES=0000000000
SSG_SHA256=@PAYLOAD_SHA256@
set -eu

die() {
  printf 'ssg: %s\n' "$*" >&2
  exit 70
}

self=$0
case $self in
  */*) ;;
  *) self=$(command -v -- "$self") || die "cannot find my own file ($0)" ;;
esac
[ -r "$self" ] || die "cannot read my own file ($self)"

base=${SSG_CACHE_DIR:-/var/cache/ssg}
if ! mkdir -p "$base" 2>/dev/null || [ ! -w "$base" ]; then
  # Not root (or a read-only /var): fall back to the user's cache, loudly only if that fails too.
  base=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ssg
  mkdir -p "$base" || die "cannot create a cache directory (tried ${SSG_CACHE_DIR:-/var/cache/ssg} and $base); set SSG_CACHE_DIR"
fi
dir=$base/$SSG_SHA256

if [ ! -f "$dir/.complete" ]; then
  tmp=$(mktemp -d "$base/.extract.XXXXXX") || die "cannot create a temp directory in $base"
  chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT INT TERM
  if command -v sha256sum >/dev/null 2>&1; then
    got=$(tail -c +$((SSG_HDR_BYTES + 1)) "$self" | sha256sum | cut -c1-64)
    [ "$got" = "$SSG_SHA256" ] || die "payload checksum mismatch ($self is damaged: got $got)"
  fi
  tail -c +$((SSG_HDR_BYTES + 1)) "$self" | gzip -dc | tar -xf - -C "$tmp" ||
    die "cannot extract into $tmp (disk full?)"
  : >"$tmp/.complete"
  if mv -T "$tmp" "$dir" 2>/dev/null; then
    :
  elif [ -f "$dir/.complete" ]; then
    rm -rf "$tmp" # another start won the race; its copy is identical
  elif [ ! -e "$dir" ] && mv "$tmp" "$dir"; then
    :
  else
    die "cannot install the extracted files at $dir"
  fi
  trap - EXIT INT TERM
  # Older versions' copies (~110 MB each) not started for 2 days, and temp dirs of interrupted
  # extractions, are removed now — only here, on the rare start that extracts.
  for old in "$base"/* "$base"/.extract.*; do
    [ -d "$old" ] && [ "$old" != "$dir" ] || continue
    case $old in
      */.extract.*) [ -n "$(find "$old" -maxdepth 0 -mtime +1 2>/dev/null)" ] && rm -rf "$old" ;;
      *) [ -n "$(find "$old/.last-used" -maxdepth 0 -mtime +1 2>/dev/null)" ] && rm -rf "$old" ;;
    esac
  done
fi
# Marks this copy as in use, for the pruning above (best effort: the cache may be read-only).
: >"$dir/.last-used" 2>/dev/null || true

DENO_DIR=$dir/deno_dir
DENO_NO_UPDATE_CHECK=1
DENO_NO_PROMPT=1
export DENO_DIR DENO_NO_UPDATE_CHECK DENO_NO_PROMPT
exec "$dir/deno" run --cached-only --allow-all --no-prompt \
  --config "$dir/app/deno.json" "$dir/app/main.ts" "$@"
