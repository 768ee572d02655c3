//! Every setting of the extension, registered once from `_PG_init`.

use crate::hash::Params;
use crate::pepper::{self, PepperError, PepperSet};
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;
use std::rc::Rc;
use std::time::Instant;

static DEFAULT_PREFIX: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"ak"));
static ARGON2_MEMORY_KIB: GucSetting<i32> = GucSetting::<i32>::new(19456);
static ARGON2_ITERATIONS: GucSetting<i32> = GucSetting::<i32>::new(2);
static ARGON2_PARALLELISM: GucSetting<i32> = GucSetting::<i32>::new(1);
static PEPPER_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static MAX_KEYS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static MAX_USAGE_ENTRIES: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static USAGE_FLUSH_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static USAGE_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(400 * 86_400);
static AUDIT_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(400 * 86_400);
static EVENT_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(30 * 86_400);
static ARGON2_MAX_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(0);
static ARGON2_SUSPECT_PER_SECOND: GucSetting<i32> = GucSetting::<i32>::new(5);
static WEBHOOK_PARTNER_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(4);
static WEBHOOK_ALLOW_PRIVATE_URLS: GucSetting<bool> = GucSetting::<bool>::new(false);
static ROTATION_PERIOD_S: GucSetting<i32> = GucSetting::<i32>::new(0);

pub fn init() {
    GucRegistry::define_string_guc(
        c"apikey.default_prefix",
        c"Prefix of new tokens when apikey_issue is given none.",
        c"1 to 16 lowercase letters or digits, starting with a letter.",
        &DEFAULT_PREFIX,
        GucContext::Userset,
        GucFlags::default(),
    );
    // Hash cost is a security floor: only superusers may lower it, even for one session.
    GucRegistry::define_int_guc(
        c"apikey.argon2_memory_kib",
        c"Argon2id memory cost (KiB) for new and re-hashed keys.",
        c"Keys hashed with other parameters still verify and are re-hashed on their next success.",
        &ARGON2_MEMORY_KIB,
        8,
        4 * 1024 * 1024,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"apikey.argon2_iterations",
        c"Argon2id iteration count for new and re-hashed keys.",
        c"",
        &ARGON2_ITERATIONS,
        1,
        64,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"apikey.argon2_parallelism",
        c"Argon2id lane count for new and re-hashed keys.",
        c"",
        &ARGON2_PARALLELISM,
        1,
        16,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"apikey.pepper_file",
        c"File holding the server-side pepper(s), one per line, newest first.",
        c"Must not be accessible by group or others. Change it with a reload (SIGHUP).",
        &PEPPER_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    // Settings of shared memory exist only where it does: a library loaded after server
    // start may not define a postmaster setting at all.
    // SAFETY: a read of a flag the postmaster sets around preloading.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        GucRegistry::define_int_guc(
            c"apikey.max_keys",
            c"Keys whose proof, rate limit and last use the server keeps in shared memory.",
            c"Fixed at server start. When full, a twentieth is evicted, first from partners holding more than an equal share, then least recently used (they pay Argon2id again).",
            &MAX_KEYS,
            100,
            10_000_000,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_int_guc(
            c"apikey.max_usage_entries",
            c"Usage counts (key, minute, reason) kept in shared memory until the worker writes them.",
            c"Fixed at server start. When full, further counts are dropped and counted in apikey_status().",
            &MAX_USAGE_ENTRIES,
            100,
            10_000_000,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_int_guc(
        c"apikey.usage_flush_interval",
        c"How often the background worker writes usage counts and last_used_at.",
        c"",
        &USAGE_FLUSH_INTERVAL_MS,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"apikey.usage_retention",
        c"Age after which the background worker deletes apikey.usage rows.",
        c"",
        &USAGE_RETENTION_S,
        3_600,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"apikey.audit_retention",
        c"Age after which the background worker deletes audit rows; 0 keeps them for ever.",
        c"",
        &AUDIT_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"apikey.event_retention",
        c"Age after which the background worker deletes apikey.events rows.",
        c"Keep it longer than webhook deliveries are retried.",
        &EVENT_RETENTION_S,
        3_600,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"apikey.argon2_max_concurrency",
        c"Most Argon2id verifications running at once in the server; 0 means one per CPU.",
        c"Keys under attack (failed Argon2id verifications this minute) get at most half of them.",
        &ARGON2_MAX_CONCURRENCY,
        0,
        1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"apikey.argon2_suspect_per_second",
        c"Most Argon2id verifications a second, server-wide, of keys under attack.",
        c"Keys with several failed Argon2id verifications this minute; beyond it they are answered rate_limited without Argon2id.",
        &ARGON2_SUSPECT_PER_SECOND,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // Superuser only: a partner that could turn it on would point webhooks at the server's
    // own network.
    GucRegistry::define_bool_guc(
        c"apikey.webhook_allow_private_urls",
        c"Accept webhook URLs whose host is a private, loopback or reserved address, or localhost.",
        c"Off in production; on for a local receiver in development and tests. The shim has its own setting for addresses names resolve to.",
        &WEBHOOK_ALLOW_PRIVATE_URLS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"apikey.webhook_partner_concurrency",
        c"Most webhook attempts in flight at once for one partner's endpoints, across every shim.",
        c"Each endpoint has at most two in flight; what is free goes to partners in turn, the fewest in flight first.",
        &WEBHOOK_PARTNER_CONCURRENCY,
        1,
        1000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"apikey.rotation_period",
        c"Age after which a key's partner is sent key.rotation_due, once; 0 turns it off.",
        c"Checked by apikey_send_reminders(), which delivering shims call every minute.",
        &ROTATION_PERIOD_S,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
}

fn positive(setting: &GucSetting<i32>) -> usize {
    usize::try_from(setting.get()).unwrap_or(1).max(1)
}

pub fn max_keys() -> usize {
    positive(&MAX_KEYS)
}

pub fn max_usage_entries() -> usize {
    positive(&MAX_USAGE_ENTRIES)
}

pub fn usage_flush_interval() -> std::time::Duration {
    std::time::Duration::from_millis(positive(&USAGE_FLUSH_INTERVAL_MS) as u64)
}

/// Seconds; the GUC bounds keep it positive.
pub fn usage_retention_seconds() -> i64 {
    i64::from(USAGE_RETENTION_S.get())
}

/// Seconds; 0 keeps audit rows for ever.
pub fn audit_retention_seconds() -> i64 {
    i64::from(AUDIT_RETENTION_S.get())
}

pub fn event_retention_seconds() -> i64 {
    i64::from(EVENT_RETENTION_S.get())
}

pub fn argon2_max_concurrency() -> u32 {
    match u32::try_from(ARGON2_MAX_CONCURRENCY.get()) {
        Ok(0) | Err(_) => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            u32::try_from(cpus).unwrap_or(1).max(1)
        }
        Ok(n) => n,
    }
}

pub fn webhook_partner_concurrency() -> i32 {
    WEBHOOK_PARTNER_CONCURRENCY.get().max(1)
}

pub fn argon2_suspect_per_second() -> u32 {
    u32::try_from(ARGON2_SUSPECT_PER_SECOND.get())
        .unwrap_or(1)
        .max(1)
}

/// Seconds; 0 is off.
pub fn rotation_period_seconds() -> i64 {
    i64::from(ROTATION_PERIOD_S.get())
}

pub fn webhook_allow_private_urls() -> bool {
    WEBHOOK_ALLOW_PRIVATE_URLS.get()
}

pub fn default_prefix() -> String {
    DEFAULT_PREFIX
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn argon2_params() -> Params {
    // The GUC bounds keep these positive.
    Params {
        memory_kib: ARGON2_MEMORY_KIB.get().unsigned_abs(),
        iterations: ARGON2_ITERATIONS.get().unsigned_abs(),
        parallelism: ARGON2_PARALLELISM.get().unsigned_abs(),
    }
}

fn pepper_file() -> Option<String> {
    PEPPER_FILE.get().map(|s| s.to_string_lossy().into_owned())
}

/// The peppers of the file `apikey.pepper_file` names, as this backend last checked it.
pub fn peppers() -> Result<Rc<PepperSet>, PepperError> {
    pepper::load(pepper_file().as_deref(), Instant::now())
}
