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
            return st;
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

        /// <summary>Mono float samples at any rate -> timed coefficient track (the sidecar resamples).</summary>
        public CoefficientTrack Bake(float[] samples, int sampleRate, double fps = 30, int timeoutMs = 120000)
        {
            if (samples == null) throw new ArgumentNullException("samples");
            if (sampleRate <= 0) throw new ArgumentException("sampleRate must be positive");
            return DecodeTrack(Request(delegate (MsgPackWriter w, long id)
            {
                Protocol.WriteBakeF32(w, id, samples, 0, samples.Length, sampleRate, fps);
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
            return Protocol.ReadField(body, 0, body.Length, "stream") as string ?? stream;
        }

        public void PushAudio(string stream, float[] samples, int offset, int count, int timeoutMs = 3000)
        {
            Request(delegate (MsgPackWriter w, long id) { Protocol.WritePushAudio(w, id, stream, samples, offset, count); }, timeoutMs);
        }

        public void StreamClose(string stream, int timeoutMs = 3000)
        {
            Request(delegate (MsgPackWriter w, long id) { Protocol.WriteStreamClose(w, id, stream); }, timeoutMs);
        }
    }
}
