"""Non-verbal channels: blinks, idle head motion, gaze drift and an emotion overlay.

The A2E model drives the mouth; between words an avatar would otherwise freeze. `NonVerbal`
adds the small motions people make anyway, each switchable, and mixes an emotion overlay on
top of speech without opening lips the speech channel holds closed (bilabials: m, b, p).

Everything is a pure function of (seed, the sequence of `t` values): two instances with the
same seed fed the same frames produce the same output.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Emotion overlays in ARKit-52 at strength 1. Brows, eyes and cheeks carry most of an
# expression; mouth shapes that would fight the lip-sync stay small.
EMOTIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"mouthSmileLeft": 0.6, "mouthSmileRight": 0.6, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4,
              "eyeSquintLeft": 0.25, "eyeSquintRight": 0.25, "mouthDimpleLeft": 0.2, "mouthDimpleRight": 0.2},
    "sad": {"browInnerUp": 0.6, "mouthFrownLeft": 0.5, "mouthFrownRight": 0.5, "mouthShrugLower": 0.2,
            "eyeSquintLeft": 0.1, "eyeSquintRight": 0.1},
    "angry": {"browDownLeft": 0.7, "browDownRight": 0.7, "noseSneerLeft": 0.3, "noseSneerRight": 0.3,
              "eyeSquintLeft": 0.3, "eyeSquintRight": 0.3, "mouthPressLeft": 0.2, "mouthPressRight": 0.2},
    "surprised": {"browInnerUp": 0.6, "browOuterUpLeft": 0.7, "browOuterUpRight": 0.7, "eyeWideLeft": 0.6,
                  "eyeWideRight": 0.6, "jawOpen": 0.15, "mouthLowerDownLeft": 0.1, "mouthLowerDownRight": 0.1},
}

# Shapes that part the lips. The overlay's share of these is scaled down by the speech
# channel's lip closure so that an "m" stays an "m" whatever the emotion.
OPENING = ("jawOpen", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
           "mouthFunnel")
EMOTION_TAU = 0.3  # s, how fast an emotion fades in or out

# Blinks (Doughty 2001, conversational blinking): ~15-20 per minute, ~0.1 s closing,
# slower opening; sometimes in pairs.
BLINK_MEDIAN_S, BLINK_SIGMA, BLINK_MIN_S, BLINK_MAX_S = 3.2, 0.5, 0.8, 9.0
BLINK_DOUBLE_P = 0.12

GAZE_YAW_SD, GAZE_PITCH_SD, GAZE_LIMIT = 0.12, 0.06, 0.35  # in eyeLook* weight units
GAZE_FIX_MEDIAN_S = 1.4
GAZE_SACCADE_S = 0.05

# Idle head motion amplitudes (radians, metres): about 1-2 degrees and a few millimetres.
HEAD_AMP = np.array([0.030, 0.040, 0.018, 0.003, 0.002, 0.003])
SPEECH_NOD = 0.04  # rad of extra pitch per unit of jaw emphasis


def blink_curve(u: float, close: float, hold: float, open_: float) -> float:
    """Eyelid closure 0..1 at `u` seconds into a blink: fast ease-in close, hold, slower open."""
    if u < 0.0:
        return 0.0
    if u < close:
        x = u / close
        return x * x * (3 - 2 * x)
    u -= close
    if u < hold:
        return 1.0
    u -= hold
    if u < open_:
        x = 1.0 - u / open_
        return x * x * (3 - 2 * x)
    return 0.0


def gaze_weights(yaw: float, pitch: float) -> dict[str, float]:
    """Gaze direction (positive yaw = the avatar's right, positive pitch = up) -> eyeLook* weights."""
    w = {}
    if yaw > 0:
        w["eyeLookOutRight"] = w["eyeLookInLeft"] = yaw
    elif yaw < 0:
        w["eyeLookOutLeft"] = w["eyeLookInRight"] = -yaw
    if pitch > 0:
        w["eyeLookUpLeft"] = w["eyeLookUpRight"] = pitch
    elif pitch < 0:
        w["eyeLookDownLeft"] = w["eyeLookDownRight"] = -pitch
    return w


def lip_closure(get) -> float:
    """0..1: how firmly the speech channel holds the lips together (mouthClose, press, roll)."""
    press = 0.5 * (get("mouthPressLeft") + get("mouthPressRight"))
    roll = 0.5 * (get("mouthRollLower") + get("mouthRollUpper"))
    # ARKit coefficients from a regressor are rarely exactly 0: a fifth of the range already
    # means the speech channel wants the lips together
    return float(np.clip(5.0 * max(get("mouthClose"), press, roll), 0.0, 1.0))


def screen(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Add b on top of a without passing 1 and without lowering a (a 'screen' blend)."""
    return np.maximum(a, 1.0 - (1.0 - a) * (1.0 - b))  # maximum: no float rounding below a


class NonVerbal:
    """Per-stream non-verbal layer. `step(t, weights) -> (weights, pose)`.

    names: the layout of `weights` (ARKit-52 names; shapes this layer uses but the layout
    lacks are skipped). pose is 6 floats (pitch, yaw, roll in radians; x, y, z in metres) or
    None when idle head motion is off. `blink`, `idle`, `gaze` may be switched at any time.
    """

    def __init__(self, names: Sequence[str], blink: bool = True, idle: bool = True, gaze: bool = True,
                 seed: int | None = None):
        self.names = tuple(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.blink, self.idle, self.gaze = bool(blink), bool(idle), bool(gaze)
        self.rng = np.random.default_rng(seed)
        self.emotion, self.strength = "neutral", 0.0
        self._target = np.zeros(len(self.names), np.float32)
        self._overlay = np.zeros(len(self.names), np.float32)
        self._opening = np.array([n in OPENING for n in self.names])
        # idle head: three sines per pose axis with random frequencies and phases
        self._head_f = self.rng.uniform(0.05, 0.35, size=(6, 3))
        self._head_p = self.rng.uniform(0, 2 * math.pi, size=(6, 3))
        self._head_a = HEAD_AMP[:, None] * np.array([0.6, 0.3, 0.15])[None, :] / 1.05
        self._t: float | None = None
        self._jaw_fast = self._jaw_slow = 0.0
        self._restart(0.0)

    # -- control

    def set_emotion(self, name: str, strength: float = 1.0) -> None:
        """Fade to emotion `name` (one of EMOTIONS) at `strength` 0..1; "neutral" or 0 clears it."""
        if not isinstance(name, str) or name not in EMOTIONS:
            raise ValueError(f"unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)}")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
                or not 0.0 <= strength <= 1.0:
            raise ValueError(f"emotion strength must be a number from 0 to 1, got {strength!r}")
        self.emotion, self.strength = name, float(strength)
        self._target[:] = 0.0
        for shape, w in EMOTIONS[name].items():
            if shape in self.index:
                self._target[self.index[shape]] = w * self.strength

    # -- schedules

    def _restart(self, t: float) -> None:
        """(Re)start the blink and gaze schedules at t (first frame, or time jumped back)."""
        self._blinks: list[tuple[float, float, float, float]] = []
        self._next_blink = t + self.rng.uniform(0.5, 2.5)
        self._gaze_from = self._gaze_to = (0.0, 0.0)
        self._gaze_start = t
        self._next_gaze = t + self._fixation()

    def _fixation(self) -> float:
        return float(np.clip(self.rng.lognormal(math.log(GAZE_FIX_MEDIAN_S), 0.6), 0.4, 5.0))

    def _blink_at(self, t: float) -> float:
        while t >= self._next_blink:
            start = self._next_blink
            self._blinks.append(self._new_blink(start))
            if self.rng.random() < BLINK_DOUBLE_P:
                start += self.rng.uniform(0.25, 0.4)
                self._blinks.append(self._new_blink(start))
            interval = self.rng.lognormal(math.log(BLINK_MEDIAN_S), BLINK_SIGMA)
            self._next_blink = start + float(np.clip(interval, BLINK_MIN_S, BLINK_MAX_S))
        self._blinks = [b for b in self._blinks if t < b[0] + b[1] + b[2] + b[3]]
        return max((blink_curve(t - s, c, h, o) for s, c, h, o in self._blinks), default=0.0)

    def _new_blink(self, start: float) -> tuple[float, float, float, float]:
        return (start, self.rng.uniform(0.06, 0.09), self.rng.uniform(0.02, 0.05), self.rng.uniform(0.12, 0.2))

    def _gaze_at(self, t: float) -> tuple[float, float]:
        while t >= self._next_gaze:
            self._gaze_from = self._gaze_to
            self._gaze_start = self._next_gaze
            if self.rng.random() < 0.4:  # come back towards the listener
                target = (0.0, 0.0)
            else:
                target = (float(np.clip(self.rng.normal(0, GAZE_YAW_SD), -GAZE_LIMIT, GAZE_LIMIT)),
                          float(np.clip(self.rng.normal(0, GAZE_PITCH_SD), -GAZE_LIMIT, GAZE_LIMIT)))
            self._gaze_to = target
            self._next_gaze = self._gaze_start + GAZE_SACCADE_S + self._fixation()
        x = min(1.0, (t - self._gaze_start) / GAZE_SACCADE_S)
        x = x * x * (3 - 2 * x)
        return tuple(a + (b - a) * x for a, b in zip(self._gaze_from, self._gaze_to))

    def _head_at(self, t: float, jaw: float, dt: float) -> np.ndarray:
        pose = (self._head_a * np.sin(2 * math.pi * self._head_f * t + self._head_p)).sum(axis=1)
        # speech emphasis nods the head a little: fast minus slow envelope of the jaw
        self._jaw_fast += (jaw - self._jaw_fast) * (1 - math.exp(-dt / 0.08))
        self._jaw_slow += (jaw - self._jaw_slow) * (1 - math.exp(-dt / 0.6))
        pose[0] += SPEECH_NOD * (self._jaw_fast - self._jaw_slow)
        return pose.astype(np.float32)

    # -- per frame

    def step(self, t: float, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        w = np.nan_to_num(np.array(weights, dtype=np.float32, copy=True).reshape(-1))
        if w.shape[0] != len(self.names):
            raise ValueError(f"expected {len(self.names)} weights, got {w.shape[0]}")
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"frame time must be finite, got {t}")
        if self._t is None or t < self._t - 1e-6:
            self._restart(t)
            dt = 0.0
        else:
            dt = t - self._t
        self._t = t
        idx = self.index

        def get(name: str) -> float:
            i = idx.get(name)
            return float(w[i]) if i is not None else 0.0

        # emotion overlay: ease towards the target, then blend without opening closed lips
        self._overlay += (self._target - self._overlay) * (1 - math.exp(-dt / EMOTION_TAU) if dt > 0 else 0.0)
        if np.any(self._overlay > 1e-4):
            o = self._overlay.copy()
            o[self._opening] *= 1.0 - lip_closure(get)
            w = screen(np.clip(w, 0.0, 1.0), o).astype(np.float32)

        if self.blink:
            b = self._blink_at(t)
            for n in ("eyeBlinkLeft", "eyeBlinkRight"):
                if n in idx:
                    w[idx[n]] = max(w[idx[n]], b)
        if self.gaze:
            for n, v in gaze_weights(*self._gaze_at(t)).items():
                if n in idx:
                    w[idx[n]] = max(w[idx[n]], v)
        pose = self._head_at(t, get("jawOpen"), dt) if self.idle else None
        return w, pose


# ---------------------------------------------------------------- options for `serve`

DEFAULTS = {"blink": True, "idle": True, "gaze": True, "emotion": None, "nonverbal_seed": None}


def add_arguments(parser) -> None:
    """`serve` flags that tune the non-verbal layer (switched on by the sidecar's --nonverbal)."""
    g = parser.add_argument_group("non-verbal channels")
    g.add_argument("--no-blink", dest="blink", action="store_false", default=None, help="no procedural blinks")
    g.add_argument("--no-idle", dest="idle", action="store_false", default=None, help="no idle head motion")
    g.add_argument("--no-gaze", dest="gaze", action="store_false", default=None, help="no gaze drift")
    g.add_argument("--emotion", default=None, metavar="NAME[:STRENGTH]",
                   help="start with an emotion overlay: " + ", ".join(EMOTIONS) + " (strength 0..1, default 1)")
    g.add_argument("--nonverbal-seed", type=int, default=None, help="seed for reproducible blinks and motion")


def parse_emotion(text: str) -> tuple[str, float]:
    """"happy" or "happy:0.5" -> ("happy", 0.5); ValueError with the choices otherwise."""
    name, _, strength = str(text).partition(":")
    try:
        value = float(strength) if strength else 1.0
    except ValueError:
        raise ValueError(f"emotion strength must be a number, got {strength!r}") from None
    NonVerbal(()).set_emotion(name, value)  # validates
    return name, value


def from_options(names: Sequence[str], opts=None) -> NonVerbal:
    """A NonVerbal for one stream from argparse args or a config mapping (keys of DEFAULTS)."""
    o = dict(DEFAULTS)
    src = opts if isinstance(opts, dict) else (vars(opts) if opts is not None else {})
    o.update({k: v for k, v in src.items() if k in DEFAULTS and v is not None})
    for k in ("blink", "idle", "gaze"):
        if not isinstance(o[k], bool):
            raise ValueError(f"{k}: expected true or false, got {o[k]!r}")
    if o["nonverbal_seed"] is not None and (isinstance(o["nonverbal_seed"], bool)
                                            or not isinstance(o["nonverbal_seed"], int)):
        raise ValueError(f"nonverbal_seed: expected an integer, got {o['nonverbal_seed']!r}")
    nv = NonVerbal(names, blink=o["blink"], idle=o["idle"], gaze=o["gaze"], seed=o["nonverbal_seed"])
    if o["emotion"]:
        nv.set_emotion(*parse_emotion(o["emotion"]))
    return nv
