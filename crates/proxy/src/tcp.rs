//! Raw TCP forwarding (VirtualService `tcp` routes) and TLS passthrough (`tls` routes by
//! SNI). Bytes are copied both ways with half-close preserved (a FIN from one side is
//! passed on as a write shutdown to the other, the connection ends when both are done).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use trellis_model::config::{SniRoute, TcpRoute, WeightedClusters};

use crate::http::access_log::rfc3339;
use crate::http::error::{Flag, Flags};
use crate::state::{ConnectionInfo, ProxyState};
use crate::upstream::lb::hash64;
use crate::upstream::outlier::Outcome;
use crate::upstream::pool::Proto;

/// Longest ClientHello read while looking for SNI.
const MAX_CLIENT_HELLO: usize = 16 * 1024 + 5;
/// Time a client has to send its ClientHello on a passthrough listener.
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards a plaintext TCP connection by the first matching route (original destination in
/// the route's subnets, listener port equal to the route's port).
pub async fn proxy_tcp<IO>(
    io: IO,
    conn: ConnectionInfo,
    routes: &[TcpRoute],
    state: Arc<ProxyState>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let dst = conn.original_dst();
    let route = routes.iter().find(|r| {
        r.port.is_none_or(|p| p == conn.listener_port)
            && (r.destination_subnets.is_empty()
                || r.destination_subnets.iter().any(|n| n.contains(&dst.ip())))
    });
    let Some(route) = route else {
        state.metrics.tcp_refused(&conn, Flags::from(Flag::NR), 0);
        log_tcp(
            &conn,
            Flags::from(Flag::NR),
            0,
            0,
            Instant::now(),
            None,
            None,
            None,
        );
        return;
    };
    if !authorized(&conn, &state) {
        state.metrics.tcp_refused(&conn, Flags::from(Flag::RBAC), 0);
        log_tcp(
            &conn,
            Flags::from(Flag::RBAC),
            0,
            0,
            Instant::now(),
            None,
            None,
            None,
        );
        return;
    }
    forward(io, &conn, &route.clusters, &route.origin, &[], state).await;
}

/// AuthorizationPolicy on a TCP connection (Istio's TCP semantics: rules needing HTTP
/// attributes are dropped from ALLOW policies and widen DENY ones). CUSTOM (ext-authz over
/// HTTP) cannot judge a TCP connection: denied.
fn authorized(conn: &ConnectionInfo, state: &ProxyState) -> bool {
    use trellis_model::authz::{AuthzRequest, Outcome};
    let security = state.security.load();
    let authz = &security.config.security.authz;
    if authz.is_empty() || !crate::http::security::enforces_policies(&security.config, conn) {
        return true;
    }
    let headers = http::HeaderMap::new();
    let req = AuthzRequest {
        source_principal: conn.peer_identity.as_deref(),
        source_ip: Some(conn.peer_addr.ip()),
        destination_ip: Some(conn.local_addr.ip()),
        destination_port: Some(conn.listener_port),
        sni: conn.sni.as_deref(),
        ..AuthzRequest::tcp(&headers)
    };
    let decision = authz.evaluate(&req);
    if decision.outcome() == Outcome::Allow {
        tracing::debug!(target: "trellis::authz", listener = %conn.listener, peer = %conn.peer_addr, "TCP connection: {decision}");
        return true;
    }
    tracing::info!(
        target: "trellis::authz",
        listener = %conn.listener,
        peer = %conn.peer_addr,
        principal = ?conn.peer_identity,
        port = conn.listener_port,
        "TCP connection closed: {decision}"
    );
    false
}

/// Forwards a TLS connection untouched, routed by SNI (`server_names` exact or `*.suffix`).
/// Uses `conn.sni` when the listener peeked it (the ClientHello still unread in `io`);
/// otherwise reads the ClientHello here and replays it to the upstream.
pub async fn proxy_tls_passthrough<IO>(
    mut io: IO,
    conn: ConnectionInfo,
    routes: &[SniRoute],
    state: Arc<ProxyState>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let mut hello = Vec::new();
    let sni = match &conn.sni {
        Some(s) => Some(s.clone()),
        None => {
            match tokio::time::timeout(CLIENT_HELLO_TIMEOUT, read_client_hello(&mut io, &mut hello))
                .await
            {
                Ok(Ok(sni)) => sni,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %conn.peer_addr, "passthrough: no ClientHello: {e}");
                    let (flags, n) = (Flags::from(Flag::NR), hello.len() as u64);
                    state.metrics.tcp_refused(&conn, flags, n);
                    log_tcp(
                        &conn,
                        Flags::from(Flag::NR),
                        hello.len() as u64,
                        0,
                        start,
                        None,
                        None,
                        None,
                    );
                    return;
                }
                Err(_) => {
                    let (flags, n) = (Flags::from(Flag::NR), hello.len() as u64);
                    state.metrics.tcp_refused(&conn, flags, n);
                    log_tcp(
                        &conn,
                        Flags::from(Flag::NR),
                        hello.len() as u64,
                        0,
                        start,
                        None,
                        None,
                        None,
                    );
                    return;
                }
            }
        }
    };
    let route = routes.iter().find(|r| {
        r.port.is_none_or(|p| p == conn.listener_port)
            && (r.server_names.is_empty()
                || sni
                    .as_deref()
                    .is_some_and(|s| r.server_names.iter().any(|n| sni_matches(n, s))))
    });
    let Some(route) = route else {
        tracing::debug!(peer = %conn.peer_addr, "passthrough: no route for SNI {sni:?}");
        let (flags, n) = (Flags::from(Flag::NR), hello.len() as u64);
        state.metrics.tcp_refused(&conn, flags, n);
        log_tcp(
            &conn,
            Flags::from(Flag::NR),
            hello.len() as u64,
            0,
            start,
            None,
            None,
            None,
        );
        return;
    };
    forward(io, &conn, &route.clusters, &route.origin, &hello, state).await;
}

/// Exact or `*.suffix` (the wildcard covers one or more labels, as Envoy's server_names).
pub fn sni_matches(pattern: &str, sni: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            sni.len() > suffix.len() && sni[sni.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => pattern.eq_ignore_ascii_case(sni),
    }
}

impl From<Flag> for Flags {
    fn from(f: Flag) -> Flags {
        let mut s = Flags::default();
        s.set(f);
        s
    }
}

async fn forward<IO>(
    io: IO,
    conn: &ConnectionInfo,
    clusters: &WeightedClusters,
    origin: &str,
    prefix: &[u8],
    state: Arc<ProxyState>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let config = state.config.load_full();
    // Istio's TCP metrics; a connection that ends early is closed with the log's flags.
    let mut stats = state.metrics.tcp(conn);
    stats.received(prefix.len() as u64);
    let log = |flags: Flags, cluster: Option<&str>, up: Option<SocketAddr>, bi: u64, bo: u64| {
        log_tcp(conn, flags, bi, bo, start, cluster, up, Some(origin));
    };
    let Some(dest) = pick(clusters) else {
        stats.close(Flags::from(Flag::NC));
        log(Flags::from(Flag::NC), None, None, 0, 0);
        return;
    };
    stats.route(dest);
    let Some(cluster) = state.upstreams.get(&config, dest) else {
        stats.close(Flags::from(Flag::NC));
        log(Flags::from(Flag::NC), Some(dest), None, 0, 0);
        return;
    };
    let set = cluster.endpoints(&config, conn.original_dst()).await;
    let hash = Some(hash64(conn.peer_addr.ip().to_string().as_bytes()));
    let Some(host) = cluster.pick(&set, hash, &[]) else {
        stats.close(Flags::from(Flag::UH));
        log(Flags::from(Flag::UH), Some(dest), None, 0, 0);
        return;
    };
    stats.upstream(host.addr);
    let Ok(_admission) = cluster.admit(Proto::Http1).await else {
        stats.close(Flags::from(Flag::UO));
        log(Flags::from(Flag::UO), Some(dest), Some(host.addr), 0, 0);
        return;
    };
    let mut upstream = match cluster.connect_raw(&host, state.mesh_tls.get()).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(cluster = %dest, endpoint = %host.addr, "tcp connect: {e}");
            cluster.record(&set, &host, Outcome::LocalFailure);
            stats.close(Flags::from(Flag::UF));
            log(Flags::from(Flag::UF), Some(dest), Some(host.addr), 0, 0);
            return;
        }
    };
    cluster.record(&set, &host, Outcome::Status(200));
    drop(config);
    let mut io = stats.open(io);
    if !prefix.is_empty() {
        if let Err(e) = upstream.write_all(prefix).await {
            tracing::debug!("passthrough replay: {e}");
            stats.close(Flags::from(Flag::UC));
            log(Flags::from(Flag::UC), Some(dest), Some(host.addr), 0, 0);
            return;
        }
    }
    let (bi, bo) = match tokio::io::copy_bidirectional(&mut io, &mut upstream).await {
        Ok((a, b)) => (a, b),
        Err(e) => {
            tracing::debug!(cluster = %dest, "tcp proxy: {e}");
            (0, 0)
        }
    };
    cluster.stats.requests.fetch_add(1, Ordering::Relaxed);
    stats.close(Flags::default());
    log(
        Flags::default(),
        Some(dest),
        Some(host.addr),
        bi + prefix.len() as u64,
        bo,
    );
}

fn pick(w: &WeightedClusters) -> Option<&str> {
    use rand::Rng;
    let total: u32 = w.clusters.iter().map(|c| c.weight).sum();
    if w.clusters.len() <= 1 || total == 0 {
        return w.clusters.first().map(|c| c.cluster.as_str());
    }
    let mut r = rand::rng().random_range(0..total);
    for c in &w.clusters {
        if r < c.weight {
            return Some(&c.cluster);
        }
        r -= c.weight;
    }
    w.clusters.last().map(|c| c.cluster.as_str())
}

#[allow(clippy::too_many_arguments)]
fn log_tcp(
    conn: &ConnectionInfo,
    flags: Flags,
    bytes_in: u64,
    bytes_out: u64,
    start: Instant,
    cluster: Option<&str>,
    upstream: Option<SocketAddr>,
    route: Option<&str>,
) {
    tracing::info!(
        target: "access",
        listener = %conn.listener,
        "[{}] \"- - -\" 0 {} {} {} {} \"-\" \"-\" \"-\" \"{}\" \"{}\" {} {}",
        rfc3339(SystemTime::now()),
        flags,
        bytes_in,
        bytes_out,
        start.elapsed().as_millis(),
        conn.sni.as_deref().unwrap_or("-"),
        upstream.map_or_else(|| "-".to_string(), |a| a.to_string()),
        cluster.unwrap_or("-"),
        route.unwrap_or("-"),
    );
}

/// Reads from `io` into `buf` until a whole ClientHello is there; returns its SNI.
async fn read_client_hello<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    let mut chunk = [0u8; 4096];
    loop {
        match parse_sni(buf) {
            SniParse::Complete(sni) => return Ok(sni),
            SniParse::NotTls => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a TLS ClientHello",
                ))
            }
            SniParse::Incomplete => {}
        }
        if buf.len() >= MAX_CLIENT_HELLO {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "ClientHello too large",
            ));
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Result of looking for SNI in the first bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum SniParse {
    /// Need more bytes.
    Incomplete,
    /// Not a TLS handshake.
    NotTls,
    /// A whole ClientHello; its server name if it carries one.
    Complete(Option<String>),
}

/// Parses a TLS ClientHello (possibly spread over several handshake records) for the
/// server_name extension. Never panics on malformed input.
pub fn parse_sni(buf: &[u8]) -> SniParse {
    // Reassemble the handshake payload from consecutive handshake records.
    let mut hs = Vec::new();
    let mut pos = 0;
    let mut need: Option<usize> = None;
    loop {
        if let Some(n) = need {
            if hs.len() >= n {
                break;
            }
        }
        if buf.len() < pos + 5 {
            return if buf.is_empty() || buf[0] == 0x16 {
                SniParse::Incomplete
            } else {
                SniParse::NotTls
            };
        }
        if buf[pos] != 0x16 || buf[pos + 1] != 3 {
            return SniParse::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([buf[pos + 3], buf[pos + 4]]));
        if len == 0 || len > 16384 + 2048 {
            return SniParse::NotTls;
        }
        if buf.len() < pos + 5 + len {
            return SniParse::Incomplete;
        }
        hs.extend_from_slice(&buf[pos + 5..pos + 5 + len]);
        pos += 5 + len;
        if need.is_none() && hs.len() >= 4 {
            if hs[0] != 1 {
                return SniParse::NotTls;
            }
            need = Some(
                4 + ((usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3])),
            );
        }
    }
    match client_hello_sni(&hs[4..need.unwrap_or(4).min(hs.len())]) {
        Some(sni) => SniParse::Complete(sni),
        None => SniParse::NotTls,
    }
}

/// `None` = malformed; `Some(None)` = no SNI.
fn client_hello_sni(b: &[u8]) -> Option<Option<String>> {
    let mut r = Reader { b, pos: 0 };
    r.skip(2 + 32)?; // version, random
    let sid = r.u8()? as usize;
    r.skip(sid)?;
    let cs = r.u16()? as usize;
    r.skip(cs)?;
    let comp = r.u8()? as usize;
    r.skip(comp)?;
    if r.pos == b.len() {
        return Some(None);
    }
    let ext_len = r.u16()? as usize;
    let end = r.pos.checked_add(ext_len)?;
    if end > b.len() {
        return None;
    }
    while r.pos + 4 <= end {
        let ty = r.u16()?;
        let len = r.u16()? as usize;
        if ty != 0 {
            r.skip(len)?;
            continue;
        }
        let mut s = Reader {
            b: r.take(len)?,
            pos: 0,
        };
        let list = s.u16()? as usize;
        let list_end = s.pos + list;
        while s.pos + 3 <= list_end {
            let name_type = s.u8()?;
            let n = s.u16()? as usize;
            let name = s.take(n)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.trim_end_matches('.').to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
}

/// For callers that already hold the config: whether a TCP route would match this
/// connection (used by listeners deciding between chains).
pub fn tcp_route_matches(route: &TcpRoute, conn: &ConnectionInfo) -> bool {
    let dst = conn.original_dst();
    route.port.is_none_or(|p| p == conn.listener_port)
        && (route.destination_subnets.is_empty()
            || route
                .destination_subnets
                .iter()
                .any(|n| n.contains(&dst.ip())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as a real client sends it (rustls), captured in memory.
    fn client_hello(sni: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut c = rustls::ClientConnection::new(
            Arc::new(config),
            rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn sni_from_a_real_client_hello() {
        let hello = client_hello("db.example.com");
        assert_eq!(
            parse_sni(&hello),
            SniParse::Complete(Some("db.example.com".into()))
        );
        for cut in [0, 3, 5, 40, hello.len() - 1] {
            assert_eq!(parse_sni(&hello[..cut]), SniParse::Incomplete, "cut {cut}");
        }
        assert_eq!(parse_sni(b"GET / HTTP/1.1\r\n"), SniParse::NotTls);
    }

    #[test]
    fn garbage_never_panics() {
        let hello = client_hello("a.example.com");
        for i in 5..hello.len() {
            let mut b = hello.clone();
            b[i] ^= 0xff;
            let _ = parse_sni(&b);
            let _ = parse_sni(&hello[..i]);
        }
    }

    #[test]
    fn server_name_patterns() {
        assert!(sni_matches("*.example.com", "a.b.example.com"));
        assert!(!sni_matches("*.example.com", "example.com"));
        assert!(sni_matches("DB.example.com", "db.example.com"));
    }
}
