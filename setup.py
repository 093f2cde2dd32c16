"""Packaging hook; everything else is in pyproject.toml.

The shipped weights stay in the top-level `models/` folder of the repository. A wheel needs them inside
the package, so the build step copies `models/` to `realtalk_bridge/_models/` in the build tree
(`realtalk_bridge.assets.models_dir` looks there first). Editable installs skip the copy and read the
source tree's `models/` directly.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class build_py_with_models(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        src = ROOT / "models"
        if not src.is_dir():
            raise SystemExit(f"setup.py: {src} is missing; the wheel would ship no models")
        dst = Path(self.build_lib) / "realtalk_bridge" / "_models"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": build_py_with_models})
