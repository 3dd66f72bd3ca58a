//! Types shared by the networking and security kinds: workload selectors and policy target
//! references (Istio's `type.v1beta1` package).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::{Validate, Validator};

/// `selector: {matchLabels: {...}}`: which workloads (pods, WorkloadEntries) a resource applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// True when every selector label is present with the same value in `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl Validate for WorkloadSelector {
    fn validate(&self, v: &mut Validator) {
        v.labels("matchLabels", &self.match_labels);
        for (k, val) in &self.match_labels {
            if k.is_empty() {
                v.error("empty key in matchLabels");
            }
            if val.contains('*') {
                v.at("matchLabels", |v| {
                    v.at_key(k, |v| {
                        v.error("wildcards are not supported in matchLabels values")
                    })
                });
            }
        }
    }
}

/// `targetRef` / `targetRefs`: the Kubernetes Gateway API style of attaching a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Validate for PolicyTargetReference {
    fn validate(&self, v: &mut Validator) {
        if self.name.is_empty() {
            v.error_at("name", "targetRef name is required");
        }
        let known = matches!(
            (self.group.as_str(), self.kind.as_str()),
            ("gateway.networking.k8s.io", "Gateway" | "GatewayClass")
                | ("" | "core", "Service")
                | ("networking.istio.io", "ServiceEntry")
        );
        if !known {
            v.error(format!(
                "targetRef {}/{} is not supported: expected gateway.networking.k8s.io Gateway, GatewayClass, core Service or networking.istio.io ServiceEntry",
                self.group, self.kind
            ));
        }
        if !self.namespace.is_empty() {
            // Istio rejects any namespace here, even the policy's own.
            v.error_at(
                "namespace",
                format!(
                    "targetRef namespace must not be set (found {:?}): cross-namespace references are not supported; the target is looked up in the policy's namespace",
                    self.namespace
                ),
            );
        }
    }
}
