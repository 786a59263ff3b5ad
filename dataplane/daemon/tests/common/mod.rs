//! Helpers for the tests that run `spike-dataplane` as a child process: configs with a
//! `[dpdk]` section for virtual ports, a child that is killed if a test fails, signals
//! and bounded waits.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BINARY: &str = env!("CARGO_BIN_EXE_spike-dataplane");

/// How often the waits below poll.
const POLL: Duration = Duration::from_millis(50);

/// Maximum time a child may take to exit after SIGINT or SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Returns the sample capture directory: `SPIKE_PCAPS`, or the shared directory next to
/// the repository.
pub fn captures_dir() -> PathBuf {
    match std::env::var_os("SPIKE_PCAPS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/pcaps"),
    }
}

/// Reads the example config that the sample captures were chosen for.
pub fn example_config() -> String {
    let path = repository_root().join("configs/spike.toml");
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {path:?}: {error}"))
}

/// Returns EAL arguments for a test: no hugepages, PCI, shared config or telemetry, 256 MiB,
/// lcores `lcores` and a file prefix unique to the test and this process.
pub fn eal_args(test_name: &str, lcores: &str, extra: &[&str]) -> Vec<String> {
    let prefix = format!("spike-dataplane-{test_name}-{}", std::process::id());
    let mut args: Vec<String> = [
        "-l",
        lcores,
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "-m",
        "256",
        "--no-telemetry",
        "--file-prefix",
        &prefix,
        "--log-level",
        "lib.eal:notice",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args
}

/// Formats a `[dpdk]` section for `port` with the given EAL arguments and extra lines.
pub fn dpdk_section(eal_args: &[String], port: &str, extra_lines: &str) -> String {
    let quoted: Vec<String> = eal_args.iter().map(|arg| format!("{arg:?}")).collect();
    format!(
        "\n[dpdk]\neal_args = [{}]\nport = {port:?}\n{extra_lines}\n",
        quoted.join(", ")
    )
}

/// Formats a net_pcap vdev argument that reads `input` once and writes to `output`.
pub fn pcap_vdev(input: &Path, output: &Path) -> String {
    format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    )
}

/// A test's working directory: the config, counters file, captures and DPDK's runtime
/// directory live here, and it is removed at the end.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new(test_name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("spike-dataplane-{test_name}-"))
            .tempdir()
            .expect("create a temporary directory");
        TestDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.file("spike.toml");
        fs::write(&path, text).expect("write the config");
        path
    }
}

/// A running `spike-dataplane`. Dropping it kills and reaps the process if it is still
/// running, so a failed assertion leaves no DPDK process behind.
pub struct Daemon {
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub counters: PathBuf,
}

impl Daemon {
    /// Starts the binary with `config`, writing the counters file every 100 ms.
    pub fn start(dir: &TestDir, config: &Path) -> Daemon {
        Daemon::start_in(dir, config, None)
    }

    /// Starts the binary inside the network namespace `namespace` when given (through
    /// `ip netns exec`, which execs the binary, so the child PID is the dataplane's).
    pub fn start_in(dir: &TestDir, config: &Path, namespace: Option<&str>) -> Daemon {
        let stdout = dir.file("stdout.txt");
        let stderr = dir.file("stderr.txt");
        let counters = dir.file("counters.json");
        let mut command = match namespace {
            Some(name) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name, BINARY]);
                command
            }
            None => Command::new(BINARY),
        };
        let child = command
            .arg("--config")
            .arg(config)
            .arg("--counters-file")
            .arg(&counters)
            .args(["--counters-interval-ms", "100"])
            .env("RUNTIME_DIRECTORY", dir.path())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create stdout file"))
            .stderr(fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .expect("start spike-dataplane");
        Daemon {
            child: Some(child),
            stdout,
            stderr,
            counters,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child is running").id()
    }

    /// Sends `signal` (a name such as `INT` or `HUP`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Returns the exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("poll the child")
    }

    /// Waits up to `timeout` for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                self.child = None;
                return status;
            }
            sleep(POLL);
        }
        panic!(
            "spike-dataplane did not exit within {timeout:?}; stderr:\n{}",
            self.stderr_text()
        );
    }

    /// Waits until the counters file exists and `accept` returns true for it, or fails
    /// after `timeout` with the last content and the log.
    pub fn wait_counters(&mut self, timeout: Duration, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                panic!(
                    "spike-dataplane exited early with {status}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            if let Some(counters) = read_json(&self.counters) {
                if accept(&counters) {
                    return counters;
                }
                last = Some(counters);
            }
            sleep(POLL);
        }
        panic!(
            "counters file never matched within {timeout:?}; last content: {last:?}; \
             stderr:\n{}",
            self.stderr_text()
        );
    }

    /// Waits until stderr contains `text`.
    pub fn wait_log(&mut self, timeout: Duration, text: &str) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr_text().contains(text) {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "spike-dataplane exited with {status} before logging {text:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            sleep(POLL);
        }
        panic!(
            "no {text:?} in the log within {timeout:?}; stderr:\n{}",
            self.stderr_text()
        );
    }

    /// Sends `signal` and waits for a clean exit, returning stdout.
    pub fn stop_with(&mut self, signal: &str) -> String {
        self.signal(signal);
        let status = self.wait_exit(EXIT_TIMEOUT);
        assert!(
            status.success(),
            "exit after SIG{signal}: {status}; stderr:\n{}",
            self.stderr_text()
        );
        fs::read_to_string(&self.stdout).expect("read stdout")
    }

    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `text` contains `line` as a whole line.
pub fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|candidate| candidate == line)
}

/// Parses a JSON file, or `None` while it does not exist yet.
pub fn read_json(path: &Path) -> Option<Value> {
    let text = fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|error| {
        panic!("counters file {path:?} is not valid JSON ({error}): {text}")
    }))
}

/// Output of a run that is expected to fail at start-up.
pub struct Failure {
    pub code: Option<i32>,
    pub stderr: String,
}

impl Failure {
    /// The last stderr line, which is where spike-dataplane prints the error that
    /// ended it; DPDK's own messages come before it.
    pub fn error_line(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("")
    }
}

/// Runs the binary with `config` and waits (bounded) for it to exit.
pub fn run_to_exit(dir: &TestDir, config: &str) -> Failure {
    let path = dir.write_config(config);
    let mut daemon = Daemon::start(dir, &path);
    let status = daemon.wait_exit(EXIT_TIMEOUT);
    Failure {
        code: status.code(),
        stderr: daemon.stderr_text(),
    }
}

/// Returns the frames of the pcap file at `path`.
pub fn read_capture(path: &Path) -> Vec<Vec<u8>> {
    let file = fs::File::open(path).unwrap_or_else(|error| panic!("open {path:?}: {error}"));
    let mut reader =
        pcap_file::pcap::PcapReader::new(file).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap_or_else(|error| panic!("{path:?}: {error}"));
        frames.push(packet.data.into_owned());
    }
    frames
}

/// Writes `frames` to a pcap file at `path`, one millisecond apart.
pub fn write_capture(path: &Path, frames: &[Vec<u8>]) {
    let file = fs::File::create(path).unwrap_or_else(|error| panic!("create {path:?}: {error}"));
    let mut writer = pcap_file::pcap::PcapWriter::new(file).unwrap();
    for (index, frame) in frames.iter().enumerate() {
        let packet = pcap_file::pcap::PcapPacket {
            timestamp: Duration::from_millis(index as u64),
            orig_len: frame.len() as u32,
            data: std::borrow::Cow::Borrowed(frame),
        };
        writer.write_packet(&packet).unwrap();
    }
}

/// Returns the Internet checksum (RFC 1071) of `bytes`, for headers the tests build.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
