"""iFacialMocap text datagrams (UDP 49983), as the iOS app sends them.

One ASCII datagram per frame:
    eyeBlink_L-37|mouthSmile_R-4|...|=head#pitch,yaw,roll,x,y,z|rightEye#pitch,yaw,roll|leftEye#pitch,yaw,roll|
Blend shape values are integers 0-100 with `_L`/`_R` in place of ARKit's Left/Right; head and eye
rotations are degrees, head position metres. Receivers: VSeeFace, Warudo, VNyan, VMagicMirror,
VBridger, VRCFaceTracking modules.
"""
from __future__ import annotations

import math

import numpy as np

from realtalk_bridge.bridges import ArkitSink
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES

IFACIALMOCAP_PORT = 49983
EYE_RANGE_DEG = 30.0  # eye rotation at eyeLook* = 1 (ARKit's eyes turn about this far)


def ifm_name(arkit_name: str) -> str:
    """eyeBlinkLeft -> eyeBlink_L, mouthSmileRight -> mouthSmile_R, jawOpen -> jawOpen."""
    if arkit_name.endswith("Left"):
        return arkit_name[:-4] + "_L"
    if arkit_name.endswith("Right"):
        return arkit_name[:-5] + "_R"
    return arkit_name


IFM_NAMES = tuple(ifm_name(n) for n in ARKIT_NAMES)


def eye_angles(values: np.ndarray, side: str) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees for one eye from its eyeLook* coefficients.
    Pitch positive = up; yaw positive = towards the avatar's right."""
    g = lambda n: float(values[ARKIT_INDEX[n + side]])  # noqa: E731
    pitch = (g("eyeLookUp") - g("eyeLookDown")) * EYE_RANGE_DEG
    toward_right = g("eyeLookOut") - g("eyeLookIn") if side == "Right" else g("eyeLookIn") - g("eyeLookOut")
    return pitch, toward_right * EYE_RANGE_DEG, 0.0


def encode_ifacialmocap(values: np.ndarray, pose: np.ndarray | None = None) -> bytes:
    """52 ARKit values (Apple order) and an optional pose (pitch, yaw, roll rad; x, y, z m) -> datagram."""
    v = np.clip(np.nan_to_num(np.asarray(values, np.float32)), 0.0, 1.0)
    ints = np.rint(v * 100.0).astype(int).tolist()
    parts = [f"{n}-{i}" for n, i in zip(IFM_NAMES, ints)]
    if pose is None:
        head = [0.0] * 6
    else:
        p = [float(x) for x in pose]
        head = [math.degrees(p[0]), math.degrees(p[1]), math.degrees(p[2]), p[3], p[4], p[5]]
    fmt = lambda xs: ",".join(f"{x:.4f}" for x in xs)  # noqa: E731
    text = ("|".join(parts) + "|=head#" + fmt(head) + "|rightEye#" + fmt(eye_angles(v, "Right"))
            + "|leftEye#" + fmt(eye_angles(v, "Left")) + "|")
    return text.encode("ascii")


class IFacialMocapSink(ArkitSink):
    kind = "ifacialmocap"
    default_port = IFACIALMOCAP_PORT

    def encode(self, stream, seq, t, names, weights, pose):
        return encode_ifacialmocap(self.arkit_values(stream, t, names, weights), pose)
