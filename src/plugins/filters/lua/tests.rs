use std::sync::Arc;

use super::convert::{c_f64_to_i64, MAX_DEPTH};
use super::*;
use crate::config::{Entry, PluginKind, ServiceConfig, Span};
use crate::event::Str;
use crate::pipeline::metrics::PluginMetrics;
use crate::pipeline::{CORE_COMMON_PROPS, CORE_MATCH_PROPS};

fn s(v: &str) -> Value {
    Value::Str(Arc::from(v))
}

fn map(pairs: &[(&str, Value)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| (Arc::from(*k), v.clone()))
        .collect()
}

fn props(entries: &[(&str, &str)]) -> Result<Props, ConfigError> {
    let entries = entries
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Entry {
            key: k.to_string(),
            value: v.to_string(),
            span: Span::new("t.conf", i as u32 + 2),
        })
        .collect();
    Props::new(
        PluginKind::Filter,
        "lua",
        Span::new("t.conf", 1),
        PROPS,
        &[CORE_COMMON_PROPS, CORE_MATCH_PROPS],
        entries,
    )
}

/// A filter running `code` (calling `cb`), with `extra` properties.
fn lua(code: &str, extra: &[(&str, &str)]) -> (LuaFilter, Arc<PluginMetrics>) {
    let mut all = vec![("call", "cb"), ("code", code)];
    all.extend_from_slice(extra);
    let p = props(&all).unwrap_or_else(|e| panic!("{e}"));
    let service = ServiceConfig::from_entries(&[]).unwrap();
    let parsers = crate::parser::Parsers::default();
    let metrics = Arc::new(PluginMetrics::default());
    let ctx = BuildContext {
        service: &service,
        instance: "lua.0",
        metrics: &metrics,
        dropped_tags: &[],
        parsers: &parsers,
        exit: &crate::pipeline::shutdown::ExitRequest::new(),
        main_dir: None,
        vars: &[],
        registry: &Default::default(),
    };
    let f = LuaFilter::new(&p, &ctx).unwrap_or_else(|e| panic!("{e}"));
    (f, metrics)
}

fn run(f: &mut LuaFilter, records: Vec<Record>) -> Vec<Record> {
    let mut records = records;
    f.filter("t", &mut records, Instant::now());
    records
}

fn rec(secs: i64, nanos: u32, body: Map) -> Record {
    Record::new(EventTime::new(secs, nanos), body)
}

fn errors(m: &PluginMetrics) -> u64 {
    m.all()
        .iter()
        .find(|x| x.metric == "agent_lua_errors_total")
        .map(|x| metrics::get(&x.value))
        .unwrap()
}

#[test]
fn c_conversions_are_x86s() {
    assert_eq!(c_f64_to_i64(1.9), 1);
    assert_eq!(c_f64_to_i64(-1.9), -1);
    assert_eq!(c_f64_to_i64(f64::NAN), i64::MIN);
    assert_eq!(c_f64_to_i64(9.3e18), i64::MIN);
    assert_eq!(c_f64_to_i64(-9.3e18), i64::MIN);
    // Fluent Bit's flb_time_from_double on a timestamp that went through a double.
    let t = EventTime::new(1_796_032_800, 123_456_789);
    let d = t.secs as f64 + t.nanos as f64 / 1e9;
    assert_eq!(
        time_from_double(d),
        EventTime::new(1_796_032_800, 123_456_716)
    );
    assert_eq!(time_from_double(100.25), EventTime::new(100, 250_000_000));
    assert_eq!(time_from_double(0.0), EventTime::new(0, 0));
}

#[test]
fn codes_drop_keep_replace_and_split() {
    let (mut f, m) = lua(
        "function cb(tag, ts, r)
           if r.k == 'drop' then return -1 end
           if r.k == 'keep' then r.x = 1; return 0, 0, {} end
           if r.k == 'time' then r.x = 1; return 1, 5.5, r end
           if r.k == 'split' then return 2, 0, {{a = 1}, {b = tag}} end
           return 2, 0, r
         end",
        &[],
    );
    let out = run(
        &mut f,
        ["drop", "keep", "time", "split", "other"]
            .iter()
            .map(|k| rec(7, 1, map(&[("k", s(k))])))
            .collect(),
    );
    assert_eq!(
        out,
        vec![
            rec(7, 1, map(&[("k", s("keep"))])),
            rec(
                5,
                500_000_000,
                map(&[("k", s("time")), ("x", Value::UInt(1))])
            ),
            rec(7, 1, map(&[("a", Value::UInt(1))])),
            rec(7, 1, map(&[("b", s("t"))])),
            rec(7, 1, map(&[("k", s("other"))])),
        ]
    );
    assert_eq!(errors(&m), 0);
}

#[test]
fn numbers_come_back_as_fluent_bit_packs_them() {
    let (mut f, _) = lua(
        "function cb(tag, ts, r) r.third = 1 / 3; r.whole = 2.0; r.neg = -0.0 return 2, ts, r end",
        &[],
    );
    let out = run(
        &mut f,
        vec![rec(
            1,
            0,
            map(&[
                ("f", Value::Float(1.0)),
                ("big", Value::UInt(u64::MAX)),
                ("i", Value::Int(-5)),
                ("near", Value::UInt((1 << 53) + 1)),
            ]),
        )],
    );
    assert_eq!(
        out[0].body,
        map(&[
            ("f", Value::UInt(1)),
            ("big", Value::Int(i64::MIN)),
            ("i", Value::Int(-5)),
            ("near", Value::UInt(1 << 53)),
            ("neg", Value::UInt(0)),
            ("third", Value::Float(1.0 / 3.0)),
            ("whole", Value::UInt(2)),
        ])
    );
}

#[test]
fn keys_keep_their_order_and_new_ones_follow_sorted() {
    let (mut f, _) = lua(
        "function cb(tag, ts, r)
           r.zeta = 1; r.alpha = 2; r.b = nil; r.m.new = true; r.m.a = 'changed'
           return 2, ts, r
         end",
        &[],
    );
    let body = map(&[
        ("c", s("1")),
        ("b", s("2")),
        ("a", s("3")),
        (
            "m",
            Value::Map(map(&[("z", Value::UInt(1)), ("a", s("x"))])),
        ),
    ]);
    for _ in 0..20 {
        let out = run(&mut f, vec![rec(1, 0, body.clone())]);
        assert_eq!(
            out[0].body,
            map(&[
                ("c", s("1")),
                ("a", s("3")),
                (
                    "m",
                    Value::Map(map(&[
                        ("z", Value::UInt(1)),
                        ("a", s("changed")),
                        ("new", Value::Bool(true)),
                    ]))
                ),
                ("alpha", Value::UInt(2)),
                ("zeta", Value::UInt(1)),
            ])
        );
    }
}

#[test]
fn unchanged_strings_are_the_same_allocation() {
    let (mut f, _) = lua("function cb(tag, ts, r) r.n = 1 return 2, ts, r end", &[]);
    let v: Arc<str> = Arc::from("a long enough value");
    let out = run(
        &mut f,
        vec![rec(1, 0, map(&[("v", Value::Str(v.clone()))]))],
    );
    let Value::Str(got) = &out[0].body[0].1 else {
        panic!()
    };
    assert!(Arc::ptr_eq(got, &v));
}

/// A nested map the script left alone is kept as it was (the same allocations, not
/// read back); one it changed anywhere below, added to or removed from is read again.
#[test]
fn untouched_nested_maps_are_kept_and_touched_ones_read_again() {
    let v: Arc<str> = Arc::from("a long enough value");
    let nested = || {
        map(&[
            ("v", Value::Str(v.clone())),
            (
                "labels",
                Value::Map(map(&[("app", s("web")), ("n", Value::UInt(3))])),
            ),
            ("empty", Value::Map(Map::new())),
        ])
    };
    let body = || map(&[("kubernetes", Value::Map(nested())), ("msg", s("hi"))]);
    let first_str = |r: &Record| -> Arc<str> {
        let Value::Map(k) = &r.body[0].1 else {
            panic!()
        };
        let Value::Str(got) = &k[0].1 else { panic!() };
        got.clone()
    };
    for (code, want) in [
        ("r.env = 'prod'", None),
        ("r.kubernetes.labels.app = 'api'", Some(("app", s("api")))),
        ("r.kubernetes.labels.n = 4", Some(("n", Value::UInt(4)))),
        ("r.kubernetes.labels.extra = 'x'", Some(("extra", s("x")))),
        ("r.kubernetes.labels.app = nil", Some(("app", Value::Nil))),
    ] {
        let (mut f, _) = lua(
            &format!("function cb(tag, ts, r) {code} return 2, ts, r end"),
            &[],
        );
        let input = rec(1, 0, body());
        let Value::Map(before) = &input.body[0].1 else {
            panic!()
        };
        let before = before.as_ptr();
        let out = run(&mut f, vec![input]);
        let Value::Map(k) = &out[0].body[0].1 else {
            panic!()
        };
        let Value::Map(labels) = &k[1].1 else {
            panic!()
        };
        match want {
            // Untouched: the very same map (not read back into a new one), same values.
            None => {
                assert_eq!(k.as_ptr(), before, "{code}: read back");
                assert!(Arc::ptr_eq(&first_str(&out[0]), &v), "{code}");
                assert_eq!(k, &nested(), "{code}");
            }
            Some(("app", Value::Nil)) => {
                assert_eq!(labels, &map(&[("n", Value::UInt(3))]), "{code}")
            }
            Some((key, value)) => {
                assert_eq!(
                    labels.iter().find(|(k, _)| &**k == key).map(|(_, v)| v),
                    Some(&value),
                    "{code}"
                );
                assert_eq!(k[0].1, Value::Str(v.clone()), "{code}");
            }
        }
    }
}

#[test]
fn empty_tables_arrays_holes_and_nulls() {
    let (mut f, _) = lua(
        "function cb(tag, ts, r)
           r.new_empty = {}
           r.seq = {1, 2, 3}
           r.holes = {[1] = 'a', [3] = 'c'}
           r.mixed = {1, k = 'dropped'}
           return 2, ts, r
         end",
        &[],
    );
    let out = run(
        &mut f,
        vec![rec(
            1,
            0,
            map(&[
                ("e", Value::Map(Map::new())),
                ("ea", Value::Array(vec![])),
                ("n", Value::Nil),
                ("tail_nil", Value::Array(vec![Value::UInt(1), Value::Nil])),
            ]),
        )],
    );
    assert_eq!(
        out[0].body,
        map(&[
            ("e", Value::Map(Map::new())),
            ("ea", Value::Array(vec![])),
            ("tail_nil", Value::Array(vec![Value::UInt(1)])),
            ("holes", Value::Array(vec![s("a"), Value::Nil, s("c")])),
            ("mixed", Value::Array(vec![Value::UInt(1)])),
            ("new_empty", Value::Map(Map::new())),
            (
                "seq",
                Value::Array(vec![Value::UInt(1), Value::UInt(2), Value::UInt(3)])
            ),
        ])
    );
    // With flb_null, nulls survive in maps and arrays.
    let (mut f, _) = lua(
        "function cb(tag, ts, r) r.x = flb_null return 2, ts, r end",
        &[("enable_flb_null", "on")],
    );
    let out = run(
        &mut f,
        vec![rec(
            1,
            0,
            map(&[("n", Value::Nil), ("a", Value::Array(vec![Value::Nil]))]),
        )],
    );
    assert_eq!(
        out[0].body,
        map(&[
            ("n", Value::Nil),
            ("a", Value::Array(vec![Value::Nil])),
            ("x", Value::Nil)
        ])
    );
}

#[test]
fn forced_types_match_record_keys_that_prefix_the_listed_ones() {
    let (mut f, _) = lua(
        "function cb(tag, ts, r)
           r.count = 10.7; r.cou = -2.5; r.other = 1.5; r.list = {}; r.li = {a = 1}
           return 2, ts, r
         end",
        &[("type_int_key", "count"), ("type_array_key", "list")],
    );
    let out = run(&mut f, vec![rec(1, 0, Map::new())]);
    assert_eq!(
        out[0].body,
        map(&[
            ("cou", Value::Int(-2)),
            ("count", Value::UInt(10)),
            ("li", Value::Array(vec![])),
            ("list", Value::Array(vec![])),
            ("other", Value::Float(1.5)),
        ])
    );
}

#[test]
fn time_as_table_and_five_parameters() {
    let (mut f, _) = lua(
        "function cb(tag, ts, group, meta, r)
           r.sec = ts.sec; r.nsec = ts.nsec; r.g = next(group) == nil
           meta.seen = true
           return 1, {sec = 9, nsec = 8}, meta, r
         end",
        &[("time_as_table", "on")],
    );
    let mut r = rec(3, 4, Map::new());
    r.metadata = map(&[("m", s("x"))]);
    let out = run(&mut f, vec![r]);
    assert_eq!(out[0].time, EventTime::new(9, 8));
    assert_eq!(
        out[0].metadata,
        map(&[("m", s("x")), ("seen", Value::Bool(true))])
    );
    assert_eq!(
        out[0].body,
        map(&[
            ("g", Value::Bool(true)),
            ("nsec", Value::UInt(4)),
            ("sec", Value::UInt(3)),
        ])
    );
}

#[test]
fn failures_keep_the_record_count_and_never_stop() {
    let (mut f, m) = lua(
        "function cb(tag, ts, r)
           if r.k == 'err' then error('boom') end
           if r.k == 'cycle' then r.self = r end
           if r.k == 'fn' then r.f = print end
           if r.k == 'str' then return 1, ts, 'text' end
           if r.k == 'arr' then return 1, ts, {1, 2} end
           if r.k == 'code' then return 7, ts, r end
           r.ok = true
           return 2, ts, r
         end",
        &[],
    );
    let keys = ["err", "cycle", "fn", "str", "arr", "code", "err", "fine"];
    let input: Vec<Record> = keys
        .iter()
        .map(|k| rec(1, 0, map(&[("k", s(k))])))
        .collect();
    let out = run(&mut f, input.clone());
    assert_eq!(&out[..7], &input[..7]);
    assert_eq!(
        out[7].body,
        map(&[("k", s("fine")), ("ok", Value::Bool(true))])
    );
    assert_eq!(errors(&m), 7);
    // "err" twice: one message each, logged once.
    assert_eq!(f.reported.len(), 6);
    assert!(f
        .reported
        .iter()
        .any(|e| e.contains(&format!("deeper than {MAX_DEPTH}"))));
    assert!(f
        .reported
        .contains("error code 2: [string \"fluentbit.lua\"]:2: boom"));
    assert!(f
        .reported
        .contains("unexpected Lua script return code 7, original record will be kept."));
}

#[test]
fn distinct_errors_stop_being_logged_past_the_limit() {
    let (mut f, m) = lua("function cb(tag, ts, r) error(r.k) end", &[]);
    let input = (0..MAX_REPORTED + 50)
        .map(|i| rec(1, 0, map(&[("k", s(&i.to_string()))])))
        .collect();
    let out = run(&mut f, input);
    assert_eq!(out.len(), MAX_REPORTED + 50);
    assert_eq!(errors(&m), (MAX_REPORTED + 50) as u64);
    assert_eq!(f.reported.len(), MAX_REPORTED + 1);
}

#[test]
fn the_callback_is_the_function_named_at_load() {
    // Fluent Bit looks the global up per record; here the function is held from load.
    let (mut f, _) = lua(
        "function cb(tag, ts, r) r.v = 1; cb = nil return 2, ts, r end",
        &[],
    );
    let out = run(&mut f, vec![rec(1, 0, Map::new()), rec(1, 0, Map::new())]);
    assert_eq!(out[1].body, map(&[("v", Value::UInt(1))]));
}

#[test]
fn config_errors_name_the_property_line() {
    let service = ServiceConfig::from_entries(&[]).unwrap();
    let parsers = crate::parser::Parsers::default();
    let metrics = PluginMetrics::default();
    let ctx = BuildContext {
        service: &service,
        instance: "lua.0",
        metrics: &metrics,
        dropped_tags: &[],
        parsers: &parsers,
        exit: &crate::pipeline::shutdown::ExitRequest::new(),
        main_dir: None,
        vars: &[],
        registry: &Default::default(),
    };
    let err = |entries: &[(&str, &str)]| match build(&props(entries).unwrap(), &ctx) {
        Ok(_) => panic!("{entries:?} accepted"),
        Err(e) => e.to_string(),
    };
    let e = err(&[("call", "cb"), ("code", "function cb(")]);
    assert!(e.starts_with("t.conf:3: "), "{e}");
    assert!(e.contains("[string \"fluentbit.lua\"]:1:"), "{e}");
    let e = err(&[("code", "x = 1"), ("call", "cb")]);
    assert!(
        e.starts_with("t.conf:3: ") && e.contains("function cb is not found"),
        "{e}"
    );
    let e = err(&[("script", "/nonexistent/s.lua"), ("call", "cb")]);
    assert!(
        e.starts_with("t.conf:2: ") && e.contains("cannot access script"),
        "{e}"
    );
}

#[test]
fn flb_env_holds_the_config_variables() {
    let service = ServiceConfig::from_entries(&[]).unwrap();
    let parsers = crate::parser::Parsers::default();
    let metrics = PluginMetrics::default();
    let vars = vec![
        ("A".to_string(), "aaa".to_string()),
        ("EMPTY".to_string(), String::new()),
    ];
    let ctx = BuildContext {
        service: &service,
        instance: "lua.0",
        metrics: &metrics,
        dropped_tags: &[],
        parsers: &parsers,
        exit: &crate::pipeline::shutdown::ExitRequest::new(),
        main_dir: None,
        vars: &vars,
        registry: &Default::default(),
    };
    let code = "function cb(tag, ts, r)
                  r.a = FLB_ENV.A; r.empty = FLB_ENV.EMPTY == nil
                  r.host = FLB_ENV.HOSTNAME ~= nil
                  return 2, ts, r
                end";
    let p = props(&[("call", "cb"), ("code", code)]).unwrap();
    let mut f = LuaFilter::new(&p, &ctx).unwrap();
    let out = run(&mut f, vec![rec(1, 0, Map::new())]);
    // Fluent Bit presets HOSTNAME only when the environment has none.
    let host = std::env::var_os("HOSTNAME").is_none();
    assert_eq!(
        out[0].body,
        map(&[
            ("a", s("aaa")),
            ("empty", Value::Bool(true)),
            ("host", Value::Bool(host)),
        ])
    );
}

#[test]
fn large_records_keep_their_order() {
    let (mut f, _) = lua(
        "function cb(tag, ts, r)
           r.k050 = 'changed'; r.k010 = nil; r.new = 1
           r.inner = {}
           for k, v in pairs(r.big) do r.inner[k] = v end
           return 2, ts, r
         end",
        &[],
    );
    let keys: Vec<String> = (0..100).map(|i| format!("k{i:03}")).collect();
    let mut body: Map = keys.iter().map(|k| (Arc::from(k.as_str()), s(k))).collect();
    let big: Map = keys
        .iter()
        .rev()
        .map(|k| (Arc::from(k.as_str()), Value::UInt(1)))
        .collect();
    body.push((Arc::from("big"), Value::Map(big.clone())));
    let out = run(&mut f, vec![rec(1, 0, body.clone())]);
    let mut want: Map = body
        .into_iter()
        .filter(|(k, _)| &**k != "k010")
        .map(|(k, v)| {
            let v = if &*k == "k050" { s("changed") } else { v };
            (k, v)
        })
        .collect();
    // `inner` is a new table: its keys follow in byte order.
    let mut sorted = big;
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    want.push((Arc::from("inner"), Value::Map(sorted)));
    want.push((Arc::from("new"), Value::UInt(1)));
    assert_eq!(out[0].body, want);
}

#[test]
fn a_record_too_deep_for_lua_passes_unchanged() {
    let (mut f, m) = lua("function cb(tag, ts, r) r.x = 1 return 2, ts, r end", &[]);
    let mut v = Value::UInt(1);
    for _ in 0..MAX_DEPTH + 10 {
        v = Value::Array(vec![v]);
    }
    let deep = rec(1, 0, map(&[("d", v)]));
    let out = run(&mut f, vec![deep.clone(), rec(1, 0, Map::new())]);
    assert_eq!(out[0], deep);
    assert_eq!(out[1].body, map(&[("x", Value::UInt(1))]));
    assert_eq!(errors(&m), 1);
    assert!(f
        .reported
        .iter()
        .any(|e| e.starts_with("the record cannot be given to Lua")));
}

#[test]
fn a_script_that_changes_a_record_metatable_affects_that_record_only() {
    // Fluent Bit's runtime test invalid_metatable: a non-string key is ignored.
    let (mut f, m) = lua(
        "function cb(tag, ts, r)
           if r.k == 'poke' then getmetatable(r)[10] = 'hoge' end
           if r.k == 'retype' then getmetatable(r).type = 1 end
           r.seen = true
           return 2, ts, r
         end",
        &[],
    );
    let keys = ["poke", "after", "retype", "after"];
    let input: Vec<Record> = keys
        .iter()
        .map(|k| rec(1, 0, map(&[("k", s(k))])))
        .collect();
    let out = run(&mut f, input);
    // `retype` made the record an array (`#r` is 0): no record, as in Fluent Bit.
    let seen = |k: &str| rec(1, 0, map(&[("k", s(k)), ("seen", Value::Bool(true))]));
    assert_eq!(out, vec![seen("poke"), seen("after"), seen("after")]);
    assert_eq!(errors(&m), 0);
    assert!(f.retyped);
}

#[test]
fn an_array_metatable_a_script_kept_is_watched_in_later_records() {
    // The first record gives the script an array; it keeps it and retypes the shared
    // array metatable while a later record without arrays is running. That record's
    // own tables are unaffected, and later arrays are still arrays.
    let (mut f, _) = lua(
        "local kept
         function cb(tag, ts, r)
           if r.a then kept = r.a end
           if r.k == 'poke' then getmetatable(kept).type = 2 end
           r.seen = true
           return 2, ts, r
         end",
        &[],
    );
    let arr = || Value::Array(vec![s("x"), s("y")]);
    let out = run(
        &mut f,
        vec![
            rec(1, 0, map(&[("a", arr())])),
            rec(1, 0, map(&[("k", s("poke"))])),
            rec(1, 0, map(&[("b", arr())])),
        ],
    );
    let seen = Value::Bool(true);
    assert_eq!(
        out,
        vec![
            rec(1, 0, map(&[("a", arr()), ("seen", seen.clone())])),
            rec(1, 0, map(&[("k", s("poke")), ("seen", seen.clone())])),
            rec(1, 0, map(&[("b", arr()), ("seen", seen)])),
        ]
    );
    assert!(f.retyped, "the change was seen");
}

#[test]
fn strings_are_right_whatever_the_strings_cached() {
    // More distinct strings than the string table has slots, over several batches,
    // as keys and as values, some shared between records (one allocation, as parsers
    // and the kubernetes filter make them) and some not: the script sees each
    // record's own.
    let (mut f, m) = lua(
        "function cb(tag, ts, r)
           local ks = {}
           for k, v in pairs(r) do if k ~= 'all' then ks[#ks + 1] = k .. '=' .. v end end
           table.sort(ks)
           r.all = table.concat(ks, ',')
           return 2, ts, r
         end",
        &[],
    );
    let shared: Vec<Str> = (0..700).map(|i| Str::from(format!("s{i}"))).collect();
    // Strings too long to be kept are pushed each time.
    let long = Str::from("L".repeat(2000));
    let at = |i: usize| {
        if i.is_multiple_of(50) {
            long.clone()
        } else {
            shared[i % shared.len()].clone()
        }
    };
    for batch in 0..6 {
        let mut input = Vec::new();
        let mut want = Vec::new();
        for r in 0..300usize {
            let own = Str::from(format!("k{batch}_{r}"));
            let (a, b) = (at(r + batch * 50), at(r * 7 + batch));
            let mut body: Map = vec![
                (own, Value::Str(at(r * 3))),
                (a.clone(), s(&format!("v{r}"))),
            ];
            if !Arc::ptr_eq(&a, &b) {
                body.push((b, Value::Str(at(r + 1))));
            }
            let mut ks: Vec<String> = body
                .iter()
                .map(|(k, v)| match v {
                    Value::Str(v) => format!("{k}={v}"),
                    _ => unreachable!(),
                })
                .collect();
            ks.sort();
            let mut expect = body.clone();
            expect.push((Str::from("all"), s(&ks.join(","))));
            input.push(rec(1, 0, body));
            want.push(rec(1, 0, expect));
        }
        assert_eq!(run(&mut f, input), want, "batch {batch}");
    }
    assert_eq!(errors(&m), 0);
}

/// The GC pause the script sees (read and put back).
const PAUSE: &str = "local p = collectgarbage('setpause', 100); collectgarbage('setpause', p)";

#[test]
fn a_small_heap_is_collected_with_headroom_and_a_scripts_own_pause_is_kept() {
    let cb = format!("function cb(tag, ts, r) {PAUSE} r.pause = p return 2, ts, r end");
    let pause_seen = |f: &mut LuaFilter| {
        let out = run(f, vec![rec(1, 0, map(&[]))]);
        match out[0].body.iter().find(|(k, _)| &**k == "pause") {
            Some((_, Value::UInt(p))) => *p,
            other => panic!("{other:?}"),
        }
    };
    // LuaJIT's default at first; after a batch, the heap (tens of KB) plus 1 MiB.
    let (mut f, _) = lua(&cb, &[]);
    assert_eq!(pause_seen(&mut f), 200);
    let paced = pause_seen(&mut f);
    assert!((1000..=10_000).contains(&paced), "{paced}");
    // A heap of several MiB keeps close to LuaJIT's own pace.
    let big = format!("big = {{}} for i = 1, 200000 do big[i] = {{i}} end {cb}");
    let (mut f, _) = lua(&big, &[]);
    pause_seen(&mut f);
    let paced = pause_seen(&mut f);
    assert!((200..300).contains(&paced), "{paced}");
    // A script that sets its own pause keeps it.
    let own = format!("collectgarbage('setpause', 150) {cb}");
    let (mut f, _) = lua(&own, &[]);
    for _ in 0..3 {
        assert_eq!(pause_seen(&mut f), 150);
    }
}

#[test]
fn the_size_change_reported_is_the_records_size_change() {
    // Every way a record changes: values set (longer, shorter, other types), keys
    // removed and added (crossing the map header's size steps), nested maps touched,
    // metadata replaced, records dropped and split.
    let (mut f, m) = lua(
        "function cb(tag, ts, g, meta, r)
           if r.op == 'drop' then return -1, ts, meta, r end
           if r.op == 'split' then return 1, ts, {meta, {x = 1}}, {r, {a = 'b'}, {}} end
           if r.op == 'keep' then return 0, ts, meta, r end
           if r.op == 'grow' then for i = 1, 20 do r['k' .. i] = string.rep('v', i * 10) end end
           if r.op == 'shrink' then r.long = nil; r.n = 'short'; r.nested.inner.x = 7 end
           r.seen = true
           meta.m = 'data'
           return 2, ts, meta, r
         end",
        &[],
    );
    let long = s(&"x".repeat(300));
    let nested = Value::Map(map(&[("inner", Value::Map(map(&[("x", s("y"))])))]));
    let input = ["drop", "split", "keep", "grow", "shrink", "plain"]
        .iter()
        .map(|op| {
            let mut r = rec(
                1,
                0,
                map(&[
                    ("op", s(op)),
                    ("long", long.clone()),
                    ("n", Value::UInt(70_000)),
                    ("nested", nested.clone()),
                ]),
            );
            r.metadata = map(&[("old", s("meta"))]);
            r
        })
        .collect::<Vec<_>>();
    let size = |rs: &[Record]| rs.iter().map(Record::encoded_len).sum::<u64>() as i64;
    let before = size(&input);
    let mut records = input;
    let result = f.filter("t", &mut records, Instant::now());
    assert_eq!(records.len(), 3 + 1 + 3, "split into 3, one dropped");
    assert_eq!(result, FilterResult::Resized(size(&records) - before));
    assert_eq!(errors(&m), 0);
}
