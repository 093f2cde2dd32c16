using System.Collections.Generic;
using System.IO;
using RealtalkBridge.Unity;
using UnityEditor;
using UnityEngine;

namespace RealtalkBridge.Editor
{
    /// <summary>Assets > Realtalk > Bake Lip-Sync Animation Clip: sends the selected AudioClip to a running sidecar's
    /// `bake` op and writes an AnimationClip of `blendShape.<name>` curves next to it (and a CoefficientTrackAsset).</summary>
    public static class BakeAudioClipCommand
    {
        const string EndpointPref = "Realtalk.ControlEndpoint";
        const string MenuPath = "Assets/Realtalk/Bake Lip-Sync Animation Clip";

        [MenuItem(MenuPath, true)]
        static bool Validate() { return Selection.activeObject is AudioClip; }

        [MenuItem(MenuPath, false, 2000)]
        static void BakeSelected()
        {
            var clip = Selection.activeObject as AudioClip;
            if (clip == null) return;
            string endpoint = EditorPrefs.GetString(EndpointPref, Protocol.DefaultControlEndpoint);
            CoefficientTrack track;
            try
            {
                EditorUtility.DisplayProgressBar("Realtalk", "Baking " + clip.name + " on " + endpoint, 0.3f);
                track = Bake(clip, endpoint, 30);
            }
            catch (System.Exception e)
            {
                EditorUtility.DisplayDialog("Realtalk bake failed",
                    e.Message + "\n\nIs the sidecar running? (realtalk-bridge serve --no-mic)", "OK");
                return;
            }
            finally { EditorUtility.ClearProgressBar(); }

            string clipPath = AssetDatabase.GetAssetPath(clip);
            string dir = Path.GetDirectoryName(clipPath);
            string stem = Path.GetFileNameWithoutExtension(clipPath);
            var anim = BuildAnimationClip(track, "", null, 0.25f);
            AssetDatabase.CreateAsset(anim, AssetDatabase.GenerateUniqueAssetPath(dir + "/" + stem + "_lipsync.anim"));
            var asset = ScriptableObject.CreateInstance<CoefficientTrackAsset>();
            asset.SetFrom(track, clip);
            AssetDatabase.CreateAsset(asset, AssetDatabase.GenerateUniqueAssetPath(dir + "/" + stem + "_track.asset"));
            AssetDatabase.SaveAssets();
            Debug.Log("[Realtalk] baked " + clip.name + ": " + track.FrameCount + " frames at " + track.Fps + " fps");
        }

        public static CoefficientTrack Bake(AudioClip clip, string controlEndpoint, double fps)
        {
            float[] mono = AudioClipSamples.Mono(clip);
            using (var ctl = new ControlClient(controlEndpoint) { ClientName = "realtalk-unity-editor" })
                return ctl.Bake(mono, clip.frequency, fps);
        }

        /// <summary>One float curve per mapped channel on `rendererPath` (relative to the Animator). With a target
        /// renderer, channel names are matched to its blendshapes (spellings, mapping asset); otherwise the layout's
        /// names are used as blendshape names. `tolerance` is in blendshape units (0..100).</summary>
        public static AnimationClip BuildAnimationClip(CoefficientTrack track, string rendererPath, SkinnedMeshRenderer target,
                                                       float tolerance, BlendshapeMapping mapping = null)
        {
            var anim = new AnimationClip();
            anim.frameRate = (float)track.Fps;
            string[] targetNames = track.Names;
            var map = new BlendshapeMap();
            if (mapping != null) mapping.Configure(map);
            if (target != null && target.sharedMesh != null)
            {
                var mesh = target.sharedMesh;
                targetNames = new string[mesh.blendShapeCount];
                for (int i = 0; i < targetNames.Length; i++) targetNames[i] = mesh.GetBlendShapeName(i);
            }
            map.Bind(track.Names, targetNames);
            var times = new List<float>();
            var values = new List<float>();
            for (int c = 0; c < track.Names.Length; c++)
            {
                int ti = map.TargetOf(c);
                if (ti < 0) continue;
                TrackCurves.Channel(track, c, map.OutputScale, tolerance, times, values);
                var keys = new Keyframe[times.Count];
                for (int k = 0; k < keys.Length; k++) keys[k] = new Keyframe(times[k], values[k]);
                var curve = new AnimationCurve(keys);
                var binding = EditorCurveBinding.FloatCurve(rendererPath, typeof(SkinnedMeshRenderer), "blendShape." + targetNames[ti]);
                AnimationUtility.SetEditorCurve(anim, binding, curve);
            }
            return anim;
        }
    }
}
