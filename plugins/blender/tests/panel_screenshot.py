"""Screenshot of the add-on panel for the README (Blender with a UI, e.g. under Xvfb):

    xvfb-run -a -s "-screen 0 1280x800x24" blender --factory-startup --enable-event-simulate \
        --python plugins/blender/tests/panel_screenshot.py -- --zip Z --sidecar '["realtalk-bridge", "serve", "--no-mic"]' \
        --wav speech.wav --out panel.png

Installs the zip, makes a face mesh with ARKit-named keys, connects to the sidecar command it starts, runs Bake
File as the modal operator a click starts (INVOKE_DEFAULT: its timer steps only fire with an event loop, so this
is where the modal path runs), streams the speech file, records a take, starts a second one, opens the Mapping
subpanel, switches the sidebar to the RealTalk tab (simulated Ctrl+Wheel: Blender 3.x has no API for the active
tab) and saves a screenshot of the window, plus <out>.json with what the modal bake and the take made.
"""
import argparse
import json
import subprocess
import sys
import time

import bpy

ap = argparse.ArgumentParser()
ap.add_argument("--zip", required=True)
ap.add_argument("--sidecar", required=True, help="JSON list: the sidecar command to start")
ap.add_argument("--stream", default="tcp://127.0.0.1:47200")
ap.add_argument("--control", default="tcp://127.0.0.1:47201")
ap.add_argument("--wav", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--tabs", type=int, default=3, help="Ctrl+Wheel steps from the first sidebar tab")
args = ap.parse_args(sys.argv[sys.argv.index("--") + 1:])

bpy.ops.preferences.addon_install(filepath=args.zip)
bpy.ops.preferences.addon_enable(module="realtalk_blender")
S = sys.modules["realtalk_blender.session"].SESSION
ui = sys.modules["realtalk_blender.ui"]
bpy.utils.unregister_class(ui.REALTALK_PT_mapping)  # shown open in the picture
ui.REALTALK_PT_mapping.bl_options = set()
bpy.utils.register_class(ui.REALTALK_PT_mapping)
report = {}
side = subprocess.Popen(json.loads(args.sidecar))
prefs = bpy.context.preferences.addons["realtalk_blender"].preferences
prefs.stream_endpoint, prefs.control_endpoint = args.stream, args.control

for ob in list(bpy.data.objects):
    if ob.type == "MESH":
        bpy.data.objects.remove(ob)
bpy.ops.mesh.primitive_monkey_add()
face = bpy.context.active_object
face.name = "Face"
for name in ("Basis", "JawOpen", "mouth_funnel", "mouthClose", "eyeBlink_L", "EyeBlinkRight"):
    face.shape_key_add(name=name)
face.select_set(True)
jaw = face.data.shape_keys.key_blocks["JawOpen"]
for i, v in enumerate(face.data.vertices):  # a crude jaw: the lower head drops, so speech is visible
    if v.co.z < -0.1 and v.co.y < 0.2:
        jaw.data[i].co.z -= 0.35 * min(1.0, (-0.1 - v.co.z) / 0.4 + 0.3)
st = bpy.context.scene.realtalk
st.audio_file = args.wav
bpy.context.scene.frame_end = 40  # shorter than the bake: the picture shows the range extended
row = st.channels.add()
row.source, row.target, row.gain = "jawOpen", "Fcl_MTH_A", 0.8
row = st.channels.add()
row.source, row.target, row.gain = "mouthSmileLeft", "Mouth_Smile_L", 1.0

win = bpy.context.window_manager.windows[0]
area = next(a for a in win.screen.areas if a.type == "VIEW_3D")
area.spaces[0].show_region_ui = True
state = {"t0": time.monotonic(), "step": 0}


def with_ctx(op, *a, **kw):
    region = next(r for r in area.regions if r.type == "WINDOW")
    with bpy.context.temp_override(window=win, area=area, region=region):
        return op(*a, **kw)


def step():
    t = time.monotonic() - state["t0"]
    s = state["step"]
    if s == 0:
        # the first-run splash swallows events: a click outside it closes it
        win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=60, y=300)
        win.event_simulate(type="LEFTMOUSE", value="PRESS", x=60, y=300)
        win.event_simulate(type="LEFTMOUSE", value="RELEASE", x=60, y=300)
        with_ctx(bpy.ops.view3d.view_selected)
        with_ctx(bpy.ops.realtalk.connect)
        state["step"] = 1
    elif s == 1 and S.connected:
        ui_region = next(r for r in area.regions if r.type == "UI")
        x, y = ui_region.x + ui_region.width // 2, ui_region.y + ui_region.height // 2
        report["sidebar_width_px"] = ui_region.width
        win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
        for _ in range(args.tabs):
            win.event_simulate(type="WHEELDOWNMOUSE", value="PRESS", x=x, y=y, ctrl=True)
        state["step"], state["t1"] = 10, time.monotonic()
    elif s == 10 and time.monotonic() - state["t1"] > 1.0:
        report["modal_bake_started"] = str(with_ctx(bpy.ops.realtalk.bake_file, "INVOKE_DEFAULT"))
        state["t_bake"] = time.monotonic()
        state["step"] = 11
    elif s == 11 and S.bake_job is None:  # the modal operator finished on its own timer events
        report["modal_bake_s"] = time.monotonic() - state["t_bake"]
        report["modal_bake_actions"] = list(S.result_actions)
        report["modal_bake_message"] = S.message
        with_ctx(bpy.ops.realtalk.push_file)
        with_ctx(bpy.ops.realtalk.record)
        state["step"], state["n0"] = 2, S.client.stats.frames
    elif s == 2 and S.client.stats.frames > state["n0"] + 30:  # software GL redraws slowly: count frames
        with_ctx(bpy.ops.realtalk.record)  # Stop + Bake: the panel names the take's Action
        report["take_actions"] = list(S.result_actions)
        with_ctx(bpy.ops.realtalk.record)  # and a second take is recording in the picture
        state["step"], state["n0"] = 21, S.client.stats.frames
    elif s == 21 and (S.client.stats.frames > state["n0"] + 15 or S.pusher is None):
        win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=10, y=10)
        S.tick()
        for a in win.screen.areas:
            a.tag_redraw()
        state["step"] = 25
    elif s == 25:  # one more redraw so the panel shows the newest status
        bpy.ops.screen.screenshot(filepath=args.out)
        report["status"] = S.status_lines()
        state["step"] = 3
    elif s == 3 or t > 150:
        report["finished_step"] = s
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        side.terminate()
        bpy.ops.wm.quit_blender()
        return None
    return 0.05


bpy.app.timers.register(step, first_interval=0.5)
