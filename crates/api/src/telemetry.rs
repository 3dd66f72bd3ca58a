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
        v.nested("targetRef", &self.target_ref);
        v.each("targetRefs", &self.target_refs, |v, r| r.validate(v));
        v.each("tracing", &self.tracing, |v, t| t.validate(v));
    }
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
