//! `deploy/k8s/`: the kustomization's manifests as typed `k8s-openapi` objects (serialized back
//! without losing a field, so a misspelt one fails), the ConfigMaps' configuration checked as
//! the pod mounts it, and probes, ports, grace period and selectors agreeing with it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Layout, check, port_of, root};

/// `kustomization.yaml`, with the fields it uses (anything else fails).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    #[serde(default)]
    labels: Vec<serde_json::Value>,
    resources: Vec<String>,
    config_map_generator: Vec<Generator>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Generator {
    name: String,
    files: Vec<String>,
    options: Option<GeneratorOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GeneratorOptions {
    disable_name_suffix_hash: bool,
}

/// The manifests of the kustomization, by kind.
#[derive(Debug, Default)]
struct Manifests {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    budgets: Vec<PodDisruptionBudget>,
}

fn kustomization() -> Kustomization {
    let kustomization: Kustomization = serde_yaml_ng::from_str(&crate::read("deploy/k8s/kustomization.yaml"))
        .unwrap_or_else(|e| panic!("deploy/k8s/kustomization.yaml: {e}"));
    assert_eq!(
        (kustomization.api_version.as_str(), kustomization.kind.as_str()),
        ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    );
    kustomization
}

/// `value` as a `T`, which must serialize back to the same JSON: k8s-openapi ignores fields
/// it does not know, so a misspelt field shows as one that went missing.
fn typed<T: DeserializeOwned + serde::Serialize>(file: &str, value: serde_json::Value) -> T {
    let object: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&object).expect("serialize");
    assert_eq!(back, value, "{file}: fields were lost reading it as a typed object (misspelt or misplaced?)");
    object
}

fn manifests() -> Manifests {
    let mut manifests = Manifests::default();
    for file in kustomization().resources {
        let path = format!("deploy/k8s/{file}");
        for document in serde_yaml_ng::Deserializer::from_str(&crate::read(&path)) {
            let value = serde_json::Value::deserialize(document).unwrap_or_else(|e| panic!("{path}: {e}"));
            match value["kind"].as_str() {
                Some("Deployment") => manifests.deployments.push(typed(&path, value)),
                Some("Service") => manifests.services.push(typed(&path, value)),
                Some("PodDisruptionBudget") => manifests.budgets.push(typed(&path, value)),
                other => panic!("{path}: a kind this test does not know: {other:?}"),
            }
        }
    }
    manifests
}

/// The files the ConfigMap generators read (for the every-config check).
pub fn checked_sources() -> Vec<PathBuf> {
    kustomization()
        .config_map_generator
        .iter()
        .flat_map(|g| g.files.iter().map(|f| root().join("deploy/k8s").join(f)))
        .collect()
}

fn pod(deployment: &Deployment) -> &PodSpec {
    deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("a pod spec")
}

fn named_port(container: &Container, name: &str) -> u16 {
    let port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("container {} has no port named {name}", container.name));
    u16::try_from(port.container_port).expect("a port")
}

fn http_probe(probe: Option<&Probe>) -> (String, IntOrString) {
    let get = probe.and_then(|p| p.http_get.as_ref()).expect("an httpGet probe");
    (get.path.clone().unwrap_or_default(), get.port.clone())
}

#[test]
fn the_manifests_are_typed_objects() {
    let manifests = manifests();
    assert_eq!(
        (manifests.deployments.len(), manifests.services.len(), manifests.budgets.len()),
        (1, 1, 1),
        "one Deployment, one Service, one PodDisruptionBudget"
    );
}

#[test]
fn the_sidecar_is_native_its_config_passes_accel_check_and_the_pod_agrees_with_it() {
    let manifests = manifests();
    let deployment = &manifests.deployments[0];
    let pod = pod(deployment);

    // A native sidecar: an init container that keeps running, started before the origin.
    let sidecar =
        pod.init_containers.iter().flatten().find(|c| c.name == "accel").expect("the accel init container");
    assert_eq!(
        sidecar.restart_policy.as_deref(),
        Some("Always"),
        "restartPolicy: Always makes it a native sidecar"
    );

    // Its configuration, as the ConfigMaps mount it.
    let generators: BTreeMap<String, Vec<String>> =
        kustomization().config_map_generator.into_iter().map(|g| (g.name, g.files)).collect();
    let layout = Layout::new();
    for mount in sidecar.volume_mounts.iter().flatten() {
        let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).expect("the mounted volume");
        let config_map = volume.config_map.as_ref().expect("a ConfigMap volume").name.clone();
        let files =
            generators.get(&config_map).unwrap_or_else(|| panic!("no generator for ConfigMap {config_map}"));
        for file in files {
            let name = std::path::Path::new(file).file_name().expect("a file name").to_string_lossy();
            layout.write(
                &format!("{}/{name}", mount.mount_path),
                crate::read(&format!("deploy/k8s/{file}")).as_bytes(),
            );
        }
    }
    let args = sidecar.args.as_deref().expect("the sidecar's args");
    let config_path = args.iter().position(|a| a == "--config").map(|i| &args[i + 1]).expect("--config");
    let (config, _) = check(&layout.at(config_path));

    assert_eq!(named_port(sidecar, "http"), config.listen.port());
    assert_eq!(named_port(sidecar, "admin"), config.admin.addr.port());
    assert_eq!(
        http_probe(sidecar.liveness_probe.as_ref()),
        ("/healthz".to_owned(), IntOrString::String("admin".into()))
    );
    assert_eq!(
        http_probe(sidecar.readiness_probe.as_ref()),
        ("/readyz".to_owned(), IntOrString::String("admin".into()))
    );
    let resources = sidecar.resources.as_ref().expect("the sidecar's resources");
    assert!(resources.requests.as_ref().is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")));
    assert!(resources.limits.as_ref().is_some_and(|r| r.contains_key("memory")));

    let grace = pod.termination_grace_period_seconds.expect("terminationGracePeriodSeconds");
    assert!(
        u64::try_from(grace).expect("positive") > config.limits.drain_timeout.as_secs(),
        "terminationGracePeriodSeconds ({grace}) must exceed drain_timeout ({:?})",
        config.limits.drain_timeout
    );

    let annotations = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .expect("pod annotations");
    assert_eq!(annotations.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(annotations.get("prometheus.io/port"), Some(&config.admin.addr.port().to_string()));

    // The origin listens where the sidecar forwards.
    let origin = pod.containers.iter().find(|c| c.name == "origin").expect("the origin container");
    let origin_args = origin.args.as_deref().expect("the origin's args");
    let listen =
        origin_args.iter().position(|a| a == "--listen").map(|i| &origin_args[i + 1]).expect("--listen");
    let endpoints: Vec<String> =
        config.upstreams.iter().flat_map(|u| u.endpoints.iter().map(ToString::to_string)).collect();
    assert_eq!(endpoints, std::slice::from_ref(listen), "the sidecar forwards to the origin's --listen");
    assert_eq!(port_of(listen), port_of(&endpoints[0]));
}

#[test]
fn the_service_and_the_budget_select_the_pods() {
    let manifests = manifests();
    let deployment = &manifests.deployments[0];
    let labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .expect("pod labels");
    let selects =
        |selector: &BTreeMap<String, String>| selector.iter().all(|(k, v)| labels.get(k) == Some(v));

    let service = manifests.services[0].spec.as_ref().expect("the service spec");
    assert!(selects(service.selector.as_ref().expect("a selector")), "the Service selects the pods");
    let sidecar =
        pod(deployment).init_containers.iter().flatten().find(|c| c.name == "accel").expect("the sidecar");
    for port in service.ports.iter().flatten() {
        match port.target_port.as_ref().expect("a targetPort") {
            IntOrString::String(name) => {
                named_port(sidecar, name);
            }
            IntOrString::Int(number) => panic!("targetPort {number}: name the sidecar's port instead"),
        }
    }

    let budget = manifests.budgets[0].spec.as_ref().expect("the budget spec");
    let matched = budget.selector.as_ref().and_then(|s| s.match_labels.as_ref()).expect("matchLabels");
    assert!(selects(matched), "the PodDisruptionBudget selects the pods");
    let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).expect("replicas");
    match budget.min_available.as_ref().expect("minAvailable") {
        IntOrString::Int(n) => {
            assert!(*n < replicas, "minAvailable {n} leaves room to drain one of {replicas}")
        }
        IntOrString::String(percent) => panic!("minAvailable {percent}: a number of pods"),
    }
}

#[test]
fn the_rules_config_map_keeps_its_name_so_edits_reach_running_sidecars() {
    let kustomization = kustomization();
    let rules =
        kustomization.config_map_generator.iter().find(|g| g.name == "accel-rules").expect("accel-rules");
    assert!(rules.options.as_ref().is_some_and(|o| o.disable_name_suffix_hash));
    let config =
        kustomization.config_map_generator.iter().find(|g| g.name == "accel-config").expect("accel-config");
    assert!(config.options.is_none(), "accel.toml changes roll the pods (hashed name)");
    assert!(!kustomization.labels.is_empty());
}
