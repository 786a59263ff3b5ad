//! Positions of keys in config text, so that an error can name the line and column
//! that an operator has to change.
//!
//! Two directions: from a byte offset (where the TOML parser stopped) to the key path
//! written there, and from a key path that validation names (`service[0]
//! (web).backend[1].address`) to the line and column of its value. Both read the text
//! with toml_edit, which keeps the spans that serde's structs drop. Text that does not
//! parse has no keys to find, and the caller keeps the error without them.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table};

/// Returns the 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Returns the line and column of the value of `key`, a dotted path with `[index]`
/// for arrays of tables, or of its deepest part that the text has. Parenthesised
/// notes in the path, such as a service's name, and quotes around parts are ignored.
pub fn position_of_key(text: &str, key: &str) -> Option<(usize, usize)> {
    let document = ImDocument::parse(text).ok()?;
    let mut table = document.as_table();
    let mut found = None;
    for part in split_key(&strip_notes(key)) {
        let (name, index) = split_index(&part);
        let Some((key, item)) = table.get_key_value(name) else {
            break;
        };
        match item {
            Item::Table(child) => {
                found = child.span().or_else(|| key.span()).or(found);
                table = child;
            }
            Item::ArrayOfTables(array) => {
                let Some(child) = array.get(index.unwrap_or(0)) else {
                    found = key.span().or(found);
                    break;
                };
                found = child.span().or_else(|| key.span()).or(found);
                table = child;
            }
            Item::Value(_) => {
                found = item.span().or_else(|| key.span()).or(found);
                break;
            }
            Item::None => break,
        }
    }
    found.map(|span| line_column(text, span.start))
}

/// Returns the key path written at byte `offset`: the deepest `key = value` whose key
/// or value contains it, else the table whose header does. Arrays of tables get their
/// index and a service its name, as in `service[1] (dns).backend[0].address`, the form
/// that validation errors use.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let document = ImDocument::parse(text).ok()?;
    let mut found = None;
    find(document.as_table(), "", offset, &mut found);
    found
}

fn find(table: &Table, prefix: &str, offset: usize, found: &mut Option<String>) {
    let contains = |span: Option<Range<usize>>| span.is_some_and(|span| span.contains(&offset));
    for (name, item) in table.iter() {
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        };
        match item {
            Item::Table(child) => {
                if contains(child.span()) {
                    *found = Some(path.clone());
                }
                find(child, &path, offset, found);
            }
            Item::ArrayOfTables(array) => {
                for (index, child) in array.iter().enumerate() {
                    let path = match child.get("name").and_then(Item::as_str) {
                        Some(service) if path == "service" => super::service_key(index, service),
                        _ => format!("{path}[{index}]"),
                    };
                    if contains(child.span()) {
                        *found = Some(path.clone());
                    }
                    find(child, &path, offset, found);
                }
            }
            Item::Value(_) => {
                let key_span = table.key(name).and_then(|key| key.span());
                if contains(key_span) || contains(item.span()) {
                    *found = Some(path);
                }
            }
            Item::None => {}
        }
    }
}

/// Returns the first table header whose first name is not in `known`, with the
/// position of that name.
pub fn unknown_table(text: &str, known: &[&str]) -> Option<(String, (usize, usize))> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let Some(header) = line.trim_start().strip_prefix('[') else {
            continue;
        };
        let rest = header.trim_start_matches('[').trim_start();
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            .collect();
        if name.is_empty() || known.contains(&name.as_str()) {
            continue;
        }
        let name_offset = start + line.len() - rest.len();
        return Some((name, line_column(text, name_offset)));
    }
    None
}

/// Joins the lines of a parser's message with colons, so that a log line or a
/// `PATH:LINE:COLUMN:` error stays one line.
pub fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines.join(": ")
}

/// Removes ` (...)` notes, which name a service or a count, from a key path.
fn strip_notes(key: &str) -> String {
    let mut plain = String::with_capacity(key.len());
    let mut depth = 0usize;
    for c in key.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    plain.replace(" .", ".").trim().to_owned()
}

/// Splits a dotted key path at the dots outside quotes, and drops the quotes.
fn split_key(key: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in key.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            _ => parts.last_mut().expect("starts with one part").push(c),
        }
    }
    parts
}

/// Splits `backend[1]` into `backend` and 1.
fn split_index(part: &str) -> (&str, Option<usize>) {
    let Some((name, rest)) = part.split_once('[') else {
        return (part, None);
    };
    (name, rest.trim_end_matches(']').parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[node]\nmtu = 600\n\n[[service]]\nname = \"web\"\n\n\
                        [[service.backend]]\naddress = \"192.0.2.11\"\n\n\
                        [[service.backend]]\naddress =  \"192.0.2.12\"\n";

    #[test]
    fn finds_values_by_key_path() {
        assert_eq!(position_of_key(TEXT, "node.mtu"), Some((2, 7)));
        assert_eq!(
            position_of_key(TEXT, "service[0] (web).backend[1].address"),
            Some((11, 12))
        );
        assert_eq!(position_of_key(TEXT, "service[0] (web)"), Some((4, 1)));
        // A key the text lacks points at its table.
        assert_eq!(position_of_key(TEXT, "node.ipv4"), Some((1, 1)));
        assert_eq!(position_of_key(TEXT, "hash.key"), None);
    }

    #[test]
    fn finds_key_paths_at_offsets() {
        let offset = TEXT.find("\"192.0.2.12\"").unwrap();
        assert_eq!(
            key_at(TEXT, offset).as_deref(),
            Some("service[0] (web).backend[1].address")
        );
        let offset = TEXT.find("\"web\"").unwrap();
        assert_eq!(
            key_at(TEXT, offset).as_deref(),
            Some("service[0] (web).name")
        );
        assert_eq!(key_at(TEXT, 1).as_deref(), Some("node"));
    }

    #[test]
    fn unknown_table_is_found() {
        let text = "[node]\n  [[services]]\n[[service.backend]]\n";
        let found = unknown_table(text, &["node", "service"]);
        assert_eq!(found, Some(("services".to_owned(), (2, 5))));
        assert_eq!(unknown_table(text, &["node", "service", "services"]), None);
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_column("a = \"é\"\nb", 9), (2, 1));
        assert_eq!(line_column("name = \"é\" x", 11), (1, 11));
    }
}
