//! The parts of a Pod and a Namespace object that metadata consumers read, taken from
//! the API server's JSON with its key order kept (labels and annotations are written to
//! records in that order, as Fluent Bit writes them).

use std::sync::Arc;

use crate::event::{Map, Str, Value};

/// One container's status: `status.containerStatuses[]` or `initContainerStatuses[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    pub name: Str,
    /// `containerID` without its runtime scheme (`containerd://abc` -> `abc`).
    pub container_id: Option<Str>,
    /// `imageID` without its scheme (`docker-pullable://nginx@sha256:..`).
    pub image_id: Option<Str>,
    pub image: Option<Str>,
}

/// What the `kubernetes` filter (and later flow logs and limits) need of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub namespace: Str,
    pub name: Str,
    pub uid: Option<Value>,
    pub labels: Option<Value>,
    pub annotations: Option<Value>,
    pub owner_references: Option<Value>,
    /// `spec.nodeName`.
    pub node_name: Option<Value>,
    /// `status.podIP`.
    pub pod_ip: Option<Value>,
    /// In the order Fluent Bit searches them: whichever of `containerStatuses` and
    /// `initContainerStatuses` comes first in `status`, then the other.
    pub containers: Vec<ContainerStatus>,
    pub resource_version: Option<String>,
}

/// A namespace's labels and annotations (`namespace_labels`, `namespace_annotations`).
#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    pub name: Str,
    pub labels: Option<Value>,
    pub annotations: Option<Value>,
}

fn get<'a>(m: &'a Map, key: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
}

fn map<'a>(m: &'a Map, key: &str) -> Option<&'a Map> {
    match get(m, key) {
        Some(Value::Map(m)) => Some(m),
        _ => None,
    }
}

fn string(m: &Map, key: &str) -> Option<Str> {
    match get(m, key) {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Fluent Bit's `extract_hash`: the text after `scheme://`, or the whole text when no
/// `/` follows its first `:` (`sha256:abc`). None when that leaves nothing.
pub fn strip_scheme(s: &str) -> Option<&str> {
    if s.len() <= 1 {
        return None;
    }
    let colon = s.find(':')?;
    let rest = &s[colon + 1..];
    let after = rest.trim_start_matches('/');
    let out = if after.len() == rest.len() { s } else { after };
    (!out.is_empty()).then_some(out)
}

impl Pod {
    /// Reads a Pod object (`{"kind":"Pod","metadata":{..},"spec":{..},"status":{..}}`).
    /// None when it has no `metadata.name` and `metadata.namespace`.
    pub fn from_object(obj: &Map) -> Option<Pod> {
        let meta = map(obj, "metadata")?;
        let (namespace, name) = (string(meta, "namespace")?, string(meta, "name")?);
        Some(Pod::with_names(obj, namespace, name))
    }

    /// Reads a Pod object known by these names (a preload file: Fluent Bit takes the
    /// names from the tag, whatever the file says).
    pub fn with_names(obj: &Map, namespace: Str, name: Str) -> Pod {
        let empty = Map::new();
        let meta = map(obj, "metadata").unwrap_or(&empty);
        let mut pod = Pod {
            namespace,
            name,
            uid: get(meta, "uid").cloned(),
            labels: get(meta, "labels").cloned(),
            annotations: get(meta, "annotations").cloned(),
            owner_references: get(meta, "ownerReferences").cloned(),
            node_name: map(obj, "spec").and_then(|s| get(s, "nodeName")).cloned(),
            pod_ip: map(obj, "status").and_then(|s| get(s, "podIP")).cloned(),
            containers: Vec::new(),
            resource_version: string(meta, "resourceVersion").map(|s| s.to_string()),
        };
        if let Some(status) = map(obj, "status") {
            for (k, v) in status {
                if &**k != "containerStatuses" && &**k != "initContainerStatuses" {
                    continue;
                }
                let Value::Array(list) = v else { continue };
                for c in list {
                    let Value::Map(c) = c else { continue };
                    let Some(name) = string(c, "name") else {
                        continue;
                    };
                    let strip = |key| string(c, key).and_then(|s| strip_scheme(&s).map(Arc::from));
                    pod.containers.push(ContainerStatus {
                        name,
                        container_id: strip("containerID"),
                        image_id: strip("imageID"),
                        image: string(c, "image").filter(|s| !s.is_empty()),
                    });
                }
            }
        }
        pod
    }

    /// The status of the container named `name`, if the pod reports one.
    pub fn container(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers.iter().find(|c| &*c.name == name)
    }

    /// Whether some container of the pod runs with this id (a `docker_id` from a tag).
    pub fn has_container_id(&self, id: &str) -> bool {
        self.containers
            .iter()
            .any(|c| c.container_id.as_deref() == Some(id))
    }

    /// The heap bytes this pod holds (strings with their `Arc` headers, map and array
    /// slots), for the cache's documented memory bound.
    pub fn heap_size(&self) -> usize {
        let v = |v: &Option<Value>| v.as_ref().map_or(0, value_heap);
        let s = |s: &Option<Str>| s.as_ref().map_or(0, |s| s.len() + 16);
        self.namespace.len()
            + 16
            + self.name.len()
            + 16
            + v(&self.uid)
            + v(&self.labels)
            + v(&self.annotations)
            + v(&self.owner_references)
            + v(&self.node_name)
            + v(&self.pod_ip)
            + self.resource_version.as_ref().map_or(0, |s| s.capacity())
            + self.containers.capacity() * std::mem::size_of::<ContainerStatus>()
            + self
                .containers
                .iter()
                .map(|c| c.name.len() + 16 + s(&c.container_id) + s(&c.image_id) + s(&c.image))
                .sum::<usize>()
    }
}

/// Heap bytes of a value (what it points to, not its own slot).
fn value_heap(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len() + 16,
        Value::Bin(b) => b.len() + 16,
        Value::Array(a) => {
            a.capacity() * std::mem::size_of::<Value>() + a.iter().map(value_heap).sum::<usize>()
        }
        Value::Map(m) => {
            m.capacity() * std::mem::size_of::<(Str, Value)>()
                + m.iter()
                    .map(|(k, v)| k.len() + 16 + value_heap(v))
                    .sum::<usize>()
        }
        _ => 0,
    }
}

impl Namespace {
    /// Reads a Namespace object.
    pub fn from_object(obj: &Map) -> Option<Namespace> {
        let meta = map(obj, "metadata")?;
        Some(Namespace {
            name: string(meta, "name")?,
            labels: get(meta, "labels").cloned(),
            annotations: get(meta, "annotations").cloned(),
        })
    }
}

/// Parses JSON text into a record map (key order kept, as Fluent Bit packs it).
pub fn parse_json(text: &[u8]) -> Option<Map> {
    match crate::parser::json::parse_values(text) {
        Ok((Value::Map(m), _)) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_is_stripped_as_fluent_bit_does() {
        assert_eq!(strip_scheme("containerd://abc"), Some("abc"));
        assert_eq!(
            strip_scheme("docker-pullable://nginx@sha256:1f"),
            Some("nginx@sha256:1f")
        );
        assert_eq!(strip_scheme("sha256:1f"), Some("sha256:1f"));
        assert_eq!(
            strip_scheme("docker.io/library/nginx@sha256:1f"),
            Some("docker.io/library/nginx@sha256:1f")
        );
        assert_eq!(strip_scheme("noscheme"), None);
        assert_eq!(strip_scheme("x://"), None);
        assert_eq!(strip_scheme(""), None);
    }

    #[test]
    fn a_pod_object_is_read_with_its_key_order() {
        let text = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-1","namespace":"prod","uid":"u-1","resourceVersion":"42","labels":{"z":"1","a":"2"},"annotations":{"fluentbit.io/exclude":"true"}},"spec":{"nodeName":"node-a"},"status":{"podIP":"10.0.0.7","initContainerStatuses":[{"name":"init","containerID":"containerd://i1","image":"busybox","imageID":"docker.io/busybox@sha256:00"}],"containerStatuses":[{"name":"app","state":{},"image":"nginx:1","imageID":"docker-pullable://nginx@sha256:11","containerID":"docker://c1"}]}}"#;
        let pod = Pod::from_object(&parse_json(text).unwrap()).unwrap();
        assert_eq!((&*pod.namespace, &*pod.name), ("prod", "web-1"));
        let Some(Value::Map(labels)) = &pod.labels else {
            panic!()
        };
        assert_eq!(&*labels[0].0, "z", "API order kept, not sorted");
        assert_eq!(pod.resource_version.as_deref(), Some("42"));
        assert_eq!(pod.containers[0].name.as_ref(), "init", "status order");
        let app = pod.container("app").unwrap();
        assert_eq!(app.container_id.as_deref(), Some("c1"));
        assert_eq!(app.image_id.as_deref(), Some("nginx@sha256:11"));
        assert_eq!(app.image.as_deref(), Some("nginx:1"));
        assert!(pod.has_container_id("c1") && !pod.has_container_id("c2"));
        assert!(Pod::from_object(&parse_json(br#"{"metadata":{"name":"x"}}"#).unwrap()).is_none());
    }
}
