/* secagg: secure aggregation with dropout recovery (Bonawitz et al., CCS 2017) and its
 * logarithmic variant SecAgg+ (Bell et al., CCS 2020), as specified in
 * shared/specs/secure-aggregation.md (honest-but-curious server). Transport-independent: each phase consumes and produces
 * byte messages (one ZeroMQ frame each) that the caller carries; the server only routes what it
 * cannot read. Plus the fixed-point encoding of float vectors into the ring Z_2^bits.
 *
 * Round flow (U1 >= U2 >= U3 are the clients still present after each phase):
 *   client                                   server
 *   secagg_client_new        -> ADVERT  ->   secagg_server_add_advert (each)
 *                                            secagg_server_close_adverts -> ADVERT_LIST (to all in U1;
 *                                            SecAgg+: secagg_server_advert_list_for(v), O(k) bytes)
 *   secagg_client_share_keys -> SHARES  ->   secagg_server_add_shares (each)
 *                                            secagg_server_close_shares; secagg_server_relay(v) -> RELAY (to v in U2)
 *   secagg_client_masked_input -> MASKED ->  secagg_server_add_masked (each)
 *                                            secagg_server_close_masked -> UNMASK_REQ (to all in U3)
 *   secagg_client_unmask     -> UNMASK  ->   secagg_server_add_unmask (each)
 *                                            secagg_server_finish -> sum of the U3 inputs mod 2^bits
 * A client that misses a phase simply sends nothing; a close_* call with fewer than t clients
 * aborts the round with FN_ESTATE, and so does a finish with fewer than t unmasking answers or
 * fewer than the Shamir threshold of shares for a secret it needs (every survivor's b; the s_sk
 * of every client that dropped after sharing and has a surviving neighbour). A malformed message
 * is FN_EPROTO and changes no server state (drop it and carry on); a client that meets a
 * malformed or dishonest message aborts itself (FN_EPROTO / FN_EAUTH) and reveals nothing more.
 * Tampering: a ciphertext that fails to authenticate is FN_EAUTH at the client; at finish, shares
 * beyond the threshold must agree with the interpolated polynomial, a rebuilt s_sk must match its
 * advertised public key, and every rebuilt secret must be well formed (FN_EPROTO otherwise). With
 * exactly the threshold of seed shares a subtly altered share cannot be detected (the sum is then
 * wrong, never silently right); a server wanting that check waits for more answers than t.
 * A client answers one unmasking request per round, so it never reveals both shares of any
 * client; the malicious-server consistency round of the paper (signatures over U3) is not part
 * of this honest-but-curious protocol.
 *
 * Cryptography (libsodium): per round each client makes two X25519 pairs, c (share encryption)
 * and s (mask agreement), and a 32-byte self-mask seed b. Pair keys are
 * BLAKE2b-256(context || round || X25519(sk_u, pk_v) || pk_lo || pk_hi) where lo/hi order the two
 * public keys by client id, context "fednas-secagg-c" or "-s". Shares travel as
 * XChaCha20-Poly1305 ciphertexts (random nonce) with associated data from || to || round.
 * Masks are ChaCha20-IETF keystreams (nonce 0; every key is fresh per round and pair) read as
 * little-endian uint32 words, reduced mod 2^bits: PRG(b_u) for the self mask (key b_u), and
 * PRG(s_uv) added by the larger id and subtracted by the smaller. Shamir shares (crypto/shamir.h,
 * p = 2^61-1) of s_sk and b are taken at the client ids, the sharer's own id included.
 *
 * SecAgg+ (params.k > 0): the selected ids, sorted, are placed on a ring in the order of a
 * permutation drawn by ChaCha20 from the public graph_seed (Fisher-Yates, rejection sampling);
 * each client's neighbours are the k/2 nearest positions on either side (a Harary graph with
 * random labels; k is rounded up to even; k >= n-1 means the complete graph, i.e. plain SecAgg).
 * Masks and shares are exchanged between neighbours only; shares are t_nb-of-(neighbours + self).
 *
 * Wire formats: every message starts with a 16-byte header, little-endian:
 *   u8 type, u8 version (1), u16 zero, u32 sender id (0 = server), u64 round id
 * then, by type (all counts u32, all lengths checked exactly against the frame length):
 *   1 ADVERT      c_pk[32] s_pk[32]
 *   2 ADVERT_LIST count, count x { id, c_pk[32], s_pk[32] }            (ids distinct, in U1)
 *   3 SHARES      count, count x { to id, nonce[24], ct[SECAGG_CT_LEN] } (exactly one per
 *                 neighbour in U1, ascending ids)
 *   4 RELAY       to id, count, count x { from id, nonce[24], ct[SECAGG_CT_LEN] } (senders in U2)
 *   5 MASKED      m, bits (u32 each), m x u32 ring values (< 2^bits)
 *   6 UNMASK_REQ  n_surv, n_surv x id (U3), n_drop, n_drop x id (U2 \ U3)
 *   7 UNMASK      count, count x { owner id, u32 kind (1 = self seed b, 2 = mask key s_sk),
 *                 y[SHAMIR_SHARE_LEN] }                                 (share point = sender id)
 *   8 ACCUSE      count, count x id: the neighbours whose ciphertexts in the RELAY failed to
 *                 authenticate (ascending; sent instead of MASKED by a client that aborted)
 * The AEAD plaintext is: from, to (u32), round (u64), share of s_sk, share of b (40 bytes each).
 *
 * Encoding: secagg_choose_scale picks f = (2^(bits-1) - 1 - n) / (n C), so n clipped inputs
 * (|coordinate| <= C after L2 clipping), scaled and stochastically rounded (|r| <= C f + 1),
 * sum without wrapping. Decoding reads the sum as signed and divides by f; its error against the
 * exact sum of the clipped inputs is below n/f per coordinate (each rounding moves a value by less
 * than 1; unbiased: E[rounded] = x f), plus float32 rounding of the result. */
#ifndef FEDNAS_CRYPTO_SECAGG_H
#define FEDNAS_CRYPTO_SECAGG_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/shamir.h"

#define SECAGG_HEADER_LEN 16
#define SECAGG_KEY_LEN 32
#define SECAGG_NONCE_LEN 24
#define SECAGG_PT_LEN (4 + 4 + 8 + 2 * SHAMIR_SHARE_LEN) /* 96 */
#define SECAGG_CT_LEN (SECAGG_PT_LEN + 16)                 /* 112 */
#define SECAGG_MAX_N 1000000u

enum {
    SECAGG_MSG_ADVERT = 1,
    SECAGG_MSG_ADVERT_LIST = 2,
    SECAGG_MSG_SHARES = 3,
    SECAGG_MSG_RELAY = 4,
    SECAGG_MSG_MASKED = 5,
    SECAGG_MSG_UNMASK_REQ = 6,
    SECAGG_MSG_UNMASK = 7,
    SECAGG_MSG_ACCUSE = 8,
};
enum { SECAGG_SHARE_SEED = 1, SECAGG_SHARE_KEY = 2 };

/* The public parameters of a round, identical at the server and every client. */
typedef struct secagg_params {
    uint64_t round_id;
    uint32_t n;           /* number of selected clients */
    const uint32_t *ids;  /* their ids: n distinct values >= 1 (any order; copied) */
    uint32_t t;           /* minimum clients alive after each phase (> n/2, >= 2); 0 = default */
    uint32_t m;           /* vector length, >= 1 */
    uint32_t bits;        /* ring Z_2^bits, 8..32; 0 = 32 */
    uint32_t k;           /* 0 = full SecAgg; else SecAgg+ with k neighbours (rounded up to even) */
    uint32_t t_nb;        /* SecAgg+: Shamir threshold per neighbourhood of k+1 (> (k+1)/2);
                             0 = default; ignored (equal to t) in full SecAgg */
    uint8_t graph_seed[32]; /* SecAgg+: public per-round seed of the neighbour graph */
} secagg_params_t;

/* A message: malloc'd bytes, released with secagg_buf_free. */
typedef struct secagg_buf {
    uint8_t *data;
    size_t len;
} secagg_buf_t;
void secagg_buf_free(secagg_buf_t *b);

/* Defaults: t = max(floor(n/2) + 1, ceil(2n/3), 2) capped at n; k = 2 ceil(log2 n);
 * t_nb = max(floor((k+1)/2) + 1, ceil(2(k+1)/3)). These k and t_nb ignore dropouts (at n = 1000
 * and 10% dropout they abort about one round in eight): the server chooses k and t_nb with
 * secagg_plan_plus below; the library default stays for callers that set k themselves. */
uint32_t secagg_default_t(uint32_t n);
uint32_t secagg_default_k(uint32_t n);
uint32_t secagg_default_t_nb(uint32_t k);
/* SecAgg+ parameters from the expected dropout rate delta and corruption rate gamma (the
 * fraction of clients that may collude with the server), after Bell et al. 2020: the smallest
 * even k, and for it the smallest t_nb > (k+1)/2, such that
 *   abort:   n P(Binomial(k, 1 - delta) < t_nb) <= 2^SECAGG_LOG2_ABORT_TARGET
 *            (some client's neighbourhood keeps too few survivors to rebuild its secrets), and
 *   privacy: n P(Binomial(k, gamma) >= t_nb)    <= 2^SECAGG_LOG2_PRIVACY_TARGET
 *            (some client has t_nb corrupted neighbours, who with the server rebuild its mask key),
 *   split:   n (delta + gamma)^(k/2)              <= 2^SECAGG_LOG2_PRIVACY_TARGET
 *            (k/2 consecutive ring positions without an honest survivor, which the honest
 *            survivors' graph needs to fall apart and reveal the sum of a part of it),
 * all union bounds over the n clients, with dropouts and corruptions independent per client,
 * computed exactly in log space. When no k below n - 1 meets them the plan is the complete
 * graph (k = 0, t_nb = 0: full SecAgg with t = secagg_default_t(n); its bounds are
 * P(Binomial(n, 1 - delta) < t) and P(Binomial(n, gamma) >= t)). With k_fixed > 0 (the
 * experiment's own k) the plan keeps it with secagg_default_t_nb(k) and reports its bounds.
 * FN_EINVAL for a rate outside [0, 0.5) or when no k up to SECAGG_PLAN_MAX_K is enough for a
 * larger n. For n = 1000, delta = 0.1, gamma = 0.05: k = 38, t_nb = 20 (abort 2^-20.8,
 * privacy 2^-42.8, split 2^-42.0), where the defaults k = 20, t_nb = 14 give an abort bound of 2^1.25. */
#define SECAGG_LOG2_ABORT_TARGET (-20.0)
#define SECAGG_LOG2_PRIVACY_TARGET (-40.0)
#define SECAGG_PLAN_MAX_K 4096u
typedef struct secagg_plus_plan {
    uint32_t k, t_nb;    /* 0, 0: full SecAgg */
    double log2_abort;   /* log2 of the bounds above */
    double log2_privacy;
    double log2_split;   /* -INFINITY for full SecAgg */
} secagg_plus_plan_t;
int secagg_plan_plus(uint32_t n, uint32_t k_fixed, double dropout, double corruption, secagg_plus_plan_t *out,
                     err_t *err);
/* log2 P(Binomial(k, p) < t) and log2 P(Binomial(k, p) >= t) (-INFINITY when impossible). */
double secagg_log2_binom_below(uint32_t k, uint32_t t, double p);
double secagg_log2_binom_at_least(uint32_t k, uint32_t t, double p);
/* Whether a round whose clients that survive to the end are flagged in survived[] (in the order
 * of p->ids; the others dropped after sharing their keys, the costliest case) can finish: at
 * least t survivors, every survivor with t_nb survivors among its neighbourhood and itself,
 * every dropped client with a surviving neighbour with t_nb surviving neighbours. 1 or 0, or
 * FN_EINVAL for bad params. */
int secagg_can_finish(const secagg_params_t *p, const uint8_t *survived, err_t *err);
/* Validates params (after defaults) and says why not; used by both new() calls. */
int secagg_params_check(const secagg_params_t *p, err_t *err);

/* The neighbours of client id among all n selected (SecAgg+ graph; every other id in full
 * SecAgg), ascending; out holds n entries. FN_EINVAL for bad params or an unknown id. */
int secagg_neighbours(const secagg_params_t *p, uint32_t id, uint32_t *out, uint32_t *count, err_t *err);

/* ---- client ---- */
typedef struct secagg_client secagg_client_t;

/* Makes the round's keys; *out = ADVERT. */
int secagg_client_new(const secagg_params_t *p, uint32_t my_id, secagg_client_t **out_client, secagg_buf_t *advert,
                      err_t *err);
/* ADVERT_LIST in; *shares = SHARES (ciphertexts for each neighbour in U1). */
int secagg_client_share_keys(secagg_client_t *c, const uint8_t *msg, size_t len, secagg_buf_t *shares, err_t *err);
/* RELAY and the encoded input (m ring values < 2^bits) in; *masked = MASKED. A ciphertext that
 * fails to authenticate is FN_EAUTH. */
int secagg_client_masked_input(secagg_client_t *c, const uint8_t *msg, size_t len, const uint32_t *x,
                               secagg_buf_t *masked, err_t *err);
/* After secagg_client_masked_input failed with FN_EAUTH: *out = ACCUSE naming every neighbour
 * whose ciphertext failed to authenticate. Only the recipient can tell (the server relays what it
 * cannot read), so a client reports them for the server to act on (server/secagg_round.h:
 * accusations); the client itself stays aborted. FN_ESTATE when it has no one to accuse. */
int secagg_client_accusation(const secagg_client_t *c, secagg_buf_t *out, err_t *err);
/* Reads an ACCUSE of this round: its sender and the up to max ids it names. FN_EPROTO when
 * malformed, naming more than max, 0, the sender, or ids not strictly ascending. */
int secagg_accusation_read(const uint8_t *msg, size_t len, uint64_t round, uint32_t *sender, uint32_t *ids,
                           uint32_t max, uint32_t *count, err_t *err);
/* UNMASK_REQ in; *resp = UNMASK: the share of b_v for each listed survivor v and of s_v_sk for
 * each listed dropped v, among the clients whose shares this one holds (itself included).
 * Refuses (FN_EPROTO) an id listed as both survivor and dropped and a request that does not
 * list this client as a survivor; refuses (FN_ESTATE) fewer than t survivors, fewer than the
 * Shamir threshold among this client's neighbourhood, and any second request. After a refusal
 * or any error the client is aborted: every later call is FN_ESTATE. */
int secagg_client_unmask(secagg_client_t *c, const uint8_t *msg, size_t len, secagg_buf_t *resp, err_t *err);
/* Wipes and frees every secret. */
void secagg_client_free(secagg_client_t *c);
uint32_t secagg_client_id(const secagg_client_t *c);

/* ---- server ---- */
typedef struct secagg_server secagg_server_t;

int secagg_server_new(const secagg_params_t *p, secagg_server_t **out, err_t *err);
void secagg_server_free(secagg_server_t *s);

int secagg_server_add_advert(secagg_server_t *s, const uint8_t *msg, size_t len, err_t *err);
/* Ends phase 0: FN_ESTATE (round aborted) below t; else *list = ADVERT_LIST for every client in U1. */
int secagg_server_close_adverts(secagg_server_t *s, secagg_buf_t *list, err_t *err);
/* After close_adverts, SecAgg+: the ADVERT_LIST for one client holding only its neighbourhood in
 * U1 (itself included), O(k) bytes instead of O(n). Full SecAgg clients need the whole list. */
int secagg_server_advert_list_for(secagg_server_t *s, uint32_t id, secagg_buf_t *list, err_t *err);
int secagg_server_add_shares(secagg_server_t *s, const uint8_t *msg, size_t len, err_t *err);
/* Ends phase 1 (FN_ESTATE below t). Then secagg_server_relay gives the RELAY for each id in U2. */
int secagg_server_close_shares(secagg_server_t *s, err_t *err);
int secagg_server_relay(secagg_server_t *s, uint32_t to_id, secagg_buf_t *relay, err_t *err);
/* Between close_shares and close_masked: 1 when the RELAY for `to` carries a ciphertext from
 * `from` (both in U2, neighbours), i.e. when an ACCUSE from `to` naming `from` can be true. */
int secagg_server_relayed(const secagg_server_t *s, uint32_t from, uint32_t to);
/* Adds a MASKED message into the running sum (from a client in U2, once). */
int secagg_server_add_masked(secagg_server_t *s, const uint8_t *msg, size_t len, err_t *err);
/* Ends phase 2 (FN_ESTATE below t); *req = UNMASK_REQ for every client in U3. */
int secagg_server_close_masked(secagg_server_t *s, secagg_buf_t *req, err_t *err);
int secagg_server_add_unmask(secagg_server_t *s, const uint8_t *msg, size_t len, err_t *err);
/* Ends phase 3: reconstructs every needed secret, removes the masks and writes the sum of the
 * inputs of U3 (m values mod 2^bits) to sum and |U3| to *n_summed. FN_ESTATE when fewer than t
 * responded or a secret lacks shares; FN_EPROTO when shares were tampered with. */
int secagg_server_finish(secagg_server_t *s, uint32_t *sum, uint32_t *n_summed, err_t *err);
/* Sets after each close: U1, U2 or U3 (ids in sorted order); returns the count. */
uint32_t secagg_server_survivors(const secagg_server_t *s, int phase, const uint32_t **ids);

/* The masking kernel: y[i] += sign_j * PRG(key_j)[i] mod 2^32 for each of nkeys 32-byte keys,
 * PRG(key) = the ChaCha20-IETF keystream (nonce 0, counter from 0) read as little-endian uint32
 * words. Exposed for benchmarks and tests; the protocol reduces mod 2^bits afterwards. */
void secagg_prg_apply(uint32_t *y, size_t m, const uint8_t *keys, const int8_t *sign, size_t nkeys);

/* ---- encoding ---- */
/* f such that n inputs clipped to L2 norm C sum without wrapping in Z_2^bits; 0 if none exists. */
double secagg_choose_scale(uint32_t n, double clip, uint32_t bits);
/* Clips x to L2 norm `clip`, scales by f, rounds stochastically (libsodium randomness) and
 * reduces mod 2^bits. FN_EINVAL on non-finite input or bad parameters. */
int secagg_encode(const float *x, size_t m, double clip, double f, uint32_t bits, uint32_t *out, err_t *err);
/* Reads each sum coordinate as a signed bits-bit integer and divides by f. */
void secagg_decode(const uint32_t *sum, size_t m, double f, uint32_t bits, float *out);

#endif
