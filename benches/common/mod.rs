//! The command line every benchmark reads: `--name value` pairs and bare flags
//! after `cargo bench --bench NAME --`.
//!
//! Each benchmark compiles its own copy and uses part of it.
#![allow(dead_code)]

pub struct Args(Vec<String>);

impl Args {
    /// The process's arguments; `--threads N` sizes rayon's global pool here.
    pub fn parse() -> Self {
        let args = Args(std::env::args().collect());
        if let Some(threads) = args.number("--threads") {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global()
                .expect("the global pool is set once");
        }
        args
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        Some(self.0.get(i + 1)?.as_str())
    }

    pub fn number(&self, name: &str) -> Option<usize> {
        self.value(name).map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v}"))
        })
    }

    pub fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}
