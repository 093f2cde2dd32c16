"""Shared by the bridge tests: what a sink sends, as a receiver gets it."""
from __future__ import annotations


def sink_datagrams(sink, udp, frames, names) -> list[bytes]:
    """frames: (t, weights, pose) -> the datagram `sink` sent to `udp` for each (the sink is closed after)."""
    out = []
    try:
        for seq, (t, w, pose) in enumerate(frames):
            sink.send("mic", seq, t, names, w, pose)
            out.append(udp.recv(65536))
    finally:
        sink.close()
    return out
