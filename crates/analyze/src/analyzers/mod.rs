//! The analyzers, one file per area. Each is a plain function over the `Context`; `ANALYZERS`
//! lists them with a name and description (`trellis analyze --list-analyzers`).

use trellis_api::Resource;

use crate::context::{Context, Workload};

mod injection;
mod security;
mod service;

/// A named analyzer.
pub struct Analyzer {
    pub name: &'static str,
    pub description: &'static str,
    pub run: fn(&mut Context),
}

/// Every analyzer, in the order they run.
pub const ANALYZERS: &[Analyzer] = &[
    Analyzer {
        name: "injection.Analyzer",
        description: "Checks that namespaces holding workloads are labelled for sidecar injection",
        run: injection::namespace_injection,
    },
    Analyzer {
        name: "deployment.ApplicationUIDAnalyzer",
        description: "Checks that workloads do not run as the proxy's UID 1337",
        run: injection::application_uid,
    },
    Analyzer {
        name: "service.PortNameAnalyzer",
        description: "Checks that Service ports are named <protocol>[-<suffix>] or set appProtocol",
        run: service::port_names,
    },
    Analyzer {
        name: "deployment.MultiServiceAnalyzer",
        description: "Checks that a workload's Services agree on port protocols and target ports",
        run: service::multi_service,
    },
    Analyzer {
        name: "security.SelectorAnalyzer",
        description: "Checks that security policies with a selector match at least one workload",
        run: security::selectors_match_workloads,
    },
    Analyzer {
        name: "auth.AuthorizationPoliciesAnalyzer",
        description: "Checks that namespaces referenced by AuthorizationPolicies exist",
        run: security::authz_namespaces,
    },
    Analyzer {
        name: "peerauthentication.PortLevelMtlsAnalyzer",
        description: "Checks that PeerAuthentication portLevelMtls names ports the workloads serve",
        run: security::peer_authentication_ports,
    },
];

/// Runs every analyzer.
pub fn run_all(cx: &mut Context) {
    for a in ANALYZERS {
        (a.run)(cx);
    }
}

/// Adds WorkloadEntries to the workload list (filled in with the networking types).
pub(crate) fn workload_entries<'a>(_resources: &'a [Resource], _out: &mut Vec<Workload<'a>>) {}

/// Namespaces Istio never analyzes for injection or port naming.
pub(crate) fn is_system_namespace(ns: &str) -> bool {
    matches!(
        ns,
        "kube-system" | "kube-public" | "kube-node-lease" | "local-path-storage"
    )
}
