using System;
using System.Collections;
using System.Collections.Generic;
using System.Threading;
using UnityEngine;

namespace RealtalkBridge.Unity
{
    /// <summary>Plays AudioClips with lip-sync, one track per dialogue line.
    /// Baked (default): the clip's samples go to the sidecar's `bake` op on a worker thread, the timed track comes back
    /// and is kept for that clip (and, in the editor, saved as a CoefficientTrackAsset next to it); the face follows the
    /// AudioSource's own clock (timeSamples), so it stays in sync through frame hitches. Lines with a baked track play
    /// with no sidecar at all.
    /// Live (`liveStreamId` set): the clip's audio is pushed in real time to that stream on the shared RealtalkClient's
    /// connection and the face follows the stream's frames; several NPCs share one sidecar and one connection, one
    /// stream each. The audio starts `liveAudioDelay` late so the voice and the lips line up.</summary>
    [AddComponentMenu("Realtalk/Talking NPC")]
    [RequireComponent(typeof(AudioSource))]
    public sealed class TalkingNpc : MonoBehaviour, ICoefficientSource
    {
        [Tooltip("The shared client: its control connection bakes or pushes; optional when every line has a baked track")]
        public RealtalkClient client;
        public AudioClip clip;
        [Tooltip("Baked tracks, one per dialogue line; a line is played from the track baked from its clip")]
        public List<CoefficientTrackAsset> bakedTracks = new List<CoefficientTrackAsset>();
        [Tooltip("In the editor, save each fresh bake as <clip>_track.asset and add it to bakedTracks")]
        public bool cacheInEditor = true;
        [Tooltip("Empty = bake each line. Set (e.g. npc-guard) = stream the audio live on this stream id")]
        public string liveStreamId = "";
        [Tooltip("Live mode: audio start delay in seconds (about the sidecar's look-ahead plus one model step)")]
        public float liveAudioDelay = 0.15f;
        public float fps = 30f;
        public bool speakOnStart;
        public int bakeTimeoutMs = 120000;

        AudioSource _audio;
        CoefficientTrack _track;
        readonly Dictionary<AudioClip, CoefficientTrack> _tracks = new Dictionary<AudioClip, CoefficientTrack>();
        float[] _sample = new float[0];
        bool _playing;
        long _version;
        Thread _pusher;
        int _pushGeneration;   // a push runs while this still equals its own number (Interlocked)
        LivePusher _live;

        /// <summary>Set when a bake or push failed; cleared by the next Speak.</summary>
        public string LastError { get; private set; }
        public bool IsBaking { get; private set; }
        public CoefficientTrack Track { get { return _track; } }
        bool Live { get { return !string.IsNullOrEmpty(liveStreamId); } }

        void Awake()
        {
            _audio = GetComponent<AudioSource>();
            foreach (var a in bakedTracks)
                if (a != null && a.clip != null && a.IsValid) _tracks[a.clip] = a.ToTrack();
        }

        void OnDestroy()
        {
            Interlocked.Increment(ref _pushGeneration);
            if (_pusher != null) _pusher.Join(500);
            if (_live != null) _live.Close(500);
        }

        void Start()
        {
            if (speakOnStart && clip != null) Speak(clip);
        }

        public void Speak(AudioClip audioClip)
        {
            StopSpeaking();
            StartCoroutine(Live ? SpeakLiveRoutine(audioClip) : SpeakRoutine(audioClip));
        }

        public IEnumerator SpeakRoutine(AudioClip audioClip)
        {
            LastError = null;
            CoefficientTrack track;
            if (!_tracks.TryGetValue(audioClip, out track))
            {
                if (client == null) { Fail("no RealtalkClient to bake " + audioClip.name + " with, and no baked track for it"); yield break; }
                float[] mono = AudioClipSamples.Mono(audioClip);   // main thread only
                int rate = audioClip.frequency;
                var ctl = client.Control;    // one connection per client, shared by every NPC using it
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
                    finally { Volatile.Write(ref done, true); }
                }) { IsBackground = true, Name = "realtalk-bake" };
                worker.Start();
                while (!Volatile.Read(ref done)) yield return null;
                IsBaking = false;
                if (error != null) { Fail("bake of " + audioClip.name + " failed: " + error); yield break; }
                track = result;
                _tracks[audioClip] = track;
#if UNITY_EDITOR
                if (cacheInEditor) SaveTrackAsset(audioClip, track);
#endif
            }
            _track = track;
            if (_sample.Length < track.Names.Length) _sample = new float[track.Names.Length];
            _audio.clip = audioClip;
            _audio.Play();
            _playing = true;
        }

#if UNITY_EDITOR
        void SaveTrackAsset(AudioClip audioClip, CoefficientTrack track)
        {
            string clipPath = UnityEditor.AssetDatabase.GetAssetPath(audioClip);
            if (string.IsNullOrEmpty(clipPath)) return;
            var asset = ScriptableObject.CreateInstance<CoefficientTrackAsset>();
            asset.SetFrom(track, audioClip);
            string dir = System.IO.Path.GetDirectoryName(clipPath);
            string stem = System.IO.Path.GetFileNameWithoutExtension(clipPath);
            UnityEditor.AssetDatabase.CreateAsset(asset, UnityEditor.AssetDatabase.GenerateUniqueAssetPath(dir + "/" + stem + "_track.asset"));
            bakedTracks.Add(asset);
            UnityEditor.EditorUtility.SetDirty(this);
        }
#endif

        IEnumerator SpeakLiveRoutine(AudioClip audioClip)
        {
            LastError = null;
            if (client == null) { Fail("live mode needs a RealtalkClient"); yield break; }
            float[] mono = AudioClipSamples.Mono(audioClip);   // main thread only
            int rate = audioClip.frequency;
            if (_live == null || _live.Control != client.Control || _live.Stream != liveStreamId)
                _live = new LivePusher(client.Control, liveStreamId, Mathf.RoundToInt(fps));
            var live = _live;
            string error = null;
            int generation = Interlocked.Increment(ref _pushGeneration);
            // the network lives on a worker (LivePusher: open once, 20 ms chunks at real-time pace, reopen if needed)
            var pusher = new Thread(delegate ()
            {
                try { live.PushLine(mono, rate, delegate { return Volatile.Read(ref _pushGeneration) == generation; }); }
                catch (Exception e) { error = e.Message; }
            }) { IsBackground = true, Name = "realtalk-npc-push" };
            _pusher = pusher;
            pusher.Start();
            _track = null;
            _audio.clip = audioClip;
            _audio.PlayDelayed(liveAudioDelay);
            _playing = true;
            while (pusher.IsAlive) yield return null;
            if (error != null) Fail("live push on " + live.Stream + " failed: " + error);
        }

        void Fail(string message)
        {
            LastError = message;
            Debug.LogWarning("[Realtalk] " + name + ": " + message);
        }

        public void StopSpeaking()
        {
            Interlocked.Increment(ref _pushGeneration);   // ends a live push in progress
            if (_audio != null) _audio.Stop();
            _playing = false;
        }

        public bool TryGetFrame(CoeffFrame dst, ref long version)
        {
            if (Live) return client != null && client.TryGetFrame(liveStreamId, dst, ref version);
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
