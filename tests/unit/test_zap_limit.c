/* The log limit on refused peers (server/zap.h, issue 12): an unknown or revoked key refused in a
 * loop gets one full line, then one summary with the count at most every interval; new keys past
 * the per-interval limit are counted together; a full table reports the key it evicts; a forced
 * flush (shutdown) reports every count. Time is passed in, so nothing here waits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "server/zap.h"

typedef struct seen {
    int lines;
    char key[64];
    long count, keys, total;
} seen_t;

static void report(void *arg, const char *key, long count, long keys, double seconds)
{
    seen_t *s = arg;
    assert_true(seconds >= 0);
    s->lines++;
    snprintf(s->key, sizeof s->key, "%s", key ? key : "(others)");
    s->count = count;
    s->keys = keys;
    s->total += count;
}

static void test_one_key_in_a_loop(void **state)
{
    (void)state;
    zap_limit_t l;
    seen_t s = {0};
    zap_limit_init(&l, 60, report, &s);
    assert_int_equal(zap_limit_note(&l, "key A", 100.0), 1); /* the first refusal: logged */
    int logged = 0;
    for (int i = 1; i <= 1000; i++) /* 1000 more within 50 s: counted, no line */
        logged += zap_limit_note(&l, "key A", 100.0 + i * 0.05);
    assert_int_equal(logged, 0);
    assert_int_equal(s.lines, 0);
    zap_limit_flush(&l, 159.0, 0); /* not yet an interval since the first line */
    assert_int_equal(s.lines, 0);
    zap_limit_flush(&l, 160.0, 0);
    assert_int_equal(s.lines, 1);
    assert_string_equal(s.key, "key A");
    assert_int_equal(s.count, 1000);
    /* Refusals go on: the next summary comes an interval after the last one, with its count. */
    assert_int_equal(zap_limit_note(&l, "key A", 170.0), 0);
    assert_int_equal(zap_limit_note(&l, "key A", 200.0), 0);
    zap_limit_flush(&l, 219.0, 0);
    assert_int_equal(s.lines, 1);
    assert_int_equal(zap_limit_note(&l, "key A", 220.5), 0); /* the due summary is reported first */
    assert_int_equal(s.lines, 2);
    assert_int_equal(s.count, 2);
    /* Quiet for an interval with nothing pending: logged in full again. */
    zap_limit_flush(&l, 400.0, 0);
    assert_int_equal(s.count, 1);
    assert_int_equal(zap_limit_note(&l, "key A", 500.0), 1);
    /* Another key is limited on its own. */
    assert_int_equal(zap_limit_note(&l, "key B", 500.1), 1);
    assert_int_equal(zap_limit_note(&l, "key B", 500.2), 0);
    assert_int_equal(zap_limit_note(&l, "key A", 500.3), 0);
    zap_limit_flush(&l, 500.4, 1); /* shutdown: every count, due or not */
    assert_int_equal(s.total, 1000 + 2 + 1 + 1 + 1);
}

static void test_fresh_keys_are_capped(void **state)
{
    (void)state;
    zap_limit_t l;
    seen_t s = {0};
    zap_limit_init(&l, 60, report, &s);
    int logged = 0;
    char key[32];
    for (int i = 0; i < 500; i++) { /* a fresh key every time, as a connection flood can */
        snprintf(key, sizeof key, "fresh %d", i);
        logged += zap_limit_note(&l, key, 10.0 + i * 0.01);
    }
    assert_int_equal(logged, ZAP_LIMIT_NEW_KEYS);
    assert_int_equal(s.lines, 0);
    zap_limit_flush(&l, 20.0, 1);
    assert_int_equal(s.lines, 1);
    assert_string_equal(s.key, "(others)");
    assert_int_equal(s.count, 500 - ZAP_LIMIT_NEW_KEYS);
    assert_int_equal(s.keys, 500 - ZAP_LIMIT_NEW_KEYS);
    /* The next interval logs new keys again. */
    assert_int_equal(zap_limit_note(&l, "fresh again", 80.0), 1);
}

static void test_full_table_reports_what_it_evicts(void **state)
{
    (void)state;
    zap_limit_t l;
    seen_t s = {0};
    zap_limit_init(&l, 60, report, &s);
    char key[32];
    /* ZAP_LIMIT_KEYS keys, over several intervals (the new-key limit is per interval). */
    double t = 0;
    for (int i = 0; i < ZAP_LIMIT_KEYS; i++) {
        t += i % ZAP_LIMIT_NEW_KEYS == 0 ? 61 : 0.01;
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(zap_limit_note(&l, key, t), 1);
    }
    /* Later: k0 refused twice (logged again after its quiet interval, then counted), then every
     * other key, so that k0 is the least recently refused, with a count not yet due. */
    t = 1000;
    assert_int_equal(zap_limit_note(&l, "k0", t), 1);
    assert_int_equal(zap_limit_note(&l, "k0", t + 0.001), 0);
    for (int i = 1; i < ZAP_LIMIT_KEYS; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(zap_limit_note(&l, key, t + 0.01), 1);
    }
    assert_int_equal(s.lines, 0);
    /* A new key takes k0's place: k0's count is reported first. */
    assert_int_equal(zap_limit_note(&l, "new", t + 0.02), 1);
    assert_int_equal(s.lines, 1);
    assert_string_equal(s.key, "k0");
    assert_int_equal(s.count, 1);
    /* k0 is new to the table again (logged in full); k1 still tracked (counted). */
    assert_int_equal(zap_limit_note(&l, "k1", t + 0.03), 0);
    assert_int_equal(zap_limit_note(&l, "k0", t + 0.04), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_key_in_a_loop),
        cmocka_unit_test(test_fresh_keys_are_capped),
        cmocka_unit_test(test_full_table_reports_what_it_evicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
