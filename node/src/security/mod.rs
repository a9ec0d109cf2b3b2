//! Transport security and client authentication (issue 9): TLS on every
//! listener with certificates reloaded from disk (`tls`), connection
//! accepting with handshake deadlines and HTTP limits (`listen`), and
//! bearer tokens with roles (`auth`). Gossip authentication lives in
//! `membership` (it rides on chitchat's transport).

pub mod auth;
pub mod listen;
pub mod pki;
pub mod tls;

pub use auth::{AuthError, Guard, Refusal, Role, Tokens};
pub use listen::{Conn, ConnInfo, HttpLimits, Prefixed};
pub use tls::{Listener, Tls, TlsError, TlsMode};

/// How often certificate and token files are checked for changes.
pub const RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
