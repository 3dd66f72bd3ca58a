//! Locality-aware load balancing (`localityLbSetting` of a DestinationRule's load balancer, or
//! of the mesh config), as Istio programs it into Envoy:
//!
//! - **failover** (the default when locality LB is enabled, which it is mesh-wide unless
//!   turned off): only with `outlierDetection` (without it nothing ever fails over, so Istio
//!   leaves priorities alone). Endpoints get Envoy priorities by how much of the proxy's
//!   locality they share: region, zone and subzone → 0; region and zone → 1; region → 2;
//!   another region → 3, or 4 when a `failover` rule from the proxy's region names a different
//!   target region. With `failoverPriority` (an ordered list of labels), endpoints are first
//!   ranked by how many leading labels they share with the proxy (all: 0, none: n); with
//!   `failover` as well the locality rank refines that (`label rank × 5 + locality rank`).
//!   The topology labels `topology.kubernetes.io/region`, `.../zone` and
//!   `topology.istio.io/subzone` come from the locality when not set. Priorities are then
//!   renumbered 0..n without gaps. The proxy sends to the best priority while it is healthy
//!   and spills to the next as endpoints are ejected.
//! - **distribute**: the first rule whose `from` matches the proxy's locality gives each
//!   destination locality its share; endpoints in a locality no `to` key matches get none.
//!   The share is split across the endpoints of the matched localities by their weights.
//!
//! A locality is `region/zone/subzone`; patterns may end in `*` per segment. Without a known
//! proxy locality nothing changes. Pure: endpoints in, priorities and weights out.

use std::collections::BTreeMap;

use trellis_api::networking::LocalityLoadBalancerSetting;

use crate::config::Endpoint;

/// Endpoint weights are scaled by this before distribution shares are applied, so shares of
/// 1% over a few endpoints stay distinct integers.
const DISTRIBUTE_SCALE: u64 = 1000;

fn segments(l: &str) -> [&str; 3] {
    let mut it = l.split('/');
    [
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    ]
}

/// Whether `locality` matches `pattern` (`us-west/zone1/*`, `us-west/*`, `*`), as Istio's
/// `LocalityMatch`: segment by segment, a `*` matches the rest.
pub fn locality_matches(locality: &str, pattern: &str) -> bool {
    let l = segments(locality);
    for (i, p) in pattern.split('/').enumerate() {
        if p == "*" {
            return true;
        }
        if i >= 3 || !p.eq_ignore_ascii_case(l[i]) {
            return false;
        }
    }
    true
}

/// Istio's `LbPriority`: 0 same subzone, 1 same zone, 2 same region, 3 otherwise.
fn lb_priority(proxy: &str, endpoint: &str) -> u32 {
    let (p, e) = (segments(proxy), segments(endpoint));
    if p[0] != e[0] {
        3
    } else if p[1] != e[1] {
        2
    } else if p[2] != e[2] {
        1
    } else {
        0
    }
}

/// The proxy a cluster is built for, as locality load balancing sees it.
pub struct ProxyPlace<'a> {
    /// `region/zone/subzone`, when known.
    pub locality: Option<&'a str>,
    pub labels: &'a BTreeMap<String, String>,
}

const TOPOLOGY_KEYS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// A label for `failoverPriority`: the label itself, else a topology key from the locality.
fn label_value<'a>(
    labels: &'a BTreeMap<String, String>,
    locality: Option<&'a str>,
    key: &str,
) -> Option<&'a str> {
    if let Some(v) = labels.get(key) {
        return Some(v);
    }
    let i = TOPOLOGY_KEYS.iter().position(|k| *k == key)?;
    Some(segments(locality?)[i]).filter(|v| !v.is_empty())
}

/// Applies the setting to one cluster's endpoints for `proxy`. `outlier_detection` says
/// whether the cluster has outlier detection (failover needs it).
pub fn apply(
    endpoints: &mut Vec<Endpoint>,
    proxy: &ProxyPlace<'_>,
    setting: &LocalityLoadBalancerSetting,
    outlier_detection: bool,
) {
    if setting.enabled == Some(false) || endpoints.is_empty() {
        return;
    }
    let locality = proxy.locality.filter(|l| !l.is_empty());
    if !setting.distribute.is_empty() {
        if let Some(l) = locality {
            distribute(endpoints, l, setting);
        }
        return;
    }
    if !outlier_detection {
        return;
    }
    let by_labels = !setting.failover_priority.is_empty();
    if by_labels {
        label_failover(endpoints, proxy, &setting.failover_priority);
    }
    if !by_labels || !setting.failover.is_empty() {
        if let Some(l) = locality {
            failover(endpoints, l, setting);
        }
    }
    compact(endpoints);
}

/// `failoverPriority`: rank = labels listed minus the leading ones the endpoint shares.
fn label_failover(endpoints: &mut [Endpoint], proxy: &ProxyPlace<'_>, keys: &[String]) {
    for e in endpoints.iter_mut() {
        let shared = keys
            .iter()
            .take_while(|k| {
                let mine = label_value(proxy.labels, proxy.locality, k);
                mine.is_some() && mine == label_value(&e.labels, e.locality.as_deref(), k)
            })
            .count();
        e.priority = (keys.len() - shared) as u32;
    }
}

/// Renumbers priorities 0..n without gaps, keeping their order (Envoy wants no gaps).
fn compact(endpoints: &mut [Endpoint]) {
    let mut used: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
    used.sort_unstable();
    used.dedup();
    for e in endpoints.iter_mut() {
        e.priority = used.iter().position(|u| *u == e.priority).unwrap_or(0) as u32;
    }
}

fn distribute(endpoints: &mut Vec<Endpoint>, proxy: &str, setting: &LocalityLoadBalancerSetting) {
    let Some(rule) = setting.distribute.iter().find(|d| {
        d.from
            .as_deref()
            .is_some_and(|f| locality_matches(proxy, f))
    }) else {
        return;
    };
    let mut share: Vec<Option<u64>> = vec![None; endpoints.len()];
    for (pattern, weight) in &rule.to {
        let matched: Vec<usize> = (0..endpoints.len())
            .filter(|&i| {
                share[i].is_none()
                    && locality_matches(endpoints[i].locality.as_deref().unwrap_or(""), pattern)
            })
            .collect();
        let total: u64 = matched
            .iter()
            .map(|&i| u64::from(endpoints[i].weight.max(1)))
            .sum();
        for &i in &matched {
            let w = u64::from(endpoints[i].weight.max(1)) * u64::from(*weight) * DISTRIBUTE_SCALE;
            share[i] = Some(w.div_ceil(total.max(1)));
        }
    }
    // Endpoints in a locality no `to` key matches (or with no share) get no traffic.
    *endpoints = std::mem::take(endpoints)
        .into_iter()
        .zip(share)
        .filter_map(|(mut e, w)| {
            e.weight = u32::try_from(w.filter(|w| *w > 0)?).unwrap_or(u32::MAX);
            Some(e)
        })
        .collect();
}

/// Locality ranks, on top of any label rank already set (`rank × 5 + locality rank`).
fn failover(endpoints: &mut [Endpoint], proxy: &str, setting: &LocalityLoadBalancerSetting) {
    let proxy_region = segments(proxy)[0];
    for e in endpoints.iter_mut() {
        let loc = e.locality.as_deref().unwrap_or("");
        let mut p = lb_priority(proxy, loc);
        if p == 3 {
            if let Some(f) = setting
                .failover
                .iter()
                .find(|f| f.from.as_deref() == Some(proxy_region))
            {
                if f.to.as_deref() != Some(segments(loc)[0]) {
                    p = 4;
                }
            }
        }
        e.priority = e.priority * 5 + p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointAddress;
    use trellis_api::networking::{LocalityDistribute, LocalityFailover};

    fn at(locality: Option<&str>, f: impl FnOnce(&ProxyPlace<'_>)) {
        let labels = BTreeMap::new();
        f(&ProxyPlace {
            locality,
            labels: &labels,
        });
    }

    fn ep(port: u16, locality: &str) -> Endpoint {
        Endpoint {
            address: EndpointAddress::Socket(([10, 0, 0, 1], port).into()),
            labels: BTreeMap::new(),
            weight: 1,
            identity: None,
            mesh: true,
            locality: Some(locality.to_string()).filter(|l| !l.is_empty()),
            priority: 0,
        }
    }

    fn all() -> Vec<Endpoint> {
        vec![
            ep(1, "us-west/zone1/a"),
            ep(2, "us-west/zone1/b"),
            ep(3, "us-west/zone2/a"),
            ep(4, "us-east/zone1/a"),
            ep(5, "eu-west/zone1/a"),
            ep(6, ""),
        ]
    }

    fn priorities(e: &[Endpoint]) -> Vec<u32> {
        e.iter().map(|e| e.priority).collect()
    }

    #[test]
    fn matching_by_segment_with_wildcards() {
        assert!(locality_matches("us-west/zone1/a", "us-west/zone1/a"));
        assert!(locality_matches("us-west/zone1/a", "us-west/zone1/*"));
        assert!(locality_matches("us-west/zone1/a", "us-west/*"));
        assert!(locality_matches("us-west/zone1/a", "*"));
        assert!(locality_matches("us-west/zone1/a", "us-west"));
        assert!(!locality_matches("us-west/zone1/a", "us-west/zone2/*"));
        assert!(!locality_matches("us-west/zone1/a", "us-east/*"));
        assert!(!locality_matches("", "us-west/*"));
    }

    #[test]
    fn failover_priorities_follow_shared_locality_and_need_outlier_detection() {
        let setting = LocalityLoadBalancerSetting::default();
        let mut e = all();
        at(Some("us-west/zone1/a"), |p| {
            apply(&mut e, p, &setting, false)
        });
        assert_eq!(priorities(&e), [0; 6], "no outlier detection: no failover");
        at(Some("us-west/zone1/a"), |p| {
            apply(&mut e, p, &setting, true)
        });
        assert_eq!(priorities(&e), [0, 1, 2, 3, 3, 3]);
        // Gaps are closed: no endpoint shares the subzone.
        let mut e = all();
        at(Some("us-west/zone1/c"), |p| {
            apply(&mut e, p, &setting, true)
        });
        assert_eq!(priorities(&e), [0, 0, 1, 2, 2, 2]);
        // Unknown proxy locality, or locality LB turned off: nothing.
        let mut e = all();
        at(None, |p| apply(&mut e, p, &setting, true));
        assert_eq!(priorities(&e), [0; 6]);
        let off = LocalityLoadBalancerSetting {
            enabled: Some(false),
            ..Default::default()
        };
        at(Some("us-west/zone1/a"), |p| apply(&mut e, p, &off, true));
        assert_eq!(priorities(&e), [0; 6]);
    }

    #[test]
    fn failover_rules_pick_the_region_after_the_local_one() {
        let setting = LocalityLoadBalancerSetting {
            failover: vec![LocalityFailover {
                from: Some("us-west".into()),
                to: Some("eu-west".into()),
            }],
            ..Default::default()
        };
        let mut e = all();
        at(Some("us-west/zone1/a"), |p| {
            apply(&mut e, p, &setting, true)
        });
        // eu-west (3) before us-east and the unknown locality (4).
        assert_eq!(priorities(&e), [0, 1, 2, 4, 3, 4]);
    }

    #[test]
    fn distribute_splits_shares_across_matched_localities() {
        let setting = LocalityLoadBalancerSetting {
            distribute: vec![
                LocalityDistribute {
                    from: Some("eu-west/*".into()),
                    to: BTreeMap::from([("eu-west/*".to_string(), 100)]),
                },
                LocalityDistribute {
                    from: Some("us-west/zone1/*".into()),
                    to: BTreeMap::from([
                        ("us-west/zone1/*".to_string(), 80),
                        ("us-east/*".to_string(), 20),
                    ]),
                },
            ],
            ..Default::default()
        };
        let mut e = all();
        at(Some("us-west/zone1/b"), |p| {
            apply(&mut e, p, &setting, false)
        });
        let got: Vec<(u16, u32)> = e
            .iter()
            .map(|e| match e.address {
                EndpointAddress::Socket(a) => (a.port(), e.weight),
                _ => unreachable!(),
            })
            .collect();
        // 80 split over the two zone1 endpoints, 20 to us-east; the rest get nothing.
        assert_eq!(got, [(1, 40_000), (2, 40_000), (4, 20_000)]);
        assert!(e.iter().all(|e| e.priority == 0));
        // No rule for the proxy's locality: unchanged.
        let mut e = all();
        at(Some("ap-south/zone1/a"), |p| {
            apply(&mut e, p, &setting, false)
        });
        assert_eq!(e, all());
    }

    #[test]
    fn failover_priority_ranks_by_leading_shared_labels() {
        let keys = vec![
            "topology.istio.io/network".to_string(),
            "topology.kubernetes.io/region".to_string(),
            "topology.kubernetes.io/zone".to_string(),
        ];
        let setting = LocalityLoadBalancerSetting {
            failover_priority: keys,
            ..Default::default()
        };
        let mut e = all();
        for (i, net) in ["n1", "n1", "n1", "n2", "n1", "n1"].iter().enumerate() {
            e[i].labels
                .insert("topology.istio.io/network".into(), net.to_string());
        }
        let labels = BTreeMap::from([("topology.istio.io/network".to_string(), "n1".to_string())]);
        let proxy = ProxyPlace {
            locality: Some("us-west/zone1/a"),
            labels: &labels,
        };
        apply(&mut e, &proxy, &setting, true);
        // network+region+zone: 0; network+region: 1; network only: 2; nothing: 3 → compact.
        assert_eq!(priorities(&e), [0, 0, 1, 3, 2, 2]);
        // No outlier detection: nothing.
        let mut e2 = all();
        apply(&mut e2, &proxy, &setting, false);
        assert_eq!(priorities(&e2), [0; 6]);
    }
}
