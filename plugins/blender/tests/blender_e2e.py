"""End-to-end run inside Blender (Debian blender 3.4 with -b, or the PyPI bpy 5.0 module).

Installs the add-on zip the way a user does, starts the sidecar command it is given, connects, streams a
speech file live, records a take, bakes the file, survives a sidecar restart, and unregisters. Asserts what
Blender-side structure must hold and writes the measured series to --out (JSON) so the pytest side can
check that shape keys move in step with the speech.

    blender -b --factory-startup --python-exit-code 1 --python blender_e2e.py -- --zip Z --mode legacy ...
    .venv-bpy/bin/python blender_e2e.py -- --zip Z --mode extension ...
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import bpy

ap = argparse.ArgumentParser()
ap.add_argument("--zip", required=True)
ap.add_argument("--mode", choices=("legacy", "extension"), required=True)
ap.add_argument("--sidecar", required=True, help="JSON list: command that serves pushed streams and bake")
ap.add_argument("--sidecar2", required=True, help="JSON list: command started after the first is killed")
ap.add_argument("--stream", required=True)
ap.add_argument("--control", required=True)
ap.add_argument("--wav", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--fps", type=int, default=24)
args = ap.parse_args(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else [])

out = {"blender": bpy.app.version_string}
procs = []


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def start(cmd):
    p = subprocess.Popen(json.loads(cmd), stdin=subprocess.DEVNULL)
    procs.append(p)
    return p


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


TICK_MS = []


def op(fn, *a, **kw):
    """Run an operator; one that reports ERROR raises under bpy: return its text then."""
    try:
        return fn(*a, **kw)
    except RuntimeError as e:
        return str(e)


def tick_until(S, cond, timeout, what, sample=None):
    deadline = time.monotonic() + timeout
    while True:
        t = time.perf_counter()
        S.tick()
        TICK_MS.append(1000 * (time.perf_counter() - t))
        if sample:
            sample()
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what} (client state: {S.status_line()})")
        time.sleep(0.01)


try:
    # -- install the zip as a user would ------------------------------------------------------------
    if args.mode == "legacy":
        bpy.ops.preferences.addon_install(filepath=args.zip)
        bpy.ops.preferences.addon_enable(module="realtalk_blender")
        pkg = "realtalk_blender"
    else:
        bpy.ops.extensions.package_install_files(filepath=args.zip, repo="user_default", enable_on_install=True)
        pkg = "bl_ext.user_default.realtalk_blender"
        # Blender installs the zip's wheels here (and removes them again when the extension is disabled)
        site = os.path.join(bpy.utils.user_resource("EXTENSIONS"), ".local", "lib",
                            "python{}.{}".format(*sys.version_info[:2]), "site-packages")
        out["ext_site_packages"] = sorted(os.listdir(site)) if os.path.isdir(site) else []
    check(pkg in bpy.context.preferences.addons, f"{pkg} not enabled")
    mod_session = sys.modules[pkg + ".session"]
    S = mod_session.SESSION
    out["addon_file"] = sys.modules[pkg].__file__
    import zmq
    out["zmq_from"] = zmq.__file__
    out["vendored"] = sys.modules[pkg + "._vendor"].VENDORED
    prefs = bpy.context.preferences.addons[pkg].preferences
    prefs.stream_endpoint, prefs.control_endpoint = args.stream, args.control

    # -- a scene: a face mesh with ARKit keys in mixed spellings, a custom key, a mesh without keys -----
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = args.fps, 1.0
    scene.frame_set(10)
    for ob in list(bpy.data.objects):
        bpy.data.objects.remove(ob)
    bpy.ops.mesh.primitive_uv_sphere_add()
    face = bpy.context.active_object
    face.name = "Face"
    for name in ("Basis", "JawOpen", "mouth_funnel", "mouthClose", "eyeBlink_L", "EyeBlinkRight", "Chin_Custom",
                 "Static_Key"):
        face.shape_key_add(name=name)
    bpy.ops.mesh.primitive_cube_add()
    prop = bpy.context.active_object
    prop.name = "Prop"
    face.select_set(True)
    prop.select_set(True)
    st = scene.realtalk
    row = st.channels.add()
    row.source, row.target, row.gain = "jawOpen", "Chin_Custom", 0.5
    row = st.channels.add()
    row.source, row.target, row.gain = "jawOpen", "Static_Key", 0.0  # never moves: left out by "Only moving keys"
    scene.frame_start, scene.frame_end = 1, 50  # shorter than the take and the bake: both must extend it
    mod_session.BLINK_WINDOW_S = 3.0  # the pushed speech is 4-5 s long

    # -- no sidecar yet: Record + Stop says 0 frames, Bake File fails fast, a bake job can be cancelled -----
    check(bpy.ops.realtalk.connect() == {"FINISHED"}, "connect (no sidecar) failed")
    st.audio_file = args.wav
    check(bpy.ops.realtalk.record() == {"FINISHED"}, "record start (no sidecar) failed")
    for _ in range(20):
        S.tick()
        time.sleep(0.01)
    r = op(bpy.ops.realtalk.record)
    out["no_sidecar_record"] = [str(r), S.message]
    check(r == {"CANCELLED"} and "0 frames received" in S.message,
          f"record with no sidecar: {out['no_sidecar_record']}")
    t_bake = time.monotonic()
    r = op(bpy.ops.realtalk.bake_file)
    out["no_sidecar_bake"] = [str(r), S.message, time.monotonic() - t_bake]
    check(r != {"FINISHED"} and "no sidecar answered" in S.message, f"bake with no sidecar: {out['no_sidecar_bake']}")
    t_push = time.monotonic()
    r = op(bpy.ops.realtalk.push_file)
    out["no_sidecar_push"] = [S.message, time.monotonic() - t_push]
    check(r != {"FINISHED"} and "unreachable" in S.message, f"push with no sidecar: {out['no_sidecar_push']}")
    job = S.bake_start(bpy.context, args.wav)
    states = [job.step(bpy.context)]
    job.cancel()
    states.append(job.step(bpy.context))
    out["bake_cancel_states"] = states
    check(states == ["ping", "cancelled"] and job.progress == 1.0, f"bake job cancel: {states}")
    S.bake_job = None
    S.message = ""

    # -- connect and stream the file live ------------------------------------------------------------
    side = start(args.sidecar)
    tick_until(S, lambda: S.connected, 60, "connected to the sidecar")
    check(bpy.ops.realtalk.push_file() == {"FINISHED"}, "push_file failed")
    check(bpy.ops.realtalk.record() == {"FINISHED"}, "record start failed")
    kb = face.data.shape_keys.key_blocks
    live = []

    fps_seen = []

    unmatched_seen = set()

    def sample():
        fps_seen.append(S.client.stats.fps)
        unmatched_seen.update(S.unmatched)
        if S.shown is not None and (not live or live[-1][0] != S.shown.t):
            live.append((S.shown.t, kb["JawOpen"].value, kb["Chin_Custom"].value, kb["mouth_funnel"].value,
                         kb["eyeBlink_L"].value))
        if len(live) == 30:  # nothing selected from here on: live drive and the take still go to Face
            for ob in bpy.context.view_layer.objects:
                ob.select_set(False)

    pusher = S.pusher
    # the sidecar emits a frame once it has audio up to t + look-ahead (80 ms): the last ones stay pending
    tick_until(S, lambda: pusher.done and S.last is not None and
               S.last.t >= pusher.duration - 0.3, pusher.duration + 20, "frames for the whole file", sample)
    out["live"] = live
    ticks = sorted(TICK_MS)
    out["tick_ms"] = {"p50": ticks[len(ticks) // 2], "p99": ticks[int(len(ticks) * 0.99)], "n": len(ticks)}
    out["status_line"] = S.status_line()
    out["server"] = S.client.stats.server
    out["unmatched_live"] = sorted(unmatched_seen)
    check(out["unmatched_live"] == ["Prop"], f"mesh without keys not reported: {S.unmatched}")
    check(not bpy.context.selected_objects, "the selection was not emptied")
    out["blink_hint_no_nonverbal"] = S.blink_hint
    out["fps_median"] = sorted(fps_seen)[len(fps_seen) // 2]
    check(max(fps_seen) > 0, "no fps measured")
    rec = S.recorder
    out["rec_frames"], out["rec_t"] = len(rec.times), [rec.times[0], rec.times[-1]]
    check(bpy.ops.realtalk.record() == {"FINISHED"}, "record stop failed")
    take = face.data.shape_keys.animation_data.action
    check(take is not None and take.name.startswith("Face_Take"), "no take action")
    mod_anim = sys.modules[pkg + ".anim"]
    curves = {fc.data_path: fc for fc in mod_anim.fcurves(take, face.data.shape_keys)}
    out["take_paths"] = sorted(curves)
    jaw = curves['key_blocks["JawOpen"].value']
    co = [tuple(k.co) for k in jaw.keyframe_points]
    out["take"] = {"n_keys": len(co), "first": co[0][0], "last": co[-1][0], "values": [c[1] for c in co]}
    out["sound_error"] = S.message if "no sound strip" in S.message else ""
    se = scene.sequence_editor or scene.sequence_editor_create()
    strips = se.strips if hasattr(se, "strips") else se.sequences
    out["take_sound"] = [(s.name, s.frame_start) for s in strips]
    out["take_sound_shown"] = [s.frame_final_start for s in strips]
    check(len(strips) == 1 or "Audaspace" in out["sound_error"], "no sound strip for the take")
    out["take_result"] = list(S.result_actions)
    check(S.result_actions == [take.name], f"panel result {S.result_actions} vs {take.name}")
    out["range_after_take"] = [scene.frame_start, scene.frame_end]
    check(scene.frame_end == co[-1][0], f"frame range {out['range_after_take']} not extended to the take")
    check('key_blocks["Static_Key"].value' in curves, "Static_Key not keyed with Only moving keys off")

    # -- bake the file: a new Action, the take's Action kept --------------------------------------------
    scene.frame_set(100)
    face.select_set(True)
    st.only_moving = True
    check(bpy.ops.realtalk.bake_file() == {"FINISHED"}, "bake failed")
    st.only_moving = False
    baked = face.data.shape_keys.animation_data.action
    check(baked != take and baked.name.startswith("Face_Bake"), "bake did not make a new action")
    check(take.name in bpy.data.actions and take.use_fake_user, "the take's action was not kept")
    curves = {fc.data_path: fc for fc in mod_anim.fcurves(baked, face.data.shape_keys)}
    bco = [tuple(k.co) for k in curves['key_blocks["JawOpen"].value'].keyframe_points]
    out["bake"] = {"n_keys": len(bco), "first": bco[0][0], "last": bco[-1][0], "values": [c[1] for c in bco],
                   "custom": [tuple(k.co)[1] for k in curves['key_blocks["Chin_Custom"].value'].keyframe_points]}
    out["bake_sound"] = [(s.name, s.frame_start) for s in strips]
    out["bake_paths"] = sorted(curves)
    check('key_blocks["Static_Key"].value' not in curves and "Static_Key" in S.still_keys,
          f"Only moving keys kept a still key: {sorted(curves)}")
    check(S.result_actions == [baked.name], f"panel result {S.result_actions} vs {baked.name}")
    out["range_after_bake"] = [scene.frame_start, scene.frame_end]
    check(scene.frame_end == bco[-1][0], f"frame range {out['range_after_bake']} not extended to the bake")
    scene.frame_set(100 + len(bco) // 2)
    out["bake_eval_mid"] = kb["JawOpen"].value  # the Action drives the key when the frame changes

    # -- the sidecar restarts: the add-on notices, reconnects, frames flow again -------------------------
    stop(side)
    t_kill = time.monotonic()
    tick_until(S, lambda: S.client.stats.state == "lost", 15, "loss noticed")
    out["lost_after_s"] = time.monotonic() - t_kill
    start(args.sidecar2)
    n0 = S.client.stats.frames
    tick_until(S, lambda: S.connected and S.client.stats.frames > n0 + 10, 60, "reconnected with frames")
    out["reconnected_stream"] = S.last.stream

    # -- a take from the sidecar's own looping stream (serve --input F --loop), past the file's first pass,
    #    split into 1 s Actions; the take audio is F: its strips must line up with the take ---------------
    st.max_take_seconds = 1.0
    st.take_audio = args.wav
    wav_s = mod_anim.audio_duration(args.wav)
    tick_until(S, lambda: S.last is not None and S.last.t > wav_s + 0.3, wav_s + 30, "the file looped once")
    n_actions = len(bpy.data.actions)
    check(bpy.ops.realtalk.record() == {"FINISHED"}, "record start (file stream) failed")
    n0 = S.client.stats.frames
    tick_until(S, lambda: S.client.stats.frames > n0 + int(2.5 * 25), 30, "2.5 s of frames")
    loop_t0 = S.recorder.times[0]
    n_strips = len(strips)
    check(bpy.ops.realtalk.record() == {"FINISHED"}, "record stop (file stream) failed")
    loop_strips = list(strips)[n_strips:]
    out["loop_take"] = {"t0": loop_t0, "wav_s": wav_s, "source": S.client.sources.get("file"),
                        "strips": [(s.frame_start, s.frame_final_start, s.frame_final_end) for s in loop_strips]}
    # --nonverbal blinks at most 9 s apart (face/nonverbal.py BLINK_MAX_S): the hint must clear by then
    tick_until(S, lambda: S.blink_hint == "", 12, "a blink from the --nonverbal sidecar")
    out["blink_hint_nonverbal"] = S.blink_hint
    split = [a for a in bpy.data.actions][n_actions:]
    out["split"] = [(a.name, [tuple(k.co)[0] for k in mod_anim.fcurves(a, face.data.shape_keys)[0].keyframe_points])
                    for a in split]
    check(len(split) >= 2, f"a 2.5 s take with 1 s max should make >= 2 Actions, got {len(split)}")
    frames = [f for _, keys in out["split"] for f in keys]
    out["loop_take"]["first_key"] = frames[0]
    out["loop_take"]["last_key"] = frames[-1]
    check(frames == [frames[0] + i for i in range(len(frames))], "split takes are not contiguous")
    check(all(len(keys) <= args.fps + 1 for _, keys in out["split"]), "a split take is longer than 1 s")

    # -- a long take: 10 minutes of 52-channel frames baked in one go (bulk keyframe insertion) ---------
    st.max_take_seconds = 600.0
    rec = mod_session.Recorder("long", scene.frame_current)
    S.recorder = None
    from array import array
    names = S.client.layouts["arkit52"]
    for k in range(10 * 60 * 30):  # a synthetic timeline: this measures the bake, not a model
        rec.times.append(k / 30)
        rec.rows.append(array("f", [0.5 + 0.5 * math.sin(k / 7 + i) for i in range(len(names))]))
    rec.names = names
    S.recorder = rec
    t_bake = time.perf_counter()
    long_actions = S.record_stop(bpy.context, add_sound=False)
    out["long_take"] = {"seconds": time.perf_counter() - t_bake, "actions": len(long_actions),
                        "keys": len(mod_anim.fcurves(long_actions[0], face.data.shape_keys)[0].keyframe_points)}
    want = math.floor(rec.times[-1] * args.fps + 1e-6) + 1
    check(out["long_take"]["keys"] == want and len(long_actions) == 1, f"long take {out['long_take']}, want {want}")

    # -- a take across a sidecar restart (audio time starts again at 0): two Actions, back to back -------
    rec = mod_session.Recorder("restart", 500)
    for k in list(range(31)) + list(range(16)):
        rec.times.append(k / 30)
        rec.rows.append(array("f", [0.5] * len(names)))
    rec.names = names
    S.recorder = rec
    parts = S.record_stop(bpy.context, add_sound=False)
    spans = [[tuple(k.co)[0] for k in mod_anim.fcurves(a, face.data.shape_keys)[0].keyframe_points] for a in parts]
    out["restart_take"] = [(s[0], s[-1]) for s in spans]
    check(len(parts) == 2 and spans[0][0] == 500 and spans[1][0] == spans[0][-1] + 1,
          f"restart take not back to back: {out['restart_take']}")

    # -- a take stopped with nothing to bake it on is kept, then baked onto the selection, or discarded ------
    for ob in bpy.context.view_layer.objects:
        ob.select_set(False)
    S.live_targets = ()
    for what in ("bake", "discard"):
        rec = mod_session.Recorder("held", 700)
        for k in range(31):
            rec.times.append(k / 30)
            rec.rows.append(array("f", [k / 30] * len(names)))
        rec.names = names
        S.recorder = rec
        r = op(bpy.ops.realtalk.record)
        check(r == {"CANCELLED"} and S.held == [rec] and "kept" in S.message, f"take not kept: {r} {S.message}")
        if what == "bake":
            face.select_set(True)
            check(bpy.ops.realtalk.take_bake() == {"FINISHED"} and S.held == [], "kept take not baked")
            held_action = face.data.shape_keys.animation_data.action
            keys = mod_anim.fcurves(held_action, face.data.shape_keys)[0].keyframe_points
            out["held_take"] = [held_action.name, len(keys), tuple(keys[0].co)[0]]
            check(S.result_actions == [held_action.name], "kept take not named in the panel")
            face.select_set(False)
        else:
            check(bpy.ops.realtalk.take_discard() == {"FINISHED"} and S.held == [], "kept take not discarded")
            out["discarded"] = S.message
    face.select_set(True)

    # -- presets: save the table, clear it, load it back ------------------------------------------------
    st.preset_name = "test_rig"
    check(bpy.ops.realtalk.preset_save() == {"FINISHED"}, "preset save failed")
    st.channels.clear()
    check(bpy.ops.realtalk.preset_load() == {"FINISHED"}, "preset load failed")
    check([(r.source, r.target, round(r.gain, 3)) for r in st.channels] == [("jawOpen", "Chin_Custom", 0.5),
                                                                          ("jawOpen", "Static_Key", 0.0)],
          "preset did not round-trip")
    out["preset_dir"] = sys.modules[pkg + ".ops"].preset_dir()

    # -- a remote endpoint while online access is off is refused --------------------------------------------
    if hasattr(bpy.app, "online_access") and not bpy.app.online_access:
        prefs.stream_endpoint = "tcp://192.0.2.1:47200"
        try:
            r = bpy.ops.realtalk.connect()
        except RuntimeError as e:  # an operator reporting ERROR raises under bpy
            r = str(e)
        out["remote_refused"] = str(r)
        check(r != {"FINISHED"}, "non-loopback endpoint accepted with online access off")
        check(S.client is not None and S.client.stream_endpoint == args.stream, "refusal dropped the connection")
        prefs.stream_endpoint = args.stream

    # -- unregister cleanly -----------------------------------------------------------------------------
    if args.mode == "legacy":
        bpy.ops.preferences.addon_disable(module=pkg)
    else:
        bpy.ops.preferences.addon_disable(module=pkg)
    check(not hasattr(bpy.types.Scene, "realtalk"), "scene property left behind")
    check(not hasattr(bpy.types, "REALTALK_OT_connect"), "operator left registered")
    check(S.client is None, "client left open")
    check(not bpy.app.timers.is_registered(mod_session.timer), "timer left registered")
    out["ok"] = True
finally:
    for p in procs:
        if p.poll() is None:
            stop(p)
    with open(args.out, "w") as f:
        json.dump(out, f)
