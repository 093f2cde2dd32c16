using UnityEngine;

namespace RealtalkBridge.Unity
{
    /// <summary>A baked coefficient track saved as an asset, so a TalkingNpc can play without a sidecar at run time.</summary>
    [CreateAssetMenu(menuName = "Realtalk/Coefficient Track", fileName = "CoefficientTrack")]
    public sealed class CoefficientTrackAsset : ScriptableObject
    {
        [Tooltip("The clip this track was baked from")] public AudioClip clip;
        public float fps = 30f;
        public float t0;
        public string layout = "arkit52";
        public string[] names = new string[0];
        public int frameCount;
        [HideInInspector] public float[] weights = new float[0];

        public CoefficientTrack ToTrack()
        {
            return new CoefficientTrack { Fps = fps, T0 = t0, Layout = layout, Names = names, FrameCount = frameCount, Weights = weights };
        }

        public void SetFrom(CoefficientTrack track, AudioClip source)
        {
            clip = source;
            fps = (float)track.Fps; t0 = (float)track.T0; layout = track.Layout;
            names = track.Names; frameCount = track.FrameCount; weights = track.Weights;
        }

        public bool IsValid
        {
            get { return fps > 0 && names != null && weights != null && weights.Length == frameCount * names.Length; }
        }
    }
}
