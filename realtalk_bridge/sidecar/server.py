"""The sidecar's sockets and ops (protocol/SPEC.md).

Three kinds of threads, so that no request can stall the stream:

- the **io loop** (`run`) owns every ZeroMQ socket (sockets are not thread-safe). It checks each request's
  size and envelope on the raw bytes, decodes and validates the small ones (at most 512 KiB: cheap), answers
  the cheap ops, queues pushed audio, and publishes each frame (PUB and every sink) at its own time;
- the **engine** thread owns the A2E state of every stream. Each tick it takes the queued audio of all
  streams, sheds audio that has gone stale (`lagging` event), runs every stream's model windows in one
  batched ONNX call (runtime.a2e.step_streams; onnxruntime releases the GIL) and hands the frames, with
  their due times, back to the io loop;
- **bake workers** decode and bake large requests (bounded, cancellable, duration-limited) off both.

Everything that arrives from the network is validated by messages.py; a bad message costs its sender an
error reply (never more than a short excerpt of what it sent), never the server.
"""
from __future__ import annotations

import heapq
import io
import itertools
import logging
import math
import queue
import re
import socket
import threading
import time
import traceback
import uuid
from collections import deque
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
MAX_PUSH_STREAMS = 64  # all clients together
MAX_STREAMS_PER_CLIENT = 32  # one game client may run all the NPC streams 2 cores serve in real time
MAX_QUEUED_AUDIO_S = 3.0  # per client: audio received but not yet through the A2E
MAX_LAG_S = 0.3  # a live stream's audio older than this when the engine gets to it is dropped (`lagging`)
MAX_WINDOWS_PER_TICK = 4  # per live stream and engine tick (160 ms of audio): one busy stream cannot make a tick long
MAX_PACE_DELAY_S = 0.02  # frame pacing never holds a frame more than this past its audio time + look-ahead
PACE_DECAY_S = 0.00003  # the pacing delay creeps down this much per frame (0.9 ms per second at 30 fps)
ANCHOR_SLEW_S = 0.0002  # the audio clock moves earlier by at most this per push (unless ANCHOR_JUMP_S early)
ANCHOR_JUMP_S = 0.01
ANCHOR_CREEP = 0.001  # ... and later by at most this fraction of the time since the last push (clock drift)
# pyzmq's flag enums cost microseconds per use; the loop uses these plain ints many times per frame
_EVENTS, _POLLIN, _SNDMORE = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.SNDMORE)
COALESCE_S = 0.005  # with several streams an engine tick starts at most this often (bigger batches)
TICK_BUDGET_S = 0.03  # model time per engine tick: frames of live streams are never held up longer
MAX_BULK_WINDOWS_PER_TICK = 1  # a stream fed ahead of real time goes one window per tick: live streams come first
MAX_BAKES = 2
MAX_BAKE_SECONDS = 30 * 60.0
MAX_UNREAD_REPLIES = 100  # ROUTER SNDHWM: a client that never reads its replies loses them, the sidecar holds no more
HANDSHAKE_S = 2.0  # a TCP connection that has not finished the ZMTP handshake by then is closed (descriptors)
MAX_CONNECTIONS = 64  # per socket (ctl, pub): connections past it are closed by the sidecar (descriptors)
MAX_REFUSING = 8  # connections over the limit kept open (up to HANDSHAKE_S) to answer `busy`; the rest closed at once
REFUSE_LINGER_S = 0.2  # after the `busy` reply to an over-limit connection, time for it to leave before closing
# admission (SPEC section 6, overload policy): a new stream is admitted while all streams together would need
# at most this fraction of the engine thread at the measured cost per model window; the rest is headroom for
# bursts, the io loop's share of the GIL and other processes. 0.8 keeps the kept streams' p95 on target.
ADMIT_CAPACITY = 0.8
MODEL_FPS = 25  # model windows per second every stream needs, whatever its output fps (runtime.a2e)
ADMIT_MIN_WINDOWS = 10  # windows the engine runs before it measures (cold start left out); till then admit freely
ADMIT_PERIOD_S = 0.25  # the cost estimate is refreshed from the engine's totals this often
SERVER_STREAMS = ("mic", "file")
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1)$")
ENDPOINT = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.*-]+):(\d+|\*)$")


def is_loopback(endpoint: str) -> bool:
    """tcp://127.0.0.1:port, tcp://localhost:port, tcp://[::1]:port, ipc:// and inproc:// are local."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    mt = re.match(r"^tcp://(.+):(\d+|\*)$", endpoint)
    return bool(mt and LOOPBACK.match(mt.group(1)))


def check_endpoint(endpoint) -> str:
    """A clear error for an endpoint ZeroMQ would only answer with "Invalid argument"."""
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError(f"endpoint must be a string like tcp://127.0.0.1:47200, got {endpoint!r}")
    if endpoint.startswith(("ipc://", "inproc://")):
        return endpoint
    mt = ENDPOINT.match(endpoint)
    if not mt:
        raise ValueError(f"endpoint {endpoint!r} must look like tcp://HOST:PORT (e.g. tcp://127.0.0.1:47200), "
                         "or ipc://PATH")
    if mt.group(2) != "*" and not 0 <= int(mt.group(2)) <= 65535:
        raise ValueError(f"endpoint {endpoint!r}: port must be in 0..65535 (or *)")
    return endpoint


# --- admission control (pure) -----------------------------------------------------------------

def _new_totals() -> dict:
    """The engine's totals since the last admission estimate: seconds of model wall time, of the engine
    thread's and the io loop's Python CPU time, of the calling thread's own model slice (wall, CPU), and windows."""
    return {"model": 0.0, "engine": 0.0, "io": 0.0, "slice_wall": 0.0, "slice_cpu": 0.0, "windows": 0}


def engine_share(n_streams: int, window_s: float, overhead_s: float, io_s: float = 0.0,
                 windows_per_s: float = MODEL_FPS) -> float:
    """Fraction of the engine that n streams need: each runs `windows_per_s` model windows a second, each
    window costing `window_s` of batched model time (wall: its slices run at once on several cores),
    `overhead_s` of the engine thread's Python work (taking audio, post-processing and scheduling frames) and
    `io_s` of the io loop's (receiving pushes, sending frames), all measured per window. Two things must fit:
    the engine thread (model + its Python work) and the GIL (both threads' Python work; the model runs
    without it, so the io loop's work overlaps the model calls)."""
    per_window = max(window_s + overhead_s, overhead_s + io_s)
    return n_streams * windows_per_s * per_window


def admission_refusal(n_streams: int, window_s: float | None, overhead_s: float | None,
                      capacity: float = ADMIT_CAPACITY, io_s: float = 0.0) -> str | None:
    """Why one more stream (beside the n open ones) would not get real-time service, or None to admit it.
    None as a cost means not measured yet (a fresh sidecar): admit. Every open stream counts as one
    real-time stream, bulk pushers too (they get at least a real-time stream's windows; what they take
    beyond that is the engine's spare time, seen by the busy trigger)."""
    if window_s is None or overhead_s is None:
        return None
    need = engine_share(n_streams + 1, window_s, overhead_s, io_s)
    if need <= capacity:
        return None
    per = 1000.0 * max(window_s + overhead_s, overhead_s + io_s)
    fit = int(capacity / max(1e-9, engine_share(1, window_s, overhead_s, io_s)))
    return (f"the A2E is at capacity ({n_streams + 1} streams would need {100 * need:.0f} % of the engine thread "
            f"at the measured {per:.2f} ms per model window; admission stops at {100 * capacity:.0f} %, "
            f"about {fit} streams)")


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
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {a}")
    if prev is None or a <= 0:
        return x
    return (a * prev + (1.0 - a) * x).astype(np.float32)


def finite_frame(w: np.ndarray, value_range) -> np.ndarray:
    """What leaves the sidecar: no NaN/inf ever (0 instead), inside the layout's range when it has one."""
    w = np.array(w, np.float32)  # a copy: the caller's array is left as it was
    if not np.isfinite(w).all():  # (rare: nan_to_num costs 3x the check, so only then)
        w = np.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)
    if value_range is not None:
        np.clip(w, *value_range, out=w)
    return w


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
        blocks = x[:nb * self.block].reshape(nb, self.block)
        louds = np.sqrt(np.mean(blocks * blocks, axis=1)) > self.threshold
        for loud in louds.tolist():
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

    def skip(self, n: int) -> None:
        """n samples dropped (load shedding): time moves on, state stays."""
        self._n += n
        self._rest = np.zeros(0, np.float32)

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
    owner: Any  # the connection (ROUTER peer) that opened it (push streams); None for the sidecar's own
    fps: float
    lookahead_ms: float
    sample_rate: int
    a2e: Any
    post: Any = None  # post-processor: callable (t, w) -> (w, pose), or an object with .step (and .set_emotion)
    seq: int = 0
    t_base: float = 0.0  # audio time at which the current A2E stream started (fps change, shed audio)
    samples_in: int = 0  # at 16 kHz, through the engine (including shed audio)
    samples_raw: int = 0  # at the stream's own rate, as the client counts them (io loop)
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
    # io loop -> engine: audio chunks (arrival time, samples at the stream's rate) not yet through the A2E
    pending: deque = field(default_factory=deque)
    pending_samples: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # the audio clock: audio time tau (16 kHz samples / 16000 since the stream began) arrived at anchor + tau
    anchor: float | None = None
    anchor_at: float = 0.0
    first_audio: float | None = None  # monotonic time the stream's first sample was "spoken"
    lead_s: float = 0.0  # how far the client's audio runs ahead of real time (bulk pushes: > 0)
    backlog: bool = False  # audio is in the A2E that the last tick had no room to run
    deferred: tuple | None = None  # (envelope, req) of a push answered once the queue has room
    last_due: float = 0.0  # monotonic time of the latest frame scheduled (frames leave in order)
    dropped_s: float = 0.0
    closed: bool = False
    pace: float = 0.0  # s: how long after audio time + look-ahead this stream's frames leave (_pace_delay)

    topic: bytes = b""  # the PUB topic of its frames (set from `stream`)

    def __post_init__(self):
        self.topic = f"coeffs/{self.stream}".encode()

    def info(self, layout: str) -> dict:
        return {"stream": self.stream, "source": self.source, "fps": float(self.fps),
                "lookahead_ms": float(self.lookahead_ms), "seq": self.seq - 1, "layout": layout}

    def params(self) -> dict:
        return {"fps": float(self.fps), "lookahead_ms": float(self.lookahead_ms), "smoothing": float(self.smoothing),
                "gains": dict(self.gains), "audio_offset_ms": float(self.audio_offset_ms)}

    def queued_s(self) -> float:
        return self.pending_samples / self.sample_rate


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


def _frame_k(a2e) -> int:
    """The model frame the stream's next output frame reads from."""
    return (a2e._next * a2e.rt.fps) // a2e.fps


def _monitor_event(frames) -> tuple[int | None, Any]:
    """A socket monitor message -> (event, descriptor); (None, None) if it does not parse."""
    from zmq.utils.monitor import parse_monitor_message

    try:
        ev = parse_monitor_message(frames)
    except Exception:
        return None, None
    return ev["event"], ev.get("value")


class _Cancelled(Exception):
    pass


@dataclass
class _Bake:
    envelope: list
    conn: Any
    payload: Any  # zmq.Frame (not yet decoded) or a decoded request
    cancel: threading.Event = field(default_factory=threading.Event)


class Server:
    """Sockets + ops. `run()` blocks until `stop()`; `start()` runs it on a thread (tests, bench).

    runtime: an `A2ERuntime` (realtalk_bridge.runtime.a2e).
    sinks: objects with `.send(stream, seq, t, names, weights, pose)` and `.close()` (UDP bridges), called
        for every published frame, at the frame's own time (frame pacing).
    postprocess: a factory `(stream_id, names, fps) -> post-processor or None`; a post-processor is a
        callable `(t, weights) -> (weights, pose)` or an object with `.step(t, weights)` and optionally
        `.set_emotion(name, strength)` (face/nonverbal.NonVerbal).
    Limits (SPEC section 6): max_message_bytes caps control ops and push_audio (never above their own
    limits), max_bake_bytes / max_bake_s the bake uploads; max_streams / max_streams_per_client /
    max_queued_s are the quotas; max_lag_s is how stale live audio may get before it is dropped;
    max_connections caps the connections per socket; admit_capacity is the share of the engine thread that
    admission fills (ADMIT_CAPACITY).
    curve_clients: z85 public keys allowed to connect (ZAP); None accepts any key that knows the server's.
    """

    def __init__(self, runtime, pub: str = DEFAULT_PUB, ctl: str = DEFAULT_CTL, fps: float = 30,
                 lookahead_ms: float = 80.0, idle_timeout: float = 10.0, sinks=(),
                 postprocess: Callable | None = None, allow_remote: bool = False,
                 curve_secret_key: str | None = None, max_message_bytes: int | None = None,
                 heartbeat_s: float = 1.0, smoothing: float = 0.0, gains: dict | None = None,
                 max_bake_bytes: int = m.MAX_BAKE_BYTES, max_bake_s: float = MAX_BAKE_SECONDS,
                 max_streams: int = MAX_PUSH_STREAMS, max_streams_per_client: int = MAX_STREAMS_PER_CLIENT,
                 max_queued_s: float = MAX_QUEUED_AUDIO_S, max_lag_s: float = MAX_LAG_S,
                 curve_clients: list | None = None, insecure: bool = False, pacing: bool = True,
                 max_connections: int = MAX_CONNECTIONS, admit_capacity: float = ADMIT_CAPACITY):
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or not 1 <= max_connections <= 65536:
            raise ValueError(f"max_connections must be an integer in 1..65536, got {max_connections!r}")
        if not 0 < admit_capacity <= 1:
            raise ValueError(f"admit_capacity must be in (0, 1], got {admit_capacity!r}")
        for ep in (pub, ctl):
            check_endpoint(ep)
        if pub == ctl and not pub.endswith((":*", ":0")):
            raise ValueError(f"--pub and --ctl must differ (both are {pub})")
        remote = [ep for ep in (pub, ctl) if not is_loopback(ep)]
        if remote and not allow_remote:
            raise ValueError(f"{remote[0]} is not a loopback endpoint; pass --allow-remote to bind other interfaces "
                             "(with --curve-secret-key)")
        if remote and not curve_secret_key and not insecure:
            raise ValueError(f"{remote[0]} would expose the sidecar unencrypted and unauthenticated; use "
                             "--curve-secret-key (and --curve-clients), or pass --insecure to do it anyway")
        if remote and not curve_secret_key:
            log.warning("!!! INSECURE: %s is reachable from other machines without CURVE: anyone on the network "
                        "can push audio, bake and read every stream !!!", ", ".join(remote))
        from realtalk_bridge.runtime.a2e import OUTPUT_FPS

        if fps not in OUTPUT_FPS:
            raise ValueError(f"fps must be one of {OUTPUT_FPS}, got {fps}")
        if not 0.0 <= float(smoothing) <= 1.0:
            raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
        for name, g in (gains or {}).items():
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g <= 10:
                raise ValueError(f"gain for {name!r} must be a number in [0, 10], got {g!r}")
        self.rt = runtime
        self.stream_fps = tuple(OUTPUT_FPS)
        self.names = list(runtime.names)
        self.layout = runtime.layout
        self.value_range = getattr(runtime, "value_range", None)
        self.fps, self.lookahead_ms = fps, float(lookahead_ms)
        self.idle_timeout, self.heartbeat_s = idle_timeout, heartbeat_s
        self.default_smoothing, self.default_gains = float(smoothing), dict(gains or {})
        self.sinks = list(sinks)
        self.postprocess = postprocess
        self.max_bake_bytes = int(max_bake_bytes)
        self.max_bake_s = float(max_bake_s)
        limit = m.MAX_PUSH_BYTES if max_message_bytes is None else int(max_message_bytes)
        self.max_push_bytes = min(limit, m.MAX_PUSH_BYTES)
        self.max_control_bytes = min(limit, m.MAX_CONTROL_BYTES)
        self.max_streams, self.max_streams_per_client = int(max_streams), int(max_streams_per_client)
        self.max_queued_s, self.max_lag_s = float(max_queued_s), float(max_lag_s)
        self.max_connections, self.admit_capacity = max_connections, float(admit_capacity)
        self.pacing = pacing
        self.curve_secret_key = curve_secret_key
        self.curve_clients = list(curve_clients) if curve_clients else None
        self.ctx = zmq.Context.instance()
        self.internal = f"inproc://realtalk-sidecar-{uuid.uuid4().hex}"
        self.streams: dict[str, StreamState] = {}  # changed by the io loop only
        self.stats = {"requests": 0, "errors": 0, "frames": 0, "bakes": 0, "dropped_s": 0.0, "refused": 0}
        self._bakes: list[_Bake] = []
        self._bake_q: queue.Queue = queue.Queue()
        self._tls = threading.local()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None  # the one thread that touches the sockets
        self._error: BaseException | None = None
        # engine: commands from the io loop, and what it hands back (paced frames, replies, events)
        self._cmds: queue.SimpleQueue = queue.SimpleQueue()
        self._work = threading.Event()
        self._out: list = []  # heap of (due monotonic, n, kind, data)
        self._out_lock = threading.Lock()
        self._out_n = itertools.count()
        self._load = 0.0  # engine busy fraction (EMA)
        self._win_cost = 0.004  # seconds per model window in a batch (EMA, measured): sizes the ticks
        # admission: totals since the last estimate (_new_totals), the estimate per window (model, engine thread's
        # Python, io loop's Python); None until the first period after ADMIT_MIN_WINDOWS windows
        self._acc = _new_totals()
        self._acc_wall = time.monotonic()
        self._acc_windows = 0
        self._cost_window: float | None = None
        self._cost_overhead: float | None = None
        self._cost_io: float | None = None
        self._io_busy = 0.0  # CPU s of the io loop's work (outside poll) since the engine last took it
        self._rr = 0
        self._lag_wall = -1e9  # last time a live stream had to shed audio
        self._conns: dict[int, int] = {}  # fd -> generation (the connection that sent a request)
        self._conn_gen = itertools.count(1)
        self._lazy: set[int] = set()
        # connection limit: fd -> monotonic time to close it (math.inf: closed, its DISCONNECTED pending)
        self._refusing: dict[int, float] = {}
        self._pub_conns: set[int] = set()
        self._pub_refusing: dict[int, float] = {}
        self._limit_logged = -1e9
        self._auth = None
        self._pub_req, self._ctl_req = pub, ctl
        self.pub_endpoint = self.ctl_endpoint = None
        self._bind()
        _check_descriptors(max_connections)

    # --- lifecycle -----------------------------------------------------------------------------

    def _bind(self) -> None:
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.bind(self.internal)
        self.wake = self.ctx.socket(zmq.PUSH)  # the engine's bell: only the engine thread uses it
        self.wake.setsockopt(zmq.LINGER, 0)
        self.wake.setsockopt(zmq.SNDHWM, 4)
        self.wake.connect(self.internal)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, PUB_HWM)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        # ZeroMQ refuses (disconnects) any single frame above the largest valid message
        self.ctl.setsockopt(zmq.MAXMSGSIZE, max(self.max_bake_bytes, self.max_push_bytes) + 4096)
        self.ctl.setsockopt(zmq.SNDHWM, MAX_UNREAD_REPLIES)
        self.ctl.setsockopt(zmq.RCVHWM, 1000)
        self.ctl.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_S * 1000))
        self.ctl.setsockopt(zmq.ROUTER_HANDOVER, 0)  # a reused routing id never takes over a live connection
        self.pub.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_S * 1000))
        for s in (self.pub, self.ctl):  # dead peers (pulled cable) free their descriptor
            s.setsockopt(zmq.TCP_KEEPALIVE, 1)
            s.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 30)
        self.monitor = self.ctl.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_ACCEPTED)
        self.pub_monitor = self.pub.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_ACCEPTED)
        if self.curve_secret_key:
            from zmq import auth as zmq_auth

            public, secret = zmq_auth.load_certificate(self.curve_secret_key)
            if secret is None:
                raise ValueError(f"{self.curve_secret_key} holds no secret key (use the .key_secret file)")
            if self.curve_clients is not None:
                from zmq.auth.thread import ThreadAuthenticator

                self._auth = ThreadAuthenticator(self.ctx)
                self._auth.start()
                self._auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(self.curve_clients))
            for s in (self.pub, self.ctl):
                s.curve_secretkey, s.curve_publickey, s.curve_server = secret, public, True
        try:
            self.pub.bind(self._pub_req)
            self.ctl.bind(self._ctl_req)
        except zmq.ZMQError as exc:
            self._close_sockets()
            if exc.errno == zmq.EADDRINUSE:
                hint = "the address is in use (another sidecar running? choose other ports with --pub/--ctl)"
            else:
                hint = "check the host and port (--pub/--ctl)"
            raise OSError(f"cannot bind {self._pub_req} / {self._ctl_req}: {exc}; {hint}") from exc
        self.pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ctl_endpoint = self.ctl.getsockopt_string(zmq.LAST_ENDPOINT)

    def _close_sockets(self) -> None:
        for sock in ("ctl", "pub"):
            try:
                getattr(self, sock).disable_monitor()
            except Exception:
                pass
        for name in ("monitor", "pub_monitor", "wake", "inbox", "pub", "ctl"):
            s = getattr(self, name, None)
            if s is not None:
                s.close(0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def start(self) -> "Server":
        """Run the loop on a background thread; returns once it is serving."""
        self._thread = threading.Thread(target=self.run, name="sidecar", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask every thread to stop (safe from a signal handler with timeout=0); running bakes are cancelled."""
        self._stop.set()
        self._work.set()
        for b in list(self._bakes):
            b.cancel.set()
        if self._thread is not None and self._thread is not threading.current_thread() and timeout:
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
        poller.register(self.monitor, zmq.POLLIN)
        poller.register(self.pub_monitor, zmq.POLLIN)
        next_beat = time.monotonic()
        self._loop_thread = threading.current_thread()
        engine = threading.Thread(target=self._engine_loop, name="sidecar-engine", daemon=True)
        engine.start()
        workers = [threading.Thread(target=self._bake_worker, name=f"bake-{i}", daemon=True) for i in range(MAX_BAKES)]
        for w in workers:
            w.start()
        self._ready.set()
        t_woke = time.thread_time()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    self._publish_status()
                    self._expire_idle(now)
                    next_beat = now + self.heartbeat_s
                due = self._next_due()
                wait = min(next_beat, due if due is not None else next_beat) - now
                self._io_busy += time.thread_time() - t_woke  # the io loop's CPU time (admission estimate)
                poller.poll(max(0, min(100, int(wait * 1000))))
                t_woke = time.thread_time()
                self._publish_due()
                for _ in range(64):
                    if not self._poll_once(self.monitor, self._on_monitor):
                        break
                for _ in range(64):
                    if not self._poll_once(self.pub_monitor, self._on_pub_monitor):
                        break
                self._close_refused()  # (after the events: a descriptor closed meanwhile is no longer listed)
                for _ in range(256):
                    if not self._poll_once(self.inbox, self._on_internal):
                        break
                    self._publish_due()
                for _ in range(64):  # bounded per turn, and due frames go out between requests
                    # connection events first: the I/O thread queued them before the request it delivers,
                    # so a reused descriptor is never taken for the connection that had it before
                    while self._poll_once(self.monitor, self._on_monitor):
                        pass
                    if not self._poll_once(self.ctl, self._on_request, copy=False):
                        break
                    self._publish_due()
        except Exception as exc:  # a bug in the loop itself: keep the traceback for the caller
            self._error = exc
            log.exception("sidecar loop failed")
            raise
        finally:
            self._shutdown(engine, workers)

    def _shutdown(self, engine, workers) -> None:
        self._stop.set()
        for b in list(self._bakes):
            b.cancel.set()
        deadline = time.monotonic() + 1.0
        for st in list(self.streams.values()):  # flush what is queued, within the shutdown budget
            self.streams.pop(st.stream, None)
            self._cmds.put(lambda st=st: self._engine_close(st, "sidecar stopping", None, None))
        self._work.set()
        engine.join(max(0.05, deadline - time.monotonic()))
        self._publish_due(flush=True)
        for w in workers:
            w.join(max(0.05, deadline + 0.3 - time.monotonic()))
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %r", sink)
        self._close_sockets()

    @staticmethod
    def _poll_once(sock, handler, copy: bool = True) -> bool:
        try:
            if not sock.getsockopt(_EVENTS) & _POLLIN:  # (cheaper than the zmq.Again a recv would raise)
                return False
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=copy)
        except zmq.Again:
            return False
        except zmq.ZMQError:
            return False
        handler(frames)
        return True

    # --- paced output: frames leave at their own time ------------------------------------------

    def _schedule(self, due: float, kind: str, data) -> None:
        """From any thread: send `data` at monotonic time `due` (0: as soon as possible)."""
        with self._out_lock:
            heapq.heappush(self._out, (due, next(self._out_n), kind, data))

    def _next_due(self) -> float | None:
        with self._out_lock:
            return self._out[0][0] if self._out else None

    def _publish_due(self, flush: bool = False) -> None:
        now = time.monotonic() + 0.0005
        while True:
            with self._out_lock:
                if not self._out or (not flush and self._out[0][0] > now):
                    return
                _, _, kind, data = heapq.heappop(self._out)
            try:
                if kind == "frame":
                    self._send_frame(*data)
                elif kind == "pub":
                    self.pub.send_multipart(data)
                elif kind == "reply":
                    self.ctl.send_multipart(data, zmq.NOBLOCK)
                elif kind == "status":
                    self._publish_status()
            except zmq.Again:
                pass  # a client that does not read its replies loses them (SNDHWM), the sidecar keeps none
            except zmq.ZMQError as exc:
                log.debug("send failed: %s", exc)

    def _send_frame(self, st: StreamState, msg: dict, t: float, w: np.ndarray, pose) -> None:
        msg["wall"] = time.time()
        # PUB never blocks: a full subscriber queue drops that subscriber's frames only
        self.pub.send(st.topic, _SNDMORE)  # (two sends with int flags: a third of send_multipart's cost)
        self.pub.send(m.encode(msg))
        for sink in self.sinks:
            try:
                sink.send(st.stream, msg["seq"], t, self.names, w, pose)
            except Exception:
                log.exception("sink %r failed on frame %d of %s", sink, msg["seq"], st.stream)
        self.stats["frames"] += 1

    def _reply(self, envelope, reply: dict, after: StreamState | None = None) -> None:
        """A reply sent by the io loop now, or (after=st) once that stream's frames so far have left."""
        data = list(envelope) + [m.encode(reply)]
        if after is None and threading.current_thread() is self._loop_thread:
            try:
                self.ctl.send_multipart(data, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            return
        self._schedule(after.last_due if after is not None else 0.0, "reply", data)
        self._ring()

    def _ring(self) -> None:
        if threading.current_thread() is self._loop_thread:
            return
        try:
            self.wake.send(b"wake", zmq.NOBLOCK)  # only the engine thread rings this bell
        except zmq.ZMQError:
            pass

    # --- connections (monitor events) ----------------------------------------------------------

    def _on_monitor(self, frames) -> None:
        event, fd = _monitor_event(frames)
        if event == zmq.EVENT_ACCEPTED:
            if fd in self._lazy:  # its first request was handled before this event: keep that identity
                self._lazy.discard(fd)
            else:
                self._conns[fd] = next(self._conn_gen)
                self._check_limit(fd, len(self._conns), self._refusing, "control")
        elif event == zmq.EVENT_DISCONNECTED:
            gen = self._conns.pop(fd, None)
            self._lazy.discard(fd)
            self._refusing.pop(fd, None)
            conn = (fd, gen)
            # the connection's streams and bakes end with it (a later client reusing its routing id gets nothing)
            for st in [s for s in self.streams.values() if s.owner == conn]:
                self._close_stream(st, "client disconnected")
            for b in list(self._bakes):
                if b.conn == conn:
                    b.cancel.set()

    def _conn_of(self, frames) -> Any:
        try:
            fd = frames[-1].get(zmq.SRCFD)
        except Exception:
            fd = None
        if fd is None or fd < 0:
            return bytes(frames[0].bytes if hasattr(frames[0], "bytes") else frames[0])
        if fd not in self._conns:  # the request overtook its ACCEPTED event
            self._conns[fd] = next(self._conn_gen)
            self._lazy.add(fd)
            self._check_limit(fd, len(self._conns), self._refusing, "control")
        return (fd, self._conns[fd])

    # --- the connection limit: descriptors stay bounded ----------------------------------------
    # A ROUTER or PUB socket accepts every TCP connection, and ZeroMQ has no option to cap them. The monitor
    # reports each accepted connection with its descriptor; one past `max_connections` is closed by the
    # sidecar: shutdown(2) on a duplicate of the descriptor, so ZeroMQ's own I/O thread sees the connection
    # end, closes its descriptor and reports DISCONNECTED (the sidecar never closes a descriptor ZeroMQ owns).
    # On the control socket up to MAX_REFUSING of them stay open up to HANDSHAKE_S so that their first
    # request is answered `busy` (an honest client learns why); the rest are closed at once. Closing happens
    # after the io loop has read the pending monitor events, so a descriptor ZeroMQ has closed and reused for
    # a newer connection meanwhile is no longer listed under the old one (its DISCONNECTED came first).

    def _check_limit(self, fd, n: int, refusing: dict, what: str) -> None:
        if n <= self.max_connections or fd is None or fd < 0:
            return
        now = time.monotonic()
        keep = what == "control" and len(refusing) < MAX_REFUSING
        refusing[fd] = now + HANDSHAKE_S if keep else now
        if now - self._limit_logged > 10.0:  # (a flood must not flood the log)
            self._limit_logged = now
            log.warning("%s socket: %d connections open (limit %d, --max-connections): closing new ones",
                        what, n - 1, self.max_connections)

    def _close_refused(self) -> None:
        now = time.monotonic()
        for refusing in (self._refusing, self._pub_refusing):
            for fd, when in list(refusing.items()):
                if when <= now:
                    _shutdown_fd(fd)
                    refusing[fd] = math.inf  # until its DISCONNECTED: requests from it are dropped

    def _refuse_request(self, conn, envelope, payload) -> bool:
        """A request on a connection over the limit: answered `busy` once, then the connection is closed."""
        fd = conn[0] if isinstance(conn, tuple) else None
        when = self._refusing.get(fd)
        if when is None:
            return False
        if when != math.inf:
            n = len(self._conns) - len(self._refusing)
            self._send_error(envelope, m.peek(payload.buffer), "busy",
                             f"the sidecar has {n} control connections open (limit {self.max_connections}, "
                             "--max-connections): this connection is closed; retry later")
            self._refusing[fd] = min(when, time.monotonic() + REFUSE_LINGER_S)
        return True

    def _on_pub_monitor(self, frames) -> None:
        event, fd = _monitor_event(frames)
        if event == zmq.EVENT_ACCEPTED:
            self._pub_conns.add(fd)
            self._check_limit(fd, len(self._pub_conns), self._pub_refusing, "stream")
        elif event == zmq.EVENT_DISCONNECTED:
            self._pub_conns.discard(fd)
            self._pub_refusing.pop(fd, None)

    def connections(self) -> dict:
        """Open connections per socket (those over the limit, not yet gone, included)."""
        return {"control": len(self._conns), "stream": len(self._pub_conns)}

    # --- internal messages (sources, engine bell, video from other threads) --------------------

    def _on_internal(self, frames: list[bytes]) -> None:
        kind = frames[0]
        try:
            if kind == b"wake":
                return
            if kind == b"audio":
                st = self.streams.get(frames[1].decode())
                if st is not None:
                    self._queue_audio(st, np.frombuffer(frames[2], np.float32).copy())
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
        except Exception:
            log.exception("internal message %r failed", kind)

    # --- streams (io loop side) ----------------------------------------------------------------

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

    def _close_stream(self, st: StreamState, why: str, envelope=None, req=None) -> None:
        """Unregister now (new pushes get unknown_stream); the engine flushes, publishes and replies."""
        self.streams.pop(st.stream, None)
        st.closed = True
        self._cmds.put(lambda: self._engine_close(st, why, envelope, req))
        self._work.set()

    def _expire_idle(self, now: float) -> None:
        for st in list(self.streams.values()):
            if st.source == "push" and now - st.last_audio > self.idle_timeout:
                log.info("stream %s: idle for %.0f s, closing", st.stream, now - st.last_audio)
                self._close_stream(st, "idle timeout")

    def _queue_audio(self, st: StreamState, x: np.ndarray) -> None:
        """Audio at the stream's rate from a client or a source: to the engine, with its arrival time."""
        now = time.monotonic()
        if x.size:
            st.last_audio = now  # (empty pushes do not keep a stream alive)
        st.samples_raw += len(x)
        # the audio clock for frame pacing: the lowest delay seen, allowed to creep up (ANCHOR_CREEP)
        cand = now - st.samples_raw / st.sample_rate
        # (slew-limited both ways: a push that arrives a few ms early or late moves the frames' schedule by
        # at most ANCHOR_SLEW_S, so one client's network jitter does not show as frame-interval jitter; a
        # client more than ANCHOR_JUMP_S ahead, e.g. a bulk push, moves it at once)
        if st.anchor is None or cand < st.anchor - ANCHOR_JUMP_S:
            st.anchor = cand
        elif cand < st.anchor:
            st.anchor = max(cand, st.anchor - ANCHOR_SLEW_S)
        else:
            st.anchor = min(cand, st.anchor + ANCHOR_CREEP * (now - st.anchor_at))
        st.anchor_at = now
        # how far the client is ahead of real time (a bulk push, a test): such audio is never shed, the
        # queued-audio quota holds its pushes back instead
        if st.first_audio is None:
            st.first_audio = now - len(x) / st.sample_rate
        st.lead_s = st.samples_raw / st.sample_rate - (now - st.first_audio)
        with st.lock:
            st.pending.append((now, x))
            st.pending_samples += len(x)
        self._work.set()

    # --- the engine thread: batched A2E for every stream ---------------------------------------

    def _engine_loop(self) -> None:
        from realtalk_bridge.runtime.a2e import step_streams

        busy_ema, t_prev = 0.0, time.monotonic()
        while not self._stop.is_set() or not self._cmds.empty():
            self._work.wait(0.05)
            if len(self.streams) > 1 and not self._stop.is_set():
                # gather a few ms of pushes from many streams into one batch (cheaper per window)
                time.sleep(max(0.0, t_prev + COALESCE_S - time.monotonic()))
            self._work.clear()
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                while True:
                    try:
                        cmd = self._cmds.get_nowait()
                    except queue.Empty:
                        break
                    cmd()
                active = [st for st in list(self.streams.values()) if st.pending_samples or st.backlog]
                # a Whisper front-end runs its encoder as audio is fed: that is model time too
                tb, cb = time.monotonic(), time.thread_time()
                for st in active:
                    if not st.backlog or self._stale(st, t0):  # a stream still behind takes no more audio yet
                        self._take_audio(st, t0)
                model_s, model_cpu, n_win, timing = 0.0, 0.0, 0, {}
                if active:
                    limits = self._tick_budget(active)
                    if self.rt.encoder is None:
                        tb, cb = time.monotonic(), time.thread_time()
                    frames = step_streams(self.rt, [st.a2e for st in active], max_windows=limits, timing=timing)
                    model_s, model_cpu, n_win = time.monotonic() - tb, time.thread_time() - cb, sum(limits)
                    if n_win:  # the cost of one window, to size the next ticks
                        self._win_cost = 0.8 * self._win_cost + 0.2 * model_s / n_win
                    for st, fr in zip(active, frames):
                        self._publish_frames(st, fr)
                        st.backlog = bool(st.a2e.pending_windows(1))
                        self._answer_deferred(st)
                    if any(st.backlog for st in active):
                        self._work.set()  # more audio is ready than one tick runs: next tick at once
            except Exception:
                log.exception("engine tick failed")
            t1 = time.monotonic()
            self._account(model_s, time.thread_time() - c0 - model_cpu, n_win, t1,
                          timing.get("wall", 0.0), timing.get("cpu", 0.0))
            busy_ema = 0.9 * busy_ema + 0.1 * ((t1 - t0) / max(1e-3, t1 - t_prev))
            self._load, t_prev = busy_ema, t1
            self._ring()

    def _account(self, model_wall: float, other_cpu: float, n_win: int, now: float,
                 slice_wall: float = 0.0, slice_cpu: float = 0.0) -> None:
        """Engine totals -> the admission estimate per model window. The model part is the wall time of the
        batched calls (onnxruntime releases the GIL; time other processes take from it counts, as it should).
        The overheads are the CPU time of the Python work around them: the engine thread's (ticks that run no
        window still take audio and publish) and the io loop's (receiving pushes, sending frames), kept apart
        (engine_share: the engine thread must fit the model and its own work, the GIL both threads' work). CPU
        time, not wall time, because each thread's wall time includes waiting for the other's GIL; it is
        scaled by how much slower the model ran than its CPU time (other processes on the cores), measured on
        the engine thread's own slice of each batch (`slice_wall`, `slice_cpu`: a batch split over several
        threads also waits for the others' slices, which is not contention).
        Refreshed every ADMIT_PERIOD_S, as a 50/50 blend with the previous estimate, from the first period
        that starts after ADMIT_MIN_WINDOWS windows (a fresh sidecar's first onnxruntime calls are slow)."""
        acc = self._acc
        io_s, self._io_busy = self._io_busy, 0.0  # (a float swapped under the GIL: a lost increment is harmless)
        for key, v in (("model", model_wall), ("engine", other_cpu), ("io", io_s), ("windows", n_win),
                       ("slice_wall", slice_wall), ("slice_cpu", slice_cpu)):
            acc[key] += v
        self._acc_windows += n_win
        n = acc["windows"]
        if now - self._acc_wall < ADMIT_PERIOD_S or not n:
            return
        stretch = max(1.0, acc["slice_wall"] / acc["slice_cpu"]) if acc["slice_cpu"] > 0 else 1.0
        win, over, io = acc["model"] / n, stretch * acc["engine"] / n, stretch * acc["io"] / n
        if self._acc_windows - n >= ADMIT_MIN_WINDOWS:
            if self._cost_window is None:
                self._cost_window, self._cost_overhead, self._cost_io = win, over, io
            else:
                self._cost_window = 0.5 * self._cost_window + 0.5 * win
                self._cost_overhead = 0.5 * self._cost_overhead + 0.5 * over
                self._cost_io = 0.5 * self._cost_io + 0.5 * io
        self._acc, self._acc_wall = _new_totals(), now

    def _tick_budget(self, active: list) -> list[int]:
        """Windows per stream this tick: live streams up to 4, bulk ones 1, and all together no more than
        fit in TICK_BUDGET_S at the measured cost per window. Who starts rotates, so under overload every
        stream gets its turn and what waits too long is shed (lagging) instead of piling up latency."""
        total = max(len(active) // 4 + 1, int(TICK_BUDGET_S / max(self._win_cost, 1e-4)))
        want = [st.a2e.pending_windows(MAX_BULK_WINDOWS_PER_TICK if st.lead_s > 0.25 else MAX_WINDOWS_PER_TICK)
                for st in active]
        limits = [0] * len(active)
        self._rr = (self._rr + 1) % len(active)
        order = list(range(self._rr, len(active))) + list(range(self._rr))
        for i in order:  # one window each first, then the rest
            if total and want[i]:
                limits[i], total = 1, total - 1
        for i in order:
            extra = min(len(want[i]) - limits[i], total) if limits[i] else 0
            limits[i] += max(0, extra)
            total -= max(0, extra)
        return limits

    def _stale(self, st: StreamState, now: float) -> bool:
        """A live stream (not fed ahead of real time) whose oldest queued audio waited past the lag budget.
        The sidecar's own sources (mic, file) cannot be held back: past the quota they shed too."""
        if self.max_lag_s <= 0 or not st.pending:
            return False
        if st.owner is None and st.queued_s() > self.max_queued_s:
            return True
        if st.lead_s > 0.25:
            return False
        return now - st.pending[0][0] > self.max_lag_s

    def _answer_deferred(self, st: StreamState) -> None:
        """A push held back by the queued-audio quota is answered once its client's queue has room."""
        if st.deferred is not None and st.queued_s() <= self.max_queued_s / 2:
            envelope, req = st.deferred
            st.deferred = None
            self._reply(envelope, m.reply_ok(req, samples=st.samples_raw, t=st.samples_raw / st.sample_rate))

    def _take_audio(self, st: StreamState, now: float) -> None:
        """Queued audio -> resampler, VAD, A2E buffer. A live stream whose oldest audio is stale sheds it."""
        stale = self._stale(st, now)
        with st.lock:
            chunks = list(st.pending)
            st.pending.clear()
            st.pending_samples = 0
        if not chunks:
            return
        if stale:
            # drop everything older than the lag budget, keep the newest; time jumps, frames stay in step
            keep = [c for c in chunks if now - c[0] <= self.max_lag_s / 2] or chunks[-1:]
            drop = sum(len(x) for _, x in chunks[:len(chunks) - len(keep)])
            chunks = keep
            self._shed(st, drop)
        x = np.concatenate([x for _, x in chunks]) if len(chunks) > 1 else chunks[0][1]
        if st.resampler is not None:
            x = st.resampler.resample_chunk(x, last=False)
        self._feed16(st, x)

    def _feed16(self, st: StreamState, x: np.ndarray) -> None:
        st.samples_in += len(x)
        for name, t in st.vad.push(x):  # (VAD time counts from the stream's first sample, like t_base)
            self._publish_event(st.stream, name, t=t + st.audio_offset_ms / 1000.0, after=st)
        st.a2e.feed(x)

    def _shed(self, st: StreamState, n_raw: int) -> None:
        """n_raw queued samples (stream rate) dropped unprocessed, and whatever the A2E had not run yet:
        the A2E restarts after the gap (frames keep their seq, `t` jumps)."""
        a = st.a2e
        backlog = max(0, a._n_in - (_frame_k(a) * self.rt.frame_samples + a.la))  # fed, never to be run
        n_queued = int(round(n_raw * 16000 / st.sample_rate))
        st.samples_in += n_queued  # (the backlog is counted in already)
        st.vad.skip(n_queued)
        st.t_base = st.samples_in / 16000.0
        n16 = n_queued + backlog
        st.a2e = self._make_a2e(st.fps, st.lookahead_ms, st.alpha, st.history)
        st.dropped_s += n16 / 16000.0
        self.stats["dropped_s"] += n16 / 16000.0
        self._lag_wall = time.monotonic()
        log.warning("stream %s: the A2E is behind; dropped %.0f ms of stale audio", st.stream, 1000 * n16 / 16000)
        self._publish_event(st.stream, "lagging", t=st.t_base,
                            message=f"dropped {1000 * n16 / 16000:.0f} ms of stale audio (sidecar overloaded)",
                            after=st)

    def _publish_frames(self, st: StreamState, frames) -> None:
        """Post-process, clamp and schedule frames, each at its own time: the wall moment its audio
        moment plus the look-ahead arrived (never earlier than now, never before the stream's previous)."""
        now = time.monotonic()
        la_s = st.lookahead_ms / 1000.0
        for fr in frames:
            t_audio = st.t_base + float(fr.t)
            t = t_audio + st.audio_offset_ms / 1000.0
            w = np.asarray(fr.weights, np.float32)
            pose = None
            if st.post is not None:
                step = getattr(st.post, "step", st.post)
                w, pose = step(t, w)
                w = np.asarray(w, np.float32)
                if pose is not None:
                    pose = np.nan_to_num(np.asarray(pose, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            w = smooth(st.prev, w * st.gain_vec, st.smoothing)
            w = finite_frame(w, self.value_range)  # after smoothing: the 0..1 clamp holds on what leaves
            st.prev = w
            wall = time.time()
            with_names = st.seq == 0 or wall - st.names_wall >= 1.0
            if with_names:
                st.names_wall = wall
            msg = m.coeffs(st.stream, st.seq, t, wall, st.fps, self.layout, w,
                           names=self.names if with_names else None, pose=pose,
                           speech=st.vad.active_at(t_audio))
            due = now
            if self.pacing and st.anchor is not None and not st.closed:
                due = max(now, st.anchor + t_audio + la_s + self._pace_delay(st, now - (st.anchor + t_audio + la_s)))
            due = max(due, st.last_due)
            st.last_due = due
            self._schedule(due, "frame", (st, msg, t, w, pose))
            st.seq += 1

    @staticmethod
    def _pace_delay(st: StreamState, late: float) -> float:
        """How much later than its audio time + look-ahead a frame of this stream leaves: what its frames
        need anyway (audio arrives in chunks, then the model runs). A frame later than the delay raises it
        to its own lateness (at most MAX_PACE_DELAY_S, one 20 ms audio chunk); otherwise the delay creeps
        down by PACE_DECAY_S per frame. A delay that changes by microseconds keeps the frames evenly spaced
        (a quantile over recent frames moved by milliseconds as frames entered and left its window)."""
        st.pace = min(MAX_PACE_DELAY_S, late if late > st.pace else max(0.0, st.pace - PACE_DECAY_S))
        return st.pace

    def _publish_event(self, sid: str, name: str, t: float | None = None, message: str | None = None,
                       after: StreamState | None = None) -> None:
        msg = m.event(sid, name, time.time(), t=t, message=message)
        data = [f"event/{sid}".encode(), m.encode(msg)]
        if after is None and threading.current_thread() is self._loop_thread:
            self.pub.send_multipart(data)
        else:
            self._schedule(after.last_due if after is not None else 0.0, "pub", data)

    def _engine_close(self, st: StreamState, why: str, envelope, req) -> None:
        stopping = self._stop.is_set()
        if not stopping:  # at shutdown queued audio is dropped: the sidecar stops within its budget
            self._take_audio(st, time.monotonic())
        if st.deferred is not None:
            self._answer_deferred(st)
        if st.resampler is not None:
            tail = st.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                self._feed16(st, tail)
        # the rest of the A2E's audio, in batches (a backlog would take long one window at a time)
        while not stopping:
            wins = st.a2e.pending_windows(64, final=True)
            if not wins:
                break
            y = self.rt.run(np.stack([w for _, w in wins]), np.repeat(st.a2e._alpha, len(wins), 0),
                            np.repeat(st.a2e._hist, len(wins), 0))
            for (k, _), yk in zip(wins, y):
                st.a2e.supply(k, yk)
            self._publish_frames(st, st.a2e.emit())
        if stopping:
            st.a2e.reset()  # nothing left to flush: close at once
        self._publish_frames(st, st.a2e.flush())
        t = st.t_base + st.samples_in / 16000.0
        self._publish_event(st.stream, "stream_close", t=t, message=why, after=st)
        self._schedule(st.last_due, "status", None)
        if envelope is not None:
            self._reply(envelope, m.reply_ok(req, frames=st.seq), after=st)

    def status(self) -> dict:
        model = {"name": getattr(self.rt, "path", None).stem if getattr(self.rt, "path", None) else "a2e",
                 "space": self.layout, "sample_rate": 16000}
        return {"v": m.PROTOCOL, "type": "status", "wall": time.time(), "server": SERVER,
                "layouts": {self.layout: self.names},
                "streams": [st.info(self.layout) for st in list(self.streams.values())], "model": model}

    def _publish_status(self) -> None:
        self.pub.send_multipart([b"status", m.encode(self.status())])

    def limits(self) -> dict:
        return {"control_bytes": self.max_control_bytes, "push_bytes": self.max_push_bytes,
                "push_seconds": m.MAX_PUSH_SECONDS, "bake_bytes": self.max_bake_bytes,
                "bake_seconds": self.max_bake_s, "streams": self.max_streams,
                "streams_per_client": self.max_streams_per_client, "queued_audio_seconds": self.max_queued_s,
                "connections": self.max_connections}

    # --- control requests ---------------------------------------------------------------------

    def _on_request(self, frames) -> None:
        """frames: zmq.Frame objects (not copied). Size and envelope are checked before any decoding."""
        if len(frames) < 2:
            return  # a routing id with no payload: nothing to answer
        if len(frames) > m.MAX_ENVELOPE_FRAMES or any(len(f) > m.MAX_ENVELOPE_FRAME_BYTES for f in frames[:-1]):
            self.stats["errors"] += 1
            log.warning("dropped a request with a %d-frame envelope (%d bytes)", len(frames),
                        sum(len(f) for f in frames))
            return  # answering would echo the envelope: drop it unanswered
        envelope = [f.bytes for f in frames[:-1]]
        payload = frames[-1]
        conn = self._conn_of(frames)
        self.stats["requests"] += 1
        if self._refuse_request(conn, envelope, payload):
            return
        if len(payload) > self.max_push_bytes:  # only a bake may be this large: decode it off the loop
            if len(payload) > self.max_bake_bytes:
                return self._send_error(envelope, m.peek(payload.buffer), "too_large",
                                        f"message is {len(payload)} bytes, the limit is {self.max_bake_bytes}")
            return self._queue_bake(_Bake(envelope, conn, payload))
        req = None
        try:
            req = m.decode(payload.buffer, self.max_push_bytes)
            m.validate_request(req)
            op = req["op"]
            if op == "bake":
                return self._queue_bake(_Bake(envelope, conn, req))
            limit = self.max_push_bytes if op == "push_audio" else self.max_control_bytes
            if len(payload) > limit:
                raise m.ProtocolError("too_large", f"{op}: message is {len(payload)} bytes, the limit is {limit}")
            reply = getattr(self, "_op_" + op)(req, envelope, conn)
        except m.ProtocolError as exc:
            reply = self._error_reply(req, exc.code, exc.message)
        except ValueError as exc:  # argument values the runtime refused (identity dims, fps, ...)
            reply = self._error_reply(req, "bad_request", str(exc))
        except Exception as exc:
            log.error("internal error on %r:\n%s", req.get("op") if isinstance(req, dict) else None,
                      traceback.format_exc())
            reply = self._error_reply(req, "internal", f"{type(exc).__name__}: {m.excerpt(str(exc))}")
        if reply is not None:  # None: answered later (engine, bake)
            self._reply(envelope, reply)

    def _send_error(self, envelope, req, code, message, **extra) -> None:
        self._reply(envelope, self._error_reply(req, code, message, **extra))

    def _error_reply(self, req, code, message, **extra) -> dict:
        self.stats["errors"] += 1
        message = m.excerpt(message, 4 * m.EXCERPT)
        log.warning("request rejected: %s: %s", code, message)
        if code == "unsupported_version":
            extra["versions"] = list(m.VERSIONS)
        if code in ("busy", "quota"):
            self.stats["refused"] += 1
        # only echo op/id of a request that decoded as a map
        return m.reply_error(req if isinstance(req, dict) else None, code, message, **extra)

    def _stream_for(self, req: dict, conn, control: bool = False) -> StreamState:
        st = self.streams.get(req["stream"])
        if st is None:
            raise m.ProtocolError("unknown_stream", f"no stream {req['stream']!r}")
        if st.owner is not None and st.owner != conn:
            raise m.ProtocolError("unknown_stream", f"stream {req['stream']!r} belongs to another client")
        if st.owner is None and not control:
            raise m.ProtocolError("unknown_stream", f"stream {req['stream']!r} is the sidecar's own; open a stream to push audio")
        return st

    def _check_stream_fps(self, fps) -> None:
        if fps not in self.stream_fps:
            raise m.ProtocolError("bad_request", f"stream fps must be one of {list(self.stream_fps)}, got {fps:g}")

    def _engine(self, fn) -> None:
        """Run fn on the engine thread, in order with the audio (it owns the A2E state)."""
        self._cmds.put(fn)
        self._work.set()

    def _op_hello(self, req, envelope, conn):
        common = max(set(req["versions"]) & set(m.VERSIONS))
        return m.reply_ok(req, protocol=common, server=SERVER, layouts={self.layout: self.names},
                          model=self.status()["model"], streams=[s.info(self.layout) for s in self.streams.values()],
                          pub=self.pub_endpoint, sample_rate=16000, limits=self.limits())

    def _op_ping(self, req, envelope, conn):
        return m.reply_ok(req, wall=time.time())

    def _op_status(self, req, envelope, conn):
        st = self.status()
        del st["v"], st["type"]
        return m.reply_ok(req, **st, load=round(self._load, 3), engine=self.engine_costs(),
                          connections=self.connections())

    def engine_costs(self) -> dict:
        """The admission estimate (SPEC section 6): ms per model window of model time and of the Python work
        around it (engine and io loop), and the share of the engine thread the open streams need."""
        w, o, io = self._cost_window, self._cost_overhead, self._cost_io
        return {"window_ms": None if w is None else round(1000 * w, 3),
                "overhead_ms": None if o is None else round(1000 * o, 3),
                "io_ms": None if io is None else round(1000 * io, 3),
                "share": None if w is None else round(engine_share(len(self.streams), w, o, io), 3)}

    def overloaded(self) -> str | None:
        """Why a new stream would not get real-time service now, or None: the measured cost of all streams
        plus the new one past ADMIT_CAPACITY of the engine thread, the engine busy over 90 % of the time, or
        a stream that shed stale audio in the last 2 s."""
        why = admission_refusal(len(self.streams), self._cost_window, self._cost_overhead, self.admit_capacity,
                                io_s=self._cost_io or 0.0)
        if why:
            return why
        if self._load > 0.9:
            return f"the A2E is at capacity (engine busy {100 * self._load:.0f} % of the time)"
        if time.monotonic() - self._lag_wall < 2.0:
            return "the A2E is behind (a stream shed stale audio in the last 2 s)"
        return None

    def _op_stream_open(self, req, envelope, conn):
        sid = req.get("stream") or f"s-{uuid.uuid4().hex[:8]}"
        fps = req.get("fps", self.fps)
        self._check_stream_fps(fps)
        la = float(req.get("lookahead_ms", self.lookahead_ms))
        old = self.streams.get(sid)
        if old is not None:
            if old.owner is None:
                raise m.ProtocolError("bad_request", f"stream id {sid!r} is reserved for the sidecar's own source")
            if old.owner != conn:
                raise m.ProtocolError("busy", f"stream {sid!r} is open by another client")
            self._close_stream(old, "reopened")
        elif sid in SERVER_STREAMS:
            raise m.ProtocolError("bad_request", f"stream id {sid!r} is reserved for the sidecar's own source")
        mine = sum(1 for s in self.streams.values() if s.owner == conn)
        if mine >= self.max_streams_per_client:
            raise m.ProtocolError("quota", f"this client has {mine} streams open (limit {self.max_streams_per_client} "
                                  "per client)")
        n_push = sum(1 for s in self.streams.values() if s.source == "push")
        if n_push >= self.max_streams:
            raise m.ProtocolError("busy", f"{n_push} pushed streams are open (limit {self.max_streams})")
        why = self.overloaded() if n_push else None
        if why:
            raise m.ProtocolError("busy", f"new streams are refused: {why}; retry later")
        st = self._open_stream(sid, "push", conn, fps, la, int(req.get("sample_rate", 16000)))
        return m.reply_ok(req, stream=sid, fps=float(st.fps), lookahead_ms=st.lookahead_ms, layout=self.layout,
                          names=self.names)

    def _op_push_audio(self, req, envelope, conn):
        st = self._stream_for(req, conn)
        x = m.pcm_to_f32(req["pcm"], req["format"])
        if len(x) > m.MAX_PUSH_SECONDS * st.sample_rate:
            raise m.ProtocolError("too_large", f"push_audio: at most {m.MAX_PUSH_SECONDS:g} s per message "
                                  f"(got {len(x) / st.sample_rate:.2f} s); send smaller chunks at real-time pace")
        queued = sum(s.queued_s() for s in self.streams.values() if s.owner == conn)
        if queued + len(x) / st.sample_rate > self.max_queued_s:
            if st.deferred is not None or queued > self.max_queued_s:
                raise m.ProtocolError("quota", f"this client has {queued:.2f} s of audio queued (limit "
                                      f"{self.max_queued_s:g} s): push at real-time pace, wait for each reply")
            # flow control: take it, answer once the engine has made room (a client waiting for its
            # reply is slowed to the A2E's speed; one that does not wait gets `quota`)
            self._queue_audio(st, x)
            st.deferred = (envelope, req)
            return None
        self._queue_audio(st, x)
        return m.reply_ok(req, samples=st.samples_raw, t=st.samples_raw / st.sample_rate)

    def _op_stream_close(self, req, envelope, conn):
        st = self._stream_for(req, conn)
        self._close_stream(st, "closed by client", envelope, req)
        return None  # the engine replies after the last frame

    def _op_set_identity(self, req, envelope, conn):
        st = self._stream_for(req, conn, control=True)
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
        self.rt.check_identity(alpha)  # ValueError (wrong dims) -> bad_request, here, before the engine
        self.rt.check_history(history)

        def apply():
            st.a2e.set_identity(alpha, history)
            st.alpha, st.history = alpha, history
            self._reply(envelope, m.reply_ok(req, alpha_dims=n_id if alpha is not None else 0,
                                             history_frames=0 if history is None else len(history)))
        self._engine(apply)
        return None

    def _op_set_params(self, req, envelope, conn):
        st = self._stream_for(req, conn, control=True)
        fps = req.get("fps", st.fps)
        la = float(req.get("lookahead_ms", st.lookahead_ms))
        self._check_stream_fps(fps)
        new_a2e = self._make_a2e(fps, la, st.alpha, st.history) if (fps != st.fps or la != st.lookahead_ms) else None

        def apply():
            if new_a2e is not None:
                self._take_audio(st, time.monotonic())
                self._publish_frames(st, st.a2e.flush())
                # the new A2E stream counts from 0: keep `t` continuous across the change
                st.t_base = st.samples_in / 16000.0
                st.a2e, st.fps, st.lookahead_ms = new_a2e, fps, la
                if st.post is not None and self.postprocess is not None:
                    st.post = self.postprocess(st.stream, self.names, fps)
            if "smoothing" in req:
                st.smoothing = float(req["smoothing"])
            if "gains" in req:
                st.gains = {k: float(v) for k, v in req["gains"].items()}
                st.gain_vec = gain_vector(self.names, st.gains)
            if "audio_offset_ms" in req:
                st.audio_offset_ms = float(req["audio_offset_ms"])
            self._schedule(0.0, "status", None)
            self._reply(envelope, m.reply_ok(req, params=st.params()))
        self._engine(apply)
        return None

    def _op_set_emotion(self, req, envelope, conn):
        st = self._stream_for(req, conn, control=True)
        setter = getattr(st.post, "set_emotion", None)
        if setter is None:
            raise m.ProtocolError("not_supported", f"stream {st.stream!r} has no non-verbal layer (emotion overlay)")
        strength = float(req.get("strength", 1.0))

        def apply():
            try:
                setter(req["emotion"], strength)
            except ValueError as exc:  # an unknown emotion
                self._reply(envelope, self._error_reply(req, "bad_request", str(exc)))
                return
            self._reply(envelope, m.reply_ok(req, emotion=req["emotion"], strength=strength))
        self._engine(apply)
        return None

    # --- bakes: decoded, checked and run on worker threads, cancellable ------------------------

    def _queue_bake(self, job: _Bake) -> None:
        req = job.payload if isinstance(job.payload, dict) else m.peek(job.payload.buffer)
        if len(self._bakes) >= MAX_BAKES:  # running or about to run: no queue beyond the workers
            return self._send_error(job.envelope, req, "busy",
                                    f"{len(self._bakes)} bakes are running (limit {MAX_BAKES}); retry later")
        self._bakes.append(job)
        self._bake_q.put_nowait(job)

    def _bake_worker(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._bake_q.get(timeout=0.1)
            except queue.Empty:
                continue
            req = job.payload if isinstance(job.payload, dict) else m.peek(job.payload.buffer)
            try:
                if not isinstance(job.payload, dict):
                    req = m.decode(job.payload.buffer, self.max_bake_bytes)
                    m.validate_request(req)
                    if req["op"] != "bake":
                        raise m.ProtocolError("too_large", f"{req['op']}: message is {len(job.payload)} bytes, "
                                              f"the limit is {self.max_push_bytes}")
                job.payload = None  # the raw bytes can go
                reply = self._bake(req, job.cancel)
                self.stats["bakes"] += 1
            except _Cancelled:
                reply = None
            except m.ProtocolError as exc:
                reply = self._error_reply(req, exc.code, exc.message)
            except ValueError as exc:
                reply = self._error_reply(req, "bad_request", str(exc))
            except Exception as exc:
                log.error("bake failed:\n%s", traceback.format_exc())
                reply = self._error_reply(req, "internal", f"{type(exc).__name__}: {m.excerpt(str(exc))}")
            finally:
                if job in self._bakes:
                    self._bakes.remove(job)
            if reply is not None and not self._stop.is_set():
                self._schedule(0.0, "reply", list(job.envelope) + [m.encode(reply)])
                try:  # the bell is the engine's socket: use a PUSH of this thread's own
                    sock = getattr(self._tls, "push", None)
                    if sock is None:
                        sock = self._tls.push = self.ctx.socket(zmq.PUSH)
                        sock.setsockopt(zmq.LINGER, 0)
                        sock.setsockopt(zmq.SNDHWM, 8)
                        sock.connect(self.internal)
                    sock.send(b"wake", zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass

    def _bake_audio(self, req) -> np.ndarray:
        """The bake's audio as 16 kHz float32, its duration checked from the header before decoding."""
        from realtalk_bridge.audio import resample, to_mono_f32

        data = req["audio"]  # bytes already (msgpack bin): no second copy
        if req["format"] == "file":
            import soundfile as sf

            try:
                info = sf.info(io.BytesIO(data))
            except Exception as exc:
                raise m.ProtocolError("bad_request", f"cannot read the audio file header: {m.excerpt(str(exc))}")
            seconds = info.frames / info.samplerate if info.samplerate > 0 else math.inf
            sr = int(info.samplerate)
            if not 1000 <= sr <= 384000:
                raise m.ProtocolError("bad_request", f"the file says {sr} Hz; refused (1000..384000 Hz)")
        else:
            width = 4 if req["format"] == "f32" else 2
            sr = int(req["sample_rate"])
            seconds = len(data) / width / sr
        if seconds > self.max_bake_s:
            raise m.ProtocolError("too_large", f"bake: the audio lasts {seconds:.0f} s, the limit is "
                                  f"{self.max_bake_s:.0f} s")
        if seconds <= 0:
            raise m.ProtocolError("bad_request", "bake: the audio holds no samples")
        if req["format"] == "file":
            import soundfile as sf

            try:
                x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
            except Exception as exc:
                raise m.ProtocolError("bad_request", f"cannot decode the audio file: {m.excerpt(str(exc))}")
            x = to_mono_f32(x)
        else:
            x = m.pcm_to_f32(data, req["format"])
        if not np.all(np.isfinite(x)):
            raise m.ProtocolError("bad_request", "bake: the audio holds NaN or infinite samples")
        np.clip(x, -1.0, 1.0, out=x)  # a float file may hold huge samples; audio is -1..1
        return resample(x, sr) if sr != 16000 else x

    def _bake(self, req, cancel: threading.Event) -> dict:
        """The same windows as infer_offline (batches of 32 from window 0, so the same numbers), run in
        steps that check `cancel` (client gone, sidecar stopping)."""
        from realtalk_bridge.bake import BASE_FPS, resample_track
        from realtalk_bridge.runtime.a2e import OUTPUT_FPS, step_streams

        fps = float(req.get("fps", 30.0))
        la = float(req.get("lookahead_ms", self.lookahead_ms))
        audio = self._bake_audio(req)
        if cancel.is_set():
            raise _Cancelled()
        direct = fps.is_integer() and int(fps) in OUTPUT_FPS
        s = self._make_a2e(int(fps) if direct else BASE_FPS, la)
        frames = []
        pos, step = 0, 16000  # audio goes in 1 s at a time: the stream's buffer stays small
        while True:
            if cancel.is_set() or self._stop.is_set():
                raise _Cancelled()
            wins = s.pending_windows(32)
            while len(wins) < 32 and pos < len(audio):  # full batches of 32 from window 0, as infer_offline
                s.feed(audio[pos:pos + step])
                pos += step
                wins = s.pending_windows(32)
            if pos >= len(audio):
                wins = s.pending_windows(32, final=True)  # what follows the audio is silence (as at flush)
            if not wins:
                break
            y = self.rt.run(np.stack([w for _, w in wins]), np.repeat(s._alpha, len(wins), 0),
                            np.repeat(s._hist, len(wins), 0))
            for (k, _), yk in zip(wins, y):
                s.supply(k, yk)
            frames.extend(s.emit())  # frees the windows already read
        frames.extend(s.flush())
        w = np.stack([f.weights for f in frames]) if frames else np.zeros((0, len(self.names)), np.float32)
        if not direct:
            n_out = math.ceil(len(audio) * fps / 16000)
            w = resample_track(w, BASE_FPS, fps, n_out)
        w = np.ascontiguousarray(w, np.float32)
        if not np.all(np.isfinite(w)):
            raise m.ProtocolError("internal", "bake: the model produced non-finite values; nothing was returned")
        return m.reply_ok(req, fps=fps, layout=self.layout, names=self.names, n_frames=int(len(w)),
                          t0=0.0, w=m.pack_f32(w))


def _check_descriptors(max_connections: int) -> None:
    """Warn when the process may run out of descriptors before the connection limit holds them back."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return  # (Windows: no such limit to read)
    need = 2 * (max_connections + MAX_REFUSING) + 64  # two sockets, and the sidecar's own files and sockets
    if soft != resource.RLIM_INFINITY and need > soft:
        log.warning("--max-connections %d allows about %d descriptors, but this process may open %d (ulimit -n): "
                    "lower --max-connections or raise ulimit -n", max_connections, need, soft)


def _shutdown_fd(fd: int) -> None:
    """End the TCP (or ipc) connection on descriptor fd without closing fd itself: shutdown(2) acts on the
    connection, which the duplicate shares; ZeroMQ then sees it end and closes its own descriptor."""
    try:
        dup = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, ValueError):
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone
    finally:
        dup.close()


class _AllowList:
    """ZAP credentials provider: a client may connect when its CURVE public key (z85) is listed."""

    def __init__(self, keys):
        self.keys = {k.encode() if isinstance(k, str) else bytes(k) for k in keys}

    def callback(self, domain, key) -> bool:
        from zmq.utils import z85

        ok = z85.encode(key) in self.keys or key in self.keys
        if not ok:
            log.warning("CURVE: refused a client key that is not on the allow-list")
        return ok
