//! Fuzzes request-path normalization (`trellis_model::normalize`): arbitrary bytes, as `&str`
//! when valid UTF-8 and in their lossy form, through `normalize_path_with` at every
//! `Normalization` level with `PathOptions::trellis(level)` and `PathOptions::istio(level)`.
//!
//! Invariants (each one is promised by the module documentation of `normalize.rs`):
//! - nothing panics; the same input gives the same result twice; `normalize_path(raw, level)`
//!   equals `normalize_path_with(raw, &PathOptions::trellis(level))`;
//! - validation does not depend on the level (`check_path` "applies at every level"); every
//!   input Istio's options accept is accepted by Trellis's unless it has a `;` parameter;
//!   inputs that are empty, not origin-form or carry a raw control character are refused;
//! - on `Ok(out)`: `out` starts with `/`, has no raw control byte (`0x00-0x1F`, `0x7F`) and no
//!   `#`; the query string is returned untouched; at `NONE` the output is the input without
//!   its fragment;
//! - at `BASE` and above, in the path part: only RFC 3986 path characters (anything else is
//!   percent-encoded), every `%` starts a valid escape, no escape of an unreserved character
//!   is left, no `\` (rewritten to `/`), no `.` or `..` segment; at `MERGE_SLASHES` and above
//!   no `//`; at `DECODE_AND_MERGE_SLASHES` no `%2F`/`%5C` (any case);
//! - `MERGE_SLASHES` is `BASE` then merging runs of `/`; `DECODE_AND_MERGE_SLASHES` is
//!   `MERGE_SLASHES` after decoding `%2F`/`%5C` to `/`;
//! - with Trellis's options: no `;` in an accepted path, and normalizing the output again
//!   gives the same string (idempotence);
//! - `validate_authority` never panics; for an authority it accepts, `normalize_authority`
//!   gives a lower-case, still valid fixed point.
//!
//! Run (from `fuzz/`): `cargo +nightly fuzz run path_normalizer --sanitizer none`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_model::normalize::{
    normalize_authority, normalize_path, normalize_path_with, split_authority, validate_authority,
    Normalization, PathError, PathOptions, PathParams,
};

const LEVELS: [Normalization; 4] = [
    Normalization::None,
    Normalization::Base,
    Normalization::MergeSlashes,
    Normalization::DecodeAndMergeSlashes,
];

fn path_part(s: &str) -> &str {
    s.split_once('?').map_or(s, |(p, _)| p)
}

fn query_part(s: &str) -> Option<&str> {
    s.find('?').map(|i| &s[i..])
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 pchar plus `/` and `%`: what a normalized path may contain.
fn is_path_char(c: u8) -> bool {
    is_unreserved(c) || b"!$&'()*+,;=:@/%".contains(&c)
}

/// The escapes of `path` as `(index, decoded byte)`; `None` when one is malformed.
fn escapes(path: &str) -> Option<Vec<(usize, u8)>> {
    let b = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push((i, hi << 4 | lo));
            i += 3;
        } else {
            i += 1;
        }
    }
    Some(out)
}

fn merge_slashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev = false;
    for c in s.chars() {
        if !(c == '/' && prev) {
            out.push(c);
        }
        prev = c == '/';
    }
    out
}

/// `raw` with `%2F`/`%2f`/`%5C`/`%5c` in its path part replaced by `/` (escapes are scanned as
/// triplets, so `%252F` stays as it is).
fn decode_escaped_slashes(raw: &str) -> String {
    let target = raw.split_once('#').map_or(raw, |(t, _)| t);
    let path = path_part(target);
    let rest = &target[path.len()..];
    let b = path.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let t = &b[i + 1..i + 3];
            if t.eq_ignore_ascii_case(b"2f") || t.eq_ignore_ascii_case(b"5c") {
                out.push('/');
                i += 3;
                continue;
            }
        }
        // Push one char (paths may hold non-ASCII text).
        let c = path[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out.push_str(rest);
    out
}

fn check_ok(raw: &str, target: &str, level: Normalization, opts: &PathOptions, out: &str) {
    let ctx = || format!("raw={raw:?} level={level} opts={opts:?} out={out:?}");
    assert!(
        out.starts_with('/'),
        "output must start with '/': {}",
        ctx()
    );
    assert!(
        !out.bytes().any(|b| b < 0x20 || b == 0x7f),
        "raw control byte in output: {}",
        ctx()
    );
    assert!(!out.contains('#'), "'#' in output: {}", ctx());
    assert_eq!(
        query_part(out),
        query_part(target),
        "query string changed: {}",
        ctx()
    );
    if level == Normalization::None {
        assert_eq!(out, target, "NONE must only strip the fragment: {}", ctx());
    }
    let path = path_part(out);
    if opts.path_params == PathParams::Reject {
        assert!(!path.contains(';'), "';' accepted: {}", ctx());
    }
    if level >= Normalization::Base {
        assert!(
            path.bytes().all(is_path_char),
            "non-RFC 3986 byte left unencoded: {}",
            ctx()
        );
        assert!(!path.contains('\\'), "backslash left in path: {}", ctx());
        let esc = escapes(path).unwrap_or_else(|| panic!("malformed escape in output: {}", ctx()));
        for (i, v) in &esc {
            assert!(
                !is_unreserved(*v),
                "escaped unreserved character at {i} left: {}",
                ctx()
            );
            if level == Normalization::DecodeAndMergeSlashes {
                assert!(
                    *v != b'/' && *v != b'\\',
                    "escaped slash left at {i} under DECODE_AND_MERGE_SLASHES: {}",
                    ctx()
                );
            }
        }
        for seg in path.split('/').skip(1) {
            assert!(
                seg != "." && seg != "..",
                "dot segment {seg:?} left: {}",
                ctx()
            );
        }
        assert!(
            !path.contains("/./") && !path.contains("/../"),
            "dot segment left: {}",
            ctx()
        );
    }
    if level >= Normalization::MergeSlashes {
        assert!(!path.contains("//"), "'//' left after merging: {}", ctx());
    }
}

fn check(raw: &str) {
    let target = raw.split_once('#').map_or(raw, |(t, _)| t);
    let mut trellis_ok = Vec::new();
    let mut istio_ok = Vec::new();
    for level in LEVELS {
        for (trellis, opts) in [
            (true, PathOptions::trellis(level)),
            (false, PathOptions::istio(level)),
        ] {
            let r = normalize_path_with(raw, &opts);
            assert_eq!(
                r,
                normalize_path_with(raw, &opts),
                "not deterministic: {raw:?} {opts:?}"
            );
            if trellis {
                assert_eq!(
                    r,
                    normalize_path(raw, level),
                    "normalize_path differs: {raw:?}"
                );
            }
            match &r {
                Ok(out) => {
                    check_ok(raw, target, level, &opts, out);
                    if trellis {
                        let again = normalize_path_with(out, &opts);
                        assert_eq!(
                            again.as_deref(),
                            Ok(&**out),
                            "not idempotent: raw={raw:?} level={level} first={out:?}"
                        );
                    }
                }
                Err(e) => {
                    assert_eq!(e.status(), 400);
                    let _ = e.to_string();
                }
            }
            if trellis {
                trellis_ok.push(r.clone());
            } else {
                istio_ok.push(r.clone());
            }
        }
    }

    // Validation is level-independent.
    for results in [&trellis_ok, &istio_ok] {
        let first = results[0].as_ref().err().copied();
        for r in results.iter() {
            assert_eq!(
                r.as_ref().err().copied(),
                first,
                "validation depends on the level: {raw:?}: {results:?}"
            );
        }
    }
    // Trellis's options refuse exactly what Istio's do, plus `;` parameters.
    match (&trellis_ok[0], &istio_ok[0]) {
        (Ok(_), Err(e)) => panic!("Trellis accepts what Istio refuses ({e:?}): {raw:?}"),
        (Err(e), Ok(_)) => assert_eq!(*e, PathError::PathParameter, "{raw:?}"),
        (Err(a), Err(b)) if a != b => assert_eq!(*a, PathError::PathParameter, "{raw:?}"),
        _ => {}
    }
    // Inputs that must be refused.
    if target.is_empty() || !target.starts_with('/') {
        assert!(trellis_ok[0].is_err() && istio_ok[0].is_err(), "{raw:?}");
    }
    if target.bytes().any(|b| b < 0x20 || b == 0x7f) {
        assert!(istio_ok[0].is_err(), "control byte accepted: {raw:?}");
    }

    // MERGE_SLASHES = BASE then merge; DECODE_AND_MERGE_SLASHES = decode %2F/%5C, then
    // MERGE_SLASHES.
    for results in [&trellis_ok, &istio_ok] {
        let trellis = std::ptr::eq(results, &trellis_ok);
        if let (Ok(base), Ok(merged)) = (&results[1], &results[2]) {
            assert_eq!(
                path_part(merged),
                merge_slashes(path_part(base)),
                "MERGE_SLASHES is not BASE + merge: raw={raw:?} trellis={trellis}"
            );
        }
        if let Ok(dams) = &results[3] {
            let pre = decode_escaped_slashes(raw);
            let opts = if trellis {
                PathOptions::trellis(Normalization::MergeSlashes)
            } else {
                PathOptions::istio(Normalization::MergeSlashes)
            };
            let via_merge = normalize_path_with(&pre, &opts);
            assert_eq!(
                via_merge.as_deref(),
                Ok(&**dams),
                "DECODE_AND_MERGE_SLASHES is not %2F/%5C decoding + MERGE_SLASHES: raw={raw:?} pre={pre:?} trellis={trellis}"
            );
        }
    }
}

fn check_authority(a: &str) {
    let n = normalize_authority(a);
    let _ = split_authority(a);
    // Only authorities `validate_authority` accepts reach routing and authz (the proxy answers
    // 400 to the rest): for those the normal form is lower case, valid and a fixed point.
    if validate_authority(a).is_ok() {
        assert!(
            !n.bytes().any(|b| b.is_ascii_uppercase()),
            "upper case left: {a:?} -> {n:?}"
        );
        assert_eq!(
            validate_authority(&n),
            Ok(()),
            "normal form of a valid authority is invalid: {a:?} -> {n:?}"
        );
        assert_eq!(
            normalize_authority(&n),
            n,
            "normalize_authority not idempotent: {a:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let lossy = String::from_utf8_lossy(data);
    check(&lossy);
    check_authority(&lossy);
    if let Ok(s) = std::str::from_utf8(data) {
        // `lossy` is `s` then; also feed it with a leading '/' so that most inputs reach the
        // normalizer proper instead of stopping at "not origin-form".
        if !s.starts_with('/') {
            check(&format!("/{s}"));
        }
    }
});
