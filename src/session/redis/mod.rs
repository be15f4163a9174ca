//! The Redis session store (in progress): sessions, per-person index and revocation notices in
//! Redis, so many gateway replicas share them.
