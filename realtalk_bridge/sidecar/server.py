"""The sidecar's sockets and ops (protocol/SPEC.md).

One thread owns every ZeroMQ socket (sockets are not thread-safe): it polls the ROUTER control socket
and an inproc PULL socket that audio sources and bake workers write to, runs the A2E stream steps,
and publishes frames on PUB. Bakes run on a small thread pool (onnxruntime releases the GIL), so a long
bake never holds up live frames. Everything that arrives from the network is validated by messages.py;
a bad message costs its sender an error reply, never the server.
"""
from __future__ import annotations

import logging
import re
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import zmq

from realtalk_bridge import __version__
from realtalk_bridge.sidecar import messages as m

log = logging.getLogger("realtalk_bridge.sidecar")

SERVER = f"realtalk-bridge {__version__}"
DEFAULT_PUB = "tcp://127.0.0.1:47200"
DEFAULT_CTL = "tcp://127.0.0.1:47201"
PUB_HWM = 1000
MAX_PUSH_STREAMS = 32
MAX_BAKES = 2
SERVER_STREAMS = ("mic", "file")
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1)$")


def is_loopback(endpoint: str) -> bool:
    """tcp://127.0.0.1:port, tcp://localhost:port, tcp://[::1]:port, ipc:// and inproc:// are local."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    mt = re.match(r"^tcp://(.+):(\d+|\*)$", endpoint)
    return bool(mt and LOOPBACK.match(mt.group(1)))


# --- per-stream post-processing: gains and smoothing (pure) ----------------------------------

def gain_vector(names: list[str], gains: dict[str, float]) -> np.ndarray:
    g = np.ones(len(names), np.float32)
    index = {n: i for i, n in enumerate(names)}
    for name, value in gains.items():
        if name in index:  # unknown names are ignored (SPEC: set_params)
            g[index[name]] = value
    return g


def smooth(prev: np.ndarray | None, x: np.ndarray, a: float) -> np.ndarray:
    """One-pole low-pass per channel: y = a * y_prev + (1 - a) * x (a = 0: off)."""
    if prev is None or a <= 0:
        return x
    return (a * prev + (1.0 - a) * x).astype(np.float32)


class EnergyVad:
    """Voice activity from 20 ms block energy with attack and hang-over: enough for speech_start /
    speech_stop events and the `speech` flag; the A2E itself needs no VAD."""

    def __init__(self, sample_rate: int = 16000, threshold_db: float = -45.0, attack: int = 2, hang: int = 15):
        self.block = sample_rate // 50
        self.sr = sample_rate
        self.threshold = 10 ** (threshold_db / 20)
        self.attack, self.hang = attack, hang
        self.active = False
        self._run = 0
        self._rest = np.zeros(0, np.float32)
        self._n = 0  # samples consumed
        self._changes: list[tuple[float, bool]] = []  # (time, state from then on), recent ones only

    def push(self, x: np.ndarray) -> list[tuple[str, float]]:
        x = np.concatenate([self._rest, x])
        events = []
        nb = len(x) // self.block
        for b in range(nb):
            blk = x[b * self.block:(b + 1) * self.block]
            loud = float(np.sqrt(np.mean(blk * blk))) > self.threshold
            self._n += self.block
            if loud != self.active:
                self._run += 1
                if self._run >= (self.attack if loud else self.hang):
                    self.active = loud
                    self._run = 0
                    events.append(("speech_start" if loud else "speech_stop", self._n / self.sr))
                    self._changes = self._changes[-31:] + [(self._n / self.sr, loud)]
            else:
                self._run = 0
        self._rest = x[nb * self.block:]
        return events

    def active_at(self, t: float) -> bool:
        """The state at audio time t (frames trail the newest audio by the look-ahead)."""
        state = self.active
        for when, s in reversed(self._changes):
            if when <= t:
                return s
            state = not s
        return state


@dataclass
class StreamState:
    stream: str
    source: str  # mic / file / push
    owner: bytes | None  # ROUTER routing id of the client that opened it (push streams)
    fps: float
    lookahead_ms: float
    sample_rate: int
    a2e: Any
    post: Any = None  # post-processor: callable (t, w) -> (w, pose), or an object with .step (and .set_emotion)
    seq: int = 0
    t_base: float = 0.0  # audio time at which the current A2E stream started (after an fps change)
    samples_in: int = 0  # at 16 kHz
    samples_raw: int = 0  # at the stream's own rate, as the client counts them
    smoothing: float = 0.0
    gains: dict = field(default_factory=dict)
    audio_offset_ms: float = 0.0
    last_audio: float = field(default_factory=time.monotonic)
    names_wall: float = -1e9
    prev: np.ndarray | None = None
    gain_vec: np.ndarray | None = None
    resampler: Any = None
    vad: EnergyVad = field(default_factory=EnergyVad)
    alpha: Any = None
    history: Any = None

    def info(self, layout: str) -> dict:
        return {"stream": self.stream, "source": self.source, "fps": float(self.fps),
                "lookahead_ms": float(self.lookahead_ms), "seq": self.seq - 1, "layout": layout}

    def params(self) -> dict:
        return {"fps": float(self.fps), "lookahead_ms": float(self.lookahead_ms), "smoothing": float(self.smoothing),
                "gains": dict(self.gains), "audio_offset_ms": float(self.audio_offset_ms)}


class Feeder:
    """What an audio source thread holds: its own inproc PUSH socket into the server loop.
    Create it in the thread that uses it."""

    def __init__(self, server: "Server"):
        self._sock = server.ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, 500)
        self._sock.setsockopt(zmq.SNDTIMEO, 500)  # never hang a source thread on a server that has stopped
        self._sock.connect(server.internal)

    def _send(self, frames) -> bool:
        try:
            self._sock.send_multipart(frames)
            return True
        except zmq.ZMQError:
            return False

    def open(self, stream: str, source: str) -> bool:
        return self._send([b"open", stream.encode(), source.encode()])

    def audio(self, stream: str, samples: np.ndarray) -> bool:
        return self._send([b"audio", stream.encode(), np.ascontiguousarray(samples, np.float32).tobytes()])

    def end(self, stream: str) -> bool:
        return self._send([b"end", stream.encode()])

    def event(self, stream: str, name: str, message: str = "") -> bool:
        return self._send([b"event", stream.encode(), name.encode(), message.encode()])

    def close(self) -> None:
        self._sock.close()


class Server:
    """Sockets + ops. `run()` blocks until `stop()`; `start()` runs it on a thread (tests, bench).

    runtime: an `A2ERuntime` (realtalk_bridge.runtime.a2e).
    sinks: objects with `.send(stream, seq, t, names, weights, pose)` and `.close()` (UDP bridges), called
        for every published frame.
    postprocess: a factory `(stream_id, names, fps) -> post-processor or None`; a post-processor is a
        callable `(t, weights) -> (weights, pose)` or an object with `.step(t, weights)` and optionally
        `.set_emotion(name, strength)` (face/nonverbal.NonVerbal).
    """

    def __init__(self, runtime, pub: str = DEFAULT_PUB, ctl: str = DEFAULT_CTL, fps: float = 30,
                 lookahead_ms: float = 80.0, idle_timeout: float = 10.0, sinks=(),
                 postprocess: Callable | None = None, allow_remote: bool = False,
                 curve_secret_key: str | None = None, max_message_bytes: int = m.MAX_MESSAGE_BYTES,
                 heartbeat_s: float = 1.0, smoothing: float = 0.0, gains: dict | None = None):
        for ep in (pub, ctl):
            if not is_loopback(ep) and not allow_remote:
                raise ValueError(f"{ep} is not a loopback endpoint; pass --allow-remote to bind other interfaces "
                                 "(and consider --curve-secret-key)")
        from realtalk_bridge.runtime.a2e import OUTPUT_FPS

        if fps not in OUTPUT_FPS:
            raise ValueError(f"fps must be one of {OUTPUT_FPS}, got {fps}")
        self.rt = runtime
        self.stream_fps = tuple(OUTPUT_FPS)
        self.names = list(runtime.names)
        self.layout = runtime.layout
        self.fps, self.lookahead_ms = fps, float(lookahead_ms)
        self.idle_timeout, self.heartbeat_s = idle_timeout, heartbeat_s
        self.default_smoothing, self.default_gains = float(smoothing), dict(gains or {})
        self.sinks = list(sinks)
        self.postprocess = postprocess
        self.max_message_bytes = max_message_bytes
        self.curve_secret_key = curve_secret_key
        self.ctx = zmq.Context.instance()
        self.internal = f"inproc://realtalk-sidecar-{uuid.uuid4().hex}"
        self.streams: dict[str, StreamState] = {}
        self.stats = {"requests": 0, "errors": 0, "frames": 0, "bakes": 0}
        self._bakes_running = 0
        self._pool = ThreadPoolExecutor(max_workers=MAX_BAKES, thread_name_prefix="bake")
        self._tls = threading.local()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None  # the one thread that touches the sockets
        self._error: BaseException | None = None
        self._pub_req, self._ctl_req = pub, ctl
        self.pub_endpoint = self.ctl_endpoint = None
        self._bind()

    # --- lifecycle -----------------------------------------------------------------------------

    def _bind(self) -> None:
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.bind(self.internal)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, PUB_HWM)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.ctl.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes + (1 << 20))
        self.ctl.setsockopt(zmq.SNDHWM, 10000)
        if self.curve_secret_key:
            from zmq import auth as zmq_auth

            public, secret = zmq_auth.load_certificate(self.curve_secret_key)
            if secret is None:
                raise ValueError(f"{self.curve_secret_key} holds no secret key (use the .key_secret file)")
            for s in (self.pub, self.ctl):
                s.curve_secretkey, s.curve_publickey, s.curve_server = secret, public, True
        try:
            self.pub.bind(self._pub_req)
            self.ctl.bind(self._ctl_req)
        except zmq.ZMQError as exc:
            self._close_sockets()
            raise OSError(f"cannot bind {self._pub_req} / {self._ctl_req}: {exc} (is another sidecar running? "
                          "choose other ports with --pub/--ctl)") from exc
        self.pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ctl_endpoint = self.ctl.getsockopt_string(zmq.LAST_ENDPOINT)

    def _close_sockets(self) -> None:
        for s in (getattr(self, "inbox", None), getattr(self, "pub", None), getattr(self, "ctl", None)):
            if s is not None:
                s.close(0)

    def start(self) -> "Server":
        """Run the loop on a background thread; returns once it is serving."""
        self._thread = threading.Thread(target=self.run, name="sidecar", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def feeder(self) -> Feeder:
        return Feeder(self)

    def publish_video(self, stream: str, seq: int, t: float, width: int, height: int, encoding: str,
                      data: bytes) -> bool:
        """Publish a rendered frame on `video/<stream>` (SPEC 3.4). Safe from any thread (a renderer sink
        rendering in the background). Never blocks: returns False when the frame had to be dropped."""
        msg = {"v": m.PROTOCOL, "type": "video", "stream": stream, "seq": int(seq), "t": float(t),
               "wall": time.time(), "width": int(width), "height": int(height), "encoding": encoding,
               "data": bytes(data)}
        m.validate_stream(msg)  # a wrong size or encoding is the caller's bug: raise ProtocolError here
        frames = [f"video/{stream}".encode(), m.encode(msg)]
        if threading.current_thread() is self._loop_thread:
            self.pub.send_multipart(frames)
            return True
        sock = getattr(self._tls, "push", None)
        if sock is None:  # one inproc PUSH per calling thread (sockets are not thread-safe)
            sock = self._tls.push = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 8)
            sock.connect(self.internal)
        try:
            sock.send_multipart([b"pub"] + frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.ctl, zmq.POLLIN)
        poller.register(self.inbox, zmq.POLLIN)
        next_beat = time.monotonic()
        self._loop_thread = threading.current_thread()
        self._ready.set()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    self._publish_status()
                    self._expire_idle(now)
                    next_beat = now + self.heartbeat_s
                timeout_ms = max(1, min(100, int((next_beat - now) * 1000)))
                poller.poll(timeout_ms)
                # drain a bounded number per turn so neither side starves the other
                for _ in range(64):
                    if not self._poll_once(self.inbox, self._on_internal):
                        break
                for _ in range(64):
                    if not self._poll_once(self.ctl, self._on_request):
                        break
        except Exception as exc:  # a bug in the loop itself: keep the traceback for the caller
            self._error = exc
            log.exception("sidecar loop failed")
            raise
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for st in list(self.streams.values()):
            try:
                self._close_stream(st, "sidecar stopping")
            except Exception:
                log.exception("closing stream %s", st.stream)
        # a running bake finishes; its reply is dropped with the sockets (the client times out)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %r", sink)
        self._close_sockets()

    @staticmethod
    def _poll_once(sock, handler) -> bool:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return False
        handler(frames)
        return True

    # --- internal messages (sources, bake workers) --------------------------------------------

    def _on_internal(self, frames: list[bytes]) -> None:
        kind = frames[0]
        try:
            if kind == b"audio":
                st = self.streams.get(frames[1].decode())
                if st is not None:
                    self._feed(st, np.frombuffer(frames[2], np.float32))
            elif kind == b"open":
                sid, source = frames[1].decode(), frames[2].decode()
                if sid not in self.streams:
                    self._open_stream(sid, source, None, self.fps, self.lookahead_ms, 16000)
            elif kind == b"end":
                st = self.streams.get(frames[1].decode())
                if st is not None:
                    self._close_stream(st, "end of input")
            elif kind == b"event":
                sid = frames[1].decode()
                self._publish_event(sid, frames[2].decode(), message=frames[3].decode() or None)
            elif kind == b"pub":  # a frame published from another thread (publish_video)
                self.pub.send_multipart(frames[1:])
            elif kind == b"reply":
                self._bakes_running -= 1
                self.ctl.send_multipart(frames[1:])
        except Exception:
            log.exception("internal message %r failed", kind)

    # --- streams ------------------------------------------------------------------------------

    def _make_a2e(self, fps, lookahead_ms, alpha=None, history=None):
        from realtalk_bridge.runtime.a2e import A2EStream

        return A2EStream(self.rt, fps=int(fps), lookahead_ms=lookahead_ms, identity=alpha, history=history)

    def _open_stream(self, sid, source, owner, fps, lookahead_ms, sample_rate) -> StreamState:
        st = StreamState(stream=sid, source=source, owner=owner, fps=fps, lookahead_ms=lookahead_ms,
                         sample_rate=sample_rate, a2e=self._make_a2e(fps, lookahead_ms),
                         smoothing=self.default_smoothing, gains=dict(self.default_gains))
        st.gain_vec = gain_vector(self.names, st.gains)
        if sample_rate != 16000:
            import soxr

            st.resampler = soxr.ResampleStream(sample_rate, 16000, 1, dtype="float32")
        if self.postprocess is not None:
            st.post = self.postprocess(sid, self.names, fps)
        self.streams[sid] = st
        self._publish_event(sid, "stream_open", message=source)
        self._publish_status()
        return st

    def _close_stream(self, st: StreamState, why: str) -> int:
        if st.resampler is not None:
            tail = st.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                self._publish_frames(st, st.a2e.push(tail))
        self._publish_frames(st, st.a2e.flush())
        self.streams.pop(st.stream, None)
        t = st.t_base + st.samples_in / 16000.0
        self._publish_event(st.stream, "stream_close", t=t, message=why)
        self._publish_status()
        return st.seq

    def _expire_idle(self, now: float) -> None:
        for st in list(self.streams.values()):
            if st.source == "push" and now - st.last_audio > self.idle_timeout:
                log.info("stream %s: idle for %.0f s, closing", st.stream, now - st.last_audio)
                self._close_stream(st, "idle timeout")

    def _feed(self, st: StreamState, x: np.ndarray) -> None:
        """Audio at the stream's rate -> VAD events, A2E frames, published."""
        st.last_audio = time.monotonic()
        st.samples_raw += len(x)
        if st.resampler is not None:
            x = st.resampler.resample_chunk(x, last=False)
        st.samples_in += len(x)
        for name, t in st.vad.push(x):  # (VAD time counts from the stream's first sample, like t_base)
            self._publish_event(st.stream, name, t=t + st.audio_offset_ms / 1000.0)
        self._publish_frames(st, st.a2e.push(x))

    def _publish_frames(self, st: StreamState, frames) -> None:
        for fr in frames:
            t = st.t_base + float(fr.t) + st.audio_offset_ms / 1000.0
            w = np.asarray(fr.weights, np.float32)
            pose = None
            if st.post is not None:
                step = getattr(st.post, "step", st.post)
                w, pose = step(t, w)
                w = np.asarray(w, np.float32)
            w = smooth(st.prev, w * st.gain_vec, st.smoothing)
            st.prev = w
            wall = time.time()
            with_names = st.seq == 0 or wall - st.names_wall >= 1.0
            if with_names:
                st.names_wall = wall
            msg = m.coeffs(st.stream, st.seq, t, wall, st.fps, self.layout, w,
                           names=self.names if with_names else None, pose=pose,
                           speech=st.vad.active_at(st.t_base + float(fr.t)))
            # PUB never blocks: a full subscriber queue drops that subscriber's frames only
            self.pub.send_multipart([f"coeffs/{st.stream}".encode(), m.encode(msg)])
            for sink in self.sinks:
                try:
                    sink.send(st.stream, st.seq, t, self.names, w, pose)
                except Exception:
                    log.exception("sink %r failed on frame %d of %s", sink, st.seq, st.stream)
            st.seq += 1
            self.stats["frames"] += 1

    def _publish_event(self, sid: str, name: str, t: float | None = None, message: str | None = None) -> None:
        msg = m.event(sid, name, time.time(), t=t, message=message)
        self.pub.send_multipart([f"event/{sid}".encode(), m.encode(msg)])

    def status(self) -> dict:
        model = {"name": getattr(self.rt, "path", None).stem if getattr(self.rt, "path", None) else "a2e",
                 "space": self.layout, "sample_rate": 16000}
        return {"v": m.PROTOCOL, "type": "status", "wall": time.time(), "server": SERVER,
                "layouts": {self.layout: self.names},
                "streams": [st.info(self.layout) for st in self.streams.values()], "model": model}

    def _publish_status(self) -> None:
        self.pub.send_multipart([b"status", m.encode(self.status())])

    # --- control requests ---------------------------------------------------------------------

    def _on_request(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return  # a routing id with no payload: nothing to answer
        envelope, payload = frames[:-1], frames[-1]
        self.stats["requests"] += 1
        req = None
        try:
            req = m.decode(payload, self.max_message_bytes)
            m.validate_request(req)
            reply = getattr(self, "_op_" + req["op"])(req, envelope)
        except m.ProtocolError as exc:
            reply = self._error_reply(req, exc.code, exc.message)
        except ValueError as exc:  # argument values the runtime refused (identity dims, fps, ...)
            reply = self._error_reply(req, "bad_request", str(exc))
        except Exception as exc:
            log.error("internal error on %r:\n%s", req.get("op") if isinstance(req, dict) else None,
                      traceback.format_exc())
            reply = self._error_reply(req, "internal", f"{type(exc).__name__}: {exc}")
        if reply is not None:  # None: answered later (bake)
            self.ctl.send_multipart(envelope + [m.encode(reply)])

    def _error_reply(self, req, code, message) -> dict:
        self.stats["errors"] += 1
        log.warning("request rejected: %s: %s", code, message)
        extra = {"versions": list(m.VERSIONS)} if code == "unsupported_version" else {}
        # only echo op/id of a request that decoded as a map
        return m.reply_error(req if isinstance(req, dict) else None, code, message, **extra)

    def _stream_for(self, req: dict, envelope: list, control: bool = False) -> StreamState:
        owner = envelope[0]
        st = self.streams.get(req["stream"])
        if st is None:
            raise m.ProtocolError("unknown_stream", f"no stream {req['stream']!r}")
        if st.owner is not None and st.owner != owner:
            raise m.ProtocolError("unknown_stream", f"stream {req['stream']!r} belongs to another client")
        if st.owner is None and not control:
            raise m.ProtocolError("unknown_stream", f"stream {req['stream']!r} is the sidecar's own; open a stream to push audio")
        return st

    def _check_stream_fps(self, fps) -> None:
        if fps not in self.stream_fps:
            raise m.ProtocolError("bad_request", f"stream fps must be one of {list(self.stream_fps)}, got {fps:g}")

    def _op_hello(self, req, envelope):
        common = max(set(req["versions"]) & set(m.VERSIONS))
        return m.reply_ok(req, protocol=common, server=SERVER, layouts={self.layout: self.names},
                          model=self.status()["model"], streams=[s.info(self.layout) for s in self.streams.values()],
                          pub=self.pub_endpoint, sample_rate=16000)

    def _op_ping(self, req, envelope):
        return m.reply_ok(req, wall=time.time())

    def _op_status(self, req, envelope):
        st = self.status()
        del st["v"], st["type"]
        return m.reply_ok(req, **st)

    def _op_stream_open(self, req, envelope):
        sid = req.get("stream") or f"s-{uuid.uuid4().hex[:8]}"
        fps = req.get("fps", self.fps)
        self._check_stream_fps(fps)
        la = float(req.get("lookahead_ms", self.lookahead_ms))
        owner = envelope[0]
        old = self.streams.get(sid)
        if old is not None:
            if old.owner is None:
                raise m.ProtocolError("bad_request", f"stream id {sid!r} is reserved for the sidecar's own source")
            if old.owner != owner:
                raise m.ProtocolError("busy", f"stream {sid!r} is open by another client")
            self._close_stream(old, "reopened")
        elif sid in SERVER_STREAMS:
            raise m.ProtocolError("bad_request", f"stream id {sid!r} is reserved for the sidecar's own source")
        n_push = sum(1 for s in self.streams.values() if s.source == "push")
        if n_push >= MAX_PUSH_STREAMS:
            raise m.ProtocolError("busy", f"{n_push} pushed streams are open (limit {MAX_PUSH_STREAMS})")
        st = self._open_stream(sid, "push", owner, fps, la, int(req.get("sample_rate", 16000)))
        return m.reply_ok(req, stream=sid, fps=float(st.fps), lookahead_ms=st.lookahead_ms, layout=self.layout,
                          names=self.names)

    def _op_push_audio(self, req, envelope):
        st = self._stream_for(req, envelope)
        x = m.pcm_to_f32(req["pcm"], req["format"])
        if len(x) > m.MAX_PUSH_SECONDS * st.sample_rate:
            raise m.ProtocolError("bad_request", f"push_audio: at most {m.MAX_PUSH_SECONDS:g} s per message")
        self._feed(st, x)
        return m.reply_ok(req, samples=st.samples_raw, t=st.samples_raw / st.sample_rate)

    def _op_stream_close(self, req, envelope):
        st = self._stream_for(req, envelope)
        frames = self._close_stream(st, "closed by client")
        return m.reply_ok(req, frames=frames)

    def _op_set_identity(self, req, envelope):
        st = self._stream_for(req, envelope, control=True)
        n_id = int(getattr(self.rt, "n_id", 0))
        alpha = m.unpack_f32(req["alpha"], "alpha") if "alpha" in req and n_id else None
        history = None
        if "history" in req:
            h = m.unpack_f32(req["history"], "history")
            E = len(self.names)
            if h.size == 0 or h.size % E:
                raise m.ProtocolError("bad_request", f"history must be N x {E} float32 (row-major), got {h.size} values")
            history = h.reshape(-1, E)
        # what is not sent keeps its earlier value (set_identity(history=...) must not reset alpha)
        alpha = st.alpha if alpha is None else alpha
        history = st.history if history is None else history
        st.a2e.set_identity(alpha, history)  # ValueError (wrong dims) -> bad_request
        st.alpha, st.history = alpha, history
        return m.reply_ok(req, alpha_dims=n_id if alpha is not None else 0,
                          history_frames=0 if history is None else len(history))

    def _op_set_params(self, req, envelope):
        st = self._stream_for(req, envelope, control=True)
        fps = req.get("fps", st.fps)
        la = float(req.get("lookahead_ms", st.lookahead_ms))
        self._check_stream_fps(fps)
        if fps != st.fps or la != st.lookahead_ms:
            a2e = self._make_a2e(fps, la, st.alpha, st.history)  # raises before anything changes
            self._publish_frames(st, st.a2e.flush())
            # the new A2E stream counts from 0: keep `t` continuous across the change
            st.t_base = st.samples_in / 16000.0
            st.a2e, st.fps, st.lookahead_ms = a2e, fps, la
            if st.post is not None and self.postprocess is not None:
                st.post = self.postprocess(st.stream, self.names, fps)
        if "smoothing" in req:
            st.smoothing = float(req["smoothing"])
        if "gains" in req:
            st.gains = {k: float(v) for k, v in req["gains"].items()}
            st.gain_vec = gain_vector(self.names, st.gains)
        if "audio_offset_ms" in req:
            st.audio_offset_ms = float(req["audio_offset_ms"])
        self._publish_status()
        return m.reply_ok(req, params=st.params())

    def _op_set_emotion(self, req, envelope):
        st = self._stream_for(req, envelope, control=True)
        setter = getattr(st.post, "set_emotion", None)
        if setter is None:
            raise m.ProtocolError("not_supported", f"stream {st.stream!r} has no non-verbal layer (emotion overlay)")
        strength = float(req.get("strength", 1.0))
        setter(req["emotion"], strength)  # ValueError for an unknown emotion -> bad_request
        return m.reply_ok(req, emotion=req["emotion"], strength=strength)

    def _op_bake(self, req, envelope):
        if self._bakes_running >= MAX_BAKES:
            raise m.ProtocolError("busy", f"{self._bakes_running} bakes are running (limit {MAX_BAKES})")
        fps = float(req.get("fps", 30.0))
        la = float(req.get("lookahead_ms", self.lookahead_ms))
        self._bakes_running += 1
        self._pool.submit(self._bake_job, list(envelope), req, fps, la)
        return None  # the reply comes from the worker, through the inbox

    def _bake_job(self, envelope, req, fps, la) -> None:
        """Runs on a pool thread; replies through the inbox so only the loop thread touches ROUTER."""
        from realtalk_bridge.audio import decode_audio_bytes, resample
        from realtalk_bridge.bake import bake_array

        try:
            if req["format"] == "file":
                audio = decode_audio_bytes(bytes(req["audio"]))
            else:
                audio = resample(m.pcm_to_f32(req["audio"], req["format"]), int(req["sample_rate"]))
            t, w = bake_array(self.rt, audio, fps=fps, lookahead_ms=la)
            reply = m.reply_ok(req, fps=fps, layout=self.layout, names=self.names, n_frames=int(len(w)),
                               t0=float(t[0]) if len(t) else 0.0, w=m.pack_f32(w))
            self.stats["bakes"] += 1
        except m.ProtocolError as exc:
            reply = m.reply_error(req, exc.code, exc.message)
        except ValueError as exc:
            reply = m.reply_error(req, "bad_request", str(exc))
        except Exception as exc:
            log.error("bake failed:\n%s", traceback.format_exc())
            reply = m.reply_error(req, "internal", f"{type(exc).__name__}: {exc}")
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.connect(self.internal)
        sock.send_multipart([b"reply"] + envelope + [m.encode(reply)])
        sock.close()
