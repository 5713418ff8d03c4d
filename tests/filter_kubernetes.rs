//! The `kubernetes` filter. Against Fluent Bit 5.1.1: every case in
//! tests/data/fluent-bit/kubernetes (tail of container logs, pods from
//! `kube_meta_preload_cache_dir`) must print exactly Fluent Bit's bytes. Against a
//! stand-in API server speaking the real wire format (TLS with a test CA, bearer token,
//! Pod objects, list + chunked watch): the same records, and the failure paths (API
//! down then up, token rotation, 410 Gone).

mod common;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kube_api::KubeApi;
use common::pki::Pki;
use common::*;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/fluent-bit/kubernetes"
);
const WEB_APP: &str = "web-7d4b9c5f8-x2k4p_prod_app-3f6b1c2d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcdef.log";
const API_LOG: &str = "api-5f9c8-abcde_staging_api-c1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd003.log";

#[test]
fn every_captured_case_prints_fluent_bits_records() {
    let n = run_oracle_cases(Path::new(DATA));
    assert!(n >= 14, "only {n} cases");
}

fn data(path: &str) -> String {
    std::fs::read_to_string(Path::new(DATA).join(path)).unwrap()
}

/// A temp dir with `containers/` (logs are copied there), the token file and the CA.
struct Node {
    dir: Dir,
    pki: Pki,
}

impl Node {
    fn new(token: &str) -> Node {
        let dir = Dir::new();
        dir.file("token", &format!("{token}\n"));
        std::fs::create_dir_all(dir.path().join("containers")).unwrap();
        Node {
            dir,
            pki: Pki::new(),
        }
    }

    fn containers(&self) -> PathBuf {
        self.dir.path().join("containers")
    }

    /// Appends `text` to the container log `name`.
    fn log(&self, name: &str, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.containers().join(name))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// tail of `containers/*.log` -> kubernetes (`filter` lines added) -> json_lines.
    fn conf(&self, port: u16, filter: &str) -> String {
        let containers = self.containers();
        // tail's tag: the path with '/' as '.', repeated dots collapsed (as Fluent Bit).
        let mut prefix = format!("kube.{}.", containers.to_str().unwrap().replace('/', "."));
        while prefix.contains("..") {
            prefix = prefix.replace("..", ".");
        }
        format!(
            "[SERVICE]\n    flush 0.2\n    parsers_file {DATA}/parsers.conf\n\
             [INPUT]\n    name tail\n    tag kube.*\n    path {}/*.log\n    parser json\n    read_from_head true\n    refresh_interval 1\n\
             [FILTER]\n    name kubernetes\n    match kube.*\n    kube_tag_prefix {prefix}\n    kube_url https://localhost:{port}\n    kube_ca_file {}\n    kube_token_file {}\n{filter}\
             [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
            containers.display(),
            self.pki.path("ca.pem"),
            self.dir.path().join("token").display(),
        )
    }
}

fn api_with_pods(node: &Node, port: u16, token: &str) -> KubeApi {
    let api = KubeApi::start(&node.pki, port, token);
    for pod in [
        "prod_web-7d4b9c5f8-x2k4p",
        "prod_quiet-0",
        "staging_api-5f9c8-abcde",
    ] {
        api.add_pod(&data(&format!("meta/{pod}.meta")));
    }
    api.add_namespace(&data("meta/prod.namespace_meta"));
    api
}

#[test]
fn pods_from_the_api_server_give_fluent_bits_records() {
    let node = Node::new("t1");
    let api = api_with_pods(&node, 0, "t1");
    node.log(WEB_APP, &data(&format!("containers/{WEB_APP}")));
    let mut agent = Agent::start(&node.conf(api.port, "    merge_log on\n"));
    agent.wait_lines(7, Duration::from_secs(15));
    let out = agent.stop(Duration::from_secs(10));
    // The same pod as the preload case: the same bytes as Fluent Bit's.
    assert_eq!(out.stdout, data("merge_log.expected"), "{}", out.stderr);
    let gets: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|(p, _)| p == "/api/v1/namespaces/prod/pods/web-7d4b9c5f8-x2k4p")
        .collect();
    assert_eq!(gets.len(), 1, "one GET, then the cache: {gets:?}");
    assert_eq!(gets[0].1, "Bearer t1");
}

/// `kube_token_command`'s output is the token (the token file, refused by the API
/// here, is not read); a command that fails is logged with its exit status and stderr.
#[test]
fn a_token_command_gives_the_token() {
    let node = Node::new("from-the-file");
    let api = api_with_pods(&node, 0, "from-the-command");
    node.log(WEB_APP, &data(&format!("containers/{WEB_APP}")));
    let mut agent = Agent::start(&node.conf(
        api.port,
        "    merge_log on\n    kube_token_command printf 'from-the-command\\n'\n",
    ));
    agent.wait_lines(7, Duration::from_secs(15));
    let out = agent.stop(Duration::from_secs(10));
    assert_eq!(out.stdout, data("merge_log.expected"), "{}", out.stderr);
    assert!(api
        .requests()
        .iter()
        .all(|(_, auth)| auth == "Bearer from-the-command"));

    let mut agent = Agent::start(&node.conf(
        api.port,
        "    kube_token_command echo no token here >&2; exit 3\n",
    ));
    agent.wait_log(
        "cannot get a token from kube_token_command 'echo no token here >&2; exit 3': it exited with exit status: 3: no token here; requests go without a token",
        Duration::from_secs(15),
    );
    agent.stop(Duration::from_secs(10));
}

#[test]
fn namespace_metadata_comes_from_the_api_server() {
    let node = Node::new("t1");
    let api = api_with_pods(&node, 0, "t1");
    node.log(WEB_APP, &data(&format!("containers/{WEB_APP}")));
    // In a pod: the service account's namespace file exists, HOSTNAME is the pod.
    let ns_file = node.dir.file("namespace", "prod\n");
    let filter = format!(
        "    namespace_labels on\n    namespace_annotations on\n    labels off\n    annotations off\n    kube_namespace_file {}\n",
        ns_file.display()
    );
    let mut agent = Agent::start_with_env(
        &node.conf(api.port, &filter),
        &[("HOSTNAME", "web-7d4b9c5f8-x2k4p")],
    );
    agent.wait_lines(7, Duration::from_secs(15));
    let out = agent.stop(Duration::from_secs(10));
    assert_eq!(out.stdout, data("namespace.expected"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("[filter:kubernetes:kubernetes.0] connectivity OK"),
        "{}",
        out.stderr
    );
    api.wait_request(Duration::from_secs(1), "for the namespace", |p, _| {
        p == "/api/v1/namespaces/prod"
    });
}

#[test]
fn records_flow_while_the_api_server_is_down_and_get_metadata_once_it_is_up() {
    let node = Node::new("t1");
    let port = free_port();
    let line = |n: usize| {
        format!(
            "{{\"log\":\"line {n}\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-30T10:01:00Z\"}}\n"
        )
    };
    node.log(WEB_APP, &line(0));
    let mut agent = Agent::start(&node.conf(port, ""));
    agent.wait_lines(1, Duration::from_secs(10));
    let first = agent.stdout();
    assert!(
        first.starts_with("{\"log\":\"line 0\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-30T10:01:00Z\",\"kubernetes\":{\"pod_name\":\"web-7d4b9c5f8-x2k4p\",\"namespace_name\":\"prod\",\"container_name\":\"app\",\"docker_id\":\"3f6b1c2d"),
        "the tag's names while the API is down: {first}"
    );
    agent.wait_log(
        "cannot get pod prod/web-7d4b9c5f8-x2k4p",
        Duration::from_secs(5),
    );
    // More lines while down: they pass at once (no wait while backing off).
    for n in 1..4 {
        node.log(WEB_APP, &line(n));
    }
    agent.wait_lines(4, Duration::from_secs(10));
    let _api = api_with_pods(&node, port, "t1");
    let n = std::cell::Cell::new(4);
    agent.wait_until(
        Duration::from_secs(20),
        "metadata after the API came up",
        |out, _| {
            if !out.contains("\"pod_id\":\"7a1e3c52") {
                node.log(WEB_APP, &line(n.get()));
                n.set(n.get() + 1);
                std::thread::sleep(Duration::from_millis(200));
                return false;
            }
            true
        },
    );
    let out = agent.stop(Duration::from_secs(10));
    let errors = out
        .stderr
        .matches("cannot get pod prod/web-7d4b9c5f8-x2k4p")
        .count();
    assert_eq!(errors, 1, "logged once per change of error: {}", out.stderr);
    assert!(
        out.stderr
            .contains("check kube_url and that the API server is reachable"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Kubernetes API reachable again"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_rotated_token_is_read_again_after_a_401() {
    let node = Node::new("t1");
    let api = api_with_pods(&node, 0, "t1");
    node.log(WEB_APP, &data(&format!("containers/{WEB_APP}")));
    let mut agent = Agent::start(&node.conf(api.port, ""));
    agent.wait_lines(7, Duration::from_secs(15));
    // The kubelet rotates the projected token: the old one is refused from now on.
    api.set_tokens(&["t2"]);
    node.dir.file("token", "t2\n");
    node.log(API_LOG, &data(&format!("containers/{API_LOG}")));
    agent.wait_lines(10, Duration::from_secs(15));
    let out = agent.stop(Duration::from_secs(10));
    let staging: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("\"namespace_name\":\"staging\""))
        .collect();
    assert_eq!(staging.len(), 3, "{}", out.stdout);
    assert!(
        staging.iter().all(|l| l.contains("\"pod_id\":\"9c3a5e74")),
        "{}",
        out.stdout
    );
    let auth: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|(p, _)| p.ends_with("/pods/api-5f9c8-abcde"))
        .map(|(_, a)| a)
        .collect();
    assert_eq!(auth, ["Bearer t1", "Bearer t2"], "401, then the new token");
}

#[test]
fn the_nodes_pods_are_listed_and_watched_when_node_name_is_set() {
    let node = Node::new("t1");
    let api = api_with_pods(&node, 0, "t1");
    node.log(WEB_APP, "{\"log\":\"first\\n\",\"stream\":\"stdout\"}\n");
    let mut agent = Agent::start_with_env(&node.conf(api.port, ""), &[("NODE_NAME", "node-a")]);
    api.wait_request(Duration::from_secs(10), "listing node-a's pods", |p, _| {
        p.starts_with("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&limit=")
    });
    let watching = std::time::Instant::now();
    while api.watchers() == 0 {
        assert!(
            watching.elapsed() < Duration::from_secs(10),
            "no watch: {:?}",
            api.requests()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A pod created after the start: the watch brings it before its first line.
    let late = data("meta/prod_quiet-0.meta")
        .replace("\"quiet-0\"", "\"late-1\"")
        .replace(
            "8b2f4d63-7a1f-4e3c-8b9d-2c3d4e5f6071",
            "11111111-late-4e3c-8b9d-2c3d4e5f6071",
        )
        .replace("fluentbit.io/exclude", "note");
    api.add_pod(&late);
    std::thread::sleep(Duration::from_millis(300));
    let late_log =
        "late-1_prod_main-b1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd002.log";
    node.log(late_log, "{\"log\":\"hello\\n\",\"stream\":\"stdout\"}\n");
    agent.wait_lines(2, Duration::from_secs(10));
    assert!(
        agent.stdout().contains("\"pod_id\":\"11111111-late-"),
        "{}",
        agent.stdout()
    );
    // 410 Gone: the watch's version is too old; the agent lists again.
    let lists = |api: &KubeApi| {
        api.requests()
            .iter()
            .filter(|(p, _)| p.contains("&limit="))
            .count()
    };
    assert_eq!(lists(&api), 1);
    api.push_event("{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource version: 1 (2)\",\"reason\":\"Expired\",\"code\":410}}");
    api.wait_request(
        Duration::from_secs(10),
        "a second list after 410",
        |_, _| lists(&api) >= 2,
    );
    let out = agent.stop(Duration::from_secs(10));
    let gets = api
        .requests()
        .iter()
        .filter(|(p, _)| p.contains("/pods/late-1"))
        .count();
    assert_eq!(gets, 0, "no GET for a watched pod: {:?}", api.requests());
    assert!(
        out.stdout.contains("\"container_image\":\"quiet:2\""),
        "{}",
        out.stdout
    );
}

#[test]
fn use_kubelet_reads_the_kubelets_pods() {
    let node = Node::new("t1");
    let api = api_with_pods(&node, 0, "t1");
    node.log(WEB_APP, &data(&format!("containers/{WEB_APP}")));
    let conf = node.conf(
        1,
        &format!("    use_kubelet on\n    kubelet_host localhost\n    kubelet_port {}\n    merge_log on\n", api.port),
    );
    let mut agent = Agent::start(&conf);
    agent.wait_lines(7, Duration::from_secs(15));
    let out = agent.stop(Duration::from_secs(10));
    assert_eq!(out.stdout, data("merge_log.expected"), "{}", out.stderr);
    let paths: Vec<String> = api.requests().into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["/pods"], "one /pods answers every pod of the node");
}

const HEAD: &str = "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    samples 1\n[FILTER]\n    name kubernetes\n    match *\n";

fn config_error(filter: &str) -> Vec<String> {
    refused_config(&format!(
        "{HEAD}{filter}[OUTPUT]\n    name stdout\n    match *\n"
    ))
}

#[test]
fn unbuilt_features_and_bad_values_are_refused_at_their_line() {
    let l = config_error("    aws_use_pod_association on\n");
    assert!(
        l[0].contains("fluent-bit.conf:9:")
            && l[0].contains("'aws_use_pod_association' is not supported yet"),
        "{l:?}"
    );
    let l = config_error("    kube_url ftp://api:443\n");
    assert!(
        l[0].contains("fluent-bit.conf:9:") && l[0].contains("kube_url"),
        "{l:?}"
    );
    let l = config_error("    merge_parser nope\n");
    assert!(
        l[0].contains("fluent-bit.conf:9:") && l[0].contains("nope"),
        "{l:?}"
    );
    let l = config_error("    tls.debug 7\n");
    assert!(
        l[0].contains("fluent-bit.conf:9:") && l[0].contains("tls.debug"),
        "{l:?}"
    );
}

/// Fluent Bit itself against the stand-in API server prints the bytes pinned from its
/// preload-dir run: the stand-in speaks what Fluent Bit expects of a real API server.
/// Needs a Fluent Bit with the kubernetes filter: FLUENT_BIT=/path/to/fluent-bit.
#[test]
#[ignore]
fn fluent_bit_against_the_stand_in_prints_the_pinned_bytes() {
    let Ok(fb) = std::env::var("FLUENT_BIT") else {
        panic!("set FLUENT_BIT to a fluent-bit binary");
    };
    let node = Node::new("t1");
    let api = api_with_pods(&node, 0, "t1");
    node.log(WEB_APP, &data(&format!("containers/{WEB_APP}")));
    let conf = node.conf(api.port, "    merge_log on\n").replace(
        "refresh_interval 1\n",
        "refresh_interval 1\n    exit_on_eof true\n",
    );
    let conf = node.dir.file("fb.conf", &conf);
    let out = std::process::Command::new(fb)
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        data("merge_log.expected"),
        "{stderr}"
    );
    let gets: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|(p, _)| p == "/api/v1/namespaces/prod/pods/web-7d4b9c5f8-x2k4p")
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].1, "Bearer t1");
}

#[test]
fn dummy_meta_adds_the_time_under_dummy() {
    let d = Dir::new();
    d.file("fluent-bit.conf", &format!("{HEAD}    dummy_meta on\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"));
    let mut a = Agent::spawn_in(&d, &["-c", "fluent-bit.conf"], Some(d.path()));
    a.wait_lines(1, Duration::from_secs(10));
    let out = a.stop(Duration::from_secs(5));
    let line = out.stdout.lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let t = v["kubernetes"]["dummy"].as_str().unwrap();
    assert_eq!(t.len(), 24, "asctime without its newline: {t}");
    assert_eq!(v["kubernetes"].as_object().unwrap().len(), 1);
}

/// The agent's resident memory with 1,000 pods of this node in the cache (listed from
/// the stand-in, each like `meta/prod_web-*.meta`: 3 labels, 3 annotations, an owner,
/// 2 containers), against none. Prints the difference (README, src/kubernetes/mod.rs).
#[test]
#[ignore]
fn cache_memory_per_1000_pods() {
    fn rss_kb(pid: u32) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
    let measure = |pods: usize| -> u64 {
        let node = Node::new("t1");
        let api = KubeApi::start(&node.pki, 0, "t1");
        let web = data("meta/prod_web-7d4b9c5f8-x2k4p.meta");
        for i in 0..pods {
            api.add_pod(
                &web.replace("web-7d4b9c5f8-x2k4p", &format!("web-7d4b9c5f8-{i:05}"))
                    .replace(
                        "7a1e3c52-6f0e-4d2b-9a8c-1b2c3d4e5f60",
                        &format!("7a1e3c52-6f0e-4d2b-9a8c-{i:012}"),
                    ),
            );
        }
        node.log(WEB_APP, "{\"log\":\"x\\n\",\"stream\":\"stdout\"}\n");
        let mut agent = Agent::start_with_env(&node.conf(api.port, ""), &[("NODE_NAME", "node-a")]);
        agent.wait_lines(1, Duration::from_secs(20));
        let t = std::time::Instant::now();
        while api.watchers() == 0 {
            assert!(t.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(50));
        }
        // jemalloc returns freed pages after ~10 s: measure what stays.
        std::thread::sleep(Duration::from_secs(12));
        let rss = rss_kb(agent.pid());
        agent.stop(Duration::from_secs(10));
        rss
    };
    let (none, thousand) = (measure(0), measure(1000));
    println!(
        "RSS with 0 pods: {none} kB, with 1000 pods: {thousand} kB, per 1000 pods: {} kB",
        thousand.saturating_sub(none)
    );
}
