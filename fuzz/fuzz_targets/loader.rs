//! Fuzzes the config loader: any bytes -> YAML documents -> typed resources -> validation.
//! Nothing may panic, overflow the stack or run away on memory.
//!
//! Run: `cargo fuzz run loader --sanitizer none` (stable toolchain), from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_api::load::{LoadOptions, ResourceSet};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut set = ResourceSet::default();
        set.add_text("fuzz.yaml", text, &LoadOptions::default());
        for d in &set.diagnostics {
            let _ = d.to_string();
        }
    }
});
