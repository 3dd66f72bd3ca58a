//! The loader never panics on any input: truncations, byte flips and splices of real
//! manifests (a deterministic, always-on slice of what `fuzz/` explores), plus hostile YAML.

use std::path::{Path, PathBuf};

use trellis_api::load::{LoadOptions, ResourceSet};

const INLINE_SEEDS: &[&str] = &[
    "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, name: http}]}\n",
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - uri: {prefix: /api}\n      headers: {end-user: {exact: jason}}\n    route:\n    - destination: {host: reviews, subset: v2}\n      weight: 80\n    timeout: 5s\n",
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  rules:\n  - from: [{source: {principals: [\"*\"]}}]\n    when: [{key: request.auth.claims[groups], values: [admin]}]\n",
];

fn seeds() -> Vec<String> {
    let mut out: Vec<String> = INLINE_SEEDS.iter().map(|s| s.to_string()).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut stack: Vec<PathBuf> = vec![root];
    while let Some(p) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&p) {
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "yaml") {
                    if let Ok(t) = std::fs::read_to_string(&path) {
                        out.push(t);
                    }
                }
            }
        }
    }
    out.truncate(40);
    out
}

fn load(text: &str) -> ResourceSet {
    let mut set = ResourceSet::default();
    set.add_text("fuzz.yaml", text, &LoadOptions::default());
    for d in &set.diagnostics {
        assert!(!d.to_string().is_empty());
    }
    set
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_manifests_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    const NOISE: &[u8] = b" \t\n:-[]{}&*!|>'\"#%@`,?0123456789abcxyz~.";
    for seed in seeds() {
        let bytes = seed.as_bytes();
        for _ in 0..150 {
            let mut m = bytes.to_vec();
            for _ in 0..1 + rng.below(4) {
                match rng.below(4) {
                    0 => {
                        let cut = rng.below(m.len());
                        m.truncate(cut);
                    }
                    1 if !m.is_empty() => {
                        let i = rng.below(m.len());
                        m[i] = NOISE[rng.below(NOISE.len())];
                    }
                    2 => {
                        let i = rng.below(m.len() + 1);
                        m.insert(i, NOISE[rng.below(NOISE.len())]);
                    }
                    _ if !m.is_empty() => {
                        let a = rng.below(m.len());
                        let b = rng.below(m.len());
                        let (a, b) = (a.min(b), a.max(b));
                        let chunk = m[a..b].to_vec();
                        let at = rng.below(m.len());
                        m.splice(at..at, chunk);
                    }
                    _ => {}
                }
            }
            if let Ok(text) = String::from_utf8(m) {
                load(&text);
            }
        }
    }
}

#[test]
fn hostile_yaml_is_refused_cleanly() {
    let deep = format!("{}{}", "- ".repeat(5000), "x");
    assert!(load(&deep).has_errors());
    let set = load("a: &a [*a]\n");
    assert!(set.resources.is_empty());
    assert!(load("\u{0}\u{1}\u{2}").resources.is_empty());
    let set =
        load("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: [x]}\n");
    assert!(set.resources.is_empty());
    assert!(set.has_errors());
}
