//! The options that `dpdk.eal_args` may hold: EAL's options in DPDK 22.11, the version
//! spike-dataplane links, read the way EAL reads them with `getopt_long`.
//!
//! EAL rejects an unknown option or a missing value only when the dataplane starts, and
//! it reads some values without checking them: `-m lots` and `-m 2G` request 0 and 2
//! MiB, which EAL accepts. The config check reports such tokens with what is expected.
//! `config` checks the values of the lcore options (`-l`, `-c`, `--lcores`), because it
//! counts their lcores too.

use spike_core::config::ConfigError;

/// Whether an EAL option takes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takes {
    Nothing,
    /// The next token, or the rest of the token: `-l0-1`, `--vdev=net_null0`.
    Value,
    /// Only after `=` in the same token: `--huge-unlink=never`.
    OptionalValue,
}

/// EAL's short options in DPDK 22.11 (`a:b:c:s:d:hl:S:m:n:r:v`).
const SHORT: [(char, Takes); 12] = [
    ('a', Takes::Value),
    ('b', Takes::Value),
    ('c', Takes::Value),
    ('d', Takes::Value),
    ('h', Takes::Nothing),
    ('l', Takes::Value),
    ('m', Takes::Value),
    ('n', Takes::Value),
    ('r', Takes::Value),
    ('s', Takes::Value),
    ('S', Takes::Value),
    ('v', Takes::Nothing),
];

/// EAL's long options in DPDK 22.11.
const LONG: [(&str, Takes); 37] = [
    ("allow", Takes::Value),
    ("base-virtaddr", Takes::Value),
    ("block", Takes::Value),
    ("create-uio-dev", Takes::Nothing),
    ("file-prefix", Takes::Value),
    ("force-max-simd-bitwidth", Takes::Value),
    ("help", Takes::Nothing),
    ("huge-dir", Takes::Value),
    ("huge-unlink", Takes::OptionalValue),
    ("huge-worker-stack", Takes::OptionalValue),
    ("in-memory", Takes::Nothing),
    ("iova-mode", Takes::Value),
    ("lcores", Takes::Value),
    ("legacy-mem", Takes::Nothing),
    ("log-level", Takes::Value),
    ("main-lcore", Takes::Value),
    ("match-allocations", Takes::Nothing),
    ("mbuf-pool-ops-name", Takes::Value),
    ("no-hpet", Takes::Nothing),
    ("no-huge", Takes::Nothing),
    ("no-pci", Takes::Nothing),
    ("no-shconf", Takes::Nothing),
    ("no-telemetry", Takes::Nothing),
    ("proc-type", Takes::Value),
    ("single-file-segments", Takes::Nothing),
    ("socket-limit", Takes::Value),
    ("socket-mem", Takes::Value),
    ("syslog", Takes::Value),
    ("telemetry", Takes::Nothing),
    ("trace", Takes::Value),
    ("trace-bufsz", Takes::Value),
    ("trace-dir", Takes::Value),
    ("trace-mode", Takes::Value),
    ("vdev", Takes::Value),
    ("vfio-intr", Takes::Value),
    ("vfio-vf-token", Takes::Value),
    ("vmware-tsc-map", Takes::Nothing),
];

/// Options of older DPDK versions that 22.11 no longer has, with their replacements.
const REPLACED: [(&str, &str); 4] = [
    ("-w", "-a"),
    ("--pci-whitelist", "-a (--allow)"),
    ("--pci-blacklist", "-b (--block)"),
    ("--master-lcore", "--main-lcore"),
];

/// Lcore ids of Debian's DPDK 22.11 build (`RTE_MAX_LCORE`).
const MAX_LCORE: u32 = 128;

/// Checks that every token of `eal_args` is an EAL option of DPDK 22.11 with the value it
/// takes, and the values that EAL would misread without an error.
///
/// # Errors
///
/// [`ConfigError::Invalid`] for `dpdk.eal_args`, naming the first bad token.
pub fn check(eal_args: &[String]) -> Result<(), ConfigError> {
    let mut tokens = eal_args.iter();
    while let Some(token) = tokens.next() {
        if token == "--" {
            return Err(invalid(
                format!("{token:?}"),
                "EAL options only: EAL ignores every token after \"--\", and spike-dataplane \
                 takes no arguments of its own there",
            ));
        }
        if let Some(long) = token.strip_prefix("--") {
            check_long(long, &mut tokens)?;
        } else if let Some(short) = token.strip_prefix('-').filter(|rest| !rest.is_empty()) {
            check_short(short, &mut tokens)?;
        } else {
            return Err(invalid(
                format!("{token:?}"),
                "an EAL option, which starts with '-': a token that is not one is ignored \
                 by EAL, so check that the option before it takes a value",
            ));
        }
    }
    Ok(())
}

/// Checks one `--name` or `--name=value` token, without its dashes, and takes the value
/// from `rest` when the option needs one and the token has none.
fn check_long<'a>(
    long: &str,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<(), ConfigError> {
    let (name, inline) = match long.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (long, None),
    };
    let (full_name, takes) = find_long(name)?;
    let option = format!("--{full_name}");
    let value = match (takes, inline) {
        (Takes::Nothing, Some(value)) => {
            return Err(invalid(
                format!("\"--{long}\""),
                &format!("{option} without a value ({value:?} given after '=')"),
            ))
        }
        (Takes::Nothing, None) | (Takes::OptionalValue, None) => None,
        (Takes::OptionalValue, Some(value)) | (Takes::Value, Some(value)) => Some(value),
        (Takes::Value, None) => Some(next_value(&option, rest)?),
    };
    check_value(&option, value)
}

/// Returns the long option that `name` names, in full, and what it takes. Like
/// `getopt_long`, it accepts an unambiguous abbreviation such as `--no-hu`.
fn find_long(name: &str) -> Result<(&'static str, Takes), ConfigError> {
    if let Some(&(full, takes)) = LONG.iter().find(|(full, _)| *full == name) {
        return Ok((full, takes));
    }
    let matches: Vec<&(&str, Takes)> = LONG
        .iter()
        .filter(|(full, _)| !name.is_empty() && full.starts_with(name))
        .collect();
    match matches[..] {
        [&(full, takes)] => Ok((full, takes)),
        [_, _, ..] => {
            let candidates: Vec<String> = matches
                .iter()
                .map(|(full, _)| format!("--{full}"))
                .collect();
            Err(invalid(
                format!("\"--{name}\""),
                &format!(
                    "one EAL option: --{name} abbreviates {}",
                    candidates.join(", ")
                ),
            ))
        }
        [] => Err(unknown(&format!("--{name}"))),
    }
}

/// Checks one token of short options after its `-`, such as `l0-1` or `v`.
fn check_short<'a>(
    short: &str,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<(), ConfigError> {
    for (index, letter) in short.char_indices() {
        let option = format!("-{letter}");
        let Some(&(_, takes)) = SHORT.iter().find(|(known, _)| *known == letter) else {
            return Err(unknown(&option));
        };
        if takes == Takes::Nothing {
            check_value(&option, None)?;
            continue;
        }
        // Like getopt, the rest of the token is the value, else the next token is.
        let attached = &short[index + letter.len_utf8()..];
        let value = if attached.is_empty() {
            next_value(&option, rest)?
        } else {
            attached
        };
        return check_value(&option, Some(value));
    }
    Ok(())
}

/// Returns the token after `option`, which EAL takes as its value whatever it is.
fn next_value<'a>(
    option: &str,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<&'a str, ConfigError> {
    rest.next().map(String::as_str).ok_or_else(|| {
        invalid(
            format!("{option:?}"),
            &format!("a value after {option}, the last token: EAL stops at it without one"),
        )
    })
}

/// Checks the value of the options whose values EAL reads without an error, or whose
/// use stops the dataplane.
fn check_value(option: &str, value: Option<&str>) -> Result<(), ConfigError> {
    let bad = |value: &str, expected: &str| {
        Err(invalid(
            format!("{value:?} in {option} {value:?}"),
            expected,
        ))
    };
    let positive = |value: &str| value.parse::<u64>().is_ok_and(|number| number > 0);
    match (option, value) {
        ("-h" | "--help", _) => Err(invalid(
            format!("{option:?}"),
            "no help option: EAL prints its usage and exits, so the dataplane would never \
             start",
        )),
        ("-m", Some(value)) if !positive(value) => bad(
            value,
            "a number of MiB such as 512, digits only: EAL reads the leading digits and \
             ignores the rest, so 2G would be 2 MiB and a word 0 MiB, the default",
        ),
        ("-n", Some(value)) if !positive(value) => {
            bad(value, "a number of memory channels from 1, digits only")
        }
        ("-r", Some(value)) if !value.parse::<u8>().is_ok_and(|n| (1..=16).contains(&n)) => {
            bad(value, "a number of memory ranks from 1 to 16")
        }
        ("--proc-type", Some(value))
            if !["primary", "secondary", "auto"]
                .iter()
                .any(|kind| value.eq_ignore_ascii_case(kind)) =>
        {
            bad(value, "primary, secondary or auto")
        }
        ("--iova-mode", Some(value)) if value != "pa" && value != "va" => bad(value, "pa or va"),
        ("--huge-unlink", Some(value)) if !["existing", "always", "never"].contains(&value) => {
            bad(value, "existing, always or never, after '='")
        }
        ("--main-lcore", Some(value)) if !value.parse::<u32>().is_ok_and(|id| id < MAX_LCORE) => {
            bad(value, &format!("an lcore id from 0 to {}", MAX_LCORE - 1))
        }
        _ => Ok(()),
    }
}

/// Builds the error for an option that DPDK 22.11's EAL does not have, listing the ones
/// it has.
fn unknown(option: &str) -> ConfigError {
    if let Some((_, new)) = REPLACED.iter().find(|(old, _)| *old == option) {
        return invalid(
            format!("{option:?}"),
            &format!("an EAL option of DPDK 22.11, which replaced {option} with {new}"),
        );
    }
    let short = SHORT.iter().map(|(letter, _)| format!("-{letter}"));
    let long = LONG.iter().map(|(name, _)| format!("--{name}"));
    let accepted: Vec<String> = short.chain(long).collect();
    invalid(
        format!("{option:?}"),
        &format!("an EAL option of DPDK 22.11, one of {}", accepted.join(" ")),
    )
}

fn invalid(value: String, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        key: "dpdk.eal_args".to_owned(),
        value,
        expected: expected.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn known_options_pass() {
        let cases: [&[&str]; 9] = [
            &["-l", "0,1", "--no-huge", "--no-pci", "-m", "512"],
            &[
                "--vdev",
                "net_af_packet0,iface=eth1",
                "--file-prefix",
                "spike",
            ],
            &[
                "--vdev=net_null0",
                "--log-level",
                "lib.eal:notice",
                "--no-telemetry",
            ],
            &[
                "-l0-1",
                "-a",
                "0000:01:00.0",
                "--huge-dir",
                "/run/hugepages",
            ],
            &["--in-memory", "--huge-unlink=never", "--huge-worker-stack"],
            &[
                "--proc-type",
                "PRIMARY",
                "--iova-mode=va",
                "--main-lcore",
                "1",
            ],
            // getopt_long takes an unambiguous abbreviation, and -v a value-less cluster.
            &["--no-hu", "-vl", "0"],
            // A value may start with '-': EAL takes the next token whatever it is.
            &["--file-prefix", "-spike"],
            &[],
        ];
        for eal_args in cases {
            check(&args(eal_args)).unwrap_or_else(|error| panic!("{eal_args:?}: {error}"));
        }
    }

    #[test]
    fn bad_tokens_are_named() {
        let cases: [(&[&str], &str); 16] = [
            (
                &["-x"],
                "\"-x\": expected an EAL option of DPDK 22.11, one of -a -b",
            ),
            (
                &["--bogus-option=1"],
                "\"--bogus-option\": expected an EAL option",
            ),
            (
                &["-m", "lots"],
                "\"lots\" in -m \"lots\": expected a number of MiB",
            ),
            (&["-m2G"], "\"2G\" in -m \"2G\""),
            (&["-n", "0"], "\"0\" in -n \"0\""),
            (&["-r", "17"], "from 1 to 16"),
            (&["--proc-type", "main"], "primary, secondary or auto"),
            (&["--iova-mode=dc"], "pa or va"),
            (&["--huge-unlink=sometimes"], "existing, always or never"),
            (&["--main-lcore", "128"], "an lcore id from 0 to 127"),
            (&["--no-huge=1"], "--no-huge without a value"),
            (&["--vdev"], "a value after --vdev, the last token"),
            (
                &["--no-huge", "512"],
                "\"512\": expected an EAL option, which starts with '-'",
            ),
            (&["--", "-x"], "EAL ignores every token after \"--\""),
            (&["-w", "0000:01:00.0"], "replaced -w with -a"),
            (&["--help"], "EAL prints its usage and exits"),
        ];
        for (eal_args, expected) in cases {
            let error = check(&args(eal_args))
                .expect_err(&format!("{eal_args:?}"))
                .to_string();
            assert!(
                error.starts_with("dpdk.eal_args: invalid value "),
                "{error}"
            );
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn ambiguous_abbreviation_lists_the_options() {
        let error = check(&args(&["--no"])).unwrap_err().to_string();
        assert!(
            error.contains("--no abbreviates --no-hpet, --no-huge, --no-pci"),
            "{error}"
        );
    }
}
