//! The few `sd_journal_*` calls the input makes, on `libsystemd.so.0` loaded at run time.
//!
//! The library is opened with `dlopen` (the `libloading` crate) rather than linked: the
//! agent then builds on a machine with only a Rust toolchain (no libsystemd headers, no
//! pkg-config), and runs on one without systemd as long as no `systemd` input is
//! configured. The signatures below are those of `sd-journal.h` (systemd ≥ 209, stable
//! ABI: the symbols are versioned `LIBSYSTEMD_209`).

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The shared object Debian's `libsystemd0` (Fedora's `systemd-libs`) installs.
pub const LIBRARY: &str = "libsystemd.so.0";

/// `SD_JOURNAL_LOCAL_ONLY`: the journal of this machine only (Fluent Bit opens it so).
const SD_JOURNAL_LOCAL_ONLY: c_int = 1;

type Handle = *mut c_void;

/// The functions, resolved once per process.
struct Api {
    open: unsafe extern "C" fn(*mut Handle, c_int) -> c_int,
    open_directory: unsafe extern "C" fn(*mut Handle, *const c_char, c_int) -> c_int,
    close: unsafe extern "C" fn(Handle),
    add_match: unsafe extern "C" fn(Handle, *const c_void, usize) -> c_int,
    add_conjunction: unsafe extern "C" fn(Handle) -> c_int,
    add_disjunction: unsafe extern "C" fn(Handle) -> c_int,
    seek_head: unsafe extern "C" fn(Handle) -> c_int,
    seek_tail: unsafe extern "C" fn(Handle) -> c_int,
    seek_cursor: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    test_cursor: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    next: unsafe extern "C" fn(Handle) -> c_int,
    previous: unsafe extern "C" fn(Handle) -> c_int,
    next_skip: unsafe extern "C" fn(Handle, u64) -> c_int,
    get_cursor: unsafe extern "C" fn(Handle, *mut *mut c_char) -> c_int,
    get_realtime_usec: unsafe extern "C" fn(Handle, *mut u64) -> c_int,
    get_data: unsafe extern "C" fn(Handle, *const c_char, *mut *const c_void, *mut usize) -> c_int,
    restart_data: unsafe extern "C" fn(Handle),
    enumerate_data: unsafe extern "C" fn(Handle, *mut *const c_void, *mut usize) -> c_int,
    wait: unsafe extern "C" fn(Handle, u64) -> c_int,
    /// Keeps the functions above mapped; never unloaded.
    _lib: libloading::Library,
}

fn load() -> Result<Api, String> {
    // SAFETY: libsystemd's initialisers have no preconditions; every symbol is given
    // the C signature sd-journal.h declares for it.
    unsafe {
        let lib = libloading::Library::new(LIBRARY).map_err(|e| e.to_string())?;
        macro_rules! sym {
            ($name:literal) => {
                *lib.get(concat!($name, "\0").as_bytes())
                    .map_err(|e| format!("{}: {e}", $name))?
            };
        }
        Ok(Api {
            open: sym!("sd_journal_open"),
            open_directory: sym!("sd_journal_open_directory"),
            close: sym!("sd_journal_close"),
            add_match: sym!("sd_journal_add_match"),
            add_conjunction: sym!("sd_journal_add_conjunction"),
            add_disjunction: sym!("sd_journal_add_disjunction"),
            seek_head: sym!("sd_journal_seek_head"),
            seek_tail: sym!("sd_journal_seek_tail"),
            seek_cursor: sym!("sd_journal_seek_cursor"),
            test_cursor: sym!("sd_journal_test_cursor"),
            next: sym!("sd_journal_next"),
            previous: sym!("sd_journal_previous"),
            next_skip: sym!("sd_journal_next_skip"),
            get_cursor: sym!("sd_journal_get_cursor"),
            get_realtime_usec: sym!("sd_journal_get_realtime_usec"),
            get_data: sym!("sd_journal_get_data"),
            restart_data: sym!("sd_journal_restart_data"),
            enumerate_data: sym!("sd_journal_enumerate_data"),
            wait: sym!("sd_journal_wait"),
            _lib: lib,
        })
    }
}

/// The library, loaded on first use; the error says why it could not be.
fn api() -> Result<Arc<Api>, String> {
    static API: OnceLock<Result<Arc<Api>, String>> = OnceLock::new();
    API.get_or_init(|| load().map(Arc::new)).clone()
}

/// A negative errno returned by libsystemd, as text.
pub fn errno_text(r: c_int) -> String {
    std::io::Error::from_raw_os_error(-r).to_string()
}

fn check(r: c_int) -> Result<c_int, c_int> {
    if r < 0 {
        Err(r)
    } else {
        Ok(r)
    }
}

/// What [`Journal::wait`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// Nothing changed within the timeout.
    Nop,
    /// Entries were appended, or files were added or removed.
    Changed,
}

/// An open journal (all files of a directory, or the machine's).
pub struct Journal {
    api: Arc<Api>,
    j: Handle,
}

// SAFETY: an sd_journal is used from one thread at a time (it is moved to the reader
// thread, never shared); libsystemd checks only that the process did not fork.
unsafe impl Send for Journal {}

impl Drop for Journal {
    fn drop(&mut self) {
        // SAFETY: `j` was opened by sd_journal_open* and is closed once.
        unsafe { (self.api.close)(self.j) }
    }
}

/// Why a journal could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// `libsystemd.so.0` or one of its functions is missing.
    Library(String),
    /// sd_journal_open* failed with this negative errno.
    Open(c_int),
}

impl Journal {
    /// Opens the journal files in `dir`, or the local machine's journal.
    pub fn open(dir: Option<&Path>) -> Result<Journal, OpenError> {
        let api = api().map_err(OpenError::Library)?;
        let mut j: Handle = std::ptr::null_mut();
        let r = match dir {
            Some(d) => {
                use std::os::unix::ffi::OsStrExt;
                let c = CString::new(d.as_os_str().as_bytes()).map_err(|_| OpenError::Open(-22))?;
                // SAFETY: `j` receives the handle; `c` is a NUL-terminated path.
                unsafe { (api.open_directory)(&mut j, c.as_ptr(), 0) }
            }
            // SAFETY: as above.
            None => unsafe { (api.open)(&mut j, SD_JOURNAL_LOCAL_ONLY) },
        };
        if r < 0 || j.is_null() {
            return Err(OpenError::Open(r.min(-1)));
        }
        Ok(Journal { api, j })
    }

    /// `sd_journal_add_match("FIELD=value")`.
    pub fn add_match(&mut self, m: &[u8]) -> Result<(), c_int> {
        // SAFETY: the match is passed with its length (no NUL needed).
        check(unsafe { (self.api.add_match)(self.j, m.as_ptr().cast(), m.len()) }).map(drop)
    }

    pub fn add_conjunction(&mut self) -> Result<(), c_int> {
        // SAFETY: a valid handle.
        check(unsafe { (self.api.add_conjunction)(self.j) }).map(drop)
    }

    pub fn add_disjunction(&mut self) -> Result<(), c_int> {
        // SAFETY: a valid handle.
        check(unsafe { (self.api.add_disjunction)(self.j) }).map(drop)
    }

    pub fn seek_head(&mut self) -> Result<(), c_int> {
        // SAFETY: a valid handle.
        check(unsafe { (self.api.seek_head)(self.j) }).map(drop)
    }

    pub fn seek_tail(&mut self) -> Result<(), c_int> {
        // SAFETY: a valid handle.
        check(unsafe { (self.api.seek_tail)(self.j) }).map(drop)
    }

    pub fn seek_cursor(&mut self, cursor: &str) -> Result<(), c_int> {
        let c = CString::new(cursor).map_err(|_| -22)?;
        // SAFETY: a valid handle and a NUL-terminated cursor.
        check(unsafe { (self.api.seek_cursor)(self.j, c.as_ptr()) }).map(drop)
    }

    /// Whether the current entry is the one `cursor` names.
    pub fn test_cursor(&mut self, cursor: &str) -> bool {
        let Ok(c) = CString::new(cursor) else {
            return false;
        };
        // SAFETY: a valid handle and a NUL-terminated cursor.
        unsafe { (self.api.test_cursor)(self.j, c.as_ptr()) > 0 }
    }

    /// Moves to the next entry: `Ok(false)` at the end.
    pub fn next(&mut self) -> Result<bool, c_int> {
        // SAFETY: a valid handle.
        check(unsafe { (self.api.next)(self.j) }).map(|n| n > 0)
    }

    /// Moves to the previous entry: `Ok(false)` at the start.
    pub fn previous(&mut self) -> Result<bool, c_int> {
        // SAFETY: a valid handle.
        check(unsafe { (self.api.previous)(self.j) }).map(|n| n > 0)
    }

    /// Moves up to `n` entries forward; how many it moved.
    pub fn next_skip(&mut self, n: u64) -> Result<c_int, c_int> {
        // SAFETY: a valid handle.
        check(unsafe { (self.api.next_skip)(self.j, n) })
    }

    /// The current entry's cursor.
    pub fn cursor(&mut self) -> Result<String, c_int> {
        let mut p: *mut c_char = std::ptr::null_mut();
        // SAFETY: on success `p` is a malloc'ed NUL-terminated string we free.
        unsafe {
            check((self.api.get_cursor)(self.j, &mut p))?;
            if p.is_null() {
                return Err(-5);
            }
            let s = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
            libc::free(p.cast());
            Ok(s)
        }
    }

    /// The current entry's wall-clock time (when journald received it), µs since 1970.
    pub fn realtime_usec(&mut self) -> Result<u64, c_int> {
        let mut t = 0u64;
        // SAFETY: a valid handle; `t` receives the time.
        check(unsafe { (self.api.get_realtime_usec)(self.j, &mut t) }).map(|_| t)
    }

    /// `FIELD=value` of the current entry's field `field` (NUL-terminated name).
    pub fn data(&mut self, field: &std::ffi::CStr) -> Option<&[u8]> {
        let mut d: *const c_void = std::ptr::null();
        let mut n = 0usize;
        // SAFETY: on success `d` points at `n` bytes owned by the journal, valid until
        // the next call on it (the borrow of `self` ensures that).
        unsafe {
            if (self.api.get_data)(self.j, field.as_ptr(), &mut d, &mut n) < 0 || d.is_null() {
                return None;
            }
            Some(std::slice::from_raw_parts(d.cast(), n))
        }
    }

    /// Restarts [`Journal::enumerate`] at the current entry's first field.
    pub fn restart_data(&mut self) {
        // SAFETY: a valid handle.
        unsafe { (self.api.restart_data)(self.j) }
    }

    /// The next `FIELD=value` of the current entry, in the journal's order; `Ok(None)`
    /// after the last. An error is a field that cannot be read (a damaged object).
    pub fn enumerate(&mut self) -> Result<Option<&[u8]>, c_int> {
        let mut d: *const c_void = std::ptr::null();
        let mut n = 0usize;
        // SAFETY: as in `data`.
        unsafe {
            let r = check((self.api.enumerate_data)(self.j, &mut d, &mut n))?;
            if r == 0 || d.is_null() {
                return Ok(None);
            }
            Ok(Some(std::slice::from_raw_parts(d.cast(), n)))
        }
    }

    /// Waits up to `timeout_us` for the journal to change (inotify under the hood).
    pub fn wait(&mut self, timeout_us: u64) -> Result<Wake, c_int> {
        // SAFETY: a valid handle.
        let r = check(unsafe { (self.api.wait)(self.j, timeout_us) })?;
        Ok(if r == 0 { Wake::Nop } else { Wake::Changed })
    }
}
