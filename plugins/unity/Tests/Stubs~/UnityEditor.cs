// Compile-only stand-in for the UnityEditor API the package's Editor scripts use (see UnityEngine.cs). Every member
// here was checked against the member ids in a Unity 2020.2-series UnityEditor.CoreModule.xml (the published API
// docs; no generic overloads are listed there, so the Editor code uses the documented non-generic forms).
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

    [Flags]
    public enum SelectionMode { Unfiltered = 0, TopLevel = 1, Deep = 2, ExcludePrefab = 4, Editable = 8, Assets = 16, DeepAssets = 32, OnlyUserModifiable = 8 }

    public sealed class Selection
    {
        public static UnityEngine.Object activeObject { get { return null; } set { } }
        public static UnityEngine.Object[] GetFiltered(Type type, SelectionMode mode) { return new UnityEngine.Object[0]; }
    }

    public sealed class EditorApplication
    {
        public delegate void CallbackFunction();
        public static CallbackFunction update;
    }

    public static class AssetDatabase
    {
        public static string GetAssetPath(UnityEngine.Object assetObject) { return ""; }
        public static UnityEngine.Object LoadAssetAtPath(string assetPath, Type type) { return null; }
        public static void CreateAsset(UnityEngine.Object asset, string path) { }
        public static string GenerateUniqueAssetPath(string path) { return path; }
        public static void SaveAssets() { }
    }

    public static class EditorUtility
    {
        public static void DisplayProgressBar(string title, string info, float progress) { }
        public static bool DisplayCancelableProgressBar(string title, string info, float progress) { return false; }
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
        public static string CalculateTransformPath(UnityEngine.Transform targetTransform, UnityEngine.Transform root) { return ""; }
    }
}
