"""A crash-safe job queue: one writer process, worker processes, a pool.

    python Tools/pmem/examples/jobqueue.py jobs.pool submit \\
        $(seq 1000000000000 1000000000039)
    python Tools/pmem/examples/jobqueue.py jobs.pool run --workers 3
    python Tools/pmem/examples/jobqueue.py jobs.pool show

submit puts jobs -- numbers to factor -- in the queue of the pool
jobs.pool (made by the first submit); run factors every number still
queued, with worker processes, and prints each result once it is
recorded; show prints the results.  Kill run at any moment (Ctrl-C,
kill -9) and run it again: it finishes the jobs that are left, and every
job has exactly one result.

How:

* The pool holds the queue, pool.ns.queue = {job: number}, the jobs not
  done yet; the results, pool.ns.results = [(job, number, factors)], in
  the order they were recorded; and pool.ns.next_job, the number that
  the next job submitted gets.
* run is the pool's one writer.  It starts the workers and hands each a
  job over a pipe; a worker factors the number, sends the factors back
  and waits for the next job.  Workers never open the pool.  For each
  result, the writer appends it to the results and takes its job out of
  the queue in one transaction (``with pool:``), so that after a crash
  both have happened or neither has: the next run hands out again the
  jobs still queued -- those that the workers were computing, and the
  one whose recording the crash interrupted -- and nothing else.  In two
  transactions, a crash between them would leave a job recorded and
  still queued, which the next run would record again (or, the other
  way round, a job gone from the queue and never recorded).
* The workers are started with multiprocessing's "spawn" method: new
  interpreters, which have nothing of the pool.  A forked worker (the
  "fork" method, Linux's default before Python 3.14) would get a copy of
  each pool open at the fork, which it could only read and which costs
  a second or so per gigabyte of data to make.  A worker sees the writer
  die (its pipe gives EOF) and exits.
* One writer at a time: while run runs, submit (or a second run) fails
  with pmem.PoolError.  show opens the pool read-only (readonly=True), as
  any number of processes can while no process writes it.
* run --crash-after N kills run itself (SIGKILL) half-way through
  recording its Nth result, after the append and before the job leaves
  the queue: the next run finds that transaction undone, and computes
  the job again.
"""

import argparse
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys

import pmem


def factorize(n):
    """The prime factors of n > 0, smallest first (trial division)."""
    factors = []
    divisor = 2
    while divisor * divisor <= n:
        while n % divisor == 0:
            factors.append(divisor)
            n //= divisor
        divisor += 1 if divisor == 2 else 2
    if n > 1:
        factors.append(n)
    return tuple(factors)


def work(conn):
    """A worker: factor each (job, number) that the writer sends over
    conn, and send back (job, factors), until the writer hangs up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the writer's
    with conn:
        while True:
            try:
                job, number = conn.recv()
                conn.send((job, factorize(number)))
            except (EOFError, ConnectionError):
                return          # the writer is done, or dead


def submit(path, numbers):
    pool = pmem.open(path)
    with pool:                  # all the jobs, or none
        if not hasattr(pool.ns, "queue"):
            pool.ns.queue = {}
            pool.ns.results = []
            pool.ns.next_job = 0
        for number in numbers:
            pool.ns.queue[pool.ns.next_job] = number
            pool.ns.next_job += 1
    print(f"submitted {len(numbers)} jobs; {len(pool.ns.queue)} queued")


def run(path, workers, crash_after=None):
    pool = pmem.open(path, create=False)
    queue, results = pool.ns.queue, pool.ns.results
    jobs = iter(list(queue.items()))    # what is queued as the run starts
    busy = {}                           # a worker's pipe: its job
    processes = []
    recorded = 0

    def hand_out(conn):
        """Send conn's worker the next job, or hang up: no jobs are left."""
        job = next(jobs, None)
        if job is None:
            conn.close()
            busy.pop(conn, None)
        else:
            conn.send(job)
            busy[conn] = job[0]

    spawn = multiprocessing.get_context("spawn")
    try:
        for _ in range(min(workers, len(queue))):
            conn, child_conn = spawn.Pipe()
            process = spawn.Process(target=work, args=(child_conn,))
            process.start()
            child_conn.close()
            processes.append(process)
            hand_out(conn)
        while busy:
            for conn in multiprocessing.connection.wait(list(busy)):
                try:
                    job, factors = conn.recv()
                except (EOFError, ConnectionError):
                    raise RuntimeError(f"the worker of job {busy[conn]} "
                                       f"died; run again") from None
                number = queue[job]
                with pool:              # one transaction: both, or neither
                    results.append((job, number, factors))
                    if recorded + 1 == crash_after:
                        os.kill(os.getpid(), signal.SIGKILL)
                    del queue[job]
                recorded += 1
                print(f"job {job}: {number} = "
                      f"{' * '.join(map(str, factors))}", flush=True)
                hand_out(conn)
    finally:
        for conn in busy:
            conn.close()
        for process in processes:
            process.join()
    print(f"recorded {recorded} results; {len(queue)} jobs queued")


def show(path):
    pool = pmem.open(path, readonly=True)
    for job, number, factors in sorted(pool.ns.results):
        print(f"job {job}: {number} = {' * '.join(map(str, factors))}")
    print(f"{len(pool.ns.results)} done, {len(pool.ns.queue)} queued")


def positive(text):
    number = int(text)
    if number < 1:
        raise ValueError(text)
    return number


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="A crash-safe job queue of numbers to factor.")
    parser.add_argument("pool", help="the pool file")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("submit", help="queue numbers to factor")
    command.add_argument("numbers", nargs="+", type=positive, metavar="N")
    command = commands.add_parser("run", help="factor the queued numbers")
    command.add_argument("--workers", type=positive, default=3)
    command.add_argument("--crash-after", type=positive, metavar="N",
                         help="SIGKILL this process in the middle of "
                              "recording its Nth result")
    commands.add_parser("show", help="print the results")
    args = parser.parse_args(argv)
    if args.command == "submit":
        submit(args.pool, args.numbers)
    elif args.command == "run":
        try:
            run(args.pool, args.workers, args.crash_after)
        except KeyboardInterrupt:
            # The transaction that Ctrl-C interrupted, if any, is undone.
            sys.exit("interrupted: run again to finish the queued jobs")
    else:
        show(args.pool)


if __name__ == "__main__":
    main()
