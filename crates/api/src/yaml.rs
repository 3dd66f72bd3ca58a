//! YAML and JSON text -> `serde_json::Value` documents with a location for every node.
//!
//! Owns scalar resolution (YAML 1.2 core schema, as Kubernetes' kyaml), anchors, aliases and
//! merge keys, duplicate-key detection and a node budget against alias bombs. Does not know
//! about Kubernetes or Istio kinds.

use std::sync::Arc;

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};
use thiserror::Error;

use crate::source::{escape_pointer, Location, SpanMap};

/// Most nodes one file may expand to (aliases included): stops "billion laughs" inputs.
const NODE_BUDGET: usize = 2_000_000;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 100;

/// One YAML document of a file.
#[derive(Clone, Debug)]
pub struct Document {
    pub value: Value,
    pub spans: Arc<SpanMap>,
    /// Where the document's root node starts.
    pub location: Location,
}

#[derive(Debug, Error, Clone, PartialEq)]
#[error("{location}: {message}")]
pub struct YamlError {
    pub location: Location,
    pub message: String,
}

/// Parses every document of a YAML (or JSON) text. Empty documents (comments only, `---` alone)
/// are skipped, as kubectl does.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Document>, YamlError> {
    let file: Arc<str> = Arc::from(file);
    let mut b = Builder {
        file: file.clone(),
        events: Parser::new_from_str(text).peekable(),
        anchors: Vec::new(),
        budget: NODE_BUDGET,
        spans: SpanMap::new(file.clone()),
    };
    let mut docs = Vec::new();
    while let Some((ev, span)) = b.next()? {
        match ev {
            Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                b.anchors.clear();
                b.spans = SpanMap::new(file.clone());
                // An empty document has DocumentEnd straight away.
                if matches!(b.peek_is_end(), Some(true)) {
                    continue;
                }
                let (first, span) = b.next()?.ok_or_else(|| b.err_at(&span, "unexpected end"))?;
                let location = b.loc(&span);
                let value = b.node(first, &span, String::new(), 0)?;
                if value.is_null() {
                    continue;
                }
                let spans = Arc::new(std::mem::replace(&mut b.spans, SpanMap::new(file.clone())));
                docs.push(Document {
                    value,
                    spans,
                    location,
                });
            }
            _ => {}
        }
    }
    Ok(docs)
}

struct Builder<'a> {
    file: Arc<str>,
    events: std::iter::Peekable<Parser<'a, serde_saphyr::granit_parser::StrInput<'a>>>,
    anchors: Vec<(usize, Value)>,
    budget: usize,
    spans: SpanMap,
}

impl<'a> Builder<'a> {
    fn loc(&self, span: &Span) -> Location {
        Location::new(
            self.file.clone(),
            span.start.line().max(1),
            span.start.col() + 1,
        )
    }

    fn err_at(&self, span: &Span, msg: impl Into<String>) -> YamlError {
        YamlError {
            location: self.loc(span),
            message: msg.into(),
        }
    }

    fn peek_is_end(&mut self) -> Option<bool> {
        match self.events.peek() {
            Some(Ok((Event::DocumentEnd, _))) => Some(true),
            Some(_) => Some(false),
            None => None,
        }
    }

    fn next(&mut self) -> Result<Option<(Event<'a>, Span)>, YamlError> {
        loop {
            match self.events.next() {
                None => return Ok(None),
                Some(Err(e)) => {
                    let m = e.marker();
                    return Err(YamlError {
                        location: Location::new(self.file.clone(), m.line().max(1), m.col() + 1),
                        message: format!("malformed YAML: {}", e.info()),
                    });
                }
                #[allow(unreachable_patterns)]
                Some(Ok((ev, span))) => {
                    if is_comment(&ev) {
                        continue;
                    }
                    return Ok(Some((ev, span)));
                }
            }
        }
    }

    fn expect_next(&mut self, after: &Span) -> Result<(Event<'a>, Span), YamlError> {
        self.next()?
            .ok_or_else(|| self.err_at(after, "malformed YAML: unexpected end of input"))
    }

    fn spend(&mut self, n: usize, span: &Span) -> Result<(), YamlError> {
        if self.budget < n {
            return Err(self.err_at(
                span,
                "document expands to too many nodes (alias bomb?): refusing to load it",
            ));
        }
        self.budget -= n;
        Ok(())
    }

    /// Builds one node. `record` stores the node's location under `pointer` (mapping values
    /// are recorded by their parent at the key's location instead).
    fn node(
        &mut self,
        ev: Event<'a>,
        span: &Span,
        pointer: String,
        depth: usize,
    ) -> Result<Value, YamlError> {
        self.node_at(ev, span, pointer, depth, true)
    }

    fn node_at(
        &mut self,
        ev: Event<'a>,
        span: &Span,
        pointer: String,
        depth: usize,
        record: bool,
    ) -> Result<Value, YamlError> {
        if depth > MAX_DEPTH {
            return Err(self.err_at(span, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.spend(1, span)?;
        if record {
            let l = self.loc(span);
            self.spans.insert(pointer.clone(), l.line, l.column);
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| t.to_string());
                let v = resolve_scalar(&text, style, tag.as_deref())
                    .map_err(|m| self.err_at(span, m))?;
                if anchor != 0 {
                    self.anchors.push((anchor, v.clone()));
                }
                Ok(v)
            }
            Event::Alias(id) => {
                let v = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| self.err_at(span, "alias refers to an unknown anchor"))?;
                self.spend(count_nodes(&v), span)?;
                Ok(v)
            }
            Event::SequenceStart(_, anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, sp) = self.expect_next(span)?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let p = format!("{pointer}/{}", items.len());
                    items.push(self.node(ev, &sp, p, depth + 1)?);
                }
                let v = Value::Array(items);
                if anchor != 0 {
                    self.anchors.push((anchor, v.clone()));
                }
                Ok(v)
            }
            Event::MappingStart(_, anchor, _) => {
                let mut map = Map::new();
                let mut merged: Vec<Map<String, Value>> = Vec::new();
                loop {
                    let (kev, ksp) = self.expect_next(span)?;
                    if matches!(kev, Event::MappingEnd) {
                        break;
                    }
                    let key_value = match kev {
                        Event::Scalar(text, style, _, tag) => {
                            self.spend(1, &ksp)?;
                            let tag = tag.map(|t| t.to_string());
                            resolve_scalar(&text, style, tag.as_deref())
                                .map_err(|m| self.err_at(&ksp, m))?
                        }
                        other => self.node_at(other, &ksp, String::new(), depth + 1, false)?,
                    };
                    let key = match key_value {
                        Value::String(s) => s,
                        Value::Null => "null".to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        _ => return Err(self.err_at(&ksp, "mapping keys must be scalars")),
                    };
                    let (vev, vsp) = self.expect_next(&ksp)?;
                    let child = format!("{pointer}/{}", escape_pointer(&key));
                    let kl = self.loc(&ksp);
                    self.spans.insert(child.clone(), kl.line, kl.column);
                    let value = self.node_at(vev, &vsp, child, depth + 1, false)?;
                    if key == "<<" {
                        match value {
                            Value::Object(m) => merged.push(m),
                            Value::Array(list) => {
                                for item in list {
                                    match item {
                                        Value::Object(m) => merged.push(m),
                                        _ => {
                                            return Err(self.err_at(
                                                &vsp,
                                                "merge key `<<` expects a mapping or a list of mappings",
                                            ))
                                        }
                                    }
                                }
                            }
                            _ => {
                                return Err(self.err_at(
                                    &vsp,
                                    "merge key `<<` expects a mapping or a list of mappings",
                                ))
                            }
                        }
                        continue;
                    }
                    if map.contains_key(&key) {
                        return Err(self.err_at(
                            &ksp,
                            format!("mapping key {key:?} already defined in this mapping"),
                        ));
                    }
                    map.insert(key, value);
                }
                for m in merged {
                    for (k, v) in m {
                        map.entry(k).or_insert(v);
                    }
                }
                let v = Value::Object(map);
                if anchor != 0 {
                    self.anchors.push((anchor, v.clone()));
                }
                Ok(v)
            }
            _ => Err(self.err_at(span, "malformed YAML: unexpected token")),
        }
    }
}

#[allow(unused_variables)]
fn is_comment(ev: &Event<'_>) -> bool {
    !matches!(
        ev,
        Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(..)
            | Event::DocumentEnd
            | Event::Alias(_)
            | Event::Scalar(..)
            | Event::SequenceStart(..)
            | Event::SequenceEnd
            | Event::MappingStart(..)
            | Event::MappingEnd
    )
}

fn count_nodes(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(count_nodes).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(count_nodes).sum::<usize>(),
        _ => 1,
    }
}

/// Resolves a scalar by the YAML 1.2 core schema (what Kubernetes' YAML libraries do for
/// manifests): only plain scalars can be null, bool or numbers; quoted ones are strings.
pub fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Value, String> {
    if let Some(tag) = tag {
        let short = tag.rsplit(':').next().unwrap_or(tag);
        let short = short.trim_start_matches('!');
        match short {
            "str" => return Ok(Value::String(text.to_string())),
            "null" => return Ok(Value::Null),
            "bool" => {
                return plain_bool(text)
                    .map(Value::Bool)
                    .ok_or_else(|| format!("{text:?} is not a boolean"))
            }
            "int" => return plain_int(text).ok_or_else(|| format!("{text:?} is not an integer")),
            "float" => {
                return plain_float(text)
                    .or_else(|| plain_int(text))
                    .ok_or_else(|| format!("{text:?} is not a number"))
            }
            "binary" => return Ok(Value::String(text.split_whitespace().collect())),
            _ => {}
        }
    }
    if !matches!(style, ScalarStyle::Plain) {
        return Ok(Value::String(text.to_string()));
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = plain_bool(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(n) = plain_int(text) {
        return Ok(n);
    }
    if let Some(f) = plain_float(text) {
        return Ok(f);
    }
    Ok(Value::String(text.to_string()))
}

fn plain_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn plain_int(t: &str) -> Option<Value> {
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if body.is_empty() {
        return None;
    }
    let parsed = if let Some(h) = body.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()
    } else if let Some(o) = body.strip_prefix("0o") {
        i128::from_str_radix(o, 8).ok()
    } else if body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse::<i128>().ok()
    } else {
        None
    }?;
    let v = if neg { -parsed } else { parsed };
    if let Ok(i) = i64::try_from(v) {
        Some(Value::Number(i.into()))
    } else if let Ok(u) = u64::try_from(v) {
        Some(Value::Number(u.into()))
    } else {
        Number::from_f64(v as f64).map(Value::Number)
    }
}

fn plain_float(t: &str) -> Option<Value> {
    let f = match t {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => f64::INFINITY,
        "-.inf" | "-.Inf" | "-.INF" => f64::NEG_INFINITY,
        ".nan" | ".NaN" | ".NAN" => f64::NAN,
        _ => {
            let b = t.as_bytes();
            let ok = !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
                && b.iter().any(|c| c.is_ascii_digit());
            if !ok {
                return None;
            }
            t.parse::<f64>().ok()?
        }
    };
    // JSON has no infinities or NaN: keep the text so nothing is lost.
    Some(Number::from_f64(f).map_or_else(|| Value::String(t.to_string()), Value::Number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Document {
        let mut d = parse_documents("t.yaml", text).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        d.remove(0)
    }

    #[test]
    fn scalars_follow_core_schema() {
        let d =
            one("a: 1\nb: '1'\nc: true\nd: yes\ne: ~\nf: 1.5\ng: 0x10\nh: \"x\"\ni: 1e3\nj: 07\n");
        let v = &d.value;
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"], "1");
        assert_eq!(v["c"], true);
        assert_eq!(v["d"], "yes");
        assert!(v["e"].is_null());
        assert_eq!(v["f"], 1.5);
        assert_eq!(v["g"], 16);
        assert_eq!(v["h"], "x");
        assert_eq!(v["i"], 1000.0);
        assert_eq!(v["j"], 7);
    }

    #[test]
    fn multi_documents_and_locations() {
        let docs = parse_documents(
            "f.yaml",
            "# c\n---\nkind: A\nspec:\n  hosts:\n  - x\n  - y\n---\n---\nkind: B\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].location.line, 3);
        let l = docs[0].spans.locate("/spec/hosts/1").unwrap();
        assert_eq!((l.line, l.column), (7, 5));
        let l = docs[0].spans.locate("/spec").unwrap();
        assert_eq!((l.line, l.column), (4, 1));
        assert_eq!(docs[1].location.line, 10);
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let d = one("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\nlist: [*b]\n");
        assert_eq!(d.value["other"]["x"], 1);
        assert_eq!(d.value["other"]["y"], 3);
        assert_eq!(d.value["list"][0]["y"], 2);
    }

    #[test]
    fn duplicate_keys_rejected_with_location() {
        let e = parse_documents("f.yaml", "a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.location.line, 3);
        assert!(e.message.contains("already defined"), "{e}");
    }

    #[test]
    fn malformed_yaml_has_location() {
        let e = parse_documents("f.yaml", "a:\n  b: [1, 2\nc: 3\n").unwrap_err();
        assert!(e.message.starts_with("malformed YAML"), "{e}");
        assert!(e.location.line >= 2, "{e}");
    }

    #[test]
    fn alias_bomb_refused() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = parse_documents("f.yaml", &s).unwrap_err();
        assert!(e.message.contains("too many nodes"), "{e}");
    }

    #[test]
    fn json_is_accepted() {
        let d =
            one("{\"kind\": \"Gateway\", \"spec\": {\"servers\": [{\"port\": {\"number\": 80}}]}}");
        assert_eq!(d.value["spec"]["servers"][0]["port"]["number"], 80);
    }

    #[test]
    fn deep_nesting_refused_not_overflowed() {
        let s = "[".repeat(10_000);
        assert!(parse_documents("f.yaml", &s).is_err());
    }
}
#[cfg(test)]
mod deep_tests {
    #[test]
    fn deep_block_sequences_refused_without_overflow() {
        let ok = format!("{}{}", "- ".repeat(90), "x");
        assert!(super::parse_documents("f.yaml", &ok).is_ok());
        for n in [300, 5000] {
            let deep = format!("{}{}", "- ".repeat(n), "x");
            let e = super::parse_documents("f.yaml", &deep).unwrap_err();
            assert!(e.message.contains("nesting deeper"), "{e}");
        }
    }
}
