//! ServiceEntries: TCP ports without addresses (IST0134), unless the mesh auto-allocates
//! addresses (`ISTIO_META_DNS_AUTO_ALLOCATE`).

use trellis_api::resource::{Kind, Object};

use crate::context::Context;
use crate::messages;

/// IST0134 ServiceEntryAddressesRequired.
pub fn addresses_required(cx: &mut Context) {
    let auto = cx
        .mesh
        .default_config
        .proxy_metadata
        .get("ISTIO_META_DNS_AUTO_ALLOCATE")
        .is_some_and(|v| v == "true");
    if auto {
        return;
    }
    let mut reports = Vec::new();
    for r in cx.of_kind(Kind::ServiceEntry) {
        let Object::ServiceEntry(se) = &r.object else {
            continue;
        };
        // Addresses given, or allocated by the control plane (`status.addresses`).
        let allocated = r
            .raw
            .get("status")
            .and_then(|st| st.get("addresses"))
            .and_then(|a| a.as_array())
            .is_some_and(|a| !a.is_empty());
        if !se.addresses.is_empty() || allocated {
            continue;
        }
        for (i, p) in se.ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("");
            if proto.is_empty() || proto.eq_ignore_ascii_case("TCP") {
                reports.push((r, format!("spec.ports[{i}]")));
            }
        }
    }
    for (r, field) in reports {
        cx.report_at(
            messages::SERVICE_ENTRY_ADDRESSES_REQUIRED,
            r,
            &field,
            "ServiceEntry addresses are required for this protocol.",
        );
    }
}
