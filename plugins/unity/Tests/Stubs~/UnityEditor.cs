// Compile-only stand-in for the UnityEditor API the package's Editor scripts use (see UnityEngine.cs).
using System;

namespace UnityEditor
{
    [AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
    public sealed class MenuItem : Attribute
    {
        public MenuItem(string itemName) { }
        public MenuItem(string itemName, bool isValidateFunction) { }
        public MenuItem(string itemName, bool isValidateFunction, int priority) { }
    }

    public static class Selection
    {
        public static UnityEngine.Object activeObject { get { return null; } }
    }

    public static class AssetDatabase
    {
        public static string GetAssetPath(UnityEngine.Object o) { return ""; }
        public static void CreateAsset(UnityEngine.Object asset, string path) { }
        public static string GenerateUniqueAssetPath(string path) { return path; }
        public static void SaveAssets() { }
    }

    public static class EditorUtility
    {
        public static void DisplayProgressBar(string title, string info, float progress) { }
        public static void ClearProgressBar() { }
        public static bool DisplayDialog(string title, string message, string ok) { return true; }
        public static void SetDirty(UnityEngine.Object target) { }
    }

    public static class EditorPrefs
    {
        public static string GetString(string key, string defaultValue) { return defaultValue; }
        public static void SetString(string key, string value) { }
    }

    public struct EditorCurveBinding
    {
        public static EditorCurveBinding FloatCurve(string path, Type type, string propertyName) { return new EditorCurveBinding(); }
    }

    public static class AnimationUtility
    {
        public static void SetEditorCurve(UnityEngine.AnimationClip clip, EditorCurveBinding binding, UnityEngine.AnimationCurve curve) { }
    }
}
