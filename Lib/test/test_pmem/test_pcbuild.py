"""The core builds on Windows: PCbuild/ lists the files it adds.

Makefile.pre.in (configure's build) and PCbuild/pythoncore.vcxproj
(Visual Studio's) each list the sources of the interpreter core, and
nothing ties the two together: a C file added to the core's object lists
builds on POSIX and is missing on Windows, where pythoncore fails to
link.  The project's part of the core (Objects/storage*.c, the hooks and
the DRAM manager, and their headers) must be in both, and in the .filters
file that Visual Studio shows the project's files with.  _pmem and
_memkind are not built on Windows (see Doc/pmem/design.rst).

The tests read the source tree that the interpreter was built from
(sysconfig's srcdir), and skip without one (an installed interpreter).
"""

import collections
import os
import posixpath
import re
import sysconfig
import unittest
import xml.etree.ElementTree as ET

SRCDIR = sysconfig.get_config_var("srcdir") or ""
MAKEFILE = os.path.join(SRCDIR, "Makefile.pre.in")
PROJECT = os.path.join(SRCDIR, "PCbuild", "pythoncore.vcxproj")
FILTERS = PROJECT + ".filters"

# The files that the project adds to the core (a sanity check of the
# parsing: every core source is checked, not only these).
OUR_SOURCES = {"Objects/storage.c", "Objects/storagemap.c",
               "Objects/storagestore.c"}
OUR_HEADERS = {"Include/cpython/storage.h",
               "Include/internal/pycore_storage.h",
               "Include/internal/pycore_storagemap.h"}

# Upstream's own: core objects of Makefile.pre.in that PCbuild builds
# from another source, or not at all.
NOT_IN_PCBUILD = {
    "Modules/config.c",     # written by makesetup; PC/config.c on Windows
    "Python/frozenmain.c",  # Py_FrozenMain(), for Tools/freeze
}

HAVE_TREE = bool(SRCDIR) and all(
    os.path.isfile(path) for path in (MAKEFILE, PROJECT, FILTERS))

MSBUILD = "{http://schemas.microsoft.com/developer/msbuild/2003}"


def is_ours(path):
    """Whether path names one of the project's files (storage*)."""
    name = posixpath.basename(path)
    return name.removeprefix("pycore_").startswith("storage")


def makefile_variables(path):
    """The variables that a makefile assigns, name -> value (the first
    assignment), with continuation lines joined."""
    with open(path, encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    variables = {}
    for line in text.splitlines():
        m = re.match(r"([A-Za-z_]\w*)\s*=(.*)", line)
        if m:
            variables.setdefault(m.group(1), m.group(2))
    return variables


def expand(variables, name):
    """The words of variable name, each $(VAR) word expanded."""
    words = []
    for word in variables.get(name, "").split():
        m = re.fullmatch(r"\$[({](\w+)[)}]", word)
        if m:
            words.extend(expand(variables, m.group(1)))
        else:
            words.append(word)
    return words


def project_items(path):
    """The C files and headers that an MSBuild project lists: (kind,
    path relative to the source tree, with slashes) -> the item's
    Filter, or None."""
    items = {}
    for group in ET.parse(path).getroot().iter(MSBUILD + "ItemGroup"):
        for item in group:
            kind = item.tag.removeprefix(MSBUILD)
            include = item.get("Include")
            if kind not in ("ClCompile", "ClInclude") or include is None:
                continue
            name = posixpath.normpath(
                posixpath.join("PCbuild", include.replace("\\", "/")))
            items[kind, name] = item.findtext(MSBUILD + "Filter")
    return items


@unittest.skipUnless(HAVE_TREE,
                     "no source tree with Makefile.pre.in and PCbuild/")
class PCbuildTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        variables = makefile_variables(MAKEFILE)
        # The core's objects: the parser, objects, Python and modules
        # object lists that make up the library.
        cls.core_sources = {
            word.removesuffix(".o") + ".c"
            for word in expand(variables, "LIBRARY_OBJS")
            if re.fullmatch(r"(Objects|Python|Parser|Modules)/[\w/]+\.o",
                            word)}
        cls.headers = {
            word.removeprefix("$(srcdir)/")
            for word in expand(variables, "PYTHON_HEADERS")}
        # What PCbuild must list: each core source (not a generated one,
        # not one of upstream's exceptions), and each header of ours.
        cls.checked = (
            {("ClCompile", src) for src in cls.core_sources
             if src not in NOT_IN_PCBUILD
             and os.path.isfile(os.path.join(SRCDIR, src))}
            | {("ClInclude", h) for h in cls.headers if is_ours(h)})
        cls.project = project_items(PROJECT)
        cls.filters = project_items(FILTERS)

    def missing(self, kind, items):
        """The checked files of kind that items lacks, sorted."""
        return sorted(path for k, path in self.checked
                      if k == kind and (k, path) not in items)

    def test_makefile_lists_our_files(self):
        self.assertLessEqual(OUR_SOURCES, self.core_sources)
        self.assertLessEqual(OUR_HEADERS, self.headers)

    def test_core_sources_are_compiled(self):
        self.assertEqual(self.missing("ClCompile", self.project), [],
                         f"not a ClCompile item of {PROJECT}")

    def test_our_headers_are_included(self):
        self.assertEqual(self.missing("ClInclude", self.project), [],
                         f"not a ClInclude item of {PROJECT}")

    def test_filters_list_the_same_files(self):
        # Upstream's .filters has drifted from its .vcxproj (it still
        # lists Objects/accu.c), so only the checked files are compared,
        # and the project's own both ways.
        for kind in ("ClCompile", "ClInclude"):
            self.assertEqual(self.missing(kind, self.filters), [],
                             f"not a {kind} item of {FILTERS}")
        self.assertEqual({item for item in self.filters if is_ours(item[1])},
                         {item for item in self.project if is_ours(item[1])})

    def test_our_files_are_filed_with_their_neighbours(self):
        # Objects/storage.c under "Objects", as Objects/setobject.c is.
        for kind, path in sorted(self.filters):
            if not is_ours(path):
                continue
            neighbours = collections.Counter(
                flt for (k, p), flt in self.filters.items()
                if k == kind and not is_ours(p)
                and posixpath.dirname(p) == posixpath.dirname(path))
            with self.subTest(path=path):
                self.assertTrue(neighbours)
                expected = neighbours.most_common(1)[0][0]
                self.assertEqual(self.filters[kind, path], expected)


if __name__ == "__main__":
    unittest.main()
