using UnityEngine;

namespace RealtalkBridge.Unity
{
    /// <summary>One stream of a shared RealtalkClient as a coefficient source: give each NPC (or avatar) its own
    /// RealtalkStream with its stream id and point its BlendshapeDriver at it. All of them use the client's one
    /// connection to the sidecar.</summary>
    [AddComponentMenu("Realtalk/Realtalk Stream")]
    public sealed class RealtalkStream : MonoBehaviour, ICoefficientSource
    {
        [Tooltip("The shared client (one connection to the sidecar)")]
        public RealtalkClient client;
        [Tooltip("This consumer's stream id, e.g. npc-guard (a pushed stream) or mic / file")]
        public string streamId = "npc-1";

        public bool TryGetFrame(CoeffFrame dst, ref long version)
        {
            return client != null && !string.IsNullOrEmpty(streamId) && client.TryGetFrame(streamId, dst, ref version);
        }
    }
}
