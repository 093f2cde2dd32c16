"""iFacialMocap output (`--ifacialmocap`) checked against ports of real receivers' parse code, over real UDP.

No PyPI/npm package parses iFacialMocap, so each receiver below is a port (the logic, rewritten) of:
- malaybaku/VMagicMirror: ExternalTracker/iFacialMocap/iFacialMocapReceiver.cs (DeserializeMessageWithLessGcAlloc,
  ApplyDeserializeResult) with its name table iFacialMocapBlendShapeNames.cs;
- pkhungurn/talking-head-anime-3-demo: tha3/mocap/ifacialmocap_v2.py (parse_ifacialmocap_v1_pose /
  parse_ifacialmocap_v2_pose; tha3/app/ifacialmocap_puppeteer.py sends the v2 start message);
- Inochi2D/facetrack-d: source/ft/adaptors/ifacialmocap.d (IFMTrackingData, IFMAdaptor.poll);
- VRCFaceTracking's iFacialMocap module (iFacialMocapTrackingModule, iFacialMocapServer.cs: Connect answers the
  first datagram with the v2 start message to its sender; ReadData/HandleChange).
"""
from __future__ import annotations

import math
import socket

import numpy as np
import pytest

from realtalk_bridge.bridges import make_sinks
from realtalk_bridge.bridges.ifacialmocap import IFM_NAMES, START_MESSAGE, IFacialMocapSink, encode_ifacialmocap
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES

RNG = np.random.default_rng(49983)
V2_START = (START_MESSAGE + "|sendDataVersion=v2").encode()


def udp_socket(host="127.0.0.1", port=0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    s.settimeout(2.0)
    return s


@pytest.fixture
def rx():
    s = udp_socket()
    yield s
    s.close()


def frame():
    w = RNG.uniform(0.0, 1.0, 52).astype(np.float32)
    w[ARKIT_INDEX["jawLeft"]], w[ARKIT_INDEX["mouthRight"]] = 0.37, 0.81  # the four suffix-keeping shapes
    w[ARKIT_INDEX["jawRight"]], w[ARKIT_INDEX["mouthLeft"]] = 0.12, 0.55
    pose = np.array([0.1, -0.25, 0.05, 0.012, -0.004, 0.03], np.float32)
    return w, pose


def expect_int(w, name) -> int:
    return int(np.rint(float(np.clip(w[ARKIT_INDEX[name]], 0, 1)) * 100))


# ---------------------------------------------------------------- VMagicMirror (port)

# iFacialMocapBlendShapeNames.cs: the key VMagicMirror looks up for each ARKit shape
VMM_NAMES = {n: (n if n in ("jawLeft", "jawRight", "mouthLeft", "mouthRight") or not n.endswith(("Left", "Right"))
                 else n[:-4] + "_L" if n.endswith("Left") else n[:-5] + "_R") for n in ARKIT_NAMES}
VMM_NAMES["browDownRight"] = "browDown_Right"  # sic: that table's spelling (so VMagicMirror never reads it)


def vmm_parse(text: str):
    """DeserializeMessageWithLessGcAlloc: drop spaces, exactly one '='; blend shapes are '|'-terminated
    'key-int' sections before it (int.TryParse), then 'head#' with 6 (rotation + position) or 3 floats."""
    s = text.replace(" ", "")
    if s.count("=") != 1 or s.endswith("="):
        return None
    eq = s.index("=")
    shapes: dict[str, float] = {}
    start = 0
    for i in range(eq):
        if s[i] != "|":
            continue
        section, start = s[start:i], i + 1
        for j, ch in enumerate(section):
            if ch == "-":
                try:
                    shapes[section[:j]] = int(section[j + 1:]) * 0.01  # C# int.TryParse: digits only
                except ValueError:
                    pass
    head = None
    start = eq + 1
    for i in range(eq + 1, len(s)):
        if s[i] != "|":
            continue
        section, start = s[start:i], i + 1
        if section.startswith("head#"):
            items = section[5:].split(",")
            if len(items) > 5:
                head = [float(x) for x in items[:6]]
    # ApplyDeserializeResult reads only the table's keys (missing ones stay at 0)
    return {n: shapes.get(key, 0.0) for n, key in VMM_NAMES.items()}, head


def test_vmagicmirror_reads_every_shape_including_jaw_and_mouth_sideways(rx):
    w, pose = frame()
    sink = IFacialMocapSink("127.0.0.1", rx.getsockname()[1])
    sink.send("mic", 0, 0.0, ARKIT_NAMES, w, pose)
    shapes, head = vmm_parse(rx.recv(65536).decode("ascii"))
    sink.close()
    for n in ARKIT_NAMES:
        if n == "browDownRight":  # lost by VMagicMirror's own table typo, whatever the sender does
            assert shapes[n] == 0.0
            continue
        assert shapes[n] == pytest.approx(expect_int(w, n) / 100), n
    assert (shapes["jawLeft"], shapes["mouthRight"], shapes["mouthLeft"]) == pytest.approx((0.37, 0.81, 0.55))
    assert head == pytest.approx([*np.degrees(pose[:3]), *pose[3:]], abs=1e-4)  # degrees, then metres


# ---------------------------------------------------------------- talking-head-anime-3 (port)


def tha3_parse(text: str, version: str) -> dict:
    """parse_ifacialmocap_v{1,2}_pose: v2 entries are 'key&value', v1 'key-value' (asserting 2 parts);
    value / 100; a trailing _L/_R becomes Left/Right; only ARKit names are kept; angles degrees -> radians."""
    out = {}
    for part in (p.strip() for p in text.split("|")):
        if not part:
            continue
        for key in ("=head#", "rightEye#", "leftEye#"):
            if part.startswith(key):
                vals = [float(x) for x in part[len(key):].split(",")]
                if key == "=head#":
                    assert len(vals) == 6
                out[key.strip("=#")] = [math.radians(v) for v in vals[:3]]
                break
        else:
            if version == "v2":
                if "&" not in part:
                    continue
                comps = part.split("&")
            else:
                comps = part.split("-")
            assert len(comps) == 2, part
            name, value = comps[0], float(comps[1]) / 100.0
            if name.endswith("_L"):
                name = name[:-2] + "Left"
            elif name.endswith("_R"):
                name = name[:-2] + "Right"
            if name in ARKIT_NAMES:
                out[name] = value
    return out


def test_tha3_v2_handshake_switches_format_and_destination():
    """tha3 binds 49983 (here: an ephemeral port P), sends the v2 start message from a throwaway socket to
    the phone's listen port, and reads 'name&value'. Before it, the sink streams v1 to its configured host
    (127.0.0.2 here, where nobody listens); after it, v2 to the handshake's IP at port P."""
    receiver = udp_socket()
    port = receiver.getsockname()[1]
    sink = IFacialMocapSink("127.0.0.2", port, listen=("127.0.0.1", 0))
    try:
        w, pose = frame()
        sink.send("mic", 0, 0.0, ARKIT_NAMES, w, pose)  # v1 to 127.0.0.2: the receiver sees nothing
        receiver.settimeout(0.2)
        with pytest.raises(socket.timeout):
            receiver.recv(65536)
        starter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        starter.sendto(V2_START, sink.listen_addr)  # what on_start_capture does
        starter.close()
        receiver.settimeout(2.0)
        for _ in range(50):  # the start message is read before the next frame goes out
            sink.send("mic", 1, 1 / 60, ARKIT_NAMES, w, pose)
            receiver.settimeout(0.05)
            try:
                text = receiver.recv(65536).decode("ascii")
                break
            except socket.timeout:
                continue
        else:
            pytest.fail("no datagram after the start message")
        assert sink.version == "v2" and sink.handshakes == 1 and sink.addr == ("127.0.0.1", port)
        pose_v2 = tha3_parse(text, "v2")
        assert {n for n in pose_v2 if n in ARKIT_NAMES} == set(ARKIT_NAMES)
        for n in ARKIT_NAMES:
            assert pose_v2[n] == pytest.approx(expect_int(w, n) / 100), n
        assert pose_v2["head"] == pytest.approx(pose[:3], abs=1e-5)
        # and why the handshake matters: the v2 parser finds no shape in a v1 datagram
        v1_text = encode_ifacialmocap(w, pose).decode()
        assert not [k for k in tha3_parse(v1_text, "v2") if k in ARKIT_NAMES]
        assert {k for k in tha3_parse(v1_text, "v1") if k in ARKIT_NAMES} == set(ARKIT_NAMES)
    finally:
        sink.close()
        receiver.close()


def test_v1_start_message_keeps_v1_and_other_datagrams_are_ignored(rx):
    sink = IFacialMocapSink("127.0.0.1", rx.getsockname()[1], listen=("127.0.0.1", 0))
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for junk in (b"hello", b"\xff\xfe", START_MESSAGE.encode() + b"|sendDataVersion=v9", START_MESSAGE.encode()):
            s.sendto(junk, sink.listen_addr)
        s.close()
        w, pose = frame()
        for _ in range(20):
            sink.send("mic", 0, 0.0, ARKIT_NAMES, w, pose)
            if sink.handshakes:
                break
        assert sink.handshakes == 1 and sink.version == "v1"
        text = ""
        rx.settimeout(0.5)
        while True:
            try:
                text = rx.recv(65536).decode("ascii")
            except socket.timeout:
                break
        assert "&" not in text and "jawLeft-37" in text
    finally:
        sink.close()


# ---------------------------------------------------------------- facetrack-d (Inochi Session), port


def facetrack_d_parse(text: str) -> dict:
    """IFMTrackingData(string): scan to each '|'; a section starting '=' is the head (skip '=head', '#',
    6 floats); otherwise the first '-' makes 'key-float/100', or the first '#' a 3-float bone."""
    shapes, bones = {}, {}
    i = start = 0
    while i < len(text):
        if text[i] == "|":
            sec = text[start:i]
            if sec.startswith("="):
                bones["head"] = [float(x) for x in sec[6:].split(",")]
            else:
                for j in range(1, len(sec)):
                    if sec[j] == "-":
                        shapes[sec[:j]] = float(sec[j + 1:]) / 100.0
                        break
                    if sec[j] == "#":
                        bones[sec[:j]] = [float(x) for x in sec[j + 1:].split(",")]
                        break
            start = i + 1
        i += 1
    return {"shapes": shapes, "bones": bones}


def facetrack_d_poll(data: dict) -> dict:
    """IFMAdaptor.poll: the ft* parameters, read from fixed keys; a missing key throws (D RangeError) and the
    whole derived set is dropped (`catch (Exception ex) { }`)."""
    b = data["shapes"]
    try:
        return {
            "ftEyeBlinkLeft": b["eyeBlink_L"], "ftEyeXLeft": b["eyeLookOut_L"] - b["eyeLookIn_L"],
            "ftEyeBlinkRight": b["eyeBlink_R"], "ftEyeYRight": b["eyeLookUp_R"] - b["eyeLookDown_R"],
            "ftMouthOpen": min(max((b["mouthLowerDown_L"] + b["mouthUpperUp_L"]) / 2
                                   + (b["mouthLowerDown_R"] + b["mouthUpperUp_R"]) / 2, 0), 1),
            "ftMouthX": (1 + b["mouthLeft"] - b["mouthRight"]) / 2.0,
            "ftMouthEmotion": min(max(1 + (b["mouthSmile_L"] + b["mouthSmile_R"] / 2.0)
                                      - (b["mouthFrown_L"] + b["mouthFrown_R"] / 2.0), 0), 2) / 2.0,
        }
    except KeyError:
        return {}


def test_facetrack_d_gets_its_mouth_parameters(rx):
    w, pose = frame()
    sink = IFacialMocapSink("127.0.0.1", rx.getsockname()[1])
    sink.send("mic", 0, 0.0, ARKIT_NAMES, w, pose)
    data = facetrack_d_parse(rx.recv(65536).decode("ascii"))
    sink.close()
    ft = facetrack_d_poll(data)
    assert ft, "facetrack-d dropped every derived parameter (a key it reads unconditionally is missing)"
    assert ft["ftMouthX"] == pytest.approx((1 + 0.55 - 0.81) / 2)
    assert ft["ftEyeBlinkLeft"] == pytest.approx(expect_int(w, "eyeBlinkLeft") / 100)
    assert data["bones"]["head"] == pytest.approx([*np.degrees(pose[:3]), *pose[3:]], abs=1e-4)
    assert set(data["bones"]) == {"head", "rightEye", "leftEye"}


# ---------------------------------------------------------------- VRCFaceTracking module (port)


def vrcft_read(text: str) -> dict:
    """ReadData: `returnData.Split('|')[1..^1]` (the first entry and the empty tail are skipped), then
    HandleChange: '#' -> '=head' (6 floats) / rightEye / leftEye (3); '&' or '-' -> int.Parse(value)."""
    blends, bones = {}, {}
    for blend in text.split("|")[1:-1]:
        if "#" in blend:
            key, vals = blend.split("#")
            vals = [float(v) for v in vals.split(",")]
            assert (key, len(vals)) in (("=head", 6), ("rightEye", 3), ("leftEye", 3)), blend
            bones[key] = vals
        elif "-" in blend or "&" in blend:
            key, value = blend.split("&" if "&" in blend else "-")
            blends[key] = int(value)
    return {"blends": blends, "bones": bones}


def test_vrcft_module_handshake_back_to_the_sender_then_v2(rx):
    """The module waits for a datagram on 49983, sends the v2 start message to that datagram's sender
    (the sink's own sending socket), then reads v2."""
    port = rx.getsockname()[1]
    sink = make_sinks({"ifacialmocap": f"127.0.0.1:{port}"})[0]  # loopback: no listen socket by default
    try:
        assert sink.listen_sock is None
        w, pose = frame()
        sink.send("mic", 0, 0.0, ARKIT_NAMES, w, pose)
        first, sender = rx.recvfrom(65536)
        assert b"-" in first
        stranger = udp_socket("127.0.0.3")  # another host may not redirect the stream via the sending socket
        stranger.sendto(V2_START, sender)
        stranger.close()
        sink.send("mic", 1, 0.01, ARKIT_NAMES, w, pose)
        assert sink.version == "v1" and sink.handshakes == 0 and b"-" in rx.recv(65536)
        answer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the module's _udpClient
        answer.sendto(V2_START, sender)
        answer.close()
        for _ in range(50):
            sink.send("mic", 1, 0.02, ARKIT_NAMES, w, pose)
            text = rx.recv(65536).decode("ascii")
            if "&" in text:
                break
        assert sink.version == "v2"
        got = vrcft_read(text)
        # every shape but the skipped first entry, which the bridge makes tongueOut
        assert set(got["blends"]) == set(IFM_NAMES) - {"tongueOut"}
        assert got["blends"]["eyeBlink_L"] == expect_int(w, "eyeBlinkLeft")
        assert got["blends"]["jawLeft"] == 37
        assert got["bones"]["=head"][3:] == pytest.approx(pose[3:], abs=1e-4)
    finally:
        sink.close()


# ---------------------------------------------------------------- format details every port relies on


def test_wire_format_details(rx):
    w, pose = frame()
    w[0], w[1] = 1.4, -0.3  # out of range: receivers expect 0..100 integers
    sink = IFacialMocapSink("127.0.0.1", rx.getsockname()[1])
    sink.send("mic", 0, 0.0, ARKIT_NAMES, w, pose)
    data = rx.recv(65536)
    sink.close()
    text = data.decode("ascii")  # ASCII only
    assert text.endswith("|") and text.count("=") == 1 and " " not in text
    shapes_part, rest = text.split("|=")
    entries = [e.split("-") for e in shapes_part.split("|")]
    assert len(entries) == 52 and all(len(e) == 2 and e[1].isdigit() and 0 <= int(e[1]) <= 100 for e in entries)
    names = [e[0] for e in entries]
    assert len(set(names)) == 52 and names[0] == "tongueOut"
    assert {"eyeBlink_L", "eyeBlink_R", "jawLeft", "jawRight", "mouthLeft", "mouthRight", "browDown_R",
            "jawOpen"} <= set(names)
    assert not {"jaw_L", "jaw_R", "mouth_L", "mouth_R"} & set(names)
    assert dict(entries)["eyeBlink_L"] == "100" and dict(entries)["eyeLookDown_L"] == "0"
    segs = rest.rstrip("|").split("|")
    assert [s.split("#")[0] for s in segs] == ["head", "rightEye", "leftEye"]
    assert [len(s.split("#")[1].split(",")) for s in segs] == [6, 3, 3]
    assert len(data) < 1400  # one unfragmented datagram on any LAN
