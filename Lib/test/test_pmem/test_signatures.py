"""inspect.signature() works for every public callable of pmem, _pmem and
_memkind, and of the methods of their classes.

The functions and methods of _pmem and _memkind are Argument Clinic's, as
upstream's modules' are: their docstrings start with a signature that
inspect reads (Modules/_pmem/clinic/*.c.h, made by the build).  Those that
take **kwargs, which clinic cannot parse (PersistentDict(), Pool.new()),
have their signatures written out, as upstream's functools.partial has.
"""

import inspect
import unittest
from test.support import import_helper
from test.test_pmem.util import _pmem, pmem

P = inspect.Parameter
POSITIONAL_ONLY = P.POSITIONAL_ONLY
POSITIONAL_OR_KEYWORD = P.POSITIONAL_OR_KEYWORD
VAR_POSITIONAL = P.VAR_POSITIONAL
KEYWORD_ONLY = P.KEYWORD_ONLY
VAR_KEYWORD = P.VAR_KEYWORD


# The modules whose classes' routines are checked (a class of pmem derives
# from one of _pmem: pmem.Pool).
OURS = {"pmem", "_pmem", "_memkind"}


def public_callables(module, *, private=False):
    """{qualified name: callable} of module's callables -- functions and
    classes, those whose name starts with '_' too when private is true,
    never the dunders of a module -- and of the routines of its classes
    that they or their bases of OURS define (not object's, nor
    BaseException's)."""
    found = {}
    for name in dir(module):
        if name.startswith("__") or (name.startswith("_") and not private):
            continue
        obj = getattr(module, name)
        if not callable(obj):
            continue
        found[f"{module.__name__}.{name}"] = obj
        if not isinstance(obj, type):
            continue
        for base in obj.__mro__:
            if base.__module__ not in OURS:
                continue
            for attr in vars(base):
                value = getattr(obj, attr)
                if inspect.isroutine(value):
                    found.setdefault(f"{module.__name__}.{name}.{attr}",
                                     value)
    return found


def is_exception(obj):
    return isinstance(obj, type) and issubclass(obj, BaseException)


class SignatureTestCase(unittest.TestCase):

    def check_all(self, module, *, private=False):
        """Every callable of module has a signature; the C ones have it
        from their docstring, which goes on with the summary."""
        found = public_callables(module, private=private)
        self.assertTrue(found)
        for name, obj in found.items():
            with self.subTest(name):
                if is_exception(obj):
                    # An exception's constructor is BaseException's (none
                    # of ours defines one), which has no signature: as
                    # for ValueError.
                    self.assertNotIn("__init__", vars(obj))
                    self.assertNotIn("__new__", vars(obj))
                    continue
                try:
                    inspect.signature(obj)
                except ValueError as e:
                    self.fail(f"{name}: {e}")
                doc = getattr(obj, "__doc__", None)
                if (getattr(obj, "__text_signature__", None) is not None
                        and doc is not None):
                    # The signature line is not part of the docstring.
                    self.assertNotIn("\n--\n", doc, name)
        return found

    def check(self, obj, *expected):
        """obj's parameters are expected: (name, kind) or (name, kind,
        default) each."""
        params = inspect.signature(obj).parameters.values()
        got = [(p.name, p.kind) if p.default is P.empty
               else (p.name, p.kind, p.default) for p in params]
        self.assertEqual(got, list(expected), obj)


class PmemTests(SignatureTestCase):
    """The pmem package."""

    def test_every_callable_has_a_signature(self):
        found = self.check_all(pmem)
        for name in ("pmem.open", "pmem.Pool", "pmem.Pool.begin",
                     "pmem.Pool.end", "pmem.Pool.new", "pmem.grow",
                     "pmem.copy", "pmem.storage_of", "pmem.current_pool",
                     "pmem.PersistentDict"):
            self.assertIn(name, found)

    def test_open(self):
        self.check(pmem.open,
                   ("path", POSITIONAL_OR_KEYWORD),
                   ("create", KEYWORD_ONLY, True),
                   ("size", KEYWORD_ONLY, None),
                   ("readonly", KEYWORD_ONLY, False),
                   ("durability", KEYWORD_ONLY, "power"))

    def test_pool_takes_what_open_takes(self):
        # pmem.open() passes its arguments on to the type.
        self.assertEqual(inspect.signature(pmem.Pool),
                         inspect.signature(pmem.open))
        self.assertEqual(inspect.signature(_pmem.Pool),
                         inspect.signature(pmem.open))

    def test_pool_methods(self):
        self.check(pmem.Pool.begin, ("self", POSITIONAL_ONLY))
        self.check(pmem.Pool.end, ("self", POSITIONAL_ONLY),
                   ("ok", POSITIONAL_ONLY))
        self.check(pmem.Pool.__enter__, ("self", POSITIONAL_ONLY))
        self.check(pmem.Pool.__exit__, ("self", POSITIONAL_ONLY),
                   ("type", POSITIONAL_ONLY), ("value", POSITIONAL_ONLY),
                   ("traceback", POSITIONAL_ONLY))
        self.check(pmem.Pool.new, ("self", POSITIONAL_ONLY),
                   ("type", POSITIONAL_ONLY), ("args", VAR_POSITIONAL),
                   ("kwargs", VAR_KEYWORD))
        self.check(pmem.Pool.copy, ("self", POSITIONAL_OR_KEYWORD),
                   ("dst", POSITIONAL_OR_KEYWORD))
        for name in ("close", "gc", "namespace", "stats", "unresolved",
                     "resolve"):
            with self.subTest(name):
                self.check(getattr(pmem.Pool, name),
                           ("self", POSITIONAL_ONLY))

    def test_docstrings(self):
        # The summary follows the signature.
        self.assertTrue(_pmem.Pool.__doc__.startswith(
            "A libpmemobj pool, mapped,"), _pmem.Pool.__doc__)
        self.assertTrue(_pmem.Pool.end.__doc__.startswith(
            "End the innermost begin()."), _pmem.Pool.end.__doc__)
        self.assertEqual(_pmem.PersistentDict.__doc__,
                         "dict(...) made in pool.")


class PrivatePmemTests(SignatureTestCase):
    """The _pmem module, its private functions too (the package's)."""

    def test_every_callable_has_a_signature(self):
        found = self.check_all(_pmem, private=True)
        for name in ("_pmem.Pool", "_pmem.Pool.stats", "_pmem.Namespace",
                     "_pmem.Namespace.__dir__", "_pmem._start_main",
                     "_pmem._set_format_version", "_pmem.PersistentSet"):
            self.assertIn(name, found)

    def test_functions(self):
        for func in (_pmem.PersistentDict, _pmem.PersistentByteArray):
            self.check(func, ("pool", POSITIONAL_ONLY),
                       ("args", VAR_POSITIONAL), ("kwargs", VAR_KEYWORD))
        for func in (_pmem.PersistentList, _pmem.PersistentSet):
            self.check(func, ("pool", POSITIONAL_ONLY),
                       ("args", VAR_POSITIONAL))
        self.check(_pmem.storage_of, ("obj", POSITIONAL_ONLY))
        self.check(_pmem.current_pool)
        self.check(_pmem._start_main, ("pool", POSITIONAL_ONLY),
                   ("module", POSITIONAL_ONLY), ("warning", POSITIONAL_ONLY),
                   ("placeholder", POSITIONAL_ONLY))
        self.check(_pmem._set_format_version, ("path", POSITIONAL_ONLY),
                   ("version", POSITIONAL_ONLY))
        self.check(_pmem._open_pool_at, ("path", POSITIONAL_ONLY))

    def test_namespace(self):
        self.check(_pmem.Namespace, ("pool", POSITIONAL_ONLY))
        self.check(_pmem.Namespace.__dir__, ("self", POSITIONAL_ONLY))


class MemkindTests(SignatureTestCase):
    """The _memkind module, when it is built (pmem.MemoryKind)."""

    def setUp(self):
        self._memkind = import_helper.import_module("_memkind")

    def test_every_callable_has_a_signature(self):
        found = self.check_all(self._memkind, private=True)
        for name in ("_memkind.Kind", "_memkind.Kind.stats",
                     "_memkind.Kind.__exit__", "_memkind.kind_names"):
            self.assertIn(name, found)

    def test_kind(self):
        self.assertIs(pmem.MemoryKind, self._memkind.Kind)
        self.check(self._memkind.Kind,
                   ("name", POSITIONAL_OR_KEYWORD, "regular"),
                   ("size", KEYWORD_ONLY, 1 << 30),
                   ("dir", KEYWORD_ONLY, None))
        self.check(self._memkind.Kind.__exit__, ("self", POSITIONAL_ONLY),
                   ("type", POSITIONAL_ONLY), ("value", POSITIONAL_ONLY),
                   ("traceback", POSITIONAL_ONLY))
        self.check(self._memkind.kind_names)


if __name__ == "__main__":
    unittest.main()
