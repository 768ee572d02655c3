//! The SQL face of the scope rules, which live in `apikey_contract::scope` so that the shim
//! applies the same ones.

pub use apikey_contract::scope::*;

/// SQL face of [`has_scope`]: `apikey_has_scope('{orders:*}', 'orders:read')`.
#[pgrx::pg_extern(immutable, strict, parallel_safe)]
fn apikey_has_scope(granted: Vec<Option<String>>, required: &str) -> bool {
    has_scope(granted.iter().flatten().map(String::as_str), required)
}
