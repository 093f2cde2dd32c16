"""Helpers shared by the sidecar tests: the model to serve, a speech file, a running server."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
HELLO_WAV = ROOT / "examples" / "speech" / "hello.wav"
DEFAULT_MODEL = ROOT / "models" / "a2e" / "default.onnx"


DEFAULT_CKPT = ROOT / "models" / "a2e" / "default.safetensors"


@pytest.fixture(scope="session")
def a2e_model(request, tmp_path_factory) -> Path:
    """A float model for the sidecar tests: the shipped checkpoint exported without --int8 (the shipped int8
    .onnx rounds each batch's activations together, which would blur the exact stream == bake equalities these
    tests check; tests/test_a2e_export.py and test_default_model.py cover the int8 file), else the shipped
    .onnx, else the real tiny model the A2E tests train (tiny_a2e_onnx)."""
    if DEFAULT_CKPT.is_file():
        from realtalk_bridge.runtime.export import export_checkpoint

        out = tmp_path_factory.mktemp("a2e-float") / "default-float32.onnx"
        try:
            export_checkpoint(DEFAULT_CKPT, out)
            return out
        except ImportError:  # no torch: the shipped file
            pass
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    return request.getfixturevalue("tiny_a2e_onnx")


@pytest.fixture(scope="session")
def runtime(a2e_model):
    from realtalk_bridge.runtime.a2e import A2ERuntime

    return A2ERuntime(a2e_model)


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    from realtalk_bridge.audio import load_audio

    return load_audio(HELLO_WAV)


@pytest.fixture()
def server(runtime):
    """A real Server on random free loopback ports, running on its own thread."""
    from realtalk_bridge.sidecar.server import Server

    srv = Server(runtime, pub="tcp://127.0.0.1:*", ctl="tcp://127.0.0.1:*", idle_timeout=30).start()
    yield srv
    srv.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
