"""Build the optional Cython extension ftptrio._rewrite.

All metadata lives in pyproject.toml. The extension is optional: without Cython, or
when compiling fails (no C compiler, missing headers), installation still succeeds
and ftptrio uses its pure-Python twin (ftptrio._rewrite_py).
"""

from __future__ import annotations

import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError:  # no Cython: pure-Python install
    cythonize = None


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


ext_modules = []
if cythonize is not None:
    try:
        ext_modules = cythonize(
            [Extension("ftptrio._rewrite", ["src/ftptrio/_rewrite.pyx"], optional=True)],
            compiler_directives={"language_level": "3"},
        )
    except Exception as exc:  # noqa: BLE001 - a Cython error must not break install
        OptionalBuildExt._warn(exc)
        ext_modules = []

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
