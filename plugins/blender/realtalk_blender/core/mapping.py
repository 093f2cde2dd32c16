"""ARKit channel names -> a rig's shape keys, across spellings; per-channel gain/offset/clamp/smoothing.

Rigs spell the same shape many ways: `jawOpen`, `JawOpen`, `jaw_open`, `mouthSmile_L`, `MouthSmileLeft`,
`blendShape1.jawOpen` (Maya FBX export), `ARKit_jawOpen`. We compare a normalized key: words split at case
changes and separators, lowercased, side suffixes spelled out. Anything that still does not match (VRM
presets, custom rigs) goes through an editable table saved as a JSON preset.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields

_SIDE = {"l": "left", "left": "left", "lt": "left", "r": "right", "right": "right", "rt": "right"}
_DROP_PREFIX = {"arkit", "bs", "blendshape", "blendshapes", "shape", "sk"}
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def words(name: str) -> list[str]:
    """'mouthSmile_L' -> ['mouth', 'smile', 'left']; 'blendShape1.JawOpen' -> ['jaw', 'open']."""
    name = name.rsplit(".", 1)[-1]  # 'blendShape1.jawOpen', 'head_geo.jawOpen'
    name = re.sub(r"(?i)^arkit[_\- ]?", "", name)  # 'ARKit' would split as 'AR' + 'Kit'
    out = [w.lower() for w in _WORD.findall(name)]
    while len(out) > 1 and out[0] in _DROP_PREFIX:
        out.pop(0)
    while len(out) > 1 and out[0].isdigit():  # 'blendShape1' leaves a '1' after the prefix drop
        out.pop(0)
    return [_SIDE.get(w, w) for w in out]


def normalize(name: str) -> str:
    return "".join(words(name))


# ARKit -> VRM 1.0 presets and VRM 0 names. A VRM rig has visemes/blinks, not ARKit shapes:
# this maps the channels that carry most of the same motion (the artist can tune gains).
VRM_ALIASES: dict[str, tuple[str, ...]] = {
    "jawOpen": ("aa", "A", "Fcl_MTH_A", "vrc.v_aa"),
    "mouthFunnel": ("ou", "U", "Fcl_MTH_U", "vrc.v_ou"),
    "mouthPucker": ("oh", "O", "Fcl_MTH_O", "vrc.v_oh"),
    "mouthStretchLeft": ("ih", "I", "Fcl_MTH_I", "vrc.v_ih"),
    "mouthSmileLeft": ("happy", "Joy", "Fcl_ALL_Joy"),
    "eyeBlinkLeft": ("blinkLeft", "Blink_L", "Fcl_EYE_Close_L", "vrc.blink_left"),
    "eyeBlinkRight": ("blinkRight", "Blink_R", "Fcl_EYE_Close_R", "vrc.blink_right"),
    "browInnerUp": ("surprised", "Surprised"),
}


@dataclass
class Channel:
    """One row of the mapping table: a source channel driving one shape key."""
    source: str                 # channel name on the wire (ARKit name)
    target: str                 # shape key name on the mesh
    gain: float = 1.0
    offset: float = 0.0
    lo: float = 0.0             # clamp
    hi: float = 1.0
    smoothing: float = 0.0      # 0 = none .. 0.95 = heavy (one-pole)
    enabled: bool = True


def shape_value(x: float, ch: Channel, prev: float | None = None) -> float:
    """gain/offset, clamp, then one-pole smoothing against the previous output."""
    v = x * ch.gain + ch.offset
    lo, hi = (ch.lo, ch.hi) if ch.lo <= ch.hi else (ch.hi, ch.lo)
    v = lo if v < lo else hi if v > hi else v
    if prev is not None and ch.smoothing > 0.0:
        s = min(max(ch.smoothing, 0.0), 0.99)
        v = s * prev + (1.0 - s) * v
    return v


def auto_map(sources, shape_keys, table: list[Channel] | None = None) -> list[Channel]:
    """Channels for the shape keys a mesh has.

    Order of precedence: rows of `table` whose target exists (exact, then normalized spelling),
    then normalized-name matches, then VRM aliases. A key named in the table is left to the table (a
    disabled row switches a key off); table rows may drive extra keys from one source (jawOpen -> JawOpen
    and -> Chin_Custom) or several sources into one key.
    """
    sources = list(sources)
    keys = [k for k in shape_keys]
    by_norm: dict[str, str] = {}
    for k in keys:
        by_norm.setdefault(normalize(k), k)
    src_by_norm = {normalize(s): s for s in sources}
    out: list[Channel] = []
    used: set[str] = set()
    for row in table or []:
        src = row.source if row.source in sources else src_by_norm.get(normalize(row.source))
        tgt = row.target if row.target in keys else by_norm.get(normalize(row.target))
        if src is None or tgt is None:
            continue
        out.append(Channel(**{**asdict(row), "source": src, "target": tgt}))
        used.add(tgt)
    auto: set[str] = set()
    for s in sources:
        k = by_norm.get(normalize(s))
        if k is not None and k not in used:
            out.append(Channel(s, k))
            used.add(k)
            auto.add(s)
    for s, aliases in VRM_ALIASES.items():
        if s not in sources or s in auto:
            continue
        for a in aliases:
            k = a if a in keys else by_norm.get(normalize(a))
            if k is not None and k not in used:
                out.append(Channel(s, k))
                used.add(k)
                break
    return out


def drive(channels: list[Channel], values: dict[str, float], prev: dict[str, float]) -> dict[str, float]:
    """Channel rows + a frame's {name: weight} -> {shape key: value}. Rows into one key add up, then clamp
    to the widest row range, so e.g. two visemes can share the 'aa' key."""
    acc: dict[str, float] = {}
    rng: dict[str, tuple[float, float]] = {}
    for ch in channels:
        if not ch.enabled or ch.source not in values:
            continue
        v = shape_value(values[ch.source], ch, prev.get(ch.target))
        acc[ch.target] = acc.get(ch.target, 0.0) + v
        lo, hi = rng.get(ch.target, (ch.lo, ch.hi))
        rng[ch.target] = (min(lo, ch.lo, ch.hi), max(hi, ch.hi, ch.lo))
    for k, v in acc.items():
        lo, hi = rng[k]
        acc[k] = lo if v < lo else hi if v > hi else v
    return acc


PRESET_VERSION = 1
_FIELDS = {f.name: f.type for f in fields(Channel)}


def dump_preset(rows: list[Channel]) -> str:
    return json.dumps({"format": "realtalk-blender-mapping", "version": PRESET_VERSION,
                       "channels": [asdict(r) for r in rows]}, indent=1)


def load_preset(text: str) -> list[Channel]:
    """JSON preset -> rows. Raises ValueError with a readable message on anything malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"preset is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != "realtalk-blender-mapping":
        raise ValueError("not a realtalk-blender mapping preset")
    if data.get("version") != PRESET_VERSION:
        raise ValueError(f"unsupported preset version {data.get('version')!r}")
    rows = data.get("channels")
    if not isinstance(rows, list):
        raise ValueError("preset 'channels' must be a list")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not isinstance(r.get("source"), str) or not isinstance(r.get("target"), str):
            raise ValueError(f"channel {i}: needs string 'source' and 'target'")
        kw = {"source": r["source"], "target": r["target"]}
        for name in ("gain", "offset", "lo", "hi", "smoothing"):
            if name in r:
                if isinstance(r[name], bool) or not isinstance(r[name], (int, float)) or r[name] != r[name]:
                    raise ValueError(f"channel {i}: {name!r} must be a number")
                kw[name] = float(r[name])
        if "enabled" in r:
            kw["enabled"] = bool(r["enabled"])
        out.append(Channel(**kw))
    return out
