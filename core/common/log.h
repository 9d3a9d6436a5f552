#ifndef SL_LOG_H
#define SL_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum { SL_LOG_DEBUG = 0, SL_LOG_INFO = 1, SL_LOG_WARN = 2, SL_LOG_ERROR = 3 };

/** Sends the error log to path ("stderr" or NULL for stderr); returns 0 or -errno (the old target stays). */
int sl_log_open(const char *path);
/** Sets the minimum level written. */
void sl_log_set_level(int level);
/** Parses "debug|info|warn|error"; returns the level or -1. */
int sl_log_level_parse(const char *name);
/** Returns non-zero when level would be written. */
int sl_log_enabled(int level);
/** Writes one line "TIME [level] message" atomically (one write(2)), control characters and bytes that are
 * not UTF-8 escaped as \xNN; safe from any thread. */
void sl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Writes a message that is already formatted (used by the Lua side). */
void sl_log_write(int level, const char *msg, unsigned long len);
/** Writes text that is several lines on purpose (an error list, a traceback) as one log line per line of
 * text, each "prefix" + the line (escaped as by sl_log; leading tabs become two spaces); empty lines are left
 * out. */
void sl_log_lines(int level, const char *prefix, const char *text, size_t len);
/** Length (1-4) of the printable UTF-8 character at s (n >= 1 bytes left), or 0 when s[0] starts a control
 *  character (C0, DEL, C1) or is not valid UTF-8 there. */
size_t sl_utf8_printable(const char *s, size_t n);
/** Closes a log file opened by sl_log_open. */
void sl_log_close(void);

#endif
