//! Records to Lua tables and back, with Fluent Bit's conversions.
//! Fluent Bit: src/flb_lua.c (`flb_lua_pushmsgpack`, `flb_lua_tomsgpack`,
//! `flb_lua_arraylength`)
//!
//! Both directions make the same Lua API calls as Fluent Bit, in the same order, so
//! LuaJIT answers the same: `#t` of an array with holes, `table.maxn`, which keys a table
//! has after the script ran. What comes back:
//! - A number that is integral and fits an int64 is an integer (`1.0` comes back `1`),
//!   any other number a double. Integers reach Lua as doubles (LuaJIT has no integers):
//!   beyond 2^53 they round, and a uint64 of 2^63 or more becomes -2^63, as in Fluent Bit.
//! - A table made from a record map or array keeps that type (a metatable
//!   `{type = 2}` or `{type = 1}` says so), so `{}` and `[]` round-trip. Fluent Bit
//!   makes a metatable per table; here all record maps share one and all arrays another
//!   (a table less per map), checked after every call: a script that changed one is
//!   read as it left it, then both are replaced. A table the
//!   script made is an array when its positive integer keys are exactly 1..n (or
//!   `table.maxn` is > 0: then it is an array of that length, holes as nil, other keys
//!   dropped), else a map; `{}` is a map.
//! - `nil` in a record reaches Lua as the global `flb_null` (nil unless
//!   `enable_flb_null` set it to a null light userdata), so a nil map value is no key at
//!   all and a nil array slot a hole; `flb_null` comes back as nil.
//! - Map keys that are not strings come back as text (Fluent Bit keeps them as msgpack
//!   numbers or booleans, which our string-keyed records cannot hold).
//!
//! Key order: Fluent Bit writes a map in the order `lua_next` walks it, which LuaJIT
//! randomises per process (its string hash is seeded at start), so the same record comes
//! out in a different order on each run. Here a map that was a record map keeps its keys
//! in their original order, and keys the script added follow, sorted by their bytes.
//!
//! Safety: everything here runs inside one protected call (`Lua::exec_raw`). The push
//! side holds no value that needs dropping while it calls Lua (which may raise on out
//! of memory). The read side only calls functions that never raise in LuaJIT
//! (`lua_next` over an unchanged table, `lua_rawgeti`, `lua_objlen`, `lua_tolstring` on
//! strings, `lua_checkstack`, which reports failure instead of raising).

use std::ffi::{c_int, CStr};
use std::sync::Arc;

use mlua::ffi::{self, lua_State};

use crate::event::{container_len, str_len, Map, Str, Value};

/// Fluent Bit's FLB_LUA_L2C_TYPE_ARRAY / _MAP, the `type` field of the metatable a
/// record table carries.
const TYPE_ARRAY: ffi::lua_Integer = 1;
const TYPE_MAP: ffi::lua_Integer = 2;

/// How deep a returned table may nest (a table that contains itself would recurse
/// forever; Fluent Bit overflows its C stack on one and aborts).
pub const MAX_DEPTH: usize = 200;
/// How many values one returned record may hold in all (a table referenced from many
/// places is converted once per reference: 30 levels of `{a = t, b = t}` would be 2^30).
pub const MAX_VALUES: usize = 1 << 20;
/// How many bytes of strings one returned record may hold in all.
pub const MAX_BYTES: usize = 64 << 20;

/// `type_int_key` / `type_array_key`: record keys whose value is forced to a type.
#[derive(Clone, Debug, Default)]
pub struct Forced {
    /// (key, true for an array, false for an integer), in Fluent Bit's list order.
    pub keys: Vec<(Vec<u8>, bool)>,
}

impl Forced {
    /// Fluent Bit compares with `strncmp(conf_key, record_key, len(record_key))`: a record
    /// key that is a prefix of a configured key matches.
    fn forces(&self, key: &[u8], array: bool) -> bool {
        self.keys
            .iter()
            .any(|(conf, a)| *a == array && strncmp_eq(conf, key))
    }
}

fn strncmp_eq(conf: &[u8], key: &[u8]) -> bool {
    for (i, &b) in key.iter().enumerate() {
        let a = conf.get(i).copied().unwrap_or(0);
        if a != b {
            return false;
        }
        if a == 0 {
            return true;
        }
    }
    true
}

/// C's `(int64_t)d` as x86-64 computes it: truncation, and INT64_MIN when out of range
/// or NaN.
pub fn c_f64_to_i64(d: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if (-LIMIT..LIMIT).contains(&d) {
        d as i64
    } else {
        i64::MIN // NaN too
    }
}

/// Why a returned value cannot be a record.
#[derive(Debug, PartialEq, Eq)]
pub enum ConvError {
    /// A function, userdata, thread or non-null light userdata: Fluent Bit cannot
    /// serialise it and writes a broken map, which it then rejects.
    Unserializable(&'static str),
    /// A table used as a map key.
    TableKey,
    TooDeep,
    TooBig,
}

impl std::fmt::Display for ConvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConvError::Unserializable(t) => write!(f, "a {t} value cannot be part of a record"),
            ConvError::TableKey => write!(f, "a table cannot be a map key"),
            ConvError::TooDeep => write!(
                f,
                "tables nested deeper than {MAX_DEPTH} levels (does a table contain itself?)"
            ),
            ConvError::TooBig => write!(
                f,
                "more than {MAX_VALUES} values or {} MiB of strings",
                MAX_BYTES >> 20
            ),
        }
    }
}

/// Where each record map went: (address of its Lua table, the map), sorted by address
/// once the function has run, so that a table the script moved elsewhere (or returned
/// inside another) still finds its original key order.
#[derive(Default)]
pub struct Origins(Vec<(usize, *const Map)>);

impl Origins {
    /// Whether the table at `idx` was made from `map`.
    ///
    /// # Safety
    /// `idx` is valid.
    pub unsafe fn is(&self, l: *mut lua_State, idx: c_int, map: &Map) -> bool {
        let p = ffi::lua_topointer(l, idx) as usize;
        self.0
            .binary_search_by_key(&p, |e| e.0)
            .is_ok_and(|i| std::ptr::eq(self.0[i].1, map))
    }

    /// The record map the table at `idx` was made from.
    ///
    /// # Safety
    /// The maps pushed since the last `clear` are alive and unchanged.
    unsafe fn of<'m>(&self, l: *mut lua_State, idx: c_int) -> Option<&'m Map> {
        let p = ffi::lua_topointer(l, idx) as usize;
        let i = self.0.binary_search_by_key(&p, |e| e.0).ok()?;
        Some(&*self.0[i].1)
    }
}

/// What the pusher keeps across batches.
pub struct Kept {
    /// The record strings whose Lua strings are in the string table ([`STRINGS`]), by
    /// slot.
    strings: Vec<Option<Str>>,
    /// The address of the last string that missed each slot (only compared, never
    /// followed: a stale one costs a slot, never a wrong string).
    missed: Vec<usize>,
    /// The shared array metatable ([`MT_ARRAY`]) was given to a table: a script may
    /// hold that table (and so reach the metatable) from then on.
    pub array_mt_given: bool,
}

impl Kept {
    pub fn new() -> Kept {
        Kept {
            strings: vec![None; STRING_SLOTS],
            missed: vec![0; STRING_SLOTS],
            array_mt_given: false,
        }
    }
}

/// Stack index (inside the batch's protected call) of the string table: slot `i + 1`
/// holds the Lua string of `Kept::strings[i]`.
pub const STRINGS: c_int = 4;
/// How many record strings keep their Lua string.
pub const STRING_SLOTS: usize = 512;
/// The longest string kept there.
const STRING_MAX: usize = 1024;

/// Pushes record values onto the Lua stack.
pub struct Pusher<'k> {
    pub origins: Origins,
    kept: &'k mut Kept,
}

impl<'k> Pusher<'k> {
    pub fn new(kept: &'k mut Kept) -> Pusher<'k> {
        Pusher {
            origins: Origins::default(),
            kept,
        }
    }

    /// The shared metatables were replaced: the new array one was given to no table.
    pub fn metatables_replaced(&mut self) {
        self.kept.array_mt_given = false;
    }

    /// Whether the shared array metatable was ever given to a table.
    pub fn array_mt_given(&self) -> bool {
        self.kept.array_mt_given
    }

    /// Pushes a record string. Records share many of their strings: every key (a
    /// parser, `dummy` or the msgpack decoder makes each key once) and the values the
    /// `kubernetes` filter adds from its cache (one allocation per pod). A string seen
    /// a second time at its address gets its Lua string kept in the string table, and
    /// is pushed from there from then on: a table read instead of `lua_pushlstring`'s
    /// hashing, interning and GC step. A string seen once (a log line) costs a compare.
    /// A slot holds a reference to its string, so the address cannot be reused while
    /// the slot names it. Strings longer than [`STRING_MAX`] are not kept: at most
    /// 512 KiB stay alive for the table.
    ///
    /// # Safety
    /// Inside the batch's protected call, with the string table at [`STRINGS`] and a
    /// free stack slot.
    unsafe fn push_str(&mut self, l: *mut lua_State, s: &Str) {
        if s.len() > STRING_MAX {
            push_bytes(l, s.as_bytes());
            return;
        }
        let p = s.as_ptr() as usize;
        let i = (p >> 4 ^ p >> 13) % STRING_SLOTS;
        // The raw API calls: mlua's compat wrappers convert the index and look at the
        // type of what they fetched, twice the work of the fetch here.
        let slot = i as c_int + 1;
        if let Some(cached) = &self.kept.strings[i] {
            if Arc::ptr_eq(cached, s) {
                ffi::lua_rawgeti_(l, STRINGS, slot);
                return;
            }
        }
        push_bytes(l, s.as_bytes());
        if self.kept.missed[i] == p {
            ffi::lua_pushvalue(l, -1);
            ffi::lua_rawseti_(l, STRINGS, slot);
            self.kept.strings[i] = Some(s.clone());
        } else {
            self.kept.missed[i] = p;
        }
    }

    /// Forgets the tables of the previous record.
    pub fn clear(&mut self) {
        self.origins.0.clear();
    }

    /// Makes the tables pushed since `clear` searchable.
    pub fn sort(&mut self) {
        self.origins.0.sort_unstable_by_key(|e| e.0);
    }

    /// Pushes `map` as a Lua table with a map metatable, `depth` tables deep. Stack: +1,
    /// or unchanged on error (a record nested deeper than [`MAX_DEPTH`]).
    ///
    /// # Safety
    /// `l` is a valid state inside a protected call; `map` outlives the reading of the
    /// function's results.
    pub unsafe fn push_map(
        &mut self,
        l: *mut lua_State,
        map: &Map,
        depth: usize,
    ) -> Result<(), ConvError> {
        if depth >= MAX_DEPTH || ffi::lua_checkstack(l, 6) == 0 {
            return Err(ConvError::TooDeep);
        }
        ffi::lua_createtable(l, 0, len_c(map.len()));
        self.origins
            .0
            .push((ffi::lua_topointer(l, -1) as usize, map as *const Map));
        for (k, v) in map {
            self.push_str(l, k);
            if let Err(e) = self.push_value(l, v, depth) {
                ffi::lua_settop(l, -3);
                return Err(e);
            }
            // The table has no metatable yet: a raw set is what lua_settable would do.
            ffi::lua_rawset(l, -3);
        }
        set_type(l, TYPE_MAP);
        Ok(())
    }

    /// # Safety
    /// As [`Pusher::push_map`].
    unsafe fn push_value(
        &mut self,
        l: *mut lua_State,
        v: &Value,
        depth: usize,
    ) -> Result<(), ConvError> {
        match v {
            // The global `flb_null` (read raw, so a strict-mode _G cannot raise here).
            Value::Nil => {
                push_bytes(l, b"flb_null");
                ffi::lua_rawget(l, ffi::LUA_GLOBALSINDEX);
            }
            Value::Bool(b) => ffi::lua_pushboolean(l, *b as c_int),
            // Fluent Bit: lua_pushinteger(l, (double) u64): to double, back to int64.
            Value::Int(i) => ffi::lua_pushnumber(l, c_f64_to_i64(*i as f64) as f64),
            Value::UInt(u) => ffi::lua_pushnumber(l, c_f64_to_i64(*u as f64) as f64),
            Value::Float(f) => ffi::lua_pushnumber(l, *f),
            Value::Str(s) => self.push_str(l, s),
            Value::Bin(b) => push_bytes(l, b),
            Value::Array(a) => {
                if depth + 1 >= MAX_DEPTH || ffi::lua_checkstack(l, 6) == 0 {
                    return Err(ConvError::TooDeep);
                }
                ffi::lua_createtable(l, len_c(a.len()), 0);
                for (i, item) in a.iter().enumerate() {
                    if let Err(e) = self.push_value(l, item, depth + 1) {
                        ffi::lua_settop(l, -2);
                        return Err(e);
                    }
                    ffi::lua_rawseti_(l, -2, len_c(i + 1));
                }
                set_type(l, TYPE_ARRAY);
                self.kept.array_mt_given = true;
            }
            Value::Map(m) => self.push_map(l, m, depth + 1)?,
        }
        Ok(())
    }
}

fn len_c(n: usize) -> c_int {
    n.min(c_int::MAX as usize) as c_int
}

/// # Safety
/// A valid state with a free stack slot.
pub unsafe fn push_bytes(l: *mut lua_State, b: &[u8]) {
    ffi::lua_pushlstring_(l, b.as_ptr().cast(), b.len());
}

/// Stack indices (inside the batch's protected call) of the two metatables every record
/// table shares: `{type = 2}` for maps, `{type = 1}` for arrays.
pub const MT_MAP: c_int = 2;
pub const MT_ARRAY: c_int = 3;

/// Gives the table at the top the shared metatable of its type. Fluent Bit makes one
/// per table; sharing two saves a table per map. A script that changes one is caught
/// by [`shared_metatables_intact`] after its call.
unsafe fn set_type(l: *mut lua_State, t: ffi::lua_Integer) {
    ffi::lua_pushvalue(l, if t == TYPE_MAP { MT_MAP } else { MT_ARRAY });
    ffi::lua_setmetatable(l, -2);
}

/// A new `{type = t}` table on the stack.
///
/// # Safety
/// A valid state with free stack slots, inside a protected call.
pub unsafe fn push_type_table(l: *mut lua_State, t: ffi::lua_Integer) {
    ffi::lua_createtable(l, 0, 1);
    push_bytes(l, b"type");
    ffi::lua_pushinteger(l, t);
    ffi::lua_rawset(l, -3);
}

/// Whether the shared metatables still hold `type` and nothing else. The array one is
/// looked at only once it was given to a table (`arrays`): before that no script can
/// have reached it.
///
/// # Safety
/// Inside the batch's protected call.
pub unsafe fn shared_metatables_intact(l: *mut lua_State, arrays: bool) -> bool {
    let shared: &[_] = if arrays {
        &[(MT_MAP, TYPE_MAP), (MT_ARRAY, TYPE_ARRAY)]
    } else {
        &[(MT_MAP, TYPE_MAP)]
    };
    shared.iter().all(|&(idx, t)| {
        ffi::lua_pushnil(l);
        if ffi::lua_next(l, idx) == 0 {
            return false;
        }
        let ok = ffi::lua_type(l, -2) == ffi::LUA_TSTRING
            && str_at(l, -2) == b"type"
            && ffi::lua_type(l, -1) == ffi::LUA_TNUMBER
            && ffi::lua_tonumber(l, -1) == t as f64;
        ffi::lua_settop(l, -2);
        let more = ffi::lua_next(l, idx) != 0;
        if more {
            ffi::lua_settop(l, -3);
        }
        ok && !more
    })
}

/// The bytes of the string at `idx` (which must be a string: no conversion happens).
///
/// # Safety
/// `idx` holds a string that stays on the stack while the slice is used.
pub unsafe fn str_at<'a>(l: *mut lua_State, idx: c_int) -> &'a [u8] {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, idx, &mut len);
    if p.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(p.cast(), len)
    }
}

/// Whether a number packs as an integer (`flb_lua.c`'s `lua_isinteger`).
fn integral(n: f64) -> Option<i64> {
    let i = c_f64_to_i64(n);
    (i as f64 == n).then_some(i)
}

fn int_value(i: i64) -> Value {
    if i >= 0 {
        Value::UInt(i as u64)
    } else {
        Value::Int(i)
    }
}

/// Reads Lua values back into record values, within the limits above.
pub struct Reader<'a> {
    pub forced: &'a Forced,
    /// The shared metatables were left as they were (their type is then known by
    /// identity).
    pub intact: bool,
    values: usize,
    bytes: usize,
    /// Entries of the maps being read, innermost last: (rank, key, value).
    scratch: Vec<(usize, Str, Value)>,
    /// What [`Reader::changes`] found: (index, new value or None if the same).
    changed: Vec<(usize, Option<Value>)>,
    added: Vec<(Str, Value)>,
    seen: Vec<bool>,
    strings: Strings,
}

/// The strings made from Lua strings lately: a script that adds `env = "prod"` to every
/// record gives back the same two strings each time, which then cost a reference count
/// instead of an allocation. Direct-mapped by a hash of the bytes; a slot is checked
/// byte for byte.
struct Strings([Option<Str>; 64]);

impl Strings {
    fn get(&mut self, s: &str) -> Str {
        // FNV-1a over at most 32 bytes: cheap, and keys differ early.
        let mut h: u32 = 0x811c_9dc5;
        for &b in s.as_bytes().iter().take(32) {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
        let slot = &mut self.0[(h ^ s.len() as u32) as usize % 64];
        match slot {
            Some(k) if **k == *s => k.clone(),
            _ => {
                let k = Str::from(s);
                *slot = Some(k.clone());
                k
            }
        }
    }
}

/// How a table is written.
enum Shape {
    Map,
    /// An array of this many elements, `t[1]..t[n]`.
    Array(usize),
}

impl<'a> Reader<'a> {
    pub fn new(forced: &'a Forced) -> Reader<'a> {
        Reader {
            forced,
            intact: true,
            values: 0,
            bytes: 0,
            scratch: Vec::new(),
            changed: Vec::new(),
            added: Vec::new(),
            seen: Vec::new(),
            strings: Strings(std::array::from_fn(|_| None)),
        }
    }

    /// Whether the table at `idx` is written as a map (its metatable or its keys say so).
    ///
    /// # Safety
    /// `idx` is a valid absolute index holding a table.
    pub unsafe fn is_map(&self, l: *mut lua_State, idx: c_int) -> bool {
        ffi::lua_checkstack(l, 4) != 0 && matches!(shape(l, idx, self.intact), Shape::Map)
    }

    /// Starts a new record: the limits count per record.
    pub fn reset(&mut self) {
        self.values = 0;
        self.bytes = 0;
    }

    /// Converts the value at `idx`. `hint` is what was at the same place in the record
    /// that went in: its keys give the order, its strings are reused when equal.
    ///
    /// # Safety
    /// `idx` is a valid index of `l`.
    pub unsafe fn value(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        hint: Option<&Value>,
        origins: &Origins,
        depth: usize,
    ) -> Result<Value, ConvError> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(ConvError::TooBig);
        }
        match ffi::lua_type(l, idx) {
            ffi::LUA_TSTRING => Ok(self.string(str_at(l, idx), hint)?),
            ffi::LUA_TNUMBER => {
                let n = ffi::lua_tonumber(l, idx);
                Ok(match integral(n) {
                    Some(i) => int_value(i),
                    None => Value::Float(n),
                })
            }
            ffi::LUA_TBOOLEAN => Ok(Value::Bool(ffi::lua_toboolean(l, idx) != 0)),
            ffi::LUA_TNIL => Ok(Value::Nil),
            ffi::LUA_TLIGHTUSERDATA if ffi::lua_touserdata(l, idx).is_null() => Ok(Value::Nil),
            ffi::LUA_TTABLE => {
                if depth >= MAX_DEPTH || ffi::lua_checkstack(l, 6) == 0 {
                    return Err(ConvError::TooDeep);
                }
                let idx = abs_index(l, idx);
                match shape(l, idx, self.intact) {
                    Shape::Array(n) => self.array(l, idx, n, hint, origins, depth),
                    Shape::Map => {
                        let hint = match origins.of(l, idx) {
                            Some(m) => &m[..],
                            None => match hint {
                                Some(Value::Map(m)) => &m[..],
                                _ => &[],
                            },
                        };
                        self.map(l, idx, hint, origins, depth)
                    }
                }
            }
            t => Err(ConvError::Unserializable(type_name(t))),
        }
    }

    fn string(&mut self, b: &[u8], hint: Option<&Value>) -> Result<Value, ConvError> {
        self.bytes += b.len();
        if self.bytes > MAX_BYTES {
            return Err(ConvError::TooBig);
        }
        Ok(match (hint, std::str::from_utf8(b)) {
            (Some(Value::Str(s)), _) if s.as_bytes() == b => Value::Str(s.clone()),
            (_, Ok(s)) => Value::Str(self.strings.get(s)),
            (Some(Value::Bin(h)), Err(_)) if &h[..] == b => Value::Bin(h.clone()),
            (_, Err(_)) => Value::Bin(Arc::from(b)),
        })
    }

    unsafe fn array(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        n: usize,
        hint: Option<&Value>,
        origins: &Origins,
        depth: usize,
    ) -> Result<Value, ConvError> {
        if n > MAX_VALUES - self.values {
            return Err(ConvError::TooBig);
        }
        let hint = match hint {
            Some(Value::Array(a)) => &a[..],
            _ => &[],
        };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            ffi::lua_rawgeti_(l, idx, len_c(i + 1));
            let v = self.value(l, -1, hint.get(i), origins, depth + 1);
            ffi::lua_settop(l, -2);
            out.push(v?);
        }
        Ok(Value::Array(out))
    }

    unsafe fn map(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        hint: &[(Str, Value)],
        origins: &Origins,
        depth: usize,
    ) -> Result<Value, ConvError> {
        let start = self.scratch.len();
        let r = self.map_entries(l, idx, hint, origins, depth);
        if let Err(e) = r {
            self.scratch.truncate(start);
            return Err(e);
        }
        let entries = &mut self.scratch[start..];
        // Ranks are unique (keys are), so an unstable sort is exact and needs no buffer.
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let out: Map = self
            .scratch
            .drain(start..)
            .map(|(_, k, v)| (k, v))
            .collect();
        Ok(Value::Map(out))
    }

    unsafe fn map_entries(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        hint: &[(Str, Value)],
        origins: &Origins,
        depth: usize,
    ) -> Result<(), ConvError> {
        let index = KeyIndex::new(hint);
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, idx) != 0 {
            let r = self.entry(l, &index, origins, depth);
            match r {
                Ok(e) => {
                    ffi::lua_settop(l, -2);
                    self.scratch.push(e);
                }
                Err(e) => {
                    ffi::lua_settop(l, -3);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The pair at the top (key -2, value -1): (rank, key, value).
    unsafe fn entry(
        &mut self,
        l: *mut lua_State,
        index: &KeyIndex,
        origins: &Origins,
        depth: usize,
    ) -> Result<(usize, Str, Value), ConvError> {
        let hint = index.keys;
        let (rank, key) = match self.key(l, index)? {
            Key::Known(i) => (i, hint[i].0.clone()),
            Key::New(k) => (usize::MAX, k),
        };
        let hint_value = (rank != usize::MAX).then(|| &hint[rank].1);
        let value = self.entry_value(l, key.as_bytes(), hint_value, origins, depth)?;
        Ok((rank, key, value))
    }

    /// The key at -2: where it is in `hint` (its first occurrence), or a new key.
    unsafe fn key(&mut self, l: *mut lua_State, hint: &KeyIndex) -> Result<Key, ConvError> {
        let text = match ffi::lua_type(l, -2) {
            ffi::LUA_TSTRING => {
                let b = str_at(l, -2);
                self.bytes += b.len();
                return Ok(match hint.find(b) {
                    Some(i) => Key::Known(i),
                    None => Key::New(match std::str::from_utf8(b) {
                        Ok(s) => self.strings.get(s),
                        Err(_) => Str::from(String::from_utf8_lossy(b)),
                    }),
                });
            }
            ffi::LUA_TNUMBER => {
                let n = ffi::lua_tonumber(l, -2);
                match integral(n) {
                    Some(i) => i.to_string(),
                    None => {
                        let mut out = Vec::new();
                        crate::event::format::write_print_value(&mut out, &Value::Float(n));
                        String::from_utf8_lossy(&out).into_owned()
                    }
                }
            }
            ffi::LUA_TBOOLEAN => {
                let b = ffi::lua_toboolean(l, -2) != 0;
                (if b { "true" } else { "false" }).to_string()
            }
            ffi::LUA_TLIGHTUSERDATA if ffi::lua_touserdata(l, -2).is_null() => String::new(),
            ffi::LUA_TTABLE => return Err(ConvError::TableKey),
            t => return Err(ConvError::Unserializable(type_name(t))),
        };
        Ok(Key::New(Str::from(text)))
    }

    /// The value at -1 of the map key `key`, with `type_int_key`/`type_array_key`.
    unsafe fn entry_value(
        &mut self,
        l: *mut lua_State,
        key: &[u8],
        hint: Option<&Value>,
        origins: &Origins,
        depth: usize,
    ) -> Result<Value, ConvError> {
        Ok(match ffi::lua_type(l, -1) {
            // type_int_key: (int64_t)lua_tonumber, whatever the number.
            ffi::LUA_TNUMBER if self.forced.forces(key, false) => {
                self.values += 1;
                int_value(c_f64_to_i64(ffi::lua_tonumber(l, -1)))
            }
            // type_array_key: `#t` elements, whatever the table holds.
            ffi::LUA_TTABLE if self.forced.forces(key, true) => {
                if depth + 1 >= MAX_DEPTH || ffi::lua_checkstack(l, 6) == 0 {
                    return Err(ConvError::TooDeep);
                }
                self.values += 1;
                let idx = ffi::lua_gettop(l);
                let n = ffi::lua_objlen(l, idx);
                self.array(l, idx, n, hint, origins, depth + 1)?
            }
            _ => self.value(l, -1, hint, origins, depth + 1)?,
        })
    }

    /// Reads the table at `idx`, made from `body`, as changes to `body`: the common
    /// case (a record given back with a few fields changed or added) then copies and
    /// frees nothing that stayed the same. Nothing is changed until [`Reader::apply`].
    ///
    /// # Safety
    /// As [`Reader::value`]; `idx` is absolute.
    pub unsafe fn changes(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        body: &Map,
        origins: &Origins,
    ) -> Result<(), ConvError> {
        self.changed.clear();
        self.added.clear();
        if ffi::lua_checkstack(l, 6) == 0 {
            return Err(ConvError::TooDeep);
        }
        let index = KeyIndex::new(body);
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, idx) != 0 {
            let r = self.change(l, &index, origins);
            ffi::lua_settop(l, -2);
            if let Err(e) = r {
                ffi::lua_settop(l, -2);
                return Err(e);
            }
        }
        Ok(())
    }

    unsafe fn change(
        &mut self,
        l: *mut lua_State,
        index: &KeyIndex,
        origins: &Origins,
    ) -> Result<(), ConvError> {
        self.values += 1;
        let body = index.keys;
        match self.key(l, index)? {
            Key::Known(i) => {
                let (k, old) = &body[i];
                let forced = !self.forced.keys.is_empty()
                    && self
                        .forced
                        .forces(k.as_bytes(), ffi::lua_type(l, -1) == ffi::LUA_TTABLE);
                let new = if !forced && (same(l, -1, old) || self.same_map(l, -1, old, origins, 0))
                {
                    None
                } else {
                    Some(self.entry_value(l, k.as_bytes(), Some(old), origins, 0)?)
                };
                self.changed.push((i, new));
            }
            Key::New(k) => {
                let v = self.entry_value(l, k.as_bytes(), None, origins, 0)?;
                self.added.push((k, v));
            }
        }
        Ok(())
    }

    /// Whether the table at `idx` is the one made from `old` (a map), still read as a
    /// map and holding exactly its entries: then `old` is kept as it is, neither read
    /// again nor freed (a record's nested maps, such as `kubernetes`, that the script
    /// did not touch). Anything else, or a doubt, is `false`: the table is read.
    ///
    /// # Safety
    /// As [`Reader::changes`]; `idx` may be relative.
    unsafe fn same_map(
        &self,
        l: *mut lua_State,
        idx: c_int,
        old: &Value,
        origins: &Origins,
        depth: usize,
    ) -> bool {
        let Value::Map(map) = old else {
            return false;
        };
        if ffi::lua_type(l, idx) != ffi::LUA_TTABLE
            || !self.forced.keys.is_empty()
            || depth >= MAX_DEPTH
            || ffi::lua_checkstack(l, 4) == 0
            || !origins.is(l, idx, map)
        {
            return false;
        }
        let idx = if idx < 0 {
            ffi::lua_gettop(l) + idx + 1
        } else {
            idx
        };
        if !matches!(shape(l, idx, self.intact), Shape::Map) {
            return false;
        }
        let index = KeyIndex::new(map);
        let mut entries = 0;
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, idx) != 0 {
            let kept = ffi::lua_type(l, -2) == ffi::LUA_TSTRING
                && index.find(str_at(l, -2)).is_some_and(|i| {
                    let v = &map[i].1;
                    same(l, -1, v) || self.same_map(l, -1, v, origins, depth + 1)
                });
            ffi::lua_settop(l, -2);
            if !kept {
                ffi::lua_settop(l, -2);
                return false;
            }
            entries += 1;
        }
        entries == map.len()
    }

    /// Applies what [`Reader::changes`] read: changed values in place, keys gone from
    /// the table removed, new keys appended in byte order. Returns how much the map's
    /// [`crate::event::map_len`] changed, worked out from what changed only.
    pub fn apply(&mut self, body: &mut Map) -> i64 {
        let entry = |k: &Str, v: &Value| (str_len(k.len()) + v.encoded_len()) as i64;
        let before = body.len();
        let mut delta = 0;
        self.seen.clear();
        self.seen.resize(before, false);
        for (i, v) in self.changed.drain(..) {
            self.seen[i] = true;
            if let Some(v) = v {
                delta += v.encoded_len() as i64 - body[i].1.encoded_len() as i64;
                body[i].1 = v;
            }
        }
        if self.seen.iter().any(|s| !s) {
            let mut i = 0;
            let seen = &self.seen;
            body.retain(|(k, v)| {
                i += 1;
                if !seen[i - 1] {
                    delta -= entry(k, v);
                }
                seen[i - 1]
            });
        }
        self.added.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        delta += self.added.iter().map(|(k, v)| entry(k, v)).sum::<i64>();
        body.append(&mut self.added);
        delta + container_len(body.len()) as i64 - container_len(before) as i64
    }
}

/// Where each key of a map is (its first occurrence): a scan for small maps, a hash
/// map for large ones, so that reading a record with many keys stays linear.
struct KeyIndex<'m> {
    keys: &'m [(Str, Value)],
    big: Option<std::collections::HashMap<&'m [u8], usize>>,
}

impl<'m> KeyIndex<'m> {
    fn new(keys: &'m [(Str, Value)]) -> KeyIndex<'m> {
        let big = (keys.len() > 32).then(|| {
            let mut m = std::collections::HashMap::with_capacity(keys.len());
            for (i, (k, _)) in keys.iter().enumerate() {
                m.entry(k.as_bytes()).or_insert(i);
            }
            m
        });
        KeyIndex { keys, big }
    }

    fn find(&self, b: &[u8]) -> Option<usize> {
        match &self.big {
            Some(m) => m.get(b).copied(),
            None => self.keys.iter().position(|(k, _)| k.as_bytes() == b),
        }
    }
}

enum Key {
    /// At this index of the map it was made from.
    Known(usize),
    New(Str),
}

/// Whether the value at `idx` converts to `old` exactly (then `old` is kept as it is).
unsafe fn same(l: *mut lua_State, idx: c_int, old: &Value) -> bool {
    match ffi::lua_type(l, idx) {
        ffi::LUA_TSTRING => {
            let b = str_at(l, idx);
            match old {
                Value::Str(s) => s.as_bytes() == b,
                Value::Bin(o) => std::str::from_utf8(b).is_err() && &o[..] == b,
                _ => false,
            }
        }
        ffi::LUA_TNUMBER => {
            let n = ffi::lua_tonumber(l, idx);
            match (integral(n), old) {
                (Some(i), Value::UInt(u)) => i >= 0 && i as u64 == *u,
                (Some(i), Value::Int(o)) => i < 0 && i == *o,
                (None, Value::Float(f)) => f.to_bits() == n.to_bits(),
                _ => false,
            }
        }
        ffi::LUA_TBOOLEAN => {
            matches!(old, Value::Bool(b) if *b == (ffi::lua_toboolean(l, idx) != 0))
        }
        ffi::LUA_TLIGHTUSERDATA => {
            ffi::lua_touserdata(l, idx).is_null() && matches!(old, Value::Nil)
        }
        _ => false,
    }
}

fn type_name(t: c_int) -> &'static str {
    match t {
        ffi::LUA_TFUNCTION => "function",
        ffi::LUA_TUSERDATA => "userdata",
        ffi::LUA_TTHREAD => "thread",
        ffi::LUA_TLIGHTUSERDATA => "light userdata",
        _ => "non-serialisable",
    }
}

unsafe fn abs_index(l: *mut lua_State, idx: c_int) -> c_int {
    if idx < 0 && idx > ffi::LUA_REGISTRYINDEX {
        ffi::lua_gettop(l) + idx + 1
    } else {
        idx
    }
}

/// The metatable's `type` (Fluent Bit reads it with `lua_next`, taking a numeric `type`
/// field), or None.
unsafe fn meta_type(l: *mut lua_State, idx: c_int, intact: bool) -> Option<ffi::lua_Integer> {
    if ffi::lua_getmetatable(l, idx) == 0 {
        return None;
    }
    let mt = ffi::lua_gettop(l);
    if intact {
        let known = if ffi::lua_rawequal(l, mt, MT_MAP) != 0 {
            Some(TYPE_MAP)
        } else if ffi::lua_rawequal(l, mt, MT_ARRAY) != 0 {
            Some(TYPE_ARRAY)
        } else {
            None
        };
        if known.is_some() {
            ffi::lua_settop(l, mt - 1);
            return known;
        }
    }
    let mut found = None;
    ffi::lua_pushnil(l);
    while ffi::lua_next(l, mt) != 0 {
        if ffi::lua_type(l, -2) == ffi::LUA_TSTRING
            && str_at(l, -2) == b"type"
            && ffi::lua_type(l, -1) == ffi::LUA_TNUMBER
        {
            found = Some(ffi::lua_tointeger_(l, -1) as c_int as ffi::lua_Integer);
        }
        ffi::lua_settop(l, -2);
    }
    ffi::lua_settop(l, mt - 1);
    found
}

/// How Fluent Bit writes the table at `idx` (absolute).
unsafe fn shape(l: *mut lua_State, idx: c_int, intact: bool) -> Shape {
    match meta_type(l, idx, intact) {
        Some(TYPE_ARRAY) => return Shape::Array(ffi::lua_objlen(l, idx)),
        Some(t) if t >= 0 => return Shape::Map,
        _ => {}
    }
    match array_length(l, idx) {
        n if n > 0 => Shape::Array(n as usize),
        _ => Shape::Map,
    }
}

/// `flb_lua_arraylength`: `table.maxn` when it is a positive integer (as a C int), else
/// the largest key when the keys are exactly 1..n, else -1 (a map).
unsafe fn array_length(l: *mut lua_State, idx: c_int) -> i32 {
    // table.maxn: the largest numeric key with a value, at least 0.
    let mut maxn = 0f64;
    ffi::lua_pushnil(l);
    while ffi::lua_next(l, idx) != 0 {
        if ffi::lua_type(l, -2) == ffi::LUA_TNUMBER {
            let n = ffi::lua_tonumber(l, -2);
            if n > maxn {
                maxn = n;
            }
        }
        ffi::lua_settop(l, -2);
    }
    // `ret = lua_tointeger(...)` into an int, when the maximum is integral.
    let ret = integral(maxn).map_or(0, |i| i as i32);
    if ret > 0 {
        return ret;
    }
    let (mut max, mut count) = (0i32, 0i32);
    ffi::lua_pushnil(l);
    while ffi::lua_next(l, idx) != 0 {
        if ffi::lua_type(l, -2) == ffi::LUA_TNUMBER {
            let n = c_f64_to_i64(ffi::lua_tonumber(l, -2));
            if n > 0 {
                if n > max as i64 {
                    max = n as i32;
                }
                count = count.wrapping_add(1);
                ffi::lua_settop(l, -2);
                continue;
            }
        }
        ffi::lua_settop(l, -3);
        return -1;
    }
    if max != count {
        return -1;
    }
    max
}

/// The text of the error value at `idx`, as `lua_tostring` gives it (numbers too).
///
/// # Safety
/// `idx` is valid.
pub unsafe fn error_text(l: *mut lua_State, idx: c_int) -> String {
    match ffi::lua_type(l, idx) {
        ffi::LUA_TSTRING => String::from_utf8_lossy(str_at(l, idx)).into_owned(),
        ffi::LUA_TNUMBER => {
            let n = ffi::lua_tonumber(l, idx);
            match integral(n) {
                Some(i) => i.to_string(),
                None => n.to_string(),
            }
        }
        t => {
            let name = CStr::from_ptr(ffi::lua_typename(l, t));
            format!("(error object is a {} value)", name.to_string_lossy())
        }
    }
}
