"""Runs APSW's own test suite with sqlwasm's shipped modules installed on
every connection it opens (through apsw.connection_hooks), in this process.

    python tests/apsw_suite_with_modules.py [unittest arguments, e.g. APSW.testIssue31]

Installing modules must not change the outcome of any APSW behaviour: no
crash, hang or different result. tests/test_apsw_suite.py runs it in CI.
"""

from __future__ import annotations

import sys
import unittest

import apsw
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm

runtime = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY])
modules = [runtime.load(module_path(name)) for name in ("geo", "stats", "text")]


def install_modules(conn: apsw.Connection) -> None:
    for module in modules:
        runtime.install(conn, module)


apsw.connection_hooks.append(install_modules)

import apsw.tests.__main__ as apsw_tests  # noqa: E402  (after the hook, as a user would)

if __name__ == "__main__":
    apsw_tests.setup()
    unittest.main(module=apsw_tests, argv=[sys.argv[0], *sys.argv[1:]])
