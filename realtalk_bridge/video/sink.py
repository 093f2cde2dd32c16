"""RendererSink: live photoreal frames for `serve --render` (protocol/SPEC.md section 3.4, topic `video/<stream>`).

The sidecar calls `.send(stream, seq, t, names, weights, pose)` once per coefficient frame, like any bridge sink.
Rendering runs on its own thread and only ever works on the newest frame: when it is slower than the coefficient
rate, older frames are dropped (counted in `.dropped`), so video never falls behind the audio. Each rendered frame
goes out through `publish(topic, payload)`; the sidecar msgpack-encodes the payload map onto its PUB socket.

The head pose sent with coefficients is not used: the renderer repaints the lower face of the source frames and
keeps their own head motion.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Callable

import numpy as np

from realtalk_bridge.video.driver import FaceDriver, to_arkit


DEFAULTS = {"render": None, "render_image": None, "render_video": None, "render_quality": 85, "render_crop": False}


def add_arguments(p) -> None:
    """Options the sidecar adds for `serve --render` (defaults in DEFAULTS, so a config file may set them)."""
    p.add_argument("--render", metavar="MODEL", default=None, help="renderer .onnx: publish video/<stream> frames")
    p.add_argument("--render-image", default=None, help="portrait to animate (with --render)")
    p.add_argument("--render-video", default=None, help="clip to animate, looped (with --render)")
    p.add_argument("--render-quality", type=int, default=None, help="JPEG quality of published frames (default 85)")
    p.add_argument("--render-crop", action="store_const", const=True, default=None,
                   help="publish the face crop instead of the full frame")


def server_publish(server) -> Callable[[str, dict], bool]:
    """A publish callback through the sidecar's `Server.publish_video` (thread-safe, never blocks; False when
    the server dropped the frame)."""
    def publish(topic: str, p: dict) -> bool:
        return server.publish_video(p["stream"], p["seq"], p["t"], p["width"], p["height"], p["encoding"], p["data"])

    return publish


def make_sink(options, publish: Callable[[str, dict], None] | None = None):
    """The sink for `serve`'s options (argparse args or a mapping with DEFAULTS' keys), or None without
    --render. `publish` may be set later (`sink.publish = server_publish(server)`): frames rendered before
    that are dropped."""
    given = options if isinstance(options, dict) else vars(options)
    o = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS and v is not None}}
    if not o["render"]:
        return None
    from realtalk_bridge.runtime.renderer import RendererRuntime

    source = o["render_image"] or o["render_video"]
    if not source:
        raise ValueError("--render needs --render-image or --render-video")
    return RendererSink(FaceDriver(RendererRuntime(o["render"])), source, publish,
                        quality=int(o["render_quality"]), crop_only=bool(o["render_crop"]))


def load_sources(driver: FaceDriver, source, max_frames: int = 250) -> list:
    """Track the source once up front (a still, or the first `max_frames` of a clip at 25 fps)."""
    import cv2

    from realtalk_bridge.video.track import read_frames

    if isinstance(source, np.ndarray):
        frames = [source]
    elif str(source).lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")):
        bgr = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {source}")
        frames = [cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)]
    else:
        frames = (rgb for _, _, rgb in itertools.islice(read_frames(source), max_frames))
    tracked = [s for s in (driver.track(f) for f in frames) if s is not None]
    if not tracked:
        raise ValueError(f"no face found in the render source {source if not isinstance(source, np.ndarray) else '(image)'}")
    driver.refit_identity(tracked)
    return tracked


class RendererSink:
    def __init__(self, driver: FaceDriver, source, publish: Callable[[str, dict], None] | None, quality: int = 85,
                 crop_only: bool = False):
        self.driver = driver
        try:
            self.sources = load_sources(driver, source)
        except Exception:
            driver.close()
            raise
        self.publish = publish
        self.quality = int(quality)
        self.crop_only = crop_only
        self.rendered = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self._pending = None
        self._cond = threading.Condition()
        self._closed = False
        self._frame_no = 0
        self._thread = threading.Thread(target=self._loop, name="renderer-sink", daemon=True)
        self._thread.start()

    def send(self, stream: str, seq: int, t: float, names, weights, pose=None) -> None:
        expr = to_arkit(list(names), weights)
        with self._cond:
            if self._closed:
                return
            if self._pending is not None:
                self.dropped += 1  # the renderer is behind: keep only the newest frame
            self._pending = (stream, int(seq), float(t), expr)
            self._cond.notify()

    def _loop(self) -> None:
        import cv2

        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                stream, seq, t, expr = self._pending
                self._pending = None
            try:
                src = self.sources[self._frame_no % len(self.sources)]
                self._frame_no += 1
                if self.crop_only:
                    img, _ = self.driver.render_crop(src, expr)
                else:
                    img = self.driver.render(src, expr)
                ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    raise RuntimeError("JPEG encoding failed")
                payload = {"v": 1, "type": "video", "stream": stream, "seq": seq, "t": t, "wall": time.time(),
                           "width": int(img.shape[1]), "height": int(img.shape[0]), "encoding": "jpeg",
                           "data": jpg.tobytes()}
                if self.publish is None or self.publish(f"video/{stream}", payload) is False:
                    self.dropped += 1  # nowhere to send it yet, or the server's queue is full
                    continue
                self.rendered += 1
            except Exception as exc:  # a bad frame must not kill the sidecar's render thread
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        self.driver.close()
