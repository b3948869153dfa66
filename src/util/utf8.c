/* utf8.c - UTF-8 boundaries for incremental detokenisation.
 *
 * A token's bytes may end in the middle of a multi-byte character (byte-level
 * BPE vocabularies split emoji and CJK across tokens). The streamer sends only
 * the complete prefix and holds the rest back until the next token arrives. */
#include "util/utf8.h"

/* Length of the sequence a lead byte announces; 0 for a continuation or an
 * invalid lead byte. */
static int utf8__seq_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

size_t utf8_complete_prefix(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    /* Look back at most 3 bytes for the lead byte of the last sequence. */
    size_t back = 0;
    while (back < 3 && back < n && (u[n - 1 - back] & 0xC0) == 0x80) back++;
    if (back == n) return n; /* only continuation bytes: invalid, do not hold */
    size_t lead = n - 1 - back;
    int want = utf8__seq_len(u[lead]);
    if (want == 0) return n;             /* invalid lead: cannot complete */
    if ((size_t)want > back + 1) return lead; /* incomplete: hold it back */
    return n;
}

bool utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int len = utf8__seq_len(u[i]);
        if (len == 0 || i + (size_t)len > n) return false;
        for (int k = 1; k < len; k++)
            if ((u[i + k] & 0xC0) != 0x80) return false;
        if (len == 3) {
            if (u[i] == 0xE0 && u[i + 1] < 0xA0) return false;  /* overlong */
            if (u[i] == 0xED && u[i + 1] >= 0xA0) return false; /* surrogate */
        } else if (len == 4) {
            if (u[i] == 0xF0 && u[i + 1] < 0x90) return false;  /* overlong */
            if (u[i] == 0xF4 && u[i + 1] >= 0x90) return false; /* > U+10FFFF */
        }
        i += (size_t)len;
    }
    return true;
}
