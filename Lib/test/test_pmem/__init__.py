"""Tests of pmem-python: the fork's build, its storage managers, pools."""

import os
from test.support import load_package_tests


def load_tests(*args):
    return load_package_tests(os.path.dirname(__file__), *args)
