//! The one table of devise_token_auth's header names for the workspace: the layer, the
//! demo server and its load tool read them from here, and a CORS layer is configured
//! from the two lists at the end.

use http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE, IF_MODIFIED_SINCE};

/// `access-token`: the secret to present next. Built once: a name from a string is
/// parsed, and a non-standard one allocated, on every use.
pub const ACCESS_TOKEN: HeaderName = HeaderName::from_static("access-token");
/// `token-type`: always `Bearer`.
pub const TOKEN_TYPE: HeaderName = HeaderName::from_static("token-type");
/// `client`: the session's device.
pub const CLIENT: HeaderName = HeaderName::from_static("client");
/// `expiry`: whole seconds since the Unix epoch.
pub const EXPIRY: HeaderName = HeaderName::from_static("expiry");
/// `uid`: the user.
pub const UID: HeaderName = HeaderName::from_static("uid");

/// The five headers every authenticated answer carries. Browsers hide them from
/// scripts unless a CORS layer exposes them (`CorsLayer::expose_headers`).
pub const CREDENTIAL_HEADERS: [HeaderName; 5] = [ACCESS_TOKEN, TOKEN_TYPE, CLIENT, EXPIRY, UID];

/// The request headers a devise client sends, for a CORS layer's preflight answer
/// (`CorsLayer::allow_headers`): the five, `content-type` for sign-in bodies,
/// `authorization` for the packed form and `if-modified-since`, which some clients add.
pub const ALLOWED_HEADERS: [HeaderName; 8] = [
    ACCESS_TOKEN,
    TOKEN_TYPE,
    CLIENT,
    EXPIRY,
    UID,
    CONTENT_TYPE,
    AUTHORIZATION,
    IF_MODIFIED_SINCE,
];
