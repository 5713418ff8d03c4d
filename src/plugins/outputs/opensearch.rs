//! `opensearch` output: records to OpenSearch (or Amazon OpenSearch Service, with
//! `aws_auth`) with the Bulk API. Fluent Bit: plugins/out_opensearch/opensearch.c,
//! os_conf.c
//!
//! The same bulk writer, client and reply handling as `es` (see there, including how
//! failed items are retried one by one); where out_opensearch differs from out_es,
//! so does this: `generate_id` hashes a document with XXH3-128 (Fluent Bit's
//! `cfl_hash_128bits`) and writes it as upper-case bytes; an `index` with `$` is a
//! record accessor pattern (`logs-$kubernetes['namespace_name']`) rendered per record;
//! a `pipeline` is asked for as `/_bulk/?pipeline=NAME`; there is no `cloud_id`,
//! `cloud_auth`, `http_api_key` or `upstream`.

use super::es::{self, Flavor, IdHash};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::http_client;
use crate::plugins::{BuildContext, Output, OutputPlugin};

const PROPS: &[PropSpec] = &[
    PropSpec::new("host", PropKind::Str, Some("127.0.0.1"), "OpenSearch host name or IP address."),
    PropSpec::new("port", PropKind::Int, Some("9200"), "OpenSearch TCP port."),
    PropSpec::new(
        "index",
        PropKind::Str,
        Some("fluent-bit"),
        "Index name: strftime patterns are expanded with the flush time; with $, a record accessor pattern rendered per record.",
    ),
    es::TYPE,
    es::SUPPRESS_TYPE_NAME,
    http_client::HTTP_USER,
    http_client::HTTP_PASSWD,
    es::COMPRESS,
    crate::aws::AUTH,
    crate::aws::REGION,
    crate::aws::STS_ENDPOINT,
    crate::aws::ROLE_ARN,
    crate::aws::EXTERNAL_ID,
    crate::aws::PROFILE,
    es::AWS_SERVICE_NAME,
    es::LOGSTASH_FORMAT,
    es::LOGSTASH_PREFIX,
    es::LOGSTASH_PREFIX_SEPARATOR,
    es::LOGSTASH_PREFIX_KEY,
    es::LOGSTASH_DATEFORMAT,
    es::TIME_KEY,
    es::TIME_KEY_FORMAT,
    es::TIME_KEY_NANOS,
    es::INCLUDE_TAG_KEY,
    es::TAG_KEY,
    es::BUFFER_SIZE,
    es::PATH,
    es::PIPELINE,
    es::GENERATE_ID,
    es::WRITE_OPERATION,
    es::ID_KEY,
    es::REPLACE_DOTS,
    es::CURRENT_TIME_INDEX,
    es::TRACE_OUTPUT,
    es::TRACE_ERROR,
    http_client::PROXY,
    http_client::RESPONSE_TIMEOUT,
    http_client::READ_IDLE_TIMEOUT,
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "opensearch",
    description: "OpenSearch",
    props: PROPS,
    workers: 2,
    net: true,
    build,
};

const OPENSEARCH: Flavor = Flavor {
    name: "opensearch",
    id_hash: IdHash::Xxh3,
    index_ra: true,
    pipeline_sep: "/",
    elastic: false,
};

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    es::build_flavor(props, ctx, &OPENSEARCH)
}
