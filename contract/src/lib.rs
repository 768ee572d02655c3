//! What the apikey extension and its HTTP shim agree on, as pure code both crates use: the
//! token format, the reason codes, the scope rules and limits, and how input is cut before an error message
//! repeats it.

pub mod address;
pub mod argument;
pub mod credits;
pub mod key_state;
pub mod limits;
pub mod reason;
pub mod redact;
pub mod scope;
pub mod token;
