//! Resource identity as kustomize sees it (kyaml `resid`): group/version/kind, name, namespace,
//! and which kinds are cluster-scoped (the built-in schema kustomize v5 ships, Kubernetes 1.21).

use std::fmt;

/// The "namespace" of cluster-scoped objects in kustomize's bookkeeping.
pub const NOT_A_NAMESPACE: &str = "_non_namespaceable_";
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Gvk {
    /// kyaml `ParseGroupVersion`: `apps/v1` -> (apps, v1); `v1` -> ("", v1).
    pub fn new(api_version: &str, kind: &str) -> Gvk {
        let (group, version) = match api_version.find('/') {
            Some(i) => (&api_version[..i], &api_version[i + 1..]),
            None => ("", api_version),
        };
        Gvk {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
        }
    }

    /// True when every non-empty field of `selector` equals this one's.
    pub fn is_selected(&self, selector: &Gvk) -> bool {
        (selector.group.is_empty() || selector.group == self.group)
            && (selector.version.is_empty() || selector.version == self.version)
            && (selector.kind.is_empty() || selector.kind == self.kind)
    }

    /// Cluster-scoped per kustomize's built-in schema; unknown kinds are namespaced.
    pub fn is_cluster_scoped(&self) -> bool {
        KNOWN_TYPES.iter().any(|(a, k, s)| {
            *s == Scope::Cluster && *k == self.kind && api_version_is(a, &self.group, &self.version)
        })
    }

    /// `group_version_kind` with `~G`/`~V`/`~K` for empty parts (legacy sort key).
    pub fn legacy_sort_string(&self) -> String {
        let or = |s: &str, d: &str| {
            if s.is_empty() {
                d.to_string()
            } else {
                s.to_string()
            }
        };
        format!(
            "{}_{}_{}",
            or(&self.group, "~G"),
            or(&self.version, "~V"),
            or(&self.kind, "~K")
        )
    }
}

impl fmt::Display for Gvk {
    /// kyaml's `Kind.version.group` form, as in kustomize's messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or = |s: &str, d: &'static str| if s.is_empty() { d } else { s }.to_string();
        write!(
            f,
            "{}.{}.{}",
            or(&self.kind, "[noKind]"),
            or(&self.version, "[noVer]"),
            or(&self.group, "[noGrp]")
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResId {
    pub gvk: Gvk,
    pub name: String,
    pub namespace: String,
}

impl ResId {
    pub fn is_cluster_scoped(&self) -> bool {
        self.gvk.is_cluster_scoped()
    }

    /// `default` for an empty namespace, a marker for cluster-scoped objects.
    pub fn effective_namespace(&self) -> String {
        if self.is_cluster_scoped() {
            NOT_A_NAMESPACE.to_string()
        } else if self.namespace.is_empty() {
            DEFAULT_NAMESPACE.to_string()
        } else {
            self.namespace.clone()
        }
    }

    pub fn is_ns_equals(&self, o: &ResId) -> bool {
        self.effective_namespace() == o.effective_namespace()
    }

    /// kyaml `ResId.Equals`: same gvk, name and effective namespace.
    pub fn equals(&self, o: &ResId) -> bool {
        self.gvk == o.gvk && self.name == o.name && self.is_ns_equals(o)
    }
}

impl fmt::Display for ResId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "[noName]"
        } else {
            &self.name
        };
        let ns = if self.namespace.is_empty() {
            "[noNs]"
        } else {
            &self.namespace
        };
        write!(f, "{}/{}.{}", self.gvk, name, ns)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// Whether `api_version` is `group/version` (or `version` for the core group).
fn api_version_is(api_version: &str, group: &str, version: &str) -> bool {
    if group.is_empty() {
        return api_version == version;
    }
    api_version.len() == group.len() + 1 + version.len()
        && api_version.starts_with(group)
        && api_version.as_bytes()[group.len()] == b'/'
        && api_version.ends_with(version)
}

/// Scope of a kind known to kustomize's built-in schema (Kubernetes 1.21); `None` for others
/// (custom resources), which kustomize treats as namespaced and without a patch schema.
pub fn scope(api_version: &str, kind: &str) -> Option<Scope> {
    KNOWN_TYPES
        .iter()
        .find(|(a, k, _)| *a == api_version && *k == kind)
        .map(|(_, _, s)| *s)
}

use Scope::{Cluster as C, Namespaced as N};

/// apiVersion, kind, scope of every kind in kustomize's built-in schema.
static KNOWN_TYPES: &[(&str, &str, Scope)] = &[
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        C,
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        C,
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "MutatingWebhookConfiguration",
        C,
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "ValidatingWebhookConfiguration",
        C,
    ),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", C),
    (
        "apiextensions.k8s.io/v1beta1",
        "CustomResourceDefinition",
        C,
    ),
    ("apiregistration.k8s.io/v1", "APIService", C),
    ("apiregistration.k8s.io/v1beta1", "APIService", C),
    ("apps/v1", "ControllerRevision", N),
    ("apps/v1", "DaemonSet", N),
    ("apps/v1", "Deployment", N),
    ("apps/v1", "ReplicaSet", N),
    ("apps/v1", "StatefulSet", N),
    ("autoscaling/v1", "HorizontalPodAutoscaler", N),
    ("autoscaling/v1", "Scale", N),
    ("autoscaling/v2beta1", "HorizontalPodAutoscaler", N),
    ("autoscaling/v2beta2", "HorizontalPodAutoscaler", N),
    ("batch/v1", "CronJob", N),
    ("batch/v1", "Job", N),
    ("batch/v1beta1", "CronJob", N),
    ("certificates.k8s.io/v1", "CertificateSigningRequest", C),
    (
        "certificates.k8s.io/v1beta1",
        "CertificateSigningRequest",
        C,
    ),
    ("coordination.k8s.io/v1", "Lease", N),
    ("coordination.k8s.io/v1beta1", "Lease", N),
    ("discovery.k8s.io/v1", "EndpointSlice", N),
    ("discovery.k8s.io/v1beta1", "EndpointSlice", N),
    ("events.k8s.io/v1", "Event", N),
    ("events.k8s.io/v1beta1", "Event", N),
    ("extensions/v1beta1", "Ingress", N),
    ("flowcontrol.apiserver.k8s.io/v1alpha1", "FlowSchema", C),
    (
        "flowcontrol.apiserver.k8s.io/v1alpha1",
        "PriorityLevelConfiguration",
        C,
    ),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "FlowSchema", C),
    (
        "flowcontrol.apiserver.k8s.io/v1beta1",
        "PriorityLevelConfiguration",
        C,
    ),
    ("internal.apiserver.k8s.io/v1alpha1", "StorageVersion", C),
    ("networking.k8s.io/v1", "Ingress", N),
    ("networking.k8s.io/v1", "IngressClass", C),
    ("networking.k8s.io/v1", "NetworkPolicy", N),
    ("networking.k8s.io/v1beta1", "Ingress", N),
    ("networking.k8s.io/v1beta1", "IngressClass", C),
    ("node.k8s.io/v1", "RuntimeClass", C),
    ("node.k8s.io/v1alpha1", "RuntimeClass", C),
    ("node.k8s.io/v1beta1", "RuntimeClass", C),
    ("policy/v1", "PodDisruptionBudget", N),
    ("policy/v1beta1", "PodDisruptionBudget", N),
    ("policy/v1beta1", "PodSecurityPolicy", C),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", C),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", C),
    ("rbac.authorization.k8s.io/v1", "Role", N),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", N),
    ("rbac.authorization.k8s.io/v1alpha1", "ClusterRole", C),
    (
        "rbac.authorization.k8s.io/v1alpha1",
        "ClusterRoleBinding",
        C,
    ),
    ("rbac.authorization.k8s.io/v1alpha1", "Role", N),
    ("rbac.authorization.k8s.io/v1alpha1", "RoleBinding", N),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRole", C),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRoleBinding", C),
    ("rbac.authorization.k8s.io/v1beta1", "Role", N),
    ("rbac.authorization.k8s.io/v1beta1", "RoleBinding", N),
    ("scheduling.k8s.io/v1", "PriorityClass", C),
    ("scheduling.k8s.io/v1alpha1", "PriorityClass", C),
    ("scheduling.k8s.io/v1beta1", "PriorityClass", C),
    ("storage.k8s.io/v1", "CSIDriver", C),
    ("storage.k8s.io/v1", "CSINode", C),
    ("storage.k8s.io/v1", "StorageClass", C),
    ("storage.k8s.io/v1", "VolumeAttachment", C),
    ("storage.k8s.io/v1alpha1", "CSIStorageCapacity", N),
    ("storage.k8s.io/v1alpha1", "VolumeAttachment", C),
    ("storage.k8s.io/v1beta1", "CSIDriver", C),
    ("storage.k8s.io/v1beta1", "CSINode", C),
    ("storage.k8s.io/v1beta1", "CSIStorageCapacity", N),
    ("storage.k8s.io/v1beta1", "StorageClass", C),
    ("storage.k8s.io/v1beta1", "VolumeAttachment", C),
    ("v1", "Binding", N),
    ("v1", "ComponentStatus", C),
    ("v1", "ConfigMap", N),
    ("v1", "Endpoints", N),
    ("v1", "Event", N),
    ("v1", "LimitRange", N),
    ("v1", "Namespace", C),
    ("v1", "Node", C),
    ("v1", "NodeProxyOptions", C),
    ("v1", "PersistentVolume", C),
    ("v1", "PersistentVolumeClaim", N),
    ("v1", "Pod", N),
    ("v1", "PodAttachOptions", N),
    ("v1", "PodExecOptions", N),
    ("v1", "PodPortForwardOptions", N),
    ("v1", "PodProxyOptions", N),
    ("v1", "PodTemplate", N),
    ("v1", "ReplicationController", N),
    ("v1", "ResourceQuota", N),
    ("v1", "Secret", N),
    ("v1", "Service", N),
    ("v1", "ServiceAccount", N),
    ("v1", "ServiceProxyOptions", N),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert!(Gvk::new("v1", "Namespace").is_cluster_scoped());
        assert!(!Gvk::new("v2", "Namespace").is_cluster_scoped());
        assert!(Gvk::new("rbac.authorization.k8s.io/v1", "ClusterRole").is_cluster_scoped());
        assert!(!Gvk::new("networking.istio.io/v1", "VirtualService").is_cluster_scoped());
    }

    #[test]
    fn display_like_kyaml() {
        let id = ResId {
            gvk: Gvk::new("", "ConfigMap"),
            name: "cm2".into(),
            namespace: String::new(),
        };
        assert_eq!(id.to_string(), "ConfigMap.[noVer].[noGrp]/cm2.[noNs]");
    }
}
