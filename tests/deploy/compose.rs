//! `deploy/compose.yaml`: typed, every mount present, the configs as mounted pass `accel
//! check`, and the ports the services, configs and Prometheus name agree.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::{Layout, check, port_of, root};

// The parts of the Compose format the file uses, each declared whether a check reads it or
// not, so that anything else (a misspelt key) fails: hence `allow(dead_code)`.

/// The compose file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Compose {
    name: String,
    services: BTreeMap<String, Service>,
    networks: BTreeMap<String, Network>,
    volumes: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Service {
    image: String,
    entrypoint: Option<Vec<String>>,
    command: Option<Vec<String>>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    volumes: Vec<String>,
    depends_on: Option<Value>,
    network_mode: Option<String>,
    networks: Option<Networks>,
    hostname: Option<String>,
    #[serde(default)]
    ports: Vec<String>,
    healthcheck: Option<Healthcheck>,
    restart: Option<String>,
    stop_grace_period: Option<String>,
    profiles: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Networks {
    List(Vec<String>),
    Map(BTreeMap<String, Attachment>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Attachment {
    ipv4_address: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Healthcheck {
    test: Vec<String>,
    interval: String,
    timeout: String,
    retries: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Network {
    ipam: Option<Ipam>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Ipam {
    config: Vec<Subnet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Subnet {
    subnet: String,
}

/// The Prometheus configuration's scrape targets, by job.
#[derive(Debug, Deserialize)]
struct Prometheus {
    rule_files: Vec<String>,
    scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Debug, Deserialize)]
struct ScrapeConfig {
    job_name: String,
    static_configs: Vec<StaticConfig>,
}

#[derive(Debug, Deserialize)]
struct StaticConfig {
    targets: Vec<String>,
}

/// The compose file with its `<<` merges applied and its `x-` extension fields removed.
fn compose() -> Compose {
    let mut value: Value =
        serde_yaml_ng::from_str(&crate::read("deploy/compose.yaml")).expect("compose.yaml is YAML");
    value.apply_merge().expect("merge keys");
    if let Value::Mapping(map) = &mut value {
        map.retain(|key, _| !key.as_str().is_some_and(|k| k.starts_with("x-")));
    }
    serde_yaml_ng::from_value(value).unwrap_or_else(|e| panic!("deploy/compose.yaml: {e}"))
}

/// A bind mount: host source (relative to `deploy/`) and container target.
fn mounts(service: &Service) -> Vec<(PathBuf, String)> {
    service
        .volumes
        .iter()
        .filter(|v| v.starts_with("./") || v.starts_with("../"))
        .map(|v| {
            let mut parts = v.split(':');
            let source = root().join("deploy").join(parts.next().expect("a source"));
            let target = parts.next().unwrap_or_else(|| panic!("{v:?} has no target")).to_owned();
            (source, target)
        })
        .collect()
}

/// The value after `flag` in a command.
fn arg<'a>(command: &'a [String], flag: &str) -> Option<&'a str> {
    command.iter().position(|a| a == flag).and_then(|i| command.get(i + 1)).map(String::as_str)
}

/// Every host file or directory the compose file mounts (for the every-config check).
pub fn checked_sources() -> Vec<PathBuf> {
    compose().services.values().flat_map(|s| mounts(s).into_iter().map(|(source, _)| source)).collect()
}

/// An Accel service (`accel run --config …`) with its configuration checked as mounted.
fn accel_config(service: &Service) -> Option<accel::config::Config> {
    let command = service.command.as_deref()?;
    if service.entrypoint.is_some() || command.first().map(String::as_str) != Some("run") {
        return None;
    }
    let config = arg(command, "--config").expect("accel run names its --config");
    let layout = Layout::new();
    for (source, target) in mounts(service) {
        layout.mount(&source, &target);
    }
    Some(check(&layout.at(config)).0)
}

#[test]
fn every_mounted_file_exists() {
    for (name, service) in compose().services {
        for (source, target) in mounts(&service) {
            assert!(
                source.exists(),
                "service {name}: {} (mounted at {target}) does not exist",
                source.display()
            );
        }
    }
}

#[test]
fn the_shape_is_three_instances_with_their_sidecars_the_edge_and_monitoring() {
    let compose = compose();
    assert_eq!(compose.name, "accel");
    let sidecars: Vec<&Service> = compose
        .services
        .values()
        .filter(|s| s.network_mode.as_deref().is_some_and(|m| m.starts_with("service:")))
        .collect();
    assert_eq!(sidecars.len(), 3, "three sidecars, each in an origin's network namespace");
    for name in ["postgres", "redis", "edge", "prometheus", "grafana"] {
        assert!(compose.services.contains_key(name), "compose.yaml has no {name} service");
    }
    let postgres = compose.services["postgres"].command.clone().unwrap_or_default().join(" ");
    for setting in [
        "shared_buffers=512MB",
        "effective_cache_size=2GB",
        "work_mem=16MB",
        "max_connections=200",
        "random_page_cost=1.1",
        "effective_io_concurrency=200",
    ] {
        assert!(postgres.contains(setting), "postgres is not tuned with {setting}");
    }
    let redis = compose.services["redis"].command.clone().unwrap_or_default().join(" ");
    assert!(redis.contains("--maxmemory 2gb") && redis.contains("--maxmemory-policy allkeys-lru"), "{redis}");
    assert!(compose.volumes.contains_key("postgres-data"));
    let healthcheck = compose.services["postgres"].healthcheck.as_ref().expect("postgres has a health check");
    assert!(
        healthcheck.test.iter().any(|t| t == "pg_isready"),
        "{:?} {} {} {}",
        healthcheck.test,
        healthcheck.interval,
        healthcheck.timeout,
        healthcheck.retries
    );
    for sidecar in sidecars {
        assert!(
            sidecar.volumes.iter().any(|v| v.ends_with(":/etc/accel/rules:ro")),
            "every sidecar mounts the rules read-only at /etc/accel/rules"
        );
        assert!(
            sidecar.environment.contains_key("ACCEL_ADMIN__TOKEN"),
            "the admin token comes from the environment"
        );
        assert!(
            sidecar.depends_on.is_some() && sidecar.restart.is_some() && sidecar.stop_grace_period.is_some()
        );
    }
}

#[test]
fn the_configs_as_mounted_pass_accel_check_and_the_ports_agree() {
    let compose = compose();
    let services = &compose.services;
    let edge = accel_config(&services["edge"]).expect("the edge runs accel");

    let mut sidecar_targets = BTreeSet::new();
    let mut origin_targets = BTreeSet::new();
    let mut edge_endpoints = BTreeSet::new();
    for (name, service) in services {
        let Some(instance) = service.network_mode.as_deref().and_then(|m| m.strip_prefix("service:")) else {
            continue;
        };
        let sidecar = accel_config(service).unwrap_or_else(|| panic!("{name} runs accel"));
        let origin = &services[instance];
        assert_eq!(origin.hostname.as_deref(), Some(instance), "{instance} is reachable by its name");
        assert_eq!(origin.entrypoint.as_deref(), Some(&["accel-origin".to_owned()][..]));
        let origin_command = origin.command.as_deref().expect("the origin's command");
        let origin_port = port_of(arg(origin_command, "--listen").expect("the origin's --listen"));
        let endpoints: Vec<String> =
            sidecar.upstreams.iter().flat_map(|u| u.endpoints.iter().map(ToString::to_string)).collect();
        assert_eq!(endpoints, [format!("127.0.0.1:{origin_port}")], "{name} forwards to its own origin");
        sidecar_targets.insert(format!("{instance}:{}", sidecar.admin.addr.port()));
        origin_targets.insert(format!("{instance}:{origin_port}"));
        edge_endpoints.insert(format!("{instance}:{}", sidecar.listen.port()));
        assert!(sidecar.redis.is_some(), "{name} shares Redis");

        // The sidecars believe X-Forwarded-For from the edge's address, and only from it.
        let Some(Networks::Map(attached)) = &services["edge"].networks else {
            panic!("the edge has a fixed address on its network");
        };
        let edge_ip = attached.values().find_map(|a| a.ipv4_address).expect("the edge's ipv4_address");
        assert!(
            sidecar.forwarded.trusted_proxies.iter().any(|net| net.contains(&edge_ip)),
            "{name} trusts the edge's {edge_ip}"
        );
        for network in attached.keys() {
            let subnet = compose.networks[network].ipam.as_ref().map(|i| i.config[0].subnet.clone());
            assert!(subnet.is_some(), "the edge's network {network} pins its subnet");
        }
    }
    let upstream: BTreeSet<String> =
        edge.upstreams.iter().flat_map(|u| u.endpoints.iter().map(ToString::to_string)).collect();
    assert_eq!(upstream, edge_endpoints, "the edge balances over every sidecar");

    let published: Vec<u16> = services["edge"].ports.iter().map(|p| port_of(p)).collect();
    assert!(published.contains(&edge.listen.port()), "the edge's listener is published");
    assert!(
        services["edge"]
            .ports
            .iter()
            .any(|p| p.starts_with("127.0.0.1:") && port_of(p) == edge.admin.addr.port()),
        "the edge's admin listener is published on loopback only"
    );

    let prometheus: Prometheus =
        serde_yaml_ng::from_str(&crate::read("deploy/compose/prometheus.yml")).expect("prometheus.yml");
    let targets = |job: &str| -> BTreeSet<String> {
        prometheus
            .scrape_configs
            .iter()
            .filter(|s| s.job_name == job)
            .flat_map(|s| s.static_configs.iter().flat_map(|c| c.targets.clone()))
            .collect()
    };
    let mut accel_targets = sidecar_targets;
    accel_targets.insert(format!("edge:{}", edge.admin.addr.port()));
    assert_eq!(targets("accel"), accel_targets, "Prometheus scrapes every sidecar and the edge");
    assert_eq!(targets("accel-origin"), origin_targets, "Prometheus scrapes every origin");
    let mounted: Vec<String> =
        mounts(&services["prometheus"]).into_iter().map(|(_, target)| target).collect();
    for rules in &prometheus.rule_files {
        assert!(
            mounted.contains(&format!("/etc/prometheus/{rules}")),
            "Prometheus's rule file {rules} is mounted next to its configuration"
        );
    }
}
