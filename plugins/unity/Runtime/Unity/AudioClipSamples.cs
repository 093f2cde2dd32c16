using UnityEngine;

namespace RealtalkBridge.Unity
{
    public static class AudioClipSamples
    {
        /// <summary>The clip's samples downmixed to mono. Main thread only (AudioClip.GetData); the clip must be
        /// readable: Load Type "Decompress On Load", or "Preload Audio Data" for compressed-in-memory clips.</summary>
        public static float[] Mono(AudioClip clip)
        {
            int ch = Mathf.Max(1, clip.channels);
            var inter = new float[clip.samples * ch];
            if (!clip.GetData(inter, 0))
                throw new System.InvalidOperationException("cannot read samples of " + clip.name + ": set its Load Type to Decompress On Load");
            if (ch == 1) return inter;
            var mono = new float[clip.samples];
            for (int i = 0; i < mono.Length; i++)
            {
                float s = 0f;
                for (int c = 0; c < ch; c++) s += inter[i * ch + c];
                mono[i] = s / ch;
            }
            return mono;
        }
    }
}
