"""The overlay tool: build/ is the base (CPython and Debian's fixes) + our
files + our patches.

Each test builds a small scratch repository (the real Tools/pmem/tree.sh,
one new file, one patch) and drives tree.sh on it, as `./configure`,
`make` and `make patches` do.  The pristine tarball comes from the cache
that ./configure filled; without it the tests are skipped.
"""

import os
import shutil
import subprocess
import unittest
from test.support import os_helper
from test.test_tools import skip_if_missing, toolsdir

skip_if_missing("pmem")

TREE_SH = os.path.join(toolsdir, "pmem", "tree.sh")
# The patches are not in the build tree: they are found from this file's
# real path (a link from the build tree into the repository).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__)))))
VERSION_PATCH = os.path.join(REPO, "Include", "patchlevel.h.patch")
FIXES_LIST = os.path.join(toolsdir, "pmem", "debian-fixes.txt")
VERSION = subprocess.run(["sh", TREE_SH, "version"], stdout=subprocess.PIPE,
                         text=True).stdout.strip()
SOURCE = "python" + ".".join(VERSION.split(".")[:2])
TARBALL_NAME = f"{SOURCE}_{VERSION}.orig.tar.xz"
FIXES_NAME = f"{SOURCE}_{VERSION}.fixes"


def default_cache():
    if "PMEM_PYTHON_CACHE" in os.environ:
        return os.environ["PMEM_PYTHON_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "pmem-python")


CACHE = default_cache()


@unittest.skipUnless(os.path.exists(TREE_SH) and os.path.exists(VERSION_PATCH),
                     "not run from a pmem-python checkout")
@unittest.skipUnless(os.path.exists(os.path.join(CACHE, TARBALL_NAME)),
                     "the pristine tarball is not cached (run ./configure)")
@unittest.skipUnless(shutil.which("patch") and shutil.which("diff"),
                     "needs patch and diff")
class TreeTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # One unpacked tarball for all tests: each test's build/ is a tree
        # of hard links to it, and every write below replaces a file
        # rather than writing into it, as tree.sh does.
        cls.template = cls.enterClassContext(os_helper.temp_dir())
        os.makedirs(os.path.join(cls.template, "Tools", "pmem"))
        shutil.copy(TREE_SH, os.path.join(cls.template, "Tools", "pmem"))
        shutil.copy(FIXES_LIST, os.path.join(cls.template, "Tools", "pmem"))
        subprocess.run(
            ["sh", os.path.join(cls.template, "Tools", "pmem", "tree.sh"),
             "sync"],
            env=dict(os.environ, PMEM_PYTHON_CACHE=CACHE),
            stdout=subprocess.DEVNULL, check=True)

    def setUp(self):
        self.top = self.enterContext(os_helper.temp_dir())
        subprocess.run(["cp", "-al", os.path.join(self.template, "build"),
                        self.top], check=True)
        os.makedirs(os.path.join(self.top, "Tools", "pmem"))
        shutil.copy(TREE_SH, os.path.join(self.top, "Tools", "pmem"))
        shutil.copy(FIXES_LIST, os.path.join(self.top, "Tools", "pmem"))
        self.write("Objects/ournew.c", "/* ours */\n")
        self.write("Include/patchlevel.h.patch",
                   self.read_file(VERSION_PATCH))
        self.tree = os.path.join(self.top, "build", f"Python-{VERSION}")

    @staticmethod
    def read_file(path):
        with open(path, encoding="utf-8") as f:
            return f.read()

    def write(self, relpath, text):
        """Replace the file (never write into it: it may be a link)."""
        path = os.path.join(self.top, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".new", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".new", path)

    def tree_sh(self, *args, cache=CACHE, ok=True):
        env = dict(os.environ, PMEM_PYTHON_CACHE=cache)
        proc = subprocess.run(
            ["sh", os.path.join(self.top, "Tools", "pmem", "tree.sh"), *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        if ok is not None:
            self.assertEqual(proc.returncode == 0, ok, proc.stdout)
        return proc

    def edit_upstream(self, relpath, old, new):
        path = os.path.join(self.tree, relpath)
        text = self.read_file(path)
        self.assertIn(old, text)
        self.write(path, text.replace(old, new, 1))

    def repo_status(self):
        """Every file of the scratch repository with its contents."""
        files = {}
        for dirpath, dirnames, filenames in os.walk(self.top):
            if dirpath == self.top:
                dirnames.remove("build")
            for name in filenames:
                path = os.path.join(dirpath, name)
                files[os.path.relpath(path, self.top)] = self.read_file(path)
        return files

    def test_sync_links_our_files_and_applies_patches(self):
        self.tree_sh("sync")
        ours = os.path.join(self.tree, "Objects", "ournew.c")
        self.assertTrue(os.path.islink(ours))
        self.assertEqual(os.path.realpath(ours),
                         os.path.join(os.path.realpath(self.top),
                                      "Objects", "ournew.c"))
        self.assertIn(f'"{VERSION}+pmem"', self.read_file(
            os.path.join(self.tree, "Include", "patchlevel.h")))
        # Untouched: check is quiet and `patches` changes nothing.
        before = self.repo_status()
        self.tree_sh("check")
        self.tree_sh("patches")
        self.assertEqual(self.repo_status(), before)

    def test_unrecorded_edit_is_reported_then_recorded(self):
        self.tree_sh("sync")
        self.edit_upstream("Objects/listobject.c",
                           "#include \"Python.h\"\n",
                           "#include \"Python.h\"\n/* hook */\n")
        out = self.tree_sh("check", ok=False).stdout
        self.assertIn("edits that no .patch records", out)
        self.assertIn("Objects/listobject.c", out)
        self.tree_sh("patches")
        patch = self.read_file(
            os.path.join(self.top, "Objects", "listobject.c.patch"))
        self.assertIn("+/* hook */", patch)
        self.assertTrue(patch.startswith("--- a/Objects/listobject.c\n"))
        self.tree_sh("check")
        # Undoing the edit in the build tree removes the patch.
        self.write(os.path.join(self.tree, "Objects", "listobject.c"),
                   self.read_file(os.path.join(
                       self.top, "build", "pristine", f"Python-{VERSION}",
                       "Objects", "listobject.c")))
        self.tree_sh("patches")
        self.assertFalse(os.path.exists(
            os.path.join(self.top, "Objects", "listobject.c.patch")))

    def test_changed_patch_is_applied(self):
        # As after a pull: the committed patch changes, the build did not.
        self.tree_sh("sync")
        path = os.path.join(self.top, "Include", "patchlevel.h.patch")
        self.write(path, self.read_file(path).replace("+pmem", "+pmem2"))
        self.tree_sh("check", ok=False)
        self.tree_sh("sync")
        self.assertIn(f'"{VERSION}+pmem2"', self.read_file(
            os.path.join(self.tree, "Include", "patchlevel.h")))
        self.tree_sh("check")

    def test_both_sides_changed_is_refused(self):
        self.tree_sh("sync")
        path = os.path.join(self.top, "Include", "patchlevel.h.patch")
        self.write(path, self.read_file(path).replace("+pmem", "+pmem2"))
        self.edit_upstream("Include/patchlevel.h", "+pmem", "+pmem3")
        out = self.tree_sh("sync", ok=False).stdout
        self.assertIn("both the build tree and the committed .patch changed",
                      out)
        out = self.tree_sh("patches", ok=False).stdout
        self.assertIn("Include/patchlevel.h", out)
        # Neither side was overwritten.
        self.assertIn("+pmem2", self.read_file(path))
        self.assertIn(f'"{VERSION}+pmem3"', self.read_file(
            os.path.join(self.tree, "Include", "patchlevel.h")))

    def test_edit_of_our_file_in_build_edits_the_repo(self):
        self.tree_sh("sync")
        with open(os.path.join(self.tree, "Objects", "ournew.c"), "a",
                  encoding="utf-8") as f:
            f.write("int x;\n")
        self.assertEqual(
            self.read_file(os.path.join(self.top, "Objects", "ournew.c")),
            "/* ours */\nint x;\n")

    def test_copy_replacing_a_link_is_refused(self):
        self.tree_sh("sync")
        ours = os.path.join(self.tree, "Objects", "ournew.c")
        os.unlink(ours)
        with open(ours, "w", encoding="utf-8") as f:
            f.write("/* edited copy */\n")
        out = self.tree_sh("sync", ok=False).stdout
        self.assertIn("is a copy, not a link", out)
        # The copy is kept for the developer to reconcile.
        self.assertEqual(self.read_file(ours), "/* edited copy */\n")

    def test_our_file_may_not_shadow_an_upstream_file(self):
        self.write("Objects/listobject.c", "/* a copy */\n")
        out = self.tree_sh("sync", ok=False).stdout
        self.assertIn("Objects/listobject.c is an upstream file", out)

    def corrupt_cache(self, name, offset):
        """A cache of the verified files in which name's byte at offset
        is changed."""
        os_helper.rmtree(os.path.join(self.top, "build"))
        cache = os.path.join(self.top, "cache")
        shutil.copytree(os.path.join(CACHE, FIXES_NAME),
                        os.path.join(cache, FIXES_NAME))
        shutil.copy(os.path.join(CACHE, TARBALL_NAME), cache)
        path = os.path.join(cache, name)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[offset] ^= 0xFF
        with open(path, "wb") as f:
            f.write(data)
        return cache

    def test_corrupt_tarball_is_refused(self):
        cache = self.corrupt_cache(TARBALL_NAME, 1000)
        for command in ("fetch", "sync"):
            out = self.tree_sh(command, cache=cache, ok=False).stdout
            self.assertIn("has SHA-256", out)
            self.assertIn("Refusing to build unknown source", out)
        self.assertFalse(os.path.exists(os.path.join(self.top, "build")))

    def test_changed_fix_is_refused(self):
        # Each of Debian's fixes is checked against the committed list.
        name = "CVE-2025-6069.patch"
        self.assertIn(f" {name}\n", self.read_file(FIXES_LIST))
        cache = self.corrupt_cache(os.path.join(FIXES_NAME, name), 100)
        for command in ("fetch", "sync"):
            out = self.tree_sh(command, cache=cache, ok=False).stdout
            self.assertIn(f"{name} has SHA-256", out)
        self.assertFalse(os.path.exists(os.path.join(self.top, "build")))

    def test_base_has_debians_fixes(self):
        # The pristine tree is the tarball with the listed fixes applied:
        # gh-130555's fix of dict.clear() (Debian's dict-use-after-free).
        self.tree_sh("sync")
        dictobject = self.read_file(os.path.join(
            self.top, "build", "pristine", f"Python-{VERSION}", "Objects",
            "dictobject.c"))
        self.assertIn("clear_embedded_values(oldvalues, oldkeys->dk_nentries)",
                      dictobject)


if __name__ == "__main__":
    unittest.main()
