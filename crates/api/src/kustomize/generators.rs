//! `configMapGenerator` and `secretGenerator`, and kustomize's content hash for generated names.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::KustomizeError;
use super::kustfile::{Entry, GeneratorArgs, GeneratorOptions, Kustomization};
use super::loader::Root;
use super::res::{Behavior, Res};
use super::util::get;
use crate::source::{Location, SpanMap};

type R<T> = Result<T, KustomizeError>;

/// kustomize `MergeGlobalOptionsIntoLocal`: local settings win.
fn merge_options(
    local: &Option<GeneratorOptions>,
    global: &Option<GeneratorOptions>,
) -> Option<GeneratorOptions> {
    let Some(g) = global else {
        return local.clone();
    };
    let mut l = local.clone().unwrap_or_default();
    for (k, v) in &g.labels {
        if !l.labels.iter().any(|(lk, _)| lk == k) {
            l.labels.push((k.clone(), v.clone()));
        }
    }
    for (k, v) in &g.annotations {
        if !l.annotations.iter().any(|(lk, _)| lk == k) {
            l.annotations.push((k.clone(), v.clone()));
        }
    }
    l.disable_name_suffix_hash |= g.disable_name_suffix_hash;
    l.immutable |= g.immutable;
    Some(l)
}

/// A key/value source of a generator, with the data bytes.
struct Pair {
    key: String,
    value: Vec<u8>,
}

fn is_env_var_name(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && !k.starts_with("..")
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Literal sources, `key=value` (surrounding quotes of the value removed).
fn literal(s: &str, at: &Location) -> R<Pair> {
    let Some((k, v)) = s.split_once('=').filter(|(k, _)| !k.is_empty()) else {
        return Err(KustomizeError::invalid(
            at.clone(),
            format!("invalid literal source {s}, expected key=value"),
        ));
    };
    let b = v.as_bytes();
    let v = if b.len() >= 2 && b[0] == b[b.len() - 1] && (b[0] == b'"' || b[0] == b'\'') {
        &v[1..v.len() - 1]
    } else {
        v
    };
    Ok(Pair {
        key: k.to_string(),
        value: v.as_bytes().to_vec(),
    })
}

/// `.env` file lines: `KEY=value`, comments and blank lines skipped.
fn env_file(root: &Root, rel: &str, at: &Location) -> R<Vec<Pair>> {
    let (display, bytes) = root.read(rel, at)?;
    let mut out = Vec::new();
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if bytes.ends_with(b"\n") {
        lines.pop();
    }
    for (i, raw) in lines.into_iter().enumerate() {
        let mut line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(line).map_err(|_| {
            KustomizeError::invalid(
                Location::new(display.display().to_string(), i + 1, 1),
                "line has invalid UTF-8",
            )
        })?;
        let mut text = text;
        if i == 0 {
            text = text.strip_prefix('\u{feff}').unwrap_or(text);
        }
        line = text.trim_start().as_bytes();
        let text = std::str::from_utf8(line).expect("utf8");
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let (key, value) = text.split_once('=').unwrap_or((text, ""));
        if !is_env_var_name(key) {
            return Err(KustomizeError::invalid(
                Location::new(display.display().to_string(), i + 1, 1),
                format!(
                    "{key:?} is not a valid environment variable name: it must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit"
                ),
            ));
        }
        out.push(Pair {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
        });
    }
    Ok(out)
}

/// File sources: `path` (key is the file name) or `key=path`.
fn file_source(root: &Root, s: &str, at: &Location) -> R<Pair> {
    let (key, path) = match s.matches('=').count() {
        0 => (
            s.rsplit('/')
                .find(|p| !p.is_empty())
                .unwrap_or(s)
                .to_string(),
            s,
        ),
        1 if s.starts_with('=') => {
            return Err(KustomizeError::invalid(
                at.clone(),
                format!("key name for file path {} missing", &s[1..]),
            ))
        }
        1 if s.ends_with('=') => {
            return Err(KustomizeError::invalid(
                at.clone(),
                format!("file path for key name {} missing", &s[..s.len() - 1]),
            ))
        }
        1 => {
            let (k, p) = s.split_once('=').expect("one =");
            (k.to_string(), p)
        }
        _ => {
            return Err(KustomizeError::invalid(
                at.clone(),
                "key names or file paths cannot contain '='",
            ))
        }
    };
    let (_, bytes) = root.read(path, at)?;
    Ok(Pair { key, value: bytes })
}

fn pairs(root: &Root, args: &GeneratorArgs, kind: &str, at: &Location) -> R<Vec<Pair>> {
    let mut all = Vec::new();
    for e in &args.envs {
        all.extend(env_file(root, e, at)?);
    }
    for l in &args.literals {
        all.push(literal(l, at)?);
    }
    for f in &args.files {
        all.push(file_source(root, f, at)?);
    }
    let mut seen: Vec<&str> = Vec::new();
    for p in &all {
        if !is_config_key(&p.key) {
            return Err(KustomizeError::invalid(
                at.clone(),
                format!(
                    "{:?} is not a valid key name for a {kind}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                    p.key
                ),
            ));
        }
        if seen.contains(&p.key.as_str()) {
            return Err(KustomizeError::invalid(
                at.clone(),
                format!(
                    "{} {} illegally repeats the key `{}`",
                    kind.to_lowercase(),
                    args.name,
                    p.key
                ),
            ));
        }
        seen.push(&p.key);
    }
    all.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(all)
}

/// kyaml `encodeBase64`: base64 broken into lines of 70 characters when long.
fn encode_base64(data: &[u8]) -> String {
    const LINE: usize = 70;
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    let lines = enc.len() / LINE + 1;
    if lines <= 1 {
        return enc;
    }
    let mut out = String::with_capacity(enc.len() + lines);
    for chunk in enc.as_bytes().chunks(LINE) {
        out.push_str(std::str::from_utf8(chunk).expect("ascii"));
        out.push('\n');
    }
    out
}

fn base(kind: &str, args: &GeneratorArgs) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(args.name.clone()));
    if !args.namespace.is_empty() {
        meta.insert("namespace".into(), Value::String(args.namespace.clone()));
    }
    let mut m = Map::new();
    m.insert("apiVersion".into(), Value::String("v1".into()));
    m.insert("kind".into(), Value::String(kind.into()));
    m.insert("metadata".into(), Value::Object(meta));
    m
}

fn finish(mut obj: Map<String, Value>, kust: &Kustomization, entry: &Entry<GeneratorArgs>) -> Res {
    let opts = merge_options(&entry.value.options, &kust.generator_options);
    if let Some(o) = &opts {
        let meta = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("metadata");
        if !o.labels.is_empty() {
            let mut labels: Vec<_> = o.labels.clone();
            labels.sort();
            let m: Map<String, Value> = labels
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            meta.insert("labels".into(), Value::Object(m));
        }
        if !o.annotations.is_empty() {
            let mut ann: Vec<_> = o.annotations.clone();
            ann.sort();
            let m: Map<String, Value> = ann
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            meta.insert("annotations".into(), Value::Object(m));
        }
        if o.immutable {
            obj.insert("immutable".into(), Value::Bool(true));
        }
    }
    let spans = Arc::new(SpanMap::new(kust.file.display().to_string().into()));
    let mut res = Res::new(Value::Object(obj), spans, entry.location.clone());
    res.behavior = match entry.value.behavior.as_str() {
        "create" => Behavior::Create,
        "merge" => Behavior::Merge,
        "replace" => Behavior::Replace,
        _ => Behavior::Unspecified,
    };
    res.needs_hash = !opts.is_some_and(|o| o.disable_name_suffix_hash);
    res
}

fn check_name(entry: &Entry<GeneratorArgs>, what: &str) -> R<()> {
    if entry.value.name.is_empty() {
        return Err(KustomizeError::invalid(
            entry.location.clone(),
            format!("{what} needs a name"),
        ));
    }
    Ok(())
}

pub fn config_map(kust: &Kustomization, root: &Root, entry: &Entry<GeneratorArgs>) -> R<Res> {
    check_name(entry, "configMapGenerator entry")?;
    let args = &entry.value;
    let mut obj = base("ConfigMap", args);
    let mut data = Map::new();
    let mut binary = Map::new();
    for p in pairs(root, args, "ConfigMap", &entry.location)? {
        match String::from_utf8(p.value) {
            Ok(s) => {
                data.insert(p.key, Value::String(s));
            }
            Err(e) => {
                binary.insert(p.key, Value::String(encode_base64(e.as_bytes())));
            }
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !binary.is_empty() {
        obj.insert("binaryData".into(), Value::Object(binary));
    }
    Ok(finish(obj, kust, entry))
}

pub fn secret(kust: &Kustomization, root: &Root, entry: &Entry<GeneratorArgs>) -> R<Res> {
    check_name(entry, "secretGenerator entry")?;
    let args = &entry.value;
    let mut obj = base("Secret", args);
    let t = if args.type_.is_empty() {
        "Opaque"
    } else {
        &args.type_
    };
    obj.insert("type".into(), Value::String(t.to_string()));
    let mut data = Map::new();
    for p in pairs(root, args, "Secret", &entry.location)? {
        data.insert(p.key, Value::String(encode_base64(&p.value)));
    }
    obj.insert("data".into(), Value::Object(data));
    Ok(finish(obj, kust, entry))
}

/// Go's `encoding/json` text of a value: sorted keys, HTML characters escaped.
fn go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            // Go decodes JSON numbers to float64 before encoding them again.
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => {
                    out.push_str(&format!("{}", f as i128))
                }
                Some(f) => out.push_str(&f.to_string()),
                None => out.push_str(&n.to_string()),
            }
        }
        Value::String(s) => go_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_string(k, out);
                out.push(':');
                go_json(&m[k], out);
            }
            out.push('}');
        }
    }
}

fn go_string(s: &str, out: &mut String) {
    const HEX: &[u8] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xf) as usize] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A field as kustomize's hasher reads it: a map, the text of a scalar, or "" when missing.
fn hash_field(obj: &Value, path: &[&str]) -> Value {
    match get(obj, path) {
        None => Value::String(String::new()),
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(Value::Array(_)) => Value::Null,
        Some(Value::Null) => Value::String("null".into()),
        Some(other) => Value::String(super::util::scalar_text(other).unwrap_or_default()),
    }
}

/// kustomize's name suffix hash of a ConfigMap or Secret.
pub fn hash(obj: &Value) -> String {
    let kind = super::util::get_str(obj, &["kind"]).unwrap_or_default();
    let mut m = Map::new();
    m.insert("kind".into(), Value::String(kind.clone()));
    // kustomize v5.5 looks the name up as one field literally called "metadata/name", finds
    // nothing and hashes "": the name does not contribute to the hash.
    m.insert("name".into(), hash_field(obj, &["metadata/name"]));
    m.insert("data".into(), hash_field(obj, &["data"]));
    match kind.as_str() {
        "ConfigMap" => {
            if let Some(b @ Value::Object(_)) = get(obj, &["binaryData"]) {
                m.insert("binaryData".into(), b.clone());
            }
        }
        "Secret" => {
            m.insert("type".into(), hash_field(obj, &["type"]));
            if let Some(b @ Value::Object(_)) = get(obj, &["stringData"]) {
                m.insert("stringData".into(), b.clone());
            }
        }
        _ => {
            // kustomize hashes other kinds as their whole JSON; only generators use this.
            m = obj.as_object().cloned().unwrap_or_default();
        }
    }
    let mut encoded = String::new();
    go_json(&Value::Object(m), &mut encoded);
    let digest = Sha256::digest(encoded.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Hashes of objects generated by `kubectl kustomize` (kustomize v5.5.0).
    #[test]
    fn hash_matches_kustomize() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
            "data": {"a": "1", "b": "<x&y>", "c": "line1\nline2"}});
        assert_eq!(hash(&cm), "777dcfgt68");
        let empty = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "empty"}});
        assert_eq!(hash(&empty), "6ct58987ht");
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(hash(&s), "ftgtgc4t9f");
        let tls = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"},
            "type": "kubernetes.io/tls", "data": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ"}});
        assert_eq!(hash(&tls), "4b255hm948");
        let es = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "es"},
            "type": "Opaque", "data": {}});
        assert_eq!(hash(&es), "46f8b28mk5");
    }

    #[test]
    fn long_base64_is_wrapped() {
        let s = encode_base64(&[b'x'; 120]);
        assert_eq!(s.lines().count(), 3);
        assert!(s.ends_with('\n'));
        assert_eq!(encode_base64(b"v"), "dg==");
    }

    #[test]
    fn literal_quotes() {
        let at = Location::new("k", 1, 1);
        assert_eq!(literal("a='x'", &at).unwrap().value, b"x");
        assert_eq!(literal("a=b=c", &at).unwrap().value, b"b=c");
        assert!(literal("=x", &at).is_err());
        assert!(literal("novalue", &at).is_err());
    }
}
