#!/usr/bin/env bash
# What a machine needs outside Python before `make demo` / `make test` can run, in one place for
# `.ci/run` and the Makefile:
#
#   deploy/system-deps.sh demo    Java 17 and Maven (the Kafka broker and fetching its jars)
#   deploy/system-deps.sh test    the same, plus Chromium (the console's browser test, driven through
#                                 Playwright without a browser download) and nginx (the gateway tests run
#                                 the real server from a private prefix, never as a system service)
#
# Missing packages are installed from Debian with apt-get when this can be done without a password
# (root, or sudo -n); otherwise the script stops at once with one line naming what is missing and the
# command that installs it (exit 1). Python >= 3.11 with venv is checked, never installed.
set -euo pipefail

what="${1:-demo}"
case "$what" in demo|test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac

need=()
missing=()
java_ok() { command -v java >/dev/null && java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; }
java_ok || { need+=(openjdk-17-jre-headless); missing+=("Java 17"); }
command -v mvn >/dev/null || { need+=(maven); missing+=(Maven); }
if [ "$what" = test ]; then
  command -v chromium >/dev/null || { need+=(chromium); missing+=(Chromium); }
  # /usr/sbin is not on every PATH; GATEWATCH_NGINX names another binary (tests/nginx_helpers.py reads it too)
  command -v nginx >/dev/null || test -x "${GATEWATCH_NGINX:-/usr/sbin/nginx}" || { need+=(nginx); missing+=(nginx); }
fi

py="${PY:-python3}"
if ! "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "gatewatch: needs Python >= 3.11 with venv as '$py' (Debian: sudo apt-get install -y python3 python3-venv)" >&2
  exit 1
fi

[ ${#need[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; else SUDO="none"; fi
fi
if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null; then
  echo "gatewatch: missing $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g'); install with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "gatewatch: installing ${need[*]} from Debian" >&2
# Debian's nginx package starts its service on port 80 when installed: a policy-rc.d that refuses every
# start (the Debian mechanism invoke-rc.d and deb-systemd-invoke obey) keeps it stopped, unless the machine
# has one already (Docker images do). The tests run nginx themselves, unprivileged, from a private prefix.
if [[ " ${need[*]} " == *" nginx "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -q >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
