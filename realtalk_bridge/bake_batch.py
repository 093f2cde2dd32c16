"""`realtalk-bridge bake FOLDER_OR_GLOB --out DIR`: bake a whole dialogue library, unattended.

- Inputs: every .wav/.flac/.ogg/.mp3 under a folder (recursively), or the files a glob pattern matches
  (`"lines/**/*.wav"`). The tree below the folder (or below the pattern's fixed prefix) is mirrored into
  --out, one track per input, in --format.
- Work: --jobs worker processes (default: one per core), each with its own onnxruntime session on one
  intra-op thread; infer_offline batches many windows per model call. `--ray ADDRESS` hands the same
  work items to Ray actors instead (`--ray local` starts a local Ray instance).
- Manifest: `DIR/bake-manifest.jsonl`, one JSON line per finished file (input, size, mtime, model hash,
  settings, output, status, error, warning). A second run skips inputs whose last line says done with the
  same size, mtime, model and settings (and whose output is still there), and retries the others.
- Safety: only this (parent) process writes files. Each track is written to a temporary file and renamed,
  then its manifest line is appended and flushed, so Ctrl-C or a crash never leaves a truncated track and
  never loses a finished one. A bad input (unreadable, truncated, silent, empty, too long) becomes a
  `failed` (or, for truncated, a `done` with a `warning`) line; it never stops the job.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")
MANIFEST_NAME = "bake-manifest.jsonl"
FORMAT_CHOICES = ("csv", "json", "npz", "msgpack")
MAX_SEND_BYTES = 512 << 20  # --ray: the driver sends file bytes to the cluster; larger files are refused


@dataclass(frozen=True)
class Settings:
    """What changes a bake's result: a manifest line is reused only when these match."""
    fps: float
    lookahead_ms: float
    format: str
    max_seconds: float
    allow_silent: bool
    stride: int = 1  # infer_offline stride; 1 = equal to the live stream


# ---------------------------------------------------------------------------------------- planning

def find_inputs(spec: str) -> tuple[Path, list[Path]]:
    """A folder or a glob pattern -> (root the tree is mirrored from, sorted audio files)."""
    if os.path.isdir(spec):
        root = Path(spec)
        files = [p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()]
    else:
        parts = Path(spec).parts
        fixed = list(_until_magic(parts))
        root = Path(*fixed) if fixed else Path(".")
        files = [Path(p) for p in glob.glob(spec, recursive=True)]
        files = [p for p in files if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
    return root, sorted(files)


def _until_magic(parts):
    for part in parts[:-1]:  # the last part is the file pattern
        if glob.has_magic(part):
            return
        yield part


def output_for(root: Path, out_dir: Path, src: Path, fmt: str) -> Path:
    return out_dir / src.relative_to(root).with_suffix("." + fmt)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(path: Path) -> dict[str, dict]:
    """The last line per input of a manifest (missing file -> {}). Unreadable lines (a line torn by a
    crash, a hand edit) are skipped: their inputs are simply baked again."""
    last: dict[str, dict] = {}
    if not path.is_file():
        return last
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("input"), str):
                last[rec["input"]] = rec
    return last


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def is_done(rec: dict | None, size: int, mtime: float, model: str, settings: Settings, out_dir: Path) -> bool:
    """True when a manifest line says this exact input was baked with this model and settings."""
    if not rec or rec.get("status") != "done":
        return False
    same = (rec.get("size") == size and rec.get("mtime") == mtime and rec.get("model") == model
            and {"stride": 1, **(rec.get("settings") or {})} == asdict(settings))  # older lines: stride 1
    return same and isinstance(rec.get("output"), str) and (out_dir / rec["output"]).is_file()


# ------------------------------------------------------------------------------------------ the work

def bake_source(rt, source, name: str, settings: Settings) -> dict:
    """One input (path or file bytes) -> {"status", "error", "warning", "seconds", "frames", "data"}.

    Runs in a worker (process or Ray actor). Never raises for a bad input: the error is the result."""
    from realtalk_bridge.bake import BakeInputError, bake_array, encode_track, read_checked, track_meta

    res = {"status": "failed", "error": None, "warning": None, "seconds": None, "frames": None, "data": None}
    try:
        src = read_checked(source, name=name, max_seconds=settings.max_seconds, allow_silent=settings.allow_silent)
        t, w = bake_array(rt, src.audio, fps=settings.fps, lookahead_ms=settings.lookahead_ms,
                          stride=settings.stride)
        res["data"] = encode_track("." + settings.format, t, w, rt.names, settings.fps,
                                   meta=track_meta(rt, settings.lookahead_ms, Path(name).name, settings.stride))
        res.update(status="done", seconds=round(src.seconds, 6), frames=int(len(w)),
                   warning="; ".join(src.warnings) or None)
    except BakeInputError as exc:
        res["error"] = str(exc)
    except Exception as exc:  # whatever one file does (a decoder or model error), the job goes on
        res["error"] = f"{name}: {type(exc).__name__}: {exc}"
    return res


_RT = None  # the worker process's own session


def _init_worker(model: str | None) -> None:
    # Ctrl-C goes to the whole process group: the parent alone decides what happens (it finishes writing)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    global _RT
    from realtalk_bridge.runtime.a2e import A2ERuntime

    _RT = A2ERuntime(model, threads=1)


def _exit_with_parent() -> None:
    """A worker whose parent was killed (SIGKILL, OOM) would wait on its queue forever: leave instead."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _work(path: str, name: str, settings: Settings) -> dict:
    return bake_source(_RT, path, name, settings)


class _RayWorker:
    """A Ray actor: one onnxruntime session, built from the model bytes the driver sent."""

    def __init__(self, model_bytes: bytes):
        import tempfile

        from realtalk_bridge.runtime.a2e import A2ERuntime

        fd, tmp = tempfile.mkstemp(suffix=".onnx")
        with os.fdopen(fd, "wb") as f:
            f.write(model_bytes)
        try:
            self.rt = A2ERuntime(tmp, threads=1)
        finally:
            os.unlink(tmp)  # the session holds the model in memory

    def bake(self, item: tuple) -> tuple:
        key, data, name, settings = item
        return key, bake_source(self.rt, data, name, settings)


# --------------------------------------------------------------------------------------- the job

class Job:
    """Plans a batch, runs it on a backend, writes outputs and the manifest (this process only)."""

    def __init__(self, spec: str, out_dir: Path, settings: Settings, model: str | None, manifest: Path | None = None):
        from realtalk_bridge.runtime.a2e import DEFAULT_MODEL

        self.root, self.files = find_inputs(spec)
        self.out_dir = out_dir
        self.settings = settings
        self.model = model
        self.model_path = Path(model) if model else DEFAULT_MODEL
        if not self.model_path.is_file():
            raise FileNotFoundError(f"no A2E model at {self.model_path}")
        self.model_hash = file_sha256(self.model_path)
        self.manifest_path = manifest or out_dir / MANIFEST_NAME
        self.counts = {"done": 0, "failed": 0, "skipped": 0, "warnings": 0}
        self.audio_seconds = 0.0
        self.failures: list[str] = []
        self.conflicts: list[tuple] = []
        self._manifest = None

    def plan(self) -> list[tuple[str, Path, Path, int, float]]:
        """(key, source, output, size, mtime) of every input not already done."""
        previous = load_manifest(self.manifest_path)
        todo, claimed = [], {}
        self.conflicts = []
        for src in self.files:
            st = src.stat()
            key = src.relative_to(self.root).as_posix()
            out = output_for(self.root, self.out_dir, src, self.settings.format)
            if out in claimed:  # line.wav and line.flac side by side: never let one overwrite the other
                self.conflicts.append((key, src, out, st.st_size, st.st_mtime, claimed[out]))
                continue
            claimed[out] = key
            if is_done(previous.get(key), st.st_size, st.st_mtime, self.model_hash, self.settings, self.out_dir):
                self.counts["skipped"] += 1
                continue
            todo.append((key, src, out, st.st_size, st.st_mtime))
        return todo

    def record(self, item, res: dict) -> None:
        """Write one finished file: the track (atomically), then its manifest line (flushed)."""
        from realtalk_bridge.bake import write_atomic

        key, src, out, size, mtime = item
        rec = {"input": key, "size": size, "mtime": mtime, "model": self.model_hash,
               "settings": asdict(self.settings), "output": None, "status": res["status"], "error": res["error"],
               "warning": res["warning"], "seconds": res["seconds"], "frames": res["frames"],
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if res["status"] == "done":
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(out, res["data"])
                rec["output"] = out.relative_to(self.out_dir).as_posix()
            except OSError as exc:
                rec.update(status="failed", error=f"cannot write {out}: {exc}")
        if rec["status"] == "done":
            self.counts["done"] += 1
            self.audio_seconds += rec["seconds"] or 0.0
            self.counts["warnings"] += rec["warning"] is not None
        else:
            self.counts["failed"] += 1
            self.failures.append(rec["error"])
        self._manifest.write(json.dumps(rec) + "\n")
        self._manifest.flush()
        os.fsync(self._manifest.fileno())

    def run(self, jobs: int | None, ray_address: str | None = None, progress=None) -> None:
        """Bake what plan() leaves. jobs None: one per core here, one per cluster CPU on Ray."""
        todo = self.plan()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.manifest_path, "a", encoding="utf-8") as self._manifest:
            if self._manifest.tell() and not _ends_with_newline(self.manifest_path):
                self._manifest.write("\n")  # a line torn by a crash stays alone (and is ignored)
            for *item, first in self.conflicts:
                self.record(tuple(item), {"status": "failed", "error": f"{item[0]}: same output as {first} "
                                          f"({item[2].name}); rename one of them", "warning": None,
                                          "seconds": None, "frames": None, "data": None})
            if progress is not None:
                progress.start(len(todo))
            done = (progress.advance if progress is not None else (lambda: None))
            if not todo:
                return
            if ray_address:
                self._run_ray(todo, jobs, ray_address, done)
            elif (jobs or os.cpu_count() or 1) <= 1:
                self._run_inline(todo, done)
            else:
                self._run_pool(todo, jobs or os.cpu_count() or 1, done)

    def _run_inline(self, todo, done) -> None:
        from realtalk_bridge.runtime.a2e import A2ERuntime

        rt = A2ERuntime(self.model, threads=1)
        for item in todo:
            self.record(item, bake_source(rt, str(item[1]), item[0], self.settings))
            done()

    def _run_pool(self, todo, jobs, done) -> None:
        import multiprocessing as mp

        # spawn, not fork: the parent may hold onnxruntime or other threads that fork would copy mid-state
        ex = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(self.model,))
        futures = {ex.submit(_work, str(item[1]), item[0], self.settings): item for item in todo}
        written = set()
        try:
            for fut in as_completed(futures):
                try:
                    res = fut.result()
                except Exception as exc:  # a worker died (killed, out of memory): this file fails, a rerun retries
                    res = {"status": "failed", "warning": None, "seconds": None, "frames": None, "data": None,
                           "error": f"{futures[fut][0]}: worker failed: {type(exc).__name__}: {exc}"}
                self.record(futures[fut], res)
                written.add(fut)
                done()
        except KeyboardInterrupt:
            # drop what has not started, let the running ones finish, and keep everything finished
            ex.shutdown(wait=True, cancel_futures=True)
            for fut, item in futures.items():
                if fut not in written and fut.done() and not fut.cancelled() and fut.exception() is None:
                    self.record(item, fut.result())
            raise
        finally:
            ex.shutdown(wait=True, cancel_futures=True)

    def _run_ray(self, todo, jobs, address, done) -> None:
        try:
            import ray
            from ray.util import ActorPool
        except ImportError:
            raise ModuleNotFoundError("No module named 'ray'", name="ray") from None

        started = not ray.is_initialized()
        if started:
            if address == "local":
                ray.init(num_cpus=jobs or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        try:
            self._ray_map(ray, ActorPool, todo, jobs, done)
        finally:
            if started:
                ray.shutdown()

    def _ray_map(self, ray, ActorPool, todo, jobs, done) -> None:
        Worker = ray.remote(num_cpus=1)(_RayWorker)
        model_ref = ray.put(self.model_path.read_bytes())
        if jobs is None:  # the whole cluster
            jobs = int(ray.cluster_resources().get("CPU", 1))
        n_actors = max(1, min(jobs, len(todo)))
        pool = ActorPool([Worker.remote(model_ref) for _ in range(n_actors)])
        items = {item[0]: item for item in todo}

        def payloads():  # read lazily: only as many files in flight as there are actors
            for key, src, _out, size, _mtime in todo:
                if size > MAX_SEND_BYTES:
                    data = b""  # read_checked reports it; the file is never sent
                else:
                    data = src.read_bytes()
                yield key, data, key, self.settings

        for key, res in pool.map_unordered(lambda actor, it: actor.bake.remote(it), payloads()):
            if items[key][3] > MAX_SEND_BYTES:
                res = {**res, "status": "failed", "error": f"{key}: larger than {MAX_SEND_BYTES >> 20} MiB"}
            self.record(items[key], res)
            done()


class _Bar:
    """One rich progress bar for the whole job (files); silent when stderr is not a terminal."""

    def __init__(self, label: str = "bake"):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.p = Progress(label, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=Console(stderr=True), transient=False)
        self.task = None

    def start(self, total: int) -> None:
        self.p.start()
        self.task = self.p.add_task("bake", total=total)

    def advance(self) -> None:
        self.p.advance(self.task)

    def stop(self) -> None:
        self.p.stop()


# ---------------------------------------------------------------------------------------- command

def add_arguments(p) -> None:
    g = p.add_argument_group("batch (a folder or glob pattern as input)")
    g.add_argument("--format", choices=FORMAT_CHOICES, default="csv", help="track format of every output (default csv)")
    g.add_argument("--jobs", type=int, default=None,
                   help="worker processes, each with its own model session (default: the number of cores; "
                        "with --ray: the cluster's CPUs)")
    g.add_argument("--manifest", default=None, help=f"manifest file (default: OUT/{MANIFEST_NAME})")
    g.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on an existing Ray cluster (`auto`, ray://host:10001; `local` starts one here); "
                        'needs `pip install "realtalk-bridge[ray]"` here and on the cluster')


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run(args) -> int:
    from realtalk_bridge.bake import FORMATS

    out = Path(args.out)
    if out.suffix.lower() in FORMATS:
        print(f"bake: {args.audio} is a folder or pattern, so --out must be a folder, not {out.name} "
              "(choose the track format with --format)", file=sys.stderr)
        return 2
    if out.exists() and not out.is_dir():
        print(f"bake: --out {out} exists and is not a folder", file=sys.stderr)
        return 2
    if not out.parent.exists():
        print(f"bake: the folder {out.parent} does not exist; create it first", file=sys.stderr)
        return 2
    if args.jobs is not None and args.jobs < 1:
        print("bake: --jobs must be >= 1", file=sys.stderr)
        return 2
    settings = Settings(fps=float(args.fps), lookahead_ms=float(args.lookahead_ms), format=args.format,
                        max_seconds=float(args.max_seconds), allow_silent=bool(args.allow_silent),
                        stride=int(getattr(args, "stride", 1)))
    if not (1 <= settings.fps <= 120):
        print(f"bake: --fps must be in [1, 120], got {args.fps:g}", file=sys.stderr)
        return 2
    if settings.stride != 1:  # the largest stride depends on the model: say so once, not once per file
        from realtalk_bridge.runtime.a2e import A2ERuntime, check_stride

        try:
            check_stride(A2ERuntime(args.model), settings.stride, settings.lookahead_ms)
        except (FileNotFoundError, ValueError) as exc:
            print(f"bake: {exc}", file=sys.stderr)
            return 2
    try:
        job = Job(args.audio, out, settings, args.model, Path(args.manifest) if args.manifest else None)
    except FileNotFoundError as exc:
        print(f"bake: {exc}", file=sys.stderr)
        return 1
    if not job.files:
        print(f"bake: no audio files ({', '.join(AUDIO_SUFFIXES)}) in {args.audio}", file=sys.stderr)
        return 1
    bar = _Bar()
    t0 = time.perf_counter()
    interrupted = False
    # SIGTERM (a scheduler, `kill`) takes the same orderly path as Ctrl-C: finish, write, stop the workers
    previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    try:
        job.run(args.jobs, args.ray, progress=bar)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    dt = time.perf_counter() - t0
    c = job.counts
    print(f"bake: {c['done']} baked ({job.audio_seconds:.1f} s of audio in {dt:.1f} s, "
          f"{job.audio_seconds / max(dt, 1e-9):.0f}x real time), {c['skipped']} already done, "
          f"{c['failed']} failed, {c['warnings']} with warnings; manifest {job.manifest_path}")
    for err in job.failures[:10]:
        print(f"bake: failed: {err}", file=sys.stderr)
    if len(job.failures) > 10:
        print(f"bake: ... and {len(job.failures) - 10} more (see the manifest)", file=sys.stderr)
    if interrupted:
        print("bake: interrupted; run the same command again to finish", file=sys.stderr)
        return 130
    return 1 if c["failed"] else 0
