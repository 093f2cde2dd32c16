using UnityEngine;

namespace RealtalkBridge.Unity
{
    /// <summary>Connects to a running sidecar: receives the coefficient stream on a background thread and offers the
    /// newest frame to the main thread; `Control` sends requests (bake, push_audio, ...).</summary>
    [AddComponentMenu("Realtalk/Realtalk Client")]
    [DisallowMultipleComponent]
    public sealed class RealtalkClient : MonoBehaviour, ICoefficientSource
    {
        [Tooltip("The sidecar's PUB endpoint (realtalk-bridge serve --pub)")]
        public string streamEndpoint = Protocol.DefaultStreamEndpoint;
        [Tooltip("The sidecar's ROUTER endpoint (realtalk-bridge serve --ctl)")]
        public string controlEndpoint = Protocol.DefaultControlEndpoint;
        [Tooltip("Only frames of this stream: 'mic', 'file', or a pushed stream's id. Empty = any stream.")]
        public string streamId = "";
        public bool connectOnEnable = true;
        public bool logStateChanges = true;

        /// <summary>Set before the component is enabled to use another ZeroMQ implementation (e.g. a NetMQ adapter).</summary>
        public static ITransport TransportOverride;

        StreamReceiver _rx;
        ControlClient _ctl;
        ConnectionState _shownState = ConnectionState.Stopped;

        public ConnectionState State { get { return _rx == null ? ConnectionState.Stopped : _rx.State; } }
        public StreamReceiver Receiver { get { return _rx; } }
        /// <summary>One line for an inspector or HUD: state, frame counts, last error. Rebuilt at most twice a second,
        /// so a HUD that reads it every frame does not allocate every frame.</summary>
        public string StatusText { get { return _rx == null ? "stopped" : _rx.StatusText; } }

        public ControlClient Control
        {
            get
            {
                if (_ctl == null) _ctl = new ControlClient(controlEndpoint, TransportOverride);
                return _ctl;
            }
        }

        void OnEnable()
        {
            if (connectOnEnable) Connect();
        }

        void OnDisable() { Disconnect(); }

        void OnDestroy()
        {
            Disconnect();
            if (_ctl != null) { _ctl.Dispose(); _ctl = null; }
        }

        public void Connect()
        {
            Disconnect();
            _rx = new StreamReceiver(new StreamReceiverOptions
            {
                Endpoint = streamEndpoint,
                StreamFilter = string.IsNullOrEmpty(streamId) ? null : streamId,
                HelloEndpoint = controlEndpoint,
            }, TransportOverride);
            _rx.Start();
        }

        public void Disconnect()
        {
            if (_rx != null) { _rx.Stop(); _rx = null; }
        }

        /// <summary>Paced: each frame of the stream once, in order, released by its timestamp (a 60 Hz game sees every
        /// frame of a 60 fps stream although the sidecar publishes in bursts); see FramePacer.</summary>
        public bool TryGetFrame(CoeffFrame dst, ref long version)
        {
            // the frame's start time: evenly spaced at a steady frame rate, whenever in the frame this is called
            return _rx != null && _rx.TryGetNext(dst, ref version, Time.unscaledTimeAsDouble);
        }

        /// <summary>Paced frames of one stream (several NPCs on one connection, one stream each). Main thread.</summary>
        public bool TryGetFrame(string stream, CoeffFrame dst, ref long version)
        {
            return _rx != null && _rx.TryGetNext(stream, dst, ref version, Time.unscaledTimeAsDouble);
        }

        void Update()
        {
            if (_rx == null) return;
            var st = _rx.State;
            if (logStateChanges && st != _shownState)
            {
                Debug.Log("[Realtalk] " + streamEndpoint + ": " + st + (st == ConnectionState.Connected ? "" : " " + _rx.LastError));
                _shownState = st;
            }
            EventMessage ev;
            while (_rx.TryDequeueEvent(out ev))
            {
                // the ones a user should see; other events (and names added later) are not this component's business
                if (ev.Event == "source_error" || ev.Event == "lagging")
                    Debug.LogWarning("[Realtalk] " + ev.Stream + ": " + ev.Event + ": " + ev.Message);
            }
        }
    }
}
