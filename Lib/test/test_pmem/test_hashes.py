"""Hashes of pool objects are each process's own.

str and bytes hashes are randomized per process (PYTHONHASHSEED), and
hash(None), like that of anything hashed by identity, comes from an
address, which moves with the binary (ASLR).  A pool keeps hashes in its
tables (set entries, dict entries with keys other than str) and
frozensets keep the hashes of their elements, from which their own hash
is made.  Every one of them must be this process's, at any depth, or
lookups fail and keys duplicate.

One process stores keys of every hashable type a pool holds, nested in
each other, under one hash seed; three more processes, each under
another seed, look every key up and add it again (which must change
nothing), in the set, the frozenset, and as dict keys.
"""

import os
import unittest
from test.support import import_helper, os_helper
from test.test_pmem import run_in_new_process

import_helper.import_module("_pmem")

# Evaluated in each process: equal values, made anew there.
KEYS = """[
    0, 1, -7, 2**70, True, False, 2.5, -0.0, 1 + 2j, None, ...,
    "", "a", "abc", "caf\\xe9", "\\u20ac" * 3, "\\U0001f600", b"", b"xy",
    (), (1, "a"), (None, b"q", 3.5), ((("deep",),),),
    frozenset(), frozenset({"abc"}), frozenset({None, 1}),
    frozenset({b"x", (1, frozenset({"y"}))}),
    frozenset({frozenset({frozenset({"z", None})}), "w"}),
    (frozenset({"t"}), None, frozenset({(b"u", frozenset({2.5}))})),
    frozenset({(None,), ("n", None), frozenset({...})}),
]"""
KEYS = " ".join(KEYS.split())     # one line, for the children's code

# Instances of classes written in Python are keys when they are in the
# pool already: one whose hash is made of its fields, and one hashed by
# identity (found by itself).
OBJECTS = """[Key("point", 3), Key("inner", frozenset({"k"})), Plain()]"""
KEY_CLASS = """
class Plain:
    pass

class Key:
    __slots__ = ("name", "value")

    def __init__(self, name, value):
        self.name = name
        self.value = value

    def __eq__(self, other):
        return (type(other) is Key and self.name == other.name
                and self.value == other.value)

    def __hash__(self):
        return hash((self.name, self.value))

    def __repr__(self):
        return f"Key({self.name!r}, {self.value!r})"
"""


class StaleHashTests(unittest.TestCase):

    def setUp(self):
        self.dir = self.enterContext(os_helper.temp_dir())
        self.path = os.path.join(self.dir, "hashes.pool")
        with open(os.path.join(self.dir, "hashkeys.py"), "w") as f:
            f.write(KEY_CLASS)

    def run_in_new_process(self, code, seed):
        return run_in_new_process(self, code, hash_seed=seed, path=self.dir)

    def test_tables_with_deleted_entries_under_other_seeds(self):
        # An open rebuilds each dict's table where it is: the entries of
        # deleted keys stay as holes, which no lookup finds, the order
        # stays, and the dict fills its holes and grows later on.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            pool.ns.s = {{f"k{{i}}": i for i in range(1000)}}
            pool.ns.g = {{(i, f"t{{i}}"): i for i in range(1000)}}
            pool.ns.small = {{"a": 1, "b": 2, 3: "c"}}
            for i in range(0, 1000, 3):
                del pool.ns.s[f"k{{i}}"]
                del pool.ns.g[(i, f"t{{i}}")]
            del pool.ns.small["a"]
            """, seed=1)
        check = f"""
            import pmem
            pool = pmem.open({self.path!r}, create=False)
            s, g, small = pool.ns.s, pool.ns.g, pool.ns.small
            kept = [i for i in range(1000) if i % 3]
            assert list(s) == [f"k{{i}}" for i in kept], list(s)[:5]
            assert list(g) == [(i, f"t{{i}}") for i in kept]
            for i in range(1000):
                assert (f"k{{i}}" in s) == (i % 3 != 0), i
                assert ((i, f"t{{i}}") in g) == (i % 3 != 0), i
                assert s.get(f"k{{i}}") == (i if i % 3 else None)
            assert small == {{"b": 2, 3: "c"}} and "a" not in small
            assert list(small) == ["b", 3]
            """
        for seed in (2, 3):
            self.run_in_new_process(check, seed=seed)
        self.run_in_new_process(check + f"""
            for i in range(0, 1000, 3):
                s[f"k{{i}}"] = i
                g[(i, f"t{{i}}")] = i
            small["a"] = 1
            for i in range(1000, 5000):       # resizes
                s[f"k{{i}}"] = i
            """, seed=4)
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, create=False)
            s, g = pool.ns.s, pool.ns.g
            assert len(s) == 5000 and len(g) == 1000
            assert all(s[f"k{{i}}"] == i for i in range(5000))
            assert all(g[(i, f"t{{i}}")] == i for i in range(1000))
            assert pool.ns.small == {{"b": 2, 3: "c", "a": 1}}
            """, seed=5)

    def test_keys_of_every_hashable_type_under_other_seeds(self):
        self.run_in_new_process(f"""
            import pmem
            from hashkeys import Key, Plain
            pool = pmem.open({self.path!r}, size=16 << 20)
            pool.ns.objects = {OBJECTS}
            point, inner, plain = pool.ns.objects
            keys = {KEYS} + [point, (inner, "outer"), plain]
            pool.ns.keys = list(keys)
            pool.ns.set = set(keys)
            pool.ns.frozen = frozenset(keys)
            pool.ns.dict = {{k: i for i, k in enumerate(keys)}}
            pool.ns.nested = {{(k, "x"): i for i, k in enumerate(keys)}}
            pool.ns.in_sets = [{{k}} for k in keys]
            pool.ns.in_frozensets = {{frozenset({{k}}) for k in keys}}
            """, seed=1)
        for seed in (2, 3, 4):
            with self.subTest(seed=seed):
                out = self.run_in_new_process(f"""
                    import pmem
                    from hashkeys import Key
                    ns = pmem.open({self.path!r}, create=False).ns
                    keys = {KEYS} + [Key("point", 3),
                                     (Key("inner", frozenset({{"k"}})),
                                      "outer"),
                                     ns.objects[2]]
                    index = {{k: i for i, k in enumerate(keys)}}
                    assert ns.keys == keys
                    bad = []
                    for i, k in enumerate(keys):
                        if k not in ns.set:
                            bad.append(("set", k))
                        if k not in ns.frozen:
                            bad.append(("frozenset", k))
                        if ns.dict.get(k) != index[k]:
                            bad.append(("dict", k))
                        if ns.nested.get((k, "x")) != index[k]:
                            bad.append(("tuple key", k))
                        if k not in ns.in_sets[i]:
                            bad.append(("set of one", k))
                        if frozenset({{k}}) not in ns.in_frozensets:
                            bad.append(("frozenset of one", k))
                        if hash(ns.keys[i]) != hash(k):
                            bad.append(("hash", k))
                    assert not bad, bad
                    assert ns.frozen == frozenset(keys)
                    assert hash(ns.frozen) == hash(frozenset(keys))
                    # Adding each again changes nothing.  (An instance
                    # made here would be refused: a shared mutable.)
                    builtin = len(keys) - 3
                    for i, k in enumerate(keys):
                        k = k if i < builtin else ns.keys[i]
                        ns.set.add(k)
                        ns.dict[k] = index[k]
                        ns.nested[(k, "x")] = index[k]
                        ns.in_sets[i].add(k)
                        ns.in_frozensets.add(frozenset({{k}}))
                    sizes = (len(ns.set), len(ns.dict), len(ns.nested),
                             len(ns.in_frozensets),
                             sum(map(len, ns.in_sets)))
                    d = len(index)
                    print(sizes == (d, d, d, d, len(keys)), sizes)
                    """, seed=seed)
                self.assertTrue(out.startswith("True "), out)

    def test_frozenset_with_none_under_a_fixed_seed(self):
        # hash(None) is its address: it moves with the binary even when
        # the str hashes do not.  Many sets, so that the order in which
        # an open visits them cannot hide a stale hash.
        code = f"""
            import pmem
            pool = pmem.open({self.path!r}, size=16 << 20)
            if not hasattr(pool.ns, "sets"):
                pool.ns.sets = [{{frozenset({{None, i}})}} for i in range(200)]
            found = 0
            for i, s in enumerate(pool.ns.sets):
                found += frozenset({{None, i}}) in s
                s.add(frozenset({{i, None}}))
            print(found, sum(map(len, pool.ns.sets)))
            """
        self.assertEqual(self.run_in_new_process(code, seed=0),
                         "200 200\n")
        for _ in range(2):
            self.assertEqual(self.run_in_new_process(code, seed=0),
                             "200 200\n")


if __name__ == "__main__":
    unittest.main()
