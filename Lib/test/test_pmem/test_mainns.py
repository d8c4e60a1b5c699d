"""python -X pmem=PATH: __main__'s variables in a pool, from run to run.

Every test runs programs in new interpreters, as a user does; a pool is
read back by another new process.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import unittest
from test import support
from test.test_pmem.util import FAST_FLUSH, PoolTestCase

COUNTER = textwrap.dedent("""\
    try:
        n
    except NameError:
        n = 0
    n += 1
    print(n)
    """)


class MainPoolTestCase(PoolTestCase):

    def python(self, *args, env=None, input=None, pool=True, check=True,
               seed=None):
        """Run python with args (and -X pmem=self.path when pool), in
        self.dir; the CompletedProcess."""
        full_env = dict(os.environ, **FAST_FLUSH)
        for name in ("PYTHONPMEM", "PYTHONPATH", "PYTHONWARNINGS"):
            full_env.pop(name, None)
        if seed is not None:
            full_env["PYTHONHASHSEED"] = str(seed)
        full_env.update(env or {})
        xpmem = ["-X", f"pmem={self.path}"] if pool else []
        proc = subprocess.run([sys.executable, *xpmem, *args],
                              cwd=self.dir, env=full_env, input=input,
                              capture_output=True, text=True,
                              timeout=support.LONG_TIMEOUT)
        if check:
            self.assertEqual(proc.returncode, 0, proc.stderr)
        return proc

    def script(self, name, source):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(source))
        return path

    def killed_runs(self, source, delays):
        """Run the program source with -X pmem=self.path, killed with
        SIGKILL after each of delays (seconds): yields after each kill."""
        path = self.script("loop.py", source)
        env = dict(os.environ, **FAST_FLUSH)
        env.pop("PYTHONPMEM", None)
        for delay in delays:
            proc = subprocess.Popen([sys.executable, "-X",
                                     f"pmem={self.path}", path], env=env)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            yield

    def namespace(self):
        """The pool's namespace, as another process reads it: {name:
        repr(value)}."""
        proc = self.python("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({self.path!r}, create=False)
            print(sorted((k, repr(v)) for k, v in pool.ns.__dict__.items()))
            """), pool=False)
        return dict(eval(proc.stdout))


class RunTests(MainPoolTestCase):
    """The ways to run a program: a script, -c, -m, the REPL, stdin."""

    def assertCounts(self, run):
        outputs = [run().stdout for _ in range(3)]
        self.assertEqual(outputs, ["1\n", "2\n", "3\n"])
        os.unlink(self.path)

    def test_script(self):
        path = self.script("counter.py", COUNTER)
        self.assertCounts(lambda: self.python(path))

    def test_command(self):
        self.assertCounts(lambda: self.python("-c", COUNTER))

    def test_module(self):
        self.script("counter.py", COUNTER)
        self.assertCounts(lambda: self.python("-m", "counter"))

    def test_stdin(self):
        self.assertCounts(lambda: self.python(input=COUNTER))

    def test_environment_variable(self):
        self.assertCounts(lambda: self.python(
            "-c", COUNTER, pool=False, env={"PYTHONPMEM": self.path}))

    def test_interactive_session(self):
        # The REPL reads the pipe line by line (-i): a session whose
        # variables are there when the next one starts.
        session = "try: n\nexcept NameError: n = 0\n\nn += 1\nprint('n', n)\n"
        for expected in (1, 2, 3):
            proc = self.python("-i", input=session)
            self.assertIn(f"n {expected}\n", proc.stdout)
            self.assertIn(">>>", proc.stderr)

    def test_local_module_named_pmem(self):
        # The pool is opened with the standard library's pmem, before the
        # script's directory is on sys.path.
        self.script("pmem.py", "print('the local pmem')\n")
        path = self.script("counter.py", COUNTER)
        self.assertCounts(lambda: self.python(path))

    def test_ignored_without_environment(self):
        # -E and -I ignore PYTHONPMEM, as every PYTHON* variable.
        for flag in ("-E", "-I"):
            proc = self.python(flag, "-c", COUNTER, pool=False,
                               env={"PYTHONPMEM": self.path})
            self.assertEqual(proc.stdout, "1\n")
        self.assertFalse(os.path.exists(self.path))

    def test_documented(self):
        out = self.python("--help-xoptions", pool=False).stdout
        self.assertIn("-X pmem=PATH", out)
        out = self.python("--help-env", pool=False).stdout
        self.assertIn("PYTHONPMEM", out)
        out = self.python("-c", "import sys, pmem; "
                          "print(sys._xoptions['pmem'] == "
                          "pmem.current_pool().path)").stdout
        self.assertEqual(out, "True\n")

    def test_different_hash_seeds(self):
        # str hashes change from run to run; the dicts follow.
        source = """\
            if "words" not in globals():
                words = {}
            for w in "a bb ccc a bb a".split():
                words[w] = words.get(w, 0) + 1
            print(sorted(words.items()))
            """
        path = self.script("words.py", source)
        for seed, count in ((1, 3), (2, 6), (3, 9)):
            out = self.python(path, seed=seed).stdout
            self.assertEqual(out, f"[('a', {count}), ('bb', {count * 2 // 3})"
                                  f", ('ccc', {count // 3})]\n")


class PersistTests(MainPoolTestCase):
    """What persists, and what stays per run."""

    def test_word_frequencies(self):
        # Two runs over one file each give the totals of one run over both.
        texts = ["the cat sat on the mat\nthe end\n",
                 "a cat and a dog\non the mat\n"]
        files = []
        for i, text in enumerate(texts):
            files.append(self.script(f"text{i}.txt", text))
        source = """\
            import sys
            from collections import Counter
            if "counts" not in globals():
                counts = {}
                lines = 0
            for name in sys.argv[1:]:
                with open(name) as f:
                    for line in f:
                        lines += 1
                        for word in line.split():
                            counts[word] = counts.get(word, 0) + 1
            print(lines, sorted(counts.items()))
            """
        path = self.script("wc.py", source)
        self.python(path, files[0])
        two_runs = self.python(path, files[1]).stdout
        os.unlink(self.path)
        one_run = self.python(path, *files).stdout
        self.assertEqual(two_runs, one_run)
        self.assertTrue(one_run.startswith("4 [('a', 2), ('and', 1), "))

    def test_classes_of_the_program(self):
        source = """\
            import sys
            try:
                first
            except NameError:
                print("unbound before the class")
            class Account:
                def __init__(self, owner, balance=0):
                    self.owner = owner
                    self.balance = balance
            class Point:
                __slots__ = ("x", "y")
                def __init__(self, x, y):
                    self.x, self.y = x, y
            if "accounts" not in globals():
                accounts = {}
                points = []
                first = Account("zed")
            accounts.setdefault("alice", Account("alice")).balance += 10
            points.append(Point(len(points), -len(points)))
            assert type(first) is Account and first.owner == "zed"
            print(sorted((k, type(v).__name__, v.balance)
                         for k, v in accounts.items()),
                  [(type(p).__name__, p.x, p.y) for p in points])
            """
        path = self.script("bank.py", source)
        out = [self.python(path).stdout for _ in range(3)]
        self.assertEqual(out[0], "unbound before the class\n"
                                 "[('alice', 'Account', 10)] "
                                 "[('Point', 0, 0)]\n")
        self.assertEqual(out[2], "unbound before the class\n"
                                 "[('alice', 'Account', 30)] "
                                 "[('Point', 0, 0), ('Point', 1, -1), "
                                 "('Point', 2, -2)]\n")
        # Another program sees placeholders, which say what they wait for.
        ns = self.namespace()
        self.assertIn("placeholder for __main__:Account", ns["first"])

    def test_per_run_bindings(self):
        source = """\
            import os, json
            log = open(os.devnull)
            key = lambda x: -x
            gen = (i for i in range(3))
            for i in range(2):
                log = open(os.devnull)      # warned once
            def helper():
                return 1
            class Local:
                pass
            __version__ = "1.0"
            kept = [key(1), helper(), next(gen)]
            print(sorted(k for k in globals() if not k.startswith("__")))
            """
        path = self.script("perrun.py", source)
        proc = self.python(path)
        warned = [line for line in proc.stderr.splitlines()
                  if "NotPersistedWarning" in line]
        self.assertEqual(len(warned), 2, proc.stderr)
        self.assertIn("'log' is bound for this run only", warned[0])
        self.assertIn("'gen' is bound for this run only", warned[1])
        self.assertEqual(self.namespace(), {"i": "1", "kept": "[-1, 1, 0]"})
        proc = self.python("-c", "print(sorted(k for k in globals() "
                                 "if not k.startswith('__')))")
        self.assertEqual(proc.stdout, "['i', 'kept']\n")

    def test_refused_value_removes_the_old_binding(self):
        self.python("-c", "x = [1, 2]; y = 5")
        proc = self.python("-c", "x = open(__import__('os').devnull); "
                                 "del y")
        self.assertIn("NotPersistedWarning", proc.stderr)
        self.assertEqual(self.namespace(), {})

    def test_warning_filters(self):
        code = "import os; f = open(os.devnull); print('bound')"
        proc = self.python("-W", "ignore::pmem.NotPersistedWarning",
                           "-c", code)
        self.assertEqual((proc.stdout, proc.stderr), ("bound\n", ""))
        proc = self.python("-W", "error::pmem.NotPersistedWarning",
                           "-c", code, check=False)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("pmem.NotPersistedWarning: 'f' is bound", proc.stderr)

    def test_shared_mutable_is_per_run(self):
        # a = b = []: two names for one list; a pool refuses a shared
        # mutable, so both stay in this run (with a warning each).
        proc = self.python("-c", "a = b = []; a.append(1); print(b); "
                                 "c = []; c.append(2)")
        self.assertEqual(proc.stdout, "[1]\n")
        self.assertEqual(proc.stderr.count("NotPersistedWarning"), 2)
        self.assertEqual(self.namespace(), {"c": "[2]"})

    def test_moved_container_is_the_pools(self):
        code = """\
            import pmem
            counts = {}
            counts["a"] = [1]
            counts["a"].append(2)
            pool = pmem.current_pool()
            assert pmem.storage_of(counts) is pool
            assert pmem.storage_of(counts["a"]) is pool
            assert pool.ns.counts is counts
            assert pmem.storage_of(globals()) is None
            """
        self.python("-c", textwrap.dedent(code))
        self.assertEqual(self.namespace(), {"counts": "{'a': [1, 2]}"})

    def test_other_ways_to_bind(self):
        code = """\
            import sys
            globals()["a"] = 1
            setattr(sys.modules[__name__], "b", 2)
            globals().update(c=3, d=4)
            exec("e = 5")
            def f():
                global g
                g = 6
            f()
            globals().setdefault("h", 7)
            del globals()["a"]
            globals().pop("b")
            """
        self.python("-c", textwrap.dedent(code))
        self.assertEqual(self.namespace(),
                         {"c": "3", "d": "4", "e": "5", "g": "6", "h": "7"})
        self.python("-c", "globals().clear()")
        self.assertEqual(self.namespace(), {})

    def test_rebinding_leaves_other_references_alone(self):
        # A rebinding may give the pool's number or str its new value in
        # place, when nothing else refers to it: never when something
        # does (another name, a container, a dict's key).
        code = """\
            if "x" not in globals():
                x, f, s, z = 10**6, 1.5, "abc", 0
            for i in range(3):
                y = x
                held = [x, f, s]
                keys = {x: "k"}
                g, t = f, s
                x += 1
                f += 1.0
                s = s[:2] + chr(ord(s[2]) + 1)
                z = i                     # small ints
                assert (y, held, g, t, list(keys)) == (
                    x - 1, [x - 1, f - 1.0, t], f - 1.0, t, [x - 1])
            big = 2**40 if z else 7       # digits change
            print(x, f, s, z, y, held, g, t, keys, big)
            """
        first = self.python("-c", textwrap.dedent(code)).stdout
        self.assertEqual(first, "1000003 4.5 abf 2 1000002 "
                                "[1000002, 3.5, 'abe'] 3.5 abe "
                                "{1000002: 'k'} 1099511627776\n")
        second = self.python("-c", textwrap.dedent(code)).stdout
        self.assertEqual(second, "1000006 7.5 abi 2 1000005 "
                                 "[1000005, 6.5, 'abh'] 6.5 abh "
                                 "{1000005: 'k'} 1099511627776\n")
        ns = self.namespace()
        self.assertEqual((ns["x"], ns["y"], ns["f"], ns["g"], ns["s"],
                          ns["held"]),
                         ("1000006", "1000005", "7.5", "6.5", "'abi'",
                          "[1000005, 6.5, 'abh']"))

    def test_numbers_that_change_digits(self):
        # An int whose number of digits changes (crossing 2**30, turning
        # negative, growing past two digits) is rebound outside any
        # transaction: written into another block of the pool, which the
        # binding then refers to; other references keep their values.
        code = """\
            try:
                n
            except NameError:
                n, seen = 1, []
            for i in range(40):
                n = (n * 1103515245 + 12345) % 2**31 - 2**30
                if i % 7 == 0:
                    seen.append(n)        # held elsewhere too
                if i % 13 == 0:
                    n = n * 2**40         # three digits
                    n //= 2**40
            print(n, len(seen), sum(seen))
            """
        model_n, model_seen = 1, []
        expected = []
        for run in range(2):
            for i in range(40):
                model_n = (model_n * 1103515245 + 12345) % 2**31 - 2**30
                if i % 7 == 0:
                    model_seen.append(model_n)
            expected.append(f"{model_n} {len(model_seen)} "
                            f"{sum(model_seen)}\n")
        outputs = [self.python("-c", textwrap.dedent(code)).stdout
                   for run in range(2)]
        self.assertEqual(outputs, expected)
        ns = self.namespace()
        self.assertEqual((ns["n"], ns["seen"]),
                         (str(model_n), repr(model_seen)))

    def test_many_names(self):
        # Resizes of __main__'s dict, and an update of many names.
        code = """\
            for i in range(300):
                globals()[f"v{i}"] = i * 2
            globals().update({f"w{i}": str(i) for i in range(300)})
            """
        self.python("-c", textwrap.dedent(code))
        out = self.python("-c", "print(v299, w299, len([k for k in "
                                "globals() if k[0] in 'vw']))").stdout
        self.assertEqual(out, "598 299 600\n")


class TransactionTests(MainPoolTestCase):

    def test_block_rolled_back(self):
        code = """\
            import pmem
            if "x" not in globals():
                x = 1
                d = {"k": 0}
            try:
                with pmem.transaction():
                    x = 2
                    y = "new"
                    d["k"] = 1
                    del d["k"]
                    f = open(__import__("os").devnull)
                    raise ValueError
            except ValueError:
                pass
            print(x, d, "y" in globals(), "f" in globals())
            """
        path = self.script("tx.py", code)
        self.assertEqual(self.python(path).stdout, "1 {'k': 0} False False\n")
        self.assertEqual(self.namespace(), {"d": "{'k': 0}", "x": "1"})

    def test_failed_operation_is_undone_whole(self):
        # An operation on several names that fails at one of them (here a
        # refused value whose warning is an error) changes none, also
        # inside a block that goes on.
        code = """\
            import os, pmem
            n = 10**6
            with pmem.transaction():
                try:
                    globals().update(n=n + 1, f=open(os.devnull))
                except pmem.NotPersistedWarning:
                    pass
            print(n, "f" in globals())
            """
        out = self.python("-W", "error::pmem.NotPersistedWarning", "-c",
                          textwrap.dedent(code)).stdout
        self.assertEqual(out, "1000000 False\n")
        self.assertEqual(self.namespace()["n"], "1000000")

    def test_savepoint(self):
        code = """\
            import pmem
            with pmem.transaction():
                a = 1
                try:
                    with pmem.transaction():
                        a = 2
                        b = [a]
                        raise KeyError
                except KeyError:
                    pass
                c = a + 10
            print(a, "b" in globals(), c)
            """
        self.assertEqual(self.python("-c", textwrap.dedent(code)).stdout,
                         "1 False 11\n")
        self.assertEqual(self.namespace(), {"a": "1", "c": "11"})

    def test_current_pool_and_transaction_without_mode(self):
        code = """\
            import pmem
            assert pmem.current_pool() is None
            try:
                pmem.transaction()
            except pmem.PoolError as e:
                print("refused")
            pool = pmem.open(%r)
            assert pmem.transaction() is pool
            """ % self.path
        out = self.python("-c", textwrap.dedent(code), pool=False).stdout
        self.assertEqual(out, "refused\n")

    def test_pool_does_not_close(self):
        code = """\
            import pmem
            try:
                pmem.current_pool().close()
            except pmem.PoolError as e:
                print("refused")
            n = 1
            """
        out = self.python("-c", textwrap.dedent(code)).stdout
        self.assertEqual(out, "refused\n")
        self.assertEqual(self.namespace(), {"n": "1"})

    def test_kills(self):
        # Killed at random points, start-up included: a transfer is
        # all or nothing.
        code = """\
            import pmem
            if "accounts" not in globals():
                accounts = {i: 100 for i in range(20)}
                transfers = 0
            while True:
                a, b = transfers % 20, transfers * 7 % 20
                with pmem.transaction():
                    accounts[a] -= 3
                    accounts[b] += 3
                    transfers += 1
            """
        for _ in self.killed_runs(code, (0.0, 0.005, 0.02, 0.05, 0.1, 0.15,
                                         0.2, 0.3)):
            pass
        ns = self.namespace()
        self.assertEqual(sum(eval(ns["accounts"]).values()), 2000)
        self.assertGreater(int(ns["transfers"]), 0)


class ProcessTests(MainPoolTestCase):

    def assertStopsUnchanged(self, message):
        """A program run with the pool at self.path does not run: one line
        that says message, exit status 1, the file as it was."""
        with open(self.path, "rb") as f:
            before = f.read()
        proc = self.python("-c", "print('ran')", check=False)
        self.assertEqual((proc.returncode, proc.stdout), (1, ""))
        self.assertEqual(len(proc.stderr.splitlines()), 1, proc.stderr)
        self.assertIn(message, proc.stderr)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_bad_pools(self):
        # A file that is not a pool, a pool held by another process.
        with open(self.path, "wb") as f:
            f.write(b"root:x:0:0:root:/root:/bin/bash\n" * 100)
        self.assertStopsUnchanged(
            "PoolError: '%s' is not a pmem-python pool" % self.path)
        os.unlink(self.path)

        self.python("-c", "n = 1")
        holder = subprocess.Popen(
            [sys.executable, "-X", f"pmem={self.path}", "-c",
             "import sys; print('open', flush=True); sys.stdin.read()"],
            env=dict(os.environ, **FAST_FLUSH), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        self.addCleanup(holder.wait)
        self.addCleanup(holder.stdin.close)
        self.assertEqual(holder.stdout.readline(), "open\n")
        self.assertStopsUnchanged("open in another process")

        for option in ("pmem=", "pmem"):
            proc = self.python("-X", option, "-c", "pass", pool=False,
                               check=False)
            self.assertEqual(proc.returncode, 1)
            self.assertIn("-X pmem=PATH", proc.stderr)

    def test_children_run_without_the_pool(self):
        code = """\
            import multiprocessing, os, subprocess, sys
            def work(x):
                return x * 2
            if __name__ == "__main__":
                print(os.environ.get("PYTHONPMEM"))
                out = subprocess.run([sys.executable, "-c", "n = 5; print(n)"],
                                     capture_output=True, text=True)
                print(out.returncode, out.stdout.strip())
                del out
                ctx = multiprocessing.get_context("spawn")
                with ctx.Pool(2) as workers:
                    print(workers.map(work, [1, 2]))
                results = [1, 2]
            """
        path = self.script("children.py", code)
        out = self.python(path, pool=False,
                          env={"PYTHONPMEM": self.path}).stdout
        self.assertEqual(out, "None\n0 5\n[2, 4]\n")
        self.assertEqual(self.namespace(), {"results": "[1, 2]"})

    def test_fork(self):
        # A forked child binds variables for itself; the pool is the
        # parent's.
        code = """\
            import os
            n = 1
            pid = os.fork()
            if pid == 0:
                n = 2
                m = 3
                os._exit(0 if (n, m) == (2, 3) else 1)
            _, status = os.waitpid(pid, 0)
            assert status == 0, status
            k = 4
            """
        self.python("-c", textwrap.dedent(code))
        ns = self.namespace()
        self.assertEqual((ns["n"], ns["k"], "m" in ns), ("1", "4", False))

    def test_threads(self):
        code = """\
            import threading
            shared = []
            def work(t):
                global last
                for i in range(500):
                    shared.append(i)
                    globals()[f"t{t}"] = i
                    last = t
            threads = [threading.Thread(target=work, args=(t,))
                       for t in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
            print(len(shared))
            """
        self.assertEqual(self.python("-c", textwrap.dedent(code)).stdout,
                         "2000\n")
        ns = self.namespace()
        self.assertEqual([ns[f"t{t}"] for t in range(4)], ["499"] * 4)
        self.assertEqual(len(eval(ns["shared"])), 2000)

    def test_global_loads_stay_specialized(self):
        code = """\
            import dis, io
            table = {"a": 1}
            def f():
                return len(table)
            for _ in range(100):
                f()
            out = io.StringIO()
            dis.dis(f, adaptive=True, file=out)
            print("LOAD_GLOBAL_MODULE" in out.getvalue(),
                  "LOAD_GLOBAL_BUILTIN" in out.getvalue())
            """
        self.assertEqual(self.python("-c", textwrap.dedent(code)).stdout,
                         "True True\n")


class JournalTests(MainPoolTestCase):
    """Bindings outside transactions whose stores go into the pool's
    journal: a number or short str of the pool given a new value, a
    static object bound again (Modules/_pmem/mainns.c, "the journal")."""

    # More bindings than the journal holds (it is applied on the way),
    # of the kinds it takes: ints (1 to 3 digits, small ones), a float, a
    # str of one length, a static object.
    LOOP = """\
        try:
            n
        except NameError:
            n, big, f, s, z = 10**6, 2**40, 0.5, "aaaa", None
        for i in range(3000):
            n += 1
            big -= 1
            f += 1.0
            s = "%04d" % i
            z = i % 50
        """

    def expected(self, runs):
        n, big, f = 10**6 + 3000 * runs, 2**40 - 3000 * runs, 0.5 + 3000 * runs
        return {"n": str(n), "big": str(big), "f": repr(f), "s": "'2999'",
                "z": "49", "i": "2999"}

    def test_applied_at_exit(self):
        self.python("-c", textwrap.dedent(self.LOOP))
        self.python("-c", textwrap.dedent(self.LOOP))
        self.assertEqual(self.namespace(), self.expected(2))

    def test_applied_by_the_next_open(self):
        # os._exit() skips the exit's application of the journal: the
        # next open applies what it holds.
        code = textwrap.dedent(self.LOOP) + "import os; os._exit(0)\n"
        self.python("-c", code)
        self.assertEqual(self.namespace(), self.expected(1))
        self.python("-c", code)
        self.assertEqual(self.namespace(), self.expected(2))

    def test_read_only_open_applies_it_in_its_copy(self):
        code = textwrap.dedent(self.LOOP) + "import os; os._exit(0)\n"
        self.python("-c", code)
        with open(self.path, "rb") as f:
            before = f.read()
        out = self.python("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({self.path!r}, readonly=True)
            print(pool.ns.n, pool.ns.s, pool.ns.z)
            """), pool=False).stdout
        self.assertEqual(out, "1003000 2999 49\n")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)    # the file is untouched
        self.assertEqual(self.namespace(), self.expected(1))

    def test_on_an_ordinary_file(self):
        # Flushes are msync()s there.
        env = {"PMEM_IS_PMEM_FORCE": "0"}
        code = textwrap.dedent(self.LOOP) + "import os; os._exit(0)\n"
        self.python("-c", code, env=env)
        self.python("-c", textwrap.dedent(self.LOOP), env=env)
        self.assertEqual(self.namespace(), self.expected(2))

    def test_pool_namespace_reads_the_last_values(self):
        code = """\
            import pmem
            n, s = 10**6, "abc"
            for i in range(5):
                n += 1
                s = "ab" + "cdefg"[i]
            ns = pmem.current_pool().ns
            print(ns.n, ns.s, ns.__dict__["n"])
            n += 1
            print(pmem.current_pool().ns.n, n)
            other = pmem.open("other.pool")
            n += 1
            with other:               # a transaction of another pool
                other.ns.copy = pmem.current_pool().ns.n
            print(other.ns.copy)
            """
        out = self.python("-c", textwrap.dedent(code)).stdout
        self.assertEqual(out, "1000005 abg 1000005\n1000006 1000006\n"
                              "1000007\n")

    def test_journaled_names_in_transactions(self):
        # A block that raises after changing journaled names gives them
        # back their last values; one that commits keeps its own.
        code = """\
            import pmem
            n, m, z = 10**6, 10**6, 1
            for i in range(10):
                n += 1
                m += 2
                z = i
            try:
                with pmem.transaction():
                    n = [n]
                    m += 1
                    del z
                    raise ValueError
            except ValueError:
                pass
            print(n, m, z)
            with pmem.transaction():
                m += 1
                z = "z"
            n += 1
            print(n, m, z)
            """
        out = self.python("-c", textwrap.dedent(code)).stdout
        self.assertEqual(out, "1000010 1000020 9\n1000011 1000021 z\n")
        self.assertEqual(self.namespace(),
                         {"n": "1000011", "m": "1000021", "z": "'z'",
                          "i": "9"})

    def test_other_operations_on_journaled_names(self):
        code = """\
            n, f, a = 10**6, 1.5, 7
            for i in range(4):
                n += 1
                f *= 2
                a = i
            del n
            f = [f]
            globals().update(a="a", b=a)
            for i in range(300):          # __main__'s dict grows
                globals()[f"v{i}"] = i
            print("n" in globals(), f, a, b)
            """
        out = self.python("-c", textwrap.dedent(code)).stdout
        self.assertEqual(out, "False [24.0] a 3\n")
        ns = self.namespace()
        self.assertEqual((ns.get("n"), ns["f"], ns["a"], ns["b"]),
                         (None, "[24.0]", "'a'", "3"))

    def test_kills_keep_a_prefix(self):
        # Killed at random points: b is bound after a, c after b, each
        # outside any transaction; the pool holds the bindings of a
        # prefix of the statements.
        code = """\
            if "a" not in globals():
                a = b = c = 0
            while True:
                a = c + 1
                b = float(a)
                c = a
            """
        for _ in self.killed_runs(code, (0.0, 0.01, 0.03, 0.06, 0.1, 0.15,
                                         0.2, 0.3)):
            if not os.path.exists(self.path):
                continue              # killed before it made the pool
            ns = self.namespace()
            if "c" not in ns:
                continue              # before the first binding
            a, b, c = int(ns["a"]), float(ns["b"]), int(ns["c"])
            self.assertIn((a - c, b), [(0, float(a)), (1, float(c)),
                                       (1, float(a))], ns)
        self.assertGreater(a, 0)


if __name__ == "__main__":
    unittest.main()
