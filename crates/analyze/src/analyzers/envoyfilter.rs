//! EnvoyFilter patches Istio would apply badly or not at all (IST0151-IST0155).
//!
//! Trellis's proxy is not Envoy and never applies EnvoyFilters: they are read as unrecognized
//! objects (and reported as skipped). They are still analyzed as Istio would, so a
//! configuration shared with an Istio mesh gets Istio's advice.

use serde::Deserialize;
use serde_json::Value;

use crate::context::Context;
use crate::message::Message;
use crate::messages::{self, MessageType};

/// The parts of an EnvoyFilter spec the analysis reads; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvoyFilterSpec {
    #[serde(default)]
    config_patches: Vec<ConfigPatch>,
    #[serde(default)]
    priority: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigPatch {
    #[serde(default)]
    apply_to: Option<String>,
    #[serde(default, rename = "match")]
    match_: Option<Value>,
    #[serde(default)]
    patch: Option<Patch>,
}

#[derive(Debug, Default, Deserialize)]
struct Patch {
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    value: Option<Value>,
}

impl ConfigPatch {
    fn apply_to(&self) -> &str {
        self.apply_to.as_deref().unwrap_or("INVALID")
    }

    fn match_path(&self, path: &[&str]) -> Option<&Value> {
        path.iter()
            .try_fold(self.match_.as_ref()?, |v, k| v.get(k))
            .filter(|v| !v.is_null())
    }

    /// What identifies the filter a patch inserts, for spotting the same filter patched for
    /// one proxy version and again without: the `name` of the patch value, else the filter
    /// the patch matches. A name from the value never equals one from a match (as in Istio).
    fn instance_name(&self, value: &Value) -> String {
        if let Some(name) = value.get("name") {
            return format!("value:{name}");
        }
        if self.match_path(&["listener", "filterChain"]).is_some() {
            let name = self
                .match_path(&["listener", "filterChain", "filter", "name"])
                .and_then(Value::as_str)
                .unwrap_or("");
            return format!("match:{name}");
        }
        String::new()
    }

    fn proxy_version_set(&self) -> bool {
        self.match_path(&["proxy", "proxyVersion"])
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    }
}

/// The findings for one EnvoyFilter: (message, patch index). `versioned` holds the instance
/// names of patches (of this and earlier filters) restricted to a proxy version.
fn analyze_filter(
    spec: &EnvoyFilterSpec,
    versioned: &mut Vec<String>,
) -> Vec<(MessageType, usize)> {
    let mut out = Vec::new();
    for (i, cp) in spec.config_patches.iter().enumerate() {
        // Istio stops at the first patch without a patch section.
        let Some(patch) = &cp.patch else {
            break;
        };
        let name = match &patch.value {
            Some(v @ Value::Object(_)) => cp.instance_name(v),
            _ => String::new(),
        };
        let route_level = matches!(cp.apply_to(), "ROUTE_CONFIGURATION" | "HTTP_ROUTE");
        let relative = match patch.operation.as_deref().unwrap_or("INVALID") {
            "ADD" => {
                if route_level {
                    out.push((messages::ENVOY_FILTER_USES_ADD_OPERATION_INCORRECTLY, i));
                }
                false
            }
            "REMOVE" if route_level => {
                out.push((messages::ENVOY_FILTER_USES_REMOVE_OPERATION_INCORRECTLY, i));
                false
            }
            "REPLACE" if !matches!(cp.apply_to(), "NETWORK_FILTER" | "HTTP_FILTER") => {
                out.push((messages::ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY, i));
                false
            }
            "REMOVE" | "REPLACE" | "INSERT_BEFORE" | "INSERT_AFTER" => true,
            _ => false,
        };
        // A relative patch without priority depends on the order filters are applied in; when
        // the same filter is also patched for one proxy version, an upgrade reorders them.
        if relative && spec.priority == 0 {
            let kind = if versioned.contains(&name) {
                messages::ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION
            } else {
                messages::ENVOY_FILTER_USES_RELATIVE_OPERATION
            };
            out.push((kind, i));
        }
        if cp.proxy_version_set() {
            versioned.push(name);
        }
    }
    out
}

fn text(kind: MessageType) -> &'static str {
    match kind.code {
        "IST0151" => "This EnvoyFilter does not have a priority and has a relative patch operation set which can cause the EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.",
        "IST0152" => "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER.",
        "IST0153" => "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.",
        "IST0154" => "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.",
        _ => "This EnvoyFilter does not have a priority and has a relative patch operation (NSTERT_BEFORE/AFTER, REPLACE, MERGE, DELETE) and proxyVersion set which can cause the EnvoyFilter not to be applied during an upgrade. Using the INSERT_FIRST or ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.",
    }
}

/// IST0151-IST0155 for EnvoyFilters, in input order.
pub fn envoy_filter_patches(cx: &mut Context) {
    let mut versioned = Vec::new();
    let mut out = Vec::new();
    for u in &cx.unrecognized {
        if u.kind != "EnvoyFilter" || !u.api_version.starts_with("networking.istio.io/") {
            continue;
        }
        let Some(spec) = u
            .raw
            .get("spec")
            .and_then(|s| EnvoyFilterSpec::deserialize(s).ok())
        else {
            continue;
        };
        for (kind, i) in analyze_filter(&spec, &mut versioned) {
            out.push(Message::new(kind, text(kind)).about(
                u.reference(),
                u.origin.locate(&format!("spec.configPatches[{i}]")),
            ));
        }
    }
    for m in out {
        cx.push(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(spec: Value, versioned: &mut Vec<String>) -> Vec<&'static str> {
        let spec = EnvoyFilterSpec::deserialize(&spec).unwrap();
        analyze_filter(&spec, versioned)
            .into_iter()
            .map(|(k, _)| k.code)
            .collect()
    }

    fn patch(apply_to: &str, op: &str) -> Value {
        json!({"applyTo": apply_to, "patch": {"operation": op, "value": {"name": "f"}}})
    }

    #[test]
    fn operations() {
        let mut v = Vec::new();
        let spec = |p| json!({"configPatches": [p]});
        assert_eq!(codes(spec(patch("HTTP_ROUTE", "ADD")), &mut v), ["IST0153"]);
        assert!(codes(spec(patch("CLUSTER", "ADD")), &mut v).is_empty());
        assert_eq!(
            codes(spec(patch("ROUTE_CONFIGURATION", "REMOVE")), &mut v),
            ["IST0154"]
        );
        assert_eq!(
            codes(spec(patch("NETWORK_FILTER", "REMOVE")), &mut v),
            ["IST0151"]
        );
        assert_eq!(
            codes(spec(patch("CLUSTER", "REPLACE")), &mut v),
            ["IST0152"]
        );
        assert_eq!(
            codes(spec(patch("HTTP_FILTER", "REPLACE")), &mut v),
            ["IST0151"]
        );
        assert_eq!(
            codes(spec(patch("HTTP_FILTER", "INSERT_BEFORE")), &mut v),
            ["IST0151"]
        );
        assert!(codes(spec(patch("HTTP_FILTER", "INSERT_FIRST")), &mut v).is_empty());
        assert!(codes(spec(patch("FILTER_CHAIN", "MERGE")), &mut v).is_empty());
        // A priority makes relative operations deterministic.
        let prioritized =
            json!({"priority": 10, "configPatches": [patch("HTTP_FILTER", "INSERT_AFTER")]});
        assert!(codes(prioritized, &mut v).is_empty());
        // Patches after one without a patch section are not looked at.
        let stops =
            json!({"configPatches": [{"applyTo": "HTTP_ROUTE"}, patch("HTTP_ROUTE", "ADD")]});
        assert!(codes(stops, &mut v).is_empty());
    }

    #[test]
    fn relative_patch_of_a_filter_also_patched_for_a_proxy_version() {
        let mut versioned = Vec::new();
        let mut p = patch("HTTP_FILTER", "INSERT_AFTER");
        p["match"] = json!({"proxy": {"proxyVersion": "^1\\.11.*"}});
        let spec = json!({"configPatches": [p, patch("HTTP_FILTER", "REPLACE")]});
        assert_eq!(codes(spec, &mut versioned), ["IST0151", "IST0155"]);
        // Later filters see the versioned name too.
        let later = json!({"configPatches": [patch("HTTP_FILTER", "INSERT_BEFORE")]});
        assert_eq!(codes(later, &mut versioned), ["IST0155"]);
        // A different filter name is unaffected.
        let other = json!({"configPatches": [{"applyTo": "HTTP_FILTER",
            "patch": {"operation": "INSERT_BEFORE", "value": {"name": "g"}}}]});
        assert_eq!(codes(other, &mut versioned), ["IST0151"]);
    }
}
