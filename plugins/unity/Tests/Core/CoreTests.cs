// Engine-free unit tests: msgpack, ZMTP framing, protocol decoding, name mapping, track sampling.
// NUnit 2.6 and 3 compatible (no fixture-level setup attributes).
using System;
using System.Collections.Generic;
using System.Text;
using NUnit.Framework;

namespace RealtalkBridge.Tests
{
    public static class Payloads
    {
        public static readonly string[] Arkit = {
            "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft", "eyeWideLeft",
            "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight",
            "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
            "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight",
            "mouthStretchLeft", "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
            "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
            "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
            "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut" };

        /// <summary>A coeffs payload written with our encoder (the Python side's encoder is checked by golden vectors).</summary>
        public static byte[] Coeffs(long v, string stream, long seq, double t, string[] names, float[] w, bool withNames = true)
        {
            var m = new MsgPackWriter();
            m.WriteMapHeader(withNames ? 10 : 9);
            m.WriteString("v"); m.WriteInt(v);
            m.WriteString("type"); m.WriteString("coeffs");
            m.WriteString("stream"); m.WriteString(stream);
            m.WriteString("seq"); m.WriteInt(seq);
            m.WriteString("t"); m.WriteDouble(t);
            m.WriteString("wall"); m.WriteDouble(1.7e9);
            m.WriteString("fps"); m.WriteDouble(30);
            m.WriteString("layout"); m.WriteString("arkit52");
            if (withNames)
            {
                m.WriteString("names"); m.WriteArrayHeader(names.Length);
                foreach (var n in names) m.WriteString(n);
            }
            m.WriteString("w"); m.WriteFloat32LE(w, 0, w.Length);
            return m.ToArray();
        }
    }

    [TestFixture]
    public class MsgPackTests
    {
        [Test]
        public void IntsRoundTripAtEveryWidthBoundary()
        {
            long[] values = { 0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295L, 4294967296L, long.MaxValue,
                              -1, -32, -33, -128, -129, -32768, -32769, int.MinValue, (long)int.MinValue - 1, long.MinValue };
            var w = new MsgPackWriter();
            foreach (var v in values) w.WriteInt(v);
            var r = new MsgPackReader(w.ToArray());
            foreach (var v in values) Assert.AreEqual(v, r.ReadInt());
            Assert.IsTrue(r.AtEnd);
        }

        [Test]
        public void StringsBinsFloatsAndMapsRoundTrip()
        {
            var w = new MsgPackWriter(4);
            string longStr = new string('x', 70000);
            w.WriteMapHeader(4);
            w.WriteString("ünïcode"); w.WriteString(longStr);
            w.WriteString("f"); w.WriteDouble(-0.125);
            w.WriteString("b"); w.WriteFloat32LE(new[] { 1.5f, -2f, float.Epsilon }, 0, 3);
            w.WriteString("n"); w.WriteNil();
            var obj = (Dictionary<string, object>)new MsgPackReader(w.ToArray()).ReadObject();
            Assert.AreEqual(longStr, obj["ünïcode"]);
            Assert.AreEqual(-0.125, (double)obj["f"]);
            var floats = new float[3];
            var bytes = (byte[])obj["b"];
            MsgPackReader.CopyFloat32LE(new ArraySegment<byte>(bytes), floats, 0);
            CollectionAssert.AreEqual(new[] { 1.5f, -2f, float.Epsilon }, floats);
            Assert.IsNull(obj["n"]);
        }

        [Test]
        public void Float32ValuesAreAccepted()
        {
            // msgpack float32 (0xca) as written by other encoders
            var r = new MsgPackReader(new byte[] { 0xca, 0x3f, 0xc0, 0x00, 0x00 });
            Assert.AreEqual(1.5, r.ReadDouble());
        }

        [Test]
        public void TruncatedAndHostileInputThrowsMsgPackExceptionOnly()
        {
            var inputs = new List<byte[]>
            {
                new byte[0],
                new byte[] { 0xc1 },                                  // never-used byte
                new byte[] { 0xdb, 0xff, 0xff, 0xff, 0xff },          // str32 claiming 4 GiB
                new byte[] { 0xdd, 0x7f, 0xff, 0xff, 0xff },          // array32 claiming 2^31 elements
                new byte[] { 0xdf, 0x00, 0x10, 0x00, 0x00, 0xa1 },    // map claiming 1M pairs
                new byte[] { 0xc6, 0x00, 0x00, 0x01, 0x00, 0x01 },    // bin32 longer than the data
                new byte[] { 0xcb, 0x00, 0x01 },                      // cut float64
                new byte[] { 0x81, 0xa1, (byte)'a' },                 // map missing its value
            };
            var deep = new byte[200];
            for (int i = 0; i < deep.Length; i++) deep[i] = 0x91;  // 200 nested arrays
            inputs.Add(deep);
            foreach (var input in inputs)
            {
                Assert.Throws<MsgPackException>(delegate
                {
                    var r = new MsgPackReader(input);
                    r.ReadObject();
                }, BitConverter.ToString(input, 0, Math.Min(8, input.Length)));
            }
        }

        [Test]
        public void RandomGarbageNeverThrowsAnythingButMsgPackException()
        {
            var rng = new Random(1234);
            var frame = new CoeffFrame();
            var names = new Dictionary<string, string[]>();
            byte[] good = Payloads.Coeffs(1, "mic", 3, 0.1, Payloads.Arkit, new float[52]);
            for (int k = 0; k < 3000; k++)
            {
                byte[] b;
                if (k % 2 == 0) { b = new byte[rng.Next(0, 64)]; rng.NextBytes(b); }
                else
                {
                    // mutate a real payload: flip bytes and cut it
                    b = (byte[])good.Clone();
                    for (int j = 0; j < 4; j++) b[rng.Next(b.Length)] = (byte)rng.Next(256);
                    Array.Resize(ref b, rng.Next(1, b.Length + 1));
                }
                string error;
                // must return (true or false), never throw
                Protocol.TryDecodeCoeffs(b, 0, b.Length, frame, names, out error);
                var st = new StatusMessage();
                Protocol.TryDecodeStatus(b, 0, b.Length, st, out error);
                Protocol.TryDecodeEvent(b, 0, b.Length, new EventMessage(), out error);
                Protocol.TryDecodeReply(b, 0, b.Length, new Reply(), out error);
            }
        }
    }

    [TestFixture]
    public class ZmtpFramingTests
    {
        static byte[] Frames(params byte[][] bodies)
        {
            var list = new List<byte>();
            for (int i = 0; i < bodies.Length; i++)
            {
                byte more = (byte)(i < bodies.Length - 1 ? 1 : 0);
                var b = bodies[i];
                if (b.Length > 255)
                {
                    list.Add((byte)(more | 2));
                    for (int k = 7; k >= 0; k--) list.Add((byte)((long)b.Length >> (8 * k)));
                }
                else { list.Add(more); list.Add((byte)b.Length); }
                list.AddRange(b);
            }
            return list.ToArray();
        }

        [Test]
        public void FramesSurviveOneByteReads()
        {
            var big = new byte[70000];
            new Random(5).NextBytes(big);
            byte[] wire = Frames(Encoding.ASCII.GetBytes("coeffs/mic"), big);
            var p = new ZmtpFrameParser();
            var got = new List<ZmtpFrame>();
            ZmtpFrame f;
            for (int i = 0; i < wire.Length; i++)
            {
                p.Feed(wire, i, 1);
                while (p.TryNext(out f)) got.Add(f);
            }
            Assert.AreEqual(2, got.Count);
            Assert.IsTrue(got[0].More);
            Assert.IsFalse(got[1].More);
            Assert.AreEqual("coeffs/mic", Encoding.ASCII.GetString(got[0].Body));
            CollectionAssert.AreEqual(big, got[1].Body);
            Assert.AreEqual(0, p.Buffered);
        }

        [Test]
        public void FramesSurviveRandomSplits()
        {
            var rng = new Random(9);
            var bodies = new List<byte[]>();
            var wire = new List<byte>();
            for (int i = 0; i < 200; i++)
            {
                var b = new byte[rng.Next(0, 600)];
                rng.NextBytes(b);
                bodies.Add(b);
                wire.AddRange(Frames(b));
            }
            byte[] all = wire.ToArray();
            var p = new ZmtpFrameParser();
            var got = new List<byte[]>();
            int pos = 0;
            ZmtpFrame f;
            while (pos < all.Length)
            {
                int n = Math.Min(all.Length - pos, rng.Next(1, 300));
                p.Feed(all, pos, n);
                pos += n;
                while (p.TryNext(out f)) got.Add(f.Body);
            }
            Assert.AreEqual(bodies.Count, got.Count);
            for (int i = 0; i < bodies.Count; i++) CollectionAssert.AreEqual(bodies[i], got[i]);
        }

        [Test]
        public void OversizedAndReservedFramesAreRejected()
        {
            var p = new ZmtpFrameParser { MaxFrameSize = 1000 };
            p.Feed(new byte[] { 0x02, 0, 0, 0, 0, 0, 0, 0x10, 0 }, 0, 9);   // long frame of 4096 bytes
            ZmtpFrame f;
            Assert.Throws<TransportException>(delegate { p.TryNext(out f); });
            var q = new ZmtpFrameParser();
            q.Feed(new byte[] { 0x80, 0 }, 0, 2);
            Assert.Throws<TransportException>(delegate { q.TryNext(out f); });
        }

        [Test]
        public void EndpointsParse()
        {
            string host; int port;
            ZmtpSocket.ParseEndpoint("tcp://127.0.0.1:47200", out host, out port);
            Assert.AreEqual("127.0.0.1", host); Assert.AreEqual(47200, port);
            ZmtpSocket.ParseEndpoint("tcp://[::1]:5", out host, out port);
            Assert.AreEqual("::1", host);
            Assert.Throws<TransportException>(delegate { ZmtpSocket.ParseEndpoint("ipc:///tmp/x", out host, out port); });
            Assert.Throws<TransportException>(delegate { ZmtpSocket.ParseEndpoint("tcp://localhost:99999", out host, out port); });
        }
    }

    [TestFixture]
    public class ProtocolTests
    {
        [Test]
        public void CoeffsDecodeAndNamesAreRememberedPerLayout()
        {
            var w = new float[52];
            for (int i = 0; i < 52; i++) w[i] = i / 100f;
            var names = new Dictionary<string, string[]>();
            var f = new CoeffFrame();
            string error;
            byte[] first = Payloads.Coeffs(1, "mic", 0, 1 / 60.0, Payloads.Arkit, w);
            Assert.IsTrue(Protocol.TryDecodeCoeffs(first, 0, first.Length, f, names, out error), error);
            Assert.AreEqual("mic", f.Stream); Assert.AreEqual(52, f.Count); Assert.AreEqual("jawOpen", f.Names[17]);
            Assert.AreEqual(0.17f, f.Weights[17]);
            string[] remembered = f.Names;
            byte[] later = Payloads.Coeffs(1, "mic", 1, 3 / 60.0, Payloads.Arkit, w, withNames: false);
            Assert.IsTrue(Protocol.TryDecodeCoeffs(later, 0, later.Length, f, names, out error), error);
            Assert.AreSame(remembered, f.Names);
            Assert.AreEqual(1, f.Seq);
            // a frame of a layout never named can be decoded but carries no names
            var fresh = new Dictionary<string, string[]>();
            Assert.IsTrue(Protocol.TryDecodeCoeffs(later, 0, later.Length, f, fresh, out error));
            Assert.IsNull(f.Names);
        }

        [Test]
        public void BadCoeffsAreRejectedWithAReason()
        {
            var names = new Dictionary<string, string[]>();
            var f = new CoeffFrame();
            string error;
            var cases = new Dictionary<string, byte[]>
            {
                { "version 2", Payloads.Coeffs(2, "mic", 0, 0, Payloads.Arkit, new float[52]) },
                { "w shorter than names", Payloads.Coeffs(1, "mic", 0, 0, Payloads.Arkit, new float[51]) },
                { "bad stream id", Payloads.Coeffs(1, "m i c", 0, 0, Payloads.Arkit, new float[52]) },
                { "negative seq", Payloads.Coeffs(1, "mic", -1, 0, Payloads.Arkit, new float[52]) },
                { "NaN t", Payloads.Coeffs(1, "mic", 0, double.NaN, Payloads.Arkit, new float[52]) },
            };
            var notMap = new MsgPackWriter(); notMap.WriteArrayHeader(0);
            cases["not a map"] = notMap.ToArray();
            var good = Payloads.Coeffs(1, "mic", 0, 0, Payloads.Arkit, new float[52]);
            var trailing = new byte[good.Length + 1]; Buffer.BlockCopy(good, 0, trailing, 0, good.Length);
            cases["trailing byte"] = trailing;
            foreach (var kv in cases)
            {
                Assert.IsFalse(Protocol.TryDecodeCoeffs(kv.Value, 0, kv.Value.Length, f, names, out error), kv.Key);
                Assert.IsNotNull(error, kv.Key);
            }
        }

        [Test]
        public void UnknownKeysAreIgnored()
        {
            var m = new MsgPackWriter();
            m.WriteMapHeader(8);
            m.WriteString("future"); m.WriteMapHeader(1); m.WriteString("x"); m.WriteArrayHeader(2); m.WriteNil(); m.WriteBool(true);
            m.WriteString("v"); m.WriteInt(1);
            m.WriteString("type"); m.WriteString("coeffs");
            m.WriteString("stream"); m.WriteString("file");
            m.WriteString("seq"); m.WriteInt(5);
            m.WriteString("t"); m.WriteInt(2);   // an int time from a lax encoder is still a number
            m.WriteString("layout"); m.WriteString("two");
            m.WriteString("w"); m.WriteFloat32LE(new[] { 0.25f, 0.5f }, 0, 2);
            var b = m.ToArray();
            var f = new CoeffFrame();
            string error;
            var names = new Dictionary<string, string[]> { { "two", new[] { "a", "b" } } };
            Assert.IsTrue(Protocol.TryDecodeCoeffs(b, 0, b.Length, f, names, out error), error);
            Assert.AreEqual(2.0, f.T);
            Assert.AreEqual(0.5f, f.Weights[1]);
        }

        [Test]
        public void RequestsEncodeAsSpecified()
        {
            var w = new MsgPackWriter();
            Protocol.WriteBakeF32(w, 42, new[] { 0.5f, -0.5f }, 0, 2, 48000, 30);
            var m = (Dictionary<string, object>)new MsgPackReader(w.ToArray()).ReadObject();
            Assert.AreEqual(1L, m["v"]); Assert.AreEqual("bake", m["op"]); Assert.AreEqual(42L, m["id"]);
            Assert.AreEqual("f32", m["format"]); Assert.AreEqual(48000L, m["sample_rate"]);
            Assert.AreEqual(8, ((byte[])m["audio"]).Length);
        }

        [Test]
        public void CurveKeysReproduceTheTrackWithinTolerance()
        {
            // a ramp, a hold and a spike: the ramp and hold collapse to few keys, the spike survives
            int n = 90;
            var w = new float[n * 2];
            for (int i = 0; i < n; i++)
            {
                w[2 * i] = i < 30 ? i / 30f : (i < 60 ? 1f : 0f);
                w[2 * i + 1] = i == 75 ? 0.8f : 0f;
            }
            var tr = new CoefficientTrack { Fps = 30, T0 = 0, Names = new[] { "jawOpen", "mouthClose" }, FrameCount = n, Weights = w };
            var times = new List<float>(); var values = new List<float>();
            for (int c = 0; c < 2; c++)
            {
                TrackCurves.Channel(tr, c, 100f, 0.5f, times, values);
                Assert.Less(times.Count, 10, "channel " + c + " keys");
                Assert.AreEqual(0f, times[0]);
                Assert.AreEqual((n - 1) / 30f, times[times.Count - 1], 1e-5);
                for (int i = 0; i < n; i++)
                {
                    float t = i / 30f;
                    int k = 0;
                    while (k < times.Count - 2 && times[k + 1] < t) k++;
                    float a = (t - times[k]) / (times[k + 1] - times[k]);
                    float lin = values[k] + Math.Max(0f, Math.Min(1f, a)) * (values[k + 1] - values[k]);
                    Assert.AreEqual(w[2 * i + c] * 100f, lin, 0.5f + 1e-3, "channel " + c + " frame " + i);
                }
            }
        }

        [Test]
        public void TrackSamplingInterpolatesAndClamps()
        {
            var tr = new CoefficientTrack { Fps = 10, T0 = 0.05, Names = new[] { "a" }, FrameCount = 3, Weights = new[] { 0f, 1f, 0.5f } };
            var d = new float[1];
            tr.Sample(0.0, d); Assert.AreEqual(0f, d[0]);
            tr.Sample(0.10, d); Assert.AreEqual(0.5f, d[0], 1e-5);
            tr.Sample(0.15, d); Assert.AreEqual(1f, d[0], 1e-5);
            tr.Sample(0.20, d); Assert.AreEqual(0.75f, d[0], 1e-5);
            tr.Sample(9, d); Assert.AreEqual(0.5f, d[0]);
        }
    }

    [TestFixture]
    public class PcmConvertTests
    {
        static float[] Sine(double hz, int rate, double seconds)
        {
            var x = new float[(int)(rate * seconds)];
            for (int i = 0; i < x.Length; i++) x[i] = (float)(0.5 * Math.Sin(2 * Math.PI * hz * i / rate));
            return x;
        }

        static double Rms(float[] x, int from, int to)
        {
            double s = 0;
            for (int i = from; i < to; i++) s += x[i] * x[i];
            return Math.Sqrt(s / (to - from));
        }

        [Test]
        public void DownsamplingKeepsSpeechBandAndRemovesWhatWouldAlias()
        {
            var kept = PcmConvert.Resample(Sine(1000, 48000, 1), 48000, 16000);
            Assert.AreEqual(16000, kept.Length);
            Assert.AreEqual(0.5 / Math.Sqrt(2), Rms(kept, 500, 15500), 0.01, "a 1 kHz tone passes");
            for (int i = 0; i < 32; i++) Assert.AreEqual(0.5 * Math.Sin(2 * Math.PI * 1000 * (1000 + i) / 16000.0), kept[1000 + i], 0.01);
            var gone = PcmConvert.Resample(Sine(12000, 48000, 1), 48000, 16000);   // above 8 kHz: would fold to 4 kHz
            Assert.Less(Rms(gone, 500, 15500), 0.01, "a 12 kHz tone is filtered out");
        }

        [Test]
        public void S16IsLittleEndianAndClamped()
        {
            var b = PcmConvert.ToS16LE(new[] { 0f, 1f, -1f, 2f, float.NaN, 0.5f }, 0, 6);
            var v = new short[6];
            for (int i = 0; i < 6; i++) v[i] = (short)(b[2 * i] | (b[2 * i + 1] << 8));
            CollectionAssert.AreEqual(new short[] { 0, 32767, -32767, 32767, -32767, 16384 }, v);
        }
    }

    [TestFixture]
    public class BlendshapeMapTests
    {
        [Test]
        public void CommonSpellingsMatchArkitNames()
        {
            string[] rig = { "blendShape1.JawOpen", "eyeBlink_L", "EyeBlinkRight", "mouth_smile_left", "ARKit_mouthSmileRight", "somethingElse", "cheekPuff" };
            var map = new BlendshapeMap();
            map.Bind(Payloads.Arkit, rig);
            int idx = Array.IndexOf(Payloads.Arkit, "jawOpen");
            Assert.AreEqual(0, map.TargetOf(idx));
            Assert.AreEqual(1, map.TargetOf(Array.IndexOf(Payloads.Arkit, "eyeBlinkLeft")));
            Assert.AreEqual(2, map.TargetOf(Array.IndexOf(Payloads.Arkit, "eyeBlinkRight")));
            Assert.AreEqual(3, map.TargetOf(Array.IndexOf(Payloads.Arkit, "mouthSmileLeft")));
            Assert.AreEqual(4, map.TargetOf(Array.IndexOf(Payloads.Arkit, "mouthSmileRight")));
            Assert.AreEqual(6, map.TargetOf(Array.IndexOf(Payloads.Arkit, "cheekPuff")));
            Assert.AreEqual(-1, map.TargetOf(Array.IndexOf(Payloads.Arkit, "tongueOut")));
            Assert.AreEqual(6, map.MappedCount);
        }

        [Test]
        public void GainOffsetClampAndOverrideTarget()
        {
            var map = new BlendshapeMap();
            var s = ChannelSettings.Default("jawOpen");
            s.Gain = 2f; s.Offset = 0.1f; s.Max = 0.8f; s.Target = "MTH_A";
            map.SetOverride(s);
            map.Bind(new[] { "jawOpen", "mouthClose" }, new[] { "MTH_A", "mouthClose" });
            var outw = new float[2]; var touched = new bool[2];
            map.Apply(new[] { 0.3f, float.NaN }, 2, 1 / 30f, outw, touched);
            Assert.AreEqual(70f, outw[0], 1e-4);     // 0.3*2+0.1 = 0.7, scaled to 0..100
            Assert.AreEqual(0f, outw[1]);            // NaN never reaches the mesh
            map.Apply(new[] { 0.9f, 2f }, 2, 1 / 30f, outw, touched);
            Assert.AreEqual(80f, outw[0], 1e-4);     // clamped at Max
            Assert.AreEqual(100f, outw[1], 1e-4);    // clamped at 1
        }

        [Test]
        public void TwoSpellingsOnOneTargetTakeTheLarger()
        {
            var map = new BlendshapeMap();
            map.Bind(new[] { "jawOpen", "JawOpen", "mouthClose" }, new[] { "jawOpen" });
            var o = new float[1]; var t = new bool[1];
            Assert.AreEqual(1, map.Apply(new[] { 0.2f, 0.6f, 1f }, 3, 0.02f, o, t));
            Assert.AreEqual(60f, o[0], 1e-4);
            map.Apply(new[] { 0.7f, 0.1f, 1f }, 3, 0.02f, o, t);
            Assert.AreEqual(70f, o[0], 1e-4);
        }

        [Test]
        public void SmoothingDependsOnElapsedTimeNotFrameCount()
        {
            // 10 steps of 10 ms must land where 1 step of 100 ms lands
            var a = new BlendshapeMap { SmoothingSeconds = 0.05f };
            var b = new BlendshapeMap { SmoothingSeconds = 0.05f };
            var names = new[] { "jawOpen" };
            a.Bind(names, names); b.Bind(names, names);
            var oa = new float[1]; var ob = new float[1]; var t = new bool[1];
            a.Apply(new[] { 0f }, 1, 0.01f, oa, t); b.Apply(new[] { 0f }, 1, 0.01f, ob, t);
            for (int i = 0; i < 10; i++) a.Apply(new[] { 1f }, 1, 0.01f, oa, t);
            b.Apply(new[] { 1f }, 1, 0.1f, ob, t);
            Assert.AreEqual(ob[0], oa[0], 1e-3);
            Assert.AreEqual(100f * (1 - Math.Exp(-2)), oa[0], 1e-2);
        }
    }
}
