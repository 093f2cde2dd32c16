"""Live Link Face packets (UDP 11111): what Epic's Live Link Face iOS app sends to Unreal.

Packet (version 6, all integers and floats big-endian):
    uint8 6 | int32 len + device id (UTF-8) | int32 len + subject name (UTF-8)
    | int32 frame | float32 subframe | int32 fps numerator | int32 fps denominator
    | uint8 61 | 61 x float32: 52 ARKit (Apple order), head yaw/pitch/roll,
      left eye yaw/pitch/roll, right eye yaw/pitch/roll
This is the layout Unreal's receiver reads (AppleARKitFaceSupport, FAppleARKitLiveLinkRemoteListener:
FNboSerializeFromBuffer, so strings are an int32 byte count + UTF-8). The device id is a 36-character
UUID string like the app's (some third-party parsers, e.g. PyLiveLinkFace, assume exactly that length).

Angles are not radians: Unreal's ARKit-to-Live-Link mapping (AppleARKitConversion.h, ToBlendShapeMap)
stores each rotation as degrees / 180 ("map the -180..180 range to -1..1"), and PyLiveLinkFace
documents the same -1..1 range; so 0.1 = 18 degrees. See `angle_value`.
The frame time is the stream's audio time `t` on a 60 fps timeline, so Unreal's Live Link
buffering and Take Recorder see steady, monotonic times.
"""
from __future__ import annotations

import math
import struct
import uuid

import numpy as np

from realtalk_bridge.bridges import ArkitSink
from realtalk_bridge.face.arkit import ARKIT_INDEX

LIVELINK_PORT = 11111
LIVELINK_VERSION = 6
N_VALUES = 61
TIMELINE_FPS = 60
EYE_RANGE_RAD = math.radians(30.0)  # eye rotation at eyeLook* = 1
_TIME = struct.Struct(">ifiiB")
_VALUES = struct.Struct(f">{N_VALUES}f")


def angle_value(radians: float) -> float:
    """An angle as Live Link Face sends it: degrees / 180, so -1..1 covers -180..180 degrees."""
    return math.degrees(radians) / 180.0


def eye_yaw_pitch(values: np.ndarray, side: str) -> tuple[float, float, float]:
    """(yaw, pitch, roll) radians for one eye from eyeLook*: yaw positive = towards the avatar's right."""
    g = lambda n: float(values[ARKIT_INDEX[n + side]])  # noqa: E731
    toward_right = g("eyeLookOut") - g("eyeLookIn") if side == "Right" else g("eyeLookIn") - g("eyeLookOut")
    return toward_right * EYE_RANGE_RAD, (g("eyeLookUp") - g("eyeLookDown")) * EYE_RANGE_RAD, 0.0


def encode_livelink(values: np.ndarray, pose: np.ndarray | None, t: float, device_id: str, subject: str,
                    fps: int = TIMELINE_FPS) -> bytes:
    """52 ARKit values (Apple order), optional pose (pitch, yaw, roll rad, ...) and time -> one packet
    (the 9 angles converted to Live Link's degrees / 180)."""
    v = np.nan_to_num(np.asarray(values, np.float32))
    dev, subj = device_id.encode("utf-8"), subject.encode("utf-8")
    ft = max(0.0, float(t)) * fps
    whole = int(math.floor(ft + 1e-6))  # t = k/fps must land on frame k despite rounding
    sub = max(0.0, ft - whole)
    frame = whole % 2**31  # over a year of audio at 60 fps wraps rather than fails
    pitch, yaw, roll = (float(pose[0]), float(pose[1]), float(pose[2])) if pose is not None else (0.0, 0.0, 0.0)
    extra = [angle_value(a) for a in (yaw, pitch, roll, *eye_yaw_pitch(v, "Left"), *eye_yaw_pitch(v, "Right"))]
    return b"".join([
        struct.pack(">Bi", LIVELINK_VERSION, len(dev)), dev,
        struct.pack(">i", len(subj)), subj,
        _TIME.pack(frame, sub, fps, 1, N_VALUES),
        _VALUES.pack(*v.tolist(), *extra),
    ])


class LiveLinkSink(ArkitSink):
    kind = "livelink"
    default_port = LIVELINK_PORT

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, subject: str = "RealTalk",
                 profile=None, stream: str | None = None):
        if not isinstance(subject, str) or not subject or len(subject.encode("utf-8")) > 255:
            from realtalk_bridge.bridges import BridgeConfigError

            raise BridgeConfigError(f"--livelink-subject: expected 1-255 bytes of text, got {subject!r}")
        self.subject = subject
        # Live Link keys subjects by name; the device id only has to be stable for this process
        self.device_id = str(uuid.uuid4())
        super().__init__(host, port, profile=profile, stream=stream)

    def encode(self, stream, seq, t, names, weights, pose):
        return encode_livelink(self.arkit_values(stream, t, names, weights), pose, t, self.device_id, self.subject)
