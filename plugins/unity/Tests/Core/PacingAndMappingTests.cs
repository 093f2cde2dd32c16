// Engine-free tests of the frame pacer (exact synthetic timings: bursty publishing as the sidecar does it, jittery
// consumers) and of name matching on real rigs' spellings, VRM / VRoid presets and the match report.
using System;
using System.Collections.Generic;
using NUnit.Framework;

namespace RealtalkBridge.Tests
{
    [TestFixture]
    public class FramePacerTests
    {
        static CoeffFrame Frame(string stream, long seq, double fps)
        {
            var f = new CoeffFrame { Stream = stream, Seq = seq, T = seq / fps, Fps = fps, Layout = "arkit52", Names = Payloads.Arkit };
            f.Weights = new float[52];
            f.Weights[17] = seq % 100 / 100f;
            f.Count = 52;
            return f;
        }

        /// <summary>Simulates `seconds` of a stream at `fps` published in bursts every `burst` s (each burst carries the
        /// frames whose time has passed, as a 40 ms model step does), consumed at `hz` with uniform tick jitter.
        /// Returns the seqs the consumer saw, in order.</summary>
        static List<long> Run(FramePacer p, double fps, double burst, double hz, double jitter, double seconds, int seed,
                              double stallAt = -1, double stallFor = 0)
        {
            var rng = new Random(seed);
            var seen = new List<long>();
            var dst = new CoeffFrame();
            long nextSeq = 0;
            double nextBurst = burst, nextTick = 0;
            int n = (int)(seconds * fps);
            while (nextTick < seconds + 0.5)
            {
                double tick = nextTick + (rng.NextDouble() * 2 - 1) * jitter;
                // deliver every burst due before this tick
                while (nextBurst <= tick && nextSeq < n)
                {
                    bool stalled = stallAt >= 0 && nextBurst >= stallAt && nextBurst < stallAt + stallFor;
                    if (!stalled)
                        while (nextSeq < n && nextSeq / fps < nextBurst - 1e-9) p.Push(Frame("s", nextSeq++, fps), nextBurst);
                    nextBurst += burst;
                }
                if (p.TryNext(dst, nextTick)) seen.Add(dst.Seq);   // consumer clock: the frame's start time
                nextTick += 1.0 / hz;
            }
            return seen;
        }

        static void AssertInOrder(List<long> seen)
        {
            for (int i = 1; i < seen.Count; i++) Assert.Greater(seen[i], seen[i - 1], "frames out of order at " + i);
        }

        [Test]
        public void SixtyHzConsumerSeesEveryFrameOfABurstySixtyFpsStream()
        {
            foreach (double jitter in new[] { 0.0, 0.002, 0.004 })
            {
                var p = new FramePacer();
                var seen = Run(p, 60, 0.04, 60, jitter, 10, 7);
                AssertInOrder(seen);
                // the first frame starts playback; from there on nothing may be skipped
                Assert.AreEqual(seen[seen.Count - 1] - seen[0] + 1, seen.Count, "skipped frames at jitter " + jitter + " (skipped " + p.Skipped + ")");
                Assert.GreaterOrEqual(seen.Count, 595, "jitter " + jitter);
                Assert.AreEqual(0, p.Overflowed);
            }
        }

        [Test]
        public void FasterConsumersSeeEveryFrameAndSlowerOnesSkipOnlyWhatTheyMust()
        {
            var fast = new FramePacer();
            var seen = Run(fast, 30, 0.04, 144, 0.001, 8, 3);
            AssertInOrder(seen);
            Assert.AreEqual(seen[seen.Count - 1] - seen[0] + 1, seen.Count, "144 Hz consumer of 30 fps skipped frames");

            var slow = new FramePacer();
            seen = Run(slow, 60, 0.04, 30, 0.002, 8, 4);
            AssertInOrder(seen);
            // about every other frame, and the queue never backs up
            Assert.AreEqual(240, seen.Count, 8);
            Assert.Less(slow.Queued, 8);
            Assert.AreEqual(0, slow.Overflowed);
        }

        [Test]
        public void AStallCostsBoundedDelayAndPlaybackResumes()
        {
            var p = new FramePacer { MaxLagSeconds = 0.15 };
            var seen = Run(p, 60, 0.04, 60, 0.001, 6, 5, stallAt: 2.0, stallFor: 0.4);
            AssertInOrder(seen);
            Assert.Greater(seen[seen.Count - 1], 350, "playback did not resume after the stall");
            // after the stall the backlog (queued frames) stays within the lag bound
            Assert.LessOrEqual(p.Queued, (int)(0.15 * 60) + 3);
        }

        [Test]
        public void ARestartedTimelineResetsAndOtherStreamsWaitTheirTurn()
        {
            var p = new FramePacer();
            var dst = new CoeffFrame();
            for (int i = 0; i < 5; i++) p.Push(Frame("a", 100 + i, 30), i / 30.0);
            Assert.IsTrue(p.TryNext(dst, 0));
            Assert.AreEqual(104, dst.Seq, "playback starts at the newest frame");
            p.Push(Frame("b", 1, 30), 0.2);     // another stream while "a" is live: ignored
            Assert.AreEqual(1, p.OtherStreamDropped);
            p.Push(Frame("a", 0, 30), 0.25);    // t went back (sidecar restart): a new timeline
            Assert.AreEqual(1, p.Resets);
            Assert.IsTrue(p.TryNext(dst, 0.3));
            Assert.AreEqual(0, dst.Seq);
            p.Push(Frame("b", 7, 30), 1.0);     // "a" quiet for longer than StreamSwitchSeconds: switch
            Assert.IsTrue(p.TryNext(dst, 1.0));
            Assert.AreEqual("b", dst.Stream);
        }
    }

    [TestFixture]
    public class NameMatchingTests
    {
        static int Target(BlendshapeMap map, string arkit) { return map.TargetOf(Array.IndexOf(Payloads.Arkit, arkit)); }

        [Test]
        public void RealRigSpellingsMatchWithoutMapping()
        {
            string[] rig = {
                "jawOpen.001", "eyeBlinkL", "eyeBlinkR", "mouthClosed", "A38_Mouth_Smile_Left", "A39_Mouth_Smile_Right",
                "blendShape1.browInnerUp", "Brow_Down_L", "brow_down_R", "NoseSneer.L", "noseSneer.R", "CheekPuff", "tongue_out",
            };
            var map = new BlendshapeMap();
            map.Bind(Payloads.Arkit, rig);
            Assert.AreEqual(0, Target(map, "jawOpen"));
            Assert.AreEqual(1, Target(map, "eyeBlinkLeft"));
            Assert.AreEqual(2, Target(map, "eyeBlinkRight"));
            Assert.AreEqual(3, Target(map, "mouthClose"));
            Assert.AreEqual(4, Target(map, "mouthSmileLeft"));
            Assert.AreEqual(5, Target(map, "mouthSmileRight"));
            Assert.AreEqual(6, Target(map, "browInnerUp"));
            Assert.AreEqual(7, Target(map, "browDownLeft"));
            Assert.AreEqual(8, Target(map, "browDownRight"));
            Assert.AreEqual(9, Target(map, "noseSneerLeft"));
            Assert.AreEqual(10, Target(map, "noseSneerRight"));
            Assert.AreEqual(11, Target(map, "cheekPuff"));
            Assert.AreEqual(12, Target(map, "tongueOut"));
            Assert.AreEqual(rig.Length, map.MappedCount);
            Assert.AreEqual(0, map.DerivedCount, "a rig with ARKit shapes gets no preset mixes on top");
            StringAssert.Contains("jawOpen->jawOpen.001", map.MatchReport);
            StringAssert.Contains("layout channels without a blendshape: eyeLookDownLeft", map.MatchReport);
            // the spellings of one name all meet
            foreach (var s in new[] { "jawOpen", "JawOpen", "jaw_open", "Jaw_Open", "blendShape1.jawOpen", "A25_Jaw_Open", "ARKit_jawOpen", "jawOpen.002" })
                Assert.AreEqual("jawopen", BlendshapeMap.NormalizeName(s), s);
            foreach (var s in new[] { "eyeBlinkLeft", "eyeBlink_L", "EyeBlink_L", "eyeBlinkL", "eye_blink_left", "eyeBlink.L", "A14_Eye_Blink_Left" })
                Assert.AreEqual("eyeblinkleft", BlendshapeMap.NormalizeName(s), s);
        }

        [Test]
        public void VrmAndVroidPresetsAreDrivenFromArkit()
        {
            // VRoid's default face mesh, VRM 0 and VRM 1.0 preset names
            string[][] rigs = {
                new[] { "Fcl_ALL_Neutral", "Fcl_MTH_A", "Fcl_MTH_I", "Fcl_MTH_U", "Fcl_MTH_E", "Fcl_MTH_O", "Fcl_EYE_Close", "Fcl_EYE_Close_L", "Fcl_EYE_Close_R", "Fcl_ALL_Joy" },
                new[] { "Neutral", "A", "I", "U", "E", "O", "Blink", "Blink_L", "Blink_R", "Joy" },
                new[] { "neutral", "aa", "ih", "ou", "ee", "oh", "blink", "blinkLeft", "blinkRight", "happy" },
            };
            var w = new float[52];
            w[Array.IndexOf(Payloads.Arkit, "jawOpen")] = 0.5f;
            w[Array.IndexOf(Payloads.Arkit, "eyeBlinkLeft")] = 1f;
            foreach (var rig in rigs)
            {
                var map = new BlendshapeMap();
                map.Bind(Payloads.Arkit, rig);
                Assert.AreEqual(0, map.MappedCount, rig[1]);
                Assert.AreEqual(9, map.DerivedCount, string.Join(",", rig) + "\n" + map.MatchReport);
                var outw = new float[rig.Length]; var touched = new bool[rig.Length];
                map.Apply(w, 52, 1 / 30f, outw, touched);
                Assert.AreEqual(75f, outw[1], 1e-3, "A = 1.5 * jawOpen");     // vrm0.toml's mix
                Assert.AreEqual(100f, outw[7], 1e-3, "Blink_L = eyeBlinkLeft");
                Assert.AreEqual(0f, outw[8], 1e-3, "Blink_R");
                Assert.AreEqual(50f, outw[6], 1e-3, "Blink = both eyes' mean");
                Assert.IsFalse(touched[0], "neutral is not driven");
            }
        }

        [Test]
        public void ZeroMatchesAreReported()
        {
            var map = new BlendshapeMap();
            var target = new BlendshapeTarget(new[] { "Body_Fat", "Body_Thin" });
            var f = new CoeffFrame { Names = Payloads.Arkit, Weights = new float[52], Count = 52 };
            target.Apply(f, f.Weights, 0.02f);
            Assert.IsTrue(target.Map.NothingMatched);
            StringAssert.Contains("NOTHING MATCHED", target.Map.MatchReport);
            Assert.IsTrue(target.TakeNothingMatchedWarning());
            Assert.IsFalse(target.TakeNothingMatchedWarning(), "warn once");
            map.Bind(Payloads.Arkit, new[] { "jawOpen" });
            Assert.IsFalse(map.NothingMatched);
        }

        [Test]
        public void EqualNamesInANewArrayKeepTheMappingAndTheSmoothing()
        {
            // the 1 Hz status re-sends the layout's names: a new array with the same content
            var map = new BlendshapeMap { SmoothingSeconds = 0.1f };
            string[] rig = { "jawOpen" };
            map.Bind(Payloads.Arkit, rig);
            var o = new float[1]; var t = new bool[1];
            var w = new float[52];
            w[17] = 1f;
            for (int i = 0; i < 30; i++) map.Apply(w, 52, 1 / 30f, o, t);
            float before = o[0];
            Assert.Greater(before, 90f);
            map.Bind((string[])Payloads.Arkit.Clone(), (string[])rig.Clone());
            map.Apply(w, 52, 1 / 30f, o, t);
            Assert.AreEqual(1, map.Rebuilds, "the mapping was rebuilt for equal names");
            Assert.GreaterOrEqual(o[0], before, "smoothing was reset (the value jumped)");
        }
    }
    [TestFixture]
    public class BakeCurveTests
    {
        static CoefficientTrack Track(int frames)
        {
            var tr = new CoefficientTrack { Fps = 30, T0 = 0, Layout = "arkit52", Names = Payloads.Arkit, FrameCount = frames };
            tr.Weights = new float[frames * 52];
            for (int i = 0; i < frames; i++)
            {
                tr.Weights[i * 52 + 17] = (float)(0.5 + 0.5 * Math.Sin(i * 0.3));   // jawOpen talks
                tr.Weights[i * 52 + 0] = i == 10 ? 1f : 0f;                          // one blink
            }
            return tr;
        }

        [Test]
        public void CurvesUseTheMeshsOwnNamesThroughTheLiveMapping()
        {
            // an FBX face: blendShape1.* names on a child mesh; the clip must animate those exact names
            var mesh = new List<string>();
            foreach (var n in Payloads.Arkit) mesh.Add("blendShape1." + n);
            mesh.Add("blendShape1.Body_Fat");
            var track = Track(90);
            var curves = TrackCurves.ForMesh(track, new BlendshapeMap(), mesh.ToArray(), 0.25f);
            Assert.AreEqual(52, curves.Count, "one curve per driven blendshape");
            var jaw = curves.Find(delegate (TrackCurves.MeshCurve c) { return c.BlendshapeName == "blendShape1.jawOpen"; });
            Assert.IsNotNull(jaw);
            Assert.AreEqual("blendShape.blendShape1.jawOpen", jaw.Property);
            Assert.Less(jaw.Times.Count, 90);
            // the reduced keys reproduce the 0..100 track within tolerance
            for (int i = 0; i < 90; i++)
            {
                float t = i / 30f, want = track.Weights[i * 52 + 17] * 100f;
                int k = 0;
                while (k < jaw.Times.Count - 2 && jaw.Times[k + 1] < t) k++;
                float a = (t - jaw.Times[k]) / (jaw.Times[k + 1] - jaw.Times[k]);
                float got = jaw.Values[k] + a * (jaw.Values[k + 1] - jaw.Values[k]);
                Assert.AreEqual(want, got, 0.3, "frame " + i);
            }
            Assert.IsFalse(curves.Exists(delegate (TrackCurves.MeshCurve c) { return c.BlendshapeName == "blendShape1.Body_Fat"; }));
        }

        [Test]
        public void AVroidFaceGetsPresetCurves()
        {
            string[] vroid = { "Fcl_ALL_Neutral", "Fcl_MTH_A", "Fcl_MTH_O", "Fcl_EYE_Close_L" };
            var curves = TrackCurves.ForMesh(Track(60), new BlendshapeMap(), vroid, 0.25f);
            var names = curves.ConvertAll(delegate (TrackCurves.MeshCurve c) { return c.BlendshapeName; });
            CollectionAssert.AreEquivalent(new[] { "Fcl_MTH_A", "Fcl_MTH_O", "Fcl_EYE_Close_L" }, names);
            var blink = curves.Find(delegate (TrackCurves.MeshCurve c) { return c.BlendshapeName == "Fcl_EYE_Close_L"; });
            Assert.AreEqual(100f, blink.Values[blink.Times.FindIndex(delegate (float t) { return Math.Abs(t - 10 / 30f) < 1e-4; })], 1e-3);
        }
    }
    [TestFixture]
    public class ForwardCompatibilityTests
    {
        [Test]
        public void UnknownEventsErrorCodesAndFieldsAreTolerated()
        {
            // SPEC 3.3: new event names are additive; 4: new error codes (busy, quota, ...) reach the caller by code
            var w = new MsgPackWriter();
            w.WriteMapHeader(8);
            w.WriteString("v"); w.WriteInt(1);
            w.WriteString("type"); w.WriteString("event");
            w.WriteString("stream"); w.WriteString("npc-a");
            w.WriteString("wall"); w.WriteDouble(1.7e9);
            w.WriteString("t"); w.WriteDouble(2.5);
            w.WriteString("event"); w.WriteString("lagging");
            w.WriteString("message"); w.WriteString("dropped 120 ms of stale audio");
            w.WriteString("dropped_ms"); w.WriteDouble(120);          // a field this client does not know
            var ev = new EventMessage();
            string error;
            byte[] b = w.ToArray();
            Assert.IsTrue(Protocol.TryDecodeEvent(b, 0, b.Length, ev, out error), error);
            Assert.AreEqual("lagging", ev.Event);
            Assert.AreEqual(2.5, ev.T);

            w = new MsgPackWriter();
            w.WriteMapHeader(5);
            w.WriteString("v"); w.WriteInt(1);
            w.WriteString("op"); w.WriteString("push_audio");
            w.WriteString("id"); w.WriteInt(7);
            w.WriteString("ok"); w.WriteBool(false);
            w.WriteString("error"); w.WriteMapHeader(3);
            w.WriteString("code"); w.WriteString("quota");
            w.WriteString("message"); w.WriteString("audio quota exceeded");
            w.WriteString("retry_after_s"); w.WriteDouble(1.5);
            b = w.ToArray();
            var reply = new Reply();
            Assert.IsTrue(Protocol.TryDecodeReply(b, 0, b.Length, reply, out error), error);
            Assert.IsFalse(reply.Ok);
            Assert.AreEqual("quota", reply.ErrorCode);
            Assert.AreEqual("7", reply.Id);
        }
    }
}
