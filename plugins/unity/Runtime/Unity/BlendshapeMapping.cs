using System;
using System.Collections.Generic;
using UnityEngine;

namespace RealtalkBridge.Unity
{
    /// <summary>How layout channels (ARKit names) reach a rig's blendshapes. Channels without an entry are matched by
    /// name, tolerating common spellings (JawOpen, jaw_open, mouthSmile_L, blendShape1.jawOpen).</summary>
    [CreateAssetMenu(menuName = "Realtalk/Blendshape Mapping", fileName = "BlendshapeMapping")]
    public sealed class BlendshapeMapping : ScriptableObject
    {
        [Serializable]
        public sealed class Entry
        {
            [Tooltip("Layout name, e.g. jawOpen")] public string source = "jawOpen";
            [Tooltip("Blendshape on the mesh; empty = match by name")] public string target = "";
            public float gain = 1f;
            public float offset = 0f;
            public float min = 0f;
            public float max = 1f;
        }

        public List<Entry> entries = new List<Entry>();
        [Tooltip("Smoothing time constant in seconds (0 = none)")]
        [Range(0f, 0.5f)] public float smoothingSeconds = 0.03f;
        public float globalGain = 1f;
        [Tooltip("Unity blendshape weights run 0..100")]
        public float outputScale = 100f;

        public void Configure(BlendshapeMap map)
        {
            map.ClearOverrides();
            foreach (var e in entries)
            {
                if (e == null || string.IsNullOrEmpty(e.source)) continue;
                map.SetOverride(new ChannelSettings
                {
                    Source = e.source, Target = e.target, Gain = e.gain, Offset = e.offset, Min = e.min, Max = e.max,
                });
            }
            map.SmoothingSeconds = smoothingSeconds;
            map.GlobalGain = globalGain;
            map.OutputScale = outputScale;
        }
    }
}
