#!/bin/sh
# The shared-state tests run a real PostgreSQL server: Debian's package (the tests start it
# themselves, as the postgres user, in a temp dir). Installs it when missing and we may use apt.
set -e
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's postgresql for the shared-state tests"
  export DEBIAN_FRONTEND=noninteractive
  # The package's own cluster is not used; policy-rc.d keeps it from being started.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y --no-install-recommends postgresql >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null && apt-get install -y --no-install-recommends postgresql >/dev/null; }
  exit 0
fi
echo "the shared-state tests need PostgreSQL: run 'sudo apt-get install postgresql'" >&2
exit 1
