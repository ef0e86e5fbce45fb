#!/bin/sh
# SSG — the Secured SMTP Gateway: self-extracting executable, made by build.sh when `deno compile`
# could not get its runtime. Everything after this header is a gzip'd tar of: the deno runtime,
# the SSG sources (app/) and a Deno cache holding the npm packages (deno_dir/).
# First start: extract once into ${SSG_CACHE_DIR:-/var/cache/ssg}/<sha256 of the payload> (temp dir,
# then rename, so a half-written cache is never used); every start: remove other versions' copies
# that no process uses, then exec deno from ours, offline.
# Needs only sh, tail, gzip, tar, mkdir, mv, find, readlink (sha256sum, when present, verifies the
# payload).
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

# Marks this copy as in use *before* looking for it, so that another version's clean-up (below)
# either sees the mark and keeps it, or has removed it already and we extract it again.
if [ -d "$dir" ]; then : >"$dir/.last-used" 2>/dev/null || true; fi

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
  : >"$tmp/.last-used"
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
fi
# Marks this copy as in use, for the clean-up of other versions (best effort: the cache may be
# read-only).
: >"$dir/.last-used" 2>/dev/null || true

# in_use DIR: a running process executes a program from DIR (an ssg of that version runs its
# deno from there), or DIR was marked in the last minute (a start of that version is between
# finding its copy and exec'ing it).
in_use() {
  [ -n "$(find "$1/.last-used" -maxdepth 0 -mmin -1 2>/dev/null)" ] && return 0
  for exe in /proc/[0-9]*/exe; do
    target=$(readlink "$exe" 2>/dev/null) || continue
    case $target in "$1"/*) return 0 ;; esac
  done
  return 1
}

# Every start removes the other versions' copies (~110 MB each) that nothing uses, so upgrades
# never fill the router's disk: only the running versions stay. A copy is first renamed (atomic),
# then deleted, so a half-deleted copy is never mistaken for a complete one. Temp dirs of
# extractions interrupted more than a day ago go too.
for old in "$base"/* "$base"/.extract.* "$base"/.remove.*; do
  [ -d "$old" ] && [ "$old" != "$dir" ] || continue
  name=${old##*/}
  case $name in
    .extract.*) [ -n "$(find "$old" -maxdepth 0 -mtime +0 2>/dev/null)" ] && rm -rf "$old" ;;
    .remove.*) rm -rf "$old" ;;
    *[!0-9a-f]*) ;; # not ours: never touched
    *)
      [ ${#name} = 64 ] || continue
      in_use "$old" && continue
      trash=$(mktemp -d "$base/.remove.XXXXXX" 2>/dev/null) || continue
      if mv "$old" "$trash/copy" 2>/dev/null; then
        rm -rf "$trash"
      else
        rmdir "$trash" 2>/dev/null || true
      fi
      ;;
  esac
done

DENO_DIR=$dir/deno_dir
DENO_NO_UPDATE_CHECK=1
DENO_NO_PROMPT=1
export DENO_DIR DENO_NO_UPDATE_CHECK DENO_NO_PROMPT
# V8 heap settings chosen by build.sh (see V8_FLAGS there); SSG_V8_FLAGS replaces them.
exec "$dir/deno" run --cached-only --allow-all --no-prompt "--v8-flags=${SSG_V8_FLAGS:-@V8_FLAGS@}" \
  --config "$dir/app/deno.json" "$dir/app/main.ts" "$@"
