//! Layer 0: what bindgen generated from the installed httpd/APR headers
//! (`wrapper.h`), and the declarations of the C shim (`shim.c`: the
//! `APR_STATUS_IS_*` macros bindgen cannot express). No logic lives here;
//! only `crate::httpd` (layer 1) names these items.

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unnecessary_transmutes,
    improper_ctypes,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
