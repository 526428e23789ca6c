//! Connect tokens: what the matchmaking front hands a player so that the assigned game server
//! lets them in. They are pvp-net's `pvp_net::proto::ConnectToken`s: claims
//! in clear with an HMAC-SHA256 tag under the key the front and the servers share.
//!
//! pvp-net's claims name the match, the player, the expiry and the server's address; the
//! session puts the game server's id in the token id (a region's game servers share one
//! address here), and the region checks that the match it hosts runs on that server.

use std::net::SocketAddr;

use pvp_core::ids::{MatchId, PlayerId, ServerId};
pub use pvp_net::proto::TOKEN_LEN;
use pvp_net::proto::{ConnectToken, TokenClaims as NetClaims, TokenKey as NetKey};

/// What a token grants: `player` may join `match_id` on `server` (at `server_addr`) until
/// `expires_unix_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    /// The match.
    pub match_id: MatchId,
    /// The player.
    pub player: PlayerId,
    /// The game server.
    pub server: ServerId,
    /// Where the server listens.
    pub server_addr: SocketAddr,
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
    /// pvp-net refused it (signature, version, malformed claims).
    #[error(transparent)]
    Net(#[from] pvp_net::proto::TokenError),
    /// The token expired.
    #[error("token expired")]
    Expired,
    /// The token is for another server address.
    #[error("token is for another server")]
    WrongServer,
}

/// The key shared by the matchmaking front (which issues) and the game servers (which check).
#[derive(Debug, Clone)]
pub struct TokenKey(NetKey);

impl TokenKey {
    /// A key from its 32 bytes (every region of a deployment uses the same).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(NetKey::from_bytes(bytes))
    }

    /// A key derived from a seed (for sessions whose processes share only their config; a
    /// deployment distributes a secret instead).
    pub fn from_seed(seed: u64) -> Self {
        let mut k = [0u8; 32];
        for (i, c) in k.chunks_exact_mut(8).enumerate() {
            let v = seed.rotate_left(13 * i as u32) ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1));
            c.copy_from_slice(&v.to_le_bytes());
        }
        Self::from_bytes(k)
    }

    /// Encodes and signs `claims`.
    pub fn issue(&self, claims: &TokenClaims) -> [u8; TOKEN_LEN] {
        self.0
            .issue(&NetClaims {
                token_id: claims.server.get(),
                match_id: claims.match_id,
                player_id: claims.player,
                expires_at_unix_ms: claims.expires_unix_ms,
                server_addr: claims.server_addr,
            })
            .0
    }

    /// Checks a token's signature, expiry (against `now_unix_ms`) and server address, and
    /// returns its claims.
    pub fn open(
        &self,
        bytes: &[u8],
        now_unix_ms: u64,
        server_addr: SocketAddr,
    ) -> Result<TokenClaims, TokenError> {
        let token: [u8; TOKEN_LEN] = bytes.try_into().map_err(|_| TokenError::Length)?;
        let c = self.0.open(&ConnectToken(token).0)?;
        if now_unix_ms > c.expires_at_unix_ms {
            return Err(TokenError::Expired);
        }
        if c.server_addr != server_addr {
            return Err(TokenError::WrongServer);
        }
        Ok(TokenClaims {
            match_id: c.match_id,
            player: c.player_id,
            server: ServerId::new(c.token_id),
            server_addr: c.server_addr,
            expires_unix_ms: c.expires_at_unix_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let key = TokenKey::from_seed(1);
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let c = TokenClaims {
            match_id: MatchId::new(5),
            player: PlayerId::new(6),
            server: ServerId::new(7),
            server_addr: addr,
            expires_unix_ms: 1_000,
        };
        let t = key.issue(&c);
        assert_eq!(key.open(&t, 999, addr), Ok(c));
        assert_eq!(key.open(&t, 1_001, addr), Err(TokenError::Expired));
        assert_eq!(key.open(&t, 0, "127.0.0.1:7001".parse().unwrap()), Err(TokenError::WrongServer));
        assert!(matches!(TokenKey::from_seed(2).open(&t, 0, addr), Err(TokenError::Net(_))));
        let mut altered = t;
        altered[10] ^= 1;
        assert!(matches!(key.open(&altered, 0, addr), Err(TokenError::Net(_))));
        assert_eq!(key.open(&t[..10], 0, addr), Err(TokenError::Length));
    }
}

/// A netcode 1.02 connect token in its standard 2048-byte form.
pub type NetcodeToken = Box<[u8; pvp_net::netcode::CONNECT_TOKEN_BYTES]>;

/// netcode 1.02 connect tokens for every seat of a match: the call the matchmaker makes once
/// it has a [`ConnectGrant`](pvp_global::matchmaking::ConnectGrant). Each seat gets its own
/// token (client id = player id) naming the grant's server, with the match, player and team
/// in the user data ([`pvp_net::netcode::SessionUserData`]) and the game server's id as the
/// game data (8 bytes, little-endian), so a server can check the seat is its own. The
/// protocol id, key, lifetime and session timeout come from the issuer's config.
pub fn netcode_tokens(
    issuer: &pvp_net::netcode::TokenIssuer,
    grant: &pvp_global::matchmaking::ConnectGrant<'_>,
    unix_now: std::time::Duration,
    layered: bool,
) -> Result<Vec<(PlayerId, NetcodeToken)>, pvp_net::netcode::TokenError> {
    use pvp_net::netcode::{SessionGrant, SessionUserData};
    grant
        .players
        .iter()
        .map(|p| {
            let seat = SessionGrant {
                client_id: p.player().get(),
                server_addresses: vec![grant.server_addr],
                user_data: SessionUserData {
                    match_id: grant.match_id,
                    player: p.player(),
                    team: p.team(),
                    layered,
                    game_data: grant.server_id.get().to_le_bytes().to_vec(),
                },
            };
            Ok((p.player(), issuer.issue(unix_now, &seat)?))
        })
        .collect()
}

#[cfg(test)]
mod netcode_tests {
    use std::time::Duration;

    use pvp_core::ids::PlayerId;
    use pvp_global::cluster::{FleetConfig, JP, KR, SG};
    use pvp_global::matchmaking::{GameMode, GlobalMatchmaking, MatchRequest, MatchmakingConfig};
    use pvp_net::netcode::{ConnectToken, IssuerConfig, Key, PrivateToken, SessionUserData, TokenIssuer};

    #[test]
    fn a_grant_becomes_one_token_per_seat_that_the_server_key_opens() {
        let t0 = Duration::from_secs(1);
        let mut mm =
            GlobalMatchmaking::new(FleetConfig::reference(), MatchmakingConfig::default(), t0).unwrap();
        mm.heartbeat_all(t0);
        let req = |id| {
            MatchRequest::new(PlayerId::new(id), 1500.0, KR, GameMode::ONE_V_ONE)
                .latency(KR, Duration::from_millis(10))
                .latency(JP, Duration::from_millis(40))
                .latency(SG, Duration::from_millis(80))
        };
        let a = mm.find_match(req(1), t0).unwrap();
        mm.find_match(req(2), t0).unwrap();
        mm.heartbeat_all(t0);
        mm.tick(t0);
        let m = a.try_result().unwrap().unwrap();
        let grant = m.connect_grant();
        let key = Key::random();
        let issuer = TokenIssuer::new(IssuerConfig::new(99, key.clone()));
        let unix = Duration::from_secs(1_800_000_000);
        let tokens = super::netcode_tokens(&issuer, &grant, unix, true).unwrap();
        assert_eq!(tokens.len(), 2);
        for (player, bytes) in tokens {
            let t = ConnectToken::from_bytes(&bytes[..]).unwrap();
            assert_eq!(t.server_addresses, vec![grant.server_addr]);
            let p = PrivateToken::open(&t.private_data, 99, t.expire_timestamp, &t.nonce, &key).unwrap();
            assert_eq!(p.client_id, player.get());
            let seat = SessionUserData::decode(&p.user_data).unwrap();
            assert_eq!((seat.match_id, seat.player), (grant.match_id, player));
            assert_eq!(seat.game_data, grant.server_id.get().to_le_bytes());
            assert!(seat.layered);
        }
    }
}
