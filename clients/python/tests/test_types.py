"""The package's annotations: mypy --strict finds nothing in it (and in its build backend), the package ships
py.typed, and a caller's type errors are caught against its signatures.

usage: BUILD=build /usr/bin/python3 clients/python/tests/test_types.py [-v]
"""
import os
import subprocess
import sys
import textwrap
import unittest

import _daemon


def mypy(*args, cwd=None, env=None):
    cache = os.path.join(_daemon.tempdir(), "mypy-cache")  # never a .mypy_cache in the source tree
    return subprocess.run([_daemon.PYTHON, "-m", "mypy", "--strict", "--cache-dir", cache] + list(args),
                          capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


class TypesTest(unittest.TestCase):

    def test_types_mypy_strict_is_clean(self):
        p = mypy("focald", os.path.join("_backend", "focald_backend.py"), cwd=_daemon.PYDIR)
        self.assertEqual(p.returncode, 0, "mypy --strict (python3-mypy; make test installs it):\n" + p.stdout + p.stderr)
        self.assertIn("Success: no issues found", p.stdout)

    def test_types_package_is_marked_typed(self):
        self.assertTrue(os.path.isfile(os.path.join(_daemon.PYDIR, "focald", "py.typed")))

    def test_types_catch_a_callers_mistakes(self):
        """The signatures are precise enough that mypy refuses wrong calls (and accepts right ones)."""
        d = _daemon.tempdir()
        path = os.path.join(d, "caller.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent('''\
                from focald import Client, FocaldConnectionError, Miner

                c = Client("http://127.0.0.1:8765", timeout=5.0)
                page = c.hard_examples("ds", k=10, by="aum")
                items = page["items"]
                c.hard_examples("ds", k="ten")
                Miner("ds", flush_interval="soon")
                err: ConnectionError = FocaldConnectionError("unreachable")
                n: int = c.metrics()
                '''))
        env = dict(os.environ, MYPYPATH=_daemon.PYDIR)
        p = mypy(path, cwd=d, env=env)
        lines = [l for l in p.stdout.splitlines() if ": error:" in l]
        self.assertEqual(sorted(int(l.split(":")[1]) for l in lines), [6, 7, 9], p.stdout + p.stderr)


if __name__ == "__main__":
    import run_tests
    sys.exit(run_tests.main([__name__] + sys.argv[1:], modules=[sys.modules[__name__]]))
