using System;
using System.Collections;
using System.Threading;
using UnityEngine;

namespace RealtalkBridge.Unity
{
    /// <summary>Plays an AudioClip with lip-sync: the clip's samples go to the sidecar's `bake` op (on a worker
    /// thread), the timed track comes back, and the face follows the AudioSource's own clock (timeSamples), so it
    /// stays in sync through frame hitches. A cached CoefficientTrackAsset plays with no sidecar at all.</summary>
    [AddComponentMenu("Realtalk/Talking NPC")]
    [RequireComponent(typeof(AudioSource))]
    public sealed class TalkingNpc : MonoBehaviour, ICoefficientSource
    {
        [Tooltip("Used for its control endpoint; optional when every clip has a cached track")]
        public RealtalkClient client;
        public AudioClip clip;
        [Tooltip("Played instead of baking when it was baked from the same clip")]
        public CoefficientTrackAsset cachedTrack;
        [Tooltip("In the editor, write a fresh bake into cachedTrack")]
        public bool cacheInEditor = true;
        public float fps = 30f;
        public bool speakOnStart;
        public int bakeTimeoutMs = 120000;

        AudioSource _audio;
        ControlClient _ctl;
        CoefficientTrack _track;
        float[] _sample = new float[0];
        bool _playing;
        long _version;

        /// <summary>Set when a bake failed; cleared by the next Speak.</summary>
        public string LastError { get; private set; }
        public bool IsBaking { get; private set; }
        public CoefficientTrack Track { get { return _track; } }

        void Awake() { _audio = GetComponent<AudioSource>(); }

        void OnDestroy()
        {
            if (_ctl != null) { _ctl.Dispose(); _ctl = null; }
        }

        void Start()
        {
            if (speakOnStart && clip != null) Speak(clip);
        }

        public void Speak(AudioClip audioClip)
        {
            StartCoroutine(SpeakRoutine(audioClip));
        }

        public IEnumerator SpeakRoutine(AudioClip audioClip)
        {
            LastError = null;
            CoefficientTrack track = null;
            if (cachedTrack != null && cachedTrack.clip == audioClip && cachedTrack.IsValid)
            {
                track = cachedTrack.ToTrack();
            }
            else
            {
                if (client == null) { LastError = "no RealtalkClient to bake with and no cached track"; Debug.LogWarning("[Realtalk] " + LastError); yield break; }
                float[] mono = AudioClipSamples.Mono(audioClip);   // main thread only
                int rate = audioClip.frequency;
                // its own control connection: a long bake must not hold up other requests (e.g. push_audio)
                if (_ctl == null || _ctl.Endpoint != client.controlEndpoint)
                {
                    if (_ctl != null) _ctl.Dispose();
                    _ctl = new ControlClient(client.controlEndpoint, RealtalkClient.TransportOverride) { ClientName = "realtalk-unity-npc" };
                }
                var ctl = _ctl;
                double bakeFps = fps;
                int timeout = bakeTimeoutMs;
                CoefficientTrack result = null;
                string error = null;
                bool done = false;
                IsBaking = true;
                var worker = new Thread(delegate ()
                {
                    try { result = ctl.Bake(mono, rate, bakeFps, timeout); }
                    catch (Exception e) { error = e.Message; }
                    finally { done = true; }
                }) { IsBackground = true, Name = "realtalk-bake" };
                worker.Start();
                while (!Volatile.Read(ref done)) yield return null;
                IsBaking = false;
                if (error != null) { LastError = error; Debug.LogWarning("[Realtalk] bake failed: " + error); yield break; }
                track = result;
#if UNITY_EDITOR
                // asset edits made in play mode persist: the next run plays from the cache without a sidecar
                if (cacheInEditor && cachedTrack != null)
                {
                    cachedTrack.SetFrom(track, audioClip);
                    UnityEditor.EditorUtility.SetDirty(cachedTrack);
                }
#endif
            }
            _track = track;
            if (_sample.Length < track.Names.Length) _sample = new float[track.Names.Length];
            _audio.clip = audioClip;
            _audio.Play();
            _playing = true;
        }

        public void StopSpeaking()
        {
            if (_audio != null) _audio.Stop();
            _playing = false;
        }

        public bool TryGetFrame(CoeffFrame dst, ref long version)
        {
            if (_track == null) return false;
            if (_playing && !_audio.isPlaying) _playing = false;
            // after the clip ends the driver's hold/relax takes the face back to neutral
            if (!_playing || _audio.clip == null) return false;
            double t = _audio.timeSamples / (double)_audio.clip.frequency;
            _track.Sample(t, _sample);
            dst.Stream = "npc";
            dst.Layout = _track.Layout;
            dst.Names = _track.Names;
            dst.Fps = _track.Fps;
            dst.T = t;
            dst.Seq = (long)Math.Round(t * _track.Fps);
            if (dst.Weights.Length < _track.Names.Length) dst.Weights = new float[_track.Names.Length];
            Array.Copy(_sample, dst.Weights, _track.Names.Length);
            dst.Count = _track.Names.Length;
            dst.HasPose = false;
            version = ++_version;
            return true;
        }
    }
}
