//! Durations written as a number and a unit (`90s`, `15m`, `1h`, `7d`), as used on the
//! command lines of the keyserver and the bootstrap. The unit is required.

use std::time::Duration;

/// A duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {input:?}: expected a positive whole number and a unit s, m, h or d, such as 90s, 15m, 24h or 30d")]
    Invalid { input: String },
    /// A bare number: seconds and days differ by a factor of 86400, so the unit is never
    /// guessed.
    #[error(
        "duration {input:?} has no unit; write it with s, m, h or d, such as {input}s or {input}m"
    )]
    NoUnit { input: String },
}

/// Parses `NUMBER UNIT` with unit `s`, `m`, `h` or `d`. The unit is required.
///
/// # Errors
///
/// [`DurationError::NoUnit`] for a bare number, [`DurationError::Invalid`] for an empty,
/// zero, negative or overflowing value or an unknown unit.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = || DurationError::Invalid {
        input: input.to_string(),
    };
    let trimmed = input.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);

    let value: u64 = number.parse().map_err(|_| error())?;
    let unit_secs = match unit {
        "" => {
            return Err(DurationError::NoUnit {
                input: trimmed.to_string(),
            })
        }
        "s" => 1,
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

/// A duration option that does not parse or exceeds the option's maximum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundedDurationError {
    #[error(transparent)]
    Invalid(#[from] DurationError),
    #[error("{input:?} is longer than the allowed maximum of {max}; pass {max} or less")]
    TooLong { input: String, max: String },
}

/// Parses `input` as [`parse_duration`] does and rejects a value above `max`.
///
/// Options whose value is added to a date or an `Instant` go through this, so that an
/// oversized value is an argument error rather than an overflow later.
///
/// # Errors
///
/// [`BoundedDurationError::Invalid`] when `input` does not parse,
/// [`BoundedDurationError::TooLong`] when it exceeds `max`.
pub fn parse_duration_at_most(
    input: &str,
    max: Duration,
) -> Result<Duration, BoundedDurationError> {
    let duration = parse_duration(input)?;
    if duration > max {
        return Err(BoundedDurationError::TooLong {
            input: input.to_string(),
            max: format_duration(max),
        });
    }
    Ok(duration)
}

/// Formats whole seconds in the largest unit of [`parse_duration`] that divides them, so
/// that the text parses back to the same value.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => "0s".to_string(),
        _ if secs.is_multiple_of(86_400) => format!("{}d", secs / 86_400),
        _ if secs.is_multiple_of(3600) => format!("{}h", secs / 3600),
        _ if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        _ => format!("{secs}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_units() {
        let cases = [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604_800)];
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

    #[test]
    fn bare_number_needs_unit() {
        let error = parse_duration("90").unwrap_err();
        assert_eq!(error, DurationError::NoUnit { input: "90".into() });
        assert_eq!(
            error.to_string(),
            "duration \"90\" has no unit; write it with s, m, h or d, such as 90s or 90m"
        );
    }

    #[test]
    fn bounded_duration_names_value_and_maximum() {
        let max = Duration::from_secs(3650 * 86_400);
        assert_eq!(
            parse_duration_at_most("3650d", max),
            Ok(Duration::from_secs(3650 * 86_400))
        );
        let error = parse_duration_at_most("99999999999d", max).unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"99999999999d\" is longer than the allowed maximum of 3650d; pass 3650d or less"
        );
        assert!(matches!(
            parse_duration_at_most("1w", max),
            Err(BoundedDurationError::Invalid(_))
        ));
    }

    #[test]
    fn formatted_durations_parse_back() {
        for secs in [1, 59, 60, 90, 3600, 5400, 86_400, 3650 * 86_400] {
            let duration = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
    }
}
