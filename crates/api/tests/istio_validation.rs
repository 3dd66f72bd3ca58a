//! Istio's own validation table tests (istio/istio `pkg/config/validation/validation_test.go`
//! and `pkg/config/validation/agent/validation_test.go`), re-expressed as YAML manifests and
//! run through the loader and `Resource::validate`, so Trellis accepts and rejects what
//! Istio's webhook does. Each case: a short name (Istio's where there is one), the kind, the
//! spec as YAML, and the outcome Istio gives. Where Trellis is deliberately stricter than
//! Istio, the case says so (`Stricter`) and why.

use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::Severity;

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// No error and no warning.
    Ok,
    /// No error (Istio's test checks errors only; warnings may come).
    Valid,
    /// No error; a warning whose message contains the text.
    Warn(&'static str),
    /// An error whose message (or field path) contains the text.
    Err(&'static str),
    /// Istio accepts this, Trellis rejects it on purpose (the reason sits in the case's
    /// comment); the error must contain the text.
    Stricter(&'static str),
}
use Expect::*;

struct Case {
    name: String,
    kind: &'static str,
    spec: String,
    expect: Expect,
}

fn c(name: &str, kind: &'static str, spec: &str, expect: Expect) -> Case {
    Case {
        name: name.to_string(),
        kind,
        spec: spec.to_string(),
        expect,
    }
}

/// Indents YAML text by `n` spaces (after dedenting it), to nest it under a key.
fn nest(text: &str, n: usize) -> String {
    dedent(text)
        .iter()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        "PeerAuthentication" | "RequestAuthentication" | "AuthorizationPolicy" => {
            "security.istio.io/v1"
        }
        "Telemetry" => "telemetry.istio.io/v1",
        _ => "networking.istio.io/v1",
    }
}

/// Strips the common indentation of the spec text.
fn dedent(text: &str) -> Vec<String> {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.get(indent..).unwrap_or("").to_string())
        .collect()
}

/// Loads one manifest made from the case and returns its diagnostics as
/// `(severity, "field: message")`.
fn run(case: &Case) -> Vec<(Severity, String)> {
    let mut text = format!(
        "apiVersion: {}\nkind: {}\nmetadata:\n  name: foo\n  namespace: bar\nspec:\n",
        api_version(case.kind),
        case.kind
    );
    for line in dedent(&case.spec) {
        text.push_str("  ");
        text.push_str(&line);
        text.push('\n');
    }
    let mut set = ResourceSet::default();
    set.add_text("case.yaml", &text, &LoadOptions::default());
    assert!(
        !set.resources.is_empty() || set.has_errors(),
        "{}: nothing loaded and no error\n{text}",
        case.name
    );
    set.diagnostics
        .iter()
        .map(|d| (d.severity, format!("{}: {}", d.field, d.message)))
        .collect()
}

fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let diags = run(case);
        let errors: Vec<&String> = diags
            .iter()
            .filter(|(s, _)| *s == Severity::Error)
            .map(|(_, m)| m)
            .collect();
        let warnings: Vec<&String> = diags
            .iter()
            .filter(|(s, _)| *s == Severity::Warning)
            .map(|(_, m)| m)
            .collect();
        let ok = match case.expect {
            Ok => errors.is_empty() && warnings.is_empty(),
            Valid => errors.is_empty(),
            Warn(w) => errors.is_empty() && warnings.iter().any(|m| m.contains(w)),
            Err(e) | Stricter(e) => errors.iter().any(|m| m.contains(e)),
        };
        if !ok {
            failures.push(format!(
                "{} [{}]: expected {:?}, got errors {errors:#?} warnings {warnings:#?}",
                case.name, case.kind, case.expect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Gateway (TestValidateGateway, TestValidateServer, TestValidateServerPort,
// TestValidateTlsOptions)

fn gateway_cases() -> Vec<Case> {
    vec![
        c("empty", "Gateway", "{}", Err("server")),
        c(
            "happy domain",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {name: name1, number: 7, protocol: http}
        "#,
            Ok,
        ),
        c(
            "~/host outside gateway-api semantics",
            "Gateway",
            r#"
        servers:
        - hosts: ["~/foo.bar.com"]
          port: {name: name1, number: 7, protocol: http}
        "#,
            Err("namespace"),
        ),
        c(
            "invalid port",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {name: name1, number: 66000, protocol: http}
        "#,
            Err("port"),
        ),
        c(
            "duplicate port names",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {name: foo, number: 80, protocol: http}
        - hosts: [scooby.doo.com]
          port: {name: foo, number: 8080, protocol: http}
        "#,
            Err("port name"),
        ),
        c(
            "invalid domain",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.*.bar.com]
          port: {number: 7, protocol: http}
        "#,
            Err("host"),
        ),
        c(
            "valid httpsRedirect",
            "Gateway",
            r#"
        servers:
        - hosts: [bar.com]
          port: {name: http, number: 80, protocol: http}
          tls: {httpsRedirect: true}
        "#,
            Ok,
        ),
        c(
            "httpsRedirect on an https server warns",
            "Gateway",
            r#"
        servers:
        - hosts: [bar.com]
          port: {name: https, number: 80, protocol: https}
          tls: {httpsRedirect: true}
        "#,
            Warn("httpsRedirect"),
        ),
        c(
            "partial wildcard on a TLS server",
            "Gateway",
            r#"
        servers:
        - hosts: ["*bar.com"]
          port: {name: tls, number: 443, protocol: tls}
          tls: {mode: ISTIO_MUTUAL}
        "#,
            Err("partial wildcard"),
        ),
        c(
            "server without hosts",
            "Gateway",
            r#"
        servers:
        - port: {name: http, number: 7, protocol: http}
        "#,
            Err("host"),
        ),
        c(
            "server without port",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
        "#,
            Err("port"),
        ),
        c(
            "happy ip host",
            "Gateway",
            r#"
        servers:
        - hosts: [1.1.1.1]
          port: {number: 7, name: http, protocol: http}
        "#,
            Ok,
        ),
        c(
            "happy ns/name",
            "Gateway",
            r#"
        servers:
        - hosts: [ns1/foo.bar.com]
          port: {number: 7, name: http, protocol: http}
        "#,
            Ok,
        ),
        c(
            "happy */name",
            "Gateway",
            r#"
        servers:
        - hosts: ["*/foo.bar.com"]
          port: {number: 7, name: http, protocol: http}
        "#,
            Ok,
        ),
        c(
            "happy ./name",
            "Gateway",
            r#"
        servers:
        - hosts: [./foo.bar.com]
          port: {number: 7, name: http, protocol: http}
        "#,
            Ok,
        ),
        c(
            "invalid domain ns/name format",
            "Gateway",
            r#"
        servers:
        - hosts: [ns1/foo.*.bar.com]
          port: {number: 7, name: http, protocol: http}
        "#,
            Err("host"),
        ),
        c(
            "invalid short name host",
            "Gateway",
            r#"
        servers:
        - hosts: [foo]
          port: {number: 7, name: http, protocol: http}
        "#,
            Err("short name"),
        ),
        c(
            "tls mode on plain http",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {number: 1, name: http, protocol: http}
          tls: {mode: SIMPLE, credentialName: x}
        "#,
            Err("TLS"),
        ),
        c(
            "no tls on HTTPS",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {number: 10000, name: https, protocol: https}
        "#,
            Err("TLS"),
        ),
        c(
            "bind ip",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {number: 7, name: http, protocol: http}
          bind: 127.0.0.1
        "#,
            Ok,
        ),
        c(
            "bind unix path with a port number",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {number: 7, name: http, protocol: http}
          bind: unix://@foobar
        "#,
            Err("unix"),
        ),
        c(
            "bind unix path",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {number: 0, name: http, protocol: http}
          bind: unix://@foobar
        "#,
            Ok,
        ),
        c(
            "bind bad ip",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {number: 0, name: http, protocol: http}
          bind: foo.bar
        "#,
            Err("IP"),
        ),
        c(
            "port with invalid protocol",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {number: 1, name: Henry, protocol: kafka}
        "#,
            Err("protocol"),
        ),
        c(
            "port number 1<<30",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {number: 1073741824, name: http, protocol: http}
        "#,
            Err("port number"),
        ),
        c(
            "port name, no number",
            "Gateway",
            r#"
        servers:
        - hosts: [foo.bar.com]
          port: {number: 0, name: Henry, protocol: http}
        "#,
            Err("port number"),
        ),
    ]
}

/// TestValidateTlsOptions: each `tls` block on an HTTPS server.
fn server_tls_cases() -> Vec<Case> {
    let tls = |name: &str, tls: &str, expect: Expect| {
        let spec = format!(
            "servers:\n- hosts: [foo.bar.com]\n  port: {{number: 443, name: https, protocol: HTTPS}}\n  tls:\n{}",
            nest(tls, 4)
        );
        Case {
            name: format!("tls: {name}"),
            kind: "Gateway",
            spec,
            expect,
        }
    };
    vec![
        tls("simple", "{mode: SIMPLE, serverCertificate: /c, privateKey: /k}", Ok),
        tls(
            "simple with client bundle",
            "{mode: SIMPLE, serverCertificate: /c, privateKey: /k, caCertificates: /ca}",
            Ok,
        ),
        tls("simple sds", "{mode: SIMPLE, credentialName: sds-name}", Ok),
        tls(
            "simple sds with server cert",
            "{mode: SIMPLE, serverCertificate: /c, privateKey: /k, credentialName: sds-name}",
            Err("credentialName"),
        ),
        tls("simple no server cert", "{mode: SIMPLE, privateKey: /k}", Err("serverCertificate")),
        tls("simple no private key", "{mode: SIMPLE, serverCertificate: /c}", Err("privateKey")),
        tls(
            "simple more than 2 certs",
            r#"
            mode: SIMPLE
            tlsCertificates:
            - {serverCertificate: /c1, privateKey: /k1}
            - {serverCertificate: /c2, privateKey: /k2}
            - {serverCertificate: /c3, privateKey: /k3}
            "#,
            Warn("up to 2 server certificates"),
        ),
        tls(
            "simple with both server cert and tls certs",
            r#"
            mode: SIMPLE
            serverCertificate: /c
            privateKey: /k
            tlsCertificates:
            - {serverCertificate: /c1, privateKey: /k1}
            - {serverCertificate: /c2, privateKey: /k2}
            "#,
            Err("tlsCertificates"),
        ),
        tls(
            "simple 2 certs with missing certificate",
            r#"
            mode: SIMPLE
            tlsCertificates:
            - {privateKey: /k1}
            - {serverCertificate: /c2, privateKey: /k2}
            "#,
            Err("serverCertificate"),
        ),
        tls(
            "simple 2 certs with missing private key",
            r#"
            mode: SIMPLE
            tlsCertificates:
            - {serverCertificate: /c1}
            - {serverCertificate: /c2, privateKey: /k2}
            "#,
            Err("privateKey"),
        ),
        tls(
            "simple sds no server cert",
            "{mode: SIMPLE, privateKey: /k, credentialName: sds-name}",
            Ok,
        ),
        tls(
            "mutual",
            "{mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca}",
            Ok,
        ),
        tls("mutual sds", "{mode: MUTUAL, caCertificates: /ca, credentialName: sds-name}", Ok),
        tls(
            "mutual sds with credential name and server cert",
            "{mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca, credentialName: sds-name}",
            Err("credentialName"),
        ),
        tls(
            "mutual sds with credential name and tls certs",
            r#"
            mode: MUTUAL
            caCertificates: /ca
            credentialName: sds-name
            tlsCertificates:
            - {serverCertificate: /c, privateKey: /k}
            "#,
            Err("credentialName"),
        ),
        tls(
            "mutual no server cert",
            "{mode: MUTUAL, privateKey: /k, caCertificates: /ca}",
            Err("serverCertificate"),
        ),
        tls(
            "credential names and certificates",
            "{mode: MUTUAL, serverCertificate: /c, privateKey: /k, credentialNames: [server-certs]}",
            Err("credentialNames"),
        ),
        tls(
            "credential names and tls certificates",
            r#"
            mode: MUTUAL
            credentialNames: [server-certs]
            tlsCertificates:
            - {serverCertificate: /c, privateKey: /k, caCertificates: /ca}
            "#,
            Err("credentialNames"),
        ),
        tls(
            "only tls certificates",
            r#"
            mode: MUTUAL
            caCertificates: /ca
            tlsCertificates:
            - {serverCertificate: /c, privateKey: /k}
            "#,
            Ok,
        ),
        tls(
            "mutual no client CA bundle",
            "{mode: MUTUAL, serverCertificate: /c, privateKey: /k}",
            Err("CA"),
        ),
        tls("mutual no certs: server", "{mode: MUTUAL}", Err("serverCertificate")),
        tls("mutual no certs: key", "{mode: MUTUAL}", Err("privateKey")),
        tls("mutual no certs: CA", "{mode: MUTUAL}", Err("CA")),
        tls(
            "mutual more than 2 certs",
            r#"
            mode: MUTUAL
            caCertificates: /ca
            tlsCertificates:
            - {serverCertificate: /c1, privateKey: /k1}
            - {serverCertificate: /c2, privateKey: /k2}
            - {serverCertificate: /c3, privateKey: /k3}
            "#,
            Warn("up to 2 server certificates"),
        ),
        tls(
            "mutual 2 certs with missing CA certificate",
            r#"
            mode: MUTUAL
            tlsCertificates:
            - {serverCertificate: /c1, privateKey: /k1}
            - {serverCertificate: /c2, privateKey: /k2}
            "#,
            Err("CA"),
        ),
        tls("optional mutual no certs: server", "{mode: OPTIONAL_MUTUAL}", Err("serverCertificate")),
        tls("optional mutual no certs: CA", "{mode: OPTIONAL_MUTUAL}", Err("CA")),
        tls(
            "pass through sds no certs",
            "{mode: PASSTHROUGH, credentialName: sds-name}",
            Warn("does not use certificates"),
        ),
        tls(
            "pass through crl",
            "{mode: PASSTHROUGH, caCrl: scrl}",
            Warn("does not use certificates"),
        ),
        tls("istio_mutual no certs", "{mode: ISTIO_MUTUAL}", Ok),
        tls(
            "istio_mutual with server cert",
            "{mode: ISTIO_MUTUAL, serverCertificate: /c}",
            Err("serverCertificate"),
        ),
        tls(
            "istio_mutual with private key",
            "{mode: ISTIO_MUTUAL, privateKey: /k}",
            Err("privateKey"),
        ),
        tls(
            "istio_mutual with client bundle",
            "{mode: ISTIO_MUTUAL, caCertificates: /ca}",
            Err("caCertificates"),
        ),
        tls(
            "istio_mutual with credential name",
            "{mode: ISTIO_MUTUAL, credentialName: some-cred}",
            Err("credentialName"),
        ),
        tls(
            "invalid cipher suites",
            "{mode: SIMPLE, credentialName: sds-name, cipherSuites: [not-a-cipher-suite]}",
            Warn("not-a-cipher-suite"),
        ),
        tls(
            "valid cipher suites",
            "{mode: SIMPLE, credentialName: sds-name, cipherSuites: [ECDHE-ECDSA-AES128-SHA]}",
            Ok,
        ),
        tls(
            "cipher suites operations",
            "{mode: SIMPLE, credentialName: sds-name, cipherSuites: [-ECDHE-ECDSA-AES128-SHA]}",
            Ok,
        ),
        tls(
            "duplicate cipher suites",
            "{mode: SIMPLE, credentialName: sds-name, cipherSuites: [ECDHE-ECDSA-AES128-SHA, ECDHE-ECDSA-AES128-SHA]}",
            Warn("ECDHE-ECDSA-AES128-SHA"),
        ),
        tls(
            "invalid cipher suites with invalid config",
            "{mode: SIMPLE, cipherSuites: [not-a-cipher-suite]}",
            Err("privateKey"),
        ),
        tls("crl specified for SIMPLE TLS", "{mode: SIMPLE, caCrl: crl}", Err("CRL")),
        tls(
            "crl specified with credentialName",
            "{mode: SIMPLE, caCrl: crl, credentialName: credential}",
            Ok,
        ),
        tls(
            "mutual no private key",
            "{mode: MUTUAL, serverCertificate: /c, caCertificates: /ca}",
            Err("privateKey"),
        ),
        tls(
            "with CredentialNames",
            "{mode: MUTUAL, credentialNames: [credential1, credential2]}",
            Ok,
        ),
        tls(
            "TLS 1.0 minimum without ciphers warns",
            "{mode: SIMPLE, credentialName: x, minProtocolVersion: TLSV1_0}",
            Warn("cipher"),
        ),
    ]
}

#[test]
fn gateway() {
    check(&gateway_cases());
}

#[test]
fn gateway_server_tls() {
    check(&server_tls_cases());
}

// ---------------------------------------------------------------------------------------
// VirtualService http routes (TestValidateCORSPolicy, TestValidateHTTPStatus,
// TestValidateHTTPFaultInjectionAbort/Delay, TestValidateHTTPRetry, TestValidateHTTPRewrite,
// TestValidateUriRegexRewrite, TestValidateHTTPRedirect, TestValidateHTTPDirectResponse)

/// One http rule (YAML of the list item) in a VirtualService for `foo.bar`.
fn http(name: &str, rule: &str, expect: Expect) -> Case {
    let lines = dedent(rule);
    let mut spec = String::from("hosts: [foo.bar]\nhttp:\n");
    for (i, l) in lines.iter().enumerate() {
        spec.push_str(if i == 0 { "- " } else { "  " });
        spec.push_str(l);
        spec.push('\n');
    }
    Case {
        name: format!("http: {name}"),
        kind: "VirtualService",
        spec,
        expect,
    }
}

/// An http rule routing to `foo.bar` with `extra` (YAML) beside the route.
fn routed(name: &str, extra: &str, expect: Expect) -> Case {
    http(
        name,
        &format!(
            "route:\n- destination: {{host: foo.bar}}\n{}",
            nest(extra, 0)
        ),
        expect,
    )
}

fn http_route_cases() -> Vec<Case> {
    let cors = |origins: &str, methods: &str, expose: &str, max_age: &str| {
        format!(
            "corsPolicy:\n  allowOrigins: {origins}\n  allowMethods: {methods}\n  allowHeaders: [header1, header2]\n  exposeHeaders: {expose}\n  maxAge: {max_age}\n"
        )
    };
    let abort = |body: &str| format!("fault:\n  abort: {body}\n");
    let delay = |body: &str| format!("fault:\n  delay: {body}\n");
    let retries = |body: &str| format!("retries: {body}\n");
    let big_body = |n: usize| {
        format!(
            "directResponse:\n  status: 200\n  body:\n    string: {}\n",
            "a".repeat(n)
        )
    };
    let big_bytes = |n: usize| {
        // base64 of n bytes of 'a' without padding concerns: 3 bytes -> "YWFh".
        format!(
            "directResponse:\n  status: 200\n  body:\n    bytes: {}\n",
            "YWFh".repeat(n / 3)
        )
    };
    vec![
        routed(
            "cors valid",
            &cors("[]", "[GET, POST]", "[header3]", "2s"),
            Ok,
        ),
        routed(
            "cors bad method",
            &cors("[]", "[GET, PUTT]", "[header3]", "2s"),
            Err("PUTT"),
        ),
        routed(
            "cors bad header",
            &cors("[]", "[GET, POST]", "[\"\"]", "2s"),
            Err("header"),
        ),
        routed(
            "cors bad max age",
            &cors("[]", "[GET, POST]", "[header3]", "2.000000042s"),
            Err("maxAge"),
        ),
        routed(
            "cors empty matchType allowOrigins",
            &cors(
                "[{exact: \"\"}, {prefix: \"\"}, {regex: \"\"}]",
                "[GET, POST]",
                "[header3]",
                "2s",
            ),
            Err("allowOrigins"),
        ),
        routed(
            "cors non empty matchType allowOrigins",
            &cors(
                "[{exact: exact}, {prefix: prefix}, {regex: regex}]",
                "[GET, POST]",
                "[header3]",
                "2s",
            ),
            Ok,
        ),
        routed(
            "abort status 0",
            &abort("{httpStatus: 0}"),
            Err("httpStatus"),
        ),
        routed(
            "abort status -100",
            &abort("{httpStatus: -100}"),
            Err("httpStatus"),
        ),
        // Stricter: Istio's validateHTTPStatus allows 600, but Envoy's abort http_status is
        // [200, 600) and the listener would be rejected; Trellis refuses it up front.
        routed(
            "abort status 600",
            &abort("{httpStatus: 600}"),
            Stricter("200-599"),
        ),
        routed(
            "abort status 601",
            &abort("{httpStatus: 601}"),
            Err("httpStatus"),
        ),
        routed(
            "abort valid",
            &abort("{percentage: {value: 20}, httpStatus: 200}"),
            Ok,
        ),
        routed("abort valid default", &abort("{httpStatus: 200}"), Ok),
        routed(
            "abort invalid http status",
            &abort("{percentage: {value: 20}, httpStatus: 9000}"),
            Err("httpStatus"),
        ),
        routed(
            "abort invalid low http status",
            &abort("{percentage: {value: 20}, httpStatus: 100}"),
            Err("httpStatus"),
        ),
        routed(
            "abort valid percentage",
            &abort("{percentage: {value: 0.001}, httpStatus: 200}"),
            Ok,
        ),
        routed(
            "abort invalid fractional percent",
            &abort("{percentage: {value: -10.0}, httpStatus: 200}"),
            Err("percentage"),
        ),
        routed(
            "abort grpc valid",
            &abort("{percentage: {value: 20}, grpcStatus: DEADLINE_EXCEEDED}"),
            Ok,
        ),
        routed(
            "abort grpc valid default percentage",
            &abort("{grpcStatus: DEADLINE_EXCEEDED}"),
            Ok,
        ),
        routed(
            "abort grpc invalid status",
            &abort("{percentage: {value: 20}, grpcStatus: BAD_STATUS}"),
            Err("BAD_STATUS"),
        ),
        routed(
            "abort grpc valid percentage",
            &abort("{percentage: {value: 0.001}, grpcStatus: INTERNAL}"),
            Ok,
        ),
        routed(
            "abort grpc invalid fractional percent",
            &abort("{percentage: {value: -10.0}, grpcStatus: DEADLINE_EXCEEDED}"),
            Err("percentage"),
        ),
        routed(
            "delay valid fixed",
            &delay("{percentage: {value: 20}, fixedDelay: 3s}"),
            Ok,
        ),
        routed("delay valid default", &delay("{fixedDelay: 3s}"), Ok),
        routed(
            "delay invalid percent",
            &delay("{percentage: {value: 101}, fixedDelay: 3s}"),
            Err("percentage"),
        ),
        routed(
            "delay invalid delay",
            &delay("{percentage: {value: 20}, fixedDelay: 3.000000042s}"),
            Err("fixedDelay"),
        ),
        routed(
            "delay valid fractional percentage",
            &delay("{percentage: {value: 0.001}, fixedDelay: 3s}"),
            Ok,
        ),
        routed(
            "delay invalid fractional percentage",
            &delay("{percentage: {value: -10.0}, fixedDelay: 3s}"),
            Err("percentage"),
        ),
        routed(
            "retry valid",
            &retries("{attempts: 10, perTryTimeout: 2s, retryOn: \"5xx,gateway-error\"}"),
            Ok,
        ),
        routed("retry disable retries", &retries("{attempts: 0}"), Ok),
        routed(
            "retry policy configured but attempts set to zero",
            &retries("{attempts: 0, perTryTimeout: 2s, retryOn: \"5xx,gateway-error\"}"),
            Err("attempts"),
        ),
        routed("retry valid default", &retries("{attempts: 10}"), Ok),
        routed(
            "retry valid http status retryOn",
            &retries("{attempts: 10, perTryTimeout: 2s, retryOn: \"503,connect-failure\"}"),
            Ok,
        ),
        routed(
            "retry invalid attempts",
            &retries("{attempts: -1, perTryTimeout: 2s}"),
            Err("attempts"),
        ),
        routed(
            "retry invalid timeout",
            &retries("{attempts: 10, perTryTimeout: 2.000000001s}"),
            Err("perTryTimeout"),
        ),
        routed(
            "retry timeout too small",
            &retries("{attempts: 10, perTryTimeout: 0.000000999s}"),
            Err("perTryTimeout"),
        ),
        routed(
            "retry invalid backoff",
            &retries("{attempts: 10, backoff: 0.000000999s}"),
            Err("backoff"),
        ),
        routed(
            "retry invalid policy retryOn",
            &retries("{attempts: 10, perTryTimeout: 2s, retryOn: \"5xx,invalid policy\"}"),
            Err("invalid policy"),
        ),
        routed(
            "retry invalid http status retryOn",
            &retries("{attempts: 10, perTryTimeout: 2s, retryOn: \"600,connect-failure\"}"),
            Err("600"),
        ),
        routed(
            "retry retryRemoteLocalities but attempts zero",
            &retries("{attempts: 0, retryRemoteLocalities: false}"),
            Err("attempts"),
        ),
        routed(
            "rewrite uri and authority",
            "rewrite: {uri: /path/to/resource, authority: foobar.org}",
            Ok,
        ),
        routed("rewrite uri", "rewrite: {uri: /path/to/resource}", Ok),
        routed("rewrite authority", "rewrite: {authority: foobar.org}", Ok),
        routed(
            "rewrite uriRegexRewrite",
            r#"rewrite: {uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$", rewrite: '\2/instance/\1'}}"#,
            Ok,
        ),
        routed(
            "rewrite uriRegexRewrite and authority",
            r#"rewrite: {authority: foobar.org, uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$", rewrite: '\2/instance/\1'}}"#,
            Ok,
        ),
        routed(
            "rewrite uriRegexRewrite and uri",
            r#"rewrite: {uri: /path/to/resource, uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$", rewrite: '\2/instance/\1'}}"#,
            Err("uriRegexRewrite"),
        ),
        routed("rewrite empty", "rewrite: {}", Err("rewrite")),
        routed(
            "uriRegexRewrite missing match",
            r#"rewrite: {uriRegexRewrite: {rewrite: '\2/instance/\1'}}"#,
            Err("match"),
        ),
        routed(
            "uriRegexRewrite missing rewrite",
            r#"rewrite: {uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$"}}"#,
            Err("rewrite"),
        ),
        routed(
            "uriRegexRewrite invalid regex",
            r#"rewrite: {uriRegexRewrite: {match: "[", rewrite: "["}}"#,
            Err("regex"),
        ),
        http(
            "redirect empty uri and authority",
            "redirect: {uri: \"\", authority: \"\"}",
            Err("redirect"),
        ),
        http(
            "redirect code too small",
            "redirect: {uri: t, redirectCode: 299}",
            Err("redirectCode"),
        ),
        http(
            "redirect code too large",
            "redirect: {uri: t, redirectCode: 400}",
            Err("redirectCode"),
        ),
        http("redirect empty authority", "redirect: {uri: t}", Ok),
        http("redirect empty uri", "redirect: {authority: t}", Ok),
        http(
            "redirect empty redirect code",
            "redirect: {uri: t, authority: t, redirectCode: 0}",
            Ok,
        ),
        http(
            "redirect normal",
            "redirect: {uri: t, authority: t, redirectCode: 308}",
            Ok,
        ),
        http(
            "direct response status 200",
            "directResponse: {status: 200}",
            Ok,
        ),
        http(
            "direct response status 199",
            "directResponse: {status: 199}",
            Err("status"),
        ),
        http(
            "direct response status 601",
            "directResponse: {status: 601}",
            Err("status"),
        ),
        http(
            "direct response string body",
            "directResponse: {status: 200, body: {string: hello}}",
            Ok,
        ),
        http(
            "direct response string body over 100kb",
            &big_body(101 * 1024),
            Warn("body"),
        ),
        http(
            "direct response string body over 1mb",
            &big_body(2 * 1024 * 1024),
            Err("body"),
        ),
        http(
            "direct response bytes body",
            "directResponse: {status: 200, body: {bytes: aGVsbG8=}}",
            Ok,
        ),
        http(
            "direct response bytes body over 100kb",
            &big_bytes(100 * 1024 + 3),
            Warn("body"),
        ),
        http(
            "direct response bytes body over 1mb",
            &big_bytes(1024 * 1024 + 3),
            Err("body"),
        ),
    ]
}

#[test]
fn virtual_service_http_routes() {
    check(&http_route_cases());
}

// TestValidateDestination, TestValidateHTTPRoute, TestValidateRouteDestination

fn tcp(name: &str, route: &str, expect: Expect) -> Case {
    Case {
        name: format!("tcp: {name}"),
        kind: "VirtualService",
        spec: format!("hosts: [foo.bar]\ntcp:\n- route:\n{}", nest(route, 2)),
        expect,
    }
}

fn http_route_more_cases() -> Vec<Case> {
    let headers = |ops: &str| {
        format!(
            "route:\n- destination: {{host: foo.baz}}\n  headers:\n{}",
            nest(ops, 4)
        )
    };
    vec![
        http("destination empty", "route: [{destination: {}}]", Err("host")),
        http("destination simple", "route: [{destination: {host: foo.bar}}]", Ok),
        http(
            "destination full",
            "route: [{destination: {host: foo.bar, subset: shiny, port: {number: 5000}}}]",
            Ok,
        ),
        http(
            "destination unnumbered port selector",
            "route: [{destination: {host: foo.bar, subset: shiny, port: {}}}]",
            Err("port"),
        ),
        http("empty", "{}", Err("route")),
        http("simple", "route: [{destination: {host: foo.baz}}]", Valid),
        http("no destination", "route: [{weight: 100}]", Err("destination")),
        http(
            "weighted",
            "route: [{destination: {host: foo.baz.south}, weight: 25}, {destination: {host: foo.baz.east}, weight: 75}]",
            Valid,
        ),
        http(
            "total weight > 100",
            "route: [{destination: {host: foo.baz.south}, weight: 550}, {destination: {host: foo.baz.east}, weight: 500}]",
            Valid,
        ),
        http(
            "total weight < 100",
            "route: [{destination: {host: foo.baz.south}, weight: 49}, {destination: {host: foo.baz.east}, weight: 50}]",
            Valid,
        ),
        http("simple redirect", "redirect: {uri: /lerp, authority: foo.biz}", Valid),
        http(
            "conflicting redirect and route",
            "route: [{destination: {host: foo.baz}}]\nredirect: {uri: /lerp, authority: foo.biz}",
            Err("redirect"),
        ),
        http(
            "valid headers",
            &headers(
                r#"
                request: {add: {name: ""}, set: {name: ""}, remove: [name]}
                response: {add: {name: ""}, set: {name: ""}, remove: [name]}
                "#,
            ),
            Valid,
        ),
        http("empty header name - request add", &headers(r#"request: {add: {"": value}}"#), Err("header")),
        http("empty header name - request set", &headers(r#"request: {set: {"": value}}"#), Err("header")),
        http("empty header name - request remove", &headers(r#"request: {remove: [""]}"#), Err("header")),
        http("empty header name - response add", &headers(r#"response: {add: {"": value}}"#), Err("header")),
        http("empty header name - response set", &headers(r#"response: {set: {"": value}}"#), Err("header")),
        http(
            "empty header name - response remove",
            &headers(r#"response: {remove: [""]}"#),
            Err("header"),
        ),
        http("envoy escaped % set", &headers(r#"response: {set: {i-love-istio: "100%%"}}"#), Valid),
        http("envoy variable set", &headers(r#"response: {set: {name: "%HOSTNAME%"}}"#), Valid),
        http(
            "envoy unescaped % set",
            &headers(r#"response: {set: {name: "abcd%oijasodifj"}}"#),
            Err("%"),
        ),
        http(
            "envoy escaped % add",
            &headers(r#"response: {add: {i-love-istio: "100%% and more"}}"#),
            Valid,
        ),
        http("envoy variable add", &headers(r#"response: {add: {name: "hello %HOSTNAME%"}}"#), Valid),
        http(
            "envoy unescaped % add",
            &headers(r#"response: {add: {name: "abcd%oijasodifj"}}"#),
            Err("%"),
        ),
        http(
            "null header match",
            "route: [{destination: {host: foo.bar}}]\nmatch: [{headers: {header: null}}]",
            Err("header"),
        ),
        http(
            "empty prefix header match",
            "route: [{destination: {host: foo.bar}}]\nmatch: [{headers: {emptyprefix: {prefix: \"\"}}}]",
            Err("emptyprefix"),
        ),
        http("nil match", "route: [{destination: {host: foo.bar}}]", Valid),
        http(
            "invalid mirror percent",
            "route: [{destination: {host: foo.bar}}]\nmirror: {host: foo.baz}\nmirrorPercent: 101",
            Err("mirrorPercent"),
        ),
        http(
            "invalid mirror percentage",
            "route: [{destination: {host: foo.bar}}]\nmirror: {host: foo.baz}\nmirrorPercentage: {value: 101}",
            Err("percentage"),
        ),
        http(
            "valid mirror percentage",
            "route: [{destination: {host: foo.bar}}]\nmirror: {host: foo.baz}\nmirrorPercentage: {value: 1}",
            Valid,
        ),
        http(
            "negative mirror percentage",
            "route: [{destination: {host: foo.bar}}]\nmirror: {host: foo.baz}\nmirrorPercentage: {value: -1}",
            Err("percentage"),
        ),
        http(
            "mirrors without destination",
            "route: [{destination: {host: foo.bar}}]\nmirrors: [{percentage: {value: 5}}]",
            Err("destination"),
        ),
        http(
            "mirrors invalid mirror percentage",
            "route: [{destination: {host: foo.bar}}]\nmirrors: [{destination: {host: foo.baz}}, {destination: {host: foo.baz}, percentage: {value: 101}}]",
            Err("percentage"),
        ),
        http(
            "mirrors valid mirror percentage",
            "route: [{destination: {host: foo.bar}}]\nmirrors: [{destination: {host: foo.baz}, percentage: {value: 1}}, {destination: {host: foo.baz}, percentage: {value: 50}}]",
            Valid,
        ),
        http(
            "mirrors negative mirror percentage",
            "route: [{destination: {host: foo.bar}}]\nmirrors: [{destination: {host: foo.baz}, percentage: {value: -1}}]",
            Err("percentage"),
        ),
        http(
            "conflicting mirror and mirrors",
            "route: [{destination: {host: foo.baz}}]\nmirror: {host: foo.baz}\nmirrors: [{destination: {host: foo.bar}}]",
            Err("mirror"),
        ),
        tcp("simple", "- destination: {host: foo.baz}", Valid),
        tcp("wildcard dash", "- destination: {host: \"*-foo.baz\"}", Valid),
        tcp("wildcard prefix", "- destination: {host: \"*foo.baz\"}", Valid),
        tcp("wildcard", "- destination: {host: \"*\"}", Err("host")),
        tcp("bad wildcard", "- destination: {host: \"foo.*\"}", Err("host")),
        tcp("bad fqdn", "- destination: {host: default/baz}", Err("host")),
        tcp("no destination", "- weight: 100", Err("destination")),
        tcp(
            "weighted",
            "- {destination: {host: foo.baz.south}, weight: 25}\n- {destination: {host: foo.baz.east}, weight: 75}",
            Valid,
        ),
        tcp(
            "weight < 0",
            "- {destination: {host: foo.baz.south}, weight: 5}\n- {destination: {host: foo.baz.east}, weight: -1}",
            Err("weight"),
        ),
        tcp(
            "total weight > 100",
            "- {destination: {host: foo.baz.south}, weight: 550}\n- {destination: {host: foo.baz.east}, weight: 500}",
            Valid,
        ),
        tcp(
            "total weight = 100",
            "- {destination: {host: foo.baz.south}, weight: 100}\n- {destination: {host: foo.baz.east}, weight: 0}",
            Valid,
        ),
        tcp("weight = 0", "- {destination: {host: foo.baz.south}, weight: 0}", Valid),
        tcp(
            "total weight = 0 with multi RouteDestination",
            "- {destination: {host: foo.baz.south}, weight: 0}\n- {destination: {host: foo.baz.east}, weight: 0}",
            Err("weight"),
        ),
    ]
}

/// TestValidateHTTPHeaderValue, as response header values.
fn header_value_cases() -> Vec<Case> {
    let value = |v: &str, expect: Expect| {
        http(
            &format!("header value {v:?}"),
            &format!(
                "route: [{{destination: {{host: foo.baz}}}}]\nheaders: {{response: {{set: {{x-v: '{v}'}}}}}}"
            ),
            expect,
        )
    };
    vec![
        value("foo", Ok),
        value("%HOSTNAME%", Ok),
        value("100%%", Ok),
        value("prefix %HOSTNAME% suffix", Ok),
        value("%DOWNSTREAM_PEER_CERT_V_END(%b %d %H:%M:%S %Y %Z)%", Ok),
        value("%DYNAMIC_METADATA(com.test.my_filter)%", Ok),
        value("%REQ(x-foo):10%", Ok),
        value("%START_TIME%%", Err("header value")),
        value("abc%123", Err("header value")),
        value("%hostname%", Err("header value")),
    ]
}

#[test]
fn header_values() {
    check(&header_value_cases());
}

#[test]
fn virtual_service_http_and_tcp_routes() {
    check(&http_route_more_cases());
}

// TestValidateVirtualService, TestValidateWorkloadEntry, TestValidateWorkloadGroup

fn virtual_service_cases() -> Vec<Case> {
    let vs = |name: &str, spec: &str, expect: Expect| c(name, "VirtualService", spec, expect);
    let route = "http:\n- route: [{destination: {host: foo.baz}}]";
    vec![
        vs("simple", &format!("hosts: [foo.bar]\n{route}"), Ok),
        vs(
            "allow sni based domains",
            r#"
            hosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local]
            gateways: [ns1/gateway]
            tls:
            - match: [{sniHosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local]}]
              route: [{destination: {host: istio.istio-system.svc.cluster.local}}]
            "#,
            Ok,
        ),
        vs("duplicate hosts", &format!("hosts: [\"*.foo.bar\", \"*.bar\"]\n{route}"), Err("hosts")),
        vs(
            "with no destination",
            "hosts: [\"*.foo.bar\"]\nhttp:\n- route: [{}]",
            Err("destination"),
        ),
        vs(
            "destination without host",
            "hosts: [\"*.foo.bar\"]\nhttp:\n- route: [{destination: {}}]",
            Err("host"),
        ),
        vs("delegate with no hosts", route, Ok),
        vs("bad host", &format!("hosts: [foo.ba!r]\n{route}"), Err("foo.ba!r")),
        vs("no tcp or http routing", "hosts: [foo.bar]", Err("http")),
        vs(
            "bad gateway",
            &format!("hosts: [foo.bar]\ngateways: [b@dgateway]\n{route}"),
            Err("gateway"),
        ),
        vs(
            "FQDN for gateway",
            &format!("hosts: [foo.bar]\ngateways: [gateway.example.com]\n{route}"),
            Warn("gateway"),
        ),
        vs(
            "namespace/name for gateway",
            &format!("hosts: [foo.bar]\ngateways: [ns1/gateway]\n{route}"),
            Ok,
        ),
        vs(
            "namespace/* for gateway",
            &format!("hosts: [foo.bar]\ngateways: [\"ns1/*\"]\n{route}"),
            Err("gateway"),
        ),
        vs(
            "*/name for gateway",
            &format!("hosts: [foo.bar]\ngateways: [\"*/gateway\"]\n{route}"),
            Err("gateway"),
        ),
        vs("wildcard for mesh gateway", &format!("hosts: [\"*\"]\n{route}"), Err("*")),
        vs(
            "wildcard for non-mesh gateway",
            &format!("hosts: [\"*\"]\ngateways: [somegateway]\n{route}"),
            Ok,
        ),
        vs(
            "missing tcp route",
            "hosts: [foo.bar]\ntcp:\n- match: [{port: 999}]",
            Err("route"),
        ),
        vs(
            "missing tls route",
            "hosts: [foo.bar]\ntls:\n- match: [{port: 999, sniHosts: [foo.bar]}]",
            Err("route"),
        ),
        vs(
            "deprecated mirror",
            "hosts: [foo.bar]\ngateways: [ns1/gateway]\nhttp:\n- mirrorPercent: 5\n  route: [{destination: {host: foo.baz}}]",
            Warn("mirror"),
        ),
        vs(
            "set authority",
            r#"
            hosts: [foo.bar]
            http:
            - headers: {request: {set: {":authority": foo}}}
              route: [{destination: {host: foo.baz}}]
            "#,
            Ok,
        ),
        vs(
            "set authority in destination",
            r#"
            hosts: [foo.bar]
            http:
            - route: [{destination: {host: foo.baz}, headers: {request: {set: {":authority": foo}}}}]
            "#,
            Ok,
        ),
        vs(
            "set authority in rewrite and header",
            r#"
            hosts: [foo.bar]
            http:
            - headers: {request: {set: {":authority": foo}}}
              rewrite: {authority: bar}
              route: [{destination: {host: foo.baz}}]
            "#,
            Err("authority"),
        ),
        vs(
            "non-method-get",
            r#"
            hosts: [foo.bar]
            http:
            - route: [{destination: {host: foo.baz}}]
              match:
              - uri: {prefix: /api/v1/product}
              - uri: {prefix: /api/v1/products}
                method: {exact: GET}
            "#,
            // Istio's validation warns (VirtualServiceIneffectiveMatch); Trellis reports that
            // from `trellis analyze` as IST0131 (crates/analyze), not as a schema warning.
            Ok,
        ),
        vs(
            "uri-with-prefix-exact",
            r#"
            hosts: [foo.bar]
            http:
            - route: [{destination: {host: foo.baz}}]
              match:
              - uri: {prefix: /}
              - uri: {exact: /}
                method: {exact: GET}
            "#,
            Ok,
        ),
        vs(
            "jwt claim route without gateway",
            r#"
            hosts: [foo.bar]
            gateways: [mesh]
            http:
            - route: [{destination: {host: foo.baz}}]
              match:
              - uri: {prefix: /}
                headers: {"@request.auth.claims.foo": {exact: bar}}
            "#,
            Err("claims"),
        ),
        vs(
            "ip address as sni host",
            r#"
            hosts: [foo.bar]
            tls:
            - route: [{destination: {host: foo.baz}}]
              match: [{port: 999, sniHosts: [1.1.1.1]}]
            "#,
            Warn("1.1.1.1"),
        ),
        vs(
            "invalid wildcard as sni host",
            r#"
            hosts: [foo.bar]
            tls:
            - route: [{destination: {host: foo.baz}}]
              match: [{port: 999, sniHosts: [foo.*.com]}]
            "#,
            Err("foo.*.com"),
        ),
    ]
}

fn workload_cases() -> Vec<Case> {
    let we = |name: &str, spec: &str, expect: Expect| c(name, "WorkloadEntry", spec, expect);
    let wg = |name: &str, spec: &str, expect: Expect| c(name, "WorkloadGroup", spec, expect);
    vec![
        we("valid", "address: 1.2.3.4", Ok),
        we("missing address", "{}", Err("address")),
        we(
            "missing address with network",
            "network: network-2",
            Warn("address"),
        ),
        we("valid unix endpoint", "address: unix:///lon/google/com", Ok),
        we(
            "invalid unix endpoint",
            "address: unix:///lon/google/com\nports: {\"7777\": 7777}",
            Err("unix"),
        ),
        we(
            "valid FQDN",
            "address: validdns.com\nports: {\"7777\": 7777}",
            Ok,
        ),
        we(
            "invalid FQDN",
            "address: invaliddns.com:9443\nports: {\"7777\": 7777}",
            Err("address"),
        ),
        we(
            "valid IP",
            "address: 172.16.1.1\nports: {\"7777\": 7777}",
            Ok,
        ),
        wg("valid", "template: {}", Ok),
        wg(
            "invalid metadata labels",
            "template: {}\nmetadata: {labels: {\".\": \"~\"}}",
            Err("label"),
        ),
        wg(
            "probe missing method",
            "template: {}\nprobe: {}",
            Err("probe"),
        ),
        wg(
            "probe http empty",
            "template: {}\nprobe: {httpGet: {}}",
            Err("port"),
        ),
        wg(
            "probe http valid",
            "template: {}\nprobe: {httpGet: {port: 5}}",
            Ok,
        ),
        wg(
            "probe tcp invalid",
            "template: {}\nprobe: {tcpSocket: {}}",
            Err("port"),
        ),
        wg(
            "probe tcp valid",
            "template: {}\nprobe: {tcpSocket: {port: 5}}",
            Ok,
        ),
        wg(
            "probe exec invalid",
            "template: {}\nprobe: {exec: {}}",
            Err("command"),
        ),
        wg(
            "probe exec valid",
            "template: {}\nprobe: {exec: {command: [foo, bar]}}",
            Ok,
        ),
    ]
}

#[test]
fn virtual_service() {
    check(&virtual_service_cases());
}

#[test]
fn workload_entry_and_group() {
    check(&workload_cases());
}

// ---------------------------------------------------------------------------------------
// DestinationRule (TestValidateDestinationRule, TestValidateTrafficPolicy,
// TestValidateConnectionPool, TestValidateLoadBalancer, TestValidateOutlierDetection)

fn destination_rule_cases() -> Vec<Case> {
    let dr = |name: &str, spec: &str, expect: Expect| c(name, "DestinationRule", spec, expect);
    let subsets =
        "subsets:\n- {name: v1, labels: {version: v1}}\n- {name: v2, labels: {version: v2}}\n";
    let good_policy = "loadBalancer: {simple: ROUND_ROBIN}\nconnectionPool: {tcp: {maxConnections: 7}, http: {http2MaxRequests: 11}}\noutlierDetection: {minHealthPercent: 20}\n";
    let tp = |name: &str, policy: &str, expect: Expect| {
        dr(
            &format!("traffic policy: {name}"),
            &format!("host: reviews\ntrafficPolicy:\n{}", nest(policy, 2)),
            expect,
        )
    };
    let tls = |name: &str, tls: &str, expect: Expect| {
        dr(
            &format!("tls: {name}"),
            &format!("host: reviews\ntrafficPolicy:\n  tls: {tls}\n"),
            expect,
        )
    };
    let pool = |name: &str, pool: &str, expect: Expect| {
        tp(name, &format!("connectionPool: {pool}"), expect)
    };
    let lb =
        |name: &str, lb: &str, expect: Expect| tp(name, &format!("loadBalancer: {lb}"), expect);
    let od =
        |name: &str, od: &str, expect: Expect| tp(name, &format!("outlierDetection: {od}"), expect);
    vec![
        dr("simple destination rule", &format!("host: reviews\n{subsets}"), Ok),
        dr(
            "simple destination rule with empty selector labels",
            &format!("host: reviews\n{subsets}workloadSelector: {{}}\n"),
            Warn("without labels"),
        ),
        dr("missing destination name", &format!("host: \"\"\n{subsets}"), Err("host")),
        dr(
            "missing subset name",
            "host: reviews\nsubsets:\n- {name: \"\", labels: {version: v1}}\n- {name: v2, labels: {version: v2}}",
            Err("name"),
        ),
        dr(
            "duplicate subset names",
            "host: reviews\nsubsets:\n- {name: foo, labels: {version: v1}}\n- {name: foo, labels: {version: v2}}",
            Err("duplicate"),
        ),
        dr(
            "valid traffic policy, top level",
            &format!("host: reviews\ntrafficPolicy:\n{}{subsets}", nest(good_policy, 2)),
            Ok,
        ),
        dr(
            "invalid traffic policy, top level",
            &format!(
                "host: reviews\ntrafficPolicy:\n  loadBalancer: {{simple: ROUND_ROBIN}}\n  connectionPool: {{}}\n  outlierDetection: {{minHealthPercent: 20}}\n{subsets}"
            ),
            Err("connectionPool"),
        ),
        dr(
            "valid traffic policy, subset level",
            &format!(
                "host: reviews\nsubsets:\n- name: v1\n  labels: {{version: v1}}\n  trafficPolicy:\n{}- {{name: v2, labels: {{version: v2}}}}\n",
                nest(good_policy, 4)
            ),
            Ok,
        ),
        dr(
            "invalid traffic policy, subset level",
            "host: reviews\nsubsets:\n- name: v1\n  labels: {version: v1}\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool: {}\n- {name: v2, labels: {version: v2}}\n",
            Err("connectionPool"),
        ),
        dr(
            "valid traffic policy, both levels",
            &format!(
                "host: reviews\ntrafficPolicy:\n{}subsets:\n- name: v1\n  labels: {{version: v1}}\n  trafficPolicy:\n    outlierDetection: {{minHealthPercent: 30}}\n",
                nest(good_policy, 2)
            ),
            Ok,
        ),
        tls(
            "SIMPLE, caCertificates and SAN",
            "{mode: SIMPLE, caCertificates: test, subjectAltNames: [reviews.default.svc]}",
            Ok,
        ),
        tls(
            "SIMPLE, credentialName and SAN",
            "{mode: SIMPLE, credentialName: test, subjectAltNames: [reviews.default.svc]}",
            Ok,
        ),
        tls(
            "SIMPLE, insecureSkipVerify false with caCertificates",
            "{mode: SIMPLE, caCertificates: test, subjectAltNames: [reviews.default.svc], insecureSkipVerify: false}",
            Ok,
        ),
        tls(
            "SIMPLE, insecureSkipVerify false with credentialName",
            "{mode: SIMPLE, credentialName: test, subjectAltNames: [reviews.default.svc], insecureSkipVerify: false}",
            Ok,
        ),
        tls(
            "SIMPLE, insecureSkipVerify true with credentialName",
            "{mode: SIMPLE, credentialName: test, insecureSkipVerify: true}",
            Err("insecureSkipVerify"),
        ),
        tls(
            "SIMPLE, insecureSkipVerify true with caCertificates",
            "{mode: SIMPLE, caCertificates: test, insecureSkipVerify: true}",
            Err("insecureSkipVerify"),
        ),
        tls(
            "SIMPLE, insecureSkipVerify true with SAN",
            "{mode: SIMPLE, subjectAltNames: [reviews.default.svc], insecureSkipVerify: true}",
            Err("insecureSkipVerify"),
        ),
        tls(
            "MUTUAL, files and SAN",
            "{mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, subjectAltNames: [reviews.default.svc]}",
            Ok,
        ),
        tls(
            "MUTUAL, credentialName and SAN",
            "{mode: MUTUAL, credentialName: test, subjectAltNames: [reviews.default.svc]}",
            Ok,
        ),
        tls(
            "MUTUAL, insecureSkipVerify false with files",
            "{mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, subjectAltNames: [reviews.default.svc], insecureSkipVerify: false}",
            Ok,
        ),
        tls(
            "MUTUAL, insecureSkipVerify false with credentialName",
            "{mode: MUTUAL, credentialName: test, subjectAltNames: [reviews.default.svc], insecureSkipVerify: false}",
            Ok,
        ),
        tls(
            "MUTUAL, insecureSkipVerify true with caCertificates",
            "{mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, insecureSkipVerify: true}",
            Err("insecureSkipVerify"),
        ),
        tls(
            "MUTUAL, insecureSkipVerify true with credentialName",
            "{mode: MUTUAL, credentialName: test, insecureSkipVerify: true}",
            Ok,
        ),
        tls(
            "MUTUAL, insecureSkipVerify true without CA",
            "{mode: MUTUAL, privateKey: key, clientCertificate: cert, insecureSkipVerify: true}",
            Ok,
        ),
        tls(
            "MUTUAL, insecureSkipVerify true with SAN",
            "{mode: MUTUAL, privateKey: key, clientCertificate: cert, subjectAltNames: [reviews.default.svc], insecureSkipVerify: true}",
            Err("insecureSkipVerify"),
        ),
        tp("valid", good_policy, Ok),
        tp("nil entries", "{}", Err("trafficPolicy")),
        tp(
            "missing port in port level settings",
            "portLevelSettings:\n- loadBalancer: {simple: ROUND_ROBIN}\n  outlierDetection: {minHealthPercent: 20}",
            Err("port"),
        ),
        tp(
            "bad connection pool",
            "loadBalancer: {simple: ROUND_ROBIN}\nconnectionPool: {}",
            Err("connectionPool"),
        ),
        pool(
            "bad max connection duration",
            "{tcp: {maxConnectionDuration: 0.0000005s}}",
            Err("maxConnectionDuration"),
        ),
        od("panic threshold too low", "{minHealthPercent: -1}", Err("minHealthPercent")),
        pool(
            "both upgrade and use client protocol set",
            "{http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}",
            Err("useClientProtocol"),
        ),
        pool(
            "valid, tcp and http",
            "{tcp: {maxConnections: 7, connectTimeout: 2s}, http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, idleTimeout: 30s, maxConcurrentStreams: 5}}",
            Ok,
        ),
        pool("valid, tcp only", "{tcp: {maxConnections: 7, connectTimeout: 2s}}", Ok),
        pool(
            "valid, http only without idle timeout",
            "{http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, maxConcurrentStreams: 5}}",
            Ok,
        ),
        pool("bad max connections", "{tcp: {maxConnections: -1}}", Err("maxConnections")),
        pool("bad connect timeout", "{tcp: {connectTimeout: 2.000000005s}}", Err("connectTimeout")),
        pool(
            "bad max pending requests",
            "{http: {http1MaxPendingRequests: -1}}",
            Err("http1MaxPendingRequests"),
        ),
        pool("bad max requests", "{http: {http2MaxRequests: -1}}", Err("http2MaxRequests")),
        pool(
            "bad max requests per connection",
            "{http: {maxRequestsPerConnection: -1}}",
            Err("maxRequestsPerConnection"),
        ),
        pool("bad max retries", "{http: {maxRetries: -1}}", Err("maxRetries")),
        pool("bad idle timeout", "{http: {idleTimeout: 30.000000005s}}", Err("idleTimeout")),
        pool("tcp idle timeout disabled", "{tcp: {idleTimeout: 0s}}", Ok),
        pool(
            "bad max concurrent streams",
            "{http: {maxConcurrentStreams: -1}}",
            Err("maxConcurrentStreams"),
        ),
        lb("simple", "{simple: ROUND_ROBIN}", Ok),
        lb(
            "consistentHash with minimumRingSize and cookie",
            "{consistentHash: {minimumRingSize: 1024, httpCookie: {name: test, ttl: 3600s}}}",
            Warn("minimumRingSize"),
        ),
        lb(
            "consistentHash cookie missing name",
            "{consistentHash: {minimumRingSize: 1024, httpCookie: {ttl: 3600s}}}",
            Err("name"),
        ),
        lb(
            "maglev table size not prime",
            "{consistentHash: {maglev: {tableSize: 1000}}}",
            Err("prime"),
        ),
        od(
            "valid",
            "{interval: 2s, baseEjectionTime: 2s, maxEjectionPercent: 50}",
            Ok,
        ),
        od("bad interval", "{interval: 2.000000005s}", Err("interval")),
        od("bad base ejection time", "{baseEjectionTime: 2.000000005s}", Err("baseEjectionTime")),
        od("bad max ejection percent", "{maxEjectionPercent: 105}", Err("maxEjectionPercent")),
        od("panic threshold too high", "{minHealthPercent: 101}", Err("minHealthPercent")),
        od("deprecated consecutiveErrors", "{consecutiveErrors: 101}", Warn("consecutiveErrors")),
        od(
            "consecutive local origin failures without split",
            "{consecutiveLocalOriginFailures: 10}",
            Err("splitExternalLocalOriginErrors"),
        ),
    ]
}

#[test]
fn destination_rule() {
    check(&destination_rule_cases());
}

// ---------------------------------------------------------------------------------------
// ServiceEntry (TestValidateServiceEntries)

fn service_entry_cases() -> Vec<Case> {
    let se = |name: &str, spec: &str, expect: Expect| c(name, "ServiceEntry", spec, expect);
    let two_ports = "ports:\n- {number: 80, protocol: http, name: http-valid1}\n- {number: 8080, protocol: http, name: http-valid2}\n";
    let one_port = "ports:\n- {number: 80, protocol: http, name: http-valid1}\n";
    let dns_eps = "endpoints:\n- {address: lon.google.com, ports: {http-valid1: 8080}}\n- {address: in.google.com, ports: {http-valid2: 9080}}\n";
    let static_eps = "endpoints:\n- {address: 1.1.1.1, ports: {http-valid1: 8080}}\n- {address: 2.2.2.2, ports: {http-valid2: 9080}}\n";
    let uds_port = "ports:\n- {number: 6553, protocol: grpc, name: grpc-service1}\n";
    vec![
        se(
            "discovery type DNS",
            &format!("hosts: [\"*.google.com\"]\n{two_ports}{dns_eps}resolution: DNS"),
            Ok,
        ),
        se(
            "discovery type DNS Round Robin",
            &format!("hosts: [\"*.istio.io\"]\n{two_ports}endpoints:\n- {{address: api-v1.istio.io, ports: {{http-valid1: 8080}}}}\nresolution: DNS_ROUND_ROBIN"),
            Ok,
        ),
        se(
            "discovery type DNS, label tlsMode: istio",
            &format!("hosts: [\"*.google.com\"]\n{two_ports}endpoints:\n- {{address: lon.google.com, ports: {{http-valid1: 8080}}, labels: {{security.istio.io/tlsMode: istio}}}}\n- {{address: in.google.com, ports: {{http-valid2: 9080}}, labels: {{security.istio.io/tlsMode: istio}}}}\nresolution: DNS"),
            Ok,
        ),
        se(
            "discovery type DNS, one host set with IP address and https port",
            "hosts: [httpbin.org]\naddresses: [10.10.10.10]\nports:\n- {number: 80, protocol: http, name: http-valid1}\n- {number: 8080, protocol: http, name: http-valid2}\n- {number: 443, protocol: https, name: https}\nresolution: DNS",
            Ok,
        ),
        se(
            "discovery type DNS, multi hosts set with IP address and https port",
            "hosts: [httpbin.org, wikipedia.org]\naddresses: [10.10.10.10]\nports:\n- {number: 80, protocol: http, name: http-valid1}\n- {number: 8080, protocol: http, name: http-valid2}\n- {number: 443, protocol: https, name: https}\nresolution: DNS",
            Warn(""),
        ),
        se(
            "discovery type DNS, IP address set",
            &format!("hosts: [\"*.google.com\"]\naddresses: [10.10.10.10]\n{two_ports}{dns_eps}resolution: DNS"),
            Ok,
        ),
        se(
            "discovery type DNS, IP in endpoints",
            &format!("hosts: [\"*.google.com\"]\n{two_ports}endpoints:\n- {{address: 1.1.1.1, ports: {{http-valid1: 8080}}}}\n- {{address: in.google.com, ports: {{http-valid2: 9080}}}}\nresolution: DNS"),
            Ok,
        ),
        se(
            "empty hosts",
            &format!("{one_port}endpoints:\n- {{address: in.google.com, ports: {{http-valid1: 9080}}}}\nresolution: DNS"),
            Err("hosts"),
        ),
        se(
            "bad hosts",
            &format!("hosts: [\"-\"]\n{one_port}endpoints:\n- {{address: in.google.com, ports: {{http-valid1: 9080}}}}\nresolution: DNS"),
            Err("host"),
        ),
        se(
            "full wildcard host",
            &format!("hosts: [foo.com, \"*\"]\n{one_port}endpoints:\n- {{address: in.google.com, ports: {{http-valid1: 9080}}}}\nresolution: DNS"),
            Err("*"),
        ),
        se(
            "short name host",
            &format!("hosts: [foo, bar.com]\n{one_port}endpoints:\n- {{address: in.google.com, ports: {{http-valid1: 9080}}}}\nresolution: DNS"),
            Valid,
        ),
        se(
            "undefined endpoint port",
            "hosts: [google.com]\nports:\n- {number: 80, protocol: http, name: http-valid1}\n- {number: 81, protocol: http, name: http-valid2}\nendpoints:\n- {address: lon.google.com, ports: {http-valid1: 8080}}\n- {address: in.google.com, ports: {http-dne: 9080}}\nresolution: DNS",
            Err("http-dne"),
        ),
        se(
            "discovery type DNS, non-FQDN endpoint",
            &format!("hosts: [\"*.google.com\"]\n{two_ports}endpoints:\n- {{address: \"*.lon.google.com\", ports: {{http-valid1: 8080}}}}\n- {{address: in.google.com, ports: {{http-valid2: 9080}}}}\nresolution: DNS"),
            Err("address"),
        ),
        se(
            "discovery type DNS, wildcard host without endpoints",
            &format!("hosts: [\"*.google.com\"]\n{two_ports}resolution: DNS"),
            Err("*.google.com"),
        ),
        se(
            "discovery type DNS, no endpoints",
            &format!("hosts: [google.com]\n{two_ports}resolution: DNS"),
            Ok,
        ),
        se(
            "discovery type DNS, unix endpoint",
            &format!("hosts: [\"*.google.com\"]\n{one_port}endpoints:\n- {{address: unix:///lon/google/com}}\nresolution: DNS"),
            Err("unix"),
        ),
        se("discovery type none", &format!("hosts: [google.com]\n{two_ports}resolution: NONE"), Ok),
        se(
            "discovery type none, endpoints provided",
            &format!("hosts: [google.com]\n{two_ports}endpoints:\n- {{address: lon.google.com, ports: {{http-valid1: 8080}}}}\nresolution: NONE"),
            Err("endpoints"),
        ),
        se(
            "discovery type none, cidr addresses",
            &format!("hosts: [google.com]\naddresses: [172.1.2.16/16]\n{two_ports}resolution: NONE"),
            Ok,
        ),
        se(
            "discovery type static, cidr addresses with endpoints",
            &format!("hosts: [google.com]\naddresses: [172.1.2.16/16]\n{two_ports}{static_eps}resolution: STATIC"),
            Ok,
        ),
        se(
            "discovery type static",
            &format!("hosts: [google.com]\naddresses: [172.1.2.16]\n{two_ports}{static_eps}resolution: STATIC"),
            Ok,
        ),
        se(
            "discovery type static, FQDN in endpoints",
            &format!("hosts: [google.com]\naddresses: [172.1.2.16]\n{two_ports}endpoints:\n- {{address: google.com, ports: {{http-valid1: 8080}}}}\n- {{address: 2.2.2.2, ports: {{http-valid2: 9080}}}}\nresolution: STATIC"),
            Err("google.com"),
        ),
        se(
            "discovery type static, missing endpoints",
            &format!("hosts: [google.com]\naddresses: [172.1.2.16]\n{two_ports}resolution: STATIC"),
            // Trellis adds a warning (no endpoints and no workloadSelector: nothing to send to).
            Valid,
        ),
        se(
            "discovery type static, bad endpoint port name",
            &format!("hosts: [google.com]\naddresses: [172.1.2.16]\n{two_ports}endpoints:\n- {{address: 1.1.1.1, ports: {{http-valid1: 8080}}}}\n- {{address: 2.2.2.2, ports: {{http-dne: 9080}}}}\nresolution: STATIC"),
            Err("http-dne"),
        ),
        se(
            "discovery type none, conflicting port names",
            "hosts: [google.com]\nports:\n- {number: 80, protocol: http, name: http-conflict}\n- {number: 8080, protocol: http, name: http-conflict}\nresolution: NONE",
            Err("http-conflict"),
        ),
        se(
            "discovery type none, conflicting port numbers",
            "hosts: [google.com]\nports:\n- {number: 80, protocol: http, name: http-conflict1}\n- {number: 80, protocol: http, name: http-conflict2}\nresolution: NONE",
            Err("80"),
        ),
        se(
            "unix socket",
            &format!("hosts: [uds.cluster.local]\n{uds_port}resolution: STATIC\nendpoints:\n- {{address: unix:///path/to/socket}}"),
            Ok,
        ),
        se(
            "unix socket, relative path",
            &format!("hosts: [uds.cluster.local]\n{uds_port}resolution: STATIC\nendpoints:\n- {{address: unix://./relative/path.sock}}"),
            Err("unix"),
        ),
        se(
            "unix socket, endpoint ports",
            &format!("hosts: [uds.cluster.local]\n{uds_port}resolution: STATIC\nendpoints:\n- {{address: unix:///path/to/socket, ports: {{grpc-service1: 6553}}}}"),
            Err("unix"),
        ),
        se(
            "unix socket, multiple service ports",
            "hosts: [uds.cluster.local]\nports:\n- {number: 6553, protocol: grpc, name: grpc-service1}\n- {number: 80, protocol: http, name: http-service2}\nresolution: STATIC\nendpoints:\n- {address: unix:///path/to/socket}",
            Err("unix"),
        ),
        se(
            "empty protocol",
            "hosts: [google.com]\naddresses: [172.1.2.16/16]\nports:\n- {number: 80, protocol: http, name: http-valid1}\n- {number: 8080, name: http-valid2}\nresolution: NONE",
            Ok,
        ),
        se(
            "selector",
            &format!("hosts: [google.com]\nworkloadSelector: {{labels: {{foo: bar}}}}\n{one_port}"),
            Warn(""),
        ),
        se(
            "workload selector without labels",
            &format!("hosts: [google.com]\n{two_ports}workloadSelector: {{}}"),
            Warn(""),
        ),
        se(
            "selector and endpoints",
            &format!("hosts: [google.com]\nworkloadSelector: {{labels: {{foo: bar}}}}\n{one_port}endpoints:\n- {{address: 1.1.1.1}}"),
            Err("endpoints"),
        ),
        se(
            "selector and resolution NONE",
            &format!("hosts: [google.com]\nworkloadSelector: {{labels: {{foo: bar}}}}\n{one_port}resolution: NONE"),
            Warn(""),
        ),
        se(
            "selector and resolution DNS",
            &format!("hosts: [google.com]\nworkloadSelector: {{labels: {{foo: bar}}}}\n{one_port}resolution: DNS"),
            Ok,
        ),
        se(
            "bad selector key",
            &format!("hosts: [google.com]\nworkloadSelector: {{labels: {{\"\": bar}}}}\n{one_port}"),
            Err("workloadSelector"),
        ),
        se(
            "repeat target port",
            "hosts: [google.com]\nresolution: DNS\nports:\n- {number: 80, protocol: http, name: http-valid1, targetPort: 80}\n- {number: 81, protocol: http, name: http-valid2, targetPort: 80}",
            Ok,
        ),
        se(
            "valid target port",
            "hosts: [google.com]\nresolution: DNS\nports:\n- {number: 80, protocol: http, name: http-valid1, targetPort: 81}",
            Ok,
        ),
        se(
            "invalid target port",
            "hosts: [google.com]\nresolution: DNS\nports:\n- {number: 80, protocol: http, name: http-valid1, targetPort: 65536}",
            Err("targetPort"),
        ),
        se(
            "warn target port",
            "hosts: [google.com]\nworkloadSelector: {labels: {key: bar}}\nports:\n- {number: 80, protocol: http, name: http-valid1, targetPort: 1234}",
            Warn(""),
        ),
        se(
            "valid endpoint port",
            "hosts: [google.com]\nports:\n- {number: 80, protocol: http, name: http-valid1, targetPort: 81}\nresolution: STATIC\nendpoints:\n- {address: 1.1.1.1, ports: {http-valid1: 8081}}",
            Ok,
        ),
        se(
            "invalid endpoint port",
            "hosts: [google.com]\nports:\n- {number: 80, protocol: http, name: http-valid1, targetPort: 81}\nresolution: STATIC\nendpoints:\n- {address: 1.1.1.1, ports: {http-valid1: 65536}}",
            Err("65536"),
        ),
        se(
            "protocol unset for addresses empty",
            "hosts: [google.com]\naddresses: []\nports:\n- {number: 80, protocol: http, name: http-valid1}\n- {number: 8080, name: http-valid2}\nresolution: NONE",
            Warn("addresses are required"),
        ),
        se(
            "protocol is TCP for addresses empty",
            "hosts: [google.com]\naddresses: []\nports:\n- {number: 80, protocol: http, name: http-valid1}\n- {number: 81, protocol: TCP, name: tcp-valid1}\nresolution: NONE",
            Warn(""),
        ),
        se(
            "dns round robin with more than one endpoint",
            "hosts: [google.com]\nports:\n- {number: 8081, protocol: http, name: http-valid1}\nendpoints:\n- {address: api-v1.istio.io, ports: {http-valid1: 8081}}\n- {address: 1.1.1.2, ports: {http-valid1: 8081}}\nresolution: DNS_ROUND_ROBIN",
            Err("DNS_ROUND_ROBIN"),
        ),
        se(
            "dns round robin with 0 endpoints",
            "hosts: [google.com]\nports:\n- {number: 8081, protocol: http, name: http-valid1}\nendpoints: []\nresolution: DNS_ROUND_ROBIN",
            Ok,
        ),
        se(
            "partial wildcard hosts",
            "hosts: [\"*.nytimes.com\", \"*washingtonpost.com\"]\nports:\n- {number: 443, protocol: HTTPS, name: https-nytimes}\nresolution: NONE",
            Warn("partial wildcard"),
        ),
        se(
            "network set with no address on endpoint",
            "hosts: [www.example.com]\nports:\n- {number: 443, protocol: HTTPS, name: https-example}\nendpoints:\n- {network: cluster-1}\nresolution: STATIC",
            Warn(""),
        ),
    ]
}

#[test]
fn service_entry() {
    check(&service_entry_cases());
}

fn service_entry_more_cases() -> Vec<Case> {
    let se = |name: &str, spec: &str, expect: Expect| c(name, "ServiceEntry", spec, expect);
    vec![
        // From ValidateServiceEntry's rules (no table case in Istio's test).
        se(
            "multiple hosts with a TCP port and DNS resolution",
            "hosts: [a.example.com, b.example.com]\naddresses: [10.0.0.1]\nports:\n- {number: 5432, protocol: TCP, name: tcp-db}\nresolution: DNS",
            Err("multiple hosts"),
        ),
        se(
            "multiple hosts with a TCP port and resolution NONE",
            "hosts: [a.example.com, b.example.com]\naddresses: [10.0.0.1]\nports:\n- {number: 5432, protocol: TCP, name: tcp-db}\nresolution: NONE",
            Ok,
        ),
        se(
            "CIDR address with DNS resolution",
            "hosts: [a.example.com]\naddresses: [10.0.0.0/24]\nports:\n- {number: 80, protocol: HTTP, name: http}\nresolution: DNS",
            Err("CIDR"),
        ),
        se(
            "export to nobody",
            "hosts: [a.example.com]\nports:\n- {number: 80, protocol: HTTP, name: http}\nexportTo: [\"~\"]",
            Ok,
        ),
        se(
            "invalid port name",
            "hosts: [a.example.com]\nports:\n- {number: 80, protocol: HTTP, name: Http_Bad}",
            Err("port name"),
        ),
        se(
            "unsupported protocol",
            "hosts: [a.example.com]\nports:\n- {number: 80, protocol: kafka, name: kafka}",
            Err("protocol"),
        ),
    ]
}

#[test]
fn service_entry_rules() {
    check(&service_entry_more_cases());
}

/// Istio accepts its own samples: Trellis reads them without any schema error or warning.
#[test]
fn istio_samples_have_no_schema_diagnostics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/manifests/istio-samples");
    let mut set = ResourceSet::default();
    set.add_path(&root, &LoadOptions::default());
    assert!(
        set.resources.len() > 10,
        "samples not found under {}",
        root.display()
    );
    let diags: Vec<String> = set.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(diags.is_empty(), "{diags:#?}");
    // The project's own Istio-style manifests load without schema errors too.
    let mut set = ResourceSet::default();
    set.add_path(&root.join("../written"), &LoadOptions::default());
    assert!(!set.resources.is_empty());
    let errors: Vec<String> = set
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

// ---------------------------------------------------------------------------------------
// AuthorizationPolicy (TestValidateAuthorizationPolicy). The istio.io/dry-run annotation
// cases are not here: annotations are checked (or not) in resource.rs, outside this crate's
// per-kind validation.

fn authorization_policy_cases() -> Vec<Case> {
    let ap = |name: &str, spec: &str, expect: Expect| c(name, "AuthorizationPolicy", spec, expect);
    let from = |source: &str| format!("rules:\n- from:\n  - source: {source}\n");
    let to = |op: &str| format!("rules:\n- to:\n  - operation: {op}\n");
    let when = |cond: &str| {
        format!("selector: {{matchLabels: {{app: httpbin}}}}\nrules:\n- when:\n  - {cond}\n")
    };
    let l7_rule = "rules:\n- from:\n  - source: {principals: [temp]}\n  to:\n  - operation: {ports: [\"8080\"], methods: [GET, DELETE]}\n";
    let target = |tr: &str| format!("action: DENY\n{tr}\n{l7_rule}");
    vec![
        ap(
            "good",
            r#"
            selector: {matchLabels: {app: httpbin, version: v1}}
            rules:
            - from:
              - source: {principals: [sa1]}
              - source: {principals: [sa2]}
              to:
              - operation: {methods: [GET]}
              - operation: {methods: [POST]}
              when:
              - {key: source.ip, values: [1.2.3.4, 5.6.7.0/24]}
              - {key: "request.headers[:authority]", values: [v1, v2]}
            "#,
            Ok,
        ),
        ap(
            "good serviceAccounts",
            r#"
            selector: {matchLabels: {app: httpbin, version: v1}}
            rules:
            - from:
              - source: {serviceAccounts: [ns1/sa1, ns2/sa2]}
              - source: {principals: [sa2]}
            "#,
            Ok,
        ),
        ap(
            "serviceAccounts and namespaces",
            r#"
            selector: {matchLabels: {app: httpbin, version: v1}}
            rules:
            - from:
              - source: {serviceAccounts: [ns1/sa1, ns2/sa2], namespaces: [ns]}
            "#,
            Err("serviceAccounts"),
        ),
        ap("custom-good", "action: CUSTOM\nprovider: {name: my-custom-authz}\nrules: [{}]", Ok),
        ap(
            "custom-empty-provider",
            "action: CUSTOM\nprovider: {name: \"\"}\nrules: [{}]",
            Err("provider"),
        ),
        ap("custom-nil-provider", "action: CUSTOM\nrules: [{}]", Err("provider")),
        ap(
            "custom-invalid-rule",
            r#"
            action: CUSTOM
            provider: {name: my-custom-authz}
            rules:
            - from:
              - source: {namespaces: [ns], notNamespaces: [ns], principals: [id], notPrincipals: [id], requestPrincipals: [req], notRequestPrincipals: [req]}
              when:
              - {key: source.namespace, values: [source.namespace1], notValues: [source.namespace2]}
              - {key: source.principal, values: [source.principal1], notValues: [source.principal2]}
              - {key: "request.auth.claims[a]", values: [claims1], notValues: [claims2]}
            "#,
            Err("CUSTOM"),
        ),
        ap(
            "provider-wrong-action",
            "action: ALLOW\nprovider: {name: \"\"}\nrules: [{}]",
            Err("provider"),
        ),
        ap("allow-rules-nil", "action: ALLOW", Ok),
        ap("deny-rules-nil", "action: DENY", Err("rules")),
        ap(
            "selector-empty-value",
            "selector: {matchLabels: {app: \"\", version: v1}}",
            Ok,
        ),
        ap(
            "selector-empty-key",
            "selector: {matchLabels: {app: httpbin, \"\": v1}}",
            Err("key"),
        ),
        ap("selector-empty-labels", "selector: {}", Warn("without labels")),
        ap(
            "selector-wildcard-value",
            "selector: {matchLabels: {app: httpbin-*}}",
            Err("wildcard"),
        ),
        ap(
            "selector-wildcard-key",
            "selector: {matchLabels: {app-*: httpbin}}",
            Err("app-*"),
        ),
        ap(
            "target-ref-good",
            &target("targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: foo}"),
            Ok,
        ),
        ap(
            "target-refs-good",
            &target("targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: foo}]"),
            Ok,
        ),
        ap(
            "target-refs-good-service",
            &target("targetRefs: [{group: \"\", kind: Service, name: foo}]"),
            Ok,
        ),
        ap(
            "target-ref-non-empty-namespace",
            &target("targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: foo, namespace: bar}"),
            Err("namespace"),
        ),
        ap(
            "target-ref-empty-name",
            &target("targetRef: {group: gateway.networking.k8s.io, kind: Gateway}"),
            Err("name"),
        ),
        ap(
            "target-ref-wrong-group",
            &target("targetRef: {group: wrong-group, kind: Gateway, name: foo}"),
            Err("wrong-group"),
        ),
        ap(
            "target-ref-wrong-kind",
            &target("targetRef: {group: gateway.networking.k8s.io, kind: wrong-kind, name: foo}"),
            Err("wrong-kind"),
        ),
        ap(
            "target-ref-and-selector-cannot-both-be-set",
            &target("targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: foo}\nselector: {matchLabels: {app: httpbin}}"),
            Err("selector"),
        ),
        ap(
            "target-refs-and-selector-cannot-both-be-set",
            &target("targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: foo}]\nselector: {matchLabels: {app: httpbin}}"),
            Err("selector"),
        ),
        // Istio's Go case builds `From: []` (non-nil, empty); from YAML an empty list decodes
        // to nil, which Istio accepts (any source), and so does Trellis.
        ap("from-empty (from YAML)", "rules:\n- from: []", Ok),
        ap("source-nil", "rules:\n- from:\n  - {}", Err("source")),
        ap("source-empty", &from("{}"), Err("source")),
        ap("to-empty (from YAML, as from-empty)", "rules:\n- to: []", Ok),
        ap("operation-nil", "rules:\n- to:\n  - {}", Err("operation")),
        ap("operation-empty", &to("{}"), Err("operation")),
        ap("Principals-empty", &from("{principals: [p1, \"\"]}"), Err("principals")),
        ap("NotPrincipals-empty", &from("{notPrincipals: [p1, \"\"]}"), Err("notPrincipals")),
        ap(
            "RequestPrincipals-empty",
            &from("{requestPrincipals: [p1, \"\"]}"),
            Err("requestPrincipals"),
        ),
        ap(
            "NotRequestPrincipals-empty",
            &from("{notRequestPrincipals: [p1, \"\"]}"),
            Err("notRequestPrincipals"),
        ),
        ap("Namespaces-empty", &from("{namespaces: [ns, \"\"]}"), Err("namespaces")),
        ap(
            "ServiceAccounts-empty",
            &from("{serviceAccounts: [ns/sa, \"\"]}"),
            Err("serviceAccounts"),
        ),
        ap("NotNamespaces-empty", &from("{notNamespaces: [ns, \"\"]}"), Err("notNamespaces")),
        ap("IpBlocks-empty", &from("{ipBlocks: [1.2.3.4, \"\"]}"), Err("ipBlocks")),
        ap("NotIpBlocks-empty", &from("{notIpBlocks: [1.2.3.4, \"\"]}"), Err("notIpBlocks")),
        ap(
            "RemoteIpBlocks-empty",
            &from("{remoteIpBlocks: [1.2.3.4, \"\"]}"),
            Err("remoteIpBlocks"),
        ),
        ap(
            "NotRemoteIpBlocks-empty",
            &from("{notRemoteIpBlocks: [1.2.3.4, \"\"]}"),
            Err("notRemoteIpBlocks"),
        ),
        ap("Hosts-empty", &to("{hosts: [host, \"\"]}"), Err("hosts")),
        ap("NotHosts-empty", &to("{notHosts: [host, \"\"]}"), Err("notHosts")),
        ap("Ports-empty", &to("{ports: [\"80\", \"\"]}"), Err("ports")),
        ap("NotPorts-empty", &to("{notPorts: [\"80\", \"\"]}"), Err("notPorts")),
        ap("Methods-empty", &to("{methods: [GET, \"\"]}"), Err("methods")),
        ap("NotMethods-empty", &to("{notMethods: [GET, \"\"]}"), Err("notMethods")),
        ap("Paths-empty", &to("{paths: [/path, \"\"]}"), Err("paths")),
        ap("NotPaths-empty", &to("{notPaths: [/path, \"\"]}"), Err("notPaths")),
        ap(
            "value-empty",
            "rules:\n- when:\n  - {key: \"request.headers[:authority]\", values: [v1, \"\"]}",
            Err("values"),
        ),
        ap(
            "invalid ip and port in ipBlocks",
            "rules:\n- from:\n  - source: {ipBlocks: [1.2.3.4, ip1], notIpBlocks: [5.6.7.8, ip2]}\n  to:\n  - operation: {ports: [\"80\", port1], notPorts: [\"90\", port2]}",
            Err("ip1"),
        ),
        ap(
            "invalid ip and port in remoteIpBlocks",
            "rules:\n- from:\n  - source: {remoteIpBlocks: [1.2.3.4, ip1], notRemoteIpBlocks: [5.6.7.8, ip2]}\n  to:\n  - operation: {ports: [\"80\", port1], notPorts: [\"90\", port2]}",
            Err("port1"),
        ),
        ap("condition-key-missing", &when("{values: [v1, v2]}"), Err("key")),
        ap("condition-key-empty", &when("{key: \"\", values: [v1, v2]}"), Err("key")),
        ap("condition-value-missing", &when("{key: source.principal}"), Err("values")),
        ap(
            "condition-value-invalid",
            "rules:\n- when:\n  - {key: source.ip, values: [a.b.c.d]}",
            Err("a.b.c.d"),
        ),
        ap(
            "condition-notValue-invalid",
            "rules:\n- when:\n  - {key: source.ip, notValues: [a.b.c.d]}",
            Err("a.b.c.d"),
        ),
        ap("condition-unknown", &when("{key: key1, values: [v1]}"), Err("key1")),
        ap(
            "L7DenyWithFrom",
            "action: DENY\nselector: {matchLabels: {app: httpbin}}\nrules:\n- from:\n  - source: {requestPrincipals: [example.com/sub-1]}",
            Warn(""),
        ),
        ap(
            "L7DenyWithTo",
            "action: DENY\nselector: {matchLabels: {app: httpbin}}\nrules:\n- to:\n  - operation: {methods: [GET, DELETE]}",
            Warn(""),
        ),
        ap(
            "L7DenyWithFromAndTo",
            "action: DENY\nselector: {matchLabels: {app: httpbin}}\nrules:\n- from:\n  - source: {principals: [temp]}\n  to:\n  - operation: {methods: [GET, DELETE]}",
            Warn(""),
        ),
        ap(
            "L7DenyWithFromAndToWithPort",
            &format!("action: DENY\nselector: {{matchLabels: {{app: httpbin}}}}\n{l7_rule}"),
            Ok,
        ),
    ]
}

#[test]
fn authorization_policy() {
    check(&authorization_policy_cases());
}

// ---------------------------------------------------------------------------------------
// Sidecar (TestValidateSidecar)

fn sidecar_cases() -> Vec<Case> {
    let sc = |name: &str, spec: &str, expect: Expect| c(name, "Sidecar", spec, expect);
    let egress_all = "egress:\n- hosts: [\"*/*\"]\n";
    let ingress = |port: &str, rest: &str| format!("ingress:\n- port: {port}\n{}", nest(rest, 2));
    let http90 = "{protocol: http, number: 90, name: foo}";
    let tcp90 = "{protocol: tcp, number: 90, name: foo}";
    let egress_port =
        |port: &str, bind: &str| format!("egress:\n- port: {port}\n  hosts: [ns1/bar.com]\n{bind}");
    vec![
        sc("empty ingress and egress", "{}", Err("empty")),
        sc("default", egress_all, Ok),
        sc(
            "workload selector without labels",
            &format!("{egress_all}workloadSelector: {{}}"),
            Warn("without labels"),
        ),
        sc("import local namespace with wildcard", "egress:\n- hosts: [\"./*\"]", Ok),
        sc("import local namespace with fqdn", "egress:\n- hosts: [./foo.com]", Ok),
        sc("import nothing", "egress:\n- hosts: [\"~/*\"]", Ok),
        sc("bad egress host 1", "egress:\n- hosts: [\"*\"]", Err("host")),
        sc("bad egress host 2", "egress:\n- hosts: [/]", Err("host")),
        sc("empty egress host", "egress:\n- hosts: []", Err("host")),
        sc(
            "multiple wildcard egress",
            "egress:\n- hosts: [\"*/foo.com\"]\n- hosts: [ns1/bar.com]",
            Err("port"),
        ),
        sc(
            "wildcard egress not in end",
            "egress:\n- hosts: [\"*/foo.com\"]\n- port: {protocol: http, number: 8080, name: h8080}\n  hosts: [ns1/bar.com]",
            Err("last"),
        ),
        sc(
            "invalid Port",
            &egress_port("{protocol: http1, number: 1000000, name: \"\"}", ""),
            Err("port"),
        ),
        sc("Port without name", &egress_port("{protocol: http, number: 8080}", ""), Ok),
        sc(
            "UDS bind in outbound",
            &egress_port("{protocol: http, number: 0, name: uds}", "  bind: unix:///@foo/bar/com\n"),
            Ok,
        ),
        sc(
            "UDS bind in inbound",
            "ingress:\n- port: {protocol: http, number: 0, name: uds}\n  bind: unix:///@foo/bar/com\n  defaultEndpoint: 127.0.0.1:9999",
            Err("port"),
        ),
        sc(
            "UDS bind in outbound 2",
            &egress_port("{protocol: http, number: 0, name: uds}", "  bind: unix:///foo/bar/com\n"),
            Ok,
        ),
        sc(
            "invalid bind",
            &egress_port("{protocol: http, number: 0, name: uds}", "  bind: foobar:///@foo/bar/com\n"),
            Err("bind"),
        ),
        sc(
            "invalid capture mode with uds bind",
            &egress_port(
                "{protocol: http, number: 0, name: uds}",
                "  bind: unix:///@foo/bar/com\n  captureMode: IPTABLES\n",
            ),
            Err("captureMode"),
        ),
        sc(
            "duplicate UDS bind",
            "egress:\n- port: {protocol: http, number: 0, name: uds}\n  hosts: [ns1/bar.com]\n  bind: unix:///@foo/bar/com\n- port: {protocol: http, number: 0, name: uds}\n  hosts: [ns1/bar.com]\n  bind: unix:///@foo/bar/com",
            Err("unix"),
        ),
        sc(
            "duplicate ports",
            "egress:\n- port: {protocol: http, number: 90, name: foo}\n  hosts: [ns1/bar.com]\n- port: {protocol: tcp, number: 90, name: tcp}\n  hosts: [ns2/bar.com]",
            Err("90"),
        ),
        sc(
            "ingress without port",
            &format!("ingress:\n- defaultEndpoint: 127.0.0.1:110\n{egress_all}"),
            Err("port"),
        ),
        sc(
            "ingress without port and with IPv6 endpoint",
            &format!("ingress:\n- defaultEndpoint: \"[::1]:110\"\n{egress_all}"),
            Err("port"),
        ),
        sc(
            "ingress with duplicate ports",
            &format!("ingress:\n- port: {{protocol: http, number: 90, name: foo}}\n  defaultEndpoint: 127.0.0.1:110\n- port: {{protocol: tcp, number: 90, name: bar}}\n  defaultEndpoint: 127.0.0.1:110\n{egress_all}"),
            Err("90"),
        ),
        sc(
            "ingress with duplicate ports and IPv6 endpoint",
            &format!("ingress:\n- port: {{protocol: http, number: 90, name: foo}}\n  defaultEndpoint: \"[::1]:110\"\n- port: {{protocol: tcp, number: 90, name: bar}}\n  defaultEndpoint: \"[::1]:110\"\n{egress_all}"),
            Err("90"),
        ),
        sc(
            "ingress without default endpoint",
            &format!("{}{egress_all}", ingress(http90, "")),
            Ok,
        ),
        sc(
            "ingress with invalid default endpoint in IPv4",
            &ingress(http90, "defaultEndpoint: 1.1.1.1:90"),
            Err("defaultEndpoint"),
        ),
        sc(
            "ingress with invalid default endpoint in IPv6",
            &ingress(http90, "defaultEndpoint: \"[1:1:1:1:1:1:1:1]:90\""),
            Err("defaultEndpoint"),
        ),
        sc(
            "ingress with invalid default endpoint uds",
            &format!("{}{egress_all}", ingress(http90, "defaultEndpoint: unix:///")),
            Err("defaultEndpoint"),
        ),
        sc(
            "ingress with invalid default endpoint port in IPv4",
            &format!("{}{egress_all}", ingress(http90, "defaultEndpoint: 127.0.0.1:hi")),
            Err("defaultEndpoint"),
        ),
        sc(
            "ingress with invalid default endpoint port in IPv6",
            &format!("{}{egress_all}", ingress(http90, "defaultEndpoint: \"[::1]:hi\"")),
            Err("defaultEndpoint"),
        ),
        sc(
            "valid ingress and egress in IPv4",
            &format!("{}{egress_all}", ingress(http90, "defaultEndpoint: 127.0.0.1:9999")),
            Ok,
        ),
        sc(
            "valid ingress and egress in IPv6",
            &format!("{}{egress_all}", ingress(http90, "defaultEndpoint: \"[::1]:9999\"")),
            Ok,
        ),
        sc(
            "valid ingress and empty egress in IPv4",
            &ingress(http90, "defaultEndpoint: 127.0.0.1:9999"),
            Ok,
        ),
        sc(
            "valid ingress and empty egress in IPv6",
            &ingress(http90, "defaultEndpoint: \"[::1]:9999\""),
            Ok,
        ),
        sc("just outbound traffic policy", "outboundTrafficPolicy: {mode: ALLOW_ANY}", Ok),
        sc(
            "empty protocol in IPv4",
            &format!("{}{egress_all}", ingress("{number: 90, name: foo}", "defaultEndpoint: 127.0.0.1:9999")),
            Ok,
        ),
        sc(
            "empty protocol in IPv6",
            &format!("{}{egress_all}", ingress("{number: 90, name: foo}", "defaultEndpoint: \"[::1]:9999\"")),
            Ok,
        ),
        sc(
            "ALLOW_ANY sidecar egress policy with no egress proxy",
            &format!("outboundTrafficPolicy: {{mode: ALLOW_ANY}}\n{egress_all}"),
            Ok,
        ),
        sc(
            "sidecar egress proxy with REGISTRY_ONLY (default)",
            &format!("outboundTrafficPolicy:\n  egressProxy: {{host: foo.bar, subset: shiny, port: {{number: 5000}}}}\n{egress_all}"),
            Err("ALLOW_ANY"),
        ),
        sc(
            "sidecar egress proxy with ALLOW_ANY",
            &format!("outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: {{host: foo.bar, subset: shiny, port: {{number: 5000}}}}\n{egress_all}"),
            Ok,
        ),
        sc(
            "sidecar egress proxy with ALLOW_ANY, service hostname invalid fqdn",
            &format!("outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: {{host: \"foobar*123\", subset: shiny, port: {{number: 5000}}}}\n{egress_all}"),
            Err("foobar*123"),
        ),
        sc(
            "sidecar egress proxy (without port) with ALLOW_ANY",
            &format!("outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: {{host: foo.bar, subset: shiny}}\n{egress_all}"),
            Err("port"),
        ),
        sc(
            "sidecar egress only one wildcarded",
            "egress:\n- hosts: [\"*/*\", test/a.com]",
            Warn("*/*"),
        ),
        sc("sidecar egress wildcarded ns", "egress:\n- hosts: [\"*/b.com\", test/a.com]", Ok),
        sc(
            "sidecar egress duplicated with wildcarded same namespace",
            "egress:\n- hosts: [\"test/*\", test/a.com]",
            Warn("test/a.com"),
        ),
        sc("invalid partial wildcard", "egress:\n- hosts: [\"test/*a.com\"]", Err("partial wildcard")),
        sc(
            "sidecar egress duplicated with wildcarded same namespace .",
            "egress:\n- hosts: [\"./*\", bar/a.com]",
            Warn("bar/a.com"),
        ),
        sc(
            "ingress tls mode ISTIO_MUTUAL in IPv4",
            &ingress(http90, "defaultEndpoint: 127.0.0.1:9999\ntls: {mode: ISTIO_MUTUAL}"),
            Err("ISTIO_MUTUAL"),
        ),
        sc(
            "ingress tls mode ISTIO_MUTUAL in IPv6",
            &ingress(http90, "defaultEndpoint: \"[::1]:9999\"\ntls: {mode: ISTIO_MUTUAL}"),
            Err("ISTIO_MUTUAL"),
        ),
        sc(
            "ingress tls mode AUTO_PASSTHROUGH in IPv4",
            &ingress(http90, "defaultEndpoint: 127.0.0.1:9999\ntls: {mode: AUTO_PASSTHROUGH}"),
            Err("AUTO_PASSTHROUGH"),
        ),
        sc(
            "ingress tls mode AUTO_PASSTHROUGH in IPv6",
            &ingress(http90, "defaultEndpoint: \"[::1]:9999\"\ntls: {mode: AUTO_PASSTHROUGH}"),
            Err("AUTO_PASSTHROUGH"),
        ),
        sc(
            "ingress tls invalid (SIMPLE without certificates) in IPv4",
            &ingress(tcp90, "defaultEndpoint: 127.0.0.1:9999\ntls: {mode: SIMPLE}"),
            Err("serverCertificate"),
        ),
        sc(
            "ingress tls invalid (SIMPLE without certificates) in IPv6",
            &ingress(tcp90, "defaultEndpoint: \"[::1]:9999\"\ntls: {mode: SIMPLE}"),
            Err("serverCertificate"),
        ),
        sc(
            "ingress tls httpsRedirect is not supported",
            &ingress(tcp90, "defaultEndpoint: 127.0.0.1:9999\ntls: {mode: SIMPLE, httpsRedirect: true}"),
            Err("httpsRedirect"),
        ),
        sc(
            "ingress tls SAN entries are not supported",
            &ingress(tcp90, "defaultEndpoint: 127.0.0.1:9999\ntls: {mode: SIMPLE, subjectAltNames: [httpbin.com]}"),
            Err("subjectAltNames"),
        ),
        sc(
            "ingress tls credentialName is not supported",
            &ingress(tcp90, "defaultEndpoint: 127.0.0.1:9999\ntls: {mode: SIMPLE, credentialName: secret-name}"),
            Err("credentialName"),
        ),
    ]
}

#[test]
fn sidecar() {
    check(&sidecar_cases());
}

fn sidecar_more_cases() -> Vec<Case> {
    let sc = |name: &str, spec: &str, expect: Expect| c(name, "Sidecar", spec, expect);
    let pool = "{http: {http1MaxPendingRequests: 1024, http2MaxRequests: 1024, maxRequestsPerConnection: 1024, maxRetries: 1024}}";
    vec![
        sc(
            "ingress tls credentialNames is not supported",
            "ingress:\n- port: {protocol: tcp, number: 90, name: foo}\n  defaultEndpoint: 127.0.0.1:9999\n  tls: {mode: SIMPLE, credentialNames: [secret-name]}",
            Err("credentialNames"),
        ),
        sc(
            "ingress tls tlsCertificates is not supported",
            "ingress:\n- port: {protocol: tcp, number: 90, name: foo}\n  defaultEndpoint: 127.0.0.1:9999\n  tls:\n    mode: SIMPLE\n    tlsCertificates:\n    - {serverCertificate: /etc/istio/ingress-certs/tls.crt, privateKey: /etc/istio/ingress-certs/tls.key}\n    - {serverCertificate: /etc/istio/ingress-certs/tls2.crt, privateKey: /etc/istio/ingress-certs/tls2.key}",
            Err("tlsCertificates"),
        ),
        sc("valid inbound connection pool", &format!("inboundConnectionPool: {pool}"), Ok),
        sc(
            "valid port-level connection pool with top level default",
            &format!("ingress:\n- port: {{protocol: http, number: 90, name: foo}}\n  connectionPool: {pool}\ninboundConnectionPool: {pool}"),
            Ok,
        ),
        sc(
            "valid port-level connection pool without a top level default",
            &format!("ingress:\n- port: {{protocol: http, number: 90, name: foo}}\n  connectionPool: {pool}"),
            Ok,
        ),
        sc(
            "warn http connection settings on tcp port",
            &format!("ingress:\n- port: {{protocol: tcp, number: 90, name: foo}}\n  connectionPool: {pool}"),
            Warn("HTTP"),
        ),
        sc("invalid top level connection pool", "inboundConnectionPool: {}", Err("connection")),
        sc(
            "invalid port-level connection pool",
            "ingress:\n- port: {protocol: tcp, number: 90, name: foo}\n  connectionPool: {}",
            Err("connection"),
        ),
    ]
}

#[test]
fn sidecar_tls_and_connection_pools() {
    check(&sidecar_more_cases());
}

// ---------------------------------------------------------------------------------------
// RequestAuthentication, PeerAuthentication (TestValidateRequestAuthentication,
// TestValidatePeerAuthentication). The dry-run annotation case is not here (annotations).

fn authentication_cases() -> Vec<Case> {
    let ra =
        |name: &str, spec: &str, expect: Expect| c(name, "RequestAuthentication", spec, expect);
    let pa = |name: &str, spec: &str, expect: Expect| c(name, "PeerAuthentication", spec, expect);
    let rule = |extra: &str| {
        format!(
            "jwtRules:\n- issuer: foo.com\n  jwksUri: https://foo.com\n{}",
            nest(extra, 2)
        )
    };
    let gw = "group: gateway.networking.k8s.io, kind: Gateway";
    let good_rules = "jwtRules:\n- {issuer: foo.com, jwksUri: https://foo.com/cert}\n";
    let jwks = r#"{ "keys":[ {"e":"AQAB","kid":"DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ","kty":"RSA","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}"#;
    vec![
        ra("empty spec", "{}", Ok),
        ra("another empty spec", "selector: {}", Warn("without labels")),
        ra("non empty selector", "selector: {matchLabels: {app: httpbin}}", Ok),
        ra("empty jwt rule", "jwtRules:\n- {}", Err("issuer")),
        ra("empty issuer", "jwtRules:\n- {issuer: \"\"}", Err("issuer")),
        ra(
            "bad JwksUri - no protocol",
            "jwtRules:\n- {issuer: foo.com, jwksUri: foo.com}",
            Err("jwksUri"),
        ),
        ra(
            "bad JwksUri - invalid port",
            "jwtRules:\n- {issuer: foo.com, jwksUri: \"https://foo.com:not-a-number\"}",
            Err("jwksUri"),
        ),
        ra(
            "empty value",
            &format!("selector: {{matchLabels: {{app: httpbin, version: \"\"}}}}\n{good_rules}"),
            Ok,
        ),
        ra(
            "bad workload selector - empty key",
            &format!("selector: {{matchLabels: {{app: httpbin, \"\": v1}}}}\n{good_rules}"),
            Err("key"),
        ),
        ra("good targetRef", &format!("targetRef: {{{gw}, name: foo}}\n{good_rules}"), Ok),
        ra("bad targetRef - empty name", &format!("targetRef: {{{gw}}}\n{good_rules}"), Err("name")),
        ra(
            "bad targetRef - non-empty namespace",
            &format!("targetRef: {{{gw}, name: foo, namespace: bar}}\n{good_rules}"),
            Err("namespace"),
        ),
        ra(
            "bad targetRef - wrong group",
            &format!("targetRef: {{group: wrong-group, kind: Gateway, name: foo}}\n{good_rules}"),
            Err("wrong-group"),
        ),
        ra(
            "bad targetRef - wrong kind",
            &format!("targetRef: {{group: gateway.networking.k8s.io, kind: wrong-kind, name: foo}}\n{good_rules}"),
            Err("wrong-kind"),
        ),
        ra(
            "targetRef and selector cannot both be set",
            &format!("targetRef: {{{gw}, name: foo}}\nselector: {{matchLabels: {{app: httpbin}}}}\n{good_rules}"),
            Err("selector"),
        ),
        ra("bad header location", &rule("fromHeaders: [{name: \"\", prefix: \"Bearer \"}]"), Err("fromHeaders")),
        ra("bad param location", &rule("fromParams: [\"\"]"), Err("fromParams")),
        ra("good", &rule("fromHeaders: [{name: x-foo, prefix: \"Bearer \"}]"), Ok),
        ra("bad cookie location", &rule("fromCookies: [\"\", foo]"), Err("fromCookies")),
        ra(
            "jwks ok",
            &format!("jwtRules:\n- issuer: foo.com\n  jwks: '{jwks}'\n  fromHeaders: [{{name: x-foo, prefix: \"Bearer \"}}]"),
            Ok,
        ),
        ra(
            "jwks error",
            "jwtRules:\n- issuer: foo.com\n  jwks: foo\n  fromHeaders: [{name: x-foo, prefix: \"Bearer \"}]",
            Err("jwks"),
        ),
        ra("null outputClaimToHeader", &rule("outputClaimToHeaders: [{}]"), Err("outputClaimToHeaders")),
        ra(
            "empty claim in outputClaimToHeader",
            &rule("outputClaimToHeaders: [{header: x-jwt-claim, claim: \"\"}]"),
            Err("claim"),
        ),
        ra(
            "empty header in outputClaimToHeader",
            &rule("outputClaimToHeaders: [{header: \"\", claim: sub}]"),
            Err("header"),
        ),
        ra(
            "invalid header in outputClaimToHeader",
            &rule("outputClaimToHeaders: [{header: \"abc%123\", claim: sub}]"),
            Err("abc%123"),
        ),
        pa("empty spec", "{}", Ok),
        pa("empty mtls with selector of empty labels", "selector: {}", Warn("without labels")),
        pa("default name with non empty selector", "selector: {matchLabels: {app: httpbin}}", Ok),
        pa(
            "empty port level mtls",
            "selector: {matchLabels: {app: httpbin}}\nportLevelMtls: {}",
            // (Istio's JSON decoder allocates the map for `{}`, so this is its non-nil case.)
            Err("portLevelMtls"),
        ),
        pa(
            "empty selector with port level mtls",
            "portLevelMtls: {8080: {mode: UNSET}}",
            Err("portLevelMtls"),
        ),
        pa(
            "port 0",
            "selector: {matchLabels: {app: httpbin}}\nportLevelMtls: {0: {mode: UNSET}}",
            Err("port"),
        ),
        pa("unset mode", "mtls: {mode: UNSET}", Ok),
        pa(
            "port level",
            "selector: {matchLabels: {app: httpbin}}\nportLevelMtls: {8080: {mode: UNSET}}",
            Ok,
        ),
    ]
}

#[test]
fn request_and_peer_authentication() {
    check(&authentication_cases());
}

// ---------------------------------------------------------------------------------------
// exportTo (Test_validateExportTo) on VirtualService (not a ServiceEntry), ServiceEntry, and
// DestinationRule with a workloadSelector; the resource's namespace is "bar".

fn export_to_cases() -> Vec<Case> {
    let vs = |name: &str, export: &str, expect: Expect| {
        c(
            &format!("vs exportTo: {name}"),
            "VirtualService",
            &format!("hosts: [foo.bar]\nhttp:\n- route: [{{destination: {{host: foo.bar}}}}]\nexportTo: {export}"),
            expect,
        )
    };
    let se = |name: &str, export: &str, expect: Expect| {
        c(
            &format!("se exportTo: {name}"),
            "ServiceEntry",
            &format!("hosts: [foo.bar]\nports: [{{number: 80, name: http, protocol: HTTP}}]\nexportTo: {export}"),
            expect,
        )
    };
    let dr = |name: &str, export: &str, expect: Expect| {
        c(
            &format!("dr with selector exportTo: {name}"),
            "DestinationRule",
            &format!(
                "host: foo.bar\nworkloadSelector: {{matchLabels: {{app: a}}}}\nexportTo: {export}"
            ),
            expect,
        )
    };
    vec![
        vs("empty is okay", "[]", Ok),
        vs("* is allowed", "[\"*\"]", Ok),
        vs(". and ns1 are allowed", "[., ns1]", Ok),
        vs("bunch of namespaces", "[ns1, ns2, bar]", Ok),
        se("~ is allowed for service entries", "[\"~\"]", Ok),
        vs(
            "~ not allowed for non service entry configs",
            "[\"~\", ns1]",
            Err("~"),
        ),
        vs(". and * together are not allowed", "[., \"*\"]", Err("*")),
        vs(
            "* and ns1 together are not allowed",
            "[\"*\", ns1]",
            Err("*"),
        ),
        vs(". and same namespace", "[., bar]", Err("duplicate")),
        vs("duplicate namespaces", "[ns1, ns2, ns1]", Err("duplicate")),
        se(
            "duplicate none in service entry",
            "[\"~\", \"~\", ns1]",
            Err("~"),
        ),
        vs("invalid namespace names", "[ns1_]", Err("ns1_")),
        se(
            "none and other namespaces in service entry",
            "[\"~\", ns1]",
            Err("~"),
        ),
        dr("* is not allowed", "[\"*\"]", Err("exportTo")),
        dr(". is allowed", "[.]", Ok),
        dr(
            "another namespace is not allowed",
            "[somens]",
            Err("exportTo"),
        ),
        dr(
            "another namespace beside . is not allowed",
            "[., somens]",
            Err("exportTo"),
        ),
    ]
}

#[test]
fn export_to() {
    check(&export_to_cases());
}

// ---------------------------------------------------------------------------------------
// Telemetry (TestValidateTelemetry)

fn telemetry_cases() -> Vec<Case> {
    let t = |name: &str, spec: &str, expect: Expect| c(name, "Telemetry", spec, expect);
    let tag = "tracing:\n- customTags: {clusterID: {environment: {name: FOO}}}\n";
    vec![
        t("empty", "{}", Ok),
        t("multiple providers", "tracing:\n- providers: [{name: a}, {name: b}]", Warn("multiple providers")),
        t("multiple tracers", "tracing: [{}, {}]", Warn("multiple tracing")),
        t(
            "bad randomSamplingPercentage",
            "tracing:\n- randomSamplingPercentage: 101",
            Err("randomSamplingPercentage"),
        ),
        t("tracing with a good custom tag", tag, Ok),
        t(
            "tracing with a nil custom tag",
            "tracing:\n- customTags: {clusterID: null}",
            Err("clusterID"),
        ),
        t(
            "bad metrics operation",
            "metrics:\n- overrides:\n  - tagOverrides: {my-tag: {operation: UPSERT, value: \"\"}}",
            Err("must be set when operation is UPSERT"),
        ),
        t(
            "good metrics operation",
            "metrics:\n- overrides:\n  - tagOverrides: {my-tag: {operation: UPSERT, value: some-cel-expression}}",
            Ok,
        ),
        t(
            "metrics REMOVE with a value",
            "metrics:\n- overrides:\n  - tagOverrides: {my-tag: {operation: REMOVE, value: x}}",
            Err("only be set when operation is UPSERT"),
        ),
        t(
            "multi-accessloggings",
            "accessLogging:\n- providers: [{name: envoy}]\n- providers: [{name: otel}]",
            Ok,
        ),
        t(
            "multi-accesslogging-providers",
            "accessLogging:\n- providers: [{name: envoy}, {name: otel}]",
            Ok,
        ),
        t("access logging provider without name", "accessLogging:\n- providers: [{}]", Err("providers.name")),
        t(
            "good targetRef",
            &format!("{tag}targetRef: {{group: gateway.networking.k8s.io, kind: Gateway, name: foo}}"),
            Ok,
        ),
        t(
            "bad targetRef - empty name",
            &format!("{tag}targetRef: {{group: gateway.networking.k8s.io, kind: Gateway}}"),
            Err("name"),
        ),
        t(
            "bad targetRef - non-empty namespace",
            &format!("{tag}targetRef: {{group: gateway.networking.k8s.io, kind: Gateway, name: foo, namespace: bar}}"),
            Err("namespace must not be set"),
        ),
        t(
            "bad targetRef - wrong group",
            &format!("{tag}targetRef: {{group: wrong-group, kind: Gateway, name: foo}}"),
            Err("wrong-group"),
        ),
        t(
            "bad targetRef - wrong kind",
            &format!("{tag}targetRef: {{group: gateway.networking.k8s.io, kind: wrong-kind, name: foo}}"),
            Err("wrong-kind"),
        ),
        t(
            "targetRef and selector cannot both be set",
            &format!("{tag}targetRef: {{group: gateway.networking.k8s.io, kind: Gateway, name: foo}}\nselector: {{matchLabels: {{app: httpbin}}}}"),
            Err("only one of"),
        ),
        t("selector without labels", "selector: {}", Warn("without labels")),
        t(
            "literal tag without value",
            "tracing:\n- customTags: {team: {literal: {value: \"\"}}}",
            Err("literal"),
        ),
    ]
}

#[test]
fn telemetry() {
    check(&telemetry_cases());
}

// ---------------------------------------------------------------------------------------
// Shared checks (pkg/config/validation/agent validation_test.go): TestValidateTLS (client
// TLS of a DestinationRule), TestValidateWildcardDomain (DestinationRule host),
// TestValidateWildcardDomainForVirtualServiceBoundToGateway, TestValidateLocalityLbSetting,
// TestValidateLocalities, TestValidationIPAddress/IPSubnet (ServiceEntry addresses),
// TestValidatePort (ServiceEntry ports), TestValidateFQDN (DNS endpoint addresses).

fn agent_cases() -> Vec<Case> {
    let client_tls = |name: &str, tls: &str, expect: Expect| {
        c(
            &format!("client tls: {name}"),
            "DestinationRule",
            &format!("host: reviews\ntrafficPolicy:\n  tls: {tls}"),
            expect,
        )
    };
    let dr_host = |name: &str, host: &str, expect: Expect| {
        c(
            &format!("wildcard domain: {name}"),
            "DestinationRule",
            &format!("host: \"{host}\""),
            expect,
        )
    };
    let sni_vs = |name: &str, host: &str, expect: Expect| {
        c(
            &format!("gateway-bound SNI host: {name}"),
            "VirtualService",
            &format!(
                "hosts: [\"{host}\"]\ngateways: [ns1/gateway]\ntls:\n- match: [{{sniHosts: [\"{host}\"]}}]\n  route: [{{destination: {{host: istio.istio-system.svc.cluster.local}}}}]"
            ),
            expect,
        )
    };
    let locality = |name: &str, lb: &str, outlier: bool, expect: Expect| {
        let od = if outlier {
            "\n  outlierDetection: {consecutive5xxErrors: 5}"
        } else {
            ""
        };
        c(
            &format!("locality: {name}"),
            "DestinationRule",
            &format!(
                "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting: {lb}{od}"
            ),
            expect,
        )
    };
    let distribute_from = |name: &str, froms: &[&str], expect: Expect| {
        let items: Vec<String> = froms
            .iter()
            .map(|f| format!("{{from: \"{f}\", to: {{\"x/y/z\": 100}}}}"))
            .collect();
        locality(
            name,
            &format!("{{distribute: [{}]}}", items.join(", ")),
            true,
            expect,
        )
    };
    let address = |name: &str, addr: &str, expect: Expect| {
        c(
            &format!("address: {name}"),
            "ServiceEntry",
            &format!("hosts: [a.example.com]\naddresses: [\"{addr}\"]\nports: [{{number: 80, name: http, protocol: HTTP}}]\nresolution: NONE"),
            expect,
        )
    };
    let port = |n: i64, expect: Expect| {
        c(
            &format!("port {n}"),
            "ServiceEntry",
            &format!(
                "hosts: [a.example.com]\nports: [{{number: {n}, name: http, protocol: HTTP}}]"
            ),
            expect,
        )
    };
    let fqdn = |name: &str, addr: &str, expect: Expect| {
        c(
            &format!("fqdn: {name}"),
            "ServiceEntry",
            &format!("hosts: [a.example.com]\nports: [{{number: 80, name: http, protocol: HTTP}}]\nresolution: DNS\nendpoints: [{{address: \"{addr}\"}}]"),
            expect,
        )
    };
    let long = "x".repeat(256);
    let label63 = "x".repeat(63);
    vec![
        client_tls("SIMPLE credentialName", "{mode: SIMPLE, credentialName: some-credential}", Ok),
        client_tls(
            "SIMPLE credentialName with clientCertificate",
            "{mode: SIMPLE, credentialName: credential, clientCertificate: cert}",
            Err("clientCertificate"),
        ),
        client_tls(
            "SIMPLE credentialName with privateKey",
            "{mode: SIMPLE, credentialName: credential, privateKey: key}",
            Err("privateKey"),
        ),
        client_tls(
            "SIMPLE credentialName with caCertificates",
            "{mode: SIMPLE, credentialName: credential, caCertificates: ca}",
            Err("caCertificates"),
        ),
        client_tls("MUTUAL credentialName", "{mode: MUTUAL, credentialName: some-credential}", Ok),
        client_tls(
            "MUTUAL credentialName with clientCertificate",
            "{mode: MUTUAL, credentialName: credential, clientCertificate: cert}",
            Err("clientCertificate"),
        ),
        client_tls(
            "MUTUAL credentialName with privateKey",
            "{mode: MUTUAL, credentialName: credential, privateKey: key}",
            Err("privateKey"),
        ),
        client_tls(
            "MUTUAL credentialName with caCertificates",
            "{mode: MUTUAL, credentialName: credential, caCertificates: ca}",
            Err("caCertificates"),
        ),
        client_tls(
            "MUTUAL credentialName with caCrl",
            "{mode: MUTUAL, credentialName: credential, caCrl: ca}",
            Err("caCrl"),
        ),
        client_tls("MUTUAL certificate and key", "{mode: MUTUAL, clientCertificate: cert, privateKey: key}", Ok),
        client_tls(
            "MUTUAL certificate without key",
            "{mode: MUTUAL, clientCertificate: cert}",
            Err("privateKey"),
        ),
        client_tls(
            "MUTUAL key without certificate",
            "{mode: MUTUAL, privateKey: key}",
            Err("clientCertificate"),
        ),
        dr_host("empty", "", Err("host")),
        dr_host("too long", &long, Err("255")),
        dr_host("happy", &label63, Ok),
        dr_host("wildcard", "*", Ok),
        dr_host("wildcard multi-segment", "*.bar.com", Ok),
        dr_host("wildcard single segment", "*foo", Ok),
        dr_host("wildcard prefix", "*foo.bar.com", Ok),
        dr_host("wildcard prefix dash", "*-foo.bar.com", Ok),
        dr_host("bad wildcard in the middle", "foo.*.com", Err("host")),
        dr_host("bad wildcard suffix", "foo*.bar.com", Err("host")),
        dr_host("IP address", "1.1.1.1", Err("all-numeric")),
        dr_host("underscore", "foo_bar.example.com", Err("labels")),
        sni_vs("SNI domain", "outbound_.80_._.e2e.foobar.mesh", Ok),
        sni_vs("plain name", "outbound.com", Ok),
        sni_vs("not outbound_", "neverbound_.80_._.e2e.foobar.mesh", Err("host")),
        sni_vs("port not a number", "outbound_.thisIsNotAPort_._.e2e.foobar.mesh", Err("port")),
        sni_vs("no host name", "outbound_.80_._", Err("outbound_")),
        locality(
            "distribute total weight > 100",
            "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 25}}]}",
            true,
            Err("100"),
        ),
        locality(
            "distribute total weight < 100",
            "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 15}}]}",
            true,
            Err("100"),
        ),
        locality(
            "distribute weight = 0",
            "{distribute: [{from: a/b/c, to: {a/b/c: 0, a/b1: 100}}]}",
            true,
            Err("0"),
        ),
        locality(
            "distribute and failover together",
            "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 20}}], failover: [{from: region1, to: region2}]}",
            true,
            Err("failover"),
        ),
        locality(
            "failover to the same region",
            "{failover: [{from: region1, to: region1}]}",
            true,
            Err("region1"),
        ),
        locality("failover from '*'", "{failover: [{from: \"*\", to: region2}]}", true, Err("*")),
        locality("failover to '*'", "{failover: [{from: region1, to: \"*\"}]}", true, Err("*")),
        locality(
            "failover from a zone",
            "{failover: [{from: region1/zone1, to: region2}]}",
            true,
            Err("region1/zone1"),
        ),
        locality(
            "failover to a zone",
            "{failover: [{from: region1, to: region2/zone1}]}",
            true,
            Err("region2/zone1"),
        ),
        locality(
            "failoverPriority without outlier detection",
            "{failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region, topology.kubernetes.io/zone, topology.istio.io/subzone]}",
            false,
            Warn("outlier"),
        ),
        locality(
            "failover without outlier detection",
            "{failover: [{from: us-east, to: eu-west}, {from: us-west, to: eu-east}]}",
            false,
            Warn("outlier"),
        ),
        locality(
            "failoverPriority and failover regions together",
            "{failover: [{from: region1, to: region2}], failoverPriority: [topology.kubernetes.io/region]}",
            true,
            Err("failoverPriority"),
        ),
        distribute_from("multi wildcard locality", &["*/zone/*"], Err("*/zone/*")),
        distribute_from("wildcard not in suffix", &["*/zone"], Err("*/zone")),
        distribute_from("explicit wildcard region overlap", &["*", "a/b/c"], Err("a/b/c")),
        distribute_from("implicit wildcard region overlap", &["a", "a/b/c"], Err("a/b/c")),
        distribute_from("explicit wildcard zone overlap", &["a/*", "a/b/c"], Err("a/b/c")),
        distribute_from("implicit wildcard zone overlap", &["a/b", "a/b/c"], Err("a/b/c")),
        distribute_from("explicit wildcard subzone overlap", &["a/b/*", "a/b/c"], Err("a/b/c")),
        distribute_from(
            "valid localities",
            &["a1/*", "a2/*", "a3/b3/c3", "a4/b4", "a5/b5/*"],
            Ok,
        ),
        address("valid ipv4 address", "1.1.1.1", Ok),
        address("invalid ipv4 address", "1.1.A.1", Err("1.1.A.1")),
        address("valid ipv6 address", "2001:1::1", Ok),
        address("invalid ipv6 address", "2001:1:G::1", Err("2001:1:G::1")),
        address("valid ipv4 subnet", "1.1.1.1/24", Ok),
        address("invalid ipv4 subnet", "1.1.1.1/48", Err("1.1.1.1/48")),
        address("valid ipv6 subnet", "2001:1::1/64", Ok),
        address("invalid ipv6 subnet", "2001:1::1/132", Err("2001:1::1/132")),
        port(0, Err("port")),
        port(65536, Err("port")),
        port(-1, Err("number")),
        port(100, Valid),
        port(65535, Valid),
        fqdn("standard", "istio.io", Ok),
        fqdn("unambiguous", "istio.io.", Ok),
        fqdn("kubernetes", "istio-pilot.istio-system.svc.cluster.local", Ok),
        fqdn("unambiguous kubernetes", "istio-pilot.istio-system.svc.cluster.local.", Ok),
        fqdn("long", &long, Err("address")),
    ]
}

#[test]
fn shared_checks() {
    check(&agent_cases());
}

// ---------------------------------------------------------------------------------------
// AuthorizationPolicy values and RequestAuthentication jwksUri (pkg/config/security
// security_test.go: TestValidateCondition, TestCheckValidPathTemplate, TestParseJwksURI).

fn security_value_cases() -> Vec<Case> {
    let cond = |key: &str, values: &str, expect: Expect| {
        c(
            &format!("condition {key} {values}"),
            "AuthorizationPolicy",
            &format!("rules:\n- when:\n  - key: \"{key}\"\n    values: {values}"),
            expect,
        )
    };
    let path = |name: &str, paths: &str, expect: Expect| {
        c(
            &format!("path template: {name}"),
            "AuthorizationPolicy",
            &format!("rules:\n- to:\n  - operation: {{paths: {paths}}}"),
            expect,
        )
    };
    let jwks = |uri: &str, expect: Expect| {
        c(
            &format!("jwksUri {uri}"),
            "RequestAuthentication",
            &format!("jwtRules:\n- issuer: foo.com\n  jwksUri: \"{uri}\""),
            expect,
        )
    };
    vec![
        cond(
            "request.headers[:authority]",
            "[productpage, \"\"]",
            Err("values"),
        ),
        cond("request.headers[:authority]", "[productpage]", Ok),
        cond(
            "request.headers[]",
            "[productpage]",
            Err("request.headers[]"),
        ),
        cond("source.ip", "[1.2.3.4, 5.6.7.0/24]", Ok),
        cond("source.ip", "[a.b.c.d]", Err("a.b.c.d")),
        cond("remote.ip", "[1.2.3.4, 5.6.7.0/24]", Ok),
        cond("remote.ip", "[a.b.c.d]", Err("a.b.c.d")),
        cond("source.namespace", "[value]", Ok),
        cond("source.user", "[value]", Err("source.user")),
        cond("source.principal", "[value]", Ok),
        cond("request.auth.principal", "[value]", Ok),
        cond("request.auth.audiences", "[value]", Ok),
        cond("request.auth.presenter", "[value]", Ok),
        cond("request.auth.claims[id]", "[\"123\"]", Ok),
        cond(
            "request.auth.claims[]",
            "[value]",
            Err("request.auth.claims[]"),
        ),
        cond("destination.ip", "[1.2.3.4, 5.6.7.0/24]", Ok),
        cond("destination.ip", "[a.b.c.d]", Err("a.b.c.d")),
        cond("destination.port", "[\"80\", \"90\"]", Ok),
        cond("destination.port", "[\"80\", x]", Err("x")),
        cond(
            "destination.labels[app]",
            "[value]",
            Err("destination.labels"),
        ),
        cond("destination.name", "[value]", Err("destination.name")),
        cond(
            "destination.namespace",
            "[value]",
            Err("destination.namespace"),
        ),
        cond("destination.user", "[value]", Err("destination.user")),
        cond("connection.sni", "[value]", Ok),
        cond("experimental.envoy.filters.a.b[c]", "[value]", Ok),
        cond(
            "experimental.envoy.filters.a.b.x",
            "[value]",
            Err("experimental"),
        ),
        path("matchOneTemplate", "[\"/{*}/foo\"]", Ok),
        path("matchAnyTemplate", "[\"/foo/{**}/bar\"]", Ok),
        path("empty curly braces", "[\"/{*}/foo/{}/bar\"]", Err("{}")),
        path(
            "matchOneTemplate with *",
            "[\"/foo/{*}/bar/*\"]",
            Err("/foo/{*}/bar/*"),
        ),
        path(
            "matchOneTemplate with **",
            "[\"/foo/{*}/bar/**/buzz\"]",
            Err("/foo/{*}/bar/**/buzz"),
        ),
        path(
            "named variable {buzz}",
            "[\"/foo/{buzz}/bar/{**}.txt\"]",
            Err("{buzz}"),
        ),
        path(
            "named variable {buzz=*}",
            "[\"/foo/{buzz=*}/bar/{**}.txt\"]",
            Err("{buzz=*}"),
        ),
        path(
            "named variable {buzz=**}",
            "[\"/{*}/foo/{buzz=**}/bar\"]",
            Err("{buzz=**}"),
        ),
        jwks("foo.bar.com", Err("jwksUri")),
        jwks("tcp://foo.bar.com:abc", Err("jwksUri")),
        jwks("http://foo.bar.com:abc", Err("jwksUri")),
        jwks("http://foo.bar.com", Ok),
        jwks("https://foo.bar.com", Ok),
        jwks("http://foo.bar.com:1234", Ok),
        jwks("https://foo.bar.com:1234/secure/key", Ok),
    ]
}

#[test]
fn security_values() {
    check(&security_value_cases());
}

// ---------------------------------------------------------------------------------------
// Rules of validation.go without a table case of their own (fault, CORS maxAge precision,
// redirect scheme/port, regex length, retryOn status codes, subsets, probes, JWT rules).

fn rule_cases() -> Vec<Case> {
    let long_regex = format!(
        "rewrite: {{uriRegexRewrite: {{match: \"{}\", rewrite: /x}}}}",
        "a".repeat(1025)
    );
    let ra = |name: &str, rule: &str, expect: Expect| {
        c(
            name,
            "RequestAuthentication",
            &format!(
                "jwtRules:\n- issuer: foo.com\n  jwksUri: https://foo.com/keys\n{}",
                nest(rule, 2)
            ),
            expect,
        )
    };
    let wg = |name: &str, probe: &str, expect: Expect| {
        c(
            name,
            "WorkloadGroup",
            &format!("template: {{}}\nprobe: {probe}"),
            expect,
        )
    };
    vec![
        routed("fault without abort or delay", "fault: {}", Err("fault")),
        routed(
            "abort without error type",
            "fault: {abort: {percentage: {value: 5}}}",
            Warn("abort"),
        ),
        routed(
            "abort http2Error",
            "fault: {abort: {http2Error: CANCEL}}",
            Err("http2Error"),
        ),
        routed(
            "exponential delay",
            "fault: {delay: {exponentialDelay: 1s}}",
            Err("exponentialDelay"),
        ),
        routed(
            "cors maxAge with sub-second part",
            "corsPolicy: {allowOrigins: [{exact: a.com}], maxAge: 1.5s}",
            Err("maxAge"),
        ),
        routed(
            "cors allowHeaders *",
            "corsPolicy: {allowOrigins: [{exact: a.com}], allowHeaders: [\"*\"]}",
            Ok,
        ),
        http("redirect scheme only", "redirect: {scheme: https}", Ok),
        http("redirect port only", "redirect: {port: 8443}", Ok),
        http(
            "redirect bad scheme",
            "redirect: {uri: /x, scheme: ftp}",
            Err("scheme"),
        ),
        http(
            "redirect port out of range",
            "redirect: {uri: /x, port: 70000}",
            Err("port"),
        ),
        routed("regex longer than 1024", &long_regex, Err("1024")),
        routed(
            "retryOn HTTP status 418",
            "retries: {attempts: 2, retryOn: \"418\"}",
            Ok,
        ),
        routed(
            "retryOn unknown status 999",
            "retries: {attempts: 2, retryOn: \"999\"}",
            Err("999"),
        ),
        routed("timeout below 1ms", "timeout: 0.0005s", Err("timeout")),
        http(
            "destination subset not a DNS label",
            "route: [{destination: {host: foo.bar, subset: v_1}}]",
            Err("subset"),
        ),
        http(
            "destination port 0",
            "route: [{destination: {host: foo.bar, port: {number: 0}}}]",
            Err("port"),
        ),
        http(
            "destination host is an IP",
            "route: [{destination: {host: 10.0.0.1}}]",
            Err("host"),
        ),
        ra(
            "JWT empty audience",
            "audiences: [a, \"\"]",
            Err("audiences"),
        ),
        ra("JWT timeout below 1ms", "timeout: 0.0001s", Err("timeout")),
        ra(
            "JWT outputClaimToHeaders invalid header name",
            "outputClaimToHeaders: [{header: \"bad header\", claim: sub}]",
            Err("bad header"),
        ),
        wg(
            "probe negative periodSeconds",
            "{periodSeconds: -1, tcpSocket: {port: 5}}",
            Err("periodSeconds"),
        ),
        wg(
            "probe negative failureThreshold",
            "{failureThreshold: -1, tcpSocket: {port: 5}}",
            Err("failureThreshold"),
        ),
        wg(
            "probe http scheme ftp",
            "{httpGet: {port: 5, scheme: ftp}}",
            Err("scheme"),
        ),
        wg(
            "probe http header with bad name",
            "{httpGet: {port: 5, httpHeaders: [{name: \"bad header\", value: x}]}}",
            Err("bad header"),
        ),
        c(
            "WorkloadGroup without template",
            "WorkloadGroup",
            "metadata: {labels: {app: a}}",
            Err("template"),
        ),
    ]
}

#[test]
fn validation_go_rules() {
    check(&rule_cases());
}

// ---------------------------------------------------------------------------------------
// pkg/config/validation/virtualservice.go: route conflicts, delegation, authority rewrites,
// match requests and header operation names.

fn http_rule_cases() -> Vec<Case> {
    let dest = "route: [{destination: {host: foo.baz}}]";
    let gw_vs = |name: &str, rule: &str, expect: Expect| {
        let mut spec = String::from("hosts: [foo.bar]\ngateways: [ns1/gw]\nhttp:\n");
        for (i, l) in dedent(rule).iter().enumerate() {
            spec.push_str(if i == 0 { "- " } else { "  " });
            spec.push_str(l);
            spec.push('\n');
        }
        c(name, "VirtualService", &spec, expect)
    };
    let delegate_vs = |name: &str, rule: &str, expect: Expect| {
        c(name, "VirtualService", &format!("http:\n- {rule}"), expect)
    };
    let matched =
        |name: &str, m: &str, expect: Expect| routed(name, &format!("match:\n- {m}"), expect);
    let hdr =
        |name: &str, ops: &str, expect: Expect| routed(name, &format!("headers: {ops}"), expect);
    vec![
        http("root route with delegate", "delegate: {name: d, namespace: ns}", Ok),
        http(
            "root route with delegate and route",
            &format!("delegate: {{name: d, namespace: ns}}\n{dest}"),
            Err("delegate"),
        ),
        http(
            "root route with delegate and redirect",
            "delegate: {name: d, namespace: ns}\nredirect: {uri: /x}",
            Err("delegate"),
        ),
        delegate_vs("delegate route with delegate", "delegate: {name: d, namespace: ns}", Err("delegate")),
        delegate_vs("delegate route", dest, Ok),
        http("redirect and fault", "redirect: {uri: /x}\nfault: {abort: {httpStatus: 500}}", Err("fault")),
        http("redirect and rewrite", "redirect: {uri: /x}\nrewrite: {uri: /y}", Err("rewrite")),
        http(
            "redirect and directResponse",
            "redirect: {uri: /x}\ndirectResponse: {status: 200}",
            Err("directResponse"),
        ),
        http(
            "directResponse and route",
            &format!("directResponse: {{status: 200}}\n{dest}"),
            Err("directResponse"),
        ),
        http(
            "directResponse and fault",
            "directResponse: {status: 200}\nfault: {abort: {httpStatus: 500}}",
            Err("fault"),
        ),
        http(
            "directResponse and rewrite",
            "directResponse: {status: 200}\nrewrite: {uri: /y}",
            Err("rewrite"),
        ),
        hdr(
            "authority set twice (set :authority and add host)",
            "{request: {set: {\":authority\": a.com}, add: {host: b.com}}}",
            Err("authority"),
        ),
        routed(
            "host header set with rewrite authority",
            "rewrite: {authority: a.com}\nheaders: {request: {set: {Host: b.com}}}",
            Err("authority"),
        ),
        hdr("request set Host", "{request: {set: {Host: b.com}}}", Ok),
        hdr("request set :path", "{request: {set: {\":path\": /x}}}", Err(":path")),
        hdr("request remove host", "{request: {remove: [host]}}", Err("host")),
        hdr("response set host", "{response: {set: {host: x}}}", Err("host")),
        hdr("response set :status", "{response: {set: {\":status\": \"200\"}}}", Err(":status")),
        hdr("response remove :authority", "{response: {remove: [\":authority\"]}}", Err(":authority")),
        matched("uri empty prefix", "uri: {prefix: \"\"}", Ok),
        matched("uri empty regex", "uri: {regex: \"\"}", Err("regex")),
        matched("uri bad regex", "uri: {regex: \"(a\"}", Err("regex")),
        matched("method empty prefix", "method: {prefix: \"\"}", Err("method")),
        matched("scheme empty prefix", "scheme: {prefix: \"\"}", Err("scheme")),
        matched("authority empty prefix", "authority: {prefix: \"\"}", Err("authority")),
        matched("queryParams empty prefix", "queryParams: {a: {prefix: \"\"}}", Err("queryParams")),
        matched("header bad regex", "headers: {x-a: {regex: \"[\"}}", Err("regex")),
        matched("header name not a token", "headers: {\"x a\": {exact: b}}", Err("x a")),
        matched("withoutHeaders regex *", "withoutHeaders: {x-a: {regex: \"*\"}}", Ok),
        matched("match port 0 (unset)", "port: 0", Ok),
        matched("match port 70000", "port: 70000", Err("port")),
        matched("match sourceLabels invalid", "sourceLabels: {\"bad key!\": v}", Err("label")),
        matched("match gateways invalid", "gateways: [\"b@d\"]", Err("gateway")),
        matched("match sourceNamespace invalid", "sourceNamespace: Bad_NS", Err("sourceNamespace")),
        gw_vs(
            "JWT claim header match at a gateway",
            &format!("match: [{{headers: {{\"@request.auth.claims.group\": {{exact: admin}}}}}}]\n{dest}"),
            Ok,
        ),
        gw_vs(
            "JWT claim withoutHeaders at a gateway",
            &format!("match: [{{withoutHeaders: {{\"@request.auth.claims.group\": {{exact: admin}}}}}}]\n{dest}"),
            Ok,
        ),
    ]
}

#[test]
fn http_rules() {
    check(&http_rule_cases());
}

// ---------------------------------------------------------------------------------------
// validation.go DestinationRule and Sidecar rules without table cases: tunnel, proxy
// protocol, consistent hash, warmup, port-level settings, Sidecar ports and binds.

fn traffic_rule_cases() -> Vec<Case> {
    let tp = |name: &str, policy: &str, expect: Expect| {
        c(
            &format!("traffic policy: {name}"),
            "DestinationRule",
            &format!("host: reviews\ntrafficPolicy:\n{}", nest(policy, 2)),
            expect,
        )
    };
    let sc = |name: &str, spec: &str, expect: Expect| c(name, "Sidecar", spec, expect);
    vec![
        tp(
            "tunnel and proxyProtocol together",
            "tunnel: {targetHost: a.example.com, targetPort: 443}\nproxyProtocol: {version: V1}",
            Err("proxyProtocol"),
        ),
        tp("tunnel CONNECT", "tunnel: {protocol: CONNECT, targetHost: a.example.com, targetPort: 443}", Ok),
        tp("tunnel POST to an IP", "tunnel: {protocol: POST, targetHost: 10.0.0.1, targetPort: 443}", Ok),
        tp(
            "tunnel protocol GET",
            "tunnel: {protocol: GET, targetHost: a.example.com, targetPort: 443}",
            Err("protocol"),
        ),
        tp(
            "tunnel target host invalid",
            "tunnel: {targetHost: \"a b\", targetPort: 443}",
            Err("targetHost"),
        ),
        tp("tunnel target port 0", "tunnel: {targetHost: a.example.com, targetPort: 0}", Err("targetPort")),
        tp("proxy protocol V2", "proxyProtocol: {version: V2}", Ok),
        tp(
            "ringHash and minimumRingSize together",
            "loadBalancer: {consistentHash: {httpHeaderName: x-user, minimumRingSize: 1024, ringHash: {minimumRingSize: 1024}}}",
            Err("minimumRingSize"),
        ),
        tp(
            "maglev tableSize unset",
            "loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {}}}",
            // Differs: Istio errors; Trellis defaults the table to 65537 (as Envoy does, and
            // as the model crate relies on) and warns that Istio would refuse it.
            Warn("tableSize"),
        ),
        tp(
            "maglev tableSize too large",
            "loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 5000011}}}",
            Err("tableSize"),
        ),
        tp(
            "maglev prime tableSize",
            "loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}",
            Ok,
        ),
        tp(
            "warmup duration below 1ms",
            "loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 0.0001s}",
            Err("warmupDurationSecs"),
        ),
        tp(
            "port-level settings without any policy",
            "portLevelSettings:\n- port: {number: 80}",
            Err("portLevelSettings"),
        ),
        tp(
            "port-level settings valid",
            "portLevelSettings:\n- port: {number: 80}\n  loadBalancer: {simple: LEAST_REQUEST}",
            Ok,
        ),
        tp(
            "port-level connection pool empty",
            "portLevelSettings:\n- port: {number: 80}\n  connectionPool: {}",
            Err("connectionPool"),
        ),
        tp(
            "tcp keepalive interval below 1ms",
            "connectionPool: {tcp: {tcpKeepalive: {interval: 0.0001s}}}",
            Err("interval"),
        ),
        tp(
            "idle timeout with sub-ms part",
            "connectionPool: {http: {idleTimeout: 1.0005s}}",
            Err("idleTimeout"),
        ),
        c(
            "DestinationRule workloadSelector with wildcard value",
            "DestinationRule",
            "host: reviews\nworkloadSelector: {matchLabels: {app: \"a*\"}}",
            Err("wildcard"),
        ),
        sc(
            "egress port with invalid name",
            "egress:\n- port: {number: 80, protocol: HTTP, name: Bad_Name}\n  hosts: [\"*/*\"]",
            Err("Bad_Name"),
        ),
        sc(
            "egress port with invalid protocol",
            "egress:\n- port: {number: 80, protocol: kafka, name: http}\n  hosts: [\"*/*\"]",
            Err("protocol"),
        ),
        sc(
            "egress bind not an IP",
            "egress:\n- port: {number: 80, protocol: HTTP, name: http}\n  bind: localhost\n  hosts: [\"*/*\"]",
            Err("bind"),
        ),
        sc(
            "egress port 0 without a unix bind",
            "egress:\n- port: {number: 0, protocol: HTTP, name: http}\n  hosts: [\"*/*\"]",
            Err("unix"),
        ),
        sc(
            "ingress bind not an IP",
            "ingress:\n- port: {number: 80, protocol: HTTP, name: http}\n  bind: localhost\n  defaultEndpoint: 127.0.0.1:8080",
            Err("bind"),
        ),
        sc(
            "ingress targetPort",
            "ingress:\n- port: {number: 80, protocol: HTTP, name: http, targetPort: 8080}\n  defaultEndpoint: 127.0.0.1:8080",
            Err("targetPort"),
        ),
        sc(
            "egress targetPort",
            "egress:\n- port: {number: 80, protocol: HTTP, name: http, targetPort: 8080}\n  hosts: [\"*/*\"]",
            Err("targetPort"),
        ),
        sc(
            "egressProxy host with wildcard",
            "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: {host: \"*.foo.bar\", port: {number: 80}}",
            Err("host"),
        ),
        tp(
            "consistent hash cookie without ttl",
            "loadBalancer: {consistentHash: {httpCookie: {name: user}}}",
            Ok,
        ),
        c(
            "Gateway port targetPort",
            "Gateway",
            "servers:\n- hosts: [foo.bar.com]\n  port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}",
            Err("targetPort"),
        ),
        sc(
            "outbound traffic policy REGISTRY_ONLY",
            "outboundTrafficPolicy: {mode: REGISTRY_ONLY}",
            Ok,
        ),
    ]
}

#[test]
fn traffic_and_sidecar_rules() {
    check(&traffic_rule_cases());
}

fn misc_cases() -> Vec<Case> {
    vec![
        c(
            "VirtualService exportTo ~ alone",
            "VirtualService",
            "hosts: [foo.bar]\nhttp:\n- route: [{destination: {host: foo.bar}}]\nexportTo: [\"~\"]",
            Err("~"),
        ),
        c(
            "DestinationRule exportTo ~",
            "DestinationRule",
            "host: reviews\nexportTo: [\"~\"]",
            Err("~"),
        ),
        c(
            "DestinationRule with selector exported to its own namespace by name",
            "DestinationRule",
            "host: reviews\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: [bar]",
            Ok,
        ),
        c(
            "ServiceEntry endpoint with invalid label",
            "ServiceEntry",
            "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, labels: {\"bad key!\": v}}]",
            Err("label"),
        ),
        c(
            "ServiceEntry endpoint port name invalid",
            "ServiceEntry",
            "hosts: [a.example.com]\nports: [{number: 80, name: Http_1, protocol: HTTP}]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, ports: {Http_1: 8080}}]",
            Err("Http_1"),
        ),
        c(
            "ServiceEntry STATIC endpoint with a host name",
            "ServiceEntry",
            "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\nendpoints: [{address: b.example.com}]",
            Err("b.example.com"),
        ),
        c(
            "ServiceEntry DNS endpoint with a port number 0",
            "ServiceEntry",
            "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS\nendpoints: [{address: b.example.com, ports: {http: 0}}]",
            Err("port"),
        ),
        c(
            "WorkloadEntry with invalid label",
            "WorkloadEntry",
            "address: 1.1.1.1\nlabels: {app: \"-bad\"}",
            Err("label"),
        ),
        c(
            "WorkloadEntry port name invalid",
            "WorkloadEntry",
            "address: 1.1.1.1\nports: {Bad_Name: 80}",
            Err("Bad_Name"),
        ),
        c(
            "WorkloadEntry port 0",
            "WorkloadEntry",
            "address: 1.1.1.1\nports: {http: 0}",
            Err("port"),
        ),
        c(
            "WorkloadEntry unix address relative",
            "WorkloadEntry",
            "address: unix://relative/path",
            Err("unix"),
        ),
        c(
            "PeerAuthentication port above 65535",
            "PeerAuthentication",
            "selector: {matchLabels: {app: a}}\nportLevelMtls: {70000: {mode: STRICT}}",
            Err("port"),
        ),
        c(
            "PeerAuthentication mode STRICT",
            "PeerAuthentication",
            "mtls: {mode: STRICT}",
            Ok,
        ),
        c(
            "AuthorizationPolicy AUDIT with rules",
            "AuthorizationPolicy",
            "action: AUDIT\nrules: [{to: [{operation: {paths: [/x]}}]}]",
            Ok,
        ),
        c(
            "AuthorizationPolicy CUSTOM without rules",
            "AuthorizationPolicy",
            "action: CUSTOM\nprovider: {name: ext}",
            Err("rules"),
        ),
        c(
            "AuthorizationPolicy CUSTOM with request.auth claims condition",
            "AuthorizationPolicy",
            "action: CUSTOM\nprovider: {name: ext}\nrules:\n- when: [{key: \"request.auth.claims[iss]\", values: [a]}]",
            Err("CUSTOM"),
        ),
        c(
            "AuthorizationPolicy DENY with port is not L7-only",
            "AuthorizationPolicy",
            "action: DENY\nrules:\n- to: [{operation: {ports: [\"8080\"], paths: [/admin]}}]",
            Ok,
        ),
        c(
            "RequestAuthentication targetRefs to a Service",
            "RequestAuthentication",
            "targetRefs: [{group: \"\", kind: Service, name: foo}]\njwtRules: [{issuer: a.com, jwksUri: https://a.com/k}]",
            Ok,
        ),
    ]
}

#[test]
fn misc() {
    check(&misc_cases());
}
