// The stream side: a background thread that keeps a SUB connection alive (reconnect with backoff, liveness from
// ZMTP heartbeats and the sidecar's 1 Hz status), decodes frames and hands the newest one to the main thread.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Threading;

namespace RealtalkBridge
{
    public enum ConnectionState { Stopped, Connecting, Connected, Reconnecting }

    public sealed class StreamReceiverOptions
    {
        public string Endpoint = Protocol.DefaultStreamEndpoint;
        /// <summary>Topic prefixes. status is needed for liveness and layouts.</summary>
        public string[] Topics = { "coeffs/", "status", "event/" };
        /// <summary>Only frames of this stream id reach the mailbox; null or "" = any stream.</summary>
        public string StreamFilter;
        public int ConnectTimeoutMs = 2000;
        public int BackoffMinMs = 100;
        /// <summary>Cap of the reconnect back-off. Refused connects on a host are cheap, and a restarted sidecar must
        /// drive the face again within half a second, so the cap stays small.</summary>
        public int BackoffMaxMs = 250;
        /// <summary>Reconnect when nothing at all (frames, status, PONG) arrived for this long. The sidecar sends
        /// status once per second, so 3 s of silence means it is gone or wedged.</summary>
        public int StaleAfterMs = 4000;
        public int MaxEventsQueued = 256;
        /// <summary>Optional control endpoint: after each (re)connect the thread sends `hello` there to learn the
        /// layouts at once (frames carry names only about once per second; without them a frame cannot be used).</summary>
        public string HelloEndpoint;
        /// <summary>Frames kept for paced consumption (TryGetNext); 0 = newest-only (TryGetLatest).</summary>
        public int PacedQueueCapacity = 32;
    }

    /// <summary>Receives the stream. Thread-safe getters; the receive thread never lets an exception escape.</summary>
    public sealed class StreamReceiver : IDisposable
    {
        readonly ITransport _transport;
        readonly StreamReceiverOptions _opt;
        readonly object _lock = new object();
        readonly Dictionary<string, string[]> _names = new Dictionary<string, string[]>();
        readonly Queue<EventMessage> _events = new Queue<EventMessage>();
        Thread _thread;
        volatile bool _running;
        volatile IFrameSocket _socket;
        volatile ConnectionState _state = ConnectionState.Stopped;

        // latest-frame hand-off: the thread decodes into _scratch, then swaps it with _latest under the lock
        CoeffFrame _scratch = new CoeffFrame();
        CoeffFrame _latest = new CoeffFrame();
        long _latestVersion;
        StatusMessage _status;
        readonly FramePacer _pacer;
        long _pacedVersion;
        // per-stream pacers for consumers that share this connection (several NPCs, one stream each)
        readonly Dictionary<string, FramePacer> _streamPacers = new Dictionary<string, FramePacer>(StringComparer.Ordinal);
        readonly Dictionary<string, long> _streamVersions = new Dictionary<string, long>(StringComparer.Ordinal);
        string _statusText;
        long _statusTextAtMs = long.MinValue;
        ConnectionState _statusTextState;

        long _frames, _malformed, _unnamed, _gaps, _reconnects, _connects, _statusCount, _eventsCount, _threadFaults;
        string _lastError = "";
        readonly Dictionary<string, long> _lastSeq = new Dictionary<string, long>();

        public StreamReceiver(StreamReceiverOptions options, ITransport transport = null)
        {
            _opt = options ?? new StreamReceiverOptions();
            _transport = transport ?? new ZmtpTransport();
            if (_opt.PacedQueueCapacity > 0) _pacer = new FramePacer(_opt.PacedQueueCapacity);
        }

        /// <summary>Seconds on a monotonic clock (the pacer's time base on both threads).</summary>
        public static double NowSeconds() { return Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency; }

        /// <summary>The paced queue behind TryGetNext (null when PacedQueueCapacity is 0).</summary>
        public FramePacer Pacer { get { return _pacer; } }

        public ConnectionState State { get { return _state; } }
        /// <summary>Receive time minus the frame's `wall` for the newest frame, in ms (same-machine clocks).</summary>
        public double LastLatencyMs { get { return Interlocked.CompareExchange(ref _latencyMs, 0, 0); } }
        double _latencyMs;
        public long FramesReceived { get { return Interlocked.Read(ref _frames); } }
        public long MalformedDropped { get { return Interlocked.Read(ref _malformed); } }
        /// <summary>Valid frames skipped because their layout's names were not known yet (SPEC 3.1: never guess).</summary>
        public long SkippedUnknownLayout { get { return Interlocked.Read(ref _unnamed); } }
        public long SeqGaps { get { return Interlocked.Read(ref _gaps); } }
        public long Reconnects { get { return Interlocked.Read(ref _reconnects); } }
        public long Connects { get { return Interlocked.Read(ref _connects); } }
        public long StatusReceived { get { return Interlocked.Read(ref _statusCount); } }
        public long EventsReceived { get { return Interlocked.Read(ref _eventsCount); } }
        /// <summary>Unexpected exceptions caught at the top of the receive loop (should stay 0; they are bugs).</summary>
        public long ThreadFaults { get { return Interlocked.Read(ref _threadFaults); } }
        public bool IsThreadAlive { get { var t = _thread; return t != null && t.IsAlive; } }
        public string LastError { get { lock (_lock) return _lastError; } }

        public void Start()
        {
            if (_running) return;
            _running = true;
            _state = ConnectionState.Connecting;
            _thread = new Thread(Run) { IsBackground = true, Name = "realtalk-stream" };
            _thread.Start();
        }

        /// <summary>Stops the thread and closes the socket; returns once the thread has ended (bounded wait).</summary>
        public void Stop()
        {
            _running = false;
            var s = _socket;
            if (s != null) { try { s.Dispose(); } catch (Exception) { } }
            var t = _thread;
            if (t != null && t != Thread.CurrentThread) t.Join(3000);
            _thread = null;
            _state = ConnectionState.Stopped;
        }

        public void Dispose() { Stop(); }

        /// <summary>Copies the newest frame into dst when it is newer than `version`; main-thread friendly, no allocation
        /// once dst's buffer is large enough.</summary>
        public bool TryGetLatest(CoeffFrame dst, ref long version)
        {
            lock (_lock)
            {
                if (_latestVersion == version || _latestVersion == 0) return false;
                _latest.CopyTo(dst);
                version = _latestVersion;
                return true;
            }
        }

        /// <summary>Paced consumption: copies the frame due now into dst (each frame of the stream once, in order, when
        /// called once per rendered frame at the stream's rate or faster). Main thread; no allocation once dst is sized.
        /// Falls back to the newest frame when PacedQueueCapacity is 0.</summary>
        public bool TryGetNext(CoeffFrame dst, ref long version)
        {
            return TryGetNext(dst, ref version, NowSeconds());
        }

        /// <summary>As TryGetNext, at an explicit consumer time in seconds on the NowSeconds clock (e.g. the render
        /// frame's start: evenly spaced at a steady frame rate even when the thread wakes late).</summary>
        public bool TryGetNext(CoeffFrame dst, ref long version, double now)
        {
            if (_pacer == null) return TryGetLatest(dst, ref version);
            if (!_pacer.TryNext(dst, now)) return false;
            version = ++_pacedVersion;
            return true;
        }

        /// <summary>Paced frames of one stream id, for several consumers sharing this receiver (one connection, one
        /// stream each: e.g. NPCs pushing their own audio). The first call registers the stream; frames that arrived
        /// before it are not kept. Works with StreamFilter empty (all streams), or equal to this id.</summary>
        public bool TryGetNext(string stream, CoeffFrame dst, ref long version, double now)
        {
            FramePacer p;
            lock (_lock)
            {
                if (!_streamPacers.TryGetValue(stream, out p))
                {
                    p = new FramePacer(Math.Max(2, _opt.PacedQueueCapacity));
                    _streamPacers[stream] = p;
                    _streamVersions[stream] = 0;
                }
            }
            if (!p.TryNext(dst, now)) return false;
            lock (_lock)
            {
                long v = _streamVersions[stream] + 1;
                _streamVersions[stream] = v;
                version = v;
            }
            return true;
        }

        public StatusMessage LatestStatus { get { lock (_lock) return _status; } }

        /// <summary>One line for a HUD: state, counters, last error. Rebuilt at most twice a second (and on a state
        /// change), so reading it every frame does not allocate every frame. Main thread.</summary>
        public string StatusText
        {
            get
            {
                long now = Stopwatch.GetTimestamp() * 1000 / Stopwatch.Frequency;
                var st = _state;
                if (_statusText != null && st == _statusTextState && now - _statusTextAtMs < 500) return _statusText;
                _statusTextAtMs = now;
                _statusTextState = st;
                _statusText = st + ": " + FramesReceived + " frames, " + SeqGaps + " gaps, " + MalformedDropped + " dropped, "
                              + LastLatencyMs.ToString("F1", System.Globalization.CultureInfo.InvariantCulture) + " ms"
                              + (st == ConnectionState.Connected ? "" : " (" + LastError + ")");
                return _statusText;
            }
        }

        public bool TryDequeueEvent(out EventMessage ev)
        {
            lock (_lock)
            {
                if (_events.Count == 0) { ev = null; return false; }
                ev = _events.Dequeue();
                return true;
            }
        }

        /// <summary>Names learned for a layout (from frames or status), or null.</summary>
        public string[] NamesFor(string layout)
        {
            lock (_lock)
            {
                string[] n;
                return _names.TryGetValue(layout, out n) ? n : null;
            }
        }

        static readonly DateTime UnixEpoch = new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc);

        void SetError(string e) { lock (_lock) _lastError = e; }

        void Run()
        {
            int backoff = _opt.BackoffMinMs;
            var frames = new List<byte[]>();
            bool everConnected = false;
            while (_running)
            {
                IFrameSocket sock = null;
                try
                {
                    sock = _transport.CreateSubscriber();
                    _socket = sock;
                    if (!_running) break;
                    sock.Connect(_opt.Endpoint, _opt.ConnectTimeoutMs);
                    foreach (var topic in _opt.Topics)
                    {
                        // with a stream filter, let the sidecar drop other streams' frames before they cross the wire
                        // ("coeffs/mic" is a prefix of "coeffs/mic2" too: Handle still compares the id exactly)
                        bool narrow = topic == "coeffs/" && !string.IsNullOrEmpty(_opt.StreamFilter);
                        sock.Subscribe(narrow ? topic + _opt.StreamFilter : topic);
                    }
                    _state = ConnectionState.Connected;
                    Interlocked.Increment(ref _connects);
                    if (everConnected) Interlocked.Increment(ref _reconnects);
                    everConnected = true;
                    // frames arriving meanwhile wait in the socket; hello only teaches the layouts sooner
                    if (!string.IsNullOrEmpty(_opt.HelloEndpoint)) SeedFromHello();
                    long lastTraffic = Environment.TickCount;
                    while (_running)
                    {
                        if (sock.TryReceive(frames, 200))
                        {
                            // back-off resets only once the link carried a message: a peer that accepts and then
                            // drops connections must not be hammered every 100 ms
                            backoff = _opt.BackoffMinMs;
                            lastTraffic = Environment.TickCount;
                            Handle(frames);
                        }
                        else if (unchecked(Environment.TickCount - lastTraffic) > _opt.StaleAfterMs)
                            throw new TransportException("no messages for " + _opt.StaleAfterMs + " ms");
                    }
                }
                catch (TransportException e) { SetError(e.Message); }
                catch (ObjectDisposedException e) { SetError(e.Message); }
                catch (Exception e)
                {
                    // Never let anything kill the thread: count it, report it, reconnect.
                    Interlocked.Increment(ref _threadFaults);
                    SetError(e.GetType().Name + ": " + e.Message);
                }
                finally
                {
                    _socket = null;
                    if (sock != null) { try { sock.Dispose(); } catch (Exception) { } }
                }
                if (!_running) break;
                _state = ConnectionState.Reconnecting;
                SleepInterruptible(backoff);
                backoff = Math.Min(_opt.BackoffMaxMs, backoff * 2);
            }
            _state = ConnectionState.Stopped;
        }

        void SeedFromHello()
        {
            try
            {
                using (var ctl = new ControlClient(_opt.HelloEndpoint, _transport) { ConnectTimeoutMs = 1000 })
                {
                    var st = ctl.Hello(1500);
                    lock (_lock)
                    {
                        foreach (var kv in st.Layouts)
                        {
                            string[] old;
                            if (!_names.TryGetValue(kv.Key, out old) || !Protocol.SameNames(old, kv.Value)) _names[kv.Key] = kv.Value;
                        }
                        if (_status == null) _status = st;
                    }
                }
            }
            catch (Exception e)
            {
                // not fatal: names also come with frames and status
                SetError("hello on " + _opt.HelloEndpoint + " failed: " + e.Message);
            }
        }

        void SleepInterruptible(int ms)
        {
            int end = Environment.TickCount + ms;
            while (_running && unchecked(end - Environment.TickCount) > 0) Thread.Sleep(Math.Min(50, Math.Max(1, unchecked(end - Environment.TickCount))));
        }

        static bool TopicStarts(byte[] topic, string prefix)
        {
            if (topic.Length < prefix.Length) return false;
            for (int i = 0; i < prefix.Length; i++) if (topic[i] != (byte)prefix[i]) return false;
            return true;
        }

        void Malformed(string why)
        {
            Interlocked.Increment(ref _malformed);
            SetError("dropped a malformed message: " + why);
        }

        void Handle(List<byte[]> frames)
        {
            if (frames.Count != 2) { Malformed("expected [topic, payload], got " + frames.Count + " frames"); return; }
            byte[] topic = frames[0], payload = frames[1];
            string error;
            if (TopicStarts(topic, "coeffs/"))
            {
                bool ok;
                lock (_lock) ok = Protocol.TryDecodeCoeffs(payload, 0, payload.Length, _scratch, _names, out error);
                if (!ok) { Malformed(error); return; }
                if (_scratch.Names == null) { Interlocked.Increment(ref _unnamed); return; }
                long prev;
                if (_lastSeq.TryGetValue(_scratch.Stream, out prev) && _scratch.Seq > prev + 1) Interlocked.Increment(ref _gaps);
                _lastSeq[_scratch.Stream] = _scratch.Seq;
                if (_scratch.Wall > 0)
                {
                    double now = (DateTime.UtcNow - UnixEpoch).TotalSeconds;
                    Interlocked.Exchange(ref _latencyMs, (now - _scratch.Wall) * 1000.0);
                }
                Interlocked.Increment(ref _frames);
                FramePacer own;
                lock (_lock) _streamPacers.TryGetValue(_scratch.Stream, out own);
                if (own != null) own.Push(_scratch, NowSeconds());
                if (!string.IsNullOrEmpty(_opt.StreamFilter) && _scratch.Stream != _opt.StreamFilter) return;
                if (_pacer != null) _pacer.Push(_scratch, NowSeconds());
                lock (_lock)
                {
                    var t = _latest; _latest = _scratch; _scratch = t;
                    _latestVersion++;
                }
            }
            else if (TopicStarts(topic, "status"))
            {
                var st = new StatusMessage();
                if (!Protocol.TryDecodeStatus(payload, 0, payload.Length, st, out error)) { Malformed(error); return; }
                Interlocked.Increment(ref _statusCount);
                lock (_lock)
                {
                    _status = st;
                    // keep the array we already hold when the names are unchanged: a new array every second would
                    // make every consumer rebuild its mapping (and reset its smoothing)
                    foreach (var kv in st.Layouts)
                    {
                        string[] old;
                        if (!_names.TryGetValue(kv.Key, out old) || !Protocol.SameNames(old, kv.Value)) _names[kv.Key] = kv.Value;
                    }
                }
            }
            else if (TopicStarts(topic, "event/"))
            {
                var ev = new EventMessage();
                if (!Protocol.TryDecodeEvent(payload, 0, payload.Length, ev, out error)) { Malformed(error); return; }
                Interlocked.Increment(ref _eventsCount);
                lock (_lock)
                {
                    if (_events.Count >= _opt.MaxEventsQueued) _events.Dequeue();
                    _events.Enqueue(ev);
                }
            }
            // other topics (video/...) are not this receiver's business
        }
    }
}
