using System.Collections.Generic;
using UnityEngine;

namespace RealtalkBridge.Unity
{
    /// <summary>Drives SkinnedMeshRenderer blendshapes from a coefficient source. Runs in LateUpdate, after the
    /// Animator, so it composes with body/face animation: the channels it maps override, all others stay animated.</summary>
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

        sealed class Target
        {
            public SkinnedMeshRenderer renderer;
            public Mesh mesh;
            public string[] names;
            public readonly BlendshapeMap map = new BlendshapeMap();
            public float[] weights;
            public bool[] touched;
        }

        readonly List<Target> _targets = new List<Target>();
        readonly CoeffFrame _frame = new CoeffFrame();
        float[] _zeros = new float[0];
        long _version;
        float _lastFrameTime = -1f;
        bool _haveFrame;

        public int MappedChannels { get { return _targets.Count == 0 ? 0 : _targets[0].map.MappedCount; } }

        void OnValidate() { _targets.Clear(); }

        /// <summary>Call after changing `mapping` or its entries from a script.</summary>
        public void Refresh() { _targets.Clear(); }

        Target TargetFor(SkinnedMeshRenderer r)
        {
            foreach (var t in _targets) if (t.renderer == r && t.mesh == r.sharedMesh) return t;
            var mesh = r.sharedMesh;
            if (mesh == null) return null;
            var nt = new Target { renderer = r, mesh = mesh, names = new string[mesh.blendShapeCount] };
            for (int i = 0; i < nt.names.Length; i++) nt.names[i] = mesh.GetBlendShapeName(i);
            nt.weights = new float[nt.names.Length];
            nt.touched = new bool[nt.names.Length];
            // configured once per target; OnValidate drops targets so inspector edits apply
            if (mapping != null) mapping.Configure(nt.map);
            _targets.RemoveAll(delegate (Target t) { return t.renderer == r; });
            _targets.Add(nt);
            return nt;
        }

        void LateUpdate()
        {
            var src = source as ICoefficientSource;
            if (src == null) return;
            if (src.TryGetFrame(_frame, ref _version))
            {
                _haveFrame = _frame.Names != null;
                _lastFrameTime = Time.time;
            }
            if (!_haveFrame) return;
            float[] input = _frame.Weights;
            if (Time.time - _lastFrameTime > holdSeconds)
            {
                // the stream went quiet: feed zeros through the smoother instead of freezing mid-word
                if (_zeros.Length < _frame.Count) _zeros = new float[_frame.Count];
                input = _zeros;
            }
            float dt = Time.deltaTime;
            foreach (var r in renderers)
            {
                if (r == null) continue;
                var t = TargetFor(r);
                if (t == null) continue;
                t.map.Bind(_frame.Names, t.names);
                t.map.Apply(input, _frame.Count, dt, t.weights, t.touched);
                for (int i = 0; i < t.weights.Length; i++)
                    if (t.touched[i]) r.SetBlendShapeWeight(i, t.weights[i]);
            }
        }
    }
}
