//! The cache's worker: a thread of its own with a single-threaded runtime, so lookups
//! from any runtime (or none) can wait on it. It answers lookups one request at a time
//! (as Fluent Bit does), and with the node's name, keeps the node's pods current by
//! list + watch (`410 Gone` → list again; errors back off).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::client::{ApiError, Client, ClientConf};
use super::pod::{parse_json, Namespace, Pod};
use super::watch;
use super::{evict, PodKey, Shared, Slot, Source, NOT_FOUND_RETRY};
use crate::event::{Map, Str, Value};

pub(super) enum Req {
    Pod(Str, Str),
    /// The agent's own pod, at start: logs whether the API answers (Fluent Bit's
    /// "testing connectivity with API server").
    Probe(Str, Str),
    Namespace(Str),
}

/// Dropping it (with the cache) closes the channel: the worker then ends.
pub(super) struct Handle {
    tx: mpsc::UnboundedSender<Req>,
}

impl Handle {
    pub(super) fn send(&self, req: Req) -> bool {
        self.tx.send(req).is_ok()
    }
}

pub(super) fn spawn(shared: Weak<Shared>) -> Handle {
    let (tx, rx) = mpsc::unbounded_channel();
    crate::runtime::spawn(
        "kube-meta",
        "[filter:kubernetes] metadata worker",
        move || run(shared, rx),
    );
    Handle { tx }
}

async fn run(shared: Weak<Shared>, mut rx: mpsc::UnboundedReceiver<Req>) {
    let Some(source) = shared.upgrade().map(|s| s.conf.source.clone()) else {
        return;
    };
    let (mut pods_client, mut ns_client, kubelet) = match source {
        Source::None => return,
        Source::Api { conf, node_name } => {
            if let Some(node) = node_name {
                let c = watch::Collection {
                    path: "/api/v1/pods".into(),
                    selector: Some(format!(
                        "fieldSelector={}",
                        enc(&format!("spec.nodeName={node}"))
                    )),
                    page: 100,
                    // A page of 100 pods may be 100 times a pod's size.
                    body_limit: conf.buffer_size * 100,
                    what: format!("the pods of node {node}"),
                };
                let w = NodePods {
                    shared: shared.clone(),
                    conf: conf.clone(),
                };
                tokio::spawn(watch::list_watch(w, conf.clone(), c));
            }
            (Client::new(conf.clone()), Client::new(conf), false)
        }
        Source::Kubelet { conf, api } => (Client::new(conf), Client::new(api), true),
    };
    while let Some(req) = rx.recv().await {
        let Some(sh) = shared.upgrade() else { return };
        match req {
            Req::Pod(ns, name) => {
                if kubelet {
                    fetch_kubelet(&sh, &mut pods_client, &ns, &name).await;
                } else {
                    fetch_pod(&sh, &mut pods_client, &ns, &name).await;
                }
            }
            Req::Namespace(ns) => fetch_namespace(&sh, &mut ns_client, &ns).await,
            Req::Probe(ns, name) => {
                let path = format!("/api/v1/namespaces/{}/pods/{}", enc(&ns), enc(&name));
                sh.stats.requests.fetch_add(1, Ordering::Relaxed);
                match ns_client.get(&path).await {
                    Ok(_) => crate::info!("[filter:kubernetes:{}] connectivity OK", sh.conf.name),
                    Err(e) => {
                        let mut st = sh.lock();
                        let what =
                            format!("testing connectivity with the API server (pod {ns}/{name})");
                        health_failed(&sh, &mut st.health, &what, &e, ns_client.conf());
                    }
                }
            }
        }
    }
}

/// Percent-encodes a path segment or query value (names are DNS labels, but the tag
/// comes from file names a user controls).
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn fetch_pod(sh: &Shared, client: &mut Client, ns: &str, name: &str) {
    let path = format!("/api/v1/namespaces/{}/pods/{}", enc(ns), enc(name));
    sh.stats.requests.fetch_add(1, Ordering::Relaxed);
    let result = client.get(&path).await;
    let key = PodKey {
        namespace: Str::from(ns),
        name: Str::from(name),
    };
    let now = Instant::now();
    let mut st = sh.lock();
    match result {
        Ok(body) => {
            let pod = parse_json(&body).and_then(|m| Pod::from_object(&m));
            match pod {
                Some(pod) => {
                    health_ok(sh, &mut st.health);
                    let slot = st.pods.entry(key).or_insert_with(|| Slot::new(now));
                    slot.value = Some(Arc::new(pod));
                    slot.fetched = now;
                    slot.pending = false;
                    slot.retry_after = None;
                }
                None => {
                    let e = ApiError::BadBody("not a Pod object".into());
                    let retry = health_failed(
                        sh,
                        &mut st.health,
                        &format!("cannot get pod {ns}/{name}"),
                        &e,
                        client.conf(),
                    );
                    settle_pod(&mut st.pods, &key, Some(retry));
                }
            }
        }
        Err(ApiError::Status(404, _)) => {
            health_ok(sh, &mut st.health);
            crate::debug!("[filter:kubernetes] pod {ns}/{name} not found by the API server");
            settle_pod(&mut st.pods, &key, Some(now + NOT_FOUND_RETRY));
        }
        Err(e) => {
            let retry = health_failed(
                sh,
                &mut st.health,
                &format!("cannot get pod {ns}/{name}"),
                &e,
                client.conf(),
            );
            settle_pod(&mut st.pods, &key, Some(retry));
        }
    }
    evict(&mut st.pods, sh.conf.max_pods, now);
    sh.stats.pods.store(st.pods.len() as u64, Ordering::Relaxed);
    drop(st);
    sh.answered.notify_all();
}

fn settle_pod(
    pods: &mut std::collections::HashMap<PodKey, Slot<Pod>>,
    key: &PodKey,
    retry: Option<Instant>,
) {
    if let Some(slot) = pods.get_mut(key) {
        slot.pending = false;
        slot.retry_after = retry;
    }
}

/// The kubelet's `/pods` lists every pod of the node: one request refreshes them all.
async fn fetch_kubelet(sh: &Shared, client: &mut Client, ns: &str, name: &str) {
    sh.stats.requests.fetch_add(1, Ordering::Relaxed);
    let result = client.get_limited("/pods", 0).await;
    let key = PodKey {
        namespace: Str::from(ns),
        name: Str::from(name),
    };
    let now = Instant::now();
    let mut st = sh.lock();
    match result
        .and_then(|body| items(&body).ok_or_else(|| ApiError::BadBody("not a PodList".into())))
    {
        Ok(list) => {
            health_ok(sh, &mut st.health);
            for pod in list {
                let k = PodKey {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                };
                let slot = st.pods.entry(k).or_insert_with(|| Slot::new(now));
                slot.value = Some(Arc::new(pod));
                slot.fetched = now;
                slot.pending = false;
                slot.retry_after = None;
            }
            if st
                .pods
                .get(&key)
                .is_none_or(|s| s.value.is_none() || s.pending)
            {
                settle_pod(&mut st.pods, &key, Some(now + NOT_FOUND_RETRY));
            }
        }
        Err(e) => {
            let retry = health_failed(
                sh,
                &mut st.health,
                "cannot list pods from the kubelet",
                &e,
                client.conf(),
            );
            settle_pod(&mut st.pods, &key, Some(retry));
        }
    }
    evict(&mut st.pods, sh.conf.max_pods, now);
    sh.stats.pods.store(st.pods.len() as u64, Ordering::Relaxed);
    drop(st);
    sh.answered.notify_all();
}

async fn fetch_namespace(sh: &Shared, client: &mut Client, ns: &str) {
    let path = format!("/api/v1/namespaces/{}", enc(ns));
    sh.stats.requests.fetch_add(1, Ordering::Relaxed);
    let result = client.get(&path).await;
    let key = Str::from(ns);
    let now = Instant::now();
    let mut st = sh.lock();
    let retry = match result.map(|b| parse_json(&b).and_then(|m| Namespace::from_object(&m))) {
        Ok(Some(n)) => {
            health_ok(sh, &mut st.health);
            let slot = st
                .namespaces
                .entry(key.clone())
                .or_insert_with(|| Slot::new(now));
            slot.value = Some(Arc::new(n));
            slot.fetched = now;
            None
        }
        Ok(None) => {
            let e = ApiError::BadBody("not a Namespace object".into());
            Some(health_failed(
                sh,
                &mut st.health,
                &format!("cannot get namespace {ns}"),
                &e,
                client.conf(),
            ))
        }
        Err(ApiError::Status(404, _)) => Some(now + NOT_FOUND_RETRY),
        Err(e) => Some(health_failed(
            sh,
            &mut st.health,
            &format!("cannot get namespace {ns}"),
            &e,
            client.conf(),
        )),
    };
    if let Some(slot) = st.namespaces.get_mut(&key) {
        slot.pending = false;
        slot.retry_after = retry;
    }
    evict(&mut st.namespaces, sh.conf.max_namespaces, now);
    drop(st);
    sh.answered.notify_all();
}

/// The pods of a PodList body.
fn items(body: &[u8]) -> Option<Vec<Pod>> {
    let m = parse_json(body)?;
    match m.iter().find(|(k, _)| &**k == "items")? {
        (_, Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(|i| match i {
                    Value::Map(m) => Pod::from_object(m),
                    _ => None,
                })
                .collect(),
        ),
        (_, Value::Nil) => Some(Vec::new()),
        _ => None,
    }
}

fn field<'a>(m: &'a Map, path: &[&str]) -> Option<&'a Value> {
    let (last, init) = path.split_last()?;
    let mut cur = m;
    for k in init {
        match cur.iter().find(|(kk, _)| &**kk == *k) {
            Some((_, Value::Map(inner))) => cur = inner,
            _ => return None,
        }
    }
    cur.iter().find(|(k, _)| &**k == *last).map(|(_, v)| v)
}

fn text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

/// The next delay after `failures` consecutive failures: 1 s doubling to 60 s, ±20 %
/// jitter; DNS failures first wait `dns_wait` for `dns_retries` tries (Fluent Bit
/// waits for the cluster DNS the same way).
fn backoff(failures: u32, e: &ApiError, sh: &Shared) -> Duration {
    if matches!(e, ApiError::Dns(_)) && failures <= sh.conf.dns_retries {
        return sh.conf.dns_wait;
    }
    watch::backoff(failures)
}

/// Records a success: logs the recovery once.
fn health_ok(sh: &Shared, h: &mut super::Health) {
    if h.failures > 0 {
        crate::info!(
            "[filter:kubernetes:{}] Kubernetes API reachable again after {} failed requests",
            sh.conf.name,
            h.failures
        );
    }
    *h = super::Health::default();
}

/// Records a failure: counts it, schedules the next try, and logs it when the error
/// changes (else once a minute, with how many were not logged). Returns the next try.
fn health_failed(
    sh: &Shared,
    h: &mut super::Health,
    what: &str,
    e: &ApiError,
    conf: &ClientConf,
) -> Instant {
    sh.stats.errors.fetch_add(1, Ordering::Relaxed);
    h.failures += 1;
    let now = Instant::now();
    let delay = backoff(h.failures, e, sh);
    let next = now + delay;
    h.next_try = Some(next);
    let text = e.to_string();
    let changed = h.last_error.as_deref() != Some(text.as_str());
    if changed
        || h.last_logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
    {
        let more = match h.suppressed {
            0 => String::new(),
            n => format!(" ({n} more failures since the last message)"),
        };
        crate::error!(
            "[filter:kubernetes:{}] {what}: {text} ({}); records pass with the tag's metadata, retry in {:.1}s: {}{more}",
            sh.conf.name,
            conf.url(),
            delay.as_secs_f64(),
            e.hint()
        );
        h.last_logged = Some(now);
        h.suppressed = 0;
    } else {
        h.suppressed += 1;
    }
    h.last_error = Some(text);
    next
}

/// The `kubernetes` filter's side of the watch of this node's pods: pods go into the
/// cache's slots (never evicted while watched; deleted ones kept a while so that their
/// last lines are still named), failures into its health (logged as every request's).
struct NodePods {
    shared: Weak<Shared>,
    conf: ClientConf,
}

impl NodePods {
    /// Runs `f` on the cache's slots, then wakes lookups waiting on them.
    fn update(
        &self,
        f: impl FnOnce(&mut std::collections::HashMap<PodKey, Slot<Pod>>, Instant),
    ) -> bool {
        let Some(sh) = self.shared.upgrade() else {
            return false;
        };
        let now = Instant::now();
        let mut st = sh.lock();
        f(&mut st.pods, now);
        evict(&mut st.pods, sh.conf.max_pods, now);
        sh.stats.pods.store(st.pods.len() as u64, Ordering::Relaxed);
        drop(st);
        sh.answered.notify_all();
        true
    }
}

impl watch::Watcher for NodePods {
    type Item = Pod;

    fn who(&self) -> &str {
        "[filter:kubernetes]"
    }

    fn page(&mut self, body: &[u8]) -> Result<watch::Page<Pod>, ApiError> {
        let bad = || ApiError::BadBody("not a PodList".into());
        let m = parse_json(body).ok_or_else(bad)?;
        Ok(watch::Page {
            items: items(body).ok_or_else(bad)?,
            version: text(field(&m, &["metadata", "resourceVersion"])).unwrap_or_default(),
            next: text(field(&m, &["metadata", "continue"])),
        })
    }

    fn event(&mut self, line: &[u8]) -> watch::Event<Pod> {
        let Some(ev) = parse_json(line) else {
            return watch::Event::Ignored;
        };
        let Some(Value::Map(obj)) = field(&ev, &["object"]) else {
            return watch::Event::Ignored;
        };
        match text(field(&ev, &["type"])).as_deref() {
            Some("BOOKMARK") => text(field(obj, &["metadata", "resourceVersion"]))
                .map_or(watch::Event::Ignored, watch::Event::Bookmark),
            Some("ERROR") => {
                let code = match field(obj, &["code"]) {
                    Some(Value::UInt(c)) => *c,
                    Some(Value::Int(c)) => *c as u64,
                    _ => 0,
                };
                watch::Event::Error(
                    code as u16,
                    text(field(obj, &["message"])).unwrap_or_default(),
                )
            }
            Some(kind @ ("ADDED" | "MODIFIED" | "DELETED")) => match Pod::from_object(obj) {
                Some(pod) => watch::Event::Changed {
                    version: pod.resource_version.clone(),
                    item: pod,
                    deleted: kind == "DELETED",
                },
                None => watch::Event::Ignored,
            },
            _ => watch::Event::Ignored,
        }
    }

    fn listed(&mut self, mut listed: Vec<Pod>) -> bool {
        self.update(|pods, now| {
            let live: std::collections::HashSet<PodKey> = listed
                .iter()
                .map(|p| PodKey {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                })
                .collect();
            for (k, slot) in pods.iter_mut() {
                if slot.watched && !live.contains(k) && slot.deleted.is_none() {
                    slot.deleted = Some(now);
                }
            }
            for pod in listed.drain(..) {
                upsert(pods, pod, now);
            }
        })
    }

    fn changed(&mut self, pod: Pod, deleted: bool) -> bool {
        self.update(|pods, now| {
            let k = PodKey {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
            };
            upsert(pods, pod, now);
            if deleted {
                if let Some(s) = pods.get_mut(&k) {
                    s.deleted = Some(now);
                }
            }
        })
    }

    fn requesting(&mut self) -> bool {
        match self.shared.upgrade() {
            Some(sh) => {
                sh.stats.requests.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    fn failed(&mut self, what: &str, e: &ApiError) -> Option<Duration> {
        let sh = self.shared.upgrade()?;
        let mut st = sh.lock();
        let retry = health_failed(&sh, &mut st.health, what, e, &self.conf);
        Some(retry.saturating_duration_since(Instant::now()))
    }

    fn recovered(&mut self) {
        if let Some(sh) = self.shared.upgrade() {
            let mut st = sh.lock();
            health_ok(&sh, &mut st.health);
        }
    }
}

fn upsert(pods: &mut std::collections::HashMap<PodKey, Slot<Pod>>, pod: Pod, now: Instant) {
    let k = PodKey {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
    };
    let slot = pods.entry(k).or_insert_with(|| Slot::new(now));
    slot.value = Some(Arc::new(pod));
    slot.fetched = now;
    slot.watched = true;
    slot.deleted = None;
    slot.pending = false;
    slot.retry_after = None;
}
