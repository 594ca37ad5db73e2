//! Fault-injecting upstreams (being written).
