//! `make bench`: what flow_aggregate's Kubernetes watch costs at scale (issue 15's
//! sizes): a node with 110 pods in a cluster of 10,000 services, each with its endpoint
//! slice, and 3,000 pods elsewhere, from the stand-in API server (the real wire format,
//! pages of `limit` with `continue`). Prints the API requests of a start (lists and
//! watches), the RSS the objects add (against the same agent with an empty cluster), and
//! how long the first full list took. Ignored in `make test`: it is a measurement.

mod common;
use std::time::{Duration, Instant};

use common::kube_api::KubeApi;
use common::pki::Pki;
use common::*;
use serde_json::json;

const NODE_PODS: usize = 110;
const OTHER_PODS: usize = 3_000;
const SERVICES: usize = 10_000;

fn populate(api: &KubeApi) {
    add_pods(api, NODE_PODS + OTHER_PODS);
    add_services(api);
}

/// `n` pods like a Deployment's (3 labels, an annotation, two addresses' worth of
/// status), the first NODE_PODS on this node.
fn add_pods(api: &KubeApi, n: usize) {
    for i in 0..n {
        let node = if i < NODE_PODS {
            "node-1".to_string()
        } else {
            format!("node-{}", 2 + i % 40)
        };
        let ip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
        api.add_pod(
            &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("web-7d4b9c5f8-{i:05}"), "namespace": format!("ns-{}", i % 50),
                  "generateName": "web-7d4b9c5f8-", "uid": "0b7f1c2e-1111-2222-3333-444455556666",
                  "labels": {"app": "web", "pod-template-hash": "7d4b9c5f8", "tier": "frontend"},
                  "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z"}},
                "spec": {"nodeName": node, "containers": [{"name": "web", "image": "nginx:1.27"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
            .to_string(),
        );
    }
}

fn add_services(api: &KubeApi) {
    for i in 0..SERVICES {
        let (ns, name) = (format!("ns-{}", i % 50), format!("svc-{i:05}"));
        let cluster_ip = format!("10.96.{}.{}", i / 256, i % 256);
        api.add_object(
            "services",
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})
            .to_string(),
        );
        let pod_ip = format!("10.200.{}.{}", i / 256, i % 256);
        api.add_object(
            "endpointslices",
            &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-abcde"), "namespace": ns,
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [pod_ip], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
            .to_string(),
        );
    }
}

/// Starts an agent watching `api`; returns its RSS (KiB) once listed and settled, the
/// time the lists took, and the API's requests.
fn run(api: &KubeApi, pki: &Pki, token: &std::path::Path) -> (u64, Duration) {
    let conf = format!(
        "[INPUT]\n    name dummy\n    samples 1\n\
         [FILTER]\n    name flow_aggregate\n    match *\n    kubernetes on\n    node_name node-1\n    include_service on\n\
         \x20   kube_url https://localhost:{}\n    kube_ca_file {}\n    kube_token_file {}\n\
         [OUTPUT]\n    name null\n    match *\n",
        api.port,
        pki.path("ca.pem"),
        token.display()
    );
    let t = Instant::now();
    let mut a = Agent::start(&conf);
    a.wait_log("Kubernetes API listed", Duration::from_secs(120));
    let listed = t.elapsed();
    // jemalloc returns freed pages after its decay time (10 s).
    std::thread::sleep(Duration::from_secs(15));
    let rss = rss_kib(a.pid());
    a.stop(Duration::from_secs(10));
    (rss, listed)
}

#[test]
#[ignore = "a measurement: make bench runs it"]
fn kubernetes_watch_at_scale() {
    let dir = Dir::new();
    let pki = Pki::new();
    let token = dir.file("token", "t1\n");
    let empty = KubeApi::start(&pki, 0, "t1");
    let (base, _) = run(&empty, &pki, &token);
    let api = KubeApi::start(&pki, 0, "t1");
    populate(&api);
    let (rss, listed) = run(&api, &pki, &token);
    let reqs = api.requests();
    let lists = reqs.iter().filter(|(p, _)| !p.contains("watch=1")).count();
    let watches = reqs.len() - lists;
    let pods = NODE_PODS + OTHER_PODS;
    println!(
        "kube_scale: {pods} pods ({NODE_PODS} on this node), {SERVICES} services and endpoint slices"
    );
    println!(
        "kube_scale: start: {} requests ({lists} list pages of 500, {watches} watches), listed in {:.2}s",
        reqs.len(),
        listed.as_secs_f64()
    );
    println!(
        "kube_scale: RSS {:.1} MB with the cluster, {:.1} MB empty: {:.1} MB for {} objects",
        rss as f64 / 1024.0,
        base as f64 / 1024.0,
        (rss - base) as f64 / 1024.0,
        pods + 2 * SERVICES
    );
    // Steady state, on paper: each watch asks for timeoutSeconds=300, so the API server
    // ends it every 5 minutes and it resumes from its version: 12 requests an hour per
    // kind, 36 for the three (no list unless a version is gone, 410).
    println!("kube_scale: steady state: 3 watches resumed every 300 s = 36 requests/hour");
    assert!(lists >= (pods + 2 * SERVICES) / 500, "paged lists");
    // Pods alone, for the cost per 1,000 pods.
    let pods_only = KubeApi::start(&pki, 0, "t1");
    add_pods(&pods_only, 5_000);
    let (rss_pods, _) = run(&pods_only, &pki, &token);
    println!(
        "kube_scale: 5,000 pods alone: {:.1} MB, {:.2} MB per 1,000 pods",
        (rss_pods - base) as f64 / 1024.0,
        (rss_pods - base) as f64 / 1024.0 / 5.0
    );
}
