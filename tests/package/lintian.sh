#!/usr/bin/env bash
# Debian's lintian on the package that package-deb built (DIR/dmbyok_*.deb): fails on any
# error; warnings and notes are printed (docs/packaging.md lists the ones left and why).
set -euo pipefail
command -v lintian >/dev/null || { echo "lintian is not installed (apt-get install lintian)" >&2; exit 1; }
debs=("${1:?usage: lintian.sh DIR}"/dmbyok_*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || { echo "want one dmbyok_*.deb in $1" >&2; exit 1; }
echo "lintian $(lintian --print-version) on ${debs[0]}"
lintian --fail-on error --display-info --pedantic "${debs[0]}"
echo "lintian: no error"
