/* Key files, the allow-list and startup kits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "crypto/keys.h"

static char g_dir[64];

static int setup(void **state)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/fednas-keys-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_generate_write_read(void **state)
{
    err_t e = {0};
    keys_pair_t *a = keys_pair_new(), *b = keys_pair_new(), *c = keys_pair_new();
    assert_int_equal(keys_generate(a, &e), 0);
    assert_int_equal(keys_generate(b, &e), 0);
    assert_int_equal(strlen(a->public_z85), KEYS_Z85_LEN);
    assert_string_not_equal(a->public_z85, b->public_z85);
    char path[128], pub[KEYS_Z85_LEN + 1];
    snprintf(path, sizeof path, "%s/a.key", g_dir);
    assert_int_equal(keys_write_secret(path, a, &e), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(keys_read_secret(path, c, &e), 0);
    assert_string_equal(c->public_z85, a->public_z85);
    assert_string_equal(c->secret_z85, a->secret_z85);
    assert_int_equal(keys_read_public(path, pub, &e), 0); /* a secret file also gives its public key */
    assert_string_equal(pub, a->public_z85);
    chmod(path, 0644);
    assert_int_equal(keys_read_secret(path, c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "chmod 600"));
    snprintf(path, sizeof path, "%s/a.pub", g_dir);
    assert_int_equal(keys_write_public(path, a->public_z85, &e), 0);
    assert_int_equal(keys_read_public(path, pub, &e), 0);
    assert_string_equal(pub, a->public_z85);
    assert_int_equal(keys_read_secret(path, c, &e), FN_EINVAL); /* not a secret key file */
    snprintf(path, sizeof path, "%s/missing.key", g_dir);
    assert_int_equal(keys_read_secret(path, c, &e), FN_ENOTFOUND);
    keys_pair_free(a);
    keys_pair_free(b);
    keys_pair_free(c);
}

static void test_corrupt_key_file(void **state)
{
    err_t e = {0};
    char path[128], pub[KEYS_Z85_LEN + 1];
    snprintf(path, sizeof path, "%s/bad.pub", g_dir);
    FILE *f = fopen(path, "w");
    fputs("# fednas curve public key v1\npublic-key = tooshort\n", f);
    fclose(f);
    assert_int_equal(keys_read_public(path, pub, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, ":2:"));
}

static void test_sites_and_allow_list(void **state)
{
    err_t e = {0};
    assert_int_equal(keys_add_site(g_dir, "a", &e), FN_ENOTFOUND); /* no init yet */
    assert_non_null(strstr(e.msg, "fednas keys init"));
    assert_int_equal(keys_init_dir(g_dir, &e), 0);
    assert_int_equal(keys_add_site(g_dir, "hospital-a", &e), 0);
    assert_int_equal(keys_add_site(g_dir, "hospital-b", &e), 0);
    assert_int_equal(keys_add_site(g_dir, "hospital-a", &e), FN_EINVAL);
    assert_int_equal(keys_add_site(g_dir, "../evil", &e), FN_EINVAL);
    assert_int_equal(keys_add_site(g_dir, "", &e), FN_EINVAL);
    char path[160], spk[KEYS_Z85_LEN + 1], kit_spk[KEYS_Z85_LEN + 1];
    snprintf(path, sizeof path, "%s/allowed_clients", g_dir);
    keys_allow_t allow;
    assert_int_equal(keys_allow_load(path, &allow, &e), 0);
    assert_int_equal(allow.count, 2);
    keys_pair_t *kp = keys_pair_new();
    snprintf(path, sizeof path, "%s/sites/hospital-b/site.key", g_dir);
    assert_int_equal(keys_read_secret(path, kp, &e), 0);
    assert_string_equal(keys_allow_find(&allow, kp->public_z85), "hospital-b");
    assert_int_equal(keys_generate(kp, &e), 0);
    assert_null(keys_allow_find(&allow, kp->public_z85));
    keys_pair_free(kp);
    keys_allow_free(&allow);
    snprintf(path, sizeof path, "%s/server.pub", g_dir);
    assert_int_equal(keys_read_public(path, spk, &e), 0);
    snprintf(path, sizeof path, "%s/sites/hospital-a/server.pub", g_dir);
    assert_int_equal(keys_read_public(path, kit_spk, &e), 0);
    assert_string_equal(spk, kit_spk); /* the kit pins the server's key */
    /* init again keeps the existing server key */
    assert_int_equal(keys_init_dir(g_dir, &e), 0);
    snprintf(path, sizeof path, "%s/server.pub", g_dir);
    assert_int_equal(keys_read_public(path, kit_spk, &e), 0);
    assert_string_equal(spk, kit_spk);
}

static void test_allow_list_errors(void **state)
{
    err_t e = {0};
    char path[128];
    keys_allow_t allow;
    snprintf(path, sizeof path, "%s/allow", g_dir);
    FILE *f = fopen(path, "w");
    fputs("# fednas allowed clients v1\nsite-a not-a-key\n", f);
    fclose(f);
    assert_int_equal(keys_allow_load(path, &allow, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, ":2:"));
    f = fopen(path, "w");
    fputs("hello\n", f);
    fclose(f);
    assert_int_equal(keys_allow_load(path, &allow, &e), FN_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_generate_write_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_key_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sites_and_allow_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allow_list_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
