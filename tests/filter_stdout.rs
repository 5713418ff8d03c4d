//! The `stdout` filter prints each record as it is at its place in the filter chain and
//! passes it on unchanged (Fluent Bit's `[N] tag: [sec.nsec, {meta}, {body}]` line).

mod common;
use common::*;

#[test]
fn prints_records_between_filters_and_passes_them_on() {
    let d = Dir::new();
    d.file(
        "c.conf",
        "[INPUT]\n    name dummy\n    tag app\n    dummy {\"message\":\"hi\"}\n    samples 1\n\
         [FILTER]\n    name stdout\n    match *\n\
         [FILTER]\n    name record_modifier\n    match *\n    record env prod\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
    );
    let mut a = Agent::spawn_in(&d, &["-c", "c.conf"], Some(d.path()));
    a.wait_lines(2, std::time::Duration::from_secs(20));
    let o = a.stop(std::time::Duration::from_secs(10));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(lines[0].starts_with("[0] app: ["), "{}", o.stdout);
    assert!(
        lines[0].ends_with(", {}, {\"message\"=>\"hi\"}]"),
        "{}",
        o.stdout
    );
    assert_eq!(lines[1], "{\"message\":\"hi\",\"env\":\"prod\"}");
}
