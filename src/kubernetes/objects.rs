//! Compact forms of the cluster objects that name the ends of a connection: a pod's
//! addresses and workload, a service's cluster IPs and ports, an endpoint slice's
//! backends. Each is decoded from the API's JSON keeping only these fields, as owned
//! strings, numbers and addresses: about 0.3 kB a pod against about 4 kB for the same
//! pod as a JSON tree, so a watch of a large cluster stays small (test
//! `kube_scale`, `make bench`).
//!
//! An object that is not what its kind says (a label that is a number, a port that is
//! text) keeps what can be read; one bad object never fails a list.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

/// Label keys and values in the API's order.
pub type Labels = Vec<(Box<str>, Box<str>)>;

/// A pod: where it runs and the addresses it owns.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub namespace: Box<str>,
    pub name: Box<str>,
    /// `metadata.generateName` (the workload's prefix, e.g. `web-7d4b9c5f8-`).
    pub generate_name: Option<Box<str>>,
    pub labels: Labels,
    pub node_name: Box<str>,
    /// Its addresses are the node's.
    pub host_network: bool,
    /// `status.podIPs`, else `status.podIP`.
    pub ips: Vec<IpAddr>,
}

/// A service port: its name (empty when unnamed), number and protocol number.
#[derive(Debug, Clone, PartialEq)]
pub struct PortInfo {
    pub name: Box<str>,
    pub port: u16,
    pub protocol: u8,
}

/// A service: its cluster IPs (none for a headless one) and ports.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<PortInfo>,
}

/// The backends of a service: an `EndpointSlice` (its `kubernetes.io/service-name`
/// label names the service), or a subset of an `Endpoints` object (same name as its
/// service). `ports` are the backends' ports, matched to the service's by name.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceInfo {
    pub namespace: Box<str>,
    pub service: Box<str>,
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<PortInfo>,
}

/// `TCP`/`UDP`/`SCTP` (Kubernetes' names; TCP when absent) as protocol numbers.
pub fn protocol_number(p: Option<&str>) -> Option<u8> {
    let p = p.unwrap_or("TCP");
    if p.eq_ignore_ascii_case("TCP") {
        Some(6)
    } else if p.eq_ignore_ascii_case("UDP") {
        Some(17)
    } else if p.eq_ignore_ascii_case("SCTP") {
        Some(132)
    } else {
        None
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Meta {
    name: Option<Box<str>>,
    namespace: Option<Box<str>>,
    #[serde(rename = "generateName")]
    generate_name: Option<Box<str>>,
    /// Any JSON: labels that are not an object are none.
    labels: Option<Value>,
}

impl Meta {
    /// `namespace/name`, the object's key in a store.
    fn key(&self) -> Option<String> {
        Some(format!(
            "{}/{}",
            self.namespace.as_deref().unwrap_or(""),
            self.name.as_deref()?
        ))
    }

    fn namespace(&self) -> Box<str> {
        self.namespace.clone().unwrap_or_else(|| "default".into())
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key)?.as_str()
    }
}

fn labels(m: Option<Value>) -> Labels {
    let Some(Value::Object(m)) = m else {
        return Labels::new();
    };
    m.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.into_boxed_str(),
                other => other.to_string().into_boxed_str(),
            };
            (k.into_boxed_str(), v)
        })
        .collect()
}

/// Decodes `T` from `v`, or nothing when `v` is not shaped as `T` at all.
fn raw<T: for<'de> Deserialize<'de>>(v: &Value) -> Option<T> {
    T::deserialize(v).ok()
}

fn ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPort {
    name: Option<String>,
    port: Option<Value>,
    protocol: Option<String>,
}

fn ports(list: Option<&Value>) -> Vec<PortInfo> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let p: RawPort = raw(p)?;
            Some(PortInfo {
                name: p.name.unwrap_or_default().into_boxed_str(),
                port: p
                    .port
                    .as_ref()
                    .and_then(Value::as_u64)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0)?,
                protocol: protocol_number(p.protocol.as_deref())?,
            })
        })
        .collect()
}

fn meta(v: &Value) -> Meta {
    v.get("metadata").and_then(raw).unwrap_or_default()
}

impl PodInfo {
    /// A `Pod` object and its key; nothing without a name.
    pub fn decode(v: &Value) -> Option<(String, PodInfo)> {
        let m = meta(v);
        let key = m.key()?;
        let spec = &v["spec"];
        let status = &v["status"];
        let mut ips: Vec<IpAddr> = status["podIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["ip"].as_str().and_then(ip))
            .collect();
        if ips.is_empty() {
            ips.extend(status["podIP"].as_str().and_then(ip));
        }
        Some((
            key,
            PodInfo {
                namespace: m.namespace.clone().unwrap_or_default(),
                name: m.name.clone()?,
                generate_name: m.generate_name.clone().filter(|g| !g.is_empty()),
                node_name: spec["nodeName"].as_str().unwrap_or("").into(),
                host_network: spec["hostNetwork"].as_bool() == Some(true),
                labels: labels(m.labels),
                ips,
            },
        ))
    }
}

impl ServiceInfo {
    /// A `Service` object and its key; nothing without a name.
    pub fn decode(v: &Value) -> Option<(String, ServiceInfo)> {
        let m = meta(v);
        let key = m.key()?;
        let spec = &v["spec"];
        let mut ips: Vec<IpAddr> = spec["clusterIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().and_then(ip))
            .collect();
        if ips.is_empty() {
            // "None" (headless) is no address.
            ips.extend(spec["clusterIP"].as_str().and_then(ip));
        }
        Some((
            key,
            ServiceInfo {
                namespace: m.namespace(),
                name: m.name?,
                cluster_ips: ips,
                ports: ports(spec.get("ports")),
            },
        ))
    }
}

impl SliceInfo {
    /// An `EndpointSlice` (discovery.k8s.io/v1) and its key; nothing without a name or
    /// a service.
    pub fn decode(v: &Value) -> Option<(String, SliceInfo)> {
        let m = meta(v);
        let key = m.key()?;
        let service = m.label("kubernetes.io/service-name")?.into();
        let addresses = v["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|ep| ep["addresses"].as_array().into_iter().flatten())
            .filter_map(|a| a.as_str().and_then(ip))
            .collect();
        Some((
            key,
            SliceInfo {
                namespace: m.namespace(),
                service,
                addresses,
                ports: ports(v.get("ports")),
            },
        ))
    }

    /// An `Endpoints` object (core/v1): one slice per subset, for its service of the
    /// same name.
    pub fn from_endpoints(v: &Value) -> Vec<SliceInfo> {
        let m = meta(v);
        let Some(name) = m.name.clone() else {
            return Vec::new();
        };
        v["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|subset| SliceInfo {
                namespace: m.namespace(),
                service: name.clone(),
                addresses: subset["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["ip"].as_str().and_then(ip))
                    .collect(),
                ports: ports(subset.get("ports")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_keeps_its_workload_and_addresses() {
        let (key, pod) = PodInfo::decode(&json!({
            "metadata": {"name": "web-1", "namespace": "shop", "generateName": "web-",
                         "uid": "x", "labels": {"app": "web", "n": 3}},
            "spec": {"nodeName": "n1", "containers": [{"image": "big"}]},
            "status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}, {"ip": "bad"}]}
        }))
        .unwrap();
        assert_eq!(key, "shop/web-1");
        assert_eq!(
            pod,
            PodInfo {
                namespace: "shop".into(),
                name: "web-1".into(),
                generate_name: Some("web-".into()),
                labels: vec![("app".into(), "web".into()), ("n".into(), "3".into())],
                node_name: "n1".into(),
                host_network: false,
                ips: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            }
        );
        assert!(PodInfo::decode(&json!({"metadata": {"namespace": "x"}})).is_none());
        // A field of the wrong type loses that field, not the pod.
        let (_, p) = PodInfo::decode(&json!({"metadata": {"name": "a", "labels": "oops"},
            "status": {"podIP": "10.0.0.2"}}))
        .unwrap();
        assert_eq!((p.labels.len(), p.ips.len()), (0, 1));
    }

    #[test]
    fn a_service_and_its_slices() {
        let (_, svc) = ServiceInfo::decode(&json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432},
                     {"port": 53, "protocol": "UDP"}, {"port": 1, "protocol": "ICMP"}, {"port": "x"}]}
        }))
        .unwrap();
        assert!(svc.cluster_ips.is_empty(), "headless");
        assert_eq!(
            svc.ports,
            vec![
                PortInfo {
                    name: "pg".into(),
                    port: 5432,
                    protocol: 6
                },
                PortInfo {
                    name: "".into(),
                    port: 53,
                    protocol: 17
                },
            ]
        );
        let (_, sl) = SliceInfo::decode(&json!({
            "metadata": {"name": "db-abc", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "endpoints": [{"addresses": ["10.1.0.5"]}, {"addresses": ["10.1.0.6"]}],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
        }))
        .unwrap();
        assert_eq!((&*sl.service, sl.addresses.len()), ("db", 2));
        let eps = SliceInfo::from_endpoints(&json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"name": "pg", "port": 5432}]}]
        }));
        assert_eq!(
            eps,
            vec![SliceInfo {
                ports: vec![sl.ports[0].clone()],
                addresses: vec![sl.addresses[0]],
                ..sl
            }]
        );
    }
}
