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
