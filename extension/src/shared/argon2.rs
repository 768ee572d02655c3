//! The Argon2id gate. Argon2id (about 25 ms of a core) is paid only for keys not yet proven;
//! a flood of such verifications must not starve warm ones or a legitimate first
//! verification. So:
//! - at most one Argon2id verification of a key runs at a time in the server; others of the
//!   same key wait, then usually find it proven and pay nothing;
//! - at most `apikey.argon2_max_concurrency` run at once server-wide;
//! - keys under attack (several failed Argon2id verifications this minute) get at most half
//!   of those slots (at least one), so a first verification of any other key still finds
//!   one free.
//!
//! What a backend holds is released by guards, and by an exit callback should the backend
//! end without unwinding (FATAL), so nothing stays claimed by a process that is gone.

use super::keys::{self, Gate};
use super::{handles, Stat};
use pgrx::pg_sys;
use std::cell::{Cell, RefCell};

thread_local! {
    /// What this backend holds: a key's claim, and a gate slot (whether a suspect's).
    static HELD_KEY: RefCell<Option<String>> = const { RefCell::new(None) };
    static HELD_SLOT: Cell<Option<bool>> = const { Cell::new(None) };
    static EXIT_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

const WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// Whether `verify` may run now: returns the claims (released when dropped), after waiting
/// as long as needed. While waiting, `settled` is asked whether the answer is known without
/// Argon2id after all (another backend proved the key meanwhile); then no claim is made.
/// Without shared memory there is no gate: `Claim::Ungated`.
pub fn claim<R>(
    key_id: &str,
    now: i64,
    mut settled: impl FnMut() -> Option<R>,
) -> Result<Claim, R> {
    let Some(handles) = handles() else {
        return Ok(Claim::Ungated);
    };
    ensure_exit_callback();
    let mut waited = false;
    // First this key: one Argon2id per key at a time.
    loop {
        let claimed = keys::with_key(key_id, now, |state| {
            !std::mem::replace(&mut state.hashing, true)
        });
        match claimed {
            Some(true) => break,
            // The table refused an entry (full of keys in use): go ungated for this key.
            None => return Ok(Claim::Ungated),
            Some(false) => {
                waited = true;
                pause();
                if let Some(answer) = settled() {
                    note_wait(waited);
                    return Err(answer);
                }
            }
        }
    }
    HELD_KEY.set(Some(key_id.to_string()));
    let key = KeyClaim(key_id.to_string());
    // Then a slot of the server's capacity.
    let suspect = keys::suspect(key_id, now);
    loop {
        let max = crate::guc::argon2_max_concurrency();
        let entered = {
            let mut gate = handles.control.gate.lock();
            let admits =
                gate.running < max && (!suspect || gate.running_suspect < suspect_share(max));
            if admits {
                gate.running += 1;
                gate.running_suspect += u32::from(suspect);
            }
            admits
        };
        if entered {
            HELD_SLOT.set(Some(suspect));
            note_wait(waited);
            return Ok(Claim::Gated {
                _slot: SlotClaim,
                _key: key,
            });
        }
        waited = true;
        pause();
    }
}

/// The slots keys under attack may hold together.
fn suspect_share(max: u32) -> u32 {
    (max / 2).max(1)
}

fn note_wait(waited: bool) {
    if waited {
        super::count(Stat::Argon2Waits);
    }
}

/// Sleeps a millisecond, letting a cancel or statement timeout through.
fn pause() {
    // SAFETY: plain sleep and the standard interrupt check; no shared state is held here.
    unsafe { pg_sys::pg_usleep(WAIT.as_micros() as _) };
    pgrx::check_for_interrupts!();
}

/// Permission to run one Argon2id verification; dropping it releases what it holds.
pub enum Claim {
    Ungated,
    Gated { _slot: SlotClaim, _key: KeyClaim },
}

pub struct KeyClaim(String);

impl Drop for KeyClaim {
    fn drop(&mut self) {
        release_key(&self.0);
        HELD_KEY.set(None);
    }
}

pub struct SlotClaim;

impl Drop for SlotClaim {
    fn drop(&mut self) {
        if let Some(suspect) = HELD_SLOT.take() {
            release_slot(suspect);
        }
    }
}

fn release_key(key_id: &str) {
    keys::with_key(key_id, crate::clock::now(), |state| state.hashing = false);
}

fn release_slot(suspect: bool) {
    if let Some(handles) = handles() {
        let mut gate: pgrx::spinlock::PgSpinLockGuard<'_, Gate> = handles.control.gate.lock();
        gate.running = gate.running.saturating_sub(1);
        gate.running_suspect = gate.running_suspect.saturating_sub(u32::from(suspect));
    }
}

/// Registers, once per backend, the callback that releases claims a backend still holds
/// when it exits without unwinding.
fn ensure_exit_callback() {
    if EXIT_CALLBACK.replace(true) {
        return;
    }
    // SAFETY: before_shmem_exit runs the callback while shared memory is still attached.
    unsafe { pg_sys::before_shmem_exit(Some(release_on_exit), pg_sys::Datum::from(0)) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn release_on_exit(_code: i32, _arg: pg_sys::Datum) {
    if let Some(key_id) = HELD_KEY.take() {
        release_key(&key_id);
    }
    if let Some(suspect) = HELD_SLOT.take() {
        release_slot(suspect);
    }
}
