//! Transformer configuration (kustomize `TransformerConfig`): the field specs each builtin
//! transformer uses, kustomize's defaults plus `configurations` files. A kustomization's
//! configuration also applies to the kustomizations that include it.

use serde_json::Value;

use super::error::KustomizeError;
use super::fieldspec::{self, FieldSpec, NameBackRef};
use super::resid::Gvk;
use crate::source::Location;

#[derive(Default)]
pub struct TConfig {
    pub name_prefix: Vec<FieldSpec>,
    pub name_suffix: Vec<FieldSpec>,
    pub namespace: Vec<FieldSpec>,
    pub common_labels: Vec<FieldSpec>,
    pub template_labels: Vec<FieldSpec>,
    pub common_annotations: Vec<FieldSpec>,
    pub images: Vec<FieldSpec>,
    pub replicas: Vec<FieldSpec>,
    pub name_reference: Vec<NameBackRef>,
}

/// kustomize `FsSlice.MergeAll`: adds the specs not already there.
fn merge_specs(into: &mut Vec<FieldSpec>, other: &[FieldSpec]) -> Result<(), String> {
    for f in other {
        match into.iter().find(|x| x.gvk == f.gvk && x.path == f.path) {
            Some(x) if x.create != f.create => {
                return Err(format!(
                    "conflicting fieldspecs for path {:?} ({}): create is both true and false",
                    f.path, f.gvk
                ))
            }
            Some(_) => {}
            None => into.push(f.clone()),
        }
    }
    Ok(())
}

impl TConfig {
    /// kustomize's builtin configuration.
    pub fn defaults() -> TConfig {
        let name = || vec![FieldSpec::new("", "", "", "metadata/name", false)];
        TConfig {
            name_prefix: name(),
            name_suffix: name(),
            namespace: fieldspec::namespace(),
            common_labels: fieldspec::common_labels(),
            template_labels: fieldspec::template_labels(),
            common_annotations: fieldspec::common_annotations(),
            images: fieldspec::images(),
            replicas: fieldspec::replicas(),
            name_reference: fieldspec::name_references(),
        }
    }

    pub fn merge(&mut self, other: &TConfig) -> Result<(), String> {
        merge_specs(&mut self.name_prefix, &other.name_prefix)?;
        merge_specs(&mut self.name_suffix, &other.name_suffix)?;
        merge_specs(&mut self.namespace, &other.namespace)?;
        merge_specs(&mut self.common_labels, &other.common_labels)?;
        merge_specs(&mut self.template_labels, &other.template_labels)?;
        merge_specs(&mut self.common_annotations, &other.common_annotations)?;
        merge_specs(&mut self.images, &other.images)?;
        merge_specs(&mut self.replicas, &other.replicas)?;
        for b in &other.name_reference {
            match self
                .name_reference
                .iter_mut()
                .find(|x| x.target == b.target)
            {
                Some(x) => merge_specs(&mut x.referrers, &b.referrers)?,
                None => self.name_reference.push(NameBackRef {
                    target: b.target.clone(),
                    referrers: b.referrers.clone(),
                }),
            }
        }
        Ok(())
    }

    /// A `configurations` file.
    pub fn parse(v: &Value, at: &Location) -> Result<TConfig, KustomizeError> {
        let err = |m: String| KustomizeError::invalid(at.clone(), format!("configurations: {m}"));
        let Value::Object(m) = v else {
            return Err(err("a configuration file must be a map".into()));
        };
        let mut c = TConfig::default();
        for (k, x) in m {
            let target = match k.as_str() {
                "namePrefix" => &mut c.name_prefix,
                "nameSuffix" => &mut c.name_suffix,
                "namespace" => &mut c.namespace,
                "commonLabels" => &mut c.common_labels,
                "templateLabels" => &mut c.template_labels,
                "commonAnnotations" => &mut c.common_annotations,
                "images" => &mut c.images,
                "replicas" => &mut c.replicas,
                // Only used by `vars`, which are not supported (and rejected) anyway.
                "varReference" => continue,
                "nameReference" => {
                    for b in list(x).map_err(&err)? {
                        let bm = b
                            .as_object()
                            .ok_or_else(|| err("nameReference entries must be maps".into()))?;
                        let mut target = Gvk::default();
                        let mut referrers = Vec::new();
                        for (bk, bv) in bm {
                            match bk.as_str() {
                                "group" => target.group = string(bv).map_err(&err)?,
                                "version" => target.version = string(bv).map_err(&err)?,
                                "kind" => target.kind = string(bv).map_err(&err)?,
                                "fieldSpecs" => referrers = specs(bv).map_err(&err)?,
                                other => {
                                    return Err(err(format!(
                                        "unknown field {other:?} in nameReference"
                                    )))
                                }
                            }
                        }
                        c.name_reference.push(NameBackRef { target, referrers });
                    }
                    continue;
                }
                other => return Err(err(format!("unknown field {other:?}"))),
            };
            *target = specs(x).map_err(&err)?;
        }
        Ok(c)
    }
}

fn list(v: &Value) -> Result<&[Value], String> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(&[]),
        _ => Err("expected a list".into()),
    }
}

fn string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        _ => Err("expected a string".into()),
    }
}

fn specs(v: &Value) -> Result<Vec<FieldSpec>, String> {
    let mut out = Vec::new();
    for f in list(v)? {
        let m = f
            .as_object()
            .ok_or_else(|| "field specs must be maps".to_string())?;
        let mut fs = FieldSpec::new("", "", "", "", false);
        for (k, x) in m {
            match k.as_str() {
                "group" => fs.gvk.group = string(x)?,
                "version" => fs.gvk.version = string(x)?,
                "kind" => fs.gvk.kind = string(x)?,
                "path" => fs.path = string(x)?,
                "create" => {
                    fs.create = match x {
                        Value::Bool(b) => *b,
                        Value::Null => false,
                        _ => return Err("create must be true or false".into()),
                    }
                }
                other => return Err(format!("unknown field {other:?} in a field spec")),
            }
        }
        out.push(fs);
    }
    Ok(out)
}
