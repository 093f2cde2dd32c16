"""Audio sources for `serve`: the microphone (sounddevice), a file played at real-time speed, and
(in server.py) audio pushed by clients. Also the `devices` command.

A source runs on its own thread and talks to the server loop only through a Feeder (inproc socket),
so a stalled device never stalls the sockets. Device errors are published as `source_error` events
and retried; they never end the process.
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
import time

import numpy as np

log = logging.getLogger("realtalk_bridge.sidecar")

CHUNK_S = 0.02  # 20 ms chunks: small enough for latency, large enough to keep the loop cheap


class _Source:
    """A thread that feeds one stream of the server; `stop()` ends it."""

    def __init__(self, stream: str):
        self.stream = stream
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"source-{stream}", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError


class FileSource(_Source):
    """Plays a file into stream `file` at real-time speed (optionally looping)."""

    def __init__(self, server, path, loop: bool = False, stream: str = "file", chunk_s: float = CHUNK_S,
                 speed: float = 1.0):
        from realtalk_bridge.audio import load_audio

        self.audio = load_audio(path)  # ValueError with the file name if unreadable
        if self.audio.size == 0:
            raise ValueError(f"{path} holds no audio")
        super().__init__(stream)
        self.server, self.path, self.loop = server, path, loop
        self.chunk = max(1, int(chunk_s * 16000))
        self.speed = speed

    def _run(self) -> None:
        feeder = self.server.feeder()
        try:
            feeder.open(self.stream, "file")
            t0 = time.monotonic()
            sent = 0  # samples, across loops
            while not self._stop.is_set():
                for a in range(0, len(self.audio), self.chunk):
                    if self._stop.is_set():
                        break
                    part = self.audio[a:a + self.chunk]
                    # pace by the audio clock, not by sleeps: no drift over long files
                    due = t0 + (sent + len(part)) / 16000 / self.speed
                    delay = due - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    feeder.audio(self.stream, part)
                    sent += len(part)
                if not self.loop:
                    break
            feeder.end(self.stream)
        finally:
            feeder.close()


class MicSource(_Source):
    """Default (or chosen) input device via sounddevice/PortAudio into stream `mic`. On any device error:
    a `source_error` event, then a retry every `retry_s` seconds; `source_recovered` when it works again."""

    def __init__(self, server, device=None, stream: str = "mic", retry_s: float = 2.0, chunk_s: float = CHUNK_S):
        super().__init__(stream)
        self.server, self.device, self.retry_s = server, device, retry_s
        self.chunk_s = chunk_s
        self.errors = 0

    def _run(self) -> None:
        feeder = self.server.feeder()
        failing = False
        try:
            feeder.open(self.stream, "mic")
            while not self._stop.is_set():
                try:
                    self._capture(feeder, recovered=failing)
                    failing = False
                except Exception as exc:  # PortAudio missing, no device, device unplugged, ...
                    self.errors += 1
                    msg = f"{type(exc).__name__}: {exc}; retrying in {self.retry_s:g} s"
                    if not failing or self.errors % 30 == 0:  # don't flood the log
                        log.warning("microphone: %s", msg)
                    feeder.event(self.stream, "source_error", msg)
                    failing = True
                    self._stop.wait(self.retry_s)
        finally:
            feeder.close()

    def _capture(self, feeder, recovered: bool) -> None:
        import sounddevice as sd
        from realtalk_bridge.audio import resample, to_mono_f32

        info = sd.query_devices(self.device, "input")
        rate = 16000
        try:
            sd.check_input_settings(device=self.device, channels=1, samplerate=rate, dtype="float32")
        except Exception:
            rate = int(info["default_samplerate"])  # capture natively, resample here
        q: queue.Queue = queue.Queue(maxsize=200)
        status_errors = []

        def callback(indata, frames, time_info, status):  # PortAudio's thread: copy and hand over only
            if status.input_overflow:
                status_errors.append("input overflow")
            try:
                q.put_nowait(indata[:, 0].copy())
            except queue.Full:
                pass

        with sd.InputStream(device=self.device, channels=1, samplerate=rate, dtype="float32",
                            blocksize=int(rate * self.chunk_s), callback=callback):
            if recovered:
                feeder.event(self.stream, "source_recovered", f"capturing from {info['name']}")
            log.info("microphone: capturing from %s at %d Hz", info["name"], rate)
            resampler = None
            if rate != 16000:
                import soxr

                resampler = soxr.ResampleStream(rate, 16000, 1, dtype="float32")
            last = time.monotonic()
            while not self._stop.is_set():
                try:
                    x = q.get(timeout=0.5)
                except queue.Empty:
                    if time.monotonic() - last > 3.0:
                        raise RuntimeError("the input device delivers no audio")
                    continue
                last = time.monotonic()
                x = to_mono_f32(x)
                if resampler is not None:
                    x = resampler.resample_chunk(x)
                feeder.audio(self.stream, x)


def input_devices() -> list[dict]:
    """Input devices PortAudio sees; raises OSError when PortAudio itself is missing."""
    import sounddevice as sd

    default_in = sd.default.device[0] if sd.default.device else -1
    out = []
    for i, d in enumerate(sd.query_devices()):
        if d["max_input_channels"] > 0:
            out.append({"index": i, "name": d["name"], "channels": d["max_input_channels"],
                        "default_samplerate": d["default_samplerate"],
                        "hostapi": sd.query_hostapis(d["hostapi"])["name"], "default": i == default_in})
    return out


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print the list as JSON")


def run(args) -> int:
    try:
        devices = input_devices()
    except OSError as exc:
        print(f"devices: PortAudio is not available ({exc}). Install it: Debian/Ubuntu `apt-get install "
              "libportaudio2`, macOS `brew install portaudio`. File and pushed audio work without it.", file=sys.stderr)
        return 1
    if args.json:
        import json

        print(json.dumps(devices, indent=1))
        return 0
    if not devices:
        print("no audio input devices found. `serve --input FILE` or pushed audio (stream_open/push_audio) "
              "work without one.")
        return 0
    for d in devices:
        mark = "*" if d["default"] else " "
        print(f"{mark} {d['index']:3d}  {d['name']}  ({d['hostapi']}, {d['channels']} ch, "
              f"{d['default_samplerate']:.0f} Hz)")
    print("(* = default; choose one with `serve --device INDEX|NAME`)")
    return 0
