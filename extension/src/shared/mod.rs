//! State shared by every backend of the server, in PostgreSQL shared memory (it needs
//! `shared_preload_libraries = 'apikey'`): per key, its proof, rate-limit bucket, last use and
//! Argon2id gate (`keys`); verification counts waiting for the background worker (`usage`);
//! failures already audited this minute (`marks`); and server-wide counters (`Control`).
//! Capacities are settings fixed at server start; nothing grows past them.
//!
//! Without preloading, [`handles`] is `None` and callers fall back to what one backend can
//! do alone (see `apikey_status()`).

pub mod argon2;
pub mod credits;
pub mod keys;
pub mod marks;
mod persist;
pub mod table;
pub mod usage;

use crate::guc;
use pgrx::pg_sys;
use pgrx::spinlock::PgSpinLock;
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU64, Ordering};
use table::{size_of_table, SharedTable};

/// One LWLock per table.
const TRANCHE: &std::ffi::CStr = c"apikey";
const LOCKS: i32 = 4;

pub struct Handles {
    pub keys: SharedTable<keys::KeyEntry>,
    pub usage: SharedTable<usage::UsageEntry>,
    pub marks: SharedTable<marks::MarkEntry>,
    pub credits: SharedTable<credits::CreditEntry>,
    pub control: &'static Control,
}

static HANDLES: AtomicPtr<Handles> = AtomicPtr::new(std::ptr::null_mut());

/// The shared state, if the library was preloaded.
pub fn handles() -> Option<&'static Handles> {
    // SAFETY: set once per shared-memory lifetime by the startup hook to a leaked Box that
    // is never freed (a crash-restart replaces it, leaking the old one, which is tiny).
    unsafe { HANDLES.load(Ordering::Acquire).as_ref() }
}

/// Server-wide counters, reported by `apikey_status()` and the shim's `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    ProofHits,
    ProofMisses,
    Argon2Verified,
    Argon2Failed,
    Argon2Waits,
    Argon2Refused,
    RateLimited,
    UsageDropped,
    AuditSuppressed,
    KeysEvicted,
    Flushes,
    FlushFailures,
}

impl Stat {
    pub const ALL: [Stat; 12] = [
        Stat::ProofHits,
        Stat::ProofMisses,
        Stat::Argon2Verified,
        Stat::Argon2Failed,
        Stat::Argon2Waits,
        Stat::Argon2Refused,
        Stat::RateLimited,
        Stat::UsageDropped,
        Stat::AuditSuppressed,
        Stat::KeysEvicted,
        Stat::Flushes,
        Stat::FlushFailures,
    ];
}

/// The server-wide part: counters, the Argon2id gate, and the worker's last flush.
#[repr(C)]
pub struct Control {
    counters: [AtomicU64; Stat::ALL.len()],
    pub gate: PgSpinLock<keys::Gate>,
    /// `TimestampTz` of the last successful flush, 0 before the first.
    pub last_flush: AtomicI64,
    pub network_marks: marks::NetworkShare,
    /// When this shared memory was made (a `TimestampTz`): the epoch of its credit spending
    /// counters, which a restart or a crash starts again.
    pub epoch: i64,
    /// When the full credit table was last logged (`credits`).
    pub credits_full_logged: AtomicI64,
}

impl Control {
    fn new() -> Control {
        Control {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            gate: PgSpinLock::new(keys::Gate::default()),
            last_flush: AtomicI64::new(0),
            network_marks: marks::NetworkShare::default(),
            // SAFETY: reads the clock; the postmaster makes shared memory once per lifetime.
            epoch: unsafe { pg_sys::GetCurrentTimestamp() },
            credits_full_logged: AtomicI64::new(0),
        }
    }

    pub fn count(&self, stat: Stat, by: u64) {
        self.counters[stat as usize].fetch_add(by, Ordering::Relaxed);
    }

    pub fn get(&self, stat: Stat) -> u64 {
        self.counters[stat as usize].load(Ordering::Relaxed)
    }
}

/// Counts `stat` when shared state exists; a no-op otherwise.
pub fn count(stat: Stat) {
    if let Some(h) = handles() {
        h.control.count(stat, 1);
    }
}

/// Capacities, from the postmaster-only settings.
fn capacities() -> (usize, usize) {
    (guc::max_keys(), guc::max_usage_entries())
}

fn shmem_size() -> usize {
    let (keys, usage) = capacities();
    std::mem::size_of::<Control>()
        + size_of_table::<keys::KeyEntry>(keys)
        + size_of_table::<usage::UsageEntry>(usage)
        + size_of_table::<marks::MarkEntry>(usage)
        + size_of_table::<credits::CreditEntry>(keys)
}

static mut PREV_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Called from `_PG_init`: when the library is being preloaded, asks for the shared memory
/// and LWLocks and creates them once the server has them.
pub fn init() {
    // SAFETY: _PG_init runs in the postmaster (or a backend loading the library late) with
    // no other thread; the hook chain is PostgreSQL's documented way to add shared memory.
    unsafe {
        if !pg_sys::process_shared_preload_libraries_in_progress {
            return;
        }
        PREV_REQUEST_HOOK = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request_shmem);
        PREV_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(start_shmem);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn request_shmem() {
    // SAFETY: called by the postmaster once, in the request phase.
    unsafe {
        if let Some(previous) = PREV_REQUEST_HOOK {
            previous();
        }
        pg_sys::RequestAddinShmemSpace(shmem_size());
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), LOCKS);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn start_shmem() {
    // SAFETY: called by the postmaster after creating shared memory (and again after a
    // crash-restart), before any backend is forked; AddinShmemInitLock serialises the setup.
    unsafe {
        if let Some(previous) = PREV_STARTUP_HOOK {
            previous();
        }
        let (key_capacity, usage_capacity) = capacities();
        let init_lock = add_in_shmem_init_lock();
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let locks = pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr());
        let lock = |i: usize| &raw mut (*locks.add(i)).lock;
        let mut found = false;
        let control = pg_sys::ShmemInitStruct(
            c"apikey control".as_ptr(),
            std::mem::size_of::<Control>(),
            &mut found,
        )
        .cast::<Control>();
        if !found {
            control.write(Control::new());
        }
        let handles = Handles {
            keys: SharedTable::init(c"apikey keys", key_capacity, lock(0)),
            usage: SharedTable::init(c"apikey usage", usage_capacity, lock(1)),
            marks: SharedTable::init(c"apikey audit marks", usage_capacity, lock(2)),
            credits: SharedTable::init(c"apikey credits", key_capacity, lock(3)),
            control: &*control,
        };
        pg_sys::LWLockRelease(init_lock);
        HANDLES.store(Box::into_raw(Box::new(handles)), Ordering::Release);
        // In the postmaster (not a backend attaching under EXEC_BACKEND): bring back what
        // the last clean shutdown saved, and save what is left at the next one.
        if !pg_sys::IsUnderPostmaster {
            persist::load();
            pg_sys::on_shmem_exit(Some(save_on_exit), pg_sys::Datum::from(0));
        }
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn save_on_exit(code: i32, _arg: pg_sys::Datum) {
    // A crash (non-zero code) saves nothing: the state may be inconsistent.
    if code == 0 {
        persist::save();
    }
}

/// `AddinShmemInitLock`, a macro in C: entry 21 of the main LWLock array in every supported
/// release (`storage/lwlocknames.h`).
///
/// # Safety
/// Only after shared memory exists.
unsafe fn add_in_shmem_init_lock() -> *mut pg_sys::LWLock {
    const ADDIN_SHMEM_INIT_LOCK: usize = 21;
    // SAFETY: per the contract; MainLWLockArray holds every individual LWLock.
    unsafe { &raw mut (*pg_sys::MainLWLockArray.add(ADDIN_SHMEM_INIT_LOCK)).lock }
}

/// The current database, which every shared entry is tagged with: two databases of one
/// server may hold the same key id.
pub fn database() -> u32 {
    // SAFETY: a read of backend-global state set at connection start.
    unsafe { pg_sys::MyDatabaseId.to_u32() }
}

/// Copies `text` into a fixed, zero-padded byte field; `None` if it does not fit.
pub fn fixed<const N: usize>(text: &[u8]) -> Option<(u8, [u8; N])> {
    if text.len() > N {
        return None;
    }
    let mut out = [0u8; N];
    out[..text.len()].copy_from_slice(text);
    Some((u8::try_from(text.len()).ok()?, out))
}
