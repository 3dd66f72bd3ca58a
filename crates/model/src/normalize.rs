//! Request path normalization: the one view of `:path` that routing, authorization and the
//! upstream all share. Pure; runs once per request before routing and authz.
//!
//! # Levels (MeshConfig `pathNormalization.normalization`)
//!
//! | level | what happens to the path (the query string is never touched) |
//! |---|---|
//! | `NONE` | nothing but validation and fragment stripping |
//! | `BASE` | RFC 3986 §6.2.2: percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) decoded once, dot segments (`.`, `..`, also written `%2e`) removed, characters outside RFC 3986 percent-encoded |
//! | `MERGE_SLASHES` | `BASE`, then runs of `/` merged into one |
//! | `DECODE_AND_MERGE_SLASHES` | `%2F`/`%2f` and `%5C`/`%5c` decoded to `/` before `BASE` and merging |
//!
//! These match Envoy's `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`
//! as Istio sets them (`PathOptions::istio` reproduces Istio's own normalization integration
//! table exactly: dot segments are resolved *before* slashes are merged, so
//! `/app//../admin` is `/app/admin` under `MERGE_SLASHES`; other escapes such as `%25` or
//! `%3a` are kept byte for byte, never decoded twice).
//!
//! # Trellis defaults (where Istio's are a known trap)
//!
//! * **`DEFAULT` means `DECODE_AND_MERGE_SLASHES`** ([`Normalization::from_mesh`]). Istio
//!   resolves `DEFAULT` to `BASE`, under which `//admin` and `/admin%2Fx` are not `/admin...`
//!   for authorization while many backends treat them as such. With Trellis's default the path
//!   authorization sees is the path the upstream receives, decoded: there is no second
//!   decoding step left to the backend that could turn an allowed path into a denied one.
//!   An explicit `BASE`/`MERGE_SLASHES` is honoured (apps that rely on `%2F` in a segment keep
//!   working); set [`PathOptions::reject_escaped_slashes`] to refuse `%2F`/`%5C` there.
//! * **A literal `\` is a separator** ([`BackslashAction::ToSlash`]), as in Envoy: at `BASE`
//!   and above it is rewritten to `/` before dot segments are resolved, so `/\admin` and
//!   `/x\..\admin` are `/admin` for routing, authorization *and* the upstream (backends such
//!   as IIS and some Java and Node servers treat it as a separator; after the rewrite none
//!   can see a different path than authz did). At `NONE` it is kept. Percent-encoded `%5C` is
//!   decoded to `/` under `DECODE_AND_MERGE_SLASHES` (as Envoy does) and kept otherwise.
//! * **`;` path parameters are rejected (400)** ([`PathParams::Reject`]). Envoy keeps them,
//!   and Tomcat/Spring strip them before routing, so `/public/..;/admin` and `/admin;x=y`
//!   reach `/admin` on such a backend while authz saw something else. Stripping them instead
//!   would silently send a different path upstream (`/files/a;b.txt` → `/files/a`), so Trellis
//!   refuses the request; [`PathParams::Strip`] and [`PathParams::Keep`] are available.
//! * **Errors (→ 400)**: a target that is not origin-form (`/...`), invalid percent-encoding
//!   (`%zz`, `%4`), NUL (raw or `%00`), raw control characters (`0x00-0x1F`, `0x7F`) anywhere in
//!   the target, and the two rules above. Encoded control characters other than `%00` (e.g.
//!   `%0d%0a`) stay encoded, as in Istio, and cannot inject anything.
//! * **Fragments** (`#...`) are stripped at every level: browsers never send them and Envoy
//!   strips them; a policy must never see `/admin#x` as something other than `/admin`.
//!
//! # Bypasses this closes (DENY `/admin*` + ALLOW `*`)
//!
//! | request | Istio `BASE` authz sees | Trellis default |
//! |---|---|---|
//! | `/public/../admin`, `/public/%2e%2e/admin`, `/%2e%2e/admin` | `/admin` (closed in Istio too) | `/admin` → denied |
//! | `//admin`, `/./admin//` | `//admin` → allowed, many backends serve `/admin` | `/admin` → denied |
//! | `/admin%2F`, `/%2Fadmin`, `/x/..%2fadmin` | unchanged → `/%2Fadmin` allowed | `/admin/`, `/admin` → denied |
//! | `/%61dmin` | `/admin` | `/admin` → denied |
//! | `/\admin`, `/x\..\admin` | `//admin` → allowed | `/admin` → denied |
//! | `/admin;x=y`, `/public/..;/admin` | unchanged → the second is allowed | 400 |
//! | `/admin#x` | `/admin` | `/admin` → denied |
//! | host `EXAMPLE.com`, `example.com.`, `example.com:80` | `hosts: [example.com]` misses the port and trailing-dot forms | [`normalize_authority`]; authz host matching is case-, port- and trailing-dot-insensitive |
//!
//! The query string is returned untouched: it is not part of any path match.

use std::borrow::Cow;
use std::fmt;

use trellis_api::mesh::NormalizationType;

/// HTTP status for every [`PathError`].
pub const PATH_ERROR_STATUS: u16 = 400;

/// How far paths are normalized (MeshConfig `pathNormalization.normalization`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Normalization {
    None,
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl Normalization {
    /// The mesh setting as Trellis applies it: `DEFAULT` is `DECODE_AND_MERGE_SLASHES`
    /// (Istio: `BASE`; see the module documentation for why).
    pub fn from_mesh(t: NormalizationType) -> Normalization {
        match t {
            NormalizationType::Default | NormalizationType::DecodeAndMergeSlashes => {
                Normalization::DecodeAndMergeSlashes
            }
            NormalizationType::None => Normalization::None,
            NormalizationType::Base => Normalization::Base,
            NormalizationType::MergeSlashes => Normalization::MergeSlashes,
        }
    }

    /// The mesh setting as Istio applies it (`DEFAULT` is `BASE`).
    pub fn from_mesh_istio(t: NormalizationType) -> Normalization {
        match t {
            NormalizationType::Default => Normalization::Base,
            other => Normalization::from_mesh(other),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Normalization::None => "NONE",
            Normalization::Base => "BASE",
            Normalization::MergeSlashes => "MERGE_SLASHES",
            Normalization::DecodeAndMergeSlashes => "DECODE_AND_MERGE_SLASHES",
        }
    }

    fn merges(self) -> bool {
        matches!(
            self,
            Normalization::MergeSlashes | Normalization::DecodeAndMergeSlashes
        )
    }

    fn decodes_slashes(self) -> bool {
        self == Normalization::DecodeAndMergeSlashes
    }
}

impl fmt::Display for Normalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a literal `\` in the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum BackslashAction {
    /// 400.
    Reject,
    /// Rewrite to `/` at `BASE` and above (Envoy/Istio, and Trellis).
    ToSlash,
    /// Leave it (percent-encoded as `%5C` at `BASE` and above, as any non-RFC 3986 byte).
    Keep,
}

/// What to do with `;` path parameters (`/a;x=y/b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PathParams {
    /// 400 (Trellis).
    Reject,
    /// Remove `;...` up to the end of each segment at `BASE` and above, before dot segments are
    /// resolved (`/a/..;x/b` is `/b`); the upstream receives the stripped path.
    Strip,
    /// Leave them (Envoy/Istio).
    Keep,
}

/// Full normalization settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct PathOptions {
    pub level: Normalization,
    pub backslash: BackslashAction,
    pub path_params: PathParams,
    /// Refuse `%2F`/`%2f`/`%5C`/`%5c` (400) at levels that do not decode them.
    pub reject_escaped_slashes: bool,
}

impl PathOptions {
    /// Trellis's behaviour for `level`: Envoy's, except that `;` parameters are rejected.
    pub const fn trellis(level: Normalization) -> PathOptions {
        PathOptions {
            level,
            backslash: match level {
                Normalization::None => BackslashAction::Keep,
                _ => BackslashAction::ToSlash,
            },
            path_params: PathParams::Reject,
            reject_escaped_slashes: false,
        }
    }

    /// Exactly what Envoy does for Istio's `level` (for compatibility tests and migration).
    pub const fn istio(level: Normalization) -> PathOptions {
        PathOptions {
            level,
            backslash: match level {
                Normalization::None => BackslashAction::Keep,
                _ => BackslashAction::ToSlash,
            },
            path_params: PathParams::Keep,
            reject_escaped_slashes: false,
        }
    }
}

impl Default for PathOptions {
    /// [`PathOptions::trellis`] at `DECODE_AND_MERGE_SLASHES`.
    fn default() -> Self {
        PathOptions::trellis(Normalization::DecodeAndMergeSlashes)
    }
}

/// Why a request target was refused. Each maps to HTTP 400 ([`PATH_ERROR_STATUS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty request target")]
    Empty,
    #[error("request target is not origin-form (must start with '/')")]
    NotOriginForm,
    #[error("invalid percent-encoding at byte {0}")]
    InvalidPercentEncoding(usize),
    #[error("NUL byte in path")]
    Nul,
    #[error("control character in request target at byte {0}")]
    ControlChar(usize),
    #[error("backslash in path")]
    Backslash,
    #[error("percent-encoded slash or backslash in path")]
    EscapedSlash,
    #[error("';' path parameter in path")]
    PathParameter,
}

impl PathError {
    pub fn status(self) -> u16 {
        PATH_ERROR_STATUS
    }
}

/// Normalizes `raw` (a request target: path, optional `?query`, optional `#fragment`) with
/// Trellis's settings for `level` ([`PathOptions::trellis`]). Returns the borrowed input (or a
/// prefix of it) when nothing changes.
pub fn normalize_path(raw: &str, level: Normalization) -> Result<Cow<'_, str>, PathError> {
    normalize_path_with(raw, &PathOptions::trellis(level))
}

/// Normalizes `raw` with explicit options.
pub fn normalize_path_with<'a>(
    raw: &'a str,
    opts: &PathOptions,
) -> Result<Cow<'a, str>, PathError> {
    let target = raw.split_once('#').map_or(raw, |(t, _)| t);
    if target.is_empty() {
        return Err(if raw.is_empty() {
            PathError::Empty
        } else {
            PathError::NotOriginForm
        });
    }
    if !target.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    if let Some(i) = target.bytes().position(|b| b < 0x20 || b == 0x7f) {
        return Err(if target.as_bytes()[i] == 0 {
            PathError::Nul
        } else {
            PathError::ControlChar(i)
        });
    }
    let (path, query) = match target.find('?') {
        Some(i) => (&target[..i], Some(&target[i..])),
        None => (target, None),
    };
    check_path(path, opts)?;
    if opts.level == Normalization::None || !needs_rewrite(path, opts) {
        return Ok(Cow::Borrowed(target));
    }

    let decoded = decode(path, opts)?;
    let mut out = resolve_segments(&decoded, opts);
    if opts.level.merges() {
        merge_slashes(&mut out);
    }
    if let Some(q) = query {
        out.push_str(q);
    }
    Ok(Cow::Owned(out))
}

/// Validation that applies at every level: percent-encoding well-formed, no `%00`, and the
/// backslash / path-parameter / escaped-slash rules.
fn check_path(path: &str, opts: &PathOptions) -> Result<(), PathError> {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let v = hex_pair(b, i).ok_or(PathError::InvalidPercentEncoding(i))?;
                if v == 0 {
                    return Err(PathError::Nul);
                }
                if (v == b'/' || v == b'\\')
                    && opts.reject_escaped_slashes
                    && !opts.level.decodes_slashes()
                {
                    return Err(PathError::EscapedSlash);
                }
                i += 3;
                continue;
            }
            b'\\' if opts.backslash == BackslashAction::Reject => return Err(PathError::Backslash),
            b';' if opts.path_params == PathParams::Reject => return Err(PathError::PathParameter),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn hex_pair(b: &[u8], i: usize) -> Option<u8> {
    let hi = hex(*b.get(i + 1)?)?;
    let lo = hex(*b.get(i + 2)?)?;
    Some(hi << 4 | lo)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 path characters (pchar plus `/`, with `%` for escapes). Everything else is
/// percent-encoded at `BASE` and above.
fn is_path_char(c: u8) -> bool {
    is_unreserved(c)
        || matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'%'
        )
}

/// Cheap scan: does anything in `path` change at this level? Most paths need nothing.
fn needs_rewrite(path: &str, opts: &PathOptions) -> bool {
    let b = path.as_bytes();
    let merge = opts.level.merges();
    let strip = opts.path_params == PathParams::Strip;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' | b'\\' => return true,
            b';' if strip => return true,
            b'/' if merge && b.get(i + 1) == Some(&b'/') => return true,
            b'.' if i > 0 && b[i - 1] == b'/' => {
                // `.` or `..` as a whole segment
                let rest = &b[i + 1..];
                let seg_end = |r: &[u8]| r.is_empty() || r[0] == b'/';
                if seg_end(rest) || (rest[0] == b'.' && seg_end(&rest[1..])) {
                    return true;
                }
            }
            c if !is_path_char(c) => return true,
            _ => {}
        }
    }
    false
}

/// Percent-decoding pass: unreserved escapes decoded, escaped slashes decoded when the level
/// says so, backslashes handled, other escapes kept byte for byte, non-RFC bytes encoded.
/// Returns ASCII.
fn decode(path: &str, opts: &PathOptions) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len() + 8);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let v = hex_pair(b, i).ok_or(PathError::InvalidPercentEncoding(i))?;
            if is_unreserved(v) {
                out.push(v as char);
            } else if (v == b'/' || v == b'\\') && opts.level.decodes_slashes() {
                out.push('/');
            } else {
                out.push_str(&path[i..i + 3]);
            }
            i += 3;
            continue;
        }
        match c {
            b'\\' => match opts.backslash {
                BackslashAction::Reject => return Err(PathError::Backslash),
                BackslashAction::ToSlash => out.push('/'),
                BackslashAction::Keep => out.push_str("%5C"),
            },
            c if is_path_char(c) => out.push(c as char),
            c => push_escaped(&mut out, c),
        }
        i += 1;
    }
    Ok(out)
}

fn push_escaped(out: &mut String, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(c >> 4)] as char);
    out.push(HEX[usize::from(c & 0xf)] as char);
}

/// RFC 3986 §5.2.4 dot-segment removal on a path starting with `/` (empty segments are kept:
/// `..` after `//` removes the empty segment, as Envoy does). Strips `;` parameters first when
/// configured.
fn resolve_segments(path: &str, opts: &PathOptions) -> String {
    let strip = opts.path_params == PathParams::Strip;
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    // `path` starts with '/': skip the empty first element.
    for seg in path.split('/').skip(1) {
        let seg = if strip {
            seg.split_once(';').map_or(seg, |(s, _)| s)
        } else {
            seg
        };
        match seg {
            "." => trailing_slash = true,
            ".." => {
                out.pop();
                trailing_slash = true;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    s.push('/');
    for (i, seg) in out.iter().enumerate() {
        if i > 0 {
            s.push('/');
        }
        s.push_str(seg);
    }
    if trailing_slash && !s.ends_with('/') {
        s.push('/');
    }
    s
}

fn merge_slashes(s: &mut String) {
    if !s.contains("//") {
        return;
    }
    let mut prev_slash = false;
    s.retain(|c| {
        let keep = !(c == '/' && prev_slash);
        prev_slash = c == '/';
        keep
    });
}

/// Why an authority (`Host`, HTTP/2 `:authority`, the authority of an absolute-form target)
/// was refused. Each maps to HTTP 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("userinfo ('@') in authority")]
    Userinfo,
    #[error("empty host in authority")]
    EmptyHost,
    #[error("invalid character {0:?} in host")]
    InvalidHostChar(char),
    #[error("invalid IPv6 literal")]
    InvalidIpLiteral,
    #[error("invalid port")]
    InvalidPort,
}

/// Checks that `authority` is an RFC 3986 `host[:port]` before anything looks at it (routing,
/// authorization, the upstream's `Host`). A value that is not one is refused (400) rather
/// than judged as a raw string: `www.example.com@admin.example.com`,
/// `admin.example.com:abc`, `admin.example.com/x` or `admin.example.com x` are not
/// `admin.example.com` for `hosts: [admin.example.com]`, but URL parsers and `host:port`
/// splitting in the upstream (or a later proxy) read them as such.
///
/// * **host**: a reg-name of `ALPHA DIGIT - . _ ~` and the sub-delims `! $ & ' ( ) * + =`, or
///   an IPv6 literal in brackets (`[::1]`, no zone). Not accepted: userinfo (`@`, RFC 9110
///   §4.2.4 says to treat it as an error), `/ \ ? #`, whitespace, control characters and
///   non-ASCII; `%` (a percent-encoded reg-name gives one host two spellings); `,` and `;`
///   (list and parameter separators of `X-Forwarded-Host` / `Forwarded`, where the parts of
///   a value get read separately); `[ ]` outside a literal.
/// * **port**: optional; when the `:` is there it is followed by 1-5 digits, at most 65535
///   (RFC 3986 allows an empty port; Trellis refuses it, one spelling per authority).
/// * The host may not be empty or only dots (`:80`, `.`; without its trailing dots the host
///   would be empty, and [`normalize_authority`]'s form must stay valid). An authority that
///   is entirely empty (`Host:` with no value) is accepted: RFC 9112 §3.2 has clients send
///   exactly that for a target URI without an authority; it matches no host pattern.
pub fn validate_authority(authority: &str) -> Result<(), AuthorityError> {
    if authority.is_empty() {
        return Ok(());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err(AuthorityError::InvalidIpLiteral);
        };
        let literal = &rest[..end];
        if literal.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(if literal.contains('@') {
                AuthorityError::Userinfo
            } else {
                AuthorityError::InvalidIpLiteral
            });
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (&authority[..end + 2], Some(p)),
            None if after.is_empty() => (authority, None),
            None if after.contains('@') => return Err(AuthorityError::Userinfo),
            None => return Err(AuthorityError::InvalidIpLiteral),
        }
    } else {
        if authority.contains('@') {
            return Err(AuthorityError::Userinfo);
        }
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    // `.` or `...` is no host: without its trailing dots it is empty.
    if host.trim_end_matches('.').is_empty() {
        return Err(AuthorityError::EmptyHost);
    }
    if !host.starts_with('[') {
        if let Some(c) = host.chars().find(|&c| !is_reg_name_char(c)) {
            return Err(AuthorityError::InvalidHostChar(c));
        }
    }
    if let Some(p) = port {
        let digits = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits || p.parse::<u32>().map_or(true, |n| n > 65535) {
            return Err(AuthorityError::InvalidPort);
        }
    }
    Ok(())
}

/// Characters of a reg-name Trellis accepts (see [`validate_authority`]).
fn is_reg_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '_' | '~' | '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | '='
        )
}

/// `:authority` / `Host` as authorization and routing compare it: ASCII-lowercased, trailing
/// dots of the host removed, an empty port dropped (`Example.COM.:8080` → `example.com:8080`,
/// `a.com:` → `a.com`). The port is split off first, so the dots before it go too. Borrowed
/// when already normal.
pub fn normalize_authority(authority: &str) -> Cow<'_, str> {
    let (host, port) = split_authority(authority);
    let lower = !authority.bytes().any(|b| b.is_ascii_uppercase());
    if lower && host.len() + port.map_or(0, |p| p.len() + 1) == authority.len() {
        return Cow::Borrowed(authority);
    }
    let mut s = host.to_ascii_lowercase();
    if let Some(p) = port {
        s.push(':');
        s.push_str(p);
    }
    Cow::Owned(s)
}

fn host_part_len(authority: &str) -> usize {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority.len(), |i| i + 1);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h.len(),
        _ => authority.len(),
    }
}

/// Splits an authority into host (trailing dots removed, case kept) and port (`None` when
/// absent or empty). IPv6 literals keep their brackets.
pub fn split_authority(authority: &str) -> (&str, Option<&str>) {
    let n = host_part_len(authority);
    let host = &authority[..n];
    let port = authority[n..].strip_prefix(':').filter(|p| !p.is_empty());
    let host = if host.starts_with('[') {
        host
    } else {
        host.trim_end_matches('.')
    };
    (host, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(raw: &str) -> Result<String, PathError> {
        normalize_path(raw, Normalization::DecodeAndMergeSlashes).map(Cow::into_owned)
    }

    #[test]
    fn borrowed_when_unchanged() {
        assert!(matches!(
            normalize_path("/api/v1/users?x=1", Normalization::DecodeAndMergeSlashes),
            Ok(Cow::Borrowed("/api/v1/users?x=1"))
        ));
        assert!(matches!(
            normalize_path("/a#frag", Normalization::Base),
            Ok(Cow::Borrowed("/a"))
        ));
    }

    #[test]
    fn trellis_defaults() {
        assert_eq!(t("/public/../admin").unwrap(), "/admin");
        assert_eq!(t("//admin").unwrap(), "/admin");
        assert_eq!(t("/%2Fadmin").unwrap(), "/admin");
        assert_eq!(t("/x/..%2fadmin").unwrap(), "/admin");
        assert_eq!(t("/%61dmin").unwrap(), "/admin");
        assert_eq!(t("/admin?x=/../y").unwrap(), "/admin?x=/../y");
        assert_eq!(t("/.."), Ok("/".to_string()));
        assert_eq!(t("/a/b/.."), Ok("/a/".to_string()));
        assert_eq!(t("/a/./b/."), Ok("/a/b/".to_string()));
        assert_eq!(t("/caf\u{e9} x"), Ok("/caf%C3%A9%20x".to_string()));
        assert_eq!(t("/\\admin").unwrap(), "/admin");
        assert_eq!(t("/x\\..\\admin").unwrap(), "/admin");
        assert_eq!(t("/admin;x=y"), Err(PathError::PathParameter));
        assert_eq!(t("/admin%00"), Err(PathError::Nul));
        assert_eq!(t("/admin\0"), Err(PathError::Nul));
        assert_eq!(t("/admin\r\n"), Err(PathError::ControlChar(6)));
        assert_eq!(t("/a%zz"), Err(PathError::InvalidPercentEncoding(2)));
        assert_eq!(t("/a%4"), Err(PathError::InvalidPercentEncoding(2)));
        assert_eq!(t("admin"), Err(PathError::NotOriginForm));
        assert_eq!(t("*"), Err(PathError::NotOriginForm));
        assert_eq!(t("http://x/admin"), Err(PathError::NotOriginForm));
        assert_eq!(t(""), Err(PathError::Empty));
        assert_eq!(t("#x"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn strip_params() {
        let o = PathOptions {
            path_params: PathParams::Strip,
            ..PathOptions::default()
        };
        let n = |p| normalize_path_with(p, &o).unwrap().into_owned();
        assert_eq!(n("/admin;x=y"), "/admin");
        assert_eq!(n("/user/..;p/admin"), "/admin");
        assert_eq!(n("/a;b/c;d?q;r"), "/a/c?q;r");
    }

    #[test]
    fn reject_escaped_slashes() {
        let o = PathOptions {
            reject_escaped_slashes: true,
            ..PathOptions::trellis(Normalization::Base)
        };
        assert_eq!(
            normalize_path_with("/a%2fb", &o),
            Err(PathError::EscapedSlash)
        );
        assert_eq!(
            normalize_path_with("/a%5Cb", &o),
            Err(PathError::EscapedSlash)
        );
        let o = PathOptions {
            reject_escaped_slashes: true,
            ..PathOptions::default()
        };
        assert_eq!(normalize_path_with("/a%2fb", &o).unwrap(), "/a/b");
    }

    #[test]
    fn authority() {
        assert_eq!(normalize_authority("Example.COM."), "example.com");
        assert_eq!(normalize_authority("Example.COM.:8080"), "example.com:8080");
        assert!(matches!(
            normalize_authority("example.com:80"),
            Cow::Borrowed(_)
        ));
        assert_eq!(normalize_authority("[::1]:80"), "[::1]:80");
        assert_eq!(split_authority("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_authority("a.b.:"), ("a.b", None));
        assert_eq!(split_authority("::1"), ("::1", None));
        assert_eq!(
            normalize_authority("WWW.example.com.:80"),
            "www.example.com:80"
        );
        assert_eq!(
            normalize_authority("www.example.com..:80"),
            "www.example.com:80"
        );
        assert_eq!(normalize_authority("a.com:"), "a.com");
        assert_eq!(normalize_authority("a.com.:"), "a.com");
        assert!(matches!(
            normalize_authority("a.com"),
            Cow::Borrowed("a.com")
        ));
    }

    /// What routing and authorization rely on: every authority `validate_authority` accepts
    /// normalizes to a lower-case, still valid fixed point (all strings up to 5 characters
    /// over an alphabet of the interesting ones).
    #[test]
    fn normal_form_of_a_valid_authority_is_a_valid_fixed_point() {
        const ALPHABET: &[char] = &['a', 'B', '.', ':', '1', '[', ']', '@', ' ', 'f'];
        let mut current = vec![String::new()];
        for _ in 0..5 {
            let mut next = Vec::with_capacity(current.len() * ALPHABET.len());
            for s in &current {
                for &c in ALPHABET {
                    let mut t = s.clone();
                    t.push(c);
                    next.push(t);
                }
            }
            for a in &next {
                if validate_authority(a).is_err() {
                    continue;
                }
                let n = normalize_authority(a);
                assert!(!n.bytes().any(|b| b.is_ascii_uppercase()), "{a:?} -> {n:?}");
                assert_eq!(validate_authority(&n), Ok(()), "{a:?} -> {n:?}");
                assert_eq!(normalize_authority(&n), n, "{a:?}");
            }
            current = next;
        }
    }

    #[test]
    fn authority_validation() {
        for ok in [
            "",
            "example.com",
            "Example.COM.",
            "example.com:80",
            "example.com.:80",
            "a:0",
            "a:65535",
            "localhost",
            "10.0.0.1:8080",
            "[::1]",
            "[::1]:443",
            "[2001:db8::ffff:10.0.0.1]:80",
            "my_host-1.example~x",
            "*.example.com",
        ] {
            assert_eq!(validate_authority(ok), Ok(()), "{ok:?}");
        }
        use AuthorityError::*;
        for (bad, why) in [
            ("www.example.com@admin.example.com", Userinfo),
            ("user:pass@admin.example.com", Userinfo),
            ("@admin.example.com", Userinfo),
            ("[::1]@admin", Userinfo),
            ("admin.example.com:abc", InvalidPort),
            ("admin.example.com:", InvalidPort),
            ("admin.example.com:80:80", InvalidPort),
            ("admin.example.com:65536", InvalidPort),
            ("admin.example.com:000080", InvalidPort),
            ("admin.example.com:+80", InvalidPort),
            ("admin.example.com: 80", InvalidPort),
            ("[::1]:", InvalidPort),
            ("[::1]:x", InvalidPort),
            ("admin.example.com/x", InvalidHostChar('/')),
            ("admin.example.com\\x", InvalidHostChar('\\')),
            ("admin.example.com x", InvalidHostChar(' ')),
            ("admin.example.com\tx", InvalidHostChar('\t')),
            ("admin.example.com?x", InvalidHostChar('?')),
            ("admin.example.com#x", InvalidHostChar('#')),
            ("admin.example.com\0", InvalidHostChar('\0')),
            ("admin.example.com\x7f", InvalidHostChar('\x7f')),
            ("%61dmin.example.com", InvalidHostChar('%')),
            ("a.com,admin.example.com", InvalidHostChar(',')),
            ("a.com;admin.example.com", InvalidHostChar(';')),
            ("adm\u{ed}n.example.com", InvalidHostChar('\u{ed}')),
            (":80", EmptyHost),
            (":", EmptyHost),
            (".", EmptyHost),
            ("..:80", EmptyHost),
            ("[::1", InvalidIpLiteral),
            ("[admin.example.com]", InvalidIpLiteral),
            ("[fe80::1%25eth0]", InvalidIpLiteral),
            ("[::1]x", InvalidIpLiteral),
            ("[::1]]", InvalidIpLiteral),
            ("::1", EmptyHost),
            ("a]b", InvalidHostChar(']')),
        ] {
            assert_eq!(validate_authority(bad), Err(why), "{bad:?}");
        }
    }
}
