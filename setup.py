"""Build the optional Cython extension ftptrio._rewrite.

All metadata lives in pyproject.toml. The extension is optional; where it cannot be
built, installation still succeeds and ftptrio uses its pure-Python twin
(ftptrio._rewrite_py); ``python -m ftptrio --version`` names the one in use.

Where the extension comes from:

* Cython installed (the normal, isolated build: pyproject.toml requires it): compiled
  from ``src/ftptrio/_rewrite.pyx``.
* no Cython (e.g. ``pip install --no-build-isolation`` from the sdist): compiled from
  ``src/ftptrio/_rewrite.c``, the generated C file the sdist ships.
* neither, or a compiler error: no extension, with a warning.
* ``FTPTRIO_NO_EXTENSIONS`` set to any non-empty value at build time (the same switch
  that picks the Python twin at run time): no extension is built at all, and the wheel
  is a pure-Python ``py3-none-any`` one.

The wheel never carries the .pyx or the .c (see ``include-package-data`` in
pyproject.toml); the sdist carries both (MANIFEST.in).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
PYX = "src/ftptrio/_rewrite.pyx"
GENERATED_C = "src/ftptrio/_rewrite.c"


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compilation into a warning."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler/setup failure
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc, ext.name)

    @staticmethod
    def _warn(exc: BaseException, name: str = "ftptrio._rewrite") -> None:
        warnings.warn(
            f"could not build the optional extension {name} ({exc}); "
            "ftptrio will use its pure-Python implementation",
            RuntimeWarning,
            stacklevel=1,
        )


def extensions() -> list[Extension]:
    if os.environ.get("FTPTRIO_NO_EXTENSIONS"):
        print("FTPTRIO_NO_EXTENSIONS is set: building without the Cython extension")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if (HERE / GENERATED_C).is_file():
            print(f"Cython not installed: compiling the generated {GENERATED_C}")
            return [Extension("ftptrio._rewrite", [GENERATED_C], optional=True)]
        OptionalBuildExt._warn(ImportError(f"no Cython and no {GENERATED_C}"))
        return []
    try:
        return list(
            cythonize(
                [Extension("ftptrio._rewrite", [PYX], optional=True)],
                compiler_directives={"language_level": "3"},
            )
        )
    except Exception as exc:  # noqa: BLE001 - a Cython error must not break install
        OptionalBuildExt._warn(exc)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
