//! The write path: a local write becomes a delta, joins the replica and the delta log, and
//! (for a STRONG class) starts a STRONG write.

use std::time::Duration;

use pvp_core::PlayerId;

use super::anti_entropy::bucket_of;
use super::error::SyncError;
use super::model::{Key, MAX_PROFILE_FIELDS, MAX_SET_LEN, MAX_TEXT, Strategy, Value, WriteOp, WriteReceipt};
use super::stats::Counter;
use super::{CrossRegionSync, ms};
use crate::crdt::{Crdt, LwwRegister, MAX_FIELD_NAME, OrSet, PnCounter, Profile, ProfileField, Scalar};
use crate::leaderboard::{GameMode, ScoreCell, ScoreOperator};

impl CrossRegionSync {
    /// Bans `player` (STRONG by default).
    pub fn ban(&mut self, player: PlayerId, now: Duration) -> Result<WriteReceipt, SyncError> {
        self.write(Key::Ban(player), WriteOp::SetAdd(0), now)
    }

    /// Lifts `player`'s ban (the bans this region has seen; a concurrent new ban wins).
    pub fn unban(&mut self, player: PlayerId, now: Duration) -> Result<WriteReceipt, SyncError> {
        self.write(Key::Ban(player), WriteOp::SetRemove(0), now)
    }

    /// Adds `friend` to `player`'s friends.
    pub fn add_friend(
        &mut self,
        player: PlayerId,
        friend: PlayerId,
        now: Duration,
    ) -> Result<WriteReceipt, SyncError> {
        self.write(Key::Friends(player), WriteOp::SetAdd(friend.get()), now)
    }

    /// Removes `friend` from `player`'s friends.
    pub fn remove_friend(
        &mut self,
        player: PlayerId,
        friend: PlayerId,
        now: Duration,
    ) -> Result<WriteReceipt, SyncError> {
        self.write(Key::Friends(player), WriteOp::SetRemove(friend.get()), now)
    }

    /// Submits `score` for `player` in `mode`, combined by the mode's operator.
    pub fn submit_score(
        &mut self,
        mode: GameMode,
        player: PlayerId,
        score: i64,
        now: Duration,
    ) -> Result<WriteReceipt, SyncError> {
        self.write(Key::Score(mode, player), WriteOp::Score(score), now)
    }

    /// Applies `op` to `key` locally and replicates it with the key class's strategy.
    pub fn write(&mut self, key: Key, op: WriteOp, now: Duration) -> Result<WriteReceipt, SyncError> {
        let stamp = self.hlc.now(ms(now));
        let actor = self.actor;
        let current = self.get(&key);
        let delta =
            match (&key, op) {
                (Key::Score(mode, _), WriteOp::Score(v)) => {
                    let op = self.boards.operator(*mode).ok_or(SyncError::UnknownMode(*mode))?;
                    let cur = match current {
                        Some(Value::Score(c)) if c.fits(op) => Some(c),
                        Some(_) => return Err(SyncError::TypeMismatch(key)),
                        None => None,
                    };
                    Value::Score(ScoreCell::submit(cur, op, v, actor, stamp).0)
                }
                (Key::Score(..), _) => return Err(SyncError::TypeMismatch(key)),
                (Key::Ban(_) | Key::Friends(_) | Key::Custom(_), WriteOp::SetAdd(e)) => match current {
                    Some(Value::Set(s)) => {
                        if !s.contains(&e) && s.len() >= MAX_SET_LEN {
                            return Err(SyncError::TooLarge(key));
                        }
                        Value::Set(s.add_delta(actor, e))
                    }
                    None => Value::Set(OrSet::new().add_delta(actor, e)),
                    Some(_) => return Err(SyncError::TypeMismatch(key)),
                },
                (Key::Ban(_) | Key::Friends(_) | Key::Custom(_), WriteOp::SetRemove(e)) => match current {
                    Some(Value::Set(s)) => match s.remove_delta(&e) {
                        Some(d) => Value::Set(d),
                        None => return Ok(WriteReceipt::Applied),
                    },
                    None => return Ok(WriteReceipt::Applied),
                    Some(_) => return Err(SyncError::TypeMismatch(key)),
                },
                (Key::Custom(_), WriteOp::CounterAdd(d)) => match current {
                    Some(Value::Counter(c)) => Value::Counter(c.clone().add(actor, d)),
                    None => Value::Counter(PnCounter::new().add(actor, d)),
                    Some(_) => return Err(SyncError::TypeMismatch(key)),
                },
                (Key::Custom(_), WriteOp::RegisterSet(v)) => {
                    if matches!(&v, Scalar::Text(t) if t.len() > MAX_TEXT) {
                        return Err(SyncError::TooLarge(key));
                    }
                    match current {
                        Some(Value::Register(_)) | None => Value::Register(LwwRegister::new(v, stamp)),
                        Some(_) => return Err(SyncError::TypeMismatch(key)),
                    }
                }
                (Key::Profile(_), WriteOp::ProfileSet { field, value }) => {
                    if matches!(&value, Scalar::Text(t) if t.len() > MAX_TEXT) {
                        return Err(SyncError::TooLarge(key));
                    }
                    let f = ProfileField::Register(LwwRegister::new(value, stamp));
                    Value::Profile(self.profile_delta(key, current, field, f, |cur| {
                        matches!(cur, ProfileField::Register(_))
                    })?)
                }
                (Key::Profile(_), WriteOp::ProfileAdd { field, delta }) => {
                    let counter = match current {
                        Some(Value::Profile(p)) => match p.get(&field) {
                            Some(ProfileField::Counter(c)) => c.clone(),
                            Some(_) => return Err(SyncError::TypeMismatch(key)),
                            None => PnCounter::new(),
                        },
                        _ => PnCounter::new(),
                    };
                    let mut c = counter;
                    let f = ProfileField::Counter(c.add(actor, delta));
                    Value::Profile(self.profile_delta(key, current, field, f, |cur| {
                        matches!(cur, ProfileField::Counter(_))
                    })?)
                }
                _ => return Err(SyncError::TypeMismatch(key)),
            };
        let strategy = self.cfg.strategy(key.class());
        if strategy == Strategy::Strong && self.strong.len() >= self.cfg.max_pending_strong {
            return Err(SyncError::StrongBacklogFull(self.strong.len()));
        }
        self.merge_entry(key, &delta);
        self.stats.add(Counter::Writes, 1);
        self.push_log(key, delta.clone());
        if strategy == Strategy::Eventual {
            return Ok(WriteReceipt::Applied);
        }
        Ok(WriteReceipt::Pending(self.start_strong(key, delta, now)))
    }

    fn profile_delta(
        &self,
        key: Key,
        current: Option<&Value>,
        field: String,
        f: ProfileField,
        same_kind: impl Fn(&ProfileField) -> bool,
    ) -> Result<Profile, SyncError> {
        if field.len() > MAX_FIELD_NAME {
            return Err(SyncError::TooLarge(key));
        }
        match current {
            Some(Value::Profile(p)) => match p.get(&field) {
                Some(cur) if !same_kind(cur) => return Err(SyncError::TypeMismatch(key)),
                None if p.len() >= MAX_PROFILE_FIELDS => return Err(SyncError::TooLarge(key)),
                _ => {}
            },
            Some(_) => return Err(SyncError::TypeMismatch(key)),
            None => {}
        }
        let mut d = Profile::new();
        d.apply(field, f);
        Ok(d)
    }

    fn push_log(&mut self, key: Key, delta: Value) {
        self.log.push_back((self.next_seq, key, delta));
        self.next_seq += 1;
        if self.log.len() > self.cfg.max_delta_log {
            self.log.pop_front();
            self.stats.add(Counter::LogOverflows, 1);
        }
    }

    /// Joins `v` into the replica under `key`.
    pub(super) fn merge_entry(&mut self, key: Key, v: &Value) {
        let b = bucket_of(&key);
        // Every merge counts as a change: detecting a no-op would need a copy of the value,
        // and re-hashing / re-indexing an unchanged key is harmless.
        match self.buckets[b].get_mut(&key) {
            Some(cur) => cur.merge(v),
            None => {
                self.buckets[b].insert(key, v.clone());
                self.key_hashes.insert(key, 0);
            }
        }
        {
            self.dirty.insert(key);
            if let (Key::Score(mode, player), Some(Value::Score(cell))) = (key, self.buckets[b].get(&key)) {
                let op = match cell {
                    ScoreCell::Best(_) => ScoreOperator::Best,
                    ScoreCell::Set(_) => ScoreOperator::Set,
                    ScoreCell::Counter(_) => ScoreOperator::Incr,
                };
                let score = cell.score();
                self.boards.index(mode, player, score, op);
            }
        }
    }
}
