//! Name reference fix-ups (kustomize `nameReference`): once objects are renamed (prefix, suffix,
//! hash, namespace), fields that refer to them by name (volumes, envFrom, roleRef, subjects,
//! serviceName, ...) follow.

use std::collections::HashMap;

use serde_json::Value;

use super::error::KustomizeError;
use super::fieldspec::{self, FieldSpec, NameBackRef};
use super::res::Res;
use super::resid::{Gvk, ResId};
use super::util::scalar_text;

/// What the filter needs to know about a possible referral target.
struct Candidate {
    cur: ResId,
    cur_cluster: bool,
    cur_ns: String,
    org_cluster: bool,
    org_ns: String,
    prev: Vec<ResId>,
    name: String,
    namespace: String,
    kind: String,
    prefixes: Vec<String>,
    suffixes: Vec<String>,
}

fn candidate(r: &Res) -> Candidate {
    let cur = r.cur_id();
    let org = r.org_id();
    Candidate {
        cur_cluster: cur.is_cluster_scoped(),
        cur_ns: cur.effective_namespace(),
        org_cluster: org.is_cluster_scoped(),
        org_ns: org.effective_namespace(),
        cur,
        prev: r.prev_ids(),
        name: r.name(),
        namespace: r.namespace(),
        kind: r.kind(),
        prefixes: r.prefixes.clone(),
        suffixes: r.suffixes.clone(),
    }
}

/// kustomize `SameEndingSubSlice`.
fn same_ending(a: &[String], b: &[String]) -> bool {
    let (short, long) = if a.len() > b.len() { (b, a) } else { (a, b) };
    let diff = long.len() - short.len();
    if short.is_empty() {
        return diff == 0;
    }
    (0..short.len()).all(|i| long[i + diff] == short[i])
}

/// The referrer's side of one name reference field.
struct Referrer<'a> {
    cur_cluster: bool,
    cur_ns: String,
    /// Namespaces of ServiceAccount subjects (RoleBindings may refer across namespaces).
    rb_ns: Vec<String>,
    roleref_gvk: Option<Gvk>,
    prefixes: &'a [String],
    suffixes: &'a [String],
    path: &'a str,
    target: &'a Gvk,
    cands: &'a [Candidate],
    /// Candidates by each of their previous names.
    by_name: &'a HashMap<String, Vec<usize>>,
}

impl<'a> Referrer<'a> {
    /// kustomize `SubsetThatCouldBeReferencedByResource`.
    fn in_subset(&self, c: &Candidate) -> bool {
        self.cur_cluster
            || c.cur_cluster
            || c.cur_ns == self.cur_ns
            || self.rb_ns.contains(&c.namespace)
    }

    /// Referable candidates that once had `name`, in build order.
    fn named(&self, name: &str) -> Vec<&'a Candidate> {
        self.by_name
            .get(name)
            .map(|ix| {
                ix.iter()
                    .map(|i| &self.cands[*i])
                    .filter(|c| self.in_subset(c))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn select<'c>(
        &self,
        old_name: &str,
        candidates: Vec<&'c Candidate>,
        identical: fn(&[&Candidate]) -> bool,
    ) -> Result<Option<&'c Candidate>, String> {
        let mut c: Vec<&Candidate> = candidates
            .into_iter()
            .filter(|r| r.prev.iter().any(|id| id.name == old_name))
            .filter(|r| r.prev.iter().any(|id| id.gvk.is_selected(self.target)))
            .collect();
        if self.path.ends_with("roleRef/name") {
            if let Some(g) = &self.roleref_gvk {
                c.retain(|r| r.prev.iter().any(|id| id.gvk.is_selected(g)));
            }
        }
        if !self.cur_cluster {
            c.retain(|r| r.cur_cluster || r.kind == "ServiceAccount" || self.cur_ns == r.cur_ns);
        }
        if c.len() == 1 {
            return Ok(Some(c[0]));
        }
        c.retain(|r| {
            same_ending(&r.prefixes, self.prefixes) && same_ending(&r.suffixes, self.suffixes)
        });
        match c.len() {
            0 => Ok(None),
            1 => Ok(Some(c[0])),
            _ if identical(&c) => Ok(Some(c[0])),
            _ => Err(format!(
                "found multiple possible referrals: {}",
                c.iter()
                    .map(|x| x.cur.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn set_scalar(&self, node: &mut Value) -> Result<(), String> {
        let Some(old) = scalar_text(node) else {
            return Ok(());
        };
        let referral = self.select(&old, self.named(&old), |c| {
            c.iter().all(|x| x.name == c[0].name)
        })?;
        if let Some(r) = referral {
            if r.name != old {
                *node = Value::String(r.name.clone());
            }
        }
        Ok(())
    }

    fn set_mapping(&self, node: &mut Value) -> Result<(), String> {
        let Value::Object(m) = node else {
            return Ok(());
        };
        let Some(name) = m.get("name") else {
            return Err("path config error; no 'name' field in node".into());
        };
        let old = scalar_text(name).unwrap_or_default();
        let named = self.named(&old);
        let filtered: Vec<&Candidate> = match m.get("namespace") {
            None => named,
            Some(ns) => {
                let ns = scalar_text(ns).unwrap_or_default();
                // Candidates grouped by original namespace when that group exists, else by
                // current namespace.
                let by_org = self
                    .cands
                    .iter()
                    .any(|c| self.in_subset(c) && !c.org_cluster && c.org_ns == ns);
                named
                    .into_iter()
                    .filter(|c| {
                        if by_org {
                            !c.org_cluster && c.org_ns == ns
                        } else {
                            !c.cur_cluster && c.cur_ns == ns
                        }
                    })
                    .collect()
            }
        };
        let referral = self.select(&old, filtered, |c| {
            c.iter()
                .all(|x| x.name == c[0].name && x.namespace == c[0].namespace)
        })?;
        let Some(r) = referral else { return Ok(()) };
        if r.name == old && r.namespace.is_empty() {
            return Ok(());
        }
        m.insert("name".into(), Value::String(r.name.clone()));
        if !r.namespace.is_empty() {
            m.insert("namespace".into(), Value::String(r.namespace.clone()));
        }
        Ok(())
    }

    fn set(&self, node: &mut Value) -> Result<(), String> {
        match node {
            Value::Null => Ok(()),
            Value::Object(_) => self.set_mapping(node),
            Value::Array(items) => {
                for item in items.iter_mut() {
                    match item {
                        Value::Object(_) => self.set_mapping(item)?,
                        Value::Array(_) | Value::Null => {}
                        _ => self.set_scalar(item)?,
                    }
                }
                Ok(())
            }
            _ => self.set_scalar(node),
        }
    }
}

/// `roleRef` group and kind of a (Cluster)RoleBinding.
fn roleref_gvk(v: &Value) -> Option<Gvk> {
    let rr = v.get("roleRef")?;
    Some(Gvk {
        group: scalar_text(rr.get("apiGroup")?)?,
        version: String::new(),
        kind: scalar_text(rr.get("kind")?)?,
    })
}

/// Namespaces of ServiceAccount subjects of a RoleBinding.
fn rolebinding_namespaces(r: &Res) -> Vec<String> {
    if r.kind() != "RoleBinding" {
        return Vec::new();
    }
    let Some(Value::Array(subjects)) = r.field(&["subjects"]) else {
        return Vec::new();
    };
    subjects
        .iter()
        .filter(|s| s.get("kind").and_then(Value::as_str) == Some("ServiceAccount"))
        .filter_map(|s| s.get("namespace").and_then(scalar_text))
        .collect()
}

/// Fixes every name reference in `list` (kustomize `FixBackReferences`).
pub fn fix(list: &mut [Res], backrefs: &[NameBackRef]) -> Result<(), KustomizeError> {
    let cands: Vec<Candidate> = list.iter().map(candidate).collect();
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, c) in cands.iter().enumerate() {
        for id in &c.prev {
            let e = by_name.entry(id.name.clone()).or_default();
            if e.last() != Some(&i) {
                e.push(i);
            }
        }
    }
    for r in list.iter_mut() {
        let org = r.org_id();
        // The name reference fields this object may hold, in configuration order.
        let specs: Vec<(&Gvk, &FieldSpec)> = backrefs
            .iter()
            .flat_map(|b| b.referrers.iter().map(move |f| (&b.target, f)))
            .filter(|(_, f)| org.gvk.is_selected(&f.gvk))
            .collect();
        if specs.is_empty() {
            continue;
        }
        let cur = r.cur_id();
        let rb_ns = rolebinding_namespaces(r);
        let roleref = roleref_gvk(&r.value);
        let prefixes = r.prefixes.clone();
        let suffixes = r.suffixes.clone();
        for (target, f) in specs {
            let referrer = Referrer {
                cur_cluster: cur.is_cluster_scoped(),
                cur_ns: cur.effective_namespace(),
                rb_ns: rb_ns.clone(),
                roleref_gvk: roleref.clone(),
                prefixes: &prefixes,
                suffixes: &suffixes,
                path: &f.path,
                target,
                cands: &cands,
                by_name: &by_name,
            };
            let location = r.location.clone();
            fieldspec::apply_path(&mut r.value, &f.path, &mut |node| referrer.set(node)).map_err(
                |e| {
                    KustomizeError::invalid(
                        location.clone(),
                        format!(
                            "updating name reference in '{}' field of '{}': {e}",
                            f.path, cur
                        ),
                    )
                },
            )?;
        }
    }
    Ok(())
}
