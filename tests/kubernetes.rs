//! The Kubernetes deployment in conf/kubernetes/: the manifests parse, carry what a node
//! agent needs (host network, CAP_NET_ADMIN, mounts, probes, RBAC), and the embedded
//! configuration passes `agent --dry-run`.

mod common;
use std::path::Path;

use common::*;
use saphyr::{LoadableYamlNode, Yaml};

fn docs(name: &str) -> Vec<Yaml<'static>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf/kubernetes")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let text: &'static str = Box::leak(text.into_boxed_str());
    Yaml::load_from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn kind<'a>(all: &'a [Yaml<'static>], k: &str) -> &'a Yaml<'static> {
    all.iter()
        .find(|d| d["kind"].as_str() == Some(k))
        .unwrap_or_else(|| panic!("no {k}"))
}

#[test]
fn manifests_carry_what_a_node_agent_needs() {
    let rbac = docs("rbac.yaml");
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ] {
        kind(&rbac, k);
    }
    let rules = kind(&rbac, "ClusterRole")["rules"].as_vec().unwrap();
    let strs = |y: &Yaml<'static>| -> Vec<String> {
        y.as_vec()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    let mut granted = Vec::new();
    for r in rules {
        assert_eq!(strs(&r["verbs"]), ["get", "list", "watch"], "read-only");
        for g in strs(&r["apiGroups"]) {
            for res in strs(&r["resources"]) {
                granted.push(format!("{g}/{res}"));
            }
        }
    }
    for r in [
        "/pods",
        "/namespaces",
        "/services",
        "discovery.k8s.io/endpointslices",
    ] {
        assert!(granted.iter().any(|g| g == r), "{r}: {granted:?}");
    }

    let ds = docs("daemonset.yaml");
    let ds = kind(&ds, "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true));
    assert_eq!(spec["serviceAccountName"].as_str(), Some("agent"));
    assert_eq!(
        spec["containers"].as_vec().map(|c| c.len()),
        Some(1),
        "no sidecar: flow_aggregate watches the API itself"
    );
    let agent = &spec["containers"][0];
    assert!(agent["image"]
        .as_str()
        .is_some_and(|i| i.contains("agent:")));
    let caps: Vec<&str> = agent["securityContext"]["capabilities"]["add"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(caps, ["NET_ADMIN"]);
    let mounts: Vec<&str> = agent["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for m in ["/etc/agent", "/var/log", "/var/lib/agent"] {
        assert!(mounts.contains(&m), "{m} not mounted: {mounts:?}");
    }
    assert_eq!(
        agent["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/api/v1/health")
    );
    assert_eq!(
        agent["livenessProbe"]["httpGet"]["port"].as_integer(),
        Some(2020)
    );
    assert_eq!(
        agent["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/api/v1/uptime")
    );
    let args: Vec<&str> = agent["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(args, ["-c", "/etc/agent/fluent-bit.conf"]);
    // The grace of the agent fits in the pod's termination grace period.
    assert!(spec["terminationGracePeriodSeconds"].as_integer().unwrap() > 30);
}

#[test]
fn the_configmap_configs_pass_dry_run() {
    let cm = docs("configmap.yaml");
    let data = &kind(&cm, "ConfigMap")["data"];
    // The node's paths, moved into a temp dir.
    let dir = Dir::new();
    let base = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("var/log/containers")).unwrap();
    std::fs::create_dir_all(dir.path().join("var/lib/agent")).unwrap();
    for key in ["pipeline.conf", "fluent-bit.conf", "fluent-bit-kafka.conf"] {
        let conf = data[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in the ConfigMap"))
            .replace("/var/log/", &format!("{base}/var/log/"))
            .replace("/var/lib/agent", &format!("{base}/var/lib/agent"))
            // The image installs conf/parsers.conf there.
            .replace(
                "/fluent-bit/etc/",
                concat!(env!("CARGO_MANIFEST_DIR"), "/conf/"),
            );
        dir.file(key, &conf);
    }
    // Each main file, as the DaemonSet runs it (pipeline.conf is found beside it).
    for main in ["fluent-bit.conf", "fluent-bit-kafka.conf"] {
        let o = std::process::Command::new(BIN)
            .args(["-c", dir.path().join(main).to_str().unwrap(), "--dry-run"])
            .current_dir("/")
            .env("NODE_NAME", "node-1")
            .env("FLOW_COLLECTOR_HOST", "127.0.0.1")
            .env("LOG_COLLECTOR_HOST", "127.0.0.1")
            .env("KAFKA_BROKERS", "127.0.0.1:9092")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{main}: {err}");
        assert!(!err.contains("[error]"), "{main}: {err}");
    }
}
