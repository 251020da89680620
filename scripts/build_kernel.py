"""Compile guardgrid/_kernel.c and _pod_reader.c into one extension module beside them:
`python scripts/build_kernel.py [--if-stale]`.

Why a script and not setuptools: the project runs from its checkout (nothing is pip-installed), and one
compiler call is all it takes; sysconfig gives the compiler, flags and file suffix this interpreter was built
with, numpy its headers. `-ffp-contract=off` is required, not an optimisation choice: the kernel must give
the same bits as numpy (guardgrid/_kernel.c), and a fused multiply-add would round differently.

Make calls this only when a C source or header is newer than the module. Without a C compiler the build fails
loudly; the extender itself still runs without the module (guardgrid/kernel.py falls back to Python).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "guardgrid"
SOURCES = (PACKAGE / "_kernel.c", PACKAGE / "_pod_reader.c")
HEADERS = (PACKAGE / "_kernel.h",)


def target() -> Path:
    return PACKAGE / ("_kernel" + str(sysconfig.get_config_var("EXT_SUFFIX")))


def command(output: Path) -> list[str]:
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    return [*compiler, "-shared", "-fPIC", "-O2", "-std=c11", "-D_GNU_SOURCE", "-ffp-contract=off",
            "-fno-fast-math", "-Wall", "-Wextra", "-Wno-unused-parameter",
            f"-I{sysconfig.get_paths()['include']}", f"-I{numpy.get_include()}",
            *map(str, SOURCES), "-o", str(output), "-lm"]


def main(argv: list[str]) -> int:
    output = target()
    if "--if-stale" in argv and output.exists() and output.stat().st_mtime >= max(
            *(path.stat().st_mtime for path in (*SOURCES, *HEADERS)), Path(__file__).stat().st_mtime):
        return 0
    built = subprocess.run(command(output), check=False)
    if built.returncode != 0:
        print(f"build_kernel: compiling {', '.join(path.name for path in SOURCES)} failed", file=sys.stderr)
        return built.returncode
    print(f"build_kernel: {output.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
