/* Secure aggregation costs against references measured in the same run.
 *   A: full SecAgg, n = 100, m = 1,663,370, 10% of clients drop after sharing keys (the costly
 *      case for the server): a real round through the message API; every client masks and the
 *      unmasked sum is checked exactly.
 *   B: SecAgg+, n = 1000, m = 100,000, 10% dropout: a real round likewise, with k and t_nb from
 *      secagg_plan_plus (dropout 0.1, corruption 0.05: k = 38, t_nb = 20). An abort (a
 *      neighbourhood left below its threshold) is an outcome, counted and reported, not a crash.
 *   Aborts: the share of n = 1000 rounds at 10% dropout that abort, over many graph seeds and
 *      dropout draws (secagg_can_finish, which the unit tests check against real rounds), with the
 *      old default k = 2 ceil(log2 n) = 20, t_nb = 14 and with the derived parameters.
 *   C: full SecAgg, n = 1000, m = 100,000: one representative client's work from the primitives
 *      the protocol runs (999 c-key and 999 s-key agreements, two Shamir splits at 1000 points,
 *      999 encryptions and decryptions, 1000 PRG expansions), since a real round would spend
 *      minutes on the other 999 clients' key agreements. A's client is also costed this way to
 *      show the estimate's accuracy.
 * Reference: ChaCha20-IETF keystream bytes/s (libsodium, one core, 8 KiB in L1), re-measured
 * next to each timing; "kernel / PRG" = masking kernel time / (PRG bytes needed / that rate).
 * Client times are the fastest of a few representative clients timed alone (the machine may be
 * shared); the other clients mask on two threads, untimed. Bytes per client = every message the
 * client sends and receives, against 4m (the bare masked vector). Never gates on time. */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/rng.h"
#include "crypto/secagg.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define DIE(...)                                                                                                      \
    do {                                                                                                             \
        fprintf(stderr, "bench secagg: " __VA_ARGS__);                                                               \
        fprintf(stderr, "\n");                                                                                       \
        exit(1);                                                                                                     \
    } while (0)
#define OK(call)                                                                                                     \
    do {                                                                                                             \
        int rc_ = (call);                                                                                            \
        if (rc_)                                                                                                     \
            DIE("%s failed (%d): %s", #call, rc_, e.msg);                                                            \
    } while (0)

static err_t e;

/* Inputs are a cheap function of (client, index) so no n x m block is stored. */
static inline uint32_t input(uint32_t id, uint32_t j) { return id * 2654435761u + j * 40503u; }

static double chacha_rate(void)
{
    static uint8_t buf[8192];
    uint8_t key[32] = {1}, nonce[12] = {0};
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        size_t total = 0;
        for (uint32_t ic = 0; total < ((size_t)64 << 20); ic += sizeof buf / 64, total += sizeof buf)
            crypto_stream_chacha20_ietf_xor_ic(buf, buf, sizeof buf, nonce, ic, key);
        double r = total / (now() - t0);
        if (r > best)
            best = r;
    }
    return best;
}

typedef struct round_res {
    double client_share_s, client_mask_s, kernel_s, server_unmask_s, server_sum_s, rate;
    size_t client_bytes;
    uint32_t prg_streams, summed, server_streams;
    int aborted; /* the round aborted at unmasking (a neighbourhood below its threshold) */
} round_res_t;

typedef struct work {
    secagg_client_t **cl;
    secagg_buf_t *relay;
    const uint32_t *ids;
    const uint8_t *masks_on;
    uint32_t n, m, next;
    secagg_server_t *srv;
    pthread_mutex_t lock;
    double sum_s;
} work_t;

static void *mask_worker(void *arg)
{
    work_t *w = arg;
    uint32_t *x = malloc((size_t)w->m * 4);
    for (;;) {
        pthread_mutex_lock(&w->lock);
        uint32_t i = w->next++;
        pthread_mutex_unlock(&w->lock);
        if (i >= w->n)
            break;
        if (!w->masks_on[i])
            continue;
        for (uint32_t j = 0; j < w->m; j++)
            x[j] = input(w->ids[i], j);
        secagg_buf_t out = {0};
        err_t le;
        if (secagg_client_masked_input(w->cl[i], w->relay[i].data, w->relay[i].len, x, &out, &le))
            DIE("client %u masked_input: %s", w->ids[i], le.msg);
        pthread_mutex_lock(&w->lock);
        double t0 = now();
        if (secagg_server_add_masked(w->srv, out.data, out.len, &le))
            DIE("add_masked: %s", le.msg);
        w->sum_s += now() - t0;
        pthread_mutex_unlock(&w->lock);
        secagg_buf_free(&out);
    }
    free(x);
    return NULL;
}

/* A real round: n clients, the ones flagged in drop2 vanish after sharing keys. Client 0 of the
 * survivors is timed alone; the rest mask on two threads. */
static round_res_t real_round(uint32_t n, uint32_t m, uint32_t k, uint32_t t_nb, double drop_frac, uint64_t seed,
                              uint32_t reps)
{
    round_res_t res = {0};
    rng_t r;
    rng_seed(&r, seed);
    uint32_t *ids = malloc(n * sizeof *ids);
    for (uint32_t i = 0; i < n; i++)
        ids[i] = i + 1;
    secagg_params_t p = {.round_id = seed, .n = n, .ids = ids, .m = m, .bits = 32, .k = k, .t_nb = t_nb};
    randombytes_buf(p.graph_seed, sizeof p.graph_seed);
    uint8_t *drop = calloc(n, 1), *masks_on = calloc(n, 1);
    uint32_t ndrop = (uint32_t)(drop_frac * n + 0.5);
    for (uint32_t c = 0; c < ndrop;) {
        uint32_t i = 1 + (uint32_t)rng_below(&r, n - 1); /* client 0 is the representative survivor */
        if (!drop[i]) {
            drop[i] = 1;
            c++;
        }
    }
    secagg_server_t *srv;
    OK(secagg_server_new(&p, &srv, &e));
    secagg_client_t **cl = calloc(n, sizeof *cl);
    secagg_buf_t msg = {0}, list = {0}, req = {0};
    secagg_buf_t *relay = calloc(n, sizeof *relay);
    size_t bytes0 = 0;
    for (uint32_t i = 0; i < n; i++) {
        OK(secagg_client_new(&p, ids[i], &cl[i], &msg, &e));
        if (i == 0)
            bytes0 += msg.len;
        OK(secagg_server_add_advert(srv, msg.data, msg.len, &e));
        secagg_buf_free(&msg);
    }
    OK(secagg_server_close_adverts(srv, &list, &e));
    for (uint32_t i = 0; i < n; i++) {
        secagg_buf_t own = {0};
        if (k) /* SecAgg+: each client gets its neighbourhood only */
            OK(secagg_server_advert_list_for(srv, ids[i], &own, &e));
        const secagg_buf_t *l = k ? &own : &list;
        if (i == 0)
            bytes0 += l->len;
        double t0 = now();
        OK(secagg_client_share_keys(cl[i], l->data, l->len, &msg, &e));
        if (i == 0) {
            res.client_share_s = now() - t0;
            bytes0 += msg.len;
        }
        secagg_buf_free(&own);
        OK(secagg_server_add_shares(srv, msg.data, msg.len, &e));
        secagg_buf_free(&msg);
    }
    secagg_buf_free(&list);
    OK(secagg_server_close_shares(srv, &e));
    for (uint32_t i = 0; i < n; i++) {
        OK(secagg_server_relay(srv, ids[i], &relay[i], &e));
        masks_on[i] = !drop[i];
    }
    bytes0 += relay[0].len;
    res.prg_streams = (uint32_t)((relay[0].len - SECAGG_HEADER_LEN - 8) / (4 + SECAGG_NONCE_LEN + SECAGG_CT_LEN)) + 1;
    /* representative clients, one at a time on an otherwise idle process: the fastest of `reps`
     * (the machine may be shared), with the ChaCha20 reference re-measured just before */
    uint32_t *x = malloc((size_t)m * 4);
    double sum_s = 0, t0;
    res.client_mask_s = 1e30;
    res.rate = chacha_rate();
    for (uint32_t i = 0, done = 0; i < n && done < reps; i++) {
        if (drop[i])
            continue;
        for (uint32_t j = 0; j < m; j++)
            x[j] = input(ids[i], j);
        t0 = now();
        OK(secagg_client_masked_input(cl[i], relay[i].data, relay[i].len, x, &msg, &e));
        double dt = now() - t0;
        if (dt < res.client_mask_s)
            res.client_mask_s = dt;
        if (i == 0)
            bytes0 += msg.len;
        t0 = now();
        OK(secagg_server_add_masked(srv, msg.data, msg.len, &e));
        sum_s += now() - t0;
        secagg_buf_free(&msg);
        masks_on[i] = 0;
        done++;
    }
    /* the masking kernel alone, same stream count */
    {
        uint8_t *keys = malloc((size_t)res.prg_streams * 32);
        int8_t *sg = malloc(res.prg_streams);
        randombytes_buf(keys, (size_t)res.prg_streams * 32);
        for (uint32_t i = 0; i < res.prg_streams; i++)
            sg[i] = (int8_t)(i & 1 ? -1 : 1);
        res.kernel_s = 1e30;
        for (uint32_t rep = 0; rep < reps; rep++) {
            t0 = now();
            secagg_prg_apply(x, m, keys, sg, res.prg_streams);
            double dt = now() - t0;
            if (dt < res.kernel_s)
                res.kernel_s = dt;
        }
        free(keys);
        free(sg);
    }
    work_t w = {.cl = cl, .relay = relay, .ids = ids, .masks_on = masks_on, .n = n, .m = m, .srv = srv};
    pthread_mutex_init(&w.lock, NULL);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, mask_worker, &w);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    res.server_sum_s = (sum_s + w.sum_s) / (n - ndrop);
    OK(secagg_server_close_masked(srv, &req, &e));
    bytes0 += req.len;
    secagg_buf_t *ans = calloc(n, sizeof *ans);
    for (uint32_t i = 0; i < n; i++)
        if (!drop[i]) {
            int rc = secagg_client_unmask(cl[i], req.data, req.len, &ans[i], &e);
            if (rc == FN_ESTATE) { /* too few survivors around it: it refuses, the round will abort */
                res.aborted = 1;
                continue;
            }
            OK(rc);
            if (i == 0)
                bytes0 += ans[i].len;
        }
    uint32_t *sum = malloc((size_t)m * 4);
    t0 = now();
    for (uint32_t i = 0; i < n; i++)
        if (!drop[i] && ans[i].data)
            OK(secagg_server_add_unmask(srv, ans[i].data, ans[i].len, &e));
    int frc = secagg_server_finish(srv, sum, &res.summed, &e);
    res.server_unmask_s = now() - t0;
    if (frc == FN_ESTATE) {
        printf("round (n = %u, k = %u) aborted: %s\n", n, k, e.msg);
        res.aborted = 1;
        res.summed = 0;
    } else {
        OK(frc);
    }
    /* the server's PRG expansions: one per survivor, plus one per (dropped, surviving neighbour) */
    res.server_streams = res.summed;
    {
        uint32_t *nb = malloc(n * sizeof *nb), cnt;
        for (uint32_t i = 0; i < n; i++) {
            if (!drop[i])
                continue;
            OK(secagg_neighbours(&p, ids[i], nb, &cnt, &e));
            for (uint32_t j = 0; j < cnt; j++)
                res.server_streams += !drop[nb[j] - 1];
        }
        free(nb);
    }
    for (uint32_t j = 0; j < m && !res.aborted; j++) {
        uint32_t want = 0;
        for (uint32_t i = 0; i < n; i++)
            if (!drop[i])
                want += input(ids[i], j);
        if (want != sum[j])
            DIE("n = %u: coordinate %u unmasked to %u, the plain sum is %u", n, j, sum[j], want);
    }
    res.client_bytes = bytes0;
    for (uint32_t i = 0; i < n; i++) {
        secagg_buf_free(&relay[i]);
        secagg_buf_free(&ans[i]);
        secagg_client_free(cl[i]);
    }
    secagg_buf_free(&req);
    secagg_server_free(srv);
    free(ans);
    free(sum);
    free(x);
    free(relay);
    free(cl);
    free(drop);
    free(masks_on);
    free(ids);
    return res;
}

/* The share of `rounds` rounds of n clients, exactly 10% of them dropping after sharing, that
 * abort with (k, t_nb): a fresh graph seed and dropout draw each round. */
static double abort_rate(uint32_t n, uint32_t k, uint32_t t_nb, int rounds, uint64_t seed)
{
    uint32_t *ids = malloc(n * sizeof *ids);
    uint8_t *surv = malloc(n);
    for (uint32_t i = 0; i < n; i++)
        ids[i] = i + 1;
    secagg_params_t p = {.n = n, .ids = ids, .m = 1, .k = k, .t_nb = t_nb};
    rng_t r;
    rng_seed(&r, seed);
    int aborts = 0;
    for (int round = 0; round < rounds; round++) {
        for (int i = 0; i < 32; i++)
            p.graph_seed[i] = (uint8_t)rng_next(&r);
        memset(surv, 1, n);
        for (uint32_t c = 0; c < n / 10;) {
            uint32_t i = (uint32_t)rng_below(&r, n);
            c += surv[i];
            surv[i] = 0;
        }
        int rc = secagg_can_finish(&p, surv, &e);
        if (rc < 0)
            DIE("secagg_can_finish: %s", e.msg);
        aborts += !rc;
    }
    free(ids);
    free(surv);
    return (double)aborts / rounds;
}

/* One client's work in full SecAgg from the protocol's primitives (see the header). */
static double primitive_client(uint32_t n, uint32_t m, double *mask_s)
{
    uint32_t t = secagg_default_t(n);
    uint8_t pk[32], sk[32], ppk[32], psk[32], q[32], key[32];
    crypto_box_keypair(ppk, psk);
    uint32_t *xs = malloc(n * sizeof *xs);
    for (uint32_t i = 0; i < n; i++)
        xs[i] = i + 1;
    shamir_share_t *sh = malloc((size_t)n * sizeof *sh);
    uint8_t *keys = malloc((size_t)n * 32);
    int8_t *sign = malloc(n);
    uint8_t pt[SECAGG_PT_LEN] = {0}, ct[SECAGG_CT_LEN], nonce[24], ad[16] = {0}, secret[32];
    unsigned long long plen;
    double t0 = now();
    crypto_box_keypair(pk, sk);
    crypto_box_keypair(pk, sk);
    randombytes_buf(secret, 32);
    OK(shamir_split(sk, t, xs, n, sh, &e));
    OK(shamir_split(secret, t, xs, n, sh, &e));
    for (uint32_t i = 1; i < n; i++) { /* share keys: agree c, encrypt */
        if (crypto_scalarmult(q, sk, ppk))
            DIE("scalarmult");
        crypto_generichash(key, 32, q, 32, NULL, 0);
        randombytes_buf(nonce, 24);
        crypto_aead_xchacha20poly1305_ietf_encrypt(ct, NULL, pt, sizeof pt, ad, 16, NULL, nonce, key);
    }
    double t1 = now();
    for (uint32_t i = 1; i < n; i++) { /* masked input: decrypt, agree s */
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &plen, NULL, ct, sizeof ct, ad, 16, nonce, key))
            DIE("decrypt");
        if (crypto_scalarmult(q, sk, ppk))
            DIE("scalarmult");
        crypto_generichash(keys + (size_t)i * 32, 32, q, 32, NULL, 0);
        sign[i] = (int8_t)(i & 1 ? 1 : -1);
    }
    memcpy(keys, secret, 32);
    sign[0] = 1;
    uint32_t *y = calloc(m, 4);
    double t2 = now();
    secagg_prg_apply(y, m, keys, sign, n);
    double t3 = now();
    *mask_s = t3 - t2;
    free(y);
    free(xs);
    free(sh);
    free(keys);
    free(sign);
    (void)t1;
    return t3 - t0;
}

int main(void)
{
    if (sodium_init() < 0)
        DIE("libsodium failed to initialise");
    double t_start = now();
    printf("secagg benchmark (libsodium %s; 2 worker threads only for the non-timed clients)\n",
           sodium_version_string());

    const uint32_t mA = 1663370, mB = 100000;
    secagg_plus_plan_t plan, old;
    OK(secagg_plan_plus(1000, 0, 0.10, 0.05, &plan, &e));
    OK(secagg_plan_plus(1000, secagg_default_k(1000), 0.10, 0.05, &old, &e));
    printf("SecAgg+ n = 1000, dropout 0.10, corruption 0.05: k = %u, t_nb = %u; P(abort) <= 2^%.2f, "
           "P(privacy failure) <= 2^%.2f (corrupted neighbours), 2^%.2f (graph split)\n", plan.k, plan.t_nb,
           plan.log2_abort, plan.log2_privacy, plan.log2_split);
    printf("  (old default k = %u, t_nb = %u: P(abort) <= 2^%.2f, P(privacy failure) <= 2^%.2f, 2^%.2f)\n", old.k,
           old.t_nb, old.log2_abort, old.log2_privacy, old.log2_split);
    const int n_rates = 2000;
    double rate_old = abort_rate(1000, old.k, old.t_nb, n_rates, 31), rate_new = abort_rate(1000, plan.k, plan.t_nb,
                                                                                          n_rates, 31);
    printf("aborted rounds at n = 1000, 10%% dropout, %d graph and dropout draws: %.4f with k = %u, t_nb = %u; "
           "%.4f with k = %u, t_nb = %u\n", n_rates, rate_old, old.k, old.t_nb, rate_new, plan.k, plan.t_nb);
    round_res_t A = real_round(100, mA, 0, 0, 0.10, 11, 3);
    double est_mask_A, estA = primitive_client(100, mA, &est_mask_A);
    round_res_t B = real_round(1000, mB, plan.k, plan.t_nb, 0.10, 12, 20);
    double rateC = chacha_rate();
    double est_mask_C, estC = 1e30, best_mask_C = 1e30;
    for (int rep = 0; rep < 2; rep++) {
        double mk, tot = primitive_client(1000, mB, &mk);
        if (tot < estC)
            estC = tot;
        if (mk < best_mask_C)
            best_mask_C = mk;
    }
    est_mask_C = best_mask_C;

    double needA = (double)A.prg_streams * 4.0 * mA / A.rate, needB = (double)B.prg_streams * 4.0 * mB / B.rate;
    double needC = 1000.0 * 4.0 * mB / rateC;
    double clientA = A.client_share_s + A.client_mask_s, clientB = B.client_share_s + B.client_mask_s;
    printf("\n%-40s %16s %16s %16s\n", "", "A SecAgg n=100", "B SecAgg+ n=1000", "C SecAgg n=1000");
    printf("%-40s %16u %16u %16u\n", "m", mA, mB, mB);
    printf("%-40s %16.3f %16.3f %16.3f\n", "ChaCha20 keystream GB/s (reference)", A.rate / 1e9, B.rate / 1e9,
           rateC / 1e9);
    printf("%-40s %16u %16u %16u\n", "PRG streams per client", A.prg_streams, B.prg_streams, 1000);
    printf("%-40s %16u %16u %16s\n", "clients summed (10% dropped)", A.summed, B.summed, "-");
    printf("%-40s %16s %16s %16s\n", "round outcome", A.aborted ? "aborted" : "summed",
           B.aborted ? "aborted" : "summed", "-");
    printf("%-40s %16.4f %16.4f %16.4f\n", "client share_keys s", A.client_share_s, B.client_share_s,
           estC - est_mask_C);
    printf("%-40s %16.4f %16.4f %16s\n", "client masked_input s (whole phase)", A.client_mask_s, B.client_mask_s,
           "-");
    printf("%-40s %16.4f %16.4f %16.4f\n", "  of which PRG kernel s", A.kernel_s, B.kernel_s, est_mask_C);
    printf("%-40s %16.4f %16.4f %16.4f\n", "  PRG bytes / ChaCha20 rate s", needA, needB, needC);
    printf("%-40s %16.3f %16.3f %16.3f   (target <= 1.3)\n", "  mask kernel / PRG", A.kernel_s / needA,
           B.kernel_s / needB, est_mask_C / needC);
    printf("%-40s %16.3f %16.3f %16s\n", "  masked_input / PRG", A.client_mask_s / needA, B.client_mask_s / needB,
           "-");
    printf("%-40s %16.4f %16.4f %16.4f\n", "client total s (share + mask)", clientA, clientB, estC);
    printf("%-40s %16.4f %16.4f %16s\n", "server sum per masked input s", A.server_sum_s, B.server_sum_s, "-");
    printf("%-40s %16.4f %16.4f %16s\n", "server unmasking s", A.server_unmask_s, B.server_unmask_s, "-");
    printf("%-40s %16u %16u %16s\n", "  server PRG streams", A.server_streams, B.server_streams, "-");
    printf("%-40s %16.3f %16.3f %16s\n", "  unmasking / PRG", A.server_unmask_s / (A.server_streams * 4.0 * mA / A.rate),
           B.server_unmask_s / (B.server_streams * 4.0 * mB / B.rate), "-");
    printf("%-40s %16zu %16zu %16s\n", "bytes per client (sent + received)", A.client_bytes, B.client_bytes, "-");
    printf("%-40s %16.4f %16.4f %16s   (target A <= 1.1)\n", "  bytes / 4m", A.client_bytes / (4.0 * mA),
           B.client_bytes / (4.0 * mB), "-");
    printf("\nSecAgg+ per-client time at n=1000 / full SecAgg's (B / C): %.4f   (target <= 0.1)\n", clientB / estC);
    printf("primitive estimate of A's client %.4f s against the real %.4f s (ratio %.3f): the method behind C\n",
           estA, clientA, estA / clientA);
    (void)est_mask_A;
    printf("total bench time %.1f s\n", now() - t_start);
    return 0;
}
