/* The BM25 tokenizer (tokenize.h). The index writer and the query side call the same function, so a word is
 * found exactly when it was indexed under the same term. */
#include "rag/tokenize.h"

#include <stdint.h>
#include <string.h>

/* Short English function words: they match nearly every chunk, so they only add noise to BM25 scores. */
static const char *const STOP[] = {
    "a",    "about", "after", "all",     "also",  "am",    "an",    "and",    "any",   "are",   "as",
    "at",   "be",    "been",  "before",  "being", "but",   "by",    "can",    "could", "did",   "do",
    "does", "doing", "for",   "from",    "had",   "has",   "have",  "having", "he",    "her",   "here",
    "him",  "his",   "how",   "i",       "if",    "in",    "into",  "is",     "it",    "its",   "itself",
    "just", "me",    "more",  "most",    "my",    "no",    "nor",   "not",    "of",    "off",   "on",
    "once", "only",  "or",    "other",   "our",   "out",   "over",  "own",    "same",  "she",   "should",
    "so",   "some",  "such",  "than",    "that",  "the",   "their", "them",   "then",  "there", "these",
    "they", "this",  "those", "through", "to",    "too",   "under", "until",  "up",    "very",  "was",
    "we",   "were",  "what",  "when",    "where", "which", "while", "who",    "whom",  "why",   "will",
    "with", "would", "you",   "your",    "yours",
};

static int is_stop(const char *t, size_t n)
{
    size_t lo = 0, hi = sizeof(STOP) / sizeof(STOP[0]);
    while (lo < hi) { /* STOP is sorted */
        size_t mid = (lo + hi) / 2;
        int c = strncmp(STOP[mid], t, n);
        if (c == 0)
            c = STOP[mid][n] == '\0' ? 0 : 1;
        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int ends(const char *t, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && memcmp(t + n - m, suffix, m) == 0;
}

static int vowel(char c)
{
    return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
}

/* A doubled final consonant left by -ing/-ed (runn, stopp) loses one, except l, s and z (call, pass, buzz).
 */
static size_t undouble(const char *t, size_t n)
{
    if (n >= 4 && t[n - 1] == t[n - 2] && !vowel(t[n - 1]) && t[n - 1] != 'l' && t[n - 1] != 's' &&
        t[n - 1] != 'z' && t[n - 1] >= 'a' && t[n - 1] <= 'z')
        return n - 1;
    return n;
}

/* Light English stemmer (on lower-case ASCII words only): plural, -ing, -ed, final e; a stem keeps at least
 * three letters. It conflates the forms a question and a document tend to use (caches, caching, cached ->
 * cach); it is no Porter stemmer and does not try to be. */
static size_t stem(char *t, size_t n)
{
    if (ends(t, n, "ies") && n > 4) {
        t[n - 3] = 'y';
        n -= 2;
    } else if (ends(t, n, "sses")) {
        n -= 2;
    } else if (n > 3 && t[n - 1] == 's' && !ends(t, n, "ss") && !ends(t, n, "us") && !ends(t, n, "is")) {
        n -= 1;
    }
    if (ends(t, n, "ing") && n >= 6) {
        n = undouble(t, n - 3);
    } else if (ends(t, n, "ed") && n >= 5) {
        n = undouble(t, n - 2);
    }
    if (n > 3 && t[n - 1] == 'e')
        n -= 1;
    return n;
}

static int word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

size_t sl_rag_tokenize(const char *text, size_t len, sl_rag_term_fn fn, void *arg)
{
    char t[SL_RAG_TERM_MAX + 1];
    size_t count = 0, i = 0;
    while (i < len) {
        while (i < len && !word_byte((unsigned char)text[i]))
            i++;
        size_t start = i;
        int ascii = 1;
        while (i < len && word_byte((unsigned char)text[i])) {
            if ((unsigned char)text[i] >= 0x80)
                ascii = 0;
            i++;
        }
        size_t n = i - start;
        if (n < 2 || n > SL_RAG_TERM_MAX)
            continue;
        for (size_t j = 0; j < n; j++) {
            char c = text[start + j];
            t[j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        if (is_stop(t, n))
            continue;
        if (ascii)
            n = stem(t, n);
        fn(t, n, arg);
        count++;
    }
    return count;
}
