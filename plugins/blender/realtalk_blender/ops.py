"""Preferences, scene settings and operators."""

import os
import time

import bpy
from bpy.props import (BoolProperty, CollectionProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from . import session as _session
from .core import mapping
from .core.client import DEFAULT_CONTROL, DEFAULT_STREAM, RequestError

S = _session.SESSION
PRESET_DIR = "presets/realtalk_blender"


class RealTalkPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    stream_endpoint: StringProperty(name="Stream", default=DEFAULT_STREAM,
                                    description="The sidecar's PUB socket (serve --pub)")
    control_endpoint: StringProperty(name="Control", default=DEFAULT_CONTROL,
                                     description="The sidecar's ROUTER socket (serve --control)")
    stream_id: StringProperty(name="Stream id", default="",
                              description="Only this stream's frames (mic, file, ...); empty: any stream")

    def draw(self, context):
        col = self.layout.column()
        col.prop(self, "stream_endpoint")
        col.prop(self, "control_endpoint")
        col.prop(self, "stream_id")
        if not getattr(bpy.app, "online_access", True):
            col.label(text="Online access is off: only 127.0.0.1 / localhost endpoints connect", icon="INFO")


class RealTalkChannel(bpy.types.PropertyGroup):
    source: StringProperty(name="Channel", description="Name on the wire, e.g. jawOpen")
    target: StringProperty(name="Shape key", description="Shape key it drives, e.g. Fcl_MTH_A")
    gain: FloatProperty(name="Gain", default=1.0, soft_min=0.0, soft_max=3.0)
    offset: FloatProperty(name="Offset", default=0.0, soft_min=-1.0, soft_max=1.0)
    lo: FloatProperty(name="Min", default=0.0, soft_min=-1.0, soft_max=1.0)
    hi: FloatProperty(name="Max", default=1.0, soft_min=0.0, soft_max=2.0)
    smoothing: FloatProperty(name="Smoothing", default=0.0, min=0.0, max=0.95)
    enabled: BoolProperty(name="Enabled", default=True)


class RealTalkSettings(bpy.types.PropertyGroup):
    live: BoolProperty(name="Drive live", default=True, description="Set shape keys of the selected meshes from each frame")
    gain: FloatProperty(name="Gain", default=1.0, min=0.0, soft_max=3.0, description="Multiplies every channel")
    smoothing: FloatProperty(name="Smoothing", default=0.0, min=0.0, max=0.95,
                             description="One-pole smoothing per channel (0: off)")
    channels: CollectionProperty(type=RealTalkChannel)
    active_channel: IntProperty()
    audio_file: StringProperty(name="Audio", subtype="FILE_PATH", description="Speech file to bake or stream live")
    take_audio: StringProperty(name="Take audio", subtype="FILE_PATH",
                               description="Audio of the sidecar's source (serve --input FILE, also with --loop) "
                                           "for the take's sound strip, heard from the take's first frame")
    add_sound: BoolProperty(name="Add sound strip", default=True)
    max_take_seconds: FloatProperty(name="Max take", default=600.0, min=1.0, unit="TIME_ABSOLUTE",
                                    description="Longer recordings are split into several Actions")
    extend_range: BoolProperty(name="Extend frame range", default=True,
                               description="Make the scene's frame range cover each new take or bake, so Play shows it")
    only_moving: BoolProperty(name="Only moving keys", default=False,
                              description="Key only the shape keys whose value changes during the take or bake")
    preset_name: StringProperty(name="Preset", default="my_rig")


class REALTALK_OT_connect(bpy.types.Operator):
    bl_idname = "realtalk.connect"
    bl_label = "Connect"
    bl_description = "Connect to the realtalk-bridge sidecar"

    def execute(self, context):
        p = _session.addon_prefs()
        ep = (p.stream_endpoint, p.control_endpoint, p.stream_id) if p else (DEFAULT_STREAM, DEFAULT_CONTROL, "")
        try:
            S.connect(*ep)
        except (ValueError, PermissionError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        if not bpy.app.timers.is_registered(_session.timer):
            bpy.app.timers.register(_session.timer, first_interval=_session.TICK_S, persistent=True)
        return {"FINISHED"}


class REALTALK_OT_disconnect(bpy.types.Operator):
    bl_idname = "realtalk.disconnect"
    bl_label = "Disconnect"

    def execute(self, context):
        S.disconnect()  # a take in progress stays: Stop + Bake still writes it
        if bpy.app.timers.is_registered(_session.timer):
            bpy.app.timers.unregister(_session.timer)
        return {"FINISHED"}


class REALTALK_OT_record(bpy.types.Operator):
    bl_idname = "realtalk.record"
    bl_label = "Record"
    bl_description = ("Start or stop recording a take; stopping bakes it into new Actions at the scene fps, on the "
                      "meshes selected when recording started")

    def execute(self, context):
        st = context.scene.realtalk
        if S.recorder is None:
            if S.client is None:
                return _say(self, "ERROR", "connect first")
            S.record_start(context, bpy.path.abspath(st.take_audio) if st.take_audio else "")
            if S.message:
                self.report({"WARNING"}, S.message)
            return {"FINISHED"}
        n = len(S.recorder.times)
        actions = S.record_stop(context, add_sound=st.add_sound)
        if not actions:
            return _say(self, "WARNING", S.message or f"nothing baked ({n} frames)")
        self.report({"INFO"}, f"take: {n} frames -> {', '.join(S.result_actions)} ({S.result_span})")
        _report_leftovers(self)
        return {"FINISHED"}


class REALTALK_OT_take_bake(bpy.types.Operator):
    bl_idname = "realtalk.take_bake"
    bl_label = "Bake Take"
    bl_description = "Bake the kept take onto the selected meshes"

    def execute(self, context):
        if not S.held:
            return _say(self, "WARNING", "no take kept")
        actions = S.bake_held(context, add_sound=context.scene.realtalk.add_sound)
        if not actions:
            return _say(self, "WARNING", S.message)
        self.report({"INFO"}, S.result)
        _report_leftovers(self)
        return {"FINISHED"}


class REALTALK_OT_take_discard(bpy.types.Operator):
    bl_idname = "realtalk.take_discard"
    bl_label = "Discard Take"
    bl_description = "Throw the kept take away"

    def execute(self, context):
        S.discard_held()
        return {"FINISHED"}


class REALTALK_OT_bake_file(bpy.types.Operator):
    bl_idname = "realtalk.bake_file"
    bl_label = "Bake File"
    bl_description = ("Send the audio file to the sidecar and key the whole clip at the scene fps from the current "
                      "frame (Esc cancels)")

    _timer = None

    def _start(self, context):
        st = context.scene.realtalk
        path = bpy.path.abspath(st.audio_file)
        if not path or not os.path.isfile(path):
            return _say(self, "ERROR", f"no audio file at {path!r}")
        if S.client is None:
            return _say(self, "ERROR", "connect first")
        try:
            S.bake_start(context, path, add_sound=st.add_sound)
        except (ValueError, RuntimeError, OSError) as e:
            return _say(self, "ERROR", f"bake failed: {e}")
        S.message = ""
        return None

    def execute(self, context):
        """Scripts and `blender -b` (no event loop): run the bake's steps here."""
        refused = self._start(context)
        if refused:
            return refused
        while S.bake_job.step(context) in ("ping", "bake"):
            time.sleep(0.02)
        return self._finish(context)

    def invoke(self, context, event):
        refused = self._start(context)
        if refused:
            return refused
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = S.bake_job
        if job is None:
            return self._finish(context)
        if event.type == "ESC":
            job.cancel()
        if event.type == "TIMER":
            job.step(context)
            context.window_manager.progress_update(int(100 * job.progress))
            _session._redraw()
        if job.state in ("ping", "bake"):
            return {"PASS_THROUGH"}
        return self._finish(context)

    def _finish(self, context):
        job = S.bake_job
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            context.window_manager.progress_end()
            self._timer = None
        S.bake_job = None
        if job is None or job.state == "cancelled":
            return _say(self, "INFO", "bake cancelled")
        if job.state == "failed":
            return _say(self, "ERROR", f"bake failed: {job.message}")
        if not job.actions:
            return _say(self, "WARNING", "no mesh with matching shape keys selected")
        self.report({"INFO"}, f"baked {os.path.basename(job.path)} -> {', '.join(S.result_actions)} ({S.result_span})")
        _report_leftovers(self)
        return {"FINISHED"}


class REALTALK_OT_bake_cancel(bpy.types.Operator):
    bl_idname = "realtalk.bake_cancel"
    bl_label = "Cancel Bake"

    def execute(self, context):
        if S.bake_job is not None:
            S.bake_job.cancel()
        return {"FINISHED"}


class REALTALK_OT_push_file(bpy.types.Operator):
    bl_idname = "realtalk.push_file"
    bl_label = "Stream File Live"
    bl_description = "Stream the audio file (16-bit WAV) to the sidecar in real time, as if spoken now"

    def execute(self, context):
        path = bpy.path.abspath(context.scene.realtalk.audio_file)
        try:
            S.push_file(path, _session.scene_fps(context.scene))
        except (RequestError, ValueError, RuntimeError, OSError) as e:
            return _say(self, "ERROR", f"stream failed: {e}")
        S.message = ""
        return {"FINISHED"}


class REALTALK_OT_check_mapping(bpy.types.Operator):
    bl_idname = "realtalk.check_mapping"
    bl_label = "Check Mapping"
    bl_description = "Report which shape keys of the selected meshes the channels drive"

    def execute(self, context):
        names = (S.client.layouts.get("arkit52") if S.client else None) or _arkit_names()
        lines = []
        for obj in _session.target_meshes(context):
            sk = obj.data.shape_keys
            chans = S.channels_for(obj, names, context.scene.realtalk) if sk else []
            lines.append(f"{obj.name}: {len(chans)} keys driven" if chans else f"{obj.name}: no matching shape keys")
        self.report({"INFO"} if lines else {"WARNING"}, "; ".join(lines) or "select meshes with shape keys")
        return {"FINISHED"}


class REALTALK_OT_channel_add(bpy.types.Operator):
    bl_idname = "realtalk.channel_add"
    bl_label = "Add Mapping Row"

    def execute(self, context):
        st = context.scene.realtalk
        st.channels.add()
        st.active_channel = len(st.channels) - 1
        return {"FINISHED"}


class REALTALK_OT_channel_remove(bpy.types.Operator):
    bl_idname = "realtalk.channel_remove"
    bl_label = "Remove Mapping Row"

    def execute(self, context):
        st = context.scene.realtalk
        if 0 <= st.active_channel < len(st.channels):
            st.channels.remove(st.active_channel)
            st.active_channel = max(0, st.active_channel - 1)
        return {"FINISHED"}


def _say(op, level: str, text: str) -> set:
    """Report and keep the text in the panel (reports flash by): the result of a refused or failed action."""
    S.message = text
    op.report({level}, text)
    return {"CANCELLED"}


def _report_leftovers(op) -> None:
    if S.unmatched:
        op.report({"WARNING"}, "selected meshes without matching shape keys: " + ", ".join(S.unmatched))
    if S.message.startswith("no sound strip"):
        op.report({"WARNING"}, S.message)


def preset_dir(create: bool = False) -> str:
    return bpy.utils.user_resource("SCRIPTS", path=PRESET_DIR, create=create)


class REALTALK_OT_preset_save(bpy.types.Operator):
    bl_idname = "realtalk.preset_save"
    bl_label = "Save Preset"
    bl_description = "Save the mapping table as a JSON preset in your Blender presets folder"

    def execute(self, context):
        st = context.scene.realtalk
        name = bpy.path.clean_name(st.preset_name) or "preset"
        path = os.path.join(preset_dir(create=True), name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(mapping.dump_preset(_session.table_rows(st)))
        self.report({"INFO"}, f"saved {path}")
        return {"FINISHED"}


class REALTALK_OT_preset_load(bpy.types.Operator):
    bl_idname = "realtalk.preset_load"
    bl_label = "Load Preset"

    def execute(self, context):
        st = context.scene.realtalk
        path = os.path.join(preset_dir(), bpy.path.clean_name(st.preset_name) + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                rows = mapping.load_preset(f.read())
        except (OSError, ValueError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        st.channels.clear()
        for r in rows:
            item = st.channels.add()
            for k in ("source", "target", "gain", "offset", "lo", "hi", "smoothing", "enabled"):
                setattr(item, k, getattr(r, k))
        self.report({"INFO"}, f"loaded {len(rows)} rows from {path}")
        return {"FINISHED"}


def _arkit_names():
    from .core.names import ARKIT_NAMES
    return ARKIT_NAMES


CLASSES = (RealTalkPreferences, RealTalkChannel, RealTalkSettings, REALTALK_OT_connect, REALTALK_OT_disconnect,
           REALTALK_OT_record, REALTALK_OT_take_bake, REALTALK_OT_take_discard, REALTALK_OT_bake_file,
           REALTALK_OT_bake_cancel, REALTALK_OT_push_file, REALTALK_OT_check_mapping,
           REALTALK_OT_channel_add, REALTALK_OT_channel_remove, REALTALK_OT_preset_save, REALTALK_OT_preset_load)


def register():
    for c in CLASSES:
        bpy.utils.register_class(c)
    bpy.types.Scene.realtalk = PointerProperty(type=RealTalkSettings)


def unregister():
    S.recorder = None
    S.held = []
    S.disconnect()
    if bpy.app.timers.is_registered(_session.timer):
        bpy.app.timers.unregister(_session.timer)
    del bpy.types.Scene.realtalk
    for c in reversed(CLASSES):
        bpy.utils.unregister_class(c)
