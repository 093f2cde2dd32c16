"""Legacy add-on installs (Blender 3.x-4.1): make pyzmq and msgpack importable.

A 4.2+ extension gets its `wheels/` installed by Blender itself. A legacy zip carries the same wheels;
binary modules cannot be imported from inside a .whl, so the matching wheel is unpacked once into
`_deps/<python tag>/` beside this file and put on sys.path. No network: only the wheels in the zip.
"""
from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
VENDORED: list[str] = []  # modules this add-on had to unpack (for the About line and tests)


def _platform_ok(tag: str) -> bool:
    plat = sysconfig.get_platform()  # linux-x86_64, win-amd64, macosx-11.0-arm64
    if tag == "any":
        return True
    if plat.startswith("linux"):
        arch = plat.split("-", 1)[1]
        return "linux" in tag and tag.endswith(arch)
    if plat.startswith("win"):
        return tag == ("win_amd64" if plat.endswith("amd64") else "win_arm64")
    if plat.startswith("macosx"):
        arch = plat.rsplit("-", 1)[1]
        return tag.startswith("macosx") and (arch in tag or "universal2" in tag)
    return False


def _wheel_fits(name: str) -> bool:
    parts = name[:-4].split("-")
    if len(parts) < 5:
        return False
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    cp = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    py_ok = any(p in (cp, "py3", "cp3") for p in py.split(".")) or (abi == "abi3" and "cp3" in py)
    return py_ok and any(_platform_ok(p) for p in plat.split("."))


def ensure() -> None:
    missing = []
    for mod in ("zmq", "msgpack"):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            missing.append(mod)
            VENDORED.append(f"{mod} ({e})")
    if not missing:
        return
    wheels = os.path.join(HERE, "wheels")
    target = os.path.join(HERE, "_deps", f"cp{sys.version_info[0]}{sys.version_info[1]}")
    if os.path.isdir(wheels):
        for name in sorted(os.listdir(wheels)):
            if name.endswith(".whl") and _wheel_fits(name) and name.split("-")[0].lower() in ("pyzmq", "msgpack"):
                with zipfile.ZipFile(os.path.join(wheels, name)) as z:
                    z.extractall(target)
    if os.path.isdir(target) and target not in sys.path:
        sys.path.insert(0, target)
    for mod in missing:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise ImportError(
                f"RealTalk Bridge needs {mod!r}, and no bundled wheel fits Python "
                f"{sys.version_info[0]}.{sys.version_info[1]} on {sysconfig.get_platform()}: {e}") from None
