//! Values that the config file writes as strings (addresses and MACs), parsed while
//! TOML is read. A string that does not parse becomes a TOML error with the value's
//! span, so the message names its line, its key path, the text itself and the form
//! expected, as in `service[0] (web).vip: invalid value "x/32": expected an IPv4 or
//! IPv6 address such as ...`.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::wire::MacAddr;

/// A value read from a TOML string with its type's `FromStr`.
pub(super) struct Parsed<T>(pub(super) T);

/// A type that [`Parsed`] reads from a string.
trait TextForm: FromStr {
    /// The expected form of the string, such as "an IPv4 address".
    const FORM: &'static str;
    /// Valid strings, quoted as the file writes them.
    const EXAMPLES: &'static str;

    /// Returns a note on a common mistake that `text` shows, such as a prefix length.
    fn note(_text: &str) -> Option<&'static str> {
        None
    }
}

/// Returns a note on an address written with a prefix length, as in `198.51.100.10/32`.
fn prefix_note(text: &str) -> Option<&'static str> {
    text.contains('/')
        .then_some("one address, without a prefix length")
}

impl TextForm for IpAddr {
    const FORM: &'static str = "an IPv4 or IPv6 address";
    const EXAMPLES: &'static str = "\"198.51.100.10\" or \"2001:db8::10\"";

    fn note(text: &str) -> Option<&'static str> {
        prefix_note(text)
    }
}

impl TextForm for Ipv4Addr {
    const FORM: &'static str = "an IPv4 address";
    const EXAMPLES: &'static str = "\"192.0.2.1\"";

    fn note(text: &str) -> Option<&'static str> {
        if text.parse::<Ipv6Addr>().is_ok() {
            return Some("an IPv6 address belongs in node.ipv6");
        }
        prefix_note(text)
    }
}

impl TextForm for Ipv6Addr {
    const FORM: &'static str = "an IPv6 address";
    const EXAMPLES: &'static str = "\"2001:db8::1\"";

    fn note(text: &str) -> Option<&'static str> {
        if text.parse::<Ipv4Addr>().is_ok() {
            return Some("an IPv4 address belongs in node.ipv4");
        }
        prefix_note(text)
    }
}

impl TextForm for MacAddr {
    const FORM: &'static str = "a MAC address";
    const EXAMPLES: &'static str = "\"02:00:00:00:00:01\"";

    fn note(_text: &str) -> Option<&'static str> {
        Some("six pairs of hexadecimal digits separated by colons")
    }
}

impl<'de, T: TextForm> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ParsedVisitor(PhantomData))
    }
}

struct ParsedVisitor<T>(PhantomData<T>);

impl<T: TextForm> Visitor<'_> for ParsedVisitor<T> {
    type Value = Parsed<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in quotes, such as {}", T::FORM, T::EXAMPLES)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Parsed<T>, E> {
        if let Ok(value) = text.parse() {
            return Ok(Parsed(value));
        }
        let note = T::note(text).map_or(String::new(), |note| format!(" ({note})"));
        Err(E::custom(format!(
            "invalid value {text:?}: expected {} such as {}{note}",
            T::FORM,
            T::EXAMPLES
        )))
    }
}
