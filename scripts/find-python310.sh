#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter (Rasa 3.6 runs on 3.8-3.10 only).
# Looks for python3.10 on PATH, then for pyenv's installed 3.10.x versions.
set -u
is310() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' 2>/dev/null; }
if command -v python3.10 >/dev/null 2>&1 && is310 "$(command -v python3.10)"; then
  command -v python3.10
  exit 0
fi
root="${PYENV_ROOT:-$HOME/.pyenv}"
for candidate in $(ls -d "$root"/versions/3.10.* 2>/dev/null | sort -V -r); do
  if [ -x "$candidate/bin/python3.10" ] && is310 "$candidate/bin/python3.10"; then
    echo "$candidate/bin/python3.10"
    exit 0
  fi
done
cat >&2 <<'MSG'
error: FirstReply needs Python 3.10 (Rasa 3.6 does not run on 3.11 or newer), and none was found.
Install one, then run make again, e.g.:
  pyenv install 3.10.13          # with pyenv (found under $PYENV_ROOT/versions)
  apt-get install python3.10     # or your distribution's package, giving python3.10 on PATH
MSG
exit 1
