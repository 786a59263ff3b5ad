//! Checks a table of `docs/configuration.md` against the keys a config parser accepts.
//!
//! The parser is asked, not read: for each table, a valid config gets an extra key
//! `__probe` in that table, and the parser's unknown-field error lists every key the
//! table accepts (serde's `deny_unknown_fields` message). A string key whose value
//! the parser reads as a variant is set to `__probe` too, and the unknown-variant error
//! lists the variants. Each variant is then probed in turn, which finds the fields of
//! every mode of an internally tagged table such as `kubernetes.api_server`. The search starts
//! at the root and descends into every key that the reference documents as a table, so
//! a new key anywhere is found without a list of keys in the test.
//!
//! Shared by the reference tests of spike-core and spike-controlplane, which each use
//! part of it.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use toml::{Table, Value};

/// Name of the key added to a table to learn which keys it accepts. It sorts before
/// every lower-case key, so serde meets it before it can report a missing field.
const PROBE: &str = "__probe";

/// A config parser: `Err` contains the message the program prints.
pub type Parse<'a> = &'a dyn Fn(&str) -> Result<(), String>;

/// Reads the documented keys of the section of `docs/configuration.md` whose heading is
/// `heading`: the first cell of each table row, written as `dotted.key`.
pub fn documented_keys(heading: &str) -> BTreeSet<String> {
    let path = repository_with("docs/configuration.md").join("docs/configuration.md");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("no section \"## {heading}\" in docs/configuration.md"));
    let section = &text[start + 1..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];

    let keys: BTreeSet<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .map(|rest| rest[..rest.find('`').unwrap()].to_owned())
        .collect();
    assert!(!keys.is_empty(), "no keys in section \"{heading}\"");
    keys
}

/// Splits a dotted key into its table path and key.
fn split(key: &str) -> Vec<&str> {
    key.split('.').collect()
}

/// Dotted paths of the tables that the probes found to be arrays of tables.
type Arrays = BTreeSet<String>;

/// Returns the table at `path` in `root`. A missing table is created empty, or as an
/// array of one empty table when `arrays` lists its path. An existing array of tables
/// stands for its first element.
fn table_at<'a>(root: &'a mut Table, path: &[&str], arrays: &Arrays) -> &'a mut Table {
    let mut table = root;
    for (depth, segment) in path.iter().enumerate() {
        let dotted = path[..=depth].join(".");
        let entry = table.entry(segment.to_string()).or_insert_with(|| {
            if arrays.contains(&dotted) {
                Value::Array(vec![Value::Table(Table::new())])
            } else {
                Value::Table(Table::new())
            }
        });
        table = match entry {
            Value::Table(inner) => inner,
            Value::Array(items) => match items.first_mut() {
                Some(Value::Table(inner)) => inner,
                _ => panic!("{segment} in the base config is not an array of tables"),
            },
            other => panic!("{segment} in the base config is {other}, not a table"),
        };
    }
    table
}

/// Runs `parse` on `base` with `key` set to `value` in the table at `path`, and returns
/// the rest of the message line after `marker`.
///
/// # Errors
///
/// The whole message when it lacks `marker`, or a note when the parser accepted the config.
fn message_after(
    parse: Parse,
    base: &Table,
    (path, arrays): (&[&str], &Arrays),
    (key, value): (&str, Value),
    marker: &str,
) -> Result<String, String> {
    let mut config = base.clone();
    table_at(&mut config, path, arrays).insert(key.to_owned(), value);
    let text = toml::to_string(&config).unwrap();
    let message = match parse(&text) {
        Ok(()) => return Err("the parser accepted it".to_owned()),
        Err(message) => message,
    };
    let Some(at) = message.find(marker) else {
        return Err(message);
    };
    let rest = &message[at + marker.len()..];
    Ok(rest.lines().next().unwrap_or_default().to_owned())
}

/// Returns the names in backticks in `text`, as in serde's `expected one of `a`, `b``.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Returns the keys that the table at `path` of `base` accepts. A table that `base`
/// lacks is tried as a table first and then as an array of tables. An array's path is
/// added to `arrays`, so that the probes below it build the same shape.
fn accepted_keys(
    parse: Parse,
    base: &Table,
    path: &[&str],
    arrays: &mut Arrays,
) -> BTreeSet<String> {
    let marker = format!("unknown field `{PROBE}`, expected ");
    let no_fields = format!("unknown field `{PROBE}`, there are no");
    let probe = || (PROBE, Value::Integer(0));
    let mut messages = Vec::new();

    for as_array in [false, true] {
        if as_array {
            arrays.insert(path.join("."));
        }
        match message_after(parse, base, (path, arrays), probe(), &marker) {
            Ok(rest) => return backticked(&rest).into_iter().collect(),
            Err(message) if message.contains(&no_fields) => return BTreeSet::new(),
            Err(message) => messages.push(message),
        }
    }
    panic!(
        "probing [{}] did not return the accepted keys: {}",
        path.join("."),
        messages.join("\n")
    );
}

/// Returns the variants of each string key in the table at `path` of `base` that the
/// parser reads as a variant name.
fn variant_keys(
    parse: Parse,
    base: &Table,
    path: &[&str],
    arrays: &Arrays,
) -> BTreeMap<String, Vec<String>> {
    let mut base = base.clone();
    let strings: Vec<String> = table_at(&mut base, path, arrays)
        .iter()
        .filter(|(_, value)| value.is_str())
        .map(|(key, _)| key.clone())
        .collect();
    let marker = format!("unknown variant `{PROBE}`, expected ");

    strings
        .into_iter()
        .filter_map(|key| {
            let probe = (key.as_str(), Value::String(PROBE.to_owned()));
            let rest = message_after(parse, &base, (path, arrays), probe, &marker).ok()?;
            Some((key, backticked(&rest)))
        })
        .collect()
}

/// Returns every key, as a dotted path, that the parser accepts under the tables the
/// reference documents, starting from the root of `base`.
pub fn discovered_keys(
    parse: Parse,
    base: &Table,
    documented: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut arrays = Arrays::new();
    let mut pending = vec![String::new()];

    while let Some(prefix) = pending.pop() {
        let path: Vec<&str> = if prefix.is_empty() {
            Vec::new()
        } else {
            split(&prefix)
        };
        let mut keys = accepted_keys(parse, base, &path, &mut arrays);
        for (tag, variants) in variant_keys(parse, base, &path, &arrays) {
            keys.insert(tag.clone());
            for variant in variants {
                let mut variant_base = base.clone();
                table_at(&mut variant_base, &path, &arrays)
                    .insert(tag.clone(), Value::String(variant));
                keys.extend(accepted_keys(parse, &variant_base, &path, &mut arrays));
            }
        }

        // Keys that a parser reads without `deny_unknown_fields` (the control plane's
        // keys among the dataplane's) are missing from the probe's list. A documented key
        // counts as accepted when a value of the wrong type gets a type error instead of
        // an unknown-field error.
        for child in documented_children(documented, &prefix) {
            if !keys.contains(&child) && accepts_key(parse, base, (&path, &arrays), &child) {
                keys.insert(child);
            }
        }

        for key in keys {
            let dotted = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            let table_prefix = format!("{dotted}.");
            if documented.iter().any(|doc| doc.starts_with(&table_prefix)) {
                pending.push(dotted.clone());
            }
            found.insert(dotted);
        }
    }
    found
}

/// Returns the names of the documented keys directly under the table `prefix`.
fn documented_children(documented: &BTreeSet<String>, prefix: &str) -> BTreeSet<String> {
    documented
        .iter()
        .filter_map(|key| match prefix {
            "" => Some(key.as_str()),
            _ => key.strip_prefix(prefix)?.strip_prefix('.'),
        })
        .map(|rest| rest.split('.').next().unwrap().to_owned())
        .collect()
}

/// Returns whether the table at `path` accepts `key`. The key is set to values of types
/// that no key takes: an integer (wrong for a table) and a table with an integer (wrong
/// for anything else). An accepted key gives an error that does not call it unknown.
fn accepts_key(parse: Parse, base: &Table, at: (&[&str], &Arrays), key: &str) -> bool {
    let mut wrong = Table::new();
    wrong.insert(PROBE.to_owned(), Value::Integer(0));
    let unknown = format!("unknown field `{key}`");

    [Value::Integer(0), Value::Table(wrong)]
        .into_iter()
        .any(
            |value| match message_after(parse, base, at, (key, value), &unknown) {
                Ok(_) => false,
                Err(message) => message != "the parser accepted it",
            },
        )
}

/// Returns the repository's root: the first directory above the crate that has `path`.
fn repository_with(path: &str) -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join(path).exists())
        .unwrap_or_else(|| panic!("{path} not found above the crate"))
}

/// Reads the keys that the example file at `path` (relative to the repository) sets,
/// including those in commented-out lines such as `# key = value` and `# [table]`.
pub fn example_keys(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(repository_with(path).join(path)).unwrap();
    keys_in_text(&text)
}

/// Reads the keys set in the ```toml blocks of README.md and of every file in docs/.
pub fn markdown_keys() -> BTreeSet<String> {
    let root = repository_with("README.md");
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        files.push(entry.unwrap().path());
    }

    let mut keys = BTreeSet::new();
    for file in files
        .iter()
        .filter(|file| file.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        let mut block = None::<String>;
        for line in text.lines() {
            match (&mut block, line.trim_start()) {
                (None, "```toml") => block = Some(String::new()),
                (Some(toml), "```") => {
                    keys.extend(keys_in_text(toml));
                    block = None;
                }
                (Some(toml), _) => {
                    toml.push_str(line);
                    toml.push('\n');
                }
                (None, _) => {}
            }
        }
    }
    keys
}

/// Reads the dotted keys that TOML text sets, including commented-out lines.
fn keys_in_text(text: &str) -> BTreeSet<String> {
    let is_key = |c: char| c.is_ascii_alphanumeric() || "_-.\"".contains(c);
    let mut table = String::new();
    let mut keys = BTreeSet::new();

    for line in text.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        let header = line.trim_start_matches('[').trim_end_matches(']');
        if line.starts_with('[') && !header.is_empty() && header.chars().all(is_key) {
            table = header.to_owned();
            keys.insert(table.clone());
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.chars().all(is_key) {
            continue;
        }
        let key = key.trim_matches('"');
        match table.as_str() {
            "" => keys.insert(key.to_owned()),
            _ => keys.insert(format!("{table}.{key}")),
        };
    }
    keys
}

/// Returns whether `key` is documented: as a row, or as a table whose keys have rows.
pub fn is_documented(documented: &BTreeSet<String>, key: &str) -> bool {
    let table_prefix = format!("{key}.");
    documented.contains(key) || documented.iter().any(|doc| doc.starts_with(&table_prefix))
}

/// Asserts that every key the parser accepts, and every key the example file sets, is
/// documented, except those for which `excluded` returns true, and that every documented
/// key is accepted.
pub fn assert_reference_matches(
    heading: &str,
    (parse, base): (Parse, &Table),
    example: &str,
    excluded: &dyn Fn(&str) -> bool,
) {
    let documented = documented_keys(heading);
    let discovered = discovered_keys(parse, base, &documented);

    let undocumented: Vec<&String> = discovered
        .iter()
        .filter(|key| !is_documented(&documented, key) && !excluded(key))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys missing from \"## {heading}\" in docs/configuration.md: {undocumented:?}"
    );

    // A key inside a documented map (such as one node's entry in a table of node names)
    // is covered by the map's row.
    let in_map = |key: &str| {
        documented
            .iter()
            .any(|doc| key.starts_with(&format!("{doc}.")))
    };
    let undocumented_examples: Vec<String> = example_keys(example)
        .into_iter()
        .filter(|key| !is_documented(&documented, key) && !in_map(key) && !excluded(key))
        .collect();
    assert!(
        undocumented_examples.is_empty(),
        "keys of {example} missing from \"## {heading}\" in docs/configuration.md: \
         {undocumented_examples:?}"
    );

    let unknown: Vec<&String> = documented
        .iter()
        .filter(|key| !discovered.contains(*key))
        .collect();
    assert!(
        unknown.is_empty(),
        "keys in \"## {heading}\" of docs/configuration.md that the parser does not accept: \
         {unknown:?}"
    );
}

/// Asserts that every key in a ```toml block of the README or docs/ is documented in
/// one of the sections `headings` of `docs/configuration.md`.
pub fn assert_markdown_keys_documented(headings: &[&str]) {
    let documented: BTreeSet<String> = headings
        .iter()
        .flat_map(|heading| documented_keys(heading))
        .collect();
    let in_map = |key: &str| {
        documented
            .iter()
            .any(|doc| key.starts_with(&format!("{doc}.")))
    };

    let undocumented: Vec<String> = markdown_keys()
        .into_iter()
        .filter(|key| !is_documented(&documented, key) && !in_map(key))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys in toml blocks of README.md or docs/ missing from docs/configuration.md: \
         {undocumented:?}"
    );
}
