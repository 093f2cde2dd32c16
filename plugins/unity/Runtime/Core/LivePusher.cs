// Pushes one dialogue line's audio to a pushed stream at real-time pace (the TalkingNpc live mode, or any voice that
// speaks on its own stream). Engine-free and blocking: run it on a worker thread. It keeps the stream open across
// lines and reopens it when the sidecar has closed it (idle timeout between lines, sidecar restart) or the sample
// rate changes.
using System;
using System.Diagnostics;
using System.Threading;

namespace RealtalkBridge
{
    public sealed class LivePusher
    {
        public readonly ControlClient Control;
        public readonly string Stream;
        public readonly int Fps;
        /// <summary>Chunk length in seconds (the microphone-like pace the sidecar expects).</summary>
        public double ChunkSeconds = 0.02;

        int _openRate;          // 0 = not open (as far as we know)
        long _reopens;

        public LivePusher(ControlClient control, string stream, int fps = 30)
        {
            if (control == null) throw new ArgumentNullException("control");
            if (!Protocol.IsValidStreamId(stream)) throw new ArgumentException("invalid stream id: " + stream);
            Control = control; Stream = stream; Fps = fps;
        }

        /// <summary>Times the stream had to be opened again because the sidecar no longer had it.</summary>
        public long Reopens { get { return Interlocked.Read(ref _reopens); } }
        public bool IsOpen { get { return _openRate != 0; } }

        /// <summary>Pushes `samples` (mono, `sampleRate`) in real time; returns early when `keepGoing` turns false.
        /// Throws TransportException / RealtalkRequestException when the sidecar cannot be reached or refuses.</summary>
        public void PushLine(float[] samples, int sampleRate, Func<bool> keepGoing = null)
        {
            if (samples == null) throw new ArgumentNullException("samples");
            if (sampleRate <= 0) throw new ArgumentException("sampleRate must be positive");
            try
            {
                if (_openRate != sampleRate)
                {
                    if (_openRate != 0) { try { Control.StreamClose(Stream, 1000); } catch (RealtalkRequestException) { } }
                    Open(sampleRate);
                }
                int chunk = Math.Max(1, (int)(sampleRate * ChunkSeconds));
                var sw = Stopwatch.StartNew();
                bool reopened = false;
                for (int i = 0; i < samples.Length; i += chunk)
                {
                    if (keepGoing != null && !keepGoing()) return;
                    int n = Math.Min(chunk, samples.Length - i);
                    try { Control.PushAudio(Stream, samples, i, n); }
                    catch (RealtalkRequestException e)
                    {
                        // closed by the sidecar's idle timeout (10 s without audio by default) or gone with a restart:
                        // open it again once, then carry on with this line
                        if (e.Code != "unknown_stream" || reopened) throw;
                        reopened = true;
                        Interlocked.Increment(ref _reopens);
                        Open(sampleRate);
                        Control.PushAudio(Stream, samples, i, n);
                    }
                    int ahead = (int)(1000.0 * (i + n) / sampleRate - sw.ElapsedMilliseconds);
                    if (ahead > 0) Thread.Sleep(ahead);
                }
            }
            catch (Exception) { _openRate = 0; throw; }
        }

        void Open(int sampleRate)
        {
            Control.StreamOpen(Stream, Fps, sampleRate);
            _openRate = sampleRate;
        }

        /// <summary>Closes the stream (best effort).</summary>
        public void Close(int timeoutMs = 1000)
        {
            if (_openRate == 0) return;
            _openRate = 0;
            try { Control.StreamClose(Stream, timeoutMs); } catch (Exception) { }
        }
    }
}
