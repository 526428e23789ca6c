//! Connect tokens (STANDARD.md, "Connect Token"), the key they are sealed with, and the
//! issuer a matchmaker calls.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use pvp_core::{MatchId, PlayerId};
use thiserror::Error;

use super::{
    CONNECT_TOKEN_BYTES, KEY_BYTES, MAC_BYTES, MAX_SERVER_ADDRESSES, PRIVATE_TOKEN_BYTES, USER_DATA_BYTES,
    VERSION_INFO,
};

const ADDRESS_IPV4: u8 = 1;
const ADDRESS_IPV6: u8 = 2;

/// A 32-byte secret: the private key shared by the token issuer and the game servers, or a
/// per-session direction key. `Debug` never prints the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_BYTES]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not 64 hexadecimal digits.
    #[error("a key is 64 hexadecimal digits (32 bytes)")]
    BadHex,
    /// The environment variable is unset or not Unicode.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
}

impl Key {
    /// A key from its bytes.
    pub const fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Key(bytes)
    }

    /// A fresh key from the thread's CSPRNG (ChaCha seeded by the OS).
    pub fn random() -> Self {
        Key(random_bytes())
    }

    /// A key written as 64 hexadecimal digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.len() != 2 * KEY_BYTES || !s.is_ascii() {
            return Err(KeyError::BadHex);
        }
        let mut out = [0u8; KEY_BYTES];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| KeyError::BadHex)?;
        }
        Ok(Key(out))
    }

    /// A key from the environment variable `var`, as [`from_hex`](Self::from_hex) reads it.
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let v = std::env::var(var).map_err(|_| KeyError::MissingEnv(var.to_owned()))?;
        Self::from_hex(&v)
    }

    /// The key as 64 lowercase hexadecimal digits (for writing to a config file).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

/// Random bytes from the thread's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// Why a token could not be made or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Shorter than its fields, or not [`CONNECT_TOKEN_BYTES`] long.
    #[error("connect token truncated or not 2048 bytes")]
    Truncated,
    /// The version info is not `"NETCODE 1.02\0"`.
    #[error("connect token version is not NETCODE 1.02")]
    WrongVersion,
    /// Server address count outside `1..=32`.
    #[error("connect token server address count outside 1..=32")]
    BadAddressCount,
    /// An address type other than 1 (IPv4) or 2 (IPv6).
    #[error("connect token address type is not IPv4 or IPv6")]
    BadAddressType,
    /// Created after it expires.
    #[error("connect token created after it expires")]
    BadTimestamps,
    /// The private part did not open with the key (wrong key, protocol id or expiry, or
    /// tampered bytes).
    #[error("private connect token does not decrypt with this key")]
    Decrypt,
    /// The fields do not fit the fixed-size token (never happens with at most 32 addresses).
    #[error("connect token fields do not fit")]
    TooLarge,
}

/// Little-endian writer over a fixed buffer.
pub(crate) struct Writer<'a> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) pos: usize,
}

impl Writer<'_> {
    pub(crate) fn put(&mut self, b: &[u8]) -> Result<(), TokenError> {
        let end =
            self.pos.checked_add(b.len()).filter(|&e| e <= self.buf.len()).ok_or(TokenError::TooLarge)?;
        self.buf[self.pos..end].copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
}

/// Little-endian reader; every read checks the length.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.buf.len() < n {
            return Err(TokenError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        // take(N) returned exactly N bytes.
        self.take(N).map(|s| s.try_into().unwrap_or([0; N]))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, TokenError> {
        self.array().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Result<u32, TokenError> {
        self.array().map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, TokenError> {
        self.array().map(u64::from_le_bytes)
    }
}

fn write_addresses(w: &mut Writer<'_>, addrs: &[SocketAddr]) -> Result<(), TokenError> {
    if addrs.is_empty() || addrs.len() > MAX_SERVER_ADDRESSES {
        return Err(TokenError::BadAddressCount);
    }
    // len <= 32 fits u32.
    w.put(&(addrs.len() as u32).to_le_bytes())?;
    for a in addrs {
        match a.ip() {
            IpAddr::V4(ip) => {
                w.put(&[ADDRESS_IPV4])?;
                w.put(&ip.octets())?;
            }
            IpAddr::V6(ip) => {
                w.put(&[ADDRESS_IPV6])?;
                // Eight 16-bit groups, each little-endian (the reference writes uint16s).
                for seg in ip.segments() {
                    w.put(&seg.to_le_bytes())?;
                }
            }
        }
        w.put(&a.port().to_le_bytes())?;
    }
    Ok(())
}

fn read_addresses(r: &mut Reader<'_>) -> Result<Vec<SocketAddr>, TokenError> {
    let n = r.u32()? as usize;
    if n == 0 || n > MAX_SERVER_ADDRESSES {
        return Err(TokenError::BadAddressCount);
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let addr = match r.u8()? {
            ADDRESS_IPV4 => {
                let o: [u8; 4] = r.array()?;
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(o), r.u16()?))
            }
            ADDRESS_IPV6 => {
                let mut seg = [0u16; 8];
                for s in &mut seg {
                    *s = r.u16()?;
                }
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(seg), r.u16()?, 0, 0))
            }
            _ => return Err(TokenError::BadAddressType),
        };
        out.push(addr);
    }
    Ok(out)
}

/// `address == listed`, comparing IP and port only (an IPv6 flow info or scope id is not on
/// the wire), with an IPv4-mapped IPv6 address equal to its IPv4 address.
pub(crate) fn same_endpoint(a: &SocketAddr, b: &SocketAddr) -> bool {
    fn canon(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        }
    }
    a.port() == b.port() && canon(a.ip()) == canon(b.ip())
}

/// The associated data that binds the private token to its public fields.
fn token_aad(protocol_id: u64, expire_timestamp: u64) -> [u8; 29] {
    let mut aad = [0u8; 29];
    aad[..13].copy_from_slice(VERSION_INFO);
    aad[13..21].copy_from_slice(&protocol_id.to_le_bytes());
    aad[21..29].copy_from_slice(&expire_timestamp.to_le_bytes());
    aad
}

/// The private part of a connect token, as only the issuer and the game servers read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateToken {
    /// The client's id, unique among the clients the backend admits.
    pub client_id: u64,
    /// Seconds of silence after which either side drops the session; negative: never
    /// (development only).
    pub timeout_seconds: i32,
    /// Servers the token admits to (1 to 32).
    pub server_addresses: Vec<SocketAddr>,
    /// Key for client-to-server packets.
    pub client_to_server_key: Key,
    /// Key for server-to-client packets.
    pub server_to_client_key: Key,
    /// Application data handed to the server (this crate's layout: [`SessionUserData`]).
    pub user_data: [u8; USER_DATA_BYTES],
}

impl PrivateToken {
    /// Seals into the 1024-byte encrypted private part (XChaCha20-Poly1305, the last 16
    /// bytes the tag).
    pub fn seal(
        &self,
        protocol_id: u64,
        expire_timestamp: u64,
        nonce: &[u8; 24],
        key: &Key,
    ) -> Result<[u8; PRIVATE_TOKEN_BYTES], TokenError> {
        let mut buf = [0u8; PRIVATE_TOKEN_BYTES];
        {
            let mut w = Writer { buf: &mut buf[..PRIVATE_TOKEN_BYTES - MAC_BYTES], pos: 0 };
            w.put(&self.client_id.to_le_bytes())?;
            w.put(&self.timeout_seconds.to_le_bytes())?;
            write_addresses(&mut w, &self.server_addresses)?;
            w.put(self.client_to_server_key.as_bytes())?;
            w.put(self.server_to_client_key.as_bytes())?;
            w.put(&self.user_data)?;
        }
        let aad = token_aad(protocol_id, expire_timestamp);
        let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
        let (body, tag) = buf.split_at_mut(PRIVATE_TOKEN_BYTES - MAC_BYTES);
        let t = cipher
            .encrypt_in_place_detached(XNonce::from_slice(nonce), &aad, body)
            .map_err(|_| TokenError::TooLarge)?;
        tag.copy_from_slice(&t);
        Ok(buf)
    }

    /// Opens an encrypted private part: fails with [`TokenError::Decrypt`] unless `key`,
    /// `protocol_id` and `expire_timestamp` are those it was sealed with.
    pub fn open(
        sealed: &[u8; PRIVATE_TOKEN_BYTES],
        protocol_id: u64,
        expire_timestamp: u64,
        nonce: &[u8; 24],
        key: &Key,
    ) -> Result<Self, TokenError> {
        let mut buf = *sealed;
        let aad = token_aad(protocol_id, expire_timestamp);
        let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
        let (body, tag) = buf.split_at_mut(PRIVATE_TOKEN_BYTES - MAC_BYTES);
        cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), &aad, body, Tag::from_slice(tag))
            .map_err(|_| TokenError::Decrypt)?;
        let mut r = Reader { buf: body };
        let client_id = r.u64()?;
        let timeout_seconds = r.u32()? as i32;
        let server_addresses = read_addresses(&mut r)?;
        let client_to_server_key = Key(r.array()?);
        let server_to_client_key = Key(r.array()?);
        let user_data = r.array()?;
        Ok(PrivateToken {
            client_id,
            timeout_seconds,
            server_addresses,
            client_to_server_key,
            server_to_client_key,
            user_data,
        })
    }
}

/// A connect token as the client holds it: the public fields, and the private part it cannot
/// read. [`to_bytes`](Self::to_bytes) / [`from_bytes`](Self::from_bytes) are the standard
/// 2048-byte form any netcode 1.02 client reads.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectToken {
    /// The game's protocol id.
    pub protocol_id: u64,
    /// Unix seconds when it was made.
    pub create_timestamp: u64,
    /// Unix seconds when it stops admitting.
    pub expire_timestamp: u64,
    /// The private part's nonce.
    pub nonce: [u8; 24],
    /// The sealed private part.
    pub private_data: Box<[u8; PRIVATE_TOKEN_BYTES]>,
    /// Session timeout in seconds (negative: none).
    pub timeout_seconds: i32,
    /// Servers to try, in order.
    pub server_addresses: Vec<SocketAddr>,
    /// Key for client-to-server packets.
    pub client_to_server_key: Key,
    /// Key for server-to-client packets.
    pub server_to_client_key: Key,
}

impl std::fmt::Debug for ConnectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectToken")
            .field("protocol_id", &self.protocol_id)
            .field("create_timestamp", &self.create_timestamp)
            .field("expire_timestamp", &self.expire_timestamp)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("server_addresses", &self.server_addresses)
            .finish_non_exhaustive()
    }
}

impl ConnectToken {
    /// The standard 2048-byte form.
    pub fn to_bytes(&self) -> Result<Box<[u8; CONNECT_TOKEN_BYTES]>, TokenError> {
        let mut out = Box::new([0u8; CONNECT_TOKEN_BYTES]);
        let mut w = Writer { buf: &mut out[..], pos: 0 };
        w.put(VERSION_INFO)?;
        w.put(&self.protocol_id.to_le_bytes())?;
        w.put(&self.create_timestamp.to_le_bytes())?;
        w.put(&self.expire_timestamp.to_le_bytes())?;
        w.put(&self.nonce)?;
        w.put(&self.private_data[..])?;
        w.put(&self.timeout_seconds.to_le_bytes())?;
        write_addresses(&mut w, &self.server_addresses)?;
        w.put(self.client_to_server_key.as_bytes())?;
        w.put(self.server_to_client_key.as_bytes())?;
        Ok(out)
    }

    /// Reads the standard form, checking what a client checks before it connects: version,
    /// address count and types, create not after expire. The length must be exactly
    /// [`CONNECT_TOKEN_BYTES`]; the padding is not inspected.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.len() != CONNECT_TOKEN_BYTES {
            return Err(TokenError::Truncated);
        }
        let mut r = Reader { buf: bytes };
        if r.take(VERSION_INFO.len())? != VERSION_INFO {
            return Err(TokenError::WrongVersion);
        }
        let protocol_id = r.u64()?;
        let create_timestamp = r.u64()?;
        let expire_timestamp = r.u64()?;
        let nonce = r.array()?;
        let private_data = Box::new(r.array()?);
        let timeout_seconds = r.u32()? as i32;
        let server_addresses = read_addresses(&mut r)?;
        let client_to_server_key = Key(r.array()?);
        let server_to_client_key = Key(r.array()?);
        if create_timestamp > expire_timestamp {
            return Err(TokenError::BadTimestamps);
        }
        Ok(ConnectToken {
            protocol_id,
            create_timestamp,
            expire_timestamp,
            nonce,
            private_data,
            timeout_seconds,
            server_addresses,
            client_to_server_key,
            server_to_client_key,
        })
    }
}

/// This crate's layout of the token's 256 bytes of user data. Tokens made elsewhere (without
/// the magic) reach the game as raw bytes and get a plain session (no payload layer).
///
/// | bytes | field |
/// |---|---|
/// | 0..4 | magic `b"PVP1"` |
/// | 4 | flags: bit 0 = the client speaks the payload layer ([`crate::netcode::layer`]) |
/// | 5 | team |
/// | 6..8 | length of the game data, `u16` |
/// | 8..16 | match id, `u64` |
/// | 16..24 | player id, `u64` |
/// | 24..256 | game data (up to [`SessionUserData::MAX_GAME_DATA`] bytes), then zeros |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUserData {
    /// The match the seat belongs to.
    pub match_id: MatchId,
    /// The player.
    pub player: PlayerId,
    /// The player's team in the match.
    pub team: u8,
    /// Whether the client wraps its payloads in the payload layer (acks, reliable messages).
    pub layered: bool,
    /// Whatever else the game server needs (a loadout, a spawn point, ...).
    pub game_data: Vec<u8>,
}

const USER_DATA_MAGIC: &[u8; 4] = b"PVP1";

impl SessionUserData {
    /// The most game data that fits.
    pub const MAX_GAME_DATA: usize = USER_DATA_BYTES - 24;

    /// The 256-byte form; `None` if the game data is longer than
    /// [`MAX_GAME_DATA`](Self::MAX_GAME_DATA).
    pub fn encode(&self) -> Option<[u8; USER_DATA_BYTES]> {
        if self.game_data.len() > Self::MAX_GAME_DATA {
            return None;
        }
        let mut b = [0u8; USER_DATA_BYTES];
        b[..4].copy_from_slice(USER_DATA_MAGIC);
        b[4] = u8::from(self.layered);
        b[5] = self.team;
        // <= 232 fits u16.
        b[6..8].copy_from_slice(&(self.game_data.len() as u16).to_le_bytes());
        b[8..16].copy_from_slice(&self.match_id.get().to_le_bytes());
        b[16..24].copy_from_slice(&self.player.get().to_le_bytes());
        b[24..24 + self.game_data.len()].copy_from_slice(&self.game_data);
        Some(b)
    }

    /// Reads this layout; `None` for user data in another layout (no magic, unknown flags,
    /// a game-data length past the end).
    pub fn decode(b: &[u8; USER_DATA_BYTES]) -> Option<Self> {
        if &b[..4] != USER_DATA_MAGIC || b[4] & !1 != 0 {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([b[6], b[7]]));
        if len > Self::MAX_GAME_DATA {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Some(SessionUserData {
            match_id: MatchId::new(u64_at(8)),
            player: PlayerId::new(u64_at(16)),
            team: b[5],
            layered: b[4] & 1 == 1,
            game_data: b[24..24 + len].to_vec(),
        })
    }
}

/// What a matchmaker admits: one player, one match, the servers to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionGrant {
    /// The netcode client id; one session per id per server. `PlayerId::get()` is the usual
    /// choice.
    pub client_id: u64,
    /// The servers to try, in order (1 to 32).
    pub server_addresses: Vec<SocketAddr>,
    /// What the game server learns about the seat.
    pub user_data: SessionUserData,
}

/// Issuer settings: the protocol id, the key shared with the game servers, token lifetime and
/// session timeout. Secrets come from config or the environment ([`Key::from_env`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IssuerConfig {
    /// The game's protocol id (servers refuse tokens for another).
    pub protocol_id: u64,
    /// The private key shared with the game servers.
    pub private_key: Key,
    /// How long a token admits after it is issued.
    pub token_lifetime: Duration,
    /// Seconds of silence after which a session drops (negative: never; development only).
    pub timeout_seconds: i32,
}

impl IssuerConfig {
    /// 30 s token lifetime, 10 s session timeout.
    pub fn new(protocol_id: u64, private_key: Key) -> Self {
        IssuerConfig {
            protocol_id,
            private_key,
            token_lifetime: Duration::from_secs(30),
            timeout_seconds: 10,
        }
    }
}

/// Makes connect tokens: the library call a matchmaker makes for each seat it fills.
///
/// ```
/// use std::time::{SystemTime, UNIX_EPOCH};
/// use pvp_core::{MatchId, PlayerId};
/// use pvp_net::netcode::{IssuerConfig, Key, SessionGrant, SessionUserData, TokenIssuer};
///
/// let issuer = TokenIssuer::new(IssuerConfig::new(0x5056_5031, Key::random()));
/// let grant = SessionGrant {
///     client_id: 42,
///     server_addresses: vec!["127.0.0.1:40000".parse().unwrap()],
///     user_data: SessionUserData {
///         match_id: MatchId::new(7),
///         player: PlayerId::new(42),
///         team: 1,
///         layered: true,
///         game_data: vec![],
///     },
/// };
/// let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
/// let bytes = issuer.issue(now, &grant).unwrap();
/// assert_eq!(bytes.len(), 2048);
/// ```
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    config: IssuerConfig,
}

impl TokenIssuer {
    /// An issuer with these settings.
    pub fn new(config: IssuerConfig) -> Self {
        TokenIssuer { config }
    }

    /// The settings.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// A token for `grant`, issued at `unix_now`, in its 2048-byte form.
    pub fn issue(
        &self,
        unix_now: Duration,
        grant: &SessionGrant,
    ) -> Result<Box<[u8; CONNECT_TOKEN_BYTES]>, TokenError> {
        self.token(unix_now, grant)?.to_bytes()
    }

    /// A token for `grant` as a value.
    pub fn token(&self, unix_now: Duration, grant: &SessionGrant) -> Result<ConnectToken, TokenError> {
        let user_data = grant.user_data.encode().ok_or(TokenError::TooLarge)?;
        self.token_with_user_data(unix_now, grant.client_id, &grant.server_addresses, user_data)
    }

    /// A token carrying raw `user_data` (any layout; the server hands it over as it is).
    pub fn token_with_user_data(
        &self,
        unix_now: Duration,
        client_id: u64,
        server_addresses: &[SocketAddr],
        user_data: [u8; USER_DATA_BYTES],
    ) -> Result<ConnectToken, TokenError> {
        if server_addresses.is_empty() || server_addresses.len() > MAX_SERVER_ADDRESSES {
            return Err(TokenError::BadAddressCount);
        }
        let create = unix_now.as_secs();
        let expire = create.saturating_add(self.config.token_lifetime.as_secs().max(1));
        let private = PrivateToken {
            client_id,
            timeout_seconds: self.config.timeout_seconds,
            server_addresses: server_addresses.to_vec(),
            client_to_server_key: Key::random(),
            server_to_client_key: Key::random(),
            user_data,
        };
        let nonce = random_bytes();
        let sealed = private.seal(self.config.protocol_id, expire, &nonce, &self.config.private_key)?;
        Ok(ConnectToken {
            protocol_id: self.config.protocol_id,
            create_timestamp: create,
            expire_timestamp: expire,
            nonce,
            private_data: Box::new(sealed),
            timeout_seconds: private.timeout_seconds,
            server_addresses: private.server_addresses,
            client_to_server_key: private.client_to_server_key,
            server_to_client_key: private.server_to_client_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> SessionGrant {
        SessionGrant {
            client_id: 9,
            server_addresses: vec!["127.0.0.1:4000".parse().unwrap(), "[::1]:4001".parse().unwrap()],
            user_data: SessionUserData {
                match_id: MatchId::new(3),
                player: PlayerId::new(9),
                team: 2,
                layered: true,
                game_data: b"loadout".to_vec(),
            },
        }
    }

    #[test]
    fn token_round_trips_and_private_part_opens_only_with_its_key() {
        let key = Key::random();
        let issuer = TokenIssuer::new(IssuerConfig::new(77, key.clone()));
        let t = issuer.token(Duration::from_secs(1_000), &grant()).unwrap();
        let bytes = t.to_bytes().unwrap();
        let back = ConnectToken::from_bytes(&bytes[..]).unwrap();
        assert_eq!(back, t);
        let p = PrivateToken::open(&back.private_data, 77, back.expire_timestamp, &back.nonce, &key).unwrap();
        assert_eq!(p.client_id, 9);
        assert_eq!(p.server_addresses, grant().server_addresses);
        assert_eq!(p.client_to_server_key, t.client_to_server_key);
        assert_eq!(SessionUserData::decode(&p.user_data), Some(grant().user_data));
        assert_eq!(
            PrivateToken::open(&back.private_data, 77, back.expire_timestamp, &back.nonce, &Key::random()),
            Err(TokenError::Decrypt)
        );
        assert_eq!(
            PrivateToken::open(&back.private_data, 78, back.expire_timestamp, &back.nonce, &key),
            Err(TokenError::Decrypt)
        );
        assert_eq!(
            PrivateToken::open(&back.private_data, 77, back.expire_timestamp + 1, &back.nonce, &key),
            Err(TokenError::Decrypt)
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let issuer = TokenIssuer::new(IssuerConfig::new(1, Key::random()));
        let bytes = issuer.issue(Duration::from_secs(5), &grant()).unwrap();
        assert_eq!(ConnectToken::from_bytes(&bytes[..100]), Err(TokenError::Truncated));
        let mut b = bytes.clone();
        b[0] = b'X';
        assert_eq!(ConnectToken::from_bytes(&b[..]), Err(TokenError::WrongVersion));
        let addr_count = 13 + 8 + 8 + 8 + 24 + 1024 + 4;
        let mut b = bytes.clone();
        b[addr_count..addr_count + 4].copy_from_slice(&33u32.to_le_bytes());
        assert_eq!(ConnectToken::from_bytes(&b[..]), Err(TokenError::BadAddressCount));
        let mut b = bytes.clone();
        b[addr_count + 4] = 3;
        assert_eq!(ConnectToken::from_bytes(&b[..]), Err(TokenError::BadAddressType));
        let mut b = bytes;
        b[21..29].copy_from_slice(&0u64.to_le_bytes()); // create after expire
        b[13 + 8..13 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(ConnectToken::from_bytes(&b[..]), Err(TokenError::BadTimestamps));
        let g = SessionGrant { server_addresses: vec![], ..grant() };
        assert_eq!(issuer.issue(Duration::ZERO, &g).err(), Some(TokenError::BadAddressCount));
    }

    #[test]
    fn keys_read_from_hex_and_never_print() {
        let k = Key::random();
        assert_eq!(Key::from_hex(&k.to_hex()), Ok(k.clone()));
        assert_eq!(Key::from_hex("zz"), Err(KeyError::BadHex));
        assert_eq!(Key::from_hex(&"g".repeat(64)), Err(KeyError::BadHex));
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
        assert!(matches!(Key::from_env("PVP_NO_SUCH_VARIABLE_X"), Err(KeyError::MissingEnv(_))));
    }

    #[test]
    fn ipv6_groups_are_little_endian() {
        let mut buf = [0u8; 64];
        let mut w = Writer { buf: &mut buf, pos: 0 };
        write_addresses(&mut w, &["[2001:db8::1]:258".parse().unwrap()]).unwrap();
        assert_eq!(&buf[4..7], &[ADDRESS_IPV6, 0x01, 0x20]);
        assert_eq!(&buf[21..23], &[0x02, 0x01]);
    }
}
