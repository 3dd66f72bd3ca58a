//! `Telemetry` (telemetry.istio.io): which tracing providers a workload reports spans to, how
//! it samples, and the custom tags it adds.
//!
//! Owns the typed spec and its schema validation. `metrics` and `accessLogging` are kept as
//! written (Trellis always exports Prometheus metrics and writes its access log); merging the
//! mesh, namespace and workload levels for one proxy is `model::telemetry`'s business.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{PolicyTargetReference, WorkloadSelector};
use crate::validate::{Validate, Validator};

/// `Telemetry` spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<TracingRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<Value>,
}

/// One `tracing` entry. Unset fields inherit from the less specific level (mesh, namespace).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingRule {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<TracingSelector>,
    /// Provider names (from the mesh's `extensionProviders`); empty inherits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Percentage of requests sampled, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
}

impl TracingRule {
    /// Whether this rule applies to spans of `mode` (client = outbound, server = inbound).
    pub fn applies_to(&self, mode: WorkloadMode) -> bool {
        match self.match_.as_ref().and_then(|m| m.mode) {
            None | Some(WorkloadMode::ClientAndServer) => true,
            Some(m) => m == mode,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// Which side of the proxy a rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    Client,
    Server,
    ClientAndServer,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

/// A span tag: a literal, an environment variable of the proxy, or a request header (a proto
/// oneof, modelled as options; exactly one must be set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderTag>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

impl Validate for Telemetry {
    fn validate(&self, v: &mut Validator) {
        if self.selector.is_some() && (self.target_ref.is_some() || !self.target_refs.is_empty()) {
            v.error_at(
                "targetRef",
                "only one of selector, targetRef and targetRefs can be set",
            );
        }
        v.nested("selector", &self.selector);
        if self
            .selector
            .as_ref()
            .is_some_and(|s| s.match_labels.is_empty())
        {
            v.at("selector", |v| {
                v.warn("workload selector specified without labels: it selects every workload in scope, as if it were not set")
            });
        }
        v.nested("targetRef", &self.target_ref);
        v.each("targetRefs", &self.target_refs, |v, r| r.validate(v));
        if self.tracing.len() > 1 {
            v.at("tracing", |v| {
                v.warn(format!(
                    "multiple tracing is not currently supported: found {} entries, only the first applies",
                    self.tracing.len()
                ))
            });
        }
        v.each("tracing", &self.tracing, |v, t| t.validate(v));
        v.each("metrics", &self.metrics, validate_metrics);
        v.each("accessLogging", &self.access_logging, |v, l| {
            validate_providers(v, l.get("providers"))
        });
    }
}

/// `providers[].name` must be set (metrics and access logging are kept as raw JSON).
fn validate_providers(v: &mut Validator, providers: Option<&Value>) {
    let Some(Value::Array(list)) = providers else {
        return;
    };
    v.at("providers", |v| {
        for (i, p) in list.iter().enumerate() {
            let named = p.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
            if !named {
                v.at_index(i, |v| {
                    v.error("providers.name may not be empty: expected the name of a mesh extensionProvider, e.g. prometheus")
                });
            }
        }
    });
}

/// Istio's `validateTelemetryMetrics`: tag overrides need a value to UPSERT and none to REMOVE.
fn validate_metrics(v: &mut Validator, metrics: &Value) {
    validate_providers(v, metrics.get("providers"));
    let Some(Value::Array(overrides)) = metrics.get("overrides") else {
        return;
    };
    v.at("overrides", |v| {
        for (i, o) in overrides.iter().enumerate() {
            v.at_index(i, |v| {
                if o.is_null() {
                    v.error("overrides entries may not be null");
                    return;
                }
                if let Some(Value::Object(tags)) = o.get("tagOverrides") {
                    v.at("tagOverrides", |v| {
                        for (name, to) in tags {
                            v.at_key(name, |v| {
                                if name.is_empty() {
                                    v.warn("tagOverrides name may not be empty");
                                }
                                if to.is_null() {
                                    v.error("tagOverrides may not be null: expected {operation, value}");
                                    return;
                                }
                                let op = to.get("operation").and_then(Value::as_str).unwrap_or("UPSERT");
                                let value = to.get("value").and_then(Value::as_str).unwrap_or("");
                                if op == "UPSERT" && value.is_empty() {
                                    v.error("tagOverrides.value must be set when operation is UPSERT: expected a CEL expression such as request.host");
                                } else if op == "REMOVE" && !value.is_empty() {
                                    v.error(format!("tagOverrides.value may only be set when operation is UPSERT, found operation REMOVE with value {value:?}"));
                                }
                            });
                        }
                    });
                }
                if let Some(m) = o.get("match") {
                    if m.get("customMetric").and_then(Value::as_str) == Some("") {
                        v.at("match", |v| v.error_at("customMetric", "customMetric may not be empty"));
                    }
                }
            });
        }
    });
}

impl Validate for TracingRule {
    fn validate(&self, v: &mut Validator) {
        if let Some(p) = self.random_sampling_percentage {
            if !(0.0..=100.0).contains(&p) || p.is_nan() {
                v.error_at(
                    "randomSamplingPercentage",
                    format!("randomSamplingPercentage {p} is out of range: expected 0-100"),
                );
            }
        }
        if self.providers.len() > 1 {
            v.at("providers", |v| {
                v.warn(format!(
                    "multiple providers is not currently supported: found {}, only the first is used",
                    self.providers.len()
                ))
            });
        }
        v.each("providers", &self.providers, |v, p| {
            if p.name.is_empty() {
                v.error_at("name", "provider name must not be empty");
            }
        });
        v.at("customTags", |v| {
            for (name, tag) in &self.custom_tags {
                v.at_key(name, |v| {
                    let set = [
                        tag.literal.is_some(),
                        tag.environment.is_some(),
                        tag.header.is_some(),
                    ]
                    .iter()
                    .filter(|s| **s)
                    .count();
                    if set != 1 {
                        v.error(format!(
                            "custom tag {name:?} must set exactly one of literal, environment or header, found {set}"
                        ));
                    }
                    if tag.literal.as_ref().is_some_and(|l| l.value.is_empty()) {
                        v.error_at("literal.value", "literal tag value may not be empty");
                    }
                    if let Some(h) = &tag.header {
                        if h.name.is_empty() {
                            v.error_at("header.name", "header name must not be empty");
                        }
                    }
                    if let Some(e) = &tag.environment {
                        if e.name.is_empty() {
                            v.error_at("environment.name", "environment name must not be empty");
                        }
                    }
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Telemetry {
        serde_json::from_value(serde_saphyr::from_str::<Value>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn reads_istio_tracing_example() {
        let t = parse(
            r#"
selector:
  matchLabels: {app: reviews}
tracing:
- match: {mode: SERVER}
  providers: [{name: zipkin}]
  randomSamplingPercentage: 10.5
  customTags:
    env: {literal: {value: prod}}
    user: {header: {name: x-user, defaultValue: anon}}
"#,
        );
        let rule = &t.tracing[0];
        assert_eq!(rule.providers[0].name, "zipkin");
        assert_eq!(rule.random_sampling_percentage, Some(10.5));
        assert!(rule.applies_to(WorkloadMode::Server));
        assert!(!rule.applies_to(WorkloadMode::Client));
        assert_eq!(
            rule.custom_tags["user"].header.as_ref().unwrap().name,
            "x-user"
        );
    }

    #[test]
    fn validation_rejects_bad_sampling_and_ambiguous_tags() {
        let t = parse(
            r#"
tracing:
- randomSamplingPercentage: 150
  customTags:
    both: {literal: {value: a}, header: {name: b}}
"#,
        );
        let mut v = Validator::new("default", "istio-system");
        t.validate(&mut v);
        let msgs: Vec<String> = v.issues.iter().map(|i| i.message.clone()).collect();
        assert!(msgs.iter().any(|m| m.contains("out of range")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("exactly one")), "{msgs:?}");
    }
}
