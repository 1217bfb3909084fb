#!/usr/bin/env bash
# Prepares a Debian host for Hangar's `local` runtime (real sandboxes).
# Idempotent: installs only what is missing, adds subordinate id ranges only
# when absent, and exits 0 when everything is already in place. Not root:
# prints a note and exits 0 so CI and dev runs never fail on it.
set -euo pipefail

log() { printf 'setup-host: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  log "not running as root: skipping (the local runtime needs root; run: sudo $0)"
  exit 0
fi

# command -> Debian package that provides it
declare -A NEEDS=(
  [bwrap]=bubblewrap
  [busybox]=busybox-static
  [newuidmap]=uidmap
  [unshare]=util-linux
  [nsenter]=util-linux
  [losetup]=mount
  [mount]=mount
  [mkfs.ext4]=e2fsprogs
  [resize2fs]=e2fsprogs
)

missing=()
for cmd in "${!NEEDS[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    pkg="${NEEDS[$cmd]}"
    # busybox from the dynamic package is not enough: the image needs the static binary.
    [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
  fi
done
# A dynamic busybox on PATH does not help: the image copies /bin/busybox from busybox-static.
if command -v busybox >/dev/null 2>&1 && ! dpkg -s busybox-static >/dev/null 2>&1; then
  [[ " ${missing[*]-} " == *" busybox-static "* ]] || missing+=(busybox-static)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "missing packages (${missing[*]}) and no apt-get: install them by hand"
    exit 1
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "installed: ${missing[*]}"
else
  log "packages: all present"
fi

# The sandboxes map their root to an unprivileged range owned by root's
# subordinate ids (the same range for every machine; the namespaces keep them
# apart). newuidmap/newgidmap refuse without these entries.
SUB_START=100000
SUB_COUNT=65536
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  if grep -qE '^root:' "$f"; then
    log "$f: root range present"
  else
    echo "root:${SUB_START}:${SUB_COUNT}" >>"$f"
    log "$f: added root:${SUB_START}:${SUB_COUNT}"
  fi
done

# Loop devices back each machine's storage image.
if [ ! -e /dev/loop-control ]; then
  modprobe loop 2>/dev/null && log "loaded the loop module" || log "warning: /dev/loop-control missing (storage needs loop devices)"
fi

log "done"
