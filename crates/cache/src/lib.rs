//! The HTTP cache of the gateway. `policy` is the whole of the caching rules, as pure functions
//! of request and response heads and the time: what may be stored, how long it stays fresh,
//! whether a stored response may answer a request (fresh, stale while it is revalidated, or
//! stale because the upstream failed), and how a 304 updates it. `store` keeps the responses
//! in memory, bounded by bytes, with their variants. Nothing here does I/O.

pub mod policy;
pub mod store;
