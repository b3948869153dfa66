/* utf8.h - UTF-8 helpers for incremental detokenisation. */
#ifndef CORRAL_UTF8_H
#define CORRAL_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the longest prefix of s[0..n) that ends on a character boundary:
 * a trailing sequence that is an incomplete (but so far valid) multi-byte
 * character is left out, so the caller can hold it back until the next bytes
 * arrive. Invalid bytes are not held back (they cannot become valid). */
size_t utf8_complete_prefix(const char *s, size_t n);

/* true if s[0..n) is entirely valid UTF-8. */
bool utf8_valid(const char *s, size_t n);

#endif
