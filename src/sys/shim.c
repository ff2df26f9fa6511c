/* The C shim: only what bindgen cannot express (function-like macros whose
 * meaning depends on the platform's errno sets). Nothing here is exported
 * from the module: the cdylib exports only Rust #[no_mangle] items. */
#include "apr_errno.h"

int itk_shim_status_is_eacces(apr_status_t s) { return APR_STATUS_IS_EACCES(s); }
int itk_shim_status_is_timeup(apr_status_t s) { return APR_STATUS_IS_TIMEUP(s); }
int itk_shim_status_is_eintr(apr_status_t s) { return APR_STATUS_IS_EINTR(s); }
int itk_shim_status_is_enoent(apr_status_t s) { return APR_STATUS_IS_ENOENT(s); }
