//! How a re-executed ping-pong partner knows what it is: the variable naming its role.

/// Set in the environment of a re-executed ping-pong partner (of the socketpair, the
/// shared-memory or the ipc-channel ping-pong), naming which.
pub const HELPER_ENV: &str = "CF_BENCHES_PINGPONG_HELPER";
