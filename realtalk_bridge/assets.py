"""Where the shipped model files live: the one lookup every model path goes through.

The repository keeps them in the top-level `models/` folder (`face/`, `a2e/`, cards, NOTICEs). A wheel
carries a copy inside the package as `realtalk_bridge/_models/` (setup.py's build step copies it), so an
installed package finds them wherever it runs from. Order:

1. `$REALTALK_MODELS`: a folder laid out like `models/` (a user's own weights, a test fixture);
2. `realtalk_bridge/_models/`: a regular (non-editable) install;
3. `<source tree>/models/`: a checkout or an editable install.
"""
from __future__ import annotations

import os
from pathlib import Path

MODELS_ENV = "REALTALK_MODELS"
_PACKAGE = Path(__file__).resolve().parent


def models_dir() -> Path:
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    packaged = _PACKAGE / "_models"
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent / "models"


def model_path(*parts: str) -> Path:
    """`model_path("a2e", "default.onnx")` -> the file's path (which may not exist; callers say so)."""
    return models_dir().joinpath(*parts)
