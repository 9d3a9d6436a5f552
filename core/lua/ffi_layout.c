/* The layout of the structs Lua reads through FFI and the constants it names, for the spec that checks the
 * cdefs against C (see ffi_layout.h). A struct only partly mirrored (sl_req_t: its first block) gives as its
 * size the offset of its first private member. */
#include "lua/ffi_layout.h"

#include "http/access_log.h"
#include "http/request.h"
#include "plugin/cplugin.h"
#include "plugin/plugin_abi.h"
#include "router/router.h"
#include "shared/memcached.h"
#include "upstream/client.h"
#include "upstream/pool.h"
#include "upstream/proxy.h"

#define SIZE(T)                                                                                              \
    {                                                                                                        \
#T, "", (int64_t)sizeof(T)                                                                           \
    }
#define SIZE_UPTO(T, f)                                                                                      \
    {                                                                                                        \
#T, "", (int64_t)offsetof(T, f)                                                                      \
    }
#define OFF(T, f)                                                                                            \
    {                                                                                                        \
#T, #f, (int64_t)offsetof(T, f)                                                                      \
    }
#define ENUM(c)                                                                                              \
    {                                                                                                        \
        "enum", #c, (int64_t)(c)                                                                             \
    }

static const sl_ffi_fact_t facts[] = {
    SIZE(sl_header_t),
    OFF(sl_header_t, name),
    OFF(sl_header_t, value),
    OFF(sl_header_t, name_len),
    OFF(sl_header_t, value_len),

    SIZE_UPTO(sl_req_t, refs), /* Lua sees the block before refs */
    OFF(sl_req_t, method),
    OFF(sl_req_t, path),
    OFF(sl_req_t, query),
    OFF(sl_req_t, host),
    OFF(sl_req_t, body),
    OFF(sl_req_t, headers),
    OFF(sl_req_t, client_ip),
    OFF(sl_req_t, method_len),
    OFF(sl_req_t, path_len),
    OFF(sl_req_t, query_len),
    OFF(sl_req_t, host_len),
    OFF(sl_req_t, body_len),
    OFF(sl_req_t, nheaders),
    OFF(sl_req_t, client_ip_len),
    OFF(sl_req_t, client_port),
    OFF(sl_req_t, http_minor),
    OFF(sl_req_t, keepalive),
    OFF(sl_req_t, resp_started),
    OFF(sl_req_t, resp_done),
    OFF(sl_req_t, client_gone),
    OFF(sl_req_t, is_admin),
    OFF(sl_req_t, body_pending),
    OFF(sl_req_t, status),
    OFF(sl_req_t, id),
    OFF(sl_req_t, bytes_sent),
    OFF(sl_req_t, start_time),
    OFF(sl_req_t, route_id),
    OFF(sl_req_t, route_id_len),
    OFF(sl_req_t, upstream_status),
    OFF(sl_req_t, upstream_time),
    OFF(sl_req_t, upstream_addr),

    SIZE(sl_log_ai_t),
    OFF(sl_log_ai_t, provider),
    OFF(sl_log_ai_t, model),
    OFF(sl_log_ai_t, requested_model),
    OFF(sl_log_ai_t, cut),
    OFF(sl_log_ai_t, cache),
    OFF(sl_log_ai_t, provider_len),
    OFF(sl_log_ai_t, model_len),
    OFF(sl_log_ai_t, requested_model_len),
    OFF(sl_log_ai_t, cut_len),
    OFF(sl_log_ai_t, cache_len),
    OFF(sl_log_ai_t, status),
    OFF(sl_log_ai_t, prompt_tokens),
    OFF(sl_log_ai_t, completion_tokens),
    OFF(sl_log_ai_t, cost),
    OFF(sl_log_ai_t, ttft_ms),
    OFF(sl_log_ai_t, latency_ms),
    OFF(sl_log_ai_t, saved_tokens),
    OFF(sl_log_ai_t, saved_cost),
    OFF(sl_log_ai_t, estimated),
    OFF(sl_log_ai_t, stream),

    SIZE(sl_upresp_t),
    OFF(sl_upresp_t, headers),
    OFF(sl_upresp_t, chunk),
    OFF(sl_upresp_t, nheaders),
    OFF(sl_upresp_t, chunk_len),
    OFF(sl_upresp_t, status),
    OFF(sl_upresp_t, error),
    OFF(sl_upresp_t, content_length),
    OFF(sl_upresp_t, headers_done),
    OFF(sl_upresp_t, done),
    OFF(sl_upresp_t, reused),

    SIZE(sl_proxy_opts_t),
    OFF(sl_proxy_opts_t, host),
    OFF(sl_proxy_opts_t, ca_file),
    OFF(sl_proxy_opts_t, sni),
    OFF(sl_proxy_opts_t, head),
    OFF(sl_proxy_opts_t, skip),
    OFF(sl_proxy_opts_t, body),
    OFF(sl_proxy_opts_t, hostlen),
    OFF(sl_proxy_opts_t, headlen),
    OFF(sl_proxy_opts_t, skiplen),
    OFF(sl_proxy_opts_t, bodylen),
    OFF(sl_proxy_opts_t, nfields),
    OFF(sl_proxy_opts_t, port),
    OFF(sl_proxy_opts_t, flags),
    OFF(sl_proxy_opts_t, mode),
    OFF(sl_proxy_opts_t, pool_size),
    OFF(sl_proxy_opts_t, connect_timeout),
    OFF(sl_proxy_opts_t, send_timeout),
    OFF(sl_proxy_opts_t, read_timeout),
    OFF(sl_proxy_opts_t, header_timeout),
    OFF(sl_proxy_opts_t, idle_timeout),

    SIZE(sl_httpres_t),
    OFF(sl_httpres_t, headers),
    OFF(sl_httpres_t, body),
    OFF(sl_httpres_t, nheaders),
    OFF(sl_httpres_t, body_len),
    OFF(sl_httpres_t, status),
    OFF(sl_httpres_t, error),
    OFF(sl_httpres_t, wake_id),
    OFF(sl_httpres_t, headers_done),
    OFF(sl_httpres_t, done),
    OFF(sl_httpres_t, reused),
    OFF(sl_httpres_t, waiting),
    OFF(sl_httpres_t, errmsg),

    SIZE(sl_http_opts_t),
    OFF(sl_http_opts_t, method),
    OFF(sl_http_opts_t, url),
    OFF(sl_http_opts_t, headers),
    OFF(sl_http_opts_t, body),
    OFF(sl_http_opts_t, ca_file),
    OFF(sl_http_opts_t, mlen),
    OFF(sl_http_opts_t, ulen),
    OFF(sl_http_opts_t, hlen),
    OFF(sl_http_opts_t, blen),
    OFF(sl_http_opts_t, nfields),
    OFF(sl_http_opts_t, flags),
    OFF(sl_http_opts_t, pool_size),
    OFF(sl_http_opts_t, connect_timeout),
    OFF(sl_http_opts_t, send_timeout),
    OFF(sl_http_opts_t, read_timeout),
    OFF(sl_http_opts_t, deadline),
    OFF(sl_http_opts_t, max_body),
    OFF(sl_http_opts_t, idle_timeout),

    SIZE(sl_mcop_t),
    OFF(sl_mcop_t, value),
    OFF(sl_mcop_t, value_len),
    OFF(sl_mcop_t, flags),
    OFF(sl_mcop_t, num),
    OFF(sl_mcop_t, rc),
    OFF(sl_mcop_t, wake_id),
    OFF(sl_mcop_t, done),
    OFF(sl_mcop_t, waiting),
    OFF(sl_mcop_t, errmsg),

    SIZE(sl_plugin_t),
    OFF(sl_plugin_t, abi_version),
    OFF(sl_plugin_t, name),
    OFF(sl_plugin_t, version),
    OFF(sl_plugin_t, priority),
    OFF(sl_plugin_t, schema_json),
    OFF(sl_plugin_t, check),
    OFF(sl_plugin_t, rewrite),
    OFF(sl_plugin_t, access),
    OFF(sl_plugin_t, header_filter),
    OFF(sl_plugin_t, log),
    OFF(sl_plugin_t, reserved),

    SIZE(sl_cplugin_op_t),
    OFF(sl_cplugin_op_t, kind),
    OFF(sl_cplugin_op_t, name_off),
    OFF(sl_cplugin_op_t, name_len),
    OFF(sl_cplugin_op_t, value_off),
    OFF(sl_cplugin_op_t, value_len),

    SIZE(sl_plugin_req_t),
    OFF(sl_plugin_req_t, method),
    OFF(sl_plugin_req_t, path),
    OFF(sl_plugin_req_t, headers),
    OFF(sl_plugin_req_t, overlay),
    OFF(sl_plugin_req_t, plugin_name),
    OFF(sl_plugin_req_t, request_id),
    OFF(sl_plugin_req_t, method_len),
    OFF(sl_plugin_req_t, path_len),
    OFF(sl_plugin_req_t, nheaders),
    OFF(sl_plugin_req_t, noverlay),
    OFF(sl_plugin_req_t, plugin_name_len),
    OFF(sl_plugin_req_t, request_id_len),
    OFF(sl_plugin_req_t, status),
    OFF(sl_plugin_req_t, ops),
    OFF(sl_plugin_req_t, nops),
    OFF(sl_plugin_req_t, ops_cap),
    OFF(sl_plugin_req_t, data),
    OFF(sl_plugin_req_t, data_len),
    OFF(sl_plugin_req_t, data_cap),
    OFF(sl_plugin_req_t, body_off),
    OFF(sl_plugin_req_t, body_len),
    OFF(sl_plugin_req_t, ctype_off),
    OFF(sl_plugin_req_t, ctype_len),
    OFF(sl_plugin_req_t, body_set),

    SIZE(sl_route_match_t),
    OFF(sl_route_match_t, id),
    OFF(sl_route_match_t, entry),
    OFF(sl_route_match_t, nparams),
    OFF(sl_route_match_t, params),

    ENUM(SL_PROXY_PASS),
    ENUM(SL_PROXY_FILTER),
    ENUM(SL_PROXY_TLS),
    ENUM(SL_PROXY_NO_VERIFY),
    ENUM(SL_PROXY_FORWARD),
    ENUM(SL_PROXY_LENGTH),
    ENUM(SL_PROXY_STREAM),
    ENUM(SL_PROXY_ENV_PROXY),
    ENUM(SL_UPERR_NONE),
    ENUM(SL_UPERR_CONNECT),
    ENUM(SL_UPERR_DNS),
    ENUM(SL_UPERR_TIMEOUT),
    ENUM(SL_UPERR_RESET),
    ENUM(SL_UPERR_BAD_RESPONSE),
    ENUM(SL_UPERR_CLIENT_GONE),
    ENUM(SL_UPERR_NOMEM),
    ENUM(SL_UPERR_TLS),
    ENUM(SL_UPERR_BAD_REQUEST),
    ENUM(SL_HTTP_STREAM),
    ENUM(SL_HTTP_NO_VERIFY),
    ENUM(SL_HTTP_NO_PROXY),
    ENUM(SL_HTTP_HAS_HOST),
    ENUM(SL_MC_GET),
    ENUM(SL_MC_SET),
    ENUM(SL_MC_ADD),
    ENUM(SL_MC_INCR),
    ENUM(SL_MC_DECR),
    ENUM(SL_MC_DELETE),
    ENUM(SL_MC_GETS),
    ENUM(SL_MC_CAS),
    ENUM(SL_MC_OK),
    ENUM(SL_MC_NOT_FOUND),
    ENUM(SL_MC_NOT_STORED),
};

const sl_ffi_fact_t *sl_ffi_layout(size_t *n)
{
    *n = sizeof(facts) / sizeof(facts[0]);
    return facts;
}
