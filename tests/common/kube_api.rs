//! A stand-in Kubernetes API server (and kubelet) on a loopback socket, speaking the
//! real wire format: HTTP/1.1 over TLS with a test CA, `Authorization: Bearer` checked
//! (401 with a `Status` object otherwise), Pod and Namespace objects as the API server
//! returns them, `PodList`s with `metadata.resourceVersion`, and watches as chunked
//! streams of `{"type":..,"object":..}` lines (ADDED, DELETED, BOOKMARK, ERROR 410).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_rustls::rustls;

use super::pki::Pki;

#[derive(Default)]
struct State {
    /// `namespace/name` -> Pod object (JSON text).
    pods: HashMap<String, String>,
    namespaces: HashMap<String, String>,
    /// The tokens accepted now.
    tokens: Vec<String>,
    /// Every request: (path, Authorization header).
    requests: Vec<(String, String)>,
    /// Other kinds (`services`, `endpoints`): resource -> `namespace/name` -> object.
    others: HashMap<String, HashMap<String, String>>,
    /// Open watches and their resource: each gets the events of its kind.
    watchers: Vec<(String, mpsc::Sender<String>)>,
    resource_version: u64,
}

pub struct KubeApi {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl KubeApi {
    /// Serves on 127.0.0.1:`port` (0: any) over TLS with `pki`'s server certificate
    /// (for `localhost`), accepting `token`.
    pub fn start(pki: &Pki, port: u16, token: &str) -> KubeApi {
        let listener =
            TcpListener::bind(("127.0.0.1", port)).expect("bind the stand-in API server");
        let port = listener.local_addr().unwrap().port();
        let tls = pki.server_config();
        let state = Arc::new(Mutex::new(State {
            tokens: vec![token.to_string()],
            resource_version: 1000,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        listener.set_nonblocking(true).unwrap();
        {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let (state, tls, stop) = (state.clone(), tls.clone(), stop.clone());
                            std::thread::spawn(move || {
                                let _ = s.set_nonblocking(false);
                                let conn = rustls::ServerConnection::new(tls).unwrap();
                                let stream = rustls::StreamOwned::new(conn, s);
                                serve(stream, &state, &stop);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        KubeApi { port, state, stop }
    }

    /// Adds (or replaces) a Pod object; open watches get an ADDED event.
    pub fn add_pod(&self, pod_json: &str) {
        let v: serde_json::Value = serde_json::from_str(pod_json).unwrap();
        let key = format!(
            "{}/{}",
            v["metadata"]["namespace"].as_str().unwrap(),
            v["metadata"]["name"].as_str().unwrap()
        );
        let mut st = self.state.lock().unwrap();
        st.resource_version += 1;
        let text = with_version(pod_json, st.resource_version);
        st.pods.insert(key, text.clone());
        let line = format!("{{\"type\":\"ADDED\",\"object\":{text}}}\n");
        send(&mut st, "pods", &line);
    }

    /// Adds (or replaces) an object of another kind (`services`, `endpoints`,
    /// `endpointslices`); its
    /// watches get an ADDED (or MODIFIED) event.
    pub fn add_object(&self, resource: &str, json: &str) {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let key = format!(
            "{}/{}",
            v["metadata"]["namespace"].as_str().unwrap(),
            v["metadata"]["name"].as_str().unwrap()
        );
        let mut st = self.state.lock().unwrap();
        st.resource_version += 1;
        let text = with_version(json, st.resource_version);
        let old = st
            .others
            .entry(resource.to_string())
            .or_default()
            .insert(key, text.clone());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        let line = format!("{{\"type\":\"{kind}\",\"object\":{text}}}\n");
        send(&mut st, resource, &line);
    }

    /// Deletes a pod (`resource` "pods") or another object; its watches get DELETED.
    pub fn delete_object(&self, resource: &str, ns: &str, name: &str) {
        let key = format!("{ns}/{name}");
        let mut st = self.state.lock().unwrap();
        let old = if resource == "pods" {
            st.pods.remove(&key)
        } else {
            st.others.get_mut(resource).and_then(|m| m.remove(&key))
        };
        if let Some(text) = old {
            st.resource_version += 1;
            let line = format!("{{\"type\":\"DELETED\",\"object\":{text}}}\n");
            send(&mut st, resource, &line);
        }
    }

    pub fn add_namespace(&self, ns_json: &str) {
        let v: serde_json::Value = serde_json::from_str(ns_json).unwrap();
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        self.state
            .lock()
            .unwrap()
            .namespaces
            .insert(name, ns_json.to_string());
    }

    /// Sends a raw event line to every open watch (e.g. an ERROR 410).
    pub fn push_event(&self, line: &str) {
        let mut st = self.state.lock().unwrap();
        st.watchers
            .retain(|(_, w)| w.send(format!("{line}\n")).is_ok());
    }

    /// Replaces the accepted tokens (a rotation: the old one now gets 401).
    pub fn set_tokens(&self, tokens: &[&str]) {
        self.state.lock().unwrap().tokens = tokens.iter().map(|t| t.to_string()).collect();
    }

    /// Every request so far: (path, Authorization header).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn watchers(&self) -> usize {
        let mut st = self.state.lock().unwrap();
        st.watchers.retain(|(_, w)| w.send(String::new()).is_ok());
        st.watchers.len()
    }

    /// Waits until some request satisfies `f`.
    pub fn wait_request(&self, timeout: Duration, what: &str, f: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.requests().iter().any(|(p, a)| f(p, a)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no request {what}; requests: {:?}", self.requests());
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.state.lock().unwrap().watchers.clear();
    }
}

/// The page a list request asks for, as the API server gives them: `limit` items from
/// the `continue` token on; (from, to, the `continue` field of the list, if more).
fn page(query: &str, len: usize) -> (usize, usize, String) {
    let arg = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let from = arg("continue=").unwrap_or(0).min(len);
    let to = arg("limit=").map_or(len, |l| (from + l).min(len));
    let next = if to < len {
        format!(",\"continue\":\"{to}\"")
    } else {
        String::new()
    };
    (from, to, next)
}

/// Sends an event line to the open watches of `resource`.
fn send(st: &mut State, resource: &str, line: &str) {
    st.watchers
        .retain(|(r, w)| r != resource || w.send(line.to_string()).is_ok());
}

/// Sets `metadata.resourceVersion` (the API server stamps every object).
fn with_version(pod_json: &str, rv: u64) -> String {
    let mut v: serde_json::Value = serde_json::from_str(pod_json).unwrap();
    v["metadata"]["resourceVersion"] = serde_json::Value::String(rv.to_string());
    serde_json::to_string(&v).unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> String {
    format!(
        "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"{message}\",\"reason\":\"{reason}\",\"code\":{code}}}"
    )
}

fn respond<S: Write>(s: &mut S, code: u16, body: &str) {
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    let _ = write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

fn serve<S: Read + Write>(stream: S, state: &Arc<Mutex<State>>, stop: &AtomicBool) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = v.trim().to_string();
            }
        }
    }
    let mut st = state.lock().unwrap();
    st.requests.push((path.clone(), auth.clone()));
    let authorized = st.tokens.iter().any(|t| auth == format!("Bearer {t}"));
    let s = r.get_mut();
    if !authorized {
        drop(st);
        return respond(s, 401, &status(401, "Unauthorized", "Unauthorized"));
    }
    let (route, query) = path.split_once('?').unwrap_or((&path, ""));
    let parts: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name] => {
            match st.pods.get(&format!("{ns}/{name}")).cloned() {
                Some(p) => {
                    drop(st);
                    respond(s, 200, &p)
                }
                None => {
                    drop(st);
                    respond(
                        s,
                        404,
                        &status(404, "NotFound", &format!("pods \\\"{name}\\\" not found")),
                    )
                }
            }
        }
        ["api", "v1", "namespaces", ns] => match st.namespaces.get(*ns).cloned() {
            Some(n) => {
                drop(st);
                respond(s, 200, &n)
            }
            None => {
                drop(st);
                respond(s, 404, &status(404, "NotFound", "namespace not found"))
            }
        },
        ["api", "v1", "pods"] | ["pods"] if !query.contains("watch=1") => {
            let node = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("fieldSelector="))
                .map(|v| v.replace("%3D", "=").replace("%3d", "="))
                .and_then(|v| v.strip_prefix("spec.nodeName=").map(String::from));
            let mut keys: Vec<&String> = st
                .pods
                .iter()
                .filter(|(_, p)| match &node {
                    Some(n) => p.contains(&format!("\"nodeName\":\"{n}\"")),
                    None => true,
                })
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            let (from, to, next) = page(query, keys.len());
            let body = format!(
                "{{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"{}\"{next}}},\"items\":[{}]}}",
                st.resource_version,
                keys[from..to].iter().map(|k| st.pods[*k].as_str()).collect::<Vec<_>>().join(",")
            );
            drop(st);
            respond(s, 200, &body)
        }
        ["api", "v1", res @ ("services" | "endpoints")]
        | ["apis", "discovery.k8s.io", "v1", res @ "endpointslices"]
            if !query.contains("watch=1") =>
        {
            let mut all: Vec<(&String, &String)> = st
                .others
                .get(*res)
                .map(|m| m.iter().collect())
                .unwrap_or_default();
            all.sort();
            let (from, to, next) = page(query, all.len());
            let items: Vec<String> = all[from..to].iter().map(|(_, v)| (*v).clone()).collect();
            let kind = if *res == "services" {
                "ServiceList"
            } else {
                "EndpointsList"
            };
            let body = format!(
                "{{\"kind\":\"{kind}\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"{}\"{next}}},\"items\":[{}]}}",
                st.resource_version,
                items.join(",")
            );
            drop(st);
            respond(s, 200, &body)
        }
        ["api", "v1", res @ ("pods" | "services" | "endpoints")]
        | ["apis", "discovery.k8s.io", "v1", res @ "endpointslices"] => {
            let (tx, rx) = mpsc::channel::<String>();
            st.watchers.push((res.to_string(), tx));
            drop(st);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let _ = s.flush();
            while !stop.load(Ordering::Relaxed) {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(ev) if ev.is_empty() => {}
                    Ok(ev) => {
                        if write!(s, "{:x}\r\n{ev}\r\n", ev.len()).is_err() || s.flush().is_err() {
                            return;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            let _ = write!(s, "0\r\n\r\n");
            let _ = s.flush();
        }
        _ => {
            drop(st);
            respond(
                s,
                404,
                &status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            )
        }
    }
}
