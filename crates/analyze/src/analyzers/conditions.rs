//! Negative status conditions written by a control plane (IST0171 NegativeConditionStatus), as
//! found in resources exported from a cluster: Services and ServiceEntries not bound to their
//! waypoint, AuthorizationPolicies ztunnel or a waypoint did not accept, Gateway API gateways
//! and routes not accepted, programmed or resolved.

use serde_json::Value;
use trellis_api::resource::Kind;

use crate::context::Context;
use crate::message::Message;
use crate::messages;

/// The condition types reported, per kind, when their status is "False".
fn negative_types(kind: &str) -> &'static [&'static str] {
    match kind {
        "Service" | "ServiceEntry" => &["istio.io/WaypointBound"],
        "AuthorizationPolicy" => &["ZtunnelAccepted", "WaypointAccepted"],
        "Gateway" | "HTTPRoute" | "GRPCRoute" => &["Accepted", "Programmed", "ResolvedRefs"],
        _ => &[],
    }
}

/// The texts of the negative conditions in `status` of an object of `kind`.
fn negative_conditions(kind: &str, status: Option<&Value>) -> Vec<String> {
    let Some(status) = status else {
        return Vec::new();
    };
    let conditions: Vec<&Value> = match kind {
        // Route conditions are per parent.
        "HTTPRoute" | "GRPCRoute" => status
            .get("parents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("conditions").and_then(Value::as_array))
            .flatten()
            .collect(),
        _ => status
            .get("conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect(),
    };
    let types = negative_types(kind);
    let field = |c: &Value, f: &str| c.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let mut out = Vec::new();
    for c in conditions {
        let (ty, status, reason) = (field(c, "type"), field(c, "status"), field(c, "reason"));
        let negative = types.contains(&ty.as_str()) && status == "False";
        // A waypoint accepting an AuthorizationPolicy only in part says so with status True.
        let partial = kind == "AuthorizationPolicy"
            && ty == "WaypointAccepted"
            && reason == "PartiallyInvalid";
        if negative || partial {
            out.push(format!(
                "A condition with a negative status is present: type={ty}, reason={reason}, message={}.",
                field(c, "message")
            ));
        }
    }
    out
}

/// Gateway API kinds read as unrecognized objects.
fn is_gateway_api(api_version: &str, kind: &str) -> bool {
    api_version.starts_with("gateway.networking.k8s.io/")
        && matches!(kind, "Gateway" | "HTTPRoute" | "GRPCRoute")
}

/// IST0171 NegativeConditionStatus.
pub fn negative_conditions_analyzer(cx: &mut Context) {
    let mut out = Vec::new();
    for kind in [Kind::Service, Kind::ServiceEntry, Kind::AuthorizationPolicy] {
        for r in cx.of_kind(kind) {
            for text in negative_conditions(kind.name(), r.raw.get("status")) {
                out.push(
                    Message::new(messages::NEGATIVE_CONDITION_STATUS, text)
                        .about(r.reference(), r.origin.locate("status")),
                );
            }
        }
    }
    for u in &cx.unrecognized {
        if !is_gateway_api(&u.api_version, &u.kind) {
            continue;
        }
        for text in negative_conditions(&u.kind, u.raw.get("status")) {
            out.push(
                Message::new(messages::NEGATIVE_CONDITION_STATUS, text)
                    .about(u.reference(), u.origin.locate("status")),
            );
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

    #[test]
    fn negative_conditions_per_kind() {
        let svc = json!({"conditions": [
            {"type": "istio.io/WaypointBound", "status": "False", "reason": "NoWaypoint", "message": "m"},
            {"type": "argocd.argoproj.io/Synced", "status": "False"},
            {"type": "istio.io/WaypointBound", "status": "True"},
        ]});
        assert_eq!(
            negative_conditions("Service", Some(&svc)),
            ["A condition with a negative status is present: type=istio.io/WaypointBound, reason=NoWaypoint, message=m."]
        );
        // Conditions of kinds the analyzer does not know are not judged.
        assert!(negative_conditions("Sidecar", Some(&svc)).is_empty());
        let route = json!({"parents": [
            {"conditions": [{"type": "Accepted", "status": "True"}]},
            {"conditions": [{"type": "ResolvedRefs", "status": "False"}]},
        ]});
        assert_eq!(negative_conditions("HTTPRoute", Some(&route)).len(), 1);
        let ap = json!({"conditions": [
            {"type": "WaypointAccepted", "status": "True", "reason": "PartiallyInvalid"},
            {"type": "WaypointAccepted", "status": "True", "reason": "Accepted"},
        ]});
        assert_eq!(
            negative_conditions("AuthorizationPolicy", Some(&ap)).len(),
            1
        );
        assert!(negative_conditions("Gateway", None).is_empty());
    }
}
