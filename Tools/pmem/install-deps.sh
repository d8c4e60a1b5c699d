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
# pristine source, the libraries of our storage managers, and Sphinx for
# make docs and make doctest (Tools/pmem/docs.sh).
PACKAGES="
    build-essential pkg-config patch diffutils ca-certificates python3
    autoconf autoconf-archive
    libpmemobj-dev
    python3-sphinx
    libbz2-dev libffi-dev libgdbm-dev libgdbm-compat-dev liblzma-dev
    libncurses-dev libreadline-dev libsqlite3-dev libssl-dev
    tk-dev uuid-dev zlib1g-dev
"
# Installed where the release has them: Debian 13 has no libmemkind (then
# configure builds no memkind manager, and its tests are skipped).
OPTIONAL="libmemkind-dev"

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" \
        = installed ]
}

missing=""
for pkg in $PACKAGES; do
    installed "$pkg" || missing="$missing $pkg"
done
optional=""
for pkg in $OPTIONAL; do
    installed "$pkg" || optional="$optional $pkg"
done

if [ -z "$missing$optional" ]; then
    echo "install-deps: all build dependencies are installed"
    exit 0
fi

[ -z "$missing" ] || echo "install-deps: missing:$missing"
[ -z "$optional" ] || echo "install-deps: missing (optional):$optional"
if [ "${1:-}" = "--check" ]; then
    [ -z "$missing" ]
    exit
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: not root; run as root:" >&2
    echo "    apt-get update && apt-get install -y --no-install-recommends$missing$optional" >&2
    echo "(the optional packages only where the release has them)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
for pkg in $optional; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
        missing="$missing $pkg"
    else
        echo "install-deps: $pkg is not in this release of Debian: built without it"
    fi
done
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
