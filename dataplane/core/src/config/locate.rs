//! Positions of keys in config text, so that an error can name the line and column
//! that an operator has to change.
//!
//! Two directions: from a byte offset (where the TOML parser stopped) to the key path
//! written there, and from a key path that validation names (`service[0]
//! (web).backend[1].address`) to the line and column of its value. Both read the text
//! with toml_edit, which keeps the spans that serde's structs drop. Text that toml_edit
//! rejects still gets the key path at an offset from a line-by-line read, but a key path
//! has no position in it.

use std::collections::HashMap;
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
/// that validation errors use. Text that is not valid TOML is read line by line
/// instead (see `key_at_in_lines`).
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let Ok(document) = ImDocument::parse(text) else {
        return key_at_in_lines(text, offset);
    };
    let mut found = None;
    find(document.as_table(), "", offset, &mut found);
    found
}

/// Returns the key path at byte `offset` of text that toml_edit rejects, from the table
/// headers above it and the key assigned on its line. A line that continues a value,
/// such as the second line of an array, gets the key last assigned in its table. A
/// header line gets its table's path.
///
/// NOTE: headers and keys are read by their first characters, without TOML's full
/// syntax, so a header inside a multi-line string counts as a header.
fn key_at_in_lines(text: &str, offset: usize) -> Option<String> {
    let mut lines = LineScan::default();
    let mut found = None;
    let mut line_end = 0;
    for line in text.split_inclusive('\n') {
        line_end += line.len();
        let path = lines.read(line.trim());
        let at_offset = offset < line_end || line_end == text.len();
        if found.is_none() && at_offset {
            found = path;
        }
    }
    let found = found?;
    Some(lines.name_service(&found))
}

/// State of a line-by-line read of TOML text, which tracks the current table and the
/// entries of arrays of tables seen so far.
#[derive(Default)]
struct LineScan {
    /// Path of the current table, with indexes, such as `service[1].backend[0]`.
    table: String,
    /// Entries so far per array of tables, by path, such as `service[1].backend`.
    entries: HashMap<String, usize>,
    /// Key last assigned in the current table.
    last_key: Option<String>,
    /// Brackets and braces of the last key's value still open, so that the lines of a
    /// multi-line array belong to that key.
    open: usize,
    /// Value of `name` in each `[[service]]` entry, in order.
    service_names: Vec<Option<String>>,
}

impl LineScan {
    /// Reads one trimmed line and returns the key path that an error on it concerns.
    fn read(&mut self, line: &str) -> Option<String> {
        if self.open > 0 {
            self.open = open_after(self.open, line);
            return self.last_key.as_ref().map(|key| self.join(key));
        }
        if line.starts_with('[') {
            self.read_header(line);
            return (!self.table.is_empty()).then(|| self.table.clone());
        }

        let Some((key, value)) = assigned_key(line) else {
            return (!self.table.is_empty()).then(|| self.table.clone());
        };
        let in_service = self.table.starts_with("service[") && !self.table.contains('.');
        if key == "name" && in_service {
            if let Some(slot) = self.service_names.last_mut() {
                *slot = Some(value.trim().trim_matches('"').to_owned());
            }
        }
        self.open = open_after(0, value);
        let path = self.join(&key);
        self.last_key = Some(key);
        Some(path)
    }

    fn read_header(&mut self, line: &str) {
        let array = line.starts_with("[[");
        let name = line.trim_start_matches('[').split(']').next().unwrap_or("");
        let parts = split_key(name);
        let mut path = String::new();
        for (index, part) in parts.iter().enumerate() {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part.trim());
            let entries = if array && index + 1 == parts.len() {
                let entries = self.entries.entry(path.clone()).or_insert(0);
                *entries += 1;
                Some(*entries)
            } else {
                self.entries.get(&path).copied()
            };
            if let Some(entries) = entries {
                path = format!("{path}[{}]", entries - 1);
            }
        }
        if array && path.starts_with("service[") && !path.contains('.') {
            self.service_names.push(None);
        }
        self.table = path;
        self.last_key = None;
    }

    fn join(&self, key: &str) -> String {
        if self.table.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.table)
        }
    }

    /// Adds the service's name to a path that starts with `service[INDEX]`.
    fn name_service(&self, path: &str) -> String {
        let Some(rest) = path.strip_prefix("service[") else {
            return path.to_owned();
        };
        let Some((index, rest)) = rest.split_once(']') else {
            return path.to_owned();
        };
        let name = index
            .parse::<usize>()
            .ok()
            .and_then(|index| Some((index, self.service_names.get(index)?.as_deref()?)));
        match name {
            Some((index, name)) => format!("{}{rest}", super::service_key(index, name)),
            None => path.to_owned(),
        }
    }
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

/// Returns the first table header that names one of `arrays` (dotted names such as
/// `service.backend`) with single brackets, such as `[service]`, with the position of
/// its name.
///
/// NOTE: like `key_at_in_lines`, this reads headers by their first characters, so a
/// header inside a multi-line string counts as one.
pub fn single_bracket_header(text: &str, arrays: &[&str]) -> Option<(String, (usize, usize))> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let Some(header) = line.trim_start().strip_prefix('[') else {
            continue;
        };
        if header.starts_with('[') {
            continue;
        }
        let Some((name, _)) = header.split_once(']') else {
            continue;
        };
        let parts = split_key(name);
        let parts: Vec<&str> = parts.iter().map(|part| part.trim()).collect();
        let dotted = parts.join(".");
        if !arrays.contains(&dotted.as_str()) {
            continue;
        }
        let name_offset = start + line.len() - header.trim_start().len();
        return Some((dotted, line_column(text, name_offset)));
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

/// Returns a key path without notes and indexes, such as `service.backend` for
/// `service[0] (web).backend[1]`, and whether its last part had an index, that is,
/// whether it names an entry of an array of tables.
pub fn plain_path(key: &str) -> (String, bool) {
    let parts = split_key(&strip_notes(key));
    let last_indexed = parts
        .last()
        .is_some_and(|part| split_index(part.trim()).1.is_some());
    let names: Vec<&str> = parts
        .iter()
        .map(|part| split_index(part.trim()).0.trim())
        .filter(|name| !name.is_empty())
        .collect();
    (names.join("."), last_indexed)
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

/// Returns the dotted key that a trimmed `key = value` line assigns, and the text after
/// `=`. A line without `=`, such as `mtu 1500`, still names its key with its first word.
fn assigned_key(line: &str) -> Option<(String, &str)> {
    let (key, value) = match line.split_once('=') {
        Some((key, value)) => (key.trim(), value),
        None => (line.split_whitespace().next()?, ""),
    };
    let is_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | ' '));
    if !is_key {
        return None;
    }
    let parts = split_key(key);
    let parts: Vec<&str> = parts.iter().map(|part| part.trim()).collect();
    Some((parts.join("."), value))
}

/// Returns how many brackets and braces are open after `line`, given `open` before it.
/// Those inside double-quoted strings and comments do not count.
fn open_after(open: usize, line: &str) -> usize {
    let mut open = open;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => break,
            '[' | '{' if !quoted => open += 1,
            ']' | '}' if !quoted => open = open.saturating_sub(1),
            _ => {}
        }
    }
    open
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
    fn finds_key_paths_in_invalid_text() {
        let text = TEXT.replace("\"192.0.2.12\"", "192.0.2.12");
        let offset = text.find("192.0.2.12").unwrap();
        assert_eq!(
            key_at(&text, offset).as_deref(),
            Some("service[0] (web).backend[1].address")
        );
        let text = TEXT.replace("mtu = 600", "mtu = 600 x\nports = [\n  1,\n  x,\n]");
        let offset = text.find('x').unwrap();
        assert_eq!(key_at(&text, offset).as_deref(), Some("node.mtu"));
        let offset = text.find("  x").unwrap();
        assert_eq!(key_at(&text, offset).as_deref(), Some("node.ports"));
        let offset = text.find("[[service]]").unwrap();
        assert_eq!(key_at(&text, offset).as_deref(), Some("service[0] (web)"));
    }

    #[test]
    fn unknown_table_is_found() {
        let text = "[node]\n  [[services]]\n[[service.backend]]\n";
        let found = unknown_table(text, &["node", "service"]);
        assert_eq!(found, Some(("services".to_owned(), (2, 5))));
        assert_eq!(unknown_table(text, &["node", "service", "services"]), None);
    }

    #[test]
    fn plain_paths_drop_indexes_and_notes() {
        let plain = |key| plain_path(key);
        assert_eq!(
            plain("service[0] (web).backend[1]"),
            ("service.backend".to_owned(), true)
        );
        assert_eq!(plain("service[2] (dns)"), ("service".to_owned(), true));
        assert_eq!(plain("hash"), ("hash".to_owned(), false));
        assert_eq!(plain(""), (String::new(), false));
    }

    #[test]
    fn single_bracket_header_is_found() {
        let arrays = ["service", "service.backend"];
        let text = "[node]\n[[service]]\n  [ service . backend ]\n[service]\n";
        let found = single_bracket_header(text, &arrays);
        assert_eq!(found, Some(("service.backend".to_owned(), (3, 5))));
        assert_eq!(single_bracket_header("[[service]]\n", &arrays), None);
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_column("a = \"é\"\nb", 9), (2, 1));
        assert_eq!(line_column("name = \"é\" x", 11), (1, 11));
    }
}
