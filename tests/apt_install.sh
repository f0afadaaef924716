#!/usr/bin/env bash
# Install Debian packages for a test setup, quietly and without starting their services.
#
#   bash tests/apt_install.sh LABEL "PACKAGE ..." "COMMAND_OR_PATH ..."
#
# Does nothing when every command (or executable path) is already there. Needs root (CI has
# it). Prints one line, "LABEL install: ...", with apt's output only on failure.
set -euo pipefail

label=$1
read -r -a PACKAGES <<<"$2"
read -r -a NEEDED <<<"$3"

have_all() {
    local cmd
    for cmd in "${NEEDED[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || return 1
    done
}
version() { dpkg-query -W -f '${Version}' "${PACKAGES[0]}" 2>/dev/null || echo "?"; }

if have_all; then
    echo "$label install: already installed (${PACKAGES[0]} $(version))"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$label install: needs root to apt-get install ${PACKAGES[*]}" >&2
    exit 1
fi

start=$SECONDS
log=$(mktemp)
# Debian's packages start their services on install unless a policy-rc.d forbids it: forbid it
# for this install only (one already there is kept as it is).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
fi
cleanup() {
    if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
    rm -f "$log"
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "$label install: apt-get install ${PACKAGES[*]} failed" >&2
    exit 1
fi
if ! have_all; then
    echo "$label install: ${NEEDED[*]} still missing after apt-get install ${PACKAGES[*]}" >&2
    exit 1
fi
echo "$label install: installed ${PACKAGES[*]} (${PACKAGES[0]} $(version)) in $((SECONDS - start)) s"
