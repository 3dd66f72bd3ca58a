//! The build (kustomize `KustTarget`): accumulate resources, nested kustomizations and
//! components, run generators and transformers in kustomize's order, then hash generated names,
//! fix name references and sort.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use super::config::TConfig;
use super::error::KustomizeError;
use super::fieldspec::FieldSpec;
use super::generators;
use super::kustfile::{self, Entry, Kustomization, PatchArgs, SortOrder};
use super::loader::{looks_remote, Root};
use super::nameref;
use super::replacements;
use super::res::{self, Behavior, Res};
use super::resid::Gvk;
use super::transform::{self, Patch, PatchBody};
use crate::source::{Location, SpanMap};
use crate::yaml::{parse_documents, Document};

type R<T> = Result<T, KustomizeError>;

/// Renders the kustomization in `dir`.
pub fn build(dir: &std::path::Path) -> R<Vec<Document>> {
    let root = Root::new(dir)?;
    let kust = kustfile::load(&root.display, &root.real)?;
    let mut chain = vec![root.real.clone()];
    let (mut list, config) = accumulate_target(&kust, &root, Vec::new(), &mut chain)?;

    // Generated names get their content hash last, over the final content.
    for r in list.iter_mut() {
        if r.needs_hash {
            let h = generators::hash(&r.value);
            r.store_previous_id();
            let name = format!("{}-{h}", r.name());
            r.set_name(&name);
        }
    }
    nameref::fix(&mut list, &config.name_reference)?;
    list.retain(|r| {
        !r.field(&["metadata", "annotations"])
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key("config.kubernetes.io/local-config"))
    });
    sort(&mut list, kust.sort.as_ref().map(|e| &e.value));
    Ok(list
        .into_iter()
        .map(|mut r| {
            transform::tidy(&mut r.value);
            Document {
                value: r.value,
                spans: r.spans,
                location: r.location,
            }
        })
        .collect())
}

/// Resources and transformer configuration accumulated so far (kustomize `ResAccumulator`).
type Acc = (Vec<Res>, TConfig);

fn accumulate_target(
    kust: &Kustomization,
    root: &Root,
    list: Vec<Res>,
    chain: &mut Vec<PathBuf>,
) -> R<Acc> {
    accumulate_target_with(kust, root, (list, TConfig::default()), chain)
}

fn accumulate_target_with(
    kust: &Kustomization,
    root: &Root,
    acc: Acc,
    chain: &mut Vec<PathBuf>,
) -> R<Acc> {
    let (mut list, mut config) = accumulate_resources(kust, root, acc, chain)?;
    let own = load_config(kust, root)?;
    config
        .merge(&own)
        .map_err(|e| KustomizeError::invalid(kust.location.clone(), e))?;
    run_generators(kust, root, &mut list)?;
    let (mut list, config) = accumulate_components(kust, root, (list, config), chain)?;
    run_transformers(kust, root, &mut list, &config)?;
    Ok((list, config))
}

/// kustomize's default configuration plus the kustomization's `configurations` files.
fn load_config(kust: &Kustomization, root: &Root) -> R<TConfig> {
    let mut c = TConfig::defaults();
    for e in &kust.configurations {
        let (display, text) = root.read_text(&e.value, &e.location)?;
        for doc in parse_documents(&display.display().to_string(), &text)? {
            let other = TConfig::parse(&doc.value, &doc.location)?;
            c.merge(&other)
                .map_err(|m| KustomizeError::invalid(doc.location.clone(), m))?;
        }
    }
    Ok(c)
}

/// A sub-directory kustomization, refusing cycles (a directory containing one being built).
fn enter(
    root: &Root,
    entry: &Entry<String>,
    chain: &[PathBuf],
) -> R<Option<(Root, Kustomization)>> {
    let Some((display, real)) = root.dir(&entry.value) else {
        return Ok(None);
    };
    if let Some(visited) = chain.iter().find(|d| d.starts_with(&real)) {
        return Err(KustomizeError::invalid(
            entry.location.clone(),
            format!(
                "cycle detected: candidate root '{}' contains visited root '{}'",
                real.display(),
                visited.display()
            ),
        ));
    }
    let sub = Root { display, real };
    let k = kustfile::load(&sub.display, &sub.real).map_err(|e| match e {
        KustomizeError::Io { path, message } => KustomizeError::invalid(
            entry.location.clone(),
            format!("{}: {message}", path.display()),
        ),
        other => other,
    })?;
    Ok(Some((sub, k)))
}

fn accumulate_resources(
    kust: &Kustomization,
    root: &Root,
    (mut list, mut config): Acc,
    chain: &mut Vec<PathBuf>,
) -> R<Acc> {
    for entry in &kust.resources {
        let rel = entry.value.as_str();
        if root.is_file(rel) {
            let resources = read_resources(root, rel, &entry.location)?;
            res::append_all(&mut list, resources)?;
            continue;
        }
        if let Some((sub_root, sub)) = enter(root, entry, chain)? {
            if sub.is_component {
                return Err(KustomizeError::invalid(
                    entry.location.clone(),
                    format!(
                        "expected kind != 'Component' for path '{}' (components belong in `components`)",
                        sub_root.display.display()
                    ),
                ));
            }
            chain.push(sub_root.real.clone());
            let sub_acc = accumulate_target(&sub, &sub_root, Vec::new(), chain);
            chain.pop();
            let (sub_list, sub_config) = sub_acc?;
            res::append_all(&mut list, sub_list)?;
            config
                .merge(&sub_config)
                .map_err(|e| KustomizeError::invalid(entry.location.clone(), e))?;
            continue;
        }
        if looks_remote(rel) {
            return Err(KustomizeError::unsupported(
                entry.location.clone(),
                format!("remote resource {rel:?} (only local files and directories can be used)"),
            ));
        }
        return Err(KustomizeError::invalid(
            entry.location.clone(),
            format!(
                "resource {}: no such file or directory",
                root.display_of(rel).display()
            ),
        ));
    }
    Ok((list, config))
}

fn accumulate_components(
    kust: &Kustomization,
    root: &Root,
    mut acc: Acc,
    chain: &mut Vec<PathBuf>,
) -> R<Acc> {
    for entry in &kust.components {
        let rel = entry.value.as_str();
        let Some((sub_root, sub)) = enter(root, entry, chain)? else {
            if looks_remote(rel) {
                return Err(KustomizeError::unsupported(
                    entry.location.clone(),
                    format!("remote component {rel:?}"),
                ));
            }
            return Err(KustomizeError::invalid(
                entry.location.clone(),
                format!(
                    "component {}: not a directory holding a kustomization",
                    root.display_of(rel).display()
                ),
            ));
        };
        if !sub.is_component {
            return Err(KustomizeError::invalid(
                entry.location.clone(),
                format!(
                    "expected kind 'Component' for path '{}' but got 'Kustomization'",
                    sub_root.display.display()
                ),
            ));
        }
        chain.push(sub_root.real.clone());
        let r = accumulate_target_with(&sub, &sub_root, acc, chain);
        chain.pop();
        acc = r?;
    }
    Ok(acc)
}

/// Spans of `item`, taken from the spans of the document it was listed in at `prefix`.
pub(crate) fn respan(spans: &SpanMap, prefix: &str, item: &Value) -> SpanMap {
    let mut out = SpanMap::new(spans.file().clone());
    fn walk(v: &Value, p: &str, prefix: &str, from: &SpanMap, out: &mut SpanMap) {
        if let Some(l) = from.locate(&format!("{prefix}{p}")) {
            out.insert(p.to_string(), l.line, l.column);
        }
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    walk(x, &super::util::ptr(p, k), prefix, from, out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{p}/{i}"), prefix, from, out);
                }
            }
            _ => {}
        }
    }
    walk(item, "", prefix, spans, &mut out);
    out
}

/// The objects of a resource file; `List` kinds are expanded (their items after the rest).
fn read_resources(root: &Root, rel: &str, at: &Location) -> R<Vec<Res>> {
    let (display, text) = root.read_text(rel, at)?;
    let docs = parse_documents(&display.display().to_string(), &text)?;
    let mut styles = super::styles::quoted_pointers(&text);
    if styles.len() != docs.len() {
        styles = vec![HashSet::new(); docs.len()];
    }
    let mut queue: std::collections::VecDeque<(Value, Arc<SpanMap>, Location, HashSet<String>)> =
        docs.into_iter()
            .zip(styles)
            .map(|(d, q)| (d.value, d.spans, d.location, q))
            .collect();
    let mut out = Vec::new();
    while let Some((value, spans, location, quoted)) = queue.pop_front() {
        let Value::Object(m) = &value else {
            return Err(KustomizeError::invalid(
                location,
                "missing Resource metadata: a resource must be a YAML mapping",
            ));
        };
        let kind = m
            .get("kind")
            .and_then(super::util::scalar_text)
            .unwrap_or_default();
        if kind.ends_with("List") && m.contains_key("items") {
            match &m["items"] {
                Value::Null => {}
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("/items/{i}");
                        let loc = spans.locate(&p).unwrap_or_else(|| location.clone());
                        let sub = respan(&spans, &p, item);
                        let q = quoted
                            .iter()
                            .filter_map(|x| x.strip_prefix(&p))
                            .filter(|x| x.is_empty() || x.starts_with('/'))
                            .map(str::to_string)
                            .collect();
                        queue.push_back((item.clone(), Arc::new(sub), loc, q));
                    }
                }
                _ => {
                    return Err(KustomizeError::invalid(
                        location,
                        format!("expected array in {kind}/items"),
                    ))
                }
            }
            continue;
        }
        let mut r = Res::new(value, spans, location);
        r.quoted = Arc::new(quoted);
        if r.kind().is_empty() {
            return Err(r.error("missing kind in object"));
        }
        if r.name().is_empty() {
            return Err(r.error("missing metadata.name in object"));
        }
        out.push(r);
    }
    Ok(out)
}

/// kustomize `appendReplaceOrMerge`: a generated object is added, or merged into / replaces the
/// object it names (from a base).
fn absorb(list: &mut Vec<Res>, mut new: Res) -> R<()> {
    let id = new.cur_id();
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
    match matches.as_slice() {
        [] => match new.behavior {
            Behavior::Merge | Behavior::Replace => {
                Err(new.error(format!("id {id} does not exist; cannot merge or replace")))
            }
            _ => res::append(list, new),
        },
        [i] => {
            let old = &list[*i];
            let merge = match new.behavior {
                Behavior::Merge => true,
                Behavior::Replace => false,
                _ => {
                    return Err(
                        new.error(format!("id {id} exists; behavior must be merge or replace"))
                    )
                }
            };
            // Metadata: labels and annotations merged, name, namespace and build bookkeeping
            // (previous names, prefixes, suffixes) from the old object.
            let mut labels = old.labels();
            for (k, v) in new.labels() {
                labels.retain(|(lk, _)| *lk != k);
                labels.push((k, v));
            }
            let mut annotations = old.annotations();
            for (k, v) in new.annotations() {
                annotations.retain(|(lk, _)| *lk != k);
                annotations.push((k, v));
            }
            set_string_map(&mut new.value, "labels", &labels);
            set_string_map(&mut new.value, "annotations", &annotations);
            new.set_name(&old.name());
            new.set_namespace(&old.namespace());
            new.prev = old.prev.clone();
            new.prefixes = old.prefixes.clone();
            new.suffixes = old.suffixes.clone();
            new.behavior = old.behavior;
            // kustomize v5.5 hashes the result only when both generators want a hash.
            new.needs_hash = old.needs_hash && new.needs_hash;
            if merge {
                for field in ["data", "binaryData"] {
                    let mut merged = super::util::string_map(&old.value, &[field]);
                    for (k, v) in super::util::string_map(&new.value, &[field]) {
                        merged.retain(|(mk, _)| *mk != k);
                        merged.push((k, v));
                    }
                    if let Value::Object(m) = &mut new.value {
                        if merged.is_empty() {
                            m.remove(field);
                        } else {
                            m.insert(field.into(), Value::Object(transform::to_map(&merged)));
                        }
                    }
                }
            }
            list[*i] = new;
            Ok(())
        }
        _ => Err(new.error(format!(
            "found multiple objects that could accept merge of {id}"
        ))),
    }
}

fn set_string_map(v: &mut Value, field: &str, pairs: &[(String, String)]) {
    let meta = super::util::object_at(v, &["metadata"]);
    if pairs.is_empty() {
        meta.remove(field);
    } else {
        meta.insert(field.into(), Value::Object(transform::to_map(pairs)));
    }
}

fn run_generators(kust: &Kustomization, root: &Root, list: &mut Vec<Res>) -> R<()> {
    for e in &kust.configmaps {
        let r = generators::config_map(kust, root, e)?;
        absorb(list, r)?;
    }
    for e in &kust.secrets {
        let r = generators::secret(kust, root, e)?;
        absorb(list, r)?;
    }
    Ok(())
}

/// Text of a patch from `path` or inline, with where it is.
fn patch_text(root: &Root, args: &PatchArgs, at: &Location) -> R<(String, Location, String)> {
    let inline = args.patch.trim();
    match (inline.is_empty(), args.path.is_empty()) {
        (true, true) => Err(KustomizeError::invalid(
            at.clone(),
            "must specify one of patch and path",
        )),
        (false, false) => Err(KustomizeError::invalid(
            at.clone(),
            "patch and path can't be set at the same time",
        )),
        (false, true) => Ok((inline.to_string(), at.clone(), "<inline patch>".into())),
        (true, false) => {
            let (display, text) = root.read_text(&args.path, at)?;
            let name = display.display().to_string();
            Ok((text, Location::new(name.clone(), 1, 1), name))
        }
    }
}

/// Parses patch text; inline patches are reported at their kustomization entry.
fn parse_patch_docs(text: &str, file: &str, at: &Location, inline: bool) -> R<Vec<Document>> {
    parse_documents(file, text).map_err(|e| {
        if inline {
            KustomizeError::invalid(
                at.clone(),
                format!("inline patch, line {}: {}", e.location.line, e.message),
            )
        } else {
            KustomizeError::Yaml(e)
        }
    })
}

fn is_sm_patch(v: &Value) -> bool {
    v.is_object()
        && super::util::get_str(v, &["kind"]).is_some_and(|k| !k.is_empty())
        && super::util::get_str(v, &["metadata", "name"]).is_some_and(|n| !n.is_empty())
}

/// JSON 6902 operations. Unless the text is JSON (starts with `[`), kustomize converts it from
/// YAML 1.1, where `yes`, `on`, `010` and the like are not strings.
fn json_ops(v: &Value, text: &str, at: &Location) -> R<json_patch::Patch> {
    let mut v = v.clone();
    if !text.starts_with('[') {
        if let [plain] = super::styles::plain_scalars(text).as_slice() {
            for (p, t) in plain {
                if let (Some(x), Some(slot)) = (super::styles::yaml11(t), v.pointer_mut(p)) {
                    *slot = x;
                }
            }
        }
    }
    serde_json::from_value::<json_patch::Patch>(v)
        .map_err(|e| KustomizeError::invalid(at.clone(), format!("invalid JSON 6902 patch: {e}")))
}

/// One `patches` entry: a JSON 6902 operation list, or one or more strategic-merge objects
/// (a multi-document patch file applies each document, as kustomize does).
fn load_patch(root: &Root, e: &Entry<PatchArgs>) -> R<Vec<Patch>> {
    let (text, loc, file) = patch_text(root, &e.value, &e.location)?;
    let inline = e.value.path.is_empty();
    let docs = parse_patch_docs(&text, &file, &e.location, inline)?;
    let location_of = |d: Option<&Document>| {
        if inline {
            e.location.clone()
        } else {
            d.map(|d| d.location.clone()).unwrap_or_else(|| loc.clone())
        }
    };
    if let [d] = docs.as_slice() {
        if d.value.is_array() {
            let location = location_of(Some(d));
            return Ok(vec![Patch {
                body: PatchBody::Json(json_ops(&d.value, &text, &location)?),
                target: e.value.target.clone(),
                location,
            }]);
        }
    }
    if docs.is_empty() || !docs.iter().all(|d| is_sm_patch(&d.value)) {
        return Err(KustomizeError::invalid(
            location_of(docs.first()),
            "unable to parse SM or JSON patch: a patch must be objects with kind and metadata.name, or a list of JSON 6902 operations",
        ));
    }
    Ok(docs
        .iter()
        .map(|d| Patch {
            body: PatchBody::Strategic {
                value: d.value.clone(),
                allow_name_change: e.value.allow_name_change,
                allow_kind_change: e.value.allow_kind_change,
            },
            target: e.value.target.clone(),
            location: location_of(Some(d)),
        })
        .collect())
}

/// `patchesStrategicMerge` entries: inline YAML or files (several objects each).
fn load_psm(root: &Root, e: &Entry<String>) -> R<Vec<Patch>> {
    let inline = parse_documents("<inline patch>", &e.value)
        .ok()
        .filter(|d| !d.is_empty() && d.iter().all(|x| x.value.is_object()));
    let docs: Vec<(Value, Location)> = match inline {
        Some(docs) => docs
            .into_iter()
            .map(|d| (d.value, e.location.clone()))
            .collect(),
        None => {
            let (display, text) = root.read_text(&e.value, &e.location)?;
            parse_documents(&display.display().to_string(), &text)?
                .into_iter()
                .map(|d| (d.value, d.location))
                .collect()
        }
    };
    let mut out = Vec::new();
    for (value, location) in docs {
        if !is_sm_patch(&value) {
            return Err(KustomizeError::invalid(
                location,
                "a strategic merge patch must be an object with kind and metadata.name",
            ));
        }
        out.push(Patch {
            body: PatchBody::Strategic {
                value,
                allow_name_change: false,
                allow_kind_change: false,
            },
            target: None,
            location,
        });
    }
    Ok(out)
}

/// A `patchesJson6902` entry.
fn load_json6902(root: &Root, e: &Entry<PatchArgs>) -> R<(json_patch::Patch, Location)> {
    let Some(t) = &e.value.target else {
        return Err(KustomizeError::invalid(
            e.location.clone(),
            "patchesJson6902 needs a target",
        ));
    };
    if t.name.is_empty() {
        return Err(KustomizeError::invalid(
            e.location.clone(),
            "patchesJson6902: must specify the target name",
        ));
    }
    let (text, loc, file) = patch_text(root, &e.value, &e.location)?;
    let inline = e.value.path.is_empty();
    let docs = parse_patch_docs(&text, &file, &e.location, inline)?;
    let location = if inline { e.location.clone() } else { loc };
    match docs.as_slice() {
        [d] if d.value.is_array() => {
            let ops = json_ops(&d.value, &text, &location)?;
            if ops.0.is_empty() {
                return Err(KustomizeError::invalid(
                    location,
                    "patch appears to be empty",
                ));
            }
            Ok((ops, location))
        }
        [] => Err(KustomizeError::invalid(
            location,
            "patch appears to be empty",
        )),
        _ => Err(KustomizeError::invalid(
            location,
            "a JSON 6902 patch must be a list of operations",
        )),
    }
}

fn merge_specs(mut a: Vec<FieldSpec>, b: Vec<FieldSpec>) -> Vec<FieldSpec> {
    for f in b {
        if !a.iter().any(|x| x.gvk == f.gvk && x.path == f.path) {
            a.push(f);
        }
    }
    a
}

fn run_transformers(
    kust: &Kustomization,
    root: &Root,
    list: &mut Vec<Res>,
    config: &TConfig,
) -> R<()> {
    let mut psm = Vec::new();
    for e in &kust.patches_strategic_merge {
        psm.extend(load_psm(root, e)?);
    }
    transform::patches_strategic_merge(list, &psm)?;
    for e in &kust.patches {
        for p in load_patch(root, e)? {
            transform::patch(list, &p)?;
        }
    }
    transform::namespace(list, &kust.namespace, &config.namespace, &kust.location)?;
    transform::prefix_suffix(
        list,
        &kust.name_prefix,
        true,
        &config.name_prefix,
        &kust.location,
    )?;
    transform::prefix_suffix(
        list,
        &kust.name_suffix,
        false,
        &config.name_suffix,
        &kust.location,
    )?;
    for l in &kust.labels {
        let specs = if l.include_selectors {
            merge_specs(l.fields.clone(), config.common_labels.clone())
        } else {
            let mut s = l.fields.clone();
            if l.include_templates {
                s = merge_specs(s, config.template_labels.clone());
            }
            merge_specs(
                s,
                vec![FieldSpec {
                    gvk: Gvk::default(),
                    path: "metadata/labels".into(),
                    create: true,
                }],
            )
        };
        transform::set_map_entries(list, &l.pairs, &specs, "labels")?;
    }
    transform::set_map_entries(
        list,
        &kust.common_labels,
        &config.common_labels,
        "commonLabels",
    )?;
    transform::set_map_entries(
        list,
        &kust.common_annotations,
        &config.common_annotations,
        "commonAnnotations",
    )?;
    for e in &kust.patches_json6902 {
        let (ops, loc) = load_json6902(root, e)?;
        let target = e.value.target.clone().expect("checked");
        transform::json6902(list, &ops, &target, false, &loc)?;
    }
    for e in &kust.replicas {
        transform::replicas(list, &e.value, &config.replicas, &e.location)?;
    }
    for e in &kust.images {
        transform::images(list, &e.value, &config.images, &e.location)?;
    }
    replacements::apply(list, &kust.replacements, root)?;
    list.retain(|r| !r.is_empty());
    Ok(())
}

const ORDER_FIRST: &[&str] = &[
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
const ORDER_LAST: &[&str] = &[
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// kustomize's output order: `legacy` (by kind priority, then gvk, namespace, name) by default.
fn sort(list: &mut Vec<Res>, order: Option<&SortOrder>) {
    let (first, last): (Vec<String>, Vec<String>) = match order {
        Some(SortOrder::Fifo) => return,
        Some(SortOrder::Legacy {
            order_first,
            order_last,
        }) if order_first.is_some() || order_last.is_some() => (
            order_first.clone().unwrap_or_default(),
            order_last.clone().unwrap_or_default(),
        ),
        _ => (
            ORDER_FIRST.iter().map(|s| s.to_string()).collect(),
            ORDER_LAST.iter().map(|s| s.to_string()).collect(),
        ),
    };
    let rank = |kind: &str| -> i64 {
        if let Some(i) = first.iter().position(|k| k == kind) {
            return i as i64 - first.len() as i64;
        }
        if let Some(i) = last.iter().position(|k| k == kind) {
            return 1 + i as i64;
        }
        0
    };
    // Sort keys computed once per object.
    struct Key {
        rank: i64,
        gvk: Gvk,
        gvk_string: String,
        id_string: String,
    }
    let key = |r: &Res| {
        let g = r.gvk();
        let ns = r.namespace();
        let name = r.name();
        Key {
            rank: rank(&g.kind),
            gvk_string: g.legacy_sort_string(),
            id_string: format!(
                "{}|{}|{}",
                g,
                if ns.is_empty() { "~X" } else { &ns },
                if name.is_empty() { "~N" } else { &name }
            ),
            gvk: g,
        }
    };
    let less = |a: &Key, b: &Key| -> bool {
        if a.gvk != b.gvk {
            if a.rank != b.rank {
                return a.rank < b.rank;
            }
            if a.gvk.kind == "Namespace"
                && b.gvk.kind == "Namespace"
                && (a.gvk.group.is_empty() || b.gvk.group.is_empty())
            {
                return a.gvk_string > b.gvk_string;
            }
            return a.gvk_string < b.gvk_string;
        }
        a.id_string < b.id_string
    };
    let mut keyed: Vec<(Key, Res)> = std::mem::take(list)
        .into_iter()
        .map(|r| (key(&r), r))
        .collect();
    keyed.sort_by(|(a, _), (b, _)| {
        if less(a, b) {
            Ordering::Less
        } else if less(b, a) {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    });
    list.extend(keyed.into_iter().map(|(_, r)| r));
}
