//! Placeholder: replaced by the full types.
use crate::validate::{Validate, Validator};
use serde::{Deserialize, Serialize};
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {}
impl Validate for PeerAuthentication {
    fn validate(&self, _v: &mut Validator) {}
}
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {}
impl Validate for RequestAuthentication {
    fn validate(&self, _v: &mut Validator) {}
}
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {}
impl Validate for AuthorizationPolicy {
    fn validate(&self, _v: &mut Validator) {}
}
