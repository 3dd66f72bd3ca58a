//! `Message`: one finding, with the resource it is about and where that resource was read.
//! Owns the text, JSON and YAML renderings (istioctl's formats).

use std::fmt;

use serde::Serialize;
use trellis_api::{Location, ResourceRef};

use crate::messages::{Level, MessageType};

/// One analysis finding.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub kind: MessageType,
    pub level: Level,
    pub text: String,
    /// The resource the message is about (`VirtualService alphintra/service-gateway`).
    pub resource: Option<ResourceRef>,
    /// Where in the source the finding points.
    pub location: Option<Location>,
    /// Whether `location` points at a field (file:line:column) rather than a resource (file:line).
    pub precise: bool,
}

impl Message {
    pub fn new(kind: MessageType, text: impl Into<String>) -> Self {
        Message {
            kind,
            level: kind.level,
            text: text.into(),
            resource: None,
            location: None,
            precise: false,
        }
    }

    pub fn about(mut self, resource: ResourceRef, location: Location) -> Self {
        self.resource = Some(resource);
        self.location = Some(location);
        self
    }

    /// The `file:line` (or `file:line:column` for field-level messages) reference.
    pub fn reference(&self) -> Option<String> {
        self.location.as_ref().map(|l| {
            if self.precise {
                l.to_string()
            } else {
                format!("{}:{}", l.file, l.line)
            }
        })
    }

    /// JSON/YAML form, with istioctl's field names.
    pub fn to_output(&self) -> OutputMessage {
        OutputMessage {
            code: self.kind.code,
            name: self.kind.name,
            level: self.level.to_string(),
            message: self.text.clone(),
            origin: self
                .resource
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            reference: self.reference().unwrap_or_default(),
            documentation_url: self.kind.documentation_url(),
        }
    }
}

impl fmt::Display for Message {
    /// `Error [IST0101] (VirtualService ns/name file.yaml:12) Referenced ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.level, self.kind.code)?;
        match (&self.resource, self.reference()) {
            (Some(r), Some(loc)) => write!(f, " ({r} {loc})")?,
            (Some(r), None) => write!(f, " ({r})")?,
            (None, Some(loc)) => write!(f, " ({loc})")?,
            (None, None) => {}
        }
        write!(f, " {}", self.text)
    }
}

/// Serialized message (`-o json|yaml`).
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputMessage {
    pub code: &'static str,
    pub name: &'static str,
    pub level: String,
    pub message: String,
    pub origin: String,
    pub reference: String,
    pub documentation_url: String,
}
