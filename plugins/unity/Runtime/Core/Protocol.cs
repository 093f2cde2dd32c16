// Protocol v1 (protocol/SPEC.md): typed decoders for stream messages and replies, encoders for requests.
// Every decoder validates and returns false with a reason instead of throwing: the receive thread drops bad input.
using System;
using System.Collections.Generic;

namespace RealtalkBridge
{
    /// <summary>One coefficient frame. Reused by the receive path: copy what you keep.</summary>
    public sealed class CoeffFrame
    {
        public string Stream = "";
        public long Seq;
        public double T;
        public double Wall;
        public double Fps;
        public string Layout = "";
        /// <summary>The layout's names (from this frame, or remembered from earlier frames / status / hello).</summary>
        public string[] Names;
        /// <summary>Weights in Names order; only the first Count entries are valid.</summary>
        public float[] Weights = new float[0];
        public int Count;
        public bool HasPose;
        public readonly float[] Pose = new float[6];
        public bool HasSpeech;
        public bool Speech;

        public void CopyTo(CoeffFrame dst)
        {
            dst.Stream = Stream; dst.Seq = Seq; dst.T = T; dst.Wall = Wall; dst.Fps = Fps; dst.Layout = Layout;
            dst.Names = Names;
            if (dst.Weights.Length < Count) dst.Weights = new float[Count];
            Array.Copy(Weights, dst.Weights, Count);
            dst.Count = Count;
            dst.HasPose = HasPose;
            Array.Copy(Pose, dst.Pose, 6);
            dst.HasSpeech = HasSpeech; dst.Speech = Speech;
        }
    }

    public sealed class StreamInfo
    {
        public string Stream = "";
        public string Source = "";
        public double Fps;
        public double LookaheadMs;
        public long Seq;
        public string Layout = "";
    }

    public sealed class StatusMessage
    {
        public double Wall;
        public string Server = "";
        public Dictionary<string, string[]> Layouts = new Dictionary<string, string[]>();
        public List<StreamInfo> Streams = new List<StreamInfo>();
        public string ModelName = "";
        public string ModelSpace = "";
        public long ModelSampleRate;
    }

    public sealed class EventMessage
    {
        public string Stream = "";
        public double Wall;
        public double T = double.NaN;
        public string Event = "";
        public string Message = "";
    }

    public sealed class VideoMessage
    {
        public string Stream = "";
        public long Seq;
        public double T, Wall;
        public int Width, Height;
        public string Encoding = "";
        public byte[] Data;
    }

    /// <summary>A control reply's common part; the op's fields are decoded by the op's own decoder.</summary>
    public sealed class Reply
    {
        public string Op = "";
        public string Id;        // echoed id, as text (ints are formatted)
        public bool Ok;
        public string ErrorCode = "";
        public string ErrorMessage = "";
    }

    /// <summary>A timed coefficient track, as returned by `bake`.</summary>
    public sealed class CoefficientTrack
    {
        public double Fps;
        public double T0;
        public string Layout = "";
        public string[] Names = new string[0];
        public int FrameCount;
        /// <summary>FrameCount * Names.Length floats, row-major.</summary>
        public float[] Weights = new float[0];

        public double Duration { get { return FrameCount <= 0 || Fps <= 0 ? 0 : (FrameCount - 1) / Fps; } }

        /// <summary>Linear interpolation between the two frames around audio time t (clamped at the ends).</summary>
        public void Sample(double t, float[] dst)
        {
            int e = Names.Length;
            if (dst.Length < e) throw new ArgumentException("destination too small");
            if (FrameCount == 0) { Array.Clear(dst, 0, e); return; }
            double x = (t - T0) * Fps;
            if (x <= 0) { Array.Copy(Weights, 0, dst, 0, e); return; }
            if (x >= FrameCount - 1) { Array.Copy(Weights, (FrameCount - 1) * e, dst, 0, e); return; }
            int i = (int)Math.Floor(x);
            float a = (float)(x - i);
            int o0 = i * e, o1 = o0 + e;
            for (int k = 0; k < e; k++) dst[k] = Weights[o0 + k] + a * (Weights[o1 + k] - Weights[o0 + k]);
        }
    }

    /// <summary>The sidecar's per-request limits (SPEC section 6), from its hello reply's `limits` map; the
    /// defaults are the SPEC's, for a sidecar that sends none.</summary>
    public sealed class SidecarLimits
    {
        public double PushSeconds = 0.5;
        public long PushBytes = 512 * 1024;
        public long BakeBytes = 32L * 1024 * 1024;
        public double BakeSeconds = 30 * 60;
        /// <summary>Bytes of a request around its audio (msgpack keys, id, format...): the limits apply to the
        /// whole message.</summary>
        public const int Overhead = 1024;

        /// <summary>Reads `limits` from a hello reply; keys missing or not positive numbers keep their default.</summary>
        public static SidecarLimits FromHello(byte[] body, int offset, int count)
        {
            var l = new SidecarLimits();
            var map = Protocol.ReadField(body, offset, count, "limits") as Dictionary<string, object>;
            if (map == null) return l;
            double x;
            if (Positive(map, "push_seconds", out x)) l.PushSeconds = x;
            if (Positive(map, "push_bytes", out x)) l.PushBytes = (long)x;
            if (Positive(map, "bake_bytes", out x)) l.BakeBytes = (long)x;
            if (Positive(map, "bake_seconds", out x)) l.BakeSeconds = x;
            return l;
        }

        static bool Positive(Dictionary<string, object> map, string key, out double x)
        {
            object v;
            x = 0;
            if (!map.TryGetValue(key, out v)) return false;
            if (v is long) x = (long)v;
            else if (v is double) x = (double)v;
            else return false;
            return x > 0 && !double.IsInfinity(x) && x < 1e15;
        }

        /// <summary>The most samples one push_audio may carry at `sampleRate` with `bytesPerSample`.</summary>
        public int MaxPushSamples(int sampleRate, int bytesPerSample)
        {
            double byTime = Math.Floor(PushSeconds * sampleRate);
            double bySize = (PushBytes - Overhead) / bytesPerSample;
            return (int)Math.Max(1, Math.Min(byTime, bySize));
        }
    }

    public static class Protocol
    {
        public const int Version = 1;
        public const string DefaultStreamEndpoint = "tcp://127.0.0.1:47200";
        public const string DefaultControlEndpoint = "tcp://127.0.0.1:47201";
        /// <summary>Sanity bound on a layout's size; ARKit has 52, BFM 64.</summary>
        public const int MaxNames = 4096;

        public static bool IsValidStreamId(string s)
        {
            if (string.IsNullOrEmpty(s) || s.Length > 64) return false;
            for (int i = 0; i < s.Length; i++)
            {
                char c = s[i];
                bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
                if (!ok) return false;
            }
            return true;
        }

        /// <summary>Checks the envelope every payload must have: valid msgpack, one map with str keys, no trailing bytes.</summary>
        public static bool IsWellFormedMap(byte[] buf, int offset, int count, out string error)
        {
            error = null;
            try
            {
                var r = new MsgPackReader(buf, offset, count);
                if (r.PeekType() != MsgPackType.Map) return Fail(out error, "payload is not a map");
                r.ReadObject();   // rejects non-str keys and bad nesting
                if (!r.AtEnd) return Fail(out error, "trailing bytes after the map");
                return true;
            }
            catch (MsgPackException e) { return Fail(out error, e.Message); }
        }

        /// <summary>Reads the `type` key of a payload without decoding the rest. Null when absent or not a map.</summary>
        public static string PeekType(byte[] payload, int offset, int count)
        {
            try
            {
                var r = new MsgPackReader(payload, offset, count);
                if (r.PeekType() != MsgPackType.Map) return null;
                int n = r.ReadMapHeader();
                for (int i = 0; i < n; i++)
                {
                    if (r.PeekType() != MsgPackType.Str) return null;
                    var k = r.ReadStrBytes();
                    if (MsgPackReader.KeyEquals(k, "type") && r.PeekType() == MsgPackType.Str) return r.ReadString();
                    r.Skip();
                }
            }
            catch (MsgPackException) { }
            return null;
        }

        static string[] ReadNames(ref MsgPackReader r)
        {
            int n = r.ReadArrayHeader();
            if (n > MaxNames) throw new MsgPackException("too many names");
            var names = new string[n];
            for (int i = 0; i < n; i++) names[i] = r.ReadString();
            return names;
        }

        /// <summary>Same names in the same order (element-wise, no allocation).</summary>
        public static bool SameNames(string[] a, string[] b)
        {
            if (a == null || b == null || a.Length != b.Length) return false;
            for (int i = 0; i < a.Length; i++) if (a[i] != b[i]) return false;
            return true;
        }

        static bool Fail(out string error, string message) { error = message; return false; }

        /// <summary>Decodes a `coeffs` payload into frame. `knownNames` maps layout id -> names learned earlier
        /// (frames carry names only now and then); it is updated when a frame carries names.</summary>
        public static bool TryDecodeCoeffs(byte[] buf, int offset, int count, CoeffFrame frame,
                                           IDictionary<string, string[]> knownNames, out string error)
        {
            error = null;
            try
            {
                var r = new MsgPackReader(buf, offset, count);
                if (r.PeekType() != MsgPackType.Map) return Fail(out error, "payload is not a map");
                int n = r.ReadMapHeader();
                bool hasV = false, hasType = false, hasStream = false, hasSeq = false, hasT = false, hasW = false, hasLayout = false;
                long v = 0;
                string[] names = null;
                ArraySegment<byte> w = default(ArraySegment<byte>);
                frame.HasPose = false; frame.HasSpeech = false; frame.Wall = 0; frame.Fps = 0;
                for (int i = 0; i < n; i++)
                {
                    if (r.PeekType() != MsgPackType.Str) return Fail(out error, "map key is not a str");
                    var k = r.ReadStrBytes();
                    if (MsgPackReader.KeyEquals(k, "v")) { v = r.ReadInt(); hasV = true; }
                    else if (MsgPackReader.KeyEquals(k, "type"))
                    {
                        var t = r.ReadStrBytes();
                        if (!MsgPackReader.KeyEquals(t, "coeffs")) return Fail(out error, "type is not coeffs");
                        hasType = true;
                    }
                    else if (MsgPackReader.KeyEquals(k, "stream"))
                    {
                        var s = r.ReadStrBytes();
                        // the stream id is usually unchanged: keep the old string instead of allocating
                        if (!MsgPackReader.KeyEquals(s, frame.Stream ?? "")) frame.Stream = DecodeUtf8(s);
                        hasStream = true;
                    }
                    else if (MsgPackReader.KeyEquals(k, "seq")) { frame.Seq = r.ReadInt(); hasSeq = true; }
                    else if (MsgPackReader.KeyEquals(k, "t")) { frame.T = r.ReadDouble(); hasT = true; }
                    else if (MsgPackReader.KeyEquals(k, "wall")) frame.Wall = r.ReadDouble();
                    else if (MsgPackReader.KeyEquals(k, "fps")) frame.Fps = r.ReadDouble();
                    else if (MsgPackReader.KeyEquals(k, "layout"))
                    {
                        var s = r.ReadStrBytes();
                        if (!MsgPackReader.KeyEquals(s, frame.Layout ?? "")) frame.Layout = DecodeUtf8(s);
                        hasLayout = true;
                    }
                    else if (MsgPackReader.KeyEquals(k, "names")) names = ReadNames(ref r);
                    else if (MsgPackReader.KeyEquals(k, "w")) { w = r.ReadBin(); hasW = true; }
                    else if (MsgPackReader.KeyEquals(k, "pose"))
                    {
                        var p = r.ReadBin();
                        if (p.Count != 24) return Fail(out error, "pose is not 6 float32");
                        MsgPackReader.CopyFloat32LE(p, frame.Pose, 0);
                        frame.HasPose = true;
                    }
                    else if (MsgPackReader.KeyEquals(k, "speech")) { frame.Speech = r.ReadBool(); frame.HasSpeech = true; }
                    else r.Skip();
                }
                if (!r.AtEnd) return Fail(out error, "trailing bytes after the map");
                if (!hasV) return Fail(out error, "missing v");
                if (v != Version) return Fail(out error, "unsupported protocol version " + v);
                if (!hasType) return Fail(out error, "missing type");
                if (!hasStream || !IsValidStreamId(frame.Stream)) return Fail(out error, "missing or invalid stream");
                if (!hasSeq || frame.Seq < 0) return Fail(out error, "missing or negative seq");
                if (!hasT || double.IsNaN(frame.T) || double.IsInfinity(frame.T)) return Fail(out error, "missing or non-finite t");
                if (!hasLayout) return Fail(out error, "missing layout");
                if (!hasW) return Fail(out error, "missing w");
                if (w.Count % 4 != 0) return Fail(out error, "w is not packed float32");
                if (names != null)
                {
                    if (knownNames != null)
                    {
                        string[] old;
                        if (knownNames.TryGetValue(frame.Layout, out old) && SameNames(old, names)) names = old;
                        else knownNames[frame.Layout] = names;
                    }
                }
                else if (knownNames != null) knownNames.TryGetValue(frame.Layout, out names);
                int count4 = w.Count / 4;
                if (names != null && names.Length != count4)
                    return Fail(out error, "w has " + count4 + " values but the layout has " + names.Length + " names");
                if (frame.Fps != 0 && !(frame.Fps >= 1 && frame.Fps <= 120)) return Fail(out error, "fps out of range 1..120");
                if (frame.Weights.Length < count4) frame.Weights = new float[count4];
                MsgPackReader.CopyFloat32LE(w, frame.Weights, 0);
                for (int i = 0; i < count4; i++)
                    if (float.IsNaN(frame.Weights[i]) || float.IsInfinity(frame.Weights[i])) return Fail(out error, "w holds a non-finite value");
                if (frame.HasPose)
                    for (int i = 0; i < 6; i++)
                        if (float.IsNaN(frame.Pose[i]) || float.IsInfinity(frame.Pose[i])) return Fail(out error, "pose holds a non-finite value");
                frame.Names = names;
                frame.Count = count4;
                return true;
            }
            catch (MsgPackException e) { return Fail(out error, e.Message); }
        }

        static readonly System.Text.UTF8Encoding Utf8Strict = new System.Text.UTF8Encoding(false, true);

        static string DecodeUtf8(ArraySegment<byte> s)
        {
            try { return Utf8Strict.GetString(s.Array, s.Offset, s.Count); }
            catch (ArgumentException) { throw new MsgPackException("invalid UTF-8 in str"); }
        }

        static StreamInfo ReadStreamInfo(ref MsgPackReader r)
        {
            var s = new StreamInfo();
            int n = r.ReadMapHeader();
            for (int i = 0; i < n; i++)
            {
                var k = r.ReadStrBytes();
                if (MsgPackReader.KeyEquals(k, "stream")) s.Stream = r.ReadString();
                else if (MsgPackReader.KeyEquals(k, "source")) s.Source = r.ReadString();
                else if (MsgPackReader.KeyEquals(k, "fps")) s.Fps = r.ReadDouble();
                else if (MsgPackReader.KeyEquals(k, "lookahead_ms") && !r.TryReadNil()) s.LookaheadMs = r.ReadDouble();
                else if (MsgPackReader.KeyEquals(k, "seq") && !r.TryReadNil()) s.Seq = r.ReadInt();
                else if (MsgPackReader.KeyEquals(k, "layout")) s.Layout = r.ReadString();
                else r.Skip();
            }
            return s;
        }

        static Dictionary<string, string[]> ReadLayouts(ref MsgPackReader r)
        {
            var d = new Dictionary<string, string[]>();
            int n = r.ReadMapHeader();
            for (int i = 0; i < n; i++)
            {
                string id = r.ReadString();
                d[id] = ReadNames(ref r);
            }
            return d;
        }

        static void ReadModel(ref MsgPackReader r, StatusMessage st)
        {
            int n = r.ReadMapHeader();
            for (int i = 0; i < n; i++)
            {
                var k = r.ReadStrBytes();
                if (MsgPackReader.KeyEquals(k, "name") && r.PeekType() == MsgPackType.Str) st.ModelName = r.ReadString();
                else if (MsgPackReader.KeyEquals(k, "space") && r.PeekType() == MsgPackType.Str) st.ModelSpace = r.ReadString();
                else if (MsgPackReader.KeyEquals(k, "sample_rate") && r.PeekType() == MsgPackType.Int) st.ModelSampleRate = r.ReadInt();
                else r.Skip();
            }
        }

        /// <summary>Decodes a `status` message, or the reply to `status` / `hello` (same fields).</summary>
        public static bool TryDecodeStatus(byte[] buf, int offset, int count, StatusMessage st, out string error)
        {
            error = null;
            try
            {
                var r = new MsgPackReader(buf, offset, count);
                if (r.PeekType() != MsgPackType.Map) return Fail(out error, "payload is not a map");
                int n = r.ReadMapHeader();
                long v = -1;
                for (int i = 0; i < n; i++)
                {
                    if (r.PeekType() != MsgPackType.Str) return Fail(out error, "map key is not a str");
                    var k = r.ReadStrBytes();
                    if (MsgPackReader.KeyEquals(k, "v")) v = r.ReadInt();
                    else if (MsgPackReader.KeyEquals(k, "wall")) st.Wall = r.ReadDouble();
                    else if (MsgPackReader.KeyEquals(k, "server")) st.Server = r.ReadString();
                    else if (MsgPackReader.KeyEquals(k, "layouts")) st.Layouts = ReadLayouts(ref r);
                    else if (MsgPackReader.KeyEquals(k, "streams"))
                    {
                        int m = r.ReadArrayHeader();
                        var list = new List<StreamInfo>(m);
                        for (int j = 0; j < m; j++) list.Add(ReadStreamInfo(ref r));
                        st.Streams = list;
                    }
                    else if (MsgPackReader.KeyEquals(k, "model")) ReadModel(ref r, st);
                    else r.Skip();
                }
                if (!r.AtEnd) return Fail(out error, "trailing bytes after the map");
                if (v != Version) return Fail(out error, v < 0 ? "missing v" : "unsupported protocol version " + v);
                return true;
            }
            catch (MsgPackException e) { return Fail(out error, e.Message); }
        }

        public static bool TryDecodeEvent(byte[] buf, int offset, int count, EventMessage ev, out string error)
        {
            error = null;
            try
            {
                var r = new MsgPackReader(buf, offset, count);
                if (r.PeekType() != MsgPackType.Map) return Fail(out error, "payload is not a map");
                int n = r.ReadMapHeader();
                long v = -1;
                for (int i = 0; i < n; i++)
                {
                    if (r.PeekType() != MsgPackType.Str) return Fail(out error, "map key is not a str");
                    var k = r.ReadStrBytes();
                    if (MsgPackReader.KeyEquals(k, "v")) v = r.ReadInt();
                    else if (MsgPackReader.KeyEquals(k, "stream")) ev.Stream = r.ReadString();
                    else if (MsgPackReader.KeyEquals(k, "wall")) ev.Wall = r.ReadDouble();
                    else if (MsgPackReader.KeyEquals(k, "t")) { if (!r.TryReadNil()) ev.T = r.ReadDouble(); }
                    else if (MsgPackReader.KeyEquals(k, "event")) ev.Event = r.ReadString();
                    else if (MsgPackReader.KeyEquals(k, "message")) { if (!r.TryReadNil()) ev.Message = r.ReadString(); }
                    else r.Skip();
                }
                if (!r.AtEnd) return Fail(out error, "trailing bytes after the map");
                if (v != Version) return Fail(out error, v < 0 ? "missing v" : "unsupported protocol version " + v);
                if (string.IsNullOrEmpty(ev.Event)) return Fail(out error, "missing event");
                return true;
            }
            catch (MsgPackException e) { return Fail(out error, e.Message); }
        }

        public static bool TryDecodeVideo(byte[] buf, int offset, int count, VideoMessage vm, out string error)
        {
            error = null;
            try
            {
                var r = new MsgPackReader(buf, offset, count);
                if (r.PeekType() != MsgPackType.Map) return Fail(out error, "payload is not a map");
                int n = r.ReadMapHeader();
                long v = -1;
                for (int i = 0; i < n; i++)
                {
                    if (r.PeekType() != MsgPackType.Str) return Fail(out error, "map key is not a str");
                    var k = r.ReadStrBytes();
                    if (MsgPackReader.KeyEquals(k, "v")) v = r.ReadInt();
                    else if (MsgPackReader.KeyEquals(k, "stream")) vm.Stream = r.ReadString();
                    else if (MsgPackReader.KeyEquals(k, "seq")) vm.Seq = r.ReadInt();
                    else if (MsgPackReader.KeyEquals(k, "t")) vm.T = r.ReadDouble();
                    else if (MsgPackReader.KeyEquals(k, "wall")) vm.Wall = r.ReadDouble();
                    else if (MsgPackReader.KeyEquals(k, "width")) vm.Width = (int)Math.Min(int.MaxValue, r.ReadInt());
                    else if (MsgPackReader.KeyEquals(k, "height")) vm.Height = (int)Math.Min(int.MaxValue, r.ReadInt());
                    else if (MsgPackReader.KeyEquals(k, "encoding")) vm.Encoding = r.ReadString();
                    else if (MsgPackReader.KeyEquals(k, "data"))
                    {
                        var d = r.ReadBin();
                        vm.Data = new byte[d.Count];
                        Buffer.BlockCopy(d.Array, d.Offset, vm.Data, 0, d.Count);
                    }
                    else r.Skip();
                }
                if (!r.AtEnd) return Fail(out error, "trailing bytes after the map");
                if (v != Version) return Fail(out error, v < 0 ? "missing v" : "unsupported protocol version " + v);
                if (vm.Data == null) return Fail(out error, "missing data");
                if (vm.Encoding == "rgb8" && (long)vm.Width * vm.Height * 3 != vm.Data.Length)
                    return Fail(out error, "rgb8 data is not width*height*3 bytes");
                return true;
            }
            catch (MsgPackException e) { return Fail(out error, e.Message); }
        }

        /// <summary>Decodes the common reply fields (v, op, id, ok, error).</summary>
        public static bool TryDecodeReply(byte[] buf, int offset, int count, Reply reply, out string error)
        {
            error = null;
            try
            {
                var r = new MsgPackReader(buf, offset, count);
                if (r.PeekType() != MsgPackType.Map) return Fail(out error, "payload is not a map");
                int n = r.ReadMapHeader();
                long v = -1;
                bool hasOk = false;
                for (int i = 0; i < n; i++)
                {
                    if (r.PeekType() != MsgPackType.Str) return Fail(out error, "map key is not a str");
                    var k = r.ReadStrBytes();
                    if (MsgPackReader.KeyEquals(k, "v")) v = r.ReadInt();
                    else if (MsgPackReader.KeyEquals(k, "op")) { if (!r.TryReadNil()) reply.Op = r.ReadString(); }
                    else if (MsgPackReader.KeyEquals(k, "id"))
                    {
                        var t = r.PeekType();
                        if (t == MsgPackType.Int) reply.Id = r.ReadInt().ToString(System.Globalization.CultureInfo.InvariantCulture);
                        else if (t == MsgPackType.Str) reply.Id = r.ReadString();
                        else r.Skip();
                    }
                    else if (MsgPackReader.KeyEquals(k, "ok")) { reply.Ok = r.ReadBool(); hasOk = true; }
                    else if (MsgPackReader.KeyEquals(k, "error"))
                    {
                        if (r.TryReadNil()) continue;
                        int m = r.ReadMapHeader();
                        for (int j = 0; j < m; j++)
                        {
                            var ek = r.ReadStrBytes();
                            if (MsgPackReader.KeyEquals(ek, "code")) reply.ErrorCode = r.ReadString();
                            else if (MsgPackReader.KeyEquals(ek, "message")) reply.ErrorMessage = r.ReadString();
                            else r.Skip();
                        }
                    }
                    else r.Skip();
                }
                if (!r.AtEnd) return Fail(out error, "trailing bytes after the map");
                if (!hasOk) return Fail(out error, "missing ok");
                // an unsupported_version reply may carry another v; everything else must be ours
                if (v != Version && reply.ErrorCode != "unsupported_version")
                    return Fail(out error, v < 0 ? "missing v" : "unsupported protocol version " + v);
                return true;
            }
            catch (MsgPackException e) { return Fail(out error, e.Message); }
        }

        /// <summary>Decodes the fields of a successful `bake` reply.</summary>
        public static bool TryDecodeBake(byte[] buf, int offset, int count, CoefficientTrack track, out string error)
        {
            error = null;
            try
            {
                var r = new MsgPackReader(buf, offset, count);
                int n = r.ReadMapHeader();
                long frames = -1;
                ArraySegment<byte> w = default(ArraySegment<byte>);
                bool hasW = false, hasNames = false, hasFps = false;
                for (int i = 0; i < n; i++)
                {
                    var k = r.ReadStrBytes();
                    if (MsgPackReader.KeyEquals(k, "fps")) { track.Fps = r.ReadDouble(); hasFps = true; }
                    else if (MsgPackReader.KeyEquals(k, "t0")) track.T0 = r.ReadDouble();
                    else if (MsgPackReader.KeyEquals(k, "layout")) track.Layout = r.ReadString();
                    else if (MsgPackReader.KeyEquals(k, "names")) { track.Names = ReadNames(ref r); hasNames = true; }
                    else if (MsgPackReader.KeyEquals(k, "n_frames")) frames = r.ReadInt();
                    else if (MsgPackReader.KeyEquals(k, "w")) { w = r.ReadBin(); hasW = true; }
                    else r.Skip();
                }
                if (!hasW || !hasNames || !hasFps || frames < 0) return Fail(out error, "bake reply lacks fps, names, n_frames or w");
                if (!(track.Fps > 0) || double.IsInfinity(track.Fps)) return Fail(out error, "bake reply has a bad fps");
                if ((long)w.Count != frames * track.Names.Length * 4)
                    return Fail(out error, "bake reply: w has " + w.Count + " bytes, expected n_frames*len(names)*4");
                track.FrameCount = (int)frames;
                track.Weights = new float[w.Count / 4];
                MsgPackReader.CopyFloat32LE(w, track.Weights, 0);
                return true;
            }
            catch (MsgPackException e) { return Fail(out error, e.Message); }
        }

        /// <summary>Reads one named field of a reply as a generic object (for small replies such as push_audio).</summary>
        public static object ReadField(byte[] buf, int offset, int count, string key)
        {
            var r = new MsgPackReader(buf, offset, count);
            int n = r.ReadMapHeader();
            for (int i = 0; i < n; i++)
            {
                var k = r.ReadStrBytes();
                if (MsgPackReader.KeyEquals(k, key)) return r.ReadObject();
                r.Skip();
            }
            return null;
        }

        // ---- requests ----

        /// <summary>Starts a request map: writes v, op, id; `extra` is the number of argument pairs to follow.</summary>
        public static void BeginRequest(MsgPackWriter w, string op, long id, int extra)
        {
            w.Clear();
            w.WriteMapHeader(3 + extra);
            w.WriteString("v"); w.WriteInt(Version);
            w.WriteString("op"); w.WriteString(op);
            w.WriteString("id"); w.WriteInt(id);
        }

        public static void WriteHello(MsgPackWriter w, long id, string client)
        {
            BeginRequest(w, "hello", id, 2);
            w.WriteString("client"); w.WriteString(client);
            w.WriteString("versions"); w.WriteArrayHeader(1); w.WriteInt(Version);
        }

        public static void WriteBakeF32(MsgPackWriter w, long id, float[] samples, int offset, int count, int sampleRate, double fps)
        {
            BeginRequest(w, "bake", id, 4);
            w.WriteString("audio"); w.WriteFloat32LE(samples, offset, count);
            w.WriteString("format"); w.WriteString("f32");
            w.WriteString("sample_rate"); w.WriteInt(sampleRate);
            w.WriteString("fps"); w.WriteDouble(fps);
        }

        /// <summary>A bake of 16-bit PCM bytes (half the upload of float).</summary>
        public static void WriteBakeS16(MsgPackWriter w, long id, byte[] pcm, int sampleRate, double fps)
        {
            BeginRequest(w, "bake", id, 4);
            w.WriteString("audio"); w.WriteBin(pcm, 0, pcm.Length);
            w.WriteString("format"); w.WriteString("s16");
            w.WriteString("sample_rate"); w.WriteInt(sampleRate);
            w.WriteString("fps"); w.WriteDouble(fps);
        }

        public static void WriteBakeFile(MsgPackWriter w, long id, byte[] file, double fps)
        {
            BeginRequest(w, "bake", id, 3);
            w.WriteString("audio"); w.WriteBin(file, 0, file.Length);
            w.WriteString("format"); w.WriteString("file");
            w.WriteString("fps"); w.WriteDouble(fps);
        }

        public static void WriteStreamOpen(MsgPackWriter w, long id, string stream, int fps, int sampleRate)
        {
            BeginRequest(w, "stream_open", id, stream == null ? 2 : 3);
            if (stream != null) { w.WriteString("stream"); w.WriteString(stream); }
            w.WriteString("fps"); w.WriteInt(fps);
            w.WriteString("sample_rate"); w.WriteInt(sampleRate);
        }

        public static void WritePushAudio(MsgPackWriter w, long id, string stream, float[] samples, int offset, int count)
        {
            BeginRequest(w, "push_audio", id, 3);
            w.WriteString("stream"); w.WriteString(stream);
            w.WriteString("pcm"); w.WriteFloat32LE(samples, offset, count);
            w.WriteString("format"); w.WriteString("f32");
        }

        public static void WriteStreamClose(MsgPackWriter w, long id, string stream)
        {
            BeginRequest(w, "stream_close", id, 1);
            w.WriteString("stream"); w.WriteString(stream);
        }
    }
}
