#ifndef SL_PARSER_H
#define SL_PARSER_H

#include <llhttp.h>

/** The llhttp callbacks for server connections (parser->data is the sl_conn_t); set up on first use. */
const llhttp_settings_t *sl__http_parser_settings(void);

#endif
