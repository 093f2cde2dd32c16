"""ZeroMQ peers the Unity package's NUnit tests start as child processes (tests/test_unity_package.py).

`malformed`: a PUB that interleaves valid coefficient frames with every kind of broken message a client
must drop (bad msgpack, wrong frame count, wrong version, short weights, bad UTF-8, deep nesting).
`silent`: a PUB that never sends anything, for heartbeat (ZMTP PING/PONG) tests.
`oversize`: a PUB that sends a 200 kB message now and then between valid frames (size-limit tests).
`router`: a ROUTER that answers every request with ok after the request's `delay` seconds (timeouts, ids).

Usage: python tests/unity_peers.py {malformed|silent|oversize} --pub tcp://127.0.0.1:PORT
       python tests/unity_peers.py router --ctl tcp://127.0.0.1:PORT
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


def router(ctx: zmq.Context, endpoint: str) -> int:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    pending: list[tuple[float, list[bytes]]] = []
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while True:
        now = time.monotonic()
        for due, msg in [p for p in pending if p[0] <= now]:
            sock.send_multipart(msg)
        pending = [p for p in pending if p[0] > now]
        if not poller.poll(10):
            continue
        parts = sock.recv_multipart()
        req = msgpack.unpackb(parts[-1])
        reply = {"v": 1, "op": req.get("op"), "ok": True, "echo": req.get("n", 0)}
        if "id" in req:
            reply["id"] = req["id"]
        pending.append((now + float(req.get("delay", 0.0)), parts[:-1] + [msgpack.packb(reply)]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["malformed", "silent", "oversize", "router"])
    ap.add_argument("--pub")
    ap.add_argument("--ctl")
    args = ap.parse_args()
    ctx = zmq.Context()
    if args.mode == "router":
        return router(ctx, args.ctl)
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(args.pub)
    seq = 0
    try:
        while True:
            if args.mode == "silent":
                time.sleep(0.5)
                continue
            if args.mode == "oversize":
                if seq % 10 == 5:
                    pub.send_multipart([b"coeffs/big", b"\0" * 200_000])
            else:
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
