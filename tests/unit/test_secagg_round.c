/* The secure-aggregation drivers without sockets: server/secagg_round.h and client/secagg_site.h
 * run whole rounds in memory (the server's sends land in an outbox that is handed to the sites),
 * with dropouts at each phase, impersonation and out-of-phase messages, and a round below t. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client/secagg_site.h"
#include "server/secagg_round.h"

#define N 7
#define M 257

typedef struct outbox {
    int count;
    uint32_t id[4 * N];
    char type[4 * N][24];
    secagg_buf_t msg[4 * N];
} outbox_t;

static void collect(void *ctx, uint32_t id, const char *type, const uint8_t *data, size_t len)
{
    outbox_t *o = ctx;
    o->id[o->count] = id;
    strcpy(o->type[o->count], type);
    o->msg[o->count].data = malloc(len);
    memcpy(o->msg[o->count].data, data, len);
    o->msg[o->count].len = len;
    o->count++;
}

static void outbox_clear(outbox_t *o)
{
    for (int i = 0; i < o->count; i++)
        secagg_buf_free(&o->msg[i]);
    o->count = 0;
}

static void test_info_round_trip(void **state)
{
    (void)state;
    uint32_t ids[N] = {9, 3, 4, 12, 5, 6, 7};
    secagg_round_config_t cfg = {.plus = 1, .neighbours = 4, .bits = 24, .clip = 2.5};
    secagg_round_t *r;
    err_t e;
    assert_int_equal(secagg_round_new(&cfg, secagg_round_id(3, 17, 2), 42, ids, N, M, &r, &e), 0);
    json_t *info = secagg_round_info(r, 12);
    secagg_params_t p;
    uint32_t *got, self;
    double clip, f;
    assert_int_equal(secagg_site_parse(info, &p, &got, &self, &clip, &f, &e), 0);
    assert_int_equal(self, 12);
    assert_int_equal(p.n, N);
    assert_int_equal(p.m, M);
    assert_int_equal(p.bits, 24);
    assert_int_equal(p.k, 4);
    assert_true(p.t > N / 2);
    assert_true(p.round_id == secagg_round_id(3, 17, 2));
    assert_true(clip == 2.5);
    assert_true(f == secagg_choose_scale(N, 2.5, 24));
    uint8_t seed[32];
    secagg_round_graph_seed(42, p.round_id, seed);
    assert_memory_equal(seed, p.graph_seed, 32);
    free(got);
    /* a site not in the list, and a broken object, are refused */
    json_object_set_new(info, "self", json_integer(99));
    assert_int_equal(secagg_site_parse(info, &p, &got, &self, &clip, &f, &e), FN_EPROTO);
    json_object_set_new(info, "self", json_integer(12));
    json_object_set_new(info, "graph_seed", json_string("zz"));
    assert_int_equal(secagg_site_parse(info, &p, &got, &self, &clip, &f, &e), FN_EPROTO);
    json_decref(info);
    secagg_round_free(r);
    /* ids are distinct per run, round and attempt */
    assert_true(secagg_round_id(1, 2, 0) != secagg_round_id(1, 2, 1));
    assert_true(secagg_round_id(1, 2, 0) != secagg_round_id(1, 3, 0));
    assert_true(secagg_round_id(1, 2, 0) != secagg_round_id(2, 2, 0));
}

/* Runs one round; drop[i] = the phase after which site i stops (0: never answers; 4: never
 * drops). Returns the close status of the last phase run; fills sum and n_summed on success. */
static int run_round(int plus, const int drop[N], float *sum, uint32_t *n_summed, float inputs[N][M])
{
    uint32_t ids[N];
    secagg_site_t *site[N] = {0};
    secagg_round_config_t cfg = {.plus = plus, .neighbours = plus ? 4 : 0, .threshold = 4, .bits = 32, .clip = 1.0};
    for (int i = 0; i < N; i++) {
        ids[i] = (uint32_t)(2 * i + 1);
        for (int j = 0; j < M; j++)
            inputs[i][j] = (float)(0.01 * sin(i * 7.0 + j)); /* norm below the clip */
    }
    secagg_round_t *r;
    err_t e;
    assert_int_equal(secagg_round_new(&cfg, 77, 5, ids, N, M, &r, &e), 0);
    outbox_t out = {0};
    for (int i = 0; i < N; i++) {
        if (drop[i] == 0)
            continue;
        json_t *info = secagg_round_info(r, ids[i]);
        secagg_buf_t adv;
        assert_int_equal(secagg_site_begin(info, inputs[i], M, &site[i], &adv, &e), 0);
        json_decref(info);
        /* wrong type, and another site's id, are refused without harm */
        assert_int_equal(secagg_round_add(r, ids[i], "sa_masked", adv.data, adv.len, &e), FN_EPROTO);
        assert_int_equal(secagg_round_add(r, ids[(i + 1) % N], "sa_advert", adv.data, adv.len, &e), FN_EPROTO);
        assert_true(secagg_round_expects(r, ids[i]));
        assert_int_equal(secagg_round_add(r, ids[i], "sa_advert", adv.data, adv.len, &e), 0);
        assert_false(secagg_round_expects(r, ids[i]));
        assert_int_equal(secagg_round_add(r, ids[i], "sa_advert", adv.data, adv.len, &e), FN_EPROTO); /* duplicate */
        secagg_buf_free(&adv);
    }
    int rc = 0;
    for (int phase = 0; phase < 4; phase++) {
        outbox_clear(&out);
        rc = secagg_round_close(r, collect, &out, sum, n_summed, &e);
        if (rc < 0)
            print_message("round closed at phase %d: %s\n", phase, e.msg);
        if (rc < 0 || phase == 3)
            break;
        for (int k = 0; k < out.count; k++) {
            int i = (int)(out.id[k] - 1) / 2;
            if (drop[i] <= phase + 1) /* stopped after the phase it last answered */
                continue;
            const char *type;
            secagg_buf_t reply;
            assert_int_equal(
                secagg_site_step(site[i], out.type[k], out.msg[k].data, out.msg[k].len, &type, &reply, &e), 0);
            assert_int_equal(secagg_round_add(r, ids[i], type, reply.data, reply.len, &e), 0);
            secagg_buf_free(&reply);
        }
    }
    outbox_clear(&out);
    for (int i = 0; i < N; i++)
        secagg_site_free(site[i]);
    if (rc == 0) {
        assert_int_equal(secagg_round_phase(r), SECAGG_PHASE_DONE);
        assert_int_equal(secagg_round_survivors(r, 3), *n_summed);
    }
    secagg_round_free(r);
    return rc;
}

static void check_dropouts(int plus, const int drop[N], uint32_t want_n)
{
    static float inputs[N][M];
    float sum[M];
    uint32_t n = 0;
    assert_int_equal(run_round(plus, drop, sum, &n, inputs), 0);
    /* every site that sent its masked input counts (a self mask is rebuilt when it left after) */
    assert_int_equal(n, want_n);
    double bound = N / secagg_choose_scale(N, 1.0, 32) + 1e-7; /* plus float32 rounding */
    for (int j = 0; j < M; j++) {
        double want = 0;
        for (int i = 0; i < N; i++)
            if (drop[i] >= 3)
                want += inputs[i][j];
        assert_true(fabs(sum[j] - want) <= bound);
    }
}

static void test_dropouts_secagg(void **state)
{
    (void)state;
    /* site 0 never advertises, site 1 stops after its shares, site 2 after its masked input */
    const int drop[N] = {0, 2, 3, 4, 4, 4, 4};
    check_dropouts(0, drop, 5);
}

static void test_dropouts_secagg_plus(void **state)
{
    (void)state;
    /* k = 4: neighbourhoods of 5 with t_nb = 4, so each survives one dropout */
    const int after_shares[N] = {4, 2, 4, 4, 4, 4, 4}, after_masked[N] = {4, 4, 4, 4, 3, 4, 4};
    check_dropouts(1, after_shares, 6);
    check_dropouts(1, after_masked, 7);
}

static void test_below_threshold_aborts(void **state)
{
    (void)state;
    /* t = 4 of 7: three sites gone before sharing keys leave 4, a fourth leaves 3 */
    int drop[N] = {4, 4, 4, 1, 1, 1, 1};
    static float inputs[N][M];
    float sum[M];
    uint32_t n = 0;
    assert_int_equal(run_round(0, drop, sum, &n, inputs), FN_ESTATE);
}


/* Issue 12: site `garbler` sends share ciphertexts that cannot authenticate. Attempts run as
 * server_secagg.c runs them: honest sites accuse it (sa_accuse) instead of aborting silently, and
 * between attempts the dispute-pair rule leaves the first accuser and the garbler out. Returns
 * the attempt (1-based) that committed, 0 when 8 attempts all aborted (what happened before:
 * every attempt aborted and the run failed). */
static int garbled_round(int plus, int garbler, float *sum, uint32_t *n_summed, uint32_t *excl, uint32_t *n_excl)
{
    static float inputs[N][M];
    secagg_round_config_t cfg = {.plus = plus, .neighbours = plus ? 4 : 0, .threshold = 4, .bits = 32, .clip = 1.0};
    for (int i = 0; i < N; i++)
        for (int j = 0; j < M; j++)
            inputs[i][j] = (float)(0.01 * cos(i * 5.0 + j));
    *n_excl = 0;
    for (int attempt = 0; attempt < 8; attempt++) {
        uint32_t ids[N], n = 0;
        for (int i = 0; i < N; i++) {
            uint32_t id = (uint32_t)(2 * i + 1), out = 0;
            for (uint32_t k = 0; k < *n_excl; k++)
                out |= excl[k] == id;
            if (!out)
                ids[n++] = id;
        }
        secagg_round_t *r;
        secagg_site_t *site[N] = {0};
        err_t e;
        assert_int_equal(secagg_round_new(&cfg, secagg_round_id(1, 1, attempt), 5, ids, n, M, &r, &e), 0);
        for (uint32_t j = 0; j < n; j++) {
            int i = (int)(ids[j] - 1) / 2;
            json_t *info = secagg_round_info(r, ids[j]);
            secagg_buf_t adv;
            assert_int_equal(secagg_site_begin(info, inputs[i], M, &site[i], &adv, &e), 0);
            json_decref(info);
            assert_int_equal(secagg_round_add(r, ids[j], "sa_advert", adv.data, adv.len, &e), 0);
            secagg_buf_free(&adv);
        }
        outbox_t out = {0};
        int rc = 0, accusations = 0;
        for (int phase = 0; phase < 4; phase++) {
            outbox_clear(&out);
            rc = secagg_round_close(r, collect, &out, sum, n_summed, &e);
            if (rc < 0 || phase == 3)
                break;
            for (int k = 0; k < out.count; k++) {
                int i = (int)(out.id[k] - 1) / 2;
                const char *type = NULL;
                secagg_buf_t reply = {0};
                int src = secagg_site_step(site[i], out.type[k], out.msg[k].data, out.msg[k].len, &type, &reply, &e);
                if (src == FN_EAUTH) { /* an honest site whose relay held the garbage */
                    assert_int_equal(phase, 1);
                    if (type) /* (before issue 12 it aborted silently) */
                        assert_string_equal(type, "sa_accuse");
                    accusations += type != NULL;
                } else {
                    assert_int_equal(src, 0);
                }
                if (i == garbler && type && strcmp(type, "sa_shares") == 0) /* every ciphertext: one bit off */
                    for (size_t off = SECAGG_HEADER_LEN + 4; off < reply.len;
                         off += 4 + SECAGG_NONCE_LEN + SECAGG_CT_LEN)
                        reply.data[off + 4 + SECAGG_NONCE_LEN + 7] ^= 0x20;
                if (type)
                    assert_int_equal(secagg_round_add(r, out.id[k], type, reply.data, reply.len, &e), 0);
                secagg_buf_free(&reply);
            }
            if (phase == 1 && accusations) /* accusers are not waited for: the phase may close at once */
                for (uint32_t j = 0; j < n; j++)
                    assert_false(secagg_round_expects(r, ids[j]));
        }
        outbox_clear(&out);
        for (int i = 0; i < N; i++)
            secagg_site_free(site[i]);
        const uint32_t *pairs;
        uint32_t np = secagg_round_accusations(r, &pairs);
        assert_int_equal(np, (uint32_t)accusations);
        for (uint32_t k = 0; k < np; k++)
            assert_int_equal(pairs[2 * k + 1], 2 * garbler + 1); /* only the garbler is accused */
        if (rc == 0) {
            secagg_round_free(r);
            return attempt + 1;
        }
        print_message("attempt %d aborted: %s (%u accusations)\n", attempt + 1, e.msg, np);
        secagg_round_dispute_pairs(pairs, np, excl, n_excl, N);
        secagg_round_free(r);
    }
    return 0;
}

static void check_garbled(int plus)
{
    static float inputs[N][M];
    float sum[M];
    uint32_t n = 0, excl[N], n_excl = 0;
    const int garbler = 3;
    assert_int_equal(garbled_round(plus, garbler, sum, &n, excl, &n_excl), 2);
    /* the garbler and one accuser sat out; the other five honest sites were summed */
    assert_int_equal(n_excl, 2);
    const uint32_t gid = (uint32_t)(2 * garbler + 1);
    assert_true(excl[0] != gid && excl[1] == gid);
    assert_int_equal(n, N - 2);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < M; j++)
            inputs[i][j] = (float)(0.01 * cos(i * 5.0 + j));
    double bound = N / secagg_choose_scale(N - 2, 1.0, 32) + 1e-6;
    for (int j = 0; j < M; j++) {
        double want = 0;
        for (int i = 0; i < N; i++)
            if ((uint32_t)(2 * i + 1) != excl[0] && (uint32_t)(2 * i + 1) != excl[1])
                want += inputs[i][j];
        assert_true(fabs(sum[j] - want) <= bound);
    }
}

static void test_garbage_shares_secagg(void **state)
{
    (void)state;
    check_garbled(0);
}

static void test_garbage_shares_secagg_plus(void **state)
{
    (void)state;
    check_garbled(1);
}

/* False accusations cost the accuser its place too: one liar accusing everyone removes one honest
 * site; accusations touching an excluded site are moot. */
static void test_dispute_pairs(void **state)
{
    (void)state;
    uint32_t excl[16], n = 0;
    /* liar 9 accuses 1, 3, 5, 7; honest 3 and 5 accuse garbler 11 */
    const uint32_t pairs[] = {9, 1, 9, 3, 9, 5, 9, 7, 3, 11, 5, 11};
    assert_int_equal(secagg_round_dispute_pairs(pairs, 6, excl, &n, 16), 2);
    assert_int_equal(n, 4);
    assert_int_equal(excl[0], 9);
    assert_int_equal(excl[1], 1);
    assert_int_equal(excl[2], 3);
    assert_int_equal(excl[3], 11);
    /* a later attempt: accusations involving excluded sites change nothing */
    const uint32_t more[] = {1, 13, 13, 9, 15, 15};
    assert_int_equal(secagg_round_dispute_pairs(more, 3, excl, &n, 16), 0);
    assert_int_equal(n, 4);
    /* the cap is respected */
    n = 0;
    assert_int_equal(secagg_round_dispute_pairs(pairs + 8, 2, excl, &n, 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info_round_trip),
        cmocka_unit_test(test_dropouts_secagg),
        cmocka_unit_test(test_dropouts_secagg_plus),
        cmocka_unit_test(test_below_threshold_aborts),
        cmocka_unit_test(test_garbage_shares_secagg),
        cmocka_unit_test(test_garbage_shares_secagg_plus),
        cmocka_unit_test(test_dispute_pairs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
