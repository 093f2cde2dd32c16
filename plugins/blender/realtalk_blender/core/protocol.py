"""Protocol v1 messages (protocol/SPEC.md): msgpack decode, validation, float32 arrays.

Only msgpack and the standard library: Blender's Python is not guaranteed to have numpy.
"""
from __future__ import annotations

import math
import re
import sys
from array import array
from dataclasses import dataclass, field

import msgpack

VERSION = 1
MAX_MESSAGE = 64 * 1024 * 1024  # SPEC section 4: default limit
STREAM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# SPEC section 6 defaults, for a sidecar whose hello has no `limits` map (an older one)
DEFAULT_LIMITS = {"push_bytes": 512 * 1024, "push_seconds": 0.5, "bake_bytes": 32 * 1024 * 1024,
                  "bake_seconds": 30 * 60.0, "queued_audio_seconds": 3.0}


class ProtocolError(ValueError):
    """A message that a client must drop (bad msgpack, not a map, wrong types)."""


@dataclass
class Frame:
    """One `coeffs` message, decoded."""
    stream: str
    seq: int
    t: float
    wall: float
    fps: float
    layout: str
    names: tuple[str, ...]
    weights: array  # float32, len(names)
    pose: array | None = None
    speech: bool | None = None

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights))


@dataclass
class BakeResult:
    fps: float
    layout: str
    names: tuple[str, ...]
    n_frames: int
    t0: float
    w: array = field(repr=False)  # n_frames * len(names), row-major

    def row(self, i: int) -> array:
        e = len(self.names)
        return self.w[i * e:(i + 1) * e]


def encode(msg: dict) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def decode(payload: bytes, max_size: int = MAX_MESSAGE) -> dict:
    """bytes -> map with string keys, or ProtocolError. Never raises anything else."""
    if len(payload) > max_size:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the {max_size}-byte limit")
    try:
        # strict_map_key: keys must be str/bytes; raw=False: str stays str; limits bound memory.
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=max_size,
                              max_str_len=max_size, max_array_len=1 << 20, max_map_len=1 << 16)
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise ProtocolError(f"not valid msgpack: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"payload is a {type(msg).__name__}, not a map")
    if not all(isinstance(k, str) for k in msg):
        raise ProtocolError("map keys must be strings")
    return msg


def f32(data, what: str = "array") -> array:
    """msgpack bin of packed little-endian float32 -> array('f')."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what} must be bin, got {type(data).__name__}")
    if len(data) % 4:
        raise ProtocolError(f"{what} has {len(data)} bytes, not a multiple of 4")
    a = array("f")
    a.frombytes(bytes(data))
    if sys.byteorder == "big":
        a.byteswap()
    return a


def s16(data, what: str = "array") -> array:
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) % 2:
        raise ProtocolError(f"{what} must be bin of int16")
    a = array("h")
    a.frombytes(bytes(data))
    if sys.byteorder == "big":
        a.byteswap()
    return a


def pack_f32(values) -> bytes:
    a = array("f", values)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def _get(msg: dict, key: str, types, required: bool = True):
    if key not in msg:
        if required:
            raise ProtocolError(f"missing key {key!r}")
        return None
    value = msg[key]
    # bool is an int subclass: never accept it where a number is meant
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ProtocolError(f"{key!r} has type bool")
    if not isinstance(value, types):
        raise ProtocolError(f"{key!r} has type {type(value).__name__}")
    return value


def check_names(names, what: str = "names") -> tuple[str, ...]:
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ProtocolError(f"{what} must be a list of strings")
    return tuple(names)


def parse_coeffs(msg: dict, layouts: dict[str, tuple[str, ...]]) -> Frame:
    """A decoded `coeffs` map -> Frame. `layouts` (layout id -> names) is read and updated:
    names arrive in a stream's first frame, then once per second, or via hello/status."""
    if msg.get("v") != VERSION:
        raise ProtocolError(f"unsupported protocol version {msg.get('v')!r}")
    if msg.get("type") != "coeffs":
        raise ProtocolError(f"type is {msg.get('type')!r}, not 'coeffs'")
    layout = _get(msg, "layout", str)
    if "names" in msg:
        layouts[layout] = check_names(msg["names"])
    names = layouts.get(layout)
    if names is None:
        raise ProtocolError(f"layout {layout!r} not known yet (no names received)")
    w = f32(_get(msg, "w", (bytes, bytearray)), "w")
    if len(w) != len(names):
        raise ProtocolError(f"w has {len(w)} values for {len(names)} names")
    if not all(math.isfinite(x) for x in w):
        raise ProtocolError("w holds NaN or infinity")
    pose = msg.get("pose")
    if pose is not None:
        pose = f32(pose, "pose")
        if len(pose) != 6 or not all(math.isfinite(x) for x in pose):
            raise ProtocolError("pose must hold 6 finite float32")
    speech = msg.get("speech")
    stream = _get(msg, "stream", str)
    if not STREAM_ID.match(stream):
        raise ProtocolError(f"bad stream id {stream[:80]!r}")
    seq = _get(msg, "seq", int)
    if seq < 0:
        raise ProtocolError("seq must be >= 0")
    t, wall, fps = (_number(msg, k) for k in ("t", "wall", "fps"))
    if not 1.0 <= fps <= 120.0:
        raise ProtocolError(f"fps {fps} outside 1..120")
    return Frame(stream=stream, seq=seq, t=t, wall=wall, fps=fps, layout=layout, names=names, weights=w,
                 pose=pose, speech=speech if isinstance(speech, bool) else None)


def _number(msg: dict, key: str) -> float:
    x = float(_get(msg, key, (float, int)))
    if not math.isfinite(x):
        raise ProtocolError(f"{key!r} is not finite")
    return x


def parse_layouts(msg: dict) -> dict[str, tuple[str, ...]]:
    """`layouts` of a hello reply or status message (missing -> {})."""
    raw = msg.get("layouts") or {}
    if not isinstance(raw, dict):
        raise ProtocolError("layouts must be a map")
    return {str(k): check_names(v, f"layouts[{k!r}]") for k, v in raw.items()}


def parse_limits(msg: dict) -> dict[str, float]:
    """The hello reply's `limits` (SPEC section 6) over the defaults: only known keys holding positive finite
    numbers are taken, anything else keeps its default."""
    limits = dict(DEFAULT_LIMITS)
    raw = msg.get("limits")
    if isinstance(raw, dict):
        for key in DEFAULT_LIMITS:
            x = raw.get(key)
            if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0:
                limits[key] = float(x)
    return limits


def parse_bake(reply: dict) -> BakeResult:
    names = check_names(reply.get("names"))
    n = _get(reply, "n_frames", int)
    w = f32(_get(reply, "w", (bytes, bytearray)), "w")
    if n < 0 or len(w) != n * len(names):
        raise ProtocolError(f"bake w has {len(w)} values, expected {n} x {len(names)}")
    if not all(math.isfinite(x) for x in w):
        raise ProtocolError("bake w holds NaN or infinity")
    fps = _number(reply, "fps")
    if fps <= 0:
        raise ProtocolError("bake fps must be > 0")
    t0 = _number(reply, "t0") if "t0" in reply else 0.0
    return BakeResult(fps=fps, layout=str(reply.get("layout", "")), names=names, n_frames=n, t0=t0, w=w)


def reply_error(reply: dict) -> tuple[str, str] | None:
    """(code, message) when a reply says ok: false, else None."""
    if reply.get("ok") is True:
        return None
    err = reply.get("error")
    if isinstance(err, dict):
        return str(err.get("code", "unknown")), str(err.get("message", ""))
    return "unknown", "reply without ok: true"
