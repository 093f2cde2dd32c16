"""UDP bridges against real receivers on loopback: a python-osc server for VMC, plain UDP
sockets parsed by the formats' own rules (written here, independently of the encoders) for
iFacialMocap and Live Link Face."""
from __future__ import annotations

import argparse
import logging
import math
import socket
import struct

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from realtalk_bridge.bridges import BridgeConfigError, add_arguments, make_sinks, parse_endpoint
from realtalk_bridge.bridges.ifacialmocap import IFacialMocapSink
from realtalk_bridge.bridges.livelink import LiveLinkSink
from realtalk_bridge.bridges.vmc import VMCSink, encode_vmc
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES

RNG = np.random.default_rng(7)


class OscReceiver:
    """A python-osc UDP server on an ephemeral loopback port that records every message in order."""

    def __init__(self):
        self.messages: list[tuple[str, tuple]] = []
        d = Dispatcher()
        d.set_default_handler(lambda address, *args: self.messages.append((address, args)))
        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), d)
        self.server.timeout = 2.0
        self.port = self.server.server_address[1]

    def frame(self) -> list[tuple[str, tuple]]:
        """Handle one datagram (one bundle) and return its messages."""
        self.messages.clear()
        self.server.handle_request()
        return list(self.messages)

    def close(self):
        self.server.server_close()


@pytest.fixture
def osc():
    r = OscReceiver()
    yield r
    r.close()


def frame_weights() -> np.ndarray:
    return RNG.uniform(0.0, 1.0, 52).astype(np.float32)


# ---------------------------------------------------------------- VMC


def test_vmc_bundle_carries_every_arkit_shape_then_apply(osc):
    sink = VMCSink("127.0.0.1", osc.port)
    w = frame_weights()
    sink.send("mic", 0, 1.25, ARKIT_NAMES, w, None)
    msgs = osc.frame()
    sink.close()
    assert msgs[0] == ("/VMC/Ext/OK", (1,))
    assert msgs[1][0] == "/VMC/Ext/T" and msgs[1][1][0] == pytest.approx(1.25)
    vals = [m for m in msgs if m[0] == "/VMC/Ext/Blend/Val"]
    assert [v[1][0] for v in vals] == list(ARKIT_NAMES)
    np.testing.assert_array_equal(np.array([v[1][1] for v in vals], np.float32), w)
    assert msgs[-1] == ("/VMC/Ext/Blend/Apply", ())
    assert not any(m[0] == "/VMC/Ext/Bone/Pos" for m in msgs)


def test_vmc_vrm0_names_follow_the_preset_formula(osc):
    sink = VMCSink("127.0.0.1", osc.port, names="vrm")
    w = np.zeros(52, np.float32)
    w[ARKIT_INDEX["jawOpen"]] = 0.5
    w[ARKIT_INDEX["mouthClose"]] = 0.1
    w[ARKIT_INDEX["eyeBlinkLeft"]] = 0.8
    w[ARKIT_INDEX["mouthPucker"]] = 0.4
    sink.send("file", 3, 0.1, ARKIT_NAMES, w, None)
    got = {a[0]: a[1] for addr, a in osc.frame() if addr == "/VMC/Ext/Blend/Val"}
    sink.close()
    assert list(got)[:5] == ["A", "I", "U", "E", "O"] and "Blink_L" in got and "Joy" in got
    # vrm0.toml: A = clamp(1.5 * (jawOpen - mouthClose - 0.5 pucker ...)), U = 1.5 * 0.8 pucker
    assert got["A"] == pytest.approx(1.5 * (0.5 - 0.1 - 0.5 * 0.4), abs=1e-6)
    assert got["U"] == pytest.approx(1.5 * 0.8 * 0.4, abs=1e-6)
    assert got["Blink_L"] == pytest.approx(0.8) and got["Blink_R"] == 0.0 and got["Blink"] == 0.0


def test_vmc_pascal_names_and_head_bone(osc):
    sink = VMCSink("127.0.0.1", osc.port, names="arkit-pascal", head=True)
    pose = np.array([0.0, 0.3, 0.0, 0.0, 0.0, 0.0], np.float32)
    sink.send("mic", 0, 0.0, ARKIT_NAMES, frame_weights(), pose)
    msgs = osc.frame()
    sink.close()
    names = [a[0] for addr, a in msgs if addr == "/VMC/Ext/Blend/Val"]
    assert names[0] == "EyeBlinkLeft" and "JawOpen" in names and len(names) == 52
    bone = [a for addr, a in msgs if addr == "/VMC/Ext/Bone/Pos"]
    assert len(bone) == 1 and bone[0][0] == "Head"
    assert bone[0][1:4] == pytest.approx((0.0, 0.08, 0.0))  # the default Neck->Head offset, no translation
    assert [a for addr, a in msgs if addr == "/VMC/Ext/Root/Pos"] == [("root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)]
    qx, qy, qz, qw = bone[0][4:]
    assert (qx, qz) == pytest.approx((0.0, 0.0), abs=1e-6)
    assert (qy, qw) == pytest.approx((math.sin(0.15), math.cos(0.15)), abs=1e-6)
    assert msgs[-1][0] == "/VMC/Ext/Blend/Apply"


def test_vmc_fast_encoder_matches_python_osc_builder(osc):
    sink = VMCSink("127.0.0.1", osc.port, head=True)
    w, pose = frame_weights(), np.array([0.1, -0.2, 0.05, 0, 0, 0], np.float32)
    sink.send("mic", 0, 2.5, ARKIT_NAMES, w, pose)
    sink.close()
    data, _ = osc.server.socket.recvfrom(65536)
    assert data == encode_vmc(ARKIT_NAMES, w, 2.5, head=pose)


def test_vmc_head_quaternion_is_unity_euler_order():
    from realtalk_bridge.bridges.vmc import euler_to_quat

    def qmul(a, b):
        ax, ay, az, aw = a
        bx, by, bz, bw = b
        return (aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz)

    p, y, r = 0.3, -0.5, 0.2  # Unity's Quaternion.Euler: roll about Z, then pitch about X, then yaw about Y
    qx, qy, qz = (math.sin(p / 2), 0, 0, math.cos(p / 2)), (0, math.sin(y / 2), 0, math.cos(y / 2)), \
        (0, 0, math.sin(r / 2), math.cos(r / 2))
    assert euler_to_quat(p, y, r) == pytest.approx(qmul(qmul(qy, qx), qz), abs=1e-12)


def test_vmc_big_rigs_are_split_into_bundles_with_one_apply(osc, tmp_path):
    prof = tmp_path / "big.toml"
    chans = "".join(f'[channels.{"shape_" + "x" * 100 + str(i)}]\nmap = {{ jawOpen = {i / 400} }}\n' for i in range(400))
    prof.write_text("version = 1\n" + chans)
    sink = VMCSink("127.0.0.1", osc.port, names=str(prof))
    w = np.zeros(52, np.float32)
    w[ARKIT_INDEX["jawOpen"]] = 1.0
    sink.send("mic", 0, 0.5, ARKIT_NAMES, w, None)
    msgs = []
    for _ in range(40):  # each bundle is one datagram
        msgs += osc.frame()
        if msgs and msgs[-1][0] == "/VMC/Ext/Blend/Apply":
            break
    sink.close()
    vals = [a for addr, a in msgs if addr == "/VMC/Ext/Blend/Val"]
    assert len(vals) == 400 and [a for a, _ in msgs].count("/VMC/Ext/Blend/Apply") == 1
    assert vals[123][1] == pytest.approx(123 / 400) and vals[123][0].endswith("123")


def test_vmc_profile_file_and_smoothing_per_stream(osc, tmp_path):
    prof = tmp_path / "rig.toml"
    prof.write_text('version = 1\n[channels.MouthOpen]\nmap = { jawOpen = 1.0 }\nsmoothing = 0.5\n')
    sink = VMCSink("127.0.0.1", osc.port, names=str(prof))
    w1 = np.zeros(52, np.float32)
    w1[ARKIT_INDEX["jawOpen"]] = 1.0
    sent = [("a", 0.0, np.zeros(52, np.float32)), ("a", 0.04, w1), ("b", 0.0, w1)]
    got = []
    for stream, t, w in sent:
        sink.send(stream, 0, t, ARKIT_NAMES, w, None)
        got.append([a for addr, a in osc.frame() if addr == "/VMC/Ext/Blend/Val"])
    sink.close()
    assert got[0] == [("MouthOpen", 0.0)]
    assert got[1][0][1] == pytest.approx(0.5)  # one 1/25 s frame keeps half the old value
    assert got[2][0][1] == pytest.approx(1.0)  # stream b has its own filter state


# ---------------------------------------------------------------- iFacialMocap


def parse_ifm(data: bytes) -> tuple[dict[str, int], dict[str, list[float]]]:
    """iFacialMocap's format: 'name-int|...|=head#6 floats|rightEye#3|leftEye#3|'."""
    text = data.decode("ascii")
    shapes_part, transforms = text.split("|=", 1)
    shapes = {}
    for item in shapes_part.split("|"):
        name, value = item.rsplit("-", 1)
        shapes[name] = int(value)
    rest = {}
    for item in transforms.rstrip("|").split("|"):
        key, nums = item.split("#")
        rest[key] = [float(x) for x in nums.split(",")]
    return shapes, rest


def test_ifacialmocap_datagram_values(udp):
    sink = IFacialMocapSink("127.0.0.1", udp.getsockname()[1])
    w = frame_weights()
    w[ARKIT_INDEX["eyeLookUpRight"]], w[ARKIT_INDEX["eyeLookDownRight"]] = 0.5, 0.0
    pose = np.array([0.1, -0.2, 0.05, 0.01, -0.02, 0.003], np.float32)
    sink.send("mic", 0, 0.5, ARKIT_NAMES, w, pose)
    shapes, tr = parse_ifm(udp.recv(65536))
    sink.close()
    assert len(shapes) == 52
    assert shapes["eyeBlink_L"] == round(float(w[ARKIT_INDEX["eyeBlinkLeft"]]) * 100)
    assert shapes["mouthSmile_R"] == round(float(w[ARKIT_INDEX["mouthSmileRight"]]) * 100)
    assert shapes["jawOpen"] == round(float(w[ARKIT_INDEX["jawOpen"]]) * 100)
    assert shapes["tongueOut"] == round(float(w[ARKIT_INDEX["tongueOut"]]) * 100)
    # only jaw/mouth Left/Right keep their suffix (a sideways movement, not a side)
    assert {n for n in shapes if n.endswith(("Left", "Right"))} == {"jawLeft", "jawRight", "mouthLeft", "mouthRight"}
    assert shapes["mouthLeft"] == round(float(w[ARKIT_INDEX["mouthLeft"]]) * 100)
    np.testing.assert_allclose(tr["head"][:3], np.degrees(pose[:3]), atol=1e-3)
    np.testing.assert_allclose(tr["head"][3:], pose[3:], atol=1e-4)
    assert tr["rightEye"][0] == pytest.approx(15.0, abs=1e-3)  # eyeLookUpRight 0.5 -> 15 degrees up
    assert set(tr) == {"head", "rightEye", "leftEye"}


def test_ifacialmocap_clips_and_cleans_bad_values(udp):
    sink = IFacialMocapSink("127.0.0.1", udp.getsockname()[1])
    w = np.zeros(52, np.float32)
    w[0], w[1], w[2] = np.nan, 7.0, -3.0
    sink.send("mic", 0, 0.0, ARKIT_NAMES, w, None)
    shapes, tr = parse_ifm(udp.recv(65536))
    sink.close()
    assert (shapes["eyeBlink_L"], shapes["eyeLookDown_L"], shapes["eyeLookIn_L"]) == (0, 100, 0)
    assert tr["head"] == [0.0] * 6


# ---------------------------------------------------------------- Live Link Face


def parse_livelink(data: bytes) -> dict:
    """Live Link Face v6: u8 version, i32+device id, i32+subject, i32 frame, f32 subframe,
    i32 fps num, i32 fps den, u8 count, count x f32, all big-endian."""
    version = data[0]
    off = 1
    (n,) = struct.unpack_from(">i", data, off)
    device = data[off + 4: off + 4 + n].decode()
    off += 4 + n
    (n,) = struct.unpack_from(">i", data, off)
    subject = data[off + 4: off + 4 + n].decode()
    off += 4 + n
    frame, sub, num, den = struct.unpack_from(">ifii", data, off)
    off += 16
    count = data[off]
    off += 1
    values = struct.unpack_from(f">{count}f", data, off)
    assert off + 4 * count == len(data), "trailing bytes"
    return dict(version=version, device=device, subject=subject, frame=frame, sub=sub, num=num, den=den,
                values=np.array(values, np.float32))


def test_livelink_packet_values(udp):
    sink = LiveLinkSink("127.0.0.1", udp.getsockname()[1], subject="Avatar01")
    w = frame_weights()
    pose = np.array([0.1, -0.2, 0.05, 0, 0, 0], np.float32)
    sink.send("mic", 5, 2.0125, ARKIT_NAMES, w, pose)
    p = parse_livelink(udp.recv(65536))
    sink.send("mic", 6, 2.05, ARKIT_NAMES, w, pose)
    p2 = parse_livelink(udp.recv(65536))
    sink.close()
    assert p["version"] == 6 and p["subject"] == "Avatar01" and p["device"] == p2["device"]
    assert len(p["values"]) == 61
    np.testing.assert_array_equal(p["values"][:52], w)
    # yaw, pitch, roll as Live Link sends angles: degrees / 180
    np.testing.assert_allclose(p["values"][52:55], np.degrees([-0.2, 0.1, 0.05]) / 180, atol=1e-6)
    assert (p["num"], p["den"]) == (60, 1)
    assert p["frame"] + p["sub"] == pytest.approx(2.0125 * 60, abs=1e-3)
    assert p2["frame"] == 123


def test_livelink_clamps_to_the_arkit_range(udp):
    sink = LiveLinkSink("127.0.0.1", udp.getsockname()[1])
    w = np.linspace(-0.5, 1.5, 52).astype(np.float32)
    sink.send("mic", 0, 0.0, ARKIT_NAMES, w, None)
    p = parse_livelink(udp.recv(65536))
    sink.close()
    np.testing.assert_array_equal(p["values"][:52], np.clip(w, 0, 1))


def test_livelink_reorders_any_layout_to_apple_order(udp):
    sink = LiveLinkSink("127.0.0.1", udp.getsockname()[1])
    names = list(reversed(ARKIT_NAMES))[:40] + ["customShape"]  # another order, some missing, one extra
    w = RNG.uniform(0, 1, len(names)).astype(np.float32)
    sink.send("mic", 0, 0.0, names, w, None)
    p = parse_livelink(udp.recv(65536))
    sink.close()
    for i, n in enumerate(ARKIT_NAMES):
        expect = w[names.index(n)] if n in names else 0.0
        assert p["values"][i] == pytest.approx(expect), n
    assert not np.any(p["values"][52:55])


def test_arkit_profile_gains_apply_to_livelink(udp, tmp_path):
    prof = tmp_path / "tuned.toml"
    prof.write_text('version = 1\npassthrough = true\n[channels.jawOpen]\ngain = 2.0\n')
    sink = LiveLinkSink("127.0.0.1", udp.getsockname()[1], profile=str(prof))
    w = np.full(52, 0.25, np.float32)
    sink.send("mic", 0, 0.0, ARKIT_NAMES, w, None)
    p = parse_livelink(udp.recv(65536))
    sink.close()
    assert p["values"][ARKIT_INDEX["jawOpen"]] == pytest.approx(0.5)
    assert p["values"][ARKIT_INDEX["mouthClose"]] == pytest.approx(0.25)


def test_arkit_profile_must_output_arkit_names(tmp_path):
    with pytest.raises(BridgeConfigError, match="ARKit"):
        LiveLinkSink("127.0.0.1", 9, profile="vrm1")


# ---------------------------------------------------------------- flags, config, robustness


@pytest.mark.parametrize("value,expect", [
    (True, ("127.0.0.1", 39539)), (None, ("127.0.0.1", 39539)), ("40000", ("127.0.0.1", 40000)),
    (40001, ("127.0.0.1", 40001)), ("localhost:40002", ("localhost", 40002)), ("10.0.0.5", ("10.0.0.5", 39539)),
    ("[::1]:40003", ("::1", 40003)), ("::1", ("::1", 39539)),
])
def test_parse_endpoint(value, expect):
    assert parse_endpoint(value, 39539) == expect


@pytest.mark.parametrize("value", ["0", "70000", "host:", "host:abc", "[::1", ":80", 1.5])
def test_parse_endpoint_rejects(value):
    with pytest.raises(BridgeConfigError):
        parse_endpoint(value, 39539, "vmc")


def test_flags_and_config_build_the_same_sinks():
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert make_sinks(p.parse_args([])) == []
    args = p.parse_args(["--vmc", "--vmc-names", "vrm1", "--ifacialmocap", "49990", "--livelink", "localhost:11112",
                         "--livelink-subject", "Me", "--bridge-stream", "mic"])
    sinks = make_sinks(args)
    try:
        assert [type(s).__name__ for s in sinks] == ["VMCSink", "IFacialMocapSink", "LiveLinkSink"]
        assert (sinks[0].port, sinks[0].names_choice, sinks[1].port, sinks[2].port) == (39539, "vrm1", 49990, 11112)
        assert sinks[2].subject == "Me" and all(s.stream == "mic" for s in sinks)
    finally:
        for s in sinks:
            s.close()
    cfg = {"bridges": {"vmc": 39541, "vmc-names": "vrm", "livelink": True}}
    sinks = make_sinks(cfg)
    try:
        assert [(type(s).__name__, s.port) for s in sinks] == [("VMCSink", 39541), ("LiveLinkSink", 11111)]
    finally:
        for s in sinks:
            s.close()


def test_config_values_survive_unset_flags():
    """serve merges command line over config: flags left out are None, so the config's values stand."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = {"vmc": 39541, "vmc_names": "vrm", "vmc_head": True, "livelink": True, "livelink_subject": "Cfg"}
    for argv, expect_names in (([], "vrm"), (["--vmc-names", "vrm1"], "vrm1")):
        args = vars(p.parse_args(argv))
        merged = {**cfg, **{k: v for k, v in args.items() if v is not None}}
        sinks = make_sinks(merged)
        try:
            assert (sinks[0].names_choice, sinks[0].head, sinks[1].subject) == (expect_names, True, "Cfg")
        finally:
            for s in sinks:
                s.close()


@pytest.mark.parametrize("cfg,match", [
    ({"vmc": "99999"}, "port"), ({"vmc": True, "vmc_names": "nosuch"}, "vmc-names"),
    ({"livelink": True, "arkit_profile": "/no/such.toml"}, "arkit-profile"),
    ({"ifacialmocap": "no.such.host.invalid:5"}, "resolve"), ({"livelink": True, "livelink_subject": ""}, "subject"),
    ({"vmc": True, "vmc_names": ["vrm"]}, "vmc-names"), ({"vmc": True, "vmc_head": "yes"}, "vmc_head"),
    ({"livelink": True, "arkit_profile": 3}, "arkit-profile"), ({"vmc": [1]}, "HOST"),
    ({"vmc": True, "bridge_stream": 5}, "bridge_stream"),
])
def test_bad_bridge_config_is_a_clear_error(cfg, match):
    with pytest.raises(BridgeConfigError, match=match):
        make_sinks(cfg)


def test_non_loopback_host_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="realtalk_bridge.bridges"):
        sink = VMCSink("192.0.2.10", 39539)  # TEST-NET-1: never routed; nothing is sent here
        sink.close()
    assert "non-loopback" in caplog.text


def test_stream_filter_and_bad_frames_send_nothing(udp):
    sink = LiveLinkSink("127.0.0.1", udp.getsockname()[1], stream="mic")
    sink.send("other", 0, 0.0, ARKIT_NAMES, frame_weights(), None)  # filtered out
    sink.send("mic", 0, 0.0, ARKIT_NAMES, np.zeros(10), None)  # wrong length: skipped, logged
    sink.send("mic", 1, 0.0, ARKIT_NAMES, frame_weights(), np.zeros(3))  # bad pose: frame sent without pose
    p = parse_livelink(udp.recv(65536))
    assert not np.any(p["values"][52:55])  # no head pose
    udp.settimeout(0.2)
    with pytest.raises(socket.timeout):
        udp.recv(65536)
    assert sink.sent == 1
    sink.close()


def test_missing_receiver_never_raises():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens on this port now
    sinks = [VMCSink("127.0.0.1", port), IFacialMocapSink("127.0.0.1", port), LiveLinkSink("127.0.0.1", port)]
    for seq in range(200):
        for sink in sinks:
            sink.send("mic", seq, seq / 60, ARKIT_NAMES, frame_weights(), np.zeros(6))
    for sink in sinks:
        assert sink.sent + sink.dropped + sink.errors == 200
        sink.close()


# ---------------------------------------------------------------- fuzz: any frame the sidecar may hand over

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_sinks():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # a real receiver that never reads: the kernel buffer fills, sends may drop
    port = s.getsockname()[1]
    sinks = [VMCSink("127.0.0.1", port, names="vrm"), VMCSink("127.0.0.1", port), IFacialMocapSink("127.0.0.1", port),
             LiveLinkSink("127.0.0.1", port)]
    yield sinks
    for k in sinks:
        k.close()
    s.close()


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.one_of(st.sampled_from(ARKIT_NAMES), st.text(max_size=12)), max_size=60, unique=True),
       values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=60),
       t=st.floats(allow_nan=True, allow_infinity=True), seq=st.integers(-5, 2**40),
       pose=st.one_of(st.none(), st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=8)))
def test_fuzz_sinks_never_raise(fuzz_sinks, names, values, t, seq, pose):
    for sink in fuzz_sinks:
        sink.send("s", seq, t, names, np.array(values, np.float32), None if pose is None else np.array(pose))


# ---------------------------------------------------------------- iFacialMocap handshake listener


def test_ifacialmocap_listen_defaults_and_a_taken_port(caplog):
    from realtalk_bridge.bridges.ifacialmocap import resolve_listen

    assert resolve_listen(None, "192.168.1.20") == ("0.0.0.0", 49983)  # a phone's place on the LAN
    assert resolve_listen(None, "127.0.0.1") is None and resolve_listen("off", "10.0.0.2") is None
    assert resolve_listen(False, "10.0.0.2") is None and resolve_listen("50000", "127.0.0.1") == ("0.0.0.0", 50000)
    assert resolve_listen("127.0.0.1:50001", "127.0.0.1") == ("127.0.0.1", 50001)
    with pytest.raises(BridgeConfigError, match="ifacialmocap-listen"):
        make_sinks({"ifacialmocap": True, "ifacialmocap_listen": [1]})
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        with caplog.at_level(logging.WARNING, logger="realtalk_bridge.bridges"):
            sink = IFacialMocapSink("127.0.0.1", 9, listen=taken.getsockname())  # a receiver holds the port
        assert sink.listen_sock is None and "cannot listen" in caplog.text
        sink.send("mic", 0, 0.0, ARKIT_NAMES, frame_weights(), None)  # still streams
        assert sink.sent + sink.errors == 1
        sink.close()
    finally:
        taken.close()


# ---------------------------------------------------------------- doctor: one line per enabled bridge


def test_doctor_reports_each_enabled_bridge(udp, tmp_path):
    from realtalk_bridge import doctor

    p = argparse.ArgumentParser()
    doctor.add_arguments(p)
    held = udp.getsockname()[1]  # a receiver holds this port
    free_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    free_sock.bind(("127.0.0.1", 0))
    free = free_sock.getsockname()[1]
    free_sock.close()
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f'livelink = "192.0.2.7:11111"\nvmc_names = "vrm"\n')
    args = p.parse_args(["--config", str(cfg), "--vmc", str(held), "--ifacialmocap", str(free)])
    lines = dict(doctor.bridge_checks(doctor._bridge_options(args)))
    assert set(lines) == {"vmc bridge", "ifacialmocap bridge", "livelink bridge"}
    assert lines["vmc bridge"][0] == "ok" and "names vrm" in lines["vmc bridge"][1]
    assert lines["ifacialmocap bridge"][0] == "warn" and "nothing listens" in lines["ifacialmocap bridge"][1]
    assert lines["livelink bridge"][0] == "ok" and "another machine" in lines["livelink bridge"][1]
    assert dict(doctor.bridge_checks({})) == {}  # no bridge switched on: no line
    bad = dict(doctor.bridge_checks(doctor._bridge_options(p.parse_args(["--vmc", "99999"]))))
    assert bad["bridges"][0] == "fail" and "port" in bad["bridges"][1]
    cfg.write_text("vmc = [1, 2]\nnosuch = 1\n")
    assert dict(doctor.bridge_checks(doctor._bridge_options(p.parse_args(["--config", str(cfg)]))))["config"][0] == "fail"


def test_bare_flags_use_the_receivers_standard_ports():
    sinks = make_sinks({"vmc": True, "ifacialmocap": True, "livelink": True})
    try:
        assert [(s.kind, s.host, s.port) for s in sinks] == [
            ("vmc", "127.0.0.1", 39539), ("ifacialmocap", "127.0.0.1", 49983), ("livelink", "127.0.0.1", 11111)]
        assert sinks[1].listen_sock is None  # loopback receiver: it holds 49983 itself
    finally:
        for s in sinks:
            s.close()
