#!/usr/bin/python3
"""Runs the client tests (test_*.py here) and prints "ok N", then "failed K" when K failed.

usage: BUILD=build /usr/bin/python3 clients/python/tests/run_tests.py [-v] [NAME...]
  NAME: a module (test_miner), a class (MinerTest) or a test (MinerTest.test_miner_basic);
  default every test of every module. tests/suites/clients runs this.
"""
import importlib
import logging
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _daemon  # noqa: E402


def discover():
    names = sorted(f[:-3] for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    return [importlib.import_module(n) for n in names]


def load(names, modules):
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    if not names:
        for m in modules:
            suite.addTests(loader.loadTestsFromModule(m))
        return suite
    for name in names:
        found = False
        for m in modules:
            if name == m.__name__:
                suite.addTests(loader.loadTestsFromModule(m))
                found = True
                break
            if name.startswith(m.__name__ + "."):
                suite.addTests(loader.loadTestsFromName(name[len(m.__name__) + 1:], m))
                found = True
                break
            head = name.split(".")[0]
            if hasattr(m, head):
                suite.addTests(loader.loadTestsFromName(name, m))
                found = True
                break
        if not found:
            raise SystemExit("no test named %s" % name)
    return suite


def main(argv=None, modules=None):
    # the Miner warns when focald is unreachable, which these tests arrange on purpose
    logging.getLogger("focald").setLevel(logging.ERROR)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "__main__":
        argv = argv[1:]
    verbosity = 2 if "-v" in argv else 1
    names = [a for a in argv if a != "-v"]
    modules = modules or discover()
    suite = load(names, modules)
    start = time.monotonic()
    res = unittest.TextTestRunner(stream=sys.stdout, verbosity=verbosity).run(suite)
    _daemon.cleanup_temp()
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    passed = res.testsRun - len(res.skipped) - failed
    sys.stdout.write("%d tests in %.1f s, %d skipped\n" % (res.testsRun, time.monotonic() - start, len(res.skipped)))
    # tests/run-suites counts "ok N" as passed, "failed K" as failed and "skipped S" as skipped (a skip
    # fails the run there); the last line decides
    if res.skipped:
        print("skipped %d" % len(res.skipped))
    print("ok %d" % passed)
    if failed:
        print("failed %d" % failed)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
