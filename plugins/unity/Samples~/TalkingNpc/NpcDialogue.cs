using RealtalkBridge.Unity;
using UnityEngine;

namespace RealtalkBridge.Samples
{
    /// <summary>Talking NPC: press Space to play the next line. TalkingNpc bakes each clip on the sidecar the first
    /// time (or plays its cached track) and the BlendshapeDriver follows the AudioSource clock.</summary>
    [RequireComponent(typeof(TalkingNpc))]
    public sealed class NpcDialogue : MonoBehaviour
    {
        public AudioClip[] lines = new AudioClip[0];
        public KeyCode nextKey = KeyCode.Space;
        int _next;
        TalkingNpc _npc;

        void Awake() { _npc = GetComponent<TalkingNpc>(); }

        void Update()
        {
            if (lines.Length == 0 || _npc.IsBaking) return;
            if (Input.GetKeyDown(nextKey))
            {
                _npc.Speak(lines[_next]);
                _next = (_next + 1) % lines.Length;
            }
        }
    }
}
