//! One object in a build (kustomize's `Resource`): its value, where it came from, and the
//! bookkeeping kustomize keeps in build annotations (previous ids, prefixes, suffixes, generator
//! behavior and hash flag). Plus the list operations of kustomize's `ResMap`.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::error::KustomizeError;
use super::resid::{Gvk, ResId};
use super::util::{get, get_str, object_at};
use crate::source::{Location, SpanMap};

/// Generator `behavior`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Behavior {
    #[default]
    Unspecified,
    Create,
    Merge,
    Replace,
}

#[derive(Clone, Debug)]
pub struct Res {
    pub value: Value,
    pub spans: Arc<SpanMap>,
    pub location: Location,
    /// Previous (name, effective namespace, kind), oldest first.
    pub prev: Vec<(String, String, String)>,
    pub prefixes: Vec<String>,
    pub suffixes: Vec<String>,
    pub behavior: Behavior,
    pub needs_hash: bool,
    /// Pointers of scalars quoted in the source (see `styles`).
    pub quoted: Arc<HashSet<String>>,
}

impl Res {
    pub fn new(value: Value, spans: Arc<SpanMap>, location: Location) -> Res {
        Res {
            value,
            spans,
            location,
            prev: Vec::new(),
            prefixes: Vec::new(),
            suffixes: Vec::new(),
            behavior: Behavior::Unspecified,
            needs_hash: false,
            quoted: Arc::default(),
        }
    }

    pub fn api_version(&self) -> String {
        get_str(&self.value, &["apiVersion"]).unwrap_or_default()
    }

    pub fn kind(&self) -> String {
        get_str(&self.value, &["kind"]).unwrap_or_default()
    }

    pub fn name(&self) -> String {
        get_str(&self.value, &["metadata", "name"]).unwrap_or_default()
    }

    pub fn namespace(&self) -> String {
        get_str(&self.value, &["metadata", "namespace"]).unwrap_or_default()
    }

    pub fn gvk(&self) -> Gvk {
        Gvk::new(&self.api_version(), &self.kind())
    }

    pub fn cur_id(&self) -> ResId {
        ResId {
            gvk: self.gvk(),
            name: self.name(),
            namespace: self.namespace(),
        }
    }

    /// Every id the object had before its current one, oldest first.
    pub fn prev_ids(&self) -> Vec<ResId> {
        let gvk = self.gvk();
        self.prev
            .iter()
            .map(|(name, ns, kind)| ResId {
                gvk: Gvk {
                    group: gvk.group.clone(),
                    version: gvk.version.clone(),
                    kind: kind.clone(),
                },
                name: name.clone(),
                namespace: ns.clone(),
            })
            .collect()
    }

    /// The id the object was read or generated with.
    pub fn org_id(&self) -> ResId {
        self.prev_ids()
            .into_iter()
            .next()
            .unwrap_or_else(|| self.cur_id())
    }

    /// Records the current id as a previous one (before a rename).
    pub fn store_previous_id(&mut self) {
        let id = self.cur_id();
        self.prev.push((
            id.name.clone(),
            id.effective_namespace(),
            id.gvk.kind.clone(),
        ));
    }

    pub fn set_name(&mut self, name: &str) {
        object_at(&mut self.value, &["metadata"])
            .insert("name".into(), Value::String(name.to_string()));
    }

    pub fn set_kind(&mut self, kind: &str) {
        if let Value::Object(m) = &mut self.value {
            m.insert("kind".into(), Value::String(kind.to_string()));
        }
    }

    pub fn set_namespace(&mut self, ns: &str) {
        if ns.is_empty() {
            if let Some(Value::Object(m)) = self.value.get_mut("metadata") {
                m.remove("namespace");
            }
        } else {
            object_at(&mut self.value, &["metadata"])
                .insert("namespace".into(), Value::String(ns.to_string()));
        }
    }

    pub fn labels(&self) -> Vec<(String, String)> {
        super::util::string_map(&self.value, &["metadata", "labels"])
    }

    pub fn annotations(&self) -> Vec<(String, String)> {
        super::util::string_map(&self.value, &["metadata", "annotations"])
    }

    /// An object kustomize treats as deleted (nothing left).
    pub fn is_empty(&self) -> bool {
        match &self.value {
            Value::Null => true,
            Value::Object(m) => m.is_empty(),
            _ => false,
        }
    }

    pub fn field(&self, path: &[&str]) -> Option<&Value> {
        get(&self.value, path)
    }

    /// A located error about this object.
    pub fn error(&self, message: impl Into<String>) -> KustomizeError {
        KustomizeError::invalid(self.location.clone(), message)
    }
}

/// Index of the one object whose current or previous id equals `id`.
pub fn get_by_id(list: &[Res], id: &ResId) -> Result<usize, String> {
    let matches: Vec<usize> = list
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.prev_ids()
                .iter()
                .chain(std::iter::once(&r.cur_id()))
                .any(|x| id.equals(x))
        })
        .map(|(i, _)| i)
        .collect();
    match matches.len() {
        1 => Ok(matches[0]),
        0 => Err(format!(
            "no matches for Id {id}; failed to find unique target for patch {id}"
        )),
        _ => Err(format!(
            "multiple matches for Id {id}; failed to find unique target for patch {id}"
        )),
    }
}

/// Appends `res`, refusing a second object with the same current id.
pub fn append(list: &mut Vec<Res>, res: Res) -> Result<(), KustomizeError> {
    let id = res.cur_id();
    if list.iter().any(|r| r.cur_id().equals(&id)) {
        return Err(res.error(format!(
            "may not add resource with an already registered id: {id}"
        )));
    }
    list.push(res);
    Ok(())
}

/// The key under which `ResId::equals` ids are equal.
pub fn id_key(id: &ResId) -> (Gvk, String, String) {
    (id.gvk.clone(), id.name.clone(), id.effective_namespace())
}

pub fn append_all(list: &mut Vec<Res>, other: Vec<Res>) -> Result<(), KustomizeError> {
    let mut seen: std::collections::HashSet<(Gvk, String, String)> =
        list.iter().map(|r| id_key(&r.cur_id())).collect();
    for r in other {
        let id = r.cur_id();
        if !seen.insert(id_key(&id)) {
            return Err(r.error(format!(
                "may not add resource with an already registered id: {id}"
            )));
        }
        list.push(r);
    }
    Ok(())
}
