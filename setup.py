"""Build the compiled core of edgekm.

The Cython sources live in ``cython_src/`` and are installed as private
modules of ``edgekm._core``; callers never import them directly (see
``edgekm/_backend.py``).  Project-wide compiler directives live here, in one
place.  ``EDGEKM_CYTHON_DEBUG=1`` turns bounds checking back on.
"""

import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("EDGEKM_CYTHON_DEBUG", "0") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}

if sys.platform == "win32":
    extra_compile_args = ["/O2", "/fp:precise"]
else:
    # -ffp-contract=off: no fused multiply-add contraction, so that results are
    # byte-identical across x86_64 and aarch64 and match the NumPy reference.
    # Never -march=native: wheels must run on every CPU of the target arch.
    extra_compile_args = ["-O3", "-ffp-contract=off"]

# A cross build (tools/aarch64.sh) compiles against the target's NumPy headers.
NUMPY_INCLUDE = os.environ.get("EDGEKM_NUMPY_INCLUDE") or numpy.get_include()


def ext(name):
    return Extension(
        f"edgekm._core.{name}",
        [f"cython_src/{name}.pyx"],
        include_dirs=[NUMPY_INCLUDE, "cython_src"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=extra_compile_args,
    )

setup(
    ext_modules=cythonize(
        [ext("_ops"), ext("_engine"), ext("_assign")],
        include_path=["cython_src"],
        compiler_directives=directives,
    ),
)
