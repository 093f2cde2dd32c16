#!/usr/bin/env python3
"""Build the Blender add-on zips (wheels are downloaded here, never committed).

    python plugins/blender/build.py                 # download wheels (once), build, validate
    python plugins/blender/build.py --no-wheels     # offline: rely on pyzmq/msgpack already in Blender's Python

Writes to plugins/blender/dist/:
  realtalk_blender-<version>.zip         Blender 4.2+ extension (blender_manifest.toml + wheels for
                                         Windows x64, macOS arm64/x64, Linux x64, Python 3.11)
  realtalk_blender-<version>-legacy.zip  Blender 3.x-4.1 add-on (Install... in Preferences > Add-ons);
                                         carries the same wheels plus Python 3.10 ones for Blender 3.x
The extension zip is checked with Blender's own validator (`bl_pkg/cli/blender_ext.py validate`), found in
the bpy wheel of .venv-bpy or given with --validator.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "realtalk_blender")
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PACKAGES = ("pyzmq", "msgpack")
# Blender platform name -> pip --platform tags (the first that has a wheel wins)
PLATFORMS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_11_0_arm64", "macosx_10_15_universal2", "macosx_10_9_universal2"],
    "macos-x64": ["macosx_10_15_x86_64", "macosx_10_9_x86_64", "macosx_10_15_universal2", "macosx_10_9_universal2"],
}
EXT_PYTHONS = ("3.11",)            # Blender 4.2 - 5.0
LEGACY_PYTHONS = ("3.10", "3.11")  # Blender 3.1-3.6 use 3.10; 4.0/4.1 use 3.11


def version() -> str:
    text = open(os.path.join(SRC, "blender_manifest.toml"), encoding="utf-8").read()
    return re.search(r'^version = "([^"]+)"', text, re.M).group(1)


def download_wheels(dest: str, pythons) -> None:
    os.makedirs(dest, exist_ok=True)
    for py in pythons:
        for plat, tags in PLATFORMS.items():
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
                   "--python-version", py, "--implementation", "cp", "-d", dest]
            for t in tags:
                cmd += ["--platform", t]
            print(f"wheels: Python {py} {plat}", flush=True)
            subprocess.run(cmd + list(PACKAGES), check=True)


def wheel_files(dest: str, pythons) -> list[str]:
    tags = {"cp" + p.replace(".", "") for p in pythons}
    out = []
    for w in sorted(glob.glob(os.path.join(dest, "*.whl"))):
        py = os.path.basename(w).split("-")[-3]
        if any(p in tags for p in py.split(".")):
            out.append(w)
    return out


def _source_files():
    for dirpath, dirnames, filenames in os.walk(SRC):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "_deps", "wheels")]
        for f in filenames:
            if not f.endswith((".pyc", ".pyo")):
                full = os.path.join(dirpath, f)
                yield full, os.path.relpath(full, SRC)


def manifest_with_wheels(wheels: list[str]) -> str:
    text = open(os.path.join(SRC, "blender_manifest.toml"), encoding="utf-8").read()
    if not wheels:
        return text
    listed = ",\n".join(f'  "./wheels/{os.path.basename(w)}"' for w in wheels)
    extra = f"\nplatforms = [{', '.join(repr(p).replace(chr(39), chr(34)) for p in PLATFORMS)}]\n" \
            f"wheels = [\n{listed},\n]\n"
    # top-level keys must come before the first [table]
    head, sep, tail = text.partition("\n[permissions]")
    return head.rstrip() + "\n" + extra + sep + tail


def build(out: str, wheels_dir: str | None) -> tuple[str, str]:
    os.makedirs(out, exist_ok=True)
    v = version()
    ext_wheels = wheel_files(wheels_dir, EXT_PYTHONS) if wheels_dir else []
    legacy_wheels = wheel_files(wheels_dir, LEGACY_PYTHONS) if wheels_dir else []
    ext = os.path.join(out, f"realtalk_blender-{v}.zip")
    legacy = os.path.join(out, f"realtalk_blender-{v}-legacy.zip")
    with zipfile.ZipFile(ext, "w", zipfile.ZIP_DEFLATED) as z:
        for full, rel in _source_files():
            if rel == "blender_manifest.toml":
                z.writestr(rel, manifest_with_wheels(ext_wheels))
            else:
                z.write(full, rel)
        for w in ext_wheels:
            z.write(w, "wheels/" + os.path.basename(w))
    with zipfile.ZipFile(legacy, "w", zipfile.ZIP_DEFLATED) as z:
        for full, rel in _source_files():
            z.write(full, "realtalk_blender/" + rel)
        for w in legacy_wheels:
            z.write(w, "realtalk_blender/wheels/" + os.path.basename(w))
    return ext, legacy


def find_validator() -> str | None:
    hits = glob.glob(os.path.join(ROOT, ".venv-bpy", "lib", "python3*", "site-packages", "bpy", "*",
                                  "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py"))
    return hits[0] if hits else None


def validate(zip_path: str, validator: str) -> None:
    # blender_ext.py is plain Python (no bpy): it checks the manifest, paths and wheels
    subprocess.run([sys.executable, validator, "validate", zip_path], check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "dist"))
    ap.add_argument("--wheels", default=os.path.join(HERE, "wheels"), help="wheel cache folder (git-ignored)")
    ap.add_argument("--no-wheels", action="store_true", help="build without bundled wheels (offline)")
    ap.add_argument("--download-only", action="store_true", help="only fill the wheel cache")
    ap.add_argument("--validator", default=None, help="path to bl_pkg/cli/blender_ext.py")
    args = ap.parse_args(argv)
    wheels_dir = None
    if not args.no_wheels:
        stamp = os.path.join(args.wheels, ".complete")
        if not os.path.exists(stamp):
            download_wheels(args.wheels, LEGACY_PYTHONS)
            open(stamp, "w").write("\n".join(sorted(os.listdir(args.wheels))))
        wheels_dir = args.wheels
        if args.download_only:
            return 0
    ext, legacy = build(args.out, wheels_dir)
    print(f"built {ext}\nbuilt {legacy}")
    validator = args.validator or find_validator()
    if validator:
        validate(ext, validator)
        print(f"validated {os.path.basename(ext)} with {validator}")
    else:
        print("no blender_ext.py found (run plugins/blender/tests/setup_bpy_venv.sh): not validated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
