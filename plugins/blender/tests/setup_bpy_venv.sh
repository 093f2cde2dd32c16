#!/usr/bin/env bash
# Make .venv-bpy at the repo root: Python 3.11 + PyPI bpy 5.0.1 (+ pyzmq, msgpack) for the headless
# Blender 5 tests (tests/test_blender_addon.py). Idempotent: does nothing when the venv already works.
# bpy 5.0.x needs exactly Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/../../.."
VENV="${REALTALK_BPY_VENV:-.venv-bpy}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import bpy, zmq, msgpack; assert bpy.app.version >= (5, 0, 0)" 2>/dev/null; then
    echo "$VENV: bpy ready"
    exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "bpy==5.0.1" "pyzmq>=25.1" "msgpack>=1.0.5"
"$VENV/bin/python" -c "import bpy; print('$VENV: bpy', bpy.app.version_string)"
