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
            Reduce(t, v, n, tolerance, times, values);
        }

        /// <summary>Greedy key reduction: extends a segment from the last kept key while every skipped key stays within
        /// `tolerance` of the straight line.</summary>
        public static void Reduce(float[] t, float[] v, int n, float tolerance, List<float> times, List<float> values)
        {
            times.Clear(); values.Clear();
            if (n == 0) return;
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
    
        /// <summary>The curve of one blendshape on one mesh: the exact mesh name (Unity's property is
        /// "blendShape." + that name) and its reduced keys.</summary>
        public sealed class MeshCurve
        {
            public int Target;
            public string BlendshapeName;
            public string Property { get { return "blendShape." + BlendshapeName; } }
            public readonly List<float> Times = new List<float>();
            public readonly List<float> Values = new List<float>();
        }

        /// <summary>Curves for every blendshape of a mesh that the track drives, through the same mapping as live play
        /// (name matching, preset mixes, gains, clamps; smoothing if the map has it), so a baked clip animates what the
        /// driver would: `meshNames` are the mesh's own names ("blendShape1.jawOpen" stays that).</summary>
        public static List<MeshCurve> ForMesh(CoefficientTrack track, BlendshapeMap map, string[] meshNames, float tolerance)
        {
            int e = track.Names.Length, n = track.FrameCount, m = meshNames.Length;
            map.Bind(track.Names, meshNames);
            map.Reset();
            var series = new float[m][];
            var used = new bool[m];
            var outw = new float[m];
            var touched = new bool[m];
            var row = new float[e];
            float dt = (float)(1.0 / track.Fps);
            for (int i = 0; i < n; i++)
            {
                Array.Copy(track.Weights, i * e, row, 0, e);
                map.Apply(row, e, dt, outw, touched);
                for (int k = 0; k < m; k++)
                {
                    if (!touched[k]) continue;
                    if (series[k] == null) series[k] = new float[n];
                    series[k][i] = outw[k];
                    used[k] = true;
                }
            }
            var t = new float[n];
            for (int i = 0; i < n; i++) t[i] = (float)(track.T0 + i / track.Fps);
            var curves = new List<MeshCurve>();
            for (int k = 0; k < m; k++)
            {
                if (!used[k]) continue;
                var c = new MeshCurve { Target = k, BlendshapeName = meshNames[k] };
                Reduce(t, series[k], n, tolerance, c.Times, c.Values);
                curves.Add(c);
            }
            return curves;
        }
    }
}
