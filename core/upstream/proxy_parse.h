/* Private to core/upstream: the llhttp callbacks of proxy.c's upstream responses (proxy_parse.c). */
#ifndef SL_PROXY_PARSE_H
#define SL_PROXY_PARSE_H

#include <llhttp.h>

#include "upstream/proxy.h"

/** The llhttp settings for upstream responses of proxied exchanges (parser->data is the sl_upconn_t whose
 *  owner is the sl_proxy_t); set up once on first use, shared by all workers. */
const llhttp_settings_t *sl__proxy_parser_settings(void);

#endif
