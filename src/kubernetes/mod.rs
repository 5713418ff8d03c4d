//! A node-local cache of Kubernetes metadata: the pods whose logs this node reads and
//! their namespaces. Used by the `kubernetes` filter; it knows no pipeline, so flow logs
//! and limits can share it.
//!
//! Where metadata comes from, first found wins:
//! 1. `preload_dir`: `<namespace>_<pod>.meta` and `<namespace>.namespace_meta` JSON files
//!    (no API server needed);
//! 2. the API server (`GET /api/v1/namespaces/<ns>/pods/<pod>`, as Fluent Bit does) or,
//!    with `use_kubelet`, the kubelet's `/pods`;
//! 3. when the node's name is known (`NODE_NAME`), a list + watch of the pods on this
//!    node keeps them current (no request per new pod, deleted pods kept a while so
//!    their last lines are still named).
//!
//! Lookups never block for long: a lookup that misses waits at most `wait` for the
//! worker's answer; while the API is failing (backing off) it does not wait at all.
//! The caller then proceeds with what it has (the tag's fields).
//!
//! Memory: at most `max_pods` pods and `max_namespaces` namespaces are kept (least
//! recently used evicted first; watched pods of this node are never evicted). A pod
//! costs its labels, annotations and owner references as text plus ~1.5 kB of slots
//! and headers: 2.6 MB per 1,000 pods like the test data's web pod (3 labels, 3
//! annotations, an owner, 2 containers; test `memory_per_1000_pods`, from
//! [`Pod::heap_size`]). The process's RSS grows more while a list is parsed (about
//! 20 MB for a 1,000-pod list, test `cache_memory_per_1000_pods`): pages jemalloc
//! keeps after parsing, not held by the cache.

pub mod client;
pub mod objects;
pub mod pod;
pub mod watch;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use client::{ApiError, ClientConf};
pub use pod::{ContainerStatus, Namespace, Pod};

use crate::event::Str;

/// Where the worker reads metadata.
#[derive(Debug, Clone)]
pub enum Source {
    /// Files only (or no lookups at all).
    None,
    /// The API server: pod GET, and list + watch of `node_name`'s pods when known.
    Api {
        conf: ClientConf,
        node_name: Option<String>,
    },
    /// The kubelet's `/pods` (all pods of this node); namespaces from `api`.
    Kubelet { conf: ClientConf, api: ClientConf },
}

#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// For log lines: `[filter:kubernetes:kubernetes.0]`.
    pub name: String,
    pub source: Source,
    pub preload_dir: Option<PathBuf>,
    /// Fetched pods are fetched again after this (watched pods are always current).
    pub pod_ttl: Option<Duration>,
    pub namespace_ttl: Option<Duration>,
    /// How long a lookup that misses waits for the worker.
    pub wait: Duration,
    pub max_pods: usize,
    pub max_namespaces: usize,
    /// Resolution failures of the API host are retried this many times, `dns_wait`
    /// apart, before the normal backoff applies (Fluent Bit's `dns_retries`).
    pub dns_retries: u32,
    pub dns_wait: Duration,
}

/// Counters, shared with the owner's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: Arc<AtomicU64>,
    pub errors: Arc<AtomicU64>,
    pub pods: Arc<AtomicU64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PodKey {
    namespace: Str,
    name: Str,
}

/// A cache entry: what is known, and whether a fetch is under way.
struct Slot<T> {
    value: Option<Arc<T>>,
    fetched: Instant,
    used: Instant,
    pending: bool,
    /// Kept current by the watch: no TTL, not evicted until deleted.
    watched: bool,
    /// Deleted (watch): evicted after a grace period.
    deleted: Option<Instant>,
    /// Not found or failed: not asked again before this.
    retry_after: Option<Instant>,
    /// `cache_use_docker_id`: the container id already fetched again for.
    refetched_for: Option<Str>,
}

impl<T> Slot<T> {
    fn new(now: Instant) -> Slot<T> {
        Slot {
            value: None,
            fetched: now,
            used: now,
            pending: false,
            watched: false,
            deleted: None,
            retry_after: None,
            refetched_for: None,
        }
    }
}

/// The API's health as seen by lookups: while failing, lookups do not wait.
#[derive(Default)]
struct Health {
    failures: u32,
    next_try: Option<Instant>,
    last_error: Option<String>,
    last_logged: Option<Instant>,
    suppressed: u64,
}

#[derive(Default)]
struct State {
    pods: HashMap<PodKey, Slot<Pod>>,
    namespaces: HashMap<Str, Slot<Namespace>>,
    health: Health,
    worker: Option<worker::Handle>,
}

struct Shared {
    conf: MetaConfig,
    state: Mutex<State>,
    answered: Condvar,
    stats: Arc<Stats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long a deleted pod stays named (its last lines may still be read).
const DELETED_GRACE: Duration = Duration::from_secs(300);
/// A pod the API does not know is asked for again after this.
const NOT_FOUND_RETRY: Duration = Duration::from_secs(10);

/// The cache. Cheap to share (`Arc` inside); the worker thread starts on the first
/// lookup that needs the network and stops when the last handle is dropped.
#[derive(Clone)]
pub struct KubeMeta {
    shared: Arc<Shared>,
}

impl KubeMeta {
    pub fn new(conf: MetaConfig, stats: Arc<Stats>) -> KubeMeta {
        KubeMeta {
            shared: Arc::new(Shared {
                conf,
                state: Mutex::new(State::default()),
                answered: Condvar::new(),
                stats,
            }),
        }
    }

    pub fn conf(&self) -> &MetaConfig {
        &self.shared.conf
    }

    /// Starts the list + watch now (when the node's name is known), rather than at
    /// the first lookup that misses.
    pub fn start(&self) {
        if let Source::Api {
            node_name: Some(_), ..
        } = &self.shared.conf.source
        {
            let mut st = self.shared.lock();
            self.ensure_worker(&mut st);
        }
    }

    /// Asks the API for the agent's own pod (`namespace/name`) and logs whether it
    /// answered, without waiting.
    pub fn probe(&self, namespace: &str, name: &str) {
        let mut st = self.shared.lock();
        if self.ensure_worker(&mut st) {
            if let Some(w) = &st.worker {
                w.send(worker::Req::Probe(Str::from(namespace), Str::from(name)));
            }
        }
    }

    fn ensure_worker(&self, st: &mut State) -> bool {
        if matches!(self.shared.conf.source, Source::None) {
            return false;
        }
        if st.worker.is_none() {
            st.worker = Some(worker::spawn(Arc::downgrade(&self.shared)));
        }
        true
    }

    /// The pod `namespace/name`, from the cache, a preload file or the API (waiting at
    /// most `wait`). With `container_id`, a cached pod that does not run that container
    /// is fetched again once (a restarted container: `cache_use_docker_id`).
    pub fn pod(&self, namespace: &str, name: &str, container_id: Option<&str>) -> Option<Arc<Pod>> {
        let key = PodKey {
            namespace: Str::from(namespace),
            name: Str::from(name),
        };
        let now = Instant::now();
        let conf = &self.shared.conf;
        let mut st = self.shared.lock();
        if let Some(slot) = st.pods.get_mut(&key) {
            slot.used = now;
            if let Some(v) = &slot.value {
                let expired = !slot.watched
                    && conf
                        .pod_ttl
                        .is_some_and(|ttl| now.duration_since(slot.fetched) >= ttl);
                let id_ok = match container_id {
                    Some(id) => v.has_container_id(id) || slot.refetched_for.as_deref() == Some(id),
                    None => true,
                };
                if !expired && id_ok {
                    return Some(v.clone());
                }
                if !id_ok {
                    slot.refetched_for = container_id.map(Str::from);
                }
            }
        }
        // A preload file answers without the network (Fluent Bit reads it first).
        if let Some(dir) = &conf.preload_dir {
            let path = dir.join(format!("{namespace}_{name}.meta"));
            drop(st);
            let found = std::fs::read(&path)
                .ok()
                .and_then(|t| pod::parse_json(&t))
                .and_then(|m| pod_from_file(&m, namespace, name));
            st = self.shared.lock();
            if let Some(p) = found {
                let p = Arc::new(p);
                let slot = st.pods.entry(key.clone()).or_insert_with(|| Slot::new(now));
                slot.value = Some(p.clone());
                slot.fetched = now;
                slot.retry_after = None;
                evict(&mut st.pods, conf.max_pods, now);
                self.shared
                    .stats
                    .pods
                    .store(st.pods.len() as u64, Ordering::Relaxed);
                return Some(p);
            }
        }
        if !self.ensure_worker(&mut st) {
            return st.pods.get(&key).and_then(|s| s.value.clone());
        }
        let backing_off = st.health.next_try.is_some_and(|t| t > now);
        let slot = st.pods.entry(key.clone()).or_insert_with(|| Slot::new(now));
        if slot.retry_after.is_some_and(|t| t > now) || (backing_off && !slot.pending) {
            return slot.value.clone();
        }
        if !slot.pending {
            slot.pending = true;
            let sent = st
                .worker
                .as_ref()
                .is_some_and(|w| w.send(worker::Req::Pod(key.namespace.clone(), key.name.clone())));
            if !sent {
                if let Some(s) = st.pods.get_mut(&key) {
                    s.pending = false;
                }
                return st.pods.get(&key).and_then(|s| s.value.clone());
            }
        }
        let evicted = evict(&mut st.pods, conf.max_pods, now);
        debug_assert!(!evicted.contains(&key));
        let deadline = now + conf.wait;
        wait_until(&self.shared, st, deadline, |st| {
            st.pods.get(&key).is_none_or(|s| !s.pending)
        })
        .pods
        .get(&key)
        .and_then(|s| s.value.clone())
    }

    /// The namespace `name` (for `namespace_labels`/`namespace_annotations`).
    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        let key = Str::from(name);
        let now = Instant::now();
        let conf = &self.shared.conf;
        let mut st = self.shared.lock();
        if let Some(slot) = st.namespaces.get_mut(&key) {
            slot.used = now;
            if let Some(v) = &slot.value {
                if conf
                    .namespace_ttl
                    .is_none_or(|ttl| now.duration_since(slot.fetched) < ttl)
                {
                    return Some(v.clone());
                }
            }
        }
        if let Some(dir) = &conf.preload_dir {
            let path = dir.join(format!("{name}.namespace_meta"));
            drop(st);
            let found = std::fs::read(&path)
                .ok()
                .and_then(|t| pod::parse_json(&t))
                .and_then(|m| Namespace::from_object(&m));
            st = self.shared.lock();
            if let Some(ns) = found {
                let ns = Arc::new(ns);
                let slot = st
                    .namespaces
                    .entry(key.clone())
                    .or_insert_with(|| Slot::new(now));
                slot.value = Some(ns.clone());
                slot.fetched = now;
                evict(&mut st.namespaces, conf.max_namespaces, now);
                return Some(ns);
            }
        }
        if !self.ensure_worker(&mut st) {
            return st.namespaces.get(&key).and_then(|s| s.value.clone());
        }
        let backing_off = st.health.next_try.is_some_and(|t| t > now);
        let slot = st
            .namespaces
            .entry(key.clone())
            .or_insert_with(|| Slot::new(now));
        if slot.retry_after.is_some_and(|t| t > now) || (backing_off && !slot.pending) {
            return slot.value.clone();
        }
        if !slot.pending {
            slot.pending = true;
            let sent = st
                .worker
                .as_ref()
                .is_some_and(|w| w.send(worker::Req::Namespace(key.clone())));
            if !sent {
                if let Some(s) = st.namespaces.get_mut(&key) {
                    s.pending = false;
                }
                return None;
            }
        }
        evict(&mut st.namespaces, conf.max_namespaces, now);
        let deadline = now + conf.wait;
        wait_until(&self.shared, st, deadline, |st| {
            st.namespaces.get(&key).is_none_or(|s| !s.pending)
        })
        .namespaces
        .get(&key)
        .and_then(|s| s.value.clone())
    }

    /// How many pods are cached now.
    pub fn pod_count(&self) -> usize {
        self.shared.lock().pods.len()
    }
}

/// A preload file holds a Pod, or (kubelet style) a PodList whose item is the pod.
fn pod_from_file(m: &crate::event::Map, namespace: &str, name: &str) -> Option<Pod> {
    if let Some((_, crate::event::Value::Array(items))) = m.iter().find(|(k, _)| &**k == "items") {
        return items.iter().find_map(|it| match it {
            crate::event::Value::Map(m) => {
                Pod::from_object(m).filter(|p| &*p.namespace == namespace && &*p.name == name)
            }
            _ => None,
        });
    }
    // Fluent Bit does not check the file's names against the tag's: it keeps the tag's.
    Some(Pod::with_names(m, Str::from(namespace), Str::from(name)))
}

/// Waits on the condvar until `done` or `deadline`; returns the guard.
fn wait_until<'a>(
    shared: &'a Shared,
    mut st: MutexGuard<'a, State>,
    deadline: Instant,
    done: impl Fn(&State) -> bool,
) -> MutexGuard<'a, State> {
    let wait = |st| {
        let now = Instant::now();
        if now >= deadline {
            return (st, true);
        }
        let (st, _) = shared
            .answered
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(|e| e.into_inner());
        (st, false)
    };
    crate::pipeline::engine::blocking(move || {
        while !done(&st) {
            let (s, timed_out) = wait(st);
            st = s;
            if timed_out {
                break;
            }
        }
        st
    })
}

/// Drops the least recently used entries beyond `max` (never watched, live ones, nor
/// one being fetched); also drops deleted pods past their grace. Returns what it dropped.
fn evict<K: Clone + Eq + std::hash::Hash, T>(
    map: &mut HashMap<K, Slot<T>>,
    max: usize,
    now: Instant,
) -> Vec<K> {
    let mut gone: Vec<K> = map
        .iter()
        .filter(|(_, s)| {
            s.deleted
                .is_some_and(|d| now.duration_since(d) >= DELETED_GRACE)
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in &gone {
        map.remove(k);
    }
    if map.len() > max {
        let mut candidates: Vec<(Instant, K)> = map
            .iter()
            .filter(|(_, s)| !s.pending && (!s.watched || s.deleted.is_some()))
            .map(|(k, s)| (s.used, k.clone()))
            .collect();
        candidates.sort_by_key(|(used, _)| *used);
        let excess = map.len() - max;
        for (_, k) in candidates.into_iter().take(excess) {
            map.remove(&k);
            gone.push(k);
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What 1,000 cached pods cost: each like the oracle's web pod (3 labels, 3
    /// annotations, an owner reference, 2 containers with ids and images), with its
    /// slot and key. The number in this module's doc and the README.
    #[test]
    fn memory_per_1000_pods() {
        let text = include_str!(
            "../../tests/data/fluent-bit/kubernetes/meta/prod_web-7d4b9c5f8-x2k4p.meta"
        );
        let obj = pod::parse_json(text.as_bytes()).unwrap();
        let mut total = 0;
        for i in 0..1000 {
            let mut p = Pod::from_object(&obj).unwrap();
            p.name = Str::from(format!("web-7d4b9c5f8-{i:05}").as_str());
            total += p.heap_size()
                + std::mem::size_of::<Pod>()
                + std::mem::size_of::<(PodKey, Slot<Pod>)>()
                + p.namespace.len()
                + p.name.len()
                + 32;
        }
        println!("1000 pods: {total} bytes");
        assert!(
            (1_000_000..3_000_000).contains(&total),
            "{total} bytes per 1000 pods"
        );
    }
}
