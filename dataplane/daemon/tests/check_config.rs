//! `--check-config`: a valid file prints its warnings and `FILE: ok` and exits 0, an
//! invalid one prints one error line and exits 2, and neither starts DPDK.

mod common;

use std::process::{Command, Output};

use common::TestDir;

fn check(dir: &TestDir, config: &str) -> (Output, String) {
    let path = dir.write_config(config);
    let output = Command::new(common::BINARY)
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run spike-dataplane --check-config");
    (output, path.display().to_string())
}

#[test]
fn valid_config_prints_ok() {
    let dir = TestDir::new("check-ok");
    let eal_args = common::eal_args("check-ok", "0,1", &["--vdev", "net_null0"]);
    let config = common::example_config() + &common::dpdk_section(&eal_args, "net_null0", "");
    let (output, path) = check(&dir, &config);
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(stdout.ends_with(&format!("{path}: ok\n")), "{stdout}");
    // The example file keeps the example hash key, which the check warns about.
    assert!(
        stdout.contains(&format!("{path}: warning: hash.key is the example key")),
        "{stdout}"
    );
    assert!(!stdout.contains("EAL"), "DPDK stayed off: {stdout}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

#[test]
fn file_given_to_check_config() {
    let dir = TestDir::new("check-value");
    let eal_args = common::eal_args("check-value", "0,1", &["--vdev", "net_null0"]);
    let config = common::example_config() + &common::dpdk_section(&eal_args, "net_null0", "");
    let path = dir.write_config(&config);
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(common::BINARY)
            .args(args)
            .output()
            .expect("run spike-dataplane --check-config")
    };
    let ok = format!("{}: ok\n", path.display());

    let output = run(&["--check-config".as_ref(), path.as_os_str()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).ends_with(&ok),
        "{output:?}"
    );

    let same = [
        "--check-config".as_ref(),
        path.as_os_str(),
        "--config".as_ref(),
        path.as_os_str(),
    ];
    let output = run(&same);
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    let other = dir.path().join("other.toml");
    let differ = [
        "--check-config".as_ref(),
        path.as_os_str(),
        "--config".as_ref(),
        other.as_os_str(),
    ];
    let output = run(&differ);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr.contains("name different files"), "{stderr}");

    let output = run(&["--check-config".as_ref()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr.contains("--check-config needs the file"), "{stderr}");
}

#[test]
fn invalid_config_exits_2() {
    let dir = TestDir::new("check-invalid");
    let eal_args = common::eal_args("check-invalid", "0,1", &["--vdev", "net_null0"]);
    let cases = [
        (
            common::dpdk_section(&eal_args, "net_null0", "workers = 2"),
            "dpdk.workers: invalid value 2",
        ),
        (String::new(), "has no [dpdk] section"),
    ];
    for (section, message) in cases {
        let (output, path) = check(&dir, &(common::example_config() + &section));
        let stderr = String::from_utf8_lossy(&output.stderr);

        assert_eq!(output.status.code(), Some(2), "{message}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("spike-dataplane: {path}")),
            "{stderr}"
        );
        assert!(stderr.contains(message), "{message}: {stderr}");
        assert!(output.stdout.is_empty(), "{output:?}");
    }
}

#[test]
fn help_names_runtime_directory() {
    let output = Command::new(common::BINARY)
        .arg("--help")
        .output()
        .expect("run spike-dataplane --help");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        stdout.contains("Environment:\n  RUNTIME_DIRECTORY "),
        "{stdout}"
    );
    assert!(stdout.contains("(default: /run/spike)"), "{stdout}");
}

#[test]
fn dpdk_section_checks_name_the_value() {
    let dir = TestDir::new("check-dpdk");
    let ring_dir = dir.path().display().to_string();
    let with_lcores = |lcores: &str| common::eal_args("check-dpdk", lcores, &[]);
    let cases = [
        (
            common::dpdk_section(&with_lcores("0,1"), "net_null0", "snapshot_ring = \"\""),
            "dpdk.snapshot_ring: invalid value \"\": expected the absolute path".to_owned(),
        ),
        (
            common::dpdk_section(
                &with_lcores("0,1"),
                "net_null0",
                &format!("snapshot_ring = {ring_dir:?}"),
            ),
            format!("dpdk.snapshot_ring: invalid value {ring_dir}: expected the path of the ring file, not a directory"),
        ),
        (
            common::dpdk_section(&with_lcores("zero"), "net_null0", ""),
            "dpdk.eal_args: invalid value \"zero\" in -l \"zero\"".to_owned(),
        ),
        (
            common::dpdk_section(&with_lcores("0-2-1"), "net_null0", ""),
            "dpdk.eal_args: invalid value \"0-2-1\" in -l".to_owned(),
        ),
        (
            common::dpdk_section(&["--lcores".to_owned(), "0@1".to_owned()], "net_null0", ""),
            "dpdk.workers: invalid value 1: expected at most 0".to_owned(),
        ),
        (
            common::dpdk_section(&with_lcores("0,1"), "net_null0", "")
                .replacen("\"-m\", \"256\"", "\"-m\", \"lots\"", 1),
            "dpdk.eal_args: invalid value \"lots\" in -m \"lots\": expected a number of MiB"
                .to_owned(),
        ),
        (
            common::dpdk_section(&with_lcores("0,1"), "net_null0", "")
                .replacen("\"--no-huge\"", "\"--no-huge\", \"--bogus-option=1\"", 1),
            "dpdk.eal_args: invalid value \"--bogus-option\": expected an EAL option of DPDK \
             22.11, one of -a -b -c"
                .to_owned(),
        ),
    ];
    for (section, message) in cases {
        let (output, path) = check(&dir, &(common::example_config() + &section));
        let stderr = String::from_utf8_lossy(&output.stderr);

        assert_eq!(output.status.code(), Some(2), "{message}: {stderr}");
        assert!(
            stderr.starts_with(&format!("spike-dataplane: {path}:")),
            "{stderr}"
        );
        assert!(stderr.contains(&message), "{message}: {stderr}");
    }
}

#[test]
fn idle_lcores_are_a_warning() {
    let dir = TestDir::new("check-idle");
    let eal_args = common::eal_args("check-idle", "0-3", &[]);
    let config = common::example_config() + &common::dpdk_section(&eal_args, "net_null0", "");
    let (output, path) = check(&dir, &config);
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        stdout.contains(&format!(
            "{path}: warning: dpdk.eal_args gives 3 worker lcores besides the main lcore, but \
             dpdk.workers = 1: the extra 2 stay idle"
        )),
        "{stdout}"
    );
}

#[test]
fn controlplane_file_is_recognised() {
    let path = common::repository_root().join("configs/controlplane.toml");
    let output = Command::new(common::BINARY)
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run spike-dataplane --check-config");
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("controlplane: this looks like a spike-controlplane config"),
        "{stderr}"
    );
    assert!(stderr.contains("pass that file with --config"), "{stderr}");
}

#[test]
fn unslotted_backend_is_a_warning() {
    let dir = TestDir::new("check-unslotted");
    let eal_args = common::eal_args("check-unslotted", "0,1", &[]);
    // node-a of the first service, web, outweighs node-b (1) and node-c (2) so far that
    // neither gets one of the 65537 slots.
    let example = common::example_config();
    let heavy = example.replacen("weight = 1\n", "weight = 10000000\n", 1);
    assert_ne!(heavy, example, "the example sets node-a's weight");
    let config = heavy + &common::dpdk_section(&eal_args, "net_null0", "");
    let (output, path) = check(&dir, &config);
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    for backend in ["node-b has weight 1", "node-c has weight 2"] {
        assert!(
            stdout.contains(&format!("{path}: warning: service web: backend {backend} but none of the 65537 Maglev slots")),
            "{backend}: {stdout}"
        );
    }
    assert!(stdout.contains("sum to 10000003"), "{stdout}");
    assert!(stdout.ends_with(&format!("{path}: ok\n")), "{stdout}");
}
