"""`realtalk-bridge bench bake --out FILE.json`: batch bake throughput for 1 and N worker processes.

Generates a dialogue library of short lines (default 30 minutes in all, 1.5-6 s each, half at 48 kHz so
resampling is part of the cost, as in a game's audio folder) from the example speech, then bakes the
whole library with the real `bake` job (bake_batch.Job: worker start-up, decoding, resampling, model,
CSV encoding and the manifest all count) once per job count. Reports audio seconds per wall second:
`x_realtime` per job count and `x_realtime_per_core` (x_realtime / jobs), `x_realtime_per_cpu_second` (audio
seconds per CPU second the job used: the figure that survives a shared machine), plus a PNG beside the JSON.
Those keys are for the default `--stride 1` (equal to the live stream); `by_stride` holds the same figures
for every stride timed in the run (default 1 and FAST_STRIDE).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_PER_CORE = 200.0  # issue 13: >= 200x real time per core
FAST_STRIDE = 8  # the stride docs/bake.md recommends for offline bakes (measured lip-sync there)
SPEECH = Path(__file__).resolve().parents[2] / "examples" / "speech" / "hello.wav"


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (a .png goes beside it)")
    parser.add_argument("--minutes", type=float, default=30.0, help="total audio in the generated library")
    parser.add_argument("--jobs", default=None,
                        help="comma-separated job counts to time (default: 1 and the number of cores)")
    parser.add_argument("--strides", default=f"1,{FAST_STRIDE}",
                        help=f"comma-separated `bake --stride` values to time (default 1,{FAST_STRIDE})")
    parser.add_argument("--model", default=None, help="A2E .onnx (default: the shipped model)")
    parser.add_argument("--format", default="csv", choices=("csv", "json", "npz", "msgpack"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the library is written (default: a temp folder)")


def make_library(folder: Path, minutes: float, seed: int = 0, source: Path = SPEECH) -> dict:
    """Write short lines cut from `source` (looped), random length and gain, into a nested tree."""
    import soundfile as sf

    from realtalk_bridge.audio import load_audio, resample

    rng = np.random.default_rng(seed)
    speech = load_audio(source)
    total, n = 0.0, 0
    while total < minutes * 60:
        secs = float(rng.uniform(1.5, 6.0))
        start = int(rng.integers(0, len(speech)))
        idx = (start + np.arange(int(secs * 16000))) % len(speech)
        x = (speech[idx] * rng.uniform(0.3, 1.0)).astype(np.float32)
        rate = 48000 if n % 2 else 16000
        if rate != 16000:
            x = resample(x, 16000, rate)
        path = folder / f"chapter_{n // 100:02d}" / f"line_{n:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x, rate, subtype="PCM_16")
        total += secs
        n += 1
    return {"files": n, "audio_seconds": round(total, 3), "line_seconds": [1.5, 6.0], "rates_hz": [16000, 48000]}


def bench(library: Path, job_counts: list[int], model, fmt: str, scratch: Path, stride: int = 1) -> dict:
    from realtalk_bridge.bake_batch import Job, Settings

    settings = Settings(fps=30.0, lookahead_ms=80.0, format=fmt, max_seconds=1800.0, allow_silent=False,
                        stride=stride)
    runs = {}
    for jobs in job_counts:
        out = scratch / f"out_{jobs}_s{stride}"
        shutil.rmtree(out, ignore_errors=True)
        job = Job(str(library), out, settings, model)
        bar = _progress(f"stride {stride}, {jobs} job(s)")
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        try:
            job.run(jobs, progress=bar)
        finally:
            bar.stop()
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0  # this process + the workers it has reaped (the pool joins them)
        if job.counts["failed"]:
            raise RuntimeError(f"{job.counts['failed']} files failed: {job.failures[:3]}")
        runs[jobs] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "audio_s": round(job.audio_seconds, 3),
                      "files": job.counts["done"]}
        shutil.rmtree(out, ignore_errors=True)
        print(f"stride {stride}, {jobs} job(s): {job.audio_seconds:.0f} s of audio in {wall:.1f} s = "
              f"{job.audio_seconds / wall:.1f}x real time ({job.audio_seconds / max(cpu, 1e-9):.1f}x per CPU second)",
              file=sys.stderr)
    return runs


def _cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _progress(label: str):
    from realtalk_bridge.bake_batch import _Bar

    return _Bar(label)


def figures(runs: dict) -> dict:
    """One stride's runs -> x_realtime, x_realtime_per_core, x_realtime_per_cpu_second, scaling, target."""
    x = {str(j): r["audio_s"] / r["wall_s"] for j, r in runs.items()}
    per_core = {j: v / int(j) for j, v in x.items()}
    one = x.get("1")
    scaling = {j: (v / one / int(j)) if one else None for j, v in x.items()}  # 1.0 = perfectly linear
    return {
        "x_realtime": x,
        "x_realtime_per_core": per_core,
        # audio seconds per CPU second used (all processes of the job): what a core does when it is not shared,
        # so a loaded machine (see machine.load_avg_1m_at_end) still says what the code costs
        "x_realtime_per_cpu_second": {str(j): r["audio_s"] / max(r["cpu_s"], 1e-9) for j, r in runs.items()},
        "scaling_efficiency": scaling,
        "meets_target": all(v >= TARGET_PER_CORE for v in per_core.values()),
        "runs": {str(j): r for j, r in runs.items()},
    }


def summarize(by_stride: dict, library: dict, model_name: str, fmt: str) -> dict:
    """{stride: runs} -> the JSON: top-level figures for the default stride (1 when timed), plus by_stride."""
    per = {str(s): figures(r) for s, r in by_stride.items()}
    default = "1" if "1" in per else next(iter(per))
    return {
        **per[default],
        "stride": int(default),
        "target_per_core": TARGET_PER_CORE,
        "by_stride": per,
        "library": library,
        "model": model_name,
        "format": fmt,
        "measures": "wall time of the whole `bake DIR --out DIR --jobs N --stride S` job (worker start-up, decode, "
                    "resample, A2E, encode, write, manifest) over the generated library; x_realtime = audio s / "
                    "wall s; top-level keys for `stride`, by_stride for every stride timed",
        # the load average tells whether other jobs shared the cores during the run
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "load_avg_1m_at_end": os.getloadavg()[0]},
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strides = sorted(result["by_stride"], key=int)
    jobs = sorted({int(j) for s in strides for j in result["by_stride"][s]["x_realtime"]})
    labels = [str(j) for j in jobs]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    w = 0.8 / len(strides)
    pos = np.arange(len(jobs))
    colors = ["#3b7dd8", "#e07b39", "#7fb27f", "#9a6fb0"]
    for n, s in enumerate(strides):
        f, c = result["by_stride"][s], colors[n % len(colors)]
        off = pos - 0.4 + w * (n + 0.5)
        x = [f["x_realtime"].get(j, 0.0) for j in labels]
        ax.bar(off, x, w, color=c, label=f"--stride {s} (wall clock)")
        for i, v in enumerate(x):
            ax.text(off[i], v, f"{v:.0f}x", ha="center", va="bottom", fontsize=8)
        if "1" in f["x_realtime"]:
            ax.plot(off, [f["x_realtime"]["1"] * j for j in jobs], "--", color=c, marker="o", lw=1,
                    label=f"stride {s}: linear from 1 job")
        # per core: CPU-time based (what an unshared core does), against the target
        per_cpu = [f["x_realtime_per_cpu_second"].get(j, 0.0) for j in labels]
        ax2.bar(off, per_cpu, w, color=c, label=f"--stride {s} (per CPU second)")
        for i, v in enumerate(per_cpu):
            ax2.text(off[i], v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax2.axhline(TARGET_PER_CORE, color="r", ls=":", label=f"target {TARGET_PER_CORE:.0f}x per core")
    for a_ in (ax, ax2):
        a_.set_xticks(pos, labels)
        a_.set_xlabel("worker processes (--jobs)")
        a_.set_ylim(0, a_.get_ylim()[1] * 1.45)  # room for the legend above the bars
        a_.legend(fontsize=7, loc="upper left", ncol=2)
    ax.set_ylabel("audio seconds per wall second")
    ax2.set_ylabel("x real time per core (CPU time)")
    lib, m = result["library"], result["machine"]
    fig.suptitle(f"bake of {lib['files']} lines, {lib['audio_seconds'] / 60:.0f} min ({result['model']}); "
                 f"load average {m['load_avg_1m_at_end']:.1f} on {m['cpu_count']} cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    from realtalk_bridge.bench.a2e import model_label
    from realtalk_bridge.runtime.a2e import DEFAULT_MODEL

    try:
        job_counts = ([int(j) for j in args.jobs.split(",")] if args.jobs
                      else sorted({1, os.cpu_count() or 1}))
    except ValueError:
        print(f"bench bake: --jobs must be comma-separated integers, got {args.jobs!r}", file=sys.stderr)
        return 2
    try:
        strides = list(dict.fromkeys(int(s) for s in args.strides.split(",")))
    except ValueError:
        print(f"bench bake: --strides must be comma-separated integers, got {args.strides!r}", file=sys.stderr)
        return 2
    if not job_counts or min(job_counts) < 1 or args.minutes <= 0 or not strides or min(strides) < 1:
        print("bench bake: job counts and strides must be >= 1 and --minutes > 0", file=sys.stderr)
        return 2
    model = Path(args.model) if args.model else DEFAULT_MODEL
    if not model.is_file():
        print(f"bench bake: no model at {model}; pass --model FILE.onnx", file=sys.stderr)
        return 1
    from realtalk_bridge.runtime.a2e import A2ERuntime, check_stride

    try:
        for st in strides:
            check_stride(A2ERuntime(model), st, 80.0)
    except ValueError as exc:
        print(f"bench bake: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        lib_dir = Path(tmp) / "library"
        print(f"bench bake: writing a {args.minutes:g}-minute library to {lib_dir}", file=sys.stderr)
        library = make_library(lib_dir, args.minutes, args.seed)
        by_stride = {s: bench(lib_dir, job_counts, str(model), args.format, Path(tmp), stride=s) for s in strides}
    result = summarize(by_stride, library, model_label(model), args.format)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    png = out.with_suffix(".png")
    plot(result, png)
    print(" ".join(f"stride {s}, {j} job(s): {v:.1f}x ({f['x_realtime_per_core'][j]:.1f}x per core);"
                   for s, f in result["by_stride"].items() for j, v in f["x_realtime"].items()) + f" -> {out}, {png}")
    return 0
