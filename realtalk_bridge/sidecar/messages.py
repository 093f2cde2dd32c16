"""Protocol v1 (protocol/SPEC.md): encode, decode and validate messages.

Pure functions on bytes and dicts; no sockets here. msgpack + numpy only, because the
Python client (and the Blender add-on that vendors it) imports this module too.
Validation is hand-written rather than jsonschema so it stays fast on the hot path
and dependency-free; protocol/schemas/ says the same things for other languages, and
a test checks both agree on every golden vector.
"""
from __future__ import annotations

import math
import re
from typing import Any

import msgpack
import numpy as np

PROTOCOL = 1
VERSIONS = (1,)
# Size limits, checked on the raw bytes before any decoding work (SPEC section 6). A request's cost is
# bounded by its op's limit: control ops are tiny, push_audio carries a few hundred ms, bake has its own.
MAX_CONTROL_BYTES = 64 * 1024  # every op but push_audio and bake
MAX_PUSH_SECONDS = 0.5  # one push_audio chunk, at the stream's sample rate
MAX_PUSH_BYTES = 512 * 1024  # 0.5 s at 192 kHz float32 is 384 KiB
# a bake upload (serve --max-bake-mb changes it): 17 min of 16 kHz s16, or a 30 min FLAC/OGG file. A frame
# above it is refused by ZeroMQ (MAXMSGSIZE) from its header: the bytes are never read
MAX_BAKE_BYTES = 32 * 1024 * 1024
MAX_MESSAGE_BYTES = MAX_BAKE_BYTES  # the largest message of any op (kept for callers of decode())
MAX_ENVELOPE_FRAMES = 4  # routing id + delimiter(s) + payload; more is an attack, dropped unanswered
MAX_ENVELOPE_FRAME_BYTES = 256  # a routing id is at most 255 bytes; delimiters are empty
# Shape limits: strings, lists and maps inside any message (msgpack rejects them at the header)
MAX_STR = 1024
MAX_LIST = 4096  # (status lists every stream)
MAX_MAP = 1024
EXCERPT = 120  # characters of a peer's value quoted back in an error text or a log line
# Value ranges of the floats a client can send (the model overflows to NaN on 3e38 identities)
IDENTITY_ABS_MAX = 10.0
HISTORY_ABS_MAX = 10.0
FPS_RANGE = (1.0, 120.0)
SAMPLE_RATE_RANGE = (8000, 192000)
STREAM_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # used with fullmatch: no trailing newline sneaks in

ERROR_CODES = (
    "bad_msgpack", "bad_request", "unknown_op", "unsupported_version", "too_large",
    "unknown_stream", "busy", "not_supported", "internal", "quota",
)
EVENTS = (
    "stream_open", "stream_close", "speech_start", "speech_stop", "source_error", "source_recovered", "lagging",
)
STREAM_TYPES = ("coeffs", "status", "event", "video")


def excerpt(x, n: int = EXCERPT) -> str:
    """A peer's value as short text: never echo more than n characters of what a client sent."""
    s = x if isinstance(x, str) else repr(x)
    return s if len(s) <= n else f"{s[:n]}... ({len(s)} characters)"


class ProtocolError(ValueError):
    """A message broke the protocol; `code` is one of ERROR_CODES. The text is cut to a few hundred
    characters, so no error reply or log line can carry a client's megabytes back."""

    def __init__(self, code: str, message: str):
        message = excerpt(message, 4 * EXCERPT)
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- bytes <-> maps --------------------------------------------------------------------------

def encode(msg: dict) -> bytes:
    """A message map -> msgpack bytes (str as str, bytes as bin; key order as given)."""
    return msgpack.packb(msg, use_bin_type=True)


def decode(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES, max_str: int = MAX_STR, max_list: int = MAX_LIST,
           max_map: int = MAX_MAP) -> dict:
    """msgpack bytes -> a map with string keys, or ProtocolError (too_large / bad_msgpack).

    Strings, lists and maps longer than the limits are refused by msgpack at their header, before
    anything is built, so a 20 M-entry list or a 60 MiB string costs nothing to refuse."""
    if len(data) > max_bytes:
        raise ProtocolError("too_large", f"message is {len(data)} bytes, the limit is {max_bytes}")
    try:
        # strict_map_key: only str/bytes keys; no ext types at all
        msg = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, max_str_len=max_str,
                              max_bin_len=max_bytes, max_array_len=max_list, max_map_len=max_map, max_ext_len=0)
    except ValueError as exc:
        if "exceeds max" in str(exc):  # a string/list/map over the shape limits
            raise ProtocolError("too_large", f"a string, list or map is over its limit ({excerpt(str(exc))}); "
                                f"limits: strings {max_str} bytes, lists {max_list}, maps {max_map}") from None
        raise ProtocolError("bad_msgpack", f"not valid msgpack: {type(exc).__name__}: {excerpt(str(exc))}") from None
    except Exception as exc:  # msgpack raises many types for bad input; all mean the same to a peer
        raise ProtocolError("bad_msgpack", f"not valid msgpack: {type(exc).__name__}: {excerpt(str(exc))}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_msgpack", f"payload must be a map, got {type(msg).__name__}")
    for key in msg:
        if not isinstance(key, str):
            raise ProtocolError("bad_msgpack", f"map keys must be strings, got {type(key).__name__}")
    return msg


def peek(data) -> dict:
    """`v`, `op` and `id` of a large request without decoding it: only its first 4 KiB are read (clients
    send v, op, id first). Used to answer a refused or undecodable large request with its id."""
    out: dict = {}
    try:
        u = msgpack.Unpacker(raw=False, max_bin_len=256, max_str_len=256, max_array_len=16, max_map_len=64,
                             max_ext_len=0, max_buffer_size=8192)
        u.feed(bytes(memoryview(data).cast("B")[:4096]))
        for _ in range(min(u.read_map_header(), 8)):
            key = u.unpack()
            value = u.unpack()
            if key in ("v", "op", "id"):
                out[key] = value
            if len(out) == 3:
                break
    except Exception:  # out of data, a big value, not a map: what was found so far
        pass
    return {k: v for k, v in out.items() if (k != "op" or isinstance(v, str)) and not (k == "id" and _id(v))}


# --- packed arrays -----------------------------------------------------------------------------

def pack_f32(x) -> bytes:
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def unpack_f32(b: bytes, name: str = "array") -> np.ndarray:
    if not isinstance(b, (bytes, bytearray)):
        raise ProtocolError("bad_request", f"{name} must be bin, got {type(b).__name__}")
    if len(b) % 4:
        raise ProtocolError("bad_request", f"{name} has {len(b)} bytes, not a multiple of 4 (float32)")
    return np.frombuffer(b, dtype="<f4").astype(np.float32)  # (astype copies: a writable array of our own)


def pack_s16(x) -> bytes:
    return np.ascontiguousarray(x, dtype="<i2").tobytes()


def pcm_to_f32(pcm: bytes, fmt: str) -> np.ndarray:
    """push_audio / bake raw PCM -> float32 mono samples in [-1, 1]."""
    if not isinstance(pcm, (bytes, bytearray)):
        raise ProtocolError("bad_request", f"pcm must be bin, got {type(pcm).__name__}")
    if fmt == "f32":
        x = unpack_f32(pcm, "pcm")
        if not x.size:
            return x
        lo, hi = float(x.min()), float(x.max())  # (NaN and inf show in min/max: two reductions, no masks)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ProtocolError("bad_request", "pcm holds NaN or infinite samples")
        if lo < -1.0 or hi > 1.0:
            np.clip(x, -1.0, 1.0, out=x)
        return x
    if fmt == "s16":
        if len(pcm) % 2:
            raise ProtocolError("bad_request", f"pcm has {len(pcm)} bytes, not a multiple of 2 (int16)")
        return np.frombuffer(bytes(pcm), dtype="<i2").astype(np.float32) / 32768.0
    raise ProtocolError("bad_request", f"format must be 'f32' or 's16', got {fmt!r}")


# --- field checks ------------------------------------------------------------------------------
# Each check returns an error text or None. Kept tiny so the table below reads like the SPEC.

def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def _str(x):
    return None if isinstance(x, str) else "must be a string"


def _int(x):
    return None if _is_int(x) else "must be an integer"


def _uint(x):
    return None if _is_int(x) and x >= 0 else "must be an integer >= 0"


def _num(x):
    return None if _is_num(x) else "must be a finite number"


def _bool(x):
    return None if isinstance(x, bool) else "must be a boolean"


def _bin(x):
    return None if isinstance(x, (bytes, bytearray)) else "must be bin (bytes)"


def _f32bin(x):
    if not isinstance(x, (bytes, bytearray)):
        return "must be bin (packed float32)"
    if len(x) % 4:
        return f"has {len(x)} bytes, not a multiple of 4 (float32)"
    if not np.all(np.isfinite(np.frombuffer(bytes(x), dtype="<f4"))):
        return "holds NaN or infinite values"
    return None


def _f32range(limit: float):
    """bin of finite float32 within +-limit (identity, history: huge finite values overflow the model)."""
    def check(x):
        err = _f32bin(x)
        if err:
            return err
        a = np.frombuffer(bytes(x), dtype="<f4")
        if a.size and float(np.abs(a).max()) > limit:
            return f"holds values beyond +-{limit:g}"
        return None
    return check


def _short_str(x):
    return None if isinstance(x, str) and len(x) <= 256 else "must be a string of at most 256 characters"


def _map(x):
    return None if isinstance(x, dict) and all(isinstance(k, str) for k in x) else "must be a map with string keys"


def _stream_id(x):
    if not isinstance(x, str) or not STREAM_ID.fullmatch(x):
        return "must match ^[A-Za-z0-9_.-]{1,64}$"
    return None


def _id(x):
    return None if (_is_int(x) or isinstance(x, str)) else "must be an integer or a string"


def _fps(x):
    if not _is_num(x) or not FPS_RANGE[0] <= x <= FPS_RANGE[1]:
        return f"must be a number in [{FPS_RANGE[0]:g}, {FPS_RANGE[1]:g}]"
    return None


def _lookahead(x):
    return None if _is_num(x) and 0 <= x <= 600 else "must be a number of milliseconds in [0, 600]"


def _sample_rate(x):
    lo, hi = SAMPLE_RATE_RANGE
    return None if _is_int(x) and lo <= x <= hi else f"must be an integer in [{lo}, {hi}]"


def _unit(x):
    return None if _is_num(x) and 0 <= x <= 1 else "must be a number in [0, 1]"


def _pcm_format(x):
    return None if x in ("f32", "s16") else "must be 'f32' or 's16'"


def _bake_format(x):
    return None if x in ("f32", "s16", "file") else "must be 'f32', 's16' or 'file'"


def _versions(x):
    if not isinstance(x, list) or not x or len(x) > 16 or not all(_is_int(v) for v in x):
        return "must be a non-empty list of at most 16 integers"
    return None


def _names(x):
    if not isinstance(x, list) or not x or not all(isinstance(n, str) and n for n in x):
        return "must be a non-empty list of non-empty strings"
    if len(set(x)) != len(x):
        return "has duplicate names"
    return None


def _gains(x):
    if _map(x):
        return "must be a map name -> number"
    for k, v in x.items():
        if not _is_num(v) or not 0 <= v <= 10:
            return f"gain for {k!r} must be a number in [0, 10]"
    return None


def _audio_offset(x):
    return None if _is_num(x) and -5000 <= x <= 5000 else "must be a number of milliseconds in [-5000, 5000]"


def _emotion(x):
    return None if isinstance(x, str) and 0 < len(x) <= 64 else "must be a non-empty string (at most 64 characters)"


def _error(x):
    if _map(x) or not isinstance(x.get("code"), str) or not isinstance(x.get("message"), str):
        return "must be a map with string 'code' and 'message'"
    return None


def _event(x):
    return None if x in EVENTS else f"must be one of {', '.join(EVENTS)}"


def _encoding(x):
    return None if x in ("jpeg", "rgb8") else "must be 'jpeg' or 'rgb8'"


def _layouts(x):
    if _map(x):
        return "must be a map layout -> list of names"
    for k, v in x.items():
        if _names(v):
            return f"layout {k!r} " + _names(v)
    return None


def _list_of_maps(x):
    return None if isinstance(x, list) and all(isinstance(m, dict) for m in x) else "must be a list of maps"


def _dims(x):
    return None if _is_int(x) and 1 <= x <= 16384 else "must be an integer in [1, 16384]"


# op -> {field: (check, required)}
REQUESTS: dict[str, dict[str, tuple]] = {
    "hello": {"client": (_short_str, False), "versions": (_versions, True)},
    "ping": {},
    "status": {},
    "stream_open": {"stream": (_stream_id, False), "fps": (_fps, False), "sample_rate": (_sample_rate, False),
                    "lookahead_ms": (_lookahead, False)},
    "push_audio": {"stream": (_stream_id, True), "pcm": (_bin, True), "format": (_pcm_format, True)},
    "stream_close": {"stream": (_stream_id, True)},
    "set_identity": {"stream": (_stream_id, True), "alpha": (_f32range(IDENTITY_ABS_MAX), False),
                     "history": (_f32range(HISTORY_ABS_MAX), False)},
    "set_params": {"stream": (_stream_id, True), "fps": (_fps, False), "lookahead_ms": (_lookahead, False),
                   "smoothing": (_unit, False), "gains": (_gains, False), "audio_offset_ms": (_audio_offset, False)},
    "set_emotion": {"stream": (_stream_id, True), "emotion": (_emotion, True), "strength": (_unit, False)},
    "bake": {"audio": (_bin, True), "format": (_bake_format, True), "sample_rate": (_sample_rate, False),
             "fps": (_fps, False), "lookahead_ms": (_lookahead, False)},
}
OPS = tuple(REQUESTS)

# stream message type -> {field: (check, required)}
STREAM_MESSAGES: dict[str, dict[str, tuple]] = {
    "coeffs": {"stream": (_stream_id, True), "seq": (_uint, True), "t": (_num, True), "wall": (_num, True),
               "fps": (_fps, True), "layout": (_str, True), "names": (_names, False), "w": (_f32bin, True),
               "pose": (_f32bin, False), "speech": (_bool, False)},
    "status": {"wall": (_num, True), "server": (_str, True), "layouts": (_layouts, True),
               "streams": (_list_of_maps, True), "model": (_map, True)},
    "event": {"stream": (_stream_id, True), "wall": (_num, True), "t": (_num, False), "event": (_event, True),
              "message": (_str, False)},
    "video": {"stream": (_stream_id, True), "seq": (_uint, True), "t": (_num, True), "wall": (_num, True),
              "width": (_dims, True), "height": (_dims, True), "encoding": (_encoding, True), "data": (_bin, True)},
}

# reply fields checked when ok is true (the rest of a reply is free-form but documented)
REPLIES: dict[str, dict[str, tuple]] = {
    "hello": {"protocol": (_int, True), "server": (_str, True), "layouts": (_layouts, True), "model": (_map, True),
              "streams": (_list_of_maps, True), "pub": (_str, True), "sample_rate": (_int, True)},
    "ping": {"wall": (_num, True)},
    "status": STREAM_MESSAGES["status"],
    "stream_open": {"stream": (_stream_id, True), "fps": (_fps, True), "lookahead_ms": (_num, True),
                    "layout": (_str, True), "names": (_names, True)},
    "push_audio": {"samples": (_uint, True), "t": (_num, True)},
    "stream_close": {"frames": (_uint, True)},
    "set_identity": {"alpha_dims": (_uint, True), "history_frames": (_uint, True)},
    "set_params": {"params": (_map, True)},
    "set_emotion": {"emotion": (_str, True), "strength": (_num, True)},
    "bake": {"fps": (_fps, True), "layout": (_str, True), "names": (_names, True), "n_frames": (_uint, True),
             "t0": (_num, True), "w": (_f32bin, True)},
}


def _check_fields(msg: dict, fields: dict[str, tuple], what: str) -> None:
    for name, (check, required) in fields.items():
        if name not in msg:
            if required:
                raise ProtocolError("bad_request", f"{what}: missing '{name}'")
            continue
        err = check(msg[name])
        if err:
            raise ProtocolError("bad_request", f"{what}: '{name}' {err}")


def _check_version(msg: dict) -> None:
    v = msg.get("v")
    if v is None:
        raise ProtocolError("bad_request", "missing 'v' (protocol version)")
    if not _is_int(v):
        raise ProtocolError("bad_request", "'v' must be an integer")
    if v not in VERSIONS:
        raise ProtocolError("unsupported_version", f"protocol version {v} is not spoken; this side speaks {list(VERSIONS)}")


def validate_request(msg: dict) -> dict:
    """Check a decoded control request; returns it, or raises ProtocolError with the reply's code."""
    _check_version(msg)
    if "id" in msg and _id(msg["id"]):
        raise ProtocolError("bad_request", "'id' must be an integer or a string")
    op = msg.get("op")
    if not isinstance(op, str):
        raise ProtocolError("bad_request", "missing 'op' (string)")
    if op not in REQUESTS:
        raise ProtocolError("unknown_op", f"unknown op {excerpt(op, 64)}; known: {', '.join(OPS)}")
    _check_fields(msg, REQUESTS[op], op)
    if op == "hello" and not set(msg["versions"]) & set(VERSIONS):
        raise ProtocolError("unsupported_version", f"no common version: client {msg['versions']}, server {list(VERSIONS)}")
    if op == "bake" and msg["format"] != "file" and "sample_rate" not in msg:
        raise ProtocolError("bad_request", "bake: raw formats need 'sample_rate'")
    return msg


def validate_reply(msg: dict) -> dict:
    _check_version(msg)
    if not isinstance(msg.get("ok"), bool):
        raise ProtocolError("bad_request", "reply: 'ok' must be a boolean")
    if "op" in msg and not isinstance(msg["op"], str):
        raise ProtocolError("bad_request", "reply: 'op' must be a string")
    if not msg["ok"]:
        _check_fields(msg, {"error": (_error, True)}, "reply")
        return msg
    op = msg.get("op")
    if op not in REPLIES:
        raise ProtocolError("bad_request", f"reply: unknown op {op!r}")
    _check_fields(msg, REPLIES[op], f"{op} reply")
    if op == "bake" and len(msg["w"]) != 4 * msg["n_frames"] * len(msg["names"]):
        raise ProtocolError("bad_request", "bake reply: 'w' length does not match n_frames x names")
    return msg


def validate_stream(msg: dict, topic: str | None = None) -> dict:
    """Check a decoded PUB message (coeffs/status/event/video). `names` resolves a coeffs layout when
    the frame itself carries none; a client passes the layouts it learnt from hello/status."""
    _check_version(msg)
    typ = msg.get("type")
    if typ not in STREAM_MESSAGES:
        raise ProtocolError("bad_request", f"unknown stream message type {typ!r}")
    _check_fields(msg, STREAM_MESSAGES[typ], typ)
    if typ == "coeffs":
        if "names" in msg and len(msg["w"]) != 4 * len(msg["names"]):
            raise ProtocolError("bad_request", f"coeffs: 'w' has {len(msg['w']) // 4} values for {len(msg['names'])} names")
        if "pose" in msg and len(msg["pose"]) != 24:
            raise ProtocolError("bad_request", "coeffs: 'pose' must hold 6 float32")
    if typ == "video" and msg["encoding"] == "rgb8" and len(msg["data"]) != msg["width"] * msg["height"] * 3:
        raise ProtocolError("bad_request", "video: rgb8 'data' must be width*height*3 bytes")
    if topic is not None:
        want = typ if typ == "status" else f"{typ}/{msg['stream']}"
        if topic != want:
            raise ProtocolError("bad_request", f"topic {topic!r} does not match the payload (expected {want!r})")
    return msg


# --- builders (the sidecar's side) -----------------------------------------------------------

def reply_ok(req: dict | None, **fields) -> dict:
    out: dict[str, Any] = {"v": PROTOCOL}
    if req is not None and isinstance(req.get("op"), str):
        out["op"] = req["op"]
    if req is not None and "id" in req and not _id(req["id"]):
        out["id"] = req["id"]
    out["ok"] = True
    out.update(fields)
    return out


def reply_error(req: dict | None, code: str, message: str, **fields) -> dict:
    out = reply_ok(req)
    out["ok"] = False
    out["error"] = {"code": code, "message": message}
    out.update(fields)
    return out


def coeffs(stream: str, seq: int, t: float, wall: float, fps: float, layout: str, weights,
           names=None, pose=None, speech=None) -> dict:
    msg: dict[str, Any] = {"v": PROTOCOL, "type": "coeffs", "stream": stream, "seq": int(seq), "t": float(t),
                           "wall": float(wall), "fps": float(fps), "layout": layout}
    if names is not None:
        msg["names"] = list(names)
    msg["w"] = pack_f32(weights)
    if pose is not None:
        msg["pose"] = pack_f32(pose)
    if speech is not None:
        msg["speech"] = bool(speech)
    return msg


def event(stream: str, name: str, wall: float, t: float | None = None, message: str | None = None) -> dict:
    msg: dict[str, Any] = {"v": PROTOCOL, "type": "event", "stream": stream, "wall": float(wall)}
    if t is not None:
        msg["t"] = float(t)
    msg["event"] = name
    if message is not None:
        msg["message"] = message
    return msg


def topic_for(msg: dict) -> str:
    return "status" if msg["type"] == "status" else f"{msg['type']}/{msg['stream']}"


def weights_of(msg: dict, names: list[str] | None = None) -> dict[str, float]:
    """A validated coeffs message -> {name: weight}, using the frame's names or the given layout names."""
    names = msg.get("names", names)
    if names is None:
        raise ProtocolError("bad_request", f"no names known for layout {msg.get('layout')!r}")
    w = unpack_f32(msg["w"], "w")
    if len(w) != len(names):
        raise ProtocolError("bad_request", f"'w' has {len(w)} values for {len(names)} names")
    return dict(zip(names, w.tolist()))
