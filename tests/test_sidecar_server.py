"""The sidecar over real ZeroMQ sockets on loopback with a real A2E model (in-process Server)."""
import time

import msgpack
import numpy as np
import pytest
import zmq

from _sidecar_util import a2e_model, runtime, server, speech  # noqa: F401  (fixtures)
from realtalk_bridge.client import Client, RequestError, Subscriber
from realtalk_bridge.runtime.a2e import infer_offline
from realtalk_bridge.sidecar import messages as m
from realtalk_bridge.sidecar.server import Server, is_loopback

CHUNK = 320  # 20 ms


def _push_all(client, stream, x, chunk=CHUNK):
    r = None
    for a in range(0, len(x), chunk):
        r = client.push_audio(stream, x[a:a + chunk])
    return r


def _subscribe(srv, streams, **kw):
    sub = Subscriber(srv.pub_endpoint, streams=streams, **kw)
    # PUB/SUB slow joiner: wait until the subscription reached the sidecar (a status arrives each second;
    # stream_open below also publishes one)
    time.sleep(0.3)
    return sub


def test_hello_ping_status(server):
    with Client(server.ctl_endpoint) as c:
        info = c.hello()
        assert info["protocol"] == 1 and info["pub"] == server.pub_endpoint
        assert info["layouts"]["arkit52"][17] == "jawOpen" and info["sample_rate"] == 16000
        assert c.ping() < 1.0
        st = c.status()
        assert st["server"].startswith("realtalk-bridge") and st["streams"] == []


def test_pushed_stream_equals_offline_bake_and_has_no_gaps(server, runtime, speech):
    x = speech[: 16000 * 3]
    with Client(server.ctl_endpoint) as c, _subscribe(server, ["s1"], events=True) as sub:
        opened = c.stream_open("s1", fps=30, lookahead_ms=80)
        assert opened["names"] == list(runtime.names)
        r = _push_all(c, "s1", x)
        assert r["samples"] == len(x) and r["t"] == pytest.approx(3.0)
        closed = c.stream_close("s1")
        frames = list(sub.frames(timeout=1.0))
        assert len(frames) == closed["frames"] == 90
        assert [f.seq for f in frames] == list(range(90)) and sub.gaps == 0
        assert frames[0].t == 0.0 and frames[-1].t == pytest.approx(89 / 30)
        streamed = np.stack([f.weights for f in frames])
        offline = infer_offline(runtime, x, fps=30, lookahead_ms=80)
        np.testing.assert_allclose(streamed, offline, atol=1e-5)
        baked = c.bake(x, fps=30)
        np.testing.assert_allclose(baked.weights, offline, atol=1e-6)
        assert {"stream_open", "stream_close"} <= {e["event"] for e in sub.events}
        # the frames carry real, time-varying output, not a constant
        assert streamed.std(axis=0).max() > 1e-3


def test_bake_file_bytes_and_other_fps(server, runtime, speech):
    import io

    import soundfile as sf

    x = speech[:16000 * 2]
    x16 = np.round(x * 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, x16, 16000, format="FLAC", subtype="PCM_16")  # lossless: the same samples as x16
    with Client(server.ctl_endpoint) as c:
        flac = c.bake(buf.getvalue(), fps=25)
        assert flac.weights.shape == (50, 52)
        raw = c.bake(x16, fps=25)
        np.testing.assert_allclose(flac.weights, raw.weights, atol=1e-6)
        film = c.bake(x, fps=24)  # not a native stream rate: resampled from the 60 fps grid
        assert film.weights.shape == (48, 52) and film.fps == 24
        with pytest.raises(RequestError) as e:
            c.bake(b"RIFF not really a wav file")
        assert e.value.code == "bad_request"


def test_streams_belong_to_their_client(server, speech):
    with Client(server.ctl_endpoint) as a, Client(server.ctl_endpoint) as b:
        a.stream_open("mine")
        with pytest.raises(RequestError) as e:
            b.push_audio("mine", speech[:320])
        assert e.value.code == "unknown_stream"
        with pytest.raises(RequestError) as e:
            b.stream_open("mine")
        assert e.value.code == "busy"
        with pytest.raises(RequestError) as e:
            a.stream_open("mic")
        assert e.value.code == "bad_request"
        with pytest.raises(RequestError) as e:
            a.push_audio("nope", speech[:320])
        assert e.value.code == "unknown_stream"
        with pytest.raises(RequestError) as e:
            a.stream_open("x", fps=24)
        assert e.value.code == "bad_request"
        a.stream_open("mine")  # re-opening one's own stream resets it
        assert a.stream_close("mine")["frames"] == 0


def test_set_params_gains_smoothing_offset(server, speech):
    x = speech[:16000]
    with Client(server.ctl_endpoint) as c, _subscribe(server, ["g"]) as sub:
        c.stream_open("g", fps=25)
        params = c.set_params("g", gains={"jawOpen": 0.0, "notAName": 2.0}, smoothing=0.5, audio_offset_ms=100.0)
        assert params == {"fps": 25.0, "lookahead_ms": 80.0, "smoothing": 0.5,
                          "gains": {"jawOpen": 0.0, "notAName": 2.0}, "audio_offset_ms": 100.0}
        _push_all(c, "g", x)
        c.stream_close("g")
        frames = list(sub.frames(timeout=1.0))
        assert len(frames) == 25
        assert all(f.get("jawOpen") == 0.0 for f in frames)
        assert frames[0].t == pytest.approx(0.1)
        with pytest.raises(RequestError) as e:
            c.set_params("g", smoothing=0.5)
        assert e.value.code == "unknown_stream"


def test_set_params_fps_change_keeps_time_running(server, speech):
    with Client(server.ctl_endpoint) as c, _subscribe(server, ["f"]) as sub:
        c.stream_open("f", fps=25)
        _push_all(c, "f", speech[:16000])
        assert c.set_params("f", fps=50)["fps"] == 50.0
        _push_all(c, "f", speech[16000:32000])
        c.stream_close("f")
        frames = list(sub.frames(timeout=1.0))
        assert [f.seq for f in frames] == list(range(len(frames)))
        ts = [f.t for f in frames]
        assert all(b > a for a, b in zip(ts, ts[1:])), "time must keep increasing across the fps change"
        assert {f.fps for f in frames} == {25.0, 50.0} and len(frames) == 25 + 50


def test_set_identity_validates_dims(server, runtime):
    with Client(server.ctl_endpoint) as c:
        c.stream_open("id")
        E = len(runtime.names)
        r = c.set_identity("id", history=np.zeros((4, E), np.float32))
        assert r["history_frames"] == 4
        with pytest.raises(RequestError) as e:
            c.set_identity("id", history=np.zeros(E + 1, np.float32))
        assert e.value.code == "bad_request"
        if runtime.n_id:
            assert c.set_identity("id", alpha=np.zeros(runtime.n_id, np.float32))["alpha_dims"] == runtime.n_id
            with pytest.raises(RequestError) as e:
                c.set_identity("id", alpha=np.zeros(runtime.n_id + 3, np.float32))
            assert e.value.code == "bad_request"


def test_set_identity_changes_the_frames_like_offline(server, runtime, speech):
    x = speech[:16000]
    rng = np.random.default_rng(0)
    alpha = rng.normal(0, 1, runtime.n_id).astype(np.float32) if runtime.n_id else None
    history = rng.uniform(0, 0.5, (runtime.n_hist, len(runtime.names))).astype(np.float32)
    with Client(server.ctl_endpoint) as c, _subscribe(server, ["who"]) as sub:
        c.stream_open("who", fps=25)
        c.set_identity("who", alpha=alpha)
        r = c.set_identity("who", history=history)  # alpha stays as set
        assert r["history_frames"] == runtime.n_hist and r["alpha_dims"] == runtime.n_id
        _push_all(c, "who", x)
        c.stream_close("who")
        got = np.stack([f.weights for f in sub.frames(timeout=1.0)])
    want = infer_offline(runtime, x, fps=25, identity=alpha, history=history)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(want - infer_offline(runtime, x, fps=25)).max() > 1e-4, "the style inputs must matter"


def test_set_emotion_without_post_processor_is_not_supported(server):
    with Client(server.ctl_endpoint) as c:
        c.stream_open("e")
        with pytest.raises(RequestError) as e:
            c.set_emotion("e", "happy", 0.5)
        assert e.value.code == "not_supported"


class HeadNod:
    """A small real post-processor: nods the head with time and raises the brows by an emotion level."""

    def __init__(self, names):
        self.brow = names.index("browInnerUp")
        self.level = 0.0

    def step(self, t, w):
        w = w.copy()
        w[self.brow] = self.level
        return w, np.array([0.1 * np.sin(t), 0, 0, 0, 0, 0], np.float32)

    def set_emotion(self, name, strength):
        if name not in ("surprised", "neutral"):
            raise ValueError(f"unknown emotion {name!r}")
        self.level = strength if name == "surprised" else 0.0


class ListSink:
    def __init__(self):
        self.frames, self.closed = [], False

    def send(self, stream, seq, t, names, weights, pose):
        self.frames.append((stream, seq, t, list(names), np.array(weights), None if pose is None else np.array(pose)))

    def close(self):
        self.closed = True


def test_post_process_hook_sinks_and_set_emotion(runtime, speech):
    sink = ListSink()
    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", sinks=[sink],
                 postprocess=lambda stream, names, fps: HeadNod(list(names))).start()
    try:
        with Client(srv.ctl_endpoint) as c, _subscribe(srv, ["p"]) as sub:
            c.stream_open("p", fps=25)
            r = c.set_emotion("p", "surprised", 0.75)
            assert (r["emotion"], r["strength"]) == ("surprised", 0.75)
            with pytest.raises(RequestError) as e:
                c.set_emotion("p", "bored")
            assert e.value.code == "bad_request"
            _push_all(c, "p", speech[:8000])
            c.stream_close("p")
            frames = list(sub.frames(timeout=1.0))
    finally:
        srv.stop()
    assert sink.closed and len(sink.frames) == len(frames) == 13
    for f, (stream, seq, t, names, w, pose) in zip(frames, sink.frames):
        assert (stream, seq) == ("p", f.seq) and t == f.t
        np.testing.assert_array_equal(w, f.weights)
        np.testing.assert_allclose(pose, f.pose)
        assert f.get("browInnerUp") == 0.75
        assert f.pose[0] == pytest.approx(0.1 * np.sin(f.t), abs=1e-6)


def test_idle_stream_is_closed_and_freed(runtime, speech):
    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", idle_timeout=0.4,
                 heartbeat_s=0.1).start()
    try:
        with Client(srv.ctl_endpoint) as c, _subscribe(srv, ["idle"], events=True) as sub:
            c.stream_open("idle")
            c.push_audio("idle", speech[:1600])
            time.sleep(1.0)
            list(sub.frames(timeout=0.2))
            closes = [e for e in sub.events if e["event"] == "stream_close"]
            assert closes and closes[0]["message"] == "idle timeout"
            assert c.status()["streams"] == []
            with pytest.raises(RequestError):
                c.push_audio("idle", speech[:320])
    finally:
        srv.stop()


def test_stalled_subscriber_never_blocks_the_stream(server, speech):
    x = np.tile(speech, 6)[: 16000 * 36]  # 36 s at 60 fps: 2160 frames, more than HWM + socket buffers hold
    ctx = zmq.Context.instance()
    stalled = ctx.socket(zmq.SUB)  # subscribes and then never reads
    stalled.setsockopt(zmq.RCVHWM, 5)
    stalled.setsockopt(zmq.RCVBUF, 4096)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.connect(server.pub_endpoint)
    stalled.setsockopt(zmq.SUBSCRIBE, b"coeffs/busy")
    try:
        with Client(server.ctl_endpoint, timeout=10) as c, _subscribe(server, ["busy"]) as sub:
            c.stream_open("busy", fps=60)
            t0 = time.perf_counter()
            _push_all(c, "busy", x, chunk=1600)
            elapsed = time.perf_counter() - t0
            n = c.stream_close("busy")["frames"]
            frames = list(sub.frames(timeout=1.0))
        assert n == 2160 and len(frames) == n and sub.gaps == 0
        assert elapsed < 36.0 / 2, "pushing must stay far faster than real time with a stalled subscriber"
        # the stalled subscriber did lose frames: it is the one that pays, not the stream
        kept = 0
        while stalled.poll(0):
            stalled.recv_multipart()
            kept += 1
        assert kept < n
    finally:
        stalled.close(0)


def test_malformed_requests_get_error_replies_and_server_keeps_serving(server):
    ctx = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(server.ctl_endpoint)
    cases = [
        (b"\xc1", "bad_msgpack"),
        (msgpack.packb([1, 2, 3]), "bad_msgpack"),
        (msgpack.packb({"v": 1}), "bad_request"),
        (msgpack.packb({"v": 9, "op": "ping"}), "unsupported_version"),
        (msgpack.packb({"v": 1, "op": "explode"}), "unknown_op"),
        (msgpack.packb({"v": 1, "op": "push_audio", "stream": "x", "pcm": "no", "format": "s16"}), "bad_request"),
        (msgpack.packb({"v": 1, "op": "stream_open", "fps": float("nan")}), "bad_request"),
        (msgpack.packb({"v": True, "op": "ping"}), "bad_request"),
        (msgpack.packb({"v": 1, "op": "hello", "versions": [2, 3]}), "unsupported_version"),
        (msgpack.packb({"v": 1, "op": "bake", "audio": b"\0\0", "format": "s16"}), "bad_request"),  # no rate
    ]
    try:
        for payload, code in cases:
            d.send_multipart([b"", payload])
            assert d.poll(2000), f"no reply for {payload!r}"
            reply = m.validate_reply(m.decode(d.recv_multipart()[-1]))
            assert reply["ok"] is False and reply["error"]["code"] == code, (payload, reply)
            if code == "unsupported_version":
                assert reply["versions"] == [1]
        # a REQ socket works too, and the server still answers
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server.ctl_endpoint)
        req.send(m.encode({"v": 1, "op": "ping", "id": "r"}))
        assert req.poll(2000)
        assert m.decode(req.recv())["ok"] is True
        req.close(0)
    finally:
        d.close(0)
    assert server.stats["errors"] >= len(cases)


def test_oversized_message_is_rejected(runtime):
    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", max_message_bytes=4096).start()
    try:
        with Client(srv.ctl_endpoint, timeout=2) as c:
            c.stream_open("big")
            with pytest.raises(RequestError) as e:
                c.push_audio("big", np.zeros(2000, np.float32))  # 8000 bytes > 4096
            assert e.value.code == "too_large"
            # beyond MAXMSGSIZE ZeroMQ drops the peer; the server survives and others are served
            d = zmq.Context.instance().socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.connect(srv.ctl_endpoint)
            d.send_multipart([b"", b"x" * (4096 + (2 << 20))])
            time.sleep(0.2)
            d.close(0)
            assert c.ping() < 1.0
    finally:
        srv.stop()


def test_remote_bind_needs_allow_remote(runtime):
    assert is_loopback("tcp://127.0.0.1:1") and is_loopback("tcp://localhost:*") and is_loopback("ipc:///tmp/x")
    assert not is_loopback("tcp://0.0.0.0:47200") and not is_loopback("tcp://*:47200")
    with pytest.raises(ValueError, match="allow-remote"):
        Server(runtime, pub="tcp://0.0.0.0:0", ctl="tcp://127.0.0.1:*")


def test_curve_encryption(runtime, tmp_path):
    from realtalk_bridge.sidecar.serve import make_curve_keys
    from zmq import auth

    public, secret = make_curve_keys(tmp_path)
    server_key, _ = auth.load_certificate(str(public))
    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", curve_secret_key=str(secret)).start()
    try:
        with Client(srv.ctl_endpoint, timeout=3, server_public_key=server_key) as c:
            assert c.hello()["protocol"] == 1
        with Client(srv.ctl_endpoint, timeout=0.5) as plain:
            with pytest.raises(TimeoutError):
                plain.ping()
    finally:
        srv.stop()


def test_pushed_stream_at_48khz_is_resampled(server, runtime, speech):
    import soxr

    x = speech[:16000]
    x48 = soxr.resample(x, 16000, 48000).astype(np.float32)
    with Client(server.ctl_endpoint) as c, _subscribe(server, ["hi"]) as sub:
        c.stream_open("hi", fps=25, sample_rate=48000)
        r = _push_all(c, "hi", x48, chunk=960)
        assert r["samples"] == len(x48) and r["t"] == pytest.approx(1.0)
        assert c.stream_close("hi")["frames"] == 25
        frames = list(sub.frames(timeout=1.0))
    np.testing.assert_allclose(np.stack([f.weights for f in frames]), infer_offline(runtime, x, fps=25),
                               atol=0.05)  # resampled twice: close, not bit-exact


def test_microphone_errors_are_events_and_not_fatal(server):
    """This machine has no sound card: the mic source must report and retry, and serving goes on.
    (Where a real input exists, it must deliver frames instead.)"""
    from realtalk_bridge.sidecar.sources import MicSource

    with _subscribe(server, ["mic"], events=True) as sub:
        mic = MicSource(server, retry_s=0.2).start()
        try:
            deadline = time.monotonic() + 4
            got_frame = False
            while time.monotonic() < deadline and not got_frame:
                got_frame = sub.recv(timeout=0.2) is not None
                if sum(e["event"] == "source_error" for e in sub.events) >= 2:
                    break
        finally:
            mic.stop()
        errors = [e for e in sub.events if e["event"] == "source_error"]
        assert got_frame or len(errors) >= 2, sub.events
        if errors:
            assert "retrying" in errors[0]["message"]
    with Client(server.ctl_endpoint) as c:
        assert c.ping() < 1.0
        assert "mic" in {s["stream"] for s in c.status()["streams"]}


class JpegRenderer:
    """A renderer-like sink: paints a real JPEG per frame (the jaw opening as a bar) and publishes it through
    the server's callback, from its own thread as a real renderer would."""

    def __init__(self, publish):
        import queue
        import threading

        self.publish, self.q, self.sent = publish, queue.Queue(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def send(self, stream, seq, t, names, weights, pose):
        self.q.put((stream, seq, t, float(weights[list(names).index("jawOpen")])))

    def _run(self):
        import cv2

        while True:
            item = self.q.get()
            if item is None:
                return
            stream, seq, t, jaw = item
            img = np.zeros((32, 48, 3), np.uint8)
            img[:, : int(48 * min(max(jaw, 0), 1))] = 255
            ok, jpg = cv2.imencode(".jpg", img)
            self.sent += self.publish(stream, seq, t, 48, 32, "jpeg", jpg.tobytes())

    def close(self):
        self.q.put(None)
        self.thread.join(5)


def test_publish_video_from_a_renderer_thread(runtime, speech):
    cv2 = pytest.importorskip("cv2", reason="opencv (the vision extra) paints the test JPEGs")

    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*")
    srv.sinks.append(JpegRenderer(srv.publish_video))  # the sink needs the server's callback
    srv.start()
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(srv.pub_endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"video/v")
    time.sleep(0.3)
    try:
        with Client(srv.ctl_endpoint) as c:
            c.stream_open("v", fps=25)
            _push_all(c, "v", speech[:8000])
            n = c.stream_close("v")["frames"]
        got = []
        while sub.poll(1000):
            topic, payload = sub.recv_multipart()
            got.append(m.validate_stream(m.decode(payload), topic.decode()))
            if len(got) == n:
                break
        with pytest.raises(m.ProtocolError):
            srv.publish_video("v", 0, 0.0, 2, 2, "rgb8", b"short")  # rgb8 must be w*h*3 bytes
    finally:
        srv.stop()
        sub.close(0)
    assert len(got) == n == 13 and [g["seq"] for g in got] == list(range(n))
    img = cv2.imdecode(np.frombuffer(got[0]["data"], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (32, 48, 3)


def test_concurrent_bakes_beyond_the_limit_are_busy(server, speech):
    """Bakes run on a 2-thread pool: a third one sent while two run gets `busy`; the others complete."""
    x = np.tile(speech, 3)  # ~18 s: each bake takes a while
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(server.ctl_endpoint)
    try:
        for i in range(3):
            d.send_multipart([b"", m.encode({"v": 1, "op": "bake", "id": i, "audio": m.pack_f32(x),
                                              "format": "f32", "sample_rate": 16000, "fps": 25.0})])
        replies = {}
        while len(replies) < 3 and d.poll(30000):
            r = m.validate_reply(m.decode(d.recv_multipart()[-1]))
            replies[r["id"]] = r
    finally:
        d.close(0)
    assert replies[2]["ok"] is False and replies[2]["error"]["code"] == "busy"
    assert replies[0]["ok"] and replies[1]["ok"] and replies[0]["n_frames"] == int(np.ceil(len(x) * 25 / 16000))
    assert replies[0]["w"] == replies[1]["w"]


def test_energy_vad_events_and_state_at_a_time(speech):
    from realtalk_bridge.sidecar.server import EnergyVad

    vad = EnergyVad()
    silence = np.zeros(8000, np.float32)
    events = []
    for part in (silence, speech[16000:32000], silence):  # 0.5 s quiet, 1 s speech, 0.5 s quiet
        for a in range(0, len(part), 320):
            events += vad.push(part[a:a + 320])
    assert [e for e, _ in events] == ["speech_start", "speech_stop"]
    start, stop = events[0][1], events[1][1]
    assert 0.5 < start < 0.6 and 1.5 < stop < 1.9
    assert not vad.active_at(0.25) and vad.active_at(1.0) and not vad.active_at(1.95)


def test_frames_are_paced_not_burst(server, speech):
    """Frame pacing (issue 14): pushed at real-time pace, a 60 fps stream's frames leave one by one at
    about 1/60 s, not 2-3 at a time every 40 ms as the 25 Hz model steps produce them."""
    x = speech[: 16000 * 2]
    with Client(server.ctl_endpoint) as c, _subscribe(server, ["paced"]) as sub:
        c.stream_open("paced", fps=60)
        t0 = time.time()
        for a in range(0, len(x), CHUNK):
            time.sleep(max(0.0, t0 + (a + CHUNK) / 16000 - time.time()))
            c.push_audio("paced", x[a:a + CHUNK])
        walls = [f.wall for f in sub.frames(timeout=0.5)]
        c.stream_close("paced")
    gaps = np.diff(walls[:100])
    assert len(gaps) > 60
    # unpaced, about half the intervals are ~0 (frames of one model step leave together)
    assert np.mean(gaps < 0.004) < 0.15, np.round(gaps * 1000, 1)
    assert abs(np.median(gaps) - 1 / 60) < 0.004


def test_pace_delay_rises_to_a_late_frame_at_once_and_creeps_down():
    """Frame pacing's delay: a later frame raises it at once (capped at one 20 ms chunk), then it falls by
    PACE_DECAY_S per frame, so consecutive frames' due times move by microseconds, not milliseconds."""
    from realtalk_bridge.sidecar import server as srv

    st = srv.StreamState(stream="s", source="push", owner=None, fps=30, lookahead_ms=80, sample_rate=16000, a2e=None)
    delays = [srv.Server._pace_delay(st, late) for late in [0.001, 0.004, 0.002, 0.0, 0.05] + [0.0] * 100]
    assert delays[:2] == [0.001, 0.004]
    assert delays[2] == pytest.approx(0.004 - srv.PACE_DECAY_S) and delays[3] == pytest.approx(0.004 - 2 * srv.PACE_DECAY_S)
    assert delays[4] == srv.MAX_PACE_DELAY_S
    steps = np.diff(delays[4:])
    assert np.all(steps <= 0) and np.all(steps >= -srv.PACE_DECAY_S - 1e-12)
