//! Times shown to operators: RFC 3339 in UTC, which reads the same on every host and sorts
//! as text, instead of the Unix seconds stored in the database and on the wire.

use time::OffsetDateTime;

/// Formats Unix seconds as RFC 3339 UTC with a trailing `Z`, such as
/// `2026-12-04T21:30:20Z`. A value outside the years 1 to 9999 comes back as the bare
/// number, since no calendar date can show it.
pub fn rfc3339(unix_secs: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix_secs) {
        Ok(t) if t.year() >= 1 => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        _ => unix_secs.to_string(),
    }
}

/// Formats Unix seconds for an operator message: RFC 3339 UTC followed by the Unix value
/// in parentheses, which scripts and database queries use.
pub fn rfc3339_and_unix(unix_secs: i64) -> String {
    format!("{} (Unix {unix_secs})", rfc3339(unix_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (1_796_423_231, "2026-12-04T22:27:11Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
        ];
        for (secs, text) in cases {
            assert_eq!(rfc3339(secs), text, "{secs}");
        }
        assert_eq!(rfc3339_and_unix(0), "1970-01-01T00:00:00Z (Unix 0)");
    }

    #[test]
    fn out_of_range_shown_as_number() {
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
    }
}
