#!/usr/bin/env bash
# Make a venv at the repo root with Python 3.11 + one PyPI bpy (+ pyzmq, msgpack) for the headless Blender tests
# (tests/test_blender_addon.py runs every one of these venvs that exists):
#   setup_bpy_venv.sh                      .venv-bpy    bpy 5.0.1  (layered Actions, extension)
#   setup_bpy_venv.sh 4.2.23 .venv-bpy42   .venv-bpy42  bpy 4.2 LTS (extension and legacy add-on)
# Idempotent: does nothing when the venv already has that bpy. bpy 4.2 ... 5.0 need exactly Python 3.11; PyPI has
# no bpy 4.0/4.1 (its index starts at 4.2.0) and Debian bookworm only Blender 3.4.1.
set -euo pipefail
cd "$(dirname "$0")/../../.."
VERSION="${1:-5.0.1}"
VENV="${2:-${REALTALK_BPY_VENV:-.venv-bpy}}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import bpy, zmq, msgpack; assert bpy.app.version_string.split()[0] == '$VERSION'" 2>/dev/null; then
    echo "$VENV: bpy $VERSION ready"
    exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "bpy==$VERSION" "pyzmq>=25.1" "msgpack>=1.0.5"
"$VENV/bin/python" -c "import bpy; print('$VENV: bpy', bpy.app.version_string)"
