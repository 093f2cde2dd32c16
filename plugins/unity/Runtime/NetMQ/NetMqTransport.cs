// ITransport over NetMQ (https://github.com/zeromq/netmq): for sidecars started with --curve-secret-key (CURVE
// encryption, which the managed ZMTP transport does not implement) or for projects that already ship NetMQ.
// Compiled only when NetMQ is in the project: the asmdef sets REALTALK_NETMQ from the UnityNuGet package
// org.nuget.netmq (versionDefines), or add REALTALK_NETMQ to Scripting Define Symbols for a NetMQ.dll you imported.
//
//   var t = new NetMqTransport(CurveKeys.ReadPublicKeyFile("server.key"));   // null key = NULL mechanism
//   RealtalkClient.TransportOverride = t;     // before the RealtalkClient is enabled
//   // on quit: NetMqTransport.Shutdown();
#if REALTALK_NETMQ
using System;
using System.Collections.Generic;
using NetMQ;
using NetMQ.Sockets;

namespace RealtalkBridge.Adapters
{
    public sealed class NetMqTransport : ITransport
    {
        readonly byte[] _serverKey;
        readonly NetMQCertificate _clientCert;

        /// <summary>`curveServerPublicKey`: the sidecar's 32-byte public key (CurveKeys.ReadPublicKeyFile), or null for
        /// a sidecar without CURVE. The client uses a fresh key pair unless one is given (a sidecar started with
        /// --curve-clients accepts only listed client keys: pass that client's CurveKeys.ReadSecretKey / ReadPublicKey).</summary>
        public NetMqTransport(byte[] curveServerPublicKey = null, byte[] clientSecretKey = null, byte[] clientPublicKey = null)
        {
            if (curveServerPublicKey != null && curveServerPublicKey.Length != 32)
                throw new ArgumentException("a CURVE public key has 32 bytes");
            _serverKey = curveServerPublicKey;
            if (_serverKey == null) return;
            _clientCert = clientSecretKey != null && clientPublicKey != null
                ? new NetMQCertificate(clientSecretKey, clientPublicKey)
                : new NetMQCertificate();
        }

        public IFrameSocket CreateSubscriber() { return new NetMqFrameSocket(Configure(new SubscriberSocket())); }
        public IFrameSocket CreateDealer() { return new NetMqFrameSocket(Configure(new DealerSocket())); }

        NetMQSocket Configure(NetMQSocket s)
        {
            s.Options.Linger = TimeSpan.Zero;
            if (_serverKey != null)
            {
                s.Options.CurveServerKey = _serverKey;
                s.Options.CurveCertificate = _clientCert;
            }
            return s;
        }

        /// <summary>Call once when the application quits (NetMQ's background threads keep the editor from reloading).</summary>
        public static void Shutdown() { NetMQConfig.Cleanup(false); }
    }

    sealed class NetMqFrameSocket : IFrameSocket
    {
        readonly NetMQSocket _s;
        public NetMqFrameSocket(NetMQSocket s) { _s = s; }

        // NetMQ connects in the background and reconnects by itself; the receiver's silence check (no status for
        // StaleAfterMs) still notices a sidecar that is gone.
        public void Connect(string endpoint, int timeoutMs) { _s.Connect(endpoint); }

        public void Subscribe(string prefix)
        {
            var sub = _s as SubscriberSocket;
            if (sub == null) throw new NotSupportedException("Subscribe is for SUB sockets");
            sub.Subscribe(prefix ?? "");
        }

        public void Send(IList<byte[]> frames)
        {
            var m = new NetMQMessage();
            for (int i = 0; i < frames.Count; i++) m.Append(frames[i]);
            _s.SendMultipartMessage(m);
        }

        public bool TryReceive(List<byte[]> frames, int timeoutMs)
        {
            frames.Clear();
            NetMQMessage m = null;
            if (!_s.TryReceiveMultipartMessage(TimeSpan.FromMilliseconds(timeoutMs), ref m)) return false;
            foreach (var f in m) frames.Add(f.ToByteArray());
            return true;
        }

        public void Dispose() { _s.Dispose(); }
    }
}
#endif
