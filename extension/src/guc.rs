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
