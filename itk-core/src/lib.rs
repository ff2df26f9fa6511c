//! The parts of mpm-itk that need no httpd symbols, so they can be unit
//! tested with `cargo test`: identity resolution, uid/gid ranges, the
//! spare-worker arithmetic of prefork, the two privilege recipes, the
//! seccomp filter, MaxClientsVHost admission, the keep-alive decisions,
//! and, for UserPools, the parsers of a connection's peeked first bytes and
//! the name-based vhost resolution they feed.

pub mod connection;
pub mod directives;
pub mod handoff;
pub mod ids;
pub mod limits;
pub mod peek;
pub mod pools;
pub mod privileges;
pub mod ranges;
pub mod route;
pub mod seccomp;
pub mod spare;
pub mod target;
