#!/bin/sh
# The mitmweb browser test drives Debian's Chromium (never a browser Playwright downloads).
# Installs the `chromium` package when it is missing and we may use apt; says so otherwise.
set -e
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the mitmweb browser test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }
  exit 0
fi
echo "the browser test needs /usr/bin/chromium: run 'sudo apt-get install chromium'" >&2
exit 1
