//! The SQL face of the scope rules, which live in `apikey_contract::scope` so that the shim
//! applies the same ones.

pub use apikey_contract::scope::*;

/// SQL face of [`has_scope`]: `apikey_has_scope('{orders:*}', 'orders:read')`.
#[pgrx::pg_extern(immutable, strict, parallel_safe)]
fn apikey_has_scope(granted: Vec<Option<String>>, required: &str) -> bool {
    has_scope(granted.iter().flatten().map(String::as_str), required)
}

/// SQL face of [`has_any`]: `apikey_has_any_scope('{orders/7:read}', '{orders/7:read,orders:read}')`.
#[pgrx::pg_extern(immutable, strict, parallel_safe)]
fn apikey_has_any_scope(granted: Vec<Option<String>>, required: Vec<Option<String>>) -> bool {
    let granted: Vec<String> = granted.into_iter().flatten().collect();
    has_any(&granted, required.iter().map(Option::as_deref))
}
