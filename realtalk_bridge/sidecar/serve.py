"""`realtalk-bridge serve`: the sidecar process. Audio in (mic, file, pushed), coefficient frames out.

Options come from the command line, else from `--config FILE.toml` (same names, `-` or `_`), else defaults.
Stops cleanly on Ctrl-C or SIGTERM: open streams are flushed and closed, sinks closed, sockets released.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import sys
from pathlib import Path

from realtalk_bridge import bridges
from realtalk_bridge.face import nonverbal
from realtalk_bridge.sidecar.server import DEFAULT_CTL, DEFAULT_PUB
from realtalk_bridge.video import sink as render_sink

log = logging.getLogger("realtalk_bridge.sidecar")

# option -> default (None: not set). The config file may set any of these.
DEFAULTS = {
    "pub": DEFAULT_PUB, "ctl": DEFAULT_CTL, "model": None, "fps": 30, "lookahead_ms": 80.0,
    "input": None, "loop": False, "no_mic": False, "device": None, "idle_timeout": 10.0,
    "allow_remote": False, "curve_secret_key": None, "smoothing": 0.0, "gains": {}, "log_level": "info",
    "nonverbal": False, "insecure": False, "curve_clients": None, "max_bake_mb": 32.0, "max_bake_minutes": 30.0,
    "max_streams": 64, "max_streams_per_client": 32, "max_lag_ms": 300.0, "pacing": True,
    "max_connections": 64, "engine_threads": 0,
}

# numeric options of serve itself -> (low, high): checked at start, whether from the command line or the config
RANGES = {
    "lookahead_ms": (0.0, 600.0), "idle_timeout": (0.1, 86400.0), "smoothing": (0.0, 1.0),
    "max_bake_mb": (0.001, 1024.0), "max_bake_minutes": (0.01, 24 * 60.0), "max_streams": (1, 1024),
    "max_streams_per_client": (1, 1024), "max_lag_ms": (0.0, 10000.0),
    "max_connections": (1, 65536), "engine_threads": (0, 64),
}


# The UDP bridges (VMC, iFacialMocap, Live Link), the non-verbal layer and the renderer sink each own their
# options; the config file may set theirs too.
DEFAULTS.update({k: v for k, v in {**bridges.DEFAULTS, **nonverbal.DEFAULTS, **render_sink.DEFAULTS}.items()
                 if k not in DEFAULTS})


def add_arguments(p) -> None:
    p.add_argument("--pub", default=None, help=f"stream (PUB) endpoint, default {DEFAULT_PUB}")
    p.add_argument("--ctl", default=None, help=f"control (ROUTER) endpoint, default {DEFAULT_CTL}")
    p.add_argument("--config", default=None, help="TOML file with any of these options (command line wins)")
    p.add_argument("--model", default=None, help="A2E .onnx (default: models/a2e/default.onnx)")
    # numbers are parsed in _check, so a bad value gets one clear line instead of the whole usage text
    p.add_argument("--fps", type=_number, default=None, help="output frame rate: 25, 30, 50 or 60 (default 30)")
    p.add_argument("--lookahead-ms", type=_number, default=None, help="A2E look-ahead in ms, 0..600 (default 80)")
    p.add_argument("--input", default=None, help="play this audio file as stream 'file' at real-time speed")
    p.add_argument("--loop", action="store_const", const=True, default=None, help="loop --input")
    p.add_argument("--no-mic", action="store_const", const=True, default=None, help="do not open the microphone")
    p.add_argument("--device", default=None, help="input device index or name (see `realtalk-bridge devices`)")
    p.add_argument("--idle-timeout", type=_number, default=None, help="close pushed streams idle this long (s, default 10)")
    p.add_argument("--smoothing", type=_number, default=None, help="default one-pole smoothing 0..1 (default 0)")
    p.add_argument("--allow-remote", action="store_const", const=True, default=None,
                   help="allow binding non-loopback interfaces (needs --curve-secret-key, or --insecure)")
    p.add_argument("--insecure", action="store_const", const=True, default=None,
                   help="with --allow-remote: bind other interfaces WITHOUT encryption or authentication")
    p.add_argument("--curve-secret-key", default=None, help="ZeroMQ CURVE server secret key file (.key_secret)")
    p.add_argument("--curve-clients", default=None, metavar="DIR",
                   help="only clients whose public key file (*.key) is in DIR may connect (CURVE, ZAP)")
    p.add_argument("--max-bake-mb", type=_number, default=None, help="largest bake upload in MiB (default 32)")
    p.add_argument("--max-bake-minutes", type=_number, default=None, help="longest bake audio (default 30)")
    p.add_argument("--max-streams", type=_number, default=None, help="pushed streams, all clients (default 64)")
    p.add_argument("--max-streams-per-client", type=_number, default=None, help="pushed streams per client (default 32)")
    p.add_argument("--max-connections", type=_number, default=None,
                   help="TCP connections per socket (control, stream); new ones past it are closed (default 64)")
    p.add_argument("--engine-threads", type=_number, default=None, metavar="N",
                   help="model calls run at once: each tick's batch split N ways (default 0: the CPU cores, at most 4)")
    p.add_argument("--max-lag-ms", type=_number, default=None,
                   help="live audio older than this when the A2E gets to it is dropped (lagging event; default 300)")
    p.add_argument("--no-pacing", dest="pacing", action="store_const", const=False, default=None,
                   help="publish frames as soon as computed (bursts) instead of each at its own time")
    p.add_argument("--make-curve-keys", default=None, metavar="DIR",
                   help="write a CURVE key pair (server.key, server.key_secret) into DIR and exit")
    p.add_argument("--nonverbal", action="store_const", const=True, default=None,
                   help="add blinks / idle head motion / emotion overlay (face/nonverbal.py) to every stream")
    p.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"))
    bridges.add_arguments(p)
    nonverbal.add_arguments(p)
    render_sink.add_arguments(p)


def engine_threads(n: int) -> int:
    """--engine-threads: 0 means one per CPU core this process may use, at most 4 (the batches of a tick are
    small: more slices cost more than they save)."""
    if n:
        return int(n)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _number(text: str):
    """argparse type: any number; the range check (with one clear line) is in _check."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text  # _check says what is wrong with it


def load_config(path) -> dict:
    """Read a TOML config: any key of DEFAULTS (serve's own, the bridges' and the non-verbal layer's)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read config {path}: {exc}") from exc
    cfg = {}
    for key, value in raw.items():
        k = key.replace("-", "_")
        if k not in DEFAULTS:
            raise ValueError(f"config {path}: unknown option {key!r} (known: {', '.join(sorted(DEFAULTS))})")
        if DEFAULTS[k] is not None and not isinstance(value, type(DEFAULTS[k])) and not (
                isinstance(DEFAULTS[k], float) and isinstance(value, int)):
            raise ValueError(f"config {path}: {key} must be {type(DEFAULTS[k]).__name__}, got {value!r}")
        cfg[k] = value
    return cfg


def resolve(args) -> dict:
    """Command line > config file > defaults."""
    opts = dict(DEFAULTS)
    if args.config:
        opts.update(load_config(args.config))
    for k in DEFAULTS:
        v = getattr(args, k, None)
        # None: not on the command line; False from a store_true flag (e.g. --vmc-head) means the same
        if v is not None and not (v is False and isinstance(DEFAULTS[k], bool)):
            opts[k] = v
    _check(opts)
    return opts


def _check(opts: dict) -> None:
    """Refuse values that would otherwise only fail later, per stream, or be silently ignored."""
    from realtalk_bridge.runtime.a2e import MAX_LOOKAHEAD_MS, OUTPUT_FPS

    from realtalk_bridge.sidecar.server import check_endpoint

    fps = opts["fps"]
    if isinstance(fps, bool) or fps not in OUTPUT_FPS:
        raise ValueError(f"fps must be one of {', '.join(map(str, OUTPUT_FPS))}, got {fps!r}")
    opts["fps"] = int(fps)
    RANGES["lookahead_ms"] = (0.0, MAX_LOOKAHEAD_MS)
    for key, (lo, hi) in RANGES.items():
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"{key} must be in [{lo:g}, {hi:g}], got {v!r}")
    for key in ("max_streams", "max_streams_per_client", "max_connections", "engine_threads"):
        if opts[key] != int(opts[key]):
            raise ValueError(f"{key} must be a whole number, got {opts[key]!r}")
    if not isinstance(opts["gains"], dict):
        raise ValueError(f"gains must be a table name = number, got {opts['gains']!r}")
    for name, g in opts["gains"].items():
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g <= 10:
            raise ValueError(f"gains: {name} must be a number in [0, 10], got {g!r}")
    for key in ("pub", "ctl"):
        check_endpoint(opts[key])
    if opts["pub"] == opts["ctl"] and not opts["pub"].endswith((":*", ":0")):  # (any free port)
        raise ValueError(f"--pub and --ctl must be different endpoints (both are {opts['pub']})")
    if opts["insecure"] and not opts["allow_remote"]:
        raise ValueError("--insecure only makes sense with --allow-remote")
    if opts["curve_clients"] and not opts["curve_secret_key"]:
        raise ValueError("--curve-clients needs --curve-secret-key")
    if opts.get("emotion") and not opts["nonverbal"]:
        raise ValueError("--emotion needs --nonverbal (the emotion overlay is part of the non-verbal layer)")


def make_curve_keys(directory, name: str = "server") -> tuple[Path, Path]:
    """A CURVE key pair in DIR: NAME.key (public, give it to clients) and NAME.key_secret (mode 0600)."""
    import os

    import zmq.auth

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)  # the secret file is never world-readable, not even for a moment
    try:
        public, secret = zmq.auth.create_certificates(str(d), name)
    finally:
        os.umask(old)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    return Path(public), Path(secret)


def load_client_keys(directory) -> list[bytes]:
    """The z85 public keys of every *.key certificate in DIR (the CURVE allow-list)."""
    import zmq.auth

    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"--curve-clients {directory}: not a folder")
    keys = []
    for f in sorted(d.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(str(f))
        except Exception as exc:
            raise ValueError(f"--curve-clients: {f} is not a ZeroMQ certificate: {exc}") from None
        keys.append(public)
    if not keys:
        raise ValueError(f"--curve-clients {directory}: no *.key public key files (make some with "
                         "`realtalk-bridge serve --make-curve-keys DIR`)")
    return keys


def portaudio_missing() -> str | None:
    """Why the microphone cannot work on this machine, or None (sounddevice needs the PortAudio library)."""
    try:
        import sounddevice  # noqa: F401
    except ImportError as exc:
        return f"the Python package sounddevice is missing ({exc}): pip install sounddevice"
    except OSError as exc:
        return (f"the PortAudio library is missing ({exc}): install it (Debian/Ubuntu `apt-get install "
                "libportaudio2`, macOS `brew install portaudio`), or use --no-mic / --input FILE / pushed audio")
    return None


def _postprocess_factory(opts):
    """A NonVerbal per stream (face/nonverbal.py), configured by its serve options (resolved opts)."""
    nonverbal.from_options((), opts)  # a bad option (emotion, switches) fails here, not in a stream

    def make(stream, names, fps):
        return nonverbal.from_options(names, opts)

    return make


def run(args) -> int:
    if args.make_curve_keys:
        public, secret = make_curve_keys(args.make_curve_keys)
        print(f"server secret key: {secret}  (serve --curve-secret-key {secret})")
        print(f"server public key: {public}  (give this file to clients)")
        return 0
    try:
        opts = resolve(args)
    except ValueError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=opts["log_level"].upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    # the io loop, the engine and the bake workers share the GIL: hand it over every 1 ms (not 5), so a
    # frame due now never waits behind another thread's Python work
    sys.setswitchinterval(0.001)

    from realtalk_bridge.runtime.a2e import A2ERuntime
    from realtalk_bridge.sidecar.server import Server
    from realtalk_bridge.sidecar.sources import FileSource, MicSource

    try:
        rt = A2ERuntime(opts["model"], parallel=engine_threads(opts["engine_threads"]))
    except (FileNotFoundError, ValueError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 1
    sinks = []
    try:
        sinks.extend(bridges.make_sinks(opts))  # command line > config file > defaults
        post = _postprocess_factory(opts) if opts["nonverbal"] else None
        renderer = render_sink.make_sink(opts)  # None without --render
    except (ValueError, FileNotFoundError) as exc:  # a bad bridge / non-verbal / render option: say which
        for s in sinks:
            s.close()
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    if renderer is not None:
        sinks.append(renderer)
    try:
        clients = load_client_keys(opts["curve_clients"]) if opts["curve_clients"] else None
        server = Server(rt, pub=opts["pub"], ctl=opts["ctl"], fps=opts["fps"], lookahead_ms=opts["lookahead_ms"],
                        idle_timeout=opts["idle_timeout"], sinks=sinks, postprocess=post,
                        allow_remote=opts["allow_remote"], curve_secret_key=opts["curve_secret_key"],
                        smoothing=opts["smoothing"], gains=opts["gains"], curve_clients=clients,
                        insecure=opts["insecure"], max_bake_bytes=int(opts["max_bake_mb"] * 1024 * 1024),
                        max_bake_s=60.0 * opts["max_bake_minutes"], max_streams=int(opts["max_streams"]),
                        max_streams_per_client=int(opts["max_streams_per_client"]),
                        max_lag_s=opts["max_lag_ms"] / 1000.0, pacing=opts["pacing"],
                        max_connections=int(opts["max_connections"]))
    except (ValueError, OSError) as exc:
        for s in sinks:
            s.close()
        print(f"serve: {exc}", file=sys.stderr)
        return 1
    if renderer is not None:
        renderer.publish = render_sink.server_publish(server)

    sources = []
    try:
        if opts["input"]:
            sources.append(FileSource(server, opts["input"], loop=opts["loop"]))
        if not opts["no_mic"]:
            missing = portaudio_missing()
            if missing:  # said once, clearly; the source still retries in case it gets installed
                log.warning("microphone: %s", missing)
            device = opts["device"]
            if isinstance(device, str) and device.isdigit():
                device = int(device)
            sources.append(MicSource(server, device=device))
    except ValueError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        server._close_sockets()
        return 1

    def on_signal(signum, frame):
        log.info("signal %d: stopping", signum)
        for s in sources:
            s._stop.set()  # no join inside a signal handler
        server.stop(timeout=0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_signal)
    print(f"realtalk-bridge serve: stream (PUB) {server.pub_endpoint}, control (ROUTER) {server.ctl_endpoint}", flush=True)
    print(f"  model {rt.path} ({rt.layout}, {len(rt.names)} names, {rt.provider}); {opts['fps']} fps, "
          f"look-ahead {opts['lookahead_ms']:g} ms", flush=True)
    print("  sources: " + (", ".join(type(s).__name__.replace("Source", "").lower() for s in sources) or "pushed audio only")
          + "; Ctrl-C to stop", flush=True)
    for s in sources:
        s.start()
    try:
        server.run()  # returns after stop(); flushes and closes streams, sinks and sockets
    finally:
        for s in sources:
            s.stop(timeout=3)
    print("realtalk-bridge serve: stopped", flush=True)
    return 0
