#!/usr/bin/env bash
# The browser of the dashboard tests: Debian's chromium at /usr/bin/chromium (Playwright drives it with
# executable_path; it never downloads a browser). Idempotent: installs the package only when it is missing.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -1)"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "error: /usr/bin/chromium is missing and apt-get is not available: install Chromium and set STORELENS_CHROMIUM" >&2
  exit 2
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
/usr/bin/chromium --version
