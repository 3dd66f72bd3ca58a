//! Deprecated Istio fields still in use (IST0002 Deprecated): the integer `fault.delay.percent`
//! of VirtualService HTTP routes, and a Sidecar's `outboundTrafficPolicy.egressProxy`, which
//! Istio (and Trellis) ignore.

use trellis_api::resource::{Kind, Object};

use crate::context::Context;
use crate::messages;

/// IST0002 Deprecated for VirtualServices and Sidecars.
pub fn deprecated_fields(cx: &mut Context) {
    let mut reports = Vec::new();
    for r in cx.of_kind(Kind::VirtualService) {
        let Object::VirtualService(vs) = &r.object else {
            continue;
        };
        for (i, route) in vs.http.iter().enumerate() {
            let percent = route
                .fault
                .as_ref()
                .and_then(|f| f.delay.as_ref())
                .and_then(|d| d.percent);
            if percent.is_some_and(|p| p > 0) {
                reports.push((
                    r,
                    format!("spec.http[{i}].fault.delay.percent"),
                    "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
                ));
            }
        }
    }
    for r in cx.of_kind(Kind::Sidecar) {
        let Object::Sidecar(sc) = &r.object else {
            continue;
        };
        if sc
            .outbound_traffic_policy
            .as_ref()
            .is_some_and(|p| p.egress_proxy.is_some())
        {
            reports.push((
                r,
                "spec.outboundTrafficPolicy.egressProxy".to_string(),
                "Deprecated: OutboundTrafficPolicy.EgressProxy ignored",
            ));
        }
    }
    for (r, field, text) in reports {
        cx.report_at(messages::DEPRECATED, r, &field, text);
    }
}
