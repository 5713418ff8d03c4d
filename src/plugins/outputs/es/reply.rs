//! What a bulk reply says about each document.
//! Fluent Bit: plugins/out_es/es.c (elasticsearch_error_check)
//!
//! Fluent Bit retries the whole chunk when any item failed (a 409 version conflict
//! aside). Here each item is judged on its own: 2xx and 409 (the document is already
//! there: a `create` retried) are delivered, 429 and 5xx are sent again, any other 4xx
//! (a mapping error, a bad index name) would fail the same way again and is dropped
//! with its reason.

use serde_json::Value as Json;

/// An item's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Retry,
    Dropped,
}

pub fn fate(status: u64) -> Fate {
    match status {
        200..=299 | 409 => Fate::Delivered,
        429 => Fate::Retry,
        400..=499 => Fate::Dropped,
        _ => Fate::Retry,
    }
}

/// The reply read.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// `"errors":false`.
    AllDelivered,
    /// `"errors":true` with one item per document: each item's status and, for a
    /// failed one, its `error.type: error.reason`.
    Items(Vec<(u64, Option<String>)>),
    /// Not a bulk reply this can read item by item (Fluent Bit retries these).
    Unreadable(String),
}

/// Reads `body`, a reply to a bulk request of `docs` documents.
pub fn read(body: &[u8], docs: usize) -> Verdict {
    if body.is_empty() {
        return Verdict::Unreadable("empty response".into());
    }
    // Elasticsearch writes `"errors"` right after `"took"`: a success is told from the
    // head without parsing thousands of items.
    let head = &body[..body.len().min(128)];
    if memchr::memmem::find(head, b"\"errors\":false").is_some() {
        return Verdict::AllDelivered;
    }
    let root: Json = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            if memchr::memmem::find(body, b"\"errors\":false,\"items\":[").is_some() {
                return Verdict::AllDelivered;
            }
            return Verdict::Unreadable(format!("could not read the JSON response: {e}"));
        }
    };
    let Some(obj) = root.as_object() else {
        return Verdict::Unreadable("the response is not a JSON object".into());
    };
    match obj.get("errors") {
        Some(Json::Bool(false)) => return Verdict::AllDelivered,
        Some(Json::Bool(true)) => {}
        _ => return Verdict::Unreadable("the response has no boolean 'errors'".into()),
    }
    let Some(items) = obj.get("items").and_then(Json::as_array) else {
        return Verdict::Unreadable("'errors' is true but there are no 'items'".into());
    };
    if items.len() != docs {
        return Verdict::Unreadable(format!("{} items for {docs} documents", items.len()));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let inner = item
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.values().next())
            .and_then(Json::as_object);
        let Some(inner) = inner else {
            return Verdict::Unreadable("an item is not {\"action\":{...}}".into());
        };
        let Some(status) = inner.get("status").and_then(Json::as_u64) else {
            return Verdict::Unreadable("an item has no numeric 'status'".into());
        };
        let reason = inner.get("error").map(|e| match e {
            Json::Object(o) => {
                let s = |k: &str| o.get(k).and_then(Json::as_str).unwrap_or("");
                match (s("type"), s("reason")) {
                    ("", "") => e.to_string(),
                    (t, "") => t.to_string(),
                    (t, r) => format!("{t}: {r}"),
                }
            }
            Json::String(s) => s.clone(),
            other => other.to_string(),
        });
        out.push((status, reason));
    }
    Verdict::Items(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_read_one_by_one() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"a","status":201}},
            {"create":{"_index":"a","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}},
            {"create":{"_index":"a","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"_index":"a","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}}]}"#;
        let Verdict::Items(items) = read(body, 4) else {
            panic!()
        };
        let fates: Vec<Fate> = items.iter().map(|(s, _)| fate(*s)).collect();
        assert_eq!(
            fates,
            [Fate::Delivered, Fate::Dropped, Fate::Retry, Fate::Delivered]
        );
        assert_eq!(
            items[1].1.as_deref(),
            Some("mapper_parsing_exception: failed to parse field [n]")
        );
        assert_eq!(items[0].1, None);
    }

    #[test]
    fn successes_and_unreadable_replies() {
        assert_eq!(
            read(br#"{"took":1,"errors":false,"items":[]}"#, 5),
            Verdict::AllDelivered
        );
        // Cut short (a proxy's limit): Fluent Bit's strstr fallback.
        let mut long = br#"{"took":1,"#.to_vec();
        long.extend_from_slice(&[b' '; 200]);
        long.extend_from_slice(br#""errors":false,"items":[{"create":"#);
        assert_eq!(read(&long, 1), Verdict::AllDelivered);
        assert!(matches!(read(b"", 1), Verdict::Unreadable(_)));
        assert!(matches!(read(b"ok", 1), Verdict::Unreadable(_)));
        assert!(matches!(
            read(br#"{"errors":true,"items":[{"create":{"status":400}}]}"#, 2),
            Verdict::Unreadable(_)
        ));
        assert!(matches!(read(br#"[1]"#, 1), Verdict::Unreadable(_)));
    }

    #[test]
    fn fates_by_status() {
        for s in [200, 201, 409] {
            assert_eq!(fate(s), Fate::Delivered, "{s}");
        }
        for s in [429, 500, 502, 503, 302] {
            assert_eq!(fate(s), Fate::Retry, "{s}");
        }
        for s in [400, 403, 404, 413] {
            assert_eq!(fate(s), Fate::Dropped, "{s}");
        }
    }
}
