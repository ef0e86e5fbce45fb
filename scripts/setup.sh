#!/usr/bin/env bash
# scripts/setup.sh — install what SSG's build, demo and tests need; idempotent, says what it does.
#
# On a fresh Debian 12 as root with Node/npm:
#   - Debian packages (only the missing ones; `apt-get update` first, only if something is missing):
#     libnetfilter-queue1 (the FFI target), iptables, nftables, iproute2 (diversion rules and test
#     namespaces), postfix (smtp-sink, smtp-source, and private Postfix instances in tests),
#     swaks with its TLS and IPv6 modules (libnet-ssleay-perl, libio-socket-ssl-perl,
#     libio-socket-inet6-perl: only *recommended* by swaks, so named here), python3-aiosmtpd (a
#     scriptable SMTP server for cases smtp-sink cannot express), clamav-daemon (clamd for the
#     virus-scanning tests; its own daemon and freshclam are not started), rspamd (the spam-scoring
#     tests start their own in the foreground with a config they write; the package's service is
#     never started: the policy-rc.d hook below keeps it stopped), dnsmasq-base (the
#     dnsmasq binary alone, without the Debian service that package dnsmasq would enable: DNS tests
#     run their own in the foreground on loopback or in a namespace), tcpdump, openssl, bash,
#     coreutils, gzip, tar, procps (sysctl), util-linux (unshare, script), e2fsprogs (chattr),
#     gcc and libnetfilter-queue-dev (bench/packet_path_bench.ts builds the C NFQUEUE reference).
#   - Then it checks what the tests *use*, by capability, not by package name: swaks can do TLS
#     and IPv6, python3 can import aiosmtpd and ssl, smtp-sink/smtp-source/postfix run, and inside
#     a throw-away network namespace iptables can add an NFQUEUE rule and nft can list rules.
#     Each failed check names the package that provides it, and setup exits non-zero.
#   - Deno 2.9.6 through npm (`npm install -g deno@2.9.6`) if `deno` is missing.
#   - The npm packages of deno.json into Deno's cache (`deno install --frozen`).
# Postfix is preseeded to "No configuration" and its daemon is never left running on the host:
# tests start their own SMTP servers inside network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

DENO_VERSION=2.9.6
PACKAGES=(libnetfilter-queue1 iptables nftables iproute2 postfix swaks libnet-ssleay-perl
  libio-socket-ssl-perl libio-socket-inet6-perl python3 python3-aiosmtpd clamav-daemon rspamd
  dnsmasq-base tcpdump openssl ca-certificates bash coreutils gzip tar procps util-linux e2fsprogs
  gcc libnetfilter-queue-dev)

[ "$(id -u)" = 0 ] || die "run as root (installs packages; the tests create network namespaces)"

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Postfix asks which mail setup to use; "No configuration" leaves it without a main.cf, so
  # it never starts listening on the host's port 25.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # Keep package daemons from starting during installation (the standard Debian policy hook);
  # removed again right after, and only if we created it.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  cleanup_policy() { [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d; return 0; }
  trap cleanup_policy EXIT
  say "apt-get update"
  apt-get update -q >/tmp/ssg-setup-apt-update.log 2>&1 || {
    tail -20 /tmp/ssg-setup-apt-update.log >&2
    die "apt-get update failed (log: /tmp/ssg-setup-apt-update.log)"
  }
  say "apt-get install -y ${missing[*]}"
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/ssg-setup-apt-install.log 2>&1 || {
    tail -30 /tmp/ssg-setup-apt-install.log >&2
    die "apt-get install failed (log: /tmp/ssg-setup-apt-install.log)"
  }
  cleanup_policy
  trap - EXIT
else
  say "Debian packages already installed: ${PACKAGES[*]}"
fi

# Whatever installed postfix, its daemon must not hold the host's port 25.
if [ -x /usr/sbin/postfix ] && /usr/sbin/postfix status >/dev/null 2>&1; then
  say "stopping the postfix daemon on the host (tests run their own SMTP servers in namespaces)"
  /usr/sbin/postfix stop >/dev/null 2>&1 || true
fi

# ---- capabilities: what the build, the tests and the benchmark actually use ----------------
# A package can be installed and still lack what we need (swaks without its recommended Perl
# modules runs, but cannot do TLS or IPv6), so each check exercises the capability itself.
failed=()
check() { # check "what" "package that provides it" command...
  local what=$1 pkg=$2
  shift 2
  if "$@" >/dev/null 2>&1; then
    say "ok: $what"
  else
    printf 'setup: MISSING: %s (provided by Debian package %s)\n' "$what" "$pkg" >&2
    failed+=("$pkg")
  fi
}
# (The whole output first: `grep -q` on a pipe would end swaks early, and pipefail would see it.)
swaks_has() { local out; out=$(swaks --support 2>&1) && grep -q "^=== $1 supported" <<<"$out"; }
nfq_in_netns() {
  local ns="ssgt-setup-$$" rc=0
  ip netns add "$ns" || return 1
  ip netns exec "$ns" iptables -t raw -A OUTPUT -p tcp -d 192.0.2.1 --dport 25 \
    -j NFQUEUE --queue-num 9 --queue-bypass || rc=1
  ip netns exec "$ns" ip6tables -t raw -A OUTPUT -p tcp -d 2001:db8::1 --dport 25 \
    -j NFQUEUE --queue-num 9 --queue-bypass || rc=1
  ip netns exec "$ns" nft list ruleset || rc=1
  ip netns del "$ns" || rc=1
  return "$rc"
}
# The tests' kind of rspamd config (test/engines/rspamd_fixture.ts): one normal worker on
# loopback, the C regexp module, a tiny TLD list, a DNS server nobody runs. Checked, not started.
rspamd_minimal_config() {
  local d rc=0
  d=$(mktemp -d)
  printf 'com\n' >"$d/tld.dat"
  cat >"$d/rspamd.conf" <<CONF
options { dbdir = "$d"; filters = "regexp"; url_tld = "$d/tld.dat";
  dns { nameserver = ["127.0.0.1:1"]; } }
worker "normal" { bind_socket = "127.0.0.1:11333"; count = 1; }
regexp { SSG_CHECK { re = "/x/{body}"; score = 1.0; } }
CONF
  local v
  v=$(/usr/bin/rspamd --version 2>&1) && grep -q "version 3\." <<<"$v" || rc=1
  rspamadm configtest -c "$d/rspamd.conf" >/dev/null 2>&1 || rc=1
  rm -rf "$d"
  return "$rc"
}
check "libnetfilter_queue.so.1 (the FFI target)" libnetfilter-queue1 \
  sh -c 'ldconfig -p | grep -q "libnetfilter_queue.so.1 "'
check "ip (network namespaces and veth)" iproute2 ip -V
check "iptables/ip6tables NFQUEUE rules and nft inside a network namespace" "iptables nftables" \
  nfq_in_netns
check "swaks (the SMTP client of the tests)" swaks swaks --version
check "swaks can do STARTTLS" "libnet-ssleay-perl libio-socket-ssl-perl" swaks_has TLS
check "swaks can do IPv6" libio-socket-inet6-perl swaks_has IPv6
check "smtp-sink and smtp-source (Postfix's test server and load generator)" postfix \
  test -x /usr/sbin/smtp-sink -a -x /usr/sbin/smtp-source
check "postfix and postconf (private Postfix instances in tests)" postfix \
  /usr/sbin/postconf -d mail_version
# Debian's python3 by path: the tests run /usr/bin/python3, and a pyenv or venv python3 earlier
# on PATH would not see Debian's python3-aiosmtpd.
check "/usr/bin/python3 with aiosmtpd and ssl (scripted SMTP servers in tests)" python3-aiosmtpd \
  /usr/bin/python3 -c 'import aiosmtpd.controller, ssl'
check "openssl (test certificates)" openssl openssl version
check "clamd (virus-scanning tests start their own, with a test signature database)" clamav-daemon \
  /usr/sbin/clamd --version
check "rspamd 3.x accepting the tests' minimal config (its own process, no network, no redis)" \
  rspamd rspamd_minimal_config
check "dnsmasq (DNS tests start their own, with records the test writes)" dnsmasq-base \
  /usr/sbin/dnsmasq --test --conf-file=/dev/null
check "tcpdump (packet captures when a test fails)" tcpdump tcpdump --version
check "sysctl" procps sysctl -n net.ipv4.ip_forward
check "unshare and script" util-linux sh -c 'command -v unshare && command -v script'
check "chattr (read-only quarantine tests)" e2fsprogs sh -c 'command -v chattr'
check "gzip and tar (the self-extracting build)" "gzip tar" sh -c 'command -v gzip && command -v tar'
check "gcc links against libnetfilter_queue (the C reference of bench/packet_path_bench.ts)" \
  "gcc libnetfilter-queue-dev" sh -c 'printf "%s\n" "#include <libnetfilter_queue/libnetfilter_queue.h>" \
    "int main(void) { return nfq_open() == 0; }" | gcc -x c -o /dev/null - -lnetfilter_queue'
if [ "${#failed[@]}" -gt 0 ]; then
  die "missing capabilities after installation; install: apt-get install -y ${failed[*]}"
fi

if command -v deno >/dev/null 2>&1; then
  have=$(deno --version | head -1 | awk '{print $2}')
  say "deno $have already installed ($(command -v deno))"
  [ "$have" = "$DENO_VERSION" ] || say "note: SSG is tested with deno $DENO_VERSION"
else
  command -v npm >/dev/null 2>&1 || die "deno is missing and so is npm (install Node.js + npm first)"
  say "installing deno $DENO_VERSION: npm install -g deno@$DENO_VERSION"
  npm install -g "deno@$DENO_VERSION" >/tmp/ssg-setup-npm.log 2>&1 || {
    tail -20 /tmp/ssg-setup-npm.log >&2
    die "npm install -g deno@$DENO_VERSION failed (log: /tmp/ssg-setup-npm.log)"
  }
  hash -r
  command -v deno >/dev/null 2>&1 || die "deno is not on PATH after npm install (npm prefix: $(npm prefix -g))"
  say "installed $(deno --version | head -1)"
fi

export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
say "caching the npm packages of deno.json into Deno's cache (deno install --frozen)"
if ! timeout 600 deno install --frozen >/tmp/ssg-setup-deno.log 2>&1; then
  # A lock file out of step with deno.json is the maintainers' bug; say so, but let the build and
  # tests fetch what they need rather than rewriting deno.lock here.
  tail -20 /tmp/ssg-setup-deno.log >&2
  say "warning: deno install --frozen failed (log: /tmp/ssg-setup-deno.log); continuing"
fi
say "done"
