#!/usr/bin/env bash
# Install the Debian packages the tests need, when they are missing:
#   chromium       the browser the web chat's browser tests drive (through Playwright)
#   postgresql     PostgreSQL's server binaries (initdb, pg_ctl, postgres under
#                  /usr/lib/postgresql/<version>/bin) for the production-stack tests
#   redis-server   Redis, for Rasa's lock store in the production-stack tests
# scripts/test-services.sh runs private instances of both on loopback, in a temporary
# directory, for the length of the test run; the services the packages install (if the
# machine starts them at all) are neither used nor touched.
# Runs apt-get as root (or through sudo); says what to install when it cannot.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  apt_get=(apt-get)
elif command -v sudo >/dev/null 2>&1; then
  apt_get=(sudo apt-get)
else
  echo "error: the tests need the Debian packages ${missing[*]}; install them as root:" >&2
  echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${apt_get[@]}" update -qq
"${apt_get[@]}" install -y -qq "${missing[@]}" >/dev/null
