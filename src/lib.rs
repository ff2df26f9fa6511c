//! mpm-itk in Rust: an Apache httpd 2.4 MPM (the prefork process model) that
//! runs every virtual host under its own Unix user.
//!
//! Layers, each using only those below it (README, "Code layout"):
//!
//! 3. [`module`]: the module record, the command table and every
//!    `extern "C"` trampoline: the only place that names our functions in a
//!    C table.
//! 2. [`mpm`] (prefork's process model), which calls into [`pools`]
//!    (UserPools: routing, user processes), which calls into [`itk`] (the
//!    connection child, the switch, vhost limits), and [`config`] (the
//!    directives' handlers and this module's configuration records).
//!    Safe code (`forbid(unsafe_code)`, but for `config`'s one promise).
//! 1. [`httpd`]: safe wrappers over httpd and APR that know nothing of the
//!    layers above.
//! 0. [`sys`]: the bindgen output and the C shim's declarations.
//!
//! The decisions (privilege recipes, the seccomp filter, spare-worker
//! arithmetic, identity resolution, MaxClientsVHost admission, the
//! connection's identity state machine, directive parsing) live in the
//! `mpm-itk-core` crate, where they are unit tested without root.

mod config;
mod httpd;
mod itk;
mod module;
mod mpm;
mod pools;
mod sys;
