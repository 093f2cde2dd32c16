"""Property-based: thousands of malformed control messages sent to a running sidecar over a real
socket. Every one gets a well-formed reply (never `internal`), and the sidecar keeps serving."""
import itertools
from pathlib import Path

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _sidecar_util import a2e_model, runtime, speech  # noqa: F401  (fixtures)
from realtalk_bridge.sidecar import messages as m
from realtalk_bridge.sidecar.server import Server

VECTORS = Path(__file__).resolve().parents[1] / "protocol" / "vectors"
GOLDEN = sorted(p.read_bytes() for p in VECTORS.glob("req_*.msgpack"))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True),
                    st.text(max_size=8), st.binary(max_size=32))
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=3))
FIELDS = sorted({f for fields in m.REQUESTS.values() for f in fields} | {"v", "op", "id"})
good_values = {
    "v": st.just(1), "stream": st.sampled_from(["fz", "mic", "file", "../x", ""]),
    "format": st.sampled_from(["f32", "s16", "file", "mp3"]), "fps": st.sampled_from([25, 30.0, 24, 0, 1e9]),
    "pcm": st.binary(max_size=640), "audio": st.binary(max_size=640), "versions": st.lists(st.integers(0, 3), max_size=3),
}


@st.composite
def requests(draw):
    """Maps that look like requests: a real op with some right, some wrong, some missing fields."""
    msg = {"v": draw(st.sampled_from([1, 1, 1, 0, 2, "1", None])), "op": draw(st.sampled_from(list(m.OPS) + ["", "x"]))}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        msg[name] = draw(good_values[name] if name in good_values and draw(st.booleans()) else values)
    return msg


@st.composite
def mutated(draw):
    """A golden request with a few bytes changed, cut short or extended."""
    b = bytearray(draw(st.sampled_from(GOLDEN)))
    for pos, byte in draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(0, 255)), max_size=4)):
        b[pos] = byte
    cut = draw(st.integers(0, len(b)))
    return bytes(b[:cut]) + draw(st.binary(max_size=8))


payloads = st.one_of(
    st.binary(max_size=200),  # arbitrary bytes: mostly not msgpack
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),  # valid msgpack, mostly not a request
    requests().map(lambda r: msgpack.packb(r, use_bin_type=True)),
    mutated(),
    st.dictionaries(st.integers(-2**31, 2**31), scalars, min_size=1, max_size=3).map(msgpack.packb),  # int keys
)


@pytest.fixture(scope="module")
def fuzz_server(runtime):
    import logging

    # every rejection is logged at WARNING; thousands of them would only slow the test down
    logger = logging.getLogger("realtalk_bridge.sidecar")
    level = logger.level
    logger.setLevel(logging.ERROR)
    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", max_message_bytes=1 << 16).start()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(srv.ctl_endpoint)
    yield srv, sock
    sock.close(0)
    srv.stop()
    logger.setLevel(level)


ids = itertools.count(10**6)


def _roundtrip(sock, payload: bytes) -> dict:
    sock.send_multipart([b"", payload])
    # (a valid bake answers from a worker thread, so its reply may come one turn late: every reply is
    # still checked, just not necessarily against the payload just sent)
    assert sock.poll(5000), f"no reply to {payload[:80]!r}"
    return m.validate_reply(m.decode(sock.recv_multipart()[-1]))


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(payload=payloads)
def test_malformed_control_messages_never_hurt_the_sidecar(fuzz_server, payload):
    srv, sock = fuzz_server
    reply = _roundtrip(sock, payload)
    if not reply["ok"]:
        assert reply["error"]["code"] in m.ERROR_CODES
        assert reply["error"]["code"] != "internal", reply["error"]["message"]


def test_sidecar_still_serves_after_fuzzing(fuzz_server):
    srv, sock = fuzz_server
    reply = _roundtrip(sock, m.encode({"v": 1, "op": "ping", "id": next(ids)}))
    assert reply["ok"] and srv._thread.is_alive() and srv._error is None
