#ifndef SL_LITERALS_H
#define SL_LITERALS_H

#include <stddef.h>

/** Which of n literals occur in text[0..len): literal i is lits[i], lens[i] bytes (>= 1), compared ASCII
 *  caseless when fold[i] is non-zero (the literal is then given in lower case). Sets found[i] to 1 or 0 and
 *  returns how many occur; -EINVAL for bad arguments. A pre-filter for regex sets (sluice.re.set): one
 *  vector pass per literal (its two rarest bytes 16 or 32 positions at a time), a compare at each
 *  candidate. */
int sl_literals_find(const char *text, size_t len, const char *const *lits, const size_t *lens,
                     const unsigned char *fold, int n, unsigned char *found);

#endif
