//! The analyzers, one file per area. Each is a plain function over the `Context`; `ANALYZERS`
//! lists them with a name and description (`trellis analyze --list-analyzers`).

use trellis_api::Resource;

use crate::context::{Context, Workload};

mod annotations;
mod conditions;
mod deprecation;
mod destinationrule;
mod envoyfilter;
mod gateway;
mod injection;
mod k8sgateway;
mod security;
mod service;
mod serviceentry;
mod sidecar;
mod telemetry;
mod virtualservice;

/// A named analyzer.
pub struct Analyzer {
    pub name: &'static str,
    pub description: &'static str,
    pub run: fn(&mut Context),
}

/// Every analyzer, in the order they run.
pub const ANALYZERS: &[Analyzer] = &[
    Analyzer {
        name: "annotations.K8sAnalyzer",
        description: "Checks for misplaced and invalid Istio annotations in Kubernetes resources",
        run: annotations::kubernetes_annotations,
    },
    Analyzer {
        name: "deprecation.DeprecationAnalyzer",
        description: "Checks for deprecated Istio types and fields",
        run: deprecation::deprecated_fields,
    },
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
    Analyzer {
        name: "virtualservice.DestinationHostAnalyzer",
        description: "Checks that VirtualService destinations (hosts, ports, subsets) exist",
        run: virtualservice::destinations_exist,
    },
    Analyzer {
        name: "virtualservice.IngressRouteRulesAnalyzer",
        description:
            "Checks for gateway routes that bypass the subset routing of mesh VirtualServices",
        run: virtualservice::ingress_subset_routing,
    },
    Analyzer {
        name: "virtualservice.GatewayAnalyzer",
        description:
            "Checks that VirtualService gateways exist and serve the VirtualService's hosts",
        run: virtualservice::gateways,
    },
    Analyzer {
        name: "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
        description: "Checks that no two mesh VirtualServices claim the same host",
        run: virtualservice::conflicting_mesh_hosts,
    },
    Analyzer {
        name: "virtualservice.ConditionalRouting",
        description: "Checks for VirtualService rules and matches that can never be used",
        run: virtualservice::unreachable_rules,
    },
    Analyzer {
        name: "virtualservice.JWTClaimRouteAnalyzer",
        description: "Checks that JWT-claim routing at a gateway has a RequestAuthentication",
        run: virtualservice::jwt_claim_routing,
    },
    Analyzer {
        name: "gateway.IngressGatewayPortAnalyzer",
        description: "Checks Gateway selectors, ports against the gateway Service, and credentials",
        run: gateway::gateway_workloads,
    },
    Analyzer {
        name: "gateway.ConflictingGatewayAnalyzer",
        description: "Checks for Gateways with the same selector, port and overlapping hosts",
        run: gateway::conflicting_gateways,
    },
    Analyzer {
        name: "gateway.CertificateAnalyzer",
        description: "Checks for one certificate used by several Gateways",
        run: gateway::duplicate_certificates,
    },
    Analyzer {
        name: "destinationrule.HostAndSubsetAnalyzer",
        description: "Checks that DestinationRule hosts exist and subsets select pods",
        run: destinationrule::hosts_and_subsets,
    },
    Analyzer {
        name: "destinationrule.CaCertificateAnalyzer",
        description: "Checks that TLS origination verifies the server (caCertificates)",
        run: destinationrule::tls_verification,
    },
    Analyzer {
        name: "serviceentry.ProtocolAddressesAnalyzer",
        description: "Checks that ServiceEntries with TCP ports have addresses",
        run: serviceentry::addresses_required,
    },
    Analyzer {
        name: "sidecar.SelectorAnalyzer",
        description: "Checks Sidecar workload selectors for conflicts and matches",
        run: sidecar::sidecar_selectors,
    },
    Analyzer {
        name: "telemetry.SelectorAnalyzer",
        description:
            "Checks that Telemetry selectors match workloads and no workload is selected twice",
        run: telemetry::telemetry_selectors,
    },
    Analyzer {
        name: "telemetry.DefaultSelectorAnalyzer",
        description: "Checks for several Telemetries without selector in one namespace",
        run: telemetry::telemetry_default_selectors,
    },
    Analyzer {
        name: "telemetry.ProviderAnalyzer",
        description:
            "Checks that Telemetry access logging names a provider when the mesh has no default",
        run: telemetry::telemetry_providers,
    },
    Analyzer {
        name: "telemetry.LightstepAnalyzer",
        description: "Checks for tracing to the deprecated Lightstep provider",
        run: telemetry::telemetry_lightstep,
    },
    Analyzer {
        name: "conditions.ConditionAnalyzer",
        description: "Checks for negative status conditions on resources",
        run: conditions::negative_conditions_analyzer,
    },
    Analyzer {
        name: "k8sgateway.SelectorAnalyzer",
        description:
            "Checks that policies select Kubernetes Gateway API gateways by targetRef, not by label",
        run: k8sgateway::ineffective_gateway_selectors,
    },
    Analyzer {
        name: "envoyfilter.EnvoyPatchAnalyzer",
        description: "Checks EnvoyFilter patch operations Istio would ignore or apply out of order",
        run: envoyfilter::envoy_filter_patches,
    },
];

/// Runs every analyzer.
pub fn run_all(cx: &mut Context) {
    for a in ANALYZERS {
        (a.run)(cx);
    }
}

/// Adds WorkloadEntries to the workload list.
pub(crate) fn workload_entries<'a>(resources: &[&'a Resource], out: &mut Vec<Workload<'a>>) {
    for &r in resources {
        if let trellis_api::Object::WorkloadEntry(we) = &r.object {
            out.push(Workload {
                resource: r,
                namespace: r.ns(),
                labels: we.labels.clone(),
                service_account: we
                    .service_account
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                ports: we
                    .ports
                    .iter()
                    .map(|(n, p)| (*p as i32, n.clone()))
                    .collect(),
                node_name: None,
            });
        }
    }
}

/// Namespaces Istio never analyzes for injection or port naming.
pub(crate) fn is_system_namespace(ns: &str) -> bool {
    matches!(
        ns,
        "kube-system" | "kube-public" | "kube-node-lease" | "local-path-storage"
    )
}
