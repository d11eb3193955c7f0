#!/usr/bin/env bash
# The browser of the dashboard tests: $STORELENS_CHROMIUM, else Debian's chromium at /usr/bin/chromium (Playwright
# drives it with executable_path; it never downloads a browser). Idempotent: installs the package only when it is
# missing.
set -euo pipefail

CHROMIUM=${STORELENS_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  echo "chromium: $("$CHROMIUM" --version 2>/dev/null | head -1)"
  exit 0
fi
if [ -n "${STORELENS_CHROMIUM:-}" ]; then
  echo "error: STORELENS_CHROMIUM=$STORELENS_CHROMIUM is not an executable file" >&2
  exit 2
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
