"""`bench e2e` runs end to end on a short clip: a real sidecar subprocess, real sockets; JSON + PNG."""
import json

import soundfile as sf

from _sidecar_util import a2e_model, speech  # noqa: F401  (fixtures)
from realtalk_bridge.cli import main


def test_bench_e2e_writes_json_and_png(a2e_model, speech, tmp_path, capsys):
    clip = tmp_path / "clip.wav"
    sf.write(clip, speech[:24000], 16000)
    out = tmp_path / "e2e.json"
    assert main(["bench", "e2e", "--out", str(out), "--model", str(a2e_model), "--audio", str(clip),
                 "--fps", "25"]) == 0
    r = json.loads(out.read_text())
    assert r["frames_lost"] == 0 and r["frames_received"] == r["frames_expected"] == 38
    # latency includes the look-ahead by construction; the bound only guards against nonsense
    assert r["lookahead_ms"] <= r["latency_ms_p50"] <= r["latency_ms_p95"] < 2000
    assert r["rss_mb"] and r["rss_mb"] > 10
    assert (tmp_path / "e2e.png").stat().st_size > 5000


def test_bench_e2e_streams_writes_rounds_and_plot(a2e_model, speech, tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, speech[:16000], 16000)
    out = tmp_path / "streams.json"
    assert main(["bench", "e2e", "--out", str(out), "--model", str(a2e_model), "--audio", str(clip),
                 "--fps", "25", "--streams", "1,2", "--stream-seconds", "1.5"]) == 0
    r = json.loads(out.read_text())
    assert [x["streams"] for x in r["rounds"]] == [1, 2] and r["plot"] == "streams.png"
    for x in r["rounds"]:
        assert x["opened"] == x["admitted"] == x["streams"] and x["frames_owed"] == 38 * x["streams"]
        assert x["refused"] == 0 and x["refused_reasons"] == {} and isinstance(x["kept_meet_target"], bool)
        assert x["frames_received"] > 0 and x["latency_ms_p95"] >= x["latency_ms_p50"] > 0
        assert x["interval_jitter_ms_p95"] is not None
    assert r["max_streams_realtime"] in (0, 1, 2) and isinstance(r["kept_meet_target_all"], bool)
    assert (tmp_path / "streams.png").stat().st_size > 5000
