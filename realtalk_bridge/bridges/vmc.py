"""VMC protocol (OSC over UDP): one bundle per frame.

Per frame: `/VMC/Ext/OK 1`, `/VMC/Ext/T <time>`, with `--vmc-head` `/VMC/Ext/Root/Pos "root" ...` and
`/VMC/Ext/Bone/Pos "Head" ...` (position + rotation, as a performer sends them), one
`/VMC/Ext/Blend/Val <name> <value>` per shape, then `/VMC/Ext/Blend/Apply` last, so a receiver
applies the whole frame at once. Receivers (VSeeFace, VNyan, Warudo, VMagicMirror, EVMC4U)
listen on 39539 by default. Names are case-sensitive for most receivers: pick them with `--vmc-names`.

Bone positions are *local* positions (EVMC4U's "Bone Position Synchronize" sets the bone's
localPosition to them), so the head bone carries the Neck->Head offset (`--vmc-head-offset`, Unity
metres) plus the idle motion's small translation; the root stays at the origin.

Blink: VRM 0 models carry `Blink`, `Blink_L` and `Blink_R` clips and UniVRM adds up the clips that
drive one mesh shape, so sending a full `Blink` and full `Blink_L`/`Blink_R` would close the eyes twice.
When a frame has all three names (VRM 1.0: `blink`, `blinkLeft`, `blinkRight`), the part both eyes share
goes out as `Blink` = min(L, R) and only the rest as `Blink_L`/`Blink_R` (`share_blink`): a model with only
a `Blink` clip blinks, and one with all three closes each eye exactly once.
"""
from __future__ import annotations

import math
import struct
from typing import Sequence

import numpy as np
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from realtalk_bridge.bridges import BridgeConfigError, UDPSink

VMC_PORT = 39539
MAX_DATAGRAM = 8192  # bytes per bundle; ARKit-52 needs ~2.6 KB. Larger ones are split (see packets)
HEAD_OFFSET = (0.0, 0.08, 0.0)  # Neck->Head local position (Unity metres), about a VRoid Studio model's
BLINK_TRIPLETS = (("Blink", "Blink_L", "Blink_R"), ("blink", "blinkLeft", "blinkRight"))
PRESET_FOR = {"arkit": "arkit", "arkit-pascal": "arkit", "vrm": "vrm0", "vrm0": "vrm0", "vrm1": "vrm1", "ovr": "ovr"}


def _msg(address: str, *args) -> OscMessageBuilder:
    m = OscMessageBuilder(address=address)
    for a in args:
        if isinstance(a, str):
            m.add_arg(a, OscMessageBuilder.ARG_TYPE_STRING)
        elif isinstance(a, int):
            m.add_arg(a, OscMessageBuilder.ARG_TYPE_INT)
        else:
            m.add_arg(float(a), OscMessageBuilder.ARG_TYPE_FLOAT)
    return m.build()


def euler_to_quat(pitch: float, yaw: float, roll: float) -> tuple[float, float, float, float]:
    """Unity's Quaternion.Euler(pitch, yaw, roll) in radians (rotation order Z, X, Y) -> (x, y, z, w)."""
    cx, sx = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    cz, sz = math.cos(roll / 2), math.sin(roll / 2)
    # q = qy * qx * qz
    x = cy * sx * cz + sy * cx * sz
    y = sy * cx * cz - cy * sx * sz
    z = cy * cx * sz - sy * sx * cz
    w = cy * cx * cz + sy * sx * sz
    return x, y, z, w


def head_bone(pose: np.ndarray, offset: Sequence[float] = HEAD_OFFSET) -> tuple[float, ...]:
    """A pose (pitch, yaw, roll rad, x, y, z m; x = the subject's left, z = towards the viewer) -> the Head
    bone's local (px, py, pz, qx, qy, qz, qw) in Unity axes (x = the avatar's right, y up, z = its front)."""
    p = [float(v) for v in pose] + [0.0] * (6 - len(pose))
    q = euler_to_quat(p[0], p[1], p[2])
    return (offset[0] - p[3], offset[1] + p[4], offset[2] + p[5], *q)


ROOT_BONE = ("root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # /VMC/Ext/Root/Pos: the avatar stays where it is put


def share_blink(names: Sequence[str]) -> list[tuple[int, int, int]]:
    """Index triplets (both, left, right) of the blink clips present in `names` (see the module doc)."""
    pos = {n: i for i, n in enumerate(names)}
    return [tuple(pos[n] for n in trip) for trip in BLINK_TRIPLETS if all(n in pos for n in trip)]


def apply_shared_blink(values: np.ndarray, triplets) -> np.ndarray:
    """Blink = min(L, R), L -= Blink, R -= Blink (a new array; L and R are read from their own channels)."""
    if not triplets:
        return values
    out = np.array(values, np.float32, copy=True)
    for both, left, right in triplets:
        shared = min(out[left], out[right])
        out[both], out[left], out[right] = shared, out[left] - shared, out[right] - shared
    return out


def encode_vmc(names: Sequence[str], values: np.ndarray, t: float | None = None,
               head: np.ndarray | None = None, head_offset: Sequence[float] = HEAD_OFFSET) -> bytes:
    """One frame -> the bytes of one OSC bundle (pure; no sockets)."""
    b = OscBundleBuilder(IMMEDIATELY)
    b.add_content(_msg("/VMC/Ext/OK", 1))
    if t is not None:
        b.add_content(_msg("/VMC/Ext/T", float(t)))
    if head is not None:
        b.add_content(_msg("/VMC/Ext/Root/Pos", *ROOT_BONE))
        b.add_content(_msg("/VMC/Ext/Bone/Pos", "Head", *head_bone(head, head_offset)))
    for n, v in zip(names, np.asarray(values, np.float32).tolist()):
        b.add_content(_msg("/VMC/Ext/Blend/Val", n, v))
    b.add_content(_msg("/VMC/Ext/Blend/Apply"))
    return b.build().dgram


class VMCEncoder:
    """Same bytes as `encode_vmc`, ~20x faster: the messages for a name list are built once with
    python-osc and only their float32 payloads are patched per frame (60 fps on a 2-core CPU)."""

    _BUNDLE_HEAD = OscBundleBuilder(IMMEDIATELY).build().dgram  # "#bundle\0" + the "immediately" time tag

    def __init__(self, names: Sequence[str], head_offset: Sequence[float] = HEAD_OFFSET):
        self.names = tuple(names)
        self.head_offset = tuple(float(v) for v in head_offset)
        self._root = self._sized(_msg("/VMC/Ext/Root/Pos", *ROOT_BONE).dgram)
        self._ok = self._sized(_msg("/VMC/Ext/OK", 1).dgram)
        self._t = self._sized(_msg("/VMC/Ext/T", 0.0).dgram)[:-4]
        # each Val message ends with its float32 value: keep everything before it
        self._vals = [self._sized(_msg("/VMC/Ext/Blend/Val", n, 0.0).dgram)[:-4] for n in self.names]
        self._bone = self._sized(_msg("/VMC/Ext/Bone/Pos", "Head", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0).dgram)[:-28]
        self._apply = self._sized(_msg("/VMC/Ext/Blend/Apply").dgram)
        self._pack = struct.Struct(f">{len(self.names)}f").pack

    @staticmethod
    def _sized(dgram: bytes) -> bytes:
        return struct.pack(">i", len(dgram)) + dgram

    def __call__(self, values: np.ndarray, t: float | None = None, head: np.ndarray | None = None) -> bytes:
        return b"".join(self._parts(values, t, head))

    def _parts(self, values, t, head) -> list[bytes]:
        vals = self._pack(*np.asarray(values, np.float32).tolist())
        parts = [self._BUNDLE_HEAD, self._ok]
        if t is not None:
            parts += [self._t, struct.pack(">f", t)]
        if head is not None:
            parts += [self._root, self._bone + struct.pack(">7f", *head_bone(head, self.head_offset))]
        for i, prefix in enumerate(self._vals):
            parts += [prefix + vals[4 * i:4 * i + 4]]
        parts.append(self._apply)
        return parts

    def packets(self, values: np.ndarray, t: float | None = None, head: np.ndarray | None = None,
                limit: int = MAX_DATAGRAM) -> list[bytes]:
        """The frame as one bundle, or, for rigs with very many or very long names, several bundles
        under `limit` bytes each with `/VMC/Ext/Blend/Apply` only in the last (VMC applies the values
        received since the previous Apply)."""
        parts = self._parts(values, t, head)
        if sum(map(len, parts)) <= limit:
            return [b"".join(parts)]
        out, cur = [], [self._BUNDLE_HEAD]
        for p in parts[1:]:
            if len(cur) > 1 and sum(map(len, cur)) + len(p) > limit:
                out.append(b"".join(cur))
                cur = [self._BUNDLE_HEAD]
            cur.append(p)
        out.append(b"".join(cur))
        return out


def parse_offset(value) -> tuple[float, float, float]:
    """--vmc-head-offset "X,Y,Z" (or a 3-list from a config file) -> three finite floats (metres)."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        xyz = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        xyz = ()
    if len(xyz) != 3 or not all(math.isfinite(v) and abs(v) <= 10 for v in xyz):
        raise BridgeConfigError(f"--vmc-head-offset: expected X,Y,Z in metres (each within +-10), got {value!r}")
    return xyz


def resolve_names(names: str):
    """--vmc-names value -> (Profile, pascal_case)."""
    from realtalk_bridge.face.retarget import ProfileError, load_profile

    if not isinstance(names, str) or not names:
        raise BridgeConfigError(f"--vmc-names: expected one of {', '.join(PRESET_FOR)} or a profile file, got {names!r}")
    try:
        return load_profile(PRESET_FOR.get(names, names)), names == "arkit-pascal"
    except ProfileError as exc:
        raise BridgeConfigError(f"--vmc-names: {exc} (or one of: {', '.join(PRESET_FOR)})") from None


class VMCSink(UDPSink):
    kind = "vmc"
    default_port = VMC_PORT

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, names: str = "arkit", head: bool = False,
                 stream: str | None = None, head_offset: Sequence[float] = HEAD_OFFSET):
        self.profile, self.pascal = resolve_names(names)
        self.names_choice, self.head = names, head
        self.head_offset = parse_offset(head_offset)
        super().__init__(host, port, stream)

    def __repr__(self) -> str:
        return f"VMCSink({self.host}:{self.port}, names={self.names_choice})"

    def encode(self, stream, seq, t, names, weights, pose):
        from realtalk_bridge.face.retarget import Retargeter

        def make():
            r = Retargeter(self.profile, names)
            r.encoder = VMCEncoder(tuple(n[:1].upper() + n[1:] for n in r.names) if self.pascal else r.names,
                                   self.head_offset)
            r.blink = share_blink(r.names)
            return r

        r = self.state(stream, make)
        if r.source_names != names:  # the layout changed: start over
            self._states.pop(stream)
            r = self.state(stream, make)
        out = apply_shared_blink(r(weights, t), r.blink)
        return r.encoder.packets(out, t, head=pose if self.head else None)
