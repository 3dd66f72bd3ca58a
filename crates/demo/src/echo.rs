//! `service-gateway`: an echo service standing in for Alphintra's Kotlin API gateway. Every
//! answer is JSON naming its version (`stable` / `canary`), its workload, the caller's mesh
//! identity (the URI of the last `x-forwarded-client-cert` element, which the callee's sidecar
//! sets from the verified client certificate), the end user (the claims of the bearer token the
//! ingress gateway verified and forwarded), and the request as received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::server::{error, json, version_name, App, Request, ResponseFuture};

/// Settings of one service-gateway instance.
#[derive(Clone, Debug)]
pub struct EchoOptions {
    /// `stable` or `canary` (any text is accepted).
    pub version: String,
    /// The workload name reported (`service-gateway-stable`).
    pub workload: String,
    /// Where `/api/cache/ping` sends a Redis `PING` (the sidecar's outbound TCP listener for
    /// the Redis ServiceEntry in local mode).
    pub redis: Option<SocketAddr>,
}

pub struct Echo {
    options: EchoOptions,
}

impl Echo {
    pub fn new(options: EchoOptions) -> Self {
        Echo { options }
    }

    async fn respond(
        self: Arc<Self>,
        req: Request,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let o = &self.options;
        match req.path.as_str() {
            "/health" | "/healthz" | "/actuator/health" | "/ready" => {
                return json(
                    StatusCode::OK,
                    &json!({"status": "UP", "version": o.version, "workload": o.workload}),
                )
            }
            "/api/cache/ping" => return self.redis_ping().await,
            _ => {}
        }
        let headers: BTreeMap<String, Value> = {
            let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in &req.headers {
                m.entry(k.as_str().to_string())
                    .or_default()
                    .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
            }
            m.into_iter()
                .map(|(k, mut v)| {
                    let value = if v.len() == 1 {
                        Value::String(v.remove(0))
                    } else {
                        Value::from(v)
                    };
                    (k, value)
                })
                .collect()
        };
        let xfcc = req.header("x-forwarded-client-cert");
        let body = (!req.body.is_empty()).then(|| String::from_utf8_lossy(&req.body).into_owned());
        json(
            StatusCode::OK,
            &json!({
                "service": "service-gateway",
                "version": o.version,
                "workload": o.workload,
                "method": req.method.as_str(),
                "path": req.path,
                "query": req.query,
                "protocol": version_name(req.version),
                "caller": {
                    "identity": xfcc.and_then(caller_identity),
                    "peer": req.peer.to_string(),
                },
                "user": req.bearer().and_then(token_claims),
                "headers": headers,
                "body": body,
            }),
        )
    }

    async fn redis_ping(&self) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let Some(addr) = self.options.redis else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no Redis address configured (--redis ADDR)",
            );
        };
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(b"PING\r\n").await?;
            let mut buf = vec![0u8; 256];
            let n = s.read(&mut buf).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).trim().to_string())
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(reply)) if !reply.is_empty() => json(
                StatusCode::OK,
                &json!({"redis": addr.to_string(), "reply": reply, "workload": self.options.workload}),
            ),
            Ok(Ok(_)) => error(
                StatusCode::BAD_GATEWAY,
                &format!("Redis at {addr} closed the connection"),
            ),
            Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, &format!("Redis at {addr}: {e}")),
            Err(_) => error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("Redis at {addr}: no answer in 3s"),
            ),
        }
    }
}

impl App for Echo {
    fn handle(self: Arc<Self>, req: Request) -> ResponseFuture {
        Box::pin(self.respond(req))
    }
}

/// The `URI=` of the last element of an `x-forwarded-client-cert` header: the identity of the
/// peer that connected to this workload's sidecar.
pub fn caller_identity(xfcc: &str) -> Option<String> {
    let last = split_unquoted(xfcc, ',').pop()?;
    split_unquoted(last, ';').into_iter().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("uri")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    })
}

fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The claims of a JWT, decoded without verifying it (the ingress gateway verified it).
pub fn token_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_uri_of_the_last_element() {
        let h = "By=spiffe://cluster.local/ns/alphintra/sa/service-gateway;Hash=abc;Subject=\"\";URI=spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
        assert_eq!(
            caller_identity(h).as_deref(),
            Some("spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account")
        );
        let two = "URI=spiffe://a/ns/x/sa/first,Subject=\"CN=a,O=b\";URI=spiffe://a/ns/y/sa/second";
        assert_eq!(
            caller_identity(two).as_deref(),
            Some("spiffe://a/ns/y/sa/second")
        );
        assert_eq!(caller_identity("Hash=abc"), None);
    }

    #[test]
    fn claims_are_decoded() {
        let claims =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"trader"}"#);
        let token = format!("e30.{claims}.sig");
        assert_eq!(token_claims(&token), Some(json!({"sub": "trader"})));
        assert_eq!(token_claims("garbage"), None);
    }
}
