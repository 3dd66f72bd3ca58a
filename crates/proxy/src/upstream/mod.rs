//! Clusters at runtime: endpoint selection, connection pools, circuit breaking, outlier
//! detection. Scaffolding: being written (issue 3).

/// Runtime state of every cluster, keyed by cluster name.
#[derive(Default)]
pub struct Upstreams {}
