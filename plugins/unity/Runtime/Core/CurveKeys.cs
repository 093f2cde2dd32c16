// ZeroMQ CURVE key files as written by `realtalk-bridge serve --make-curve-keys` (pyzmq's zmq.auth certificates):
// text with `public-key = "<40 Z85 chars>"`. Reading them needs no cryptography, so it lives in the core; the
// encryption itself is NetMQ's (Runtime/NetMQ), the managed ZMTP transport speaks only NULL.
using System;
using System.IO;

namespace RealtalkBridge
{
    public static class CurveKeys
    {
        const string Alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

        /// <summary>Z85 (ZeroMQ RFC 32) text -> bytes; the length must be a multiple of 5.</summary>
        public static byte[] Z85Decode(string text)
        {
            if (text == null || text.Length % 5 != 0) throw new FormatException("Z85 text length must be a multiple of 5");
            var outp = new byte[text.Length / 5 * 4];
            for (int i = 0, o = 0; i < text.Length; i += 5, o += 4)
            {
                ulong v = 0;
                for (int k = 0; k < 5; k++)
                {
                    int d = Alphabet.IndexOf(text[i + k]);
                    if (d < 0) throw new FormatException("not a Z85 character: '" + text[i + k] + "'");
                    v = v * 85 + (ulong)d;
                }
                if (v > uint.MaxValue) throw new FormatException("Z85 group out of range");
                outp[o] = (byte)(v >> 24); outp[o + 1] = (byte)(v >> 16); outp[o + 2] = (byte)(v >> 8); outp[o + 3] = (byte)v;
            }
            return outp;
        }

        /// <summary>The 32-byte public key in a certificate file's `public-key = "..."` line.</summary>
        public static byte[] ReadPublicKey(string certificateText) { return ReadKey(certificateText, "public-key"); }

        /// <summary>The 32-byte secret key of a `.key_secret` file (`secret-key = "..."`): a client's own key pair for a
        /// sidecar that allows only listed client keys (--curve-clients).</summary>
        public static byte[] ReadSecretKey(string certificateText) { return ReadKey(certificateText, "secret-key"); }

        static byte[] ReadKey(string certificateText, string name)
        {
            foreach (var raw in (certificateText ?? "").Split('\n'))
            {
                string line = raw.Trim();
                if (!line.StartsWith(name, StringComparison.Ordinal)) continue;
                int a = line.IndexOf('"'), b = line.LastIndexOf('"');
                if (a < 0 || b <= a) break;
                var key = Z85Decode(line.Substring(a + 1, b - a - 1));
                if (key.Length != 32) throw new FormatException("a CURVE key has 32 bytes, this one " + key.Length);
                return key;
            }
            throw new FormatException("no " + name + " = \"...\" line in the certificate");
        }

        public static byte[] ReadPublicKeyFile(string path) { return ReadPublicKey(File.ReadAllText(path)); }
    }
}
