//! Connect tokens: the matchmaker's signed permission for one player to join one match on one
//! game server, once, before an expiry.
//!
//! A token is [`TOKEN_LEN`] bytes: the claims in clear (version, token id, match id, player id,
//! expiry in Unix milliseconds, server address) followed by an HMAC-SHA256 tag over them, keyed
//! with a [`TokenKey`] that the matchmaker and the game servers share. The claims are not secret
//! (a player may read them); they cannot be forged or altered without the key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use pvp_core::{MatchId, PlayerId};
use sha2::Sha256;
use thiserror::Error;

/// Length of a sealed connect token.
pub const TOKEN_LEN: usize = CLAIMS_LEN + TAG_LEN;
const CLAIMS_LEN: usize = 1 + 8 + 8 + 8 + 8 + ADDR_LEN;
const ADDR_LEN: usize = 1 + 16 + 2;
const TAG_LEN: usize = 32;
const TOKEN_VERSION: u8 = 1;

type HmacSha256 = Hmac<Sha256>;

/// The secret the matchmaker signs tokens with and game servers verify them with.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// What a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenClaims {
    /// Unique per token (random, or a counter the matchmaker never repeats); a server accepts
    /// each id once.
    pub token_id: u64,
    /// The match the player joins.
    pub match_id: MatchId,
    /// The player.
    pub player_id: PlayerId,
    /// Milliseconds since the Unix epoch from which on the token is refused (a server whose
    /// clock reads exactly this value refuses it).
    pub expires_at_unix_ms: u64,
    /// The game server address the token is valid for: its IP and port (an IPv6 flow info or
    /// scope id is not carried, and reads back as 0).
    pub server_addr: SocketAddr,
}

/// A sealed token as it travels from matchmaker to client to server.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectToken(pub [u8; TOKEN_LEN]);

impl std::fmt::Debug for ConnectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectToken(..)")
    }
}

impl ConnectToken {
    /// The token id, read without checking the signature (clients cannot check it).
    pub fn token_id(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[1..9]);
        u64::from_le_bytes(b)
    }

    /// The server address the token names, read without checking the signature; `None` if
    /// the field is malformed.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        decode_addr(&self.0[33..33 + ADDR_LEN])
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenError {
    /// The tag does not match: forged, altered, or signed with another key.
    #[error("connect token signature invalid")]
    BadSignature,
    /// The token format version is unknown.
    #[error("connect token version unknown")]
    WrongVersion,
    /// A field holds a value no issuer writes.
    #[error("connect token malformed")]
    Malformed,
}

impl TokenKey {
    /// A key from 32 secret bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenKey(bytes)
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        use rand::TryRngCore;
        let mut k = [0u8; 32];
        // The OS generator failing is not recoverable for a server that needs secrets.
        if rand::rngs::OsRng.try_fill_bytes(&mut k).is_err() {
            use rand::RngCore;
            rand::rng().fill_bytes(&mut k);
        }
        TokenKey(k)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; 32 bytes never fails.
        match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }

    /// Seals `claims` into a token.
    pub fn issue(&self, claims: &TokenClaims) -> ConnectToken {
        let mut out = [0u8; TOKEN_LEN];
        let (body, tag) = out.split_at_mut(CLAIMS_LEN);
        body[0] = TOKEN_VERSION;
        body[1..9].copy_from_slice(&claims.token_id.to_le_bytes());
        body[9..17].copy_from_slice(&claims.match_id.get().to_le_bytes());
        body[17..25].copy_from_slice(&claims.player_id.get().to_le_bytes());
        body[25..33].copy_from_slice(&claims.expires_at_unix_ms.to_le_bytes());
        encode_addr(claims.server_addr, &mut body[33..33 + ADDR_LEN]);
        let mut mac = self.mac();
        mac.update(body);
        tag.copy_from_slice(&mac.finalize().into_bytes());
        ConnectToken(out)
    }

    /// Checks the tag (in constant time) and returns the claims. Expiry, server address and
    /// single use are the server's to check, against its clock and state.
    pub fn open(&self, token: &[u8; TOKEN_LEN]) -> Result<TokenClaims, TokenError> {
        let (body, tag) = token.split_at(CLAIMS_LEN);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| TokenError::BadSignature)?;
        if body[0] != TOKEN_VERSION {
            return Err(TokenError::WrongVersion);
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[i..i + 8]);
            u64::from_le_bytes(b)
        };
        Ok(TokenClaims {
            token_id: u64_at(1),
            match_id: MatchId::new(u64_at(9)),
            player_id: PlayerId::new(u64_at(17)),
            expires_at_unix_ms: u64_at(25),
            server_addr: decode_addr(&body[33..33 + ADDR_LEN]).ok_or(TokenError::Malformed)?,
        })
    }
}

fn encode_addr(addr: SocketAddr, out: &mut [u8]) {
    match addr.ip() {
        IpAddr::V4(v4) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out[0] = 6;
            out[1..17].copy_from_slice(&v6.octets());
        }
    }
    out[17..19].copy_from_slice(&addr.port().to_le_bytes());
}

fn decode_addr(b: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_le_bytes([*b.get(17)?, *b.get(18)?]);
    let ip = match b.first()? {
        4 => {
            if b.get(5..17)?.iter().any(|&x| x != 0) {
                return None;
            }
            IpAddr::V4(Ipv4Addr::new(b[1], b[2], b[3], b[4]))
        }
        6 => {
            let o: [u8; 16] = b.get(1..17)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            token_id: 7,
            match_id: MatchId::new(3),
            player_id: PlayerId::new(9),
            expires_at_unix_ms: 1_000,
            server_addr: "[::1]:4000".parse().unwrap(),
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = TokenKey::from_bytes([1; 32]);
        let t = k.issue(&claims());
        assert_eq!(k.open(&t.0), Ok(claims()));
        for i in 0..TOKEN_LEN {
            let mut bad = t.0;
            bad[i] ^= 0x40;
            assert_eq!(k.open(&bad), Err(TokenError::BadSignature), "byte {i}");
        }
        let other = TokenKey::from_bytes([2; 32]);
        assert_eq!(other.open(&t.0), Err(TokenError::BadSignature));
    }
}
