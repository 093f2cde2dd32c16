"""The sidebar panel (3D Viewport > N > RealTalk).

Laid out for the default sidebar width (measured on screenshots: about 24 characters per line, 9 on a
half-row button with an icon): one long button per row, short labels with icons where two share a row, long
messages wrapped over several lines, mapping rows as one "channel → shape key" line each.
"""
from __future__ import annotations

import textwrap

import bpy

from . import session as _session

S = _session.SESSION
WRAP = 24  # characters per label line that fit the default sidebar width


def wrapped(layout, text: str, icon: str = "NONE") -> None:
    """A long message over several short labels (Blender cuts a label at the region's edge with '...')."""
    for i, line in enumerate(textwrap.wrap(text, WRAP) or [""]):
        layout.label(text=line, icon=icon if i == 0 else ("BLANK1" if icon != "NONE" else "NONE"))


class REALTALK_UL_channels(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        # one readable line per row; the active row is edited below the list with full-width fields
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        sub = row.row()
        sub.active = item.enabled
        sub.label(text=f"{item.source or '?'} \u2192 {item.target or '?'}")


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
        if S.blink_hint:
            wrapped(box.column(align=True), S.blink_hint, "INFO")
        if S.message:
            wrapped(box.column(align=True), S.message, "ERROR")

        col = layout.column(align=True)
        if S.client is None:
            col.operator("realtalk.connect", icon="PLAY")
        else:
            col.operator("realtalk.disconnect", icon="CANCEL")
        rec = S.recorder is not None
        col.operator("realtalk.record", text="Stop + Bake" if rec else "Record",
                     icon="SNAP_FACE" if rec else "REC", depress=rec)
        if S.held:
            hb = layout.box()
            n = sum(len(r.times) for r in S.held)
            hb.label(text=f"Kept: {len(S.held)} take{'s' if len(S.held) > 1 else ''}, {n} frames", icon="ERROR")
            row = hb.row(align=True)
            row.operator("realtalk.take_bake", text="Bake", icon="KEYINGSET")
            row.operator("realtalk.take_discard", text="Discard", icon="TRASH")
        if S.result_actions:
            rb = layout.column(align=True)
            for i, name in enumerate(S.result_actions[:3]):
                rb.label(text=name, icon="ACTION" if i == 0 else "BLANK1")
            if len(S.result_actions) > 3:
                rb.label(text=f"+ {len(S.result_actions) - 3} more Actions", icon="BLANK1")
            rb.label(text=S.result_span, icon="BLANK1")

        col = layout.column(align=True)
        col.prop(st, "live")
        col.prop(st, "gain")
        col.prop(st, "smoothing")
        if S.unmatched:
            wrapped(col, "No matching keys: " + ", ".join(S.unmatched), "ERROR")
        elif S.no_target and S.connected:
            wrapped(col, "Select a mesh with shape keys to drive", "INFO")

        layout.label(text="Audio file", icon="FILE_SOUND")
        layout.prop(st, "audio_file", text="")
        job = S.bake_job
        if job is not None and job.state in ("ping", "bake"):
            row = layout.row(align=True)
            row.label(text=f"Baking {100 * job.progress:.0f} %", icon="SORTTIME")
            row.operator("realtalk.bake_cancel", text="Cancel", icon="X")
        else:
            row = layout.row(align=True)
            row.operator("realtalk.bake_file", text="Bake", icon="KEYINGSET")
            row.operator("realtalk.push_file", text="Stream", icon="SPEAKER")
        col = layout.column(align=True)
        col.prop(st, "add_sound")
        col.prop(st, "extend_range")
        col.prop(st, "only_moving")
        col.prop(st, "max_take_seconds")
        layout.label(text="Take audio (--input)", icon="SOUND")
        layout.prop(st, "take_audio", text="")


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
        col = layout.column(align=True)
        col.label(text="ARKit names: automatic", icon="INFO")
        col.label(text="Rows add or override", icon="BLANK1")
        # the list gets the full width (buttons below it, not beside): rows stay readable
        layout.template_list("REALTALK_UL_channels", "", st, "channels", st, "active_channel", rows=3)
        row = layout.row(align=True)
        row.operator("realtalk.channel_add", icon="ADD", text="Add")
        row.operator("realtalk.channel_remove", icon="REMOVE", text="Remove")
        if 0 <= st.active_channel < len(st.channels):
            item = st.channels[st.active_channel]
            col = layout.column(align=True)
            col.prop(item, "source", text="", icon="SPEAKER")
            col.prop(item, "target", text="", icon="SHAPEKEY_DATA")
            col = layout.column(align=True)
            for k in ("gain", "offset", "lo", "hi", "smoothing"):
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
