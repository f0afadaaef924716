#!/usr/bin/env bash
# Install what tests/browser.py needs to render the HTML reports: headless Chromium and the
# chromedriver Selenium drives it with, from Debian's packages (Selenium then never downloads a
# driver), plus fonts-liberation so screenshots show real text. Does nothing when
# /usr/bin/chromium and /usr/bin/chromedriver are already there. Needs root (CI has it).
# Prints one line; apt's output only on failure.
set -euo pipefail

PACKAGES=(chromium chromium-driver fonts-liberation)
BINARIES=(/usr/bin/chromium /usr/bin/chromedriver)

have_all() {
    local bin
    for bin in "${BINARIES[@]}"; do
        [ -x "$bin" ] || return 1
    done
}
version() { dpkg-query -W -f '${Version}' chromium 2>/dev/null || echo "?"; }

if have_all; then
    echo "browser install: already installed (chromium $(version) and chromedriver)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "browser install: needs root to apt-get install ${PACKAGES[*]}" >&2
    exit 1
fi

start=$SECONDS
log=$(mktemp)
# A dependency (dbus, on a bare image) could start a service on install: forbid it for this
# install only (a policy-rc.d already there is kept as it is).
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
    echo "browser install: apt-get install ${PACKAGES[*]} failed" >&2
    exit 1
fi
if ! have_all; then
    echo "browser install: ${BINARIES[*]} still missing after apt-get install ${PACKAGES[*]}" >&2
    exit 1
fi
echo "browser install: installed chromium $(version) and chromedriver in $((SECONDS - start)) s"
