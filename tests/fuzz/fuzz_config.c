/* fuzz_config.c - libFuzzer harness for the configuration's INI reader:
 * the input is a config file, read through config_load as `--config FILE`.
 * It must load or fail with a message, never crash, and free cleanly. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];
static int fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (fd < 0) {
        /* one file for every run, unlinked at once: read through /proc */
        char tmpl[] = "/tmp/corral-fuzz-config-XXXXXX";
        fd = mkstemp(tmpl);
        if (fd < 0) abort();
        unlink(tmpl);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();
    char *argv[] = {"--config", path, NULL};
    char *envp[] = {NULL};
    char err[512];
    struct config cfg;
    int rc = config_load(&cfg, 2, argv, envp, err, sizeof err);
    if (rc != 0 && !err[0]) abort(); /* a failure always says why */
    if (rc == 0) {
        for (int i = 0; i < cfg.n_models; i++) {
            struct config_model m;
            config_model_resolve(&cfg, &cfg.models[i], &m);
        }
    }
    config_free(&cfg);
    return 0;
}
