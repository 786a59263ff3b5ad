//! Errors that end the dataplane, each with its exit code.

use spike_core::config::ConfigError;
use spike_core::snapshot::SnapshotError;
use spike_core::worker::WorkerError;
use spike_dpdk::DpdkError;
use thiserror::Error;

/// Exit code of an invalid config: the operator has to change the file.
const EXIT_CONFIG: u8 = 2;
/// Exit code of a DPDK or other runtime failure.
const EXIT_RUNTIME: u8 = 1;

/// A failure that stops the dataplane.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(
        "{path}: the file has no [dpdk] section: add one with at least port = \"<DPDK port \
         name>\" and eal_args"
    )]
    MissingDpdk { path: String },

    #[error(transparent)]
    Snapshot(#[from] SnapshotError),

    #[error(
        "invalid value {workers} for dpdk.workers: dpdk.eal_args gives {available} worker \
         lcores besides the main lcore; add lcores to the -l list or lower dpdk.workers"
    )]
    NotEnoughLcores { workers: u16, available: usize },

    #[error(
        "port {name} not found (if dpdk.eal_args creates it with --vdev, its driver failed \
         to start: see the EAL messages above); available ports: {available}"
    )]
    PortNotFound { name: String, available: String },

    #[error(
        "another spike-dataplane already runs port {port} (it holds {path}); stop it first, \
         or give each instance its own RUNTIME_DIRECTORY if they use different ports"
    )]
    PortInUse { port: String, path: String },

    /// Another dataplane reads the snapshot ring. The message names its process.
    #[error(transparent)]
    RingInUse(spike_snapring::RingError),

    #[error("cannot take the port lock {path}: {source}")]
    PortLock {
        path: String,
        source: std::io::Error,
    },

    #[error(
        "port {name} (driver {driver}) supports at most {max_queues} queue pairs, but \
         dpdk.workers = {workers} needs one per worker"
    )]
    TooFewQueues {
        name: String,
        driver: String,
        max_queues: u16,
        workers: u16,
    },

    #[error("{context}: {source}")]
    Dpdk { context: String, source: DpdkError },

    #[error("cannot create the tables of worker {index}: {source}")]
    Worker { index: usize, source: WorkerError },

    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),

    #[error("worker lcore {lcore_id} failed (exit code {code}); see the log above")]
    WorkerFailed { lcore_id: u32, code: i32 },
}

/// Joins a multi-line message into one line. TOML parse errors quote the offending
/// source line (`149 | queues = 4`) with a caret line underneath: the source line is
/// kept in backquotes, because it shows the key and the value, and the gutter and caret
/// lines are left out.
pub fn one_line(message: &str) -> String {
    let mut parts = Vec::new();
    for line in message.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('|') {
            continue;
        }
        let after_number = trimmed.trim_start_matches(|c: char| c.is_ascii_digit());
        match after_number.trim_start().strip_prefix('|') {
            Some(source) if after_number.len() < trimmed.len() => {
                parts.push(format!("`{}`", source.trim()));
            }
            _ => parts.push(trimmed.to_owned()),
        }
    }
    parts.join(": ")
}

impl DaemonError {
    /// Wraps a DPDK error with what the dataplane was doing.
    pub fn dpdk(context: impl Into<String>) -> impl FnOnce(DpdkError) -> DaemonError {
        let context = context.into();
        move |source| DaemonError::Dpdk { context, source }
    }

    /// Returns the process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_)
            | DaemonError::MissingDpdk { .. }
            | DaemonError::Snapshot(_)
            | DaemonError::NotEnoughLcores { .. } => EXIT_CONFIG,
            DaemonError::PortNotFound { .. }
            | DaemonError::PortInUse { .. }
            | DaemonError::RingInUse(_)
            | DaemonError::PortLock { .. }
            | DaemonError::TooFewQueues { .. }
            | DaemonError::Dpdk { .. }
            | DaemonError::Worker { .. }
            | DaemonError::Signals(_)
            | DaemonError::WorkerFailed { .. } => EXIT_RUNTIME,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_keeps_toml_source_line() {
        let error =
            "invalid config: TOML parse error at line 149, column 1\n    |\n149 | queues = \
                     4\n    | ^^^^^^\nunknown field `queues`, expected one of `port`\n";
        assert_eq!(
            one_line(error),
            "invalid config: TOML parse error at line 149, column 1: `queues = 4`: unknown \
             field `queues`, expected one of `port`"
        );
    }

    #[test]
    fn one_line_keeps_single_line() {
        assert_eq!(one_line("port x not found"), "port x not found");
    }
}
