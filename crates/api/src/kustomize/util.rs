//! Small helpers over `serde_json::Value` objects and paths.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

/// The text of a scalar as YAML would show it (`80`, `true`, `x`); `None` for maps and lists.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// String at `path` in nested objects; non-string scalars are rendered as text.
pub fn get_str(v: &Value, path: &[&str]) -> Option<String> {
    get(v, path).and_then(|x| match x {
        Value::Null => None,
        other => scalar_text(other),
    })
}

pub fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.as_object()?.get(*p)?;
    }
    Some(cur)
}

/// The object at `path`, created (replacing non-objects) when missing.
pub fn object_at<'a>(v: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = v;
    for p in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur
            .as_object_mut()
            .expect("object")
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut().expect("object")
}

/// A string map (labels, annotations) at `path`; empty when absent.
pub fn string_map(v: &Value, path: &[&str]) -> Vec<(String, String)> {
    match get(v, path) {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), scalar_text(v).unwrap_or_default()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Joins `rel` to `base` and removes `.` and `..` components lexically.
pub fn join_clean(base: &Path, rel: &str) -> PathBuf {
    let joined = base.join(rel);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let last = out.components().next_back();
                match last {
                    Some(Component::Normal(_)) => {
                        out.pop();
                    }
                    Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                    _ => out.push(".."),
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// A JSON pointer segment for an object key.
pub fn ptr(parent: &str, key: &str) -> String {
    format!("{parent}/{}", crate::source::escape_pointer(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_clean_resolves_dots() {
        assert_eq!(
            join_clean(Path::new("a/overlay"), "../base/x.yaml"),
            PathBuf::from("a/base/x.yaml")
        );
        assert_eq!(join_clean(Path::new("."), "./x"), PathBuf::from("x"));
        assert_eq!(join_clean(Path::new("a"), "../../x"), PathBuf::from("../x"));
    }
}
