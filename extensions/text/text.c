/*
 * text.c - the "text" sqlwasm module: string distances and phonetic and
 * fuzzy-matching functions, and table functions that split texts.
 *
 * All functions take text (msgpack str) arguments and work on Unicode code
 * points: the UTF-8 input is decoded first, and invalid UTF-8 (overlong
 * forms, surrogates, values above U+10FFFF, truncated or stray bytes) is an
 * error naming the argument and the byte offset.
 *
 *   text_levenshtein(a, b)          insertions, deletions, substitutions
 *   text_damerau_levenshtein(a, b)  the same plus transpositions of adjacent
 *                                   characters, UNRESTRICTED: substrings may
 *                                   be edited after they are transposed
 *                                   ('CA' -> 'ABC' is 2: CA -> AC -> ABC),
 *                                   unlike the "optimal string alignment"
 *                                   variant (3); refused when the product of
 *                                   the lengths exceeds 10^8
 *   text_jaro_winkler(a, b)         similarity in [0, 1]
 *   text_soundex(s)                 American Soundex of the ASCII letters
 *   text_trigram_similarity(a, b)   pg_trgm-style trigram similarity
 *   text_tokens(text)               table: the words of a text (token,
 *                                   position, start, end)
 *   text_ngrams(text, n)            table: the n-grams of code points
 *                                   (ngram, position)
 *
 * Build: python -m ziglang cc -target wasm32-wasi -mexec-model=reactor -O2 -s -Wl,-z,stack-size=262144 -Wl,--export=__stack_pointer
 *        -I extensions/sdk extensions/text/text.c -o text.wasm
 */
#include "sqlwasm.h"

/* text_damerau_levenshtein refuses inputs whose lengths (in code points)
 * multiply to more than this: its time is proportional to the product. */
#define DAMERAU_MAX_CELLS 100000000ull

/* ------------------------------------------------------------------------
 * Arguments: text decoded to code points
 * ------------------------------------------------------------------------ */

typedef struct {
    uint32_t *cp;   /* code points (arena memory) */
    uint32_t count; /* number of code points */
} text_arg;

/* Decode n bytes of UTF-8 into out (room for n code points). Returns the
 * number of code points, or -1 and the offset of the first invalid sequence
 * in *bad. */
static int64_t decode_utf8(const uint8_t *s, uint32_t n, uint32_t *out, uint32_t *bad) {
    uint32_t i = 0, k = 0;
    while (i < n) {
        uint32_t c = s[i], extra, min;
        if (c < 0x80) {
            out[k++] = c;
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            extra = 1, min = 0x80, c &= 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            extra = 2, min = 0x800, c &= 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            extra = 3, min = 0x10000, c &= 0x07;
        } else {
            break; /* a continuation byte, 0xc0, 0xc1 or 0xf5..0xff */
        }
        if (n - i - 1 < extra) break;
        uint32_t t = 1;
        for (; t <= extra && (s[i + t] & 0xc0) == 0x80; t++) c = (c << 6) | (s[i + t] & 0x3f);
        if (t <= extra) break;
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) break;
        out[k++] = c;
        i += 1 + extra;
    }
    if (i < n) {
        *bad = i;
        return -1;
    }
    return k;
}

/* text functions take at most this many arguments */
#define MAX_TEXT_ARGS 2

/* Read an argument row of texts, one 't' in sig per argument (at most
 * MAX_TEXT_ARGS), and decode each into args. On failure stores an error
 * result in *err and returns 0. Arguments are checked in order: when the
 * row goes wrong after some texts were read, invalid UTF-8 in those is the
 * error reported. */
static int read_texts(const uint8_t *row, uint32_t len, const char *sig, text_arg *args,
                      int64_t *err) {
    sqlwasm_arg a[MAX_TEXT_ARGS];
    int ok = sqlwasm_read_args(row, len, sig, a, err);
    for (uint32_t i = 0; sig[i] != '\0' && (ok || a[i].text != NULL); i++) {
        uint32_t n = a[i].len;
        /* on wasm32 size_t has 32 bits: n * 4 must not wrap */
        args[i].cp = n <= (SIZE_MAX - 4) / sizeof(uint32_t)
                         ? (uint32_t *)sqlwasm_arena_alloc((size_t)n * sizeof(uint32_t) + 4)
                         : NULL;
        if (args[i].cp == NULL) {
            *err = sqlwasm_return_error("out of memory");
            return 0;
        }
        uint32_t bad = 0;
        int64_t decoded = decode_utf8((const uint8_t *)a[i].text, n, args[i].cp, &bad);
        if (decoded < 0) {
            *err = sqlwasm_return_errorf("argument %u is not valid UTF-8 (at byte offset %u)",
                                         i + 1, bad);
            return 0;
        }
        args[i].count = (uint32_t)decoded;
    }
    return ok;
}

static uint32_t min2(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* Order two texts so that the first is the longer one. */
static void longer_first(text_arg *a, text_arg *b) {
    if (a->count < b->count) {
        text_arg t = *a;
        *a = *b;
        *b = t;
    }
}

/* ------------------------------------------------------------------------
 * Alphabets: dense ids for the distinct code points of a text
 * ------------------------------------------------------------------------ */

#define NO_ID UINT32_MAX

typedef struct {
    uint32_t *chars; /* sorted distinct code points */
    uint32_t size;
    uint32_t *ids; /* ids[i]: id of the text's i-th code point */
} alphabet;

static int compare_u32(const void *pa, const void *pb) {
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    return (a > b) - (a < b);
}

/* Id of code point c, or NO_ID when the alphabet does not have it. */
static uint32_t alphabet_id(const alphabet *abc, uint32_t c) {
    uint32_t lo = 0, hi = abc->size;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (abc->chars[mid] < c) lo = mid + 1;
        else hi = mid;
    }
    return lo < abc->size && abc->chars[lo] == c ? lo : NO_ID;
}

/* The alphabet of a text, in arena memory; 0 when out of memory. */
static int alphabet_of(const text_arg *t, alphabet *abc) {
    abc->chars = (uint32_t *)sqlwasm_arena_alloc((size_t)t->count * sizeof(uint32_t) + 4);
    abc->ids = (uint32_t *)sqlwasm_arena_alloc((size_t)t->count * sizeof(uint32_t) + 4);
    if (abc->chars == NULL || abc->ids == NULL) return 0;
    memcpy(abc->chars, t->cp, (size_t)t->count * sizeof(uint32_t));
    qsort(abc->chars, t->count, sizeof(uint32_t), compare_u32);
    abc->size = 0;
    for (uint32_t i = 0; i < t->count; i++)
        if (i == 0 || abc->chars[i] != abc->chars[abc->size - 1])
            abc->chars[abc->size++] = abc->chars[i];
    for (uint32_t i = 0; i < t->count; i++) abc->ids[i] = alphabet_id(abc, t->cp[i]);
    return 1;
}

/* ------------------------------------------------------------------------
 * text_levenshtein(a, b) -> integer
 *
 * Myers' bit-parallel algorithm in Hyyro's block form. With D[i][j] the
 * distance between the first i characters of the longer text P and the
 * first j of the shorter text T, a column of D is held as its vertical
 * differences D[i][j] - D[i-1][j] in {-1, 0, +1}: bit i of `plus` / `minus`
 * is set for +1 / -1. The rows of P are taken 64 at a time; for each such
 * block we sweep over T, advancing the block one column per character and
 * handing the horizontal difference at the block's last row down to the
 * next block through delta[j]. Memory is O(min(n, m)) (delta, T's
 * alphabet), time O(n * m / 64). The common prefix and suffix are stripped
 * first, which never changes the distance.
 * ------------------------------------------------------------------------ */

/* Advance one block of vertical differences by a column whose character
 * matches the block's rows in `match`, given the horizontal difference
 * h_in (-1, 0, +1) entering above the block; returns the one leaving at
 * the row with bit `last`. */
static int8_t advance_block(uint64_t *plus, uint64_t *minus, uint64_t match, int8_t h_in,
                            uint64_t last) {
    uint64_t pv = *plus, mv = *minus;
    uint64_t xv = match | mv;
    if (h_in < 0) match |= 1;
    uint64_t xh = (((match & pv) + pv) ^ pv) | match;
    uint64_t ph = mv | ~(xh | pv); /* horizontal +1 */
    uint64_t mh = pv & xh;         /* horizontal -1 */
    int8_t h_out = (ph & last) ? 1 : (mh & last) ? -1 : 0;
    ph <<= 1;
    mh <<= 1;
    if (h_in < 0) mh |= 1;
    else if (h_in > 0) ph |= 1;
    *plus = mh | ~(xv | ph);
    *minus = ph & xv;
    return h_out;
}

SQLWASM_EXPORT(levenshtein)
int64_t levenshtein(const uint8_t *row, uint32_t len) {
    text_arg t[2];
    int64_t err;
    if (!read_texts(row, len, "tt", t, &err)) return err;
    longer_first(&t[0], &t[1]);
    text_arg *pattern = &t[0], *text = &t[1]; /* P: rows, T: columns */
    while (text->count > 0 && pattern->cp[0] == text->cp[0]) {
        pattern->cp++, pattern->count--;
        text->cp++, text->count--;
    }
    while (text->count > 0 && pattern->cp[pattern->count - 1] == text->cp[text->count - 1]) {
        pattern->count--;
        text->count--;
    }
    if (text->count == 0) return sqlwasm_return_int(pattern->count);

    alphabet abc; /* of T */
    uint64_t *match = (uint64_t *)sqlwasm_arena_alloc((size_t)text->count * sizeof(uint64_t));
    int8_t *delta = (int8_t *)sqlwasm_arena_alloc(text->count);
    if (!alphabet_of(text, &abc) || match == NULL || delta == NULL)
        return sqlwasm_return_error("out of memory");
    memset(match, 0, (size_t)abc.size * sizeof(uint64_t));
    memset(delta, 1, text->count); /* above row 1: D[0][j] - D[0][j-1] = 1 */

    for (uint32_t start = 0; start < pattern->count; start += 64) {
        uint32_t rows = min2(64, pattern->count - start);
        uint32_t row_id[64];
        /* match[c]: the rows of this block holding the character with id c */
        for (uint32_t i = 0; i < rows; i++) {
            row_id[i] = alphabet_id(&abc, pattern->cp[start + i]);
            if (row_id[i] != NO_ID) match[row_id[i]] |= (uint64_t)1 << i;
        }
        uint64_t plus = ~(uint64_t)0, minus = 0; /* column 0: D[i][0] = i */
        uint64_t last = (uint64_t)1 << (rows - 1);
        for (uint32_t j = 0; j < text->count; j++)
            delta[j] = advance_block(&plus, &minus, match[abc.ids[j]], delta[j], last);
        for (uint32_t i = 0; i < rows; i++)
            if (row_id[i] != NO_ID) match[row_id[i]] = 0;
    }
    /* D[m][n] = D[m][0] + the differences along the last row */
    int64_t distance = pattern->count;
    for (uint32_t j = 0; j < text->count; j++) distance += delta[j];
    return sqlwasm_return_int(distance);
}

/* ------------------------------------------------------------------------
 * text_damerau_levenshtein(a, b) -> integer
 *
 * Unrestricted Damerau-Levenshtein distance (Lowrance and Wagner): besides
 * insertions, deletions and substitutions, two adjacent characters may be
 * transposed, and the characters between a transposed pair may still be
 * edited. With d[i][j] the distance of the prefixes a[1..i] and b[1..j]:
 *
 *   d[i][j] = min(d[i-1][j-1] + (a[i] != b[j]), d[i-1][j] + 1, d[i][j-1] + 1,
 *                 d[k-1][l-1] + (i-k-1) + 1 + (j-l-1))
 *
 * where k is the last row before i with a[k] == b[j] and l the last column
 * before j with b[l] == a[i] (the transposition term exists when both do).
 *
 * Rows d[k-1] are only ever needed for the row k of the last occurrence of
 * each character, so instead of the whole matrix we keep one saved row per
 * distinct character of b that occurs in a, plus the previous and current
 * rows: O(min(sigma, n) * m) memory, where sigma counts the distinct
 * characters. Time is O(n * m), hence the limit on n * m.
 * ------------------------------------------------------------------------ */

SQLWASM_EXPORT(damerau_levenshtein)
int64_t damerau_levenshtein(const uint8_t *row, uint32_t len) {
    text_arg t[2];
    int64_t err;
    if (!read_texts(row, len, "tt", t, &err)) return err;
    if ((uint64_t)t[0].count * t[1].count > DAMERAU_MAX_CELLS)
        return sqlwasm_return_errorf("inputs too long: %u x %u code points is more than the "
                                     "limit of %llu for the product of the lengths",
                                     t[0].count, t[1].count, DAMERAU_MAX_CELLS);
    longer_first(&t[0], &t[1]); /* the distance is symmetric; rows span b */
    const uint32_t *a = t[0].cp, *b = t[1].cp;
    uint32_t n = t[0].count, m = t[1].count;
    if (m == 0) return sqlwasm_return_int(n);

    /* Dense ids 0..sigma-1 for the distinct characters of b. */
    alphabet abc;
    if (!alphabet_of(&t[1], &abc)) return sqlwasm_return_error("out of memory");
    uint32_t sigma = abc.size;
    const uint32_t *b_id = abc.ids;

    /* last_row[c]: last row k so far with a[k] == character c (0: none);
     * saved[c]: row d[k-1] for that k. */
    uint32_t *last_row = (uint32_t *)sqlwasm_arena_alloc((size_t)sigma * sizeof(uint32_t));
    uint32_t **saved = (uint32_t **)sqlwasm_arena_alloc((size_t)sigma * sizeof(uint32_t *));
    size_t row_bytes = ((size_t)m + 1) * sizeof(uint32_t);
    uint32_t *prev = (uint32_t *)sqlwasm_arena_alloc(row_bytes); /* row i - 1 */
    uint32_t *cur = (uint32_t *)sqlwasm_arena_alloc(row_bytes);  /* row i */
    if (last_row == NULL || saved == NULL || prev == NULL || cur == NULL)
        return sqlwasm_return_error("out of memory");
    memset(last_row, 0, (size_t)sigma * sizeof(uint32_t));
    memset(saved, 0, (size_t)sigma * sizeof(uint32_t *));

    for (uint32_t j = 0; j <= m; j++) prev[j] = j;
    for (uint32_t i = 1; i <= n; i++) {
        uint32_t ai = a[i - 1];
        uint32_t last_col = 0; /* last column l < j with b[l] == a[i] */
        cur[0] = i;
        for (uint32_t j = 1; j <= m; j++) {
            uint32_t l = last_col, cost = 1;
            if (ai == b[j - 1]) {
                cost = 0;
                last_col = j;
            }
            uint32_t best = prev[j - 1] + cost;
            best = min2(best, prev[j] + 1);
            best = min2(best, cur[j - 1] + 1);
            uint32_t k = last_row[b_id[j - 1]];
            if (k > 0 && l > 0)
                best = min2(best, saved[b_id[j - 1]][l - 1] + (i - k - 1) + 1 + (j - l - 1));
            cur[j] = best;
        }
        /* Row i - 1 becomes the saved row of a[i] (if b has that character);
         * the row it replaces, or a new one, is the next current row. */
        uint32_t id = alphabet_id(&abc, ai);
        uint32_t *spare = prev;
        if (id != NO_ID) {
            spare = saved[id];
            saved[id] = prev;
            last_row[id] = i;
            if (spare == NULL) {
                spare = (uint32_t *)sqlwasm_arena_alloc(row_bytes);
                if (spare == NULL) return sqlwasm_return_error("out of memory");
            }
        }
        prev = cur;
        cur = spare;
    }
    return sqlwasm_return_int(prev[m]);
}

/* ------------------------------------------------------------------------
 * text_jaro_winkler(a, b) -> real
 *
 * Jaro similarity: characters match when equal and at most
 * max(n, m) / 2 - 1 positions apart (each character matched at most once,
 * greedily from the left); with m matches and t half the number of matched
 * characters that appear in a different order,
 *     jaro = (m / n_a + m / n_b + (m - t) / m) / 3,  0 when m = 0.
 * Winkler: when jaro > 0.7, add l * 0.1 * (1 - jaro) for a common prefix of
 * l <= 4 characters. Two empty texts are identical (1.0).
 * ------------------------------------------------------------------------ */

#define WINKLER_SCALE 0.1
#define WINKLER_MAX_PREFIX 4u
#define WINKLER_THRESHOLD 0.7

SQLWASM_EXPORT(jaro_winkler)
int64_t jaro_winkler(const uint8_t *row, uint32_t len) {
    text_arg t[2];
    int64_t err;
    if (!read_texts(row, len, "tt", t, &err)) return err;
    const uint32_t *a = t[0].cp, *b = t[1].cp;
    uint32_t na = t[0].count, nb = t[1].count;
    if (na == 0 && nb == 0) return sqlwasm_return_double(1.0);
    if (na == 0 || nb == 0) return sqlwasm_return_double(0.0);

    uint32_t longest = na > nb ? na : nb;
    uint32_t window = longest / 2 > 0 ? longest / 2 - 1 : 0;
    uint8_t *matched_a = (uint8_t *)sqlwasm_arena_alloc(na);
    uint8_t *matched_b = (uint8_t *)sqlwasm_arena_alloc(nb);
    if (matched_a == NULL || matched_b == NULL) return sqlwasm_return_error("out of memory");
    memset(matched_a, 0, na);
    memset(matched_b, 0, nb);

    /* Greedy matching from the left: a[i] takes the first unmatched equal
     * character of b in the window. The positions of each character of b
     * are queued in increasing order; windows only move right, so positions
     * left of the window are dropped for good, and a match always takes the
     * first remaining one. Near-linear time instead of n * window. */
    alphabet abc;
    if (!alphabet_of(&t[1], &abc)) return sqlwasm_return_error("out of memory");
    uint32_t *first = (uint32_t *)sqlwasm_arena_alloc(((size_t)abc.size + 1) * sizeof(uint32_t));
    uint32_t *head = (uint32_t *)sqlwasm_arena_alloc(((size_t)abc.size + 1) * sizeof(uint32_t));
    uint32_t *positions = (uint32_t *)sqlwasm_arena_alloc((size_t)nb * sizeof(uint32_t));
    if (first == NULL || head == NULL || positions == NULL)
        return sqlwasm_return_error("out of memory");
    /* positions[first[c] .. first[c + 1]): where character c occurs in b */
    memset(first, 0, ((size_t)abc.size + 1) * sizeof(uint32_t));
    for (uint32_t j = 0; j < nb; j++) first[abc.ids[j] + 1]++;
    for (uint32_t c = 0; c < abc.size; c++) first[c + 1] += first[c];
    memcpy(head, first, ((size_t)abc.size + 1) * sizeof(uint32_t));
    for (uint32_t j = 0; j < nb; j++) positions[head[abc.ids[j]]++] = j;
    memcpy(head, first, (size_t)abc.size * sizeof(uint32_t));

    uint32_t matches = 0;
    for (uint32_t i = 0; i < na; i++) {
        uint32_t c = alphabet_id(&abc, a[i]);
        if (c == NO_ID) continue;
        uint32_t lo = i > window ? i - window : 0;
        uint32_t hi = i + window + 1; /* no overflow: both counts fit a 2 GiB row */
        while (head[c] < first[c + 1] && positions[head[c]] < lo) head[c]++;
        if (head[c] < first[c + 1] && positions[head[c]] < hi) {
            matched_a[i] = matched_b[positions[head[c]++]] = 1;
            matches++;
        }
    }
    if (matches == 0) return sqlwasm_return_double(0.0);

    uint32_t out_of_order = 0;
    for (uint32_t i = 0, j = 0; i < na; i++) {
        if (!matched_a[i]) continue;
        while (!matched_b[j]) j++;
        if (a[i] != b[j]) out_of_order++;
        j++;
    }
    double m = (double)matches;
    double jaro = (m / na + m / nb + (m - out_of_order / 2.0) / m) / 3.0;
    if (!(jaro > WINKLER_THRESHOLD)) return sqlwasm_return_double(jaro);

    uint32_t prefix = 0;
    while (prefix < WINKLER_MAX_PREFIX && prefix < na && prefix < nb && a[prefix] == b[prefix])
        prefix++;
    return sqlwasm_return_double(jaro + prefix * WINKLER_SCALE * (1.0 - jaro));
}

/* ------------------------------------------------------------------------
 * text_soundex(s) -> text
 *
 * American Soundex over the ASCII letters of s (everything else, including
 * non-ASCII letters, is skipped): the first letter, upper-cased, then the
 * digits of the following letters, B F P V = 1, C G J K Q S X Z = 2,
 * D T = 3, L = 4, M N = 5, R = 6, where a digit equal to the previous one is
 * dropped (the first letter's digit included). Vowels (A E I O U Y) have no
 * digit but separate equal digits; H and W do not. Cut or padded with '0'
 * to 4 characters; '' when s has no ASCII letter.
 * ------------------------------------------------------------------------ */

/* Digit of each letter A..Z; '0' for vowels, '-' for H and W. */
/*                                   ABCDEFGHIJKLMNOPQRSTUVWXYZ */
static const char SOUNDEX_DIGITS[] = "0123012-02245501262301-202";

static int is_ascii_letter(uint32_t c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

SQLWASM_EXPORT(soundex)
int64_t soundex(const uint8_t *row, uint32_t len) {
    text_arg t[1];
    int64_t err;
    if (!read_texts(row, len, "t", t, &err)) return err;
    char code[4];
    uint32_t length = 0;
    char previous = '0'; /* digit of the last coded letter; '0' after a vowel */
    for (uint32_t i = 0; i < t[0].count && length < 4; i++) {
        uint32_t c = t[0].cp[i];
        if (!is_ascii_letter(c)) continue;
        uint32_t upper = c >= 'a' ? c - 'a' + 'A' : c;
        char digit = SOUNDEX_DIGITS[upper - 'A'];
        if (length == 0) {
            code[length++] = (char)upper;
            previous = digit == '-' ? '0' : digit;
        } else if (digit == '-') {
            /* H, W: skipped without separating */
        } else if (digit == '0') {
            previous = '0';
        } else if (digit != previous) {
            code[length++] = digit;
            previous = digit;
        }
    }
    if (length == 0) return sqlwasm_return_text("", 0);
    while (length < 4) code[length++] = '0';
    return sqlwasm_return_text(code, 4);
}

/* ------------------------------------------------------------------------
 * text_trigram_similarity(a, b) -> real
 *
 * As PostgreSQL's pg_trgm similarity(): ASCII letters are lower-cased; the
 * words are the maximal runs of alphanumeric characters (ASCII letters and
 * digits, and every code point >= 128); each word is padded with two spaces
 * before and one after, and contributes all its 3-character windows. With
 * A and B the sets of trigrams, the similarity is |A & B| / |A | B|, and 0
 * when both are empty.
 * ------------------------------------------------------------------------ */

static int is_word_char(uint32_t c) {
    return c >= 128 || is_ascii_letter(c) || (c >= '0' && c <= '9');
}

/* Three 21-bit code points in one integer (ordered like the tuples). */
static uint64_t pack_trigram(uint32_t c0, uint32_t c1, uint32_t c2) {
    return ((uint64_t)c0 << 42) | ((uint64_t)c1 << 21) | c2;
}

static int compare_u64(const void *pa, const void *pb) {
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return (a > b) - (a < b);
}

/* The sorted, distinct trigrams of a text; NULL when out of memory. */
static uint64_t *trigram_set(const text_arg *t, uint32_t *count) {
    /* A word of w characters gives w + 1 trigrams: at most 2n in all. */
    uint64_t *set = (uint64_t *)sqlwasm_arena_alloc(((size_t)t->count * 2 + 1) * sizeof(uint64_t));
    if (set == NULL) return NULL;
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->count;) {
        if (!is_word_char(t->cp[i])) {
            i++;
            continue;
        }
        /* The padded word "  w1 w2 ... wk ", read through a 3-character window. */
        uint32_t c0 = ' ', c1 = ' ';
        for (; i < t->count && is_word_char(t->cp[i]); i++) {
            uint32_t c = t->cp[i];
            if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
            set[n++] = pack_trigram(c0, c1, c);
            c0 = c1;
            c1 = c;
        }
        set[n++] = pack_trigram(c0, c1, ' ');
    }
    qsort(set, n, sizeof(uint64_t), compare_u64);
    uint32_t distinct = 0;
    for (uint32_t k = 0; k < n; k++)
        if (k == 0 || set[k] != set[distinct - 1]) set[distinct++] = set[k];
    *count = distinct;
    return set;
}

SQLWASM_EXPORT(trigram_similarity)
int64_t trigram_similarity(const uint8_t *row, uint32_t len) {
    text_arg t[2];
    int64_t err;
    if (!read_texts(row, len, "tt", t, &err)) return err;
    uint32_t na = 0, nb = 0;
    uint64_t *a = trigram_set(&t[0], &na);
    uint64_t *b = a ? trigram_set(&t[1], &nb) : NULL;
    if (b == NULL) return sqlwasm_return_error("out of memory");
    uint32_t common = 0;
    for (uint32_t i = 0, j = 0; i < na && j < nb;) {
        if (a[i] < b[j]) i++;
        else if (a[i] > b[j]) j++;
        else common++, i++, j++;
    }
    uint32_t all = na + nb - common;
    return sqlwasm_return_double(all == 0 ? 0.0 : (double)common / all);
}

/* ------------------------------------------------------------------------
 * Table functions: text_tokens(text) and text_ngrams(text, n)
 *
 * open() decodes and checks the text and keeps it in a cursor; next()
 * emits rows in batches from where the previous batch stopped. A bad
 * argument does not fail open(): the cursor keeps the error and the first
 * next() returns it, so the SQL error names the cause.
 * ------------------------------------------------------------------------ */

/* text_ngrams refuses n above this. */
#define NGRAM_MAX_N 1000

typedef struct {
    int64_t error;     /* a kept {"error": ...} result, or 0 */
    uint8_t *utf8;     /* the text's bytes */
    uint32_t *cp;      /* its code points */
    uint32_t *at;      /* at[i]: byte offset of code point i; at[count] = bytes */
    uint32_t count;    /* code points */
    uint32_t resume;   /* code point where the next batch starts */
    int64_t emitted;   /* rows emitted so far */
    uint32_t n;        /* text_ngrams: code points per n-gram */
} text_cursor;

/* A handle for a cursor that only reports `err` (a result in the arena). */
static int32_t open_failed(int64_t err) {
    text_cursor *c = (text_cursor *)calloc(1, sizeof *c);
    if (c == NULL) return -1;
    c->error = sqlwasm_result_keep(err);
    int32_t h = sqlwasm_handle_new(c);
    if (h < 0) {
        sqlwasm_result_free(c->error);
        free(c);
    }
    return h;
}

/* A handle for a cursor over the text argument a (argument number index,
 * for messages); -1 when out of memory. */
static int32_t open_text(const sqlwasm_arg *a, uint32_t index, uint32_t n) {
    uint32_t bytes = a->len;
    /* the cursor takes 9 bytes per byte of text at most (a code point and
     * its offset per byte, and the byte): on wasm32 that must not wrap */
    if (bytes > (SIZE_MAX - sizeof(text_cursor) - 8) / 9)
        return open_failed(sqlwasm_return_error("out of memory"));
    uint32_t *cp = (uint32_t *)sqlwasm_arena_alloc((size_t)bytes * sizeof(uint32_t) + 4);
    if (cp == NULL) return open_failed(sqlwasm_return_error("out of memory"));
    uint32_t bad = 0;
    int64_t decoded = decode_utf8((const uint8_t *)a->text, bytes, cp, &bad);
    if (decoded < 0)
        return open_failed(sqlwasm_return_errorf(
            "argument %u is not valid UTF-8 (at byte offset %u)", index, bad));
    uint32_t count = (uint32_t)decoded;
    size_t size = sizeof(text_cursor) + ((size_t)count * 2 + 1) * sizeof(uint32_t) + bytes;
    text_cursor *c = (text_cursor *)malloc(size);
    if (c == NULL) return open_failed(sqlwasm_return_error("out of memory"));
    memset(c, 0, sizeof *c);
    c->cp = (uint32_t *)(c + 1);
    c->at = c->cp + count;
    c->utf8 = (uint8_t *)(c->at + count + 1);
    c->count = count;
    c->n = n;
    memcpy(c->cp, cp, (size_t)count * sizeof(uint32_t));
    if (bytes) memcpy(c->utf8, a->text, bytes);
    uint32_t offset = 0;
    for (uint32_t i = 0; i < count; i++) {
        c->at[i] = offset;
        uint32_t ch = cp[i];
        offset += ch < 0x80 ? 1 : ch < 0x800 ? 2 : ch < 0x10000 ? 3 : 4;
    }
    c->at[count] = offset;
    int32_t h = sqlwasm_handle_new(c);
    if (h < 0) free(c);
    return h;
}

/* next() of a cursor that failed, or a handle that is not open: the result
 * to return, or 0 to go on. */
static int64_t cursor_problem(const text_cursor *c) {
    if (c == NULL) return sqlwasm_return_error("no such table-function handle");
    return c->error;
}

static void close_cursor(int32_t h) {
    text_cursor *c = (text_cursor *)sqlwasm_handle_release(h);
    if (c == NULL) return;
    sqlwasm_result_free(c->error);
    free(c);
}

/* Token characters: ASCII letters and digits, and every code point from
 * U+0080 up except these separators (inclusive ranges). */
static const uint32_t SEPARATORS[][2] = {
    {0x0080, 0x00bf}, /* C1 controls, no-break space, Latin-1 punctuation, symbols */
    {0x00d7, 0x00d7}, /* multiplication sign */
    {0x00f7, 0x00f7}, /* division sign */
    {0x1680, 0x1680}, /* ogham space mark */
    {0x2000, 0x206f}, /* General Punctuation: spaces, dashes, quotes, invisibles */
    {0x3000, 0x3003}, /* ideographic space, comma, full stop, ditto mark */
    {0x3008, 0x3011}, /* CJK brackets */
    {0x3014, 0x301f}, /* CJK brackets and quotation marks */
    {0xfeff, 0xfeff}, /* zero-width no-break space (byte order mark) */
    {0xff01, 0xff0f}, /* fullwidth punctuation ... */
    {0xff1a, 0xff20},
    {0xff3b, 0xff40},
    {0xff5b, 0xff65}, /* ... and halfwidth CJK punctuation */
};

static int is_token_char(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    for (size_t i = 0; i < sizeof SEPARATORS / sizeof SEPARATORS[0]; i++)
        if (c >= SEPARATORS[i][0] && c <= SEPARATORS[i][1]) return 0;
    return 1;
}

/* Write code points [from, to) of the cursor's text as a msgpack str. */
static void write_span(sqlwasm_writer *w, const text_cursor *c, uint32_t from, uint32_t to) {
    sqlwasm_write_str(w, (const char *)c->utf8 + c->at[from], c->at[to] - c->at[from]);
}

/* text_tokens(text): columns token, position, start, end. A token is a
 * maximal run of word characters (is_token_char); position is its 0-based
 * index among the tokens, start/end the code-point offsets of its first
 * character and just past its last. */
SQLWASM_EXPORT(tokens_open)
int32_t tokens_open(const uint8_t *row, uint32_t len) {
    sqlwasm_arg a[1];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "t", a, &err)) return open_failed(err);
    return open_text(&a[0], 1, 0);
}

SQLWASM_EXPORT(tokens_next)
int64_t tokens_next(int32_t h) {
    text_cursor *c = (text_cursor *)sqlwasm_handle_get(h);
    int64_t problem = cursor_problem(c);
    if (problem) return problem;
    sqlwasm_batch b;
    sqlwasm_batch_begin(&b);
    uint32_t i = c->resume;
    while (!sqlwasm_batch_full(&b)) {
        while (i < c->count && !is_token_char(c->cp[i])) i++;
        if (i == c->count) break;
        uint32_t start = i;
        while (i < c->count && is_token_char(c->cp[i])) i++;
        sqlwasm_batch_row(&b, 4);
        write_span(&b.w, c, start, i);
        sqlwasm_write_int(&b.w, c->emitted++);
        sqlwasm_write_int(&b.w, start);
        sqlwasm_write_int(&b.w, i);
    }
    c->resume = i;
    return sqlwasm_batch_finish(&b);
}

SQLWASM_EXPORT(tokens_close)
void tokens_close(int32_t h) { close_cursor(h); }

/* text_ngrams(text, n): columns ngram, position. Every run of n consecutive
 * code points, position being the offset of its first; none when the text
 * has fewer than n. n must be between 1 and NGRAM_MAX_N. */
SQLWASM_EXPORT(ngrams_open)
int32_t ngrams_open(const uint8_t *row, uint32_t len) {
    sqlwasm_arg a[2];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "ti", a, &err)) return open_failed(err);
    int64_t n = a[1].integer;
    if (n < 1 || n > NGRAM_MAX_N)
        return open_failed(sqlwasm_return_errorf("n must be between 1 and %d, got %lld",
                                                 NGRAM_MAX_N, (long long)n));
    return open_text(&a[0], 1, (uint32_t)n);
}

SQLWASM_EXPORT(ngrams_next)
int64_t ngrams_next(int32_t h) {
    text_cursor *c = (text_cursor *)sqlwasm_handle_get(h);
    int64_t problem = cursor_problem(c);
    if (problem) return problem;
    sqlwasm_batch b;
    sqlwasm_batch_begin(&b);
    uint32_t i = c->resume;
    for (; c->n <= c->count && i <= c->count - c->n && !sqlwasm_batch_full(&b); i++) {
        sqlwasm_batch_row(&b, 2);
        write_span(&b.w, c, i, i + c->n);
        sqlwasm_write_int(&b.w, i);
    }
    c->resume = i;
    return sqlwasm_batch_finish(&b);
}

SQLWASM_EXPORT(ngrams_close)
void ngrams_close(int32_t h) { close_cursor(h); }
