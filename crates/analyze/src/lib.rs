//! Trellis analyze: `istioctl analyze` over a resource set, with Istio's message codes.
//!
//! Owns the analyzers (`analyzers/`, one file per area), the message catalogue (`messages`) and
//! message rendering (`message`). Schema problems found while loading become IST0106
//! SchemaValidationError messages here, so one list carries everything. Does not read files
//! (`trellis_api::load`) or compile proxy config.

pub mod analyzers;
pub mod context;
pub mod message;
pub mod messages;

use trellis_api::load::ResourceSet;
use trellis_api::{MeshConfig, Severity};

pub use context::Context;
pub use message::{Message, OutputMessage};
pub use messages::{Level, MessageType};

/// Runs load-diagnostic conversion and every analyzer; messages come back sorted by level
/// (most severe first), then by file and line.
pub fn analyze(set: &ResourceSet, mesh: &MeshConfig) -> Vec<Message> {
    let mut out: Vec<Message> = set
        .diagnostics
        .iter()
        .map(|d| {
            let kind = match d.severity {
                Severity::Error => messages::SCHEMA_VALIDATION_ERROR,
                _ => messages::SCHEMA_WARNING,
            };
            let what = if kind == messages::SCHEMA_VALIDATION_ERROR {
                "Schema validation error"
            } else {
                "Schema validation warning"
            };
            let text = if d.field.is_empty() {
                format!("{what}: {}", d.message)
            } else {
                format!("{what}: {}: {}", d.field, d.message)
            };
            let mut m = Message::new(kind, text);
            m.resource = d.resource.clone();
            m.location = d.location.clone();
            m.precise = true;
            m
        })
        .collect();
    let mut cx = Context::new(&set.resources, mesh);
    analyzers::run_all(&mut cx);
    out.extend(cx.into_messages());
    sort_messages(&mut out);
    out.dedup();
    out
}

/// Most severe first, then by file, line, code.
pub fn sort_messages(messages: &mut [Message]) {
    messages.sort_by(|a, b| {
        let key = |m: &Message| {
            (
                std::cmp::Reverse(m.level),
                m.location
                    .as_ref()
                    .map(|l| (l.file.to_string(), l.line, l.column)),
                m.kind.code,
                m.text.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}
