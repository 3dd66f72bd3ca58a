//! `replacements` (kustomize `ReplacementTransformer`): copy a field of one object into fields
//! of others, optionally split by a delimiter, creating missing target fields on request.

use serde_json::{Map, Value};
use serde_saphyr::granit_parser::ScalarStyle;

use super::error::KustomizeError;
use super::kustfile::Entry;
use super::loader::Root;
use super::res::Res;
use super::resid::{Gvk, ResId};
use super::selector::Selector;
use super::util::scalar_text;
use crate::source::Location;
use crate::yaml::parse_documents;

type R<T> = Result<T, KustomizeError>;

#[derive(Clone, Debug, Default)]
struct Options {
    delimiter: String,
    index: i64,
    create: bool,
}

#[derive(Clone, Debug, Default)]
struct IdSel {
    gvk: Gvk,
    name: String,
    namespace: String,
}

impl IdSel {
    fn is_empty(&self) -> bool {
        self.gvk == Gvk::default() && self.name.is_empty() && self.namespace.is_empty()
    }

    /// kyaml `ResId.IsSelectedBy`.
    fn selects(&self, id: &ResId) -> bool {
        let sel = ResId {
            gvk: self.gvk.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        };
        (self.name.is_empty() || self.name == id.name)
            && (self.namespace.is_empty() || sel.is_ns_equals(id))
            && id.gvk.is_selected(&self.gvk)
    }
}

#[derive(Clone, Debug, Default)]
struct Sel {
    id: IdSel,
    labels: String,
    annotations: String,
}

#[derive(Clone, Debug)]
struct Target {
    select: Sel,
    reject: Vec<Sel>,
    field_paths: Vec<String>,
    options: Options,
}

#[derive(Clone, Debug)]
struct Replacement {
    source: (IdSel, String, Options),
    targets: Vec<Target>,
    location: Location,
}

struct Dec<'a> {
    at: &'a Location,
}

impl Dec<'_> {
    fn err(&self, m: impl Into<String>) -> KustomizeError {
        KustomizeError::invalid(self.at.clone(), format!("replacements: {}", m.into()))
    }

    fn obj<'v>(&self, v: &'v Value, what: &str, known: &[&str]) -> R<&'v Map<String, Value>> {
        let m = v
            .as_object()
            .ok_or_else(|| self.err(format!("{what} must be a map")))?;
        if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(self.err(format!("unknown field {k:?} in {what}")));
        }
        Ok(m)
    }

    fn s(&self, v: Option<&Value>, what: &str) -> R<String> {
        match v {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.err(format!("{what} must be a string"))),
        }
    }

    fn id(&self, m: &Map<String, Value>) -> R<IdSel> {
        Ok(IdSel {
            gvk: Gvk {
                group: self.s(m.get("group"), "group")?,
                version: self.s(m.get("version"), "version")?,
                kind: self.s(m.get("kind"), "kind")?,
            },
            name: self.s(m.get("name"), "name")?,
            namespace: self.s(m.get("namespace"), "namespace")?,
        })
    }

    fn options(&self, v: Option<&Value>) -> R<Options> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(Options::default());
        };
        let m = self.obj(v, "options", &["delimiter", "index", "create", "encoding"])?;
        if m.get("encoding").is_some_and(|e| !e.is_null()) {
            return Err(KustomizeError::unsupported(
                self.at.clone(),
                "replacements options.encoding",
            ));
        }
        Ok(Options {
            delimiter: self.s(m.get("delimiter"), "delimiter")?,
            index: match m.get("index") {
                None | Some(Value::Null) => 0,
                Some(x) => x
                    .as_i64()
                    .ok_or_else(|| self.err("index must be an integer"))?,
            },
            create: match m.get("create") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(self.err("create must be true or false")),
            },
        })
    }

    fn sel(&self, v: &Value, what: &str) -> R<Sel> {
        let m = self.obj(
            v,
            what,
            &[
                "group",
                "version",
                "kind",
                "name",
                "namespace",
                "labelSelector",
                "annotationSelector",
            ],
        )?;
        Ok(Sel {
            id: self.id(m)?,
            labels: self.s(m.get("labelSelector"), "labelSelector")?,
            annotations: self.s(m.get("annotationSelector"), "annotationSelector")?,
        })
    }

    fn replacement(&self, v: &Value) -> R<Replacement> {
        let m = self.obj(v, "a replacement", &["source", "targets"])?;
        let (Some(src), Some(targets)) = (
            m.get("source").filter(|s| !s.is_null()),
            m.get("targets").filter(|t| !t.is_null()),
        ) else {
            return Err(self.err("replacements must specify a source and at least one target"));
        };
        let sm = self.obj(
            src,
            "source",
            &[
                "group",
                "version",
                "kind",
                "name",
                "namespace",
                "fieldPath",
                "options",
            ],
        )?;
        let mut field_path = self.s(sm.get("fieldPath"), "fieldPath")?;
        if field_path.is_empty() {
            field_path = "metadata.name".into();
        }
        let source = (self.id(sm)?, field_path, self.options(sm.get("options"))?);
        let mut out = Vec::new();
        for t in targets
            .as_array()
            .ok_or_else(|| self.err("targets must be a list"))?
        {
            let tm = self.obj(t, "target", &["select", "reject", "fieldPaths", "options"])?;
            let select = match tm.get("select").filter(|s| !s.is_null()) {
                Some(s) => self.sel(s, "select")?,
                None => return Err(self.err("target must specify resources to select")),
            };
            let mut reject = Vec::new();
            if let Some(Value::Array(rs)) = tm.get("reject") {
                for r in rs {
                    reject.push(self.sel(r, "reject")?);
                }
            }
            let mut field_paths = Vec::new();
            match tm.get("fieldPaths") {
                None | Some(Value::Null) => {}
                Some(Value::Array(ps)) => {
                    for p in ps {
                        field_paths.push(self.s(Some(p), "fieldPaths")?);
                    }
                }
                Some(_) => return Err(self.err("fieldPaths must be a list")),
            }
            if field_paths.is_empty() {
                field_paths.push("metadata.name".into());
            }
            out.push(Target {
                select,
                reject,
                field_paths,
                options: self.options(tm.get("options"))?,
            });
        }
        Ok(Replacement {
            source,
            targets: out,
            location: self.at.clone(),
        })
    }
}

fn load(entries: &[Entry<Value>], root: &Root) -> R<Vec<Replacement>> {
    let mut out = Vec::new();
    for e in entries {
        let d = Dec { at: &e.location };
        let path = e.value.get("path").filter(|p| !p.is_null());
        let inline = e.value.get("source").is_some() || e.value.get("targets").is_some();
        match path {
            Some(p) => {
                if inline {
                    return Err(d.err("cannot specify both path and inline replacement"));
                }
                d.obj(&e.value, "a replacement", &["path"])?;
                let rel = d.s(Some(p), "path")?;
                let (display, text) = root.read_text(&rel, &e.location)?;
                let file = display.display().to_string();
                let docs = parse_documents(&file, &text)?;
                for doc in docs {
                    let fd = Dec { at: &doc.location };
                    match &doc.value {
                        Value::Array(items) => {
                            for it in items {
                                out.push(fd.replacement(it)?);
                            }
                        }
                        Value::Object(_) => out.push(fd.replacement(&doc.value)?),
                        _ => return Err(fd.err("a replacement file must hold a list or a map")),
                    }
                }
            }
            None => out.push(d.replacement(&e.value)?),
        }
    }
    Ok(out)
}

/// kyaml `SmarterPathSplitter`: splits a field path on dots (`\.` is a dot), keeping a bracketed
/// part that spans dots whole; such a part without `=` is a map key (`[a.b/c]` -> `a.b/c`).
fn split_path(p: &str) -> Vec<String> {
    let mut split = Vec::new();
    let mut cur = String::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                cur.push('.');
                chars.next();
            }
            '.' => split.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    split.push(cur);
    let mut out = Vec::new();
    let mut i = 0;
    while i < split.len() {
        let elem = &split[i];
        if elem.starts_with('[') && !elem.ends_with(']') {
            let mut parts = vec![elem.clone()];
            while i < split.len() - 1 {
                i += 1;
                parts.push(split[i].clone());
                if split[i].ends_with(']') {
                    break;
                }
            }
            let joined = parts.join(".");
            if joined.contains('=') || !joined.ends_with(']') {
                out.push(joined);
            } else {
                out.push(joined[1..joined.len() - 1].to_string());
            }
        } else {
            out.push(elem.clone());
        }
        i += 1;
    }
    out
}

fn list_index(p: &str) -> Option<(&str, &str)> {
    p.strip_prefix('[')?.strip_suffix(']')?.split_once('=')
}

/// kyaml `PathGetter` lookup (source side).
fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = if let Some((k, val)) = list_index(p) {
            cur.as_array()?.iter().find(|e| {
                if k.is_empty() {
                    scalar_text(e).as_deref() == Some(val)
                } else {
                    e.get(k).and_then(scalar_text).as_deref() == Some(val)
                }
            })?
        } else if let Ok(i) = p.parse::<usize>() {
            cur.as_array()?.get(i)?
        } else if p == "-" {
            cur.as_array()?.last()?
        } else {
            cur.as_object()?.get(p)?
        };
    }
    Some(cur)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Scalar,
    Map,
    Seq,
}

fn kind_of(v: &Value) -> Kind {
    match v {
        Value::Object(_) => Kind::Map,
        Value::Array(_) => Kind::Seq,
        _ => Kind::Scalar,
    }
}

fn new_node(next: Option<&String>, create: Kind) -> Value {
    let k = match next {
        None => create,
        Some(n) if n.starts_with('[') || n.parse::<usize>().is_ok() => Kind::Seq,
        Some(_) => Kind::Map,
    };
    match k {
        Kind::Map => Value::Object(Map::new()),
        Kind::Seq => Value::Array(Vec::new()),
        // A new scalar has no type yet: it takes the text of the value, resolved.
        Kind::Scalar => Value::Null,
    }
}

/// kyaml `PathMatcher`: JSON pointers of every field the path reaches (creating on request).
fn matches(
    v: &mut Value,
    path: &[String],
    create: Option<Kind>,
    at: String,
    created: &mut Vec<String>,
    out: &mut Vec<String>,
) -> Result<(), String> {
    let Some(p) = path.first() else {
        out.push(at);
        return Ok(());
    };
    let rest = &path[1..];
    if let Some((k, pattern)) = list_index(p) {
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))?;
        let Value::Array(items) = v else {
            return Ok(());
        };
        for (i, e) in items.iter_mut().enumerate() {
            let text = if k.is_empty() {
                scalar_text(e)
            } else {
                e.get(k).and_then(scalar_text)
            };
            if text.is_some_and(|t| re.is_match(&t)) {
                matches(e, rest, create, format!("{at}/{i}"), created, out)?;
            }
        }
        return Ok(());
    }
    if let Ok(idx) = p.parse::<usize>() {
        let Value::Array(items) = v else {
            return Ok(());
        };
        if idx == items.len() {
            if let Some(c) = create {
                items.push(new_node(rest.first(), c));
                created.push(format!("{at}/{idx}"));
            }
        }
        if idx >= items.len() {
            return Err(format!(
                "index {idx} specified but only {} elements found",
                items.len()
            ));
        }
        return matches(
            &mut items[idx],
            rest,
            create,
            format!("{at}/{idx}"),
            created,
            out,
        );
    }
    if p == "*" {
        if let Value::Array(items) = v {
            for (i, e) in items.iter_mut().enumerate() {
                matches(e, rest, create, format!("{at}/{i}"), created, out)?;
            }
        }
        return Ok(());
    }
    if v.is_null() && create.is_some() {
        *v = Value::Object(Map::new());
    }
    let Value::Object(m) = v else {
        return Ok(());
    };
    let child = super::util::ptr(&at, p);
    if !m.contains_key(p) {
        let Some(c) = create else { return Ok(()) };
        m.insert(p.clone(), new_node(rest.first(), c));
        created.push(child.clone());
    }
    matches(
        m.get_mut(p).expect("present"),
        rest,
        create,
        child,
        created,
        out,
    )
}

fn resolve(text: &str) -> Value {
    crate::yaml::resolve_scalar(text, ScalarStyle::Plain, None)
        .unwrap_or_else(|_| Value::String(text.to_string()))
}

fn set_value(
    target: &mut Value,
    value: &Value,
    opts: &Options,
    created: bool,
) -> Result<(), String> {
    let mut value = value.clone();
    if !opts.delimiter.is_empty() {
        if matches!(target, Value::Object(_) | Value::Array(_)) {
            return Err("delimiter option can only be used with scalar nodes".into());
        }
        let current = scalar_text(target).unwrap_or_default();
        let mut parts: Vec<String> = current.split(&opts.delimiter).map(str::to_string).collect();
        let v = scalar_text(&value).unwrap_or_default();
        if opts.index < 0 {
            parts.insert(0, v);
        } else if opts.index as usize >= parts.len() {
            parts.push(v);
        } else {
            parts[opts.index as usize] = v;
        }
        value = Value::String(parts.join(&opts.delimiter));
    }
    match target {
        Value::Object(_) | Value::Array(_) => *target = value,
        _ => {
            // Scalars take the text only and keep their type.
            let text = scalar_text(&value).unwrap_or_default();
            *target = if created {
                resolve(&text)
            } else if target.is_string() {
                Value::String(text)
            } else {
                resolve(&text)
            };
        }
    }
    Ok(())
}

fn ids(r: &Res) -> Vec<ResId> {
    let mut v = vec![r.cur_id()];
    v.extend(r.prev_ids());
    v
}

fn matches_selectors(r: &Res, s: &Sel) -> Result<bool, String> {
    let sel = Selector {
        label_selector: s.labels.clone(),
        annotation_selector: s.annotations.clone(),
        ..Selector::default()
    };
    Ok(sel.compile()?.matches(r))
}

/// Applies the `replacements` of a kustomization.
pub fn apply(list: &mut [Res], entries: &[Entry<Value>], root: &Root) -> R<()> {
    for rep in load(entries, root)? {
        let err =
            |m: String| KustomizeError::invalid(rep.location.clone(), format!("replacements: {m}"));
        let (src_sel, src_path, src_opts) = &rep.source;
        let mut found = None;
        for (i, r) in list.iter().enumerate() {
            if ids(r).iter().any(|id| src_sel.selects(id)) {
                if found.is_some() {
                    return Err(err(format!(
                        "multiple matches for source selector {}",
                        describe(src_sel)
                    )));
                }
                found = Some(i);
            }
        }
        let Some(si) = found else {
            return Err(err(format!("nothing selected by {}", describe(src_sel))));
        };
        let path = split_path(src_path);
        let mut value = match lookup(&list[si].value, &path) {
            Some(v) if !is_nil_or_empty(v) => v.clone(),
            _ => {
                return Err(err(format!(
                    "fieldPath `{src_path}` is missing for replacement source {}",
                    list[si].cur_id()
                )))
            }
        };
        if !src_opts.delimiter.is_empty() {
            let Some(text) =
                scalar_text(&value).filter(|_| !value.is_object() && !value.is_array())
            else {
                return Err(err(
                    "delimiter option can only be used with scalar nodes".into()
                ));
            };
            let parts: Vec<&str> = text.split(&src_opts.delimiter).collect();
            if src_opts.index < 0 || src_opts.index as usize >= parts.len() {
                return Err(err(format!(
                    "options.index {} is out of bounds for value {text}",
                    src_opts.index
                )));
            }
            value = match value {
                Value::String(_) => Value::String(parts[src_opts.index as usize].to_string()),
                _ => resolve(parts[src_opts.index as usize]),
            };
        }
        for t in &rep.targets {
            for r in list.iter_mut() {
                if !matches_selectors(r, &t.select).map_err(&err)? {
                    continue;
                }
                let mut rejected = false;
                for rj in &t.reject {
                    if (!rj.labels.is_empty() || !rj.annotations.is_empty())
                        && matches_selectors(r, rj).map_err(&err)?
                    {
                        rejected = true;
                    }
                }
                let all = ids(r);
                if rejected
                    || t.reject
                        .iter()
                        .any(|rj| !rj.id.is_empty() && all.iter().any(|id| rj.id.selects(id)))
                {
                    continue;
                }
                if !all.iter().any(|id| t.select.id.selects(id)) {
                    continue;
                }
                let create = t.options.create.then(|| kind_of(&value));
                for fp in &t.field_paths {
                    let path = split_path(fp);
                    let mut out = Vec::new();
                    let mut created = Vec::new();
                    matches(
                        &mut r.value,
                        &path,
                        create,
                        String::new(),
                        &mut created,
                        &mut out,
                    )
                    .map_err(&err)?;
                    if out.is_empty() {
                        return Err(err(format!(
                            "unable to find {}field {fp:?} in replacement target {}",
                            if create.is_some() { "or create " } else { "" },
                            r.cur_id()
                        )));
                    }
                    for p in out {
                        let was_created = created.contains(&p);
                        let target = r.value.pointer_mut(&p).expect("matched path");
                        set_value(target, &value, &t.options, was_created).map_err(&err)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn is_nil_or_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn describe(s: &IdSel) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("group", &s.gvk.group),
        ("version", &s.gvk.version),
        ("kind", &s.gvk.kind),
        ("name", &s.name),
        ("namespace", &s.namespace),
    ] {
        if !v.is_empty() {
            parts.push(format!("{k}={v}"));
        }
    }
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_splitting() {
        assert_eq!(
            split_path("spec.template.spec.containers.[name=a.b].image"),
            vec![
                "spec",
                "template",
                "spec",
                "containers",
                "[name=a.b]",
                "image"
            ]
        );
        assert_eq!(
            split_path("metadata.annotations.[a.io/b]"),
            vec!["metadata", "annotations", "a.io/b"]
        );
        assert_eq!(split_path("a.[b]"), vec!["a", "[b]"]);
        assert_eq!(split_path("a\\.b.c"), vec!["a.b", "c"]);
    }
}
