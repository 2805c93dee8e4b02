#!/bin/sh
# The CouchDB-compatible server the HTTP store tests run (pouchdb-server, from the npm
# registry at the version tests/pouchdb/package-lock.json pins). Installed once, beside it.
set -e
dir="$(dirname "$0")/../tests/pouchdb"
if [ -x "$dir/node_modules/.bin/pouchdb-server" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "the HTTP store tests need Node.js and npm for pouchdb-server: install nodejs and npm" >&2
  exit 1
fi
echo "installing pouchdb-server into $dir (npm ci)"
npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
