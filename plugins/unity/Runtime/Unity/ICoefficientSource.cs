namespace RealtalkBridge.Unity
{
    /// <summary>Anything that can hand the newest coefficient frame to a BlendshapeDriver on the main thread:
    /// a live RealtalkClient or a TalkingNpc playing a baked track.</summary>
    public interface ICoefficientSource
    {
        /// <summary>Copies the newest frame into dst when it is newer than `version` (and updates version).</summary>
        bool TryGetFrame(CoeffFrame dst, ref long version);
    }
}
