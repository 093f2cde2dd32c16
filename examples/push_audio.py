"""Push a speech file to the sidecar as your own stream, at real-time speed, and collect its frames.

    realtalk-bridge serve --no-mic                       # in one terminal
    python examples/push_audio.py examples/speech/hello.wav

This is what a game NPC or a TTS engine does: open a stream, push audio as it is produced, close it.
"""
import sys
from pathlib import Path
import threading
import time

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from realtalk_bridge.client import Client, Subscriber  # noqa: E402

path = sys.argv[1] if len(sys.argv) > 1 else "examples/speech/hello.wav"
ctl = sys.argv[2] if len(sys.argv) > 2 else "tcp://127.0.0.1:47201"
try:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
except Exception as exc:  # soundfile raises several types; say which file and why
    sys.exit(f"push_audio: cannot read {path}: {exc}")
if len(audio) == 0:
    sys.exit(f"push_audio: {path} holds no audio (0 samples)")
audio = audio.mean(axis=1)  # mono; the sidecar resamples from `rate`

with Client(ctl) as client:
    info = client.hello()
    frames = []
    sub = Subscriber(info["pub"], streams=["npc"], layouts=info["layouts"])
    reader = threading.Thread(target=lambda: frames.extend(sub.frames(timeout=1.5)))
    reader.start()
    time.sleep(0.3)  # let the subscription reach the sidecar before the first frame

    client.stream_open("npc", fps=30, sample_rate=rate)
    chunk = rate // 50  # 20 ms
    start = time.time()
    for i in range(0, len(audio), chunk):
        part = audio[i:i + chunk]
        # real-time pace: a chunk can leave only once its last sample has been "spoken"
        time.sleep(max(0.0, start + (i + len(part)) / rate - time.time()))
        client.push_audio("npc", part)
    sent = client.stream_close("npc")["frames"]
    reader.join()
    sub.close()

if not frames:
    sys.exit(f"push_audio: {sent} frames sent, none received (is the sidecar's stream port reachable?)")
late = sorted(1000 * (f.recv_wall - (start + f.t)) for f in frames)
print(f"{sent} frames sent, {len(frames)} received; median audio-to-frame latency {late[len(late) // 2]:.0f} ms")
peak = max(frames, key=lambda f: f.get("jawOpen"))
print(f"widest jaw at t={peak.t:.2f}s: jawOpen={peak.get('jawOpen'):.2f}")
