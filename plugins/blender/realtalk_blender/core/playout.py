"""Live drive: which received frame to show now.

A sidecar that publishes frames in bursts (several frames each model step) would, with "show the newest",
give at most one pose per burst. Frames carry their audio time `t` and the sender's clock `wall`: showing the
frame whose `t` is due on a steady clock (t + the largest recent publish delay) spreads a burst over its
frames' own times. A sidecar that paces its frames has a constant delay, so the frame due is the newest one
and nothing is added. The hold behind the newest frame is capped (`max_hold`), and a slow UI that drains many
frames per tick just shows the newest due one. One stream at a time: `prefer` (the one being recorded or
pushed), else the one playing until it has been quiet for `switch_after` s, so two streams never take turns on
the face. Pure logic: the caller passes `now` (time.time()).
"""
from __future__ import annotations

from collections import deque


class Playout:
    def __init__(self, window: float = 2.0, max_hold: float = 0.1, switch_after: float = 1.0):
        self.window, self.max_hold, self.switch_after = window, max_hold, switch_after
        self.prefer = ""
        self._last_own = -1e9  # arrival of the newest frame of self.stream
        self.queue: deque = deque()   # frames not shown yet, ascending t
        self._delays: deque = deque()  # (wall, wall - t, arrival - wall) of recent frames
        self.stream = None
        self.shown = None

    def reset(self) -> None:
        self.queue.clear()
        self._delays.clear()
        self.stream = self.shown = None

    def push(self, frames, now: float) -> None:
        for f in frames:
            if f.stream != self.stream and self.stream is not None:
                if self.prefer and f.stream != self.prefer:
                    continue
                if not self.prefer and now - self._last_own < self.switch_after:
                    continue  # another stream while this one plays: not on the same face
            newest = self.queue[-1] if self.queue else self.shown
            if f.stream != self.stream or (newest is not None and f.t <= newest.t):
                self.reset()  # another stream, or the sidecar restarted (t went back)
                self.stream = f.stream
            self._last_own = now
            self.queue.append(f)
            self._delays.append((f.wall, f.wall - f.t, now - f.wall))
        while self._delays and self._delays[-1][0] - self._delays[0][0] > self.window:
            self._delays.popleft()
        while len(self.queue) > 512:  # a UI that never asks
            self.queue.popleft()

    def due_time(self, now: float) -> float | None:
        """The audio time due now, or None before any frame."""
        if not self._delays:
            return None
        publish = max(d[1] for d in self._delays)   # the slowest recent frame's sender delay
        steady = min(d[1] for d in self._delays)
        transit = min(d[2] for d in self._delays)   # our clock vs the sender's (and the network)
        return now - transit - min(publish, steady + self.max_hold)

    def current(self, now: float):
        """The newest frame whose time is due (that frame, or the one shown before, when none is new)."""
        due = self.due_time(now)
        while self.queue and (due is None or self.queue[0].t <= due + 1e-6):
            self.shown = self.queue.popleft()
        return self.shown
