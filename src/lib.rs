//! mpm-itk in Rust: an Apache httpd 2.4 MPM (the prefork process model) that
//! runs every virtual host under its own Unix user.
//!
//! * `ffi`: the raw bindings, thin wrappers and every `extern "C"` entry
//!   point (the only module with `unsafe`).
//! * `mpm`: prefork's process model.
//! * `itk`: per-connection children and the switch to the vhost's user.
//! * `config`: directive values and per-dir/per-server configuration.
//!
//! Privilege recipes, the seccomp filter and the spare-worker arithmetic
//! live in the `mpm-itk-core` crate, where they are unit tested.

mod config;
mod ffi;
mod itk;
mod mpm;
