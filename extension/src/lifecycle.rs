//! Issue, rotate, revoke, enable/disable. Each runs as the extension owner (SECURITY DEFINER)
//! but decides the caller's powers from the outer user (see `access`), validates every
//! argument with a SQLSTATE naming it, and writes one audit row.

use crate::access;
use crate::audit::{self, Event};
use crate::credits::Balance;
use crate::error::{ApiError, ApiResult, OrRaise};
use crate::events;
use crate::sqltypes::CidrArray;
use crate::{guc, hash, token, validate, version};
use apikey_contract::limits;
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::json;

type IssuedKey = (String, String);

#[allow(clippy::too_many_arguments)]
#[pg_extern(name = "apikey_issue", volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_issue_with_credits(
    partner_id: Option<pgrx::Uuid>,
    scopes: Option<Vec<Option<String>>>,
    name: default!(Option<String>, "NULL"),
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    not_before: default!(Option<TimestampWithTimeZone>, "NULL"),
    rate_per_minute: default!(Option<i32>, 300),
    allowed_cidrs: default!(Option<CidrArray>, "NULL"),
    environment: default!(Option<String>, "'live'"),
    tags: default!(Option<Vec<Option<String>>>, "'{}'"),
    metadata: default!(Option<JsonB>, "'{}'"),
    prefix: default!(Option<String>, "NULL"),
    credits: default!(Option<i64>, "NULL"),
    credits_refill_amount: default!(Option<i64>, "NULL"),
    credits_refill_interval: default!(Option<Interval>, "NULL"),
) -> TableIterator<'static, (name!(key_id, String), name!(token, String))> {
    let request = IssueRequest {
        partner_id,
        scopes,
        name,
        expires_at,
        not_before,
        rate_per_minute,
        allowed_cidrs,
        environment,
        tags,
        metadata,
        prefix,
        credits: Balance {
            remaining: credits,
            refill_amount: credits_refill_amount,
            refill_interval: credits_refill_interval,
        },
        import: None,
    };
    let issued = Spi::connect_mut(|client| issue(client, request)).or_raise();
    TableIterator::once(issued)
}

/// `apikey_issue` as releases before 0.8.0 declare it (without a balance), for a database
/// not yet updated to this library's release; never declared by this release's SQL.
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false, volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_issue(
    partner_id: Option<pgrx::Uuid>,
    scopes: Option<Vec<Option<String>>>,
    name: Option<String>,
    expires_at: Option<TimestampWithTimeZone>,
    not_before: Option<TimestampWithTimeZone>,
    rate_per_minute: Option<i32>,
    allowed_cidrs: Option<CidrArray>,
    environment: Option<String>,
    tags: Option<Vec<Option<String>>>,
    metadata: Option<JsonB>,
    prefix: Option<String>,
) -> TableIterator<'static, (name!(key_id, String), name!(token, String))> {
    apikey_issue_with_credits(
        partner_id,
        scopes,
        name,
        expires_at,
        not_before,
        rate_per_minute,
        allowed_cidrs,
        environment,
        tags,
        metadata,
        prefix,
        None,
        None,
        None,
    )
}

pub(crate) struct IssueRequest {
    pub partner_id: Option<pgrx::Uuid>,
    pub scopes: Option<Vec<Option<String>>>,
    pub name: Option<String>,
    pub expires_at: Option<TimestampWithTimeZone>,
    pub not_before: Option<TimestampWithTimeZone>,
    pub rate_per_minute: Option<i32>,
    pub allowed_cidrs: Option<CidrArray>,
    pub environment: Option<String>,
    pub tags: Option<Vec<Option<String>>>,
    pub metadata: Option<JsonB>,
    pub prefix: Option<String>,
    pub credits: Balance,
    /// A key another system issued, stored by its hash: no token is made for it.
    pub import: Option<crate::imported::Import>,
}

pub(crate) fn issue(client: &mut SpiClient<'_>, r: IssueRequest) -> ApiResult<IssuedKey> {
    access::require_admin(if r.import.is_some() {
        "apikey_import"
    } else {
        "apikey_issue"
    })?;
    let partner_id = r.partner_id.ok_or_else(|| ApiError::null("partner_id"))?;
    let scopes = validate::scopes(&r.scopes.ok_or_else(|| ApiError::null("scopes"))?)
        .map_err(|e| ApiError::invalid("scopes", e))?;
    if let Some(name) = &r.name {
        validate::name(name).map_err(|e| ApiError::invalid("name", e))?;
    }
    let rate = r
        .rate_per_minute
        .ok_or_else(|| ApiError::null("rate_per_minute"))?;
    validate::rate_per_minute(rate).map_err(|e| ApiError::invalid("rate_per_minute", e))?;
    let environment = r.environment.ok_or_else(|| ApiError::null("environment"))?;
    token::validate_environment(&environment).map_err(|e| ApiError::invalid("environment", e))?;
    let tags =
        validate::tags(&r.tags.unwrap_or_default()).map_err(|e| ApiError::invalid("tags", e))?;
    let metadata = r.metadata.map(|j| j.0).unwrap_or_else(|| json!({}));
    validate::metadata(&metadata).map_err(|e| ApiError::invalid("metadata", e))?;
    let prefix = match r.prefix {
        Some(p) => {
            token::validate_prefix(&p).map_err(|e| ApiError::invalid("prefix", e))?;
            p
        }
        None => {
            let p = guc::default_prefix();
            token::validate_prefix(&p)
                .map_err(|e| ApiError::invalid("apikey.default_prefix", e))?;
            p
        }
    };
    check_partner_times_and_cidrs(
        client,
        partner_id,
        r.expires_at,
        r.not_before,
        r.allowed_cidrs.as_ref(),
    )?;

    let peppers = guc::peppers()?;
    let pepper = peppers.newest();
    let params = guc::argon2_params();
    let actor = access::actor();
    // A key id collision is astronomically unlikely (95 random bits), but cheap to survive.
    for _ in 0..3 {
        let new = token::generate(&prefix, &environment)
            .map_err(|e| ApiError::internal(format!("OS random number generator failed: {e}")))?;
        // An imported key keeps the other system's hash until its first verification.
        let (phc, fingerprint) = match &r.import {
            Some(import) => (import.stored_hash().to_string(), import.foreign_mark()),
            None => (
                hash::hash(
                    &hash::digest(pepper.bytes(), new.secret().as_bytes()),
                    params,
                )
                .map_err(ApiError::config)?,
                pepper.fingerprint.clone(),
            ),
        };
        let inserted = client.update(
            "INSERT INTO apikey.keys (key_id, partner_id, secret_hash, pepper_fingerprint, name, \
                scopes, tags, metadata, environment, not_before, expires_at, rate_per_minute, \
                allowed_cidrs, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (key_id) DO NOTHING RETURNING key_id",
            None,
            &[
                new.key_id.as_str().into(),
                partner_id.into(),
                phc.into(),
                fingerprint.as_str().into(),
                r.name.as_deref().into(),
                scopes.clone().into(),
                tags.clone().into(),
                JsonB(metadata.clone()).into(),
                environment.as_str().into(),
                r.not_before.into(),
                r.expires_at.into(),
                rate.into(),
                cidr_arg(r.allowed_cidrs.as_ref()),
                actor.as_str().into(),
            ],
        )?;
        if inserted.is_empty() {
            continue;
        }
        let mut event = Event::new(if r.import.is_some() {
            "imported"
        } else {
            "issue"
        });
        event.key_id = Some(&new.key_id);
        event.partner_id = Some(partner_id);
        event.detail = json!({ "scopes": scopes, "environment": environment, "tags": tags });
        if let Some(import) = &r.import {
            import.record(client, &new.key_id)?;
            event.detail["hash_format"] = json!(import.format().as_str());
        }
        if r.credits.is_given() {
            crate::credits::set_issued(client, &new.key_id, &r.credits)?;
            event.detail["credits"] = r.credits.detail();
        }
        audit::record_action(client, event)?;
        if r.import.is_none() {
            events::record_key_event(client, events::KEY_ISSUED, &new.key_id, json!({}))?;
        }
        return Ok((new.key_id.clone(), new.token.clone()));
    }
    Err(ApiError::internal("could not allocate a unique key id"))
}

fn cidr_arg(cidrs: Option<&CidrArray>) -> pgrx::datum::DatumWithOid<'static> {
    cidrs.copied().into()
}

/// The checks that need the database: the partner exists, the times make sense against
/// `now()`, and the CIDR list is usable.
fn check_partner_times_and_cidrs(
    client: &SpiClient<'_>,
    partner_id: pgrx::Uuid,
    expires_at: Option<TimestampWithTimeZone>,
    not_before: Option<TimestampWithTimeZone>,
    cidrs: Option<&CidrArray>,
) -> ApiResult<()> {
    let row = client.select(
        "SELECT EXISTS (SELECT 1 FROM apikey.partners WHERE partner_id = $1), \
                $2 <= clock_timestamp(), $3 >= $2, cardinality($4) = 0, \
                array_position($4, NULL) IS NOT NULL",
        Some(1),
        &[
            partner_id.into(),
            expires_at.into(),
            not_before.into(),
            cidr_arg(cidrs),
        ],
    )?;
    let row = row.first();
    if !row.get::<bool>(1)?.unwrap_or(false) {
        return Err(ApiError::not_found(format!("partner_id {partner_id}")));
    }
    if row.get::<bool>(2)?.unwrap_or(false) {
        return Err(ApiError::invalid("expires_at", "must be in the future"));
    }
    if row.get::<bool>(3)?.unwrap_or(false) {
        return Err(ApiError::invalid("not_before", "must be before expires_at"));
    }
    if row.get::<bool>(4)?.unwrap_or(false) {
        return Err(ApiError::invalid(
            "allowed_cidrs",
            "is empty; pass NULL to allow every address",
        ));
    }
    if row.get::<bool>(5)?.unwrap_or(false) {
        return Err(ApiError::invalid("allowed_cidrs", "contains NULL"));
    }
    Ok(())
}

/// The columns of a key that lifecycle decisions need, read under `FOR UPDATE` so that
/// concurrent rotations and revocations of one key are serialised. In READ COMMITTED the
/// lock returns the row as the last committed change left it (a revoke that waited for
/// another one sees it revoked); in REPEATABLE READ and SERIALIZABLE, a row changed since the
/// transaction's snapshot raises a serialization failure (40001) instead of being decided on
/// as the snapshot saw it. States are judged at the time of the call (`crate::clock`).
struct LockedKey {
    partner_id: pgrx::Uuid,
    scopes: Vec<String>,
    revoked: bool,
    expired: bool,
    rotated_to: Option<String>,
    disabled_by_operator: bool,
}

fn lock_key(client: &mut SpiClient<'_>, key_id: Option<&str>) -> ApiResult<(String, LockedKey)> {
    let key_id = key_id.ok_or_else(|| ApiError::null("key_id"))?;
    let disabled_by_operator = if version::schema_has(version::ROUND_THREE)? {
        "disabled_by_operator"
    } else {
        "false"
    };
    let rows = client.update(
        &format!(
            "SELECT partner_id, scopes, revoked_at IS NOT NULL AND revoked_at <= clock_timestamp(), \
                expires_at IS NOT NULL AND expires_at <= clock_timestamp(), rotated_to, \
                {disabled_by_operator} \
             FROM apikey.keys WHERE key_id = $1 FOR UPDATE"
        ),
        Some(1),
        &[key_id.into()],
    )?;
    let Some(row) = rows.into_iter().next() else {
        return Err(access::key_not_found(key_id));
    };
    let key = LockedKey {
        partner_id: row
            .get(1)?
            .ok_or_else(|| ApiError::internal("key without partner"))?,
        scopes: row
            .get::<Vec<Option<String>>>(2)?
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect(),
        revoked: row.get(3)?.unwrap_or(false),
        expired: row.get(4)?.unwrap_or(false),
        rotated_to: row.get(5)?,
        disabled_by_operator: row.get(6)?.unwrap_or(false),
    };
    access::require_key_manager(key_id, key.partner_id, &key.scopes)?;
    Ok((key_id.to_string(), key))
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_rotate(
    key_id: Option<&str>,
    grace: default!(Option<Interval>, "'0'"),
    scopes: default!(Option<Vec<Option<String>>>, "NULL"),
) -> TableIterator<'static, (name!(key_id, String), name!(token, String))> {
    let rotated = Spi::connect_mut(|client| rotate(client, key_id, grace, scopes)).or_raise();
    TableIterator::once(rotated)
}

fn rotate(
    client: &mut SpiClient<'_>,
    key_id: Option<&str>,
    grace: Option<Interval>,
    scopes: Option<Vec<Option<String>>>,
) -> ApiResult<IssuedKey> {
    let scopes = scopes
        .map(|s| validate::scopes(&s).map_err(|e| ApiError::invalid("scopes", e)))
        .transpose()?;
    let (key_id, key) = lock_key(client, key_id)?;
    if let Some(requested) = &scopes {
        access::require_narrowing(&key_id, &key.scopes, requested)?;
    }
    if key.revoked {
        return Err(
            ApiError::state(format!("key {key_id} is revoked and cannot be rotated"))
                .with_hint("Issue a new key with apikey_issue."),
        );
    }
    if let Some(successor) = key.rotated_to {
        return Err(
            ApiError::state(format!("key {key_id} was already rotated to {successor}"))
                .with_hint("Rotate the successor key instead."),
        );
    }
    if key.expired {
        return Err(
            ApiError::state(format!("key {key_id} has expired and cannot be rotated"))
                .with_hint("Issue a new key with apikey_issue."),
        );
    }
    let checked = client.select(
        "SELECT $1 < interval '0', $1 > make_interval(secs => $2)",
        Some(1),
        &[
            grace.into(),
            (limits::MAX_ROTATION_GRACE_SECONDS as f64).into(),
        ],
    )?;
    let checked = checked.first();
    if checked.get::<bool>(1)?.unwrap_or(false) {
        return Err(ApiError::invalid("grace", "must not be negative"));
    }
    // A long grace, rotated again and again, would keep every token of the family alive.
    if checked.get::<bool>(2)?.unwrap_or(false) {
        return Err(ApiError::invalid(
            "grace",
            format!(
                "must be at most {} days",
                limits::MAX_ROTATION_GRACE_SECONDS / 86_400
            ),
        ));
    }
    let (prefix, environment) = token::key_id_parts(&key_id)
        .ok_or_else(|| ApiError::internal("stored key id has an unexpected shape"))?;

    let peppers = guc::peppers()?;
    let pepper = peppers.newest();
    let new = token::generate(prefix, environment)
        .map_err(|e| ApiError::internal(format!("OS random number generator failed: {e}")))?;
    let phc = hash::hash(
        &hash::digest(pepper.bytes(), new.secret().as_bytes()),
        guc::argon2_params(),
    )
    .map_err(ApiError::config)?;
    client.update(
        "INSERT INTO apikey.keys (key_id, partner_id, secret_hash, pepper_fingerprint, name, \
            scopes, tags, metadata, environment, enabled, not_before, expires_at, \
            rate_per_minute, allowed_cidrs, created_by) \
         SELECT $1, partner_id, $2, $3, name, coalesce($4, scopes), tags, metadata, environment, \
            enabled, not_before, expires_at, rate_per_minute, allowed_cidrs, $5 \
         FROM apikey.keys WHERE key_id = $6",
        None,
        &[
            new.key_id.as_str().into(),
            phc.into(),
            pepper.fingerprint.as_str().into(),
            scopes.clone().into(),
            access::actor().into(),
            key_id.as_str().into(),
        ],
    )?;
    if key.disabled_by_operator {
        client.update(
            "UPDATE apikey.keys SET disabled_by_operator = true WHERE key_id = $1",
            None,
            &[new.key_id.as_str().into()],
        )?;
    }
    // The family spends one balance: it moves to the successor, which the old key's
    // verifications spend from during the grace period.
    if version::schema_has(version::CREDITS)? {
        client.update(
            "UPDATE apikey.key_credits SET key_id = $2 WHERE key_id = $1",
            None,
            &[key_id.as_str().into(), new.key_id.as_str().into()],
        )?;
    }
    // The old key lives on for the grace period, but never past its own expiry.
    client.update(
        "UPDATE apikey.keys SET rotated_to = $2, revoke_reason = 'rotated', \
            revoked_at = least(revoked_at, expires_at, clock_timestamp() + $3) \
         WHERE key_id = $1",
        None,
        &[
            key_id.as_str().into(),
            new.key_id.as_str().into(),
            grace.into(),
        ],
    )?;
    // A key has at most one predecessor in grace: rotating it ends the grace of the key it
    // replaced, so rotating again and again leaves two live tokens, not a growing family.
    let ended = client.update(
        "UPDATE apikey.keys SET revoked_at = clock_timestamp() \
         WHERE rotated_to = $1 AND revoked_at > clock_timestamp() RETURNING key_id",
        None,
        &[key_id.as_str().into()],
    )?;
    for row in ended {
        let predecessor = row.get::<String>(1)?.unwrap_or_default();
        let mut event = Event::new("revoke");
        event.key_id = Some(&predecessor);
        event.partner_id = Some(key.partner_id);
        event.reason = Some("rotated");
        event.detail = json!({ "grace_ended_by_rotation_of": key_id });
        audit::record_action(client, event)?;
    }
    let mut event = Event::new("rotate");
    event.key_id = Some(&key_id);
    event.partner_id = Some(key.partner_id);
    event.detail = json!({
        "rotated_to": new.key_id,
        "grace": grace.map(|g| g.to_string()),
        "scopes_changed": scopes.is_some(),
    });
    audit::record_action(client, event)?;
    events::record_key_event(
        client,
        events::KEY_ROTATED,
        &key_id,
        json!({ "rotated_to": new.key_id }),
    )?;
    Ok((new.key_id.clone(), new.token.clone()))
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_revoke(key_id: Option<&str>, reason: default!(Option<&str>, "NULL")) -> bool {
    Spi::connect_mut(|client| revoke(client, key_id, reason)).or_raise()
}

/// Revokes `key_id` as the caller; false when it already was.
pub fn revoke(
    client: &mut SpiClient<'_>,
    key_id: Option<&str>,
    reason: Option<&str>,
) -> ApiResult<bool> {
    if let Some(reason) = reason {
        validate::reason(reason).map_err(|e| ApiError::invalid("reason", e))?;
    }
    let (key_id, key) = lock_key(client, key_id)?;
    if key.revoked {
        return Ok(false);
    }
    client.update(
        "UPDATE apikey.keys SET revoked_at = clock_timestamp(), \
            revoke_reason = coalesce($2, 'revoked') \
         WHERE key_id = $1",
        None,
        &[key_id.as_str().into(), reason.into()],
    )?;
    let mut event = Event::new("revoke");
    event.key_id = Some(&key_id);
    event.partner_id = Some(key.partner_id);
    event.reason = reason;
    audit::record_action(client, event)?;
    events::record_key_event(
        client,
        events::KEY_REVOKED,
        &key_id,
        json!({ "reason": reason.unwrap_or("revoked") }),
    )?;
    Ok(true)
}

#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_set_enabled(key_id: Option<&str>, enabled: Option<bool>) {
    Spi::connect_mut(|client| set_enabled(client, key_id, enabled)).or_raise()
}

fn set_enabled(
    client: &mut SpiClient<'_>,
    key_id: Option<&str>,
    enabled: Option<bool>,
) -> ApiResult<()> {
    let enabled = enabled.ok_or_else(|| ApiError::null("enabled"))?;
    let (key_id, key) = lock_key(client, key_id)?;
    if enabled && key.revoked {
        return Err(ApiError::state(format!(
            "key {key_id} is revoked and cannot be enabled"
        )));
    }
    // A key an operator disabled (for abuse, for an unpaid bill) stays disabled until an
    // operator enables it: its partner may not undo that.
    let operator = access::is_admin();
    if enabled && key.disabled_by_operator && !operator {
        return Err(ApiError::denied(format!(
            "key {key_id} was disabled by an operator: only an operator may enable it"
        )));
    }
    client.update(
        "UPDATE apikey.keys SET enabled = $2 WHERE key_id = $1",
        None,
        &[key_id.as_str().into(), enabled.into()],
    )?;
    if version::schema_has(version::ROUND_THREE)? && (enabled || operator) {
        client.update(
            "UPDATE apikey.keys SET disabled_by_operator = NOT $2 WHERE key_id = $1",
            None,
            &[key_id.as_str().into(), enabled.into()],
        )?;
    }
    let mut event = Event::new(if enabled { "enable" } else { "disable" });
    event.key_id = Some(&key_id);
    event.partner_id = Some(key.partner_id);
    audit::record_action(client, event)?;
    let announced = if enabled {
        events::KEY_ENABLED
    } else {
        events::KEY_DISABLED
    };
    events::record_key_event(client, announced, &key_id, json!({}))?;
    Ok(())
}
