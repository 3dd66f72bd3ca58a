//! Gateway certificates on this machine.
//!
//! - A cert-manager `Certificate` whose Secret is not among the manifests (cert-manager would
//!   create it in a cluster) gets one from a local issuer, as cert-manager would: a
//!   `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and `ca.crt`, signed by a CA kept in
//!   `<state>/issuer/` (created once, so a browser or curl can trust it across runs).
//! - For every gateway credential, the certificate a client should trust is written to
//!   `<state>/certs/<ns>.<name>.crt` (the Secret's `ca.crt`, else its `tls.crt`), for the
//!   `curl --cacert` the summary prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use trellis_api::{Object, Resource};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Secrets to add to the proxies' manifests, and the CA file to trust per `(ns, secret)`.
#[derive(Debug, Default)]
pub struct GatewayCerts {
    pub secrets: Vec<Value>,
    pub trust: BTreeMap<(String, String), PathBuf>,
    pub notes: Vec<String>,
}

fn secret_data(r: &Resource, key: &str) -> Option<Vec<u8>> {
    let v = r.raw["data"][key].as_str()?;
    let clean: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(clean).ok()
}

/// The local issuer CA (created on first use).
fn issuer(dir: &Path) -> anyhow::Result<(String, KeyPair)> {
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if let (Ok(c), Ok(k)) = (
        std::fs::read_to_string(&cert),
        std::fs::read_to_string(&key),
    ) {
        let kp = KeyPair::from_pem(&k).map_err(|e| anyhow!("{}: {e}", key.display()))?;
        return Ok((c, kp));
    }
    std::fs::create_dir_all(dir)?;
    let kp = KeyPair::generate().map_err(|e| anyhow!("key generation: {e}"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "trellis up");
    params.distinguished_name.push(
        DnType::CommonName,
        "trellis up local issuer (cert-manager stand-in)",
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2034, 1, 1);
    let ca = params
        .self_signed(&kp)
        .map_err(|e| anyhow!("issuer CA: {e}"))?;
    write_private(&key, &kp.serialize_pem())?;
    std::fs::write(&cert, ca.pem())?;
    Ok((ca.pem(), kp))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// A leaf for `names`, reused while the names stay the same.
fn leaf(
    dir: &Path,
    stem: &str,
    names: &[String],
    ca: &(String, KeyPair),
) -> anyhow::Result<(String, String)> {
    let (crt, key, list) = (
        dir.join(format!("{stem}.tls.crt")),
        dir.join(format!("{stem}.tls.key")),
        dir.join(format!("{stem}.names")),
    );
    let wanted = names.join("\n");
    if std::fs::read_to_string(&list).ok().as_deref() == Some(wanted.as_str()) {
        if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
            return Ok((c, k));
        }
    }
    let kp = KeyPair::generate().map_err(|e| anyhow!("key generation: {e}"))?;
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|e| anyhow!("certificate names {names:?}: {e}"))?;
    params.distinguished_name = DistinguishedName::new();
    if let Some(cn) = names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, cn.clone());
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2034, 1, 1);
    let issuer = Issuer::from_ca_cert_pem(&ca.0, &ca.1).map_err(|e| anyhow!("issuer: {e}"))?;
    let cert = params
        .signed_by(&kp, &issuer)
        .map_err(|e| anyhow!("signing: {e}"))?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(&crt, cert.pem())?;
    write_private(&key, &kp.serialize_pem())?;
    std::fs::write(&list, &wanted)?;
    Ok((cert.pem(), kp.serialize_pem()))
}

/// Gateway credentials: Secrets for cert-manager Certificates, trust files for all.
pub fn gateway_certs(resources: &[Resource], state: &Path) -> anyhow::Result<GatewayCerts> {
    let mut out = GatewayCerts::default();
    let certs_dir = state.join("certs");
    std::fs::create_dir_all(&certs_dir)
        .with_context(|| format!("cannot create {}", certs_dir.display()))?;
    let secrets: BTreeSet<(String, String)> = resources
        .iter()
        .filter(|r| matches!(r.object, Object::Secret(_)))
        .map(|r| (r.ns().to_string(), r.name.clone()))
        .collect();
    // Credentials the gateways name (in their own namespace).
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    for r in resources {
        if let Object::Gateway(g) = &r.object {
            for s in &g.servers {
                if let Some(c) = s.tls.as_ref().and_then(|t| t.credential_name.as_ref()) {
                    let c = c.strip_prefix("kubernetes://").unwrap_or(c);
                    wanted.insert((r.ns().to_string(), c.to_string()));
                }
            }
        }
    }
    let mut ca: Option<(String, KeyPair)> = None;
    for r in resources {
        let Object::Certificate(c) = &r.object else {
            continue;
        };
        let key = (r.ns().to_string(), c.spec.secret_name.clone());
        if c.spec.secret_name.is_empty() || secrets.contains(&key) {
            continue;
        }
        let mut names = c.spec.dns_names.clone();
        if let Some(cn) = &c.spec.common_name {
            if !names.contains(cn) {
                names.insert(0, cn.clone());
            }
        }
        if names.is_empty() {
            continue;
        }
        if ca.is_none() {
            ca = Some(issuer(&state.join("issuer"))?);
        }
        let Some(ca) = ca.as_ref() else { continue };
        let stem = format!("{}.{}", key.0, key.1);
        let (crt, pem_key) = leaf(&certs_dir, &stem, &names, ca)?;
        out.secrets.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": key.1,
                "namespace": key.0,
                "annotations": {"trellis.io/issued-for": format!("Certificate {}", r.key())},
            },
            "data": {
                "tls.crt": B64.encode(&crt),
                "tls.key": B64.encode(&pem_key),
                "ca.crt": B64.encode(&ca.0),
            },
        }));
        out.notes.push(format!(
            "Certificate {} ({}): Secret {}/{} issued locally (cert-manager stand-in; trust {})",
            r.key(),
            names.join(", "),
            key.0,
            key.1,
            state.join("issuer/ca.crt").display()
        ));
        if wanted.contains(&key) {
            out.trust.insert(key, state.join("issuer/ca.crt"));
        }
    }
    for r in resources
        .iter()
        .filter(|r| matches!(r.object, Object::Secret(_)))
    {
        let key = (r.ns().to_string(), r.name.clone());
        if !wanted.contains(&key) {
            continue;
        }
        let Some(pem) = secret_data(r, "ca.crt").or_else(|| secret_data(r, "tls.crt")) else {
            continue;
        };
        let path = certs_dir.join(format!("{}.{}.crt", key.0, key.1));
        std::fs::write(&path, pem).with_context(|| format!("cannot write {}", path.display()))?;
        out.trust.insert(key, path);
    }
    Ok(out)
}
