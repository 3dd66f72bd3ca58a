//! `Resource`: one typed object (Istio or Kubernetes) with its metadata and where it came from.
//!
//! Owns the kind registry (which group/version/kind pairs are served, which are namespaced),
//! turning a YAML `Document` into a `Resource` with located errors, and per-resource
//! validation. Does not read files (`load`) or look across resources (`analyze` crate).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diag::{Diagnostic, ResourceRef, Severity};
use crate::k8s::Certificate;
use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry, WorkloadGroup,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::source::{path_to_pointer, Location, SpanMap};
use crate::telemetry::Telemetry;
use crate::validate::{check_dns1123_label, Validator};
use crate::yaml::Document;

pub const NETWORKING: &str = "networking.istio.io";
pub const SECURITY: &str = "security.istio.io";
pub const TELEMETRY: &str = "telemetry.istio.io";
const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
const TELEMETRY_VERSIONS: &[&str] = &["v1", "v1alpha1"];

/// A kind Trellis understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    WorkloadGroup,
    Sidecar,
    PeerAuthentication,
    RequestAuthentication,
    AuthorizationPolicy,
    Telemetry,
    Namespace,
    Service,
    Deployment,
    Pod,
    Secret,
    ConfigMap,
    EndpointSlice,
    ServiceAccount,
    Certificate,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Telemetry,
        Kind::Namespace,
        Kind::Service,
        Kind::Deployment,
        Kind::Pod,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::EndpointSlice,
        Kind::ServiceAccount,
        Kind::Certificate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Telemetry => "Telemetry",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Certificate => "Certificate",
        }
    }

    /// API group ("" for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Gateway
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::WorkloadGroup
            | Kind::Sidecar => NETWORKING,
            Kind::PeerAuthentication | Kind::RequestAuthentication | Kind::AuthorizationPolicy => {
                SECURITY
            }
            Kind::Telemetry => TELEMETRY,
            Kind::Namespace
            | Kind::Service
            | Kind::Pod
            | Kind::Secret
            | Kind::ConfigMap
            | Kind::ServiceAccount => "",
            Kind::Deployment => "apps",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::Certificate => "cert-manager.io",
        }
    }

    /// Versions served with the same schema.
    pub fn versions(self) -> &'static [&'static str] {
        match self.group() {
            NETWORKING => NETWORKING_VERSIONS,
            SECURITY => SECURITY_VERSIONS,
            TELEMETRY => TELEMETRY_VERSIONS,
            _ => &["v1"],
        }
    }

    pub fn is_istio(self) -> bool {
        matches!(self.group(), NETWORKING | SECURITY | TELEMETRY)
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// Finds the kind for an `apiVersion` + `kind` pair. `Err` carries why a known kind was
    /// refused (an apiVersion that is not served); `Ok(None)` means a kind we do not model.
    pub fn lookup(api_version: &str, kind: &str) -> Result<Option<Kind>, String> {
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let Some(k) = Kind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == kind && k.group() == group)
        else {
            return Ok(None);
        };
        if k.versions().contains(&version) {
            Ok(Some(k))
        } else {
            let served = k
                .versions()
                .iter()
                .map(|v| {
                    if group.is_empty() {
                        v.to_string()
                    } else {
                        format!("{group}/{v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            Err(format!(
                "apiVersion {api_version:?} is not served for {kind}: expected one of {served}"
            ))
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The typed body of a resource.
#[derive(Clone, Debug)]
pub enum Object {
    Gateway(Box<Gateway>),
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    ServiceEntry(Box<ServiceEntry>),
    WorkloadEntry(Box<WorkloadEntry>),
    WorkloadGroup(Box<WorkloadGroup>),
    Sidecar(Box<Sidecar>),
    PeerAuthentication(Box<PeerAuthentication>),
    RequestAuthentication(Box<RequestAuthentication>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    Telemetry(Box<Telemetry>),
    Namespace(Box<Namespace>),
    Service(Box<Service>),
    Deployment(Box<Deployment>),
    Pod(Box<Pod>),
    Secret(Box<Secret>),
    ConfigMap(Box<ConfigMap>),
    EndpointSlice(Box<EndpointSlice>),
    ServiceAccount(Box<ServiceAccount>),
    Certificate(Box<Certificate>),
}

/// Where a resource was read from.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The document's first line.
    pub location: Location,
    /// Locations of its fields.
    pub spans: Arc<SpanMap>,
}

impl Origin {
    /// Location of a field (`spec.http[0].route`), or of the resource when unknown.
    pub fn locate(&self, field: &str) -> Location {
        self.spans
            .locate(&path_to_pointer(field))
            .unwrap_or_else(|| self.location.clone())
    }
}

/// One typed resource.
#[derive(Clone, Debug)]
pub struct Resource {
    pub kind: Kind,
    pub api_version: String,
    pub name: String,
    /// `None` only for cluster-scoped kinds (Namespace).
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 creation time when set (Istio breaks policy ties by age).
    pub creation_timestamp: Option<String>,
    pub object: Object,
    pub origin: Origin,
    /// The document as read (after kustomize), for output and unknown-field-preserving tools.
    pub raw: Value,
}

/// An object of a kind Trellis does not model: kept and reported as skipped.
#[derive(Clone, Debug)]
pub struct Unrecognized {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub origin: Origin,
    pub raw: Value,
}

impl Unrecognized {
    pub fn reference(&self) -> ResourceRef {
        ResourceRef {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// Result of reading one document.
#[derive(Debug)]
pub enum Parsed {
    Resource(Box<Resource>),
    Unrecognized(Box<Unrecognized>),
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IstioObject<S> {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: S,
    #[serde(default)]
    status: Option<Value>,
}

impl Resource {
    pub fn reference(&self) -> ResourceRef {
        ResourceRef {
            kind: self.kind.name().to_string(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// `namespace/name` (or `name`).
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// Namespace, or "" for cluster-scoped resources.
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    /// A diagnostic about this resource, located at `field` when that field has a span.
    pub fn diagnostic(
        &self,
        severity: Severity,
        field: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            location: Some(self.origin.locate(field)),
            resource: Some(self.reference()),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Schema-level validation of this resource alone.
    pub fn validate(&self, root_namespace: &str) -> Vec<Diagnostic> {
        let mut v = Validator::new(self.ns(), root_namespace);
        if let Some(ns) = &self.namespace {
            if check_dns1123_label(ns).is_err() {
                v.at("metadata.namespace", |v| {
                    v.error(format!(
                        "invalid namespace {ns:?}: expected a DNS-1123 label"
                    ))
                });
            }
        }
        v.labels("metadata.labels", &self.labels);
        self.validate_metadata(&mut v);
        match &self.object {
            Object::Gateway(s) => v.nested("spec", s.as_ref()),
            Object::VirtualService(s) => v.nested("spec", s.as_ref()),
            Object::DestinationRule(s) => v.nested("spec", s.as_ref()),
            Object::ServiceEntry(s) => v.nested("spec", s.as_ref()),
            Object::WorkloadEntry(s) => v.nested("spec", s.as_ref()),
            Object::WorkloadGroup(s) => v.nested("spec", s.as_ref()),
            Object::Sidecar(s) => v.nested("spec", s.as_ref()),
            Object::PeerAuthentication(s) => v.nested("spec", s.as_ref()),
            Object::RequestAuthentication(s) => v.nested("spec", s.as_ref()),
            Object::AuthorizationPolicy(s) => v.nested("spec", s.as_ref()),
            Object::Telemetry(s) => v.nested("spec", s.as_ref()),
            Object::Service(s) => crate::k8s::validate_service(s, &mut v),
            _ => {}
        }
        v.issues
            .into_iter()
            .map(|i| Diagnostic {
                severity: i.severity,
                location: Some(self.origin.locate(&i.path)),
                resource: Some(self.reference()),
                field: i.path,
                message: i.message,
            })
            .collect()
    }

    /// Istio's checks of the name and annotations: a Gateway's name is a DNS label (it names
    /// route tables), and `istio.io/dry-run` is only for ALLOW/DENY AuthorizationPolicies,
    /// with a boolean value.
    fn validate_metadata(&self, v: &mut Validator) {
        if self.kind == Kind::Gateway && check_dns1123_label(&self.name).is_err() {
            v.error_at(
                "metadata.name",
                format!(
                    "invalid gateway name {:?}: expected a DNS-1123 label (lowercase letters, digits and '-', no dots)",
                    self.name
                ),
            );
        }
        let Some(value) = self.annotations.get(DRY_RUN_ANNOTATION) else {
            return;
        };
        if !self.kind.is_istio() {
            return;
        }
        let at = "metadata.annotations";
        match &self.object {
            Object::AuthorizationPolicy(p) => match p.action.unwrap_or_default() {
                crate::security::Action::Allow | crate::security::Action::Deny => {
                    if parse_go_bool(value).is_none() {
                        v.error_at(
                            at,
                            format!(
                                "annotation {DRY_RUN_ANNOTATION} has an invalid value {value:?}: expected true or false"
                            ),
                        );
                    }
                }
                other => v.error_at(
                    at,
                    format!(
                        "annotation {DRY_RUN_ANNOTATION} only supports action ALLOW or DENY, found {other}"
                    ),
                ),
            },
            _ => v.error_at(
                at,
                format!(
                    "unsupported annotation {DRY_RUN_ANNOTATION} on a {}: only AuthorizationPolicy supports it, please remove it",
                    self.kind
                ),
            ),
        }
    }

    /// Reads one document. `default_namespace` applies to namespaced objects without one.
    pub fn from_document(
        doc: &Document,
        default_namespace: &str,
    ) -> Result<Parsed, Vec<Diagnostic>> {
        let origin = Origin {
            location: doc.location.clone(),
            spans: doc.spans.clone(),
        };
        let err = |field: &str, msg: String| Diagnostic {
            severity: Severity::Error,
            location: Some(origin.locate(field)),
            resource: None,
            field: field.to_string(),
            message: msg,
        };
        let Value::Object(map) = &doc.value else {
            return Err(vec![err(
                "",
                format!(
                    "expected a Kubernetes object (a mapping with apiVersion, kind and metadata), found {}",
                    type_name(&doc.value)
                ),
            )]);
        };
        let api_version = match map.get("apiVersion") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                return Err(vec![err(
                    "apiVersion",
                    "apiVersion must be a non-empty string".into(),
                )])
            }
            None => {
                return Err(vec![err(
                    "",
                    "missing apiVersion: every object needs apiVersion and kind".into(),
                )])
            }
        };
        let kind_name = match map.get("kind") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(vec![err("kind", "kind must be a non-empty string".into())]),
            None => {
                return Err(vec![err(
                    "",
                    "missing kind: every object needs apiVersion and kind".into(),
                )])
            }
        };
        let meta = map.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let explicit_ns = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);

        let kind = match Kind::lookup(&api_version, &kind_name) {
            Ok(Some(k)) => k,
            Ok(None) => {
                return Ok(Parsed::Unrecognized(Box::new(Unrecognized {
                    api_version,
                    kind: kind_name,
                    namespace: explicit_ns,
                    name,
                    origin,
                    raw: doc.value.clone(),
                })))
            }
            Err(e) => return Err(vec![err("apiVersion", e)]),
        };
        let reference = |ns: &Option<String>| ResourceRef {
            kind: kind_name.clone(),
            namespace: ns.clone(),
            name: name.clone(),
        };
        let namespace = if kind.namespaced() {
            Some(
                explicit_ns
                    .clone()
                    .unwrap_or_else(|| default_namespace.to_string()),
            )
        } else {
            None
        };
        if name.is_empty() {
            let mut d = err(
                "metadata.name",
                "missing metadata.name: every object needs a name".into(),
            );
            d.resource = Some(reference(&namespace));
            return Err(vec![d]);
        }

        let decoded = decode(kind, &doc.value).map_err(|(path, msg)| {
            let mut d = err(&path, msg);
            d.resource = Some(reference(&namespace));
            vec![d]
        })?;
        let (object, metadata) = decoded;
        Ok(Parsed::Resource(Box::new(Resource {
            kind,
            api_version,
            name,
            namespace,
            labels: metadata.labels.unwrap_or_default(),
            annotations: metadata.annotations.unwrap_or_default(),
            creation_timestamp: meta
                .and_then(|m| m.get("creationTimestamp"))
                .and_then(Value::as_str)
                .map(str::to_string),
            object,
            origin,
            raw: doc.value.clone(),
        })))
    }
}

/// The annotation that makes an AuthorizationPolicy evaluate without enforcing.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// A boolean as Go's `strconv.ParseBool` reads it (what Istio accepts in annotations).
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

type Decoded = (Object, ObjectMeta);

fn decode(kind: Kind, value: &Value) -> Result<Decoded, (String, String)> {
    fn istio<S: DeserializeOwned + Default>(
        value: &Value,
        wrap: impl FnOnce(Box<S>) -> Object,
    ) -> Result<Decoded, (String, String)> {
        let o: IstioObject<S> = typed(value)?;
        Ok((wrap(Box::new(o.spec)), o.metadata))
    }
    fn k8s<T: DeserializeOwned>(
        value: &Value,
        meta: impl FnOnce(&T) -> ObjectMeta,
        wrap: impl FnOnce(Box<T>) -> Object,
    ) -> Result<Decoded, (String, String)> {
        let o: T = typed(value)?;
        let m = meta(&o);
        Ok((wrap(Box::new(o)), m))
    }
    match kind {
        Kind::Gateway => istio(value, Object::Gateway),
        Kind::VirtualService => istio(value, Object::VirtualService),
        Kind::DestinationRule => istio(value, Object::DestinationRule),
        Kind::ServiceEntry => istio(value, Object::ServiceEntry),
        Kind::WorkloadEntry => istio(value, Object::WorkloadEntry),
        Kind::WorkloadGroup => istio(value, Object::WorkloadGroup),
        Kind::Sidecar => istio(value, Object::Sidecar),
        Kind::PeerAuthentication => istio(value, Object::PeerAuthentication),
        Kind::RequestAuthentication => istio(value, Object::RequestAuthentication),
        Kind::AuthorizationPolicy => istio(value, Object::AuthorizationPolicy),
        Kind::Telemetry => istio(value, Object::Telemetry),
        Kind::Namespace => k8s(value, |o: &Namespace| o.metadata.clone(), Object::Namespace),
        Kind::Service => k8s(value, |o: &Service| o.metadata.clone(), Object::Service),
        Kind::Deployment => k8s(
            value,
            |o: &Deployment| o.metadata.clone(),
            Object::Deployment,
        ),
        Kind::Pod => k8s(value, |o: &Pod| o.metadata.clone(), Object::Pod),
        Kind::Secret => k8s(
            &without_base64_line_breaks(value, "data"),
            |o: &Secret| o.metadata.clone(),
            Object::Secret,
        ),
        Kind::ConfigMap => k8s(
            &without_base64_line_breaks(value, "binaryData"),
            |o: &ConfigMap| o.metadata.clone(),
            Object::ConfigMap,
        ),
        Kind::EndpointSlice => k8s(
            value,
            |o: &EndpointSlice| o.metadata.clone(),
            Object::EndpointSlice,
        ),
        Kind::ServiceAccount => k8s(
            value,
            |o: &ServiceAccount| o.metadata.clone(),
            Object::ServiceAccount,
        ),
        Kind::Certificate => k8s(
            value,
            |o: &Certificate| o.metadata.clone(),
            Object::Certificate,
        ),
    }
}

/// Kubernetes (Go's base64 decoder) ignores line breaks inside base64 data, and kustomize
/// wraps long values at 70 columns: drop them before decoding the map `field`.
fn without_base64_line_breaks(value: &Value, field: &str) -> Value {
    let mut v = value.clone();
    if let Some(Value::Object(data)) = v.get_mut(field) {
        for item in data.values_mut() {
            if let Value::String(s) = item {
                if s.contains(['\n', '\r']) {
                    s.retain(|c| c != '\n' && c != '\r');
                }
            }
        }
    }
    v
}

/// Deserializes with the failing field's path, for located messages.
pub fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_documents;

    fn parse(text: &str) -> Result<Parsed, Vec<Diagnostic>> {
        let docs = parse_documents("t.yaml", text).unwrap();
        Resource::from_document(&docs[0], "default")
    }

    fn errors_of(text: &str) -> Vec<String> {
        let Ok(Parsed::Resource(r)) = parse(text) else {
            panic!("not a resource: {text}");
        };
        r.validate("istio-system")
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| d.message)
            .collect()
    }

    #[test]
    fn gateway_names_are_dns_labels_and_dry_run_is_for_allow_and_deny_policies() {
        let gw = |name: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec: {{selector: {{istio: ingressgateway}}, servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]}}\n"
            )
        };
        assert!(errors_of(&gw("public-gw")).is_empty());
        let e = errors_of(&gw("public.gw"));
        assert!(
            e.iter().any(|m| m.contains("invalid gateway name")),
            "{e:?}"
        );

        let ap = |action: &str, value: &str| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, annotations: {{istio.io/dry-run: '{value}'}}}}\nspec: {{action: {action}, rules: [{{}}], {}}}\n",
                if action == "CUSTOM" { "provider: {name: ext}" } else { "" }
            )
        };
        assert!(errors_of(&ap("ALLOW", "true")).is_empty());
        assert!(errors_of(&ap("DENY", "False")).is_empty());
        let e = errors_of(&ap("ALLOW", "yes"));
        assert!(e.iter().any(|m| m.contains("invalid value")), "{e:?}");
        let e = errors_of(&ap("CUSTOM", "true"));
        assert!(
            e.iter()
                .any(|m| m.contains("only supports action ALLOW or DENY")),
            "{e:?}"
        );
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, annotations: {istio.io/dry-run: 'true'}}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n";
        let e = errors_of(vs);
        assert!(
            e.iter().any(|m| m.contains("unsupported annotation")),
            "{e:?}"
        );
    }

    #[test]
    fn kinds_and_versions() {
        assert_eq!(
            Kind::lookup("networking.istio.io/v1alpha3", "Gateway"),
            Ok(Some(Kind::Gateway))
        );
        assert_eq!(
            Kind::lookup("security.istio.io/v1beta1", "AuthorizationPolicy"),
            Ok(Some(Kind::AuthorizationPolicy))
        );
        assert_eq!(Kind::lookup("v1", "Service"), Ok(Some(Kind::Service)));
        assert_eq!(
            Kind::lookup("apps/v1", "Deployment"),
            Ok(Some(Kind::Deployment))
        );
        assert!(Kind::lookup("security.istio.io/v1alpha1", "PeerAuthentication").is_err());
        assert_eq!(
            Kind::lookup("telemetry.istio.io/v1alpha1", "Telemetry"),
            Ok(Some(Kind::Telemetry))
        );
        assert_eq!(
            Kind::lookup("telemetry.istio.io/v1", "EnvoyFilter"),
            Ok(None)
        );
    }

    #[test]
    fn unknown_kind_is_kept() {
        let p = parse("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n").unwrap();
        assert!(matches!(p, Parsed::Unrecognized(u) if u.kind == "Widget" && u.name == "w"));
    }

    #[test]
    fn default_namespace_applies() {
        let Parsed::Resource(r) = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(r.namespace.as_deref(), Some("default"));
        let Parsed::Resource(r) = parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {istio-injection: enabled}}\n").unwrap() else {
            panic!()
        };
        assert_eq!(r.namespace, None);
        assert_eq!(r.labels["istio-injection"], "enabled");
    }

    #[test]
    fn missing_kind_and_name_are_located() {
        let e = parse("apiVersion: v1\nmetadata: {name: x}\n").unwrap_err();
        assert!(e[0].message.contains("missing kind"));
        let e = parse("apiVersion: v1\nkind: Service\nmetadata:\n  labels: {a: b}\n").unwrap_err();
        assert!(e[0].message.contains("metadata.name"), "{e:?}");
        assert_eq!(e[0].location.as_ref().unwrap().line, 3);
    }

    #[test]
    fn wrong_type_in_k8s_object_is_located() {
        let e = parse("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - port: eighty\n").unwrap_err();
        assert_eq!(e[0].field, "spec.ports[0].port", "{e:?}");
        assert_eq!(e[0].location.as_ref().unwrap().line, 6);
    }
}
