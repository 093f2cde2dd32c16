import subprocess
import sys

from realtalk_bridge.cli import COMMANDS, main
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES


def test_arkit_names_unique_and_ordered():
    assert len(set(ARKIT_NAMES)) == 52
    assert ARKIT_NAMES[17] == "jawOpen" and ARKIT_INDEX["tongueOut"] == 51


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for key in COMMANDS:
        assert " ".join(key) in out


def test_unknown_command_is_an_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_python_dash_m_runs():
    r = subprocess.run([sys.executable, "-m", "realtalk_bridge", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip()


def test_group_words_alone_list_their_subcommands(capsys):
    for word in ("train", "export", "bench", "eval"):
        assert main([word]) == 2
        err = capsys.readouterr().err
        assert "unknown command" not in err and "choose one of its commands" in err
        subs = [k for k in COMMANDS if k[0] == word and len(k) == 2]
        assert subs and all(" ".join(k) in err for k in subs)
    assert main(["bench", "--help"]) == 0
    assert "bench bake" in capsys.readouterr().out
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'nope'" in err and "bench a2e" in err
