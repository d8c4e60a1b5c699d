"""The interpreter is the fork, built with the options it was asked for."""

import importlib.util
import platform
import sys
import sysconfig
import unittest


class VersionTests(unittest.TestCase):

    def test_version_names_the_fork(self):
        self.assertEqual(sys.version.split()[0], "3.13.5+pmem")
        self.assertEqual(platform.python_version(), "3.13.5+pmem")

    def test_version_info_is_upstreams(self):
        # Code that compares versions must see plain CPython 3.13.5.
        self.assertEqual(sys.version_info[:5], (3, 13, 5, "final", 0))
        self.assertEqual(sys.hexversion, 0x030D05F0)
        self.assertEqual(sys.implementation.name, "cpython")


class ConfigureOptionsTests(unittest.TestCase):
    """CONFIG_ARGS records each manager's choice, and the build obeys it."""

    # option: the pyconfig.h define that builds the manager
    managers = {"pmem": "WITH_PMEM", "memkind": "WITH_MEMKIND"}

    def asked_for(self, option):
        args = sysconfig.get_config_var("CONFIG_ARGS")
        self.assertIsNotNone(args)
        found = [arg.strip("'\"") for arg in args.split()
                 if arg.strip("'\"").startswith(f"--with-{option}=")]
        # The project's configure always states the choice explicitly.
        self.assertEqual(len(found), 1, f"--with-{option} in {args!r}")
        value = found[0].split("=", 1)[1]
        self.assertIn(value, ("yes", "no"))
        return value == "yes"

    # option: the extension module of the manager
    modules = {"pmem": "_pmem", "memkind": "_memkind"}

    def check_manager(self, option):
        wanted = self.asked_for(option)
        define = sysconfig.get_config_var(self.managers[option])
        self.assertEqual(bool(define), wanted)
        found = importlib.util.find_spec(self.modules[option]) is not None
        self.assertEqual(found, wanted, self.modules[option])

    def test_pmem_option(self):
        self.check_manager("pmem")

    def test_memkind_option(self):
        self.check_manager("memkind")


if __name__ == "__main__":
    unittest.main()
