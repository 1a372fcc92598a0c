#!/usr/bin/env bash
# Debian's headless Chromium and its driver, for the console's browser test
# (tests/integration/test_console_browser.py drives /usr/bin/chromium through
# /usr/bin/chromedriver with Selenium). Installed from Debian's packages when missing; no browser
# is ever downloaded from anywhere else.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then sudo=(sudo -n); else
    echo "browser: chromium missing and not root: apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
fi
mkdir -p .services
log=.services/apt-browser.log
echo "browser: installing Debian's chromium and chromium-driver (log: $log)" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
  >>"$log" 2>&1 || { tail -n 20 "$log" >&2; exit 1; }
