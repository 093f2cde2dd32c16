"""Minimal subscriber: print the mouth of every frame the sidecar publishes.

    realtalk-bridge serve --input examples/speech/hello.wav --loop --no-mic   # in one terminal
    python examples/subscriber.py                                              # in another

Only pyzmq + msgpack + numpy are needed on this side (realtalk_bridge.client wraps them).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from realtalk_bridge.client import Client, Subscriber  # noqa: E402

ctl = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:47201"

with Client(ctl) as client:
    info = client.hello()  # the stream endpoint and the layouts (name lists) in use
print(f"connected to {info['server']}, model {info['model']['name']}; Ctrl-C to stop")

with Subscriber(info["pub"], layouts=info["layouts"]) as sub:
    try:
        for frame in sub.frames(timeout=None):
            bar = "#" * int(40 * frame.get("jawOpen"))
            print(f"{frame.stream:>8} t={frame.t:7.2f}s jawOpen {frame.get('jawOpen'):.2f} {bar}")
    except KeyboardInterrupt:
        pass
print(f"frames lost (seq gaps): {sub.gaps}")
