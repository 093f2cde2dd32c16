#!/usr/bin/env python3
"""A small protocol-v1 peer for the add-on's tests until/unless the real sidecar is used.

Real ZeroMQ PUB + ROUTER sockets speaking protocol/SPEC.md: hello, ping, status, stream_open, push_audio,
stream_close, bake; status heartbeats once per second; with --input FILE a `file` stream played in real
time (looping). Its frames are NOT canned: they are computed from the audio it receives (the
RMS envelope of each frame's window drives jawOpen and a few mouth channels), so a test can check that
shape keys move in step with speech. It is a test peer, not a model: the real sidecar runs the A2E network.

    python spec_peer.py --pub tcp://127.0.0.1:47200 --control tcp://127.0.0.1:47201 [--input speech.wav]
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time

import msgpack
import numpy as np
import soundfile as sf
import soxr
import zmq

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from realtalk_blender.core.names import ARKIT_NAMES  # noqa: E402

SR = 16000
NAMES = list(ARKIT_NAMES)
JAW, FUNNEL, CLOSE, BLINK_L, BLINK_R = (NAMES.index(n) for n in
                                        ("jawOpen", "mouthFunnel", "mouthClose", "eyeBlinkLeft", "eyeBlinkRight"))
STREAM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def frame_weights(audio: np.ndarray, t: float, fps: float) -> np.ndarray:
    """Weights for the frame centred at t: mouth opening follows the RMS of a 1/fps window."""
    half = int(SR / fps / 2)
    c = int(round(t * SR))
    win = audio[max(0, c - half): c + half]
    rms = float(np.sqrt(np.mean(win.astype(np.float64) ** 2))) if len(win) else 0.0
    level = min(1.0, max(0.0, (20 * math.log10(rms + 1e-9) + 50) / 35))  # -50 dBFS .. -15 dBFS -> 0..1
    w = np.zeros(len(NAMES), np.float32)
    w[JAW] = level
    w[FUNNEL] = 0.4 * level
    w[CLOSE] = 0.3 * (1 - level)
    blink = 1.0 if (t % 3.0) < 0.1 else 0.0  # a blink every 3 s of audio time
    w[BLINK_L] = w[BLINK_R] = blink
    return w


class Stream:
    def __init__(self, sid, fps, source, owner=None):
        self.id, self.fps, self.source, self.owner = sid, float(fps), source, owner
        self.audio = np.zeros(0, np.float32)
        self.seq = -1
        self.sent_names = 0.0
        self.last_audio = time.time()

    def due_frames(self, lookahead=0.04):
        """Frames whose window is fully received: t = k / fps."""
        while True:
            k = self.seq + 1
            t = k / self.fps
            if (t + lookahead) * SR > len(self.audio):
                return
            self.seq = k
            yield k, t


class Peer:
    def __init__(self, pub_ep, ctl_ep, input_path=None, fps=30.0):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(pub_ep)
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.ctl.bind(ctl_ep)
        self.pub_ep = pub_ep
        self.streams: dict[str, Stream] = {}
        self.file = None
        if input_path:
            self.file_audio = self._load(open(input_path, "rb").read())
            self.file = Stream("file", fps, "file")
            self.file_t0 = time.monotonic()
            self.streams["file"] = self.file

    @staticmethod
    def _load(data: bytes) -> np.ndarray:
        import io
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        return soxr.resample(audio, sr, SR).astype(np.float32) if sr != SR else audio

    def status(self):
        return {"v": 1, "type": "status", "wall": time.time(), "server": "spec-peer (test)",
                "layouts": {"arkit52": NAMES},
                "streams": [{"stream": s.id, "source": s.source, "fps": s.fps, "lookahead_ms": 40.0,
                             "seq": s.seq, "layout": "arkit52"} for s in self.streams.values()],
                "model": {"name": "rms-envelope test peer", "space": "arkit52", "sample_rate": SR}}

    def publish(self, s: Stream):
        for k, t in s.due_frames():
            msg = {"v": 1, "type": "coeffs", "stream": s.id, "seq": k, "t": t, "wall": time.time(), "fps": s.fps,
                   "layout": "arkit52", "w": frame_weights(s.audio, t, s.fps).astype("<f4").tobytes()}
            if k == 0 or time.time() - s.sent_names > 1.0:
                msg["names"] = NAMES
                s.sent_names = time.time()
            self.pub.send_multipart([f"coeffs/{s.id}".encode(), msgpack.packb(msg, use_bin_type=True)])

    def handle(self, ident, req):
        op = req.get("op")
        if op == "hello":
            return {"protocol": 1, "server": "spec-peer (test)", "layouts": {"arkit52": NAMES},
                    "model": self.status()["model"], "streams": self.status()["streams"], "pub": self.pub_ep,
                    "sample_rate": SR}
        if op == "ping":
            return {"wall": time.time()}
        if op == "status":
            st = self.status()
            st.pop("type")
            return st
        if op == "stream_open":
            sid = req.get("stream", f"s{len(self.streams)}")
            if not isinstance(sid, str) or not STREAM_ID.match(sid) or sid in ("mic", "file"):
                raise ValueError("bad_request", "stream")
            fps = req.get("fps", 30.0)
            if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 1 <= fps <= 120:
                raise ValueError("bad_request", "fps")
            s = Stream(sid, fps, "push", owner=ident)
            s.rate = int(req.get("sample_rate", SR))
            self.streams[sid] = s
            return {"stream": sid, "fps": s.fps, "lookahead_ms": 40.0, "layout": "arkit52", "names": NAMES}
        if op in ("push_audio", "stream_close"):
            s = self.streams.get(req.get("stream"))
            if s is None or s.owner != ident:
                raise ValueError("unknown_stream", str(req.get("stream")))
            if op == "stream_close":
                del self.streams[s.id]
                return {"frames": s.seq + 1}
            pcm, fmt = req.get("pcm"), req.get("format")
            if not isinstance(pcm, bytes) or fmt not in ("s16", "f32"):
                raise ValueError("bad_request", "pcm/format")
            x = (np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0 if fmt == "s16"
                 else np.frombuffer(pcm, "<f4").astype(np.float32))
            if s.rate != SR:
                x = soxr.resample(x, s.rate, SR).astype(np.float32)  # chunk-wise: fine for a test peer
            s.audio = np.concatenate([s.audio, x])
            s.last_audio = time.time()
            self.publish(s)
            return {"samples": len(s.audio), "t": len(s.audio) / SR}
        if op == "bake":
            if req.get("format") != "file" or not isinstance(req.get("audio"), bytes):
                raise ValueError("bad_request", "this peer bakes format 'file' only")
            fps = req.get("fps", 30)
            if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 1 <= fps <= 120:
                raise ValueError("bad_request", "fps")
            try:
                audio = self._load(req["audio"])
            except Exception as e:  # soundfile's errors vary by format
                raise ValueError("bad_request", f"audio: {e}") from None
            n = int(math.floor(len(audio) / SR * fps))
            w = np.stack([frame_weights(audio, k / fps, fps) for k in range(n)]) if n else np.zeros((0, 52))
            return {"fps": float(fps), "layout": "arkit52", "names": NAMES, "n_frames": n, "t0": 0.0,
                    "w": w.astype("<f4").tobytes()}
        raise ValueError("unknown_op", f"unknown op {op!r}")

    def serve(self, duration=None):
        t_end = None if duration is None else time.monotonic() + duration
        last_status = 0.0
        while t_end is None or time.monotonic() < t_end:
            if self.ctl.poll(5):
                parts = self.ctl.recv_multipart()
                env, payload = parts[:-1], parts[-1]
                try:
                    req = msgpack.unpackb(payload, raw=False)
                    assert isinstance(req, dict)
                except Exception:
                    self.ctl.send_multipart(env + [msgpack.packb({"v": 1, "ok": False, "error": {
                        "code": "bad_msgpack", "message": "not a msgpack map"}})])
                    continue
                rep = {"v": 1, "op": req.get("op")}
                if "id" in req:
                    rep["id"] = req["id"]
                try:
                    rep.update(self.handle(env[0], req), ok=True)
                except ValueError as e:
                    code, msg = e.args if len(e.args) == 2 else ("bad_request", str(e))
                    rep.update(ok=False, error={"code": code, "message": msg})
                self.ctl.send_multipart(env + [msgpack.packb(rep, use_bin_type=True)])
            if self.file is not None:  # real-time playback of --input, looping
                due = int((time.monotonic() - self.file_t0) * SR)
                n = len(self.file_audio)
                while len(self.file.audio) < due:
                    i = len(self.file.audio) % n
                    self.file.audio = np.concatenate([self.file.audio, self.file_audio[i:i + min(n - i, due - len(self.file.audio))]])
                self.publish(self.file)
            now = time.time()
            if now - last_status >= 1.0:
                last_status = now
                self.pub.send_multipart([b"status", msgpack.packb(self.status(), use_bin_type=True)])
            for s in [s for s in self.streams.values() if s.source == "push" and now - s.last_audio > 10]:
                del self.streams[s.id]  # idle timeout (SPEC section 4)

    def close(self):
        self.pub.close(0)
        self.ctl.close(0)
        self.ctx.term()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pub", required=True)
    ap.add_argument("--control", required=True)
    ap.add_argument("--input")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=None, help="exit after this many seconds")
    a = ap.parse_args(argv)
    peer = Peer(a.pub, a.control, a.input, a.fps)
    print("ready", flush=True)
    try:
        peer.serve(a.duration)
    except KeyboardInterrupt:
        pass
    finally:
        peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
