// Decodes every golden vector in protocol/vectors (REALTALK_VECTORS) and compares with its .json expectation;
// vectors named bad_* must be rejected (protocol/SPEC.md section 8).
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using NUnit.Framework;

namespace RealtalkBridge.Tests
{
    [TestFixture, Category("Vectors")]
    public class GoldenVectorTests
    {
        static string Dir()
        {
            string d = Environment.GetEnvironmentVariable("REALTALK_VECTORS");
            if (string.IsNullOrEmpty(d) || !Directory.Exists(d)) Assert.Ignore("REALTALK_VECTORS does not name protocol/vectors");
            return d;
        }

        static void Compare(object expected, object actual, string path)
        {
            var emap = expected as Dictionary<string, object>;
            if (emap != null && emap.Count == 1)
            {
                object spec;
                if (emap.TryGetValue("$f32", out spec)) { CompareF32((List<object>)spec, actual, path); return; }
                if (emap.TryGetValue("$s16", out spec)) { CompareS16((List<object>)spec, actual, path); return; }
                if (emap.TryGetValue("$hex", out spec)) { CompareHex((string)spec, actual, path); return; }
            }
            if (emap != null)
            {
                var amap = actual as Dictionary<string, object>;
                Assert.IsNotNull(amap, path + ": expected a map");
                CollectionAssert.AreEquivalent(emap.Keys, amap.Keys, path + ": keys");
                foreach (var kv in emap) Compare(kv.Value, amap[kv.Key], path + "." + kv.Key);
                return;
            }
            var elist = expected as List<object>;
            if (elist != null)
            {
                var alist = actual as List<object>;
                Assert.IsNotNull(alist, path + ": expected an array");
                Assert.AreEqual(elist.Count, alist.Count, path + ": length");
                for (int i = 0; i < elist.Count; i++) Compare(elist[i], alist[i], path + "[" + i + "]");
                return;
            }
            if (expected is long || expected is double)
            {
                Assert.IsTrue(actual is long || actual is double, path + ": expected a number, got " + actual);
                if (expected is long && actual is long) Assert.AreEqual((long)expected, (long)actual, path);
                else Assert.AreEqual(Convert.ToDouble(expected, CultureInfo.InvariantCulture), Convert.ToDouble(actual, CultureInfo.InvariantCulture), 1e-12, path);
                return;
            }
            Assert.AreEqual(expected, actual, path);
        }

        static void CompareF32(List<object> want, object actual, string path)
        {
            var b = actual as byte[];
            Assert.IsNotNull(b, path + ": expected bin");
            Assert.AreEqual(want.Count * 4, b.Length, path + ": f32 byte length");
            var f = new float[want.Count];
            MsgPackReader.CopyFloat32LE(new ArraySegment<byte>(b), f, 0);
            for (int i = 0; i < f.Length; i++)
                Assert.AreEqual((float)Convert.ToDouble(want[i], CultureInfo.InvariantCulture), f[i], path + "[" + i + "]");
        }

        static void CompareS16(List<object> want, object actual, string path)
        {
            var b = actual as byte[];
            Assert.IsNotNull(b, path + ": expected bin");
            Assert.AreEqual(want.Count * 2, b.Length, path + ": s16 byte length");
            for (int i = 0; i < want.Count; i++)
                Assert.AreEqual(Convert.ToInt64(want[i], CultureInfo.InvariantCulture), (long)(short)(b[2 * i] | (b[2 * i + 1] << 8)), path + "[" + i + "]");
        }

        static void CompareHex(string hex, object actual, string path)
        {
            var b = actual as byte[];
            Assert.IsNotNull(b, path + ": expected bin");
            Assert.AreEqual(hex.ToLowerInvariant(), BitConverter.ToString(b).Replace("-", "").ToLowerInvariant(), path);
        }

        /// <summary>Runs the typed decoder a client uses for this payload; null = accepted, else the reason.</summary>
        static string TypedReject(byte[] b, out string kind)
        {
            string error;
            kind = Protocol.PeekType(b, 0, b.Length);
            if (kind == "coeffs")
            {
                var names = new Dictionary<string, string[]> { { "arkit52", Payloads.Arkit } };
                return Protocol.TryDecodeCoeffs(b, 0, b.Length, new CoeffFrame(), names, out error) ? null : error;
            }
            if (kind == "status") return Protocol.TryDecodeStatus(b, 0, b.Length, new StatusMessage(), out error) ? null : error;
            if (kind == "event") return Protocol.TryDecodeEvent(b, 0, b.Length, new EventMessage(), out error) ? null : error;
            if (kind == "video") return Protocol.TryDecodeVideo(b, 0, b.Length, new VideoMessage(), out error) ? null : error;
            object root;
            try { root = new MsgPackReader(b).ReadObject(); }
            catch (MsgPackException e) { return e.Message; }
            var map = root as Dictionary<string, object>;
            if (map == null) return "not a map";
            if (map.ContainsKey("ok"))
            {
                kind = "reply";
                if (!Protocol.TryDecodeReply(b, 0, b.Length, new Reply(), out error)) return error;
                if ((bool)map["ok"] && map.ContainsKey("op") && (map["op"] as string) == "bake")
                    return Protocol.TryDecodeBake(b, 0, b.Length, new CoefficientTrack(), out error) ? null : error;
                return null;
            }
            kind = map.ContainsKey("op") ? "request" : "unknown";
            // requests are the sidecar's to validate; a client only needs to read them as msgpack maps
            return null;
        }

        [Test]
        public void EveryVectorDecodesAsExpected()
        {
            string dir = Dir();
            var index = (Dictionary<string, object>)MiniJson.Parse(File.ReadAllText(Path.Combine(dir, "index.json")));
            var vectors = (List<object>)index["vectors"];
            Assert.IsNotEmpty(vectors);
            int good = 0, bad = 0, serverOnly = 0;
            var report = new List<string>();
            foreach (Dictionary<string, object> v in vectors)
            {
                string name = (string)v["name"], kind = (string)v["kind"], expect = (string)v["expect"];
                byte[] bytes = File.ReadAllBytes(Path.Combine(dir, name + ".msgpack"));
                object expectation = MiniJson.Parse(File.ReadAllText(Path.Combine(dir, name + ".json")));
                string envelope;
                bool wellFormed = Protocol.IsWellFormedMap(bytes, 0, bytes.Length, out envelope);
                if (expect != "ok")
                {
                    if (kind == "stream")
                    {
                        string k;
                        string reject = TypedReject(bytes, out k);
                        Assert.IsNotNull(reject, name + " must be dropped by a client but was accepted");
                        report.Add(name + ": dropped (" + reject + ")");
                        bad++;
                    }
                    else if (expect == "bad_msgpack")
                    {
                        Assert.IsFalse(wellFormed, name + " is not a well-formed payload but was accepted");
                        report.Add(name + ": rejected (" + envelope + ")");
                        bad++;
                    }
                    else { report.Add(name + ": " + expect + " (the sidecar's to reject)"); serverOnly++; }
                    continue;
                }
                Assert.IsTrue(wellFormed, name + ": " + envelope);
                if (kind == "stream" || kind == "reply")
                {
                    string k;
                    string reject = TypedReject(bytes, out k);
                    Assert.IsNull(reject, name + " (" + k + ") was rejected: " + reject);
                }
                Compare(expectation, new MsgPackReader(bytes).ReadObject(), name);
                report.Add(name + ": ok (" + kind + ")");
                good++;
            }
            Console.WriteLine(string.Join("\n", report.ToArray()));
            Assert.Greater(good, 10, "good vectors");
            Assert.Greater(bad, 5, "bad vectors a client must reject");
        }
    }
}
