/* Every httpd/APR header the module binds to. bindgen reads this file. */
#include "apr.h"
#include "apr_portable.h"
#include "apr_strings.h"
#include "apr_poll.h"
#include "apr_proc_mutex.h"
#include "apr_thread_proc.h"
#include "apr_random.h"
#include "httpd.h"
#include "http_main.h"
#include "http_log.h"
#include "http_config.h"
#include "http_core.h"
#include "http_connection.h"
#include "http_request.h"
#include "http_protocol.h"
#include "http_vhost.h"
#include "scoreboard.h"
#include "ap_mpm.h"
#include "ap_listen.h"
#include "ap_expr.h"
#include "mpm_common.h"
#include "unixd.h"
#include "util_mutex.h"
#include "ap_mmn.h"
int itk_shim_status_is_eacces(apr_status_t s);
int itk_shim_status_is_timeup(apr_status_t s);
int itk_shim_status_is_eintr(apr_status_t s);
int itk_shim_status_is_enoent(apr_status_t s);
