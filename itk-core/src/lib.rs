//! The parts of mpm-itk that need no httpd symbols, so they can be unit
//! tested with `cargo test`: identity resolution, uid/gid ranges, the
//! spare-worker arithmetic of prefork, the two privilege recipes, the
//! seccomp filter, MaxClientsVHost admission and the keep-alive decisions.

pub mod connection;
pub mod directives;
pub mod ids;
pub mod limits;
pub mod privileges;
pub mod ranges;
pub mod seccomp;
pub mod spare;
pub mod target;
