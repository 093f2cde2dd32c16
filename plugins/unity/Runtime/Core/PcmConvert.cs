// Audio conversions for uploads: float -> 16-bit PCM, and a windowed-sinc resampler. Pure functions, engine-free.
using System;

namespace RealtalkBridge
{
    public static class PcmConvert
    {
        /// <summary>Floats in [-1, 1] (clamped) -> little-endian signed 16-bit PCM bytes.</summary>
        public static byte[] ToS16LE(float[] samples, int offset, int count)
        {
            var bytes = new byte[2 * count];
            for (int i = 0; i < count; i++)
            {
                float x = samples[offset + i];
                if (!(x > -1f)) x = -1f;   // also NaN
                else if (x > 1f) x = 1f;
                int v = (int)Math.Round(x * 32767f);
                bytes[2 * i] = (byte)v;
                bytes[2 * i + 1] = (byte)(v >> 8);
            }
            return bytes;
        }

        /// <summary>Resamples mono audio from `fromRate` to `toRate` with a Blackman-windowed sinc low-pass
        /// (cut-off just under the lower Nyquist frequency, so downsampling does not alias).</summary>
        public static float[] Resample(float[] x, int fromRate, int toRate)
        {
            if (x == null) throw new ArgumentNullException("x");
            if (fromRate <= 0 || toRate <= 0) throw new ArgumentException("rates must be positive");
            if (fromRate == toRate) return (float[])x.Clone();
            double step = (double)fromRate / toRate;          // input samples per output sample
            double fc = 0.95 * Math.Min(1.0, 1.0 / step);       // cut-off, in cycles per input sample x 2
            const int ZeroCrossings = 12;
            int half = (int)Math.Ceiling(ZeroCrossings / fc);   // filter half-width in input samples
            int n = (int)((long)x.Length * toRate / fromRate);
            var y = new float[n];
            for (int i = 0; i < n; i++)
            {
                double t = i * step;
                int k0 = (int)Math.Floor(t) - half + 1, k1 = (int)Math.Floor(t) + half;
                double acc = 0, norm = 0;
                for (int k = Math.Max(0, k0); k <= Math.Min(x.Length - 1, k1); k++)
                {
                    double d = t - k;
                    double a = Math.PI * fc * d;
                    double sinc = Math.Abs(a) < 1e-9 ? 1.0 : Math.Sin(a) / a;
                    double w = 0.42 + 0.5 * Math.Cos(Math.PI * d / half) + 0.08 * Math.Cos(2 * Math.PI * d / half);
                    double h = sinc * w;
                    acc += h * x[k];
                    norm += h;
                }
                y[i] = norm > 1e-9 ? (float)(acc / norm) : 0f;   // unit DC gain, also at the edges
            }
            return y;
        }
    }
}
