//! Parameters the handlers' own types do not describe.

use super::schemas;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::Required;
use utoipa::{IntoParams, PartialSchema};
use uuid::Uuid;

/// The path parameters of the routes that name one key, partner or webhook endpoint. The
/// handlers read them as plain `Path<String>` / `Path<Uuid>`, so that a bad one gets their
/// own error (which never echoes it); these types only describe them.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyIdPath {
    /// The key's public id (not the token).
    #[param(value_type = schemas::KeyId)]
    pub key_id: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PartnerIdPath {
    /// Partner id (not a UUID: 400).
    pub partner_id: Uuid,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EndpointIdPath {
    /// Webhook endpoint id (not a UUID: 422 naming `endpoint_id`).
    pub endpoint_id: Uuid,
}

/// An optional string parameter, for extractors that read the request themselves and
/// describe what they read by implementing `IntoParams` by hand.
pub fn optional_text(name: &str, location: ParameterIn, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(String::schema()))
        .build()
}
