//! The `agent` binary: a thin wrapper over [`agent::app::main`].

/// jemalloc, as Fluent Bit uses: records are built on one thread and freed on another,
/// and glibc's malloc serialises such frees on its arena lock (a quarter of the CPU time
/// of the parser path went to that futex).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start. Allocations of 1 MiB and more (batches of
/// records, grown read buffers) come from an arena that returns freed pages at once:
/// without it a burst kept ~3x the memory of glibc's malloc (125 vs 39 MiB peak on 1M
/// lines tail -> stdout); with it the peak is glibc's, and small records keep
/// jemalloc's thread caches. `_RJEM_MALLOC_CONF` in the environment overrides it.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: MallocConf = MallocConf(c"oversize_threshold:1048576".as_ptr());

#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);
// A pointer to a static C string, only read.
unsafe impl Sync for MallocConf {}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::ExitCode::from(agent::app::main(&args))
}
