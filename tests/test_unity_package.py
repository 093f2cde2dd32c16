"""The Unity package's tests, driven from pytest (no Unity editor exists here).

- The engine-free core (plugins/unity/Runtime/Core) is compiled with Debian `mcs` (C# 7.2) and its NUnit tests
  run under `nunit-console` (NUnit 2.6.4); we assert on the NUnit XML result.
- The integration fixtures start real processes: the sidecar (`python -m realtalk_bridge serve --input speech.wav`)
  and a pyzmq fault-injection peer (tests/unity_peers.py).
- The Unity-facing scripts (Runtime/Unity, Editor, Samples~) and the NetMQ adapter are only *compiled*, against the
  UnityEngine / UnityEditor / NetMQ stubs in plugins/unity/Tests/Stubs~ (signatures mirrored from Unity 2020.2's and
  NetMQ 4's public API), to catch errors; they are not run. With REALTALK_UNITY_MANAGED pointing at a Unity install's
  Managed folder (or any folder with real UnityEngine*.dll), they are also compiled against those real assemblies.
- A source scan keeps the package IL2CPP-safe (no Reflection.Emit, no dynamic) and Unity's API out of worker threads.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "plugins" / "unity"
NUNIT_DIR = Path("/usr/lib/cli/nunit.framework-2.6.3")
VECTORS = REPO / "protocol" / "vectors"

pytestmark = pytest.mark.skipif(
    shutil.which("mcs") is None or shutil.which("nunit-console") is None or not (NUNIT_DIR / "nunit.framework.dll").exists(),
    reason="needs Debian mono-mcs, nunit-console and libnunit-cil-dev (CI installs them from .ci/apt-packages.txt)",
)


def _cs(*dirs: Path) -> list[str]:
    files: list[str] = []
    for d in dirs:
        files += sorted(str(p) for p in d.rglob("*.cs"))
    return files


def _mcs(out: Path, sources: list[str], refs: list[str] = (), target: str = "library") -> None:
    cmd = ["mcs", "-langversion:7.2", "-warnaserror+", "-nowarn:1591", f"-target:{target}", f"-out:{out}", "-nologo"]
    cmd += [f"-r:{r}" for r in refs] + sources
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"mcs failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("unity-build")
    core = out / "RealtalkBridge.Core.dll"
    _mcs(core, _cs(PKG / "Runtime" / "Core"))
    tests = out / "RealtalkBridge.Core.Tests.dll"
    _mcs(tests, _cs(PKG / "Tests" / "Core"), [str(core), str(NUNIT_DIR / "nunit.framework.dll")])
    return {"dir": out, "core": core, "tests": tests}


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    """Speech synthesised here with flite (16-bit PCM WAV), else the repo's examples/speech/hello.wav."""
    path = tmp_path_factory.mktemp("unity-audio") / "speech.wav"
    text = ("The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore, "
            "and the shells she sells are surely sea shells.")
    if shutil.which("flite"):
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True, capture_output=True, timeout=60)
        return path
    sample = REPO / "examples" / "speech" / "hello.wav"
    if sample.is_file():
        return sample
    pytest.skip("needs flite (Debian) to synthesise test speech")


def _nunit(build: dict[str, Path], env_extra: dict[str, str], *selectors: str, timeout: int = 120) -> ET.Element:
    xml = build["dir"] / f"result-{abs(hash(selectors))}.xml"
    env = dict(os.environ)
    env.update(env_extra)
    cmd = ["nunit-console", "-nologo", "-noshadow", f"-xml={xml}", str(build["tests"]), *selectors]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=build["dir"])
    assert xml.exists(), f"nunit-console wrote no result (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    root = ET.parse(xml).getroot()
    failures = [
        f"{tc.get('name')}: {(tc.findtext('failure/message') or '').strip()}"
        for tc in root.iter("test-case")
        if tc.get("executed") == "True" and tc.get("success") != "True"
    ]
    ignored = [f"{tc.get('name')}: {(tc.findtext('reason/message') or '').strip()}"
               for tc in root.iter("test-case") if tc.get("executed") != "True"]
    assert not failures, "NUnit failures:\n" + "\n".join(failures) + "\n" + proc.stdout[-3000:]
    assert not ignored, "NUnit tests did not run:\n" + "\n".join(ignored)
    return root


def _ran(root: ET.Element) -> set[str]:
    return {tc.get("name").rsplit(".", 2)[-2] + "." + tc.get("name").rsplit(".", 1)[-1]
            for tc in root.iter("test-case") if tc.get("executed") == "True"}


def test_core_unit_and_fault_injection(build):
    env = {"REALTALK_PYTHON": sys.executable, "REALTALK_REPO": str(REPO), "REALTALK_PEERS": str(REPO / "tests" / "unity_peers.py")}
    root = _nunit(build, env, "-exclude=Sidecar,Vectors")
    ran = _ran(root)
    for name in ("MsgPackTests.TruncatedAndHostileInputThrowsMsgPackExceptionOnly",
                 "FramePacerTests.SixtyHzConsumerSeesEveryFrameOfABurstySixtyFpsStream",
                 "NameMatchingTests.RealRigSpellingsMatchWithoutMapping",
                 "NameMatchingTests.VrmAndVroidPresetsAreDrivenFromArkit",
                 "NameMatchingTests.EqualNamesInANewArrayKeepTheMappingAndTheSmoothing",
                 "BakeCurveTests.CurvesUseTheMeshsOwnNamesThroughTheLiveMapping",
                 "ZmtpFramingTests.FramesSurviveOneByteReads",
                 "BlendshapeMapTests.CommonSpellingsMatchArkitNames",
                 "FaultInjectionTests.MalformedMessagesAreDroppedAndTheThreadSurvives",
                 "FaultInjectionTests.HeartbeatsKeepAQuietLinkAliveAndDetectAHungPeer",
                 "FaultInjectionTests.OversizedMessagesCostTheConnectionNotTheThread",
                 "FaultInjectionTests.ControlTimeoutsRecoverAndRepliesMatchTheirRequest",
                 "PcmConvertTests.DownsamplingKeepsSpeechBandAndRemovesWhatWouldAlias",
                 "PcmConvertTests.S16IsLittleEndianAndClamped"):
        assert name in ran, f"{name} did not run; ran: {sorted(ran)}"


def _compile_unity_side(out: Path, core: Path) -> None:
    stubs = PKG / "Tests" / "Stubs~"
    engine, editor = out / "UnityEngine.dll", out / "UnityEditor.dll"
    _mcs(engine, [str(stubs / "UnityEngine.cs")])
    _mcs(editor, [str(stubs / "UnityEditor.cs")], [str(engine)])
    runtime = out / "RealtalkBridge.Unity.dll"
    # UNITY_EDITOR on: the editor-only branches must compile too
    _mcs(runtime, _cs(PKG / "Runtime" / "Unity") + ["-define:UNITY_EDITOR"], [str(engine), str(editor), str(core)])
    _mcs(out / "RealtalkBridge.Unity.Player.dll", _cs(PKG / "Runtime" / "Unity"), [str(engine), str(core)])
    _mcs(out / "RealtalkBridge.Editor.dll", _cs(PKG / "Editor"), [str(engine), str(editor), str(core), str(runtime)])
    _mcs(out / "RealtalkBridge.Samples.dll", _cs(PKG / "Samples~"), [str(engine), str(core), str(runtime)])
    # the NetMQ adapter: compiled only with REALTALK_NETMQ (the asmdef's define constraint), against the NetMQ stub
    netmq = out / "NetMQ.dll"
    _mcs(netmq, [str(stubs / "NetMQ.cs")])
    _mcs(out / "RealtalkBridge.NetMQ.dll", _cs(PKG / "Runtime" / "NetMQ") + ["-define:REALTALK_NETMQ"], [str(core), str(netmq)])


def test_unity_scripts_compile_against_stub(build):
    """Compile-only: Runtime/Unity, Editor and Samples~ against the UnityEngine/UnityEditor stub."""
    _compile_unity_side(build["dir"], build["core"])


UNITY_MANAGED = os.environ.get("REALTALK_UNITY_MANAGED", "")


@pytest.mark.skipif(not UNITY_MANAGED, reason="set REALTALK_UNITY_MANAGED to a folder with Unity's real UnityEngine*.dll "
                    "(e.g. <Unity>/Editor/Data/Managed/UnityEngine) to compile against them; no registry ships them")
def test_unity_scripts_compile_against_real_unity_assemblies(build):
    """Runtime/Unity and Samples~ against real UnityEngine module assemblies; Editor too when UnityEditor*.dll is there."""
    managed = Path(UNITY_MANAGED)
    engine = sorted(str(p) for p in managed.rglob("UnityEngine*.dll"))
    assert any(p.endswith("UnityEngine.CoreModule.dll") for p in engine), f"no UnityEngine.CoreModule.dll under {managed}"
    out, core = build["dir"], build["core"]
    runtime = out / "real-RealtalkBridge.Unity.dll"
    _mcs(out / "real-player.dll", _cs(PKG / "Runtime" / "Unity"), engine + [str(core)])
    editor = sorted(str(p) for p in managed.rglob("UnityEditor*.dll"))
    if not any(p.endswith("UnityEditor.CoreModule.dll") for p in editor):
        # no real editor assembly (player builds ship none): the UnityEditor stub, built on the real UnityEngine
        stub_editor = out / "real-stub-UnityEditor.dll"
        _mcs(stub_editor, [str(PKG / "Tests" / "Stubs~" / "UnityEditor.cs")], engine)
        editor = [str(stub_editor)]
    _mcs(runtime, _cs(PKG / "Runtime" / "Unity") + ["-define:UNITY_EDITOR"], engine + editor + [str(core)])
    _mcs(out / "real-editor.dll", _cs(PKG / "Editor"), engine + editor + [str(core), str(runtime)])
    _mcs(out / "real-samples.dll", _cs(PKG / "Samples~"), engine + [str(core), str(out / "real-player.dll")])


# IL2CPP/AOT: no code generation at run time, no late binding
FORBIDDEN = [(r"System\.Reflection\.Emit", "Reflection.Emit"), (r"\bdynamic\b", "dynamic"),
             (r"\bExpression<", "expression trees"), (r"\.Compile\(\)", "compiled expressions"),
             (r"\bMakeGenericType\b|\bMakeGenericMethod\b", "runtime generic instantiation"),
             (r"Activator\.CreateInstance", "Activator"), (r"\bType\.GetType\(", "Type.GetType"),
             (r"System\.Reflection\b", "reflection")]
# Unity's API in a worker thread's body (the receive thread lives in Runtime/Core, which has no engine reference)
UNITY_IN_THREAD = re.compile(r"\b(Debug|Time|Application|Microphone|AssetDatabase|EditorUtility|Selection|Mathf|Input)\.|"
                             r"\b(GetComponent|SetBlendShapeWeight|GetData|GetBlendShapeName)\b|\b(transform|gameObject|_audio)\b|"
                             r"UnityEngine|UnityEditor")


def _thread_bodies(text: str) -> list[str]:
    bodies = []
    for m in re.finditer(r"new Thread\(delegate \(\)\s*\{", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        bodies.append(text[m.end():i - 1])
    return bodies


def test_sources_are_aot_safe_and_keep_unity_on_the_main_thread():
    sources = [p for d in ("Runtime", "Editor", "Samples~") for p in (PKG / d).rglob("*.cs")]
    assert len(sources) > 15
    threads = 0
    for path in sources:
        text = re.sub(r"//[^\n]*", "", path.read_text())      # comments may name anything
        for pattern, what in FORBIDDEN:
            assert not re.search(pattern, text), f"{path.relative_to(PKG)} uses {what} (not IL2CPP/AOT-safe)"
        for body in _thread_bodies(text):
            threads += 1
            hit = UNITY_IN_THREAD.search(body)
            assert hit is None, f"{path.relative_to(PKG)}: Unity API '{hit.group(0)}' inside a worker thread"
    assert threads >= 4, "the scan found fewer worker threads than the package has"


def test_core_uses_no_engine_types():
    for path in (PKG / "Runtime" / "Core").glob("*.cs"):
        text = path.read_text()
        assert "UnityEngine" not in text and "UnityEditor" not in text, f"{path.name} must stay engine-free"
        # IL2CPP: no reflection-driven serialisation in the core
        assert "System.Reflection" not in text and "GetType().GetField" not in text, path.name


def test_package_layout_and_meta_files():
    manifest = json.loads((PKG / "package.json").read_text())
    assert re.fullmatch(r"com\.[a-z0-9-]+\.[a-z0-9.-]+", manifest["name"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    for sample in manifest["samples"]:
        assert (PKG / sample["path"]).is_dir(), sample
    core = json.loads((PKG / "Runtime" / "Core" / "RealtalkBridge.Core.asmdef").read_text())
    assert core["noEngineReferences"] is True
    editor = json.loads((PKG / "Editor" / "RealtalkBridge.Editor.asmdef").read_text())
    assert editor["includePlatforms"] == ["Editor"]
    assert set(editor["references"]) == {"RealtalkBridge.Core", "RealtalkBridge.Unity"}
    unity = json.loads((PKG / "Runtime" / "Unity" / "RealtalkBridge.Unity.asmdef").read_text())
    assert unity["references"] == ["RealtalkBridge.Core"] and unity["includePlatforms"] == []
    netmq = json.loads((PKG / "Runtime" / "NetMQ" / "RealtalkBridge.NetMQ.asmdef").read_text())
    assert netmq["defineConstraints"] == ["REALTALK_NETMQ"] and netmq["references"] == ["RealtalkBridge.Core"]
    assert any(v["define"] == "REALTALK_NETMQ" for v in netmq["versionDefines"])
    assert "#if REALTALK_NETMQ" in (PKG / "Runtime" / "NetMQ" / "NetMqTransport.cs").read_text()
    assert manifest["dependencies"] == {"com.unity.modules.audio": "1.0.0", "com.unity.modules.animation": "1.0.0"}
    assert manifest["repository"]["url"].endswith(".git") and manifest["repository"]["directory"] == "plugins/unity"
    assert {s["path"] for s in manifest["samples"]} == {str(p.relative_to(PKG)) for p in (PKG / "Samples~").iterdir() if p.is_dir()}
    proc = subprocess.run([sys.executable, str(PKG / "Tools~" / "make_meta.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    guids = [re.search(r"^guid: ([0-9a-f]{32})$", m.read_text(), re.M).group(1) for m in PKG.rglob("*.meta")]
    assert len(guids) == len(set(guids)), "duplicate GUIDs"


def test_sample_scenes_are_valid_and_wired():
    """Each sample has a Unity YAML scene whose script references resolve to the package's committed metas."""
    proc = subprocess.run([sys.executable, str(PKG / "Tools~" / "make_scenes.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    metas = {re.search(r"^guid: ([0-9a-f]{32})$", m.read_text(), re.M).group(1): m for m in PKG.rglob("*.cs.meta")}
    manifest = json.loads((PKG / "package.json").read_text())
    for sample in manifest["samples"]:
        scenes = list((PKG / sample["path"]).glob("*.unity"))
        assert len(scenes) == 1, sample
        text = scenes[0].read_text()
        assert text.startswith("%YAML 1.1\n%TAG !u! tag:unity3d.com,2011:\n")
        docs = re.findall(r"^--- !u!(\d+) &(\d+)$", text, re.M)
        ids = [int(i) for _, i in docs]
        assert len(ids) == len(set(ids)), "duplicate file ids"
        refs = {int(r) for r in re.findall(r"\{fileID: (\d+)\}", text)} - {0}
        assert refs <= set(ids), f"{scenes[0].name}: dangling references {sorted(refs - set(ids))}"
        scripts = re.findall(r"m_Script: \{fileID: 11500000, guid: ([0-9a-f]{32}), type: 3\}", text)
        assert scripts and all(g in metas for g in scripts), f"{scenes[0].name}: a script GUID has no .cs.meta"
        classes = {metas[g].name[:-len(".cs.meta")] for g in scripts}
        assert {"RealtalkClient", "BlendshapeDriver"} <= classes, classes
        assert {"1", "4", "20", "81"} <= {c for c, _ in docs}, "needs GameObjects, Transforms, a Camera and an AudioListener"
    npc = (PKG / "Samples~" / "TalkingNpc" / "TalkingNpc.unity").read_text()
    assert npc.count("liveStreamId: npc-") == 2 and npc.count("client: {fileID: 102}") == 3, "NPCs share one client"


@pytest.mark.skipif(not VECTORS.is_dir() or not any(VECTORS.glob("*.msgpack")),
                    reason="protocol/vectors/ is not on this branch yet (golden vectors come from the sidecar work)")
def test_core_decodes_golden_vectors(build):
    _nunit(build, {"REALTALK_VECTORS": str(VECTORS)}, "-run=RealtalkBridge.Tests.GoldenVectorTests")


from _sidecar_util import a2e_model  # noqa: E402,F401  (fixture)

SERVE = REPO / "realtalk_bridge" / "sidecar" / "serve.py"


@pytest.fixture(scope="module")
def serve_model(a2e_model) -> Path:
    """The float export of the shipped A2E checkpoint (tests/_sidecar_util.py a2e_model: the C# tests compare f32
    and file bakes of the same audio within 1e-3, which int8's per-batch activation rounding does not keep)."""
    return a2e_model


@pytest.mark.skipif(not SERVE.exists(), reason="the sidecar (realtalk_bridge/sidecar/serve.py) is not on this branch yet")
def test_core_against_real_sidecar(build, speech_wav, serve_model):
    """Stream frames from `serve --input`, bake clips, survive a sidecar restart: all against the real process."""
    serve_args = (f'-m realtalk_bridge serve --no-mic --loop --input "{speech_wav}" --model "{serve_model}" '
                  "--pub {pub} --ctl {ctl} --log-level warning")
    env = {"REALTALK_PYTHON": sys.executable, "REALTALK_REPO": str(REPO), "REALTALK_SERVE_ARGS": serve_args,
           "REALTALK_SPEECH_WAV": str(speech_wav)}
    root = _nunit(build, env, "-run=RealtalkBridge.Tests.SidecarTests", timeout=300)
    ran = _ran(root)
    for name in ("ControlRequestsSurviveQuietGapsLongerThanTheHeartbeatTimeout", "ReconnectsWithinHalfASecondOfTheSidecarComingBack",
                 "SixtyHzConsumerSeesEveryFrameOfASixtyFpsStream", "SteadyStateAllocatesNothingPerFrame",
                 "ACurveSidecarIsReportedClearly", "SeveralNpcsShareOneConnectionWithAStreamEach", "SurvivesASidecarRestart",
                 "LiveLinesSurviveTheSidecarsIdleTimeoutBetweenThem",
                 "ABacklogOfThreeSecondsIsPushedWithinTheLimitAndEverySampleArrives",
                 "BakeUploadsFitTheSidecarsLimitOrAreRefusedBeforeUpload"):
        assert "SidecarTests." + name in ran, f"{name} did not run; ran: {sorted(ran)}"
