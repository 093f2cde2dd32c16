"""Writes the samples' scenes (Unity YAML, text serialisation) with stable file ids, wiring the package's components by
the GUIDs in their committed .meta files. Unity fills every field a scene leaves out with its default, so each object
lists only what the sample sets. Run after changing a sample's layout (then make_meta.py for new files):

    python plugins/unity/Tools~/make_scenes.py          # writes the scenes
    python plugins/unity/Tools~/make_scenes.py --check  # exit 1 if a scene is missing or stale
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]
HEADER = "%YAML 1.1\n%TAG !u! tag:unity3d.com,2011:\n"


def script_guid(rel: str) -> str:
    meta = (PKG / (rel + ".meta")).read_text()
    return re.search(r"^guid: ([0-9a-f]{32})$", meta, re.M).group(1)


class Scene:
    def __init__(self) -> None:
        self.docs: list[str] = []
        self.roots: list[int] = []
        self._settings()

    def _settings(self) -> None:
        self.docs.append("--- !u!29 &1\nOcclusionCullingSettings:\n  m_ObjectHideFlags: 0\n  serializedVersion: 2\n"
                         "  m_OcclusionCullingData: {fileID: 0}\n")
        self.docs.append("--- !u!104 &2\nRenderSettings:\n  m_ObjectHideFlags: 0\n  serializedVersion: 9\n  m_Fog: 0\n"
                         "  m_AmbientMode: 0\n  m_AmbientSkyColor: {r: 0.212, g: 0.227, b: 0.259, a: 1}\n"
                         "  m_SkyboxMaterial: {fileID: 0}\n  m_Sun: {fileID: 0}\n")
        self.docs.append("--- !u!157 &3\nLightmapSettings:\n  m_ObjectHideFlags: 0\n  serializedVersion: 12\n"
                         "  m_LightingDataAsset: {fileID: 0}\n")
        self.docs.append("--- !u!196 &4\nNavMeshSettings:\n  serializedVersion: 2\n  m_ObjectHideFlags: 0\n"
                         "  m_NavMeshData: {fileID: 0}\n")

    def game_object(self, gid: int, name: str, components: list[int], pos=(0, 0, 0), tag: str = "Untagged") -> None:
        comps = "".join(f"  - component: {{fileID: {c}}}\n" for c in [gid + 1] + components)
        self.docs.append(
            f"--- !u!1 &{gid}\nGameObject:\n  m_ObjectHideFlags: 0\n  m_CorrespondingSourceObject: {{fileID: 0}}\n"
            f"  m_PrefabInstance: {{fileID: 0}}\n  m_PrefabAsset: {{fileID: 0}}\n  serializedVersion: 6\n"
            f"  m_Component:\n{comps}  m_Layer: 0\n  m_Name: {name}\n  m_TagString: {tag}\n  m_Icon: {{fileID: 0}}\n"
            f"  m_NavMeshLayer: 0\n  m_StaticEditorFlags: 0\n  m_IsActive: 1\n")
        x, y, z = pos
        self.docs.append(
            f"--- !u!4 &{gid + 1}\nTransform:\n  m_ObjectHideFlags: 0\n  m_CorrespondingSourceObject: {{fileID: 0}}\n"
            f"  m_PrefabInstance: {{fileID: 0}}\n  m_PrefabAsset: {{fileID: 0}}\n  m_GameObject: {{fileID: {gid}}}\n"
            f"  m_LocalRotation: {{x: 0, y: 0, z: 0, w: 1}}\n  m_LocalPosition: {{x: {x}, y: {y}, z: {z}}}\n"
            f"  m_LocalScale: {{x: 1, y: 1, z: 1}}\n  m_Children: []\n  m_Father: {{fileID: 0}}\n"
            f"  m_RootOrder: {len(self.roots)}\n  m_LocalEulerAnglesHint: {{x: 0, y: 0, z: 0}}\n")
        self.roots.append(gid)

    def native(self, fid: int, class_id: int, type_name: str, gid: int, fields: str = "") -> None:
        self.docs.append(f"--- !u!{class_id} &{fid}\n{type_name}:\n  m_ObjectHideFlags: 0\n"
                         f"  m_CorrespondingSourceObject: {{fileID: 0}}\n  m_PrefabInstance: {{fileID: 0}}\n"
                         f"  m_PrefabAsset: {{fileID: 0}}\n  m_GameObject: {{fileID: {gid}}}\n  m_Enabled: 1\n{fields}")

    def script(self, fid: int, gid: int, script_rel: str, fields: str = "") -> None:
        self.docs.append(
            f"--- !u!114 &{fid}\nMonoBehaviour:\n  m_ObjectHideFlags: 0\n  m_CorrespondingSourceObject: {{fileID: 0}}\n"
            f"  m_PrefabInstance: {{fileID: 0}}\n  m_PrefabAsset: {{fileID: 0}}\n  m_GameObject: {{fileID: {gid}}}\n"
            f"  m_Enabled: 1\n  m_EditorHideFlags: 0\n"
            f"  m_Script: {{fileID: 11500000, guid: {script_guid(script_rel)}, type: 3}}\n"
            f"  m_Name: \n  m_EditorClassIdentifier: \n{fields}")

    def camera(self) -> None:
        self.game_object(10, "Main Camera", [12, 13], pos=(0, 1.6, -2), tag="MainCamera")
        self.native(12, 20, "Camera", 10, "  serializedVersion: 2\n  m_ClearFlags: 1\n"
                    "  m_BackGroundColor: {r: 0.19, g: 0.3, b: 0.47, a: 0}\n  near clip plane: 0.1\n"
                    "  far clip plane: 1000\n  field of view: 40\n  m_Depth: -1\n")
        self.native(13, 81, "AudioListener", 10)

    def audio_source(self, fid: int, gid: int) -> None:
        self.native(fid, 82, "AudioSource", gid, "  serializedVersion: 4\n  OutputAudioMixerGroup: {fileID: 0}\n"
                    "  m_audioClip: {fileID: 0}\n  m_PlayOnAwake: 0\n  m_Volume: 1\n  m_Pitch: 1\n  Loop: 0\n"
                    "  Mute: 0\n  Spatialize: 0\n  Priority: 128\n  Pan2D: 0\n  BypassEffects: 0\n")

    def text(self) -> str:
        return HEADER + "".join(self.docs)


RT = "Runtime/Unity/"


def client_fields(stream_id: str) -> str:
    return ("  streamEndpoint: tcp://127.0.0.1:47200\n  controlEndpoint: tcp://127.0.0.1:47201\n"
            f"  streamId: {stream_id}\n  connectOnEnable: 1\n  logStateChanges: 1\n")


def driver_fields(source: int) -> str:
    return (f"  source: {{fileID: {source}}}\n  renderers: []\n  mapping: {{fileID: 0}}\n  holdSeconds: 0.5\n"
            "  logMatchReport: 1\n")


def vtuber() -> str:
    s = Scene()
    s.camera()
    # one object: the client (stream unity-mic), the microphone pusher, the driver (drag the face into `renderers`)
    s.game_object(100, "Realtalk VTuber", [102, 103, 104])
    s.script(102, 100, RT + "RealtalkClient.cs", client_fields("unity-mic"))
    s.script(103, 100, "Samples~/LiveMicrophoneVTuber/MicrophoneStreamer.cs",
             "  device: \n  sampleRate: 16000\n  fps: 30\n  streamId: unity-mic\n")
    s.script(104, 100, RT + "BlendshapeDriver.cs", driver_fields(102))
    return s.text()


def npc(s: Scene, gid: int, name: str, x: float, client: int, key: int, live_stream: str) -> None:
    s.game_object(gid, name, [gid + 2, gid + 3, gid + 4, gid + 5], pos=(x, 0, 0))
    s.audio_source(gid + 2, gid)
    s.script(gid + 3, gid, RT + "TalkingNpc.cs",
             f"  client: {{fileID: {client}}}\n  clip: {{fileID: 0}}\n  bakedTracks: []\n  cacheInEditor: 1\n"
             f"  liveStreamId: {live_stream}\n  liveAudioDelay: 0.15\n  fps: 30\n  speakOnStart: 0\n"
             "  bakeTimeoutMs: 120000\n")
    s.script(gid + 4, gid, "Samples~/TalkingNpc/NpcDialogue.cs", f"  lines: []\n  nextKey: {key}\n")
    s.script(gid + 5, gid, RT + "BlendshapeDriver.cs", driver_fields(gid + 3))


def talking_npc() -> str:
    s = Scene()
    s.camera()
    # one RealtalkClient = one connection to the sidecar, shared by every NPC
    s.game_object(100, "Realtalk Sidecar", [102])
    s.script(102, 100, RT + "RealtalkClient.cs", client_fields(""))
    npc(s, 200, "Guard (baked lines, key 1)", -1.0, 102, 49, "")
    npc(s, 300, "Merchant (live stream npc-merchant, key 2)", 0.0, 102, 50, "npc-merchant")
    npc(s, 400, "Bard (live stream npc-bard, key 3)", 1.0, 102, 51, "npc-bard")
    return s.text()


SCENES = {
    "Samples~/LiveMicrophoneVTuber/LiveMicrophoneVTuber.unity": vtuber,
    "Samples~/TalkingNpc/TalkingNpc.unity": talking_npc,
}


def main(argv: list[str]) -> int:
    stale = []
    for rel, make in SCENES.items():
        path, text = PKG / rel, make()
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(rel)
        else:
            path.write_text(text)
    if stale:
        print("missing or stale scenes (run make_scenes.py):\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
