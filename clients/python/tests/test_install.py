"""The package installs offline with pip by the routes clients/python/README.md gives (its own build backend,
standard library only: no setuptools, no wheel, no index), writes nothing into the source tree, and the
installed package, its type information and its focalctl console script work.

usage: BUILD=build /usr/bin/python3 clients/python/tests/test_install.py [-v]
"""
import json
import os
import subprocess
import sys
import unittest

import _daemon
from _daemon import DaemonTestCase

import focald


def source_files():
    """Every file under clients/python except bytecode caches (which running the tests writes anyway)."""
    out = set()
    for d, dirs, files in os.walk(_daemon.PYDIR):
        dirs[:] = [x for x in dirs if x not in ("__pycache__", ".mypy_cache")]
        out.update(os.path.relpath(os.path.join(d, f), _daemon.PYDIR) for f in files)
    return out


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


class InstallTest(DaemonTestCase):

    def check_installed(self, python, focalctl, env_extra=None):
        """The package imports from where it was installed, with py.typed beside it, and focalctl answers."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(env_extra or {}, FOCALD_URL=self.url)
        cwd = _daemon.tempdir()  # not the source tree: the import must come from the installation
        p = run([python, "-c", "import focald, os, sys; print(focald.__file__); print(focald.__version__); "
                 "print(os.path.exists(os.path.join(os.path.dirname(focald.__file__), 'py.typed')))"],
                cwd=cwd, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        where, version, typed = p.stdout.split()
        self.assertFalse(where.startswith(_daemon.PYDIR), where)
        self.assertEqual(version, focald.__version__)
        self.assertEqual(typed, "True")
        p = run([focalctl, "health", "--json"], cwd=cwd, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["status"], "ready")
        p = run([focalctl, "datasets", "show", "nothing"], cwd=cwd, env=env)
        self.assertEqual(p.returncode, 1)  # the console script passes main()'s exit status on
        return where

    def test_install_in_a_venv_as_the_readme_says(self):
        """README: python3 -m venv --system-site-packages .venv; .venv/bin/pip install --no-index clients/python"""
        before = source_files()
        venv = os.path.join(_daemon.tempdir(), "venv")
        p = run([_daemon.PYTHON, "-m", "venv", "--system-site-packages", venv])
        self.assertEqual(p.returncode, 0, "cannot make a virtual environment (python3-venv): %s" % p.stderr)
        p = run([os.path.join(venv, "bin", "pip"), "install", "--no-index", _daemon.PYDIR])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        where = self.check_installed(os.path.join(venv, "bin", "python"), os.path.join(venv, "bin", "focalctl"))
        self.assertTrue(where.startswith(venv), where)
        self.assertEqual(source_files(), before)  # no build/, no *.egg-info, no wheel left behind

    def test_install_without_setuptools_or_wheel(self):
        """A venv that cannot import wheel (nor, once removed, setuptools) still builds and installs it."""
        venv = os.path.join(_daemon.tempdir(), "venv")
        p = run([_daemon.PYTHON, "-m", "venv", venv])
        self.assertEqual(p.returncode, 0, p.stderr)
        py = os.path.join(venv, "bin", "python")
        run([py, "-m", "pip", "uninstall", "-y", "setuptools", "wheel"])
        p = run([py, "-c", "import importlib.util as u; print(u.find_spec('wheel'), u.find_spec('setuptools'))"])
        self.assertEqual(p.stdout.split(), ["None", "None"], p.stderr)
        before = source_files()
        for flags in (["--no-index"], ["--no-index", "--no-build-isolation"]):
            p = run([py, "-m", "pip", "install", "--force-reinstall"] + flags + [_daemon.PYDIR])
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.check_installed(py, os.path.join(venv, "bin", "focalctl"))
        self.assertEqual(source_files(), before)

    def test_install_editable(self):
        """README: pip install -e clients/python imports the source tree itself (edits take effect at once)."""
        venv = os.path.join(_daemon.tempdir(), "venv")
        p = run([_daemon.PYTHON, "-m", "venv", venv])
        self.assertEqual(p.returncode, 0, p.stderr)
        before = source_files()
        p = run([os.path.join(venv, "bin", "pip"), "install", "--no-index", "-e", _daemon.PYDIR])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        p = run([os.path.join(venv, "bin", "python"), "-c", "import focald; print(focald.__file__)"],
                cwd=_daemon.tempdir(), env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), os.path.join(_daemon.PYDIR, "focald", "__init__.py"))
        p = run([os.path.join(venv, "bin", "focalctl"), "--version"], cwd=_daemon.tempdir(), env=env)
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "focalctl " + focald.__version__), p.stderr)
        self.assertEqual(source_files(), before)

    def test_install_with_target(self):
        """README: pip install --target DIR clients/python with the system's python3, no environment."""
        target = os.path.join(_daemon.tempdir(), "site")
        before = source_files()
        p = run([_daemon.PYTHON, "-m", "pip", "install", "--no-index", "--target", target, _daemon.PYDIR])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        where = self.check_installed(_daemon.PYTHON, os.path.join(target, "bin", "focalctl"),
                                     env_extra={"PYTHONPATH": target})
        self.assertTrue(where.startswith(target), where)
        self.assertEqual(source_files(), before)


if __name__ == "__main__":
    import run_tests
    sys.exit(run_tests.main([__name__] + sys.argv[1:], modules=[sys.modules[__name__]]))
