#!/usr/bin/env bash
# Installs the system packages the tests use, only those missing, and only as root on Debian.
set -euo pipefail

# command -> Debian package
declare -A NEED=(
  [ss]=iproute2
  [taskset]=util-linux
  [openssl]=openssl
  [chromium]=chromium
  [/usr/sbin/slapd]=slapd
  [/usr/sbin/freeradius]=freeradius
  [prometheus]=prometheus
  [promtool]=prometheus
  [haproxy]=haproxy
  [keytool]=default-jre-headless
  [redis-server]=redis-server
  [nginx]=nginx-light
  [softhsm2-util]=softhsm2
  [pkcs11-tool]=opensc
  [/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so]=libengine-pkcs11-openssl
)

missing=()
for cmd in "${!NEED[@]}"; do
  if [[ $cmd == /* ]]; then
    [ -e "$cmd" ] || missing+=("${NEED[$cmd]}")   # a path: a program or a library
  else
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]}; install them with your package manager" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Tests start their own slapd/freeradius/... on free loopback ports: keep the packages' own
# services from starting on install (policy-rc.d exit 101 = "do not start").
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
exit 0
