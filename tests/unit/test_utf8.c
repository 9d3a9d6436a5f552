/* UTF-8 well-formedness (core/common/utf8.c). */
#include <string.h>

#include "common/utf8.h"
#include "test.h"

static int valid(const char *s, size_t len)
{
    return sl_utf8_valid(s, len, NULL);
}

static long bad_at(const char *s, size_t len)
{
    size_t bad = (size_t)-1;
    if (sl_utf8_valid(s, len, &bad))
        return -1;
    return (long)bad;
}

static void test_valid(void)
{
    CHECK(valid("", 0));
    CHECK(valid("plain ascii, longer than one word of eight bytes", 48));
    CHECK(valid("\x00", 1));                              /* U+0000 is a character */
    CHECK(valid("\xc2\x80 \xdf\xbf", 5));                 /* 2-byte bounds */
    CHECK(valid("\xe0\xa0\x80 \xef\xbf\xbf", 7));         /* 3-byte bounds */
    CHECK(valid("\xed\x9f\xbf \xee\x80\x80", 7));         /* around the surrogates */
    CHECK(valid("\xf0\x90\x80\x80 \xf4\x8f\xbf\xbf", 9)); /* 4-byte bounds, U+10FFFF */
    const char *mixed = "Grüße, 世界, emoji \xf0\x9f\x98\x80 and more ASCII after it";
    CHECK(valid(mixed, strlen(mixed)));
}

static void test_invalid(void)
{
    CHECK_INT(bad_at("\x80", 1), 0);              /* lone continuation byte */
    CHECK_INT(bad_at("abc\xc0\xaf", 5), 3);       /* overlong '/' */
    CHECK_INT(bad_at("abcdefgh\xc1\xbf", 10), 8); /* overlong, after a whole ASCII word */
    CHECK_INT(bad_at("\xe0\x9f\xbf", 3), 0);      /* overlong 3-byte */
    CHECK_INT(bad_at("x\xed\xa0\x80", 4), 1);     /* surrogate U+D800 */
    CHECK_INT(bad_at("\xf0\x8f\xbf\xbf", 4), 0);  /* overlong 4-byte */
    CHECK_INT(bad_at("\xf4\x90\x80\x80", 4), 0);  /* past U+10FFFF */
    CHECK_INT(bad_at("\xf5\x80\x80\x80", 4), 0);  /* lead byte never used */
    CHECK_INT(bad_at("\xff", 1), 0);
    CHECK_INT(bad_at("ok \xe2\x82", 5), 3); /* cut short at the end */
    CHECK_INT(bad_at("\xe2\x82 x", 4), 0);  /* continuation missing */
    CHECK_INT(bad_at("\xc3\xa9\xc3", 3), 2);
    CHECK(valid("\xc3\xa9\xc3", 2)); /* the length is what counts, not a NUL */
}

int main(void)
{
    test_valid();
    test_invalid();
    return sl_test_done();
}
