"""Writes the Unity .meta files this package commits, with GUIDs derived from each asset's path so they are stable
across machines and re-runs (Unity keys every reference by GUID). Run after adding a file or folder:

    python plugins/unity/Tools~/make_meta.py          # writes missing .meta files
    python plugins/unity/Tools~/make_meta.py --check  # exit 1 if any is missing or stale

Folders whose names end in "~" (Samples~, Documentation~, Tests/Stubs~, Tools~) are ignored by Unity: no metas there,
except inside each sample (Samples~/<Sample>/...), which Unity copies into the project with its metas.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]
NAMESPACE = "com.realtalk-bridge.unity/"

TAIL = "  userData: \n  assetBundleName: \n  assetBundleVariant: \n"
IMPORTERS = {
    ".cs": "MonoImporter:\n  externalObjects: {}\n  serializedVersion: 2\n  defaultReferences: []\n  executionOrder: 0\n  icon: {instanceID: 0}\n",
    ".asmdef": "AssemblyDefinitionImporter:\n  externalObjects: {}\n",
    ".md": "TextScriptImporter:\n  externalObjects: {}\n",
    ".json": "TextScriptImporter:\n  externalObjects: {}\n",
    ".unity": "DefaultImporter:\n  externalObjects: {}\n",
}


def guid(rel: str) -> str:
    return hashlib.md5((NAMESPACE + rel).encode()).hexdigest()


def meta_text(path: Path) -> str:
    rel = path.relative_to(PKG).as_posix()
    head = f"fileFormatVersion: 2\nguid: {guid(rel)}\n"
    if path.is_dir():
        return head + "folderAsset: yes\nDefaultImporter:\n  externalObjects: {}\n" + TAIL
    if rel == "package.json":
        return head + "PackageManifestImporter:\n  externalObjects: {}\n" + TAIL
    return head + IMPORTERS.get(path.suffix, "DefaultImporter:\n  externalObjects: {}\n") + TAIL


def assets() -> list[Path]:
    out = []
    for p in sorted(PKG.rglob("*")):
        rel = p.relative_to(PKG)
        parts = rel.parts
        # Samples~/<Sample>/... is copied into Assets/ on import: its files keep their GUIDs only with committed metas
        # (the sample scenes reference the sample scripts by GUID). Samples~ itself and <Sample> folders' own level
        # follow Unity: the sample folder is copied as a whole, so it gets no meta of its own.
        if parts[0] == "Samples~" and len(parts) >= 3:
            parts = parts[2:]
        elif parts[0] == "Samples~":
            continue
        if any(part.endswith("~") or part.startswith(".") for part in parts):
            continue
        if p.suffix == ".meta":
            continue
        out.append(p)
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    bad = []
    for p in assets():
        meta = p.with_name(p.name + ".meta")
        want = meta_text(p)
        if not meta.exists() or meta.read_text() != want:
            if check:
                bad.append(str(meta.relative_to(PKG)))
            else:
                meta.write_text(want)
    for meta in PKG.rglob("*.meta"):
        if not meta.with_name(meta.name[:-5]).exists():
            bad.append(f"{meta.relative_to(PKG)} (orphan)")
    if bad:
        print("missing or stale .meta files:\n  " + "\n  ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
