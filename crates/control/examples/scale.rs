//! Control-plane scale benchmark: N lightweight proxies against one control plane holding a
//! generated mesh (default 1,000 proxies; 5,000 Services in 50 namespaces, 50,000 endpoints
//! in one EndpointSlice per Service, 500 VirtualServices and DestinationRules).
//!
//! ```sh
//! cargo run --release -p trellis-control --example scale              # the full size
//! cargo run --release -p trellis-control --example scale -- --help
//! ```
//!
//! What it does, all in this process, over real gRPC on 127.0.0.1:
//! 1. writes the mesh as YAML into a temp dir and starts the control plane on it (its real
//!    config source: files; watching off, changes are picked up with `reload_now`, which is
//!    what the file watcher calls after its debounce);
//! 2. connects the proxies (`--per-connection` streams per HTTP/2 connection, default 1:
//!    one connection each, as real proxies) and waits until every proxy has ACKed the full
//!    snapshot of both types (the initial full-sync time);
//! 3. runs `--rounds` rounds of (a) an endpoint change (one endpoint added to or removed
//!    from one Service's EndpointSlice) and (b) a route change (one VirtualService's weights
//!    edited); each rewrites one file, then reloads. Per change it measures, from just before
//!    the file is written: the reload (read + validate + analyze + snapshot, until the new
//!    version is published) and the time to the last ACK of that version from every proxy
//!    that must receive it (by the control plane's own scoping; with Istio's default
//!    `exportTo: *` that is every proxy);
//! 4. reports p50/p99 per change kind, the full-sync time, memory and CPU.
//!
//! Memory: the control plane and the proxies share the process, so every allocation is
//! tagged with the kind of thread that made it (the control plane runs on its own Tokio
//! runtime, threads `cp`; the proxies on another, threads `proxies`; the driver on the main
//! thread; any other thread, e.g. the loader's parse threads, counts as control plane) and
//! frees are credited back to the tag of the allocation. The control-plane figure is its
//! live heap (bytes requested), current and peak per phase; process RSS is reported as well
//! (before the proxies connect it is essentially the control plane's).

#[path = "../tests/scale_harness/mod.rs"]
mod scale_harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scale_harness::*;
use tokio::sync::mpsc;
use trellis_control::{ControlPlane, ControlPlaneOptions, RunningControlPlane};
use trellis_protocol::ConfigType;

// ---- allocation accounting per kind of thread ----

const TAG_CP: usize = 0;
const TAG_PROXIES: usize = 1;
const TAG_DRIVER: usize = 2;
const TAGS: [&str; 3] = ["control plane", "proxies", "driver"];

static LIVE: [AtomicI64; 3] = [AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)];
static PEAK: [AtomicI64; 3] = [AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)];
static COUNT: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static TAG: Cell<usize> = const { Cell::new(TAG_CP) };
}

fn set_tag(tag: usize) {
    TAG.with(|t| t.set(tag));
}

fn current_tag() -> usize {
    TAG.try_with(|t| t.get()).unwrap_or(TAG_CP)
}

/// The System allocator with a 16-byte (or alignment-sized) header holding the allocating
/// thread's tag, so a free on any thread is credited to the right tag.
struct Tagged;

fn header(align: usize) -> usize {
    align.max(16)
}

fn account(tag: usize, delta: i64) {
    let now = LIVE[tag].fetch_add(delta, Ordering::Relaxed) + delta;
    if delta > 0 {
        PEAK[tag].fetch_max(now, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Tagged {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let h = header(l.align());
        let inner = unsafe { Layout::from_size_align_unchecked(l.size() + h, h) };
        let p = unsafe { System.alloc(inner) };
        if p.is_null() {
            return p;
        }
        let tag = current_tag();
        unsafe { (p as *mut usize).write(tag) };
        account(tag, l.size() as i64);
        COUNT.fetch_add(1, Ordering::Relaxed);
        unsafe { p.add(h) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
        let h = header(l.align());
        let base = unsafe { ptr.sub(h) };
        let tag = unsafe { (base as *const usize).read() };
        account(tag, -(l.size() as i64));
        COUNT.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(base, Layout::from_size_align_unchecked(l.size() + h, h)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let h = header(l.align());
        let base = unsafe { ptr.sub(h) };
        let tag = unsafe { (base as *const usize).read() };
        let inner = unsafe { Layout::from_size_align_unchecked(l.size() + h, h) };
        let p = unsafe { System.realloc(base, inner, new_size + h) };
        if p.is_null() {
            return p;
        }
        account(tag, new_size as i64 - l.size() as i64);
        unsafe { p.add(h) }
    }
}

#[global_allocator]
static ALLOC: Tagged = Tagged;

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Live heap per tag, and the peak since the last `reset_peaks`.
#[derive(Clone, Copy, Debug)]
struct Heap {
    live: [i64; 3],
    peak: [i64; 3],
    allocations: i64,
}

fn heap() -> Heap {
    Heap {
        live: std::array::from_fn(|i| LIVE[i].load(Ordering::Relaxed)),
        peak: std::array::from_fn(|i| PEAK[i].load(Ordering::Relaxed)),
        allocations: COUNT.load(Ordering::Relaxed),
    }
}

fn reset_peaks() {
    for i in 0..3 {
        PEAK[i].store(LIVE[i].load(Ordering::Relaxed), Ordering::Relaxed);
    }
    // Resets VmHWM (Linux 4.0+); harmless if refused.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

// ---- /proc ----

/// (VmRSS, VmHWM) in bytes.
fn rss() -> (i64, i64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<i64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) of the whole process (exited threads included), and of the live
/// threads named `proxies` and of the main thread.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    process: Duration,
    proxies: Duration,
    driver: Duration,
}

impl Cpu {
    fn control_plane(&self) -> Duration {
        self.process.saturating_sub(self.proxies + self.driver)
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            process: self.process.saturating_sub(before.process),
            proxies: self.proxies.saturating_sub(before.proxies),
            driver: self.driver.saturating_sub(before.driver),
        }
    }
}

fn ticks(stat: &str) -> Duration {
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on Linux.
    Duration::from_millis((t(14) + t(15)) * 10)
}

fn cpu() -> Cpu {
    let mut c = Cpu {
        process: ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default()),
        ..Cpu::default()
    };
    let pid = std::process::id().to_string();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let p = t.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            if comm.trim() == "proxies" {
                c.proxies += ticks(&stat);
            } else if t.file_name().to_string_lossy() == pid {
                c.driver += ticks(&stat);
            }
        }
    }
    c
}

// ---- options ----

struct Options {
    size: WorkloadSize,
    rounds: usize,
    per_connection: usize,
    pause: Duration,
    cp_threads: usize,
    proxy_threads: usize,
    timeout: Duration,
    /// Write the workload into this directory and exit (for profiling the loader).
    write_only: Option<std::path::PathBuf>,
}

const USAGE: &str = "usage: scale [--proxies N] [--namespaces N] [--services N] [--endpoints N]
             [--routed-per-namespace N] [--rounds N] [--per-connection N] [--pause-ms MS]
             [--cp-threads N] [--proxy-threads N] [--timeout-s S] [--write-only DIR]
defaults: 1000 proxies, 50 namespaces, 5000 services, 50000 endpoints, 10 routed services
per namespace, 20 rounds, 1 proxy per connection, 200 ms pause, 2 + 2 threads, 300 s";

fn options() -> Options {
    let mut o = Options {
        size: WorkloadSize {
            namespaces: 50,
            services_per_namespace: 100,
            endpoints_per_service: 10,
            routed_per_namespace: 10,
            proxies: 1000,
        },
        rounds: 20,
        per_connection: 1,
        pause: Duration::from_millis(200),
        cp_threads: 2,
        proxy_threads: 2,
        timeout: Duration::from_secs(300),
        write_only: None,
    };
    let mut services = 5000;
    let mut endpoints = 50_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if a == "--write-only" {
            o.write_only = args.next().map(Into::into);
            continue;
        }
        let v: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("{a} needs a number\n{USAGE}");
            std::process::exit(2)
        });
        match a.as_str() {
            "--proxies" => o.size.proxies = v,
            "--namespaces" => o.size.namespaces = v,
            "--services" => services = v,
            "--endpoints" => endpoints = v,
            "--routed-per-namespace" => o.size.routed_per_namespace = v,
            "--rounds" => o.rounds = v,
            "--per-connection" => o.per_connection = v,
            "--pause-ms" => o.pause = Duration::from_millis(v as u64),
            "--cp-threads" => o.cp_threads = v,
            "--proxy-threads" => o.proxy_threads = v,
            "--timeout-s" => o.timeout = Duration::from_secs(v as u64),
            _ => {
                eprintln!("unknown option {a}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    o.size.services_per_namespace = services.div_ceil(o.size.namespaces);
    o.size.endpoints_per_service = endpoints.div_ceil(o.size.services());
    o.size.routed_per_namespace = o
        .size
        .routed_per_namespace
        .min(o.size.services_per_namespace);
    o
}

// ---- the run ----

struct Sample {
    total: Duration,
    reload: Duration,
    fanout: Duration,
    receivers: usize,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    set_tag(TAG_DRIVER);
    let o = options();
    if let Some(dir) = &o.write_only {
        std::fs::create_dir_all(dir).unwrap();
        Workload::new(o.size.clone()).write_all(dir);
        println!("workload written into {}", dir.display());
        return;
    }
    let rss_start = rss();
    let cp_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.cp_threads)
        .thread_name("cp")
        .on_thread_start(|| set_tag(TAG_CP))
        .enable_all()
        .build()
        .unwrap();
    let px_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.proxy_threads)
        .thread_name("proxies")
        .on_thread_start(|| set_tag(TAG_PROXIES))
        .enable_all()
        .build()
        .unwrap();
    let cp_handle = cp_rt.handle().clone();
    px_rt.block_on(run(o, cp_handle, rss_start));
    drop(px_rt);
    drop(cp_rt);
}

async fn on_cp<T: Send + 'static>(
    cp: &tokio::runtime::Handle,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    cp.spawn(f).await.expect("control-plane task")
}

fn memory_line(what: &str, h: &Heap, r: (i64, i64)) {
    println!(
        "  {what}: control-plane heap {:.1} MiB live / {:.1} MiB peak; proxies heap {:.1} MiB live / {:.1} MiB peak; process RSS {:.1} MiB (peak {:.1} MiB); {} live allocations",
        mib(h.live[TAG_CP]),
        mib(h.peak[TAG_CP]),
        mib(h.live[TAG_PROXIES]),
        mib(h.peak[TAG_PROXIES]),
        mib(r.0),
        mib(r.1),
        h.allocations,
    );
}

async fn run(o: Options, cp_rt: tokio::runtime::Handle, rss_start: (i64, i64)) {
    let size = o.size.clone();
    println!(
        "workload: {} proxies; {} namespaces x {} services = {} Services, {} endpoints ({} per EndpointSlice), {} VirtualServices + {} DestinationRules; {} proxies per HTTP/2 connection; {} rounds",
        size.proxies,
        size.namespaces,
        size.services_per_namespace,
        size.services(),
        size.endpoints(),
        size.endpoints_per_service,
        size.namespaces * size.routed_per_namespace,
        size.namespaces * size.routed_per_namespace,
        o.per_connection,
        o.rounds
    );
    let dir = tempfile::tempdir().unwrap();
    let mut workload = Workload::new(size.clone());
    let t = Instant::now();
    workload.write_all(dir.path());
    let proxies = workload.proxies();
    println!(
        "generated into {} in {}",
        dir.path().display(),
        ms(t.elapsed())
    );

    // -- control plane alone
    reset_peaks();
    let cpu0 = cpu();
    let t = Instant::now();
    let input = dir.path().to_path_buf();
    let cp: Arc<RunningControlPlane> = Arc::new(
        on_cp(&cp_rt, async move {
            ControlPlane::start(ControlPlaneOptions {
                inputs: vec![input],
                grpc_listen: "127.0.0.1:0".parse().unwrap(),
                metrics_listen: None,
                watch: false,
                ..ControlPlaneOptions::default()
            })
            .await
            .unwrap_or_else(|e| panic!("control plane: {e}"))
        })
        .await,
    );
    let start_time = t.elapsed();
    let snap = cp.snapshot();
    println!(
        "control plane started in {} (load + analyze + first snapshot): version {}, {} RESOURCES + {} ENDPOINTS resources",
        ms(start_time),
        snap.version,
        snap.count(ConfigType::Resources),
        snap.count(ConfigType::Endpoints)
    );
    drop(snap);
    let cpu_start = cpu().since(&cpu0);
    let heap_cp_only = heap();
    let rss_cp_only = rss();
    println!("memory:");
    println!(
        "  before the control plane: process RSS {:.1} MiB",
        mib(rss_start.0)
    );
    memory_line(
        "control plane started, no proxies",
        &heap_cp_only,
        rss_cp_only,
    );

    // -- full sync
    reset_peaks();
    let cpu1 = cpu();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut tracker = AckTracker::new(rx, proxies.len());
    let t0 = Instant::now();
    let _tasks = spawn_proxies(cp.grpc_addr(), &proxies, o.per_connection, tx).await;
    let connected = t0.elapsed();
    let everyone: Vec<usize> = (0..proxies.len()).collect();
    let v0 = cp.snapshot_version();
    let mut full_sync_last = t0;
    let mut initial_resources = 0;
    for ty in ConfigType::ALL {
        let f = tracker
            .wait(ty, v0, &everyone, o.timeout)
            .await
            .unwrap_or_else(|e| panic!("initial sync: {e}"));
        full_sync_last = full_sync_last.max(f.last);
        initial_resources += tracker
            .log
            .iter()
            .filter(|e| e.proxy == 0 && e.ty == ty)
            .map(|e| e.resources)
            .sum::<usize>();
    }
    let full_sync = full_sync_last - t0;
    let cpu_sync = cpu().since(&cpu1);
    tracker.clear_log();
    let heap_sync = heap();
    let rss_sync = rss();
    memory_line(
        "after the full sync (peak: during it)",
        &heap_sync,
        rss_sync,
    );
    println!(
        "full sync: all {} streams open after {}, every proxy ACKed both types after {} ({} resources per proxy)",
        proxies.len(),
        ms(connected),
        ms(full_sync),
        initial_resources
    );

    // -- changes
    reset_peaks();
    let cpu2 = cpu();
    let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for round in 0..o.rounds {
        for (k, kind) in [ConfigType::Endpoints, ConfigType::Resources]
            .into_iter()
            .enumerate()
        {
            tokio::time::sleep(o.pause).await;
            let before = cp.snapshot();
            let path: &Path = dir.path();
            // Who must receive it (the changed resource exists before and after the edit,
            // and its scope does not depend on the edited fields).
            let id = match kind {
                ConfigType::Endpoints => workload.endpoint_change_id(round),
                _ => workload.route_change_id(round),
            };
            let expected = receivers(&before, &id, &proxies);
            drop(before);
            let t0 = Instant::now();
            let change = match kind {
                ConfigType::Endpoints => workload.endpoint_change(path, round),
                _ => workload.route_change(path, round),
            };
            debug_assert_eq!(change.id, id);
            let c = cp.clone();
            let version = on_cp(&cp_rt, async move { c.reload_now().await })
                .await
                .unwrap_or_else(|e| panic!("{}: rejected: {e}", change.what));
            let published = Instant::now();
            let f = tracker
                .wait(kind, version, &expected, o.timeout)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", change.what));
            assert_eq!(f.unexpected, 0, "{}: unexpected receivers", change.what);
            if f.full_updates > 0 || f.max_resources != 1 {
                println!(
                    "  note: {}: {} full updates, up to {} resources per proxy",
                    change.what, f.full_updates, f.max_resources
                );
            }
            tracker.clear_log();
            let s = Sample {
                total: f.last - t0,
                reload: published - t0,
                fanout: f.last.saturating_duration_since(published),
                receivers: expected.len(),
            };
            println!(
                "  round {round:2} {:9} v{version}: {} -> {} ACKs, last after {} (reload {}, push+ACK {})",
                if k == 0 { "endpoint" } else { "route" },
                change.what,
                s.receivers,
                ms(s.total),
                ms(s.reload),
                ms(s.fanout)
            );
            samples[k].push(s);
        }
    }
    let cpu_changes = cpu().since(&cpu2);
    let heap_changes = heap();
    let rss_changes = rss();
    memory_line(
        "after the changes (peak: during them)",
        &heap_changes,
        rss_changes,
    );

    // -- report
    println!();
    println!(
        "| change | proxies that must ACK | p50 change -> last ACK | p99 | max | p50 reload | p99 reload | p50 push -> last ACK | p99 push -> last ACK |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (k, name) in ["endpoint (EndpointSlice)", "route (VirtualService)"]
        .iter()
        .enumerate()
    {
        let s = &samples[k];
        let col = |f: fn(&Sample) -> Duration| s.iter().map(f).collect::<Vec<_>>();
        let (total, reload, fanout) = (col(|s| s.total), col(|s| s.reload), col(|s| s.fanout));
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.first().map(|s| s.receivers).unwrap_or(0),
            ms(quantile(&total, 0.5)),
            ms(quantile(&total, 0.99)),
            ms(quantile(&total, 1.0)),
            ms(quantile(&reload, 0.5)),
            ms(quantile(&reload, 0.99)),
            ms(quantile(&fanout, 0.5)),
            ms(quantile(&fanout, 0.99)),
        );
    }
    println!();
    println!("| phase | wall | control-plane CPU | proxies CPU | control-plane heap live / peak | process RSS / peak |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |name: &str, wall: Duration, c: &Cpu, h: &Heap, r: (i64, i64)| {
        println!(
            "| {name} | {} | {:.1} s | {:.1} s | {:.0} / {:.0} MiB | {:.0} / {:.0} MiB |",
            ms(wall),
            c.control_plane().as_secs_f64(),
            c.proxies.as_secs_f64(),
            mib(h.live[TAG_CP]),
            mib(h.peak[TAG_CP]),
            mib(r.0),
            mib(r.1)
        )
    };
    row(
        "start (load, analyze, first snapshot)",
        start_time,
        &cpu_start,
        &heap_cp_only,
        rss_cp_only,
    );
    row(
        "full sync of every proxy",
        full_sync,
        &cpu_sync,
        &heap_sync,
        rss_sync,
    );
    let changes_wall: Duration = samples.iter().flatten().map(|s| s.total).sum();
    row(
        &format!("{} changes (sum of change -> last ACK)", o.rounds * 2),
        changes_wall,
        &cpu_changes,
        &heap_changes,
        rss_changes,
    );
    println!();
    println!(
        "heap accounting: each allocation carries a 16-byte tag header ({} live allocations = {:.1} MiB of the RSS above); heap figures are bytes requested. Tags: {:?}.",
        heap_changes.allocations,
        mib(heap_changes.allocations * 16),
        TAGS
    );
    cp.shutdown().await;
}
