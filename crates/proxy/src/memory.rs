//! Giving back the pages of code that only ran at startup or during a reload.
//!
//! Loading manifests (YAML, serde for every Istio and Kubernetes type) and compiling them
//! touch far more of the executable than serving requests does: right after start-up about
//! 15 MB of the binary is resident, of which the request path needs about 5 MB. Those
//! pages are clean and file-backed, so asking the kernel to reclaim them
//! (`MADV_PAGEOUT`, Linux 5.4+) is free of risk: whatever is still used faults back in from
//! the page cache (or the file). Done a few seconds after a config is applied, so the
//! first requests on a new config do not pay for the refaults.
//!
//! Owns only that; what counts as "the executable" is read from `/proc/self/maps`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long after an apply the startup pages are given back.
const SETTLE: Duration = Duration::from_secs(3);

/// Schedules [`release_executable_pages`] after the config in force has settled; a later
/// apply postpones it (`generation` counts applies).
pub fn release_after_settle(handle: &tokio::runtime::Handle, generation: &Arc<AtomicU64>) {
    let mine = generation.fetch_add(1, Ordering::Relaxed) + 1;
    let generation = generation.clone();
    handle.spawn(async move {
        tokio::time::sleep(SETTLE).await;
        if generation.load(Ordering::Relaxed) == mine {
            let released = release_executable_pages();
            tracing::debug!("gave back {} KiB of executable pages", released / 1024);
        }
    });
}

/// Asks the kernel to reclaim the resident pages of this process's read-only executable
/// mappings; returns the bytes of mapping advised. Does nothing off Linux.
pub fn release_executable_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return 0;
        };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        let mut advised = 0;
        for (start, len) in executable_mappings(&maps, &exe.to_string_lossy()) {
            // SAFETY: `start..start+len` is a whole mapping listed in /proc/self/maps as a
            // read-only (no `w`) private mapping of our own executable file. MADV_PAGEOUT
            // only drops resident pages; the mapping, its protection and its contents are
            // unchanged (clean file pages are read back on the next access), so no Rust
            // value or reference is invalidated. Errors (EINVAL on kernels before 5.4) are
            // ignored: the advice is optional.
            let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
            if rc == 0 {
                advised += len;
            }
        }
        advised
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// `(start, length)` of the read-only mappings of `exe` in a `/proc/self/maps` text.
fn executable_mappings(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let path = f.nth(3)?;
            if path != exe || perms.contains('w') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let a = usize::from_str_radix(a, 16).ok()?;
            let b = usize::from_str_radix(b, 16).ok()?;
            (b > a).then_some((a, b - a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_read_only_mappings_of_the_executable() {
        let maps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:01 42 /usr/bin/trellis
55d0a0100000-55d0a0900000 r-xp 00100000 fd:01 42 /usr/bin/trellis
55d0a0900000-55d0a0901000 rw-p 00900000 fd:01 42 /usr/bin/trellis
7f0000000000-7f0000100000 r-xp 00000000 fd:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            executable_mappings(maps, "/usr/bin/trellis"),
            vec![(0x55d0a0000000, 0x100000), (0x55d0a0100000, 0x800000)]
        );
    }

    #[test]
    fn releasing_keeps_the_code_working() {
        // The test binary's own code is paged out and must still run afterwards.
        let before = release_executable_pages();
        assert!(cfg!(not(target_os = "linux")) || before > 0);
        assert_eq!(executable_mappings("", "/x"), vec![]);
    }
}
