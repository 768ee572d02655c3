//! Names of schemas in `openapi/base.json`, for a handler's `body = schemas::Key` and for
//! fields whose Rust type says less than the API checks (`value_type = schemas::KeyId`). Only
//! their names are used: the schemas themselves are in base.json.

use apikey_contract::token;
use serde_json::{json, Value};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

macro_rules! base_schemas {
    ($($name:ident),+ $(,)?) => {$(
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                Ref::from_schema_name(stringify!($name)).into()
            }
        }

        impl ToSchema for $name {}
    )+};
}

base_schemas!(
    AuditList,
    CreatedWebhook,
    Error,
    Health,
    ImportResults,
    IssuedKey,
    Key,
    KeyCredits,
    KeyId,
    KeyList,
    KeyStatus,
    Limits,
    Partner,
    PartnerLimits,
    PartnerList,
    Reminders,
    RevokeResult,
    RotatedKey,
    RotatedWebhookSecret,
    Scope,
    SecretScanningLabels,
    SecretScanningReport,
    Usage,
    VerifyResult,
    WebhookDeliveryList,
    WebhookEndpoint,
    WebhookList,
    WebhookTestQueued,
);

/// A schema written as JSON, for what utoipa's attributes cannot say.
fn schema(value: Value) -> RefOr<Schema> {
    serde_json::from_value(value).expect("a valid JSON schema")
}

/// `IssueKeyRequest.environment`: one of the token environments, `null` for the default.
pub fn environment_schema() -> RefOr<Schema> {
    let mut environments = json!(token::ENVIRONMENTS);
    if let Some(values) = environments.as_array_mut() {
        values.push(Value::Null);
    }
    schema(json!({
        "type": ["string", "null"],
        "enum": environments,
        "default": token::ENVIRONMENTS[0],
    }))
}
