//! Where a resource came from: file, line and column, for every message that points at config.
//!
//! Owns `Location` (a point in a file) and `SpanMap` (field path -> location for one document).
//! Does not own parsing; `yaml` fills these in.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A point in a source file. Lines and columns are 1-based, as editors show them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn new(file: impl Into<Arc<str>>, line: usize, column: usize) -> Self {
        Self {
            file: file.into(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Locations of every node of one YAML document, keyed by JSON pointer
/// (`/spec/http/0/route`). The key of a mapping entry maps to the location of its key.
#[derive(Clone, Debug, Default)]
pub struct SpanMap {
    file: Arc<str>,
    spans: HashMap<String, (usize, usize)>,
}

impl SpanMap {
    pub fn new(file: Arc<str>) -> Self {
        Self {
            file,
            spans: HashMap::new(),
        }
    }

    pub fn file(&self) -> &Arc<str> {
        &self.file
    }

    pub fn insert(&mut self, pointer: String, line: usize, column: usize) {
        self.spans.entry(pointer).or_insert((line, column));
    }

    /// Location of the node at `pointer`, or of its nearest ancestor that has one.
    pub fn locate(&self, pointer: &str) -> Option<Location> {
        let mut p = pointer;
        loop {
            if let Some(&(line, column)) = self.spans.get(p) {
                return Some(Location::new(self.file.clone(), line, column));
            }
            if p.is_empty() {
                return None;
            }
            p = match p.rfind('/') {
                Some(i) => &p[..i],
                None => "",
            };
        }
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// Turns a display field path (`spec.http[0].route[1].weight`) into a JSON pointer
/// (`/spec/http/0/route/1/weight`).
pub fn path_to_pointer(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    let mut seg = String::new();
    let flush = |seg: &mut String, out: &mut String| {
        if !seg.is_empty() {
            out.push('/');
            out.push_str(&escape_pointer(seg));
            seg.clear();
        }
    };
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => flush(&mut seg, &mut out),
            '[' => {
                flush(&mut seg, &mut out);
                let mut idx = String::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    idx.push(c);
                }
                out.push('/');
                out.push_str(&escape_pointer(idx.trim_matches('"')));
            }
            _ => seg.push(c),
        }
    }
    flush(&mut seg, &mut out);
    out
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn escape_pointer(segment: &str) -> String {
    if segment.contains(['~', '/']) {
        segment.replace('~', "~0").replace('/', "~1")
    } else {
        segment.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_from_path() {
        assert_eq!(
            path_to_pointer("spec.http[0].route[1].weight"),
            "/spec/http/0/route/1/weight"
        );
        assert_eq!(path_to_pointer(""), "");
        assert_eq!(
            path_to_pointer("metadata.labels[\"app.kubernetes.io/name\"]"),
            "/metadata/labels/app.kubernetes.io~1name"
        );
    }

    #[test]
    fn locate_falls_back_to_ancestor() {
        let mut m = SpanMap::new("f.yaml".into());
        m.insert("".into(), 1, 1);
        m.insert("/spec".into(), 5, 1);
        assert_eq!(m.locate("/spec/x/y").unwrap().line, 5);
        assert_eq!(m.locate("/other").unwrap().line, 1);
    }
}
