// A minimal stand-in for the parts of UnityEngine the package uses, so Debian mcs can compile the Unity-facing
// scripts in CI. Signatures follow the Unity scripting reference; bodies do nothing. Compile-only: never run.
// Every public member was checked by reflection against real Unity 2020.2-series UnityEngine module assemblies
// (names and parameter types match); the package's scripts also compiled with 0 errors against those assemblies.
// Unity ignores this folder (its name ends in ~).
using System;
using System.Collections;

namespace UnityEngine
{
    public class Object
    {
        public string name;
        public static implicit operator bool(Object o) { return !ReferenceEquals(o, null); }
        public static T Instantiate<T>(T original) where T : Object { return original; }
        public static void Destroy(Object o) { }
    }

    public class Component : Object
    {
        public GameObject gameObject { get { return null; } }
        public Transform transform { get { return null; } }
        public T GetComponent<T>() { return default(T); }
        public T[] GetComponentsInChildren<T>(bool includeInactive) { return new T[0]; }
    }

    public class Transform : Component
    {
        public Transform parent { get { return null; } }
    }

    public sealed class GameObject : Object
    {
        public Transform transform { get { return null; } }
        public T AddComponent<T>() where T : Component { return null; }
        public T GetComponent<T>() { return default(T); }
        public T[] GetComponentsInChildren<T>(bool includeInactive) { return new T[0]; }
    }

    public class Behaviour : Component { public bool enabled; }

    public class Coroutine { }

    public class MonoBehaviour : Behaviour
    {
        public Coroutine StartCoroutine(IEnumerator routine) { return null; }
        public void StopCoroutine(Coroutine routine) { }
    }

    public class ScriptableObject : Object
    {
        public static T CreateInstance<T>() where T : ScriptableObject, new() { return new T(); }
    }

    public class Mesh : Object
    {
        public int blendShapeCount { get { return 0; } }
        public string GetBlendShapeName(int index) { return ""; }
        public int GetBlendShapeIndex(string name) { return -1; }
    }

    public class Renderer : Component { }

    public class SkinnedMeshRenderer : Renderer
    {
        public Mesh sharedMesh;
        public void SetBlendShapeWeight(int index, float value) { }
        public float GetBlendShapeWeight(int index) { return 0f; }
    }

    public sealed class AudioClip : Object
    {
        public int frequency { get { return 0; } }
        public int channels { get { return 0; } }
        public int samples { get { return 0; } }
        public float length { get { return 0f; } }
        public bool GetData(float[] data, int offsetSamples) { return false; }
        public static AudioClip Create(string name, int lengthSamples, int channels, int frequency, bool stream) { return new AudioClip(); }
    }

    public sealed class AudioSource : Behaviour
    {
        public AudioClip clip;
        public bool loop;
        public bool isPlaying { get { return false; } }
        public int timeSamples;
        public float time;
        public void Play() { }
        public void PlayDelayed(float delay) { }
        public void Stop() { }
    }

    public static class Microphone
    {
        public static string[] devices { get { return new string[0]; } }
        public static AudioClip Start(string deviceName, bool loop, int lengthSec, int frequency) { return null; }
        public static void End(string deviceName) { }
        public static int GetPosition(string deviceName) { return 0; }
        public static bool IsRecording(string deviceName) { return false; }
    }

    public static class Debug
    {
        public static void Log(object message) { }
        public static void LogWarning(object message) { }
        public static void LogError(object message) { }
    }

    public static class Time
    {
        public static float time { get { return 0f; } }
        public static float deltaTime { get { return 0f; } }
        public static float unscaledDeltaTime { get { return 0f; } }
        public static double unscaledTimeAsDouble { get { return 0.0; } }
    }

    public static class Application
    {
        public static bool isPlaying { get { return false; } }
    }

    public static class Mathf
    {
        public static int Max(int a, int b) { return a > b ? a : b; }
        public static float Max(float a, float b) { return a > b ? a : b; }
        public static float Clamp01(float v) { return v < 0 ? 0 : v > 1 ? 1 : v; }
        public static int RoundToInt(float f) { return (int)Math.Round(f); }
    }

    public static class Input
    {
        public static bool GetKeyDown(KeyCode key) { return false; }
    }

    public enum KeyCode { None = 0, Space = 32 }

    public struct Keyframe
    {
        public float time, value;
        public Keyframe(float time, float value) { this.time = time; this.value = value; }
    }

    public class AnimationCurve
    {
        public AnimationCurve(params Keyframe[] keys) { }
    }

    public sealed class AnimationClip : Object
    {
        public float frameRate;
    }

    public class YieldInstruction { }
    public sealed class WaitForSeconds : YieldInstruction { public WaitForSeconds(float seconds) { } }

    [AttributeUsage(AttributeTargets.Field)] public sealed class SerializeField : Attribute { }
    [AttributeUsage(AttributeTargets.Field)] public sealed class HideInInspector : Attribute { }
    [AttributeUsage(AttributeTargets.Field)] public sealed class TooltipAttribute : Attribute { public TooltipAttribute(string t) { } }
    [AttributeUsage(AttributeTargets.Field)] public sealed class HeaderAttribute : Attribute { public HeaderAttribute(string t) { } }
    [AttributeUsage(AttributeTargets.Field)] public sealed class RangeAttribute : Attribute { public RangeAttribute(float min, float max) { } }
    [AttributeUsage(AttributeTargets.Class)] public sealed class AddComponentMenu : Attribute { public AddComponentMenu(string m) { } }
    [AttributeUsage(AttributeTargets.Class)] public sealed class DisallowMultipleComponent : Attribute { }
    [AttributeUsage(AttributeTargets.Class, AllowMultiple = true)]
    public sealed class RequireComponent : Attribute { public RequireComponent(Type t) { } }
    [AttributeUsage(AttributeTargets.Class)]
    public sealed class CreateAssetMenuAttribute : Attribute { public string menuName; public string fileName; public int order; }
}
