//! The Kubernetes manifests in `deploy/kubernetes/`: every document parses into its
//! k8s-openapi type without unknown fields, and the ClusterRole grants exactly the access
//! that discovery uses.
//!
//! k8s-openapi's types ignore unknown fields when they deserialize, so a misspelt key
//! would pass a plain parse. Each document is therefore parsed, serialized again and
//! compared with the input: a key that the type dropped is a key that the API server
//! would reject (or, worse, ignore).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spike_kube::ResourceKind;

fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// One parsed document with the file it came from.
struct Document {
    file: String,
    value: Value,
}

/// Reads every YAML document of every `.yaml` file in `deploy/kubernetes/`.
fn documents() -> Vec<Document> {
    let mut paths: Vec<PathBuf> = fs::read_dir(manifest_dir())
        .expect("deploy/kubernetes/ is readable")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no .yaml file in deploy/kubernetes/");

    let mut documents = Vec::new();
    for path in paths {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{file}: invalid YAML: {error}"));
            documents.push(Document {
                file: file.clone(),
                value,
            });
        }
    }
    documents
}

/// Returns the first place, as a path like `spec.ports[0].name`, where `input` has a key
/// or value that `output` lacks.
fn first_difference(input: &Value, output: &Value, path: &str) -> Option<String> {
    match (input, output) {
        (Value::Object(input), Value::Object(output)) => input.iter().find_map(|(key, value)| {
            let path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match output.get(key) {
                Some(kept) => first_difference(value, kept, &path),
                None => Some(path),
            }
        }),
        (Value::Array(input), Value::Array(output)) if input.len() == output.len() => input
            .iter()
            .zip(output)
            .enumerate()
            .find_map(|(index, (value, kept))| {
                first_difference(value, kept, &format!("{path}[{index}]"))
            }),
        _ if input == output => None,
        _ => Some(path.to_owned()),
    }
}

/// Parses `value` as `T` and checks that the round trip keeps every key and value.
fn parse_strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|error| error.to_string())?;
    let again = serde_json::to_value(&typed).map_err(|error| error.to_string())?;
    match first_difference(value, &again, "") {
        Some(path) => Err(format!("unknown field or invalid value at {path}")),
        None => Ok(typed),
    }
}

/// Checks one document against the type its `kind` names.
fn check_document(value: &Value) -> Result<(), String> {
    match value["kind"].as_str() {
        Some("Namespace") => parse_strict::<Namespace>(value).map(drop),
        Some("ServiceAccount") => parse_strict::<ServiceAccount>(value).map(drop),
        Some("Secret") => parse_strict::<Secret>(value).map(drop),
        Some("ClusterRole") => parse_strict::<ClusterRole>(value).map(drop),
        Some("ClusterRoleBinding") => parse_strict::<ClusterRoleBinding>(value).map(drop),
        Some("Service") => parse_strict::<Service>(value).map(drop),
        Some("Deployment") => parse_strict::<Deployment>(value).map(drop),
        other => Err(format!(
            "kind {other:?} has no type in this test: add it to check_document"
        )),
    }
}

fn find<T: DeserializeOwned + Serialize>(kind: &str, name: &str) -> T {
    let document = documents()
        .into_iter()
        .find(|document| {
            document.value["kind"] == kind && document.value["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no {kind} named {name} in deploy/kubernetes/"));
    parse_strict(&document.value).unwrap()
}

#[test]
fn every_manifest_parses_strictly() {
    let documents = documents();

    for document in &documents {
        let name = &document.value["metadata"]["name"];
        if let Err(error) = check_document(&document.value) {
            panic!(
                "{}: {} {name}: {error}",
                document.file, document.value["kind"]
            );
        }
    }
    let kinds: BTreeSet<&str> = documents
        .iter()
        .filter_map(|document| document.value["kind"].as_str())
        .collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",
        "Service",
        "Deployment",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/kubernetes/");
    }
}

#[test]
fn strict_parse_rejects_misspelt_key() {
    let mut service = serde_json::to_value(find::<Service>("Service", "web")).unwrap();
    let spec = service["spec"].as_object_mut().unwrap();
    let policy = spec.remove("externalTrafficPolicy").unwrap();
    spec.insert("externalTraficPolicy".to_owned(), policy);

    let error = check_document(&service).unwrap_err();

    assert_eq!(
        error,
        "unknown field or invalid value at spec.externalTraficPolicy"
    );
}

#[test]
fn strict_parse_rejects_wrong_kind() {
    let mut role =
        serde_json::to_value(find::<ClusterRole>("ClusterRole", "spike-controlplane")).unwrap();
    role["apiVersion"] = Value::from("rbac.authorization.k8s.io/v1beta1");

    assert!(check_document(&role).is_err());
}

#[test]
fn cluster_role_grants_exactly_watched_kinds() {
    let role: ClusterRole = find("ClusterRole", "spike-controlplane");

    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        assert_eq!(rule.resource_names, None, "rules apply to every object");
        assert_eq!(rule.non_resource_urls, None, "no non-resource URLs");
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let used: BTreeSet<(String, String, String)> = ResourceKind::ALL
        .iter()
        .flat_map(|kind| {
            ResourceKind::VERBS.iter().map(move |verb| {
                (
                    kind.api_group().to_owned(),
                    kind.as_str().to_owned(),
                    (*verb).to_owned(),
                )
            })
        })
        .collect();

    assert_eq!(granted, used);
}

#[test]
fn binding_and_token_name_service_account() {
    let account: ServiceAccount = find("ServiceAccount", "spike-controlplane");
    let binding: ClusterRoleBinding = find("ClusterRoleBinding", "spike-controlplane");
    let token: Secret = find("Secret", "spike-controlplane-token");
    let account_name = account.metadata.name.clone().unwrap();
    let account_namespace = account.metadata.namespace.clone().unwrap();

    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, "spike-controlplane");
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, account_name);
    assert_eq!(subjects[0].namespace.as_ref(), Some(&account_namespace));
    assert_eq!(
        token.type_.as_deref(),
        Some("kubernetes.io/service-account-token")
    );
    assert_eq!(token.metadata.namespace, Some(account_namespace));
    let annotations = token.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("kubernetes.io/service-account.name"),
        Some(&account_name)
    );
}

#[test]
fn example_service_keeps_client_address() {
    let service: Service = find("Service", "web");
    let spec = service.spec.unwrap();

    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    let labels = service.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("spike.example/serve").map(String::as_str),
        Some("true"),
        "the label that configs/controlplane.toml selects"
    );
}
