//! Placeholder: replaced by the full types.
use crate::validate::{Validate, Validator};
use serde::{Deserialize, Serialize};
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {}
impl Validate for Gateway {
    fn validate(&self, _v: &mut Validator) {}
}
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {}
impl Validate for VirtualService {
    fn validate(&self, _v: &mut Validator) {}
}
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {}
impl Validate for DestinationRule {
    fn validate(&self, _v: &mut Validator) {}
}
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {}
impl Validate for ServiceEntry {
    fn validate(&self, _v: &mut Validator) {}
}
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {}
impl Validate for WorkloadEntry {
    fn validate(&self, _v: &mut Validator) {}
}
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroup {}
impl Validate for WorkloadGroup {
    fn validate(&self, _v: &mut Validator) {}
}
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {}
impl Validate for Sidecar {
    fn validate(&self, _v: &mut Validator) {}
}
