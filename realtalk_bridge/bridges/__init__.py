"""UDP bridges to apps that need no plugin: VMC (VSeeFace, VNyan, Warudo, VMagicMirror, EVMC4U),
iFacialMocap receivers, and Unreal Live Link Face.

The sidecar calls `add_arguments(parser)` for the `serve` flags and `make_sinks(args_or_config)`
for the sinks; it then calls `sink.send(stream, seq, t, names, weights, pose)` for every published
frame and `sink.close()` on shutdown. Encoders (frame -> bytes) are pure functions in each
module; the socket code is here, in `UDPSink`.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
import threading
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger("realtalk_bridge.bridges")

DEFAULT_HOST = "127.0.0.1"
VMC_NAME_CHOICES = ("arkit", "arkit-pascal", "vrm", "vrm0", "vrm1", "ovr")
MAX_STREAM_STATES = 64  # per-stream retargeting state kept by a sink


# Options this package reads (flag names with `_`), with their defaults: a sidecar config file may
# set any of them (`vmc = 39539`, `vmc_names = "vrm"`, ...); merge them with the command line and
# pass the result to `make_sinks`.
DEFAULTS: dict[str, Any] = {
    "vmc": None, "vmc_names": "arkit", "vmc_head": False, "vmc_head_offset": "0,0.08,0", "ifacialmocap": None,
    "ifacialmocap_listen": None, "livelink": None, "livelink_subject": "RealTalk", "arkit_profile": None,
    "bridge_stream": None,
}


class BridgeConfigError(ValueError):
    """A bridge flag or config value that cannot be used; the message says which and why."""


def parse_endpoint(value: Any, default_port: int, what: str = "bridge") -> tuple[str, int]:
    """`True`/None/"" -> default; "PORT"; "HOST"; "HOST:PORT"; "[v6]:PORT" -> (host, port)."""
    if value is None or value is True or value == "":
        return DEFAULT_HOST, default_port
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BridgeConfigError(f"--{what}: expected [HOST:]PORT, got {value!r}")
    text = str(value).strip()
    host, port_s = DEFAULT_HOST, None
    if text.isdigit():
        port_s = text
    elif text.startswith("["):  # [v6]:port
        end = text.find("]")
        if end < 0:
            raise BridgeConfigError(f"--{what}: unclosed '[' in {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise BridgeConfigError(f"--{what}: expected [HOST]:PORT, got {text!r}")
            port_s = rest[1:]
    elif text.count(":") == 1:
        host, port_s = text.split(":")
    elif text.count(":") > 1:  # a bare IPv6 address
        host = text
    else:
        host = text
    if not host:
        raise BridgeConfigError(f"--{what}: empty host in {text!r}")
    if port_s is None:
        port = default_port
    else:
        if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
            raise BridgeConfigError(f"--{what}: port must be 1-65535, got {port_s!r}")
        port = int(port_s)
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class UDPSink:
    """Sends one datagram per frame to (host, port). Never raises on send: a bridge must not
    take the sidecar down because a receiver is missing; errors are counted and logged once."""

    kind = "udp"
    default_port = 0

    def __init__(self, host: str = DEFAULT_HOST, port: int | None = None, stream: str | None = None):
        self.host, self.port = host, int(port or self.default_port)
        self.stream = stream
        try:
            infos = socket.getaddrinfo(host, self.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise BridgeConfigError(f"--{self.kind}: cannot resolve host {host!r}: {exc.strerror}") from None
        family, _, _, _, self.addr = infos[0]
        if not is_loopback(host):
            log.warning("%s bridge sends to non-loopback %s:%d: frames leave this machine", self.kind, host, self.port)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sent = self.dropped = self.errors = 0
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self._states: OrderedDict[str, Any] = OrderedDict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host}:{self.port})"

    # subclasses: frame -> bytes, a list of datagrams, or None to skip
    def encode(self, stream: str, seq: int, t: float, names: Sequence[str], weights: np.ndarray,
               pose: np.ndarray | None) -> bytes | list[bytes] | None:
        raise NotImplementedError

    def state(self, stream: str, make):
        """Per-stream state (e.g. a retargeter with smoothing memory), least recently used dropped."""
        st = self._states.get(stream)
        if st is None:
            st = self._states[stream] = make()
            if len(self._states) > MAX_STREAM_STATES:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(stream)
        return st

    def send(self, stream: str, seq: int, t: float, names: Sequence[str], weights, pose=None) -> None:
        if self.stream is not None and stream != self.stream:
            return
        w = np.nan_to_num(np.asarray(weights, dtype=np.float32).reshape(-1), nan=0.0, posinf=1.0, neginf=0.0)
        if len(names) != w.shape[0]:
            self._log_once("shape", "%s: %d names but %d weights; frame skipped", self, len(names), w.shape[0])
            return
        p = None
        if pose is not None:
            p = np.nan_to_num(np.asarray(pose, dtype=np.float32).reshape(-1))
            if p.shape[0] != 6:
                self._log_once("pose", "%s: pose must be 6 floats, got %d; pose ignored", self, p.shape[0])
                p = None
        t = float(t) if t is not None and math.isfinite(float(t)) else 0.0
        t = min(max(t, -1e9), 1e9)  # float32 on the wire (OSC, Live Link): keep it representable
        with self._lock:
            data = self.encode(stream, int(seq), t, tuple(names), w, p)
            if data is None:
                return
            try:
                for packet in ([data] if isinstance(data, bytes) else data):
                    self.sock.sendto(packet, self.addr)
                self.sent += 1
            except BlockingIOError:  # socket buffer full: drop this frame, the next one supersedes it
                self.dropped += 1
            except OSError as exc:  # e.g. ICMP port unreachable, network down, datagram too large
                self.errors += 1
                self._log_once(type(exc).__name__, "%s: send failed (%s); will keep trying", self, exc)

    def _log_once(self, key: str, msg: str, *args) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(msg, *args)

    def close(self) -> None:
        with self._lock:
            self.sock.close()


class ArkitSink(UDPSink):
    """A sink whose receiver wants ARKit-52 values (iFacialMocap, Live Link), optionally through an
    ARKit-output profile (per-channel gains from `profile calibrate`, say)."""

    def __init__(self, host: str = DEFAULT_HOST, port: int | None = None, profile=None, stream: str | None = None):
        self.profile = None
        if profile is not None:
            from realtalk_bridge.face.arkit import ARKIT_NAMES

            if not isinstance(profile, (str, os.PathLike)) or not str(profile):
                raise BridgeConfigError(f"--arkit-profile: expected a preset name or a file, got {profile!r}")
            from realtalk_bridge.face.retarget import ProfileError, load_profile

            try:
                self.profile = load_profile(profile)
            except ProfileError as exc:
                raise BridgeConfigError(f"--arkit-profile: {exc}") from None
            extra = [n for n in self.profile.output_names() if n not in ARKIT_NAMES]
            if extra:
                raise BridgeConfigError(f"--arkit-profile: {self.profile.path}: the {self.kind} bridge needs ARKit "
                                        f"channel names; not ARKit: {', '.join(extra[:5])}")
        super().__init__(host, port, stream)

    def arkit_values(self, stream: str, t: float, names: tuple, weights: np.ndarray) -> np.ndarray:
        """This frame as 52 values in Apple order (missing shapes are 0)."""
        if self.profile is None:
            cached = getattr(self, "_index", None)
            if cached is None or cached[0] != names:
                cached = self._index = (names, arkit_index(names))
                if not np.any(cached[1] >= 0):
                    self._log_once("layout", "%s: the stream's layout has no ARKit names; sending zeros", self)
            # ARKit coefficients are 0..1; a regressor may overshoot, receivers must not see it
            return np.clip(take(weights, cached[1]), 0.0, 1.0)
        from realtalk_bridge.face.retarget import Retargeter

        r = self.state(stream, lambda: Retargeter(self.profile, names))
        if r.source_names != names:
            self._states.pop(stream)
            r = self.state(stream, lambda: Retargeter(self.profile, names))
            r.index = None
        if getattr(r, "index", None) is None:
            r.index = arkit_index(r.names)
        return take(r(weights, t), r.index)


def arkit_index(names: Sequence[str]) -> np.ndarray:
    """For each ARKit-52 name, its position in `names` or -1."""
    from realtalk_bridge.face.arkit import ARKIT_NAMES

    pos = {n: i for i, n in enumerate(names)}
    return np.array([pos.get(n, -1) for n in ARKIT_NAMES], dtype=np.int64)


def take(weights: np.ndarray, index: np.ndarray) -> np.ndarray:
    """weights gathered by `index`, 0 where the index is -1."""
    out = np.zeros(len(index), np.float32)
    ok = index >= 0
    out[ok] = weights[index[ok]]
    return out


# ---------------------------------------------------------------- flags, config, factory


def add_arguments(parser) -> None:
    g = parser.add_argument_group("bridges (UDP outputs for apps that need no plugin)")
    g.add_argument("--vmc", nargs="?", const=True, default=None, metavar="[HOST:]PORT",
                   help="send VMC protocol (OSC/UDP) blend shapes; bare flag = 127.0.0.1:39539")
    # defaults are None here (DEFAULTS holds the real ones) so a config file value is not masked by argparse
    g.add_argument("--vmc-names", default=None, metavar="NAMES",
                   help="blend shape names sent over VMC: arkit (PerfectSync, default), arkit-pascal "
                        "(EyeBlinkLeft...), vrm (= vrm0: A I U E O Blink_L...), vrm1 (aa ih ou...), ovr, "
                        "or a profile file (.toml/.json)")
    g.add_argument("--vmc-head", action="store_const", const=True, default=None,
                   help="also send the idle head motion: /VMC/Ext/Root/Pos (origin) and /VMC/Ext/Bone/Pos Head "
                        "(local position = --vmc-head-offset + the idle translation, and rotation)")
    g.add_argument("--vmc-head-offset", default=None, metavar="X,Y,Z",
                   help="the avatar's Neck->Head local position in metres (Unity axes), sent as the Head bone's "
                        "position with --vmc-head (default 0,0.08,0)")
    g.add_argument("--ifacialmocap", nargs="?", const=True, default=None, metavar="[HOST:]PORT",
                   help="send iFacialMocap text datagrams; bare flag = 127.0.0.1:49983")
    g.add_argument("--ifacialmocap-listen", nargs="?", const=True, default=None, metavar="[HOST:]PORT|off",
                   help="listen here for a receiver's iFacialMocap start message (it picks v1/v2 and where to "
                        "stream); default: 0.0.0.0:49983 when --ifacialmocap is another machine, off for this one")
    g.add_argument("--livelink", nargs="?", const=True, default=None, metavar="[HOST:]PORT",
                   help="send Live Link Face (Unreal) packets; bare flag = 127.0.0.1:11111")
    g.add_argument("--livelink-subject", default=None, metavar="NAME",
                   help="Live Link subject name shown in Unreal (default RealTalk)")
    g.add_argument("--arkit-profile", default=None, metavar="PROFILE",
                   help="ARKit-output profile (e.g. a calibrated copy of `arkit`) applied before the "
                        "iFacialMocap and Live Link bridges")
    g.add_argument("--bridge-stream", default=None, metavar="ID",
                   help="send only this stream's frames to the bridges (default: every stream)")


def _options(args_or_config: Any) -> dict[str, Any]:
    """DEFAULTS overlaid with the values that are set (not None) in args or a config mapping."""
    if isinstance(args_or_config, Mapping):
        cfg = dict(args_or_config)
        if isinstance(cfg.get("bridges"), Mapping):
            cfg = dict(cfg["bridges"])
        given = {k.replace("-", "_"): v for k, v in cfg.items()}
    else:
        given = dict(vars(args_or_config))
    opts = dict(DEFAULTS)
    opts.update({k: v for k, v in given.items() if k in DEFAULTS and v is not None})
    return opts


def make_sinks(args_or_config: Any) -> list[UDPSink]:
    """Sinks for the bridges switched on in argparse args or a config mapping (keys as the flags,
    e.g. {"vmc": "127.0.0.1:39539", "vmc_names": "vrm"}, optionally under a "bridges" table).
    Raises BridgeConfigError (a ValueError) with a clear message on a bad value."""
    from realtalk_bridge.bridges.ifacialmocap import IFacialMocapSink
    from realtalk_bridge.bridges.livelink import LiveLinkSink
    from realtalk_bridge.bridges.vmc import VMCSink

    o = _options(args_or_config)
    stream = o.get("bridge_stream")
    if stream is not None and not isinstance(stream, str):
        raise BridgeConfigError(f"bridge_stream: expected a stream id, got {stream!r}")
    arkit_profile = o.get("arkit_profile")
    if not isinstance(o.get("vmc_head", False), bool):
        raise BridgeConfigError(f"vmc_head: expected true or false, got {o['vmc_head']!r}")
    sinks: list[UDPSink] = []
    try:
        if o.get("vmc") not in (None, False):
            host, port = parse_endpoint(o["vmc"], VMCSink.default_port, "vmc")
            sinks.append(VMCSink(host, port, names=o["vmc_names"], head=o["vmc_head"],
                                 stream=stream, head_offset=o["vmc_head_offset"]))
        if o.get("ifacialmocap") not in (None, False):
            host, port = parse_endpoint(o["ifacialmocap"], IFacialMocapSink.default_port, "ifacialmocap")
            sinks.append(IFacialMocapSink(host, port, profile=arkit_profile, stream=stream,
                                          listen=o.get("ifacialmocap_listen")))
        if o.get("livelink") not in (None, False):
            host, port = parse_endpoint(o["livelink"], LiveLinkSink.default_port, "livelink")
            sinks.append(LiveLinkSink(host, port, subject=o["livelink_subject"],
                                      profile=arkit_profile, stream=stream))
    except Exception:
        for s in sinks:
            s.close()
        raise
    for s in sinks:
        log.info("bridge: %s", s)
    return sinks
