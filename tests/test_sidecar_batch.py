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

    def counting_run(audio, identity, history, **kw):
        calls.append(len(audio))
        return run(audio, identity, history, **kw)

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


def test_parallel_slices_give_the_same_windows_as_one_call(a2e_model, speech):
    """A2ERuntime(parallel=N) lets step_streams run a batch as N slices at once (serve --engine-threads): the
    same outputs as one call (a float model: rows are independent), and `timing` gets the calling thread's
    own slice. A plain run (bakes) stays one call."""
    from realtalk_bridge.runtime.a2e import A2ERuntime

    one, three = A2ERuntime(a2e_model), A2ERuntime(a2e_model, parallel=3)
    W = one.window_samples
    for b in (1, 2, 7):
        wins = np.stack([speech[i * 640:i * 640 + W] for i in range(b)]).astype(np.float32)
        ident = np.repeat(one.default_identity[None], b, 0)
        hist = np.repeat(one.default_history[None], b, 0)
        timing = {}
        got = three.run(wins, ident, hist, timing=timing, slices=3)
        np.testing.assert_allclose(got, one.run(wins, ident, hist), atol=1e-5)
        np.testing.assert_array_equal(three.run(wins, ident, hist), one.run(wins, ident, hist))  # default: one call
        assert got.shape == (b, one.n_frames, one.n_expr) and timing["wall"] > 0 and timing["cpu"] > 0
    try:
        A2ERuntime(a2e_model, parallel=0)
    except ValueError as exc:
        assert "parallel" in str(exc)
    else:
        raise AssertionError("parallel=0 must be refused")
