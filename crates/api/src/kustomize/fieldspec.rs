//! Field specs (kustomize `FieldSpec`): which fields of which kinds a transformer touches, and
//! kustomize's traversal of them (`a/b[]/c`, `\/` for a slash inside a key, optional creation).
//! The default tables are kustomize v5's builtin configuration.

use serde_json::{Map, Value};

use super::resid::Gvk;
use super::util::get_str;

#[derive(Clone, Debug, PartialEq)]
pub struct FieldSpec {
    pub gvk: Gvk,
    pub path: String,
    pub create: bool,
}

impl FieldSpec {
    pub fn new(group: &str, version: &str, kind: &str, path: &str, create: bool) -> FieldSpec {
        FieldSpec {
            gvk: Gvk {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
            },
            path: path.into(),
            create,
        }
    }
}

/// What to create when a field on the path is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// Never create (lookups only).
    Nothing,
    /// Create missing fields; the last one as a scalar.
    Scalar,
    /// Create missing fields; the last one as a mapping.
    Map,
}

/// Group and version of an apiVersion as field specs see them (`v1` is the core group).
fn parse_gv(api_version: &str) -> (String, String) {
    let (mut group, mut version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (api_version.to_string(), String::new()),
    };
    let core =
        group.len() >= 2 && group.starts_with('v') && matches!(group.as_bytes()[1], b'1' | b'2');
    if version.is_empty() && core {
        version = std::mem::take(&mut group);
    }
    (group, version)
}

/// Whether the field spec applies to `obj`.
pub fn matches_gvk(fs: &FieldSpec, obj: &Value) -> bool {
    let kind = get_str(obj, &["kind"]).unwrap_or_default();
    if !fs.gvk.kind.is_empty() && fs.gvk.kind != kind {
        return false;
    }
    let (group, version) = parse_gv(&get_str(obj, &["apiVersion"]).unwrap_or_default());
    (fs.gvk.group.is_empty() || fs.gvk.group == group)
        && (fs.gvk.version.is_empty() || fs.gvk.version == version)
}

/// Splits a field spec path on `/`, keeping `\/` inside a segment.
pub fn split_path(path: &str) -> Vec<String> {
    let mut res: Vec<String> = Vec::new();
    for (i, p) in path.split('/').enumerate() {
        if i > 0 {
            if let Some(last) = res.last_mut() {
                if let Some(stripped) = last.strip_suffix('\\') {
                    *last = format!("{stripped}/{p}");
                    continue;
                }
            }
        }
        res.push(p.to_string());
    }
    res
}

pub type SetFn<'a> = dyn FnMut(&mut Value) -> Result<(), String> + 'a;

/// Applies `set` to every field `fs` reaches in `obj` (kustomize `fieldspec.Filter`).
pub fn apply(
    obj: &mut Value,
    fs: &FieldSpec,
    create: Create,
    set: &mut SetFn,
) -> Result<(), String> {
    if !matches_gvk(fs, obj) {
        return Ok(());
    }
    let path = split_path(&fs.path);
    walk(obj, &path, fs.create, create, set).map_err(|e| format!("at path '{}': {e}", fs.path))
}

/// Like `apply` without the gvk check (the caller already selected the object).
pub fn apply_path(obj: &mut Value, path: &str, set: &mut SetFn) -> Result<(), String> {
    walk(obj, &split_path(path), false, Create::Nothing, set)
}

fn walk(
    node: &mut Value,
    path: &[String],
    fs_create: bool,
    create: Create,
    set: &mut SetFn,
) -> Result<(), String> {
    if path.is_empty() {
        return set(node);
    }
    match node {
        Value::Array(items) => {
            for item in items.iter_mut() {
                walk(item, path, fs_create, create, set)?;
            }
            Ok(())
        }
        Value::Object(map) => field(map, path, fs_create, create, set),
        _ => Err("expected sequence or mapping node".into()),
    }
}

fn field(
    map: &mut Map<String, Value>,
    path: &[String],
    fs_create: bool,
    create: Create,
    set: &mut SetFn,
) -> Result<(), String> {
    let (name, is_seq) = match path[0].strip_suffix("[]") {
        Some(n) => (n.to_string(), true),
        None => (path[0].clone(), false),
    };
    // The kind of node to create (or to turn a null into).
    let kind = if !fs_create || create == Create::Nothing || is_seq {
        if is_seq {
            Some(Kind::Seq)
        } else {
            None
        }
    } else if path.len() <= 1 {
        Some(match create {
            Create::Map => Kind::Map,
            _ => Kind::Scalar,
        })
    } else {
        Some(Kind::Map)
    };
    let creating = fs_create && create != Create::Nothing && !is_seq;
    if !map.contains_key(&name) {
        if !creating {
            return Ok(());
        }
        map.insert(name.clone(), empty(kind.unwrap_or(Kind::Map)));
    }
    let child = map.get_mut(&name).expect("present");
    if child.is_null() {
        match kind {
            Some(k) => *child = empty(k),
            None => return Ok(()),
        }
    }
    walk(child, &path[1..], fs_create, create, set)
}

#[derive(Clone, Copy)]
enum Kind {
    Scalar,
    Map,
    Seq,
}

fn empty(kind: Kind) -> Value {
    match kind {
        Kind::Scalar => Value::String(String::new()),
        Kind::Map => Value::Object(Map::new()),
        Kind::Seq => Value::Array(Vec::new()),
    }
}

fn fs(group: &str, version: &str, kind: &str, path: &str, create: bool) -> FieldSpec {
    FieldSpec::new(group, version, kind, path, create)
}

/// `metadata/labels` and the pod template labels of workloads.
fn metadata_labels() -> Vec<FieldSpec> {
    vec![
        fs("", "", "", "metadata/labels", true),
        fs(
            "",
            "v1",
            "ReplicationController",
            "spec/template/metadata/labels",
            true,
        ),
        fs("", "", "Deployment", "spec/template/metadata/labels", true),
        fs("", "", "ReplicaSet", "spec/template/metadata/labels", true),
        fs("", "", "DaemonSet", "spec/template/metadata/labels", true),
        fs(
            "apps",
            "",
            "StatefulSet",
            "spec/template/metadata/labels",
            true,
        ),
        fs(
            "apps",
            "",
            "StatefulSet",
            "spec/volumeClaimTemplates[]/metadata/labels",
            true,
        ),
        fs("batch", "", "Job", "spec/template/metadata/labels", true),
        fs(
            "batch",
            "",
            "CronJob",
            "spec/jobTemplate/metadata/labels",
            true,
        ),
        fs(
            "batch",
            "",
            "CronJob",
            "spec/jobTemplate/spec/template/metadata/labels",
            true,
        ),
    ]
}

/// Template labels (`labels[].includeTemplates`): `metadata_labels` without `metadata/labels`.
pub fn template_labels() -> Vec<FieldSpec> {
    metadata_labels()
        .into_iter()
        .filter(|f| f.path != "metadata/labels")
        .collect()
}

/// kustomize's `commonLabels` field specs (selectors, templates, metadata).
pub fn common_labels() -> Vec<FieldSpec> {
    let mut v = Vec::new();
    let affinity = [
        "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
    ];
    v.push(fs("", "v1", "Service", "spec/selector", true));
    v.push(fs("", "v1", "ReplicationController", "spec/selector", true));
    v.push(fs("", "", "Deployment", "spec/selector/matchLabels", true));
    for p in affinity {
        v.push(fs("apps", "", "Deployment", p, false));
    }
    v.push(fs("", "", "ReplicaSet", "spec/selector/matchLabels", true));
    v.push(fs("", "", "DaemonSet", "spec/selector/matchLabels", true));
    v.push(fs(
        "apps",
        "",
        "StatefulSet",
        "spec/selector/matchLabels",
        true,
    ));
    v.push(fs(
        "apps",
        "",
        "StatefulSet",
        "spec/volumeClaimTemplates[]/metadata/labels",
        true,
    ));
    for p in affinity {
        v.push(fs("apps", "", "StatefulSet", p, false));
    }
    v.push(fs("batch", "", "Job", "spec/selector/matchLabels", false));
    v.push(fs(
        "batch",
        "",
        "CronJob",
        "spec/jobTemplate/spec/selector/matchLabels",
        false,
    ));
    v.push(fs(
        "policy",
        "",
        "PodDisruptionBudget",
        "spec/selector/matchLabels",
        false,
    ));
    v.push(fs(
        "networking.k8s.io",
        "",
        "NetworkPolicy",
        "spec/podSelector/matchLabels",
        false,
    ));
    v.push(fs(
        "networking.k8s.io",
        "",
        "NetworkPolicy",
        "spec/ingress/from/podSelector/matchLabels",
        false,
    ));
    v.push(fs(
        "networking.k8s.io",
        "",
        "NetworkPolicy",
        "spec/egress/to/podSelector/matchLabels",
        false,
    ));
    v.extend(metadata_labels());
    v
}

/// kustomize's `commonAnnotations` field specs.
pub fn common_annotations() -> Vec<FieldSpec> {
    vec![
        fs("", "", "", "metadata/annotations", true),
        fs(
            "",
            "v1",
            "ReplicationController",
            "spec/template/metadata/annotations",
            true,
        ),
        fs(
            "",
            "",
            "Deployment",
            "spec/template/metadata/annotations",
            true,
        ),
        fs(
            "",
            "",
            "ReplicaSet",
            "spec/template/metadata/annotations",
            true,
        ),
        fs(
            "",
            "",
            "DaemonSet",
            "spec/template/metadata/annotations",
            true,
        ),
        fs(
            "",
            "",
            "StatefulSet",
            "spec/template/metadata/annotations",
            true,
        ),
        fs(
            "batch",
            "",
            "Job",
            "spec/template/metadata/annotations",
            true,
        ),
        fs(
            "batch",
            "",
            "CronJob",
            "spec/jobTemplate/metadata/annotations",
            true,
        ),
        fs(
            "batch",
            "",
            "CronJob",
            "spec/jobTemplate/spec/template/metadata/annotations",
            true,
        ),
    ]
}

/// kustomize's `namespace` field specs (besides `metadata/namespace`, handled separately).
pub fn namespace() -> Vec<FieldSpec> {
    vec![
        fs("", "", "", "metadata/namespace", true),
        fs("", "", "Namespace", "metadata/name", true),
        fs("", "", "RoleBinding", "subjects[]/namespace", false),
        fs("", "", "ClusterRoleBinding", "subjects[]/namespace", false),
        fs(
            "apiregistration.k8s.io",
            "",
            "APIService",
            "spec/service/namespace",
            true,
        ),
        fs(
            "apiextensions.k8s.io",
            "",
            "CustomResourceDefinition",
            "spec/conversion/webhook/clientConfig/service/namespace",
            false,
        ),
    ]
}

/// kustomize's `images` field specs.
pub fn images() -> Vec<FieldSpec> {
    vec![
        fs("", "", "", "spec/containers[]/image", true),
        fs("", "", "", "spec/initContainers[]/image", true),
        fs("", "", "", "spec/volumes[]/image/reference", true),
        fs("", "", "", "spec/template/spec/containers[]/image", true),
        fs(
            "",
            "",
            "",
            "spec/template/spec/initContainers[]/image",
            true,
        ),
        fs(
            "",
            "",
            "",
            "spec/template/spec/volumes[]/image/reference",
            true,
        ),
    ]
}

/// kustomize's `replicas` field specs.
pub fn replicas() -> Vec<FieldSpec> {
    vec![
        fs("", "", "Deployment", "spec/replicas", true),
        fs("", "", "ReplicationController", "spec/replicas", true),
        fs("", "", "ReplicaSet", "spec/replicas", true),
        fs("", "", "StatefulSet", "spec/replicas", true),
    ]
}

/// One `nameReference` entry: objects of `target` kind are referred to by these fields.
#[derive(Clone, Debug)]
pub struct NameBackRef {
    pub target: Gvk,
    pub referrers: Vec<FieldSpec>,
}

/// kustomize's `nameReference` configuration.
pub fn name_references() -> Vec<NameBackRef> {
    let g = |group: &str, version: &str, kind: &str| Gvk {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
    };
    let mut out = Vec::new();
    for kind in [
        "Deployment",
        "ReplicationController",
        "ReplicaSet",
        "StatefulSet",
    ] {
        out.push(NameBackRef {
            target: g("", "", kind),
            referrers: vec![fs(
                "",
                "",
                "HorizontalPodAutoscaler",
                "spec/scaleTargetRef/name",
                false,
            )],
        });
    }
    let template_kinds = [
        "Deployment",
        "ReplicaSet",
        "DaemonSet",
        "StatefulSet",
        "Job",
    ];

    // ConfigMap
    let mut cm = Vec::new();
    let pod_cm = [
        "volumes/configMap/name",
        "containers/env/valueFrom/configMapKeyRef/name",
        "initContainers/env/valueFrom/configMapKeyRef/name",
        "containers/envFrom/configMapRef/name",
        "initContainers/envFrom/configMapRef/name",
        "volumes/projected/sources/configMap/name",
    ];
    for p in pod_cm {
        cm.push(fs("", "v1", "Pod", &format!("spec/{p}"), false));
    }
    for k in template_kinds {
        for p in pod_cm {
            cm.push(fs("", "", k, &format!("spec/template/spec/{p}"), false));
        }
    }
    for p in [
        "volumes/configMap/name",
        "volumes/projected/sources/configMap/name",
        "containers/env/valueFrom/configMapKeyRef/name",
        "initContainers/env/valueFrom/configMapKeyRef/name",
        "containers/envFrom/configMapRef/name",
        "initContainers/envFrom/configMapRef/name",
    ] {
        cm.push(fs(
            "",
            "",
            "CronJob",
            &format!("spec/jobTemplate/spec/template/spec/{p}"),
            false,
        ));
    }
    cm.push(fs("", "", "Node", "spec/configSource/configMap", false));
    cm.push(fs("", "", "Role", "rules/resourceNames", false));
    cm.push(fs("", "", "ClusterRole", "rules/resourceNames", false));
    cm.push(fs(
        "",
        "",
        "Ingress",
        "metadata/annotations/nginx.ingress.kubernetes.io\\/fastcgi-params-configmap",
        false,
    ));
    cm.push(fs(
        "serving.knative.dev",
        "v1",
        "Service",
        "spec/template/spec/containers/env/valueFrom/configMapKeyRef/name",
        false,
    ));
    cm.push(fs(
        "serving.knative.dev",
        "v1",
        "Service",
        "spec/template/spec/containers/envFrom/configMapRef/name",
        false,
    ));
    out.push(NameBackRef {
        target: g("", "v1", "ConfigMap"),
        referrers: cm,
    });

    // Secret
    let mut sec = Vec::new();
    let pod_sec = [
        "volumes/secret/secretName",
        "containers/env/valueFrom/secretKeyRef/name",
        "initContainers/env/valueFrom/secretKeyRef/name",
        "containers/envFrom/secretRef/name",
        "initContainers/envFrom/secretRef/name",
        "imagePullSecrets/name",
        "volumes/projected/sources/secret/name",
    ];
    for p in pod_sec {
        sec.push(fs("", "v1", "Pod", &format!("spec/{p}"), false));
    }
    for k in template_kinds {
        for p in pod_sec {
            sec.push(fs("", "", k, &format!("spec/template/spec/{p}"), false));
        }
    }
    for p in [
        "volumes/secret/secretName",
        "volumes/projected/sources/secret/name",
        "containers/env/valueFrom/secretKeyRef/name",
        "initContainers/env/valueFrom/secretKeyRef/name",
        "containers/envFrom/secretRef/name",
        "initContainers/envFrom/secretRef/name",
        "imagePullSecrets/name",
    ] {
        sec.push(fs(
            "",
            "",
            "CronJob",
            &format!("spec/jobTemplate/spec/template/spec/{p}"),
            false,
        ));
    }
    sec.push(fs("", "", "Ingress", "spec/tls/secretName", false));
    for a in [
        "ingress.kubernetes.io\\/auth-secret",
        "nginx.ingress.kubernetes.io\\/auth-secret",
        "nginx.ingress.kubernetes.io\\/auth-tls-secret",
    ] {
        sec.push(fs(
            "",
            "",
            "Ingress",
            &format!("metadata/annotations/{a}"),
            false,
        ));
    }
    sec.push(fs("", "", "ServiceAccount", "imagePullSecrets/name", false));
    for p in [
        "parameters/secretName",
        "parameters/adminSecretName",
        "parameters/userSecretName",
        "parameters/secretRef",
    ] {
        sec.push(fs("", "", "StorageClass", p, false));
    }
    sec.push(fs("", "", "Role", "rules/resourceNames", false));
    sec.push(fs("", "", "ClusterRole", "rules/resourceNames", false));
    sec.push(fs(
        "serving.knative.dev",
        "v1",
        "Service",
        "spec/template/spec/containers/env/valueFrom/secretKeyRef/name",
        false,
    ));
    sec.push(fs(
        "",
        "",
        "PersistentVolume",
        "spec/azureFile/secretName",
        false,
    ));
    out.push(NameBackRef {
        target: g("", "v1", "Secret"),
        referrers: sec,
    });

    out.push(NameBackRef {
        target: g("", "v1", "Service"),
        referrers: vec![
            fs("apps", "", "StatefulSet", "spec/serviceName", false),
            fs(
                "",
                "",
                "Ingress",
                "spec/rules/http/paths/backend/serviceName",
                false,
            ),
            fs("", "", "Ingress", "spec/backend/serviceName", false),
            fs(
                "",
                "",
                "Ingress",
                "spec/rules/http/paths/backend/service/name",
                false,
            ),
            fs("", "", "Ingress", "spec/defaultBackend/service/name", false),
            fs(
                "apiregistration.k8s.io",
                "",
                "APIService",
                "spec/service/name",
                false,
            ),
            fs(
                "admissionregistration.k8s.io",
                "",
                "ValidatingWebhookConfiguration",
                "webhooks/clientConfig/service",
                false,
            ),
            fs(
                "admissionregistration.k8s.io",
                "",
                "MutatingWebhookConfiguration",
                "webhooks/clientConfig/service",
                false,
            ),
        ],
    });
    out.push(NameBackRef {
        target: g("rbac.authorization.k8s.io", "", "Role"),
        referrers: vec![fs(
            "rbac.authorization.k8s.io",
            "",
            "RoleBinding",
            "roleRef/name",
            false,
        )],
    });
    out.push(NameBackRef {
        target: g("rbac.authorization.k8s.io", "", "ClusterRole"),
        referrers: vec![
            fs(
                "rbac.authorization.k8s.io",
                "",
                "RoleBinding",
                "roleRef/name",
                false,
            ),
            fs(
                "rbac.authorization.k8s.io",
                "",
                "ClusterRoleBinding",
                "roleRef/name",
                false,
            ),
        ],
    });
    let mut sa = vec![
        fs(
            "rbac.authorization.k8s.io",
            "",
            "RoleBinding",
            "subjects",
            false,
        ),
        fs(
            "rbac.authorization.k8s.io",
            "",
            "ClusterRoleBinding",
            "subjects",
            false,
        ),
        fs("", "", "Pod", "spec/serviceAccountName", false),
    ];
    for k in ["StatefulSet", "Deployment", "ReplicationController"] {
        sa.push(fs(
            "",
            "",
            k,
            "spec/template/spec/serviceAccountName",
            false,
        ));
    }
    sa.push(fs(
        "",
        "",
        "CronJob",
        "spec/jobTemplate/spec/template/spec/serviceAccountName",
        false,
    ));
    sa.push(fs(
        "",
        "",
        "Job",
        "spec/template/spec/serviceAccountName",
        false,
    ));
    sa.push(fs(
        "",
        "",
        "DaemonSet",
        "spec/template/spec/serviceAccountName",
        false,
    ));
    out.push(NameBackRef {
        target: g("", "v1", "ServiceAccount"),
        referrers: sa,
    });
    let mut pvc = vec![fs(
        "",
        "",
        "Pod",
        "spec/volumes/persistentVolumeClaim/claimName",
        false,
    )];
    for k in ["StatefulSet", "Deployment", "ReplicationController"] {
        pvc.push(fs(
            "",
            "",
            k,
            "spec/template/spec/volumes/persistentVolumeClaim/claimName",
            false,
        ));
    }
    pvc.push(fs(
        "",
        "",
        "CronJob",
        "spec/jobTemplate/spec/template/spec/volumes/persistentVolumeClaim/claimName",
        false,
    ));
    for k in ["Job", "DaemonSet"] {
        pvc.push(fs(
            "",
            "",
            k,
            "spec/template/spec/volumes/persistentVolumeClaim/claimName",
            false,
        ));
    }
    out.push(NameBackRef {
        target: g("", "v1", "PersistentVolumeClaim"),
        referrers: pvc,
    });
    out.push(NameBackRef {
        target: g("", "v1", "PersistentVolume"),
        referrers: vec![
            fs("", "", "PersistentVolumeClaim", "spec/volumeName", false),
            fs("", "", "ClusterRole", "rules/resourceNames", false),
        ],
    });
    out.push(NameBackRef {
        target: g("storage.k8s.io", "v1", "StorageClass"),
        referrers: vec![
            fs("", "", "PersistentVolume", "spec/storageClassName", false),
            fs(
                "",
                "",
                "PersistentVolumeClaim",
                "spec/storageClassName",
                false,
            ),
            fs(
                "",
                "",
                "StatefulSet",
                "spec/volumeClaimTemplates/spec/storageClassName",
                false,
            ),
        ],
    });
    let mut pc = vec![fs("", "", "Pod", "spec/priorityClassName", false)];
    for k in ["StatefulSet", "Deployment", "ReplicationController"] {
        pc.push(fs("", "", k, "spec/template/spec/priorityClassName", false));
    }
    pc.push(fs(
        "",
        "",
        "CronJob",
        "spec/jobTemplate/spec/template/spec/priorityClassName",
        false,
    ));
    for k in ["Job", "DaemonSet"] {
        pc.push(fs("", "", k, "spec/template/spec/priorityClassName", false));
    }
    out.push(NameBackRef {
        target: g("scheduling.k8s.io", "v1", "PriorityClass"),
        referrers: pc,
    });
    // kustomize's table spells this group "networking.k8s.io/v1", so it never matches.
    out.push(NameBackRef {
        target: g("networking.k8s.io/v1", "v1", "IngressClass"),
        referrers: vec![fs("", "", "Ingress", "spec/ingressClassName", false)],
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_keeps_escaped_slash() {
        assert_eq!(
            split_path("metadata/annotations/a.io\\/b"),
            vec!["metadata", "annotations", "a.io/b"]
        );
    }

    #[test]
    fn apply_creates_and_visits_lists() {
        let mut v = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "spec": {"volumeClaimTemplates": [{"metadata": {"name": "a"}}, {}]}});
        let f = fs(
            "apps",
            "",
            "StatefulSet",
            "spec/volumeClaimTemplates[]/metadata/labels",
            true,
        );
        apply(&mut v, &f, Create::Map, &mut |n| {
            n.as_object_mut().unwrap().insert("x".into(), json!("y"));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            v["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"]["x"],
            "y"
        );
        assert_eq!(
            v["spec"]["volumeClaimTemplates"][1]["metadata"]["labels"]["x"],
            "y"
        );
        // Not created without `create`.
        let mut v = json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {}});
        let f = fs("batch", "", "Job", "spec/selector/matchLabels", false);
        apply(&mut v, &f, Create::Map, &mut |_| Ok(())).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {}})
        );
    }

    #[test]
    fn core_group_parsing() {
        assert_eq!(parse_gv("v1"), ("".into(), "v1".into()));
        assert_eq!(parse_gv("apps/v1"), ("apps".into(), "v1".into()));
    }
}
