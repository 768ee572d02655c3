//! Errors raised to the client. Every one carries a SQLSTATE a client can branch on, and a
//! message that names the offending argument. No message ever includes a token or pepper.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

pub struct ApiError {
    code: PgSqlErrorCode,
    message: String,
    /// `argument: <name>` (see `apikey_contract::argument`) for an error about an argument.
    detail: Option<String>,
    hint: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// An argument failed validation: 22023, or 22004 for a NULL where none is allowed. The
    /// DETAIL names the argument for programs (the shim's 422 `field`).
    pub fn invalid(argument: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid {argument}: {why}"),
        )
        .about(argument)
    }

    pub fn null(argument: &str) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{argument} must not be NULL"),
        )
        .about(argument)
    }

    pub fn about(mut self, argument: &str) -> Self {
        self.detail = Some(apikey_contract::argument::detail(argument));
        self
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            format!("{what} does not exist"),
        )
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, message)
    }

    /// The object exists but its state forbids the operation (e.g. rotating a revoked key).
    pub fn state(message: impl Into<String>) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            message,
        )
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message)
    }

    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.code, self.message, "apikey");
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR-level reports do not return")
    }
}

impl From<pgrx::spi::SpiError> for ApiError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        ApiError::internal(format!("SPI failure: {e}"))
    }
}

impl From<crate::pepper::PepperError> for ApiError {
    fn from(e: crate::pepper::PepperError) -> Self {
        let hint = e.hint();
        ApiError::config(e.to_string()).with_hint(hint)
    }
}

/// Unwraps a result inside a `#[pg_extern]`, raising the error as a PostgreSQL ERROR.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for ApiResult<T> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| e.raise())
    }
}
