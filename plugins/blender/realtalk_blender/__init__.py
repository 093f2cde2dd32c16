# SPDX-License-Identifier: Apache-2.0
"""RealTalk Bridge for Blender: live ARKit-52 shape keys from the realtalk-bridge sidecar.

One package, two install paths: a legacy add-on (`bl_info`, Blender 3.x-4.1) and a 4.2+ extension
(`blender_manifest.toml`). Pure logic lives in `core/` (no bpy, tested by pytest); bpy code in the
other modules, imported only in `register()` so `core` imports without Blender.
"""

bl_info = {
    "name": "RealTalk Bridge",
    "author": "realtalk-bridge contributors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "3D Viewport > Sidebar > RealTalk",
    "description": "Drive shape keys live from speech via the realtalk-bridge sidecar; record and bake takes",
    "doc_url": "https://github.com/realtalk-bridge/realtalk-bridge/tree/main/plugins/blender",
    "category": "Animation",
}


def register():
    from . import _vendor
    _vendor.ensure()  # legacy installs: pyzmq/msgpack from bundled wheels when Blender lacks them
    from . import ops, ui
    ops.register()
    ui.register()


def unregister():
    from . import ops, ui
    ui.unregister()
    ops.unregister()
