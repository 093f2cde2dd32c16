using System.Collections.Generic;
using UnityEngine;

namespace RealtalkBridge.Unity
{
    /// <summary>Drives SkinnedMeshRenderer blendshapes from a coefficient source. Runs in LateUpdate, after the
    /// Animator, so it composes with body/face animation: the channels it maps override, all others stay animated.
    /// The per-frame work (hold/relax, mapping, smoothing) is RealtalkBridge.FaceFeed / BlendshapeTarget in the core,
    /// tested under mono to allocate nothing in steady state.</summary>
    [AddComponentMenu("Realtalk/Blendshape Driver")]
    public sealed class BlendshapeDriver : MonoBehaviour
    {
        [Tooltip("A RealtalkClient, a TalkingNpc, or any component implementing ICoefficientSource")]
        public MonoBehaviour source;
        public SkinnedMeshRenderer[] renderers = new SkinnedMeshRenderer[0];
        [Tooltip("Optional: gains, clamps, renames and smoothing")]
        public BlendshapeMapping mapping;
        [Tooltip("After frames stop arriving for this long, relax the face to neutral")]
        public float holdSeconds = 0.5f;
        [Tooltip("Log what matched and what did not when a mesh is first bound")]
        public bool logMatchReport = false;

        sealed class Target
        {
            public SkinnedMeshRenderer renderer;
            public Mesh mesh;
            public BlendshapeTarget core;
            public long reportedRebuild;   // the mapping rebuild last logged (logMatchReport)
        }

        readonly List<Target> _targets = new List<Target>();
        readonly FaceFeed _feed = new FaceFeed();

        public int MappedChannels { get { return _targets.Count == 0 ? 0 : _targets[0].core.Map.MappedCount + _targets[0].core.Map.DerivedCount; } }

        /// <summary>What matched on the first renderer (empty before the first frame).</summary>
        public string MatchReport { get { return _targets.Count == 0 ? "" : _targets[0].core.Map.MatchReport; } }

        void OnValidate() { _targets.Clear(); }

        /// <summary>Call after changing `mapping` or its entries from a script.</summary>
        public void Refresh() { _targets.Clear(); }

        Target TargetFor(SkinnedMeshRenderer r)
        {
            for (int i = 0; i < _targets.Count; i++)
            {
                var t = _targets[i];
                if (t.renderer == r && t.mesh == r.sharedMesh) return t;
            }
            var mesh = r.sharedMesh;
            if (mesh == null) return null;
            var names = new string[mesh.blendShapeCount];
            for (int i = 0; i < names.Length; i++) names[i] = mesh.GetBlendShapeName(i);
            var nt = new Target { renderer = r, mesh = mesh, core = new BlendshapeTarget(names) };
            // configured once per target; OnValidate drops targets so inspector edits apply
            if (mapping != null) mapping.Configure(nt.core.Map);
            for (int i = _targets.Count - 1; i >= 0; i--) if (_targets[i].renderer == r) _targets.RemoveAt(i);
            _targets.Add(nt);
            return nt;
        }

        void LateUpdate()
        {
            var src = source as ICoefficientSource;
            if (src == null) return;
            _feed.HoldSeconds = holdSeconds;
            bool got = src.TryGetFrame(_feed.Frame, ref _feed.Version);
            float[] input = _feed.Input(got, Time.time);
            if (input == null) return;
            float dt = Time.deltaTime;
            for (int k = 0; k < renderers.Length; k++)
            {
                var r = renderers[k];
                if (r == null) continue;
                var t = TargetFor(r);
                if (t == null) continue;
                t.core.Apply(_feed.Frame, input, dt);
                if (t.core.TakeNothingMatchedWarning())
                    Debug.LogWarning("[Realtalk] no blendshape of " + r.name + " matches the " + _feed.Frame.Layout
                                     + " layout: add a BlendshapeMapping or rename the shapes.\n" + t.core.Map.MatchReport);
                else if (logMatchReport && t.reportedRebuild != t.core.Map.Rebuilds)
                {
                    // once per (re)built mapping, not per frame
                    t.reportedRebuild = t.core.Map.Rebuilds;
                    Debug.Log("[Realtalk] " + r.name + ": " + t.core.Map.MatchReport);
                }
                var w = t.core.Weights;
                var touched = t.core.Touched;
                for (int i = 0; i < w.Length; i++)
                    if (touched[i]) r.SetBlendShapeWeight(i, w[i]);
            }
        }
    }
}
