#!/bin/sh
# Install step for tests/services/cyrus.py: a Cyrus IMAP 3.6 that lives in a cache directory.
#
# Why not `apt-get install cyrus-imapd`: that package conflicts with (and removes) dovecot-imapd, which
# the project needs. So the Cyrus packages are only downloaded and unpacked into CACHE_DIR/root, and the
# binaries run from there with LD_LIBRARY_PATH. The shared libraries they link against that are not part
# of Cyrus conflict with nothing and are installed normally, as is sasl2-bin (saslpasswd2).
#
# Usage: fetch_cyrus.sh [CACHE_DIR]   (default: /var/cache/mailconnector/cyrus). Idempotent; needs root.
# Not inside the repository: Cyrus runs as the `cyrus` user, who must be able to reach the binaries, and a
# clone may live under a directory only root can enter.
set -eu

CACHE_DIR=${1:-${MAILCONNECTOR_CYRUS_CACHE:-/var/cache/mailconnector/cyrus}}
mkdir -p "$CACHE_DIR"
CACHE_DIR=$(cd "$CACHE_DIR" && pwd)
ROOT=$CACHE_DIR/root
BIN=$ROOT/usr/lib/cyrus/bin
CYRUS_DEBS="cyrus-common cyrus-imapd"
# What `ldd` reports missing for master, imapd, idled and ctl_cyrusdb, plus the SASL pieces the server
# uses: the PLAIN/LOGIN mechanisms (libsasl2-modules), the sasldb auxprop (libsasl2-modules-db) and
# saslpasswd2 (sasl2-bin).
LIBS="libpcre3 libical3 libwrap0 libxapian30 libsasl2-modules libsasl2-modules-db sasl2-bin"
APT_OPTS="-o DPkg::Lock::Timeout=300 -o APT::Sandbox::User=root"

step() { printf 'fetch_cyrus: %s\n' "$*"; }

libpath() {
    dirs=""
    for d in "$ROOT"/usr/lib/*-linux-gnu "$ROOT"/usr/lib; do
        [ -d "$d" ] && dirs="$dirs${dirs:+:}$d"
    done
    printf '%s' "$dirs"
}

# Installed = the binaries are unpacked, every library they need resolves, saslpasswd2 is there and the
# `cyrus` user exists (Cyrus refuses to run as root).
works() {
    [ -x "$BIN/master" ] || return 1
    for exe in master imapd idled ctl_cyrusdb; do
        out=$(LD_LIBRARY_PATH=$(libpath) ldd "$BIN/$exe" 2>&1) || return 1
        case $out in *"not found"*) return 1 ;; esac
    done
    command -v saslpasswd2 >/dev/null 2>&1 || return 1
    id -u cyrus >/dev/null 2>&1 || return 1
}

if works; then
    step "already installed in $ROOT, nothing to do"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    step "must run as root (apt-get install, useradd)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
LOG=$CACHE_DIR/apt.log
: >"$LOG"
# apt's and dpkg's chatter goes to $LOG; its tail is shown when a step fails.
quiet() {
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 20 "$LOG" >&2
        return 1
    fi
}
apt_install() {
    # shellcheck disable=SC2086
    quiet apt-get install -y -qq --no-install-recommends $APT_OPTS "$@"
}

step "apt-get install $LIBS"
# shellcheck disable=SC2086
if ! apt_install $LIBS; then
    step "install failed; apt-get update, then again"
    # shellcheck disable=SC2086
    quiet apt-get update -qq $APT_OPTS
    # shellcheck disable=SC2086
    apt_install $LIBS
fi

step "apt-get download $CYRUS_DEBS into $CACHE_DIR/debs"
mkdir -p "$CACHE_DIR/debs"
rm -f "$CACHE_DIR"/debs/*.deb
# shellcheck disable=SC2086
if ! (cd "$CACHE_DIR/debs" && quiet apt-get download -qq $APT_OPTS $CYRUS_DEBS); then
    step "download failed; apt-get update, then again"
    # shellcheck disable=SC2086
    quiet apt-get update -qq $APT_OPTS
    # shellcheck disable=SC2086
    (cd "$CACHE_DIR/debs" && quiet apt-get download -qq $APT_OPTS $CYRUS_DEBS)
fi

step "unpack into $ROOT"
rm -rf "$ROOT"
mkdir -p "$ROOT"
for deb in "$CACHE_DIR"/debs/*.deb; do
    dpkg-deb -x "$deb" "$ROOT"
done

if ! id -u cyrus >/dev/null 2>&1; then
    step "create system user cyrus (group mail)"
    useradd --system -g mail -d "$CACHE_DIR" -s /usr/sbin/nologin cyrus
else
    step "system user cyrus exists"
fi

if ! works; then
    step "still not usable; libraries ldd cannot find:" >&2
    for exe in master imapd idled ctl_cyrusdb; do
        LD_LIBRARY_PATH=$(libpath) ldd "$BIN/$exe" | grep "not found" >&2 || true
    done
    exit 1
fi
step "done: $(LD_LIBRARY_PATH=$(libpath) "$BIN/master" -V 2>&1 | head -n 1 || true) in $ROOT"
