// The control side: request / reply over a DEALER socket. Connects lazily, matches replies by id, and drops the
// connection after any failure so the next request starts clean (that is the reconnect policy for control).
using System;
using System.Collections.Generic;
using System.Threading;

namespace RealtalkBridge
{
    public sealed class RealtalkRequestException : Exception
    {
        public readonly string Code;
        public RealtalkRequestException(string code, string message) : base(code + ": " + message) { Code = code; }
    }

    /// <summary>Blocking request/reply client. Thread-safe (one request at a time); call it off the main thread
    /// for long ops such as bake.</summary>
    public sealed class ControlClient : IDisposable
    {
        public string Endpoint;
        public int ConnectTimeoutMs = 2000;
        public string ClientName = "realtalk-unity";

        readonly ITransport _transport;
        readonly object _lock = new object();
        readonly MsgPackWriter _writer = new MsgPackWriter(1024);
        readonly List<byte[]> _frames = new List<byte[]>();
        IFrameSocket _socket;
        long _nextId = 1;
        volatile SidecarLimits _limits;                             // from the last hello; null before one
        readonly Dictionary<string, int> _rates = new Dictionary<string, int>();   // stream id -> sample rate
        volatile bool _disposed;

        public ControlClient(string endpoint = Protocol.DefaultControlEndpoint, ITransport transport = null)
        {
            Endpoint = endpoint;
            _transport = transport ?? new ZmtpTransport();
        }

        public void Dispose()
        {
            _disposed = true;
            var s = _socket;
            if (s != null) { try { s.Dispose(); } catch (Exception) { } }
            _socket = null;
        }

        void Drop()
        {
            var s = _socket;
            _socket = null;
            if (s != null) { try { s.Dispose(); } catch (Exception) { } }
        }

        /// <summary>Sends the request in `build` (given the writer and the request id) and returns the reply payload.
        /// Throws TransportException (no connection / timeout) or RealtalkRequestException (ok: false).</summary>
        public byte[] Request(Action<MsgPackWriter, long> build, int timeoutMs)
        {
            lock (_lock)
            {
                if (_disposed) throw new ObjectDisposedException("ControlClient");
                long id = _nextId++;
                _writer.Clear();
                build(_writer, id);
                byte[] payload = _writer.ToArray();
                try
                {
                    if (_socket == null)
                    {
                        var s = _transport.CreateDealer();
                        try { s.Connect(Endpoint, ConnectTimeoutMs); }
                        catch (Exception) { s.Dispose(); throw; }
                        _socket = s;
                    }
                    _socket.Send(new[] { new byte[0], payload });
                    int deadline = Environment.TickCount + timeoutMs;
                    var reply = new Reply();
                    string idText = id.ToString(System.Globalization.CultureInfo.InvariantCulture);
                    while (true)
                    {
                        int left = unchecked(deadline - Environment.TickCount);
                        if (left <= 0) throw new TransportException("no reply to request " + idText + " within " + timeoutMs + " ms");
                        if (!_socket.TryReceive(_frames, left)) continue;
                        byte[] body = _frames[_frames.Count - 1];
                        string error;
                        if (!Protocol.TryDecodeReply(body, 0, body.Length, reply, out error)) continue; // not for us / garbage
                        if (reply.Id != null && reply.Id != idText) continue; // a late reply to an earlier, timed-out request
                        if (!reply.Ok) throw new RealtalkRequestException(reply.ErrorCode, reply.ErrorMessage);
                        return body;
                    }
                }
                catch (TransportException) { Drop(); throw; }
            }
        }

        public StatusMessage Hello(int timeoutMs = 3000)
        {
            string name = ClientName;
            byte[] body = Request(delegate (MsgPackWriter w, long id) { Protocol.WriteHello(w, id, name); }, timeoutMs);
            var st = new StatusMessage();
            string error;
            if (!Protocol.TryDecodeStatus(body, 0, body.Length, st, out error)) throw new TransportException("bad hello reply: " + error);
            _limits = SidecarLimits.FromHello(body, 0, body.Length);
            return st;
        }

        /// <summary>The sidecar's limits from the last hello (the SPEC defaults before one).</summary>
        public SidecarLimits Limits { get { return _limits ?? new SidecarLimits(); } }

        /// <summary>Limits for an upload: asks hello once when none was answered yet (an older sidecar that
        /// refuses it gets the defaults).</summary>
        SidecarLimits EnsureLimits(int timeoutMs)
        {
            if (_limits == null)
            {
                try { Hello(Math.Min(timeoutMs, 3000)); }
                catch (RealtalkRequestException) { _limits = new SidecarLimits(); }
            }
            return _limits;
        }

        public void Ping(int timeoutMs = 2000)
        {
            Request(delegate (MsgPackWriter w, long id) { Protocol.BeginRequest(w, "ping", id, 0); }, timeoutMs);
        }

        static CoefficientTrack DecodeTrack(byte[] body)
        {
            var track = new CoefficientTrack();
            string error;
            if (!Protocol.TryDecodeBake(body, 0, body.Length, track, out error)) throw new TransportException("bad bake reply: " + error);
            return track;
        }

        /// <summary>The model's rate: audio above it is resampled to it when the upload would not fit otherwise.</summary>
        public const int ModelSampleRate = 16000;

        /// <summary>Mono float samples at any rate -> timed coefficient track. Uploaded as 16-bit PCM; when that
        /// passes the sidecar's bake limit (`hello.limits`, 32 MiB by default: 5.8 min at 48 kHz) audio above 16 kHz
        /// is resampled to 16 kHz first (17 min). Longer audio is refused here with code `too_large`, before
        /// upload (sent anyway, the sidecar would drop the connection unanswered).</summary>
        public CoefficientTrack Bake(float[] samples, int sampleRate, double fps = 30, int timeoutMs = 120000)
        {
            if (samples == null) throw new ArgumentNullException("samples");
            if (sampleRate <= 0) throw new ArgumentException("sampleRate must be positive");
            var limits = EnsureLimits(timeoutMs);
            double seconds = (double)samples.Length / sampleRate;
            if (seconds > limits.BakeSeconds)
                throw new RealtalkRequestException("too_large", string.Format(System.Globalization.CultureInfo.InvariantCulture,
                    "the clip is {0:0.0} min; this sidecar bakes at most {1:0.0} min (serve --max-bake-minutes): split it",
                    seconds / 60, limits.BakeSeconds / 60));
            int rate = sampleRate;
            long budget = limits.BakeBytes - SidecarLimits.Overhead;
            if (2L * samples.Length > budget && sampleRate > ModelSampleRate)
            {
                samples = PcmConvert.Resample(samples, sampleRate, ModelSampleRate);
                rate = ModelSampleRate;
            }
            if (2L * samples.Length > budget)
                throw new RealtalkRequestException("too_large", string.Format(System.Globalization.CultureInfo.InvariantCulture,
                    "the clip is {0:0.0} min: {1:0.0} MiB as 16-bit audio at {2} Hz, and this sidecar takes bake uploads up to " +
                    "{3:0.0} MiB (serve --max-bake-mb): split it", seconds / 60, 2.0 * samples.Length / (1 << 20), rate,
                    limits.BakeBytes / (double)(1 << 20)));
            byte[] pcm = PcmConvert.ToS16LE(samples, 0, samples.Length);
            return DecodeTrack(Request(delegate (MsgPackWriter w, long id)
            {
                Protocol.WriteBakeS16(w, id, pcm, rate, fps);
            }, timeoutMs));
        }

        /// <summary>The bytes of a wav / flac / ogg file -> timed coefficient track.</summary>
        public CoefficientTrack BakeFile(byte[] file, double fps = 30, int timeoutMs = 120000)
        {
            if (file == null) throw new ArgumentNullException("file");
            return DecodeTrack(Request(delegate (MsgPackWriter w, long id) { Protocol.WriteBakeFile(w, id, file, fps); }, timeoutMs));
        }

        /// <summary>Opens a pushed audio stream; returns the stream id the sidecar uses.</summary>
        public string StreamOpen(string stream, int fps, int sampleRate, int timeoutMs = 3000)
        {
            byte[] body = Request(delegate (MsgPackWriter w, long id) { Protocol.WriteStreamOpen(w, id, stream, fps, sampleRate); }, timeoutMs);
            string sid = Protocol.ReadField(body, 0, body.Length, "stream") as string ?? stream;
            lock (_rates) { if (_rates.Count > 256) _rates.Clear(); _rates[sid] = sampleRate; }
            return sid;
        }

        /// <summary>Pushes `count` samples (float, at the stream's rate). A backlog longer than one message may carry
        /// (0.5 s, `hello.limits`; after a hitch) goes as several pushes, each waiting for its reply: the sidecar's
        /// flow control. Returns the sidecar's count of samples received on the stream (-1 when it sent none).</summary>
        public long PushAudio(string stream, float[] samples, int offset, int count, int timeoutMs = 3000)
        {
            int rate;
            lock (_rates) { if (!_rates.TryGetValue(stream, out rate)) rate = 8000; }   // not opened here: the lowest rate, always safe
            int chunk = Limits.MaxPushSamples(rate, 4);
            long received = -1;
            int done = 0;
            do
            {
                int i = offset + done, n = Math.Min(chunk, count - done);
                byte[] body = Request(delegate (MsgPackWriter w, long id) { Protocol.WritePushAudio(w, id, stream, samples, i, n); }, timeoutMs);
                object got = Protocol.ReadField(body, 0, body.Length, "samples");
                if (got is long) received = (long)got;
                done += n;
            } while (done < count);
            return received;
        }

        public void StreamClose(string stream, int timeoutMs = 3000)
        {
            Request(delegate (MsgPackWriter w, long id) { Protocol.WriteStreamClose(w, id, stream); }, timeoutMs);
        }
    }
}
