"""Python client for the sidecar (protocol/SPEC.md), and the `listen` command.

Dependencies: pyzmq, msgpack, numpy (and realtalk_bridge/sidecar/messages.py). The Blender add-on
vendors this file with messages.py, so nothing else from the package is imported at module level.

    from realtalk_bridge.client import Client, Subscriber
    with Client() as c:
        info = c.hello()
        sub = Subscriber(info["pub"], streams=["npc"])
        c.stream_open("npc")
        c.push_audio("npc", samples)            # float32 mono 16 kHz
        for frame in sub.frames(timeout=1.0):   # Frame(stream, seq, t, wall, fps, names, weights, ...)
            print(frame.t, frame.get("jawOpen"))
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

try:  # inside the package, or vendored next to messages.py (the Blender add-on)
    from realtalk_bridge.sidecar import messages as m
except ImportError:  # pragma: no cover - the vendored layouts
    try:
        from . import messages as m  # type: ignore  # a package holding client.py + messages.py
    except ImportError:
        import messages as m  # type: ignore  # both files on sys.path

DEFAULT_PUB = "tcp://127.0.0.1:47200"
DEFAULT_CTL = "tcp://127.0.0.1:47201"


class RequestError(RuntimeError):
    """The sidecar answered ok: false."""

    def __init__(self, op: str, code: str, message: str, reply: dict | None = None):
        super().__init__(f"{op}: {code}: {message}")
        self.op, self.code, self.message, self.reply = op, code, message, reply


def _curve(sock, server_public_key: bytes | None) -> None:
    if server_public_key:
        public, secret = zmq.curve_keypair()
        sock.curve_serverkey = server_public_key
        sock.curve_publickey, sock.curve_secretkey = public, secret


class Client:
    """Requests over a DEALER socket. Each call waits for its reply (matched by `id`) up to `timeout`
    seconds; on timeout the socket is recreated (the sidecar may have restarted) and TimeoutError raised.
    Like its ZeroMQ socket, a Client belongs to one thread: give each thread its own."""

    def __init__(self, ctl: str = DEFAULT_CTL, timeout: float = 5.0, name: str = "realtalk-bridge-python",
                 server_public_key: bytes | None = None, context: zmq.Context | None = None):
        self.endpoint, self.timeout, self.name = ctl, timeout, name
        self.server_public_key = server_public_key
        self.ctx = context or zmq.Context.instance()
        self._ids = itertools.count(1)
        self.sock = None
        self._connect()

    def _connect(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        _curve(self.sock, self.server_public_key)
        self.sock.connect(self.endpoint)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, op: str, timeout: float | None = None, check: bool = True, **args) -> dict:
        """Send one request and return the validated reply map; raises RequestError when ok is false."""
        rid = next(self._ids)
        msg = {"v": m.PROTOCOL, "op": op, "id": rid}
        msg.update({k: v for k, v in args.items() if v is not None})
        self.sock.send_multipart([b"", m.encode(msg)])
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                if time.monotonic() < deadline:
                    continue
                self._connect()  # drop whatever the old socket still holds
                raise TimeoutError(f"no reply to {op!r} from {self.endpoint} within "
                                   f"{self.timeout if timeout is None else timeout:g} s (is `realtalk-bridge serve` running?)")
            frames = self.sock.recv_multipart()
            try:
                reply = m.decode(frames[-1])
            except m.ProtocolError:
                continue  # not ours to understand; keep waiting for our id
            if reply.get("id") != rid and not ("id" not in reply and reply.get("ok") is False):
                continue  # a late reply to an earlier, timed-out request
            # (an error without id answers a request the sidecar could not decode: ours, one at a time)
            m.validate_reply(reply)
            if check and not reply["ok"]:
                err = reply["error"]
                raise RequestError(op, err["code"], err["message"], reply)
            return reply

    # --- ops -------------------------------------------------------------------------------------
    def hello(self) -> dict:
        return self.request("hello", client=self.name, versions=list(m.VERSIONS))

    def ping(self) -> float:
        """Round-trip time in seconds."""
        t0 = time.perf_counter()
        self.request("ping")
        return time.perf_counter() - t0

    def status(self) -> dict:
        return self.request("status")

    def stream_open(self, stream: str | None = None, fps: float | None = None, sample_rate: int | None = None,
                    lookahead_ms: float | None = None) -> dict:
        return self.request("stream_open", stream=stream, fps=fps, sample_rate=sample_rate, lookahead_ms=lookahead_ms)

    def push_audio(self, stream: str, samples, fmt: str = "f32") -> dict:
        """float32 samples (or int16 with fmt='s16') at the stream's sample rate. A long array is sent in
        pieces the sidecar accepts at any rate (0.5 s at 8 kHz, SPEC section 6); the last reply is returned."""
        x = np.asarray(samples)
        step = int(m.MAX_PUSH_SECONDS * m.SAMPLE_RATE_RANGE[0])
        reply = None
        for a in range(0, max(1, len(x)), step):
            part = x[a:a + step]
            pcm = m.pack_f32(part) if fmt == "f32" else m.pack_s16(part)
            reply = self.request("push_audio", stream=stream, pcm=pcm, format=fmt)
        return reply

    def stream_close(self, stream: str) -> dict:
        return self.request("stream_close", stream=stream)

    def set_params(self, stream: str, **params) -> dict:
        return self.request("set_params", stream=stream, **params)["params"]

    def set_identity(self, stream: str, alpha=None, history=None) -> dict:
        return self.request("set_identity", stream=stream,
                            alpha=None if alpha is None else m.pack_f32(alpha),
                            history=None if history is None else m.pack_f32(np.asarray(history, np.float32).reshape(-1)))

    def set_emotion(self, stream: str, emotion: str, strength: float = 1.0) -> dict:
        return self.request("set_emotion", stream=stream, emotion=emotion, strength=strength)

    def bake(self, audio, fps: float = 30.0, sample_rate: int = 16000, lookahead_ms: float | None = None,
             timeout: float = 120.0) -> "Track":
        """Bake a whole clip: a path or bytes of an audio file, or a float32/int16 array at sample_rate."""
        if isinstance(audio, (str, Path)):
            args = {"audio": Path(audio).read_bytes(), "format": "file"}
        elif isinstance(audio, (bytes, bytearray)):
            args = {"audio": bytes(audio), "format": "file"}
        else:
            a = np.asarray(audio)
            fmt = "s16" if a.dtype == np.int16 else "f32"
            args = {"audio": m.pack_s16(a) if fmt == "s16" else m.pack_f32(a), "format": fmt,
                    "sample_rate": int(sample_rate)}
        if len(args["audio"]) > m.MAX_BAKE_BYTES:  # over the default limit: ask what this sidecar takes
            limit = self.hello().get("limits", {}).get("bake_bytes", m.MAX_BAKE_BYTES)
            if len(args["audio"]) > limit:  # (sent anyway, ZeroMQ would drop the connection unanswered)
                raise RequestError("bake", "too_large", f"the audio is {len(args['audio'])} bytes, this sidecar "
                                   f"takes at most {limit} (serve --max-bake-mb); send a compressed file "
                                   "(flac/ogg) or split it")
        r = self.request("bake", timeout=timeout, fps=float(fps), lookahead_ms=lookahead_ms, **args)
        w = m.unpack_f32(r["w"], "w").reshape(r["n_frames"], len(r["names"]))
        t = r["t0"] + np.arange(r["n_frames"]) / r["fps"]
        return Track(fps=r["fps"], layout=r["layout"], names=list(r["names"]), t=t, weights=w)


@dataclass
class Track:
    fps: float
    layout: str
    names: list[str]
    t: np.ndarray
    weights: np.ndarray  # (n, len(names))


@dataclass
class Frame:
    """One decoded coefficient frame, names resolved."""
    stream: str
    seq: int
    t: float
    wall: float
    fps: float
    layout: str
    names: list[str]
    weights: np.ndarray
    pose: np.ndarray | None = None
    speech: bool | None = None
    recv_wall: float = 0.0
    extra: dict = field(default_factory=dict)

    def get(self, name: str, default: float = 0.0) -> float:
        try:
            return float(self.weights[self.names.index(name)])
        except ValueError:
            return default

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights.tolist()))


class Subscriber:
    """SUB socket on the stream endpoint. `frames()` yields decoded Frames; status messages teach it
    layouts, events go to `on_event`. Malformed messages are counted in `.dropped` and skipped."""

    def __init__(self, pub: str = DEFAULT_PUB, streams=None, events: bool = False,
                 server_public_key: bytes | None = None, context: zmq.Context | None = None, rcvhwm: int = 1000,
                 layouts: dict | None = None):
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        _curve(self.sock, server_public_key)
        self.sock.connect(pub)
        # (a prefix "coeffs/x" also matches "coeffs/x2"; _handle filters exact ids)
        self.streams = set(streams) if streams else None
        topics = [f"coeffs/{s}" for s in streams] if streams else ["coeffs/"]
        topics.append("status")
        if events:
            topics += [f"event/{s}" for s in streams] if streams else ["event/"]
        for tp in topics:
            self.sock.setsockopt_string(zmq.SUBSCRIBE, tp)
        self.layouts: dict[str, list[str]] = dict(layouts or {})
        self.status: dict | None = None
        self.events: list[dict] = []
        self.dropped = 0
        self.last_seq: dict[str, int] = {}
        self.gaps = 0  # frames lost (seq gaps) seen so far

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def recv(self, timeout: float | None = 1.0) -> Frame | None:
        """The next coefficient frame, or None after `timeout` seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(left):
                return None
            parts = self.sock.recv_multipart()
            frame = self._handle(parts)
            if frame is not None:
                return frame
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def frames(self, timeout: float | None = 1.0, count: int | None = None):
        """Yield frames until `timeout` passes with none, or `count` have been yielded."""
        n = 0
        while count is None or n < count:
            f = self.recv(timeout)
            if f is None:
                return
            n += 1
            yield f

    def _handle(self, parts: list[bytes]) -> Frame | None:
        recv_wall = time.time()
        if len(parts) != 2:
            self.dropped += 1
            return None
        try:
            topic = parts[0].decode()
            msg = m.decode(parts[1])
            if msg.get("v") not in m.VERSIONS:
                return None  # SPEC: ignore versions we do not speak
            m.validate_stream(msg, topic)
        except (m.ProtocolError, UnicodeDecodeError):
            self.dropped += 1
            return None
        if msg["type"] == "status":
            self.status = msg
            self.layouts.update(msg["layouts"])
            return None
        if self.streams is not None and msg["stream"] not in self.streams:
            return None
        if msg["type"] == "event":
            self.events.append(msg)
            return None
        if msg["type"] != "coeffs":
            return None
        if "names" in msg:
            self.layouts[msg["layout"]] = list(msg["names"])
        names = self.layouts.get(msg["layout"])
        if names is None or len(msg["w"]) != 4 * len(names):
            self.dropped += 1  # layout not known yet: never guess by index
            return None
        last = self.last_seq.get(msg["stream"])
        if last is not None and msg["seq"] > last + 1:
            self.gaps += msg["seq"] - last - 1
        self.last_seq[msg["stream"]] = msg["seq"]
        pose = m.unpack_f32(msg["pose"], "pose") if "pose" in msg else None
        return Frame(stream=msg["stream"], seq=msg["seq"], t=msg["t"], wall=msg["wall"], fps=msg["fps"],
                     layout=msg["layout"], names=names, weights=m.unpack_f32(msg["w"], "w"), pose=pose,
                     speech=msg.get("speech"), recv_wall=recv_wall)


# --- `realtalk-bridge listen` ------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("--pub", default=None, help=f"stream endpoint (default: asked from --ctl, else {DEFAULT_PUB})")
    p.add_argument("--ctl", default=DEFAULT_CTL, help=f"control endpoint (default {DEFAULT_CTL})")
    p.add_argument("--stream", action="append", default=None, help="only this stream id (repeatable)")
    p.add_argument("--out", default=None, help="record frames to FILE.csv or FILE.jsonl instead of printing")
    p.add_argument("--count", type=int, default=None, help="stop after N frames")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds without a frame")
    p.add_argument("--server-key", default=None, help="server public key file (CURVE)")


def _server_key(path) -> bytes | None:
    if not path:
        return None
    import zmq.auth

    public, _ = zmq.auth.load_certificate(path)
    return public


def run(args) -> int:
    key = _server_key(args.server_key)
    pub, layouts = args.pub, {}
    try:  # hello tells the stream endpoint and the layouts (frames without names resolve through them)
        with Client(args.ctl, timeout=2.0, name="realtalk-bridge listen", server_public_key=key) as c:
            info = c.hello()
        pub = pub or info["pub"]
        layouts = info["layouts"]
    except (TimeoutError, RequestError) as exc:
        if pub is None:
            print(f"listen: {exc}", file=sys.stderr)
            return 1
    out, writer, names_written = None, None, False
    if args.out:
        out_path = Path(args.out)
        if out_path.suffix.lower() not in (".csv", ".jsonl"):
            print("listen: --out must end in .csv or .jsonl", file=sys.stderr)
            return 2
        out = open(out_path, "w")
    n = 0
    print(f"listening on {pub}" + (f" (streams {', '.join(args.stream)})" if args.stream else ""), file=sys.stderr)
    try:
        with Subscriber(pub, streams=args.stream, server_public_key=key, layouts=layouts) as sub:
            for f in sub.frames(timeout=args.timeout, count=args.count):
                n += 1
                if out is None:
                    top = sorted(f.as_dict().items(), key=lambda kv: -kv[1])[:4]
                    late = 1000 * (f.recv_wall - f.wall)
                    print(f"{f.stream} #{f.seq:<6d} t={f.t:8.3f}s  " + "  ".join(f"{k}={v:.2f}" for k, v in top)
                          + f"  ({late:.1f} ms in transit)")
                elif out_path.suffix.lower() == ".csv":
                    if not names_written:
                        out.write("stream,seq,time,wall," + ",".join(f.names) + "\n")
                        names_written = True
                    out.write(f"{f.stream},{f.seq},{f.t:.6f},{f.wall:.6f}," + ",".join(f"{v:.6f}" for v in f.weights) + "\n")
                else:
                    out.write(json.dumps({"stream": f.stream, "seq": f.seq, "t": f.t, "wall": f.wall, "fps": f.fps,
                                          "weights": f.as_dict()}) + "\n")
    except KeyboardInterrupt:
        pass
    finally:
        if out is not None:
            out.close()
    print(f"{n} frames", file=sys.stderr)
    return 0
