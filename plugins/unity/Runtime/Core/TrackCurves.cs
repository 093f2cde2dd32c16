// Coefficient track -> animation keys, with key reduction so baked clips stay small. Engine-free so it is tested here;
// the Editor command turns the keys into AnimationCurves.
using System;
using System.Collections.Generic;

namespace RealtalkBridge
{
    public static class TrackCurves
    {
        /// <summary>Keys (time in seconds from the clip start, value * scale) for one channel of a track. Keys that
        /// linear interpolation between the kept neighbours reproduces within `tolerance` (in scaled units) are dropped.</summary>
        public static void Channel(CoefficientTrack track, int channel, float scale, float tolerance,
                                   List<float> times, List<float> values)
        {
            times.Clear(); values.Clear();
            int e = track.Names.Length, n = track.FrameCount;
            if (channel < 0 || channel >= e) throw new ArgumentOutOfRangeException("channel");
            if (n == 0) return;
            var t = new float[n];
            var v = new float[n];
            for (int i = 0; i < n; i++)
            {
                t[i] = (float)(track.T0 + i / track.Fps);
                float x = track.Weights[i * e + channel];
                v[i] = (float.IsNaN(x) || float.IsInfinity(x) ? 0f : x) * scale;
            }
            // greedy: extend a segment from the last kept key while every skipped key stays within tolerance
            int anchor = 0;
            times.Add(t[0]); values.Add(v[0]);
            for (int i = 2; i < n; i++)
            {
                bool ok = true;
                for (int j = anchor + 1; j < i && ok; j++)
                {
                    float a = (t[j] - t[anchor]) / (t[i] - t[anchor]);
                    float lin = v[anchor] + a * (v[i] - v[anchor]);
                    ok = Math.Abs(lin - v[j]) <= tolerance;
                }
                if (!ok)
                {
                    anchor = i - 1;
                    times.Add(t[anchor]); values.Add(v[anchor]);
                }
            }
            if (n > 1) { times.Add(t[n - 1]); values.Add(v[n - 1]); }
        }
    }
}
