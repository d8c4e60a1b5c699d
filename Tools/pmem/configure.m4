dnl configure.m4 -- pmem-python's checks, included by configure.ac.
dnl
dnl PMEM_WITH_LIBRARY(NAME, PKG-MODULE, VARIABLE-PREFIX, DEFINE, HELP)
dnl
dnl Adds --with-NAME.  The default ("check") builds the manager when
dnl pkg-config finds PKG-MODULE; --with-NAME fails when it does not;
dnl --without-NAME leaves it out.  Sets with_NAME to yes or no, substitutes
dnl PREFIX_CFLAGS and PREFIX_LIBS and defines DEFINE when the manager is
dnl built.  The project's own ./configure always passes an explicit
dnl --with-NAME=yes|no, so the choice is recorded in CONFIG_ARGS.
AC_DEFUN([PMEM_WITH_LIBRARY], [
AC_MSG_CHECKING([for --with-$1])
AC_ARG_WITH([$1],
  [AS_HELP_STRING([--with-$1], [$5 (default is yes when $2 is found)])],
  [], [with_$1=check])
AC_MSG_RESULT([$with_$1])
AS_VAR_IF([with_$1], [no], [], [
  PKG_CHECK_MODULES([$3], [$2], [with_$1=yes], [
    AS_VAR_IF([with_$1], [yes], [AC_MSG_ERROR([--with-$1: $2 not found by pkg-config; install its development package or configure --without-$1])])
    with_$1=no
  ])
])
AS_VAR_IF([with_$1], [yes],
  [AC_DEFINE([$4], [1], [Define to build the $1 storage manager.])])
])
