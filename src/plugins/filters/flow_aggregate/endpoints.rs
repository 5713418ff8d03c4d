//! IP → workload metadata: Calico's endpoint types (`wep`, `hep`, `ns`, `net`), from an
//! endpoints file of ours or from `kubectl get pods -A -o json`, looked up by longest
//! prefix. Calico: felix/collector (endpoint.GetMetadata).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

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

/// Calico's private ranges (10/8, 172.16/12, 192.168/16), plus loopback, CGNAT and ULA.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 10
                || (o[0] == 172 && (16..32).contains(&o[1]))
                || (o[0] == 192 && o[1] == 168)
                || o[0] == 127
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
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
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len() + self.prefixes.len()
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
            let list = json.get("endpoints").unwrap_or(&json);
            let list = list.as_array().ok_or_else(|| {
                format!(
                    "{}: expected {{\"endpoints\": [...]}}, a list, or kubectl's pod list",
                    path.display()
                )
            })?;
            for (i, e) in list.iter().enumerate() {
                eps.load_entry(e)
                    .map_err(|m| format!("{}: endpoint #{i}: {m}", path.display()))?;
            }
        }
        Ok(eps)
    }

    fn load_entry(&mut self, e: &serde_json::Value) -> Result<(), String> {
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
        let ep = endpoint(
            kind,
            s("namespace"),
            name,
            s("generate_name"),
            e.get("labels"),
            e.get("local").and_then(|v| v.as_bool()).unwrap_or(false),
        );
        for c in cidrs {
            self.insert(c, ep.clone())?;
        }
        Ok(())
    }

    fn load_pods(&mut self, json: &serde_json::Value, node: &str) -> Result<(), String> {
        let items = json["items"].as_array().ok_or("\"items\" is not a list")?;
        for pod in items {
            let meta = &pod["metadata"];
            if pod["spec"]["hostNetwork"].as_bool() == Some(true) {
                continue; // their IP is the node's
            }
            let Some(name) = meta["name"].as_str() else {
                continue;
            };
            let local = pod["spec"]["nodeName"].as_str() == Some(node);
            let ep = endpoint(
                "wep",
                meta["namespace"].as_str(),
                name,
                meta["generateName"].as_str(),
                meta.get("labels"),
                local,
            );
            let mut ips: Vec<&str> = pod["status"]["podIPs"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p["ip"].as_str()).collect())
                .unwrap_or_default();
            if ips.is_empty() {
                ips.extend(pod["status"]["podIP"].as_str());
            }
            for ip in ips {
                self.insert(ip, ep.clone())?;
            }
        }
        Ok(())
    }
}

fn endpoint(
    kind: &str,
    ns: Option<&str>,
    name: &str,
    generate: Option<&str>,
    labels: Option<&serde_json::Value>,
    local: bool,
) -> Endpoint {
    let name_aggr = match generate.filter(|g| !g.is_empty()) {
        Some(g) => format!("{g}*"),
        None => name.to_string(),
    };
    let labels = labels
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
        .unwrap_or_default();
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
            endpoint("ns", Some("infra"), "corp-net", None, None, false),
        )
        .unwrap();
        e.insert(
            "10.1.2.0/24",
            endpoint("hep", None, "node-a", None, None, false),
        )
        .unwrap();
        e.insert(
            "10.1.2.7",
            endpoint(
                "wep",
                Some("web"),
                "nginx-86c57db685-x2x",
                Some("nginx-86c57db685-"),
                None,
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
        assert_eq!(&*e.lookup(ip("fd00::1")).name_aggr, "pvt");
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
