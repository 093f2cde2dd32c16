"""ZeroMQ peers the Unity package's NUnit tests start as child processes (tests/test_unity_package.py).

`malformed`: a PUB that interleaves valid coefficient frames with every kind of broken message a client
must drop (bad msgpack, wrong frame count, wrong version, short weights, bad UTF-8, deep nesting).
`silent`: a PUB that never sends anything, for heartbeat (ZMTP PING/PONG) tests.

Usage: python tests/unity_peers.py {malformed|silent} --pub tcp://127.0.0.1:PORT
"""
from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

import msgpack
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_LAYOUT, ARKIT_NAMES  # noqa: E402


def coeffs(stream: str, seq: int, fps: float = 50.0, names: bool = True, v: int = 1, n: int = 52) -> bytes:
    w = [0.0] * n
    if n > ARKIT_INDEX["jawOpen"]:
        w[ARKIT_INDEX["jawOpen"]] = 0.5
    msg = {"v": v, "type": "coeffs", "stream": stream, "seq": seq, "t": seq / fps, "wall": time.time(), "fps": fps,
           "layout": ARKIT_LAYOUT, "w": struct.pack(f"<{n}f", *w)}
    if names:
        msg["names"] = list(ARKIT_NAMES)
    return msgpack.packb(msg, use_bin_type=True)


def broken_messages(seq: int) -> list[list[bytes]]:
    deep = b"\x91" * 300 + b"\xc0"
    bad_utf8 = msgpack.packb({"v": 1, "type": "coeffs", "stream": "x", "seq": 0, "t": 0.0, "layout": "arkit52",
                              "w": b"\0" * 208}).replace(b"\xa1x", b"\xa1\xff")
    return [
        [b"coeffs/bad", b"\xc1\xc1\xc1 not msgpack"],
        [b"coeffs/bad"],                                              # one frame only
        [b"coeffs/bad", b"x", b"y"],                                  # three frames
        [b"coeffs/bad", msgpack.packb([1, 2, 3])],                   # not a map
        [b"coeffs/bad", coeffs("bad", seq, v=2)],                    # a version we do not speak
        [b"coeffs/bad", coeffs("bad", seq, names=True, n=51)[:-1]],  # truncated
        [b"coeffs/bad", msgpack.packb({"v": 1, "type": "coeffs", "stream": "bad", "seq": seq, "t": 0.0,
                                       "layout": "arkit52", "names": list(ARKIT_NAMES), "w": b"\0" * 200})],
        [b"coeffs/bad", bad_utf8],
        [b"coeffs/bad", deep],
        [b"status", b"\x93\x01\x02"],
        [b"event/bad", msgpack.packb({"v": 1, "type": "event"})],    # no event name
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["malformed", "silent"])
    ap.add_argument("--pub", required=True)
    args = ap.parse_args()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(args.pub)
    seq = 0
    try:
        while True:
            if args.mode == "silent":
                time.sleep(0.5)
                continue
            for parts in broken_messages(seq):
                pub.send_multipart(parts)
            pub.send_multipart([b"coeffs/good", coeffs("good", seq)])
            seq += 1
            time.sleep(0.02)
    except KeyboardInterrupt:
        return 0
    finally:
        pub.close(0)
        ctx.term()


if __name__ == "__main__":
    sys.exit(main())
