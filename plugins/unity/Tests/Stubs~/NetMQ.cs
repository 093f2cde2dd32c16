// Compile-only stand-in for the part of NetMQ's public API (https://github.com/zeromq/netmq, 4.x) that
// Runtime/NetMQ/NetMqTransport.cs uses, so CI can compile the adapter with REALTALK_NETMQ defined. Declarations
// follow NetMQ's signatures; bodies do nothing. Never run. Unity ignores this folder (its name ends in ~).
using System;
using System.Collections;
using System.Collections.Generic;

namespace NetMQ
{
    public interface IReceivingSocket { }
    public interface IOutgoingSocket { }

    public class NetMQCertificate
    {
        public NetMQCertificate() { }
        public NetMQCertificate(byte[] secretKey, byte[] publicKey) { }
        public byte[] SecretKey { get { return null; } }
        public byte[] PublicKey { get { return null; } }
    }

    public class SocketOptions
    {
        public TimeSpan Linger { get { return TimeSpan.Zero; } set { } }
        public byte[] CurveServerKey { get { return null; } set { } }
        public NetMQCertificate CurveCertificate { set { } }
    }

    public abstract class NetMQSocket : IReceivingSocket, IOutgoingSocket, IDisposable
    {
        public SocketOptions Options { get { return null; } }
        public void Connect(string address) { }
        public void Dispose() { }
    }

    public class NetMQFrame
    {
        public byte[] ToByteArray(bool copy = false) { return null; }
    }

    public class NetMQMessage : IEnumerable<NetMQFrame>
    {
        public void Append(byte[] data) { }
        public IEnumerator<NetMQFrame> GetEnumerator() { yield break; }
        IEnumerator IEnumerable.GetEnumerator() { return GetEnumerator(); }
    }

    public static class NetMQConfig
    {
        public static void Cleanup(bool block = true) { }
    }

    public static class ReceivingSocketExtensions
    {
        public static bool TryReceiveMultipartMessage(this IReceivingSocket socket, TimeSpan timeout, ref NetMQMessage message, int expectedFrameCount = 4) { return false; }
    }

    public static class OutgoingSocketExtensions
    {
        public static void SendMultipartMessage(this IOutgoingSocket socket, NetMQMessage message) { }
    }
}

namespace NetMQ.Sockets
{
    public class SubscriberSocket : NetMQ.NetMQSocket
    {
        public virtual void Subscribe(string topic) { }
    }

    public class DealerSocket : NetMQ.NetMQSocket { }
}
