// A managed ZMTP 3.0 client (https://rfc.zeromq.org/spec/23/, PING/PONG from spec 37): NULL mechanism over TCP,
// SUB and DEALER roles. No native plugin, so it runs on every platform with sockets (not WebGL).
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace RealtalkBridge
{
    public enum ZmtpSocketType { Sub, Dealer }

    /// <summary>The sidecar was started with --curve-secret-key (ZeroMQ CURVE encryption). The managed transport has no
    /// Curve25519 / XSalsa20-Poly1305 (the .NET 4.x BCL has none), so such a sidecar needs the NetMQ adapter.</summary>
    public sealed class CurveRequiredException : TransportException
    {
        public readonly string Endpoint;
        public CurveRequiredException(string endpoint)
            : base(endpoint + " requires CURVE security (the sidecar runs with --curve-secret-key); the built-in transport "
                   + "speaks only the NULL mechanism: use the NetMQ adapter (Runtime/NetMQ, define REALTALK_NETMQ; see the "
                   + "package README) or run the sidecar without --curve-secret-key on loopback")
        { Endpoint = endpoint; }
    }

    public struct ZmtpFrame
    {
        public bool More;
        public bool Command;
        public byte[] Body;
    }

    /// <summary>Incremental ZMTP frame parser: feed it whatever the socket returned (any split, even one byte
    /// at a time) and take out complete frames. This is what makes partial reads harmless.</summary>
    public sealed class ZmtpFrameParser
    {
        byte[] _buf = new byte[8192];
        int _start, _end;
        public long MaxFrameSize = 64L * 1024 * 1024;

        public int Buffered { get { return _end - _start; } }

        public void Feed(byte[] data, int offset, int count)
        {
            if (count <= 0) return;
            if (_end + count > _buf.Length)
            {
                int live = _end - _start;
                if (live + count > _buf.Length)
                {
                    int cap = _buf.Length;
                    while (cap < live + count) cap *= 2;
                    var nb = new byte[cap];
                    Buffer.BlockCopy(_buf, _start, nb, 0, live);
                    _buf = nb;
                }
                else Buffer.BlockCopy(_buf, _start, _buf, 0, live);
                _start = 0; _end = live;
            }
            Buffer.BlockCopy(data, offset, _buf, _end, count);
            _end += count;
        }

        /// <summary>Takes exactly n raw bytes (the greeting) once available.</summary>
        public bool TryTakeRaw(int n, out byte[] raw)
        {
            raw = null;
            if (_end - _start < n) return false;
            raw = new byte[n];
            Buffer.BlockCopy(_buf, _start, raw, 0, n);
            _start += n;
            return true;
        }

        public bool TryNext(out ZmtpFrame frame)
        {
            frame = default(ZmtpFrame);
            int avail = _end - _start;
            if (avail < 2) return false;
            byte flags = _buf[_start];
            if ((flags & 0xf8) != 0) throw new TransportException("ZMTP: reserved frame flag bits set");
            bool isLong = (flags & 0x02) != 0;
            int header = isLong ? 9 : 2;
            if (avail < header) return false;
            long size;
            if (isLong)
            {
                ulong s = 0;
                for (int i = 1; i < 9; i++) s = (s << 8) | _buf[_start + i];
                if (s > (ulong)MaxFrameSize) throw new TransportException("ZMTP: frame of " + s + " bytes exceeds the size limit");
                size = (long)s;
            }
            else size = _buf[_start + 1];
            if (size > MaxFrameSize) throw new TransportException("ZMTP: frame exceeds the size limit");
            if (avail < header + size) return false;
            var body = new byte[size];
            Buffer.BlockCopy(_buf, _start + header, body, 0, (int)size);
            _start += header + (int)size;
            if (_start == _end) { _start = 0; _end = 0; }
            frame.More = (flags & 0x01) != 0;
            frame.Command = (flags & 0x04) != 0;
            frame.Body = body;
            return true;
        }
    }

    /// <summary>One ZMTP connection playing SUB or DEALER against a libzmq PUB / ROUTER.</summary>
    public sealed class ZmtpSocket : IFrameSocket
    {
        public long MaxMessageSize = 64L * 1024 * 1024;
        public int HeartbeatIntervalMs = 1000;
        public int HeartbeatTimeoutMs = 5000;

        readonly ZmtpSocketType _type;
        readonly object _sendLock = new object();
        readonly ZmtpFrameParser _parser = new ZmtpFrameParser();
        readonly List<byte[]> _partial = new List<byte[]>();
        readonly byte[] _recvBuf = new byte[65536];
        Socket _socket;
        long _partialBytes;
        long _lastRecvTicks;
        long _lastPingTicks;
        long _pingSentTicks;   // first PING since the last received byte; 0 = none outstanding
        volatile bool _disposed;

        public ZmtpSocket(ZmtpSocketType type) { _type = type; }

        public string PeerSocketType { get; private set; }
        /// <summary>The security mechanism in the peer's greeting ("NULL", "CURVE", ...), once connected or refused.</summary>
        public string PeerMechanism { get; private set; }
        public bool Connected { get { return _socket != null && !_disposed; } }

        static long NowMs() { return Stopwatch.GetTimestamp() * 1000 / Stopwatch.Frequency; }

        public static void ParseEndpoint(string endpoint, out string host, out int port)
        {
            if (endpoint == null || !endpoint.StartsWith("tcp://", StringComparison.Ordinal))
                throw new TransportException("only tcp:// endpoints are supported: " + endpoint);
            string rest = endpoint.Substring(6);
            int colon = rest.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(rest.Substring(colon + 1), System.Globalization.NumberStyles.None,
                                             System.Globalization.CultureInfo.InvariantCulture, out port) || port < 1 || port > 65535)
                throw new TransportException("endpoint needs tcp://host:port: " + endpoint);
            host = rest.Substring(0, colon);
            if (host.StartsWith("[", StringComparison.Ordinal) && host.EndsWith("]", StringComparison.Ordinal))
                host = host.Substring(1, host.Length - 2);
        }

        public void Connect(string endpoint, int timeoutMs)
        {
            if (_disposed) throw new ObjectDisposedException("ZmtpSocket");
            if (_socket != null) throw new InvalidOperationException("already connected");
            string host; int port;
            ParseEndpoint(endpoint, out host, out port);
            IPAddress addr;
            if (!IPAddress.TryParse(host, out addr))
            {
                IPAddress[] all;
                try { all = Dns.GetHostAddresses(host); }
                catch (Exception e) { throw new TransportException("cannot resolve " + host, e); }
                if (all.Length == 0) throw new TransportException("cannot resolve " + host);
                addr = all[0];
                foreach (var a in all) if (a.AddressFamily == AddressFamily.InterNetwork) { addr = a; break; }
            }
            _parser.MaxFrameSize = MaxMessageSize;
            long deadline = NowMs() + timeoutMs;
            var s = new Socket(addr.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                s.NoDelay = true;
                IAsyncResult ar = s.BeginConnect(new IPEndPoint(addr, port), null, null);
                if (!ar.AsyncWaitHandle.WaitOne(Math.Max(1, timeoutMs)))
                    throw new TransportException("connect to " + endpoint + " timed out");
                s.EndConnect(ar);
                _socket = s;
                Handshake(deadline, endpoint);
                _lastRecvTicks = NowMs();
                _lastPingTicks = _lastRecvTicks;
            }
            catch (TransportException) { CloseQuietly(s); _socket = null; throw; }
            catch (SocketException e) { CloseQuietly(s); _socket = null; throw new TransportException("connect to " + endpoint + ": " + e.Message, e); }
            catch (ObjectDisposedException e) { CloseQuietly(s); _socket = null; throw new TransportException("socket closed during connect", e); }
        }

        static void CloseQuietly(Socket s)
        {
            try { s.Close(); } catch (Exception) { }
        }

        static byte[] Greeting()
        {
            var g = new byte[64];
            g[0] = 0xff; g[9] = 0x7f;
            g[10] = 3; g[11] = 0;           // ZMTP 3.0: subscriptions travel as 0x01-prefixed message frames
            Encoding.ASCII.GetBytes("NULL", 0, 4, g, 12);
            g[32] = 0;                      // as-server: no
            return g;
        }

        void Handshake(long deadline, string endpoint)
        {
            // Our greeting goes in two parts, as libzmq does it: signature + major version first. libzmq answers that
            // with its whole greeting, so we read the server's mechanism before announcing ours. Sending NULL at once
            // would make a CURVE server hang up before we learn why ("connection closed by peer").
            var greeting = Greeting();
            SendRaw(greeting, 0, 11);
            byte[] peer;
            try
            {
                while (!_parser.TryTakeRaw(64, out peer)) ReadSome(deadline, "greeting");
            }
            catch (TransportException e)
            {
                throw new TransportException(endpoint + ": no ZMTP greeting (" + e.Message + "); is it a realtalk-bridge sidecar?", e);
            }
            if (peer[0] != 0xff || (peer[9] & 0x01) != 0x01)
                throw new TransportException(endpoint + " is not a ZeroMQ endpoint (bad greeting signature)");
            if (peer[10] < 3)
                throw new TransportException(endpoint + " speaks ZMTP " + peer[10] + ".x; 3.x is required");
            string mech = Encoding.ASCII.GetString(peer, 12, 20).TrimEnd('\0');
            PeerMechanism = mech;
            if (mech == "CURVE")
                throw new CurveRequiredException(endpoint);
            if (mech != "NULL")
                throw new TransportException(endpoint + " wants the " + mech + " security mechanism; the built-in transport speaks only NULL");
            SendRaw(greeting, 11, 53);

            SendCommand(ReadyBody(_type == ZmtpSocketType.Sub ? "SUB" : "DEALER"));
            ZmtpFrame f;
            while (true)
            {
                if (_parser.TryNext(out f)) break;
                ReadSome(deadline, "READY");
            }
            if (!f.Command) throw new TransportException("ZMTP: expected READY, got a message frame");
            string name = CommandName(f.Body);
            if (name == "ERROR") throw new TransportException("peer refused the connection: " + ErrorReason(f.Body));
            if (name != "READY") throw new TransportException("ZMTP: expected READY, got " + name);
            PeerSocketType = ReadProperty(f.Body, "Socket-Type");
            bool compatible = _type == ZmtpSocketType.Sub
                ? (PeerSocketType == "PUB" || PeerSocketType == "XPUB")
                : (PeerSocketType == "ROUTER" || PeerSocketType == "DEALER" || PeerSocketType == "REP");
            if (!compatible)
                throw new TransportException("peer socket type " + PeerSocketType + " cannot talk to " + (_type == ZmtpSocketType.Sub ? "SUB" : "DEALER"));
        }

        static byte[] ReadyBody(string socketType)
        {
            var list = new List<byte>();
            list.Add(5); list.AddRange(Encoding.ASCII.GetBytes("READY"));
            AddProperty(list, "Socket-Type", Encoding.ASCII.GetBytes(socketType));
            return list.ToArray();
        }

        static void AddProperty(List<byte> list, string name, byte[] value)
        {
            list.Add((byte)name.Length); list.AddRange(Encoding.ASCII.GetBytes(name));
            int n = value.Length;
            list.Add((byte)(n >> 24)); list.Add((byte)(n >> 16)); list.Add((byte)(n >> 8)); list.Add((byte)n);
            list.AddRange(value);
        }

        static string CommandName(byte[] body)
        {
            if (body.Length < 1 || body.Length < 1 + body[0]) throw new TransportException("ZMTP: malformed command");
            return Encoding.ASCII.GetString(body, 1, body[0]);
        }

        static string ErrorReason(byte[] body)
        {
            int o = 1 + body[0];
            if (body.Length <= o) return "";
            int n = Math.Min(body[o], body.Length - o - 1);
            return Encoding.ASCII.GetString(body, o + 1, n);
        }

        static string ReadProperty(byte[] body, string wanted)
        {
            int o = 1 + body[0];
            while (o < body.Length)
            {
                int nl = body[o];
                if (o + 1 + nl + 4 > body.Length) throw new TransportException("ZMTP: malformed READY properties");
                string name = Encoding.ASCII.GetString(body, o + 1, nl);
                o += 1 + nl;
                long vl = ((long)body[o] << 24) | ((long)body[o + 1] << 16) | ((long)body[o + 2] << 8) | body[o + 3];
                o += 4;
                if (o + vl > body.Length) throw new TransportException("ZMTP: malformed READY properties");
                if (string.Equals(name, wanted, StringComparison.OrdinalIgnoreCase))
                    return Encoding.ASCII.GetString(body, o, (int)vl);
                o += (int)vl;
            }
            return "";
        }

        // Blocks until some bytes arrive or the deadline passes; feeds them to the parser.
        void ReadSome(long deadline, string what)
        {
            long left = deadline - NowMs();
            if (left <= 0) throw new TransportException("ZMTP: timed out waiting for " + what);
            if (!PollRead((int)Math.Min(left, 1000))) return;
            ReceiveAvailable();
        }

        bool PollRead(int timeoutMs)
        {
            var s = _socket;
            if (s == null || _disposed) throw new TransportException("socket closed");
            try { return s.Poll(timeoutMs * 1000, SelectMode.SelectRead); }
            catch (ObjectDisposedException e) { throw new TransportException("socket closed", e); }
            catch (SocketException e) { throw new TransportException("socket error: " + e.Message, e); }
        }

        void ReceiveAvailable()
        {
            int n;
            try { n = _socket.Receive(_recvBuf, 0, _recvBuf.Length, SocketFlags.None); }
            catch (ObjectDisposedException e) { throw new TransportException("socket closed", e); }
            catch (SocketException e) { throw new TransportException("connection lost: " + e.Message, e); }
            catch (NullReferenceException e) { throw new TransportException("socket closed", e); }
            if (n <= 0) throw new TransportException("connection closed by peer");
            _parser.Feed(_recvBuf, 0, n);
            _lastRecvTicks = NowMs();
            _pingSentTicks = 0;
        }

        void SendRaw(byte[] data, int offset, int count)
        {
            lock (_sendLock)
            {
                var s = _socket;
                if (s == null || _disposed) throw new TransportException("socket closed");
                try
                {
                    while (count > 0)
                    {
                        int n = s.Send(data, offset, count, SocketFlags.None);
                        offset += n; count -= n;
                    }
                }
                catch (ObjectDisposedException e) { throw new TransportException("socket closed", e); }
                catch (SocketException e) { throw new TransportException("send failed: " + e.Message, e); }
            }
        }

        static int HeaderSize(long n) { return n > 255 ? 9 : 2; }

        static int WriteHeader(byte[] dst, int o, byte flags, long n)
        {
            if (n > 255)
            {
                dst[o] = (byte)(flags | 0x02);
                for (int i = 0; i < 8; i++) dst[o + 1 + i] = (byte)(n >> (56 - 8 * i));
                return o + 9;
            }
            dst[o] = flags; dst[o + 1] = (byte)n;
            return o + 2;
        }

        void SendCommand(byte[] body)
        {
            var buf = new byte[HeaderSize(body.Length) + body.Length];
            int o = WriteHeader(buf, 0, 0x04, body.Length);
            Buffer.BlockCopy(body, 0, buf, o, body.Length);
            SendRaw(buf, 0, buf.Length);
        }

        public void Subscribe(string prefix)
        {
            if (_type != ZmtpSocketType.Sub) throw new NotSupportedException("Subscribe is for SUB sockets");
            var p = Encoding.UTF8.GetBytes(prefix ?? "");
            var body = new byte[p.Length + 1];
            body[0] = 1;
            Buffer.BlockCopy(p, 0, body, 1, p.Length);
            Send(new[] { body });
        }

        public void Send(IList<byte[]> frames)
        {
            if (frames == null || frames.Count == 0) throw new ArgumentException("no frames");
            long total = 0;
            for (int i = 0; i < frames.Count; i++) total += HeaderSize(frames[i].Length) + frames[i].Length;
            if (total > int.MaxValue) throw new ArgumentException("message too large");
            var buf = new byte[total];
            int o = 0;
            for (int i = 0; i < frames.Count; i++)
            {
                var f = frames[i];
                o = WriteHeader(buf, o, (byte)(i < frames.Count - 1 ? 0x01 : 0x00), f.Length);
                Buffer.BlockCopy(f, 0, buf, o, f.Length);
                o += f.Length;
            }
            SendRaw(buf, 0, o);
        }

        void Ping()
        {
            // "PING", TTL (deciseconds, 0 = none), empty context
            var body = new byte[] { 4, (byte)'P', (byte)'I', (byte)'N', (byte)'G', 0, 0 };
            SendCommand(body);
        }

        void HandleCommand(byte[] body)
        {
            string name = CommandName(body);
            if (name == "PING")
            {
                int ctx = 1 + 4 + 2;
                int n = Math.Max(0, Math.Min(16, body.Length - ctx));
                var pong = new byte[5 + n];
                pong[0] = 4; pong[1] = (byte)'P'; pong[2] = (byte)'O'; pong[3] = (byte)'N'; pong[4] = (byte)'G';
                if (n > 0) Buffer.BlockCopy(body, ctx, pong, 5, n);
                SendCommand(pong);
            }
            else if (name == "ERROR") throw new TransportException("peer closed the connection: " + ErrorReason(body));
            // PONG and unknown commands: any traffic counts as liveness, nothing else to do
        }

        public bool TryReceive(List<byte[]> frames, int timeoutMs)
        {
            if (_socket == null) throw new TransportException("not connected");
            frames.Clear();
            long deadline = NowMs() + Math.Max(0, timeoutMs);
            while (true)
            {
                ZmtpFrame f;
                while (_parser.TryNext(out f))
                {
                    if (f.Command) { HandleCommand(f.Body); continue; }
                    _partialBytes += f.Body.Length;
                    if (_partialBytes > MaxMessageSize)
                        throw new TransportException("message exceeds the " + MaxMessageSize + " byte limit");
                    _partial.Add(f.Body);
                    if (!f.More)
                    {
                        frames.AddRange(_partial);
                        _partial.Clear();
                        _partialBytes = 0;
                        return true;
                    }
                }
                long now = NowMs();
                // Liveness is judged only from a PING we sent and the peer left unanswered. Time spent outside
                // TryReceive (a control socket idle between requests) proves nothing: bytes were not being read,
                // so "no traffic since the last read" must never fail the next request by itself.
                if (_pingSentTicks != 0 && HeartbeatTimeoutMs > 0 && now - _pingSentTicks > HeartbeatTimeoutMs)
                    throw new TransportException("no traffic for " + (now - _lastRecvTicks) + " ms, PING unanswered for "
                                                 + (now - _pingSentTicks) + " ms (heartbeat timeout)");
                long idle = now - _lastRecvTicks;
                if (HeartbeatIntervalMs > 0 && idle > HeartbeatIntervalMs && now - _lastPingTicks > HeartbeatIntervalMs)
                {
                    _lastPingTicks = now;
                    if (_pingSentTicks == 0) _pingSentTicks = now;
                    Ping();
                }
                long left = deadline - now;
                if (left <= 0) return false;
                int wait = (int)Math.Min(left, HeartbeatIntervalMs > 0 ? HeartbeatIntervalMs : left);
                if (PollRead(Math.Max(1, wait))) ReceiveAvailable();
            }
        }

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            var s = _socket;
            if (s != null)
            {
                try { s.Shutdown(SocketShutdown.Both); } catch (Exception) { }
                CloseQuietly(s);
            }
        }
    }
}
