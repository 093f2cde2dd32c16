"""iFacialMocap text datagrams (UDP 49983), as the iOS app sends them.

One ASCII datagram per frame (v1, the default):
    tongueOut-0|eyeBlink_L-37|...|jawLeft-0|...|mouthSmile_R-4|...|=head#pitch,yaw,roll,x,y,z|
    rightEye#pitch,yaw,roll|leftEye#pitch,yaw,roll|        (one line; broken here for width)
v2 (asked for by receivers whose start message ends `|sendDataVersion=v2`) writes `name&value`
instead of `name-value`; everything else is the same. Blend shape values are integers 0-100;
shapes keep ARKit's names with `_L`/`_R` for Left/Right, except `jawLeft`, `jawRight`,
`mouthLeft` and `mouthRight`, which the app sends unchanged (the receivers' name tables, e.g.
VMagicMirror's iFacialMocapBlendShapeNames, list them so). Head and eye rotations are degrees,
head position metres.

The handshake: a receiver (VMagicMirror, talking-head-anime-3, VRCFaceTracking, ...) sends the start
message `iFacialMocap_sahuasouryya9218sauhuiayeta91555dy3719` (optionally `|sendDataVersion=v2`) to the
phone's UDP port 49983; the phone then streams to the sender's IP on port 49983. The sink listens for
that message (see `IFacialMocapSink`), answers in the version asked for, and streams to the address it
came from. Receivers that never send it get v1 at the configured address, as before.
"""
from __future__ import annotations

import logging
import math
import socket

import numpy as np

from realtalk_bridge.bridges import ArkitSink, BridgeConfigError, is_loopback, parse_endpoint
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES

log = logging.getLogger("realtalk_bridge.bridges")

IFACIALMOCAP_PORT = 49983
EYE_RANGE_DEG = 30.0  # eye rotation at eyeLook* = 1 (ARKit's eyes turn about this far)
START_MESSAGE = "iFacialMocap_sahuasouryya9218sauhuiayeta91555dy3719"
V2_SUFFIX = "|sendDataVersion=v2"
VERSIONS = ("v1", "v2")
# the four shapes whose Left/Right is part of the movement (jaw/mouth shifted sideways), not a side
KEEP_SUFFIX = frozenset({"jawLeft", "jawRight", "mouthLeft", "mouthRight"})


def ifm_name(arkit_name: str) -> str:
    """eyeBlinkLeft -> eyeBlink_L, mouthSmileRight -> mouthSmile_R; jawOpen, jawLeft, mouthRight unchanged."""
    if arkit_name in KEEP_SUFFIX:
        return arkit_name
    if arkit_name.endswith("Left"):
        return arkit_name[:-4] + "_L"
    if arkit_name.endswith("Right"):
        return arkit_name[:-5] + "_R"
    return arkit_name


IFM_NAMES = tuple(ifm_name(n) for n in ARKIT_NAMES)
# Order on the wire. Receivers read the entries into a map, so order means nothing to them, except
# VRCFaceTracking's iFacialMocap module, which skips the first entry of every datagram
# (`Split('|')[1..^1]`): lead with tongueOut, which speech rarely moves, rather than eyeBlink_L.
WIRE_ORDER = (ARKIT_INDEX["tongueOut"],) + tuple(i for i in range(len(ARKIT_NAMES)) if i != ARKIT_INDEX["tongueOut"])


def eye_angles(values: np.ndarray, side: str) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees for one eye from its eyeLook* coefficients.
    Pitch positive = up; yaw positive = towards the avatar's right."""
    g = lambda n: float(values[ARKIT_INDEX[n + side]])  # noqa: E731
    pitch = (g("eyeLookUp") - g("eyeLookDown")) * EYE_RANGE_DEG
    toward_right = g("eyeLookOut") - g("eyeLookIn") if side == "Right" else g("eyeLookIn") - g("eyeLookOut")
    return pitch, toward_right * EYE_RANGE_DEG, 0.0


def encode_ifacialmocap(values: np.ndarray, pose: np.ndarray | None = None, version: str = "v1") -> bytes:
    """52 ARKit values (Apple order) and an optional pose (pitch, yaw, roll rad; x, y, z m) -> datagram."""
    if version not in VERSIONS:
        raise ValueError(f"iFacialMocap version must be one of {VERSIONS}, got {version!r}")
    sep = "-" if version == "v1" else "&"
    v = np.clip(np.nan_to_num(np.asarray(values, np.float32)), 0.0, 1.0)
    ints = np.rint(v * 100.0).astype(int).tolist()
    parts = [f"{IFM_NAMES[k]}{sep}{ints[k]}" for k in WIRE_ORDER]
    if pose is None:
        head = [0.0] * 6
    else:
        p = [float(x) for x in pose]
        head = [math.degrees(p[0]), math.degrees(p[1]), math.degrees(p[2]), p[3], p[4], p[5]]
    fmt = lambda xs: ",".join(f"{x:.4f}" for x in xs)  # noqa: E731
    text = ("|".join(parts) + "|=head#" + fmt(head) + "|rightEye#" + fmt(eye_angles(v, "Right"))
            + "|leftEye#" + fmt(eye_angles(v, "Left")) + "|")
    return text.encode("ascii")


def parse_start_message(data: bytes) -> str | None:
    """A receiver's start message -> "v1" or "v2"; None for anything else."""
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if text == START_MESSAGE:
        return "v1"
    if text == START_MESSAGE + V2_SUFFIX:
        return "v2"
    return None


def resolve_listen(value, dest_host: str) -> tuple[str, int] | None:
    """Where to listen for the start message. None/"auto": 0.0.0.0:49983 when the receiver is on another
    machine (that is where the real app listens), off when it is on this one (the receiver itself
    binds 49983 here, and its start message goes to the phone's address, not to us). False/"off": off."""
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "no", "false", "none")):
        return None
    if isinstance(value, tuple) and len(value) == 2:  # (host, port) from Python; port 0 = any free port
        return str(value[0]), int(value[1])
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None if is_loopback(dest_host) else ("0.0.0.0", IFACIALMOCAP_PORT)
    host, port = parse_endpoint(value, IFACIALMOCAP_PORT, "ifacialmocap-listen")
    if value is True or (isinstance(value, (int, str)) and str(value).strip().isdigit()):
        host = "0.0.0.0"  # a bare flag or port listens on every interface, like the app
    return host, port


class IFacialMocapSink(ArkitSink):
    """iFacialMocap sender that also plays the phone's side of the handshake.

    Before each frame the sink reads, without blocking, the `listen` socket (see `resolve_listen`) and its
    own sending socket (only from the receiver it streams to). A start message switches the version
    (v1/v2) and moves the stream to the message's IP at `port` (the receiver's standard port), as the app
    does. Anything else arriving there is ignored (logged once)."""

    kind = "ifacialmocap"
    default_port = IFACIALMOCAP_PORT

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, profile=None, stream: str | None = None,
                 listen=None, version: str = "v1"):
        if version not in VERSIONS:
            raise BridgeConfigError(f"ifacialmocap_version: expected v1 or v2, got {version!r}")
        self.version = version
        self.listen_addr = resolve_listen(listen, host)  # before any socket exists: a bad value leaks nothing
        self.handshakes = 0
        self.listen_sock: socket.socket | None = None
        super().__init__(host, port, profile=profile, stream=stream)
        if self.listen_addr is not None:
            lhost, lport = self.listen_addr
            family = socket.AF_INET6 if ":" in lhost else socket.AF_INET
            s = socket.socket(family, socket.SOCK_DGRAM)
            try:
                s.bind((lhost, lport))
            except OSError as exc:  # taken (a receiver on this machine?): stream without the handshake
                s.close()
                log.warning("%s: cannot listen for the iFacialMocap start message on %s:%d (%s); streaming %s to "
                            "%s:%d without it", self, lhost, lport, exc.strerror, self.version, host, self.port)
                self.listen_addr = None
            else:
                s.setblocking(False)
                self.listen_sock = s
                self.listen_addr = s.getsockname()[:2]

    def __repr__(self) -> str:
        return f"IFacialMocapSink({self.host}:{self.port}, {self.version})"

    def poll_handshake(self) -> None:
        """Read every pending datagram on the listen socket and on the sending socket (VRCFaceTracking's
        module answers the first frame it gets, so its start message comes back to the sender's port);
        act on start messages, ignore anything else."""
        for sock in (self.listen_sock, self.sock):
            if sock is None:
                continue
            # on the sending socket only the receiver we already stream to may redirect the stream
            only_from = self.addr[0] if sock is self.sock else None
            for _ in range(64):  # bounded: a flood cannot stall the frame
                try:
                    data, addr = sock.recvfrom(512)
                except OSError:  # nothing pending (BlockingIOError), or an ICMP error surfacing here
                    break
                version = parse_start_message(data)
                if only_from is not None and addr[0] != only_from:
                    self._log_once("stranger", "%s: ignored a datagram from %s on the sending socket (only %s, the "
                                               "receiver, may answer there)", self, addr[0], only_from)
                elif version is None:
                    self._log_once("not-start", "%s: ignored a datagram that is not the iFacialMocap start message",
                                   self)
                elif len(addr) != len(self.addr):  # IPv6 handshake for an IPv4 sink or the reverse
                    self._log_once("family", "%s: start message from %s ignored: the bridge sends over another IP "
                                             "version (give --ifacialmocap a host of that family)", self, addr[0])
                else:
                    self._handshake(version, addr)

    def _handshake(self, version: str, addr) -> None:
        self.handshakes += 1
        dest = (addr[0], self.port) + tuple(addr[2:])
        if dest != tuple(self.addr) or version != self.version:
            log.info("%s: start message from %s (%s): streaming to %s:%d", self, addr[0], version, addr[0], self.port)
        self.version, self.host, self.addr = version, addr[0], dest

    def send(self, stream, seq, t, names, weights, pose=None) -> None:
        with self._lock:
            self.poll_handshake()
        super().send(stream, seq, t, names, weights, pose)

    def encode(self, stream, seq, t, names, weights, pose):
        return encode_ifacialmocap(self.arkit_values(stream, t, names, weights), pose, self.version)

    def close(self) -> None:
        with self._lock:
            if self.listen_sock is not None:
                self.listen_sock.close()
        super().close()
