"""Writing Actions and sound strips across Blender 3.4 ... 5.0.

Blender 4.4 introduced layered Actions with slots and 5.0 removed `Action.fcurves`; there
`Action.fcurve_ensure_for_datablock` creates the layer, strip, slot and channelbag for us. Older versions
use `Action.fcurves.new`. Keys go in with one `keyframe_points.add(n)` + `foreach_set` per curve:
one Python call per curve instead of per key, so hour-long takes bake in seconds.
"""
from __future__ import annotations

import bpy


def new_action(key: bpy.types.Key, name: str) -> bpy.types.Action:
    """A new Action assigned to a shape-key datablock. An Action already there is never modified or
    lost: it keeps a fake user so it stays in the file and in the Action browser."""
    ad = key.animation_data or key.animation_data_create()
    old = ad.action
    if old is not None:
        old.use_fake_user = True
    action = bpy.data.actions.new(name)  # Blender picks a unique name (Take.001 ...)
    # Before 4.4, id_root ties the Action to shape keys. In 4.4/4.5 setting it would add an empty
    # "Legacy Slot" next to the one fcurve_ensure_for_datablock makes. (hasattr would read the unset enum and warn)
    if "id_root" in action.bl_rna.properties and "slots" not in action.bl_rna.properties:
        action.id_root = "KEY"
    ad.action = action
    return action


def _fcurve(action: bpy.types.Action, key: bpy.types.Key, data_path: str):
    if hasattr(action, "fcurve_ensure_for_datablock"):  # 4.4+ layered actions (the only way in 5.0)
        return action.fcurve_ensure_for_datablock(key, data_path)
    fc = action.fcurves.find(data_path)
    return fc or action.fcurves.new(data_path)


def fcurves(action: bpy.types.Action, key: bpy.types.Key):
    """The F-Curves of `action` that animate `key`, on any Blender version."""
    from bpy_extras import anim_utils
    if not hasattr(anim_utils, "action_get_channelbag_for_slot") or not hasattr(action, "slots"):
        return list(action.fcurves)  # before 4.4
    # 4.4/4.5 still have Action.fcurves, but it does not see the slot's channelbag that
    # fcurve_ensure_for_datablock fills: always go through the slot
    ad = key.animation_data
    slots = [ad.action_slot] if ad is not None and ad.action == action else []
    slots += [s for s in action.slots if s.target_id_type == "KEY"]  # an older take, no longer assigned
    for slot in slots:
        bag = anim_utils.action_get_channelbag_for_slot(action, slot) if slot is not None else None
        if bag is not None and len(bag.fcurves):
            return list(bag.fcurves)
    return []


def write_keys(action, key, shape: str, frame_start: float, values) -> None:
    """Keys at frame_start, frame_start + 1, ... for shape key `shape` (bulk add + foreach_set)."""
    from .core.resample import key_coords
    fc = _fcurve(action, key, f'key_blocks["{_escape(shape)}"].value')
    n0 = len(fc.keyframe_points)
    if n0:
        fc.keyframe_points.clear()
    fc.keyframe_points.add(len(values))
    fc.keyframe_points.foreach_set("co", key_coords(frame_start, values))
    # Sampled data: linear, so values between frames never overshoot the clamp range
    lin = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    fc.keyframe_points.foreach_set("interpolation", [lin] * len(values))
    fc.update()


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def add_sound(scene: bpy.types.Scene, path: str, frame_start: int, name: str = "RealTalk", channel: int | None = None):
    """A sound strip of `path` starting at `frame_start` on `channel` (default: the first free one)."""
    se = scene.sequence_editor or scene.sequence_editor_create()
    strips = se.strips if hasattr(se, "strips") else se.sequences  # 'sequences' removed in 5.0
    if channel is None:
        used = {s.channel for s in strips}
        channel = next(c for c in range(1, 129) if c not in used)
    try:
        return strips.new_sound(name, path, channel, int(frame_start))
    except RuntimeError as e:  # e.g. a Blender (the bpy 4.2 module) built without Audaspace
        raise SoundError(f"no sound strip for {path}: {e}") from None


def add_sound_passes(scene: bpy.types.Scene, path: str, passes, name: str) -> list:
    """One strip per pass (core.resample.sound_passes), all on one free channel, each trimmed to the frames it
    covers: the first one begins on the take's first frame, the audio under it is what was heard then."""
    out = []
    channel = None
    for start, shown0, shown1 in passes:
        s = add_sound(scene, path, round(start), name=name, channel=channel)
        channel = s.channel
        shift = round(start) - start  # Blender starts strips on whole frames: keep the trim exact
        s.frame_offset_start = max(0, round(shown0 - start - shift))
        end = round(shown1)
        if s.frame_final_end > end:
            s.frame_final_end = end
        out.append(s)
    return out


def audio_duration(path: str) -> float | None:
    """Seconds of audio in `path`: exact for WAV (stdlib), else through Blender's Audaspace; None if unknown."""
    import wave
    try:
        with wave.open(path, "rb") as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError, OSError):
        pass
    try:
        import aud
        snd = aud.Sound(path)
        return snd.length / snd.specs[0] if snd.length > 0 else None
    except Exception:  # no Audaspace (bpy 4.2 module) or a file it cannot read
        return None


class SoundError(RuntimeError):
    """The keys are written; only the sound strip could not be added."""
