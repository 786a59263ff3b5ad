//! Helpers shared by the EAL tests. Each test file is its own process
//! because DPDK allows one `rte_eal_init` per process.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory named after the test and the process id.
    pub fn new(test_name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("spike-dpdk-{test_name}-{}", std::process::id()));
        // Leftovers of an earlier run with the same pid are stale.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("failed to create the test temp dir");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Returns EAL arguments for a test without hugepages, PCI or shared
/// config, and points DPDK's runtime directory into `dir`.
pub fn eal_args(test_name: &str, dir: &TempDir, extra: &[&str]) -> Vec<String> {
    // DPDK puts its runtime files (sockets, config) under this directory
    // instead of /var/run/dpdk.
    std::env::set_var("RUNTIME_DIRECTORY", dir.path());

    let prefix = format!("spike-{test_name}-{}", std::process::id());
    let mut args: Vec<String> = [
        test_name,
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "-m",
        "256",
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

/// Reads the frames of a classic pcap file (microsecond or nanosecond
/// timestamps, either byte order).
pub fn read_pcap_frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = fs::read(path).unwrap_or_else(|error| panic!("failed to read {path:?}: {error}"));
    assert!(bytes.len() >= 24, "{path:?} is shorter than a pcap header");

    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let read_u32: fn([u8; 4]) -> u32 = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => u32::from_le_bytes,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => u32::from_be_bytes,
        _ => panic!("{path:?} has an unknown pcap magic {magic:02x?}"),
    };
    let field = |offset: usize| read_u32(bytes[offset..offset + 4].try_into().unwrap());
    assert_eq!(field(20), 1, "{path:?} link type is not Ethernet");

    let mut frames = Vec::new();
    let mut offset = 24;
    while offset < bytes.len() {
        assert!(
            offset + 16 <= bytes.len(),
            "{path:?} ends inside a record header"
        );
        let captured_len = field(offset + 8) as usize;
        let start = offset + 16;
        assert!(
            start + captured_len <= bytes.len(),
            "{path:?} ends inside a record"
        );
        frames.push(bytes[start..start + captured_len].to_vec());
        offset = start + captured_len;
    }
    frames
}
