#!/usr/bin/env bash
# Installs the system packages the tests use, only those missing, and only as root on Debian.
set -euo pipefail

# command -> Debian package
declare -A NEED=(
  [ss]=iproute2
  [taskset]=util-linux
  [openssl]=openssl
  [chromium]=chromium
)

missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]}; install them with your package manager" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
