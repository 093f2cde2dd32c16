"""A tiny protocol-v1 client: SUB for frames, DEALER for requests. pyzmq + msgpack only.

Everything runs on the caller's thread (Blender's main thread, from a timer): pyzmq sockets are not
thread-safe and bpy data must not be touched from other threads, so `poll()` drains without blocking.
ZeroMQ reconnects TCP by itself when the sidecar restarts; we notice silence (no heartbeat), say so in
the status, send `hello` again and treat a `seq` that goes backwards as a new stream, not as loss.
"""
from __future__ import annotations

import ipaddress
import itertools
import sys
import time
import wave
from array import array
from collections import deque
from dataclasses import dataclass, field

import zmq

from . import protocol
from .protocol import Frame, ProtocolError

DEFAULT_STREAM = "tcp://127.0.0.1:47200"
DEFAULT_CONTROL = "tcp://127.0.0.1:47201"
COMMON_FPS = (25, 30, 50, 60)


class RequestError(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


def parse_endpoint(endpoint: str) -> tuple[str, str]:
    """'tcp://host:port' (or ipc://path) -> (scheme, host). ValueError with a readable message."""
    endpoint = endpoint.strip()
    if endpoint.startswith("ipc://") and len(endpoint) > 6:
        return "ipc", ""
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"endpoint {endpoint!r} must look like tcp://127.0.0.1:47200")
    hostport = endpoint[6:]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"endpoint {endpoint!r} needs a host and a port 1-65535")
    return "tcp", host.strip("[]")


def is_loopback(endpoint: str) -> bool:
    scheme, host = parse_endpoint(endpoint)
    if scheme == "ipc" or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: treat as remote


@dataclass
class Stats:
    state: str = "disconnected"      # disconnected / connecting / connected / lost
    server: str = ""
    frames: int = 0                  # frames received since connect
    dropped: int = 0                 # seq gaps
    restarts: int = 0                # seq went backwards: sidecar or stream restarted
    bad: int = 0                     # malformed messages dropped
    latency_ms: float = 0.0          # receive time - sender's `wall`, smoothed
    stream: str = ""
    last_error: str = ""
    _times: dict = field(default_factory=dict, repr=False)  # stream -> deque of recent frame times `t`
    _last_arrival: float = 0.0
    _now: float = 0.0

    @property
    def fps(self) -> float:
        """The stream's frame rate from the frames' own audio times `t` over the last 2 s of stream time, so
        a UI that drains frames slowly or in bursts reads the stream's rate, not its redraw rate.
        0 when no frame arrived for 3 s (longer than a slow UI's redraw, the time after which a sidecar is lost)."""
        ts = self._times.get(self.stream)
        if not ts or len(ts) < 2 or self._now - self._last_arrival > 3.0:
            return 0.0
        span = ts[-1] - ts[0]
        return (len(ts) - 1) / span if span > 0 else 0.0

    def _frame_time(self, stream: str, t: float, now: float) -> None:
        ts = self._times.get(stream)
        if ts is None or (ts and t <= ts[-1]):  # new stream, or `t` went back (restart): start over
            ts = self._times[stream] = deque(maxlen=1000)
            while len(self._times) > 16:  # streams seen long ago
                self._times.pop(next(iter(self._times)))
        ts.append(t)
        while t - ts[0] > 2.0:
            ts.popleft()
        self._last_arrival = now

    def lines(self) -> list[str]:
        """The status for a narrow panel: state, rate, latency and loss on separate lines."""
        if self.state != "connected":
            text = {"lost": "sidecar lost: reconnecting", "connecting": "waiting for the sidecar"}.get(self.state, self.state)
            return [text] + ([self.last_error] if self.last_error else [])
        # lines of at most ~24 characters: what fits the default sidebar width without '...'
        return [f"connected: {self.stream or 'no frames yet'}",
                f"{self.fps:.1f} fps, {self.latency_ms:.0f} ms late",
                f"dropped {self.dropped}" + (f", restarts {self.restarts}" if self.restarts else "")]

    def line(self) -> str:
        return " | ".join(self.lines())


class Client:
    def __init__(self, stream_endpoint: str = DEFAULT_STREAM, control_endpoint: str = DEFAULT_CONTROL,
                 stream: str = "", name: str = "realtalk-blender", stale_after: float = 3.0):
        parse_endpoint(stream_endpoint)
        parse_endpoint(control_endpoint)
        if stream and not all(c.isalnum() or c in "_.-" for c in stream):
            raise ValueError(f"stream id {stream!r} may hold only letters, digits, '_', '.', '-'")
        self.stream_endpoint, self.control_endpoint = stream_endpoint, control_endpoint
        self.stream_filter, self.name, self.stale_after = stream, name, stale_after
        self.stats = Stats()
        self.layouts: dict[str, tuple[str, ...]] = {}
        self.sources: dict[str, str] = {}  # stream id -> its source (mic / file / push), from hello and status
        self.limits: dict[str, float] = dict(protocol.DEFAULT_LIMITS)  # the sidecar's, from its hello reply
        self.replies: dict = {}
        self._ids = itertools.count(1)
        self._ctx = self._sub = self._dealer = None
        self._last_seq: dict[str, int] = {}
        self._last_seen = 0.0
        self._hello_id = None
        self._hello_sent = 0.0
        self.sub_joined = False  # the SUB socket has received something: later frames will not be missed

    # -- sockets -----------------------------------------------------------------------------------
    def open(self) -> None:
        if self._ctx is not None:
            return
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.RCVHWM, 1000)
        self._sub.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE)
        self._sub.setsockopt(zmq.RECONNECT_IVL, 200)
        self._sub.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self._sub.subscribe(b"coeffs/" + self.stream_filter.encode())
        self._sub.subscribe(b"status")
        self._sub.connect(self.stream_endpoint)
        self._new_dealer()
        self.stats = Stats(state="connecting")
        self.sub_joined = False
        self._last_seen = time.time()

    def _new_dealer(self) -> None:
        if self._dealer is not None:
            self._dealer.close(0)
        self._dealer = self._ctx.socket(zmq.DEALER)
        self._dealer.setsockopt(zmq.LINGER, 0)
        self._dealer.setsockopt(zmq.IMMEDIATE, 1)  # no queueing requests for a sidecar that is not there
        self._dealer.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE)
        self._dealer.setsockopt(zmq.RECONNECT_IVL, 200)
        self._dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self._dealer.connect(self.control_endpoint)
        self._hello_id = None

    def close(self) -> None:
        for s in (self._sub, self._dealer):
            if s is not None:
                s.close(0)
        if self._ctx is not None:
            self._ctx.term()
        self._ctx = self._sub = self._dealer = None
        self.stats.state = "disconnected"

    @property
    def is_open(self) -> bool:
        return self._ctx is not None

    # -- requests ----------------------------------------------------------------------------------
    def send(self, op: str, **args) -> int | None:
        """Send a request without waiting; its reply lands in `self.replies[id]` during `poll()`.
        None when no sidecar is connected (the request is not queued)."""
        rid = next(self._ids)
        msg = {"v": protocol.VERSION, "op": op, "id": rid, **args}
        try:
            self._dealer.send_multipart([b"", protocol.encode(msg)], flags=zmq.NOBLOCK)
        except zmq.Again:
            return None
        return rid

    def request(self, op: str, timeout: float = 5.0, **args) -> dict:
        """Blocking request. Raises RequestError (`ok: false`, timeout, no sidecar)."""
        deadline = time.monotonic() + timeout
        rid = None
        while rid is None:
            rid = self.send(op, **args)
            if rid is None:
                if time.monotonic() > deadline:
                    raise RequestError("unreachable", f"no sidecar at {self.control_endpoint}")
                time.sleep(0.02)
        while rid not in self.replies:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestError("timeout", f"no reply to {op!r} within {timeout:g} s")
            if self._dealer.poll(int(min(left, 0.1) * 1000)):
                self._drain_replies()
        reply = self.replies.pop(rid)
        err = protocol.reply_error(reply)
        if err:
            raise RequestError(*err)
        return reply

    def _drain_replies(self) -> None:
        while True:
            try:
                parts = self._dealer.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = protocol.decode(parts[-1])
            except ProtocolError as e:
                self.stats.bad += 1
                self.stats.last_error = str(e)
                continue
            self._last_seen = time.time()
            rid = reply.get("id")
            if rid == self._hello_id and rid is not None:
                self._on_hello(reply)
            elif isinstance(rid, (int, str)):
                self.replies[rid] = reply
                while len(self.replies) > 256:  # replies nobody waits for must not pile up
                    self.replies.pop(next(iter(self.replies)))

    def _on_hello(self, reply: dict) -> None:
        self._hello_id = None
        err = protocol.reply_error(reply)
        if err:
            self.stats.last_error = f"hello refused: {err[0]}: {err[1]}"
            return
        try:
            self.layouts.update(protocol.parse_layouts(reply))
        except ProtocolError as e:
            self.stats.last_error = str(e)
        self.stats.server = str(reply.get("server", ""))
        self.limits = protocol.parse_limits(reply)
        self._note_streams(reply)
        self.stats.state = "connected"
        self.stats.last_error = ""

    def _note_streams(self, msg: dict) -> None:
        """Remember each open stream's source; entries that are not well-formed are skipped."""
        streams = msg.get("streams")
        if not isinstance(streams, list):
            return
        for st in streams[:64]:
            if isinstance(st, dict) and isinstance(st.get("stream"), str) and isinstance(st.get("source"), str):
                self.sources[st["stream"][:64]] = st["source"][:16]
        while len(self.sources) > 64:
            self.sources.pop(next(iter(self.sources)))

    def take_reply(self, rid):
        """The reply to request `rid` if it has arrived (non-blocking), else None."""
        self._drain_replies()
        return self.replies.pop(rid, None)

    # -- the tick ----------------------------------------------------------------------------------
    def poll(self, now: float | None = None) -> list[Frame]:
        """Drain everything waiting, without blocking. Returns the coefficient frames in arrival order."""
        if self._ctx is None:
            return []
        now = time.time() if now is None else now
        self.stats._now = now
        self._drain_replies()
        frames: list[Frame] = []
        while True:
            try:
                parts = self._sub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(parts) != 2:
                self.stats.bad += 1
                continue
            topic = parts[0].decode("utf-8", "replace")
            try:
                msg = protocol.decode(parts[1])
                if msg.get("v") != protocol.VERSION:
                    continue  # SPEC: ignore stream messages of versions we do not speak
                if msg.get("type") == "status":
                    self.layouts.update(protocol.parse_layouts(msg))
                    self.stats.server = str(msg.get("server", self.stats.server))
                    self._note_streams(msg)
                elif msg.get("type") == "coeffs":
                    f = protocol.parse_coeffs(msg, self.layouts)
                    if self.stream_filter and f.stream != self.stream_filter:
                        continue
                    self._count(f, now)
                    frames.append(f)
            except ProtocolError as e:
                self.stats.bad += 1
                self.stats.last_error = f"{topic}: {e}"
                continue
            self._last_seen = now
            self.sub_joined = True
            if self.stats.state != "connected":
                self.stats.state = "connected" if self._hello_id is None else self.stats.state
        if now - self._last_seen > self.stale_after and self.stats.state == "connected":
            self.stats.state = "lost"  # sidecar gone: ZeroMQ keeps retrying the TCP connection
        if self.stats.state != "connected" and self.stats.state != "disconnected" and now - self._hello_sent > 1.0:
            self._hello_id = self.send("hello", client=self.name, versions=[protocol.VERSION])
            # not connected yet (IMMEDIATE refuses to queue): try again soon rather than in a second
            self._hello_sent = now if self._hello_id is not None else now - 0.9
        return frames

    def _count(self, f: Frame, now: float) -> None:
        s = self.stats
        last = self._last_seq.get(f.stream)
        if last is not None:
            if f.seq > last + 1:
                s.dropped += f.seq - last - 1
            elif f.seq <= last:
                s.restarts += 1
        self._last_seq[f.stream] = f.seq
        s.frames += 1
        s.stream = f.stream
        s._frame_time(f.stream, f.t, now)
        lat = max(0.0, (now - f.wall) * 1000.0)
        s.latency_ms = lat if s.frames == 1 else 0.9 * s.latency_ms + 0.1 * lat


BAKE_OVERHEAD = 1024  # bytes of a bake request around its audio (the sidecar's limit is on the whole message)


def check_bake_size(n_bytes: int, limits: dict) -> None:
    """Raise ValueError before upload when `n_bytes` of audio would not fit the sidecar's bake limit: sent
    anyway, ZeroMQ would drop the connection unanswered (SPEC section 6)."""
    limit = int(limits.get("bake_bytes", protocol.DEFAULT_LIMITS["bake_bytes"]))
    if n_bytes + BAKE_OVERHEAD > limit:
        raise ValueError(f"the audio file is {n_bytes / 2**20:.1f} MiB; this sidecar bakes uploads up to "
                         f"{limit / 2**20:.1f} MiB (serve --max-bake-mb): use a compressed file (FLAC/OGG) "
                         "or split the audio")


def push_chunk_samples(limits: dict, sample_rate: int, bytes_per_sample: int = 2) -> int:
    """The most samples one `push_audio` may carry: its seconds and bytes limits (SPEC section 6)."""
    by_time = int(limits.get("push_seconds", protocol.DEFAULT_LIMITS["push_seconds"]) * sample_rate)
    by_size = (int(limits.get("push_bytes", protocol.DEFAULT_LIMITS["push_bytes"])) - 256) // bytes_per_sample
    return max(1, min(by_time, by_size))


def read_wav_s16(path: str) -> tuple[bytes, int, float]:
    """A PCM WAV -> (mono int16 little-endian bytes, sample rate, duration s). Standard library only;
    other formats go through `bake` as file bytes, which the sidecar decodes."""
    try:
        with wave.open(path, "rb") as w:
            ch, width, sr, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{path}: not a PCM WAV file ({e})") from None
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit WAV; live push needs 16-bit PCM")
    a = array("h")
    a.frombytes(raw[: len(raw) // 2 * 2])
    if ch > 1:
        a = array("h", (sum(a[i:i + ch]) // ch for i in range(0, len(a) - ch + 1, ch)))
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes(), sr, len(a) / sr


class FilePusher:
    """Streams a WAV file to the sidecar in real time (`stream_open` + `push_audio`): a live preview and
    record source whose audio we have, so a take gets its sound strip."""

    REPLY_WAIT = 5.0  # s; a push unanswered this long (a sidecar restart lost it) no longer holds the next one

    def __init__(self, client: Client, path: str, stream: str = "blender", fps: float = 30.0, lead: float = 0.1,
                 timeout: float = 2.0):
        self.client, self.path, self.lead = client, path, lead
        self.pcm, self.sample_rate, self.duration = read_wav_s16(path)
        try:  # called from a button on Blender's main thread: no sidecar must not freeze it for long
            reply = client.request("stream_open", timeout=timeout, stream=stream, fps=fps, sample_rate=self.sample_rate)
        except RequestError as e:
            # SPEC allows 1..120 fps; a sidecar may offer only the usual rates: take the nearest, resample later
            if e.code != "bad_request" or fps in COMMON_FPS:
                raise
            fps = min(COMMON_FPS, key=lambda f: abs(f - fps))
            reply = client.request("stream_open", timeout=timeout, stream=stream, fps=fps, sample_rate=self.sample_rate)
        self.stream = str(reply.get("stream", stream))
        self.sent = 0  # samples
        self.t_start = None
        self.errors: list[str] = []
        self.pending: list[int] = []
        self.received = 0
        self._in_flight = None  # (request id, time sent) of the push whose reply we wait for

    @property
    def done(self) -> bool:
        return self.sent * 2 >= len(self.pcm)

    def pump(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.t_start is None:
            if not self.client.sub_joined:
                return  # PUB/SUB slow joiner: wait for the first heartbeat so the take starts at t = 0
            self.t_start = now
        self._check_replies()
        if self._in_flight is not None:
            # one push at a time: the sidecar slows a client that runs ahead by holding its reply back
            # (queued-audio quota), and answers a second push sent meanwhile with `quota` (SPEC section 6)
            rid, t_sent = self._in_flight
            if rid in self.pending and now - t_sent < self.REPLY_WAIT:
                return
            if rid in self.pending:
                self.pending.remove(rid)
                self.errors.append(f"push_audio: no reply within {self.REPLY_WAIT:g} s")
            self._in_flight = None
        due = min(len(self.pcm) // 2, int((now - self.t_start + self.lead) * self.sample_rate))
        if due > self.sent:
            # after a UI stall the backlog can pass what one message may carry: the rest goes next pump
            due = min(due, self.sent + push_chunk_samples(self.client.limits, self.sample_rate))
            chunk = self.pcm[2 * self.sent: 2 * due]
            rid = self.client.send("push_audio", stream=self.stream, pcm=chunk, format="s16")
            if rid is None:
                self.errors.append("sidecar unreachable")
                return
            self.pending.append(rid)
            self._in_flight = (rid, now)
            self.sent = due

    def _check_replies(self) -> None:
        """Errors of earlier pushes (e.g. `unknown_stream` after a sidecar restart) become readable messages."""
        self.client._drain_replies()
        keep = []
        for rid in self.pending:
            reply = self.client.replies.pop(rid, None)
            if reply is None:
                keep.append(rid)
                continue
            err = protocol.reply_error(reply)
            if err:
                self.errors.append(f"push_audio: {err[0]}: {err[1]}")
            elif isinstance(reply.get("samples"), int):
                self.received = max(self.received, reply["samples"])  # the sidecar's count of samples taken
        self.pending = keep[-64:]

    def close(self) -> None:
        try:
            self.client.request("stream_close", stream=self.stream, timeout=2.0)
        except RequestError:
            pass
