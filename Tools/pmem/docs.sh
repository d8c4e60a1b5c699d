#!/bin/sh
# docs.sh -- build the documentation: upstream's Doc/ with our pages, by
# the Sphinx of Debian 12 (python3-sphinx, 5.3.0).
#
#   docs.sh html            upstream's Doc/ setup, our Doc/ pages and our
#                           Doc/*.patch, as HTML in build/docs/html
#   docs.sh doctest [PAGE...]
#                           run the examples of our pages (by default
#                           library/pmem) with the built interpreter
#                           (build/Python-3.13.5/python), pools in a
#                           temporary directory
#   docs.sh clean           remove build/docs
#
# Warnings are errors (sphinx-build -W --keep-going -n) in our pages: every
# .rst below the repository's Doc/, and the upstream pages that a Doc/
# .patch changes.
#
# Why this way.  Upstream's conf.py asks for Sphinx 8.2 and the
# python-docs-theme, which Debian does not package; there is no PyPI here
# or in CI.  Sphinx 5.3 runs upstream's conf.py and extensions as they are,
# with these adjustments, made by the conf.py that this script writes over
# upstream's (which it runs first): the impl-detail directive's
# parse_content_to_nodes() (Sphinx 7.4) and the versionremoved label (7.3)
# are provided; the pydoc_topics extension (for the pydoc-topics builder
# only; it imports sphinx.util.display, 6.1) is left out; the theme is
# Sphinx's classic, and our pages get no links to python/cpython on GitHub
# or docs.python.org, which have none of them.  Our pages are built with
# the WHOLE of upstream's Doc/, so that :func:`os.fork`, :class:`dict`,
# :c:func:... link to upstream's own pages and nit-picky mode catches a
# wrong target in ours: 2m25s to 3m on this two-core machine from scratch
# (1m50s of CPU; -j does not help 5.3 here), about 10 seconds afterwards
# (our pages are read and written again at each build, so that their
# warnings are said again until fixed).  Upstream's pages are not
# warning-free under 5.3 with -n (about 2300 warnings: its known missing
# references, which upstream's CI tolerates per file through
# Doc/tools/.nitignore, and the :cve: role and directive options that 5.3
# lacks), and they are not ours to fix: the conf.py sets their warnings
# aside, into build/docs/upstream-warnings-BUILDER.txt, counted at the end,
# so that -W applies to our pages and to anything not located in a page.
# Building our pages alone would take seconds but leave every reference to
# upstream's objects unresolved.
#
# The Sphinx source directory is build/docs/root/Doc, assembled here, so
# that nothing depends on `tree.sh sync` having run: links to the pristine
# Doc/ (build/pristine), the upstream files that our Doc/ patches change
# (patched into build/docs/patched, rewritten only when they change, so
# that Sphinx rebuilds only what changed), and links to our Doc/ files.
# build/docs/root/* beside Doc/ link to the build tree (what Doc/ includes:
# ../Grammar/python.gram, ../Include/...).
#
# `doctest` runs Sphinx in the built interpreter, so that the examples can
# import pmem: Debian's Sphinx from /usr/lib/python3/dist-packages, put
# after the interpreter's own library, with two modules that 3.13 removed
# and that Sphinx 5.3 and Babel import (imghdr, cgi.parse_header), as
# shims in build/docs/py313.  It reads our pages only.
#
# Needs (Debian): python3-sphinx.  Installs nothing.

set -eu

TOP=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
VERSION=$(sh "$TOP/Tools/pmem/tree.sh" version)
PRISTINE=$TOP/build/pristine/Python-$VERSION
TREE=$TOP/build/Python-$VERSION
DOCS=$TOP/build/docs
ROOT=$DOCS/root
SRC=$ROOT/Doc
# The Python that runs Sphinx for the HTML: Debian's, whose dist-packages
# hold python3-sphinx (not the first python3 on PATH, which may be another).
SPHINX_PYTHON=${SPHINX_PYTHON:-/usr/bin/python3}
DIST_PACKAGES=${DIST_PACKAGES:-/usr/lib/python3/dist-packages}
BUILT_PYTHON=$TREE/python
SPHINXOPTS="-W --keep-going -n -q"

die() {
    echo "docs.sh: error: $*" >&2
    exit 1
}

note() {
    echo "docs.sh: $*"
}

# --- the source directory ----------------------------------------------------

# Our Doc/ files and the upstream Doc/ files that our patches change,
# from Doc/, as tree.sh lists them.
our_doc_files() {
    sh "$TOP/Tools/pmem/tree.sh" files | sed -n 's|^Doc/||p'
}

our_doc_patches() {
    sh "$TOP/Tools/pmem/tree.sh" patched | sed -n 's|^Doc/||p'
}

stage() {
    [ -d "$PRISTINE/Doc" ] ||
        die "no $PRISTINE: run ./configure first (it unpacks the source)"
    if [ ! -d "$SRC" ]; then
        mkdir -p "$ROOT"
        # A tree of links to the pristine files (GNU cp).
        cp -Rs "$PRISTINE/Doc" "$SRC"
    fi
    # What the last run put in, taken out: links to our files, and to
    # patched files, back to pristine (or gone).
    find "$SRC" -type l \( -lname "$TOP/Doc/*" -o -lname "$DOCS/patched/*" \) \
        -print | while read -r l; do
        rm -f "$l"
        f=${l#"$SRC"/}
        [ ! -e "$PRISTINE/Doc/$f" ] || ln -s "$PRISTINE/Doc/$f" "$l"
    done
    # The upstream files that our Doc/ patches change.
    work=$(mktemp -d)
    for f in $(our_doc_patches); do
        [ -f "$PRISTINE/Doc/$f" ] || die "Doc/$f.patch: no upstream Doc/$f"
        mkdir -p "$(dirname "$work/Doc/$f")" "$(dirname "$DOCS/patched/$f")"
        cp "$PRISTINE/Doc/$f" "$work/Doc/$f"
        chmod u+w "$work/Doc/$f"
        (cd "$work" && patch -s -p1 --no-backup-if-mismatch \
            <"$TOP/Doc/$f.patch") ||
            { rm -rf "$work"; die "Doc/$f.patch does not apply"; }
        cmp -s "$work/Doc/$f" "$DOCS/patched/$f" ||
            cp "$work/Doc/$f" "$DOCS/patched/$f"
        rm -f "$SRC/$f"
        ln -s "$DOCS/patched/$f" "$SRC/$f"
    done
    rm -rf "$work"
    for f in $(our_doc_files); do
        [ ! -e "$PRISTINE/Doc/$f" ] ||
            die "Doc/$f is an upstream file: commit a change to it as Doc/$f.patch"
        mkdir -p "$(dirname "$SRC/$f")"
        ln -s "$TOP/Doc/$f" "$SRC/$f"
    done
    # What Doc/ includes from beside it, from the build tree (our files
    # are linked there), else from pristine.
    base=$TREE
    [ -d "$base" ] || base=$PRISTINE
    for e in "$base"/*; do
        name=${e##*/}
        [ "$name" != Doc ] || continue
        [ -L "$ROOT/$name" ] || ln -s "$e" "$ROOT/$name"
    done
    # Upstream's conf.py (patched, if a Doc/conf.py.patch changes it), run
    # by ours.
    upstream_conf=$PRISTINE/Doc/conf.py
    [ ! -f "$TOP/Doc/conf.py.patch" ] || upstream_conf=$DOCS/patched/conf.py
    rm -f "$SRC/conf.py" "$SRC/upstream_conf.py"
    ln -s "$upstream_conf" "$SRC/upstream_conf.py"
    write_conf >"$SRC/conf.py"
}

write_conf() {
    cat <<'EOF'
# build/docs/root/Doc/conf.py -- written by Tools/pmem/docs.sh (which says
# why); do not edit.  Upstream's Doc/conf.py (upstream_conf.py), run as it
# is, adjusted for the Sphinx of Debian 12 (5.3.0).

import os as _os

_here = _os.path.dirname(_os.path.abspath(__file__))    # build/docs/root/Doc
_docs = _os.path.dirname(_os.path.dirname(_here))       # build/docs
_top = _os.path.dirname(_os.path.dirname(_docs))        # the repository

# What upstream's extensions take from newer Sphinx.
from docutils import nodes as _nodes
from sphinx.domains import changeset as _changeset
from sphinx.util.docutils import SphinxDirective as _SphinxDirective

if not hasattr(_SphinxDirective, 'parse_content_to_nodes'):
    # Sphinx 7.4; implementation_detail.py (.. impl-detail::) calls it.
    def _parse_content_to_nodes(self, allow_section_headings=False):
        from sphinx.util.nodes import nested_parse_with_titles
        node = _nodes.Element()
        node.document = self.state.document
        if allow_section_headings:
            nested_parse_with_titles(self.state, self.content, node,
                                     self.content_offset)
        else:
            self.state.nested_parse(self.content, self.content_offset, node)
        return node.children
    _SphinxDirective.parse_content_to_nodes = _parse_content_to_nodes
# Sphinx 7.3's versionremoved, which changes.py overrides.
_changeset.versionlabels.setdefault('versionremoved', 'Removed in version %s')
_changeset.versionlabel_classes.setdefault('versionremoved', 'removed')

with open(_os.path.join(_here, 'upstream_conf.py'), encoding='utf-8') as _f:
    exec(compile(_f.read(), _os.path.join(_here, 'upstream_conf.py'), 'exec'))

needs_sphinx = '5.3'
# pydoc_topics serves the pydoc-topics builder only (it regenerates
# Lib/pydoc_data/topics.py) and imports sphinx.util.display (Sphinx 6.1).
extensions = [e for e in extensions if e != 'pydoc_topics']
# python-docs-theme is not in Debian.
html_theme = 'classic'
html_theme_options = {'collapsiblesidebar': True}
# Sphinx's own source link (this build's _sources/) and search box, in
# place of the theme's link to python/cpython on GitHub, which has none of
# our pages; no OpenSearch description that sends searches to
# docs.python.org.
html_sidebars = dict(html_sidebars)
html_sidebars['**'] = ['localtoc.html', 'relations.html', 'sourcelink.html',
                       'searchbox.html']
html_use_opensearch = ''


def _ours(srcdir):
    """{docname: True for our own page, False for a patched upstream one}:
    the pages that docs.sh linked from the repository's Doc/ and from
    build/docs/patched."""
    pages = {}
    for dirpath, dirnames, filenames in _os.walk(srcdir):
        for name in filenames:
            path = _os.path.join(dirpath, name)
            if not name.endswith('.rst') or not _os.path.islink(path):
                continue
            target = _os.readlink(path)
            docname = _os.path.relpath(path, srcdir)[:-len('.rst')]
            if target.startswith(_os.path.join(_top, 'Doc') + _os.sep):
                pages[docname] = True
            elif target.startswith(_os.path.join(_docs, 'patched') + _os.sep):
                pages[docname] = False
    return pages


_our_pages = _ours(_here)

if tags.has('pmem_doctest'):  # noqa: F821
    # docs.sh doctest: our own pages only, under our index.
    root_doc = 'pmem/index'
    include_patterns = sorted(d + '.rst' for d, own in _our_pages.items()
                              if own)

# The index of our pages, which lists some before they are written.
_INDEX = 'pmem/index'


def _docname_of(app, record):
    """The page that a warning is about, or None."""
    import sphinx.util.logging as sphinx_logging
    env = getattr(app, 'env', None)
    location = getattr(record, 'location', None)
    if isinstance(location, tuple):
        location = location[0]
    elif isinstance(location, _nodes.Node):
        location = sphinx_logging.get_node_location(location)
    if isinstance(location, str) and location and env is not None:
        if ':' not in location:
            if location in env.found_docs:
                return location
        else:
            path = location.rsplit(':', 1)[0]
            if path != '<unknown>':
                docname = env.path2doc(path)
                if docname is not None:
                    return docname
    # The page being read, or whose references were being resolved, when
    # the warning was made (Sphinx holds warnings back, and handles them
    # once the page is done).
    return getattr(record, '_pmem_docname', None)


def _set_aside(app, record):
    """A warning about one of upstream's pages: written into
    build/docs/upstream-warnings.txt, not shown, not counted."""
    try:
        message = record.getMessage()
    except Exception:
        message = str(record.msg)
    location = getattr(record, 'location', None)
    if isinstance(location, _nodes.Node):
        import sphinx.util.logging as sphinx_logging
        location = sphinx_logging.get_node_location(location)
    elif isinstance(location, tuple):
        location = ':'.join(str(part) for part in location if part)
    app._pmem_upstream_warnings.append(f'{location or "?"}: {message}')


def _drop_absent_pages(app, docname, source):
    """Our index lists our pages, some before they are written: a toctree
    entry of it that names no page is left out (said on the status
    line), so that a page is in the toctree as soon as it exists."""
    if docname != _INDEX:
        return
    from sphinx.util import docname_join, logging as sphinx_logging
    kept, in_toctree = [], False
    for line in source[0].split('\n'):
        stripped = line.strip()
        if stripped.startswith('.. toctree::'):
            in_toctree = True
        elif in_toctree and stripped and not line[:1].isspace():
            in_toctree = False
        elif (in_toctree and stripped and not stripped.startswith(':')
              and not stripped.startswith('..')):
            entry = stripped
            if entry.endswith('.rst'):
                entry = entry[:-len('.rst')]
            target = docname_join(docname, entry)
            if target not in app.env.found_docs:
                sphinx_logging.getLogger(__name__).info(
                    f'{docname}: {stripped} not written yet: left out of '
                    f'the toctree')
                continue
        kept.append(line)
    source[0] = '\n'.join(kept)


def _reread_ours(app, env, added, changed, removed):
    """Our pages are read and written again at each build, a second or
    two: their warnings are said again until they are fixed (Sphinx says a
    page's warnings when it reads or writes the page), and our index finds
    the pages that exist now."""
    return sorted(d for d in _our_pages if d in env.found_docs)


def _no_canonical_link(app, pagename, templatename, context, doctree):
    """Upstream's layout.html gives each page a canonical link to
    docs.python.org, which has none of our pages: it does so for the html
    builder, so our pages are rendered under another builder name (which
    the classic theme does not test)."""
    if pagename in _our_pages and context.get('builder') == 'html':
        context['builder'] = 'html (pmem-python)'


def _report(app, exception):
    found = app._pmem_upstream_warnings
    path = _os.path.join(_docs, f'upstream-warnings-{app.builder.name}.txt')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(''.join(line + '\n' for line in found))
    if found:
        print(f'docs.sh: {len(found)} warnings of upstream\'s pages under '
              f'Sphinx 5.3 set aside (not ours): {path}')


def setup(app):
    import logging
    import sphinx.util.logging as sphinx_logging

    app._pmem_upstream_warnings = []

    make_record = logging.getLogRecordFactory()

    def record_factory(*args, **kwargs):
        record = make_record(*args, **kwargs)
        env = getattr(app, 'env', None)
        record._pmem_docname = (None if env is None
                                else env.temp_data.get('docname'))
        return record

    logging.setLogRecordFactory(record_factory)

    class UpstreamWarnings(logging.Filter):
        """Before Sphinx counts a warning (and -W makes it an error): one
        about a page that is not ours is set aside."""

        def filter(self, record):
            docname = _docname_of(app, record)
            if docname is None or docname in _our_pages:
                return True
            _set_aside(app, record)
            return False

    for handler in logging.getLogger(sphinx_logging.NAMESPACE).handlers:
        if isinstance(handler, sphinx_logging.WarningStreamHandler):
            handler.filters.insert(0, UpstreamWarnings())
    app.connect('source-read', _drop_absent_pages)
    app.connect('env-get-outdated', _reread_ours)
    app.connect('html-page-context', _no_canonical_link)
    app.connect('build-finished', _report)
EOF
}

# --- the builds --------------------------------------------------------------

check_sphinx() {
    "$SPHINX_PYTHON" -E -c 'import sphinx' 2>/dev/null ||
        die "Sphinx is not installed for $SPHINX_PYTHON: apt-get install python3-sphinx"
}

html() {
    check_sphinx
    stage
    note "HTML of Doc/ into build/docs/html"
    # -E: whatever PYTHONPATH says; -B: no bytecode written (into the
    # pristine tree's extensions).
    # shellcheck disable=SC2086
    "$SPHINX_PYTHON" -E -B -m sphinx -b html $SPHINXOPTS \
        -d "$DOCS/doctrees" "$SRC" "$DOCS/html"
    note "build/docs/html/library/pmem.html"
}

# The shims of what Python 3.13 removed and Sphinx 5.3 imports.
write_shims() {
    mkdir -p "$DOCS/py313"
    cat >"$DOCS/py313/imghdr.py" <<'EOF'
"""imghdr, removed in Python 3.13, for Sphinx 5.3 (sphinx.util.images adds
its SVG test to tests).  Written by Tools/pmem/docs.sh."""

tests = []


def what(file, h=None):
    if h is None:
        with open(file, 'rb') as f:
            h = f.read(32)
    for test in tests:
        kind = test(h, None)
        if kind:
            return kind
    return None
EOF
    cat >"$DOCS/py313/cgi.py" <<'EOF'
"""cgi.parse_header, cgi having been removed in Python 3.13, for Babel
(babel.messages.catalog imports it).  Written by Tools/pmem/docs.sh."""


def parse_header(line):
    from email.message import Message
    message = Message()
    message['content-type'] = line
    params = message.get_params(header='content-type')
    return params[0][0], dict(params[1:])
EOF
}

doctest() {
    [ -x "$BUILT_PYTHON" ] ||
        die "no $BUILT_PYTHON: build the interpreter first (make)"
    [ -d "$DIST_PACKAGES/sphinx" ] ||
        die "no Sphinx in $DIST_PACKAGES: apt-get install python3-sphinx"
    stage
    write_shims
    [ $# -gt 0 ] || set -- library/pmem
    files=""
    for page in "$@"; do
        page=${page%.rst}
        page=${page#Doc/}
        [ -f "$TOP/Doc/$page.rst" ] || die "no page Doc/$page.rst of ours"
        files="$files $SRC/$page.rst"
    done
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    note "doctest of$(for f in $files; do printf ' %s' "${f#"$SRC"/}"; done) with $BUILT_PYTHON"
    # -I: this interpreter's own library first, whatever PYTHONPATH or
    # PYTHONPMEM say; -B: no bytecode written into dist-packages.
    # shellcheck disable=SC2086
    # (pytz, which Babel imports, has a string that 3.13 warns about.)
    env TMPDIR="$tmp" PMEM_IS_PMEM_FORCE=1 "$BUILT_PYTHON" -I -B \
        -W ignore::SyntaxWarning -c '
import sys
shims, dist_packages = sys.argv[1:3]
del sys.argv[1:3]
sys.path.insert(0, shims)
sys.path.append(dist_packages)
from sphinx.cmd.build import main
sys.exit(main(sys.argv[1:]))
' "$DOCS/py313" "$DIST_PACKAGES" -b doctest $SPHINXOPTS -t pmem_doctest \
        -d "$DOCS/doctest-doctrees" "$SRC" "$DOCS/doctest" $files ||
        { sed -n '/^Doctest summary/,$p' "$DOCS/doctest/output.txt"; exit 1; }
    sed -n '/^Doctest summary/,$p' "$DOCS/doctest/output.txt"
}

case ${1:-} in
html) html ;;
doctest) shift; doctest "$@" ;;
clean) rm -rf "$DOCS" ;;
*) die "usage: docs.sh html|doctest [PAGE...]|clean" ;;
esac
