"""The live session: one client, a timer tick that drains frames into shape keys, and the recorder.

State lives here, in Python, not in bpy properties: sockets and frame buffers are not saveable data.
`tick()` is what `bpy.app.timers` calls; timers never fire under `blender -b`, so tests call it directly.
"""
from __future__ import annotations

import os
from array import array

import bpy

from . import anim
from .core import mapping, resample
from .core.client import Client, FilePusher, RequestError

TICK_S = 1.0 / 60.0


def addon_prefs():
    pkg = __package__
    addon = bpy.context.preferences.addons.get(pkg)
    return addon.preferences if addon else None


def scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def table_rows(settings) -> list[mapping.Channel]:
    return [mapping.Channel(r.source, r.target, r.gain, r.offset, r.lo, r.hi, r.smoothing, r.enabled)
            for r in settings.channels if r.source and r.target]


def with_globals(rows: list[mapping.Channel], settings) -> list[mapping.Channel]:
    """Apply the panel's global gain and smoothing on top of each row's own."""
    out = []
    for r in rows:
        s = max(r.smoothing, settings.smoothing)
        out.append(mapping.Channel(r.source, r.target, r.gain * settings.gain, r.offset, r.lo, r.hi, s, r.enabled))
    return out


def target_meshes(context=None):
    ctx = context or bpy.context
    objs = getattr(ctx, "selected_objects", None)
    if objs is None:
        vl = ctx.view_layer
        objs = [o for o in vl.objects if o.select_get(view_layer=vl)]
    return [o for o in objs if o.type == "MESH"]


class Recorder:
    def __init__(self, stream: str, start_frame: int, audio_path: str = "", audio_t0: float | None = None):
        self.stream, self.start_frame = stream, start_frame
        self.audio_path, self.audio_t0 = audio_path, audio_t0
        self.times = array("d")
        self.rows: list[array] = []
        self.names: tuple[str, ...] = ()

    def add(self, frame) -> None:
        if self.stream and frame.stream != self.stream:
            return
        if not self.stream:
            self.stream = frame.stream  # lock onto the first stream seen
        if self.names and frame.names != self.names:
            return  # layout changed mid-take: keep the take consistent
        self.names = frame.names
        self.times.append(frame.t)
        self.rows.append(frame.weights)


class Session:
    def __init__(self):
        self.client: Client | None = None
        self.pusher: FilePusher | None = None
        self.recorder: Recorder | None = None
        self.last = None          # newest frame
        self.maps: dict[str, tuple[tuple, list[mapping.Channel]]] = {}
        self.prev: dict[str, dict[str, float]] = {}
        self.unmatched: list[str] = []
        self.message = ""

    # -- connection --------------------------------------------------------------------------------
    def connect(self, stream_ep: str, control_ep: str, stream: str = "") -> None:
        from .core.client import is_loopback
        for ep in (stream_ep, control_ep):
            if not is_loopback(ep) and not getattr(bpy.app, "online_access", True):
                raise PermissionError(f"{ep} is not on this machine and Blender's online access is off "
                                      "(Preferences > System > Network)")
        client = Client(stream_ep, control_ep, stream=stream)  # validates the endpoints before we drop anything
        self.disconnect()
        self.client = client
        self.client.open()

    def disconnect(self) -> None:
        if self.pusher is not None and self.client is not None:
            self.pusher.close()
        self.pusher = None
        if self.client is not None:
            self.client.close()
        self.client = None
        self.last = None

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.stats.state == "connected"

    def status_lines(self) -> list[str]:
        if self.client is None:
            return ["disconnected"]
        lines = self.client.stats.lines()
        if self.recorder is not None:
            lines.append(f"recording: {len(self.recorder.times)} frames")
        return lines

    def status_line(self) -> str:
        return " | ".join(self.status_lines())

    # -- the tick ----------------------------------------------------------------------------------
    def tick(self, context=None) -> None:
        if self.client is None:
            return
        if self.pusher is not None:
            self.pusher.pump()
            if self.pusher.errors:
                self.message = self.pusher.errors[-1]
            if self.pusher.done:
                # all audio sent: closing flushes the look-ahead frames; a take in progress keeps its stream
                self.client.send("stream_close", stream=self.pusher.stream)
                self.pusher = None
        frames = self.client.poll()
        if not frames:
            return
        if self.recorder is not None:
            for f in frames:
                self.recorder.add(f)
        self.last = frames[-1]
        ctx = context or bpy.context
        settings = ctx.scene.realtalk
        if settings.live:
            self.apply(ctx, self.last.as_dict())

    def channels_for(self, obj, names, settings) -> list[mapping.Channel]:
        keys = tuple(kb.name for kb in obj.data.shape_keys.key_blocks[1:])  # [0] is the basis
        sig = (keys, tuple(names), settings_signature(settings))
        cached = self.maps.get(obj.name)
        if cached is None or cached[0] != sig:
            chans = with_globals(mapping.auto_map(names, keys, table_rows(settings)), settings)
            cached = (sig, chans)
            self.maps[obj.name] = cached
        return cached[1]

    def apply(self, ctx, values: dict[str, float]) -> int:
        """Newest frame -> shape keys of the selected meshes. Returns the number of keys set."""
        settings = ctx.scene.realtalk
        n = 0
        unmatched = []
        for obj in target_meshes(ctx):
            sk = obj.data.shape_keys
            chans = self.channels_for(obj, values.keys(), settings) if sk else []
            if not chans:
                unmatched.append(obj.name)
                continue
            out = mapping.drive(chans, values, self.prev.get(obj.name, {}))
            self.prev[obj.name] = out
            kbs = sk.key_blocks
            for k, v in out.items():
                kbs[k].value = v
                n += 1
        self.unmatched = unmatched
        return n

    # -- recording ---------------------------------------------------------------------------------
    def record_start(self, scene, audio_path: str = "") -> None:
        stream = self.pusher.stream if self.pusher else (self.client.stream_filter if self.client else "")
        audio_t0 = 0.0 if audio_path else None  # e.g. the file given to `serve --input`: t = 0 at its start
        if self.pusher is not None:
            audio_path = self.pusher.path
            audio_t0 = 0.0  # pushed audio: its sample 0 is t = 0 (SPEC section 5)
        self.recorder = Recorder(stream, scene.frame_current, audio_path, audio_t0)

    def record_stop(self, context, add_sound: bool = True) -> list:
        rec, self.recorder = self.recorder, None
        if rec is None or len(rec.times) < 2:
            return []
        scene = context.scene
        settings = scene.realtalk
        fps = scene_fps(scene)
        max_frames = max(1, int(settings.max_take_seconds * fps))
        actions = []
        t_first = rec.times[0]
        offset = 0.0  # audio time -> take time; grows when `t` restarts (the sidecar was restarted mid-take)
        for i0, i1 in resample.split_takes(rec.times, max_frames, fps):
            times, rows = rec.times[i0:i1], rec.rows[i0:i1]
            if i0 and rec.times[i0] <= rec.times[i0 - 1]:
                offset += rec.times[i0 - 1] - rec.times[i0] + 1.0 / fps  # continue right after the previous part
            if len(times) < 2:
                continue
            # keys sit on the scene's frame grid, aligned by audio time to the take's first frame
            frame0 = rec.start_frame + (times[0] + offset - t_first) * fps
            grid = resample.resample(times, rows, fps)
            if len(grid) < 2 and actions:
                continue  # a tail shorter than one frame
            actions += self._bake_rows(context, rec.names, grid, round(frame0), "Take")
        if add_sound and actions and rec.audio_path and rec.audio_t0 is not None:
            start = round(rec.start_frame - (t_first - rec.audio_t0) * fps)
            self._sound(scene, rec.audio_path, start, "RealTalk take")
        return actions

    def _sound(self, scene, path: str, start: int, name: str) -> None:
        try:
            anim.add_sound(scene, path, start, name=name)
        except anim.SoundError as e:
            self.message = str(e)  # the keys are there: say so, do not fail the bake

    def _bake_rows(self, context, names, grid, frame0: int, label: str) -> list:
        """Rows on the scene grid -> one new Action per selected mesh (only mapped shape keys)."""
        settings = context.scene.realtalk
        actions = []
        unmatched = []
        for obj in target_meshes(context):
            sk = obj.data.shape_keys
            chans = self.channels_for(obj, names, settings) if sk else []
            if not chans:
                unmatched.append(obj.name)
                continue
            tracks: dict[str, array] = {}
            prev: dict[str, float] = {}
            for row in grid:
                prev = mapping.drive(chans, dict(zip(names, row)), prev)
                for k, v in prev.items():
                    tracks.setdefault(k, array("f")).append(v)
            action = anim.new_action(sk, f"{obj.name}_{label}")
            for k, vals in tracks.items():
                anim.write_keys(action, sk, k, frame0, vals)
            actions.append(action)
        self.unmatched = unmatched
        return actions

    # -- bake a file -------------------------------------------------------------------------------
    def bake_file(self, context, path: str, add_sound: bool = True, timeout: float = 120.0) -> list:
        if self.client is None:
            raise RuntimeError("not connected to a sidecar")
        size = os.path.getsize(path)
        if size > 60 * 1024 * 1024:
            raise ValueError(f"{path}: {size / 2**20:.0f} MiB; the sidecar takes files up to 60 MiB per bake")
        with open(path, "rb") as f:
            data = f.read()
        scene = context.scene
        fps = scene_fps(scene)
        from .core.protocol import parse_bake
        want = int(fps) if float(fps).is_integer() else round(fps, 3)  # SPEC: any fps 1..120
        try:
            reply = self.client.request("bake", timeout=timeout, audio=data, format="file", fps=want)
        except RequestError as e:
            if e.code != "bad_request":
                raise
            reply = self.client.request("bake", timeout=timeout, audio=data, format="file", fps=30)
        res = parse_bake(reply)
        if res.n_frames == 0:
            return []
        duration = res.n_frames / res.fps
        times = [res.t0 + i / res.fps for i in range(res.n_frames)]
        rows = [res.row(i) for i in range(res.n_frames)]
        n = max(1, round(duration * fps))
        grid = resample.resample(times, rows, fps, t_start=res.t0, n=n)
        start = scene.frame_current
        actions = self._bake_rows(context, res.names, grid, start + round(res.t0 * fps), "Bake")
        if add_sound and actions:
            self._sound(scene, path, start, os.path.basename(path))
        return actions

    def push_file(self, path: str, fps: float) -> None:
        if self.client is None:
            raise RuntimeError("not connected to a sidecar")
        if self.pusher is not None:
            self.pusher.close()
        # SPEC: any fps 1..120; frames at the scene's own rate need no resampling when recorded
        self.pusher = FilePusher(self.client, path, fps=min(120.0, max(1.0, round(fps, 3))))


def settings_signature(settings) -> tuple:
    return (settings.gain, settings.smoothing,
            tuple((r.source, r.target, r.gain, r.offset, r.lo, r.hi, r.smoothing, r.enabled) for r in settings.channels))


SESSION = Session()


def timer() -> float | None:
    """bpy.app.timers callback."""
    try:
        SESSION.tick()
        _redraw()
    except Exception as e:  # a timer that raises is unregistered by Blender: keep the session alive
        SESSION.message = f"{type(e).__name__}: {e}"
    return TICK_S if SESSION.client is not None else None


def _redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    # only the sidebar: the viewport redraws by itself when shape-key values change
    for win in wm.windows:
        for area in win.screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()
