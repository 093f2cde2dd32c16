"""Batched A2E stepping across streams (runtime.a2e.step_streams): one ONNX call per tick for many
streams gives exactly the frames each stream would have produced alone (and offline)."""
import numpy as np

from _sidecar_util import a2e_model, runtime, speech  # noqa: F401  (fixtures)
from realtalk_bridge.runtime.a2e import A2EStream, infer_offline, step_streams


def test_step_streams_equals_single_streams_and_offline(runtime, speech):
    x = speech[: 16000 * 2]
    rng = np.random.default_rng(0)
    alphas = [None, rng.normal(0, 1, runtime.n_id).astype(np.float32), None]
    fps = [30, 25, 60]
    streams = [A2EStream(runtime, fps=f, lookahead_ms=80, identity=a) for f, a in zip(fps, alphas)]
    got = [[] for _ in streams]
    calls = []
    run = runtime.run

    def counting_run(audio, identity, history):
        calls.append(len(audio))
        return run(audio, identity, history)

    runtime.run = counting_run
    try:
        for a in range(0, len(x), 480):  # 30 ms chunks, a different offset into each stream
            for s in streams:
                s.feed(x[a:a + 480])
            for out, frames in zip(got, step_streams(runtime, streams, max_windows=2)):
                out.extend(frames)
        while any(s.pending_windows(1) for s in streams):  # what the per-tick cap left for later ticks
            for out, frames in zip(got, step_streams(runtime, streams, max_windows=2)):
                out.extend(frames)
    finally:
        runtime.run = run
    assert max(calls) > 1, "windows of several streams must share one model call"
    for s, f, a, out in zip(streams, fps, alphas, got):
        out.extend(s.flush())
        want = infer_offline(runtime, x, fps=f, lookahead_ms=80, identity=a)
        assert [fr.index for fr in out] == list(range(len(want)))
        np.testing.assert_allclose(np.stack([fr.weights for fr in out]), want, atol=1e-5)
