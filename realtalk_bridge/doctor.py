"""`realtalk-bridge doctor`: check the install and say what to fix.

Each check returns (status, detail, fix): status "ok", "warn" (works, with limits) or "fail" (the
sidecar cannot run as configured). Exit code 1 when anything failed.
"""
from __future__ import annotations

import importlib
import platform
import socket
import sys
from pathlib import Path

CORE = [("numpy", "numpy"), ("onnxruntime", "onnxruntime"), ("zmq", "pyzmq"), ("msgpack", "msgpack"),
        ("soundfile", "soundfile"), ("soxr", "soxr")]
OPTIONAL = [("sounddevice", "sounddevice", "microphone input"), ("pythonosc", "python-osc", "VMC bridge"),
            ("torch", "torch==2.13.0", "training and export only"), ("mediapipe", "mediapipe", "video preparation only")]


def check_python():
    v = sys.version_info
    if v < (3, 10):
        return "fail", f"Python {platform.python_version()}", "install Python 3.10 or newer"
    return "ok", f"Python {platform.python_version()}", ""


# Python packages that wrap a system library: an OSError on import means the library, not the package, is missing
SYSTEM_LIBS = {
    "sounddevice": ("PortAudio", "Debian/Ubuntu: apt-get install libportaudio2; Fedora: dnf install portaudio; "
                                 "macOS: brew install portaudio"),
    "soundfile": ("libsndfile", "Debian/Ubuntu: apt-get install libsndfile1; macOS: brew install libsndfile"),
}


def check_package(module, pip_name, purpose=None):
    level = "warn" if purpose else "fail"
    need = f"; needed for {purpose}" if purpose else ""
    try:
        mod = importlib.import_module(module)
    except OSError as exc:  # the package is there, the shared library it loads is not
        lib, fix = SYSTEM_LIBS.get(module, ("a system library", f"reinstall {pip_name} or the library it names"))
        return level, f"{module}: {lib} is missing ({exc}){need}", fix
    except Exception as exc:  # ImportError (not installed), or a broken install
        return level, f"{module}: not importable ({type(exc).__name__}: {exc}){need}", f"pip install {pip_name}"
    return "ok", f"{module} {getattr(mod, '__version__', '')}".strip(), ""


def check_onnxruntime():
    try:
        import onnxruntime as ort
    except Exception:
        return "fail", "onnxruntime missing", "pip install onnxruntime"
    providers = ort.get_available_providers()
    from importlib import metadata

    installed = set()
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(dist)
            installed.add(dist)
        except metadata.PackageNotFoundError:
            pass
    if len(installed) == 2:  # they share one module folder and break each other
        return "fail", "both onnxruntime and onnxruntime-gpu are installed", (
            "pip uninstall -y onnxruntime onnxruntime-gpu, then install exactly one of them")
    return "ok", f"onnxruntime providers: {', '.join(providers)}", ""


def check_model(path=None):
    from realtalk_bridge.runtime.a2e import DEFAULT_MODEL, A2ERuntime

    p = Path(path) if path else DEFAULT_MODEL
    if not p.is_file():
        return "fail", f"no A2E model at {p}", ("pass --model FILE.onnx, or train and export one "
                                                "(docs/a2e.md), or install a release that ships models/a2e/default.onnx")
    try:
        rt = A2ERuntime(p)
    except Exception as exc:
        return "fail", f"{p}: {exc}", "re-export the model with `realtalk-bridge export a2e`"
    return "ok", f"model {p.name}: {rt.layout}, {len(rt.names)} names, {rt.provider}", ""


def check_audio():
    try:
        import sounddevice as sd
    except OSError as exc:
        return "warn", f"PortAudio missing ({exc})", (SYSTEM_LIBS["sounddevice"][1] +
                                                       ". --input FILE and pushed audio work without it")
    except ImportError:
        return "warn", "sounddevice not installed", "pip install sounddevice (microphone input only)"
    try:
        inputs = [d for d in sd.query_devices() if d["max_input_channels"] > 0]
    except Exception as exc:
        return "warn", f"PortAudio cannot list devices: {exc}", "check your sound system (ALSA/PulseAudio/PipeWire)"
    if not inputs:
        return "warn", "PortAudio works but sees no audio input", ("plug in a microphone, or use serve --no-mic with "
                                                                   "--input FILE or pushed audio")
    try:
        default = sd.query_devices(kind="input")["name"]
    except Exception:
        default = "none"
    return "ok", f"{len(inputs)} audio input(s); default: {default}", ""


def check_port(endpoint):
    import re

    mt = re.match(r"^tcp://(.+):(\d+)$", endpoint)
    if not mt:
        return "ok", f"{endpoint}: not a TCP port, not checked", ""
    host, port = mt.group(1).strip("[]"), int(mt.group(2))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            return "fail", f"{endpoint} is taken ({exc.strerror})", ("another sidecar may be running (`realtalk-bridge "
                                                                     "listen` to see); or choose --pub/--ctl ports")
    return "ok", f"{endpoint} is free", ""


def check_bridge(sink):
    """Where an enabled bridge sends and, on this machine, whether a receiver holds that UDP port."""
    from realtalk_bridge.bridges import is_loopback

    detail = f"{sink.kind} -> {sink.host}:{sink.port}"
    if sink.kind == "vmc":
        detail += f", names {sink.names_choice}" + (", head bone" if sink.head else "")
    elif sink.kind == "ifacialmocap":
        heard = getattr(sink, "listen_addr", None)
        detail += f", {sink.version}, start message " + (
            f"heard on {heard[0]}:{heard[1]}" if heard else "not listened for")
    elif sink.kind == "livelink":
        detail += f", subject {sink.subject}"
    if not is_loopback(sink.host):
        return "ok", detail + " (another machine: not checked from here)", ""
    family = socket.AF_INET6 if ":" in sink.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((sink.host, sink.port))
        except OSError:  # taken: something (the receiver app, we hope) listens there
            return "ok", detail + " (a receiver holds the port)", ""
    return "warn", detail + " (nothing listens there yet)", ("start the receiving app (its default port is the "
                                                             "bridge's), or point the bridge at its port")


def bridge_checks(options):
    """One line per bridge switched on in `options` (serve's bridge flags / config keys; a ValueError
    instead of a mapping: the config file could not be read)."""
    from realtalk_bridge import bridges

    if isinstance(options, ValueError):
        yield "config", ("fail", str(options), "fix the config file")
        return
    try:
        sinks = bridges.make_sinks(options)
    except bridges.BridgeConfigError as exc:
        yield "bridges", ("fail", str(exc), "fix that option (docs/rig-outputs.md lists them)")
        return
    for sink in sinks:
        try:
            yield f"{sink.kind} bridge", check_bridge(sink)
        finally:
            sink.close()


def checks(model=None, pub=None, ctl=None, bridge_options=None):
    from realtalk_bridge.sidecar.server import DEFAULT_CTL, DEFAULT_PUB

    yield "python", check_python()
    for module, pip_name in CORE:
        yield module, check_package(module, pip_name)
    for module, pip_name, purpose in OPTIONAL:
        yield module, check_package(module, pip_name, purpose)
    yield "onnxruntime providers", check_onnxruntime()
    yield "model", check_model(model)
    yield "audio", check_audio()
    yield "stream port", check_port(pub or DEFAULT_PUB)
    yield "control port", check_port(ctl or DEFAULT_CTL)
    yield from bridge_checks(bridge_options or {})


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="check this .onnx instead of the shipped model")
    p.add_argument("--pub", default=None, help="stream endpoint to check")
    p.add_argument("--ctl", default=None, help="control endpoint to check")
    p.add_argument("--config", default=None, help="serve's TOML config: check the bridges it switches on")
    from realtalk_bridge import bridges

    bridges.add_arguments(p)  # the same bridge flags as serve: one line per bridge switched on


def _bridge_options(args):
    """serve's bridge options: --config file, then the command line (a ValueError if the file is bad)."""
    from realtalk_bridge import bridges

    opts = {}
    if getattr(args, "config", None):
        from realtalk_bridge.sidecar.serve import load_config

        try:
            opts.update({k: v for k, v in load_config(args.config).items() if k in bridges.DEFAULTS})
        except ValueError as exc:
            return exc
    opts.update({k: getattr(args, k) for k in bridges.DEFAULTS if getattr(args, k, None) is not None})
    return opts


def run(args) -> int:
    marks = {"ok": "[green]ok  [/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}
    try:
        from rich.console import Console

        console = Console(highlight=False)
        say = console.print
    except ImportError:  # plain text when rich is missing
        import re

        def say(text):
            print(re.sub(r"\[/?\w+\]", "", text))
    warned = 0
    failed = 0
    for name, (status, detail, fix) in checks(args.model, args.pub, args.ctl, _bridge_options(args)):
        failed += status == "fail"
        warned += status == "warn"
        say(f"{marks[status]} {name:<22} {detail}")
        if fix and status != "ok":
            say(f"     {'':<22} fix: {fix}")
    say(summary(failed, warned))
    return 1 if failed else 0


def summary(fail: int, warn: int) -> str:
    """The last line: "all good" only when nothing failed and nothing warned."""
    if not fail and not warn:
        return "all good"
    parts = ([f"{fail} problem(s) to fix"] if fail else []) + ([f"{warn} warning(s)"] if warn else [])
    return ", ".join(parts) + ("" if fail else " (the sidecar runs; see the fixes above)")
