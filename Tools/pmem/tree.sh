#!/bin/sh
# tree.sh -- keep build/ in step with the repository.
#
# The repository holds only what this project wrote, laid out as CPython's
# tree: a new file sits at its CPython path, and a change to an upstream
# file is a unified diff beside that path (Objects/dictobject.c.patch).
# This script turns the base -- CPython 3.13.5 with the upstream fixes that
# Debian 13 carries for it -- plus those files into a build tree, and back:
#
#   tree.sh fetch      obtain and verify the tarball and Debian's fixes
#                      (cached)
#   tree.sh unpack D   unpack the verified tarball into the directory D and
#                      apply the fixes: the base, as `make stock` builds it
#   tree.sh sync       create build/Python-3.13.5 if needed, link our files
#                      into it, apply new or changed patches, and report
#                      edits to upstream files that no patch records
#   tree.sh patches    write every such edit into its .patch file
#   tree.sh check      exit non-zero if sync would report anything
#   tree.sh wrapper    write ./python, which runs the built interpreter
#   tree.sh version    print the upstream version (3.13.5)
#   tree.sh files      list our new files (paths from the repository's top)
#   tree.sh patched    list the upstream files that our patches change
#
# Layout under build/ (ignored by git):
#
#   build/pristine/Python-3.13.5   the base, unpacked, read-only
#   build/Python-3.13.5            the fork's source and build tree
#   build/applied/                 the patches as last applied (stamps)
#   build/stock/Python-3.13.5      `make stock`: the base, no changes
#
# The fixes are those listed in Tools/pmem/debian-fixes.txt, each verified
# by its SHA-256; our patches are diffs against the base.
#
# Our own files are symbolic links in the build tree, so an edit there is
# an edit of the repository file.  An editor that replaces a link by a
# copy is caught by `sync`, which refuses to go on until the copy is
# reconciled.
#
# For an upstream file F, `sync` compares three diffs against pristine:
# the build tree's (B), the committed F.patch (R) and the stamp of what was
# last applied (A).  B = R: in step.  B = A, R changed (a pull or a
# checkout): the new patch is applied.  R = A, B changed: the build tree
# holds edits that `make patches` must record -- reported loudly.  All
# three differ: both sides changed, which only a person can resolve.

set -eu

# The repository, even when this runs through its link in the build tree.
TOP=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
VERSION=3.13.5
SHA256=93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640
SOURCE_PACKAGE=python3.13
# The Debian release that maintains $SOURCE_PACKAGE; its deb-src entries
# are derived from the machine's own (Debian 12 or 13).
SUITE=trixie
TARBALL_NAME=${SOURCE_PACKAGE}_$VERSION.orig.tar.xz
CACHE=${PMEM_PYTHON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pmem-python}
TARBALL=$CACHE/$TARBALL_NAME
FIXES_LIST=$TOP/Tools/pmem/debian-fixes.txt
FIXES=$CACHE/${SOURCE_PACKAGE}_$VERSION.fixes

BUILD=$TOP/build
PRISTINE=$BUILD/pristine/Python-$VERSION
TREE=$BUILD/Python-$VERSION
STAMPS=$BUILD/applied

# Upstream files that configure, or `make regen-cases` (from the patched
# Python/bytecodes.c), regenerates from patched inputs: never compared,
# never patched.
GENERATED="configure pyconfig.h.in
    Include/opcode_ids.h Include/internal/pycore_opcode_metadata.h
    Include/internal/pycore_uop_ids.h Include/internal/pycore_uop_metadata.h
    Lib/_opcode_metadata.py Python/opcode_targets.h
    Python/generated_cases.c.h Python/executor_cases.c.h
    Python/optimizer_cases.c.h"

die() {
    echo "tree.sh: error: $*" >&2
    exit 1
}

note() {
    echo "tree.sh: $*"
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# The fixes we apply, "SHA-256 NAME" a line, in order.
listed_fixes() {
    [ -f "$FIXES_LIST" ] || die "$FIXES_LIST is missing"
    sed -n 's/^\([0-9a-f]\{64\}\)[[:space:]]\{1,\}\([^[:space:]]\{1,\}\)$/\1 \2/p' \
        "$FIXES_LIST"
}

# Every name the list mentions, applied or not.
known_fixes() {
    sed -n -e 's/^[0-9a-f]\{64\}[[:space:]]\{1,\}//p' \
        -e 's/^-[[:space:]]\{1,\}//p' "$FIXES_LIST"
}

# --- fetching -------------------------------------------------------------

# Write deb-src entries for $SUITE, derived from the machine's Debian
# entries (those of its own release and its -updates and -security
# suites), in both of apt's formats, into the directory $1.  No host name
# is written here: the archive is whichever one this machine already uses.
derive_deb_src() {
    out=$1
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "not a Debian machine (no VERSION_CODENAME in /etc/os-release): put a verified $TARBALL_NAME and the fixes of Tools/pmem/debian-fixes.txt in $CACHE"
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v from="$codename" -v to="$SUITE" '
            function flush() {
                if (keep) printf "%s\n", stanza
                stanza = ""; keep = 0
            }
            /^[[:space:]]*$/ { flush(); next }
            /^Types:/ { $0 = "Types: deb-src" }
            /^Suites:/ {
                line = "Suites:"
                for (i = 2; i <= NF; i++) {
                    w = $i
                    if (w == from || index(w, from "-") == 1) {
                        keep = 1
                        w = to substr(w, length(from) + 1)
                    }
                    line = line " " w
                }
                $0 = line
            }
            { stanza = stanza $0 "\n" }
            END { flush() }' "$f" >"$out/$(basename "$f")"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v from="$codename" -v to="$SUITE" '
            $1 != "deb" { next }
            {
                i = 2
                if ($i ~ /^\[/) while ($i !~ /\]$/ && i < NF) i++
                if ($i ~ /^\[/ || $i ~ /\]$/) i++
                s = i + 1
                if ($s != from && index($s, from "-") != 1) next
                $s = to substr($s, length(from) + 1)
                $1 = "deb-src"
                print
            }' "$f"
    done >"$out/derived.list"
}

have_all() {
    [ -f "$TARBALL" ] || return 1
    for name in $(listed_fixes | cut -d' ' -f2); do
        [ -f "$FIXES/$name" ] || return 1
    done
}

fetch() {
    if have_all; then
        verify
        return 0
    fi
    command -v apt-get >/dev/null ||
        die "apt-get not found: put a verified $TARBALL_NAME and the fixes of Tools/pmem/debian-fixes.txt (in $FIXES/) in $CACHE"
    mkdir -p "$CACHE"
    work=$(mktemp -d "$CACHE/fetch.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    # A private apt state: the system's configuration is not changed, and
    # `apt-get update` of it fetches only the source indexes.
    mkdir -p "$work/parts" "$work/lists/partial" \
        "$work/cache/archives/partial" "$work/dl"
    derive_deb_src "$work/parts"
    set -- -o Dir::Etc::SourceList=/dev/null \
        -o Dir::Etc::SourceParts="$work/parts" \
        -o Dir::State::Lists="$work/lists" \
        -o Dir::Cache="$work/cache" \
        -o APT::Sandbox::User=root -q
    note "fetching the $SOURCE_PACKAGE source ($VERSION and Debian's fixes) from Debian's archive ($SUITE)"
    apt-get "$@" update >"$work/update.log" 2>&1 ||
        { cat "$work/update.log" >&2; die "apt-get update of deb-src failed"; }
    # apt checks both files against the signed index; the tarball and each
    # fix are then checked against our own hashes.
    (cd "$work/dl" && apt-get "$@" source --download-only "$SOURCE_PACKAGE" \
        >"$work/source.log" 2>&1) || true
    debian=$(ls "$work/dl/${SOURCE_PACKAGE}_$VERSION"-*.debian.tar.xz \
        2>/dev/null | tail -n 1)
    if [ ! -f "$work/dl/$TARBALL_NAME" ] || [ -z "$debian" ]; then
        cat "$work/source.log" >&2
        die "apt-get source $SOURCE_PACKAGE did not fetch $TARBALL_NAME and Debian's part of $VERSION (does $SUITE still serve $VERSION?)"
    fi
    got=$(sha256_of "$work/dl/$TARBALL_NAME")
    [ "$got" = "$SHA256" ] ||
        die "the downloaded $TARBALL_NAME has SHA-256 $got, expected $SHA256: refusing to build unknown source"
    note "Debian's fixes from $(basename "$debian")"
    tar -xJf "$debian" -C "$work" debian/patches ||
        die "cannot unpack $(basename "$debian")"
    mkdir -p "$work/fixes"
    listed_fixes | while read -r sum name; do
        f=$work/debian/patches/$name
        [ -f "$f" ] || die "Debian's $SOURCE_PACKAGE no longer has $name: review Tools/pmem/debian-fixes.txt"
        got=$(sha256_of "$f")
        [ "$got" = "$sum" ] || die "Debian's $name has SHA-256 $got, Tools/pmem/debian-fixes.txt says $sum: Debian changed the fix; review it and update the list"
        cp "$f" "$work/fixes/$name"
    done
    # Fixes Debian added since the list was written: say so, apply none.
    sed -e 's/[[:space:]]*#.*//' -e '/^[[:space:]]*$/d' \
        "$work/debian/patches/series" | while read -r name; do
        known_fixes | grep -qxF "$name" ||
            note "WARNING: Debian's series has $name, which Tools/pmem/debian-fixes.txt does not list: review it"
    done
    rm -rf "$FIXES"
    mv "$work/fixes" "$FIXES"
    mv "$work/dl/$TARBALL_NAME" "$TARBALL"
    note "cached $TARBALL and $(listed_fixes | wc -l) fixes in $FIXES"
}

verify() {
    got=$(sha256_of "$TARBALL")
    [ "$got" = "$SHA256" ] || die "$TARBALL has SHA-256 $got,
  expected $SHA256 (CPython $VERSION as Debian ships it).
  The cached file is corrupt or not the pinned release: delete it and rerun
  ./configure to fetch it again.  Refusing to build unknown source."
    listed_fixes | while read -r sum name; do
        [ -f "$FIXES/$name" ] || die "$FIXES/$name is missing: rerun ./configure to fetch Debian's fixes"
        got=$(sha256_of "$FIXES/$name")
        [ "$got" = "$sum" ] || die "$FIXES/$name has SHA-256 $got, expected $sum: delete $FIXES and rerun ./configure"
    done
}

# The base: the tarball with Debian's fixes applied.
unpack() {
    dest=$1
    verify
    mkdir -p "$dest"
    [ ! -e "$dest/Python-$VERSION" ] || die "$dest/Python-$VERSION exists"
    tar -xJf "$TARBALL" -C "$dest" ||
        die "cannot unpack $TARBALL: delete it and rerun ./configure"
    [ -f "$dest/Python-$VERSION/configure.ac" ] ||
        die "$TARBALL did not unpack to Python-$VERSION"
    listed_fixes | while read -r sum name; do
        (cd "$dest/Python-$VERSION" &&
            patch -s -p1 -E --no-backup-if-mismatch <"$FIXES/$name") ||
            die "Debian's $name does not apply to $VERSION"
    done
    # The list as applied, for `sync` to notice a change of it.
    listed_fixes >"$dest/Python-$VERSION/.debian-fixes"
}

# --- our files --------------------------------------------------------------

# Our new files: everything below a subdirectory of the repository that is
# not a .patch; the root's own files (configure, Makefile, README.md) and
# dot-directories are the project's, not CPython's.
our_files() {
    (cd "$TOP" && find . \
        \( -path ./build -o -path './.*' -o -name __pycache__ \) -prune -o \
        -type f -path './*/*' ! -name '*.patch' ! -name '*.orig' \
        ! -name '*.rej' ! -name '*.pyc' -print | sed 's|^\./||' |
        LC_ALL=C sort)
}

our_patches() {
    (cd "$TOP" && find . \
        \( -path ./build -o -path './.*' \) -prune -o \
        -type f -name '*.patch' -print | sed -e 's|^\./||' -e 's|\.patch$||' |
        LC_ALL=C sort)
}

# The relative target of the link build/Python-$VERSION/$1 -> $1, so that the
# links stay valid when the repository moves.
link_target() {
    up=../..
    rest=$1
    while [ "${rest#*/}" != "$rest" ]; do
        up=$up/..
        rest=${rest#*/}
    done
    echo "$up/$1"
}

link_our_files() {
    status=0
    for f in $(our_files); do
        if [ -e "$PRISTINE/$f" ]; then
            echo "tree.sh: error: $f is an upstream file: commit a change to it as $f.patch, not as a copy" >&2
            status=1
            continue
        fi
        b=$TREE/$f
        target=$(link_target "$f")
        if [ -L "$b" ]; then
            [ "$(readlink "$b")" = "$target" ] || ln -sfn "$target" "$b"
        elif [ -e "$b" ]; then
            if cmp -s "$b" "$TOP/$f"; then
                ln -sfn "$target" "$b"
            else
                cat >&2 <<EOF
tree.sh: error: build/Python-$VERSION/$f is a copy, not a link to the
  repository's $f, and the two differ.  Something (an editor?) replaced the
  link: move your edits into $f in the repository, delete the copy, rerun.
EOF
                status=1
            fi
        else
            mkdir -p "$(dirname "$b")"
            ln -s "$target" "$b"
        fi
    done
    # Links to files the repository no longer has (upstream has no links).
    find "$TREE" -type l ! -exec test -e {} \; -print | while read -r l; do
        case $(readlink -m "$l") in
        "$TOP"/build/*) ;;
        "$TOP"/*) rm -f "$l"; note "removed stale link ${l#"$TREE"/}" ;;
        esac
    done
    return $status
}

# --- upstream files and their patches -------------------------------------

is_generated() {
    for g in $GENERATED; do
        [ "$1" != "$g" ] || return 0
    done
    return 1
}

# Upstream files that differ between pristine and the build tree.
edited_files() {
    LC_ALL=C diff -rq "$PRISTINE" "$TREE" 2>/dev/null |
        sed -n -e "s|^Files $PRISTINE/\(.*\) and $TREE/.* differ\$|\1|p" \
            -e "s|^Only in $PRISTINE/\(.*\): \(.*\)\$|\1/\2|p" \
            -e "s|^Only in $PRISTINE: \(.*\)\$|\1|p" |
        while read -r f; do
            is_generated "$f" || echo "$f"
        done
}

# The diff of upstream file $1 in the build tree, on stdout.
diff_of() {
    new=$TREE/$1
    [ -e "$new" ] || new=/dev/null
    LC_ALL=C TZ=UTC diff -u --label "a/$1" --label "b/$1" \
        "$PRISTINE/$1" "$new" || [ $? -eq 1 ]
}

candidates() {
    { edited_files; our_patches
      [ ! -d "$STAMPS" ] || (cd "$STAMPS" && find . -type f -name '*.patch' |
          sed -e 's|^\./||' -e 's|\.patch$||'); } | LC_ALL=C sort -u
}

# Reset upstream file $1 in the build tree to pristine plus patch $2.
apply_patch() {
    f=$1 p=$2
    # A new file, never a write into the old one: the tree may share
    # inodes with another copy (the tests link theirs to a template).
    rm -f "$TREE/$f"
    if [ -e "$PRISTINE/$f" ]; then
        cp -p "$PRISTINE/$f" "$TREE/$f"
        chmod u+w "$TREE/$f"
    fi
    if [ -s "$p" ]; then
        (cd "$TREE" && patch -s -p1 -E --no-backup-if-mismatch <"$p") ||
            die "$f.patch does not apply to pristine $f"
    fi
    touch "$TREE/$f" 2>/dev/null || true
}

stamp() {
    f=$1 p=$2
    mkdir -p "$(dirname "$STAMPS/$f")"
    if [ -s "$p" ]; then cp "$p" "$STAMPS/$f.patch"; else rm -f "$STAMPS/$f.patch"; fi
}

# mode: sync, patches or check.  Prints what it did; sets out_of_step=1
# when the build tree holds what the repository does not (always returns
# 0, so that `set -e` stays in force inside).
reconcile() {
    mode=$1
    tmp=$(mktemp -d)
    unrecorded="" conflicts="" written="" applied=""
    empty=$tmp/empty
    : >"$empty"
    for f in $(candidates); do
        d=$tmp/d r=$TOP/$f.patch a=$STAMPS/$f.patch
        diff_of "$f" >"$d"
        [ -f "$r" ] || r=$empty
        [ -f "$a" ] || a=$empty
        if cmp -s "$d" "$r"; then
            [ "$mode" = check ] || stamp "$f" "$r"
        elif cmp -s "$r" "$a"; then
            # The committed patch is what was applied: the build changed.
            if [ "$mode" = patches ]; then
                if [ -s "$d" ]; then
                    mkdir -p "$(dirname "$TOP/$f")"
                    cp "$d" "$TOP/$f.patch"
                else
                    rm -f "$TOP/$f.patch"
                fi
                stamp "$f" "$d"
                written="$written $f.patch"
            else
                unrecorded="$unrecorded $f"
            fi
        elif cmp -s "$d" "$a"; then
            # The build is as applied: the committed patch changed.
            if [ "$mode" != check ]; then
                apply_patch "$f" "$r"
                stamp "$f" "$r"
            fi
            applied="$applied $f.patch"
        else
            conflicts="$conflicts $f"
        fi
    done
    rm -rf "$tmp"
    for p in $written; do note "wrote $p"; done
    for p in $applied; do
        if [ "$mode" = check ]; then note "not yet applied: $p"; out_of_step=1
        else note "applied $p"; fi
    done
    if [ -n "$unrecorded" ]; then
        out_of_step=1
        echo "tree.sh: WARNING: build/Python-$VERSION holds edits that no .patch records:" >&2
        for f in $unrecorded; do echo "    $f" >&2; done
        echo "  Run 'make patches' and commit, or they are lost with build/." >&2
    fi
    if [ -n "$conflicts" ]; then
        echo "tree.sh: error: both the build tree and the committed .patch changed for:" >&2
        for f in $conflicts; do echo "    $f" >&2; done
        echo "  Merge by hand: edit the build file to the wanted state, then 'make patches'." >&2
        exit 1
    fi
}

sync_tree() {
    if [ -d "$PRISTINE" ] && ! listed_fixes | cmp -s - "$PRISTINE/.debian-fixes"; then
        die "Tools/pmem/debian-fixes.txt changed since build/ was made: run 'make patches' if you have edits, then 'make distclean' and 'make'"
    fi
    if [ ! -d "$PRISTINE" ]; then
        rm -rf "$BUILD/pristine"
        unpack "$BUILD/pristine"
        chmod -R a-w "$PRISTINE"
    fi
    if [ ! -d "$TREE" ]; then
        rm -rf "$STAMPS"
        cp -R "$PRISTINE" "$TREE"
        chmod -R u+w "$TREE"
    fi
    link_our_files || die "the build tree is out of step with the repository (see above)"
    reconcile sync
}

# ./python: a script, not a link, so that sys.executable is the built
# binary itself (venv and ensurepip, and so test_cppext, need that).
write_wrapper() {
    rm -f "$TOP/python"
    cat >"$TOP/python" <<EOF
#!/bin/sh
# pmem-python: run the interpreter built under build/ (written by make).
exec "\$(dirname "\$0")/build/Python-$VERSION/python" "\$@"
EOF
    chmod +x "$TOP/python"
}

out_of_step=0
case ${1:-} in
fetch) fetch ;;
unpack) [ $# -eq 2 ] || die "usage: tree.sh unpack DIR"; unpack "$2" ;;
sync) sync_tree ;;
patches)
    [ -d "$TREE" ] || die "no build tree: run ./configure first"
    link_our_files || die "the build tree is out of step with the repository (see above)"
    reconcile patches
    ;;
check)
    [ -d "$TREE" ] || die "no build tree: run ./configure first"
    link_our_files >/dev/null
    reconcile check
    exit $out_of_step
    ;;
wrapper) write_wrapper ;;
version) echo "$VERSION" ;;
files) our_files ;;
patched) our_patches ;;
*) die "usage: tree.sh fetch|unpack DIR|sync|patches|check|wrapper|version|files|patched" ;;
esac
