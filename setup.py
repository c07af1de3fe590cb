"""Build the cython_mixer extensions. Metadata lives in pyproject.toml.

Each .pyx in cython_mixer/ is one extension; the few that link a C library say so in LIBS,
and their flags come from pkg-config so the same file builds on Debian x86-64 and Pi OS aarch64.
"""
import glob
import os
import shlex
import subprocess

from setuptools import Extension, setup

# extension name -> pkg-config package it links
LIBS = {"dtmf": "spandsp", "resample": "soxr"}


def pkg_config(pkg: str) -> tuple[list[str], list[str]]:
    try:
        cflags = subprocess.check_output(["pkg-config", "--cflags", pkg], text=True)
        libs = subprocess.check_output(["pkg-config", "--libs", pkg], text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"pkg-config cannot find {pkg!r} ({exc}); run ./build.sh, which installs it") from exc
    return shlex.split(cflags), shlex.split(libs)


def extensions() -> list[Extension]:
    only = {n for n in os.environ.get("EARSHOT_EXT", "").split(",") if n}  # build a subset while developing
    exts = []
    for pyx in sorted(glob.glob("cython_mixer/*.pyx")):
        name = os.path.splitext(os.path.basename(pyx))[0]
        if only and name not in only:
            continue
        cflags, ldflags = pkg_config(LIBS[name]) if name in LIBS else ([], [])
        exts.append(Extension(
            f"cython_mixer.{name}", [pyx],
            extra_compile_args=["-O3", *cflags], extra_link_args=ldflags,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    from Cython.Build import cythonize
    return cythonize(exts, language_level=3, quiet=True,
                     compiler_directives={"boundscheck": False, "wraparound": False,
                                          "cdivision": True, "initializedcheck": False})


setup(ext_modules=extensions())
