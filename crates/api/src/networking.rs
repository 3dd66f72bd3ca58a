//! Istio's `networking.istio.io` kinds as typed specs with Istio's schema validation:
//! Gateway, VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar.
//!
//! Owns every field of the specs (v1, v1beta1 and v1alpha3 share one schema) under Istio's
//! JSON names; unknown fields are rejected as the API server's structural schema does; proto
//! enums are read by name or by number; proto `oneof`s are structs of `Option`s whose
//! "at most one" rule is checked by validation; Istio's defaults are accessor methods (never
//! serde defaults, so a round trip keeps what the user wrote); and the per-resource rules of
//! Istio's `pkg/config/validation` and the CRDs' CEL rules, each reported at its field path.
//!
//! Does not own: the resource envelope and metadata (`resource`), the `matchLabels` selector
//! (`common`), rules that need other resources (does the subset, gateway or secret exist: the
//! `analyze` crate), the `status` subresource, or compiling routes into proxy config (`model`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration as StdDuration;

use base64::Engine as _;
use ipnet::IpNet;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::common::WorkloadSelector;
use crate::duration::Duration;
use crate::validate::{check_host, check_outbound_sni, Validate, Validator};

// =============================================================================================
// Serde helpers and proto enums
// =============================================================================================

/// Reads `null` as the empty list/map: the API server prunes nulls of non-nullable fields.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A proto enum: serialized as Istio's name, read from the name or the proto number.
macro_rules! proto_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $num:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value in proto order; the first is the proto default (number 0).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Istio's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The proto enum number.
            pub fn number(self) -> i32 {
                match self { $($name::$variant => $num,)+ }
            }

            /// Parses Istio's spelling (case-sensitive, like the CRD's enum).
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($text => Some($name::$variant),)+ _ => None }
            }

            /// Looks a value up by proto number (protobuf JSON accepts numbers too).
            pub fn from_number(n: i64) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| i64::from(v.number()) == n)
            }

            fn expected() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::ALL[0]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {} (one of {})", $what, $name::expected())
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::from_name(s).ok_or_else(|| {
                            E::custom(format!(
                                "invalid {} {:?}: expected one of {}",
                                $what,
                                s,
                                $name::expected()
                            ))
                        })
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$name, E> {
                        $name::from_number(n).ok_or_else(|| {
                            E::custom(format!(
                                "invalid {} number {}: expected one of {} or a number 0-{}",
                                $what,
                                n,
                                $name::expected(),
                                $name::ALL.len() - 1
                            ))
                        })
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<$name, E> {
                        self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

proto_enum! {
    /// Gateway/Sidecar server TLS mode (`ServerTLSSettings.TLSmode`).
    pub enum ServerTLSMode ("server TLS mode") {
        /// Route on SNI without terminating TLS (the default).
        Passthrough = 0 => "PASSTHROUGH",
        /// Terminate TLS with a server certificate.
        Simple = 1 => "SIMPLE",
        /// Terminate TLS and require a client certificate.
        Mutual = 2 => "MUTUAL",
        /// Passthrough routed by the SNI Istio encodes (multi-network east-west).
        AutoPassthrough = 3 => "AUTO_PASSTHROUGH",
        /// Terminate mTLS with Istio's workload certificates.
        IstioMutual = 4 => "ISTIO_MUTUAL",
        /// Like MUTUAL, but a client certificate is optional.
        OptionalMutual = 5 => "OPTIONAL_MUTUAL",
    }
}

proto_enum! {
    /// TLS protocol version bound (`ServerTLSSettings.TLSProtocol`).
    pub enum TLSProtocol ("TLS protocol version") {
        /// Let the proxy choose.
        TlsAuto = 0 => "TLS_AUTO",
        /// TLS 1.0.
        TlsV1_0 = 1 => "TLSV1_0",
        /// TLS 1.1.
        TlsV1_1 = 2 => "TLSV1_1",
        /// TLS 1.2.
        TlsV1_2 = 3 => "TLSV1_2",
        /// TLS 1.3.
        TlsV1_3 = 4 => "TLSV1_3",
    }
}

proto_enum! {
    /// Upstream TLS mode of a DestinationRule (`ClientTLSSettings.TLSmode`).
    pub enum ClientTLSMode ("client TLS mode") {
        /// Plain text to the upstream.
        Disable = 0 => "DISABLE",
        /// TLS, verifying the server.
        Simple = 1 => "SIMPLE",
        /// mTLS with a client certificate.
        Mutual = 2 => "MUTUAL",
        /// mTLS with Istio's workload certificates.
        IstioMutual = 3 => "ISTIO_MUTUAL",
    }
}

proto_enum! {
    /// Simple load-balancing algorithm (`LoadBalancerSettings.SimpleLB`).
    pub enum SimpleLB ("load balancer") {
        /// Not set: Istio's default (LEAST_REQUEST).
        Unspecified = 0 => "UNSPECIFIED",
        /// Deprecated alias of LEAST_REQUEST.
        LeastConn = 1 => "LEAST_CONN",
        /// Random endpoint.
        Random = 2 => "RANDOM",
        /// Forward to the original destination address.
        Passthrough = 3 => "PASSTHROUGH",
        /// Round robin.
        RoundRobin = 4 => "ROUND_ROBIN",
        /// Fewest outstanding requests among two random picks.
        LeastRequest = 5 => "LEAST_REQUEST",
    }
}

impl SimpleLB {
    /// What Istio uses when no algorithm is configured.
    pub const ISTIO_DEFAULT: SimpleLB = SimpleLB::LeastRequest;
}

proto_enum! {
    /// Whether HTTP/1.1 upstream connections are upgraded to HTTP/2.
    pub enum H2UpgradePolicy ("h2UpgradePolicy") {
        /// Follow the mesh-wide setting.
        Default = 0 => "DEFAULT",
        /// Never upgrade.
        DoNotUpgrade = 1 => "DO_NOT_UPGRADE",
        /// Upgrade.
        Upgrade = 2 => "UPGRADE",
    }
}

proto_enum! {
    /// PROXY protocol version sent upstream.
    pub enum ProxyProtocolVersion ("PROXY protocol version") {
        /// Version 1 (text).
        V1 = 0 => "V1",
        /// Version 2 (binary).
        V2 = 1 => "V2",
    }
}

proto_enum! {
    /// How a redirect picks its port (`HTTPRedirect.RedirectPortSelection`).
    pub enum RedirectPortSelection ("derivePort") {
        /// 80 for http, 443 for https.
        FromProtocolDefault = 0 => "FROM_PROTOCOL_DEFAULT",
        /// The port of the original request.
        FromRequestPort = 1 => "FROM_REQUEST_PORT",
    }
}

proto_enum! {
    /// What to do with CORS preflights that match no allowed origin.
    pub enum UnmatchedPreflights ("unmatchedPreflights") {
        /// Not set (FORWARD).
        Unspecified = 0 => "UNSPECIFIED",
        /// Forward to the upstream.
        Forward = 1 => "FORWARD",
        /// Answer without forwarding.
        Ignore = 2 => "IGNORE",
    }
}

proto_enum! {
    /// Whether a ServiceEntry's service is inside or outside the mesh.
    pub enum Location ("ServiceEntry location") {
        /// Outside the mesh (the default).
        MeshExternal = 0 => "MESH_EXTERNAL",
        /// Part of the mesh (workloads with sidecars or ztunnel).
        MeshInternal = 1 => "MESH_INTERNAL",
    }
}

proto_enum! {
    /// How a ServiceEntry's endpoints are found.
    pub enum Resolution ("ServiceEntry resolution") {
        /// Use the connection's original destination IP (the default).
        None = 0 => "NONE",
        /// Use the static endpoint IPs.
        Static = 1 => "STATIC",
        /// Resolve hosts/endpoints by DNS, load balancing over all answers.
        Dns = 2 => "DNS",
        /// Resolve by DNS, using only the first answer per connection.
        DnsRoundRobin = 3 => "DNS_ROUND_ROBIN",
        /// Resolve the requested (wildcard) host at connection time.
        DynamicDns = 4 => "DYNAMIC_DNS",
    }
}

proto_enum! {
    /// Sidecar outbound policy for hosts not in the registry.
    pub enum OutboundTrafficPolicyMode ("outbound traffic policy mode") {
        /// Only registered services are reachable.
        RegistryOnly = 0 => "REGISTRY_ONLY",
        /// Unknown destinations are passed through.
        AllowAny = 1 => "ALLOW_ANY",
    }
}

proto_enum! {
    /// How traffic reaches a Sidecar listener.
    pub enum CaptureMode ("captureMode") {
        /// Environment's default.
        Default = 0 => "DEFAULT",
        /// Redirected by iptables.
        Iptables = 1 => "IPTABLES",
        /// Not captured: the application connects to the listener directly.
        None = 2 => "NONE",
    }
}

// =============================================================================================
// Types shared by several kinds
// =============================================================================================

/// A percentage, 0.0 to 100.0 (`{value: 12.5}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// The percentage.
    #[serde(default)]
    pub value: f64,
}

/// `port: {number: 9080}`: a port of the destination service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    #[serde(default)]
    pub number: u32,
}

/// Where traffic goes: a service host, an optional subset and an optional port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Service host from the registry (short names resolve in the rule's namespace). Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Subset defined by a DestinationRule for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Port of the host; may be omitted when the service has one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// A string matcher; a oneof: at most one of `exact`, `prefix` or RE2 `regex`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Exact match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regex matching the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `workloadSelector: {labels: {...}}` of ServiceEntry and Sidecar (networking's own selector;
/// DestinationRule uses `common::WorkloadSelector` with `matchLabels`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadLabelSelector {
    /// Labels a workload must carry.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

impl WorkloadLabelSelector {
    /// True when every selector label is present with the same value in `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl Validate for WorkloadLabelSelector {
    fn validate(&self, v: &mut Validator) {
        v.labels("labels", &self.labels);
        v.at("labels", |v| {
            for (k, val) in &self.labels {
                if val.contains('*') {
                    v.at_key(k, |v| {
                        v.error("wildcards are not supported in selector labels")
                    });
                }
            }
        });
    }
}

/// A port protocol as Istio parses `protocol` strings (case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Https,
    Http2,
    HttpProxy,
    Grpc,
    GrpcWeb,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    Mysql,
}

/// The protocols Istio accepts, for messages.
const PROTOCOLS: &str =
    "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL, UDP (case-insensitive)";

impl Protocol {
    /// Istio's `protocol.Parse`: `None` for unsupported names.
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            "http2" => Protocol::Http2,
            "http_proxy" => Protocol::HttpProxy,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    /// HTTP-family protocols (routed by `http` rules).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// TLS-carrying protocols (HTTPS, TLS).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// Protocols proxied as TCP streams.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Redis
                | Protocol::Mysql
        )
    }
}

// =============================================================================================
// Shared validation helpers
// =============================================================================================

fn warn_at(v: &mut Validator, field: &str, message: impl Into<String>) {
    let m = message.into();
    v.at(field, |v| v.warn(m));
}

fn is_set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// "a, b or c".
fn or_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A proto oneof: reports (at the second field set) when more than one is set.
fn oneof(v: &mut Validator, fields: &[(&str, bool)]) -> usize {
    let set: Vec<&str> = fields.iter().filter(|f| f.1).map(|f| f.0).collect();
    if set.len() > 1 {
        let all: Vec<&str> = fields.iter().map(|f| f.0).collect();
        v.error_at(
            set[1],
            format!(
                "only one of {} may be set, found {}",
                or_list(&all),
                set.join(" and ")
            ),
        );
    }
    set.len()
}

/// Istio's `ValidateDuration`: at least 1ms, whole milliseconds.
fn duration_ms(v: &mut Validator, field: &str, d: &Option<Duration>) {
    let Some(d) = d else { return };
    let std = d.as_std();
    if std < StdDuration::from_millis(1) {
        v.duration_min_1ms(field, &Some(d.clone()));
        return;
    }
    if std.subsec_nanos() % 1_000_000 != 0 {
        v.error_at(
            field,
            format!(
                "duration {d} is finer than a millisecond: Istio supports millisecond precision"
            ),
        );
    }
}

/// A non-negative proto int32 count.
fn non_negative(v: &mut Validator, field: &str, n: Option<i32>) {
    if let Some(n) = n.filter(|n| *n < 0) {
        v.error_at(field, format!("{field} is {n}: expected a value >= 0"));
    }
}

/// A 0-100 proto int32 percentage.
fn percent_i32(v: &mut Validator, field: &str, n: Option<i32>) {
    if let Some(n) = n.filter(|n| !(0..=100).contains(n)) {
        v.error_at(
            field,
            format!("{field} is {n}: expected a percentage 0-100"),
        );
    }
}

fn optional_port(v: &mut Validator, field: &str, port: Option<u32>) {
    if let Some(p) = port {
        v.port(field, p);
    }
}

impl Validate for Percent {
    fn validate(&self, v: &mut Validator) {
        let p = self.value;
        if !(0.0..=100.0).contains(&p) || (p > 0.0 && p < 0.0001) {
            v.error_at(
                "value",
                format!("percentage {p} is out of range: expected 0 or 0.0001-100"),
            );
        }
    }
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Istio's `ValidateIPSubnet`: an IP or a CIDR block.
fn check_ip_or_cidr(s: &str) -> Result<(), String> {
    if s.contains('/') {
        s.parse::<IpNet>().map(|_| ()).map_err(|_| {
            format!("{s:?} is not a valid CIDR block: expected e.g. 10.0.0.0/8 or 2001:db8::/32")
        })
    } else if is_ip(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid IP address or CIDR block: expected e.g. 10.1.2.3 or 10.0.0.0/8"
        ))
    }
}

/// A fully qualified (or short) host name without wildcards.
fn check_fqdn(s: &str) -> Result<(), String> {
    if s.contains('*') {
        return Err(format!(
            "{s:?} is not a domain name: wildcards are not allowed here"
        ));
    }
    check_host(s)
}

/// Istio's relaxed DNS-1123 label (`labels.IsDNS1123Label` allows upper case).
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn check_port_name(name: &str) -> Result<(), String> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid port name {name:?}: expected at most 63 letters, digits and '-', starting and ending alphanumerically"
        ))
    }
}

fn check_protocol(name: &str) -> Result<Protocol, String> {
    Protocol::parse(name)
        .ok_or_else(|| format!("invalid protocol {name:?}: expected one of {PROTOCOLS}"))
}

/// The part after `unix://`: an absolute path or an abstract socket (`@name`).
fn check_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        Err(
            "unix domain socket path must not be empty: expected unix:///path or unix://@name"
                .into(),
        )
    } else if addr.starts_with('@') {
        Ok(())
    } else if !addr.starts_with('/') {
        Err(format!(
            "unix domain socket {addr:?} must be an absolute path (unix:///path) or abstract (unix://@name)"
        ))
    } else if addr.ends_with('/') {
        Err(format!(
            "unix domain socket {addr:?} must not be a directory"
        ))
    } else {
        Ok(())
    }
}

/// Istio's `host.Name.Matches`: the two hosts (possibly wildcards) overlap.
pub fn host_matches(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => {
            if sa.len() < sb.len() {
                sb.ends_with(sa)
            } else {
                sa.ends_with(sb)
            }
        }
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Istio's `host.Name.SubsetOf`: every name `a` matches is matched by `b`.
pub fn host_subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (Some(_), None) => false,
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HostScope {
    Gateway,
    Sidecar,
}

/// `namespace/dnsName` hosts of Gateway servers and Sidecar egress listeners.
fn validate_namespaced_host(v: &mut Validator, host: &str, scope: HostScope) {
    let (ns, name) = match host.split_once('/') {
        Some(parts) => parts,
        None if scope == HostScope::Gateway => {
            if is_ip(host) {
                return;
            }
            if let Err(e) = check_host(host) {
                v.error(format!("{e}: expected [namespace/]dnsName, e.g. \"*\", \"example.com\" or \"prod/*.example.com\""));
            } else {
                check_listener_host_part(v, host);
            }
            return;
        }
        None => {
            v.error(format!(
                "invalid host {host:?}: expected namespace/dnsName, e.g. \"*/*\", \"./reviews.default.svc.cluster.local\" or \"istio-system/*\""
            ));
            return;
        }
    };
    if ns.is_empty() || name.is_empty() {
        v.error(format!(
            "invalid host {host:?}: namespace and dnsName must both be non-empty"
        ));
        return;
    }
    let ns_ok = match ns {
        "*" | "." => true,
        "~" => scope == HostScope::Sidecar,
        _ => is_dns_label(ns),
    };
    if !ns_ok {
        let allowed = if scope == HostScope::Sidecar {
            "\"*\", \".\", \"~\" or a namespace name"
        } else {
            "\"*\", \".\" or a namespace name"
        };
        v.error(format!(
            "invalid namespace {ns:?} in host {host:?}: expected {allowed}"
        ));
    }
    if scope == HostScope::Gateway && is_ip(name) {
        return;
    }
    if let Err(e) = check_host(name) {
        v.error(e);
    } else {
        check_listener_host_part(v, name);
    }
}

/// Istio's `validateSidecarOrGatewayHostnamePart` beyond the DNS syntax: the dnsName of a
/// Gateway server or Sidecar egress host is a fully qualified name (or an IP for Gateways),
/// `*`, or `*.suffix`; short names and partial wildcards like `*bar.com` are rejected.
fn check_listener_host_part(v: &mut Validator, name: &str) {
    if name != "*" && !name.contains('.') {
        v.error(format!(
            "invalid host {name:?}: short names (non FQDN) are not allowed here: expected a fully qualified name such as \"{name}.default.svc.cluster.local\", \"*.example.com\" or \"*\""
        ));
    } else if name.contains('*') && name != "*" && !name.starts_with("*.") {
        v.error(format!(
            "invalid host {name:?}: partial wildcard not allowed: expected \"*\" or a wildcard label such as \"*.example.com\""
        ));
    }
}

/// A gateway reference in `gateways`: `mesh`, `name` or `namespace/name`.
fn validate_gateway_name(v: &mut Validator, name: &str) {
    match name.split_once('/') {
        None => {
            if let Err(e) = check_fqdn(name) {
                v.error(format!(
                    "invalid gateway {name:?} ({e}): expected \"mesh\", a gateway name or namespace/name"
                ));
            } else if let Some((gw, rest)) = name.split_once('.') {
                let ns = rest.split('.').next().unwrap_or("");
                v.warn(format!(
                    "gateway {name:?} uses the legacy name.namespace form: prefer \"{ns}/{gw}\""
                ));
            }
        }
        Some((ns, gw)) => {
            if ns.is_empty() || gw.is_empty() {
                v.error(format!(
                    "invalid gateway {name:?}: namespace and name must both be non-empty"
                ));
                return;
            }
            if !is_dns_label(ns) {
                v.error(format!(
                    "invalid namespace {ns:?} in gateway {name:?}: expected a namespace name"
                ));
            }
            if !is_dns_label(gw) {
                v.error(format!(
                    "invalid gateway name {gw:?} in {name:?}: expected a DNS-1123 label"
                ));
            }
        }
    }
}

fn validate_gateway_names(v: &mut Validator, field: &str, names: &[String]) {
    v.each(field, names, |v, g| validate_gateway_name(v, g));
}

/// `sourceNamespace` of a match.
fn validate_source_namespace(v: &mut Validator, ns: &Option<String>) {
    if let Some(ns) = ns.as_deref().filter(|ns| !ns.is_empty()) {
        if !is_dns_label(ns) {
            v.error_at(
                "sourceNamespace",
                format!("invalid sourceNamespace {ns:?}: expected a namespace name"),
            );
        }
    }
}

/// HTTP header names are RFC 7230 tokens.
fn is_header_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("header name must not be empty".into())
    } else if !is_header_token(name) {
        Err(format!(
            "invalid header name {name:?}: expected letters, digits and !#$%&'*+-.^_`|~"
        ))
    } else {
        Ok(())
    }
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Istio's `ValidateHTTPHeaderWithAuthorityOperationName` (`allow_authority`) and
/// `ValidateHTTPHeaderOperationName`.
fn check_header_operation_name(name: &str, allow_authority: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name must not be empty".into());
    }
    if allow_authority && is_authority_header(name) {
        return Ok(());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: the Host header cannot be changed here; use rewrite.authority on requests"));
    }
    if name.starts_with(':') {
        return Err(format!(
            "invalid header {name:?}: pseudo-headers (\":\" prefix) cannot be changed"
        ));
    }
    check_header_name(name)
}

/// `exportTo`, with Istio's kind-specific rules on top of the shared check.
fn validate_export_to(
    v: &mut Validator,
    export_to: &[String],
    service_entry: bool,
    dr_with_selector: bool,
) {
    v.export_to("exportTo", export_to);
    let ns = v.namespace.clone();
    v.at("exportTo", |v| {
        for (i, e) in export_to.iter().enumerate() {
            if e == "~" && !service_entry {
                v.at_index(i, |v| {
                    v.error("exportTo \"~\" (visible to no one) is only allowed on ServiceEntry: expected \".\", \"*\" or namespace names")
                });
            }
            if !ns.is_empty() && *e == ns && export_to.iter().any(|x| x == ".") {
                v.at_index(i, |v| {
                    v.error(format!(
                        "duplicate exportTo entry: \".\" already means the current namespace {ns:?}"
                    ))
                });
            }
        }
        if dr_with_selector
            && !export_to.is_empty()
            && !export_to.iter().all(|e| e == "." || *e == ns)
        {
            v.error("a DestinationRule with workloadSelector applies only in its own namespace: expected exportTo [\".\"] or none");
        }
    });
}

impl Validate for StringMatch {
    fn validate(&self, v: &mut Validator) {
        self.check(v, false);
    }
}

impl StringMatch {
    /// Checks the oneof and the regex; `allow_empty_prefix` for `uri` (prefix "" matches all).
    fn check(&self, v: &mut Validator, allow_empty_prefix: bool) {
        oneof(
            v,
            &[
                ("exact", self.exact.is_some()),
                ("prefix", self.prefix.is_some()),
                ("regex", self.regex.is_some()),
            ],
        );
        if !allow_empty_prefix && self.prefix.as_deref() == Some("") {
            v.error_at(
                "prefix",
                "prefix match must not be empty: omit the match to match everything",
            );
        }
        if let Some(re) = &self.regex {
            if re.is_empty() {
                v.error_at("regex", "regex match must not be empty");
            } else {
                v.regex("regex", re);
            }
        }
    }

    /// True when any of the forms is set.
    pub fn is_set(&self) -> bool {
        self.exact.is_some() || self.prefix.is_some() || self.regex.is_some()
    }
}

impl Validate for Destination {
    fn validate(&self, v: &mut Validator) {
        if self.host.is_empty() {
            v.error_at(
                "host",
                "destination host is required: expected a service host such as reviews or reviews.prod.svc.cluster.local",
            );
        } else if self.host == "*" {
            v.error_at(
                "host",
                "destination host cannot be \"*\": expected a service host",
            );
        } else if let Err(e) = check_host(&self.host) {
            v.error_at("host", e);
        }
        if let Some(subset) = &self.subset {
            if subset.is_empty() {
                v.error_at(
                    "subset",
                    "subset name must not be empty: omit subset to use all endpoints",
                );
            } else if !is_dns_label(subset) {
                v.error_at(
                    "subset",
                    format!("invalid subset name {subset:?}: expected a DNS-1123 label"),
                );
            }
        }
        if let Some(p) = &self.port {
            v.port("port.number", p.number);
        }
    }
}

// =============================================================================================
// Gateway
// =============================================================================================

/// Gateway spec: listeners (servers) for the gateway proxies selected by labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// The servers (listeners). At least one is required.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub servers: Vec<Server>,
    /// Labels of the gateway workloads this applies to.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub selector: BTreeMap<String, String>,
}

/// One listener of a Gateway: a port, the hosts it serves and its TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// Port to listen on. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// IP or `unix://` socket to bind to (default: all addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// `[namespace/]dnsName` hosts exposed; VirtualServices bind to these. Required.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hosts: Vec<String>,
    /// TLS settings: termination, passthrough or an HTTP-to-HTTPS redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTLSSettings>,
    /// Not implemented by Istio (hidden from its docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// Optional server name, unique across servers (used in stats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A Gateway server port: number, protocol and name are all required.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port number (0 only with a unix socket bind).
    #[serde(default)]
    pub number: u32,
    /// HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS, ... (case-insensitive).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Port name, unique across the Gateway's servers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Deprecated; has no effect on gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

impl Port {
    /// The parsed protocol, `None` when Istio does not know it.
    pub fn protocol_kind(&self) -> Option<Protocol> {
        Protocol::parse(&self.protocol)
    }
}

/// TLS settings of a Gateway server or Sidecar ingress listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTLSSettings {
    /// Send 301 redirects to https for plain HTTP requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// TLS mode; PASSTHROUGH when unset (see [`ServerTLSSettings::mode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTLSMode>,
    /// Server certificate file (SIMPLE/MUTUAL without credentialName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Private key file (SIMPLE/MUTUAL without credentialName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle file for verifying client certificates (MUTUAL/OPTIONAL_MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Certificate revocation list file for client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    /// Kubernetes secret holding the certificate, key and optionally the CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Up to two secrets (e.g. RSA and ECDSA); exclusive with credentialName and tlsCertificates.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub credential_names: Vec<String>,
    /// Up to two certificate/key file pairs; exclusive with the credential fields.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tls_certificates: Vec<TLSCertificate>,
    /// Secret or ConfigMap holding the CA certificates for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_credential_name: Option<String>,
    /// Allowed subject alternative names of client certificates.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subject_alt_names: Vec<String>,
    /// Allowed base64 SHA-256 SPKI hashes of client certificates.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub verify_certificate_spki: Vec<String>,
    /// Allowed hex SHA-256 hashes of client certificates.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub verify_certificate_hash: Vec<String>,
    /// Minimum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TLSProtocol>,
    /// Maximum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TLSProtocol>,
    /// Allowed cipher suites (Envoy/BoringSSL names); Envoy's defaults when empty.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cipher_suites: Vec<String>,
}

impl ServerTLSSettings {
    /// The TLS mode in effect: PASSTHROUGH when unset (the proto default).
    pub fn mode(&self) -> ServerTLSMode {
        self.mode.unwrap_or_default()
    }

    /// True when certificates come from secrets rather than files.
    pub fn uses_credentials(&self) -> bool {
        is_set(&self.credential_name) || !self.credential_names.is_empty()
    }
}

/// A certificate/key file pair of `tlsCertificates`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TLSCertificate {
    /// Server certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle file for client verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

impl Validate for Gateway {
    fn validate(&self, v: &mut Validator) {
        v.labels("selector", &self.selector);
        if self.servers.is_empty() {
            v.error_at(
                "servers",
                "a Gateway needs at least one server: expected servers with port, hosts and (for HTTPS/TLS) tls",
            );
        }
        v.each("servers", &self.servers, |v, s| s.validate(v));
        let mut port_names: HashMap<&str, usize> = HashMap::new();
        let mut server_names: HashMap<&str, usize> = HashMap::new();
        v.at("servers", |v| {
            for (i, s) in self.servers.iter().enumerate() {
                if let Some(p) = s.port.as_ref().filter(|p| !p.name.is_empty()) {
                    match port_names.get(p.name.as_str()) {
                        Some(first) => v.at_index(i, |v| {
                            v.error_at(
                                "port.name",
                                format!(
                                    "duplicate port name {:?} (also servers[{first}]): port names must be unique across a Gateway's servers",
                                    p.name
                                ),
                            )
                        }),
                        None => {
                            port_names.insert(&p.name, i);
                        }
                    }
                }
                if let Some(name) = s.name.as_deref().filter(|n| !n.is_empty()) {
                    match server_names.get(name) {
                        Some(first) => v.at_index(i, |v| {
                            warn_at(
                                v,
                                "name",
                                format!("duplicate server name {name:?} (also servers[{first}]): server names should be unique"),
                            )
                        }),
                        None => {
                            server_names.insert(name, i);
                        }
                    }
                }
            }
        });
    }
}

impl Validate for Server {
    fn validate(&self, v: &mut Validator) {
        let bind = self.bind.as_deref().unwrap_or("");
        if self.hosts.is_empty() {
            v.error_at(
                "hosts",
                "a server needs at least one host: expected entries like \"*\", \"example.com\" or \"prod/*.example.com\"",
            );
        }
        v.each("hosts", &self.hosts, |v, h| {
            validate_namespaced_host(v, h, HostScope::Gateway)
        });
        let protocol = match &self.port {
            None => {
                v.error_at(
                    "port",
                    "port is required: expected {number, name, protocol}",
                );
                None
            }
            Some(p) => v.at("port", |v| p.validate_server_port(v, bind)),
        };
        if let Some(path) = bind.strip_prefix("unix://") {
            if let Err(e) = check_unix_address(path) {
                v.error_at("bind", e);
            }
            if let Some(p) = self.port.as_ref().filter(|p| p.number != 0) {
                v.error_at(
                    "port.number",
                    format!(
                        "port number must be 0 with a unix domain socket bind, found {}",
                        p.number
                    ),
                );
            }
        } else if !bind.is_empty() && !is_ip(bind) {
            v.error_at(
                "bind",
                format!("invalid bind address {bind:?}: expected an IP address or unix:///path"),
            );
        }
        if let Some(tls) = &self.tls {
            v.at("tls", |v| validate_server_tls(v, tls));
        }
        let Some(protocol) = protocol else { return };
        let name = self
            .port
            .as_ref()
            .map(|p| p.protocol.as_str())
            .unwrap_or("");
        match &self.tls {
            None if protocol.is_tls() => v.error_at(
                "tls",
                format!(
                    "{name} servers need tls settings: expected tls.mode (SIMPLE, MUTUAL, PASSTHROUGH, ...) and, to terminate TLS, credentialName"
                ),
            ),
            Some(tls) if !protocol.is_tls() => {
                if protocol.is_http() {
                    let passthrough = matches!(
                        tls.mode(),
                        ServerTLSMode::Passthrough | ServerTLSMode::AutoPassthrough
                    );
                    if !passthrough
                        || is_set(&tls.ca_certificates)
                        || is_set(&tls.private_key)
                        || is_set(&tls.server_certificate)
                    {
                        v.error_at(
                            "tls",
                            format!("a plain-text {name} server cannot terminate TLS: only tls.httpsRedirect is allowed here; use protocol HTTPS to serve TLS"),
                        );
                    }
                } else {
                    v.error_at(
                        "tls",
                        format!("a {name} server cannot have TLS settings: tls applies to HTTPS and TLS servers"),
                    );
                }
            }
            _ => {}
        }
        if !protocol.is_http() && self.tls.as_ref().and_then(|t| t.https_redirect) == Some(true) {
            warn_at(
                v,
                "tls.httpsRedirect",
                "httpsRedirect only has an effect on HTTP servers",
            );
        }
    }
}

impl Port {
    /// Istio's `validateServerPort`; returns the protocol when it parses.
    fn validate_server_port(&self, v: &mut Validator, bind: &str) -> Option<Protocol> {
        let protocol = if self.protocol.is_empty() {
            v.error_at(
                "protocol",
                format!("port protocol is required: expected one of {PROTOCOLS}"),
            );
            None
        } else {
            match check_protocol(&self.protocol) {
                Ok(p) => Some(p),
                Err(e) => {
                    v.error_at("protocol", e);
                    None
                }
            }
        };
        if self.number > 0 || !bind.starts_with("unix://") {
            v.port("number", self.number);
        }
        if self.target_port.is_some_and(|p| p > 0) {
            v.error_at("targetPort", "targetPort has no impact on Gateways: remove it (the server listens on port.number)");
        }
        if self.name.is_empty() {
            v.error_at(
                "name",
                "port name is required: expected e.g. http, https-443",
            );
        }
        protocol
    }
}

/// Cipher suites Envoy (BoringSSL) accepts.
const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "PSK-AES128-CBC-SHA",
    "AES256-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Istio's `validateTLSOptions` for server-side TLS, plus the CRD's CEL rules.
fn validate_server_tls(v: &mut Validator, tls: &ServerTLSSettings) {
    let cred = is_set(&tls.credential_name);
    let creds = !tls.credential_names.is_empty();
    let certs = !tls.tls_certificates.is_empty();
    // Istio's oneof: the certificate source is a secret, secrets, files or file pairs.
    // (A privateKey or caCertificates beside credentialName is tolerated, as in Istio.)
    oneof(
        v,
        &[
            ("credentialName", cred),
            ("credentialNames", creds),
            (
                "serverCertificate",
                is_set(&tls.server_certificate) && (cred || creds),
            ),
            ("tlsCertificates", certs),
        ],
    );
    if tls.credential_names.len() > 2 {
        v.error_at(
            "credentialNames",
            format!(
                "at most 2 credentialNames (e.g. one RSA and one ECDSA), found {}",
                tls.credential_names.len()
            ),
        );
    }
    let mode = tls.mode();
    if tls.tls_certificates.len() > 2 {
        // Istio warns (Envoy serves one RSA and one ECDSA certificate at most).
        warn_at(
            v,
            "tlsCertificates",
            format!(
                "{mode} TLS can support up to 2 server certificates (e.g. one RSA and one ECDSA), found {}: the rest are ignored",
                tls.tls_certificates.len()
            ),
        );
    }
    if matches!(
        tls.min_protocol_version,
        Some(TLSProtocol::TlsV1_0 | TLSProtocol::TlsV1_1)
    ) && tls.cipher_suites.is_empty()
    {
        warn_at(
            v,
            "minProtocolVersion",
            "TLS versions below TLSV1_2 need compatible cipherSuites set: the default ciphers no longer include any",
        );
    }
    if certs && (is_set(&tls.server_certificate) || is_set(&tls.private_key)) {
        v.error_at(
            "tlsCertificates",
            "tlsCertificates cannot be combined with serverCertificate/privateKey: use one form",
        );
    }
    match mode {
        ServerTLSMode::IstioMutual => {
            for (field, set) in [
                ("serverCertificate", is_set(&tls.server_certificate)),
                ("privateKey", is_set(&tls.private_key)),
                ("caCertificates", is_set(&tls.ca_certificates)),
                ("credentialName", cred),
                ("credentialNames", creds),
                ("tlsCertificates", certs),
            ] {
                if set {
                    v.error_at(
                        field,
                        format!("ISTIO_MUTUAL uses Istio's workload certificates: {field} must not be set"),
                    );
                }
            }
        }
        ServerTLSMode::Simple | ServerTLSMode::Mutual | ServerTLSMode::OptionalMutual => {
            let mutual = mode != ServerTLSMode::Simple;
            if !(cred || creds) {
                if certs {
                    v.each("tlsCertificates", &tls.tls_certificates, |v, c| {
                        if !is_set(&c.server_certificate) {
                            v.error_at(
                                "serverCertificate",
                                format!("{mode} TLS requires serverCertificate in each tlsCertificates entry"),
                            );
                        }
                        if !is_set(&c.private_key) {
                            v.error_at(
                                "privateKey",
                                format!("{mode} TLS requires privateKey in each tlsCertificates entry"),
                            );
                        }
                    });
                } else {
                    if !is_set(&tls.server_certificate) {
                        v.error_at(
                            "serverCertificate",
                            format!("{mode} TLS requires a server certificate: expected credentialName (a Kubernetes secret) or serverCertificate and privateKey"),
                        );
                    }
                    if !is_set(&tls.private_key) {
                        v.error_at(
                            "privateKey",
                            format!("{mode} TLS requires a private key: expected credentialName (a Kubernetes secret) or serverCertificate and privateKey"),
                        );
                    }
                }
                let ca_everywhere = certs
                    && tls
                        .tls_certificates
                        .iter()
                        .all(|c| is_set(&c.ca_certificates));
                if mutual
                    && !is_set(&tls.ca_certificates)
                    && !is_set(&tls.ca_cert_credential_name)
                    && !ca_everywhere
                {
                    v.error_at(
                        "caCertificates",
                        format!("{mode} TLS requires a CA bundle to verify clients: expected caCertificates, caCertCredentialName or credentialName"),
                    );
                }
            }
        }
        ServerTLSMode::Passthrough | ServerTLSMode::AutoPassthrough => {
            let certs_set = [
                &tls.ca_crl,
                &tls.server_certificate,
                &tls.private_key,
                &tls.ca_certificates,
                &tls.credential_name,
            ]
            .into_iter()
            .any(is_set);
            if certs_set {
                v.warn(format!(
                    "{mode} mode does not use certificates: serverCertificate, privateKey, caCertificates, caCrl and credentialName are ignored"
                ));
            }
        }
    }
    if mode == ServerTLSMode::Simple && is_set(&tls.ca_crl) && !cred && !creds {
        v.error_at(
            "caCrl",
            "CRL is not supported with SIMPLE TLS: a CRL applies to client certificates (MUTUAL or OPTIONAL_MUTUAL)",
        );
    }
    if let (Some(min), Some(max)) = (tls.min_protocol_version, tls.max_protocol_version) {
        if min != TLSProtocol::TlsAuto && max != TLSProtocol::TlsAuto && min > max {
            v.error_at(
                "minProtocolVersion",
                format!("minProtocolVersion {min} is greater than maxProtocolVersion {max}"),
            );
        }
    }
    let mut seen = HashSet::new();
    v.at("cipherSuites", |v| {
        for (i, c) in tls.cipher_suites.iter().enumerate() {
            // Istio's IsValidCipherSuite: "ALL", and entries not starting with a letter or
            // digit (BoringSSL operators and groups: "-X", "!X", "[A|B]"), pass as written.
            let known = c.is_empty()
                || c == "ALL"
                || !c.starts_with(|ch: char| ch.is_alphanumeric())
                || CIPHER_SUITES.contains(&c.as_str());
            if !seen.insert(c.as_str()) {
                v.at_index(i, |v| v.warn(format!("duplicate cipher suite {c:?}")));
            } else if !known {
                v.at_index(i, |v| {
                    v.warn(format!(
                        "unsupported cipher suite {c:?}: Envoy will ignore it"
                    ))
                });
            }
        }
    });
}

// =============================================================================================
// VirtualService
// =============================================================================================

/// VirtualService spec: routing rules for traffic addressed to a set of hosts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// Hosts the rules apply to; empty only for a delegate VirtualService.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hosts: Vec<String>,
    /// Gateways (`[namespace/]name`, `mesh` for sidecars) applying the rules; `mesh` when empty.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gateways: Vec<String>,
    /// HTTP rules, first match wins.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub http: Vec<HTTPRoute>,
    /// Rules for unterminated TLS (routed on SNI).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tls: Vec<TLSRoute>,
    /// Rules for opaque TCP.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tcp: Vec<TCPRoute>,
    /// Namespaces that can see this VirtualService (all when empty).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub export_to: Vec<String>,
}

impl VirtualService {
    /// A delegate VirtualService has no hosts; root VirtualServices point at it.
    pub fn is_delegate(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The gateways the rules apply to: `["mesh"]` when none are listed.
    pub fn gateways_or_mesh(&self) -> Vec<&str> {
        if self.gateways.is_empty() {
            vec!["mesh"]
        } else {
            self.gateways.iter().map(String::as_str).collect()
        }
    }
}

/// One HTTP rule: match conditions and one of route, redirect, directResponse or delegate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRoute {
    /// Rule name (in logs and stats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, ORed; the rule matches everything when empty.
    #[serde(
        rename = "match",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub matches: Vec<HTTPMatchRequest>,
    /// Weighted destinations.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub route: Vec<HTTPRouteDestination>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HTTPRedirect>,
    /// Answer directly with a fixed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HTTPDirectResponse>,
    /// Hand routing to another (delegate) VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// Rewrite the path or authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HTTPRewrite>,
    /// Request timeout; unset means none (Istio's default: disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retry policy; unset means the mesh default (see [`HTTPRoute::retry_policy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HTTPRetry>,
    /// Fault injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HTTPFaultInjection>,
    /// Mirror traffic to this destination (exclusive with `mirrors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Mirror traffic to several destinations.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mirrors: Vec<HTTPMirrorPolicy>,
    /// Deprecated integer mirror percentage (also read as `mirror_percent`).
    #[serde(
        default,
        alias = "mirror_percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percent: Option<u32>,
    /// Share of traffic `mirror` receives (100 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// CORS policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

impl HTTPRoute {
    /// The retry policy in effect: `retries` as written, or Istio's mesh default
    /// ([`HTTPRetry::mesh_default`]: 2 attempts) when unset.
    pub fn retry_policy(&self) -> HTTPRetry {
        self.retries.clone().unwrap_or_else(HTTPRetry::mesh_default)
    }

    /// Relative weight of each `route` destination as Istio applies it (see [`relative_weights`]).
    pub fn route_weights(&self) -> Vec<u32> {
        relative_weights(self.route.iter().map(|d| d.weight))
    }

    /// True when the rule has no condition (or an empty one), so it matches every request.
    pub fn matches_everything(&self) -> bool {
        self.matches.is_empty()
            || self.matches.iter().any(|m| {
                HTTPMatchRequest {
                    name: None,
                    ..m.clone()
                } == HTTPMatchRequest::default()
            })
    }
}

/// Relative weights as Istio applies them: unset counts as 0 (negative too), and a lone
/// destination gets all traffic (100) whatever its weight says.
pub fn relative_weights(weights: impl ExactSizeIterator<Item = Option<i32>>) -> Vec<u32> {
    if weights.len() == 1 {
        return vec![100];
    }
    weights
        .map(|w| u32::try_from(w.unwrap_or(0)).unwrap_or(0))
        .collect()
}

/// Names the VirtualService an HTTP rule delegates to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// Delegate VirtualService name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its namespace (the root's when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Request and response header manipulation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Applied before forwarding the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Applied before returning the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Set, add and remove header operations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite these headers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub set: BTreeMap<String, String>,
    /// Append these headers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub remove: Vec<String>,
}

/// A TLS (SNI) rule: match conditions and weighted destinations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TLSRoute {
    /// Conditions, ORed. Required, each with sniHosts.
    #[serde(
        rename = "match",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub matches: Vec<TLSMatchAttributes>,
    /// Weighted destinations.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub route: Vec<RouteDestination>,
}

impl TLSRoute {
    /// Relative weight of each destination (see [`relative_weights`]).
    pub fn route_weights(&self) -> Vec<u32> {
        relative_weights(self.route.iter().map(|d| d.weight))
    }
}

/// A TCP rule: match conditions and weighted destinations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TCPRoute {
    /// Conditions, ORed; matches everything when empty.
    #[serde(
        rename = "match",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub route: Vec<RouteDestination>,
}

impl TCPRoute {
    /// Relative weight of each destination (see [`relative_weights`]).
    pub fn route_weights(&self) -> Vec<u32> {
        relative_weights(self.route.iter().map(|d| d.weight))
    }
}

/// Conditions on an HTTP request; all set fields must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPMatchRequest {
    /// Match name (prefixed to the route name in logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path match (an empty prefix matches all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// Scheme match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// Method match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Authority (Host) match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header matches by lowercase name (or `@request.auth.claims.*`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub headers: BTreeMap<String, StringMatch>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels of the calling workload.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies on (overrides the VirtualService's).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gateways: Vec<String>,
    /// Query parameter matches (exact or regex).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Match the uri case-insensitively (exact and prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    /// Headers that must not match.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Namespace of the calling workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Stats prefix for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

/// A weighted HTTP destination with optional header manipulation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRouteDestination {
    /// Where to send the request. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Relative weight (see [`relative_weights`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Header manipulation for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A weighted TCP/TLS destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to send the connection. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Relative weight (see [`relative_weights`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// Conditions on a TCP connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDRs.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Source IP or CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<String>,
    /// Labels of the calling workload.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies on.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// Conditions on a TLS connection; `sniHosts` is required.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TLSMatchAttributes {
    /// SNI values to match (each within the VirtualService's hosts).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDRs.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels of the calling workload.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies on.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// A redirect response; `port` and `derivePort` form a oneof.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRedirect {
    /// Replace the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replace the authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replace the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Derive the port from the scheme or the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    /// Replace the scheme (`http` or `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Status code; 301 when unset (see [`HTTPRedirect::code`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
}

impl HTTPRedirect {
    /// Status codes Envoy can send for a redirect.
    pub const SUPPORTED_CODES: &'static [u32] = &[301, 302, 303, 307, 308];

    /// The status code in effect: 301 (Moved Permanently) when unset or 0.
    pub fn code(&self) -> u32 {
        self.redirect_code.filter(|c| *c != 0).unwrap_or(301)
    }
}

/// A fixed response sent without forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPDirectResponse {
    /// HTTP status. Required.
    #[serde(default)]
    pub status: u32,
    /// Response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HTTPBody>,
}

/// A response body; a oneof: text `string` or base64 `bytes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPBody {
    /// Body text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// Body bytes, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// Path/authority rewrite; `uri` and `uriRegexRewrite` are exclusive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRewrite {
    /// Replace the path, or the matched prefix of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replace the authority (Host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Rewrite the path with a regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regex rewrite: RE2 `match` and its replacement (`\1` for groups).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 pattern (JSON `match`).
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
}

/// Retry policy of an HTTP rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRetry {
    /// Retries allowed; 0 disables retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Timeout of each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated Envoy retry conditions and status codes (see [`HTTPRetry::retry_on`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Retry to other localities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    /// Avoid hosts already tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Minimum interval between retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

impl HTTPRetry {
    /// Attempts of Istio's mesh default policy.
    pub const DEFAULT_ATTEMPTS: i32 = 2;
    /// `retryOn` of Istio's mesh default policy (also used when `retryOn` is unset).
    pub const DEFAULT_RETRY_ON: &'static str =
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

    /// Istio's default retry policy for routes without `retries`: 2 attempts on
    /// connect-failure, refused-stream, unavailable, cancelled and retriable status codes (503).
    pub fn mesh_default() -> HTTPRetry {
        HTTPRetry {
            attempts: Some(Self::DEFAULT_ATTEMPTS),
            retry_on: Some(Self::DEFAULT_RETRY_ON.to_string()),
            ..HTTPRetry::default()
        }
    }

    /// Attempts in effect: as written, 0 (retries disabled) when unset.
    pub fn attempts(&self) -> i32 {
        self.attempts.unwrap_or(0)
    }

    /// Retry conditions in effect: as written, Istio's default when unset or empty.
    pub fn retry_on(&self) -> &str {
        self.retry_on
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(Self::DEFAULT_RETRY_ON)
    }
}

/// Cross-origin resource sharing policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Deprecated exact origins; use `allowOrigins`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_origin: Vec<String>,
    /// Allowed origins.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_origins: Vec<StringMatch>,
    /// Allowed methods.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_headers: Vec<String>,
    /// Headers browsers may read.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub expose_headers: Vec<String>,
    /// How long preflight results may be cached (whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Whether credentials are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Handling of preflights from origins not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// Fault injection: a delay and/or an abort.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPFaultInjection {
    /// Delay before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// Abort with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
}

/// Injected delay; a oneof of `fixedDelay` and (unsupported) `exponentialDelay`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delay {
    /// Fixed delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<Duration>,
    /// Exponential delay (not implemented by Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<Duration>,
    /// Share of requests delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage; use `percentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

/// Injected abort; a oneof of `httpStatus`, `grpcStatus` and `http2Error`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Abort {
    /// HTTP status to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// gRPC status name to return (e.g. UNAVAILABLE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// HTTP/2 error (not implemented by Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    /// Share of requests aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// One mirror destination and the share of traffic it receives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPMirrorPolicy {
    /// Mirror target. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Share mirrored (100 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// gRPC status names accepted by `abort.grpcStatus`.
const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Envoy retry conditions accepted in `retryOn` (besides HTTP status codes).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl Validate for VirtualService {
    fn validate(&self, v: &mut Validator) {
        let delegate = self.is_delegate();
        if delegate {
            if !self.gateways.is_empty() {
                v.error_at("gateways", "a VirtualService without hosts is a delegate and cannot set gateways: add hosts, or reference it from a root VirtualService's http[].delegate");
            }
            if !self.tls.is_empty() {
                v.error_at("tls", "a delegate VirtualService (no hosts) cannot have tls routes: delegation supports http routes only");
            }
            if !self.tcp.is_empty() {
                v.error_at("tcp", "a delegate VirtualService (no hosts) cannot have tcp routes: delegation supports http routes only");
            }
        }
        let applies_to_mesh = self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh");
        // Istio: hosts of a gateway-only VirtualService with SNI matches may be
        // auto-generated SNI names (outbound_.PORT_._.HOST).
        let sni_names = !applies_to_mesh
            && self
                .tls
                .iter()
                .any(|r| r.matches.iter().any(|m| !m.sni_hosts.is_empty()));
        let mut all_valid = true;
        v.at("hosts", |v| {
            for (i, h) in self.hosts.iter().enumerate() {
                v.at_index(i, |v| {
                    let checked = if sni_names && h.starts_with("outbound_") {
                        check_outbound_sni(h)
                    } else {
                        check_host(h)
                    };
                    if let Err(e) = checked {
                        if !is_ip(h) {
                            v.error(format!("{e}: expected a service host, a wildcard like *.example.com, or an IP"));
                            all_valid = false;
                        }
                    } else if applies_to_mesh && h == "*" {
                        v.error("host \"*\" is not allowed for a VirtualService bound to the mesh: list the hosts, or bind it to gateways only");
                        all_valid = false;
                    }
                });
            }
            if all_valid {
                for (j, hj) in self.hosts.iter().enumerate() {
                    if let Some((i, hi)) = self.hosts[..j]
                        .iter()
                        .enumerate()
                        .find(|(_, hi)| host_matches(hi, hj))
                    {
                        v.at_index(j, |v| {
                            v.error(format!("duplicate host {hj:?}: overlaps hosts[{i}] {hi:?}"))
                        });
                    }
                }
            }
        });
        validate_gateway_names(v, "gateways", &self.gateways);
        if self.http.is_empty() && self.tls.is_empty() && self.tcp.is_empty() {
            v.error("a VirtualService needs at least one of http, tls or tcp routes");
        }
        v.each("http", &self.http, |v, r| {
            validate_http_route(v, r, delegate)
        });
        if applies_to_mesh {
            // Istio: JWT claims exist only where a gateway validated the token.
            v.each("http", &self.http, |v, r| {
                v.each("match", &r.matches, |v, m| {
                    for (field, map) in [
                        ("headers", &m.headers),
                        ("withoutHeaders", &m.without_headers),
                    ] {
                        v.at(field, |v| {
                            for key in map.keys().filter(|k| k.starts_with("@request.auth.claims")) {
                                v.at_key(key, |v| {
                                    v.error(format!(
                                        "JWT claim based routing ({key}) is only supported for gateways: this VirtualService applies to the mesh (gateways {:?}); bind it to gateways only",
                                        self.gateways
                                    ))
                                });
                            }
                        });
                    }
                });
            });
        }
        v.each("tls", &self.tls, |v, r| {
            validate_tls_route(v, r, &self.hosts, !applies_to_mesh)
        });
        v.each("tcp", &self.tcp, validate_tcp_route);
        validate_export_to(v, &self.export_to, false, false);
    }
}

fn validate_header_operations(v: &mut Validator, ops: &HeaderOperations, request: bool) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        v.at(field, |v| {
            for (name, value) in map {
                if let Err(e) = check_header_operation_name(name, request) {
                    v.at_key(name, |v| v.error(e));
                }
                if let Err(e) = check_header_value(value) {
                    v.at_key(name, |v| v.error(e));
                }
            }
        });
    }
    v.each("remove", &ops.remove, |v, name| {
        if let Err(e) = check_header_operation_name(name, false) {
            v.error(e);
        }
    });
}

/// Istio's `ValidateHTTPHeaderValue`: no control characters, and Envoy's header formatter
/// syntax: `%%` is a literal percent, any other `%` opens a `%COMMAND%` (optionally with
/// `(arguments)` and `:length`) that must be closed.
fn check_header_value(value: &str) -> Result<(), String> {
    if let Some(c) = value
        .chars()
        .find(|c| matches!(*c as u32, 0..=8 | 0x0A..=0x1F | 0x7F))
    {
        return Err(format!(
            "invalid header value {value:?}: control character {c:?} is not allowed"
        ));
    }
    let unescaped = || {
        format!(
            "invalid header value {value:?}: unescaped '%' (write \"%%\" for a literal percent or %VARIABLE% for an Envoy variable such as %HOSTNAME%)"
        )
    };
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        if let Some(next) = after.strip_prefix('%') {
            rest = next;
            continue;
        }
        // %NAME%, %NAME:LEN%, %NAME(args)% or %NAME(args):LEN%; args may hold '%' (strftime).
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let (name, tail) = after.split_at(name_len);
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_uppercase()) {
            return Err(unescaped());
        }
        let tail = if tail.starts_with('(') {
            // The closing parenthesis is the one followed by `%` or `:LEN%`.
            let close = tail.match_indices(')').map(|(j, _)| j).find(|&j| {
                let t = &tail[j + 1..];
                t.starts_with('%') || length_then_percent(t).is_some()
            });
            match close {
                Some(j) => &tail[j + 1..],
                None => return Err(unescaped()),
            }
        } else {
            tail
        };
        rest = if let Some(r) = tail.strip_prefix('%') {
            r
        } else if let Some(r) = length_then_percent(tail) {
            r
        } else {
            return Err(format!(
                "invalid header value {value:?}: %{name}... is not a complete Envoy variable: expected %NAME%, %NAME(args)% or \"%%\" for a literal percent"
            ));
        };
    }
    Ok(())
}

/// `:LEN%` at the start of `t`: returns what follows the `%`.
fn length_then_percent(t: &str) -> Option<&str> {
    let digits = t.strip_prefix(':')?;
    let n = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if n == 0 {
        return None;
    }
    digits[n..].strip_prefix('%')
}

impl Validate for Headers {
    fn validate(&self, v: &mut Validator) {
        if let Some(r) = &self.request {
            v.at("request", |v| validate_header_operations(v, r, true));
        }
        if let Some(r) = &self.response {
            v.at("response", |v| validate_header_operations(v, r, false));
        }
    }
}

fn validate_http_route(v: &mut Validator, r: &HTTPRoute, in_delegate: bool) {
    let has_route = !r.route.is_empty();
    if let Some(d) = &r.delegate {
        if in_delegate {
            v.error_at(
                "delegate",
                "a delegate VirtualService cannot delegate again: delegation is one level deep",
            );
        }
        for (field, set) in [
            ("route", has_route),
            ("redirect", r.redirect.is_some()),
            ("directResponse", r.direct_response.is_some()),
        ] {
            if set {
                v.error_at(field, format!("an http route with delegate cannot also set {field}: the delegate VirtualService does the routing"));
            }
        }
        v.at("delegate", |v| {
            match d.name.as_deref() {
                None | Some("") => v.error_at(
                    "name",
                    "delegate name is required: expected the delegate VirtualService's name",
                ),
                Some(n) if !is_dns_label(n) => v.error_at(
                    "name",
                    format!("invalid delegate name {n:?}: expected a DNS-1123 label"),
                ),
                _ => {}
            }
            if let Some(ns) = d
                .namespace
                .as_deref()
                .filter(|ns| !ns.is_empty() && !is_dns_label(ns))
            {
                v.error_at(
                    "namespace",
                    format!("invalid delegate namespace {ns:?}: expected a namespace name"),
                );
            }
        });
    } else {
        let actions = oneof(
            v,
            &[
                ("route", has_route),
                ("redirect", r.redirect.is_some()),
                ("directResponse", r.direct_response.is_some()),
            ],
        );
        if actions == 0 {
            v.error("an http route needs one of route, redirect, directResponse or delegate");
        }
    }
    for (action, set) in [
        ("redirect", r.redirect.is_some()),
        ("directResponse", r.direct_response.is_some()),
    ] {
        if set {
            if r.fault.is_some() {
                v.error_at(
                    "fault",
                    format!("fault injection cannot be combined with {action}"),
                );
            }
            if r.rewrite.is_some() {
                v.error_at(
                    "rewrite",
                    format!("rewrite cannot be combined with {action}"),
                );
            }
        }
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        v.error_at(
            "mirrors",
            "only one of mirror or mirrors may be set: move mirror into mirrors",
        );
    }
    v.each("match", &r.matches, validate_http_match);
    if let Some(h) = &r.headers {
        v.nested("headers", h);
    }
    if let Some(c) = &r.cors_policy {
        v.nested("corsPolicy", c);
    }
    if let Some(f) = &r.fault {
        v.nested("fault", f);
    }
    if let Some(p) = r.mirror_percent {
        if p > 100 {
            v.error_at(
                "mirrorPercent",
                format!("mirrorPercent is {p}: expected 0-100"),
            );
        }
        warn_at(
            v,
            "mirrorPercent",
            "mirrorPercent is deprecated: use mirrorPercentage",
        );
    }
    if let Some(p) = &r.mirror_percentage {
        v.nested("mirrorPercentage", p);
    }
    if let Some(m) = &r.mirror {
        v.nested("mirror", m);
    }
    v.each("mirrors", &r.mirrors, |v, m| {
        match &m.destination {
            None => v.error_at("destination", "mirror destination is required"),
            Some(d) => v.nested("destination", d),
        }
        if let Some(p) = &m.percentage {
            v.nested("percentage", p);
        }
    });
    if let Some(rd) = &r.redirect {
        v.nested("redirect", rd);
    }
    if let Some(d) = &r.direct_response {
        v.nested("directResponse", d);
    }
    if let Some(rt) = &r.retries {
        v.nested("retries", rt);
    }
    if let Some(rw) = &r.rewrite {
        v.nested("rewrite", rw);
    }
    // Istio's validateAuthorityRewrite: the authority may be rewritten in one place only.
    let authority_headers: Vec<&str> = r
        .headers
        .as_ref()
        .and_then(|h| h.request.as_ref())
        .map(|ops| {
            ops.set
                .keys()
                .chain(ops.add.keys())
                .filter(|k| is_authority_header(k))
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default();
    let rewrite_authority = r.rewrite.as_ref().is_some_and(|rw| is_set(&rw.authority));
    if rewrite_authority && !authority_headers.is_empty() {
        v.error_at("rewrite.authority", "the authority is set twice: rewrite.authority and a host/:authority header operation; keep one");
    } else if authority_headers.len() > 1 {
        v.error_at(
            "headers.request",
            format!(
                "the authority is set more than once (headers {}): keep one host/:authority operation",
                authority_headers.join(", ")
            ),
        );
    }
    duration_ms(v, "timeout", &r.timeout);
    let mut total: i64 = 0;
    v.each("route", &r.route, |v, d| {
        match &d.destination {
            None => v.error_at("destination", "destination is required"),
            Some(dest) => v.nested("destination", dest),
        }
        if let Some(w) = d.weight {
            if w < 0 {
                v.error_at(
                    "weight",
                    format!("weight {w} is negative: expected a relative weight >= 0"),
                );
            }
            total += i64::from(w);
        }
        if let Some(h) = &d.headers {
            v.nested("headers", h);
        }
    });
    if r.route.len() > 1 && total == 0 {
        v.error_at(
            "route",
            "all destination weights are 0: at least one destination needs a positive weight",
        );
    }
}

fn validate_http_match(v: &mut Validator, m: &HTTPMatchRequest) {
    if let Some(uri) = &m.uri {
        v.at("uri", |v| uri.check(v, true));
    }
    for (field, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            v.nested(field, sm);
        }
    }
    for (field, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        v.at(field, |v| {
            for (name, sm) in map {
                v.at_key(name, |v| {
                    if let Some(claim) = name.strip_prefix("@request.auth.claims.") {
                        if claim.is_empty() {
                            v.error("JWT claim header match needs a claim name: expected @request.auth.claims.<name>");
                        }
                    } else if let Err(e) = check_header_name(name) {
                        v.error(e);
                    } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
                        v.warn(format!("header name {name:?} has upper case: Istio expects lowercase header names, e.g. {:?}", name.to_ascii_lowercase()));
                    }
                    // In withoutHeaders, regex "*" means "header absent", not a regex.
                    if field == "withoutHeaders" && sm.regex.as_deref() == Some("*") {
                        return;
                    }
                    sm.check(v, false);
                });
            }
        });
    }
    v.at("queryParams", |v| {
        for (name, sm) in &m.query_params {
            v.at_key(name, |v| sm.check(v, false));
        }
    });
    optional_port(v, "port", m.port.filter(|p| *p != 0));
    v.labels("sourceLabels", &m.source_labels);
    validate_gateway_names(v, "gateways", &m.gateways);
    validate_source_namespace(v, &m.source_namespace);
}

impl Validate for CorsPolicy {
    fn validate(&self, v: &mut Validator) {
        if !self.allow_origin.is_empty() {
            warn_at(
                v,
                "allowOrigin",
                "allowOrigin is deprecated: use allowOrigins with exact, prefix or regex",
            );
        }
        v.each("allowOrigins", &self.allow_origins, |v, o| {
            if !o.is_set()
                || [&o.exact, &o.prefix, &o.regex]
                    .iter()
                    .any(|s| s.as_deref() == Some(""))
            {
                v.error("an allowOrigins entry needs a non-empty exact, prefix or regex");
            }
            o.check(v, true);
        });
        v.each("allowMethods", &self.allow_methods, |v, m| {
            if !CORS_METHODS.contains(&m.as_str()) {
                v.error(format!(
                    "unsupported CORS method {m:?}: expected one of {}",
                    CORS_METHODS.join(", ")
                ));
            }
        });
        for (field, list) in [
            ("allowHeaders", &self.allow_headers),
            ("exposeHeaders", &self.expose_headers),
        ] {
            v.each(field, list, |v, h| {
                if let Err(e) = check_header_name(h) {
                    v.error(e);
                }
            });
        }
        duration_ms(v, "maxAge", &self.max_age);
        if let Some(d) = &self.max_age {
            if d.as_std().subsec_nanos() != 0 && d.as_std() >= StdDuration::from_millis(1) {
                v.error_at(
                    "maxAge",
                    format!(
                        "maxAge {d} has a fraction of a second: CORS max age is in whole seconds"
                    ),
                );
            }
        }
    }
}

impl Validate for HTTPFaultInjection {
    fn validate(&self, v: &mut Validator) {
        if self.delay.is_none() && self.abort.is_none() {
            v.error("fault injection needs a delay and/or an abort");
        }
        if let Some(d) = &self.delay {
            v.nested("delay", d);
        }
        if let Some(a) = &self.abort {
            v.nested("abort", a);
        }
    }
}

impl Validate for Delay {
    fn validate(&self, v: &mut Validator) {
        let kinds = oneof(
            v,
            &[
                ("fixedDelay", self.fixed_delay.is_some()),
                ("exponentialDelay", self.exponential_delay.is_some()),
            ],
        );
        if kinds == 0 {
            v.error("delay needs fixedDelay, e.g. fixedDelay: 5s");
        }
        duration_ms(v, "fixedDelay", &self.fixed_delay);
        if self.exponential_delay.is_some() {
            v.error_at(
                "exponentialDelay",
                "exponentialDelay is not supported: use fixedDelay",
            );
        }
        if let Some(p) = &self.percentage {
            v.nested("percentage", p);
        }
        if self.percent.is_some() {
            percent_i32(v, "percent", self.percent);
            warn_at(v, "percent", "percent is deprecated: use percentage.value");
        }
    }
}

impl Validate for Abort {
    fn validate(&self, v: &mut Validator) {
        let kinds = oneof(
            v,
            &[
                ("httpStatus", self.http_status.is_some()),
                ("grpcStatus", self.grpc_status.is_some()),
                ("http2Error", self.http2_error.is_some()),
            ],
        );
        if kinds == 0 {
            v.warn("abort has no error type: expected httpStatus or grpcStatus");
        }
        if let Some(s) = self.http_status {
            if !(200..=599).contains(&s) {
                v.error_at(
                    "httpStatus",
                    format!("HTTP status {s} is out of range: expected 200-599"),
                );
            }
        }
        if let Some(s) = &self.grpc_status {
            if !GRPC_STATUSES.contains(&s.as_str()) {
                v.error_at(
                    "grpcStatus",
                    format!(
                        "unknown gRPC status {s:?}: expected one of {}",
                        GRPC_STATUSES.join(", ")
                    ),
                );
            }
        }
        if self.http2_error.is_some() {
            v.error_at(
                "http2Error",
                "http2Error aborts are not supported: use httpStatus or grpcStatus",
            );
        }
        if let Some(p) = &self.percentage {
            v.nested("percentage", p);
        }
    }
}

impl Validate for HTTPRedirect {
    fn validate(&self, v: &mut Validator) {
        oneof(
            v,
            &[
                ("port", self.port.is_some()),
                ("derivePort", self.derive_port.is_some()),
            ],
        );
        if !is_set(&self.uri)
            && !is_set(&self.authority)
            && !is_set(&self.scheme)
            && self.port.is_none()
            && self.derive_port.is_none()
        {
            v.error("redirect must change something: expected uri, authority, scheme, port or derivePort");
        }
        if let Some(code) = self.redirect_code.filter(|c| *c != 0) {
            if !(300..=399).contains(&code) {
                v.error_at("redirectCode", format!("redirect code {code} is not a redirect: expected one of 301, 302, 303, 307, 308"));
            } else if !Self::SUPPORTED_CODES.contains(&code) {
                v.error_at("redirectCode", format!("redirect code {code} is not supported by Envoy: expected one of 301, 302, 303, 307, 308"));
            }
        }
        if let Some(s) = self.scheme.as_deref().filter(|s| !s.is_empty()) {
            if s != "http" && s != "https" {
                v.error_at(
                    "scheme",
                    format!("invalid redirect scheme {s:?}: expected \"http\" or \"https\""),
                );
            }
        }
        optional_port(v, "port", self.port);
    }
}

impl Validate for HTTPDirectResponse {
    fn validate(&self, v: &mut Validator) {
        if !(200..=599).contains(&self.status) {
            v.error_at(
                "status",
                format!(
                    "HTTP status {} is out of range: expected 200-599",
                    self.status
                ),
            );
        }
        let Some(body) = &self.body else { return };
        v.at("body", |v| {
            oneof(v, &[("string", body.string.is_some()), ("bytes", body.bytes.is_some())]);
            let size = match (&body.string, &body.bytes) {
                (Some(s), _) => s.len(),
                (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b) {
                    Ok(bytes) => bytes.len(),
                    Err(e) => {
                        v.error_at("bytes", format!("bytes is not valid base64: {e}"));
                        0
                    }
                },
                (None, None) => 0,
            };
            if size > 1024 * 1024 {
                v.error(format!("direct response body is {size} bytes: expected less than 1MB"));
            } else if size > 100 * 1024 {
                v.warn(format!("direct response body is {size} bytes: large bodies slow down config distribution"));
            }
        });
    }
}

impl Validate for HTTPRetry {
    fn validate(&self, v: &mut Validator) {
        let attempts = self.attempts();
        if attempts < 0 {
            v.error_at(
                "attempts",
                format!("attempts is {attempts}: expected a value >= 0"),
            );
        }
        if attempts == 0
            && (self.per_try_timeout.is_some()
                || is_set(&self.retry_on)
                || self.retry_remote_localities.is_some())
        {
            v.error_at("attempts", "retry settings are configured but attempts is 0 (retries disabled): set attempts > 0");
        }
        duration_ms(v, "perTryTimeout", &self.per_try_timeout);
        duration_ms(v, "backoff", &self.backoff);
        if let Some(on) = self.retry_on.as_deref().filter(|s| !s.is_empty()) {
            for policy in on.split(',').map(str::trim) {
                let status = policy
                    .parse::<u16>()
                    .is_ok_and(|c| (100..=599).contains(&c));
                if !status && !RETRY_ON.contains(&policy) {
                    v.error_at(
                        "retryOn",
                        format!(
                            "{policy:?} is not a retry condition: expected HTTP status codes or {}",
                            RETRY_ON.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

impl Validate for HTTPRewrite {
    fn validate(&self, v: &mut Validator) {
        oneof(
            v,
            &[
                ("uri", self.uri.is_some()),
                ("uriRegexRewrite", self.uri_regex_rewrite.is_some()),
            ],
        );
        if !is_set(&self.uri) && self.uri_regex_rewrite.is_none() && !is_set(&self.authority) {
            v.error("rewrite must change something: expected uri, uriRegexRewrite or authority");
        }
        if let Some(rr) = &self.uri_regex_rewrite {
            v.at("uriRegexRewrite", |v| {
                if !is_set(&rr.pattern) {
                    v.error_at(
                        "match",
                        "uriRegexRewrite needs both match and rewrite: match is missing",
                    );
                }
                if rr.rewrite.is_none() {
                    v.error_at(
                        "rewrite",
                        "uriRegexRewrite needs both match and rewrite: rewrite is missing",
                    );
                }
                if let Some(p) = rr.pattern.as_deref().filter(|p| !p.is_empty()) {
                    v.regex("match", p);
                }
            });
        }
    }
}

fn validate_route_destinations(v: &mut Validator, route: &[RouteDestination]) {
    let mut total: i64 = 0;
    v.each("route", route, |v, d| {
        match &d.destination {
            None => v.error_at("destination", "destination is required"),
            Some(dest) => v.nested("destination", dest),
        }
        if let Some(w) = d.weight {
            if w < 0 {
                v.error_at(
                    "weight",
                    format!("weight {w} is negative: expected a relative weight >= 0"),
                );
            }
            total += i64::from(w);
        }
    });
    if route.len() > 1 && total == 0 {
        v.error_at(
            "route",
            "all destination weights are 0: at least one destination needs a positive weight",
        );
    }
}

fn validate_subnets(v: &mut Validator, field: &str, subnets: &[String]) {
    v.each(field, subnets, |v, s| {
        if let Err(e) = check_ip_or_cidr(s) {
            v.error(e);
        }
    });
}

fn validate_tls_route(v: &mut Validator, r: &TLSRoute, vs_hosts: &[String], gateway_only: bool) {
    if r.matches.is_empty() {
        v.error_at(
            "match",
            "a tls route needs at least one match with sniHosts",
        );
    }
    v.each("match", &r.matches, |v, m| {
        if m.sni_hosts.is_empty() {
            v.error_at("sniHosts", "a tls match needs at least one SNI host");
        }
        v.each("sniHosts", &m.sni_hosts, |v, sni| {
            if is_ip(sni) {
                v.warn(format!("SNI host {sni:?} is an IP address: SNI carries names and most clients never send IPs"));
                return;
            }
            let checked = if gateway_only && sni.starts_with("outbound_") {
                check_outbound_sni(sni)
            } else {
                check_host(sni)
            };
            if let Err(e) = checked {
                v.error(e);
                return;
            }
            if !vs_hosts.iter().any(|h| host_subset_of(sni, h)) {
                v.error(format!(
                    "SNI host {sni:?} is not within the VirtualService's hosts [{}]: expected one of them or a name they cover",
                    vs_hosts.join(", ")
                ));
            }
        });
        validate_subnets(v, "destinationSubnets", &m.destination_subnets);
        optional_port(v, "port", m.port.filter(|p| *p != 0));
        v.labels("sourceLabels", &m.source_labels);
        validate_gateway_names(v, "gateways", &m.gateways);
        validate_source_namespace(v, &m.source_namespace);
    });
    if r.route.is_empty() {
        v.error_at("route", "a tls route needs at least one destination");
    }
    validate_route_destinations(v, &r.route);
}

fn validate_tcp_route(v: &mut Validator, r: &TCPRoute) {
    v.each("match", &r.matches, |v, m| {
        validate_subnets(v, "destinationSubnets", &m.destination_subnets);
        if let Some(s) = m.source_subnet.as_deref().filter(|s| !s.is_empty()) {
            if let Err(e) = check_ip_or_cidr(s) {
                v.error_at("sourceSubnet", e);
            }
        }
        optional_port(v, "port", m.port.filter(|p| *p != 0));
        v.labels("sourceLabels", &m.source_labels);
        validate_gateway_names(v, "gateways", &m.gateways);
        validate_source_namespace(v, &m.source_namespace);
    });
    if r.route.is_empty() {
        v.error_at("route", "a tcp route needs at least one destination");
    }
    validate_route_destinations(v, &r.route);
}

// =============================================================================================
// DestinationRule
// =============================================================================================

/// DestinationRule spec: policies (load balancing, pools, outlier detection, TLS) for a host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// Service host the rule applies to (wildcards allowed). Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Policies for all traffic to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets (versions) of the host's endpoints.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subsets: Vec<Subset>,
    /// Namespaces that can see this rule (all when empty).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub export_to: Vec<String>,
    /// Restrict the rule to these client workloads (in its namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

impl DestinationRule {
    /// The subset with this name.
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }
}

/// Traffic policies for a host, a subset or (without portLevelSettings) a port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load-balancing algorithm; LEAST_REQUEST when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTLSSettings>,
    /// Overrides per destination port.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel TCP over CONNECT/POST to this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    /// Send the PROXY protocol header upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Limit on concurrent retries relative to active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Traffic policy overrides for one destination port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The port. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    /// Load-balancing algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTLSSettings>,
}

/// TCP tunneling (HTTP CONNECT or POST) through this host to a target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` (default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Host (FQDN or IP) to tunnel to. Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_host: String,
    /// Port to tunnel to. Required.
    #[serde(default)]
    pub target_port: u32,
}

/// Upstream PROXY protocol settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    /// Version; V1 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// A retry budget: concurrent retries as a share of active requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Allowed concurrent retries, percent of active plus pending requests (Envoy: 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed (Envoy: 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
    /// Window of requests counted for the budget (0: only active ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_interval: Option<Duration>,
}

/// A named subset of a host's endpoints, selected by labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Subset name, referenced by routes. Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Endpoint labels selecting the subset.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Policies overriding the host-level ones for this subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Load balancing; `simple` and `consistentHash` form a oneof.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// A simple algorithm (see [`LoadBalancerSettings::simple_or_default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLB>,
    /// Consistent hashing (session affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLB>,
    /// Locality-aware load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Deprecated: use `warmup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    /// Slow start for new endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
}

impl LoadBalancerSettings {
    /// The simple algorithm in effect: as written, LEAST_REQUEST when unset or UNSPECIFIED
    /// (and LEAST_CONN, its deprecated alias). Not used when `consistentHash` is set.
    pub fn simple_or_default(&self) -> SimpleLB {
        match self.simple {
            None | Some(SimpleLB::Unspecified) | Some(SimpleLB::LeastConn) => {
                SimpleLB::ISTIO_DEFAULT
            }
            Some(s) => s,
        }
    }
}

/// Consistent hashing: a oneof hash key and a oneof hash algorithm.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLB {
    /// Hash this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash this cookie (generated when absent and a ttl is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HTTPCookie>,
    /// Hash the source IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Ring hash algorithm (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Maglev algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    /// Deprecated: use `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// The cookie hashed for session affinity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPCookie {
    /// Cookie name. Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Cookie path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of a generated cookie (0: session cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Extra attributes of a generated cookie.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub attributes: Vec<CookieAttribute>,
}

/// An attribute of a generated cookie (`SameSite=Strict`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    /// Attribute name. Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Attribute value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Ring hash settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum ring size (Envoy: 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Maglev settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Lookup table size, a prime (Envoy: 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// Slow start of new endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Warmup window. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Starting share of traffic, percent (Envoy: 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    /// Speed of the ramp (1.0: linear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

/// Connection pool limits for TCP and HTTP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// TCP (and HTTP) connection settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TCPSettings>,
    /// HTTP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HTTPSettings>,
}

/// TCP connection pool settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TCPSettings {
    /// Maximum connections to the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    /// Connect timeout; 10s when unset (see [`TCPSettings::connect_timeout_or_default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// TCP keepalive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Maximum lifetime of a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// Idle timeout (Envoy: 1h; 0 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

impl TCPSettings {
    /// Istio's default connect timeout (MeshConfig `connectTimeout`).
    pub const DEFAULT_CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(10);

    /// The connect timeout in effect: as written, 10s when unset.
    pub fn connect_timeout_or_default(&self) -> StdDuration {
        self.connect_timeout
            .as_ref()
            .map_or(Self::DEFAULT_CONNECT_TIMEOUT, Duration::as_std)
    }
}

/// TCP keepalive settings (OS defaults when unset).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before probing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Interval between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// HTTP connection pool settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPSettings {
    /// Maximum queued requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    /// Maximum active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    /// Maximum requests per connection (1 disables keep-alive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    /// Maximum outstanding retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Idle timeout of pooled connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 upgrade policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Keep the client's HTTP version upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// Maximum concurrent streams per HTTP/2 connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
}

/// Ejection of endpoints that keep failing (circuit breaking).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Count locally originated failures separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection (needs splitExternalLocalOriginErrors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// 502/503/504s before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// 5xx responses before ejection; 5 when unset, 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Ejection sweep interval; 10s when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Minimum ejection time; 30s when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Maximum share of endpoints ejected; 10 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    /// Disable ejection below this share of healthy endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
    /// Deprecated: use consecutiveGatewayErrors or consecutive5xxErrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
}

impl OutlierDetection {
    /// 5xx errors before ejection: as written (0 disables), Envoy's 5 when unset.
    pub fn consecutive_5xx_errors_or_default(&self) -> u32 {
        self.consecutive_5xx_errors.unwrap_or(5)
    }

    /// Sweep interval: as written, 10s when unset.
    pub fn interval_or_default(&self) -> StdDuration {
        self.interval
            .as_ref()
            .map_or(StdDuration::from_secs(10), Duration::as_std)
    }

    /// Base ejection time: as written, 30s when unset.
    pub fn base_ejection_time_or_default(&self) -> StdDuration {
        self.base_ejection_time
            .as_ref()
            .map_or(StdDuration::from_secs(30), Duration::as_std)
    }

    /// Maximum ejection percentage: as written, 10 when unset or 0.
    pub fn max_ejection_percent_or_default(&self) -> u32 {
        match self.max_ejection_percent {
            Some(p) if p > 0 => p.unsigned_abs(),
            _ => 10,
        }
    }
}

/// TLS from the proxy to the upstream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTLSSettings {
    /// TLS mode; DISABLE when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTLSMode>,
    /// Client certificate file (MUTUAL without credentialName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Private key file (MUTUAL without credentialName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle file for verifying the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Secret holding the client certificate, key and CA (gateways only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Accepted subject alternative names of the server certificate.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Skip verifying the server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Certificate revocation list file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

impl ClientTLSSettings {
    /// The TLS mode in effect: DISABLE when unset.
    pub fn mode(&self) -> ClientTLSMode {
        self.mode.unwrap_or_default()
    }
}

/// Locality-aware load balancing: weighted distribution or failover.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLoadBalancerSetting {
    /// Traffic shares per source locality (exclusive with failover).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub distribute: Vec<LocalityDistribute>,
    /// Region failover order (exclusive with distribute).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub failover: Vec<LocalityFailover>,
    /// Labels ordering endpoints by priority.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub failover_priority: Vec<String>,
    /// Enable or disable locality load balancing (mesh setting when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Traffic from one locality, split across localities by weight (summing to 100).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Source locality `region/zone/subzone` (trailing `*` allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Destination localities and their weights.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub to: BTreeMap<String, u32>,
}

/// Failover from one region to another.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// Source region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Region to fail over to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl Validate for DestinationRule {
    fn validate(&self, v: &mut Validator) {
        if self.host.is_empty() {
            v.error_at("host", "host is required: expected a service host such as reviews.prod.svc.cluster.local or *.example.com");
        } else if let Err(e) = check_host(&self.host) {
            v.error_at("host", e);
        }
        if let Some(ws) = &self.workload_selector {
            v.nested("workloadSelector", ws);
            if ws.match_labels.is_empty() {
                warn_at(v, "workloadSelector", "workload selector specified without labels: this DestinationRule applies to every workload in scope, as if workloadSelector were not set");
            }
        }
        if let Some(tp) = &self.traffic_policy {
            v.at("trafficPolicy", |v| validate_traffic_policy(v, tp));
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        v.at("subsets", |v| {
            for (i, s) in self.subsets.iter().enumerate() {
                v.at_index(i, |v| {
                    if s.name.is_empty() {
                        v.error_at("name", "subset name is required: expected a DNS-1123 label such as v1");
                    } else if !is_dns_label(&s.name) {
                        v.error_at("name", format!("invalid subset name {:?}: expected a DNS-1123 label such as v1", s.name));
                    } else if let Some(first) = names.get(s.name.as_str()) {
                        v.error_at("name", format!("duplicate subset name {:?} (also subsets[{first}]): subset names must be unique", s.name));
                    } else {
                        names.insert(&s.name, i);
                    }
                    v.labels("labels", &s.labels);
                    if let Some(tp) = &s.traffic_policy {
                        v.at("trafficPolicy", |v| validate_traffic_policy(v, tp));
                    }
                });
            }
        });
        validate_export_to(v, &self.export_to, false, self.workload_selector.is_some());
    }
}

fn validate_traffic_policy(v: &mut Validator, tp: &TrafficPolicy) {
    if *tp == TrafficPolicy::default() {
        v.error("trafficPolicy must set at least one field: loadBalancer, connectionPool, outlierDetection, tls, portLevelSettings, tunnel, proxyProtocol or retryBudget");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        v.error_at(
            "proxyProtocol",
            "tunnel and proxyProtocol cannot both be set",
        );
    }
    validate_policy_parts(
        v,
        &tp.load_balancer,
        &tp.connection_pool,
        &tp.outlier_detection,
        &tp.tls,
    );
    if let Some(t) = &tp.tunnel {
        v.nested("tunnel", t);
    }
    if let Some(rb) = &tp.retry_budget {
        v.nested("retryBudget", rb);
    }
    let mut ports: HashMap<u32, usize> = HashMap::new();
    v.at("portLevelSettings", |v| {
        for (i, p) in tp.port_level_settings.iter().enumerate() {
            v.at_index(i, |v| {
                match &p.port {
                    None => v.error_at("port", "port is required: expected port.number"),
                    Some(sel) => {
                        v.port("port.number", sel.number);
                        if let Some(first) = ports.get(&sel.number) {
                            warn_at(v, "port.number", format!("duplicate port {} (also portLevelSettings[{first}]): only one applies", sel.number));
                        } else {
                            ports.insert(sel.number, i);
                        }
                    }
                }
                if p.load_balancer.is_none() && p.connection_pool.is_none() && p.outlier_detection.is_none() && p.tls.is_none() {
                    v.error("a port traffic policy must set at least one of loadBalancer, connectionPool, outlierDetection or tls");
                } else {
                    validate_policy_parts(v, &p.load_balancer, &p.connection_pool, &p.outlier_detection, &p.tls);
                }
            });
        }
    });
}

fn validate_policy_parts(
    v: &mut Validator,
    lb: &Option<LoadBalancerSettings>,
    pool: &Option<ConnectionPoolSettings>,
    outlier: &Option<OutlierDetection>,
    tls: &Option<ClientTLSSettings>,
) {
    if let Some(lb) = lb {
        v.nested("loadBalancer", lb);
        let failover = lb
            .locality_lb_setting
            .as_ref()
            .is_some_and(|l| !l.failover.is_empty() || !l.failover_priority.is_empty());
        if failover && outlier.is_none() {
            // Istio warns: without outlier detection no endpoint is ever ejected, so traffic
            // never fails over.
            warn_at(
                v,
                "loadBalancer.localityLbSetting",
                "outlier detection policy must be provided for failover: set outlierDetection beside loadBalancer, or failover never happens",
            );
        }
    }
    if let Some(p) = pool {
        v.nested("connectionPool", p);
    }
    if let Some(o) = outlier {
        v.nested("outlierDetection", o);
    }
    if let Some(t) = tls {
        v.nested("tls", t);
    }
}

impl Validate for TunnelSettings {
    fn validate(&self, v: &mut Validator) {
        if let Some(p) = self.protocol.as_deref().filter(|p| !p.is_empty()) {
            if p != "CONNECT" && p != "POST" {
                v.error_at(
                    "protocol",
                    format!("invalid tunnel protocol {p:?}: expected \"CONNECT\" or \"POST\""),
                );
            }
        }
        if self.target_host.is_empty() {
            v.error_at(
                "targetHost",
                "targetHost is required: expected a host name or IP",
            );
        } else if !is_ip(&self.target_host) {
            if let Err(e) = check_fqdn(&self.target_host) {
                v.error_at("targetHost", format!("{e}: expected a host name or IP"));
            }
        }
        v.port("targetPort", self.target_port);
    }
}

impl Validate for RetryBudget {
    fn validate(&self, v: &mut Validator) {
        if let Some(p) = self.percent {
            if !(0.0..=100.0).contains(&p) {
                v.error_at(
                    "percent",
                    format!("percent {p} is out of range: expected 0-100"),
                );
            }
        }
        if let Some(d) = &self.budget_interval {
            if d.as_std() > StdDuration::ZERO {
                duration_ms(v, "budgetInterval", &self.budget_interval);
            }
        }
    }
}

impl Validate for LoadBalancerSettings {
    fn validate(&self, v: &mut Validator) {
        oneof(
            v,
            &[
                ("simple", self.simple.is_some()),
                ("consistentHash", self.consistent_hash.is_some()),
            ],
        );
        if self.simple == Some(SimpleLB::LeastConn) {
            warn_at(v, "simple", "LEAST_CONN is deprecated: use LEAST_REQUEST");
        }
        if let Some(ch) = &self.consistent_hash {
            v.nested("consistentHash", ch);
        }
        if let Some(l) = &self.locality_lb_setting {
            v.nested("localityLbSetting", l);
        }
        if self.warmup_duration_secs.is_some() {
            if self.warmup.is_some() {
                v.error_at(
                    "warmupDurationSecs",
                    "only one of warmupDurationSecs or warmup may be set: use warmup",
                );
            } else {
                warn_at(
                    v,
                    "warmupDurationSecs",
                    "warmupDurationSecs is deprecated: use warmup.duration",
                );
            }
            duration_ms(v, "warmupDurationSecs", &self.warmup_duration_secs);
        }
        if let Some(w) = &self.warmup {
            v.at("warmup", |v| {
                match &w.duration {
                    None => v.error_at(
                        "duration",
                        "warmup duration is required, e.g. duration: 60s",
                    ),
                    Some(_) => duration_ms(v, "duration", &w.duration),
                }
                if let Some(p) = w.minimum_percent.filter(|p| !(0.0..=100.0).contains(p)) {
                    v.error_at(
                        "minimumPercent",
                        format!("minimumPercent {p} is out of range: expected 0-100"),
                    );
                }
                if let Some(a) = w.aggression.filter(|a| *a < 1.0) {
                    v.error_at(
                        "aggression",
                        format!("aggression {a} is too small: expected >= 1 (1 is linear)"),
                    );
                }
            });
        }
        let warming = self.warmup.is_some() || self.warmup_duration_secs.is_some();
        if warming
            && (self.consistent_hash.is_some()
                || matches!(self.simple, Some(SimpleLB::Random | SimpleLB::Passthrough)))
        {
            v.warn("warmup only applies to ROUND_ROBIN and LEAST_REQUEST load balancing");
        }
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

impl Validate for ConsistentHashLB {
    fn validate(&self, v: &mut Validator) {
        let keys = oneof(
            v,
            &[
                ("httpHeaderName", self.http_header_name.is_some()),
                ("httpCookie", self.http_cookie.is_some()),
                ("useSourceIp", self.use_source_ip.is_some()),
                (
                    "httpQueryParameterName",
                    self.http_query_parameter_name.is_some(),
                ),
            ],
        );
        if keys == 0 {
            v.warn("consistentHash has no hash key: expected httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName");
        }
        oneof(
            v,
            &[
                ("ringHash", self.ring_hash.is_some()),
                ("maglev", self.maglev.is_some()),
            ],
        );
        if self.minimum_ring_size.is_some_and(|n| n != 0) {
            if self.ring_hash.is_some() {
                v.error_at("minimumRingSize", "only one of minimumRingSize or ringHash may be set: use ringHash.minimumRingSize");
            } else if self.maglev.is_some() {
                v.error_at(
                    "minimumRingSize",
                    "only one of minimumRingSize or maglev may be set",
                );
            } else {
                warn_at(
                    v,
                    "minimumRingSize",
                    "minimumRingSize is deprecated: use ringHash.minimumRingSize",
                );
            }
        }
        if let Some(name) = self.http_header_name.as_deref() {
            if let Err(e) = check_header_name(name) {
                v.error_at("httpHeaderName", e);
            }
        }
        if self.http_query_parameter_name.as_deref() == Some("") {
            v.error_at(
                "httpQueryParameterName",
                "httpQueryParameterName must not be empty",
            );
        }
        if let Some(c) = &self.http_cookie {
            v.at("httpCookie", |v| {
                if c.name.is_empty() {
                    v.error_at("name", "cookie name is required");
                }
                v.each("attributes", &c.attributes, |v, a| {
                    if a.name.is_empty() {
                        v.error_at("name", "cookie attribute name is required");
                    }
                });
            });
        }
        if let Some(m) = &self.maglev {
            match m.table_size.unwrap_or(0) {
                // Istio rejects this; Trellis (like Envoy) defaults to 65537 and the model
                // relies on that, so it only warns that Istio's webhook would refuse it.
                0 => warn_at(
                    v,
                    "maglev.tableSize",
                    "tableSize is not set for maglev: Trellis uses Envoy's default 65537, but Istio rejects a maglev without tableSize; set it (a prime such as 65537) to stay portable",
                ),
                size if size >= 5_000_011 => v.error_at(
                    "maglev.tableSize",
                    format!("maglev tableSize {size} is too large: expected a prime below 5000011"),
                ),
                _ => {}
            }
        }
        if let Some(size) = self
            .maglev
            .as_ref()
            .and_then(|m| m.table_size)
            .filter(|s| *s != 0)
        {
            if !is_prime(size) {
                v.error_at(
                    "maglev.tableSize",
                    format!("maglev tableSize {size} is not prime: expected a prime such as 65537"),
                );
            }
        }
    }
}

impl Validate for ConnectionPoolSettings {
    fn validate(&self, v: &mut Validator) {
        if self.tcp.is_none() && self.http.is_none() {
            v.error("connectionPool must set tcp and/or http");
        }
        if let Some(t) = &self.tcp {
            v.at("tcp", |v| {
                non_negative(v, "maxConnections", t.max_connections);
                duration_ms(v, "connectTimeout", &t.connect_timeout);
                duration_ms(v, "maxConnectionDuration", &t.max_connection_duration);
                if let Some(k) = &t.tcp_keepalive {
                    v.at("tcpKeepalive", |v| {
                        duration_ms(v, "time", &k.time);
                        duration_ms(v, "interval", &k.interval);
                    });
                }
            });
        }
        if let Some(h) = &self.http {
            v.at("http", |v| {
                non_negative(v, "http1MaxPendingRequests", h.http1_max_pending_requests);
                non_negative(v, "http2MaxRequests", h.http2_max_requests);
                non_negative(v, "maxRequestsPerConnection", h.max_requests_per_connection);
                non_negative(v, "maxRetries", h.max_retries);
                non_negative(v, "maxConcurrentStreams", h.max_concurrent_streams);
                duration_ms(v, "idleTimeout", &h.idle_timeout);
                if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
                    && h.use_client_protocol == Some(true)
                {
                    v.error_at(
                        "useClientProtocol",
                        "useClientProtocol cannot be true when h2UpgradePolicy is UPGRADE",
                    );
                }
            });
        }
    }
}

impl Validate for OutlierDetection {
    fn validate(&self, v: &mut Validator) {
        duration_ms(v, "baseEjectionTime", &self.base_ejection_time);
        duration_ms(v, "interval", &self.interval);
        if self.consecutive_errors.is_some_and(|n| n != 0) {
            warn_at(v, "consecutiveErrors", "consecutiveErrors is deprecated: use consecutiveGatewayErrors or consecutive5xxErrors");
        }
        if self.split_external_local_origin_errors != Some(true)
            && self
                .consecutive_local_origin_failures
                .is_some_and(|n| n > 0)
        {
            v.error_at(
                "consecutiveLocalOriginFailures",
                "consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true",
            );
        }
        percent_i32(v, "maxEjectionPercent", self.max_ejection_percent);
        percent_i32(v, "minHealthPercent", self.min_health_percent);
    }
}

impl Validate for ClientTLSSettings {
    fn validate(&self, v: &mut Validator) {
        let mode = self.mode();
        let cred = is_set(&self.credential_name);
        if self.insecure_skip_verify == Some(true) {
            let conflicting = match mode {
                ClientTLSMode::Simple => {
                    is_set(&self.ca_certificates) || cred || !self.subject_alt_names.is_empty()
                }
                ClientTLSMode::Mutual => {
                    is_set(&self.ca_certificates) || !self.subject_alt_names.is_empty()
                }
                _ => false,
            };
            if conflicting {
                v.error_at("insecureSkipVerify", "insecureSkipVerify cannot be combined with caCertificates, credentialName (SIMPLE) or subjectAltNames");
            }
        }
        match mode {
            ClientTLSMode::Simple | ClientTLSMode::Mutual if cred => {
                for (field, set) in [
                    ("clientCertificate", is_set(&self.client_certificate)),
                    ("privateKey", is_set(&self.private_key)),
                    ("caCertificates", is_set(&self.ca_certificates)),
                    ("caCrl", is_set(&self.ca_crl)),
                ] {
                    if set {
                        v.error_at(field, format!("{field} cannot be set with credentialName: the secret provides the certificates"));
                    }
                }
            }
            ClientTLSMode::Mutual => {
                if !is_set(&self.client_certificate) {
                    v.error_at("clientCertificate", "MUTUAL TLS requires a client certificate: expected clientCertificate and privateKey, or credentialName");
                }
                if !is_set(&self.private_key) {
                    v.error_at("privateKey", "MUTUAL TLS requires a private key: expected clientCertificate and privateKey, or credentialName");
                }
            }
            ClientTLSMode::IstioMutual => {
                for (field, set) in [
                    ("clientCertificate", is_set(&self.client_certificate)),
                    ("privateKey", is_set(&self.private_key)),
                    ("caCertificates", is_set(&self.ca_certificates)),
                    ("credentialName", cred),
                    ("caCrl", is_set(&self.ca_crl)),
                ] {
                    if set {
                        v.error_at(field, format!("ISTIO_MUTUAL uses Istio's workload certificates: {field} must not be set"));
                    }
                }
            }
            _ => {}
        }
    }
}

/// `region/zone/subzone` with an optional single trailing `*`.
fn check_locality(l: &str) -> Result<(), String> {
    let stars = l.matches('*').count();
    if stars > 1 || (stars == 1 && !l.ends_with('*')) {
        return Err(format!(
            "locality {l:?}: a wildcard '*' may appear once, at the end"
        ));
    }
    if l.is_empty() || l.split('/').count() > 3 || l.split('/').any(str::is_empty) {
        return Err(format!(
            "locality {l:?}: expected region[/zone[/subzone]] without empty parts"
        ));
    }
    Ok(())
}

/// Istio's `validateLocalities`: listed localities must not overlap, e.g. `a` (or `a/*`)
/// already covers `a/b/c`, and `*` covers everything. Order matters as in Istio: a locality
/// overlapping one listed before it is reported.
#[derive(Default)]
struct LocalitySet {
    /// region -> zone -> subzones; "*" marks a whole level.
    regions: HashMap<String, HashMap<String, HashSet<String>>>,
}

impl LocalitySet {
    fn insert(&mut self, locality: &str) -> Result<(), String> {
        let overlap = || {
            Err(format!(
                "locality {locality:?} overlaps a locality listed before it: expected distinct regions, zones or subzones"
            ))
        };
        if self.regions.contains_key("*") {
            return overlap();
        }
        let mut parts: Vec<&str> = locality.split('/').collect();
        if parts.len() > 1 && parts.last() == Some(&"*") {
            parts.pop();
        }
        match parts.as_slice() {
            [region] => {
                if self.regions.contains_key(*region) {
                    return overlap();
                }
                let whole = HashMap::from([("*".to_string(), HashSet::from(["*".to_string()]))]);
                self.regions.insert(region.to_string(), whole);
            }
            [region, zone] => {
                let zones = self.regions.entry(region.to_string()).or_default();
                if zones.contains_key("*") || zones.contains_key(*zone) {
                    return overlap();
                }
                zones.insert(zone.to_string(), HashSet::from(["*".to_string()]));
            }
            [region, zone, subzone] => {
                let zones = self.regions.entry(region.to_string()).or_default();
                if zones.contains_key("*") {
                    return overlap();
                }
                let subzones = zones.entry(zone.to_string()).or_default();
                if subzones.contains("*") || !subzones.insert(subzone.to_string()) {
                    return overlap();
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Validate for LocalityLoadBalancerSetting {
    fn validate(&self, v: &mut Validator) {
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            v.error_at("failover", "distribute and failover cannot both be set");
            return;
        }
        if !self.failover.is_empty() {
            v.each("failoverPriority", &self.failover_priority, |v, label| {
                if matches!(
                    label.as_str(),
                    "topology.kubernetes.io/region" | "topology.kubernetes.io/zone" | "topology.istio.io/subzone"
                ) {
                    v.error(format!("failoverPriority label {label:?} cannot be combined with failover: failover already orders by region"));
                }
            });
        }
        let mut froms = LocalitySet::default();
        v.each("distribute", &self.distribute, |v, d| {
            let from = d.from.as_deref().unwrap_or("");
            if let Err(e) = check_locality(from) {
                v.error_at("from", e);
            } else if let Err(e) = froms.insert(from) {
                v.error_at("from", e);
            }
            let mut tos = LocalitySet::default();
            for loc in d.to.keys() {
                if check_locality(loc).is_ok() {
                    if let Err(e) = tos.insert(loc) {
                        v.at("to", |v| v.at_key(loc, |v| v.error(e)));
                    }
                }
            }
            let mut total: u64 = 0;
            v.at("to", |v| {
                for (loc, w) in &d.to {
                    v.at_key(loc, |v| {
                        if let Err(e) = check_locality(loc) {
                            v.error(e);
                        }
                        if !(1..=100).contains(w) {
                            v.error(format!(
                                "locality weight {w} is out of range: expected 1-100"
                            ));
                        }
                    });
                    total += u64::from(*w);
                }
            });
            if total != 100 {
                v.error_at(
                    "to",
                    format!("locality weights sum to {total}: expected 100"),
                );
            }
        });
        v.each("failover", &self.failover, |v, f| {
            let from = f.from.as_deref().unwrap_or("");
            let to = f.to.as_deref().unwrap_or("");
            if from == to {
                v.error(format!("failover from and to must be different regions, found {from:?} for both"));
            }
            for (field, region) in [("from", from), ("to", to)] {
                if region.contains('/') {
                    v.error_at(field, format!("failover takes regions only, found {region:?}: expected a region without /zone"));
                }
                if region.contains('*') {
                    v.error_at(field, format!("failover regions cannot contain '*', found {region:?}: expected a region name"));
                }
            }
        });
    }
}

// =============================================================================================
// ServiceEntry
// =============================================================================================

/// ServiceEntry spec: adds a service (external or mesh-internal) to Istio's registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Host names of the service (no bare `*`). Required.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs of the service.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub addresses: Vec<String>,
    /// Ports of the service.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<ServicePort>,
    /// In or out of the mesh; MESH_EXTERNAL when unset (see [`ServiceEntry::location`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Endpoint discovery; NONE when unset (see [`ServiceEntry::resolution`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Static endpoints (exclusive with workloadSelector).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoints: Vec<WorkloadEntry>,
    /// Select pods and WorkloadEntries as endpoints (MESH_INTERNAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabelSelector>,
    /// Namespaces that can see this service (all when empty; `~` for none).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub export_to: Vec<String>,
    /// Accepted subject alternative names of the service's certificates.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subject_alt_names: Vec<String>,
}

impl ServiceEntry {
    /// The resolution in effect: NONE when unset (the proto default).
    pub fn resolution(&self) -> Resolution {
        self.resolution.unwrap_or_default()
    }

    /// The location in effect: MESH_EXTERNAL when unset (the proto default).
    pub fn location(&self) -> Location {
        self.location.unwrap_or_default()
    }
}

/// A port of a ServiceEntry: number and name are required.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol (sniffed when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Port name, unique in the entry; endpoints' `ports` refer to it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Port on the endpoints (defaults to `number`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

impl ServicePort {
    /// The parsed protocol; `None` when unset (sniffed) or unknown.
    pub fn protocol_kind(&self) -> Option<Protocol> {
        self.protocol.as_deref().and_then(Protocol::parse)
    }

    /// The endpoint port in effect: `targetPort`, else `number`.
    pub fn target_port_or_number(&self) -> u32 {
        self.target_port.filter(|p| *p != 0).unwrap_or(self.number)
    }
}

impl Validate for ServiceEntry {
    fn validate(&self, v: &mut Validator) {
        if self.workload_selector.is_some() && !self.endpoints.is_empty() {
            v.error_at(
                "workloadSelector",
                "only one of workloadSelector or endpoints may be set",
            );
        }
        if let Some(ws) = &self.workload_selector {
            v.nested("workloadSelector", ws);
        }
        if self.hosts.is_empty() {
            v.error_at(
                "hosts",
                "a ServiceEntry needs at least one host, e.g. api.example.com",
            );
        }
        v.each("hosts", &self.hosts, |v, h| {
            if h == "*" {
                v.error("host \"*\" is not allowed in a ServiceEntry: use a wildcard like *.example.com");
            } else if let Err(e) = check_host(h) {
                v.error(e);
            } else if h.starts_with('*') && !h.starts_with("*.") {
                v.warn(format!("partial wildcard {h:?} is not supported: expected *.domain"));
            }
        });
        let resolution = self.resolution();
        let mut cidr = false;
        v.each("addresses", &self.addresses, |v, a| {
            cidr |= a.contains('/');
            if let Err(e) = check_ip_or_cidr(a) {
                v.error(e);
            }
        });
        if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
            v.error_at("addresses", format!("CIDR addresses are only allowed with resolution NONE or STATIC, not {resolution}"));
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut numbers: HashMap<u32, usize> = HashMap::new();
        v.at("ports", |v| {
            for (i, p) in self.ports.iter().enumerate() {
                v.at_index(i, |v| {
                    v.port("number", p.number);
                    if let Some(first) = numbers.insert(p.number, i) {
                        v.error_at(
                            "number",
                            format!("duplicate port number {} (also ports[{first}])", p.number),
                        );
                    }
                    if p.name.is_empty() {
                        v.error_at("name", "port name is required");
                    } else {
                        if let Err(e) = check_port_name(&p.name) {
                            v.error_at("name", e);
                        }
                        if let Some(first) = names.insert(&p.name, i) {
                            v.error_at(
                                "name",
                                format!("duplicate port name {:?} (also ports[{first}])", p.name),
                            );
                        }
                    }
                    if let Some(proto) = p.protocol.as_deref().filter(|p| !p.is_empty()) {
                        if let Err(e) = check_protocol(proto) {
                            v.error_at("protocol", e);
                        }
                    }
                    optional_port(v, "targetPort", p.target_port.filter(|p| *p != 0));
                    // Istio compares the raw text: "" or exactly "TCP".
                    if self.addresses.is_empty()
                        && matches!(p.protocol.as_deref(), None | Some("") | Some("TCP"))
                    {
                        warn_at(
                            v,
                            "protocol",
                            "addresses are required for ports serving TCP (or unset) protocol when ISTIO_META_DNS_AUTO_ALLOCATE is not set on a proxy: without an address the port cannot be told apart from other TCP services on it",
                        );
                    }
                });
            }
        });
        let port_names: HashSet<&str> = self.ports.iter().map(|p| p.name.as_str()).collect();
        match resolution {
            Resolution::None => {
                if !self.endpoints.is_empty() {
                    v.error_at("endpoints", "resolution NONE cannot have endpoints: use STATIC or DNS, or remove endpoints");
                }
                if self.workload_selector.is_some() {
                    warn_at(
                        v,
                        "workloadSelector",
                        "workloadSelector has no effect with resolution NONE",
                    );
                }
            }
            Resolution::Static => {
                if self.endpoints.is_empty() && self.workload_selector.is_none() {
                    warn_at(v, "endpoints", "resolution STATIC without endpoints or workloadSelector has no endpoints: traffic will fail");
                }
                v.each("endpoints", &self.endpoints, |v, e| {
                    validate_workload_entry(v, e, Some(&port_names), false)
                });
                let unix = self.endpoints.iter().any(|e| {
                    e.address
                        .as_deref()
                        .is_some_and(|a| a.starts_with("unix://"))
                });
                if unix && self.ports.len() != 1 {
                    v.error_at(
                        "ports",
                        "unix domain socket endpoints need exactly one service port",
                    );
                }
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                if self.endpoints.is_empty() {
                    v.each("hosts", &self.hosts, |v, h| {
                        if h.contains('*') {
                            v.error(format!("host {h:?} cannot be resolved by DNS: resolution {resolution} without endpoints needs host names without wildcards"));
                        }
                    });
                }
                if resolution == Resolution::DnsRoundRobin && self.endpoints.len() > 1 {
                    v.error_at(
                        "endpoints",
                        format!(
                            "resolution DNS_ROUND_ROBIN allows at most one endpoint, found {}",
                            self.endpoints.len()
                        ),
                    );
                }
                v.each("endpoints", &self.endpoints, |v, e| {
                    if let Some(a) = e.address.as_deref().filter(|a| a.starts_with("unix://")) {
                        v.error_at(
                            "address",
                            format!("endpoint address {a:?} is not a valid FQDN or IP address: resolution {resolution} resolves host names; unix sockets need resolution STATIC"),
                        );
                        return;
                    }
                    validate_workload_entry(v, e, Some(&port_names), true)
                });
                let tcp = self
                    .ports
                    .iter()
                    .any(|p| p.protocol_kind().is_some_and(Protocol::is_tcp));
                if !self.addresses.is_empty() && tcp && self.hosts.len() > 1 {
                    v.warn("a ServiceEntry with addresses and a TCP port should have one host: TCP cannot tell the hosts apart");
                }
            }
            Resolution::DynamicDns => {
                if !self.endpoints.is_empty() {
                    warn_at(
                        v,
                        "endpoints",
                        "endpoints are ignored with resolution DYNAMIC_DNS",
                    );
                }
                if self.location() != Location::MeshExternal {
                    warn_at(
                        v,
                        "location",
                        "resolution DYNAMIC_DNS is only supported for MESH_EXTERNAL services",
                    );
                }
                if !self.hosts.iter().any(|h| h.starts_with("*.")) {
                    warn_at(
                        v,
                        "hosts",
                        "resolution DYNAMIC_DNS is meant for wildcard hosts such as *.example.com",
                    );
                }
            }
        }
        if resolution != Resolution::None && self.hosts.len() > 1 {
            let opaque = self
                .ports
                .iter()
                .any(|p| !p.protocol_kind().is_some_and(|k| k.is_http() || k.is_tls()));
            if opaque {
                v.error("multiple hosts provided with non-HTTP, non-TLS ports: plain TCP traffic cannot be told apart by host; use one host per ServiceEntry, HTTP/TLS ports, or resolution NONE");
            }
        }
        validate_export_to(v, &self.export_to, true, false);
    }
}

// =============================================================================================
// WorkloadEntry and WorkloadGroup
// =============================================================================================

/// WorkloadEntry spec: a non-Kubernetes workload (VM, bare metal); also a ServiceEntry endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP, host name (DNS resolution) or `unix://` socket; may be empty with `network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Port name to port number.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub ports: BTreeMap<String, u32>,
    /// Labels (selected by services and policies).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Network the workload is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Locality `region/zone/subzone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load-balancing weight; 1 when unset or 0 (see [`WorkloadEntry::weight_or_default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Service account of the workload's sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl WorkloadEntry {
    /// The load-balancing weight in effect: 1 when unset or 0.
    pub fn weight_or_default(&self) -> u32 {
        self.weight.filter(|w| *w != 0).unwrap_or(1)
    }
}

impl Validate for WorkloadEntry {
    fn validate(&self, v: &mut Validator) {
        validate_workload_entry(v, self, None, true);
    }
}

/// Istio's `validateWorkloadEntry`; `service_ports` are the ServiceEntry's port names.
fn validate_workload_entry(
    v: &mut Validator,
    we: &WorkloadEntry,
    service_ports: Option<&HashSet<&str>>,
    allow_fqdn: bool,
) {
    let addr = we.address.as_deref().unwrap_or("");
    if addr.is_empty() {
        if is_set(&we.network) {
            warn_at(v, "address", "address is empty with network set: only valid for endpoints reached through a network gateway");
        } else {
            v.error_at(
                "address",
                "address is required (or network, for endpoints on another network)",
            );
        }
    }
    if let Some(path) = addr.strip_prefix("unix://") {
        if let Err(e) = check_unix_address(path) {
            v.error_at("address", e);
        }
        if !we.ports.is_empty() {
            v.error_at("ports", "a unix domain socket endpoint cannot have ports");
        }
    } else if !addr.is_empty() && !is_ip(addr) {
        if !allow_fqdn {
            v.error_at("address", format!("endpoint address {addr:?} is not an IP address: resolution STATIC needs IPs (or unix://)"));
        } else if let Err(e) = check_fqdn(addr) {
            v.error_at(
                "address",
                format!("endpoint address {addr:?} is not an IP or host name: {e}"),
            );
        }
    }
    validate_endpoint_ports(v, &we.ports, service_ports);
    v.labels("labels", &we.labels);
    if let Some(l) = we.locality.as_deref().filter(|l| !l.is_empty()) {
        if l.split('/').count() > 3 || l.split('/').any(str::is_empty) {
            v.error_at(
                "locality",
                format!("invalid locality {l:?}: expected region/zone/subzone"),
            );
        }
    }
}

fn validate_endpoint_ports(
    v: &mut Validator,
    ports: &BTreeMap<String, u32>,
    service_ports: Option<&HashSet<&str>>,
) {
    v.at("ports", |v| {
        for (name, port) in ports {
            v.at_key(name, |v| {
                if let Err(e) = check_port_name(name) {
                    v.error(e);
                }
                if let Some(sp) = service_ports {
                    if !sp.contains(name.as_str()) {
                        v.error(format!(
                            "endpoint port {name:?} is not a port name of the ServiceEntry"
                        ));
                    }
                }
                if !(1..=65535).contains(port) {
                    v.error(format!(
                        "port number {port} is out of range: expected 1-65535"
                    ));
                }
            });
        }
    });
}

/// WorkloadGroup spec: a template for WorkloadEntries registered by VMs, plus a health probe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroup {
    /// Labels and annotations copied to generated WorkloadEntries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WorkloadGroupMetadata>,
    /// Template of the generated WorkloadEntries (address is filled in). Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<WorkloadEntry>,
    /// Readiness probe run by the VM's proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ReadinessProbe>,
}

/// Metadata copied to a WorkloadGroup's WorkloadEntries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroupMetadata {
    /// Labels.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// Readiness probe; a oneof of httpGet, tcpSocket, exec and grpc.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessProbe {
    /// Seconds before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Probe timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Successes to become ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Failures to become unready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    /// HTTP GET probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HTTPHealthCheckConfig>,
    /// TCP connect probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TCPHealthCheckConfig>,
    /// Command probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecHealthCheckConfig>,
    /// gRPC health probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheckConfig>,
}

/// HTTP GET health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPHealthCheckConfig {
    /// Path to request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port. Required.
    #[serde(default)]
    pub port: u32,
    /// Host to connect to (the workload's IP by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` or `HTTPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Request headers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub http_headers: Vec<HTTPHeader>,
}

/// A header sent by an HTTP health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPHeader {
    /// Header name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Header value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// TCP connect health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TCPHealthCheckConfig {
    /// Host to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port. Required.
    #[serde(default)]
    pub port: u32,
}

/// Command health check (exit status 0 is healthy).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecHealthCheckConfig {
    /// Command and arguments. Required.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub command: Vec<String>,
}

/// gRPC health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheckConfig {
    /// Port. Required.
    #[serde(default)]
    pub port: u32,
    /// gRPC service name to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl Validate for WorkloadGroup {
    fn validate(&self, v: &mut Validator) {
        if let Some(m) = &self.metadata {
            v.labels("metadata.labels", &m.labels);
        }
        match &self.template {
            None => v.error_at("template", "template is required: expected the WorkloadEntry fields (ports, labels, serviceAccount, ...) of the group's workloads"),
            Some(t) => v.at("template", |v| {
                let addr = t.address.as_deref().unwrap_or("");
                if let Some(path) = addr.strip_prefix("unix://") {
                    if let Err(e) = check_unix_address(path) {
                        v.error_at("address", e);
                    }
                    if !t.ports.is_empty() {
                        v.error_at("ports", "a unix domain socket endpoint cannot have ports");
                    }
                }
                validate_endpoint_ports(v, &t.ports, None);
                v.labels("labels", &t.labels);
            }),
        }
        if let Some(p) = &self.probe {
            v.nested("probe", p);
        }
    }
}

impl Validate for ReadinessProbe {
    fn validate(&self, v: &mut Validator) {
        for (field, n) in [
            ("initialDelaySeconds", self.initial_delay_seconds),
            ("timeoutSeconds", self.timeout_seconds),
            ("periodSeconds", self.period_seconds),
            ("successThreshold", self.success_threshold),
            ("failureThreshold", self.failure_threshold),
        ] {
            non_negative(v, field, n);
        }
        let methods = oneof(
            v,
            &[
                ("httpGet", self.http_get.is_some()),
                ("tcpSocket", self.tcp_socket.is_some()),
                ("exec", self.exec.is_some()),
                ("grpc", self.grpc.is_some()),
            ],
        );
        if methods == 0 {
            v.error("a probe needs one of httpGet, tcpSocket, exec or grpc");
        }
        if let Some(h) = &self.http_get {
            v.at("httpGet", |v| {
                v.port("port", h.port);
                if let Some(s) = h.scheme.as_deref().filter(|s| !s.is_empty()) {
                    if s != "HTTP" && s != "HTTPS" {
                        v.error_at("scheme", format!("invalid scheme {s:?}: expected \"HTTP\" or \"HTTPS\""));
                    }
                }
                v.each("httpHeaders", &h.http_headers, |v, hd| {
                    let name = hd.name.as_deref().unwrap_or("");
                    let ok = !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !ok {
                        v.error_at("name", format!("invalid probe header name {name:?}: expected letters, digits, '-' and '_'"));
                    }
                });
            });
        }
        if let Some(t) = &self.tcp_socket {
            v.at("tcpSocket", |v| v.port("port", t.port));
        }
        if let Some(e) = &self.exec {
            v.at("exec", |v| {
                if e.command.is_empty() {
                    v.error_at("command", "exec.command is required");
                }
                v.each("command", &e.command, |v, c| {
                    if c.is_empty() {
                        v.error("command entries must not be empty");
                    }
                });
            });
        }
        if let Some(g) = &self.grpc {
            v.at("grpc", |v| v.port("port", g.port));
        }
    }
}

// =============================================================================================
// Sidecar
// =============================================================================================

/// Sidecar spec: narrows what a workload's proxy sees and how it listens.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// Workloads this applies to (the whole namespace when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabelSelector>,
    /// Inbound listeners.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound listeners and the hosts they can reach.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub egress: Vec<IstioEgressListener>,
    /// Connection limits for all inbound traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// Handling of destinations not in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// An inbound listener of a Sidecar.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    /// Port to listen on. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// IP to bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// How traffic reaches the listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where to forward: `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT` or `unix://...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// TLS termination for traffic from outside the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTLSSettings>,
    /// Connection limits for this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener of a Sidecar and the hosts it exposes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// Port (all ports when unset; 0 with a unix socket bind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// IP or `unix://` socket to bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// How traffic reaches the listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// `namespace/dnsName` hosts reachable through the listener. Required.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hosts: Vec<String>,
}

/// A Sidecar listener port (number 0 means a unix socket).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol (sniffed when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Deprecated; has no effect on Sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

impl SidecarPort {
    /// The parsed protocol; `None` when unset (sniffed) or unknown.
    pub fn protocol_kind(&self) -> Option<Protocol> {
        self.protocol.as_deref().and_then(Protocol::parse)
    }
}

/// Outbound handling of destinations outside the registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// REGISTRY_ONLY or ALLOW_ANY; REGISTRY_ONLY when unset here (the mesh setting applies
    /// when the whole policy is unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficPolicyMode>,
    /// Send unknown traffic to this egress proxy (ALLOW_ANY only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

impl OutboundTrafficPolicy {
    /// The mode in effect for this policy: REGISTRY_ONLY when unset (the proto default).
    pub fn mode(&self) -> OutboundTrafficPolicyMode {
        self.mode.unwrap_or_default()
    }
}

impl Validate for Sidecar {
    fn validate(&self, v: &mut Validator) {
        if let Some(ws) = &self.workload_selector {
            if ws.labels.is_empty() {
                // Istio warns (backwards compatibility): it applies to the whole namespace.
                warn_at(v, "workloadSelector", "workload selector specified without labels: this Sidecar applies to every workload in the namespace, as if workloadSelector were not set");
            }
            v.nested("workloadSelector", ws);
        }
        if self.egress.is_empty()
            && self.ingress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            v.error("empty Sidecar: expected at least one of egress, ingress, outboundTrafficPolicy or inboundConnectionPool");
        }
        let mut ingress_ports: HashMap<u32, usize> = HashMap::new();
        v.at("ingress", |v| {
            for (i, l) in self.ingress.iter().enumerate() {
                v.at_index(i, |v| {
                    if let Some(p) = &l.port {
                        if let Some(first) = ingress_ports.insert(p.number, i) {
                            v.error_at(
                                "port.number",
                                format!(
                                    "duplicate ingress port {} (also ingress[{first}])",
                                    p.number
                                ),
                            );
                        }
                    }
                    validate_ingress_listener(v, l);
                });
            }
        });
        let mut egress_ports: HashMap<u32, usize> = HashMap::new();
        let mut egress_sockets: HashSet<&str> = HashSet::new();
        let mut catch_all: Option<usize> = None;
        let last = self.egress.len().saturating_sub(1);
        let ns = v.namespace.clone();
        v.at("egress", |v| {
            for (i, l) in self.egress.iter().enumerate() {
                v.at_index(i, |v| {
                    let bind = l.bind.as_deref().unwrap_or("");
                    match &l.port {
                        None => match catch_all {
                            Some(first) => v.error(format!(
                                "only one egress listener may omit port (also egress[{first}])"
                            )),
                            None => {
                                catch_all = Some(i);
                                if i != last {
                                    v.error(
                                        "the egress listener without port must be the last one",
                                    );
                                }
                            }
                        },
                        Some(p) => {
                            v.at("port", |v| validate_egress_port(v, p, bind, l.capture_mode));
                            if p.number == 0 {
                                if !egress_sockets.insert(bind) {
                                    v.error_at(
                                        "bind",
                                        format!("duplicate unix domain socket {bind:?}"),
                                    );
                                }
                            } else if let Some(first) = egress_ports.insert(p.number, i) {
                                v.error_at(
                                    "port.number",
                                    format!(
                                        "duplicate egress port {} (also egress[{first}])",
                                        p.number
                                    ),
                                );
                            }
                        }
                    }
                    validate_egress_hosts(v, &l.hosts, &ns);
                });
            }
        });
        if let Some(p) = &self.outbound_traffic_policy {
            v.at("outboundTrafficPolicy", |v| {
                if let Some(proxy) = &p.egress_proxy {
                    if p.mode() != OutboundTrafficPolicyMode::AllowAny {
                        v.error_at("egressProxy", "egressProxy needs mode ALLOW_ANY");
                    }
                    if proxy.port.is_none() {
                        v.error_at("egressProxy.port", "egressProxy port is required");
                    }
                    v.nested("egressProxy", proxy);
                    if let Err(e) = check_fqdn(&proxy.host) {
                        v.error_at(
                            "egressProxy.host",
                            format!("egressProxy host must be a fully qualified domain name: {e}"),
                        );
                    }
                }
            });
        }
        if let Some(p) = &self.inbound_connection_pool {
            v.nested("inboundConnectionPool", p);
        }
    }
}

fn validate_sidecar_port_common(v: &mut Validator, p: &SidecarPort) {
    if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
        if let Err(e) = check_port_name(name) {
            v.error_at("name", e);
        }
    }
    if let Some(proto) = p.protocol.as_deref().filter(|p| !p.is_empty()) {
        if let Err(e) = check_protocol(proto) {
            v.error_at("protocol", e);
        }
    }
    if p.target_port.is_some_and(|t| t > 0) {
        v.error_at(
            "targetPort",
            "targetPort has no impact on Sidecars: remove it (the listener uses port.number)",
        );
    }
}

fn validate_egress_port(
    v: &mut Validator,
    p: &SidecarPort,
    bind: &str,
    capture: Option<CaptureMode>,
) {
    validate_sidecar_port_common(v, p);
    if p.number == 0 {
        match bind.strip_prefix("unix://") {
            None => v.error_at("number", "port 0 needs a unix domain socket bind: expected bind: unix:///path or a port 1-65535"),
            Some(path) => {
                if let Err(e) = check_unix_address(path) {
                    v.error(e);
                }
            }
        }
        if matches!(capture, Some(CaptureMode::Iptables)) {
            v.error("captureMode must be DEFAULT or NONE for unix domain socket listeners");
        }
    } else {
        v.port("number", p.number);
        if !bind.is_empty() && !is_ip(bind) {
            v.error(format!(
                "invalid bind address {bind:?}: expected an IP address"
            ));
        }
    }
}

fn validate_egress_hosts(v: &mut Validator, hosts: &[String], namespace: &str) {
    if hosts.is_empty() {
        v.error_at("hosts", "an egress listener needs at least one host: expected namespace/dnsName entries such as \"./*\" or \"istio-system/*\"");
    }
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    v.each("hosts", hosts, |v, h| {
        validate_namespaced_host(v, h, HostScope::Sidecar);
        if let Some((ns, name)) = h.split_once('/') {
            let ns = if ns == "." {
                namespace.to_string()
            } else {
                ns.to_string()
            };
            let names = seen.entry(ns).or_default();
            let dup = if name == "*" {
                !names.is_empty()
            } else {
                names.contains(name) || names.contains("*")
            };
            if dup {
                v.warn(format!(
                    "duplicate egress host {h:?}: already covered by an earlier entry"
                ));
            }
            names.insert(name.to_string());
        }
    });
    if seen.get("*").is_some_and(|n| n.contains("*")) && seen.len() > 1 {
        warn_at(
            v,
            "hosts",
            "\"*/*\" already selects every host: the other entries have no effect",
        );
    }
}

fn validate_ingress_listener(v: &mut Validator, l: &IstioIngressListener) {
    let Some(p) = &l.port else {
        v.error_at("port", "port is required for ingress listeners");
        return;
    };
    v.at("port", |v| {
        validate_sidecar_port_common(v, p);
        v.port("number", p.number);
    });
    if let Some(bind) = l.bind.as_deref().filter(|b| !b.is_empty()) {
        if !is_ip(bind) {
            v.error_at(
                "bind",
                format!("invalid bind address {bind:?}: expected an IP address"),
            );
        }
    }
    if let Some(ep) = l.default_endpoint.as_deref().filter(|e| !e.is_empty()) {
        if let Err(e) = check_default_endpoint(ep) {
            v.error_at("defaultEndpoint", e);
        }
    }
    if let Some(tls) = &l.tls {
        v.at("tls", |v| {
            if !tls.subject_alt_names.is_empty() {
                v.error_at("subjectAltNames", "subjectAltNames is not supported for Sidecar ingress TLS: client certificates are verified against caCertificates only; remove subjectAltNames");
            }
            if tls.https_redirect == Some(true) {
                v.error_at("httpsRedirect", "httpsRedirect is not supported for Sidecar ingress TLS");
            }
            if is_set(&tls.credential_name) {
                v.error_at("credentialName", "credentialName is not supported for Sidecar ingress TLS: use serverCertificate and privateKey files");
            }
            if !tls.credential_names.is_empty() {
                v.error_at("credentialNames", "credentialNames is not supported for Sidecar ingress TLS: use serverCertificate and privateKey files");
            }
            if !tls.tls_certificates.is_empty() {
                v.error_at("tlsCertificates", "tlsCertificates is not supported for Sidecar ingress TLS: use serverCertificate and privateKey files");
            }
            if matches!(tls.mode(), ServerTLSMode::IstioMutual | ServerTLSMode::AutoPassthrough) {
                v.error_at("mode", format!("mode {} is not allowed for Sidecar ingress TLS: expected SIMPLE, MUTUAL or OPTIONAL_MUTUAL", tls.mode()));
            }
            if !p.protocol_kind().is_some_and(Protocol::is_tls) {
                v.error("Sidecar ingress TLS needs port protocol HTTPS or TLS");
            }
            validate_server_tls(v, tls);
        });
    }
    if let Some(pool) = &l.connection_pool {
        v.nested("connectionPool", pool);
        if pool.http.is_some() && !p.protocol_kind().is_some_and(Protocol::is_http) {
            warn_at(v, "connectionPool.http", format!("HTTP connection pool settings on port {} whose protocol is not HTTP: only tcp settings apply", p.number));
        }
    }
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT`, `:PORT` or `unix://...`.
fn check_default_endpoint(ep: &str) -> Result<(), String> {
    if let Some(path) = ep.strip_prefix("unix://") {
        return check_unix_address(path);
    }
    let expected = "expected 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path";
    let (host, port) = if let Some(rest) = ep.strip_prefix('[') {
        let Some((h, p)) = rest.split_once("]:") else {
            return Err(format!("invalid defaultEndpoint {ep:?}: {expected}"));
        };
        (h, p)
    } else {
        match ep.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p),
            _ => return Err(format!("invalid defaultEndpoint {ep:?}: {expected}")),
        }
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        return Err(format!("invalid defaultEndpoint host {host:?}: {expected}"));
    }
    match port.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(()),
        _ => Err(format!(
            "invalid defaultEndpoint port {port:?}: expected 1-65535"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Severity;
    use crate::resource::{typed, Parsed, Resource};
    use crate::validate::FieldIssue;
    use serde::de::DeserializeOwned;
    use serde_json::{json, Value};

    /// Strips the common indentation so YAML can sit indented in the test source.
    fn dedent(text: &str) -> String {
        let indent = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .min()
            .unwrap_or(0);
        text.lines()
            .map(|l| l.get(indent..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn yaml_value(text: &str) -> Value {
        let docs = crate::yaml::parse_documents("t.yaml", &dedent(text)).unwrap();
        docs[0].value.clone()
    }

    fn spec<T: DeserializeOwned>(text: &str) -> T {
        match typed(&yaml_value(text)) {
            Ok(t) => t,
            Err((path, msg)) => panic!("{path}: {msg}"),
        }
    }

    fn from_json<T: DeserializeOwned>(v: Value) -> T {
        match typed(&v) {
            Ok(t) => t,
            Err((path, msg)) => panic!("{path}: {msg}"),
        }
    }

    fn issues<T: Validate>(s: &T) -> Vec<FieldIssue> {
        let mut v = Validator::new("default", "istio-system");
        v.nested("spec", s);
        v.issues
    }

    #[track_caller]
    fn assert_clean<T: Validate>(s: &T) {
        let is: Vec<_> = issues(s)
            .into_iter()
            .filter(|i| i.severity == Severity::Error)
            .collect();
        assert!(is.is_empty(), "unexpected errors: {is:#?}");
    }

    #[track_caller]
    fn assert_issue<T: Validate>(s: &T, severity: Severity, path: &str, fragment: &str) {
        let is = issues(s);
        assert!(
            is.iter()
                .any(|i| i.severity == severity && i.path == path && i.message.contains(fragment)),
            "expected {severity} at {path} containing {fragment:?}, got {is:#?}"
        );
    }

    #[track_caller]
    fn assert_error<T: Validate>(s: &T, path: &str, fragment: &str) {
        assert_issue(s, Severity::Error, path, fragment);
    }

    #[track_caller]
    fn assert_warning<T: Validate>(s: &T, path: &str, fragment: &str) {
        assert_issue(s, Severity::Warning, path, fragment);
    }

    /// Serializing what was read gives back the same document.
    #[track_caller]
    fn assert_round_trip<T: DeserializeOwned + Serialize>(text: &str) {
        let original = yaml_value(text);
        let parsed: T = from_json(original.clone());
        assert_eq!(serde_json::to_value(&parsed).unwrap(), original);
    }

    // ----- enums, serde conventions -------------------------------------------------------------

    #[test]
    fn enums_use_istio_spellings_and_accept_numbers() {
        let tls: ServerTLSSettings = from_json(json!({"mode": "OPTIONAL_MUTUAL"}));
        assert_eq!(tls.mode, Some(ServerTLSMode::OptionalMutual));
        let tls: ServerTLSSettings = from_json(json!({"mode": 1, "minProtocolVersion": "TLSV1_2"}));
        assert_eq!(tls.mode(), ServerTLSMode::Simple);
        assert_eq!(tls.min_protocol_version, Some(TLSProtocol::TlsV1_2));
        assert_eq!(
            serde_json::to_value(&tls).unwrap(),
            json!({"mode": "SIMPLE", "minProtocolVersion": "TLSV1_2"})
        );
        let lb: LoadBalancerSettings = from_json(json!({"simple": 4}));
        assert_eq!(lb.simple, Some(SimpleLB::RoundRobin));
        for (text, mode) in [
            ("DISABLE", ClientTLSMode::Disable),
            ("ISTIO_MUTUAL", ClientTLSMode::IstioMutual),
        ] {
            assert_eq!(ClientTLSMode::from_name(text), Some(mode));
        }
        assert_eq!(
            Resolution::from_name("DNS_ROUND_ROBIN"),
            Some(Resolution::DnsRoundRobin)
        );
        assert_eq!(
            Resolution::from_name("DYNAMIC_DNS"),
            Some(Resolution::DynamicDns)
        );
        assert_eq!(Location::MeshInternal.as_str(), "MESH_INTERNAL");
        assert_eq!(OutboundTrafficPolicyMode::AllowAny.number(), 1);
        assert_eq!(
            CaptureMode::from_name("IPTABLES"),
            Some(CaptureMode::Iptables)
        );
        assert_eq!(
            H2UpgradePolicy::from_name("DO_NOT_UPGRADE"),
            Some(H2UpgradePolicy::DoNotUpgrade)
        );
        assert_eq!(
            RedirectPortSelection::from_name("FROM_REQUEST_PORT"),
            Some(RedirectPortSelection::FromRequestPort)
        );
        for bad in [
            json!({"mode": "simple"}),
            json!({"mode": 9}),
            json!({"mode": true}),
        ] {
            let err = typed::<ServerTLSSettings>(&bad).unwrap_err();
            assert_eq!(err.0, "mode", "{err:?}");
        }
        let err = typed::<ServerTLSSettings>(&json!({"mode": "simple"})).unwrap_err();
        assert!(
            err.1.contains("expected one of PASSTHROUGH, SIMPLE"),
            "{}",
            err.1
        );
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let err = typed::<Gateway>(&json!({
            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"], "tlss": {}}]
        }))
        .unwrap_err();
        assert_eq!(err.0, "servers[0].tlss");
        assert!(err.1.contains("unknown field `tlss`"), "{}", err.1);
        let err = typed::<VirtualService>(
            &json!({"http": [{"route": [{"destination": {"host": "a", "weigth": 1}}]}]}),
        )
        .unwrap_err();
        assert_eq!(err.0, "http[0].route[0].destination.weigth");
        let err = typed::<DestinationRule>(&json!({"host": "a", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnection": 1}}}}))
            .unwrap_err();
        assert!(err.1.contains("maxConnection"), "{}", err.1);
    }

    #[test]
    fn nulls_read_as_empty_and_json_names_match_the_crd() {
        let vs: VirtualService = spec(
            "
            hosts: [reviews]
            exportTo:
            http:
            - route:
              - destination: {host: reviews}
            ",
        );
        assert!(vs.export_to.is_empty());
        let dr: DestinationRule = from_json(json!({
            "host": "r",
            "trafficPolicy": {
                "connectionPool": {"http": {"http1MaxPendingRequests": 1, "http2MaxRequests": 2, "h2UpgradePolicy": "UPGRADE"}},
                "outlierDetection": {"consecutive5xxErrors": 7, "splitExternalLocalOriginErrors": true, "minHealthPercent": 1},
                "loadBalancer": {"localityLbSetting": {"enabled": true}, "warmup": {"duration": "10s"}},
                "proxyProtocol": {"version": "V2"},
                "tunnel": {"protocol": "CONNECT", "targetHost": "x", "targetPort": 443}
            }
        }));
        let tp = dr.traffic_policy.unwrap();
        assert_eq!(
            tp.outlier_detection.unwrap().consecutive_5xx_errors,
            Some(7)
        );
        assert_eq!(
            tp.connection_pool
                .unwrap()
                .http
                .unwrap()
                .http1_max_pending_requests,
            Some(1)
        );
        let r: HTTPRoute =
            from_json(json!({"mirror_percent": 5, "route": [{"destination": {"host": "a"}}]}));
        assert_eq!(r.mirror_percent, Some(5));
        assert_eq!(serde_json::to_value(&r).unwrap()["mirrorPercent"], 5);
        let rw: HTTPRewrite =
            from_json(json!({"uriRegexRewrite": {"match": "^/a(.*)", "rewrite": "/b\\1"}}));
        assert_eq!(
            rw.uri_regex_rewrite.unwrap().pattern.as_deref(),
            Some("^/a(.*)")
        );
        let body: HTTPBody = from_json(json!({"string": "hi"}));
        assert_eq!(body.string.as_deref(), Some("hi"));
    }

    // ----- Gateway ------------------------------------------------------------------------------

    const GATEWAY: &str = r#"
        selector:
          app: my-gateway-controller
        servers:
        - port:
            number: 80
            name: http
            protocol: HTTP
          hosts:
          - uk.bookinfo.com
          - eu.bookinfo.com
          tls:
            httpsRedirect: true
        - port:
            number: 443
            name: https-443
            protocol: HTTPS
          hosts:
          - uk.bookinfo.com
          - eu.bookinfo.com
          tls:
            mode: SIMPLE
            serverCertificate: /etc/certs/servercert.pem
            privateKey: /etc/certs/privatekey.pem
        - port:
            number: 9443
            name: https-9443
            protocol: HTTPS
          hosts:
          - "bookinfo-namespace/*.bookinfo.com"
          tls:
            mode: SIMPLE
            credentialName: bookinfo-secret
        - port:
            number: 9080
            name: http-wildcard
            protocol: HTTP
          hosts:
          - "*"
        - port:
            number: 2379
            name: mongo
            protocol: MONGO
          hosts:
          - "*"
    "#;

    fn gateway_with(server: Value) -> Gateway {
        from_json(json!({"selector": {"istio": "ingressgateway"}, "servers": [server]}))
    }

    #[test]
    fn gateway_docs_example_is_valid_and_round_trips() {
        let gw: Gateway = spec(GATEWAY);
        assert_eq!(gw.servers.len(), 5);
        assert_eq!(
            gw.servers[0].tls.as_ref().unwrap().mode(),
            ServerTLSMode::Passthrough
        );
        assert_eq!(
            gw.servers[4].port.as_ref().unwrap().protocol_kind(),
            Some(Protocol::Mongo)
        );
        assert!(issues(&gw).is_empty(), "{:#?}", issues(&gw));
        assert_round_trip::<Gateway>(GATEWAY);
    }

    #[test]
    fn gateway_requires_servers_ports_and_hosts() {
        assert_error(&Gateway::default(), "spec.servers", "at least one server");
        let gw = gateway_with(json!({"hosts": []}));
        assert_error(&gw, "spec.servers[0].hosts", "at least one host");
        assert_error(&gw, "spec.servers[0].port", "port is required");
        let gw = gateway_with(json!({"port": {"number": 0, "protocol": "FOO"}, "hosts": ["*"]}));
        assert_error(&gw, "spec.servers[0].port.number", "1-65535");
        assert_error(
            &gw,
            "spec.servers[0].port.protocol",
            "invalid protocol \"FOO\"",
        );
        assert_error(&gw, "spec.servers[0].port.name", "port name is required");
        let gw = gateway_with(
            json!({"port": {"number": 8080, "name": "g", "protocol": "grpc-web"}, "hosts": ["*"]}),
        );
        assert_clean(&gw);
    }

    #[test]
    fn gateway_hosts_are_namespace_slash_dns_name() {
        for ok in [
            "*",
            "foo.example.com",
            "*/foo.example.com",
            "./*",
            "prod/*.example.com",
        ] {
            assert_clean(&gateway_with(
                json!({"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [ok]}),
            ));
        }
        let gw = gateway_with(
            json!({"port": {"number": 80, "name": "http", "protocol": "HTTP"},
            "hosts": ["Bad_NS/foo.com", "~/foo.com", "prod/foo..com", "/foo.com"]}),
        );
        assert_error(
            &gw,
            "spec.servers[0].hosts[0]",
            "invalid namespace \"Bad_NS\"",
        );
        assert_error(&gw, "spec.servers[0].hosts[1]", "invalid namespace \"~\"");
        assert_error(&gw, "spec.servers[0].hosts[2]", "invalid host");
        assert_error(&gw, "spec.servers[0].hosts[3]", "must both be non-empty");
    }

    #[test]
    fn gateway_tls_rules() {
        let port = |p: &str| json!({"number": 443, "name": "p", "protocol": p});
        // HTTPS/TLS need tls.
        let gw = gateway_with(json!({"port": port("HTTPS"), "hosts": ["*"]}));
        assert_error(&gw, "spec.servers[0].tls", "need tls settings");
        // Plain HTTP: only httpsRedirect.
        let gw = gateway_with(
            json!({"port": port("http"), "hosts": ["*"], "tls": {"mode": "SIMPLE", "credentialName": "c"}}),
        );
        assert_error(&gw, "spec.servers[0].tls", "cannot terminate TLS");
        let gw = gateway_with(
            json!({"port": port("TCP"), "hosts": ["*"], "tls": {"httpsRedirect": true}}),
        );
        assert_error(&gw, "spec.servers[0].tls", "cannot have TLS settings");
        assert_warning(
            &gw,
            "spec.servers[0].tls.httpsRedirect",
            "only has an effect on HTTP",
        );
        // SIMPLE needs a credential or a cert and key.
        let gw =
            gateway_with(json!({"port": port("HTTPS"), "hosts": ["*"], "tls": {"mode": "SIMPLE"}}));
        assert_error(
            &gw,
            "spec.servers[0].tls.serverCertificate",
            "SIMPLE TLS requires a server certificate",
        );
        assert_error(
            &gw,
            "spec.servers[0].tls.privateKey",
            "SIMPLE TLS requires a private key",
        );
        // MUTUAL needs a CA unless a credential provides it.
        let gw = gateway_with(json!({"port": port("HTTPS"), "hosts": ["*"],
            "tls": {"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k"}}));
        assert_error(
            &gw,
            "spec.servers[0].tls.caCertificates",
            "MUTUAL TLS requires a CA bundle",
        );
        assert_clean(&gateway_with(
            json!({"port": port("HTTPS"), "hosts": ["*"], "tls": {"mode": "MUTUAL", "credentialName": "c"}}),
        ));
        assert_clean(&gateway_with(json!({"port": port("HTTPS"), "hosts": ["*"],
            "tls": {"mode": "SIMPLE", "credentialNames": ["rsa", "ecdsa"]}})));
        assert_clean(&gateway_with(json!({"port": port("HTTPS"), "hosts": ["*"],
            "tls": {"mode": "OPTIONAL_MUTUAL", "tlsCertificates": [{"serverCertificate": "/c", "privateKey": "/k", "caCertificates": "/ca"}]}})));
        // Credential forms are exclusive; at most two.
        let gw = gateway_with(json!({"port": port("HTTPS"), "hosts": ["*"],
            "tls": {"mode": "SIMPLE", "credentialName": "a", "credentialNames": ["b", "c", "d"]}}));
        assert_error(
            &gw,
            "spec.servers[0].tls.credentialNames",
            "only one of credentialName, credentialNames, serverCertificate or tlsCertificates",
        );
        assert_error(&gw, "spec.servers[0].tls.credentialNames", "at most 2");
        let gw = gateway_with(json!({"port": port("HTTPS"), "hosts": ["*"],
            "tls": {"mode": "SIMPLE", "tlsCertificates": [{"serverCertificate": "/c"}]}}));
        assert_error(
            &gw,
            "spec.servers[0].tls.tlsCertificates[0].privateKey",
            "privateKey",
        );
        // ISTIO_MUTUAL uses Istio's certificates.
        let gw = gateway_with(
            json!({"port": port("TLS"), "hosts": ["*"], "tls": {"mode": "ISTIO_MUTUAL", "serverCertificate": "/c"}}),
        );
        assert_error(&gw, "spec.servers[0].tls.serverCertificate", "ISTIO_MUTUAL");
        // Versions and ciphers.
        let gw = gateway_with(
            json!({"port": port("HTTPS"), "hosts": ["*"], "tls": {"mode": "SIMPLE", "credentialName": "c",
            "minProtocolVersion": "TLSV1_3", "maxProtocolVersion": "TLSV1_2", "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256", "NOPE"]}}),
        );
        assert_error(
            &gw,
            "spec.servers[0].tls.minProtocolVersion",
            "greater than maxProtocolVersion",
        );
        assert_warning(
            &gw,
            "spec.servers[0].tls.cipherSuites[1]",
            "unsupported cipher suite",
        );
    }

    #[test]
    fn gateway_port_names_unique_selector_and_bind() {
        let gw: Gateway = from_json(json!({"selector": {"bad key!": "x"}, "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]},
            {"port": {"number": 81, "name": "http", "protocol": "HTTP"}, "hosts": ["*"], "bind": "not-an-ip"},
            {"port": {"number": 82, "name": "uds", "protocol": "HTTP"}, "hosts": ["*"], "bind": "unix:///sock"}
        ]}));
        assert_error(
            &gw,
            "spec.servers[1].port.name",
            "duplicate port name \"http\" (also servers[0])",
        );
        assert_error(&gw, "spec.selector[\"bad key!\"]", "invalid label key");
        assert_error(&gw, "spec.servers[1].bind", "invalid bind address");
        assert_error(
            &gw,
            "spec.servers[2].port.number",
            "must be 0 with a unix domain socket",
        );
    }

    #[test]
    fn gateway_resource_is_validated_with_located_paths() {
        let text = dedent(
            "
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: gw, namespace: istio-system}
            spec:
              selector: {istio: ingressgateway}
              servers:
              - port: {number: 443, name: https, protocol: HTTPS}
              hosts: ['*']
            ",
        );
        // `hosts` at the wrong indentation lands at spec level: an unknown field.
        let docs = crate::yaml::parse_documents("gw.yaml", &text).unwrap();
        let err = Resource::from_document(&docs[0], "default").unwrap_err();
        assert_eq!(err[0].field, "spec.hosts");
        assert!(err[0].message.contains("unknown field `hosts`"), "{err:?}");
        assert_eq!(err[0].location.as_ref().unwrap().line, 9, "{err:?}");

        let text = text.replace("\n  hosts", "\n    hosts");
        let docs = crate::yaml::parse_documents("gw.yaml", &text).unwrap();
        let Parsed::Resource(r) = Resource::from_document(&docs[0], "default").unwrap() else {
            panic!("not a resource")
        };
        let diags = r.validate("istio-system");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].field, "spec.servers[0].tls");
        assert_eq!(diags[0].location.as_ref().unwrap().line, 8, "{diags:?}");
    }

    // ----- VirtualService -----------------------------------------------------------------------

    const VIRTUAL_SERVICE: &str = r#"
        hosts:
        - reviews.prod.svc.cluster.local
        - uk.bookinfo.com
        gateways:
        - some-config-namespace/my-gateway
        - mesh
        http:
        - name: reviews-v2-routes
          match:
          - headers:
              cookie:
                exact: "user=dev-123"
            uri:
              prefix: "/wpcatalog"
            ignoreUriCase: true
          - uri:
              regex: "^/consumercatalog/v[0-9]+"
          rewrite:
            uri: "/newcatalog"
          route:
          - destination:
              host: reviews.prod.svc.cluster.local
              subset: v2
              port:
                number: 9080
            weight: 80
            headers:
              request:
                set:
                  x-routed: "yes"
          - destination:
              host: reviews.qa.svc.cluster.local
            weight: 20
          timeout: 10s
          retries:
            attempts: 3
            perTryTimeout: 2s
            retryOn: gateway-error, connect-failure,refused-stream,503
          fault:
            delay:
              percentage:
                value: 0.1
              fixedDelay: 5s
          corsPolicy:
            allowOrigins:
            - exact: https://example.com
            - regex: "https://.*\\.example\\.org"
            allowMethods: [POST, GET]
            allowHeaders: [x-custom-header]
            maxAge: 24h
            allowCredentials: false
          mirror:
            host: reviews.shadow.svc.cluster.local
          mirrorPercentage:
            value: 50.0
        - match:
          - uri:
              prefix: /old
          redirect:
            uri: /new
            authority: newratings.default.svc.cluster.local
            redirectCode: 308
        - match:
          - uri:
              exact: /health
          directResponse:
            status: 503
            body:
              string: "unknown path"
        - route:
          - destination:
              host: reviews.prod.svc.cluster.local
              subset: v1
        tcp:
        - match:
          - port: 27017
            destinationSubnets: [10.0.0.0/8]
          route:
          - destination:
              host: mongo.backup.svc.cluster.local
              port:
                number: 5555
        exportTo: ["."]
    "#;

    fn vs_http(route: Value) -> VirtualService {
        from_json(json!({"hosts": ["reviews"], "http": [route]}))
    }

    fn to_reviews() -> Value {
        json!([{"destination": {"host": "reviews"}}])
    }

    #[test]
    fn virtual_service_docs_example_is_valid_and_round_trips() {
        let vs: VirtualService = spec(VIRTUAL_SERVICE);
        assert_clean(&vs);
        assert_round_trip::<VirtualService>(VIRTUAL_SERVICE);
        assert_eq!(vs.http[0].route_weights(), vec![80, 20]);
        assert_eq!(vs.http[3].route_weights(), vec![100]);
        assert_eq!(vs.http[1].redirect.as_ref().unwrap().code(), 308);
        assert_eq!(vs.http[0].retry_policy().attempts(), 3);
        assert_eq!(vs.http[3].retry_policy(), HTTPRetry::mesh_default());
        assert_eq!(
            vs.http[3].retry_policy().retry_on(),
            HTTPRetry::DEFAULT_RETRY_ON
        );
        assert!(vs.http[3].timeout.is_none(), "no default timeout");
        assert_eq!(HTTPRedirect::default().code(), 301);
    }

    #[test]
    fn virtual_service_hosts_and_gateways() {
        let vs: VirtualService =
            from_json(json!({"hosts": ["*"], "http": [{"route": to_reviews()}]}));
        assert_error(
            &vs,
            "spec.hosts[0]",
            "not allowed for a VirtualService bound to the mesh",
        );
        let vs: VirtualService = from_json(
            json!({"hosts": ["*"], "gateways": ["gw"], "http": [{"route": to_reviews()}]}),
        );
        assert_clean(&vs);
        let vs: VirtualService = from_json(
            json!({"hosts": ["*.foo.com", "bar.foo.com", "10.1.2.3", "a b"],
            "gateways": ["bad ns/gw", "ns/", "istio-system/gw", "gw.istio-system"], "http": [{"route": to_reviews()}]}),
        );
        assert_error(&vs, "spec.hosts[3]", "invalid host \"a b\"");
        assert_error(&vs, "spec.gateways[0]", "invalid namespace \"bad ns\"");
        assert_error(&vs, "spec.gateways[1]", "must both be non-empty");
        assert_warning(&vs, "spec.gateways[3]", "prefer \"istio-system/gw\"");
        let vs: VirtualService = from_json(
            json!({"hosts": ["*.foo.com", "bar.foo.com"], "http": [{"route": to_reviews()}]}),
        );
        assert_error(
            &vs,
            "spec.hosts[1]",
            "duplicate host \"bar.foo.com\": overlaps hosts[0]",
        );
        let vs: VirtualService = from_json(json!({"hosts": ["a"]}));
        assert_error(&vs, "spec", "at least one of http, tls or tcp");
        let vs: VirtualService = from_json(
            json!({"hosts": ["a"], "http": [{"route": to_reviews()}], "exportTo": ["~"]}),
        );
        assert_error(&vs, "spec.exportTo[0]", "only allowed on ServiceEntry");
    }

    #[test]
    fn delegate_virtual_services() {
        let root: VirtualService = from_json(json!({"hosts": ["a"], "http": [
            {"match": [{"uri": {"prefix": "/x"}}], "delegate": {"name": "child", "namespace": "ns"}},
            {"delegate": {"namespace": "ns"}, "route": to_reviews()}
        ]}));
        assert_error(&root, "spec.http[1].route", "cannot also set route");
        assert_error(
            &root,
            "spec.http[1].delegate.name",
            "delegate name is required",
        );
        let child: VirtualService = from_json(json!({"http": [{"route": to_reviews()}]}));
        assert_clean(&child);
        assert!(child.is_delegate());
        let child: VirtualService =
            from_json(json!({"gateways": ["gw"], "tcp": [{"route": to_reviews()}],
            "http": [{"delegate": {"name": "x"}}]}));
        assert_error(&child, "spec.gateways", "is a delegate");
        assert_error(&child, "spec.tcp", "cannot have tcp routes");
        assert_error(&child, "spec.http[0].delegate", "cannot delegate again");
    }

    #[test]
    fn http_route_needs_exactly_one_action() {
        assert_error(
            &vs_http(json!({})),
            "spec.http[0]",
            "needs one of route, redirect, directResponse or delegate",
        );
        let vs = vs_http(json!({"route": to_reviews(), "redirect": {"uri": "/x"}}));
        assert_error(
            &vs,
            "spec.http[0].redirect",
            "only one of route, redirect or directResponse",
        );
        let vs = vs_http(
            json!({"directResponse": {"status": 200}, "redirect": {"uri": "/x"}, "fault": {"abort": {"httpStatus": 500}}}),
        );
        assert_error(&vs, "spec.http[0].directResponse", "only one of");
        assert_error(
            &vs,
            "spec.http[0].fault",
            "cannot be combined with redirect",
        );
        let vs = vs_http(
            json!({"route": to_reviews(), "mirror": {"host": "a"}, "mirrors": [{"destination": {"host": "b"}}]}),
        );
        assert_error(&vs, "spec.http[0].mirrors", "only one of mirror or mirrors");
    }

    #[test]
    fn route_destinations_and_weights() {
        let vs = vs_http(json!({"route": [
            {"destination": {"host": "reviews", "subset": "v_1", "port": {"number": 70000}}, "weight": 0},
            {"destination": {"host": ""}, "weight": -1},
            {"weight": 1},
            {"destination": {"host": "*"}}
        ]}));
        assert_error(
            &vs,
            "spec.http[0].route[0].destination.subset",
            "invalid subset name \"v_1\"",
        );
        assert_error(
            &vs,
            "spec.http[0].route[0].destination.port.number",
            "out of range",
        );
        assert_error(
            &vs,
            "spec.http[0].route[1].destination.host",
            "destination host is required",
        );
        assert_error(&vs, "spec.http[0].route[1].weight", "weight -1 is negative");
        assert_error(
            &vs,
            "spec.http[0].route[2].destination",
            "destination is required",
        );
        assert_error(
            &vs,
            "spec.http[0].route[3].destination.host",
            "cannot be \"*\"",
        );
        let vs = vs_http(
            json!({"route": [{"destination": {"host": "a"}, "weight": 0}, {"destination": {"host": "b"}}]}),
        );
        assert_error(&vs, "spec.http[0].route", "all destination weights are 0");
        // A lone destination needs no weight.
        assert_clean(&vs_http(
            json!({"route": [{"destination": {"host": "a"}, "weight": 0}]}),
        ));
        assert_eq!(
            relative_weights([Some(3), None, Some(-2)].into_iter()),
            vec![3, 0, 0]
        );
    }

    #[test]
    fn http_matches() {
        let vs = vs_http(json!({"route": to_reviews(), "match": [{
            "uri": {"exact": "/a", "prefix": "/a"},
            "method": {"prefix": ""},
            "authority": {"regex": "(a"},
            "scheme": {"regex": ""},
            "headers": {"X-User": {"exact": "a"}, "bad header": {"exact": "a"}, "@request.auth.claims.group": {"exact": "admin"}},
            "withoutHeaders": {"x-debug": {"regex": "*"}},
            "queryParams": {"v": {"regex": "[0-9"}},
            "port": 99999,
            "sourceLabels": {"app": "-bad"},
            "sourceNamespace": "bad_ns",
            "gateways": ["mesh"]
        }]}));
        assert_error(
            &vs,
            "spec.http[0].match[0].uri.prefix",
            "only one of exact, prefix or regex",
        );
        assert_error(
            &vs,
            "spec.http[0].match[0].method.prefix",
            "prefix match must not be empty",
        );
        assert_error(&vs, "spec.http[0].match[0].authority.regex", "RE2");
        assert_error(
            &vs,
            "spec.http[0].match[0].scheme.regex",
            "regex match must not be empty",
        );
        assert_warning(
            &vs,
            "spec.http[0].match[0].headers[\"X-User\"]",
            "lowercase",
        );
        assert_error(
            &vs,
            "spec.http[0].match[0].headers[\"bad header\"]",
            "invalid header name",
        );
        assert_error(
            &vs,
            "spec.http[0].match[0].queryParams[\"v\"].regex",
            "invalid regex",
        );
        assert_error(&vs, "spec.http[0].match[0].port", "out of range");
        assert_error(
            &vs,
            "spec.http[0].match[0].sourceLabels[\"app\"]",
            "invalid label value",
        );
        assert_error(
            &vs,
            "spec.http[0].match[0].sourceNamespace",
            "invalid sourceNamespace",
        );
        let errors = issues(&vs)
            .into_iter()
            .filter(|i| i.path.contains("withoutHeaders") || i.path.contains("claims"))
            // (this VirtualService applies to the mesh, where claims are not available)
            .filter(|i| !i.message.contains("only supported for gateways"))
            .count();
        assert_eq!(
            errors, 0,
            "withoutHeaders regex \"*\" and claim matches are valid"
        );
        // An empty uri prefix matches everything and is allowed.
        assert_clean(&vs_http(
            json!({"route": to_reviews(), "match": [{"uri": {"prefix": ""}}]}),
        ));
    }

    #[test]
    fn redirect_rewrite_and_direct_response() {
        let vs = vs_http(
            json!({"redirect": {"redirectCode": 304, "port": 8080, "derivePort": "FROM_REQUEST_PORT", "scheme": "ftp"}}),
        );
        assert_error(
            &vs,
            "spec.http[0].redirect.redirectCode",
            "301, 302, 303, 307, 308",
        );
        assert_error(
            &vs,
            "spec.http[0].redirect.derivePort",
            "only one of port or derivePort",
        );
        assert_error(
            &vs,
            "spec.http[0].redirect.scheme",
            "invalid redirect scheme",
        );
        let vs = vs_http(json!({"redirect": {"redirectCode": 200}}));
        assert_error(
            &vs,
            "spec.http[0].redirect",
            "redirect must change something",
        );
        assert_error(&vs, "spec.http[0].redirect.redirectCode", "not a redirect");
        let vs = vs_http(
            json!({"route": to_reviews(), "rewrite": {"uri": "/a", "uriRegexRewrite": {"match": "(", "rewrite": "/"}}}),
        );
        assert_error(
            &vs,
            "spec.http[0].rewrite.uriRegexRewrite",
            "only one of uri or uriRegexRewrite",
        );
        assert_error(
            &vs,
            "spec.http[0].rewrite.uriRegexRewrite.match",
            "invalid regex",
        );
        let vs = vs_http(json!({"route": to_reviews(), "rewrite": {}}));
        assert_error(&vs, "spec.http[0].rewrite", "rewrite must change something");
        let vs = vs_http(json!({"route": to_reviews(), "rewrite": {"authority": "a"},
            "headers": {"request": {"set": {"host": "b"}}, "response": {"set": {"host": "c", ":status": "1"}, "remove": [""]}}}));
        assert_error(
            &vs,
            "spec.http[0].rewrite.authority",
            "authority is set twice",
        );
        assert_error(
            &vs,
            "spec.http[0].headers.response.set[\"host\"]",
            "Host header cannot be changed",
        );
        assert_error(
            &vs,
            "spec.http[0].headers.response.set[\":status\"]",
            "pseudo-headers",
        );
        assert_error(
            &vs,
            "spec.http[0].headers.response.remove[0]",
            "must not be empty",
        );
        let vs = vs_http(
            json!({"directResponse": {"status": 99, "body": {"string": "a", "bytes": "!!"}}}),
        );
        assert_error(&vs, "spec.http[0].directResponse.status", "200-599");
        assert_error(
            &vs,
            "spec.http[0].directResponse.body.bytes",
            "only one of string or bytes",
        );
        assert_clean(&vs_http(
            json!({"directResponse": {"status": 200, "body": {"bytes": "aGVsbG8="}}}),
        ));
    }

    #[test]
    fn timeouts_retries_and_faults() {
        let vs = vs_http(json!({"route": to_reviews(), "timeout": "500us",
            "retries": {"attempts": -1, "perTryTimeout": "1.5ms", "retryOn": "5xx,bogus,503"}}));
        assert_error(&vs, "spec.http[0].timeout", "at least 1ms");
        assert_error(
            &vs,
            "spec.http[0].retries.attempts",
            "expected a value >= 0",
        );
        assert_error(
            &vs,
            "spec.http[0].retries.perTryTimeout",
            "millisecond precision",
        );
        assert_error(
            &vs,
            "spec.http[0].retries.retryOn",
            "\"bogus\" is not a retry condition",
        );
        let vs =
            vs_http(json!({"route": to_reviews(), "retries": {"attempts": 0, "retryOn": "5xx"}}));
        assert_error(&vs, "spec.http[0].retries.attempts", "attempts is 0");
        assert_clean(&vs_http(
            json!({"route": to_reviews(), "timeout": "0.3s", "retries": {"attempts": 0}}),
        ));
        let vs = vs_http(json!({"route": to_reviews(), "fault": {
            "delay": {"fixedDelay": "0s", "exponentialDelay": "1s", "percentage": {"value": 150}},
            "abort": {"httpStatus": 700, "grpcStatus": "NOPE"}
        }}));
        assert_error(
            &vs,
            "spec.http[0].fault.delay.exponentialDelay",
            "only one of fixedDelay or exponentialDelay",
        );
        assert_error(&vs, "spec.http[0].fault.delay.fixedDelay", "at least 1ms");
        assert_error(
            &vs,
            "spec.http[0].fault.delay.percentage.value",
            "out of range",
        );
        assert_error(&vs, "spec.http[0].fault.abort.httpStatus", "200-599");
        assert_error(
            &vs,
            "spec.http[0].fault.abort.grpcStatus",
            "unknown gRPC status",
        );
        assert_error(
            &vs_http(json!({"route": to_reviews(), "fault": {}})),
            "spec.http[0].fault",
            "a delay and/or an abort",
        );
        let vs = vs_http(
            json!({"route": to_reviews(), "mirror": {"host": "m"}, "mirrorPercentage": {"value": 101}, "mirrorPercent": 120}),
        );
        assert_error(&vs, "spec.http[0].mirrorPercentage.value", "out of range");
        assert_error(&vs, "spec.http[0].mirrorPercent", "expected 0-100");
        assert_warning(&vs, "spec.http[0].mirrorPercent", "deprecated");
        let vs = vs_http(
            json!({"route": to_reviews(), "corsPolicy": {"allowOrigins": [{"exact": "a", "prefix": "b"}, {"exact": ""}],
            "allowMethods": ["FETCH"], "maxAge": "1.5s", "allowOrigin": ["x"]}}),
        );
        assert_error(
            &vs,
            "spec.http[0].corsPolicy.allowOrigins[0].prefix",
            "only one of",
        );
        assert_error(
            &vs,
            "spec.http[0].corsPolicy.allowOrigins[1]",
            "needs a non-empty",
        );
        assert_error(
            &vs,
            "spec.http[0].corsPolicy.allowMethods[0]",
            "unsupported CORS method",
        );
        assert_error(&vs, "spec.http[0].corsPolicy.maxAge", "whole seconds");
        assert_warning(&vs, "spec.http[0].corsPolicy.allowOrigin", "deprecated");
    }

    #[test]
    fn tls_and_tcp_routes() {
        let vs: VirtualService = from_json(
            json!({"hosts": ["*.bookinfo.com"], "gateways": ["gw"], "tls": [
                {"match": [{"port": 443, "sniHosts": ["login.bookinfo.com"]}], "route": [{"destination": {"host": "login"}}]},
                {"match": [{"sniHosts": ["evil.com"]}, {"destinationSubnets": ["10.0.0.0/33"]}], "route": [{"destination": {"host": "a"}}]},
                {"route": []}
            ]}),
        );
        assert_error(
            &vs,
            "spec.tls[1].match[0].sniHosts[0]",
            "not within the VirtualService's hosts",
        );
        assert_error(
            &vs,
            "spec.tls[1].match[1].sniHosts",
            "at least one SNI host",
        );
        assert_error(
            &vs,
            "spec.tls[1].match[1].destinationSubnets[0]",
            "not a valid CIDR",
        );
        assert_error(&vs, "spec.tls[2].match", "at least one match");
        assert_error(&vs, "spec.tls[2].route", "at least one destination");
        assert!(
            !issues(&vs)
                .iter()
                .any(|i| i.path.starts_with("spec.tls[0]")),
            "{:#?}",
            issues(&vs)
        );
        let vs: VirtualService = from_json(json!({"hosts": ["mongo"], "tcp": [
            {"match": [{"sourceSubnet": "bogus", "port": 0}], "route": [{"destination": {"host": "a"}, "weight": 0}, {"destination": {"host": "b"}, "weight": 0}]},
            {"route": [{"destination": {"host": "a"}}]},
            {"route": [{"destination": {"host": "b"}}]}
        ]}));
        assert_error(&vs, "spec.tcp[0].match[0].sourceSubnet", "not a valid IP");
        assert_error(&vs, "spec.tcp[0].route", "all destination weights are 0");
    }

    // ----- DestinationRule ----------------------------------------------------------------------

    const DESTINATION_RULE: &str = r#"
        host: reviews.prod.svc.cluster.local
        trafficPolicy:
          loadBalancer:
            simple: LEAST_REQUEST
            localityLbSetting:
              enabled: true
              distribute:
              - from: us-west/zone1/*
                to:
                  "us-west/zone1/*": 80
                  "us-west/zone2/*": 20
          connectionPool:
            tcp:
              maxConnections: 100
              connectTimeout: 30ms
              tcpKeepalive:
                time: 7200s
                interval: 75s
            http:
              http2MaxRequests: 1000
              maxRequestsPerConnection: 10
              idleTimeout: 1h
          outlierDetection:
            consecutive5xxErrors: 7
            interval: 5m
            baseEjectionTime: 15m
            maxEjectionPercent: 50
          tls:
            mode: ISTIO_MUTUAL
          portLevelSettings:
          - port:
              number: 9080
            loadBalancer:
              consistentHash:
                httpCookie:
                  name: user
                  ttl: 0s
                  attributes:
                  - name: SameSite
                    value: Strict
                ringHash:
                  minimumRingSize: 1024
        subsets:
        - name: testversion
          labels:
            version: v3
          trafficPolicy:
            loadBalancer:
              simple: ROUND_ROBIN
        - name: v2
          labels:
            version: v2
        exportTo: ["."]
    "#;

    fn dr_policy(tp: Value) -> DestinationRule {
        from_json(json!({"host": "reviews", "trafficPolicy": tp}))
    }

    #[test]
    fn destination_rule_docs_example_is_valid_and_round_trips() {
        let dr: DestinationRule = spec(DESTINATION_RULE);
        assert!(issues(&dr).is_empty(), "{:#?}", issues(&dr));
        assert_round_trip::<DestinationRule>(DESTINATION_RULE);
        assert_eq!(dr.subset("v2").unwrap().labels["version"], "v2");
        let tp = dr.traffic_policy.as_ref().unwrap();
        assert_eq!(tp.tls.as_ref().unwrap().mode(), ClientTLSMode::IstioMutual);
        assert_eq!(
            tp.connection_pool
                .as_ref()
                .unwrap()
                .tcp
                .as_ref()
                .unwrap()
                .connect_timeout_or_default(),
            StdDuration::from_millis(30)
        );
    }

    #[test]
    fn destination_rule_defaults_are_accessors() {
        assert_eq!(
            LoadBalancerSettings::default().simple_or_default(),
            SimpleLB::LeastRequest
        );
        let lb: LoadBalancerSettings = from_json(json!({"simple": "UNSPECIFIED"}));
        assert_eq!(lb.simple_or_default(), SimpleLB::LeastRequest);
        assert_eq!(
            serde_json::to_value(&lb).unwrap(),
            json!({"simple": "UNSPECIFIED"}),
            "round trip keeps what was written"
        );
        assert_eq!(
            TCPSettings::default().connect_timeout_or_default(),
            StdDuration::from_secs(10)
        );
        let od = OutlierDetection::default();
        assert_eq!(od.consecutive_5xx_errors_or_default(), 5);
        assert_eq!(od.interval_or_default(), StdDuration::from_secs(10));
        assert_eq!(
            od.base_ejection_time_or_default(),
            StdDuration::from_secs(30)
        );
        assert_eq!(od.max_ejection_percent_or_default(), 10);
        assert_eq!(ClientTLSSettings::default().mode(), ClientTLSMode::Disable);
    }

    #[test]
    fn destination_rule_host_subsets_and_export() {
        let dr: DestinationRule = from_json(json!({"subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v1"},
            {"labels": {"bad key!": "x"}},
            {"name": "V_2"}
        ]}));
        assert_error(&dr, "spec.host", "host is required");
        assert_error(
            &dr,
            "spec.subsets[1].name",
            "duplicate subset name \"v1\" (also subsets[0])",
        );
        assert_error(&dr, "spec.subsets[2].name", "subset name is required");
        assert_error(
            &dr,
            "spec.subsets[2].labels[\"bad key!\"]",
            "invalid label key",
        );
        assert_error(&dr, "spec.subsets[3].name", "invalid subset name");
        let dr: DestinationRule = from_json(
            json!({"host": "a", "workloadSelector": {"matchLabels": {"app": "x"}}, "exportTo": ["*"]}),
        );
        assert_error(&dr, "spec.exportTo", "only in its own namespace");
        let dr: DestinationRule = from_json(json!({"host": "a", "exportTo": [".", "default"]}));
        assert_error(
            &dr,
            "spec.exportTo[1]",
            "already means the current namespace",
        );
        let dr: DestinationRule = from_json(json!({"host": "a", "trafficPolicy": {}}));
        assert_error(&dr, "spec.trafficPolicy", "at least one field");
    }

    #[test]
    fn traffic_policy_pools_outliers_and_tls() {
        let dr = dr_policy(json!({
            "connectionPool": {"http": {"http2MaxRequests": -1, "idleTimeout": "0s", "h2UpgradePolicy": "UPGRADE", "useClientProtocol": true},
                               "tcp": {"maxConnections": -5, "connectTimeout": "0.5ms"}},
            "outlierDetection": {"maxEjectionPercent": 150, "minHealthPercent": -1, "consecutiveLocalOriginFailures": 3, "consecutiveErrors": 2},
            "tls": {"mode": "MUTUAL"}
        }));
        assert_error(
            &dr,
            "spec.trafficPolicy.connectionPool.http.http2MaxRequests",
            ">= 0",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
            "at least 1ms",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.connectionPool.http.useClientProtocol",
            "UPGRADE",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            ">= 0",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "at least 1ms",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "0-100",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.outlierDetection.minHealthPercent",
            "0-100",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "splitExternalLocalOriginErrors",
        );
        assert_warning(
            &dr,
            "spec.trafficPolicy.outlierDetection.consecutiveErrors",
            "deprecated",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.tls.clientCertificate",
            "MUTUAL TLS requires a client certificate",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.tls.privateKey",
            "MUTUAL TLS requires a private key",
        );
        assert_clean(&dr_policy(
            json!({"tls": {"mode": "MUTUAL", "credentialName": "client-cred"}}),
        ));
        assert_clean(&dr_policy(
            json!({"tls": {"mode": "SIMPLE", "sni": "a.example.com", "subjectAltNames": ["a"]}}),
        ));
        let dr = dr_policy(
            json!({"tls": {"mode": "SIMPLE", "credentialName": "c", "caCertificates": "/ca"}}),
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.tls.caCertificates",
            "cannot be set with credentialName",
        );
        let dr = dr_policy(json!({"tls": {"mode": "ISTIO_MUTUAL", "caCertificates": "/ca"}}));
        assert_error(&dr, "spec.trafficPolicy.tls.caCertificates", "ISTIO_MUTUAL");
        let dr = dr_policy(
            json!({"tls": {"mode": "SIMPLE", "insecureSkipVerify": true, "caCertificates": "/ca"}}),
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.tls.insecureSkipVerify",
            "cannot be combined",
        );
        let dr = dr_policy(json!({"connectionPool": {}}));
        assert_error(&dr, "spec.trafficPolicy.connectionPool", "tcp and/or http");
    }

    #[test]
    fn port_level_settings() {
        let dr = dr_policy(json!({"portLevelSettings": [
            {"loadBalancer": {"simple": "RANDOM"}},
            {"port": {"number": 80}},
            {"port": {"number": 80}, "tls": {"mode": "DISABLE"}},
            {"port": {"number": 0}, "tls": {"mode": "DISABLE"}}
        ]}));
        assert_error(
            &dr,
            "spec.trafficPolicy.portLevelSettings[0].port",
            "port is required",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.portLevelSettings[1]",
            "at least one of loadBalancer",
        );
        assert_warning(
            &dr,
            "spec.trafficPolicy.portLevelSettings[2].port.number",
            "duplicate port 80",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.portLevelSettings[3].port.number",
            "out of range",
        );
    }

    #[test]
    fn load_balancer_oneofs() {
        let dr = dr_policy(
            json!({"loadBalancer": {"simple": "ROUND_ROBIN", "consistentHash": {
                "httpHeaderName": "x-user", "httpCookie": {"name": ""}, "ringHash": {"minimumRingSize": 10}, "minimumRingSize": 10,
                "maglev": {"tableSize": 1000}
            }}}),
        );
        let lb = "spec.trafficPolicy.loadBalancer";
        assert_error(
            &dr,
            &format!("{lb}.consistentHash"),
            "only one of simple or consistentHash",
        );
        assert_error(
            &dr,
            &format!("{lb}.consistentHash.httpCookie"),
            "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
        );
        assert_error(
            &dr,
            &format!("{lb}.consistentHash.maglev"),
            "only one of ringHash or maglev",
        );
        assert_error(
            &dr,
            &format!("{lb}.consistentHash.minimumRingSize"),
            "only one of minimumRingSize or ringHash",
        );
        assert_error(
            &dr,
            &format!("{lb}.consistentHash.httpCookie.name"),
            "cookie name is required",
        );
        // (ttl is optional, as in Istio: without it no cookie is generated)
        assert!(!issues(&dr)
            .iter()
            .any(|i| i.path.ends_with("httpCookie.ttl")));
        assert_error(
            &dr,
            &format!("{lb}.consistentHash.maglev.tableSize"),
            "not prime",
        );
        assert_clean(&dr_policy(
            json!({"loadBalancer": {"consistentHash": {"useSourceIp": true, "maglev": {"tableSize": 65537}}}}),
        ));
        assert_warning(
            &dr_policy(json!({"loadBalancer": {"consistentHash": {}}})),
            &format!("{lb}.consistentHash"),
            "no hash key",
        );
        let dr = dr_policy(
            json!({"loadBalancer": {"warmup": {"minimumPercent": 120, "aggression": 0.5}, "warmupDurationSecs": "10s"}}),
        );
        assert_error(
            &dr,
            &format!("{lb}.warmup.duration"),
            "duration is required",
        );
        assert_error(&dr, &format!("{lb}.warmup.minimumPercent"), "0-100");
        assert_error(&dr, &format!("{lb}.warmup.aggression"), ">= 1");
        assert_error(
            &dr,
            &format!("{lb}.warmupDurationSecs"),
            "only one of warmupDurationSecs or warmup",
        );
    }

    #[test]
    fn locality_tunnel_and_retry_budget() {
        let lb = "spec.trafficPolicy.loadBalancer.localityLbSetting";
        let dr = dr_policy(
            json!({"loadBalancer": {"localityLbSetting": {"distribute": [
                {"from": "us-west/*", "to": {"us-west/zone1/*": 60, "us-east/*": 30}},
                {"from": "us-*/zone", "to": {"us-west/zone1": 0, "us-east": 100}}
            ]}}}),
        );
        assert_error(
            &dr,
            &format!("{lb}.distribute[0].to"),
            "sum to 90: expected 100",
        );
        assert_error(&dr, &format!("{lb}.distribute[1].from"), "wildcard");
        assert_error(
            &dr,
            &format!("{lb}.distribute[1].to[\"us-west/zone1\"]"),
            "expected 1-100",
        );
        let dr = dr_policy(json!({"loadBalancer": {"localityLbSetting": {
            "distribute": [{"from": "a", "to": {"b": 100}}], "failover": [{"from": "a", "to": "b"}]}}}));
        assert_error(
            &dr,
            &format!("{lb}.failover"),
            "distribute and failover cannot both be set",
        );
        let dr = dr_policy(json!({"loadBalancer": {"localityLbSetting": {
            "failover": [{"from": "us-east", "to": "us-east"}, {"from": "us-east/z", "to": "eu"}],
            "failoverPriority": ["topology.kubernetes.io/zone", "my-label"]}}}));
        assert_error(
            &dr,
            &format!("{lb}.failover[0]"),
            "must be different regions",
        );
        assert_error(&dr, &format!("{lb}.failover[1].from"), "regions only");
        assert_warning(&dr, lb, "outlier detection policy must be provided");
        assert_error(
            &dr,
            &format!("{lb}.failoverPriority[0]"),
            "cannot be combined with failover",
        );
        let dr = dr_policy(
            json!({"tunnel": {"protocol": "GET", "targetHost": "a b", "targetPort": 0}, "proxyProtocol": {"version": "V1"},
            "retryBudget": {"percent": 120.0, "budgetInterval": "0.5ms"}}),
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.proxyProtocol",
            "tunnel and proxyProtocol",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.tunnel.protocol",
            "\"CONNECT\" or \"POST\"",
        );
        assert_error(
            &dr,
            "spec.trafficPolicy.tunnel.targetHost",
            "expected a host name or IP",
        );
        assert_error(&dr, "spec.trafficPolicy.tunnel.targetPort", "out of range");
        assert_error(&dr, "spec.trafficPolicy.retryBudget.percent", "0-100");
        assert_error(
            &dr,
            "spec.trafficPolicy.retryBudget.budgetInterval",
            "at least 1ms",
        );
    }

    // ----- ServiceEntry -------------------------------------------------------------------------

    const SERVICE_ENTRIES: &[&str] = &[
        r#"
        hosts:
        - api.dropboxapi.com
        - www.googleapis.com
        ports:
        - number: 443
          name: https
          protocol: TLS
        resolution: DNS
        location: MESH_EXTERNAL
        "#,
        r#"
        hosts:
        - mymongodb.somedomain
        addresses:
        - 192.192.192.192/24
        ports:
        - number: 27018
          name: mongodb
          protocol: MONGO
        location: MESH_INTERNAL
        resolution: STATIC
        endpoints:
        - address: 2.2.2.2
        - address: 3.3.3.3
          ports:
            mongodb: 27019
          labels:
            version: v2
        "#,
        r#"
        hosts:
        - details.bookinfo.com
        location: MESH_INTERNAL
        ports:
        - number: 80
          name: http
          protocol: HTTP
          targetPort: 8080
        resolution: STATIC
        workloadSelector:
          labels:
            app: details-legacy
        "#,
        r#"
        hosts:
        - foo.bar.com
        location: MESH_EXTERNAL
        ports:
        - number: 80
          name: http
          protocol: HTTP
        resolution: DNS
        endpoints:
        - address: us.foo.bar.com
          ports:
            http: 8080
        - address: uk.foo.bar.com
          ports:
            http: 9080
        "#,
        r#"
        hosts:
        - "*.wikipedia.org"
        ports:
        - number: 443
          name: https
          protocol: TLS
        location: MESH_EXTERNAL
        resolution: DYNAMIC_DNS
        exportTo: ["~"]
        "#,
    ];

    #[test]
    fn service_entry_docs_examples_are_valid_and_round_trip() {
        for text in SERVICE_ENTRIES {
            let se: ServiceEntry = spec(text);
            assert!(issues(&se).is_empty(), "{text}\n{:#?}", issues(&se));
            assert_round_trip::<ServiceEntry>(text);
        }
        let se = ServiceEntry::default();
        assert_eq!(se.resolution(), Resolution::None);
        assert_eq!(se.location(), Location::MeshExternal);
        let se: ServiceEntry = spec(SERVICE_ENTRIES[2]);
        assert_eq!(se.ports[0].target_port_or_number(), 8080);
        assert!(se
            .workload_selector
            .as_ref()
            .unwrap()
            .matches(&BTreeMap::from([
                ("app".to_string(), "details-legacy".to_string()),
                ("x".to_string(), "y".to_string())
            ])));
    }

    #[test]
    fn service_entry_hosts_ports_and_addresses() {
        let se: ServiceEntry = from_json(
            json!({"hosts": ["*", "*foo.com", "ok.com"], "addresses": ["10.0.0.1", "bogus", "10.0.0.0/8"],
            "ports": [
                {"number": 80, "name": "http", "protocol": "HTTP"},
                {"number": 80, "name": "http", "protocol": "SMTP"},
                {"number": 0, "name": "bad_name", "targetPort": 70000}
            ], "resolution": "DNS"}),
        );
        assert_error(&se, "spec.hosts[0]", "not allowed in a ServiceEntry");
        assert_warning(&se, "spec.hosts[1]", "partial wildcard");
        assert_error(&se, "spec.addresses[1]", "not a valid IP address or CIDR");
        assert_error(
            &se,
            "spec.addresses",
            "CIDR addresses are only allowed with resolution NONE or STATIC",
        );
        assert_error(
            &se,
            "spec.ports[1].number",
            "duplicate port number 80 (also ports[0])",
        );
        assert_error(
            &se,
            "spec.ports[1].name",
            "duplicate port name \"http\" (also ports[0])",
        );
        assert_error(&se, "spec.ports[1].protocol", "invalid protocol \"SMTP\"");
        assert_error(&se, "spec.ports[2].number", "out of range");
        assert_error(&se, "spec.ports[2].name", "invalid port name");
        assert_error(&se, "spec.ports[2].targetPort", "out of range");
        assert_error(&se, "spec.hosts[1]", "cannot be resolved by DNS");
        assert_error(&ServiceEntry::default(), "spec.hosts", "at least one host");
    }

    #[test]
    fn service_entry_resolution_rules() {
        let base = |extra: Value| -> ServiceEntry {
            let mut v = json!({"hosts": ["svc.example.com"], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            from_json(v)
        };
        let se = base(json!({"endpoints": [{"address": "1.1.1.1"}]}));
        assert_error(
            &se,
            "spec.endpoints",
            "resolution NONE cannot have endpoints",
        );
        let se = base(json!({"resolution": "STATIC", "endpoints": [
            {"address": "db.example.com"},
            {"address": "1.1.1.1", "ports": {"grpc": 9000}},
            {"network": "net2"},
            {}
        ]}));
        assert_error(&se, "spec.endpoints[0].address", "not an IP address");
        assert_error(
            &se,
            "spec.endpoints[1].ports[\"grpc\"]",
            "not a port name of the ServiceEntry",
        );
        assert_warning(&se, "spec.endpoints[2].address", "network");
        assert_error(&se, "spec.endpoints[3].address", "address is required");
        assert_warning(
            &base(json!({"resolution": "STATIC"})),
            "spec.endpoints",
            "no endpoints",
        );
        let se = base(
            json!({"resolution": "DNS", "endpoints": [{"address": "db.example.com"}, {"address": "not a host"}]}),
        );
        assert_error(&se, "spec.endpoints[1].address", "not an IP or host name");
        let se = base(
            json!({"resolution": "DNS_ROUND_ROBIN", "endpoints": [{"address": "a.com"}, {"address": "b.com"}]}),
        );
        assert_error(&se, "spec.endpoints", "at most one endpoint");
        let se = base(
            json!({"resolution": "STATIC", "endpoints": [{"address": "1.1.1.1"}], "workloadSelector": {"labels": {"app": "x"}}}),
        );
        assert_error(
            &se,
            "spec.workloadSelector",
            "only one of workloadSelector or endpoints",
        );
        let se = base(
            json!({"resolution": "STATIC", "workloadSelector": {"labels": {"app": "x*", "bad key!": "y"}}}),
        );
        assert_error(
            &se,
            "spec.workloadSelector.labels[\"app\"]",
            "wildcards are not supported",
        );
        assert_error(
            &se,
            "spec.workloadSelector.labels[\"bad key!\"]",
            "invalid label key",
        );
        let se = base(
            json!({"resolution": "STATIC", "endpoints": [{"address": "unix:///var/run/sock", "ports": {"http": 80}}, {"address": "unix://relative"}]}),
        );
        assert_error(&se, "spec.endpoints[0].ports", "cannot have ports");
        assert_error(&se, "spec.endpoints[1].address", "absolute path");
    }

    // ----- WorkloadEntry and WorkloadGroup ------------------------------------------------------

    #[test]
    fn workload_entry() {
        let text = r#"
            serviceAccount: details-legacy
            address: 2.2.2.2
            labels:
              app: details-legacy
              instance-id: vm1
            ports:
              http: 8080
            network: vm-network
            locality: us-west/zone1
            weight: 3
        "#;
        let we: WorkloadEntry = spec(text);
        assert!(issues(&we).is_empty(), "{:#?}", issues(&we));
        assert_round_trip::<WorkloadEntry>(text);
        assert_eq!(we.weight_or_default(), 3);
        assert_eq!(WorkloadEntry::default().weight_or_default(), 1);
        assert_clean(&from_json::<WorkloadEntry>(
            json!({"address": "vm1.example.com"}),
        ));
        let we: WorkloadEntry = from_json(
            json!({"ports": {"http": 0, "bad_name": 80}, "labels": {"app": "-x"}, "locality": "a//b"}),
        );
        assert_error(&we, "spec.address", "address is required");
        assert_error(&we, "spec.ports[\"http\"]", "out of range");
        assert_error(&we, "spec.ports[\"bad_name\"]", "invalid port name");
        assert_error(&we, "spec.labels[\"app\"]", "invalid label value");
        assert_error(&we, "spec.locality", "region/zone/subzone");
        let we: WorkloadEntry =
            from_json(json!({"address": "unix:///sock/", "ports": {"http": 80}}));
        assert_error(&we, "spec.address", "must not be a directory");
        assert_error(&we, "spec.ports", "cannot have ports");
    }

    #[test]
    fn workload_group() {
        let text = r#"
            metadata:
              labels:
                app.kubernetes.io/name: reviews
                app.kubernetes.io/version: "1.3.4"
              annotations:
                example: "true"
            template:
              ports:
                grpc: 3550
                http: 8080
              serviceAccount: default
            probe:
              initialDelaySeconds: 5
              timeoutSeconds: 3
              periodSeconds: 4
              successThreshold: 3
              failureThreshold: 3
              httpGet:
                path: /foo/bar
                host: 127.0.0.1
                port: 3100
                scheme: HTTPS
                httpHeaders:
                - name: Lit-Header
                  value: Im-The-Best
        "#;
        let wg: WorkloadGroup = spec(text);
        assert!(issues(&wg).is_empty(), "{:#?}", issues(&wg));
        assert_round_trip::<WorkloadGroup>(text);
        assert_error(
            &WorkloadGroup::default(),
            "spec.template",
            "template is required",
        );
        let wg: WorkloadGroup = from_json(
            json!({"template": {}, "probe": {"periodSeconds": -1, "httpGet": {"port": 0, "scheme": "ftp",
            "httpHeaders": [{"name": "bad header"}]}, "tcpSocket": {"port": 80}}}),
        );
        assert_error(
            &wg,
            "spec.probe.tcpSocket",
            "only one of httpGet, tcpSocket, exec or grpc",
        );
        assert_error(&wg, "spec.probe.periodSeconds", ">= 0");
        assert_error(&wg, "spec.probe.httpGet.port", "out of range");
        assert_error(&wg, "spec.probe.httpGet.scheme", "\"HTTP\" or \"HTTPS\"");
        assert_error(
            &wg,
            "spec.probe.httpGet.httpHeaders[0].name",
            "invalid probe header name",
        );
        let wg: WorkloadGroup =
            from_json(json!({"template": {}, "probe": {"exec": {"command": []}}}));
        assert_error(&wg, "spec.probe.exec.command", "exec.command is required");
        let wg: WorkloadGroup = from_json(json!({"template": {}, "probe": {}}));
        assert_error(&wg, "spec.probe", "a probe needs one of");
        assert_clean(&from_json::<WorkloadGroup>(
            json!({"template": {}, "probe": {"grpc": {"port": 9000, "service": "x"}}}),
        ));
    }

    // ----- Sidecar ------------------------------------------------------------------------------

    const SIDECAR: &str = r#"
        workloadSelector:
          labels:
            app: productpage
        ingress:
        - port:
            number: 9080
            protocol: HTTP
            name: somename
          defaultEndpoint: unix:///var/run/someuds.sock
        - port:
            number: 8443
            protocol: HTTPS
            name: external
          defaultEndpoint: 127.0.0.1:8080
          tls:
            mode: SIMPLE
            privateKey: "/etc/istio/tls-certs/tls.key"
            serverCertificate: "/etc/istio/tls-certs/tls.crt"
          connectionPool:
            tcp:
              maxConnections: 100
        egress:
        - port:
            number: 9080
            protocol: HTTP
            name: egresshttp
          hosts:
          - "prod-us1/*"
        - port:
            number: 0
          bind: unix:///var/run/egress.sock
          captureMode: NONE
          hosts:
          - "*/mysql.foo.com"
        - hosts:
          - "istio-system/*"
          - "~/*"
        outboundTrafficPolicy:
          mode: ALLOW_ANY
          egressProxy:
            host: foo.bar.com
            subset: v1
            port:
              number: 443
        inboundConnectionPool:
          http:
            http1MaxPendingRequests: 1024
    "#;

    #[test]
    fn sidecar_docs_example_is_valid_and_round_trips() {
        let sc: Sidecar = spec(SIDECAR);
        assert!(issues(&sc).is_empty(), "{:#?}", issues(&sc));
        assert_round_trip::<Sidecar>(SIDECAR);
        assert_eq!(sc.egress[1].capture_mode, Some(CaptureMode::None));
        assert_eq!(
            OutboundTrafficPolicy::default().mode(),
            OutboundTrafficPolicyMode::RegistryOnly
        );
    }

    #[test]
    fn sidecar_rules() {
        assert_error(&Sidecar::default(), "spec", "empty Sidecar");
        let sc: Sidecar = from_json(json!({
            "workloadSelector": {"labels": {}},
            "egress": [
                {"hosts": ["*/*"]},
                {"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["bar.com", "Bad_NS/*", "ns/*", "ns/a.com"]},
                {"port": {"number": 80}, "hosts": []},
                {"port": {"number": 0}, "bind": "10.0.0.1", "hosts": ["./*"]}
            ],
            "ingress": [
                {},
                {"port": {"number": 9080, "protocol": "HTTP"}, "defaultEndpoint": "10.0.0.1:8080"},
                {"port": {"number": 9080, "protocol": "HTTP"}, "defaultEndpoint": "127.0.0.1:http", "bind": "nope"},
                {"port": {"number": 9443, "protocol": "HTTP"}, "tls": {"mode": "ISTIO_MUTUAL", "credentialName": "x"}}
            ],
            "outboundTrafficPolicy": {"egressProxy": {"host": "proxy"}}
        }));
        assert_warning(&sc, "spec.workloadSelector", "without labels");
        assert_error(&sc, "spec.egress[0]", "without port must be the last");
        assert_error(&sc, "spec.egress[1].hosts[0]", "expected namespace/dnsName");
        assert_error(
            &sc,
            "spec.egress[1].hosts[1]",
            "invalid namespace \"Bad_NS\"",
        );
        assert_warning(&sc, "spec.egress[1].hosts[3]", "duplicate egress host");
        assert_error(&sc, "spec.egress[2].hosts", "at least one host");
        assert_error(
            &sc,
            "spec.egress[2].port.number",
            "duplicate egress port 80 (also egress[1])",
        );
        assert_error(&sc, "spec.egress[3].port.number", "unix domain socket bind");
        assert_error(&sc, "spec.ingress[0].port", "port is required");
        assert_error(
            &sc,
            "spec.ingress[1].defaultEndpoint",
            "invalid defaultEndpoint host \"10.0.0.1\"",
        );
        assert_error(
            &sc,
            "spec.ingress[2].port.number",
            "duplicate ingress port 9080",
        );
        assert_error(
            &sc,
            "spec.ingress[2].defaultEndpoint",
            "invalid defaultEndpoint port",
        );
        assert_error(&sc, "spec.ingress[2].bind", "invalid bind address");
        assert_error(
            &sc,
            "spec.ingress[3].tls.mode",
            "not allowed for Sidecar ingress TLS",
        );
        assert_error(&sc, "spec.ingress[3].tls.credentialName", "not supported");
        assert_error(
            &sc,
            "spec.ingress[3].tls",
            "needs port protocol HTTPS or TLS",
        );
        assert_error(
            &sc,
            "spec.outboundTrafficPolicy.egressProxy",
            "needs mode ALLOW_ANY",
        );
        assert_error(
            &sc,
            "spec.outboundTrafficPolicy.egressProxy.port",
            "port is required",
        );
        for ok in [
            "127.0.0.1:80",
            "0.0.0.0:80",
            "[::1]:80",
            "[::]:80",
            ":80",
            "unix://@abstract",
        ] {
            assert!(check_default_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in ["localhost:80", "127.0.0.1", "::1:80", "127.0.0.1:0"] {
            assert!(check_default_endpoint(bad).is_err(), "{bad}");
        }
    }

    // ----- helpers ------------------------------------------------------------------------------

    #[test]
    fn host_matching_follows_istio() {
        assert!(host_matches("*.foo.com", "bar.foo.com"));
        assert!(host_matches("*", "anything"));
        assert!(host_matches("*.com", "*.foo.com"));
        assert!(!host_matches("foo.com", "bar.com"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
        assert!(host_subset_of("*.a.foo.com", "*.foo.com"));
        assert!(!host_subset_of("*.foo.com", "a.foo.com"));
        assert!(!host_subset_of("foo.com", "*.foo.com"));
        assert_eq!(Protocol::parse("gRPC-Web"), Some(Protocol::GrpcWeb));
        assert!(Protocol::parse("Https").unwrap().is_tls());
        assert_eq!(Protocol::parse("smtp"), None);
        assert!(is_prime(65537) && !is_prime(65536) && !is_prime(1));
    }
}
