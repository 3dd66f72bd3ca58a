//! Which scalars of a YAML text are quoted (or block scalars). kustomize keeps a replaced
//! field's style, so a number patched over a quoted string comes out as a string; the renderer
//! needs to know which strings were quoted in the source.

use std::collections::HashSet;

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
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut set = HashSet::new();
    let mut anchors: Vec<(usize, bool)> = Vec::new();
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
                set = HashSet::new();
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
                    anchors.push((anchor, quoted));
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
                if let (Some(p), false, true) = (ptr, skip, quoted) {
                    set.insert(p);
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
                let quoted = anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .is_some_and(|(_, q)| *q);
                if let (Some(p), false, true) = (ptr, skip, quoted) {
                    set.insert(p);
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
    }
}
