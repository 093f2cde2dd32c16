"""Packaging: the core install runs without the training/vision stack, and a wheel carries the models.

A user gets `serve`/`bake` from `pip install realtalk-bridge` (core deps only). So the runtime modules
must import, and `bake` must run, with torch & co. absent, and the wheel must hold `models/` (copied to
`realtalk_bridge/_models/` by setup.py) so an install finds its models from any working directory.
"""
from __future__ import annotations

import json
import os
import pkgutil
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from _sidecar_util import HELLO_WAV, a2e_model  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]

# Not core dependencies (pyproject extras train/vision): the runtime path must never import them.
BLOCKED = ("torch", "transformers", "mediapipe", "cv2", "scipy", "skimage", "onnx", "safetensors")

# A meta path finder placed first refuses the blocked top-level names, as if they were not installed.
_BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set({blocked!r})
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None
    sys.meta_path.insert(0, _Block())
""").format(blocked=BLOCKED)


def _runtime_modules() -> list[str]:
    """The modules a core install runs; every sidecar/ and bridges/ module, so new ones are covered."""
    import realtalk_bridge.bridges
    import realtalk_bridge.sidecar

    mods = ["realtalk_bridge", "realtalk_bridge.cli", "realtalk_bridge.assets", "realtalk_bridge.audio",
            "realtalk_bridge.runtime.a2e", "realtalk_bridge.bake", "realtalk_bridge.client",
            "realtalk_bridge.doctor", "realtalk_bridge.face.arkit", "realtalk_bridge.face.nonverbal",
            "realtalk_bridge.face.retarget", "realtalk_bridge.bridges", "realtalk_bridge.sidecar"]
    for pkg in (realtalk_bridge.sidecar, realtalk_bridge.bridges):
        mods += [f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]
    return mods


def _run_blocked(code: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("REALTALK_MODELS", None)
    return subprocess.run([sys.executable, "-c", _BLOCKER + textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_blocker_really_blocks(tmp_path):
    # guards the guard: with the finder in place, `import torch` must fail even where torch is installed
    r = _run_blocked("import torch", tmp_path)
    assert r.returncode != 0 and "blocked by the test" in r.stderr


def test_runtime_modules_import_without_torch(tmp_path):
    mods = _runtime_modules()
    assert "realtalk_bridge.sidecar.serve" in mods and "realtalk_bridge.bridges.vmc" in mods
    r = _run_blocked(f"""
        import importlib, sys
        for m in {mods!r}:
            importlib.import_module(m)
        leaked = sorted(n for n in sys.modules if n.partition(".")[0] in BLOCKED)
        assert not leaked, leaked
        print("ok", len({mods!r}))
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_bake_and_serve_help_run_without_torch(tmp_path, a2e_model):
    out = tmp_path / "track.csv"
    r = _run_blocked(f"""
        import sys
        from realtalk_bridge.cli import main
        rc = main(["bake", {str(HELLO_WAV)!r}, "--out", {str(out)!r}, "--model", {str(a2e_model)!r}])
        assert rc == 0, rc
        try:
            main(["serve", "--help"])
        except SystemExit as e:
            assert e.code == 0, e.code
        leaked = sorted(n for n in sys.modules if n.partition(".")[0] in BLOCKED)
        assert not leaked, leaked
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("time,eyeBlinkLeft") and len(lines) > 100  # 6 s of speech at 30 fps


# ---- the wheel --------------------------------------------------------------------------------------

def test_models_dir_order(tmp_path, monkeypatch):
    from realtalk_bridge import assets

    monkeypatch.delenv(assets.MODELS_ENV, raising=False)
    # a source checkout (no _models/ inside the package) reads the top-level models/ folder
    assert assets.models_dir() == ROOT / "models"
    assert assets.model_path("face", "arkit_mediapipe.npz").is_file()
    monkeypatch.setenv(assets.MODELS_ENV, str(tmp_path))
    assert assets.model_path("a2e", "default.onnx") == tmp_path / "a2e" / "default.onnx"


def test_face_model_and_runtime_use_the_one_lookup(tmp_path, monkeypatch):
    # $REALTALK_MODELS reaches both the face model and the A2E default (resolved at import)
    from realtalk_bridge.face.face_model import FaceModelError, load_face_model

    monkeypatch.setenv("REALTALK_MODELS", str(tmp_path))
    with pytest.raises(FaceModelError, match=str(tmp_path)):
        load_face_model("arkit")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REALTALK_MODELS": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", "from realtalk_bridge.runtime.a2e import DEFAULT_MODEL; print(DEFAULT_MODEL)"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == tmp_path / "a2e" / "default.onnx"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A real wheel of this tree (setuptools from the running Python; no network), built from a copy of
    the files a build reads so the checkout gets no build/ or egg-info litter."""
    import importlib.util

    import setuptools

    # no build isolation (no network in tests): the running Python's setuptools builds it, which needs
    # the pyproject's setuptools>=68 and a bdist_wheel (built in since setuptools 70.1, else the wheel package)
    version = tuple(int(x) for x in setuptools.__version__.split(".")[:2] if x.isdigit())
    if version < (68, 0) or (version < (70, 1) and importlib.util.find_spec("wheel") is None):
        pytest.skip(f"setuptools {setuptools.__version__} here cannot build the wheel offline "
                    "(pip install 'setuptools>=70.1')")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "NOTICE"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("realtalk_bridge", "models"):
        shutil.copytree(ROOT / name, src / name, ignore=junk)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "-w", str(out), "--no-deps",
                        "--no-build-isolation", "-q"], capture_output=True, text=True, timeout=240)
    if r.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{r.stdout}\n{r.stderr}")
    (whl,) = out.glob("realtalk_bridge-*.whl")
    return whl


def test_wheel_carries_every_model_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.relative_to(ROOT / "models").as_posix() for p in (ROOT / "models").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    assert "face/arkit_mediapipe.npz" in shipped
    missing = [s for s in shipped if f"realtalk_bridge/_models/{s}" not in names]
    assert not missing, missing
    assert any(n.startswith("realtalk_bridge/face/profiles/") and n.endswith(".toml") for n in names)
    assert not any(n.startswith(("tests/", "models/")) for n in names)


def test_installed_wheel_finds_its_models_from_any_cwd(wheel, tmp_path, a2e_model):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                        str(target), str(wheel)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = work / "x.json"
    # the shipped A2E default when the tree has one, else a real tiny model passed explicitly
    model_args = [] if (ROOT / "models" / "a2e" / "default.onnx").is_file() else ["--model", str(a2e_model)]
    code = f"""
        import json, sys
        # a development install (pip install -e) hooks its own finder first: drop it so only the wheel counts
        sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                         and "editable" not in type(f).__name__.lower()]
        sys.path.insert(0, {str(target)!r})
        import realtalk_bridge, realtalk_bridge.assets as assets
        from realtalk_bridge.face.face_model import load_face_model
        from realtalk_bridge.cli import main
        fm = load_face_model("arkit")
        rc = main(["bake", {str(HELLO_WAV)!r}, "--out", {str(out)!r}, *{model_args!r}])
        print(json.dumps({{"pkg": realtalk_bridge.__file__, "models": str(assets.models_dir()),
                           "verts": int(fm.mean.shape[0]), "rc": rc}}))
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REALTALK_MODELS")}
    r = subprocess.run([sys.executable, "-c", _BLOCKER + textwrap.dedent(code)], cwd=work, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(info["pkg"]).is_relative_to(target), info
    assert Path(info["models"]) == target / "realtalk_bridge" / "_models", info
    assert info["verts"] == 468 and info["rc"] == 0
    track = json.loads(out.read_text())
    assert track["names"][17] == "jawOpen" and track["n_frames"] == len(track["weights"]) > 100
