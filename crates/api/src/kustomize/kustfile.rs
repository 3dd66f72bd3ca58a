//! The kustomization file: strict decoding (unknown fields are errors, as in kustomize), with the
//! location of every entry so later errors can point at it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::KustomizeError;
use super::fieldspec::FieldSpec;
use super::resid::Gvk;
use super::selector::Selector;
use super::util::ptr;
use crate::source::Location;
use crate::yaml::{parse_documents, Document};

pub const KUSTOMIZATION_VERSION: &str = "kustomize.config.k8s.io/v1beta1";
pub const COMPONENT_VERSION: &str = "kustomize.config.k8s.io/v1alpha1";

/// A value from the kustomization file and where it is.
#[derive(Clone, Debug)]
pub struct Entry<T> {
    pub value: T,
    pub location: Location,
}

#[derive(Clone, Debug, Default)]
pub struct LabelArgs {
    pub pairs: Vec<(String, String)>,
    pub include_selectors: bool,
    pub include_templates: bool,
    pub fields: Vec<FieldSpec>,
}

#[derive(Clone, Debug, Default)]
pub struct PatchArgs {
    pub path: String,
    pub patch: String,
    pub target: Option<Selector>,
    pub allow_name_change: bool,
    pub allow_kind_change: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ImageArgs {
    pub name: String,
    pub new_name: String,
    pub new_tag: String,
    pub digest: String,
}

#[derive(Clone, Debug)]
pub struct ReplicaArgs {
    pub name: String,
    pub count: i64,
}

#[derive(Clone, Debug, Default)]
pub struct GeneratorOptions {
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub disable_name_suffix_hash: bool,
    pub immutable: bool,
}

#[derive(Clone, Debug, Default)]
pub struct GeneratorArgs {
    pub name: String,
    pub namespace: String,
    pub behavior: String,
    pub literals: Vec<String>,
    pub files: Vec<String>,
    pub envs: Vec<String>,
    /// Secret type.
    pub type_: String,
    pub options: Option<GeneratorOptions>,
}

#[derive(Clone, Debug)]
pub enum SortOrder {
    Legacy {
        order_first: Option<Vec<String>>,
        order_last: Option<Vec<String>>,
    },
    Fifo,
}

#[derive(Clone, Debug)]
pub struct Kustomization {
    /// The kustomization file as displayed in messages.
    pub file: PathBuf,
    pub is_component: bool,
    pub resources: Vec<Entry<String>>,
    pub components: Vec<Entry<String>>,
    pub namespace: String,
    pub name_prefix: String,
    pub name_suffix: String,
    pub common_labels: Vec<(String, String)>,
    pub labels: Vec<LabelArgs>,
    pub common_annotations: Vec<(String, String)>,
    pub patches_strategic_merge: Vec<Entry<String>>,
    pub patches: Vec<Entry<PatchArgs>>,
    pub patches_json6902: Vec<Entry<PatchArgs>>,
    pub images: Vec<Entry<ImageArgs>>,
    pub replicas: Vec<Entry<ReplicaArgs>>,
    pub configmaps: Vec<Entry<GeneratorArgs>>,
    pub secrets: Vec<Entry<GeneratorArgs>>,
    pub generator_options: Option<GeneratorOptions>,
    pub replacements: Vec<Entry<Value>>,
    pub configurations: Vec<Entry<String>>,
    pub sort: Option<Entry<SortOrder>>,
    /// Location of the whole file (for messages about it).
    pub location: Location,
}

/// Decoding context: locations come from the document's spans.
struct Ctx<'a> {
    doc: &'a Document,
}

type R<T> = Result<T, KustomizeError>;

impl Ctx<'_> {
    fn loc(&self, pointer: &str) -> Location {
        self.doc
            .spans
            .locate(pointer)
            .unwrap_or_else(|| self.doc.location.clone())
    }

    fn err(&self, pointer: &str, msg: impl Into<String>) -> KustomizeError {
        KustomizeError::invalid(self.loc(pointer), msg)
    }

    fn field_name(pointer: &str) -> String {
        let name: String = pointer
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .map(|s| {
                if s.bytes().all(|b| b.is_ascii_digit()) {
                    format!("[{s}]")
                } else {
                    format!(".{s}")
                }
            })
            .collect();
        name.trim_start_matches('.').to_string()
    }

    fn string(&self, v: &Value, p: &str) -> R<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Null => Ok(String::new()),
            _ => Err(self.err(p, format!("{}: expected a string", Self::field_name(p)))),
        }
    }

    fn boolean(&self, v: &Value, p: &str) -> R<bool> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::Null => Ok(false),
            _ => Err(self.err(
                p,
                format!("{}: expected true or false", Self::field_name(p)),
            )),
        }
    }

    fn list<'v>(&self, v: &'v Value, p: &str) -> R<Vec<(&'v Value, String)>> {
        match v {
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, x)| (x, format!("{p}/{i}")))
                .collect()),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.err(p, format!("{}: expected a list", Self::field_name(p)))),
        }
    }

    fn strings(&self, v: &Value, p: &str) -> R<Vec<Entry<String>>> {
        self.list(v, p)?
            .into_iter()
            .map(|(x, xp)| {
                Ok(Entry {
                    value: self.string(x, &xp)?,
                    location: self.loc(&xp),
                })
            })
            .collect()
    }

    fn string_vec(&self, v: &Value, p: &str) -> R<Vec<String>> {
        Ok(self.strings(v, p)?.into_iter().map(|e| e.value).collect())
    }

    /// A string-to-string map, sorted by key as kustomize applies them.
    fn string_map(&self, v: &Value, p: &str) -> R<Vec<(String, String)>> {
        let m = match v {
            Value::Object(m) => m,
            Value::Null => return Ok(Vec::new()),
            _ => return Err(self.err(p, format!("{}: expected a map", Self::field_name(p)))),
        };
        let mut out = Vec::new();
        for (k, x) in m {
            let xp = ptr(p, k);
            out.push((k.clone(), self.string(x, &xp)?));
        }
        out.sort();
        Ok(out)
    }

    /// The fields of an object, refusing unknown ones.
    fn object<'v>(
        &self,
        v: &'v Value,
        p: &str,
        known: &[&str],
    ) -> R<Vec<(&'v str, &'v Value, String)>> {
        let m: &Map<String, Value> = match v {
            Value::Object(m) => m,
            _ => return Err(self.err(p, format!("{}: expected a map", Self::field_name(p)))),
        };
        let mut out = Vec::new();
        for (k, x) in m {
            let xp = ptr(p, k);
            if !known.contains(&k.as_str()) {
                let within = Self::field_name(p);
                let msg = if within.is_empty() {
                    format!("unknown field {k:?} in kustomization")
                } else {
                    format!("unknown field {k:?} in {within}")
                };
                return Err(self.err(&xp, msg));
            }
            out.push((k.as_str(), x, xp));
        }
        Ok(out)
    }

    fn selector(&self, v: &Value, p: &str) -> R<Option<Selector>> {
        if v.is_null() {
            return Ok(None);
        }
        let mut s = Selector::default();
        for (k, x, xp) in self.object(
            v,
            p,
            &[
                "group",
                "version",
                "kind",
                "name",
                "namespace",
                "labelSelector",
                "annotationSelector",
            ],
        )? {
            let val = self.string(x, &xp)?;
            match k {
                "group" => s.group = val,
                "version" => s.version = val,
                "kind" => s.kind = val,
                "name" => s.name = val,
                "namespace" => s.namespace = val,
                "labelSelector" => s.label_selector = val,
                _ => s.annotation_selector = val,
            }
        }
        Ok(Some(s))
    }

    fn patch(&self, v: &Value, p: &str) -> R<PatchArgs> {
        let mut a = PatchArgs::default();
        for (k, x, xp) in self.object(v, p, &["path", "patch", "target", "options"])? {
            match k {
                "path" => a.path = self.string(x, &xp)?,
                "patch" => a.patch = self.string(x, &xp)?,
                "target" => a.target = self.selector(x, &xp)?,
                _ => {
                    if x.is_null() {
                        continue;
                    }
                    for (ok, ox, oxp) in
                        self.object(x, &xp, &["allowNameChange", "allowKindChange"])?
                    {
                        let b = self.boolean(ox, &oxp)?;
                        if ok == "allowNameChange" {
                            a.allow_name_change = b;
                        } else {
                            a.allow_kind_change = b;
                        }
                    }
                }
            }
        }
        Ok(a)
    }

    fn field_specs(&self, v: &Value, p: &str) -> R<Vec<FieldSpec>> {
        let mut out = Vec::new();
        for (x, xp) in self.list(v, p)? {
            let mut fs = FieldSpec {
                gvk: Gvk::default(),
                path: String::new(),
                create: false,
            };
            for (k, y, yp) in
                self.object(x, &xp, &["group", "version", "kind", "path", "create"])?
            {
                match k {
                    "group" => fs.gvk.group = self.string(y, &yp)?,
                    "version" => fs.gvk.version = self.string(y, &yp)?,
                    "kind" => fs.gvk.kind = self.string(y, &yp)?,
                    "path" => fs.path = self.string(y, &yp)?,
                    _ => fs.create = self.boolean(y, &yp)?,
                }
            }
            out.push(fs);
        }
        Ok(out)
    }

    fn generator_options(&self, v: &Value, p: &str) -> R<Option<GeneratorOptions>> {
        if v.is_null() {
            return Ok(None);
        }
        let mut o = GeneratorOptions::default();
        for (k, x, xp) in self.object(
            v,
            p,
            &[
                "labels",
                "annotations",
                "disableNameSuffixHash",
                "immutable",
            ],
        )? {
            match k {
                "labels" => o.labels = self.string_map(x, &xp)?,
                "annotations" => o.annotations = self.string_map(x, &xp)?,
                "disableNameSuffixHash" => o.disable_name_suffix_hash = self.boolean(x, &xp)?,
                _ => o.immutable = self.boolean(x, &xp)?,
            }
        }
        Ok(Some(o))
    }

    fn generators(&self, v: &Value, p: &str, secret: bool) -> R<Vec<Entry<GeneratorArgs>>> {
        let mut known = vec![
            "name",
            "namespace",
            "behavior",
            "literals",
            "files",
            "envs",
            "env",
            "options",
        ];
        if secret {
            known.push("type");
        }
        let mut out = Vec::new();
        for (x, xp) in self.list(v, p)? {
            let mut g = GeneratorArgs::default();
            let mut env = None;
            for (k, y, yp) in self.object(x, &xp, &known)? {
                match k {
                    "name" => g.name = self.string(y, &yp)?,
                    "namespace" => g.namespace = self.string(y, &yp)?,
                    "behavior" => {
                        g.behavior = self.string(y, &yp)?;
                        if !matches!(g.behavior.as_str(), "" | "create" | "merge" | "replace") {
                            return Err(self.err(
                                &yp,
                                format!(
                                    "behavior must be create, merge or replace, not {:?}",
                                    g.behavior
                                ),
                            ));
                        }
                    }
                    "literals" => g.literals = self.string_vec(y, &yp)?,
                    "files" => g.files = self.string_vec(y, &yp)?,
                    "envs" => g.envs = self.string_vec(y, &yp)?,
                    "env" => env = Some(self.string(y, &yp)?),
                    "type" => g.type_ = self.string(y, &yp)?,
                    _ => g.options = self.generator_options(y, &yp)?,
                }
            }
            if let Some(e) = env.filter(|e| !e.is_empty()) {
                g.envs.push(e);
            }
            out.push(Entry {
                value: g,
                location: self.loc(&xp),
            });
        }
        Ok(out)
    }
}

/// Reads and decodes the kustomization file of `dir` (displayed as `display_dir`).
pub fn load(display_dir: &Path, real_dir: &Path) -> R<Kustomization> {
    let mut found = Vec::new();
    for name in super::KUSTOMIZATION_FILE_NAMES {
        if real_dir.join(name).is_file() {
            found.push(name);
        }
    }
    let name = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(KustomizeError::Io {
                path: display_dir.to_path_buf(),
                message: format!(
                    "unable to find one of {} in directory",
                    super::KUSTOMIZATION_FILE_NAMES
                        .iter()
                        .map(|n| format!("'{n}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
        _ => {
            return Err(KustomizeError::Io {
                path: display_dir.to_path_buf(),
                message: "found multiple kustomization files".into(),
            })
        }
    };
    let file = super::util::join_clean(display_dir, name);
    let bytes = std::fs::read(real_dir.join(name)).map_err(|e| KustomizeError::io(&file, e))?;
    let text = String::from_utf8(bytes).map_err(|_| KustomizeError::io(&file, "not UTF-8 text"))?;
    let docs = parse_documents(&file.display().to_string(), &text)?;
    let file_loc = Location::new(file.display().to_string(), 1, 1);
    let mut doc = match docs.len() {
        0 => {
            return Err(KustomizeError::invalid(
                file_loc,
                "kustomization file is empty",
            ))
        }
        1 => docs.into_iter().next().expect("one"),
        _ => {
            return Err(KustomizeError::invalid(
                docs[1].location.clone(),
                "a kustomization file must hold a single YAML document",
            ))
        }
    };
    // kustomize reads kustomization files as YAML 1.1 (`yes` is a boolean, `010` is 8).
    if let [plain] = super::styles::plain_scalars(&text).as_slice() {
        for (p, t) in plain {
            if let (Some(x), Some(slot)) = (super::styles::yaml11(t), doc.value.pointer_mut(p)) {
                *slot = x;
            }
        }
    }
    decode(&doc, file)
}

const KNOWN: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "openapi",
    "namePrefix",
    "nameSuffix",
    "namespace",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "patchesStrategicMerge",
    "patchesJson6902",
    "patches",
    "images",
    "imageTags",
    "replacements",
    "replicas",
    "vars",
    "sortOptions",
    "resources",
    "components",
    "crds",
    "bases",
    "configMapGenerator",
    "secretGenerator",
    "helmGlobals",
    "helmCharts",
    "helmChartInflationGenerator",
    "generatorOptions",
    "configurations",
    "generators",
    "transformers",
    "validators",
    "buildMetadata",
];

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn decode(doc: &Document, file: PathBuf) -> R<Kustomization> {
    let c = Ctx { doc };
    let location = doc.location.clone();
    if !doc.value.is_object() {
        return Err(c.err("", "a kustomization must be a YAML mapping"));
    }
    let mut k = Kustomization {
        file,
        is_component: false,
        resources: Vec::new(),
        components: Vec::new(),
        namespace: String::new(),
        name_prefix: String::new(),
        name_suffix: String::new(),
        common_labels: Vec::new(),
        labels: Vec::new(),
        common_annotations: Vec::new(),
        patches_strategic_merge: Vec::new(),
        patches: Vec::new(),
        patches_json6902: Vec::new(),
        images: Vec::new(),
        replicas: Vec::new(),
        configmaps: Vec::new(),
        secrets: Vec::new(),
        generator_options: None,
        replacements: Vec::new(),
        configurations: Vec::new(),
        sort: None,
        location,
    };
    let mut api_version = String::new();
    let mut bases = Vec::new();
    let mut image_tags = Vec::new();
    for (key, v, p) in c.object(&doc.value, "", KNOWN)? {
        match key {
            "apiVersion" => api_version = c.string(v, &p)?,
            "kind" => {
                let kind = c.string(v, &p)?;
                match kind.as_str() {
                    "" | "Kustomization" => {}
                    "Component" => k.is_component = true,
                    _ => return Err(c.err(&p, "kind should be Kustomization or Component")),
                }
            }
            "metadata" => {}
            "namePrefix" => k.name_prefix = c.string(v, &p)?,
            "nameSuffix" => k.name_suffix = c.string(v, &p)?,
            "namespace" => k.namespace = c.string(v, &p)?,
            "commonLabels" => k.common_labels = c.string_map(v, &p)?,
            "commonAnnotations" => k.common_annotations = c.string_map(v, &p)?,
            "labels" => {
                for (x, xp) in c.list(v, &p)? {
                    let mut l = LabelArgs::default();
                    for (lk, y, yp) in c.object(
                        x,
                        &xp,
                        &["pairs", "includeSelectors", "includeTemplates", "fields"],
                    )? {
                        match lk {
                            "pairs" => l.pairs = c.string_map(y, &yp)?,
                            "includeSelectors" => l.include_selectors = c.boolean(y, &yp)?,
                            "includeTemplates" => l.include_templates = c.boolean(y, &yp)?,
                            _ => l.fields = c.field_specs(y, &yp)?,
                        }
                    }
                    k.labels.push(l);
                }
            }
            "resources" => k.resources = c.strings(v, &p)?,
            "bases" => bases = c.strings(v, &p)?,
            "components" => k.components = c.strings(v, &p)?,
            "patchesStrategicMerge" => k.patches_strategic_merge = c.strings(v, &p)?,
            "patches" | "patchesJson6902" => {
                let mut out = Vec::new();
                for (x, xp) in c.list(v, &p)? {
                    out.push(Entry {
                        value: c.patch(x, &xp)?,
                        location: c.loc(&xp),
                    });
                }
                if key == "patches" {
                    k.patches = out;
                } else {
                    k.patches_json6902 = out;
                }
            }
            "images" | "imageTags" => {
                let mut out = Vec::new();
                for (x, xp) in c.list(v, &p)? {
                    let mut img = ImageArgs::default();
                    for (ik, y, yp) in c.object(x, &xp, &["name", "newName", "newTag", "digest"])? {
                        let s = c.string(y, &yp)?;
                        match ik {
                            "name" => img.name = s,
                            "newName" => img.new_name = s,
                            "newTag" => img.new_tag = s,
                            _ => img.digest = s,
                        }
                    }
                    out.push(Entry {
                        value: img,
                        location: c.loc(&xp),
                    });
                }
                if key == "images" {
                    k.images = out;
                } else {
                    image_tags = out;
                }
            }
            "replicas" => {
                for (x, xp) in c.list(v, &p)? {
                    let mut name = String::new();
                    let mut count = None;
                    for (rk, y, yp) in c.object(x, &xp, &["name", "count"])? {
                        if rk == "name" {
                            name = c.string(y, &yp)?;
                        } else {
                            count = Some(y.as_i64().ok_or_else(|| {
                                c.err(&yp, "replicas count: expected an integer")
                            })?);
                        }
                    }
                    k.replicas.push(Entry {
                        value: ReplicaArgs {
                            name,
                            count: count.unwrap_or(0),
                        },
                        location: c.loc(&xp),
                    });
                }
            }
            "configurations" => k.configurations = c.strings(v, &p)?,
            "configMapGenerator" => k.configmaps = c.generators(v, &p, false)?,
            "secretGenerator" => k.secrets = c.generators(v, &p, true)?,
            "generatorOptions" => k.generator_options = c.generator_options(v, &p)?,
            "replacements" => {
                for (x, xp) in c.list(v, &p)? {
                    k.replacements.push(Entry {
                        value: x.clone(),
                        location: c.loc(&xp),
                    });
                }
            }
            "sortOptions" => {
                if v.is_null() {
                    continue;
                }
                let mut order = String::new();
                let mut first = None;
                let mut last = None;
                let mut has_legacy = false;
                for (sk, y, yp) in c.object(v, &p, &["order", "legacySortOptions"])? {
                    if sk == "order" {
                        order = c.string(y, &yp)?;
                    } else if !y.is_null() {
                        has_legacy = true;
                        for (lk, z, zp) in c.object(y, &yp, &["orderFirst", "orderLast"])? {
                            if lk == "orderFirst" {
                                first = Some(c.string_vec(z, &zp)?);
                            } else {
                                last = Some(c.string_vec(z, &zp)?);
                            }
                        }
                    }
                }
                let value = match order.as_str() {
                    "legacy" => SortOrder::Legacy {
                        order_first: first,
                        order_last: last,
                    },
                    "fifo" if !has_legacy => SortOrder::Fifo,
                    "fifo" => {
                        return Err(c.err(
                            &p,
                            "the field 'sortOptions.legacySortOptions' is set but the selected sort order is 'fifo', not 'legacy'",
                        ))
                    }
                    _ => {
                        return Err(c.err(
                            &p,
                            "the field 'sortOptions.order' must be one of [fifo, legacy]",
                        ))
                    }
                };
                k.sort = Some(Entry {
                    value,
                    location: c.loc(&p),
                });
            }
            other => {
                if !is_empty_value(v) {
                    return Err(KustomizeError::unsupported(
                        c.loc(&p),
                        format!("kustomization field `{other}`"),
                    ));
                }
            }
        }
    }
    let expected = if k.is_component {
        COMPONENT_VERSION
    } else {
        KUSTOMIZATION_VERSION
    };
    if !api_version.is_empty() && api_version != expected {
        return Err(c.err(
            "/apiVersion",
            format!(
                "apiVersion for {} should be {expected}",
                if k.is_component {
                    "Component"
                } else {
                    "Kustomization"
                }
            ),
        ));
    }
    k.resources.extend(bases);
    k.images.extend(image_tags);
    Ok(k)
}
