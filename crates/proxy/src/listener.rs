//! One accepted downstream connection, from the first byte to the handler of its filter chain.
//!
//! Phases, in order (each a named step below, so a connection can be followed top to bottom):
//! 1. `detect`: read (without losing) the first bytes: a TLS ClientHello (SNI, ALPN) or
//!    plaintext. Skipped when the listener's chains do not depend on it, so server-first
//!    protocols on plain TCP listeners are not delayed.
//! 2. `ListenerPlan::select`: pick the filter chain: transport (TLS or plaintext), then SNI:
//!    exact name, then the longest `*.suffix`, then chains that name no server.
//! 3. Handle: TLS passthrough gets the untouched stream (bytes read so far replayed by
//!    [`Rewind`]); TLS-terminating chains complete the handshake with the chain's prebuilt
//!    `ServerConfig`; then HTTP (`http::serve_connection`) or TCP (`tcp::proxy_tcp`).
//!
//! The connection keeps the `ListenerPlan` it was accepted with (chains, TLS configs) for its
//! whole life; HTTP requests read `ProxyState::config` per request, so a reload reaches new
//! requests on old connections without disturbing the ones in flight.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use trellis_model::config::{ChainHandler, FilterChain, Scheme, SniRoute, TcpRoute};

use crate::state::{ConnectionInfo, ProxyState};

/// How long a TLS handshake may take once the chain is chosen.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest ClientHello we wait for (post-quantum key shares make them a few KB; this is slack).
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// A byte stream a handler can serve.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Where a connection goes once its chain is chosen: the HTTP and TCP engines. The runtime
/// uses [`Engine`]; tests may plug in their own handlers.
pub trait Dispatch: Send + Sync + 'static {
    fn http<IO: Io>(
        &self,
        io: IO,
        conn: ConnectionInfo,
        state: Arc<ProxyState>,
    ) -> impl Future<Output = ()> + Send;

    fn tcp<'a, IO: Io>(
        &'a self,
        io: IO,
        conn: ConnectionInfo,
        routes: &'a [TcpRoute],
        state: Arc<ProxyState>,
    ) -> impl Future<Output = ()> + Send + 'a;

    fn tls_passthrough<'a, IO: Io>(
        &'a self,
        io: IO,
        conn: ConnectionInfo,
        routes: &'a [SniRoute],
        state: Arc<ProxyState>,
    ) -> impl Future<Output = ()> + Send + 'a;
}

/// The real engines: `http::serve_connection`, `tcp::proxy_tcp`, `tcp::proxy_tls_passthrough`.
pub struct Engine;

impl Dispatch for Engine {
    fn http<IO: Io>(
        &self,
        io: IO,
        conn: ConnectionInfo,
        state: Arc<ProxyState>,
    ) -> impl Future<Output = ()> + Send {
        crate::http::serve_connection(io, conn, state)
    }

    fn tcp<'a, IO: Io>(
        &'a self,
        io: IO,
        conn: ConnectionInfo,
        routes: &'a [TcpRoute],
        state: Arc<ProxyState>,
    ) -> impl Future<Output = ()> + Send + 'a {
        crate::tcp::proxy_tcp(io, conn, routes, state)
    }

    fn tls_passthrough<'a, IO: Io>(
        &'a self,
        io: IO,
        conn: ConnectionInfo,
        routes: &'a [SniRoute],
        state: Arc<ProxyState>,
    ) -> impl Future<Output = ()> + Send + 'a {
        crate::tcp::proxy_tls_passthrough(io, conn, routes, state)
    }
}

/// A filter chain ready to serve: the config's chain and its prebuilt TLS config.
pub struct ChainPlan {
    pub chain: FilterChain,
    pub tls: Option<Arc<ServerConfig>>,
    /// Route table name for HTTP chains (empty otherwise).
    pub route_table: Arc<str>,
}

impl ChainPlan {
    fn requires_tls(&self) -> bool {
        self.chain.filter_match.tls_only
            || self.tls.is_some()
            || matches!(self.chain.handler, ChainHandler::TlsPassthrough(_))
    }

    fn accepts_transport(&self, tls: bool) -> bool {
        if tls {
            !self.chain.filter_match.plaintext_only
        } else {
            !self.requires_tls()
        }
    }
}

/// What one bound listener serves, for one config version.
pub struct ListenerPlan {
    pub name: Arc<str>,
    /// Address in the config (the bound one may differ: `--listen-remap`, `--bind-ip`).
    pub config_address: SocketAddr,
    pub chains: Vec<ChainPlan>,
    /// Whether choosing a chain needs the first bytes (TLS or not, SNI).
    pub needs_detection: bool,
    pub detect_timeout: Duration,
}

impl ListenerPlan {
    pub fn new(
        name: &str,
        config_address: SocketAddr,
        chains: Vec<ChainPlan>,
        detect_timeout: Duration,
    ) -> Self {
        let needs_detection = chains.iter().any(|c| {
            let m = &c.chain.filter_match;
            c.requires_tls() || m.plaintext_only || !m.server_names.is_empty()
        });
        ListenerPlan {
            name: name.into(),
            config_address,
            chains,
            needs_detection,
            detect_timeout,
        }
    }

    /// The chain for a connection: transport first, then SNI (exact, longest `*.suffix`,
    /// chains naming no server), each in config order.
    /// `dest_port` is the port the client dialled (chains for one workload port on
    /// `virtualInbound` match on it).
    pub fn select(&self, detected: &Detected, dest_port: u16) -> Option<&ChainPlan> {
        let (tls, sni) = match detected {
            Detected::Skipped | Detected::Plaintext => (false, None),
            Detected::Tls(hello) => (true, hello.sni.as_deref()),
        };
        // Envoy's order: the destination port first. When some chain names the port, only
        // those chains are considered (so a plaintext connection to a STRICT mTLS port never
        // falls through to a port-less passthrough chain); otherwise the port-less chains.
        let port_specific = self.names_port(dest_port);
        let candidates = || {
            self.chains.iter().filter(move |c| {
                c.accepts_transport(tls)
                    && match c.chain.filter_match.destination_port {
                        Some(p) => p == dest_port,
                        None => !port_specific,
                    }
            })
        };
        if let Some(sni) = sni {
            if let Some(c) = candidates().find(|c| {
                c.chain
                    .filter_match
                    .server_names
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(sni))
            }) {
                return Some(c);
            }
            let mut best: Option<(usize, &ChainPlan)> = None;
            for c in candidates() {
                for n in &c.chain.filter_match.server_names {
                    if let Some(len) = wildcard_match(n, sni) {
                        if best.is_none_or(|(b, _)| len > b) {
                            best = Some((len, c));
                        }
                    }
                }
            }
            if let Some((_, c)) = best {
                return Some(c);
            }
        }
        candidates().find(|c| {
            let names = &c.chain.filter_match.server_names;
            names.is_empty() || names.iter().any(|n| n == "*")
        })
    }
}

impl ListenerPlan {
    /// Whether some chain is for destination port `port` only.
    fn names_port(&self, port: u16) -> bool {
        self.chains
            .iter()
            .any(|c| c.chain.filter_match.destination_port == Some(port))
    }

    /// Why no chain takes a connection, when the answer is a policy (mutual TLS required).
    fn refusal(&self, detected: &Detected, dest_port: u16) -> Option<&'static str> {
        let plaintext = !matches!(detected, Detected::Tls(_));
        let port_specific = self.names_port(dest_port);
        let for_port = |c: &&ChainPlan| match c.chain.filter_match.destination_port {
            Some(p) => p == dest_port,
            None => !port_specific,
        };
        let mesh_only = self.chains.iter().filter(for_port).all(|c| {
            c.chain
                .tls
                .as_ref()
                .is_some_and(trellis_model::security::is_mesh_tls)
        });
        (plaintext && mesh_only && self.chains.iter().any(|c| for_port(&c)))
            .then_some("plaintext connection refused: the port accepts only mutual TLS (PeerAuthentication STRICT)")
    }
}

/// Length of the suffix `pattern` (`*.suffix`) matches `name` with, if it does.
fn wildcard_match(pattern: &str, name: &str) -> Option<usize> {
    let suffix = pattern.strip_prefix('*')?;
    if suffix.is_empty() || !suffix.starts_with('.') {
        return None;
    }
    let n = name.len();
    (n > suffix.len() && name[n - suffix.len()..].eq_ignore_ascii_case(suffix))
        .then_some(suffix.len())
}

/// What the first bytes said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detected {
    /// The listener does not need to know (nothing was read).
    Skipped,
    Plaintext,
    Tls(ClientHello),
}

/// The parts of a ClientHello chain selection uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// Lowercased, without a trailing dot; `None` when absent or not a valid host name.
    pub sni: Option<String>,
    pub alpn: Vec<String>,
}

/// Serves one accepted connection until it closes.
pub async fn serve<D: Dispatch>(
    stream: TcpStream,
    peer_addr: SocketAddr,
    plan: Arc<ListenerPlan>,
    state: Arc<ProxyState>,
    dispatch: Arc<D>,
) {
    let local_addr = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(peer = %peer_addr, "connection gone before it was served: {e}");
            return;
        }
    };
    let (stream, detected) = match detect(stream, &plan).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(listener = %plan.name, peer = %peer_addr, "closed during protocol detection: {e}");
            return;
        }
    };
    let Some(chain) = plan.select(&detected, local_addr.port()) else {
        match plan.refusal(&detected, local_addr.port()) {
            Some(why) => tracing::info!(
                listener = %plan.name,
                peer = %peer_addr,
                port = local_addr.port(),
                "{why}"
            ),
            None => {
                tracing::debug!(listener = %plan.name, peer = %peer_addr, ?detected, "no filter chain matches the connection (NR)")
            }
        }
        return;
    };
    let sni = match &detected {
        Detected::Tls(h) => h.sni.clone(),
        _ => None,
    };
    let mut conn = ConnectionInfo {
        listener: plan.name.clone(),
        // A chain for one destination port (`virtualInbound`) serves that port: routing and
        // authorization see it, not the capture listener's.
        listener_port: chain
            .chain
            .filter_match
            .destination_port
            .unwrap_or(plan.config_address.port()),
        local_addr,
        peer_addr,
        route_table: chain.route_table.clone(),
        scheme: Scheme::Http,
        sni,
        peer_identity: None,
        peer_cert_sha256: None,
    };
    tracing::trace!(listener = %plan.name, peer = %peer_addr, chain = %chain.chain.name, "filter chain selected");

    if let ChainHandler::TlsPassthrough(routes) = &chain.chain.handler {
        conn.scheme = Scheme::Https;
        return dispatch.tls_passthrough(stream, conn, routes, state).await;
    }
    match &chain.tls {
        None => handle(&*dispatch, stream, conn, &chain.chain.handler, state).await,
        Some(tls) => {
            let accept = tokio_rustls::TlsAcceptor::from(tls.clone()).accept(stream);
            let mesh = chain
                .chain
                .tls
                .as_ref()
                .is_some_and(trellis_model::security::is_mesh_tls);
            let tls_stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) if mesh => {
                    tracing::info!(listener = %plan.name, peer = %peer_addr, chain = %chain.chain.name, "mutual TLS handshake failed (a client certificate from the mesh CA is required): {e}");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = %plan.name, peer = %peer_addr, sni = ?conn.sni, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener = %plan.name, peer = %peer_addr, "TLS handshake timed out");
                    return;
                }
            };
            conn.scheme = Scheme::Https;
            let session = tls_stream.get_ref().1;
            conn.peer_identity = crate::tls::peer_spiffe_id(session);
            conn.peer_cert_sha256 = crate::tls::peer_cert_sha256(session);
            handle(&*dispatch, tls_stream, conn, &chain.chain.handler, state).await
        }
    }
}

async fn handle<D: Dispatch, IO: Io>(
    dispatch: &D,
    io: IO,
    conn: ConnectionInfo,
    handler: &ChainHandler,
    state: Arc<ProxyState>,
) {
    match handler {
        ChainHandler::Http(_) => dispatch.http(io, conn, state).await,
        ChainHandler::Tcp(tcp) => dispatch.tcp(io, conn, &tcp.routes, state).await,
        ChainHandler::TlsPassthrough(routes) => {
            dispatch.tls_passthrough(io, conn, routes, state).await
        }
    }
}

/// Reads the first bytes when the chain depends on them; returns the stream with those bytes
/// put back. A client that sends nothing within the detection timeout is treated as
/// plaintext (server-first protocols), as Envoy's listener filters do.
async fn detect(
    mut stream: TcpStream,
    plan: &ListenerPlan,
) -> io::Result<(Rewind<TcpStream>, Detected)> {
    if !plan.needs_detection {
        return Ok((Rewind::new(stream, Vec::new()), Detected::Skipped));
    }
    let mut buf = Vec::with_capacity(2048);
    let read = async {
        loop {
            match parse_client_hello(&buf) {
                Parse::NeedMore if buf.len() < MAX_CLIENT_HELLO => {}
                Parse::NeedMore => return Ok(Detected::Tls(ClientHello::default())),
                Parse::NotTls => return Ok(Detected::Plaintext),
                Parse::Tls(h) => return Ok(Detected::Tls(h)),
            }
            buf.reserve(4096);
            if stream.read_buf(&mut buf).await? == 0 {
                if buf.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before sending anything",
                    ));
                }
                return Ok(partial(&buf));
            }
        }
    };
    let detected = match tokio::time::timeout(plan.detect_timeout, read).await {
        Ok(r) => r?,
        Err(_) => partial(&buf),
    };
    Ok((Rewind::new(stream, buf), detected))
}

/// Classification of a ClientHello that never completed.
fn partial(buf: &[u8]) -> Detected {
    if buf.first() == Some(&0x16) {
        Detected::Tls(ClientHello::default())
    } else {
        Detected::Plaintext
    }
}

/// Result of looking at the first bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    NeedMore,
    NotTls,
    /// A TLS handshake; a malformed ClientHello gives an empty `ClientHello` (the handshake
    /// itself will then fail or go to a chain that names no server).
    Tls(ClientHello),
}

/// Parses the TLS records at the start of `buf` up to the end of the ClientHello. The
/// message may span several records.
pub fn parse_client_hello(buf: &[u8]) -> Parse {
    const HANDSHAKE: u8 = 22;
    const CLIENT_HELLO: u8 = 1;
    match buf {
        [] | [HANDSHAKE] => return Parse::NeedMore,
        [HANDSHAKE, 3, ..] => {}
        _ => return Parse::NotTls,
    }
    let mut message = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = buf.get(pos..pos + 5) else {
            return Parse::NeedMore;
        };
        if header[0] != HANDSHAKE || header[1] != 3 {
            return Parse::Tls(ClientHello::default());
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        if len == 0 || len > 16384 + 2048 {
            return Parse::Tls(ClientHello::default());
        }
        let Some(fragment) = buf.get(pos + 5..pos + 5 + len) else {
            return Parse::NeedMore;
        };
        pos += 5 + len;
        // Common case: the whole message in the first record, parsed in place.
        let data: &[u8] = if message.is_empty() && fragment_holds_message(fragment) {
            fragment
        } else {
            message.extend_from_slice(fragment);
            &message
        };
        if data.len() < 4 {
            continue;
        }
        if data[0] != CLIENT_HELLO {
            return Parse::Tls(ClientHello::default());
        }
        let body_len = u32::from_be_bytes([0, data[1], data[2], data[3]]) as usize;
        if body_len > MAX_CLIENT_HELLO {
            return Parse::Tls(ClientHello::default());
        }
        if let Some(body) = data.get(4..4 + body_len) {
            return Parse::Tls(parse_hello_body(body).unwrap_or_default());
        }
    }
}

fn fragment_holds_message(fragment: &[u8]) -> bool {
    fragment.len() >= 4
        && fragment.len() - 4
            >= u32::from_be_bytes([0, fragment[1], fragment[2], fragment[3]]) as usize
}

/// Big-endian reader over a byte slice; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

fn parse_hello_body(body: &[u8]) -> Option<ClientHello> {
    const SERVER_NAME: u16 = 0;
    const ALPN: u16 = 16;
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    let Some(extensions) = r.vec16() else {
        return Some(hello); // no extensions (old clients)
    };
    let mut ext = Reader(extensions);
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let mut data = Reader(ext.vec16()?);
        match kind {
            SERVER_NAME => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 {
                        hello.sni = normalize_sni(name);
                        break;
                    }
                }
            }
            ALPN => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    let proto = list.vec8()?;
                    hello.alpn.push(String::from_utf8_lossy(proto).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// A DNS host name, lowercased, without a trailing dot; `None` for anything else.
fn normalize_sni(name: &[u8]) -> Option<String> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
    ok.then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// A stream with bytes already read put back in front: reads return `prefix` first, then the
/// inner stream. Writes go straight through.
pub struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(inner: T, prefix: Vec<u8>) -> Self {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new(); // free it
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_model::config::{ChainMatch, HttpCodec, HttpManager, TcpProxy};

    /// A real ClientHello, produced by rustls for `server_name` with ALPN.
    fn client_hello(server_name: &str, alpn: &[&str]) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn parses_sni_and_alpn_from_a_real_client_hello() {
        let hello = client_hello("API.Example.com", &["h2", "http/1.1"]);
        assert_eq!(
            parse_client_hello(&hello),
            Parse::Tls(ClientHello {
                sni: Some("api.example.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
            })
        );
        // Every strict prefix needs more bytes; nothing panics.
        for n in 0..hello.len() {
            assert_eq!(
                parse_client_hello(&hello[..n]),
                Parse::NeedMore,
                "prefix {n}"
            );
        }
    }

    #[test]
    fn ip_server_names_send_no_sni() {
        let hello = client_hello("127.0.0.1", &[]);
        assert_eq!(
            parse_client_hello(&hello),
            Parse::Tls(ClientHello::default())
        );
    }

    #[test]
    fn client_hello_split_across_records() {
        let hello = client_hello("split.example.com", &[]);
        let body = &hello[5..];
        let (a, b) = body.split_at(40);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[22, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        match parse_client_hello(&split) {
            Parse::Tls(h) => assert_eq!(h.sni.as_deref(), Some("split.example.com")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_client_hello(&split[..split.len() - 1]),
            Parse::NeedMore
        );
    }

    #[test]
    fn plaintext_and_garbage() {
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Parse::NotTls);
        assert_eq!(parse_client_hello(b"PRI * HTTP/2.0"), Parse::NotTls);
        assert_eq!(parse_client_hello(&[22, 9]), Parse::NotTls);
        assert_eq!(parse_client_hello(&[22]), Parse::NeedMore);
        // A handshake record that is not a ClientHello, or lies about lengths.
        assert_eq!(
            parse_client_hello(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
            Parse::Tls(ClientHello::default())
        );
        assert_eq!(
            parse_client_hello(&[22, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3]),
            Parse::Tls(ClientHello::default())
        );
        assert_eq!(
            parse_client_hello(&[22, 3, 1, 0xff, 0xff]),
            Parse::Tls(ClientHello::default())
        );
        // Corrupting any byte of a real hello never panics.
        let hello = client_hello("x.example.com", &["h2"]);
        for i in 0..hello.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut h = hello.clone();
                h[i] = v;
                let _ = parse_client_hello(&h);
            }
        }
    }

    #[test]
    fn sni_normalization() {
        assert_eq!(
            normalize_sni(b"Foo.Example.COM."),
            Some("foo.example.com".into())
        );
        assert_eq!(normalize_sni(b"bad name"), None);
        assert_eq!(normalize_sni(b""), None);
        assert_eq!(normalize_sni(&[0xc3, 0xa9]), None);
    }

    fn chain(name: &str, names: &[&str], tls: bool) -> ChainPlan {
        ChainPlan {
            chain: FilterChain {
                name: name.into(),
                filter_match: ChainMatch {
                    server_names: names.iter().map(|s| s.to_string()).collect(),
                    tls_only: tls,
                    plaintext_only: !tls,
                    destination_port: None,
                },
                tls: None,
                handler: ChainHandler::Http(HttpManager {
                    route_table: name.into(),
                    codec: HttpCodec::Auto,
                    scheme: Scheme::Http,
                }),
            },
            tls: None,
            route_table: name.into(),
        }
    }

    fn tls_with(sni: &str) -> Detected {
        Detected::Tls(ClientHello {
            sni: Some(sni.into()),
            alpn: vec![],
        })
    }

    #[test]
    fn chain_selection_order() {
        let plan = ListenerPlan::new(
            "l",
            "0.0.0.0:443".parse().unwrap(),
            vec![
                chain("plain", &[], false),
                chain("wild", &["*.example.com"], true),
                chain("deep", &["*.api.example.com"], true),
                chain("exact", &["www.example.com"], true),
                chain("any-tls", &[], true),
            ],
            Duration::from_secs(1),
        );
        assert!(plan.needs_detection);
        let pick = |d: Detected| plan.select(&d, 443).map(|c| c.chain.name.clone());
        assert_eq!(pick(Detected::Plaintext).as_deref(), Some("plain"));
        assert_eq!(pick(tls_with("www.example.com")).as_deref(), Some("exact"));
        assert_eq!(pick(tls_with("a.example.com")).as_deref(), Some("wild"));
        assert_eq!(pick(tls_with("x.y.example.com")).as_deref(), Some("wild"));
        assert_eq!(
            pick(tls_with("v1.api.example.com")).as_deref(),
            Some("deep")
        );
        assert_eq!(pick(tls_with("example.com")).as_deref(), Some("any-tls"));
        assert_eq!(pick(tls_with("other.org")).as_deref(), Some("any-tls"));
        assert_eq!(
            pick(Detected::Tls(ClientHello::default())).as_deref(),
            Some("any-tls")
        );
    }

    #[test]
    fn no_detection_for_plain_tcp_listeners() {
        let plan = ListenerPlan::new(
            "tcp",
            "0.0.0.0:5432".parse().unwrap(),
            vec![ChainPlan {
                chain: FilterChain {
                    name: "tcp".into(),
                    filter_match: ChainMatch::default(),
                    tls: None,
                    handler: ChainHandler::Tcp(TcpProxy { routes: vec![] }),
                },
                tls: None,
                route_table: "".into(),
            }],
            Duration::from_secs(1),
        );
        assert!(!plan.needs_detection);
        assert!(plan.select(&Detected::Skipped, 80).is_some());
    }

    #[tokio::test]
    async fn rewind_replays_then_reads_through() {
        use tokio::io::AsyncWriteExt;
        let (a, mut b) = tokio::io::duplex(64);
        let mut r = Rewind::new(a, b"hello ".to_vec());
        b.write_all(b"world").await.unwrap();
        drop(b);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
