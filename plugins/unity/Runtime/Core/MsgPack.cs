// Hand-written msgpack reader/writer for exactly the types protocol v1 uses.
// No reflection (IL2CPP-safe) and no allocation for keys: keys are compared as bytes.
using System;
using System.Collections.Generic;
using System.Text;

namespace RealtalkBridge
{
    public sealed class MsgPackException : Exception
    {
        public MsgPackException(string message) : base(message) { }
    }

    public enum MsgPackType { Nil, Bool, Int, Float, Str, Bin, Array, Map, Ext, Invalid }

    /// <summary>Reads one msgpack buffer front to back. A struct, so decoding a frame allocates nothing for the
    /// reader; pass it by ref.</summary>
    public struct MsgPackReader
    {
        // Nesting deeper than this is rejected: a hostile payload must not overflow the stack in Skip.
        public const int MaxDepth = 32;

        byte[] _buf;
        int _pos;
        int _end;

        public MsgPackReader(byte[] buffer) : this(buffer, 0, buffer == null ? 0 : buffer.Length) { }
        public MsgPackReader(byte[] buffer, int offset, int count)
        {
            _buf = null; _pos = 0; _end = 0;
            Reset(buffer, offset, count);
        }

        public void Reset(byte[] buffer, int offset, int count)
        {
            if (buffer == null) throw new ArgumentNullException("buffer");
            if (offset < 0 || count < 0 || offset + count > buffer.Length) throw new ArgumentOutOfRangeException("count");
            _buf = buffer; _pos = offset; _end = offset + count;
        }

        public int Position { get { return _pos; } }
        public bool AtEnd { get { return _pos >= _end; } }
        public byte[] Buffer { get { return _buf; } }

        void Need(int n)
        {
            if (n < 0 || _end - _pos < n) throw new MsgPackException("truncated msgpack data");
        }

        byte U8() { Need(1); return _buf[_pos++]; }
        ushort U16() { Need(2); ushort v = (ushort)((_buf[_pos] << 8) | _buf[_pos + 1]); _pos += 2; return v; }
        uint U32()
        {
            Need(4);
            uint v = ((uint)_buf[_pos] << 24) | ((uint)_buf[_pos + 1] << 16) | ((uint)_buf[_pos + 2] << 8) | _buf[_pos + 3];
            _pos += 4; return v;
        }
        ulong U64() { ulong hi = U32(); ulong lo = U32(); return (hi << 32) | lo; }

        public MsgPackType PeekType()
        {
            Need(1);
            byte b = _buf[_pos];
            if (b <= 0x7f || b >= 0xe0) return MsgPackType.Int;
            if (b <= 0x8f) return MsgPackType.Map;
            if (b <= 0x9f) return MsgPackType.Array;
            if (b <= 0xbf) return MsgPackType.Str;
            switch (b)
            {
                case 0xc0: return MsgPackType.Nil;
                case 0xc2: case 0xc3: return MsgPackType.Bool;
                case 0xc4: case 0xc5: case 0xc6: return MsgPackType.Bin;
                case 0xc7: case 0xc8: case 0xc9: case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return MsgPackType.Ext;
                case 0xca: case 0xcb: return MsgPackType.Float;
                case 0xcc: case 0xcd: case 0xce: case 0xcf: case 0xd0: case 0xd1: case 0xd2: case 0xd3: return MsgPackType.Int;
                case 0xd9: case 0xda: case 0xdb: return MsgPackType.Str;
                case 0xdc: case 0xdd: return MsgPackType.Array;
                case 0xde: case 0xdf: return MsgPackType.Map;
                default: return MsgPackType.Invalid; // 0xc1 is never used
            }
        }

        public bool TryReadNil()
        {
            Need(1);
            if (_buf[_pos] != 0xc0) return false;
            _pos++;
            return true;
        }

        public bool ReadBool()
        {
            byte b = U8();
            if (b == 0xc2) return false;
            if (b == 0xc3) return true;
            _pos--;
            throw new MsgPackException("expected bool");
        }

        public long ReadInt()
        {
            byte b = U8();
            if (b <= 0x7f) return b;
            if (b >= 0xe0) return (sbyte)b;
            switch (b)
            {
                case 0xcc: return U8();
                case 0xcd: return U16();
                case 0xce: return U32();
                case 0xcf:
                    {
                        ulong v = U64();
                        if (v > long.MaxValue) throw new MsgPackException("integer out of range");
                        return (long)v;
                    }
                case 0xd0: return (sbyte)U8();
                case 0xd1: return (short)U16();
                case 0xd2: return (int)U32();
                case 0xd3: return (long)U64();
            }
            _pos--;
            throw new MsgPackException("expected int");
        }

        /// <summary>A float, or an int read as a number (times may arrive as ints from other encoders).</summary>
        public double ReadDouble()
        {
            Need(1);
            byte b = _buf[_pos];
            if (b == 0xca)
            {
                _pos++;
                uint bits = U32();
                return BitConverter.ToSingle(BitConverter.GetBytes(bits), 0);
            }
            if (b == 0xcb)
            {
                _pos++;
                ulong bits = U64();
                return BitConverter.Int64BitsToDouble((long)bits);
            }
            if (PeekType() == MsgPackType.Int) return ReadInt();
            throw new MsgPackException("expected float");
        }

        int ReadStrHeader()
        {
            byte b = U8();
            if (b >= 0xa0 && b <= 0xbf) return b & 0x1f;
            if (b == 0xd9) return U8();
            if (b == 0xda) return U16();
            if (b == 0xdb) return CheckLen(U32());
            _pos--;
            throw new MsgPackException("expected str");
        }

        int CheckLen(uint n)
        {
            if (n > int.MaxValue) throw new MsgPackException("length out of range");
            return (int)n;
        }

        /// <summary>The raw UTF-8 bytes of a str, without copying.</summary>
        public ArraySegment<byte> ReadStrBytes()
        {
            int n = ReadStrHeader();
            Need(n);
            var seg = new ArraySegment<byte>(_buf, _pos, n);
            _pos += n;
            return seg;
        }

        public string ReadString()
        {
            var seg = ReadStrBytes();
            try { return Utf8Strict.GetString(seg.Array, seg.Offset, seg.Count); }
            catch (ArgumentException) { throw new MsgPackException("invalid UTF-8 in str"); }
        }

        static readonly UTF8Encoding Utf8Strict = new UTF8Encoding(false, true);

        /// <summary>Compares a str at the cursor against an ASCII key and consumes it either way.</summary>
        public static bool KeyEquals(ArraySegment<byte> key, string ascii)
        {
            if (key.Count != ascii.Length) return false;
            for (int i = 0; i < key.Count; i++)
                if (key.Array[key.Offset + i] != (byte)ascii[i]) return false;
            return true;
        }

        public ArraySegment<byte> ReadBin()
        {
            byte b = U8();
            int n;
            if (b == 0xc4) n = U8();
            else if (b == 0xc5) n = U16();
            else if (b == 0xc6) n = CheckLen(U32());
            else { _pos--; throw new MsgPackException("expected bin"); }
            Need(n);
            var seg = new ArraySegment<byte>(_buf, _pos, n);
            _pos += n;
            return seg;
        }

        public int ReadArrayHeader()
        {
            byte b = U8();
            int n;
            if (b >= 0x90 && b <= 0x9f) n = b & 0x0f;
            else if (b == 0xdc) n = U16();
            else if (b == 0xdd) n = CheckLen(U32());
            else { _pos--; throw new MsgPackException("expected array"); }
            // every element takes at least one byte: reject impossible counts before anyone allocates for them
            Need(n);
            return n;
        }

        public int ReadMapHeader()
        {
            byte b = U8();
            int n;
            if (b >= 0x80 && b <= 0x8f) n = b & 0x0f;
            else if (b == 0xde) n = U16();
            else if (b == 0xdf) n = CheckLen(U32());
            else { _pos--; throw new MsgPackException("expected map"); }
            if (n > (_end - _pos) / 2) throw new MsgPackException("truncated msgpack data");
            return n;
        }

        /// <summary>Skips one value of any type (unknown keys are ignored, per the spec).</summary>
        public void Skip() { Skip(0); }

        void Skip(int depth)
        {
            if (depth > MaxDepth) throw new MsgPackException("msgpack nesting too deep");
            Need(1);
            byte b = _buf[_pos];
            switch (PeekType())
            {
                case MsgPackType.Nil: _pos++; return;
                case MsgPackType.Bool: _pos++; return;
                case MsgPackType.Int: ReadInt(); return;
                case MsgPackType.Float: ReadDouble(); return;
                case MsgPackType.Str: ReadStrBytes(); return;
                case MsgPackType.Bin: ReadBin(); return;
                case MsgPackType.Array:
                    {
                        int n = ReadArrayHeader();
                        for (int i = 0; i < n; i++) Skip(depth + 1);
                        return;
                    }
                case MsgPackType.Map:
                    {
                        int n = ReadMapHeader();
                        for (int i = 0; i < 2 * n; i++) Skip(depth + 1);
                        return;
                    }
                case MsgPackType.Ext:
                    {
                        _pos++;
                        int n;
                        if (b == 0xd4) n = 1; else if (b == 0xd5) n = 2; else if (b == 0xd6) n = 4;
                        else if (b == 0xd7) n = 8; else if (b == 0xd8) n = 16;
                        else if (b == 0xc7) n = U8(); else if (b == 0xc8) n = U16(); else n = CheckLen(U32());
                        Need(n + 1);
                        _pos += n + 1;
                        return;
                    }
                default:
                    throw new MsgPackException("invalid msgpack byte 0x" + b.ToString("x2"));
            }
        }

        /// <summary>Decodes any value into plain objects (Dictionary, List, string, long, double, bool, byte[], null).
        /// For tools and tests; the hot path uses the typed decoders in Protocol.</summary>
        public object ReadObject() { return ReadObject(0); }

        object ReadObject(int depth)
        {
            if (depth > MaxDepth) throw new MsgPackException("msgpack nesting too deep");
            switch (PeekType())
            {
                case MsgPackType.Nil: _pos++; return null;
                case MsgPackType.Bool: return ReadBool();
                case MsgPackType.Int: return ReadInt();
                case MsgPackType.Float: return ReadDouble();
                case MsgPackType.Str: return ReadString();
                case MsgPackType.Bin:
                    {
                        var seg = ReadBin();
                        var copy = new byte[seg.Count];
                        System.Buffer.BlockCopy(seg.Array, seg.Offset, copy, 0, seg.Count);
                        return copy;
                    }
                case MsgPackType.Array:
                    {
                        int n = ReadArrayHeader();
                        var list = new List<object>(n);
                        for (int i = 0; i < n; i++) list.Add(ReadObject(depth + 1));
                        return list;
                    }
                case MsgPackType.Map:
                    {
                        int n = ReadMapHeader();
                        var map = new Dictionary<string, object>(n);
                        for (int i = 0; i < n; i++)
                        {
                            if (PeekType() != MsgPackType.Str) throw new MsgPackException("map key is not a str");
                            string k = ReadString();
                            map[k] = ReadObject(depth + 1);
                        }
                        return map;
                    }
                case MsgPackType.Ext: Skip(depth); return null;
                default: throw new MsgPackException("invalid msgpack byte");
            }
        }

        /// <summary>Copies packed little-endian float32 bytes into dst (no per-element allocation).</summary>
        public static void CopyFloat32LE(ArraySegment<byte> src, float[] dst, int dstOffset)
        {
            int n = src.Count / 4;
            if (src.Count % 4 != 0) throw new MsgPackException("float32 array length is not a multiple of 4");
            if (dstOffset + n > dst.Length) throw new ArgumentException("destination too small");
            if (BitConverter.IsLittleEndian)
            {
                System.Buffer.BlockCopy(src.Array, src.Offset, dst, dstOffset * 4, src.Count);
            }
            else
            {
                var tmp = new byte[4];
                for (int i = 0; i < n; i++)
                {
                    int o = src.Offset + 4 * i;
                    tmp[0] = src.Array[o + 3]; tmp[1] = src.Array[o + 2]; tmp[2] = src.Array[o + 1]; tmp[3] = src.Array[o];
                    dst[dstOffset + i] = BitConverter.ToSingle(tmp, 0);
                }
            }
        }
    }

    /// <summary>A growable msgpack writer for requests. Reuse with Clear.</summary>
    public sealed class MsgPackWriter
    {
        byte[] _buf;
        int _len;

        public MsgPackWriter(int capacity = 256) { _buf = new byte[Math.Max(16, capacity)]; }

        public int Length { get { return _len; } }
        public void Clear() { _len = 0; }
        public byte[] ToArray()
        {
            var r = new byte[_len];
            System.Buffer.BlockCopy(_buf, 0, r, 0, _len);
            return r;
        }
        public ArraySegment<byte> AsSegment() { return new ArraySegment<byte>(_buf, 0, _len); }

        void Grow(int n)
        {
            if (_len + n <= _buf.Length) return;
            int cap = _buf.Length;
            while (cap < _len + n) cap *= 2;
            var nb = new byte[cap];
            System.Buffer.BlockCopy(_buf, 0, nb, 0, _len);
            _buf = nb;
        }

        void B(byte b) { Grow(1); _buf[_len++] = b; }
        void BE16(int v) { Grow(2); _buf[_len++] = (byte)(v >> 8); _buf[_len++] = (byte)v; }
        void BE32(uint v)
        {
            Grow(4);
            _buf[_len++] = (byte)(v >> 24); _buf[_len++] = (byte)(v >> 16); _buf[_len++] = (byte)(v >> 8); _buf[_len++] = (byte)v;
        }
        void BE64(ulong v) { BE32((uint)(v >> 32)); BE32((uint)v); }

        public void WriteNil() { B(0xc0); }
        public void WriteBool(bool v) { B(v ? (byte)0xc3 : (byte)0xc2); }

        public void WriteInt(long v)
        {
            if (v >= 0)
            {
                if (v <= 0x7f) B((byte)v);
                else if (v <= 0xff) { B(0xcc); B((byte)v); }
                else if (v <= 0xffff) { B(0xcd); BE16((int)v); }
                else if (v <= 0xffffffffL) { B(0xce); BE32((uint)v); }
                else { B(0xcf); BE64((ulong)v); }
            }
            else
            {
                if (v >= -32) B((byte)(sbyte)v);
                else if (v >= sbyte.MinValue) { B(0xd0); B((byte)(sbyte)v); }
                else if (v >= short.MinValue) { B(0xd1); BE16((short)v); }
                else if (v >= int.MinValue) { B(0xd2); BE32((uint)(int)v); }
                else { B(0xd3); BE64((ulong)v); }
            }
        }

        public void WriteDouble(double v) { B(0xcb); BE64((ulong)BitConverter.DoubleToInt64Bits(v)); }

        public void WriteString(string s)
        {
            int n = Encoding.UTF8.GetByteCount(s);
            if (n <= 31) B((byte)(0xa0 | n));
            else if (n <= 0xff) { B(0xd9); B((byte)n); }
            else if (n <= 0xffff) { B(0xda); BE16(n); }
            else { B(0xdb); BE32((uint)n); }
            Grow(n);
            _len += Encoding.UTF8.GetBytes(s, 0, s.Length, _buf, _len);
        }

        void BinHeader(int n)
        {
            if (n <= 0xff) { B(0xc4); B((byte)n); }
            else if (n <= 0xffff) { B(0xc5); BE16(n); }
            else { B(0xc6); BE32((uint)n); }
        }

        public void WriteBin(byte[] data, int offset, int count)
        {
            BinHeader(count);
            Grow(count);
            System.Buffer.BlockCopy(data, offset, _buf, _len, count);
            _len += count;
        }

        /// <summary>Writes floats as a bin of packed little-endian float32.</summary>
        public void WriteFloat32LE(float[] data, int offset, int count)
        {
            int n = count * 4;
            BinHeader(n);
            Grow(n);
            if (BitConverter.IsLittleEndian)
            {
                System.Buffer.BlockCopy(data, offset * 4, _buf, _len, n);
            }
            else
            {
                for (int i = 0; i < count; i++)
                {
                    byte[] b = BitConverter.GetBytes(data[offset + i]);
                    _buf[_len + 4 * i] = b[3]; _buf[_len + 4 * i + 1] = b[2]; _buf[_len + 4 * i + 2] = b[1]; _buf[_len + 4 * i + 3] = b[0];
                }
            }
            _len += n;
        }

        public void WriteArrayHeader(int n)
        {
            if (n <= 15) B((byte)(0x90 | n));
            else if (n <= 0xffff) { B(0xdc); BE16(n); }
            else { B(0xdd); BE32((uint)n); }
        }

        public void WriteMapHeader(int n)
        {
            if (n <= 15) B((byte)(0x80 | n));
            else if (n <= 0xffff) { B(0xde); BE16(n); }
            else { B(0xdf); BE32((uint)n); }
        }
    }
}
