//! A bounded cache of verified tokens, keyed by the SHA-256 of the token.
//!
//! A hit still passes the expiry, key and revocation checks (see [`super::TokenVerifier`]); the
//! cache only saves the signature check and the parsing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use ring::digest;

use super::claims::VerifiedToken;

/// SHA-256 of a token: the cache key, so the cache contains no token.
pub type TokenHash = [u8; 32];

/// Returns the SHA-256 of `token`.
pub fn token_hash(token: &str) -> TokenHash {
    let mut hash = [0; 32];
    hash.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    hash
}

/// The cache. When full, the oldest entry makes room for a new one.
#[derive(Debug)]
pub struct VerifiedCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<TokenHash, Arc<VerifiedToken>>,
    /// Insertion order; may hold hashes already removed, which eviction skips.
    order: VecDeque<TokenHash>,
}

impl VerifiedCache {
    /// Creates a cache of at most `capacity` tokens; 0 caches nothing.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// Returns the cached token with `hash`.
    pub fn get(&self, hash: &TokenHash) -> Option<Arc<VerifiedToken>> {
        self.lock().entries.get(hash).cloned()
    }

    /// Adds a verified token, evicting the oldest entry when full.
    pub fn insert(&self, hash: TokenHash, token: Arc<VerifiedToken>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        while inner.entries.len() >= self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
        if inner.entries.insert(hash, token).is_none() {
            inner.order.push_back(hash);
        }
        // Removed entries leave their hash in `order`; drop those before the queue grows past
        // twice the capacity.
        if inner.order.len() > self.capacity.saturating_mul(2) {
            let CacheInner { entries, order } = &mut *inner;
            order.retain(|hash| entries.contains_key(hash));
        }
    }

    /// Removes the token with `hash`.
    pub fn remove(&self, hash: &TokenHash) {
        self.lock().entries.remove(hash);
    }

    /// Returns the number of cached tokens.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Returns whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
