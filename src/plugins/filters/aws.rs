//! `aws` filter: adds the EC2 instance's metadata (availability zone, instance id and
//! type, private IP, VPC, AMI, account, hostname, tags) from the instance metadata
//! service ([`crate::aws::imds`]) to every record.
//! Fluent Bit: plugins/filter_aws/aws.c
//!
//! Keys are appended after the record's own, in Fluent Bit's order: `az`,
//! `ec2_instance_id`, `ec2_instance_type`, `private_ip`, `vpc_id`, `ami_id`,
//! `account_id`, `hostname`, the instance's tags (in the service's order, filtered by
//! `tags_include` or `tags_exclude`), then `aws_entity_ec2_instance_id` and
//! `aws_entity_account_id` with `enable_entity`.
//!
//! The metadata is fetched once, when the first records arrive (which wait for that
//! first attempt, as Fluent Bit's start waits for its own); what could not be fetched
//! is fetched again every `retry_interval_s` seconds while records pass with what is
//! known. Fluent Bit fetches again inside the filter, holding up the pipeline for as
//! long as the service takes to answer; agent fetches on a thread of its own. When the
//! service does not answer at all, the rest of an attempt is not tried (Fluent Bit
//! tries each item, each after its own timeout).

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::aws::imds::{Imds, ImdsError, Version};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{Record, Str, Value};
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("imds_version", PropKind::Str, Some("v2"), "Instance metadata service version: v1 or v2 (a session token)."),
    PropSpec::new("az", PropKind::Bool, Some("true"), "Add the availability zone (az)."),
    PropSpec::new("ec2_instance_id", PropKind::Bool, Some("true"), "Add the instance id (ec2_instance_id)."),
    PropSpec::new("ec2_instance_type", PropKind::Bool, Some("false"), "Add the instance type (ec2_instance_type)."),
    PropSpec::new("private_ip", PropKind::Bool, Some("false"), "Add the private IPv4 address (private_ip)."),
    PropSpec::new("vpc_id", PropKind::Bool, Some("false"), "Add the VPC id (vpc_id)."),
    PropSpec::new("ami_id", PropKind::Bool, Some("false"), "Add the image id (ami_id)."),
    PropSpec::new("account_id", PropKind::Bool, Some("false"), "Add the account id (account_id)."),
    PropSpec::new("hostname", PropKind::Bool, Some("false"), "Add the instance's hostname (hostname)."),
    PropSpec::new("tags_enabled", PropKind::Bool, Some("false"), "Add the instance's tags (all of them unless tags_include or tags_exclude)."),
    PropSpec::new("tags_include", PropKind::Str, Some(""), "Comma-separated tag keys to add (others are left out)."),
    PropSpec::new("tags_exclude", PropKind::Str, Some(""), "Comma-separated tag keys to leave out (not with tags_include)."),
    PropSpec::new("retry_interval_s", PropKind::Int, Some("300"), "Seconds between attempts to fetch what could not be fetched."),
    PropSpec::new("enable_entity", PropKind::Bool, Some("false"), "Also add aws_entity_ec2_instance_id and aws_entity_account_id (for cloudwatch_logs entities)."),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "aws",
    description: "Add AWS Metadata",
    props: PROPS,
    build,
};

/// Longest the first records wait for the first attempt.
const FIRST_WAIT: Duration = Duration::from_secs(15);

/// Which tags are added.
#[derive(Clone, Debug)]
enum TagFilter {
    All,
    Include(Vec<String>),
    Exclude(Vec<String>),
}

impl TagFilter {
    fn keeps(&self, key: &str) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Include(l) => l.iter().any(|k| k == key),
            TagFilter::Exclude(l) => !l.iter().any(|k| k == key),
        }
    }
}

/// What the section asks for.
#[derive(Clone, Debug)]
struct Wanted {
    az: bool,
    instance_id: bool,
    instance_type: bool,
    private_ip: bool,
    vpc_id: bool,
    ami_id: bool,
    account_id: bool,
    hostname: bool,
    tags: Option<TagFilter>,
    entity: bool,
}

/// What was fetched so far (`None`: not yet, or not wanted).
#[derive(Default, Debug)]
struct Meta {
    az: Option<String>,
    instance_id: Option<String>,
    instance_type: Option<String>,
    private_ip: Option<String>,
    vpc_id: Option<String>,
    ami_id: Option<String>,
    account_id: Option<String>,
    hostname: Option<String>,
    /// The tags kept, in the service's order.
    tags: Option<Vec<(String, String)>>,
}

impl Meta {
    /// The keys to append, in Fluent Bit's order.
    fn fields(&self, w: &Wanted) -> Vec<(Str, Value)> {
        let mut out = Vec::new();
        let mut push = |k: &str, v: &Option<String>, on: bool| {
            if let (true, Some(v)) = (on, v) {
                out.push((Str::from(k), Value::Str(Str::from(v.as_str()))));
            }
        };
        push("az", &self.az, w.az);
        push("ec2_instance_id", &self.instance_id, w.instance_id);
        push("ec2_instance_type", &self.instance_type, w.instance_type);
        push("private_ip", &self.private_ip, w.private_ip);
        push("vpc_id", &self.vpc_id, w.vpc_id);
        push("ami_id", &self.ami_id, w.ami_id);
        push("account_id", &self.account_id, w.account_id);
        push("hostname", &self.hostname, w.hostname);
        if w.tags.is_some() {
            for (k, v) in self.tags.iter().flatten() {
                out.push((Str::from(k.as_str()), Value::Str(Str::from(v.as_str()))));
            }
        }
        if w.entity {
            if let (Some(id), Some(acct)) = (&self.instance_id, &self.account_id) {
                out.push((
                    Str::from("aws_entity_ec2_instance_id"),
                    Value::Str(Str::from(id.as_str())),
                ));
                out.push((
                    Str::from("aws_entity_account_id"),
                    Value::Str(Str::from(acct.as_str())),
                ));
            }
        }
        out
    }

    /// Whether everything wanted is in.
    fn complete(&self, w: &Wanted) -> bool {
        let need = |on: bool, v: &Option<String>| !on || v.is_some();
        need(w.az, &self.az)
            && need(w.instance_id || w.entity, &self.instance_id)
            && need(w.instance_type, &self.instance_type)
            && need(w.private_ip, &self.private_ip)
            && need(w.vpc_id, &self.vpc_id)
            && need(w.ami_id, &self.ami_id)
            && need(w.account_id || w.entity, &self.account_id)
            && need(w.hostname, &self.hostname)
            && (w.tags.is_none() || self.tags.is_some())
    }
}

/// Between the filter and its fetching thread.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The keys every record gets now.
    fields: Arc<Vec<(Str, Value)>>,
    /// The first attempt is over.
    first_done: bool,
}

struct AwsFilter {
    wanted: Wanted,
    version: Version,
    retry: Duration,
    who: String,
    shared: Arc<Shared>,
    started: bool,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let version = match props.str("imds_version").unwrap_or("v2") {
        v if v.eq_ignore_ascii_case("v1") => Version::V1,
        v if v.eq_ignore_ascii_case("v2") => Version::V2,
        _ => {
            return Err(props.error(
                "imds_version",
                "'v1' or 'v2' (Fluent Bit: Valid values are 'v1' and 'v2')",
            ))
        }
    };
    let on = |k: &str| props.bool(k) == Some(true);
    let list = |k: &str| -> Vec<String> {
        props
            .str(k)
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (include, exclude) = (list("tags_include"), list("tags_exclude"));
    let tags = if on("tags_enabled") {
        if props.is_set("tags_include") && props.is_set("tags_exclude") {
            return Err(ConfigError::invalid(
                props.span_of("tags_exclude"),
                "aws: configuration is invalid, both tags_include and tags_exclude are specified at the same time",
                Some("keep one of them".into()),
            ));
        }
        Some(if props.is_set("tags_include") {
            TagFilter::Include(include)
        } else if props.is_set("tags_exclude") {
            TagFilter::Exclude(exclude)
        } else {
            TagFilter::All
        })
    } else {
        None
    };
    let retry = props.int("retry_interval_s").unwrap_or(300);
    if retry < 0 {
        return Err(props.error("retry_interval_s", "a number of seconds, 0 or more"));
    }
    Ok(Box::new(AwsFilter {
        wanted: Wanted {
            az: on("az"),
            instance_id: on("ec2_instance_id"),
            instance_type: on("ec2_instance_type"),
            private_ip: on("private_ip"),
            vpc_id: on("vpc_id"),
            ami_id: on("ami_id"),
            account_id: on("account_id"),
            hostname: on("hostname"),
            tags,
            entity: on("enable_entity"),
        },
        version,
        // Fluent Bit's 0 tries on every flush; agent at most once a second.
        retry: Duration::from_secs(retry.max(1) as u64),
        who: format!("[filter:aws:{}]", ctx.instance),
        shared: Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }),
        started: false,
    }))
}

/// The items fetched, in Fluent Bit's order.
#[derive(Clone, Copy)]
enum Item {
    InstanceId,
    AccountId,
    InstanceType,
    PrivateIp,
    VpcId,
    AmiId,
    Hostname,
    Az,
    Tags,
}

const ORDER: [Item; 9] = [
    Item::InstanceId,
    Item::AccountId,
    Item::InstanceType,
    Item::PrivateIp,
    Item::VpcId,
    Item::AmiId,
    Item::Hostname,
    Item::Az,
    Item::Tags,
];

/// One attempt at what is still missing. Stops at the first item the service does
/// not answer for.
async fn attempt(imds: &Imds, w: &Wanted, m: &mut Meta, who: &str) {
    for item in ORDER {
        let simple = |on, slot, path, msg| (on, slot, path, msg);
        let (on, slot, path, msg): (bool, &mut Option<String>, &str, &str) = match item {
            Item::InstanceId => simple(
                w.instance_id || w.entity,
                &mut m.instance_id,
                "/latest/meta-data/instance-id/",
                "Failed to get instance ID",
            ),
            Item::AccountId => simple(
                w.account_id || w.entity,
                &mut m.account_id,
                "/latest/dynamic/instance-identity/document/",
                "Failed to get Account ID",
            ),
            Item::InstanceType => simple(
                w.instance_type,
                &mut m.instance_type,
                "/latest/meta-data/instance-type/",
                "Failed to get instance type",
            ),
            Item::PrivateIp => simple(
                w.private_ip,
                &mut m.private_ip,
                "/latest/meta-data/local-ipv4/",
                "Failed to get instance private IP",
            ),
            Item::AmiId => simple(
                w.ami_id,
                &mut m.ami_id,
                "/latest/meta-data/ami-id/",
                "Failed to get AMI ID",
            ),
            Item::Hostname => simple(
                w.hostname,
                &mut m.hostname,
                "/latest/meta-data/hostname/",
                "Failed to get Hostname",
            ),
            Item::Az => simple(
                w.az,
                &mut m.az,
                "/latest/meta-data/placement/availability-zone/",
                "Failed to get instance AZ",
            ),
            Item::VpcId | Item::Tags => {
                let r = match item {
                    Item::VpcId => fetch_vpc(imds, w, m).await,
                    _ => fetch_tags(imds, w, m, who).await,
                };
                if let Err((e, msg)) = r {
                    crate::error!("{who} {msg}: {e}");
                    if matches!(e, ImdsError::Unreachable(_)) {
                        return;
                    }
                }
                continue;
            }
        };
        if !on || slot.is_some() {
            continue;
        }
        match imds.get(path).await {
            Ok(text) => {
                *slot = Some(match item {
                    Item::AccountId => account_of(&text, who),
                    _ => text,
                })
            }
            Err(e) => {
                crate::error!("{who} {msg}: {e}");
                if matches!(e, ImdsError::Unreachable(_)) {
                    return;
                }
            }
        }
    }
}

/// `accountId` of the identity document; `NULL` when it has none (Fluent Bit's).
fn account_of(doc: &str, who: &str) -> String {
    let v: Option<serde_json::Value> = serde_json::from_str(doc).ok();
    match v
        .as_ref()
        .and_then(|v| v.get("accountId"))
        .and_then(|a| a.as_str())
    {
        Some(a) => a.to_string(),
        None => {
            crate::error!("{who} [imds] accountId is undefined in EC2 instance");
            "NULL".into()
        }
    }
}

async fn fetch_vpc(imds: &Imds, w: &Wanted, m: &mut Meta) -> Result<(), (ImdsError, &'static str)> {
    if !w.vpc_id || m.vpc_id.is_some() {
        return Ok(());
    }
    let fail = |e| (e, "Failed to get instance VPC ID");
    let mac = imds.get("/latest/meta-data/mac/").await.map_err(fail)?;
    let path = format!("/latest/meta-data/network/interfaces/macs/{mac}/vpc-id/");
    m.vpc_id = Some(imds.get(&path).await.map_err(fail)?);
    Ok(())
}

async fn fetch_tags(
    imds: &Imds,
    w: &Wanted,
    m: &mut Meta,
    who: &str,
) -> Result<(), (ImdsError, &'static str)> {
    let Some(filter) = &w.tags else { return Ok(()) };
    if m.tags.is_some() {
        return Ok(());
    }
    let fail = |e| (e, "Failed to get instance EC2 Tags");
    let list = match imds.get("/latest/meta-data/tags/instance").await {
        Ok(l) => l,
        Err(ImdsError::NotFound) => {
            crate::warn!(
                "{who} EC2 instance metadata tag request returned 404. This likely indicates your instance has no tags or the EC2 tagging metadata API is not enabled"
            );
            m.tags = Some(Vec::new());
            return Ok(());
        }
        Err(e) => return Err(fail(e)),
    };
    let mut tags = Vec::new();
    for key in list.split('\n').filter(|k| !k.is_empty()) {
        let value = imds
            .get(&format!("/latest/meta-data/tags/instance/{key}"))
            .await
            .map_err(|e| {
                crate::error!("{who} could not fetch value for tag {key}");
                fail(e)
            })?;
        let keep = filter.keeps(key);
        crate::debug!(
            "{who} found tag {key} which is included={}",
            i32::from(keep)
        );
        if keep {
            tags.push((key.to_string(), value));
        }
    }
    m.tags = Some(tags);
    Ok(())
}

/// The fetching thread: attempts until everything is in (or the filter is gone).
fn spawn(shared: Weak<Shared>, wanted: Wanted, version: Version, retry: Duration, who: String) {
    let fallback = shared.clone();
    let what = format!("{who} metadata fetcher");
    let started = crate::runtime::spawn("aws-imds", &what, move || async move {
        let imds = Imds::new(version);
        let mut meta = Meta::default();
        loop {
            attempt(&imds, &wanted, &mut meta, &who).await;
            let complete = meta.complete(&wanted);
            let Some(sh) = shared.upgrade() else { return };
            {
                let mut st = sh.state.lock().expect("aws filter lock");
                st.fields = Arc::new(meta.fields(&wanted));
                st.first_done = true;
            }
            sh.changed.notify_all();
            drop(sh);
            if complete {
                return;
            }
            crate::info!(
                "{who} EC2 metadata incomplete: records pass with what is known; trying again in {} s",
                retry.as_secs()
            );
            tokio::time::sleep(retry).await;
        }
    });
    if !started {
        if let Some(sh) = fallback.upgrade() {
            sh.state.lock().expect("aws filter lock").first_done = true;
        }
    }
}

impl AwsFilter {
    /// The keys to add now; the first call starts the fetcher and waits for its first
    /// attempt.
    fn fields(&mut self) -> Arc<Vec<(Str, Value)>> {
        if !self.started {
            self.started = true;
            spawn(
                Arc::downgrade(&self.shared),
                self.wanted.clone(),
                self.version,
                self.retry,
                self.who.clone(),
            );
            let shared = self.shared.clone();
            let wait = move || {
                let deadline = Instant::now() + FIRST_WAIT;
                let mut st = shared.state.lock().expect("aws filter lock");
                while !st.first_done {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    st = shared
                        .changed
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            };
            crate::pipeline::engine::blocking(wait);
        }
        self.shared
            .state
            .lock()
            .expect("aws filter lock")
            .fields
            .clone()
    }
}

impl Filter for AwsFilter {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        let fields = self.fields();
        if fields.is_empty() {
            return FilterResult::NoTouch;
        }
        for rec in records.iter_mut() {
            rec.body.extend(fields.iter().cloned());
        }
        FilterResult::Modified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Wanted {
        Wanted {
            az: true,
            instance_id: true,
            instance_type: false,
            private_ip: true,
            vpc_id: false,
            ami_id: false,
            account_id: true,
            hostname: false,
            tags: Some(TagFilter::Exclude(vec!["b".into()])),
            entity: true,
        }
    }

    #[test]
    fn fields_follow_fluent_bits_order() {
        let m = Meta {
            az: Some("z".into()),
            instance_id: Some("i".into()),
            private_ip: Some("p".into()),
            account_id: Some("a".into()),
            hostname: Some("h (not wanted)".into()),
            tags: Some(vec![("t".into(), "v".into())]),
            ..Meta::default()
        };
        let keys: Vec<String> = m
            .fields(&wanted())
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "az",
                "ec2_instance_id",
                "private_ip",
                "account_id",
                "t",
                "aws_entity_ec2_instance_id",
                "aws_entity_account_id"
            ]
        );
        assert!(m.complete(&wanted()));
        assert!(!Meta::default().complete(&wanted()));
    }

    #[test]
    fn tag_filters() {
        assert!(TagFilter::All.keeps("x"));
        assert!(TagFilter::Include(vec!["x".into()]).keeps("x"));
        assert!(!TagFilter::Include(vec!["x".into()]).keeps("y"));
        assert!(!TagFilter::Exclude(vec!["x".into()]).keeps("x"));
        assert_eq!(account_of(r#"{"accountId":"1"}"#, ""), "1");
        assert_eq!(account_of("{}", ""), "NULL");
    }
}
