"""The build backend of the focald client (PEP 517 and PEP 660), in the standard library alone.

pip builds the package with this module (pyproject.toml names it, with
backend-path), so installing needs neither network access nor setuptools nor
the wheel package: `pip install clients/python` works with the pip of any
Python 3.8 or later. It writes only into the directory pip gives it (no build/
and no *.egg-info in the source tree). The metadata comes from pyproject.toml's
[project] table (read with tomllib, or tomli before Python 3.11), the version
from focald/__init__.py, the files from focald/ (py.typed included).
"""
import ast
import base64
import hashlib
import io
import os
import sys
import tarfile
import time
import zipfile
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # clients/python
PACKAGE = "focald"


def _load_toml(path: str) -> Dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:  # pragma: no cover - older Pythons
        try:
            import tomli as toml
        except ImportError:
            raise RuntimeError("building focald-client needs Python 3.11 or later, or the tomli package")
    with open(path, "rb") as f:
        doc: Dict[str, Any] = toml.load(f)
    return doc


def _version() -> str:
    """__version__ of focald/__init__.py: the client's version has that one source."""
    with open(os.path.join(HERE, PACKAGE, "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, str):
                return value
    raise RuntimeError("focald/__init__.py sets no __version__")


def _project() -> Dict[str, Any]:
    project: Dict[str, Any] = dict(_load_toml(os.path.join(HERE, "pyproject.toml"))["project"])
    project["version"] = _version()
    return project


def _dist_name(project: Dict[str, Any]) -> str:
    """The name as wheel and dist-info file names spell it (PEP 427: runs of -_. become _)."""
    name = str(project["name"])
    for ch in "-.":
        name = name.replace(ch, "_")
    return name


def _metadata(project: Dict[str, Any]) -> str:
    """Core metadata 2.1 (PKG-INFO and METADATA)."""
    lines = ["Metadata-Version: 2.1", "Name: %s" % project["name"], "Version: %s" % project["version"]]
    if project.get("description"):
        lines.append("Summary: %s" % project["description"])
    lic = project.get("license")
    if isinstance(lic, dict) and lic.get("text"):
        lines.append("License: %s" % lic["text"])
    if project.get("requires-python"):
        lines.append("Requires-Python: %s" % project["requires-python"])
    for c in project.get("classifiers", []):
        lines.append("Classifier: %s" % c)
    for dep in project.get("dependencies", []):
        lines.append("Requires-Dist: %s" % dep)
    for extra, deps in sorted(project.get("optional-dependencies", {}).items()):
        lines.append("Provides-Extra: %s" % extra)
        for dep in deps:
            lines.append('Requires-Dist: %s; extra == "%s"' % (dep, extra))
    readme = project.get("readme")
    body = ""
    if isinstance(readme, str):
        with open(os.path.join(HERE, readme), encoding="utf-8") as f:
            body = f.read()
        lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + body


def _entry_points(project: Dict[str, Any]) -> str:
    scripts = project.get("scripts", {})
    if not scripts:
        return ""
    return "[console_scripts]\n" + "".join("%s = %s\n" % kv for kv in sorted(scripts.items()))


def _package_files() -> List[Tuple[str, str]]:
    """(path in the archive, path on disk) of the package's files, sorted; no caches."""
    out = []
    root = os.path.join(HERE, PACKAGE)
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".typed")):
                full = os.path.join(d, name)
                out.append((os.path.relpath(full, HERE).replace(os.sep, "/"), full))
    return out


def _timestamp() -> Tuple[int, int, int, int, int, int]:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else 1980-01-01, zip's earliest date."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        t = time.gmtime(max(int(epoch), 315532800))
        return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
    return (1980, 1, 1, 0, 0, 0)


class _Wheel:
    """A wheel being written: each file is hashed into RECORD as it is added."""

    def __init__(self, path: str) -> None:
        self.zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED)
        self.record: List[str] = []

    def add(self, arcname: str, data: bytes) -> None:
        info = zipfile.ZipInfo(arcname, _timestamp())
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zip.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
        self.record.append("%s,sha256=%s,%d" % (arcname, digest, len(data)))

    def close(self, record_name: str) -> None:
        self.record.append("%s,," % record_name)
        info = zipfile.ZipInfo(record_name, _timestamp())
        info.external_attr = 0o644 << 16
        self.zip.writestr(info, "\n".join(self.record) + "\n")
        self.zip.close()


def _build(wheel_directory: str, editable: bool) -> str:
    project = _project()
    name, version = _dist_name(project), project["version"]
    filename = "%s-%s-py3-none-any.whl" % (name, version)
    dist_info = "%s-%s.dist-info" % (name, version)
    w = _Wheel(os.path.join(wheel_directory, filename))
    try:
        if editable:
            # a .pth line puts the source tree on sys.path: edits take effect without reinstalling
            w.add("%s.pth" % name, (HERE + "\n").encode("utf-8"))
        else:
            for arcname, full in _package_files():
                with open(full, "rb") as f:
                    w.add(arcname, f.read())
        w.add(dist_info + "/METADATA", _metadata(project).encode("utf-8"))
        w.add(dist_info + "/WHEEL", ("Wheel-Version: 1.0\nGenerator: focald_backend\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n").encode("ascii"))
        entry_points = _entry_points(project)
        if entry_points:
            w.add(dist_info + "/entry_points.txt", entry_points.encode("utf-8"))
        w.close(dist_info + "/RECORD")
    except BaseException:
        w.zip.close()
        os.unlink(os.path.join(wheel_directory, filename))
        raise
    return filename


# ---------------------------------------------------------------------------- PEP 517 and PEP 660 hooks

def get_requires_for_build_wheel(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def build_wheel(wheel_directory: str, config_settings: Optional[Dict[str, Any]] = None,
                metadata_directory: Optional[str] = None) -> str:
    return _build(wheel_directory, editable=False)


def build_editable(wheel_directory: str, config_settings: Optional[Dict[str, Any]] = None,
                   metadata_directory: Optional[str] = None) -> str:
    return _build(wheel_directory, editable=True)


def build_sdist(sdist_directory: str, config_settings: Optional[Dict[str, Any]] = None) -> str:
    project = _project()
    base = "%s-%s" % (_dist_name(project), project["version"])
    files = [("pyproject.toml", os.path.join(HERE, "pyproject.toml")),
             ("README.md", os.path.join(HERE, "README.md")),
             ("_backend/focald_backend.py", os.path.abspath(__file__))] + _package_files()
    mtime = time.mktime(_timestamp() + (0, 0, -1))
    path = os.path.join(sdist_directory, base + ".tar.gz")
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        def add(arcname: str, data: bytes) -> None:
            info = tarfile.TarInfo("%s/%s" % (base, arcname))
            info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
            tar.addfile(info, io.BytesIO(data))
        add("PKG-INFO", _metadata(project).encode("utf-8"))
        for arcname, full in files:
            with open(full, "rb") as f:
                add(arcname, f.read())
    return base + ".tar.gz"
