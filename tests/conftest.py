"""Shared fixtures.

`tiny_a2e_onnx`: a REAL A2E model (the 'tiny' config trained a few seconds on synthetic speech-like
clips, exported to ONNX) for every test downstream of the A2E until the shipped model exists.
"""
from __future__ import annotations

import socket

import pytest


@pytest.fixture(scope="session")
def tiny_a2e_onnx(tmp_path_factory):
    pytest.importorskip("torch", reason="the tiny A2E fixture trains with torch (pip install .[train])")
    from realtalk_bridge.train.a2e import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_a2e"))


@pytest.fixture
def udp():
    """A UDP receiver on a free loopback port (2 s timeout): what a VTuber app or Unreal would listen on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2.0)
    yield s
    s.close()

