#include "server/settings.h"

#include <string.h>

sl_settings_t sl_settings;

void sl_settings_defaults(void)
{
    memset(&sl_settings, 0, sizeof(sl_settings));
    sl_settings.workers = 1;
    sl_settings.max_header_size = 16 * 1024;
    sl_settings.max_body_size = 8 * 1024 * 1024;
    sl_settings.body_buffer_size = 64 * 1024;
    sl_settings.max_url_length = 8 * 1024;
    sl_settings.header_timeout = 10;
    sl_settings.body_timeout = 30;
    sl_settings.body_deadline = 300;
    sl_settings.keepalive_timeout = 60;
    sl_settings.send_timeout = 30;
    sl_settings.max_connections = 10000;
    sl_settings.keepalive_requests = 10000;
    sl_settings.drain_timeout = 30;
}
