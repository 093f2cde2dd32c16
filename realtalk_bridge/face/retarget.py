"""Retargeting: ARKit-52 coefficient frames -> the channels of any rig.

A *profile* (TOML or JSON) lists output channels; each is a linear mix of ARKit coefficients
followed by a per-channel gain, offset, clamp and one-pole smoothing:

    out[c] = clamp(gain[c] * sum_k map[c][k] * arkit[k] + offset[c], lo[c], hi[c])
    out[c] = s' * previous[c] + (1 - s') * out[c]        (s' = smoothing ** (dt * 25))

Smoothing is given as the fraction kept per 1/25 s (the A2E model's frame rate), so a profile
means the same thing at any output fps. Shipped presets live in `profiles/*.toml` (package data):
`arkit` (pass-through), `vrm1`, `vrm0`, `ovr`. `realtalk-bridge profile check FILE` validates one.
"""
from __future__ import annotations

import difflib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from realtalk_bridge.face.arkit import ARKIT_LAYOUT, ARKIT_NAMES

PROFILE_VERSION = 1
SMOOTHING_FPS = 25.0  # smoothing is specified per frame at this rate (the A2E model's)
MAX_CHANNELS = 1024
MAX_NAME_LEN = 128

TOP_KEYS = ("version", "name", "description", "source", "passthrough", "defaults", "channels")
CHANNEL_KEYS = ("map", "gain", "offset", "clamp", "smoothing", "note")
DEFAULT_KEYS = ("gain", "offset", "clamp", "smoothing")
SOURCES = {ARKIT_LAYOUT: ARKIT_NAMES}


class ProfileError(ValueError):
    """A profile that cannot be used. `str()` says where (file, line, key) and what was expected."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, key: str | None = None):
        self.path, self.line, self.key, self.reason = path, line, key, message
        where = []
        if path:
            where.append(f"{path}:{line}" if line else str(path))
        elif line:
            where.append(f"line {line}")
        if key:
            where.append(f"key '{key}'")
        super().__init__((": ".join(where) + ": " if where else "") + message)


@dataclass(frozen=True)
class Channel:
    name: str
    map: dict[str, float]
    gain: float = 1.0
    offset: float = 0.0
    clamp: tuple[float, float] = (0.0, 1.0)
    smoothing: float = 0.0


@dataclass(frozen=True)
class Profile:
    name: str
    channels: tuple[Channel, ...]
    source: str = ARKIT_LAYOUT
    passthrough: bool = False
    description: str = ""
    defaults: Channel = field(default_factory=lambda: Channel("", {}))
    path: str | None = None

    def output_names(self, source_names: Sequence[str] = ARKIT_NAMES) -> tuple[str, ...]:
        """Channel names in output order: pass-through names first (source order), then the rest."""
        listed = [c.name for c in self.channels]
        if not self.passthrough:
            return tuple(listed)
        src = set(source_names)
        return tuple(source_names) + tuple(n for n in listed if n not in src)


# ---------------------------------------------------------------- loading and validation


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("realtalk_bridge.face").joinpath("profiles").iterdir()
                  if p.name.endswith(".toml"))


def load_profile(spec: str | Path) -> Profile:
    """A shipped preset by name (`vrm1`) or a profile file (.toml or .json)."""
    spec_s = str(spec)
    if spec_s in preset_names() and not Path(spec_s).exists():
        res = resources.files("realtalk_bridge.face").joinpath("profiles", spec_s + ".toml")
        return parse_profile(res.read_text(encoding="utf-8"), fmt="toml", path=f"<preset {spec_s}>")
    path = Path(spec_s)
    if not path.is_file():
        raise ProfileError(f"no such profile file, and not a preset (presets: {', '.join(preset_names())})",
                           path=spec_s)
    if path.stat().st_size > 4 * 1024 * 1024:
        raise ProfileError("file is larger than 4 MiB; a profile is a small text file", path=spec_s)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=spec_s) from None
    fmt = "json" if path.suffix.lower() == ".json" else "toml"
    return parse_profile(text, fmt=fmt, path=spec_s)


def parse_profile(text: str, fmt: str = "toml", path: str | None = None) -> Profile:
    """Parse and validate profile text. Raises ProfileError naming the line and key at fault."""
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno) from None
    elif fmt == "toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
            line = int(m.group(1)) if m else None
            reason = re.sub(r" \(at line.*", "", msg) + (f" (column {m.group(2)})" if m else "")
            raise ProfileError(f"invalid TOML: {reason}", path=path, line=line) from None
    else:
        raise ValueError(f"unknown profile format {fmt!r} (toml or json)")
    return profile_from_dict(data, text=text, path=path)


def profile_from_dict(data: Any, text: str = "", path: str | None = None) -> Profile:
    def fail(msg: str, *key: str) -> ProfileError:
        return ProfileError(msg, path=path, line=_find_line(text, key) if key else None,
                            key=".".join(key) if key else None)

    if not isinstance(data, dict):
        raise fail(f"the profile must be a table/object at the top level, got {_kind(data)}")
    for k in data:
        if k not in TOP_KEYS:
            raise fail(f"unknown key{_did_you_mean(k, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}", k)
    version = data.get("version", PROFILE_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version != PROFILE_VERSION:
        raise fail(f"expected version = {PROFILE_VERSION}, got {version!r}", "version")
    name = data.get("name", Path(path).stem if path and not path.startswith("<") else "custom")
    if not isinstance(name, str) or not name.strip():
        raise fail(f"expected a non-empty string, got {_kind(name)}", "name")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail(f"expected a string, got {_kind(description)}", "description")
    source = data.get("source", ARKIT_LAYOUT)
    if source not in SOURCES:
        raise fail(f"unsupported source space {source!r}; supported: {', '.join(SOURCES)}", "source")
    source_names = SOURCES[source]
    passthrough = data.get("passthrough", False)
    if not isinstance(passthrough, bool):
        raise fail(f"expected true or false, got {_kind(passthrough)}", "passthrough")

    defaults_raw = data.get("defaults", {})
    if not isinstance(defaults_raw, dict):
        raise fail(f"expected a table, got {_kind(defaults_raw)}", "defaults")
    for k in defaults_raw:
        if k not in DEFAULT_KEYS:
            raise fail(f"unknown key{_did_you_mean(k, DEFAULT_KEYS)}; allowed: {', '.join(DEFAULT_KEYS)}",
                       "defaults", k)
    defaults = _channel_params(defaults_raw, Channel("", {}), ("defaults",), fail)

    channels_raw = data.get("channels", {})
    if not isinstance(channels_raw, dict):
        raise fail(f"expected a table of channels ([channels.<name>]), got {_kind(channels_raw)}", "channels")
    if not channels_raw and not passthrough:
        raise fail("no channels: add [channels.<name>] tables with a `map`, or set passthrough = true", "channels")
    if len(channels_raw) > MAX_CHANNELS:
        raise fail(f"too many channels ({len(channels_raw)} > {MAX_CHANNELS})", "channels")
    channels = []
    for cname, craw in channels_raw.items():
        key = ("channels", cname)
        if not cname or len(cname) > MAX_NAME_LEN or any(ord(ch) < 32 for ch in cname):
            raise fail(f"a channel name must be 1-{MAX_NAME_LEN} printable characters", *key)
        if not isinstance(craw, dict):
            raise fail(f"expected a table with `map` (and optional gain, offset, clamp, smoothing), got {_kind(craw)}",
                       *key)
        for k in craw:
            if k not in CHANNEL_KEYS:
                raise fail(f"unknown key{_did_you_mean(k, CHANNEL_KEYS)}; allowed: {', '.join(CHANNEL_KEYS)}", *key, k)
        if "map" in craw:
            mraw = craw["map"]
            if not isinstance(mraw, dict) or not mraw:
                raise fail("expected a non-empty table of source shape = weight, e.g. { jawOpen = 1.0 }",
                           *key, "map")
            cmap = {}
            for src, wt in mraw.items():
                if src not in source_names:
                    raise fail(f"unknown {source} shape{_did_you_mean(src, source_names)}", *key, "map", src)
                cmap[src] = _number(wt, fail, *key, "map", src)
        elif cname in source_names:
            cmap = {cname: 1.0}  # a bare [channels.jawOpen] tunes that ARKit channel
        else:
            raise fail(f"missing `map` (which {source} shapes drive this channel); only a channel named after one of the "
                       f"{source} shapes may leave it out", *key)
        params = _channel_params(craw, defaults, key, fail)
        channels.append(Channel(cname, cmap, params.gain, params.offset, params.clamp, params.smoothing))
    return Profile(name=name, channels=tuple(channels), source=source, passthrough=passthrough,
                   description=description, defaults=defaults, path=path)


def _channel_params(raw: dict, base: Channel, key: tuple, fail) -> Channel:
    gain = _number(raw["gain"], fail, *key, "gain") if "gain" in raw else base.gain
    offset = _number(raw["offset"], fail, *key, "offset") if "offset" in raw else base.offset
    clamp = base.clamp
    if "clamp" in raw:
        c = raw["clamp"]
        if not isinstance(c, list) or len(c) != 2:
            raise fail(f"expected [low, high], two numbers, got {c!r}", *key, "clamp")
        lo, hi = (_number(v, fail, *key, "clamp") for v in c)
        if lo > hi:
            raise fail(f"expected low <= high, got [{lo}, {hi}]", *key, "clamp")
        clamp = (lo, hi)
    smoothing = base.smoothing
    if "smoothing" in raw:
        smoothing = _number(raw["smoothing"], fail, *key, "smoothing")
        if not 0.0 <= smoothing < 1.0:
            raise fail(f"expected 0 <= smoothing < 1 (fraction kept per 1/25 s), got {smoothing}", *key, "smoothing")
    return Channel(base.name, base.map, gain, offset, clamp, smoothing)


def _number(v: Any, fail, *key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise fail(f"expected a number, got {_kind(v)} {v!r}", *key)
    if not math.isfinite(v):
        raise fail(f"expected a finite number, got {v!r}", *key)
    return float(v)


def _kind(v: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a float", type(None): "null"}.get(type(v), type(v).__name__)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        lower = {c.lower(): c for c in choices}
        if word.lower() in lower:
            close = [lower[word.lower()]]
    return f" {word!r}; did you mean {close[0]!r}?" if close else f" {word!r}"


def _find_line(text: str, key: Sequence[str]) -> int | None:
    """Best-effort line of a dotted key in TOML or JSON text: find each part in turn."""
    if not text:
        return None
    pos, found = 0, None
    for part in key:
        pat = re.compile(r'(?:^|[\s{,.\[])"?' + re.escape(str(part)) + r'"?\s*(?:=|:|\]|\.)', re.M)
        m = pat.search(text, pos)
        if m is None:
            break
        pos = found = m.start() + (1 if text[m.start()] in " \t\n{,.[" else 0)
    return None if found is None else text.count("\n", 0, found) + 1


# ---------------------------------------------------------------- the math


def profile_matrix(profile: Profile, source_names: Sequence[str] = ARKIT_NAMES):
    """-> (out_names, M (out, in), gain, offset, lo, hi, smoothing, missing source names)."""
    index = {n: i for i, n in enumerate(source_names)}
    out_names = profile.output_names(source_names)
    by_name = {c.name: c for c in profile.channels}
    d = profile.defaults
    n_out, n_in = len(out_names), len(source_names)
    M = np.zeros((n_out, n_in), np.float32)
    gain = np.full(n_out, d.gain, np.float32)
    offset = np.full(n_out, d.offset, np.float32)
    lo = np.full(n_out, d.clamp[0], np.float32)
    hi = np.full(n_out, d.clamp[1], np.float32)
    smooth = np.full(n_out, d.smoothing, np.float32)
    missing: list[str] = []
    for o, name in enumerate(out_names):
        ch = by_name.get(name)
        if ch is None:  # pass-through channel
            M[o, index[name]] = 1.0
            continue
        for src, w in ch.map.items():
            if src in index:
                M[o, index[src]] += w
            elif src not in missing:
                missing.append(src)
        gain[o], offset[o], lo[o], hi[o], smooth[o] = ch.gain, ch.offset, ch.clamp[0], ch.clamp[1], ch.smoothing
    return out_names, M, gain, offset, lo, hi, smooth, missing


def apply_linear(x: np.ndarray, M: np.ndarray, gain: np.ndarray, offset: np.ndarray,
                 lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(..., in) -> (..., out): the mix, gain, offset and clamp of every channel."""
    y = np.asarray(x, np.float32) @ M.T
    return np.clip(y * gain + offset, lo, hi).astype(np.float32, copy=False)


def smooth_frames(y: np.ndarray, smoothing: np.ndarray, fps: float) -> np.ndarray:
    """One-pole smoothing along axis 0 of (n, out) frames at `fps`."""
    a = np.power(smoothing, SMOOTHING_FPS / fps).astype(np.float32)
    if not np.any(a):
        return y
    out = np.empty_like(y)
    prev = y[0]
    for i in range(len(y)):
        prev = a * prev + (1 - a) * y[i]
        out[i] = prev
    return out


class Retargeter:
    """Stateful per-stream retargeting (smoothing remembers the previous frame)."""

    def __init__(self, profile: Profile | str | Path, source_names: Sequence[str] = ARKIT_NAMES):
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.source_names = tuple(source_names)
        (self.names, self.M, self.gain, self.offset, self.lo, self.hi, self.smoothing,
         self.missing) = profile_matrix(self.profile, self.source_names)
        self._prev: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._prev, self._t = None, None

    def __call__(self, weights: np.ndarray, t: float | None = None) -> np.ndarray:
        x = np.asarray(weights, np.float32)
        if x.shape != (len(self.source_names),):
            raise ValueError(f"expected {len(self.source_names)} weights, got shape {x.shape}")
        y = apply_linear(x, self.M, self.gain, self.offset, self.lo, self.hi)
        if self._prev is not None and np.any(self.smoothing):
            dt = 1.0 / SMOOTHING_FPS if t is None or self._t is None else t - self._t
            if 0.0 < dt < 1.0:  # a gap or a jump back (new utterance) restarts the filter
                a = np.power(self.smoothing, dt * SMOOTHING_FPS)
                y = (a * self._prev + (1 - a) * y).astype(np.float32)
        self._prev, self._t = y, t
        return y


def retarget_frames(profile: Profile | str, frames: np.ndarray, fps: float,
                    source_names: Sequence[str] = ARKIT_NAMES) -> tuple[tuple[str, ...], np.ndarray]:
    """Offline: (n, in) frames -> (names, (n, out) frames), smoothing included."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    names, M, gain, offset, lo, hi, smooth, _ = profile_matrix(prof, source_names)
    y = apply_linear(frames, M, gain, offset, lo, hi)
    return names, (smooth_frames(y, smooth, fps) if len(y) else y)


# ---------------------------------------------------------------- writing (used by calibrate)


def profile_to_toml(profile: Profile, header: str = "") -> str:
    """Serialise a profile as TOML that `load_profile` reads back to the same Profile."""
    def num(v: float) -> str:
        return repr(float(round(v, 6)))

    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)

    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"version = {PROFILE_VERSION}", f"name = {json.dumps(profile.name)}"]
    if profile.description:
        lines.append(f"description = {json.dumps(profile.description)}")
    lines.append(f"source = {json.dumps(profile.source)}")
    if profile.passthrough:
        lines.append("passthrough = true")
    d = profile.defaults
    lines += ["", "[defaults]", f"gain = {num(d.gain)}", f"offset = {num(d.offset)}",
              f"clamp = [{num(d.clamp[0])}, {num(d.clamp[1])}]", f"smoothing = {num(d.smoothing)}"]
    for c in profile.channels:
        lines += ["", f"[channels.{key(c.name)}]",
                  "map = { " + ", ".join(f"{key(k)} = {num(v)}" for k, v in c.map.items()) + " }"]
        if c.gain != d.gain:
            lines.append(f"gain = {num(c.gain)}")
        if c.offset != d.offset:
            lines.append(f"offset = {num(c.offset)}")
        if c.clamp != d.clamp:
            lines.append(f"clamp = [{num(c.clamp[0])}, {num(c.clamp[1])}]")
        if c.smoothing != d.smoothing:
            lines.append(f"smoothing = {num(c.smoothing)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- `realtalk-bridge profile check`


def add_arguments(parser) -> None:
    parser.add_argument("profiles", nargs="+", metavar="FILE",
                        help="profile files (.toml or .json) or preset names (" + ", ".join(preset_names()) + ")")
    parser.add_argument("--show", action="store_true", help="print each channel's mix, gain, offset, clamp, smoothing")


def run(args) -> int:
    status = 0
    for spec in args.profiles:
        try:
            prof = load_profile(spec)
        except ProfileError as exc:
            print(f"profile check: error: {exc}", file=sys.stderr)
            status = 1
            continue
        names = prof.output_names()
        print(f"ok: {spec}: profile {prof.name!r}, {len(names)} channels from {prof.source}"
              + (" (pass-through)" if prof.passthrough else ""))
        if args.show:
            for c in prof.channels:
                mix = " ".join(f"{w:+.2f}*{k}" for k, w in c.map.items())
                print(f"  {c.name:<20} = clamp({c.gain:g} * ({mix}) + {c.offset:g}, {c.clamp[0]:g}, {c.clamp[1]:g})"
                      + (f"  smoothing {c.smoothing:g}" if c.smoothing else ""))
    return status
