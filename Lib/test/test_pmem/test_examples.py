"""The example programs of Tools/pmem/examples, run as their users run
them: each command in a new interpreter, the pool read back by another.

todo.py is an unmodified program whose tasks persist under python -X
pmem; memo.py a memoizing decorator whose cache a second process finds;
jobqueue.py a job queue whose writer is killed part-way, then finishes
with exactly one result for each job.

The examples are found from this file's real path: in the build tree it
is a link to the repository's, whose root holds Tools/.
"""

import ast
import math
import os
import re
import signal
import subprocess
import sys
import unittest
from test import support
from test.test_pmem.util import FAST_FLUSH, PoolTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__)))))
EXAMPLES = os.path.join(ROOT, "Tools", "pmem", "examples")


def setUpModule():
    if not os.path.isdir(EXAMPLES):
        raise unittest.SkipTest(f"no examples at {EXAMPLES}")


class ExampleTestCase(PoolTestCase):

    def command(self, name, *args, xpmem=None):
        """The argv and environment that run example name with args, as a
        user does (python -X pmem=xpmem when given)."""
        env = dict(os.environ, **FAST_FLUSH)
        for variable in ("PYTHONPMEM", "PYTHONPATH", "PYTHONWARNINGS"):
            env.pop(variable, None)
        option = ["-X", f"pmem={xpmem}"] if xpmem else []
        script = os.path.join(EXAMPLES, name)
        return [sys.executable, *option, script, *args], env

    def example(self, name, *args, xpmem=None, status=0):
        """Run example name with args in self.dir; its CompletedProcess,
        once it has ended with status."""
        argv, env = self.command(name, *args, xpmem=xpmem)
        proc = subprocess.run(argv, env=env, cwd=self.dir,
                              capture_output=True, text=True,
                              timeout=support.LONG_TIMEOUT)
        self.assertEqual(proc.returncode, status, proc.stderr)
        return proc


class TodoTests(ExampleTestCase):
    """python -X pmem=todo.pool todo.py ...: a program that does not
    know about pools keeps its tasks from run to run."""

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.dir, "todo.pool")

    def todo(self, *args, status=0):
        proc = self.example("todo.py", *args, xpmem="todo.pool",
                            status=status)
        if status == 0:
            # Nothing but the tasks is bound in the pool: no warning
            # about a value kept for one run only.
            self.assertEqual(proc.stderr, "")
        return proc.stdout

    def test_tasks_survive_restarts(self):
        self.assertEqual(self.todo("add", "buy milk"),
                         "added task 1: buy milk\n")
        self.assertEqual(self.todo("add", "call mum"),
                         "added task 2: call mum\n")
        self.assertEqual(self.todo("done", "1"), "done: buy milk\n")
        self.assertEqual(self.todo("list"),
                         "1. [x] buy milk\n2. [ ] call mum\n")
        # Another program finds the tasks in the pool's namespace, and
        # nothing else of the program's.
        out = self.run_in_new_process(f"""
            import pmem
            print(vars(pmem.open({self.path!r}, readonly=True).ns))
            """, seed=1)
        self.assertEqual(ast.literal_eval(out), {"tasks": [
            {"text": "buy milk", "done": True},
            {"text": "call mum", "done": False}]})
        # A task that does not exist: an error, and nothing changes.
        self.todo("done", "3", status=2)
        self.assertEqual(self.todo("list"),
                         "1. [x] buy milk\n2. [ ] call mum\n")

    def test_without_a_pool_it_forgets(self):
        for _ in range(2):
            proc = self.example("todo.py", "add", "buy milk")
            self.assertEqual(proc.stdout, "added task 1: buy milk\n")
        proc = self.example("todo.py", "list")
        self.assertEqual(proc.stdout, "nothing to do\n")
        self.assertFalse(os.path.exists(self.path))


class MemoTests(ExampleTestCase):
    """@persistent_cache(pool): a second process gets the results that
    the first computed, without calling the function."""

    def test_second_process_uses_the_cache(self):
        first = self.example("memo.py", self.path, "1000", "10000")
        self.assertEqual(first.stderr,
                         "computing longest_collatz(1000)...\n"
                         "computing longest_collatz(10000)...\n")
        lines = first.stdout.splitlines()
        self.assertEqual(lines[:2], ["below 1000: 871 (178 steps)",
                                     "below 10000: 6171 (261 steps)"])
        self.assertRegex(lines[2], r"^2 computed, 0 from the cache, "
                                   r"2 cached, [\d.]+ s$")
        # The function prints when it runs: here only for the new limit.
        second = self.example("memo.py", self.path, "10000", "100", "1000")
        self.assertEqual(second.stderr,
                         "computing longest_collatz(100)...\n")
        lines = second.stdout.splitlines()
        self.assertEqual(lines[:3], ["below 10000: 6171 (261 steps)",
                                     "below 100: 97 (118 steps)",
                                     "below 1000: 871 (178 steps)"])
        self.assertRegex(lines[3], r"^1 computed, 2 from the cache, "
                                   r"3 cached, [\d.]+ s$")

    def test_decorator(self):
        # Each call that really runs appends a line to a file; the same
        # calls in a second process (another hash seed) run none of them
        # again, but the one that raised, which stored nothing.
        calls = os.path.join(self.dir, "calls.txt")
        code = f"""
            import sys
            import pmem
            sys.path.insert(0, {EXAMPLES!r})
            from memo import persistent_cache

            pool = pmem.open({self.path!r})

            def log(*args):
                with open({calls!r}, "a") as f:
                    print(*args, file=f)

            @persistent_cache(pool)
            def power(base, exp=2):
                log("power", base, exp)
                return base ** exp

            @persistent_cache(pool, name="squares")
            def squares(n):
                log("squares", n)
                if n < 0:
                    raise ValueError(n)
                return {{i: [i * i] for i in range(n)}}

            print(power(3), power(3, exp=3), power(3), power(2, 100),
                  power(1.5))
            result = squares(3)
            print(result, pmem.storage_of(result) is pool,
                  squares(3) is result)
            try:
                squares(-1)
            except ValueError:
                print("raised")
            try:
                power([1])
            except TypeError:
                print("unhashable")
            print(power.cache_info(), squares.cache_info())
            print(sorted(pool.ns.memo))
            """
        first = self.run_in_new_process(code, seed=1)
        expected = ("9 27 9 1267650600228229401496703205376 2.25\n"
                    "{0: [0], 1: [1], 2: [4]} True True\n"
                    "raised\nunhashable\n")
        self.assertEqual(first, expected +
                         "CacheInfo(hits=1, misses=4, currsize=4) "
                         "CacheInfo(hits=1, misses=2, currsize=1)\n"
                         "['__main__.power', 'squares']\n")
        second = self.run_in_new_process(code, seed=2)
        self.assertEqual(second, expected +
                         "CacheInfo(hits=5, misses=0, currsize=4) "
                         "CacheInfo(hits=2, misses=1, currsize=1)\n"
                         "['__main__.power', 'squares']\n")
        with open(calls) as f:
            self.assertEqual(f.read().splitlines(), [
                "power 3 2", "power 3 3", "power 2 100", "power 1.5 2",
                "squares 3", "squares -1", "squares -1"])


def is_prime(n):
    """Miller-Rabin with the bases that decide every n < 3.3 * 10**24."""
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n < 2:
        return False
    if n in bases:
        return True
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


class JobQueueTests(ExampleTestCase):
    """jobqueue.py: its writer killed part-way and run again, every job
    has exactly one correct result."""

    # About 40 ms of trial division each, at most: a run of 3 workers
    # takes a second or so.
    NUMBERS = [10**14 + i for i in range(40)]
    RESULT = re.compile(r"^job (\d+): (\d+) = (\d+(?: \* \d+)*)$")

    def setUp(self):
        super().setUp()
        proc = self.jobqueue("submit", *map(str, self.NUMBERS))
        self.assertEqual(proc.stdout, "submitted 40 jobs; 40 queued\n")

    def jobqueue(self, *args, status=0):
        return self.example("jobqueue.py", self.path, *args, status=status)

    def printed(self, lines):
        """The jobs of the result lines that the writer printed, each
        checked."""
        jobs = []
        for line in lines:
            match = self.RESULT.match(line)
            if match:
                job = int(match[1])
                self.assertEqual(int(match[2]), self.NUMBERS[job])
                jobs.append(job)
        return jobs

    def state(self):
        """(results, queue) of the pool, as another process reads it."""
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, readonly=True)
            print(list(pool.ns.results))
            print(dict(pool.ns.queue))
            """, seed=3)
        results, queue = map(ast.literal_eval, out.splitlines())
        return results, queue

    def assertConsistent(self, printed=()):
        """Every job is either queued or has exactly one correct result
        (never both, never neither), and those printed have one; the
        pool's (results, queue)."""
        results, queue = self.state()
        done = [job for job, _, _ in results]
        self.assertEqual(len(done), len(set(done)),
                         f"a job recorded twice: {sorted(done)}")
        self.assertEqual(sorted(done + list(queue)), list(range(40)),
                         "a job lost, or recorded and still queued")
        for job, number in queue.items():
            self.assertEqual(number, self.NUMBERS[job])
        for job, number, factors in results:
            self.assertEqual(number, self.NUMBERS[job])
            self.assertEqual(math.prod(factors), number)
            self.assertEqual(list(factors), sorted(factors))
            self.assertTrue(all(map(is_prime, factors)), factors)
        self.assertLessEqual(set(printed), set(done))
        return results, queue

    def killed_run(self, after):
        """Run the writer, and SIGKILL it once it has printed after
        results; the jobs that it printed."""
        argv, env = self.command("jobqueue.py", self.path, "run",
                                 "--workers", "3")
        proc = subprocess.Popen(argv, env=env, cwd=self.dir,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        lines = [proc.stdout.readline() for _ in range(after)]
        proc.send_signal(signal.SIGKILL)
        # The workers share the writer's stdout and stderr: their end
        # comes once the workers have seen the writer die, and exited
        # quietly.
        rest, errors = proc.communicate(timeout=support.LONG_TIMEOUT)
        self.assertEqual((proc.returncode, errors), (-signal.SIGKILL, ""))
        printed = self.printed(lines + rest.splitlines())
        self.assertEqual(len(printed), len(lines + rest.splitlines()))
        self.assertGreaterEqual(len(printed), after)
        return printed

    def finish(self):
        """Run the writer to its end, then check that every job has
        exactly one correct result, which show prints."""
        proc = self.jobqueue("run", "--workers", "3")
        lines = proc.stdout.splitlines()
        self.assertEqual(lines[-1], f"recorded {len(lines) - 1} results; "
                                    f"0 jobs queued")
        results, queue = self.assertConsistent(self.printed(lines))
        self.assertEqual((len(results), queue), (40, {}))
        lines = self.jobqueue("show").stdout.splitlines()
        self.assertEqual(self.printed(lines), list(range(40)))
        self.assertEqual(lines[-1], "40 done, 0 queued")

    def test_killed_writer(self):
        # Killed twice at whatever point it has reached after some
        # results (waiting for the workers, recording, printing).
        recorded = 0
        for after in (8, 8):
            printed = self.killed_run(after)
            results, queue = self.assertConsistent(printed)
            self.assertGreater(len(results), recorded)
            self.assertTrue(queue, "the writer ended before its kill")
            recorded = len(results)
        self.finish()

    def test_killed_while_recording(self):
        # Killed in the middle of the transaction of its 5th result:
        # that result is not in the pool, and its job is still queued.
        proc = self.jobqueue("run", "--crash-after", "5",
                             status=-signal.SIGKILL)
        printed = self.printed(proc.stdout.splitlines())
        self.assertEqual(len(printed), 4)
        results, queue = self.assertConsistent(printed)
        self.assertEqual((len(results), len(queue)), (4, 36))
        self.finish()


if __name__ == "__main__":
    unittest.main()
