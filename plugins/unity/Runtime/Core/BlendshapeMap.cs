// ARKit (or any layout) names -> a rig's blendshape indices, with the spellings rigs use in the wild
// ("jawOpen", "JawOpen", "jaw_open", "mouthSmile_L", "eyeBlinkL", "blendShape1.mouthSmileLeft", "jawOpen.001",
// "A25_Jaw_Open", "ARKit_eyeBlinkLeft", "mouthClosed"), VRM 0 / VRM 1.0 / VRoid presets mixed from ARKit,
// plus per-channel gain/offset/clamp and frame-rate independent smoothing. Pure math, no engine types.
using System;
using System.Collections.Generic;
using System.Text;

namespace RealtalkBridge
{
    /// <summary>A user override for one source channel.</summary>
    public struct ChannelSettings
    {
        public string Source;       // layout name, e.g. "jawOpen"
        public string Target;       // blendshape name on the mesh; null/empty = match by name
        public float Gain;
        public float Offset;
        public float Min;
        public float Max;

        public static ChannelSettings Default(string source)
        {
            return new ChannelSettings { Source = source, Target = null, Gain = 1f, Offset = 0f, Min = 0f, Max = 1f };
        }
    }

    public sealed class BlendshapeMap
    {
        /// <summary>Unity blendshape weights run 0..100; the protocol's 0..1.</summary>
        public float OutputScale = 100f;
        /// <summary>Time constant of the one-pole smoother in seconds (0 = off).</summary>
        public float SmoothingSeconds = 0f;
        public float GlobalGain = 1f;

        int[] _sourceToTarget = new int[0];   // per source channel: target index or -1
        ChannelSettings[] _settings = new ChannelSettings[0];
        string[] _sourceNames;
        string[] _targetNames;
        float[] _state = new float[0];
        float[] _raw = new float[0];
        bool _hasState;
        readonly Dictionary<string, ChannelSettings> _overrides = new Dictionary<string, ChannelSettings>(StringComparer.Ordinal);

        // derived channels (VRM / VRoid presets mixed from ARKit weights): per entry the target, terms and gain
        int[] _derivedTarget = new int[0];
        int[][] _derivedSrc = new int[0][];
        float[][] _derivedCoef = new float[0][];
        float[] _derivedGain = new float[0];
        string _report = "";
        long _rebuilds;

        public int TargetCount { get { return _targetNames == null ? 0 : _targetNames.Length; } }
        /// <summary>Source channels driving a target by name (not counting derived VRM/VRoid presets).</summary>
        public int MappedCount
        {
            get { int n = 0; foreach (var i in _sourceToTarget) if (i >= 0) n++; return n; }
        }
        /// <summary>Targets driven by a preset mix (VRM 0 `A I U E O Blink`, VRM 1.0 `aa ih ou ee oh blink`, VRoid
        /// `Fcl_MTH_A`...). Used only when fewer than DerivedWhenDirectBelow channels match by name.</summary>
        public int DerivedCount { get { return _derivedTarget.Length; } }
        /// <summary>Nothing on the mesh is driven: the rig's names matched no channel (see MatchReport).</summary>
        public bool NothingMatched { get { return _sourceNames != null && MappedCount == 0 && DerivedCount == 0; } }
        /// <summary>How often the mapping was actually rebuilt (a steady stream must not make this grow).</summary>
        public long Rebuilds { get { return _rebuilds; } }
        public int DerivedWhenDirectBelow = 10;
        /// <summary>What matched and what did not, one line per group (built by Bind; no per-frame cost).</summary>
        public string MatchReport { get { return _report; } }

        public void SetOverride(ChannelSettings s)
        {
            _overrides[s.Source] = s;
            _sourceNames = null; // rebuild on next Apply
        }

        public void ClearOverrides() { _overrides.Clear(); _sourceNames = null; }

        static readonly string[] Separators = { "_", ".", "-", " " };

        /// <summary>Normalises a blendshape or layout name to a comparable key: drops a duplicate suffix (".001"), a
        /// "mesh." prefix (FBX "blendShape1.jawOpen"), numbered prefixes ("A25_Jaw_Open"), common vendor prefixes,
        /// separators and case, and spells side suffixes out (`_L`, `.R`, camel `eyeBlinkL` -> Left/Right).</summary>
        public static string NormalizeName(string name)
        {
            if (string.IsNullOrEmpty(name)) return "";
            string s = name.Trim();
            // Blender/Maya duplicates: "jawOpen.001"
            int end = s.Length;
            while (end > 0 && char.IsDigit(s[end - 1])) end--;
            if (end < s.Length && end > 1 && s[end - 1] == '.') s = s.Substring(0, end - 1);
            int dot = s.LastIndexOf('.');
            // "blendShape1.jawOpen" (FBX import) -> "jawOpen"; keep ".L" / ".R" (Blender style) for the suffix rule
            if (dot >= 0 && dot < s.Length - 2) s = s.Substring(dot + 1);
            // numbered prefixes: "A25_Jaw_Open" (Character Creator / Polywink ARKit sets), "B01_..."
            int k = 0;
            while (k < s.Length && k < 2 && char.IsLetter(s[k])) k++;
            int digits = k;
            while (digits < s.Length && char.IsDigit(s[digits])) digits++;
            if (k > 0 && digits > k && digits < s.Length - 1 && (s[digits] == '_' || s[digits] == '-')) s = s.Substring(digits + 1);
            string side = "";
            string lower = s.ToLowerInvariant();
            foreach (var sep in Separators)
            {
                if (lower.Length > 2 && lower.EndsWith(sep + "l", StringComparison.Ordinal)) { side = "left"; break; }
                if (lower.Length > 2 && lower.EndsWith(sep + "r", StringComparison.Ordinal)) { side = "right"; break; }
            }
            if (side != "") lower = lower.Substring(0, lower.Length - 2);
            else if (s.Length > 2 && (s[s.Length - 1] == 'L' || s[s.Length - 1] == 'R') && char.IsLower(s[s.Length - 2]))
            {
                // camel-case side letter: "eyeBlinkL", "mouthSmileR"
                side = s[s.Length - 1] == 'L' ? "left" : "right";
                lower = lower.Substring(0, lower.Length - 1);
            }
            var sb = new StringBuilder(lower.Length + 5);
            foreach (char c in lower) if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) sb.Append(c);
            string key = sb.ToString();
            string[] prefixes = { "arkit", "blendshape", "bs", "shapes", "face" };
            foreach (var p in prefixes)
            {
                if (key.Length > p.Length + 3 && key.StartsWith(p, StringComparison.Ordinal)) { key = key.Substring(p.Length); break; }
            }
            string alias;
            if (Aliases.TryGetValue(key, out alias)) key = alias;
            key += side;
            if (Aliases.TryGetValue(key, out alias)) key = alias;
            return key;
        }

        // spellings that differ by more than case and separators
        static readonly Dictionary<string, string> Aliases = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            { "mouthclosed", "mouthclose" }, { "jawopened", "jawopen" }, { "cheekpuffed", "cheekpuff" },
        };

        // VRM / VRoid preset mixes from ARKit-52: the same mixes as the sidecar's VMC profiles
        // (realtalk_bridge/face/profiles/vrm0.toml): name -> (ARKit terms, weights), gain.
        sealed class Mix
        {
            public readonly string[] Names; public readonly float[] Coef; public readonly float Gain;
            public Mix(float gain, params object[] terms)
            {
                Gain = gain;
                Names = new string[terms.Length / 2]; Coef = new float[terms.Length / 2];
                for (int i = 0; i < Names.Length; i++) { Names[i] = (string)terms[2 * i]; Coef[i] = Convert.ToSingle(terms[2 * i + 1], System.Globalization.CultureInfo.InvariantCulture); }
            }
        }

        static readonly Mix MixA = new Mix(1.5f, "jawOpen", 1.0, "mouthClose", -1.0, "mouthFunnel", -0.5, "mouthPucker", -0.5, "mouthStretchLeft", -0.1, "mouthStretchRight", -0.1);
        static readonly Mix MixI = new Mix(1.5f, "mouthStretchLeft", 0.4, "mouthStretchRight", 0.4, "mouthSmileLeft", 0.2, "mouthSmileRight", 0.2, "jawOpen", 0.3, "mouthClose", -0.3, "mouthPucker", -0.4, "mouthFunnel", -0.3);
        static readonly Mix MixU = new Mix(1.5f, "mouthPucker", 0.8, "mouthFunnel", 0.2);
        static readonly Mix MixE = new Mix(1.5f, "jawOpen", 0.5, "mouthClose", -0.5, "mouthStretchLeft", 0.25, "mouthStretchRight", 0.25, "mouthLowerDownLeft", 0.15, "mouthLowerDownRight", 0.15, "mouthPucker", -0.3, "mouthFunnel", -0.3);
        static readonly Mix MixO = new Mix(1.5f, "mouthFunnel", 1.0, "jawOpen", 0.3, "mouthClose", -0.3, "mouthPucker", 0.2);
        static readonly Mix MixBlink = new Mix(1f, "eyeBlinkLeft", 0.5, "eyeBlinkRight", 0.5);
        static readonly Mix MixBlinkL = new Mix(1f, "eyeBlinkLeft", 1.0);
        static readonly Mix MixBlinkR = new Mix(1f, "eyeBlinkRight", 1.0);
        static readonly Mix MixLookUp = new Mix(1f, "eyeLookUpLeft", 0.5, "eyeLookUpRight", 0.5);
        static readonly Mix MixLookDown = new Mix(1f, "eyeLookDownLeft", 0.5, "eyeLookDownRight", 0.5);
        static readonly Mix MixLookLeft = new Mix(1f, "eyeLookOutLeft", 0.5, "eyeLookInRight", 0.5);
        static readonly Mix MixLookRight = new Mix(1f, "eyeLookInLeft", 0.5, "eyeLookOutRight", 0.5);
        static readonly Mix MixJoy = new Mix(1f, "mouthSmileLeft", 0.35, "mouthSmileRight", 0.35, "cheekSquintLeft", 0.15, "cheekSquintRight", 0.15);
        static readonly Mix MixAngry = new Mix(1f, "browDownLeft", 0.35, "browDownRight", 0.35, "noseSneerLeft", 0.15, "noseSneerRight", 0.15);
        static readonly Mix MixSorrow = new Mix(1f, "browInnerUp", 0.5, "mouthFrownLeft", 0.25, "mouthFrownRight", 0.25);

        // keys are NormalizeName() of the preset names: VRM 0 (A I U E O Blink Blink_L ... Joy Angry Sorrow),
        // VRM 1.0 (aa ih ou ee oh blink blinkLeft ... happy angry sad), VRoid's mesh names (Fcl_MTH_A, Fcl_EYE_Close_L ...)
        static readonly Dictionary<string, Mix> Presets = new Dictionary<string, Mix>(StringComparer.Ordinal)
        {
            { "a", MixA }, { "i", MixI }, { "u", MixU }, { "e", MixE }, { "o", MixO },
            { "aa", MixA }, { "ih", MixI }, { "ou", MixU }, { "ee", MixE }, { "oh", MixO },
            { "fclmtha", MixA }, { "fclmthi", MixI }, { "fclmthu", MixU }, { "fclmthe", MixE }, { "fclmtho", MixO },
            { "blink", MixBlink }, { "blinkleft", MixBlinkL }, { "blinkright", MixBlinkR },
            { "fcleyeclose", MixBlink }, { "fcleyecloseleft", MixBlinkL }, { "fcleyecloseright", MixBlinkR },
            { "lookup", MixLookUp }, { "lookdown", MixLookDown }, { "lookleft", MixLookLeft }, { "lookright", MixLookRight },
            { "joy", MixJoy }, { "happy", MixJoy }, { "fclalljoy", MixJoy },
            { "angry", MixAngry }, { "fclallangry", MixAngry },
            { "sorrow", MixSorrow }, { "sad", MixSorrow }, { "fclallsorrow", MixSorrow },
        };

        static bool SameOrEqual(string[] a, string[] b) { return ReferenceEquals(a, b) || Protocol.SameNames(a, b); }

        /// <summary>Builds (or reuses) the mapping for these source and target name lists. Equal lists in new arrays
        /// (names re-sent by the sidecar's 1 Hz status) reuse the mapping and keep the smoothing state.</summary>
        public void Bind(string[] sourceNames, string[] targetNames)
        {
            if (_sourceNames != null && SameOrEqual(sourceNames, _sourceNames) && SameOrEqual(targetNames, _targetNames))
            {
                _sourceNames = sourceNames; _targetNames = targetNames;   // next time the reference check is enough
                return;
            }
            _rebuilds++;
            var byKey = new Dictionary<string, int>(StringComparer.Ordinal);
            var exact = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int i = 0; i < targetNames.Length; i++)
            {
                string k = NormalizeName(targetNames[i]);
                if (!byKey.ContainsKey(k)) byKey[k] = i;
                if (!exact.ContainsKey(targetNames[i])) exact[targetNames[i]] = i;
            }
            _sourceToTarget = new int[sourceNames.Length];
            _settings = new ChannelSettings[sourceNames.Length];
            var driven = new bool[targetNames.Length];
            int direct = 0;
            for (int j = 0; j < sourceNames.Length; j++)
            {
                ChannelSettings cs;
                if (!_overrides.TryGetValue(sourceNames[j], out cs)) cs = ChannelSettings.Default(sourceNames[j]);
                _settings[j] = cs;
                int idx = -1;
                if (!string.IsNullOrEmpty(cs.Target))
                {
                    if (!exact.TryGetValue(cs.Target, out idx) && !byKey.TryGetValue(NormalizeName(cs.Target), out idx)) idx = -1;
                }
                else if (!exact.TryGetValue(sourceNames[j], out idx) && !byKey.TryGetValue(NormalizeName(sourceNames[j]), out idx)) idx = -1;
                _sourceToTarget[j] = idx;
                if (idx >= 0) { driven[idx] = true; direct++; }
            }
            BindDerived(sourceNames, targetNames, driven, direct);
            _sourceNames = sourceNames;
            _targetNames = targetNames;
            _state = new float[targetNames.Length];
            _raw = new float[targetNames.Length];
            _hasState = false;
            _report = BuildReport(sourceNames, targetNames, driven);
        }

        void BindDerived(string[] sourceNames, string[] targetNames, bool[] driven, int direct)
        {
            var tgt = new List<int>(); var src = new List<int[]>(); var coef = new List<float[]>(); var gain = new List<float>();
            if (direct < DerivedWhenDirectBelow)
            {
                var srcIndex = new Dictionary<string, int>(StringComparer.Ordinal);
                for (int j = 0; j < sourceNames.Length; j++) if (!srcIndex.ContainsKey(sourceNames[j])) srcIndex[sourceNames[j]] = j;
                for (int t = 0; t < targetNames.Length; t++)
                {
                    Mix mix;
                    if (driven[t] || !Presets.TryGetValue(NormalizeName(targetNames[t]), out mix)) continue;
                    var si = new List<int>(); var sc = new List<float>();
                    for (int m = 0; m < mix.Names.Length; m++)
                    {
                        int j;
                        if (srcIndex.TryGetValue(mix.Names[m], out j)) { si.Add(j); sc.Add(mix.Coef[m]); }
                    }
                    if (si.Count == 0) continue;   // the layout lacks every term (not ARKit)
                    tgt.Add(t); src.Add(si.ToArray()); coef.Add(sc.ToArray()); gain.Add(mix.Gain);
                    driven[t] = true;
                }
            }
            _derivedTarget = tgt.ToArray(); _derivedSrc = src.ToArray(); _derivedCoef = coef.ToArray(); _derivedGain = gain.ToArray();
        }

        string BuildReport(string[] sourceNames, string[] targetNames, bool[] driven)
        {
            var matched = new List<string>(); var unmatched = new List<string>(); var idle = new List<string>();
            for (int j = 0; j < sourceNames.Length; j++)
            {
                int t = _sourceToTarget[j];
                if (t >= 0) matched.Add(sourceNames[j] == targetNames[t] ? sourceNames[j] : sourceNames[j] + "->" + targetNames[t]);
                else unmatched.Add(sourceNames[j]);
            }
            for (int d = 0; d < _derivedTarget.Length; d++) matched.Add("(mix)->" + targetNames[_derivedTarget[d]]);
            for (int t = 0; t < targetNames.Length; t++) if (!driven[t]) idle.Add(targetNames[t]);
            var sb = new StringBuilder();
            sb.Append(matched.Count).Append(" driven of ").Append(targetNames.Length).Append(" blendshapes (")
              .Append(MappedCount).Append(" by name, ").Append(_derivedTarget.Length).Append(" preset mixes)");
            if (matched.Count == 0) sb.Append(": NOTHING MATCHED - rename the blendshapes or add mapping entries");
            sb.Append("\nmatched: ").Append(string.Join(", ", matched.ToArray()));
            sb.Append("\nlayout channels without a blendshape: ").Append(string.Join(", ", unmatched.ToArray()));
            sb.Append("\nblendshapes not driven: ").Append(string.Join(", ", idle.ToArray()));
            return sb.ToString();
        }

        /// <summary>The target index a source channel drives, or -1.</summary>
        public int TargetOf(int sourceIndex) { return _sourceToTarget[sourceIndex]; }

        /// <summary>Maps one frame: writes every driven target weight into `targets` (scaled to OutputScale) and sets
        /// `touched[i]` for those targets. `dt` is the time since the previous call (for smoothing). Returns the count.</summary>
        public int Apply(float[] source, int count, float dt, float[] targets, bool[] touched)
        {
            if (_sourceNames == null) throw new InvalidOperationException("call Bind first");
            int n = Math.Min(count, _sourceToTarget.Length);
            for (int i = 0; i < touched.Length; i++) touched[i] = false;
            // 1) gain/offset/clamp per source; several sources on one target (two spellings both present): the larger
            for (int j = 0; j < n; j++)
            {
                int t = _sourceToTarget[j];
                if (t < 0) continue;
                var cs = _settings[j];
                float v = source[j];
                if (float.IsNaN(v) || float.IsInfinity(v)) v = 0f; // a bad value must never reach the mesh
                v = v * cs.Gain * GlobalGain + cs.Offset;
                if (v < cs.Min) v = cs.Min;
                if (v > cs.Max) v = cs.Max;
                if (!touched[t] || v > _raw[t]) _raw[t] = v;
                touched[t] = true;
            }
            // 1b) preset mixes (VRM / VRoid targets), clamped to 0..1
            for (int d = 0; d < _derivedTarget.Length; d++)
            {
                int t = _derivedTarget[d];
                var si = _derivedSrc[d]; var sc = _derivedCoef[d];
                float v = 0f;
                for (int m = 0; m < si.Length; m++)
                {
                    if (si[m] >= n) continue;
                    float x = source[si[m]];
                    if (!float.IsNaN(x) && !float.IsInfinity(x)) v += sc[m] * x;
                }
                v *= _derivedGain[d] * GlobalGain;
                _raw[t] = v < 0f ? 0f : (v > 1f ? 1f : v);
                touched[t] = true;
            }
            // 2) exponential smoothing, correct for any frame time: a = 1 - exp(-dt / tau)
            float a = (SmoothingSeconds > 0f && _hasState) ? (float)(1.0 - Math.Exp(-Math.Max(0f, dt) / SmoothingSeconds)) : 1f;
            int written = 0;
            for (int t = 0; t < touched.Length; t++)
            {
                if (!touched[t]) continue;
                _state[t] += a * (_raw[t] - _state[t]);
                targets[t] = _state[t] * OutputScale;
                written++;
            }
            _hasState = true;
            return written;
        }

        /// <summary>Forgets smoothing state (e.g. when the stream changes).</summary>
        public void Reset() { _hasState = false; if (_state != null) Array.Clear(_state, 0, _state.Length); }
    }
}
