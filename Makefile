# Makefile -- pmem-python's top level.
#
#   make              build ./python (on a fresh machine it first installs
#                     the build dependencies and runs ./configure)
#   make test         the project's tests: test_pmem, test_storage, the
#                     test of tree.sh and the core regrtests of what we
#                     patch (TESTOPTS=-ucpu: the slow tests too)
#   make demo         run the demo on a default pool
#   make stock        the base (CPython 3.13.5 with Debian's upstream
#                     fixes), same options, no patches of ours, in
#                     build/stock/ (the baseline of every overhead figure)
#   make patches      write build-tree edits of upstream files into .patch
#   make check-tree   fail when build/ holds edits that no .patch records
#   make regrtest     the full regrtest suite on the fork, compared with the
#                     committed stock failures (Tools/pmem/regrtest-stock.txt)
#   make regrtest-stock  the same suite on stock, to refresh that list
#   make install      install as PREFIX/bin/python3-pmem and python3.13-pmem
#                     (PREFIX=/usr/local; DESTDIR= stages for a package),
#                     with pip, never as python3 (Tools/pmem/install.sh)
#   make uninstall    remove what make install installed (same PREFIX)
#   make docs         the documentation, upstream's Doc/ with our pages, by
#                     Debian's Sphinx, in build/docs/html (warnings in our
#                     pages are errors: Tools/pmem/docs.sh)
#   make doctest      the examples of Doc/library/pmem.rst, run by ./python
#   make clean        upstream's clean in the build trees (keeps edits)
#   make distclean    remove build/ and ./python, after checking that no
#                     edit would be lost
#
# Developer loop: edit under build/Python-3.13.5 (our own files there are
# links to the repository's), `make`, `make patches`, commit.

TREESH = Tools/pmem/tree.sh
VERSION := $(shell $(TREESH) version)
TREE = build/Python-$(VERSION)
STOCK = build/stock/Python-$(VERSION)
REGRTEST = Tools/pmem/regrtest.py
JOBS = 2

# The environment of this workplace sets these; several upstream tests
# (test_cmd_line, test_compileall, test_cppext) fail under them on stock.
TESTENV = env -u PYTHONUNBUFFERED -u PYTHONDONTWRITEBYTECODE

# The core regrtests of the objects and paths that our patches touch.
CORE_TESTS = test_dict test_list test_set test_bytes test_descr test_class \
	test_gc test_weakref test_ordered_dict test_sort test_dictviews \
	test_userdict test_userlist test_copy test_pickle test_json test_capi \
	test_sys test_slice test_defaultdict test_collections test_fractions \
	test_uuid test_ipaddress test_pathlib test_enum test_deque

# More regrtest options for `make test`: TESTOPTS=-ucpu also runs the slow
# tests (those that require the 'cpu' resource), as CI does.
TESTOPTS =

# Per-test limit of the full runs, in seconds: nothing can hang them
# (test_socket's VSOCK test blocks for ever here; the slowest test that
# passes, test_tools, takes about 4 minutes).
REGRTEST_TIMEOUT = 900

.PHONY: all build configure-if-needed test demo stock patches check-tree \
	regrtest regrtest-stock install uninstall docs doctest clean distclean

all: build

# On a fresh machine: install the build dependencies (as root; otherwise
# it prints the apt-get line) and configure with the defaults.
configure-if-needed:
	@if [ ! -f $(TREE)/Makefile ]; then \
		Tools/pmem/install-deps.sh && ./configure; fi

build: configure-if-needed
	@$(TREESH) sync
	@# A changed configure.ac (a new patch) needs upstream's configure rerun.
	@if [ -n "$$(find -L $(TREE)/configure.ac $(TREE)/Tools/pmem/configure.m4 \
		-newer $(TREE)/config.status)" ]; then \
		echo "make: configure.ac changed: rerunning ./configure"; \
		eval ./configure $$(cat build/configure-args); fi
	@# The interpreter's cases are generated from the patched bytecodes.c.
	@if [ -n "$$(find $(TREE)/Python/bytecodes.c \
		$(TREE)/Tools/cases_generator/*.py \
		-newer $(TREE)/Python/generated_cases.c.h)" ]; then \
		$(MAKE) -C $(TREE) regen-cases; fi
	$(MAKE) -C $(TREE) -j$(JOBS)
	@$(TREESH) wrapper
	@./python -c 'import sys; print("built", sys.executable, sys.version.split()[0])'

test: build
	$(TESTENV) ./python -E $(REGRTEST) -j$(JOBS) -w $(TESTOPTS) test_pmem \
		test_tools.test_pmem_tree test_storage $(CORE_TESTS)

DEMO_POOL = build/demo/accounts.pool

demo: build
	@rm -f $(DEMO_POOL) && mkdir -p $(dir $(DEMO_POOL))
	@echo "run 1 (creates $(DEMO_POOL)):"
	./python Tools/pmem/demo.py alice bob 10 $(DEMO_POOL)
	@echo "run 2 (a new process: the balances carry over):"
	./python Tools/pmem/demo.py alice bob 10 $(DEMO_POOL)

stock:
	@if [ ! -d $(STOCK) ]; then \
		$(TREESH) fetch && $(TREESH) unpack build/stock; fi
	@if [ ! -f $(STOCK)/Makefile ]; then \
		[ -f build/stock-configure-args ] || { echo "make stock: run ./configure first (stock takes its options)"; exit 1; }; \
		cd $(STOCK) && eval ./configure $$(cat ../../stock-configure-args); fi
	$(MAKE) -C $(STOCK) -j$(JOBS)

patches:
	@$(TREESH) patches

check-tree:
	@$(TREESH) check

regrtest: build
	$(TESTENV) ./python -E $(REGRTEST) -j$(JOBS) \
		--timeout=$(REGRTEST_TIMEOUT) \
		--baseline Tools/pmem/regrtest-stock.txt

regrtest-stock: stock
	$(TESTENV) $(STOCK)/python -E $(REGRTEST) -j$(JOBS) \
		--timeout=$(REGRTEST_TIMEOUT) \
		--write-failures build/regrtest-stock.txt

# Installing.  The interpreter's prefix is fixed when it is configured
# (sysconfig, python3.13-config, the .pc files and pip's shebangs keep it),
# so the install is built for PREFIX in a tree of its own,
# build/install/Python-$(VERSION), from the repository's files and the
# options given to ./configure; build/Python-$(VERSION) is not touched.
# Upstream's `make altinstall` (no unversioned python3, pip3, pydoc3...)
# goes into a prefix of the fork's own, PREFIX/lib/python3.13-pmem, so that
# it never takes the paths of another CPython 3.13 in PREFIX; PREFIX/bin
# gains the links python3-pmem and python3.13-pmem.  pip comes from
# ensurepip's bundled wheel, offline.  The list of what was installed,
# PREFIX/lib/python3.13-pmem/INSTALLED, is what uninstall removes.
PREFIX = /usr/local
DESTDIR =

install:
	@Tools/pmem/install.sh install "$(PREFIX)" "$(DESTDIR)" $(JOBS)

uninstall:
	@Tools/pmem/install.sh uninstall "$(PREFIX)" "$(DESTDIR)"

# The documentation (Tools/pmem/docs.sh says how it is assembled).
docs: configure-if-needed
	@Tools/pmem/docs.sh html

doctest: build
	@Tools/pmem/docs.sh doctest

INSTALL_TREE = build/install/Python-$(VERSION)

clean:
	-[ ! -f $(TREE)/Makefile ] || $(MAKE) -C $(TREE) clean
	-[ ! -f $(STOCK)/Makefile ] || $(MAKE) -C $(STOCK) clean
	-[ ! -f $(INSTALL_TREE)/Makefile ] || $(MAKE) -C $(INSTALL_TREE) clean

distclean:
	@[ ! -d $(TREE) ] || $(TREESH) check || { \
		echo "make distclean: refusing: build/ holds edits (see above); 'make patches' first"; \
		exit 1; }
	rm -rf build python
