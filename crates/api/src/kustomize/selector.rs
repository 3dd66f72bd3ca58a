//! Patch and replacement targets (kustomize `Selector`): regex matching on group, version, kind,
//! name and namespace (anchored, as kustomize does) plus Kubernetes label/annotation selectors.

use regex::Regex;

use super::res::Res;

#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub label_selector: String,
    pub annotation_selector: String,
}

pub struct CompiledSelector {
    group: Option<Regex>,
    version: Option<Regex>,
    kind: Option<Regex>,
    name: Option<Regex>,
    namespace: Option<Regex>,
    labels: Vec<Requirement>,
    annotations: Vec<Requirement>,
}

fn anchored(p: &str) -> Result<Option<Regex>, String> {
    if p.is_empty() {
        return Ok(None);
    }
    Regex::new(&format!("^(?:{p})$"))
        .map(Some)
        .map_err(|e| format!("invalid regular expression {p:?}: {e}"))
}

fn matches(re: &Option<Regex>, s: &str) -> bool {
    re.as_ref().is_none_or(|r| r.is_match(s))
}

impl Selector {
    pub fn compile(&self) -> Result<CompiledSelector, String> {
        Ok(CompiledSelector {
            group: anchored(&self.group)?,
            version: anchored(&self.version)?,
            kind: anchored(&self.kind)?,
            name: anchored(&self.name)?,
            namespace: anchored(&self.namespace)?,
            labels: parse_label_selector(&self.label_selector)?,
            annotations: parse_label_selector(&self.annotation_selector)?,
        })
    }
}

impl CompiledSelector {
    /// kustomize `ResMap.Select`: original or current namespace and name, current gvk, labels,
    /// annotations.
    pub fn matches(&self, r: &Res) -> bool {
        let cur = r.cur_id();
        let org = r.org_id();
        if !matches(&self.namespace, &org.effective_namespace())
            && !matches(&self.namespace, &cur.effective_namespace())
        {
            return false;
        }
        if !matches(&self.name, &org.name) && !matches(&self.name, &cur.name) {
            return false;
        }
        let gvk = r.gvk();
        if !matches(&self.group, &gvk.group)
            || !matches(&self.version, &gvk.version)
            || !matches(&self.kind, &gvk.kind)
        {
            return false;
        }
        let labels = r.labels();
        let annotations = r.annotations();
        self.labels.iter().all(|q| q.matches(&labels))
            && self.annotations.iter().all(|q| q.matches(&annotations))
    }
}

/// Indices of the objects `sel` selects.
pub fn select(list: &[Res], sel: &Selector) -> Result<Vec<usize>, String> {
    let c = sel.compile()?;
    Ok(list
        .iter()
        .enumerate()
        .filter(|(_, r)| c.matches(r))
        .map(|(i, _)| i)
        .collect())
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Exists,
    NotExists,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, labels: &[(String, String)]) -> bool {
        let v = labels.iter().find(|(k, _)| *k == self.key).map(|(_, v)| v);
        match &self.op {
            Op::Exists => v.is_some(),
            Op::NotExists => v.is_none(),
            Op::Equals(x) => v == Some(x),
            Op::NotEquals(x) => v != Some(x),
            Op::In(xs) => v.is_some_and(|v| xs.contains(v)),
            Op::NotIn(xs) => v.is_none_or(|v| !xs.contains(v)),
        }
    }
}

/// Parses a Kubernetes label selector (`a=b,c!=d,e in (f,g),!h,i`).
fn parse_label_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    let bad = |p: &str| format!("invalid label selector {s:?}: cannot parse {p:?}");
    let mut out = Vec::new();
    for part in parts {
        let p = part.trim();
        if p.is_empty() {
            return Err(bad(p));
        }
        if let Some(k) = p.strip_prefix('!') {
            out.push(Requirement {
                key: k.trim().to_string(),
                op: Op::NotExists,
            });
            continue;
        }
        if let Some((k, v)) = p.split_once("!=") {
            out.push(Requirement {
                key: k.trim().to_string(),
                op: Op::NotEquals(v.trim().to_string()),
            });
            continue;
        }
        if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            out.push(Requirement {
                key: k.trim().to_string(),
                op: Op::Equals(v.trim().to_string()),
            });
            continue;
        }
        let set_op = |rest: &str| -> Result<Vec<String>, String> {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| bad(p))?;
            Ok(inner
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect())
        };
        let words: Vec<&str> = p.splitn(2, char::is_whitespace).collect();
        if words.len() == 2 {
            let key = words[0].to_string();
            let rest = words[1].trim_start();
            if let Some(r) = rest.strip_prefix("notin") {
                out.push(Requirement {
                    key,
                    op: Op::NotIn(set_op(r)?),
                });
                continue;
            }
            if let Some(r) = rest.strip_prefix("in") {
                out.push(Requirement {
                    key,
                    op: Op::In(set_op(r)?),
                });
                continue;
            }
            return Err(bad(p));
        }
        out.push(Requirement {
            key: p.to_string(),
            op: Op::Exists,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let r = parse_label_selector("app=web, tier in (a, b),!x,y,z!=1").unwrap();
        assert_eq!(r.len(), 5);
        let labels = l(&[("app", "web"), ("tier", "b"), ("y", ""), ("z", "2")]);
        assert!(r.iter().all(|q| q.matches(&labels)));
        let labels = l(&[("app", "web"), ("tier", "c"), ("y", "")]);
        assert!(!r.iter().all(|q| q.matches(&labels)));
        assert!(parse_label_selector("a notin (b)").unwrap()[0].matches(&l(&[])));
    }
}
