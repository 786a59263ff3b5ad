//! Checks that docs/counters.md describes every verdict reason, selection and counter that
//! the code defines: the core's reason lists, the dataplane's counters file and final
//! report, and the control plane's Prometheus metrics. The daemon and control plane are
//! not dependencies of the tracer, so their names are read from their source text.

use std::path::{Path, PathBuf};

use spike_core::{DropReason, KernelReason, Selection};

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repository_root().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()))
}

/// Returns the part of a Rust source file before its unit tests.
fn without_tests(source: &str) -> &str {
    source
        .split_once("#[cfg(test)]")
        .map_or(source, |(code, _)| code)
}

/// Returns the text from `start` up to `end`, both of which must be in `text`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("`{start}` not found"));
    let rest = &text[from..];
    let to = rest
        .find(end)
        .unwrap_or_else(|| panic!("`{end}` not found after `{start}`"));
    &rest[..to]
}

/// Returns whether `name` occurs in `doc` as a whole word of `[a-z0-9_]`.
fn mentions(doc: &str, name: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    doc.match_indices(name).any(|(at, _)| {
        let before = doc[..at].chars().next_back();
        let after = doc[at + name.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Returns whether `name` occurs in `doc` as a whole word, or followed by one of the
/// suffixes that Prometheus encoding adds to a metric name.
fn mentions_metric(doc: &str, name: &str) -> bool {
    ["", "_total", "_seconds"]
        .iter()
        .any(|suffix| mentions(doc, &format!("{name}{suffix}")))
}

/// Returns the string literals that are keys of `"key": value` pairs in `text`.
fn json_keys(text: &str) -> Vec<String> {
    text.match_indices("\":")
        .filter_map(|(end, _)| {
            let start = text[..end].rfind('"')? + 1;
            let key = &text[start..end];
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
                .then(|| key.to_owned())
        })
        .collect()
}

/// Returns the first string literal of each `("name", ...)` tuple in `text`.
fn tuple_names(text: &str) -> Vec<String> {
    text.match_indices('(')
        .filter_map(|(at, _)| {
            let rest = text[at + 1..].trim_start().strip_prefix('"')?;
            let name = &rest[..rest.find('"')?];
            let is_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            is_name.then(|| name.to_owned())
        })
        .collect()
}

/// Returns the metric names that `text` passes as the first string literal of a call
/// that registers or encodes a metric. Calls whose name is built with `format!`, or that
/// pass it in a variable, are left to the callers of this function.
fn registered_names(text: &str) -> Vec<String> {
    const CALLS: [&str; 6] = [
        "register(",
        "register_with_unit(",
        "encode_descriptor(",
        "counter(",
        "gauge(",
        "counter_family(",
    ];
    let mut names = Vec::new();
    for call in CALLS {
        for (at, _) in text.match_indices(call) {
            let rest = &text[at + call.len()..];
            let (Some(quote), close) = (rest.find('"'), rest.find(')')) else {
                continue;
            };
            if close.is_some_and(|close| close < quote) {
                continue;
            }
            let literal = &rest[quote + 1..];
            let Some(end) = literal.find('"') else {
                continue;
            };
            let name = &literal[..end];
            if !name.contains('{') && !name.contains(' ') {
                names.push(name.to_owned());
            }
        }
    }
    names
}

fn assert_all_mentioned(doc: &str, names: &[String], what: &str) {
    assert!(!names.is_empty(), "no {what} found in the code");
    let missing: Vec<&String> = names.iter().filter(|name| !mentions(doc, name)).collect();
    assert!(
        missing.is_empty(),
        "docs/counters.md does not describe these {what}: {missing:?}"
    );
}

#[test]
fn doc_lists_every_reason_and_selection() {
    let doc = read("docs/counters.md");
    let labels = |labels: Vec<&str>| labels.into_iter().map(str::to_owned).collect::<Vec<_>>();
    assert_all_mentioned(
        &doc,
        &labels(KernelReason::ALL.iter().map(|r| r.label()).collect()),
        "kernel reasons",
    );
    assert_all_mentioned(
        &doc,
        &labels(DropReason::ALL.iter().map(|r| r.label()).collect()),
        "drop reasons",
    );
    assert_all_mentioned(
        &doc,
        &labels(Selection::ALL.iter().map(|s| s.label()).collect()),
        "selections",
    );
}

#[test]
fn doc_lists_every_counters_file_key() {
    let doc = read("docs/counters.md");
    let report = read("dataplane/daemon/src/report.rs");
    let code = without_tests(&report);

    let json = between(code, "pub fn to_json", "pub fn write_text");
    assert_all_mentioned(&doc, &json_keys(json), "counters file keys");
    let text = between(code, "pub fn write_text", "fn sum_traffic");
    assert_all_mentioned(&doc, &tuple_names(text), "final report counters");
    let ports = between(code, "fn port_fields", "fn port_json");
    assert_all_mentioned(&doc, &tuple_names(ports), "port statistics");
}

#[test]
fn doc_lists_every_prometheus_metric() {
    let doc = read("docs/counters.md");
    let metrics = read("controlplane/src/metrics.rs");
    let code = without_tests(&metrics);
    let bgp = read("controlplane/src/bgp.rs");

    let mut names = registered_names(code);
    names.extend(registered_names(without_tests(&bgp)));
    // Names built as `dataplane_{key}` and `dataplane_port_{key}` from key lists.
    let scalars = between(code, "fn encode_counters", "] {");
    names.extend(
        tuple_names(scalars)
            .into_iter()
            .map(|key| format!("dataplane_{key}")),
    );
    let ports = between(code, "fn encode_ports", "] {");
    names.extend(
        tuple_names(ports)
            .into_iter()
            .map(|key| format!("dataplane_port_{key}")),
    );
    let families = between(code, "let families = [", "];");
    names.extend(tuple_names(families));

    assert!(
        names.len() > 40,
        "the scan of the metric code found only {names:?}"
    );
    let missing: Vec<String> = names
        .iter()
        .map(|name| format!("spike_{name}"))
        .filter(|name| !mentions_metric(&doc, name))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/counters.md does not describe these Prometheus metrics: {missing:?}"
    );
}
