//! The error answers a handler lists in `responses(...)`: each a reference to a response of
//! `openapi/base.json`, grouped by what makes a route answer them.

use std::collections::BTreeMap;
use utoipa::openapi::{Ref, RefOr, Response};
use utoipa::IntoResponses;

macro_rules! error_answers {
    ($($(#[$doc:meta])* $name:ident: $($status:literal => $component:literal),+;)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$((
                    $status.to_string(),
                    RefOr::Ref(Ref::from_response_name($component)),
                )),+])
            }
        }
    )+};
}

error_answers! {
    /// Every route that takes a key: bad or refused key, missing scope, rate limit, and the
    /// database failing or unreachable.
    CallerErrors: "400" => "BadRequest", "401" => "Unauthorized", "403" => "Forbidden",
        "429" => "TooManyRequests", "500" => "InternalError", "503" => "Unavailable";
    /// A route that takes a JSON body.
    BodyErrors: "413" => "PayloadTooLarge", "415" => "UnsupportedMediaType",
        "422" => "Unprocessable";
    /// A route whose query string or path names something that must be well formed.
    InvalidInput: "422" => "Unprocessable";
    NotFound: "404" => "NotFound";
    Conflict: "409" => "Conflict";
    /// A route that needs the database but no key.
    ServerErrors: "500" => "InternalError", "503" => "Unavailable";
    BadRequest: "400" => "BadRequest";
}
