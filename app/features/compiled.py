"""The feature engine compiled to C with mypyc, used in place of its Python modules when it is current.

The engine's four modules (:data:`COMPILED_MODULES`) are plain typed Python; ``make install`` also
compiles them with mypyc (``python -m app.features.build_engine``) into ``build/mypyc`` beside the
sources, or into ``IVT_COMPILED_DIR``: the same vectors to the bit, in about 60 % of the Python
engine's time per click (docs/performance.md).

The compiled modules never shadow the sources they came from unless they are those sources: the
build writes the SHA-256 of each source and the interpreter it was built for, and
:func:`use_compiled_modules` puts the compiled folder in front of the package's own only when every
hash and the interpreter match. After an edit the Python modules run (with a warning) until the
next ``make install``. ``IVT_COMPILED_FEATURES=off`` always runs the Python modules (the tests use
it to compare both).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import MutableSequence
from pathlib import Path

import orjson

__all__ = ["COMPILED_MODULES", "MANIFEST", "compiled_dir", "is_current", "use_compiled_modules", "build"]

log = logging.getLogger(__name__)

#: Modules compiled, in the package ``app.features``. ``spec`` stays Python (definitions, no loops).
COMPILED_MODULES = ("buckets", "distinct", "state", "engine")
#: What the build records beside the extensions: interpreter tag and each source's SHA-256.
MANIFEST = "ivt-compiled.json"
SOURCE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SOURCE_DIR.parents[1]


def compiled_dir() -> Path:
    """``IVT_COMPILED_DIR``, default ``build/mypyc`` in the repository."""
    return Path(os.environ.get("IVT_COMPILED_DIR") or REPO_ROOT / "build" / "mypyc")


def _interpreter() -> str:
    return f"{sys.implementation.cache_tag}-{sys.platform}-{os.uname().machine}"


def _sources(source_dir: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((source_dir / f"{name}.py").read_bytes()).hexdigest()
        for name in COMPILED_MODULES
    }


def is_current(folder: Path, source_dir: Path = SOURCE_DIR) -> bool:
    """Whether ``folder`` holds a build of exactly these sources for this interpreter."""
    try:
        manifest = orjson.loads((folder / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return manifest.get("interpreter") == _interpreter() and manifest.get("sources") == _sources(source_dir)


def use_compiled_modules(package_path: MutableSequence[str]) -> bool:
    """Put the compiled modules in front of ``app.features``'s own when they are current; whether it did.

    Called by ``app/features/__init__.py`` before it imports its modules.
    """
    if os.environ.get("IVT_COMPILED_FEATURES", "auto") == "off":
        return False
    folder = compiled_dir()
    if not (folder / MANIFEST).exists():
        return False
    if not is_current(folder):
        log.warning(
            "the compiled feature engine in %s was built from other sources or for another Python: "
            "running the Python modules (make install rebuilds it)",
            folder,
        )
        return False
    package_path.insert(0, str(folder / "app" / "features"))
    if str(folder) not in sys.path:
        sys.path.append(str(folder))  # mypyc's shared runtime module lives at the top of the build
    return True


def build(folder: Path) -> None:
    """Compile :data:`COMPILED_MODULES` into ``folder`` and record what they were built from."""
    from mypyc.build import mypycify
    from setuptools import setup

    cwd = Path.cwd()
    # mypyc names each module after its path from here: app/features/engine.py -> app.features.engine
    os.chdir(REPO_ROOT)
    try:
        modules = [f"app/features/{name}.py" for name in COMPILED_MODULES]
        setup(
            name="ivt-compiled-features",
            packages=[],
            py_modules=[],
            ext_modules=mypycify(modules, opt_level="3"),
            script_args=["build_ext", "--build-lib", str(folder), "--build-temp", str(folder / "tmp")],
        )
    finally:
        os.chdir(cwd)
    manifest = {"interpreter": _interpreter(), "sources": _sources(SOURCE_DIR)}
    (folder / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
