//! Flow logs named from the Kubernetes API (`flow_aggregate` with `kubernetes on`):
//! list + watch of the cluster's pods, services and endpoint slices from a stand-in API
//! server speaking the real wire format (TLS, bearer token, lists with
//! resourceVersion, chunked watch streams). Conntrack-shaped records come in over the
//! tcp input, so no root is needed.

mod common;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::kube_api::KubeApi;
use common::pki::Pki;
use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn pod(ns: &str, name: &str, generate: &str, node: &str, ip: &str, labels: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "generateName": generate, "labels": labels,
                     "uid": "0b7f1c2e-1111-2222-3333-444455556666", "annotations": {"big": "x".repeat(2000)}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx:1.27"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
    .to_string()
}

/// A conntrack DESTROY of a TCP connection `src:sport` → `dst:dport`, DNAT'd to `to`.
fn destroy(src: &str, sport: u16, dst: &str, dport: u16, to: (&str, u16)) -> String {
    json!({"event": "destroy", "proto_num": 6, "src_ip": src, "src_port": sport,
        "dst_ip": dst, "dst_port": dport, "reply_src_ip": to.0, "reply_src_port": to.1,
        "reply_dst_ip": src, "reply_dst_port": sport, "snat": false, "dnat": dst != to.0,
        "delta_orig_packets": 5, "delta_orig_bytes": 500, "delta_reply_packets": 4,
        "delta_reply_bytes": 4000})
    .to_string()
}

fn flow_logs(a: &Agent) -> Vec<Value> {
    a.stdout()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_flow(a: &Agent, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + T;
    loop {
        if let Some(r) = flow_logs(a).into_iter().find(|r| f(r)) {
            return r;
        }
        assert!(
            Instant::now() < end,
            "no flow log {what}:\n{}\n{}",
            a.stdout(),
            a.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn workloads_and_services_come_from_the_api_and_follow_its_watch() {
    let dir = Dir::new();
    let pki = Pki::new();
    let token = dir.file("token", "t1\n");
    let api = KubeApi::start(&pki, 0, "t1");
    api.add_pod(&pod(
        "policy-demo",
        "access-6b687c8dcb-9qtx7",
        "access-6b687c8dcb-",
        "node-1",
        "10.244.1.5",
        json!({"run": "access", "projectcalico.org/namespace": "policy-demo"}),
    ));
    api.add_pod(&pod(
        "policy-demo",
        "nginx-86c57db685-x2k4p",
        "nginx-86c57db685-",
        "node-2",
        "10.244.2.9",
        json!({"app": "nginx"}),
    ));
    api.add_object(
        "services",
        &json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "nginx", "namespace": "policy-demo"},
            "spec": {"clusterIP": "10.96.0.80", "clusterIPs": ["10.96.0.80"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})
        .to_string(),
    );
    api.add_object(
        "endpointslices",
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "nginx-7xk2p", "namespace": "policy-demo",
                         "labels": {"kubernetes.io/service-name": "nginx"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.2.9"], "conditions": {"ready": true},
                           "nodeName": "node-2",
                           "targetRef": {"kind": "Pod", "name": "nginx-86c57db685-x2k4p", "namespace": "policy-demo"}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
        .to_string(),
    );
    let port = free_port();
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name tcp\n    listen 127.0.0.1\n    port {port}\n    tag ct\n\
         [FILTER]\n    name flow_aggregate\n    match ct\n    flush_interval 1s\n    flush_jitter_percent 0\n\
         \x20   kubernetes on\n    kube_url https://localhost:{}\n    kube_ca_file {}\n    kube_token_file {}\n\
         \x20   node_name node-1\n    include_service on\n    include_labels on\n\
         [OUTPUT]\n    name stdout\n    match flowlogs\n    format json_lines\n    json_date_key false\n",
        api.port,
        pki.path("ca.pem"),
        token.display()
    );
    let mut a = Agent::start(&conf);
    a.wait_log(
        "Kubernetes API listed: 2 pods, 1 services, 1 endpointslices",
        T,
    );
    let mut ct = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // The local pod to the service's cluster IP, DNAT'd to the nginx pod.
    ct.write_all(destroy("10.244.1.5", 40000, "10.96.0.80", 80, ("10.244.2.9", 8080)).as_bytes())
        .unwrap();
    let r = wait_flow(&a, "to the service", |r| r["dest_port"] == 8080);
    assert_eq!(r["reporter"], "src", "the pod on node_name is local: {r}");
    assert_eq!(r["source_name_aggr"], "access-6b687c8dcb-*");
    assert_eq!(r["source_namespace"], "policy-demo");
    assert_eq!(
        r["source_labels"]["labels"],
        json!(["run=access"]),
        "Calico's own labels are left out"
    );
    assert_eq!(r["dest_name_aggr"], "nginx-86c57db685-*");
    assert_eq!(r["dest_type"], "wep");
    assert_eq!(
        [
            &r["dest_service_namespace"],
            &r["dest_service_name"],
            &r["dest_service_port"],
            &r["dest_service_port_num"]
        ],
        [
            &json!("policy-demo"),
            &json!("nginx"),
            &json!("http"),
            &json!(80)
        ]
    );
    assert_eq!(
        (&r["bytes_out"], &r["bytes_in"]),
        (&json!(500), &json!(4000))
    );

    // The watch: a new pod on this node, the nginx pod gone.
    api.add_pod(&pod(
        "shop",
        "web-0",
        "web-",
        "node-1",
        "10.244.1.6",
        json!({"app": "web"}),
    ));
    api.delete_object("pods", "policy-demo", "nginx-86c57db685-x2k4p");
    // The table is rebuilt at most once a second: give it that.
    std::thread::sleep(Duration::from_millis(1500));
    ct.write_all(
        destroy(
            "10.244.1.6",
            40001,
            "10.244.2.9",
            8080,
            ("10.244.2.9", 8080),
        )
        .as_bytes(),
    )
    .unwrap();
    let r = wait_flow(&a, "from the new pod", |r| r["source_namespace"] == "shop");
    assert_eq!(r["source_name_aggr"], "web-*");
    assert_eq!(r["reporter"], "src");
    assert_eq!(
        (&r["dest_type"], &r["dest_name_aggr"]),
        (&json!("net"), &json!("pvt")),
        "the deleted pod's address is no workload now: {r}"
    );
    assert_eq!(
        r["dest_service_name"], "nginx",
        "the endpoint slice still lists the address"
    );

    // 410 Gone: the watches list again.
    let lists = |a: &KubeApi| {
        a.requests()
            .iter()
            .filter(|(p, _)| p.starts_with("/api/v1/pods?limit="))
            .count()
    };
    let before = lists(&api);
    api.push_event(r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}}"#);
    let end = Instant::now() + T;
    while lists(&api) == before {
        assert!(
            Instant::now() < end,
            "no list after 410: {:?}",
            api.requests()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        api.requests().iter().all(|(_, auth)| auth == "Bearer t1"),
        "every request carries the token"
    );
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}

/// A wrong token: the API answers 401, the agent says so and what to check, and flow
/// logs still come (with unknown workloads) instead of stopping.
#[test]
fn an_api_that_refuses_is_logged_and_flows_go_on() {
    let dir = Dir::new();
    let pki = Pki::new();
    let token = dir.file("token", "wrong\n");
    let api = KubeApi::start(&pki, 0, "t1");
    let port = free_port();
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name tcp\n    listen 127.0.0.1\n    port {port}\n    tag ct\n\
         [FILTER]\n    name flow_aggregate\n    match ct\n    flush_interval 1s\n    flush_jitter_percent 0\n\
         \x20   kubernetes on\n    kube_url https://localhost:{}\n    kube_ca_file {}\n    kube_token_file {}\n\
         [OUTPUT]\n    name stdout\n    match flowlogs\n    format json_lines\n    json_date_key false\n",
        api.port,
        pki.path("ca.pem"),
        token.display()
    );
    let mut a = Agent::start(&conf);
    a.wait_log("cannot list pods: ", T);
    assert!(a.stderr().contains("401"), "{}", a.stderr());
    let mut ct = TcpStream::connect(("127.0.0.1", port)).unwrap();
    ct.write_all(destroy("10.244.1.5", 40000, "10.244.2.9", 80, ("10.244.2.9", 80)).as_bytes())
        .unwrap();
    let r = wait_flow(&a, "without the API", |r| r["dest_port"] == 80);
    assert_eq!(r["source_name_aggr"], "pvt");
    a.stop(T);
}
