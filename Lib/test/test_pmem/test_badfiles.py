"""pmem pools: a file that is not a whole pool of this interpreter is
refused with PoolError, and the interpreter lives on.

Foreign files, truncated ones, libpmemobj's metadata spoilt, and one word
of an object spoilt (the open pass checks the objects it walks).
"""

import ctypes
import ctypes.util
import os
import shutil
import struct
import textwrap
import unittest
from test.support.script_helper import assert_python_ok
from test.test_pmem import run_in_new_process
from test.test_pmem.util import FAST_FLUSH, SIZE, PoolTestCase, _pmem, pmem


class BadFileTestCase(PoolTestCase):
    """Each bad file gives PoolError, and the interpreter lives on."""

    def make_pool(self, name="made.pool", code="pool.ns.x = [1, 2]"):
        """A pool made, and left, by another process."""
        path = os.path.join(self.dir, name)
        assert_python_ok("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({path!r}, size={SIZE})
            {code}
            """), **FAST_FLUSH)
        return path

    def copy_of(self, path, name):
        copy = os.path.join(self.dir, name)
        shutil.copy(path, copy)
        return copy


class ForeignFileTests(BadFileTestCase):
    """Files that are not pools of this interpreter."""

    def test_foreign_file(self):
        with open(self.path, "w") as f:
            f.write("not a pool\n" * 1000)
        self.assertRefused(self.path, "does not start with a libpmemobj "
                                      "pool header")

    def test_empty_file(self):
        open(self.path, "w").close()
        self.assertRefused(self.path, "does not start with a libpmemobj")

    def test_pool_of_another_layout(self):
        name = ctypes.util.find_library("pmemobj")
        if name is None:
            self.skipTest("libpmemobj not found by ctypes")
        lib = ctypes.CDLL(name)
        lib.pmemobj_create.restype = ctypes.c_void_p
        lib.pmemobj_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                       ctypes.c_size_t, ctypes.c_uint]
        lib.pmemobj_close.argtypes = [ctypes.c_void_p]
        pop = lib.pmemobj_create(os.fsencode(self.path), b"another program",
                                 SIZE, 0o600)
        self.assertTrue(pop)
        lib.pmemobj_close(pop)
        self.assertRefused(self.path, "another layout")

    def test_wrong_format_version(self):
        path = self.make_pool()
        _pmem._set_format_version(path, pmem.FORMAT_VERSION + 98)
        self.assertRefused(path, f"format version {pmem.FORMAT_VERSION + 98};"
                                 f" this interpreter reads version "
                                 f"{pmem.FORMAT_VERSION} only")


    def test_formats_3_to_7_are_upgraded(self):
        # Format 4 adds type codes (range, slice, datetime's, Decimal,
        # defaultdict) and classes over builtins, format 5 OrderedDict,
        # format 6 the pool's own undo log, format 7 its journal of
        # stores, format 8 the runs of small objects: a pool of format 3
        # to 7 is one of format 8, which its next open records, so that
        # an older build refuses it from then on.
        self.assertEqual(pmem.FORMAT_VERSION, 8)
        path = self.make_pool()
        for old in 3, 4, 5, 6, 7:
            with self.subTest(format=old):
                self.assertEqual(_pmem._set_format_version(path, old), 8)
                out = run_in_new_process(self, f"""
                    import pmem
                    pool = pmem.open({path!r})
                    print(pool.ns.x)
                    """)
                self.assertEqual(out, "[1, 2]\n")
                # Recorded: the open wrote 8.
                self.assertEqual(_pmem._set_format_version(path, 8), 8)
        self.assertEqual(_pmem._set_format_version(path, 2), 8)
        self.assertRefused(path, "written by pmem-python on CPython 3.11")


class TruncatedFileTests(BadFileTestCase):

    def test_truncated_pool(self):
        path = self.copy_of(self.make_pool(), "truncated.pool")
        os.truncate(path, SIZE // 2)
        self.assertRefused(path, "corrupt")

    def test_truncated_below_a_pool(self):
        path = self.copy_of(self.make_pool(), "tiny.pool")
        os.truncate(path, 4096)
        self.assertRefused(path, "truncated: 4096 bytes")


class CorruptMetadataTests(BadFileTestCase):
    """libpmemobj's headers, heap and lanes, spoilt."""

    def corrupt(self, offset, size=4096):
        path = self.copy_of(self.make_pool(), f"corrupt-{offset}.pool")
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(b"\xff" * size)
        return path

    def test_corrupt_pool_header(self):
        self.assertRefused(self.corrupt(100, 64),
                           "invalid checksum of pool header")

    def test_corrupt_pool_descriptor(self):
        self.assertRefused(self.corrupt(4096 + 100, 64),
                           "invalid checksum of pool descriptor")

    def test_corrupt_heap(self):
        # libpmemobj's own check crashes on this one: it runs in a child.
        self.assertRefused(self.corrupt(1 << 20), "corrupt")

    def test_corrupt_undo_log_of_a_lane(self):
        # A lane's undo log with its capacity zeroed: pmemobj_check() lets
        # it through, and libpmemobj's first transaction copied past it
        # (found by fuzz.py).  Lanes from offset 8192, 3072 bytes each, the
        # undo log's header 960 bytes in, its capacity 16 bytes into that.
        path = self.copy_of(self.make_pool(), "lane.pool")
        with open(path, "r+b") as f:
            f.seek(8192 + 3072 * 5 + 960 + 16)
            f.write(bytes(8))
        self.assertRefused(path, "lane 5's undo log has a capacity of 0 "
                                 "bytes, not 2048")

    def long_run(self):
        """A pool with a run of several chunks in libpmemobj's heap: the
        pool's path, and the file offsets of the run's chunk headers and
        of its block size (libpmemobj 1.12's heap format)."""
        # (libpmemobj's default classes make runs of several chunks; it
        # extends a transaction's undo log with blocks of those: here, the
        # log of 3000 changes of values.)
        path = self.make_pool(code="pool.ns.d = {i: str(i) for i in "
                                   "range(3000)}; d = pool.ns.d; pool.begin(); "
                                   "[d.__setitem__(i, 'x') for i in d]; "
                                   "pool.end(True)")
        with open(path, "rb") as f:
            data = f.read()
        (heap,) = struct.unpack_from("<Q", data, 4096 + 1024 + 16)
        headers = heap + 1024 + 64                  # zone 0's chunk headers
        chunks = headers + 8 * (65535 - 7)
        chunk = 0
        while True:
            kind, _, size_idx = struct.unpack_from("<HHI", data,
                                                   headers + 8 * chunk)
            self.assertIn(kind, (2, 3, 4), "no run of several chunks")
            if kind == 4 and size_idx > 1:
                return (path, [headers + 8 * (chunk + i)
                               for i in range(size_idx)],
                        chunks + (chunk << 18))
            chunk += size_idx

    def patched(self, path, offset, data):
        copy = self.copy_of(path, f"patched-{offset}.pool")
        with open(copy, "r+b") as f:
            f.seek(offset)
            f.write(data)
        return copy

    def test_corrupt_chunk_header_of_a_run(self):
        # pmemobj_check() reads only the headers of chunks that start a
        # block; libpmemobj follows these when it frees or allocates in
        # the run (a wild index, or a division by zero, in a commit).
        # (libpmemobj's own check crashes on a corrupt last header: that
        # one is refused too, but without saying why.)
        path, headers, block_size = self.long_run()
        middle = headers[len(headers) // 2]
        for offset, data in [
                (middle, bytes(8)),
                (middle + 4, struct.pack("<I", 40104)),
                (headers[1], struct.pack("<HHI", 3, 0, 1))]:
            with self.subTest(offset=offset, data=data):
                self.assertRefused(self.patched(path, offset, data),
                                   r"heap metadata is inconsistent \(chunk "
                                   r"\d+ of zone 0 is chunk \d+ of a run")
        self.assertRefused(self.patched(path, block_size, bytes(8)),
                           "corrupt")
        # The pool itself is fine.
        pmem.open(path, create=False).close()


class CorruptObjectTests(PoolTestCase):
    """One word of an object spoilt: the open pass refuses the pool."""

    def open_with_word(self, offset, value, *, seed, path=None):
        """What opening the pool in a new process says (its PoolError)
        once the 8-byte word at offset of its file is value."""
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(value.to_bytes(8, "little"))
        return self.run_in_new_process(f"""
            import pmem
            try:
                pmem.open({self.path!r})
            except pmem.PoolError as exc:
                print(exc)
            """, seed=seed, path=path)

    def test_corrupt_pointer_is_refused(self):
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.items = [1.5, 2.5]
            items = pool.ns.items
            # the address of items[0]'s slot, as an offset in the file
            import ctypes
            table = ctypes.c_void_p.from_address(id(items) + 24).value
            print(table - pool.base)
            """, seed=8)
        out = self.open_with_word(int(out), 12345, seed=9)
        self.assertRegex(out, r"is corrupt: a list at \+\d+ holds a pointer "
                              r"to neither the pool nor a constant")

    def test_instance_with_inline_values_is_refused(self):
        # A pool's instances keep their attributes in their dict: the
        # header of their inline values (the word after the object's
        # header: capacity, size, embedded, valid) says none are valid,
        # and the block has room for no more.  Valid values would be read
        # as attributes from past the block.
        with open(os.path.join(self.dir, "accounts.py"), "w") as f:
            f.write(self.CLASSES)
        out = self.run_in_new_process(f"""
            import pmem
            from accounts import Account
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.alice = Account("alice", 10.0)
            alice = pool.ns.alice
            print(id(alice) + 16 - pool.base, 1 << 24)
            """, seed=17, path=self.dir)
        offset, value = map(int, out.split())
        out = self.open_with_word(offset, value, seed=18, path=self.dir)
        self.assertRegex(out, r"is corrupt: a Account at \+\d+ holds a "
                              r"header that its memory cannot hold")

    def test_counts_that_the_table_does_not_match_are_refused(self):
        # A word written where a count or a key lies: a count that its
        # table does not match made the open's rebuild of the table read
        # past it (found by fuzz.py); a str-keyed table takes every key
        # for a str.  Each case prints the word's offset in the file and
        # the value to write there.
        cases = [
            ("a dict's ma_used, with no entries left",
             "pool.ns.x = {'k': 1}; del pool.ns.x['k']",
             "print(id(pool.ns.x) + 16 - pool.base, 14011121)"),
            ("a set's used, below its entries",
             "pool.ns.x = set(range(20))",
             "print(id(pool.ns.x) + 24 - pool.base, 3)"),
            ("a float as a key of a str-keyed table",
             "pool.ns.x = {'k': 1.5}",
             "keys = ctypes.c_void_p.from_address(id(pool.ns.x) + 32).value; "
             "print(keys + 40 - pool.base, id(pool.ns.x['k']))"),
        ]
        for what, make, where in cases:
            with self.subTest(what):
                if os.path.exists(self.path):
                    os.unlink(self.path)
                out = self.run_in_new_process(f"""
                    import ctypes, pmem
                    pool = pmem.open({self.path!r}, size={SIZE})
                    {make}
                    {where}
                    """, seed=14)
                offset, value = map(int, out.split())
                out = self.open_with_word(offset, value, seed=15)
                self.assertRegex(out, r"is corrupt: a (dict|set) at \+\d+ "
                                      r"holds counts that its table does "
                                      r"not match")


if __name__ == "__main__":
    unittest.main()
