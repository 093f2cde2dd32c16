"""The golden vectors in protocol/vectors/: committed bytes == generator, every vector decodes to its
JSON expectation, every bad_* vector is rejected with its code, and the JSON Schemas agree."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from realtalk_bridge.face.arkit import ARKIT_NAMES
from realtalk_bridge.sidecar import messages as m

PROTOCOL = Path(__file__).resolve().parents[1] / "protocol"
VECTORS = PROTOCOL / "vectors"
INDEX = json.loads((VECTORS / "index.json").read_text())["vectors"]
GOOD = [v for v in INDEX if v["expect"] == "ok"]
BAD = [v for v in INDEX if v["expect"] != "ok"]


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_vectors", PROTOCOL / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _from_json(x):
    """Vector JSON -> the value a decoder must produce (bin fields as bytes)."""
    if isinstance(x, dict):
        if set(x) == {"$f32"}:
            return np.asarray(x["$f32"], dtype="<f4").tobytes()
        if set(x) == {"$s16"}:
            return np.asarray(x["$s16"], dtype="<i2").tobytes()
        if set(x) == {"$hex"}:
            return bytes.fromhex(x["$hex"])
        return {k: _from_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    return x


def _validate(kind, msg, topic):
    if kind == "stream":
        return m.validate_stream(msg, topic)
    if kind == "request":
        return m.validate_request(msg)
    return m.validate_reply(msg)


def test_committed_vectors_match_the_generator():
    files = _load_generator().render()
    on_disk = {p.name for p in VECTORS.iterdir()}
    assert on_disk == set(files), "run `python protocol/make_vectors.py` and commit protocol/vectors/"
    for name, data in files.items():
        assert (VECTORS / name).read_bytes() == data, f"{name} differs from the generator"


def test_index_covers_every_kind_and_bad_codes():
    kinds = {v["kind"] for v in INDEX}
    assert kinds == {"stream", "request", "reply"}
    assert {v["expect"] for v in BAD} >= {"bad_msgpack", "bad_request", "unknown_op", "unsupported_version"}
    for v in INDEX:
        assert (v["kind"] == "stream") == ("topic" in v), v["name"]


@pytest.mark.parametrize("vec", GOOD, ids=[v["name"] for v in GOOD])
def test_good_vector_decodes_to_its_expectation(vec):
    raw = (VECTORS / f"{vec['name']}.msgpack").read_bytes()
    expected = _from_json(json.loads((VECTORS / f"{vec['name']}.json").read_text()))
    msg = _validate(vec["kind"], m.decode(raw), vec.get("topic"))
    assert msg == expected
    # and re-encoding the decoded map gives the same bytes (key order and types preserved)
    assert m.encode(msg) == raw


@pytest.mark.parametrize("vec", BAD, ids=[v["name"] for v in BAD])
def test_bad_vector_is_rejected_with_its_code(vec):
    raw = (VECTORS / f"{vec['name']}.msgpack").read_bytes()
    exp = json.loads((VECTORS / f"{vec['name']}.json").read_text())
    assert exp["expect_error"] == vec["expect"]
    with pytest.raises(m.ProtocolError) as info:
        _validate(vec["kind"], m.decode(raw), vec.get("topic"))
    assert info.value.code == vec["expect"]


def test_sidecar_builders_produce_the_vector_bytes():
    gen = _load_generator()
    frame = m.coeffs("mic", 0, 0.0, gen.WALL, 30.0, "arkit52", np.asarray(gen.W52, np.float32),
                     names=ARKIT_NAMES, pose=np.asarray(gen.POSE, np.float32), speech=True)
    assert m.encode(frame) == (VECTORS / "coeffs_arkit52.msgpack").read_bytes()
    err = m.reply_error({"v": 1, "op": "fly", "id": 13}, "unknown_op", "unknown op 'fly'")
    assert m.encode(err) == (VECTORS / "rep_error_unknown_op.msgpack").read_bytes()
    ev = m.event("mic", "speech_start", gen.WALL, t=2.5)
    assert m.encode(ev) == (VECTORS / "event_speech_start.msgpack").read_bytes()


def test_weights_resolve_through_names():
    msg = m.decode((VECTORS / "coeffs_no_names.msgpack").read_bytes())
    with pytest.raises(m.ProtocolError):
        m.weights_of(msg)
    w = m.weights_of(msg, list(ARKIT_NAMES))
    assert w["jawOpen"] == 0.75 and len(w) == 52


# --- JSON Schemas agree with the Python validator -------------------------------------------

jsonschema = pytest.importorskip("jsonschema")
SCHEMA_FOR = {"coeffs": "coeffs", "status": "status", "event": "event", "video": "video"}


def _schema(vec, doc):
    name = {"request": "request", "reply": "reply"}.get(vec["kind"]) or doc["type"]
    schema = json.loads((PROTOCOL / "schemas" / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("vec", GOOD, ids=[v["name"] for v in GOOD])
def test_good_vector_matches_its_schema(vec):
    doc = json.loads((VECTORS / f"{vec['name']}.json").read_text())
    errors = list(_schema(vec, doc).iter_errors(doc))
    assert not errors, [e.message for e in errors]


# bad vectors whose fault a JSON Schema can express (lengths, NaN and msgpack-level faults it cannot)
SCHEMA_DETECTS = ["bad_missing_version", "bad_version", "bad_missing_op", "bad_unknown_op", "bad_pcm_wrong_type",
                  "bad_stream_id", "bad_fps", "bad_bool_as_int", "bad_coeffs_negative_seq"]


@pytest.mark.parametrize("name", SCHEMA_DETECTS)
def test_bad_vector_fails_its_schema(name):
    vec = next(v for v in INDEX if v["name"] == name)
    doc = json.loads((VECTORS / f"{name}.json").read_text())["decoded"]
    if vec["kind"] == "stream":
        doc_type = doc["type"]
        validator = _schema(vec, {"type": doc_type})
    else:
        validator = _schema(vec, doc)
    assert list(validator.iter_errors(doc))
