//! Releases. The SQL objects of a database are at the version `CREATE EXTENSION` or the last
//! `ALTER EXTENSION apikey UPDATE` left them at; the loaded library may be newer (a package
//! was upgraded and the server restarted, but the database not yet updated).

use crate::error::{ApiError, ApiResult, OrRaise};
use pgrx::prelude::*;
use std::cell::RefCell;

/// The library's own release, the version `CREATE EXTENSION` installs.
pub const LIBRARY: &str = env!("CARGO_PKG_VERSION");

/// The release that added `apikey.audit_log.actor_key_id`.
pub const ACTOR_KEY_ID: Release = Release(0, 2, 0);
/// The release that added `apikey.usage`, retention and the rate-limit result columns.
pub const USAGE: Release = Release(0, 2, 0);
/// The release that added the outbox, `apikey.events`.
pub const EVENTS: Release = Release(0, 3, 0);
/// The release that added webhook endpoints and their deliveries.
pub const WEBHOOKS: Release = Release(0, 4, 0);
/// The release that added endpoint pauses (`failures_in_a_row`, `paused_until`) and
/// `apikey.keys.disabled_by_operator`.
pub const ROUND_THREE: Release = Release(0, 5, 0);
/// The release that added credit balances (`apikey.key_credits`) and `apikey_verify`'s
/// `cost`.
pub const CREDITS: Release = Release(0, 7, 0);
/// The release that added partner-wide limits (`apikey.partner_credits`,
/// `apikey.partners.rate_per_minute`).
pub const PARTNER_LIMITS: Release = Release(0, 8, 0);
/// The release that added `apikey.usage.spent`.
pub const USAGE_SPENT: Release = Release(0, 8, 0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release(pub u32, pub u32, pub u32);

impl Release {
    pub fn parse(version: &str) -> Option<Release> {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Some(Release(a, b, c)),
            _ => None,
        }
    }
}

const EXTVERSION: &str = "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'apikey'";

/// The version of the extension's SQL objects in the calling database.
pub fn installed() -> Option<String> {
    Spi::get_one::<String>(EXTVERSION)
        .map_err(ApiError::from)
        .or_raise()
}

/// [`installed`] as a release; `None` without the extension.
pub fn installed_release() -> ApiResult<Option<Release>> {
    Ok(Spi::get_one::<String>(EXTVERSION)?
        .as_deref()
        .and_then(Release::parse))
}

thread_local! {
    /// [`installed`] as read in the transaction of the given local id.
    static SCHEMA: RefCell<Option<(pg_sys::LocalTransactionId, Option<Release>)>> =
        const { RefCell::new(None) };
}

/// Whether the calling database's objects are at `release` or later. A library newer than a
/// database (package upgraded, `ALTER EXTENSION apikey UPDATE` not yet run) serves it as its
/// release defines it: what a later release added is only used once the database has it.
pub fn schema_has(release: Release) -> ApiResult<bool> {
    let lxid = crate::identity::local_xid();
    if let Some(known) = SCHEMA.with_borrow(|s| s.filter(|(at, _)| *at == lxid).map(|(_, r)| r)) {
        return Ok(known.is_some_and(|r| r >= release));
    }
    let current = installed_release()?;
    SCHEMA.set(Some((lxid, current)));
    Ok(current.is_some_and(|r| r >= release))
}

#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_version() -> TableIterator<
    'static,
    (
        name!(extension_version, Option<String>),
        name!(library_version, &'static str),
    ),
> {
    TableIterator::once((installed(), LIBRARY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_order_as_numbers() {
        assert_eq!(Release::parse("0.10.1"), Some(Release(0, 10, 1)));
        assert!(Release(0, 10, 0) > Release(0, 9, 9));
        assert!(Release::parse(LIBRARY).is_some_and(|r| r >= ACTOR_KEY_ID));
        for bad in ["", "1", "1.2", "1.2.3.4", "1.x.3", "-1.0.0"] {
            assert_eq!(Release::parse(bad), None, "{bad}");
        }
    }
}
