"""Timestamped frames -> keyframes on the scene's frame grid.

Frames arrive at the stream's fps (25/30/50/60) with audio times `t`; a scene runs at any fps (24, 29.97...).
We linearly interpolate each channel at t = t_start + k / fps. Pure functions on lists/arrays.
"""
from __future__ import annotations

import math
from array import array
from bisect import bisect_right


def grid(t_start: float, t_end: float, fps: float) -> int:
    """Number of scene frames covering [t_start, t_end]: floor(duration * fps) + 1 (0 when empty)."""
    if fps <= 0 or not (t_end >= t_start):
        return 0
    return int(math.floor((t_end - t_start) * fps + 1e-6)) + 1


def resample(times, rows, fps: float, t_start: float | None = None, n: int | None = None) -> list[array]:
    """times (ascending, len m), rows (m sequences of E floats) -> n rows at t_start + k/fps.

    Holds the first/last value outside the covered span. Duplicate or out-of-order times (a sidecar
    restart resets `t`) must be split into takes by the caller: here they are dropped.
    """
    ts: list[float] = []
    rs: list = []
    for t, r in zip(times, rows):
        if ts and t <= ts[-1]:
            continue
        ts.append(float(t))
        rs.append(r)
    if not ts:
        return []
    if t_start is None:
        t_start = ts[0]
    if n is None:
        n = grid(t_start, ts[-1], fps)
    e = len(rs[0])
    out: list[array] = []
    for k in range(n):
        t = t_start + k / fps
        j = bisect_right(ts, t)
        if j == 0:
            out.append(array("f", rs[0]))
        elif j >= len(ts):
            out.append(array("f", rs[-1]))
        else:
            t0, t1 = ts[j - 1], ts[j]
            a = (t - t0) / (t1 - t0)
            r0, r1 = rs[j - 1], rs[j]
            out.append(array("f", [r0[i] + a * (r1[i] - r0[i]) for i in range(e)]))
    return out


def key_coords(frame_start: float, values) -> array:
    """[v0, v1, ...] -> flat [f0, v0, f1, v1, ...] for FCurve.keyframe_points.foreach_set('co', ...)."""
    co = array("f", bytes(8 * len(values)))
    for k, v in enumerate(values):
        co[2 * k] = frame_start + k
        co[2 * k + 1] = v
    return co


def split_takes(times, max_frames: int, fps: float) -> list[tuple[int, int]]:
    """Index ranges [(i0, i1), ...] of a recording: a new take where time jumps back (sidecar restart)
    or where one take would exceed `max_frames` scene frames (long takes -> several Actions)."""
    out = []
    i0 = 0
    for i in range(1, len(times)):
        if times[i] <= times[i - 1] or (times[i] - times[i0]) * fps >= max_frames:
            out.append((i0, i))
            i0 = i
    if times:
        out.append((i0, len(times)))
    return out


def sound_passes(first_frame: int, last_frame: int, fps: float, position: float,
                 duration: float | None) -> list[tuple[float, float, float]]:
    """Where to put a take's audio: [(strip start, first shown frame, last shown frame + 1), ...].

    `position` is the file time (s) heard at the take's first frame. A source that loops (`serve --input F
    --loop`) is at `t mod duration`; each pass of the file that overlaps the take gets one strip, trimmed so
    the first one starts on the take's first frame and passes meet end to end. Strip starts are exact
    (fractional); Blender rounds them. With `duration` unknown: one strip.
    """
    if fps <= 0 or last_frame < first_frame:
        return []
    if duration is not None and duration > 0:
        position %= duration
    start = first_frame - position * fps
    if duration is None or duration <= 0:
        return [(start, float(first_frame), float(last_frame + 1))]
    out = []
    pass_frames = duration * fps
    k = 0
    while start + k * pass_frames < last_frame + 1 and k < 1000:
        s = start + k * pass_frames
        out.append((s, max(s, float(first_frame)), min(s + pass_frames, float(last_frame + 1))))
        k += 1
    return out
