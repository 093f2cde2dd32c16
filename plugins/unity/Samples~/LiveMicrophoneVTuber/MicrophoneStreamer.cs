using System;
using System.Threading;
using RealtalkBridge;
using RealtalkBridge.Unity;
using UnityEngine;

namespace RealtalkBridge.Samples
{
    /// <summary>Live microphone VTuber, Unity-owned microphone: captures with UnityEngine.Microphone and pushes the
    /// samples to the sidecar as a pushed stream (`stream_open` + `push_audio`); the RealtalkClient on the same
    /// object receives that stream's frames and a BlendshapeDriver puts them on the avatar.
    /// (If the sidecar owns the microphone instead, skip this script and set RealtalkClient.streamId to "mic".)</summary>
    [RequireComponent(typeof(RealtalkClient))]
    public sealed class MicrophoneStreamer : MonoBehaviour
    {
        [Tooltip("Empty = the default microphone")] public string device = "";
        public int sampleRate = 16000;
        public int fps = 30;
        public string streamId = "unity-mic";

        RealtalkClient _client;
        AudioClip _mic;
        int _readPos;
        Thread _sender;
        readonly object _lock = new object();
        readonly System.Collections.Generic.Queue<float[]> _pending = new System.Collections.Generic.Queue<float[]>();
        volatile bool _running;
        string _pushError;

        void OnEnable()
        {
            _client = GetComponent<RealtalkClient>();
            _client.streamId = streamId;
            _client.Connect();
            _mic = Microphone.Start(device, true, 2, sampleRate);
            _readPos = 0;
            _running = true;
            var ctl = _client.Control;
            string id = streamId;
            int rate = sampleRate, f = fps;
            // network calls live on their own thread; Update only copies samples
            _sender = new Thread(delegate ()
            {
                bool open = false;
                while (_running)
                {
                    try
                    {
                        if (!open) { ctl.StreamOpen(id, f, rate); open = true; }
                        float[] chunk = null;
                        lock (_lock) if (_pending.Count > 0) chunk = _pending.Dequeue();
                        if (chunk == null) { Thread.Sleep(5); continue; }
                        ctl.PushAudio(id, chunk, 0, chunk.Length);   // after a hitch: split within hello.limits
                    }
                    catch (Exception e)
                    {
                        open = false;   // the sidecar restarted or went away: reopen when it is back
                        lock (_lock) _pushError = e.Message;    // logged by Update: Unity's API stays on the main thread
                        Thread.Sleep(500);
                    }
                }
                try { ctl.StreamClose(id, 500); } catch (Exception) { }
            }) { IsBackground = true, Name = "realtalk-mic" };
            _sender.Start();
        }

        void Update()
        {
            string err;
            lock (_lock) { err = _pushError; _pushError = null; }
            if (err != null) Debug.LogWarning("[Realtalk] microphone push: " + err);
            if (_mic == null) return;
            int pos = Microphone.GetPosition(device);
            int n = pos - _readPos;
            if (n < 0) n += _mic.samples;   // the clip is a ring buffer
            if (n <= 0) return;
            var chunk = new float[n];
            if (_readPos + n <= _mic.samples) _mic.GetData(chunk, _readPos);
            else
            {
                int first = _mic.samples - _readPos;
                var a = new float[first];
                _mic.GetData(a, _readPos);
                var b = new float[n - first];
                _mic.GetData(b, 0);
                Array.Copy(a, chunk, first);
                Array.Copy(b, 0, chunk, first, n - first);
            }
            _readPos = pos;
            lock (_lock)
            {
                if (_pending.Count > 50) _pending.Dequeue();   // never build up latency when the link stalls
                _pending.Enqueue(chunk);
            }
        }

        void OnDisable()
        {
            _running = false;
            if (_sender != null) _sender.Join(1000);
            Microphone.End(device);
            _mic = null;
        }
    }
}
