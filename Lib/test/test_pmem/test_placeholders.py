"""Instances whose class a process cannot use: placeholders.

A pool records each class of its instances by module and qualified name,
with the layout of the instances.  A process that cannot use the class
(not found, not a class a pool can hold, another layout) still opens the
pool: the instances stay as they are and are reachable as placeholders,
whose attributes can be read; pool.unresolved() names every such class
and why.  The next process that finds the class gets its instances
back.  Every step runs in a new process.
"""

import os
import subprocess
import sys
import textwrap
import unittest

from test.support import import_helper, os_helper
from test.test_pmem import run_in_new_process

import_helper.import_module("_pmem")

SIZE = 16 << 20

ACCOUNTS = """\
class Account:
    def __init__(self, owner, balance):
        self.owner = owner
        self.balance = balance

    def deposit(self, amount):
        self.balance += amount

class Point:
    __slots__ = ("x", "y", "__weakref__")

    def __init__(self, x, y):
        self.x, self.y = x, y

class Point3(Point):
    __slots__ = ("z", "_Point3__hidden")

    def __init__(self, x, y, z):
        super().__init__(x, y)
        self.z = z
        self.__hidden = -z
"""


class PlaceholderTests(unittest.TestCase):

    def setUp(self):
        self.dir = self.enterContext(os_helper.temp_dir())
        self.path = os.path.join(self.dir, "test.pool")
        self.modules = os.path.join(self.dir, "modules")
        os.mkdir(self.modules)

    def write_module(self, name, source):
        with open(os.path.join(self.modules, name + ".py"), "w") as f:
            f.write(textwrap.dedent(source))

    def child(self, code, *, modules=True):
        """Run code in a new process; the modules written so far are
        importable when modules is true."""
        return run_in_new_process(self, code,
                                  path=self.modules if modules else None)

    def make_pool(self):
        """A pool with instances of accounts' classes, of a class of a
        script's __main__, and unrelated data."""
        self.write_module("accounts", ACCOUNTS)
        script = os.path.join(self.dir, "script.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(f"""
                import pmem
                from accounts import Account, Point, Point3

                class Local:
                    def __init__(self, note):
                        self.note = note

                pool = pmem.open({self.path!r}, size={SIZE})
                pool.ns.alice = Account("alice", 10.0)
                pool.ns.points = [Point(1, 2), Point(3, [4]), Point3(5, 6, 7)]
                pool.ns.first = pool.ns.points[0]
                pool.ns.local = Local("made by a script")
                pool.ns.local.me = pool.ns.local
                pool.ns.counter = 1
                pool.ns.data = {{"k": [1, 2, 3]}}
                """))
        env = dict(os.environ, PMEM_IS_PMEM_FORCE="1",
                   PYTHONPATH=self.modules)
        proc = subprocess.run([sys.executable, "-X", "faulthandler", script],
                              env=env, capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_missing_classes_give_placeholders(self):
        self.make_pool()
        out = self.child(f"""
            import pmem, weakref
            pool = pmem.open({self.path!r})
            ns = pool.ns
            # Unrelated data: there, and writable.
            assert ns.data == {{"k": [1, 2, 3]}}, ns.data
            ns.counter += 1
            # Every missing class at once, with its reason.
            missing = pool.unresolved()
            assert sorted(missing) == ["__main__:Local", "accounts:Account",
                                       "accounts:Point", "accounts:Point3"], \\
                missing
            assert "No module named 'accounts'" in missing["accounts:Point"]
            assert "Local" in missing["__main__:Local"]
            # Placeholders: named like the class, readable.
            alice = ns.alice
            assert isinstance(alice, pmem.Placeholder)
            assert type(alice).__pmem_class__ == "accounts:Account"
            assert type(alice).__qualname__ == "Account"
            assert type(alice).__module__ == "accounts"
            assert (alice.owner, alice.balance) == ("alice", 10.0)
            assert vars(alice) == {{"owner": "alice", "balance": 10.0}}
            p1, p2, p3 = ns.points
            assert (p2.x, p2.y) == (3, [4])
            assert (p3.x, p3.y, p3.z, p3._Point3__hidden) == (5, 6, 7, -7)
            assert ns.first is p1
            assert weakref.ref(p1)() is p1
            assert ns.local.note == "made by a script"
            print(repr(alice))
            print(repr(p3))
            print(repr(ns.local))
            assert pmem.placeholder_attributes(p3) == {{
                "x": 5, "y": 6, "_Point3__hidden": -7, "z": 7}}
            # They cannot be changed, or made.
            for obj, name in ((alice, "balance"), (p2, "x"), (alice, "new")):
                try:
                    setattr(obj, name, 0)
                except AttributeError as exc:
                    assert "placeholder for accounts:" in str(exc), exc
                else:
                    raise AssertionError("a placeholder took a store")
            try:
                del alice.owner
            except AttributeError:
                pass
            else:
                raise AssertionError("a placeholder lost an attribute")
            try:
                type(alice)("bob", 1.0)
            except TypeError as exc:
                assert "placeholder for accounts:Account" in str(exc), exc
            else:
                raise AssertionError("a placeholder was made")
            # Held by a new container of the pool too.
            ns.again = [alice]
            assert ns.again[0] is alice
            """, modules=False)
        self.assertEqual(out.splitlines(), [
            "<placeholder for accounts:Account(owner='alice', "
            "balance=10.0)>",
            "<placeholder for accounts:Point3(x=5, y=6, _Point3__hidden=-7, "
            "z=7)>",
            "<placeholder for __main__:Local(note='made by a script', "
            "me=...)>",
        ])
        # The next process that finds the classes gets the instances.
        out = self.child(f"""
            import pmem, weakref
            from accounts import Account, Point, Point3
            pool = pmem.open({self.path!r})
            ns = pool.ns
            assert pool.unresolved() == {{"__main__:Local": pool.unresolved()
                                          ["__main__:Local"]}}
            assert type(ns.alice) is Account and ns.again[0] is ns.alice
            ns.alice.deposit(5)
            assert [type(p) for p in ns.points] == [Point, Point, Point3]
            assert ns.points[2]._Point3__hidden == -7
            assert ns.first is ns.points[0]
            print(ns.alice.balance, ns.counter, ns.data)
            """)
        self.assertEqual(out, "15.0 2 {'k': [1, 2, 3]}\n")

    def test_classes_found_during_the_run(self):
        # The module becomes importable after the open: the classes that
        # its import makes give the instances their class, in this
        # process (resolve() finds nothing left to do).
        self.make_pool()
        out = self.child(f"""
            import pmem, sys, weakref
            pool = pmem.open({self.path!r})
            ns = pool.ns
            first = ns.first
            ref = weakref.ref(first)
            assert isinstance(first, pmem.Placeholder)
            assert pool.resolve() == []          # nothing new yet
            sys.path.insert(0, {self.modules!r})
            from accounts import Account, Point, Point3
            # A new instance: a second entry of Account.
            ns.bob = Account("bob", 1.0)
            print(pool.resolve())
            print(sorted(pool.unresolved()))
            assert type(ns.alice) is Account and type(ns.bob) is Account
            assert [type(p) for p in ns.points] == [Point, Point, Point3]
            assert first is ns.points[0] and type(first) is Point
            assert ref() is first
            ns.alice.deposit(5)
            ns.points[1].x = 30
            ns.carol = Account("carol", 2.0)
            print(pool.resolve())
            """, modules=False)
        self.assertEqual(out, "[]\n['__main__:Local']\n[]\n")
        out = self.child(f"""
            import pmem
            from accounts import Account
            ns = pmem.open({self.path!r}).ns
            print([(type(a) is Account, a.owner, a.balance)
                   for a in (ns.alice, ns.bob, ns.carol)], ns.points[1].x)
            """)
        self.assertEqual(out, "[(True, 'alice', 15.0), (True, 'bob', 1.0), "
                              "(True, 'carol', 2.0)] 30\n")

    def test_keys_found_during_the_run_hash_as_their_class(self):
        # Placeholders hash by identity; once they have a class with a
        # __hash__ of its own (given when the class is made, here by the
        # import), the tables that hold them as keys (and the frozensets)
        # are rebuilt for it.
        self.write_module("keys", """\
            class Key:
                __slots__ = ("k",)
                def __init__(self, k):
                    self.k = k
                def __eq__(self, other):
                    return isinstance(other, Key) and other.k == self.k
                def __hash__(self):
                    return hash(("Key", self.k))
            """)
        self.child(f"""
            import pmem
            from keys import Key
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.keys = [Key(i) for i in range(5)]
            pool.ns.d = {{}}
            for k in pool.ns.keys:
                pool.ns.d[k] = k.k
            pool.ns.s = set(pool.ns.keys[:3])
            pool.ns.f = {{frozenset(pool.ns.keys[:2]): "pair"}}
            """)
        out = self.child(f"""
            import pmem, sys
            pool = pmem.open({self.path!r})
            sys.path.insert(0, {self.modules!r})
            from keys import Key
            ns = pool.ns
            print(Key(3) in ns.d, pool.resolve())
            print(Key(3) in ns.d, ns.d[Key(4)], Key(1) in ns.s,
                  ns.f[frozenset({{Key(0), Key(1)}})], len(ns.d))
            """, modules=False)
        self.assertEqual(out, "True []\nTrue 4 True pair 5\n")

    def test_changed_layout_gives_placeholders(self):
        self.make_pool()
        # Point gains a slot: its instances' memory is not the new class's.
        self.write_module("accounts", ACCOUNTS.replace(
            '("x", "y", "__weakref__")', '("x", "y", "w", "__weakref__")'))
        out = self.child(f"""
            import pmem
            from accounts import Account, Point
            pool = pmem.open({self.path!r})
            ns = pool.ns
            missing = pool.unresolved()
            print(sorted(missing))
            print(missing["accounts:Point"])
            assert type(ns.alice) is Account
            p = ns.points[1]
            assert type(p) is not Point and isinstance(p, pmem.Placeholder)
            print(p.x, p.y, ns.points[2].z)
            """)
        lines = out.splitlines()
        self.assertEqual(lines[0], "['__main__:Local', 'accounts:Point', "
                                   "'accounts:Point3']")
        self.assertRegex(lines[1], r"the layout of its instances changed: "
                                   r"'32 x,y,__weakref__' in the pool, "
                                   r"'40 w,x,y,__weakref__' in the class")
        self.assertEqual(lines[2], "3 [4] 7")

    def test_a_name_that_now_names_another_kind_of_object(self):
        self.make_pool()
        # A class replaced by a C type, a function, a module attribute
        # that went away.
        self.write_module("accounts", """\
            import array
            Account = array.array
            def Point():
                pass
            """)
        out = self.child(f"""
            import pmem
            pool = pmem.open({self.path!r})
            for name, reason in sorted(pool.unresolved().items()):
                print(name, "|", reason)
            print(pool.ns.alice.owner, pool.ns.points[1].y)
            """)
        lines = out.splitlines()
        self.assertIn("accounts:Account | 'accounts:Account' is <class "
                      "'array.array'>, not a class written in Python whose "
                      "instances a pool can hold", lines)
        self.assertIn("accounts:Point | 'accounts:Point' is not a class",
                      lines)
        self.assertTrue(any(line.startswith("accounts:Point3 | module "
                                            "'accounts' has no attribute")
                            for line in lines), lines)
        self.assertEqual(lines[-1], "alice [4]")

    def test_a_failed_open_leaves_the_path_usable(self):
        # An entry whose layout no class can have is corruption: refused.
        # Once the file is right again, the same process opens it.
        self.make_pool()
        out = self.child(f"""
            import pmem
            with open({self.path!r}, "rb") as f:
                data = f.read()
            at = data.index(b"accounts:Account 16 ")
            with open({self.path!r}, "r+b") as f:
                f.seek(at + len("accounts:Account "))
                f.write(b"99")
            try:
                pmem.open({self.path!r})
            except pmem.PoolError as exc:
                print(exc)
            with open({self.path!r}, "r+b") as f:
                f.write(data)
            pool = pmem.open({self.path!r})
            print(pool.ns.alice.owner, pool.ns.counter)
            """)
        self.assertRegex(out, r"is corrupt: its type table holds "
                              r"'accounts:Account 99 __dict__,__weakref__',"
                              r" a layout that no class has\n"
                              r"alice 1\n$")

    def test_subclasses_of_builtins_wait_as_builtins(self):
        # The placeholder of a subclass of dict is a dict (and a
        # Placeholder), of a subclass of str a str: what they hold is
        # read as the builtin; the class comes back in the next process.
        self.write_module("kinds", """
            class Tag(str):
                __slots__ = ("note",)
            class Table(dict):
                pass
            """)
        self.child(f"""
            import pmem, kinds
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.tag = kinds.Tag("h\u00e9llo")
            pool.ns.tag.note = [1]
            pool.ns.table = kinds.Table(a=1)
            pool.ns.table.extra = "x"
            """)
        out = self.child(f"""
            import pmem
            pool = pmem.open({self.path!r})
            tag, table = pool.ns.tag, pool.ns.table
            print(isinstance(tag, str), isinstance(tag, pmem.Placeholder),
                  tag == "h\u00e9llo", tag.note)
            print(isinstance(table, dict), table["a"], table.extra)
            print(sorted(pool.unresolved()))
            """, modules=False)
        self.assertEqual(out, "True True True [1]\nTrue 1 x\n"
                              "['kinds:Table', 'kinds:Tag']\n")
        out = self.child(f"""
            import pmem, kinds
            pool = pmem.open({self.path!r})
            print(type(pool.ns.tag) is kinds.Tag, pool.ns.tag.note,
                  type(pool.ns.table) is kinds.Table, pool.ns.table)
            """)
        self.assertEqual(out, "True [1] True {'a': 1}\n")

    def test_references_wait_for_their_names(self):
        # An enum member (or a class, a function) is stored as a reference
        # by name: a process that cannot find the name gets a
        # pmem.MissingReference that says so, and the next process that
        # finds it gets the object itself again.
        self.write_module("colors", """
            import enum
            class Color(enum.Enum):
                RED = 1
            def pick():
                return Color.RED
            """)
        self.child(f"""
            import pmem, colors
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.c = colors.Color.RED
            pool.ns.both = [colors.Color.RED, colors.pick, colors.Color]
            """)
        out = self.child(f"""
            import pmem
            pool = pmem.open({self.path!r})
            c, both = pool.ns.c, pool.ns.both
            print(type(c).__name__, c is both[0], repr(c))
            print(sorted(pool.unresolved()))
            pool.ns.keep = "a change: the pool is written in this process"
            """, modules=False)
        self.assertEqual(out, "MissingReference True <missing reference "
                              "to colors:Color.RED (No module named "
                              "'colors')>\n['colors:Color', "
                              "'colors:Color.RED', 'colors:pick']\n")
        out = self.child(f"""
            import pmem, colors
            pool = pmem.open({self.path!r})
            ns = pool.ns
            print(ns.c is colors.Color.RED, ns.both == [colors.Color.RED,
                  colors.pick, colors.Color], pool.unresolved())
            """)
        self.assertEqual(out, "True True {}\n")

    def test_tools_read_a_pool_with_placeholders(self):
        self.make_pool()
        env = dict(os.environ, PMEM_IS_PMEM_FORCE="1")
        env.pop("PYTHONPATH", None)
        for command in (["check"], ["info"], ["dump", "--depth", "3"]):
            with self.subTest(command=command):
                proc = subprocess.run(
                    [sys.executable, "-m", "pmem", *command, self.path],
                    env=env, capture_output=True, text=True)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                if command == ["check"]:
                    self.assertRegex(proc.stdout, r": ok\b")
                if command[0] == "dump":
                    self.assertIn("placeholder for accounts:Account",
                                  proc.stdout)
                if command == ["info"]:
                    self.assertIn("accounts:Account", proc.stdout)


if __name__ == "__main__":
    unittest.main()
