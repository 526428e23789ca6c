//! Connect tokens: what the matchmaking front hands a player so that the assigned game server
//! lets them in.
//!
//! This is the seam where pvp-net's signed `ConnectToken` plugs in. Until pvp-net is on main,
//! the session signs its own claims with a keyed 64-bit hash (foldhash, seeded by the shared
//! key): it catches forged and altered tokens from honest bots, but it is **not** a
//! cryptographic MAC and must not face the internet.

use std::hash::BuildHasher;

use pvp_core::ids::{MatchId, PlayerId, ServerId};

/// Bytes of an encoded token: four u64 claims and the tag.
pub const TOKEN_LEN: usize = 40;

/// What a token grants: `player` may join `match_id` on `server` until `expires_unix_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    /// The match.
    pub match_id: MatchId,
    /// The player.
    pub player: PlayerId,
    /// The game server.
    pub server: ServerId,
    /// Unix time in ms after which the token is void.
    pub expires_unix_ms: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The bytes are not a token of this length.
    #[error("token has the wrong length")]
    Length,
    /// The tag does not match the claims (forged or altered, or another key).
    #[error("token signature does not match")]
    Signature,
    /// The token expired.
    #[error("token expired")]
    Expired,
}

/// The key shared by the matchmaking front (which issues) and the game servers (which check).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenKey([u64; 2]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from its two halves (every region of a deployment uses the same).
    pub fn new(a: u64, b: u64) -> Self {
        Self([a, b])
    }

    fn tag(&self, c: &TokenClaims) -> u64 {
        let s = foldhash::quality::FixedState::with_seed(self.0[0]);
        s.hash_one((self.0[1], c.match_id.get(), c.player.get(), c.server.get(), c.expires_unix_ms))
    }

    /// Encodes and signs `claims`.
    pub fn issue(&self, claims: &TokenClaims) -> [u8; TOKEN_LEN] {
        let mut out = [0u8; TOKEN_LEN];
        let fields = [
            claims.match_id.get(),
            claims.player.get(),
            claims.server.get(),
            claims.expires_unix_ms,
            self.tag(claims),
        ];
        for (chunk, v) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Checks a token's tag and expiry (against `now_unix_ms`) and returns its claims.
    pub fn open(&self, bytes: &[u8], now_unix_ms: u64) -> Result<TokenClaims, TokenError> {
        if bytes.len() != TOKEN_LEN {
            return Err(TokenError::Length);
        }
        let mut f = [0u64; 5];
        for (v, chunk) in f.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *v = u64::from_le_bytes(b);
        }
        let claims = TokenClaims {
            match_id: MatchId::new(f[0]),
            player: PlayerId::new(f[1]),
            server: ServerId::new(f[2]),
            expires_unix_ms: f[3],
        };
        if self.tag(&claims) != f[4] {
            return Err(TokenError::Signature);
        }
        if now_unix_ms > claims.expires_unix_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let key = TokenKey::new(1, 2);
        let c = TokenClaims {
            match_id: MatchId::new(5),
            player: PlayerId::new(6),
            server: ServerId::new(7),
            expires_unix_ms: 1_000,
        };
        let t = key.issue(&c);
        assert_eq!(key.open(&t, 999), Ok(c));
        assert_eq!(key.open(&t, 1_001), Err(TokenError::Expired));
        assert_eq!(TokenKey::new(1, 3).open(&t, 0), Err(TokenError::Signature));
        let mut altered = t;
        altered[8] ^= 1;
        assert_eq!(key.open(&altered, 0), Err(TokenError::Signature));
        assert_eq!(key.open(&t[..10], 0), Err(TokenError::Length));
    }
}
