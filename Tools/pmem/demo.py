"""pmem-python's demo.

For now it shows the interpreter and the storage managers that this build
was configured with.  The bank demo of DESIGN §1 replaces it once pools
exist (issue 4).
"""

import sys
import sysconfig


def main():
    print(f"interpreter: {sys.executable}")
    print(f"version:     Python {sys.version}")
    print("storage managers:")
    print("  dram     the default: ordinary memory, hooks are no-ops")
    for name, define, library in (
            ("pmem", "WITH_PMEM", "libpmemobj"),
            ("memkind", "WITH_MEMKIND", "libmemkind")):
        state = ("configured" if sysconfig.get_config_var(define)
                 else "not configured")
        print(f"  {name:<8s} {state} ({library})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
