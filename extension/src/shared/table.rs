//! A fixed-capacity hash table in PostgreSQL shared memory (PostgreSQL's own `dynahash`,
//! as `pg_stat_statements` uses it), guarded by one LWLock. Entries are plain `#[repr(C)]`
//! structs whose first field is their tag (the hash key, compared byte for byte, so tags
//! must have no padding); their mutable part sits behind a spinlock, so a lookup needs the
//! table lock only in shared mode.
//!
//! This module and `shared/mod.rs` hold the `unsafe` of shared memory; the rest of the
//! crate uses the safe functions below.

use pgrx::pg_sys;
use std::ffi::CStr;
use std::marker::PhantomData;

/// # Safety
/// `Self` must be `#[repr(C)]` with `Tag` as its first field, `Tag` must have no padding
/// bytes, and both must be valid when all bytes are zero except the tag (entries are
/// created by writing [`TableEntry::new`] over the slot dynahash hands out).
pub unsafe trait TableEntry: Sized {
    type Tag: Copy + Eq;
    fn new(tag: Self::Tag) -> Self;
}

/// The tag of an entry, its first field (see [`TableEntry`]).
fn tag_of<E: TableEntry>(entry: &E) -> &E::Tag {
    // SAFETY: TableEntry guarantees a repr(C) struct whose first field is its Tag.
    unsafe { &*(entry as *const E).cast::<E::Tag>() }
}

/// A handle on a table created at server start, valid in every backend (the postmaster
/// creates it before forking them).
pub struct SharedTable<E: TableEntry> {
    htab: *mut pg_sys::HTAB,
    lock: *mut pg_sys::LWLock,
    _entries: PhantomData<E>,
}

// SAFETY: the handle is two pointers into shared memory, the same in every process; all
// access goes through the LWLock and the entries' spinlocks.
unsafe impl<E: TableEntry> Send for SharedTable<E> {}
unsafe impl<E: TableEntry> Sync for SharedTable<E> {}

/// Bytes of shared memory a table of `capacity` entries needs.
pub fn size_of_table<E: TableEntry>(capacity: usize) -> usize {
    // SAFETY: a pure size computation.
    unsafe { pg_sys::hash_estimate_size(capacity as _, std::mem::size_of::<E>()) }
}

impl<E: TableEntry> SharedTable<E> {
    /// Creates (or, in a process attaching to existing shared memory, finds) the table.
    ///
    /// # Safety
    /// Only from the `shmem_startup_hook`, with `AddinShmemInitLock` held, after its space
    /// was requested; `lock` must be an LWLock of this extension's tranche.
    pub unsafe fn init(name: &CStr, capacity: usize, lock: *mut pg_sys::LWLock) -> Self {
        let mut info = pg_sys::HASHCTL {
            keysize: std::mem::size_of::<E::Tag>(),
            entrysize: std::mem::size_of::<E>(),
            ..Default::default()
        };
        let flags = (pg_sys::HASH_ELEM | pg_sys::HASH_BLOBS) as i32;
        // SAFETY: per the contract; init_size = max_size preallocates every entry, so the
        // table never takes more shared memory than was requested.
        let htab = unsafe {
            pg_sys::ShmemInitHash(
                name.as_ptr(),
                capacity as _,
                capacity as _,
                &mut info,
                flags,
            )
        };
        SharedTable {
            htab,
            lock,
            _entries: PhantomData,
        }
    }

    pub fn shared(&self) -> Locked<'_, E> {
        self.locked(pg_sys::LWLockMode::LW_SHARED)
    }

    pub fn exclusive(&self) -> Locked<'_, E> {
        self.locked(pg_sys::LWLockMode::LW_EXCLUSIVE)
    }

    fn locked(&self, mode: pg_sys::LWLockMode::Type) -> Locked<'_, E> {
        // SAFETY: the lock lives in shared memory for the life of the server, and the guard
        // releases it. An ERROR while it is held becomes a Rust panic whose unwinding drops
        // the guard first; PostgreSQL's abort processing then releases only locks still held.
        unsafe { pg_sys::LWLockAcquire(self.lock, mode) };
        Locked {
            table: self,
            exclusive: mode == pg_sys::LWLockMode::LW_EXCLUSIVE,
        }
    }
}

/// The table with its lock held; released when dropped.
pub struct Locked<'t, E: TableEntry> {
    table: &'t SharedTable<E>,
    exclusive: bool,
}

impl<E: TableEntry> Drop for Locked<'_, E> {
    fn drop(&mut self) {
        // SAFETY: acquired in `locked`, released exactly once here.
        unsafe { pg_sys::LWLockRelease(self.table.lock) };
    }
}

impl<'t, E: TableEntry> Locked<'t, E> {
    fn search(&self, tag: &E::Tag, action: pg_sys::HASHACTION::Type) -> (*mut E, bool) {
        let mut found = false;
        // SAFETY: the tag is a plain byte blob of keysize bytes; the lock is held in a mode
        // that allows `action` (see the callers).
        let entry = unsafe {
            pg_sys::hash_search(
                self.table.htab,
                (tag as *const E::Tag).cast(),
                action,
                &mut found,
            )
        };
        (entry.cast::<E>(), found)
    }

    pub fn get(&self, tag: &E::Tag) -> Option<&E> {
        let (entry, _) = self.search(tag, pg_sys::HASHACTION::HASH_FIND);
        // SAFETY: dynahash returns a valid entry or NULL; it stays put while the lock is held.
        unsafe { entry.as_ref() }
    }

    /// The entry of `tag`, created if missing; `None` when the table is full.
    pub fn get_or_insert(&mut self, tag: &E::Tag) -> Option<&E> {
        assert!(self.exclusive, "inserting needs the exclusive lock");
        let (entry, found) = self.search(tag, pg_sys::HASHACTION::HASH_ENTER_NULL);
        if entry.is_null() {
            return None;
        }
        if !found {
            // SAFETY: a fresh slot of entrysize bytes whose tag dynahash has copied in;
            // writing the whole entry initialises the rest.
            unsafe { entry.write(E::new(*tag)) };
        }
        // SAFETY: as in `get`.
        unsafe { entry.as_ref() }
    }

    pub fn remove(&mut self, tag: &E::Tag) {
        assert!(self.exclusive, "removing needs the exclusive lock");
        self.search(tag, pg_sys::HASHACTION::HASH_REMOVE);
    }

    /// Removes every entry whose tag `doomed` picks.
    pub fn remove_where(&mut self, doomed: impl Fn(&E::Tag) -> bool) {
        let tags: Vec<E::Tag> = self
            .entries()
            .into_iter()
            .map(|e| *tag_of(e))
            .filter(|tag| doomed(tag))
            .collect();
        for tag in &tags {
            self.remove(tag);
        }
    }

    pub fn len(&self) -> usize {
        // SAFETY: a read of the table's counter under its lock.
        usize::try_from(unsafe { pg_sys::hash_get_num_entries(self.table.htab) }).unwrap_or(0)
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> Vec<&E> {
        let mut out = Vec::with_capacity(self.len());
        let mut status = pg_sys::HASH_SEQ_STATUS::default();
        // SAFETY: a full scan under the lock; it runs to the end, so no hash_seq_term.
        unsafe {
            pg_sys::hash_seq_init(&mut status, self.table.htab);
            loop {
                let entry = pg_sys::hash_seq_search(&mut status).cast::<E>();
                match entry.as_ref() {
                    Some(e) => out.push(e),
                    None => break,
                }
            }
        }
        out
    }
}
