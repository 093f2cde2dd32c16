"""Write the golden test vectors in protocol/vectors/ (run from anywhere: `python protocol/make_vectors.py`).

Each vector is `<name>.msgpack` (the exact payload bytes) and `<name>.json` (what a decoder must get:
bin fields written as {"$f32": [...]}, {"$s16": [...]} or {"$hex": "..."}). `bad_*` vectors must be
rejected; their JSON says with which error code. `index.json` lists every vector with its socket role
and, for stream messages, the topic frame that goes with it.

All float32 values are multiples of 1/64 so they survive JSON exactly. tests/test_protocol_vectors.py
checks the committed files equal what this script (and the sidecar's encoder) produces.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import msgpack
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "vectors"

# The 52 ARKit names, duplicated here so the script runs without the package installed.
sys.path.insert(0, str(ROOT))
from realtalk_bridge.face.arkit import ARKIT_NAMES  # noqa: E402


class F32(list):
    """Packed little-endian float32 on the wire."""


class S16(list):
    """Packed little-endian int16 on the wire."""


class Hex(bytes):
    """Raw bin written as hex in JSON."""


def to_wire(x):
    if isinstance(x, F32):
        return np.asarray(x, dtype="<f4").tobytes()
    if isinstance(x, S16):
        return np.asarray(x, dtype="<i2").tobytes()
    if isinstance(x, Hex):
        return bytes(x)
    if isinstance(x, dict):
        return {k: to_wire(v) for k, v in x.items()}
    if isinstance(x, list):
        return [to_wire(v) for v in x]
    return x


def to_json(x):
    if isinstance(x, F32):
        return {"$f32": [float(v) for v in x]}
    if isinstance(x, S16):
        return {"$s16": [int(v) for v in x]}
    if isinstance(x, Hex):
        return {"$hex": bytes(x).hex()}
    if isinstance(x, dict):
        return {k: to_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [to_json(v) for v in x]
    return x


NAMES = list(ARKIT_NAMES)
WALL = 1764000000.5  # a fixed Unix time
W52 = F32([(i % 33) / 64.0 for i in range(52)])
W52[17] = 0.75  # jawOpen
POSE = F32([0.015625, -0.03125, 0.0, 0.0, 0.0078125, -0.0078125])
SIX_NAMES = ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight"]
MODEL = {"name": "default", "space": "arkit52", "sample_rate": 16000}
STREAM_INFO = {"stream": "mic", "source": "mic", "fps": 30.0, "lookahead_ms": 80.0, "seq": 41, "layout": "arkit52"}


def vectors() -> list[dict]:
    """Every vector: name, kind (stream/request/reply), topic (stream only), expect ("ok" or an error
    code), description, and either `msg` (a map, encoded with msgpack) or `raw` (exact bytes)."""
    v = []

    def add(name, kind, description, msg=None, raw=None, topic=None, expect="ok"):
        v.append({"name": name, "kind": kind, "topic": topic, "expect": expect, "description": description,
                  "msg": msg, "raw": raw})

    # --- stream (PUB) ---
    add("coeffs_arkit52", "stream", "a coefficient frame carrying its names, head pose and voice activity",
        {"v": 1, "type": "coeffs", "stream": "mic", "seq": 0, "t": 0.0, "wall": WALL, "fps": 30.0,
         "layout": "arkit52", "names": NAMES, "w": W52, "pose": POSE, "speech": True}, topic="coeffs/mic")
    add("coeffs_no_names", "stream", "a later frame: no names (resolve 'arkit52' from hello/status), no pose",
        {"v": 1, "type": "coeffs", "stream": "mic", "seq": 42, "t": 1.4, "wall": WALL + 1.4, "fps": 30.0,
         "layout": "arkit52", "w": W52}, topic="coeffs/mic")
    add("coeffs_custom_layout", "stream", "a pushed stream with a 6-name layout and an unknown extra key to ignore",
        {"v": 1, "type": "coeffs", "stream": "npc-7", "seq": 3, "t": 0.12, "wall": WALL, "fps": 25.0,
         "layout": "visemes6", "names": SIX_NAMES, "w": F32([0.5, 0.0, 0.125, 0.25, 1.0, 0.984375]),
         "x_future_key": "ignored"}, topic="coeffs/npc-7")
    add("status", "stream", "the once-per-second heartbeat",
        {"v": 1, "type": "status", "wall": WALL, "server": "realtalk-bridge 0.1.0",
         "layouts": {"arkit52": NAMES}, "streams": [STREAM_INFO], "model": MODEL}, topic="status")
    add("event_speech_start", "stream", "voice activity began on the mic stream",
        {"v": 1, "type": "event", "stream": "mic", "wall": WALL, "t": 2.5, "event": "speech_start"},
        topic="event/mic")
    add("event_source_error", "stream", "the audio device failed; the sidecar retries",
        {"v": 1, "type": "event", "stream": "mic", "wall": WALL, "event": "source_error",
         "message": "PortAudio error: device unavailable; retrying in 1 s"}, topic="event/mic")
    add("event_lagging", "stream", "the A2E fell behind: stale audio of this stream was dropped (load shedding)",
        {"v": 1, "type": "event", "stream": "npc-7", "wall": WALL, "t": 12.5, "event": "lagging",
         "message": "dropped 320 ms of stale audio (sidecar overloaded)"}, topic="event/npc-7")
    add("video_rgb8", "stream", "a 2x2 rendered frame, raw RGB",
        {"v": 1, "type": "video", "stream": "mic", "seq": 42, "t": 1.4, "wall": WALL, "width": 2, "height": 2,
         "encoding": "rgb8", "data": Hex(bytes(range(0, 240, 20)))}, topic="video/mic")

    # --- requests (DEALER/REQ -> ROUTER) ---
    add("req_hello", "request", "the first request of every client",
        {"v": 1, "op": "hello", "id": 1, "client": "blender-addon 0.1.0", "versions": [1]})
    add("req_ping", "request", "liveness / round-trip time", {"v": 1, "op": "ping", "id": "p-2"})
    add("req_status", "request", "ask for the status map", {"v": 1, "op": "status", "id": 3})
    add("req_stream_open", "request", "open a pushed stream",
        {"v": 1, "op": "stream_open", "id": 4, "stream": "npc-7", "fps": 30.0, "sample_rate": 16000,
         "lookahead_ms": 80.0})
    add("req_push_audio_s16", "request", "push 8 int16 samples",
        {"v": 1, "op": "push_audio", "id": 5, "stream": "npc-7",
         "pcm": S16([0, 1000, -1000, 32767, -32768, 12, -12, 0]), "format": "s16"})
    add("req_push_audio_f32", "request", "push 4 float32 samples",
        {"v": 1, "op": "push_audio", "id": 6, "stream": "npc-7", "pcm": F32([0.0, 0.5, -0.5, 0.25]),
         "format": "f32"})
    add("req_stream_close", "request", "close a pushed stream", {"v": 1, "op": "stream_close", "id": 7, "stream": "npc-7"})
    add("req_set_identity", "request", "identity coefficients and 2 historical frames of a 3-name layout",
        {"v": 1, "op": "set_identity", "id": 8, "stream": "npc-7", "alpha": F32([0.25, -0.5, 0.125]),
         "history": F32([0.0, 0.25, 0.5, 0.75, 1.0, 0.5])})
    add("req_set_params", "request", "change smoothing, gains and audio offset",
        {"v": 1, "op": "set_params", "id": 9, "stream": "mic", "smoothing": 0.25,
         "gains": {"jawOpen": 1.5, "mouthSmileLeft": 0.5}, "audio_offset_ms": -40.0})
    add("req_set_emotion", "request", "overlay an emotion on a stream's non-verbal layer",
        {"v": 1, "op": "set_emotion", "id": 10, "stream": "mic", "emotion": "happy", "strength": 0.5})
    add("req_bake_s16", "request", "bake 4 raw int16 samples at 16 kHz",
        {"v": 1, "op": "bake", "id": 11, "audio": S16([0, 100, -100, 0]), "format": "s16",
         "sample_rate": 16000, "fps": 30.0})
    add("req_bake_file", "request", "bake an encoded audio file (bytes truncated for the vector: validation only)",
        {"v": 1, "op": "bake", "id": 12, "audio": Hex(b"RIFF\x24\x00\x00\x00WAVE"), "format": "file", "fps": 24.0})

    # --- replies (ROUTER -> DEALER/REQ) ---
    add("rep_hello", "reply", "the answer to hello",
        {"v": 1, "op": "hello", "id": 1, "ok": True, "protocol": 1, "server": "realtalk-bridge 0.1.0",
         "layouts": {"arkit52": NAMES}, "model": MODEL, "streams": [STREAM_INFO], "pub": "tcp://127.0.0.1:47200",
         "sample_rate": 16000})
    add("rep_ping", "reply", "the answer to ping", {"v": 1, "op": "ping", "id": "p-2", "ok": True, "wall": WALL})
    add("rep_stream_open", "reply", "the answer to stream_open",
        {"v": 1, "op": "stream_open", "id": 4, "ok": True, "stream": "npc-7", "fps": 30.0, "lookahead_ms": 80.0,
         "layout": "arkit52", "names": NAMES})
    add("rep_push_audio", "reply", "the answer to push_audio",
        {"v": 1, "op": "push_audio", "id": 5, "ok": True, "samples": 16008, "t": 1.0005})
    add("rep_set_params", "reply", "the parameters now in force",
        {"v": 1, "op": "set_params", "id": 9, "ok": True,
         "params": {"fps": 30.0, "lookahead_ms": 80.0, "smoothing": 0.25,
                    "gains": {"jawOpen": 1.5, "mouthSmileLeft": 0.5}, "audio_offset_ms": -40.0}})
    add("rep_bake", "reply", "a 2-frame bake in a 6-name layout",
        {"v": 1, "op": "bake", "id": 11, "ok": True, "fps": 30.0, "layout": "visemes6", "names": SIX_NAMES,
         "n_frames": 2, "t0": 0.0,
         "w": F32([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.25, 0.125, 0.0, 0.0, 0.0])})
    add("rep_error_unknown_op", "reply", "an error reply",
        {"v": 1, "op": "fly", "id": 13, "ok": False,
         "error": {"code": "unknown_op", "message": "unknown op 'fly'"}})
    add("rep_error_unsupported_version", "reply", "a version error lists the versions the sidecar speaks",
        {"v": 1, "op": "hello", "id": 1, "ok": False, "versions": [1],
         "error": {"code": "unsupported_version", "message": "no common version: client [2], server [1]"}})

    # --- bad vectors: must be rejected with the given code ---
    add("rep_error_quota", "reply", "a client over its queued-audio quota",
        {"v": 1, "op": "push_audio", "id": 21, "ok": False,
         "error": {"code": "quota", "message": "this client has 3.00 s of audio queued (limit 3 s)"}})
    add("rep_error_busy_overloaded", "reply", "a new stream refused while the A2E is behind, with the reason",
        {"v": 1, "op": "stream_open", "id": 22, "ok": False,
         "error": {"code": "busy", "message": "new streams are refused: the A2E is at capacity; retry later"}})
    add("bad_not_msgpack", "request", "truncated msgpack (a map header promising 3 entries, then nothing)",
        raw=b"\x83\xa1v", expect="bad_msgpack")
    add("bad_not_a_map", "request", "valid msgpack, but an array", msg=[1, "ping"], expect="bad_msgpack")
    add("bad_int_keys", "request", "map keys must be strings", msg={1: 1, 2: "ping"}, expect="bad_msgpack")
    add("bad_trailing_bytes", "request", "a valid map followed by extra bytes",
        raw=msgpack.packb({"v": 1, "op": "ping"}) + b"\xc0", expect="bad_msgpack")
    add("bad_missing_version", "request", "no 'v'", {"op": "ping"}, expect="bad_request")
    add("bad_version", "request", "a protocol version the sidecar does not speak",
        {"v": 2, "op": "ping", "id": 14}, expect="unsupported_version")
    add("bad_hello_no_common_version", "request", "hello offering only version 2",
        {"v": 1, "op": "hello", "id": 1, "client": "future", "versions": [2]}, expect="unsupported_version")
    add("bad_missing_op", "request", "no 'op'", {"v": 1, "id": 15}, expect="bad_request")
    add("bad_unknown_op", "request", "an op that does not exist", {"v": 1, "op": "fly", "id": 13}, expect="unknown_op")
    add("bad_pcm_wrong_type", "request", "pcm must be bin, not a string",
        {"v": 1, "op": "push_audio", "stream": "npc-7", "pcm": "AAAA", "format": "s16"}, expect="bad_request")
    add("bad_stream_id", "request", "stream ids match ^[A-Za-z0-9_.-]{1,64}$",
        {"v": 1, "op": "stream_open", "stream": "../etc"}, expect="bad_request")
    add("bad_stream_id_newline", "request", "a stream id with a trailing newline is not the same id",
        {"v": 1, "op": "stream_open", "stream": "mic\n"}, expect="bad_request")
    add("bad_identity_out_of_range", "request", "identity coefficients beyond +-10 (the model would overflow)",
        {"v": 1, "op": "set_identity", "stream": "npc-7", "alpha": F32([1048576.0, 0.5])}, expect="bad_request")
    add("bad_hello_too_many_versions", "request", "hello may list at most 16 versions",
        {"v": 1, "op": "hello", "versions": list(range(1, 18))}, expect="bad_request")
    add("bad_fps", "request", "fps out of range",
        {"v": 1, "op": "set_params", "stream": "mic", "fps": 1000.0}, expect="bad_request")
    add("bad_bool_as_int", "request", "a boolean is not an integer",
        {"v": 1, "op": "stream_open", "sample_rate": True}, expect="bad_request")
    add("bad_coeffs_length", "stream", "52 names but 51 weights",
        {"v": 1, "type": "coeffs", "stream": "mic", "seq": 0, "t": 0.0, "wall": WALL, "fps": 30.0,
         "layout": "arkit52", "names": NAMES, "w": F32(list(W52)[:51])}, topic="coeffs/mic", expect="bad_request")
    add("bad_coeffs_nan", "stream", "a NaN weight",
        {"v": 1, "type": "coeffs", "stream": "mic", "seq": 1, "t": 0.0333, "wall": WALL, "fps": 30.0,
         "layout": "visemes6", "names": SIX_NAMES,
         "w": Hex(np.array([0.5, np.nan, 0, 0, 0, 0], dtype="<f4").tobytes())}, topic="coeffs/mic",
        expect="bad_request")
    add("bad_coeffs_negative_seq", "stream", "seq must be >= 0",
        {"v": 1, "type": "coeffs", "stream": "mic", "seq": -1, "t": 0.0, "wall": WALL, "fps": 30.0,
         "layout": "arkit52", "w": W52}, topic="coeffs/mic", expect="bad_request")
    return v


def encode_vector(vec: dict) -> bytes:
    if vec["raw"] is not None:
        return vec["raw"]
    return msgpack.packb(to_wire(vec["msg"]), use_bin_type=True)


def expectation(vec: dict) -> dict | list:
    if vec["expect"] == "ok":
        return to_json(vec["msg"])
    out = {"expect_error": vec["expect"], "description": vec["description"]}
    if vec["msg"] is not None and isinstance(vec["msg"], dict) and all(isinstance(k, str) for k in vec["msg"]):
        out["decoded"] = to_json(vec["msg"])
    return out


def index() -> dict:
    return {"protocol": 1, "vectors": [
        {k: vec[k] for k in ("name", "kind", "topic", "expect", "description") if vec[k] is not None}
        for vec in vectors()]}


def dumps(obj) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


def render() -> dict[str, bytes]:
    """file name -> exact bytes, for every file in protocol/vectors/."""
    files = {"index.json": dumps(index()).encode()}
    for vec in vectors():
        files[vec["name"] + ".msgpack"] = encode_vector(vec)
        files[vec["name"] + ".json"] = dumps(expectation(vec)).encode()
    return files


def main() -> int:
    OUT.mkdir(exist_ok=True)
    files = render()
    for old in OUT.iterdir():
        if old.name not in files:
            old.unlink()
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    print(f"wrote {len(files)} files to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
