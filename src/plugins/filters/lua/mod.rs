//! `lua` filter: a Lua function (LuaJIT, as in Fluent Bit) sees every record and says
//! what becomes of it.
//! Fluent Bit: plugins/filter_lua/lua.c, lua_config.c
//!
//! `function cb(tag, timestamp, record)` returns `code, timestamp, record`; a function
//! of five parameters, `cb(tag, timestamp, group, metadata, record)`, also sees the
//! record's metadata and returns `code, timestamp, metadata, record` (`group` is an
//! empty table: records here belong to no group). Codes, as in Fluent Bit 5.1.1:
//! - `-1` drops the record; `0` keeps it as it came;
//! - `1` replaces the record and its time; `2` replaces the record, keeping its time;
//! - the record returned may be an array of maps: one record each (none for `[]`),
//!   each with the time; with five parameters a metadata array of the same length
//!   gives each its own metadata;
//! - any other code keeps the record, with Fluent Bit's error.
//!
//! The timestamp goes in as a double (`sec + nsec / 1e9`: a code of 1 returning it
//! unchanged moves the time by that rounding, as in Fluent Bit) or, with
//! `time_as_table`, as `{sec = S, nsec = N}`.
//!
//! A record the function cannot handle is never fatal: an error raised in it, a value
//! that cannot be a record (a function, a table nested deeper than the limit or that
//! contains itself, more than the size limit), a timestamp of the wrong type: the record
//! passes unchanged, `agent_lua_errors_total` counts it and each distinct message is
//! logged once. Fluent Bit leaves the whole chunk unchanged instead (and aborts on a
//! table that contains itself, or on any error with `protected_mode off`, which here
//! still runs protected).
//!
//! Conversions between records and Lua values: see `convert.rs`.

mod convert;

use std::collections::HashSet;
use std::ffi::c_int;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use mlua::ffi;

use self::convert::{
    c_f64_to_i64, error_text, push_bytes, push_type_table, shared_metatables_intact, Forced, Kept,
    Pusher, Reader,
};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{map_len, EventTime, Map, Record, Value};
use crate::pipeline::metrics;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

const PROPS: &[PropSpec] = &[
    PropSpec::new("script", PropKind::Str, None, "The path of lua script."),
    PropSpec::new(
        "code",
        PropKind::Str,
        None,
        "String that contains the Lua script source code",
    ),
    PropSpec::new(
        "call",
        PropKind::Str,
        None,
        "Lua function name that will be triggered to do filtering.",
    ),
    PropSpec::new(
        "type_int_key",
        PropKind::Str,
        None,
        "If these keys are matched, the fields are converted to integer. If more than one key, delimit by space.",
    ),
    PropSpec::new(
        "type_array_key",
        PropKind::Str,
        None,
        "If these keys are matched, the fields are converted to array. If more than one key, delimit by space.",
    ),
    PropSpec::new(
        "protected_mode",
        PropKind::Bool,
        Some("true"),
        "If enabled, Lua script will be executed in protected mode. It prevents to crash when invalid Lua script is executed. (Always on here: an error never stops the agent.)",
    ),
    PropSpec::new(
        "time_as_table",
        PropKind::Bool,
        Some("false"),
        "If enabled, Fluent-bit will pass the timestamp as a Lua table with keys \"sec\" for seconds since epoch and \"nsec\" for nanoseconds.",
    ),
    PropSpec::new(
        "enable_flb_null",
        PropKind::Bool,
        Some("false"),
        "If enabled, null will be converted to flb_null in Lua. It is useful to prevent removing key/value since nil is a special value to remove key value from map in Lua.",
    ),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "lua",
    description: "Lua Scripting Filter",
    props: PROPS,
    build,
};

/// How many distinct error messages are logged; later ones are only counted.
const MAX_REPORTED: usize = 100;

struct LuaFilter {
    /// The filter's own Lua state, closed on drop.
    lua: mlua::Lua,
    /// The function named by `call`.
    func: mlua::Function,
    /// The metatables record maps and arrays share (`{type = 2}`, `{type = 1}`).
    meta: (mlua::Table, mlua::Table),
    /// The Lua strings of record strings, kept across batches (see `Pusher::push_str`).
    strings: mlua::Table,
    kept: Kept,
    /// A script changed a shared metatable (warned about once).
    retyped: bool,
    /// `call`, and the script path (or `code`), for messages.
    call: String,
    source: String,
    /// The function takes five parameters (group and metadata too).
    five_args: bool,
    time_as_table: bool,
    forced: Forced,
    /// Instance name for logs (`lua.0`, or the alias).
    name: String,
    errors: Arc<AtomicU64>,
    reported: HashSet<String>,
    /// The last batch's buffer, reused for the next one.
    spare: Vec<Record>,
    /// The GC pause last set by [`pace_gc`], or None once the script set its own.
    gc_pause: Option<c_int>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    Ok(Box::new(LuaFilter::new(props, ctx)?))
}

/// Where the Lua source came from.
struct Source {
    text: Vec<u8>,
    /// The chunk name Lua's messages show: `@path` (shown as the path) or Fluent Bit's
    /// `fluentbit.lua` for `code`.
    chunk_name: String,
    /// The script path or `code`, for messages.
    label: String,
    /// The property that gave it, for error locations.
    key: &'static str,
}

const SCRIPT_HELP: &str = "check the path (a relative one is tried from the working directory, then from the main config file's directory)";

fn source(props: &Props, ctx: &BuildContext, prefix: &str) -> Result<Source, ConfigError> {
    if let Some(code) = props.str("code") {
        return Ok(Source {
            text: code.as_bytes().to_vec(),
            chunk_name: "fluentbit.lua".into(),
            label: "code".into(),
            key: "code",
        });
    }
    let Some(script) = props.str("script") else {
        return Err(ConfigError::invalid(
            props.span(),
            format!("{prefix}: no script path defined"),
            Some("add 'script FILE.lua', or the Lua source itself as 'code'".into()),
        ));
    };
    let at = props.span_of("script");
    let path = crate::config::resolve_path(script, ctx.main_dir).map_err(|searched| {
        let msg = format!(
            "{prefix}: cannot access script '{script}' (searched: {})",
            searched.join(", ")
        );
        ConfigError::invalid(at, msg, Some(SCRIPT_HELP.into()))
    })?;
    let text =
        crate::config::read_regular_file(&path, crate::config::MAX_CONFIG_FILE).map_err(|e| {
            let msg = format!("{prefix}: cannot access script '{}': {e}", path.display());
            ConfigError::invalid(at, msg, Some("make the file readable by the agent".into()))
        })?;
    let label = path.display().to_string();
    Ok(Source {
        text,
        chunk_name: format!("@{label}"),
        label,
        key: "script",
    })
}

/// A Lua state as Fluent Bit prepares one: every standard library (C modules too, as
/// `luaL_openlibs` gives), `FLB_ENV`, and `flb_null` when asked for.
fn new_state(ctx: &BuildContext, enable_null: bool) -> mlua::Result<mlua::Lua> {
    // SAFETY: scripts are configuration, trusted like the agent's own binary.
    let lua = unsafe { mlua::Lua::unsafe_new() };
    // FLB_ENV: the config's variables, plus HOSTNAME when the environment lacks it
    // (Fluent Bit presets it so), empty values left out.
    let env = lua.create_table()?;
    for (k, v) in ctx.vars.iter().filter(|(_, v)| !v.is_empty()) {
        env.raw_set(k.as_str(), v.as_str())?;
    }
    let host_set = ctx.vars.iter().any(|(k, _)| k == "HOSTNAME");
    if std::env::var_os("HOSTNAME").is_none() && !host_set {
        if let Some(h) = crate::config::parser::hostname() {
            env.raw_set("HOSTNAME", h)?;
        }
    }
    lua.globals().raw_set("FLB_ENV", env)?;
    if enable_null {
        let null = mlua::LightUserData(std::ptr::null_mut());
        lua.globals().raw_set("flb_null", null)?;
    }
    Ok(lua)
}

impl LuaFilter {
    fn new(props: &Props, ctx: &BuildContext) -> Result<LuaFilter, ConfigError> {
        let prefix = format!("[filter] lua ({})", ctx.instance);
        let Some(call) = props.str("call") else {
            return Err(ConfigError::invalid(
                props.span(),
                format!("{prefix}: function name defined by 'call' is not set"),
                Some("add 'call NAME', NAME being the Lua function that filters records".into()),
            ));
        };
        let src = source(props, ctx, &prefix)?;
        let at = props.span_of(src.key);
        let enable_null = props.bool("enable_flb_null").unwrap_or(false);
        let lua = new_state(ctx, enable_null)
            .map_err(|e| lua_error(at, &prefix, "cannot set up Lua", &e, None))?;
        let chunk = lua
            .load(&src.text[..])
            .set_name(src.chunk_name)
            .into_function()
            .map_err(|e| {
                let hint = Some("fix the Lua syntax at the line shown");
                lua_error(at, &prefix, "[luajit] error loading script", &e, hint)
            })?;
        chunk.call::<()>(()).map_err(|e| {
            let hint = Some("the script's top-level code raised an error while it was loaded");
            lua_error(
                at,
                &prefix,
                "[luajit] invalid lua content, error=2",
                &e,
                hint,
            )
        })?;
        let Ok(mlua::Value::Function(func)) = lua.globals().get::<mlua::Value>(call) else {
            let names = global_functions(&lua);
            let near = crate::config::error::closest(call, names.iter().map(|s| s.as_str()));
            let hint = near.map_or(String::new(), |n| format!("did you mean '{n}'? "));
            return Err(ConfigError::invalid(
                props.span_of("call"),
                format!("{prefix}: function {call} is not found"),
                Some(format!(
                    "{hint}'call' names a global function the {} defines",
                    src.key
                )),
            ));
        };
        // Fluent Bit counts the parameters with debug.getinfo(f, "u").nparams.
        let nparams: i64 = lua
            .load("local f = ...; return debug.getinfo(f, 'u').nparams or 0")
            .call(func.clone())
            .unwrap_or(0);
        let mut forced = Forced::default();
        for (prop, array) in [("type_int_key", false), ("type_array_key", true)] {
            for k in props
                .str(prop)
                .unwrap_or("")
                .split(' ')
                .filter(|k| !k.is_empty())
            {
                forced.keys.push((k.as_bytes().to_vec(), array));
            }
        }
        let type_table = |t: i64| -> mlua::Result<mlua::Table> {
            let mt = lua.create_table_with_capacity(0, 1)?;
            mt.raw_set("type", t)?;
            Ok(mt)
        };
        let meta = type_table(2)
            .and_then(|m| Ok((m, type_table(1)?)))
            .map_err(|e| lua_error(at, &prefix, "cannot set up Lua", &e, None))?;
        let strings = lua
            .create_table_with_capacity(convert::STRING_SLOTS, 0)
            .map_err(|e| lua_error(at, &prefix, "cannot set up Lua", &e, None))?;
        Ok(LuaFilter {
            lua,
            func,
            meta,
            strings,
            kept: Kept::new(),
            retyped: false,
            call: call.to_string(),
            source: src.label,
            five_args: nparams >= 5,
            time_as_table: props.bool("time_as_table").unwrap_or(false),
            forced,
            name: ctx.instance.to_string(),
            errors: ctx.metrics.counter(
                "agent_lua_errors_total",
                "Records a lua filter passed unchanged because its function failed on them.",
                ctx.instance,
            ),
            reported: HashSet::new(),
            spare: Vec::new(),
            gc_pause: Some(LUAJIT_GC_PAUSE),
        })
    }
}

/// A Lua load or run error as a config error at `at`, with Lua's own message.
fn lua_error(
    at: &crate::config::Span,
    prefix: &str,
    what: &str,
    e: &mlua::Error,
    hint: Option<&str>,
) -> ConfigError {
    let msg = match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => cause.to_string(),
        other => other.to_string(),
    };
    ConfigError::invalid(at, format!("{prefix}: {what}: {msg}"), hint.map(Into::into))
}

fn global_functions(lua: &mlua::Lua) -> Vec<String> {
    let mut names = Vec::new();
    let _ = lua.globals().for_each::<mlua::Value, mlua::Value>(|k, v| {
        if let (mlua::Value::String(k), mlua::Value::Function(_)) = (k, v) {
            names.push(k.to_string_lossy());
        }
        Ok(())
    });
    names.sort();
    names
}

/// Fluent Bit's flb_time_from_double: `(time_t)d` seconds, `(long)((d - sec) * 1e9)`
/// nanoseconds (negative ones wrap, as its encoder writes them).
fn time_from_double(d: f64) -> EventTime {
    let secs = c_f64_to_i64(d);
    let nanos = c_f64_to_i64((d - secs as f64) * 1e9);
    EventTime::new(secs, nanos as u32)
}

/// LuaJIT's GC pause (`LUAI_GCPAUSE`): a collection starts when the heap is twice what
/// the last one left.
const LUAJIT_GC_PAUSE: c_int = 200;
/// How much more than LuaJIT's default a filter's heap may grow between collections.
const GC_HEADROOM_KB: i64 = 1024;

/// Sets the GC pause so that a collection starts at the larger of twice the heap (LuaJIT's
/// default) and the heap plus [`GC_HEADROOM_KB`]. A filter's heap is mostly the standard
/// library, about 50 KB: at LuaJIT's default a collection ran every 50 KB of record
/// tables and marked the whole heap again each time, a tenth of the filter's time. A
/// script's memory grows by at most the headroom more than with the default, and one
/// with a large heap is collected as before. A script that sets its own pause
/// (`collectgarbage("setpause", n)`) keeps it: pacing stops.
///
/// # Safety
/// A valid state, outside any Lua call of the state's own.
unsafe fn pace_gc(l: *mut ffi::lua_State, last: &mut Option<c_int>) {
    let Some(set) = *last else { return };
    let kb = ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0).max(1) as i64;
    let pause = (100 * (kb + GC_HEADROOM_KB) / kb).clamp(LUAJIT_GC_PAUSE as i64, 10_000) as c_int;
    let before = ffi::lua_gc(l, ffi::LUA_GCSETPAUSE, pause);
    if before == set {
        *last = Some(pause);
    } else {
        ffi::lua_gc(l, ffi::LUA_GCSETPAUSE, before);
        *last = None;
    }
}

/// What the function made of one record.
enum Outcome {
    Keep,
    Drop,
    /// The records (and their times and metadata) that replace it.
    Replace(Vec<Record>),
    /// Changed in place (the function gave its own record back); its size changed by
    /// this much.
    Updated(i64),
    /// Kept unchanged, because of this error.
    Failed(String),
}

/// Per-batch state of the raw Lua code.
struct Batch<'a> {
    tag: &'a str,
    five_args: bool,
    time_as_table: bool,
    pusher: Pusher<'a>,
    reader: Reader<'a>,
    call: &'a str,
    source: &'a str,
    /// The script changed a shared metatable during the current record.
    tainted: bool,
    /// How many times the shared metatables were replaced in this batch.
    retyped: usize,
}

impl Batch<'_> {
    /// Runs the function on `rec`. `l` has the function at index 1.
    ///
    /// # Safety
    /// Inside `exec_raw`, with the function at stack index 1, the shared metatables
    /// at [`convert::MT_MAP`] and [`convert::MT_ARRAY`] and the string table at
    /// [`convert::STRINGS`].
    unsafe fn run(&mut self, l: *mut ffi::lua_State, rec: &mut Record) -> Outcome {
        let base = ffi::lua_gettop(l);
        if ffi::lua_checkstack(l, 12) == 0 {
            return Outcome::Failed("Lua stack overflow".into());
        }
        ffi::lua_pushvalue(l, 1);
        push_bytes(l, self.tag.as_bytes());
        if self.time_as_table {
            ffi::lua_createtable(l, 0, 2);
            push_bytes(l, b"sec");
            ffi::lua_pushinteger(l, rec.time.secs as ffi::lua_Integer);
            ffi::lua_settable(l, -3);
            push_bytes(l, b"nsec");
            ffi::lua_pushinteger(l, rec.time.nanos as ffi::lua_Integer);
            ffi::lua_settable(l, -3);
        } else {
            ffi::lua_pushnumber(l, rec.time.secs as f64 + rec.time.nanos as f64 / 1e9);
        }
        self.pusher.clear();
        let mut pushed = Ok(());
        if self.five_args {
            ffi::lua_createtable(l, 0, 0);
            pushed = self.pusher.push_map(l, &rec.metadata, 0);
        }
        if pushed.is_ok() {
            pushed = self.pusher.push_map(l, &rec.body, 0);
        }
        if let Err(e) = pushed {
            ffi::lua_settop(l, base);
            return Outcome::Failed(format!("the record cannot be given to Lua: {e}"));
        }
        let (nargs, nret) = if self.five_args { (5, 4) } else { (3, 3) };
        let status = ffi::lua_pcall(l, nargs, nret, 0);
        if status != 0 {
            let msg = error_text(l, -1);
            ffi::lua_settop(l, base);
            return Outcome::Failed(format!("error code {status}: {msg}"));
        }
        self.pusher.sort();
        self.reader.intact = shared_metatables_intact(l, self.pusher.array_mt_given());
        if !self.reader.intact {
            // Read this record as the script left it (Fluent Bit would have given each
            // table its own metatable; here its other tables share the change), then
            // give later records fresh ones.
            self.tainted = true;
        }
        let code = ffi::lua_tointeger_(l, base + 1) as i32;
        let out = match code {
            -1 => Outcome::Drop,
            0 => Outcome::Keep,
            1 | 2 => match self.replacement(l, base, code, rec) {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Failed(e),
            },
            c => Outcome::Failed(format!(
                "unexpected Lua script return code {c}, original record will be kept."
            )),
        };
        ffi::lua_settop(l, base);
        if self.tainted {
            push_type_table(l, 2);
            ffi::lua_replace(l, convert::MT_MAP);
            push_type_table(l, 1);
            ffi::lua_replace(l, convert::MT_ARRAY);
            self.pusher.metatables_replaced();
            self.tainted = false;
            self.retyped += 1;
        }
        out
    }

    /// What code 1 or 2 returned (results at `base + 1..`).
    unsafe fn replacement(
        &mut self,
        l: *mut ffi::lua_State,
        base: c_int,
        code: i32,
        rec: &mut Record,
    ) -> Result<Outcome, String> {
        let ts = base + 2;
        let time = if self.time_as_table {
            if ffi::lua_type(l, ts) != ffi::LUA_TTABLE {
                // Fluent Bit then reads the timestamp as the record and rejects it.
                return Err(format!(
                    "invalid lua timestamp type returned: time_as_table is on, so {}() must return a table {{sec = S, nsec = N}}",
                    self.call
                ));
            }
            if code == 1 {
                let field = |name: &[u8]| {
                    push_bytes(l, name);
                    ffi::lua_rawget(l, ts);
                    let v = ffi::lua_tointeger_(l, -1);
                    ffi::lua_settop(l, -2);
                    v
                };
                let secs = field(b"sec");
                let nanos = field(b"nsec");
                EventTime::new(secs, nanos as u32)
            } else {
                rec.time
            }
        } else if code == 1 {
            time_from_double(ffi::lua_tonumber(l, ts))
        } else {
            rec.time
        };
        self.reader.reset();
        let metadata = if self.five_args && ffi::lua_type(l, base + 3) == ffi::LUA_TTABLE {
            // Fluent Bit keeps the original metadata when the table cannot be packed.
            self.reader
                .value(l, base + 3, None, &self.pusher.origins, 0)
                .ok()
        } else {
            None
        };
        let record_at = if self.five_args { base + 4 } else { base + 3 };
        if ffi::lua_type(l, record_at) == ffi::LUA_TTABLE
            && self.pusher.origins.is(l, record_at, &rec.body)
            && self.reader.is_map(l, record_at)
            && !matches!(metadata, Some(Value::Array(_)))
        {
            // Its own record back: change it where it is.
            self.reader
                .changes(l, record_at, &rec.body, &self.pusher.origins)
                .map_err(|e| self.invalid(&e.to_string()))?;
            let mut resized = self.reader.apply(&mut rec.body);
            rec.time = time;
            if let Some(Value::Map(m)) = metadata {
                resized += map_len(&m) as i64 - map_len(&rec.metadata) as i64;
                rec.metadata = m;
            }
            return Ok(Outcome::Updated(resized));
        }
        let returned = self
            .reader
            .value(l, record_at, None, &self.pusher.origins, 0)
            .map_err(|e| self.invalid(&e.to_string()))?;
        let bodies = match returned {
            Value::Map(m) => vec![m],
            Value::Array(items) => {
                let mut maps = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::Map(m) => maps.push(m),
                        other => {
                            return Err(self.invalid(&format!(
                                "element {} of the array returned is {}, not a map",
                                i + 1,
                                value_kind(&other)
                            )))
                        }
                    }
                }
                maps
            }
            other => {
                return Err(self.invalid(&format!(
                    "the record returned is {}, not a table",
                    value_kind(&other)
                )))
            }
        };
        let n = bodies.len();
        let mut metas: Vec<Option<Map>> = match metadata {
            Some(Value::Array(items)) if items.len() == n => items
                .into_iter()
                .map(|m| match m {
                    Value::Map(m) => Some(m),
                    _ => Some(Map::new()),
                })
                .collect(),
            Some(Value::Map(m)) => vec![Some(m); n],
            _ => vec![None; n],
        };
        Ok(Outcome::Replace(
            bodies
                .into_iter()
                .zip(metas.iter_mut())
                .map(|(body, meta)| Record {
                    time,
                    metadata: meta.take().unwrap_or_else(|| rec.metadata.clone()),
                    body,
                })
                .collect(),
        ))
    }

    fn invalid(&self, why: &str) -> String {
        format!(
            "invalid table returned at {}(), {}: {why}",
            self.call, self.source
        )
    }
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => "a number",
        Value::Str(_) | Value::Bin(_) => "a string",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
    }
}

impl LuaFilter {
    fn report(&mut self, msg: String) {
        metrics::add(&self.errors, 1);
        if self.reported.len() > MAX_REPORTED || self.reported.contains(&msg) {
            return;
        }
        if self.reported.len() == MAX_REPORTED {
            crate::error!(
                "[filter:lua:{}] more than {MAX_REPORTED} distinct errors: further ones are only counted (agent_lua_errors_total)",
                self.name
            );
            self.reported.insert(String::new());
            return;
        }
        crate::error!("[filter:lua:{}] {msg}", self.name);
        self.reported.insert(msg);
    }
}

impl Filter for LuaFilter {
    fn filter(&mut self, tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        let mut input = std::mem::take(records);
        let mut out = std::mem::take(&mut self.spare);
        out.clear();
        out.reserve(input.len());
        let mut failures = Vec::new();
        let mut changed = false;
        let mut batch = Batch {
            tag,
            five_args: self.five_args,
            time_as_table: self.time_as_table,
            pusher: Pusher::new(&mut self.kept),
            reader: Reader::new(&self.forced),
            call: &self.call,
            source: &self.source,
            tainted: false,
            retyped: 0,
        };
        let mut done = 0;
        let gc_pause = &mut self.gc_pause;
        // How much the records' encoded size changed.
        let mut resized = 0i64;
        // SAFETY: `run` calls only Lua API functions, with the stack checked; Lua raises
        // nothing there but out-of-memory errors while a record is being pushed.
        let result = unsafe {
            let args = (&self.func, &self.meta.0, &self.meta.1, &self.strings);
            self.lua
                .exec_raw::<(mlua::Function, mlua::Table, mlua::Table, mlua::Table)>(args, |l| {
                    while done < input.len() {
                        let outcome = batch.run(l, &mut input[done]);
                        let rec = std::mem::replace(
                            &mut input[done],
                            Record::new(EventTime::default(), Map::new()),
                        );
                        done += 1;
                        let size = |r: &Record| r.encoded_len() as i64;
                        match outcome {
                            Outcome::Keep => out.push(rec),
                            Outcome::Updated(d) => {
                                changed = true;
                                resized += d;
                                out.push(rec);
                            }
                            Outcome::Drop => {
                                changed = true;
                                resized -= size(&rec);
                            }
                            Outcome::Replace(recs) => {
                                changed = true;
                                resized += recs.iter().map(size).sum::<i64>() - size(&rec);
                                out.extend(recs);
                            }
                            Outcome::Failed(msg) => {
                                failures.push(msg);
                                out.push(rec);
                            }
                        }
                    }
                    pace_gc(l, gc_pause);
                })
        };
        let retyped = batch.retyped > 0;
        let result = result.map(|(_, map, array, _)| self.meta = (map, array));
        if retyped && !self.retyped {
            self.retyped = true;
            crate::warn!(
                "[filter:lua:{}] the script changed the metatable of a record table; here record tables share two metatables, so the change reached the other tables of that record (not later ones)",
                self.name
            );
        }
        if let Err(e) = result {
            // Only out of memory inside Lua gets here: keep the records not done.
            failures.push(format!("Lua failed: {e}"));
            out.extend(input.drain(done..));
        }
        input.clear();
        self.spare = input;
        for msg in failures {
            self.report(msg);
        }
        *records = out;
        if changed {
            FilterResult::Resized(resized)
        } else {
            FilterResult::NoTouch
        }
    }
}

#[cfg(test)]
mod tests;
