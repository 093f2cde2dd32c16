"""The sidebar panel (3D Viewport > N > RealTalk)."""
from __future__ import annotations

import bpy

from . import session as _session

S = _session.SESSION


class REALTALK_UL_channels(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        row.prop(item, "source", text="", emboss=False)
        row.label(icon="FORWARD")
        row.prop(item, "target", text="", emboss=False)
        row.prop(item, "gain", text="")


class REALTALK_PT_main(bpy.types.Panel):
    bl_label = "RealTalk Bridge"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "RealTalk"

    def draw(self, context):
        st = context.scene.realtalk
        layout = self.layout
        box = layout.box()
        icon = "LINKED" if S.connected else ("UNLINKED" if S.client is None else "TIME")
        col = box.column(align=True)
        for i, line in enumerate(S.status_lines()):
            col.label(text=line, icon=icon if i == 0 else "BLANK1")
        if S.message:
            box.label(text=S.message, icon="ERROR")
        row = layout.row(align=True)
        if S.client is None:
            row.operator("realtalk.connect", icon="PLAY")
        else:
            row.operator("realtalk.disconnect", icon="CANCEL")
        rec = S.recorder is not None
        row.operator("realtalk.record", text="Stop + Bake" if rec else "Record",
                     icon="REC" if not rec else "SNAP_FACE", depress=rec)

        col = layout.column(align=True)
        col.prop(st, "live")
        col.prop(st, "gain")
        col.prop(st, "smoothing")
        if S.unmatched:
            col.label(text="No matching keys: " + ", ".join(S.unmatched), icon="ERROR")

        layout.label(text="Audio file")
        layout.prop(st, "audio_file", text="")
        row = layout.row(align=True)
        row.operator("realtalk.bake_file", icon="KEYINGSET")
        row.operator("realtalk.push_file", icon="SPEAKER")
        col = layout.column(align=True)
        col.prop(st, "add_sound")
        col.prop(st, "take_audio")
        col.prop(st, "max_take_seconds")


class REALTALK_PT_mapping(bpy.types.Panel):
    bl_label = "Mapping"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "RealTalk"
    bl_parent_id = "REALTALK_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        st = context.scene.realtalk
        layout = self.layout
        layout.label(text="Automatic: ARKit names in any spelling; rows below add or override")
        row = layout.row()
        row.template_list("REALTALK_UL_channels", "", st, "channels", st, "active_channel", rows=4)
        col = row.column(align=True)
        col.operator("realtalk.channel_add", icon="ADD", text="")
        col.operator("realtalk.channel_remove", icon="REMOVE", text="")
        if 0 <= st.active_channel < len(st.channels):
            item = st.channels[st.active_channel]
            col = layout.column(align=True)
            for k in ("offset", "lo", "hi", "smoothing"):
                col.prop(item, k)
        row = layout.row(align=True)
        row.prop(st, "preset_name", text="")
        row.operator("realtalk.preset_save", text="", icon="FILE_TICK")
        row.operator("realtalk.preset_load", text="", icon="FILEBROWSER")
        layout.operator("realtalk.check_mapping", icon="VIEWZOOM")


CLASSES = (REALTALK_UL_channels, REALTALK_PT_main, REALTALK_PT_mapping)


def register():
    for c in CLASSES:
        bpy.utils.register_class(c)


def unregister():
    for c in reversed(CLASSES):
        bpy.utils.unregister_class(c)
