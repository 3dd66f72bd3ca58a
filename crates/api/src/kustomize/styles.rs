//! Which scalars of a YAML text are quoted (or block scalars). kustomize keeps a replaced
//! field's style, so a number patched over a quoted string comes out as a string; the renderer
//! needs to know which strings were quoted in the source.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use crate::source::escape_pointer;
use crate::yaml::resolve_scalar;

enum Frame {
    Map {
        ptr: String,
        key: Option<String>,
        /// Inside a `<<` merge key value (not tracked).
        skip: bool,
    },
    Seq {
        ptr: String,
        index: usize,
        skip: bool,
    },
}

/// Pointers of quoted scalars, one set per non-empty document (as `parse_documents` returns
/// them). Best effort: an unreadable text gives no sets.
pub fn quoted_pointers(text: &str) -> Vec<HashSet<String>> {
    scan(text)
        .into_iter()
        .map(|doc| {
            doc.into_iter()
                .filter(|(_, (quoted, _))| *quoted)
                .map(|(p, _)| p)
                .collect()
        })
        .collect()
}

/// Text of every plain scalar by pointer, one map per non-empty document.
pub fn plain_scalars(text: &str) -> Vec<HashMap<String, String>> {
    scan(text)
        .into_iter()
        .map(|doc| {
            doc.into_iter()
                .filter(|(_, (quoted, _))| !*quoted)
                .map(|(p, (_, t))| (p, t))
                .collect()
        })
        .collect()
}

type Scalars = HashMap<String, (bool, String)>;

/// Every scalar (not keys, not under merge keys) by pointer: quoted?, text.
fn scan(text: &str) -> Vec<Scalars> {
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut set: Scalars = HashMap::new();
    let mut anchors: Vec<(usize, (bool, String))> = Vec::new();
    let mut root_null = false;
    let mut has_root = false;
    for item in Parser::new_from_str(text) {
        let Ok((ev, _)) = item else {
            return Vec::new();
        };
        // Where the next node goes: its pointer, whether it is a key, whether untracked.
        let slot = |stack: &[Frame]| -> (Option<String>, bool, bool) {
            match stack.last() {
                None => (Some(String::new()), false, false),
                Some(Frame::Map { ptr, key, skip }) => match key {
                    None => (None, true, *skip),
                    Some(k) => (
                        Some(format!("{ptr}/{}", escape_pointer(k))),
                        false,
                        *skip || k == "<<",
                    ),
                },
                Some(Frame::Seq { ptr, index, skip }) => {
                    (Some(format!("{ptr}/{index}")), false, *skip)
                }
            }
        };
        // After a complete node: advance the parent.
        let done = |stack: &mut Vec<Frame>| match stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        };
        match ev {
            Event::DocumentStart(..) => {
                set = HashMap::new();
                stack.clear();
                anchors.clear();
                root_null = false;
                has_root = false;
            }
            Event::DocumentEnd if has_root && !root_null => {
                out.push(std::mem::take(&mut set));
            }
            Event::Scalar(value, style, anchor, tag) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let (ptr, is_key, skip) = slot(&stack);
                let tag = tag.map(|t| t.to_string());
                if stack.is_empty() {
                    has_root = true;
                    root_null = resolve_scalar(&value, style, tag.as_deref())
                        .map(|v| v.is_null())
                        .unwrap_or(false);
                }
                if anchor != 0 {
                    anchors.push((anchor, (quoted, value.to_string())));
                }
                if is_key {
                    let k = match resolve_scalar(&value, style, tag.as_deref()) {
                        Ok(Value::String(s)) => s,
                        Ok(Value::Null) => "null".into(),
                        Ok(Value::Bool(b)) => b.to_string(),
                        Ok(Value::Number(n)) => n.to_string(),
                        _ => value.to_string(),
                    };
                    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                        *key = Some(k);
                    }
                    continue;
                }
                if let (Some(p), false) = (ptr, skip) {
                    set.insert(p, (quoted, value.to_string()));
                }
                done(&mut stack);
            }
            Event::Alias(id) => {
                let (ptr, is_key, skip) = slot(&stack);
                if stack.is_empty() {
                    has_root = true;
                }
                if is_key {
                    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                        *key = Some(String::new());
                    }
                    continue;
                }
                let found = anchors.iter().rev().find(|(a, _)| *a == id);
                if let (Some(p), false, Some((_, v))) = (ptr, skip, found) {
                    set.insert(p, v.clone());
                }
                done(&mut stack);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let (ptr, is_key, skip) = slot(&stack);
                if stack.is_empty() {
                    has_root = true;
                }
                let ptr = ptr.unwrap_or_default();
                // A collection as a key is not valid config; track nothing below it.
                let skip = skip || is_key;
                stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        ptr,
                        key: None,
                        skip,
                    }
                } else {
                    Frame::Seq {
                        ptr,
                        index: 0,
                        skip,
                    }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                done(&mut stack);
            }
            _ => {}
        }
    }
    out
}

/// Whether a string can only be written quoted (as plain YAML it would not be a string).
pub fn needs_quotes(s: &str) -> bool {
    !matches!(
        resolve_scalar(s, ScalarStyle::Plain, None),
        Ok(Value::String(_))
    )
}

/// How YAML 1.1 (kustomize's conversion of JSON 6902 patches) reads a plain scalar, where it
/// differs from YAML 1.2: `yes`/`no`/`on`/`off`/`y`/`n` booleans, octal `010`, `1_000`,
/// `60:30` (base 60) and dates.
pub fn yaml11(text: &str) -> Option<Value> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Some(Value::Bool(true)),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Some(Value::Bool(false)),
        _ => {}
    }
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let sign = |v: i64| Value::Number(if neg { -v } else { v }.into());
    let clean: String = body.chars().filter(|c| *c != '_').collect();
    if clean.is_empty() || (body.contains('_') && !body.starts_with(|c: char| c.is_ascii_digit())) {
        return None;
    }
    if let Some(b) = clean.strip_prefix("0b") {
        return i64::from_str_radix(b, 2).ok().map(sign);
    }
    if clean.len() > 1
        && clean.starts_with('0')
        && clean.bytes().all(|c| (b'0'..=b'7').contains(&c))
    {
        return i64::from_str_radix(&clean[1..], 8).ok().map(sign);
    }
    if body.contains('_') && clean.bytes().all(|c| c.is_ascii_digit()) {
        return clean.parse::<i64>().ok().map(sign);
    }
    if clean.contains(':') && !clean.starts_with(':') {
        let mut v: i64 = 0;
        for part in clean.split(':') {
            if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            v = v.checked_mul(60)?.checked_add(part.parse::<i64>().ok()?)?;
        }
        return Some(sign(v));
    }
    let b = text.as_bytes();
    if b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
    {
        return Some(Value::String(format!("{text}T00:00:00Z")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_quoted_scalars() {
        let sets = quoted_pointers(
            "# c\n---\na: \"x\"\nb: y\nc: ['1', 2]\nd: |\n  text\n---\n---\n{\"k\": \"v\", \"n\": 1}\n",
        );
        assert_eq!(sets.len(), 2);
        let mut a: Vec<_> = sets[0].iter().cloned().collect();
        a.sort();
        assert_eq!(a, vec!["/a", "/c/0", "/d"]);
        assert_eq!(sets[1].iter().collect::<Vec<_>>(), vec!["/k"]);
        assert!(needs_quotes("1") && needs_quotes("true") && !needs_quotes("v1"));
        let plain = plain_scalars("a: yes\nb: 'no'\nc: [010]\n");
        assert_eq!(plain[0].get("/a").map(String::as_str), Some("yes"));
        assert!(!plain[0].contains_key("/b"));
        assert_eq!(plain[0].get("/c/0").map(String::as_str), Some("010"));
    }

    #[test]
    fn yaml_1_1_scalars() {
        assert_eq!(yaml11("yes"), Some(Value::Bool(true)));
        assert_eq!(yaml11("Off"), Some(Value::Bool(false)));
        assert_eq!(yaml11("010"), Some(Value::from(8)));
        assert_eq!(yaml11("1_000"), Some(Value::from(1000)));
        assert_eq!(yaml11("1:20"), Some(Value::from(80)));
        assert_eq!(
            yaml11("2021-01-02"),
            Some(Value::from("2021-01-02T00:00:00Z"))
        );
        assert_eq!(yaml11("10"), None);
        assert_eq!(yaml11("v1"), None);
    }
}
