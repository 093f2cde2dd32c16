// Frame pacing on the consumer side. The sidecar's model steps every 40 ms, so frames can arrive in bursts (2-3
// within a few ms at 60 fps). A game that shows only the newest packet each rendered frame then skips frames. The
// pacer keeps a small bounded queue and releases frames by their own timestamps (`t`), one stream-time step per
// rendered frame: a consumer at the stream's rate sees every frame, a slower one skips only what it must, and the
// added delay stays bounded (MaxLagSeconds). Pure logic with an explicit clock, so it is tested with exact timings.
using System;

namespace RealtalkBridge
{
    public sealed class FramePacer
    {
        /// <summary>The newest queued frame may be at most this far (stream time) ahead of the playhead; beyond it the
        /// pacer jumps forward (skipping) to bound latency after a stall.</summary>
        public double MaxLagSeconds = 0.15;
        /// <summary>Another stream's frames are accepted only after the current one was quiet this long.</summary>
        public double StreamSwitchSeconds = 0.5;

        readonly object _lock = new object();
        readonly CoeffFrame[] _ring;
        readonly long[] _queuedAt;   // Stopwatch ticks at Push, for the delay statistic only
        double _delaySum; long _delayCount; double _delayMax;
        int _head, _count;
        string _stream;
        double _lastPushT = double.NaN, _lastPushNow = double.NegativeInfinity;
        // playhead (stream seconds), what was shown last, the consumer's clock
        bool _started;
        double _play, _lastShownT, _lastNow, _avgDt = -1;
        double _interval = 1.0 / 30;
        long _shown, _skipped, _overflow, _otherStream, _resets;

        public FramePacer(int capacity = 32)
        {
            if (capacity < 2) throw new ArgumentException("capacity must be at least 2");
            _ring = new CoeffFrame[capacity];
            _queuedAt = new long[capacity];
            for (int i = 0; i < capacity; i++) _ring[i] = new CoeffFrame();
        }

        public int Capacity { get { return _ring.Length; } }
        public int Queued { get { lock (_lock) return _count; } }
        public long Shown { get { lock (_lock) return _shown; } }
        /// <summary>Frames passed over because the consumer was slower than the stream or had fallen behind.</summary>
        public long Skipped { get { lock (_lock) return _skipped; } }
        /// <summary>Frames dropped because the queue was full (nobody consumed for a while).</summary>
        public long Overflowed { get { lock (_lock) return _overflow; } }
        public long OtherStreamDropped { get { lock (_lock) return _otherStream; } }
        /// <summary>Restarts of the playhead: a new stream, or `t` jumping back (sidecar restart, looped file).</summary>
        public long Resets { get { lock (_lock) return _resets; } }
        /// <summary>Mean and largest time shown frames spent in the queue (the delay pacing adds), in seconds.</summary>
        public double MeanQueuedSeconds { get { lock (_lock) return _delayCount == 0 ? 0 : _delaySum / _delayCount; } }
        public double MaxQueuedSeconds { get { lock (_lock) return _delayMax; } }

        public void Clear()
        {
            lock (_lock) { _count = 0; _head = 0; _started = false; _stream = null; _lastPushT = double.NaN; }
        }

        CoeffFrame At(int i) { return _ring[(_head + i) % _ring.Length]; }

        void DropOldest() { _head = (_head + 1) % _ring.Length; _count--; }

        void Restart()
        {
            _count = 0; _head = 0; _started = false; _avgDt = -1;
            _resets++;
        }

        /// <summary>Queues a copy of `frame` (any thread). `now` is the receiver's monotonic clock in seconds.</summary>
        public void Push(CoeffFrame frame, double now)
        {
            lock (_lock)
            {
                if (_stream != null && frame.Stream != _stream)
                {
                    if (now - _lastPushNow < StreamSwitchSeconds) { _otherStream++; return; }
                    Restart();
                    _lastPushT = double.NaN;
                }
                // t going back, or a jump of more than a second: a new timeline (restart, loop); never mix the two
                if (!double.IsNaN(_lastPushT))
                {
                    if (Math.Abs(frame.T - _lastPushT) < 1e-9) return;   // a duplicate
                    if (frame.T < _lastPushT || frame.T > _lastPushT + 1.0) Restart();
                }
                if (_count == _ring.Length) { DropOldest(); _overflow++; }
                int slot = (_head + _count) % _ring.Length;
                frame.CopyTo(_ring[slot]);
                _queuedAt[slot] = System.Diagnostics.Stopwatch.GetTimestamp();
                _count++;
                if (frame.Fps > 0) _interval = 1.0 / frame.Fps;
                else if (!double.IsNaN(_lastPushT) && frame.T > _lastPushT) _interval = Math.Max(1.0 / 240, frame.T - _lastPushT);
                _stream = frame.Stream;
                _lastPushT = frame.T;
                _lastPushNow = now;
            }
        }

        /// <summary>Copies the frame due at consumer time `now` (seconds, monotonic; e.g. the render frame's time) into
        /// dst and returns true, or returns false when no new frame is due. Call once per rendered frame.</summary>
        public bool TryNext(CoeffFrame dst, double now)
        {
            lock (_lock)
            {
                double iv = _interval;
                if (!_started)
                {
                    if (_count == 0) return false;
                    // start with the newest frame: lowest latency; the queue then fills as bursts arrive
                    while (_count > 1) { DropOldest(); _skipped++; }
                    _started = true;
                    _lastNow = now;
                    _avgDt = -1;
                    return Show(dst, out _play);
                }
                double dt = Math.Min(1.0, Math.Max(0.0, now - _lastNow));
                _lastNow = now;
                _avgDt = _avgDt < 0 ? dt : _avgDt + 0.1 * (dt - _avgDt);
                _play += dt;
                double carry = 0.25 * iv;
                if (_count == 0)
                {
                    // starved: the playhead waits near the last shown frame, so the next arrival is shown, not skipped
                    _play = Math.Min(_play, _lastShownT + carry);
                    return false;
                }
                double newest = At(_count - 1).T;
                if (newest - _play > MaxLagSeconds) _play = newest - 0.5 * MaxLagSeconds;   // fell behind: catch up
                // the newest queued frame within half a frame of the playhead; frames before it are skipped
                double tol = 0.5 * iv;
                int pick = -1;
                for (int i = 0; i < _count; i++)
                {
                    if (At(i).T <= _play + tol) pick = i;
                    else break;
                }
                if (pick < 0) return false;
                for (int i = 0; i < pick; i++) { DropOldest(); _skipped++; }
                double shownT;
                bool ok = Show(dst, out shownT);
                // a consumer that keeps up must not let tick jitter add up into a skip: the playhead stays within a
                // quarter frame of what it shows. A slower consumer keeps real time (its skips are unavoidable).
                if (_avgDt <= 1.05 * iv) _play = Math.Min(_play, shownT + carry);
                return ok;
            }
        }

        bool Show(CoeffFrame dst, out double shownT)
        {
            var f = At(0);
            f.CopyTo(dst);
            double waited = (System.Diagnostics.Stopwatch.GetTimestamp() - _queuedAt[_head]) / (double)System.Diagnostics.Stopwatch.Frequency;
            _delaySum += waited; _delayCount++;
            if (waited > _delayMax) _delayMax = waited;
            shownT = f.T;
            _lastShownT = f.T;
            DropOldest();
            _shown++;
            return true;
        }
    }
}
