//! kustomize's builtin transformers: patches (strategic merge and JSON 6902), namespace, name
//! prefix/suffix, labels, annotations, images and replicas.

use regex::Regex;
use serde_json::{Map, Value};

use super::error::KustomizeError;
use super::fieldspec::{self, Create, FieldSpec};
use super::kustfile::{ImageArgs, ReplicaArgs};
use super::merge;
use super::res::{self, Res};
use super::resid::{Gvk, ResId};
use super::selector::{select, Selector};
use super::util::scalar_text;
use crate::source::Location;

type R<T> = Result<T, KustomizeError>;

/// A loaded patch.
#[derive(Clone, Debug)]
pub enum PatchBody {
    /// A strategic merge patch (a partial object).
    Strategic {
        value: Value,
        allow_name_change: bool,
        allow_kind_change: bool,
    },
    /// JSON 6902 operations.
    Json(json_patch::Patch),
}

#[derive(Clone, Debug)]
pub struct Patch {
    pub body: PatchBody,
    pub target: Option<Selector>,
    /// Where the patch is (its file, or the kustomization entry).
    pub location: Location,
}

fn patch_id(v: &Value) -> ResId {
    let s = |p: &[&str]| super::util::get_str(v, p).unwrap_or_default();
    ResId {
        gvk: Gvk::new(&s(&["apiVersion"]), &s(&["kind"])),
        name: s(&["metadata", "name"]),
        namespace: s(&["metadata", "namespace"]),
    }
}

/// kustomize `Resource.ApplySmPatch`: merges, then restores what the patch may not change.
fn apply_sm(
    r: &mut Res,
    patch: &Value,
    allow_name: bool,
    allow_kind: bool,
    at: &Location,
) -> R<()> {
    let (n, ns, k) = (r.name(), r.namespace(), r.kind());
    if allow_name || allow_kind {
        r.store_previous_id();
    }
    match merge::merge(&r.value, patch, &r.quoted) {
        Ok(Some(v)) => r.value = v,
        Ok(None) => {
            r.value = Value::Null;
            return Ok(());
        }
        Err(e) => {
            return Err(KustomizeError::invalid(
                at.clone(),
                format!("applying patch to {}: {e}", r.cur_id()),
            ))
        }
    }
    if !allow_kind {
        r.set_kind(&k);
    }
    if !allow_name {
        r.set_name(&n);
    }
    r.set_namespace(&ns);
    Ok(())
}

/// kustomize `ResMap.ApplySmPatch`: patches the selected objects (the patch takes each target's
/// apiVersion), drops deleted ones and refuses id collisions.
fn apply_sm_to_set(
    list: &mut Vec<Res>,
    selected: &[ResId],
    patch: &Value,
    allow_name: bool,
    allow_kind: bool,
    at: &Location,
) -> R<()> {
    let patch_kind = super::util::get_str(patch, &["kind"]).unwrap_or_default();
    for r in list.iter_mut() {
        if !selected.contains(&r.cur_id()) {
            continue;
        }
        let mut copy = patch.clone();
        copy_merge_metadata(&mut copy);
        if let Value::Object(m) = &mut copy {
            m.insert("apiVersion".into(), Value::String(r.api_version()));
            m.insert("kind".into(), Value::String(patch_kind.clone()));
        }
        apply_sm(r, &copy, allow_name, allow_kind, at)?;
    }
    let all = std::mem::take(list);
    res::append_all(list, all.into_iter().filter(|r| !r.is_empty()).collect())
}

/// kustomize copies a patch's metadata onto the patch (`CopyMergeMetaDataFieldsFrom`), which
/// turns its labels and annotations into string maps (`null` becomes "null") and drops empty ones.
fn copy_merge_metadata(patch: &mut Value) {
    let Some(Value::Object(meta)) = patch.get_mut("metadata") else {
        return;
    };
    for field in ["labels", "annotations"] {
        let Some(v) = meta.get_mut(field) else {
            continue;
        };
        let keep = match v {
            Value::Object(m) if !m.is_empty() => {
                for x in m.values_mut() {
                    let t = match &*x {
                        Value::Null => "null".to_string(),
                        other => scalar_text(other).unwrap_or_default(),
                    };
                    *x = Value::String(t);
                }
                true
            }
            _ => false,
        };
        if !keep {
            meta.remove(field);
        }
    }
}

fn target_error(at: &Location, id: &ResId, msg: String) -> KustomizeError {
    KustomizeError::invalid(
        at.clone(),
        format!("no resource matches strategic merge patch \"{id}\": {msg}"),
    )
}

/// `patchesStrategicMerge`: each patch applies to the object with its id.
pub fn patches_strategic_merge(list: &mut Vec<Res>, patches: &[Patch]) -> R<()> {
    for p in patches {
        let PatchBody::Strategic { value, .. } = &p.body else {
            continue;
        };
        let id = patch_id(value);
        let idx = res::get_by_id(list, &id).map_err(|m| target_error(&p.location, &id, m))?;
        let cur = list[idx].cur_id();
        apply_sm_to_set(list, &[cur], value, false, false, &p.location)?;
    }
    Ok(())
}

/// One `patches` entry (kustomize `PatchTransformer`).
pub fn patch(list: &mut Vec<Res>, p: &Patch) -> R<()> {
    match (&p.body, &p.target) {
        (
            PatchBody::Strategic {
                value,
                allow_name_change,
                allow_kind_change,
            },
            None,
        ) => {
            let id = patch_id(value);
            let idx = res::get_by_id(list, &id).map_err(|m| target_error(&p.location, &id, m))?;
            apply_sm(
                &mut list[idx],
                value,
                *allow_name_change,
                *allow_kind_change,
                &p.location,
            )?;
            list.retain(|r| !r.is_empty());
            Ok(())
        }
        (
            PatchBody::Strategic {
                value,
                allow_name_change,
                allow_kind_change,
            },
            Some(t),
        ) => {
            let idx =
                select(list, t).map_err(|e| KustomizeError::invalid(p.location.clone(), e))?;
            let ids: Vec<ResId> = idx.iter().map(|i| list[*i].cur_id()).collect();
            apply_sm_to_set(
                list,
                &ids,
                value,
                *allow_name_change,
                *allow_kind_change,
                &p.location,
            )
        }
        (PatchBody::Json(_), None) => Err(KustomizeError::invalid(
            p.location.clone(),
            "a JSON 6902 patch needs a target",
        )),
        (PatchBody::Json(ops), Some(t)) => json6902(list, ops, t, true, &p.location),
    }
}

/// Applies JSON 6902 operations to the selected objects.
pub fn json6902(
    list: &mut [Res],
    ops: &json_patch::Patch,
    target: &Selector,
    store_previous: bool,
    at: &Location,
) -> R<()> {
    let idx = select(list, target).map_err(|e| KustomizeError::invalid(at.clone(), e))?;
    for i in idx {
        let r = &mut list[i];
        if store_previous {
            r.store_previous_id();
        }
        // kustomize applies JSON patches to a JSON copy: source quoting is lost.
        r.quoted = Default::default();
        let id = r.cur_id();
        json_patch::patch(&mut r.value, &ops.0).map_err(|e| {
            KustomizeError::invalid(at.clone(), format!("applying JSON patch to {id}: {e}"))
        })?;
    }
    Ok(())
}

/// kustomize `NamespaceTransformer`.
pub fn namespace(list: &mut [Res], ns: &str, specs: &[FieldSpec], at: &Location) -> R<()> {
    if ns.is_empty() {
        return Ok(());
    }
    for r in list.iter_mut() {
        if r.is_empty() {
            continue;
        }
        r.store_previous_id();
        let api = r.api_version();
        let gvk = r.gvk();
        if !gvk.is_cluster_scoped() {
            r.set_namespace(ns);
        }
        let is_rb = matches!(gvk.kind.as_str(), "RoleBinding" | "ClusterRoleBinding");
        if is_rb {
            if let Some(Value::Array(subjects)) =
                r.value.as_object_mut().and_then(|m| m.get_mut("subjects"))
            {
                for s in subjects.iter_mut() {
                    if let Value::Object(m) = s {
                        if m.get("name").and_then(scalar_text).as_deref() == Some("default") {
                            m.insert("namespace".into(), Value::String(ns.to_string()));
                        }
                    }
                }
            }
        }
        for f in specs {
            if f.path == "metadata/namespace"
                || (api != "v1" && f.path == "metadata/name")
                || (is_rb && f.path.starts_with("subjects"))
            {
                continue;
            }
            let loc = r.location.clone();
            fieldspec::apply(&mut r.value, f, Create::Scalar, &mut |node| {
                *node = Value::String(ns.to_string());
                Ok(())
            })
            .map_err(|e| KustomizeError::invalid(loc, format!("namespace: {e}")))?;
        }
    }
    let mut seen = std::collections::HashSet::new();
    for r in list.iter() {
        let id = r.cur_id();
        if !r.is_empty() && !seen.insert(res::id_key(&id)) {
            return Err(KustomizeError::invalid(
                at.clone(),
                format!("namespace transformation produces ID conflict: {id}"),
            ));
        }
    }
    Ok(())
}

fn skip_prefix_suffix(id: &ResId) -> bool {
    matches!(
        id.gvk.kind.as_str(),
        "CustomResourceDefinition" | "Namespace"
    ) || (id.gvk.kind == "APIService" && id.gvk.group == "apiregistration.k8s.io")
}

/// kustomize `PrefixTransformer` / `SuffixTransformer`.
pub fn prefix_suffix(
    list: &mut [Res],
    affix: &str,
    prefix: bool,
    specs: &[FieldSpec],
    at: &Location,
) -> R<()> {
    if affix.is_empty() {
        return Ok(());
    }
    for r in list.iter_mut() {
        let org = r.org_id();
        if r.is_empty() || skip_prefix_suffix(&org) {
            continue;
        }
        for f in specs {
            if !org.gvk.is_selected(&f.gvk) {
                continue;
            }
            if f.path == "metadata/name" {
                if prefix {
                    r.prefixes.push(affix.to_string());
                } else {
                    r.suffixes.push(affix.to_string());
                }
                r.store_previous_id();
            }
            fieldspec::apply(&mut r.value, f, Create::Scalar, &mut |n| {
                let t = scalar_text(n).unwrap_or_default();
                *n = Value::String(if prefix {
                    format!("{affix}{t}")
                } else {
                    format!("{t}{affix}")
                });
                Ok(())
            })
            .map_err(|e| {
                let what = if prefix { "namePrefix" } else { "nameSuffix" };
                KustomizeError::invalid(at.clone(), format!("{what}: {e}"))
            })?;
        }
    }
    Ok(())
}

/// Sets string entries in the maps the field specs reach (labels, annotations).
pub fn set_map_entries(
    list: &mut [Res],
    pairs: &[(String, String)],
    specs: &[FieldSpec],
    what: &str,
) -> R<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    for r in list.iter_mut() {
        if r.is_empty() {
            continue;
        }
        let loc = r.location.clone();
        for f in specs {
            fieldspec::apply(&mut r.value, f, Create::Map, &mut |node| match node {
                Value::Object(m) => {
                    for (k, v) in pairs {
                        m.insert(k.clone(), Value::String(v.clone()));
                    }
                    Ok(())
                }
                _ => Err(format!("expected a map for {what}")),
            })
            .map_err(|e| KustomizeError::invalid(loc.clone(), format!("{what}: {e}")))?;
        }
    }
    Ok(())
}

/// kustomize `image.IsImageMatched`.
fn image_matches(value: &str, name: &str) -> bool {
    Regex::new(&format!(
        "^{name}(:[a-zA-Z0-9_.{{}}-]*)?(@sha256:[a-zA-Z0-9_.{{}}-]*)?$"
    ))
    .is_ok_and(|re| re.is_match(value))
}

/// kustomize `image.Split`: name, tag, digest.
fn split_image(image: &str) -> (String, String, String) {
    let slash = image.find('/').filter(|i| *i > 0).unwrap_or(0);
    let search = &image[slash..];
    let id = search.find('@');
    let ic = search.find(':');
    match (ic, id) {
        (None, None) => (image.to_string(), String::new(), String::new()),
        (ic, Some(d)) if ic.is_none_or(|c| d < c) => {
            let d = d + slash;
            (
                image[..d].to_string(),
                String::new(),
                image[d + 1..].to_string(),
            )
        }
        (Some(c), Some(d)) => {
            let (c, d) = (c + slash, d + slash);
            (
                image[..c].to_string(),
                image[c + 1..d].to_string(),
                image[d + 1..].to_string(),
            )
        }
        (Some(c), None) => {
            let c = c + slash;
            (
                image[..c].to_string(),
                image[c + 1..].to_string(),
                String::new(),
            )
        }
        (None, Some(_)) => unreachable!("handled above"),
    }
}

fn update_image(node: &mut Value, img: &ImageArgs) -> Result<(), String> {
    let Value::String(value) = node else {
        return match node {
            Value::Number(_) | Value::Bool(_) | Value::Null => Ok(()),
            _ => Err("an image must be a string".into()),
        };
    };
    if !image_matches(value, &img.name) {
        return Ok(());
    }
    let (mut name, mut tag, mut digest) = split_image(value);
    if !img.new_name.is_empty() {
        name = img.new_name.clone();
    }
    if !img.new_tag.is_empty() && !img.digest.is_empty() {
        tag = img.new_tag.clone();
        digest = img.digest.clone();
    } else if !img.new_tag.is_empty() {
        tag = img.new_tag.clone();
        digest.clear();
    } else if !img.digest.is_empty() {
        tag.clear();
        digest = img.digest.clone();
    }
    if !tag.is_empty() {
        name = format!("{name}:{tag}");
    }
    if !digest.is_empty() {
        name = format!("{name}@{digest}");
    }
    *node = Value::String(name);
    Ok(())
}

/// kustomize's legacy image filter: `image` of every element of any `containers` or
/// `initContainers` list, anywhere in the object.
fn legacy_images(v: &mut Value, img: &ImageArgs) -> Result<(), String> {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                legacy_images(x, img)?;
                if k == "containers" || k == "initContainers" {
                    if let Value::Array(items) = x {
                        for it in items.iter_mut() {
                            match it {
                                Value::Object(c) => {
                                    if let Some(image) = c.get_mut("image") {
                                        update_image(image, img)?;
                                    }
                                }
                                Value::Null => {}
                                _ => return Err(format!("{k} must hold objects")),
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|x| legacy_images(x, img)),
        _ => Ok(()),
    }
}

/// kustomize `ImageTagTransformer`.
pub fn images(list: &mut [Res], img: &ImageArgs, specs: &[FieldSpec], at: &Location) -> R<()> {
    for r in list.iter_mut() {
        if r.is_empty() {
            continue;
        }
        let err = |e: String| KustomizeError::invalid(at.clone(), format!("images: {e}"));
        if r.kind() != "CustomResourceDefinition" {
            legacy_images(&mut r.value, img).map_err(err)?;
        }
        for f in specs {
            fieldspec::apply(&mut r.value, f, Create::Nothing, &mut |n| {
                update_image(n, img)
            })
            .map_err(err)?;
        }
    }
    Ok(())
}

/// kustomize `ReplicaCountTransformer`.
pub fn replicas(list: &mut [Res], rep: &ReplicaArgs, specs: &[FieldSpec], at: &Location) -> R<()> {
    let mut found = false;
    for r in list.iter_mut() {
        let named = r.prev_ids().iter().any(|id| id.name == rep.name) || r.name() == rep.name;
        if !named {
            continue;
        }
        found = true;
        for f in specs {
            fieldspec::apply(&mut r.value, f, Create::Scalar, &mut |n| {
                *n = Value::Number(rep.count.into());
                Ok(())
            })
            .map_err(|e| KustomizeError::invalid(at.clone(), format!("replicas: {e}")))?;
        }
    }
    if !found {
        return Err(KustomizeError::invalid(
            at.clone(),
            format!(
                "resource with name {} does not match a config with the following GVK [Deployment ReplicationController ReplicaSet StatefulSet]",
                rep.name
            ),
        ));
    }
    Ok(())
}

/// Output form of `metadata.annotations`, as kustomize rewrites them when it removes its build
/// annotations: string values, and no empty or null map.
pub fn tidy(v: &mut Value) {
    if let Some(Value::Object(meta)) = v.get_mut("metadata") {
        let empty = match meta.get_mut("annotations") {
            Some(Value::Null) => true,
            Some(Value::Object(a)) => {
                for x in a.values_mut() {
                    if !x.is_string() {
                        *x = Value::String(scalar_text(x).unwrap_or_default());
                    }
                }
                a.is_empty()
            }
            _ => false,
        };
        if empty {
            meta.remove("annotations");
        }
    }
}

/// `Map` from pairs, for callers building objects.
pub fn to_map(pairs: &[(String, String)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_split_and_match() {
        assert_eq!(
            split_image("nginx:1.2"),
            ("nginx".into(), "1.2".into(), String::new())
        );
        assert_eq!(
            split_image("localhost:5000/app@sha256:abc"),
            (
                "localhost:5000/app".into(),
                String::new(),
                "sha256:abc".into()
            )
        );
        assert_eq!(
            split_image("r.io/a/b:t@sha256:d"),
            ("r.io/a/b".into(), "t".into(), "sha256:d".into())
        );
        assert!(image_matches("nginx:1.2", "nginx"));
        assert!(image_matches("nginx@sha256:abc", "nginx"));
        assert!(!image_matches("nginx2:1.2", "nginx"));
        assert!(image_matches("r.io:5000/a:1.0@sha256:abc", "r.io:5000/a"));
    }
}
