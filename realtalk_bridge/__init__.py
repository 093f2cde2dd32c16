"""realtalk-bridge: real-time audio-driven faces (RealTalk A2E + renderer) as a local sidecar."""

__version__ = "0.1.0"
