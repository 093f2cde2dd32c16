"""Live Link Face output (`--livelink`) checked against receivers we did not write, over real UDP.

- PyPI `PyLiveLinkFace` (PyLiveLinkFace.decode): a third-party Python decoder of the app's packets.
- Unreal Engine's receiver, ported: Engine/Plugins/Runtime/AR/AppleAR/AppleARKitFaceSupport/Source/
  AppleARKitFaceSupport/Private/AppleARKitLiveLinkSource.cpp, FAppleARKitLiveLinkRemoteListener::Tick
  (size gate `BytesRead > MIN_BLEND_SHAPE_PACKET_SIZE`, FNboSerializeFromBuffer reads with overflow checks,
  `PacketVer == BLEND_SHAPE_PACKET_VER` (6), `BlendShapeCount == EARFaceBlendShape::MAX` (61)).
- Angle units from Unreal's ARKit-to-Live-Link mapping (AppleARKitConversion.h, ToBlendShapeMap: "Map the
  -180..180 range to -1..1", i.e. degrees / 180), the range PyLiveLinkFace documents for head rotation.
"""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from pylivelinkface import FaceBlendShape, PyLiveLinkFace

from _bridge_util import sink_datagrams

from realtalk_bridge.bridges.livelink import LiveLinkSink
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES

RNG = np.random.default_rng(11111)
N_CURVES = 61  # EARFaceBlendShape::MAX: 52 ARKit + head yaw/pitch/roll + left/right eye yaw/pitch/roll


def send(udp, frames, **kw) -> list[bytes]:
    return sink_datagrams(LiveLinkSink("127.0.0.1", udp.getsockname()[1], **kw), udp, frames, ARKIT_NAMES)


# ---------------------------------------------------------------- Unreal's receiver (port)


class NboReader:
    """FNboSerializeFromBuffer: network byte order; reading past the end sets the overflow flag."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.overflow = data, 0, False

    def _take(self, fmt: str):
        n = struct.calcsize(fmt)
        if self.overflow or self.pos + n > len(self.data):
            self.overflow = True
            return struct.unpack(fmt, b"\0" * n)[0]
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += n
        return v

    def u8(self):
        return self._take(">B")

    def i32(self):
        return self._take(">i")

    def f32(self):
        return self._take(">f")

    def string(self) -> str:  # FString / FName: int32 byte count, then UTF-8
        n = self.i32()
        if self.overflow or n < 0 or self.pos + n > len(self.data):
            self.overflow = True
            return ""
        s = self.data[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s


def unreal_receive(data: bytes, tchar: int = 2) -> dict | None:
    """FAppleARKitLiveLinkRemoteListener::Tick for one datagram; None where Unreal drops it.
    tchar: sizeof(TCHAR), 2 on Windows (4 on Linux/macOS: a larger MIN and MAX, checked below too)."""
    min_size = 1 + 16 + 1 + 4 * N_CURVES + tchar + tchar  # ver + FQualifiedFrameTime + count + curves + 2 names
    max_size = 1 + 16 + 1 + 4 * N_CURVES + tchar * 256 * 2
    data = data[:max_size]  # RecvBuffer holds MAX_BLEND_SHAPE_PACKET_SIZE bytes
    if not len(data) > min_size:
        return None
    r = NboReader(data)
    if r.u8() != 6 or r.overflow:
        return None
    device, subject = r.string(), r.string()
    frame, sub, num, den = r.i32(), r.f32(), r.i32(), r.i32()
    count = r.u8()
    if r.overflow or count != N_CURVES:
        return None
    curves = [r.f32() for _ in range(count)]
    if r.overflow:
        return None
    return dict(device=device, subject=subject, frame=frame, sub=sub, rate=(num, den), curves=curves,
                rest=len(data) - r.pos)


def curve_names() -> list[str]:
    """The curve names Unreal publishes, in packet order (EARFaceBlendShape; PyLiveLinkFace mirrors the enum)."""
    return [FaceBlendShape(i).name for i in range(N_CURVES)]


def test_unreal_receiver_accepts_our_packets_and_names_the_curves(udp):
    w = RNG.uniform(0, 1, 52).astype(np.float32)
    pose = np.array([0.1, -0.3, 0.05, 0, 0, 0], np.float32)  # pitch, yaw, roll (rad)
    frames = [(t, w, pose) for t in (0.0, 1 / 60, 2.5125, 3600.0)]
    for (t, _, _), data in zip(frames, send(udp, frames, subject="Avatar01")):
        for tchar in (2, 4):
            got = unreal_receive(data, tchar)
            assert got is not None, f"Unreal drops the packet (TCHAR={tchar})"
            assert got["rest"] == 0 and got["subject"] == "Avatar01" and len(got["device"]) == 36
            assert got["rate"] == (60, 1) and 0.0 <= got["sub"] < 1.0
            assert got["frame"] + got["sub"] == pytest.approx(t * 60, abs=1e-3)
        curves = dict(zip(curve_names(), got["curves"]))
        for i, n in enumerate(ARKIT_NAMES):  # EyeBlinkLeft ... TongueOut: Apple's names, capitalised
            assert curve_names()[i] == n[0].upper() + n[1:]
            assert curves[curve_names()[i]] == pytest.approx(float(w[i]))
        # angles as Unreal maps them: degrees / 180
        assert curves["HeadYaw"] == pytest.approx(math.degrees(-0.3) / 180, abs=1e-6)
        assert curves["HeadPitch"] == pytest.approx(math.degrees(0.1) / 180, abs=1e-6)
        assert curves["HeadRoll"] == pytest.approx(math.degrees(0.05) / 180, abs=1e-6)


def test_unreal_receiver_drops_what_it_should():
    """The port itself: a short, wrongly versioned or wrongly counted packet is dropped (so the checks above mean
    something), and a subject of 255 bytes still fits Unreal's receive buffer."""
    from realtalk_bridge.bridges.livelink import encode_livelink

    good = encode_livelink(np.zeros(52, np.float32), None, 0.0, "0" * 36, "S")
    assert unreal_receive(good) is not None
    assert unreal_receive(good[:-4]) is None
    assert unreal_receive(b"\x05" + good[1:]) is None
    cut = bytearray(good)
    cut[1 + 40 + 5 + 16] = 52  # BlendShapeCount
    assert unreal_receive(bytes(cut)) is None
    long = encode_livelink(np.zeros(52, np.float32), None, 0.0, "0" * 36, "s" * 255)
    assert unreal_receive(long)["subject"] == "s" * 255


# ---------------------------------------------------------------- PyLiveLinkFace


def test_pylivelinkface_decodes_every_packet(udp):
    frames = []
    for i in range(5):
        w = RNG.uniform(0, 1, 52).astype(np.float32)
        w[ARKIT_INDEX["eyeLookUpLeft"]], w[ARKIT_INDEX["eyeLookDownLeft"]] = 0.6, 0.0
        w[ARKIT_INDEX["eyeLookInLeft"]], w[ARKIT_INDEX["eyeLookOutLeft"]] = 0.5, 0.0
        frames.append((i / 60, w, np.array([0.02 * i, 0.4, -0.1, 0.01, 0, 0], np.float32)))
    for i, ((t, w, pose), data) in enumerate(zip(frames, send(udp, frames))):
        ok, face = PyLiveLinkFace.decode(data)
        assert ok and face._version == 6 and face.name == "RealTalk" and face.fps == 60 and face._denominator == 1
        assert face.uuid.startswith("$") and len(face.uuid) == 37  # its reading of our 36-byte id + length byte
        shapes = np.array(face._blend_shapes, np.float32)
        np.testing.assert_array_equal(shapes[:52], w)
        for k, n in enumerate(ARKIT_NAMES):
            assert face.get_blendshape(FaceBlendShape[n[0].upper() + n[1:]]) == pytest.approx(float(w[k]))
        assert np.all(np.abs(shapes[52:]) <= 1.0)  # "-1 and 1 for the head rotation"
        assert face.get_blendshape(FaceBlendShape.HeadYaw) == pytest.approx(math.degrees(0.4) / 180, abs=1e-6)
        assert face.get_blendshape(FaceBlendShape.HeadPitch) == pytest.approx(math.degrees(0.02 * i) / 180, abs=1e-6)
        # eyes: eyeLookUp 0.6 -> 18 degrees up; the left eye turned in (towards the avatar's right) 0.5 -> 15
        assert face.get_blendshape(FaceBlendShape.LeftEyePitch) == pytest.approx(18.0 / 180, abs=1e-6)
        assert face.get_blendshape(FaceBlendShape.LeftEyeYaw) == pytest.approx(15.0 / 180, abs=1e-6)
        assert face._frames + face._sub_frame == pytest.approx(t * 60, abs=1e-3)
