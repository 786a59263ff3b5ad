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
        "config file {path} has no [dpdk] section: add one with at least port = \"<DPDK port \
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

    #[error("port {name} not found; available ports: {available}")]
    PortNotFound { name: String, available: String },

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
/// source line with a caret underneath. Those snippet lines are left out, because the
/// message keeps the line and column.
pub fn one_line(message: &str) -> String {
    let is_snippet = |line: &str| {
        let line = line.trim_start();
        let after_number = line.trim_start_matches(|c: char| c.is_ascii_digit());
        line.is_empty() || line.starts_with('|') || after_number.trim_start().starts_with('|')
    };
    message
        .lines()
        .filter(|line| !is_snippet(line))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(": ")
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
    fn one_line_drops_toml_snippet() {
        let error =
            "invalid config: TOML parse error at line 149, column 1\n    |\n149 | queues = \
                     4\n    | ^^^^^^\nunknown field `queues`, expected one of `port`\n";
        assert_eq!(
            one_line(error),
            "invalid config: TOML parse error at line 149, column 1: unknown field `queues`, \
             expected one of `port`"
        );
    }

    #[test]
    fn one_line_keeps_single_line() {
        assert_eq!(one_line("port x not found"), "port x not found");
    }
}
