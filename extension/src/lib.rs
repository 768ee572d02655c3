//! apikey: API keys that live inside PostgreSQL.
//!
//! Pure logic (no database) lives in two crates: `apikey_core` (`hash`, `pepper`, `validate`,
//! `net`) and the shared `apikey_contract` (`token`, `scope`, `redact`, `key_state`).
//! SQL-facing glue: `verify`, `lifecycle`, `partner`, `identity`, with `access` (who may do
//! what), `audit`, `db` (SPI plans), `fetch` (index lookups), `known_keys` (the key rows a
//! backend remembers), `sqltypes`, `srf`, `guc` and `error` shared between them.

use pgrx::prelude::*;

/// Declares the `pg_finfo_<symbol>` function PostgreSQL looks up for a `LANGUAGE c` function
/// written against the version-1 calling convention by hand, i.e. without `#[pg_extern]`.
macro_rules! v1_call_info {
    ($finfo:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record =
                pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

mod access;
mod audit;
mod clock;
mod compat;
mod credits;
mod db;
mod error;
mod events;
mod fetch;
mod flush;
mod guc;
mod identity;
mod imported;
mod known_keys;
mod last_rates;
mod leaks;
mod lifecycle;
mod partner;
mod proof;
mod reminders;
mod scope;
mod shared;
mod sqltypes;
mod srf;
mod status;
mod usage_report;
mod verify;
mod version;
mod webhook_delivery;
mod webhook_endpoints;
mod webhook_verify;
mod worker;

use apikey_contract::{reason, redact, token};
use apikey_core::{hash, net, outbox, pepper, seal, validate};

::pgrx::pg_module_magic!();

extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../../sql/verify.sql", name = "verify");
extension_sql_file!("../../sql/known_keys.sql", name = "known_keys");
extension_sql_file!("../../sql/security.sql", name = "security", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx appends a Rust backtrace to the DETAIL of every error that passes through Rust
    // when the server's environment has RUST_BACKTRACE set; clients must never see one.
    // RUST_LIB_BACKTRACE takes precedence for captured backtraces, and is read at the first
    // capture, which cannot have happened before the library was loaded. The library starts
    // no threads, so nothing reads the environment concurrently.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    guc::init();
    shared::init();
    worker::register();
    fetch::init();
}

/// Required by `cargo pgrx test`; unused otherwise.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
