//! `--withdraw`: with `[bgp]` it writes the routes file without VIPs and reloads a real
//! BIRD 2, which then announces none. Without `[bgp]` it does nothing. An invalid config
//! exits 2 and an unreachable BIRD exits 1, each with one line on stderr. It never
//! opens the snapshot ring.
//!
//! BIRD runs in its own network namespace (`unshare -n`), so its BGP session to
//! 127.0.0.1 reaches nothing. Its control socket is a file in a temporary directory.
//! Needs root and Debian's bird2.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::Duration;

const CONTROLPLANE: &str = env!("CARGO_BIN_EXE_spike-controlplane");
const VIP_ROUTE: &str = "203.0.113.80/32";

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/controlplane.toml");
    std::fs::read_to_string(path).expect("read the example config")
}

/// Writes the example config with its ring in `dir` and, when `bgp` is set, that
/// `[bgp]` section appended. Returns the config's path.
fn write_config(dir: &Path, bgp: Option<&str>) -> PathBuf {
    let ring = dir.join("ring");
    let mut text = example().replace("/dev/shm/spike-ring", &ring.display().to_string());
    if let Some(bgp) = bgp {
        text.push_str(bgp);
    }
    let path = dir.join("controlplane.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Returns a `[bgp]` section with the routes file in `dir` and BIRD's socket at
/// `socket`.
fn bgp_section(dir: &Path, socket: &Path) -> String {
    format!(
        "\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\nbird_socket = {:?}\n\
         routes_file = {:?}\n\n[[bgp.neighbor]]\naddress = \"127.0.0.1\"\nasn = 65000\n",
        socket.display().to_string(),
        dir.join("routes.conf").display().to_string()
    )
}

fn withdraw(config: &Path) -> Output {
    Command::new(CONTROLPLANE)
        .arg("--withdraw")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("run spike-controlplane --withdraw")
}

/// BIRD 2 in the foreground in a new network namespace, with a config that includes
/// `dir/routes.conf`. Killed and reaped when dropped.
struct Bird {
    child: Child,
    socket: PathBuf,
}

impl Bird {
    fn start(dir: &Path) -> Bird {
        let config = dir.join("bird.conf");
        let routes = dir.join("routes.conf");
        std::fs::write(&config, format!("include \"{}\";\n", routes.display())).unwrap();
        let socket = dir.join("bird.ctl");
        let child = Command::new("unshare")
            .arg("-n")
            .arg("bird")
            .arg("-f")
            .arg("-c")
            .arg(&config)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare and bird must be installed (scripts/install-deps.sh)");
        let bird = Bird { child, socket };
        // BIRD replies on its socket only after it has read its config. 10 s bounds the
        // wait.
        for _ in 0..200 {
            if bird.birdc("show status").status.success() {
                return bird;
            }
            sleep(Duration::from_millis(50));
        }
        panic!(
            "BIRD did not respond on {} within 10 s",
            bird.socket.display()
        );
    }

    fn birdc(&self, command: &str) -> Output {
        Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(command.split(' '))
            .output()
            .expect("birdc must be installed with bird2")
    }

    fn routes(&self) -> String {
        let output = self.birdc("show route");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn withdraw_removes_routes_from_bird() {
    let dir = tempfile::tempdir().unwrap();
    let routes_file = dir.path().join("routes.conf");
    // What a control plane wrote for a running dataplane, before both stopped.
    std::fs::write(
        &routes_file,
        format!(
            "router id 192.0.2.1;\nprotocol static spike_vips4 {{\n    ipv4;\n    \
             route {VIP_ROUTE} blackhole;\n}}\n"
        ),
    )
    .unwrap();
    let bird = Bird::start(dir.path());
    assert!(bird.routes().contains(VIP_ROUTE), "{}", bird.routes());
    let config = write_config(dir.path(), Some(&bgp_section(dir.path(), &bird.socket)));

    let output = withdraw(&config);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("every VIP withdrawn"), "{stdout}");

    let rendered = std::fs::read_to_string(&routes_file).unwrap();
    assert!(!rendered.contains("route "), "no VIP routes: {rendered}");
    assert!(
        rendered.contains("protocol bgp spike_peer_127_0_0_1 {"),
        "the session stays: {rendered}"
    );
    let routes = bird.routes();
    assert!(!routes.contains(VIP_ROUTE), "{routes}");
    let protocols = String::from_utf8_lossy(&bird.birdc("show protocols").stdout).into_owned();
    assert!(protocols.contains("spike_peer_127_0_0_1"), "{protocols}");
    assert!(
        !dir.path().join("ring").exists(),
        "the ring was not created"
    );
}

#[test]
fn withdraw_without_bgp_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None);

    let output = withdraw(&config);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("controlplane.toml")]);
}

#[test]
fn withdraw_with_invalid_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let section = bgp_section(dir.path(), &dir.path().join("bird.ctl"));
    let config = write_config(dir.path(), Some(&section.replace("asn = 65001", "asn = 0")));

    let output = withdraw(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("bgp.asn"), "{stderr}");
    assert!(!dir.path().join("routes.conf").exists(), "nothing written");
}

#[test]
fn withdraw_without_bird_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-bird.ctl");
    let config = write_config(dir.path(), Some(&bgp_section(dir.path(), &socket)));

    let output = withdraw(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
    // The file is ready for BIRD's next reload or start.
    let rendered = std::fs::read_to_string(dir.path().join("routes.conf")).unwrap();
    assert!(!rendered.contains("route "), "{rendered}");
}
