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

#[test]
fn virtual_service_http_and_tcp_routes() {
    check(&http_route_more_cases());
}
