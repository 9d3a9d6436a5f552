#ifndef SL_RUNS_H
#define SL_RUNS_H

#include <stddef.h>

#include "common/regex.h"

/* Capture groups (group 0 included) sl_text_runs_match handles. */
#define SL_RUNS_MAX_GROUPS 64

/** Finds, in text[start..len), the maximal runs of bytes b with cls[b] != 0 that hold at least `need` (>= 1)
 *  counted bytes: the byte `mark` (0..255), or ASCII digits when mark < 0 (counted bytes need a non-zero
 *  class). Writes each run as a (from, to) pair of byte offsets, to exclusive, into out, at most `pairs` of
 *  them, in text order. Returns the number written; when it is `pairs` there may be more (call again from
 *  the last `to`). -EINVAL for bad arguments, -E2BIG when len does not fit an int. A pre-filter for regexes
 *  whose matches are made of such bytes and hold such counted bytes; text without digits is skipped 8 bytes
 *  at a time, text without the mark by memchr. */
int sl_text_runs(const char *text, size_t len, size_t start, const unsigned char cls[256], int mark, int need,
                 int *out, int pairs);

/** The matches of re in text that start inside the runs sl_text_runs finds from start (each run matched with
 *  the subject cut one byte after it, look-behinds seeing the text before it): the same matches as a scan of
 *  the whole text when every match of re is made of class bytes and holds `need` counted bytes, and its
 *  look-aheads read at most one byte past the match unless that byte is in the class. Writes (from, to,
 *  group) triples (to exclusive; group: the lowest-numbered capture group that took part, 0 when none) into
 *  out, at most `triples`; *next is where to call again when it is full (else len). Returns the number
 *  written, -EINVAL, -E2BIG (more than SL_RUNS_MAX_GROUPS groups, or len past an int), or a negative
 *  sl_regex_exec code (a match limit). One FFI call for a whole pass of ai-pii's detectors. */
int sl_text_runs_match(const sl_regex_t *re, const char *text, size_t len, size_t start,
                       const unsigned char cls[256], int mark, int need, int *out, int triples, size_t *next);

#endif
