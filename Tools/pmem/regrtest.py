"""Run regrtest, print a one-line summary, compare with a baseline.

Usage:
    python Tools/pmem/regrtest.py [--baseline FILE | --write-failures FILE]
                                  [regrtest options and tests...]

Everything but our two options goes to ``python -m test`` unchanged.  The
last line printed is ``regrtest: N passed, N failed, N skipped``.

--baseline FILE
    FILE lists the tests that fail on stock CPython (make stock) on this machine,
    one per line (``#`` starts a comment that gives the reason).  Failures
    of those tests are expected and are not run again; any other failure
    is run once more, verbosely, in a new process, and counts as new if it
    fails again.  Only new failures make the exit status non-zero.
--write-failures FILE
    Write the names of the failed tests to FILE, in the baseline's format,
    for a person to annotate and commit.
"""

import faulthandler
import subprocess
import sys

from test.libregrtest.cmdline import _parse_args
from test.libregrtest.main import Regrtest


def read_baseline(path):
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            name = line.split("#", 1)[0].strip()
            if name:
                names.add(name)
    return names


def rerun(tests, args):
    """Run the failed tests again, verbosely; return those that fail."""
    timeout = [arg for arg in args if arg.startswith("--timeout")]
    still = []
    for name in tests:
        print(f"regrtest: running {name} again, verbosely", flush=True)
        proc = subprocess.run([sys.executable, "-m", "test", "-v",
                               *timeout, name])
        if proc.returncode != 0:
            still.append(name)
    return still


def main(argv):
    baseline = write_failures = None
    args = []
    it = iter(argv)
    for arg in it:
        if arg == "--baseline":
            baseline = next(it)
        elif arg == "--write-failures":
            write_failures = next(it)
        else:
            args.append(arg)

    regrtest = Regrtest(_parse_args(args))
    try:
        regrtest.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    # regrtest arms a watchdog for the exit; we still have work to do.
    faulthandler.cancel_dump_traceback_later()

    results = regrtest.results
    failed = sorted(set(results.bad))
    passed = len(results.good)
    skipped = len(set(results.skipped) | set(results.resource_denied))
    print()
    if write_failures:
        with open(write_failures, "w", encoding="utf-8") as f:
            for name in failed:
                print(name, file=f)
        print(f"regrtest: wrote {len(failed)} failed tests to {write_failures}")
    if baseline:
        expected = read_baseline(baseline)
        first = [name for name in failed if name not in expected]
        new = rerun(first, args) if first else []
        recovered = [name for name in first if name not in new]
        failed = [name for name in failed if name not in recovered]
        passed += len(recovered)
        gone = sorted(expected - set(failed) - set(results.skipped))
        if gone:
            print("regrtest: failing on stock but passing here:",
                  " ".join(gone))
        if recovered:
            print("regrtest: failed once, passed when run again:",
                  " ".join(recovered))
        if new:
            print("regrtest: NEW failures against stock:",
                  " ".join(new))
            code = 1
        else:
            known = [name for name in failed if name in expected]
            print(f"regrtest: no new failures against stock "
                  f"(expected: {' '.join(known) or 'none'})")
            if not results.interrupted:
                code = 0
    if results.interrupted:
        code = code or 130
    print(f"regrtest: {passed} passed, {len(failed)} failed, "
          f"{skipped} skipped")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
