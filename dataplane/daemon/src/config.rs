//! Loading of the dataplane's config file for a start, a reload and `--check-config`.
//!
//! spike-core parses and validates the file. This module adds what only the DPDK daemon
//! needs: that the `[dpdk]` section's snapshot ring path is no directory, the EAL options
//! (`eal_options`) and lcore list read the way EAL reads them, and a clear message for
//! the control plane's file given by mistake.
//! Every error has the core's form, `PATH:LINE:COLUMN: key: message`.

use std::collections::BTreeSet;
use std::path::Path;

use spike_core::config::{self, locate, ConfigError, DpdkConfig, Place};
use spike_core::Config;

/// EAL's lcore limit in Debian's DPDK 22.11 build (`RTE_MAX_LCORE`): higher lcore ids
/// make `rte_eal_init` fail.
const MAX_LCORE: u32 = 128;

/// EAL's CPU set size for `--lcores` CPU lists (glibc's `CPU_SETSIZE`).
const MAX_CPU: u32 = 1024;

/// A loaded config with the warnings of its file.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Valid but likely mistaken settings, one sentence each.
    pub warnings: Vec<String>,
}

/// Reads and validates the config file as a start does before EAL.
///
/// # Errors
///
/// A [`ConfigError`] that starts with the file, and the line and column when known.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = config::read_file(path)?;
    let raw = toml::from_str::<toml::Table>(&text).ok();
    if let Some(raw) = &raw {
        check_not_controlplane(raw, &text).map_err(|error| error.in_file(path))?;
    }
    let config: Config = text
        .parse()
        .map_err(|error: ConfigError| error.in_file(path))?;
    let mut warnings = config.warnings();
    if let Some(dpdk) = &config.dpdk {
        let located = |error: ConfigError| error.locate(&text).in_file(path);
        check_ring_path(dpdk).map_err(located)?;
        crate::eal_options::check(&dpdk.eal_args).map_err(located)?;
        warnings.extend(check_lcores(dpdk).map_err(located)?);
    }
    Ok(Loaded { config, warnings })
}

/// Rejects the control plane's file, recognised by its `[controlplane]` section, with a
/// message that names the right file instead of an unknown key.
fn check_not_controlplane(raw: &toml::Table, text: &str) -> Result<(), ConfigError> {
    if !raw.contains_key("controlplane") {
        return Ok(());
    }
    Err(ConfigError::At {
        place: Place {
            path: None,
            position: locate::position_of_key(text, "controlplane"),
        },
        error: Box::new(ConfigError::Syntax(
            "controlplane: this looks like a spike-controlplane config (it has \
             [controlplane]); spike-dataplane reads its own file, which has a [dpdk] section \
             with at least port = \"<DPDK port name>\", such as debian/config/dataplane.toml \
             of the source tree (installed as /etc/spike/dataplane.toml): pass that file with \
             --config"
                .to_owned(),
        )),
    })
}

/// Rejects a ring path that names a directory, which the ring can never be opened at.
fn check_ring_path(dpdk: &DpdkConfig) -> Result<(), ConfigError> {
    match &dpdk.snapshot_ring {
        Some(ring) if ring.is_dir() => Err(ConfigError::Invalid {
            key: "dpdk.snapshot_ring".to_owned(),
            value: ring.display().to_string(),
            expected: "the path of the ring file, not a directory: the control plane's \
                       controlplane.ring, such as /dev/shm/spike-ring"
                .to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Checks the EAL lcore list (`-l`, `-c` or `--lcores`) the way EAL reads it, and the
/// worker count against it, before EAL starts. Returns a warning when lcores would stay
/// idle, as a start logs it.
fn check_lcores(dpdk: &DpdkConfig) -> Result<Vec<String>, ConfigError> {
    let Some(lcores) = eal_lcores(&dpdk.eal_args)? else {
        // Without a list EAL takes every CPU, which only the running EAL can count.
        return Ok(Vec::new());
    };
    let workers = usize::from(dpdk.workers);
    let available = lcores.saturating_sub(1);
    if workers > available {
        return Err(ConfigError::Invalid {
            key: "dpdk.workers".to_owned(),
            value: workers.to_string(),
            expected: format!(
                "at most {available}: dpdk.eal_args gives {available} worker lcores besides \
                 the main lcore; add lcores to the lcore list or lower dpdk.workers"
            ),
        });
    }
    if workers < available {
        return Ok(vec![format!(
            "dpdk.eal_args gives {available} worker lcores besides the main lcore, but \
             dpdk.workers = {workers}: the extra {} stay idle",
            available - workers
        )]);
    }
    Ok(Vec::new())
}

/// Returns how many lcores the lcore option of `eal_args` gives EAL, or `None` without
/// one.
fn eal_lcores(eal_args: &[String]) -> Result<Option<usize>, ConfigError> {
    let mut found: Option<(String, usize)> = None;
    let mut args = eal_args.iter();
    while let Some(arg) = args.next() {
        let (option, inline) = match arg.split_once('=') {
            Some((option, value)) if option.starts_with("--") => (option, Some(value)),
            _ if arg.len() > 2 && (arg.starts_with("-l") || arg.starts_with("-c")) => {
                (&arg[..2], Some(&arg[2..]))
            }
            _ => (arg.as_str(), None),
        };
        if !matches!(option, "-l" | "-c" | "--lcores") {
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => args.next().map_or("", String::as_str),
        };
        // EAL ignores every lcore option after the first and then fails to start.
        if let Some((first, _)) = &found {
            return Err(eal_error(
                format!("{option} {value}"),
                &format!("one lcore option: {first} already sets the lcores, and EAL takes one of -l, -c and --lcores"),
            ));
        }
        let count = match option {
            "-l" => lcore_list(option, value)?.len(),
            "-c" => core_mask(value)?,
            _ => lcores_map(value)?,
        };
        found = Some((format!("{option} {value}"), count));
    }
    Ok(found.map(|(_, count)| count))
}

fn eal_error(value: String, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        key: "dpdk.eal_args".to_owned(),
        value,
        expected: expected.to_owned(),
    }
}

/// Parses a `-l` list such as `0,2-5` into its lcore ids.
fn lcore_list(option: &str, list: &str) -> Result<BTreeSet<u32>, ConfigError> {
    let bad = |token: &str| {
        eal_error(
            format!("{token:?} in {option} {list:?}"),
            &format!(
                "lcore ids from 0 to {} and ranges FIRST-LAST with FIRST <= LAST, separated \
                 by commas, such as 0-3 or 0,2,4",
                MAX_LCORE - 1
            ),
        )
    };
    ids(list, MAX_LCORE).map_err(|token| bad(&token))
}

/// Parses ids and ranges separated by commas, each below `limit`. On failure it returns
/// the token that is not one.
fn ids(list: &str, limit: u32) -> Result<BTreeSet<u32>, String> {
    let mut found = BTreeSet::new();
    for token in list.split(',') {
        let parse = |text: &str| {
            text.trim()
                .parse::<u32>()
                .ok()
                .filter(|&id| id < limit && !text.trim().is_empty())
        };
        let range = match token.split_once('-') {
            Some((first, last)) => parse(first).zip(parse(last)),
            None => parse(token).map(|id| (id, id)),
        };
        match range {
            Some((first, last)) if first <= last => found.extend(first..=last),
            _ => return Err(token.to_owned()),
        }
    }
    Ok(found)
}

/// Counts the lcores of a `-c` hexadecimal core mask.
fn core_mask(mask: &str) -> Result<usize, ConfigError> {
    let digits = mask.trim();
    let digits = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .unwrap_or(digits);
    let count = u128::from_str_radix(digits, 16)
        .ok()
        .filter(|bits| *bits != 0)
        .map(|bits| bits.count_ones() as usize);
    count.ok_or_else(|| {
        eal_error(
            format!("{mask:?} in -c"),
            &format!(
                "a non-zero hexadecimal mask of lcores 0 to {}, such as 0xf",
                MAX_LCORE - 1
            ),
        )
    })
}

/// Counts the lcores of a `--lcores` map such as `0-3`, `(0-3)@1` or `0@1,1@(2-3)`:
/// groups of lcore ids, each optionally placed on CPUs after `@`.
fn lcores_map(map: &str) -> Result<usize, ConfigError> {
    let bad = |token: &str| {
        eal_error(
            format!("{token:?} in --lcores {map:?}"),
            &format!(
                "lcore groups separated by commas, each LCORES or LCORES@CPUS, where LCORES \
                 and CPUS are an id, a range FIRST-LAST or a parenthesised list of them; lcore \
                 ids up to {}, such as 0-3 or (0-1)@0,2@1",
                MAX_LCORE - 1
            ),
        )
    };
    let mut lcores = BTreeSet::new();
    for group in split_groups(map).map_err(|()| bad(map))? {
        let (lcore_part, cpu_part) = match group.split_once('@') {
            Some((lcores, cpus)) => (lcores, Some(cpus)),
            None => (group, None),
        };
        let inner = |part: &'_ str| {
            part.strip_prefix('(')
                .and_then(|rest| rest.strip_suffix(')'))
                .unwrap_or(part)
                .to_owned()
        };
        lcores.extend(ids(&inner(lcore_part), MAX_LCORE).map_err(|token| bad(&token))?);
        if let Some(cpus) = cpu_part {
            ids(&inner(cpus), MAX_CPU).map_err(|token| bad(&token))?;
        }
    }
    Ok(lcores.len())
}

/// Splits a `--lcores` map at the commas outside parentheses. An unbalanced parenthesis
/// is an error.
fn split_groups(map: &str) -> Result<Vec<&str>, ()> {
    let mut groups = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, c) in map.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or(())?,
            ',' if depth == 0 => {
                groups.push(&map[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(());
    }
    groups.push(&map[start..]);
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn lcore_options_count_like_eal() {
        let cases: [(&[&str], Option<usize>); 9] = [
            (&["--no-pci"], None),
            (&["-l", "0-3"], Some(4)),
            (&["-l0,2,4"], Some(3)),
            (&["-l", "0,1,1"], Some(2)),
            (&["-c", "0xf"], Some(4)),
            (&["-c3"], Some(2)),
            (&["--lcores", "0-2"], Some(3)),
            (&["--lcores=(0-3)@0,4@1"], Some(5)),
            (&["--lcores", "0@1,1@(2-3)"], Some(2)),
        ];
        for (eal_args, expected) in cases {
            let count = eal_lcores(&args(eal_args)).unwrap();
            assert_eq!(count, expected, "{eal_args:?}");
        }
    }

    /// Loads the example config with a `[dpdk]` section for net_null0 and `settings`.
    fn load_with_dpdk(settings: &str) -> Result<Loaded, String> {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/spike.toml");
        let text = std::fs::read_to_string(&example).expect("read configs/spike.toml");
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("spike.toml");
        let dpdk = format!("\n[dpdk]\nport = \"net_null0\"\n{settings}\n");
        std::fs::write(&path, text + &dpdk).expect("write the config");
        load(&path).map_err(|error| error.to_string())
    }

    #[test]
    fn controlplane_file_names_a_dataplane_example() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let error = load(&root.join("configs/controlplane.toml"))
            .expect_err("the control plane's file")
            .to_string();
        assert!(error.contains("spike-controlplane config"), "{error}");
        // The file that the message names must contain the section that the message names.
        let example = error
            .split_whitespace()
            .find(|word| word.ends_with(".toml") && word.contains('/'))
            .unwrap_or_else(|| panic!("no example file named: {error}"));
        let text = std::fs::read_to_string(root.join(example)).expect("the named example");
        assert!(text.lines().any(|line| line == "[dpdk]"), "{example}");
    }

    #[test]
    fn packaged_config_passes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let loaded = load(&root.join("debian/config/dataplane.toml"))
            .unwrap_or_else(|error| panic!("debian/config/dataplane.toml: {error}"));
        let dpdk = loaded.config.dpdk.expect("the packaged file has [dpdk]");
        assert!(dpdk.eal_args.contains(&"--vdev".to_owned()), "{dpdk:?}");
    }

    #[test]
    fn oversized_file_is_rejected() {
        let padding = "#".repeat(config::MAX_FILE_BYTES as usize);
        let error = load_with_dpdk(&padding).expect_err("a file above the limit");
        assert!(
            error.contains("spike.toml: the file is larger than 1048576 bytes"),
            "{error}"
        );
    }

    #[test]
    fn too_few_lcores_are_rejected() {
        // (settings, worker lcores the list gives besides the main lcore)
        let cases = [
            ("eal_args = [\"-l\", \"0,1\"]\nworkers = 2", 1),
            ("eal_args = [\"-l\", \"0\"]\nworkers = 1", 0),
            ("eal_args = [\"-l0-1\"]\nworkers = 2", 1),
            ("eal_args = [\"-c\", \"3\"]\nworkers = 2", 1),
            ("eal_args = [\"-c0x1\"]\nworkers = 1", 0),
            ("eal_args = [\"--lcores\", \"0,3\"]\nworkers = 2", 1),
            ("eal_args = [\"--lcores=0,3,4\"]\nworkers = 3", 2),
        ];
        for (settings, available) in cases {
            let error = load_with_dpdk(settings).expect_err(settings);
            assert!(error.contains("dpdk.workers: invalid value "), "{error}");
            assert!(
                error.contains(&format!("gives {available} worker lcores")),
                "{settings}: {error}"
            );
            assert!(error.contains("add lcores to the lcore list"), "{error}");
        }
        load_with_dpdk("eal_args = [\"-l\", \"0-2\"]\nworkers = 2").expect("enough lcores");
    }

    #[test]
    fn bad_lcore_tokens_are_named() {
        let cases: [(&[&str], &str); 9] = [
            (&["-l", "zero"], "\"zero\" in -l \"zero\""),
            (&["-l", "1-0"], "\"1-0\" in -l"),
            (&["-l", "0-1-3"], "\"0-1-3\" in -l"),
            (&["-l", "0,"], "\"\" in -l \"0,\""),
            (&["-l", "128"], "\"128\" in -l"),
            (&["-c", "z"], "\"z\" in -c"),
            (&["--lcores", "zero"], "\"zero\" in --lcores"),
            (&["--lcores", "(0-1@0"], "\"(0-1@0\" in --lcores"),
            (
                &["-l", "0-1", "-c", "3"],
                "-c 3: expected one lcore option: -l 0-1",
            ),
        ];
        for (eal_args, expected) in cases {
            let error = eal_lcores(&args(eal_args)).unwrap_err().to_string();
            assert!(
                error.starts_with("dpdk.eal_args: invalid value "),
                "{error}"
            );
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
