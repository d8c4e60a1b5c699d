#!/bin/sh
# install.sh -- install pmem-python under a prefix, and uninstall it.
#
#   install.sh install PREFIX [DESTDIR [JOBS]]
#   install.sh uninstall PREFIX [DESTDIR]
#
# The top-level Makefile's `make install` and `make uninstall` run this.
#
# Where it goes.  The fork has CPython 3.13's version and names, so an
# upstream `make altinstall` into /usr/local would take the paths of any
# other CPython 3.13 installed there (bin/python3.13, lib/python3.13/ and its
# site-packages, include/python3.13/, lib/pkgconfig/python-3.13.pc,
# share/man/man1/python3.13.1).  The interpreter therefore has a prefix of
# its own inside PREFIX, and PREFIX/bin gains two links and nothing else:
#
#   PREFIX/bin/python3-pmem     -> ../lib/python3.13-pmem/bin/python3.13
#   PREFIX/bin/python3.13-pmem  -> ../lib/python3.13-pmem/bin/python3.13
#   PREFIX/lib/python3.13-pmem/ upstream's `make altinstall` tree (bin/,
#                               lib/python3.13/, include/, share/man/) with
#                               pip (bin/pip3.13), and INSTALLED, the list of
#                               what this script installed
#
# Nothing named python3, pip3, pydoc3, idle3 or python3-config is installed
# (altinstall makes only the versioned names, and those stay in the private
# bin/, which is on no PATH); the libpython is static (--enable-shared puts
# it in the private lib/, on no linker path, with an rpath to it).  An
# existing PREFIX/bin/python3-pmem, python3.13-pmem or lib/python3.13-pmem
# that is not ours is never overwritten.
#
# How it is built.  An interpreter's prefix is fixed when it is configured:
# getpath finds the standard library from the executable's location, but
# sysconfig's data, python3.13-config, the .pc files and the shebangs of
# pip3.13 and pydoc3.13 keep the configured prefix.  So the install is built
# in a tree of its own, build/install/Python-3.13.5, configured with
# --prefix=PREFIX/lib/python3.13-pmem and the options given to ./configure
# (build/configure-args), from the repository's files: the verified base
# (tree.sh unpack), our files copied and our .patch files applied.  Edits in
# build/Python-3.13.5 that no .patch records are not installed (`make
# patches` first).  The first build takes a few minutes on two cores;
# later ones redo what changed (another PREFIX recompiles the extension
# modules, which depend on the Makefile).
#
# The install is staged first (make altinstall DESTDIR=build/install/stage,
# whose listing is the manifest), then copied.  DESTDIR stages it for a
# package: the files land under DESTDIR/PREFIX and name PREFIX.  pip is
# installed as altinstall's ensurepip step does, from the wheel that the
# tarball bundles (Lib/ensurepip/_bundled), offline (see stage_pip).
#
# Uninstall removes the files that INSTALLED lists, then the directories
# that the install created once they are empty; what it did not install
# (packages installed with pip) is kept, and listed.

set -eu
umask 022

TOP=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
TREESH=$TOP/Tools/pmem/tree.sh
VERSION=$("$TREESH" version)
SHORT=${VERSION%.*}
NAME=python$SHORT-pmem
HOMEDIR=lib/$NAME
LINKS="bin/python3-pmem bin/$NAME"
LINK_TARGET=../$HOMEDIR/bin/python$SHORT
MANIFEST=$HOMEDIR/INSTALLED
HEADER="# pmem-python: what 'make install' installed"

WORK=$TOP/build/install
BASE=$WORK/base/Python-$VERSION
TREE=$WORK/Python-$VERSION
STAGE=$WORK/stage

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

note() {
    echo "install.sh: $*"
}

# --- checks ---------------------------------------------------------------

# dest_dir PREFIX DESTDIR: where the files go.
dest_dir() {
    case $1 in
    /*) ;;
    *) die "PREFIX must be an absolute path, not '$1'" ;;
    esac
    case $2 in
    "" | /*) ;;
    *) die "DESTDIR must be an absolute path, not '$2'" ;;
    esac
    printf '%s\n' "$2$1" | sed -e 's|//*|/|g' -e 's|\(.\)/$|\1|'
}

is_ours() {
    [ -f "$D/$MANIFEST" ] && head -n 1 "$D/$MANIFEST" | grep -qxF "$HEADER"
}

# Refuse before building anything: names in PREFIX that are not ours, and
# a PREFIX this user cannot write.
check_destination() {
    for l in $LINKS; do
        if [ -e "$D/$l" ] || [ -L "$D/$l" ]; then
            if [ ! -L "$D/$l" ] || [ "$(readlink "$D/$l")" != "$LINK_TARGET" ]; then
                die "$D/$l exists and is not pmem-python's: refusing to overwrite it (remove it, or install with another PREFIX=)"
            fi
        fi
    done
    if [ -e "$D/$HOMEDIR" ] && ! is_ours; then
        die "$D/$HOMEDIR exists without pmem-python's $MANIFEST: refusing to install over it (remove it, or install with another PREFIX=)"
    fi
    p=$D
    while [ ! -e "$p" ]; do p=$(dirname "$p"); done
    for w in "$p" "$D/bin" "$D/lib" "$D/$HOMEDIR"; do
        if [ -e "$w" ] && [ ! -w "$w" ]; then
            die "$w is not writable by $(id -un): run 'make install' as root, or choose PREFIX= (or DESTDIR=)"
        fi
    done
}

# --- the build tree ---------------------------------------------------------

# put FILE CONTENT: make TREE/FILE hold CONTENT's bytes (a new mtime only
# when they change, so that make redoes only that); CONTENT missing: remove.
put() {
    if [ ! -e "$2" ]; then
        rm -f "$TREE/$1"
    elif ! cmp -s "$2" "$TREE/$1"; then
        mkdir -p "$(dirname "$TREE/$1")"
        rm -f "$TREE/$1"
        cp "$2" "$TREE/$1"
    fi
}

prepare_source() {
    # The base: the verified tarball with Debian's fixes, once per list of
    # fixes.
    if [ ! -d "$BASE" ] || ! cmp -s "$TOP/Tools/pmem/debian-fixes.txt" \
        "$WORK/debian-fixes.txt"; then
        [ ! -d "$WORK" ] || { chmod -R u+w "$WORK"; rm -rf "$WORK"; }
        "$TREESH" fetch
        "$TREESH" unpack "$WORK/base"
        chmod -R a-w "$BASE"
        cp -Rp "$BASE" "$TREE"
        chmod -R u+w "$TREE"
        cp "$TOP/Tools/pmem/debian-fixes.txt" "$WORK/debian-fixes.txt"
    fi
    # Our files, copied (the install holds files, not links to the clone).
    "$TREESH" files >"$WORK/ours.new"
    while read -r f; do
        put "$f" "$TOP/$f"
    done <"$WORK/ours.new"
    # Files that were ours and are gone: upstream's again, or nothing.
    if [ -f "$WORK/ours.list" ]; then
        LC_ALL=C comm -23 "$WORK/ours.list" "$WORK/ours.new" |
            while read -r f; do put "$f" "$BASE/$f"; done
    fi
    mv "$WORK/ours.new" "$WORK/ours.list"
    # Upstream files: the base's with our patch; unpatched ones, the base's.
    "$TREESH" patched >"$WORK/patched.new"
    scratch=$WORK/scratch
    while read -r f; do
        rm -rf "$scratch" && mkdir -p "$scratch/$(dirname "$f")"
        [ ! -e "$BASE/$f" ] || cp "$BASE/$f" "$scratch/$f"
        (cd "$scratch" && patch -s -p1 -E --no-backup-if-mismatch \
            <"$TOP/$f.patch") || die "$f.patch does not apply to the base's $f"
        put "$f" "$scratch/$f"
    done <"$WORK/patched.new"
    rm -rf "$scratch"
    if [ -f "$WORK/patched.list" ]; then
        LC_ALL=C comm -23 "$WORK/patched.list" "$WORK/patched.new" |
            while read -r f; do put "$f" "$BASE/$f"; done
    fi
    mv "$WORK/patched.new" "$WORK/patched.list"
}

quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# The options of ./configure (build/configure-args) as upstream's configure
# gets them from ./configure, each manager's choice resolved to yes or no,
# and our --prefix.
configure_args() {
    with_pmem=check with_memkind=check rest="" shared=no ldflags=""
    if [ -f "$TOP/build/configure-args" ]; then
        eval "set -- $(cat "$TOP/build/configure-args")"
    else
        set --
    fi
    for arg in "$@"; do
        case $arg in
        --with-pmem | --with-pmem=yes) with_pmem=yes ;;
        --with-pmem=no | --without-pmem) with_pmem=no ;;
        --with-memkind | --with-memkind=yes) with_memkind=yes ;;
        --with-memkind=no | --without-memkind) with_memkind=no ;;
        --prefix=*)
            note "./configure's $arg is not the install's: make install uses PREFIX=$PREFIX" >&2 ;;
        LDFLAGS=*) ldflags=${arg#LDFLAGS=} ;;
        *)
            case $arg in --enable-shared | --enable-shared=yes) shared=yes ;; esac
            rest="$rest $(quote "$arg")" ;;
        esac
    done
    for m in pmem:libpmemobj memkind:memkind; do
        opt=${m%%:*} pkg=${m#*:}
        eval "v=\$with_$opt"
        if [ "$v" = check ]; then
            if pkg-config --exists "$pkg" 2>/dev/null; then v=yes; else v=no; fi
        fi
        printf '%s ' "$(quote "--with-$opt=$v")"
    done
    printf '%s%s' "$(quote "--prefix=$PREFIX/$HOMEDIR")" "$rest"
    # A shared libpython lives in the private lib/, on no linker path: the
    # interpreter finds it by an rpath.
    if [ $shared = yes ]; then
        ldflags="${ldflags:+$ldflags }-Wl,-rpath,$PREFIX/$HOMEDIR/lib"
    fi
    [ -z "$ldflags" ] || printf ' %s' "$(quote "LDFLAGS=$ldflags")"
    echo
}

# The built interpreter (a shared libpython is found in the tree, as
# upstream's RUNSHARED does).
tree_python() {
    LD_LIBRARY_PATH="$TREE${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$TREE/python" "$@"
}

build() {
    if [ ! -f "$TREE/Makefile" ]; then
        "$TOP/Tools/pmem/install-deps.sh"
    fi
    prepare_source
    args=$(configure_args)
    cd "$TREE"
    # Upstream's configure from the patched configure.ac, as ./configure.
    if [ -n "$(find configure.ac Tools/pmem/configure.m4 -newer configure)" ]; then
        note "regenerating upstream's configure from the patched configure.ac"
        autoconf -f && autoheader -f || die "autoconf failed on the patched configure.ac"
    fi
    if [ ! -f Makefile ] || [ ! -f config.status ] ||
        [ -n "$(find configure -newer config.status)" ] ||
        [ "$args" != "$(cat "$WORK/configure-args" 2>/dev/null)" ]; then
        if [ -z "${PYTHON_FOR_REGEN:-}" ] && command -v python3 >/dev/null; then
            PYTHON_FOR_REGEN=$(command -v python3)
            export PYTHON_FOR_REGEN
        fi
        note "configuring build/install/Python-$VERSION: ./configure $args"
        rm -f "$WORK/configure-args"
        eval "./configure $args" >"$WORK/configure.log" 2>&1 ||
            { tail -n 30 "$WORK/configure.log" >&2; die "configure failed (build/install/configure.log)"; }
        printf '%s\n' "$args" >"$WORK/configure-args"
    fi
    # The interpreter's cases from the patched bytecodes.c, as make does.
    : >"$WORK/make.log"
    if [ -n "$(find Python/bytecodes.c Tools/cases_generator/*.py \
        -newer Python/generated_cases.c.h)" ]; then
        note "regenerating the interpreter's cases from the patched bytecodes.c"
        make regen-cases >>"$WORK/make.log" 2>&1 ||
            { tail -n 20 "$WORK/make.log" >&2; die "make regen-cases failed (build/install/make.log)"; }
    fi
    note "building build/install/Python-$VERSION (-j$JOBS)"
    make -j"$JOBS" >>"$WORK/make.log" 2>&1 ||
        { tail -n 40 "$WORK/make.log" >&2; die "the build failed (build/install/make.log)"; }
    tree_python -c 'import sys; print("install.sh: built", sys.version.split()[0], "for prefix", sys.prefix)'
}

# --- install and uninstall --------------------------------------------------

# The directory of D that a manifest's "d" line names (".", "..", "bin"...).
abs_dir() {
    p=$D rel=$1
    while [ "$rel" = .. ] || [ "${rel#../}" != "$rel" ]; do
        p=$(dirname "$p")
        if [ "$rel" = .. ]; then rel=.; else rel=${rel#../}; fi
    done
    if [ "$rel" = . ]; then echo "$p"; else echo "$p/$rel"; fi
}

# The files of a manifest ($1) that install makes, relative to D: in the
# private tree, or our two links; any other line is reported and skipped.
manifest_files() {
    sed -n 's/^f //p' "$1" | awk -v home="$HOMEDIR/" -v links=" $LINKS " '
        $0 ~ /(^|\/)\.\.(\/|$)/ || substr($0, 1, 1) == "/" ||
        !(index($0, home) == 1 || index(links, " " $0 " ")) {
            print "install.sh: skipped \"" $0 "\": not a path that install makes" >"/dev/stderr"
            next
        }
        { print }'
}

# A "d" line's name: ".", "..", "../..", or a path below D.
valid_dir() {
    case $1 in
    /*) return 1 ;;
    . | .. | ../*) [ -z "$(printf '%s' "$1" | tr -d './')" ] ;;
    *..*) return 1 ;;
    esac
}

# remove_installed [keep]: remove the files that the manifest lists, then
# the directories it created, once empty (keep: the directories stay, and
# $TMPD/dirs.old lists them, for an install over the old one).
remove_installed() {
    cp "$D/$MANIFEST" "$TMPD/manifest"
    sed -n 's/^d //p' "$TMPD/manifest" >"$TMPD/dirs.old"
    manifest_files "$TMPD/manifest" | tr '\n' '\0' >"$TMPD/files"
    (cd "$D" && xargs -0 rm -f -- <"$TMPD/files") ||
        note "some files could not be removed (see above)"
    rm -f "$D/$MANIFEST"
    [ "${1:-}" != keep ] || return 0
    # Deepest first: the manifest lists a directory before its contents.
    sed '1!G;h;$!d' "$TMPD/dirs.old" | while read -r d; do
        valid_dir "$d" || continue
        p=$(abs_dir "$d")
        [ ! -d "$p" ] || rmdir "$p" 2>/dev/null || true
    done
}

# pip into the stage as altinstall's ensurepip step installs it -- the
# wheel that ensurepip bundles, offline, pip's environment variables and
# configuration ignored, only the versioned pip3.13 -- plus
# --ignore-installed: ensurepip's pip looks for an installed pip on the
# build interpreter's path, which holds the site-packages of the real
# PREFIX, and finding the pip of an earlier install there it would put
# none in the stage.
stage_pip() {
    whl=""
    for w in "$TREE"/Lib/ensurepip/_bundled/pip-*.whl; do
        [ ! -f "$w" ] || whl=$w
    done
    [ -n "$whl" ] || die "no pip wheel in Lib/ensurepip/_bundled of the tarball"
    tree_python -E -c '
import os, runpy, sys
for k in [k for k in os.environ if k.startswith("PIP_")]:
    del os.environ[k]
os.environ.update(PIP_CONFIG_FILE=os.devnull, ENSUREPIP_OPTIONS="altinstall")
sys.path.insert(0, sys.argv.pop(1))
runpy.run_module("pip", run_name="__main__", alter_sys=True)
' "$whl" install --no-cache-dir --no-index --ignore-installed \
        --find-links "$(dirname "$whl")" --root "$STAGE" \
        --root-user-action=ignore --disable-pip-version-check pip
}

do_install() {
    check_destination
    mkdir -p "$WORK"
    build
    note "staging: make altinstall DESTDIR=build/install/stage"
    chmod -R u+w "$STAGE" 2>/dev/null || true
    rm -rf "$STAGE"
    make -C "$TREE" altinstall DESTDIR="$STAGE" ENSUREPIP=no \
        >"$WORK/altinstall.log" 2>&1 ||
        { tail -n 40 "$WORK/altinstall.log" >&2; die "make altinstall failed (build/install/altinstall.log)"; }
    S=$(dest_dir "$PREFIX" "$STAGE")
    stage_pip >>"$WORK/altinstall.log" 2>&1 ||
        { tail -n 20 "$WORK/altinstall.log" >&2; die "installing pip failed (build/install/altinstall.log)"; }
    [ -f "$S/$HOMEDIR/lib/python$SHORT/site-packages/pip/__main__.py" ] ||
        die "pip did not land in the stage (build/install/altinstall.log)"
    # altinstall wrote only into the private prefix, and no unversioned name.
    stray=$(cd "$STAGE" && find . ! -type d | sed 's|^\./|/|' |
        grep -v "^$(printf '%s' "$PREFIX/$HOMEDIR/" | sed 's|/\{1,\}|/|g')" || true)
    [ -z "$stray" ] || die "altinstall wrote outside $PREFIX/$HOMEDIR: $stray"
    for n in python3 pip3 pydoc3 idle3 python3-config; do
        [ ! -e "$S/$HOMEDIR/bin/$n" ] || die "altinstall made bin/$n"
    done

    # An install over ours: the old files go (the directories it created
    # are remembered), then the new ones are copied in.
    : >"$TMPD/dirs.old"
    if is_ours; then
        note "replacing the pmem-python installed in $D"
        remove_installed keep
    fi
    : >"$TMPD/dirs.new"
    # The directories this install creates: D's missing ancestors (".",
    # "..", ...; farthest first) and those under D.
    up="" p=$D ancestors=""
    while [ ! -e "$p" ]; do
        ancestors="${up:-.} $ancestors"
        up=${up:+$up/}..
        p=$(dirname "$p")
    done
    for a in $ancestors; do echo "$a"; done >>"$TMPD/dirs.new"
    { echo bin; echo lib; (cd "$S" && find "$HOMEDIR" -type d); } |
        while read -r d; do
            [ -d "$D/$d" ] || echo "$d"
        done >>"$TMPD/dirs.new"
    mkdir -p "$D/bin" "$D/lib"
    mkdir -p "$D/$HOMEDIR"
    cp -Rp "$S/$HOMEDIR/." "$D/$HOMEDIR/"
    for l in $LINKS; do
        ln -sfn "$LINK_TARGET" "$D/$l"
    done
    {
        echo "$HEADER"
        echo "# $VERSION+pmem, PREFIX=$PREFIX: 'make uninstall PREFIX=$PREFIX' removes it"
        # The directories first, the old install's still there included.
        cat "$TMPD/dirs.old" "$TMPD/dirs.new" | awk '!seen[$0]++' |
            while read -r d; do
                if [ -d "$(abs_dir "$d")" ]; then echo "d $d"; fi
            done
        (cd "$S" && find "$HOMEDIR" ! -type d | LC_ALL=C sort | sed 's/^/f /')
        for l in $LINKS; do echo "f $l"; done
        echo "f $MANIFEST"
    } >"$D/$MANIFEST.new"
    mv "$D/$MANIFEST.new" "$D/$MANIFEST"
    chmod -R u+w "$STAGE" && rm -rf "$STAGE"
    n=$(grep -c '^f ' "$D/$MANIFEST" || true)
    note "installed $n files in $D ($MANIFEST lists them)"
    # It runs where it is, DESTDIR's stage included (getpath finds the
    # standard library from the executable).
    "$D/bin/python3-pmem" -I -c 'import sys, pmem, _pmem; print("install.sh:", sys.executable, sys.version.split()[0], "prefix", sys.prefix)'
    "$D/bin/python3-pmem" -I -m pip --version | sed 's/^/install.sh: /'
}

do_uninstall() {
    if ! is_ours; then
        if [ -e "$D/$MANIFEST" ]; then
            die "$D/$MANIFEST is not pmem-python's list: refusing"
        fi
        die "no pmem-python installed in $D (no $MANIFEST)"
    fi
    n=$(grep -c '^f ' "$D/$MANIFEST" || true)
    remove_installed
    if [ -d "$D/$HOMEDIR" ]; then
        # What is left stays ours: a manifest of its directories alone, for
        # the next install or uninstall.
        {
            echo "$HEADER"
            echo "# what uninstall left: files that install did not install"
            while read -r d; do
                ! valid_dir "$d" || [ ! -d "$(abs_dir "$d")" ] || echo "d $d"
            done <"$TMPD/dirs.old"
        } >"$D/$MANIFEST.new"
        mv "$D/$MANIFEST.new" "$D/$MANIFEST"
    fi
    note "removed $n files from $D"
    if [ -d "$D/$HOMEDIR" ]; then
        note "kept what install did not install (packages installed with pip?):"
        find "$D/$HOMEDIR" ! -type d ! -path "$D/$MANIFEST" | head -n 20 |
            sed 's/^/    /'
        note "remove $D/$HOMEDIR by hand to drop them too"
    fi
}

[ $# -ge 2 ] || die "usage: install.sh install|uninstall PREFIX [DESTDIR [JOBS]]"
cmd=$1 PREFIX=$(dest_dir "$2" "") DESTDIR=${3:-} JOBS=${4:-2}
D=$(dest_dir "$PREFIX" "$DESTDIR")
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"' EXIT
case $cmd in
install) do_install ;;
uninstall) do_uninstall ;;
*) die "usage: install.sh install|uninstall PREFIX [DESTDIR [JOBS]]" ;;
esac
