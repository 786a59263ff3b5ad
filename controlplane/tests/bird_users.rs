//! `[bgp]` with the packaged layout, run the way the units run it. BIRD runs as its own
//! user, with its control socket at mode 0660 for its group, as Debian's bird2 starts
//! it. spike-controlplane runs as another user with umask 0077 and writes the routes
//! file in its own directory. BIRD's config is configs/bird-spike.conf with only the
//! include path changed, and the routes file starts empty, as the package's tmpfiles.d
//! entry creates it.
//!
//! The users are bare numeric ids given to setpriv and to `bird -u/-g`, so the test
//! needs no accounts. BIRD runs in its own network namespace (`unshare -n`) with a
//! documentation address on lo for its router id, so its BGP sessions to 127.0.0.x
//! reach nothing. Needs root, util-linux and Debian's bird2.

use std::fs;
use std::os::unix::fs::{chown, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const CONTROLPLANE: &str = env!("CARGO_BIN_EXE_spike-controlplane");
/// Numeric id of the test's spike user.
const SPIKE_ID: u32 = 64410;
/// Numeric id of the test's bird user and group.
const BIRD_ID: u32 = 64411;
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// A child process that is killed and reaped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The node's directories in a temporary root that both users can traverse.
struct Node {
    root: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let root = tempfile::Builder::new()
            .prefix("spike-bird-users-")
            .tempdir()
            .unwrap();
        set_mode(root.path(), 0o755);
        let node = Node { root };
        // /run/spike-controlplane and its empty routes file, as tmpfiles.d creates them.
        node.make_dir("spike", SPIKE_ID, 0o755);
        fs::write(node.routes_file(), "").unwrap();
        chown(node.routes_file(), Some(SPIKE_ID), Some(SPIKE_ID)).unwrap();
        set_mode(&node.routes_file(), 0o644);
        // /run/bird as bird2's prepare-environment leaves it.
        node.make_dir("bird", BIRD_ID, 0o775);
        // The snapshot ring, which the control plane creates.
        node.make_dir("ring", SPIKE_ID, 0o700);
        node
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn make_dir(&self, name: &str, owner: u32, mode: u32) {
        fs::create_dir(self.path(name)).unwrap();
        chown(self.path(name), Some(owner), Some(owner)).unwrap();
        set_mode(&self.path(name), mode);
    }

    fn routes_file(&self) -> PathBuf {
        self.path("spike/bird-routes.conf")
    }

    fn socket(&self) -> PathBuf {
        self.path("bird/bird.ctl")
    }

    /// Writes the example config with a `[bgp]` section whose neighbours are
    /// `neighbors`, and returns its path.
    fn write_config(&self, neighbors: &[&str]) -> PathBuf {
        let example = fs::read_to_string(repository().join("configs/controlplane.toml")).unwrap();
        let mut text = example
            .replace(
                "/dev/shm/spike-ring",
                &self.path("ring/ring").display().to_string(),
            )
            .replace("127.0.0.1:9300", &format!("127.0.0.1:{}", free_port()));
        text.push_str(&format!(
            "\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\nbird_socket = {:?}\n\
             routes_file = {:?}\n",
            self.socket().display().to_string(),
            self.routes_file().display().to_string(),
        ));
        for address in neighbors {
            text.push_str(&format!(
                "\n[[bgp.neighbor]]\naddress = \"{address}\"\nasn = 65000\n"
            ));
        }
        let path = self.path("controlplane.toml");
        fs::write(&path, text).unwrap();
        set_mode(&path, 0o644);
        path
    }

    /// Starts BIRD as bird2's unit does (`bird -f -u bird -g bird`) with the shipped
    /// config, and waits until it replies on its socket.
    fn start_bird(&self) -> Process {
        let template = fs::read_to_string(repository().join("configs/bird-spike.conf")).unwrap();
        let include = "\"/run/spike-controlplane/bird-routes.conf\"";
        assert!(template.contains(include), "{template}");
        let config = self.path("bird.conf");
        let routes = format!("{:?}", self.routes_file().display().to_string());
        fs::write(&config, template.replace(include, &routes)).unwrap();
        set_mode(&config, 0o644);
        let script = format!(
            "ip link set lo up && ip addr add 192.0.2.9/32 dev lo && \
             exec bird -f -u {BIRD_ID} -g {BIRD_ID} -c {} -s {} -P {}",
            config.display(),
            self.socket().display(),
            self.path("bird/bird.pid").display()
        );
        let bird = Process(
            Command::new("unshare")
                .args(["-n", "sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(fs::File::create(self.path("bird.log")).unwrap())
                .spawn()
                .expect("unshare must be installed (util-linux)"),
        );
        wait_for(
            || self.birdc("show status").status.success(),
            || fs::read_to_string(self.path("bird.log")).unwrap_or_default(),
        );
        let mode = fs::metadata(self.socket()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o660, "BIRD's socket mode {mode:o}");
        bird
    }

    /// Starts spike-controlplane as the unit does: user spike, umask 0077, and BIRD's
    /// group among its groups when `in_bird_group`.
    fn start_controlplane(&self, config: &Path, in_bird_group: bool) -> Process {
        let groups = if in_bird_group {
            format!("--groups={BIRD_ID}")
        } else {
            String::from("--clear-groups")
        };
        Process(
            Command::new("setpriv")
                .arg(format!("--reuid={SPIKE_ID}"))
                .arg(format!("--regid={SPIKE_ID}"))
                .arg(groups)
                .args(["--", "sh", "-c", "umask 0077 && exec \"$0\" \"$@\""])
                .arg(CONTROLPLANE)
                .arg("--config")
                .arg(config)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(self.path("controlplane.log")).unwrap())
                .spawn()
                .expect("setpriv must be installed (util-linux)"),
        )
    }

    /// Runs birdc as root, which reaches the socket whatever its mode.
    fn birdc(&self, command: &str) -> Output {
        Command::new("birdc")
            .arg("-s")
            .arg(self.socket())
            .args(command.split(' '))
            .output()
            .expect("birdc must be installed with bird2")
    }

    fn protocols(&self) -> String {
        String::from_utf8_lossy(&self.birdc("show protocols").stdout).into_owned()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("controlplane.log")).unwrap_or_default()
    }

    /// Waits until BIRD runs the BGP session to `neighbor`, which it does only after
    /// it has read a routes file that the control plane wrote and reloaded.
    fn wait_for_session(&self, neighbor: &str) {
        let name = format!("spike_peer_{}", neighbor.replace('.', "_"));
        wait_for(
            || self.protocols().contains(&name),
            || format!("{}\n{}", self.protocols(), self.log()),
        );
    }

    fn routes_owner_and_mode(&self) -> (u32, u32) {
        let metadata = fs::metadata(self.routes_file()).unwrap();
        (metadata.uid(), metadata.mode() & 0o777)
    }
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Returns a loopback port that nothing listens on once this returns.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Polls `done` until it returns true, for at most [`WAIT`]. On timeout it panics with
/// `context`.
fn wait_for(done: impl Fn() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out:\n{}", context());
        sleep(POLL);
    }
}

#[test]
fn packaged_layout_works_across_users() {
    let node = Node::new();
    let _bird = node.start_bird();
    let config = node.write_config(&["127.0.0.2"]);

    let controlplane = node.start_controlplane(&config, true);
    node.wait_for_session("127.0.0.2");
    assert_eq!(node.routes_owner_and_mode(), (SPIKE_ID, 0o644));
    drop(controlplane);

    // The dataplane unit's ExecStopPost: --withdraw as root, with root's umask.
    let output = Command::new(CONTROLPLANE)
        .args(["--withdraw", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(node.routes_owner_and_mode(), (0, 0o644));

    // The control plane replaces root's file in its own directory, and BIRD reads it.
    let config = node.write_config(&["127.0.0.2", "127.0.0.3"]);
    let _controlplane = node.start_controlplane(&config, true);
    node.wait_for_session("127.0.0.3");
    assert_eq!(node.routes_owner_and_mode(), (SPIKE_ID, 0o644));
}

#[test]
fn socket_denied_error_names_the_fix() {
    let node = Node::new();
    let _bird = node.start_bird();
    let config = node.write_config(&["127.0.0.2"]);

    let _controlplane = node.start_controlplane(&config, false);
    wait_for(
        || node.log().contains("no permission to connect"),
        || node.log(),
    );
    let log = node.log();
    assert!(log.contains(&node.socket().display().to_string()), "{log}");
    assert!(log.contains("adduser spike bird"), "{log}");
    // The file is written all the same, for BIRD's next start or reload.
    assert_eq!(node.routes_owner_and_mode(), (SPIKE_ID, 0o644));
    assert!(
        !node.protocols().contains("spike_peer_"),
        "{}",
        node.protocols()
    );
}
