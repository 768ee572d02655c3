//! The extension's logic that needs no PostgreSQL, in a crate of its own so that its unit
//! tests (and the mutation tests of `scripts/mutants.sh`) build in seconds, without pgrx:
//! hashing secrets with the pepper, reading the pepper file, validating what callers store,
//! and the network addresses of the IP allow-list.

pub mod hash;
pub mod import;
pub mod net;
pub mod outbox;
pub mod pepper;
pub mod seal;
pub mod validate;
pub mod webhook;

use apikey_contract::{redact, scope};
