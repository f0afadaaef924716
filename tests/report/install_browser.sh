#!/usr/bin/env bash
# Install what tests/browser.py needs to render the HTML reports: headless Chromium and the
# chromedriver Selenium drives it with, from Debian's packages (Selenium then never downloads a
# driver), plus fonts-liberation so screenshots show real text (see apt_install.sh).
set -euo pipefail
exec bash "$(dirname "$0")/../apt_install.sh" browser "chromium chromium-driver fonts-liberation" \
    "/usr/bin/chromium /usr/bin/chromedriver"
