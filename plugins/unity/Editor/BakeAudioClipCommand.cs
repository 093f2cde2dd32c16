using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using RealtalkBridge.Unity;
using UnityEditor;
using UnityEngine;

namespace RealtalkBridge.Editor
{
    /// <summary>Assets > Realtalk > Bake Lip-Sync Animation Clips: sends every selected AudioClip (or every clip in the
    /// selected folders) to a running sidecar's `bake` op, one after another on a worker thread with a cancelable
    /// progress bar, and writes `<clip>_lipsync.anim` and `<clip>_track.asset` next to each clip.
    /// The clips bind the bake avatar's real SkinnedMeshRenderer paths and blendshape names (a face on a child mesh
    /// with `blendShape1.jawOpen` names gets `Head/Face : blendShape.blendShape1.jawOpen`): pick the avatar with
    /// Assets > Realtalk > Use Selected Model As Bake Avatar. Without one the curves bind the layout's names on the root.</summary>
    public static class BakeAudioClipCommand
    {
        const string EndpointPref = "Realtalk.ControlEndpoint";
        const string AvatarPref = "Realtalk.BakeAvatar";
        const string MenuPath = "Assets/Realtalk/Bake Lip-Sync Animation Clips";
        const string AvatarMenuPath = "Assets/Realtalk/Use Selected Model As Bake Avatar";

        static BakeBatch _running;

        [MenuItem(MenuPath, true)]
        static bool Validate() { return _running == null && SelectedClips().Length > 0; }

        [MenuItem(MenuPath, false, 2000)]
        static void BakeSelected()
        {
            var clips = SelectedClips();
            if (clips.Length == 0) return;
            string endpoint = EditorPrefs.GetString(EndpointPref, Protocol.DefaultControlEndpoint);
            GameObject avatar = null;
            string avatarPath = EditorPrefs.GetString(AvatarPref, "");
            if (!string.IsNullOrEmpty(avatarPath)) avatar = AssetDatabase.LoadAssetAtPath(avatarPath, typeof(GameObject)) as GameObject;
            if (avatar == null)
                Debug.LogWarning("[Realtalk] no bake avatar set (Assets > Realtalk > Use Selected Model As Bake Avatar): "
                                 + "the clips bind the layout's names on the Animator root");
            // the avatar's own BlendshapeDriver mapping, so baked clips match what live play does on it
            BlendshapeMapping mapping = null;
            if (avatar != null)
                foreach (var d in avatar.GetComponentsInChildren<BlendshapeDriver>(true))
                    if (d.mapping != null) { mapping = d.mapping; break; }
            _running = new BakeBatch(clips, endpoint, 30, avatar, mapping, 0.25f);
            _running.Start();
        }

        [MenuItem(AvatarMenuPath, true)]
        static bool ValidateAvatar()
        {
            var go = Selection.activeObject as GameObject;
            return go != null && go.GetComponentsInChildren<SkinnedMeshRenderer>(true).Length > 0
                   && !string.IsNullOrEmpty(AssetDatabase.GetAssetPath(go));
        }

        [MenuItem(AvatarMenuPath, false, 2001)]
        static void UseSelectedAvatar()
        {
            var go = Selection.activeObject as GameObject;
            if (go == null) return;
            EditorPrefs.SetString(AvatarPref, AssetDatabase.GetAssetPath(go));
            Debug.Log("[Realtalk] bake avatar: " + AssetDatabase.GetAssetPath(go));
        }

        static AudioClip[] SelectedClips()
        {
            var picked = Selection.GetFiltered(typeof(AudioClip), SelectionMode.DeepAssets);
            var clips = new List<AudioClip>();
            foreach (var o in picked) { var c = o as AudioClip; if (c != null) clips.Add(c); }
            return clips.ToArray();
        }

        /// <summary>Blocking bake of one clip (samples read here, on the main thread).</summary>
        public static CoefficientTrack Bake(AudioClip clip, string controlEndpoint, double fps)
        {
            float[] mono = AudioClipSamples.Mono(clip);
            using (var ctl = new ControlClient(controlEndpoint) { ClientName = "realtalk-unity-editor" })
                return ctl.Bake(mono, clip.frequency, fps);
        }

        /// <summary>An AnimationClip of the track for `avatar`: one float curve per driven blendshape of every
        /// SkinnedMeshRenderer under it, on that renderer's path with the mesh's own blendshape names, mapped exactly
        /// as the BlendshapeDriver maps live frames (spellings, VRM/VRoid presets, `mapping`). With no avatar the
        /// layout's names are bound on the root. `tolerance` is in blendshape units (0..100).</summary>
        public static AnimationClip BuildAnimationClip(CoefficientTrack track, GameObject avatar, BlendshapeMapping mapping, float tolerance)
        {
            var anim = new AnimationClip();
            anim.frameRate = (float)track.Fps;
            if (avatar == null)
            {
                AddCurves(anim, track, "", track.Names, mapping, tolerance);
                return anim;
            }
            int bound = 0;
            foreach (var r in avatar.GetComponentsInChildren<SkinnedMeshRenderer>(true))
            {
                var mesh = r.sharedMesh;
                if (mesh == null || mesh.blendShapeCount == 0) continue;
                var names = new string[mesh.blendShapeCount];
                for (int i = 0; i < names.Length; i++) names[i] = mesh.GetBlendShapeName(i);
                string path = AnimationUtility.CalculateTransformPath(r.transform, avatar.transform);
                bound += AddCurves(anim, track, path, names, mapping, tolerance);
            }
            if (bound == 0)
                Debug.LogWarning("[Realtalk] no blendshape of " + avatar.name + " matches the " + track.Layout
                                 + " layout: the clip animates nothing (add a BlendshapeMapping or rename the shapes)");
            return anim;
        }

        /// <summary>Compatibility form: one renderer at `rendererPath` (relative to the Animator).</summary>
        public static AnimationClip BuildAnimationClip(CoefficientTrack track, string rendererPath, SkinnedMeshRenderer target,
                                                       float tolerance, BlendshapeMapping mapping = null)
        {
            var anim = new AnimationClip();
            anim.frameRate = (float)track.Fps;
            string[] names = track.Names;
            if (target != null && target.sharedMesh != null)
            {
                var mesh = target.sharedMesh;
                names = new string[mesh.blendShapeCount];
                for (int i = 0; i < names.Length; i++) names[i] = mesh.GetBlendShapeName(i);
            }
            AddCurves(anim, track, rendererPath, names, mapping, tolerance);
            return anim;
        }

        static int AddCurves(AnimationClip anim, CoefficientTrack track, string path, string[] meshNames, BlendshapeMapping mapping, float tolerance)
        {
            var map = new BlendshapeMap();
            if (mapping != null) mapping.Configure(map);
            var curves = TrackCurves.ForMesh(track, map, meshNames, tolerance);
            foreach (var c in curves)
            {
                var keys = new Keyframe[c.Times.Count];
                for (int k = 0; k < keys.Length; k++) keys[k] = new Keyframe(c.Times[k], c.Values[k]);
                var binding = EditorCurveBinding.FloatCurve(path, typeof(SkinnedMeshRenderer), c.Property);
                AnimationUtility.SetEditorCurve(anim, binding, new AnimationCurve(keys));
            }
            return curves.Count;
        }

        /// <summary>Bakes clips one after another: the network on a worker thread, Unity's APIs (samples, assets, the
        /// progress bar) only in EditorApplication.update on the main thread. Cancel stops after closing the current
        /// request's connection.</summary>
        sealed class BakeBatch
        {
            readonly AudioClip[] _clips;
            readonly string _endpoint;
            readonly double _fps;
            readonly GameObject _avatar;
            readonly BlendshapeMapping _mapping;
            readonly float _tolerance;
            ControlClient _ctl;
            int _next;
            Thread _worker;
            CoefficientTrack _result;
            string _error;
            volatile bool _done;
            int _ok, _failed;
            readonly List<string> _errors = new List<string>();

            public BakeBatch(AudioClip[] clips, string endpoint, double fps, GameObject avatar, BlendshapeMapping mapping, float tolerance)
            {
                _clips = clips; _endpoint = endpoint; _fps = fps; _avatar = avatar; _mapping = mapping; _tolerance = tolerance;
            }

            public void Start()
            {
                _ctl = new ControlClient(_endpoint) { ClientName = "realtalk-unity-editor" };
                EditorApplication.update += Tick;
            }

            void Finish(bool cancelled)
            {
                EditorApplication.update -= Tick;
                EditorUtility.ClearProgressBar();
                _ctl.Dispose();
                AssetDatabase.SaveAssets();
                _running = null;
                string summary = "[Realtalk] baked " + _ok + " of " + _clips.Length + " clips" + (cancelled ? " (cancelled)" : "")
                                 + (_failed > 0 ? "; failed: " + string.Join("; ", _errors.ToArray()) : "");
                if (_failed > 0) Debug.LogWarning(summary); else Debug.Log(summary);
                if (_failed > 0 && _ok == 0)
                    EditorUtility.DisplayDialog("Realtalk bake failed", _errors[0] + "\n\nIs the sidecar running? (realtalk-bridge serve --no-mic)", "OK");
            }

            void Tick()
            {
                if (_worker != null)
                {
                    if (!_done)
                    {
                        string name = _clips[_next - 1].name;
                        if (EditorUtility.DisplayCancelableProgressBar("Realtalk bake", "Baking " + name + " (" + _next + " of " + _clips.Length + ") on " + _endpoint,
                                                                       (_next - 1f) / _clips.Length))
                        {
                            _ctl.Dispose();      // aborts the request in flight
                            _worker.Join(2000);
                            Finish(true);
                        }
                        return;
                    }
                    _worker = null;
                    var clip = _clips[_next - 1];
                    if (_error != null) { _failed++; _errors.Add(clip.name + ": " + _error); }
                    else
                    {
                        try { Save(clip, _result); _ok++; }
                        catch (Exception e) { _failed++; _errors.Add(clip.name + ": " + e.Message); }
                    }
                }
                if (_next >= _clips.Length) { Finish(false); return; }
                var nextClip = _clips[_next++];
                float[] mono;
                try { mono = AudioClipSamples.Mono(nextClip); }      // main thread only
                catch (Exception e) { _failed++; _errors.Add(nextClip.name + ": " + e.Message); return; }
                int rate = nextClip.frequency;
                var ctl = _ctl;
                double fps = _fps;
                _done = false; _error = null; _result = null;
                _worker = new Thread(delegate ()
                {
                    try { _result = ctl.Bake(mono, rate, fps); }
                    catch (Exception e) { _error = e.Message; }
                    finally { _done = true; }
                }) { IsBackground = true, Name = "realtalk-editor-bake" };
                _worker.Start();
            }

            void Save(AudioClip clip, CoefficientTrack track)
            {
                string clipPath = AssetDatabase.GetAssetPath(clip);
                string dir = Path.GetDirectoryName(clipPath);
                string stem = Path.GetFileNameWithoutExtension(clipPath);
                var anim = BuildAnimationClip(track, _avatar, _mapping, _tolerance);
                AssetDatabase.CreateAsset(anim, AssetDatabase.GenerateUniqueAssetPath(dir + "/" + stem + "_lipsync.anim"));
                var asset = ScriptableObject.CreateInstance<CoefficientTrackAsset>();
                asset.SetFrom(track, clip);
                AssetDatabase.CreateAsset(asset, AssetDatabase.GenerateUniqueAssetPath(dir + "/" + stem + "_track.asset"));
            }
        }
    }
}
