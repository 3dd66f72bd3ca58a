//! Istio's analysis message types: code, name, level and text template, as `istioctl analyze`
//! prints them (pkg/config/analysis/msg/messages.yaml). Only the types an analyzer here emits
//! are listed.

use std::fmt;

use serde::Serialize;

/// Message level, ordered from least to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Some(Level::Info),
            "warn" | "warning" => Some(Level::Warning),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        })
    }
}

/// One kind of message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
}

impl MessageType {
    pub fn documentation_url(&self) -> String {
        format!(
            "https://istio.io/latest/docs/reference/config/analysis/{}/",
            self.code.to_ascii_lowercase()
        )
    }
}

macro_rules! message_types {
    ($($id:ident = $code:literal, $name:literal, $level:ident;)*) => {
        $(pub const $id: MessageType = MessageType { code: $code, name: $name, level: Level::$level };)*
        /// Every message type Trellis can emit.
        pub const ALL: &[MessageType] = &[$($id),*];
    };
}

message_types! {
    INTERNAL_ERROR = "IST0001", "InternalError", Error;
    DEPRECATED = "IST0002", "Deprecated", Warning;
    REFERENCED_RESOURCE_NOT_FOUND = "IST0101", "ReferencedResourceNotFound", Error;
    NAMESPACE_NOT_INJECTED = "IST0102", "NamespaceNotInjected", Info;
    SCHEMA_VALIDATION_ERROR = "IST0106", "SchemaValidationError", Error;
    MISPLACED_ANNOTATION = "IST0107", "MisplacedAnnotation", Warning;
    UNKNOWN_ANNOTATION = "IST0108", "UnknownAnnotation", Warning;
    CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS = "IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Error;
    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS = "IST0110", "ConflictingSidecarWorkloadSelectors", Error;
    MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS = "IST0111", "MultipleSidecarsWithoutWorkloadSelectors", Error;
    VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED = "IST0112", "VirtualServiceDestinationPortSelectorRequired", Error;
    DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES = "IST0116", "DeploymentAssociatedToMultipleServices", Warning;
    PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION = "IST0118", "PortNameIsNotUnderNamingConvention", Info;
    JWT_FAILURE_DUE_TO_INVALID_SERVICE_PORT_PREFIX = "IST0119", "JwtFailureDueToInvalidServicePortPrefix", Warning;
    INVALID_REGEXP = "IST0122", "InvalidRegexp", Warning;
    NAMESPACE_MULTIPLE_INJECTION_LABELS = "IST0123", "NamespaceMultipleInjectionLabels", Warning;
    INVALID_ANNOTATION = "IST0125", "InvalidAnnotation", Warning;
    NO_MATCHING_WORKLOADS_FOUND = "IST0127", "NoMatchingWorkloadsFound", Warning;
    NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL = "IST0128", "NoServerCertificateVerificationDestinationLevel", Warning;
    NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL = "IST0129", "NoServerCertificateVerificationPortLevel", Warning;
    VIRTUAL_SERVICE_UNREACHABLE_RULE = "IST0130", "VirtualServiceUnreachableRule", Warning;
    VIRTUAL_SERVICE_INEFFECTIVE_MATCH = "IST0131", "VirtualServiceIneffectiveMatch", Info;
    VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY = "IST0132", "VirtualServiceHostNotFoundInGateway", Warning;
    SCHEMA_WARNING = "IST0133", "SchemaWarning", Warning;
    SERVICE_ENTRY_ADDRESSES_REQUIRED = "IST0134", "ServiceEntryAddressesRequired", Warning;
    DEPRECATED_ANNOTATION = "IST0135", "DeprecatedAnnotation", Info;
    DEPLOYMENT_CONFLICTING_PORTS = "IST0137", "DeploymentConflictingPorts", Warning;
    GATEWAY_DUPLICATE_CERTIFICATE = "IST0138", "GatewayDuplicateCertificate", Warning;
    INGRESS_ROUTE_RULES_NOT_AFFECTED = "IST0140", "IngressRouteRulesNotAffected", Warning;
    INVALID_APPLICATION_UID = "IST0144", "InvalidApplicationUID", Warning;
    CONFLICTING_GATEWAYS = "IST0145", "ConflictingGateways", Error;
    NAMESPACE_INJECTION_ENABLED_BY_DEFAULT = "IST0148", "NamespaceInjectionEnabledByDefault", Info;
    JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTHN = "IST0149", "JwtClaimBasedRoutingWithoutRequestAuthN", Error;
    EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME = "IST0150", "ExternalNameServiceTypeInvalidPortName", Warning;
    ENVOY_FILTER_USES_RELATIVE_OPERATION = "IST0151", "EnvoyFilterUsesRelativeOperation", Warning;
    ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY = "IST0152", "EnvoyFilterUsesReplaceOperationIncorrectly", Error;
    ENVOY_FILTER_USES_ADD_OPERATION_INCORRECTLY = "IST0153", "EnvoyFilterUsesAddOperationIncorrectly", Error;
    ENVOY_FILTER_USES_REMOVE_OPERATION_INCORRECTLY = "IST0154", "EnvoyFilterUsesRemoveOperationIncorrectly", Error;
    ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION = "IST0155", "EnvoyFilterUsesRelativeOperationWithProxyVersion", Warning;
    INVALID_TELEMETRY_PROVIDER = "IST0157", "InvalidTelemetryProvider", Warning;
    CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS = "IST0159", "ConflictingTelemetryWorkloadSelectors", Error;
    MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS = "IST0160", "MultipleTelemetriesWithoutWorkloadSelectors", Error;
    INVALID_GATEWAY_CREDENTIAL = "IST0161", "InvalidGatewayCredential", Error;
    GATEWAY_PORT_NOT_DEFINED_ON_SERVICE = "IST0162", "GatewayPortNotDefinedOnService", Warning;
    REFERENCED_INTERNAL_GATEWAY = "IST0165", "ReferencedInternalGateway", Warning;
    INEFFECTIVE_SELECTOR = "IST0166", "IneffectiveSelector", Warning;
    INEFFECTIVE_POLICY = "IST0167", "IneffectivePolicy", Warning;
    NEGATIVE_CONDITION_STATUS = "IST0171", "NegativeConditionStatus", Warning;
    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS = "IST0173", "DestinationRuleSubsetNotSelectPods", Error;
    DESTINATION_RULE_HOST_NOT_FOUND = "IST0174", "UnknownDestinationRuleHost", Warning;
}

/// Finds a message type by code (`IST0101`) or name (`ReferencedResourceNotFound`).
pub fn lookup(code_or_name: &str) -> Option<MessageType> {
    ALL.iter()
        .copied()
        .find(|m| m.code.eq_ignore_ascii_case(code_or_name) || m.name == code_or_name)
}
