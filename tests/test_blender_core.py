"""The Blender add-on's pure logic (plugins/blender/realtalk_blender/core), without Blender:
name mapping, presets, resampling, protocol decoding (golden vectors), and the client against a
real ZeroMQ peer on loopback."""
from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from array import array
from pathlib import Path

import msgpack
import pytest
import zmq

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "blender"
sys.path.insert(0, str(PLUGIN))

from realtalk_blender import _vendor  # noqa: E402
from realtalk_blender.core import mapping, protocol, resample  # noqa: E402
from realtalk_blender.core.client import Client, RequestError, is_loopback, parse_endpoint  # noqa: E402
from realtalk_blender.core.names import ARKIT_NAMES  # noqa: E402
from realtalk_bridge.face.arkit import ARKIT_NAMES as PROJECT_NAMES  # noqa: E402

VECTORS = ROOT / "protocol" / "vectors"
from _sidecar_util import a2e_model  # noqa: E402,F401  (fixture: the model a real sidecar serves)


# -- names and mapping ---------------------------------------------------------------------------------
def test_names_copy_matches_project():
    assert ARKIT_NAMES == PROJECT_NAMES


@pytest.mark.parametrize("spelling,arkit", [
    ("jawOpen", "jawOpen"), ("JawOpen", "jawOpen"), ("jaw_open", "jawOpen"), ("JAW_OPEN", "jawOpen"),
    ("mouthSmile_L", "mouthSmileLeft"), ("MouthSmileLeft", "mouthSmileLeft"), ("mouth_smile_left", "mouthSmileLeft"),
    ("eyeBlink_R", "eyeBlinkRight"), ("blendShape1.jawOpen", "jawOpen"), ("ARKit_browInnerUp", "browInnerUp"),
    ("EyeBlinkLeft", "eyeBlinkLeft"), ("cheekSquint_L", "cheekSquintLeft"), ("BS_tongueOut", "tongueOut"),
])
def test_auto_map_spellings(spelling, arkit):
    chans = mapping.auto_map(ARKIT_NAMES, ["Basis_other", spelling])
    assert [(c.source, c.target) for c in chans] == [(arkit, spelling)]


def test_left_and_right_never_confused():
    chans = mapping.auto_map(ARKIT_NAMES, ["eyeBlink_L", "eyeBlink_R", "mouthSmile_R"])
    assert {c.source: c.target for c in chans} == {
        "eyeBlinkLeft": "eyeBlink_L", "eyeBlinkRight": "eyeBlink_R", "mouthSmileRight": "mouthSmile_R"}


def test_vrm_aliases_and_unmatched():
    chans = {c.source: c.target for c in mapping.auto_map(ARKIT_NAMES, ["aa", "ou", "blinkLeft", "Blink_R", "Hair"])}
    assert chans == {"jawOpen": "aa", "mouthFunnel": "ou", "eyeBlinkLeft": "blinkLeft", "eyeBlinkRight": "Blink_R"}
    assert mapping.auto_map(ARKIT_NAMES, ["Hair", "Key 1"]) == []


def test_table_overrides_and_fans_out():
    table = [mapping.Channel("jawOpen", "MTH_A", gain=0.5), mapping.Channel("jaw_open", "Chin_Down", gain=2.0),
             mapping.Channel("noSuchChannel", "MTH_A")]
    chans = mapping.auto_map(ARKIT_NAMES, ["MTH_A", "chin_down", "JawOpen"], table)
    got = {(c.source, c.target, c.gain) for c in chans}
    # table rows add keys; the automatic match jawOpen -> JawOpen still holds
    assert got == {("jawOpen", "MTH_A", 0.5), ("jawOpen", "chin_down", 2.0), ("jawOpen", "JawOpen", 1.0)}
    # a disabled row takes a key away from the automatic pass
    off = mapping.auto_map(ARKIT_NAMES, ["JawOpen"], [mapping.Channel("jawOpen", "JawOpen", enabled=False)])
    assert mapping.drive(off, {"jawOpen": 1.0}, {}) == {}


def test_gain_offset_clamp_smoothing():
    ch = mapping.Channel("jawOpen", "k", gain=2.0, offset=-0.1, lo=0.0, hi=0.8)
    assert mapping.shape_value(0.3, ch) == pytest.approx(0.5)
    assert mapping.shape_value(0.9, ch) == 0.8
    assert mapping.shape_value(0.01, ch) == 0.0
    sm = mapping.Channel("jawOpen", "k", smoothing=0.5)
    assert mapping.shape_value(1.0, sm, prev=0.0) == pytest.approx(0.5)
    # a step converges geometrically
    v = 0.0
    for _ in range(20):
        v = mapping.shape_value(1.0, sm, prev=v)
    assert 0.999 < v <= 1.0


def test_drive_sums_rows_into_one_key_and_skips_disabled():
    chans = [mapping.Channel("jawOpen", "aa", gain=0.6), mapping.Channel("mouthFunnel", "aa", gain=0.6),
             mapping.Channel("eyeBlinkLeft", "blink", enabled=False)]
    out = mapping.drive(chans, {"jawOpen": 1.0, "mouthFunnel": 1.0, "eyeBlinkLeft": 1.0}, {})
    assert out == {"aa": 1.0}  # 1.2 clamped to the row range


def test_preset_roundtrip_and_bad_presets():
    rows = [mapping.Channel("jawOpen", "Fcl_MTH_A", 1.5, 0.1, 0.0, 0.9, 0.2, False)]
    assert mapping.load_preset(mapping.dump_preset(rows)) == rows
    for bad, msg in [("{", "not JSON"), ("[]", "not a realtalk"),
                     ('{"format": "realtalk-blender-mapping", "version": 9, "channels": []}', "version"),
                     ('{"format": "realtalk-blender-mapping", "version": 1, "channels": [{"source": 1}]}', "source"),
                     ('{"format": "realtalk-blender-mapping", "version": 1, "channels": '
                      '[{"source": "a", "target": "b", "gain": "x"}]}', "gain"),
                     ('{"format": "realtalk-blender-mapping", "version": 1, "channels": '
                      '[{"source": "a", "target": "b", "gain": NaN}]}', "gain")]:
        with pytest.raises(ValueError, match=msg):
            mapping.load_preset(bad)


# -- resampling ------------------------------------------------------------------------------------------
def test_resample_to_scene_fps():
    # a 25 fps ramp over 2 s -> 24 fps: floor(2 * 24) + 1 keys, values on the line
    times = [k / 25 for k in range(51)]
    rows = [array("f", [t, 1.0 - t]) for t in times]
    out = resample.resample(times, rows, 24.0)
    assert len(out) == resample.grid(0.0, 2.0, 24.0) == 49
    for k, r in enumerate(out):
        assert r[0] == pytest.approx(k / 24, abs=1e-5) and r[1] == pytest.approx(1 - k / 24, abs=1e-5)


def test_resample_holds_edges_and_drops_backsteps():
    out = resample.resample([1.0, 1.0, 2.0, 1.5], [[0.0], [9.0], [1.0], [5.0]], 2.0, t_start=0.0, n=6)
    assert [round(r[0], 4) for r in out] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert resample.resample([], [], 30.0) == []


def test_key_coords_and_split_takes():
    assert list(resample.key_coords(10, [0.5, 0.25])) == [10.0, 0.5, 11.0, 0.25]
    times = [k / 30 for k in range(100)] + [k / 30 for k in range(50)]  # restart at index 100
    takes = resample.split_takes(times, max_frames=40, fps=30.0)
    assert takes[0] == (0, 40) and (100, 140) in takes and takes[-1][1] == 150
    assert all(b - a <= 40 for a, b in takes)


# -- protocol --------------------------------------------------------------------------------------------
def _expand(x):
    if isinstance(x, dict):
        if set(x) == {"$f32"}:
            return array("f", x["$f32"])
        if set(x) == {"$s16"}:
            return array("h", x["$s16"])
        if set(x) == {"$hex"}:
            return bytes.fromhex(x["$hex"])
        return {k: _expand(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_expand(v) for v in x]
    return x


def _vectors():
    if not (VECTORS / "index.json").exists():
        pytest.skip(f"no golden vectors at {VECTORS} yet (they land on main with the protocol milestone)")
    return json.loads((VECTORS / "index.json").read_text())["vectors"]


def test_golden_vectors_decode():
    layouts = {"arkit52": tuple(ARKIT_NAMES)}
    seen = 0
    for v in _vectors():
        payload = (VECTORS / f"{v['name']}.msgpack").read_bytes()
        expect = json.loads((VECTORS / f"{v['name']}.json").read_text())
        if v["expect"] != "ok":
            continue
        msg = protocol.decode(payload)
        want = _expand(expect)
        for key, value in want.items():
            got = msg[key]
            if isinstance(value, array):
                assert array(value.typecode, got) == value if isinstance(got, list) else (
                    protocol.f32(got) == value if value.typecode == "f" else protocol.s16(got) == value), v["name"]
            else:
                assert got == value, (v["name"], key)
        if msg.get("type") == "coeffs":
            f = protocol.parse_coeffs(msg, layouts)
            assert len(f.weights) == len(f.names) and f.weights == want["w"]
            assert f.as_dict()[f.names[0]] == want["w"][0]
            seen += 1
        if msg.get("type") == "status" or v["name"] == "rep_hello":
            assert protocol.parse_layouts(msg)
        if v["name"] == "rep_bake":
            b = protocol.parse_bake(msg)
            assert len(b.row(b.n_frames - 1)) == len(b.names)
        if v["name"].startswith("rep_error"):
            assert protocol.reply_error(msg)[0] == want["error"]["code"]
    assert seen == 3


def test_bad_vectors_rejected():
    layouts = {"arkit52": tuple(ARKIT_NAMES)}
    rejected = 0
    for v in _vectors():
        if v["expect"] == "ok":
            continue
        payload = (VECTORS / f"{v['name']}.msgpack").read_bytes()
        if v["expect"] == "bad_msgpack":
            with pytest.raises(protocol.ProtocolError):
                protocol.decode(payload)
            rejected += 1
        elif v["kind"] == "stream":
            with pytest.raises(protocol.ProtocolError):
                protocol.parse_coeffs(protocol.decode(payload), layouts)
            rejected += 1
    assert rejected >= 7


def test_coeffs_validation_by_hand():
    names = ["jawOpen", "mouthClose"]
    base = {"v": 1, "type": "coeffs", "stream": "mic", "seq": 3, "t": 0.1, "wall": 1.0, "fps": 30.0,
            "layout": "x", "names": names, "w": protocol.pack_f32([0.5, 0.25])}
    layouts: dict = {}
    assert protocol.parse_coeffs(dict(base), layouts).as_dict() == {"jawOpen": 0.5, "mouthClose": 0.25}
    no_names = {k: v for k, v in base.items() if k != "names"}
    assert protocol.parse_coeffs(no_names, layouts).names == tuple(names)  # learned from the first frame
    for bad in [{"v": 2}, {"seq": True}, {"seq": -1}, {"w": b"\x00" * 7}, {"w": protocol.pack_f32([0.1])},
                {"w": protocol.pack_f32([0.1, math.inf])}, {"fps": 0.0}, {"t": math.nan}, {"stream": "../x"},
                {"pose": b"\x00" * 8}, {"names": [1, 2]}]:
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_coeffs({**base, **bad}, {})
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_coeffs(no_names, {})  # names unknown: skip, never guess by index
    with pytest.raises(protocol.ProtocolError, match="limit"):
        protocol.decode(b"\x80" * 100, max_size=10)


def test_endpoints():
    assert is_loopback("tcp://127.0.0.1:47200") and is_loopback("tcp://localhost:1") and is_loopback("tcp://[::1]:5")
    assert not is_loopback("tcp://192.168.1.5:47200") and not is_loopback("tcp://studio-pc:47200")
    assert parse_endpoint("ipc:///tmp/x") == ("ipc", "")
    for bad in ["127.0.0.1:47200", "tcp://127.0.0.1", "tcp://127.0.0.1:0", "tcp://:47200", "http://x:1"]:
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_vendor_wheel_selection():
    cp = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert _vendor._wheel_fits(f"pyzmq-27.3.0-{cp}-{cp}-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl") == \
        (sys.platform == "linux" and __import__("platform").machine() == "x86_64")
    assert not _vendor._wheel_fits("pyzmq-27.3.0-cp27-cp27m-manylinux_2_28_x86_64.whl")
    assert not _vendor._wheel_fits(f"msgpack-1.2.4-{cp}-{cp}-win_amd64.whl") or sys.platform == "win32"


# -- the client against a real ZeroMQ peer -----------------------------------------------------------------
def _free_ports(n=2):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class _Peer:
    """A hand-driven PUB + ROUTER on loopback: the test decides every byte the client sees."""

    def __init__(self, pub_port, ctl_port):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.bind(f"tcp://127.0.0.1:{pub_port}")
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.bind(f"tcp://127.0.0.1:{ctl_port}")

    def answer(self, timeout=2.0, client=None, **extra):
        deadline = time.monotonic() + timeout
        while not self.ctl.poll(10):
            assert time.monotonic() < deadline, "no request arrived"
            if client is not None:
                client.poll()  # the client sends hello from its poll
        parts = self.ctl.recv_multipart()
        req = msgpack.unpackb(parts[-1])
        rep = {"v": 1, "op": req["op"], "id": req["id"], "ok": True, **extra}
        self.ctl.send_multipart(parts[:-1] + [msgpack.packb(rep, use_bin_type=True)])
        return req

    def frame(self, seq, t=None, names=None, stream="mic", w=None):
        msg = {"v": 1, "type": "coeffs", "stream": stream, "seq": seq, "t": seq / 30 if t is None else t,
               "wall": time.time(), "fps": 30.0, "layout": "arkit52",
               "w": protocol.pack_f32(w if w is not None else [seq / 100] * 52)}
        if names:
            msg["names"] = names
        self.pub.send_multipart([f"coeffs/{stream}".encode(), msgpack.packb(msg, use_bin_type=True)])

    def close(self):
        self.pub.close(0)
        self.ctl.close(0)
        self.ctx.term()


def _poll_until(client, cond, timeout=3.0):
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames += client.poll()
        if cond(frames):
            return frames
        time.sleep(0.01)
    raise AssertionError(f"condition not met; state {client.stats.state}, {len(frames)} frames")


def test_client_hello_frames_gaps_restart_and_garbage():
    pp, cp = _free_ports()
    peer = _Peer(pp, cp)
    c = Client(f"tcp://127.0.0.1:{pp}", f"tcp://127.0.0.1:{cp}", stale_after=0.5)
    try:
        c.open()
        req = peer.answer(client=c, protocol=1, server="peer", layouts={"arkit52": list(ARKIT_NAMES)})
        assert req["op"] == "hello" and req["versions"] == [1]
        _poll_until(c, lambda f: c.stats.state == "connected")
        assert c.layouts["arkit52"] == tuple(ARKIT_NAMES)

        # slow joiner: keep sending until frames arrive; no names needed (known from hello)
        seq = 0
        got = []
        deadline = time.monotonic() + 3
        while not got and time.monotonic() < deadline:
            peer.frame(seq)
            seq += 1
            time.sleep(0.02)
            got = c.poll()
        assert got and got[-1].as_dict()["jawOpen"] == pytest.approx(got[-1].seq / 100, abs=1e-6)
        dropped0 = c.stats.dropped
        peer.frame(seq + 5)                                       # a gap of 5
        peer.pub.send_multipart([b"coeffs/mic", b"\xc1garbage"])  # malformed: dropped, counted
        peer.pub.send_multipart([b"coeffs/mic", msgpack.packb({"v": 2, "type": "coeffs"})])  # other version: ignored
        peer.frame(0)                                             # seq went back: a restart, not loss
        _poll_until(c, lambda f: any(x.seq == 0 for x in f))
        assert c.stats.dropped - dropped0 == 5 and c.stats.restarts == 1 and c.stats.bad == 1
        assert "connected" in c.stats.line() and "dropped 5" in c.stats.line()

        # request / reply with ids; an error reply raises
        import threading
        th = threading.Thread(target=lambda: peer.answer(wall=123.0))
        th.start()
        assert c.request("ping", timeout=2)["wall"] == 123.0
        th.join()

        def refuse():
            parts = peer.ctl.recv_multipart()
            r = msgpack.unpackb(parts[-1])
            peer.ctl.send_multipart(parts[:-1] + [msgpack.packb({"v": 1, "op": r["op"], "id": r["id"], "ok": False,
                                                                 "error": {"code": "busy", "message": "2 bakes"}})])
        th = threading.Thread(target=refuse)
        th.start()
        with pytest.raises(RequestError, match="busy"):
            c.request("bake", timeout=2, audio=b"", format="file")
        th.join()

        # silence -> lost; the sidecar comes back -> connected again (hello re-sent)
        _poll_until(c, lambda f: c.stats.state == "lost", timeout=2)
        peer.answer(client=c, protocol=1, server="peer2", layouts={"arkit52": list(ARKIT_NAMES)})
        _poll_until(c, lambda f: c.stats.state == "connected")
        assert c.stats.server == "peer2"
    finally:
        c.close()
        peer.close()


def test_client_without_sidecar_times_out_cleanly():
    pp, cp = _free_ports()
    c = Client(f"tcp://127.0.0.1:{pp}", f"tcp://127.0.0.1:{cp}")
    c.open()
    try:
        assert c.poll() == [] and c.stats.state == "connecting"
        t0 = time.monotonic()
        with pytest.raises(RequestError, match="unreachable"):
            c.request("ping", timeout=0.3)
        assert time.monotonic() - t0 < 1.5
    finally:
        c.close()
    assert c.stats.line() == "disconnected"
    with pytest.raises(ValueError):
        Client("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", stream="../etc")


def test_spec_peer_bake_counts_frames(tmp_path):
    """The test peer used by the Blender tests answers bake with duration x fps frames from real audio."""
    import numpy as np
    import soundfile as sf
    sr = 16000
    t = np.arange(int(2.5 * sr)) / sr
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 1.0)).astype(np.float32)  # 1 s silence, 1.5 s tone
    wav = tmp_path / "a.wav"
    sf.write(wav, audio, sr)
    pp, cp = _free_ports()
    proc = subprocess.Popen([sys.executable, str(PLUGIN / "tests" / "spec_peer.py"), "--pub", f"tcp://127.0.0.1:{pp}",
                             "--control", f"tcp://127.0.0.1:{cp}", "--duration", "20"], stdout=subprocess.PIPE, text=True)
    c = Client(f"tcp://127.0.0.1:{pp}", f"tcp://127.0.0.1:{cp}")
    try:
        assert proc.stdout.readline().strip() == "ready"
        c.open()
        rep = c.request("bake", timeout=10, audio=wav.read_bytes(), format="file", fps=24)
        b = protocol.parse_bake(rep)
        assert b.n_frames == 60 and b.fps == 24.0
        jaw = [b.row(i)[b.names.index("jawOpen")] for i in range(b.n_frames)]
        assert max(jaw[:20]) < 0.05 and min(jaw[30:]) > 0.5  # silent first second, open mouth during the tone
        with pytest.raises(RequestError, match="unknown_op"):
            c.request("dance", timeout=2)
    finally:
        c.close()
        proc.terminate()
        proc.wait(5)


def test_file_pusher_real_time_and_errors(tmp_path):
    """FilePusher against the spec peer process: frames for the whole file at real-time pace, stereo WAV
    downmixed, and a push to a stream the sidecar no longer has becomes a readable error."""
    import numpy as np
    import soundfile as sf
    from realtalk_blender.core.client import FilePusher, read_wav_s16
    sr = 22050
    t = np.arange(int(1.2 * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 200 * t) * (t > 0.6)
    wav = tmp_path / "st.wav"
    sf.write(wav, np.stack([tone, tone], axis=1), sr, subtype="PCM_16")
    pcm, rate, dur = read_wav_s16(str(wav))
    assert rate == sr and len(pcm) == 2 * len(t) and dur == pytest.approx(1.2, abs=1e-3)
    with pytest.raises(ValueError, match="not a PCM WAV"):
        read_wav_s16(str(PLUGIN / "README.md"))

    pp, cp = _free_ports()
    proc = subprocess.Popen([sys.executable, str(PLUGIN / "tests" / "spec_peer.py"), "--pub", f"tcp://127.0.0.1:{pp}",
                             "--control", f"tcp://127.0.0.1:{cp}", "--duration", "30"], stdout=subprocess.PIPE, text=True)
    c = Client(f"tcp://127.0.0.1:{pp}", f"tcp://127.0.0.1:{cp}")
    try:
        assert proc.stdout.readline().strip() == "ready"
        c.open()
        _poll_until(c, lambda f: c.sub_joined, timeout=5)
        p = FilePusher(c, str(wav), stream="take1", fps=30)
        frames = []
        t0 = time.monotonic()
        while not (p.done and frames and frames[-1].t >= 1.1) and time.monotonic() - t0 < 10:
            p.pump()
            frames += c.poll()
            time.sleep(0.005)
        elapsed = time.monotonic() - t0
        assert 1.0 < elapsed < 5.0  # paced like speech, not dumped at once
        assert [f.seq for f in frames] == list(range(len(frames))) and frames[0].t == 0.0
        jaw = np.array([f.as_dict()["jawOpen"] for f in frames])
        assert jaw[:15].max() < 0.05 and jaw[21:33].min() > 0.5  # the tone starts at 0.6 s
        assert p.errors == []
        c.request("stream_close", stream="take1")
        p.sent, p.t_start = 0, None
        deadline = time.monotonic() + 3
        while not p.errors and time.monotonic() < deadline:
            p.pump()
            c.poll()
            time.sleep(0.01)
        assert p.errors and "unknown_stream" in p.errors[0]
    finally:
        c.close()
        proc.terminate()
        proc.wait(5)


def test_file_pusher_splits_a_stall_backlog_within_the_sidecars_limits(tmp_path, a2e_model):
    """Against a real sidecar (in-process Server, loopback sockets): after a 3 s UI stall FilePusher sends the
    backlog as pushes within `hello.limits` (0.5 s each), one at a time, and the sidecar counts every sample
    with no `too_large` / `quota` error. A bake file over the sidecar's bake limit is refused before upload."""
    import numpy as np
    import soundfile as sf
    from realtalk_blender.core.client import FilePusher, check_bake_size, push_chunk_samples
    from realtalk_bridge.runtime.a2e import A2ERuntime
    from realtalk_bridge.sidecar.server import Server

    sr = 22050
    wav = tmp_path / "long.wav"
    sf.write(wav, 0.2 * np.sin(2 * np.pi * 180 * np.arange(int(3.5 * sr)) / sr), sr, subtype="PCM_16")
    srv = Server(A2ERuntime(a2e_model), pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", idle_timeout=30,
                 max_bake_bytes=1024 * 1024).start()
    c = Client(srv.pub_endpoint, srv.ctl_endpoint)
    try:
        c.open()
        _poll_until(c, lambda f: c.sub_joined and c.stats.state == "connected", timeout=5)
        assert c.limits["push_seconds"] == 0.5 and c.limits["bake_bytes"] == 1024 * 1024  # from hello.limits
        assert push_chunk_samples(c.limits, sr) == sr // 2
        p = FilePusher(c, str(wav), stream="stall", fps=30)
        p.pump(now=100.0)  # starts the clock ...
        sizes, t0 = [], time.monotonic()
        while (not p.done or p.pending) and time.monotonic() - t0 < 15:
            before = p.sent
            p.pump(now=103.5)  # ... and the next tick comes 3.5 s later: the whole file is due at once
            if p.sent > before:
                sizes.append(p.sent - before)
            c.poll()
            time.sleep(0.002)
        assert p.done and not p.pending, f"sent {p.sent} of {len(p.pcm) // 2}; errors {p.errors}"
        assert p.errors == []
        assert max(sizes) <= sr // 2 and len(sizes) >= 7
        assert p.received == len(p.pcm) // 2  # every sample arrived: the sidecar's count in the last reply
        p.close()

        check_bake_size(500_000, c.limits)
        with pytest.raises(ValueError, match=r"up to 1\.0 MiB \(serve --max-bake-mb\)"):
            check_bake_size(2 * 1024 * 1024, c.limits)
        with pytest.raises(ValueError, match="up to 32.0 MiB"):  # an older sidecar without limits: the default
            check_bake_size(40 * 1024 * 1024, protocol.parse_limits({"limits": {"bake_bytes": "lots"}}))
    finally:
        c.close()
        srv.stop()


from hypothesis import given, settings, strategies as st  # noqa: E402

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20) | st.binary(max_size=64),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_never_crash(data):
    try:
        protocol.parse_coeffs(protocol.decode(data), {"arkit52": tuple(ARKIT_NAMES)})
    except protocol.ProtocolError:
        pass


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "type", "stream", "seq", "t", "wall", "fps", "layout", "names", "w",
                                        "pose", "speech", "n_frames", "t0", "layouts"]), _values, max_size=12))
def test_fuzz_maps_never_crash(fields):
    msg = {"v": 1, "type": "coeffs", **fields}
    for parse in (lambda m: protocol.parse_coeffs(m, {}), protocol.parse_bake, protocol.parse_layouts):
        try:
            parse(protocol.decode(protocol.encode(msg)))
        except protocol.ProtocolError:
            pass


def test_fps_from_frame_times_whatever_the_drain_rate():
    """The readout is the stream's rate, from the frames' own `t`: a UI that redraws slowly (bursts of 15
    frames) or quickly (several polls per frame) reads 30 fps for a 30 fps stream; 0 once frames stop."""
    from realtalk_blender.core.client import Stats
    layouts = {"x": ("a",)}

    def frame(seq, t):
        return protocol.parse_coeffs({"v": 1, "type": "coeffs", "stream": "mic", "seq": seq, "t": t, "wall": 0.0,
                                      "fps": 30.0, "layout": "x", "names": ["a"], "w": protocol.pack_f32([0.1])},
                                     layouts)

    for drain_every in (0.5, 0.01):  # slow UI: 15 frames per poll; fast UI: most polls see nothing
        c = Client("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
        c.stats = s = Stats()
        now, seq = 100.0, 0
        while seq < 150:
            now += drain_every
            while seq / 30 <= now - 100.0:  # the frames sent since the last poll arrive together
                c._count(frame(seq, seq / 30), now)
                seq += 1
            s._now = now
        assert s.fps == pytest.approx(30.0, abs=0.01)
    s._now = now + 2.5
    assert s.fps == pytest.approx(30.0, abs=0.01)  # a UI that polls every 2.5 s still reads the stream's rate
    s._now = now + 3.5
    assert s.fps == 0.0  # nothing for 3.5 s
    c._count(frame(0, 0.0), now + 4)  # restart: `t` starts again, the old times are forgotten
    c._count(frame(1, 1 / 30), now + 4)
    s._now = now + 4
    assert s.fps == pytest.approx(30.0)


def _frames_at(ts, walls, stream="mic"):
    layouts = {"x": ("a",)}
    return [protocol.parse_coeffs({"v": 1, "type": "coeffs", "stream": stream, "seq": i, "t": t, "wall": w,
                                   "fps": 60.0, "layout": "x", "names": ["a"], "w": protocol.pack_f32([t])}, layouts)
            for i, (t, w) in enumerate(zip(ts, walls))]


def test_playout_spreads_bursts_and_adds_nothing_to_paced_frames():
    from realtalk_blender.core.playout import Playout
    # 60 fps frames published in bursts every 40 ms (the model's step), 80 ms look-ahead; a 60 Hz UI tick
    ts = [k / 60 for k in range(600)]
    burst_walls = [1000.0 + (math.floor(t / 0.04) + 1) * 0.04 + 0.08 for t in ts]
    for walls, max_lag in ((burst_walls, 0.04 + 1 / 60), ([1000.0 + t + 0.08 for t in ts], 1e-6)):
        p = Playout()
        frames = _frames_at(ts, walls)
        shown, lags, i = [], [], 0
        now = 1000.0
        while now < walls[-1]:
            now += 1 / 60
            new = []
            while i < len(frames) and frames[i].wall <= now:
                new.append(frames[i])
                i += 1
            p.push(new, now)
            f = p.current(now)
            if f is not None:
                shown.append(f.t)
                lags.append(frames[i - 1].t - f.t)  # behind the newest received frame
        distinct = len(set(shown[120:])) / len(shown[120:])
        assert distinct > 0.95, distinct  # "newest only" shows ~25 poses per second: 0.42 here
        assert max(lags[120:]) <= max_lag + 1e-6  # behind by at most the burst spread + one tick
    # newest-only for comparison: the reason this exists
    newest = [max(t for t, w in zip(ts, burst_walls) if w <= 1000.0 + k / 60) for k in range(200, 400)]
    assert len(set(newest)) / len(newest) < 0.5


def test_playout_slow_ui_and_restart():
    from realtalk_blender.core.playout import Playout
    p = Playout()
    ts = [k / 30 for k in range(60)]
    frames = _frames_at(ts, [50.0 + t + 0.05 for t in ts])
    p.push(frames[:30], now=51.1)  # one slow tick drains 30 paced frames: the newest due one is shown
    assert p.current(51.1).t == ts[29]
    assert p.current(51.2).t == ts[29]  # nothing new: keep showing it
    restart = _frames_at([0.0, 1 / 30], [60.0, 60.0 + 1 / 30])
    p.push(restart, now=60.05)
    assert p.current(60.05).t == 1 / 30 and len(p.queue) == 0
    # another stream while this one plays is not shown; once this one is quiet for 1 s it takes over
    p.push(_frames_at([5.0], [60.5], stream="file"), now=60.5)
    assert p.current(60.5).stream == "mic"
    p.push(_frames_at([6.0], [61.2], stream="file"), now=61.2)
    assert p.current(61.2).stream == "file"
    # the stream being recorded or pushed wins at once, and others are left out while it is preferred
    p.prefer = "blender"
    p.push(_frames_at([0.5], [61.3], stream="blender") + _frames_at([7.0], [61.3], stream="file"), now=61.3)
    assert p.current(61.3).stream == "blender" and p.stream == "blender"


def test_sound_passes_align_looping_sources_with_the_take():
    # `serve --input F --loop` with F 3.0 s long, take at 24 fps on frames 1..217, first frame at t = 78.25 s:
    # the file is 0.25 s in (78.25 mod 3), so pass 0 starts 6 frames before frame 1 and is shown from frame 1
    passes = resample.sound_passes(1, 217, 24.0, 78.25, 3.0)
    assert passes[0] == (-5.0, 1.0, 67.0)
    assert [p[0] for p in passes] == [-5.0 + 72 * k for k in range(4)]
    assert all(a[2] == b[1] for a, b in zip(passes, passes[1:]))  # end to end
    assert passes[-1][2] == 218.0
    # a file that does not loop: t < duration, one strip; the take starts 2 s into it
    assert resample.sound_passes(10, 50, 30.0, 2.0, 60.0) == [(-50.0, 10.0, 51.0)]
    assert resample.sound_passes(10, 50, 30.0, 2.0, None) == [(-50.0, 10.0, 51.0)]
    assert resample.sound_passes(10, 5, 30.0, 0.0, 1.0) == []
