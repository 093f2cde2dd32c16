"""Pure-Python logic of the add-on: protocol, client, name mapping, resampling.

Nothing here imports bpy, so pytest runs it without Blender (like the glTF add-on's io/ split).
"""
