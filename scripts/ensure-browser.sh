#!/usr/bin/env bash
# Makes sure Debian's headless Chromium (the console's browser test drives it with Playwright)
# is installed at /usr/bin/chromium; installs it with apt-get when missing, fails loudly if it
# cannot. Playwright's own browser download is never used.
set -u
if [ -x /usr/bin/chromium ]; then
  echo "ensure-browser: $(/usr/bin/chromium --version 2>/dev/null | head -n1)" >&2
  exit 0
fi
echo "ensure-browser: installing chromium (apt-get)" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y chromium >&2 || { $SUDO apt-get update >&2 && $SUDO apt-get install -y chromium >&2; }
if [ ! -x /usr/bin/chromium ]; then
  echo "ensure-browser: ERROR: /usr/bin/chromium is missing and could not be installed (apt-get install -y chromium)" >&2
  exit 1
fi
