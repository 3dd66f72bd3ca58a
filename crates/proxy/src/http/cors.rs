//! CORS (VirtualService `corsPolicy`), as Envoy's CORS filter: preflights from an allowed
//! origin are answered by the proxy; actual requests from an allowed origin get the
//! `access-control-allow-*` headers on the response; other origins get no CORS headers.

use http::header::{HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use trellis_model::config::{CorsPolicy, StringMatcher};
use trellis_model::route::string_matches;

use crate::http::body::{self, Body};

/// What CORS decided for a request.
pub enum CorsDecision {
    /// Not a CORS request or no policy: carry on.
    None,
    /// Answer the preflight with this response.
    Preflight(Response<Body>),
    /// Carry on; add these headers to the response.
    Actual(HeaderValue),
}

fn origin_allowed(policy: &CorsPolicy, origin: &str) -> bool {
    policy.allow_origins.iter().any(|m| match m {
        StringMatcher::Exact(e) if e == "*" => true,
        m => string_matches(m, origin, false),
    })
}

pub fn evaluate(policy: Option<&CorsPolicy>, method: &Method, headers: &HeaderMap) -> CorsDecision {
    let Some(policy) = policy else {
        return CorsDecision::None;
    };
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return CorsDecision::None;
    };
    let allowed = origin.to_str().is_ok_and(|o| origin_allowed(policy, o));
    let preflight = method == Method::OPTIONS
        && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !allowed {
            if policy.unmatched_preflights_forward {
                return CorsDecision::None;
            }
            // Istio's default for unmatched preflights: answered, without CORS headers.
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::OK;
            return CorsDecision::Preflight(r);
        }
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if !policy.allow_methods.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&policy.allow_methods.join(",")) {
                h.insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, v);
            }
        }
        if !policy.allow_headers.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&policy.allow_headers.join(",")) {
                h.insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        if let Some(age) = policy.max_age {
            h.insert(
                http::header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(age.as_secs()),
            );
        }
        if policy.allow_credentials == Some(true) {
            h.insert(
                http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        return CorsDecision::Preflight(r);
    }
    if allowed {
        CorsDecision::Actual(origin.clone())
    } else {
        CorsDecision::None
    }
}

/// Adds the CORS headers of an actual request to its response.
pub fn decorate(policy: &CorsPolicy, origin: HeaderValue, headers: &mut HeaderMap) {
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if policy.allow_credentials == Some(true) {
        headers.insert(
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !policy.expose_headers.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&policy.expose_headers.join(",")) {
            headers.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
}
