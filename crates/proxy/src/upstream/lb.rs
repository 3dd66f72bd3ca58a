//! Load-balancing algorithms over one endpoint set: least request (power of two choices),
//! round robin, random (all weighted), and consistent hashing (ring hash, maglev).
//!
//! Tables for consistent hashing are built once per endpoint set (when endpoints change), so
//! a request only hashes its key and does a lookup.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

/// Size of a maglev lookup table (Envoy's default, a prime).
pub const MAGLEV_TABLE_SIZE: usize = 65537;

/// 64-bit hash of bytes (FNV-1a followed by a splitmix64 finalizer for avalanche). Stable
/// across processes, so proxies agree on the owner of a key.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What an endpoint looks like to the balancer.
pub trait Candidate {
    fn addr(&self) -> SocketAddr;
    fn weight(&self) -> u32;
    /// In-flight requests (least request).
    fn active(&self) -> u64;
    /// Ejected by outlier detection (or otherwise not usable now).
    fn unavailable(&self) -> bool;
}

/// Precomputed per endpoint set.
#[derive(Debug, Default)]
pub struct Schedule {
    /// Cumulative weights, for weighted random / round robin.
    cumulative: Vec<u64>,
    total: u64,
    uniform: bool,
    hash: Option<HashTable>,
}

#[derive(Debug)]
enum HashTable {
    /// Sorted (hash, host index).
    Ring(Vec<(u64, u32)>),
    /// Host index per slot.
    Maglev(Vec<u32>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    Ring { minimum_ring_size: u64 },
    Maglev,
}

impl Schedule {
    pub fn new<C: Candidate>(hosts: &[C], hash: Option<HashKind>) -> Schedule {
        let mut cumulative = Vec::with_capacity(hosts.len());
        let mut total = 0u64;
        for h in hosts {
            total += u64::from(h.weight().max(1));
            cumulative.push(total);
        }
        let uniform = hosts.windows(2).all(|w| w[0].weight() == w[1].weight());
        let hash = match hash {
            None => None,
            Some(_) if hosts.is_empty() => None,
            Some(HashKind::Ring { minimum_ring_size }) => {
                Some(HashTable::Ring(build_ring(hosts, minimum_ring_size)))
            }
            Some(HashKind::Maglev) => Some(HashTable::Maglev(build_maglev(hosts))),
        };
        Schedule {
            cumulative,
            total,
            uniform,
            hash,
        }
    }

    /// Weighted random index.
    fn random_index(&self, n: usize) -> usize {
        if self.uniform {
            return rand::rng().random_range(0..n);
        }
        let r = rand::rng().random_range(0..self.total);
        self.cumulative.partition_point(|&c| c <= r)
    }

    fn rr_index(&self, n: usize, counter: &AtomicUsize) -> usize {
        let c = counter.fetch_add(1, Ordering::Relaxed);
        if self.uniform {
            return c % n;
        }
        let r = (c as u64) % self.total;
        self.cumulative.partition_point(|&x| x <= r)
    }
}

/// How to choose among candidates.
#[derive(Clone, Copy, Debug)]
pub enum Algorithm {
    LeastRequest,
    RoundRobin,
    Random,
    /// Consistent hash of a request key; `None` (key absent) falls back to random.
    Hash(Option<u64>),
}

/// Chooses an endpoint index, skipping unavailable ones and those in `avoid` (retry on
/// another host) when any other choice exists. `None` when no host is available.
pub fn choose<C: Candidate>(
    hosts: &[C],
    schedule: &Schedule,
    algorithm: Algorithm,
    rr: &AtomicUsize,
    avoid: &[SocketAddr],
) -> Option<usize> {
    choose_among(hosts, schedule, algorithm, rr, avoid, true)
}

/// Whether the share of available hosts is under `min_health_percent` (DestinationRule
/// `outlierDetection.minHealthPercent`, Envoy's panic threshold; 0 = never): the pool then
/// balances over every host, ejected ones included.
pub fn in_panic<C: Candidate>(hosts: &[C], min_health_percent: u32) -> bool {
    if min_health_percent == 0 || hosts.is_empty() {
        return false;
    }
    let healthy = hosts.iter().filter(|h| !h.unavailable()).count() as u64;
    healthy * 100 < u64::from(min_health_percent) * hosts.len() as u64
}

/// `choose`; with `honor_ejection` false (panic mode) unavailable hosts are candidates too.
pub fn choose_among<C: Candidate>(
    hosts: &[C],
    schedule: &Schedule,
    algorithm: Algorithm,
    rr: &AtomicUsize,
    avoid: &[SocketAddr],
    honor_ejection: bool,
) -> Option<usize> {
    let n = hosts.len();
    if n == 0 {
        return None;
    }
    let ok = |i: usize| {
        (!honor_ejection || !hosts[i].unavailable()) && !avoid.contains(&hosts[i].addr())
    };
    let pick = match algorithm {
        Algorithm::Hash(Some(h)) => hash_lookup(schedule, h, n, &ok),
        Algorithm::Hash(None) | Algorithm::Random => sample(schedule, n, &ok, None),
        Algorithm::RoundRobin => sample(schedule, n, &ok, Some(rr)),
        Algorithm::LeastRequest => {
            if n == 1 {
                ok(0).then_some(0)
            } else {
                // Two distinct choices when possible (with two hosts: both compared).
                let a = sample(schedule, n, &ok, None);
                let b = a.and_then(|a| {
                    let off = rand::rng().random_range(1..n);
                    (0..n).map(|k| (a + off + k) % n).find(|&i| i != a && ok(i))
                });
                match (a, b) {
                    (Some(a), Some(b)) => Some(if hosts[b].active() < hosts[a].active() {
                        b
                    } else {
                        a
                    }),
                    (a, b) => a.or(b),
                }
            }
        }
    };
    // Nothing but avoided hosts left: an avoided healthy host beats none.
    pick.or_else(|| {
        if avoid.is_empty() {
            None
        } else {
            choose_among(hosts, schedule, algorithm, rr, &[], honor_ejection)
        }
    })
}

/// Envoy's overprovisioning factor (1.4, as a percentage): a priority level keeps all its
/// traffic until fewer than 1/1.4 ≈ 71% of its hosts are available.
const OVERPROVISIONING: u64 = 140;

/// Health of a priority level (percent): `min(100, 1.4 × available / total)`.
fn level_health((available, total): (usize, usize)) -> u64 {
    if total == 0 {
        0
    } else {
        (OVERPROVISIONING * available as u64 / total as u64).min(100)
    }
}

/// Envoy's priority load: the level a draw `r` in `0..100` falls in, from `(available,
/// total)` hosts per level, best first. A level takes what its health allows of what better
/// levels left, normalized by the total health when that is under 100. `None` when no level
/// has an available host. Allocation-free: called per request.
pub fn pick_level<I>(levels: I, r: u32) -> Option<usize>
where
    I: Iterator<Item = (usize, usize)> + Clone,
{
    let total: u64 = levels.clone().map(level_health).sum::<u64>().min(100);
    if total == 0 {
        return None;
    }
    let (mut remaining, mut acc, mut last) = (100u64, 0u64, None);
    for (i, level) in levels.enumerate() {
        let load = (level_health(level) * 100 / total).min(remaining);
        remaining -= load;
        acc += load;
        if load > 0 {
            last = Some(i);
        }
        if u64::from(r) < acc {
            return Some(i);
        }
    }
    // Rounding left a gap at the top: the last level with any load.
    last
}

/// Random (or round-robin) index among acceptable hosts: a few draws, then a scan.
fn sample(
    schedule: &Schedule,
    n: usize,
    ok: &dyn Fn(usize) -> bool,
    rr: Option<&AtomicUsize>,
) -> Option<usize> {
    for _ in 0..4 {
        let i = match rr {
            Some(c) => schedule.rr_index(n, c),
            None => schedule.random_index(n),
        };
        if ok(i) {
            return Some(i);
        }
    }
    let start = schedule.random_index(n);
    (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
}

fn hash_lookup(schedule: &Schedule, h: u64, n: usize, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
    match &schedule.hash {
        Some(HashTable::Ring(ring)) => {
            let start = ring.partition_point(|&(x, _)| x < h);
            // Walk clockwise to the first acceptable host.
            for k in 0..ring.len() {
                let i = ring[(start + k) % ring.len()].1 as usize;
                if ok(i) {
                    return Some(i);
                }
            }
            None
        }
        Some(HashTable::Maglev(table)) => {
            let len = table.len() as u64;
            let mut key = h;
            for _ in 0..(2 * n + 8) {
                let i = table[(key % len) as usize] as usize;
                if ok(i) {
                    return Some(i);
                }
                key = mix(key.wrapping_add(0x9e37_79b9_7f4a_7c15));
            }
            (0..n).find(|&i| ok(i))
        }
        None => (0..n).map(|k| (h as usize + k) % n).find(|&i| ok(i)),
    }
}

fn host_key(addr: SocketAddr) -> Vec<u8> {
    addr.to_string().into_bytes()
}

/// Ring hash: each host gets virtual nodes in proportion to its weight, at least
/// `minimum_ring_size` in total (Envoy's ring_hash_lb_config.minimum_ring_size).
fn build_ring<C: Candidate>(hosts: &[C], minimum_ring_size: u64) -> Vec<(u64, u32)> {
    let min = minimum_ring_size.clamp(1, 1 << 23);
    let total: u64 = hosts.iter().map(|h| u64::from(h.weight().max(1))).sum();
    let scale = (min as f64 / total as f64).max(1.0);
    let mut ring = Vec::with_capacity(min as usize + hosts.len());
    for (i, h) in hosts.iter().enumerate() {
        let count = ((f64::from(h.weight().max(1)) * scale).ceil() as u64).max(1);
        let mut key = host_key(h.addr());
        key.push(b'_');
        let base = key.len();
        for v in 0..count {
            key.truncate(base);
            key.extend_from_slice(v.to_string().as_bytes());
            ring.push((hash64(&key), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// Maglev lookup table (Eisenbud et al.), weighted: in each round a host claims a slot when
/// its claimed share is behind its weight share.
fn build_maglev<C: Candidate>(hosts: &[C]) -> Vec<u32> {
    let m = MAGLEV_TABLE_SIZE as u64;
    let max_w = hosts.iter().map(|h| h.weight().max(1)).max().unwrap_or(1) as f64;
    let perms: Vec<(u64, u64)> = hosts
        .iter()
        .map(|h| {
            let k = host_key(h.addr());
            let offset = hash64(&k) % m;
            let mut k2 = k.clone();
            k2.push(b'#');
            let skip = hash64(&k2) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; hosts.len()];
    let mut claimed = vec![0f64; hosts.len()];
    let mut table = vec![u32::MAX; MAGLEV_TABLE_SIZE];
    let mut filled = 0usize;
    let mut round = 0u64;
    while filled < MAGLEV_TABLE_SIZE {
        round += 1;
        for (i, h) in hosts.iter().enumerate() {
            let share = f64::from(h.weight().max(1)) / max_w;
            if claimed[i] >= share * round as f64 {
                continue;
            }
            claimed[i] += 1.0;
            let (offset, skip) = perms[i];
            loop {
                let slot = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == MAGLEV_TABLE_SIZE {
                break;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(SocketAddr, u32, bool);
    impl Candidate for H {
        fn addr(&self) -> SocketAddr {
            self.0
        }
        fn weight(&self) -> u32 {
            self.1
        }
        fn active(&self) -> u64 {
            0
        }
        fn unavailable(&self) -> bool {
            self.2
        }
    }

    fn hosts(n: u16) -> Vec<H> {
        (0..n)
            .map(|i| H(SocketAddr::from(([10, 0, 0, 1], 8000 + i)), 1, false))
            .collect()
    }

    #[test]
    fn round_robin_cycles() {
        let hs = hosts(3);
        let s = Schedule::new(&hs, None);
        let rr = AtomicUsize::new(0);
        let picks: Vec<_> = (0..6)
            .map(|_| choose(&hs, &s, Algorithm::RoundRobin, &rr, &[]).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn hash_is_sticky_and_moves_off_unavailable_hosts() {
        for kind in [
            HashKind::Ring {
                minimum_ring_size: 1024,
            },
            HashKind::Maglev,
        ] {
            let mut hs = hosts(4);
            let s = Schedule::new(&hs, Some(kind));
            let rr = AtomicUsize::new(0);
            let k = hash64(b"user-42");
            let a = choose(&hs, &s, Algorithm::Hash(Some(k)), &rr, &[]).unwrap();
            for _ in 0..10 {
                assert_eq!(choose(&hs, &s, Algorithm::Hash(Some(k)), &rr, &[]), Some(a));
            }
            hs[a].2 = true;
            let b = choose(&hs, &s, Algorithm::Hash(Some(k)), &rr, &[]).unwrap();
            assert_ne!(a, b);
            // Keys spread over hosts.
            let mut seen = [0; 4];
            hs[a].2 = false;
            for i in 0..400u32 {
                let h = hash64(&i.to_le_bytes());
                seen[choose(&hs, &s, Algorithm::Hash(Some(h)), &rr, &[]).unwrap()] += 1;
            }
            assert!(seen.iter().all(|&c| c > 40), "{kind:?} {seen:?}");
        }
    }

    #[test]
    fn weights_and_avoidance() {
        let mut hs = hosts(2);
        hs[0].1 = 4;
        let s = Schedule::new(&hs, None);
        let rr = AtomicUsize::new(0);
        let zeros = (0..1000)
            .filter(|_| choose(&hs, &s, Algorithm::Random, &rr, &[]) == Some(0))
            .count();
        assert!((700..900).contains(&zeros), "{zeros}");
        let avoid = [hs[0].0];
        assert_eq!(choose(&hs, &s, Algorithm::Random, &rr, &avoid), Some(1));
        hs[1].2 = true;
        assert_eq!(choose(&hs, &s, Algorithm::Random, &rr, &avoid), Some(0));
        hs[0].2 = true;
        assert_eq!(choose(&hs, &s, Algorithm::LeastRequest, &rr, &[]), None);
    }

    #[test]
    fn under_min_health_percent_ejected_hosts_take_traffic_again() {
        let mut hs = hosts(4);
        let s = Schedule::new(&hs, None);
        let rr = AtomicUsize::new(0);
        for h in hs.iter_mut().take(3) {
            h.2 = true; // 3 of 4 ejected: 25% healthy
        }
        assert!(!in_panic(&hs, 0), "0 disables the threshold");
        assert!(!in_panic(&hs, 25), "25% healthy is not under 25%");
        assert!(in_panic(&hs, 26));
        // Honouring ejection: only the healthy host.
        for _ in 0..20 {
            assert_eq!(
                choose_among(&hs, &s, Algorithm::RoundRobin, &rr, &[], true),
                Some(3)
            );
        }
        // Panic: every host again.
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[choose_among(&hs, &s, Algorithm::RoundRobin, &rr, &[], false).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n == 100), "{seen:?}");
        // All ejected, no threshold: no host (503 UH).
        hs[3].2 = true;
        assert_eq!(choose(&hs, &s, Algorithm::LeastRequest, &rr, &[]), None);
        assert!(in_panic(&hs, 1));
        assert!(choose_among(&hs, &s, Algorithm::LeastRequest, &rr, &[], false).is_some());
    }

    #[test]
    fn priority_load_spills_as_hosts_fail() {
        // The share of the 100 draws each level gets.
        let loads = |levels: &[(usize, usize)]| {
            let mut share = vec![0; levels.len()];
            for r in 0..100 {
                if let Some(l) = pick_level(levels.iter().copied(), r) {
                    share[l] += 1;
                }
            }
            share
        };
        // All healthy: everything to the best level.
        assert_eq!(loads(&[(4, 4), (4, 4)]), [100, 0]);
        // 3 of 4 up: 1.4 × 75% ≥ 100%, still everything (overprovisioning).
        assert_eq!(loads(&[(3, 4), (4, 4)]), [100, 0]);
        // 2 of 4 up: health 70, the next level takes the remaining 30.
        assert_eq!(loads(&[(2, 4), (4, 4)]), [70, 30]);
        // None up: all to the next level; then the one after.
        assert_eq!(loads(&[(0, 4), (4, 4)]), [0, 100]);
        assert_eq!(loads(&[(0, 2), (0, 2), (1, 1)]), [0, 0, 100]);
        // Total health under 100: normalized (Envoy's normalized total health).
        assert_eq!(loads(&[(1, 4), (1, 4)]), [50, 50]);
        // Rounding (three levels of 33): the top draw goes to the last level with load.
        assert_eq!(loads(&[(1, 6), (1, 6), (1, 6)]), [33, 33, 34]);
        // Nothing available anywhere.
        assert_eq!(pick_level([(0, 1), (0, 3)].into_iter(), 10), None);
    }
}
