//! Tokens: how `T(g)` is derived (the ChaCha20 keystream under the store's key) and
//! how tokens and client ids travel (fixed-length URL-safe base64).

mod base64;
mod chacha;
mod codec;
mod keystream;

pub use codec::{ClientId, Token, CLIENT_ID_LEN, TOKEN_LEN};

pub(crate) use codec::{CLIENT_BYTES, TOKEN_BYTES};
pub(crate) use keystream::MasterKey;
