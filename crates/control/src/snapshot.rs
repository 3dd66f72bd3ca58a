//! Versioned snapshots of the accepted config: every resource in wire form with a content
//! hash, what changed since the previous snapshot (per config type), and the indexes per-proxy
//! scoping needs.
//!
//! A snapshot is immutable and shared (`Arc`); a reload builds the next one and publishes it.
//! The version counts accepted changes that altered something (an edit that changes nothing
//! keeps the version).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

use trellis_api::source::SpanMap;
use trellis_api::{MeshConfig, Object, Resource};
use trellis_model::registry::{CLUSTER_DOMAIN, EXPORT_TO_ANNOTATION};
use trellis_protocol::{config_type_of, resource_id, to_wire, v1, ConfigType};

use crate::source::Loaded;

/// A resource as read from its source, in the forms a snapshot needs. Built once per read of
/// its file and shared (`Arc`) by every snapshot, and by the control plane's read cache, while
/// the file is unchanged.
pub struct ReadResource {
    /// `Kind/namespace/name`.
    pub id: String,
    pub ty: ConfigType,
    /// The parsed resource, without its document (`raw`: it is `wire.json`; only a `status`
    /// is kept, which analysis reads) and field locations (`origin.spans`: empty) once the
    /// load that read it has been analyzed.
    pub resource: Resource,
    pub wire: v1::Resource,
    /// Hash of the content (the JSON), not of the location: moving a document in its file
    /// does not resend it.
    pub hash: u64,
}

impl ReadResource {
    /// Makes the wire form of a freshly parsed resource and drops its document, keeping
    /// field locations for analysis (see `slim`).
    pub fn new(mut resource: Resource) -> Self {
        let wire = to_wire(&resource);
        let hash = hash_str(&wire.json);
        resource.raw = match resource.raw.get_mut("status").map(serde_json::Value::take) {
            Some(status) => serde_json::json!({ "status": status }),
            None => serde_json::Value::Null,
        };
        ReadResource {
            id: resource_id(&resource),
            ty: config_type_of(resource.kind),
            resource,
            wire,
            hash,
        }
    }

    /// Drops field locations, which only serve analysis: with `raw`, most of a parsed
    /// resource's memory.
    pub fn slim(mut self) -> Self {
        let r = &mut self.resource;
        r.origin.spans = Arc::new(SpanMap::new(r.origin.location.file.clone()));
        self
    }
}

/// One resource of a snapshot: what was read, and who needs it under the snapshot's mesh
/// config.
pub struct Entry {
    pub read: Arc<ReadResource>,
    pub(crate) vis: Vis,
}

impl std::ops::Deref for Entry {
    type Target = ReadResource;

    fn deref(&self) -> &ReadResource {
        &self.read
    }
}

/// Who needs a resource (see `scope`).
#[derive(Clone, Debug)]
pub(crate) enum Vis {
    /// Every proxy (Namespaces, PeerAuthentications, WorkloadGroups, delegate VirtualServices).
    All,
    /// No proxy (ConfigMaps, ServiceAccounts: the mesh config travels on its own).
    Never,
    /// Services, ServiceEntries, DestinationRules: proxies of the namespace, and of the
    /// namespaces it is exported to.
    Exported { ns: String, export_to: Vec<String> },
    /// VirtualServices with hosts.
    VirtualService {
        ns: String,
        export_to: Vec<String>,
        hosts: Vec<String>,
        gateways: Vec<String>,
    },
    /// AuthorizationPolicy, RequestAuthentication, Sidecar, Telemetry: the namespace's proxies (all
    /// proxies when it is the root namespace).
    Local { ns: String },
    /// Secrets and cert-manager Certificates: gateways of the namespace only.
    GatewaySecret { ns: String },
    /// Gateways: the gateway proxies they select.
    Gateway { selector: BTreeMap<String, String> },
    /// Workloads and endpoint slices: proxies that can see a service of the namespace.
    Workload { ns: String },
}

/// A Gateway as scoping sees it.
#[derive(Clone, Debug)]
pub(crate) struct GatewayInfo {
    /// `ns/name`.
    pub key: String,
    pub selector: BTreeMap<String, String>,
}

/// A Sidecar resource as scoping sees it, in the model's selection order (oldest first).
#[derive(Clone, Debug)]
pub(crate) struct SidecarInfo {
    pub ns: String,
    /// `None`: the namespace default.
    pub selector: Option<BTreeMap<String, String>>,
    /// `(namespace, host)` pairs of every egress listener.
    pub egress: Vec<(String, String)>,
}

/// Indexes over a snapshot for scoping.
#[derive(Default)]
pub(crate) struct Index {
    pub root_namespace: String,
    pub gateways: Vec<GatewayInfo>,
    pub sidecars: Vec<SidecarInfo>,
    /// Namespace -> distinct effective `exportTo` lists of its Services and ServiceEntries.
    pub service_exports: BTreeMap<String, BTreeSet<Vec<String>>>,
}

/// What changed from the previous snapshot.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Version of the snapshot this one was diffed against (0: none).
    pub from_version: u64,
    /// Ids added, changed or removed, per type (RESOURCES, ENDPOINTS).
    pub resources: Vec<String>,
    pub endpoints: Vec<String>,
    pub mesh_changed: bool,
}

impl Changes {
    pub fn of(&self, ty: ConfigType) -> &[String] {
        match ty {
            ConfigType::Endpoints => &self.endpoints,
            _ => &self.resources,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.endpoints.is_empty() && !self.mesh_changed
    }
}

/// The accepted config at one version.
pub struct Snapshot {
    pub version: u64,
    pub created: SystemTime,
    /// By id, sorted.
    pub entries: BTreeMap<String, Arc<Entry>>,
    pub mesh: Arc<MeshConfig>,
    /// MeshConfig JSON as sent to proxies.
    pub mesh_json: Arc<str>,
    pub mesh_hash: u64,
    pub changes: Changes,
    /// Error-level analysis messages present in this snapshot (see `source`).
    pub baseline_errors: BTreeSet<String>,
    pub(crate) index: Index,
}

fn hash_str(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Snapshot {
    /// The snapshot before any config (version 0).
    pub fn empty() -> Self {
        let mesh = MeshConfig::default();
        let mesh_json: Arc<str> = serde_json::to_string(&mesh).unwrap_or_default().into();
        Snapshot {
            version: 0,
            created: SystemTime::now(),
            entries: BTreeMap::new(),
            mesh_hash: hash_str(&mesh_json),
            index: Index {
                root_namespace: mesh.root_namespace.clone(),
                ..Index::default()
            },
            mesh: Arc::new(mesh),
            mesh_json,
            changes: Changes::default(),
            baseline_errors: BTreeSet::new(),
        }
    }

    /// Builds the snapshot after `prev` from an accepted load. Returns `None` when nothing
    /// changed (the caller keeps `prev`).
    pub fn next(prev: &Snapshot, loaded: Loaded) -> Option<Snapshot> {
        let baseline_errors = loaded.error_signatures();
        let mesh = loaded.mesh;
        let mesh_json: Arc<str> = serde_json::to_string(&mesh).unwrap_or_default().into();
        let mesh_hash = hash_str(&mesh_json);
        let mut entries = BTreeMap::new();
        for r in loaded.resources {
            let reuse = prev.entries.get(&r.id).filter(|e| {
                Arc::ptr_eq(&e.read, &r)
                    || (e.hash == r.hash
                        && e.wire.file == r.wire.file
                        && e.wire.line == r.wire.line)
            });
            let entry = match reuse {
                Some(e) if mesh_hash == prev.mesh_hash => e.clone(),
                _ => Arc::new(Entry {
                    vis: visibility(&r.resource, &mesh),
                    read: r,
                }),
            };
            entries.insert(entry.id.clone(), entry);
        }
        let mut changes = Changes {
            from_version: prev.version,
            mesh_changed: mesh_hash != prev.mesh_hash,
            ..Changes::default()
        };
        for (id, e) in &entries {
            if prev.entries.get(id).is_none_or(|p| p.hash != e.hash) {
                push_change(&mut changes, e.ty, id);
            }
        }
        for (id, p) in &prev.entries {
            if !entries.contains_key(id) {
                push_change(&mut changes, p.ty, id);
            }
        }
        if changes.is_empty() && prev.version > 0 {
            return None;
        }
        let index = Index::build(&entries, &mesh);
        Some(Snapshot {
            version: prev.version + 1,
            created: SystemTime::now(),
            entries,
            mesh: Arc::new(mesh),
            mesh_json,
            mesh_hash,
            changes,
            baseline_errors,
            index,
        })
    }

    /// Number of resources of a type.
    pub fn count(&self, ty: ConfigType) -> usize {
        self.entries.values().filter(|e| e.ty == ty).count()
    }
}

fn push_change(c: &mut Changes, ty: ConfigType, id: &str) {
    match ty {
        ConfigType::Endpoints => c.endpoints.push(id.to_string()),
        _ => c.resources.push(id.to_string()),
    }
}

fn export_or(list: &[String], default: &[String]) -> Vec<String> {
    if list.is_empty() {
        default.to_vec()
    } else {
        list.to_vec()
    }
}

/// The model's `ns/name` form of a VirtualService `gateways` entry (`mesh` stays).
fn resolve_gateway_name(g: &str, namespace: &str) -> String {
    if g == "mesh" || g.contains('/') {
        g.to_string()
    } else {
        format!("{namespace}/{g}")
    }
}

fn service_export_to(r: &Resource, mesh: &MeshConfig) -> Vec<String> {
    r.annotations
        .get(EXPORT_TO_ANNOTATION)
        .map(|a| {
            a.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| mesh.default_service_export_to.clone())
}

pub(crate) fn visibility(r: &Resource, mesh: &MeshConfig) -> Vis {
    let ns = r.ns().to_string();
    match &r.object {
        Object::Namespace(_) | Object::PeerAuthentication(_) | Object::WorkloadGroup(_) => Vis::All,
        Object::ConfigMap(_) | Object::ServiceAccount(_) => Vis::Never,
        Object::Service(_) => Vis::Exported {
            export_to: service_export_to(r, mesh),
            ns,
        },
        Object::ServiceEntry(se) => Vis::Exported {
            export_to: export_or(&se.export_to, &mesh.default_service_export_to),
            ns,
        },
        Object::DestinationRule(dr) => Vis::Exported {
            export_to: export_or(&dr.export_to, &mesh.default_destination_rule_export_to),
            ns,
        },
        Object::VirtualService(vs) if vs.hosts.is_empty() => Vis::All,
        Object::VirtualService(vs) => Vis::VirtualService {
            export_to: export_or(&vs.export_to, &mesh.default_virtual_service_export_to),
            hosts: vs
                .hosts
                .iter()
                .map(|h| trellis_api::host::fqdn(h, &ns, CLUSTER_DOMAIN).to_ascii_lowercase())
                .collect(),
            gateways: vs
                .gateways_or_mesh()
                .into_iter()
                .map(|g| resolve_gateway_name(g, &ns))
                .collect(),
            ns,
        },
        Object::AuthorizationPolicy(_)
        | Object::RequestAuthentication(_)
        | Object::Sidecar(_)
        | Object::Telemetry(_) => Vis::Local { ns },
        Object::Secret(_) | Object::Certificate(_) => Vis::GatewaySecret { ns },
        Object::Gateway(g) => Vis::Gateway {
            selector: g.selector.clone(),
        },
        Object::WorkloadEntry(_)
        | Object::Pod(_)
        | Object::Deployment(_)
        | Object::EndpointSlice(_) => Vis::Workload { ns },
    }
}

impl Index {
    fn build(entries: &BTreeMap<String, Arc<Entry>>, mesh: &MeshConfig) -> Index {
        let mut gateways = Vec::new();
        let mut sidecars: Vec<(&Resource, SidecarInfo)> = Vec::new();
        let mut service_exports: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
        for e in entries.values() {
            let r = &e.resource;
            match (&r.object, &e.vis) {
                (Object::Gateway(g), _) => gateways.push(GatewayInfo {
                    key: format!("{}/{}", r.ns(), r.name),
                    selector: g.selector.clone(),
                }),
                (Object::Sidecar(s), _) => sidecars.push((
                    r,
                    SidecarInfo {
                        ns: r.ns().to_string(),
                        selector: s.workload_selector.as_ref().map(|w| w.labels.clone()),
                        egress: s
                            .egress
                            .iter()
                            .flat_map(|e| e.hosts.iter())
                            .map(|h| {
                                let (n, host) = trellis_api::host::split_namespaced_host(h);
                                (n.to_string(), host.to_ascii_lowercase())
                            })
                            .collect(),
                    },
                )),
                (Object::Service(_) | Object::ServiceEntry(_), Vis::Exported { ns, export_to }) => {
                    service_exports
                        .entry(ns.clone())
                        .or_default()
                        .insert(export_to.clone());
                }
                _ => {}
            }
        }
        sidecars.sort_by(|(a, _), (b, _)| {
            (a.creation_timestamp.as_deref().unwrap_or(""), &a.name)
                .cmp(&(b.creation_timestamp.as_deref().unwrap_or(""), &b.name))
        });
        Index {
            root_namespace: mesh.root_namespace.clone(),
            gateways,
            sidecars: sidecars.into_iter().map(|(_, s)| s).collect(),
            service_exports,
        }
    }
}
