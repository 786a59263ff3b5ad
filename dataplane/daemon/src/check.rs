//! `--check-config`: everything about a config file that can be checked without DPDK,
//! so that an operator can test a file before a reload, a restart or an upgrade.

use std::path::Path;
use std::process::ExitCode;

use spike_core::Snapshot;
use tracing::warn;

use crate::config;
use crate::error::{one_line, DaemonError};

/// Loads and validates the file as a start would before EAL: every key, the `[dpdk]`
/// section with its snapshot ring path and the lcores of its EAL lcore list, and the
/// Maglev tables of its services. Returns the warnings of a valid file, among them each
/// backend with a weight above 0 that its service's table gives no slot.
///
/// # Errors
///
/// The [`DaemonError`] that a start would end with.
pub fn check(path: &Path) -> Result<Vec<String>, DaemonError> {
    let config::Loaded { config, warnings } = config::load(path)?;
    if config.dpdk.is_none() {
        return Err(DaemonError::MissingDpdk {
            path: path.display().to_string(),
        });
    }
    let snapshot = Snapshot::build(&config, 1)?;
    let unslotted = snapshot.unslotted_backends();
    Ok(warnings
        .into_iter()
        .chain(unslotted.iter().map(ToString::to_string))
        .collect())
}

/// Runs [`check`] and prints its outcome: each warning and `FILE: ok` on stdout, or the
/// error on stderr.
pub fn print(path: &Path) -> ExitCode {
    match check(path) {
        Ok(warnings) => {
            for warning in warnings {
                println!("{}: warning: {warning}", path.display());
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("spike-dataplane: {}", one_line(&error.to_string()));
            ExitCode::from(error.exit_code())
        }
    }
}

/// Logs the warnings of the config file at start. An invalid file logs nothing here:
/// the start itself reports it.
pub fn log_warnings(path: &Path) {
    let Ok(loaded) = config::load(path) else {
        return;
    };
    for warning in loaded.warnings {
        warn!(config = %path.display(), "{warning}");
    }
}

/// Logs each backend with a weight above 0 that `snapshot`'s tables give no slot, when a
/// start or a reload builds it from the file at `path`.
pub fn log_unslotted(snapshot: &Snapshot, path: &Path) {
    for unslotted in snapshot.unslotted_backends() {
        warn!(
            config = %path.display(),
            service = %unslotted.service,
            backend = %unslotted.backend,
            "{unslotted}"
        );
    }
}
