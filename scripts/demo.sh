#!/usr/bin/env bash
# scripts/demo.sh — SSG end to end on the shipped defaults, in throw-away network namespaces.
#
#   client ns (192.0.2.10) ── gateway ns: dist/ssg run rules/default.yaml ── server ns: smtp-sink
#                                                                           (198.51.100.25:25)
#
# Installs what it needs (scripts/setup.sh), builds dist/ssg (./build.sh), sends three mails with
# swaks — a clean one, one whose subject has a keyword (discarded), one whose body has a keyword
# (rejected with 550) — then shows what the client saw, what the server received and SSG's log.
# Everything is removed on exit, whatever happens. Bounded: each step has a timeout; the whole
# demo takes well under two minutes once the packages are installed.
#
#   SSG_SKIP_SETUP=1 ./scripts/demo.sh   skip package installation
#   SSG_SKIP_BUILD=1 ./scripts/demo.sh   use the existing dist/ssg
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RULES=${SSG_DEMO_RULES:-rules/default.yaml}

bold=$(printf '\033[1m') off=$(printf '\033[0m')
[ -t 1 ] || { bold=; off=; }
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\ndemo: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: the demo creates network namespaces and firewall rules"

if [ "${SSG_SKIP_SETUP:-}" != 1 ]; then
  step "Installing what the demo needs (Debian packages, deno, npm packages) — scripts/setup.sh"
  bash ./scripts/setup.sh
fi
if [ "${SSG_SKIP_BUILD:-}" != 1 ] || [ ! -x dist/ssg ]; then
  step "Building the single executable dist/ssg — ./build.sh"
  bash ./build.sh
fi
[ -f "$RULES" ] || die "$RULES not found"

ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
C=ssgdemo-$ID-client G=ssgdemo-$ID-gateway S=ssgdemo-$ID-server
WORK=$(mktemp -d /tmp/ssg-demo.XXXXXX)
SSG_PID=

cleanup() {
  local rc=$?
  set +e
  printf '\n%s==> Tearing down: stopping SSG and smtp-sink, deleting namespaces %s, %s, %s%s\n' \
    "$bold" "$C" "$G" "$S" "$off"
  if [ -n "$SSG_PID" ] && kill -0 "$SSG_PID" 2>/dev/null; then
    kill -TERM "$SSG_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$SSG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SSG_PID" 2>/dev/null
  fi
  for ns in "$C" "$G" "$S"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$WORK"
  [ "$rc" = 0 ] && info "done." || info "the demo failed (exit $rc)."
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "Creating three network namespaces joined by veth pairs (documentation addresses only)"
info "client  $C: 192.0.2.10, 2001:db8:1::10"
info "gateway $G: 192.0.2.1 | 198.51.100.1, 2001:db8:1::1 | 2001:db8:25::1 (forwarding on; SSG runs here)"
info "server  $S: 198.51.100.25, 2001:db8:25::25 (the protected internal mail server)"
for ns in "$C" "$G" "$S"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip -n "$G" link add cli type veth peer name eth0 netns "$C"
ip -n "$G" link add srv type veth peer name eth0 netns "$S"
ip -n "$C" addr add 192.0.2.10/24 dev eth0
ip -n "$C" addr add 2001:db8:1::10/64 dev eth0 nodad
ip -n "$G" addr add 192.0.2.1/24 dev cli
ip -n "$G" addr add 2001:db8:1::1/64 dev cli nodad
ip -n "$G" addr add 198.51.100.1/24 dev srv
ip -n "$G" addr add 2001:db8:25::1/64 dev srv nodad
ip -n "$S" addr add 198.51.100.25/24 dev eth0
ip -n "$S" addr add 2001:db8:25::25/64 dev eth0 nodad
ip -n "$C" link set eth0 up
ip -n "$G" link set cli up
ip -n "$G" link set srv up
ip -n "$S" link set eth0 up
ip -n "$C" route add default via 192.0.2.1
ip -n "$C" -6 route add default via 2001:db8:1::1
ip -n "$S" route add default via 198.51.100.1
ip -n "$S" -6 route add default via 2001:db8:25::1
ip netns exec "$G" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

wait_port() { # ns host port seconds
  local i
  for i in $(seq 1 $(($4 * 10))); do
    ip netns exec "$1" timeout 2 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

step "Starting smtp-sink, Postfix's test SMTP server, as the internal server 198.51.100.25:25"
info "it saves every message it receives into $WORK/server/"
mkdir -p "$WORK/server"
ip netns exec "$S" /usr/sbin/smtp-sink -u root -h mail.internal.example -d "$WORK/server/%Y%m%d%H%M%S." \
  198.51.100.25:25 64 >"$WORK/smtp-sink.out" 2>&1 &
disown # the teardown kills it; no job-control chatter
wait_port "$S" 198.51.100.25 25 10 || die "smtp-sink did not start"

step "Starting SSG in the gateway namespace: dist/ssg run $RULES"
# The demo keeps SSG's memory (state database, quarantine) in its own temp directory, so that it
# neither leaves /var/lib/ssg behind nor inherits a blacklist from an earlier demo run. Nothing
# else in the rule file is changed.
sed -e "s#/var/lib/ssg/#$WORK/var/#g" "$RULES" >"$WORK/rules.yaml"
info "(a copy of $RULES with its state and quarantine paths under $WORK/var/)"
ip netns exec "$G" "$ROOT/dist/ssg" run "$WORK/rules.yaml" >"$WORK/ssg.out" 2>&1 &
SSG_PID=$!
disown
for _ in $(seq 1 600); do
  grep -q 'ssg\.ready' "$WORK/ssg.out" && break
  kill -0 "$SSG_PID" 2>/dev/null || { cat "$WORK/ssg.out"; die "SSG exited before it was ready"; }
  sleep 0.1
done
grep -q 'ssg\.ready' "$WORK/ssg.out" || { cat "$WORK/ssg.out"; die "SSG was not ready within 60 s"; }
info "SSG is ready. Its diversion rules in the gateway's firewall:"
ip netns exec "$G" iptables-save -t raw 2>/dev/null | grep -iE 'ssg|NFQUEUE' | sed 's/^/      /' || true
ip netns exec "$G" ip6tables-save -t raw 2>/dev/null | grep -iE 'ssg|NFQUEUE' | sed 's/^/      /' || true
ip netns exec "$G" nft list table inet ssg 2>/dev/null | sed 's/^/      /' || true

msg() { # subject body
  printf 'From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@example.org>\r\n\r\n%s' \
    "$1" "$(date -R)" "$RANDOM$RANDOM" "$2"
}
send() { # label file
  step "Client 192.0.2.10 sends: $1"
  info "swaks --server 198.51.100.25 --from alice@example.org --to bob@example.net --data @$(basename "$2")"
  local rc=0
  ip netns exec "$C" timeout 60 swaks --server 198.51.100.25 --from alice@example.org --to bob@example.net \
    --helo client.example.org --timeout 20s --data @"$2" >"$2.transcript" 2>&1 || rc=$?
  info "what the client saw (server replies only; '<**' marks an error reply):"
  grep -E '^(<-|<\*\*|===)' "$2.transcript" | sed 's/^/      /'
  info "swaks exit code: $rc"
}

msg "Minutes of Monday's meeting" $'Hi Bob,\r\n\r\nthe minutes are below.\r\n\r\nAlice' >"$WORK/1-clean.eml"
msg "You have won the lottery!" $'Claim your prize today.' >"$WORK/2-subject-keyword.eml"
msg "A special offer" $'Buy cheap pills online, no prescription.' >"$WORK/3-body-keyword.eml"
send "a clean mail (expect 250: relayed to the server)" "$WORK/1-clean.eml"
send "spam with a subject keyword, \"lottery\" (expect 250 to the client, but discarded)" "$WORK/2-subject-keyword.eml"
send "spam with a body keyword, \"cheap pills\" (expect 550: rejected)" "$WORK/3-body-keyword.eml"

step "What the internal server (smtp-sink) actually received"
n=$(find "$WORK/server" -type f | wc -l)
info "$n message(s) of the 3 sent (expected: only the clean one)."
info "X-Client-Addr is who connected to the server: SSG's relay, from the gateway. SSG's"
info "Received header on top records the real client (192.0.2.10) and its HELO."
for f in "$WORK/server"/*; do
  [ -f "$f" ] || continue
  printf '      ---- %s ----\n' "$(basename "$f")"
  # smtp-sink writes X-Client-* lines and its own 3-line Received header first; show the rest,
  # which is the message exactly as the server got it (SSG's Received header on top).
  grep '^X-Client-Addr' "$f" | sed 's/^/      (smtp-sink) /'
  awk 'p>1 {print; next} p==1 {p=2; next} /\(smtp-sink\)/ {p=1}' "$f" | head -40 | sed 's/^/      /'
done

step "Stopping SSG with SIGTERM: it closes sessions and removes its firewall rules"
kill -TERM "$SSG_PID"
for _ in $(seq 1 150); do kill -0 "$SSG_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SSG_PID" 2>/dev/null; then
  info "SSG did not exit within 15 s"
else
  SSG_PID=
  left=$( (ip netns exec "$G" iptables-save; ip netns exec "$G" ip6tables-save; ip netns exec "$G" nft list ruleset) 2>/dev/null |
    grep -ciE 'ssg|NFQUEUE' || true)
  info "SSG exited; SSG rules left in the gateway's firewall: $left"
fi

step "SSG's log (one line per event; 'message' is the per-message summary)"
sed 's/^/    /' "$WORK/ssg.out"
