"""VMC output (`--vmc`) checked against receivers we did not write, over real UDP on loopback.

- PyPI `osc4py3` (oscbuildparse.decode_packet): an independent OSC decoder, byte for byte.
- PyPI `vmcp` (vmcp.events.*.from_message_data): the VMC protocol's message shapes and types
  (/VMC/Ext/OK, /VMC/Ext/T, /VMC/Ext/Root/Pos, /VMC/Ext/Bone/Pos with HumanBodyBones names, Blend/Val, Apply).
- hecomi/uOSC, the OSC library of EVMC4U and most Unity receivers: a C# port of its parser
  (tests/conformance/uosc_parser_port.cs; Runtime/Core/Parser.cs + Scripts/Core/Reader.cs, Util.cs),
  compiled with Debian mono-mcs and run under mono.
- gpsnmeajp/EasyVirtualMotionCaptureForUnity (EVMC4U), ExternalReceiver.cs ProcessMessage: a Python port
  of how it dispatches messages (type checks, lower-cased clip-name lookup, Apply, bone table).

python-osc is the library our encoder uses, so it is not counted as independent here.
"""
from __future__ import annotations

import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from osc4py3.oscbuildparse import OSCBundle, OSCMessage, decode_packet
from vmcp import events as vmcp_events
from vmcp.typing import Bone, ModelState

from _bridge_util import sink_datagrams

from realtalk_bridge.bridges.vmc import VMCSink, euler_to_quat
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES

HERE = Path(__file__).resolve().parent
RNG = np.random.default_rng(14)

# VRM 0.x BlendShapePreset names (UniVRM 0.x enum, as EVMC4U's `c.Preset.ToString()` spells them)
VRM0_PRESETS = ("Neutral", "A", "I", "U", "E", "O", "Blink", "Joy", "Angry", "Sorrow", "Fun", "LookUp", "LookDown",
                "LookLeft", "LookRight", "Blink_L", "Blink_R")
# VRM 1.0 expression presets (VRMC_vrm-1.0 spec, expressions.preset)
VRM1_PRESETS = ("happy", "angry", "sad", "relaxed", "surprised", "aa", "ih", "ou", "ee", "oh", "blink", "blinkLeft",
                "blinkRight", "lookUp", "lookDown", "lookLeft", "lookRight", "neutral")
# a PerfectSync VRM (hinzka's setup) carries 52 non-preset clips named like Apple's shapes, first letter upper
PERFECT_SYNC_CLIPS = tuple(n[0].upper() + n[1:] for n in ARKIT_NAMES)


def send_frames(udp, frames, **sink_kw) -> list[bytes]:
    """frames: (t, weights, pose) -> the datagrams one VMCSink sent for them."""
    return sink_datagrams(VMCSink("127.0.0.1", udp.getsockname()[1], **sink_kw), udp, frames, ARKIT_NAMES)


def weights(**kw) -> np.ndarray:
    w = RNG.uniform(0.0, 0.6, 52).astype(np.float32)
    for k, v in kw.items():
        w[ARKIT_INDEX[k]] = v
    return w


def f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


# ---------------------------------------------------------------- osc4py3 + vmcp


def test_bundle_layout_and_types_decode_with_osc4py3(udp):
    w = weights()
    pose = np.array([0.1, -0.2, 0.05, 0.004, -0.003, 0.002], np.float32)
    (dgram,) = send_frames(udp, [(2.5, w, pose)], head=True)
    packet = decode_packet(dgram)
    assert isinstance(packet, OSCBundle) and (packet.timetag.sec, packet.timetag.frac) == (0, 1)  # "immediately"
    msgs = packet.elements
    assert all(isinstance(m, OSCMessage) for m in msgs)
    assert [(m.addrpattern, m.typetags) for m in msgs[:4]] == [
        ("/VMC/Ext/OK", ",i"), ("/VMC/Ext/T", ",f"), ("/VMC/Ext/Root/Pos", ",sfffffff"), ("/VMC/Ext/Bone/Pos", ",sfffffff")]
    assert msgs[0].arguments == (1,) and msgs[1].arguments == (2.5,)
    vals = msgs[4:-1]
    assert {(m.addrpattern, m.typetags) for m in vals} == {("/VMC/Ext/Blend/Val", ",sf")}
    assert [m.arguments[0] for m in vals] == list(ARKIT_NAMES)  # perfect-sync ARKit names, Apple spelling
    assert [m.arguments[1] for m in vals] == [f32(v) for v in w]  # float32 exact, 0..1
    assert (msgs[-1].addrpattern, msgs[-1].typetags, msgs[-1].arguments) == ("/VMC/Ext/Blend/Apply", ",", ())
    # Root at the origin; Head: Neck->Head offset + idle translation (x mirrored: Unity x = avatar's right)
    assert msgs[2].arguments == ("root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    head = msgs[3].arguments
    assert head[0] == "Head"
    assert head[1:4] == pytest.approx((-0.004, 0.08 - 0.003, 0.002), abs=1e-7)
    assert head[4:] == pytest.approx(euler_to_quat(0.1, -0.2, 0.05), abs=1e-7)
    assert math.isclose(sum(q * q for q in head[4:]), 1.0, rel_tol=1e-6)


def test_every_message_passes_vmcp_validation(udp):
    frames = [(i / 60, weights(), np.array([0.02 * i, 0.01, 0, 0, 0, 0], np.float32)) for i in range(3)]
    kinds = {cls.ADDRESS_PATTERN: cls for cls in (vmcp_events.StateEvent, vmcp_events.RelativeTimeEvent,
                                                  vmcp_events.RootTransformEvent, vmcp_events.BoneTransformEvent,
                                                  vmcp_events.BlendShapeEvent, vmcp_events.BlendShapeApplyEvent)}
    for i, dgram in enumerate(send_frames(udp, frames, head=True, names="vrm")):
        evs = [kinds[m.addrpattern].from_message_data("test", m.addrpattern, m.arguments)
               for m in decode_packet(dgram).elements]
        assert evs[0].model_state is ModelState.LOADED
        assert evs[1].delta == pytest.approx(i / 60)
        assert evs[2].joint == "root" and (evs[2].position.x, evs[2].position.y, evs[2].position.z) == (0, 0, 0)
        assert evs[3].joint is Bone.HEAD and evs[3].position.y == pytest.approx(0.08)
        shapes = {e.key: e.value for e in evs if isinstance(e, vmcp_events.BlendShapeEvent)}
        assert isinstance(evs[-1], vmcp_events.BlendShapeApplyEvent)
        assert set(shapes) <= set(VRM0_PRESETS) and {"A", "I", "U", "E", "O", "Blink", "Blink_L", "Blink_R"} <= set(shapes)
        assert all(0.0 <= v <= 1.0 for v in shapes.values())


def test_vrm1_names_are_vrm1_expression_presets(udp):
    (dgram,) = send_frames(udp, [(0.0, weights(), None)], names="vrm1")
    names = [m.arguments[0] for m in decode_packet(dgram).elements if m.addrpattern == "/VMC/Ext/Blend/Val"]
    assert set(names) <= set(VRM1_PRESETS) and {"aa", "ih", "ou", "ee", "oh", "blinkLeft", "blinkRight"} <= set(names)


def test_big_rig_bundles_each_decode_and_apply_once(udp, tmp_path):
    prof = tmp_path / "big.toml"
    prof.write_text("version = 1\n" + "".join(
        f'[channels.{"k" * 90}{i}]\nmap = {{ jawOpen = {i / 300} }}\n' for i in range(300)))
    sink = VMCSink("127.0.0.1", udp.getsockname()[1], names=str(prof))
    w = np.zeros(52, np.float32)
    w[ARKIT_INDEX["jawOpen"]] = 1.0
    sink.send("mic", 0, 0.5, ARKIT_NAMES, w, None)
    sink.close()
    msgs = []
    while not msgs or msgs[-1].addrpattern != "/VMC/Ext/Blend/Apply":
        dgram = udp.recv(65536)
        assert len(dgram) <= 8192
        msgs += decode_packet(dgram).elements
    vals = [m.arguments for m in msgs if m.addrpattern == "/VMC/Ext/Blend/Val"]
    assert len(vals) == 300 and vals[150][1] == pytest.approx(0.5)


# ---------------------------------------------------------------- uOSC (C#, under mono)


@pytest.fixture(scope="module")
def uosc_port(tmp_path_factory):
    if shutil.which("mcs") is None or shutil.which("mono") is None:
        pytest.skip("Debian mono-mcs / mono not installed (scripts/setup_dev.sh installs them)")
    exe = tmp_path_factory.mktemp("uosc") / "uosc_port.exe"
    subprocess.run(["mcs", "-langversion:7.2", "-nologo", f"-out:{exe}", str(HERE / "conformance" / "uosc_parser_port.cs")],
                   check=True, timeout=120, capture_output=True)
    return exe


def uosc_parse(exe: Path, dgrams: list[bytes]) -> list[list[list[str]]]:
    """Each datagram -> its messages, each [address, value, ...] as the port prints them."""
    data = b"".join(struct.pack(">i", len(d)) + d for d in dgrams)
    out = subprocess.run(["mono", str(exe)], input=data, capture_output=True, check=True, timeout=60).stdout.decode()
    result = []
    for line in out.splitlines():
        if line == "DGRAM":
            result.append([])
        else:
            result[-1].append(line.split("\t"))
    return result


def bits(x: float) -> str:
    return f"f:{struct.unpack('>I', struct.pack('>f', x))[0]:08x}"


def test_uosc_parses_every_frame_exactly(udp, uosc_port):
    pose = np.array([0.05, 0.3, -0.1, 0.001, 0.002, -0.003], np.float32)
    frames = [(1.0 + i / 30, weights(eyeBlinkLeft=0.9, eyeBlinkRight=0.7), pose) for i in range(3)]
    dgrams = send_frames(udp, frames, head=True, names="vrm")
    parsed = uosc_parse(uosc_port, dgrams)
    assert len(parsed) == 3
    for (t, w, _), msgs, dgram in zip(frames, parsed, dgrams):
        assert not [m for m in msgs if m[0].startswith("ERR")], msgs  # sizes consistent, elements 4-aligned
        assert msgs[0] == ["/VMC/Ext/OK", "i:1"] and msgs[1] == ["/VMC/Ext/T", bits(t)]
        head = decode_packet(dgram).elements[3].arguments
        assert msgs[2] == ["/VMC/Ext/Root/Pos", "s:root"] + [bits(v) for v in (0, 0, 0, 0, 0, 0, 1)]
        assert msgs[3] == ["/VMC/Ext/Bone/Pos", "s:Head"] + [bits(v) for v in head[1:]]
        vals = {m[1][2:]: m[2] for m in msgs if m[0] == "/VMC/Ext/Blend/Val"}
        assert vals["Blink"] == bits(f32(0.7)) and vals["Blink_L"] == bits(f32(0.9) - f32(0.7)) \
            and vals["Blink_R"] == bits(0.0)
        assert msgs[-1] == ["/VMC/Ext/Blend/Apply"]


# ---------------------------------------------------------------- EVMC4U ExternalReceiver (port)


class Evmc4uPort:
    """EVMC4U ExternalReceiver.ProcessMessage, ported: a message only counts when its argument types are
    exactly what the receiver tests (`values[i] is int/float/string`); blend clip names are looked up
    lower-cased among the model's clips (presets by their enum name, others by clip name); values are
    buffered and handed to the model on /VMC/Ext/Blend/Apply; bones go to a HumanBodyBones table."""

    HUMAN_BONES = {b.value for b in Bone}

    def __init__(self, clips):
        self.clips = {c.lower(): c for c in clips}
        self.available, self.time = None, None
        self.root, self.bones, self.buffer, self.applied, self.ignored = None, {}, {}, [], []

    def feed(self, dgram: bytes) -> None:
        packet = decode_packet(dgram)
        for m in packet.elements if isinstance(packet, OSCBundle) else [packet]:
            self.process(m.addrpattern, m.arguments)

    def process(self, address, v):
        is_f = lambda x: isinstance(x, float)  # noqa: E731  (a C# `is float` on a boxed float32)
        if address == "/VMC/Ext/OK" and v and isinstance(v[0], int):
            self.available = v[0]
        elif address == "/VMC/Ext/T" and v and is_f(v[0]):
            self.time = v[0]
        elif address == "/VMC/Ext/Root/Pos" and len(v) >= 8 and isinstance(v[0], str) and all(map(is_f, v[1:8])):
            self.root = (v[1:4], v[4:8])
        elif address == "/VMC/Ext/Bone/Pos" and len(v) >= 8 and isinstance(v[0], str) and all(map(is_f, v[1:8])):
            if v[0] in self.HUMAN_BONES:  # Enum.TryParse<HumanBodyBones>
                self.bones[v[0]] = (v[1:4], v[4:8])
        elif address == "/VMC/Ext/Blend/Val" and len(v) >= 2 and isinstance(v[0], str) and is_f(v[1]):
            clip = self.clips.get(v[0].lower())
            if clip is None:
                self.ignored.append(v[0])
            else:
                self.buffer[clip] = v[1]
        elif address == "/VMC/Ext/Blend/Apply":
            self.applied.append(dict(self.buffer))
        else:
            self.ignored.append(address)


def test_evmc4u_vrm0_model_gets_every_preset_and_the_head_bone(udp):
    w = weights(jawOpen=0.7, mouthClose=0.0, eyeBlinkLeft=1.0, eyeBlinkRight=1.0)
    (dgram,) = send_frames(udp, [(3.25, w, np.array([0.0, 0.2, 0.0, 0, 0, 0], np.float32))], head=True, names="vrm")
    rx = Evmc4uPort(VRM0_PRESETS)
    rx.feed(dgram)
    assert rx.available == 1 and rx.time == pytest.approx(3.25)
    assert rx.ignored == [] and len(rx.applied) == 1
    frame = rx.applied[0]
    assert {"A", "I", "U", "E", "O", "Blink", "Blink_L", "Blink_R", "Joy", "LookUp"} <= set(frame)
    assert frame["A"] > 0.3
    # a full blink of both eyes: Blink = 1, nothing left for Blink_L/R, so UniVRM's summed clips close once
    assert (frame["Blink"], frame["Blink_L"], frame["Blink_R"]) == (1.0, 0.0, 0.0)
    pos, rot = rx.bones["Head"]
    assert pos == pytest.approx((0.0, 0.08, 0.0)) and rot == pytest.approx(euler_to_quat(0.0, 0.2, 0.0), abs=1e-7)
    assert rx.root == ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))


@pytest.mark.parametrize("names", ["arkit", "arkit-pascal"])
def test_evmc4u_perfect_sync_model_matches_all_52_clips(udp, names):
    w = weights()
    (dgram,) = send_frames(udp, [(0.0, w, None)], names=names)
    rx = Evmc4uPort(VRM0_PRESETS + PERFECT_SYNC_CLIPS)  # case-insensitive lookup: both spellings match
    rx.feed(dgram)
    assert rx.ignored == []
    frame = rx.applied[0]
    assert set(frame) == set(PERFECT_SYNC_CLIPS)
    assert [frame[c] for c in PERFECT_SYNC_CLIPS] == [f32(v) for v in w]


def test_shared_blink_closes_each_eye_exactly_once_for_any_vrm0_model(udp):
    """Per eye, what a UniVRM model with all three clips shows (the sum of Blink and its side clip) equals the
    eye's blink; a model with only `Blink` still blinks when both eyes do; a wink stays a wink."""
    cases = [(1.0, 1.0), (0.6, 0.6), (1.0, 0.0), (0.3, 0.8), (0.0, 0.0)]
    frames = [(i / 30, weights(eyeBlinkLeft=l, eyeBlinkRight=r), None) for i, (l, r) in enumerate(cases)]
    rx = Evmc4uPort(VRM0_PRESETS)
    for dgram in send_frames(udp, frames, names="vrm"):
        rx.feed(dgram)
    for (left, right), frame in zip(cases, rx.applied):
        assert frame["Blink"] + frame["Blink_L"] == pytest.approx(left, abs=1e-6)
        assert frame["Blink"] + frame["Blink_R"] == pytest.approx(right, abs=1e-6)
        assert frame["Blink"] == pytest.approx(min(left, right), abs=1e-6)
        assert min(frame["Blink_L"], frame["Blink_R"]) == pytest.approx(0.0, abs=1e-6)
