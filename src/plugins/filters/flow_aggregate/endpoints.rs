//! IP → workload metadata: Calico's endpoint types (`wep`, `hep`, `ns`, `net`), from an
//! endpoints file of ours or from `kubectl get pods -A -o json`, looked up by longest
//! prefix. Calico: felix/collector (endpoint.GetMetadata).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use crate::kubernetes::objects::{protocol_number, PodInfo, ServiceInfo, SliceInfo};

/// What a flow log says about one side of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `wep`, `hep`, `ns` or `net`.
    pub kind: Arc<str>,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// `generate_name*`, or the name; `pvt`/`pub` for unknown addresses.
    pub name_aggr: Arc<str>,
    pub labels: Arc<BTreeMap<String, String>>,
    /// Lives on this node: its side of a connection is reported.
    pub local: bool,
}

#[derive(Clone, Debug)]
struct Prefix {
    net: IpAddr,
    len: u8,
    ep: Arc<Endpoint>,
}

/// Longest-prefix table. Host routes (/32, /128), the common case for pods, are a hash
/// lookup; wider prefixes a short scan, longest first.
#[derive(Clone, Debug)]
pub struct Endpoints {
    hosts: HashMap<IpAddr, Arc<Endpoint>>,
    prefixes: Vec<Prefix>,
    unknown: [Arc<Endpoint>; 2],
    /// (address, port, protocol) → service: its cluster IPs and ports (the destination
    /// before DNAT), and the pod addresses and ports behind it (after).
    services: HashMap<(IpAddr, u16, u8), Arc<Service>>,
}

fn unknown(aggr: &str) -> Arc<Endpoint> {
    Arc::new(Endpoint {
        kind: Arc::from("net"),
        namespace: Arc::from("-"),
        name: Arc::from("-"),
        name_aggr: Arc::from(aggr),
        labels: Arc::default(),
        local: false,
    })
}

/// Calico's private ranges, and only those: 10/8, 172.16/12, 192.168/16 (felix
/// collector/types/endpoint getSubnetType). Everything else, IPv6 included, is `pub`.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 10 || (o[0] == 172 && (16..32).contains(&o[1])) || (o[0] == 192 && o[1] == 168)
        }
        IpAddr::V6(_) => false,
    }
}

/// The Kubernetes service a destination belongs to (Calico's `DstService`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The service port's name (`-` when it has none).
    pub port_name: Arc<str>,
    pub port: u16,
}

fn masked(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len as u32)
            };
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len as u32)
            };
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

/// `10.0.0.5`, `10.0.0.0/24`, `fd00::/8`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let ip: IpAddr = ip
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("'{s}' has a bad prefix length"))?,
        None => max,
    };
    Ok((masked(ip, len), len))
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints::new()
    }
}

impl Endpoints {
    pub fn new() -> Endpoints {
        Endpoints {
            hosts: HashMap::new(),
            prefixes: Vec::new(),
            unknown: [unknown("pvt"), unknown("pub")],
            services: HashMap::new(),
        }
    }

    /// The service of a destination: `pre_dnat` (a cluster IP and port, before DNAT),
    /// else the address and port it reached (a pod behind a service).
    pub fn service(
        &self,
        proto: u8,
        pre_dnat: Option<(IpAddr, u16)>,
        dst: (IpAddr, u16),
    ) -> Option<&Arc<Service>> {
        if self.services.is_empty() {
            return None;
        }
        pre_dnat
            .and_then(|(ip, port)| self.services.get(&(ip, port, proto)))
            .or_else(|| self.services.get(&(dst.0, dst.1, proto)))
    }

    pub fn services_len(&self) -> usize {
        self.services.len()
    }

    pub fn len(&self) -> usize {
        self.hosts.len() + self.prefixes.len()
    }

    fn add_service(&mut self, ip: &str, port: u64, proto: u8, svc: &Arc<Service>) {
        if let (Ok(ip), Ok(port)) = (ip.parse::<IpAddr>(), u16::try_from(port)) {
            if port != 0 {
                self.services.insert((ip, port, proto), svc.clone());
            }
        }
    }

    pub fn insert(&mut self, cidr: &str, ep: Endpoint) -> Result<(), String> {
        let (net, len) = parse_cidr(cidr)?;
        let ep = Arc::new(ep);
        if (net.is_ipv4() && len == 32) || (net.is_ipv6() && len == 128) {
            self.hosts.insert(net, ep);
        } else {
            self.prefixes.push(Prefix { net, len, ep });
            self.prefixes.sort_by_key(|p| std::cmp::Reverse(p.len));
        }
        Ok(())
    }

    /// The endpoint owning `ip`, or Calico's `net` endpoint (`pvt`/`pub`).
    pub fn lookup(&self, ip: IpAddr) -> &Arc<Endpoint> {
        if let Some(ep) = self.hosts.get(&ip) {
            return ep;
        }
        for p in &self.prefixes {
            if p.net.is_ipv4() == ip.is_ipv4() && masked(ip, p.len) == p.net {
                return &p.ep;
            }
        }
        &self.unknown[usize::from(!is_private(ip))]
    }

    /// Marks endpoints inside these CIDRs as local (`local_endpoints`).
    pub fn mark_local(&mut self, cidrs: &[(IpAddr, u8)]) {
        let inside = |ip: IpAddr| {
            cidrs
                .iter()
                .any(|&(n, l)| n.is_ipv4() == ip.is_ipv4() && masked(ip, l) == n)
        };
        for (ip, ep) in self.hosts.iter_mut() {
            if inside(*ip) && !ep.local {
                *ep = Arc::new(Endpoint {
                    local: true,
                    ..(**ep).clone()
                });
            }
        }
        for p in self.prefixes.iter_mut() {
            if inside(p.net) && !p.ep.local {
                p.ep = Arc::new(Endpoint {
                    local: true,
                    ..(*p.ep).clone()
                });
            }
        }
    }

    /// Whether any endpoint is marked local.
    pub fn any_local(&self) -> bool {
        self.hosts.values().any(|e| e.local) || self.prefixes.iter().any(|p| p.ep.local)
    }

    /// Reads an endpoints file: ours (`{"endpoints": [...]}` or a list) or the JSON of
    /// `kubectl get pods -A -o json` (pods on `node` are local).
    pub fn load(path: &Path, node: &str) -> Result<Endpoints, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
        let mut eps = Endpoints::new();
        if json.get("items").is_some() {
            eps.load_pods(&json, node)?;
        } else {
            if let Some(services) = json.get("services") {
                let list = services
                    .as_array()
                    .ok_or_else(|| format!("{}: \"services\" is not a list", path.display()))?;
                for (i, s) in list.iter().enumerate() {
                    eps.load_service(s)
                        .map_err(|m| format!("{}: service #{i}: {m}", path.display()))?;
                }
            }
            let list = json.get("endpoints").unwrap_or(&json);
            let list = list.as_array().ok_or_else(|| {
                format!(
                    "{}: expected {{\"endpoints\": [...]}}, a list, or kubectl's pod list",
                    path.display()
                )
            })?;
            for (i, e) in list.iter().enumerate() {
                eps.load_entry(e, node)
                    .map_err(|m| format!("{}: endpoint #{i}: {m}", path.display()))?;
            }
        }
        Ok(eps)
    }

    /// One of our file's services: `{"namespace", "name", "cluster_ips" (or
    /// "cluster_ip"), "ports": [{"name", "port", "protocol", "target_port"}],
    /// "endpoints": [pod IPs]}`.
    fn load_service(&mut self, s: &serde_json::Value) -> Result<(), String> {
        let name = s["name"].as_str().ok_or("needs \"name\"")?;
        let ns = s["namespace"].as_str().unwrap_or("default");
        let ips: Vec<&str> = match (s["cluster_ip"].as_str(), s["cluster_ips"].as_array()) {
            (Some(ip), _) => vec![ip],
            (None, Some(l)) => l.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        let ports = s["ports"].as_array().ok_or("needs \"ports\" (a list)")?;
        for p in ports {
            let port = p["port"].as_u64().filter(|&n| (1..=65535).contains(&n));
            let port = port.ok_or("a port needs \"port\" (1-65535)")?;
            let proto = protocol_number(p["protocol"].as_str())
                .ok_or("\"protocol\" is not one of TCP, UDP, SCTP")?;
            let svc = Arc::new(Service {
                namespace: Arc::from(ns),
                name: Arc::from(name),
                port_name: Arc::from(p["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("-")),
                port: port as u16,
            });
            for ip in &ips {
                if ip.parse::<IpAddr>().is_err() {
                    return Err(format!("'{ip}' is not an IP address"));
                }
                self.add_service(ip, port, proto, &svc);
            }
            let target = p["target_port"].as_u64().unwrap_or(port);
            for ip in s["endpoints"].as_array().into_iter().flatten() {
                let ip = ip
                    .as_str()
                    .ok_or("\"endpoints\" holds IP address strings")?;
                if ip.parse::<IpAddr>().is_err() {
                    return Err(format!("'{ip}' is not an IP address"));
                }
                self.add_service(ip, target, proto, &svc);
            }
        }
        Ok(())
    }

    /// A service's cluster IPs and ports.
    fn add_k8s_service(&mut self, svc: &ServiceInfo) {
        for p in &svc.ports {
            let entry = Arc::new(Service {
                namespace: Arc::from(&*svc.namespace),
                name: Arc::from(&*svc.name),
                port_name: Arc::from(if p.name.is_empty() { "-" } else { &*p.name }),
                port: p.port,
            });
            for ip in &svc.cluster_ips {
                self.services
                    .insert((*ip, p.port, p.protocol), entry.clone());
            }
        }
    }

    /// The backend addresses and ports of a service (an endpoint slice, or a subset of
    /// an `Endpoints` object), each port matched to the service's port of its name.
    fn add_backends(&mut self, svc: &ServiceInfo, slice: &SliceInfo) {
        for ep_port in &slice.ports {
            let Some(sp) = svc.ports.iter().find(|p| p.name == ep_port.name) else {
                continue;
            };
            let entry = Arc::new(Service {
                namespace: Arc::from(&*svc.namespace),
                name: Arc::from(&*svc.name),
                port_name: Arc::from(if sp.name.is_empty() { "-" } else { &*sp.name }),
                port: sp.port,
            });
            for ip in &slice.addresses {
                self.services
                    .insert((*ip, ep_port.port, ep_port.protocol), entry.clone());
            }
        }
    }

    fn load_entry(&mut self, e: &serde_json::Value, node: &str) -> Result<(), String> {
        let s = |k: &str| e.get(k).and_then(|v| v.as_str());
        let cidrs: Vec<&str> = match (s("cidr"), e.get("cidrs").and_then(|v| v.as_array())) {
            (Some(c), _) => vec![c],
            (None, Some(list)) => list.iter().filter_map(|v| v.as_str()).collect(),
            _ => return Err("needs \"cidr\" (or \"cidrs\")".into()),
        };
        let kind = s("type").unwrap_or("wep");
        if !["wep", "hep", "ns", "net"].contains(&kind) {
            return Err(format!("type '{kind}' is not one of wep, hep, ns, net"));
        }
        let name = s("name").ok_or("needs \"name\"")?;
        let local = e.get("local").and_then(|v| v.as_bool()).unwrap_or(false);
        // A host endpoint aggregates under its host's name (Calico: hep → hostname).
        let hostname = match kind {
            "hep" => s("hostname").or(local.then_some(node).filter(|n| !n.is_empty())),
            _ => None,
        };
        let mut ep = endpoint(
            kind,
            s("namespace"),
            name,
            s("generate_name"),
            json_labels(e.get("labels")),
            local,
        );
        if let Some(h) = hostname {
            ep.name_aggr = Arc::from(h);
        }
        for c in cidrs {
            self.insert(c, ep.clone())?;
        }
        Ok(())
    }

    /// The objects of `kubectl get pods,services,endpointslices -A -o json`.
    fn load_pods(&mut self, json: &serde_json::Value, node: &str) -> Result<(), String> {
        let items = json["items"].as_array().ok_or("\"items\" is not a list")?;
        let (mut pods, mut services, mut slices) = (Vec::new(), Vec::new(), Vec::new());
        for i in items {
            match i["kind"].as_str().unwrap_or("Pod") {
                "Pod" => pods.extend(PodInfo::decode(i).map(|(_, p)| Arc::new(p))),
                "Service" => services.extend(ServiceInfo::decode(i).map(|(_, s)| Arc::new(s))),
                "EndpointSlice" => slices.extend(SliceInfo::decode(i).map(|(_, s)| Arc::new(s))),
                "Endpoints" => {
                    slices.extend(SliceInfo::from_endpoints(i).into_iter().map(Arc::new))
                }
                _ => {}
            }
        }
        self.add_kubernetes(&pods, &services, &slices, node);
        Ok(())
    }

    /// Adds Kubernetes objects: pods (those on `node` are local), services and the
    /// backends behind them.
    pub fn add_kubernetes(
        &mut self,
        pods: &[Arc<PodInfo>],
        services: &[Arc<ServiceInfo>],
        slices: &[Arc<SliceInfo>],
        node: &str,
    ) {
        let by_name: HashMap<(&str, &str), &ServiceInfo> = services
            .iter()
            .map(|s| ((&*s.namespace, &*s.name), &**s))
            .collect();
        for s in services {
            self.add_k8s_service(s);
        }
        for sl in slices {
            if let Some(svc) = by_name.get(&(&*sl.namespace, &*sl.service)) {
                self.add_backends(svc, sl);
            }
        }
        for pod in pods {
            if pod.host_network {
                continue; // their IP is the node's
            }
            let ep = Arc::new(endpoint(
                "wep",
                Some(&pod.namespace),
                &pod.name,
                pod.generate_name.as_deref(),
                pod.labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                !node.is_empty() && *pod.node_name == *node,
            ));
            for ip in &pod.ips {
                self.hosts.insert(*ip, ep.clone());
            }
        }
    }
}

/// The labels of an endpoints file entry (values that are not strings as their JSON).
fn json_labels(labels: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    labels
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn endpoint(
    kind: &str,
    ns: Option<&str>,
    name: &str,
    generate: Option<&str>,
    mut labels: BTreeMap<String, String>,
    local: bool,
) -> Endpoint {
    let name_aggr = match generate.filter(|g| !g.is_empty()) {
        Some(g) => format!("{g}*"),
        None => name.to_string(),
    };
    // Calico's own labels are not the workload's (IntersectAndFilterLabels).
    labels.retain(|k, _| !k.starts_with("projectcalico.org/"));
    Endpoint {
        kind: Arc::from(kind),
        namespace: Arc::from(ns.filter(|n| !n.is_empty()).unwrap_or("-")),
        name: Arc::from(name),
        name_aggr: Arc::from(name_aggr),
        labels: Arc::new(labels),
        local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_and_unknowns() {
        let mut e = Endpoints::new();
        e.insert(
            "10.1.0.0/16",
            endpoint(
                "ns",
                Some("infra"),
                "corp-net",
                None,
                BTreeMap::new(),
                false,
            ),
        )
        .unwrap();
        e.insert(
            "10.1.2.0/24",
            endpoint("hep", None, "node-a", None, BTreeMap::new(), false),
        )
        .unwrap();
        e.insert(
            "10.1.2.7",
            endpoint(
                "wep",
                Some("web"),
                "nginx-86c57db685-x2x",
                Some("nginx-86c57db685-"),
                BTreeMap::new(),
                true,
            ),
        )
        .unwrap();
        assert_eq!(&*e.lookup(ip("10.1.2.7")).name_aggr, "nginx-86c57db685-*");
        assert_eq!(&*e.lookup(ip("10.1.2.8")).name, "node-a");
        assert_eq!(&*e.lookup(ip("10.1.9.9")).name, "corp-net");
        assert_eq!(
            (
                &*e.lookup(ip("10.9.9.9")).kind,
                &*e.lookup(ip("10.9.9.9")).name_aggr
            ),
            ("net", "pvt")
        );
        assert_eq!(&*e.lookup(ip("8.8.8.8")).name_aggr, "pub");
        assert_eq!(&*e.lookup(ip("172.20.0.1")).name_aggr, "pvt");
        assert_eq!(&*e.lookup(ip("172.40.0.1")).name_aggr, "pub");
        // Only Calico's three ranges are private.
        assert_eq!(&*e.lookup(ip("fd00::1")).name_aggr, "pub");
        assert_eq!(&*e.lookup(ip("100.64.0.1")).name_aggr, "pub");
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
    }

    #[test]
    fn kubectl_pod_list() {
        let json = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"metadata": {"name": "access-6b687c8dcb-9qtx7", "namespace": "policy-demo", "generateName": "access-6b687c8dcb-", "labels": {"run": "access"}},
             "spec": {"nodeName": "node-1"}, "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]}},
            {"metadata": {"name": "web-0", "namespace": "db"}, "spec": {"nodeName": "node-2"}, "status": {"podIP": "10.244.2.9"}},
            {"metadata": {"name": "kube-proxy-x", "namespace": "kube-system"}, "spec": {"nodeName": "node-1", "hostNetwork": true}, "status": {"podIP": "192.168.1.10"}}
        ]});
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pods.json");
        std::fs::write(&p, json.to_string()).unwrap();
        let e = Endpoints::load(&p, "node-1").unwrap();
        let a = e.lookup(ip("fd00::5"));
        assert_eq!(
            (&*a.name_aggr, &*a.namespace, a.local),
            ("access-6b687c8dcb-*", "policy-demo", true)
        );
        assert_eq!(a.labels.get("run").map(String::as_str), Some("access"));
        let w = e.lookup(ip("10.244.2.9"));
        assert_eq!((&*w.name_aggr, w.local), ("web-0", false));
        assert_eq!(
            &*e.lookup(ip("192.168.1.10")).kind,
            "net",
            "host-network pods are not endpoints"
        );
    }

    /// `kubectl get pods,services,endpointslices -A -o json`: a service's slices name
    /// the pods behind it, matched to its ports by name.
    #[test]
    fn services_and_their_endpoint_slices() {
        let json = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"kind": "Service", "metadata": {"name": "db", "namespace": "shop"},
             "spec": {"clusterIP": "10.96.0.9", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP", "targetPort": "pg"}]}},
            {"kind": "EndpointSlice", "metadata": {"name": "db-x1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.3.3"]}, {"addresses": ["10.244.3.4"]}],
             "ports": [{"name": "pg", "port": 15432, "protocol": "TCP"}]},
            {"kind": "EndpointSlice", "metadata": {"name": "gone-x1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "gone"}},
             "endpoints": [{"addresses": ["10.244.3.5"]}], "ports": [{"port": 80}]}
        ]});
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.json");
        std::fs::write(&p, json.to_string()).unwrap();
        let e = Endpoints::load(&p, "n").unwrap();
        let name = |ip: &str, port: u16| {
            e.service(6, None, (super::tests::ip(ip), port))
                .map(|s| (s.name.to_string(), s.port_name.to_string(), s.port))
        };
        assert_eq!(
            name("10.96.0.9", 5432),
            Some(("db".into(), "pg".into(), 5432))
        );
        assert_eq!(
            name("10.244.3.4", 15432),
            Some(("db".into(), "pg".into(), 5432))
        );
        assert_eq!(name("10.244.3.5", 80), None, "a slice without its service");
    }

    #[test]
    fn our_file_format_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.json");
        std::fs::write(&p, r#"{"endpoints": [{"cidr": "10.1.0.5/32", "type": "wep", "namespace": "a", "name": "x-1", "generate_name": "x-", "local": true},
                                               {"cidrs": ["10.1.0.6", "10.1.0.7"], "type": "hep", "name": "h"}]}"#).unwrap();
        let e = Endpoints::load(&p, "n").unwrap();
        assert_eq!(e.len(), 3);
        assert!(e.any_local());
        std::fs::write(&p, r#"[{"cidr": "10.1.0.5", "type": "pod", "name": "x"}]"#).unwrap();
        let err = Endpoints::load(&p, "n").unwrap_err();
        assert!(
            err.contains("endpoint #0: type 'pod' is not one of wep, hep, ns, net"),
            "{err}"
        );
        std::fs::write(&p, "{").unwrap();
        assert!(Endpoints::load(&p, "n")
            .unwrap_err()
            .contains("is not valid JSON"));
    }
}
