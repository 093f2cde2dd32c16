// The engine-free half of BlendshapeDriver: what happens every rendered frame between "a frame may have arrived"
// and "these blendshape weights go on this mesh". Kept here so the per-frame path is tested under mono, including
// that it allocates nothing in steady state.
using System;

namespace RealtalkBridge
{
    /// <summary>Holds the current frame and relaxes to neutral when frames stop.</summary>
    public sealed class FaceFeed
    {
        /// <summary>The frame sources copy into (TryGetFrame / TryGetNext(Frame, ref Version)).</summary>
        public readonly CoeffFrame Frame = new CoeffFrame();
        public long Version;
        /// <summary>After frames stop for this long, feed zeros (the smoother relaxes the face instead of freezing it).</summary>
        public float HoldSeconds = 0.5f;

        float[] _zeros = new float[0];
        double _lastFrameTime = double.NegativeInfinity;
        bool _have;

        /// <summary>Call once per rendered frame after asking the source: `gotFrame` whether a new frame came, `now` the
        /// frame time in seconds. Returns the weights to apply (the frame's, or zeros when quiet), or null before the
        /// first frame with names.</summary>
        public float[] Input(bool gotFrame, double now)
        {
            if (gotFrame)
            {
                _have = Frame.Names != null;
                _lastFrameTime = now;
            }
            if (!_have) return null;
            if (now - _lastFrameTime <= HoldSeconds) return Frame.Weights;
            if (_zeros.Length < Frame.Count) _zeros = new float[Frame.Count];
            return _zeros;
        }
    }

    /// <summary>One mesh's blendshapes: names, the mapping and the output buffers. Rebuild only when the mesh changes.</summary>
    public sealed class BlendshapeTarget
    {
        public readonly string[] TargetNames;
        public readonly BlendshapeMap Map = new BlendshapeMap();
        /// <summary>Weights to set (OutputScale units) where Touched is true.</summary>
        public readonly float[] Weights;
        public readonly bool[] Touched;
        bool _warned;

        public BlendshapeTarget(string[] targetNames)
        {
            TargetNames = targetNames ?? new string[0];
            Weights = new float[TargetNames.Length];
            Touched = new bool[TargetNames.Length];
        }

        /// <summary>Maps one frame's weights onto this mesh. Returns the number of blendshapes written.</summary>
        public int Apply(CoeffFrame frame, float[] input, float dt)
        {
            if (frame.Names == null || input == null) return 0;
            Map.Bind(frame.Names, TargetNames);
            return Map.Apply(input, frame.Count, dt, Weights, Touched);
        }

        /// <summary>True once, the first time this mesh matched nothing (the caller logs MatchReport).</summary>
        public bool TakeNothingMatchedWarning()
        {
            if (_warned || !Map.NothingMatched) return false;
            _warned = true;
            return true;
        }
    }
}
