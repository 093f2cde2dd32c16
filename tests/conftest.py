"""Shared fixtures.

`tiny_a2e_onnx`: a REAL A2E model (the 'tiny' config trained a few seconds on synthetic speech-like
clips, exported to ONNX) for every test downstream of the A2E until the shipped model exists.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_a2e_onnx(tmp_path_factory):
    pytest.importorskip("torch", reason="the tiny A2E fixture trains with torch (pip install .[train])")
    from realtalk_bridge.train.a2e import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_a2e"))
