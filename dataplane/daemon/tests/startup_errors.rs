//! Start-up failures: an invalid config exits with 2, a DPDK failure with 1, and each
//! prints one `spike-dataplane: ...` line that names the offending key or value.

mod common;

use common::TestDir;

/// Runs `config` and returns the exit code and the single error line.
fn failure(test_name: &str, config: &str) -> (Option<i32>, String) {
    let dir = TestDir::new(test_name);
    let failure = common::run_to_exit(&dir, config);
    let line = failure.error_line().to_owned();
    assert!(
        line.starts_with("spike-dataplane: "),
        "{test_name}: the last stderr line is the error; stderr:\n{}",
        failure.stderr
    );
    let message = &line["spike-dataplane: ".len()..];
    assert_eq!(
        failure.stderr.matches(message).count(),
        1,
        "{test_name}: the error is printed once; stderr:\n{}",
        failure.stderr
    );
    assert!(
        !failure.stderr.contains("panicked"),
        "{test_name}: {}",
        failure.stderr
    );
    (failure.code, line)
}

fn null_port_section(test_name: &str, lcores: &str, extra_lines: &str) -> String {
    let eal_args = common::eal_args(test_name, lcores, &["--vdev", "net_null0"]);
    common::dpdk_section(&eal_args, "net_null0", extra_lines)
}

#[test]
fn config_errors_exit_2() {
    let base = common::example_config();
    let cases = [
        (
            "table-size",
            base.replace("table_size = 65537", "table_size = 65536")
                + &null_port_section("table-size", "0,1", ""),
            &["spike.toml:", "service[0] (web).table_size", "65536"][..],
        ),
        (
            "no-dpdk",
            base.clone(),
            &["has no [dpdk] section", "spike.toml"][..],
        ),
        (
            "zero-workers",
            base.clone() + &null_port_section("zero-workers", "0,1", "workers = 0"),
            &[
                "dpdk.workers: invalid value 0",
                "expected from 1 to 128 worker lcores",
            ][..],
        ),
        (
            "few-lcores",
            base.clone() + &null_port_section("few-lcores", "0,1", "workers = 2"),
            &["dpdk.workers: invalid value 2", "gives 1 worker lcores"][..],
        ),
        (
            "unknown-key",
            base.clone() + &null_port_section("unknown-key", "0,1", "queues = 4"),
            &["unknown field `queues`"][..],
        ),
        (
            "unknown-eal-option",
            base.clone()
                + &common::dpdk_section(
                    &common::eal_args("unknown-eal-option", "0,1", &["--bogus"]),
                    "net_null0",
                    "",
                ),
            &[
                "dpdk.eal_args: invalid value \"--bogus\"",
                "expected an EAL option of DPDK 22.11",
            ][..],
        ),
    ];

    for (name, config, expected) in cases {
        let (code, line) = failure(name, &config);
        assert_eq!(code, Some(2), "{name}: exit code for {line}");
        for text in expected {
            assert!(
                line.contains(text),
                "{name}: {text:?} missing from {line:?}"
            );
        }
    }
}

#[test]
fn missing_config_file_exits_2() {
    let dir = TestDir::new("missing-file");
    let mut daemon = common::Daemon::start(&dir, &dir.file("absent.toml"));
    let status = daemon.wait_exit(common::EXIT_TIMEOUT);
    let stderr = daemon.stderr_text();

    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

#[test]
fn bad_eal_argument_exits_1() {
    // The config check reads each EAL option but not how options combine: EAL itself
    // rejects --socket-mem beside the --no-huge of the test's arguments.
    let eal_args = common::eal_args("bogus", "0,1", &["--socket-mem", "64"]);
    let config = common::example_config() + &common::dpdk_section(&eal_args, "net_null0", "");
    let (code, line) = failure("bogus", &config);

    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("cannot initialize DPDK"), "{line}");
    assert!(line.contains("--socket-mem"), "{line}");
}

#[test]
fn missing_port_lists_available_ports() {
    let eal_args = common::eal_args("no-port", "0,1", &["--vdev", "net_null0"]);
    let config = common::example_config() + &common::dpdk_section(&eal_args, "net_pcap9", "");
    let (code, line) = failure("no-port", &config);

    assert_eq!(code, Some(1), "{line}");
    assert_eq!(
        line,
        "spike-dataplane: port net_pcap9 not found (if dpdk.eal_args creates it with \
         --vdev, its driver failed to start: see the EAL messages above); available ports: \
         net_null0"
    );
}

#[test]
fn too_little_memory_exits_1() {
    let mut eal_args = common::eal_args("small-memory", "0,1", &["--vdev", "net_null0"]);
    let memory = eal_args.iter().position(|arg| arg == "256").unwrap();
    eal_args[memory] = "64".to_owned();
    let section = common::dpdk_section(&eal_args, "net_null0", "mbufs = 65535");
    let (code, line) = failure("small-memory", &(common::example_config() + &section));

    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("dpdk.mbufs = 65535"), "{line}");
    assert!(line.contains("raise -m"), "{line}");
}

#[test]
fn second_instance_on_port_exits_1() {
    let dir = TestDir::new("second-instance");
    let first_config = common::example_config() + &null_port_section("first", "0,1", "");
    let path = dir.write_config(&first_config);
    let mut first = common::Daemon::start(&dir, &path);
    first.wait_log(std::time::Duration::from_secs(20), "forwarding started");

    // Same port name and runtime directory, but its own EAL file prefix.
    let second_config = common::example_config() + &null_port_section("second", "0,1", "");
    let second_path = dir.file("second.toml");
    std::fs::write(&second_path, second_config).expect("write the second config");
    let output = std::process::Command::new(common::BINARY)
        .arg("--config")
        .arg(&second_path)
        .env("RUNTIME_DIRECTORY", dir.path())
        .output()
        .expect("run the second instance");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("another spike-dataplane already runs port net_null0"),
        "{stderr}"
    );

    let stdout = first.stop_with("INT");
    assert!(common::has_line(&stdout, "generation 1"), "{stdout}");
}

#[test]
fn second_reader_of_ring_exits_1() {
    let dir = TestDir::new("second-ring-reader");
    let ring = format!(
        "snapshot_ring = {:?}",
        dir.file("ring").display().to_string()
    );
    let first_config = common::example_config() + &null_port_section("first-reader", "0,1", &ring);
    let path = dir.write_config(&first_config);
    let mut first = common::Daemon::start(&dir, &path);
    first.wait_log(std::time::Duration::from_secs(20), "forwarding started");

    // Another port, so that the port lock lets it start, but the same ring.
    let eal_args = common::eal_args("second-reader", "0,1", &["--vdev", "net_null1"]);
    let second_config =
        common::example_config() + &common::dpdk_section(&eal_args, "net_null1", &ring);
    let second_path = dir.file("second.toml");
    std::fs::write(&second_path, second_config).expect("write the second config");
    let output = std::process::Command::new(common::BINARY)
        .arg("--config")
        .arg(&second_path)
        .env("RUNTIME_DIRECTORY", dir.path())
        .output()
        .expect("run the second instance");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("already has a reader"), "{stderr}");
    assert!(
        last.contains(&dir.file("ring").display().to_string()),
        "{stderr}"
    );
    assert!(
        last.contains(&format!("process {} holds", first.pid())),
        "{stderr}"
    );

    first.stop_with("INT");
}

#[test]
fn unwritten_ring_is_reported() {
    let dir = TestDir::new("unwritten-ring");
    let ring = format!(
        "snapshot_ring = {:?}",
        dir.file("ring").display().to_string()
    );
    let config = common::example_config() + &null_port_section("unwritten-ring", "0,1", &ring);
    let path = dir.write_config(&config);
    let mut daemon = common::Daemon::start(&dir, &path);

    // No control plane writes the new ring, so the warning follows 5 s after attaching.
    daemon.wait_log(
        std::time::Duration::from_secs(20),
        "the snapshot ring has no snapshot (generation 0)",
    );
    daemon.stop_with("INT");
}
