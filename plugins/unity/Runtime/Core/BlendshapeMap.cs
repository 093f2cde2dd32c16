// ARKit (or any layout) names -> a rig's blendshape indices, with the spellings rigs use in the wild
// ("jawOpen", "JawOpen", "jaw_open", "mouthSmile_L", "blendShape1.mouthSmileLeft", "ARKit_eyeBlinkLeft"),
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

        public int TargetCount { get { return _targetNames == null ? 0 : _targetNames.Length; } }
        public int MappedCount
        {
            get { int n = 0; foreach (var i in _sourceToTarget) if (i >= 0) n++; return n; }
        }

        public void SetOverride(ChannelSettings s)
        {
            _overrides[s.Source] = s;
            _sourceNames = null; // rebuild on next Apply
        }

        public void ClearOverrides() { _overrides.Clear(); _sourceNames = null; }

        /// <summary>Normalises a blendshape or layout name to a comparable key: drops a "mesh." prefix, common
        /// vendor prefixes, separators and case, and spells L/R suffixes out.</summary>
        public static string NormalizeName(string name)
        {
            if (string.IsNullOrEmpty(name)) return "";
            string s = name;
            int dot = s.LastIndexOf('.');
            // "blendShape1.jawOpen" (FBX import) -> "jawOpen"; keep ".L" / ".R" (Blender style) for the suffix rule
            if (dot >= 0 && dot < s.Length - 2) s = s.Substring(dot + 1);
            string lower = s.ToLowerInvariant();
            string side = "";
            string[] leftSuffixes = { "_l", ".l", "-l", " l" };
            string[] rightSuffixes = { "_r", ".r", "-r", " r" };
            foreach (var suf in leftSuffixes) if (lower.EndsWith(suf, StringComparison.Ordinal)) { side = "left"; lower = lower.Substring(0, lower.Length - 2); break; }
            if (side == "") foreach (var suf in rightSuffixes) if (lower.EndsWith(suf, StringComparison.Ordinal)) { side = "right"; lower = lower.Substring(0, lower.Length - 2); break; }
            var sb = new StringBuilder(lower.Length + 5);
            foreach (char c in lower) if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) sb.Append(c);
            string key = sb.ToString();
            string[] prefixes = { "arkit", "blendshape", "bs", "shapes", "face" };
            foreach (var p in prefixes)
            {
                if (key.Length > p.Length + 3 && key.StartsWith(p, StringComparison.Ordinal)) { key = key.Substring(p.Length); break; }
            }
            return key + side;
        }

        /// <summary>Builds (or reuses) the mapping for these source and target name lists.</summary>
        public void Bind(string[] sourceNames, string[] targetNames)
        {
            if (ReferenceEquals(sourceNames, _sourceNames) && ReferenceEquals(targetNames, _targetNames)) return;
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
            }
            _sourceNames = sourceNames;
            _targetNames = targetNames;
            _state = new float[targetNames.Length];
            _raw = new float[targetNames.Length];
            _hasState = false;
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
