//! `--check-config`: a valid file prints its warnings and `FILE: ok` and exits 0, an
//! invalid one prints one error line and exits 2, and the check creates no ring.

use std::path::Path;
use std::process::{Command, Output};

const CONTROLPLANE: &str = env!("CARGO_BIN_EXE_spike-controlplane");

fn check(path: &Path) -> Output {
    Command::new(CONTROLPLANE)
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run spike-controlplane --check-config")
}

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/controlplane.toml");
    std::fs::read_to_string(path).expect("read the example config")
}

#[test]
fn valid_config_prints_ok() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let text = example().replace("/dev/shm/spike-ring", &ring.display().to_string());
    let path = dir.path().join("controlplane.toml");
    std::fs::write(&path, text).unwrap();

    let output = check(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        stdout.ends_with(&format!("{}: ok\n", path.display())),
        "{stdout}"
    );
    // The example keeps the example hash key, which the check warns about.
    assert!(
        stdout.contains("warning: hash.key is the example key"),
        "{stdout}"
    );
    assert!(!ring.exists(), "the check created no ring");
}

#[test]
fn file_given_to_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let text = example().replace("/dev/shm/spike-ring", &ring.display().to_string());
    let path = dir.path().join("controlplane.toml");
    std::fs::write(&path, text).unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(CONTROLPLANE)
            .args(args)
            .output()
            .expect("run spike-controlplane --check-config")
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
    assert!(!ring.exists(), "the check created no ring");
}

#[test]
fn invalid_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controlplane.toml");
    let cases = [
        (
            ("port = 80", "port = 0"),
            "service[0] (web).port: invalid value 0",
        ),
        (
            ("ring = \"/dev/shm/spike-ring\"", "ring = \"spike-ring\""),
            "controlplane.ring",
        ),
        (
            ("\n[[service]]\n", "\n[[services]]\n"),
            "unknown section `services`",
        ),
    ];
    for ((from, to), message) in cases {
        let text = example().replacen(from, to, 1);
        std::fs::write(&path, text).unwrap();

        let output = check(&path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{message}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        let place = format!("spike-controlplane: {}:", path.display());
        assert!(stderr.starts_with(&place), "{place}: {stderr}");
        assert!(stderr.contains(message), "{message}: {stderr}");
        assert!(output.stdout.is_empty(), "{output:?}");
    }
}

/// A kubeconfig whose current context names a cluster with a server.
const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://127.0.0.1:6443
contexts:
- name: lab
  context:
    cluster: lab
current-context: lab
";

#[test]
fn kubeconfig_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controlplane.toml");
    let kubeconfig = dir.path().join("kubeconfig");
    let write_config = |api_server_extra: &str| {
        let section = format!(
            "[kubernetes.api_server]\nmode = \"kubeconfig\"\npath = {:?}\n{api_server_extra}\n\
             [kubernetes.services]\nmatch_labels = {{ spike = \"yes\" }}\n",
            kubeconfig.display().to_string()
        );
        std::fs::write(&path, format!("{}\n{section}", example())).unwrap();
    };
    let shown = kubeconfig.display();
    // (kubeconfig text or None for no file, extra api_server lines, expected error)
    let cases = [
        (
            None,
            "",
            format!("kubernetes.api_server.path: invalid value {shown}: expected an existing kubeconfig file"),
        ),
        (
            Some("garbage: [\n"),
            "",
            format!(
                "kubernetes.api_server.path: invalid value {shown}: expected a kubeconfig file \
                 that spike-controlplane can use: failed to parse kubeconfig YAML: error: line 1 \
                 column 10"
            ),
        ),
        (
            Some("apiVersion: v1\n"),
            "",
            "failed to determine current context".to_owned(),
        ),
        (
            Some(KUBECONFIG),
            "context = \"prod\"\n",
            format!(
                "kubernetes.api_server.context: invalid value \"prod\": expected a context that \
                 the kubeconfig file {shown} defines"
            ),
        ),
        (
            Some(&KUBECONFIG.replace("    server: https://127.0.0.1:6443\n", "    insecure-skip-tls-verify: true\n")),
            "",
            "cluster url is missing".to_owned(),
        ),
        (
            Some(&KUBECONFIG.replace("https://127.0.0.1:6443", "\"\"")),
            "",
            format!("kubeconfig {shown}: cluster \"lab\" of context \"lab\" has server \"\", which is empty"),
        ),
        (
            Some(&KUBECONFIG.replace("https://127.0.0.1:6443", "not a url")),
            "",
            format!(
                "kubeconfig {shown}: cluster \"lab\" of context \"lab\" has server \"not a url\", \
                 which is not a URL"
            ),
        ),
    ];
    for (text, extra, expected) in cases {
        match text {
            Some(text) => std::fs::write(&kubeconfig, text).unwrap(),
            None => {
                let _ = std::fs::remove_file(&kubeconfig);
            }
        }
        write_config(extra);
        let output = check(&path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{expected}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(&expected), "{expected}: {stderr}");
    }

    std::fs::write(&kubeconfig, KUBECONFIG).unwrap();
    for extra in ["", "context = \"lab\"\n"] {
        write_config(extra);
        let output = check(&path);
        assert_eq!(output.status.code(), Some(0), "{extra}: {output:?}");
    }
}

#[test]
fn unslotted_backend_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let path = dir.path().join("controlplane.toml");
    // web's node-a outweighs node-b so far that node-b gets none of the 65537 slots.
    let example = example().replace("/dev/shm/spike-ring", &ring.display().to_string());
    let heavy = example.replacen("weight = 1\n", "weight = 1000000\n", 1);
    assert_ne!(heavy, example, "the example sets node-a's weight");
    std::fs::write(&path, heavy).unwrap();

    let output = check(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let warning = format!(
        "{}: warning: service web: backend node-b has weight 1 but none of the 65537 Maglev \
         slots",
        path.display()
    );
    assert!(stdout.contains(&warning), "{stdout}");
    assert!(
        stdout.ends_with(&format!("{}: ok\n", path.display())),
        "{stdout}"
    );
}

#[test]
fn snapshot_larger_than_a_slot_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let path = dir.path().join("controlplane.toml");
    let mut text = example().replace("/dev/shm/spike-ring", &ring.display().to_string());
    // Each service with its own backend gets its own table of 65537 slots, about 256 KiB:
    // with web's and dns's, five tables outgrow a slot of 1 MiB.
    for index in 1..=3 {
        text.push_str(&format!(
            "\n[[service]]\nname = \"extra-{index}\"\nvip = \"198.51.100.10\"\n\
             protocol = \"tcp\"\nport = {}\n\n[[service.backend]]\nname = \"b\"\n\
             address = \"192.0.2.{}\"\nvtep_mac = \"0a:58:0a:f4:00:0c\"\n",
            8000 + index,
            100 + index
        ));
    }
    std::fs::write(&path, &text).unwrap();
    let output = check(&path);
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    let small = text.replace("ring_slot_size_mib = 16", "ring_slot_size_mib = 1");
    assert_ne!(small, text, "the example sets ring_slot_size_mib");
    std::fs::write(&path, small).unwrap();
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    for expected in [
        "does not fit a ring slot of 1048512 payload bytes",
        "(controlplane.ring_slot_size_mib = 1): set controlplane.ring_slot_size_mib to 2 or more",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert!(output.stdout.is_empty(), "{output:?}");
    assert!(!ring.exists(), "the check created no ring");
}

#[test]
fn help_lists_signals_exit_codes_and_logging() {
    let output = Command::new(CONTROLPLANE).arg("--help").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    for expected in [
        "Signals:\n  SIGHUP ",
        "  SIGINT, SIGTERM ",
        "  SIGUSR1 ",
        "Exit codes:\n  0 ",
        "  2  invalid config or command line",
        "RUST_LOG sets the filter",
        "  --withdraw ",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
}
