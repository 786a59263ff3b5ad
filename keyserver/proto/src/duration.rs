//! Durations written as a number and a unit (`90s`, `15m`, `1h`, `7d`), as used on the
//! command lines of the keyserver and the bootstrap.

use std::time::Duration;

/// A duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected a positive whole number and a unit s, m, h or d, such as 90s or 1h")]
pub struct DurationError {
    pub input: String,
}

/// Parses `NUMBER UNIT` with unit `s`, `m`, `h` or `d`; a bare number means seconds.
///
/// # Errors
///
/// [`DurationError`] for an empty, zero, negative, overflowing or unit-less-and-invalid
/// value.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = || DurationError {
        input: input.to_string(),
    };
    let trimmed = input.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);

    let value: u64 = number.parse().map_err(|_| error())?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(error()),
    };
    let secs = value.checked_mul(unit_secs).ok_or_else(error)?;
    if secs == 0 {
        return Err(error());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_units() {
        let cases = [
            ("90", 90),
            ("90s", 90),
            ("15m", 900),
            ("1h", 3600),
            ("7d", 604_800),
        ];
        for (input, secs) in cases {
            assert_eq!(
                parse_duration(input),
                Ok(Duration::from_secs(secs)),
                "{input}"
            );
        }
    }

    #[test]
    fn parse_duration_rejects_invalid() {
        for input in ["", "0s", "h", "1w", "-5s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(input).is_err(), "{input}");
        }
    }
}
