//! The slice of the Kubernetes OpenAPI schema that strategic merge patches depend on: which
//! lists of built-in kinds merge by key (`x-kubernetes-patch-strategy: merge` with
//! `x-kubernetes-patch-merge-key` / `x-kubernetes-list-map-keys`). Kinds outside kustomize's
//! built-in schema (custom resources such as Istio's) have no schema: their lists are replaced.

use super::resid::{scope, Gvk};

/// Types with fields relevant to merging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// A built-in kind with no interesting fields besides `metadata`.
    Known,
    Pod,
    PodTemplate,
    /// Deployment, DaemonSet, ReplicaSet, StatefulSet, Job, ReplicationController.
    Workload,
    CronJob,
    Service,
    ServiceAccount,
    ObjectMeta,
    PodTemplateSpec,
    PodSpec,
    Container,
    WorkloadSpec,
    CronJobSpec,
    JobTemplateSpec,
    ServiceSpec,
    /// Described by the schema but without merge lists (list elements, map values).
    Opaque,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    Obj(Ty),
    List {
        strategy: &'static str,
        keys: &'static [&'static str],
        elem: Ty,
    },
}

const fn merge_list(keys: &'static [&'static str], elem: Ty) -> Schema {
    Schema::List {
        strategy: "merge",
        keys,
        elem,
    }
}

/// The schema of a whole object, from its apiVersion and kind.
pub fn for_type(api_version: &str, kind: &str) -> Option<Schema> {
    scope(api_version, kind)?;
    let gvk = Gvk::new(api_version, kind);
    let ty = match (gvk.group.as_str(), kind) {
        ("", "Pod") => Ty::Pod,
        ("", "PodTemplate") => Ty::PodTemplate,
        ("", "ReplicationController")
        | ("apps", "Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet")
        | ("batch", "Job") => Ty::Workload,
        ("batch", "CronJob") => Ty::CronJob,
        ("", "Service") => Ty::Service,
        ("", "ServiceAccount") => Ty::ServiceAccount,
        _ => Ty::Known,
    };
    Some(Schema::Obj(ty))
}

impl Schema {
    /// Schema of field `name` of an object of this schema.
    pub fn field(&self, name: &str) -> Option<Schema> {
        let Schema::Obj(ty) = self else { return None };
        use Ty::*;
        let s = match (ty, name) {
            (
                Known | Pod | PodTemplate | Workload | CronJob | Service | ServiceAccount,
                "metadata",
            ) => Schema::Obj(ObjectMeta),
            (Pod, "spec") => Schema::Obj(PodSpec),
            (PodTemplate, "template") => Schema::Obj(PodTemplateSpec),
            (Workload, "spec") => Schema::Obj(WorkloadSpec),
            (CronJob, "spec") => Schema::Obj(CronJobSpec),
            (Service, "spec") => Schema::Obj(ServiceSpec),
            (ServiceAccount, "secrets") => merge_list(&["name"], Opaque),
            (ObjectMeta, "finalizers") => merge_list(&[], Opaque),
            (ObjectMeta, "ownerReferences") => merge_list(&["uid"], Opaque),
            (PodTemplateSpec, "metadata") => Schema::Obj(ObjectMeta),
            (PodTemplateSpec, "spec") => Schema::Obj(PodSpec),
            (WorkloadSpec, "template") => Schema::Obj(PodTemplateSpec),
            (CronJobSpec, "jobTemplate") => Schema::Obj(JobTemplateSpec),
            (JobTemplateSpec, "metadata") => Schema::Obj(ObjectMeta),
            (JobTemplateSpec, "spec") => Schema::Obj(WorkloadSpec),
            (PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
                merge_list(&["name"], Container)
            }
            (PodSpec, "volumes") => Schema::List {
                strategy: "merge,retainKeys",
                keys: &["name"],
                elem: Opaque,
            },
            (PodSpec, "imagePullSecrets") => merge_list(&["name"], Opaque),
            (PodSpec, "hostAliases") => merge_list(&["ip"], Opaque),
            (PodSpec, "topologySpreadConstraints") => {
                merge_list(&["topologyKey", "whenUnsatisfiable"], Opaque)
            }
            (Container, "ports") => merge_list(&["containerPort", "protocol"], Opaque),
            (Container, "env") => merge_list(&["name"], Opaque),
            (Container, "volumeMounts") => merge_list(&["mountPath"], Opaque),
            (Container, "volumeDevices") => merge_list(&["devicePath"], Opaque),
            (ServiceSpec, "ports") => merge_list(&["port", "protocol"], Opaque),
            _ => return None,
        };
        Some(s)
    }

    /// Schema of the elements of a list.
    pub fn elements(&self) -> Option<Schema> {
        match self {
            Schema::List { elem, .. } => Some(Schema::Obj(*elem)),
            Schema::Obj(_) => None,
        }
    }

    /// `x-kubernetes-patch-strategy` and the merge keys.
    pub fn strategy_and_keys(&self) -> (&'static str, &'static [&'static str]) {
        match self {
            Schema::List { strategy, keys, .. } => (strategy, keys),
            Schema::Obj(_) => ("", &[]),
        }
    }

    /// Whether lists of this schema merge element-wise.
    pub fn is_associative(&self) -> bool {
        self.strategy_and_keys().0.split(',').any(|s| s == "merge")
    }
}
