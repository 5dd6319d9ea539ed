//! How long the fuzz properties run, shared by the fuzz test binaries of qm-common,
//! qm-daemon and qm-shell (the last two include this file by path).
//!
//! By default each property checks a fixed number of random cases: enough to catch a
//! regression while adding only seconds to `cargo test`. With `QM_FUZZ_SECS=N` each property
//! keeps drawing fresh batches of cases until N seconds after the first property of its test
//! binary started (run them with `--test-threads` at least the number of properties, so that
//! they share the time instead of queueing for it).
//!
//! A failure panics with proptest's smallest failing input, which reproduces it.

#![allow(dead_code)]

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Environment variable: seconds the fuzz properties of one test binary run for.
pub const BUDGET_ENV: &str = "QM_FUZZ_SECS";

/// When the long run ends; `None` without `QM_FUZZ_SECS`.
fn deadline() -> Option<Instant> {
    static DEADLINE: OnceLock<Option<Instant>> = OnceLock::new();
    *DEADLINE.get_or_init(|| {
        let text = std::env::var(BUDGET_ENV).ok().filter(|t| !t.trim().is_empty())?;
        let secs: u64 = text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{BUDGET_ENV}={text:?}: give a whole number of seconds"));
        Some(Instant::now() + Duration::from_secs(secs))
    })
}

/// Checks `test` on `cases` values drawn from `strategy`, then on further batches until the
/// deadline of `QM_FUZZ_SECS` if one is set.
pub fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    // The first property to start sets the deadline for all of them.
    deadline();
    for batch in 0u64.. {
        let mut config = Config { cases, failure_persistence: None, ..Config::default() };
        // A seed given with PROPTEST_RNG_SEED starts the first batch; later ones move on.
        if let RngSeed::Fixed(seed) = config.rng_seed {
            config.rng_seed = RngSeed::Fixed(seed.wrapping_add(batch));
        }
        let mut runner = TestRunner::new(config);
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{e}");
        }
        match deadline() {
            Some(end) if Instant::now() < end => continue,
            Some(_) => {
                let name = std::thread::current().name().unwrap_or("a property").to_string();
                eprintln!("{name}: {} cases", u64::from(cases) * (batch + 1));
            }
            None => {}
        }
        break;
    }
}
