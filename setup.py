"""The one compiled part: shm/_speedups.c, the arena writer's per-record loops (issue 17).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is
found (or it fails), the install goes on and prints one line saying the pure-Python
twin (shm/blocks.py) will run instead.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into one clear line instead of an error."""

    skipped = False

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all, or (editable) no .so to copy
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    def _skip(self, exc: Exception) -> None:
        if OptionalBuildExt.skipped:
            return  # the editable install's copy of the missing .so fails next: said once
        OptionalBuildExt.skipped = True
        print(
            f"stateengine: C extension not built ({type(exc).__name__}: {exc}); "
            "installing the pure-Python write path",
            file=sys.stderr,
        )


LITTLE = sys.byteorder == "little"

setup(
    ext_modules=(
        [Extension("stateengine.shm._speedups", ["shm/_speedups.c"], extra_compile_args=["-O2"])]
        if LITTLE
        else []
    ),
    cmdclass={"build_ext": OptionalBuildExt},
)
