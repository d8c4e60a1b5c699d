#!/bin/sh
# Install the Debian packages that building pmem-python needs.
#
# Usage: Tools/pmem/install-deps.sh [--check]
#
# Installs only what is missing.  As root it runs apt-get; otherwise it
# prints the exact command to run.  With --check it only reports and exits
# non-zero when something is missing.

set -eu

# What CPython's own build needs on Debian (the devguide's list), what our
# configure needs to regenerate upstream's configure and to fetch the
# pristine source, and the libraries of our storage managers.
PACKAGES="
    build-essential pkg-config patch diffutils ca-certificates python3
    autoconf autoconf-archive
    libpmemobj-dev libmemkind-dev
    libbz2-dev libffi-dev libgdbm-dev libgdbm-compat-dev liblzma-dev
    libncurses-dev libreadline-dev libsqlite3-dev libssl-dev
    tk-dev uuid-dev zlib1g-dev
"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all build dependencies are installed"
    exit 0
fi

echo "install-deps: missing:$missing"
if [ "${1:-}" = "--check" ]; then
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: not root; run as root:" >&2
    echo "    apt-get update && apt-get install -y --no-install-recommends$missing" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
