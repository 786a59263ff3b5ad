//! Invalid EAL arguments return an error instead of exiting. Each case runs
//! in a child process (this test binary, re-executed), so an abort inside
//! DPDK would fail the test instead of killing the harness.

mod common;

use std::process::Command;

use spike_dpdk::{DpdkError, Eal};

/// Set in the child to the invalid arguments it should pass, joined by
/// spaces.
const CHILD_ARGS_ENV: &str = "SPIKE_DPDK_BAD_ARGS";
const CHILD_TEST: &str = "child_init_with_bad_args";
const RESULT_MARKER: &str = "eal-init-result:";

#[test]
fn bad_eal_args_return_error() {
    let cases: &[(&str, &[&str])] = &[
        ("unknown option", &["--bogus-flag"]),
        ("lcore beyond RTE_MAX_LCORE", &["-l", "4000"]),
    ];

    for (description, bad_args) in cases {
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ARGS_ENV, bad_args.join(" "))
            .output()
            .expect("failed to run the test binary as a child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);

        assert!(
            output.status.success(),
            "{description}: child failed with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        let result = stderr
            .lines()
            .find_map(|line| line.strip_prefix(RESULT_MARKER))
            .unwrap_or_else(|| panic!("{description}: no result line in:\n{stderr}"));
        assert!(
            result.contains("rte_eal_init failed"),
            "{description}: {result}"
        );
        assert!(
            result.contains("Invalid argument"),
            "{description}: {result}"
        );
        assert!(result.contains(bad_args[0]), "{description}: {result}");
    }
}

/// Does nothing in the parent run; the child runs it with CHILD_ARGS_ENV
/// set, initializes the EAL with the bad arguments and prints the error.
#[test]
fn child_init_with_bad_args() {
    let Ok(bad_args) = std::env::var(CHILD_ARGS_ENV) else {
        return;
    };

    let dir = common::TempDir::new("bad-args");
    let extra: Vec<&str> = bad_args.split(' ').collect();
    let args = common::eal_args("bad-args", &dir, &extra);

    let error = Eal::init(&args).expect_err("EAL init must reject the arguments");
    assert!(
        matches!(error, DpdkError::EalInit { errno: 22, .. }),
        "{error:?}"
    );
    // DPDK prints its usage text through C's buffered stdout, which can
    // interleave with Rust's stdout mid-line, so the result goes to stderr
    // on a line of its own.
    eprintln!("\n{RESULT_MARKER} {error}");
}
