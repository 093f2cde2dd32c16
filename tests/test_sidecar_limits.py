"""Reliability suite (issue 15): each probe of the adversarial review, against a real sidecar on loopback.

A `serve` subprocess plays examples/speech/hello.wav in a loop as stream `file` at 25 fps; a watcher
thread records the sidecar's send time (`wall`) of every frame. Each attack then asserts the new
behaviour: the frame gap stays <= 2 frame intervals during the attack, the reply is small, RSS growth
is bounded, and the sidecar stops within 2 s of SIGTERM even with a bake running.
"""
import io
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from _sidecar_util import HELLO_WAV, ROOT, a2e_model, free_port, runtime, speech  # noqa: F401  (fixtures)
from realtalk_bridge.client import Client, RequestError, Subscriber
from realtalk_bridge.sidecar import messages as m
from realtalk_bridge.sidecar.server import Server

FPS = 25
INTERVAL = 1.0 / FPS


def _rss_mb(pid) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watcher(threading.Thread):
    """Records (sidecar send wall time) of every frame of stream `file`."""

    def __init__(self, pub):
        super().__init__(daemon=True)
        self.sub = Subscriber(pub, streams=["file"])
        self.walls: list[float] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            f = self.sub.recv(timeout=0.1)
            if f is not None:
                self.walls.append(f.wall)
        self.sub.close()

    def max_gap(self, t0, t1) -> float:
        w = np.array([x for x in self.walls if t0 <= x <= t1])
        assert len(w) >= 3, "the file stream must keep publishing during the attack"
        return float(np.diff(w).max())


@pytest.fixture(scope="module")
def sidecar(a2e_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("limits") / "serve.log"
    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    err = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "realtalk_bridge", "serve", "--no-mic", "--input", str(HELLO_WAV),
                             "--loop", "--fps", str(FPS), "--model", str(a2e_model), "--pub", pub, "--ctl", ctl,
                             "--log-level", "warning", "--max-bake-minutes", "30"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout.readline().startswith("realtalk-bridge serve")
    watcher = Watcher(pub)
    watcher.start()
    time.sleep(1.0)  # slow joiner, and the file stream running
    yield {"proc": proc, "pub": pub, "ctl": ctl, "log": log, "watch": watcher}
    watcher.stop.set()
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    err.close()


def _dealer(ctl, identity=None):
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        d.setsockopt(zmq.IDENTITY, identity)
    d.connect(ctl)
    return d


def _reply(d, timeout=10.0):
    assert d.poll(int(timeout * 1000)), "no reply"
    frames = d.recv_multipart()
    return frames, m.validate_reply(m.decode(frames[-1]))


def _attack(sidecar, fn, tries: int = 3):
    """Run fn (a whole attack, re-runnable); return the largest gap between frames of the file stream while
    it ran (plus 0.3 s), the limit it must stay under, and fn's result. The limit: 2 frame intervals, or (on a
    machine so loaded that the quiet stream already has longer gaps) one frame interval more than the largest
    gap of the second before. The attacking client shares this machine's 2 cores with the sidecar, so one
    attempt can lose the CPU to it; up to `tries` attempts, and a sidecar that freezes fails every one."""
    for attempt in range(tries):
        time.sleep(1.5)
        t0 = time.time()
        before = sidecar["watch"].max_gap(t0 - 1.5, t0)
        out = fn()
        time.sleep(0.3)
        gap = sidecar["watch"].max_gap(t0 - 0.05, time.time())
        limit = max(2 * INTERVAL, before + INTERVAL)
        if gap <= limit:
            break
        print(f"attempt {attempt + 1}: the stream froze {gap * 1000:.0f} ms (limit {limit * 1000:.0f} ms)")
    return gap, limit, out


def test_unknown_op_with_a_60_mib_string(sidecar):
    """Above the largest valid message (the bake limit) ZeroMQ refuses the frame from its header and drops
    the peer: nothing is read, decoded, echoed or logged. Under it, a big string is refused at its header."""
    log0 = os.path.getsize(sidecar["log"])
    big = msgpack.packb({"v": 1, "op": "x" * (60 << 20)})  # (built before the watch: CPU on 2 cores)

    def go():
        d = _dealer(sidecar["ctl"])
        d.send_multipart([b"", big], copy=False)
        answered = d.poll(1500)
        d.close(0)
        return answered

    gap, limit, answered = _attack(sidecar, go)
    assert not answered
    assert gap <= limit, f"the stream froze {gap * 1000:.0f} ms"
    big = msgpack.packb({"v": 1, "op": "x" * (8 << 20)})

    def go():
        d = _dealer(sidecar["ctl"])
        d.send_multipart([b"", big], copy=False)
        out = _reply(d)
        d.close(0)
        return out

    gap, limit, (frames, reply) = _attack(sidecar, go)
    assert reply["ok"] is False and reply["error"]["code"] == "too_large"
    assert sum(len(f) for f in frames) < 2048, "the reply must not echo the request"
    assert os.path.getsize(sidecar["log"]) - log0 < 4096, "the log must not carry the request"
    assert gap <= limit, f"the stream froze {gap * 1000:.0f} ms"


def test_hello_with_20m_versions(sidecar):
    rss0 = _rss_mb(sidecar["proc"].pid)
    d = _dealer(sidecar["ctl"])

    big = msgpack.packb({"v": 1, "op": "hello", "id": 7, "versions": [1] * 20_000_000})

    def go():
        d.send_multipart([b"", big], copy=False)
        return _reply(d)

    gap, limit, (_, reply) = _attack(sidecar, go)
    d.close(0)
    assert reply["ok"] is False and reply["error"]["code"] == "too_large" and reply["id"] == 7
    assert gap <= limit, f"the stream froze {gap * 1000:.0f} ms"
    assert _rss_mb(sidecar["proc"].pid) - rss0 < 150


def test_twelve_50_mb_requests_and_a_multi_frame_envelope(sidecar):
    rss0 = _rss_mb(sidecar["proc"].pid)
    peak = [rss0]
    d = _dealer(sidecar["ctl"])
    blob = os.urandom(50 << 20)
    d.send_multipart([b"", m.encode({"v": 1, "op": "bake", "id": 0, "format": "file", "audio": blob})])
    assert not d.poll(1000), "over the bake limit: refused by ZeroMQ, unanswered"
    d.close(0)
    d = _dealer(sidecar["ctl"])
    blob = blob[: 6 << 20]  # under the limit: decoded off the loop, two at a time
    payloads = [m.encode({"v": 1, "op": "bake", "id": i, "format": "file", "audio": blob}) for i in range(12)]

    def go():
        for payload in payloads:
            d.send_multipart([b"", payload], copy=False)
            peak.append(_rss_mb(sidecar["proc"].pid))
        replies = []
        for _ in range(12):
            frames, r = _reply(d, 30)
            replies.append(r)
            assert sum(len(f) for f in frames) < 4096
            peak.append(_rss_mb(sidecar["proc"].pid))
        return replies

    gap, limit, replies = _attack(sidecar, go)
    codes = sorted(r["error"]["code"] for r in replies)
    assert set(codes) <= {"busy", "bad_request"}  # at most 2 at a time, garbage refused
    assert gap <= limit, f"the stream froze {gap * 1000:.0f} ms"
    assert max(peak) - rss0 < 250, f"RSS grew {max(peak) - rss0:.0f} MB"
    # a multi-frame envelope (3 x 10 MB) is dropped unanswered: nothing is echoed back
    d.send_multipart([b"x" * (10 << 20)] * 3 + [m.encode({"v": 1, "op": "ping"})])
    assert not d.poll(500)
    d.send_multipart([b"", m.encode({"v": 1, "op": "ping", "id": 1})])
    assert _reply(d)[1]["ok"] is True
    d.close(0)


def _wav_header(rate, n_samples) -> bytes:
    data = np.zeros(n_samples, "<i2").tobytes()
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
            rate * 2, 2, 16) + b"data" + struct.pack("<I", len(data)) + data)


def test_bakes_longer_than_the_limit_are_refused_from_the_header(sidecar):
    import soundfile as sf

    flac = io.BytesIO()
    sf.write(flac, np.zeros(16000 * 3600, np.int16), 16000, format="FLAC")  # 1 h of silence, a few kB
    with Client(sidecar["ctl"], timeout=5) as c:
        for blob in (_wav_header(1, 6000), flac.getvalue()):
            t0 = time.monotonic()
            with pytest.raises(RequestError) as e:
                c.bake(blob, timeout=5)
            assert e.value.code in ("too_large", "bad_request") and time.monotonic() - t0 < 2.0
        with pytest.raises(RequestError, match="1800"):
            c.bake(flac.getvalue(), timeout=5)
        # over the upload limit the client says so itself (ZeroMQ would drop the connection unanswered)
        with pytest.raises(RequestError) as e:
            c.bake(np.zeros(9 << 20, np.float32), timeout=5)
        assert e.value.code == "too_large" and "max-bake-mb" in e.value.message
        # an error reply is a RequestError (not a ProtocolError)
        with pytest.raises(RequestError) as e:
            c.bake(b"RIFF not really", timeout=5)
        assert e.value.code == "bad_request"


def test_huge_float_samples_bake_to_finite_weights(sidecar, speech):
    import soundfile as sf

    x = speech[:16000].copy()
    x[::100] = 3e38
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
    with Client(sidecar["ctl"], timeout=10) as c:
        track = c.bake(buf.getvalue(), timeout=10)
    assert np.all(np.isfinite(track.weights)) and track.weights.min() >= 0 and track.weights.max() <= 1


def test_nan_and_huge_identity_and_bad_stream_ids_are_refused(sidecar):
    with Client(sidecar["ctl"], timeout=5) as c:
        for alpha in (np.full(32, 3e38, np.float32), np.full(32, np.nan, np.float32)):
            with pytest.raises(RequestError) as e:
                c.set_identity("file", alpha=alpha)
            assert e.value.code == "bad_request"
        for sid in ("mic\n", "a b", "x" * 65, ""):
            with pytest.raises(RequestError) as e:
                c.request("stream_open", stream=sid)
            assert e.value.code == "bad_request", sid
        # the file stream's frames stayed finite and in range
    w = sidecar["watch"]
    assert len(w.walls) > 10


def test_routing_id_reuse_cannot_take_streams(sidecar, speech):
    a = _dealer(sidecar["ctl"], identity=b"npc")
    a.send_multipart([b"", m.encode({"v": 1, "op": "stream_open", "id": 1, "stream": "owned"})])
    assert _reply(a)[1]["ok"]
    # a second connection with the same routing id while the first is alive: not handed over
    b = _dealer(sidecar["ctl"], identity=b"npc")
    b.send_multipart([b"", m.encode({"v": 1, "op": "push_audio", "id": 2, "stream": "owned",
                                     "pcm": m.pack_f32(speech[:320]), "format": "f32"})])
    assert not b.poll(500) or _reply(b)[1]["ok"] is False
    a.send_multipart([b"", m.encode({"v": 1, "op": "push_audio", "id": 3, "stream": "owned",
                                     "pcm": m.pack_f32(speech[:320]), "format": "f32"})])
    r = _reply(a)[1]
    assert r["ok"], f"the first client keeps its stream: {r}"
    b.close(0)
    a.close(0)
    time.sleep(0.3)  # the disconnect closes the stream; a later client reusing the id finds nothing
    c = _dealer(sidecar["ctl"], identity=b"npc")
    c.send_multipart([b"", m.encode({"v": 1, "op": "push_audio", "id": 4, "stream": "owned",
                                     "pcm": m.pack_f32(speech[:320]), "format": "f32"})])
    r = _reply(c)[1]
    c.close(0)
    assert r["ok"] is False and r["error"]["code"] == "unknown_stream"


def test_unread_replies_and_idle_raw_connections_are_bounded(sidecar):
    import socket

    rss0 = _rss_mb(sidecar["proc"].pid)
    d = _dealer(sidecar["ctl"])
    d.setsockopt(zmq.RCVHWM, 10)
    d.setsockopt(zmq.RCVBUF, 4096)
    status = m.encode({"v": 1, "op": "status"})
    for _ in range(5000):  # never read
        d.send_multipart([b"", status])
    raw = [socket.create_connection(("127.0.0.1", int(sidecar["ctl"].rsplit(":", 1)[1]))) for _ in range(50)]
    time.sleep(2.8)  # the handshake timeout (2 s) closes raw connections that never speak ZMTP
    closed = 0
    for s in raw:
        s.settimeout(0.5)
        try:
            closed += s.recv(64) == b"" or 1
        except OSError:
            pass
        s.close()
    d.close(0)
    assert closed >= 45, f"only {closed} of 50 idle raw connections were closed"
    with Client(sidecar["ctl"], timeout=5) as c:
        assert c.ping() < 1.0
    assert _rss_mb(sidecar["proc"].pid) - rss0 < 100


def test_a_flooding_client_gets_quota_and_others_keep_their_frames(sidecar, speech):
    d = _dealer(sidecar["ctl"])
    d.send_multipart([b"", m.encode({"v": 1, "op": "stream_open", "id": 0, "stream": "flood"})])
    assert _reply(d)[1]["ok"]
    chunk = m.encode({"v": 1, "op": "push_audio", "stream": "flood", "pcm": m.pack_f32(np.tile(speech, 1)[:8000]),
                      "format": "f32"})

    def go():
        for _ in range(200):  # 100 s of audio, as fast as the socket takes it, replies unread
            d.send_multipart([b"", chunk])
        time.sleep(1.0)
        codes = []
        while d.poll(200):
            r = m.decode(d.recv_multipart()[-1])
            codes.append(r["error"]["code"] if not r["ok"] else "ok")
        return codes

    gap, limit, codes = _attack(sidecar, go)
    d.close(0)
    assert "quota" in codes, codes[:10]
    assert gap <= limit, f"another stream froze {gap * 1000:.0f} ms"


def test_sigterm_stops_within_2_s_with_a_bake_running(sidecar, speech):
    d = _dealer(sidecar["ctl"])
    x = np.tile(speech, 280)[: 16000 * 60 * 28]  # 28 min: under the limit, so it really runs
    d.send_multipart([b"", m.encode({"v": 1, "op": "bake", "id": 1, "format": "s16", "sample_rate": 16000,
                                     "audio": m.pack_s16((x * 32767).astype(np.int16))})])
    time.sleep(1.5)
    proc = sidecar["proc"]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    took = time.monotonic() - t0
    d.close(0)
    assert took <= 2.0, f"stopping took {took:.1f} s"
    assert proc.returncode == 0


# --- in-process servers: quotas, overload policy, CURVE allow-list -------------------------------

def test_per_client_stream_quota_and_empty_pushes_do_not_keep_streams(runtime):
    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", max_streams_per_client=3,
                 idle_timeout=0.5, heartbeat_s=0.2).start()
    try:
        with Client(srv.ctl_endpoint, timeout=5) as c:
            for i in range(3):
                c.stream_open(f"q{i}")
            with pytest.raises(RequestError) as e:
                c.stream_open("q3")
            assert e.value.code == "quota"
            for _ in range(8):  # empty pushes for 1.2 s: the idle timer is not reset by them
                try:
                    c.push_audio("q0", np.zeros(0, np.float32))
                except RequestError:
                    break
                time.sleep(0.15)
            time.sleep(0.5)
            assert "q0" not in {s["stream"] for s in c.status()["streams"]}
    finally:
        srv.stop()


def test_overload_sheds_stale_audio_and_refuses_new_streams(runtime, speech):
    """More live streams than the A2E can step in real time: each stream's stale audio is dropped with a
    `lagging` event, the latency of what is kept stays bounded, and a new stream gets `busy`."""
    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", max_lag_s=0.15,
                 max_streams_per_client=64, max_queued_s=60).start()
    n = 40  # ~1.4 ms per window (float model) plus Python work: 40 live streams need > 2 s of engine time a second
    try:
        with Client(srv.ctl_endpoint, timeout=5) as c, Subscriber(srv.pub_endpoint, events=True) as sub:
            time.sleep(0.3)
            for i in range(n):
                c.stream_open(f"o{i}", fps=25)
            t0 = time.time()
            sent = 0
            busy = None
            behind = [0.0]  # how late this client's own pushes ran (a loaded CI box): not the sidecar's doing
            while time.time() - t0 < 2.5:
                due = t0 + (sent + 640) / 16000
                time.sleep(max(0, due - time.time()))
                for i in range(n):
                    c.push_audio(f"o{i}", speech[sent % 80000: sent % 80000 + 640])
                behind.append(time.time() - due)
                sent += 640
                if busy is None and time.time() - t0 > 1.5:
                    try:
                        c.stream_open("late")
                        busy = False
                    except RequestError as e:
                        busy = e.code == "busy" and "A2E" in e.message
            lat = []  # the sidecar's send time (`wall`) - the audio moment: what the sidecar adds
            for f in sub.frames(timeout=0.3):
                lat.append(f.wall - (t0 + f.t))
        lagging = [e for e in sub.events if e["event"] == "lagging"]
        assert lagging, "stale audio must be dropped with a lagging event"
        assert busy is True, "a new stream must be refused while the A2E is behind"
        assert np.percentile(lat, 95) < 1.0 + max(behind), \
            f"latency grew to {np.percentile(lat, 95):.1f} s (the client ran {max(behind):.1f} s behind)"
    finally:
        srv.stop()


def test_curve_allow_list_admits_only_listed_client_keys(runtime, tmp_path):
    from realtalk_bridge.sidecar.serve import load_client_keys, make_curve_keys

    spub, ssec = make_curve_keys(tmp_path / "server")
    assert oct(os.stat(ssec).st_mode & 0o777) == "0o600"
    apub, asec = make_curve_keys(tmp_path / "allowed", "alice")
    _, bsec = make_curve_keys(tmp_path / "other", "bob")
    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", curve_secret_key=str(ssec),
                 curve_clients=load_client_keys(tmp_path / "allowed")).start()
    try:
        import zmq.auth

        server_key, _ = zmq.auth.load_certificate(str(spub))

        def ping(secret_file):
            pub, sec = zmq.auth.load_certificate(str(secret_file))
            d = zmq.Context.instance().socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.curve_secretkey, d.curve_publickey, d.curve_serverkey = sec, pub, server_key
            d.connect(srv.ctl_endpoint)
            d.send_multipart([b"", m.encode({"v": 1, "op": "ping", "id": 1})])
            ok = bool(d.poll(1500))
            d.close(0)
            return ok

        assert ping(asec), "a listed client key is served"
        assert not ping(bsec), "an unlisted client key is refused"
    finally:
        srv.stop()


# --- admission from the measured cost, and the connection limit ------------------------------------

def test_admission_rule_reserves_the_engine_thread():
    from realtalk_bridge.sidecar.server import ADMIT_CAPACITY, admission_refusal, engine_share

    assert engine_share(4, 0.0015, 0.0005) == pytest.approx(4 * 25 * 0.002)
    assert admission_refusal(100, None, None) is None  # nothing measured yet (fresh sidecar): admit
    # 2 ms per window: one stream needs 5 % of the engine thread, so 0.8 holds 16 streams
    assert admission_refusal(15, 0.0015, 0.0005) is None
    why = admission_refusal(16, 0.0015, 0.0005)
    assert why and "A2E" in why and "17 streams would need 85 %" in why and "about 16 streams" in why
    assert admission_refusal(16, 0.0015, 0.0005, capacity=0.9) is None
    assert ADMIT_CAPACITY == 0.8
    # the io loop's work runs while the model runs (no GIL): it counts only where the GIL is the tighter fit
    assert engine_share(4, 0.0015, 0.0005, io_s=0.0008) == pytest.approx(4 * 25 * 0.002)
    assert engine_share(4, 0.0005, 0.0005, io_s=0.0015) == pytest.approx(4 * 25 * 0.002)
    assert admission_refusal(15, 0.0015, 0.0005, io_s=0.0015) is None
    assert "17 streams would need 85 %" in admission_refusal(16, 0.0005, 0.0005, io_s=0.0015)


def test_admission_uses_the_measured_cost_and_keeps_admitted_streams(runtime, speech):
    """A fresh sidecar admits freely; once the engine has measured its cost per window, a stream that would
    need more than the admission share of the engine thread gets `busy` with that reason, and the streams
    already admitted keep their frames. (A tiny share, so the outcome does not depend on this machine's speed.)"""
    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", admit_capacity=1e-6).start()
    try:
        with Client(srv.ctl_endpoint, timeout=5) as c, Subscriber(srv.pub_endpoint, streams=["a", "b"]) as sub:
            c.stream_open("a", fps=25)
            c.stream_open("b", fps=25)  # not measured yet: admitted although the share is tiny
            t0, sent = time.time(), 0
            while srv.engine_costs()["window_ms"] is None and time.time() - t0 < 10:
                due = t0 + (sent + 640) / 16000
                time.sleep(max(0, due - time.time()))
                for s in ("a", "b"):
                    c.push_audio(s, speech[sent % 80000: sent % 80000 + 640])
                sent += 640
            costs = c.status()["engine"]
            assert costs["window_ms"] > 0 and costs["overhead_ms"] >= 0 and costs["share"] > 0
            with pytest.raises(RequestError) as e:
                c.stream_open("c")
            assert e.value.code == "busy" and "would need" in e.value.message and "engine thread" in e.value.message
            c.push_audio("a", speech[:8000])
            c.stream_close("a")
            got = {f.stream for f in sub.frames(timeout=0.5)}
        assert got == {"a", "b"}, "the admitted streams keep publishing"
    finally:
        srv.stop()


def _wait_for(fn, timeout=8.0):
    """Poll fn() until it is true (a loaded CI box may lag: bounded, not timed)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if fn():
            return True
        time.sleep(0.05)
    return False


def test_connection_limit_refuses_new_connections_and_keeps_the_old_ones(runtime):
    """max_connections=4: a fifth client's request gets `busy` naming the limit, then its connection is
    closed; idle ZeroMQ connections past the limit (which the handshake timeout does not close) are closed
    on both sockets; the first four keep working; a client closing makes room."""
    from realtalk_bridge.sidecar.server import MAX_REFUSING

    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", max_connections=4,
                 heartbeat_s=0.2).start()
    kept = [Client(srv.ctl_endpoint, timeout=5) for _ in range(4)]
    idle, subs = [], []
    try:
        for c in kept:
            assert c.ping() < 5
        over = Client(srv.ctl_endpoint, timeout=5)
        with pytest.raises(RequestError) as e:
            over.ping()
        assert e.value.code == "busy" and "limit 4" in e.value.message and "--max-connections" in e.value.message
        over.close()
        # idle ZeroMQ peers that never send: ZMTP done, so only the limit closes them (no reconnect, to count)
        ctx = zmq.Context.instance()
        for _ in range(4):
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SUBSCRIBE, b"status")
            s.connect(srv.pub_endpoint)
            subs.append(s)
        assert _wait_for(lambda: srv.connections()["stream"] == 4)
        for sock_type, endpoint, n in ((zmq.DEALER, srv.ctl_endpoint, MAX_REFUSING + 12),
                                       (zmq.SUB, srv.pub_endpoint, 12)):
            for _ in range(n):
                s = ctx.socket(sock_type)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.RECONNECT_IVL, 60000)
                s.connect(endpoint)
                idle.append(s)
        assert _wait_for(lambda: srv.connections() == {"control": 4, "stream": 4}), srv.connections()
        for c in kept:
            assert c.ping() < 5, "connections inside the limit keep working"
        assert subs[0].poll(3000), "a subscriber inside the limit keeps receiving"
        kept.pop().close()  # room for one
        assert _wait_for(lambda: srv.connections()["control"] == 3)
        with Client(srv.ctl_endpoint, timeout=5) as c:
            assert c.ping() < 5
    finally:
        for s in idle + subs:
            s.close(0)
        for c in kept:
            c.close()
        srv.stop()
