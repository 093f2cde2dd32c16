// Integration tests against real processes on loopback: the sidecar (`realtalk-bridge serve`) and, for fault
// injection, a small pyzmq PUB peer (tests/unity_peers.py). The pytest driver (tests/test_unity_package.py) sets:
//   REALTALK_PYTHON       python executable
//   REALTALK_REPO         repository root (working directory of the processes)
//   REALTALK_SERVE_ARGS   arguments that start the sidecar, with {pub} and {ctl} placeholders for the endpoints
//   REALTALK_SPEECH_WAV   a speech recording (also given to the sidecar as --input)
//   REALTALK_PEERS        path of tests/unity_peers.py
// Without them the tests are ignored with a message (e.g. inside the Unity editor).
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using NUnit.Framework;

namespace RealtalkBridge.Tests
{
    sealed class ChildProcess : IDisposable
    {
        Process _p;
        readonly string _python, _args, _cwd;

        public ChildProcess(string python, string args, string cwd) { _python = python; _args = args; _cwd = cwd; }

        public void Start()
        {
            var psi = new ProcessStartInfo(_python, _args) { UseShellExecute = false, WorkingDirectory = _cwd };
            psi.EnvironmentVariables["PYTHONUNBUFFERED"] = "1";
            _p = Process.Start(psi);
        }

        public int Pid { get { return _p.Id; } }
        public bool Running { get { return _p != null && !_p.HasExited; } }

        public void Signal(string sig)
        {
            using (var k = Process.Start(new ProcessStartInfo("kill", "-" + sig + " " + _p.Id) { UseShellExecute = false })) k.WaitForExit(5000);
        }

        public void Kill()
        {
            if (_p == null) return;
            try { if (!_p.HasExited) { Signal("CONT"); _p.Kill(); } } catch (Exception) { }
            try { _p.WaitForExit(5000); } catch (Exception) { }
            _p.Dispose();
            _p = null;
        }

        public void Dispose() { Kill(); }
    }

    static class Env
    {
        public static string Need(string name)
        {
            string v = Environment.GetEnvironmentVariable(name);
            if (string.IsNullOrEmpty(v)) Assert.Ignore(name + " is not set: run these tests through tests/test_unity_package.py");
            return v;
        }

        public static int FreePort()
        {
            var l = new TcpListener(IPAddress.Loopback, 0);
            l.Start();
            int p = ((IPEndPoint)l.LocalEndpoint).Port;
            l.Stop();
            return p;
        }

        public static bool WaitFor(Func<bool> cond, int timeoutMs)
        {
            var sw = Stopwatch.StartNew();
            while (sw.ElapsedMilliseconds < timeoutMs)
            {
                if (cond()) return true;
                Thread.Sleep(20);
            }
            return cond();
        }

        /// <summary>16-bit PCM mono/stereo WAV -> mono floats (test helper; Unity gives samples via AudioClip).</summary>
        public static float[] ReadWav(string path, out int sampleRate)
        {
            byte[] b = File.ReadAllBytes(path);
            int pos = 12, channels = 1, bits = 16;
            sampleRate = 0;
            while (pos + 8 <= b.Length)
            {
                string id = System.Text.Encoding.ASCII.GetString(b, pos, 4);
                int size = BitConverter.ToInt32(b, pos + 4);
                if (id == "fmt ")
                {
                    channels = BitConverter.ToInt16(b, pos + 10);
                    sampleRate = BitConverter.ToInt32(b, pos + 12);
                    bits = BitConverter.ToInt16(b, pos + 22);
                }
                else if (id == "data")
                {
                    Assert.AreEqual(16, bits, "test wav must be 16-bit PCM");
                    int n = Math.Min(size, b.Length - pos - 8) / (2 * channels);
                    var x = new float[n];
                    for (int i = 0; i < n; i++)
                    {
                        float s = 0;
                        for (int c = 0; c < channels; c++) s += BitConverter.ToInt16(b, pos + 8 + 2 * (i * channels + c)) / 32768f;
                        x[i] = s / channels;
                    }
                    return x;
                }
                pos += 8 + size + (size & 1);
            }
            throw new InvalidDataException("no data chunk in " + path);
        }
    }

    [TestFixture, Category("Sidecar")]
    public class SidecarTests
    {
        string _python, _repo, _serveArgs, _wav;
        int _pub, _ctl;
        ChildProcess _sidecar;
        StreamReceiver _rx;
        ControlClient _ctlClient;

        [SetUp]
        public void SetUp()
        {
            _python = Env.Need("REALTALK_PYTHON");
            _repo = Env.Need("REALTALK_REPO");
            _serveArgs = Env.Need("REALTALK_SERVE_ARGS");
            _wav = Env.Need("REALTALK_SPEECH_WAV");
            _pub = Env.FreePort();
            _ctl = Env.FreePort();
        }

        [TearDown]
        public void TearDown()
        {
            if (_rx != null)
            {
                _rx.Stop();
                Assert.IsFalse(_rx.IsThreadAlive, "the receive thread must end on Stop");
                Assert.AreEqual(0, _rx.ThreadFaults, "unexpected exception in the receive thread: " + _rx.LastError);
                _rx = null;
            }
            if (_ctlClient != null) { _ctlClient.Dispose(); _ctlClient = null; }
            if (_sidecar != null) { _sidecar.Kill(); _sidecar = null; }
        }

        string PubEndpoint { get { return "tcp://127.0.0.1:" + _pub; } }
        string CtlEndpoint { get { return "tcp://127.0.0.1:" + _ctl; } }

        void StartSidecar(string extra = "")
        {
            string args = _serveArgs.Replace("{pub}", PubEndpoint).Replace("{ctl}", CtlEndpoint) + extra;
            _sidecar = new ChildProcess(_python, args, _repo);
            _sidecar.Start();
        }

        /// <summary>Waits until the sidecar answers hello (it loads the model first).</summary>
        StatusMessage WaitReady(int timeoutMs = 30000)
        {
            var sw = Stopwatch.StartNew();
            if (_ctlClient == null) _ctlClient = new ControlClient(CtlEndpoint) { ConnectTimeoutMs = 1000, ClientName = "nunit" };
            Exception last = null;
            while (sw.ElapsedMilliseconds < timeoutMs)
            {
                Assert.IsTrue(_sidecar.Running, "the sidecar exited during start-up");
                try { return _ctlClient.Hello(1000); }
                catch (TransportException e) { last = e; Thread.Sleep(100); }
            }
            Assert.Fail("sidecar did not answer hello within " + timeoutMs + " ms: " + (last == null ? "" : last.Message));
            return null;
        }

        StreamReceiver NewReceiver(string filter, bool hello = true)
        {
            return new StreamReceiver(new StreamReceiverOptions
            {
                Endpoint = PubEndpoint, StreamFilter = filter, HelloEndpoint = hello ? CtlEndpoint : null, BackoffMinMs = 50, BackoffMaxMs = 400, ConnectTimeoutMs = 1000,
            });
        }

        /// <summary>Polls the mailbox like a game loop would and collects distinct frames.</summary>
        List<CoeffFrame> Collect(StreamReceiver rx, int want, int timeoutMs)
        {
            var got = new List<CoeffFrame>();
            long version = 0;
            var sw = Stopwatch.StartNew();
            while (got.Count < want && sw.ElapsedMilliseconds < timeoutMs)
            {
                var f = new CoeffFrame();
                if (rx.TryGetLatest(f, ref version)) got.Add(f);
                else Thread.Sleep(2);
            }
            return got;
        }

        [Test]
        public void HelloReportsTheArkitLayout()
        {
            StartSidecar();
            var hello = WaitReady();
            Assert.IsNotEmpty(hello.Server);
            Assert.IsTrue(hello.Layouts.ContainsKey("arkit52"), "hello layouts: " + string.Join(",", new List<string>(hello.Layouts.Keys).ToArray()));
            CollectionAssert.AreEqual(Payloads.Arkit, hello.Layouts["arkit52"]);
            _ctlClient.Ping();
        }

        [Test]
        public void ReceivesTimedFramesFromServeInput()
        {
            StartSidecar();
            _rx = NewReceiver("file");
            _rx.Start();
            var frames = Collect(_rx, 25, 30000);
            Assert.GreaterOrEqual(frames.Count, 25, "frames from --input; last error: " + _rx.LastError);
            Assert.AreEqual(0, _rx.MalformedDropped, _rx.LastError);
            // hello taught the layout before the first frame: nothing was skipped for want of names
            Assert.AreEqual(0, _rx.SkippedUnknownLayout);
            var first = frames[0];
            Assert.AreEqual("file", first.Stream);
            Assert.AreEqual("arkit52", first.Layout);
            Assert.IsNotNull(first.Names);
            Assert.AreEqual(first.Names.Length, first.Count);
            Assert.Greater(first.Fps, 0);
            bool varies = false;
            int jaw = Array.IndexOf(first.Names, "jawOpen");
            Assert.GreaterOrEqual(jaw, 0);
            double offset = first.T - first.Seq / first.Fps;
            for (int i = 0; i < frames.Count; i++)
            {
                var f = frames[i];
                if (i > 0)
                {
                    Assert.Greater(f.Seq, frames[i - 1].Seq, "seq must increase");
                    Assert.GreaterOrEqual(f.Wall, frames[i - 1].Wall, "wall must not go back");
                    if (f.Weights[jaw] != first.Weights[jaw]) varies = true;
                }
                // spec section 5: t = k / fps + audio_offset
                Assert.AreEqual(offset, f.T - f.Seq / f.Fps, 1e-3, "frame " + f.Seq + " t=" + f.T);
                for (int k = 0; k < f.Count; k++) Assert.IsFalse(float.IsNaN(f.Weights[k]) || float.IsInfinity(f.Weights[k]));
            }
            // frames are sent when due: on one machine the sidecar-to-client delay is small
            Assert.Less(_rx.LastLatencyMs, 2000.0);
            Assert.Greater(_rx.LastLatencyMs, -50.0);
            Assert.IsTrue(varies, "jawOpen never changed over " + frames.Count + " frames of speech");
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.StatusReceived > 0; }, 3000), "no status heartbeat within 3 s");
            Assert.AreEqual(ConnectionState.Connected, _rx.State);
        }

        [Test]
        public void BakesAClipWithTheRightFrameCountAndTiming()
        {
            StartSidecar();
            WaitReady();
            int sr;
            float[] samples = Env.ReadWav(_wav, out sr);
            double duration = samples.Length / (double)sr;

            var fromFile = _ctlClient.BakeFile(File.ReadAllBytes(_wav), 30, 60000);
            Assert.AreEqual(30.0, fromFile.Fps);
            Assert.AreEqual(52, fromFile.Names.Length);
            Assert.AreEqual(fromFile.FrameCount * 52, fromFile.Weights.Length);
            Assert.AreEqual(duration * 30, fromFile.FrameCount, 2.0, "frames for " + duration + " s at 30 fps");
            Assert.GreaterOrEqual(fromFile.T0, 0.0);
            Assert.LessOrEqual(fromFile.T0, 1.0 / 30 + 1e-6);

            // raw float samples at the file's own rate give the same track (the sidecar resamples)
            var fromF32 = _ctlClient.Bake(samples, sr, 30, 60000);
            Assert.AreEqual(fromFile.FrameCount, fromF32.FrameCount);
            double maxDiff = 0;
            for (int i = 0; i < fromFile.Weights.Length; i++) maxDiff = Math.Max(maxDiff, Math.Abs(fromFile.Weights[i] - fromF32.Weights[i]));
            Assert.Less(maxDiff, 1e-3, "f32 and file bakes of the same audio differ");

            var at60 = _ctlClient.Bake(samples, sr, 60, 60000);
            Assert.AreEqual(duration * 60, at60.FrameCount, 3.0);

            // a wrong argument is a clean error reply, and the connection stays usable
            var ex = Assert.Throws<RealtalkRequestException>(delegate
            {
                _ctlClient.Request(delegate (MsgPackWriter w, long id)
                {
                    Protocol.BeginRequest(w, "bake", id, 2);
                    w.WriteString("audio"); w.WriteBin(new byte[] { 1, 2, 3 }, 0, 3);
                    w.WriteString("format"); w.WriteString("mp9");
                }, 10000);
            });
            Assert.AreEqual("bad_request", ex.Code);
            _ctlClient.Ping();
        }

        static float[] Tile(float[] x, int n)
        {
            var y = new float[n];
            for (int i = 0; i < n; i++) y[i] = x[i % x.Length];
            return y;
        }

        [Test]
        public void ABacklogOfThreeSecondsIsPushedWithinTheLimitAndEverySampleArrives()
        {
            // MicrophoneStreamer after a hitch hands ControlClient.PushAudio seconds of audio at once: it must go
            // as pushes of at most hello.limits.push_seconds, with no too_large / quota error
            StartSidecar();
            WaitReady();
            Assert.AreEqual(0.5, _ctlClient.Limits.PushSeconds, "push_seconds from hello.limits");
            int sr;
            float[] speech = Env.ReadWav(_wav, out sr);
            foreach (int rate in new[] { sr, 48000 })
            {
                string id = "unity-backlog-" + rate;
                float[] x = Tile(rate == sr ? speech : PcmConvert.Resample(speech, sr, rate), 3 * rate);
                Assert.AreEqual(id, _ctlClient.StreamOpen(id, 30, rate));
                // one message with it all is what the sidecar refuses
                var ex = Assert.Throws<RealtalkRequestException>(delegate
                {
                    _ctlClient.Request(delegate (MsgPackWriter w, long rid) { Protocol.WritePushAudio(w, rid, id, x, 0, rate); }, 5000);
                });
                Assert.AreEqual("too_large", ex.Code);
                long received = _ctlClient.PushAudio(id, x, 0, x.Length, 10000);
                Assert.AreEqual(3L * rate, received, "samples the sidecar counted on " + id);
                _ctlClient.StreamClose(id, 5000);
            }
        }

        [Test]
        public void BakeUploadsFitTheSidecarsLimitOrAreRefusedBeforeUpload()
        {
            // a 1 MiB / 1 min sidecar: float at 48 kHz passes 1 MiB after 2.7 s, 16-bit after 5.5 s
            StartSidecar(" --max-bake-mb 1 --max-bake-minutes 1");
            WaitReady();
            Assert.AreEqual(1L << 20, _ctlClient.Limits.BakeBytes);
            Assert.AreEqual(60.0, _ctlClient.Limits.BakeSeconds, 1e-9);
            int sr;
            float[] speech = Env.ReadWav(_wav, out sr);
            float[] at16 = Tile(speech, 15 * sr);
            var reference = _ctlClient.Bake(at16, sr, 30, 60000);
            // 15 s at 48 kHz: 2.9 MB float, 1.4 MB 16-bit: resampled to 16 kHz (480 KB) before upload
            float[] at48 = PcmConvert.Resample(at16, sr, 48000);
            var track = _ctlClient.Bake(at48, 48000, 30, 60000);
            Assert.AreEqual(reference.FrameCount, track.FrameCount, 1.0);
            double sum = 0;
            int n = Math.Min(reference.Weights.Length, track.Weights.Length);
            for (int i = 0; i < n; i++) sum += Math.Abs(reference.Weights[i] - track.Weights[i]);
            Assert.Less(sum / n, 0.005, "a bake of the 48 kHz copy differs from the 16 kHz one");
            // 40 s at 16 kHz is 1.3 MB as 16-bit: refused here, with the reason, and the connection stays usable
            var sw = Stopwatch.StartNew();
            var ex = Assert.Throws<RealtalkRequestException>(delegate { _ctlClient.Bake(Tile(speech, 40 * sr), sr, 30, 60000); });
            Assert.AreEqual("too_large", ex.Code);
            StringAssert.Contains("--max-bake-mb", ex.Message);
            // longer than the duration limit: refused before any conversion
            ex = Assert.Throws<RealtalkRequestException>(delegate { _ctlClient.Bake(new float[61 * 48000], 48000, 30, 60000); });
            StringAssert.Contains("--max-bake-minutes", ex.Message);
            Assert.Less(sw.ElapsedMilliseconds, 1000, "the refusals are local");
            _ctlClient.Ping();
        }

        [Test]
        public void PushedAudioComesBackAsFramesOfThatStream()
        {
            // the path MicrophoneStreamer takes: stream_open, push_audio chunks, frames on coeffs/<id>, stream_close
            StartSidecar();
            WaitReady();
            _rx = NewReceiver("unity-push");
            _rx.Start();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.State == ConnectionState.Connected; }, 10000), _rx.LastError);
            Thread.Sleep(300);   // let the subscription reach the sidecar before the first frame (slow joiner)
            int sr;
            float[] samples = Env.ReadWav(_wav, out sr);
            Assert.AreEqual("unity-push", _ctlClient.StreamOpen("unity-push", 30, sr));
            int chunk = sr / 50;   // 20 ms, at real-time pace like a microphone
            int pushed = 0;
            Exception pushError = null;
            var pusher = new Thread(delegate ()
            {
                try
                {
                    var sw = Stopwatch.StartNew();
                    for (int i = 0; i + chunk <= samples.Length && i < 2 * sr; i += chunk)
                    {
                        _ctlClient.PushAudio("unity-push", samples, i, chunk);
                        Interlocked.Add(ref pushed, chunk);
                        int ahead = (int)(1000.0 * (i + chunk) / sr - sw.ElapsedMilliseconds);
                        if (ahead > 0) Thread.Sleep(ahead);
                    }
                }
                catch (Exception e) { pushError = e; }
            });
            pusher.Start();
            // the main thread polls the mailbox while audio flows, as a game loop would
            var frames = Collect(_rx, 15, 15000);
            pusher.Join(10000);
            Assert.IsNull(pushError, pushError == null ? "" : pushError.Message);
            Assert.GreaterOrEqual(frames.Count, 15, "frames of the pushed stream; last error " + _rx.LastError);
            foreach (var f in frames)
            {
                Assert.AreEqual("unity-push", f.Stream);
                Assert.AreEqual(30.0, f.Fps);
                Assert.AreEqual(f.Seq / 30.0, f.T, 0.05, "t of frame " + f.Seq);
                Assert.LessOrEqual(f.T, 2.0 + 1e-6, "a frame beyond the audio pushed");
            }
            _ctlClient.StreamClose("unity-push");
            var ex = Assert.Throws<RealtalkRequestException>(delegate { _ctlClient.PushAudio("unity-push", samples, 0, chunk); });
            Assert.AreEqual("unknown_stream", ex.Code);
        }

        [Test]
        public void ControlRequestsSurviveQuietGapsLongerThanTheHeartbeatTimeout()
        {
            // TalkingNpc's case: one ControlClient reused for lines far apart. Heartbeat timings shortened (200 ms / 800 ms)
            // so the gap can be 1.5 s; the defaults (1 s / 5 s) take the same code path.
            StartSidecar();
            WaitReady();
            var transport = new ZmtpTransport { HeartbeatIntervalMs = 200, HeartbeatTimeoutMs = 800 };
            using (var ctl = new ControlClient(CtlEndpoint, transport) { ClientName = "nunit-quiet" })
            {
                ctl.Ping();
                for (int gap = 0; gap < 2; gap++)
                {
                    Thread.Sleep(1500);   // nearly 2x the heartbeat timeout with nobody reading the socket
                    var sw = Stopwatch.StartNew();
                    ctl.Ping(3000);       // failed within ~1 ms with "heartbeat timeout" before the fix
                    Assert.Less(sw.ElapsedMilliseconds, 1000);
                }
                Assert.AreEqual(52, ctl.Hello().Layouts["arkit52"].Length);
            }
        }

        static bool PortAccepts(int port)
        {
            try
            {
                using (var c = new TcpClient())
                {
                    var ar = c.BeginConnect(IPAddress.Loopback, port, null, null);
                    if (!ar.AsyncWaitHandle.WaitOne(100)) return false;
                    c.EndConnect(ar);
                    return true;
                }
            }
            catch (SocketException) { return false; }
        }

        [Test]
        public void ReconnectsWithinHalfASecondOfTheSidecarComingBack()
        {
            StartSidecar();
            // default options: the back-off cap under test is the shipped one
            _rx = new StreamReceiver(new StreamReceiverOptions { Endpoint = PubEndpoint, HelloEndpoint = CtlEndpoint });
            _rx.Start();
            Assert.GreaterOrEqual(Collect(_rx, 5, 30000).Count, 5, "no frames before the restart: " + _rx.LastError);
            _sidecar.Kill();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.State != ConnectionState.Connected; }, 8000), "loss not noticed");
            Thread.Sleep(2500);   // long enough for an uncapped exponential back-off to reach seconds
            StartSidecar();
            var sw = Stopwatch.StartNew();
            while (!PortAccepts(_pub)) { Assert.Less(sw.ElapsedMilliseconds, 30000, "sidecar did not come back"); Thread.Sleep(5); }
            var back = Stopwatch.StartNew();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.Connects >= 2; }, 5000), _rx.LastError);
            long reconnectMs = back.ElapsedMilliseconds;
            long before = _rx.FramesReceived;
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.FramesReceived > before; }, 10000), "no frames after the restart");
            Console.WriteLine("reconnect after the sidecar's port was back: " + reconnectMs + " ms; first frame after "
                              + back.ElapsedMilliseconds + " ms");
            Assert.Less(reconnectMs, 500, "reconnect took " + reconnectMs + " ms after the sidecar was back");
        }

        [Test]
        public void SixtyHzConsumerSeesEveryFrameOfASixtyFpsStream()
        {
            StartSidecar(" --fps 60");
            _rx = NewReceiver("file");
            _rx.Start();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.FramesReceived > 10; }, 30000), "no frames: " + _rx.LastError);
            // a game loop at 60 Hz: each tick uses its scheduled time (as Unity's frame time does), sleeping in between
            var dst = new CoeffFrame();
            long version = 0;
            var seen = new List<long>();
            double start = StreamReceiver.NowSeconds() + 0.05;
            long receivedBefore = _rx.FramesReceived, gapsBefore = _rx.SeqGaps;
            for (int k = 0; k < 240; k++)
            {
                double tick = start + k / 60.0;
                int wait = (int)((tick - StreamReceiver.NowSeconds()) * 1000);
                if (wait > 0) Thread.Sleep(wait);
                if (_rx.TryGetNext(dst, ref version, tick)) seen.Add(dst.Seq);
            }
            long received = _rx.FramesReceived - receivedBefore;
            Assert.AreEqual(60.0, dst.Fps);
            Assert.AreEqual(gapsBefore, _rx.SeqGaps, "the link itself lost frames; the pacing cannot be judged");
            Assert.Greater(seen.Count, 200);
            for (int i = 1; i < seen.Count; i++)
                Assert.AreEqual(seen[i - 1] + 1, seen[i], "frame skipped after seq " + seen[i - 1] + " (" + seen.Count
                                + " shown of " + received + " received; pacer skipped " + _rx.Pacer.Skipped + ")");
            Console.WriteLine("60 Hz consumer: " + seen.Count + " frames shown in 240 ticks, " + received + " received, 0 skipped; "
                              + "queued " + (_rx.Pacer.MeanQueuedSeconds * 1000).ToString("F1") + " ms mean, "
                              + (_rx.Pacer.MaxQueuedSeconds * 1000).ToString("F1") + " ms max");
        }

        [Test]
        public void SteadyStateAllocatesNothingPerFrame()
        {
            StartSidecar();
            _rx = NewReceiver("file");
            _rx.Start();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.FramesReceived > 5 && _rx.StatusReceived > 0; }, 30000), _rx.LastError);
            // a typical FBX face: every ARKit shape as blendShape1.<name>, plus a few others
            var rig = new List<string>();
            foreach (var n in Payloads.Arkit) rig.Add("blendShape1." + n);
            rig.Add("blendShape1.Body_Fat"); rig.Add("blendShape1.Fcl_ALL_Neutral");
            var feed = new FaceFeed();
            var target = new BlendshapeTarget(rig.ToArray());
            target.Map.SmoothingSeconds = 0.03f;
            string lastText = null;
            int texts = 0;
            Action<double> frame = delegate (double now)
            {
                bool got = _rx.TryGetNext(feed.Frame, ref feed.Version, now);
                float[] input = feed.Input(got, now);
                if (input != null) target.Apply(feed.Frame, input, 1 / 60f);
            };
            double t0 = StreamReceiver.NowSeconds();
            // warm-up (JIT, buffers) until a status message has passed through too: its first effects are not steady state
            long statusAtStart = _rx.StatusReceived;
            int warm = 0;
            for (; warm < 60 || (_rx.StatusReceived == statusAtStart && warm < 240); warm++) { frame(t0 + warm / 60.0); Thread.Sleep(16); }
            long statusBefore = _rx.StatusReceived, rebuildsBefore = target.Map.Rebuilds;
            long allocated = 0;
            int frames = 0, ticks = 0;
            // at least 3 s, and on until two status messages have arrived inside the window (1 Hz, so about 3 s)
            for (int k = 0; k < 180 || (_rx.StatusReceived - statusBefore < 2 && k < 420); k++, ticks++)
            {
                double now = t0 + (warm + k) / 60.0;
                long a = GC.GetAllocatedBytesForCurrentThread();
                long v = feed.Version;
                frame(now);
                allocated += GC.GetAllocatedBytesForCurrentThread() - a;
                if (feed.Version != v) frames++;
                string text = _rx.StatusText;   // a HUD reading the status line every frame
                if (!ReferenceEquals(text, lastText)) { texts++; lastText = text; }
                Thread.Sleep(16);
            }
            Console.WriteLine("steady state: " + ticks + " ticks, " + frames + " frames, " + (_rx.StatusReceived - statusBefore)
                              + " status messages, " + allocated + " bytes allocated by the per-frame path, " + texts + " status texts");
            Assert.GreaterOrEqual(_rx.StatusReceived - statusBefore, 2, "no status message arrived during the measurement");
            Assert.Greater(frames, 60);
            Assert.AreEqual(52, target.Map.MappedCount);
            Assert.AreEqual(rebuildsBefore, target.Map.Rebuilds, "status messages made the mapping rebuild");
            Assert.AreEqual(0, allocated, "bytes allocated per frame in steady state");
            Assert.LessOrEqual(texts, 2 + ticks / 30, "StatusText was rebuilt " + texts + " times in " + ticks + " ticks");
        }

        [Test]
        public void ACurveSidecarIsReportedClearly()
        {
            string keys = Path.Combine(Path.GetTempPath(), "realtalk-curve-" + _pub);
            using (var mk = Process.Start(new ProcessStartInfo(_python, "-m realtalk_bridge serve --make-curve-keys \"" + keys + "\"")
            { UseShellExecute = false, WorkingDirectory = _repo, RedirectStandardOutput = true }))
            {
                mk.StandardOutput.ReadToEnd();
                Assert.IsTrue(mk.WaitForExit(60000));
            }
            string secret = Path.Combine(keys, "server.key_secret");
            Assert.IsTrue(File.Exists(secret), secret);
            // the key a NetMQ adapter needs, read from the public certificate, equals pyzmq's reading of it
            byte[] pub = CurveKeys.ReadPublicKeyFile(Path.Combine(keys, "server.key"));
            byte[] sec = CurveKeys.ReadSecretKey(File.ReadAllText(secret));
            string code = "import sys, zmq.auth, zmq.utils.z85 as z; p, s = zmq.auth.load_certificate(sys.argv[1]); print(z.decode(p).hex(), z.decode(s).hex())";
            using (var py = Process.Start(new ProcessStartInfo(_python, "-c \"" + code + "\" \"" + secret + "\"")
            { UseShellExecute = false, RedirectStandardOutput = true }))
            {
                string[] hex = py.StandardOutput.ReadToEnd().Trim().Split(' ');
                Assert.IsTrue(py.WaitForExit(30000));
                Assert.AreEqual(hex[0], BitConverter.ToString(pub).Replace("-", "").ToLowerInvariant());
                Assert.AreEqual(hex[1], BitConverter.ToString(sec).Replace("-", "").ToLowerInvariant());
            }
            StartSidecar(" --curve-secret-key \"" + secret + "\"");
            using (var ctl = new ControlClient(CtlEndpoint) { ConnectTimeoutMs = 1000 })
            {
                TransportException last = null;
                var sw = Stopwatch.StartNew();
                while (sw.ElapsedMilliseconds < 30000)
                {
                    try { ctl.Ping(1000); Assert.Fail("a CURVE sidecar answered a NULL-mechanism client"); }
                    catch (CurveRequiredException e) { last = e; break; }
                    catch (TransportException e) { last = e; Thread.Sleep(100); }   // not listening yet
                }
                Assert.IsInstanceOf<CurveRequiredException>(last, last == null ? "" : last.Message);
                StringAssert.Contains("requires CURVE", last.Message);
                StringAssert.Contains("NetMQ", last.Message);
            }
            _rx = NewReceiver(null, hello: false);
            _rx.Start();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.LastError.Contains("requires CURVE"); }, 5000), _rx.LastError);
            Assert.AreEqual(0, _rx.Connects);
            try { Directory.Delete(keys, true); } catch (IOException) { }
        }

        [Test]
        public void SeveralNpcsShareOneConnectionWithAStreamEach()
        {
            // the TalkingNpc crowd sample: one receiver (one SUB connection), one control connection, one stream per NPC
            StartSidecar();
            WaitReady();
            _rx = NewReceiver(null);
            _rx.Start();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.State == ConnectionState.Connected; }, 10000), _rx.LastError);
            string[] npcs = { "npc-a", "npc-b", "npc-c" };
            var dst = new CoeffFrame();
            var versions = new long[npcs.Length];
            foreach (var id in npcs) _rx.TryGetNext(id, dst, ref versions[0], StreamReceiver.NowSeconds());   // register
            Thread.Sleep(300);   // slow joiner
            int sr;
            float[] samples = Env.ReadWav(_wav, out sr);
            foreach (var id in npcs) Assert.AreEqual(id, _ctlClient.StreamOpen(id, 30, sr));
            int chunk = sr / 50;
            Exception pushError = null;
            var pusher = new Thread(delegate ()
            {
                try
                {
                    var sw = Stopwatch.StartNew();
                    for (int i = 0; i + chunk <= samples.Length && i < 2 * sr; i += chunk)
                    {
                        // each NPC speaks a different part of the recording, all on the one control connection
                        for (int n = 0; n < npcs.Length; n++)
                            _ctlClient.PushAudio(npcs[n], samples, (i + n * sr / 2) % (samples.Length - chunk), chunk);
                        int ahead = (int)(1000.0 * (i + chunk) / sr - sw.ElapsedMilliseconds);
                        if (ahead > 0) Thread.Sleep(ahead);
                    }
                }
                catch (Exception e) { pushError = e; }
            });
            pusher.Start();
            var counts = new int[npcs.Length];
            var sw2 = Stopwatch.StartNew();
            while (sw2.ElapsedMilliseconds < 6000 && (pusher.IsAlive || sw2.ElapsedMilliseconds < 2500))
            {
                for (int n = 0; n < npcs.Length; n++)
                {
                    if (!_rx.TryGetNext(npcs[n], dst, ref versions[n], StreamReceiver.NowSeconds())) continue;
                    Assert.AreEqual(npcs[n], dst.Stream, "a frame of another NPC's stream");
                    counts[n]++;
                }
                Thread.Sleep(16);
            }
            pusher.Join(5000);
            Assert.IsNull(pushError, pushError == null ? "" : pushError.Message);
            for (int n = 0; n < npcs.Length; n++)
                Assert.GreaterOrEqual(counts[n], 30, npcs[n] + " got " + counts[n] + " frames; last error " + _rx.LastError);
            Assert.AreEqual(1, _rx.Connects, "one connection for all NPCs");
            foreach (var id in npcs) _ctlClient.StreamClose(id);
        }

        /// <summary>Pushes a line on a worker (as TalkingNpc does) while this thread consumes the stream like a 60 Hz
        /// game loop; returns the frames shown.</summary>
        int SpeakAndWatch(LivePusher live, float[] line, int sr, string stream, ref long version)
        {
            Exception error = null;
            var worker = new Thread(delegate ()
            {
                try { live.PushLine(line, sr); } catch (Exception e) { error = e; }
            });
            worker.Start();
            var dst = new CoeffFrame();
            int n = 0;
            var quiet = Stopwatch.StartNew();
            while (worker.IsAlive || quiet.ElapsedMilliseconds < 600)
            {
                if (_rx.TryGetNext(stream, dst, ref version, StreamReceiver.NowSeconds())) { n++; quiet.Restart(); }
                Thread.Sleep(16);
            }
            Assert.IsNull(error, error == null ? "" : error.ToString());
            return n;
        }

        [Test]
        public void LiveLinesSurviveTheSidecarsIdleTimeoutBetweenThem()
        {
            // TalkingNpc's live mode: lines far apart; the sidecar closes an idle pushed stream (here after 1 s)
            StartSidecar(" --idle-timeout 1");
            WaitReady();
            _rx = NewReceiver(null);
            _rx.Start();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.State == ConnectionState.Connected; }, 10000), _rx.LastError);
            long version = 0;
            _rx.TryGetNext("npc-live", new CoeffFrame(), ref version, StreamReceiver.NowSeconds());   // register
            Thread.Sleep(300);
            int sr;
            float[] samples = Env.ReadWav(_wav, out sr);
            var line = new float[sr * 6 / 10];
            Array.Copy(samples, sr / 2, line, 0, line.Length);
            var live = new LivePusher(_ctlClient, "npc-live", 30);
            int first = SpeakAndWatch(live, line, sr, "npc-live", ref version);
            Thread.Sleep(2000);                      // > idle timeout: the sidecar has closed the stream
            int second = SpeakAndWatch(live, line, sr, "npc-live", ref version);   // reopens it and speaks
            Console.WriteLine("live lines: " + first + " and " + second + " frames, " + live.Reopens + " reopen(s)");
            Assert.AreEqual(1, live.Reopens, "the idle-closed stream was not reopened");
            Assert.GreaterOrEqual(first, 10);
            Assert.GreaterOrEqual(second, 10, "no frames for the line after the idle timeout");
            live.Close();
        }

        [Test]
        public void SurvivesASidecarRestart()
        {
            StartSidecar();
            _rx = NewReceiver(null, hello: false);   // names then come only from frames and status (SPEC 3.1)
            _rx.Start();
            Assert.GreaterOrEqual(Collect(_rx, 5, 30000).Count, 5, "no frames before the restart: " + _rx.LastError);
            Assert.AreEqual(0, _rx.MalformedDropped, _rx.LastError);
            WaitReady();

            _sidecar.Kill();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.State != ConnectionState.Connected; }, 8000), "loss not noticed");
            Assert.Throws<TransportException>(delegate { _ctlClient.Ping(500); });

            StartSidecar();
            long before = _rx.FramesReceived;
            Assert.GreaterOrEqual(Collect(_rx, 5, 30000).Count, 5, "no frames after the restart: " + _rx.LastError);
            Assert.Greater(_rx.FramesReceived, before);
            Assert.GreaterOrEqual(_rx.Reconnects, 1);
            WaitReady();     // the control client reconnects on its own too
            _ctlClient.Ping();
        }
    }

    [TestFixture]
    public class FaultInjectionTests
    {
        string _python, _repo, _peers;
        int _pub;
        ChildProcess _peer;
        StreamReceiver _rx;
        int _unhandled;
        string _unhandledText;

        void OnUnhandled(object sender, UnhandledExceptionEventArgs e)
        {
            Interlocked.Increment(ref _unhandled);
            _unhandledText = e.ExceptionObject.ToString();
        }

        [SetUp]
        public void SetUp()
        {
            // belt and braces beside ThreadFaults: any exception escaping any thread fails the test
            _unhandled = 0;
            AppDomain.CurrentDomain.UnhandledException += OnUnhandled;
            _python = Env.Need("REALTALK_PYTHON");
            _repo = Env.Need("REALTALK_REPO");
            _peers = Env.Need("REALTALK_PEERS");
            _pub = Env.FreePort();
        }

        [TearDown]
        public void TearDown()
        {
            if (_rx != null)
            {
                _rx.Stop();
                Assert.IsFalse(_rx.IsThreadAlive);
                _rx = null;
            }
            if (_peer != null) { _peer.Kill(); _peer = null; }
            AppDomain.CurrentDomain.UnhandledException -= OnUnhandled;
            Assert.AreEqual(0, _unhandled, _unhandledText);
        }

        void StartPeer(string mode)
        {
            _peer = new ChildProcess(_python, "\"" + _peers + "\" " + mode + " --pub tcp://127.0.0.1:" + _pub, _repo);
            _peer.Start();
        }

        [Test]
        public void MalformedMessagesAreDroppedAndTheThreadSurvives()
        {
            StartPeer("malformed");
            _rx = new StreamReceiver(new StreamReceiverOptions { Endpoint = "tcp://127.0.0.1:" + _pub, BackoffMinMs = 50, StaleAfterMs = 20000 });
            _rx.Start();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.FramesReceived >= 10 && _rx.MalformedDropped >= 20; }, 20000),
                "frames " + _rx.FramesReceived + ", dropped " + _rx.MalformedDropped + ", last error " + _rx.LastError);
            Assert.IsTrue(_rx.IsThreadAlive);
            Assert.AreEqual(0, _rx.ThreadFaults, _rx.LastError);
            Assert.AreEqual(1, _rx.Connects, "malformed payloads must not cost the connection");
            var f = new CoeffFrame();
            long v = 0;
            Assert.IsTrue(_rx.TryGetLatest(f, ref v));
            Assert.AreEqual("good", f.Stream);
            Assert.AreEqual(0.5f, f.Weights[17]);
        }

        [Test]
        public void HeartbeatsKeepAQuietLinkAliveAndDetectAHungPeer()
        {
            StartPeer("silent");
            var transport = new ZmtpTransport { HeartbeatIntervalMs = 200, HeartbeatTimeoutMs = 1200 };
            _rx = new StreamReceiver(new StreamReceiverOptions
            {
                Endpoint = "tcp://127.0.0.1:" + _pub, BackoffMinMs = 50, BackoffMaxMs = 200, StaleAfterMs = 60000,
            }, transport);
            _rx.Start();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.State == ConnectionState.Connected; }, 10000), _rx.LastError);
            Thread.Sleep(3000);   // 2.5x the heartbeat timeout with no messages at all: PONGs must keep it up
            Assert.AreEqual(ConnectionState.Connected, _rx.State, _rx.LastError);
            Assert.AreEqual(1, _rx.Connects, _rx.LastError);
            // freeze the peer: TCP stays open but PONGs stop, so only the heartbeat can notice
            _peer.Signal("STOP");
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.LastError.Contains("heartbeat"); }, 5000), "last error: " + _rx.LastError);
            _peer.Signal("CONT");
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.Reconnects >= 1 && _rx.State == ConnectionState.Connected; }, 8000), _rx.LastError);
        }

        [Test]
        public void OversizedMessagesCostTheConnectionNotTheThread()
        {
            StartPeer("oversize");
            var transport = new ZmtpTransport { MaxMessageSize = 64 * 1024 };
            _rx = new StreamReceiver(new StreamReceiverOptions
            {
                Endpoint = "tcp://127.0.0.1:" + _pub, BackoffMinMs = 20, BackoffMaxMs = 50, StaleAfterMs = 20000,
            }, transport);
            _rx.Start();
            Assert.IsTrue(Env.WaitFor(delegate { return _rx.Reconnects >= 2 && _rx.FramesReceived >= 5; }, 20000),
                "reconnects " + _rx.Reconnects + ", frames " + _rx.FramesReceived + ", last error " + _rx.LastError);
            Assert.IsTrue(_rx.IsThreadAlive);
            Assert.AreEqual(0, _rx.ThreadFaults, _rx.LastError);
        }

        [Test]
        public void ControlTimeoutsRecoverAndRepliesMatchTheirRequest()
        {
            _peer = new ChildProcess(_python, "\"" + _peers + "\" router --ctl tcp://127.0.0.1:" + _pub, _repo);
            _peer.Start();
            using (var ctl = new ControlClient("tcp://127.0.0.1:" + _pub) { ConnectTimeoutMs = 500 })
            {
                Func<double, long, Action<MsgPackWriter, long>> req = delegate (double delay, long n)
                {
                    return delegate (MsgPackWriter w, long id)
                    {
                        Protocol.BeginRequest(w, "ping", id, 2);
                        w.WriteString("delay"); w.WriteDouble(delay);
                        w.WriteString("n"); w.WriteInt(n);
                    };
                };
                byte[] reply = null;
                Assert.IsTrue(Env.WaitFor(delegate
                {
                    try { reply = ctl.Request(req(0, 1), 500); return true; }
                    catch (TransportException) { return false; }
                }, 15000), "router peer did not come up");
                Assert.AreEqual(1L, Protocol.ReadField(reply, 0, reply.Length, "echo"));
                // a slow reply times out ...
                Assert.Throws<TransportException>(delegate { ctl.Request(req(0.6, 2), 200); });
                // ... and the next request gets its own reply, not the late one
                reply = ctl.Request(req(0, 3), 2000);
                Assert.AreEqual(3L, Protocol.ReadField(reply, 0, reply.Length, "echo"));
                Thread.Sleep(700);
                reply = ctl.Request(req(0, 4), 2000);
                Assert.AreEqual(4L, Protocol.ReadField(reply, 0, reply.Length, "echo"));
            }
        }

        [Test]
        public void StopIsPromptWhileConnecting()
        {
            // nothing listens on this port: the thread is in its connect/backoff loop
            _rx = new StreamReceiver(new StreamReceiverOptions { Endpoint = "tcp://127.0.0.1:" + _pub, BackoffMinMs = 1000 });
            _rx.Start();
            Thread.Sleep(300);
            var sw = Stopwatch.StartNew();
            _rx.Stop();
            Assert.Less(sw.ElapsedMilliseconds, 1500);
            Assert.IsFalse(_rx.IsThreadAlive);
            Assert.AreEqual(ConnectionState.Stopped, _rx.State);
            Assert.IsNotEmpty(_rx.LastError);
        }
    }
}
