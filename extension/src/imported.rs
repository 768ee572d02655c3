//! Keys another system issued, brought in by their stored hash (`apikey_import`), and how
//! `apikey_verify` finds one from a token in that system's shape. Formats, lookups and the
//! foreign hash checks are `apikey_core::import`; this module stores them, and keeps per
//! backend which lookup forms are in use and which key a lookup named, both dropped whenever
//! `fetch`'s generation moves on (any change of `apikey.imported_keys` sends one).

use crate::credits::Balance;
use crate::error::{ApiError, ApiResult, OrRaise};
use crate::fetch::{self, PrimaryKey};
use crate::hash;
use crate::lifecycle::{self, IssueRequest};
use crate::pepper::PepperSet;
use crate::sqltypes::CidrArray;
use apikey_core::import::{self, Format, Forms, Prepared, FOREIGN_MARK};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A key to import, its arguments checked.
pub struct Import {
    format: Format,
    prepared: Prepared,
}

impl Import {
    pub fn format(&self) -> Format {
        self.format
    }

    pub fn stored_hash(&self) -> &str {
        &self.prepared.stored_hash
    }

    /// The `pepper_fingerprint` of a row still holding the other system's hash.
    pub fn foreign_mark(&self) -> String {
        format!("{FOREIGN_MARK}{}", self.format.as_str())
    }

    /// Stores the key's lookup (its row in `apikey.keys` was just inserted).
    pub fn record(&self, client: &mut SpiClient<'_>, key_id: &str) -> ApiResult<()> {
        client.update(
            "INSERT INTO apikey.imported_keys (lookup, key_id, hash_format) VALUES ($1, $2, $3)",
            None,
            &[
                self.prepared.lookup.as_str().into(),
                key_id.into(),
                self.format.as_str().into(),
            ],
        )?;
        let (form, length) = match self.prepared.prefix_length {
            Some(length) => ("prefix", i32::try_from(length).unwrap_or(i32::MAX)),
            None => (form_of(&self.prepared.lookup), 0),
        };
        note_form(client, form, length)
    }
}

/// The form of a lookup: what precedes its colon.
fn form_of(lookup: &str) -> &str {
    lookup.split_once(':').map_or(lookup, |(form, _)| form)
}

fn note_form(client: &mut SpiClient<'_>, form: &str, prefix_length: i32) -> ApiResult<()> {
    client.update(
        "INSERT INTO apikey.import_forms (form, prefix_length) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
        None,
        &[form.into(), prefix_length.into()],
    )?;
    Ok(())
}

/// `apikey_import`: a key from another system, by its stored hash (never its token), with
/// every option of `apikey_issue`. Returns the new key's `key_id`; operators only.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, security_definer, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn apikey_import(
    partner_id: Option<pgrx::Uuid>,
    stored_hash: Option<&str>,
    hash_format: Option<&str>,
    scopes: Option<Vec<Option<String>>>,
    lookup: default!(Option<&str>, "NULL"),
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
) -> String {
    Spi::connect_mut(|client| {
        let import = checked(client, stored_hash, hash_format, lookup)?;
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
            import: Some(import),
        };
        lifecycle::issue(client, request).map(|(key_id, _never_shown)| key_id)
    })
    .or_raise()
}

fn checked(
    client: &mut SpiClient<'_>,
    stored_hash: Option<&str>,
    hash_format: Option<&str>,
    lookup: Option<&str>,
) -> ApiResult<Import> {
    crate::access::require_admin("apikey_import")?;
    let name = hash_format.ok_or_else(|| ApiError::null("hash_format"))?;
    let format = Format::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
        ApiError::invalid(
            "hash_format",
            format!("must be one of {}", known.join(", ")),
        )
    })?;
    let stored_hash = stored_hash.ok_or_else(|| ApiError::null("stored_hash"))?;
    let peppers = crate::guc::peppers()?;
    let prepared = import::prepare(format, stored_hash, lookup, peppers.newest().bytes())
        .map_err(|(argument, why)| ApiError::invalid(argument, why))?;
    if let Some(length) = prepared.prefix_length {
        one_prefix_length(client, length)?;
    }
    let taken = client
        .select(
            "SELECT key_id FROM apikey.imported_keys WHERE lookup = $1",
            Some(1),
            &[prepared.lookup.as_str().into()],
        )?
        .next()
        .and_then(|row| row.get::<String>(1).ok().flatten());
    if let Some(key_id) = taken {
        let argument = if format == Format::Sha256 {
            "stored_hash"
        } else {
            "lookup"
        };
        return Err(ApiError::new(
            PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            format!("duplicate {argument}: already imported as key {key_id}"),
        )
        .about(argument));
    }
    Ok(Import { format, prepared })
}

/// Every prefix length in use costs a token that finds no key one more index probe, so the
/// keys found by a prefix of their token share one length: the first such import sets it.
fn one_prefix_length(client: &SpiClient<'_>, length: usize) -> ApiResult<()> {
    let length = i32::try_from(length).unwrap_or(i32::MAX);
    let in_use = client
        .select(
            "SELECT min(prefix_length) FROM apikey.import_forms WHERE form = 'prefix' \
             HAVING NOT bool_or(prefix_length = $1)",
            Some(1),
            &[length.into()],
        )?
        .next()
        .and_then(|row| row.get::<i32>(1).ok().flatten());
    match in_use {
        Some(in_use) => Err(ApiError::invalid(
            "lookup",
            format!(
                "must be the first {in_use} characters of the token, as for the keys imported \
                 before it: one lookup length keeps a token that finds no key at one index probe"
            ),
        )),
        None => Ok(()),
    }
}

/// An imported key a token found, and the part of the token the key's hash covers.
pub struct Found<'t> {
    pub key_id: String,
    pub secret: &'t str,
}

/// Finds the imported key `token` belongs to. Costs nothing in a database without imported
/// keys, and otherwise one index probe per lookup form in use (usually one). `peppers` is
/// only read when a lookup needs them; without them, those lookups are left out (a
/// verification never raises for a token).
pub fn find<'t, E>(
    token: &'t str,
    peppers: impl FnOnce() -> Result<Rc<PepperSet>, E>,
) -> ApiResult<Option<Found<'t>>> {
    if !import::could_be_foreign(token) || !fetch::has_imported_keys() {
        return Ok(None);
    }
    let forms = forms()?;
    let peppers = if forms.hmac { peppers().ok() } else { None };
    let peppers = peppers.iter().flat_map(|p| p.all_bytes());
    let candidates = import::candidates(token, &forms, peppers);
    Ok(key_of(&candidates)?.map(|(lookup, key_id)| Found {
        key_id,
        secret: import::secret_of(lookup, token),
    }))
}

/// Kept per backend for one `fetch` generation.
#[derive(Default)]
struct Remembered {
    generation: u64,
    forms: Option<Rc<Forms>>,
    keys: HashMap<String, String>,
}

thread_local! {
    static REMEMBERED: RefCell<Remembered> = RefCell::new(Remembered::default());
}

/// Like `known_keys`, past this many lookups the map starts over.
const MAX_LOOKUPS: usize = 10_000;

/// Runs `f` on what is remembered for the current generation.
fn remembered<R>(f: impl FnOnce(&mut Remembered) -> R) -> R {
    fetch::accept_invalidations();
    let generation = fetch::generation();
    REMEMBERED.with_borrow_mut(|r| {
        if r.generation != generation {
            *r = Remembered {
                generation,
                ..Remembered::default()
            };
        }
        f(r)
    })
}

/// Keeps what was read under `generation` only if no invalidation arrived meanwhile.
fn keep(generation: u64, f: impl FnOnce(&mut Remembered)) {
    REMEMBERED.with_borrow_mut(|r| {
        if fetch::generation() == generation && r.generation == generation {
            f(r)
        }
    });
}

fn forms() -> ApiResult<Rc<Forms>> {
    if let Some(forms) = remembered(|r| r.forms.clone()) {
        return Ok(forms);
    }
    let generation = fetch::generation();
    let mut forms = Forms::default();
    // Read-only SPI with the latest snapshot: no transaction id, so a standby can read too.
    // The one name in the statement is schema-qualified, whatever the caller's search_path.
    fetch::with_latest_active_snapshot(|| {
        Spi::connect(|client| -> ApiResult<()> {
            const READ: &str = "SELECT form, prefix_length FROM apikey.import_forms";
            for row in client.select(READ, None, &[])? {
                let form: Option<String> = row.get(1)?;
                let length: Option<i32> = row.get(2)?;
                match form.as_deref() {
                    Some("hmac") => forms.hmac = true,
                    Some("id") => forms.id = true,
                    Some("prefix") => {
                        if let Some(length) = length.and_then(|l| usize::try_from(l).ok()) {
                            forms.prefix_lengths.push(length);
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    })?;
    let forms = Rc::new(forms);
    keep(generation, |r| r.forms = Some(Rc::clone(&forms)));
    Ok(forms)
}

/// The first of `candidates` that names an imported key, and that key. Remembered lookups
/// first; the others probed in one index scan.
fn key_of(candidates: &[String]) -> ApiResult<Option<(&str, String)>> {
    let known = remembered(|r| {
        candidates
            .iter()
            .find_map(|lookup| Some((lookup.as_str(), r.keys.get(lookup)?.clone())))
    });
    if known.is_some() {
        return Ok(known);
    }
    let generation = fetch::generation();
    let keys: Vec<PrimaryKey<'_>> = candidates
        .iter()
        .map(|lookup| PrimaryKey::Imported(lookup))
        .collect();
    let found = fetch::with_latest_snapshot(|snapshot| {
        snapshot.first_by_primary_key(&keys, |i, row| {
            Ok(row
                .get::<String>("key_id")?
                .map(|key_id| (candidates[i].as_str(), key_id)))
        })
    })?
    .flatten();
    if let Some((lookup, key_id)) = &found {
        keep(generation, |r| {
            if r.keys.len() >= MAX_LOOKUPS {
                r.keys.clear();
            }
            r.keys.insert(lookup.to_string(), key_id.clone());
        });
    }
    Ok(found)
}

/// Whether `secret` matches the other system's hash a key row still holds.
pub fn verify_foreign(
    format: Format,
    stored_hash: &str,
    secret: &[u8],
    peppers: &PepperSet,
) -> bool {
    import::verify(format, stored_hash, secret, peppers.all_bytes())
}

/// The digest an imported key's proof is kept under while its row holds the other system's
/// hash (`import::proof_digest`).
pub fn proof_digest(peppers: &PepperSet, secret: &[u8]) -> hash::Digest {
    import::proof_digest(peppers.all_bytes(), secret)
}
