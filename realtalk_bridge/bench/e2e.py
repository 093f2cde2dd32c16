"""`realtalk-bridge bench e2e --out FILE.json`: audio-in to frame-out latency of a real sidecar.

Starts `realtalk-bridge serve` as a subprocess, pushes a speech file over the control socket at
real-time speed (like a microphone would deliver it) and receives the frames on a SUB socket.
Latency of a frame = the wall time it was received - the wall time its audio moment was "spoken"
(push start + t). It therefore includes the look-ahead, chunking, inference and transport.

`--soak`: 8 pushing clients and 16 subscribers for 60 s; every subscriber reads continuously, so
`frames_lost` must be 0. Writes the JSON and a latency histogram PNG beside it.

Frame pacing: `interval_jitter_ms_p95` is |inter-frame interval - 1/fps| per stream (p95), from the
sidecar's send time (`wall`); `recv_interval_jitter_ms_p95` the same at the subscriber. Target 2 ms.

`--streams 1,4,16,32,64`: for each N a fresh sidecar, N streams asking to open one after the other
(`--ramp-ms` apart), each admitted one pushed in real time with one SUB socket per stream: p50/p95 latency
and frames lost of the admitted (kept) streams (seq gaps and frames never made because stale audio was shed),
`lagging` events, admitted / refused opens with their reasons, sidecar CPU; `kept_meet_target` per N (the
kept streams met p95 <= 110 ms with 0 lost); `max_streams_realtime` is the largest N with p95 <= 110 ms,
0 lost and none refused; the PNG plots p95 against N with kept/N. `--cpu-load K` runs K busy processes beside the
sidecar (saturation and past it). `--pub/--ctl` bench a sidecar that is already running.
"""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_AUDIO = ROOT / "examples" / "speech" / "hello.wav"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process (Linux /proc; None elsewhere)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class External:
    """A sidecar already running at --pub/--ctl (benched as it is; its CPU and RSS are not measured)."""

    def __init__(self, pub, ctl):
        self.pub, self.ctl, self.proc, self.rss_peak = pub, ctl, None, 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class Sidecar:
    """`python -m realtalk_bridge serve` on free loopback ports, for the duration of a `with`."""

    def __init__(self, model, fps, lookahead_ms, extra=()):
        self.pub = f"tcp://127.0.0.1:{_free_port()}"
        self.ctl = f"tcp://127.0.0.1:{_free_port()}"
        cmd = [sys.executable, "-m", "realtalk_bridge", "serve", "--no-mic", "--pub", self.pub, "--ctl", self.ctl,
               "--fps", str(fps), "--lookahead-ms", str(lookahead_ms), "--idle-timeout", "30", "--log-level", "error"]
        if model:
            cmd += ["--model", str(model)]
        self.proc = subprocess.Popen(cmd + list(extra), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(60) or not self.proc.stdout.readline():
            self.proc.kill()
            raise RuntimeError(f"the sidecar did not start: {self.proc.stderr.read()}")
        self.rss_peak = 0.0
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._sample_rss, daemon=True)
        self._watch.start()

    def _sample_rss(self):
        while not self._stop.wait(0.25):
            r = rss_mb(self.proc.pid)
            if r:
                self.rss_peak = max(self.rss_peak, r)

    def close(self):
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pid(sc):
    return sc.proc.pid if sc.proc is not None else None


def jitter_ms(rows, fps) -> tuple[np.ndarray, np.ndarray]:
    """|inter-frame interval - 1/fps| in ms per stream, consecutive seqs only: (by send `wall`, by receipt)."""
    by: dict[str, list] = {}
    for stream, seq, wall, recv in rows:
        by.setdefault(stream, []).append((seq, wall, recv))
    sent, got = [], []
    for rs in by.values():
        rs.sort()
        a = np.array(rs, np.float64)
        if len(a) < 3:
            continue
        ok = np.diff(a[:, 0]) == 1
        sent.append(np.abs(np.diff(a[:, 1])[ok] - 1.0 / fps) * 1000)
        got.append(np.abs(np.diff(a[:, 2])[ok] - 1.0 / fps) * 1000)
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    return cat(sent), cat(got)


def _p(x, q):
    return round(float(np.percentile(x, q)), 2) if len(x) else None


def push_realtime(client, stream, audio, chunk, start, stop=None, loop_until=None, late=None) -> int:
    """Push `audio` in chunks paced by the audio clock from wall time `start`; returns samples sent.
    `late` (a list) collects how many ms after its due time each chunk actually left."""
    sent = 0
    while True:
        for a in range(0, len(audio), chunk):
            part = audio[a:a + chunk]
            due = start + (sent + len(part)) / 16000.0
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            if late is not None:
                late.append(1000.0 * (time.time() - due))
            client.push_audio(stream, part)
            sent += len(part)
            if stop is not None and stop.is_set():
                return sent
        if loop_until is None or time.time() >= loop_until:
            return sent


class Collector(threading.Thread):
    """A subscriber that reads continuously and keeps (stream, seq, t, recv_wall) of every frame."""

    def __init__(self, pub, layouts, streams=None):
        super().__init__(daemon=True)
        from realtalk_bridge.client import Subscriber

        self.sub = Subscriber(pub, streams=streams, layouts=layouts)
        self.rows: list[tuple[str, int, float, float]] = []
        self.walls: list[tuple[str, int, float, float]] = []  # (stream, seq, wall, recv): frame pacing
        self.sent: list[float] = []  # the sidecar's `wall` of each frame, to split latency into send / delivery
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            f = self.sub.recv(timeout=0.1)
            if f is not None:
                self.rows.append((f.stream, f.seq, f.t, f.recv_wall))
                self.sent.append(f.wall)
                self.walls.append((f.stream, f.seq, f.wall, f.recv_wall))
        self.sub.close()


def _latencies(rows, starts, live_until) -> np.ndarray:
    """ms from a frame's audio moment to its arrival. Frames whose window reached past the pushed audio
    came from the flush at stream_close (silence after the end), not from live audio: left out."""
    return np.array([1000.0 * (recv - (starts[s] + t)) for s, _, t, recv in rows
                     if s in starts and t <= live_until[s]], dtype=np.float64)


def _lost(rows, expected: dict[str, int]) -> int:
    """Frames a subscriber should have seen (seq 0..n-1 per stream, from its first received one) but did not."""
    lost = 0
    for s, n in expected.items():
        seqs = sorted({seq for st, seq, _, _ in rows if st == s})
        if not seqs:
            lost += n
            continue
        lost += (n - seqs[0]) - len(seqs)  # everything after the join point must arrive
    return lost


def _model_id(model) -> dict:
    """Name and content hash of the model benched (paths differ between machines; the hash does not)."""
    import hashlib

    from realtalk_bridge.runtime.a2e import DEFAULT_MODEL

    path = Path(model) if model else DEFAULT_MODEL
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        digest = None
    return {"model": path.name, "model_sha256": digest}


def run_bench(model, audio_path, fps, lookahead_ms, chunk_ms, soak=False, duration=60.0, clients=8,
              subscribers=16, endpoints=None) -> dict:
    from realtalk_bridge.audio import load_audio
    from realtalk_bridge.client import Client

    audio = load_audio(audio_path)
    chunk = int(16000 * chunk_ms / 1000)
    n_push = clients if soak else 1
    n_sub = subscribers if soak else 1
    extra = ("--max-connections", str(max(64, n_push + n_sub + 8)))  # (`--subscribers 100`: all connect)
    with (External(*endpoints) if endpoints else Sidecar(model, fps, lookahead_ms, extra)) as sc:
        with Client(sc.ctl, timeout=10) as c:
            info = c.hello()
        collectors = [Collector(sc.pub, info["layouts"]) for _ in range(n_sub)]
        for col in collectors:
            col.start()
        time.sleep(0.5)  # PUB/SUB slow joiner
        starts: dict[str, float] = {}
        expected: dict[str, int] = {}
        live_until: dict[str, float] = {}
        late: list[float] = []
        errors: list[str] = []

        def pusher(i):
            stream = f"bench-{i}"
            try:
                with Client(sc.ctl, timeout=10) as pc:
                    pc.stream_open(stream, fps=fps, lookahead_ms=lookahead_ms)
                    start = time.time() + 0.05
                    starts[stream] = start
                    sent = push_realtime(pc, stream, audio, chunk, start,
                                         loop_until=(start + duration) if soak else None, late=late)
                    live_until[stream] = sent / 16000.0 - lookahead_ms / 1000.0
                    expected[stream] = pc.stream_close(stream)["frames"]
            except Exception as exc:  # reported in the JSON, not swallowed
                errors.append(f"{stream}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=pusher, args=(i,)) for i in range(n_push)]
        cpu0 = cpu_seconds(_pid(sc))
        t0 = time.time()
        for th in threads:
            th.start()
        if soak:
            from rich.progress import Progress

            with Progress(transient=True) as prog:
                task = prog.add_task("soak", total=duration)
                while any(th.is_alive() for th in threads):
                    prog.update(task, completed=min(duration, time.time() - t0))
                    time.sleep(0.5)
        for th in threads:
            th.join()
        wall = time.time() - t0
        cpu1 = cpu_seconds(_pid(sc))
        time.sleep(0.5)  # let the last frames arrive
        for col in collectors:
            col.stop.set()
        for col in collectors:
            col.join(5)
        rss = sc.rss_peak or rss_mb(_pid(sc))
    lat = np.concatenate([_latencies(col.rows, starts, live_until) for col in collectors])
    # the same measured at the sidecar's send time (frame `wall`): what the sidecar itself adds
    sent_rows = [(s, q, t, w) for col in collectors for (s, q, t, _), w in zip(col.rows, col.sent)]
    lat_sent = _latencies(sent_rows, starts, live_until)
    lost = sum(_lost(col.rows, expected) for col in collectors)
    received = sum(len(col.rows) for col in collectors)
    jit_sent, jit_recv = jitter_ms([r for col in collectors for r in col.walls], fps)
    target = lookahead_ms + 30.0
    return {
        "mode": "soak" if soak else "single", **_model_id(model), "audio": Path(audio_path).name,
        "fps": fps, "lookahead_ms": lookahead_ms, "chunk_ms": chunk_ms, "clients": n_push, "subscribers": n_sub,
        "duration_s": round(wall, 2), "frames_expected": int(sum(expected.values()) * n_sub),
        "frames_received": int(received), "frames_lost": int(lost),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 2) if lat.size else None,
        "latency_ms_max": round(float(lat.max()), 2) if lat.size else None,
        "send_latency_ms_p50": round(float(np.percentile(lat_sent, 50)), 2) if lat_sent.size else None,
        "send_latency_ms_p95": round(float(np.percentile(lat_sent, 95)), 2) if lat_sent.size else None,
        "push_late_ms_p95": round(float(np.percentile(late, 95)), 2) if late else None,
        # frame pacing: |inter-frame interval - 1/fps|, by the sidecar's send time and by receipt
        "interval_jitter_ms_p95": _p(jit_sent, 95), "recv_interval_jitter_ms_p95": _p(jit_recv, 95),
        "pacing_target_ms": 2.0,
        "target_ms": target, "meets_target": bool(lat.size and np.percentile(lat, 95) <= target),
        "rss_mb": round(rss, 1) if rss else None,
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,  # others' load skews latency
        "sidecar_cpu_percent": round(100 * (cpu1 - cpu0) / wall, 1) if cpu0 is not None and cpu1 is not None else None, "cpus": os.cpu_count(), "errors": errors,
        "_latencies": lat,
    }


# --- `--streams N,...`: many pushed streams, one subscriber each ---------------------------------------

class _Burner:
    """`--cpu-load K`: K busy processes beside the sidecar (saturation and past it)."""

    def __init__(self, k):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()


def _refusal_kind(message: str) -> str:
    """A short key for why stream_open was refused (the JSON counts them)."""
    for key, words in (("cost", "would need"), ("engine_busy", "busy "), ("shedding", "shed"),
                       ("max_streams", "pushed streams are open"), ("connections", "connections open")):
        if words in message:
            return key
    return "other"


def _streams_round(sc, audio, n, fps, lookahead_ms, chunk, duration, ramp_s=0.15) -> dict:
    """n streams pushed in real time from one thread (async DEALERs, so the bench itself stays cheap),
    n SUB sockets (one per stream) read by one thread. Stream i asks to open `ramp_s` after stream i-1 (as
    clients arrive, so the sidecar's admission sees the cost of the streams it already serves); each admitted
    stream then pushes `duration` s of audio from its own start. Latency and losses are of the admitted
    (kept) streams; refused opens are counted with their reason."""
    import zmq

    from realtalk_bridge.sidecar import messages as m

    ctx = zmq.Context.instance()
    ids = [f"bench-{i}" for i in range(n)]
    dealers, subs = [], []
    for sid in ids:
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(sc.ctl)
        dealers.append(d)
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 10000)
        s.connect(sc.pub)
        s.setsockopt(zmq.SUBSCRIBE, f"coeffs/{sid}".encode())
        s.setsockopt(zmq.SUBSCRIBE, f"event/{sid}".encode())
        subs.append(s)

    def call(d, **req):
        d.send_multipart([b"", m.encode({"v": 1, "id": 0, **req})])
        if not d.poll(10000):
            raise RuntimeError(f"no reply to {req['op']}")
        return m.decode(d.recv_multipart()[-1])

    time.sleep(0.5)  # slow joiner
    rows: list[tuple[str, int, float, float, float]] = []  # stream, seq, t, wall, recv
    events: list[dict] = []
    stop = threading.Event()

    def collect():
        poller = zmq.Poller()
        for s_ in subs:
            poller.register(s_, zmq.POLLIN)
        while not stop.is_set():
            for sock, _ in poller.poll(50):
                while True:
                    try:
                        topic, payload = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    recv = time.time()
                    msg = m.decode(payload)
                    if msg.get("type") == "coeffs":
                        rows.append((msg["stream"], msg["seq"], msg["t"], msg["wall"], recv))
                    elif msg.get("type") == "event":
                        events.append(msg)

    th = threading.Thread(target=collect, daemon=True)
    th.start()
    cpu0 = cpu_seconds(_pid(sc))
    dt = chunk / 16000.0
    begin = time.time() + 0.05
    n_chunks = int(np.ceil(duration * 16000 / chunk))
    loop = np.tile(audio, int(np.ceil(n_chunks * chunk / len(audio))) + 1)
    state = ["wait"] * n  # wait -> opening -> open (pushing) -> done; or refused
    first = [0] * n  # the tick of a stream's first chunk
    starts: dict[str, float] = {}
    reasons: dict[str, int] = {}
    messages: list[str] = []
    errors, j = 0, 0
    while any(x in ("wait", "opening", "open") for x in state):
        due = begin + (j + 1) * dt
        time.sleep(max(0.0, due - time.time()))
        now = time.time()
        for i, d in enumerate(dealers):
            if state[i] == "wait" and now >= begin + i * ramp_s:
                d.send_multipart([b"", m.encode({"v": 1, "op": "stream_open", "id": 1, "stream": ids[i], "fps": fps,
                                                 "lookahead_ms": lookahead_ms})])
                state[i] = "opening"
            while d.poll(0):
                r = m.decode(d.recv_multipart()[-1])
                if r.get("id") == 1 and state[i] == "opening":
                    if r["ok"]:
                        state[i], first[i] = "open", j + 1
                        starts[ids[i]] = begin + (j + 1) * dt  # its audio clock: chunk c is due at start + (c+1) dt
                    else:
                        state[i] = "refused"
                        kind = _refusal_kind(r["error"]["message"])
                        reasons[kind] = reasons.get(kind, 0) + 1
                        if len(messages) < 3 and r["error"]["message"] not in messages:
                            messages.append(r["error"]["message"])
                else:
                    errors += not r["ok"]
            if state[i] == "open" and j >= first[i]:
                c = j - first[i]
                if c >= n_chunks:
                    state[i] = "done"
                    continue
                d.send_multipart([b"", m.encode({"v": 1, "op": "push_audio", "stream": ids[i], "format": "f32",
                                                 "pcm": m.pack_f32(loop[c * chunk:(c + 1) * chunk])})])
        j += 1
    wall = time.time() - begin
    cpu1 = cpu_seconds(_pid(sc))
    opened = [(d, sid) for d, sid, st in zip(dealers, ids, state) if st == "done"]
    for d, sid in opened:
        while d.poll(0):
            d.recv_multipart()
        call(d, op="stream_close", stream=sid)
    time.sleep(0.6)
    stop.set()
    th.join(2)
    for s_ in dealers + subs:
        s_.close(0)
    sent = n_chunks * chunk
    live_until = sent / 16000.0 - lookahead_ms / 1000.0
    lat = np.array([1000 * (recv - (starts[sid] + t)) for sid, _, t, _, recv in rows
                    if sid in starts and t <= live_until])
    seen = {}
    for sid, seq, *_ in rows:
        seen.setdefault(sid, set()).add(seq)
    # frames a real-time stream owes: one per 1/fps of audio pushed; shed audio (lagging) and seq gaps
    # both count as lost
    owed = int(np.ceil(sent / 16000.0 * fps))
    lost = sum(max(0, owed - len(seen.get(sid, ()))) for _, sid in opened)
    jit_sent, jit_recv = jitter_ms([(r[0], r[1], r[3], r[4]) for r in rows], fps)
    dropped_ms = 0.0
    for e in events:
        if e["event"] == "lagging" and "dropped" in e.get("message", ""):
            try:
                dropped_ms += float(e["message"].split()[1])
            except ValueError:
                pass
    p95 = _p(lat, 95)
    return {"streams": n, "opened": len(opened), "admitted": len(opened), "refused": n - len(opened),
            "refused_reasons": reasons, "refused_messages": messages, "ramp_ms": round(1000 * ramp_s, 1),
            "frames_owed": owed * len(opened),
            "frames_received": len(rows), "frames_lost": int(lost), "push_errors": errors,
            "lagging_events": sum(e["event"] == "lagging" for e in events), "audio_dropped_ms": round(dropped_ms, 1),
            "latency_ms_p50": _p(lat, 50), "latency_ms_p95": p95,
            # what admission promises: the streams it kept stay real time
            "kept_meet_target": bool(p95 is not None and p95 <= 110.0 and lost == 0),
            "interval_jitter_ms_p95": _p(jit_sent, 95), "recv_interval_jitter_ms_p95": _p(jit_recv, 95),
            "sidecar_cpu_percent": round(100 * (cpu1 - cpu0) / wall, 1) if cpu0 is not None and cpu1 is not None else None,
            "loadavg_1min": round(os.getloadavg()[0], 2)}


def window_cost_ms(model, batch: int = 32, repeats: int = 8) -> float:
    """Median ms of model time per window in a batch of `batch` (one onnxruntime thread, as the sidecar)."""
    from realtalk_bridge.runtime.a2e import A2ERuntime

    rt = A2ERuntime(model)
    rng = np.random.default_rng(0)
    a = (0.1 * rng.standard_normal((batch, rt.window_samples))).astype(np.float32)
    i = np.broadcast_to(rt.default_identity, (batch, rt.n_id)).copy()
    h = np.broadcast_to(rt.default_history, (batch,) + rt.default_history.shape).copy()
    rt.run(a, i, h)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rt.run(a, i, h)
        ts.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(ts)) / batch


def run_streams(model, audio_path, fps, lookahead_ms, chunk_ms, ns, duration=8.0, cpu_load=0,
                endpoints=None, ramp_ms=150.0) -> dict:
    from realtalk_bridge.audio import load_audio

    audio = load_audio(audio_path)
    cost = window_cost_ms(model)  # one window per stream every 40 ms (25 Hz model frames)
    chunk = int(16000 * chunk_ms / 1000)
    target = 110.0
    rounds = []
    burner = _Burner(cpu_load) if cpu_load else None
    try:
        from rich.progress import Progress

        with Progress(transient=True) as prog:
            task = prog.add_task("streams", total=len(ns))
            for n in ns:
                extra = ("--max-streams", str(max(64, n)), "--max-streams-per-client", str(max(16, n)),
                         "--max-connections", str(max(64, n + 8)))
                with (External(*endpoints) if endpoints else Sidecar(model, fps, lookahead_ms, extra)) as sc:
                    r = _streams_round(sc, audio, n, fps, lookahead_ms, chunk, duration, ramp_ms / 1000.0)
                    r["rss_mb"] = round(sc.rss_peak, 1) if sc.rss_peak else None
                rounds.append(r)
                prog.advance(task)
    finally:
        if burner:
            burner.close()
    ok = [r["streams"] for r in rounds if r["latency_ms_p95"] is not None and r["latency_ms_p95"] <= target
          and r["frames_lost"] == 0 and r["refused"] == 0]
    return {"mode": "streams", **_model_id(model), "audio": Path(audio_path).name, "fps": fps,
            "lookahead_ms": lookahead_ms, "chunk_ms": chunk_ms, "duration_s": duration, "cpu_load": cpu_load,
            "cpus": os.cpu_count(), "target_ms": target, "rounds": rounds,
            "a2e_ms_per_window_batch32": round(cost, 3),
            # what the model alone allows: each stream needs 25 windows per second
            "streams_per_core_model_bound": round(1000.0 / (25 * cost), 1),
            "max_streams_realtime": max(ok) if ok else 0,
            # admission: in every round the streams the sidecar kept met the target (p95, nothing lost)
            "kept_meet_target_all": all(r["kept_meet_target"] for r in rounds), "errors": []}


def plot_streams(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = result["rounds"]
    n = [r["streams"] for r in rs]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("latency_ms_p50", "o-"), ("latency_ms_p95", "s-")):
        ax.plot(n, [r[key] if r[key] is not None else np.nan for r in rs], style, label=key[11:])
    for r in rs:  # latency and losses are of the admitted (kept) streams
        ax.annotate(f"kept {r.get('admitted', r['opened'])}/{r['streams']}\nlost {r['frames_lost']}",
                    (r["streams"], r["latency_ms_p95"] or 1), fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.axhline(result["target_ms"], color="#cc3311", lw=1.5, label=f"target {result['target_ms']:.0f} ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("streams asking to open (one subscriber each); latency of the kept ones")
    ax.set_ylabel("audio-in to frame-out latency (ms)")
    ax.set_title(f"sidecar e2e: p95 vs streams, {result['fps']} fps, look-ahead {result['lookahead_ms']:g} ms, "
                 f"cpu-load {result['cpu_load']}\nmax streams in real time: {result['max_streams_realtime']}; "
                 f"admitted streams on target in every round: {result.get('kept_meet_target_all')}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = result["_latencies"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if lat.size:
        ax.hist(lat, bins=60, color="#4477aa")
        for key, style in (("latency_ms_p50", "-"), ("latency_ms_p95", "--")):
            ax.axvline(result[key], color="k", ls=style, lw=1, label=f"{key[11:]} {result[key]:.1f} ms")
    ax.axvline(result["target_ms"], color="#cc3311", lw=1.5, label=f"target {result['target_ms']:.0f} ms")
    ax.set_xlabel("audio-in to frame-out latency (ms)")
    ax.set_ylabel("frames")
    ax.set_title(f"sidecar e2e ({result['mode']}): {result['clients']} pushing, {result['subscribers']} subscribed, "
                 f"{result['fps']} fps, look-ahead {result['lookahead_ms']:g} ms\nframes lost {result['frames_lost']}, "
                 f"RSS {result['rss_mb']} MB", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="result JSON (a PNG histogram is written beside it)")
    p.add_argument("--model", default=None, help="A2E .onnx (default: models/a2e/default.onnx)")
    p.add_argument("--audio", default=None, help="speech file to push (default: examples/speech/hello.wav of a checkout)")
    p.add_argument("--fps", type=int, default=30, choices=(25, 30, 50, 60))
    p.add_argument("--lookahead-ms", type=float, default=80.0)
    p.add_argument("--chunk-ms", type=float, default=20.0, help="push chunk size (a microphone's block)")
    p.add_argument("--soak", action="store_true", help="8 pushing clients, 16 subscribers, 60 s")
    p.add_argument("--duration", type=float, default=60.0, help="soak duration in seconds")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--subscribers", type=int, default=16)
    p.add_argument("--streams", default=None, metavar="N[,N...]",
                   help="many pushed streams, one subscriber each, e.g. 1,4,16,32,64: p50/p95, lost, CPU per N")
    p.add_argument("--stream-seconds", type=float, default=8.0, help="audio pushed per stream and N (--streams)")
    p.add_argument("--ramp-ms", type=float, default=150.0,
                   help="--streams: stream i asks to open this long after stream i-1 (clients arriving)")
    p.add_argument("--cpu-load", type=int, default=0, metavar="K", help="K busy processes beside the sidecar")
    p.add_argument("--pub", default=None, help="bench a sidecar already running here (with --ctl)")
    p.add_argument("--ctl", default=None, help="control endpoint of that sidecar")


def run(args) -> int:
    audio = args.audio or DEFAULT_AUDIO
    if args.audio is None and not DEFAULT_AUDIO.is_file():
        print("bench e2e: --audio FILE is needed here (the example speech ships with a checkout, not the wheel)",
              file=sys.stderr)
        return 2
    if bool(args.pub) != bool(args.ctl):
        print("bench e2e: --pub and --ctl go together (the endpoints of a running sidecar)", file=sys.stderr)
        return 2
    endpoints = (args.pub, args.ctl) if args.pub else None
    try:
        if args.streams:
            try:
                ns = [int(x) for x in args.streams.split(",")]
                assert ns and all(1 <= x <= 1024 for x in ns)
            except (ValueError, AssertionError):
                print(f"bench e2e: --streams wants numbers 1..1024 like 1,4,16, got {args.streams!r}", file=sys.stderr)
                return 2
            result = run_streams(args.model, audio, args.fps, args.lookahead_ms, args.chunk_ms, ns,
                                 duration=args.stream_seconds, cpu_load=args.cpu_load, endpoints=endpoints,
                                 ramp_ms=args.ramp_ms)
        else:
            burner = _Burner(args.cpu_load) if args.cpu_load else None
            try:
                result = run_bench(args.model, audio, args.fps, args.lookahead_ms, args.chunk_ms, soak=args.soak,
                                   duration=args.duration, clients=args.clients, subscribers=args.subscribers,
                                   endpoints=endpoints)
            finally:
                if burner:
                    burner.close()
            result["cpu_load"] = args.cpu_load
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        print(f"bench e2e: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    if args.streams:
        plot_streams(result, png)
        result["plot"] = png.name  # beside the JSON (no machine-specific path)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
        return 0
    plot(result, png)
    result.pop("_latencies")
    result["plot"] = png.name
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if not result["errors"] else 1
