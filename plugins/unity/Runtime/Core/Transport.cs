// The seam between the protocol client and the ZeroMQ wire. ZmtpTransport (pure C#) is the default;
// a project that already ships NetMQ can implement these two interfaces with SubscriberSocket / DealerSocket.
using System;
using System.Collections.Generic;

namespace RealtalkBridge
{
    public class TransportException : Exception
    {
        public TransportException(string message) : base(message) { }
        public TransportException(string message, Exception inner) : base(message, inner) { }
    }

    /// <summary>One connected ZeroMQ socket speaking multipart messages. Not thread-safe except that
    /// Send may be called from one thread while another thread is inside TryReceive, and Dispose from any thread.</summary>
    public interface IFrameSocket : IDisposable
    {
        /// <summary>Connects and completes the handshake, or throws TransportException.</summary>
        void Connect(string endpoint, int timeoutMs);
        /// <summary>SUB only: adds a topic prefix ("" = everything).</summary>
        void Subscribe(string prefix);
        /// <summary>Sends one multipart message; throws TransportException when the connection is gone.</summary>
        void Send(IList<byte[]> frames);
        /// <summary>Fills `frames` with the next multipart message. False on timeout; throws TransportException
        /// when the connection is lost or the peer misbehaves at the framing level.</summary>
        bool TryReceive(List<byte[]> frames, int timeoutMs);
    }

    public interface ITransport
    {
        IFrameSocket CreateSubscriber();
        IFrameSocket CreateDealer();
    }

    public sealed class ZmtpTransport : ITransport
    {
        /// <summary>Largest message accepted (the sidecar's own control limit is 64 MiB).</summary>
        public long MaxMessageSize = 64L * 1024 * 1024;
        public int HeartbeatIntervalMs = 1000;
        public int HeartbeatTimeoutMs = 5000;

        public IFrameSocket CreateSubscriber() { return Configure(new ZmtpSocket(ZmtpSocketType.Sub)); }
        public IFrameSocket CreateDealer() { return Configure(new ZmtpSocket(ZmtpSocketType.Dealer)); }

        ZmtpSocket Configure(ZmtpSocket s)
        {
            s.MaxMessageSize = MaxMessageSize;
            s.HeartbeatIntervalMs = HeartbeatIntervalMs;
            s.HeartbeatTimeoutMs = HeartbeatTimeoutMs;
            return s;
        }
    }
}
