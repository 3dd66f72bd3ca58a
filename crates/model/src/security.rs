//! The security part of a proxy's config: what `compile` decides once so the data plane only
//! applies it. Pure: no I/O.
//!
//! - [`SecurityConfig`]: the workload's AuthorizationPolicies ([`AuthzPolicies`]), its
//!   RequestAuthentication rules ([`JwtPolicy`]), its PeerAuthentication ([`EffectivePeerAuthn`])
//!   and the mode of every inbound port, the path normalization options (MeshConfig
//!   `pathNormalization`), the ext-authz HTTP providers its CUSTOM policies name, and the
//!   application's HTTP probes (rewritten to the status port under mTLS).
//! - [`apply_peer_authn`]: turns the mode of each `virtualInbound` chain into transport
//!   matches: STRICT → one chain terminating mesh mTLS ([`mesh_downstream_tls`]), PERMISSIVE →
//!   that chain plus a plaintext-only one, DISABLE → the plaintext chain as compiled.
//!
//! Mesh mTLS certificates are not secrets of the config: a chain names the workload
//! certificate [`MESH_WORKLOAD_SECRET`] and the mesh roots [`MESH_ROOT_SECRET`] (Istio's SDS
//! names), which the proxy resolves to its own identity.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use trellis_api::security::MtlsMode;
use trellis_api::{MeshConfig, Object};

use crate::authn::JwtPolicy;
use crate::authz::{AuthzPolicies, AuthzTarget, GATEWAY_NAME_LABEL};
use crate::compile::{resolve_host, Compiler};
use crate::config::{DownstreamTls, FilterChain, Listener, ProxyKind};
use crate::normalize::{Normalization, PathOptions};
use crate::peer_authn::{EffectivePeerAuthn, ModeSource, PeerAuthnPolicy};
use crate::registry::spiffe_id;

/// Secret name of the proxy's own workload certificate (Istio's SDS name).
pub const MESH_WORKLOAD_SECRET: &str = "default";
/// Secret name of the mesh trust bundle (Istio's SDS name).
pub const MESH_ROOT_SECRET: &str = "ROOTCA";
/// Name of the sidecar inbound listener.
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
/// Ext-authz timeout when the provider sets none (Istio's default).
pub const DEFAULT_EXT_AUTHZ_TIMEOUT: Duration = Duration::from_secs(600);

/// Everything the request path needs to enforce security for one proxy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SecurityConfig {
    pub trust_domain: String,
    pub trust_domain_aliases: Vec<String>,
    /// SPIFFE id of the proxy's workload (`spiffe://<td>/ns/<ns>/sa/<sa>`).
    pub identity: String,
    /// Path normalization, applied before routing and authorization.
    pub path_normalization: PathOptions,
    pub authz: AuthzPolicies,
    pub jwt: JwtPolicy,
    /// The workload's PeerAuthentication (sidecars; gateways terminate client TLS instead).
    pub peer_authn: EffectivePeerAuthn,
    /// The mTLS mode of every inbound port (sidecars), and what set it.
    pub inbound_ports: BTreeMap<u16, InboundPort>,
    /// Names of the services the workload serves: accepted as JWT `aud` by rules without
    /// `audiences` (Istio: "the service name will be accepted").
    pub audiences: Vec<String>,
    /// Ext-authz HTTP providers named by the workload's CUSTOM policies, by provider name.
    pub ext_authz: BTreeMap<String, ExtAuthzProvider>,
    /// Application HTTP probes by `<container>/<livez|readyz|startupz>`, served by the status
    /// port as `/app-health/<container>/<kind>`.
    pub probes: BTreeMap<String, AppProbe>,
}

/// The PeerAuthentication mode of one inbound port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InboundPort {
    pub mode: MtlsMode,
    /// Which policy decided (`default (no PeerAuthentication sets a mode)`, ...).
    pub source: String,
}

/// `extensionProviders[].envoyExtAuthzHttp`, resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExtAuthzProvider {
    pub name: String,
    /// Service host (FQDN) and port.
    pub service: String,
    pub port: u16,
    /// The cluster that reaches the provider.
    pub cluster: String,
    pub path_prefix: String,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    pub fail_open: bool,
    /// Status returned when the provider cannot be reached (403 unless `statusOnError`).
    pub status_on_error: u16,
    /// Request headers sent in the check (lowercase). Empty: Envoy's default set
    /// (`authorization` only, besides method, path and host).
    pub include_request_headers: Vec<String>,
    pub include_additional_headers: Vec<(String, String)>,
    pub headers_to_upstream_on_allow: Vec<String>,
    pub headers_to_downstream_on_allow: Vec<String>,
    pub headers_to_downstream_on_deny: Vec<String>,
}

/// An application HTTP probe (`httpGet` of a container's liveness/readiness/startup probe).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppProbe {
    pub port: u16,
    pub path: String,
    /// `HTTP` or `HTTPS`.
    pub scheme: String,
    pub headers: Vec<(String, String)>,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
}

mod duration_ms {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// TLS termination with the proxy's mesh identity, client certificate required.
pub fn mesh_downstream_tls() -> DownstreamTls {
    DownstreamTls {
        certificate: MESH_WORKLOAD_SECRET.into(),
        client_ca: Some(MESH_ROOT_SECRET.into()),
        require_client_cert: true,
        alpn: Vec::new(),
        min_tls13: true,
        client_san: Vec::new(),
    }
}

/// True when `tls` is mesh mTLS (the proxy's own identity) rather than a config secret.
pub fn is_mesh_tls(tls: &DownstreamTls) -> bool {
    tls.certificate == MESH_WORKLOAD_SECRET && tls.client_ca.as_deref() == Some(MESH_ROOT_SECRET)
}

/// Rewrites the `virtualInbound` chains for their PeerAuthentication mode (see the module
/// documentation). The passthrough chain (no destination port) takes the workload's mode.
pub fn apply_peer_authn(listeners: &mut [Listener], peer: &EffectivePeerAuthn) {
    for l in listeners.iter_mut().filter(|l| l.name == VIRTUAL_INBOUND) {
        let mut chains = Vec::with_capacity(l.filter_chains.len() * 2);
        for chain in l.filter_chains.drain(..) {
            // A Sidecar ingress listener with its own `tls` replaces mesh mTLS on its port.
            if chain.tls.is_some() {
                chains.push(chain);
                continue;
            }
            let mode = match chain.filter_match.destination_port {
                Some(p) => peer.mode_for_port(u32::from(p)),
                None => peer.mode,
            };
            let mtls = |c: &FilterChain| {
                let mut m = c.clone();
                m.name = format!("{}|mtls", c.name);
                m.filter_match.tls_only = true;
                m.filter_match.plaintext_only = false;
                m.tls = Some(mesh_downstream_tls());
                m
            };
            match mode {
                MtlsMode::Strict => chains.push(mtls(&chain)),
                MtlsMode::Permissive | MtlsMode::Unset => {
                    chains.push(mtls(&chain));
                    let mut plain = chain;
                    plain.name = format!("{}|plaintext", plain.name);
                    plain.filter_match.plaintext_only = true;
                    chains.push(plain);
                }
                MtlsMode::Disable => chains.push(chain),
            }
        }
        l.filter_chains = chains;
    }
}

impl Compiler<'_> {
    /// Compiles the [`SecurityConfig`] of the target and applies PeerAuthentication to the
    /// inbound chains (sidecars).
    pub(crate) fn build_security(&mut self) -> SecurityConfig {
        let t = self.target;
        let mesh = self.mesh;
        let root = mesh.root_namespace.as_str();
        let trust_domains = trust_domains(mesh);
        let gateway_name = t.labels.get(GATEWAY_NAME_LABEL).map(String::as_str);
        let authz = AuthzPolicies::compile_for(
            self.resources,
            &AuthzTarget {
                namespace: &t.namespace,
                labels: &t.labels,
                gateway_name,
                trust_domains: &trust_domains,
            },
            root,
        );
        for d in authz.diagnostics() {
            self.warn(format!("AuthorizationPolicy {d}"));
        }
        let jwt = JwtPolicy::compile(self.resources, &t.namespace, &t.labels, root, gateway_name);
        for w in &jwt.warnings {
            self.warn(format!("RequestAuthentication: {w}"));
        }
        let peer_authn = PeerAuthnPolicy::resolve(self.resources, &t.namespace, &t.labels, root);

        let mut inbound_ports = BTreeMap::new();
        if t.kind == ProxyKind::Sidecar {
            apply_peer_authn(&mut self.listeners, &peer_authn);
            for l in self.listeners.iter().filter(|l| l.name == VIRTUAL_INBOUND) {
                for c in &l.filter_chains {
                    if let Some(p) = c.filter_match.destination_port {
                        let source: ModeSource = peer_authn.source_for_port(u32::from(p));
                        inbound_ports.insert(
                            p,
                            InboundPort {
                                mode: peer_authn.mode_for_port(u32::from(p)),
                                source: source.to_string(),
                            },
                        );
                    }
                }
            }
            if let Some(w) = &peer_authn.workload_policy {
                for port in peer_authn.port_modes.keys() {
                    if u16::try_from(*port).is_ok_and(|p| !inbound_ports.contains_key(&p)) {
                        self.warn(format!(
                            "PeerAuthentication {w}: portLevelMtls names port {port}, which is not a port of the workload"
                        ));
                    }
                }
            }
        }

        let key = self
            .registry
            .workload(&t.namespace, &t.name)
            .map(|w| w.key());
        let mut audiences: Vec<String> = self
            .registry
            .services()
            .iter()
            .filter(|s| {
                key.as_ref()
                    .is_some_and(|k| s.instances.iter().any(|i| &i.workload == k))
            })
            .map(|s| s.host.clone())
            .collect();
        audiences.sort();
        audiences.dedup();

        let ext_authz = self.ext_authz_providers(&authz);
        let probes = self.app_probes();

        SecurityConfig {
            trust_domain: mesh.trust_domain.clone(),
            trust_domain_aliases: mesh.trust_domain_aliases.clone(),
            identity: spiffe_id(&mesh.trust_domain, &t.namespace, &t.service_account),
            path_normalization: PathOptions::trellis(Normalization::from_mesh(
                mesh.path_normalization.normalization,
            )),
            authz,
            jwt,
            peer_authn,
            inbound_ports,
            audiences,
            ext_authz,
            probes,
        }
    }

    fn ext_authz_providers(&mut self, authz: &AuthzPolicies) -> BTreeMap<String, ExtAuthzProvider> {
        let mut out = BTreeMap::new();
        let names: Vec<(String, String)> = authz
            .policies()
            .filter_map(|p| p.provider.clone().map(|n| (n, p.id.to_string())))
            .collect();
        for (name, policy) in names {
            if out.contains_key(&name) {
                continue;
            }
            let Some(provider) = self
                .mesh
                .extension_providers
                .iter()
                .find(|p| p.name == name)
            else {
                self.warn(format!(
                    "AuthorizationPolicy {policy}: extension provider {name:?} is not defined in the mesh config: requests its CUSTOM rules match are denied"
                ));
                continue;
            };
            let Some(http) = &provider.envoy_ext_authz_http else {
                self.warn(format!(
                    "AuthorizationPolicy {policy}: extension provider {name:?} is not an envoyExtAuthzHttp provider (only HTTP ext-authz is supported): requests its CUSTOM rules match are denied"
                ));
                continue;
            };
            let Ok(port) = u16::try_from(http.port) else {
                self.warn(format!(
                    "extension provider {name:?}: invalid port {}",
                    http.port
                ));
                continue;
            };
            // `namespace/host` names the host from that namespace; a short host is resolved
            // in the root namespace.
            let (ns, host) = match http.service.split_once('/') {
                Some((ns, h)) => (ns.to_string(), h.to_string()),
                None => (self.mesh.root_namespace.clone(), http.service.clone()),
            };
            let host = resolve_host(&host, &ns);
            let cluster = self.ensure_cluster(&host, port, None);
            let lower = |v: &[String]| v.iter().map(|h| h.to_ascii_lowercase()).collect();
            out.insert(
                name.clone(),
                ExtAuthzProvider {
                    name,
                    service: host,
                    port,
                    cluster,
                    path_prefix: http.path_prefix.clone().unwrap_or_default(),
                    timeout: http
                        .timeout
                        .as_ref()
                        .map(|d| d.as_std())
                        .filter(|d| !d.is_zero())
                        .unwrap_or(DEFAULT_EXT_AUTHZ_TIMEOUT),
                    fail_open: http.fail_open.unwrap_or(false),
                    status_on_error: http
                        .status_on_error
                        .as_deref()
                        .and_then(|s| s.parse().ok())
                        .filter(|s| (100..600).contains(s))
                        .unwrap_or(403),
                    include_request_headers: lower(
                        if http.include_request_headers_in_check.is_empty() {
                            &http.include_headers_in_check
                        } else {
                            &http.include_request_headers_in_check
                        },
                    ),
                    include_additional_headers: http
                        .include_additional_headers_in_check
                        .iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect(),
                    headers_to_upstream_on_allow: lower(&http.headers_to_upstream_on_allow),
                    headers_to_downstream_on_allow: lower(&http.headers_to_downstream_on_allow),
                    headers_to_downstream_on_deny: lower(&http.headers_to_downstream_on_deny),
                },
            );
        }
        out
    }

    /// HTTP probes of the target's containers (Pod or Deployment template).
    fn app_probes(&mut self) -> BTreeMap<String, AppProbe> {
        let t = self.target;
        let spec = self.resources.iter().find_map(|r| {
            if r.ns() != t.namespace || r.name != t.name {
                return None;
            }
            match &r.object {
                Object::Pod(p) => p.spec.clone(),
                Object::Deployment(d) => d.spec.template.spec.clone(),
                _ => None,
            }
        });
        let mut out = BTreeMap::new();
        let Some(spec) = spec else { return out };
        collect_probes(&spec, &mut out, &mut |w| self.warnings.insert(w));
        out
    }
}

fn collect_probes(
    spec: &PodSpec,
    out: &mut BTreeMap<String, AppProbe>,
    warn: &mut impl FnMut(String) -> bool,
) {
    for c in &spec.containers {
        let probes: [(&str, &Option<Probe>); 3] = [
            ("livez", &c.liveness_probe),
            ("readyz", &c.readiness_probe),
            ("startupz", &c.startup_probe),
        ];
        for (kind, probe) in probes {
            let Some(probe) = probe else { continue };
            let Some(get) = &probe.http_get else { continue };
            let port = match &get.port {
                IntOrString::Int(n) => u16::try_from(*n).ok(),
                IntOrString::String(name) => name.parse().ok().or_else(|| {
                    c.ports.iter().flatten().find_map(|p| {
                        (p.name.as_deref() == Some(name.as_str()))
                            .then(|| u16::try_from(p.container_port).ok())
                            .flatten()
                    })
                }),
            };
            let Some(port) = port.filter(|p| *p != 0) else {
                warn(format!(
                    "container {}: {kind} probe port {:?} is not a port of the container: not rewritten",
                    c.name, get.port
                ));
                continue;
            };
            let path = get
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or("/".into());
            out.insert(
                format!("{}/{kind}", c.name),
                AppProbe {
                    port,
                    path: if path.starts_with('/') {
                        path
                    } else {
                        format!("/{path}")
                    },
                    scheme: get.scheme.clone().unwrap_or_else(|| "HTTP".into()),
                    headers: get
                        .http_headers
                        .iter()
                        .flatten()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect(),
                    timeout: Duration::from_secs(
                        u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1),
                    ),
                },
            );
        }
    }
}

/// The mesh config's trust domain followed by its aliases.
pub fn trust_domains(mesh: &MeshConfig) -> Vec<String> {
    let mut v = vec![mesh.trust_domain.clone()];
    v.extend(mesh.trust_domain_aliases.iter().cloned());
    v
}
