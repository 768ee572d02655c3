//! apikey: API keys that live inside PostgreSQL.
//!
//! Pure logic (no database): `token`, `scope`, `hash`, `pepper`, `validate`, `net`.
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
mod db;
mod error;
mod fetch;
mod guc;
mod hash;
mod identity;
mod known_keys;
mod lifecycle;
mod net;
mod partner;
mod pepper;
mod scope;
mod sqltypes;
mod srf;
mod token;
mod validate;
mod verify;

::pgrx::pg_module_magic!();

extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../../sql/verify.sql", name = "verify");
extension_sql_file!("../../sql/known_keys.sql", name = "known_keys");
extension_sql_file!("../../sql/security.sql", name = "security", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
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
