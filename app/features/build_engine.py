"""``python -m app.features.build_engine``: compile the feature engine with mypyc (``make install`` runs it).

See :mod:`app.features.compiled`. Without a C compiler the build fails and the Python modules run.
"""

from __future__ import annotations

from app.features.compiled import COMPILED_MODULES, build, compiled_dir

if __name__ == "__main__":
    target = compiled_dir().resolve()
    build(target)
    print(f"compiled {', '.join(COMPILED_MODULES)} into {target}")
