"""The package installs offline with pip (Debian's python3-setuptools, no build isolation, no index),
and the installed package and its focalctl console script work.

usage: BUILD=build /usr/bin/python3 clients/python/tests/test_install.py [-v]
"""
import json
import os
import shutil
import subprocess
import sys
import unittest

import _daemon
from _daemon import DaemonTestCase


class InstallTest(DaemonTestCase):

    def test_install_offline_with_pip(self):
        base = _daemon.tempdir()
        src = os.path.join(base, "src")
        # a copy: an in-tree build would leave build/ and *.egg-info in clients/python
        shutil.copytree(_daemon.PYDIR, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__",
                                                                          "tests"))
        venv = os.path.join(base, "venv")
        p = subprocess.run([_daemon.PYTHON, "-m", "venv", "--system-site-packages", venv], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, "cannot make a virtual environment (python3-venv): %s" % p.stderr)
        pip = os.path.join(venv, "bin", "pip")
        p = subprocess.run([pip, "install", "--no-build-isolation", "--no-index", src], capture_output=True,
                           text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        env = dict(os.environ, FOCALD_URL=self.url)
        env.pop("PYTHONPATH", None)
        py = os.path.join(venv, "bin", "python")
        p = subprocess.run([py, "-c", "import focald, sys; print(focald.__file__); print(focald.__version__)"],
                           capture_output=True, text=True, cwd=base, env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        where, version = p.stdout.split()
        self.assertTrue(where.startswith(venv), where)
        self.assertEqual(version, "0.1.0")
        focalctl = os.path.join(venv, "bin", "focalctl")
        p = subprocess.run([focalctl, "health", "--json"], capture_output=True, text=True, cwd=base, env=env,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["status"], "ready")
        p = subprocess.run([focalctl, "datasets", "show", "nothing"], capture_output=True, text=True, cwd=base,
                           env=env, timeout=60)
        self.assertEqual(p.returncode, 1)  # the console script passes main()'s exit status on


if __name__ == "__main__":
    import run_tests
    sys.exit(run_tests.main([__name__] + sys.argv[1:], modules=[sys.modules[__name__]]))
