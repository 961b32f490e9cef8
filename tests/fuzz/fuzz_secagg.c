/* fuzz_secagg: the secure-aggregation message parsers (crypto/secagg.h), each reached at the
 * phase where it runs, with honest clients around the fuzzed message. libsodium's randomness is
 * replaced by a counter-keyed ChaCha20 stream reset before every input, so each input replays
 * the same keys, and the committed seeds (written by this program, see FUZZ_WRITE_SEEDS) are
 * the real messages of that round: ciphertexts in them decrypt.
 *
 * Input: byte 0 = slot (low 3 bits, 0..6) + 8 x variant (bit 3: SecAgg+ with k = 2 over 6
 * clients, else full SecAgg over 4); the rest is the message put where client 1's (or the
 * server's, for lists and requests) would be:
 *   0 ADVERT -> server      1 ADVERT_LIST -> client   2 SHARES -> server   3 RELAY -> client
 *   4 MASKED -> server      5 UNMASK_REQ -> client    6 UNMASK -> server
 * Checked: until the slot everything succeeds; a refused slot message (FN_EPROTO, FN_EAUTH or
 * FN_ESTATE only) leaves the others able to finish the round with the right sum; after an
 * accepted forgery honest parties may abort and the round may end below t; a forged UNMASK
 * answer is caught at finish (FN_EPROTO) or does not change the sum; nothing leaks. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/secagg.h"
#include "fuzz_seed.h"

#define MAXN 6
#define M 8

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_secagg: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* ---- deterministic randombytes ---- */
static uint64_t g_draws;
static void det_buf(void *const buf, const size_t size)
{
    unsigned char seed[randombytes_SEEDBYTES] = "fednas-fuzz-secagg-deterministic";
    uint64_t n = g_draws++;
    memcpy(seed, &n, sizeof n);
    randombytes_buf_deterministic(buf, size, seed);
}
static uint32_t det_random(void)
{
    uint32_t r;
    det_buf(&r, sizeof r);
    return r;
}
static const char *det_name(void) { return "fuzz-deterministic"; }
static struct randombytes_implementation g_det = {
    .implementation_name = det_name, .random = det_random, .buf = det_buf};

/* ---- one round ---- */
typedef struct round {
    secagg_params_t p;
    uint32_t ids[MAXN];
    secagg_server_t *srv;
    secagg_client_t *cl[MAXN];
    uint32_t x[MAXN][M];
    uint8_t alive[MAXN]; /* honest clients still taking part */
} round_t;

static const char *g_dump; /* FUZZ_WRITE_SEEDS: where the honest slot messages go */

static void dump(int slot, int variant, const secagg_buf_t *b)
{
    char name[32];
    snprintf(name, sizeof name, "slot%d-%s", slot, variant ? "plus" : "full");
    uint8_t head = (uint8_t)(slot | variant << 3);
    fuzz_write_seed(g_dump, name, &head, 1, b->data, b->len);
}

/* The message at the slot: the fuzzed one, or (seed writing) the honest one, kept. */
static void at_slot(int slot, int variant, const uint8_t *fz, size_t fzlen, const secagg_buf_t *honest,
                    const uint8_t **msg, size_t *len)
{
    if (fz) {
        *msg = fz, *len = fzlen;
        return;
    }
    dump(slot, variant, honest);
    *msg = honest->data, *len = honest->len;
}

/* rc of a step: 0, or a refusal (FN_EPROTO/FN_EAUTH/FN_ESTATE) where one is allowed. Returns 1
 * when the step succeeded. */
static int step(int rc, const err_t *e, int allowed, const char *where)
{
    if (rc == 0)
        return 1;
    if (!allowed)
        die(where, e->msg);
    if (rc != FN_EPROTO && rc != FN_EAUTH && rc != FN_ESTATE)
        die(where, e->msg);
    return 0;
}

static int member(const uint32_t *ids, uint32_t n, uint32_t id)
{
    for (uint32_t j = 0; j < n; j++)
        if (ids[j] == id)
            return 1;
    return 0;
}

/* Runs the round; the slot message replaces client 1's (or the one it receives). Until the
 * slot everything must succeed. A refused slot message must leave the others able to finish
 * with the right sum; once a forged message was accepted, honest parties may abort (that is
 * what they must do on a dishonest message) and the round may end below t. */
static void run(int slot, int variant, const uint8_t *fz, size_t fzlen)
{
    round_t r = {0};
    err_t e = {0};
    uint32_t n = variant ? 6 : 4;
    for (uint32_t i = 0; i < n; i++) {
        r.ids[i] = i + 1;
        r.alive[i] = 1;
        for (int j = 0; j < M; j++)
            r.x[i][j] = (i + 1) * 1000003u * (uint32_t)(j + 1);
    }
    r.p = (secagg_params_t){.round_id = 77, .n = n, .ids = r.ids, .t = variant ? 4 : 3, .m = M, .bits = 32,
                            .k = variant ? 2 : 0};
    memset(r.p.graph_seed, 7, sizeof r.p.graph_seed);
    secagg_buf_t adv[MAXN] = {{0}}, sh[MAXN] = {{0}}, rel[MAXN] = {{0}}, msk[MAXN] = {{0}}, um[MAXN] = {{0}};
    secagg_buf_t list = {0}, req = {0};
    const uint8_t *msg;
    size_t len;
    int forged = 0; /* the slot message was accepted by whoever read it */
    int done = 0;   /* the round ended below t after a forgery */
    if (secagg_server_new(&r.p, &r.srv, &e) != 0)
        die("server_new", e.msg);
    for (uint32_t i = 0; i < n; i++)
        if (secagg_client_new(&r.p, r.ids[i], &r.cl[i], &adv[i], &e) != 0)
            die("client_new", e.msg);

    /* Phase 0: adverts; the slot stands in for client 1's. */
    for (uint32_t i = 0; i < n; i++) {
        msg = adv[i].data, len = adv[i].len;
        if (i == 0 && slot == 0)
            at_slot(0, variant, fz, fzlen, &adv[0], &msg, &len);
        int ok = step(secagg_server_add_advert(r.srv, msg, len, &e), &e, forged || (i == 0 && slot == 0), "add_advert");
        if (i == 0 && slot == 0)
            forged = ok && fz;
    }
    step(secagg_server_close_adverts(r.srv, &list, &e), &e, forged, "close_adverts");
    done = !list.data;

    /* Phase 1: shares. Client 1 reads the slot as its ADVERT_LIST. */
    for (uint32_t i = 0; i < n && !done; i++) {
        msg = list.data, len = list.len;
        if (i == 0 && slot == 1)
            at_slot(1, variant, fz, fzlen, &list, &msg, &len);
        int ok = step(secagg_client_share_keys(r.cl[i], msg, len, &sh[i], &e), &e, forged || (i == 0 && slot <= 1),
                      "share_keys");
        if (i == 0 && slot == 1)
            forged = ok && fz;
        r.alive[i] &= ok;
    }
    for (uint32_t i = 0; i < n && !done; i++) {
        if (i == 0 && slot == 2) {
            at_slot(2, variant, fz, fzlen, &sh[0], &msg, &len);
            forged |= step(secagg_server_add_shares(r.srv, msg, len, &e), &e, 1, "add_shares") && fz;
        } else if (r.alive[i]) {
            step(secagg_server_add_shares(r.srv, sh[i].data, sh[i].len, &e), &e, forged, "add_shares");
        }
    }
    done = done || !step(secagg_server_close_shares(r.srv, &e), &e, forged, "close_shares");

    /* Phase 2: masked inputs. Client 1 reads the slot as its RELAY. */
    const uint32_t *u2;
    uint32_t n2 = done ? 0 : secagg_server_survivors(r.srv, 2, &u2);
    for (uint32_t i = 0; i < n && !done; i++) {
        if (!member(u2, n2, r.ids[i])) {
            r.alive[i] = 0;
            continue;
        }
        step(secagg_server_relay(r.srv, r.ids[i], &rel[i], &e), &e, 0, "relay");
        msg = rel[i].data, len = rel[i].len;
        if (i == 0 && slot == 3)
            at_slot(3, variant, fz, fzlen, &rel[0], &msg, &len);
        int ok = step(secagg_client_masked_input(r.cl[i], msg, len, r.x[i], &msk[i], &e), &e,
                      forged || (i == 0 && slot <= 3), "masked_input");
        if (i == 0 && slot == 3)
            forged = ok && fz;
        r.alive[i] &= ok;
    }
    for (uint32_t i = 0; i < n && !done; i++) {
        if (i == 0 && slot == 4 && r.alive[0]) {
            at_slot(4, variant, fz, fzlen, &msk[0], &msg, &len);
            forged |= step(secagg_server_add_masked(r.srv, msg, len, &e), &e, 1, "add_masked") && fz;
        } else if (r.alive[i]) {
            step(secagg_server_add_masked(r.srv, msk[i].data, msk[i].len, &e), &e, forged, "add_masked");
        }
    }
    done = done || !step(secagg_server_close_masked(r.srv, &req, &e), &e, forged, "close_masked");

    /* Phase 3: unmasking. Client 1 reads the slot as its UNMASK_REQ. */
    const uint32_t *u3 = NULL;
    uint32_t n3 = done ? 0 : secagg_server_survivors(r.srv, 3, &u3);
    for (uint32_t i = 0; i < n && !done; i++) {
        if (!member(u3, n3, r.ids[i]) && !(i == 0 && slot == 5 && r.alive[0]))
            continue;
        msg = req.data, len = req.len;
        if (i == 0 && slot == 5)
            at_slot(5, variant, fz, fzlen, &req, &msg, &len);
        int ok = step(secagg_client_unmask(r.cl[i], msg, len, &um[i], &e), &e, forged || (i == 0 && slot <= 5),
                      "unmask");
        if (i == 0 && slot == 5)
            forged = ok && fz;
    }
    for (uint32_t i = 0; i < n && !done; i++) {
        if (i == 0 && slot == 6 && um[0].data) {
            at_slot(6, variant, fz, fzlen, &um[0], &msg, &len);
            forged |= step(secagg_server_add_unmask(r.srv, msg, len, &e), &e, 1, "add_unmask") && fz;
        } else if (um[i].data) {
            step(secagg_server_add_unmask(r.srv, um[i].data, um[i].len, &e), &e, forged || (i == 0 && slot == 5),
                 "add_unmask");
        }
    }

    /* The sum of U3's inputs. A forged list, relay or request is a malicious server, and a
     * forged advert, shares or masked input a malicious client: the honest-but-curious protocol
     * promises no correct sum against either (secagg.h). It does promise that altered unmasking
     * shares are caught when more than the threshold answer, as every survivor does here. */
    int check_sum = !forged || slot == 6;
    if (!done) {
        uint32_t sum[M], n_summed = 0;
        if (step(secagg_server_finish(r.srv, sum, &n_summed, &e), &e, forged, "finish")) {
            if (n_summed != n3)
                die("finish summed a different number of clients than U3", NULL);
            for (int j = 0; j < M; j++) {
                uint32_t want = 0;
                for (uint32_t k = 0; k < n3; k++)
                    want += r.x[u3[k] - 1][j];
                if (sum[j] != want && check_sum)
                    die("finish returned a wrong sum", NULL);
            }
        }
    }

    for (uint32_t i = 0; i < n; i++) {
        secagg_buf_free(&adv[i]);
        secagg_buf_free(&sh[i]);
        secagg_buf_free(&rel[i]);
        secagg_buf_free(&msk[i]);
        secagg_buf_free(&um[i]);
        secagg_client_free(r.cl[i]);
    }
    secagg_buf_free(&list);
    secagg_buf_free(&req);
    secagg_server_free(r.srv);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (randombytes_set_implementation(&g_det) != 0 || sodium_init() < 0)
        die("cannot set up libsodium", NULL);
    g_dump = getenv("FUZZ_WRITE_SEEDS");
    if (g_dump) {
        for (int variant = 0; variant < 2; variant++)
            for (int slot = 0; slot <= 6; slot++) {
                g_draws = 0;
                run(slot, variant, NULL, 0);
            }
        g_dump = NULL;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || (data[0] & 7) > 6)
        return 0;
    g_draws = 0;
    /* A copy of exactly the message's size, so ASan sees any read past its end. */
    uint8_t *msg = malloc(size);
    memcpy(msg, data + 1, size - 1);
    run(data[0] & 7, (data[0] >> 3) & 1, msg, size - 1);
    free(msg);
    return 0;
}
