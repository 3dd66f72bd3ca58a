//! Istio annotations on Kubernetes resources (Namespaces, Services, Pods, Deployments):
//! unknown (IST0108), on the wrong kind (IST0107), deprecated (IST0135) or with an invalid value
//! (IST0125), checked against Istio's annotation catalogue (istio/api `annotation/`).

use std::net::IpAddr;

use trellis_api::resource::Kind;

use crate::context::Context;
use crate::messages;

/// Where an annotation may be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum On {
    Any,
    AuthorizationPolicy,
    Gateway,
    GatewayClass,
    Ingress,
    Namespace,
    Pod,
    Service,
    ServiceEntry,
    WorkloadEntry,
}

impl On {
    fn name(self) -> &'static str {
        match self {
            On::Any => "Any",
            On::AuthorizationPolicy => "AuthorizationPolicy",
            On::Gateway => "Gateway",
            On::GatewayClass => "GatewayClass",
            On::Ingress => "Ingress",
            On::Namespace => "Namespace",
            On::Pod => "Pod",
            On::Service => "Service",
            On::ServiceEntry => "ServiceEntry",
            On::WorkloadEntry => "WorkloadEntry",
        }
    }
}

/// How an annotation's value is checked (Istio's injector validations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    None,
    InterceptionMode,
    Port,
    UInt32,
    Bool,
    IncludeCidrs,
    Cidrs,
    IncludePorts(&'static str),
    Ports(&'static str),
}

struct Annotation {
    name: &'static str,
    on: &'static [On],
    deprecated: bool,
    check: Check,
}

const fn ann(name: &'static str, on: &'static [On]) -> Annotation {
    Annotation {
        name,
        on,
        deprecated: false,
        check: Check::None,
    }
}

const fn deprecated(name: &'static str, on: &'static [On]) -> Annotation {
    Annotation {
        name,
        on,
        deprecated: true,
        check: Check::None,
    }
}

const fn checked(name: &'static str, on: &'static [On], check: Check) -> Annotation {
    Annotation {
        name,
        on,
        deprecated: false,
        check,
    }
}

const POD: &[On] = &[On::Pod];

/// Istio's resource annotations (istio/api `annotation/annotations.yaml`).
#[rustfmt::skip]
const CATALOGUE: &[Annotation] = &[
    deprecated("alpha.istio.io/canonical-serviceaccounts", &[On::Service]),
    deprecated("alpha.istio.io/kubernetes-serviceaccounts", &[On::Service]),
    ann("ambient.istio.io/bypass-inbound-capture", POD),
    ann("ambient.istio.io/redirection", POD),
    ann("ambient.istio.io/waypoint-inbound-binding", &[On::GatewayClass, On::Gateway]),
    ann("galley.istio.io/analyze-suppress", &[On::Any]),
    ann("gateway.istio.io/controller-version", &[On::Any]),
    ann("gateway.istio.io/name-override", &[On::Gateway]),
    ann("gateway.istio.io/service-account", &[On::Gateway]),
    ann("inject.istio.io/templates", POD),
    ann("istio.io/autoRegistrationGroup", &[On::WorkloadEntry]),
    ann("istio.io/connectedAt", &[On::WorkloadEntry]),
    ann("istio.io/disconnectedAt", &[On::WorkloadEntry]),
    ann("istio.io/dry-run", &[On::AuthorizationPolicy]),
    ann("istio.io/rev", POD),
    ann("istio.io/workloadController", &[On::WorkloadEntry]),
    ann("kubernetes.io/ingress.class", &[On::Ingress]),
    ann("networking.istio.io/exportTo", &[On::Service]),
    ann("networking.istio.io/service-type", &[On::Gateway]),
    ann("networking.istio.io/traffic-distribution", &[On::Service, On::ServiceEntry]),
    checked("prometheus.istio.io/merge-metrics", POD, Check::Bool),
    ann("proxy.istio.io/config", POD),
    ann("proxy.istio.io/overrides", POD),
    ann("readiness.status.sidecar.istio.io/applicationPorts", POD),
    checked("readiness.status.sidecar.istio.io/failureThreshold", POD, Check::UInt32),
    checked("readiness.status.sidecar.istio.io/initialDelaySeconds", POD, Check::UInt32),
    checked("readiness.status.sidecar.istio.io/periodSeconds", POD, Check::UInt32),
    ann("sidecar.istio.io/agentLogLevel", POD),
    ann("sidecar.istio.io/bootstrapOverride", POD),
    ann("sidecar.istio.io/componentLogLevel", POD),
    deprecated("sidecar.istio.io/discoveryAddress", POD),
    ann("sidecar.istio.io/enableCoreDump", POD),
    deprecated("sidecar.istio.io/extraStatTags", POD),
    deprecated("sidecar.istio.io/inject", POD),
    checked("sidecar.istio.io/interceptionMode", POD, Check::InterceptionMode),
    ann("sidecar.istio.io/logLevel", POD),
    ann("sidecar.istio.io/nativeSidecar", POD),
    ann("sidecar.istio.io/proxyCPU", POD),
    ann("sidecar.istio.io/proxyCPULimit", POD),
    ann("sidecar.istio.io/proxyImage", POD),
    ann("sidecar.istio.io/proxyImageType", POD),
    ann("sidecar.istio.io/proxyMemory", POD),
    ann("sidecar.istio.io/proxyMemoryLimit", POD),
    ann("sidecar.istio.io/rewriteAppHTTPProbers", POD),
    ann("sidecar.istio.io/statsHistogramBuckets", POD),
    deprecated("sidecar.istio.io/statsInclusionPrefixes", POD),
    deprecated("sidecar.istio.io/statsInclusionRegexps", POD),
    deprecated("sidecar.istio.io/statsInclusionSuffixes", POD),
    ann("sidecar.istio.io/status", POD),
    ann("sidecar.istio.io/userVolume", POD),
    ann("sidecar.istio.io/userVolumeMount", POD),
    checked("status.sidecar.istio.io/port", POD, Check::Port),
    ann("topology.istio.io/controlPlaneClusters", &[On::Namespace]),
    ann("traffic.istio.io/nodeSelector", &[On::Service]),
    checked("traffic.sidecar.istio.io/excludeInboundPorts", POD, Check::Ports("excludeInboundPorts")),
    ann("traffic.sidecar.istio.io/excludeInterfaces", POD),
    checked("traffic.sidecar.istio.io/excludeOutboundIPRanges", POD, Check::Cidrs),
    checked("traffic.sidecar.istio.io/excludeOutboundPorts", POD, Check::Ports("excludeOutboundPorts")),
    checked("traffic.sidecar.istio.io/includeInboundPorts", POD, Check::IncludePorts("includeInboundPorts")),
    checked("traffic.sidecar.istio.io/includeOutboundIPRanges", POD, Check::IncludeCidrs),
    ann("traffic.sidecar.istio.io/includeOutboundPorts", POD),
    ann("traffic.sidecar.istio.io/kubevirtInterfaces", POD),
];

/// Whether Istio considers an annotation its own: any `*istio.io/` key, and the Kubernetes
/// ingress class it documents.
fn is_istio_annotation(key: &str) -> bool {
    key == "kubernetes.io/ingress.class"
        || key
            .split_once('/')
            .is_some_and(|(prefix, _)| prefix.ends_with("istio.io"))
}

fn lookup(key: &str) -> Option<&'static Annotation> {
    CATALOGUE.iter().find(|a| a.name == key)
}

/// Checks a value; the error text follows Istio's injector.
fn validate(check: Check, value: &str) -> Result<(), String> {
    match check {
        Check::None => Ok(()),
        Check::InterceptionMode => match value {
            "REDIRECT" | "TPROXY" | "NONE" => Ok(()),
            _ => Err(format!(
                "interceptionMode invalid, use REDIRECT,TPROXY,NONE: {value}"
            )),
        },
        Check::Port => parse_port(value)
            .map(|_| ())
            .map_err(|e| format!("excludeInboundPorts invalid: {e}")),
        Check::UInt32 => parse_uint(value, u32::MAX as u64).map(|_| ()),
        Check::Bool => match value {
            "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false"
            | "False" => Ok(()),
            _ => Err(format!(
                "strconv.ParseBool: parsing {value:?}: invalid syntax"
            )),
        },
        Check::IncludeCidrs if value == "*" => Ok(()),
        Check::IncludeCidrs => cidrs(value).map_err(|e| format!("includeIPRanges invalid: {e}")),
        Check::Cidrs => cidrs(value).map_err(|e| format!("excludeIPRanges invalid: {e}")),
        Check::IncludePorts(_) if value == "*" => Ok(()),
        Check::IncludePorts(what) | Check::Ports(what) => {
            let value = value.trim();
            if value.is_empty() {
                return Ok(());
            }
            for p in value.split(',') {
                if let Err(e) = parse_port(p) {
                    return Err(format!("{what} invalid: failed parsing port '{p}': {e}"));
                }
            }
            Ok(())
        }
    }
}

/// Go's `strconv.ParseUint(value, 10, bits)` with its error texts.
fn parse_uint(value: &str, max: u64) -> Result<u64, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "strconv.ParseUint: parsing {value:?}: invalid syntax"
        ));
    }
    match value.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "strconv.ParseUint: parsing {value:?}: value out of range"
        )),
    }
}

fn parse_port(value: &str) -> Result<u16, String> {
    parse_uint(value.trim(), u16::MAX as u64)
        .map(|p| p as u16)
        .map_err(|e| format!("failed parsing port '{value}': {e}"))
}

fn cidrs(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    for c in value.split(',') {
        let ok = c.split_once('/').is_some_and(|(ip, len)| {
            ip.parse::<IpAddr>().is_ok_and(|ip| {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                len.bytes().all(|b| b.is_ascii_digit())
                    && !len.is_empty()
                    && len.len() <= 3
                    && len.parse::<u32>().is_ok_and(|l| l <= max)
            })
        });
        if !ok {
            return Err(format!("failed parsing cidr '{c}'"));
        }
    }
    Ok(())
}

/// One finding about one annotation of a resource of `kind`.
fn check_annotation(kind: &str, key: &str, value: &str) -> Vec<(crate::MessageType, String)> {
    let mut out = Vec::new();
    let Some(def) = lookup(key) else {
        out.push((
            messages::UNKNOWN_ANNOTATION,
            format!("Unknown annotation: {key}"),
        ));
        return out;
    };
    if def.deprecated {
        let extra = if key == "sidecar.istio.io/inject" {
            " in favor of the \"sidecar.istio.io/inject\" label"
        } else {
            ""
        };
        out.push((
            messages::DEPRECATED_ANNOTATION,
            format!(
                "Annotation {key:?} has been deprecated{extra} and may not work in future Istio versions."
            ),
        ));
    }
    if def.on.contains(&On::Any) {
        return out;
    }
    if !def.on.iter().any(|o| o.name() == kind) {
        let on: Vec<&str> = def.on.iter().map(|o| o.name()).collect();
        out.push((
            messages::MISPLACED_ANNOTATION,
            format!(
                "Misplaced annotation: {key} can only be applied to {}",
                on.join(", ")
            ),
        ));
        return out;
    }
    if let Err(problem) = validate(def.check, value) {
        out.push((
            messages::INVALID_ANNOTATION,
            format!("Invalid annotation {key}: {problem}"),
        ));
    }
    out
}

/// IST0107 MisplacedAnnotation, IST0108 UnknownAnnotation, IST0125 InvalidAnnotation and
/// IST0135 DeprecatedAnnotation on Namespaces, Services, Pods and Deployments.
pub fn kubernetes_annotations(cx: &mut Context) {
    let mut reports = Vec::new();
    for &r in cx.resources {
        if !matches!(
            r.kind,
            Kind::Namespace | Kind::Service | Kind::Pod | Kind::Deployment
        ) || crate::is_default_resource(r)
        {
            continue;
        }
        // The deprecated injection annotation next to its replacement label is deliberate.
        let has_inject_label = r.labels.contains_key("sidecar.istio.io/inject");
        for (key, value) in &r.annotations {
            if !is_istio_annotation(key) {
                continue;
            }
            for (kind, text) in check_annotation(r.kind.name(), key, value) {
                if kind == messages::DEPRECATED_ANNOTATION
                    && has_inject_label
                    && key == "sidecar.istio.io/inject"
                {
                    continue;
                }
                reports.push((kind, r, format!("metadata.annotations[{key:?}]"), text));
            }
        }
    }
    for (kind, r, field, text) in reports {
        cx.report_at(kind, r, &field, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(kind: &str, key: &str, value: &str) -> Vec<&'static str> {
        check_annotation(kind, key, value)
            .into_iter()
            .map(|(k, _)| k.code)
            .collect()
    }

    #[test]
    fn istio_annotations_are_recognised_by_domain() {
        assert!(is_istio_annotation("sidecar.istio.io/inject"));
        assert!(is_istio_annotation("istio.io/rev"));
        assert!(is_istio_annotation("kubernetes.io/ingress.class"));
        assert!(!is_istio_annotation("kubernetes.io/psp"));
        assert!(!is_istio_annotation("helm.sh/hook"));
        assert!(!is_istio_annotation("example.com/istio.io"));
    }

    #[test]
    fn unknown_misplaced_deprecated_invalid() {
        assert_eq!(
            codes("Service", "networking.istio.io/exportThree", "x"),
            ["IST0108"]
        );
        assert!(codes("Service", "networking.istio.io/exportTo", ".").is_empty());
        assert_eq!(
            codes("Pod", "kubernetes.io/ingress.class", "istio"),
            ["IST0107"]
        );
        // Deprecated and misplaced are both reported, as Istio does.
        assert_eq!(
            codes("Deployment", "sidecar.istio.io/statsInclusionPrefixes", "x"),
            ["IST0135", "IST0107"]
        );
        assert_eq!(
            codes(
                "Pod",
                "readiness.status.sidecar.istio.io/initialDelaySeconds",
                "bar"
            ),
            ["IST0125"]
        );
        assert!(codes(
            "Pod",
            "readiness.status.sidecar.istio.io/periodSeconds",
            "10"
        )
        .is_empty());
        // `Any` annotations go anywhere.
        assert!(codes("Namespace", "galley.istio.io/analyze-suppress", "IST0102").is_empty());
    }

    #[test]
    fn value_checks() {
        assert!(validate(Check::UInt32, "4294967295").is_ok());
        assert!(validate(Check::UInt32, "4294967296").is_err());
        assert!(validate(Check::UInt32, "-1").is_err());
        assert!(validate(Check::Port, "15020").is_ok());
        assert!(validate(Check::Port, "70000").is_err());
        assert!(validate(Check::Bool, "true").is_ok());
        assert!(validate(Check::Bool, "yes").is_err());
        assert!(validate(Check::InterceptionMode, "TPROXY").is_ok());
        assert!(validate(Check::InterceptionMode, "tproxy").is_err());
        assert!(validate(Check::IncludeCidrs, "*").is_ok());
        assert!(validate(Check::IncludeCidrs, "10.0.0.0/8,fd00::/8").is_ok());
        assert!(validate(Check::Cidrs, "*").is_err());
        assert!(validate(Check::Cidrs, "10.0.0.0/33").is_err());
        assert!(validate(Check::Cidrs, "").is_ok());
        assert!(validate(Check::IncludePorts("includeInboundPorts"), "*").is_ok());
        assert!(validate(Check::Ports("excludeInboundPorts"), "*").is_err());
        assert!(validate(Check::Ports("excludeInboundPorts"), "80, 443").is_ok());
        assert_eq!(
            validate(Check::Ports("excludeInboundPorts"), "80,x"),
            Err("excludeInboundPorts invalid: failed parsing port 'x': failed parsing port 'x': strconv.ParseUint: parsing \"x\": invalid syntax".into())
        );
    }

    #[test]
    fn catalogue_is_sorted_and_unique() {
        for w in CATALOGUE.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
    }
}
