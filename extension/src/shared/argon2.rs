//! The Argon2id gate. Argon2id (about 25 ms of a core) is paid only for keys not yet proven;
//! a flood of such verifications must neither starve warm ones nor hold the callers'
//! connections (a shim's pool) while it queues. So:
//! - at most one Argon2id verification of a key runs at a time in the server. Others with
//!   the same digest wait for its answer; others with another digest (guesses Argon2id must
//!   refute one by one) may wait only `MAX_WAITING_OTHERS` at a time, and beyond that are
//!   refused at once (`Admission::Busy`, answered as `rate_limited`);
//! - at most `apikey.argon2_max_concurrency` run at once server-wide;
//! - keys under attack (several failed Argon2id verifications this minute) never wait for
//!   the server's capacity: they get at most half of those slots (at least one) and
//!   `apikey.argon2_suspect_per_second` verifications a second together, and are refused
//!   beyond, so a first verification of any other key still finds a slot and a flood of
//!   guesses costs a bounded share of the CPU.
//!
//! What a backend holds is released by guards, and by an exit callback should the backend
//! end without unwinding (FATAL), so nothing stays claimed by a process that is gone.

use super::keys::{self, Gate, KeyState};
use super::{handles, Stat};
use crate::hash::{self, Digest};
use pgrx::pg_sys;
use std::cell::{Cell, RefCell};

thread_local! {
    /// What this backend holds: a key's claim, a place among a key's waiters, and a gate
    /// slot (whether a suspect's).
    static HELD_KEY: RefCell<Option<String>> = const { RefCell::new(None) };
    static HELD_WAIT: RefCell<Option<String>> = const { RefCell::new(None) };
    static HELD_SLOT: Cell<Option<bool>> = const { Cell::new(None) };
    static EXIT_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

const WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// Backends that may wait, per key, to try a digest other than the one being verified.
pub const MAX_WAITING_OTHERS: u32 = 2;

/// Whether `verify` may run Argon2id of `digest` for `key_id` now. While waiting, `settled`
/// is asked whether the answer is known without Argon2id after all (another backend proved
/// or refuted it meanwhile); then no claim is made. Without shared memory there is no gate.
pub fn claim<R>(
    key_id: &str,
    digest: &Digest,
    now: i64,
    mut settled: impl FnMut() -> Option<R>,
) -> Admission<R> {
    let Some(handles) = handles() else {
        return Admission::Run(Claim::Ungated);
    };
    ensure_exit_callback();
    let mut waited = false;
    let mut place: Option<WaitPlace> = None;
    // First this key: one Argon2id per key at a time.
    loop {
        let holds_place = place.is_some();
        let turn = keys::with_key(key_id, now, |state| key_turn(state, digest, holds_place));
        match turn {
            Some(KeyTurn::Run) => break,
            // The table refused an entry (full of keys in use): go ungated for this key.
            None => return Admission::Run(Claim::Ungated),
            Some(KeyTurn::Refuse) => {
                super::count(Stat::Argon2Refused);
                return Admission::Busy;
            }
            Some(turn) => {
                if turn == KeyTurn::WaitOther && place.is_none() {
                    HELD_WAIT.set(Some(key_id.to_string()));
                    place = Some(WaitPlace(key_id.to_string()));
                }
                waited = true;
                pause();
                if let Some(answer) = settled() {
                    note_wait(waited);
                    return Admission::Settled(answer);
                }
            }
        }
    }
    drop(place);
    HELD_KEY.set(Some(key_id.to_string()));
    let key = KeyClaim(key_id.to_string());
    // Then a slot of the server's capacity.
    let suspect = keys::suspect(key_id, now);
    loop {
        let max = crate::guc::argon2_max_concurrency();
        let per_second = crate::guc::argon2_suspect_per_second();
        let turn = gate_turn(
            &mut handles.control.gate.lock(),
            max,
            per_second,
            suspect,
            crate::clock::now(),
        );
        match turn {
            GateTurn::Enter => {
                HELD_SLOT.set(Some(suspect));
                note_wait(waited);
                return Admission::Run(Claim::Gated {
                    _slot: SlotClaim,
                    _key: key,
                });
            }
            GateTurn::Refuse => {
                super::count(Stat::Argon2Refused);
                return Admission::Busy;
            }
            GateTurn::Wait => {
                waited = true;
                pause();
            }
        }
    }
}

/// What [`claim`] decided.
pub enum Admission<R> {
    /// Run Argon2id now, holding this.
    Run(Claim),
    /// Another backend's Argon2id answered meanwhile.
    Settled(R),
    /// The key (or the server's share for keys under attack) has all the Argon2id work it
    /// may queue: refused without waiting.
    Busy,
}

/// What a backend may do about `digest` given its key's state, and the state after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyTurn {
    /// The key's claim is this backend's.
    Run,
    /// The same digest is being verified: its answer settles this one.
    WaitSame,
    /// Another digest is being verified; this one waits among the bounded others.
    WaitOther,
    /// Another digest is being verified and enough others already wait.
    Refuse,
}

/// `holds_place`: this backend already counts among the key's waiting others (its
/// `WaitPlace` gives the place back when dropped).
fn key_turn(state: &mut KeyState, digest: &Digest, holds_place: bool) -> KeyTurn {
    if !state.hashing {
        state.hashing = true;
        state.hashing_digest = *digest;
        KeyTurn::Run
    } else if hash::digests_equal(&state.hashing_digest, digest) {
        KeyTurn::WaitSame
    } else if holds_place {
        KeyTurn::WaitOther
    } else if state.waiting_others < MAX_WAITING_OTHERS {
        state.waiting_others += 1;
        KeyTurn::WaitOther
    } else {
        KeyTurn::Refuse
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GateTurn {
    Enter,
    Wait,
    Refuse,
}

/// Whether a verification (`suspect`: of a key under attack) enters the server's gate at
/// `now`, with `max` slots and `per_second` suspect verifications a second.
fn gate_turn(gate: &mut Gate, max: u32, per_second: u32, suspect: bool, now: i64) -> GateTurn {
    if !suspect {
        if gate.running < max {
            gate.running += 1;
            return GateTurn::Enter;
        }
        return GateTurn::Wait;
    }
    // A second's worth of budget at most, refilled continuously.
    let elapsed = (now - gate.suspect_budget_at).max(0) as f64 / 1e6;
    let budget = (gate.suspect_budget + elapsed * f64::from(per_second)).min(f64::from(per_second));
    gate.suspect_budget = budget;
    gate.suspect_budget_at = now;
    if gate.running < max && gate.running_suspect < suspect_share(max) && budget >= 1.0 {
        gate.running += 1;
        gate.running_suspect += 1;
        gate.suspect_budget -= 1.0;
        GateTurn::Enter
    } else {
        GateTurn::Refuse
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

/// A place among the backends waiting to try another digest of a key.
struct WaitPlace(String);

impl Drop for WaitPlace {
    fn drop(&mut self) {
        release_place(&self.0);
        HELD_WAIT.set(None);
    }
}

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

fn release_place(key_id: &str) {
    keys::with_key(key_id, crate::clock::now(), |state| {
        state.waiting_others = state.waiting_others.saturating_sub(1);
    });
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
    if let Some(key_id) = HELD_WAIT.take() {
        release_place(&key_id);
    }
    if let Some(suspect) = HELD_SLOT.take() {
        release_slot(suspect);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn one_digest_runs_the_same_waits_and_other_guesses_queue_boundedly() {
        let mut key = KeyState::default();
        let (right, guess) = ([1; 32], [2; 32]);
        assert_eq!(key_turn(&mut key, &right, false), KeyTurn::Run);
        assert!(key.hashing);
        // Any number of the same digest wait: one answer settles them all.
        for _ in 0..100 {
            assert_eq!(key_turn(&mut key, &right, false), KeyTurn::WaitSame);
        }
        assert_eq!(key.waiting_others, 0);
        for i in 0..MAX_WAITING_OTHERS {
            assert_eq!(
                key_turn(&mut key, &[10 + i as u8; 32], false),
                KeyTurn::WaitOther
            );
        }
        assert_eq!(key_turn(&mut key, &guess, false), KeyTurn::Refuse);
        assert_eq!(
            key.waiting_others, MAX_WAITING_OTHERS,
            "a refusal takes no place"
        );
        // A waiter already counted keeps waiting without taking a second place.
        assert_eq!(key_turn(&mut key, &[10; 32], true), KeyTurn::WaitOther);
        assert_eq!(key.waiting_others, MAX_WAITING_OTHERS);
        key.hashing = false;
        assert_eq!(key_turn(&mut key, &guess, false), KeyTurn::Run);
        assert_eq!(key.hashing_digest, guess);
    }

    /// Of `tries` suspect verifications at `now`, each ending at once, how many entered.
    fn suspects_entering(gate: &mut Gate, now: i64, tries: usize) -> usize {
        (0..tries)
            .filter(|_| {
                let entered = gate_turn(gate, 1024, 10, true, now) == GateTurn::Enter;
                if entered {
                    gate.running -= 1;
                    gate.running_suspect -= 1;
                }
                entered
            })
            .count()
    }

    #[test]
    fn keys_under_attack_never_wait_and_spend_a_budget_per_second() {
        let mut gate = Gate::default();
        let now = 1_000 * S;
        // Four slots: two for suspects, ten of their verifications a second.
        assert_eq!(gate_turn(&mut gate, 4, 10, true, now), GateTurn::Enter);
        assert_eq!(gate_turn(&mut gate, 4, 10, true, now), GateTurn::Enter);
        assert_eq!(
            gate_turn(&mut gate, 4, 10, true, now),
            GateTurn::Refuse,
            "their share"
        );
        assert_eq!(gate_turn(&mut gate, 4, 10, false, now), GateTurn::Enter);
        assert_eq!(gate_turn(&mut gate, 4, 10, false, now), GateTurn::Enter);
        assert_eq!(
            gate_turn(&mut gate, 4, 10, false, now),
            GateTurn::Wait,
            "others wait"
        );
        assert_eq!(gate_turn(&mut gate, 4, 10, true, now), GateTurn::Refuse);

        // With slots to spare, the budget is what bounds them: 10 in a second, then one per
        // tenth of a second.
        let mut gate = Gate::default();
        assert_eq!(suspects_entering(&mut gate, now, 50), 10);
        assert_eq!(
            gate_turn(&mut gate, 1024, 10, true, now + S / 20),
            GateTurn::Refuse
        );
        assert_eq!(
            gate_turn(&mut gate, 1024, 10, true, now + S / 10),
            GateTurn::Enter
        );
        // An idle minute gives back one second's budget, not sixty.
        let (mut gate, later) = (gate, now + 60 * S);
        gate.running = 0;
        gate.running_suspect = 0;
        assert_eq!(suspects_entering(&mut gate, later, 50), 10);
    }
}
