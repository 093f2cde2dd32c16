// A port (not a copy) of the OSC parse logic of hecomi/uOSC, the OSC library inside EVMC4U and many
// Unity VMC receivers: Assets/uOSC/Runtime/Core/Parser.cs (Parse, ParseBundle, ParseData) with
// Scripts/Core/Reader.cs and Util.cs (string padding (n + 4) & ~3, big-endian int/float/timetag,
// bundle elements whose size must be a multiple of 4, unknown type tags leave the value unset and
// do not advance). Written for the realtalk-bridge conformance tests (C# 7.2, Debian mono-mcs).
//
// stdin: datagrams, each as a 4-byte big-endian length + the bytes. stdout per datagram:
//   "DGRAM", then one line per message: address, TAB, then TAB-separated values as
//   i:<int>  f:<float32 bits in hex>  s:<string>  b:<blob length>  T  F  ?:<tag> (unsupported),
//   and "ERR <text>" for what uOSC reports as an error (LogErrorFormat).
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

static class UoscPort
{
    static int StringSize(int n) { return (n + 4) & ~0x3; }
    static int BlobSize(int n) { int o = n & ~0x3; return o == n ? n : o + 4; }

    static byte[] BigEndian(byte[] buf, int pos, int n)
    {
        var c = new byte[n];
        Array.Copy(buf, pos, c, 0, n);
        if (BitConverter.IsLittleEndian) Array.Reverse(c);
        return c;
    }

    static string ReadString(byte[] buf, ref int pos)
    {
        int n = 0;
        while (buf[pos + n] != 0) n++;
        var s = Encoding.UTF8.GetString(buf, pos, n);
        pos += StringSize(n);
        return s;
    }

    static int ReadInt(byte[] buf, ref int pos) { var v = BitConverter.ToInt32(BigEndian(buf, pos, 4), 0); pos += 4; return v; }
    static uint ReadFloatBits(byte[] buf, ref int pos) { var v = BitConverter.ToUInt32(BigEndian(buf, pos, 4), 0); pos += 4; return v; }
    static ulong ReadTimetag(byte[] buf, ref int pos) { var v = BitConverter.ToUInt64(BigEndian(buf, pos, 8), 0); pos += 8; return v; }

    static void Parse(byte[] buf, ref int pos, int end, List<string> lines)
    {
        var first = ReadString(buf, ref pos);
        if (first == "#bundle")
        {
            ReadTimetag(buf, ref pos);
            while (pos < end)
            {
                int size = ReadInt(buf, ref pos);
                if ((size & ~0x3) == size) Parse(buf, ref pos, pos + size, lines);
                else { lines.Add("ERR bundle element size " + size + " is not a multiple of 4"); pos += size; }
            }
        }
        else
        {
            var sb = new StringBuilder(first);
            var types = ReadString(buf, ref pos).Substring(1);  // drop ','
            foreach (char t in types)
            {
                sb.Append('\t');
                switch (t)
                {
                    case 'i': sb.Append("i:").Append(ReadInt(buf, ref pos)); break;
                    case 'f': sb.Append("f:").Append(ReadFloatBits(buf, ref pos).ToString("x8")); break;
                    case 's': sb.Append("s:").Append(ReadString(buf, ref pos)); break;
                    case 'b': { int n = ReadInt(buf, ref pos); sb.Append("b:").Append(n); pos += BlobSize(n); break; }
                    case 'T': sb.Append('T'); break;
                    case 'F': sb.Append('F'); break;
                    default: sb.Append("?:").Append(t); break;  // uOSC: value left null, position not moved
                }
            }
            lines.Add(sb.ToString());
        }
        if (pos != end) lines.Add("ERR parsed size " + pos + " != given size " + end);
    }

    static int Main()
    {
        var input = new MemoryStream();
        Console.OpenStandardInput().CopyTo(input);
        var data = input.ToArray();
        int at = 0;
        var stdout = new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false));
        while (at + 4 <= data.Length)
        {
            int n = BitConverter.ToInt32(BigEndian(data, at, 4), 0);
            at += 4;
            var dgram = new byte[n];
            Array.Copy(data, at, dgram, 0, n);
            at += n;
            var lines = new List<string>();
            int pos = 0;
            try { Parse(dgram, ref pos, n, lines); }
            catch (Exception e) { lines.Add("ERR exception " + e.GetType().Name); }
            stdout.WriteLine("DGRAM");
            foreach (var l in lines) stdout.WriteLine(l);
        }
        stdout.Flush();
        return 0;
    }
}
