"""Pick the A2E audio front-end by measurement: log-mel vs a tiny HuBERT (no pretrained weights exist here).

Trains each for the same short schedule on the corpus, exports to ONNX, then measures held-out accuracy
(`eval a2e`) and CPU step time (`bench a2e`). Writes runs/frontends/compare.json and compare.png.

python scripts/compare_frontends.py --data corpus/default [--steps 600]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "realtalk_bridge", *args], cwd=ROOT, check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT / "corpus" / "default")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "frontends")
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    results = {}
    for fe in ("mel", "hubert"):
        run = args.out / fe
        if not (run / "best.safetensors").exists():
            sh("train", "a2e", "--data", str(args.data), "--out", str(run), "--frontend", fe, "--steps", str(args.steps),
               "--warmup", "100", "--val-every", str(args.steps), "--val-batches", "8", "--save-every", str(args.steps),
               "--face", "none", "--threads", "1")
        sh("export", "a2e", str(run / "best.safetensors"), "--out", str(run / "model.onnx"))
        sh("bench", "a2e", "--model", str(run / "model.onnx"), "--out", str(run / "bench.json"), "--threads", "1")
        sh("eval", "a2e", "--model", str(run / "model.onnx"), "--out", str(run / "eval"), "--n-synth", "12", "--no-videos")
        bench = json.loads((run / "bench.json").read_text())
        ev = json.loads((run / "eval" / "report.json").read_text())
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        results[fe] = {"step_ms_median": bench.get("step_ms_median"), "mean_r": ev["mean_r"], "jaw_r": ev["jaw_r"],
                       "val_loss": min(r["val"] for r in log if "val" in r), "steps": args.steps}
    (args.out / "compare.json").write_text(json.dumps(results, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for fe, r in results.items():
        ax.scatter(r["step_ms_median"], r["mean_r"], s=60)
        ax.annotate(fe, (r["step_ms_median"], r["mean_r"]))
    ax.axvline(3.0, color="r", ls="--", lw=1, label="3 ms target")
    ax.set_xlabel("onnxruntime step ms (median, 1 thread)")
    ax.set_ylabel(f"held-out mean r after {args.steps} steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "compare.png", dpi=90)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
