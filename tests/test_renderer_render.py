"""`realtalk-bridge render` end to end (real A2E on onnxruntime, real MediaPipe tracking, ffmpeg), and the
RendererSink publishing video/<stream> frames over a real ZeroMQ PUB/SUB pair on loopback."""
import json
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

from _renderer_synth import one_torch_thread, portrait, speech, tiny_renderer_onnx

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (Debian package ffmpeg)")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("render")
    return {"onnx": tiny_renderer_onnx(d / "tiny.onnx"), "image": portrait(d / "astronaut.png"),
            "speech": speech(d / "speech.wav", "we render a face"), "dir": d}


def probe(path):
    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                        "stream=codec_type,width,height,nb_read_frames,duration", "-of", "json", str(path)],
                       capture_output=True, text=True, check=True)
    return {s["codec_type"]: s for s in json.loads(r.stdout)["streams"]}


def first_frame(path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_render_portrait_with_a2e(media, tiny_a2e_onnx, tmp_path):
    import soundfile as sf

    from realtalk_bridge.cli import main

    out = tmp_path / "out.mp4"
    rc = main(["render", "--image", str(media["image"]), "--audio", str(media["speech"]), "--renderer",
               str(media["onnx"]), "--a2e", str(tiny_a2e_onnx), "--out", str(out), "--quiet"])
    assert rc == 0
    s = probe(out)
    assert s["video"]["width"] == 512 and s["video"]["height"] == 512
    assert "audio" in s
    dur = sf.info(str(media["speech"])).duration
    assert abs(int(s["video"]["nb_read_frames"]) - dur * 25) <= 2
    # the lower face was repainted, the rest of the photo kept (up to H.264)
    from skimage import data

    src, got = data.astronaut().astype(int), first_frame(out).astype(int)
    assert np.abs(got[:60] - src[:60]).mean() < 4  # far above the face
    assert np.abs(got[150:200, 200:260] - src[150:200, 200:260]).mean() > 8  # mouth/chin area of the astronaut


def test_render_video_source_with_given_coefficients(media, tmp_path):
    import cv2

    from realtalk_bridge.cli import main

    from skimage import data

    clip = tmp_path / "src.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (512, 512))
    for i in range(5):
        w.write(cv2.cvtColor(np.roll(data.astronaut(), i, axis=1), cv2.COLOR_RGB2BGR))
    w.release()
    expr = np.zeros((12, 52), np.float32)
    expr[:, 17] = np.linspace(0, 1, 12)
    np.savez(tmp_path / "c.npz", expr=expr)
    out = tmp_path / "out.mp4"
    assert main(["render", "--video", str(clip), "--audio", str(media["speech"]), "--coeffs", str(tmp_path / "c.npz"),
                 "--renderer", str(media["onnx"]), "--out", str(out), "--quiet"]) == 0
    s = probe(out)
    assert int(s["video"]["nb_read_frames"]) <= 12  # the 5-frame clip looped, cut at the shorter of coeffs / audio


def test_render_rejects_bad_inputs(media, tmp_path, capsys):
    from realtalk_bridge.cli import main

    base = ["render", "--image", str(media["image"]), "--renderer", str(media["onnx"]), "--out", str(tmp_path / "o.mp4")]
    assert main(base + ["--audio", str(tmp_path / "missing.wav")]) == 2
    assert "cannot read audio" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, expr=np.zeros((4, 3), np.float32))
    assert main(base + ["--audio", str(media["speech"]), "--coeffs", str(bad)]) == 2
    assert "must be (n, 52)" in capsys.readouterr().err
    assert main(["render", "--image", str(media["image"]), "--audio", str(media["speech"]), "--renderer",
                 str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "o.mp4")]) == 2


def test_renderer_sink_publishes_video_frames_over_zmq(media):
    import cv2
    import zmq

    from realtalk_bridge.face.arkit import ARKIT_NAMES
    from realtalk_bridge.runtime.renderer import RendererRuntime
    from realtalk_bridge.sidecar.messages import decode, encode, validate_stream
    from realtalk_bridge.video.driver import FaceDriver
    from realtalk_bridge.video.sink import RendererSink

    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        sub.connect(f"tcp://127.0.0.1:{port}")
        sub.setsockopt(zmq.SUBSCRIBE, b"video/")
        sub.setsockopt(zmq.RCVTIMEO, 200)
        lock = threading.Lock()

        def publish(topic, payload):
            with lock:
                pub.send_multipart([topic.encode(), encode(payload)])

        deadline = time.time() + 5  # slow joiner: wait until the subscription is through
        while True:
            publish("video/probe", {"v": 1})
            try:
                sub.recv_multipart()
                break
            except zmq.Again:
                assert time.time() < deadline
        sink = RendererSink(FaceDriver(RendererRuntime(media["onnx"])), media["image"], publish, quality=90)
        names = list(reversed(ARKIT_NAMES))  # names, not positions, carry the meaning
        n = 40
        for seq in range(n):
            w = np.zeros(52, np.float32)
            w[names.index("jawOpen")] = seq / n
            sink.send("mic", seq, seq / 25, names, w, None)
        got, deadline = [], time.time() + 20
        while time.time() < deadline:
            try:
                topic, raw = sub.recv_multipart()
            except zmq.Again:
                if sink.rendered + sink.dropped + sink.errors >= n:
                    break
                continue
            if topic != b"video/probe":
                got.append((topic, validate_stream(decode(raw), topic.decode())))  # protocol v1, section 3.4
        sink.close()
        assert sink.errors == 0, sink.last_error
        assert sink.rendered + sink.dropped == n and sink.dropped > 0  # it fell behind and dropped, never queued
        seqs = [p["seq"] for _, p in got]
        assert seqs == sorted(set(seqs)) and seqs[-1] == n - 1  # the newest frame is always shown
        topic, p = got[-1]
        assert topic == b"video/mic" and p["v"] == 1 and p["type"] == "video" and p["stream"] == "mic"
        assert p["encoding"] == "jpeg" and p["t"] == pytest.approx((n - 1) / 25) and p["wall"] > 0
        img = cv2.imdecode(np.frombuffer(p["data"], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (p["height"], p["width"], 3) == (512, 512, 3)
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()


def test_renderer_sink_loops_a_video_source(media, tmp_path):
    import cv2
    from skimage import data

    from realtalk_bridge.runtime.renderer import RendererRuntime
    from realtalk_bridge.video.driver import FaceDriver
    from realtalk_bridge.video.sink import RendererSink

    clip = tmp_path / "src.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (512, 512))
    for i in range(4):
        w.write(cv2.cvtColor(np.roll(data.astronaut(), 3 * i, axis=1), cv2.COLOR_RGB2BGR))
    w.release()
    got = []
    sink = RendererSink(FaceDriver(RendererRuntime(media["onnx"])), clip, lambda topic, p: got.append((topic, p)),
                        crop_only=True)
    assert len(sink.sources) == 4 and sink.driver.alpha.shape == (14,)
    for seq in range(3):
        sink.send("s1", seq, seq / 25, ["jawOpen"], [0.5])
        deadline = time.time() + 10
        while sink.rendered + sink.dropped <= seq and time.time() < deadline:
            time.sleep(0.01)
    sink.close()
    assert sink.errors == 0 and sink.rendered + sink.dropped == 3 and got
    topic, p = got[-1]
    assert topic == "video/s1" and (p["width"], p["height"]) == (64, 64)  # --render-crop: the model's crop
    with pytest.raises(ValueError, match="no face"):
        blank = tmp_path / "blank.png"
        cv2.imwrite(str(blank), np.full((64, 64, 3), 128, np.uint8))
        RendererSink(FaceDriver(RendererRuntime(media["onnx"])), blank, lambda *a: None)


def test_renderer_sink_inside_the_real_sidecar_server(media, tiny_a2e_onnx):
    """Audio pushed to a real sidecar Server -> A2E -> RendererSink -> `video/<stream>` on the server's PUB."""
    import zmq

    from realtalk_bridge.audio import load_audio
    from realtalk_bridge.client import Client
    from realtalk_bridge.runtime.a2e import A2ERuntime
    from realtalk_bridge.runtime.renderer import RendererRuntime
    from realtalk_bridge.sidecar.messages import decode, validate_stream
    from realtalk_bridge.sidecar.server import Server
    from realtalk_bridge.video.driver import FaceDriver
    from realtalk_bridge.video.sink import RendererSink, server_publish

    sink = RendererSink(FaceDriver(RendererRuntime(media["onnx"])), media["image"], None, crop_only=True)
    srv = Server(A2ERuntime(tiny_a2e_onnx), pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", sinks=[sink]).start()
    sink.publish = server_publish(srv)
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    try:
        sub.connect(srv.pub_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"video/")
        sub.setsockopt(zmq.RCVTIMEO, 200)
        time.sleep(0.3)  # slow joiner
        x = load_audio(media["speech"])
        got = []
        with Client(srv.ctl_endpoint) as c:
            c.stream_open("talk", fps=25)
            for a in range(0, len(x), 640):
                c.push_audio("talk", x[a:a + 640])
            deadline = time.time() + 15
            while time.time() < deadline and len(got) < 3:
                try:
                    topic, raw = sub.recv_multipart()
                except zmq.Again:
                    continue
                got.append(validate_stream(decode(raw), topic.decode()))
            c.stream_close("talk")
        assert got and all(p["stream"] == "talk" and p["encoding"] == "jpeg" for p in got)
        assert [p["seq"] for p in got] == sorted(p["seq"] for p in got)
    finally:
        sub.close(0)
        srv.stop()
    assert sink.errors == 0, sink.last_error


def test_serve_render_publishes_video_frames(media, tiny_a2e_onnx, tmp_path):
    """`realtalk-bridge serve --render` as a user runs it: a real subprocess, video/<stream> JPEGs on its PUB."""
    import os
    import sys

    import cv2
    import zmq

    from _sidecar_util import free_port
    from realtalk_bridge.sidecar.messages import decode, validate_stream

    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    cfg = tmp_path / "sidecar.toml"
    cfg.write_text(f'render_quality = 70\nrender_image = "{media["image"]}"\n')  # render options from the config file
    proc = subprocess.Popen([sys.executable, "-m", "realtalk_bridge", "serve", "--no-mic", "--loop",
                             "--input", str(media["speech"]), "--model", str(tiny_a2e_onnx), "--fps", "25",
                             "--render", str(media["onnx"]), "--config", str(cfg), "--pub", pub, "--ctl", ctl],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    sub = zmq.Context.instance().socket(zmq.SUB)
    try:
        sub.connect(pub)
        sub.setsockopt(zmq.SUBSCRIBE, b"video/file")
        sub.setsockopt(zmq.RCVTIMEO, 500)
        got, deadline = [], time.time() + 40
        while time.time() < deadline and len(got) < 3 and proc.poll() is None:
            try:
                topic, raw = sub.recv_multipart()
            except zmq.Again:
                continue
            got.append(validate_stream(decode(raw), topic.decode()))
        assert proc.poll() is None, proc.stdout.read()
        assert len(got) == 3
        img = cv2.imdecode(np.frombuffer(got[0]["data"], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape[:2] == (got[0]["height"], got[0]["width"]) == (512, 512)  # the astronaut, full frame
    finally:
        sub.close(0)
        proc.terminate()
        proc.wait(10)


def test_serve_render_without_a_source_is_a_clear_error(media, tiny_a2e_onnx):
    import sys

    r = subprocess.run([sys.executable, "-m", "realtalk_bridge", "serve", "--no-mic", "--model", str(tiny_a2e_onnx),
                        "--render", str(media["onnx"])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--render needs --render-image or --render-video" in r.stderr


@pytest.mark.parametrize("blocked, package", [(("tqdm",), "tqdm"),
                                              (("cv2", "mediapipe", "skimage", "scipy", "tqdm"), "cv2")])
def test_render_without_the_vision_extra_is_a_one_line_hint(media, tmp_path, blocked, package):
    """issue 15: `render` without the vision extra printed a traceback (No module named 'tqdm')."""
    import os
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {blocked!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, _Block())
        from realtalk_bridge.cli import main
        sys.exit(main(["render", "--image", {str(media["image"])!r}, "--audio", {str(media["speech"])!r},
                       "--renderer", {str(media["onnx"])!r}, "--out", {str(tmp_path / "o.mp4")!r}]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "REALTALK_DEBUG"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"realtalk-bridge render: needs {package}") and "[vision]" in lines[0]
    assert not (tmp_path / "o.mp4").exists()


def test_fit_length_repeats_or_cuts_the_speech():
    from realtalk_bridge.render import fit_length

    x = np.arange(1, 16001, dtype=np.float32)  # 1 s
    y = fit_length(x, 2.5, pause=0.5)
    assert len(y) == 40000 and np.array_equal(y[:16000], x) and not y[16000:24000].any()
    assert np.array_equal(y[24000:40000], x)
    assert np.array_equal(fit_length(x, 0.25), x[:4000])
