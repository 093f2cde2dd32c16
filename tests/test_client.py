"""The Python client against real sockets: a PUB socket that sends golden vectors and junk, and a
control endpoint nobody answers."""
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from realtalk_bridge.client import Client, Subscriber
from realtalk_bridge.face.arkit import ARKIT_NAMES
from realtalk_bridge.sidecar import messages as m

VECTORS = Path(__file__).resolve().parents[1] / "protocol" / "vectors"


def _vec(name):
    return (VECTORS / f"{name}.msgpack").read_bytes()


@pytest.fixture()
def pub():
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(0)


def _joined(sock, sub):
    """Publish status until the subscriber has seen one (slow joiner)."""
    for _ in range(100):
        sock.send_multipart([b"status", _vec("status")])
        if sub.sock.poll(20):
            sub.recv(timeout=0.01)
            if sub.status is not None:
                return
    pytest.fail("subscriber never joined")


def test_subscriber_resolves_names_and_drops_bad_frames(pub):
    sock, endpoint = pub
    with Subscriber(endpoint, events=True) as sub:
        _joined(sock, sub)
        assert sub.layouts["arkit52"] == list(ARKIT_NAMES)
        sock.send_multipart([b"coeffs/mic", _vec("bad_coeffs_length")])
        sock.send_multipart([b"coeffs/mic", _vec("bad_coeffs_nan")])
        sock.send_multipart([b"coeffs/mic", b"\xc1junk"])
        sock.send_multipart([b"coeffs/other", _vec("coeffs_no_names")])  # topic does not match payload
        sock.send_multipart([b"coeffs/mic", _vec("coeffs_no_names")])  # seq 42, names from status
        sock.send_multipart([b"coeffs/npc-7", _vec("coeffs_custom_layout")])
        sock.send_multipart([b"event/mic", _vec("event_speech_start")])
        f1 = sub.recv(timeout=2)
        f2 = sub.recv(timeout=2)
        assert sub.recv(timeout=0.2) is None
    assert sub.dropped == 4
    assert (f1.stream, f1.seq, f1.layout) == ("mic", 42, "arkit52") and f1.get("jawOpen") == 0.75
    assert f1.names == list(ARKIT_NAMES) and f1.pose is None
    assert f2.layout == "visemes6" and f2.as_dict()["mouthSmileLeft"] == 1.0
    assert f2.get("notAName", -1.0) == -1.0
    assert [e["event"] for e in sub.events] == ["speech_start"]


def test_subscriber_counts_gaps_and_filters_streams(pub):
    sock, endpoint = pub
    with Subscriber(endpoint, streams=["a"]) as sub:
        _joined(sock, sub)
        for seq in (0, 1, 4, 5):
            for sid in ("a", "ab"):
                msg = m.coeffs(sid, seq, seq / 30, time.time(), 30.0, "arkit52", np.full(52, 0.5, np.float32))
                sock.send_multipart([f"coeffs/{sid}".encode(), m.encode(msg)])
        frames = list(sub.frames(timeout=0.5))
    assert [f.seq for f in frames] == [0, 1, 4, 5] and {f.stream for f in frames} == {"a"}
    assert sub.gaps == 2


def test_frames_without_known_layout_are_skipped_not_guessed(pub):
    sock, endpoint = pub
    with Subscriber(endpoint) as sub:
        time.sleep(0.3)
        for _ in range(5):
            sock.send_multipart([b"coeffs/mic", _vec("coeffs_no_names")])
        assert sub.recv(timeout=0.5) is None
        assert sub.dropped >= 1


def test_request_timeout_is_an_error_not_a_hang():
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)  # accepts the connection, never answers
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout=0.3) as c:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError, match="realtalk-bridge serve"):
                c.ping()
            assert time.monotonic() - t0 < 2
    finally:
        silent.close(0)
